//! `cargo xtask bench`: one report with every data path and its reference side by side.
//!
//! Throughput rows run on a veth testbed where the **device under test is the limit**
//! (`shared/docs/testbed.md`): GRO and threaded NAPI on both ends, the DUT end's NAPI thread
//! pinned with the device under test on CPU 1, the peer end's with the generator on CPU 0. On a
//! plain veth pair the receive work of every packet runs in the softirq of the CPU that sent
//! it, so half of the device's work would be charged to the generator and every device would
//! "keep up". One generator for every row: `xdp-user gen`, 64-byte UDP to port 7 over 16 flows,
//! as fast as it can (the device overloaded), or with `--offered-pps` at one fixed rate for
//! every echo row (the XDP drop row always gets all it can send). Every row is measured the
//! same way, from the veth counters over a window after a warm-up: offered = what the peer end
//! sent into the DUT end (what its receive ring took), echoed = what came back to it (so a
//! `macswap` reply, which our generator cannot match, counts like any other), plus CPU 1's busy
//! share from `/proc/stat`. The devices take turns, `runs` rounds, and each figure is the
//! median of its rounds.
//!
//! Other rows: the generator itself against `dpdk-testpmd --forward-mode=txonly` on the same
//! kernel paths; the XDP program's ns/packet against a bare XDP_DROP program and against
//! xdp-tools' `xdp-filter` (BPF_PROG_TEST_RUN); the packet crate's criterion figures against
//! smoltcp; the DPDK app with no kernel in the loop (`net_pcap` replaying a capture) against
//! testpmd, both from per-second port counters.
//!
//! It writes `target/bench/report.md`, `target/bench/report.json` and `target/bench/report.svg`,
//! and prints the table. These machines are noisy: compare rows of one report, never a figure
//! with one written down earlier. Goals are ratios within the report; a row that falls short
//! says so.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use xtask::cmd::{build_release, cmd, root, run};
use xtask::median;
use xtask::testbed::{DUT_IF, DUT_MAC, Options, PEER_IF, Testbed};

pub struct BenchOptions {
    pub quick: bool,
    /// The rate every echo row is offered, in packets per second; `None`: as fast as the
    /// generator can send (every device overloaded).
    pub offered_pps: Option<f64>,
    /// Only the rows whose name contains one of these (all when empty).
    pub only: Vec<String>,
}

/// The CPUs of the two sides: the generator (and the peer's NAPI thread), the device under test
/// (and the DUT's NAPI thread).
const GEN_CPU: usize = 0;
const DUT_CPU: usize = 1;

#[derive(Clone, Debug, Default)]
struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    /// Throughput rows: what the generator offered (Mpps), the share not echoed, and the busy
    /// share of the device under test's CPU.
    offered: Option<f64>,
    loss: Option<f64>,
    dut_cpu: Option<f64>,
    reference: Option<String>,
    ratio: Option<f64>,
    /// The ratio this row should reach (at least, or at most for costs).
    goal: Option<Goal>,
    note: String,
}

#[derive(Clone, Copy, Debug)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(&self, ratio: f64) -> bool {
        match *self {
            Goal::AtLeast(g) => ratio >= g,
            Goal::AtMost(g) => ratio <= g,
        }
    }

    fn text(&self) -> String {
        match *self {
            Goal::AtLeast(g) => format!(">= {g:.2}"),
            Goal::AtMost(g) => format!("<= {g:.2}"),
        }
    }
}

/// A ratio to two decimals, or to as many more as it takes not to round it onto the other
/// side of its goal (0.998 against ">= 1.00" printed "1.00 ... SHORT").
fn ratio_text(x: f64, goal: Option<Goal>) -> String {
    (2..=6)
        .map(|digits| format!("{x:.digits$}"))
        .find(|t| goal.is_none_or(|g| g.met(t.parse().unwrap_or(x)) == g.met(x)))
        .unwrap_or_else(|| format!("{x}"))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dut {
    KernelUdp,
    /// `xdp-user run` with an action, and whether `--busy-poll`.
    AfXdp(&'static str, bool),
    /// `xdp-user run --action echo` with `--capture /dev/null`: every frame received and sent
    /// copied into the capture ring and written as pcapng by the writer thread (whole process
    /// on the DUT's CPU, so the writer's work is counted too).
    AfXdpCapture,
    XdpDrop,
    /// `dpdk-app --action ACTION` on a vdev.
    Dpdk(&'static str, &'static str),
    /// `dpdk-testpmd --forward-mode=MODE` on a vdev.
    Testpmd(&'static str, &'static str),
}

const AF_PACKET: &str = "net_af_packet0,iface=dut0";
const AF_XDP: &str = "net_af_xdp0,iface=dut0,start_queue=0,queue_count=1";

impl Dut {
    fn name(&self) -> String {
        match self {
            Dut::KernelUdp => "kernel UDP echo (recvmmsg/sendmmsg, epoll)".into(),
            Dut::AfXdp(action, false) => format!("xdp-user run --action {action} (AF_XDP)"),
            Dut::AfXdp(action, true) => {
                format!("xdp-user run --action {action} --busy-poll (AF_XDP)")
            }
            Dut::AfXdpCapture => {
                "xdp-user run --action echo --capture /dev/null (AF_XDP, capture on)".into()
            }
            Dut::XdpDrop => "xdp-user load --default drop (XDP, in the kernel)".into(),
            Dut::Dpdk(action, v) => format!("dpdk-app --action {action}, {}", vdev_name(v)),
            Dut::Testpmd(mode, v) => format!("testpmd {mode}, {}", vdev_name(v)),
        }
    }

    /// DPDK ports have no kernel address; the kernel and AF_XDP devices need one.
    fn needs_kernel_address(&self) -> bool {
        matches!(
            self,
            Dut::KernelUdp | Dut::AfXdp(..) | Dut::AfXdpCapture | Dut::XdpDrop
        )
    }

    /// The rate the generator sends at: `asked` for every echo row; the XDP drop row gets
    /// everything it can send, to show whether the program keeps up.
    fn offered_rate(&self, asked: Option<f64>) -> Option<f64> {
        asked.filter(|_| *self != Dut::XdpDrop)
    }

    /// The row this one is compared with, and the ratio it should reach.
    fn reference(&self) -> Option<(Dut, Option<Goal>)> {
        match *self {
            Dut::AfXdp(_, false) => {
                Some((Dut::Testpmd("5tswap", AF_XDP), Some(Goal::AtLeast(1.2))))
            }
            // Busy polling must never cost throughput against the default.
            Dut::AfXdp(action, true) => Some((Dut::AfXdp(action, false), Some(Goal::AtLeast(1.0)))),
            Dut::Dpdk(_, v) => Some((Dut::Testpmd("5tswap", v), Some(Goal::AtLeast(1.0)))),
            Dut::Testpmd("macswap", v) => Some((Dut::Testpmd("5tswap", v), None)),
            Dut::KernelUdp => Some((Dut::AfXdp("echo", false), None)),
            // What capturing every frame costs; off, the loop pays one branch per frame.
            Dut::AfXdpCapture => Some((Dut::AfXdp("echo", false), None)),
            _ => None,
        }
    }
}

fn vdev_name(v: &str) -> &'static str {
    if v.starts_with("net_af_xdp") {
        "net_af_xdp"
    } else if v.starts_with("net_pcap") {
        "net_pcap"
    } else {
        "net_af_packet"
    }
}

struct Bins {
    xdp_user: PathBuf,
    dpdk_app: PathBuf,
    xtask: PathBuf,
}

/// testpmd leaves its EAL runtime directory (`/var/run/dpdk/PREFIX`) behind when it exits;
/// every bench run left three. Removed when the bench ends, also on error: every testpmd it
/// started has ended by then.
struct TestpmdRuntimeDirs;

impl Drop for TestpmdRuntimeDirs {
    fn drop(&mut self) {
        let pid = std::process::id();
        for kind in ["t", "q", "g"] {
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/kbpb{kind}{pid}"));
        }
    }
}

pub fn bench(opts: &BenchOptions) -> Result<()> {
    xtask::setup::setup(true)?;
    if !xtask::setup::is_root() {
        bail!("the benchmark needs root (network namespaces, XDP, DPDK); run it as root");
    }
    let _runtime_dirs = TestpmdRuntimeDirs;
    let release = build_release(&["xdp-user", "dpdk-app", "xtask"])?;
    let bins = Bins {
        xdp_user: release.join("xdp-user"),
        dpdk_app: release.join("dpdk-app"),
        xtask: release.join("xtask"),
    };
    let (runs, seconds) = if opts.quick { (1, 3.0) } else { (3, 10.0) };
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let wanted = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| name.contains(o));
    let mut rows = Vec::new();
    let mut not_measured = vec![XDPDUMP_NOT_MEASURED.to_string()];

    // Throughput with the device as the limit: the devices take turns, `runs` rounds.
    let duts: Vec<Dut> = [
        Dut::AfXdp("echo", false),
        Dut::AfXdp("reflect", false),
        Dut::AfXdp("echo", true),
        Dut::AfXdpCapture,
        Dut::Dpdk("echo", AF_XDP),
        Dut::Dpdk("reflect", AF_XDP),
        Dut::Testpmd("5tswap", AF_XDP),
        Dut::Testpmd("macswap", AF_XDP),
        Dut::Dpdk("echo", AF_PACKET),
        Dut::Testpmd("5tswap", AF_PACKET),
        Dut::KernelUdp,
        Dut::XdpDrop,
    ]
    .into_iter()
    .filter(|d| wanted(&d.name()))
    .collect();
    let mut samples: Vec<Vec<Window>> = vec![Vec::new(); duts.len()];
    for round in 0..runs {
        for (i, dut) in duts.iter().enumerate() {
            eprintln!("bench: round {}/{runs}: {}", round + 1, dut.name());
            let w = throughput(&bins, *dut, seconds, opts.offered_pps)
                .with_context(|| format!("benchmark of {}", dut.name()))?;
            eprintln!(
                "bench:   offered {:.3} Mpps, arrived {:.3} Mpps, echoed {:.3} Mpps, CPU {DUT_CPU} \
                 busy {:.0}%",
                w.offered_mpps(),
                w.arrived_mpps(),
                w.echoed_mpps(),
                w.dut_busy * 100.0
            );
            samples[i].push(w);
        }
    }
    let mut mpps_of: Vec<(Dut, f64)> = Vec::new();
    // Per device: `run --busy-poll` found nothing to busy-poll in some round.
    let busy_poll_unavailable: Vec<bool> = samples
        .iter()
        .map(|s| s.iter().any(|w| w.busy_poll_unavailable))
        .collect();
    for (i, dut) in duts.iter().enumerate() {
        let pick = |f: &dyn Fn(&Window) -> f64| {
            let mut v: Vec<f64> = samples[i].iter().map(f).collect();
            median(&mut v)
        };
        // A drop answers nothing: what it handled is what reached it.
        let handled = |w: &Window| match dut {
            Dut::XdpDrop => w.arrived_mpps(),
            _ => w.echoed_mpps(),
        };
        let (mpps, offered, busy) = (
            pick(&handled),
            pick(&|w| w.offered_mpps()),
            pick(&|w| w.dut_busy),
        );
        let loss = (1.0 - mpps / offered.max(1e-9)).max(0.0);
        mpps_of.push((*dut, mpps));
        if busy_poll_unavailable[i] {
            not_measured.push(BUSY_POLL_NOT_MEASURED.to_string());
        }
        // A round in which the device answered nothing it was offered is a fault (it happened
        // once to the kernel echo, whose ARP lost to the flood), not a slow device: said so,
        // instead of a cost per packet that divides by zero.
        let silent = samples[i]
            .iter()
            .filter(|w| handled(w) == 0.0 && w.offered_mpps() > 0.0)
            .count();
        let note = if silent > 0 {
            format!(
                "FAULT: handled nothing of what it was offered in {silent} of {} round(s), \
                 so the figure is not what the device costs",
                samples[i].len()
            )
        } else if loss < 0.02 {
            "keeps up with the generator: the generator is the limit".to_string()
        } else if busy > 0.95 {
            format!(
                "the device is the limit: CPU {DUT_CPU} busy, {:.0} ns of it per echoed packet",
                busy * 1e3 / mpps.max(1e-9)
            )
        } else {
            format!("loses {:.0}% with CPU {DUT_CPU} not busy", loss * 100.0)
        };
        rows.push(Row {
            name: dut.name(),
            value: mpps,
            unit: "Mpps",
            offered: Some(offered),
            loss: Some(loss),
            dut_cpu: Some(busy),
            note: if busy_poll_unavailable[i] {
                format!(
                    "busy polling unavailable: the AF_XDP socket has no NAPI id on veth, so \
                     `run` polled as without --busy-poll (it says so); {note}"
                )
            } else if *dut == Dut::XdpDrop {
                format!(
                    "{note}; offered all the generator can send; dropped, not echoed: the \
                     figure is what reached it"
                )
            } else if let Dut::Dpdk(..) = dut {
                let yields = pick(&|w| w.idle_yields as f64);
                format!(
                    "{note}; the lcore gave its CPU up on an empty ring {yields:.0} times in a \
                     run (--idle auto; testpmd spins)"
                )
            } else {
                note
            },
            ..Row::default()
        });
    }
    for (i, dut) in duts.iter().enumerate() {
        if let Some((r, goal)) = dut.reference()
            && let Some((_, ref_mpps)) = mpps_of.iter().find(|(d, _)| *d == r)
        {
            rows[i].reference = Some(r.name());
            rows[i].ratio = Some(rows[i].value / ref_mpps.max(1e-9));
            // Without busy polling the row measures the default loop twice: its ratio says
            // nothing about the goal.
            rows[i].goal = goal.filter(|_| !busy_poll_unavailable[i]);
        }
    }

    if wanted("generator") {
        rows.extend(generator_rows(&bins, seconds, runs)?);
    }
    if wanted("XDP program") {
        rows.extend(xdp_cost(&bins, opts.quick, &mut not_measured)?);
    }
    if wanted("packet crate") {
        rows.extend(criterion_rows(opts.quick)?);
    }
    if wanted("net_pcap") {
        rows.extend(dpdk_cpu_rows(
            &bins,
            if opts.quick { 3.0 } else { 6.0 },
            runs,
        )?);
    }

    let md = report_md(&rows, &not_measured, runs, seconds, opts.offered_pps);
    std::fs::write(out_dir.join("report.md"), &md)?;
    std::fs::write(
        out_dir.join("report.json"),
        report_json(&rows, &not_measured, runs, seconds, opts.offered_pps).to_string(),
    )?;
    std::fs::write(out_dir.join("report.svg"), report_svg(&rows))?;
    println!("{md}");
    println!(
        "bench: wrote {} (and report.json, report.svg)",
        out_dir.join("report.md").display()
    );
    Ok(())
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

/// One interface's packet counters (`ip -s -j link`).
#[derive(Clone, Copy, Debug, Default)]
struct LinkCounts {
    rx: u64,
    tx: u64,
}

fn link_counts(ns: &str, dev: &str) -> Result<LinkCounts> {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", "dev", dev])
        .output()
        .context("could not run ip")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`ip -s -j link show dev {dev}` in {ns} printed no JSON"))?;
    let get = |dir: &str| {
        v.pointer(&format!("/0/stats64/{dir}/packets"))
            .and_then(|x| x.as_u64())
            .with_context(|| format!("no {dir} packet counter for {dev} in {ns}"))
    };
    Ok(LinkCounts {
        rx: get("rx")?,
        tx: get("tx")?,
    })
}

/// (busy, total) jiffies of one CPU from `/proc/stat`; busy is all but idle and iowait.
fn cpu_jiffies(cpu: usize) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with(&format!("cpu{cpu} ")))
        .with_context(|| format!("no cpu{cpu} in /proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// What a throughput window measured: packets the peer end sent and received, what arrived
/// at the DUT end, over `seconds`, and the DUT CPU's busy share.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    offered: u64,
    echoed: u64,
    arrived: u64,
    seconds: f64,
    dut_busy: f64,
    /// `run --busy-poll` reported that it had nothing to busy-poll (the driver gives its
    /// socket no NAPI id) and polled as without the flag.
    busy_poll_unavailable: bool,
    /// `dpdk-app`: times its lcore gave its CPU up on an empty ring (`--idle`), over the run.
    idle_yields: u64,
}

impl Window {
    fn offered_mpps(&self) -> f64 {
        self.offered as f64 / self.seconds.max(1e-9) / 1e6
    }
    fn echoed_mpps(&self) -> f64 {
        self.echoed as f64 / self.seconds.max(1e-9) / 1e6
    }
    fn arrived_mpps(&self) -> f64 {
        self.arrived as f64 / self.seconds.max(1e-9) / 1e6
    }
}

/// Samples the veth counters of both ends and the DUT CPU over `seconds`.
fn measure_window(tb: &Testbed, seconds: f64) -> Result<Window> {
    let (p0, d0, c0) = (
        link_counts(&tb.peer_ns, PEER_IF)?,
        link_counts(&tb.dut_ns, DUT_IF)?,
        cpu_jiffies(DUT_CPU)?,
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (p1, d1, c1) = (
        link_counts(&tb.peer_ns, PEER_IF)?,
        link_counts(&tb.dut_ns, DUT_IF)?,
        cpu_jiffies(DUT_CPU)?,
    );
    let secs = t0.elapsed().as_secs_f64();
    Ok(Window {
        offered: p1.tx - p0.tx,
        echoed: p1.rx - p0.rx,
        arrived: d1.rx - d0.rx,
        seconds: secs,
        dut_busy: (c1.0 - c0.0) as f64 / (c1.1 - c0.1).max(1) as f64,
        busy_poll_unavailable: false,
        idle_yields: 0,
    })
}

/// Seconds between starting the generator and opening the measurement window.
const WARM_UP: f64 = 1.5;

/// A device-limited testbed (threaded NAPI on both ends).
fn device_limited_testbed(dut_addresses: bool) -> Result<Testbed> {
    Testbed::new(&Options {
        dut_addresses,
        threaded_napi: true,
        ..Options::default()
    })
}

/// `xdp-user gen` from the peer: 64-byte UDP to the DUT's port 7 over 16 flows, at `rate`
/// packets per second (as fast as it can without one), on the generator's CPU.
fn spawn_generator(bins: &Bins, tb: &Testbed, seconds: f64, rate: Option<f64>) -> Result<Child> {
    let mut c = tb.gen_from_peer(path_str(&bins.xdp_user)?, xtask::testbed::DUT_IPV4);
    c.args([
        "--flows",
        "16",
        "--size",
        "64",
        "--core",
        &GEN_CPU.to_string(),
    ])
    .args(["--duration", &format!("{seconds}"), "--json"]);
    if let Some(r) = rate {
        c.args(["--rate", &format!("{r}")]);
    }
    spawn_quiet(&mut c)
}

/// Waits for a benchmark process and fails, with its error output, if it failed.
fn finished(what: &str, child: Child) -> Result<std::process::Output> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    Ok(out)
}

/// One throughput run of `dut`, with the device as the limit.
fn throughput(bins: &Bins, dut: Dut, seconds: f64, asked: Option<f64>) -> Result<Window> {
    let tb = device_limited_testbed(dut.needs_kernel_address())?;
    let pid = std::process::id();
    let run_for = format!("{}", seconds + WARM_UP + 4.0);
    let xdp_user = path_str(&bins.xdp_user)?;
    let cpu = DUT_CPU.to_string();
    let lcores = format!("--lcores=(0,1)@{DUT_CPU}");
    if dut == Dut::KernelUdp {
        // Replies need the peer's MAC: in a full run the kernel's ARP exchange lost to the
        // flood and the row echoed nothing in 2 of 3 rounds (the entry stayed INCOMPLETE).
        tb.dut_knows_peer()?;
    }
    let dut_child = match dut {
        Dut::KernelUdp => spawn_quiet(
            tb.in_dut("taskset")
                .args([
                    "-c",
                    &cpu,
                    path_str(&bins.xtask)?,
                    "udp-echo-server",
                    "--addr",
                ])
                .arg(format!("{}:7", xtask::testbed::DUT_IPV4))
                .args(["--seconds", &run_for]),
        )?,
        Dut::AfXdp(action, busy_poll) => {
            let mut extra = vec!["--cores", &cpu, "--action", action];
            if busy_poll {
                extra.push("--busy-poll");
            }
            xdp_user_quiet(tb.in_dut(xdp_user), "run", DUT_IF, &extra, &run_for)?
        }
        Dut::AfXdpCapture => {
            let mut c = tb.in_dut("taskset");
            c.args(["-c", &cpu, xdp_user]);
            let extra = [
                "--cores",
                &cpu,
                "--action",
                "echo",
                "--capture",
                "/dev/null",
            ];
            xdp_user_quiet(c, "run", DUT_IF, &extra, &run_for)?
        }
        Dut::XdpDrop => xdp_user_quiet(
            tb.in_dut(xdp_user),
            "load",
            DUT_IF,
            &["--default", "drop"],
            &run_for,
        )?,
        Dut::Dpdk(action, vdev) => spawn_quiet(tb.in_dut(path_str(&bins.dpdk_app)?).args([
            &lcores,
            "--no-huge",
            "-m",
            "256",
            "--no-pci",
            "--file-prefix",
            &format!("kbpbd{pid}"),
            "--vdev",
            vdev,
            "--",
            "--action",
            action,
            "--duration",
            &run_for,
            "--interval",
            "100",
            "--json",
        ]))?,
        Dut::Testpmd(mode, vdev) => spawn_quiet(tb.in_dut("timeout").args(testpmd_args(
            &run_for,
            DUT_CPU,
            &format!("kbpbt{pid}"),
            vdev,
            8192,
            "1",
            &[&format!("--forward-mode={mode}")],
        )))?,
    };
    // Up and attached (DPDK and AF_XDP take a second or two); then the NAPI threads are the
    // ones that will run, and are pinned.
    std::thread::sleep(Duration::from_secs(2));
    tb.pin_napi(DUT_CPU, GEN_CPU)?;
    let generator = spawn_generator(bins, &tb, seconds + WARM_UP + 1.0, dut.offered_rate(asked))?;
    std::thread::sleep(Duration::from_secs_f64(WARM_UP));
    let mut window = measure_window(&tb, seconds)?;
    finished("the generator (xdp-user gen)", generator)?;
    let dut_out = finished(&dut.name(), dut_child)?;
    if let Dut::AfXdp(_, true) = dut {
        let report = last_json(&dut_out)?;
        window.busy_poll_unavailable = report["queues"]
            .as_array()
            .is_some_and(|qs| qs.iter().any(|q| q["busy_poll"]["state"] == "unavailable"));
    }
    if let Dut::Dpdk(..) = dut {
        window.idle_yields = last_json(&dut_out)?["idle_yields"]
            .as_u64()
            .context("dpdk-app's JSON has no idle_yields")?;
    }
    Ok(window)
}

/// The arguments of `timeout -s INT SECS dpdk-testpmd ...`: lcores 0 and 1 on CPU `cpu`, no
/// hugepages, one `vdev`, `mbufs` mbufs, stats every `stats_period` seconds, and the
/// forwarding options `fwd`.
fn testpmd_args(
    seconds: &str,
    cpu: usize,
    prefix: &str,
    vdev: &str,
    mbufs: u32,
    stats_period: &str,
    fwd: &[&str],
) -> Vec<String> {
    let mut v: Vec<String> = [
        // testpmd exits cleanly on SIGINT: its status, not timeout's 124, is the run's.
        "--preserve-status",
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Generator {
    Ours,
    /// `dpdk-testpmd --forward-mode=txonly` on a vdev of the peer interface.
    TestpmdTxonly(&'static str),
}

impl Generator {
    fn name(&self) -> String {
        match self {
            Generator::Ours => "generator: xdp-user gen (AF_XDP), 16 flows".into(),
            Generator::TestpmdTxonly(v) => format!("generator: testpmd txonly, {}", vdev_name(v)),
        }
    }
}

/// One run of a generator on CPU 0 into an XDP drop on the DUT (whose NAPI thread has CPU 1 to
/// itself, so the generator is the limit): what it put on the wire, from the peer's counters.
fn generator_window(bins: &Bins, generator: Generator, seconds: f64) -> Result<Window> {
    let tb = device_limited_testbed(true)?;
    let pid = std::process::id();
    let run_for = format!("{}", seconds + WARM_UP + 4.0);
    let sink = xdp_user_quiet(
        tb.in_dut(path_str(&bins.xdp_user)?),
        "load",
        DUT_IF,
        &["--default", "drop"],
        &run_for,
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let gen_child = match generator {
        Generator::Ours => spawn_generator(bins, &tb, seconds + WARM_UP + 1.0, None)?,
        Generator::TestpmdTxonly(vdev) => spawn_quiet(tb.in_peer("timeout").args(testpmd_args(
            &format!("{}", seconds + WARM_UP + 1.0),
            GEN_CPU,
            &format!("kbpbg{pid}"),
            &vdev.replace("dut0", PEER_IF),
            8192,
            "1",
            &[
                "--forward-mode=txonly",
                "--txpkts=64",
                "--tx-ip=198.18.0.1,198.18.0.2",
                "--tx-udp=1024,7",
                &format!("--eth-peer=0,{DUT_MAC}"),
            ],
        )))?,
    };
    // DPDK's vdev attaches to the peer interface as it starts: pin once everything runs.
    std::thread::sleep(Duration::from_secs_f64(WARM_UP));
    tb.pin_napi(DUT_CPU, GEN_CPU)?;
    let window = measure_window(&tb, seconds)?;
    finished(&generator.name(), gen_child)?;
    finished("the XDP drop sink", sink)?;
    Ok(window)
}

/// The generators side by side on the same kernel paths (`runs` rounds, medians), and the
/// latency `xdp-user gen` measures through our AF_XDP echo at 100 kpps.
fn generator_rows(bins: &Bins, seconds: f64, runs: u32) -> Result<Vec<Row>> {
    let generators = [
        Generator::Ours,
        Generator::TestpmdTxonly(AF_XDP),
        Generator::TestpmdTxonly(AF_PACKET),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); generators.len()];
    for round in 0..runs {
        for (i, g) in generators.iter().enumerate() {
            eprintln!("bench: round {}/{runs}: {}", round + 1, g.name());
            let w = generator_window(bins, *g, seconds)
                .with_context(|| format!("benchmark of {}", g.name()))?;
            eprintln!(
                "bench:   sent {:.3} Mpps, {:.3} Mpps reached the DUT",
                w.offered_mpps(),
                w.arrived_mpps()
            );
            rates[i].push(w.offered_mpps());
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    let mut rows: Vec<Row> = generators
        .iter()
        .zip(&medians)
        .map(|(g, m)| Row {
            name: g.name(),
            value: *m,
            unit: "Mpps",
            note: "sent on CPU 0 into an XDP drop with a CPU of its own".into(),
            ..Row::default()
        })
        .collect();
    rows[0].reference = Some(generators[1].name());
    rows[0].ratio = Some(medians[0] / medians[1].max(1e-9));
    let round_ratios: Vec<f64> = rates[0]
        .iter()
        .zip(&rates[1])
        .map(|(ours, theirs)| ours / theirs.max(1e-9))
        .collect();
    rows[0].note = format!("{}; {}", rows[0].note, per_round(&round_ratios));
    rows[0].goal = Some(Goal::AtLeast(1.0));
    rows[2].reference = Some(generators[1].name());
    rows[2].ratio = Some(medians[2] / medians[1].max(1e-9));

    // Latency through our AF_XDP echo at a rate it keeps up with.
    let xdp_user = path_str(&bins.xdp_user)?;
    let tb = device_limited_testbed(true)?;
    let run_for = format!("{}", seconds + 3.0);
    let echo = xdp_user_quiet(
        tb.in_dut(xdp_user),
        "run",
        DUT_IF,
        &["--cores", &DUT_CPU.to_string()],
        &run_for,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    tb.pin_napi(DUT_CPU, GEN_CPU)?;
    let l = tb
        .gen_from_peer(xdp_user, xtask::testbed::DUT_IPV4)
        .args(["--core", &GEN_CPU.to_string(), "--json", "--rate", "100000"])
        .args(["--duration", &format!("{seconds}")])
        .output()?;
    let lv = last_json(&l)?;
    finished("xdp-user run", echo)?;
    let lat = |k: &str| lv["latency_us"][k].as_u64().unwrap_or(0);
    rows.push(Row {
        name: "latency: xdp-user gen -> xdp-user run echo at 100 kpps".into(),
        value: lv["pps_received"].as_f64().unwrap_or(0.0) / 1e6,
        unit: "Mpps",
        loss: lv["loss"].as_f64(),
        note: format!(
            "round-trip latency p50 {} us, p99 {} us, max {} us",
            lat("p50"),
            lat("p99"),
            lat("max")
        ),
        ..Row::default()
    });
    Ok(rows)
}

/// The XDP program's ns/packet with 1, 16 and 256 rules against the bare XDP_DROP program,
/// and how long a reload of 256 rules takes to be in force (the atomic A/B switch).
fn xdp_cost(bins: &Bins, quick: bool, not_measured: &mut Vec<String>) -> Result<Vec<Row>> {
    let repeat = if quick { "200000" } else { "2000000" };
    // Every program is loaded this many times, each load JIT-compiled to another place in
    // memory, and each figure is the median over the loads (see `xdp-user cost --loads`).
    // Nine: single loads of one program spread over 30-46 ns on this VM, and the median of
    // five still moved by 6 ns between runs.
    let loads = if quick { 1 } else { 9 };
    // 15 TCP destination ports dropped, UDP port 7 passed: the rules xdp-filter gets too.
    let rules16 = xtask::xdp_filter::our_rules();
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
    let (filter_rows, not_loading) = xdp_filter_rows(bins, repeat, loads)?;
    rows.extend(filter_rows);
    not_measured.extend(not_loading);
    for (label, rules) in [
        ("1 rule", vec!["proto udp dport 7 action pass".to_string()]),
        ("16 rules", rules16),
        ("256 rules", rules256),
    ] {
        let mut c = Command::new(&bins.xdp_user);
        c.args(["cost", "--repeat", repeat, "--json"]);
        c.args(["--loads", &loads.to_string()]);
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
        let per_load: Vec<String> = row["filter_ns_per_load"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_f64())
                    .map(|x| format!("{x:.0}"))
                    .collect()
            })
            .unwrap_or_default();
        rows.push(Row {
            name: format!("XDP program, {label}, UDP/IPv4 (BPF_PROG_TEST_RUN)"),
            value: filter,
            unit: "ns/pkt",
            reference: Some(format!("bare XDP_DROP program: {bare:.1} ns")),
            ratio: Some(filter / bare.max(1e-3)),
            goal: (rules.len() == 16).then_some(Goal::AtMost(1.5)),
            note: format!(
                "median of {loads} load(s); each load: {} ns",
                per_load.join(" / ")
            ),
            ..Row::default()
        });
        if rules.len() == 256 {
            let ms = |k: &str| v["reload_ms"][k].as_f64().unwrap_or(f64::NAN);
            rows.push(Row {
                name: "rule reload, 256 rules: until the new set is in force".into(),
                value: ms("in_force_median"),
                unit: "ms",
                reference: Some("goal: 10 ms".into()),
                ratio: Some(ms("in_force_median") / 10.0),
                goal: Some(Goal::AtMost(1.0)),
                note: format!(
                    "old set retired (RCU grace period, in the background) after {:.1} ms",
                    ms("retired_median")
                ),
                ..Row::default()
            });
        }
    }
    Ok(rows)
}

/// The criterion id and the name of the packet crate's baseline.
const BASELINE_ID: &str = "smoltcp";
const BASELINE_NAME: &str = "smoltcp wire (check, swap, fill checksums)";

/// Our XDP program and xdp-tools' `xdp-filter` with the same 16 rules (15 TCP destination
/// ports dropped; UDP port 7 passed, which xdp-filter's allow policy does), timed alike by
/// [`xtask::xdp_filter::cost_beside_xdp_filter`]: the same frames and repeat through
/// BPF_PROG_TEST_RUN, xdp-filter attached as a user would attach it, every frame checked to get
/// the same action from both. Against xdp-filter's full program (`--features tcp,udp`, what a
/// user who filters UDP too would load) and its TCP-only one (the least it can load for these
/// rules). Also returns what xdp-bench and xdp-trafficgen said when tried.
fn xdp_filter_rows(
    bins: &Bins,
    repeat: &str,
    placements: usize,
) -> Result<(Vec<Row>, Vec<String>)> {
    let repeat: u32 = repeat.parse().context("repeat")?;
    let c = xtask::xdp_filter::cost_beside_xdp_filter(&bins.xdp_user, repeat, placements)?;
    eprintln!("{}", c.text());
    let mut rows = Vec::new();
    for r in &c.rows {
        let action = if r.action == 1 { "dropped" } else { "passed" };
        for (program, theirs) in [
            (&c.xdp_filter, r.xdp_filter_ns),
            (&c.xdp_filter_tcp, r.xdp_filter_tcp_ns),
        ] {
            rows.push(Row {
                name: format!(
                    "XDP program, 16 rules, {} ({action}), beside xdp-filter --features {}",
                    r.packet, program.features
                ),
                value: r.ours_ns,
                unit: "ns/pkt",
                reference: Some(format!(
                    "xdp-filter 1.3.1 `{}`, same rules: {theirs:.1} ns",
                    program.attached_name
                )),
                ratio: Some(r.ours_ns / theirs.max(1e-3)),
                // Three times cheaper than xdp-filter.
                goal: Some(Goal::AtMost(1.0 / 3.0)),
                // BPF_PROG_TEST_RUN's own loop is in every figure (the bare program's time):
                // the programs' own work is what is left above it, said beside the ratio.
                note: format!(
                    "median of {} loads of each; bare XDP_DROP {:.1} ns; above it: ours {:.1} \
                     ns, theirs {:.1} ns ({:.2})",
                    c.placements,
                    r.bare_ns,
                    r.ours_ns - r.bare_ns,
                    theirs - r.bare_ns,
                    (r.ours_ns - r.bare_ns) / (theirs - r.bare_ns).max(1.0)
                ),
                ..Row::default()
            });
        }
    }
    let tools = c
        .reference_tools
        .iter()
        .filter(|t| !t.loaded)
        .map(|t| format!("Not measured: {}", t.text()));
    Ok((rows, tools.collect()))
}

/// The packet crate's echo against its baseline (criterion, same run).
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
            &format!("echo/(ours|{BASELINE_ID})/(udp4|icmp4)_64B"),
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
        let naive = estimate(&format!("echo/{BASELINE_ID}/{frame}"))?;
        rows.push(Row {
            name: format!("packet crate echo, {frame} (criterion)"),
            value: ours,
            unit: "ns/pkt",
            reference: Some(format!("{BASELINE_NAME}: {naive:.1} ns")),
            ratio: Some(ours / naive),
            goal: Some(Goal::AtMost(1.0)),
            ..Row::default()
        });
    }
    Ok(rows)
}

/// The per-second TX rates a run printed, skipping its first second (start-up): testpmd's
/// `Tx-pps:` lines, or dpdk-app's port lines `... (+RX / +TX this interval)` at `t s`.
fn per_second_tx(text: &str) -> Vec<f64> {
    let testpmd: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Tx-pps:"))
        .filter_map(|r| r.split_whitespace().next()?.parse::<f64>().ok())
        .collect();
    if !testpmd.is_empty() {
        return testpmd.into_iter().skip(1).collect();
    }
    let mut out = Vec::new();
    let mut last_t = None;
    for l in text.lines() {
        let Some((t, rest)) = l.trim().split_once("s port ") else {
            continue;
        };
        let (Ok(t), Some(tx)) = (
            t.trim().parse::<f64>(),
            rest.split_once(" / +")
                .and_then(|(_, r)| r.split_whitespace().next()?.parse::<f64>().ok()),
        ) else {
            continue;
        };
        if let Some(prev) = last_t
            && t > prev
        {
            out.push(tx / (t - prev));
        }
        last_t = Some(t);
    }
    out.into_iter().skip(1).collect()
}

/// The DPDK app with no kernel in the loop: `net_pcap` replaying 64-byte UDP on one lcore,
/// ours (reflect: the same MAC+IP+port swap as 5tswap) against testpmd 5tswap and macswap,
/// each from the median of its per-second port TX rates.
fn dpdk_cpu_rows(bins: &Bins, seconds: f64, runs: u32) -> Result<Vec<Row>> {
    let pcap = root().join("target/bench/udp64.pcap");
    write_pcap(&pcap)?;
    let vdev = format!(
        "net_pcap0,rx_pcap={},tx_pcap=/dev/null,infinite_rx=1",
        pcap.display()
    );
    let pid = std::process::id();
    let lcores = format!("--lcores=(0,1)@{DUT_CPU}");
    let mut rates: [Vec<f64>; 3] = Default::default();
    // Ours against 5tswap within each round (the medians of its per-second rates): the
    // spread shows how much of the ratio is this machine's noise.
    let mut round_ratios = Vec::new();
    for round in 0..runs {
        eprintln!("bench: round {}/{runs}: net_pcap replay", round + 1);
        let seen: [usize; 3] = std::array::from_fn(|i| rates[i].len());
        let out = Command::new(&bins.dpdk_app)
            .args([&lcores, "--no-huge", "-m", "256", "--no-pci"])
            .args([
                "--file-prefix",
                &format!("kbpbp{pid}"),
                "--vdev",
                &vdev,
                "--",
            ])
            .args([
                "--action",
                "reflect",
                "--duration",
                &format!("{}", seconds + 1.0),
            ])
            .args(["--interval", "1"])
            .output()?;
        if !out.status.success() {
            bail!(
                "dpdk-app on net_pcap failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        rates[0].extend(per_second_tx(&String::from_utf8_lossy(&out.stdout)));
        for (i, mode) in [(1, "5tswap"), (2, "macswap")] {
            let out = Command::new("timeout")
                .args(testpmd_args(
                    &format!("{}", seconds + 1.5),
                    DUT_CPU,
                    &format!("kbpbq{pid}"),
                    &vdev,
                    8192,
                    "1",
                    &[&format!("--forward-mode={mode}")],
                ))
                .output()?;
            rates[i].extend(per_second_tx(&String::from_utf8_lossy(&out.stdout)));
        }
        let [o, t5, _] = std::array::from_fn(|i| median(&mut rates[i][seen[i]..].to_vec()));
        if t5 > 0.0 {
            round_ratios.push(o / t5);
        }
    }
    let [o, t5, tm] = rates.map(|mut r| median(&mut r) / 1e6);
    if o == 0.0 || t5 == 0.0 {
        bail!("the net_pcap replay printed no per-second TX rates (ours {o}, testpmd {t5})");
    }
    let per_second = "median of the per-second port TX rates";
    Ok(vec![
        Row {
            name: "dpdk-app --action reflect, net_pcap replay, no kernel (1 lcore)".into(),
            value: o,
            unit: "Mpps",
            reference: Some("testpmd 5tswap, net_pcap replay".into()),
            ratio: Some(o / t5.max(1e-9)),
            goal: Some(Goal::AtLeast(1.0)),
            note: format!(
                "{per_second}; full parse + MAC/IP/port swap + checksums; {}",
                per_round(&round_ratios)
            ),
            ..Row::default()
        },
        Row {
            name: "testpmd 5tswap, net_pcap replay".into(),
            value: t5,
            unit: "Mpps",
            note: format!("{per_second}; MAC/IP/port swap"),
            ..Row::default()
        },
        Row {
            name: "testpmd macswap, net_pcap replay".into(),
            value: tm,
            unit: "Mpps",
            reference: Some("testpmd 5tswap, net_pcap replay".into()),
            ratio: Some(tm / t5.max(1e-9)),
            note: format!("{per_second}; MAC swap only"),
            ..Row::default()
        },
    ])
}

/// The ratio of each round (ours against the reference, back to back), for a note: on these
/// shared machines the CPU's speed drifts by up to 2x within seconds (a spin loop pinned to
/// one CPU, timed every 0.5 s: 4.6 to 8.9 M iterations), so a ratio near 1 that the rounds
/// straddle is parity, not a loss or a win.
fn per_round(ratios: &[f64]) -> String {
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    format!("ratio per round {}", each.join(" / "))
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

fn report_md(
    rows: &[Row],
    not_measured: &[String],
    runs: u32,
    seconds: f64,
    offered_pps: Option<f64>,
) -> String {
    let mut s = format!(
        "# Benchmark report\n\n{}. Throughput rows: the device under test is the limit (threaded \
         NAPI on both veth ends, pinned with their side), one generator for every row (`xdp-user \
         gen`, 64-byte UDP, 16 flows, CPU {GEN_CPU}, {}), the \
         device under test on CPU {DUT_CPU}; median of {runs} round(s) of {seconds} s windows, \
         devices taking turns; offered and echoed from the veth counters. Ratios are against the reference row of the same run; \
         a goal not met says SHORT.\n\n\
         | row | figure | offered | loss | CPU {DUT_CPU} busy | reference | ratio | goal | note |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        machine(),
        offered_pps.map_or("as fast as it can".to_string(), |r| format!(
            "at {:.2} Mpps for every echo row",
            r / 1e6
        ))
    );
    let pct = |x: Option<f64>| x.map_or(String::new(), |l| format!("{:.1}%", l * 100.0));
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.3} {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.value,
            r.unit,
            r.offered.map_or(String::new(), |o| format!("{o:.3} Mpps")),
            pct(r.loss),
            pct(r.dut_cpu),
            r.reference.clone().unwrap_or_default(),
            r.ratio.map_or(String::new(), |x| ratio_text(x, r.goal)),
            match (r.goal, r.ratio) {
                (Some(g), Some(x)) if g.met(x) => format!("{} met", g.text()),
                (Some(g), Some(_)) => format!("{} SHORT", g.text()),
                _ => String::new(),
            },
            r.note
        ));
    }
    s.push_str(&format!("\n{}\n", not_measured.join("\n\n")));
    s
}

/// A reference tool the report cannot include on this kernel, said rather than left out (the
/// benchmark tries xdp-bench and xdp-trafficgen itself and adds what they said).
const XDPDUMP_NOT_MEASURED: &str = "Not measured: xdp-tools' `xdpdump`: loading its fentry \
     programs is refused here (xdp-user dump captures instead).";

/// Said when `run --busy-poll` found nothing to busy-poll.
const BUSY_POLL_NOT_MEASURED: &str = "Not measured: `--busy-poll` busy polling a core of its \
     own. veth registers its XDP RX queue without a NAPI id on this kernel, so the AF_XDP \
     socket has none (SO_INCOMING_NAPI_ID 0) and the kernel never busy-polls it: before `run` \
     detected this, `--busy-poll` only spun beside the NAPI thread at 0.40 of the default \
     loop. It now says so at the first frame and polls as without the flag, which the \
     `--busy-poll` row shows; its goal needs a NIC whose driver gives its queues NAPI ids.";

fn machine() -> String {
    format!(
        "Machine: {} ({} CPUs), kernel {}",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel_release()
    )
}

fn report_json(
    rows: &[Row],
    not_measured: &[String],
    runs: u32,
    seconds: f64,
    offered_pps: Option<f64>,
) -> serde_json::Value {
    serde_json::json!({
        "machine": {"cpu": cpu_model(), "kernel": kernel_release(),
                    "cpus": std::thread::available_parallelism().map_or(0, |n| n.get())},
        "setup": {"rounds": runs, "window_seconds": seconds, "generator_cpu": GEN_CPU,
            "offered_pps": offered_pps,
                  "dut_cpu": DUT_CPU, "threaded_napi": true},
        "rows": rows.iter().map(|r| serde_json::json!({
            "name": r.name,
            "mpps": if r.unit == "Mpps" { Some(r.value) } else { None },
            "ns_per_packet": if r.unit == "ns/pkt" { Some(r.value) } else { None },
            "ms": if r.unit == "ms" { Some(r.value) } else { None },
            "offered_mpps": r.offered,
            "loss": r.loss,
            "dut_cpu_busy": r.dut_cpu,
            "reference": r.reference,
            "ratio": r.ratio,
            "goal": r.goal.map(|g| g.text()),
            "goal_met": match (r.goal, r.ratio) {
                (Some(g), Some(x)) => Some(g.met(x)),
                _ => None,
            },
            "note": r.note,
        })).collect::<Vec<_>>(),
        "not_measured": not_measured,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_never_rounded_onto_the_other_side_of_its_goal() {
        let at_least = Some(Goal::AtLeast(1.0));
        assert_eq!(ratio_text(0.998, at_least), "0.998");
        assert_eq!(ratio_text(0.9996, at_least), "0.9996");
        assert_eq!(ratio_text(1.004, at_least), "1.00");
        assert_eq!(ratio_text(0.334, Some(Goal::AtMost(0.33))), "0.334");
        assert_eq!(ratio_text(0.37, Some(Goal::AtMost(0.33))), "0.37");
        assert_eq!(ratio_text(1.2345, None), "1.23");
    }
}
