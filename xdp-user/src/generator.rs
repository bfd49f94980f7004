//! `xdp-user gen`: a UDP traffic generator and loopback tester on one AF_XDP socket.
//!
//! It sends UDP frames as fast as asked (AF_XDP TX, like xdpsock's txonly) over `--flows`
//! source ports, and at the same time counts what comes back: the XDP program redirects UDP
//! from the target's address and port to the same socket. Each payload carries a magic, a
//! sequence number and the send time, so the replies of any echo service (ours, the kernel's,
//! another vendor's) are matched and timed; latency percentiles come from a log-linear
//! histogram allocated once.
//!
//! The UMEM is split in two: half the frames carry requests (built from per-flow templates),
//! half sit in the fill ring for replies.

use crate::afxdp::QueueSocket;
use crate::frames::Place;
use anyhow::{Result, bail};
use packet::checksum;
use packet::counter::LoopCounters;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xsk_rs::FrameDesc;

const MAGIC: [u8; 4] = *b"KBPG";
/// Magic, sequence number, send time (ns).
const STAMP_LEN: usize = 4 + 8 + 8;

#[derive(Clone, Debug)]
pub struct GenConfig {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
    pub sport: (u16, u16),
    /// Frame size without the FCS.
    pub size: usize,
    pub flows: u32,
    pub rate: Option<f64>,
    pub count: Option<u64>,
    pub duration: f64,
    pub batch: usize,
}

/// The smallest frame that carries the stamp.
pub fn min_size(dst: &IpAddr) -> usize {
    14 + if dst.is_ipv4() { 20 } else { 40 } + 8 + STAMP_LEN
}

#[derive(Clone, Debug, Default)]
pub struct GenReport {
    /// Requests the kernel completed (took off the TX ring and sent or dropped), not merely
    /// those put on the ring.
    pub sent: u64,
    /// Requests put on the TX ring.
    pub queued: u64,
    /// Distinct requests answered: each sequence number counts once.
    pub received: u64,
    /// Replies to a request already answered.
    pub duplicates: u64,
    /// Replies that arrived after a reply to a later request (counted in `received`).
    pub reordered: u64,
    /// Replies too old for the window of remembered sequence numbers, or naming a request
    /// never sent: not counted as received.
    pub stale: u64,
    /// Packets that arrived on the socket but carried no stamp of ours.
    pub foreign: u64,
    pub send_seconds: f64,
    pub latency: Histogram,
}

/// Which requests have been answered, by sequence number, over a sliding window of the most
/// recent `window` requests (a bit each, allocated once): duplicates and reordering are seen,
/// not counted as replies.
#[derive(Clone, Debug)]
pub struct ReplyLedger {
    bits: Vec<u64>,
    window: u64,
    /// The next sequence number to be sent.
    next: u64,
    /// The highest sequence number answered so far, plus one (0: none yet).
    highest: u64,
}

/// What a reply turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// The first reply to its request, in order.
    New,
    /// The first reply to its request, after a reply to a later one.
    Reordered,
    Duplicate,
    /// Older than the window, or naming a request never sent.
    Stale,
}

impl ReplyLedger {
    /// `window` is rounded up to a power of two (at least 64).
    pub fn new(window: u64) -> ReplyLedger {
        let window = window.max(64).next_power_of_two();
        ReplyLedger {
            bits: vec![0; (window / 64) as usize],
            window,
            next: 0,
            highest: 0,
        }
    }

    #[inline]
    fn slot(&self, seq: u64) -> (usize, u64) {
        let i = seq & (self.window - 1);
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Request `seq` (the next one) is about to be sent: its slot is forgotten.
    #[inline]
    pub fn sending(&mut self, seq: u64) {
        debug_assert_eq!(seq, self.next);
        let (w, b) = self.slot(seq);
        self.bits[w] &= !b;
        self.next = seq + 1;
    }

    #[inline]
    pub fn reply(&mut self, seq: u64) -> ReplyKind {
        if seq >= self.next || seq + self.window < self.next {
            return ReplyKind::Stale;
        }
        let (w, b) = self.slot(seq);
        if self.bits[w] & b != 0 {
            return ReplyKind::Duplicate;
        }
        self.bits[w] |= b;
        if seq + 1 < self.highest {
            ReplyKind::Reordered
        } else {
            self.highest = seq + 1;
            ReplyKind::New
        }
    }
}

/// Latencies in microseconds: exact below 128 µs, then 128 buckets per power of two (under 1%
/// error). Allocated once.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; 128 * 60],
            count: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn bucket(v: u64) -> usize {
        if v < 128 {
            v as usize
        } else {
            let e = 63 - v.leading_zeros() - 6;
            (128 * e + (v >> e) as u32) as usize
        }
    }

    fn value(b: usize) -> u64 {
        if b < 128 {
            b as u64
        } else {
            ((b % 128) as u64) << (b / 128)
        }
    }

    #[inline]
    pub fn record(&mut self, us: u64) {
        let b = Self::bucket(us).min(self.buckets.len() - 1);
        self.buckets[b] += 1;
        self.count += 1;
        self.max = self.max.max(us);
    }

    /// The value below which a fraction `p` of the samples lie (0 when empty).
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((p * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Self::value(b);
            }
        }
        self.max
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

/// Per-flow frame templates: everything but the stamp (and, over IPv6, the UDP checksum).
fn templates(cfg: &GenConfig) -> Result<Vec<Vec<u8>>> {
    if cfg.size < min_size(&cfg.dst) || cfg.size > 1514 {
        bail!(
            "--size {} must be {} to 1514 bytes for {} (Ethernet + IP + UDP + a {STAMP_LEN}-byte stamp)",
            cfg.size,
            min_size(&cfg.dst),
            if cfg.dst.is_ipv4() { "IPv4" } else { "IPv6" }
        );
    }
    let range = u32::from(cfg.sport.1 - cfg.sport.0) + 1;
    let mut out = Vec::new();
    for flow in 0..cfg.flows.max(1) {
        let sport = cfg.sport.0 + (flow % range) as u16;
        let mut f = Vec::with_capacity(cfg.size);
        f.extend_from_slice(&cfg.dst_mac);
        f.extend_from_slice(&cfg.src_mac);
        let udp_len = match (cfg.src, cfg.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let total = (cfg.size - 14) as u16;
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[6] = 0x40; // don't fragment
                ip[8] = 64;
                ip[9] = 17;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let c = checksum::checksum(&ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
                total - 20
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let payload = (cfg.size - 14 - 40) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&payload.to_be_bytes());
                f.extend_from_slice(&[17, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                payload
            }
            _ => bail!("--src and --dst must be of the same IP family"),
        };
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&cfg.dport.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]); // IPv4: no checksum; IPv6: filled per packet
        f.extend_from_slice(&MAGIC);
        f.resize(cfg.size, 0x5a);
        out.push(f);
    }
    Ok(out)
}

/// Writes sequence number and time into a frame built from a template; completes the UDP
/// checksum over IPv6 (mandatory there).
#[inline]
fn stamp(frame: &mut [u8], v6: bool, seq: u64, now_ns: u64) {
    let l4 = 14 + if v6 { 40 } else { 20 };
    let at = l4 + 8 + 4;
    frame[at..at + 8].copy_from_slice(&seq.to_be_bytes());
    frame[at + 8..at + 16].copy_from_slice(&now_ns.to_be_bytes());
    if v6 {
        frame[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
        let (src, dst): ([u8; 16], [u8; 16]) = (
            frame[22..38].try_into().unwrap_or([0; 16]),
            frame[38..54].try_into().unwrap_or([0; 16]),
        );
        let seg = &frame[l4..];
        let pseudo = checksum::pseudo_header_v6(&src, &dst, 17, seg.len() as u32);
        let mut c = !checksum::fold(checksum::sum(pseudo, seg));
        if c == 0 {
            c = 0xffff;
        }
        frame[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
    }
}

/// The stamp of a reply, if it carries ours: (sequence, send time ns).
#[inline]
fn read_stamp(frame: &[u8]) -> Option<(u64, u64)> {
    let h = packet::parse(frame).ok()?;
    if h.transport != packet::parse::Transport::Udp {
        return None;
    }
    let at = usize::from(h.l4_offset) + 8;
    let s = frame.get(at..at + STAMP_LEN)?;
    if s[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_be_bytes(s[4..12].try_into().ok()?);
    let ts = u64::from_be_bytes(s[12..20].try_into().ok()?);
    Some((seq, ts))
}

/// How often [`generate`] hands its counters to its `progress` callback.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs the generator on `socket` until `count` frames are sent or `duration` passes, then
/// waits up to half a second for the last replies. `progress` sees the counters every 250 ms
/// (for the metrics endpoint).
pub fn generate(
    mut socket: QueueSocket,
    cfg: &GenConfig,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&GenReport),
) -> Result<GenReport> {
    let templates = templates(cfg)?;
    let v6 = cfg.dst.is_ipv6();
    let mut all = std::mem::take(&mut socket.descs);
    let half = all.len() / 2;
    let mut rx_free: Vec<FrameDesc> = all.split_off(half);
    let mut tx_free: Vec<FrameDesc> = all;
    let batch = cfg.batch.clamp(1, 256);
    let mut rx_descs = vec![FrameDesc::default(); batch];
    let mut comp_descs = vec![FrameDesc::default(); socket.ring_size as usize];
    let mut out: Vec<FrameDesc> = Vec::with_capacity(batch);
    let mut report = GenReport::default();
    // Far more than can be in flight: the socket's frames plus any device's queues.
    let mut ledger = ReplyLedger::new(1 << 20);
    let start = Instant::now();
    let end_send = start + Duration::from_secs_f64(cfg.duration);
    let limit = cfg.count.unwrap_or(u64::MAX);
    let mut send_done: Option<Instant> = None;
    let mut all_answered: Option<Instant> = None;
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    // The ring helpers count the kernel wake-ups they make; the generator does not report them.
    let mut kicks = LoopCounters::default();

    loop {
        let now = Instant::now();
        if now >= next_progress {
            progress(&report);
            next_progress = now + PROGRESS_EVERY;
        }
        let sending = send_done.is_none();
        if sending && (report.queued >= limit || now >= end_send || stop.load(Ordering::Relaxed)) {
            send_done = Some(now);
            report.send_seconds = now.duration_since(start).as_secs_f64();
        }
        // Once everything sent is answered, a short linger still catches (and counts)
        // duplicates of the last replies; otherwise wait half a second for the stragglers.
        if let Some(done) = send_done {
            if all_answered.is_none()
                && report.received >= report.queued
                && report.sent == report.queued
            {
                all_answered = Some(now);
            }
            if all_answered.is_some_and(|t| now.duration_since(t) > Duration::from_millis(50))
                || now.duration_since(done) > Duration::from_millis(500)
            {
                break;
            }
        }

        // Completed requests come back for reuse (and count as sent); reply frames go (back)
        // to the fill ring.
        let before = tx_free.len();
        socket.reclaim(&mut tx_free, &mut comp_descs);
        report.sent += (tx_free.len() - before) as u64;
        socket.refill(&mut rx_free, &mut kicks);

        if send_done.is_none() {
            let allowed = match cfg.rate {
                Some(r) => ((r * now.duration_since(start).as_secs_f64()) as u64).min(limit),
                None => limit,
            };
            let budget = (allowed.saturating_sub(report.queued) as usize)
                .min(batch)
                .min(tx_free.len());
            let now_ns = now.duration_since(start).as_nanos() as u64;
            for k in 0..budget {
                let Some(mut desc) = tx_free.pop() else { break };
                let seq = report.queued + k as u64;
                let template = &templates[(seq % templates.len() as u64) as usize];
                // SAFETY: `desc` came from the free list (never sent, or completed): the
                // frame is ours until produced on the TX ring.
                let mut data = unsafe { socket.umem.data_mut(&mut desc) };
                let mut cursor = data.cursor();
                cursor.set_pos(0);
                if cursor.write_all(template).is_err() {
                    bail!("--size {} does not fit the UMEM frame", template.len());
                }
                stamp(data.contents_mut(), v6, seq, now_ns);
                out.push(desc);
            }
            if !out.is_empty() {
                let queued = socket.send(&out, Place::Free);
                for seq in report.queued..report.queued + queued as u64 {
                    ledger.sending(seq);
                }
                report.queued += queued as u64;
                // Frames the ring had no room for were stamped with sequence numbers that
                // the next batch reuses.
                tx_free.extend_from_slice(&out[queued..]);
                out.clear();
            }
        }
        socket.drain_tx(&mut kicks);

        let got = socket.receive(&mut rx_descs);
        let now_ns = start.elapsed().as_nanos() as u64;
        for desc in rx_descs.iter_mut().take(got) {
            // SAFETY: the frame was just consumed from the RX ring: ours until refilled.
            let data = unsafe { socket.umem.data(desc) };
            match read_stamp(data.contents()) {
                Some((seq, ts)) if ts <= now_ns => match ledger.reply(seq) {
                    kind @ (ReplyKind::New | ReplyKind::Reordered) => {
                        report.received += 1;
                        report.reordered += u64::from(kind == ReplyKind::Reordered);
                        report.latency.record((now_ns - ts) / 1000);
                    }
                    ReplyKind::Duplicate => report.duplicates += 1,
                    ReplyKind::Stale => report.stale += 1,
                },
                _ => report.foreign += 1,
            }
            socket.release(desc, &mut rx_free);
        }
    }
    if report.send_seconds == 0.0 {
        report.send_seconds = start.elapsed().as_secs_f64();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), 50);
        assert_eq!(h.percentile(0.99), 99);
        assert_eq!(h.max(), 100);
        let mut h = Histogram::default();
        h.record(10_000);
        let p = h.percentile(0.5);
        assert!((9_900..=10_000).contains(&p), "{p}");
        assert_eq!(Histogram::default().percentile(0.5), 0);
    }

    #[test]
    fn reply_ledger_tells_new_reordered_duplicate_and_stale_replies() {
        let mut l = ReplyLedger::new(64);
        assert_eq!(l.reply(0), ReplyKind::Stale, "nothing sent yet");
        for seq in 0..10 {
            l.sending(seq);
        }
        assert_eq!(l.reply(0), ReplyKind::New);
        assert_eq!(l.reply(2), ReplyKind::New);
        assert_eq!(l.reply(1), ReplyKind::Reordered);
        assert_eq!(l.reply(1), ReplyKind::Duplicate);
        assert_eq!(l.reply(2), ReplyKind::Duplicate);
        assert_eq!(l.reply(3), ReplyKind::New);
        assert_eq!(l.reply(10), ReplyKind::Stale, "never sent");
        // The window slides: 100 more sent, request 5 is now older than the window.
        for seq in 10..110 {
            l.sending(seq);
        }
        assert_eq!(l.reply(5), ReplyKind::Stale);
        // A slot reused by a newer request starts unanswered.
        assert_eq!(l.reply(64), ReplyKind::New);
        assert_eq!(l.reply(109), ReplyKind::New);
        assert_eq!(l.reply(100), ReplyKind::Reordered);
        assert_eq!(l.reply(109), ReplyKind::Duplicate);
    }

    #[test]
    fn bucket_values_are_monotonic_lower_bounds() {
        let mut last = 0;
        for v in [0u64, 1, 127, 128, 200, 255, 256, 1000, 65_535, 1 << 30] {
            let b = Histogram::bucket(v);
            assert!(Histogram::value(b) <= v, "{v}");
            assert!(b >= last);
            last = b;
        }
    }

    fn cfg(dst: IpAddr, src: IpAddr, size: usize) -> GenConfig {
        GenConfig {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src,
            dst,
            dport: 7,
            sport: (1000, 1003),
            size,
            flows: 4,
            rate: None,
            count: None,
            duration: 1.0,
            batch: 64,
        }
    }

    #[test]
    fn stamped_frames_parse_with_valid_checksums_and_read_back() {
        for (dst, src, size) in [
            (
                "198.18.0.2".parse().unwrap(),
                "198.18.0.1".parse().unwrap(),
                64,
            ),
            (
                "2001:db8::2".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
                90,
            ),
        ] {
            let t = templates(&cfg(dst, src, size)).unwrap();
            assert_eq!(t.len(), 4);
            let mut f = t[3].clone();
            assert_eq!(f.len(), size);
            stamp(&mut f, dst.is_ipv6(), 42, 123_456);
            packet::verify::verify_checksums(&f).unwrap();
            assert_eq!(read_stamp(&f), Some((42, 123_456)));
            let h = packet::parse(&f).unwrap();
            assert_eq!(
                u16::from_be_bytes([f[usize::from(h.l4_offset)], f[usize::from(h.l4_offset) + 1]]),
                1003
            );
        }
    }

    #[test]
    fn sizes_are_checked() {
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        let src: IpAddr = "198.18.0.1".parse().unwrap();
        assert!(templates(&cfg(v4, src, min_size(&v4) - 1)).is_err());
        assert!(templates(&cfg(v4, src, 1515)).is_err());
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(templates(&cfg(v6, src, 100)).is_err(), "mixed families");
    }
}
