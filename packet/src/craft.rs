//! Crafted frames for tests: a seeded PRNG, builders for every header the classifier reads,
//! fragmentation helpers, and [`random_frame`], the generator of hostile and well-formed frames
//! that the differential test (the XDP program against [`crate::filter`]) and the property
//! tests feed on.
//!
//! Builders write what they are told, including what no stack would send (a wrong checksum, an
//! IHL of 3, hop-by-hop options in the middle of a chain, an authentication header of length
//! 0): that is their use. Fields left at their defaults get the right value (lengths,
//! checksums). Frames go from [`SRC_MAC`] to [`DST_MAC`].
//!
//! Every frame [`random_frame`] returns is [`MIN_FRAME_LEN`] to [`MAX_FRAME_LEN`] bytes long:
//! `BPF_PROG_TEST_RUN` refuses an XDP test packet shorter than an Ethernet header, and one
//! longer than a page (minus head- and tailroom) no longer sits in one linear buffer. Shorter
//! frames (malformed at layer 2) are covered by the parser's unit tests.

use crate::checksum;
use crate::parse::{
    ETHER_TYPE_ARP, ETHER_TYPE_IPV4, ETHER_TYPE_IPV6, IP_PROTO_AUTH, IP_PROTO_DEST_OPTS,
    IP_PROTO_FRAGMENT, IP_PROTO_HOP_BY_HOP, IP_PROTO_ICMP, IP_PROTO_ICMPV6, IP_PROTO_ROUTING,
    IP_PROTO_TCP, IP_PROTO_UDP,
};
use std::vec::Vec;

/// The destination MAC of crafted frames (the answering side of [`crate::fixtures`]).
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The source MAC of crafted frames.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The shortest frame [`random_frame`] returns: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
/// The longest frame [`random_frame`] returns.
pub const MAX_FRAME_LEN: usize = 1600;

/// IPv4 addresses random frames use most of the time, all inside 198.18.0.0/15 (RFC 2544
/// benchmarking), spread so that prefixes of every length split them differently.
pub const V4_POOL: [[u8; 4]; 8] = [
    [198, 18, 0, 1],
    [198, 18, 0, 2],
    [198, 18, 0, 255],
    [198, 18, 1, 1],
    [198, 18, 128, 9],
    [198, 18, 255, 254],
    [198, 19, 0, 1],
    [198, 19, 255, 255],
];

/// IPv6 addresses random frames use most of the time, all inside 2001:db8::/32 (RFC 3849).
pub const V6_POOL: [[u8; 16]; 8] = [
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
    ],
    [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
    [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [
        0x20, 0x01, 0x0d, 0xb8, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42,
    ],
    [
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ],
    [
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff,
    ],
];

/// Ports random frames use most of the time: the edges of the port space and of the
/// privileged range, well-known services, the echo port, and the toolkit's test ports.
pub const PORT_POOL: [u16; 16] = [
    0, 1, 7, 9, 53, 80, 123, 443, 1023, 1024, 6100, 6101, 8080, 32768, 65534, 65535,
];

/// A small seeded PRNG (splitmix64): the same seed gives the same frames on every machine.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0). Multiply-shift, so nearly unbiased for small `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < u64::from(percent)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }

    pub fn u8(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn u16(&mut self) -> u16 {
        self.next_u64() as u16
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.u8()).collect()
    }
}

/// An Ethernet II frame: [`DST_MAC`], [`SRC_MAC`], the VLAN tags `(TPID, TCI)` outermost
/// first, the ether type, the payload.
pub fn ethernet(vlans: &[(u16, u16)], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for (tpid, tci) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An Ethernet/IPv4 ARP packet (28 bytes): `op` 1 request, 2 reply.
pub fn arp(op: u16, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&SRC_MAC);
    a.extend_from_slice(&sender_ip);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target_ip);
    a
}

/// An IPv4 header. `None` overrides mean "the right value".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub tos: u8,
    pub id: u16,
    pub ttl: u8,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units; 13 bits.
    pub frag_offset: u16,
    /// Options, padded with zero bytes (end of option list) to a multiple of 4.
    pub options: Vec<u8>,
    /// The version nibble (4).
    pub version: u8,
    /// Overrides the IHL nibble.
    pub ihl: Option<u8>,
    /// Overrides the total length.
    pub total_len: Option<u16>,
    /// Overrides the header checksum.
    pub checksum: Option<u16>,
}

impl Ipv4 {
    pub fn new(src: [u8; 4], dst: [u8; 4]) -> Ipv4 {
        Ipv4 {
            src,
            dst,
            tos: 0,
            id: 0x1234,
            ttl: 64,
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
            options: Vec::new(),
            version: 4,
            ihl: None,
            total_len: None,
            checksum: None,
        }
    }

    /// The header followed by `payload`.
    pub fn packet(&self, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut options = self.options.clone();
        options.resize(options.len().next_multiple_of(4), 0);
        let header_len = 20 + options.len();
        let ihl = self.ihl.unwrap_or((header_len / 4) as u8);
        let total = self
            .total_len
            .unwrap_or((header_len + payload.len()) as u16);
        let flags = u16::from(self.dont_fragment) << 14 | u16::from(self.more_fragments) << 13;
        let mut p = Vec::with_capacity(header_len + payload.len());
        p.push(self.version << 4 | (ihl & 0x0f));
        p.push(self.tos);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&(flags | (self.frag_offset & 0x1fff)).to_be_bytes());
        p.push(self.ttl);
        p.push(protocol);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(&options);
        let sum = self
            .checksum
            .unwrap_or_else(|| checksum::checksum(&p[..header_len]));
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

/// An untagged Ethernet frame holding `ip.packet(protocol, payload)`.
pub fn frame_v4(ip: &Ipv4, protocol: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(&[], ETHER_TYPE_IPV4, &ip.packet(protocol, payload))
}

/// An IPv6 fixed header. `None` overrides mean "the right value".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
    pub hop_limit: u8,
    /// The version nibble (6).
    pub version: u8,
    /// Overrides the payload length.
    pub payload_len: Option<u16>,
}

/// One IPv6 extension header. Lengths are the header's own length field; the builder writes
/// the matching number of bytes (padding options, or zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options, `(len + 1) * 8` bytes.
    HopByHop { len: u8 },
    /// Routing (type 4, segments left 0), `(len + 1) * 8` bytes.
    Routing { len: u8 },
    /// Destination options, `(len + 1) * 8` bytes.
    DestOpts { len: u8 },
    /// Fragment header: offset in 8-byte units, M flag, identification.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Authentication header, `(len + 2) * 4` bytes, but never fewer than its 12 fixed bytes
    /// (so `len: 0`, which is invalid, still has an SPI and a sequence number).
    Auth { len: u8 },
    /// Any next-header value with the generic layout (next header, `(len + 1) * 8` bytes):
    /// mobility (135), HIP (139), shim6 (140), experimental (253, 254), or anything else.
    Raw { kind: u8, len: u8 },
}

impl Ext {
    /// The next-header value that announces this header.
    pub fn kind(&self) -> u8 {
        match self {
            Ext::HopByHop { .. } => IP_PROTO_HOP_BY_HOP,
            Ext::Routing { .. } => IP_PROTO_ROUTING,
            Ext::DestOpts { .. } => IP_PROTO_DEST_OPTS,
            Ext::Fragment { .. } => IP_PROTO_FRAGMENT,
            Ext::Auth { .. } => IP_PROTO_AUTH,
            Ext::Raw { kind, .. } => *kind,
        }
    }

    /// Appends the header, with `next` as its next-header field.
    pub fn write(&self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        match *self {
            Ext::HopByHop { len } | Ext::DestOpts { len } => {
                let size = (usize::from(len) + 1) * 8;
                out.extend_from_slice(&[next, len]);
                // One PadN option over the rest (its length byte counts what follows it).
                let pad = size - 4;
                out.extend_from_slice(&[1, pad as u8]);
                out.resize(start + size, 0);
            }
            Ext::Routing { len } => {
                out.extend_from_slice(&[next, len, 4, 0]);
                out.resize(start + (usize::from(len) + 1) * 8, 0);
            }
            Ext::Fragment { offset, more, id } => {
                let w = (offset & 0x1fff) << 3 | u16::from(more);
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&w.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
            Ext::Auth { len } => {
                out.extend_from_slice(&[next, len, 0, 0]);
                out.extend_from_slice(&0x1000u32.to_be_bytes()); // SPI
                out.extend_from_slice(&1u32.to_be_bytes()); // sequence number
                out.resize(start + ((usize::from(len) + 2) * 4).max(12), 0);
            }
            Ext::Raw { len, .. } => {
                out.extend_from_slice(&[next, len]);
                out.resize(start + (usize::from(len) + 1) * 8, 0);
            }
        }
    }
}

impl Ipv6 {
    pub fn new(src: [u8; 16], dst: [u8; 16]) -> Ipv6 {
        Ipv6 {
            src,
            dst,
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 64,
            version: 6,
            payload_len: None,
        }
    }

    /// The fixed header, the extension headers in order, then `payload`; the last header's
    /// next header is `protocol`.
    pub fn packet(&self, exts: &[Ext], protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut chain = Vec::new();
        for (i, e) in exts.iter().enumerate() {
            let next = exts.get(i + 1).map_or(protocol, Ext::kind);
            e.write(next, &mut chain);
        }
        let first = exts.first().map_or(protocol, Ext::kind);
        let len = self
            .payload_len
            .unwrap_or((chain.len() + payload.len()) as u16);
        let word = u32::from(self.version) << 28
            | u32::from(self.traffic_class) << 20
            | (self.flow_label & 0xf_ffff);
        let mut p = Vec::with_capacity(40 + chain.len() + payload.len());
        p.extend_from_slice(&word.to_be_bytes());
        p.extend_from_slice(&len.to_be_bytes());
        p.push(first);
        p.push(self.hop_limit);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(&chain);
        p.extend_from_slice(payload);
        p
    }
}

/// An untagged Ethernet frame holding `ip.packet(exts, protocol, payload)`.
pub fn frame_v6(ip: &Ipv6, exts: &[Ext], protocol: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(&[], ETHER_TYPE_IPV6, &ip.packet(exts, protocol, payload))
}

/// The addresses of a transport checksum's pseudo-header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addrs {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

impl Addrs {
    fn pseudo(&self, protocol: u8, len: usize) -> u64 {
        match self {
            Addrs::V4(s, d) => checksum::pseudo_header_v4(s, d, protocol, len as u16),
            Addrs::V6(s, d) => checksum::pseudo_header_v6(s, d, protocol, len as u32),
        }
    }
}

/// Writes the checksum of `segment` (with the pseudo-header of `addrs`) at `at`.
fn fill_checksum(addrs: Addrs, protocol: u8, segment: &mut [u8], at: usize) {
    segment[at..at + 2].copy_from_slice(&[0, 0]);
    let pseudo = addrs.pseudo(protocol, segment.len());
    let mut sum = !checksum::fold(checksum::sum(pseudo, segment));
    if protocol == IP_PROTO_UDP && sum == 0 {
        sum = 0xffff; // 0 means "no checksum" in UDP
    }
    segment[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// A UDP datagram with the right length and checksum.
pub fn udp(addrs: Addrs, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut s = Vec::with_capacity(len);
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&(len as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    fill_checksum(addrs, IP_PROTO_UDP, &mut s, 6);
    s
}

/// A TCP segment (sequence 1, no ack, window 65535) with `options` padded with zeros to a
/// multiple of 4 (at most 40 bytes), the data offset to match, and the right checksum.
pub fn tcp(
    addrs: Addrs,
    sport: u16,
    dport: u16,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut options = options.to_vec();
    options.resize(options.len().next_multiple_of(4).min(40), 0);
    let header_len = 20 + options.len();
    let mut s = Vec::with_capacity(header_len + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&1u32.to_be_bytes());
    s.extend_from_slice(&0u32.to_be_bytes());
    s.push(((header_len / 4) as u8) << 4);
    s.push(flags);
    s.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    s.extend_from_slice(&options);
    s.extend_from_slice(payload);
    fill_checksum(addrs, IP_PROTO_TCP, &mut s, 16);
    s
}

/// An ICMP message: type, code, checksum, the 4 bytes of `rest` (id and sequence for echo),
/// payload.
pub fn icmpv4(icmp_type: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(8 + payload.len());
    s.extend_from_slice(&[icmp_type, code, 0, 0]);
    s.extend_from_slice(&rest);
    s.extend_from_slice(payload);
    let sum = checksum::checksum(&s);
    s[2..4].copy_from_slice(&sum.to_be_bytes());
    s
}

/// An ICMPv6 message, checksummed with the pseudo-header of `addrs`.
pub fn icmpv6(addrs: Addrs, icmp_type: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(8 + payload.len());
    s.extend_from_slice(&[icmp_type, code, 0, 0]);
    s.extend_from_slice(&rest);
    s.extend_from_slice(payload);
    fill_checksum(addrs, IP_PROTO_ICMPV6, &mut s, 2);
    s
}

/// Splits `datagram` (a whole transport segment) into IPv4 fragments of `frag_payload` bytes
/// (rounded down to a multiple of 8, at least 8) and returns their frames, first to last.
pub fn fragment_v4(ip: &Ipv4, protocol: u8, datagram: &[u8], frag_payload: usize) -> Vec<Vec<u8>> {
    let step = (frag_payload / 8 * 8).max(8);
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let end = (at + step).min(datagram.len());
        let mut h = ip.clone();
        h.frag_offset = (at / 8) as u16;
        h.more_fragments = end < datagram.len();
        frames.push(frame_v4(&h, protocol, &datagram[at..end]));
        at = end;
        if at >= datagram.len() {
            return frames;
        }
    }
}

/// Splits `datagram` into IPv6 fragments of `frag_payload` bytes (rounded down to a multiple
/// of 8, at least 8), each with `before` (the unfragmentable part) and a fragment header.
pub fn fragment_v6(
    ip: &Ipv6,
    before: &[Ext],
    protocol: u8,
    datagram: &[u8],
    frag_payload: usize,
) -> Vec<Vec<u8>> {
    let step = (frag_payload / 8 * 8).max(8);
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let end = (at + step).min(datagram.len());
        let mut exts = before.to_vec();
        exts.push(Ext::Fragment {
            offset: (at / 8) as u16,
            more: end < datagram.len(),
            id: 0x1234_5678,
        });
        frames.push(frame_v6(ip, &exts, protocol, &datagram[at..end]));
        at = end;
        if at >= datagram.len() {
            return frames;
        }
    }
}

/// A UDP datagram `sport -> dport` carrying `payload`, as IPv4 fragment frames.
pub fn udp4_fragments(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
    frag_payload: usize,
) -> Vec<Vec<u8>> {
    let datagram = udp(Addrs::V4(src, dst), sport, dport, payload);
    fragment_v4(&Ipv4::new(src, dst), IP_PROTO_UDP, &datagram, frag_payload)
}

/// A UDP datagram `sport -> dport` carrying `payload`, as IPv6 fragment frames.
pub fn udp6_fragments(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    payload: &[u8],
    frag_payload: usize,
) -> Vec<Vec<u8>> {
    let datagram = udp(Addrs::V6(src, dst), sport, dport, payload);
    fragment_v6(
        &Ipv6::new(src, dst),
        &[],
        IP_PROTO_UDP,
        &datagram,
        frag_payload,
    )
}

/// A tiny first fragment (RFC 1858): MF, offset 0, and only the first 8 bytes of a TCP SYN
/// header (ports and sequence number; the flags would come in the next fragment).
pub fn tiny_tcp_first_fragment(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let segment = tcp(Addrs::V4(src, dst), sport, dport, 0x02, &[], &[]);
    let mut ip = Ipv4::new(src, dst);
    ip.more_fragments = true;
    frame_v4(&ip, IP_PROTO_TCP, &segment[..8])
}

/// An overlapping TCP fragment (RFC 1858): offset 1 (8 bytes), MF, carrying bytes 8..20 of a
/// TCP header whose flags are `flags`: reassembled over the first fragment, it would replace
/// the flags a filter saw.
pub fn overlapping_tcp_fragment(src: [u8; 4], dst: [u8; 4], flags: u8) -> Vec<u8> {
    let segment = tcp(Addrs::V4(src, dst), 40000, 80, flags, &[], &[0; 8]);
    let mut ip = Ipv4::new(src, dst);
    ip.more_fragments = true;
    ip.frag_offset = 1;
    frame_v4(&ip, IP_PROTO_TCP, &segment[8..])
}

// The random generator.

fn v4_addr(rng: &mut Rng) -> [u8; 4] {
    if rng.chance(90) {
        rng.pick(&V4_POOL)
    } else {
        (rng.next_u64() as u32).to_be_bytes()
    }
}

fn v6_addr(rng: &mut Rng) -> [u8; 16] {
    if rng.chance(90) {
        rng.pick(&V6_POOL)
    } else {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
        a[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
        a
    }
}

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(75) {
        rng.pick(&PORT_POOL)
    } else {
        rng.u16()
    }
}

fn payload(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.range(0, max);
    rng.bytes(len)
}

/// 0 to 4 VLAN tags, mostly none; 4 tags make the frame "not IP".
fn random_vlans(rng: &mut Rng) -> Vec<(u16, u16)> {
    let n = match rng.below(100) {
        0..=74 => 0,
        75..=84 => 1,
        85..=90 => 2,
        91..=95 => 3,
        _ => 4,
    };
    (0..n)
        .map(|_| (rng.pick(&[0x8100, 0x88a8, 0x9100]), rng.u16() & 0x0fff))
        .collect()
}

fn random_arp(rng: &mut Rng) -> Vec<u8> {
    let mut a = arp(rng.pick(&[1, 2]), rng.pick(&V4_POOL), rng.pick(&V4_POOL));
    match rng.below(10) {
        // Cut short: malformed.
        0 => a.truncate(rng.range(0, 27)),
        // Other address lengths, with a body that may or may not cover them.
        1 => {
            a[4] = rng.pick(&[0, 1, 6, 8, 16, 255]);
            a[5] = rng.pick(&[0, 4, 16, 255]);
            let need = 8 + 2 * (usize::from(a[4]) + usize::from(a[5]));
            a.resize(need.saturating_sub(rng.range(0, 2)) + rng.range(0, 1), 0x5a);
        }
        _ => {}
    }
    a
}

/// A protocol number: mostly TCP, UDP and the family's ICMP, sometimes the other family's
/// ICMP (malformed), ESP, GRE, AH, no next header, or anything.
fn random_protocol(rng: &mut Rng, v6: bool) -> u8 {
    let (icmp, other_icmp) = if v6 {
        (IP_PROTO_ICMPV6, IP_PROTO_ICMP)
    } else {
        (IP_PROTO_ICMP, IP_PROTO_ICMPV6)
    };
    match rng.below(100) {
        0..=26 => IP_PROTO_TCP,
        27..=58 => IP_PROTO_UDP,
        59..=76 => icmp,
        77..=78 => other_icmp,
        79..=82 => 50, // ESP
        83..=86 => 47, // GRE
        87..=88 => IP_PROTO_AUTH,
        89..=90 => 59, // no next header
        _ => rng.u8(),
    }
}

/// The transport header length the classifier needs for `protocol` (0: none).
fn header_len(protocol: u8, segment: &[u8]) -> usize {
    match protocol {
        IP_PROTO_TCP => segment
            .get(12)
            .map_or(20, |b| usize::from(b >> 4) * 4)
            .max(20),
        IP_PROTO_UDP | IP_PROTO_ICMP | IP_PROTO_ICMPV6 => 8,
        _ => 0,
    }
}

/// A whole transport segment for `protocol`, mostly well-formed.
fn random_segment(rng: &mut Rng, protocol: u8, addrs: Addrs) -> Vec<u8> {
    let mut s = match protocol {
        IP_PROTO_TCP => {
            let options = if rng.chance(30) {
                let n = 4 * rng.range(1, 10);
                rng.bytes(n)
            } else {
                Vec::new()
            };
            let flags = rng.pick(&[0x02, 0x10, 0x12, 0x18, 0x11, 0x04, 0x00, 0xff]);
            let p = payload(rng, 48);
            let mut s = tcp(addrs, port(rng), port(rng), flags, &options, &p);
            if rng.chance(4) {
                // Data offset below 5, or past the segment.
                s[12] = rng.pick(&[0x00, 0x40, 0xf0, 0xa0]);
            }
            s
        }
        IP_PROTO_UDP => {
            let p = payload(rng, 48);
            let mut s = udp(addrs, port(rng), port(rng), &p);
            if rng.chance(6) {
                let any = rng.u16();
                let len = rng.pick(&[0, 7, 8, s.len() as u16 - 1, s.len() as u16 + 1, any]);
                s[4..6].copy_from_slice(&len.to_be_bytes());
            }
            s
        }
        IP_PROTO_ICMP => {
            let (any_type, any_code) = (rng.u8(), rng.u8());
            let t = rng.pick(&[0, 3, 8, 8, 11, 13, 14, any_type]);
            let code = rng.pick(&[0, 0, 0, 1, any_code]);
            let rest = (rng.next_u64() as u32).to_be_bytes();
            let p = payload(rng, 56);
            icmpv4(t, code, rest, &p)
        }
        IP_PROTO_ICMPV6 => {
            let (any_type, any_code) = (rng.u8(), rng.u8());
            let t = rng.pick(&[1, 128, 128, 129, 133, 135, 136, 143, any_type]);
            let code = rng.pick(&[0, 0, 0, 1, any_code]);
            let rest = (rng.next_u64() as u32).to_be_bytes();
            let p = payload(rng, 56);
            icmpv6(addrs, t, code, rest, &p)
        }
        _ => payload(rng, 64),
    };
    if rng.chance(3) {
        // Shorter than its header, or cut anywhere.
        s.truncate(rng.range(0, s.len()));
    }
    s
}

/// The part of `segment` a first fragment carries: mostly the header and a bit more (a
/// multiple of 8), sometimes a tiny fragment too short for the header.
fn first_fragment_data(rng: &mut Rng, protocol: u8, segment: &[u8]) -> Vec<u8> {
    let need = header_len(protocol, segment);
    let cut = if rng.chance(25) && need > 0 {
        let short = rng.range(0, need - 1);
        rng.pick(&[8, short])
    } else {
        (need.next_multiple_of(8) + 8 * rng.range(0, 3)).max(8)
    };
    segment[..cut.min(segment.len())].to_vec()
}

/// A later fragment's data: random bytes, or bytes that look like headers.
fn later_fragment_data(rng: &mut Rng) -> Vec<u8> {
    let mut d = payload(rng, 64);
    if rng.chance(30) && d.len() >= 8 {
        // Looks like an extension header or a UDP header.
        d[0] = rng.pick(&[IP_PROTO_UDP, IP_PROTO_DEST_OPTS, IP_PROTO_HOP_BY_HOP, 135]);
        d[1] = 0;
    }
    d
}

fn later_offset(rng: &mut Rng) -> u16 {
    let any = rng.range(1, 0x1fff) as u16;
    rng.pick(&[1, 2, 3, 4, 5, 185, 0x1fff, any])
}

fn random_ipv4(rng: &mut Rng) -> Vec<u8> {
    let (src, dst) = (v4_addr(rng), v4_addr(rng));
    let mut ip = Ipv4::new(src, dst);
    ip.id = rng.u16();
    let any = rng.u8();
    ip.ttl = rng.pick(&[1, 64, 255, any]);
    ip.dont_fragment = rng.chance(30);
    if rng.chance(12) {
        // Options: NOPs, a router alert, an end of list, or junk.
        let words = rng.range(1, 10);
        ip.options = match rng.below(3) {
            0 => vec![1; 4 * words],
            1 => vec![0x94, 0x04, 0, 0],
            _ => rng.bytes(4 * words),
        };
    }
    let protocol = random_protocol(rng, false);
    let addrs = Addrs::V4(src, dst);
    let data = match rng.below(100) {
        0..=57 => random_segment(rng, protocol, addrs),
        58..=77 => {
            ip.more_fragments = true;
            let segment = random_segment(rng, protocol, addrs);
            first_fragment_data(rng, protocol, &segment)
        }
        _ => {
            ip.frag_offset = later_offset(rng);
            ip.more_fragments = rng.chance(50);
            later_fragment_data(rng)
        }
    };
    match rng.below(100) {
        // A wrong header checksum.
        0..=3 => ip.checksum = Some(rng.u16()),
        // A total length past the frame, or short of it (the rest is then padding).
        4..=5 => ip.total_len = Some((20 + ip.options.len() + data.len() + rng.range(1, 8)) as u16),
        6..=7 => {
            ip.total_len =
                Some((20 + ip.options.len() + data.len()).saturating_sub(rng.range(1, 8)) as u16)
        }
        // IHL below 5, or more than the packet holds.
        8 => ip.ihl = Some(rng.pick(&[0, 4, 15])),
        9 => ip.version = rng.pick(&[0, 6, 15]),
        _ => {}
    }
    ip.packet(protocol, &data)
}

/// An extension-header chain: none, a usual one, a long one (around the limit of 8), a hostile
/// one (any header anywhere), or one built around a fragment header.
fn random_chain(rng: &mut Rng) -> Vec<Ext> {
    let small = |rng: &mut Rng| rng.pick(&[0, 0, 0, 1, 2]);
    let fragment = |rng: &mut Rng| Ext::Fragment {
        offset: if rng.chance(50) { 0 } else { later_offset(rng) },
        more: rng.chance(65),
        id: rng.next_u64() as u32,
    };
    match rng.below(100) {
        0..=34 => Vec::new(),
        35..=59 => {
            let mut c = Vec::new();
            if rng.chance(30) {
                c.push(Ext::HopByHop { len: small(rng) });
            }
            if rng.chance(30) {
                c.push(Ext::DestOpts { len: small(rng) });
            }
            if rng.chance(25) {
                c.push(Ext::Routing { len: small(rng) });
            }
            if rng.chance(40) {
                c.push(fragment(rng));
            }
            if rng.chance(15) {
                c.push(Ext::Auth {
                    len: rng.pick(&[1, 1, 4]),
                });
            }
            if rng.chance(20) {
                c.push(Ext::DestOpts { len: small(rng) });
            }
            c
        }
        60..=74 => {
            let n = rng.pick(&[4, 6, 7, 7, 8, 8, 8, 9, 9, 9, 10, 11]);
            let mut c: Vec<Ext> = (0..n)
                .map(|_| {
                    if rng.chance(70) {
                        Ext::DestOpts { len: small(rng) }
                    } else {
                        Ext::Routing { len: small(rng) }
                    }
                })
                .collect();
            if rng.chance(30) {
                c[0] = Ext::HopByHop { len: small(rng) };
            }
            if rng.chance(25) {
                let at = rng.range(0, n - 1);
                c[at] = fragment(rng);
            }
            c
        }
        75..=89 => {
            let n = rng.range(1, 11);
            (0..n)
                .map(|_| match rng.below(8) {
                    0 => Ext::HopByHop { len: small(rng) },
                    1 => Ext::Routing { len: small(rng) },
                    2 | 3 => Ext::DestOpts { len: small(rng) },
                    4 => fragment(rng),
                    5 => Ext::Auth {
                        len: rng.pick(&[0, 1, 2]),
                    },
                    _ => Ext::Raw {
                        kind: rng.pick(&[135, 139, 140, 253, 254]),
                        len: small(rng),
                    },
                })
                .collect()
        }
        _ => {
            let mut c = Vec::new();
            if rng.chance(30) {
                c.push(Ext::HopByHop { len: 0 });
            }
            c.push(fragment(rng));
            if rng.chance(30) {
                c.push(Ext::DestOpts { len: small(rng) });
            }
            c
        }
    }
}

fn random_ipv6(rng: &mut Rng) -> Vec<u8> {
    let (src, dst) = (v6_addr(rng), v6_addr(rng));
    let mut ip = Ipv6::new(src, dst);
    ip.flow_label = rng.next_u64() as u32 & 0xf_ffff;
    let any = rng.u8();
    ip.hop_limit = rng.pick(&[1, 64, 255, any]);
    let exts = random_chain(rng);
    let protocol = random_protocol(rng, true);
    let addrs = Addrs::V6(src, dst);
    // The kind the chain gives (headers after a later fragment's header are its data).
    let mut first = false;
    let mut later = false;
    for e in &exts {
        if let Ext::Fragment { offset, more, .. } = *e {
            if offset > 0 {
                later = true;
                break;
            }
            first |= more;
        }
    }
    let data = if later {
        later_fragment_data(rng)
    } else if first {
        let segment = random_segment(rng, protocol, addrs);
        first_fragment_data(rng, protocol, &segment)
    } else {
        random_segment(rng, protocol, addrs)
    };
    let mut p = ip.packet(&exts, protocol, &data);
    match rng.below(100) {
        // Payload length 0 (the rest is padding), past the frame, or short of it.
        0..=2 => p[4..6].copy_from_slice(&[0, 0]),
        3..=4 => {
            let len = (p.len() - 40 + rng.range(1, 16)) as u16;
            p[4..6].copy_from_slice(&len.to_be_bytes());
        }
        5..=6 => {
            let len = (p.len() - 40).saturating_sub(rng.range(1, 16)) as u16;
            p[4..6].copy_from_slice(&len.to_be_bytes());
        }
        7 => p[0] = (p[0] & 0x0f) | rng.pick(&[0x40, 0x00, 0xf0]),
        _ => {}
    }
    p
}

/// A frame for the differential and property tests: hostile and well-formed frames mixed (see
/// the module docs for the length bounds). Layer 2: 0 to 4 VLAN tags (mostly none). Then ARP
/// (valid and broken), other ether types, IPv4 (options; fragments none, first, later at
/// offsets 1, 2, 3 and beyond, MF on and off; tiny first fragments; TCP, UDP, ICMP, ICMPv6,
/// ESP, GRE, AH, random protocols; right and wrong checksums and lengths), IPv6 (chains of 0 to
/// 11 extension headers in usual and hostile orders, fragments, atomic fragments, payload
/// length 0 or wrong), or random bytes. Finally, sometimes: a truncation, a few flipped bytes,
/// Ethernet padding. Addresses and ports come mostly from [`V4_POOL`], [`V6_POOL`] and
/// [`PORT_POOL`], so that rules written around them often match.
pub fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let vlans = random_vlans(rng);
    let mut f = match rng.below(100) {
        0..=5 => ethernet(&vlans, ETHER_TYPE_ARP, &random_arp(rng)),
        6..=9 => {
            let any = rng.u16();
            let ether_type = rng.pick(&[0x88cc, 0x8847, 0x88b5, 0x0842, 0x8035, any]);
            let p = payload(rng, 64);
            ethernet(&vlans, ether_type, &p)
        }
        10..=50 => ethernet(&vlans, ETHER_TYPE_IPV4, &random_ipv4(rng)),
        51..=97 => ethernet(&vlans, ETHER_TYPE_IPV6, &random_ipv6(rng)),
        _ => {
            let ether_type = rng.pick(&[
                ETHER_TYPE_IPV4,
                ETHER_TYPE_IPV6,
                ETHER_TYPE_ARP,
                0x8100,
                0x88a8,
                0x9100,
            ]);
            let p = payload(rng, 80);
            ethernet(&vlans, ether_type, &p)
        }
    };
    if rng.chance(6) && f.len() > MIN_FRAME_LEN {
        f.truncate(rng.range(MIN_FRAME_LEN, f.len() - 1));
    }
    if rng.chance(5) {
        for _ in 0..rng.range(1, 3) {
            let at = rng.range(0, f.len() - 1);
            f[at] ^= 1 << rng.below(8);
        }
    }
    if rng.chance(12) {
        // Padding to the 60-byte minimum, or a few bytes more.
        let to = if f.len() < 60 && rng.chance(70) {
            60
        } else {
            f.len() + rng.range(1, 16)
        };
        let any = rng.u8();
        let fill = rng.pick(&[0u8, 0xff, any]);
        f.resize(to, fill);
    }
    f.truncate(MAX_FRAME_LEN);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::proto_class;
    use crate::filter::{Class, IpFields, classify};
    use crate::parse::{Frag, Malformed, Transport, parse};
    use crate::verify::verify_checksums;

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.below(7);
            assert_eq!(x, b.below(7));
            assert!(x < 7);
        }
        assert_eq!(Rng::new(1).below(0), 0);
        let mut r = Rng::new(3);
        let heads = (0..10_000).filter(|_| r.chance(30)).count();
        assert!((2_700..3_300).contains(&heads), "{heads}");
    }

    #[test]
    fn builders_make_valid_frames() {
        let (s4, d4) = (V4_POOL[0], V4_POOL[1]);
        let (s6, d6) = (V6_POOL[0], V6_POOL[1]);
        let a4 = Addrs::V4(s4, d4);
        let a6 = Addrs::V6(s6, d6);
        let frames = [
            frame_v4(&Ipv4::new(s4, d4), IP_PROTO_UDP, &udp(a4, 1, 7, b"hi")),
            frame_v4(
                &Ipv4::new(s4, d4),
                IP_PROTO_TCP,
                &tcp(a4, 1, 80, 2, &[2, 4, 5, 0xb4], b""),
            ),
            frame_v4(
                &Ipv4::new(s4, d4),
                IP_PROTO_ICMP,
                &icmpv4(8, 0, [0, 1, 0, 1], b"ping"),
            ),
            frame_v6(&Ipv6::new(s6, d6), &[], IP_PROTO_UDP, &udp(a6, 1, 7, b"hi")),
            frame_v6(
                &Ipv6::new(s6, d6),
                &[],
                IP_PROTO_ICMPV6,
                &icmpv6(a6, 128, 0, [0; 4], b"x"),
            ),
            frame_v6(
                &Ipv6::new(s6, d6),
                &[],
                IP_PROTO_TCP,
                &tcp(a6, 9, 80, 0x12, &[], b"abc"),
            ),
        ];
        for f in &frames {
            verify_checksums(f).unwrap_or_else(|e| panic!("{e:?}: {f:02x?}"));
            let h = parse(f).unwrap();
            assert_eq!(h.frag, Frag::None);
            assert!(matches!(
                h.transport,
                Transport::Udp
                    | Transport::Tcp { .. }
                    | Transport::Icmpv4 { .. }
                    | Transport::Icmpv6 { .. }
            ));
        }
        // With options, tags and an extension chain.
        let mut ip = Ipv4::new(s4, d4);
        ip.options = vec![0x94, 0x04, 0, 0, 1];
        let f = ethernet(
            &[(0x88a8, 1), (0x8100, 2)],
            0x0800,
            &ip.packet(17, &udp(a4, 5, 7, b"")),
        );
        let h = parse(&f).unwrap();
        assert_eq!((h.vlan_tags, h.l4_offset), (2, 14 + 8 + 28));
        let exts = [
            Ext::HopByHop { len: 1 },
            Ext::DestOpts { len: 0 },
            Ext::Routing { len: 2 },
            Ext::Fragment {
                offset: 0,
                more: false,
                id: 1,
            },
            Ext::Auth { len: 4 },
        ];
        let f = frame_v6(&Ipv6::new(s6, d6), &exts, 17, &udp(a6, 5, 7, b"xyz"));
        let h = parse(&f).unwrap();
        assert_eq!(usize::from(h.l4_offset), 14 + 40 + 16 + 8 + 24 + 8 + 24);
        assert_eq!((h.transport, h.frag), (Transport::Udp, Frag::None));
        verify_checksums(&f).unwrap();
    }

    #[test]
    fn fragment_helpers() {
        let (s, d) = (V4_POOL[0], V4_POOL[1]);
        let frames = udp4_fragments(s, d, 1000, 7, &[0x5a; 100], 50);
        // 108 bytes of datagram in 48-byte pieces: 48, 48, 12.
        assert_eq!(frames.len(), 3);
        let kinds: Vec<_> = frames.iter().map(|f| classify(f)).collect();
        assert!(matches!(
            kinds[0],
            Class::Ip(IpFields {
                frag: Frag::First,
                dport: Some(7),
                ..
            })
        ));
        for k in &kinds[1..] {
            assert!(matches!(
                k,
                Class::Ip(IpFields {
                    frag: Frag::Later,
                    dport: None,
                    ..
                })
            ));
        }
        let frames = udp6_fragments(V6_POOL[0], V6_POOL[1], 1000, 7, &[0x5a; 100], 64);
        assert_eq!(frames.len(), 2);
        assert!(matches!(
            classify(&frames[0]),
            Class::Ip(IpFields {
                frag: Frag::First,
                sport: Some(1000),
                ..
            })
        ));
        assert!(matches!(
            classify(&frames[1]),
            Class::Ip(IpFields {
                frag: Frag::Later,
                ..
            })
        ));
        assert_eq!(
            classify(&tiny_tcp_first_fragment(s, d, 1000, 80)),
            Class::Malformed(Malformed::Fragment(crate::parse::Layer::Tcp))
        );
        assert_eq!(
            classify(&overlapping_tcp_fragment(s, d, 0x02)),
            Class::Malformed(Malformed::Fragment(crate::parse::Layer::Tcp))
        );
    }

    #[test]
    fn random_frames_respect_the_length_bounds() {
        let mut rng = Rng::new(1);
        for _ in 0..20_000 {
            let f = random_frame(&mut rng);
            assert!(
                (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&f.len()),
                "{}",
                f.len()
            );
        }
    }

    /// The generator really exercises the classifier: every class, every fragment kind (with
    /// ports, where there can be ports) and every protocol class occurs in at least 2% of
    /// 20 000 frames.
    #[test]
    fn random_frames_cover_every_class() {
        const N: usize = 20_000;
        let mut rng = Rng::new(0x5eed);
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        let mut count = |k: &'static str| *counts.entry(k).or_default() += 1;
        for _ in 0..N {
            match classify(&random_frame(&mut rng)) {
                Class::NotIp => count("not ip"),
                Class::Malformed(_) => count("malformed"),
                Class::Unparsed => count("unparsed"),
                Class::Ip(f) => {
                    count("ip");
                    count(if f.v6 { "ipv6" } else { "ipv4" });
                    match (f.frag, f.sport.is_some()) {
                        (Frag::None, true) => count("frag none with ports"),
                        (Frag::First, true) => count("frag first with ports"),
                        (Frag::Later, _) => count("frag later"),
                        _ => {}
                    }
                    if f.frag == Frag::First && f.icmp_type.is_some() {
                        count("frag first with icmp type");
                    }
                    count(match f.class {
                        proto_class::TCP => "tcp",
                        proto_class::UDP => "udp",
                        proto_class::ICMP => "icmp",
                        proto_class::ICMPV6 => "icmpv6",
                        _ => "other ip",
                    });
                }
            }
        }
        eprintln!("{counts:#?}");
        for k in [
            "not ip",
            "malformed",
            "unparsed",
            "ip",
            "ipv4",
            "ipv6",
            "frag none with ports",
            "frag first with ports",
            "frag later",
            "tcp",
            "udp",
            "icmp",
            "icmpv6",
            "other ip",
        ] {
            let n = counts.get(k).copied().unwrap_or(0);
            assert!(n * 50 >= N, "{k}: {n} of {N}");
        }
        // First fragments with an ICMP type are rarer (a share of ICMP), but present.
        assert!(
            counts
                .get("frag first with icmp type")
                .copied()
                .unwrap_or(0)
                > 50
        );
    }
}
