//! The `#[repr(C)]` types that the XDP program (`xdp-ebpf`) and its loader (`xdp-user`) exchange
//! through BPF maps.
//!
//! This module has no dependencies, so the eBPF crate can use it with `default-features = false`.
//! Every type here is plain old data without padding (checked at compile time below), because
//! the kernel copies map values byte for byte and padding bytes would be uninitialised memory.
//! With the `user` feature they implement `aya::Pod`.
//!
//! # How rules are matched: bit vectors, not a scan
//! A rule set of up to [`MAX_RULES`] rules is compiled by the loader into one lookup table per
//! packet field (protocol, source prefix, destination prefix, source port, destination port,
//! ICMP type). Each table maps a field value to a [`RuleMask`]: the set of rules that this value
//! does not exclude (rules that do not constrain the field are in every mask). The program does
//! one lookup per field, ANDs the masks, and the lowest set bit is the first matching rule in
//! priority order. The cost is a fixed number of map lookups, whatever the number of rules; only
//! the final AND grows, by one 64-bit word per 64 rules. Prefixes live in LPM tries, so the
//! longest matching prefix's mask already holds every shorter rule prefix that also covers it.

/// The most rules one rule set may hold (the width of a [`RuleMask`]).
pub const MAX_RULES: usize = 256;
/// 64-bit words in a [`RuleMask`].
pub const RULE_MASK_WORDS: usize = MAX_RULES / 64;

/// A set of rule indexes; bit `i` stands for rule `i` (rule 0 has the highest priority).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleMask {
    pub words: [u64; RULE_MASK_WORDS],
}

impl RuleMask {
    pub const EMPTY: RuleMask = RuleMask {
        words: [0; RULE_MASK_WORDS],
    };

    /// The mask with the rules `0..count` set.
    pub const fn first_n(count: usize) -> RuleMask {
        let mut mask = RuleMask::EMPTY;
        let mut i = 0;
        while i < count && i < MAX_RULES {
            mask.words[i / 64] |= 1 << (i % 64);
            i += 1;
        }
        mask
    }

    #[inline]
    pub fn insert(&mut self, rule: usize) {
        if rule < MAX_RULES {
            self.words[rule / 64] |= 1 << (rule % 64);
        }
    }

    #[inline]
    pub fn contains(&self, rule: usize) -> bool {
        rule < MAX_RULES && self.words[rule / 64] & (1 << (rule % 64)) != 0
    }

    #[inline]
    pub fn and(&self, other: &RuleMask) -> RuleMask {
        let mut out = RuleMask::EMPTY;
        let mut i = 0;
        while i < RULE_MASK_WORDS {
            out.words[i] = self.words[i] & other.words[i];
            i += 1;
        }
        out
    }

    /// The highest-priority rule in the set.
    #[inline(always)]
    pub fn first(&self) -> Option<usize> {
        let mut i = 0;
        while i < RULE_MASK_WORDS {
            let w = self.words[i];
            if w != 0 {
                return Some(i * 64 + lowest_bit(w) as usize);
            }
            i += 1;
        }
        None
    }
}

/// The index of the lowest set bit of a non-zero word, by binary search. The BPF instruction set
/// has no count-trailing-zeros, and this needs no lookup table: six compare-and-shift steps the
/// verifier accepts as straight-line code.
#[inline(always)]
pub const fn lowest_bit(mut w: u64) -> u32 {
    let mut n = 0;
    if w & 0xffff_ffff == 0 {
        n += 32;
        w >>= 32;
    }
    if w & 0xffff == 0 {
        n += 16;
        w >>= 16;
    }
    if w & 0xff == 0 {
        n += 8;
        w >>= 8;
    }
    if w & 0xf == 0 {
        n += 4;
        w >>= 4;
    }
    if w & 0x3 == 0 {
        n += 2;
        w >>= 2;
    }
    if w & 0x1 == 0 {
        n += 1;
    }
    n
}

/// What the XDP program does with a packet. Stored as `u32` in maps.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Hand the packet to the kernel's network stack (`XDP_PASS`).
    Pass = 0,
    /// Drop the packet in the driver (`XDP_DROP`).
    Drop = 1,
    /// Redirect into the AF_XDP socket bound to the packet's RX queue; `Pass` when that queue
    /// has no socket, so traffic is never black-holed.
    Xsk = 2,
}

impl Action {
    pub const COUNT: usize = 3;

    #[inline]
    pub const fn from_u32(v: u32) -> Option<Action> {
        match v {
            0 => Some(Action::Pass),
            1 => Some(Action::Drop),
            2 => Some(Action::Xsk),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Xsk => "xsk",
        }
    }
}

/// Packets and bytes; the value type of every counter map (per CPU; the loader sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    #[inline]
    pub fn add(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }

    #[inline]
    pub fn merge(&mut self, other: &Counter) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Slots of the per-CPU statistics array (`STATS` map). Each slot is a [`Counter`].
pub mod stat {
    /// Packets that took `Action::Pass` (index = action).
    pub const ACTION_PASS: u32 = 0;
    pub const ACTION_DROP: u32 = 1;
    pub const ACTION_XSK: u32 = 2;
    /// Packets whose rule said `xsk` but whose RX queue had no socket, so they were passed.
    pub const XSK_FALLBACK: u32 = 3;
    pub const MALFORMED: u32 = 4;
    pub const PROTO_ARP: u32 = 5;
    pub const PROTO_IPV4: u32 = 6;
    pub const PROTO_IPV6: u32 = 7;
    pub const PROTO_TCP: u32 = 8;
    pub const PROTO_UDP: u32 = 9;
    pub const PROTO_ICMP: u32 = 10;
    pub const PROTO_ICMPV6: u32 = 11;
    pub const PROTO_OTHER: u32 = 12;
    /// Packets that matched no rule and took the default action.
    pub const DEFAULT_ACTION: u32 = 13;
    /// Number of slots.
    pub const COUNT: u32 = 14;
}

/// Protocol classes: the index into the protocol table (`PROTO_MASKS` map).
pub mod proto_class {
    pub const TCP: u32 = 0;
    pub const UDP: u32 = 1;
    pub const ICMP: u32 = 2;
    pub const ICMPV6: u32 = 3;
    /// IPv4/IPv6 with any other (or no parsable) transport, including fragments.
    pub const OTHER_IP: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Index of the "no port" entry in the port tables: the mask for packets without L4 ports
/// (ICMP, fragments, other protocols). Ports 0..=65535 index the table directly.
pub const PORT_TABLE_NO_PORT: u32 = 65536;
/// Entries of each port table.
pub const PORT_TABLE_LEN: u32 = 65537;
/// Index of the "not ICMP" entry in the ICMP type table; types 0..=255 index it directly.
pub const ICMP_TABLE_NOT_ICMP: u32 = 256;
/// Entries of the ICMP type table.
pub const ICMP_TABLE_LEN: u32 = 257;

/// The program's configuration, the single entry of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// The [`Action`] for packets that match no rule, as `u32`.
    pub default_action: u32,
    /// Number of rules in the installed set (rules `0..rule_count` are valid).
    pub rule_count: u32,
    /// [`config_flags`]: which fields any rule constrains. A field no rule constrains allows
    /// every rule, so the program skips its lookups (two LPM trie walks for addresses).
    pub flags: u32,
}

/// Bits of [`XdpConfig::flags`].
pub mod config_flags {
    /// Some rule has a `src` prefix: look up `SRC_V4` / `SRC_V6`.
    pub const SRC_USED: u32 = 1;
    /// Some rule has a `dst` prefix: look up `DST_V4` / `DST_V6`.
    pub const DST_USED: u32 = 2;
}

/// Map names, shared so the loader cannot look up a map the program does not define.
pub mod map_name {
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const RULE_STATS: &str = "RULE_STATS";
    pub const RULE_ACTIONS: &str = "RULE_ACTIONS";
    pub const PROTO_MASKS: &str = "PROTO_MASKS";
    pub const SRC_V4: &str = "SRC_V4";
    pub const DST_V4: &str = "DST_V4";
    pub const SRC_V6: &str = "SRC_V6";
    pub const DST_V6: &str = "DST_V6";
    pub const SPORT_MASKS: &str = "SPORT_MASKS";
    pub const DPORT_MASKS: &str = "DPORT_MASKS";
    pub const ICMP_MASKS: &str = "ICMP_MASKS";
    pub const XSKS: &str = "XSKS";
}

/// The most AF_XDP sockets (one per RX queue) the program can redirect to.
pub const MAX_QUEUES: u32 = 64;

// No padding anywhere: every type's size is the sum of its fields'.
const _: () = assert!(core::mem::size_of::<RuleMask>() == 8 * RULE_MASK_WORDS);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<XdpConfig>() == 12);
const _: () = assert!(core::mem::size_of::<Action>() == 4);

// SAFETY: each type is `#[repr(C)]`, `Copy`, has no padding (asserted above) and every bit
// pattern is a valid value (only integers inside).
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for RuleMask {}
// SAFETY: as above.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for Counter {}
// SAFETY: as above.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for XdpConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_first_is_lowest_index() {
        let mut m = RuleMask::EMPTY;
        assert_eq!(m.first(), None);
        m.insert(200);
        m.insert(70);
        assert_eq!(m.first(), Some(70));
        m.insert(3);
        assert_eq!(m.first(), Some(3));
        assert!(m.contains(200) && !m.contains(201));
    }

    #[test]
    fn mask_and_and_first_n() {
        let all = RuleMask::first_n(MAX_RULES);
        assert_eq!(all.words, [u64::MAX; RULE_MASK_WORDS]);
        let five = RuleMask::first_n(5);
        assert_eq!(five.words[0], 0b11111);
        let mut m = RuleMask::EMPTY;
        m.insert(4);
        m.insert(100);
        assert_eq!(m.and(&five).first(), Some(4));
        assert_eq!(m.and(&RuleMask::EMPTY).first(), None);
        // Out-of-range indexes are ignored, never a panic.
        m.insert(MAX_RULES);
        assert!(!m.contains(MAX_RULES));
    }

    #[test]
    fn lowest_bit_matches_trailing_zeros() {
        for i in 0..64 {
            assert_eq!(lowest_bit(1 << i), i);
            assert_eq!(lowest_bit(u64::MAX << i), i);
            assert_eq!(lowest_bit((1 << i) | (1 << 63)), i);
        }
    }

    #[test]
    fn action_round_trip() {
        for a in [Action::Pass, Action::Drop, Action::Xsk] {
            assert_eq!(Action::from_u32(a as u32), Some(a));
        }
        assert_eq!(Action::from_u32(3), None);
    }
}
