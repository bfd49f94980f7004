#!/usr/bin/env python3
"""Counts the BPF instructions an XDP program executes on each frame: interprets the program as
the kernel runs it (bpftool's xlated dump, inlined map lookups included) over the frame, with
its array maps as dumped from the kernel (per-CPU maps read as zeros). Run through
scripts/xdp-path-length.sh, which makes DIR:
    xdp-path-length.py DIR FRAME...   (DIR: xlated.txt and maps/ID.json; FRAME: file or hex)
A helper call on the path is listed, not followed (its return is 0: a miss). TRACE=1 prints
each instruction executed with its source line."""
import json, os, re, sys

M64 = (1 << 64) - 1
# Where an array map's values start in the kernel's struct bpf_array: the inlined lookups in
# the xlated dump add it to the map's address (`r1 += 312`).
ARRAY_VALUES = 312
d = sys.argv[1]
lines = open(os.path.join(d, "xlated.txt")).read().splitlines()
prog = {}
src = {}
cur = ""
first = None
for l in lines:
    if l.startswith(";"):
        cur = l[1:].strip()
        continue
    m = re.match(r"^\s*(\d+): \(([0-9a-f]{2})\) (.*)$", l)
    if m:
        i = int(m.group(1))
        prog[i] = (m.group(2), m.group(3))
        src[i] = cur
        if first is None:
            first = i

maps = {}
for f in os.listdir(os.path.join(d, "maps")):
    info = json.load(open(os.path.join(d, "maps", f)))
    maps[int(f.split(".")[0])] = info


# Memory other than the frame and the stack, by name: "map:ID" (an array map's values, at
# ARRAY_VALUES, 8-byte aligned as the kernel lays them out) or "pcpu:ID:OFF" (a per-CPU
# element: zeros).
regions = {}


def region(name):
    if name not in regions:
        mem = bytearray(ARRAY_VALUES if name.startswith("map:") else 0)
        info = maps.get(int(name[4:])) if name.startswith("map:") else None
        if info and info.get("values") is not None:
            step = (info["value_size"] + 7) // 8 * 8
            for v in info["values"]:
                mem += bytes(v) + bytes(step - len(v))
        regions[name] = mem + bytearray(1 << 16)
    return regions[name]


class Ptr:
    def __init__(self, reg, off):
        self.reg, self.off = reg, off

    def __repr__(self):
        return f"<{self.reg}+{self.off}>"


def load(p, size, stack, pkt):
    if not isinstance(p, Ptr):
        raise Exception(f"load from non-pointer {p}")
    if p.reg == "ctx":
        if p.off == 0:
            return Ptr("pkt", 0)
        if p.off == 8:
            return Ptr("pkt", len(pkt))
        return 0
    if p.reg.startswith("map:") and maps.get(int(p.reg[4:]), {}).get("percpu") and size == 8:
        # the per-CPU pointer of an element
        return Ptr("pcpu:" + p.reg[4:] + ":" + str(p.off), 0)
    if p.reg == "pkt":
        mem, base = pkt, 0
        if p.off < 0 or p.off + size > len(pkt):
            raise Exception(f"packet read out of bounds {p} {size}")
    elif p.reg == "stack":
        mem, base = stack, 512
    else:
        mem, base = region(p.reg), 0
    o = base + p.off
    v = int.from_bytes(mem[o:o + size], "little")
    if p.reg == "stack" and (o, size) in ptr_slots:
        return ptr_slots[(o, size)]
    return v


ptr_slots = {}


def store(p, size, v, stack):
    if p.reg == "stack":
        o = 512 + p.off
        # forget pointer slots overlapping
        for k in list(ptr_slots):
            if not (k[0] + k[1] <= o or o + size <= k[0]):
                del ptr_slots[k]
        if isinstance(v, Ptr):
            ptr_slots[(o, size)] = v
            v = 0
        stack[o:o + size] = (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    elif p.reg == "pkt":
        raise Exception("packet write")
    else:
        if isinstance(v, Ptr):
            v = 0
        r = region(p.reg)
        r[p.off:p.off + size] = (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


SZ = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}


def val(tok, R):
    tok = tok.strip()
    if re.match(r"^r\d+$", tok):
        return R[int(tok[1:])]
    return int(tok, 0) & M64


def s64(x):
    return x - (1 << 64) if x & (1 << 63) else x


trace = []


def run(pkt):
    R = [0] * 11
    R[1] = Ptr("ctx", 0)
    R[10] = Ptr("stack", 0)
    stack = bytearray(1024)
    ptr_slots.clear()
    pc = first
    n = 0
    calls = []
    while True:
        op, text = prog[pc]
        n += 1
        trace.append(pc)
        if n > 100000:
            raise Exception("runaway")
        nxt = pc + (2 if op == "18" else 1)
        m = None
        if op == "95":
            return R[0], n, calls
        if op == "85":
            calls.append(text)
            mm = re.match(r"call pc([+-]\d+)#", text)
            if mm:
                raise Exception("bpf-to-bpf call on path: " + text)
            R[0] = 0
            for i in range(1, 6):
                R[i] = 0
            pc = nxt
            continue
        if op == "05":
            pc = nxt + int(re.match(r"goto pc([+-]\d+)", text).group(1))
            continue
        mm = re.match(r"if (r\d+) (\S+) (\S+) goto pc([+-]\d+)", text)
        if mm:
            a = val(mm.group(1), R)
            b = val(mm.group(3), R)
            o = mm.group(2)
            if isinstance(a, Ptr) or isinstance(b, Ptr):
                if isinstance(a, Ptr) and isinstance(b, Ptr):
                    assert a.reg == b.reg, (a, b, pc)
                    a, b = a.off, b.off
                elif isinstance(a, Ptr):
                    a, b = 1 << 40, b  # non-null pointer
                else:
                    a, b = a, 1 << 40
            sa, sb = s64(a & M64), s64(b & M64)
            ua, ub = a & M64, b & M64
            t = {"==": ua == ub, "!=": ua != ub, ">": ua > ub, ">=": ua >= ub, "<": ua < ub,
                 "<=": ua <= ub, "s>": sa > sb, "s>=": sa >= sb, "s<": sa < sb, "s<=": sa <= sb,
                 "&": (ua & ub) != 0}[o]
            pc = nxt + int(mm.group(4)) if t else nxt
            continue
        mm = re.match(r"\*\((u\d+) \*\)\((r\d+) ([+-]\d+)\) = (\S+)$", text)
        if mm:
            p = val(mm.group(2), R)
            store(Ptr(p.reg, p.off + int(mm.group(3))), SZ[mm.group(1)], val(mm.group(4), R), stack)
            pc = nxt
            continue
        mm = re.match(r"(r\d+) = \*\((u\d+) \*\)\((r\d+) ([+-]\d+)\)$", text)
        if mm:
            p = val(mm.group(3), R)
            R[int(mm.group(1)[1:])] = load(Ptr(p.reg, p.off + int(mm.group(4))), SZ[mm.group(2)], stack, pkt)
            pc = nxt
            continue
        mm = re.match(r"(r\d+) = map\[id:(\d+)\](?:\[0\]\+(\d+))?$", text)
        if mm:
            off = ARRAY_VALUES + int(mm.group(3)) if mm.group(3) else 0
            R[int(mm.group(1)[1:])] = Ptr("map:" + mm.group(2), off)
            pc = nxt
            continue
        mm = re.match(r"(r\d+) = (be|le)(\d+) (r\d+)$", text)
        if mm:
            x = R[int(mm.group(4)[1:])]
            bits = int(mm.group(3))
            x &= (1 << bits) - 1
            if mm.group(2) == "be":
                x = int.from_bytes(x.to_bytes(bits // 8, "little"), "big")
            R[int(mm.group(1)[1:])] = x
            pc = nxt
            continue
        mm = re.match(r"(r\d+) = -(r\d+)$", text)
        if mm:
            R[int(mm.group(1)[1:])] = (-R[int(mm.group(2)[1:])]) & M64
            pc = nxt
            continue
        mm = re.match(r"(r\d+) (\S*)= (\S+)$", text)
        if mm:
            dst = int(mm.group(1)[1:])
            o = mm.group(2)
            b = val(mm.group(3), R)
            a = R[dst]
            if o == "":
                r = b
            elif isinstance(a, Ptr) or isinstance(b, Ptr):
                if o == "+":
                    r = Ptr(a.reg, a.off + s64(b)) if isinstance(a, Ptr) else Ptr(b.reg, b.off + s64(a))
                elif o == "-":
                    if isinstance(b, Ptr):
                        assert a.reg == b.reg
                        r = (a.off - b.off) & M64
                    else:
                        r = Ptr(a.reg, a.off - s64(b))
                else:
                    raise Exception(f"pointer op {o} at {pc}: {text}")
            else:
                r = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "&": lambda: a & b,
                     "|": lambda: a | b, "^": lambda: a ^ b, "<<": lambda: a << (b & 63),
                     ">>": lambda: a >> (b & 63), "s>>": lambda: (s64(a) >> (b & 63)),
                     "/": lambda: a // b if b else 0, "%": lambda: a % b if b else a}[o]() & M64
            R[dst] = r
            pc = nxt
            continue
        raise Exception(f"unknown insn at {pc}: ({op}) {text}")


for f in sys.argv[2:]:
    if os.path.exists(f):
        pkt = bytearray(open(f, "rb").read())
    else:
        pkt = bytearray(bytes.fromhex(f))
        f = f[:16] + "..."
    rc, n, calls = run(pkt)
    print(f"{os.path.basename(f):14} ret {rc} insns {n} calls {calls}")
    if os.environ.get("TRACE"):
        for pc in trace:
            print(f"  {pc:5} ({prog[pc][0]}) {prog[pc][1]:45} ; {src[pc][:80]}")
    trace.clear()
