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
//! packet field (protocol, fragment kind, source prefix, destination prefix, source port,
//! destination port, ICMP type). Each table maps a field value to a [`RuleMask`]: the set of rules that this value
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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

/// The index of the lowest set bit of a non-zero word: the bit isolated (`w & -w`), times a
/// de Bruijn sequence, whose top six bits are then unique per bit position. The BPF instruction
/// set has no count-trailing-zeros; this is five instructions and one table load, where a binary
/// search is six dependent compare-and-shift steps on the path of every matched packet.
#[inline(always)]
pub const fn lowest_bit(w: u64) -> u32 {
    const DE_BRUIJN: u64 = 0x03f7_9d71_b4cb_0a89;
    const POSITION: [u8; 64] = {
        let mut t = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            t[((1u64 << i).wrapping_mul(DE_BRUIJN) >> 58) as usize] = i as u8;
            i += 1;
        }
        t
    };
    POSITION[((w & w.wrapping_neg()).wrapping_mul(DE_BRUIJN) >> 58) as usize] as u32
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

    /// What was counted since `earlier`, a reading of the same counter (counters only grow).
    #[inline]
    pub fn since(&self, earlier: &Counter) -> Counter {
        Counter {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// The program's global totals, each a [`Counter`], as [`Stats::totals`] derives them from the
/// per-CPU outcome counters.
pub mod stat {
    /// Packets that took `Action::Pass` (index = action).
    pub const ACTION_PASS: u32 = 0;
    pub const ACTION_DROP: u32 = 1;
    pub const ACTION_XSK: u32 = 2;
    /// Packets whose rule said `xsk` but whose RX queue had no socket, so they were passed.
    pub const XSK_FALLBACK: u32 = 3;
    /// Frames that cannot be trusted (see `packet::filter`); they take the malformed policy.
    pub const MALFORMED: u32 = 4;
    pub const PROTO_ARP: u32 = 5;
    pub const PROTO_IPV4: u32 = 6;
    pub const PROTO_IPV6: u32 = 7;
    pub const PROTO_TCP: u32 = 8;
    pub const PROTO_UDP: u32 = 9;
    pub const PROTO_ICMP: u32 = 10;
    pub const PROTO_ICMPV6: u32 = 11;
    /// Frames of another ether type (not IP, not ARP).
    pub const PROTO_OTHER: u32 = 12;
    /// Well-formed packets that matched no rule (and non-IP frames): the default action.
    pub const DEFAULT_ACTION: u32 = 13;
    /// IPv6 packets whose transport header could not be reached: the unparsed policy.
    pub const UNPARSED: u32 = 14;
    /// First fragments (offset 0, more-fragments set) and later fragments (offset > 0).
    pub const FRAG_FIRST: u32 = 15;
    pub const FRAG_LATER: u32 = 16;
    /// Frames capture was on for but found the capture ring full: counted, never a silent gap.
    pub const CAPTURE_LOST: u32 = 17;
    /// Packets whose rule said `xsk` but which are longer than a socket's frame can hold
    /// (`XdpConfig::xsk_frame_room`), so they were passed: redirected, the kernel would drop them.
    pub const XSK_OVERSIZE: u32 = 18;
    /// Number of slots.
    pub const COUNT: u32 = 19;
}

/// Every global counter of the program on one CPU: the single entry of the per-CPU `STATS`
/// map. A frame adds to exactly one [`outcome`] counter (what it was, its fragment kind,
/// whether a rule matched, what was done with it), so a packet costs one map lookup and one
/// counter update for all its global counting, and the counters add up by construction: the
/// outcomes sum to the frames seen. The [`stat`] totals are derived from them by
/// [`Stats::totals`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Indexed by [`outcome::index`].
    pub outcomes: [Counter; outcome::COUNT],
    /// Frames capture was on for but found the capture ring full (counted besides their
    /// outcome).
    pub capture_lost: Counter,
    /// Frames each rule matched, `MAX_RULES` per rule-set slot: index `slot * MAX_RULES +
    /// rule`. Here rather than in a map of their own so that a frame costs one map lookup for
    /// all its counting. They are never reset (user space writing this per-CPU value would
    /// race the program's updates of its other counters): the loader reads a slot's counters
    /// when it writes a new set into it, where no packet touches them, and subtracts that
    /// reading ([`Counter::since`]).
    pub rules: [Counter; RULE_SET_SLOTS as usize * MAX_RULES],
    /// Not a counter: where the program parks a frame's outcome index between classifying and
    /// counting it. Read back from memory, the index is a number in a range to the verifier,
    /// not one of the many constants the classifier's exits produce; otherwise it follows
    /// every exit through the rest of the program apart and exceeds its instruction limit.
    pub scratch: u64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            outcomes: [Counter::default(); outcome::COUNT],
            capture_lost: Counter::default(),
            rules: [Counter::default(); RULE_SET_SLOTS as usize * MAX_RULES],
            scratch: 0,
        }
    }
}

impl Stats {
    /// Adds another CPU's counters.
    pub fn merge(&mut self, other: &Stats) {
        for (sum, c) in self.outcomes.iter_mut().zip(&other.outcomes) {
            sum.merge(c);
        }
        self.capture_lost.merge(&other.capture_lost);
        for (sum, c) in self.rules.iter_mut().zip(&other.rules) {
            sum.merge(c);
        }
    }

    /// The [`stat`] totals: each outcome counted under its action, its protocols, its
    /// fragment kind and its verdict.
    pub fn totals(&self) -> [Counter; stat::COUNT as usize] {
        let mut t = [Counter::default(); stat::COUNT as usize];
        for (i, c) in self.outcomes.iter().enumerate() {
            let o = outcome::Outcome::from_index(i);
            let action = match o.action {
                outcome::action::DROP => stat::ACTION_DROP,
                outcome::action::XSK => stat::ACTION_XSK,
                _ => stat::ACTION_PASS,
            };
            t[action as usize].merge(c);
            match o.action {
                outcome::action::XSK_FALLBACK => t[stat::XSK_FALLBACK as usize].merge(c),
                outcome::action::XSK_OVERSIZE => t[stat::XSK_OVERSIZE as usize].merge(c),
                _ => {}
            }
            for s in outcome::path::stats(o.path) {
                t[*s as usize].merge(c);
            }
            match o.path {
                outcome::path::MALFORMED => t[stat::MALFORMED as usize].merge(c),
                outcome::path::UNPARSED => t[stat::UNPARSED as usize].merge(c),
                // Rule matches are counted per rule (`Stats::rules`).
                _ if o.matched => {}
                _ => t[stat::DEFAULT_ACTION as usize].merge(c),
            }
            match o.frag {
                frag::FIRST => t[stat::FRAG_FIRST as usize].merge(c),
                frag::LATER => t[stat::FRAG_LATER as usize].merge(c),
                _ => {}
            }
        }
        t[stat::CAPTURE_LOST as usize] = self.capture_lost;
        t
    }
}

/// What happened to a frame, as one index into [`Stats::outcomes`]: its [`path`], its
/// [`frag`] kind, whether a rule matched, and the [`action`] carried out.
pub mod outcome {
    use super::{frag, stat};

    /// What the frame was.
    pub mod path {
        use super::stat;

        pub const ARP: u32 = 0;
        /// Another ether type.
        pub const OTHER: u32 = 1;
        pub const MALFORMED: u32 = 2;
        /// IPv6 whose transport header cannot be reached.
        pub const UNPARSED: u32 = 3;
        pub const IPV4_TCP: u32 = 4;
        pub const IPV4_UDP: u32 = 5;
        pub const IPV4_ICMP: u32 = 6;
        pub const IPV4_OTHER: u32 = 7;
        pub const IPV6_TCP: u32 = 8;
        pub const IPV6_UDP: u32 = 9;
        pub const IPV6_ICMPV6: u32 = 10;
        pub const IPV6_OTHER: u32 = 11;
        pub const COUNT: u32 = 12;

        /// Names for reports, indexed by path.
        pub const NAMES: [&str; COUNT as usize] = [
            "arp",
            "other",
            "malformed",
            "ipv6_unparsed",
            "ipv4_tcp",
            "ipv4_udp",
            "ipv4_icmp",
            "ipv4_other",
            "ipv6_tcp",
            "ipv6_udp",
            "ipv6_icmpv6",
            "ipv6_other",
        ];

        /// An IP path from the IP version and the protocol class (`proto_class`), which
        /// orders its classes as these paths do.
        #[inline(always)]
        pub const fn ip(v6: bool, class: u32) -> u32 {
            // TCP, UDP, ICMP|ICMPV6, OTHER_IP: proto_class 0, 1, 2|3, 4.
            let l4 = match class {
                0 => 0,
                1 => 1,
                2 | 3 => 2,
                _ => 3,
            };
            if v6 { IPV6_TCP + l4 } else { IPV4_TCP + l4 }
        }

        /// The protocol [`stat`] slots a frame of this path counts under.
        pub const fn stats(path: u32) -> &'static [u32] {
            match path {
                ARP => &[stat::PROTO_ARP],
                OTHER => &[stat::PROTO_OTHER],
                UNPARSED => &[stat::PROTO_IPV6],
                IPV4_TCP => &[stat::PROTO_IPV4, stat::PROTO_TCP],
                IPV4_UDP => &[stat::PROTO_IPV4, stat::PROTO_UDP],
                IPV4_ICMP => &[stat::PROTO_IPV4, stat::PROTO_ICMP],
                IPV4_OTHER => &[stat::PROTO_IPV4],
                IPV6_TCP => &[stat::PROTO_IPV6, stat::PROTO_TCP],
                IPV6_UDP => &[stat::PROTO_IPV6, stat::PROTO_UDP],
                IPV6_ICMPV6 => &[stat::PROTO_IPV6, stat::PROTO_ICMPV6],
                IPV6_OTHER => &[stat::PROTO_IPV6],
                // Malformed frames are counted as malformed only.
                _ => &[],
            }
        }
    }

    /// What was done with the frame.
    pub mod action {
        pub const PASS: u32 = 0;
        pub const DROP: u32 = 1;
        /// Redirected to the RX queue's AF_XDP socket.
        pub const XSK: u32 = 2;
        /// `xsk`, but the RX queue had no socket: passed.
        pub const XSK_FALLBACK: u32 = 3;
        /// `xsk`, but the frame is longer than a socket's frame holds: passed.
        pub const XSK_OVERSIZE: u32 = 4;
        pub const COUNT: u32 = 5;

        /// Names for reports, indexed by action.
        pub const NAMES: [&str; COUNT as usize] =
            ["pass", "drop", "xsk", "xsk_fallback", "xsk_oversize"];
    }

    /// Names of the fragment kinds for reports, indexed by `frag`.
    pub const FRAG_NAMES: [&str; frag::COUNT as usize] = ["none", "first", "later"];

    pub const COUNT: usize = (path::COUNT * frag::COUNT * 2 * action::COUNT) as usize;

    /// The counter of a frame of `path` and fragment kind `frag`, decided by a rule
    /// (`matched`) or not, with `action` carried out.
    #[inline(always)]
    pub const fn index(path: u32, frag: u32, matched: bool, action: u32) -> u32 {
        ((path * super::frag::COUNT + frag) * 2 + matched as u32) * action::COUNT + action
    }

    /// An outcome index taken apart again.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Outcome {
        pub path: u32,
        pub frag: u32,
        pub matched: bool,
        pub action: u32,
    }

    impl Outcome {
        pub const fn from_index(i: usize) -> Outcome {
            let i = i as u32;
            let action = i % action::COUNT;
            let matched = (i / action::COUNT) % 2 == 1;
            let rest = i / action::COUNT / 2;
            Outcome {
                path: rest / frag::COUNT,
                frag: rest % frag::COUNT,
                matched,
                action,
            }
        }
    }
}

/// Protocol classes: the index into [`RuleSet::proto`].
pub mod proto_class {
    pub const TCP: u32 = 0;
    pub const UDP: u32 = 1;
    pub const ICMP: u32 = 2;
    pub const ICMPV6: u32 = 3;
    /// IPv4/IPv6 with any other transport protocol.
    pub const OTHER_IP: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Fragment kinds: the index into [`RuleSet::frag`].
pub mod frag {
    /// A whole datagram (IPv6 atomic fragments included, RFC 6946).
    pub const NONE: u32 = 0;
    /// Offset 0 with more-fragments set: carries the transport header.
    pub const FIRST: u32 = 1;
    /// Offset above 0: carries no transport header, so no ports and no ICMP type.
    pub const LATER: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// The most IPv6 extension headers the classifier steps over before the transport header;
/// a longer chain is "unparsed".
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Port value meaning "the packet has no port" (not TCP/UDP, or a later fragment).
pub const NO_PORT: u32 = 0x1_0000;
/// Port class of "no port"; ports map to classes `1..`.
pub const PORT_CLASS_NONE: u16 = 0;
/// Distinct port classes a rule set can need per direction: the port ranges of 256 rules cut
/// 0..=65535 into at most 513 intervals, plus the "no port" class.
pub const MAX_PORT_CLASSES: usize = 2 * MAX_RULES + 2;
/// Index of the "not ICMP" entry in [`RuleSet::icmp`]; types 0..=255 index it directly.
pub const ICMP_NOT_ICMP: u32 = 256;
/// Entries of [`RuleSet::icmp`].
pub const ICMP_TABLE_LEN: usize = 257;
/// Entries of each port-to-class table.
pub const PORT_TABLE_LEN: usize = 65536;

/// One compiled rule set: everything the program needs to decide a packet, except the
/// address prefixes (which live in LPM tries keyed by the set's slot). The `RULESETS` array
/// holds two, and `XdpConfig::active_set` says which one is in force: a reload writes the
/// other slot and then switches with one word (see `xdp-user`'s loader), so every packet is
/// decided entirely by one set.
///
/// Ports are compiled in two steps that keep a reload small and the table in cache: a port
/// maps to a class (`sport_class`), and a class to the mask of rules that allow it
/// (`sport_masks`). Ports that no rule boundary separates share a class.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// Increases with every rule set installed, so reports can say which set decided.
    pub generation: u32,
    /// The [`Action`] (as `u32`) for well-formed IP packets that match no rule.
    pub default_action: u32,
    /// The action for malformed frames.
    pub malformed_action: u32,
    /// The action for IPv6 packets whose transport header cannot be reached.
    pub unparsed_action: u32,
    /// The action for frames that are not IP (ARP, LLDP, other ether types). Apart from the
    /// default: a default of drop must not take ARP, and with it the host's reachability.
    pub not_ip_action: u32,
    /// The slot of `RULESETS` this set is written to (the loader sets it as it writes the
    /// slot). The program looks the set up by the address of `XdpConfig::active_set`, so the
    /// slot number it uses for everything else (the address tries' key byte, the per-rule
    /// counters) is read from here, from the same value as the tables: two reads of
    /// `active_set` could straddle a reload's switch.
    pub slot: u32,
    /// Rules `0..rule_count` are valid.
    pub rule_count: u32,
    /// [`config_flags`]: which fields any rule constrains; the program skips the others.
    pub flags: u32,
    /// Per rule, its [`Action`] as `u32`.
    pub actions: [u32; MAX_RULES],
    /// Per [`proto_class`] and [`frag`] kind (at [`RuleSet::proto_frag_index`]), the rules
    /// that allow both: every packet constrains both fields, so one table saves the program a
    /// lookup and an AND.
    pub proto_frag: [RuleMask; PROTO_FRAG_LEN],
    /// Per ICMP type (and [`ICMP_NOT_ICMP`]), the rules that allow it.
    pub icmp: [RuleMask; ICMP_TABLE_LEN],
    /// Per source port class, the rules that allow it.
    pub sport_masks: [RuleMask; MAX_PORT_CLASSES],
    /// Per destination port class, the rules that allow it.
    pub dport_masks: [RuleMask; MAX_PORT_CLASSES],
    /// Source port to class.
    pub sport_class: [u16; PORT_TABLE_LEN],
    /// Destination port to class.
    pub dport_class: [u16; PORT_TABLE_LEN],
    /// The first matching rule and its action (or [`FirstRule::NONE`]) per
    /// protocol-and-fragment entry and destination port class, at
    /// [`RuleSet::dport_first_rule_index`]: the AND of `proto_frag` and `dport_masks`, lowest
    /// bit, done by the loader. When no rule constrains anything but the protocol, the
    /// fragment kind and the destination port (no bit of [`config_flags::NOT_DPORT`] in
    /// `flags`: the commonest rule set), this is the packet's decision in one load, where the
    /// masks take two loads, an AND, a lowest-bit search and the action's load. Filled for
    /// every set; read only for those.
    pub dport_first_rule: [FirstRule; DPORT_FIRST_RULE_LEN],
    /// Zero; keeps the size a multiple of 8 (no padding after the table above).
    pub reserved_end: u32,
}

impl RuleSet {
    /// No rules: everything takes `pass`.
    pub const EMPTY: RuleSet = RuleSet {
        generation: 0,
        default_action: Action::Pass as u32,
        malformed_action: Action::Pass as u32,
        unparsed_action: Action::Pass as u32,
        not_ip_action: Action::Pass as u32,
        slot: 0,
        rule_count: 0,
        flags: 0,
        actions: [0; MAX_RULES],
        proto_frag: [RuleMask::EMPTY; PROTO_FRAG_LEN],
        icmp: [RuleMask::EMPTY; ICMP_TABLE_LEN],
        sport_masks: [RuleMask::EMPTY; MAX_PORT_CLASSES],
        dport_masks: [RuleMask::EMPTY; MAX_PORT_CLASSES],
        sport_class: [0; PORT_TABLE_LEN],
        dport_class: [0; PORT_TABLE_LEN],
        dport_first_rule: [FirstRule::NONE; DPORT_FIRST_RULE_LEN],
        reserved_end: 0,
    };

    /// Where [`RuleSet::proto_frag`] holds protocol class `class` and fragment kind `frag`.
    #[inline(always)]
    pub const fn proto_frag_index(class: u32, frag: u32) -> usize {
        (class * frag::COUNT + frag) as usize
    }

    /// Where [`RuleSet::dport_first_rule`] holds `proto_frag` entry `proto_frag` (see
    /// [`RuleSet::proto_frag_index`]) and destination port class `dport_class`.
    #[inline(always)]
    pub const fn dport_first_rule_index(proto_frag: usize, dport_class: u16) -> usize {
        proto_frag * MAX_PORT_CLASSES + dport_class as usize
    }
}

/// Entries of [`RuleSet::dport_first_rule`].
pub const DPORT_FIRST_RULE_LEN: usize = PROTO_FRAG_LEN * MAX_PORT_CLASSES;

/// An entry of [`RuleSet::dport_first_rule`]: a rule's index in the low byte, its
/// [`Action`] in the high byte; or [`FirstRule::NONE`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstRule(pub u16);

// A rule's index fits the low byte.
const _: () = assert!(MAX_RULES <= 256);

impl FirstRule {
    /// No rule matches.
    pub const NONE: FirstRule = FirstRule(u16::MAX);

    pub const fn new(rule: usize, action: Action) -> FirstRule {
        FirstRule((rule as u16 & 0xff) | (action as u16) << 8)
    }

    /// The rule's index, below [`MAX_RULES`] by construction (also for `NONE`, which is never
    /// read as a rule).
    #[inline(always)]
    pub const fn rule(self) -> u32 {
        (self.0 & 0xff) as u32
    }

    /// The rule's [`Action`] as `u32`.
    #[inline(always)]
    pub const fn action(self) -> u32 {
        (self.0 >> 8) as u32
    }
}

/// The length of [`RuleSet::proto_frag`].
pub const PROTO_FRAG_LEN: usize = (proto_class::COUNT * frag::COUNT) as usize;

/// The program's control word: its global variable `CONFIG`, the single value of the
/// `.data.config` map ([`map_name::CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// The slot of `RULESETS` (0 or 1) in force. The loader writes this word last, in one
    /// update; the program reads it once per packet.
    pub active_set: u32,
    /// The longest frame an AF_XDP socket's UMEM frame holds (its size less the kernel's
    /// headroom), 0 while no socket is registered. A longer frame redirected to a socket would
    /// be dropped by the kernel (`rx_dropped`), so the program passes it instead and counts it
    /// (`outcome::action::XSK_OVERSIZE`): a jumbo frame is never black-holed by a loop whose
    /// frames are too small for it.
    pub xsk_frame_room: u32,
}

/// Bits of [`RuleSet::flags`].
pub mod config_flags {
    /// Some rule has a `src` prefix: look up `SRC_V4` / `SRC_V6`.
    pub const SRC_USED: u32 = 1;
    /// Some rule has a `dst` prefix: look up `DST_V4` / `DST_V6`.
    pub const DST_USED: u32 = 2;
    /// Some rule has a `sport`.
    pub const SPORT_USED: u32 = 4;
    /// Some rule has a `dport`.
    pub const DPORT_USED: u32 = 8;
    /// Some rule has an `icmp-type`.
    pub const ICMP_USED: u32 = 16;
    /// Some rule has a field other than `dport`: the program tests these flags one by one
    /// only when one of them is set.
    pub const NOT_DPORT: u32 = SRC_USED | DST_USED | SPORT_USED | ICMP_USED;
}

/// Bytes of a frame a [`CaptureRecord`] holds at most: a standard frame with two VLAN tags.
pub const CAPTURE_BYTES: usize = 1536;
/// The size of the program's capture ring buffer (`CAPTURE`).
pub const CAPTURE_RING_BYTES: u32 = 8 << 20;

/// One frame the program saw while capture was on (`CAPTURE_CTL.snaplen` non-zero), with what
/// it did: an entry of the `CAPTURE` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureRecord {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub ifindex: u32,
    pub rx_queue: u32,
    /// The frame's length on the wire, and how much of it `data` holds.
    pub orig_len: u32,
    pub cap_len: u32,
    /// The XDP action returned (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_REDIRECT` 4).
    pub xdp_action: u32,
    /// One of [`verdict`], and the matching rule with `verdict::RULE`.
    pub verdict: u32,
    pub rule: u32,
    /// The generation of the rule set that decided.
    pub generation: u32,
    pub data: [u8; CAPTURE_BYTES],
}

impl Default for CaptureRecord {
    fn default() -> Self {
        CaptureRecord {
            ts_ns: 0,
            ifindex: 0,
            rx_queue: 0,
            orig_len: 0,
            cap_len: 0,
            xdp_action: 0,
            verdict: 0,
            rule: 0,
            generation: 0,
            data: [0; CAPTURE_BYTES],
        }
    }
}

/// How the program decided a packet: the `verdict` of a [`ProbeRecord`].
pub mod verdict {
    /// A rule matched: `rule` says which.
    pub const RULE: u32 = 0;
    /// A well-formed IP packet that matched no rule: the default action.
    pub const NO_RULE: u32 = 1;
    /// Not IP (ARP, another ether type): the default action.
    pub const NOT_IP: u32 = 2;
    /// Malformed: the malformed policy.
    pub const MALFORMED: u32 = 3;
    /// Transport header unreachable: the unparsed policy.
    pub const UNPARSED: u32 = 4;
}

/// What the probe program (`xdp_filter_probe`, never attached) records about the last frame it
/// classified, for the differential test against the Rust model: the same classification and
/// decision code as `xdp_filter`, written out instead of acted on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeRecord {
    /// One of [`verdict`].
    pub verdict: u32,
    /// The matching rule, with `verdict::RULE`.
    pub rule: u32,
    /// The [`Action`] the filter takes (before the `xsk` fallback to `pass`).
    pub action: u32,
    /// The generation of the rule set that decided.
    pub generation: u32,
    /// The fields below are set for IP packets (`RULE` and `NO_RULE`).
    pub v6: u32,
    pub protocol: u32,
    /// A [`proto_class`].
    pub class: u32,
    /// [`NO_PORT`] when absent.
    pub sport: u32,
    pub dport: u32,
    /// [`ICMP_NOT_ICMP`] when absent.
    pub icmp_type: u32,
    /// A [`frag`] kind.
    pub frag: u32,
    pub reserved: u32,
    /// IPv4 addresses fill the first 4 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// Map names, shared so the loader cannot look up a map the program does not define.
pub mod map_name {
    /// The program's control word ([`super::XdpConfig`]): a global variable of the program in
    /// a data section of its own, which the kernel keeps as a one-entry array map of that
    /// name. The program reads it straight from its address, with no map lookup per packet.
    pub const CONFIG: &str = ".data.config";
    pub const RULESETS: &str = "RULESETS";
    pub const STATS: &str = "STATS";
    pub const SRC_V4: &str = "SRC_V4";
    pub const DST_V4: &str = "DST_V4";
    pub const SRC_V6: &str = "SRC_V6";
    pub const DST_V6: &str = "DST_V6";
    pub const XSKS: &str = "XSKS";
    pub const PROBE: &str = "PROBE";
    pub const CAPTURE: &str = "CAPTURE";
    /// Capture's switch ([`super::CaptureCtl`]): a global variable like [`CONFIG`], in a
    /// section of its own so that `dump` (another process) never writes the control word.
    pub const CAPTURE_CTL: &str = ".data.capture";
}

/// Capture's switch, the single value of the `.data.capture` map. Written whole by `dump`
/// (on: its snap length and pid; off: zeros) and by the loader that switches off a capture
/// whose process is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCtl {
    /// The snap length while capture is on, 0 while off: the one field the program reads.
    pub snaplen: u32,
    /// The pid of the process that switched capture on (0: none). User space only: a capture
    /// whose process is gone (`kill -9`) is switched off by the loader, so it neither costs
    /// per packet nor blocks the next `dump`.
    pub owner_pid: u32,
}

/// Rule-set slots in `RULESETS` (and in `Stats::rules`, `MAX_RULES` counters each).
pub const RULE_SET_SLOTS: u32 = 2;

/// Entries of each address trie: a /0 entry and up to one prefix per rule, per slot. Keys are
/// the slot number as a first byte, then the address, so the two slots never meet.
pub const TRIE_ENTRIES: u32 = RULE_SET_SLOTS * (MAX_RULES as u32 + 1);

// No padding anywhere: every type's size is the sum of its fields'.
const _: () = assert!(core::mem::size_of::<RuleMask>() == 8 * RULE_MASK_WORDS);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(
    core::mem::size_of::<Stats>()
        == 16 * (outcome::COUNT + 1 + RULE_SET_SLOTS as usize * MAX_RULES) + 8
);
const _: () = assert!(core::mem::size_of::<XdpConfig>() == 8);
const _: () = assert!(core::mem::size_of::<CaptureCtl>() == 8);
const _: () = assert!(core::mem::size_of::<Action>() == 4);
const _: () = assert!(core::mem::size_of::<ProbeRecord>() == 12 * 4 + 32);
const _: () = assert!(core::mem::size_of::<CaptureRecord>() == 8 + 8 * 4 + CAPTURE_BYTES);
const _: () = assert!(
    core::mem::size_of::<RuleSet>()
        == 8 * 4
            + 4 * MAX_RULES
            + 32 * (PROTO_FRAG_LEN + ICMP_TABLE_LEN + 2 * MAX_PORT_CLASSES)
            + 2 * 2 * PORT_TABLE_LEN
            + 2 * DPORT_FIRST_RULE_LEN
            + 4
);

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
unsafe impl aya::Pod for Stats {}
// SAFETY: as above.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for XdpConfig {}
// SAFETY: as above.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for CaptureCtl {}
// SAFETY: as above.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for RuleSet {}
// SAFETY: as above.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for ProbeRecord {}
// SAFETY: `repr(C)`, only integers and a byte array, no padding (8 + 8 * 4 + 1536 bytes, a
// multiple of 8), valid for any bit pattern.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for CaptureRecord {}

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
    fn outcome_index_round_trips_and_covers_the_array() {
        let mut seen = vec![false; outcome::COUNT];
        for path in 0..outcome::path::COUNT {
            for f in 0..frag::COUNT {
                for matched in [false, true] {
                    for action in 0..outcome::action::COUNT {
                        let i = outcome::index(path, f, matched, action) as usize;
                        assert!(!seen[i], "index {i} used twice");
                        seen[i] = true;
                        let o = outcome::Outcome::from_index(i);
                        assert_eq!(
                            (o.path, o.frag, o.matched, o.action),
                            (path, f, matched, action)
                        );
                    }
                }
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn ip_paths_follow_the_protocol_classes() {
        use outcome::path;
        assert_eq!(path::ip(false, proto_class::TCP), path::IPV4_TCP);
        assert_eq!(path::ip(false, proto_class::UDP), path::IPV4_UDP);
        assert_eq!(path::ip(false, proto_class::ICMP), path::IPV4_ICMP);
        assert_eq!(path::ip(false, proto_class::OTHER_IP), path::IPV4_OTHER);
        assert_eq!(path::ip(true, proto_class::TCP), path::IPV6_TCP);
        assert_eq!(path::ip(true, proto_class::UDP), path::IPV6_UDP);
        assert_eq!(path::ip(true, proto_class::ICMPV6), path::IPV6_ICMPV6);
        assert_eq!(path::ip(true, proto_class::OTHER_IP), path::IPV6_OTHER);
        assert_eq!(path::NAMES[path::IPV4_UDP as usize], "ipv4_udp");
        assert_eq!(path::NAMES[path::IPV6_OTHER as usize], "ipv6_other");
        assert_eq!(path::NAMES[path::UNPARSED as usize], "ipv6_unparsed");
        assert_eq!(outcome::FRAG_NAMES[frag::LATER as usize], "later");
        assert_eq!(
            outcome::action::NAMES[outcome::action::XSK_FALLBACK as usize],
            "xsk_fallback"
        );
    }

    /// Each kind of frame lands in the totals it always did: its action, protocols, fragment
    /// kind and verdict, once each.
    #[test]
    fn totals_count_each_outcome_where_it_belongs() {
        use outcome::{action, index, path};
        let mut s = Stats::default();
        let mut add = |p, f, m, a, bytes| s.outcomes[index(p, f, m, a) as usize].add(bytes);
        add(path::IPV4_UDP, frag::NONE, true, action::PASS, 100);
        add(path::IPV6_TCP, frag::FIRST, false, action::DROP, 200);
        add(path::MALFORMED, frag::NONE, false, action::DROP, 10);
        add(path::UNPARSED, frag::NONE, false, action::PASS, 20);
        add(path::ARP, frag::NONE, false, action::XSK_FALLBACK, 42);
        add(path::IPV4_ICMP, frag::LATER, true, action::XSK, 60);
        add(
            path::IPV4_ICMP,
            frag::NONE,
            true,
            action::XSK_OVERSIZE,
            3000,
        );
        s.capture_lost.add(7);
        let t = s.totals();
        let p = |slot: u32| t[slot as usize].packets;
        assert_eq!(p(stat::ACTION_PASS), 4);
        assert_eq!(p(stat::ACTION_DROP), 2);
        assert_eq!(p(stat::ACTION_XSK), 1);
        assert_eq!(p(stat::XSK_FALLBACK), 1);
        assert_eq!(p(stat::XSK_OVERSIZE), 1);
        assert_eq!(t[stat::XSK_OVERSIZE as usize].bytes, 3000);
        assert_eq!(t[stat::ACTION_PASS as usize].bytes, 3162);
        assert_eq!(p(stat::MALFORMED), 1);
        assert_eq!(p(stat::UNPARSED), 1);
        assert_eq!(p(stat::DEFAULT_ACTION), 2);
        assert_eq!(p(stat::PROTO_ARP), 1);
        assert_eq!(p(stat::PROTO_IPV4), 3);
        assert_eq!(p(stat::PROTO_IPV6), 2);
        assert_eq!(p(stat::PROTO_UDP), 1);
        assert_eq!(p(stat::PROTO_TCP), 1);
        assert_eq!(p(stat::PROTO_ICMP), 2);
        assert_eq!(p(stat::PROTO_ICMPV6), 0);
        assert_eq!(p(stat::PROTO_OTHER), 0);
        assert_eq!(p(stat::FRAG_FIRST), 1);
        assert_eq!(p(stat::FRAG_LATER), 1);
        assert_eq!(p(stat::CAPTURE_LOST), 1);
    }

    #[test]
    fn action_round_trip() {
        for a in [Action::Pass, Action::Drop, Action::Xsk] {
            assert_eq!(Action::from_u32(a as u32), Some(a));
        }
        assert_eq!(Action::from_u32(3), None);
    }
}
