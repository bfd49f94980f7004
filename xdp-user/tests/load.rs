//! Integration tests of `xdp-user load` on network-namespace testbeds (shared/docs/testbed.md).
//!
//! Each test builds its own pair of namespaces, sends real traffic from the peer (`ping`, UDP and
//! TCP sockets, raw frames for ARP and malformed packets), and checks what the program counted,
//! what it dropped and passed, and that it leaves nothing attached. They need root and fail
//! with a clear message without it.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use xtask::testbed::{DUT_IF, Testbed};

/// Frames the program must count as malformed (after the MAC addresses).
fn malformed_frames() -> Vec<String> {
    vec![
        // IPv4 with IHL 3.
        "0800430000280000400040110000c6120001c6120002".into(),
        // IPv4 whose total length (0x0400) runs past the frame.
        "0800450004000000400040110000c6120001c6120002c350000700080000".into(),
        // IPv4 + TCP cut in the middle of the TCP header.
        "0800450000200000400040060000c6120001c6120002c3500050".into(),
        // IPv6 whose payload length (0x0100) runs past the frame.
        format!(
            "86dd6000000001001140{}{}",
            "20010db8000000000000000000000001", "20010db8000000000000000000000002"
        ),
        // A VLAN tag and nothing after it.
        "8100".into(),
    ]
}

const ARP_REQUEST: &str = "08060001080006040001020000000001c6120001000000000000c6120002";
const UNKNOWN_ETHER_TYPE: &str =
    "88b5000102030405060708090a0b0c0d0e0f101112131415161718192021222324252627";

/// The rules of the counting tests, and what each should match.
const RULES: [&str; 4] = [
    "proto udp dport 9 action drop",
    "proto udp dport 10-11 action pass",
    "proto tcp dport 80 action pass",
    "proto icmp icmp-type 8 action pass",
];

fn counts_exactly(mode: &str) {
    let tb = quiet_testbed();
    let listener = udp_listener(&tb, &[9, 10], 6.0);
    let mut args = vec![
        "--iface",
        DUT_IF,
        "--mode",
        mode,
        "--duration",
        "5",
        "--json",
    ];
    for r in &RULES {
        args.extend(["--rule", r]);
    }
    let mut loader = Loader::start(&tb, &args);

    let (pings, udp9, udp10, syns) = (4, 50, 30, 3);
    assert_eq!(
        ping(&tb, false, pings),
        pings as usize,
        "every IPv4 ping is answered"
    );
    assert_eq!(
        ping(&tb, true, pings),
        pings as usize,
        "every IPv6 ping is answered"
    );
    send_udp(&tb, 9, udp9);
    send_udp(&tb, 10, udp10);
    send_syns(&tb, 80, syns);
    inject(&tb, &[ARP_REQUEST.into(), UNKNOWN_ETHER_TYPE.into()]);
    let malformed = malformed_frames();
    inject(&tb, &malformed);

    let out = loader.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = last_json(&out);
    assert_eq!(v["mode"], if mode == "skb" { "skb" } else { "native" });
    let ipv4 = u64::from(pings + udp9 + udp10 + syns);
    for (path, want) in [
        ("/protocols/ipv4", ipv4),
        ("/protocols/ipv6", u64::from(pings)),
        ("/protocols/udp", u64::from(udp9 + udp10)),
        ("/protocols/tcp", u64::from(syns)),
        ("/protocols/icmp", u64::from(pings)),
        ("/protocols/icmpv6", u64::from(pings)),
        ("/protocols/arp", 1),
        ("/protocols/other", 1),
        ("/malformed", malformed.len() as u64),
        ("/unparsed", 0),
        // The drop rule's datagrams, and the malformed frames (the malformed policy's default).
        ("/actions/drop", u64::from(udp9) + malformed.len() as u64),
        ("/actions/xsk", 0),
        ("/rules/0/packets", u64::from(udp9)),
        ("/rules/1/packets", u64::from(udp10)),
        ("/rules/2/packets", u64::from(syns)),
        ("/rules/3/packets", u64::from(pings)),
    ] {
        assert_eq!(n(&v, path), want, "{path} in {v}");
    }
    let total = ipv4 + u64::from(pings) + 2 + malformed.len() as u64;
    assert_eq!(
        n(&v, "/actions/pass") + n(&v, "/actions/drop"),
        total,
        "{v}"
    );
    assert_eq!(v["rules"][0]["rule"], RULES[0]);
    assert_eq!(v["policy"]["malformed"], "drop", "{v}");
    assert_eq!(v["policy"]["unparsed"], "drop", "{v}");
    assert_eq!(v["policy"]["default"], "pass", "{v}");

    // The drop rule really dropped; the pass rule really passed to the kernel socket.
    let got = listener_counts(listener);
    assert_eq!(
        got.get(&9),
        Some(&0),
        "dropped datagrams must not arrive: {got:?}"
    );
    assert_eq!(got.get(&10), Some(&u64::from(udp10)), "{got:?}");
    assert!(!tb.dut_xdp_attached().unwrap(), "detached after --duration");
}

#[test]
fn counts_known_traffic_exactly_native_mode() {
    counts_exactly("native");
}

#[test]
fn counts_known_traffic_exactly_skb_mode() {
    counts_exactly("skb");
}

#[test]
fn sighup_reloads_rules_without_detaching() {
    let tb = quiet_testbed();
    let dir = std::env::temp_dir().join(format!("xdp-user-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules");
    std::fs::write(
        &rules,
        "# drop the echo port\nproto udp dport 9 action drop\n",
    )
    .unwrap();
    let listener = udp_listener(&tb, &[9], 8.0);
    let mut loader = Loader::start(
        &tb,
        &[
            "--iface",
            DUT_IF,
            "--rules",
            rules.to_str().unwrap(),
            "--duration",
            "7",
            "--json",
        ],
    );
    let prog_before = prog_id(&tb);
    send_udp(&tb, 9, 20);

    std::fs::write(&rules, "proto udp dport 9 action pass\n").unwrap();
    loader.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    send_udp(&tb, 9, 25);
    assert_eq!(
        prog_id(&tb),
        prog_before,
        "the same program stays attached across a reload"
    );

    // A broken rules file keeps the old rules running.
    std::fs::write(&rules, "proto udp dport 9 action maybe\n").unwrap();
    loader.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    send_udp(&tb, 9, 5);

    let out = loader.finish();
    let err = text(&out.stderr);
    assert!(err.contains("reloaded 1 rule"), "{err}");
    assert!(
        err.contains("reload failed, keeping the old rules"),
        "{err}"
    );
    let v = last_json(&out);
    assert_eq!(n(&v, "/actions/drop"), 20, "{v}");
    assert_eq!(
        n(&v, "/rules/0/packets"),
        30,
        "per-rule counters restart at a reload: {v}"
    );
    assert_eq!(
        n(&v, "/protocols/udp"),
        50,
        "global counters keep running: {v}"
    );
    assert_eq!(listener_counts(listener).get(&9), Some(&30));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A rule under a wider one is dead: `load` says so at start and at a reload that brings one
/// in, naming both rules, and the attached program bears it out (the dead rule decides
/// nothing).
#[test]
fn dead_rules_are_reported_and_decide_nothing() {
    let tb = quiet_testbed();
    let dir = TempDir::new("dead-rules");
    let rules = dir.0.join("rules");
    std::fs::write(&rules, "proto udp dport 9000 action pass\n").unwrap();
    let listener = udp_listener(&tb, &[9000], 8.0);
    let mut loader = Loader::start(
        &tb,
        &[
            "--iface",
            DUT_IF,
            "--rule",
            "proto udp action drop",
            "--rules",
            rules.to_str().unwrap(),
            "--duration",
            "6",
            "--json",
        ],
    );
    send_udp(&tb, 9000, 20);
    replace_file(&rules, "proto udp dport 9000 action drop\n");
    loader.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    send_udp(&tb, 9000, 5);
    let out = loader.finish();
    let err = text(&out.stderr);
    let dead = "warning: rule 2 (`proto udp dport 9000 action pass`) never applies: rule 1 \
                (`proto udp action drop`) matches every packet it matches, first, and does \
                `drop` with them instead of `pass`";
    let redundant = "warning: rule 2 (`proto udp dport 9000 action drop`) is redundant: rule 1 \
                     (`proto udp action drop`) matches every packet it matches, first, with the \
                     same action";
    assert_eq!(err.matches(dead).count(), 1, "said at start: {err}");
    assert_eq!(
        err.matches(redundant).count(),
        1,
        "said at the reload: {err}"
    );
    assert!(err.contains("reloaded 2 rule"), "{err}");
    let v = last_json(&out);
    assert_eq!(n(&v, "/actions/drop"), 25, "{v}");
    assert_eq!(n(&v, "/rules/0/packets"), 5, "{v}");
    assert_eq!(
        n(&v, "/rules/1/packets"),
        0,
        "the dead rule decided nothing: {v}"
    );
    assert_eq!(
        listener_counts(listener).get(&9000),
        Some(&0),
        "the dead pass rule passed nothing"
    );
}

fn prog_id(tb: &Testbed) -> String {
    let out = Command::new("ip")
        .args(["-n", &tb.dut_ns, "-d", "link", "show", DUT_IF])
        .output()
        .unwrap();
    let s = text(&out.stdout);
    s.split("prog/xdp id ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

fn ends_detached(sig: i32) {
    let tb = quiet_testbed();
    let mut loader = Loader::start(&tb, &["--iface", DUT_IF, "--rule", "proto udp action drop"]);
    loader.signal(sig);
    let out = loader.finish();
    if sig != libc::SIGKILL {
        assert!(out.status.success(), "{sig}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("detached from dut0"));
    }
    // The kernel releases a BPF link when its last file descriptor closes, even on SIGKILL;
    // give it a moment to tear the attachment down.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tb.dut_xdp_attached().unwrap() {
        assert!(
            Instant::now() < deadline,
            "XDP program still attached after signal {sig}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // And traffic flows again: the drop-all rule is gone.
    assert_eq!(ping(&tb, false, 2), 2);
}

#[test]
fn sigint_detaches() {
    ends_detached(libc::SIGINT);
}

#[test]
fn sigterm_detaches() {
    ends_detached(libc::SIGTERM);
}

#[test]
fn kill_9_leaves_nothing_attached() {
    ends_detached(libc::SIGKILL);
}

#[test]
fn a_closed_output_pipe_stops_it_cleanly() {
    let tb = quiet_testbed();
    stops_cleanly_when_its_readers_exit(&tb, "load", &["--rule", "proto udp action drop"]);
    assert_eq!(ping(&tb, false, 2), 2, "the drop rule is gone");
}

#[test]
fn errors_are_clear_and_attach_nothing() {
    let tb = quiet_testbed();
    fails_with(&tb, &["--iface", "nosuch0"], "no interface named `nosuch0`");
    fails_with(
        &tb,
        &["--iface", DUT_IF, "--rule", "proto udp prot 7 action drop"],
        "unknown key `prot`",
    );
    fails_with(
        &tb,
        &["--iface", DUT_IF, "--rule", "proto udp prot 7 action drop"],
        "^^^^",
    );
    fails_with(
        &tb,
        &["--iface", DUT_IF, "--rule", "dport 7-3 action drop"],
        "empty",
    );
    fails_with(
        &tb,
        &["--iface", DUT_IF, "--rules", "/nonexistent/rules"],
        "cannot read rules file",
    );
    // Loopback has no native (driver) XDP.
    fails_with(
        &tb,
        &["--iface", "lo", "--mode", "native"],
        "try `--mode skb`",
    );
    fails_with(&tb, &["--iface", DUT_IF, "--interval", "0"], "--interval");

    // Not root: the kernel refuses, and the message says what to do.
    let out = tb
        .in_dut("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(Path::new(xdp_user()))
        .args(["load", "--iface", DUT_IF])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("not running as root") && err.contains("Run as root"),
        "{err}"
    );
    assert!(!tb.dut_xdp_attached().unwrap());
}

/// An interface that already has an XDP program is refused, and that program is left in
/// place: the error names it, who holds it (another `xdp-user`), or, for a netlink
/// attachment that nobody holds (xdp-tools' `xdp-filter`), the command that removes it, and
/// that command works.
#[test]
fn a_taken_interface_is_refused_and_left_alone() {
    let tb = quiet_testbed();
    let mut first = Loader::start(
        &tb,
        &["--iface", DUT_IF, "--rule", "proto icmp action drop"],
    );
    let id = prog_id(&tb);
    for mode in ["auto", "native", "skb"] {
        let out = tb
            .in_dut(xdp_user())
            .args(["load", "--iface", DUT_IF, "--mode", mode, "--duration", "1"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{mode}: attached over another program"
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "dut0 already has an XDP program attached (id {id} `xdp_filter` in native mode)"
            )) && err.contains(&format!("held by {} (xdp-user)", first.pid())),
            "{mode}: {err}"
        );
    }
    assert_eq!(
        prog_id(&tb),
        id,
        "the first program is still the one attached"
    );
    assert_eq!(ping(&tb, false, 2), 0, "and still drops ICMP");
    first.signal(libc::SIGINT);
    assert!(first.finish().status.success());

    // A netlink attachment: xdp-filter's pins live in a bpffs mounted for this one command,
    // so afterwards no process or pin holds the program; only the interface does.
    let out = tb
        .in_dut("sh")
        .args([
            "-c",
            "mount -t bpf bpf /sys/fs/bpf && xdp-filter load --mode skb dut0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "xdp-filter: {}", text(&out.stderr));
    let out = tb
        .in_dut(xdp_user())
        .args(["load", "--iface", DUT_IF, "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let remedy = "ip link set dev dut0 xdpgeneric off";
    assert!(
        err.contains("in skb mode") && err.contains("no process holds it") && err.contains(remedy),
        "{err}"
    );
    let status = tb.in_dut("sh").args(["-c", remedy]).status().unwrap();
    assert!(status.success());
    assert!(!tb.dut_xdp_attached().unwrap(), "`{remedy}` removed it");
}

#[test]
fn auto_mode_falls_back_to_skb_where_native_is_missing() {
    let tb = quiet_testbed();
    let out = tb
        .in_dut(xdp_user())
        .args([
            "load",
            "--iface",
            "lo",
            "--mode",
            "auto",
            "--duration",
            "0.5",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("in skb (generic) mode"));
    assert_eq!(last_json(&out)["mode"], "skb");
}

/// Rules that would cut an SSH session into the interface are refused, saying which session
/// and which rule: the one this runs in (`SSH_CONNECTION`), and any established connection to
/// port 22 (from `/proc/net/tcp`, which `sudo` cannot hide). A rule that passes it first, or
/// `--force`, lets them through; a reload that would cut it keeps the old rules. Before, a
/// `--default drop` over SSH locked the engineer out.
#[test]
fn rules_that_would_cut_an_ssh_session_are_refused() {
    let tb = quiet_testbed();
    let load = |env: Option<&str>, args: &[&str]| {
        let mut c = tb.in_dut(xdp_user());
        if let Some(v) = env {
            c.env("SSH_CONNECTION", v);
        }
        let mut all = vec!["load", "--iface", DUT_IF, "--duration", "1"];
        all.extend_from_slice(args);
        c.args(all).output().unwrap()
    };
    let ours = "198.18.0.1 40000 198.18.0.2 22";
    let out = load(Some(ours), &["--default", "drop"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "the SSH session this runs in (198.18.0.1:40000 -> 198.18.0.2:22) would be cut: \
             the default action (no rule matches) drops it"
        ) && err.contains("--rule \"src 198.18.0.1/32 proto tcp dport 22 action pass\""),
        "{err}"
    );
    assert!(!tb.dut_xdp_attached().unwrap());
    // The suggested rule first: accepted. --force: accepted, and said.
    let pass = ["--rule", "src 198.18.0.1/32 proto tcp dport 22 action pass"];
    let out = load(Some(ours), &[&pass[..], &["--default", "drop"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = load(Some(ours), &["--default", "drop", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--force: the SSH session this runs in"));
    // A session on another host's address, or none: nothing to protect.
    let out = load(Some("10.9.9.1 40000 10.9.9.2 22"), &["--default", "drop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // An established connection to port 22 that is not ours: seen in /proc/net/tcp.
    let server = tb
        .in_dut("python3")
        .args([
            "-c",
            "import socket,time\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('198.18.0.2',22)); s.listen(1); c,a=s.accept(); time.sleep(15)\n",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let client = tb
        .in_peer("python3")
        .args([
            "-c",
            "import socket,time\n\
             c=socket.create_connection(('198.18.0.2',22)); time.sleep(15)\n",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = load(None, &["--rule", "proto tcp dport 22 action drop"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("an SSH session (198.18.0.1:")
            && err.contains(
                "-> 198.18.0.2:22) would be cut: rule `proto tcp dport 22 action drop` drops it"
            ),
        "{err}"
    );

    // A reload that would cut it is refused; the rules in force stay.
    let dir = TempDir::new("ssh-reload");
    let rules = dir.0.join("rules");
    std::fs::write(&rules, "proto udp dport 9 action drop\n").unwrap();
    let mut loader = Loader::start(
        &tb,
        &[
            "--iface",
            DUT_IF,
            "--rules",
            rules.to_str().unwrap(),
            "--duration",
            "3",
        ],
    );
    std::fs::write(&rules, "proto tcp action drop\n").unwrap();
    loader.signal(libc::SIGHUP);
    let out = loader.finish();
    let err = text(&out.stderr);
    assert!(
        err.contains("reload failed, keeping the old rules: an SSH session (198.18.0.1:"),
        "{err}"
    );
    for mut p in [server, client] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// Non-IP frames have a policy of their own (`--non-ip`, pass by default): a `--default drop`
/// firewall still answers ARP, so the host keeps its IPv4 neighbours. It used to take ARP with
/// the rest, and the host fell off the network when its neighbours' entries expired.
#[test]
fn a_default_of_drop_keeps_arp_and_non_ip_drop_does_not() {
    let tb = quiet_testbed();
    let arp_answered = |extra: &[&str]| {
        let mut args = vec![
            "--iface",
            DUT_IF,
            "--default",
            "drop",
            "--duration",
            "3",
            "--json",
        ];
        args.extend_from_slice(extra);
        let mut l = Loader::start(&tb, &args);
        // Forget the DUT's MAC, then make the peer ask for it (the ping itself is IP, dropped).
        let del = tb
            .in_peer("ip")
            .args(["neigh", "del", "198.18.0.2", "dev", "peer0"])
            .status();
        assert!(del.unwrap().success());
        let _ = tb
            .in_peer("ping")
            .args(["-c", "1", "-W", "1", "198.18.0.2"])
            .output();
        let neigh = tb
            .in_peer("ip")
            .args(["neigh", "show", "198.18.0.2", "dev", "peer0"])
            .output();
        let out = l.finish();
        let v = last_json(&out);
        (text(&neigh.unwrap().stdout).contains("lladdr"), v)
    };
    let (answered, v) = arp_answered(&[]);
    assert!(answered, "ARP answered under --default drop: {v}");
    assert_eq!(v["policy"]["non_ip"], "pass", "{v}");
    let (answered, v) = arp_answered(&["--non-ip", "drop"]);
    assert!(!answered, "ARP dropped with --non-ip drop: {v}");
    assert_eq!(v["policy"]["non_ip"], "drop", "{v}");
    assert!(n(&v, "/protocols/arp") >= 1, "{v}");
}

/// An address with a lifetime (leased by DHCP) would not be renewed under rules that drop
/// the DHCP server's replies: refused, with the rule that fixes it, before anything is
/// attached. Before, `--default drop` with SSH passed looked fine until the lease ran out.
#[test]
fn rules_that_would_let_a_lease_run_out_are_refused() {
    let tb = quiet_testbed();
    // What a DHCP client installs: an address with a valid lifetime ("dynamic").
    tb.ip_dut(&[
        "addr",
        "add",
        "198.18.0.9/24",
        "dev",
        DUT_IF,
        "valid_lft",
        "3600",
        "preferred_lft",
        "3600",
    ])
    .unwrap();
    let load = |args: &[&str]| {
        let mut all = vec!["load", "--iface", DUT_IF, "--duration", "1"];
        all.extend_from_slice(args);
        tb.in_dut(xdp_user()).args(all).output().unwrap()
    };
    let out = load(&["--default", "drop"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("the address 198.18.0.9 (valid for ")
            && err.contains(
                "would not be renewed: the default action (no rule matches) drops the DHCP \
                 server's replies (UDP 67 -> 68 to 198.18.0.9)"
            )
            && err.contains("--rule \"proto udp sport 67 dport 68 action pass\""),
        "{err}"
    );
    assert!(!tb.dut_xdp_attached().unwrap());
    let out = load(&[
        "--default",
        "drop",
        "--rule",
        "proto udp sport 67 dport 68 action pass",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // run's reflect takes all UDP, DHCP replies included: refused there too.
    subcommand_fails_with(
        &tb,
        "run",
        &["--iface", DUT_IF, "--action", "reflect", "--duration", "1"],
        "sends to the AF_XDP loop, which does not answer, the DHCP",
    );
}
