//! The XDP program: parses each frame at the driver hook, counts it per CPU, matches it against
//! the rule set, and passes, drops or redirects it into the AF_XDP socket of its RX queue.
//!
//! Rules are matched with bit vectors (see `packet::abi`): one map lookup per packet field
//! gives the set of rules the field allows; the AND of those sets, lowest bit first, is the
//! first matching rule in priority order. The cost does not grow with the number of rules.
//!
//! Rules apply to IPv4 and IPv6 packets. ARP, other ether types and malformed frames take the
//! default action (pass unless told otherwise), so the kernel keeps answering ARP and
//! neighbour discovery unless the user asks otherwise.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LpmTrie, PerCpuArray, XskMap, lpm_trie::Key},
    programs::XdpContext,
};
use packet::abi::{
    Action, Counter, ICMP_TABLE_LEN, ICMP_TABLE_NOT_ICMP, MAX_QUEUES, MAX_RULES, PORT_TABLE_LEN,
    PORT_TABLE_NO_PORT, RuleMask, XdpConfig, config_flags, proto_class, stat,
};

#[map(name = "CONFIG")]
static CONFIG: Array<XdpConfig> = Array::with_max_entries(1, 0);
#[map(name = "STATS")]
static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(stat::COUNT, 0);
#[map(name = "RULE_STATS")]
static RULE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_RULES as u32, 0);
#[map(name = "RULE_ACTIONS")]
static RULE_ACTIONS: Array<u32> = Array::with_max_entries(MAX_RULES as u32, 0);
#[map(name = "PROTO_MASKS")]
static PROTO_MASKS: Array<RuleMask> = Array::with_max_entries(proto_class::COUNT, 0);
#[map(name = "SRC_V4")]
static SRC_V4: LpmTrie<[u8; 4], RuleMask> = LpmTrie::with_max_entries(MAX_RULES as u32 + 1, 0);
#[map(name = "DST_V4")]
static DST_V4: LpmTrie<[u8; 4], RuleMask> = LpmTrie::with_max_entries(MAX_RULES as u32 + 1, 0);
#[map(name = "SRC_V6")]
static SRC_V6: LpmTrie<[u8; 16], RuleMask> = LpmTrie::with_max_entries(MAX_RULES as u32 + 1, 0);
#[map(name = "DST_V6")]
static DST_V6: LpmTrie<[u8; 16], RuleMask> = LpmTrie::with_max_entries(MAX_RULES as u32 + 1, 0);
#[map(name = "SPORT_MASKS")]
static SPORT_MASKS: Array<RuleMask> = Array::with_max_entries(PORT_TABLE_LEN, 0);
#[map(name = "DPORT_MASKS")]
static DPORT_MASKS: Array<RuleMask> = Array::with_max_entries(PORT_TABLE_LEN, 0);
#[map(name = "ICMP_MASKS")]
static ICMP_MASKS: Array<RuleMask> = Array::with_max_entries(ICMP_TABLE_LEN, 0);
#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers we step over (hop-by-hop, routing, fragment, destination options,
/// authentication), at most this many.
const MAX_IPV6_EXT: usize = 6;
const MAX_VLAN_TAGS: usize = 3;

#[xdp]
pub fn xdp_filter(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let action = match classify(&ctx, len) {
        Some(Verdict::Rule(rule)) => {
            count_rule(rule, len);
            RULE_ACTIONS
                .get(rule)
                .copied()
                .unwrap_or(Action::Pass as u32)
        }
        Some(Verdict::NoRule) => {
            count(stat::DEFAULT_ACTION, len);
            default_action()
        }
        None => {
            count(stat::MALFORMED, len);
            default_action()
        }
    };
    act(&ctx, action, len)
}

/// The reference for benchmarks: a program that only returns `XDP_DROP`. The filter's cost
/// per packet (BPF_PROG_TEST_RUN) is reported side by side with this one's, in the same run.
#[xdp]
pub fn xdp_drop_bare(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

enum Verdict {
    /// The first matching rule.
    Rule(u32),
    /// A well-formed frame that matched no rule (or is not IP).
    NoRule,
}

#[inline(always)]
fn default_action() -> u32 {
    CONFIG
        .get(0)
        .map(|c| c.default_action)
        .unwrap_or(Action::Pass as u32)
}

/// Carries out an action and counts it. `xsk` falls back to `pass` when the packet's RX queue
/// has no socket, so traffic is never black-holed by a missing socket.
#[inline(always)]
fn act(ctx: &XdpContext, action: u32, len: u64) -> u32 {
    if action == Action::Drop as u32 {
        count(stat::ACTION_DROP, len);
        return xdp_action::XDP_DROP;
    }
    if action == Action::Xsk as u32 {
        let queue = ctx.rx_queue_index();
        if XSKS.get(queue).is_some() {
            count(stat::ACTION_XSK, len);
            // The lower bits of the flags are the action if the socket went away meanwhile.
            return XSKS
                .redirect(queue, u64::from(xdp_action::XDP_PASS))
                .unwrap_or(xdp_action::XDP_PASS);
        }
        count(stat::XSK_FALLBACK, len);
    }
    count(stat::ACTION_PASS, len);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(slot: u32, bytes: u64) {
    if let Some(c) = STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU array element is only touched by this CPU, and XDP programs do
        // not preempt each other on one CPU; the pointer is valid for the program's run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
fn count_rule(rule: u32, bytes: u64) {
    if let Some(c) = RULE_STATS.get_ptr_mut(rule) {
        // SAFETY: as in `count`: a per-CPU element, valid for the program's run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Reads `N` bytes at `offset`, or `None` past the end of the frame.
#[inline(always)]
fn bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return None;
    }
    // SAFETY: `start + offset .. start + offset + N` lies inside the packet, checked just above
    // in the form the verifier tracks; `[u8; N]` has alignment 1.
    Some(unsafe { *((start + offset) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// What the transport layer gives the classifier.
struct L4 {
    class: u32,
    sport: u32,
    dport: u32,
    icmp_type: u32,
}

/// Parses the frame, counts its protocols, and finds its first matching rule. `None` means
/// malformed.
#[inline(always)]
fn classify(ctx: &XdpContext, len: u64) -> Option<Verdict> {
    let mut off = ETH_HLEN;
    let mut ether_type = be16(bytes::<2>(ctx, 12)?);
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != 0x8100 && ether_type != 0x88a8 && ether_type != 0x9100 {
            break;
        }
        ether_type = be16(bytes::<2>(ctx, off + 2)?);
        off += 4;
    }
    match ether_type {
        ETH_P_IPV4 => {
            let ip = bytes::<20>(ctx, off)?;
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            let total_len = usize::from(be16([ip[2], ip[3]]));
            if ip[0] >> 4 != 4 || header_len < 20 || total_len < header_len {
                return None;
            }
            if ctx.data() + off + total_len > ctx.data_end() {
                return None;
            }
            count(stat::PROTO_IPV4, len);
            let fragment = be16([ip[6], ip[7]]) & 0x3fff != 0;
            let l4 = transport(ctx, off + header_len, ip[9], fragment, len)?;
            let flags = rule_fields();
            let src = (flags & config_flags::SRC_USED != 0)
                .then(|| SRC_V4.get(Key::new(32, [ip[12], ip[13], ip[14], ip[15]])));
            let dst = (flags & config_flags::DST_USED != 0)
                .then(|| DST_V4.get(Key::new(32, [ip[16], ip[17], ip[18], ip[19]])));
            Some(match_rules(src, dst, &l4))
        }
        ETH_P_IPV6 => {
            let ip = bytes::<40>(ctx, off)?;
            let payload_len = usize::from(be16([ip[4], ip[5]]));
            if ip[0] >> 4 != 6 || ctx.data() + off + 40 + payload_len > ctx.data_end() {
                return None;
            }
            count(stat::PROTO_IPV6, len);
            let mut next = ip[6];
            let mut l4_off = off + 40;
            let mut fragment = false;
            for _ in 0..MAX_IPV6_EXT {
                match next {
                    0 | 43 | 60 => {
                        let h = bytes::<2>(ctx, l4_off)?;
                        next = h[0];
                        l4_off += (usize::from(h[1]) + 1) * 8;
                    }
                    44 => {
                        let h = bytes::<4>(ctx, l4_off)?;
                        next = h[0];
                        // Offset or more-fragments set: not the whole datagram.
                        fragment |= be16([h[2], h[3]]) & 0xfff9 != 0;
                        l4_off += 8;
                    }
                    51 => {
                        let h = bytes::<2>(ctx, l4_off)?;
                        next = h[0];
                        l4_off += (usize::from(h[1]) + 2) * 4;
                    }
                    _ => break,
                }
            }
            let l4 = transport(ctx, l4_off, next, fragment, len)?;
            let flags = rule_fields();
            let src = (flags & config_flags::SRC_USED != 0)
                .then(|| SRC_V6.get(Key::new(128, ip_bytes16(&ip, 8))));
            let dst = (flags & config_flags::DST_USED != 0)
                .then(|| DST_V6.get(Key::new(128, ip_bytes16(&ip, 24))));
            Some(match_rules(src, dst, &l4))
        }
        ETH_P_ARP => {
            count(stat::PROTO_ARP, len);
            Some(Verdict::NoRule)
        }
        _ => {
            count(stat::PROTO_OTHER, len);
            Some(Verdict::NoRule)
        }
    }
}

#[inline(always)]
fn ip_bytes16(ip: &[u8; 40], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        a[i] = ip[at + i];
        i += 1;
    }
    a
}

/// The transport layer: protocol class, ports, ICMP type; counts TCP/UDP/ICMP/ICMPv6. `None`
/// when the header is cut short. Fragments keep their protocol class but have no ports.
#[inline(always)]
fn transport(ctx: &XdpContext, off: usize, protocol: u8, fragment: bool, len: u64) -> Option<L4> {
    let mut l4 = L4 {
        class: proto_class::OTHER_IP,
        sport: PORT_TABLE_NO_PORT,
        dport: PORT_TABLE_NO_PORT,
        icmp_type: ICMP_TABLE_NOT_ICMP,
    };
    match protocol {
        IPPROTO_TCP => {
            count(stat::PROTO_TCP, len);
            l4.class = proto_class::TCP;
            if !fragment {
                let h = bytes::<20>(ctx, off)?;
                let data_offset = usize::from(h[12] >> 4) * 4;
                if data_offset < 20 || ctx.data() + off + data_offset > ctx.data_end() {
                    return None;
                }
                l4.sport = u32::from(be16([h[0], h[1]]));
                l4.dport = u32::from(be16([h[2], h[3]]));
            }
        }
        IPPROTO_UDP => {
            count(stat::PROTO_UDP, len);
            l4.class = proto_class::UDP;
            if !fragment {
                let h = bytes::<8>(ctx, off)?;
                l4.sport = u32::from(be16([h[0], h[1]]));
                l4.dport = u32::from(be16([h[2], h[3]]));
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if protocol == IPPROTO_ICMP {
                count(stat::PROTO_ICMP, len);
                l4.class = proto_class::ICMP;
            } else {
                count(stat::PROTO_ICMPV6, len);
                l4.class = proto_class::ICMPV6;
            }
            if !fragment {
                let h = bytes::<8>(ctx, off)?;
                l4.icmp_type = u32::from(h[0]);
            }
        }
        _ => {}
    }
    Some(l4)
}

/// Every rule: the mask of a field that no rule constrains.
static ALL: RuleMask = RuleMask::first_n(MAX_RULES);

#[inline(always)]
fn rule_fields() -> u32 {
    CONFIG.get(0).map(|c| c.flags).unwrap_or(u32::MAX)
}

/// ANDs the masks of every field; the lowest set bit is the first matching rule. `src` and
/// `dst` are `None` when no rule constrains that field (no lookup was made: every rule
/// allows it), `Some(None)` when the trie had no entry.
#[inline(always)]
fn match_rules(src: Option<Option<&RuleMask>>, dst: Option<Option<&RuleMask>>, l4: &L4) -> Verdict {
    // The loader always installs a /0 entry in each trie, so a miss means "no rule can match".
    let (Some(src), Some(dst)) = (src.unwrap_or(Some(&ALL)), dst.unwrap_or(Some(&ALL))) else {
        return Verdict::NoRule;
    };
    let (Some(proto), Some(sport), Some(dport), Some(icmp)) = (
        PROTO_MASKS.get(l4.class),
        SPORT_MASKS.get(l4.sport),
        DPORT_MASKS.get(l4.dport),
        ICMP_MASKS.get(l4.icmp_type),
    ) else {
        return Verdict::NoRule;
    };
    let m = proto.and(src).and(dst).and(sport).and(dport).and(icmp);
    match m.first() {
        Some(rule) => Verdict::Rule(rule as u32),
        None => Verdict::NoRule,
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
