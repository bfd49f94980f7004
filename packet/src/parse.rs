//! Frame parsing: Ethernet II, up to three VLAN tags (802.1Q, 802.1ad QinQ), ARP, IPv4 (with options), IPv6 (with
//! extension headers), TCP, UDP, ICMPv4 and ICMPv6.
//!
//! [`parse`] slices the frame with etherparse's zero-copy header slices, adds the checks etherparse
//! leaves to its user (the IPv4 header checksum, the UDP length against the IP payload), and
//! returns a [`Headers`]: a small `Copy` value holding offsets and the few fields the data paths
//! decide on. It borrows nothing, so the caller can go on to rewrite the frame in place (the
//! echo responder) or count it without parsing twice.
//!
//! # Guarantee
//! For any byte slice, [`parse`] returns without panicking. When it returns `Ok(h)`, every
//! offset in `h` lies inside the frame it was given, and the header at that offset was fully
//! present: `h.l3_offset + <l3 header> <= h.ip_end <= frame.len()`, and for TCP/UDP/ICMP the L4
//! header is complete below `h.ip_end`. Code that reads headers at these offsets may index
//! without further checks, as long as the frame is the same one.

use crate::checksum;
use etherparse::err::{Layer as EpLayer, ipv4 as ipv4_err, ipv6 as ipv6_err, tcp as tcp_err};
use etherparse::{
    ArpPacketSlice, EtherType, Ethernet2Slice, Icmpv4Slice, Icmpv6Slice, IpNumber, Ipv4HeaderSlice,
    Ipv6ExtensionSlice, Ipv6Slice, SingleVlanSlice, TcpSlice, UdpSlice,
};

/// Length of an Ethernet II header without tags.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// The most VLAN tags we step over; a frame with more is `Net::Other`.
pub const MAX_VLAN_TAGS: u8 = 3;
/// Length of one 802.1Q / 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Length of an IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = 40;

pub const ETHER_TYPE_IPV4: u16 = 0x0800;
pub const ETHER_TYPE_ARP: u16 = 0x0806;
pub const ETHER_TYPE_IPV6: u16 = 0x86dd;

pub const IP_PROTO_ICMP: u8 = 1;
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;
pub const IP_PROTO_ICMPV6: u8 = 58;

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
    /// A layer we do not otherwise name (MACsec, IP authentication header, ...).
    Other,
}

/// Why a frame is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// A header or a length field runs past the end of the frame.
    Truncated(Layer),
    /// A header field holds a value that cannot be right (IPv4 IHL < 5, wrong IP version, a TCP
    /// data offset below 5, an extension header loop, ...).
    BadHeader(Layer),
    /// Two length fields disagree (UDP length against the IP payload length).
    LengthMismatch(Layer),
    /// The IPv4 header checksum is wrong.
    BadChecksum(Layer),
}

impl core::fmt::Display for Malformed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Malformed::Truncated(l) => write!(f, "truncated {l:?} header or payload"),
            Malformed::BadHeader(l) => write!(f, "invalid {l:?} header field"),
            Malformed::LengthMismatch(l) => write!(f, "{l:?} length disagrees with the frame"),
            Malformed::BadChecksum(l) => write!(f, "bad {l:?} checksum"),
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
        /// The packet carries a routing extension header.
        routing_header: bool,
    },
    /// An ether type we do not parse, or a frame with more than three VLAN tags or MACsec.
    Other {
        ether_type: u16,
    },
}

/// The transport layer of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// No transport: the frame is not IP.
    None,
    /// An IP fragment (IPv4 MF/offset, IPv6 fragment header): the payload is not parsed.
    Fragment,
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
    /// Any other IP protocol (IGMP, GRE, ESP, ...).
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
    /// Number of VLAN tags: 0 to 3 (802.1Q / 802.1ad; etherparse's limit). A frame with more
    /// is `Net::Other`.
    pub vlan_tags: u8,
    /// Where the network header starts (after the Ethernet header and the tags).
    pub l3_offset: u16,
    pub net: Net,
    /// Where the transport header starts; for non-IP frames and fragments, where the IP
    /// payload starts (or `ip_end`).
    pub l4_offset: u16,
    pub transport: Transport,
    /// End of the IP packet as its length field says (the frame may carry Ethernet padding
    /// beyond it). For non-IP frames, the frame length.
    pub ip_end: u16,
}

impl Headers {
    #[inline]
    pub fn is_ip(&self) -> bool {
        matches!(self.net, Net::Ipv4 | Net::Ipv6 { .. })
    }
}

/// Parses an Ethernet II frame (without FCS). See the module docs for the guarantee.
///
/// Each layer is sliced with etherparse's per-header slice types (`Ethernet2Slice`,
/// `SingleVlanSlice`, `Ipv4Slice`, `Ipv6Slice`, `UdpSlice`, ...) rather than its generic
/// `SlicedPacket`: the same zero-copy checks at a seventh of the cost on these machines (no
/// cursor state, no array of link extensions to build and copy).
pub fn parse(frame: &[u8]) -> Result<Headers, Malformed> {
    // Offsets must fit u16; no Ethernet frame, jumbo or not, comes close.
    if frame.len() > usize::from(u16::MAX) {
        return Err(Malformed::BadHeader(Layer::Ethernet));
    }
    let base = frame.as_ptr() as usize;
    let offset_of = |s: &[u8]| (s.as_ptr() as usize - base) as u16;
    let frame_len = frame.len() as u16;

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
    };

    let (net, ip_number, fragmented, l4) = match ether_type {
        EtherType::IPV4 => {
            // The header slice checks version, IHL >= 5 and that the header (options
            // included) is present; the lengths and the checksum are ours to check.
            let header = Ipv4HeaderSlice::from_slice(rest).map_err(|e| match e {
                ipv4_err::HeaderSliceError::Len(_) => Malformed::Truncated(Layer::Ipv4),
                ipv4_err::HeaderSliceError::Content(_) => Malformed::BadHeader(Layer::Ipv4),
            })?;
            let header_len = header.slice().len();
            let total_len = usize::from(header.total_len());
            if total_len < header_len {
                return Err(Malformed::BadHeader(Layer::Ipv4));
            }
            let packet = rest
                .get(..total_len)
                .ok_or(Malformed::Truncated(Layer::Ipv4))?;
            if !checksum::verify_header(header.slice()) {
                return Err(Malformed::BadChecksum(Layer::Ipv4));
            }
            // An IP authentication header (protocol 51) is not descended into: such packets
            // count as another IP protocol, and nothing answers them.
            (
                Net::Ipv4,
                header.protocol(),
                header.is_fragmenting_payload(),
                &packet[header_len..],
            )
        }
        EtherType::IPV6 => {
            let ip = Ipv6Slice::from_slice(rest).map_err(|e| match e {
                ipv6_err::SliceError::Len(l) => Malformed::Truncated(map_layer(l.layer)),
                ipv6_err::SliceError::Header(_) => Malformed::BadHeader(Layer::Ipv6),
                ipv6_err::SliceError::Exts(_) => Malformed::BadHeader(Layer::Ipv6Extension),
            })?;
            let routing_header = ip
                .extensions()
                .clone()
                .into_iter()
                .any(|e| matches!(e, Ipv6ExtensionSlice::Routing(_)));
            let payload = ip.payload();
            (
                Net::Ipv6 { routing_header },
                payload.ip_number,
                payload.fragmented,
                payload.payload,
            )
        }
        EtherType::ARP => {
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

    let l4_offset = offset_of(l4);
    let ip_end = l4_offset + l4.len() as u16;
    let transport = if fragmented {
        Transport::Fragment
    } else {
        match ip_number {
            IpNumber::UDP => {
                let udp = UdpSlice::from_slice(l4)
                    .map_err(|e| Malformed::Truncated(map_layer(e.layer)))?;
                // The UDP length must cover exactly the IP payload: etherparse accepts a shorter
                // one (and 0, the IPv6 jumbogram marker, which cannot occur on Ethernet).
                if usize::from(udp.length()) != l4.len() {
                    return Err(Malformed::LengthMismatch(Layer::Udp));
                }
                Transport::Udp
            }
            IpNumber::TCP => {
                let tcp = TcpSlice::from_slice(l4).map_err(|e| match e {
                    tcp_err::HeaderSliceError::Len(_) => Malformed::Truncated(Layer::Tcp),
                    tcp_err::HeaderSliceError::Content(_) => Malformed::BadHeader(Layer::Tcp),
                })?;
                Transport::Tcp {
                    flags: tcp.header_slice()[13],
                }
            }
            IpNumber::ICMP => {
                if net != Net::Ipv4 {
                    // ICMPv4 over IPv6 is nonsense, and a reply to it would be too.
                    return Err(Malformed::BadHeader(Layer::Icmpv4));
                }
                let icmp =
                    Icmpv4Slice::from_slice(l4).map_err(|_| Malformed::Truncated(Layer::Icmpv4))?;
                Transport::Icmpv4 {
                    icmp_type: icmp.type_u8(),
                    code: icmp.code_u8(),
                }
            }
            IpNumber::IPV6_ICMP => {
                if net == Net::Ipv4 {
                    return Err(Malformed::BadHeader(Layer::Icmpv6));
                }
                let icmp =
                    Icmpv6Slice::from_slice(l4).map_err(|_| Malformed::Truncated(Layer::Icmpv6))?;
                Transport::Icmpv6 {
                    icmp_type: icmp.type_u8(),
                    code: icmp.code_u8(),
                }
            }
            other => Transport::Other { protocol: other.0 },
        }
    };

    Ok(Headers {
        vlan_tags,
        l3_offset,
        net,
        l4_offset,
        transport,
        ip_end,
    })
}

fn map_layer(l: EpLayer) -> Layer {
    match l {
        EpLayer::Ethernet2Header | EpLayer::EtherPayload => Layer::Ethernet,
        EpLayer::VlanHeader => Layer::Vlan,
        EpLayer::Arp => Layer::Arp,
        EpLayer::IpHeader | EpLayer::Ipv4Header | EpLayer::Ipv4Packet => Layer::Ipv4,
        EpLayer::Ipv6Header | EpLayer::Ipv6Packet => Layer::Ipv6,
        EpLayer::Ipv6ExtHeader
        | EpLayer::Ipv6HopByHopHeader
        | EpLayer::Ipv6DestOptionsHeader
        | EpLayer::Ipv6RouteHeader
        | EpLayer::Ipv6FragHeader => Layer::Ipv6Extension,
        EpLayer::UdpHeader | EpLayer::UdpPayload => Layer::Udp,
        EpLayer::TcpHeader => Layer::Tcp,
        EpLayer::Icmpv4 | EpLayer::Icmpv4Timestamp | EpLayer::Icmpv4TimestampReply => Layer::Icmpv4,
        EpLayer::Icmpv6 => Layer::Icmpv6,
        _ => Layer::Other,
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
        assert_eq!(h.transport, Transport::Udp);
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
    fn tcp_syn_with_options() {
        let h = parse(&TCP_SYN).unwrap();
        assert_eq!(
            h.transport,
            Transport::Tcp {
                flags: tcp_flags::SYN
            }
        );
        assert_eq!(h.l4_offset, 34);
    }

    #[test]
    fn arp_request() {
        let h = parse(&ARP_REQUEST).unwrap();
        assert_eq!(h.net, Net::Arp);
        assert_eq!(h.transport, Transport::None);
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
        assert!(matches!(h.net, Net::Other { .. }));
        assert_eq!(h.transport, Transport::None);
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
    }

    #[test]
    fn ipv4_fragments_are_not_parsed_further() {
        let mut f = UDP4_ECHO_REQUEST;
        f[20] = 0x20; // MF, offset 0: a first fragment
        f[21] = 0x00;
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f).unwrap().transport, Transport::Fragment);
        f[20] = 0x00;
        f[21] = 0x10; // offset 16 bytes: a later fragment
        fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse(&f).unwrap().transport, Transport::Fragment);
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
        assert!(parse(&f).is_err());
    }

    #[test]
    fn malformed_ipv4_bad_header_checksum() {
        let mut f = UDP4_ECHO_REQUEST;
        f[24] ^= 0x01;
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
    }
}
