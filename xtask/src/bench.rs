//! `cargo xtask bench`: one report with every data path and its reference side by side.
//!
//! Throughput rows run on a veth testbed: `dpdk-testpmd --forward-mode=txonly` on
//! `net_af_packet` in the peer namespace generates 64-byte UDP to port 7, pinned to CPU 0; the
//! device under test is pinned to CPU 1; replies are counted (and dropped) by our XDP program
//! on the peer's interface, so every device's replies cost the peer the same. Every device
//! runs `runs` times, the devices taking turns, and each figure is the median of its runs.
//! Micro rows: the XDP program's ns/packet against a bare XDP_DROP program (BPF_PROG_TEST_RUN),
//! the packet crate's criterion figures against its naive baseline, and the DPDK app's
//! packets per second with no kernel in the loop (`net_pcap` replaying a capture) against
//! testpmd.
//!
//! It writes `target/bench/report.md`, `target/bench/report.json` and `target/bench/report.svg`,
//! and prints the table. These machines are noisy: compare rows of one report, never a figure
//! with one written down earlier.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use xtask::cmd::{build_release, cmd, root, run};
use xtask::testbed::{DUT_IF, DUT_MAC, Options, PEER_IF, Testbed};

pub struct BenchOptions {
    pub quick: bool,
}

#[derive(Clone, Debug)]
struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    loss: Option<f64>,
    reference: Option<String>,
    ratio: Option<f64>,
    note: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dut {
    KernelUdp,
    AfXdpEcho,
    XdpDrop,
    DpdkEcho(&'static str),
    TestpmdMacswap(&'static str),
}

const AF_PACKET: &str = "net_af_packet0,iface=dut0";
const AF_XDP: &str = "net_af_xdp0,iface=dut0,start_queue=0,queue_count=1";

impl Dut {
    fn name(&self) -> String {
        match self {
            Dut::KernelUdp => "kernel UDP echo (recvmmsg/sendmmsg, epoll)".into(),
            Dut::AfXdpEcho => "xdp-user run (AF_XDP echo)".into(),
            Dut::XdpDrop => "xdp-user load (XDP drop in the kernel)".into(),
            Dut::DpdkEcho(v) => format!("dpdk-app echo, {}", vdev_name(v)),
            Dut::TestpmdMacswap(v) => format!("testpmd macswap, {}", vdev_name(v)),
        }
    }

    /// DPDK ports have no kernel address; the kernel and AF_XDP devices need one.
    fn needs_kernel_address(&self) -> bool {
        matches!(self, Dut::KernelUdp | Dut::AfXdpEcho | Dut::XdpDrop)
    }
}

fn vdev_name(v: &str) -> &'static str {
    if v.starts_with("net_af_xdp") {
        "net_af_xdp"
    } else {
        "net_af_packet"
    }
}

struct Bins {
    xdp_user: PathBuf,
    dpdk_app: PathBuf,
    xtask: PathBuf,
}

pub fn bench(opts: &BenchOptions) -> Result<()> {
    xtask::setup::setup(true)?;
    if !xtask::setup::is_root() {
        bail!("the benchmark needs root (network namespaces, XDP, DPDK); run it as root");
    }
    let release = build_release(&["xdp-user", "dpdk-app", "xtask"])?;
    let bins = Bins {
        xdp_user: release.join("xdp-user"),
        dpdk_app: release.join("dpdk-app"),
        xtask: release.join("xtask"),
    };
    let (runs, seconds) = if opts.quick { (1, 3.0) } else { (3, 10.0) };
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let mut rows = Vec::new();

    // Throughput: the devices take turns, `runs` rounds.
    let duts = [
        Dut::KernelUdp,
        Dut::AfXdpEcho,
        Dut::DpdkEcho(AF_PACKET),
        Dut::TestpmdMacswap(AF_PACKET),
        Dut::DpdkEcho(AF_XDP),
        Dut::TestpmdMacswap(AF_XDP),
        Dut::XdpDrop,
    ];
    let mut samples: Vec<Vec<(u64, u64)>> = vec![Vec::new(); duts.len()];
    for round in 0..runs {
        for (i, dut) in duts.iter().enumerate() {
            eprintln!("bench: round {}/{runs}: {}", round + 1, dut.name());
            let s = throughput(&bins, *dut, seconds)
                .with_context(|| format!("benchmark of {}", dut.name()))?;
            eprintln!("bench:   offered {} echoed/handled {}", s.0, s.1);
            samples[i].push(s);
        }
    }
    let reference_of = |dut: &Dut| match dut {
        Dut::DpdkEcho(v) => Some(Dut::TestpmdMacswap(v)),
        Dut::KernelUdp | Dut::AfXdpEcho => Some(Dut::TestpmdMacswap(AF_XDP)),
        _ => None,
    };
    let mut mpps_of = Vec::new();
    for (i, dut) in duts.iter().enumerate() {
        let mut handled: Vec<f64> = samples[i]
            .iter()
            .map(|s| s.1 as f64 / seconds / 1e6)
            .collect();
        let mut loss: Vec<f64> = samples[i]
            .iter()
            .map(|s| 1.0 - s.1 as f64 / (s.0.max(1)) as f64)
            .collect();
        let mpps = median(&mut handled);
        let loss = median(&mut loss).max(0.0);
        mpps_of.push((*dut, mpps));
        let note = if loss < 0.02 {
            "keeps up: the generator is the limit".to_string()
        } else {
            format!("{:.1}% of the offered load lost", loss * 100.0)
        };
        rows.push(Row {
            name: dut.name(),
            value: mpps,
            unit: "Mpps",
            loss: Some(loss),
            reference: reference_of(dut).map(|r| r.name()),
            ratio: None,
            note,
        });
    }
    for row in rows.iter_mut() {
        if let Some(r) = &row.reference
            && let Some((_, ref_mpps)) = mpps_of.iter().find(|(d, _)| d.name() == *r)
        {
            row.ratio = Some(row.value / ref_mpps.max(1e-9));
        }
    }

    rows.extend(generator_rows(&bins, seconds, &mpps_of)?);
    rows.extend(xdp_cost(&bins, opts.quick)?);
    rows.extend(criterion_rows(opts.quick)?);
    rows.extend(dpdk_cpu_rows(
        &bins,
        if opts.quick { 2.0 } else { 5.0 },
        runs,
    )?);

    let md = report_md(&rows, runs, seconds);
    std::fs::write(out_dir.join("report.md"), &md)?;
    std::fs::write(out_dir.join("report.json"), report_json(&rows).to_string())?;
    std::fs::write(out_dir.join("report.svg"), report_svg(&rows))?;
    println!("{md}");
    println!(
        "bench: wrote {} (and report.json, report.svg)",
        out_dir.join("report.md").display()
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Starts `xdp-user SUBCOMMAND --iface IFACE EXTRA... --duration SECS --json` quietly, with
/// no interval lines (the JSON summary on exit is what the benchmark reads).
fn xdp_user_quiet(
    mut c: Command,
    subcommand: &str,
    iface: &str,
    extra: &[&str],
    seconds: &str,
) -> Result<Child> {
    c.args([subcommand, "--iface", iface]).args(extra).args([
        "--duration",
        seconds,
        "--interval",
        "100",
        "--json",
    ]);
    spawn_quiet(&mut c)
}

fn spawn_quiet(c: &mut Command) -> Result<Child> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start a benchmark process")
}

fn last_json(out: &std::process::Output) -> Result<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| {
        format!(
            "no JSON summary: {line:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One throughput run: returns (offered by the generator, echoed back / handled).
fn throughput(bins: &Bins, dut: Dut, seconds: f64) -> Result<(u64, u64)> {
    let tb = Testbed::new(&Options {
        dut_addresses: dut.needs_kernel_address(),
        ..Options::default()
    })?;
    let pid = std::process::id();
    let run_for = format!("{}", seconds + 3.0);
    // Replies are counted, and dropped, by XDP on the peer interface. Only IP: ARP must still
    // reach the peer's kernel, or a kernel-stack device could never resolve where to reply.
    let sink_duration = format!("{}", seconds + 2.5);
    let sink = xdp_user_quiet(
        tb.in_peer(path_str(&bins.xdp_user)?),
        "load",
        PEER_IF,
        &["--rule", "action drop"],
        &sink_duration,
    )?;
    let dut_child = match dut {
        Dut::KernelUdp => spawn_quiet(
            tb.in_dut("taskset")
                .args([
                    "-c",
                    "1",
                    path_str(&bins.xtask)?,
                    "udp-echo-server",
                    "--addr",
                ])
                .arg(format!("{}:7", xtask::testbed::DUT_IPV4))
                .args(["--seconds", &run_for]),
        )?,
        Dut::AfXdpEcho => xdp_user_quiet(
            tb.in_dut(path_str(&bins.xdp_user)?),
            "run",
            DUT_IF,
            &["--cores", "1"],
            &run_for,
        )?,
        Dut::XdpDrop => xdp_user_quiet(
            tb.in_dut(path_str(&bins.xdp_user)?),
            "load",
            DUT_IF,
            &["--default", "drop"],
            &run_for,
        )?,
        Dut::DpdkEcho(vdev) => spawn_quiet(tb.in_dut(path_str(&bins.dpdk_app)?).args([
            "--lcores=(0,1)@1",
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--file-prefix",
            &format!("kbpbd{pid}"),
            "--vdev",
            vdev,
            "--",
            "--duration",
            &run_for,
            "--interval",
            "100",
            "--json",
        ]))?,
        Dut::TestpmdMacswap(vdev) => spawn_quiet(tb.in_dut("timeout").args(testpmd_args(
            &run_for,
            1,
            &format!("kbpbt{pid}"),
            vdev,
            8192,
            "100",
            &["--forward-mode=macswap"],
        )))?,
    };
    std::thread::sleep(Duration::from_secs(2));
    let gen_out = tb
        .in_peer("timeout")
        .args(testpmd_args(
            &format!("{seconds}"),
            0,
            &format!("kbpbg{pid}"),
            &format!("net_af_packet0,iface={PEER_IF}"),
            4096,
            "100",
            &[
                "--forward-mode=txonly",
                "--txpkts=64",
                "--tx-ip=198.18.0.1,198.18.0.2",
                "--tx-udp=1024,7",
                &format!("--eth-peer=0,{DUT_MAC}"),
            ],
        ))
        .output()
        .context("could not run the dpdk-testpmd generator")?;
    let dut_out = dut_child.wait_with_output()?;
    let sink_out = sink.wait_with_output()?;
    let gen_text = String::from_utf8_lossy(&gen_out.stdout);
    let offered: u64 = gen_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("TX-packets:"))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .next_back()
        .with_context(|| format!("the generator printed no TX count: {gen_text}"))?;
    let handled = if dut == Dut::XdpDrop {
        last_json(&dut_out)?
            .pointer("/actions/drop")
            .and_then(|x| x.as_u64())
            .unwrap_or(0)
    } else {
        last_json(&sink_out)?
            .pointer("/actions/drop")
            .and_then(|x| x.as_u64())
            .unwrap_or(0)
    };
    Ok((offered, handled))
}

/// The arguments of `timeout -s INT SECS dpdk-testpmd ...`: lcores 0 and 1 on CPU `cpu`, no
/// hugepages, one `vdev`, `mbufs` mbufs, stats every `stats_period` seconds, and the
/// forwarding options `fwd`.
fn testpmd_args(
    seconds: &str,
    cpu: u32,
    prefix: &str,
    vdev: &str,
    mbufs: u32,
    stats_period: &str,
    fwd: &[&str],
) -> Vec<String> {
    let mut v: Vec<String> = [
        "-s",
        "INT",
        seconds,
        "dpdk-testpmd",
        &format!("--lcores=(0,1)@{cpu}"),
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--file-prefix",
        prefix,
        "--vdev",
        vdev,
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(fwd.iter().map(|s| s.to_string()));
    v.extend([
        "--stats-period".to_string(),
        stats_period.to_string(),
        format!("--total-num-mbufs={mbufs}"),
        "--no-mlockall".to_string(),
    ]);
    v
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non UTF-8 path")
}

/// `xdp-user gen`: the rate it offers into an XDP drop (beside testpmd txonly's, measured by
/// the XDP drop row), and the latency it measures through our AF_XDP echo at 100 kpps.
fn generator_rows(bins: &Bins, seconds: f64, mpps_of: &[(Dut, f64)]) -> Result<Vec<Row>> {
    let xdp_user = path_str(&bins.xdp_user)?;
    let secs = format!("{seconds}");
    let generator = |tb: &Testbed, extra: &[&str]| {
        let mut c = tb.gen_from_peer(xdp_user, xtask::testbed::DUT_IPV4);
        c.args(["--core", "0", "--json", "--duration", &secs])
            .args(extra);
        c
    };
    let run_for = format!("{}", seconds + 3.0);

    // Offered rate: the device drops everything in XDP and counts it.
    let tb = Testbed::new(&Options::default())?;
    let sink = xdp_user_quiet(
        tb.in_dut(xdp_user),
        "load",
        DUT_IF,
        &["--default", "drop"],
        &run_for,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let g = generator(&tb, &[]).output()?;
    let gv = last_json(&g)?;
    let arrived = last_json(&sink.wait_with_output()?)?
        .pointer("/actions/drop")
        .and_then(|x| x.as_u64())
        .unwrap_or(0);
    let gen_secs = gv["seconds"].as_f64().unwrap_or(seconds).max(1e-9);
    let gen_mpps = arrived as f64 / gen_secs / 1e6;
    drop(tb);
    let testpmd = mpps_of
        .iter()
        .find(|(d, _)| *d == Dut::XdpDrop)
        .map(|(_, m)| *m);

    // Latency through our AF_XDP echo at a rate it keeps up with.
    let tb = Testbed::new(&Options::default())?;
    let echo = xdp_user_quiet(
        tb.in_dut(xdp_user),
        "run",
        DUT_IF,
        &["--cores", "1"],
        &run_for,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let l = generator(&tb, &["--rate", "100000"]).output()?;
    let lv = last_json(&l)?;
    let _ = echo.wait_with_output();
    let lat = |k: &str| lv["latency_us"][k].as_u64().unwrap_or(0);
    Ok(vec![
        Row {
            name: "xdp-user gen, offered into XDP drop".into(),
            value: gen_mpps,
            unit: "Mpps",
            loss: None,
            reference: Some(Dut::XdpDrop.name() + " fed by testpmd txonly"),
            ratio: testpmd.map(|t| gen_mpps / t.max(1e-9)),
            note: "the generator's own rate".into(),
        },
        Row {
            name: "xdp-user gen -> xdp-user run echo at 100 kpps".into(),
            value: lv["pps_received"].as_f64().unwrap_or(0.0) / 1e6,
            unit: "Mpps",
            loss: lv["loss"].as_f64(),
            reference: None,
            ratio: None,
            note: format!(
                "round-trip latency p50 {} us, p99 {} us, max {} us",
                lat("p50"),
                lat("p99"),
                lat("max")
            ),
        },
    ])
}

/// The XDP program's ns/packet with 1, 16 and 256 rules against the bare XDP_DROP program,
/// and how long a reload of 256 rules takes to be in force (the atomic A/B switch).
fn xdp_cost(bins: &Bins, quick: bool) -> Result<Vec<Row>> {
    let repeat = if quick { "200000" } else { "2000000" };
    let rules16: Vec<String> = (0..15)
        .map(|i| format!("proto tcp dport {} action drop", 1000 + i))
        .chain(std::iter::once("proto udp dport 7 action pass".into()))
        .collect();
    // Every key, both families, distinct prefixes and ranges: the largest tables a set makes.
    let rules256: Vec<String> = (0..256u32)
        .map(|i| match i % 4 {
            0 => format!(
                "src 198.18.{}.0/24 proto udp dport {}-{} action drop",
                i % 256,
                i * 200,
                i * 200 + 99
            ),
            1 => format!("proto tcp sport {} action pass", 1000 + i),
            2 => format!("dst 2001:db8:{i:x}::/48 proto udp frag first action drop"),
            _ => format!("proto icmp icmp-type {} action drop", i % 256),
        })
        .collect();
    let mut rows = Vec::new();
    for (label, rules) in [
        ("1 rule", vec!["proto udp dport 7 action pass".to_string()]),
        ("16 rules", rules16),
        ("256 rules", rules256),
    ] {
        let mut c = Command::new(&bins.xdp_user);
        c.args(["cost", "--repeat", repeat, "--json"]);
        for r in &rules {
            c.args(["--rule", r]);
        }
        let out = c.output()?;
        if !out.status.success() {
            bail!(
                "xdp-user cost failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v = last_json(&out)?;
        let row = v["rows"]
            .as_array()
            .and_then(|r| r.first())
            .context("xdp-user cost gave no rows")?;
        let filter = row["filter_ns"].as_f64().unwrap_or(0.0);
        let bare = row["bare_ns"].as_f64().unwrap_or(0.0);
        rows.push(Row {
            name: format!("XDP program, {label}, UDP/IPv4 (BPF_PROG_TEST_RUN)"),
            value: filter,
            unit: "ns/pkt",
            loss: None,
            reference: Some(format!("bare XDP_DROP program: {bare:.0} ns")),
            ratio: Some(filter / bare.max(1.0)),
            note: String::new(),
        });
        if rules.len() == 256 {
            let ms = |k: &str| v["reload_ms"][k].as_f64().unwrap_or(f64::NAN);
            rows.push(Row {
                name: "rule reload, 256 rules: until the new set is in force".into(),
                value: ms("in_force_median"),
                unit: "ms",
                loss: None,
                reference: Some("goal: 10 ms".into()),
                ratio: Some(ms("in_force_median") / 10.0),
                note: format!(
                    "old set retired (RCU grace period, in the background) after {:.1} ms",
                    ms("retired_median")
                ),
            });
        }
    }
    Ok(rows)
}

/// The packet crate's echo against its naive baseline (criterion, same run).
fn criterion_rows(quick: bool) -> Result<Vec<Row>> {
    let time = if quick { "1" } else { "3" };
    run(&mut cmd(
        "cargo",
        [
            "bench",
            "--locked",
            "-p",
            "packet",
            "--bench",
            "packet",
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            time,
            "echo/(ours|naive)/(udp4|icmp4)_64B",
        ],
    ))?;
    let estimate = |id: &str| -> Result<f64> {
        let p = root().join(format!("target/criterion/{id}/new/estimates.json"));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p)?)
            .with_context(|| format!("bad {}", p.display()))?;
        v.pointer("/mean/point_estimate")
            .and_then(|x| x.as_f64())
            .context("no mean estimate")
    };
    let mut rows = Vec::new();
    for frame in ["udp4_64B", "icmp4_64B"] {
        let ours = estimate(&format!("echo/ours/{frame}"))?;
        let naive = estimate(&format!("echo/naive/{frame}"))?;
        rows.push(Row {
            name: format!("packet crate echo, {frame} (criterion)"),
            value: ours,
            unit: "ns/pkt",
            loss: None,
            reference: Some(format!("naive decode + full checksums: {naive:.0} ns")),
            ratio: Some(ours / naive),
            note: String::new(),
        });
    }
    Ok(rows)
}

/// The DPDK app with no kernel in the loop: `net_pcap` replaying 64-byte UDP, one lcore,
/// ours (reflect) against testpmd macswap.
fn dpdk_cpu_rows(bins: &Bins, seconds: f64, runs: u32) -> Result<Vec<Row>> {
    let pcap = root().join("target/bench/udp64.pcap");
    write_pcap(&pcap)?;
    let vdev = format!(
        "net_pcap0,rx_pcap={},tx_pcap=/dev/null,infinite_rx=1",
        pcap.display()
    );
    let pid = std::process::id();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let out = Command::new(&bins.dpdk_app)
            .args([
                "--lcores=(0,1)@1",
                "--no-huge",
                "-m",
                "256",
                "--no-pci",
                "--file-prefix",
                &format!("kbpbp{pid}"),
                "--vdev",
                &vdev,
                "--",
                "--action",
                "reflect",
                "--duration",
                &format!("{seconds}"),
                "--interval",
                "100",
                "--json",
            ])
            .output()?;
        let v = last_json(&out)?;
        ours.push(v["tx"].as_f64().unwrap_or(0.0) / v["seconds"].as_f64().unwrap_or(1.0) / 1e6);
        let out = Command::new("timeout")
            .args(testpmd_args(
                &format!("{}", seconds + 1.0),
                1,
                &format!("kbpbq{pid}"),
                &vdev,
                8192,
                "1",
                &["--forward-mode=macswap"],
            ))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // The steady-state rate: the largest of the per-second Tx-pps figures.
        let pps = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Tx-pps:"))
            .filter_map(|r| r.split_whitespace().next()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        theirs.push(pps / 1e6);
    }
    let (o, t) = (median(&mut ours), median(&mut theirs));
    Ok(vec![
        Row {
            name: "dpdk-app reflect, net_pcap replay, no kernel (1 lcore)".into(),
            value: o,
            unit: "Mpps",
            loss: None,
            reference: Some("testpmd macswap, same vdev".into()),
            ratio: Some(o / t.max(1e-9)),
            note: "full parse + IP/port swap per packet; macswap swaps MACs only".into(),
        },
        Row {
            name: "testpmd macswap, net_pcap replay, no kernel (1 lcore)".into(),
            value: t,
            unit: "Mpps",
            loss: None,
            reference: None,
            ratio: None,
            note: String::new(),
        },
    ])
}

/// A pcap of 1024 copies of the captured UDP echo request, padded to 60 bytes.
fn write_pcap(path: &Path) -> Result<()> {
    let mut frame = packet::fixtures::UDP4_ECHO_REQUEST.to_vec();
    frame.resize(60, 0);
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..1024u32 {
        for v in [0u32, i, frame.len() as u32, frame.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn report_md(rows: &[Row], runs: u32, seconds: f64) -> String {
    let mut s = format!(
        "# Benchmark report\n\nMachine: {} ({} CPUs), kernel {}. Throughput rows: median of {runs} \
         run(s) of {seconds} s each, devices taking turns; 64-byte UDP from a dpdk-testpmd txonly \
         generator on CPU 0, device under test on CPU 1, replies counted by XDP on the peer.\n\n\
         | row | figure | loss | reference | ratio | note |\n|---|---|---|---|---|---|\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release()
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.3} {} | {} | {} | {} | {} |\n",
            r.name,
            r.value,
            r.unit,
            r.loss.map_or("".into(), |l| format!("{:.2}%", l * 100.0)),
            r.reference.clone().unwrap_or_default(),
            r.ratio.map_or("".into(), |x| format!("{x:.2}")),
            r.note
        ));
    }
    s
}

fn report_json(rows: &[Row]) -> serde_json::Value {
    serde_json::json!({
        "machine": {"cpu": cpu_model(), "kernel": kernel_release()},
        "rows": rows.iter().map(|r| serde_json::json!({
            "name": r.name,
            "mpps": if r.unit == "Mpps" { Some(r.value) } else { None },
            "ns_per_packet": if r.unit == "ns/pkt" { Some(r.value) } else { None },
            "loss": r.loss,
            "reference": r.reference,
            "ratio": r.ratio,
            "note": r.note,
        })).collect::<Vec<_>>(),
    })
}

/// A horizontal bar chart of the Mpps rows.
fn report_svg(rows: &[Row]) -> String {
    let bars: Vec<&Row> = rows.iter().filter(|r| r.unit == "Mpps").collect();
    let max = bars
        .iter()
        .map(|r| r.value)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let (w, bar_h, left) = (900.0, 26.0, 420.0);
    let h = 40.0 + bars.len() as f64 * (bar_h + 8.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n<text x=\"10\" y=\"20\" \
         font-weight=\"bold\">Packets per second (Mpps), same run</text>\n"
    );
    for (i, r) in bars.iter().enumerate() {
        let y = 32.0 + i as f64 * (bar_h + 8.0);
        let len = (w - left - 80.0) * r.value / max;
        let colour = if r.name.starts_with("testpmd") {
            "#999999"
        } else {
            "#2b6cb0"
        };
        s.push_str(&format!(
            "<text x=\"10\" y=\"{:.0}\">{}</text>\n<rect x=\"{left}\" y=\"{y:.0}\" width=\"{len:.1}\" \
             height=\"{bar_h}\" fill=\"{colour}\"/>\n<text x=\"{:.0}\" y=\"{:.0}\">{:.3}</text>\n",
            y + 17.0,
            xml_escape(&r.name),
            left + len + 6.0,
            y + 17.0,
            r.value
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
