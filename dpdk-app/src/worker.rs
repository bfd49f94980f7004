//! The per-lcore poll loop, the statistics printer and the final report.
//!
//! Each polling lcore owns one RX/TX queue pair on every port (queue index = the lcore's
//! index), so no queue is ever shared and the loop takes no lock. Counters are kept locally
//! and published once per burst with relaxed stores into the lcore's own cache-aligned
//! [`LcoreStats`]; the main lcore only reads them to print (l2fwd's arrangement).

use crate::dpdk::{Burst, Port, PortStats};
use packet::counter::{LoopCounters, ProtocolCounters, SharedLoopCounters};
use packet::datapath::{Action, handle_frame};
use packet::echo::Responder;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port and its responder (it answers with the port's MAC and addresses).
#[derive(Debug)]
pub struct PortCtx {
    pub port: Port,
    pub responder: Responder,
}

/// One lcore's counters, read by the main lcore.
#[derive(Debug, Default)]
pub struct LcoreStats {
    pub counters: SharedLoopCounters,
    pub protocols: Mutex<ProtocolCounters>,
}

impl LcoreStats {
    pub fn counts(&self) -> LoopCounters {
        self.counters.load()
    }

    fn publish(&self, c: &LoopCounters, p: &ProtocolCounters, bursts: u64) {
        self.counters.store(c);
        if bursts.is_multiple_of(64)
            && let Ok(mut shared) = self.protocols.try_lock()
        {
            *shared = *p;
        }
    }
}

/// What every lcore shares (read-only but for the stats and the stop flag).
#[derive(Debug)]
pub struct Shared {
    pub ports: Vec<PortCtx>,
    pub action: Action,
    pub burst: usize,
    pub stop: Arc<AtomicBool>,
    /// Indexed by polling lcore (= queue index).
    pub lcores: Vec<LcoreStats>,
}

/// The poll loop of polling lcore `index`, on queue `index` of every port. With `inline`
/// (a single lcore), it also prints statistics and watches the deadline.
pub fn poll_loop(
    shared: &Shared,
    index: usize,
    inline: Option<(&RefCell<Printer>, Option<Instant>)>,
) {
    let queue = index as u16;
    let stats = &shared.lcores[index];
    let mut rx = Burst::default();
    let mut tx = Burst::default();
    let mut c = LoopCounters::default();
    let mut protocols = ProtocolCounters::default();
    let mut bursts: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        for ctx in &shared.ports {
            let n = rx.rx(ctx.port, queue, shared.burst);
            if n == 0 {
                continue;
            }
            c.rx += n as u64;
            for i in 0..n {
                if process(
                    &mut rx,
                    i,
                    shared.action,
                    &ctx.responder,
                    &mut c,
                    &mut protocols,
                ) {
                    rx.move_to(i, &mut tx);
                }
            }
            // Replies go back out of the port they came in on; what TX cannot take is freed.
            let (sent, unsent) = tx.tx(ctx.port, queue);
            c.tx += sent as u64;
            c.tx_dropped += unsent as u64;
            rx.free_all();
            bursts += 1;
            stats.publish(&c, &protocols, bursts);
        }
        if let Some((printer, deadline)) = inline {
            // Checked once per round over the ports; cheap next to a burst.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                shared.stop.store(true, Ordering::Relaxed);
            }
            printer.borrow_mut().maybe_print(shared);
        }
    }
    stats.publish(&c, &protocols, 0);
}

/// Decides what to do with packet `i`; rewrites it in place when it is answered. Returns true
/// when it is to be sent.
#[inline]
fn process(
    rx: &mut Burst,
    i: usize,
    action: Action,
    responder: &Responder,
    c: &mut LoopCounters,
    protocols: &mut ProtocolCounters,
) -> bool {
    if action != Action::Drop && rx.is_multi_segment(i) {
        // Our mempool's buffers hold a full Ethernet frame; a chained mbuf is a jumbo frame
        // we do not handle.
        c.malformed += 1;
        return false;
    }
    let Some(p) = rx.packet(i) else {
        return false;
    };
    let len = p.len;
    match handle_frame(action, responder, p.buf, len, c, protocols) {
        Some(reply_len) => {
            if reply_len != len {
                rx.set_len(i, reply_len as u16);
            }
            true
        }
        None => false,
    }
}

/// Prints a line per lcore and per port every interval.
#[derive(Debug)]
pub struct Printer {
    interval: Duration,
    start: Instant,
    last_at: Instant,
    last: Vec<LoopCounters>,
    last_ports: Vec<PortStats>,
}

impl Printer {
    pub fn new(shared: &Shared, interval: Duration) -> Printer {
        Printer {
            interval,
            start: Instant::now(),
            last_at: Instant::now(),
            last: shared.lcores.iter().map(|l| l.counts()).collect(),
            last_ports: shared.ports.iter().map(|p| p.port.stats()).collect(),
        }
    }

    pub fn maybe_print(&mut self, shared: &Shared) {
        if self.last_at.elapsed() < self.interval {
            return;
        }
        let secs = self.last_at.elapsed().as_secs_f64();
        let t = self.start.elapsed().as_secs_f64();
        for (i, l) in shared.lcores.iter().enumerate() {
            let now = l.counts();
            let prev = self.last[i];
            let rate = |a: u64, b: u64| (b - a) as f64 / secs;
            println!(
                "{t:>6.1}s lcore#{i}  rx {:>9.0} pps  tx {:>9.0} pps  dropped {:>7.0} pps",
                rate(prev.rx, now.rx),
                rate(prev.tx, now.tx),
                rate(prev.tx_dropped + prev.dropped, now.tx_dropped + now.dropped),
            );
            self.last[i] = now;
        }
        for (i, ctx) in shared.ports.iter().enumerate() {
            let s = ctx.port.stats();
            let prev = self.last_ports[i];
            println!(
                "{t:>6.1}s port {}  ipackets {} opackets {} imissed {} ierrors {} oerrors {} \
                 rx_nombuf {} (+{} / +{} this interval)",
                ctx.port.id,
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
        self.last_at = Instant::now();
    }
}

/// Totals at exit.
#[derive(Debug)]
pub struct Report {
    pub total: LoopCounters,
    pub lcores: Vec<LoopCounters>,
    pub protocols: ProtocolCounters,
    pub ports: Vec<(Port, String, PortStats)>,
    pub seconds: f64,
}

impl Report {
    pub fn collect(shared: &Shared, ports: &[(Port, String, PortStats)], seconds: f64) -> Report {
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
             not-for-us {} in {:.1} s",
            t.rx,
            t.tx,
            t.echoed,
            t.reflected,
            t.counted,
            t.dropped + t.tx_dropped,
            t.tx_dropped,
            t.malformed,
            t.not_for_us,
            self.seconds
        )
    }

    pub fn json(&self, action: &str) -> String {
        let t = &self.total;
        let mut proto = serde_json::Map::new();
        for (name, c) in self.protocols.classes() {
            proto.insert(name.into(), c.packets.into());
        }
        let lcores: Vec<_> = self
            .lcores
            .iter()
            .enumerate()
            .map(|(i, c)| {
                serde_json::json!({
                    "lcore": i, "rx": c.rx, "tx": c.tx, "echoed": c.echoed,
                    "reflected": c.reflected, "counted": c.counted,
                    "dropped": c.dropped + c.tx_dropped, "malformed": c.malformed,
                    "not_for_us": c.not_for_us,
                })
            })
            .collect();
        let ports: Vec<_> = self
            .ports
            .iter()
            .map(|(p, name, s)| {
                serde_json::json!({
                    "port": p.id, "name": name,
                    "ipackets": s.ipackets, "opackets": s.opackets,
                    "ibytes": s.ibytes, "obytes": s.obytes, "imissed": s.imissed,
                    "ierrors": s.ierrors, "oerrors": s.oerrors, "rx_nombuf": s.rx_nombuf,
                })
            })
            .collect();
        serde_json::json!({
            "action": action,
            "seconds": self.seconds,
            "rx": t.rx, "tx": t.tx, "echoed": t.echoed, "reflected": t.reflected,
            "counted": t.counted, "dropped": t.dropped + t.tx_dropped,
            "tx_dropped": t.tx_dropped, "malformed": t.malformed, "not_for_us": t.not_for_us,
            "protocols": proto,
            "lcores": lcores,
            "ports": ports,
        })
        .to_string()
    }
}
