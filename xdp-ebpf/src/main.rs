//! The XDP program: classifies each frame at the driver hook, counts it per CPU, decides it by
//! the rule set in force, and passes, drops or redirects it into the AF_XDP socket of its RX
//! queue.
//!
//! # Classification
//! The same definition as `packet::filter` (the Rust model the differential test holds this
//! program to, and the parser the AF_XDP and DPDK loops use). Every frame ends in one class:
//! - not IP (ARP, other ether types): the non-IP policy;
//! - malformed (truncated, bad lengths or IPv4 header checksum, a first fragment too short for
//!   its transport header, a TCP fragment that would overwrite the TCP header): the malformed
//!   policy;
//! - unparsed (an IPv6 extension-header chain longer than `MAX_IPV6_EXT_HEADERS`, or an
//!   extension header we do not walk): the unparsed policy;
//! - IP: the first matching rule, else the default action. A first fragment is classified by
//!   the transport header it carries, like a whole datagram; a later fragment has no ports and
//!   no ICMP type, so only rules without those keys can match it.
//!
//! The commonest frame (untagged IPv4 without options, not a fragment, UDP or TCP) is checked
//! first in one view ([`plain_ipv4`]) and then decided and counted by a copy of the rest of
//! the program of its own, where its constant fields (IPv4, no fragment, no ICMP type) fold
//! away; every other frame, and every such frame that fails a check, takes the general path,
//! which decides it alone.
//!
//! # Matching: bit vectors
//! One table per packet field gives the set of rules the field value allows (`packet::abi`);
//! the AND of those sets, lowest bit first, is the first matching rule in priority order. The
//! cost does not grow with the number of rules. A set whose rules constrain nothing but the
//! protocol, the fragment kind and the destination port (the commonest) skips even that: the
//! loader has ANDed the two tables for every pair in advance (`RuleSet::dport_first_rule`), so
//! one load gives the first matching rule and its action.
//!
//! # Counting
//! A frame adds to one per-CPU outcome counter (`packet::abi::outcome`: what it was, its
//! fragment kind, whether a rule matched, what was done with it) and, when a rule matched, to
//! that rule's counter (`Stats::rules`, in the same per-CPU value): one `STATS` lookup and at
//! most two counter updates per frame. The loader derives the totals by action, protocol,
//! fragment kind and verdict from the outcomes (`Stats::totals`), so they add up by
//! construction.
//!
//! # Capture
//! With `CAPTURE_CTL.snaplen` non-zero, every frame goes into the `CAPTURE` ring buffer after
//! it is decided: its first bytes, its RX queue, the XDP action returned, the verdict and the
//! rule. A full ring counts the frame in `Stats::capture_lost` instead. Off, capture costs one
//! load and a branch per frame.
//!
//! # Logs
//! Rare events go to `aya-log` (`xdp-user --log-level`): malformed frames (warn, with the check
//! that failed: the per-packet pass keeps no reason, and a frame that is logged is classified
//! again to find it), AF_XDP redirects that found no socket (warn), and each CPU's first packet
//! under a new rule set (info). The level is a load-time constant (`AYA_LOG_LEVEL`), so the
//! verifier removes every disabled level's code: off, logging costs nothing per packet. On, at
//! most one record per 10 ms per CPU is written.
//!
//! # Atomic reloads
//! `RULESETS` holds two compiled rule sets and `CONFIG.active_set` names the one in force. The
//! program reads that word once per packet (as the key of the `RULESETS` lookup) and takes
//! every table from the slot found, and the slot's number from the set itself
//! (`RuleSet::slot`, for the address tries and the per-rule counters); the loader writes the
//! other slot, switches the word, and waits for an RCU grace period before it touches the old
//! slot again. So every packet is decided entirely by one rule set.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_map_lookup_elem, bpf_xdp_load_bytes},
    },
    macros::{map, xdp},
    maps::{Array, LpmTrie, PerCpuArray, RingBuf, XskMap, lpm_trie::Key},
    programs::XdpContext,
};
use aya_log_ebpf::macro_support::{Level, level_enabled};
use aya_log_ebpf::{info, warn};
use packet::abi::{
    Action, CAPTURE_BYTES, CAPTURE_RING_BYTES, CaptureCtl, CaptureRecord, Counter, FirstRule,
    ICMP_NOT_ICMP, MAX_IPV6_EXT_HEADERS, MAX_RULES, NO_PORT, PORT_CLASS_NONE, ProbeRecord,
    RULE_MASK_WORDS, RULE_SET_SLOTS, RuleMask, RuleSet, Stats, TRIE_ENTRIES, XdpConfig,
    config_flags, frag, lowest_bit, outcome, proto_class, verdict,
};

/// The control word (`packet::abi::XdpConfig`): a global variable rather than an array map, so
/// the program reads it from its address instead of through a map lookup per packet (the
/// kernel keeps it as the one-entry map `.data.config`, which the loader writes). Read only
/// through volatile loads: the compiler must not fold in this initial value.
#[unsafe(link_section = ".data.config")]
#[unsafe(no_mangle)]
static mut CONFIG: XdpConfig = XdpConfig {
    active_set: 0,
    xsk_frame_room: 0,
};
#[map(name = "RULESETS")]
static RULESETS: Array<RuleSet> = Array::with_max_entries(RULE_SET_SLOTS, 0);
#[map(name = "STATS")]
static STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "SRC_V4")]
static SRC_V4: LpmTrie<[u8; 5], RuleMask> = LpmTrie::with_max_entries(TRIE_ENTRIES, 0);
#[map(name = "DST_V4")]
static DST_V4: LpmTrie<[u8; 5], RuleMask> = LpmTrie::with_max_entries(TRIE_ENTRIES, 0);
#[map(name = "SRC_V6")]
static SRC_V6: LpmTrie<[u8; 17], RuleMask> = LpmTrie::with_max_entries(TRIE_ENTRIES, 0);
#[map(name = "DST_V6")]
static DST_V6: LpmTrie<[u8; 17], RuleMask> = LpmTrie::with_max_entries(TRIE_ENTRIES, 0);
/// Sized by the loader from the interface's RX queue count.
#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(1, 0);
/// The snap length while capture is on, 0 while off, and who switched it on
/// (`packet::abi::CaptureCtl`); written by `xdp-user dump` / `--capture`. A global variable
/// like `CONFIG`, in a section (map `.data.capture`) of its own, so a capture never races a
/// reload's write of `CONFIG`.
#[unsafe(link_section = ".data.capture")]
#[unsafe(no_mangle)]
static mut CAPTURE_CTL: CaptureCtl = CaptureCtl {
    snaplen: 0,
    owner_pid: 0,
};
#[map(name = "CAPTURE")]
static CAPTURE: RingBuf = RingBuf::with_byte_size(CAPTURE_RING_BYTES, 0);
/// Per CPU: when the next log record may be written (the rate limit), and the rule-set
/// generation this CPU last logged.
#[map(name = "LOG_STATE")]
static LOG_STATE: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);
/// Written only by `xdp_filter_probe`.
#[map(name = "PROBE")]
static PROBE: Array<ProbeRecord> = Array::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const MAX_VLAN_TAGS: usize = 3;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
/// The smallest TCP header: a later fragment starting below it would overwrite it.
const TCP_MIN_HEADER: usize = 20;

#[xdp]
pub fn xdp_filter(ctx: XdpContext) -> u32 {
    // Here, not next to the fast path (which has the frame's bounds in registers): there it
    // saves four instructions a frame but doubles the verifier's walk of the program, and
    // with logging on takes it past the verifier's limit (see the differential module's
    // `the_verifier_accepts_the_filter_with_room_to_spare`).
    let len = (ctx.data_end() - ctx.data()) as u64;
    // SAFETY: the key is the program's read-only global; a non-null result is this CPU's
    // element of a per-CPU array, only touched by this CPU (XDP programs do not preempt each
    // other on one CPU), valid for the program's run.
    let Some(stats) =
        (unsafe { lookup_by_key_at::<_, Stats>(&STATS, &raw const KEY_ZERO).as_mut() })
    else {
        return xdp_action::XDP_PASS;
    };
    let Some((set, rules)) = rule_set() else {
        return xdp_action::XDP_PASS;
    };
    // The commonest frame gets a copy of the pipeline of its own, inlined with its constant
    // fields (IPv4, no fragment, no ICMP type, UDP or TCP), which fold away there; every other
    // frame takes the general copy.
    if let Some(f) = plain_ipv4(&ctx) {
        return filter(&ctx, stats, set, rules, len, Class::Ip(f));
    }
    let class = classify_general::<()>(&ctx);
    filter(&ctx, stats, set, rules, len, class)
}

/// Counts, decides, carries out and captures a classified frame; see [`xdp_filter`].
#[inline(always)]
fn filter(
    ctx: &XdpContext,
    stats: &mut Stats,
    set: u32,
    rules: &RuleSet,
    len: u64,
    class: Class<()>,
) -> u32 {
    // One counter per frame for everything global: what it was, its fragment kind, whether a
    // rule decided it, and what was done (the loader derives the totals from these). The first
    // two are known now: their part of the index is parked in the stats value and read back,
    // so the verifier does not carry each classifier exit's constants apart through the rest
    // of the program (see `Stats::scratch`).
    let (path, kind) = match &class {
        Class::NotIp { arp: true } => (outcome::path::ARP, frag::NONE),
        Class::NotIp { arp: false } => (outcome::path::OTHER, frag::NONE),
        Class::Malformed(_) => (outcome::path::MALFORMED, frag::NONE),
        Class::Unparsed => (outcome::path::UNPARSED, frag::NONE),
        Class::Ip(f) => (outcome::path::ip(f.v6, f.class), f.frag),
    };
    // SAFETY: plain store and load of this CPU's element, valid for the program's run.
    let base = unsafe {
        core::ptr::write_volatile(
            &mut stats.scratch,
            u64::from(outcome::index(path, kind, false, 0)),
        );
        core::ptr::read_volatile(&stats.scratch)
    };
    let decision = decide(ctx, &class, set, rules);
    if level_enabled(Level::Info) {
        log_rule_set(ctx, set, rules.generation);
    }
    if let Class::Malformed(()) = class
        && level_enabled(Level::Warn)
        && log_allowed()
    {
        // The reason, from a second pass that keeps it: only for a frame that is logged.
        let why = match classify::<Why>(ctx) {
            Class::Malformed(why) => why.text(),
            _ => "unknown",
        };
        warn!(
            ctx,
            "malformed frame ({}): {} bytes on RX queue {}, action {}",
            why,
            len,
            ctx.rx_queue_index(),
            decision.action
        );
    }
    let matched = decision.verdict == verdict::RULE;
    if matched {
        count_rule(stats, set, decision.rule, len);
    }
    let (action, done) = act(ctx, decision.action, len);
    let index = base + u64::from(matched) * u64::from(outcome::action::COUNT) + u64::from(done);
    if let Some(c) = stats.outcomes.get_mut(index as usize) {
        c.add(len);
    }
    // SAFETY: a 4-byte aligned load of the program's global, valid for its run; `dump`
    // writes it from user space meanwhile, so the load is volatile (read once, as it is).
    let snaplen = unsafe { core::ptr::read_volatile(&raw const CAPTURE_CTL.snaplen) };
    if snaplen != 0 {
        capture(
            ctx,
            &mut stats.capture_lost,
            snaplen,
            action,
            &decision,
            rules.generation,
            len,
        );
    }
    action
}

/// The rate limit of log records: at most one per 10 ms per CPU. Only reached when a level is
/// enabled.
#[inline(always)]
fn log_allowed() -> bool {
    let Some(state) = LOG_STATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: bpf_ktime_get_ns has no arguments; `state` is this CPU's element of a per-CPU
    // array, valid for the program's run and touched by no other CPU.
    unsafe {
        let now = bpf_ktime_get_ns();
        if now < (*state)[0] {
            return false;
        }
        (*state)[0] = now + 10_000_000;
    }
    true
}

/// Logs, once per CPU, that a new rule set is in force.
#[inline(always)]
fn log_rule_set(ctx: &XdpContext, set: u32, generation: u32) {
    let Some(state) = LOG_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's element of a per-CPU array, valid for the program's run.
    let seen = unsafe { &mut (*state)[1] };
    if *seen != u64::from(generation) {
        *seen = u64::from(generation);
        info!(ctx, "rule set {} (slot {}) in force", generation, set);
    }
}

/// Puts the frame, and what was done with it, into the capture ring (or counts it lost).
/// Inlined: eBPF calls take at most five arguments.
#[inline(always)]
fn capture(
    ctx: &XdpContext,
    lost: &mut Counter,
    snaplen: u32,
    action: u32,
    d: &Decision,
    generation: u32,
    len: u64,
) {
    let Some(mut entry) = CAPTURE.reserve::<CaptureRecord>(0) else {
        lost.add(len);
        return;
    };
    let record = entry.as_mut_ptr();
    let want = (len as u32).min(snaplen).min(CAPTURE_BYTES as u32);
    // The verifier must see 1 <= want <= CAPTURE_BYTES on the very register passed to the
    // helper. Read back through a volatile load, the value is opaque to LLVM, so the checks
    // below are kept as written instead of being folded into the min() above.
    // SAFETY: a read of a local through a valid reference.
    let want = unsafe { core::ptr::read_volatile(&want) };
    let cap_len = if want == 0 || want > CAPTURE_BYTES as u32 {
        0
    } else {
        // SAFETY: `record` is a reserved ring-buffer entry of size_of::<CaptureRecord>() bytes,
        // ours until submitted; `want` is at most CAPTURE_BYTES, the size of `data`, and at
        // most the frame's length, so the helper reads and writes only what exists.
        let rc =
            unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, (*record).data.as_mut_ptr().cast(), want) };
        if rc == 0 { want } else { 0 }
    };
    // SAFETY: as above; plain stores into the reserved entry.
    unsafe {
        (*record).ts_ns = bpf_ktime_get_ns();
        // SAFETY: `ctx.ctx` is the program's valid xdp_md for its whole run.
        (*record).ifindex = (*ctx.ctx).ingress_ifindex;
        (*record).rx_queue = (*ctx.ctx).rx_queue_index;
        (*record).orig_len = len as u32;
        (*record).cap_len = cap_len;
        (*record).xdp_action = action;
        (*record).verdict = d.verdict;
        (*record).rule = d.rule;
        (*record).generation = generation;
    }
    entry.submit(0);
}

/// The reference for benchmarks: a program that only returns `XDP_DROP`. The filter's cost
/// per packet (BPF_PROG_TEST_RUN) is reported side by side with this one's, in the same run.
#[xdp]
pub fn xdp_drop_bare(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The differential test's window into `xdp_filter`: the same classification and decision,
/// written into `PROBE` instead of counted and acted on. Never attached to an interface; run
/// only through `BPF_PROG_TEST_RUN`. Returns `verdict << 16 | rule`.
#[xdp]
pub fn xdp_filter_probe(ctx: XdpContext) -> u32 {
    let (Some((set, rules)), Some(out)) = (rule_set(), PROBE.get_ptr_mut(0)) else {
        return u32::MAX;
    };
    let class = classify::<()>(&ctx);
    let d = decide(&ctx, &class, set, rules);
    // SAFETY: `out` points at the single element of an array map, valid for the program's
    // run; only this program writes it, and the test runs it from one thread.
    let out = unsafe { &mut *out };
    *out = ProbeRecord {
        verdict: d.verdict,
        rule: d.rule,
        action: d.action,
        generation: rules.generation,
        ..ProbeRecord::default()
    };
    if let Class::Ip(f) = &class {
        out.v6 = u32::from(f.v6);
        out.protocol = u32::from(f.protocol);
        out.class = f.class;
        out.sport = f.sport;
        out.dport = f.dport;
        out.icmp_type = f.icmp_type;
        out.frag = f.frag;
        // Both addresses in one read (they are adjacent): with two, the compiler may merge
        // their bounds tests into one the verifier cannot follow.
        if f.v6 {
            if let Some(a) = bytes::<32>(&ctx, f.l3 + 8) {
                out.src.copy_from_slice(&a[..16]);
                out.dst.copy_from_slice(&a[16..]);
            }
        } else if let Some(a) = bytes::<8>(&ctx, f.l3 + 12) {
            out.src[..4].copy_from_slice(&a[..4]);
            out.dst[..4].copy_from_slice(&a[4..]);
        }
    }
    (d.verdict << 16) | d.rule
}

/// The slot in force and its rule set. `CONFIG.active_set` is read once per packet, by the
/// lookup itself, and the slot number comes from the set found (`RuleSet::slot`): everything
/// after comes from this one slot.
#[inline(always)]
fn rule_set() -> Option<(u32, &'static RuleSet)> {
    // SAFETY: the key is the program's global, valid for its run, and the lookup only reads
    // it; a non-null result points at a `RuleSet` element of `RULESETS`, valid for the
    // program's run (the loader rewrites a slot only after an RCU grace period past the
    // switch away from it).
    let rules = unsafe {
        lookup_by_key_at::<_, RuleSet>(&RULESETS, &raw const CONFIG.active_set).as_ref()?
    };
    // The loader writes 0 or 1; the modulo shows the bound to the compiler, which then
    // drops the per-rule counter's bounds test.
    Some((rules.slot % RULE_SET_SLOTS, rules))
}

/// The key of a one-entry map's single element, in the program's read-only data (see
/// [`lookup_by_key_at`]).
static KEY_ZERO: u32 = 0;

/// `bpf_map_lookup_elem` with the key read from `key` in a global (map memory) rather than
/// from a copy on the stack, as aya's `get(index)` makes: the kernel inlines an array lookup
/// as a load of the key, a bound test and an add, and a key stored to the stack just before
/// is loaded back through store-to-load forwarding, on the path of every packet (profiled:
/// about a seventh of the program's samples on those two loads).
///
/// # Safety
/// `key` must point at a `u32` in a global of the program, and `M` must be one of aya's map
/// types (`#[repr(transparent)]` over the map's definition, whose address the loader
/// relocates to the map).
#[inline(always)]
unsafe fn lookup_by_key_at<M, V>(map: &M, key: *const u32) -> *mut V {
    // SAFETY: as the caller promises; the helper reads 4 bytes of key.
    unsafe { bpf_map_lookup_elem(core::ptr::from_ref(map) as *mut _, key.cast()).cast() }
}

/// What a frame is, as far as rules are concerned; `R` is what a malformed frame says about
/// why (see [`Reason`]).
enum Class<R> {
    /// ARP (`arp` true) or another ether type.
    NotIp {
        arp: bool,
    },
    Malformed(R),
    /// IPv6 whose transport header cannot be reached.
    Unparsed,
    Ip(Fields),
}

/// What the classifier keeps of why a frame is malformed. The per-packet pass keeps nothing
/// (`()`): keeping the reason costs a store at every check of every frame, for a log record
/// that is rare and usually off. The warn log classifies a malformed frame a second time with
/// [`Why`] to say which check failed.
trait Reason: Copy {
    fn of(why: Why) -> Self;
}

impl Reason for () {
    #[inline(always)]
    fn of(_: Why) {}
}

impl Reason for Why {
    #[inline(always)]
    fn of(why: Why) -> Why {
        why
    }
}

/// Why a frame is malformed: said in the warn log record, so an engineer sees which header
/// was wrong without capturing the frame.
#[derive(Clone, Copy)]
enum Why {
    Ethernet,
    Vlan,
    Arp,
    Ipv4Header,
    Ipv4Fields,
    Ipv4Length,
    Ipv4Checksum,
    Ipv6Header,
    Ipv6Length,
    Ipv6Extension,
    IcmpVersion,
    TinyFragment,
    Tcp,
    UdpHeader,
    UdpLength,
    Icmp,
}

impl Why {
    fn text(self) -> &'static str {
        match self {
            Why::Ethernet => "shorter than an Ethernet header",
            Why::Vlan => "VLAN tag cut short",
            Why::Arp => "ARP cut short",
            Why::Ipv4Header => "IPv4 header cut short",
            Why::Ipv4Fields => "bad IPv4 version, header length or total length",
            Why::Ipv4Length => "IPv4 total length beyond the frame",
            Why::Ipv4Checksum => "bad IPv4 header checksum",
            Why::Ipv6Header => "IPv6 header cut short",
            Why::Ipv6Length => "bad IPv6 version, or payload length beyond the frame",
            Why::Ipv6Extension => "bad IPv6 extension header",
            Why::IcmpVersion => "ICMP in the wrong IP version",
            Why::TinyFragment => "fragment overlapping the TCP header",
            Why::Tcp => "TCP header cut short or bad data offset",
            Why::UdpHeader => "UDP header cut short",
            Why::UdpLength => "UDP length is not the IP payload length",
            Why::Icmp => "ICMP header cut short",
        }
    }
}

/// The fields of an IP packet that rules look at.
struct Fields {
    v6: bool,
    /// Where the IP header starts (the addresses are read from there when needed).
    l3: usize,
    protocol: u8,
    class: u32,
    /// `NO_PORT` when absent.
    sport: u32,
    dport: u32,
    /// `ICMP_NOT_ICMP` when absent.
    icmp_type: u32,
    frag: u32,
}

struct Decision {
    verdict: u32,
    rule: u32,
    action: u32,
}

/// `N` bytes of the frame from a checked offset. The bounds check is made once, when the view
/// is made, in the form the verifier tracks (`data + offset + N > data_end`); the fields are then
/// read at constant offsets that the compiler checks against `N`. Reads are single loads at
/// whatever alignment the field has (see `build.rs`), not bytes copied out and shifted back
/// together.
#[derive(Clone, Copy)]
struct Header<const N: usize> {
    ptr: *const u8,
}

impl<const N: usize> Header<N> {
    /// The view at `offset`, or `None` past the end of the frame.
    #[inline(always)]
    fn at(ctx: &XdpContext, offset: usize) -> Option<Self> {
        let start = ctx.data();
        if start + offset + N > ctx.data_end() {
            return None;
        }
        Some(Header {
            ptr: (start + offset) as *const u8,
        })
    }

    /// The `M` bytes at `AT` inside this view, with no second bounds check.
    #[inline(always)]
    fn sub<const AT: usize, const M: usize>(self) -> Header<M> {
        const { assert!(AT + M <= N) };
        Header {
            // SAFETY: `AT + M <= N`, so the sub-view lies inside the checked `N` bytes.
            ptr: unsafe { self.ptr.add(AT) },
        }
    }

    #[inline(always)]
    fn u8<const I: usize>(self) -> u8 {
        const { assert!(I < N) };
        // SAFETY: `ptr .. ptr + N` lies inside the packet (checked in `at`) and `I < N`.
        unsafe { *self.ptr.add(I) }
    }

    /// The big-endian (network order) 16-bit field at `I`.
    #[inline(always)]
    fn be16<const I: usize>(self) -> u16 {
        const { assert!(I + 2 <= N) };
        // SAFETY: `I .. I + 2` lies inside the checked `N` bytes; read_unaligned needs no
        // alignment.
        u16::from_be(unsafe { self.ptr.add(I).cast::<u16>().read_unaligned() })
    }

    /// The 32-bit word at `I` in host order: for one's complement sums, which come out the same
    /// (byte-swapped, and 0xffff is its own swap) whatever the order the words are read in.
    #[inline(always)]
    fn ne32<const I: usize>(self) -> u32 {
        const { assert!(I + 4 <= N) };
        // SAFETY: `I .. I + 4` lies inside the checked `N` bytes; read_unaligned needs no
        // alignment.
        unsafe { self.ptr.add(I).cast::<u32>().read_unaligned() }
    }
}

/// Copies `N` bytes at `offset` (addresses, for trie keys), or `None` past the end of the frame.
#[inline(always)]
fn bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let h = Header::<N>::at(ctx, offset)?;
    // SAFETY: `ptr .. ptr + N` lies inside the packet (checked in `at`); `[u8; N]` has
    // alignment 1.
    Some(unsafe { *h.ptr.cast::<[u8; N]>() })
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// The commonest frame, checked in one view: untagged Ethernet, an IPv4 header without options
/// that is not a fragment, and a UDP or TCP header inside the datagram. `None` for anything
/// else, and for any such frame that fails a check: the general path ([`ipv4`], [`transport`])
/// then classifies it, so this only decides frames the general path would find well-formed, and
/// gives them the same fields (the differential test holds both to the Rust model). One bounds
/// check instead of three, and none of the VLAN, option, fragment or protocol dispatch.
#[inline(always)]
fn plain_ipv4(ctx: &XdpContext) -> Option<Fields> {
    const L3: usize = ETH_HLEN;
    const L4: usize = L3 + 20;
    let frame = Header::<{ L4 + 8 }>::at(ctx, 0)?;
    let (ip, l4) = (frame.sub::<L3, 20>(), frame.sub::<L4, 8>());
    // Version 4 and a 20-byte header; neither more fragments nor an offset (DF and the
    // reserved bit are not looked at, as in `ipv4`).
    if frame.be16::<12>() != ETH_P_IPV4 || ip.u8::<0>() != 0x45 || ip.be16::<6>() & 0x3fff != 0 {
        return None;
    }
    let total_len = usize::from(ip.be16::<2>());
    if L3 + total_len > frame_len(ctx) || !sum_is_all_ones(ipv4_fixed_header_sum(ip)) {
        return None;
    }
    let protocol = ip.u8::<9>();
    let class = match protocol {
        IPPROTO_UDP => {
            // The UDP length is the IP payload's.
            if total_len < 28 || usize::from(l4.be16::<4>()) != total_len - 20 {
                return None;
            }
            proto_class::UDP
        }
        IPPROTO_TCP => {
            let tcp = Header::<20>::at(ctx, L4)?;
            let data_offset = usize::from(tcp.u8::<12>() >> 4) * 4;
            if data_offset < 20 || 20 + data_offset > total_len {
                return None;
            }
            proto_class::TCP
        }
        _ => return None,
    };
    Some(Fields {
        v6: false,
        l3: L3,
        protocol,
        class,
        sport: u32::from(l4.be16::<0>()),
        dport: u32::from(l4.be16::<2>()),
        icmp_type: ICMP_NOT_ICMP,
        frag: frag::NONE,
    })
}

/// Layer 2: Ethernet, up to three VLAN tags, then IPv4, IPv6 or ARP: the commonest frame in
/// one view ([`plain_ipv4`]), everything else on the general path.
#[inline(always)]
fn classify<R: Reason>(ctx: &XdpContext) -> Class<R> {
    if let Some(f) = plain_ipv4(ctx) {
        return Class::Ip(f);
    }
    classify_general(ctx)
}

/// [`classify`] without the fast path: decides every frame alone, the commonest too.
#[inline(always)]
fn classify_general<R: Reason>(ctx: &XdpContext) -> Class<R> {
    let Some(eth) = Header::<ETH_HLEN>::at(ctx, 0) else {
        return Class::Malformed(R::of(Why::Ethernet));
    };
    let mut ether_type = eth.be16::<12>();
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != 0x8100 && ether_type != 0x88a8 && ether_type != 0x9100 {
            break;
        }
        let Some(tag) = Header::<4>::at(ctx, off) else {
            return Class::Malformed(R::of(Why::Vlan));
        };
        ether_type = tag.be16::<2>();
        off += 4;
    }
    match ether_type {
        ETH_P_IPV4 => ipv4(ctx, off),
        ETH_P_IPV6 => ipv6(ctx, off),
        ETH_P_ARP => {
            // The fixed part, then two hardware and two protocol addresses.
            let Some(h) = Header::<8>::at(ctx, off) else {
                return Class::Malformed(R::of(Why::Arp));
            };
            let need = 8 + 2 * (usize::from(h.u8::<4>()) + usize::from(h.u8::<5>()));
            if off + need > frame_len(ctx) {
                return Class::Malformed(R::of(Why::Arp));
            }
            Class::NotIp { arp: true }
        }
        _ => Class::NotIp { arp: false },
    }
}

#[inline(always)]
fn ipv4<R: Reason>(ctx: &XdpContext, l3: usize) -> Class<R> {
    let Some(ip) = Header::<20>::at(ctx, l3) else {
        return Class::Malformed(R::of(Why::Ipv4Header));
    };
    let version_ihl = ip.u8::<0>();
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let total_len = usize::from(ip.be16::<2>());
    if version_ihl >> 4 != 4 || header_len < 20 || total_len < header_len {
        return Class::Malformed(R::of(Why::Ipv4Fields));
    }
    if l3 + total_len > frame_len(ctx) {
        return Class::Malformed(R::of(Why::Ipv4Length));
    }
    if !ipv4_checksum_ok(ctx, ip, l3, header_len) {
        return Class::Malformed(R::of(Why::Ipv4Checksum));
    }
    let word = ip.be16::<6>();
    let offset = usize::from(word & 0x1fff);
    let kind = if offset > 0 {
        frag::LATER
    } else if word & 0x2000 != 0 {
        frag::FIRST
    } else {
        frag::NONE
    };
    transport(
        ctx,
        false,
        l3,
        ip.u8::<9>(),
        kind,
        offset,
        l3 + header_len,
        l3 + total_len,
    )
}

/// The one's complement sum over the header (options included) must be 0xffff. Summed in
/// 32-bit words into 64 bits and checked at the end ([`sum_is_all_ones`]): five loads for a
/// header without options.
#[inline(always)]
fn ipv4_checksum_ok(ctx: &XdpContext, ip: Header<20>, l3: usize, header_len: usize) -> bool {
    let mut sum = ipv4_fixed_header_sum(ip);
    // Options: up to 40 bytes, in 4-byte words.
    for word in 0..10 {
        let at = 20 + word * 4;
        if at >= header_len {
            break;
        }
        let Some(o) = Header::<4>::at(ctx, l3 + at) else {
            return false;
        };
        sum += u64::from(o.ne32::<0>());
    }
    sum_is_all_ones(sum)
}

/// Whether `sum`, a sum of the header's bytes as 32-bit words (version byte included, so never
/// 0), folds to the one's complement sum 0xffff of a valid header. Folding (end-around carries)
/// keeps the value modulo 0xffff, and only a sum of all-zero words folds to 0, so this is
/// divisibility by 0xffff, which the compiler turns into one multiply and one compare instead
/// of four fold steps.
#[inline(always)]
fn sum_is_all_ones(sum: u64) -> bool {
    sum.is_multiple_of(0xffff)
}

/// The sum of the 20-byte fixed IPv4 header in 32-bit words (see [`ipv4_checksum_ok`]).
#[inline(always)]
fn ipv4_fixed_header_sum(ip: Header<20>) -> u64 {
    u64::from(ip.ne32::<0>())
        + u64::from(ip.ne32::<4>())
        + u64::from(ip.ne32::<8>())
        + u64::from(ip.ne32::<12>())
        + u64::from(ip.ne32::<16>())
}

/// Extension header types that are neither walked nor a transport protocol.
#[inline(always)]
fn unwalkable_extension(next: u8) -> bool {
    matches!(next, 135 | 139 | 140 | 253 | 254)
}

#[inline(always)]
fn walkable_extension(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

#[inline(always)]
fn ipv6<R: Reason>(ctx: &XdpContext, l3: usize) -> Class<R> {
    let Some(ip) = Header::<8>::at(ctx, l3) else {
        return Class::Malformed(R::of(Why::Ipv6Header));
    };
    let end = l3 + 40 + usize::from(ip.be16::<4>());
    if ip.u8::<0>() >> 4 != 6 || end > frame_len(ctx) {
        return Class::Malformed(R::of(Why::Ipv6Length));
    }
    let mut next = ip.u8::<6>();
    let mut at = l3 + 40;
    let mut kind = frag::NONE;
    for i in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Hop-by-hop options may only come first (RFC 8200, section 4.1).
                if next == IPPROTO_HOPOPTS && i != 0 {
                    return Class::Malformed(R::of(Why::Ipv6Extension));
                }
                let Some(h) = Header::<2>::at(ctx, at) else {
                    return Class::Malformed(R::of(Why::Ipv6Extension));
                };
                let size = (usize::from(h.u8::<1>()) + 1) * 8;
                if at + size > end {
                    return Class::Malformed(R::of(Why::Ipv6Extension));
                }
                next = h.u8::<0>();
                at += size;
            }
            IPPROTO_AH => {
                let Some(h) = Header::<2>::at(ctx, at) else {
                    return Class::Malformed(R::of(Why::Ipv6Extension));
                };
                let size = (usize::from(h.u8::<1>()) + 2) * 4;
                if h.u8::<1>() == 0 || at + size > end {
                    return Class::Malformed(R::of(Why::Ipv6Extension));
                }
                next = h.u8::<0>();
                at += size;
            }
            IPPROTO_FRAGMENT => {
                let Some(h) = Header::<4>::at(ctx, at) else {
                    return Class::Malformed(R::of(Why::Ipv6Extension));
                };
                if at + 8 > end {
                    return Class::Malformed(R::of(Why::Ipv6Extension));
                }
                next = h.u8::<0>();
                at += 8;
                let word = h.be16::<2>();
                let offset = usize::from(word >> 3);
                if offset > 0 {
                    // A later fragment: what follows is fragment data, not headers.
                    if walkable_extension(next) || unwalkable_extension(next) {
                        return Class::Unparsed;
                    }
                    return transport(ctx, true, l3, next, frag::LATER, offset, at, end);
                }
                if word & 1 != 0 {
                    kind = frag::FIRST;
                }
            }
            _ => break,
        }
    }
    if walkable_extension(next) || unwalkable_extension(next) {
        return Class::Unparsed;
    }
    transport(ctx, true, l3, next, kind, 0, at, end)
}

/// The transport header in `[l4, end)`: ports for TCP and UDP, the type for ICMP and ICMPv6.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transport<R: Reason>(
    ctx: &XdpContext,
    v6: bool,
    l3: usize,
    protocol: u8,
    kind: u32,
    frag_offset: usize,
    l4: usize,
    end: usize,
) -> Class<R> {
    let mut f = Fields {
        v6,
        l3,
        protocol,
        class: proto_class::OTHER_IP,
        sport: NO_PORT,
        dport: NO_PORT,
        icmp_type: ICMP_NOT_ICMP,
        frag: kind,
    };
    match protocol {
        IPPROTO_TCP => f.class = proto_class::TCP,
        IPPROTO_UDP => f.class = proto_class::UDP,
        IPPROTO_ICMP if !v6 => f.class = proto_class::ICMP,
        IPPROTO_ICMPV6 if v6 => f.class = proto_class::ICMPV6,
        // ICMP inside IPv6 or ICMPv6 inside IPv4.
        IPPROTO_ICMP | IPPROTO_ICMPV6 => return Class::Malformed(R::of(Why::IcmpVersion)),
        _ => {}
    }
    if kind == frag::LATER {
        // A fragment that starts inside the TCP header would overwrite it after the filter
        // saw the first fragment (RFC 1858, RFC 3128).
        if protocol == IPPROTO_TCP && frag_offset * 8 < TCP_MIN_HEADER {
            return Class::Malformed(R::of(Why::TinyFragment));
        }
        return Class::Ip(f);
    }
    match protocol {
        IPPROTO_TCP => {
            let Some(h) = Header::<20>::at(ctx, l4) else {
                return Class::Malformed(R::of(Why::Tcp));
            };
            let data_offset = usize::from(h.u8::<12>() >> 4) * 4;
            if l4 + 20 > end || data_offset < 20 || l4 + data_offset > end {
                return Class::Malformed(R::of(Why::Tcp));
            }
            f.sport = u32::from(h.be16::<0>());
            f.dport = u32::from(h.be16::<2>());
        }
        IPPROTO_UDP => {
            let Some(h) = Header::<8>::at(ctx, l4) else {
                return Class::Malformed(R::of(Why::UdpHeader));
            };
            if l4 + 8 > end {
                return Class::Malformed(R::of(Why::UdpHeader));
            }
            // A first fragment's UDP length covers the whole datagram, not this fragment.
            if kind == frag::NONE && usize::from(h.be16::<4>()) != end - l4 {
                return Class::Malformed(R::of(Why::UdpLength));
            }
            f.sport = u32::from(h.be16::<0>());
            f.dport = u32::from(h.be16::<2>());
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let Some(h) = Header::<8>::at(ctx, l4) else {
                return Class::Malformed(R::of(Why::Icmp));
            };
            if l4 + 8 > end {
                return Class::Malformed(R::of(Why::Icmp));
            }
            f.icmp_type = u32::from(h.u8::<0>());
        }
        _ => {}
    }
    Class::Ip(f)
}

/// The rule set's decision for a classified frame.
#[inline(always)]
fn decide<R>(ctx: &XdpContext, class: &Class<R>, set: u32, rules: &RuleSet) -> Decision {
    let (verdict, rule, action) = match class {
        Class::NotIp { .. } => (verdict::NOT_IP, 0, rules.not_ip_action),
        Class::Malformed(_) => (verdict::MALFORMED, 0, rules.malformed_action),
        Class::Unparsed => (verdict::UNPARSED, 0, rules.unparsed_action),
        Class::Ip(f) => match match_rules(ctx, f, set, rules) {
            Some((rule, action)) => (verdict::RULE, rule, action),
            None => (verdict::NO_RULE, 0, rules.default_action),
        },
    };
    Decision {
        verdict,
        rule,
        action,
    }
}

/// The first matching rule and its action. ANDs the masks of every field; the lowest set bit
/// is the first matching rule. The protocol and fragment mask holds only the set's rules, so
/// the result never names a rule past `rule_count`; fields no rule constrains are skipped
/// (every rule allows them). Only the mask words that can hold a rule are read: one 64-bit
/// word for up to 64 rules (the usual case), all of them beyond.
#[inline(always)]
fn match_rules(ctx: &XdpContext, f: &Fields, set: u32, rules: &RuleSet) -> Option<(u32, u32)> {
    if rules.flags & config_flags::NOT_DPORT == 0 {
        return first_rule_by_dport(f, rules);
    }
    let rule = if rules.rule_count <= 64 {
        match_words::<1>(ctx, f, set, rules)
    } else {
        match_words::<RULE_MASK_WORDS>(ctx, f, set, rules)
    }?;
    // The index is below `rule_count` (see above); were it not, pass (never black-hole).
    let action = rules.actions.get(rule as usize).copied();
    Some((rule, action.unwrap_or(Action::Pass as u32)))
}

/// The first matching rule and its action, for a set that constrains nothing but the
/// protocol, the fragment kind and the destination port: one entry of the table the loader
/// precomputed for the packet's pair (`RuleSet::dport_first_rule`).
#[inline(always)]
fn first_rule_by_dport(f: &Fields, rules: &RuleSet) -> Option<(u32, u32)> {
    let pf = RuleSet::proto_frag_index(f.class, f.frag);
    let class = port_class(&rules.dport_class, f.dport);
    let first = *rules
        .dport_first_rule
        .get(RuleSet::dport_first_rule_index(pf, class))?;
    (first != FirstRule::NONE).then_some((first.rule(), first.action()))
}

/// [`match_rules`] over the first `W` words of every mask.
#[inline(always)]
fn match_words<const W: usize>(
    ctx: &XdpContext,
    f: &Fields,
    set: u32,
    rules: &RuleSet,
) -> Option<u32> {
    let mut m = [0u64; W];
    let allowed = rules
        .proto_frag
        .get(RuleSet::proto_frag_index(f.class, f.frag))?;
    for (i, w) in m.iter_mut().enumerate() {
        *w = allowed.words[i];
    }
    let flags = rules.flags;
    // Destination ports are what most rule sets filter on: tested alone, and every other
    // field behind one test, so a port-only set pays two flag tests instead of five.
    if flags & config_flags::DPORT_USED != 0 {
        and_into(
            &mut m,
            port_mask(&rules.dport_class, &rules.dport_masks, f.dport)?,
        );
    }
    if flags & config_flags::NOT_DPORT != 0 {
        if flags & config_flags::ICMP_USED != 0 {
            and_into(&mut m, rules.icmp.get(f.icmp_type as usize)?);
        }
        if flags & config_flags::SPORT_USED != 0 {
            and_into(
                &mut m,
                port_mask(&rules.sport_class, &rules.sport_masks, f.sport)?,
            );
        }
        // The loader installs a /0 entry per family and slot, so a trie miss cannot happen;
        // if it did, no rule can match.
        let slot = set as u8;
        if flags & config_flags::SRC_USED != 0 {
            and_into(&mut m, address_mask(ctx, f, slot, true)?);
        }
        if flags & config_flags::DST_USED != 0 {
            and_into(&mut m, address_mask(ctx, f, slot, false)?);
        }
    }
    for (i, &w) in m.iter().enumerate() {
        if w != 0 {
            return Some((i * 64) as u32 + lowest_bit(w));
        }
    }
    None
}

#[inline(always)]
fn and_into<const W: usize>(m: &mut [u64; W], mask: &RuleMask) {
    for (i, w) in m.iter_mut().enumerate() {
        *w &= mask.words[i];
    }
}

#[inline(always)]
fn port_mask<'a>(classes: &[u16; 65536], masks: &'a [RuleMask], port: u32) -> Option<&'a RuleMask> {
    masks.get(usize::from(port_class(classes, port)))
}

#[inline(always)]
fn port_class(classes: &[u16; 65536], port: u32) -> u16 {
    if port == NO_PORT {
        PORT_CLASS_NONE
    } else {
        classes[(port & 0xffff) as usize]
    }
}

/// The longest-prefix entry for the packet's source (`src`) or destination address, in the
/// trie of its family, under the slot's key byte.
#[inline(always)]
fn address_mask(ctx: &XdpContext, f: &Fields, slot: u8, src: bool) -> Option<&'static RuleMask> {
    if f.v6 {
        let a = bytes::<16>(ctx, f.l3 + if src { 8 } else { 24 })?;
        let mut key = [slot; 17];
        key[1..].copy_from_slice(&a);
        let trie = if src { &SRC_V6 } else { &DST_V6 };
        trie.get(Key::new(8 + 128, key))
    } else {
        let a = bytes::<4>(ctx, f.l3 + if src { 12 } else { 16 })?;
        let key = [slot, a[0], a[1], a[2], a[3]];
        let trie = if src { &SRC_V4 } else { &DST_V4 };
        trie.get(Key::new(8 + 32, key))
    }
}

/// Carries out an action on a frame of `len` bytes: the XDP action to return, and what was
/// done (`outcome::action`). `xsk` falls back to `pass` when the packet's RX queue has no
/// socket, or when the frame is longer than a socket's frame holds (the kernel would drop it
/// after the redirect), so traffic is never black-holed by a missing or too small socket.
#[inline(always)]
fn act(ctx: &XdpContext, action: u32, len: u64) -> (u32, u32) {
    if action == Action::Drop as u32 {
        return (xdp_action::XDP_DROP, outcome::action::DROP);
    }
    if action == Action::Xsk as u32 {
        // SAFETY: as in `rule_set`.
        let room = unsafe { core::ptr::read_volatile(&raw const CONFIG.xsk_frame_room) };
        if room != 0 && len > u64::from(room) {
            return (xdp_action::XDP_PASS, outcome::action::XSK_OVERSIZE);
        }
        let queue = ctx.rx_queue_index();
        if XSKS.get(queue).is_some() {
            // The lower bits of the flags are the action if the socket went away meanwhile.
            let xdp = XSKS
                .redirect(queue, u64::from(xdp_action::XDP_PASS))
                .unwrap_or(xdp_action::XDP_PASS);
            return (xdp, outcome::action::XSK);
        }
        if level_enabled(Level::Warn) && log_allowed() {
            warn!(
                ctx,
                "xsk: no AF_XDP socket on RX queue {}: passed to the kernel", queue
            );
        }
        return (xdp_action::XDP_PASS, outcome::action::XSK_FALLBACK);
    }
    (xdp_action::XDP_PASS, outcome::action::PASS)
}

#[inline(always)]
fn count_rule(stats: &mut Stats, set: u32, rule: u32, bytes: u64) {
    if let Some(c) = stats
        .rules
        .get_mut(set as usize * MAX_RULES + rule as usize)
    {
        c.add(bytes);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves no panic path is reachable; this only satisfies no_std.
    loop {}
}

/// The kernel checks this string before it lets the program call GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
