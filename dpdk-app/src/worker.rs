//! The per-lcore poll loop, the statistics printer and the final report.
//!
//! Each polling lcore owns one RX/TX queue pair on every port (queue index = the lcore's
//! index): the [`Queue`] handles are moved into its loop, so no queue is ever shared and the
//! loop takes no lock. Counters are kept locally and published once per burst with relaxed
//! stores into the lcore's own cache-aligned [`LcoreStats`]; the main lcore only reads them to
//! print (l2fwd's arrangement).

use crate::dpdk::{Burst, PacketBuf, PortStats, Queue, StartedPort};
use packet::capture::{Direction, Tap};
use packet::cli::print_or_stop;
use packet::counter::{
    FlowSlot, FlowTable, Handover, LoopCounters, LoopStats, ProtocolCounters, TopFlows,
};
use packet::datapath::{Action, handle_frame_counting_flows};
use packet::echo::Responder;
use packet::interface::operstate_passes_traffic;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One lcore's counters, read by the main lcore.
pub type LcoreStats = LoopStats;

/// What every lcore shares (read-only but for the stats and the stop flag).
#[derive(Debug)]
pub struct Shared {
    /// Per port (in the order of every lcore's queues): it answers with the port's MAC and
    /// addresses.
    pub responders: Vec<Responder>,
    pub action: Action,
    pub burst: usize,
    /// An lcore whose round over its queues brought nothing yields its CPU (`--idle`).
    pub yield_when_idle: bool,
    pub stop: Arc<AtomicBool>,
    /// Indexed by polling lcore (= queue index).
    pub lcores: Vec<LcoreStats>,
    /// Flow counting (`--flows N`): slots of each lcore's table (0: off), and N.
    pub flow_slots: usize,
    pub top_flows: usize,
}

impl Shared {
    /// The `n` largest flows over every lcore now.
    pub fn top_flows(&self) -> TopFlows {
        let tops: Vec<TopFlows> = self
            .lcores
            .iter()
            .map(|l| {
                l.top_flows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
            .collect();
        TopFlows::merge(&tops, self.top_flows)
    }
}

/// What an lcore does besides its work, each off unless asked for: flow counting and capture.
#[derive(Debug)]
struct Observers {
    flows: Option<FlowTable<Vec<FlowSlot>>>,
    tap: Option<Tap>,
}

/// The poll loop of polling lcore `index`, over its own `queues` (queue `index` of every
/// port, in port order). With `inline` (a single lcore), it also prints statistics and
/// watches the deadline.
pub fn poll_loop(
    shared: &Shared,
    index: usize,
    mut queues: Vec<Queue<'_>>,
    inline: Option<(&RefCell<Printer<'_>>, Option<Instant>)>,
    tap: Option<Tap>,
) {
    let stats = &shared.lcores[index];
    let mut rx = Burst::new();
    let mut tx = Burst::new();
    let mut c = LoopCounters::default();
    let mut protocols = ProtocolCounters::default();
    // Allocated here, once: the flow table and the buffer its top N is handed over in.
    let mut observers = Observers {
        flows: (shared.flow_slots > 0).then(|| {
            FlowTable::with_capacity(shared.flow_slots, packet::counter::random_flow_seed())
        }),
        tap,
    };
    let mut handover = Handover::new(shared.top_flows);
    while !shared.stop.load(Ordering::Relaxed) {
        let mut received = false;
        for (queue, responder) in queues.iter_mut().zip(&shared.responders) {
            let n = queue.rx(&mut rx, shared.burst);
            if n == 0 {
                continue;
            }
            received = true;
            c.rx += n as u64;
            if let Some(tap) = &mut observers.tap {
                tap.set_time();
            }
            // One pass: each packet is answered into `tx` or freed on the spot.
            let overflow = rx.drain_into(&mut tx, |m| {
                process(
                    m,
                    shared.action,
                    responder,
                    &mut c,
                    &mut protocols,
                    &mut observers,
                )
            });
            // Replies go back out of the port they came in on; what TX cannot take is freed.
            let (sent, unsent) = queue.tx(&mut tx);
            c.tx += sent as u64;
            c.tx_dropped += (unsent + overflow) as u64;
            handover.after_burst(stats, &c, &protocols, observers.flows.as_ref());
        }
        if !received {
            handover.when_idle(stats, &protocols, observers.flows.as_ref());
            if shared.yield_when_idle {
                // On veth, twice the echo rate of spinning when overloaded (`cargo xtask
                // bench`): the NAPI thread that fills the RX ring shares this CPU, and a
                // spinning lcore held it for the rest of its time slice with nothing to do.
                std::thread::yield_now();
                c.idle_sleeps += 1;
            }
        }
        if let Some((printer, deadline)) = inline {
            // Checked once per round over the ports, with one clock read for the deadline and
            // every timer of the printer (each read costs about as much as a packet's swap).
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                shared.stop.store(true, Ordering::Relaxed);
            }
            printer.borrow_mut().maybe_print(shared, now);
        }
    }
    handover.finish(stats, &c, &protocols, observers.flows.as_ref());
}

/// Decides what to do with packet `m`; rewrites it in place when it is answered. Returns true
/// when it is to be sent.
#[inline]
fn process<P: PacketBuf>(
    m: &mut P,
    action: Action,
    responder: &Responder,
    c: &mut LoopCounters,
    protocols: &mut ProtocolCounters,
    observers: &mut Observers,
) -> bool {
    if action != Action::Drop && m.is_multi_segment() {
        // Our mempool's buffers hold a full Ethernet frame; a chained mbuf is a jumbo frame
        // we do not handle.
        c.malformed += 1;
        return false;
    }
    let p = m.packet();
    let len = p.len;
    if let Some(tap) = &mut observers.tap {
        tap.record(Direction::In, &p.buf[..len]);
    }
    let reply = handle_frame_counting_flows(
        action,
        responder,
        p.buf,
        len,
        c,
        protocols,
        observers.flows.as_mut(),
    );
    if let (Some(tap), Some(n)) = (&mut observers.tap, reply) {
        tap.record(Direction::Out, &p.buf[..n]);
    }
    match reply {
        Some(reply_len) => {
            // The reply was written inside `p.buf`, so it fits; `set_len` checks anyway (one
            // compare, only when the length changed) and a refusal counts as a dropped reply.
            if reply_len != len && !m.set_len(reply_len) {
                c.tx_dropped += 1;
                return false;
            }
            true
        }
        None => false,
    }
}

/// Prints a line per lcore and per port every interval.
#[derive(Debug)]
pub struct Printer<'a> {
    ports: &'a [StartedPort<'a>],
    interval: Duration,
    start: Instant,
    last_at: Instant,
    last: Vec<LoopCounters>,
    last_ports: Vec<PortStats>,
    /// Each port's link state at the last look, to report changes at once.
    links: Vec<bool>,
    /// Kernel interfaces behind the ports (`iface=` of af_packet / af_xdp vdevs), with their
    /// `operstate` and MTU at the last look: a PMD does not notice when one is deleted, set
    /// down (net_af_packet always reports "up") or given another MTU, so the printer does.
    interfaces: Vec<(String, Option<(String, u32)>)>,
    /// Why the app must stop with an error (an interface went away), once it must.
    pub gone: Option<String>,
    last_watch: Instant,
    /// Whether to explain unfinished checksums (once), when the app does not complete them.
    hint_checksums: bool,
    /// With `--metrics`: what the endpoint serves, refreshed every 250 ms.
    pub metrics: Option<packet::metrics::Published>,
    next_metrics: Instant,
}

impl<'a> Printer<'a> {
    pub fn new(
        shared: &Shared,
        ports: &'a [StartedPort<'a>],
        interval: Duration,
        hint_checksums: bool,
        interfaces: Vec<String>,
    ) -> Printer<'a> {
        Printer {
            ports,
            interval,
            start: Instant::now(),
            last_at: Instant::now(),
            last: shared.lcores.iter().map(|l| l.counts()).collect(),
            last_ports: ports.iter().map(|p| p.stats()).collect(),
            links: ports.iter().map(|p| p.link().0).collect(),
            interfaces: interfaces
                .into_iter()
                .map(|i| {
                    let state = interface_state(&i);
                    // Reported from then on only when it changes; a link down from the start
                    // is said now (net_af_packet reports its port up whatever the interface).
                    if let Some((operstate, _)) = &state
                        && !operstate_passes_traffic(operstate)
                    {
                        packet::stderr!(
                            "dpdk-app: interface {i}: link down (operstate {operstate}): no \
                             traffic until it comes up (polling on)"
                        );
                    }
                    (i, state)
                })
                .collect(),
            gone: None,
            last_watch: Instant::now(),
            hint_checksums,
            metrics: None,
            next_metrics: Instant::now(),
        }
    }

    /// Publishes the counters for the metrics endpoint, if there is one.
    pub fn publish_metrics(&self, shared: &Shared) {
        let Some(published) = &self.metrics else {
            return;
        };
        let stats: Vec<(u16, String, PortStats)> = self
            .ports
            .iter()
            .map(|p| (p.id(), p.name(), p.stats()))
            .collect();
        published.publish(families(shared, &stats));
    }

    /// Reports link changes and unfinished checksums at once, and the statistics every
    /// interval. Called by the main lcore between bursts or between sleeps.
    /// Does what is due at `now` (the caller's clock read): watch links, publish metrics,
    /// print a line.
    pub fn maybe_print(&mut self, shared: &Shared, now: Instant) {
        // Links and interfaces every 20 ms: with one lcore this runs between bursts.
        if now.saturating_duration_since(self.last_watch) >= Duration::from_millis(20) {
            self.last_watch = now;
            self.watch(shared);
        }
        if self.metrics.is_some() && now >= self.next_metrics {
            self.publish_metrics(shared);
            self.next_metrics = now + Duration::from_millis(250);
        }
        if now.saturating_duration_since(self.last_at) < self.interval {
            return;
        }
        self.print(shared);
    }

    /// Reports link changes, a vanished interface (stopping the app) and unfinished
    /// checksums.
    fn watch(&mut self, shared: &Shared) {
        for (iface, last) in &mut self.interfaces {
            let Some(now) = interface_state(iface) else {
                if self.gone.is_none() {
                    self.gone = Some(format!(
                        "interface {iface} went away (deleted, or moved to another network \
                         namespace)"
                    ));
                    shared.stop.store(true, Ordering::Relaxed);
                }
                continue;
            };
            if let Some((operstate, mtu)) = last.as_ref() {
                if operstate_passes_traffic(operstate) != operstate_passes_traffic(&now.0) {
                    if operstate_passes_traffic(&now.0) {
                        packet::stderr!("dpdk-app: interface {iface}: link up again");
                    } else {
                        packet::stderr!(
                            "dpdk-app: interface {iface}: link down (operstate {}): no traffic \
                             until it comes back (polling on)",
                            now.0
                        );
                    }
                }
                if *mtu != now.1 {
                    packet::stderr!(
                        "dpdk-app: interface {iface}: MTU changed from {mtu} to {}",
                        now.1
                    );
                }
            }
            *last = Some(now);
        }
        // The link state, as l2fwd's link check reads it (no waiting): a port that goes down
        // is reported, and polled on; it resumes by itself when the link returns.
        for (port, was_up) in self.ports.iter().zip(self.links.iter_mut()) {
            let (up, speed) = port.link();
            if up != *was_up {
                if up {
                    packet::stderr!("dpdk-app: port {} link up again, {speed} Mbit/s", port.id());
                } else {
                    packet::stderr!(
                        "dpdk-app: port {} link down: no traffic until it comes back (polling \
                         on)",
                        port.id()
                    );
                }
                *was_up = up;
            }
        }
        if self.hint_checksums {
            let partial: u64 = shared
                .lcores
                .iter()
                .map(|l| l.counts().checksum_partial)
                .sum();
            if partial > 0 {
                let ports: Vec<String> = self.ports.iter().map(|p| p.id().to_string()).collect();
                packet::stderr!(
                    "dpdk-app: {}",
                    packet::echo::partial_checksum_hint(
                        &format!("port {}", ports.join(", ")),
                        partial
                    )
                );
                self.hint_checksums = false;
            }
        }
    }

    fn print(&mut self, shared: &Shared) {
        let secs = self.last_at.elapsed().as_secs_f64();
        let t = self.start.elapsed().as_secs_f64();
        let mut lines = String::new();
        for (i, l) in shared.lcores.iter().enumerate() {
            let now = l.counts();
            let prev = self.last[i];
            let rate = |a: u64, b: u64| (b - a) as f64 / secs;
            let _ = writeln!(
                lines,
                "{t:>6.1}s lcore#{i}  rx {:>9.0} pps  tx {:>9.0} pps  dropped {:>7.0} pps",
                rate(prev.rx, now.rx),
                rate(prev.tx, now.tx),
                rate(prev.tx_dropped + prev.dropped, now.tx_dropped + now.dropped),
            );
            self.last[i] = now;
        }
        for (i, port) in self.ports.iter().enumerate() {
            let s = port.stats();
            let prev = self.last_ports[i];
            let _ = writeln!(
                lines,
                "{t:>6.1}s port {}  ipackets {} opackets {} imissed {} ierrors {} oerrors {} \
                 rx_nombuf {} (+{} / +{} this interval)",
                port.id(),
                s.ipackets,
                s.opackets,
                s.imissed,
                s.ierrors,
                s.oerrors,
                s.rx_nombuf,
                s.ipackets - prev.ipackets,
                s.opackets - prev.opackets
            );
            self.last_ports[i] = s;
        }
        if shared.top_flows > 0 {
            lines.push_str(&shared.top_flows().text());
        }
        if !print_or_stop("dpdk-app", format_args!("{lines}")) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        self.last_at = Instant::now();
    }
}

/// The metric families of a run: the lcores' loop counters, the ports' statistics
/// (`rte_eth_stats`), and with `--flows` the top flows.
pub fn families(
    shared: &Shared,
    ports: &[(u16, String, PortStats)],
) -> Vec<packet::metrics::Family> {
    use packet::metrics::Family;
    let label = ports
        .iter()
        .map(|(_, n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let lcores: Vec<(u32, LoopCounters)> = shared
        .lcores
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u32, l.counts()))
        .collect();
    let mut out = packet::metrics::loop_families(&label, &lcores);
    let mut packets = Family::counter(
        "kbp_dpdk_port_packets",
        "Packets the DPDK port received and sent (rte_eth_stats ipackets, opackets).",
    );
    let mut bytes = Family::counter(
        "kbp_dpdk_port_bytes",
        "Bytes the DPDK port received and sent (rte_eth_stats ibytes, obytes).",
    );
    let mut errors = Family::counter(
        "kbp_dpdk_port_errors",
        "Packets the DPDK port lost or refused, by kind (rte_eth_stats imissed, ierrors, \
         oerrors, rx_nombuf).",
    );
    for (id, name, s) in ports {
        let port = id.to_string();
        for (dir, p, b) in [("rx", s.ipackets, s.ibytes), ("tx", s.opackets, s.obytes)] {
            let labels = [
                ("port", port.as_str()),
                ("name", name.as_str()),
                ("direction", dir),
            ];
            packets.push(&labels, p);
            bytes.push(&labels, b);
        }
        for (kind, v) in [
            ("imissed", s.imissed),
            ("ierrors", s.ierrors),
            ("oerrors", s.oerrors),
            ("rx_nombuf", s.rx_nombuf),
        ] {
            errors.push(
                &[
                    ("port", port.as_str()),
                    ("name", name.as_str()),
                    ("kind", kind),
                ],
                v,
            );
        }
    }
    out.extend([packets, bytes, errors]);
    if shared.top_flows > 0 {
        out.extend(packet::metrics::flow_families(&label, &shared.top_flows()));
    }
    out
}

/// An interface's `operstate` and MTU, from this namespace's sysfs; `None` when it does not
/// exist here (deleted, or moved to another namespace).
fn interface_state(iface: &str) -> Option<(String, u32)> {
    let dir = std::path::Path::new("/sys/class/net").join(iface);
    let operstate = std::fs::read_to_string(dir.join("operstate")).ok()?;
    let mtu = std::fs::read_to_string(dir.join("mtu")).ok()?;
    Some((
        operstate.trim().to_string(),
        mtu.trim().parse().unwrap_or(0),
    ))
}

/// Totals at exit.
#[derive(Debug)]
pub struct Report {
    pub total: LoopCounters,
    pub lcores: Vec<LoopCounters>,
    pub protocols: ProtocolCounters,
    pub ports: Vec<(u16, String, PortStats)>,
    pub seconds: f64,
}

impl Report {
    pub fn collect(shared: &Shared, ports: &[(u16, String, PortStats)], seconds: f64) -> Report {
        let lcores: Vec<LoopCounters> = shared.lcores.iter().map(|l| l.counts()).collect();
        let mut total = LoopCounters::default();
        let mut protocols = ProtocolCounters::default();
        for (l, c) in shared.lcores.iter().zip(&lcores) {
            total.merge(c);
            protocols.merge(&l.protocols.lock().unwrap_or_else(|e| e.into_inner()));
        }
        Report {
            total,
            lcores,
            protocols,
            ports: ports.to_vec(),
            seconds,
        }
    }

    pub fn summary(&self) -> String {
        let t = &self.total;
        format!(
            "rx {} tx {} echoed {} reflected {} counted {} dropped {} (tx full {}) malformed {} \
             not-for-us {} checksum-partial {} in {:.1} s",
            t.rx,
            t.tx,
            t.echoed,
            t.reflected,
            t.counted,
            t.dropped + t.tx_dropped,
            t.tx_dropped,
            t.malformed,
            t.not_for_us,
            t.checksum_partial,
            self.seconds
        )
    }

    pub fn json(
        &self,
        action: &str,
        flows: Option<&TopFlows>,
        capture: Option<(&std::path::Path, packet::capture::CaptureReport)>,
    ) -> String {
        let lcores: Vec<_> = self
            .lcores
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut lcore = c.json_fields();
                lcore.insert("lcore".into(), i.into());
                lcore.insert("idle_yields".into(), c.idle_sleeps.into());
                serde_json::Value::Object(lcore)
            })
            .collect();
        let ports: Vec<_> = self
            .ports
            .iter()
            .map(|(p, name, s)| {
                serde_json::json!({
                    "port": p, "name": name,
                    "ipackets": s.ipackets, "opackets": s.opackets,
                    "ibytes": s.ibytes, "obytes": s.obytes, "imissed": s.imissed,
                    "ierrors": s.ierrors, "oerrors": s.oerrors, "rx_nombuf": s.rx_nombuf,
                })
            })
            .collect();
        let mut json = self.total.json_fields();
        json.extend(
            serde_json::json!({
                "idle_yields": self.total.idle_sleeps,
                "action": action,
                "seconds": self.seconds,
                "protocols": self.protocols.packets_json(),
                "lcores": lcores,
                "ports": ports,
                "flows": flows.map(TopFlows::to_json),
                "capture": capture.map(|(file, c)| c.to_json(Some(file))),
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        serde_json::Value::Object(json).to_string()
    }
}

#[cfg(test)]
mod tests {
    //! The per-packet step on heap buffers (no EAL): what is answered, what is refused.
    use super::*;
    use crate::dpdk::Packet;
    use packet::fixtures::*;

    struct HeapBuf {
        data: Vec<u8>,
        len: usize,
        chained: bool,
        refuse_set_len: bool,
    }

    impl PacketBuf for HeapBuf {
        fn packet(&mut self) -> Packet<'_> {
            Packet {
                buf: &mut self.data,
                len: self.len,
            }
        }
        fn is_multi_segment(&self) -> bool {
            self.chained
        }
        fn set_len(&mut self, len: usize) -> bool {
            if self.refuse_set_len || self.chained || len > self.data.len() {
                return false;
            }
            self.len = len;
            true
        }
    }

    fn heap(frame: &[u8]) -> HeapBuf {
        let mut data = frame.to_vec();
        data.resize(2048, 0);
        HeapBuf {
            data,
            len: frame.len(),
            chained: false,
            refuse_set_len: false,
        }
    }

    fn responder() -> Responder {
        let mut r = Responder::new();
        r.set_echo_ports(packet::echo::PortSet::from_list("7").unwrap());
        r.set_local_mac(LOCAL_MAC);
        r.add_ipv4(LOCAL_IPV4).unwrap();
        r.add_ipv6(LOCAL_IPV6).unwrap();
        r
    }

    fn run(m: &mut HeapBuf, action: Action) -> (bool, LoopCounters) {
        let mut c = LoopCounters::default();
        let mut p = ProtocolCounters::default();
        let mut o = Observers {
            flows: None,
            tap: None,
        };
        let keep = process(m, action, &responder(), &mut c, &mut p, &mut o);
        (keep, c)
    }

    #[test]
    fn an_echo_request_is_answered_in_place() {
        let mut m = heap(&UDP4_ECHO_REQUEST);
        let (keep, c) = run(&mut m, Action::Echo);
        assert!(keep);
        assert_eq!(c.echoed, 1);
        assert_eq!(&m.data[..m.len], &UDP4_ECHO_REPLY[..]);
    }

    #[test]
    fn a_chained_buffer_is_malformed_and_not_sent() {
        let mut m = heap(&UDP4_ECHO_REQUEST);
        m.chained = true;
        let (keep, c) = run(&mut m, Action::Echo);
        assert!(!keep);
        assert_eq!((c.malformed, c.echoed), (1, 0));
        // With `drop`, nothing is looked at.
        let (keep, c) = run(&mut m, Action::Drop);
        assert!(!keep);
        assert_eq!((c.dropped, c.malformed), (1, 0));
    }

    #[test]
    fn a_reply_whose_length_cannot_be_set_is_dropped_and_counted() {
        // A neighbour solicitation with 30 bytes of trailing padding: the advertisement is
        // 86 bytes, so the length changes.
        let mut frame = NEIGHBOR_SOLICITATION.to_vec();
        frame.resize(frame.len() + 30, 0);
        let mut m = heap(&frame);
        let (keep, c) = run(&mut m, Action::Echo);
        assert!(keep, "{c:?}");
        assert_eq!(&m.data[..m.len], &NEIGHBOR_ADVERTISEMENT[..]);

        let mut m = heap(&frame);
        m.refuse_set_len = true;
        let (keep, c) = run(&mut m, Action::Echo);
        assert!(!keep);
        // Counted once as answered and once as a reply not sent: tx + dropped == echoed.
        assert_eq!((c.echoed, c.tx_dropped), (1, 1));
    }
}
