//! The filter cannot be bypassed (spec/classifier.md): crafted frames from the peer namespace
//! (scapy) against `xdp-user load` on the DUT, with kernel UDP sockets in the DUT namespace as
//! the receivers. IPv4 and IPv6 fragments, tiny and overlapping fragments, long IPv6
//! extension-header chains and VLAN-tagged frames each meet the rules exactly as the spec says;
//! the counters are checked exactly, and the sockets show what really got through (the kernel
//! reassembles the fragments the filter passes).
//!
//! They need root and `python3-scapy`, and fail with a clear message without them.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;
use xtask::testbed::{DUT_IF, Testbed};

/// How long after the last frame the sockets keep listening.
const SETTLE: Duration = Duration::from_millis(300);

/// The port rule of the issue; 6200 is the control port no rule names.
const DROP_6100: &str = "proto udp dport 6100 action drop";

/// Starts `xdp-user load` on the DUT with `args` (the interface, `--json` and a bound on its
/// run time are added).
fn start_filter(tb: &Testbed, args: &[&str]) -> Loader {
    let mut all = vec!["--iface", DUT_IF, "--json", "--duration", "30"];
    all.extend_from_slice(args);
    Loader::start(tb, &all)
}

/// Stops the filter and returns its JSON report and standard error; checks it exited cleanly
/// and left nothing attached.
fn stop_filter(tb: &Testbed, mut l: Loader) -> (Value, String) {
    l.signal(libc::SIGINT);
    let out = l.finish();
    let err = text(&out.stderr);
    assert!(out.status.success(), "xdp-user load failed: {err}");
    assert!(!tb.dut_xdp_attached().unwrap(), "detached on SIGINT");
    let v = last_json(&out);
    assert_eq!(
        frames_seen(&v),
        n(&v, "/protocols/ipv4")
            + n(&v, "/protocols/ipv6")
            + n(&v, "/protocols/arp")
            + n(&v, "/protocols/other")
            + n(&v, "/malformed"),
        "every frame is decided once, and counted once: {v}"
    );
    (v, err)
}

/// The frames of the issue, to `port`: a plain IPv4 datagram, the same split into IPv4
/// fragments, a plain IPv6 datagram, one split with a fragment header, and one behind 7
/// destination-options headers. `id` keeps the fragment identifications apart.
/// The JSON's outcomes as "frame fragment matched|unmatched action" -> packets.
fn outcome_packets(v: &Value) -> std::collections::BTreeMap<String, u64> {
    v["outcomes"]
        .as_array()
        .unwrap_or_else(|| panic!("no outcomes: {v}"))
        .iter()
        .map(|o| {
            let matched = if o["rule_matched"] == true {
                "matched"
            } else {
                "unmatched"
            };
            let key = format!(
                "{} {} {matched} {}",
                o["frame"].as_str().unwrap_or("?"),
                o["fragment"].as_str().unwrap_or("?"),
                o["action"].as_str().unwrap_or("?")
            );
            (key, o["packets"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn issue_frames(port: u16, id: u32) -> String {
    format!(
        "send('plain4', udp4({port}, 100, {id}))\n\
         send('frag4', frag4({port}, 1000, {id} + 1))\n\
         send('plain6', udp6({port}, 100, seed={id} + 2))\n\
         send('frag6', frag6({port}, 1000, {id} + 3))\n\
         send('dst7', udp6({port}, 100, ext=7, seed={id} + 4))\n"
    )
}

/// The issue's table: with `proto udp dport 6100 action drop` no form of a datagram to 6100
/// gets through, and every form of the same datagram to 6200 does (the filter does not just
/// drop fragments: the kernel reassembles those to 6200).
#[test]
fn fragments_and_extension_headers_do_not_bypass_a_port_rule() {
    let tb = quiet_testbed();
    let sink = UdpSink::start(&tb, &[6100, 6200], 20.0);
    let l = start_filter(&tb, &["--rule", DROP_6100]);
    let s = peer_scapy(
        &tb,
        &format!("{}{}", issue_frames(6100, 10), issue_frames(6200, 20)),
    );
    // Per port: 1 + 3 + 1 + 3 + 1 frames.
    for (label, frames) in [
        ("plain4", 2),
        ("frag4", 6),
        ("plain6", 2),
        ("frag6", 6),
        ("dst7", 2),
    ] {
        assert_eq!(sent(&s, label), frames, "{label} frames sent: {s}");
    }
    let got = sink.finish(SETTLE);
    // Nothing to 6100 arrived, in either family.
    assert_eq!(
        got.count(false, 6100),
        0,
        "IPv4 to 6100 got through: {got:?}"
    );
    assert_eq!(
        got.count(true, 6100),
        0,
        "IPv6 to 6100 got through: {got:?}"
    );
    // Every datagram to 6200 did, the fragmented ones whole.
    assert_eq!(got.lengths(false, 6200), [100, 1000], "{got:?}");
    assert_eq!(got.lengths(true, 6200), [100, 100, 1000], "{got:?}");

    let (v, err) = stop_filter(&tb, l);
    assert!(
        err.contains(
            "attached to dut0 in native (driver) mode with 1 rule(s), default pass, \
             malformed drop, unparsed drop, non-IP pass"
        ),
        "{err}"
    );

    assert_counts(
        &v,
        &[
            // 6100: the plain datagrams, the first fragments (classified by their UDP
            // header), the datagram behind 7 destination options.
            ("/actions/drop", 5),
            ("/rules/0/packets", 5),
            // The later fragments carry no ports: they pass, and the kernel drops them once
            // reassembly times out, since their first fragment never came.
            ("/actions/pass", 13),
            ("/actions/xsk", 0),
            ("/default_action", 13),
            ("/fragments/first", 4),
            ("/fragments/later", 8),
            ("/malformed", 0),
            ("/unparsed", 0),
            ("/protocols/ipv4", 8),
            ("/protocols/ipv6", 10),
            ("/protocols/udp", 18),
        ],
    );
    // The outcome counters say the same frame by frame, and add up to the frames seen.
    let outcomes = outcome_packets(&v);
    for (key, packets) in [
        ("ipv4_udp none matched drop", 1),
        ("ipv4_udp first matched drop", 1),
        ("ipv6_udp none matched drop", 2),
        ("ipv6_udp first matched drop", 1),
        ("ipv4_udp none unmatched pass", 1),
        ("ipv4_udp first unmatched pass", 1),
        ("ipv4_udp later unmatched pass", 4),
        ("ipv6_udp none unmatched pass", 2),
        ("ipv6_udp first unmatched pass", 1),
        ("ipv6_udp later unmatched pass", 4),
    ] {
        assert_eq!(outcomes.get(key), Some(&packets), "{key}: {outcomes:?}");
    }
    assert_eq!(outcomes.values().sum::<u64>(), 18, "{outcomes:?}");
    assert_eq!(v["rules"][0]["rule"], DROP_6100);
    assert_eq!(v["policy"]["default"], "pass", "{v}");
    assert_eq!(v["policy"]["malformed"], "drop", "{v}");
    assert_eq!(v["policy"]["unparsed"], "drop", "{v}");
    assert_eq!(n(&v, "/reloads"), 0);
    assert_eq!(n(&v, "/reload_failures"), 0);
}

/// Chains of 8 extension headers are walked to the UDP header; 9 are beyond the program: the
/// packet is unparsed and takes the `--unparsed` policy (drop unless told otherwise).
#[test]
fn an_extension_header_chain_beyond_eight_is_unparsed() {
    let tb = quiet_testbed();
    for unparsed in ["drop", "pass"] {
        let sink = UdpSink::start(&tb, &[6100, 6200], 20.0);
        let l = start_filter(&tb, &["--rule", DROP_6100, "--unparsed", unparsed]);
        let s = peer_scapy(
            &tb,
            "send('dst8', udp6(6100, 100, ext=8, seed=1))\n\
             send('dst8', udp6(6200, 101, ext=8, seed=2))\n\
             send('dst9', udp6(6200, 102, ext=9, seed=3))\n",
        );
        assert_eq!((sent(&s, "dst8"), sent(&s, "dst9")), (2, 1), "{s}");
        let got = sink.finish(SETTLE);
        let (v, _) = stop_filter(&tb, l);
        let passed = unparsed == "pass";
        assert_counts(
            &v,
            &[
                ("/unparsed", 1),
                ("/rules/0/packets", 1),
                ("/actions/drop", if passed { 1 } else { 2 }),
                ("/actions/pass", if passed { 2 } else { 1 }),
                ("/malformed", 0),
                // Unparsed packets count as IPv6, not as UDP: the program never saw the UDP
                // header.
                ("/protocols/ipv6", 3),
                ("/protocols/udp", 2),
                ("/fragments/first", 0),
                ("/fragments/later", 0),
            ],
        );
        assert_eq!(v["policy"]["unparsed"], unparsed, "{v}");
        assert_eq!(
            got.count(true, 6100),
            0,
            "8 headers deep is not deep enough: {got:?}"
        );
        let want: &[u64] = if passed { &[101, 102] } else { &[101] };
        assert_eq!(
            got.lengths(true, 6200),
            want,
            "--unparsed {unparsed}: {got:?}"
        );
    }
}

/// Fragments that could hide or rewrite a transport header: a TCP first fragment holding 8
/// bytes of TCP, later TCP fragments at offsets 1 and 2 (they would overwrite the TCP header
/// on reassembly; offset 3 does not), an empty UDP first fragment, and IPv6 first fragments
/// that do not hold the header chain and UDP header (RFC 7112).
const TRICKY_FRAGMENTS: &str = r#"
t = raw((IP(src=P4, dst=D4) / TCP(sport=40000, dport=80, flags='S') / pay(40))[TCP])
def tcpfrag(ident, off, data, mf):
    return IP(src=P4, dst=D4, id=ident, proto=6, frag=off, flags='MF' if mf else 0) / Raw(data)
send('malformed', tcpfrag(301, 0, t[:8], True))      # tiny first fragment
send('malformed', tcpfrag(302, 1, t[8:], False))     # overlaps the TCP header
send('malformed', tcpfrag(303, 2, t[16:], False))    # likewise
send('later', tcpfrag(304, 3, t[24:], False))        # past the TCP header: fine
send('malformed', IP(src=P4, dst=D4, id=305, proto=17, flags='MF'))  # no UDP header
# IPv6: fragment header -> destination options (8 bytes) | UDP header and data. The first
# fragment ends before the UDP header; the later one starts with it, behind a fragment header
# whose next header is an extension header.
d = raw((IPv6(src=P6, dst=D6) / IPv6ExtHdrFragment() / IPv6ExtHdrDestOpt()
         / UDP(sport=40000, dport=6200) / pay(100))[IPv6ExtHdrDestOpt])
def frag6h(ident, off, m, data):
    return IPv6(src=P6, dst=D6) / IPv6ExtHdrFragment(nh=60, offset=off, m=m, id=ident) / Raw(data)
send('malformed', frag6h(306, 0, 1, d[:8]))
send('unparsed', frag6h(306, 1, 0, d[8:]))
# A first fragment that ends inside a 16-byte destination-options header.
d16 = raw(IPv6ExtHdrDestOpt(nh=17, options=[PadN(optdata=b'\0' * 12)]))
assert len(d16) == 16
send('malformed', frag6h(307, 0, 1, d16[:8]))
"#;

/// Tiny and overlapping fragments are malformed, and take the `--malformed` policy: dropped
/// by default (the IPv6 datagram to 6200 never arrives, though no rule names 6200), passed
/// with `--malformed pass`.
#[test]
fn tiny_and_overlapping_fragments_are_malformed() {
    let tb = quiet_testbed();
    for malformed in ["drop", "pass"] {
        let sink = UdpSink::start(&tb, &[6200], 20.0);
        let l = start_filter(
            &tb,
            &[
                "--rule",
                "proto tcp dport 80 action drop",
                "--malformed",
                malformed,
            ],
        );
        let s = peer_scapy(&tb, TRICKY_FRAGMENTS);
        let (bad, unparsed, later) = (
            sent(&s, "malformed"),
            sent(&s, "unparsed"),
            sent(&s, "later"),
        );
        assert_eq!((bad, unparsed, later), (6, 1, 1), "{s}");
        let got = sink.finish(SETTLE);
        let (v, _) = stop_filter(&tb, l);
        let passed = malformed == "pass";
        assert_counts(
            &v,
            &[
                ("/malformed", bad),
                ("/unparsed", unparsed),
                // Malformed frames are counted nowhere else.
                ("/protocols/ipv4", later),
                ("/protocols/tcp", later),
                ("/protocols/ipv6", unparsed),
                ("/protocols/udp", 0),
                ("/fragments/first", 0),
                ("/fragments/later", later),
                // A port rule never matches a later fragment.
                ("/rules/0/packets", 0),
                (
                    "/actions/drop",
                    if passed { unparsed } else { bad + unparsed },
                ),
                ("/actions/pass", if passed { bad + later } else { later }),
            ],
        );
        assert_eq!(v["policy"]["malformed"], malformed, "{v}");
        assert_eq!(
            got.count(true, 6200),
            0,
            "--malformed {malformed}: the IPv6 datagram whose first fragment lacks its UDP \
             header got through: {got:?}"
        );
    }
}

/// The same rules hold behind one 802.1Q tag, behind QinQ (0x88a8 + 0x8100) and behind three
/// tags; a fourth tag is not stepped over (not IP: the default action). The kernel delivers no
/// tagged frame to a socket here (no VLAN device), so only the counters speak.
#[test]
fn vlan_tagged_fragments_meet_the_same_rules() {
    let tb = quiet_testbed();
    let l = start_filter(&tb, &["--rule", DROP_6100]);
    let s = peer_scapy(
        &tb,
        "t = raw((IP(src=P4, dst=D4) / TCP(sport=40000, dport=80) / pay(40))[TCP])\n\
         tags = [Dot1Q(vlan=100), Dot1AD(vlan=200) / Dot1Q(vlan=100),\n\
         \x20       Dot1AD(vlan=300) / Dot1Q(vlan=200) / Dot1Q(vlan=100)]\n\
         for i, tag in enumerate(tags):\n\
         \x20   l2 = eth() / tag\n\
         \x20   send('frag4', frag4(6100, 1000, 400 + 10 * i), l2)\n\
         \x20   send('frag6', frag6(6100, 1000, 401 + 10 * i), l2)\n\
         \x20   send('dst7', udp6(6100, 100, ext=7, seed=i), l2)\n\
         \x20   send('ctl', frag4(6200, 1000, 402 + 10 * i), l2)\n\
         \x20   send('tiny', IP(src=P4, dst=D4, id=403 + 10 * i, proto=6, flags='MF') / Raw(t[:8]), l2)\n\
         send('four', udp4(6100, 100, 499), eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / Dot1Q(vlan=4))\n",
    );
    for (label, frames) in [
        ("frag4", 9),
        ("frag6", 9),
        ("dst7", 3),
        ("ctl", 9),
        ("tiny", 3),
        ("four", 1),
    ] {
        assert_eq!(sent(&s, label), frames, "{label} frames sent: {s}");
    }
    let (v, _) = stop_filter(&tb, l);
    assert_counts(
        &v,
        &[
            // Per tagging: the two first fragments to 6100 and the datagram behind 7
            // destination options meet the rule; the tiny fragment is malformed.
            ("/rules/0/packets", 9),
            ("/malformed", 3),
            ("/actions/drop", 12),
            // Per tagging: the later fragments (2 + 2 to 6100, 2 to 6200) and the first
            // fragment to 6200; and the frame with four tags.
            ("/actions/pass", 18 + 3 + 1),
            ("/fragments/first", 9),
            ("/fragments/later", 18),
            ("/protocols/ipv4", 18),
            ("/protocols/ipv6", 12),
            ("/protocols/udp", 30),
            ("/protocols/other", 1),
            ("/unparsed", 0),
        ],
    );
}

/// One fragmented and one whole datagram per family to 6200, identifications from `id`.
fn frag_key_frames(id: u32) -> String {
    format!(
        "send('plain', udp4(6200, 100, {id}))\n\
         send('plain', udp6(6200, 100, seed={id}))\n\
         send('frag', frag4(6200, 1000, {id} + 1))\n\
         send('frag', frag6(6200, 1000, {id} + 2))\n"
    )
}

/// The `frag` key: each kind matches exactly the fragments it names, and a datagram is
/// delivered only when none of its pieces was dropped.
#[test]
fn the_frag_key_matches_each_kind_of_fragment() {
    let tb = quiet_testbed();
    // (kind, packets the rule matches, lengths delivered to 6200 per family)
    let cases: [(&str, u64, &[u64]); 4] = [
        ("later", 4, &[100]),
        ("first", 2, &[100]),
        ("none", 2, &[1000]),
        ("any", 6, &[100]),
    ];
    for (i, (kind, matched, delivered)) in cases.into_iter().enumerate() {
        let rule = format!("proto udp frag {kind} action drop");
        let sink = UdpSink::start(&tb, &[6200], 20.0);
        let l = start_filter(&tb, &["--rule", &rule]);
        let s = peer_scapy(&tb, &frag_key_frames(600 + 10 * i as u32));
        assert_eq!((sent(&s, "plain"), sent(&s, "frag")), (2, 6), "{s}");
        let got = sink.finish(SETTLE);
        let (v, _) = stop_filter(&tb, l);
        assert_counts(
            &v,
            &[
                ("/rules/0/packets", matched),
                ("/actions/drop", matched),
                ("/actions/pass", 8 - matched),
                ("/fragments/first", 2),
                ("/fragments/later", 4),
                ("/malformed", 0),
            ],
        );
        assert_eq!(v["rules"][0]["rule"], rule.as_str());
        assert_eq!(got.lengths(false, 6200), delivered, "frag {kind}: {got:?}");
        assert_eq!(got.lengths(true, 6200), delivered, "frag {kind}: {got:?}");
    }
}

/// `frag later` cannot go with ports: such a rule could never match.
#[test]
fn frag_later_with_a_port_is_rejected() {
    let tb = quiet_testbed();
    fails_with(
        &tb,
        &[
            "--iface",
            DUT_IF,
            "--rule",
            "proto udp dport 6100 frag later action drop",
        ],
        "later fragment",
    );
}
