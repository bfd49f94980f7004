#!/usr/bin/env bash
# A two-namespace veth testbed to try the tools by hand (the tests and the demo build their own).
#   scripts/testbed.sh up [QUEUES] [--threaded-napi]
#                          create namespaces ${KBP_NS}-dut / ${KBP_NS}-peer joined by dut0 <-> peer0
#   scripts/testbed.sh pin [DUT_CPU] [PEER_CPU]
#                          pin the NAPI threads: the DUT end's to DUT_CPU (1), the peer's to PEER_CPU (0)
#   scripts/testbed.sh down          remove them
# KBP_NS (default kbp) names the namespaces, so two testbeds can coexist.
# Addresses: peer 198.18.0.1 / 2001:db8::1, device under test 198.18.0.2 / 2001:db8::2.
# Then e.g.:  ip netns exec kbp-dut target/release/xdp-user load --iface dut0
#             ip netns exec kbp-peer ping 198.18.0.2
#
# --threaded-napi makes the device, not the generator, the limit when benchmarking: on veth the
# receive work of a packet otherwise runs in the softirq of the CPU that sent it. With GRO and
# threaded NAPI on both ends it runs in kernel threads napi/dut0-N and napi/peer0-N; `pin`
# binds them (again after a program is attached: a link flap re-creates them). Run the device
# under test on DUT_CPU and the generator on PEER_CPU.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "error: needs root" >&2; exit 1; }
ns=${KBP_NS:-kbp}
case "${1:-}" in
    up)
        q=1; threaded=0
        for a in "${@:2}"; do case "$a" in --threaded-napi) threaded=1 ;; *) q=$a ;; esac; done
        ip netns add "$ns-dut"; ip netns add "$ns-peer"
        ip link add dut0 netns "$ns-dut" numrxqueues "$q" numtxqueues "$q" type veth peer peer0 netns "$ns-peer" numrxqueues "$q" numtxqueues "$q"
        ip -n "$ns-dut" link set dut0 address 02:00:00:00:00:02
        ip -n "$ns-peer" link set peer0 address 02:00:00:00:00:01
        ip -n "$ns-dut" addr add 198.18.0.2/24 dev dut0; ip -n "$ns-dut" addr add 2001:db8::2/64 dev dut0 nodad
        ip -n "$ns-peer" addr add 198.18.0.1/24 dev peer0; ip -n "$ns-peer" addr add 2001:db8::1/64 dev peer0 nodad
        for n in "$ns-dut" "$ns-peer"; do ip -n "$n" link set lo up; done
        ip -n "$ns-dut" link set dut0 up; ip -n "$ns-peer" link set peer0 up
        # veth leaves UDP/TCP checksums to "hardware"; through AF_XDP they would arrive half done.
        ip netns exec "$ns-peer" ethtool -K peer0 tx off >/dev/null
        if [ "$threaded" = 1 ]; then
            for p in "$ns-dut:dut0" "$ns-peer:peer0"; do
                ip netns exec "${p%%:*}" sh -c "ethtool -K ${p#*:} gro on >/dev/null && echo 1 > /sys/class/net/${p#*:}/threaded"
            done
            "$0" pin
        fi
        echo "testbed up: $ns-peer (198.18.0.1) <-> $ns-dut (198.18.0.2, dut0)" ;;
    pin)
        # Thread names carry the interface name, not the namespace: with two threaded testbeds
        # up at once, both are pinned alike.
        dut_cpu=${2:-1}; peer_cpu=${3:-0}
        for pid in $(ps -eo pid=,comm= | awk '$2 ~ /^napi\/dut0-/ {print $1}'); do taskset -pc "$dut_cpu" "$pid" >/dev/null; echo "pinned napi thread $pid (dut0) to CPU $dut_cpu"; done
        for pid in $(ps -eo pid=,comm= | awk '$2 ~ /^napi\/peer0-/ {print $1}'); do taskset -pc "$peer_cpu" "$pid" >/dev/null; echo "pinned napi thread $pid (peer0) to CPU $peer_cpu"; done ;;
    down) ip netns del "$ns-dut" 2>/dev/null || true; ip netns del "$ns-peer" 2>/dev/null || true; echo "testbed down" ;;
    *) echo "usage: $0 up [QUEUES] [--threaded-napi] | pin [DUT_CPU] [PEER_CPU] | down" >&2; exit 2 ;;
esac
