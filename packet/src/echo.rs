//! The echo responder: answers a frame in place, in the buffer it arrived in.
//!
//! | request | reply |
//! |---|---|
//! | ICMPv4 echo request (type 8, code 0) | echo reply (type 0) |
//! | ICMPv6 echo request (128, code 0) | echo reply (129) |
//! | UDP to one of the echo ports (default 7, RFC 862) | the same payload back |
//! | ARP request for a local IPv4 address | ARP reply with the local MAC |
//! | IPv6 neighbour solicitation for a local IPv6 address | neighbour advertisement |
//!
//! Replies swap the MAC, IP and port fields, set the TTL / hop limit to 64 (255 for neighbour
//! discovery, as RFC 4861 requires), keep VLAN tags, and carry correct checksums. On the fast
//! path no checksum is recomputed: swapping source and destination leaves every sum unchanged
//! (one's complement addition commutes, and the pseudo-headers contain both addresses), so only
//! the words that really change (TTL, ICMP type) are patched with RFC 1624 updates. A request
//! whose L4 checksum was wrong therefore gets a reply whose checksum is equally wrong, and the
//! sender's stack discards it: we never turn a corrupt packet into a valid one.
//!
//! The responder never answers: malformed frames, IP fragments (first fragments included,
//! although they carry their UDP or ICMP header), IPv6 packets whose transport header the
//! parser cannot reach, frames from group (broadcast or multicast) MAC addresses, IP packets
//! from multicast, broadcast or unspecified addresses, packets to multicast addresses, UDP from
//! port 0, from port 7 or from another echo port (two echo services would otherwise ping-pong
//! forever), ICMP other than echo requests, IPv4 packets with a bad header checksum (see
//! [`crate::parse`](mod@crate::parse)), IPv6 packets with a routing header.
//!
//! When local addresses are configured, IP echo answers only packets addressed to them; when a
//! local MAC is configured, only frames addressed to it. ARP and neighbour discovery need both.
//!
//! # Unfinished UDP checksums
//! A sender whose (virtual) NIC computes checksums for it (veth with `tx` offload on, the
//! default) hands its UDP packets on with only the pseudo-header sum in the checksum field
//! (Linux's `CHECKSUM_PARTIAL`); when such a packet reaches a kernel-bypass path instead of a
//! NIC, nobody finishes it. An echo of it carries the same unfinished checksum and the sender's
//! stack drops it. The responder recognises that case exactly (the field equals the folded
//! pseudo-header sum, and the full checksum does not verify), marks the reply
//! (`partial_checksum`, counted by the data paths as `checksum_partial`), and, only when asked
//! ([`Responder::set_complete_partial_checksums`]), completes the checksum in the reply, as the
//! kernel would have. Any other wrong checksum stays as wrong as it came.

use crate::checksum::{self, update_word};
use crate::parse::{self, Frag, Headers, IPV6_HEADER_LEN, Malformed, Net, Transport};

/// What a data path prints (once) when echo requests on `port` arrive with unfinished UDP
/// checksums: the cause on the sender's side and the fixes.
#[cfg(feature = "std")]
pub fn partial_checksum_hint(port: &str, count: u64) -> std::string::String {
    std::format!(
        "{count} UDP echo request(s) on {port} carry an unfinished checksum (only the \
         pseudo-header sum): their sender leaves UDP checksums to its NIC (transmit checksum \
         offload), and on a kernel-bypass path no NIC finishes them, so the sender's stack \
         drops our echoes (UdpInCsumErrors). Fix it on the sender: `ethtool -K <its interface> \
         tx off` (on a veth pair: the other end), or run with --complete-checksums to finish \
         them in the replies as the kernel would."
    )
}

/// Default UDP echo port (RFC 862).
pub const ECHO_PORT: u16 = 7;
/// The TTL / hop limit of every reply, as the kernel's default.
pub const REPLY_TTL: u8 = 64;
/// The most local addresses of each family a responder holds.
pub const MAX_LOCAL_ADDRS: usize = 16;

const ICMP_TYPE_ECHO_REPLY: u8 = 0;
const ICMP_TYPE_ECHO_REQUEST: u8 = 8;
const ICMPV6_TYPE_ECHO_REQUEST: u8 = 128;
const ICMPV6_TYPE_ECHO_REPLY: u8 = 129;
const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
const NDP_HOP_LIMIT: u8 = 255;
const NDP_OPT_SOURCE_LL: u8 = 1;
const NDP_OPT_TARGET_LL: u8 = 2;
/// ICMPv6 header (4) + flags (4) + target (16).
const NDP_BODY_LEN: usize = 24;
/// A neighbour advertisement with a target link-layer address option.
const NA_LEN: usize = NDP_BODY_LEN + 8;
const NA_FLAG_SOLICITED: u8 = 0x40;
const NA_FLAG_OVERRIDE: u8 = 0x20;
const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
/// Ethernet/IPv4 ARP body length.
const ARP_LEN: usize = 28;

/// What a reply answers, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    IcmpEcho,
    Icmpv6Echo,
    UdpEcho,
    Arp,
    NeighborAdvertisement,
    /// A frame turned around by [`reflect`].
    Reflected,
    /// Internal: a UDP echo whose request had an unfinished checksum; reported as `UdpEcho`
    /// with `partial_checksum` set.
    #[doc(hidden)]
    UdpEchoPartialChecksum,
}

/// The outcome of offering a frame to the responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The buffer now holds a reply of `len` bytes; send it back out of the port it came in.
    /// `partial_checksum`: the request's UDP checksum was only the pseudo-header sum (see the
    /// module docs); the reply's is complete only if the responder was asked to complete it.
    Reply {
        len: usize,
        kind: ReplyKind,
        partial_checksum: bool,
    },
    /// A well-formed frame that is not ours to answer; the buffer is unchanged.
    NotForUs,
    /// A frame that fails to parse; the buffer is unchanged.
    Malformed(Malformed),
}

/// A set of UDP ports, one bit each: constant-time lookup on the fast path.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    bits: [u64; 1024],
}

impl core::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set()
            .entries((0..=u16::MAX).filter(|p| self.contains(*p)))
            .finish()
    }
}

impl Default for PortSet {
    fn default() -> Self {
        PortSet::EMPTY
    }
}

/// An error in a port list such as `7,9000-9010`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortListError {
    /// An item that is not a port number (1-65535) or a range `LOW-HIGH`.
    BadItem,
    /// A range whose low end is above its high end.
    EmptyRange,
    /// The list is empty.
    Empty,
}

impl core::fmt::Display for PortListError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PortListError::BadItem => "expected a port (1-65535) or a range LOW-HIGH",
            PortListError::EmptyRange => "range start is above its end",
            PortListError::Empty => "no ports given",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PortListError {}

impl PortSet {
    pub const EMPTY: PortSet = PortSet { bits: [0; 1024] };

    pub fn insert(&mut self, port: u16) {
        self.bits[usize::from(port / 64)] |= 1 << (port % 64);
    }

    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// Parses `7`, `7,9000`, `9000-9010,7`: ports 1-65535, ranges inclusive.
    pub fn from_list(list: &str) -> Result<PortSet, PortListError> {
        let mut set = PortSet::EMPTY;
        let parse_port = |s: &str| match s.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(PortListError::BadItem),
            Ok(p) => Ok(p),
        };
        for item in list.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(PortListError::BadItem);
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
                None => {
                    let p = parse_port(item)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(PortListError::EmptyRange);
            }
            for p in lo..=hi {
                set.insert(p);
            }
        }
        if set.is_empty() {
            return Err(PortListError::Empty);
        }
        Ok(set)
    }
}

/// Returned when more than [`MAX_LOCAL_ADDRS`] addresses of one family are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyAddresses;

impl core::fmt::Display for TooManyAddresses {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "at most {MAX_LOCAL_ADDRS} local addresses per family")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TooManyAddresses {}

/// A fixed-capacity address list (no allocation, `no_std`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct AddrList<const N: usize> {
    addrs: [[u8; N]; MAX_LOCAL_ADDRS],
    len: usize,
}

impl<const N: usize> AddrList<N> {
    const EMPTY: Self = AddrList {
        addrs: [[0; N]; MAX_LOCAL_ADDRS],
        len: 0,
    };

    fn push(&mut self, a: [u8; N]) -> Result<(), TooManyAddresses> {
        if self.contains(&a) {
            return Ok(());
        }
        let slot = self.addrs.get_mut(self.len).ok_or(TooManyAddresses)?;
        *slot = a;
        self.len += 1;
        Ok(())
    }

    #[inline]
    fn contains(&self, a: &[u8]) -> bool {
        self.addrs[..self.len].iter().any(|x| x[..] == *a)
    }

    fn as_slice(&self) -> &[[u8; N]] {
        &self.addrs[..self.len]
    }
}

/// The echo responder's configuration. Build once, share read-only between poll loops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Responder {
    echo_ports: PortSet,
    local_mac: Option<[u8; 6]>,
    ipv4: AddrList<4>,
    ipv6: AddrList<16>,
    complete_partial_checksums: bool,
}

impl Default for Responder {
    fn default() -> Self {
        Responder::new()
    }
}

impl Responder {
    /// Echo on UDP port 7, any destination address, no ARP / neighbour discovery.
    pub fn new() -> Responder {
        let mut echo_ports = PortSet::EMPTY;
        echo_ports.insert(ECHO_PORT);
        Responder {
            echo_ports,
            local_mac: None,
            ipv4: AddrList::EMPTY,
            ipv6: AddrList::EMPTY,
            complete_partial_checksums: false,
        }
    }

    pub fn set_echo_ports(&mut self, ports: PortSet) {
        self.echo_ports = ports;
    }

    /// Complete unfinished UDP checksums (only the pseudo-header sum, see the module docs) in
    /// echo replies, as the kernel does for a packet it hands to a NIC without checksum
    /// offload. Off by default: a data path does what the sender's settings ask.
    pub fn set_complete_partial_checksums(&mut self, on: bool) {
        self.complete_partial_checksums = on;
    }

    pub fn echo_ports(&self) -> &PortSet {
        &self.echo_ports
    }

    /// The MAC address of the port: ARP and neighbour replies carry it, and IP echo then only
    /// answers frames addressed to it.
    pub fn set_local_mac(&mut self, mac: [u8; 6]) {
        self.local_mac = Some(mac);
    }

    pub fn local_mac(&self) -> Option<[u8; 6]> {
        self.local_mac
    }

    /// Adds a local IPv4 address: ARP requests for it are answered, and IPv4 echo then answers
    /// only packets to the local addresses.
    pub fn add_ipv4(&mut self, addr: [u8; 4]) -> Result<(), TooManyAddresses> {
        self.ipv4.push(addr)
    }

    /// Adds a local IPv6 address: neighbour solicitations for it are answered, and IPv6 echo
    /// then answers only packets to the local addresses.
    pub fn add_ipv6(&mut self, addr: [u8; 16]) -> Result<(), TooManyAddresses> {
        self.ipv6.push(addr)
    }

    pub fn ipv4_addrs(&self) -> &[[u8; 4]] {
        self.ipv4.as_slice()
    }

    pub fn ipv6_addrs(&self) -> &[[u8; 16]] {
        self.ipv6.as_slice()
    }

    /// Parses `buf[..len]` and answers it in place. `buf` may be longer than the frame: a
    /// neighbour advertisement can be longer than the solicitation it answers, and is only sent
    /// when it fits in `buf`.
    pub fn respond(&self, buf: &mut [u8], len: usize) -> Verdict {
        let Some(frame) = buf.get(..len) else {
            return Verdict::Malformed(Malformed::Truncated(parse::Layer::Ethernet));
        };
        match parse::parse(frame) {
            Ok(h) => self.respond_parsed(buf, len, &h),
            Err(e) => Verdict::Malformed(e),
        }
    }

    /// As [`respond`](Self::respond), for a frame the caller has already parsed (to count it)
    /// with `h = parse(&buf[..len])`. Inconsistent `h` gives `NotForUs` or `Malformed`, never a
    /// panic.
    #[inline]
    pub fn respond_parsed(&self, buf: &mut [u8], len: usize, h: &Headers) -> Verdict {
        // No fragment of any kind is answered: a first fragment carries its UDP or ICMP header,
        // but an echo of it alone would be a fragment of a datagram that never completes.
        // (Neighbour discovery never comes fragmented, RFC 6980; ARP is never fragmented.)
        if h.frag != Frag::None {
            return Verdict::NotForUs;
        }
        let done = match (h.net, h.transport) {
            (Net::Ipv4, Transport::Icmpv4 { icmp_type, code }) => {
                if icmp_type == ICMP_TYPE_ECHO_REQUEST && code == 0 {
                    self.icmpv4_echo(buf, len, h)
                } else {
                    None
                }
            }
            (Net::Ipv4, Transport::Udp) => self.udp_echo(buf, len, h, false),
            (
                Net::Ipv6 {
                    routing_header: false,
                },
                Transport::Icmpv6 { icmp_type, code },
            ) => match (icmp_type, code) {
                (ICMPV6_TYPE_ECHO_REQUEST, 0) => self.icmpv6_echo(buf, len, h),
                (ICMPV6_NEIGHBOR_SOLICITATION, 0) => self.neighbor_advert(buf, len, h),
                _ => None,
            },
            (
                Net::Ipv6 {
                    routing_header: false,
                },
                Transport::Udp,
            ) => self.udp_echo(buf, len, h, true),
            (Net::Arp, _) => self.arp_reply(buf, len, h),
            _ => None,
        };
        match done {
            Some((len, kind)) => Verdict::Reply {
                len,
                partial_checksum: kind == ReplyKind::UdpEchoPartialChecksum,
                kind: match kind {
                    ReplyKind::UdpEchoPartialChecksum => ReplyKind::UdpEcho,
                    k => k,
                },
            },
            None => Verdict::NotForUs,
        }
    }

    /// Ethernet-level checks for IP echo: unicast source, unicast destination that is ours
    /// (when we know our MAC).
    #[inline(always)]
    fn ethernet_ok(&self, frame: &[u8]) -> bool {
        let (Some(dst), Some(src)) = (frame.get(0..6), frame.get(6..12)) else {
            return false;
        };
        if is_group_mac(src) || is_group_mac(dst) {
            return false;
        }
        match &self.local_mac {
            Some(mac) => dst == mac,
            None => true,
        }
    }

    #[inline(always)]
    fn ipv4_addrs_ok(&self, frame: &[u8], l3: usize) -> bool {
        let Some(ip) = read::<20>(frame, l3) else {
            return false;
        };
        let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
        if !ipv4_unicast(src) || src >> 24 == 127 {
            return false;
        }
        if self.ipv4.len > 0 {
            self.ipv4.contains(&ip[16..20])
        } else {
            ipv4_unicast(u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]))
        }
    }

    #[inline]
    fn ipv6_addrs_ok(&self, frame: &[u8], l3: usize) -> bool {
        let Some(ip) = frame.get(l3..l3 + IPV6_HEADER_LEN) else {
            return false;
        };
        let src = &ip[8..24];
        let dst = &ip[24..40];
        // Multicast (ff00::/8) and the unspecified address cannot be answered from or to.
        if src[0] == 0xff || src.iter().all(|b| *b == 0) {
            return false;
        }
        if self.ipv6.len > 0 {
            self.ipv6.contains(dst)
        } else {
            dst[0] != 0xff
        }
    }

    #[inline]
    fn icmpv4_echo(&self, buf: &mut [u8], len: usize, h: &Headers) -> Option<(usize, ReplyKind)> {
        let (l3, l4) = (usize::from(h.l3_offset), usize::from(h.l4_offset));
        let frame = buf.get_mut(..len)?;
        if !self.ethernet_ok(frame) || !self.ipv4_addrs_ok(frame, l3) {
            return None;
        }
        frame.get(l4..l4 + 8)?;
        // ICMP: type 8 -> 0, checksum patched for that one word.
        let old = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
        let new = u16::from_be_bytes([ICMP_TYPE_ECHO_REPLY, frame[l4 + 1]]);
        frame[l4] = ICMP_TYPE_ECHO_REPLY;
        patch_checksum(frame, l4 + 2, old, new);
        // ICMPv4 has no pseudo-header: a reply with id 0, sequence 0 and a zero payload sums
        // to zero, whose checksum is 0xffff, but the incremental update gives 0x0000 (which
        // a receiver rejects). Only a 0x0000 result can be that case; then look.
        if frame[l4 + 2..l4 + 4] == [0, 0] {
            let end = usize::from(h.ip_end).min(frame.len());
            if frame[l4..end].iter().all(|&b| b == 0) {
                frame[l4 + 2..l4 + 4].copy_from_slice(&[0xff, 0xff]);
            }
        }
        turn_ipv4(frame, l3);
        swap_macs(frame);
        Some((len, ReplyKind::IcmpEcho))
    }

    #[inline]
    fn icmpv6_echo(&self, buf: &mut [u8], len: usize, h: &Headers) -> Option<(usize, ReplyKind)> {
        let (l3, l4) = (usize::from(h.l3_offset), usize::from(h.l4_offset));
        let frame = buf.get_mut(..len)?;
        if !self.ethernet_ok(frame) || !self.ipv6_addrs_ok(frame, l3) {
            return None;
        }
        frame.get(l4..l4 + 8)?;
        // The ICMPv6 pseudo-header holds both addresses, so swapping them changes no sum.
        let old = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
        let new = u16::from_be_bytes([ICMPV6_TYPE_ECHO_REPLY, frame[l4 + 1]]);
        frame[l4] = ICMPV6_TYPE_ECHO_REPLY;
        patch_checksum(frame, l4 + 2, old, new);
        turn_ipv6(frame, l3, REPLY_TTL);
        swap_macs(frame);
        Some((len, ReplyKind::Icmpv6Echo))
    }

    #[inline(always)]
    fn udp_echo(
        &self,
        buf: &mut [u8],
        len: usize,
        h: &Headers,
        ipv6: bool,
    ) -> Option<(usize, ReplyKind)> {
        let (l3, l4) = (usize::from(h.l3_offset), usize::from(h.l4_offset));
        let frame = buf.get_mut(..len)?;
        let ports = frame.get(l4..l4 + 4)?;
        let sport = u16::from_be_bytes([ports[0], ports[1]]);
        let dport = u16::from_be_bytes([ports[2], ports[3]]);
        if !self.echo_ports.contains(dport)
            || sport == 0
            || sport == ECHO_PORT
            || self.echo_ports.contains(sport)
        {
            return None;
        }
        let addrs_ok = if ipv6 {
            self.ipv6_addrs_ok(frame, l3)
        } else {
            self.ipv4_addrs_ok(frame, l3)
        };
        if !addrs_ok || !self.ethernet_ok(frame) {
            return None;
        }
        let partial = self.partial_udp_checksum(frame, h, ipv6);
        // Swapping ports and addresses leaves the UDP checksum (pseudo-header included)
        // unchanged; a zero "no checksum" stays zero.
        swap::<2>(frame, l4, l4 + 2);
        if ipv6 {
            turn_ipv6(frame, l3, REPLY_TTL);
        } else {
            turn_ipv4(frame, l3);
        }
        swap_macs(frame);
        match partial {
            None => Some((len, ReplyKind::UdpEcho)),
            Some(pseudo) => {
                if self.complete_partial_checksums {
                    // The swap did not change the pseudo-header sum: finish the checksum as
                    // the sender's NIC would have.
                    let udp = frame.get_mut(l4..usize::from(h.ip_end))?;
                    udp[6..8].copy_from_slice(&[0, 0]);
                    let c = !checksum::fold(checksum::sum(pseudo, udp));
                    // 0 means "no checksum" in UDP: a computed 0 is sent as 0xffff (RFC 768).
                    let c = if c == 0 { 0xffff } else { c };
                    udp[6..8].copy_from_slice(&c.to_be_bytes());
                }
                Some((len, ReplyKind::UdpEchoPartialChecksum))
            }
        }
    }

    /// `Some(pseudo-header sum)` when the UDP checksum field holds only the folded
    /// pseudo-header sum and the full checksum does not verify: a checksum the sender's stack
    /// left for its NIC to finish. A checksum that is merely wrong gives `None`.
    #[inline(always)]
    fn partial_udp_checksum(&self, frame: &[u8], h: &Headers, ipv6: bool) -> Option<u64> {
        let (l3, l4, end) = (
            usize::from(h.l3_offset),
            usize::from(h.l4_offset),
            usize::from(h.ip_end),
        );
        let udp = frame.get(l4..end)?;
        let field = u16::from_be_bytes([*udp.get(6)?, *udp.get(7)?]);
        if field == 0 {
            return None;
        }
        let pseudo = if ipv6 {
            let ip = frame.get(l3..l3 + IPV6_HEADER_LEN)?;
            checksum::pseudo_header_v6(
                ip[8..24].try_into().ok()?,
                ip[24..40].try_into().ok()?,
                parse::IP_PROTO_UDP,
                udp.len() as u32,
            )
        } else {
            let ip = frame.get(l3..l3 + 20)?;
            checksum::pseudo_header_v4(
                ip[12..16].try_into().ok()?,
                ip[16..20].try_into().ok()?,
                parse::IP_PROTO_UDP,
                udp.len() as u16,
            )
        };
        (field == checksum::fold(pseudo) && !checksum::verify(pseudo, udp)).then_some(pseudo)
    }

    fn arp_reply(&self, buf: &mut [u8], len: usize, h: &Headers) -> Option<(usize, ReplyKind)> {
        let mac = self.local_mac?;
        let l3 = usize::from(h.l3_offset);
        let frame = buf.get_mut(..len)?;
        let arp = frame.get(l3..l3 + ARP_LEN)?;
        let htype = u16::from_be_bytes([arp[0], arp[1]]);
        let ptype = u16::from_be_bytes([arp[2], arp[3]]);
        let op = u16::from_be_bytes([arp[6], arp[7]]);
        if htype != ARP_HTYPE_ETHERNET
            || ptype != parse::ETHER_TYPE_IPV4
            || arp[4] != 6
            || arp[5] != 4
            || op != ARP_OP_REQUEST
        {
            return None;
        }
        let sender_mac: [u8; 6] = arp[8..14].try_into().ok()?;
        let sender_ip: [u8; 4] = arp[14..18].try_into().ok()?;
        let target_ip: [u8; 4] = arp[24..28].try_into().ok()?;
        if is_group_mac(&sender_mac) || is_group_mac(&frame[6..12]) {
            return None;
        }
        if !self.ipv4.contains(&target_ip) {
            return None;
        }
        let arp = &mut frame[l3..l3 + ARP_LEN];
        arp[6..8].copy_from_slice(&ARP_OP_REPLY.to_be_bytes());
        arp[8..14].copy_from_slice(&mac);
        arp[14..18].copy_from_slice(&target_ip);
        arp[18..24].copy_from_slice(&sender_mac);
        arp[24..28].copy_from_slice(&sender_ip);
        frame[0..6].copy_from_slice(&sender_mac);
        frame[6..12].copy_from_slice(&mac);
        Some((len, ReplyKind::Arp))
    }

    /// Answers a neighbour solicitation (RFC 4861 7.1.1 checks, 7.2.4 reply) by rewriting the
    /// frame into a neighbour advertisement with a target link-layer address option.
    fn neighbor_advert(
        &self,
        buf: &mut [u8],
        len: usize,
        h: &Headers,
    ) -> Option<(usize, ReplyKind)> {
        let mac = self.local_mac?;
        let (l3, l4, end) = (
            usize::from(h.l3_offset),
            usize::from(h.l4_offset),
            usize::from(h.ip_end),
        );
        // Extension headers before an NS are legal but unheard of; we rebuild the packet right
        // after the fixed header, so we only answer when there are none.
        if l4 != l3 + IPV6_HEADER_LEN || end < l4 + NDP_BODY_LEN || end > len {
            return None;
        }
        let frame = buf.get(..len)?;
        if is_group_mac(&frame[6..12]) {
            return None;
        }
        let ip = &frame[l3..l4];
        let src: [u8; 16] = ip[8..24].try_into().ok()?;
        let dst: [u8; 16] = ip[24..40].try_into().ok()?;
        if ip[7] != NDP_HOP_LIMIT || src[0] == 0xff {
            return None;
        }
        let icmp = &frame[l4..end];
        let pseudo =
            checksum::pseudo_header_v6(&src, &dst, parse::IP_PROTO_ICMPV6, icmp.len() as u32);
        if !checksum::verify(pseudo, icmp) {
            return None;
        }
        let target: [u8; 16] = icmp[8..24].try_into().ok()?;
        if target[0] == 0xff || !self.ipv6.contains(&target) {
            return None;
        }
        let source_ll =
            crate::neighbour::link_layer_option(&icmp[NDP_BODY_LEN..], NDP_OPT_SOURCE_LL)?;
        let unspecified_src = src.iter().all(|b| *b == 0);
        if unspecified_src && source_ll.is_some() {
            return None;
        }
        let (reply_dst, reply_dst_mac, flags) = if unspecified_src {
            // Duplicate address detection: defend the address to all nodes, not solicited.
            (ALL_NODES, ALL_NODES_MAC, NA_FLAG_OVERRIDE)
        } else {
            let to_mac = source_ll.unwrap_or(frame[6..12].try_into().ok()?);
            (src, to_mac, NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)
        };

        let reply_len = l4 + NA_LEN;
        let out = buf.get_mut(..reply_len)?;
        out[0..6].copy_from_slice(&reply_dst_mac);
        out[6..12].copy_from_slice(&mac);
        let ip = &mut out[l3..l4];
        ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        ip[4..6].copy_from_slice(&(NA_LEN as u16).to_be_bytes());
        ip[6] = parse::IP_PROTO_ICMPV6;
        ip[7] = NDP_HOP_LIMIT;
        ip[8..24].copy_from_slice(&target);
        ip[24..40].copy_from_slice(&reply_dst);
        let na = &mut out[l4..l4 + NA_LEN];
        na[0] = ICMPV6_NEIGHBOR_ADVERTISEMENT;
        na[1] = 0;
        na[2..4].copy_from_slice(&[0, 0]);
        na[4..8].copy_from_slice(&[flags, 0, 0, 0]);
        na[8..24].copy_from_slice(&target);
        na[24] = NDP_OPT_TARGET_LL;
        na[25] = 1;
        na[26..32].copy_from_slice(&mac);
        // A new packet, not an edit: its checksum is computed in full (32 bytes).
        let pseudo =
            checksum::pseudo_header_v6(&target, &reply_dst, parse::IP_PROTO_ICMPV6, NA_LEN as u32);
        let sum = !checksum::fold(checksum::sum(pseudo, na));
        na[2..4].copy_from_slice(&sum.to_be_bytes());
        Some((reply_len, ReplyKind::NeighborAdvertisement))
    }
}

/// Turns any well-formed IPv4/IPv6 frame around, like testpmd's `5tswap`: swaps MACs, IP
/// addresses and TCP/UDP ports. Every checksum stays valid (swaps do not change sums); TTL is
/// left alone. Non-IP frames and IP fragments (first or later) are `NotForUs`.
pub fn reflect(buf: &mut [u8], len: usize) -> Verdict {
    let Some(frame) = buf.get(..len) else {
        return Verdict::Malformed(Malformed::Truncated(parse::Layer::Ethernet));
    };
    match parse::parse(frame) {
        Ok(h) => reflect_parsed(buf, len, &h),
        Err(e) => Verdict::Malformed(e),
    }
}

/// As [`reflect`], for a frame already parsed with `h = parse(&buf[..len])`.
pub fn reflect_parsed(buf: &mut [u8], len: usize, h: &Headers) -> Verdict {
    let Some(frame) = buf.get_mut(..len) else {
        return Verdict::NotForUs;
    };
    // A fragment is not turned around: a first fragment would get its ports swapped and the
    // later ones would not.
    if h.frag != Frag::None {
        return Verdict::NotForUs;
    }
    let l3 = usize::from(h.l3_offset);
    let l4 = usize::from(h.l4_offset);
    let (addr_at, addr_len) = match h.net {
        Net::Ipv4 => (l3 + 12, 4),
        Net::Ipv6 { .. } => (l3 + 8, 16),
        _ => return Verdict::NotForUs,
    };
    if frame.len() < addr_at + 2 * addr_len {
        return Verdict::NotForUs;
    }
    if matches!(h.transport, Transport::Tcp { .. } | Transport::Udp) {
        if frame.len() < l4 + 4 {
            return Verdict::NotForUs;
        }
        swap::<2>(frame, l4, l4 + 2);
    }
    if addr_len == 4 {
        swap::<4>(frame, addr_at, addr_at + 4);
    } else {
        swap::<16>(frame, addr_at, addr_at + 16);
    }
    swap_macs(frame);
    Verdict::Reply {
        len,
        kind: ReplyKind::Reflected,
        partial_checksum: false,
    }
}

/// True for broadcast and multicast MAC addresses (the I/G bit).
#[inline]
pub fn is_group_mac(mac: &[u8]) -> bool {
    mac.first().is_some_and(|b| b & 1 == 1)
}

/// Neither unspecified, broadcast nor multicast (224.0.0.0/4).
#[inline(always)]
fn ipv4_unicast(a: u32) -> bool {
    a != 0 && a != u32::MAX && a >> 28 != 0xe
}

/// Swaps the `N`-byte fields at `a` and `b`. Fixed sizes let the compiler turn this into a
/// pair of loads and stores per field; the caller has checked the bounds.
#[inline(always)]
fn swap<const N: usize>(frame: &mut [u8], a: usize, b: usize) {
    let (Some(x), Some(y)) = (read::<N>(frame, a), read::<N>(frame, b)) else {
        return;
    };
    frame[a..a + N].copy_from_slice(&y);
    frame[b..b + N].copy_from_slice(&x);
}

#[inline(always)]
fn read<const N: usize>(frame: &[u8], at: usize) -> Option<[u8; N]> {
    frame.get(at..at + N)?.try_into().ok()
}

#[inline(always)]
fn swap_macs(frame: &mut [u8]) {
    swap::<6>(frame, 0, 6);
}

/// Replaces the 16-bit word whose checksum lives at `at` and patches it (RFC 1624).
#[inline(always)]
fn patch_checksum(frame: &mut [u8], at: usize, old: u16, new: u16) {
    let check = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let check = update_word(check, old, new);
    frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
}

/// IPv4 reply header: swap addresses, TTL 64, header checksum patched for the TTL word.
#[inline(always)]
fn turn_ipv4(frame: &mut [u8], l3: usize) {
    let old = u16::from_be_bytes([frame[l3 + 8], frame[l3 + 9]]);
    let new = u16::from_be_bytes([REPLY_TTL, frame[l3 + 9]]);
    frame[l3 + 8] = REPLY_TTL;
    patch_checksum(frame, l3 + 10, old, new);
    swap::<4>(frame, l3 + 12, l3 + 16);
}

/// IPv6 reply header: swap addresses, set the hop limit (not covered by any checksum).
#[inline(always)]
fn turn_ipv6(frame: &mut [u8], l3: usize, hop_limit: u8) {
    frame[l3 + 7] = hop_limit;
    swap::<16>(frame, l3 + 8, l3 + 24);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft;
    use crate::fixtures::*;
    use crate::parse::tests::{fix_ipv4_checksum, with_vlan};
    use crate::verify::verify_checksums;

    /// A responder that knows the capture's answering host.
    fn local() -> Responder {
        let mut r = Responder::new();
        r.set_local_mac(LOCAL_MAC);
        r.add_ipv4(LOCAL_IPV4).unwrap();
        r.add_ipv6(LOCAL_IPV6).unwrap();
        r
    }

    /// Answers `request` in a buffer of `cap` bytes; returns the reply bytes, if any.
    fn answer(r: &Responder, request: &[u8], cap: usize) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0xee; cap.max(request.len())];
        buf[..request.len()].copy_from_slice(request);
        let v = r.respond(&mut buf, request.len());
        match v {
            Verdict::Reply { len, .. } => (v, buf[..len].to_vec()),
            _ => {
                assert_eq!(
                    &buf[..request.len()],
                    request,
                    "a refused frame must be untouched"
                );
                (v, Vec::new())
            }
        }
    }

    fn assert_reply(r: &Responder, request: &[u8], expected: &[u8], kind: ReplyKind) {
        let (v, reply) = answer(r, request, 2048);
        assert_eq!(
            v,
            Verdict::Reply {
                len: expected.len(),
                kind,
                partial_checksum: false,
            }
        );
        assert_eq!(
            reply, expected,
            "\n got  {reply:02x?}\n want {expected:02x?}"
        );
        verify_checksums(&reply).expect("reply checksums");
    }

    fn assert_refused(r: &Responder, request: &[u8]) {
        let (v, _) = answer(r, request, 2048);
        assert_eq!(v, Verdict::NotForUs);
    }

    #[test]
    fn fixtures_have_valid_checksums() {
        for f in REQUESTS {
            verify_checksums(f).unwrap();
        }
        for f in [
            &ICMPV4_ECHO_REPLY_TTL5[..],
            &ICMPV6_ECHO_REPLY,
            &UDP4_ECHO_REPLY,
        ] {
            verify_checksums(f).unwrap();
        }
    }

    /// Id 0, sequence 0 and an all-zero payload: the reply's ICMP message is all zeros, whose
    /// checksum is 0xffff (the incremental update alone would give 0x0000, which a receiver
    /// rejects).
    #[test]
    fn an_all_zero_icmpv4_echo_gets_the_checksum_0xffff() {
        let mut request = ICMPV4_ECHO_REQUEST_TTL5.to_vec();
        let l4 = 14 + 20;
        request[l4 + 1..].fill(0);
        let check = checksum::checksum(&request[l4..]);
        request[l4 + 2..l4 + 4].copy_from_slice(&check.to_be_bytes());
        verify_checksums(&request).unwrap();
        let (v, reply) = answer(&Responder::new(), &request, 2048);
        assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
        assert!(
            reply[l4..]
                .iter()
                .enumerate()
                .all(|(i, &b)| if i == 2 || i == 3 { b == 0xff } else { b == 0 })
        );
        verify_checksums(&reply).unwrap();
    }

    #[test]
    fn icmpv4_echo_reply_exact_bytes() {
        // TTL 5 -> 64: the IPv4 header checksum must be patched, the ICMP one too (type 8 -> 0).
        assert_reply(
            &Responder::new(),
            &ICMPV4_ECHO_REQUEST_TTL5,
            &ICMPV4_ECHO_REPLY_TTL5,
            ReplyKind::IcmpEcho,
        );
        assert_reply(
            &local(),
            &ICMPV4_ECHO_REQUEST_TTL5,
            &ICMPV4_ECHO_REPLY_TTL5,
            ReplyKind::IcmpEcho,
        );
    }

    #[test]
    fn icmpv6_echo_reply_exact_bytes() {
        assert_reply(
            &local(),
            &ICMPV6_ECHO_REQUEST,
            &ICMPV6_ECHO_REPLY,
            ReplyKind::Icmpv6Echo,
        );
    }

    #[test]
    fn udp_echo_exact_bytes() {
        assert_reply(
            &local(),
            &UDP4_ECHO_REQUEST,
            &UDP4_ECHO_REPLY,
            ReplyKind::UdpEcho,
        );
        assert_reply(
            &local(),
            &UDP6_ECHO_REQUEST,
            &UDP6_ECHO_REPLY,
            ReplyKind::UdpEcho,
        );
    }

    /// The request with its UDP checksum field set to what a sender with checksum offload
    /// leaves there: the folded pseudo-header sum. `l3`/`l4` are the header offsets.
    fn with_partial_checksum(request: &[u8], v6: bool) -> Vec<u8> {
        let mut f = request.to_vec();
        let (l3, l4) = (14, if v6 { 54 } else { 34 });
        let udp_len = f.len() - l4;
        let pseudo = if v6 {
            checksum::pseudo_header_v6(
                f[l3 + 8..l3 + 24].try_into().unwrap(),
                f[l3 + 24..l3 + 40].try_into().unwrap(),
                17,
                udp_len as u32,
            )
        } else {
            checksum::pseudo_header_v4(
                f[l3 + 12..l3 + 16].try_into().unwrap(),
                f[l3 + 16..l3 + 20].try_into().unwrap(),
                17,
                udp_len as u16,
            )
        };
        f[l4 + 6..l4 + 8].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        f
    }

    fn echo(responder: &Responder, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut buf = frame.to_vec();
        let v = responder.respond(&mut buf, frame.len());
        (v, buf)
    }

    #[test]
    fn unfinished_udp_checksums_are_recognised_and_completed_only_when_asked() {
        for (request, expected, v6) in [
            (&UDP4_ECHO_REQUEST[..], &UDP4_ECHO_REPLY[..], false),
            (&UDP6_ECHO_REQUEST[..], &UDP6_ECHO_REPLY[..], true),
        ] {
            let partial = with_partial_checksum(request, v6);
            assert!(
                verify_checksums(&partial).is_err(),
                "the request's is unfinished"
            );
            // By default: echoed as it came (the sender's stack will drop it), but marked.
            let (v, reply) = echo(&local(), &partial);
            assert_eq!(
                v,
                Verdict::Reply {
                    len: partial.len(),
                    kind: ReplyKind::UdpEcho,
                    partial_checksum: true,
                }
            );
            assert!(verify_checksums(&reply).is_err());
            // Asked to complete it: exactly the reply a finished request gets.
            let mut completing = local();
            completing.set_complete_partial_checksums(true);
            let (v, reply) = echo(&completing, &partial);
            assert!(matches!(
                v,
                Verdict::Reply {
                    partial_checksum: true,
                    ..
                }
            ));
            assert_eq!(reply, expected, "completed reply");
            verify_checksums(&reply).unwrap();
        }
    }

    #[test]
    fn a_corrupted_or_valid_checksum_is_not_taken_for_an_unfinished_one() {
        let mut completing = local();
        completing.set_complete_partial_checksums(true);
        // Valid: the ordinary echo, not marked.
        let (v, reply) = echo(&completing, &UDP4_ECHO_REQUEST);
        assert!(matches!(
            v,
            Verdict::Reply {
                partial_checksum: false,
                ..
            }
        ));
        assert_eq!(reply, UDP4_ECHO_REPLY);
        // Corrupted: echoed as wrong as it came, never made valid.
        let mut bad = UDP4_ECHO_REQUEST.to_vec();
        bad[40] ^= 0x5a;
        let (v, reply) = echo(&completing, &bad);
        assert!(matches!(
            v,
            Verdict::Reply {
                partial_checksum: false,
                ..
            }
        ));
        assert!(verify_checksums(&reply).is_err());
        // "No checksum" (0, IPv4 only) stays 0.
        let mut none = UDP4_ECHO_REQUEST.to_vec();
        none[40..42].copy_from_slice(&[0, 0]);
        let (_, reply) = echo(&completing, &none);
        assert_eq!(&reply[40..42], &[0, 0]);
    }

    #[test]
    fn arp_reply_exact_bytes() {
        assert_reply(&local(), &ARP_REQUEST, &ARP_REPLY, ReplyKind::Arp);
    }

    #[test]
    fn neighbor_advertisement_exact_bytes() {
        assert_reply(
            &local(),
            &NEIGHBOR_SOLICITATION,
            &NEIGHBOR_ADVERTISEMENT,
            ReplyKind::NeighborAdvertisement,
        );
    }

    /// A solicitation without the source link-layer option (as in unicast neighbour
    /// unreachability detection): 8 bytes shorter than the advertisement it gets.
    fn ns_without_option() -> Vec<u8> {
        let mut f = NEIGHBOR_SOLICITATION[..NEIGHBOR_SOLICITATION.len() - 8].to_vec();
        f[18..20].copy_from_slice(&24u16.to_be_bytes());
        // Unicast to our address, recomputed checksum (with etherparse, independent of ours).
        f[0..6].copy_from_slice(&LOCAL_MAC);
        f[38..54].copy_from_slice(&LOCAL_IPV6);
        f[56..58].copy_from_slice(&[0, 0]);
        let c = {
            let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
            let Some(etherparse::TransportSlice::Icmpv6(icmp)) = p.transport else {
                panic!("not ICMPv6")
            };
            let src: [u8; 16] = NEIGHBOR_SOLICITATION[22..38].try_into().unwrap();
            icmp.icmp_type()
                .calc_checksum(src, LOCAL_IPV6, icmp.payload())
                .unwrap()
        };
        f[56..58].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn neighbor_advertisement_grows_into_the_buffer() {
        let ns = ns_without_option();
        verify_checksums(&ns).unwrap();
        // Answered to the frame's source MAC, since there is no source link-layer option.
        let (v, na) = answer(&local(), &ns, 2048);
        assert_eq!(
            v,
            Verdict::Reply {
                len: 86,
                kind: ReplyKind::NeighborAdvertisement,
                partial_checksum: false,
            }
        );
        assert_eq!(na, NEIGHBOR_ADVERTISEMENT);
        // With no room to grow, no reply (and the frame is left alone).
        let mut exact = ns.clone();
        assert_eq!(local().respond(&mut exact, ns.len()), Verdict::NotForUs);
        assert_eq!(exact, ns);
    }

    #[test]
    fn duplicate_address_detection_is_defended_to_all_nodes() {
        // DAD probe: source ::, no source link-layer option.
        let mut f = ns_without_option();
        f[22..38].copy_from_slice(&[0; 16]);
        f[56..58].copy_from_slice(&[0, 0]);
        let sum = crate::checksum::pseudo_header_v6(&[0; 16], &LOCAL_IPV6, 58, 24);
        let c = !crate::checksum::fold(crate::checksum::sum(sum, &f[54..]));
        f[56..58].copy_from_slice(&c.to_be_bytes());
        verify_checksums(&f).unwrap();
        let (v, na) = answer(&local(), &f, 2048);
        assert!(matches!(
            v,
            Verdict::Reply {
                kind: ReplyKind::NeighborAdvertisement,
                ..
            }
        ));
        assert_eq!(&na[0..6], &ALL_NODES_MAC);
        assert_eq!(&na[38..54], &ALL_NODES);
        assert_eq!(na[58], NA_FLAG_OVERRIDE, "not solicited");
        verify_checksums(&na).unwrap();
    }

    #[test]
    fn vlan_tags_are_kept() {
        let req = with_vlan(
            &with_vlan(&ICMPV4_ECHO_REQUEST_TTL5, 0x8100, 100),
            0x88a8,
            7,
        );
        let want = with_vlan(&with_vlan(&ICMPV4_ECHO_REPLY_TTL5, 0x8100, 100), 0x88a8, 7);
        assert_reply(&local(), &req, &want, ReplyKind::IcmpEcho);
        let req = with_vlan(&UDP6_ECHO_REQUEST, 0x8100, 42);
        let want = with_vlan(&UDP6_ECHO_REPLY, 0x8100, 42);
        assert_reply(&local(), &req, &want, ReplyKind::UdpEcho);
        let req = with_vlan(&ARP_REQUEST, 0x8100, 3);
        let want = with_vlan(&ARP_REPLY, 0x8100, 3);
        assert_reply(&local(), &req, &want, ReplyKind::Arp);
        let req = with_vlan(&NEIGHBOR_SOLICITATION, 0x8100, 3);
        let want = with_vlan(&NEIGHBOR_ADVERTISEMENT, 0x8100, 3);
        assert_reply(&local(), &req, &want, ReplyKind::NeighborAdvertisement);
    }

    #[test]
    fn ethernet_padding_is_echoed_as_is() {
        let mut req = UDP4_ECHO_REQUEST.to_vec();
        req.resize(60, 0);
        let mut want = UDP4_ECHO_REPLY.to_vec();
        want.resize(60, 0);
        assert_reply(&local(), &req, &want, ReplyKind::UdpEcho);
    }

    #[test]
    fn configured_echo_ports() {
        let mut r = local();
        r.set_echo_ports(PortSet::from_list("9000-9001").unwrap());
        let mut req = UDP4_ECHO_REQUEST;
        assert_refused(&r, &req); // port 7 is no longer an echo port
        req[36..38].copy_from_slice(&9001u16.to_be_bytes());
        // Changing a port changes the UDP checksum word by word; patch it the RFC 1624 way.
        let c = u16::from_be_bytes([req[40], req[41]]);
        req[40..42].copy_from_slice(&update_word(c, 7, 9001).to_be_bytes());
        verify_checksums(&req).unwrap();
        let (v, reply) = answer(&r, &req, 2048);
        assert!(matches!(
            v,
            Verdict::Reply {
                kind: ReplyKind::UdpEcho,
                ..
            }
        ));
        assert_eq!(&reply[34..36], &9001u16.to_be_bytes());
        verify_checksums(&reply).unwrap();
    }

    #[test]
    fn never_answer_malformed() {
        let mut f = UDP4_ECHO_REQUEST;
        f[24] ^= 0xff; // IPv4 header checksum
        let (v, _) = answer(&local(), &f, 2048);
        assert_eq!(
            v,
            Verdict::Malformed(Malformed::BadChecksum(parse::Layer::Ipv4))
        );
        let (v, _) = answer(&local(), &ICMPV4_ECHO_REQUEST[..40], 2048);
        assert!(matches!(v, Verdict::Malformed(_)));
    }

    #[test]
    fn never_answer_fragments() {
        let mut f = ICMPV4_ECHO_REQUEST;
        f[20] = 0x20; // more fragments
        fix_ipv4_checksum(&mut f, 14);
        assert_refused(&local(), &f);
    }

    /// The UDP echo request as the first fragment of a longer datagram: MF set, and the UDP
    /// length (and checksum) covering the whole datagram. It carries the UDP header, so parse
    /// reads the ports, but it must not be answered.
    #[test]
    fn never_answer_a_first_fragment_udp_to_the_echo_port() {
        let mut f = UDP4_ECHO_REQUEST;
        f[20] = 0x20;
        f[38..40].copy_from_slice(&1000u16.to_be_bytes());
        fix_ipv4_checksum(&mut f, 14);
        let h = parse::parse(&f).unwrap();
        assert_eq!((h.transport, h.frag), (Transport::Udp, Frag::First));
        assert_refused(&local(), &f);
        assert_refused(&Responder::new(), &f);
        // IPv6: a fragment header (offset 0, M) between the fixed header and UDP. The same
        // datagram unfragmented is answered.
        let (src, payload) = (craft::V6_POOL[0], [0x5a; 64]);
        let datagram = craft::udp(
            craft::Addrs::V6(src, LOCAL_IPV6),
            40001,
            ECHO_PORT,
            &payload,
        );
        let whole = craft::frame_v6(&craft::Ipv6::new(src, LOCAL_IPV6), &[], 17, &datagram);
        let (v, _) = answer(&local(), &whole, 2048);
        assert!(matches!(
            v,
            Verdict::Reply {
                kind: ReplyKind::UdpEcho,
                ..
            }
        ));
        let f = craft::udp6_fragments(src, LOCAL_IPV6, 40001, ECHO_PORT, &payload, 32);
        let h = parse::parse(&f[0]).unwrap();
        assert_eq!((h.transport, h.frag), (Transport::Udp, Frag::First));
        assert_refused(&local(), &f[0]);
        assert_refused(&Responder::new(), &f[0]);
    }

    #[test]
    fn never_answer_a_first_fragment_icmp_echo_request() {
        let mut f = ICMPV4_ECHO_REQUEST;
        f[20] = 0x20;
        fix_ipv4_checksum(&mut f, 14);
        let h = parse::parse(&f).unwrap();
        assert_eq!(
            (h.transport, h.frag),
            (
                Transport::Icmpv4 {
                    icmp_type: ICMP_TYPE_ECHO_REQUEST,
                    code: 0
                },
                Frag::First
            )
        );
        assert_refused(&local(), &f);
        assert_refused(&Responder::new(), &f);
        // An ICMPv6 echo request behind a first-fragment header.
        let f = craft::frame_v6(
            &craft::Ipv6::new(craft::V6_POOL[0], LOCAL_IPV6),
            &[craft::Ext::Fragment {
                offset: 0,
                more: true,
                id: 7,
            }],
            parse::IP_PROTO_ICMPV6,
            &ICMPV6_ECHO_REQUEST[54..],
        );
        let h = parse::parse(&f).unwrap();
        assert_eq!(
            (h.transport, h.frag),
            (
                Transport::Icmpv6 {
                    icmp_type: ICMPV6_TYPE_ECHO_REQUEST,
                    code: 0
                },
                Frag::First
            )
        );
        assert_refused(&local(), &f);
    }

    #[test]
    fn reflect_refuses_fragments() {
        let mut f = TCP_SYN;
        f[20] = 0x20;
        fix_ipv4_checksum(&mut f, 14);
        let len = f.len();
        assert_eq!(reflect(&mut f.clone(), len), Verdict::NotForUs);
        f[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(reflect(&mut f.clone(), len), Verdict::NotForUs);
    }

    #[test]
    fn unparsed_ipv6_is_not_for_us() {
        // A UDP echo request behind nine destination options headers.
        let f = crate::parse::tests::v6_dest_opts_chain(9);
        assert_eq!(parse::parse(&f).unwrap().transport, Transport::Unparsed);
        assert_refused(&Responder::new(), &f);
    }

    #[test]
    fn never_answer_group_source_mac() {
        for req in [
            &ICMPV4_ECHO_REQUEST[..],
            &UDP6_ECHO_REQUEST,
            &ARP_REQUEST,
            &NEIGHBOR_SOLICITATION,
        ] {
            let mut f = req.to_vec();
            f[6] |= 0x01;
            assert_refused(&local(), &f);
        }
    }

    #[test]
    fn never_answer_broadcast_multicast_or_unspecified_source_ip() {
        for src in [
            [255, 255, 255, 255],
            [224, 0, 0, 1],
            [239, 1, 2, 3],
            [0, 0, 0, 0],
            [127, 0, 0, 1],
        ] {
            let mut f = ICMPV4_ECHO_REQUEST;
            f[26..30].copy_from_slice(&src);
            fix_ipv4_checksum(&mut f, 14);
            assert_refused(&Responder::new(), &f);
        }
        for src in [[0xff; 16], [0; 16]] {
            let mut f = UDP6_ECHO_REQUEST;
            f[22..38].copy_from_slice(&src);
            assert_refused(&Responder::new(), &f);
        }
    }

    #[test]
    fn never_answer_packets_to_multicast_or_broadcast() {
        let mut f = ICMPV4_ECHO_REQUEST;
        f[30..34].copy_from_slice(&[224, 0, 0, 1]);
        fix_ipv4_checksum(&mut f, 14);
        assert_refused(&Responder::new(), &f);
        let mut f = ICMPV4_ECHO_REQUEST;
        f[0..6].copy_from_slice(&[0xff; 6]);
        assert_refused(&Responder::new(), &f);
        let mut f = ICMPV6_ECHO_REQUEST;
        f[38] = 0xff;
        assert_refused(&Responder::new(), &f);
    }

    #[test]
    fn never_answer_udp_from_echo_ports_or_port_zero() {
        for sport in [7u16, 0] {
            let mut f = UDP4_ECHO_REQUEST;
            f[34..36].copy_from_slice(&sport.to_be_bytes());
            assert_refused(&local(), &f);
        }
        // From another echo port: two echo services would ping-pong.
        let mut r = local();
        r.set_echo_ports(PortSet::from_list("7,9000").unwrap());
        let mut f = UDP4_ECHO_REQUEST;
        f[34..36].copy_from_slice(&9000u16.to_be_bytes());
        assert_refused(&r, &f);
    }

    #[test]
    fn never_answer_icmp_other_than_echo_request() {
        // An echo reply must not be answered (that would loop), nor any other ICMP.
        assert_refused(&local(), &ICMPV4_ECHO_REPLY_TTL5);
        assert_refused(&local(), &ICMPV6_ECHO_REPLY);
        assert_refused(&local(), &MLD_REPORT);
        assert_refused(&local(), &ROUTER_SOLICITATION);
        assert_refused(&local(), &NEIGHBOR_ADVERTISEMENT);
        assert_refused(&local(), &ARP_REPLY);
        let mut f = ICMPV4_ECHO_REQUEST;
        f[35] = 1; // echo request with a non-zero code
        assert_refused(&local(), &f);
    }

    #[test]
    fn never_answer_other_protocols() {
        assert_refused(&local(), &TCP_SYN);
    }

    #[test]
    fn local_addresses_and_mac_filter() {
        let mut r = Responder::new();
        r.add_ipv4([198, 18, 0, 99]).unwrap();
        assert_refused(&r, &ICMPV4_ECHO_REQUEST);
        let mut r = Responder::new();
        r.set_local_mac([0x02, 0, 0, 0, 0, 0x99]);
        assert_refused(&r, &UDP4_ECHO_REQUEST);
        // ARP and ND need both a MAC and the address.
        assert_refused(&Responder::new(), &ARP_REQUEST);
        let mut r = Responder::new();
        r.set_local_mac(LOCAL_MAC);
        assert_refused(&r, &ARP_REQUEST);
        assert_refused(&r, &NEIGHBOR_SOLICITATION);
    }

    #[test]
    fn neighbor_solicitation_checks() {
        // Hop limit must be 255 (RFC 4861 7.1.1: the packet did not cross a router).
        let mut f = NEIGHBOR_SOLICITATION;
        f[21] = 64;
        assert_refused(&local(), &f);
        // A bad ICMPv6 checksum.
        let mut f = NEIGHBOR_SOLICITATION;
        f[57] ^= 1;
        assert_refused(&local(), &f);
        // An option of length 0 is invalid.
        let mut f = NEIGHBOR_SOLICITATION;
        f[79] = 0;
        assert_refused(&local(), &f);
    }

    #[test]
    fn reflect_swaps_five_tuple() {
        let mut f = TCP_SYN;
        let len = f.len();
        assert_eq!(
            reflect(&mut f, len),
            Verdict::Reply {
                len,
                kind: ReplyKind::Reflected,
                partial_checksum: false,
            }
        );
        assert_eq!(&f[0..6], &TCP_SYN[6..12]);
        assert_eq!(&f[26..30], &TCP_SYN[30..34]);
        assert_eq!(&f[34..36], &TCP_SYN[36..38]);
        assert_eq!(f[22], TCP_SYN[22], "reflect keeps the TTL");
        verify_checksums(&f).unwrap();
        // Reflecting twice gives the original frame back.
        reflect(&mut f, len);
        assert_eq!(f, TCP_SYN);
        let mut arp = ARP_REQUEST;
        assert_eq!(reflect(&mut arp, 42), Verdict::NotForUs);
        let mut bad = TCP_SYN;
        bad[46] = 0x40;
        assert!(matches!(reflect(&mut bad, len), Verdict::Malformed(_)));
    }

    #[test]
    fn port_lists() {
        let s = PortSet::from_list("7, 9000-9002,53").unwrap();
        for p in [7, 53, 9000, 9001, 9002] {
            assert!(s.contains(p));
        }
        assert!(!s.contains(8) && !s.contains(9003));
        assert_eq!(PortSet::from_list("0"), Err(PortListError::BadItem));
        assert_eq!(PortSet::from_list("70000"), Err(PortListError::BadItem));
        assert_eq!(PortSet::from_list("9-7"), Err(PortListError::EmptyRange));
        assert_eq!(PortSet::from_list("7,"), Err(PortListError::BadItem));
        assert_eq!(PortSet::from_list("x"), Err(PortListError::BadItem));
    }

    #[test]
    fn too_many_addresses() {
        let mut r = Responder::new();
        for i in 0..MAX_LOCAL_ADDRS as u8 {
            r.add_ipv4([198, 18, 1, i]).unwrap();
        }
        r.add_ipv4([198, 18, 1, 0]).unwrap(); // a duplicate takes no room
        assert_eq!(r.add_ipv4([198, 18, 2, 0]), Err(TooManyAddresses));
    }

    #[test]
    fn short_buffer_or_length_never_panics() {
        let r = local();
        let mut buf = [0u8; 4];
        assert!(matches!(r.respond(&mut buf, 100), Verdict::Malformed(_)));
        // Headers that do not fit the buffer (a caller bug) give a refusal, not a panic.
        let h = parse::parse(&UDP4_ECHO_REQUEST).unwrap();
        let mut short = UDP4_ECHO_REQUEST[..30].to_vec();
        assert_eq!(r.respond_parsed(&mut short, 30, &h), Verdict::NotForUs);
        assert_eq!(reflect_parsed(&mut short, 30, &h), Verdict::NotForUs);
    }
}
