//! Counters: packets and bytes per protocol, TCP flag counts, and a fixed-capacity flow table.
//!
//! Protocol classes count at two levels. Every frame counts once at the network level: `arp`,
//! `ipv4`, `ipv6`, `other` (any other ether type) or `malformed`. IP packets count a second time
//! at the transport level when their transport header was read and is TCP, UDP, ICMP or ICMPv6
//! (whole datagrams and first fragments). So `ipv4 + ipv6 >= tcp + udp + icmp + icmpv6`, and
//! the difference is later fragments, other IP protocols, and IPv6 packets whose transport
//! header the parser cannot reach (`Transport::Unparsed`).
//!
//! Each poll loop owns its counters (no sharing, no atomics on the fast path); the statistics
//! thread merges copies of them.

pub use crate::abi::Counter;
use crate::echo::{ReplyKind, Verdict};
use crate::parse::{Headers, Malformed, Net, Transport, tcp_flags};

/// Per-protocol counters. See the module docs for how classes add up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolCounters {
    pub arp: Counter,
    pub ipv4: Counter,
    pub ipv6: Counter,
    pub tcp: Counter,
    pub udp: Counter,
    pub icmp: Counter,
    pub icmpv6: Counter,
    pub other: Counter,
    pub malformed: Counter,
    pub tcp_syn: u64,
    pub tcp_fin: u64,
    pub tcp_rst: u64,
}

impl ProtocolCounters {
    /// Counts one frame of `len` bytes with the result of parsing it.
    #[inline]
    pub fn count(&mut self, parsed: Result<&Headers, &Malformed>, len: usize) {
        let bytes = len as u64;
        let h = match parsed {
            Ok(h) => h,
            Err(_) => {
                self.malformed.add(bytes);
                return;
            }
        };
        match h.net {
            Net::Arp => self.arp.add(bytes),
            Net::Ipv4 => self.ipv4.add(bytes),
            Net::Ipv6 { .. } => self.ipv6.add(bytes),
            Net::Other { .. } => self.other.add(bytes),
        }
        match h.transport {
            Transport::Tcp { flags } => {
                self.tcp.add(bytes);
                self.tcp_syn += u64::from(flags & tcp_flags::SYN != 0);
                self.tcp_fin += u64::from(flags & tcp_flags::FIN != 0);
                self.tcp_rst += u64::from(flags & tcp_flags::RST != 0);
            }
            Transport::Udp => self.udp.add(bytes),
            Transport::Icmpv4 { .. } => self.icmp.add(bytes),
            Transport::Icmpv6 { .. } => self.icmpv6.add(bytes),
            Transport::None
            | Transport::Fragment
            | Transport::Unparsed
            | Transport::Other { .. } => {}
        }
    }

    /// Adds another set of counters (another queue's, another lcore's).
    pub fn merge(&mut self, o: &ProtocolCounters) {
        for (mine, theirs) in self.classes_mut().into_iter().zip(o.classes()) {
            mine.1.merge(theirs.1);
        }
        self.tcp_syn += o.tcp_syn;
        self.tcp_fin += o.tcp_fin;
        self.tcp_rst += o.tcp_rst;
    }

    /// The classes with their names, in report order.
    pub fn classes(&self) -> [(&'static str, &Counter); 9] {
        [
            ("arp", &self.arp),
            ("ipv4", &self.ipv4),
            ("ipv6", &self.ipv6),
            ("tcp", &self.tcp),
            ("udp", &self.udp),
            ("icmp", &self.icmp),
            ("icmpv6", &self.icmpv6),
            ("other", &self.other),
            ("malformed", &self.malformed),
        ]
    }

    fn classes_mut(&mut self) -> [(&'static str, &mut Counter); 9] {
        [
            ("arp", &mut self.arp),
            ("ipv4", &mut self.ipv4),
            ("ipv6", &mut self.ipv6),
            ("tcp", &mut self.tcp),
            ("udp", &mut self.udp),
            ("icmp", &mut self.icmp),
            ("icmpv6", &mut self.icmpv6),
            ("other", &mut self.other),
            ("malformed", &mut self.malformed),
        ]
    }
}

/// What a data path's poll loop did with the packets it received. Every data path reports
/// these under the same names (`xdp-user run --json`, `dpdk-app --json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopCounters {
    pub rx: u64,
    pub tx: u64,
    pub echoed: u64,
    pub reflected: u64,
    pub counted: u64,
    pub dropped: u64,
    pub malformed: u64,
    pub not_for_us: u64,
    /// Replies the TX path had no room for, freed and counted.
    pub tx_dropped: u64,
    /// Kernel wake-ups the need-wakeup flag asked for (AF_XDP; 0 elsewhere).
    pub wakeups: u64,
    /// Times an idle loop gave its CPU up: slept in `poll()` (AF_XDP) or yielded (dpdk-app).
    pub idle_sleeps: u64,
    /// Echo requests whose UDP checksum the sender left unfinished (checksum offload on its
    /// side; see `packet::echo`).
    pub checksum_partial: u64,
}

#[cfg(feature = "report")]
impl LoopCounters {
    /// The counters every poll loop's JSON has, under the same names (`xdp-user run`'s
    /// queues and total, `dpdk-app`'s lcores and total): one place, so the two cannot drift.
    /// `dropped` includes the replies TX had no room for, which `tx_dropped` gives alone.
    pub fn json_fields(&self) -> serde_json::Map<std::string::String, serde_json::Value> {
        let fields = [
            ("rx", self.rx),
            ("tx", self.tx),
            ("echoed", self.echoed),
            ("reflected", self.reflected),
            ("counted", self.counted),
            ("dropped", self.dropped + self.tx_dropped),
            ("tx_dropped", self.tx_dropped),
            ("malformed", self.malformed),
            ("not_for_us", self.not_for_us),
            ("checksum_partial", self.checksum_partial),
        ];
        fields
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }
}

#[cfg(feature = "report")]
impl ProtocolCounters {
    /// The JSON `protocols` object: packets per class.
    pub fn packets_json(&self) -> serde_json::Value {
        self.classes()
            .into_iter()
            .map(|(name, c)| (name.into(), c.packets.into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

impl LoopCounters {
    /// Counts a responder's verdict; returns the reply's length when there is one to send.
    #[inline]
    pub fn record(&mut self, verdict: &Verdict) -> Option<usize> {
        match verdict {
            Verdict::Reply {
                len,
                kind,
                partial_checksum,
            } => {
                self.checksum_partial += u64::from(*partial_checksum);
                if *kind == ReplyKind::Reflected {
                    self.reflected += 1;
                } else {
                    self.echoed += 1;
                }
                Some(*len)
            }
            Verdict::NotForUs => {
                self.not_for_us += 1;
                None
            }
            Verdict::Malformed(_) => {
                self.malformed += 1;
                None
            }
        }
    }

    /// Adds another loop's counters.
    pub fn merge(&mut self, o: &LoopCounters) {
        self.rx += o.rx;
        self.tx += o.tx;
        self.echoed += o.echoed;
        self.reflected += o.reflected;
        self.counted += o.counted;
        self.dropped += o.dropped;
        self.malformed += o.malformed;
        self.not_for_us += o.not_for_us;
        self.tx_dropped += o.tx_dropped;
        self.wakeups += o.wakeups;
        self.idle_sleeps += o.idle_sleeps;
        self.checksum_partial += o.checksum_partial;
    }
}

/// [`LoopCounters`] shared between one poll loop, the only writer (relaxed stores, once per
/// batch), and a statistics reader. Cache-line aligned so two loops never share a line.
#[cfg(feature = "std")]
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct SharedLoopCounters {
    values: [std::sync::atomic::AtomicU64; 12],
}

#[cfg(feature = "std")]
impl SharedLoopCounters {
    fn fields(c: &LoopCounters) -> [u64; 12] {
        [
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
            c.idle_sleeps,
            c.checksum_partial,
        ]
    }

    #[inline]
    pub fn store(&self, c: &LoopCounters) {
        for (a, v) in self.values.iter().zip(Self::fields(c)) {
            a.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn load(&self) -> LoopCounters {
        let v: [u64; 12] =
            core::array::from_fn(|i| self.values[i].load(std::sync::atomic::Ordering::Relaxed));
        LoopCounters {
            rx: v[0],
            tx: v[1],
            echoed: v[2],
            reflected: v[3],
            counted: v[4],
            dropped: v[5],
            malformed: v[6],
            not_for_us: v[7],
            tx_dropped: v[8],
            wakeups: v[9],
            idle_sleeps: v[10],
            checksum_partial: v[11],
        }
    }
}

/// An IP 5-tuple. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so both families
/// share one key type. ICMP, other protocols, later fragments and unparsed IPv6 have ports 0
/// (a first fragment has its ports, so a fragmented datagram's later fragments count under
/// a flow of their own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

impl FlowKey {
    /// The 5-tuple of a parsed IP frame; `None` for non-IP frames.
    pub fn from_frame(frame: &[u8], h: &Headers) -> Option<FlowKey> {
        let l3 = usize::from(h.l3_offset);
        let l4 = usize::from(h.l4_offset);
        let mut key = FlowKey::default();
        match h.net {
            Net::Ipv4 => {
                let ip = frame.get(l3..l3 + 20)?;
                key.src[10..12].copy_from_slice(&[0xff, 0xff]);
                key.dst[10..12].copy_from_slice(&[0xff, 0xff]);
                key.src[12..].copy_from_slice(&ip[12..16]);
                key.dst[12..].copy_from_slice(&ip[16..20]);
            }
            Net::Ipv6 { .. } => {
                let ip = frame.get(l3..l3 + 40)?;
                key.src.copy_from_slice(&ip[8..24]);
                key.dst.copy_from_slice(&ip[24..40]);
            }
            _ => return None,
        }
        // The upper-layer protocol, after any IPv6 extension headers.
        key.protocol = h.protocol;
        if matches!(h.transport, Transport::Tcp { .. } | Transport::Udp) {
            let p = frame.get(l4..l4 + 4)?;
            key.src_port = u16::from_be_bytes([p[0], p[1]]);
            key.dst_port = u16::from_be_bytes([p[2], p[3]]);
        }
        Some(key)
    }

    /// A 64-bit hash: multiply-fold over the key's words (fast, and good enough to spread
    /// 5-tuples; the seed keeps a remote sender from predicting collisions across runs).
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let w = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        };
        let mut h = seed ^ K;
        for word in [
            w(&self.src[0..8]),
            w(&self.src[8..16]),
            w(&self.dst[0..8]),
            w(&self.dst[8..16]),
            u64::from(self.src_port)
                | u64::from(self.dst_port) << 16
                | u64::from(self.protocol) << 32,
        ] {
            h = (h ^ word).wrapping_mul(K);
            h ^= h >> 29;
        }
        h
    }
}

/// One slot of a [`FlowTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    pub key: FlowKey,
    /// `packets == 0` marks a free slot.
    pub counter: Counter,
}

/// How many slots a lookup probes before it gives up and counts the packet as overflow.
const MAX_PROBES: usize = 16;

/// A fixed-capacity flow table: open addressing with linear probing over caller-provided
/// storage (`[FlowSlot; N]`, a `Vec`, a slice), so it never allocates after construction. When
/// the table is full (or a probe run is longer than 16 slots), the packet is counted in
/// `overflow` instead.
#[derive(Clone, Debug)]
pub struct FlowTable<S> {
    slots: S,
    mask: usize,
    seed: u64,
    len: usize,
    /// Packets and bytes that found no slot.
    pub overflow: Counter,
}

impl<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>> FlowTable<S> {
    /// `slots.len()` must be a power of two (else the table uses the largest power of two that
    /// fits); the slots must be free (`FlowSlot::default()`).
    pub fn new(slots: S, seed: u64) -> Self {
        let n = slots.as_ref().len();
        let cap: usize = if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        FlowTable {
            slots,
            mask: cap.wrapping_sub(1),
            seed,
            len: 0,
            overflow: Counter::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.mask.wrapping_add(1)
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts one packet of `bytes` bytes for `key`.
    #[inline]
    pub fn count(&mut self, key: &FlowKey, bytes: u64) {
        if self.capacity() == 0 {
            self.overflow.add(bytes);
            return;
        }
        let start = self.hash_slot(key);
        let slots = self.slots.as_mut();
        for i in 0..MAX_PROBES.min(self.mask + 1) {
            let slot = &mut slots[(start + i) & self.mask];
            if slot.counter.packets == 0 {
                slot.key = *key;
                slot.counter.add(bytes);
                self.len += 1;
                return;
            }
            if slot.key == *key {
                slot.counter.add(bytes);
                return;
            }
        }
        self.overflow.add(bytes);
    }

    pub fn get(&self, key: &FlowKey) -> Option<Counter> {
        if self.capacity() == 0 {
            return None;
        }
        let start = self.hash_slot(key);
        let slots = self.slots.as_ref();
        (0..MAX_PROBES.min(self.mask + 1))
            .map(|i| &slots[(start + i) & self.mask])
            .take_while(|s| s.counter.packets != 0)
            .find(|s| s.key == *key)
            .map(|s| s.counter)
    }

    /// Fills `out` with the flows with the most packets, most first (ties by key), and returns
    /// how many it wrote. No allocation: a selection into `out`, O(capacity * out.len()).
    pub fn top(&self, out: &mut [FlowSlot]) -> usize {
        let mut n = 0;
        for slot in self.slots.as_ref()[..self.capacity()].iter() {
            if slot.counter.packets == 0 {
                continue;
            }
            // Insertion into the sorted prefix out[..n].
            let better = |a: &FlowSlot, b: &FlowSlot| {
                (a.counter.packets, core::cmp::Reverse(a.key))
                    > (b.counter.packets, core::cmp::Reverse(b.key))
            };
            let mut pos = n;
            while pos > 0 && better(slot, &out[pos - 1]) {
                pos -= 1;
            }
            if pos >= out.len() {
                continue;
            }
            let last = if n < out.len() { n } else { out.len() - 1 };
            let mut i = last;
            while i > pos {
                out[i] = out[i - 1];
                i -= 1;
            }
            out[pos] = *slot;
            if n < out.len() {
                n += 1;
            }
        }
        n
    }

    /// Empties the table.
    pub fn clear(&mut self) {
        for s in self.slots.as_mut() {
            *s = FlowSlot::default();
        }
        self.len = 0;
        self.overflow = Counter::default();
    }

    #[inline]
    fn hash_slot(&self, key: &FlowKey) -> usize {
        (key.hash(self.seed) as usize) & self.mask
    }
}

#[cfg(feature = "std")]
impl FlowKey {
    /// The source address (IPv4 when stored IPv4-mapped).
    pub fn src_ip(&self) -> std::net::IpAddr {
        std::net::Ipv6Addr::from(self.src).to_canonical()
    }

    pub fn dst_ip(&self) -> std::net::IpAddr {
        std::net::Ipv6Addr::from(self.dst).to_canonical()
    }

    /// The protocol's name where it has a common one, else its number.
    pub fn protocol_name(&self) -> std::borrow::Cow<'static, str> {
        match self.protocol {
            1 => "icmp".into(),
            6 => "tcp".into(),
            17 => "udp".into(),
            58 => "icmpv6".into(),
            p => std::format!("{p}").into(),
        }
    }
}

#[cfg(feature = "std")]
impl core::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ep = |ip: std::net::IpAddr, port: u16| match ip {
            std::net::IpAddr::V6(v6) => std::format!("[{v6}]:{port}"),
            std::net::IpAddr::V4(v4) => std::format!("{v4}:{port}"),
        };
        write!(
            f,
            "{} {} -> {}",
            self.protocol_name(),
            ep(self.src_ip(), self.src_port),
            ep(self.dst_ip(), self.dst_port)
        )
    }
}

/// A per-run seed for the flow tables' hash, so a remote sender cannot aim for collisions.
#[cfg(feature = "std")]
pub fn random_flow_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6b62_7066_6c6f_7773);
    h.finish()
}

/// One poll loop's counters as its readers (the statistics thread, the metrics endpoint) see
/// them: the loop hands them over through a [`Handover`].
#[cfg(feature = "std")]
#[derive(Debug, Default)]
pub struct LoopStats {
    pub counters: SharedLoopCounters,
    /// Protocol counters, copied under the lock (see [`Handover`]).
    pub protocols: std::sync::Mutex<ProtocolCounters>,
    /// With flow counting: the largest flows, refreshed about every 500 ms and at the end.
    pub top_flows: std::sync::Mutex<TopFlows>,
}

#[cfg(feature = "std")]
impl LoopStats {
    pub fn counts(&self) -> LoopCounters {
        self.counters.load()
    }

    /// Hands over the protocol counters, unless a reader holds them right now.
    fn try_publish_protocols(&self, p: &ProtocolCounters) -> bool {
        match self.protocols.try_lock() {
            Ok(mut shared) => {
                *shared = *p;
                true
            }
            Err(_) => false,
        }
    }
}

/// When a poll loop hands its counters to [`LoopStats`]: the loop counters after every
/// burst (relaxed stores); the protocol counters (a larger struct, behind a lock) every 64
/// bursts; the top flows every 64 bursts at most every 500 ms. With light traffic 64 bursts
/// may take long, so a round that receives nothing hands over what is still stale: a reader
/// sees every packet once the queue is quiet. The loop never waits for a reader, but at the
/// end.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct Handover {
    top: TopFlows,
    next_top: std::time::Instant,
    bursts: u64,
    protocols_stale: bool,
    top_stale: bool,
}

#[cfg(feature = "std")]
impl Handover {
    /// Room for the `top_flows` largest flows (allocated here, once).
    pub fn new(top_flows: usize) -> Handover {
        Handover {
            top: TopFlows::with_capacity(top_flows),
            next_top: std::time::Instant::now(),
            bursts: 0,
            protocols_stale: false,
            top_stale: false,
        }
    }

    /// After a burst was handled.
    #[inline]
    pub fn after_burst<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
        &mut self,
        stats: &LoopStats,
        c: &LoopCounters,
        p: &ProtocolCounters,
        flows: Option<&FlowTable<S>>,
    ) {
        self.bursts += 1;
        stats.counters.store(c);
        let due = self.bursts.is_multiple_of(64);
        self.protocols_stale = !(due && stats.try_publish_protocols(p));
        self.top_stale = flows.is_some();
        if due {
            self.publish_top_when_due(stats, flows);
        }
    }

    /// On a round that received nothing.
    #[inline]
    pub fn when_idle<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
        &mut self,
        stats: &LoopStats,
        p: &ProtocolCounters,
        flows: Option<&FlowTable<S>>,
    ) {
        if self.protocols_stale {
            self.protocols_stale = !stats.try_publish_protocols(p);
        }
        if self.top_stale {
            self.publish_top_when_due(stats, flows);
        }
    }

    /// At the end: everything, waiting for a reader rather than skip (the final figures).
    pub fn finish<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
        &mut self,
        stats: &LoopStats,
        c: &LoopCounters,
        p: &ProtocolCounters,
        flows: Option<&FlowTable<S>>,
    ) {
        stats.counters.store(c);
        if let Ok(mut shared) = stats.protocols.lock() {
            *shared = *p;
        }
        if let Some(table) = flows {
            self.top.publish(table, &stats.top_flows);
        }
    }

    fn publish_top_when_due<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
        &mut self,
        stats: &LoopStats,
        flows: Option<&FlowTable<S>>,
    ) {
        if let Some(table) = flows
            && std::time::Instant::now() >= self.next_top
        {
            self.top.publish(table, &stats.top_flows);
            self.next_top = std::time::Instant::now() + std::time::Duration::from_millis(500);
            self.top_stale = false;
        }
    }
}

/// The largest flows of one table at one moment, handed from a poll loop to the statistics
/// thread: [`TopFlows::refresh`] fills storage allocated once, so the loop never allocates.
#[cfg(feature = "std")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopFlows {
    slots: std::vec::Vec<FlowSlot>,
    len: usize,
    /// Packets and bytes the table had no room for.
    pub overflow: Counter,
    /// Flows in the table.
    pub distinct: usize,
}

#[cfg(feature = "std")]
impl TopFlows {
    /// Room for the `n` largest flows.
    pub fn with_capacity(n: usize) -> TopFlows {
        TopFlows {
            slots: std::vec![FlowSlot::default(); n],
            ..TopFlows::default()
        }
    }

    /// The table's largest flows now (no allocation).
    pub fn refresh<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(&mut self, table: &FlowTable<S>) {
        self.len = table.top(&mut self.slots);
        self.overflow = table.overflow;
        self.distinct = table.len();
    }

    /// Refreshes from `table` and hands a copy to the reader's `shared` slot, unless the
    /// reader holds it just now: a poll loop never waits, and never allocates (`clone_from`
    /// reuses the shared storage).
    pub fn publish<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
        &mut self,
        table: &FlowTable<S>,
        shared: &std::sync::Mutex<TopFlows>,
    ) {
        self.refresh(table);
        if let Ok(mut shared) = shared.try_lock() {
            shared.clone_from(self);
        }
    }

    /// Most packets first.
    pub fn flows(&self) -> &[FlowSlot] {
        &self.slots[..self.len]
    }

    /// The table as text, a line per flow (what `run` and `dpdk-app` print each interval).
    pub fn text(&self) -> std::string::String {
        let mut out = std::format!(
            "  top flows ({} in the tables, {} packets found no slot):\n",
            self.distinct,
            self.overflow.packets
        );
        for (i, f) in self.flows().iter().enumerate() {
            out.push_str(&std::format!(
                "  {:>3}. {:<60} {:>12} packets {:>14} bytes\n",
                i + 1,
                std::string::ToString::to_string(&f.key),
                f.counter.packets,
                f.counter.bytes
            ));
        }
        out
    }

    /// The JSON `flows` object of `run` and `dpdk-app`.
    #[cfg(feature = "report")]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "distinct": self.distinct,
            "overflow": {"packets": self.overflow.packets, "bytes": self.overflow.bytes},
            "top": self.flows().iter().map(|f| serde_json::json!({
                "protocol": f.key.protocol_name(),
                "src": std::string::ToString::to_string(&f.key.src_ip()),
                "src_port": f.key.src_port,
                "dst": std::string::ToString::to_string(&f.key.dst_ip()),
                "dst_port": f.key.dst_port,
                "packets": f.counter.packets, "bytes": f.counter.bytes,
            })).collect::<std::vec::Vec<_>>(),
        })
    }

    /// The `n` largest flows of several tables (the poll loops of one run, each of which sees
    /// its own flows), with their overflows and flow counts added up.
    pub fn merge<'a>(lists: impl IntoIterator<Item = &'a TopFlows>, n: usize) -> TopFlows {
        let mut all = std::vec::Vec::new();
        let mut out = TopFlows::default();
        for l in lists {
            all.extend_from_slice(l.flows());
            out.overflow.merge(&l.overflow);
            out.distinct += l.distinct;
        }
        all.sort_by(|a, b| (b.counter.packets, a.key).cmp(&(a.counter.packets, b.key)));
        all.truncate(n);
        out.len = all.len();
        out.slots = all;
        out
    }
}

#[cfg(feature = "std")]
impl FlowTable<std::vec::Vec<FlowSlot>> {
    /// A heap-backed table of `capacity` slots, rounded up to a power of two.
    pub fn with_capacity(capacity: usize, seed: u64) -> Self {
        let cap = capacity.max(1).next_power_of_two();
        FlowTable::new(std::vec![FlowSlot::default(); cap], seed)
    }

    /// The `n` largest flows, most packets first.
    pub fn top_n(&self, n: usize) -> std::vec::Vec<FlowSlot> {
        let mut out = std::vec![FlowSlot::default(); n];
        let k = self.top(&mut out);
        out.truncate(k);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::parse::{parse, tests::with_vlan};

    fn count_all(frames: &[&[u8]]) -> ProtocolCounters {
        let mut c = ProtocolCounters::default();
        for f in frames {
            let p = parse(f);
            c.count(p.as_ref(), f.len());
        }
        c
    }

    #[test]
    fn counts_each_frame_at_both_levels() {
        let c = count_all(&[
            &ARP_REQUEST,
            &ICMPV4_ECHO_REQUEST,
            &UDP4_ECHO_REQUEST,
            &TCP_SYN,
            &ICMPV6_ECHO_REQUEST,
            &UDP6_ECHO_REQUEST,
            &MLD_REPORT,
        ]);
        assert_eq!(
            c.arp,
            Counter {
                packets: 1,
                bytes: 42
            }
        );
        assert_eq!(c.ipv4.packets, 3);
        assert_eq!(
            c.ipv4.bytes,
            (ICMPV4_ECHO_REQUEST.len() + UDP4_ECHO_REQUEST.len() + TCP_SYN.len()) as u64
        );
        assert_eq!(c.ipv6.packets, 3);
        assert_eq!(
            (
                c.tcp.packets,
                c.udp.packets,
                c.icmp.packets,
                c.icmpv6.packets
            ),
            (1, 2, 1, 2)
        );
        assert_eq!((c.tcp_syn, c.tcp_fin, c.tcp_rst), (1, 0, 0));
        assert_eq!(c.other.packets, 0);
        assert_eq!(c.malformed.packets, 0);
    }

    #[test]
    fn malformed_and_other_are_counted_alone() {
        let mut unknown = UDP4_ECHO_REQUEST;
        unknown[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        let mut fragment = UDP4_ECHO_REQUEST;
        fragment[20] = 0x20;
        crate::parse::tests::fix_ipv4_checksum(&mut fragment, 14);
        let c = count_all(&[&UDP4_ECHO_REQUEST[..20], &unknown, &fragment]);
        assert_eq!(
            c.malformed,
            Counter {
                packets: 1,
                bytes: 20
            }
        );
        assert_eq!(c.other.packets, 1);
        // A first fragment carries its UDP header and counts as UDP.
        assert_eq!((c.ipv4.packets, c.udp.packets), (1, 1));
    }

    #[test]
    fn later_fragments_and_unparsed_ipv6_have_no_transport_class() {
        let later = crate::parse::tests::V4_UDP_LATER_FRAGMENT;
        let unparsed = crate::parse::tests::v6_dest_opts_chain(9);
        let c = count_all(&[&later, &unparsed]);
        assert_eq!((c.ipv4.packets, c.ipv6.packets), (1, 1));
        assert_eq!(
            (c.udp.packets, c.other.packets, c.malformed.packets),
            (0, 0, 0)
        );
        let k = key_of(&later);
        assert_eq!((k.src_port, k.dst_port, k.protocol), (0, 0, 17));
        let k = key_of(&unparsed);
        assert_eq!((k.src_port, k.dst_port, k.protocol), (0, 0, 60));
        let k = key_of(&crate::parse::tests::V4_UDP_FIRST_FRAGMENT);
        assert_eq!((k.src_port, k.dst_port, k.protocol), (40000, 7, 17));
    }

    #[test]
    fn tcp_flags() {
        let mut fin_rst = TCP_SYN;
        fin_rst[47] = tcp_flags::FIN | tcp_flags::RST;
        let c = count_all(&[&TCP_SYN, &fin_rst, &with_vlan(&TCP_SYN, 0x8100, 9)]);
        assert_eq!((c.tcp_syn, c.tcp_fin, c.tcp_rst), (2, 1, 1));
    }

    #[test]
    fn merge_adds_everything() {
        let a = count_all(&[&ARP_REQUEST, &TCP_SYN]);
        let b = count_all(&[&TCP_SYN, &UDP6_ECHO_REQUEST[..10]]);
        let mut m = a;
        m.merge(&b);
        assert_eq!(m.tcp.packets, 2);
        assert_eq!(m.tcp_syn, 2);
        assert_eq!(m.arp.packets, 1);
        assert_eq!(m.malformed.packets, 1);
    }

    fn key_of(frame: &[u8]) -> FlowKey {
        FlowKey::from_frame(frame, &parse(frame).unwrap()).unwrap()
    }

    #[test]
    fn flow_keys() {
        let k = key_of(&UDP4_ECHO_REQUEST);
        assert_eq!(&k.src[10..], &[0xff, 0xff, 198, 18, 0, 1]);
        assert_eq!(&k.dst[12..], &[198, 18, 0, 2]);
        assert_eq!((k.src_port, k.dst_port, k.protocol), (40000, 7, 17));
        let k = key_of(&MLD_REPORT);
        assert_eq!(
            k.protocol, 58,
            "the upper-layer protocol, past the hop-by-hop header"
        );
        assert_eq!((k.src_port, k.dst_port), (0, 0));
        assert!(FlowKey::from_frame(&ARP_REQUEST, &parse(&ARP_REQUEST).unwrap()).is_none());
    }

    fn udp_flow(sport: u16) -> FlowKey {
        let mut k = key_of(&UDP4_ECHO_REQUEST);
        k.src_port = sport;
        k
    }

    #[test]
    fn flow_table_counts_and_ranks() {
        let mut t = FlowTable::with_capacity(64, 1);
        for (sport, n) in [(1000u16, 5u64), (1001, 9), (1002, 1), (1003, 9)] {
            for _ in 0..n {
                t.count(&udp_flow(sport), 100);
            }
        }
        assert_eq!(t.len(), 4);
        assert_eq!(
            t.get(&udp_flow(1001)),
            Some(Counter {
                packets: 9,
                bytes: 900
            })
        );
        assert_eq!(t.get(&udp_flow(2000)), None);
        let top = t.top_n(3);
        let ports: Vec<_> = top
            .iter()
            .map(|s| (s.key.src_port, s.counter.packets))
            .collect();
        // Ties (9 and 9) are broken by key: the smaller key first.
        assert_eq!(ports, vec![(1001, 9), (1003, 9), (1000, 5)]);
        assert_eq!(t.top_n(10).len(), 4);
        assert_eq!(t.overflow.packets, 0);
    }

    #[test]
    fn flow_table_overflow_is_counted_not_lost() {
        let mut slots = [FlowSlot::default(); 8];
        let mut t = FlowTable::new(&mut slots[..], 7);
        for sport in 0..20u16 {
            t.count(&udp_flow(sport), 60);
        }
        assert_eq!(t.len(), 8);
        assert_eq!(
            t.overflow,
            Counter {
                packets: 12,
                bytes: 720
            }
        );
        // Known flows are still counted when the table is full.
        let tracked = (0..20u16).find(|p| t.get(&udp_flow(*p)).is_some()).unwrap();
        t.count(&udp_flow(tracked), 60);
        assert_eq!(t.get(&udp_flow(tracked)).unwrap().packets, 2);
        assert_eq!(t.overflow.packets, 12);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.overflow.packets, 0);
    }

    #[test]
    fn flow_table_with_non_power_of_two_or_empty_storage() {
        let mut slots = [FlowSlot::default(); 12];
        let t = FlowTable::new(&mut slots[..], 0);
        assert_eq!(t.capacity(), 8);
        let mut none: [FlowSlot; 0] = [];
        let mut t = FlowTable::new(&mut none[..], 0);
        t.count(&udp_flow(1), 10);
        assert_eq!(t.overflow.packets, 1);
        assert_eq!(t.top(&mut []), 0);
    }

    #[test]
    fn loop_counters_record_verdicts_and_round_trip_through_atomics() {
        let mut c = LoopCounters::default();
        assert_eq!(
            c.record(&Verdict::Reply {
                len: 60,
                kind: ReplyKind::UdpEcho,
                partial_checksum: true,
            }),
            Some(60)
        );
        assert_eq!(
            c.record(&Verdict::Reply {
                len: 60,
                kind: ReplyKind::Reflected,
                partial_checksum: false,
            }),
            Some(60)
        );
        assert_eq!(c.record(&Verdict::NotForUs), None);
        assert_eq!(
            c.record(&Verdict::Malformed(Malformed::Truncated(
                crate::parse::Layer::Udp
            ))),
            None
        );
        assert_eq!(
            (c.echoed, c.reflected, c.not_for_us, c.malformed),
            (1, 1, 1, 1)
        );
        assert_eq!(c.checksum_partial, 1);
        c.rx = 4;
        c.wakeups = 9;
        let shared = SharedLoopCounters::default();
        shared.store(&c);
        assert_eq!(shared.load(), c);
        let mut m = c;
        m.merge(&c);
        assert_eq!((m.rx, m.echoed, m.wakeups), (8, 2, 18));
    }

    #[test]
    fn flow_table_never_grows() {
        let mut t = FlowTable::with_capacity(1024, 3);
        let cap = t.capacity();
        for sport in 0..5000u16 {
            t.count(&udp_flow(sport), 1);
        }
        assert_eq!(t.capacity(), cap);
        assert_eq!(t.len() as u64 + t.overflow.packets, 5000);
    }

    #[test]
    fn top_flows_refresh_without_allocating_and_merge_across_loops() {
        let key = |port: u16| FlowKey {
            src_port: port,
            protocol: 17,
            ..FlowKey::default()
        };
        let mut a = FlowTable::with_capacity(64, 3);
        let mut b = FlowTable::with_capacity(64, 4);
        for (port, n) in [(1u16, 5u64), (2, 9), (3, 1)] {
            for _ in 0..n {
                a.count(&key(port), 100);
            }
        }
        for _ in 0..7 {
            b.count(&key(4), 60);
        }
        let (mut ta, mut tb) = (TopFlows::with_capacity(2), TopFlows::with_capacity(2));
        ta.refresh(&a);
        tb.refresh(&b);
        let ports = |t: &TopFlows| t.flows().iter().map(|f| f.key.src_port).collect::<Vec<_>>();
        assert_eq!(ports(&ta), [2, 1]);
        assert_eq!((ta.distinct, tb.distinct), (3, 1));
        let m = TopFlows::merge([&ta, &tb], 2);
        assert_eq!(ports(&m), [2, 4]);
        assert_eq!(
            m.flows()[1].counter,
            Counter {
                packets: 7,
                bytes: 420
            }
        );
        assert_eq!(m.distinct, 4);
        let shown = std::format!("{}", m.flows()[0].key);
        assert_eq!(shown, "udp [::]:2 -> [::]:0");
    }
}
