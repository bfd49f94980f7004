//! Checksum verification that shares no code with [`crate::checksum`]: it uses etherparse's own
//! checksum routines. Tests and the fuzz target use it to judge the echo responder's replies,
//! so a bug in our incremental updates cannot hide behind the same bug in the check.
//!
//! It is slow (full recomputation) and meant for tests and diagnostics, never a data path.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// Which checksum is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumError {
    /// The frame does not parse, so its checksums cannot be checked.
    Unparsable,
    Ipv4Header,
    Udp,
    Tcp,
    Icmpv4,
    Icmpv6,
}

/// Checks every checksum the frame carries (IPv4 header, UDP, TCP, ICMP, ICMPv6). Fragments and
/// unknown protocols have only their IP header checked. A UDP checksum of 0 over IPv4 means
/// "none" and is accepted.
pub fn verify_checksums(frame: &[u8]) -> Result<(), ChecksumError> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|_| ChecksumError::Unparsable)?;
    let (src, dst) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            if h.to_header().calc_header_checksum() != h.header_checksum() {
                return Err(ChecksumError::Ipv4Header);
            }
            (Addrs::V4(h.source()), Addrs::V4(h.destination()))
        }
        Some(NetSlice::Ipv6(ip)) => (
            Addrs::V6(ip.header().source()),
            Addrs::V6(ip.header().destination()),
        ),
        _ => return Ok(()),
    };
    let ok = |valid: bool, err: ChecksumError| if valid { Ok(()) } else { Err(err) };
    match (&p.transport, src, dst) {
        // Over IPv4 a zero UDP checksum means "none".
        (Some(TransportSlice::Udp(udp)), Addrs::V4(_), _) if udp.checksum() == 0 => Ok(()),
        (Some(TransportSlice::Udp(udp)), Addrs::V4(s), Addrs::V4(d)) => {
            let want = udp
                .to_header()
                .calc_checksum_ipv4_raw(s, d, udp.payload())
                .map_err(|_| ChecksumError::Udp)?;
            ok(want == udp.checksum(), ChecksumError::Udp)
        }
        (Some(TransportSlice::Udp(udp)), Addrs::V6(s), Addrs::V6(d)) => {
            let want = udp
                .to_header()
                .calc_checksum_ipv6_raw(s, d, udp.payload())
                .map_err(|_| ChecksumError::Udp)?;
            ok(want == udp.checksum(), ChecksumError::Udp)
        }
        (Some(TransportSlice::Tcp(tcp)), Addrs::V4(s), Addrs::V4(d)) => {
            let want = tcp
                .calc_checksum_ipv4(s, d)
                .map_err(|_| ChecksumError::Tcp)?;
            ok(want == tcp.checksum(), ChecksumError::Tcp)
        }
        (Some(TransportSlice::Tcp(tcp)), Addrs::V6(s), Addrs::V6(d)) => {
            let want = tcp
                .calc_checksum_ipv6(s, d)
                .map_err(|_| ChecksumError::Tcp)?;
            ok(want == tcp.checksum(), ChecksumError::Tcp)
        }
        (Some(TransportSlice::Icmpv4(icmp)), _, _) => {
            let sum = etherparse::checksum::Sum16BitWords::new().add_slice(icmp.slice());
            ok(sum.ones_complement() == 0, ChecksumError::Icmpv4)
        }
        (Some(TransportSlice::Icmpv6(icmp)), Addrs::V6(s), Addrs::V6(d)) => {
            ok(icmp.is_checksum_valid(s, d), ChecksumError::Icmpv6)
        }
        _ => Ok(()),
    }
}

#[derive(Clone, Copy)]
enum Addrs {
    V4([u8; 4]),
    V6([u8; 16]),
}
