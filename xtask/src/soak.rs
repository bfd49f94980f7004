//! `cargo xtask soak`: every data path under `xdp-user gen` load for a while, with the faults a
//! deployment meets, then checks that nothing leaked and every number adds up.
//!
//! Each data path gets a testbed of its own (`testbed.rs`) and an equal share of the time:
//! `xdp-user load` (the XDP filter), `xdp-user run` (the AF_XDP echo) and `dpdk-app` (the DPDK
//! echo on `net_af_packet`, a veth end with no kernel address). `xdp-user gen` sends 50 kpps
//! at it from the peer for the whole share (pinned to CPU 0; the device under test to CPU 1).
//! Meanwhile the device under test lives several lives, one after the other; a seeded RNG (the
//! seed is printed; `--seed` repeats a run) decides how long each lives and how it ends:
//! `SIGINT`, `SIGTERM`, `--duration`, `kill -9` once it runs, or `kill -9` at a random moment
//! of its start-up. During a life the link flaps (down for 1.5 s, at the device's end or the
//! peer's), and `load` gets a `SIGHUP` every second with its rules file rewritten to the
//! other of two orderings of the same disjoint rules. Checked, per life:
//!
//! - the exit status: 0 after `SIGINT`, `SIGTERM` or `--duration`; killed by signal 9 after
//!   `kill -9`; a process that ends by itself before its time (a link flap must not end it)
//!   fails;
//! - `load` and `run`: every flap is reported on stderr (`link down`, `link up again`), and no
//!   XDP program is attached to the device's interface after any exit (after a `kill -9` the
//!   kernel gets 2 s to release the BPF link) nor at the end;
//! - `load` (its JSON): `actions.pass + drop + xsk == protocols.arp + ipv4 + ipv6 + other +
//!   malformed` (every frame counts once at the network level, or as malformed, and takes one
//!   action); `reloads` == the `reloaded` lines on stderr, within one of the `SIGHUP`s sent;
//!   `reload_failures` 0; `rule_set_generation == reloads + 1`;
//! - `run` (its JSON, per queue): `frames.violations` 0, `frames.in_loop` 0, `frames_lost` 0,
//!   `frames.total == free + kernel_rx + kernel_tx + in_loop`; `rx == echoed + reflected +
//!   counted + (dropped - tx_ring_full) + malformed + not_for_us` (JSON `dropped` includes
//!   the replies the TX ring had no room for); `tx + tx_ring_full == echoed + reflected`; and
//!   `rx <= xdp.xsk` (a frame reaches a socket only through the program's redirect);
//! - `dpdk-app`: the same two loop identities (with `tx_dropped`), and no runtime files in
//!   `/var/run/dpdk/<file-prefix>` after a clean stop. After a `kill -9` DPDK cannot clean up:
//!   what it leaves is listed, removed and counted, not failed;
//! - memory: VmRSS of each process every second; after a warm-up (10 s, or the first third of
//!   a shorter life) the largest sample may exceed the first one after the warm-up by at most
//!   10% or 2 MiB, whichever is larger. `xdp-user gen`, which lives through the whole share,
//!   is held to it too, and must exit 0 at the end having reported every flap.
//!
//! Rates and timings are printed, never asserted. Everything is removed at the end, also on
//! failure and on Ctrl-C: the processes (`kill -9`), their DPDK runtime files, the rules file
//! and the testbeds.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xtask::cmd::build_release;
use xtask::testbed::{DUT_IF, DUT_IPV4, Options, PEER_IF, Testbed};

/// What `cargo xtask soak` does.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// Seconds of load over all data paths (each gets an equal share).
    pub seconds: f64,
    /// The RNG seed (default: from the clock).
    pub seed: Option<u64>,
    /// Data paths to soak (default: all).
    pub paths: Vec<DataPath>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPath {
    /// `xdp-user load`: the XDP filter, with SIGHUP reloads.
    Load,
    /// `xdp-user run`: the AF_XDP echo.
    Run,
    /// `dpdk-app`: the DPDK echo on net_af_packet.
    Dpdk,
}

impl DataPath {
    pub const ALL: [DataPath; 3] = [DataPath::Load, DataPath::Run, DataPath::Dpdk];

    fn name(self) -> &'static str {
        match self {
            DataPath::Load => "xdp-user load",
            DataPath::Run => "xdp-user run",
            DataPath::Dpdk => "dpdk-app",
        }
    }

    /// The stderr line that says the process is up and its data path in place.
    fn ready_marker(self) -> &'static str {
        match self {
            DataPath::Load => "xdp-user: attached to",
            DataPath::Run => "per queue,",
            DataPath::Dpdk => "polling lcore(s)",
        }
    }

    /// Whether it attaches XDP to the device's interface (and watches its link).
    fn uses_xdp(self) -> bool {
        self != DataPath::Dpdk
    }
}

/// What `load`, `run` and `gen` print when their link goes down, and when it is back.
const LINK_DOWN: &str = ": link down (operstate";
const LINK_UP: &str = ": link up again";

/// The generator's offered rate: modest, so the 2-CPU machine keeps up while the soak runs.
const GEN_RATE: &str = "50000";
/// How long a flapped link stays down, and how long it stays up before the next flap or the
/// end of the life. The far end of a veth pair learns of a carrier change through the kernel's
/// linkwatch, which handles such events at most once a second (the two ends, in namespaces of
/// their own, share an ifindex, so the events are not urgent): a shorter flap can come and go
/// without the far end's `operstate` ever changing, and no program could report it.
const FLAP_DOWN: f64 = 1.5;
const FLAP_SETTLE: f64 = 1.5;
/// Average life of a device-under-test process, and the fewest lives per data path.
const MEAN_LIFE: f64 = 15.0;
const MIN_LIVES: usize = 4;
/// Time for a process to come up, and to stop after a signal.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the kernel gets to release the BPF link of a killed process.
const DETACH_TIMEOUT: Duration = Duration::from_secs(2);
/// Memory: warm-up (at most), and the growth allowed after it.
const RSS_WARMUP: f64 = 10.0;
const RSS_TOLERANCE_KIB: u64 = 2048;
/// The two orderings of one rule set that `load` alternates between on SIGHUP. No packet can
/// match two of these rules (UDP, TCP, ICMP), so both orderings decide every packet alike.
const RULES_A: &str = "# soak ordering A\n\
     proto udp dport 9 action drop\n\
     proto tcp dport 22-23 action drop\n\
     proto icmp icmp-type 8 action pass\n";
const RULES_B: &str = "# soak ordering B\n\
     proto icmp icmp-type 8 action pass\n\
     proto tcp dport 22-23 action drop\n\
     proto udp dport 9 action drop\n";

pub fn soak(opts: &SoakOptions) -> Result<()> {
    xtask::setup::setup(true)?;
    if !xtask::setup::is_root() {
        bail!("the soak needs root (network namespaces, XDP, DPDK); run it as root");
    }
    if !(opts.seconds.is_finite() && opts.seconds >= 10.0 && opts.seconds <= 24.0 * 3600.0) {
        bail!(
            "the soak runs 10 s to 24 h in total (asked: {} s)",
            opts.seconds
        );
    }
    let bins = binaries()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))?;
    }
    let seed = opts.seed.unwrap_or_else(clock_seed);
    let paths = if opts.paths.is_empty() {
        DataPath::ALL.to_vec()
    } else {
        opts.paths.clone()
    };
    let share = opts.seconds / paths.len() as f64;
    println!(
        "soak: seed {seed} (repeat with --seed {seed}); {:.0} s per data path: {}; gen at {GEN_RATE} pps",
        share,
        paths
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _cleanup = Cleanup::new()?;
    now();
    let mut rng = Rng(seed);
    let mut reports = Vec::new();
    for path in paths {
        let plan = Plan::new(path, share, &mut rng);
        let mut soak = Soak::new(path, &bins, &interrupted)?;
        let r = soak.run(&plan);
        reports.push(soak.report);
        // An error (Ctrl-C, a testbed command that failed) ends the soak; the checks that
        // failed so far are still shown.
        if let Err(e) = r {
            print_summary(&reports);
            return Err(e.context(format!("soak of {} stopped", path.name())));
        }
    }
    print_summary(&reports);
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.failures
                .iter()
                .map(move |f| format!("{}: {f}", r.path.name()))
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "soak: {} check(s) failed (seed {seed}):\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    println!("soak: every check held (seed {seed}); testbeds removed");
    Ok(())
}

struct Bins {
    xdp_user: PathBuf,
    dpdk_app: PathBuf,
}

/// Builds the binaries and finds them.
fn binaries() -> Result<Bins> {
    let release = build_release(&["xdp-user", "dpdk-app"])?;
    let bins = Bins {
        xdp_user: release.join("xdp-user"),
        dpdk_app: release.join("dpdk-app"),
    };
    for b in [&bins.xdp_user, &bins.dpdk_app] {
        if !b.exists() {
            bail!("{} was not built", b.display());
        }
    }
    Ok(bins)
}

fn clock_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

/// SplitMix64: small, seedable, good enough to pick moments.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// How a life ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Sigint,
    Sigterm,
    /// `--duration` runs out.
    Duration,
    /// `kill -9` once it runs.
    Kill,
    /// `kill -9` at a random moment of start-up (`after` seconds after it was started).
    KillEarly {
        after: f64,
    },
}

impl End {
    fn killed(self) -> bool {
        matches!(self, End::Kill | End::KillEarly { .. })
    }

    fn describe(self) -> String {
        match self {
            End::Sigint => "SIGINT".into(),
            End::Sigterm => "SIGTERM".into(),
            End::Duration => "--duration".into(),
            End::Kill => "kill -9".into(),
            End::KillEarly { after } => format!("kill -9 {:.0} ms into start-up", after * 1e3),
        }
    }
}

/// A link flap: down at `at` seconds into the life, up again `FLAP_DOWN` later.
#[derive(Clone, Copy, Debug)]
struct Flap {
    at: f64,
    /// The device's end (else the peer's).
    dut_end: bool,
}

#[derive(Clone, Debug)]
struct Life {
    /// Seconds from ready to the end.
    len: f64,
    end: End,
    flaps: Vec<Flap>,
}

/// The lives of one data path, decided up front from the seed.
#[derive(Debug)]
struct Plan {
    lives: Vec<Life>,
}

impl Plan {
    fn new(path: DataPath, share: f64, rng: &mut Rng) -> Plan {
        let n = ((share / MEAN_LIFE).round() as usize).max(MIN_LIVES);
        let base = share / n as f64;
        let mut ends = Vec::new();
        while ends.len() < n {
            // Every ending in each group of four: kill -9s are a quarter of the lives.
            let mut group = [End::Sigint, End::Sigterm, End::Duration, End::Kill];
            rng.shuffle(&mut group);
            ends.extend(group);
        }
        ends.truncate(n);
        let mut lives = Vec::new();
        for end in ends {
            let len = (base * (0.6 + 0.8 * rng.unit())).max(3.0);
            // One kill in three comes during start-up, at a random moment: while the XDP
            // program is being loaded and attached, or while DPDK initialises.
            let end = if end == End::Kill && rng.below(3) == 0 {
                let upto = if path == DataPath::Dpdk { 1.0 } else { 0.3 };
                End::KillEarly {
                    after: 0.02 + upto * rng.unit(),
                }
            } else {
                end
            };
            let mut flaps = Vec::new();
            if !matches!(end, End::KillEarly { .. }) {
                // The link is back up FLAP_SETTLE before the life ends or the next flap, so
                // the return is seen at both ends.
                let mut at = 0.8 + rng.unit();
                while at + FLAP_DOWN + FLAP_SETTLE <= len {
                    flaps.push(Flap {
                        at,
                        dut_end: rng.below(2) == 0,
                    });
                    at += FLAP_DOWN + FLAP_SETTLE + 4.0 * rng.unit();
                }
            }
            lives.push(Life { len, end, flaps });
        }
        Plan { lives }
    }
}

/// A process in the testbed whose output is collected line by line.
struct Proc {
    child: Child,
    /// Set once the process has been reaped; until then its pid cannot be reused.
    status: Option<ExitStatus>,
    started: Instant,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    /// (seconds since start, VmRSS in KiB)
    rss: Vec<(f64, u64)>,
}

/// Seconds since the soak began: stamps the processes' stderr lines and the soak's own events,
/// so a report can be set beside what was done when.
fn now() -> f64 {
    static BEGAN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BEGAN.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Collects `stream` line by line; with `stamp`, each line starts with `[t=SECONDS]`.
fn collect_lines(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    stamp: bool,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let mut line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if stamp {
                line = format!("[t={:.2}] {line}", now());
            }
            into.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            buf.clear();
        }
    })
}

impl Proc {
    fn spawn(c: &mut Command) -> Result<Proc> {
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("could not start a process in the testbed")?;
        let stdout: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let readers = vec![
            collect_lines(
                child.stdout.take().context("stdout")?,
                Arc::clone(&stdout),
                false,
            ),
            collect_lines(
                child.stderr.take().context("stderr")?,
                Arc::clone(&stderr),
                true,
            ),
        ];
        Ok(Proc {
            child,
            status: None,
            started: Instant::now(),
            stdout,
            stderr,
            readers,
            rss: Vec::new(),
        })
    }

    fn running(&mut self) -> Result<bool> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status.is_none())
    }

    /// Sends `sig`; only to a process not yet reaped, so the pid is still ours.
    fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        if !self.running()? {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("pid")?;
        // SAFETY: kill(2) takes no pointers; `pid` is our child, not yet reaped (a zombie
        // keeps its pid), so it names no other process.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn kill9(&mut self) -> Result<()> {
        if self.running()? {
            self.child.kill().context("kill -9")?;
        }
        Ok(())
    }

    /// Waits until the process ends or `deadline`; its status, if it ended.
    fn wait_until(&mut self, deadline: Instant) -> Result<Option<ExitStatus>> {
        while self.running()? {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(self.status)
    }

    /// After the process ended: waits for its last lines.
    fn finish(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    fn sample_rss(&mut self) {
        if self.status.is_some() {
            return;
        }
        let t = self.started.elapsed().as_secs_f64();
        if let Some(kib) = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        {
            self.rss.push((t, kib));
        }
    }

    fn stderr_count(&self, pattern: &str) -> usize {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(pattern))
            .count()
    }

    /// The stderr lines that contain `pattern`, each with the second it was read at.
    fn stderr_matching(&self, pattern: &str) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.contains(pattern))
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn stderr_tail(&self, n: usize) -> String {
        let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let from = lines.len().saturating_sub(n);
        lines[from..].join(" | ")
    }

    /// The JSON object on the last line of stdout.
    fn json(&self) -> Option<Value> {
        let lines = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::from_str(lines.last()?).ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Memory over a process's life: the first sample, the baseline after the warm-up, the
/// largest after it; `None` when the life was too short to judge.
#[derive(Clone, Copy, Debug)]
struct Rss {
    start: u64,
    baseline: u64,
    max: u64,
}

impl Rss {
    fn of(samples: &[(f64, u64)]) -> Option<Rss> {
        let (last_t, _) = *samples.last()?;
        let warm = RSS_WARMUP.min(last_t / 3.0);
        let after: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= warm)
            .map(|(_, k)| *k)
            .collect();
        if after.len() < 3 {
            return None;
        }
        Some(Rss {
            start: samples[0].1,
            baseline: after[0],
            max: after.iter().copied().max().unwrap_or(0),
        })
    }

    fn allowed(&self) -> u64 {
        self.baseline + (self.baseline / 10).max(RSS_TOLERANCE_KIB)
    }

    fn flat(&self) -> bool {
        self.max <= self.allowed()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// What one data path's soak found.
#[derive(Debug)]
struct Report {
    path: DataPath,
    /// Seconds the device under test was up (ready to exit), over all its lives.
    seconds: f64,
    lives: usize,
    kills: usize,
    sighups: u64,
    reloads: u64,
    flaps: usize,
    gen_sent: u64,
    gen_received: u64,
    /// Frames the device under test handled in its cleanly stopped lives (from its JSON).
    handled: u64,
    dut_rss: Option<(u64, u64)>,
    gen_rss: Option<(u64, u64)>,
    /// Slowest release of the XDP program after a kill -9, in ms.
    slowest_detach_ms: Option<f64>,
    /// DPDK runtime directories a kill -9 left behind (removed).
    dpdk_leftovers: usize,
    failures: Vec<String>,
    notes: Vec<String>,
}

/// Removes what a soak made outside the testbeds, also on failure and Ctrl-C: the rules
/// folder and the DPDK runtime directories of this run's prefixes.
struct Cleanup {
    dir: PathBuf,
}

impl Cleanup {
    fn new() -> Result<Cleanup> {
        let dir = std::env::temp_dir().join(format!("kbp-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Cleanup { dir })
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let mine = dpdk_prefix_stem();
        if let Ok(entries) = std::fs::read_dir(DPDK_RUN_DIR) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&mine) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

const DPDK_RUN_DIR: &str = "/var/run/dpdk";

fn dpdk_prefix_stem() -> String {
    format!("kbpsoak{}x", std::process::id())
}

fn rules_file() -> PathBuf {
    std::env::temp_dir()
        .join(format!("kbp-soak-{}", std::process::id()))
        .join("rules")
}

/// Replaces the rules file in one step (write aside, rename), so `load` never reads half a
/// file.
fn write_rules(ordering_b: bool) -> Result<()> {
    let path = rules_file();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, if ordering_b { RULES_B } else { RULES_A })?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// One data path's soak: its testbed, its generator, its lives.
struct Soak<'a> {
    path: DataPath,
    bins: &'a Bins,
    interrupted: &'a AtomicBool,
    report: Report,
    // Dropped in this order: the processes, then the testbed.
    gen_proc: Option<Proc>,
    tb: Testbed,
    begun: Instant,
    next_gen_sample: f64,
    ordering_b: bool,
}

impl<'a> Soak<'a> {
    fn new(path: DataPath, bins: &'a Bins, interrupted: &'a AtomicBool) -> Result<Soak<'a>> {
        let tb = Testbed::new(&Options {
            dut_addresses: path != DataPath::Dpdk,
            ..Options::default()
        })?;
        Ok(Soak {
            path,
            bins,
            interrupted,
            report: Report {
                path,
                seconds: 0.0,
                lives: 0,
                kills: 0,
                sighups: 0,
                reloads: 0,
                flaps: 0,
                gen_sent: 0,
                gen_received: 0,
                handled: 0,
                dut_rss: None,
                gen_rss: None,
                slowest_detach_ms: None,
                dpdk_leftovers: 0,
                failures: Vec::new(),
                notes: Vec::new(),
            },
            gen_proc: None,
            tb,
            begun: Instant::now(),
            next_gen_sample: 0.0,
            ordering_b: false,
        })
    }

    fn fail(&mut self, what: String) {
        eprintln!("soak: {}: FAILED: {what}", self.path.name());
        self.report.failures.push(what);
    }

    fn check_interrupted(&self) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted; the processes and testbeds have been removed");
        }
        Ok(())
    }

    /// Sleeps a tick and samples the generator's memory once a second.
    fn tick(&mut self) -> Result<()> {
        std::thread::sleep(Duration::from_millis(20));
        self.check_interrupted()?;
        let t = self.begun.elapsed().as_secs_f64();
        if t >= self.next_gen_sample {
            self.next_gen_sample = t.floor() + 1.0;
            if let Some(g) = self.gen_proc.as_mut() {
                g.sample_rss();
            }
        }
        Ok(())
    }

    fn run(&mut self, plan: &Plan) -> Result<()> {
        let total: f64 = plan.lives.iter().map(|l| l.len).sum();
        eprintln!(
            "\nsoak: {}: {} lives over about {:.0} s: {}",
            self.path.name(),
            plan.lives.len(),
            total,
            plan.lives
                .iter()
                .map(|l| format!(
                    "{:.1} s then {} ({} flaps)",
                    l.len,
                    l.end.describe(),
                    l.flaps.len()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        if self.path == DataPath::Load {
            write_rules(false)?;
        }
        self.start_gen(total)?;
        for (i, life) in plan.lives.iter().enumerate() {
            self.life(i, life)?;
        }
        self.stop_gen()?;
        if self.path.uses_xdp() && self.tb.dut_xdp_attached()? {
            self.fail("an XDP program is attached to the device's interface at the end".into());
        }
        Ok(())
    }

    fn start_gen(&mut self, seconds: f64) -> Result<()> {
        let dport = if self.path == DataPath::Load {
            "9"
        } else {
            "7"
        };
        // A bound of its own, in case this process dies without stopping it.
        let bound = format!("{:.0}", seconds + 120.0);
        let mut c = self
            .tb
            .gen_from_peer(path_str(&self.bins.xdp_user)?, DUT_IPV4);
        c.args([
            "--dport", dport, "--rate", GEN_RATE, "--flows", "4", "--core", "0",
        ])
        .args(["--duration", &bound, "--json"]);
        let mut g = Proc::spawn(&mut c)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while g.stderr_count("xdp-user gen: ") == 0 {
            if !g.running()? || Instant::now() >= deadline {
                g.kill9()?;
                g.finish();
                bail!("xdp-user gen did not start: {}", g.stderr_tail(5));
            }
            std::thread::sleep(Duration::from_millis(20));
            self.check_interrupted()?;
        }
        self.begun = Instant::now();
        self.next_gen_sample = 0.0;
        self.gen_proc = Some(g);
        Ok(())
    }

    fn stop_gen(&mut self) -> Result<()> {
        let Some(mut g) = self.gen_proc.take() else {
            return Ok(());
        };
        if !g.running()? {
            self.fail(format!(
                "xdp-user gen ended before the soak did: {}",
                g.stderr_tail(3)
            ));
        }
        g.signal(libc::SIGINT)?;
        let status = g.wait_until(Instant::now() + STOP_TIMEOUT)?;
        if status.is_none() {
            self.fail(format!(
                "xdp-user gen did not stop within {} s of SIGINT",
                STOP_TIMEOUT.as_secs()
            ));
            g.kill9()?;
            g.wait_until(Instant::now() + STOP_TIMEOUT)?;
        }
        g.finish();
        if let Some(s) = status
            && !s.success()
        {
            self.fail(format!(
                "xdp-user gen exited with {s} after SIGINT, expected 0: {}",
                g.stderr_tail(3)
            ));
        }
        match g.json() {
            Some(v) => {
                self.report.gen_sent = v["sent"].as_u64().unwrap_or(0);
                self.report.gen_received = v["received"].as_u64().unwrap_or(0);
            }
            None => self.fail("xdp-user gen printed no JSON summary".into()),
        }
        // Every flap, at either end, takes the generator's link down too.
        let (down, up) = (g.stderr_count(LINK_DOWN), g.stderr_count(LINK_UP));
        if down != self.report.flaps || up != self.report.flaps {
            self.fail(format!(
                "xdp-user gen reported {down} link down / {up} link up for {} flaps: {}",
                self.report.flaps,
                g.stderr_matching("link")
            ));
        }
        let rss = Rss::of(&g.rss);
        if let Some(r) = rss {
            self.report.gen_rss = Some((r.start, r.max));
            if !r.flat() {
                self.fail(format!(
                    "xdp-user gen memory grew: VmRSS {} MiB after warm-up, up to {} MiB (allowed {} MiB)",
                    mib(r.baseline),
                    mib(r.max),
                    mib(r.allowed())
                ));
            }
        }
        Ok(())
    }

    fn dut_command(&self, life: usize, duration: f64) -> Result<Command> {
        let d = format!("{duration:.1}");
        let xdp_user = path_str(&self.bins.xdp_user)?;
        Ok(match self.path {
            DataPath::Load => {
                let mut c = self.tb.in_dut(xdp_user);
                c.args(["load", "--iface", DUT_IF, "--rules"])
                    .arg(rules_file())
                    .args(["--interval", "100", "--duration", &d, "--json"]);
                c
            }
            DataPath::Run => {
                let mut c = self.tb.in_dut(xdp_user);
                c.args(["run", "--iface", DUT_IF, "--cores", "1"]).args([
                    "--interval",
                    "100",
                    "--duration",
                    &d,
                    "--json",
                ]);
                c
            }
            DataPath::Dpdk => {
                // As in the demo: one lcore on CPU 1, no hugepages, a veth end with no kernel
                // address (the app answers ARP / neighbour discovery itself).
                let mut c = self
                    .tb
                    .dpdk_echo_on_dut(path_str(&self.bins.dpdk_app)?, &self.dpdk_prefix(life));
                c.args(["--interval", "100", "--duration", &d, "--json"]);
                c
            }
        })
    }

    /// Each dpdk-app life has a runtime directory of its own.
    fn dpdk_prefix(&self, life: usize) -> String {
        format!("{}{life}", dpdk_prefix_stem())
    }

    fn set_link(&self, dut_end: bool, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        eprintln!(
            "soak: [t={:.2}] {} link {state} at the {} end",
            now(),
            self.path.name(),
            if dut_end { "device's" } else { "peer's" }
        );
        if dut_end {
            self.tb.ip_dut(&["link", "set", DUT_IF, state])
        } else {
            self.tb.ip_peer(&["link", "set", PEER_IF, state])
        }
    }

    fn life(&mut self, i: usize, life: &Life) -> Result<()> {
        let label = format!("life {} ({})", i + 1, life.end.describe());
        // Signalled lives get a --duration too, far off: the process stops by itself even if
        // this one is killed.
        let duration = match life.end {
            End::Duration => life.len,
            _ => life.len + 60.0,
        };
        let mut p = Proc::spawn(&mut self.dut_command(i, duration)?)?;
        self.report.lives += 1;
        let mut flaps_done = 0usize;
        let mut sighups = 0u64;
        let mut up_since = None;

        if let End::KillEarly { after } = life.end {
            let at = Instant::now() + Duration::from_secs_f64(after);
            while Instant::now() < at {
                self.tick()?;
            }
            p.kill9()?;
        } else {
            // Wait until it is up.
            let deadline = Instant::now() + READY_TIMEOUT;
            while p.stderr_count(self.path.ready_marker()) == 0 {
                if !p.running()? || Instant::now() >= deadline {
                    p.kill9()?;
                    p.wait_until(Instant::now() + STOP_TIMEOUT)?;
                    p.finish();
                    self.fail(format!(
                        "{label}: did not start ({}): {}",
                        p.status.map_or("no status".into(), |s| s.to_string()),
                        p.stderr_tail(5)
                    ));
                    self.cleanup_after(&label, i, true)?;
                    return Ok(());
                }
                self.tick()?;
            }
            let t0 = Instant::now();
            up_since = Some(t0);
            let mut next_hup = 1.0;
            let mut next_sample = 0.0;
            let mut flap_idx = 0;
            let mut down_at: Option<f64> = None;
            loop {
                self.tick()?;
                let t = t0.elapsed().as_secs_f64();
                if !p.running()? {
                    if life.end != End::Duration || t < life.len - 0.5 {
                        self.fail(format!(
                            "{label}: ended by itself after {t:.1} s ({}), {} flap(s) in: {}",
                            p.status.map_or("?".into(), |s| s.to_string()),
                            flaps_done + usize::from(down_at.is_some()),
                            p.stderr_tail(3)
                        ));
                    }
                    break;
                }
                if t >= next_sample {
                    p.sample_rss();
                    next_sample += 1.0;
                }
                if let Some(d) = down_at {
                    if t >= d + FLAP_DOWN {
                        let f = life.flaps[flap_idx];
                        self.set_link(f.dut_end, true)?;
                        down_at = None;
                        flaps_done += 1;
                        flap_idx += 1;
                    }
                } else if let Some(f) = life.flaps.get(flap_idx)
                    && t >= f.at
                {
                    self.set_link(f.dut_end, false)?;
                    down_at = Some(t);
                }
                if self.path == DataPath::Load && t >= next_hup && t < life.len - 0.2 {
                    self.ordering_b = !self.ordering_b;
                    write_rules(self.ordering_b)?;
                    p.signal(libc::SIGHUP)?;
                    sighups += 1;
                    next_hup += 1.0;
                }
                if t >= life.len && down_at.is_none() {
                    match life.end {
                        End::Sigint => p.signal(libc::SIGINT)?,
                        End::Sigterm => p.signal(libc::SIGTERM)?,
                        End::Kill => p.kill9()?,
                        End::Duration if t < life.len + STOP_TIMEOUT.as_secs_f64() => continue,
                        End::Duration => {
                            self.fail(format!(
                                "{label}: still running {} s after its --duration",
                                STOP_TIMEOUT.as_secs()
                            ));
                            p.kill9()?;
                        }
                        End::KillEarly { .. } => {}
                    }
                    break;
                }
            }
            if down_at.is_some() {
                // Ended (by itself) during a flap: bring the link back for the next life.
                self.set_link(life.flaps[flap_idx].dut_end, true)?;
                flaps_done += 1;
            }
        }
        if life.end.killed() {
            self.report.kills += 1;
        }
        let status = p.wait_until(Instant::now() + STOP_TIMEOUT)?;
        if status.is_none() {
            self.fail(format!(
                "{label}: did not stop within {} s",
                STOP_TIMEOUT.as_secs()
            ));
            p.kill9()?;
            p.wait_until(Instant::now() + STOP_TIMEOUT)?;
        }
        if let Some(t0) = up_since {
            self.report.seconds += t0.elapsed().as_secs_f64();
        }
        p.finish();
        self.report.flaps += flaps_done;
        self.report.sighups += sighups;
        self.check_life(&label, life, &p, flaps_done, sighups)?;
        self.cleanup_after(&label, i, status.is_none() || life.end.killed())?;
        Ok(())
    }

    /// The exit status, the JSON identities, the flap reports and the memory of one life.
    fn check_life(
        &mut self,
        label: &str,
        life: &Life,
        p: &Proc,
        flaps: usize,
        sighups: u64,
    ) -> Result<()> {
        let Some(status) = p.status else {
            return Ok(());
        };
        let reloaded = p.stderr_count("xdp-user: reloaded") as u64;
        self.report.reloads += reloaded;
        if life.end.killed() {
            if status.signal() != Some(libc::SIGKILL) {
                self.fail(format!(
                    "{label}: exit {status}, expected killed by signal 9: {}",
                    p.stderr_tail(3)
                ));
            }
        } else if !status.success() {
            self.fail(format!(
                "{label}: exit {status}, expected 0: {}",
                p.stderr_tail(3)
            ));
        }
        if self.path.uses_xdp() {
            let (down, up) = (p.stderr_count(LINK_DOWN), p.stderr_count(LINK_UP));
            if down != flaps || up != flaps {
                self.fail(format!(
                    "{label}: reported {down} link down / {up} link up for {flaps} flap(s): {}",
                    p.stderr_matching("link")
                ));
            }
        }
        if let Some(r) = Rss::of(&p.rss) {
            let (start, max) = self.report.dut_rss.unwrap_or((r.start, 0));
            self.report.dut_rss = Some((start, max.max(r.max)));
            if !r.flat() {
                self.fail(format!(
                    "{label}: memory grew: VmRSS {} MiB after warm-up, up to {} MiB (allowed {} MiB)",
                    mib(r.baseline),
                    mib(r.max),
                    mib(r.allowed())
                ));
            }
        }
        if life.end.killed() || !status.success() {
            return Ok(());
        }
        let Some(v) = p.json() else {
            self.fail(format!("{label}: no JSON summary on stdout"));
            return Ok(());
        };
        let problems = match self.path {
            DataPath::Load => load_identities(&v, reloaded, sighups),
            DataPath::Run => run_identities(&v),
            DataPath::Dpdk => dpdk_identities(&v),
        };
        self.report.handled += match self.path {
            DataPath::Load => ["pass", "drop", "xsk"]
                .iter()
                .map(|k| num(&v, &format!("/actions/{k}")))
                .sum(),
            _ => num(&v, "/rx"),
        };
        for problem in problems {
            self.fail(format!("{label}: {problem}"));
        }
        Ok(())
    }

    /// After an exit: the XDP program must be gone (a killed process's after up to 2 s);
    /// DPDK's runtime files must be gone after a clean stop, and are removed (and counted)
    /// after a kill -9.
    fn cleanup_after(&mut self, label: &str, life: usize, killed: bool) -> Result<()> {
        if self.path.uses_xdp() {
            let t = Instant::now();
            let deadline = t + if killed {
                DETACH_TIMEOUT
            } else {
                Duration::from_millis(0)
            };
            loop {
                if !self.tb.dut_xdp_attached()? {
                    if killed {
                        let ms = t.elapsed().as_secs_f64() * 1e3;
                        let slowest = self.report.slowest_detach_ms.unwrap_or(0.0).max(ms);
                        self.report.slowest_detach_ms = Some(slowest);
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    self.fail(format!(
                        "{label}: an XDP program is still attached to {DUT_IF} {} after the exit",
                        if killed { "2 s" } else { "right" }
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        } else {
            let dir = Path::new(DPDK_RUN_DIR).join(self.dpdk_prefix(life));
            if dir.exists() {
                let mut files: Vec<String> = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                files.sort();
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("remove {}", dir.display()))?;
                if killed {
                    self.report.dpdk_leftovers += 1;
                    self.report.notes.push(format!(
                        "{label}: left {} ({}); removed",
                        dir.display(),
                        files.join(", ")
                    ));
                } else {
                    self.fail(format!(
                        "{label}: runtime files left after a clean stop: {} ({})",
                        dir.display(),
                        files.join(", ")
                    ));
                }
            } else if killed {
                self.report
                    .notes
                    .push(format!("{label}: no runtime files left"));
            }
        }
        Ok(())
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non UTF-8 path")
}

fn num(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// `load`: every frame the program saw took exactly one action and counts once at the network
/// level (arp, ipv4, ipv6 — unparsed IPv6 included —, other) or as malformed
/// (`count_class` and `act` in xdp-ebpf); reloads as acted on.
fn load_identities(v: &Value, reloaded_lines: u64, sighups: u64) -> Vec<String> {
    let mut out = Vec::new();
    let missing: Vec<&str> = [
        "/actions/pass",
        "/protocols/ipv4",
        "/reloads",
        "/rule_set_generation",
    ]
    .into_iter()
    .filter(|p| v.pointer(p).is_none())
    .collect();
    if !missing.is_empty() {
        out.push(format!("JSON lacks {}", missing.join(", ")));
        return out;
    }
    let actions: u64 = ["pass", "drop", "xsk"]
        .iter()
        .map(|k| num(v, &format!("/actions/{k}")))
        .sum();
    let network: u64 = ["arp", "ipv4", "ipv6", "other"]
        .iter()
        .map(|k| num(v, &format!("/protocols/{k}")))
        .sum::<u64>()
        + num(v, "/malformed");
    if actions != network {
        out.push(format!(
            "actions pass+drop+xsk = {actions} but arp+ipv4+ipv6+other+malformed = {network}"
        ));
    }
    let reloads = num(v, "/reloads");
    if reloads != reloaded_lines {
        out.push(format!(
            "JSON reloads {reloads} but {reloaded_lines} `reloaded` line(s) on stderr"
        ));
    }
    if reloads > sighups || reloads + 1 < sighups {
        out.push(format!("{reloads} reload(s) for {sighups} SIGHUP(s)"));
    }
    if num(v, "/reload_failures") != 0 {
        out.push(format!("reload_failures {}", num(v, "/reload_failures")));
    }
    if num(v, "/rule_set_generation") != reloads + 1 {
        out.push(format!(
            "rule_set_generation {} after {reloads} reload(s), expected {}",
            num(v, "/rule_set_generation"),
            reloads + 1
        ));
    }
    out
}

/// `run`: the UMEM ledger and the loop's counters (`handle_frame`, `transmit` in afxdp.rs).
fn run_identities(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(queues) = v["queues"].as_array() else {
        return vec!["JSON lacks `queues`".into()];
    };
    if v.pointer("/frames_lost").is_none() {
        out.push("JSON lacks `frames_lost`".into());
    } else if num(v, "/frames_lost") != 0 {
        out.push(format!("frames_lost {}", num(v, "/frames_lost")));
    }
    let mut rx_total = 0;
    for q in queues {
        let id = num(q, "/queue");
        let f = |k: &str| num(q, &format!("/frames/{k}"));
        if q.pointer("/frames/violations").is_none() || q.pointer("/tx_ring_full").is_none() {
            out.push(format!(
                "queue {id}: JSON lacks frames.violations or tx_ring_full"
            ));
            continue;
        }
        for k in ["violations", "in_loop", "lost"] {
            if f(k) != 0 {
                out.push(format!("queue {id}: frames.{k} {}", f(k)));
            }
        }
        let placed = f("free") + f("kernel_rx") + f("kernel_tx") + f("in_loop");
        if placed != f("total") {
            out.push(format!(
                "queue {id}: UMEM frames free+kernel_rx+kernel_tx+in_loop = {placed}, total {}",
                f("total")
            ));
        }
        out.extend(loop_identities(
            q,
            num(q, "/tx_ring_full"),
            &format!("queue {id}: "),
        ));
        rx_total += num(q, "/rx");
    }
    if rx_total != num(v, "/rx") {
        out.push(format!(
            "rx {} but the queues' rx add up to {rx_total}",
            num(v, "/rx")
        ));
    }
    if num(v, "/rx") > num(v, "/xdp/xsk") {
        out.push(format!(
            "the sockets received {} frames but the program redirected only {}",
            num(v, "/rx"),
            num(v, "/xdp/xsk")
        ));
    }
    out
}

/// `dpdk-app`: the loop's counters (`poll_loop`, `process` in dpdk-app/src/worker.rs).
fn dpdk_identities(v: &Value) -> Vec<String> {
    if v.pointer("/tx_dropped").is_none() || v.pointer("/rx").is_none() {
        return vec!["JSON lacks rx or tx_dropped".into()];
    }
    loop_identities(v, num(v, "/tx_dropped"), "")
}

/// Every received frame gets one verdict; every reply is sent or counted as not sent.
/// `dropped` in the JSON includes the unsent replies (`tx_full`).
fn loop_identities(c: &Value, tx_full: u64, prefix: &str) -> Vec<String> {
    let n = |k: &str| num(c, &format!("/{k}"));
    let mut out = Vec::new();
    let replies = n("echoed") + n("reflected");
    let verdicts = replies
        + n("counted")
        + n("dropped").saturating_sub(tx_full)
        + n("malformed")
        + n("not_for_us");
    if n("rx") != verdicts {
        out.push(format!(
            "{prefix}rx {} but echoed+reflected+counted+dropped(without tx full)+malformed+not_for_us = {verdicts}",
            n("rx")
        ));
    }
    if n("tx") + tx_full != replies {
        out.push(format!(
            "{prefix}tx {} + tx full {tx_full} but echoed+reflected = {replies}",
            n("tx")
        ));
    }
    out
}

fn print_summary(reports: &[Report]) {
    if reports.is_empty() {
        return;
    }
    println!("\n=== soak summary");
    println!(
        "| data path | up (s) | lives | restarts | kill -9 | SIGHUP / reloads | flaps | gen sent / received | handled (clean lives) | RSS MiB start/max | gen RSS MiB start/max | failures |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let rss =
            |x: Option<(u64, u64)>| x.map_or("-".into(), |(a, b)| format!("{}/{}", mib(a), mib(b)));
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            r.path.name(),
            r.seconds,
            r.lives,
            r.lives.saturating_sub(1),
            r.kills,
            if r.path == DataPath::Load {
                format!("{} / {}", r.sighups, r.reloads)
            } else {
                "-".into()
            },
            r.flaps,
            r.gen_sent,
            r.gen_received,
            r.handled,
            rss(r.dut_rss),
            rss(r.gen_rss),
            r.failures.len()
        );
    }
    for r in reports {
        let mut lines = Vec::new();
        if let Some(ms) = r.slowest_detach_ms {
            lines.push(format!(
                "XDP program gone after every kill -9 (slowest: {ms:.0} ms after the exit was seen)"
            ));
        }
        if r.path == DataPath::Dpdk {
            lines.push(format!(
                "DPDK runtime directories left by kill -9 (removed): {}; link flaps do not end it (net_af_packet reports no link changes)",
                r.dpdk_leftovers
            ));
        }
        lines.extend(r.notes.iter().cloned());
        lines.extend(r.failures.iter().map(|f| format!("FAILED: {f}")));
        if !lines.is_empty() {
            println!("{}:", r.path.name());
            for l in lines {
                println!("  - {l}");
            }
        }
    }
}
