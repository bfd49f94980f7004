//! `xdp-user`: the user-space side of the XDP data path.
//!
//! - `xdp-user load`: attach the XDP filter/counter to an interface, install rules, print
//!   rates, reload rules on SIGHUP, detach on SIGINT/SIGTERM or when `--duration` ends.
//! - `xdp-user run`: the AF_XDP poll-mode data path (echo, reflect, count, drop).
//! - `xdp-user cost`: the filter's cost per packet for a rule set (BPF_PROG_TEST_RUN).
//! - `xdp-user gen`: a UDP traffic generator that matches and times the replies.

mod afxdp;
#[cfg(test)]
mod differential;
mod dump;
mod frames;
mod generator;
mod iface;
mod metrics;
mod rules;
mod xdp;

use anyhow::{Context, Result, bail};
use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};
use packet::abi::{Action, Counter, stat};
use packet::counter::TopFlows;
use packet::datapath::Action as LoopAction;
use rules::{Policy, Rule};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xdp::{LogLevel, Mode, Snapshot, XdpFilter};

#[derive(Parser)]
#[command(
    name = "xdp-user",
    version,
    about = "XDP filter/counter and AF_XDP data path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `pass` or `drop`: what the filter does with a kind of packet no rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PassDrop {
    Pass,
    Drop,
}

impl PassDrop {
    fn action(self) -> Action {
        match self {
            PassDrop::Pass => Action::Pass,
            PassDrop::Drop => Action::Drop,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP filter/counter to an interface and print its counters.
    Load(LoadArgs),
    /// Run the AF_XDP poll-mode loop: the XDP program redirects chosen packets to one socket
    /// per RX queue, and a thread per queue answers (echo, reflect), counts or drops them.
    Run(RunArgs),
    /// Send UDP over AF_XDP as fast as asked and count (and time) what comes back: a load
    /// generator and loopback tester for any UDP echo service.
    Gen(GenArgs),
    /// Measure the XDP program's cost per packet with a rule set, in the kernel
    /// (BPF_PROG_TEST_RUN, no interface needed), beside a bare XDP_DROP program in the same run.
    Cost(CostArgs),
    /// Capture the frames the XDP program of `load` or `run` sees on an interface, with what
    /// it did to each (verdict, rule, RX queue), as pcapng: `-w FILE`, or `-w -` to pipe into
    /// `tcpdump -r -`.
    Dump(DumpArgs),
}

/// How long `load` and `run` run and how they report.
#[derive(clap::Args, Debug)]
struct Reporting {
    /// Seconds between lines of rates.
    #[arg(long, default_value_t = 1.0, value_parser = packet::cli::positive)]
    interval: f64,
    /// Stop (and detach) after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// On exit, print the counters as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Serve Prometheus / OpenMetrics metrics at http://ADDR:PORT/metrics (e.g.
    /// 127.0.0.1:9100), refreshed every 250 ms.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
    /// What the XDP program logs (malformed frames and AF_XDP redirects without a socket at
    /// warn, rule-set switches at info), at most 100 records per second per CPU. Fixed at
    /// load time: levels below it cost nothing per packet.
    #[arg(long, value_enum, default_value = "off")]
    log_level: LogLevel,
}

/// How often the metrics are refreshed from the counters.
const METRICS_REFRESH: Duration = Duration::from_millis(250);

/// Arguments of `xdp-user load`.
#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// The interface to attach to.
    #[arg(long)]
    iface: String,
    /// XDP mode: native (driver), skb (generic), or auto (native, else skb).
    #[arg(long, value_enum, default_value = "auto")]
    mode: Mode,
    /// A rule, e.g. "proto udp dport 7 action drop" (repeatable; tried in order, before
    /// the rules of --rules).
    #[arg(long = "rule", value_name = "RULE")]
    rules: Vec<String>,
    /// Write every frame the program sees, with its verdict, rule and RX queue, to FILE as
    /// pcapng (as `xdp-user dump` does, from the start).
    #[arg(long, value_name = "FILE")]
    capture: Option<PathBuf>,
    /// Bytes kept of each captured frame (at most 1536).
    #[arg(long, default_value_t = 1536, value_parser = clap::value_parser!(u32).range(1..=1536))]
    snaplen: u32,
    /// A file of rules, one per line, `#` comments. Reloaded on SIGHUP.
    #[arg(long = "rules", value_name = "FILE")]
    rules_file: Option<PathBuf>,
    /// What happens to well-formed packets that match no rule, and to non-IP frames.
    #[arg(long = "default", value_enum, default_value = "pass")]
    default_action: PassDrop,
    /// What happens to malformed frames: truncated, bad lengths or IPv4 header checksum, a
    /// first fragment too short for its transport header, a TCP fragment overlapping the TCP
    /// header. Dropping them is what keeps fragments from slipping past port rules.
    #[arg(long, value_enum, default_value = "drop")]
    malformed: PassDrop,
    /// What happens to IPv6 packets whose transport header the filter cannot reach (more than
    /// 8 extension headers, or an extension header it does not walk), so port rules cannot be
    /// checked.
    #[arg(long, value_enum, default_value = "drop")]
    unparsed: PassDrop,
    #[command(flatten)]
    report: Reporting,
}

/// Arguments of `xdp-user run`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The interface.
    #[arg(long)]
    iface: String,
    /// RX queues to serve: `all`, or a list like `0,1`.
    #[arg(long, default_value = "all")]
    queues: String,
    /// What the loop does with the packets it receives.
    #[arg(long, value_enum, default_value = "echo")]
    action: LoopAction,
    /// UDP echo ports (RFC 862), e.g. `7` or `7,9000-9010`.
    #[arg(long, default_value = "7")]
    echo_ports: String,
    /// XDP mode of the program: native (driver), skb (generic), or auto.
    #[arg(long, value_enum, default_value = "auto")]
    mode: Mode,
    /// Force copy mode for the sockets.
    #[arg(long, conflicts_with = "zero_copy")]
    copy: bool,
    /// Require zero-copy sockets (fails where the driver has no zero-copy, e.g. veth).
    #[arg(long)]
    zero_copy: bool,
    /// UMEM frame size.
    #[arg(long, default_value = "2048", value_parser = clap::builder::PossibleValuesParser::new(["2048", "4096"]).map(|s| s.parse::<u32>().expect("listed values are numbers")))]
    frame_size: u32,
    /// UMEM frames per queue (a power of two).
    #[arg(long, default_value_t = 4096)]
    frames: u32,
    /// Descriptors per RX batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Count IP 5-tuples and print the N largest flows each interval, in the JSON and in the
    /// metrics (0: no flow counting).
    #[arg(long, default_value_t = 0, value_name = "N")]
    flows: usize,
    /// Slots of each queue's flow table (allocated once; flows that find no slot are counted
    /// as overflow).
    #[arg(long, default_value_t = 65536, value_name = "SLOTS")]
    flow_table: usize,
    /// Write what the loops receive and send back to FILE as pcapng (direction and queue in
    /// each packet's options), through a bounded ring per queue: frames the ring has no room
    /// for are counted and reported, never waited for.
    #[arg(long, value_name = "FILE")]
    capture: Option<PathBuf>,
    /// Bytes kept of each captured frame.
    #[arg(long, default_value_t = 65535, value_parser = clap::value_parser!(u32).range(1..=65535))]
    snaplen: u32,
    /// Prefer busy polling on the sockets (SO_PREFER_BUSY_POLL) and never sleep when idle.
    /// The loop then runs the driver's receive work itself: give it a core of its own, on a
    /// NIC whose interrupts it can replace. Sharing its core with the interface's NAPI
    /// thread (threaded NAPI on veth) it is about 3x slower than the default.
    #[arg(long)]
    busy_poll: bool,
    /// Finish unfinished UDP checksums (only the pseudo-header sum, left by a sender with
    /// checksum offload, e.g. a veth peer with `tx` on) in echo replies, as the kernel would.
    #[arg(long)]
    complete_checksums: bool,
    /// CPUs to pin the queue threads to, in queue order, e.g. `1` or `0,1`.
    #[arg(long)]
    cores: Option<String>,
    /// Extra rules, tried before the defaults (same grammar as `load`).
    #[arg(long = "rule", value_name = "RULE")]
    rules: Vec<String>,
    #[command(flatten)]
    report: Reporting,
}

/// Arguments of `xdp-user gen`.
#[derive(clap::Args, Debug)]
struct GenArgs {
    /// The interface to send from.
    #[arg(long)]
    iface: String,
    /// The MAC address to send to (the target, or the next hop).
    #[arg(long)]
    dst_mac: String,
    /// The target's IP address (IPv4 or IPv6).
    #[arg(long)]
    dst: IpAddr,
    /// Our source address (default: the interface's own address of the same family).
    #[arg(long)]
    src: Option<IpAddr>,
    /// The target's UDP port.
    #[arg(long, default_value_t = 7)]
    dport: u16,
    /// Source port or range LOW-HIGH; flows take ports from it in turn.
    #[arg(long, default_value = "10000-10999")]
    sport: String,
    /// Frame size in bytes, without the FCS (64 by default: 60 + 4 on the wire is the
    /// minimum; ours needs room for a 20-byte stamp, so 62 for IPv4, 82 for IPv6).
    #[arg(long)]
    size: Option<usize>,
    /// Packets per second (default: as fast as possible).
    #[arg(long, value_parser = packet::cli::positive)]
    rate: Option<f64>,
    /// Packets to send (default: until --duration ends).
    #[arg(long)]
    count: Option<u64>,
    /// Number of flows (distinct source ports).
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Seconds to send (at most).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The RX queue replies arrive on (the socket's queue).
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// CPU to pin the generator to.
    #[arg(long)]
    core: Option<usize>,
    /// Serve Prometheus / OpenMetrics metrics at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
    /// On exit, print the results as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// Arguments of `xdp-user dump`.
#[derive(clap::Args, Debug)]
struct DumpArgs {
    /// An interface whose xdp-user program to capture from (repeatable: one pcapng
    /// interface block each).
    #[arg(long, required = true)]
    iface: Vec<String>,
    /// Where to write the pcapng: a file, or `-` for standard output.
    #[arg(short = 'w', long = "write", value_name = "FILE", default_value = "-")]
    write: String,
    /// Bytes kept of each frame (at most 1536).
    #[arg(long, default_value_t = 1536, value_parser = clap::value_parser!(u32).range(1..=1536))]
    snaplen: u32,
    /// Stop after writing this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Only frames this rule matches, in `load`'s grammar ("proto udp dport 9"); with an
    /// `action`, only those the program gave that action.
    #[arg(long = "match", value_name = "RULE")]
    matches: Option<String>,
    /// Only frames the program passed, dropped or redirected to AF_XDP.
    #[arg(long, value_parser = ["pass", "drop", "xsk"])]
    verdict: Option<String>,
    /// Only frames rule N decided (numbered from 1, in the order given to `load`).
    #[arg(long = "rule", value_name = "N")]
    rule: Option<u32>,
    /// On exit, print a JSON summary (to standard error when the capture goes to stdout).
    #[arg(long)]
    json: bool,
}

/// Arguments of `xdp-user cost`.
#[derive(clap::Args, Debug)]
struct CostArgs {
    /// A rule (repeatable), as for `load`.
    #[arg(long = "rule", value_name = "RULE")]
    rules: Vec<String>,
    /// A file of rules, as for `load`.
    #[arg(long = "rules", value_name = "FILE")]
    rules_file: Option<PathBuf>,
    /// Runs per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    repeat: u32,
    /// Also time this already-loaded XDP program (e.g. xdp-tools' xdp-filter, by the id
    /// `ip -d link` or `bpftool prog` shows), on the same frames, alternating with ours.
    /// Repeatable: each reference gets a column.
    #[arg(long = "reference-prog-id", value_name = "ID")]
    reference_prog_ids: Vec<u32>,
    /// Load the program with this log level (to see what logging costs).
    #[arg(long, value_enum, default_value = "off")]
    log_level: LogLevel,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

fn main() {
    let result = match Cli::parse().command {
        Command::Load(args) => load(args),
        Command::Run(args) => run(args),
        Command::Gen(args) => run_gen(args),
        Command::Cost(args) => cost(args),
        Command::Dump(args) => run_dump(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

impl LoadArgs {
    fn policy(&self) -> Policy {
        Policy {
            default: self.default_action.action(),
            malformed: self.malformed.action(),
            unparsed: self.unparsed.action(),
        }
    }
}

/// `gen` redirects its replies to its socket rather than filter: everything else goes on to
/// the kernel. `cost` measures with the same policy.
const PASS_ALL: Policy = Policy {
    default: Action::Pass,
    malformed: Action::Pass,
    unparsed: Action::Pass,
};

/// `run` takes malformed frames into the loop, which counts them and never answers them (the
/// kernel would answer some, e.g. a UDP datagram whose length field is short, with an ICMP
/// error); everything else no rule redirects goes on to the kernel.
const RUN_POLICY: Policy = Policy {
    default: Action::Pass,
    malformed: Action::Xsk,
    unparsed: Action::Pass,
};

impl RunArgs {
    fn copy_mode(&self) -> afxdp::CopyMode {
        if self.copy {
            afxdp::CopyMode::Copy
        } else if self.zero_copy {
            afxdp::CopyMode::ZeroCopy
        } else {
            afxdp::CopyMode::Auto
        }
    }
}

/// The rules of `--rule` and `--rules FILE`, in that order.
fn read_rules(rule_args: &[String], rules_file: Option<&std::path::Path>) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for r in rule_args {
        rules.push(rules::parse_rule(r)?);
    }
    if let Some(path) = rules_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read rules file {}", path.display()))?;
        rules.extend(rules::parse_rules_file(&text, &path.display().to_string())?);
    }
    Ok(rules)
}

fn load(args: LoadArgs) -> Result<()> {
    // Signals first: a SIGINT that comes while we attach must still detach cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))?;

    // Every rule is checked, and the tables written, before the program is attached: no
    // packet ever meets an empty or partial rule set.
    let policy = args.policy();
    let mut rules = read_rules(&args.rules, args.rules_file.as_deref())?;
    let mut watch = iface::IfaceWatch::new(&args.iface)?;
    let mut filter = XdpFilter::load_logging(&args.iface, args.report.log_level)?;
    filter.install(&rules, policy)?;
    let metrics = metrics::Metrics::start(args.report.metrics.as_deref(), "xdp-user")?;
    filter.attach(args.mode)?;
    let capture_stop = Arc::new(AtomicBool::new(false));
    let capture = match &args.capture {
        Some(path) => {
            let maps = dump::CaptureMaps::of_attached(&args.iface)?;
            let (path, stop) = (path.clone(), Arc::clone(&capture_stop));
            let opts = dump::DumpOptions {
                snaplen: args.snaplen,
                count: None,
                duration: None,
                selection: dump::Selection::default(),
            };
            eprintln!("xdp-user: capturing to {}", path.display());
            Some(std::thread::spawn(move || {
                dump::capture(
                    vec![maps],
                    &packet::capture::Output::File(path),
                    &opts,
                    &stop,
                )
            }))
        }
        None => None,
    };
    let mode = match filter.mode {
        Mode::Native => "native (driver)",
        _ => "skb (generic)",
    };
    eprintln!(
        "xdp-user: attached to {} in {mode} mode with {} rule(s), default {}, malformed {}, \
         unparsed {}",
        args.iface,
        rules.len(),
        policy.default.name(),
        policy.malformed.name(),
        policy.unparsed.name(),
    );
    let (mut reloads, mut reload_failures) = (0u64, 0u64);

    let start = Instant::now();
    let interval = Duration::from_secs_f64(args.report.interval);
    let mut last = filter.snapshot()?;
    let mut last_at = Instant::now();
    let mut next_print = last_at + interval;
    let mut next_metrics = Instant::now();
    let publish = |s: &Snapshot, reloads: metrics::Reloads| {
        if let Some(m) = &metrics {
            m.published
                .publish(metrics::xdp_families(&args.iface, s, Some(reloads)));
        }
    };
    loop {
        std::thread::sleep(Duration::from_millis(20));
        filter.flush_logs();
        if metrics.is_some() && Instant::now() >= next_metrics {
            let reloads = metrics::Reloads {
                done: reloads,
                failed: reload_failures,
            };
            publish(&filter.snapshot()?, reloads);
            next_metrics = Instant::now() + METRICS_REFRESH;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if args
            .report
            .duration
            .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        for change in watch.poll()? {
            eprintln!("xdp-user: {}: {change}", args.iface);
        }
        if reload.swap(false, Ordering::Relaxed) {
            match read_rules(&args.rules, args.rules_file.as_deref())
                .and_then(|r| filter.install(&r, policy).map(|done| (r, done)))
            {
                Ok((r, done)) => {
                    reloads += 1;
                    eprintln!(
                        "xdp-user: reloaded {} rule(s): rule set {} in force after {:.2} ms",
                        r.len(),
                        done.generation,
                        done.in_force_after.as_secs_f64() * 1e3
                    );
                    rules = r;
                }
                // A bad rules file keeps the old rules running: never leave the interface
                // without its filter because of a typo. `install` changes nothing a packet
                // can see unless it succeeds.
                Err(e) => {
                    reload_failures += 1;
                    eprintln!("xdp-user: reload failed, keeping the old rules: {e:#}");
                }
            }
        }
        if Instant::now() >= next_print {
            let now = filter.snapshot()?;
            let secs = last_at.elapsed().as_secs_f64();
            println!("{}", rate_line(start.elapsed(), &last, &now, secs));
            last = now;
            last_at = Instant::now();
            next_print = last_at + interval;
        }
    }
    // Capture stops while the program still runs (it switches capture off itself).
    capture_stop.store(true, Ordering::Relaxed);
    let captured = match capture.map(|t| t.join()) {
        Some(Ok(r)) => Some(r?),
        Some(Err(_)) => bail!("the capture thread panicked"),
        None => None,
    };
    // Detach first, then read: no packet is counted after the totals are taken.
    filter.detach();
    filter.flush_logs();
    let total = filter.snapshot()?;
    if let (Some(c), Some(path)) = (&captured, &args.capture) {
        eprintln!(
            "xdp-user: captured {} frame(s) to {}; {} lost to a full capture ring",
            c.written,
            path.display(),
            c.lost
        );
    }
    // The last scrape sees the totals the JSON reports.
    publish(
        &total,
        metrics::Reloads {
            done: reloads,
            failed: reload_failures,
        },
    );
    eprintln!("xdp-user: detached from {}", args.iface);
    eprintln!("{}", summary(&total, &rules));
    if args.report.json {
        let mut v = to_json(&args.iface, mode, start.elapsed(), &total, &rules);
        v["policy"] = serde_json::json!({
            "default": policy.default.name(),
            "malformed": policy.malformed.name(),
            "unparsed": policy.unparsed.name(),
        });
        v["reloads"] = reloads.into();
        v["reload_failures"] = reload_failures.into();
        v["capture"] = captured
            .map(|c| serde_json::json!({"written": c.written, "seen": c.seen, "lost": c.lost}))
            .unwrap_or(serde_json::Value::Null);
        println!("{v}");
    }
    Ok(())
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            anyhow::anyhow!("--dst-mac {s} is not a MAC address like 02:00:00:00:00:02")
        })?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("--dst-mac {s} is not a MAC address like 02:00:00:00:00:02"))
}

/// The interface's first global address of the family of `like` (`ip -o addr show`).
fn iface_address(iface: &str, like: &IpAddr) -> Result<IpAddr> {
    let family = if like.is_ipv4() { "-4" } else { "-6" };
    let out = std::process::Command::new("ip")
        .args([
            "-o", family, "addr", "show", "dev", iface, "scope", "global",
        ])
        .output()
        .context("could not run `ip` to find the source address")?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet" && *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .with_context(|| {
            let name = if like.is_ipv4() { "IPv4" } else { "IPv6" };
            format!("{iface} has no global {name} address to send from; give one with --src")
        })
}

/// In copy mode the kernel copies a frame into a UMEM frame after XDP's headroom: a frame of
/// the new MTU that does not fit is dropped by the kernel (counted as `rx_dropped`).
fn warn_if_frames_do_not_fit(mtu: u32, frame_size: u32) {
    // Ethernet header and two VLAN tags; XDP_PACKET_HEADROOM.
    let (l2, headroom) = (14 + 8, 256);
    if mtu + l2 > frame_size - headroom {
        eprintln!(
            "xdp-user: frames of MTU {mtu} no longer fit the UMEM frames ({frame_size} bytes, \
             {headroom} of them headroom): the kernel drops them (rx_dropped); restart with \
             --frame-size 4096, or lower the MTU"
        );
    }
}

fn run_gen(args: GenArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let dst_mac = parse_mac(&args.dst_mac)?;
    let sport = match args.sport.split_once('-') {
        Some((a, b)) => (a.parse::<u16>()?, b.parse::<u16>()?),
        None => {
            let p = args.sport.parse::<u16>()?;
            (p, p)
        }
    };
    if sport.0 > sport.1 || sport.0 == 0 {
        bail!(
            "--sport {} must be a port or a range LOW-HIGH of ports 1-65535",
            args.sport
        );
    }
    xdp::if_index(&args.iface)?;
    let src = match args.src {
        Some(s) => s,
        None => iface_address(&args.iface, &args.dst)?,
    };
    let size = args
        .size
        .unwrap_or(if args.dst.is_ipv4() { 64 } else { 90 });
    let cfg = generator::GenConfig {
        src_mac: afxdp::mac_address(&args.iface)?,
        dst_mac,
        src,
        dst: args.dst,
        dport: args.dport,
        sport,
        size,
        flows: args.flows,
        rate: args.rate,
        count: args.count,
        duration: args.duration,
        batch: 64,
    };
    // Replies (UDP from the target's port) go to our socket; everything else to the kernel.
    let rules = vec![rules::parse_rule(&format!(
        "src {} proto udp sport {} action xsk",
        args.dst, args.dport
    ))?];
    let mut filter = XdpFilter::load(&args.iface)?;
    filter.install(&rules, PASS_ALL)?;
    let socket = afxdp::QueueSocket::bind(afxdp::QueueSettings {
        iface: args.iface.clone(),
        queue: args.queue,
        frames: 4096,
        frame_size: 2048,
        batch: 64,
        copy_mode: afxdp::CopyMode::Auto,
        busy_poll: false,
        core: args.core,
        action: LoopAction::Count,
        flow_slots: 0,
        top_flows: 0,
    })?;
    filter.register_socket(args.queue, socket.raw_fd())?;
    filter.attach(Mode::Auto)?;
    if let Some(core) = args.core {
        afxdp::pin_to_core(core);
    }
    eprintln!(
        "xdp-user gen: {} -> {}:{} ({}), {size}-byte frames, {} flow(s), rate {}",
        src,
        args.dst,
        args.dport,
        args.dst_mac,
        args.flows,
        args.rate.map_or("unlimited".into(), |r| format!("{r} pps"))
    );
    // The interface may go away under the generator: a watcher stops it, and the run fails.
    let gone: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Arc::default();
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, gone, finished) = (Arc::clone(&stop), Arc::clone(&gone), Arc::clone(&finished));
        let mut watch = iface::IfaceWatch::new(&args.iface)?;
        let iface = args.iface.clone();
        std::thread::spawn(move || {
            while !finished.load(Ordering::Relaxed) {
                match watch.poll() {
                    Err(e) => {
                        *gone.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    Ok(changes) => {
                        for change in changes {
                            eprintln!("xdp-user gen: {iface}: {change}");
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let metrics = metrics::Metrics::start(args.metrics.as_deref(), "xdp-user gen")?;
    let publish = |r: &generator::GenReport| {
        if let Some(m) = &metrics {
            m.published.publish(metrics::gen_families(&args.iface, r));
        }
    };
    let r = generator::generate(socket, &cfg, &stop, &mut |r| publish(r));
    finished.store(true, Ordering::Relaxed);
    if watcher.join().is_err() {
        bail!("the thread watching {} panicked", args.iface);
    }
    if let Some(e) = gone.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let r = r?;
    publish(&r);
    filter.detach();
    let loss = if r.sent == 0 {
        0.0
    } else {
        1.0 - r.received as f64 / r.sent as f64
    };
    let secs = r.send_seconds.max(1e-9);
    let (p50, p99, max) = (
        r.latency.percentile(0.5),
        r.latency.percentile(0.99),
        r.latency.max(),
    );
    eprintln!(
        "sent {} received {} ({:.2}% lost) duplicates {} reordered {} stale {} foreign {}; \
         {:.0} pps sent, {:.0} pps received; latency p50 {p50} us p99 {p99} us max {max} us",
        r.sent,
        r.received,
        loss * 100.0,
        r.duplicates,
        r.reordered,
        r.stale,
        r.foreign,
        r.sent as f64 / secs,
        r.received as f64 / secs
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "sent": r.sent, "queued": r.queued, "received": r.received, "loss": loss,
                "duplicates": r.duplicates, "reordered": r.reordered, "stale": r.stale,
                "foreign": r.foreign,
                "seconds": secs,
                "pps_sent": r.sent as f64 / secs, "pps_received": r.received as f64 / secs,
                "latency_us": {"p50": p50, "p99": p99, "max": max},
            })
        );
    }
    Ok(())
}

fn run_dump(args: DumpArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let selection = dump::Selection {
        action: args
            .verdict
            .as_deref()
            .map(dump::Selection::action_of)
            .transpose()?,
        rule: args.rule,
        matches: args
            .matches
            .as_deref()
            .map(dump::Selection::parse_match)
            .transpose()?,
    };
    let maps = args
        .iface
        .iter()
        .map(|i| dump::CaptureMaps::of_attached(i))
        .collect::<Result<Vec<_>>>()?;
    let output = packet::capture::Output::parse(&args.write);
    eprintln!(
        "xdp-user dump: capturing on {} to {}",
        args.iface.join(", "),
        if args.write == "-" {
            "standard output"
        } else {
            &args.write
        }
    );
    let opts = dump::DumpOptions {
        snaplen: args.snaplen,
        count: args.count,
        duration: args.duration,
        selection,
    };
    let r = dump::capture(maps, &output, &opts, &stop)?;
    eprintln!(
        "xdp-user dump: {} frame(s) seen, {} written, {} lost to a full capture ring{}",
        r.seen,
        r.written,
        r.lost,
        if r.lost > 0 {
            " (the reader could not keep up: narrow it with --match/--verdict, or lower --snaplen)"
        } else {
            ""
        }
    );
    if args.json {
        let v = serde_json::json!({"seen": r.seen, "written": r.written, "lost": r.lost});
        if args.write == "-" {
            eprintln!("{v}");
        } else {
            println!("{v}");
        }
    }
    Ok(())
}

fn parse_list(what: &str, s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|x| {
            x.trim().parse::<u32>().with_context(|| {
                format!("{what}: `{x}` is not a number (expected a list like 0,1)")
            })
        })
        .collect()
}

/// The rules `run` installs: the user's, then the defaults of the action.
fn run_rules(args: &RunArgs) -> Result<Vec<Rule>> {
    let mut texts: Vec<String> = args.rules.clone();
    match args.action {
        LoopAction::Echo => {
            for item in args.echo_ports.split(',') {
                texts.push(format!("proto udp dport {} action xsk", item.trim()));
            }
            texts.push("proto icmp icmp-type 8 action xsk".into());
            texts.push("proto icmpv6 icmp-type 128 action xsk".into());
        }
        // Without rules, only UDP goes to the loop: the interface's TCP (ssh!), ARP and
        // neighbour discovery keep working.
        _ if args.rules.is_empty() => texts.push("proto udp action xsk".into()),
        _ => {}
    }
    texts.iter().map(|t| Ok(rules::parse_rule(t)?)).collect()
}

fn run(args: RunArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let echo_ports = packet::echo::PortSet::from_list(&args.echo_ports)
        .map_err(|e| anyhow::anyhow!("--echo-ports {}: {e}", args.echo_ports))?;
    let rules = run_rules(&args)?;
    xdp::if_index(&args.iface)?;
    let available = afxdp::rx_queue_count(&args.iface)?;
    let queues: Vec<u32> = if args.queues == "all" {
        (0..available).collect()
    } else {
        parse_list("--queues", &args.queues)?
    };
    if let Some(q) = queues.iter().find(|q| **q >= available) {
        bail!(
            "{} has {available} RX queue(s); queue {q} does not exist",
            args.iface
        );
    }
    let cores = match &args.cores {
        Some(c) => parse_list("--cores", c)?,
        None => Vec::new(),
    };
    let mut responder = packet::echo::Responder::new();
    responder.set_echo_ports(echo_ports);
    responder.set_local_mac(afxdp::mac_address(&args.iface)?);
    responder.set_complete_partial_checksums(args.complete_checksums);

    // Load, install the rules, bind and register every socket, and only then attach: no
    // packet meets a half-built data path.
    let mut watch = iface::IfaceWatch::new(&args.iface)?;
    let mut filter = XdpFilter::load_logging(&args.iface, args.report.log_level)?;
    filter.install(&rules, RUN_POLICY)?;
    let mut sockets = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let socket = afxdp::QueueSocket::bind(afxdp::QueueSettings {
            iface: args.iface.clone(),
            queue: *q,
            frames: args.frames,
            frame_size: args.frame_size,
            batch: args.batch,
            copy_mode: args.copy_mode(),
            busy_poll: args.busy_poll,
            core: cores.get(i).map(|c| *c as usize),
            action: args.action,
            flow_slots: if args.flows > 0 { args.flow_table } else { 0 },
            top_flows: args.flows,
        })?;
        filter.register_socket(*q, socket.raw_fd())?;
        sockets.push(socket);
    }
    let metrics = metrics::Metrics::start(args.report.metrics.as_deref(), "xdp-user")?;
    filter.attach(args.mode)?;
    let mode = match filter.mode {
        Mode::Native => "native",
        _ => "skb",
    };
    let zc: Vec<String> = sockets
        .iter()
        .map(|s| {
            format!(
                "q{}:{}",
                s.queue(),
                if s.zero_copy { "zero-copy" } else { "copy" }
            )
        })
        .collect();
    eprintln!(
        "xdp-user: {:?} on {} ({mode} XDP), {} queue(s) [{}], UMEM {} x {} B per queue, {} rule(s)",
        args.action,
        args.iface,
        sockets.len(),
        zc.join(" "),
        args.frames,
        args.frame_size,
        rules.len()
    );
    if sockets.iter().any(|s| !s.zero_copy) && args.copy_mode() == afxdp::CopyMode::Auto {
        eprintln!(
            "xdp-user: zero-copy is not available on {}: copy mode",
            args.iface
        );
    }

    let fds: Vec<_> = sockets.iter().map(|s| s.raw_fd()).collect();
    let responder = Arc::new(responder);
    let (capture, mut taps) = match &args.capture {
        Some(path) => {
            let queues: Vec<u32> = sockets.iter().map(|s| s.queue()).collect();
            let (c, taps) = packet::capture::start(
                &packet::capture::Output::File(path.clone()),
                &args.iface,
                &queues,
                args.snaplen as usize,
            )
            .map_err(anyhow::Error::msg)?;
            eprintln!("xdp-user: capturing to {}", path.display());
            (Some(c), taps.into_iter().map(Some).collect())
        }
        None => (None, Vec::new()),
    };
    taps.resize_with(sockets.len(), || None);
    let mut running = Vec::new();
    for (socket, tap) in sockets.into_iter().zip(taps) {
        running.push(afxdp::spawn(
            socket,
            Arc::clone(&responder),
            Arc::clone(&stop),
            tap,
        )?);
    }

    let start = Instant::now();
    let interval = Duration::from_secs_f64(args.report.interval);
    let mut last: Vec<packet::counter::LoopCounters> =
        running.iter().map(|r| r.stats.counts()).collect();
    let mut last_at = Instant::now();
    let mut gone = None;
    let mut hinted = false;
    let publish = |xdp: &Snapshot,
                   queues: &[(u32, packet::counter::LoopCounters, afxdp::KernelStats)],
                   top: &TopFlows| {
        if let Some(m) = &metrics {
            let mut families = metrics::xdp_families(&args.iface, xdp, None);
            families.extend(metrics::loop_families(&args.iface, queues));
            if args.flows > 0 {
                families.extend(packet::metrics::flow_families(&args.iface, top));
            }
            m.published.publish(families);
        }
    };
    let mut next_metrics = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        filter.flush_logs();
        if metrics.is_some() && Instant::now() >= next_metrics {
            let queues: Vec<_> = running
                .iter()
                .zip(&fds)
                .map(|(r, fd)| (r.queue, r.stats.counts(), afxdp::kernel_stats_of(*fd)))
                .collect();
            publish(
                &filter.snapshot()?,
                &queues,
                &merged_top(&running, args.flows),
            );
            next_metrics = Instant::now() + METRICS_REFRESH;
        }
        if args
            .report
            .duration
            .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        if running.iter().any(|r| r.handle.is_finished()) {
            eprintln!("xdp-user: a queue thread ended unexpectedly; stopping");
            break;
        }
        match watch.poll() {
            Err(e) => {
                gone = Some(e);
                break;
            }
            Ok(changes) => {
                for change in changes {
                    eprintln!("xdp-user: {}: {change}", args.iface);
                    if let iface::LinkChange::Mtu { to, .. } = change {
                        warn_if_frames_do_not_fit(to, args.frame_size);
                    }
                }
            }
        }
        if !hinted && !args.complete_checksums {
            let partial: u64 = running
                .iter()
                .map(|r| r.stats.counts().checksum_partial)
                .sum();
            if partial > 0 {
                eprintln!(
                    "xdp-user: {}",
                    packet::echo::partial_checksum_hint(&args.iface, partial)
                );
                hinted = true;
            }
        }
        if last_at.elapsed() >= interval {
            let secs = last_at.elapsed().as_secs_f64();
            for (i, r) in running.iter().enumerate() {
                let now = r.stats.counts();
                let k = afxdp::kernel_stats_of(fds[i]);
                let rate = |a: u64, b: u64| (b - a) as f64 / secs;
                println!(
                    "{:>6.1}s q{}  rx {:>9.0} pps  tx {:>9.0} pps  dropped {:>7.0} pps  | kernel: rx dropped {} rx ring full {} fill ring empty {} invalid descs {}",
                    start.elapsed().as_secs_f64(),
                    r.queue,
                    rate(last[i].rx, now.rx),
                    rate(last[i].tx, now.tx),
                    rate(
                        last[i].dropped + last[i].tx_dropped,
                        now.dropped + now.tx_dropped
                    ),
                    k.rx_dropped,
                    k.rx_ring_full,
                    k.fill_ring_empty,
                    k.invalid_descs
                );
                last[i] = now;
            }
            if args.flows > 0 {
                print!("{}", merged_top(&running, args.flows).text());
            }
            last_at = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut reports = Vec::new();
    let mut tops = Vec::new();
    for r in running {
        let report = r
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("queue {} thread panicked", r.queue))?;
        let protocols = *r.stats.protocols.lock().unwrap_or_else(|e| e.into_inner());
        tops.push(
            r.stats
                .top_flows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        );
        reports.push((r.stats.counts(), protocols, report));
    }
    let top = TopFlows::merge(&tops, args.flows);
    // The loops have stopped: the writer empties the rings and closes the file.
    let captured = capture
        .map(|c| c.finish().map_err(anyhow::Error::msg))
        .transpose()?;
    if let (Some(c), Some(path)) = (&captured, &args.capture) {
        eprintln!(
            "xdp-user: captured {} frame(s) to {}{}",
            c.written,
            path.display(),
            if c.dropped > 0 {
                format!(
                    "; {} frame(s) LOST to full capture rings (the disk or the writer could not \
                     keep up: try a smaller --snaplen)",
                    c.dropped
                )
            } else {
                String::new()
            }
        );
    }
    filter.detach();
    if let Some(e) = gone {
        // The queues are stopped and their threads joined; nothing is left to clean up.
        return Err(e);
    }
    filter.flush_logs();
    let xdp_counters = filter.snapshot()?;
    // The last scrape sees the totals the JSON reports.
    let queues: Vec<_> = reports
        .iter()
        .map(|(c, _, report)| (report.queue, *c, report.kernel))
        .collect();
    publish(&xdp_counters, &queues, &top);
    if args.flows > 0 {
        eprint!("{}", top.text());
    }
    eprintln!("xdp-user: detached from {}", args.iface);

    let mut total = packet::counter::LoopCounters::default();
    let mut protocols = packet::counter::ProtocolCounters::default();
    let mut lost = 0;
    let mut queue_json = Vec::new();
    for (c, p, report) in &reports {
        total.merge(c);
        protocols.merge(p);
        lost += report.frames.lost();
        let f = &report.frames;
        eprintln!(
            "queue {}: rx {} tx {} echoed {} reflected {} counted {} dropped {} malformed {} not-for-us {} tx-ring-full {} wakeups {}; frames: {} total, {} free, held by the kernel {} for RX ({} in the fill ring) and {} for TX, {} lost; wake-ups failed: {} busy, {} link down",
            report.queue,
            c.rx,
            c.tx,
            c.echoed,
            c.reflected,
            c.counted,
            c.dropped,
            c.malformed,
            c.not_for_us,
            c.tx_dropped,
            c.wakeups,
            f.total,
            f.free,
            f.kernel_fill,
            f.fill_ring,
            f.kernel_tx,
            f.lost(),
            report.errors.busy,
            report.errors.link_down,
        );
        queue_json.push(serde_json::json!({
            "queue": report.queue,
            "zero_copy": report.zero_copy,
            "rx": c.rx, "tx": c.tx, "echoed": c.echoed, "reflected": c.reflected,
            "counted": c.counted, "dropped": c.dropped + c.tx_dropped, "malformed": c.malformed,
            "not_for_us": c.not_for_us, "wakeups": c.wakeups, "tx_ring_full": c.tx_dropped,
            "idle_sleeps": c.idle_sleeps, "checksum_partial": c.checksum_partial,
            "frames": {
                "total": f.total, "free": f.free,
                "kernel_rx": f.kernel_fill, "fill_ring": f.fill_ring, "kernel_tx": f.kernel_tx,
                "in_loop": f.in_loop, "violations": f.violations, "lost": f.lost(),
            },
            "ring_errors": {
                "busy": report.errors.busy,
                "link_down": report.errors.link_down,
                "fatal": report.errors.fatal,
            },
            "kernel": {
                "rx_dropped": report.kernel.rx_dropped,
                "rx_ring_full": report.kernel.rx_ring_full,
                "fill_ring_empty": report.kernel.fill_ring_empty,
                "invalid_descs": report.kernel.invalid_descs,
            },
        }));
    }
    if lost > 0 {
        eprintln!(
            "xdp-user: BUG: {lost} UMEM frame(s) with broken ownership at exit (still in the \
             loop, or handed back by the kernel without having been lent to it)"
        );
    }
    if args.report.json {
        let mut proto = serde_json::Map::new();
        for (name, c) in protocols.classes() {
            proto.insert(name.into(), c.packets.into());
        }
        println!(
            "{}",
            serde_json::json!({
                "iface": args.iface,
                "mode": mode,
                "action": format!("{:?}", args.action).to_lowercase(),
                "seconds": start.elapsed().as_secs_f64(),
                "rx": total.rx, "tx": total.tx, "echoed": total.echoed,
                "reflected": total.reflected, "counted": total.counted,
                "dropped": total.dropped + total.tx_dropped, "malformed": total.malformed,
                "not_for_us": total.not_for_us, "wakeups": total.wakeups,
                "checksum_partial": total.checksum_partial,
                "frames_lost": lost,
                "protocols": proto,
                "queues": queue_json,
                "flows": if args.flows > 0 { top.to_json() } else { serde_json::Value::Null },
                "capture": captured.map(|c| serde_json::json!({
                    "file": args.capture.as_ref().map(|p| p.display().to_string()),
                    "written": c.written, "dropped": c.dropped,
                })),
                "xdp": {
                    "xsk": xdp_counters.get(stat::ACTION_XSK).packets,
                    "pass": xdp_counters.get(stat::ACTION_PASS).packets,
                    "drop": xdp_counters.get(stat::ACTION_DROP).packets,
                    "xsk_fallback": xdp_counters.get(stat::XSK_FALLBACK).packets,
                },
            })
        );
    }
    // A queue that stopped on a socket error fails the run, after the report.
    if let Some((_, _, r)) = reports.iter().find(|(_, _, r)| r.errors.fatal.is_some()) {
        bail!(
            "queue {} of {} stopped: {}",
            r.queue,
            args.iface,
            r.errors.fatal.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// The `n` largest flows of a run's queues now.
fn merged_top(running: &[afxdp::RunningQueue], n: usize) -> TopFlows {
    let tops: Vec<TopFlows> = running
        .iter()
        .map(|r| {
            r.stats
                .top_flows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
        .collect();
    TopFlows::merge(&tops, n)
}

/// `xdp-user cost`: ns per packet of the filter with the given rules, and of a bare XDP_DROP
/// program, for a few kinds of packet, measured alternately in the same run; with
/// `--reference-prog-id`, also of programs others loaded (xdp-filter), in the same loop.
fn cost(args: CostArgs) -> Result<()> {
    let (repeat, json) = (args.repeat, args.json);
    let rules = read_rules(&args.rules, args.rules_file.as_deref())?;
    // Any interface will do: nothing is attached. Loopback always exists.
    let mut filter = XdpFilter::load_logging("lo", args.log_level)?;
    filter.install(&rules, PASS_ALL)?;
    // Each reference is found once; its handle keeps it loaded while we time it.
    let references = args
        .reference_prog_ids
        .iter()
        .map(|&id| XdpFilter::loaded_program(id).map(|p| (id, p)))
        .collect::<Result<Vec<_>>>()?;
    let frames: [(&str, &[u8]); 5] = [
        ("udp4", &packet::fixtures::UDP4_ECHO_REQUEST),
        ("tcp4_syn", &packet::fixtures::TCP_SYN),
        ("icmp6_echo", &packet::fixtures::ICMPV6_ECHO_REQUEST),
        ("udp6", &packet::fixtures::UDP6_ECHO_REQUEST),
        // To a port the benchmark's 16 rules drop: the cost of a decision that drops.
        ("tcp4_syn_1003", &tcp_syn_to_port(1003)),
    ];
    println!(
        "{} rule(s), {repeat} runs per figure (BPF_PROG_TEST_RUN)",
        rules.len()
    );
    let mut header = format!(
        "{:<12} {:>10} {:>10} {:>7}",
        "packet", "filter ns", "bare ns", "ratio"
    );
    for (id, _) in &references {
        header.push_str(&format!(" {:>14}", format!("prog {id} ns")));
    }
    println!("{header}");
    let mut rows = Vec::new();
    for (name, frame) in frames {
        // Alternate filter, bare and the references three times and keep the fastest of
        // each: the least disturbed by the rest of the machine.
        let (mut best_filter, mut best_bare) = (f64::MAX, f64::MAX);
        let mut best_ref = vec![f64::MAX; references.len()];
        let (mut filter_action, mut bare_action) = (0, 0);
        let mut ref_action = vec![0u32; references.len()];
        for _ in 0..3 {
            let (a, d) = filter.test_run("xdp_filter", frame, repeat)?;
            (filter_action, best_filter) = (a, best_filter.min(d.as_nanos() as f64));
            let (a, d) = filter.test_run("xdp_drop_bare", frame, repeat)?;
            (bare_action, best_bare) = (a, best_bare.min(d.as_nanos() as f64));
            for (i, (id, prog)) in references.iter().enumerate() {
                let (a, d) = XdpFilter::test_run_loaded(prog, frame, repeat)
                    .with_context(|| format!("timing program {id}"))?;
                ref_action[i] = a;
                best_ref[i] = best_ref[i].min(d.as_nanos() as f64);
            }
        }
        // The kernel reports whole nanoseconds per run; a bare program may round to 0.
        let ratio = best_filter / best_bare.max(1.0);
        let mut line = format!("{name:<12} {best_filter:>10.0} {best_bare:>10.0} {ratio:>7.2}");
        for ns in &best_ref {
            line.push_str(&format!(" {ns:>14.0}"));
        }
        println!("{line}");
        let refs: Vec<_> = references
            .iter()
            .zip(best_ref.iter().zip(&ref_action))
            .map(
                |((id, _), (ns, action))| serde_json::json!({"id": id, "ns": ns, "action": action}),
            )
            .collect();
        rows.push(serde_json::json!({
            "packet": name, "filter_ns": best_filter, "bare_ns": best_bare, "ratio": ratio,
            // XDP actions: 1 drop, 2 pass (so a reference can be checked to decide alike).
            "filter_action": filter_action, "bare_action": bare_action,
            // The first reference, as before there could be several.
            "reference_ns": best_ref.first(),
            "references": refs,
        }));
    }
    // Reloads: the same rule set installed again and again through the atomic path (write
    // the other slot, switch), as SIGHUP does; then the grace period that frees the old slot
    // for the next reload, which runs in the background and is timed apart.
    let mut in_force = Vec::new();
    let mut retired = Vec::new();
    for _ in 0..RELOADS {
        let done = filter.install(&rules, PASS_ALL)?;
        in_force.push(done.in_force_after.as_secs_f64() * 1e3);
        let t = Instant::now();
        filter.wait_retired();
        retired.push((done.in_force_after + t.elapsed()).as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (in_force, retired) = (median(&mut in_force), median(&mut retired));
    println!(
        "reload of {} rule(s), median of {RELOADS}: in force after {in_force:.2} ms; the old \
         set retired after {retired:.2} ms (an RCU grace period, in the background)",
        rules.len()
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "rules": rules.len(), "repeat": repeat, "rows": rows,
                "reload_ms": {"in_force_median": in_force, "retired_median": retired},
            })
        );
    }
    Ok(())
}

/// Reloads timed by `cost`.
const RELOADS: usize = 21;

/// The fixture TCP SYN (IPv4, to port 80) sent to `port` instead, its checksum kept right.
fn tcp_syn_to_port(port: u16) -> [u8; 74] {
    let mut f = packet::fixtures::TCP_SYN;
    // Ethernet (14) + IPv4 without options (20): the TCP header; its checksum at 16.
    const DPORT: usize = 14 + 20 + 2;
    const CHECK: usize = 14 + 20 + 16;
    let old = u16::from_be_bytes([f[DPORT], f[DPORT + 1]]);
    let check = u16::from_be_bytes([f[CHECK], f[CHECK + 1]]);
    let check = packet::checksum::update_word(check, old, port);
    f[DPORT..DPORT + 2].copy_from_slice(&port.to_be_bytes());
    f[CHECK..CHECK + 2].copy_from_slice(&check.to_be_bytes());
    f
}

fn rate_line(t: Duration, a: &Snapshot, b: &Snapshot, secs: f64) -> String {
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

const PROTOCOLS: [(&str, u32); 8] = [
    ("arp", stat::PROTO_ARP),
    ("ipv4", stat::PROTO_IPV4),
    ("ipv6", stat::PROTO_IPV6),
    ("tcp", stat::PROTO_TCP),
    ("udp", stat::PROTO_UDP),
    ("icmp", stat::PROTO_ICMP),
    ("icmpv6", stat::PROTO_ICMPV6),
    ("other", stat::PROTO_OTHER),
];

fn summary(s: &Snapshot, rules: &[Rule]) -> String {
    let mut out = format!(
        "actions: pass {} drop {} xsk {} (xsk without a socket, passed: {}); malformed {}; \
         unparsed {}; no rule matched: {}; fragments: first {} later {}\nprotocols:",
        s.get(stat::ACTION_PASS).packets,
        s.get(stat::ACTION_DROP).packets,
        s.get(stat::ACTION_XSK).packets,
        s.get(stat::XSK_FALLBACK).packets,
        s.get(stat::MALFORMED).packets,
        s.get(stat::UNPARSED).packets,
        s.get(stat::DEFAULT_ACTION).packets,
        s.get(stat::FRAG_FIRST).packets,
        s.get(stat::FRAG_LATER).packets,
    );
    for (name, slot) in PROTOCOLS {
        out.push_str(&format!(" {name} {}", s.get(slot).packets));
    }
    for (r, c) in rules.iter().zip(&s.rules) {
        out.push_str(&format!(
            "\nrule `{}`: {} packets, {} bytes",
            r.text, c.packets, c.bytes
        ));
    }
    out
}

fn to_json(
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
        .map(|(r, c)| serde_json::json!({"rule": r.text, "packets": c.packets, "bytes": c.bytes}))
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
    })
}

#[cfg(test)]
mod cost_tests {
    #[test]
    fn the_syn_to_a_dropped_port_keeps_its_checksums_right() {
        let f = super::tcp_syn_to_port(1003);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 1003);
        packet::verify::verify_checksums(&f).expect("checksums");
        assert_ne!(f, packet::fixtures::TCP_SYN);
    }
}
