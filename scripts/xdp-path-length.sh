#!/usr/bin/env bash
# How many BPF instructions the XDP filter executes on given frames, counted exactly: loads
# the filter of an xdp-user binary with rules on a veth in a namespace of its own, dumps the
# program as the kernel runs it (bpftool's xlated dump) and its array maps, and interprets it
# on each frame (scripts/xdp-path-length.py). A machine-independent figure beside
# `xdp-user cost`'s nanoseconds, which this machine's noise moves by a few per run.
#   scripts/xdp-path-length.sh BIN FRAME... [-- RULE...]
# FRAME: a file holding one frame, or its bytes in hex. Without rules: the 16 rules of
# `cargo xtask bench` (15 TCP ports dropped, UDP port 7 passed). TRACE=1 prints each
# instruction executed with its source line.
#   e.g. scripts/xdp-path-length.sh target/release/xdp-user \
#          0200000000020200000000010800450000271e47400040119057c6120001c61200029c4000070013a08c68656c6c6f2c206563686f
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "error: needs root (it loads an XDP program)" >&2; exit 1; }
bin=$1; shift
frames=(); while [ $# -gt 0 ] && [ "$1" != -- ]; do frames+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
args=()
if [ $# -eq 0 ]; then
    for p in $(seq 1000 1014); do args+=(--rule "proto tcp dport $p action drop"); done
    args+=(--rule "proto udp dport 7 action pass")
else
    for r in "$@"; do args+=(--rule "$r"); done
fi
ns=kbp-pathlen-$$; dir=$(mktemp -d); pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; ip netns del "$ns" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link add d0 type veth peer name d1
ip -n "$ns" link set d0 up; ip -n "$ns" link set d1 up
ip netns exec "$ns" "$bin" load --iface d0 "${args[@]}" --duration 60 >"$dir/load.log" 2>&1 & pid=$!
id=
for _ in $(seq 100); do
    id=$(ip -n "$ns" link show d0 | grep -o "prog/xdp id [0-9]*" | awk '{print $3}') || true
    [ -n "$id" ] && break; sleep 0.1
done
[ -n "$id" ] || { echo "error: the filter did not attach:" >&2; cat "$dir/load.log" >&2; exit 1; }
sleep 0.5 # the rules are written after the attach
mkdir "$dir/maps"
bpftool prog dump xlated id "$id" >"$dir/xlated.txt"
for m in $(bpftool prog show id "$id" -j | python3 -c 'import json,sys; print(*json.load(sys.stdin)["map_ids"])'); do
    python3 - "$m" "$dir" <<'P'
import json, subprocess, sys
m, d = sys.argv[1], sys.argv[2]
info = json.loads(subprocess.check_output(["bpftool", "map", "show", "id", m, "-j"]))
out = {"type": info["type"], "value_size": info.get("bytes_value", 0), "name": info.get("name"),
       "percpu": "percpu" in info["type"], "values": None}
if info["type"] == "array":
    dump = json.loads(subprocess.check_output(["bpftool", "map", "dump", "id", m, "-j"]))
    out["values"] = [[int(x, 16) for x in e["value"]] for e in dump]
json.dump(out, open(f"{d}/maps/{m}.json", "w"))
P
done
python3 "$(dirname "$0")/xdp-path-length.py" "$dir" "${frames[@]}"
