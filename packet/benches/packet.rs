//! ns/packet of the shared packet logic, each figure side by side with a naive baseline in the
//! same run (these machines are noisy: compare within a run, never against a number written
//! down earlier).
//!
//! The naive baseline is what a straightforward implementation does: decode every header into
//! owned structs (etherparse `PacketHeaders`), swap the fields, recompute every checksum from
//! scratch, and serialise the headers back into the frame.
//!
//! Frames are 64 bytes on the wire (60 without the FCS), the worst case for per-packet cost.
//! Every iteration first copies the request into the buffer (the echo rewrites it in place);
//! both sides pay that copy.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
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

/// The naive echo: full decode, field swaps on owned headers, full checksums, re-serialise.
fn naive_echo(buf: &mut [u8], len: usize) -> Option<usize> {
    let headers = PacketHeaders::from_ethernet_slice(&buf[..len]).ok()?;
    let mut eth = headers.link?.ethernet2()?;
    std::mem::swap(&mut eth.source, &mut eth.destination);
    let payload = headers.payload.slice().to_vec(); // what a naive implementation does
    let mut out = Vec::with_capacity(len);
    match (headers.net?, headers.transport?) {
        (NetHeaders::Ipv4(mut ip, _), TransportHeader::Udp(mut udp)) => {
            if udp.destination_port != 7 || udp.source_port == 7 {
                return None;
            }
            std::mem::swap(&mut ip.source, &mut ip.destination);
            std::mem::swap(&mut udp.source_port, &mut udp.destination_port);
            ip.time_to_live = 64;
            ip.header_checksum = ip.calc_header_checksum();
            udp.checksum = udp.calc_checksum_ipv4(&ip, &payload).ok()?;
            eth.write(&mut out).ok()?;
            ip.write(&mut out).ok()?;
            udp.write(&mut out).ok()?;
        }
        (NetHeaders::Ipv6(mut ip, _), TransportHeader::Udp(mut udp)) => {
            if udp.destination_port != 7 || udp.source_port == 7 {
                return None;
            }
            std::mem::swap(&mut ip.source, &mut ip.destination);
            std::mem::swap(&mut udp.source_port, &mut udp.destination_port);
            ip.hop_limit = 64;
            udp.checksum = udp.calc_checksum_ipv6(&ip, &payload).ok()?;
            eth.write(&mut out).ok()?;
            ip.write(&mut out).ok()?;
            udp.write(&mut out).ok()?;
        }
        (NetHeaders::Ipv4(mut ip, _), TransportHeader::Icmpv4(mut icmp)) => {
            if !matches!(icmp.icmp_type, etherparse::Icmpv4Type::EchoRequest(_)) {
                return None;
            }
            let etherparse::Icmpv4Type::EchoRequest(echo) = icmp.icmp_type else {
                return None;
            };
            std::mem::swap(&mut ip.source, &mut ip.destination);
            ip.time_to_live = 64;
            ip.header_checksum = ip.calc_header_checksum();
            icmp.icmp_type = etherparse::Icmpv4Type::EchoReply(echo);
            icmp.update_checksum(&payload);
            eth.write(&mut out).ok()?;
            ip.write(&mut out).ok()?;
            icmp.write(&mut out).ok()?;
        }
        _ => return None,
    }
    out.extend_from_slice(&payload);
    buf[..out.len()].copy_from_slice(&out);
    Some(out.len())
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
        assert_eq!(naive_echo(&mut theirs, frame.len()), Some(len));
        assert_eq!(ours[..len], theirs[..len], "{name}: replies differ");

        let mut buf = [0u8; 2048];
        group.bench_with_input(BenchmarkId::new("ours", name), &frame, |b, f| {
            b.iter(|| {
                buf[..f.len()].copy_from_slice(f);
                black_box(responder.respond(black_box(&mut buf), f.len()))
            })
        });
        group.bench_with_input(BenchmarkId::new("naive", name), &frame, |b, f| {
            b.iter(|| {
                buf[..f.len()].copy_from_slice(f);
                black_box(naive_echo(black_box(&mut buf), f.len()))
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
        group.bench_with_input(BenchmarkId::new("naive", name), frame, |b, f| {
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
