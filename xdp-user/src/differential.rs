//! The differential test: the compiled XDP program, run in the kernel through
//! `BPF_PROG_TEST_RUN`, against the Rust model of the classifier, on the same random inputs.
//!
//! The model is `packet::filter::classify` (built on `packet::parse`, the parser the AF_XDP and
//! DPDK loops use) followed by [`rules::first_match`], the plain linear scan of the rules. The
//! program side is the real `xdp_filter` (its XDP action) and `xdp_filter_probe` (the same
//! classification and decision code, recording the fields it read and the rule it chose).
//! Random rule sets (up to 256 rules, every key, IPv4 and IPv6 prefixes, port ranges, fragment
//! kinds, policies) meet random frames (VLAN tags, IPv4 options, IPv6 extension chains,
//! fragments first and later, tiny and overlapping fragments, truncated and corrupted frames).
//! Every disagreement fails the test, with the frame and the rules to reproduce it. After each
//! rule set, the real program's per-rule counters must equal the model's count of matches.
//!
//! `KBP_DIFF_CASES` sets the number of frames (100 000 by default; `cargo xtask test
//! --diff-cases N` passes it), `KBP_DIFF_SEED` the seed.

use crate::rules::{self, FragMatch, PacketFields, Policy, Rule};
use crate::xdp::{LogLevel, XdpFilter};
use packet::abi::{Action, Counter, ICMP_NOT_ICMP, NO_PORT, ProbeRecord, proto_class, verdict};
use packet::craft::{PORT_POOL, Rng, V4_POOL, V6_POOL, random_frame};
use packet::filter::{Class, IpFields, classify};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What the program should have done with a frame, by the model.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    verdict: u32,
    rule: u32,
    action: Action,
    fields: Option<IpFields>,
}

fn model(rules: &[Rule], policy: Policy, frame: &[u8]) -> Expected {
    let (verdict, rule, action, fields) = match classify(frame) {
        Class::NotIp => (verdict::NOT_IP, 0, policy.not_ip, None),
        Class::Malformed(_) => (verdict::MALFORMED, 0, policy.malformed, None),
        Class::Unparsed => (verdict::UNPARSED, 0, policy.unparsed, None),
        Class::Ip(f) => match rules::first_match(rules, &PacketFields::from_ip(&f)) {
            Some(i) => (verdict::RULE, i as u32, rules[i].action, Some(f)),
            None => (verdict::NO_RULE, 0, policy.default, Some(f)),
        },
    };
    Expected {
        verdict,
        rule,
        action,
        fields,
    }
}

/// The probe's record, reduced to what the model predicts.
fn probed(p: &ProbeRecord) -> Expected {
    let ip = p.verdict == verdict::RULE || p.verdict == verdict::NO_RULE;
    let port = |x: u32| (x != NO_PORT).then_some(x as u16);
    Expected {
        verdict: p.verdict,
        rule: p.rule,
        action: Action::from_u32(p.action).unwrap_or(Action::Pass),
        fields: ip.then(|| IpFields {
            v6: p.v6 != 0,
            src: p.src,
            dst: p.dst,
            protocol: p.protocol as u8,
            class: p.class,
            sport: port(p.sport),
            dport: port(p.dport),
            icmp_type: (p.icmp_type != ICMP_NOT_ICMP).then_some(p.icmp_type as u8),
            frag: match p.frag {
                packet::abi::frag::FIRST => packet::parse::Frag::First,
                packet::abi::frag::LATER => packet::parse::Frag::Later,
                _ => packet::parse::Frag::None,
            },
        }),
    }
}

/// A random prefix around one of the pool addresses the frames use, so rules often match.
fn random_prefix(rng: &mut Rng, v6: bool) -> String {
    if v6 {
        let mut a = V6_POOL[rng.below(V6_POOL.len() as u64) as usize];
        let len = [0u8, 16, 32, 48, 64, 96, 112, 120, 127, 128][rng.below(10) as usize];
        mask(&mut a, len);
        format!("{}/{len}", Ipv6Addr::from(a))
    } else {
        let mut a = V4_POOL[rng.below(V4_POOL.len() as u64) as usize];
        let len = [0u8, 8, 15, 16, 23, 24, 28, 30, 31, 32][rng.below(10) as usize];
        mask(&mut a, len);
        format!("{}/{len}", Ipv4Addr::from(a))
    }
}

fn mask(a: &mut [u8], len: u8) {
    for (i, b) in a.iter_mut().enumerate() {
        let bits = usize::from(len).saturating_sub(i * 8).min(8);
        *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
}

fn random_port_range(rng: &mut Rng) -> String {
    let pick = |rng: &mut Rng| {
        if rng.chance(80) {
            PORT_POOL[rng.below(PORT_POOL.len() as u64) as usize]
        } else {
            rng.next_u64() as u16
        }
    };
    let a = pick(rng);
    match rng.below(3) {
        0 => a.to_string(),
        1 => {
            let b = a.saturating_add(rng.below(40) as u16);
            format!("{a}-{b}")
        }
        _ => {
            let b = pick(rng);
            format!("{}-{}", a.min(b), a.max(b))
        }
    }
}

/// The keys a rule set's rules may use. The program skips a field no rule of the set
/// constrains (`RuleSet::flags`), so sets that leave some keys out, in every combination, test
/// that skipping.
#[derive(Clone, Copy, Debug)]
struct Keys {
    src: bool,
    dst: bool,
    sport: bool,
    dport: bool,
    icmp_type: bool,
}

impl Keys {
    const ALL: Keys = Keys {
        src: true,
        dst: true,
        sport: true,
        dport: true,
        icmp_type: true,
    };

    /// Only the destination port (besides protocol and fragment): the sets the program
    /// decides from its precomputed first-rule table (`RuleSet::dport_first_rule`).
    const DPORT_ONLY: Keys = Keys {
        src: false,
        dst: false,
        sport: false,
        dport: true,
        icmp_type: false,
    };

    /// Every key in half the sets, the destination port alone in a fifth, a random subset
    /// (each key even odds) in the rest.
    fn random(rng: &mut Rng) -> Keys {
        if rng.chance(50) {
            return Keys::ALL;
        }
        if rng.chance(40) {
            return Keys::DPORT_ONLY;
        }
        Keys {
            src: rng.chance(50),
            dst: rng.chance(50),
            sport: rng.chance(50),
            dport: rng.chance(50),
            icmp_type: rng.chance(50),
        }
    }
}

/// A random rule that parses, using only `keys` (and the protocol and fragment, which every
/// packet has): written as text and read by the real rule parser.
fn random_rule(rng: &mut Rng, keys: Keys) -> Rule {
    loop {
        let mut words = Vec::new();
        let v6 = rng.chance(45);
        let proto = match rng.below(6) {
            0 => Some("tcp"),
            1 => Some("udp"),
            2 => Some(if v6 { "icmpv6" } else { "icmp" }),
            3 => Some("any"),
            _ => None,
        };
        if let Some(p) = proto {
            words.push(format!("proto {p}"));
        }
        if keys.src && rng.chance(35) {
            words.push(format!("src {}", random_prefix(rng, v6)));
        }
        if keys.dst && rng.chance(35) {
            words.push(format!("dst {}", random_prefix(rng, v6)));
        }
        let icmp = matches!(proto, Some("icmp" | "icmpv6"));
        if keys.sport && !icmp && rng.chance(40) {
            words.push(format!("sport {}", random_port_range(rng)));
        }
        if keys.dport && !icmp && rng.chance(55) {
            words.push(format!("dport {}", random_port_range(rng)));
        }
        if keys.icmp_type && icmp && rng.chance(60) {
            let t = [0u8, 3, 8, 11, 128, 129, 135, 136][rng.below(8) as usize];
            words.push(format!("icmp-type {t}"));
        }
        if rng.chance(30) {
            let f = ["none", "first", "later", "any"][rng.below(4) as usize];
            words.push(format!("frag {f}"));
        }
        let action = ["pass", "drop", "xsk"][rng.below(3) as usize];
        words.push(format!("action {action}"));
        if let Ok(rule) = rules::parse_rule(&words.join(" ")) {
            return rule;
        }
    }
}

fn random_rules(rng: &mut Rng) -> Vec<Rule> {
    let count = match rng.below(10) {
        0 => 0,
        1 => packet::abi::MAX_RULES,
        2 | 3 => 16 + rng.below(100) as usize,
        _ => 1 + rng.below(12) as usize,
    };
    let keys = Keys::random(rng);
    (0..count).map(|_| random_rule(rng, keys)).collect()
}

fn random_policy(rng: &mut Rng) -> Policy {
    let pick = |rng: &mut Rng| {
        if rng.chance(50) {
            Action::Pass
        } else {
            Action::Drop
        }
    };
    Policy {
        default: pick(rng),
        malformed: pick(rng),
        unparsed: pick(rng),
        not_ip: pick(rng),
    }
}

/// The XDP return code for an action (`linux/bpf.h`: XDP_DROP 1, XDP_PASS 2).
fn xdp_action_of(action: Action) -> u32 {
    // `xsk` falls back to pass: a test run has no socket in the map.
    match action {
        Action::Drop => 1,
        Action::Pass | Action::Xsk => 2,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Frames at the edges of the program's fast path (untagged IPv4 without options, not a
/// fragment, carrying UDP or TCP) and their IPv6 counterparts: well-formed ones, then each
/// with one field the fast path checks moved across its limit (IP lengths, UDP length, TCP
/// data offset, IPv4 flags and header length, version), trailing bytes after the datagram,
/// and every truncation; IPv4 headers get their checksum fixed, so the checks behind it are
/// reached. The fast path must hand every reject to the general path, which must decide it
/// as the model does: these go first, before the random frames.
fn fast_path_edges() -> Vec<Vec<u8>> {
    use packet::craft::{Addrs, Ipv4, Ipv6, frame_v4, frame_v6, icmpv6, tcp, udp};
    let (s4, d4) = ([198, 18, 0, 1], [198, 18, 0, 2]);
    let (s6, d6) = (
        packet::fixtures::LOCAL_IPV6,
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets(),
    );
    let (a4, a6) = (Addrs::V4(s4, d4), Addrs::V6(s6, d6));
    let (ip4, ip6) = (Ipv4::new(s4, d4), Ipv6::new(s6, d6));
    let bases: Vec<(Vec<u8>, bool, u8)> = vec![
        (frame_v4(&ip4, 17, &udp(a4, 1000, 7, b"edge")), false, 17),
        (
            frame_v4(&ip4, 6, &tcp(a4, 1000, 80, 0x02, &[], b"")),
            false,
            6,
        ),
        (
            frame_v4(&ip4, 6, &tcp(a4, 1000, 80, 0x18, &[1, 1, 1, 1], b"data")),
            false,
            6,
        ),
        (
            frame_v6(&ip6, &[], 17, &udp(a6, 1000, 7, b"edge")),
            true,
            17,
        ),
        (frame_v6(&ip6, &[], 17, &udp(a6, 1000, 7, b"")), true, 17),
        (
            frame_v6(&ip6, &[], 6, &tcp(a6, 1000, 80, 0x02, &[], b"")),
            true,
            6,
        ),
        (
            frame_v6(&ip6, &[], 58, &icmpv6(a6, 128, 0, [0, 1, 0, 1], b"")),
            true,
            58,
        ),
    ];
    let be16 = |f: &mut [u8], at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    let mut out = Vec::new();
    for (base, v6, protocol) in bases {
        let l4 = if v6 { 54 } else { 34 };
        let ip_len_at = if v6 { 18 } else { 16 };
        let ip_len = u16::from_be_bytes([base[ip_len_at], base[ip_len_at + 1]]);
        let mut variants = vec![base.clone()];
        // The IP length field: 0 up to past the frame.
        for len in (0..=ip_len + 2).chain([ip_len + 40, u16::MAX]) {
            let mut f = base.clone();
            be16(&mut f, ip_len_at, len);
            variants.push(f);
        }
        match protocol {
            17 => {
                for len in 0..=u16::from_be_bytes([base[l4 + 4], base[l4 + 5]]) + 2 {
                    let mut f = base.clone();
                    be16(&mut f, l4 + 4, len);
                    variants.push(f);
                }
            }
            6 => {
                for offset in 0..16u8 {
                    let mut f = base.clone();
                    f[l4 + 12] = (offset << 4) | (f[l4 + 12] & 0x0f);
                    variants.push(f);
                }
            }
            _ => {}
        }
        if !v6 {
            // Header length, version, and every fragment bit and offset the fast path refuses.
            for first in [0x44, 0x46, 0x4f, 0x55, 0x65] {
                let mut f = base.clone();
                f[14] = first;
                variants.push(f);
            }
            for word in [0x2000u16, 0x4000, 0x8000, 0x0001, 0x1fff, 0x6000] {
                let mut f = base.clone();
                be16(&mut f, 20, word);
                variants.push(f);
            }
        } else {
            for first in [0x50, 0x70, 0x00] {
                let mut f = base.clone();
                f[14] = first;
                variants.push(f);
            }
        }
        // Trailing bytes after the datagram (Ethernet padding), and every truncation.
        let mut padded = base.clone();
        padded.extend_from_slice(&[0; 6]);
        variants.push(padded);
        for cut in packet::craft::MIN_FRAME_LEN..base.len() {
            variants.push(base[..cut].to_vec());
        }
        if !v6 {
            // With a correct header checksum again, so the checks behind it are reached.
            for f in variants.iter_mut().filter(|f| f.len() > 14) {
                let header_len = usize::from(f[14] & 0x0f) * 4;
                if (20..=60).contains(&header_len) && f.len() >= 14 + header_len {
                    f[24..26].copy_from_slice(&[0, 0]);
                    let c = packet::checksum::checksum(&f[14..14 + header_len]);
                    f[24..26].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        out.extend(variants);
    }
    out
}

/// Runs `cases` random frames over random rule sets; returns the report of disagreements.
fn differential(seed: u64, cases: u64) -> (u64, String) {
    let mut rng = Rng::new(seed);
    let mut filter = XdpFilter::load("lo").expect("load the XDP program");
    let mut failures = 0u64;
    let mut report = String::new();
    let mut done = 0u64;
    let mut sets = 0u64;
    // Frames per verdict (by the model) and per fragment kind among IP packets: the report
    // shows that every case was exercised.
    let mut verdicts = [0u64; 5];
    let mut frags = [0u64; 3];
    // The captured fixtures first: every one must agree too.
    let mut fixed: Vec<Vec<u8>> = packet::fixtures::REQUESTS
        .iter()
        .map(|f| f.to_vec())
        .chain(fast_path_edges())
        .collect();
    while done < cases {
        let rules = random_rules(&mut rng);
        let policy = random_policy(&mut rng);
        filter
            .install(&rules, policy)
            .expect("install a random rule set");
        sets += 1;
        let before = filter.snapshot().expect("snapshot");
        // A new set's per-rule counters start at zero, also in a slot an earlier set counted in.
        if before.rules.iter().any(|c| *c != Counter::default()) {
            failures += 1;
            let _ = writeln!(
                report,
                "rule set {sets}: per-rule counters not zero at install: {:?}",
                before.rules
            );
        }
        let mut want_per_rule = vec![0u64; rules.len()];
        let frames = (cases - done).min(400);
        for _ in 0..frames {
            let frame = fixed.pop().unwrap_or_else(|| random_frame(&mut rng));
            let want = model(&rules, policy, &frame);
            let got = probed(&filter.probe(&frame).expect("probe run"));
            let (real, _) = filter
                .test_run("xdp_filter", &frame, 1)
                .expect("filter run");
            if want.verdict == verdict::RULE {
                want_per_rule[want.rule as usize] += 1;
            }
            verdicts[want.verdict as usize] += 1;
            if let Some(f) = &want.fields {
                frags[f.frag.abi() as usize] += 1;
            }
            if got != want || real != xdp_action_of(want.action) {
                failures += 1;
                if failures <= 5 {
                    let _ = writeln!(
                        report,
                        "frame {}\n  model:   {want:?}\n  program: {got:?} (xdp_filter \
                         returned {real})\n  policy {policy:?}\n  rules:\n    {}",
                        hex(&frame),
                        rules
                            .iter()
                            .map(|r| r.text.as_str())
                            .collect::<Vec<_>>()
                            .join("\n    ")
                    );
                }
            }
        }
        done += frames;
        let after = filter.snapshot().expect("snapshot");
        let got_per_rule: Vec<u64> = after
            .rules
            .iter()
            .map(|c| c.packets)
            .zip(before.rules.iter().map(|c| c.packets))
            .map(|(a, b)| a - b)
            .collect();
        if got_per_rule != want_per_rule {
            failures += 1;
            let _ = writeln!(
                report,
                "rule set {sets}: per-rule counters {got_per_rule:?}, model {want_per_rule:?}"
            );
        }
    }
    let _ = writeln!(
        report,
        "{done} frames over {sets} rule sets (seed {seed:#x}): {failures} disagreement(s)\n\
         by verdict: rule {} no-rule {} not-ip {} malformed {} unparsed {}; IP packets by \
         fragment kind: none {} first {} later {}",
        verdicts[0],
        verdicts[1],
        verdicts[2],
        verdicts[3],
        verdicts[4],
        frags[0],
        frags[1],
        frags[2]
    );
    (failures, report)
}

#[test]
fn the_xdp_program_agrees_with_the_model() {
    assert!(
        xtask::setup::is_root(),
        "this test loads the XDP program into the kernel; run it as root (`cargo xtask test`)"
    );
    let seed = env_u64("KBP_DIFF_SEED", 0x6b62_7000_0010);
    let cases = env_u64("KBP_DIFF_CASES", 100_000);
    let (failures, report) = differential(seed, cases);
    packet::stderr!("{report}");
    assert_eq!(failures, 0, "{report}");
}

/// The verifier accepts the filter with room to spare, with logging off and at its most
/// verbose: it walks every path the program's branches make, up to 1 000 000 instructions,
/// and each copy or branch added to the program can multiply that (one moved line once took
/// the filter from 205 000 to over a million with logs on, and `--log-level` stopped
/// loading). Under half the limit, a kernel or compiler that walks it differently still
/// loads it.
#[test]
fn the_verifier_accepts_the_filter_with_room_to_spare() {
    assert!(
        xtask::setup::is_root(),
        "this test loads the XDP program into the kernel; run it as root (`cargo xtask test`)"
    );
    for level in [LogLevel::Off, LogLevel::Trace] {
        let mut filter = XdpFilter::load_logging("lo", level).expect("load the XDP program");
        let walked = filter
            .verified_instructions("xdp_filter")
            .expect("load the program");
        packet::stderr!("xdp_filter, logs {level:?}: the verifier walked {walked:?} instructions");
        if let Some(walked) = walked {
            assert!(
                walked < 500_000,
                "xdp_filter, logs {level:?}: the verifier walked {walked} instructions, over \
                 half its limit"
            );
        }
    }
}

/// The rules the generator makes are accepted by the parser and use every key, so the
/// differential test really exercises each table.
#[test]
fn random_rules_use_every_key() {
    let mut rng = Rng::new(7);
    let rules: Vec<Rule> = (0..10_000)
        .map(|_| random_rule(&mut rng, Keys::ALL))
        .collect();
    // At least 1% of the rules each.
    let has = |f: &dyn Fn(&Rule) -> bool| rules.iter().filter(|r| f(r)).count() > 100;
    assert!(has(&|r| r.src.is_some()) && has(&|r| r.dst.is_some()));
    assert!(has(&|r| r.sport.is_some()) && has(&|r| r.dport.is_some()));
    assert!(has(&|r| r.icmp_type.is_some()));
    assert!(has(&|r| r.frag == Some(FragMatch::Later)) && has(&|r| r.frag.is_none()));
    assert!(has(&|r| matches!(r.src, Some(rules::Prefix::V6(..)))));
    assert!(has(&|r| r
        .proto
        .is_some_and(|p| p.class() == proto_class::ICMPV6)));
}
