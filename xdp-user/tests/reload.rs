//! Rule reloads are atomic: every packet meets entirely the old or entirely the new rule set.
//!
//! Two rule sets mean the same but order their rules differently, so that a packet decided by
//! a mix of the two (some tables of one, some of the other, or a set half written) can pass
//! port 6100, which both drop. The rules file alternates between them, hundreds of SIGHUPs
//! while UDP to 6100 and 6101 flows without pause: not one datagram to 6100 may arrive, and
//! 6101 must be served all along. Needs root; fails with a clear message without it.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use xtask::testbed::{DUT_IF, DUT_IPV4};

/// Both sets drop 6100 and pass 6101, and pass broad ranges that include 6100 after the drop
/// rule. Rule i of one set is rarely rule i of the other: a mix passes 6100.
const SET_A: [&str; 6] = [
    "proto udp dport 6100 action drop",
    "proto udp dport 6101 action pass",
    "proto udp src 198.18.0.0/24 dport 6000-6200 action pass",
    "proto tcp dport 1-1024 action drop",
    "proto udp dst 198.18.0.2/32 sport 1-65535 action pass",
    "proto icmp action pass",
];
const SET_B: [&str; 6] = [
    "proto tcp dport 1-1024 action drop",
    "proto icmp action pass",
    "proto udp dport 6101 action pass",
    "proto udp dport 6100 action drop",
    "proto udp dst 198.18.0.2/32 sport 1-65535 action pass",
    "proto udp src 198.18.0.0/24 dport 6000-6200 action pass",
];

const RELOADS: usize = 300;

/// Sends UDP to 6100 and 6101 in turn, paced (about 20 pairs a millisecond), until its
/// standard input closes (at most 30 s or 2 million pairs). A send counts only when the kernel
/// handed the datagram on: with IP_RECVERR a datagram the veth could not take fails the call
/// (ENOBUFS) instead of vanishing, so the counts are what reached the DUT.
const SENDER: &str = r#"
import json, select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, getattr(socket, 'IP_RECVERR', 11), 1)
ok = {6100: 0, 6101: 0}
failed = 0
print('sending', flush=True)
end = time.time() + 30
i = 0
while time.time() < end and i < 2000000:
    for p in (6100, 6101):
        try:
            s.sendto(b'r%d' % i, ('@D4@', p))
            ok[p] += 1
        except OSError:
            failed += 1
    i += 1
    if i % 20 == 0:
        r, _, _ = select.select([sys.stdin], [], [], 0.001)
        if r:
            break
print(json.dumps({'6100': ok[6100], '6101': ok[6101], 'failed': failed}), flush=True)
"#;

fn now_tenths() -> u64 {
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        / 100) as u64
}

#[test]
fn reloads_under_traffic_are_atomic() {
    let tb = quiet_testbed();
    let dir = TempDir::new("reload");
    let rules = dir.0.join("rules");
    let (a, b) = (SET_A.join("\n") + "\n", SET_B.join("\n") + "\n");
    replace_file(&rules, &a);

    let sink = UdpSink::start(&tb, &[6100, 6101], 60.0);
    let mut l = Loader::start(
        &tb,
        &[
            "--iface",
            DUT_IF,
            "--rules",
            rules.to_str().unwrap(),
            "--json",
            "--duration",
            "60",
        ],
    );
    l.follow_stderr();

    let mut sender = tb
        .in_peer("python3")
        .args(["-c", &SENDER.replace("@D4@", DUT_IPV4)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3 in the peer namespace");
    let mut sender_out = BufReader::new(sender.stdout.take().unwrap());
    let mut line = String::new();
    sender_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "sending");
    std::thread::sleep(Duration::from_millis(300));

    // Each SIGHUP is acknowledged before the next: every one is acted on.
    let started = Instant::now();
    let first = now_tenths();
    for i in 0..RELOADS {
        replace_file(&rules, if i % 2 == 0 { &b } else { &a });
        l.signal(libc::SIGHUP);
        let ack = l.wait_stderr("reload", Duration::from_secs(2));
        match ack {
            Some(line) if line.contains("reloaded 6 rule(s)") => {}
            other => panic!("SIGHUP {i}: expected `reloaded 6 rule(s)`, got {other:?}"),
        }
    }
    let last = now_tenths();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));

    let mut stdin = sender.stdin.take().unwrap();
    let _ = stdin.write_all(b"stop\n");
    drop(stdin);
    let mut counts = String::new();
    sender_out.read_line(&mut counts).unwrap();
    let _ = sender.wait();
    let counts: serde_json::Value = serde_json::from_str(counts.trim())
        .unwrap_or_else(|e| panic!("no counts from the sender ({e}): {counts}"));
    let (to_6100, to_6101) = (n(&counts, "/6100"), n(&counts, "/6101"));

    let got = sink.finish(Duration::from_millis(300));
    l.signal(libc::SIGINT);
    let out = l.finish();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!tb.dut_xdp_attached().unwrap());
    let v = last_json(&out);
    eprintln!("{RELOADS} reloads in {took:?} while sending {counts}");
    let summary =
        format!("{RELOADS} reloads in {took:?}; sent {counts}; received {got:?}; report {v}");

    assert!(
        to_6100 > 10_000 && to_6101 > 10_000,
        "too little traffic to mean anything: {summary}"
    );
    assert_eq!(
        got.count(false, 6100),
        0,
        "datagrams to 6100 got through while the rules were swapped: {summary}"
    );
    // 6101 was served during the whole run of reloads: something arrived in every half
    // second of it.
    let tenths = got.tenths(false, 6101);
    for w in (first..last.saturating_sub(5)).step_by(5) {
        assert!(
            tenths.iter().any(|t| (w..w + 5).contains(t)),
            "nothing arrived on 6101 between {w} and {} tenths: {summary}",
            w + 5
        );
    }
    assert_eq!(
        got.count(false, 6101),
        to_6101,
        "every datagram to 6101 arrived: {summary}"
    );

    assert_eq!(
        err.matches("xdp-user: reloaded 6 rule(s)").count(),
        RELOADS,
        "{err}"
    );
    assert!(!err.contains("reload failed"), "{err}");
    assert_counts(
        &v,
        &[
            ("/reloads", RELOADS as u64),
            ("/reload_failures", 0),
            // Exactly what reached the DUT: every datagram to 6100 dropped, every one to
            // 6101 passed, nothing else on the link.
            ("/actions/drop", to_6100),
            ("/actions/pass", to_6101),
            ("/malformed", 0),
            ("/protocols/udp", to_6100 + to_6101),
        ],
    );
    // The counters per rule are those of the set in force at the end (A: the last SIGHUP
    // was the odd one), counted only while it was.
    let rules_json = v["rules"].as_array().unwrap();
    assert_eq!(rules_json.len(), SET_A.len(), "{v}");
    for (r, text) in rules_json.iter().zip(SET_A) {
        assert_eq!(r["rule"], text, "{v}");
    }
    assert!(n(&v, "/rules/0/packets") <= to_6100, "{v}");
    assert!(n(&v, "/rules/0/packets") > 0, "{v}");
}
