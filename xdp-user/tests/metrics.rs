//! `--metrics ADDR:PORT`: a real Prometheus server (Debian's `prometheus`) scrapes a running
//! `load` and a running `run` in the DUT namespace, `promtool check metrics` accepts what they
//! serve, and the values Prometheus stored equal the JSON summary each prints on exit.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xtask::testbed::{DUT_IF, DUT_IPV4, Testbed};

/// The endpoint's address inside the DUT namespace (its loopback is the namespace's own).
const METRICS: &str = "127.0.0.1:9464";
const PROMETHEUS: &str = "127.0.0.1:9090";

/// A Prometheus server in the DUT namespace scraping `METRICS` every 500 ms; stopped, and its
/// storage removed, when dropped.
struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(tb: &Testbed) -> Prometheus {
        assert!(
            Command::new("prometheus").arg("--version").output().is_ok(),
            "this test needs Prometheus: run `cargo xtask setup` (apt package prometheus)"
        );
        let dir = std::env::temp_dir().join(format!("kbp-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
                 scrape_configs:\n  - job_name: kbp\n    static_configs:\n      - targets: ['{METRICS}']\n"
            ),
        )
        .unwrap();
        let child = tb
            .in_dut("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, dir }
    }

    /// Runs an instant query through Prometheus's HTTP API; the value of each series, with
    /// its labels as `k=v,...` sorted.
    fn query(&self, tb: &Testbed, q: &str) -> Vec<(String, f64)> {
        let out = tb
            .in_dut("curl")
            .args([
                "-sS",
                "--fail",
                "-G",
                &format!("http://{PROMETHEUS}/api/v1/query"),
            ])
            .args(["--data-urlencode", &format!("query={q}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "query {q}: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut labels: Vec<String> = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                    .collect();
                labels.sort();
                let value: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels.join(","), value)
            })
            .collect()
    }

    /// The value of the one series `q` selects.
    fn value(&self, tb: &Testbed, q: &str) -> u64 {
        let r = self.query(tb, q);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        r[0].1 as u64
    }

    /// Waits until Prometheus has scraped the target at least once after `since` (so what it
    /// stored is what the endpoint serves now).
    fn wait_scrape_after(&self, tb: &Testbed, since: Instant) {
        let deadline = Instant::now() + Duration::from_secs(30);
        // Two scrape intervals after `since`, and a successful `up`.
        while since.elapsed() < Duration::from_millis(1500) {
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let up = self.query(tb, "up");
            if up.iter().any(|(_, v)| *v == 1.0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never scraped {METRICS}: {up:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the endpoint serves now, checked by `promtool check metrics`.
fn promtool_accepts(tb: &Testbed) -> String {
    let scrape = tb
        .in_dut("curl")
        .args(["-sS", "--fail", &format!("http://{METRICS}/metrics")])
        .output()
        .unwrap();
    assert!(scrape.status.success(), "{}", text(&scrape.stderr));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(&scrape.stdout)
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        text(&scrape.stdout)
    );
    text(&scrape.stdout)
}

/// Sends `count` UDP datagrams to the DUT's `port` from the peer (and waits for nothing).
fn udp_to(tb: &Testbed, port: u16, count: u32) {
    tb.peer_python(&format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range({count}): s.sendto(b'x'*32, ('{DUT_IPV4}', {port}))\n"
    ));
}

#[test]
fn prometheus_scrapes_load_and_the_values_equal_the_json() {
    let tb = quiet_testbed();
    let prometheus = Prometheus::start(&tb);
    let mut load = Loader::start(
        &tb,
        &[
            "--iface",
            DUT_IF,
            "--rule",
            "proto udp dport 9 action drop",
            "--rule",
            "proto udp dport 10 action pass",
            "--metrics",
            METRICS,
            "--json",
        ],
    );
    udp_to(&tb, 9, 300);
    udp_to(&tb, 10, 200);
    assert_eq!(tb.ping(false, 5), 5);
    let text = promtool_accepts(&tb);
    assert!(
        text.contains("# TYPE kbp_xdp_packets_total counter"),
        "{text}"
    );
    prometheus.wait_scrape_after(&tb, Instant::now());
    let drop = prometheus.value(&tb, "kbp_xdp_packets_total{action=\"drop\"}");
    let pass = prometheus.value(&tb, "kbp_xdp_packets_total{action=\"pass\"}");
    let rule1 = prometheus.value(&tb, "kbp_xdp_rule_packets_total{rule=\"1\"}");
    let rule2 = prometheus.value(&tb, "kbp_xdp_rule_packets_total{rule=\"2\"}");
    let udp = prometheus.value(&tb, "kbp_xdp_protocol_packets_total{protocol=\"udp\"}");
    load.signal(libc::SIGINT);
    let v = last_json(&load.finish());
    assert_eq!(drop, 300, "{v}");
    assert_eq!(drop, n(&v, "/actions/drop"), "{v}");
    assert_eq!(pass, n(&v, "/actions/pass"), "{v}");
    assert_eq!(rule1, n(&v, "/rules/0/packets"), "{v}");
    assert_eq!((rule1, rule2), (300, 200), "{v}");
    assert_eq!(udp, n(&v, "/protocols/udp"), "{v}");
}

#[test]
fn prometheus_scrapes_run_and_the_values_equal_the_json() {
    let tb = quiet_testbed();
    let prometheus = Prometheus::start(&tb);
    let mut run = Loader::start_cmd(
        &tb,
        "run",
        &[
            "--iface",
            DUT_IF,
            "--metrics",
            METRICS,
            "--json",
            "--flows",
            "3",
        ],
    );
    assert_eq!(tb.ping(false, 10), 10);
    let (echoed, sent) = tb.udp_echo_sizes(7);
    assert_eq!(echoed, sent);
    let text = promtool_accepts(&tb);
    assert!(text.contains("kbp_xsk_kernel_events_total{"), "{text}");
    // Far fewer batches than the 64 between regular hand-overs: the loop hands its top flows
    // over when it goes idle, so the endpoint shows them while it runs.
    assert!(text.contains("kbp_top_flow_packets{"), "{text}");
    prometheus.wait_scrape_after(&tb, Instant::now());
    let q =
        |what: &str| prometheus.value(&tb, &format!("kbp_loop_packets_total{{what=\"{what}\"}}"));
    let (rx, tx, echoed_now) = (q("rx"), q("tx"), q("echoed"));
    let xsk = prometheus.value(&tb, "kbp_xdp_packets_total{action=\"xsk\"}");
    run.signal(libc::SIGINT);
    let v = last_json(&run.finish());
    assert_eq!(echoed_now, 10 + sent, "{v}");
    assert_eq!(rx, n(&v, "/rx"), "{v}");
    assert_eq!(tx, n(&v, "/tx"), "{v}");
    assert_eq!(echoed_now, n(&v, "/echoed"), "{v}");
    assert_eq!(xsk, n(&v, "/xdp/xsk"), "{v}");
}

#[test]
fn a_taken_metrics_address_is_a_clear_error() {
    let tb = quiet_testbed();
    let mut holder = tb
        .in_dut("python3")
        .args([
            "-c",
            &format!(
                "import socket,time\ns=socket.socket(); s.bind(('127.0.0.1', {})); s.listen(); time.sleep(5)",
                METRICS.rsplit(':').next().unwrap()
            ),
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = tb
        .in_dut(xdp_user())
        .args([
            "load",
            "--iface",
            DUT_IF,
            "--metrics",
            METRICS,
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--metrics"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !tb.dut_xdp_attached().unwrap(),
        "nothing attached after the error"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}
