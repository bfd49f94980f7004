//! `xdp-user`: the user-space side of the XDP data path.
//!
//! - `xdp-user load`: attach the XDP filter/counter to an interface, install rules, print
//!   rates, reload rules on SIGHUP, detach on SIGINT/SIGTERM or when `--duration` ends.

mod rules;
mod xdp;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use packet::abi::{Action, Counter, stat};
use rules::Rule;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xdp::{Mode, Snapshot, XdpFilter};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DefaultAction {
    Pass,
    Drop,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP filter/counter to an interface and print its counters.
    Load {
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
        /// A file of rules, one per line, `#` comments. Reloaded on SIGHUP.
        #[arg(long = "rules", value_name = "FILE")]
        rules_file: Option<PathBuf>,
        /// What happens to packets that match no rule (and to non-IP and malformed frames).
        #[arg(long = "default", value_enum, default_value = "pass")]
        default_action: DefaultAction,
        /// Seconds between lines of rates.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Detach and exit after this many seconds (default: run until SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<f64>,
        /// On exit, print the counters as one JSON object on the last line of stdout.
        #[arg(long)]
        json: bool,
    },
    /// Measure the XDP program's cost per packet with a rule set, in the kernel
    /// (BPF_PROG_TEST_RUN, no interface needed), beside a bare XDP_DROP program in the same run.
    Cost {
        /// A rule (repeatable), as for `load`.
        #[arg(long = "rule", value_name = "RULE")]
        rules: Vec<String>,
        /// A file of rules, as for `load`.
        #[arg(long = "rules", value_name = "FILE")]
        rules_file: Option<PathBuf>,
        /// Runs per measurement.
        #[arg(long, default_value_t = 2_000_000)]
        repeat: u32,
        /// Print one JSON object on the last line of stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let result = match Cli::parse().command {
        Command::Load {
            iface,
            mode,
            rules,
            rules_file,
            default_action,
            interval,
            duration,
            json,
        } => load(LoadArgs {
            iface,
            mode,
            rules,
            rules_file,
            default: match default_action {
                DefaultAction::Pass => Action::Pass,
                DefaultAction::Drop => Action::Drop,
            },
            interval,
            duration,
            json,
        }),
        Command::Cost {
            rules,
            rules_file,
            repeat,
            json,
        } => cost(&rules, rules_file, repeat, json),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

struct LoadArgs {
    iface: String,
    mode: Mode,
    rules: Vec<String>,
    rules_file: Option<PathBuf>,
    default: Action,
    interval: f64,
    duration: Option<f64>,
    json: bool,
}

/// The rules of `--rule` and `--rules FILE`, in that order.
fn read_rules(args: &LoadArgs) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for r in &args.rules {
        rules.push(rules::parse_rule(r)?);
    }
    if let Some(path) = &args.rules_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read rules file {}", path.display()))?;
        rules.extend(rules::parse_rules_file(&text, &path.display().to_string())?);
    }
    Ok(rules)
}

fn load(args: LoadArgs) -> Result<()> {
    if args.interval.is_nan() || args.interval <= 0.0 {
        bail!("--interval must be a positive number of seconds");
    }
    // Signals first: a SIGINT that comes while we attach must still detach cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))?;

    // Every rule is checked, and the tables written, before the program is attached: no
    // packet ever meets an empty or partial rule set.
    let mut rules = read_rules(&args)?;
    let mut filter = XdpFilter::load(&args.iface)?;
    filter.install(&rules, args.default)?;
    filter.attach(args.mode)?;
    let mode = match filter.mode {
        Mode::Native => "native (driver)",
        _ => "skb (generic)",
    };
    eprintln!(
        "xdp-user: attached to {} in {mode} mode with {} rule(s), default {}",
        args.iface,
        rules.len(),
        args.default.name()
    );

    let start = Instant::now();
    let interval = Duration::from_secs_f64(args.interval);
    let mut last = filter.snapshot()?;
    let mut last_at = Instant::now();
    let mut next_print = last_at + interval;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if args
            .duration
            .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
        {
            break;
        }
        if reload.swap(false, Ordering::Relaxed) {
            match read_rules(&args).and_then(|r| filter.install(&r, args.default).map(|()| r)) {
                Ok(r) => {
                    eprintln!("xdp-user: reloaded {} rule(s)", r.len());
                    rules = r;
                }
                // A bad rules file keeps the old rules running: never leave the
                // interface without its filter because of a typo.
                Err(e) => eprintln!("xdp-user: reload failed, keeping the old rules: {e:#}"),
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
    let total = filter.snapshot()?;
    filter.detach();
    eprintln!("xdp-user: detached from {}", args.iface);
    eprintln!("{}", summary(&total, &rules));
    if args.json {
        println!(
            "{}",
            to_json(&args.iface, mode, start.elapsed(), &total, &rules)
        );
    }
    Ok(())
}

/// `xdp-user cost`: ns per packet of the filter with the given rules, and of a bare XDP_DROP
/// program, for a few kinds of packet, measured alternately in the same run.
fn cost(rule_args: &[String], rules_file: Option<PathBuf>, repeat: u32, json: bool) -> Result<()> {
    let args = LoadArgs {
        iface: String::new(),
        mode: Mode::Auto,
        rules: rule_args.to_vec(),
        rules_file,
        default: Action::Pass,
        interval: 1.0,
        duration: None,
        json,
    };
    let rules = read_rules(&args)?;
    // Any interface will do: nothing is attached. Loopback always exists.
    let mut filter = XdpFilter::load("lo")?;
    filter.install(&rules, Action::Pass)?;
    let frames: [(&str, &[u8]); 4] = [
        ("udp4", &packet::fixtures::UDP4_ECHO_REQUEST),
        ("tcp4_syn", &packet::fixtures::TCP_SYN),
        ("icmp6_echo", &packet::fixtures::ICMPV6_ECHO_REQUEST),
        ("udp6", &packet::fixtures::UDP6_ECHO_REQUEST),
    ];
    println!(
        "{} rule(s), {repeat} runs per figure (BPF_PROG_TEST_RUN)",
        rules.len()
    );
    println!(
        "{:<12} {:>10} {:>10} {:>7}",
        "packet", "filter ns", "bare ns", "ratio"
    );
    let mut rows = Vec::new();
    for (name, frame) in frames {
        // Alternate filter and bare three times and keep the fastest of each: the least
        // disturbed by the rest of the machine.
        let (mut best_filter, mut best_bare) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            let (_, d) = filter.test_run("xdp_filter", frame, repeat)?;
            best_filter = best_filter.min(d.as_nanos() as f64);
            let (_, d) = filter.test_run("xdp_drop_bare", frame, repeat)?;
            best_bare = best_bare.min(d.as_nanos() as f64);
        }
        // The kernel reports whole nanoseconds per run; a bare program may round to 0.
        let ratio = best_filter / best_bare.max(1.0);
        println!("{name:<12} {best_filter:>10.0} {best_bare:>10.0} {ratio:>7.2}");
        rows.push(serde_json::json!({
            "packet": name, "filter_ns": best_filter, "bare_ns": best_bare, "ratio": ratio
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"rules": rules.len(), "repeat": repeat, "rows": rows})
        );
    }
    Ok(())
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
         no rule matched: {}\nprotocols:",
        s.get(stat::ACTION_PASS).packets,
        s.get(stat::ACTION_DROP).packets,
        s.get(stat::ACTION_XSK).packets,
        s.get(stat::XSK_FALLBACK).packets,
        s.get(stat::MALFORMED).packets,
        s.get(stat::DEFAULT_ACTION).packets,
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

fn to_json(iface: &str, mode: &str, t: Duration, s: &Snapshot, rules: &[Rule]) -> String {
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
        "protocols": protocols,
        "bytes": {
            "pass": counter(s.get(stat::ACTION_PASS)),
            "drop": counter(s.get(stat::ACTION_DROP)),
            "xsk": counter(s.get(stat::ACTION_XSK)),
        },
        "rules": rules,
    })
    .to_string()
}
