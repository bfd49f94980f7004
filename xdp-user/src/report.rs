//! The reports of `xdp-user load`: a line of rates per interval, the summary printed at exit
//! and the JSON object of `--json`.

use crate::metrics::PROTOCOLS;
use crate::rules::Rule;
use crate::xdp::Snapshot;
use packet::abi::{Counter, outcome, stat};
use std::time::Duration;

pub fn rate_line(t: Duration, a: &Snapshot, b: &Snapshot, secs: f64) -> String {
    let rate = |slot: u32| (b.get(slot).packets - a.get(slot).packets) as f64 / secs;
    format!(
        "{:>6.1}s  pass {:>9.0} pps  drop {:>9.0} pps  xsk {:>9.0} pps  malformed {:>7.0} pps  \
         (totals: pass {} drop {} xsk {} malformed {})",
        t.as_secs_f64(),
        rate(stat::ACTION_PASS),
        rate(stat::ACTION_DROP),
        rate(stat::ACTION_XSK),
        rate(stat::MALFORMED),
        b.get(stat::ACTION_PASS).packets,
        b.get(stat::ACTION_DROP).packets,
        b.get(stat::ACTION_XSK).packets,
        b.get(stat::MALFORMED).packets,
    )
}

pub fn summary(s: &Snapshot, rules: &[Rule]) -> String {
    let mut out = format!(
        "actions: pass {} drop {} xsk {} (xsk without a socket, passed: {}; xsk too long for \
         a socket's frame, passed: {}); malformed {}; unparsed {}; no rule matched: {}; \
         fragments: first {} later {}\nprotocols:",
        s.get(stat::ACTION_PASS).packets,
        s.get(stat::ACTION_DROP).packets,
        s.get(stat::ACTION_XSK).packets,
        s.get(stat::XSK_FALLBACK).packets,
        s.get(stat::XSK_OVERSIZE).packets,
        s.get(stat::MALFORMED).packets,
        s.get(stat::UNPARSED).packets,
        s.get(stat::DEFAULT_ACTION).packets,
        s.get(stat::FRAG_FIRST).packets,
        s.get(stat::FRAG_LATER).packets,
    );
    for (name, slot) in PROTOCOLS {
        out.push_str(&format!(" {name} {}", s.get(slot).packets));
    }
    let covered = covered_by(rules);
    for ((r, c), by) in rules.iter().zip(&s.rules).zip(&covered) {
        out.push_str(&format!(
            "\nrule `{}`: {} packets, {} bytes",
            r.text, c.packets, c.bytes
        ));
        if let Some(by) = by {
            out.push_str(&format!(" (dead: rule {} covers it)", by + 1));
        }
    }
    out
}

/// For each rule, the earlier rule that makes it dead (`rules::shadowed`), if any: a dead
/// rule's zero counters are explained next to them.
fn covered_by(rules: &[Rule]) -> Vec<Option<usize>> {
    let mut by = vec![None; rules.len()];
    for s in crate::rules::shadowed(rules) {
        by[s.rule] = Some(s.by);
    }
    by
}

pub fn to_json(
    iface: &str,
    mode: &str,
    t: Duration,
    s: &Snapshot,
    rules: &[Rule],
) -> serde_json::Value {
    let counter = |c: Counter| serde_json::json!({"packets": c.packets, "bytes": c.bytes});
    let mut protocols = serde_json::Map::new();
    for (name, slot) in PROTOCOLS {
        protocols.insert(name.into(), s.get(slot).packets.into());
    }
    let rules: Vec<_> = rules
        .iter()
        .zip(&s.rules)
        .zip(covered_by(rules))
        .map(|((r, c), by)| {
            serde_json::json!({
                "rule": r.text,
                "packets": c.packets,
                "bytes": c.bytes,
                "covered_by": by,
            })
        })
        .collect();
    let outcomes: Vec<_> = s
        .outcomes
        .iter()
        .map(|(o, c)| {
            serde_json::json!({
                "frame": outcome::path::NAMES[o.path as usize],
                "fragment": outcome::FRAG_NAMES[o.frag as usize],
                "rule_matched": o.matched,
                "action": outcome::action::NAMES[o.action as usize],
                "packets": c.packets,
                "bytes": c.bytes,
            })
        })
        .collect();
    serde_json::json!({
        "iface": iface,
        "mode": mode.split(' ').next().unwrap_or(mode),
        "seconds": t.as_secs_f64(),
        "actions": {
            "pass": s.get(stat::ACTION_PASS).packets,
            "drop": s.get(stat::ACTION_DROP).packets,
            "xsk": s.get(stat::ACTION_XSK).packets,
        },
        "xsk_fallback": s.get(stat::XSK_FALLBACK).packets,
        "xsk_oversize": s.get(stat::XSK_OVERSIZE).packets,
        "default_action": s.get(stat::DEFAULT_ACTION).packets,
        "malformed": s.get(stat::MALFORMED).packets,
        "unparsed": s.get(stat::UNPARSED).packets,
        "capture_lost": s.get(stat::CAPTURE_LOST).packets,
        "fragments": {
            "first": s.get(stat::FRAG_FIRST).packets,
            "later": s.get(stat::FRAG_LATER).packets,
        },
        "rule_set_generation": s.generation,
        "protocols": protocols,
        "bytes": {
            "pass": counter(s.get(stat::ACTION_PASS)),
            "drop": counter(s.get(stat::ACTION_DROP)),
            "xsk": counter(s.get(stat::ACTION_XSK)),
        },
        "rules": rules,
        "outcomes": outcomes,
    })
}
