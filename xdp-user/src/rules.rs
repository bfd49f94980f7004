//! The rule language and its compilation into the XDP program's lookup tables.
//!
//! A rule is a list of `key value` words ending in an action:
//!
//! ```text
//! proto udp dport 7 action xsk
//! src 198.18.0.0/24 proto tcp dport 22-23 action drop
//! proto icmp icmp-type 8 action pass
//! dst 2001:db8::/64 action drop
//! ```
//!
//! Keys: `proto` (tcp, udp, icmp, icmpv6, any), `src` and `dst` (an IPv4 or IPv6 address or
//! prefix), `sport` and `dport` (a port or a range `LOW-HIGH`), `icmp-type` (0-255), `frag`
//! (none, first, later, any), `action` (pass, drop, xsk). Rules are tried in order and the
//! first match wins. Rules match IPv4 and IPv6 packets only; other frames (ARP, ...) take the
//! default action, malformed and unparsed packets their policies (see `packet::filter`).
//!
//! A later fragment (offset above 0) carries no transport header: a rule with `sport`,
//! `dport` or `icmp-type` never matches it. A first fragment is matched on the transport header
//! it carries, like a whole datagram.
//!
//! [`compile`] turns a rule set into the bit-vector tables of `packet::abi`;
//! [`Compiled::lookup`] evaluates them the way the eBPF program does, and [`first_match`] is
//! the plain linear scan the tests hold it to.

use anyhow::{Result, bail};
use packet::abi::{
    Action, FirstRule, MAX_PORT_CLASSES, MAX_RULES, PORT_CLASS_NONE, PORT_TABLE_LEN,
    PROTO_FRAG_LEN, RuleMask, RuleSet, config_flags, frag, proto_class,
};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    pub(crate) fn class(self) -> u32 {
        match self {
            Proto::Tcp => proto_class::TCP,
            Proto::Udp => proto_class::UDP,
            Proto::Icmp => proto_class::ICMP,
            Proto::Icmpv6 => proto_class::ICMPV6,
        }
    }
}

/// An address prefix; the address has no bits set past the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    V4([u8; 4], u8),
    V6([u8; 16], u8),
}

impl Prefix {
    fn is_v4(&self) -> bool {
        matches!(self, Prefix::V4(..))
    }

    /// True when `self` contains every address of `other` (same family, shorter or equal
    /// prefix, same leading bits).
    fn contains(&self, other: &Prefix) -> bool {
        match (self, other) {
            (Prefix::V4(a, la), Prefix::V4(b, lb)) => la <= lb && same_prefix(a, b, *la),
            (Prefix::V6(a, la), Prefix::V6(b, lb)) => la <= lb && same_prefix(a, b, *la),
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4(a, l) => write!(f, "{}/{l}", std::net::Ipv4Addr::from(*a)),
            Prefix::V6(a, l) => write!(f, "{}/{l}", std::net::Ipv6Addr::from(*a)),
        }
    }
}

fn same_prefix(a: &[u8], b: &[u8], len: u8) -> bool {
    let full = usize::from(len / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rem = len % 8;
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    a[full] & mask == b[full] & mask
}

fn masked<const N: usize>(mut a: [u8; N], len: u8) -> [u8; N] {
    for (i, byte) in a.iter_mut().enumerate() {
        let bits = (usize::from(len)).saturating_sub(i * 8).min(8);
        *byte &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    a
}

/// Which fragments a rule matches (`frag` key); without the key, every kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragMatch {
    /// Whole datagrams only.
    None,
    /// First fragments only (offset 0, more fragments follow).
    First,
    /// Later fragments only (offset above 0).
    Later,
    /// Any fragment, first or later.
    Any,
}

impl FragMatch {
    fn allows(self, kind: u32) -> bool {
        match self {
            FragMatch::None => kind == frag::NONE,
            FragMatch::First => kind == frag::FIRST,
            FragMatch::Later => kind == frag::LATER,
            FragMatch::Any => kind != frag::NONE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `None` is `proto any`.
    pub proto: Option<Proto>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    pub icmp_type: Option<u8>,
    /// `None`: every fragment kind.
    pub frag: Option<FragMatch>,
    pub action: Action,
    /// The rule as written, for reports.
    pub text: String,
}

/// A rule that does not parse: the message, and which word (by index) is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub rule: String,
    pub word: Option<usize>,
    pub message: String,
}

impl fmt::Display for RuleError {
    /// `bad rule: MESSAGE`, then the rule with the wrong word underlined.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bad rule: {}", self.message)?;
        write!(f, "  {}", self.rule)?;
        if let Some(w) = self.word {
            let words: Vec<&str> = self.rule.split_whitespace().collect();
            let col: usize = words[..w].iter().map(|x| x.len() + 1).sum();
            let width = words.get(w).map_or(1, |x| x.len().max(1));
            write!(f, "\n  {}{}", " ".repeat(col), "^".repeat(width))?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleError {}

const KEYS: &str = "proto, src, dst, sport, dport, icmp-type, frag, action";

/// Parses one rule.
pub fn parse_rule(text: &str) -> Result<Rule, RuleError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let rule_text = words.join(" ");
    let err = |word: Option<usize>, message: String| RuleError {
        rule: rule_text.clone(),
        word,
        message,
    };
    if words.is_empty() {
        return Err(err(None, "empty rule".into()));
    }
    let mut rule = Rule {
        proto: None,
        src: None,
        dst: None,
        sport: None,
        dport: None,
        icmp_type: None,
        frag: None,
        action: Action::Pass,
        text: rule_text.clone(),
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut action = None;
    let mut i = 0;
    while i < words.len() {
        let key = words[i];
        if action.is_some() {
            return Err(err(Some(i), "nothing may follow the action".into()));
        }
        if !matches!(
            key,
            "proto" | "src" | "dst" | "sport" | "dport" | "icmp-type" | "frag" | "action"
        ) {
            return Err(err(
                Some(i),
                format!("unknown key `{key}` (expected one of {KEYS})"),
            ));
        }
        if seen.contains(&key) {
            return Err(err(Some(i), format!("`{key}` given twice")));
        }
        seen.push(key);
        let Some(value) = words.get(i + 1).copied() else {
            return Err(err(Some(i), format!("`{key}` needs a value")));
        };
        let v = Some(i + 1);
        match key {
            "proto" => {
                rule.proto = match value {
                    "tcp" => Some(Proto::Tcp),
                    "udp" => Some(Proto::Udp),
                    "icmp" => Some(Proto::Icmp),
                    "icmpv6" => Some(Proto::Icmpv6),
                    "any" => None,
                    _ => {
                        return Err(err(
                            v,
                            format!("unknown protocol `{value}` (tcp, udp, icmp, icmpv6, any)"),
                        ));
                    }
                }
            }
            "src" | "dst" => {
                let p = parse_prefix(value).map_err(|m| err(v, m))?;
                if key == "src" {
                    rule.src = Some(p);
                } else {
                    rule.dst = Some(p);
                }
            }
            "sport" | "dport" => {
                let r = parse_port_range(value).map_err(|m| err(v, m))?;
                if key == "sport" {
                    rule.sport = Some(r);
                } else {
                    rule.dport = Some(r);
                }
            }
            "icmp-type" => {
                rule.icmp_type = Some(
                    value
                        .parse::<u8>()
                        .map_err(|_| err(v, format!("`{value}` is not an ICMP type (0-255)")))?,
                );
            }
            "frag" => {
                rule.frag = Some(match value {
                    "none" => FragMatch::None,
                    "first" => FragMatch::First,
                    "later" => FragMatch::Later,
                    "any" => FragMatch::Any,
                    _ => {
                        return Err(err(
                            v,
                            format!(
                                "unknown fragment kind `{value}` (none: whole datagrams, \
                                 first, later, any: any fragment)"
                            ),
                        ));
                    }
                });
            }
            "action" => {
                action = Some(match value {
                    "pass" => Action::Pass,
                    "drop" => Action::Drop,
                    "xsk" => Action::Xsk,
                    _ => {
                        return Err(err(
                            v,
                            format!("unknown action `{value}` (pass, drop, xsk)"),
                        ));
                    }
                });
            }
            _ => unreachable!("keys are checked above"),
        }
        i += 2;
    }
    let Some(action) = action else {
        return Err(err(
            None,
            "the rule must end in `action pass|drop|xsk`".into(),
        ));
    };
    rule.action = action;

    // Combinations that can never match are mistakes; say so instead of loading dead rules.
    let word_of = |key: &str| words.iter().position(|w| *w == key);
    if (rule.sport.is_some() || rule.dport.is_some())
        && matches!(rule.proto, Some(Proto::Icmp | Proto::Icmpv6))
    {
        let at = word_of("sport").or(word_of("dport"));
        return Err(err(at, "ports only apply to proto tcp, udp or any".into()));
    }
    if rule.icmp_type.is_some() && !matches!(rule.proto, Some(Proto::Icmp | Proto::Icmpv6)) {
        return Err(err(
            word_of("icmp-type"),
            "icmp-type needs `proto icmp` or `proto icmpv6`".into(),
        ));
    }
    if rule.frag == Some(FragMatch::Later)
        && (rule.sport.is_some() || rule.dport.is_some() || rule.icmp_type.is_some())
    {
        return Err(err(
            word_of("frag"),
            "a later fragment carries no ports and no ICMP type, so this rule could never \
             match; drop the port/icmp-type key or use `frag first`"
                .into(),
        ));
    }
    let family = |p: &Option<Prefix>| p.map(|p| p.is_v4());
    if let (Some(a), Some(b)) = (family(&rule.src), family(&rule.dst))
        && a != b
    {
        return Err(err(
            word_of("dst"),
            "src and dst are of different IP families".into(),
        ));
    }
    let v4 = family(&rule.src).or(family(&rule.dst));
    match (rule.proto, v4) {
        (Some(Proto::Icmp), Some(false)) => {
            return Err(err(
                word_of("proto"),
                "ICMP is IPv4; use proto icmpv6 with IPv6 prefixes".into(),
            ));
        }
        (Some(Proto::Icmpv6), Some(true)) => {
            return Err(err(
                word_of("proto"),
                "ICMPv6 is IPv6; use proto icmp with IPv4 prefixes".into(),
            ));
        }
        _ => {}
    }
    Ok(rule)
}

fn parse_prefix(s: &str) -> Result<Prefix, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address or prefix"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(l) if l <= max => l,
            _ => return Err(format!("prefix length `{l}` must be 0-{max}")),
        },
    };
    let p = match addr {
        IpAddr::V4(a) => Prefix::V4(a.octets(), len),
        IpAddr::V6(a) => Prefix::V6(a.octets(), len),
    };
    let normal = match p {
        Prefix::V4(a, l) => Prefix::V4(masked(a, l), l),
        Prefix::V6(a, l) => Prefix::V6(masked(a, l), l),
    };
    if normal != p {
        return Err(format!(
            "`{s}` has bits set past the prefix length; did you mean {normal}?"
        ));
    }
    Ok(p)
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{s}` is not a port (0-65535) or a range LOW-HIGH"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(s)?, port(s)?),
    };
    if lo > hi {
        return Err(format!("port range `{s}` is empty (low above high)"));
    }
    Ok((lo, hi))
}

/// Parses a rules file: one rule per line, `#` starts a comment, blank lines are skipped.
/// Errors name the line. Files written on Windows read the same: CRLF line ends, and a UTF-8
/// byte-order mark (Notepad's), which would otherwise be an invisible part of the first key.
pub fn parse_rules_file(text: &str, name: &str) -> Result<Vec<Rule>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_rule(line) {
            Ok(r) => rules.push(r),
            Err(e) => bail!("{name}:{}: {e}", n + 1),
        }
    }
    Ok(rules)
}

/// The fields of a packet that rules look at, as the eBPF program sees them.
#[derive(Clone, Copy, Debug)]
pub struct PacketFields {
    pub class: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `None` when the packet has no ports (ICMP, later fragments, other protocols).
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// `None` when not ICMP / ICMPv6 (or a later fragment).
    pub icmp_type: Option<u8>,
    /// A `packet::abi::frag` kind.
    pub frag: u32,
}

impl PacketFields {
    /// A whole (unfragmented) TCP or UDP packet (`class`) from `src`:`sport` to `dst`:`dport`.
    pub fn segment(class: u32, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> PacketFields {
        PacketFields {
            class,
            src,
            dst,
            sport: Some(sport),
            dport: Some(dport),
            icmp_type: None,
            frag: packet::abi::frag::NONE,
        }
    }

    /// A whole ICMPv6 message of `icmp_type` from `src` to `dst`.
    pub fn icmpv6(src: IpAddr, dst: IpAddr, icmp_type: u8) -> PacketFields {
        PacketFields {
            class: packet::abi::proto_class::ICMPV6,
            src,
            dst,
            sport: None,
            dport: None,
            icmp_type: Some(icmp_type),
            frag: packet::abi::frag::NONE,
        }
    }

    /// The fields of a frame the model classified as IP (`packet::filter`).
    pub fn from_ip(f: &packet::filter::IpFields) -> PacketFields {
        let addr = |a: &[u8; 16]| -> IpAddr {
            if f.v6 {
                std::net::Ipv6Addr::from(*a).into()
            } else {
                std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
            }
        };
        PacketFields {
            class: f.class,
            src: addr(&f.src),
            dst: addr(&f.dst),
            sport: f.sport,
            dport: f.dport,
            icmp_type: f.icmp_type,
            frag: f.frag.abi(),
        }
    }
}

fn prefix_matches(p: &Prefix, addr: &IpAddr) -> bool {
    match (p, addr) {
        (Prefix::V4(a, l), IpAddr::V4(x)) => same_prefix(a, &x.octets(), *l),
        (Prefix::V6(a, l), IpAddr::V6(x)) => same_prefix(a, &x.octets(), *l),
        _ => false,
    }
}

/// The first rule that matches, by a linear scan: the reference semantics (the differential
/// test's model, and `dump --match`).
pub fn first_match(rules: &[Rule], p: &PacketFields) -> Option<usize> {
    rules.iter().position(|r| {
        r.proto.is_none_or(|pr| pr.class() == p.class)
            && r.src.is_none_or(|pre| prefix_matches(&pre, &p.src))
            && r.dst.is_none_or(|pre| prefix_matches(&pre, &p.dst))
            && r.sport
                .is_none_or(|(lo, hi)| p.sport.is_some_and(|x| lo <= x && x <= hi))
            && r.dport
                .is_none_or(|(lo, hi)| p.dport.is_some_and(|x| lo <= x && x <= hi))
            && r.icmp_type.is_none_or(|t| p.icmp_type == Some(t))
            && r.frag.is_none_or(|f| f.allows(p.frag))
    })
}

impl Rule {
    /// True when every packet `later` matches, this rule matches too: each of this rule's keys
    /// is absent or allows at least what `later`'s allows. Key by key, so a rule covered only
    /// through an implication between keys (`proto icmp` allows no ports) is not reported:
    /// never a false "covered".
    pub fn covers(&self, later: &Rule) -> bool {
        fn wider<T>(mine: &Option<T>, theirs: &Option<T>, f: impl Fn(&T, &T) -> bool) -> bool {
            match (mine, theirs) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => f(a, b),
            }
        }
        let range = |a: &(u16, u16), b: &(u16, u16)| a.0 <= b.0 && b.1 <= a.1;
        let frags = |a: &FragMatch, b: &FragMatch| {
            [frag::NONE, frag::FIRST, frag::LATER]
                .iter()
                .all(|&k| !b.allows(k) || a.allows(k))
        };
        wider(&self.proto, &later.proto, |a, b| a == b)
            && wider(&self.src, &later.src, Prefix::contains)
            && wider(&self.dst, &later.dst, Prefix::contains)
            && wider(&self.sport, &later.sport, range)
            && wider(&self.dport, &later.dport, range)
            && wider(&self.icmp_type, &later.icmp_type, |a, b| a == b)
            && wider(&self.frag, &later.frag, frags)
    }
}

/// A rule that can never decide a packet: an earlier rule matches every packet it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shadowed {
    /// Its index in the rule set.
    pub rule: usize,
    /// The first earlier rule that covers it.
    pub by: usize,
}

/// Every rule that an earlier one covers ([`Rule::covers`]), in rule order. Pairs only: a
/// rule covered by two earlier rules together, and by neither alone, is not found.
pub fn shadowed(rules: &[Rule]) -> Vec<Shadowed> {
    (0..rules.len())
        .filter_map(|j| {
            let by = (0..j).find(|&i| rules[i].covers(&rules[j]))?;
            Some(Shadowed { rule: j, by })
        })
        .collect()
}

impl Shadowed {
    /// What to tell the engineer, rules numbered from 1 as they are tried.
    pub fn message(&self, rules: &[Rule]) -> String {
        let (r, b) = (&rules[self.rule], &rules[self.by]);
        let (rn, bn) = (self.rule + 1, self.by + 1);
        if r.action == b.action {
            format!(
                "rule {rn} (`{}`) is redundant: rule {bn} (`{}`) matches every packet it \
                 matches, first, with the same action",
                r.text, b.text
            )
        } else {
            format!(
                "rule {rn} (`{}`) never applies: rule {bn} (`{}`) matches every packet it \
                 matches, first, and does `{}` with them instead of `{}`; put rule {rn} first if \
                 it is meant to win",
                r.text,
                b.text,
                b.action.name(),
                r.action.name()
            )
        }
    }
}

/// What packets that are not matched against rules get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Well-formed IP packets that match no rule.
    pub default: Action,
    /// Malformed frames (see `packet::filter`).
    pub malformed: Action,
    /// IPv6 packets whose transport header cannot be reached.
    pub unparsed: Action,
    /// Frames that are not IP (ARP, LLDP, ...).
    pub not_ip: Action,
}

/// One address trie's entries: (prefix length, address, mask); each trie has a /0 entry.
pub type TrieEntries<const N: usize> = Vec<(u8, [u8; N], RuleMask)>;

/// A compiled rule set, ready to be written into the program's maps: the [`RuleSet`] value
/// and the entries of the four address tries.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub set: Box<RuleSet>,
    pub src_v4: TrieEntries<4>,
    pub dst_v4: TrieEntries<4>,
    pub src_v6: TrieEntries<16>,
    pub dst_v6: TrieEntries<16>,
}

/// Compiles up to [`MAX_RULES`] rules into bit-vector tables (see `packet::abi`).
pub fn compile(rules: &[Rule], policy: Policy) -> Result<Compiled> {
    if rules.len() > MAX_RULES {
        bail!(
            "{} rules given; the XDP program holds at most {MAX_RULES}",
            rules.len()
        );
    }
    let mask_of = |pred: &dyn Fn(&Rule) -> bool| {
        let mut m = RuleMask::EMPTY;
        for (i, r) in rules.iter().enumerate() {
            if pred(r) {
                m.insert(i);
            }
        }
        m
    };
    let mut set = Box::new(RuleSet::EMPTY);
    set.default_action = policy.default as u32;
    set.malformed_action = policy.malformed as u32;
    set.unparsed_action = policy.unparsed as u32;
    set.not_ip_action = policy.not_ip as u32;
    set.rule_count = rules.len() as u32;
    for (slot, r) in set.actions.iter_mut().zip(rules) {
        *slot = r.action as u32;
    }
    for class in 0..packet::abi::proto_class::COUNT {
        for kind in 0..packet::abi::frag::COUNT {
            set.proto_frag[RuleSet::proto_frag_index(class, kind)] = mask_of(&|r: &Rule| {
                r.proto.is_none_or(|p| p.class() == class) && r.frag.is_none_or(|f| f.allows(kind))
            });
        }
    }
    let icmp_unconstrained = mask_of(&|r: &Rule| r.icmp_type.is_none());
    set.icmp = [icmp_unconstrained; packet::abi::ICMP_TABLE_LEN];
    for (i, r) in rules.iter().enumerate() {
        if let Some(t) = r.icmp_type {
            set.icmp[usize::from(t)].insert(i);
        }
    }
    port_classes(
        rules,
        |r| r.sport,
        &mut set.sport_class,
        &mut set.sport_masks,
    );
    port_classes(
        rules,
        |r| r.dport,
        &mut set.dport_class,
        &mut set.dport_masks,
    );
    // Every (protocol and fragment, destination port class) pair decided in advance, for sets
    // that constrain nothing else (the program reads it only then; see `RuleSet`).
    for pf in 0..PROTO_FRAG_LEN {
        for class in 0..MAX_PORT_CLASSES as u16 {
            let first = set.proto_frag[pf]
                .and(&set.dport_masks[usize::from(class)])
                .first();
            set.dport_first_rule[RuleSet::dport_first_rule_index(pf, class)] = first
                .map_or(FirstRule::NONE, |rule| {
                    FirstRule::new(rule, rules[rule].action)
                });
        }
    }

    let mut flags = 0;
    for (used, flag) in [
        (
            rules.iter().any(|r| r.src.is_some()),
            config_flags::SRC_USED,
        ),
        (
            rules.iter().any(|r| r.dst.is_some()),
            config_flags::DST_USED,
        ),
        (
            rules.iter().any(|r| r.sport.is_some()),
            config_flags::SPORT_USED,
        ),
        (
            rules.iter().any(|r| r.dport.is_some()),
            config_flags::DPORT_USED,
        ),
        (
            rules.iter().any(|r| r.icmp_type.is_some()),
            config_flags::ICMP_USED,
        ),
    ] {
        if used {
            flags |= flag;
        }
    }
    set.flags = flags;

    // Each trie entry P holds the rules whose prefix contains P, plus the rules with no prefix:
    // the longest entry matching an address then holds exactly the rules that match it.
    let entries = |field: &dyn Fn(&Rule) -> Option<Prefix>, v4: bool| {
        let mut prefixes: Vec<Prefix> = vec![if v4 {
            Prefix::V4([0; 4], 0)
        } else {
            Prefix::V6([0; 16], 0)
        }];
        for r in rules {
            if let Some(p) = field(r)
                && p.is_v4() == v4
                && !prefixes.contains(&p)
            {
                prefixes.push(p);
            }
        }
        prefixes
            .into_iter()
            .map(|p| {
                let m = mask_of(&|r: &Rule| field(r).is_none_or(|rp| rp.contains(&p)));
                (p, m)
            })
            .collect::<Vec<_>>()
    };
    let v4 = |e: Vec<(Prefix, RuleMask)>| {
        e.into_iter()
            .filter_map(|(p, m)| match p {
                Prefix::V4(a, l) => Some((l, a, m)),
                Prefix::V6(..) => None,
            })
            .collect()
    };
    let v6 = |e: Vec<(Prefix, RuleMask)>| {
        e.into_iter()
            .filter_map(|(p, m)| match p {
                Prefix::V6(a, l) => Some((l, a, m)),
                Prefix::V4(..) => None,
            })
            .collect()
    };
    let src = |r: &Rule| r.src;
    let dst = |r: &Rule| r.dst;
    Ok(Compiled {
        set,
        src_v4: v4(entries(&src, true)),
        dst_v4: v4(entries(&dst, true)),
        src_v6: v6(entries(&src, false)),
        dst_v6: v6(entries(&dst, false)),
    })
}

/// Fills one direction's port tables: the range boundaries of the rules cut the ports into
/// intervals; each interval's mask (the rules whose range holds it, plus the rules without a
/// range) gets a class, intervals with equal masks share one. Class 0 is "no port".
fn port_classes(
    rules: &[Rule],
    field: impl Fn(&Rule) -> Option<(u16, u16)>,
    classes: &mut [u16; PORT_TABLE_LEN],
    masks: &mut [RuleMask; MAX_PORT_CLASSES],
) {
    let mut unconstrained = RuleMask::EMPTY;
    let mut starts: Vec<u32> = vec![0];
    for (i, r) in rules.iter().enumerate() {
        match field(r) {
            None => unconstrained.insert(i),
            Some((lo, hi)) => {
                starts.push(u32::from(lo));
                starts.push(u32::from(hi) + 1);
            }
        }
    }
    starts.retain(|s| *s < PORT_TABLE_LEN as u32);
    starts.sort_unstable();
    starts.dedup();
    let mut class_of: HashMap<RuleMask, u16> = HashMap::new();
    class_of.insert(unconstrained, PORT_CLASS_NONE);
    masks[usize::from(PORT_CLASS_NONE)] = unconstrained;
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(PORT_TABLE_LEN as u32);
        let port = start as u16;
        let mut m = unconstrained;
        for (i, r) in rules.iter().enumerate() {
            if let Some((lo, hi)) = field(r)
                && lo <= port
                && port <= hi
            {
                m.insert(i);
            }
        }
        let next = class_of.len() as u16;
        let class = *class_of.entry(m).or_insert(next);
        // At most 2 * MAX_RULES + 1 intervals, plus "no port": always room.
        masks[usize::from(class)] = m;
        classes[start as usize..end as usize].fill(class);
    }
}

#[cfg(test)]
use packet::abi::ICMP_NOT_ICMP;

/// The class of a packet's port (`None`: it has none), as the program looks it up.
#[cfg(test)]
fn port_class(classes: &[u16; PORT_TABLE_LEN], port: Option<u16>) -> u16 {
    port.map_or(PORT_CLASS_NONE, |x| classes[usize::from(x)])
}

#[cfg(test)]
impl Compiled {
    /// Evaluates the tables as the eBPF program does: for a set that constrains nothing but
    /// the protocol, fragment kind and destination port, the precomputed first rule of the
    /// packet's pair; for any other, longest-prefix lookups, one mask per field, AND, lowest
    /// bit.
    pub fn lookup(&self, p: &PacketFields) -> Option<usize> {
        let set = &self.set;
        if set.flags & config_flags::NOT_DPORT == 0 {
            let class = port_class(&set.dport_class, p.dport);
            let pf = RuleSet::proto_frag_index(p.class, p.frag);
            let first = set.dport_first_rule[RuleSet::dport_first_rule_index(pf, class)];
            if first == FirstRule::NONE {
                return None;
            }
            // The action the entry carries is the rule's.
            assert_eq!(first.action(), set.actions[first.rule() as usize]);
            return Some(first.rule() as usize);
        }
        self.lookup_by_masks(p)
    }

    /// [`Compiled::lookup`] by the masks alone, whatever keys the set uses.
    pub fn lookup_by_masks(&self, p: &PacketFields) -> Option<usize> {
        fn lpm<const N: usize>(t: &[(u8, [u8; N], RuleMask)], a: &[u8; N]) -> RuleMask {
            t.iter()
                .filter(|(l, p, _)| same_prefix(p, a, *l))
                .max_by_key(|(l, _, _)| *l)
                .map_or(RuleMask::EMPTY, |(_, _, m)| *m)
        }
        let (src, dst) = match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (
                lpm(&self.src_v4, &s.octets()),
                lpm(&self.dst_v4, &d.octets()),
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => (
                lpm(&self.src_v6, &s.octets()),
                lpm(&self.dst_v6, &d.octets()),
            ),
            _ => return None,
        };
        let set = &self.set;
        let port = |classes: &[u16; PORT_TABLE_LEN], masks: &[RuleMask], x: Option<u16>| {
            masks[usize::from(port_class(classes, x))]
        };
        let icmp = set.icmp[p.icmp_type.map_or(ICMP_NOT_ICMP as usize, usize::from)];
        set.proto_frag[RuleSet::proto_frag_index(p.class, p.frag)]
            .and(&src)
            .and(&dst)
            .and(&port(&set.sport_class, &set.sport_masks, p.sport))
            .and(&port(&set.dport_class, &set.dport_masks, p.dport))
            .and(&icmp)
            .first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: Policy = Policy {
        default: Action::Pass,
        malformed: Action::Drop,
        unparsed: Action::Drop,
        not_ip: Action::Pass,
    };

    fn r(s: &str) -> Rule {
        parse_rule(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn bad(s: &str) -> RuleError {
        parse_rule(s).expect_err(s)
    }

    #[test]
    fn the_documented_examples_parse() {
        let a = r("proto udp dport 7 action xsk");
        assert_eq!(
            (a.proto, a.dport, a.action),
            (Some(Proto::Udp), Some((7, 7)), Action::Xsk)
        );
        let b = r("src 198.18.0.0/24 proto tcp dport 22-23 action drop");
        assert_eq!(b.src, Some(Prefix::V4([198, 18, 0, 0], 24)));
        assert_eq!(b.dport, Some((22, 23)));
        let c = r("proto icmp icmp-type 8 action pass");
        assert_eq!(c.icmp_type, Some(8));
        let d = r("dst 2001:db8::/64 action drop");
        assert!(matches!(d.dst, Some(Prefix::V6(_, 64))));
        let e = r("action drop");
        assert_eq!(e.proto, None);
        let f = r("src 198.18.0.7 action pass");
        assert_eq!(f.src, Some(Prefix::V4([198, 18, 0, 7], 32)));
    }

    #[test]
    fn errors_point_at_the_wrong_word() {
        let e = bad("proto udp prot 7 action xsk");
        assert_eq!(e.word, Some(2));
        assert!(e.message.contains("unknown key `prot`"));
        assert_eq!(e.to_string().lines().nth(2), Some("            ^^^^"));
        assert_eq!(bad("proto udx action drop").word, Some(1));
        assert_eq!(bad("dport 7-3 action drop").word, Some(1));
        assert_eq!(bad("dport 70000 action drop").word, Some(1));
        assert_eq!(bad("src 198.18.0.1/24 action drop").word, Some(1));
        assert!(
            bad("src 198.18.0.1/24 action drop")
                .message
                .contains("198.18.0.0/24")
        );
        assert_eq!(bad("src 198.18.0.0/33 action drop").word, Some(1));
        assert_eq!(bad("src nonsense action drop").word, Some(1));
        assert_eq!(bad("proto udp action maybe").word, Some(3));
        assert_eq!(bad("proto udp proto tcp action drop").word, Some(2));
        assert_eq!(bad("action drop proto udp").word, Some(2));
        assert_eq!(bad("proto udp dport").word, Some(2));
        assert_eq!(bad("proto udp dport 7").word, None);
        assert_eq!(bad("").word, None);
    }

    #[test]
    fn contradictions_are_rejected() {
        assert!(
            bad("proto icmp dport 7 action drop")
                .message
                .contains("ports")
        );
        assert!(
            bad("proto udp icmp-type 8 action drop")
                .message
                .contains("icmp-type")
        );
        assert!(bad("icmp-type 8 action drop").message.contains("icmp-type"));
        assert!(
            bad("src 198.18.0.0/24 dst 2001:db8::/32 action drop")
                .message
                .contains("famil")
        );
        assert!(
            bad("proto icmp src 2001:db8::/32 action drop")
                .message
                .contains("ICMP")
        );
        assert!(
            bad("proto icmpv6 dst 198.18.0.0/15 action drop")
                .message
                .contains("ICMPv6")
        );
    }

    #[test]
    fn rules_files() {
        let text = "# a comment\n\nproto udp dport 7 action xsk  # echo\nproto tcp action drop\n";
        let rules = parse_rules_file(text, "r.txt").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].text, "proto udp dport 7 action xsk");
        let e = parse_rules_file("action drop\nfoo bar\n", "r.txt").unwrap_err();
        assert!(e.to_string().starts_with("r.txt:2: bad rule"), "{e}");
        // Saved on Windows: a byte-order mark and CRLF line ends.
        let windows =
            "\u{feff}proto udp dport 53 action drop\r\n# dns\r\n\r\nproto tcp action pass\r\n";
        let rules = parse_rules_file(windows, "r.txt").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].text, "proto udp dport 53 action drop");
        assert_eq!(rules[1].text, "proto tcp action pass");
    }

    fn udp(src: [u8; 4], sport: u16, dport: u16) -> PacketFields {
        PacketFields {
            class: proto_class::UDP,
            src: IpAddr::from(src),
            dst: IpAddr::from([198, 18, 0, 2]),
            sport: Some(sport),
            dport: Some(dport),
            icmp_type: None,
            frag: frag::NONE,
        }
    }

    #[test]
    fn first_match_wins_in_order() {
        let rules = vec![
            r("src 198.18.0.0/24 proto udp dport 9 action drop"),
            r("proto udp dport 7 action xsk"),
            r("src 198.18.0.0/16 action pass"),
        ];
        let t = compile(&rules, POLICY).unwrap();
        for (p, want) in [
            (udp([198, 18, 0, 1], 1000, 9), Some(0)),
            (udp([198, 18, 0, 1], 1000, 7), Some(1)),
            (udp([198, 18, 1, 1], 1000, 9), Some(2)),
            (udp([198, 19, 1, 1], 1000, 9), None),
        ] {
            assert_eq!(first_match(&rules, &p), want);
            assert_eq!(t.lookup(&p), want);
        }
        let icmp = PacketFields {
            class: proto_class::ICMP,
            sport: None,
            dport: None,
            icmp_type: Some(8),
            ..udp([198, 18, 0, 1], 0, 0)
        };
        assert_eq!(t.lookup(&icmp), Some(2), "port rules do not match ICMP");
    }

    #[test]
    fn frag_key() {
        assert_eq!(
            r("proto udp frag later action drop").frag,
            Some(FragMatch::Later)
        );
        assert_eq!(r("frag any action drop").frag, Some(FragMatch::Any));
        assert_eq!(bad("frag sometimes action drop").word, Some(1));
        let e = bad("proto udp dport 53 frag later action drop");
        assert_eq!(e.word, Some(4), "{e}");
        assert!(e.message.contains("later fragment"), "{e}");
        assert!(
            r("proto udp dport 53 frag first action drop")
                .dport
                .is_some()
        );
    }

    #[test]
    fn port_rules_see_first_fragments_and_never_later_ones() {
        let rules = vec![
            r("proto udp dport 6100 action drop"),
            r("proto udp frag later action pass"),
        ];
        let t = compile(&rules, POLICY).unwrap();
        let first = PacketFields {
            frag: frag::FIRST,
            ..udp([198, 18, 0, 1], 1000, 6100)
        };
        assert_eq!(
            t.lookup(&first),
            Some(0),
            "the first fragment meets the port rule"
        );
        let later = PacketFields {
            sport: None,
            dport: None,
            frag: frag::LATER,
            ..udp([198, 18, 0, 1], 0, 0)
        };
        assert_eq!(t.lookup(&later), Some(1));
        assert_eq!(first_match(&rules, &later), Some(1));
    }

    #[test]
    fn port_classes_are_few_and_exact() {
        // 256 rules with distinct ranges: at most 2 * 256 + 2 classes, and every port lands in
        // the class of exactly the rules whose range holds it.
        let rules: Vec<Rule> = (0..MAX_RULES as u16)
            .map(|i| {
                r(&format!(
                    "proto udp dport {}-{} action drop",
                    i * 200,
                    i * 200 + 150
                ))
            })
            .collect();
        let t = compile(&rules, POLICY).unwrap();
        let max = *t.set.dport_class.iter().max().unwrap() as usize;
        assert!(max < MAX_PORT_CLASSES, "{max}");
        for port in [0u16, 150, 151, 199, 200, 51150, 51151, 65535] {
            let p = udp([198, 18, 0, 1], 1, port);
            assert_eq!(t.lookup(&p), first_match(&rules, &p), "port {port}");
        }
    }

    #[test]
    fn too_many_rules() {
        let rules: Vec<Rule> = (0..=MAX_RULES).map(|_| r("action drop")).collect();
        assert!(compile(&rules, POLICY).is_err());
        assert!(compile(&rules[..MAX_RULES], POLICY).is_ok());
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        let v4 = prop_oneof![
            Just(None),
            (0u8..=32, 0u8..4)
                .prop_map(|(l, x)| { Some(Prefix::V4(masked([198, 18, x, 1], l), l)) })
        ];
        let ports = prop_oneof![
            Just(None),
            (0u16..20, 0u16..20).prop_map(|(a, b)| Some((a.min(b), a.max(b)))),
            (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Some((a.min(b), a.max(b)))),
        ];
        let frags = prop_oneof![
            Just(None),
            Just(Some(FragMatch::None)),
            Just(Some(FragMatch::First)),
            Just(Some(FragMatch::Later)),
            Just(Some(FragMatch::Any)),
        ];
        (
            prop_oneof![
                Just(None),
                Just(Some(Proto::Tcp)),
                Just(Some(Proto::Udp)),
                Just(Some(Proto::Icmp))
            ],
            v4.clone(),
            v4,
            ports.clone(),
            ports,
            prop_oneof![Just(None), (0u8..4).prop_map(Some)],
            prop_oneof![Just(Action::Pass), Just(Action::Drop), Just(Action::Xsk)],
            frags,
        )
            .prop_map(|(proto, src, dst, sport, dport, icmp_type, action, frag)| {
                let icmp = proto == Some(Proto::Icmp);
                Rule {
                    proto,
                    src,
                    dst,
                    sport: if icmp { None } else { sport },
                    dport: if icmp { None } else { dport },
                    icmp_type: if icmp { icmp_type } else { None },
                    frag,
                    action,
                    text: String::new(),
                }
            })
    }

    fn arb_packet() -> impl Strategy<Value = PacketFields> {
        (
            0u32..proto_class::COUNT,
            0u8..4,
            0u8..4,
            0u16..20,
            0u16..20,
            0u8..4,
            0u32..frag::COUNT,
            any::<bool>(),
        )
            .prop_map(|(class, a, b, sp, dp, t, kind, wide)| {
                let later = kind == frag::LATER;
                let has_ports = (class == proto_class::TCP || class == proto_class::UDP) && !later;
                let is_icmp = class == proto_class::ICMP && !later;
                // Mostly small ports, where the rules' ranges are; sometimes any port.
                let port = |p: u16| if wide { p.wrapping_mul(3277) } else { p };
                PacketFields {
                    class,
                    src: IpAddr::from([198, 18, a, 1]),
                    dst: IpAddr::from([198, 18, b, 1]),
                    sport: has_ports.then_some(port(sp)),
                    dport: has_ports.then_some(port(dp)),
                    icmp_type: is_icmp.then_some(t),
                    frag: kind,
                }
            })
    }

    proptest! {
        /// The compiled bit-vector tables pick the same rule as a linear scan, always.
        #[test]
        fn compiled_tables_equal_linear_scan(
            rules in prop::collection::vec(arb_rule(), 0..40),
            packets in prop::collection::vec(arb_packet(), 1..40),
        ) {
            let t = compile(&rules, POLICY).unwrap();
            // The same rules with no key but protocol, fragment and destination port: a set
            // decided by the precomputed first-rule table.
            let ports_only: Vec<Rule> = rules
                .iter()
                .map(|r| Rule { src: None, dst: None, sport: None, icmp_type: None, ..r.clone() })
                .collect();
            let u = compile(&ports_only, POLICY).unwrap();
            prop_assert_eq!(u.set.flags & config_flags::NOT_DPORT, 0);
            for p in &packets {
                prop_assert_eq!(t.lookup(p), first_match(&rules, p), "{:?}", p);
                prop_assert_eq!(u.lookup(p), first_match(&ports_only, p), "{:?}", p);
                prop_assert_eq!(u.lookup_by_masks(p), u.lookup(p), "{:?}", p);
            }
        }
    }

    #[test]
    fn covers_key_by_key() {
        let covers = |a: &str, b: &str| r(a).covers(&r(b));
        // Wider on every key, or the key absent.
        assert!(covers(
            "proto tcp action drop",
            "proto tcp dport 22 action pass"
        ));
        assert!(covers(
            "action drop",
            "src 198.18.0.0/24 proto udp action pass"
        ));
        assert!(covers(
            "src 198.18.0.0/16 action pass",
            "src 198.18.3.0/24 action pass"
        ));
        assert!(covers(
            "dport 1-100 action drop",
            "proto udp dport 5-50 action drop"
        ));
        assert!(covers("frag any action drop", "frag first action drop"));
        assert!(covers(
            "proto udp action drop",
            "proto udp frag later action drop"
        ));
        assert!(covers(
            "dst 2001:db8::/32 action drop",
            "dst 2001:db8::2 action pass"
        ));
        // Narrower on one key, or another family.
        assert!(!covers(
            "proto tcp dport 22 action pass",
            "proto tcp action drop"
        ));
        assert!(!covers(
            "dport 1-100 action drop",
            "dport 50-101 action drop"
        ));
        assert!(!covers(
            "src 198.18.3.0/24 action pass",
            "src 198.18.0.0/16 action pass"
        ));
        assert!(!covers(
            "src 198.18.0.0/16 action pass",
            "src 2001:db8::/32 action pass"
        ));
        assert!(!covers("frag first action drop", "frag any action drop"));
        assert!(!covers("frag none action drop", "action drop"));
        assert!(!covers("proto tcp action drop", "proto udp action drop"));
        assert!(!covers(
            "proto icmp icmp-type 8 action drop",
            "proto icmp icmp-type 0 action drop"
        ));
    }

    #[test]
    fn shadowed_names_the_first_earlier_rule_that_covers() {
        let rules: Vec<Rule> = [
            "proto udp dport 7 action xsk",
            "proto tcp action drop",
            "proto tcp action pass",
            "proto tcp dport 22 action pass",
            "proto udp dport 7 action xsk",
            "proto udp dport 9 action drop",
        ]
        .iter()
        .map(|t| r(t))
        .collect();
        let found = shadowed(&rules);
        assert_eq!(
            found,
            [
                Shadowed { rule: 2, by: 1 },
                Shadowed { rule: 3, by: 1 },
                Shadowed { rule: 4, by: 0 },
            ]
        );
        assert_eq!(
            found[1].message(&rules),
            "rule 4 (`proto tcp dport 22 action pass`) never applies: rule 2 (`proto tcp action \
             drop`) matches every packet it matches, first, and does `drop` with them instead of \
             `pass`; put rule 4 first if it is meant to win"
        );
        assert_eq!(
            found[2].message(&rules),
            "rule 5 (`proto udp dport 7 action xsk`) is redundant: rule 1 (`proto udp dport 7 \
             action xsk`) matches every packet it matches, first, with the same action"
        );
        assert!(shadowed(&rules[..2]).is_empty());
    }

    proptest! {
        /// `covers` never claims too much: every packet the covered rule matches, the covering
        /// rule matches too (by the reference scan), over every ordered pair of a random rule
        /// set (about 1 pair in 60 is covered). And a rule `shadowed` reports never decides a
        /// packet.
        #[test]
        fn covered_rules_match_nothing_the_cover_does_not(
            rules in prop::collection::vec(arb_rule(), 2..30),
            packets in prop::collection::vec(arb_packet(), 1..60),
        ) {
            let matches = |r: &Rule, p: &PacketFields| first_match(std::slice::from_ref(r), p).is_some();
            for a in &rules {
                for b in rules.iter().filter(|b| a.covers(b)) {
                    for p in packets.iter().filter(|p| matches(b, p)) {
                        prop_assert!(matches(a, p), "{:?} covers {:?} but not {:?}", a, b, p);
                    }
                }
            }
            for s in shadowed(&rules) {
                for p in &packets {
                    prop_assert_ne!(first_match(&rules, p), Some(s.rule), "{:?}", p);
                }
            }
        }
    }
}
