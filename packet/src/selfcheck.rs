//! The invariants that the fuzz target (`packet/fuzz`) and the property tests assert over
//! arbitrary input: one function, so libFuzzer and `cargo test` check exactly the same things.
//!
//! For any bytes `frame`:
//! - parsing, classifying, counting, echoing and reflecting return without panicking;
//! - the offsets `parse` returns are ordered and inside the frame, the transport headers it
//!   reports lie below `ip_end`, and its fragment kind agrees with its transport (a later
//!   fragment is `Transport::Fragment` and nothing else is);
//! - [`crate::filter::classify`] agrees with `parse` on the class;
//! - no fragment, first or later, is answered or reflected;
//! - a reply parses again;
//! - a reply to a request whose checksums were valid has valid checksums (checked with
//!   etherparse, not our code), and a new packet (a neighbour advertisement) always has;
//! - a reply is never itself answered by the responder, so two responders facing each other
//!   cannot ping-pong;
//! - reflecting a reflected frame gives the original back;
//! - a neighbour's MAC address is read only from an ARP packet or a neighbour advertisement
//!   that parse, and is always a unicast address.

use crate::counter::{FlowKey, FlowSlot, FlowTable, ProtocolCounters};
use crate::echo::{ReplyKind, Responder, Verdict, reflect};
use crate::filter::{Class, classify};
use crate::fixtures::{LOCAL_IPV4, LOCAL_IPV6, LOCAL_MAC};
use crate::parse::{Frag, Headers, Net, Transport, parse};
use crate::verify::verify_checksums;

/// Room for the largest frame the fuzzer gives plus a neighbour advertisement's growth.
const BUF_LEN: usize = 4096;

/// [`crate::neighbour::answer`] about our addresses, and about the address the frame itself
/// names where an answer would (an ARP sender, an advertisement's target), so that the fuzzer
/// reaches the paths that accept.
fn check_neighbour_answer(frame: &[u8], parsed: &Result<Headers, crate::parse::Malformed>) {
    use core::net::IpAddr;
    let (l3, l4) = parsed.as_ref().map_or((14, 14), |h| {
        (usize::from(h.l3_offset), usize::from(h.l4_offset))
    });
    let arp_sender = frame
        .get(l3 + 14..l3 + 18)
        .and_then(|b| <[u8; 4]>::try_from(b).ok());
    let nd_target = frame
        .get(l4 + 8..l4 + 24)
        .and_then(|b| <[u8; 16]>::try_from(b).ok());
    let targets = [
        Some(IpAddr::from(LOCAL_IPV4)),
        Some(IpAddr::from(LOCAL_IPV6)),
        arp_sender.map(IpAddr::from),
        nd_target.map(IpAddr::from),
    ];
    for target in targets.into_iter().flatten() {
        let Some(mac) = crate::neighbour::answer(frame, target) else {
            continue;
        };
        assert!(
            mac != [0; 6] && mac[0] & 1 == 0,
            "{mac:02x?} is not unicast"
        );
        let h = parsed
            .as_ref()
            .expect("an answer from a frame that does not parse");
        assert!(
            match target {
                IpAddr::V4(_) => h.net == Net::Arp,
                IpAddr::V6(_) =>
                    h.transport
                        == (Transport::Icmpv6 {
                            icmp_type: 136,
                            code: 0
                        }),
            },
            "{target} answered by {h:?}"
        );
    }
}

/// Runs every check on `frame` with both a permissive responder (any address) and one with
/// local addresses (ARP / ND enabled). Panics on a violated invariant.
pub fn check_frame(frame: &[u8]) {
    let frame = &frame[..frame.len().min(BUF_LEN - 64)];
    let parsed = parse(frame);
    // The fast path takes a frame only to give what the general path gives it.
    assert_eq!(
        parsed,
        crate::parse::parse_general(frame),
        "parse's fast path disagrees with its general path"
    );

    let mut counters = ProtocolCounters::default();
    counters.count(parsed.as_ref(), frame.len());
    let total: u64 = counters.arp.packets
        + counters.ipv4.packets
        + counters.ipv6.packets
        + counters.other.packets
        + counters.malformed.packets;
    assert_eq!(total, 1, "every frame counts once at the network level");

    match (&parsed, classify(frame)) {
        (Err(e), Class::Malformed(m)) => assert_eq!(*e, m),
        (Ok(h), Class::NotIp) => assert!(!h.is_ip()),
        (Ok(h), Class::Unparsed) => assert_eq!(h.transport, Transport::Unparsed),
        (Ok(h), Class::Ip(f)) => {
            assert!(h.is_ip() && h.transport != Transport::Unparsed);
            assert_eq!((f.protocol, f.frag), (h.protocol, h.frag));
            assert_eq!(
                f.sport.is_some(),
                matches!(h.transport, Transport::Tcp { .. } | Transport::Udp)
            );
        }
        (p, c) => panic!("classify {c:?} disagrees with parse {p:?}"),
    }

    if let Ok(h) = &parsed {
        check_headers(frame, h);
        let mut slots = [FlowSlot::default(); 4];
        let mut flows = FlowTable::new(&mut slots[..], 0);
        if let Some(key) = FlowKey::from_frame(frame, h) {
            flows.count(&key, frame.len() as u64);
            assert_eq!(flows.get(&key).map(|c| c.packets), Some(1));
        }
    }

    check_neighbour_answer(frame, &parsed);

    let request_valid = verify_checksums(frame).is_ok();
    let mut local = Responder::new();
    local.set_local_mac(LOCAL_MAC);
    local.add_ipv4(LOCAL_IPV4).expect("room for one address");
    local.add_ipv6(LOCAL_IPV6).expect("room for one address");
    for responder in [&Responder::new(), &local] {
        let mut buf = [0u8; BUF_LEN];
        buf[..frame.len()].copy_from_slice(frame);
        match responder.respond(&mut buf, frame.len()) {
            Verdict::Reply { len, kind, .. } => {
                assert!(parsed.is_ok(), "replied to a malformed frame");
                assert!(
                    parsed.is_ok_and(|h| h.frag == Frag::None),
                    "replied to a fragment"
                );
                let reply = &buf[..len];
                assert!(parse(reply).is_ok(), "reply does not parse: {reply:02x?}");
                let must_be_valid = request_valid || kind == ReplyKind::NeighborAdvertisement;
                if let (true, Err(e)) = (must_be_valid, verify_checksums(reply)) {
                    panic!("{kind:?} reply has a bad {e:?} checksum: {reply:02x?}");
                }
                let mut again = [0u8; BUF_LEN];
                again[..len].copy_from_slice(reply);
                for r in [&Responder::new(), &local] {
                    assert!(
                        !matches!(r.respond(&mut again, len), Verdict::Reply { .. }),
                        "a {kind:?} reply would be answered again"
                    );
                }
            }
            Verdict::NotForUs => {
                assert_eq!(&buf[..frame.len()], frame, "refusal changed the frame")
            }
            Verdict::Malformed(_) => assert!(parsed.is_err(), "malformed only when parse fails"),
        }
    }

    let mut buf = [0u8; BUF_LEN];
    buf[..frame.len()].copy_from_slice(frame);
    if let Verdict::Reply { len, .. } = reflect(&mut buf, frame.len()) {
        assert_eq!(len, frame.len());
        assert!(
            parsed.is_ok_and(|h| h.frag == Frag::None),
            "reflected a fragment"
        );
        if request_valid {
            assert!(
                verify_checksums(&buf[..len]).is_ok(),
                "reflect broke a checksum"
            );
        }
        reflect(&mut buf, len);
        assert_eq!(&buf[..len], frame, "reflect twice is not the identity");
    }
}

/// The guarantee of [`crate::parse`]'s module docs, and the consistency of its fields.
fn check_headers(frame: &[u8], h: &Headers) {
    let (l3, l4, end) = (
        usize::from(h.l3_offset),
        usize::from(h.l4_offset),
        usize::from(h.ip_end),
    );
    assert!(l3 <= l4 && l4 <= end && end <= frame.len(), "offsets {h:?}");
    let l4_header = match h.transport {
        Transport::Tcp { .. } => frame.get(l4 + 12).map(|b| usize::from(b >> 4) * 4),
        Transport::Udp | Transport::Icmpv4 { .. } | Transport::Icmpv6 { .. } => Some(8),
        _ => None,
    };
    if let Some(len) = l4_header {
        assert!(
            len >= 8 && l4 + len <= end,
            "transport header past ip_end: {h:?}"
        );
    }
    match h.net {
        Net::Ipv4 => assert!(l3 + 20 <= l4, "{h:?}"),
        Net::Ipv6 { .. } => assert!(l3 + 40 <= l4, "{h:?}"),
        Net::Arp | Net::Other { .. } => {
            assert_eq!(
                (h.transport, h.frag, h.protocol),
                (Transport::None, Frag::None, 0)
            );
        }
    }
    if h.transport != Transport::Unparsed {
        assert_eq!(
            h.frag == Frag::Later,
            h.transport == Transport::Fragment,
            "fragment kind and transport disagree: {h:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::REQUESTS;
    use proptest::prelude::*;

    #[test]
    fn fixtures_pass() {
        for f in REQUESTS {
            check_frame(f);
        }
    }

    fn mutated_fixture() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(REQUESTS),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(f, edits, cut)| {
                let mut v = f.to_vec();
                for (i, b) in edits {
                    let i = i.index(v.len());
                    v[i] = b;
                }
                let keep = cut.index(v.len() + 1).max(v.len().saturating_sub(8));
                v.truncate(keep);
                v
            })
    }

    /// 50 000 frames of the differential test's generator: hostile fragments and extension
    /// chains, truncations, flipped bytes, padding.
    #[cfg(feature = "std")]
    #[test]
    fn random_crafted_frames() {
        let mut rng = crate::craft::Rng::new(0x6b62_7000_5e1f);
        for _ in 0..50_000 {
            check_frame(&crate::craft::random_frame(&mut rng));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn mutated_real_frames(frame in mutated_fixture()) {
            check_frame(&frame);
        }

        #[test]
        fn random_bytes(frame in prop::collection::vec(any::<u8>(), 0..200)) {
            check_frame(&frame);
        }
    }
}
