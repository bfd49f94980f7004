//! `xdp-user run`: the AF_XDP poll-mode data path (echo, reflect, count, drop). The XDP
//! program redirects chosen packets to one socket per RX queue, and a thread per queue answers
//! (echo, reflect), counts or drops them.

use crate::rules::{self, Policy, Rule};
use crate::xdp::{self, Mode, Snapshot, XdpFilter};
use crate::{METRICS_REFRESH, Reporting, afxdp, iface, lockout, metrics};
use anyhow::{Context, Result, bail};
use clap::builder::TypedValueParser as _;
use packet::abi::{Action, stat};
use packet::cli::{print_or_stop, print_report};
use packet::counter::TopFlows;
use packet::datapath::Action as LoopAction;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Arguments of `xdp-user run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
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
    /// NIC whose interrupts it can replace (set `napi_defer_hard_irqs` and
    /// `gro_flush_timeout` on the interface). A driver that gives the socket no NAPI id
    /// (veth) leaves nothing to poll: the queue says so at its first frame and polls as
    /// without this flag.
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
    /// Apply the rules even where they would send an SSH session into the interface to the
    /// loop (which does not answer TCP): say so instead of refusing.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    report: Reporting,
}

/// `run` takes malformed frames into the loop, which counts them and never answers them (the
/// kernel would answer some, e.g. a UDP datagram whose length field is short, with an ICMP
/// error); everything else no rule redirects goes on to the kernel.
const RUN_POLICY: Policy = Policy {
    default: Action::Pass,
    malformed: Action::Xsk,
    unparsed: Action::Pass,
    not_ip: Action::Pass,
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

fn parse_list(what: &str, s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|x| {
            x.trim().parse::<u32>().with_context(|| {
                format!("{what}: `{x}` is not a number (expected a list like 0,1)")
            })
        })
        .collect()
}

/// The rules `run` installs: the user's, then the defaults of the action. Echo's defaults
/// take only what is addressed to the host, one rule per address in `local` (the interface's
/// addresses): a router's or a bridge's transit pings and UDP still reach the kernel (and
/// their destinations), instead of being answered in those hosts' names. With no address on
/// the interface (a port given over to the echo service), they take every destination.
fn run_rules(args: &RunArgs, local: &[IpAddr]) -> Result<Vec<Rule>> {
    let texts = rule_texts(args.action, &args.rules, &args.echo_ports, local);
    if texts.len() > packet::abi::MAX_RULES {
        bail!(
            "{} rules ({} of --rule, the rest echo's: each echo port and ICMP, for each of {}'s \
             {} addresses): at most {}. Give fewer --echo-ports ranges",
            texts.len(),
            args.rules.len(),
            args.iface,
            local.len(),
            packet::abi::MAX_RULES
        );
    }
    let rules = texts
        .iter()
        .map(|t| Ok(rules::parse_rule(t)?))
        .collect::<Result<Vec<_>>>()?;
    // A rule of the user's that covers one of the action's own leaves the loop without it.
    super::common::warn_shadowed(&rules);
    Ok(rules)
}

/// [`run_rules`] as text: `user`'s rules, then `action`'s defaults.
fn rule_texts(
    action: LoopAction,
    user: &[String],
    echo_ports: &str,
    local: &[IpAddr],
) -> Vec<String> {
    let mut texts: Vec<String> = user.to_vec();
    match action {
        LoopAction::Echo => {
            let scopes: Vec<(String, Option<bool>)> = if local.is_empty() {
                vec![(String::new(), None)]
            } else {
                local
                    .iter()
                    .map(|a| {
                        let bits = if a.is_ipv4() { 32 } else { 128 };
                        (format!("dst {a}/{bits} "), Some(a.is_ipv4()))
                    })
                    .collect()
            };
            for (dst, v4) in &scopes {
                for item in echo_ports.split(',') {
                    texts.push(format!("{dst}proto udp dport {} action xsk", item.trim()));
                }
                if *v4 != Some(false) {
                    texts.push(format!("{dst}proto icmp icmp-type 8 action xsk"));
                }
                if *v4 != Some(true) {
                    texts.push(format!("{dst}proto icmpv6 icmp-type 128 action xsk"));
                }
            }
        }
        // Without rules, only UDP goes to the loop: the interface's TCP (ssh!), ARP and
        // neighbour discovery keep working.
        _ if user.is_empty() => texts.push("proto udp action xsk".into()),
        _ => {}
    }
    texts
}

/// `198.18.0.2, 2001:db8::2` for the start-up lines.
fn joined(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Says so when frames of the interface's MTU can be longer than a UMEM frame holds (after
/// the kernel's headroom): the program passes those to the kernel instead of the loop (a
/// redirect would have the kernel drop them) and counts them as `xsk_oversize`.
fn warn_if_frames_do_not_fit(iface: &str, mtu: u32, frame_size: u32) {
    if let Some(why) = frames_do_not_fit(iface, mtu, frame_size) {
        packet::stderr!("xdp-user: {why}");
    }
}

fn frames_do_not_fit(iface: &str, mtu: u32, frame_size: u32) -> Option<String> {
    // The Ethernet header and two VLAN tags.
    let longest = mtu + 14 + 8;
    let room = afxdp::frame_room(frame_size);
    if longest <= room {
        return None;
    }
    let largest = afxdp::frame_room(4096);
    let remedy = if longest <= largest {
        "--frame-size 4096 takes them".to_string()
    } else {
        format!(
            "the largest --frame-size, 4096, holds {largest}: an MTU of {} or less lets the \
             loop see every frame",
            largest - 14 - 8
        )
    };
    Some(format!(
        "{iface}: frames of MTU {mtu} (up to {longest} bytes) can be longer than a UMEM frame \
         holds ({room} bytes of {frame_size}, after the kernel's headroom): the XDP program \
         passes those to the kernel instead of the loop, counted as xsk_oversize; {remedy}"
    ))
}

pub fn run(args: RunArgs) -> Result<()> {
    if let Some(path) = &args.capture {
        packet::capture::check_capture_file(path).map_err(anyhow::Error::msg)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    packet::cli::stop_on_signals(&stop)?;
    let echo_ports = packet::echo::PortSet::from_list(&args.echo_ports)
        .map_err(|e| anyhow::anyhow!("--echo-ports {}: {e}", args.echo_ports))?;
    xdp::if_index(&args.iface)?;
    let addresses = iface::addresses(&args.iface)?;
    let local: Vec<IpAddr> = addresses.iter().map(|a| a.addr).collect();
    let rules = run_rules(&args, &local)?;
    lockout::check(
        &rules,
        RUN_POLICY,
        &addresses,
        iface::ipv4_gateway(&args.iface),
        lockout::XskMeans::Taken,
        args.force,
    )?;
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
    afxdp::check_cpus(
        "--cores",
        &cores.iter().map(|c| *c as usize).collect::<Vec<_>>(),
    )?;
    let mut responder = packet::echo::Responder::new();
    responder.set_echo_ports(echo_ports);
    responder.set_local_mac(afxdp::mac_address(&args.iface)?);
    responder.set_complete_partial_checksums(args.complete_checksums);

    // Load, install the rules, bind and register every socket, and only then attach: no
    // packet meets a half-built data path.
    let mut watch = iface::IfaceWatch::new(&args.iface)?;
    if let Some(mtu) = watch.mtu() {
        warn_if_frames_do_not_fit(&args.iface, mtu, args.frame_size);
    }
    let mut filter = XdpFilter::load_logging(&args.iface, args.report.log_level)?;
    filter.install(&rules, RUN_POLICY)?;
    let mut sockets = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let mut socket = afxdp::QueueSocket::bind(afxdp::QueueSettings {
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
        // Before the program is attached: the first frames it redirects find room.
        socket.prime_fill_ring();
        filter.register_socket(*q, socket.raw_fd(), socket.frame_room())?;
        sockets.push(socket);
    }
    let metrics = metrics::Metrics::start(args.report.metrics.as_deref(), "xdp-user")?;
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
    let all_zero_copy = sockets.iter().all(|s| s.zero_copy);
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
            packet::stderr!("xdp-user: capturing to {}", path.display());
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

    // The queue threads poll before the program is attached, so no frame it redirects waits
    // for a thread to start (with only the fill ring primed, `run` started under 200 kpps still
    // lost 265-2564 frames to an empty fill ring: a thread took over 10 ms to come up).
    if let Err(e) = filter.attach(args.mode) {
        stop.store(true, Ordering::Relaxed);
        for r in running {
            let _ = r.handle.join();
        }
        if let (Some(c), Some(path)) = (capture, &args.capture) {
            let _ = c.finish();
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    let mode = match filter.mode {
        Mode::Native => "native",
        _ => "skb",
    };
    packet::stderr!(
        "xdp-user: {:?} on {} ({mode} XDP), {} queue(s) [{}], UMEM {} x {} B per queue, {} rule(s)",
        args.action,
        args.iface,
        zc.len(),
        zc.join(" "),
        args.frames,
        args.frame_size,
        rules.len()
    );
    // A test port has no global address (the kernel gives every interface that is up an IPv6
    // link-local one); an interface with one carries the host's own traffic. (A leased address
    // was refused above: the loop would take its DHCP replies.)
    let global: Vec<IpAddr> = addresses
        .iter()
        .filter(|a| a.global)
        .map(|a| a.addr)
        .collect();
    if args.action != LoopAction::Echo
        && args.rules.is_empty()
        && let Some(first) = global.first()
    {
        packet::stderr!(
            "xdp-user: {:?} takes every UDP datagram that reaches {}, the host's own included \
             (DNS answers, NTP; it has {}): none of it reaches the kernel while this runs. \
             Narrow it with --rule, e.g. --rule \"dst {first}/{} proto udp dport 9000 action \
             xsk\"",
            args.action,
            args.iface,
            joined(&global),
            if first.is_ipv4() { 32 } else { 128 }
        );
    }
    if args.action == LoopAction::Echo {
        if local.is_empty() {
            packet::stderr!(
                "xdp-user: {} has no IP address: echo answers requests to any address, in frames \
                 to its MAC",
                args.iface
            );
        } else {
            packet::stderr!(
                "xdp-user: echo answers requests to {} ({}'s addresses at start); the rest, \
                 transit traffic included, goes to the kernel",
                joined(&local),
                args.iface
            );
        }
    }
    filter.report_fallback();
    if !all_zero_copy && args.copy_mode() == afxdp::CopyMode::Auto {
        packet::stderr!(
            "xdp-user: zero-copy is not available on {}: copy mode",
            args.iface
        );
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
        if let Some(pid) = filter.switch_off_orphaned_capture()? {
            packet::stderr!(
                "xdp-user: {}",
                crate::dump::orphan_message(&args.iface, pid)
            );
        }
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
        // A queue thread ends by itself only on a fatal error; after a stop signal they all
        // end, which is not news.
        if !stop.load(Ordering::Relaxed) && running.iter().any(|r| r.handle.is_finished()) {
            packet::stderr!("xdp-user: a queue thread ended unexpectedly; stopping");
            break;
        }
        match watch.poll() {
            Err(e) => {
                gone = Some(e);
                break;
            }
            Ok(changes) => {
                for change in changes {
                    packet::stderr!("xdp-user: {}: {change}", args.iface);
                    if let iface::LinkChange::Mtu { to, .. } = change {
                        warn_if_frames_do_not_fit(&args.iface, to, args.frame_size);
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
                packet::stderr!(
                    "xdp-user: {}",
                    packet::echo::partial_checksum_hint(&args.iface, partial)
                );
                hinted = true;
            }
        }
        if last_at.elapsed() >= interval {
            let secs = last_at.elapsed().as_secs_f64();
            let mut lines = String::new();
            for (i, r) in running.iter().enumerate() {
                let now = r.stats.counts();
                let k = afxdp::kernel_stats_of(fds[i]);
                let rate = |a: u64, b: u64| (b - a) as f64 / secs;
                let _ = writeln!(
                    lines,
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
                lines.push_str(&merged_top(&running, args.flows).text());
            }
            if !print_or_stop("xdp-user", format_args!("{lines}")) {
                break;
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
        packet::stderr!(
            "xdp-user: captured {} frame(s) to {}{}{}",
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
            },
            if c.reader_gone {
                packet::capture::READER_GONE_NOTE
            } else {
                ""
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
        packet::stderr!("{}", top.text().trim_end());
    }
    packet::stderr!("xdp-user: detached from {}", args.iface);

    let mut total = packet::counter::LoopCounters::default();
    let mut protocols = packet::counter::ProtocolCounters::default();
    let mut lost = 0;
    let mut queue_json = Vec::new();
    for (c, p, report) in &reports {
        total.merge(c);
        protocols.merge(p);
        lost += report.frames.lost();
        let f = &report.frames;
        let busy_poll = match report.busy_poll {
            afxdp::BusyPoll::Off => String::new(),
            afxdp::BusyPoll::On { napi_id } => format!("; busy polling NAPI {napi_id}"),
            afxdp::BusyPoll::Pending => {
                "; busy polling: nothing received to learn the NAPI from".into()
            }
            afxdp::BusyPoll::Unavailable => {
                "; busy polling unavailable (no NAPI id): polled as without it".into()
            }
        };
        packet::stderr!(
            "queue {}: rx {} tx {} echoed {} reflected {} counted {} dropped {} malformed {} not-for-us {} tx-ring-full {} wakeups {}; frames: {} total, {} free, held by the kernel {} for RX ({} in the fill ring) and {} for TX, {} lost; wake-ups failed: {} busy, {} link down{busy_poll}",
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
        let mut queue = c.json_fields();
        queue.extend(af_xdp_fields(c));
        queue.extend(
            serde_json::json!({
                "queue": report.queue,
                "zero_copy": report.zero_copy,
                "busy_poll": {
                    "state": report.busy_poll.state(),
                    "napi_id": report.busy_poll.napi_id(),
                },
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
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        queue_json.push(serde_json::Value::Object(queue));
    }
    if lost > 0 {
        packet::stderr!(
            "xdp-user: BUG: {lost} UMEM frame(s) with broken ownership at exit (still in the \
             loop, or handed back by the kernel without having been lent to it)"
        );
    }
    if args.report.json {
        let mut json = total.json_fields();
        json.extend(af_xdp_fields(&total));
        json.extend(
            serde_json::json!({
                "iface": args.iface,
                "mode": mode,
                "action": format!("{:?}", args.action).to_lowercase(),
                "seconds": start.elapsed().as_secs_f64(),
                "frames_lost": lost,
                "protocols": protocols.packets_json(),
                "queues": queue_json,
                "flows": if args.flows > 0 { top.to_json() } else { serde_json::Value::Null },
                "capture": captured.map(|c| c.to_json(args.capture.as_deref())),
                "xdp": {
                    "xsk": xdp_counters.get(stat::ACTION_XSK).packets,
                    "pass": xdp_counters.get(stat::ACTION_PASS).packets,
                    "drop": xdp_counters.get(stat::ACTION_DROP).packets,
                    "xsk_fallback": xdp_counters.get(stat::XSK_FALLBACK).packets,
                    "xsk_oversize": xdp_counters.get(stat::XSK_OVERSIZE).packets,
                },
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        print_report(serde_json::Value::Object(json)).context("writing the JSON report")?;
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

/// The AF_XDP loop's own counters, beside the ones every loop reports
/// (`LoopCounters::json_fields`); `tx_ring_full` is `tx_dropped` under the name the AF_XDP
/// ring gives it.
fn af_xdp_fields(c: &packet::counter::LoopCounters) -> serde_json::Map<String, serde_json::Value> {
    [
        ("wakeups", c.wakeups),
        ("idle_sleeps", c.idle_sleeps),
        ("tx_ring_full", c.tx_dropped),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::{LoopAction, frames_do_not_fit, rule_texts};

    #[test]
    fn echo_takes_only_what_is_addressed_to_the_host() {
        let local = ["198.18.0.2".parse().unwrap(), "fe80::2".parse().unwrap()];
        assert_eq!(
            rule_texts(
                LoopAction::Echo,
                &["proto tcp action drop".into()],
                "7,9000-9001",
                &local
            ),
            [
                "proto tcp action drop",
                "dst 198.18.0.2/32 proto udp dport 7 action xsk",
                "dst 198.18.0.2/32 proto udp dport 9000-9001 action xsk",
                "dst 198.18.0.2/32 proto icmp icmp-type 8 action xsk",
                "dst fe80::2/128 proto udp dport 7 action xsk",
                "dst fe80::2/128 proto udp dport 9000-9001 action xsk",
                "dst fe80::2/128 proto icmpv6 icmp-type 128 action xsk",
            ]
        );
        // No address: every destination, both ICMPs.
        assert_eq!(
            rule_texts(LoopAction::Echo, &[], "7", &[]),
            [
                "proto udp dport 7 action xsk",
                "proto icmp icmp-type 8 action xsk",
                "proto icmpv6 icmp-type 128 action xsk",
            ]
        );
        // The other actions are not scoped: a reflector or a sink takes what it is given.
        assert_eq!(
            rule_texts(LoopAction::Reflect, &[], "7", &local),
            ["proto udp action xsk"]
        );
        for rule in rule_texts(LoopAction::Echo, &[], "7,9000-9001", &local) {
            crate::rules::parse_rule(&rule).unwrap();
        }
    }

    /// 1792 bytes fit a 2048-byte UMEM frame after the kernel's 256 of headroom: MTU 1770
    /// with two VLAN tags. Above it, the advice is the larger frame while that holds the MTU,
    /// then a lower MTU.
    #[test]
    fn says_when_the_mtu_outgrows_the_frames_and_what_helps() {
        assert_eq!(frames_do_not_fit("x", 1500, 2048), None);
        assert_eq!(frames_do_not_fit("x", 1770, 2048), None);
        let w = frames_do_not_fit("x", 1771, 2048).unwrap();
        assert!(w.contains("up to 1793 bytes") && w.contains("--frame-size 4096 takes them"));
        assert_eq!(frames_do_not_fit("x", 3818, 4096), None);
        let w = frames_do_not_fit("x", 9000, 2048).unwrap();
        assert!(w.contains("an MTU of 3818 or less"), "{w}");
    }
}
