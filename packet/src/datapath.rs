//! The per-frame step every poll loop shares: the AF_XDP loop (`xdp-user run`) and the DPDK
//! lcores (`dpdk-app`) differ in where a frame's bytes live, not in what they do with them.

use crate::counter::{FlowKey, FlowSlot, FlowTable, LoopCounters, ProtocolCounters};
use crate::echo::{Responder, Verdict, reflect_parsed};
use crate::parse::parse;

/// What a poll loop does with the packets it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Action {
    /// Answer ICMP/ICMPv6 echo requests, UDP to the echo ports, and ARP / neighbour
    /// solicitations for the configured addresses; count the rest.
    Echo,
    /// Send every well-formed IP packet back with MACs, IPs and ports swapped.
    Reflect,
    /// Count and drop.
    Count,
    /// Drop without parsing.
    Drop,
}

/// Handles one received frame, `buf[..len]`; `buf` may extend past the frame, since a reply
/// can be longer than the request. Parses and counts the frame, then answers, reflects, counts
/// or drops it as `action` says, rewriting it in place when it is answered. Returns the reply's
/// length when the frame is to be sent back.
#[inline]
pub fn handle_frame(
    action: Action,
    responder: &Responder,
    buf: &mut [u8],
    len: usize,
    counters: &mut LoopCounters,
    protocols: &mut ProtocolCounters,
) -> Option<usize> {
    handle_frame_counting_flows::<[FlowSlot; 0]>(
        action, responder, buf, len, counters, protocols, None,
    )
}

/// [`handle_frame`], also counting the frame's IP 5-tuple in `flows` (before any rewrite; a
/// frame the table has no room for counts in its `overflow`). `Action::Drop` parses nothing
/// and counts no flow.
#[inline]
pub fn handle_frame_counting_flows<S: AsRef<[FlowSlot]> + AsMut<[FlowSlot]>>(
    action: Action,
    responder: &Responder,
    buf: &mut [u8],
    len: usize,
    counters: &mut LoopCounters,
    protocols: &mut ProtocolCounters,
    flows: Option<&mut FlowTable<S>>,
) -> Option<usize> {
    if action == Action::Drop {
        counters.dropped += 1;
        return None;
    }
    let parsed = parse(buf.get(..len)?);
    protocols.count(parsed.as_ref(), len);
    if let (Some(flows), Ok(h)) = (flows, &parsed)
        && let Some(key) = FlowKey::from_frame(&buf[..len], h)
    {
        flows.count(&key, len as u64);
    }
    let verdict = match (&parsed, action) {
        (Err(e), _) => Verdict::Malformed(*e),
        (Ok(h), Action::Echo) => responder.respond_parsed(buf, len, h),
        (Ok(h), Action::Reflect) => reflect_parsed(buf, len, h),
        (Ok(_), _) => {
            counters.counted += 1;
            return None;
        }
    };
    counters.record(&verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    fn run(action: Action, frame: &[u8]) -> (Option<usize>, LoopCounters, Vec<u8>) {
        let mut responder = Responder::new();
        responder.set_local_mac(LOCAL_MAC);
        let mut buf = [0u8; 256];
        buf[..frame.len()].copy_from_slice(frame);
        let (mut c, mut p) = (LoopCounters::default(), ProtocolCounters::default());
        let r = handle_frame(action, &responder, &mut buf, frame.len(), &mut c, &mut p);
        let total = p.classes().iter().map(|(_, c)| c.packets).sum::<u64>();
        if action == Action::Drop {
            assert_eq!(total, 0, "drop does not parse");
        } else {
            assert!(total >= 1, "every handled frame is counted");
        }
        (r, c, buf[..r.unwrap_or(frame.len())].to_vec())
    }

    #[test]
    fn each_action_does_what_it_says() {
        let (r, c, reply) = run(Action::Echo, &UDP4_ECHO_REQUEST);
        assert_eq!((r, c.echoed), (Some(UDP4_ECHO_REPLY.len()), 1));
        assert_eq!(reply, UDP4_ECHO_REPLY);
        let (r, c, _) = run(Action::Echo, &TCP_SYN);
        assert_eq!((r, c.not_for_us), (None, 1));
        let (r, c, _) = run(Action::Echo, &UDP4_ECHO_REQUEST[..30]);
        assert_eq!((r, c.malformed), (None, 1));
        let (r, c, _) = run(Action::Reflect, &TCP_SYN);
        assert_eq!((r, c.reflected), (Some(TCP_SYN.len()), 1));
        let (r, c, _) = run(Action::Count, &TCP_SYN);
        assert_eq!((r, c.counted), (None, 1));
        let (r, c, _) = run(Action::Drop, &TCP_SYN);
        assert_eq!((r, c.dropped), (None, 1));
    }

    /// Handles `frame` with a fresh responder; returns the reply length and the counters.
    fn handle(action: Action, frame: &[u8]) -> (Option<usize>, LoopCounters, ProtocolCounters) {
        let responder = Responder::new();
        let mut buf = [0u8; 256];
        buf[..frame.len()].copy_from_slice(frame);
        let (mut c, mut p) = (LoopCounters::default(), ProtocolCounters::default());
        let r = handle_frame(action, &responder, &mut buf, frame.len(), &mut c, &mut p);
        if r.is_none() {
            assert_eq!(&buf[..frame.len()], frame, "a refused frame is left alone");
        }
        (r, c, p)
    }

    #[test]
    fn fragments_are_counted_never_answered_nor_reflected() {
        use crate::parse::tests::{V4_UDP_FIRST_FRAGMENT, V4_UDP_LATER_FRAGMENT};
        // The first fragment is UDP to port 7: it counts as UDP, but is not echoed.
        for (frame, udp) in [
            (&V4_UDP_FIRST_FRAGMENT[..], 1),
            (&V4_UDP_LATER_FRAGMENT[..], 0),
        ] {
            for action in [Action::Echo, Action::Reflect] {
                let (r, c, p) = handle(action, frame);
                assert_eq!((r, c.not_for_us, c.malformed), (None, 1, 0), "{action:?}");
                assert_eq!((p.ipv4.packets, p.udp.packets), (1, udp));
            }
        }
    }

    #[test]
    fn unparsed_ipv6_is_counted_not_answered() {
        let frame = crate::parse::tests::v6_dest_opts_chain(9);
        let (r, c, p) = handle(Action::Echo, &frame);
        assert_eq!((r, c.not_for_us), (None, 1));
        assert_eq!(
            (p.ipv6.packets, p.udp.packets, p.malformed.packets),
            (1, 0, 0)
        );
        // Reflect turns it around like any other IP protocol (addresses and MACs only).
        let (r, c, _) = handle(Action::Reflect, &frame);
        assert_eq!((r, c.reflected), (Some(frame.len()), 1));
    }

    #[test]
    fn flows_are_counted_before_the_reply_rewrites_the_frame() {
        let mut responder = Responder::new();
        responder.set_local_mac(LOCAL_MAC);
        let mut flows = FlowTable::new([FlowSlot::default(); 8], 1);
        let (mut c, mut p) = (LoopCounters::default(), ProtocolCounters::default());
        for _ in 0..3 {
            let mut buf = [0u8; 256];
            buf[..UDP4_ECHO_REQUEST.len()].copy_from_slice(&UDP4_ECHO_REQUEST);
            let r = handle_frame_counting_flows(
                Action::Echo,
                &responder,
                &mut buf,
                UDP4_ECHO_REQUEST.len(),
                &mut c,
                &mut p,
                Some(&mut flows),
            );
            assert!(r.is_some());
        }
        let request = crate::parse(&UDP4_ECHO_REQUEST).unwrap();
        let key = FlowKey::from_frame(&UDP4_ECHO_REQUEST, &request).unwrap();
        assert_eq!(flows.get(&key).map(|c| c.packets), Some(3));
        assert_eq!(flows.len(), 1, "the reply's reversed tuple is not counted");
        // Malformed frames and non-IP frames have no flow.
        let mut buf = [0u8; 256];
        buf[..30].copy_from_slice(&UDP4_ECHO_REQUEST[..30]);
        handle_frame_counting_flows(
            Action::Echo,
            &responder,
            &mut buf,
            30,
            &mut c,
            &mut p,
            Some(&mut flows),
        );
        assert_eq!((flows.len(), flows.overflow.packets), (1, 0));
    }

    #[test]
    fn a_length_past_the_buffer_is_refused_not_a_panic() {
        let responder = Responder::new();
        let mut buf = [0u8; 16];
        let (mut c, mut p) = (LoopCounters::default(), ProtocolCounters::default());
        assert_eq!(
            handle_frame(Action::Echo, &responder, &mut buf, 64, &mut c, &mut p),
            None
        );
    }
}
