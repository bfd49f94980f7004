//! The Prometheus / OpenMetrics endpoint: `--metrics ADDR:PORT` on every binary.
//!
//! A binary's statistics thread (never a data path) builds the counter families it reports,
//! from the same snapshots its text lines and JSON come from, and [`Published::publish`]es
//! them; a scrape renders the latest families with `prometheus-client`'s OpenMetrics text
//! encoder. Families are built from absolute counter values (the kernel's per-CPU maps, the
//! poll loops' published counters, DPDK's port statistics), so they are "const" metrics
//! encoded by a [`Collector`], not counters incremented here.
//!
//! Naming follows Prometheus: a `kbp_` prefix, base units, counters ending in `_total` (the
//! encoder adds it), and only bounded labels (interface, queue, action, protocol, rule
//! number; never an address or a port).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up; the encoder names its sample `NAME_total`.
    Counter,
    Gauge,
}

/// One metric family: a name (without `_total`), its help, and one sample per label set.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

impl Family {
    pub fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind: Kind::Counter,
            samples: Vec::new(),
        }
    }

    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            kind: Kind::Gauge,
            ..Family::counter(name, help)
        }
    }

    /// Adds a sample with `labels`.
    pub fn with(mut self, labels: &[(&'static str, &str)], value: u64) -> Family {
        self.push(labels, value);
        self
    }

    pub fn push(&mut self, labels: &[(&'static str, &str)], value: u64) {
        self.samples.push(Sample {
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            value,
        });
    }
}

/// The families a binary publishes, shared between its statistics thread and the endpoint.
#[derive(Clone, Debug, Default)]
pub struct Published(Arc<Mutex<Vec<Family>>>);

impl Published {
    /// Replaces what scrapes see.
    pub fn publish(&self, families: Vec<Family>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = families;
    }

    /// The Prometheus text format (0.0.4) a scrape gets now, for clients that do not ask for
    /// OpenMetrics (curl, `promtool check metrics`, older servers). `prometheus-client` only
    /// encodes OpenMetrics, whose counter families are named without `_total`; in this format
    /// every line names the sample (`..._total`).
    pub fn render_text(&self) -> String {
        let families = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::new();
        for f in &families {
            let (name, kind) = match f.kind {
                Kind::Counter => (format!("{}_total", f.name), "counter"),
                Kind::Gauge => (f.name.to_string(), "gauge"),
            };
            let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for s in &f.samples {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| {
                        let v = v
                            .replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n");
                        format!("{k}=\"{v}\"")
                    })
                    .collect();
                if labels.is_empty() {
                    out.push_str(&format!("{name} {}\n", s.value));
                } else {
                    out.push_str(&format!("{name}{{{}}} {}\n", labels.join(","), s.value));
                }
            }
        }
        out
    }

    /// The OpenMetrics text a scrape gets now.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl Collector for Published {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for f in &families {
            let metric_type = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut family = encoder.encode_descriptor(f.name, f.help, None, metric_type)?;
            for s in &f.samples {
                let labels: Vec<(&str, &str)> =
                    s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let metric = family.encode_family(&labels)?;
                match f.kind {
                    Kind::Counter => ConstCounter::new(s.value).encode(metric)?,
                    // Gauges are i64 in OpenMetrics; ours are small counts.
                    Kind::Gauge => ConstGauge::new(i64::try_from(s.value).unwrap_or(i64::MAX))
                        .encode(metric)?,
                }
            }
        }
        Ok(())
    }
}

/// A running endpoint: `GET /metrics` answers with the latest published families. Dropping
/// it stops the server thread.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The content types of OpenMetrics text, as Prometheus asks for it, and of the Prometheus
/// text format, for every other client.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `published` on `addr` (e.g. `127.0.0.1:9100`, or port 0 for any free port).
pub fn serve(addr: &str, published: Published) -> Result<Endpoint, String> {
    let server = tiny_http::Server::http(addr).map_err(|e| {
        format!("--metrics {addr}: cannot listen there ({e}); give a free ADDR:PORT, e.g. 127.0.0.1:9100")
    })?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("--metrics {addr}: not an IP address and port"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let response = if request.url() == "/metrics" || request.url() == "/" {
                        // OpenMetrics for whoever asks for it (Prometheus does), the classic
                        // text format otherwise.
                        let openmetrics = request.headers().iter().any(|h| {
                            h.field.equiv("Accept")
                                && h.value.as_str().contains("application/openmetrics-text")
                        });
                        let (body, content_type) = if openmetrics {
                            (published.render(), OPENMETRICS)
                        } else {
                            (published.render_text(), TEXT_0_0_4)
                        };
                        let header = tiny_http::Header::from_bytes("Content-Type", content_type)
                            .expect("a constant, valid header");
                        tiny_http::Response::from_string(body).with_header(header)
                    } else {
                        tiny_http::Response::from_string("not found: try /metrics\n")
                            .with_status_code(404)
                    };
                    // A client that went away is its own problem, not the data path's.
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?
    };
    Ok(Endpoint {
        addr,
        stop,
        thread: Some(thread),
    })
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The poll loops' counters, per queue (AF_XDP) or lcore (DPDK): `kbp_loop_packets_total`
/// by `what` (rx, tx, and each fate of a received frame).
pub fn loop_families(iface: &str, queues: &[(u32, crate::counter::LoopCounters)]) -> Vec<Family> {
    let mut packets = Family::counter(
        "kbp_loop_packets",
        "Packets of the poll loop, by what happened to them: rx, tx, and each fate of a \
         received frame (echoed, reflected, counted, dropped, malformed, not_for_us, \
         tx_ring_full).",
    );
    for (queue, c) in queues {
        let q = queue.to_string();
        for (what, v) in [
            ("rx", c.rx),
            ("tx", c.tx),
            ("echoed", c.echoed),
            ("reflected", c.reflected),
            ("counted", c.counted),
            ("dropped", c.dropped),
            ("malformed", c.malformed),
            ("not_for_us", c.not_for_us),
            ("tx_ring_full", c.tx_dropped),
        ] {
            packets.push(&[("iface", iface), ("queue", &q), ("what", what)], v);
        }
    }
    vec![packets]
}

/// The largest flows (top N only, so the labels stay bounded) and the flow tables' state.
pub fn flow_families(iface: &str, top: &crate::counter::TopFlows) -> Vec<Family> {
    let mut packets = Family::gauge(
        "kbp_top_flow_packets",
        "Packets of the largest flows, by rank (1 = most packets); only the top N flows are \
         exported.",
    );
    let mut bytes = Family::gauge("kbp_top_flow_bytes", "Bytes of the largest flows, by rank.");
    for (i, f) in top.flows().iter().enumerate() {
        let (rank, src, dst) = (
            (i + 1).to_string(),
            f.key.src_ip().to_string(),
            f.key.dst_ip().to_string(),
        );
        let (sport, dport) = (f.key.src_port.to_string(), f.key.dst_port.to_string());
        let protocol = f.key.protocol_name();
        let labels = [
            ("iface", iface),
            ("rank", rank.as_str()),
            ("protocol", protocol.as_ref()),
            ("src", src.as_str()),
            ("src_port", sport.as_str()),
            ("dst", dst.as_str()),
            ("dst_port", dport.as_str()),
        ];
        packets.push(&labels, f.counter.packets);
        bytes.push(&labels, f.counter.bytes);
    }
    vec![
        packets,
        bytes,
        Family::gauge("kbp_flows", "Flows in the flow tables.")
            .with(&[("iface", iface)], top.distinct as u64),
        Family::counter(
            "kbp_flow_overflow_packets",
            "Packets whose flow found no slot in the (fixed-size) flow table.",
        )
        .with(&[("iface", iface)], top.overflow.packets),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn families() -> Vec<Family> {
        vec![
            Family::counter("kbp_xdp_packets", "Packets by XDP action.")
                .with(&[("iface", "dut0"), ("action", "pass")], 7)
                .with(&[("iface", "dut0"), ("action", "drop")], 3),
            Family::gauge("kbp_xdp_rule_set_generation", "The rule set in force.")
                .with(&[("iface", "dut0")], 2),
        ]
    }

    #[test]
    fn renders_openmetrics_text() {
        let p = Published::default();
        p.publish(families());
        let text = p.render();
        assert!(text.contains("# TYPE kbp_xdp_packets counter\n"), "{text}");
        assert!(
            text.contains("kbp_xdp_packets_total{iface=\"dut0\",action=\"pass\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("kbp_xdp_packets_total{iface=\"dut0\",action=\"drop\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("kbp_xdp_rule_set_generation{iface=\"dut0\"} 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn renders_the_prometheus_text_format_with_escaped_labels() {
        let p = Published::default();
        let mut f = families();
        f[0].push(&[("iface", "a\"b\\c\nd"), ("action", "xsk")], 1);
        p.publish(f);
        let text = p.render_text();
        assert!(
            text.starts_with(
                "# HELP kbp_xdp_packets_total Packets by XDP action.\n\
                 # TYPE kbp_xdp_packets_total counter\n\
                 kbp_xdp_packets_total{iface=\"dut0\",action=\"pass\"} 7\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("kbp_xdp_packets_total{iface=\"a\\\"b\\\\c\\nd\",action=\"xsk\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE kbp_xdp_rule_set_generation gauge\nkbp_xdp_rule_set_generation{iface=\"dut0\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn serves_the_latest_families_over_http() {
        let p = Published::default();
        let endpoint = serve("127.0.0.1:0", p.clone()).unwrap();
        p.publish(families());
        let get_as = |path: &str, accept: &str| {
            let mut s = std::net::TcpStream::connect(endpoint.addr).unwrap();
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: x\r\nAccept: {accept}\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let get = |path: &str| get_as(path, "*/*");
        let r = get_as("/metrics", "application/openmetrics-text;version=1.0.0");
        assert!(r.starts_with("HTTP/1.0 200"), "{r}");
        assert!(r.contains("application/openmetrics-text"), "{r}");
        assert!(r.contains("# TYPE kbp_xdp_packets counter"), "{r}");
        assert!(r.contains("action=\"drop\"} 3"), "{r}");
        let r = get("/metrics");
        assert!(r.contains("text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("# TYPE kbp_xdp_packets_total counter"), "{r}");
        p.publish(vec![
            Family::counter("kbp_xdp_packets", "Packets by XDP action.")
                .with(&[("iface", "dut0"), ("action", "drop")], 4),
        ]);
        assert!(get("/metrics").contains("action=\"drop\"} 4"));
        assert!(get("/nope").starts_with("HTTP/1.0 404"));
    }

    #[test]
    fn a_taken_address_is_a_clear_error() {
        let first = serve("127.0.0.1:0", Published::default()).unwrap();
        let e = serve(&first.addr.to_string(), Published::default()).unwrap_err();
        assert!(
            e.contains("--metrics") && e.contains("free ADDR:PORT"),
            "{e}"
        );
    }
}
