//! The invariants that the fuzz target (`packet/fuzz`) and the property tests assert over
//! arbitrary input: one function, so libFuzzer and `cargo test` check exactly the same things.
//!
//! For any bytes `frame`:
//! - parsing, counting, echoing and reflecting return without panicking;
//! - a reply parses again;
//! - a reply to a request whose checksums were valid has valid checksums (checked with
//!   etherparse, not our code), and a new packet (a neighbour advertisement) always has;
//! - a reply is never itself answered by the responder, so two responders facing each other
//!   cannot ping-pong;
//! - reflecting a reflected frame gives the original back.

use crate::counter::{FlowKey, FlowSlot, FlowTable, ProtocolCounters};
use crate::echo::{ReplyKind, Responder, Verdict, reflect};
use crate::fixtures::{LOCAL_IPV4, LOCAL_IPV6, LOCAL_MAC};
use crate::parse::parse;
use crate::verify::verify_checksums;

/// Room for the largest frame the fuzzer gives plus a neighbour advertisement's growth.
const BUF_LEN: usize = 4096;

/// Runs every check on `frame` with both a permissive responder (any address) and one with
/// local addresses (ARP / ND enabled). Panics on a violated invariant.
pub fn check_frame(frame: &[u8]) {
    let frame = &frame[..frame.len().min(BUF_LEN - 64)];
    let parsed = parse(frame);

    let mut counters = ProtocolCounters::default();
    counters.count(parsed.as_ref(), frame.len());
    let total: u64 = counters.arp.packets
        + counters.ipv4.packets
        + counters.ipv6.packets
        + counters.other.packets
        + counters.malformed.packets;
    assert_eq!(total, 1, "every frame counts once at the network level");

    if let Ok(h) = &parsed {
        let mut slots = [FlowSlot::default(); 4];
        let mut flows = FlowTable::new(&mut slots[..], 0);
        if let Some(key) = FlowKey::from_frame(frame, h) {
            flows.count(&key, frame.len() as u64);
            assert_eq!(flows.get(&key).map(|c| c.packets), Some(1));
        }
    }

    let request_valid = verify_checksums(frame).is_ok();
    let mut local = Responder::new();
    local.set_local_mac(LOCAL_MAC);
    local.add_ipv4(LOCAL_IPV4).expect("room for one address");
    local.add_ipv6(LOCAL_IPV6).expect("room for one address");
    for responder in [&Responder::new(), &local] {
        let mut buf = [0u8; BUF_LEN];
        buf[..frame.len()].copy_from_slice(frame);
        match responder.respond(&mut buf, frame.len()) {
            Verdict::Reply { len, kind } => {
                assert!(parsed.is_ok(), "replied to a malformed frame");
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
