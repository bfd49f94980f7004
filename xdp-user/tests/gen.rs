//! Integration tests of `xdp-user gen`, the AF_XDP traffic generator and loopback tester:
//! against our AF_XDP echo (IPv4 and IPv6) and against an echo service that is not ours (a
//! plain kernel-socket server), every reply is matched and timed.

mod common;

use common::*;
use std::process::Stdio;
use xtask::testbed::{DUT_IF, DUT_IPV4, DUT_IPV6, DUT_MAC, PEER_IF, Testbed};

/// Runs `xdp-user gen` from the peer to `dst` on the DUT's MAC, with `extra` arguments.
fn gen_output(tb: &Testbed, dst: &str, extra: &[&str]) -> std::process::Output {
    tb.gen_from_peer(xdp_user(), dst)
        .args(extra)
        .output()
        .unwrap()
}

fn run_gen(tb: &Testbed, dst: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = gen_output(tb, dst, &args);
    assert!(out.status.success(), "gen failed: {}", text(&out.stderr));
    last_json(&out)
}

#[test]
fn gen_against_our_afxdp_echo_v4_and_v6() {
    let tb = quiet_testbed();
    let echo = Loader::start_cmd(&tb, "run", &["--iface", DUT_IF, "--json"]);
    for (dst, count) in [(DUT_IPV4, "20000"), (DUT_IPV6, "10000")] {
        let v = run_gen(
            &tb,
            dst,
            &["--count", count, "--rate", "50000", "--flows", "8"],
        );
        let sent = n(&v, "/sent");
        assert_eq!(sent, count.parse::<u64>().unwrap(), "{v}");
        assert_eq!(n(&v, "/received"), sent, "every reply matched: {v}");
        assert_eq!(n(&v, "/foreign"), 0, "{v}");
        assert!(
            v["latency_us"]["p99"].as_u64().unwrap() >= v["latency_us"]["p50"].as_u64().unwrap()
        );
        assert!(v["pps_sent"].as_f64().unwrap() > 0.0);
    }
    let mut echo = echo;
    echo.signal(libc::SIGINT);
    let out = echo.finish();
    let v = last_json(&out);
    assert_eq!(n(&v, "/echoed"), 30000, "{v}");
    assert!(!tb.dut_xdp_attached().unwrap());
}

#[test]
fn gen_against_an_echo_service_that_is_not_ours() {
    let tb = quiet_testbed();
    // A plain UDP echo server on a kernel socket in the DUT namespace.
    let server = tb
        .in_dut("python3")
        .args([
            "-c",
            &format!(
                "import socket,time\n\
                 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('{DUT_IPV4}',7)); s.settimeout(0.2)\n\
                 end=time.time()+8\n\
                 while time.time()<end:\n\
                 \x20   try:\n\
                 \x20       d,a=s.recvfrom(2048); s.sendto(d,a)\n\
                 \x20   except socket.timeout: pass\n"
            ),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let v = run_gen(
        &tb,
        DUT_IPV4,
        &["--count", "2000", "--rate", "2000", "--size", "128"],
    );
    assert_eq!(n(&v, "/sent"), 2000, "{v}");
    assert_eq!(
        n(&v, "/received"),
        2000,
        "every reply of the kernel's echo matched: {v}"
    );
    let _ = server.wait_with_output();
}

/// A device that answers twice and out of order: `gen` counts each request once, and says
/// how many replies were duplicates and how many came late.
#[test]
fn gen_counts_replies_by_sequence_number() {
    let tb = quiet_testbed();
    // Replies to each pair of requests (a, b) go back as b, b, a, a.
    let server = tb
        .in_dut("python3")
        .args([
            "-c",
            &format!(
                "import socket,time\n\
                 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('{DUT_IPV4}',7)); s.settimeout(0.2)\n\
                 end=time.time()+8; held=None\n\
                 while time.time()<end:\n\
                 \x20   try:\n\
                 \x20       d,a=s.recvfrom(2048)\n\
                 \x20   except socket.timeout: continue\n\
                 \x20   if held is None: held=(d,a); continue\n\
                 \x20   for x in ((d,a),(d,a),held,held): s.sendto(*x)\n\
                 \x20   held=None\n"
            ),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let v = run_gen(&tb, DUT_IPV4, &["--count", "2000", "--rate", "4000"]);
    assert_eq!(n(&v, "/sent"), 2000, "{v}");
    assert_eq!(n(&v, "/received"), 2000, "each request counted once: {v}");
    assert_eq!(n(&v, "/duplicates"), 2000, "{v}");
    assert_eq!(n(&v, "/reordered"), 1000, "{v}");
    assert_eq!(n(&v, "/stale") + n(&v, "/foreign"), 0, "{v}");
    assert_eq!(v["loss"].as_f64(), Some(0.0), "{v}");
    let _ = server.wait_with_output();
}

/// Below the rate where anything is lost, every counter on the path tells the same story: the
/// generator's sent and received, the peer interface's tx and rx, the DUT interface's rx and
/// tx, the XDP program's redirects and the loop's rx, echoed and tx.
#[test]
fn counters_agree_along_the_path() {
    let tb = quiet_testbed();
    let c = xtask::agree::path_counters(&tb, xdp_user(), 20_000, 20_000).unwrap();
    assert!(
        c.disagreements().is_empty(),
        "{:?}\n{}",
        c.disagreements(),
        c.table()
    );
    assert!(!tb.dut_xdp_attached().unwrap());
}

#[test]
fn gen_rejects_bad_arguments() {
    let tb = quiet_testbed();
    for (mut args, message) in [
        (vec!["--size", "40"], "--size"),
        (vec!["--sport", "9-3"], "--sport"),
        (vec!["--rate", "0"], "--rate"),
        (
            vec!["--src", "2001:db8::1"],
            "--src 2001:db8::1 and --dst 198.18.0.2 are of different IP families",
        ),
    ] {
        args.extend(["--count", "1"]);
        let out = gen_output(&tb, DUT_IPV4, &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = tb
        .in_peer(xdp_user())
        .args([
            "gen",
            "--iface",
            PEER_IF,
            "--dst-mac",
            "nonsense",
            "--dst",
            DUT_IPV4,
        ])
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains("--dst-mac"));
}

/// `gen` without --dst-mac finds the next hop's MAC address as the kernel would: from the
/// kernel's neighbour table when it holds it, else by asking the link (ARP, neighbour
/// solicitation); through a gateway when the route says so; and says plainly when nobody
/// answers.
#[test]
fn gen_finds_the_mac_address_to_send_to() {
    let tb = quiet_testbed();
    let mut echo = Loader::start_cmd(&tb, "run", &["--iface", DUT_IF, "--json"]);
    let gen_to = |dst: &str| {
        tb.in_peer(xdp_user())
            .args(["gen", "--iface", PEER_IF, "--dst", dst])
            .args(["--count", "500", "--rate", "5000", "--json"])
            .output()
            .unwrap()
    };
    // The testbed's neighbour entries are permanent (a quiet link): removed one by one.
    let forget = |addr: &str| {
        let s = tb
            .in_peer("ip")
            .args(["neigh", "del", addr, "dev", PEER_IF])
            .status();
        assert!(s.unwrap().success(), "ip neigh del {addr}");
    };
    let said = |out: &std::process::Output| {
        text(&out.stderr)
            .lines()
            .find(|l| l.starts_with("xdp-user gen:"))
            .unwrap_or_default()
            .to_string()
    };
    for (dst, how) in [
        (DUT_IPV4, "ARP reply"),
        (DUT_IPV6, "neighbour advertisement"),
    ] {
        // Nothing known: our own question, answered.
        forget(dst);
        let out = gen_to(dst);
        assert!(out.status.success(), "{dst}: {}", text(&out.stderr));
        assert!(
            said(&out).contains(&format!("to {DUT_MAC} ({dst}, on the link; {how})")),
            "{}",
            said(&out)
        );
        let v = last_json(&out);
        assert_eq!((n(&v, "/sent"), n(&v, "/received")), (500, 500), "{v}");
        // Known to the kernel (a ping resolved it): taken from its table, nothing asked.
        assert_eq!(ping(&tb, dst.contains(':'), 1), 1);
        let out = gen_to(dst);
        assert!(
            said(&out).contains("the kernel's neighbour table"),
            "{}",
            said(&out)
        );
        assert_eq!(n(&last_json(&out), "/received"), 500);
    }
    // Behind a router: the gateway's address is asked for, not the target's.
    let route = tb
        .in_peer("ip")
        .args(["route", "add", "203.0.113.0/24", "via", DUT_IPV4])
        .status();
    assert!(route.unwrap().success());
    forget(DUT_IPV4);
    let out = gen_to("203.0.113.7");
    assert!(
        said(&out).contains(&format!("to {DUT_MAC} (gateway {DUT_IPV4}; ARP reply)")),
        "{}",
        text(&out.stderr)
    );
    // Nobody there: a clear refusal within the kernel's own three tries, nothing attached.
    let started = std::time::Instant::now();
    let out = gen_to("198.18.0.99");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no answer from 198.18.0.99 on peer0 to 3 ARP requests")
            && text(&out.stderr).contains("--dst-mac"),
        "{}",
        text(&out.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    let link = tb
        .in_peer("ip")
        .args(["-d", "link", "show", PEER_IF])
        .output();
    assert!(!text(&link.unwrap().stdout).contains("prog/xdp"));
    echo.signal(libc::SIGINT);
    echo.finish();
}

/// On a link that is down nothing would leave: `gen` waits a moment for it (a link just set
/// up takes that long to say so), then refuses, where it used to report 0 sent and exit 0.
#[test]
fn gen_refuses_a_link_that_stays_down() {
    let tb = quiet_testbed();
    let set = |state: &str| {
        let s = tb
            .in_peer("ip")
            .args(["link", "set", PEER_IF, state])
            .status();
        assert!(s.unwrap().success());
    };
    set("down");
    let out = gen_output(&tb, DUT_IPV4, &["--count", "10"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("peer0 has no link (operstate down)"),
        "{}",
        text(&out.stderr)
    );
    // Set up just before: it goes ahead.
    set("up");
    let v = run_gen(&tb, DUT_IPV4, &["--count", "10", "--rate", "100"]);
    assert_eq!(n(&v, "/sent"), 10, "{v}");
}
