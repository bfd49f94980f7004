//! Our XDP program beside xdp-tools' `xdp-filter` with the same 16 rules
//! (`xtask::xdp_filter`, which `cargo xtask bench` reports): xdp-filter loads in a namespace of
//! its own, both are timed with `xdp-user cost --reference-prog-id`, every frame must get the
//! same XDP action from both, and nothing may be left loaded afterwards. Needs root and
//! xdp-tools (`cargo xtask setup`); fails with a clear message without them. Asserts no
//! timing: the figures only have to exist.

use std::path::Path;
use xtask::xdp_filter::{SEEN_NOT_LOADING, cost_beside_xdp_filter};

#[test]
fn xdp_filter_and_ours_decide_alike_and_are_both_timed() {
    // A short run by default; KBP_XDP_FILTER_REPEAT=2000000 for the benchmark's repeat.
    let repeat = std::env::var("KBP_XDP_FILTER_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    // Two placements: the median over loads is exercised, not only the single-load path.
    let c = cost_beside_xdp_filter(Path::new(env!("CARGO_BIN_EXE_xdp-user")), repeat, 2)
        .unwrap_or_else(|e| panic!("the comparison with xdp-filter failed: {e:#}"));
    eprintln!("{}", c.text());
    let packets: Vec<&str> = c.rows.iter().map(|r| r.packet.as_str()).collect();
    assert_eq!(
        packets,
        ["udp4", "tcp4_syn", "icmp6_echo", "udp6", "tcp4_syn_1003"]
    );
    for r in &c.rows {
        for (what, ns) in [
            ("ours", r.ours_ns),
            ("xdp-filter", r.xdp_filter_ns),
            ("xdp-filter tcp", r.xdp_filter_tcp_ns),
        ] {
            assert!(
                ns.is_finite() && ns > 0.0,
                "{}: {what} timed {ns} ns",
                r.packet
            );
        }
        assert!(r.bare_ns.is_finite() && r.bare_ns >= 0.0);
        let dropped = r.packet == "tcp4_syn_1003";
        assert_eq!(r.action, if dropped { 1 } else { 2 }, "{}", r.packet);
    }
    assert_eq!(c.rules.len(), 16);
    assert_eq!(c.xdp_filter_commands.len(), 15);
    assert_ne!(c.xdp_filter.id, c.xdp_filter_tcp.id);
    assert!(c.xdp_filter_tcp.attached_name.contains("tcp") || c.xdp_filter_tcp.dispatcher);
    // xdp-bench and xdp-trafficgen: either they load, or they said why not.
    assert_eq!(c.reference_tools.len(), SEEN_NOT_LOADING.len());
    for t in &c.reference_tools {
        assert!(
            t.loaded || t.error_line.is_some(),
            "{} neither loaded nor printed an error: {t:?}",
            t.tool
        );
    }
}
