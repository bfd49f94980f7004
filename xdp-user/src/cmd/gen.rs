//! `xdp-user gen`: send UDP over AF_XDP as fast as asked and count (and time) what comes
//! back: a load generator and loopback tester for any UDP echo service. The generator itself
//! is in [`crate::generator`].

use super::common::PASS_ALL;
use crate::xdp::{Mode, XdpFilter};
use crate::{afxdp, generator, iface, metrics, neighbour, rules};
use anyhow::{Context, Result, bail};
use packet::cli::print_report;
use packet::datapath::Action as LoopAction;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Arguments of `xdp-user gen`.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// The interface to send from.
    #[arg(long)]
    iface: String,
    /// The MAC address to send to (the target, or the next hop). Default: the next hop's, as
    /// the kernel would find it (the route to --dst out of --iface, the neighbour table, else
    /// an ARP request or neighbour solicitation of our own).
    #[arg(long)]
    dst_mac: Option<String>,
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

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    packet::interface::parse_mac(s)
        .with_context(|| format!("--dst-mac {s} is not a MAC address like 02:00:00:00:00:02"))
}

/// The interface's first global address of the family of `like`.
fn iface_address(iface: &str, like: &IpAddr) -> Result<IpAddr> {
    iface::addresses(iface)?
        .into_iter()
        .find(|a| a.global && a.addr.is_ipv4() == like.is_ipv4())
        .map(|a| a.addr)
        .with_context(|| {
            let name = if like.is_ipv4() { "IPv4" } else { "IPv6" };
            format!("{iface} has no global {name} address to send from; give one with --src")
        })
}

pub fn run_gen(args: GenArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    packet::cli::stop_on_signals(&stop)?;
    let given_mac = args.dst_mac.as_deref().map(parse_mac).transpose()?;
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
    let mut watch = iface::IfaceWatch::new(&args.iface)?;
    // A link just set up takes a moment to say so (the kernel's link watch, a NIC's
    // autonegotiation): a script's `ip link set IFACE up` right before is given 3 s.
    let since = std::time::Instant::now();
    while watch.link().is_some_and(|l| !l.is_up()) && since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        watch.poll()?;
    }
    if let Some(link) = watch.link()
        && !link.is_up()
    {
        bail!(
            "{} has no link (operstate {}): nothing sent would leave it. Bring it up (`ip link \
             set {} up`), or check its cable (for a veth, its peer)",
            args.iface,
            link.operstate,
            args.iface
        );
    }
    let src = match args.src {
        Some(s) if s.is_ipv4() != args.dst.is_ipv4() => {
            bail!(
                "--src {s} and --dst {} are of different IP families",
                args.dst
            )
        }
        Some(s) => s,
        None => iface_address(&args.iface, &args.dst)?,
    };
    let src_mac = afxdp::mac_address(&args.iface)?;
    let (dst_mac, mac_said) = match given_mac {
        Some(mac) => (
            mac,
            format!("{} (--dst-mac)", args.dst_mac.as_deref().unwrap_or("")),
        ),
        None => {
            let r = neighbour::resolve(&args.iface, src_mac, src, args.dst)?;
            (r.mac, r.describe())
        }
    };
    let size = args
        .size
        .unwrap_or(if args.dst.is_ipv4() { 64 } else { 90 });
    let cfg = generator::GenConfig {
        src_mac,
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
    afxdp::check_cpus("--core", args.core.as_slice())?;
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
    filter.register_socket(args.queue, socket.raw_fd(), socket.frame_room())?;
    filter.attach(Mode::Auto)?;
    filter.report_fallback();
    if let Some(core) = args.core {
        afxdp::pin_to_core(core);
    }
    packet::stderr!(
        "xdp-user gen: {} -> {}:{} to {}, {size}-byte frames, {} flow(s), rate {}",
        src,
        args.dst,
        args.dport,
        mac_said,
        args.flows,
        args.rate.map_or("unlimited".into(), |r| format!("{r} pps"))
    );
    // The interface may go away under the generator: a watcher stops it, and the run fails.
    let gone: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Arc::default();
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, gone, finished) = (Arc::clone(&stop), Arc::clone(&gone), Arc::clone(&finished));
        // Its first look was before anything was attached: any change since is reported.
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
                            packet::stderr!("xdp-user gen: {iface}: {change}");
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
    packet::stderr!(
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
        let report = serde_json::json!({
                "sent": r.sent, "queued": r.queued, "received": r.received, "loss": loss,
                "duplicates": r.duplicates, "reordered": r.reordered, "stale": r.stale,
                "foreign": r.foreign,
                "seconds": secs,
                "pps_sent": r.sent as f64 / secs, "pps_received": r.received as f64 / secs,
                "latency_us": {"p50": p50, "p99": p99, "max": max},
        });
        print_report(&report).context("writing the JSON report")?;
    }
    Ok(())
}
