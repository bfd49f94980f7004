#!/usr/bin/env bash
# A two-namespace veth testbed to try the tools by hand (the tests and the demo build their own).
#   scripts/testbed.sh up [QUEUES]   create namespaces kbp-dut / kbp-peer joined by dut0 <-> peer0
#   scripts/testbed.sh down          remove them
# Addresses: peer 198.18.0.1 / 2001:db8::1, device under test 198.18.0.2 / 2001:db8::2.
# Then e.g.:  ip netns exec kbp-dut target/release/xdp-user load --iface dut0
#             ip netns exec kbp-peer ping 198.18.0.2
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "error: needs root" >&2; exit 1; }
case "${1:-}" in
    up)
        q=${2:-1}
        ip netns add kbp-dut; ip netns add kbp-peer
        ip link add dut0 netns kbp-dut numrxqueues "$q" numtxqueues "$q" type veth peer peer0 netns kbp-peer numrxqueues "$q" numtxqueues "$q"
        ip -n kbp-dut link set dut0 address 02:00:00:00:00:02
        ip -n kbp-peer link set peer0 address 02:00:00:00:00:01
        ip -n kbp-dut addr add 198.18.0.2/24 dev dut0; ip -n kbp-dut addr add 2001:db8::2/64 dev dut0 nodad
        ip -n kbp-peer addr add 198.18.0.1/24 dev peer0; ip -n kbp-peer addr add 2001:db8::1/64 dev peer0 nodad
        for ns in kbp-dut kbp-peer; do ip -n $ns link set lo up; done
        ip -n kbp-dut link set dut0 up; ip -n kbp-peer link set peer0 up
        # veth leaves UDP/TCP checksums to "hardware"; through AF_XDP they would arrive half done.
        ip netns exec kbp-peer ethtool -K peer0 tx off >/dev/null
        echo "testbed up: kbp-peer (198.18.0.1) <-> kbp-dut (198.18.0.2, dut0)" ;;
    down) ip netns del kbp-dut 2>/dev/null || true; ip netns del kbp-peer 2>/dev/null || true; echo "testbed down" ;;
    *) echo "usage: $0 up [QUEUES] | down" >&2; exit 2 ;;
esac
