//! ns/packet of the shared packet logic, each figure side by side with a baseline in the same
//! run (these machines are noisy: compare within a run, never against a number written down
//! earlier).
//!
//! The echo baseline is smoltcp's `wire` module, the zero-copy packet views people use for
//! this: check the frame and checksums, swap in place, fill the checksums anew. Its replies are
//! checked equal to ours before timing. The parse baseline is etherparse's `PacketHeaders`
//! (a full decode into owned headers).
//!
//! Frames are 64 bytes on the wire (60 without the FCS), the worst case for per-packet cost.
//! Every iteration first copies the request into the buffer (the echo rewrites it in place);
//! both sides pay that copy.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{PacketBuilder, PacketHeaders};
use packet::counter::{FlowKey, FlowTable, ProtocolCounters};
use packet::echo::{Responder, Verdict, reflect};
use packet::parse::parse;
use std::hint::black_box;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const CLIENT_IP: [u8; 4] = [198, 18, 0, 1];
const SERVER_IP: [u8; 4] = [198, 18, 0, 2];

fn udp4_64() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT_IP, SERVER_IP, 64)
        .udp(40000, 7);
    let payload = [0x5a; 18];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    assert_eq!(v.len(), 60);
    v
}

fn icmp4_64() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv4(CLIENT_IP, SERVER_IP, 64)
        .icmpv4_echo_request(0x1234, 1);
    let payload = [0x5a; 18];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    assert_eq!(v.len(), 60);
    v
}

fn udp6_78() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
        .ipv6(
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(40000, 7);
    let payload = [0x5a; 16];
    let mut v = Vec::new();
    b.write(&mut v, &payload).unwrap();
    v
}

/// The baseline echo, with smoltcp's `wire` module (the packet views of a widely used Rust
/// network stack), in place: check the frame and its checksums, swap MACs, addresses and
/// ports (or turn an ICMP echo request into a reply), and fill the checksums anew.
fn smoltcp_echo(buf: &mut [u8], len: usize) -> Option<usize> {
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpAddress, IpProtocol,
        Ipv4Packet, Ipv6Packet, UdpPacket,
    };
    let mut eth = EthernetFrame::new_checked(&mut buf[..len]).ok()?;
    let (src_mac, dst_mac) = (eth.src_addr(), eth.dst_addr());
    eth.set_src_addr(dst_mac);
    eth.set_dst_addr(src_mac);
    let ethertype = eth.ethertype();
    let l3 = eth.payload_mut();
    match ethertype {
        EthernetProtocol::Ipv4 => {
            let mut ip = Ipv4Packet::new_checked(l3).ok()?;
            if !ip.verify_checksum() {
                return None;
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            ip.set_src_addr(dst);
            ip.set_dst_addr(src);
            ip.set_hop_limit(64);
            let protocol = ip.next_header();
            match protocol {
                IpProtocol::Udp => {
                    let mut udp = UdpPacket::new_checked(ip.payload_mut()).ok()?;
                    let (s, d) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
                    if udp.dst_port() != 7 || udp.src_port() == 7 || !udp.verify_checksum(&s, &d) {
                        return None;
                    }
                    let (sp, dp) = (udp.src_port(), udp.dst_port());
                    udp.set_src_port(dp);
                    udp.set_dst_port(sp);
                    udp.fill_checksum(&d, &s);
                }
                IpProtocol::Icmp => {
                    let mut icmp = Icmpv4Packet::new_checked(ip.payload_mut()).ok()?;
                    if icmp.msg_type() != Icmpv4Message::EchoRequest || !icmp.verify_checksum() {
                        return None;
                    }
                    icmp.set_msg_type(Icmpv4Message::EchoReply);
                    icmp.fill_checksum();
                }
                _ => return None,
            }
            ip.fill_checksum();
        }
        EthernetProtocol::Ipv6 => {
            let mut ip = Ipv6Packet::new_checked(l3).ok()?;
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            ip.set_src_addr(dst);
            ip.set_dst_addr(src);
            ip.set_hop_limit(64);
            if ip.next_header() != IpProtocol::Udp {
                return None;
            }
            let mut udp = UdpPacket::new_checked(ip.payload_mut()).ok()?;
            let (s, d) = (IpAddress::Ipv6(src), IpAddress::Ipv6(dst));
            if udp.dst_port() != 7 || udp.src_port() == 7 || !udp.verify_checksum(&s, &d) {
                return None;
            }
            let (sp, dp) = (udp.src_port(), udp.dst_port());
            udp.set_src_port(dp);
            udp.set_dst_port(sp);
            udp.fill_checksum(&d, &s);
        }
        _ => return None,
    }
    Some(len)
}

fn bench_echo(c: &mut Criterion) {
    let responder = Responder::new();
    let mut group = c.benchmark_group("echo");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in [
        ("udp4_64B", udp4_64()),
        ("icmp4_64B", icmp4_64()),
        ("udp6_78B", udp6_78()),
    ] {
        // Both implementations must give the same reply, or the comparison means nothing.
        let mut ours = [0u8; 2048];
        let mut theirs = [0u8; 2048];
        ours[..frame.len()].copy_from_slice(&frame);
        theirs[..frame.len()].copy_from_slice(&frame);
        let Verdict::Reply { len, .. } = responder.respond(&mut ours, frame.len()) else {
            panic!("{name}: no reply");
        };
        assert_eq!(smoltcp_echo(&mut theirs, frame.len()), Some(len));
        assert_eq!(ours[..len], theirs[..len], "{name}: replies differ");

        let mut buf = [0u8; 2048];
        group.bench_with_input(BenchmarkId::new("ours", name), &frame, |b, f| {
            b.iter(|| {
                buf[..f.len()].copy_from_slice(f);
                black_box(responder.respond(black_box(&mut buf), f.len()))
            })
        });
        group.bench_with_input(BenchmarkId::new("smoltcp", name), &frame, |b, f| {
            b.iter(|| {
                buf[..f.len()].copy_from_slice(f);
                black_box(smoltcp_echo(black_box(&mut buf), f.len()))
            })
        });
        group.bench_with_input(BenchmarkId::new("reflect", name), &frame, |b, f| {
            b.iter(|| {
                buf[..f.len()].copy_from_slice(f);
                black_box(reflect(black_box(&mut buf), f.len()))
            })
        });
    }
    group.finish();
}

fn bench_parse_and_count(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    let frames = [
        ("udp4_64B", udp4_64()),
        ("tcp_syn", packet::fixtures::TCP_SYN.to_vec()),
        ("udp6_78B", udp6_78()),
    ];
    for (name, frame) in &frames {
        group.bench_with_input(BenchmarkId::new("ours", name), frame, |b, f| {
            b.iter(|| black_box(parse(black_box(f))))
        });
        group.bench_with_input(BenchmarkId::new("etherparse", name), frame, |b, f| {
            b.iter(|| black_box(PacketHeaders::from_ethernet_slice(black_box(f)).is_ok()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("count");
    group.throughput(Throughput::Elements(1));
    let mut counters = ProtocolCounters::default();
    let mut flows = FlowTable::with_capacity(65536, 42);
    let frame = udp4_64();
    group.bench_function("protocols/udp4_64B", |b| {
        b.iter(|| {
            let p = parse(black_box(&frame));
            counters.count(p.as_ref(), frame.len());
        })
    });
    // 1024 flows cycling through a 64k-slot table.
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for i in 0..1024u16 {
        let mut f = frame.clone();
        f[34..36].copy_from_slice(&(10000 + i).to_be_bytes());
        frames.push(f);
    }
    let mut i = 0;
    group.bench_function("protocols+flows/udp4_64B_1024_flows", |b| {
        b.iter(|| {
            let f = &frames[i & 1023];
            i += 1;
            if let Ok(h) = parse(black_box(f)) {
                counters.count(Ok(&h), f.len());
                if let Some(k) = FlowKey::from_frame(f, &h) {
                    flows.count(&k, f.len() as u64);
                }
            }
        })
    });
    group.finish();
    black_box(&counters);
}

criterion_group!(benches, bench_echo, bench_parse_and_count);
criterion_main!(benches);
