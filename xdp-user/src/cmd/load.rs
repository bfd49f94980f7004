//! `xdp-user load`: attach the XDP filter/counter to an interface, install rules, print rates,
//! reload rules on SIGHUP, detach on SIGINT/SIGTERM or when `--duration` ends.

use super::common::read_rules;
use crate::report::{rate_line, summary, to_json};
use crate::rules::Policy;
use crate::xdp::{Mode, Snapshot, XdpFilter};
use crate::{METRICS_REFRESH, Reporting, dump, iface, lockout, metrics};
use anyhow::{Context, Result, bail};
use packet::abi::Action;
use packet::cli::{print_or_stop, print_report};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// Arguments of `xdp-user load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
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
    /// What happens to well-formed IP packets that match no rule.
    #[arg(long = "default", value_enum, default_value = "pass")]
    default_action: PassDrop,
    /// What happens to frames that are not IP: ARP, LLDP, other ether types. Apart from
    /// --default, so that a default of drop does not take ARP, and with it every IPv4
    /// neighbour of the host.
    #[arg(long = "non-ip", value_enum, default_value = "pass")]
    non_ip: PassDrop,
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
    /// Apply rules even where they would cut an SSH session into the interface (the one
    /// this runs in, or another established one): say so instead of refusing.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    report: Reporting,
}

impl LoadArgs {
    fn policy(&self) -> Policy {
        Policy {
            default: self.default_action.action(),
            malformed: self.malformed.action(),
            unparsed: self.unparsed.action(),
            not_ip: self.non_ip.action(),
        }
    }
}

pub fn load(args: LoadArgs) -> Result<()> {
    if let Some(path) = &args.capture {
        packet::capture::check_capture_file(path).map_err(anyhow::Error::msg)?;
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
    let policy = args.policy();
    let mut rules = read_rules(&args.rules, args.rules_file.as_deref())?;
    let mut watch = iface::IfaceWatch::new(&args.iface)?;
    let addresses = iface::addresses(&args.iface)?;
    let gateway = iface::ipv4_gateway(&args.iface);
    // Checked again at every reload: a rules file edited over SSH is the usual way in.
    let keeps_host = |r: &[crate::rules::Rule]| {
        lockout::check(
            r,
            policy,
            &addresses,
            gateway,
            lockout::XskMeans::Pass,
            args.force,
        )
    };
    keeps_host(&rules)?;
    warn_xsk_without_sockets(&rules);
    let mut filter = XdpFilter::load_logging(&args.iface, args.report.log_level)?;
    filter.install(&rules, policy)?;
    let metrics = metrics::Metrics::start(args.report.metrics.as_deref(), "xdp-user")?;
    // Capture is switched on before the program is attached, so the file holds every frame
    // the program ever sees: its totals and the capture's count agree.
    let capture_stop = Arc::new(AtomicBool::new(false));
    let mut capture = match &args.capture {
        Some(path) => {
            let maps = dump::CaptureMaps::of_program(&args.iface, filter.program_id()?)?;
            let (path, stop) = (path.clone(), Arc::clone(&capture_stop));
            let opts = dump::DumpOptions {
                snaplen: args.snaplen,
                count: None,
                duration: None,
                selection: dump::Selection::default(),
            };
            packet::stderr!("xdp-user: capturing to {}", path.display());
            let (armed, is_armed) = std::sync::mpsc::channel();
            let thread = std::thread::spawn(move || {
                dump::capture(
                    vec![maps],
                    &packet::capture::Output::File(path),
                    &opts,
                    &stop,
                    move || {
                        let _ = armed.send(());
                    },
                )
            });
            if is_armed.recv().is_err() {
                // The thread ended before switching capture on: its error says why.
                return match thread.join() {
                    Ok(Err(e)) => Err(e.context("capture could not start")),
                    _ => bail!("the capture thread ended before capture started"),
                };
            }
            Some(thread)
        }
        None => None,
    };
    if let Err(e) = filter.attach(args.mode) {
        // Nothing was captured: stop the thread and leave no empty file behind.
        capture_stop.store(true, Ordering::Relaxed);
        if let (Some(thread), Some(path)) = (capture.take(), &args.capture) {
            let _ = thread.join();
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    let mode = match filter.mode {
        Mode::Native => "native (driver)",
        _ => "skb (generic)",
    };
    packet::stderr!(
        "xdp-user: attached to {} in {mode} mode with {} rule(s), default {}, malformed {}, \
         unparsed {}, non-IP {}",
        args.iface,
        rules.len(),
        policy.default.name(),
        policy.malformed.name(),
        policy.unparsed.name(),
        policy.not_ip.name(),
    );
    filter.report_fallback();
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
        if let Some(pid) = filter.switch_off_orphaned_capture()? {
            packet::stderr!("xdp-user: {}", dump::orphan_message(&args.iface, pid));
        }
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
            packet::stderr!("xdp-user: {}: {change}", args.iface);
        }
        if reload.swap(false, Ordering::Relaxed) {
            match read_rules(&args.rules, args.rules_file.as_deref())
                .and_then(|r| keeps_host(&r).map(|()| r))
                .inspect(|r| warn_xsk_without_sockets(r))
                .and_then(|r| filter.install(&r, policy).map(|done| (r, done)))
            {
                Ok((r, done)) => {
                    reloads += 1;
                    packet::stderr!(
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
                    packet::stderr!("xdp-user: reload failed, keeping the old rules: {e:#}");
                }
            }
        }
        if Instant::now() >= next_print {
            let now = filter.snapshot()?;
            let secs = last_at.elapsed().as_secs_f64();
            let line = rate_line(start.elapsed(), &last, &now, secs);
            if !print_or_stop("xdp-user", format_args!("{line}\n")) {
                break;
            }
            last = now;
            last_at = Instant::now();
            next_print = last_at + interval;
        }
    }
    // Detach first, then read: no packet is counted after the totals are taken. The capture
    // stops after the detach and drains its ring, so it holds every frame counted.
    filter.detach();
    capture_stop.store(true, Ordering::Relaxed);
    let captured = match capture.map(|t| t.join()) {
        Some(Ok(r)) => Some(r?),
        Some(Err(_)) => bail!("the capture thread panicked"),
        None => None,
    };
    filter.flush_logs();
    let total = filter.snapshot()?;
    if let (Some(c), Some(path)) = (&captured, &args.capture) {
        packet::stderr!(
            "xdp-user: captured {} frame(s) to {}; {} lost to a full capture ring{}",
            c.written,
            path.display(),
            c.lost,
            if c.reader_gone {
                packet::capture::READER_GONE_NOTE
            } else {
                ""
            }
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
    packet::stderr!("xdp-user: detached from {}", args.iface);
    packet::stderr!("{}", summary(&total, &rules));
    if args.report.json {
        let mut v = to_json(&args.iface, mode, start.elapsed(), &total, &rules);
        v["policy"] = serde_json::json!({
            "default": policy.default.name(),
            "malformed": policy.malformed.name(),
            "unparsed": policy.unparsed.name(),
            "non_ip": policy.not_ip.name(),
        });
        v["reloads"] = reloads.into();
        v["reload_failures"] = reload_failures.into();
        v["capture"] = captured
            .map(|c| {
                serde_json::json!({
                    "written": c.written, "seen": c.seen, "lost": c.lost,
                    "reader_gone": c.reader_gone,
                })
            })
            .unwrap_or(serde_json::Value::Null);
        print_report(&v).context("writing the JSON report")?;
    }
    Ok(())
}

/// `load` opens no AF_XDP socket, so an `xsk` rule here can only fall back to `pass`: said at
/// start (and at a reload), rather than left for the `xsk_fallback` counter to reveal.
fn warn_xsk_without_sockets(rules: &[crate::rules::Rule]) {
    let xsk: Vec<String> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.action == packet::abi::Action::Xsk)
        .map(|(i, r)| format!("{} (`{}`)", i + 1, r.text))
        .collect();
    if !xsk.is_empty() {
        packet::stderr!(
            "xdp-user: warning: rule {} says xsk, but `load` opens no AF_XDP socket: those \
             packets go to the kernel (counted as xsk_fallback). `xdp-user run --rule` is the \
             command whose sockets take them",
            xsk.join(", ")
        );
    }
}
