//! `dpdk-app`: the DPDK data path. A poll-mode application that runs the shared `packet` logic
//! (echo, reflect, count, drop) on ports DPDK drives directly: NICs bound to vfio-pci on a
//! server, or virtual devices (`--vdev net_af_packet0,iface=...`, `net_af_xdp`, `net_ring`,
//! `net_null`) anywhere.
//!
//! ```text
//! dpdk-app [EAL ARGS] -- [--action echo|reflect|count|drop] [--echo-ports LIST] [--ip ADDR]...
//!                        [--portmask MASK] [--burst N] [--rxd N] [--txd N]
//!                        [--interval SECS] [--duration SECS] [--json]
//! ```
//!
//! Start-up follows DPDK's l2fwd: EAL, a mempool sized from ports, queues and descriptors, each
//! port configured with one RX/TX queue pair per polling lcore (RSS where the port has it),
//! started, link checked; then one poll loop per lcore. With a single lcore (`-l 0`) the main
//! lcore polls; otherwise the worker lcores poll and the main lcore prints statistics.
//! All unsafe code is in the `dpdk` module, whose types make the shut-down order the only one
//! that compiles: queues before their ports, ports (stopped and closed) before the mempool, the
//! mempool before EAL. An error at any point after a port started unwinds in that order.
#![deny(unsafe_code)]

#[allow(unsafe_code)] // the one module at the FFI boundary
mod dpdk;
mod worker;
mod xdp_guard;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use dpdk::{Eal, Mempool, Port, Queue, StartedPort};
use packet::datapath::Action;
use packet::echo::{MAX_LOCAL_ADDRS, PortSet, Responder};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use worker::{LcoreStats, Shared};

#[derive(Parser, Debug)]
#[command(
    name = "dpdk-app",
    version,
    about = "DPDK poll-mode echo / reflect / count / drop over the shared packet logic",
    override_usage = "dpdk-app [EAL ARGS] -- [OPTIONS]"
)]
struct Cli {
    /// What to do with received packets.
    #[arg(long, value_enum, default_value = "echo")]
    action: Action,
    /// UDP echo ports, e.g. `7` or `7,9000-9010`.
    #[arg(long, default_value = "7")]
    echo_ports: String,
    /// An address of the ports (repeatable): ARP requests and IPv6 neighbour solicitations for
    /// it are answered, and only packets to these addresses are echoed.
    #[arg(long = "ip", value_name = "ADDR")]
    ips: Vec<IpAddr>,
    /// Hex bitmask of the ports to use (default: all ports EAL found).
    #[arg(long)]
    portmask: Option<String>,
    /// Packets per RX burst.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// RX descriptors per queue (0: the driver's preferred size, else 1024).
    #[arg(long, default_value_t = 0)]
    rxd: u16,
    /// TX descriptors per queue (0: the driver's preferred size, else 1024).
    #[arg(long, default_value_t = 0)]
    txd: u16,
    /// What a polling lcore does when a round over its queues brought nothing.
    #[arg(long, value_enum, default_value = "auto")]
    idle: Idle,
    /// Seconds between statistics lines.
    #[arg(long, default_value_t = 1.0, value_parser = packet::cli::positive)]
    interval: f64,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// On exit, print the counters as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Count IP 5-tuples and print the N largest flows each interval, in the JSON and in the
    /// metrics (0: no flow counting).
    #[arg(long, default_value_t = 0, value_name = "N")]
    flows: usize,
    /// Slots of each polling lcore's flow table (allocated once; flows that find no slot are
    /// counted as overflow).
    #[arg(long, default_value_t = 65536, value_name = "SLOTS")]
    flow_table: usize,
    /// Write what the lcores receive and send back to FILE as pcapng (direction and lcore's
    /// queue in each packet's options), through a bounded ring per lcore: frames the ring has
    /// no room for are counted and reported, never waited for.
    #[arg(long, value_name = "FILE")]
    capture: Option<std::path::PathBuf>,
    /// Bytes kept of each captured frame.
    #[arg(long, default_value_t = 65535, value_parser = clap::value_parser!(u32).range(1..=65535))]
    snaplen: u32,
    /// Serve Prometheus / OpenMetrics metrics at http://ADDR:PORT/metrics (loop counters,
    /// rte_eth_stats per port, top flows), refreshed every 250 ms.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
    /// Finish unfinished UDP checksums (only the pseudo-header sum, left by a sender with
    /// checksum offload, e.g. a veth peer with `tx` on) in echo replies, as the kernel would.
    #[arg(long)]
    complete_checksums: bool,
}

/// What a polling lcore does when a round over its queues brought nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Idle {
    /// `yield` when a port's packets come through the kernel (net_af_xdp, net_af_packet,
    /// net_tap), whose receive work may run on the lcore's CPU; `spin` otherwise.
    Auto,
    /// Poll again at once, as testpmd does: the least latency, on a core of its own.
    Spin,
    /// Give the CPU up (`sched_yield`) before polling again, to whatever else is runnable
    /// there: the kernel thread that receives for the port, when it shares the core.
    Yield,
}

/// Drivers whose packets the kernel receives first: its receive work (a NAPI thread or
/// softirq) can share the polling lcore's CPU, and needs the CPU while the ring is empty.
const KERNEL_FED_DRIVERS: [&str; 3] = ["net_af_xdp", "net_af_packet", "net_tap"];

/// Whether idle lcores yield, and why (for the start-up line).
fn idle_policy(idle: Idle, ports: &[(String, String)]) -> (bool, String) {
    let fed: Vec<String> = ports
        .iter()
        .filter(|(_, driver)| KERNEL_FED_DRIVERS.contains(&driver.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    match idle {
        Idle::Spin => (false, "spin (--idle spin)".into()),
        Idle::Yield => (true, "yield (--idle yield)".into()),
        Idle::Auto if fed.is_empty() => (false, "spin (no port is fed by the kernel)".into()),
        Idle::Auto => (
            true,
            format!(
                "yield to the kernel's receive work for {} (--idle spin to spin)",
                fed.join(", ")
            ),
        ),
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(xdp_guard::GUARD_ARG) {
        xdp_guard::run();
    }
    if let Err(e) = run() {
        packet::stderr!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Splits `prog EAL... -- APP...` into EAL's arguments and ours (both with the program name).
fn split_args(args: Vec<String>) -> (Vec<String>, Vec<String>) {
    let prog = args.first().cloned().unwrap_or_else(|| "dpdk-app".into());
    match args.iter().position(|a| a == "--") {
        Some(i) => {
            let mut app = vec![prog];
            app.extend_from_slice(&args[i + 1..]);
            (args[..i].to_vec(), app)
        }
        None => (args, vec![prog]),
    }
}

fn run() -> Result<()> {
    let (eal_args, app_args) = split_args(std::env::args().collect());
    // Our options are checked before EAL starts (EAL may take seconds and hugepages).
    let cli = Cli::parse_from(app_args);
    if let Some(path) = &cli.capture {
        packet::capture::check_capture_file(path).map_err(anyhow::Error::msg)?;
    }
    if cli.burst == 0 || cli.burst > dpdk::MAX_BURST {
        bail!("--burst must be 1 to {}", dpdk::MAX_BURST);
    }
    let echo_ports = PortSet::from_list(&cli.echo_ports)
        .map_err(|e| anyhow::anyhow!("--echo-ports {}: {e}", cli.echo_ports))?;
    let portmask = match &cli.portmask {
        Some(m) => Some(
            u64::from_str_radix(m.trim_start_matches("0x"), 16)
                .with_context(|| format!("--portmask {m} is not a hex mask"))?,
        ),
        None => None,
    };

    // The ports' responder, but for their MACs: --ip errors show before EAL starts.
    let mut template = Responder::new();
    template.set_echo_ports(echo_ports);
    template.set_complete_partial_checksums(cli.complete_checksums);
    for ip in &cli.ips {
        match ip {
            IpAddr::V4(a) => template.add_ipv4(a.octets()),
            IpAddr::V6(a) => template.add_ipv6(a.octets()),
        }
        .map_err(|e| anyhow!("--ip {ip}: {e}; give at most {MAX_LOCAL_ADDRS} of each family"))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    packet::cli::stop_on_signals(&stop)?;

    refuse_missing_interfaces(&eal_args)?;
    warn_about_host_interfaces(&eal_args);
    let af_xdp = af_xdp_interfaces(&eal_args);
    refuse_taken_af_xdp_interfaces(&af_xdp)?;
    // Declared before EAL, so dropped after it: by then DPDK has removed its programs.
    let mut xdp_guard = if af_xdp.is_empty() {
        None
    } else {
        Some(xdp_guard::XdpGuard::spawn()?)
    };

    // Drop order is the reverse of declaration, and the borrows below enforce it: `started`
    // (ports) before `pool` before `eal`, on success and on every `?` alike.
    let eal = Eal::init(&eal_args)?;
    let ports: Vec<Port<'_>> = eal
        .ports()
        .into_iter()
        .filter(|id| portmask.is_none_or(|m| *id < 64 && m & (1 << *id) != 0))
        .map(|id| eal.take_port(id))
        .collect::<Result<_>>()?;
    if ports.is_empty() {
        bail!(
            "no ports: EAL found {} port(s), none selected. Bind a NIC to vfio-pci \
             (scripts/bind-nic.sh) or add a virtual device, e.g. \
             `--vdev net_af_packet0,iface=eth1` or `--vdev net_ring0`",
            eal.ports().len()
        );
    }
    let lcores = eal.lcores();
    // The main lcore polls only when it is the only one.
    let workers = lcores.len() - 1;
    let pollers = workers.max(1);

    // l2fwd's sizing: every descriptor of every queue, a burst in flight per lcore, and the
    // per-lcore mempool caches, with a floor of 8192.
    // Ring sizes per port, resolved before the pool is sized from them.
    let rings = ports
        .iter()
        .map(|p| p.ring_sizes(cli.rxd, cli.txd))
        .collect::<Result<Vec<_>>>()?;
    let drivers = ports
        .iter()
        .map(|p| Ok((p.name(), p.driver()?)))
        .collect::<Result<Vec<_>>>()?;
    let (yield_when_idle, idle) = idle_policy(cli.idle, &drivers);
    let per_port = rings
        .iter()
        .map(|(r, t)| u32::from(*r) + u32::from(*t))
        .max()
        .unwrap_or(2048)
        + cli.burst as u32;
    let mbufs = (ports.len() as u32 * pollers as u32 * per_port + lcores.len() as u32 * 256 + 1024)
        .max(8192);
    let pool = Mempool::new(&eal, "kbp_mbufs", mbufs, ports[0].socket())?;

    // Each started port borrows `pool`; an error on a later port (or anything below) drops
    // these first, which stops and closes them while the pool still exists.
    let mut started: Vec<StartedPort<'_>> = Vec::with_capacity(ports.len());
    let mut responders = Vec::with_capacity(ports.len());
    for (port, (rxd, txd)) in ports.into_iter().zip(rings) {
        let (port, rxd, txd) = port.start(&pool, pollers as u16, rxd, txd)?;
        let mac = port.mac()?;
        let mut responder = template.clone();
        responder.set_local_mac(mac);
        packet::stderr!(
            "dpdk-app: port {} ({}) {} started: {} queue(s), {rxd}/{txd} descriptors",
            port.id(),
            port.name(),
            packet::interface::format_mac(&mac),
            pollers
        );
        started.push(port);
        responders.push(responder);
    }
    // net_af_xdp attached its programs as the ports started. (Should a later port fail to
    // start, DPDK closes the started ones and removes their programs itself.)
    if let Some(guard) = &mut xdp_guard {
        for iface in &af_xdp {
            guard.watch(iface)?;
        }
    }
    wait_for_links(&started);
    packet::stderr!(
        "dpdk-app: {:?} on {} port(s) with {} polling lcore(s) ({}), {} mbufs; when idle: {idle}",
        cli.action,
        started.len(),
        pollers,
        if workers == 0 {
            "main lcore polls"
        } else {
            "workers poll, main prints"
        },
        mbufs
    );

    // Queue q of every port goes to polling lcore q, moved into its loop.
    let mut per_lcore: Vec<Vec<Queue<'_>>> = (0..pollers)
        .map(|_| Vec::with_capacity(started.len()))
        .collect();
    for port in &started {
        let queues = port
            .take_queues()
            .with_context(|| format!("port {}: queues already taken", port.id()))?;
        for (lcore, q) in per_lcore.iter_mut().zip(queues) {
            lcore.push(q);
        }
    }

    let shared = Shared {
        responders,
        action: cli.action,
        burst: cli.burst,
        yield_when_idle,
        stop: Arc::clone(&stop),
        lcores: (0..pollers).map(|_| LcoreStats::default()).collect(),
        flow_slots: if cli.flows > 0 { cli.flow_table } else { 0 },
        top_flows: cli.flows,
    };
    let names = started
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(",");
    let (capture, taps) = match &cli.capture {
        Some(path) => {
            let queues: Vec<u32> = (0..pollers as u32).collect();
            let (c, taps) = packet::capture::start(
                &packet::capture::Output::File(path.clone()),
                &names,
                &queues,
                cli.snaplen as usize,
            )
            .map_err(anyhow::Error::msg)?;
            packet::stderr!("dpdk-app: capturing to {}", path.display());
            (Some(c), taps.into_iter().map(Some).collect())
        }
        None => (None, (0..pollers).map(|_| None).collect::<Vec<_>>()),
    };
    let endpoint = match &cli.metrics {
        Some(addr) => {
            let published = packet::metrics::Published::default();
            let e = packet::metrics::serve(addr, published.clone()).map_err(anyhow::Error::msg)?;
            packet::stderr!("dpdk-app: Prometheus metrics on http://{}/metrics", e.addr);
            Some((e, published))
        }
        None => None,
    };
    let start = Instant::now();
    let interval = Duration::from_secs_f64(cli.interval);
    let deadline = cli.duration.map(|d| start + Duration::from_secs_f64(d));
    let printer = std::cell::RefCell::new(worker::Printer::new(
        &shared,
        &started,
        interval,
        !cli.complete_checksums,
        vdev_interfaces(&eal_args),
    ));
    printer.borrow_mut().metrics = endpoint.as_ref().map(|(_, p)| p.clone());

    if workers == 0 {
        // One lcore: the main lcore polls and prints between bursts.
        let queues = per_lcore.pop().unwrap_or_default();
        let tap = taps.into_iter().next().flatten();
        worker::poll_loop(&shared, 0, queues, Some((&printer, deadline)), tap);
    } else {
        let shared = &shared;
        let jobs: Vec<_> = per_lcore
            .into_iter()
            .enumerate()
            .zip(taps)
            .map(|((i, queues), tap)| move || worker::poll_loop(shared, i, queues, None, tap))
            .collect();
        eal.run_on_workers(jobs, |launched_all| {
            // If this panics, the workers still stop (and run_on_workers waits for them).
            let _stop_on_exit = StopOnDrop(&stop);
            if !launched_all {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    stop.store(true, Ordering::Relaxed);
                }
                printer.borrow_mut().maybe_print(shared, now);
            }
        })?;
    }
    let gone = printer.borrow_mut().gone.take();
    // The last scrape sees the totals the JSON reports.
    printer.borrow().publish_metrics(&shared);
    drop(printer);
    // The lcores have stopped: the writer empties the rings and closes the file.
    let captured = capture
        .map(|c| c.finish().map_err(anyhow::Error::msg))
        .transpose()?;
    if let (Some(c), Some(path)) = (&captured, &cli.capture) {
        packet::stderr!(
            "dpdk-app: captured {} frame(s) to {}{}{}",
            c.written,
            path.display(),
            if c.dropped > 0 {
                format!(
                    "; {} frame(s) LOST to full capture rings (try a smaller --snaplen)",
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
    let top = (cli.flows > 0).then(|| shared.top_flows());
    if let Some(t) = &top {
        packet::stderr!("{}", t.text().trim_end());
    }

    let seconds = start.elapsed().as_secs_f64();
    // Read names and statistics while the ports are still open.
    let port_stats: Vec<_> = started
        .iter()
        .map(|p| (p.id(), p.name(), p.stats()))
        .collect();
    drop(started); // stops and closes every port
    let in_use = pool.in_use();
    // Our loop frees every mbuf it gets; net_af_xdp (DPDK 22.11) does not give back, on
    // close, the mbufs of its fill ring nor those of transmissions it has not completed.
    let whose = if in_use > 0 && !af_xdp.is_empty() {
        " (held by net_af_xdp, which keeps its fill ring's mbufs and those of uncompleted \
         transmissions after close; they go with the pool)"
    } else {
        ""
    };
    packet::stderr!("dpdk-app: ports stopped and closed; mbufs still in use: {in_use}{whose}");
    let report = worker::Report::collect(&shared, &port_stats, seconds);
    packet::stderr!("{}", report.summary());
    // Written before EAL is torn down, but a failure to write it is reported after.
    let written = if cli.json {
        let json = report.json(
            &format!("{:?}", cli.action).to_lowercase(),
            top.as_ref(),
            cli.capture.as_deref().zip(captured),
        );
        packet::cli::print_report(json)
    } else {
        Ok(())
    };
    drop(shared);
    drop(pool);
    drop(eal);
    if let Some(why) = gone {
        bail!("{why}");
    }
    written.context("writing the JSON report")
}

/// The kernel interfaces behind virtual devices (`--vdev net_af_packet0,iface=dut0`): EAL's
/// arguments name them, and nothing else tells the app when one goes away.
fn vdev_interfaces(eal_args: &[String]) -> Vec<String> {
    vdevs(eal_args)
        .into_iter()
        .filter_map(|(_, iface)| iface)
        .collect()
}

/// The interfaces `net_af_xdp` devices will attach their XDP program to.
fn af_xdp_interfaces(eal_args: &[String]) -> Vec<String> {
    vdevs(eal_args)
        .into_iter()
        .filter(|(driver, _)| driver.starts_with("net_af_xdp"))
        .filter_map(|(_, iface)| iface)
        .collect()
}

/// Each `--vdev` of EAL's arguments: its name (`net_af_xdp0`) and its `iface=`, if any.
fn vdevs(eal_args: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut args = eal_args.iter();
    while let Some(a) = args.next() {
        let spec = match a.strip_prefix("--vdev=") {
            Some(spec) => spec,
            None if a == "--vdev" => match args.next() {
                Some(spec) => spec,
                None => break,
            },
            None => continue,
        };
        let mut parts = spec.split(',');
        let name = parts.next().unwrap_or_default().to_string();
        let iface = parts.find_map(|kv| kv.strip_prefix("iface=").map(str::to_string));
        out.push((name, iface));
    }
    out
}

/// Refuses a `--vdev ...,iface=NAME` of a driver that opens an existing interface
/// (`net_af_packet`, `net_af_xdp`, `net_pcap`) when there is no such interface in this network
/// namespace, before EAL starts: EAL would only say "Bus (vdev) probe failed" and then find no
/// ports. (`net_tap`'s `iface=` names the interface it creates.)
fn refuse_missing_interfaces(eal_args: &[String]) -> Result<()> {
    const OPENS_AN_INTERFACE: [&str; 3] = ["net_af_packet", "net_af_xdp", "net_pcap"];
    for (vdev, iface) in vdevs(eal_args) {
        if let Some(iface) = iface
            && OPENS_AN_INTERFACE.iter().any(|d| vdev.starts_with(d))
            && !std::path::Path::new("/sys/class/net").join(&iface).exists()
        {
            bail!(
                "--vdev {vdev}: no interface named {iface} in this network namespace (list them \
                 with `ip link`; in another namespace, run dpdk-app with `ip netns exec NS`)"
            );
        }
    }
    Ok(())
}

/// Says what a kernel-backed vdev on an interface with IP addresses (one the host itself
/// uses) does to the host's traffic there, before anything starts: `net_af_xdp` takes every
/// frame away from the kernel (ARP, neighbour discovery, SSH to those addresses, all gone
/// while the app runs); with `net_af_packet` the kernel still gets every frame and answers its
/// addresses too, so a ping there gets two replies.
fn warn_about_host_interfaces(eal_args: &[String]) {
    for (vdev, iface) in vdevs(eal_args) {
        let Some(iface) = iface else { continue };
        // Only these two share the interface with the kernel; read nothing for the others.
        if !(vdev.starts_with("net_af_xdp") || vdev.starts_with("net_af_packet")) {
            continue;
        }
        let addrs = interface_addresses(&iface);
        if addrs.is_empty() {
            continue;
        }
        let addrs = addrs.join(", ");
        if vdev.starts_with("net_af_xdp") {
            packet::stderr!(
                "dpdk-app: --vdev {vdev}: every frame {iface} receives comes to the app, none to \
                 the kernel, while it runs: {iface}'s addresses ({addrs}) get no ARP, neighbour \
                 discovery, SSH or other service meanwhile. Give the app an interface without \
                 addresses unless that is what you want"
            );
        } else {
            packet::stderr!(
                "dpdk-app: --vdev {vdev}: the kernel still receives every frame on {iface} \
                 (net_af_packet reads copies) and answers its addresses ({addrs}) too: a ping \
                 to them gets two replies. Give the app an interface without addresses"
            );
        }
    }
}

/// The global IP addresses of `iface`, none if they cannot be read. An IPv6 link-local
/// address alone does not make an interface the host's: the kernel gives one to every
/// interface that is up.
fn interface_addresses(iface: &str) -> Vec<String> {
    packet::interface::addresses(iface)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.global)
        .map(|a| a.addr.to_string())
        .collect()
}

/// Refuses `net_af_xdp` on an interface that already has an XDP program. DPDK would fail to
/// set the port up and then, closing it, remove the program it found there (measured with
/// xdp-filter in native mode): somebody's filter gone without a word.
fn refuse_taken_af_xdp_interfaces(af_xdp: &[String]) -> Result<()> {
    for iface in af_xdp {
        if let Some(why) = packet::attached::occupied_by(iface) {
            bail!("{why}. net_af_xdp needs the interface to itself: not started");
        }
    }
    Ok(())
}

/// Sets the stop flag when dropped (also on unwinding).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// l2fwd's link check: wait up to 3 s for every port's link, then report each.
fn wait_for_links(ports: &[StartedPort<'_>]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !ports.iter().all(|p| p.link().0) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in ports {
        let (up, speed) = p.link();
        if up {
            packet::stderr!("dpdk-app: port {} link up, {speed} Mbit/s", p.id());
        } else {
            packet::stderr!("dpdk-app: port {} link DOWN (polling anyway)", p.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Idle, af_xdp_interfaces, idle_policy, vdev_interfaces};

    #[test]
    fn the_interfaces_behind_vdevs() {
        let args: Vec<String> = [
            "dpdk-app",
            "-l",
            "0",
            "--vdev",
            "net_af_packet0,iface=dut0,qpairs=2",
            "--vdev=net_af_xdp0,iface=eth1,start_queue=0",
            "--vdev",
            "net_null0",
            "--no-pci",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(vdev_interfaces(&args), ["dut0", "eth1"]);
        assert_eq!(af_xdp_interfaces(&args), ["eth1"]);
        assert!(vdev_interfaces(&["dpdk-app".into(), "--vdev".into()]).is_empty());
    }

    #[test]
    fn idle_lcores_yield_only_where_the_kernel_feeds_a_port() {
        let port = |name: &str, driver: &str| (name.to_string(), driver.to_string());
        let nic = [port("0000:01:00.0", "net_ixgbe")];
        let veth = [
            port("net_af_xdp0", "net_af_xdp"),
            port("net_ring0", "net_ring"),
        ];
        assert!(!idle_policy(Idle::Auto, &nic).0);
        let (yields, why) = idle_policy(Idle::Auto, &veth);
        assert!(yields);
        assert!(
            why.contains("for net_af_xdp0 (") && !why.contains("net_ring0"),
            "{why}"
        );
        assert!(idle_policy(Idle::Auto, &[port("net_tap0", "net_tap")]).0);
        assert!(idle_policy(Idle::Auto, &[port("net_af_packet0", "net_af_packet")]).0);
        assert!(!idle_policy(Idle::Spin, &veth).0);
        assert!(idle_policy(Idle::Yield, &nic).0);
    }
}
