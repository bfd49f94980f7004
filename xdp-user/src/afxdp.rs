//! The AF_XDP poll-mode data path: one socket per RX queue, each served by its own thread.
//!
//! # Frame ownership
//! Every UMEM frame is owned by exactly one place at a time:
//!
//! ```text
//!   free list --produce--> fill ring --kernel--> RX ring --consume--> loop
//!       ^                                                              |
//!       |<------------- not answered (counted, dropped) ---------------+
//!       |                                                              | reply
//!       +<--consume-- completion ring <--kernel-- TX ring <--produce---+
//! ```
//!
//! The loop keeps the free list; the kernel owns what sits in the fill and TX rings; the RX and
//! completion rings hold frames the kernel has handed back but the loop has not yet consumed.
//! A [`FrameLedger`] records each frame's place by its address, and every ring step below
//! moves frames in it, checking that the kernel only hands back frames it was lent: a frame
//! owned twice is caught, and frames the kernel legitimately holds at exit (the fill ring, a
//! zero-copy driver's RX ring, its pool after an `rx_ring_full` drop) are named as such in
//! [`QueueReport::frames`], never called lost.
//!
//! # Errors of the ring syscalls
//! Wake-ups (`sendto`, `poll`) that fail are counted, not discarded: "busy" ones (`EAGAIN`,
//! `EBUSY`, `ENOBUFS`, `EINTR`: the kernel is still sending) and "link down" (`ENETDOWN`) are
//! transient; anything else stops the queue, and `run` exits non-zero saying why.
//!
//! # The hot loop
//! In batches: reclaim completed TX frames, refill the fill ring, consume up to `batch` RX
//! descriptors, decide and rewrite each frame in place with the `packet` crate, produce the
//! replies on the TX ring (same frame, no copy), and wake the kernel only when the need-wakeup
//! flag asks for it (counted). No allocation, lock or log per packet: counters are local and
//! published to the statistics thread once per batch with relaxed atomic stores.
//!
//! The xsk-rs ring calls are `unsafe` because the library cannot check the ownership rule
//! above; each call site says why it holds.

pub use crate::frames::FrameAccount;
use crate::frames::{FrameLedger, Place};
use anyhow::{Context, Result, anyhow, bail};
use packet::capture::{Direction, Tap};
use packet::counter::{FlowSlot, FlowTable, Handover, LoopCounters, LoopStats, ProtocolCounters};
use packet::datapath::{Action as LoopAction, handle_frame_counting_flows};
use packet::echo::Responder;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Zero-copy or copy mode for the sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    /// Zero-copy where the driver can, else copy (the default).
    Auto,
    ZeroCopy,
    Copy,
}

/// Settings of one queue's socket and loop.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    pub iface: String,
    pub queue: u32,
    pub frames: u32,
    pub frame_size: u32,
    pub batch: usize,
    pub copy_mode: CopyMode,
    pub busy_poll: bool,
    pub core: Option<usize>,
    pub action: LoopAction,
    /// Count 5-tuples in a flow table of this many slots (0: no flow counting), and publish
    /// the `top_flows` largest.
    pub flow_slots: usize,
    pub top_flows: usize,
}

/// Counters of one queue, written by its loop once per batch and read by the stats thread.
pub type QueueStats = LoopStats;

/// The kernel's view of a socket (getsockopt XDP_STATISTICS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
    pub invalid_descs: u64,
}

/// Failed wake-up syscalls of a queue (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingErrors {
    /// `EAGAIN`, `EBUSY`, `ENOBUFS`, `EINTR`: the kernel was busy; tried again later.
    pub busy: u64,
    /// `ENETDOWN`: the interface is down; the queue waits for it to come back.
    pub link_down: u64,
    /// Any other error: the queue stopped.
    pub fatal: Option<String>,
}

impl RingErrors {
    fn record(&mut self, what: &str, e: std::io::Error) {
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => self.busy += 1,
            Some(libc::ENETDOWN) => self.link_down += 1,
            _ => {
                if self.fatal.is_none() {
                    self.fatal = Some(format!("{what} failed: {e}"));
                }
            }
        }
    }
}

/// Whether the kernel busy-polls a queue's driver from the loop (`--busy-poll`).
///
/// The kernel busy-polls the NAPI instance a socket's frames came from, and learns it from the
/// first frame the socket receives (`SO_INCOMING_NAPI_ID`). A driver that registers its XDP
/// RX queues without a NAPI id leaves nothing to poll: veth does, on kernel 6.18. Spinning
/// then only takes the CPU from the driver's own receive work (its softirq or NAPI thread),
/// at a third of the default loop's rate on the testbed, so the loop goes back to the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BusyPoll {
    /// Not asked for.
    #[default]
    Off,
    /// Asked for, and not known yet: the socket has received nothing.
    Pending,
    /// The loop busy-polls this NAPI instance.
    On { napi_id: u32 },
    /// Asked for, but the socket's frames come with no NAPI id: the loop polls as without
    /// `--busy-poll`.
    Unavailable,
}

impl BusyPoll {
    /// Whether the loop spins and asks the kernel to poll the driver when its RX ring is empty.
    fn polling(self) -> bool {
        matches!(self, BusyPoll::Pending | BusyPoll::On { .. })
    }

    /// For the summary line and the JSON report.
    pub fn state(self) -> &'static str {
        match self {
            BusyPoll::Off => "off",
            BusyPoll::Pending => "pending",
            BusyPoll::On { .. } => "on",
            BusyPoll::Unavailable => "unavailable",
        }
    }

    pub fn napi_id(self) -> Option<u32> {
        match self {
            BusyPoll::On { napi_id } => Some(napi_id),
            _ => None,
        }
    }
}

/// What a queue reports when it stops.
#[derive(Clone, Debug, Default)]
pub struct QueueReport {
    pub queue: u32,
    pub zero_copy: bool,
    pub busy_poll: BusyPoll,
    pub frames: FrameAccount,
    pub kernel: KernelStats,
    pub errors: RingErrors,
}

/// The kernel's `XDP_PACKET_HEADROOM`: where a received frame starts in a UMEM frame (our
/// UMEMs ask for no headroom of their own).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// The longest frame a UMEM frame of `frame_size` bytes holds.
pub fn frame_room(frame_size: u32) -> u32 {
    frame_size.saturating_sub(XDP_PACKET_HEADROOM)
}

/// A bound socket with its UMEM and rings, ready for [`QueueSocket::run`].
pub struct QueueSocket {
    pub(crate) settings: QueueSettings,
    pub(crate) umem: Umem,
    pub(crate) descs: Vec<FrameDesc>,
    pub(crate) fill: FillQueue,
    pub(crate) comp: CompQueue,
    pub(crate) rx: RxQueue,
    pub(crate) tx: TxQueue,
    pub(crate) ring_size: u32,
    pub zero_copy: bool,
    /// Where each frame is (see the module docs).
    pub(crate) ledger: FrameLedger,
    pub(crate) errors: RingErrors,
    pub(crate) busy_poll: BusyPoll,
}

impl std::fmt::Debug for QueueSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSocket")
            .field("queue", &self.settings.queue)
            .field("zero_copy", &self.zero_copy)
            .finish_non_exhaustive()
    }
}

fn queue_size(n: u32) -> Result<QueueSize> {
    QueueSize::new(n).map_err(|e| anyhow!("ring size {n} is not a power of two: {e}"))
}

impl QueueSocket {
    /// Creates the UMEM and binds an AF_XDP socket to `settings.queue`, without loading any
    /// XDP program (ours owns the hook). Zero-copy falls back to copy in `Auto` mode.
    pub fn bind(settings: QueueSettings) -> Result<QueueSocket> {
        if !settings.frames.is_power_of_two() || settings.frames < 64 {
            bail!(
                "--frames must be a power of two of at least 64 (got {})",
                settings.frames
            );
        }
        // Rings of half the frames: the fill ring can hold half, leaving the rest for frames in
        // flight (RX, the loop, TX, completion).
        let ring = (settings.frames / 2).clamp(32, 4096);
        // A batch of 0 would never take a frame off the RX ring; one beyond the ring can never
        // fill. Both were once taken silently.
        if settings.batch == 0 || settings.batch > ring as usize {
            bail!(
                "--batch must be 1 to {ring}, the RX ring's size with --frames {} (got {})",
                settings.frames,
                settings.batch
            );
        }
        let frame_size = FrameSize::new(settings.frame_size)
            .map_err(|e| anyhow!("--frame-size {}: {e}", settings.frame_size))?;
        let umem_config = UmemConfig::builder()
            .frame_size(frame_size)
            .fill_queue_size(queue_size(ring)?)
            .comp_queue_size(queue_size(ring)?)
            .build()
            .map_err(|e| anyhow!("UMEM configuration: {e}"))?;
        let frames = NonZeroU32::new(settings.frames).context("--frames must not be 0")?;
        let (umem, descs) = Umem::new(umem_config, frames, false).map_err(|e| {
            anyhow!(
                "could not create a UMEM of {} frames of {} bytes: {e} (try fewer --frames)",
                settings.frames,
                settings.frame_size
            )
        })?;
        let iface = settings
            .iface
            .parse()
            .map_err(|e| anyhow!("bad interface name {}: {e}", settings.iface))?;

        let attempts: &[(BindFlags, bool)] = match settings.copy_mode {
            CopyMode::ZeroCopy => &[(BindFlags::XDP_ZEROCOPY, true)],
            CopyMode::Copy => &[(BindFlags::XDP_COPY, false)],
            CopyMode::Auto => &[
                (BindFlags::XDP_ZEROCOPY, true),
                (BindFlags::XDP_COPY, false),
            ],
        };
        let mut last_err = None;
        for (flags, zero_copy) in attempts {
            let config = SocketConfig::builder()
                .rx_queue_size(queue_size(ring)?)
                .tx_queue_size(queue_size(ring)?)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(*flags | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: no other socket is bound to this interface and queue by this process
            // (one socket per queue), and the UMEM is used by this socket alone.
            match unsafe { Socket::new(config, &umem, &iface, settings.queue) } {
                Ok((tx, rx, Some((fill, comp)))) => {
                    let ledger = FrameLedger::new(descs.len(), settings.frame_size as usize);
                    let mut s = QueueSocket {
                        settings,
                        umem,
                        descs,
                        fill,
                        comp,
                        rx,
                        tx,
                        ring_size: ring,
                        zero_copy: *zero_copy,
                        ledger,
                        errors: RingErrors::default(),
                        busy_poll: BusyPoll::Off,
                    };
                    s.set_busy_poll(true)?;
                    s.raise_tx_budget();
                    return Ok(s);
                }
                Ok((_, _, None)) => bail!("xsk-rs gave no fill/completion rings for a new UMEM"),
                Err(e) => last_err = Some((e, *zero_copy)),
            }
        }
        let (e, zero_copy) = last_err.expect("at least one attempt");
        if zero_copy && settings.copy_mode == CopyMode::ZeroCopy {
            bail!(
                "{} queue {} cannot do zero-copy AF_XDP ({e}); its driver has no zero-copy \
                 support (veth never has). Use --copy, or leave both flags out to fall back \
                 automatically",
                settings.iface,
                settings.queue
            );
        }
        bail!(
            "could not bind an AF_XDP socket to {} queue {}: {e} (does the queue exist? see \
             `ethtool -l {}`; not root?)",
            settings.iface,
            settings.queue,
            settings.iface
        )
    }

    /// The longest frame this socket's UMEM frames hold: the kernel copies a frame in after
    /// `XDP_PACKET_HEADROOM` (and drops, as `rx_dropped`, one that does not fit).
    pub fn frame_room(&self) -> u32 {
        frame_room(self.settings.frame_size)
    }

    /// The socket's file descriptor, for the XSKS map.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.rx.fd().as_raw_fd()
    }

    pub fn queue(&self) -> u32 {
        self.settings.queue
    }

    /// In copy mode the kernel sends at most 32 frames per wake-up (`sendto`) unless told
    /// otherwise (`XDP_MAX_TX_SKB_BUDGET`, Linux 6.17 and later): raised to the batch size, a
    /// batch goes out with one system call instead of one per 32 frames. Not beyond it: the
    /// call runs the whole transmit path for each frame, and the loop does nothing else
    /// meanwhile. An older kernel refuses the option and keeps 32, which only costs wake-ups.
    fn raise_tx_budget(&mut self) {
        const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
        /// The kernel's own per-call budget, and the least it accepts.
        const TX_BATCH_SIZE: usize = 32;
        if self.zero_copy || self.settings.batch <= TX_BATCH_SIZE {
            return;
        }
        let budget = self.settings.batch.min(self.ring_size as usize) as libc::c_uint;
        // SAFETY: `raw_fd` is our bound socket; `budget` is a c_uint that lives across the
        // call and its size is passed. A refusal changes nothing.
        unsafe {
            libc::setsockopt(
                self.raw_fd(),
                libc::SOL_XDP,
                XDP_MAX_TX_SKB_BUDGET,
                (&budget as *const libc::c_uint).cast(),
                std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
            );
        }
    }

    /// Sets (`on`) or clears the socket's busy-polling options, when `--busy-poll` asked for
    /// them.
    fn set_busy_poll(&mut self, on: bool) -> Result<()> {
        if !self.settings.busy_poll {
            return Ok(());
        }
        let fd = self.raw_fd();
        let budget = self.settings.batch as libc::c_int;
        let on_off = libc::c_int::from(on);
        for (opt, value, name) in [
            (libc::SO_PREFER_BUSY_POLL, on_off, "SO_PREFER_BUSY_POLL"),
            (libc::SO_BUSY_POLL, 20 * on_off, "SO_BUSY_POLL"),
            (libc::SO_BUSY_POLL_BUDGET, budget, "SO_BUSY_POLL_BUDGET"),
        ] {
            // SAFETY: `fd` is an open socket we own; `value` is a c_int that lives across the
            // call and its size is passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                bail!(
                    "--busy-poll: setsockopt {name} failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        self.busy_poll = if on {
            BusyPoll::Pending
        } else {
            BusyPoll::Unavailable
        };
        Ok(())
    }

    /// Once the socket has received frames: busy-polls the NAPI instance they came from, or,
    /// when the driver gave them none, says so and polls as without `--busy-poll`.
    #[cold]
    fn settle_busy_poll(&mut self) {
        let mut napi_id: u32 = 0;
        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
        // SAFETY: `napi_id` and `len` live across the call, and `len` is `napi_id`'s size.
        let rc = unsafe {
            libc::getsockopt(
                self.raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_INCOMING_NAPI_ID,
                (&mut napi_id as *mut u32).cast(),
                &mut len,
            )
        };
        if rc == 0 && napi_id != 0 {
            self.busy_poll = BusyPoll::On { napi_id };
            return;
        }
        let (iface, queue) = (&self.settings.iface, self.settings.queue);
        packet::stderr!(
            "xdp-user: queue {queue}: --busy-poll has nothing to poll: {iface} gives the AF_XDP \
             socket no NAPI id (SO_INCOMING_NAPI_ID is 0; veth does this), so the kernel cannot \
             run the driver's receive work in this loop, and spinning would only take the CPU \
             from it. Polling as without --busy-poll instead."
        );
        if let Err(e) = self.set_busy_poll(false) {
            packet::stderr!("xdp-user: queue {queue}: {e:#}");
            self.busy_poll = BusyPoll::Unavailable;
        }
    }

    /// `recvfrom(MSG_DONTWAIT)` on the socket: drives busy polling, returns at once.
    #[inline]
    fn busy_poll_rx(&self) {
        // SAFETY: a zero-length receive with null buffers on our own socket; the kernel
        // writes nothing, and MSG_DONTWAIT keeps it from blocking.
        unsafe {
            libc::recvfrom(
                self.raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }

    fn kernel_stats(&self) -> KernelStats {
        kernel_stats_of(self.raw_fd())
    }

    /// Runs the poll loop until `stop` is set; returns where every frame ended up.
    pub fn run(
        mut self,
        responder: &Responder,
        stats: &QueueStats,
        stop: &AtomicBool,
        tap: Option<Tap>,
    ) -> QueueReport {
        if let Some(core) = self.settings.core {
            pin_to_core(core);
        }
        let batch = self.settings.batch.max(1);
        // The free list starts with every frame.
        let mut free: Vec<FrameDesc> = std::mem::take(&mut self.descs);
        let mut rx_descs = vec![FrameDesc::default(); batch];
        let mut tx_descs: Vec<FrameDesc> = Vec::with_capacity(batch);
        let mut comp_descs = vec![FrameDesc::default(); self.ring_size as usize];
        let mut local = LoopCounters::default();
        let mut protocols = ProtocolCounters::default();
        let mut idle_spins = 0u32;
        let action = self.settings.action;
        // Flow counting: the table and the top-N buffer are allocated here, once.
        let mut observers = Observers {
            flows: (self.settings.flow_slots > 0).then(|| {
                FlowTable::with_capacity(
                    self.settings.flow_slots,
                    packet::counter::random_flow_seed(),
                )
            }),
            tap,
        };
        let mut handover = Handover::new(self.settings.top_flows);

        while !stop.load(Ordering::Relaxed) && self.errors.fatal.is_none() {
            self.reclaim(&mut free, &mut comp_descs);
            self.refill(&mut free, &mut local);
            // In copy mode every kick sends a limited budget (32 frames): keep kicking while
            // replies wait on the TX ring, or it fills up and replies are dropped.
            if self.tx.needs_wakeup() && self.tx_in_flight() > 0 {
                self.kick_tx();
                local.wakeups += 1;
            }

            // With preferred busy polling the kernel runs the driver's receive work when the
            // application asks, in its own context. Ask only when the RX ring has nothing for
            // us: a system call per batch while frames wait costs more than it brings.
            let mut received = self.receive(&mut rx_descs);
            if received == 0 && self.busy_poll.polling() {
                self.busy_poll_rx();
                received = self.receive(&mut rx_descs);
            }
            if received > 0 && self.busy_poll == BusyPoll::Pending {
                self.settle_busy_poll();
            }
            if received == 0 {
                handover.when_idle(stats, &protocols, observers.flows.as_ref());
                idle_spins += 1;
                // Poll mode: spin while traffic flows; after a while without any, sleep in
                // poll() (1 ms) so an idle queue does not burn a core the generator may need.
                if idle_spins > 2048 && !self.busy_poll.polling() {
                    if let Err(e) = self.rx.poll(1) {
                        self.errors.record("poll", e);
                    }
                    local.idle_sleeps += 1;
                    idle_spins = 0;
                }
                continue;
            }
            idle_spins = 0;
            local.rx += received as u64;
            if let Some(tap) = &mut observers.tap {
                tap.set_time();
            }
            for desc in rx_descs.iter_mut().take(received) {
                let reply = self.process(
                    desc,
                    action,
                    responder,
                    &mut local,
                    &mut protocols,
                    &mut observers,
                );
                if reply {
                    tx_descs.push(*desc);
                } else {
                    self.release(desc, &mut free);
                }
            }
            if !tx_descs.is_empty() {
                self.transmit(&mut tx_descs, &mut free, &mut comp_descs, &mut local);
            }
            handover.after_burst(stats, &local, &protocols, observers.flows.as_ref());
        }

        // Let the kernel finish what is on the TX ring, then account for every frame.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while self.tx_in_flight() > 0 && std::time::Instant::now() < deadline {
            self.kick_tx();
            self.reclaim(&mut free, &mut comp_descs);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.reclaim(&mut free, &mut comp_descs);
        handover.finish(stats, &local, &protocols, observers.flows.as_ref());
        let fill_ring = u64::from(self.ring_size - self.fill.nb_free_exact());
        let mut frames = self.ledger.account(fill_ring);
        // The books and the free list must agree: a frame on the list twice, or missing
        // from it, is an ownership error too.
        frames.violations += frames.free.abs_diff(free.len() as u64);
        QueueReport {
            queue: self.settings.queue,
            zero_copy: self.zero_copy,
            busy_poll: self.busy_poll,
            frames,
            kernel: self.kernel_stats(),
            errors: self.errors.clone(),
        }
    }

    /// Consumes up to `descs.len()` received frames; they are the loop's now.
    #[inline]
    pub(crate) fn receive(&mut self, descs: &mut [FrameDesc]) -> usize {
        // SAFETY: `descs` are scratch descriptors owned by the caller; the consumed ones name
        // frames the kernel has handed back, which the ledger checks it had been lent.
        let n = unsafe { self.rx.consume(descs) };
        for d in &descs[..n] {
            self.ledger.moved(d.addr(), Place::Fill, Place::Loop);
        }
        n
    }

    /// Puts a received frame that is not sent back on the free list.
    #[inline]
    pub(crate) fn release(&mut self, desc: &FrameDesc, free: &mut Vec<FrameDesc>) {
        self.ledger.moved(desc.addr(), Place::Loop, Place::Free);
        free.push(*desc);
    }

    /// Produces `descs` on the TX ring, taken from `from` (the loop's received frames, or the
    /// free list for the generator); returns how many went (the first ones).
    #[inline]
    pub(crate) fn send(&mut self, descs: &[FrameDesc], from: Place) -> usize {
        // SAFETY: `descs` name frames the caller owns, written and not referenced elsewhere;
        // once produced they belong to the kernel until they come back through the
        // completion ring, and the caller does not touch them meanwhile.
        let sent = unsafe { self.tx.produce(descs) };
        for d in &descs[..sent] {
            self.ledger.moved(d.addr(), from, Place::Tx);
        }
        sent
    }

    /// Kicks the kernel to send what the TX ring holds (`sendto`, as libxdp does), counting
    /// what goes wrong instead of ignoring it.
    #[inline]
    pub(crate) fn kick_tx(&mut self) {
        // SAFETY: a zero-length send with null buffers on our own socket; the kernel reads
        // nothing, and MSG_DONTWAIT keeps it from blocking.
        let rc = unsafe {
            libc::sendto(
                self.raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            self.errors
                .record("sendto (TX wake-up)", std::io::Error::last_os_error());
        }
    }

    /// Puts the replies on the TX ring. When the ring is full, kicks the kernel and reclaims
    /// completions a few times before giving up: back-pressure, not loss, while the kernel
    /// keeps up; replies that still find no room are dropped and counted.
    #[inline]
    fn transmit(
        &mut self,
        tx_descs: &mut Vec<FrameDesc>,
        free: &mut Vec<FrameDesc>,
        comp_descs: &mut [FrameDesc],
        local: &mut LoopCounters,
    ) {
        let mut done = 0;
        for attempt in 0..16 {
            let sent = self.send(&tx_descs[done..], Place::Loop);
            done += sent;
            local.tx += sent as u64;
            if self.tx.needs_wakeup() {
                self.kick_tx();
                local.wakeups += 1;
            }
            if done == tx_descs.len() || attempt == 15 {
                break;
            }
            self.reclaim(free, comp_descs);
        }
        local.tx_dropped += (tx_descs.len() - done) as u64;
        for d in &tx_descs[done..] {
            self.release(d, free);
        }
        tx_descs.clear();
        self.drain_tx(local);
    }

    /// Kicks the kernel until the TX ring is empty (8 kicks at most). A copy-mode kick sends at
    /// most 32 frames; draining now keeps frames from waiting there while the fill ring runs
    /// dry. (In zero-copy mode the driver clears the need-wakeup flag once it is sending, which
    /// ends this loop.)
    #[inline]
    pub(crate) fn drain_tx(&mut self, local: &mut LoopCounters) {
        for _ in 0..8 {
            if !self.tx.needs_wakeup() || self.tx_in_flight() == 0 {
                break;
            }
            self.kick_tx();
            local.wakeups += 1;
        }
    }

    pub(crate) fn tx_in_flight(&mut self) -> u32 {
        self.ring_size - self.tx.nb_free_exact()
    }

    /// Completed TX frames go back to the free list.
    #[inline]
    pub(crate) fn reclaim(&mut self, free: &mut Vec<FrameDesc>, comp_descs: &mut [FrameDesc]) {
        // SAFETY: completed descriptors name frames the kernel has finished sending; they are
        // ours again (the ledger checks they had been lent for sending).
        let n = unsafe { self.comp.consume(comp_descs) };
        for d in &comp_descs[..n] {
            self.ledger.moved(d.addr(), Place::Tx, Place::Free);
        }
        free.extend_from_slice(&comp_descs[..n]);
    }

    /// Hands free frames to the kernel through the fill ring.
    #[inline]
    pub(crate) fn refill(&mut self, free: &mut Vec<FrameDesc>, local: &mut LoopCounters) {
        if self.produce_fill(free) && self.fill.needs_wakeup() {
            if let Err(e) = self.fill.wakeup(self.rx.fd_mut(), 0) {
                self.errors.record("poll (fill wake-up)", e);
            }
            local.wakeups += 1;
        }
    }

    /// Moves as many frames from `free` to the fill ring as it has room for; false when it had
    /// no room (or there was nothing to move).
    #[inline]
    fn produce_fill(&mut self, free: &mut Vec<FrameDesc>) -> bool {
        if free.is_empty() {
            return false;
        }
        let room = self.fill.nb_free(free.len() as u32) as usize;
        if room == 0 {
            return false;
        }
        let from = free.len() - room.min(free.len());
        // SAFETY: the frames in the free list are owned by the loop and not referenced
        // anywhere else; once produced they belong to the kernel until received.
        let produced = unsafe { self.fill.produce(&free[from..]) };
        // The first `produced` of the slice went to the kernel.
        for d in free.drain(from..from + produced) {
            self.ledger.moved(d.addr(), Place::Free, Place::Fill);
        }
        true
    }

    /// Fills the fill ring now, before the XDP program is attached, so the first frames it
    /// redirects find room. Until the queue's thread first refilled, every frame redirected to
    /// the socket was dropped by the kernel (`fill_ring_empty`): 4273 of them when `run`
    /// started under 200 kpps of echo requests on the testbed.
    pub fn prime_fill_ring(&mut self) {
        let mut free = std::mem::take(&mut self.descs);
        self.refill(&mut free, &mut LoopCounters::default());
        self.descs = free;
    }

    /// Decides what to do with one received frame; rewrites it in place when it is answered.
    /// Returns true when the frame is to be sent back.
    #[inline]
    fn process(
        &self,
        desc: &mut FrameDesc,
        action: LoopAction,
        responder: &Responder,
        local: &mut LoopCounters,
        protocols: &mut ProtocolCounters,
        observers: &mut Observers,
    ) -> bool {
        // SAFETY: the frame was just consumed from the RX ring, so the loop owns it and nothing
        // else reads or writes it until it is produced on the TX or fill ring.
        let mut data = unsafe { self.umem.data_mut(desc) };
        let len = data.contents().len();
        // Open the whole frame buffer: a reply may be longer than the request.
        let mut cursor = data.cursor();
        let capacity = cursor.buf_len();
        cursor.set_pos(capacity);
        let buf = data.contents_mut();
        if let Some(tap) = &mut observers.tap {
            tap.record(Direction::In, &buf[..len]);
        }
        let reply = handle_frame_counting_flows(
            action,
            responder,
            buf,
            len,
            local,
            protocols,
            observers.flows.as_mut(),
        );
        if let (Some(tap), Some(n)) = (&mut observers.tap, reply) {
            tap.record(Direction::Out, &buf[..n]);
        }
        data.cursor().set_pos(reply.unwrap_or(len));
        reply.is_some()
    }
}

/// What a loop does besides its work, each off unless asked for: flow counting and capture.
#[derive(Debug)]
struct Observers {
    flows: Option<FlowTable<Vec<FlowSlot>>>,
    tap: Option<Tap>,
}

pub(crate) fn pin_to_core(core: usize) {
    // SAFETY: `set` is a plain bitmask initialised by CPU_ZERO; sched_setaffinity reads it for
    // the calling thread (pid 0). Failure (no such CPU) is reported and the thread runs
    // unpinned.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            packet::stderr!(
                "xdp-user: could not pin to core {core}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The CPUs this process may run on (its affinity mask: a container's or `taskset`'s limit
/// included).
pub fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: `set` is a plain bitmask sched_getaffinity fills for this process (pid 0), of
    // the size passed; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            bail!(
                "cannot read this process's CPU affinity: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

/// Checks, before anything is attached, that every CPU `flag` names is one this process may
/// run on: a thread pinned elsewhere would fail and run unpinned, not where it was asked to.
pub fn check_cpus(flag: &str, cpus: &[usize]) -> Result<()> {
    let allowed = allowed_cpus()?;
    if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
        let list: Vec<String> = allowed.iter().map(usize::to_string).collect();
        bail!(
            "{flag}: CPU {bad} is not one this process may run on (allowed: {}); see `nproc` \
             and `taskset -p $$`",
            list.join(",")
        );
    }
    Ok(())
}

/// The RX queues of an interface (from /sys/class/net/IFACE/queues).
pub fn rx_queue_count(iface: &str) -> Result<u32> {
    let dir = format!("/sys/class/net/{iface}/queues");
    let n = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {dir}"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    if n == 0 {
        bail!("{iface} has no RX queues in {dir}");
    }
    Ok(n)
}

/// The interface's MAC address.
pub fn mac_address(iface: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC address in {path}: {text}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("{iface} has no Ethernet MAC address ({})", text.trim()))
}

/// A running queue: its thread, counters and final report.
pub struct RunningQueue {
    pub queue: u32,
    pub stats: Arc<QueueStats>,
    pub handle: std::thread::JoinHandle<QueueReport>,
}

impl std::fmt::Debug for RunningQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningQueue")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Starts the poll loop of `socket` on its own thread.
pub fn spawn(
    socket: QueueSocket,
    responder: Arc<Responder>,
    stop: Arc<AtomicBool>,
    tap: Option<Tap>,
) -> Result<RunningQueue> {
    let stats = Arc::new(QueueStats::default());
    let queue = socket.queue();
    let s = Arc::clone(&stats);
    let handle = std::thread::Builder::new()
        .name(format!("xsk-q{queue}"))
        .spawn(move || socket.run(&responder, &s, &stop, tap))
        .context("could not start a queue thread")?;
    Ok(RunningQueue {
        queue,
        stats,
        handle,
    })
}

/// Reads the kernel statistics of a running queue's socket.
pub fn kernel_stats_of(fd: std::os::fd::RawFd) -> KernelStats {
    #[repr(C)]
    #[derive(Default)]
    struct XdpStatistics {
        rx_dropped: u64,
        rx_invalid_descs: u64,
        tx_invalid_descs: u64,
        rx_ring_full: u64,
        rx_fill_ring_empty_descs: u64,
        tx_ring_empty_descs: u64,
    }
    const XDP_STATISTICS: libc::c_int = 7;
    let mut s = XdpStatistics::default();
    let mut len = std::mem::size_of::<XdpStatistics>() as libc::socklen_t;
    // SAFETY: `s` is a writable buffer of `len` bytes laid out as the kernel's struct
    // xdp_statistics; getsockopt writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            XDP_STATISTICS,
            (&mut s as *mut XdpStatistics).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return KernelStats::default();
    }
    KernelStats {
        rx_dropped: s.rx_dropped,
        rx_ring_full: s.rx_ring_full,
        fill_ring_empty: s.rx_fill_ring_empty_descs,
        invalid_descs: s.rx_invalid_descs + s.tx_invalid_descs,
    }
}
