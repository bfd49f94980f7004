//! Finding a neighbour's MAC address on the link, as a host does before it sends: the ARP
//! request (RFC 826) or neighbour solicitation (RFC 4861, section 7.2.2) to ask with, and
//! the reading of the answer. `xdp-user gen` uses them when it is not given the target's
//! MAC address.
//!
//! [`answer`] takes bytes from the wire: whatever they are, it returns the MAC address the
//! frame announces for the address asked about, or `None`. It accepts only what a host's
//! neighbour cache would: for IPv4 an Ethernet/IPv4 ARP packet whose sender is the address
//! (a reply, or a request the neighbour sends itself); for IPv6 a neighbour advertisement
//! that passes RFC 4861's validation (section 7.1.2: hop limit 255, code 0, a valid ICMPv6
//! checksum, at least 24 bytes, no option of length 0) for that target.

use crate::checksum;
use crate::parse::{self, Net, Transport};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The length of [`arp_request`]'s frame: Ethernet header and an Ethernet/IPv4 ARP packet.
pub const ARP_REQUEST_LEN: usize = 14 + 28;
/// The length of [`neighbour_solicitation`]'s frame: Ethernet, IPv6, the 24-byte solicitation
/// and the 8-byte source link-layer address option.
pub const SOLICITATION_LEN: usize = 14 + 40 + 24 + 8;

const ICMPV6_NEIGHBOUR_SOLICITATION: u8 = 135;
const ICMPV6_NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Neighbour discovery messages are sent with, and only accepted with, hop limit 255: proof
/// that they come from the link itself (RFC 4861, section 7.1).
const NDP_HOP_LIMIT: u8 = 255;
const OPTION_SOURCE_LL: u8 = 1;
const OPTION_TARGET_LL: u8 = 2;
/// The fixed part of a solicitation or advertisement: type, code, checksum, flags or
/// reserved, target address.
const NDP_BODY_LEN: usize = 24;

/// A broadcast ARP request from `src_mac` / `src` asking who has `target`.
pub fn arp_request(src_mac: [u8; 6], src: Ipv4Addr, target: Ipv4Addr) -> [u8; ARP_REQUEST_LEN] {
    let mut f = [0u8; ARP_REQUEST_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&parse::ETHER_TYPE_ARP.to_be_bytes());
    // Hardware type Ethernet, protocol IPv4, address lengths 6 and 4, operation 1 (request).
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&src_mac);
    f[28..32].copy_from_slice(&src.octets());
    // The target hardware address stays zero: it is what is asked.
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// The solicited-node multicast group of `target` (RFC 4291, section 2.7.1): ff02::1:ffXX:XXXX,
/// the low 24 bits of the target. A neighbour solicitation for `target` goes to it.
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    let mut group = [0u8; 16];
    group[..13].copy_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff]);
    group[13..].copy_from_slice(&t[13..]);
    Ipv6Addr::from(group)
}

/// A neighbour solicitation from `src_mac` / `src` for `target`, to the target's
/// solicited-node multicast address (ff02::1:ffXX:XXXX and 33:33:ff:XX:XX:XX, the low 24
/// bits of the target), carrying our link-layer address so the answer can come straight
/// back.
pub fn neighbour_solicitation(
    src_mac: [u8; 6],
    src: Ipv6Addr,
    target: Ipv6Addr,
) -> [u8; SOLICITATION_LEN] {
    let t = target.octets();
    let group = solicited_node(target).octets();
    let mut f = [0u8; SOLICITATION_LEN];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&parse::ETHER_TYPE_IPV6.to_be_bytes());
    let body_len = NDP_BODY_LEN + 8;
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(body_len as u16).to_be_bytes());
    ip[6] = parse::IP_PROTO_ICMPV6;
    ip[7] = NDP_HOP_LIMIT;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&group);
    let icmp = &mut f[54..];
    icmp[0] = ICMPV6_NEIGHBOUR_SOLICITATION;
    icmp[8..24].copy_from_slice(&t);
    icmp[24] = OPTION_SOURCE_LL;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&src_mac);
    let pseudo = checksum::pseudo_header_v6(
        &src.octets(),
        &group,
        parse::IP_PROTO_ICMPV6,
        body_len as u32,
    );
    let sum = !checksum::fold(checksum::sum(pseudo, icmp));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The MAC address `frame` announces for `target`, if it is an answer a host would believe
/// (see the module docs); `None` for anything else, whatever the bytes.
pub fn answer(frame: &[u8], target: IpAddr) -> Option<[u8; 6]> {
    let h = parse::parse(frame).ok()?;
    let l3 = usize::from(h.l3_offset);
    let mac = match (h.net, target) {
        (Net::Arp, IpAddr::V4(target)) => arp_sender(frame.get(l3..)?, target)?,
        (Net::Ipv6 { .. }, IpAddr::V6(target)) => {
            if h.transport
                != (Transport::Icmpv6 {
                    icmp_type: ICMPV6_NEIGHBOUR_ADVERTISEMENT,
                    code: 0,
                })
            {
                return None;
            }
            let ip = frame.get(l3..l3 + 40)?;
            let icmp = frame.get(usize::from(h.l4_offset)..usize::from(h.ip_end))?;
            match advertised(ip, icmp, target)? {
                Some(mac) => mac,
                None => frame.get(6..12)?.try_into().ok()?,
            }
        }
        _ => return None,
    };
    // A unicast address a frame can be sent to: not zero, not a group (multicast or broadcast).
    (mac != [0; 6] && mac[0] & 1 == 0).then_some(mac)
}

/// The sender hardware address of an Ethernet/IPv4 ARP packet (request or reply) whose sender
/// protocol address is `target`.
fn arp_sender(arp: &[u8], target: Ipv4Addr) -> Option<[u8; 6]> {
    let arp = arp.get(..28)?;
    let op = u16::from_be_bytes([arp[6], arp[7]]);
    if arp[..6] != [0, 1, 0x08, 0x00, 6, 4] || !(op == 1 || op == 2) {
        return None;
    }
    (arp[14..18] == target.octets()).then(|| arp[8..14].try_into().ok())?
}

/// For a neighbour advertisement for `target` that passes validation: `Some(Some(mac))` with a
/// target link-layer address option, `Some(None)` without one (the frame's source address is
/// then the answer); `None` if it is not a valid advertisement for `target`.
fn advertised(ip: &[u8], icmp: &[u8], target: Ipv6Addr) -> Option<Option<[u8; 6]>> {
    if ip[7] != NDP_HOP_LIMIT || icmp.len() < NDP_BODY_LEN || icmp[8..24] != target.octets() {
        return None;
    }
    let src: [u8; 16] = ip[8..24].try_into().ok()?;
    let dst: [u8; 16] = ip[24..40].try_into().ok()?;
    let pseudo = checksum::pseudo_header_v6(&src, &dst, parse::IP_PROTO_ICMPV6, icmp.len() as u32);
    if !checksum::verify(pseudo, icmp) {
        return None;
    }
    link_layer_option(&icmp[NDP_BODY_LEN..], OPTION_TARGET_LL)
}

/// The link-layer address option of type `kind` (1 source, 2 target) among the neighbour
/// discovery `options` that follow a solicitation's or advertisement's fixed part:
/// `Some(None)` without one; `None` when an option is invalid (length 0, or past the end),
/// for which RFC 4861 (section 7.1) has the whole message discarded.
pub(crate) fn link_layer_option(mut options: &[u8], kind: u8) -> Option<Option<[u8; 6]>> {
    // Each option: type, length in units of 8 bytes, value.
    let mut mac = None;
    while !options.is_empty() {
        let len = usize::from(*options.get(1)?) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == kind && len == 8 {
            mac = Some(options[2..8].try_into().ok()?);
        }
        options = &options[len..];
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::{Responder, Verdict};

    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const THEIR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const OURS_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const THEIRS_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const OURS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const THEIRS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    /// An ARP reply from 198.18.0.2 at 02:00:00:00:00:02 to 198.18.0.1 at 02:00:00:00:00:01,
    /// as the Linux stack sends it (captured on the testbed).
    const ARP_REPLY: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 198, 18, 0, 2, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 198, 18, 0, 1,
    ];

    /// A solicited neighbour advertisement from 2001:db8::2 (02:00:00:00:00:02) to
    /// 2001:db8::1, with the target link-layer address option, as the Linux stack sends it
    /// (captured on the testbed).
    const NEIGHBOUR_ADVERT: [u8; 86] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x86, 0xdd, //
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x88, 0x00, 0x8a, 0x71, 0x60, 0x00, 0x00, 0x00, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
    ];

    /// The ARP request the Linux stack sends for the same question (captured on the testbed).
    const LINUX_ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 198, 18, 0, 1, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 198, 18, 0, 2,
    ];

    /// The neighbour solicitation the Linux stack sends for the same question (captured on
    /// the testbed).
    const LINUX_SOLICITATION: [u8; 86] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, //
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x00, 0x02, //
        0x87, 0x00, 0x1c, 0x27, 0x00, 0x00, 0x00, 0x00, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn our_questions_are_the_bytes_linux_sends() {
        assert_eq!(arp_request(OUR_MAC, OURS_V4, THEIRS_V4), LINUX_ARP_REQUEST);
        assert_eq!(
            neighbour_solicitation(OUR_MAC, OURS_V6, THEIRS_V6),
            LINUX_SOLICITATION
        );
        let v = crate::verify::verify_checksums(&LINUX_SOLICITATION);
        assert!(v.is_ok(), "{v:?}");
    }

    /// The other side of the toolkit, the echo responder, answers what we send; what it
    /// answers is read back as its MAC address.
    #[test]
    fn our_responder_answers_our_questions() {
        let mut r = Responder::new();
        r.set_local_mac(THEIR_MAC);
        r.add_ipv4(THEIRS_V4.octets()).unwrap();
        r.add_ipv6(THEIRS_V6.octets()).unwrap();
        let questions: [(Vec<u8>, IpAddr); 2] = [
            (
                arp_request(OUR_MAC, OURS_V4, THEIRS_V4).to_vec(),
                THEIRS_V4.into(),
            ),
            (
                neighbour_solicitation(OUR_MAC, OURS_V6, THEIRS_V6).to_vec(),
                THEIRS_V6.into(),
            ),
        ];
        for (question, target) in questions {
            let mut buf = [0u8; 256];
            buf[..question.len()].copy_from_slice(&question);
            let h = parse::parse(&question).unwrap();
            let Verdict::Reply { len, .. } = r.respond_parsed(&mut buf, question.len(), &h) else {
                panic!("no answer to {question:02x?}");
            };
            assert_eq!(answer(&buf[..len], target), Some(THEIR_MAC), "{target}");
            // Not an answer about somebody else, nor the question itself.
            assert_eq!(answer(&buf[..len], OURS_V4.into()), None);
            assert_eq!(answer(&buf[..len], OURS_V6.into()), None);
            assert_eq!(answer(&question, target), None);
        }
    }

    #[test]
    fn answers_captured_from_linux() {
        assert_eq!(answer(&ARP_REPLY, THEIRS_V4.into()), Some(THEIR_MAC));
        assert_eq!(answer(&NEIGHBOUR_ADVERT, THEIRS_V6.into()), Some(THEIR_MAC));
        // The wrong family or address.
        assert_eq!(answer(&ARP_REPLY, THEIRS_V6.into()), None);
        assert_eq!(answer(&ARP_REPLY, OURS_V4.into()), None);
        assert_eq!(answer(&NEIGHBOUR_ADVERT, THEIRS_V4.into()), None);
        assert_eq!(answer(&NEIGHBOUR_ADVERT, OURS_V6.into()), None);
    }

    #[test]
    fn a_request_from_the_neighbour_announces_it_too() {
        let mut f = ARP_REPLY;
        f[21] = 1;
        assert_eq!(answer(&f, THEIRS_V4.into()), Some(THEIR_MAC));
    }

    /// Fixes the ICMPv6 checksum of an edited advertisement.
    fn fix_checksum(f: &mut [u8]) {
        f[56..58].copy_from_slice(&[0, 0]);
        let src: [u8; 16] = f[22..38].try_into().unwrap();
        let dst: [u8; 16] = f[38..54].try_into().unwrap();
        let len = f.len() - 54;
        let pseudo = checksum::pseudo_header_v6(&src, &dst, 58, len as u32);
        let sum = !checksum::fold(checksum::sum(pseudo, &f[54..]));
        f[56..58].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn an_advertisement_without_the_option_names_its_sender() {
        let mut f = NEIGHBOUR_ADVERT[..78].to_vec();
        f[19] = 24;
        fix_checksum(&mut f);
        assert_eq!(answer(&f, THEIRS_V6.into()), Some(THEIR_MAC));
    }

    #[test]
    fn what_a_host_would_not_believe_is_refused() {
        let v6 = IpAddr::from(THEIRS_V6);
        let v4 = IpAddr::from(THEIRS_V4);
        let edited = |at: usize, value: u8, checksum: bool| {
            let mut f = NEIGHBOUR_ADVERT.to_vec();
            f[at] = value;
            if checksum {
                fix_checksum(&mut f);
            }
            f
        };
        // Hop limit below 255: routed here from elsewhere.
        assert_eq!(answer(&edited(21, 64, true), v6), None);
        // A bad checksum.
        assert_eq!(answer(&edited(60, 0x61, false), v6), None);
        // Code 1, a solicitation, an option of length 0.
        assert_eq!(answer(&edited(55, 1, true), v6), None);
        assert_eq!(answer(&edited(54, 135, true), v6), None);
        assert_eq!(answer(&edited(79, 0, true), v6), None);
        // A multicast or zero MAC address.
        assert_eq!(answer(&edited(80, 0x03, true), v6), None);
        let mut zero = NEIGHBOUR_ADVERT;
        zero[80..86].fill(0);
        fix_checksum(&mut zero);
        assert_eq!(answer(&zero, v6), None);
        // ARP for another hardware or protocol type, or another operation.
        for (at, value) in [(15, 6), (17, 0xdd), (18, 8), (21, 3)] {
            let mut f = ARP_REPLY;
            f[at] = value;
            assert_eq!(answer(&f, v4), None, "byte {at} = {value}");
        }
        // Every truncation of either answer.
        for n in 0..ARP_REPLY.len() {
            assert_eq!(answer(&ARP_REPLY[..n], v4), None, "{n} bytes");
        }
        for n in 0..NEIGHBOUR_ADVERT.len() {
            assert_eq!(answer(&NEIGHBOUR_ADVERT[..n], v6), None, "{n} bytes");
        }
    }
}
