//! What `--metrics ADDR:PORT` serves for `load`, `run` and `gen`: the counter families built
//! from the same snapshots as the text lines and the JSON summary, so a scrape and the JSON
//! agree. The endpoint itself is `packet::metrics`.

use crate::afxdp::KernelStats;
use crate::generator::GenReport;
use crate::xdp::Snapshot;
use packet::abi::stat;
use packet::counter::LoopCounters;
use packet::metrics::{Endpoint, Family, Published};

/// The endpoint and what it serves, when `--metrics` was given.
#[derive(Debug)]
pub struct Metrics {
    pub published: Published,
    _endpoint: Endpoint,
}

impl Metrics {
    /// Starts the endpoint when `addr` is given, saying where it listens.
    pub fn start(addr: Option<&str>, who: &str) -> anyhow::Result<Option<Metrics>> {
        let Some(addr) = addr else { return Ok(None) };
        let published = Published::default();
        let endpoint =
            packet::metrics::serve(addr, published.clone()).map_err(anyhow::Error::msg)?;
        packet::stderr!(
            "{who}: Prometheus metrics on http://{}/metrics",
            endpoint.addr
        );
        Ok(Some(Metrics {
            published,
            _endpoint: endpoint,
        }))
    }
}

/// The XDP program's actions and policy classes, in the JSON's terms.
const ACTIONS: [(&str, u32); 3] = [
    ("pass", stat::ACTION_PASS),
    ("drop", stat::ACTION_DROP),
    ("xsk", stat::ACTION_XSK),
];

/// The XDP program's protocol counters and their names (metrics labels, JSON keys, text).
pub const PROTOCOLS: [(&str, u32); 8] = [
    ("arp", stat::PROTO_ARP),
    ("ipv4", stat::PROTO_IPV4),
    ("ipv6", stat::PROTO_IPV6),
    ("tcp", stat::PROTO_TCP),
    ("udp", stat::PROTO_UDP),
    ("icmp", stat::PROTO_ICMP),
    ("icmpv6", stat::PROTO_ICMPV6),
    ("other", stat::PROTO_OTHER),
];

const CLASSES: [(&str, u32); 8] = [
    ("no_rule_matched", stat::DEFAULT_ACTION),
    ("malformed", stat::MALFORMED),
    ("unparsed", stat::UNPARSED),
    ("fragment_first", stat::FRAG_FIRST),
    ("fragment_later", stat::FRAG_LATER),
    ("xsk_fallback", stat::XSK_FALLBACK),
    ("xsk_oversize", stat::XSK_OVERSIZE),
    ("capture_lost", stat::CAPTURE_LOST),
];

/// Reloads of the rule set, for `load`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reloads {
    pub done: u64,
    pub failed: u64,
}

/// The XDP program's counters on `iface`.
pub fn xdp_families(iface: &str, s: &Snapshot, reloads: Option<Reloads>) -> Vec<Family> {
    let mut packets = Family::counter(
        "kbp_xdp_packets",
        "Packets the XDP program handled, by the action it took.",
    );
    let mut bytes = Family::counter(
        "kbp_xdp_bytes",
        "Bytes of the packets the XDP program handled, by the action it took.",
    );
    for (action, slot) in ACTIONS {
        packets.push(&[("iface", iface), ("action", action)], s.get(slot).packets);
        bytes.push(&[("iface", iface), ("action", action)], s.get(slot).bytes);
    }
    let mut protocols = Family::counter(
        "kbp_xdp_protocol_packets",
        "Packets the XDP program saw, by protocol (network level, then transport level).",
    );
    for (protocol, slot) in PROTOCOLS {
        protocols.push(
            &[("iface", iface), ("protocol", protocol)],
            s.get(slot).packets,
        );
    }
    let mut classes = Family::counter(
        "kbp_xdp_class_packets",
        "Packets by how the classifier saw them: no rule matched, malformed, unparsed, \
         fragments, xsk actions passed for want of a socket or for being longer than its \
         frames hold, and frames a capture lost to a full ring.",
    );
    for (class, slot) in CLASSES {
        classes.push(&[("iface", iface), ("class", class)], s.get(slot).packets);
    }
    let mut rule_packets = Family::counter(
        "kbp_xdp_rule_packets",
        "Packets each rule of the set in force matched (rule = its number, from 1).",
    );
    let mut rule_bytes = Family::counter(
        "kbp_xdp_rule_bytes",
        "Bytes of the packets each rule of the set in force matched.",
    );
    for (i, c) in s.rules.iter().enumerate() {
        let rule = (i + 1).to_string();
        rule_packets.push(&[("iface", iface), ("rule", &rule)], c.packets);
        rule_bytes.push(&[("iface", iface), ("rule", &rule)], c.bytes);
    }
    let mut out = vec![
        packets,
        bytes,
        protocols,
        classes,
        rule_packets,
        rule_bytes,
        Family::gauge(
            "kbp_xdp_rule_set_generation",
            "The generation of the rule set in force (per-rule counters restart with each).",
        )
        .with(&[("iface", iface)], u64::from(s.generation)),
    ];
    if let Some(r) = reloads {
        out.push(
            Family::counter("kbp_xdp_reloads", "Rule-set reloads (SIGHUP), by outcome.")
                .with(&[("iface", iface), ("outcome", "done")], r.done)
                .with(&[("iface", iface), ("outcome", "failed")], r.failed),
        );
    }
    out
}

/// The AF_XDP poll loops' counters and the kernel's XSK statistics, per queue.
pub fn loop_families(iface: &str, queues: &[(u32, LoopCounters, KernelStats)]) -> Vec<Family> {
    let counts: Vec<(u32, LoopCounters)> = queues.iter().map(|(q, c, _)| (*q, *c)).collect();
    let mut kernel = Family::counter(
        "kbp_xsk_kernel_events",
        "The kernel's AF_XDP socket statistics (XDP_STATISTICS), per queue.",
    );
    for (queue, _, k) in queues {
        let q = queue.to_string();
        for (event, v) in [
            ("rx_dropped", k.rx_dropped),
            ("rx_ring_full", k.rx_ring_full),
            ("fill_ring_empty", k.fill_ring_empty),
            ("invalid_descs", k.invalid_descs),
        ] {
            kernel.push(&[("iface", iface), ("queue", &q), ("event", event)], v);
        }
    }
    let mut out = packet::metrics::loop_families(iface, &counts);
    out.push(kernel);
    out
}

/// The generator's counters.
pub fn gen_families(iface: &str, r: &GenReport) -> Vec<Family> {
    let mut packets = Family::counter(
        "kbp_gen_packets",
        "The generator's packets: requests sent (completed by the kernel), distinct replies \
         received, and replies that were duplicates, reordered (also received), stale, or \
         foreign.",
    );
    for (what, v) in [
        ("sent", r.sent),
        ("received", r.received),
        ("duplicate", r.duplicates),
        ("reordered", r.reordered),
        ("stale", r.stale),
        ("foreign", r.foreign),
    ] {
        packets.push(&[("iface", iface), ("what", what)], v);
    }
    vec![packets]
}
