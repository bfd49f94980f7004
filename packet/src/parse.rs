//! Frame parsing: Ethernet II, up to three VLAN tags (802.1Q, 802.1ad QinQ), ARP, IPv4 (with
//! options and fragments), IPv6 (with a bounded extension-header walk and fragments), TCP, UDP,
//! ICMPv4 and ICMPv6.
//!
//! [`parse`] is the toolkit's one definition of a frame's class, written down in
//! `spec/classifier.md`: the XDP program implements the same text, and [`crate::filter`] (built
//! on this function) is the model a differential test holds that program to. Every rule of the
//! specification is here, in the same order, and a comment names it where the code is not
//! obvious.
//!
//! It slices the frame with etherparse's zero-copy per-header slices, adds the checks etherparse
//! leaves to its user (the IPv4 header checksum, the IP lengths, the UDP length, the fragment
//! rules), walks IPv6 extension headers itself (at most [`MAX_IPV6_EXT_HEADERS`]), and returns a
//! [`Headers`]: a small `Copy` value holding offsets and the few fields the data paths decide on.
//! It borrows nothing, so the caller can go on to rewrite the frame in place (the echo
//! responder) or count it without parsing twice.
//!
//! The commonest frame, untagged IPv4 without options carrying a whole UDP or TCP datagram, is
//! read at fixed offsets in one view first (`plain_ipv4`), as the XDP program does: two thirds
//! of the general path's time. It takes a frame only when the general path would accept it with
//! the same result, which `crate::selfcheck` checks on every frame its tests and the fuzzer
//! feed it; anything else goes to the general path, which also says what failed.
//!
//! # Classes
//! - `Err(Malformed)`: the frame cannot be trusted (truncated, inconsistent lengths, a bad IPv4
//!   header checksum, a fragment that could hide or overwrite a transport header, ...).
//! - `Ok(h)` with `h.net` ARP or `Other`: not IP.
//! - `Ok(h)` with `h.transport == Transport::Unparsed`: an IPv6 packet whose transport header
//!   cannot be reached (too many extension headers, or one we do not walk).
//! - Any other `Ok(h)`: an IP packet; `h.protocol` is its protocol number (after the IPv6
//!   extension headers), `h.frag` its fragment kind. A whole datagram or a first fragment
//!   carries its parsed transport header (`Tcp`, `Udp`, `Icmpv4`, `Icmpv6`, `Other`); a later
//!   fragment is `Transport::Fragment` and nothing past the IP headers is read.
//!
//! # Guarantee
//! For any byte slice, [`parse`] returns without panicking. When it returns `Ok(h)`, every
//! offset in `h` lies inside the frame it was given, and the header at that offset was fully
//! present: `h.l3_offset <= h.l4_offset <= h.ip_end <= frame.len()`, the network header lies
//! in `[h.l3_offset, h.l4_offset)`, and for `Tcp`, `Udp`, `Icmpv4` and `Icmpv6` the whole
//! transport header (TCP options included, 8 bytes for the others) lies in
//! `[h.l4_offset, h.ip_end)`. Code that reads headers at these offsets may index without further
//! checks, as long as the frame is the same one.

use crate::checksum;
use etherparse::err::{ip_auth as auth_err, ipv4 as ipv4_err, ipv6 as ipv6_err, tcp as tcp_err};
use etherparse::{
    ArpPacketSlice, EtherType, Ethernet2Slice, Icmpv6Slice, IpAuthHeaderSlice, Ipv4HeaderSlice,
    Ipv6FragmentHeaderSlice, Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, SingleVlanSlice, TcpSlice,
    UdpHeaderSlice,
};

/// Length of an Ethernet II header without tags.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// The most VLAN tags we step over; after the third, a tag's ether type is just another
/// ether type (`Net::Other`).
pub const MAX_VLAN_TAGS: u8 = 3;
/// Length of one 802.1Q / 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Length of an IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = 40;
/// The most IPv6 extension headers the walk steps over before the transport header; a chain
/// that is still going after this many is `Transport::Unparsed`. The XDP program uses the same
/// bound (`abi::MAX_IPV6_EXT_HEADERS`).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;
const _: () = assert!(MAX_IPV6_EXT_HEADERS == crate::abi::MAX_IPV6_EXT_HEADERS);
/// The smallest TCP header: a later fragment that starts below it would overwrite it.
pub const TCP_MIN_HEADER_LEN: usize = 20;

pub const ETHER_TYPE_IPV4: u16 = 0x0800;
pub const ETHER_TYPE_ARP: u16 = 0x0806;
pub const ETHER_TYPE_IPV6: u16 = 0x86dd;

pub const IP_PROTO_HOP_BY_HOP: u8 = 0;
pub const IP_PROTO_ICMP: u8 = 1;
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;
pub const IP_PROTO_ROUTING: u8 = 43;
pub const IP_PROTO_FRAGMENT: u8 = 44;
pub const IP_PROTO_AUTH: u8 = 51;
pub const IP_PROTO_ICMPV6: u8 = 58;
pub const IP_PROTO_DEST_OPTS: u8 = 60;

/// True for the IPv6 extension headers the walk steps over: hop-by-hop options, routing,
/// fragment, authentication, destination options.
#[inline(always)]
pub const fn is_walked_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        IP_PROTO_HOP_BY_HOP
            | IP_PROTO_ROUTING
            | IP_PROTO_FRAGMENT
            | IP_PROTO_AUTH
            | IP_PROTO_DEST_OPTS
    )
}

/// True for the IPv6 extension headers the walk does not step over (mobility 135, HIP 139,
/// shim6 140, experimental 253 and 254): a packet that reaches one is `Transport::Unparsed`.
#[inline(always)]
pub const fn is_unwalked_extension(next_header: u8) -> bool {
    matches!(next_header, 135 | 139 | 140 | 253 | 254)
}

/// The protocol layer at which a frame stopped making sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Ethernet,
    Vlan,
    Arp,
    Ipv4,
    Ipv6,
    Ipv6Extension,
    Tcp,
    Udp,
    Icmpv4,
    Icmpv6,
    /// A layer we do not otherwise name.
    Other,
}

/// Why a frame is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// A header or a length field runs past the end of the frame (or of the IP packet).
    Truncated(Layer),
    /// A header field holds a value that cannot be right (IPv4 IHL < 5, wrong IP version, a TCP
    /// data offset below 5, hop-by-hop options after the first extension header, an
    /// authentication header of length 0, ICMP in IPv6 or ICMPv6 in IPv4, ...).
    BadHeader(Layer),
    /// Two length fields disagree (UDP length against the IP payload length).
    LengthMismatch(Layer),
    /// The IPv4 header checksum is wrong.
    BadChecksum(Layer),
    /// A fragment that could hide or overwrite a header (RFC 1858, RFC 3128, RFC 7112): a first
    /// fragment too short for its extension headers (`Ipv6Extension`) or its transport header
    /// (`Tcp`, `Udp`, `Icmpv4`, `Icmpv6`), or a TCP later fragment at offset 1 or 2 (`Tcp`).
    Fragment(Layer),
}

impl core::fmt::Display for Malformed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Malformed::Truncated(l) => write!(f, "truncated {l:?} header or payload"),
            Malformed::BadHeader(l) => write!(f, "invalid {l:?} header field"),
            Malformed::LengthMismatch(l) => write!(f, "{l:?} length disagrees with the frame"),
            Malformed::BadChecksum(l) => write!(f, "bad {l:?} checksum"),
            Malformed::Fragment(l) => {
                write!(f, "fragment that could hide or overwrite the {l:?} header")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Malformed {}

/// The network layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// ARP (any hardware/protocol type; the responder checks for Ethernet/IPv4 itself).
    Arp,
    Ipv4,
    Ipv6 {
        /// A routing extension header was walked.
        routing_header: bool,
    },
    /// An ether type we do not parse (a tag beyond the third included).
    Other {
        ether_type: u16,
    },
}

/// The fragment kind of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    /// A whole datagram (an IPv6 atomic fragment, offset 0 without M, included: RFC 6946).
    /// Also the kind of every non-IP frame.
    None,
    /// Offset 0 with more fragments to come: carries the transport header.
    First,
    /// Offset above 0: fragment data only, no transport header.
    Later,
}

impl Frag {
    /// The kind as the XDP program and its maps number it (`abi::frag`: 0, 1, 2).
    pub const fn abi(self) -> u32 {
        match self {
            Frag::None => crate::abi::frag::NONE,
            Frag::First => crate::abi::frag::FIRST,
            Frag::Later => crate::abi::frag::LATER,
        }
    }
}

/// The transport layer of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// No transport: the frame is not IP.
    None,
    /// A later fragment (`Frag::Later`): no transport header is read. A first fragment carries
    /// its parsed transport instead, like a whole datagram.
    Fragment,
    /// IPv6 whose transport header cannot be reached: more than [`MAX_IPV6_EXT_HEADERS`]
    /// extension headers, an extension header the walk does not step over, or a later
    /// fragment whose next header is an extension header.
    Unparsed,
    Tcp {
        /// The flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ...).
        flags: u8,
    },
    Udp,
    Icmpv4 {
        icmp_type: u8,
        code: u8,
    },
    Icmpv6 {
        icmp_type: u8,
        code: u8,
    },
    /// Any other IP protocol (IGMP, GRE, ESP, no next header, ...).
    Other {
        protocol: u8,
    },
}

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
}

/// What [`parse`] learned about a frame. Offsets are from the start of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Number of VLAN tags stepped over: 0 to [`MAX_VLAN_TAGS`].
    pub vlan_tags: u8,
    /// Where the network header starts (after the Ethernet header and the tags).
    pub l3_offset: u16,
    pub net: Net,
    /// Where the transport header starts, after any IPv6 extension headers. For a later
    /// fragment, where its data starts; for `Transport::Unparsed`, where the header the walk
    /// stopped at starts; for non-IP frames, the frame length.
    pub l4_offset: u16,
    pub transport: Transport,
    /// End of the IP packet as its length field says (the frame may carry Ethernet padding
    /// beyond it). For non-IP frames, the frame length.
    pub ip_end: u16,
    /// The fragment kind; `Frag::None` for non-IP frames. For `Transport::Unparsed`, the kind
    /// the walk had seen when it stopped.
    pub frag: Frag,
    /// The IP protocol number: IPv4's protocol field, IPv6's last next header (for
    /// `Transport::Unparsed`, the one the walk stopped at). 0 for non-IP frames.
    pub protocol: u8,
}

impl Headers {
    #[inline]
    pub fn is_ip(&self) -> bool {
        matches!(self.net, Net::Ipv4 | Net::Ipv6 { .. })
    }
}

/// The result of the network layer: where the transport region is and what it holds.
struct Ip<'a> {
    net: Net,
    protocol: u8,
    frag: Frag,
    /// For `Frag::Later`: the fragment offset in 8-byte units.
    frag_offset: u16,
    /// The transport region: from the end of the IP headers to the end of the IP packet.
    l4: &'a [u8],
    /// The IPv6 walk stopped before the transport header.
    unparsed: bool,
}

/// Parses an Ethernet II frame (without FCS). See the module docs for the classes and the
/// guarantee.
///
/// The commonest frame (untagged IPv4 without options, not a fragment, UDP or TCP, every check
/// passing) is taken whole by [`plain_ipv4`]; everything else, and every such frame a check
/// fails on, by [`parse_general`], which also names what failed.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Headers, Malformed> {
    match plain_ipv4(frame) {
        Some(h) => Ok(h),
        None => parse_general(frame),
    }
}

/// Untagged IPv4 without options carrying UDP or TCP, not a fragment, read at fixed offsets
/// in one view: `Some` only when every check of [`parse_general`] passes, with the headers it
/// gives (`packet::selfcheck` holds the two to that on every frame it sees, the fuzzer's
/// included); `None` for anything else, which the general path then parses. The XDP program
/// has the same fast path (`plain_ipv4` there).
#[inline(always)]
fn plain_ipv4(frame: &[u8]) -> Option<Headers> {
    const L3: usize = ETHERNET_HEADER_LEN;
    const L4: usize = L3 + 20;
    // Ethernet, the IPv4 header and 8 bytes of the transport header.
    let h: &[u8; L4 + 8] = frame.get(..L4 + 8)?.try_into().ok()?;
    // Ether type IPv4, version 4 with IHL 5, MF clear and offset 0 (the DF and reserved bits
    // do not make a fragment).
    if h[12..14] != [0x08, 0x00] || h[L3] != 0x45 || h[L3 + 6] & 0x3f != 0 || h[L3 + 7] != 0 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]));
    // The general path refuses frames over u16::MAX bytes before anything else.
    if frame.len() > usize::from(u16::MAX) || L3 + total_len > frame.len() {
        return None;
    }
    if !checksum::verify_header(&h[L3..L4]) {
        return None;
    }
    let protocol = h[L3 + 9];
    let l4_len = total_len.checked_sub(20)?;
    let transport = match protocol {
        // The UDP length covers exactly the transport region.
        IP_PROTO_UDP
            if l4_len >= 8 && usize::from(u16::from_be_bytes([h[L4 + 4], h[L4 + 5]])) == l4_len =>
        {
            Transport::Udp
        }
        IP_PROTO_TCP if l4_len >= 20 => {
            // Data offset >= 5 and the whole header (options included) inside the packet;
            // total_len >= 40 puts bytes L4 + 12 and L4 + 13 inside the frame.
            let data_offset = usize::from(frame[L4 + 12] >> 4) * 4;
            if data_offset < 20 || data_offset > l4_len {
                return None;
            }
            Transport::Tcp {
                flags: frame[L4 + 13],
            }
        }
        _ => return None,
    };
    Some(Headers {
        vlan_tags: 0,
        l3_offset: L3 as u16,
        net: Net::Ipv4,
        l4_offset: L4 as u16,
        transport,
        ip_end: (L3 + total_len) as u16,
        frag: Frag::None,
        protocol,
    })
}

/// [`parse`] without its fast path: every frame, every check, in the specification's order.
///
/// Each layer is sliced with etherparse's per-header slice types (`Ethernet2Slice`,
/// `SingleVlanSlice`, `Ipv4HeaderSlice`, `Ipv6HeaderSlice`, `Ipv6RawExtHeaderSlice`, ...)
/// rather than its generic `SlicedPacket`: the same zero-copy checks at a fraction of the cost
/// (no cursor state, no array of link extensions to build and copy), and full control over the
/// order of the checks, which the specification fixes.
pub(crate) fn parse_general(frame: &[u8]) -> Result<Headers, Malformed> {
    // Offsets must fit u16; no Ethernet frame, jumbo or not, comes close (and the XDP program
    // never sees one: this case is outside the specification).
    if frame.len() > usize::from(u16::MAX) {
        return Err(Malformed::BadHeader(Layer::Ethernet));
    }
    let base = frame.as_ptr() as usize;
    let offset_of = |s: &[u8]| (s.as_ptr() as usize - base) as u16;
    let frame_len = frame.len() as u16;

    // Layer 2: fewer than 14 bytes is malformed; step over up to three tags.
    let eth = Ethernet2Slice::from_slice_without_fcs(frame)
        .map_err(|_| Malformed::Truncated(Layer::Ethernet))?;
    let mut ether_type = eth.ether_type();
    let mut rest = eth.payload_slice();
    let mut vlan_tags = 0u8;
    while matches!(
        ether_type,
        EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME
    ) && vlan_tags < MAX_VLAN_TAGS
    {
        let tag =
            SingleVlanSlice::from_slice(rest).map_err(|_| Malformed::Truncated(Layer::Vlan))?;
        ether_type = tag.ether_type();
        rest = tag.payload_slice();
        vlan_tags += 1;
    }
    let l3_offset = offset_of(rest);
    let not_ip = |net| Headers {
        vlan_tags,
        l3_offset,
        net,
        l4_offset: frame_len,
        transport: Transport::None,
        ip_end: frame_len,
        frag: Frag::None,
        protocol: 0,
    };

    let ip = match ether_type {
        EtherType::IPV4 => ipv4(rest)?,
        EtherType::IPV6 => ipv6(rest)?,
        EtherType::ARP => {
            // 8 bytes, then 8 + 2 * (hlen + plen): exactly ArpPacketSlice's check.
            ArpPacketSlice::from_slice(rest).map_err(|_| Malformed::Truncated(Layer::Arp))?;
            return Ok(not_ip(Net::Arp));
        }
        // An ether type we do not parse, or a tag beyond the third.
        other => {
            return Ok(not_ip(Net::Other {
                ether_type: other.0,
            }));
        }
    };

    let l4_offset = offset_of(ip.l4);
    let transport = if ip.unparsed {
        Transport::Unparsed
    } else {
        transport(&ip)?
    };
    Ok(Headers {
        vlan_tags,
        l3_offset,
        net: ip.net,
        l4_offset,
        transport,
        ip_end: l4_offset + ip.l4.len() as u16,
        frag: ip.frag,
        protocol: ip.protocol,
    })
}

/// IPv4: the header slice checks 20 bytes, the version, IHL >= 5 and that IHL*4 bytes are
/// present; the lengths and the checksum are ours to check.
#[inline(always)]
fn ipv4(rest: &[u8]) -> Result<Ip<'_>, Malformed> {
    let header = Ipv4HeaderSlice::from_slice(rest).map_err(|e| match e {
        ipv4_err::HeaderSliceError::Len(_) => Malformed::Truncated(Layer::Ipv4),
        ipv4_err::HeaderSliceError::Content(_) => Malformed::BadHeader(Layer::Ipv4),
    })?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len {
        return Err(Malformed::BadHeader(Layer::Ipv4));
    }
    // Ethernet padding after the packet is allowed.
    let packet = rest
        .get(..total_len)
        .ok_or(Malformed::Truncated(Layer::Ipv4))?;
    if !checksum::verify_header(header.slice()) {
        return Err(Malformed::BadChecksum(Layer::Ipv4));
    }
    // Offset (low 13 bits) and MF (0x2000) from the flags/offset word, tested once for the
    // common case of neither.
    let word = u16::from_be_bytes([header.slice()[6], header.slice()[7]]);
    let frag_offset = word & 0x1fff;
    let frag = if word & 0x3fff == 0 {
        Frag::None
    } else if frag_offset > 0 {
        Frag::Later
    } else {
        Frag::First
    };
    Ok(Ip {
        net: Net::Ipv4,
        protocol: header.protocol().0,
        frag,
        frag_offset,
        l4: packet.get(header_len..).unwrap_or_default(),
        unparsed: false,
    })
}

/// IPv6: the fixed header, then the extension-header walk of the specification.
#[inline(always)]
fn ipv6(rest: &[u8]) -> Result<Ip<'_>, Malformed> {
    let header = Ipv6HeaderSlice::from_slice(rest).map_err(|e| match e {
        ipv6_err::HeaderSliceError::Len(_) => Malformed::Truncated(Layer::Ipv6),
        ipv6_err::HeaderSliceError::Content(_) => Malformed::BadHeader(Layer::Ipv6),
    })?;
    // The payload is exactly payload_length bytes: 0 is an empty payload (no jumbograms on
    // Ethernet), and anything after it is Ethernet padding.
    let payload_len = usize::from(header.payload_length());
    let payload = rest
        .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + payload_len)
        .ok_or(Malformed::Truncated(Layer::Ipv6))?;
    let next = header.next_header().0;
    if is_walked_extension(next) || is_unwalked_extension(next) {
        return ipv6_extensions(payload, next);
    }
    // No extension headers (nearly every packet): the payload is the transport region.
    Ok(Ip {
        net: Net::Ipv6 {
            routing_header: false,
        },
        protocol: next,
        frag: Frag::None,
        frag_offset: 0,
        l4: payload,
        unparsed: false,
    })
}

/// The extension-header walk, from the first extension header (`next`) at the start of the
/// payload. Out of line, so that the common path of every family stays small.
#[inline(never)]
fn ipv6_extensions(payload: &[u8], mut next: u8) -> Result<Ip<'_>, Malformed> {
    let mut region = payload;
    let mut frag = Frag::None;
    let mut frag_offset = 0u16;
    let mut routing_header = false;
    // A header that does not fit the payload: plain truncation, or (once a first-fragment
    // header was seen) a first fragment that does not hold the whole chain (RFC 7112).
    let short = |frag: Frag| short_header(frag, Layer::Ipv6Extension);

    let mut walked = 0;
    // The walk ends with `unparsed`: true when the transport header was not reached.
    let unparsed = loop {
        if !is_walked_extension(next) {
            // 135, 139, 140, 253, 254: a header we do not walk. Anything else is the protocol.
            break is_unwalked_extension(next);
        }
        if walked == MAX_IPV6_EXT_HEADERS {
            // Still walkable after the last header we step over.
            break true;
        }
        match next {
            IP_PROTO_FRAGMENT => {
                let h = Ipv6FragmentHeaderSlice::from_slice(region).map_err(|_| short(frag))?;
                next = h.next_header().0;
                region = region.get(h.slice().len()..).unwrap_or_default();
                let offset = h.fragment_offset().value();
                if offset > 0 {
                    // A later fragment: what follows is fragment data, not headers.
                    // Its protocol is `next`, unless that is an extension header.
                    frag = Frag::Later;
                    frag_offset = offset;
                    break is_walked_extension(next) || is_unwalked_extension(next);
                }
                if h.more_fragments() {
                    frag = Frag::First;
                }
                // Offset 0 without M: an atomic fragment (RFC 6946); the kind stays as it was.
            }
            IP_PROTO_AUTH => {
                let h = IpAuthHeaderSlice::from_slice(region).map_err(|e| match e {
                    auth_err::HeaderSliceError::Len(_) => short(frag),
                    // A zero length field (RFC 4302 makes it at least 1 for IPv6).
                    auth_err::HeaderSliceError::Content(_) => {
                        Malformed::BadHeader(Layer::Ipv6Extension)
                    }
                })?;
                next = h.next_header().0;
                region = region.get(h.slice().len()..).unwrap_or_default();
            }
            // Hop-by-hop options, routing, destination options: (h[1] + 1) * 8 bytes.
            _ => {
                // Hop-by-hop options may only come first (RFC 8200, section 4.1).
                if next == IP_PROTO_HOP_BY_HOP && walked != 0 {
                    return Err(Malformed::BadHeader(Layer::Ipv6Extension));
                }
                routing_header |= next == IP_PROTO_ROUTING;
                let h = Ipv6RawExtHeaderSlice::from_slice(region).map_err(|_| short(frag))?;
                next = h.next_header().0;
                region = region.get(h.slice().len()..).unwrap_or_default();
            }
        }
        walked += 1;
    };
    Ok(Ip {
        net: Net::Ipv6 { routing_header },
        protocol: next,
        frag,
        frag_offset,
        l4: region,
        unparsed,
    })
}

/// The error for a header that does not fit in the IP packet: a first fragment that does not
/// hold it is the fragment attack of RFC 1858 / RFC 7112; otherwise it is plain truncation.
#[inline(always)]
fn short_header(frag: Frag, layer: Layer) -> Malformed {
    if frag == Frag::First {
        Malformed::Fragment(layer)
    } else {
        Malformed::Truncated(layer)
    }
}

/// The transport header, by protocol, in the transport region (both families).
#[inline(always)]
fn transport(ip: &Ip<'_>) -> Result<Transport, Malformed> {
    if ip.frag == Frag::Later {
        return later_fragment(ip.net != Net::Ipv4, ip.protocol, ip.frag_offset);
    }
    let l4 = ip.l4;
    Ok(match ip.protocol {
        IP_PROTO_UDP => {
            // UdpSlice would check the length field against the slice, which is wrong for a
            // first fragment; the header slice checks the 8 bytes only.
            let udp =
                UdpHeaderSlice::from_slice(l4).map_err(|_| short_header(ip.frag, Layer::Udp))?;
            // A whole datagram: the UDP length must cover exactly the transport region. A
            // first fragment's UDP length covers the whole datagram and is not checked.
            let len = usize::from(udp.length());
            if ip.frag == Frag::None && len != l4.len() {
                return Err(if len > l4.len() {
                    Malformed::Truncated(Layer::Udp)
                } else {
                    Malformed::LengthMismatch(Layer::Udp)
                });
            }
            Transport::Udp
        }
        IP_PROTO_TCP => {
            // 20 bytes, data offset >= 5, data offset * 4 bytes present.
            let tcp = TcpSlice::from_slice(l4).map_err(|e| match e {
                tcp_err::HeaderSliceError::Len(_) => short_header(ip.frag, Layer::Tcp),
                tcp_err::HeaderSliceError::Content(_) => Malformed::BadHeader(Layer::Tcp),
            })?;
            Transport::Tcp {
                flags: tcp.header_slice()[13],
            }
        }
        // ICMP in IPv6 or ICMPv6 in IPv4 is nonsense (and a reply to it would be too), whatever
        // the fragment kind.
        IP_PROTO_ICMP if ip.net != Net::Ipv4 => return Err(Malformed::BadHeader(Layer::Icmpv4)),
        IP_PROTO_ICMPV6 if ip.net == Net::Ipv4 => return Err(Malformed::BadHeader(Layer::Icmpv6)),
        IP_PROTO_ICMP => {
            // 8 bytes. Not Icmpv4Slice: it also wants a timestamp message (type 13/14, code
            // 0) to be exactly 20 bytes, which the specification does not ask for.
            let Some(&[icmp_type, code, ..]) = l4.get(..8) else {
                return Err(short_header(ip.frag, Layer::Icmpv4));
            };
            Transport::Icmpv4 { icmp_type, code }
        }
        IP_PROTO_ICMPV6 => {
            let icmp =
                Icmpv6Slice::from_slice(l4).map_err(|_| short_header(ip.frag, Layer::Icmpv6))?;
            Transport::Icmpv6 {
                icmp_type: icmp.type_u8(),
                code: icmp.code_u8(),
            }
        }
        protocol => Transport::Other { protocol },
    })
}

/// A later fragment (offset `frag_offset`, in 8-byte units): no transport header is read.
#[inline(never)]
fn later_fragment(v6: bool, protocol: u8, frag_offset: u16) -> Result<Transport, Malformed> {
    match protocol {
        IP_PROTO_ICMP if v6 => Err(Malformed::BadHeader(Layer::Icmpv4)),
        IP_PROTO_ICMPV6 if !v6 => Err(Malformed::BadHeader(Layer::Icmpv6)),
        // A TCP fragment starting inside the first 20 bytes would overwrite the header the
        // first fragment showed (RFC 1858, RFC 3128).
        IP_PROTO_TCP if usize::from(frag_offset) * 8 < TCP_MIN_HEADER_LEN => {
            Err(Malformed::Fragment(Layer::Tcp))
        }
        _ => Ok(Transport::Fragment),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fixtures::*;

    /// Inserts a VLAN tag (TPID, VID) after the MAC addresses of `frame`.
    pub(crate) fn with_vlan(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
        let mut v = frame[..12].to_vec();
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&vid.to_be_bytes());
        v.extend_from_slice(&frame[12..]);
        v
    }

    /// Recomputes the IPv4 header checksum of an untagged frame after a test edits the header.
    pub(crate) fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let c = crate::checksum::checksum(&frame[l3..l3 + ihl]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }

    /// Sets the flags/fragment-offset word of an untagged IPv4 frame and fixes the checksum.
    pub(crate) fn with_ipv4_frag_word(frame: &[u8], word: u16) -> Vec<u8> {
        let mut f = frame.to_vec();
        f[20..22].copy_from_slice(&word.to_be_bytes());
        fix_ipv4_checksum(&mut f, 14);
        f
    }

    // Frames for the rules of `spec/classifier.md`, written out byte by byte. Addresses are
    // 198.18.0.1 -> 198.18.0.2 and 2001:db8::1 -> 2001:db8::2, MACs 02::01 -> 02::02.

    /// IPv4 first fragment (MF, offset 0) of a UDP datagram 40000 -> 7 whose UDP length (100)
    /// covers the whole datagram, not this 16-byte fragment.
    pub(crate) const V4_UDP_FIRST_FRAGMENT: [u8; 50] = [
        // Ethernet
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: IHL 5, total length 36, id 0x1234, MF + offset 0, TTL 64, UDP, checksum
        0x45, 0x00, 0x00, 0x24, 0x12, 0x34, 0x20, 0x00, 0x40, 0x11, 0xbc, 0x6d, 0xc6, 0x12, 0x00,
        0x01, 0xc6, 0x12, 0x00, 0x02, // UDP: 40000 -> 7, length 100, checksum
        0x9c, 0x40, 0x00, 0x07, 0x00, 0x64, 0x12, 0x34,
        // The first 8 bytes of the payload
        0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    ];

    /// The last fragment of that datagram (offset 3 = 24 bytes, no MF). Its data happens to
    /// look like a UDP header with a bad length; it must not be read as one.
    pub(crate) const V4_UDP_LATER_FRAGMENT: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: total length 28, id 0x1234, offset 3, UDP
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x00, 0x03, 0x40, 0x11, 0xdc, 0x72, 0xc6, 0x12, 0x00,
        0x01, 0xc6, 0x12, 0x00, 0x02, // Fragment data
        0x00, 0x35, 0x00, 0x35, 0xff, 0xff, 0x00, 0x00,
    ];

    /// A TCP fragment at offset 1 (8 bytes) with MF: it would overwrite the TCP header's
    /// sequence number, flags and window (RFC 1858's overlapping fragment attack).
    pub(crate) const V4_TCP_FRAGMENT_OFFSET_1: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: total length 28, id 0x4321, MF + offset 1, TCP
        0x45, 0x00, 0x00, 0x1c, 0x43, 0x21, 0x20, 0x01, 0x40, 0x06, 0x8b, 0x92, 0xc6, 0x12, 0x00,
        0x01, 0xc6, 0x12, 0x00, 0x02,
        // Bytes 8..16 of a TCP header: ack number, data offset 5, SYN, window
        0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff, 0xff,
    ];

    /// A tiny first fragment: MF, offset 0, and only 8 bytes of the TCP header (ports and
    /// sequence number; the flags would come in the next fragment).
    pub(crate) const V4_TCP_TINY_FIRST_FRAGMENT: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: total length 28, id 0x4321, MF + offset 0, TCP
        0x45, 0x00, 0x00, 0x1c, 0x43, 0x21, 0x20, 0x00, 0x40, 0x06, 0x8b, 0x93, 0xc6, 0x12, 0x00,
        0x01, 0xc6, 0x12, 0x00, 0x02, // TCP: 40000 -> 80, sequence number
        0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01,
    ];

    /// A first fragment holding the whole 20-byte TCP header (a SYN 40000 -> 80).
    pub(crate) const V4_TCP_FIRST_FRAGMENT: [u8; 54] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: total length 40, id 0x4321, MF + offset 0, TCP
        0x45, 0x00, 0x00, 0x28, 0x43, 0x21, 0x20, 0x00, 0x40, 0x06, 0x8b, 0x87, 0xc6, 0x12, 0x00,
        0x01, 0xc6, 0x12, 0x00, 0x02,
        // TCP: 40000 -> 80, seq 1, ack 0, data offset 5, SYN, window 0xffff, checksum, urgent
        0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff,
        0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    /// An ICMP timestamp request (type 13, code 0) of 8 bytes: the specification asks for 8
    /// bytes of ICMP header, nothing more (etherparse's Icmpv4Slice would want 20).
    pub(crate) const V4_ICMP_SHORT_TIMESTAMP: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: total length 28, id 1, ICMP
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0xee, 0xb8, 0xc6, 0x12, 0x00,
        0x01, 0xc6, 0x12, 0x00, 0x02, // ICMP: type 13, code 0, checksum, id, seq
        0x0d, 0x00, 0xf2, 0xfe, 0x00, 0x01, 0x00, 0x00,
    ];

    /// Ethernet and the IPv6 header up to (not including) the payload length.
    const V6_START: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd,
        // version 6, traffic class 0, flow label 0
        0x60, 0x00, 0x00, 0x00,
    ];
    /// Hop limit 64, 2001:db8::1 -> 2001:db8::2 (after the payload length and next header).
    const V6_ADDRS: [u8; 33] = [
        0x40, // hop limit
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, //
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02,
    ];

    /// An IPv6 frame: the fixed header with `next_header`, then `payload` (its length is the
    /// payload length).
    pub(crate) fn ipv6(next_header: u8, payload: &[&[u8]]) -> Vec<u8> {
        let payload: Vec<u8> = payload.concat();
        let mut f = V6_START.to_vec();
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.push(next_header);
        f.extend_from_slice(&V6_ADDRS);
        f.extend_from_slice(&payload);
        f
    }

    /// A destination options header (next header, length 0, a 4-byte PadN option).
    pub(crate) const fn dest_opts(next: u8) -> [u8; 8] {
        [next, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00]
    }
    /// A fragment header: next header, reserved, offset (8-byte units) << 3 | M, id.
    pub(crate) const fn frag_header(next: u8, offset: u16, more: bool) -> [u8; 8] {
        let w = (offset << 3) | more as u16;
        [next, 0x00, (w >> 8) as u8, w as u8, 0x00, 0x00, 0x12, 0x34]
    }
    /// UDP 40001 -> 7, length 16, checksum, 8 bytes of payload.
    pub(crate) const UDP_16: [u8; 16] = [
        0x9c, 0x41, 0x00, 0x07, 0x00, 0x10, 0x56, 0x78, //
        0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    ];
    /// The first 16 bytes of a 100-byte UDP datagram 40001 -> 7.
    pub(crate) const UDP_OF_100: [u8; 16] = [
        0x9c, 0x41, 0x00, 0x07, 0x00, 0x64, 0x56, 0x78, //
        0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    ];
    /// An ICMP echo request header (the ICMPv4 kind).
    pub(crate) const ICMP_ECHO_8: [u8; 8] = [0x08, 0x00, 0xf7, 0xfe, 0x00, 0x01, 0x00, 0x00];

    /// IPv6 with `n` destination options headers, then UDP 40001 -> 7.
    pub(crate) fn v6_dest_opts_chain(n: usize) -> Vec<u8> {
        let mut parts: Vec<[u8; 8]> = (1..n).map(|_| dest_opts(IP_PROTO_DEST_OPTS)).collect();
        if n > 0 {
            parts.push(dest_opts(IP_PROTO_UDP));
        }
        let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).chain([&UDP_16[..]]).collect();
        ipv6(
            if n > 0 {
                IP_PROTO_DEST_OPTS
            } else {
                IP_PROTO_UDP
            },
            &parts,
        )
    }

    #[test]
    fn udp_over_ipv4() {
        let h = parse(&UDP4_ECHO_REQUEST).unwrap();
        assert_eq!(
            h,
            Headers {
                vlan_tags: 0,
                l3_offset: 14,
                net: Net::Ipv4,
                l4_offset: 34,
                transport: Transport::Udp,
                ip_end: 53,
                frag: Frag::None,
                protocol: IP_PROTO_UDP,
            }
        );
    }

    #[test]
    fn udp_over_ipv6() {
        let h = parse(&UDP6_ECHO_REQUEST).unwrap();
        assert_eq!(
            h.net,
            Net::Ipv6 {
                routing_header: false
            }
        );
        assert_eq!((h.l3_offset, h.l4_offset, h.ip_end), (14, 54, 76));
        assert_eq!(
            (h.transport, h.frag, h.protocol),
            (Transport::Udp, Frag::None, 17)
        );
    }

    #[test]
    fn icmp_echo_requests() {
        let h = parse(&ICMPV4_ECHO_REQUEST).unwrap();
        assert_eq!(
            h.transport,
            Transport::Icmpv4 {
                icmp_type: 8,
                code: 0
            }
        );
        assert_eq!(usize::from(h.ip_end), ICMPV4_ECHO_REQUEST.len());
        let h = parse(&ICMPV6_ECHO_REQUEST).unwrap();
        assert_eq!(
            h.transport,
            Transport::Icmpv6 {
                icmp_type: 128,
                code: 0
            }
        );
    }

    #[test]
    fn icmp_needs_8_bytes_whatever_the_type() {
        let h = parse(&V4_ICMP_SHORT_TIMESTAMP).unwrap();
        assert_eq!(
            h.transport,
            Transport::Icmpv4 {
                icmp_type: 13,
                code: 0
            }
        );
    }

    #[test]
    fn tcp_syn_with_options() {
        let h = parse(&TCP_SYN).unwrap();
        assert_eq!(
            h.transport,
            Transport::Tcp {
                flags: tcp_flags::SYN
            }
        );
        assert_eq!((h.l4_offset, h.protocol), (34, IP_PROTO_TCP));
    }

    #[test]
    fn arp_request() {
        let h = parse(&ARP_REQUEST).unwrap();
        assert_eq!(h.net, Net::Arp);
        assert_eq!(
            (h.transport, h.frag, h.protocol),
            (Transport::None, Frag::None, 0)
        );
        assert_eq!(h.l3_offset, 14);
    }

    #[test]
    fn ipv6_hop_by_hop_extension_is_skipped() {
        // MLDv2: IPv6, hop-by-hop options (8 bytes), then ICMPv6 type 143.
        let h = parse(&MLD_REPORT).unwrap();
        assert_eq!(h.l4_offset, 14 + 40 + 8);
        assert_eq!(
            h.transport,
            Transport::Icmpv6 {
                icmp_type: 143,
                code: 0
            }
        );
        assert_eq!(h.protocol, IP_PROTO_ICMPV6);
    }

    #[test]
    fn one_and_two_vlan_tags() {
        let one = with_vlan(&UDP4_ECHO_REQUEST, 0x8100, 100);
        let h = parse(&one).unwrap();
        assert_eq!((h.vlan_tags, h.l3_offset, h.l4_offset), (1, 18, 38));
        assert_eq!(h.transport, Transport::Udp);

        // QinQ: 802.1ad outer tag, 802.1Q inner tag.
        let two = with_vlan(&one, 0x88a8, 10);
        let h = parse(&two).unwrap();
        assert_eq!((h.vlan_tags, h.l3_offset, h.l4_offset), (2, 22, 42));
        assert_eq!(h.net, Net::Ipv4);

        let arp = with_vlan(&with_vlan(&ARP_REQUEST, 0x8100, 5), 0x88a8, 6);
        assert_eq!(parse(&arp).unwrap().net, Net::Arp);

        // The old QinQ TPID 0x9100 is stepped over too.
        let h = parse(&with_vlan(&UDP4_ECHO_REQUEST, 0x9100, 1)).unwrap();
        assert_eq!((h.vlan_tags, h.transport), (1, Transport::Udp));
    }

    #[test]
    fn four_vlan_tags_are_other_not_malformed() {
        let three = with_vlan(
            &with_vlan(&with_vlan(&UDP4_ECHO_REQUEST, 0x8100, 1), 0x8100, 2),
            0x88a8,
            3,
        );
        let h = parse(&three).unwrap();
        assert_eq!((h.vlan_tags, h.l3_offset, h.net), (3, 26, Net::Ipv4));
        let four = with_vlan(&three, 0x88a8, 4);
        let h = parse(&four).unwrap();
        // The third tag's ether type is a TPID again, and just an ether type now.
        assert_eq!(h.net, Net::Other { ether_type: 0x8100 });
        assert_eq!(h.transport, Transport::None);
        // Not even complete: the fourth tag is never read.
        assert!(parse(&four[..30]).is_ok());
    }

    #[test]
    fn unknown_ether_type_is_other() {
        let mut f = UDP4_ECHO_REQUEST;
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        let h = parse(&f).unwrap();
        assert_eq!(h.net, Net::Other { ether_type: 0x88b5 });
        assert!(!h.is_ip());
    }

    #[test]
    fn ethernet_padding_is_not_part_of_the_ip_packet() {
        let mut padded = UDP4_ECHO_REQUEST.to_vec();
        padded.resize(60, 0);
        let h = parse(&padded).unwrap();
        assert_eq!(h.ip_end, 53);
        assert_eq!(h.transport, Transport::Udp);
        let mut padded = UDP6_ECHO_REQUEST.to_vec();
        padded.extend_from_slice(&[0xff; 8]);
        let h = parse(&padded).unwrap();
        assert_eq!((h.ip_end, h.transport), (76, Transport::Udp));
    }

    // IPv4 fragments.

    #[test]
    fn ipv4_first_fragment_carries_its_udp_header() {
        let h = parse(&V4_UDP_FIRST_FRAGMENT).unwrap();
        assert_eq!(
            h,
            Headers {
                vlan_tags: 0,
                l3_offset: 14,
                net: Net::Ipv4,
                l4_offset: 34,
                transport: Transport::Udp,
                ip_end: 50,
                frag: Frag::First,
                protocol: IP_PROTO_UDP,
            }
        );
    }

    #[test]
    fn ipv4_later_fragment_reads_no_transport_header() {
        let h = parse(&V4_UDP_LATER_FRAGMENT).unwrap();
        assert_eq!(
            (h.transport, h.frag, h.protocol, h.l4_offset, h.ip_end),
            (Transport::Fragment, Frag::Later, IP_PROTO_UDP, 34, 42)
        );
        // A middle fragment (MF and an offset) is a later fragment too.
        let middle = with_ipv4_frag_word(&V4_UDP_LATER_FRAGMENT, 0x2003);
        assert_eq!(parse(&middle).unwrap().frag, Frag::Later);
    }

    #[test]
    fn ipv4_tcp_later_fragment_at_offset_1_or_2_is_malformed_3_is_fine() {
        assert_eq!(
            parse(&V4_TCP_FRAGMENT_OFFSET_1),
            Err(Malformed::Fragment(Layer::Tcp))
        );
        let two = with_ipv4_frag_word(&V4_TCP_FRAGMENT_OFFSET_1, 0x2002);
        assert_eq!(parse(&two), Err(Malformed::Fragment(Layer::Tcp)));
        let three = with_ipv4_frag_word(&V4_TCP_FRAGMENT_OFFSET_1, 0x2003);
        let h = parse(&three).unwrap();
        assert_eq!((h.transport, h.frag), (Transport::Fragment, Frag::Later));
        // Only TCP: a UDP fragment at offset 1 is an ordinary later fragment.
        let mut udp = V4_TCP_FRAGMENT_OFFSET_1;
        udp[23] = IP_PROTO_UDP;
        fix_ipv4_checksum(&mut udp, 14);
        assert_eq!(parse(&udp).unwrap().transport, Transport::Fragment);
    }

    #[test]
    fn ipv4_tiny_tcp_first_fragment_is_malformed() {
        assert_eq!(
            parse(&V4_TCP_TINY_FIRST_FRAGMENT),
            Err(Malformed::Fragment(Layer::Tcp))
        );
        // The same bytes unfragmented are a plain truncated TCP header.
        let whole = with_ipv4_frag_word(&V4_TCP_TINY_FIRST_FRAGMENT, 0x0000);
        assert_eq!(parse(&whole), Err(Malformed::Truncated(Layer::Tcp)));
    }

    #[test]
    fn ipv4_tcp_first_fragment_with_the_whole_header() {
        let h = parse(&V4_TCP_FIRST_FRAGMENT).unwrap();
        assert_eq!(
            (h.transport, h.frag, h.l4_offset),
            (
                Transport::Tcp {
                    flags: tcp_flags::SYN
                },
                Frag::First,
                34
            )
        );
    }

    #[test]
    fn udp_length_is_checked_for_whole_datagrams_only() {
        // The first fragment's UDP length (100) covers the datagram: fine.
        assert!(parse(&V4_UDP_FIRST_FRAGMENT).is_ok());
        // The same bytes as a whole datagram: the UDP length runs past the packet.
        let whole = with_ipv4_frag_word(&V4_UDP_FIRST_FRAGMENT, 0x0000);
        assert_eq!(parse(&whole), Err(Malformed::Truncated(Layer::Udp)));
        // Don't-fragment changes nothing.
        let df = with_ipv4_frag_word(&V4_UDP_FIRST_FRAGMENT, 0x4000);
        assert_eq!(parse(&df), Err(Malformed::Truncated(Layer::Udp)));
    }

    #[test]
    fn udp_first_fragment_shorter_than_the_udp_header_is_malformed() {
        // Total length 24: 4 bytes of UDP header.
        let mut f = V4_UDP_FIRST_FRAGMENT[..14 + 24].to_vec();
        f[16..18].copy_from_slice(&24u16.to_be_bytes());
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f), Err(Malformed::Fragment(Layer::Udp)));
    }

    // IPv6 extension headers and fragments.

    #[test]
    fn ipv6_first_fragment_carries_its_udp_header() {
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[&frag_header(IP_PROTO_UDP, 0, true), &UDP_OF_100],
        );
        let h = parse(&f).unwrap();
        assert_eq!(
            h,
            Headers {
                vlan_tags: 0,
                l3_offset: 14,
                net: Net::Ipv6 {
                    routing_header: false
                },
                l4_offset: 14 + 40 + 8,
                transport: Transport::Udp,
                ip_end: 14 + 40 + 8 + 16,
                frag: Frag::First,
                protocol: IP_PROTO_UDP,
            }
        );
    }

    #[test]
    fn ipv6_later_fragment_does_not_parse_its_data() {
        // Fragment data that looks like a destination options header and a UDP header with a
        // wrong length: not headers.
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[
                &frag_header(IP_PROTO_UDP, 3, false),
                &dest_opts(0),
                &[0xff; 8],
            ],
        );
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.transport, h.frag, h.protocol, h.l4_offset),
            (Transport::Fragment, Frag::Later, IP_PROTO_UDP, 14 + 40 + 8)
        );
        // With no data at all, still fine.
        let f = ipv6(IP_PROTO_FRAGMENT, &[&frag_header(IP_PROTO_UDP, 3, true)]);
        assert_eq!(parse(&f).unwrap().transport, Transport::Fragment);
    }

    #[test]
    fn ipv6_atomic_fragment_is_a_whole_datagram() {
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[&frag_header(IP_PROTO_UDP, 0, false), &UDP_16],
        );
        let h = parse(&f).unwrap();
        assert_eq!((h.transport, h.frag), (Transport::Udp, Frag::None));
        // A whole datagram: the UDP length is checked.
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[&frag_header(IP_PROTO_UDP, 0, false), &UDP_OF_100],
        );
        assert_eq!(parse(&f), Err(Malformed::Truncated(Layer::Udp)));
        // An atomic fragment header after a first-fragment header leaves the kind first.
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[
                &frag_header(IP_PROTO_FRAGMENT, 0, true),
                &frag_header(IP_PROTO_UDP, 0, false),
                &UDP_OF_100,
            ],
        );
        assert_eq!(parse(&f).unwrap().frag, Frag::First);
    }

    #[test]
    fn ipv6_tcp_later_fragment_at_offset_1_is_malformed() {
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[&frag_header(IP_PROTO_TCP, 1, true), &[0; 8]],
        );
        assert_eq!(parse(&f), Err(Malformed::Fragment(Layer::Tcp)));
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[&frag_header(IP_PROTO_TCP, 3, true), &[0; 8]],
        );
        assert_eq!(parse(&f).unwrap().transport, Transport::Fragment);
    }

    #[test]
    fn ipv6_eight_extension_headers_are_walked_nine_are_unparsed() {
        for n in [0, 1, 7, 8] {
            let f = v6_dest_opts_chain(n);
            let h = parse(&f).unwrap();
            assert_eq!(
                (h.transport, h.protocol, usize::from(h.l4_offset)),
                (Transport::Udp, IP_PROTO_UDP, 14 + 40 + 8 * n),
                "{n} headers"
            );
        }
        let f = v6_dest_opts_chain(9);
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.transport, h.protocol, usize::from(h.l4_offset)),
            (Transport::Unparsed, IP_PROTO_DEST_OPTS, 14 + 40 + 8 * 8)
        );
        // Even when the ninth header would be malformed: it is never read.
        let mut f = v6_dest_opts_chain(9);
        f.truncate(14 + 40 + 8 * 8);
        f[18..20].copy_from_slice(&64u16.to_be_bytes());
        assert_eq!(parse(&f).unwrap().transport, Transport::Unparsed);
    }

    #[test]
    fn ipv6_hop_by_hop_options_only_first() {
        let f = ipv6(
            IP_PROTO_DEST_OPTS,
            &[
                &dest_opts(IP_PROTO_HOP_BY_HOP),
                &dest_opts(IP_PROTO_UDP),
                &UDP_16,
            ],
        );
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Ipv6Extension)));
        let f = ipv6(IP_PROTO_HOP_BY_HOP, &[&dest_opts(IP_PROTO_UDP), &UDP_16]);
        assert_eq!(parse(&f).unwrap().transport, Transport::Udp);
        // As the ninth header, hop-by-hop is just "still walkable": unparsed, not malformed.
        let mut f = v6_dest_opts_chain(9);
        f[14 + 40 + 7 * 8] = IP_PROTO_HOP_BY_HOP;
        assert_eq!(parse(&f).unwrap().transport, Transport::Unparsed);
    }

    #[test]
    fn ipv6_authentication_header() {
        // Length field 1: (1 + 2) * 4 = 12 bytes (next header, length, reserved, SPI, sequence).
        let ah = [IP_PROTO_UDP, 0x01, 0, 0, 0, 0, 0x10, 0x00, 0, 0, 0, 0x01];
        let f = ipv6(IP_PROTO_AUTH, &[&ah, &UDP_16]);
        let h = parse(&f).unwrap();
        assert_eq!((h.transport, h.l4_offset), (Transport::Udp, 14 + 40 + 12));
        // Length field 0 is malformed.
        let zero = [IP_PROTO_UDP, 0x00, 0, 0, 0, 0, 0x10, 0x00, 0, 0, 0, 0x01];
        let f = ipv6(IP_PROTO_AUTH, &[&zero, &UDP_16]);
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Ipv6Extension)));
    }

    #[test]
    fn ipv6_extension_headers_we_do_not_walk_are_unparsed() {
        for next in [135u8, 139, 140, 253, 254] {
            let f = ipv6(next, &[&dest_opts(IP_PROTO_UDP), &UDP_16]);
            let h = parse(&f).unwrap();
            assert_eq!((h.transport, h.protocol), (Transport::Unparsed, next));
            // Also after a walked header.
            let f = ipv6(IP_PROTO_DEST_OPTS, &[&dest_opts(next), &[0; 8]]);
            assert_eq!(parse(&f).unwrap().transport, Transport::Unparsed);
        }
    }

    #[test]
    fn ipv6_later_fragment_followed_by_an_extension_header_is_unparsed() {
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[&frag_header(IP_PROTO_DEST_OPTS, 3, false), &[0xff; 8]],
        );
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.transport, h.frag, h.protocol),
            (Transport::Unparsed, Frag::Later, IP_PROTO_DEST_OPTS)
        );
    }

    #[test]
    fn ipv6_first_fragment_without_the_udp_header_is_malformed() {
        // Fragment header, destination options, then 4 of the 8 UDP header bytes (RFC 7112).
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[
                &frag_header(IP_PROTO_DEST_OPTS, 0, true),
                &dest_opts(IP_PROTO_UDP),
                &UDP_OF_100[..4],
            ],
        );
        assert_eq!(parse(&f), Err(Malformed::Fragment(Layer::Udp)));
        // The destination options header itself cut short.
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[
                &frag_header(IP_PROTO_DEST_OPTS, 0, true),
                &[IP_PROTO_UDP, 0, 1, 4],
            ],
        );
        assert_eq!(parse(&f), Err(Malformed::Fragment(Layer::Ipv6Extension)));
    }

    #[test]
    fn ipv6_payload_is_exactly_payload_length() {
        // Payload length 0: an empty payload, whatever follows in the frame.
        let mut f = ipv6(59, &[]);
        f.extend_from_slice(&UDP_16);
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.transport, h.l4_offset, h.ip_end),
            (Transport::Other { protocol: 59 }, 54, 54)
        );
        // ... so UDP with payload length 0 is truncated, even with the UDP header present.
        let mut f = ipv6(IP_PROTO_UDP, &[]);
        f.extend_from_slice(&UDP_16);
        assert_eq!(parse(&f), Err(Malformed::Truncated(Layer::Udp)));
    }

    #[test]
    fn icmp_in_ipv6_is_malformed() {
        let f = ipv6(IP_PROTO_ICMP, &[&ICMP_ECHO_8]);
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Icmpv4)));
        // In a later fragment too.
        let f = ipv6(
            IP_PROTO_FRAGMENT,
            &[&frag_header(IP_PROTO_ICMP, 3, false), &ICMP_ECHO_8],
        );
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Icmpv4)));
    }

    #[test]
    fn routing_header_is_noted() {
        let routing = [IP_PROTO_UDP, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        let f = ipv6(IP_PROTO_ROUTING, &[&routing, &UDP_16]);
        let h = parse(&f).unwrap();
        assert_eq!(
            (h.net, h.transport),
            (
                Net::Ipv6 {
                    routing_header: true
                },
                Transport::Udp
            )
        );
    }

    // One test per malformed class.

    #[test]
    fn malformed_truncated_ethernet() {
        for len in 0..14 {
            assert_eq!(
                parse(&UDP4_ECHO_REQUEST[..len]),
                Err(Malformed::Truncated(Layer::Ethernet)),
                "len {len}"
            );
        }
    }

    #[test]
    fn malformed_truncated_vlan_tag() {
        let tagged = with_vlan(&UDP4_ECHO_REQUEST, 0x8100, 1);
        assert_eq!(parse(&tagged[..16]), Err(Malformed::Truncated(Layer::Vlan)));
    }

    #[test]
    fn malformed_truncated_arp() {
        assert_eq!(
            parse(&ARP_REQUEST[..30]),
            Err(Malformed::Truncated(Layer::Arp))
        );
        // Fewer than 8 bytes.
        assert_eq!(
            parse(&ARP_REQUEST[..21]),
            Err(Malformed::Truncated(Layer::Arp))
        );
        // The address lengths decide: hlen 6 + plen 4 needs 28 bytes; with hlen 0 and plen 0,
        // 8 bytes are a whole ARP header.
        let mut f = ARP_REQUEST[..22].to_vec();
        f[18] = 0;
        f[19] = 0;
        assert_eq!(parse(&f).unwrap().net, Net::Arp);
        assert!(parse(&ARP_REQUEST[..41]).is_err());
    }

    #[test]
    fn malformed_every_truncation_of_every_fixture() {
        // Cutting a frame anywhere inside its headers or payload is either malformed or (for
        // cuts in Ethernet padding, of which these fixtures have none) fine; it never panics.
        for frame in REQUESTS {
            for len in 0..frame.len() {
                assert!(
                    parse(&frame[..len]).is_err(),
                    "{:02x?} cut at {len}",
                    &frame[..14]
                );
            }
        }
    }

    #[test]
    fn malformed_ipv4_ihl_below_5() {
        let mut f = UDP4_ECHO_REQUEST;
        f[14] = 0x44;
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Ipv4)));
    }

    #[test]
    fn malformed_ipv4_wrong_version() {
        let mut f = UDP4_ECHO_REQUEST;
        f[14] = 0x65;
        assert!(matches!(parse(&f), Err(Malformed::BadHeader(_))));
    }

    #[test]
    fn malformed_ipv6_wrong_version() {
        let mut f = UDP6_ECHO_REQUEST;
        f[14] = 0x40;
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Ipv6)));
    }

    #[test]
    fn malformed_ipv4_total_length_past_frame() {
        let mut f = UDP4_ECHO_REQUEST;
        f[16..18].copy_from_slice(&100u16.to_be_bytes());
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f), Err(Malformed::Truncated(Layer::Ipv4)));
    }

    #[test]
    fn malformed_ipv4_total_length_below_header() {
        let mut f = UDP4_ECHO_REQUEST;
        f[16..18].copy_from_slice(&10u16.to_be_bytes());
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Ipv4)));
    }

    #[test]
    fn malformed_ipv4_bad_header_checksum() {
        let mut f = UDP4_ECHO_REQUEST;
        f[24] ^= 0x01;
        assert_eq!(parse(&f), Err(Malformed::BadChecksum(Layer::Ipv4)));
        // A fragment's header checksum is checked too.
        let mut f = V4_UDP_FIRST_FRAGMENT;
        f[25] ^= 0x01;
        assert_eq!(parse(&f), Err(Malformed::BadChecksum(Layer::Ipv4)));
    }

    #[test]
    fn malformed_ipv4_options_past_total_length() {
        // IHL 15 (60-byte header) in a 39-byte packet.
        let mut f = UDP4_ECHO_REQUEST;
        f[14] = 0x4f;
        assert!(parse(&f).is_err());
    }

    #[test]
    fn malformed_ipv6_payload_length_past_frame() {
        let mut f = UDP6_ECHO_REQUEST;
        f[18..20].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(parse(&f), Err(Malformed::Truncated(Layer::Ipv6)));
    }

    #[test]
    fn malformed_ipv6_extension_header_past_payload() {
        let mut f = MLD_REPORT;
        f[55] = 10; // hop-by-hop header length: (10 + 1) * 8 bytes
        assert_eq!(parse(&f), Err(Malformed::Truncated(Layer::Ipv6Extension)));
    }

    #[test]
    fn malformed_udp_length_shorter_than_payload() {
        let mut f = UDP4_ECHO_REQUEST;
        f[38..40].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse(&f), Err(Malformed::LengthMismatch(Layer::Udp)));
    }

    #[test]
    fn malformed_udp_length_longer_than_payload() {
        let mut f = UDP4_ECHO_REQUEST;
        f[38..40].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(parse(&f), Err(Malformed::Truncated(Layer::Udp)));
    }

    #[test]
    fn malformed_udp_length_zero_or_below_header() {
        for bad in [0u16, 7] {
            let mut f = UDP4_ECHO_REQUEST;
            f[38..40].copy_from_slice(&bad.to_be_bytes());
            assert!(parse(&f).is_err(), "udp length {bad}");
        }
    }

    #[test]
    fn malformed_tcp_data_offset_below_5() {
        let mut f = TCP_SYN;
        f[46] = 0x40;
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Tcp)));
    }

    #[test]
    fn malformed_tcp_data_offset_past_end() {
        let mut f = TCP_SYN;
        f[46] = 0xf0; // 60-byte header in a 40-byte segment
        assert_eq!(parse(&f), Err(Malformed::Truncated(Layer::Tcp)));
    }

    #[test]
    fn malformed_icmp_shorter_than_its_header() {
        // An IPv4 packet of 20 + 4 bytes carrying ICMP: too short for the 8-byte ICMP header.
        let mut f = ICMPV4_ECHO_REQUEST[..14 + 24].to_vec();
        f[16..18].copy_from_slice(&24u16.to_be_bytes());
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f), Err(Malformed::Truncated(Layer::Icmpv4)));
    }

    #[test]
    fn malformed_icmpv6_over_ipv4() {
        let mut f = ICMPV4_ECHO_REQUEST;
        f[23] = IP_PROTO_ICMPV6;
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f), Err(Malformed::BadHeader(Layer::Icmpv6)));
    }

    #[test]
    fn oversized_frame_is_rejected_without_panic() {
        let big = vec![0u8; 70_000];
        assert!(parse(&big).is_err());
        // Also one that starts with a whole UDP/IPv4 packet the fast path would take.
        let mut big = UDP4_ECHO_REQUEST.to_vec();
        big.resize(70_000, 0);
        assert_eq!(parse(&big), Err(Malformed::BadHeader(Layer::Ethernet)));
    }

    /// The fast path takes the commonest frames (so it is not silently dead) and gives them
    /// what the general path does; it leaves every other kind to the general path.
    #[test]
    fn plain_ipv4_fast_path_takes_only_what_it_should() {
        for frame in [&UDP4_ECHO_REQUEST[..], &TCP_SYN[..]] {
            let fast = plain_ipv4(frame).expect("the fast path takes it");
            assert_eq!(Ok(fast), parse_general(frame));
        }
        let mut padded = UDP4_ECHO_REQUEST.to_vec();
        padded.resize(60, 0);
        assert_eq!(plain_ipv4(&padded).map(|h| h.ip_end), Some(53));
        let mut not_taken = vec![
            with_vlan(&UDP4_ECHO_REQUEST, 0x8100, 7),
            V4_UDP_FIRST_FRAGMENT.to_vec(),
            with_ipv4_frag_word(&UDP4_ECHO_REQUEST, 0x0001),
            ICMPV4_ECHO_REQUEST.to_vec(),
            UDP6_ECHO_REQUEST.to_vec(),
            ARP_REQUEST.to_vec(),
            // Truncated below the UDP header's end.
            UDP4_ECHO_REQUEST[..41].to_vec(),
        ];
        // A bad header checksum; a UDP length one short; a TCP data offset of 4.
        let mut bad = UDP4_ECHO_REQUEST.to_vec();
        bad[24] ^= 1;
        not_taken.push(bad);
        let mut bad = UDP4_ECHO_REQUEST.to_vec();
        bad[39] -= 1;
        not_taken.push(bad);
        let mut bad = TCP_SYN.to_vec();
        bad[46] = 0x40 | (bad[46] & 0x0f);
        not_taken.push(bad);
        for frame in &not_taken {
            assert_eq!(plain_ipv4(frame), None, "{frame:02x?}");
        }
        // With the DF bit (and the reserved bit) it is still a whole datagram.
        let df = with_ipv4_frag_word(&UDP4_ECHO_REQUEST, 0xc000);
        assert_eq!(Ok(plain_ipv4(&df).unwrap()), parse_general(&df));
    }

    #[test]
    fn frag_abi_numbers() {
        assert_eq!(
            [Frag::None.abi(), Frag::First.abi(), Frag::Later.abi()],
            [0, 1, 2]
        );
    }
}
