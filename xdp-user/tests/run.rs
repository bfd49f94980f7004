//! Integration tests of `xdp-user run`, the AF_XDP poll-mode data path, on network-namespace
//! testbeds: real `ping` and UDP clients in the peer namespace get their answers from the
//! AF_XDP loop (not the kernel), everything else still reaches the kernel, malformed and
//! not-for-us frames are counted and never answered, two queues both answer, reflect / count /
//! drop do what they say, and no UMEM frame is ever lost.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;
use xtask::testbed::{DUT_IF, DUT_IPV4, DUT_MAC, Options, PEER_IF, PEER_IPV4, Testbed};

fn testbed(queues: u32) -> Testbed {
    require_root();
    Testbed::new(&Options {
        queues,
        quiet: true,
        ..Options::default()
    })
    .expect("testbed")
}

/// Reads one counter of the DUT kernel's SNMP statistics (`/proc/net/snmp` or `snmp6`).
fn dut_snmp(tb: &Testbed, file: &str, table: &str, name: &str) -> u64 {
    let out = tb
        .in_dut("cat")
        .arg(format!("/proc/net/{file}"))
        .output()
        .unwrap();
    let text = text(&out.stdout);
    if file == "snmp6" {
        return text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/net/snmp6"));
    }
    let mut lines = text.lines().filter(|l| l.starts_with(&format!("{table}:")));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names.split_whitespace().position(|w| w == name).unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

fn run_loader(tb: &Testbed, args: &[&str]) -> Loader {
    let mut all = vec!["--iface", DUT_IF, "--json", "--interval", "0.5"];
    all.extend_from_slice(args);
    Loader::start_cmd(tb, "run", &all)
}

fn finish_json(mut l: Loader) -> serde_json::Value {
    l.signal(libc::SIGINT);
    let out = l.finish();
    assert!(
        out.status.success(),
        "xdp-user run failed: {}",
        text(&out.stderr)
    );
    // The queue threads end because of the signal: no false alarm about them (it came in
    // about one stop of two).
    let err = text(&out.stderr);
    assert!(
        !err.contains("ended unexpectedly"),
        "a stop signal is not a failure: {err}"
    );
    let v = last_json(&out);
    assert_eq!(
        n(&v, "/frames_lost"),
        0,
        "every UMEM frame is accounted for: {v}"
    );
    // By identity: no frame handed back twice, none left in the loop, and every frame in
    // exactly one place (free, or held by the kernel for RX or TX).
    for q in v["queues"].as_array().expect("queues") {
        let f = &q["frames"];
        let get = |k: &str| {
            f[k].as_u64()
                .unwrap_or_else(|| panic!("no frames.{k} in {q}"))
        };
        assert_eq!((get("violations"), get("in_loop")), (0, 0), "{q}");
        assert_eq!(
            get("free") + get("kernel_rx") + get("kernel_tx"),
            get("total"),
            "{q}"
        );
        assert!(get("fill_ring") <= get("kernel_rx"), "{q}");
        assert!(q["ring_errors"]["fatal"].is_null(), "{q}");
    }
    v
}

#[test]
fn ping_is_answered_by_the_afxdp_loop_not_the_kernel() {
    let tb = testbed(1);
    let kernel_v4 = dut_snmp(&tb, "snmp", "Icmp", "OutEchoReps");
    let kernel_v6 = dut_snmp(&tb, "snmp6", "", "Icmp6OutEchoReplies");
    let l = run_loader(&tb, &[]);
    assert_eq!(ping(&tb, false, 5), 5, "every IPv4 ping answered");
    assert_eq!(ping(&tb, true, 5), 5, "every IPv6 ping answered");
    let v = finish_json(l);
    assert_eq!(n(&v, "/echoed"), 10, "{v}");
    assert_eq!(n(&v, "/protocols/icmp"), 5);
    assert_eq!(n(&v, "/protocols/icmpv6"), 5);
    // The kernel's own echo replies did not move: the loop answered.
    assert_eq!(dut_snmp(&tb, "snmp", "Icmp", "OutEchoReps"), kernel_v4);
    assert_eq!(dut_snmp(&tb, "snmp6", "", "Icmp6OutEchoReplies"), kernel_v6);
    assert!(!tb.dut_xdp_attached().unwrap(), "detached on SIGINT");
}

/// `--busy-poll` on a driver that gives the socket no NAPI id (veth) has nothing to poll: the
/// queue says so at its first frame and polls as without the flag, sleeping when idle. Before,
/// it spun beside the driver's own receive work (0.40 of the default loop's rate on the
/// testbed) and never slept. If a kernel gives veth's queues NAPI ids, this test fails, and
/// the state is `on`: then busy polling works here and the test should say so instead.
#[test]
fn busy_poll_with_no_napi_id_to_poll_says_so_and_polls_as_without_it() {
    let tb = testbed(1);
    let mut l = run_loader(&tb, &["--busy-poll"]);
    assert_eq!(ping(&tb, false, 3), 3, "every ping answered");
    // Idle long enough for the default loop to sleep (after 2048 empty polls).
    std::thread::sleep(Duration::from_millis(500));
    l.signal(libc::SIGINT);
    let out = l.finish();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v = last_json(&out);
    let q = &v["queues"][0];
    assert_eq!(q["busy_poll"]["state"], "unavailable", "{q}");
    assert!(q["busy_poll"]["napi_id"].is_null(), "{q}");
    assert!(
        err.contains(
            "queue 0: --busy-poll has nothing to poll: dut0 gives the AF_XDP socket no NAPI id"
        ),
        "{err}"
    );
    assert!(
        err.contains("busy polling unavailable (no NAPI id): polled as without it"),
        "{err}"
    );
    assert_eq!(n(&v, "/echoed"), 3, "{v}");
    assert!(n(&v, "/idle_sleeps") > 0, "an idle queue sleeps again: {v}");
}

/// Started under load (50 kpps of echo requests already arriving), the loop loses nothing at
/// start: its fill ring is primed and its thread polls before the program is attached. Before,
/// every frame redirected until the thread first refilled was dropped by the kernel (about
/// 20 ms of traffic: 4273 frames at 200 kpps).
#[test]
fn started_under_load_it_loses_nothing_at_start() {
    let tb = testbed(1);
    let load = tb
        .in_peer(xdp_user())
        .args([
            "gen", "--iface", PEER_IF, "--dst", DUT_IPV4, "--src", PEER_IPV4,
        ])
        .args(["--rate", "50000", "--duration", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut load = ChildGuard(Some(load));
    std::thread::sleep(Duration::from_millis(1200));
    let out = run_loader(&tb, &["--duration", "1.5"]).finish();
    let _ = load.0.take().map(|mut c| c.wait());
    let v = last_json(&out);
    assert!(n(&v, "/rx") > 30_000, "the load arrived: {v}");
    let kernel = &v["queues"][0]["kernel"];
    assert_eq!(kernel["fill_ring_empty"], 0, "{v}");
    assert_eq!(kernel["rx_dropped"], 0, "{v}");
    assert_eq!(n(&v, "/rx"), n(&v, "/echoed"), "{v}");
}

/// Kills a child process that a failed assertion leaves behind.
struct ChildGuard(Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A rule of the user's over the action's own: `run` says which of echo's rules it makes
/// dead, and it is so: the kernel answers the pings, the loop none.
#[test]
fn a_user_rule_that_kills_an_echo_rule_is_reported_and_is_so() {
    let tb = testbed(1);
    let kernel_v4 = dut_snmp(&tb, "snmp", "Icmp", "OutEchoReps");
    let mut l = run_loader(&tb, &["--rule", "proto icmp action pass"]);
    l.follow_stderr();
    let said = l.wait_stderr(
        "never applies: rule 1 (`proto icmp action pass`)",
        Duration::from_secs(5),
    );
    assert!(
        said.as_ref().is_some_and(|s| s
            .contains("(`dst 198.18.0.2/32 proto icmp icmp-type 8 action xsk`)")
            && s.contains("does `pass` with them instead of `xsk`")),
        "{said:?}"
    );
    assert_eq!(ping(&tb, false, 3), 3, "the kernel answers");
    let v = finish_json(l);
    assert_eq!(n(&v, "/echoed"), 0, "{v}");
    assert_eq!(dut_snmp(&tb, "snmp", "Icmp", "OutEchoReps"), kernel_v4 + 3);
}

#[test]
fn udp_echo_returns_every_size_byte_for_byte_and_other_traffic_reaches_the_kernel() {
    let tb = testbed(1);
    // Kernel sockets on the device side: UDP 9000 and a TCP listener on 8080.
    let listener = udp_listener(&tb, &[9000], 8.0);
    let tcp_server = tb
        .in_dut("python3")
        .args([
            "-c",
            &format!(
                "import socket\n\
                 s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                 s.bind(('{DUT_IPV4}',8080)); s.listen(1); s.settimeout(8)\n\
                 c,_=s.accept(); c.sendall(c.recv(100)); c.close()\n"
            ),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let l = run_loader(&tb, &["--echo-ports", "7,5000-5001"]);
    let report = peer_python(
        &tb,
        "import socket\n\
         ok=[]; bad=[]\n\
         for fam, dst, top in ((socket.AF_INET, '198.18.0.2', 1472), (socket.AF_INET6, '2001:db8::2', 1452)):\n\
         \x20   s=socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(1)\n\
         \x20   for port in (7, 5001):\n\
         \x20       for n in (1, 2, 3, 17, 64, 100, 255, 256, 512, 1000, 1400, top - 1, top):\n\
         \x20           p = bytes((i * 31 + n) & 255 for i in range(n))\n\
         \x20           s.sendto(p, (dst, port))\n\
         \x20           try:\n\
         \x20               d, a = s.recvfrom(4096)\n\
         \x20               (ok if d == p and a[1] == port else bad).append(n)\n\
         \x20           except socket.timeout:\n\
         \x20               bad.append(n)\n\
         u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range(10): u.sendto(b'to the kernel', ('198.18.0.2', 9000))\n\
         t=socket.create_connection(('198.18.0.2', 8080), timeout=3); t.sendall(b'tcp ok'); tcp=t.recv(100)\n\
         print(len(ok), len(bad), bad, tcp.decode())\n",
    );
    let fields: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(
        fields[1], "0",
        "datagrams not echoed byte for byte: {report}"
    );
    assert_eq!(fields[0], "52", "{report}");
    assert_eq!(
        fields.last(),
        Some(&"ok"),
        "TCP reached the kernel's socket: {report}"
    );
    tcp_server.wait_with_output().unwrap();
    let v = finish_json(l);
    assert_eq!(n(&v, "/echoed"), 52, "{v}");
    assert_eq!(n(&v, "/tx"), 52);
    assert_eq!(
        listener_counts(listener).get(&9000),
        Some(&10),
        "UDP 9000 reached the kernel"
    );
}

#[test]
fn malformed_and_not_for_us_frames_are_counted_and_never_answered() {
    let tb = testbed(1);
    let l = run_loader(&tb, &[]);
    // Each of these passes the XDP program's rules (UDP to port 7, ICMP echo request), so it
    // reaches the loop, whose stricter checks refuse it.
    let frames = [
        // UDP to port 7 with a wrong IPv4 header checksum (left wrong below): malformed.
        "0800450000 1c00004000401100 00c6120001c6120002 9c40000700080000".replace(' ', ""),
        // 4 bytes of IP payload beyond a UDP length of 8: the lengths disagree, malformed.
        "0800450000 2000004000401100 00c6120001c6120002 9c40000700080000 41424344".replace(' ', ""),
        // UDP from port 7 to port 7 (two echo services would ping-pong): not for us.
        "0800450000 1c00004000401100 00c6120001c6120002 0007000700080000".replace(' ', ""),
    ];
    // Fix the checksums the way the sender would, except the one that must stay wrong.
    let frames: Vec<String> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| fix_frame(f, i != 0))
        .collect();
    let before = peer_frames_from_dut(&tb, || inject(&tb, &frames));
    let v = finish_json(l);
    assert_eq!(before, 0, "nothing may be sent back for these frames");
    assert_eq!(n(&v, "/malformed"), 2, "{v}");
    assert_eq!(n(&v, "/not_for_us"), 1, "{v}");
    assert_eq!(n(&v, "/tx"), 0, "{v}");
}

/// On a router, `run --action echo` answers what is addressed to the router; pings and UDP
/// echo for a host behind it are forwarded to that host, which answers them. The loop used to
/// take every echo request that reached the interface and answer it in the name of whatever
/// address it was for: the host behind never saw its pings. A broadcast ping is left to the
/// kernel, which ignores it.
#[test]
fn echo_answers_for_the_hosts_own_addresses_and_transit_is_forwarded() {
    let tb = testbed(1);
    // Behind the DUT: a host at 10.77.0.2, in a namespace of its own; the DUT routes.
    let far = format!("{}-far", tb.dut_ns);
    let sh = |ns: &str, cmd: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    assert!(
        std::process::Command::new("ip")
            .args(["netns", "add", &far])
            .status()
            .unwrap()
            .success()
    );
    let _far = Gone(far.clone());
    sh(
        &tb.dut_ns,
        &format!(
            "ip link add far-d type veth peer far0 netns {far} && ip addr add 10.77.0.1/24 dev \
             far-d && ip link set far-d up && sysctl -qw net.ipv4.ip_forward=1"
        ),
    );
    sh(
        &far,
        "ip addr add 10.77.0.2/24 dev far0 && ip link set far0 up && ip link set lo up && ip \
         route add default via 10.77.0.1",
    );
    sh(
        &tb.peer_ns,
        &format!("ip route add 10.77.0.0/24 via {}", xtask::testbed::DUT_IPV4),
    );
    let far_echo_replies = || {
        let snmp = sh(&far, "cat /proc/net/snmp");
        let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
        let at = names
            .split_whitespace()
            .position(|w| w == "OutEchoReps")
            .unwrap();
        values
            .split_whitespace()
            .nth(at)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let l = run_loader(&tb, &[]);
    let transit = tb
        .in_peer("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2"])
        .output()
        .unwrap();
    assert!(transit.status.success(), "{}", text(&transit.stdout));
    assert_eq!(
        far_echo_replies(),
        3,
        "the host behind the router answered its pings"
    );
    assert_eq!(
        ping(&tb, false, 2),
        2,
        "the router's own address: answered by the loop"
    );
    let broadcast = tb
        .in_peer("ping")
        .args(["-b", "-c", "2", "-i", "0.2", "-W", "1", "198.18.0.255"])
        .output()
        .unwrap();
    assert!(
        !broadcast.status.success(),
        "nobody answers a broadcast ping"
    );
    let v = finish_json(l);
    assert_eq!(n(&v, "/echoed"), 2, "only the router's own pings: {v}");
    assert_eq!(n(&v, "/not_for_us"), 0, "{v}");
}

/// Completes the IPv4 header and UDP/ICMP checksums of a frame given after the MACs (hex),
/// unless `fix` is false.
fn fix_frame(hex: &str, fix: bool) -> String {
    let mut f: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    if fix {
        let sum = |b: &[u8]| {
            let mut acc: u32 = b
                .chunks(2)
                .map(|w| u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0)))
                .sum();
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            !(acc as u16)
        };
        // f[0..2] is the ether type; the IPv4 header is f[2..22].
        f[12..14].copy_from_slice(&[0, 0]);
        let c = sum(&f[2..22]);
        f[12..14].copy_from_slice(&c.to_be_bytes());
        if f[11] == 1 {
            f[24..26].copy_from_slice(&[0, 0]);
            let c = sum(&f[22..]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
    } else {
        f[12..14].copy_from_slice(&[0xde, 0xad]);
    }
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts frames from the DUT's MAC that reach the peer while `f` runs (and 0.5 s after).
fn peer_frames_from_dut(tb: &Testbed, f: impl FnOnce()) -> u64 {
    let mac = DUT_MAC.replace(':', "");
    let capture = tb
        .in_peer("python3")
        .args([
            "-c",
            &format!(
                "import socket,time\n\
                 s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3)); s.bind(('peer0',0)); s.settimeout(0.1)\n\
                 n=0; end=time.time()+2.0\n\
                 while time.time()<end:\n\
                 \x20   try:\n\
                 \x20       d,a=s.recvfrom(4096)\n\
                 \x20       if a[2]!=socket.PACKET_OUTGOING and d[6:12].hex()=='{mac}': n+=1\n\
                 \x20   except socket.timeout: pass\n\
                 print(n)\n"
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    f();
    let out = capture.wait_with_output().unwrap();
    text(&out.stdout).trim().parse().unwrap()
}

#[test]
fn two_queues_each_with_a_socket_both_answer() {
    let tb = testbed(2);
    let l = run_loader(&tb, &["--queues", "all"]);
    // Many flows (source ports), so the peer's transmit queue choice, and so the DUT's RX
    // queue, varies.
    let out = peer_python(
        &tb,
        "import socket\n\
         got=0\n\
         for i in range(64):\n\
         \x20   s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1)\n\
         \x20   s.bind(('198.18.0.1', 20000 + i))\n\
         \x20   for j in range(4):\n\
         \x20       s.sendto(b'q%d' % j, ('198.18.0.2', 7))\n\
         \x20       try: s.recvfrom(100); got += 1\n\
         \x20       except socket.timeout: pass\n\
         print(got)\n",
    );
    assert_eq!(out.trim(), "256", "every datagram echoed");
    let v = finish_json(l);
    let queues = v["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2, "{v}");
    for q in queues {
        assert!(
            n(q, "/echoed") > 0,
            "queue {} answered nothing: {v}",
            q["queue"]
        );
    }
    assert_eq!(n(&v, "/echoed"), 256);
}

#[test]
fn reflect_count_and_drop_do_what_they_say() {
    // reflect: the datagram comes back with addresses and ports swapped, payload intact.
    let tb = testbed(1);
    let l = run_loader(&tb, &["--action", "reflect"]);
    let out = peer_python(
        &tb,
        "import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1); got=0\n\
         for i in range(20):\n\
         \x20   s.sendto(b'reflect me %d' % i, ('198.18.0.2', 5555))\n\
         \x20   d,a=s.recvfrom(100); got += (d == b'reflect me %d' % i and a == ('198.18.0.2', 5555))\n\
         print(got)\n",
    );
    assert_eq!(out.trim(), "20");
    let v = finish_json(l);
    assert_eq!((n(&v, "/reflected"), n(&v, "/tx")), (20, 20), "{v}");

    // count and drop: the loop takes every datagram, nothing comes back, the kernel's socket
    // on the same port gets nothing.
    for (action, field) in [("count", "/counted"), ("drop", "/dropped")] {
        let listener = udp_listener(&tb, &[5555], 4.0);
        let mut l = run_loader(&tb, &["--action", action]);
        l.follow_stderr();
        // dut0 has addresses: the host's own UDP goes too, and it is told so.
        let said = l.wait_stderr(
            "takes every UDP datagram that reaches dut0",
            Duration::from_secs(5),
        );
        assert!(
            said.as_ref()
                .is_some_and(|s| s.contains("198.18.0.2") && s.contains("--rule")),
            "{action}: {said:?}"
        );
        let back = peer_frames_from_dut(&tb, || send_udp(&tb, 5555, 30));
        let v = finish_json(l);
        assert_eq!(n(&v, field), 30, "{action}: {v}");
        assert_eq!(n(&v, "/tx"), 0, "{action}: {v}");
        assert_eq!(back, 0, "{action}: nothing comes back");
        assert_eq!(listener_counts(listener).get(&5555), Some(&0), "{action}");
    }
}

#[test]
fn a_closed_output_pipe_stops_it_cleanly() {
    let tb = testbed(1);
    stops_cleanly_when_its_readers_exit(&tb, "run", &[]);
    assert_eq!(ping(&tb, false, 2), 2, "the kernel answers again");
}

#[test]
fn kill_9_leaves_nothing_attached_and_zero_copy_fails_clearly_on_veth() {
    let tb = testbed(1);
    let l = run_loader(&tb, &[]);
    l.signal(libc::SIGKILL);
    let mut l = l;
    l.finish();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tb.dut_xdp_attached().unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "still attached after kill -9"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ping(&tb, false, 2), 2, "the kernel answers again");

    let out = tb
        .in_dut(xdp_user())
        .args(["run", "--iface", DUT_IF, "--zero-copy", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot do zero-copy") && err.contains("--copy"),
        "{err}"
    );
    assert!(!tb.dut_xdp_attached().unwrap());
}

/// A UDP client whose veth leaves checksums to the "NIC" (offload on, the default): without
/// help its echoes carry the unfinished checksum and its own stack drops them; the loop counts
/// such requests, says once what causes it and how to fix it, and `--complete-checksums`
/// finishes them so the client gets every echo.
#[test]
fn unfinished_checksums_are_counted_explained_and_completed_on_request() {
    const SENT: u32 = 10;
    let client = format!(
        "import socket\n\
         got=0\n\
         for fam, dst in ((socket.AF_INET, '198.18.0.2'), (socket.AF_INET6, '2001:db8::2')):\n\
         \x20   s=socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(0.2)\n\
         \x20   for i in range({SENT}):\n\
         \x20       p = b'offload %d' % i\n\
         \x20       s.sendto(p, (dst, 7))\n\
         \x20       try: got += s.recvfrom(2048)[0] == p\n\
         \x20       except socket.timeout: pass\n\
         print(got)\n"
    );
    for complete in [false, true] {
        require_root();
        let tb = Testbed::new(&Options {
            quiet: true,
            peer_checksum_offload: true,
            ..Options::default()
        })
        .expect("testbed");
        let args: &[&str] = if complete {
            &["--complete-checksums"]
        } else {
            &[]
        };
        let l = run_loader(&tb, args);
        let got: u32 = peer_python(&tb, &client).trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let mut l = l;
        l.signal(libc::SIGINT);
        let out = l.finish();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v = last_json(&out);
        let err = text(&out.stderr);
        assert_eq!(n(&v, "/checksum_partial"), u64::from(2 * SENT), "{v}");
        assert_eq!(n(&v, "/echoed"), u64::from(2 * SENT), "{v}");
        if complete {
            assert_eq!(got, 2 * SENT, "every echo arrives with a finished checksum");
            assert!(!err.contains("unfinished checksum"), "{err}");
        } else {
            assert_eq!(got, 0, "the client's stack drops unfinished echoes");
            assert_eq!(
                err.matches("carry an unfinished checksum").count(),
                1,
                "the hint is printed once: {err}"
            );
            assert!(err.contains("ethtool -K <its interface> tx off"), "{err}");
        }
    }
}

/// Sends, from the peer, `n` UDP datagrams to the DUT's port 9 from each source port given,
/// one source port after the other.
fn udp_flows(tb: &Testbed, flows: &[(u16, u32)]) {
    let list: Vec<String> = flows.iter().map(|(p, n)| format!("({p},{n})")).collect();
    tb.peer_python(&format!(
        "import socket,time\n\
         for port, n in [{}]:\n\
         \x20   s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('', port))\n\
         \x20   for i in range(n):\n\
         \x20       s.sendto(b'f'*18, ('{DUT_IPV4}', 9))\n\
         \x20       if i % 50 == 49: time.sleep(0.002)\n\
         \x20   s.close()\n",
        list.join(",")
    ));
}

/// `--flows N`: known flows come out ranked by packets, with their 5-tuples and byte counts,
/// in the JSON; a table too small for them counts the rest as overflow instead of growing.
#[test]
fn run_ranks_the_top_flows_and_counts_what_finds_no_slot() {
    let flows = [(1111, 300), (2222, 200), (3333, 100), (4444, 50)];
    for (slots, distinct, overflow) in [("1024", 4, 0), ("2", 2, 150)] {
        let tb = testbed(1);
        let mut run = Loader::start_cmd(
            &tb,
            "run",
            &[
                "--iface",
                DUT_IF,
                "--action",
                "count",
                "--flows",
                "3",
                "--flow-table",
                slots,
                "--json",
            ],
        );
        udp_flows(&tb, &flows);
        std::thread::sleep(Duration::from_millis(300));
        run.signal(libc::SIGINT);
        let v = last_json(&run.finish());
        let f = &v["flows"];
        assert_eq!(n(f, "/distinct"), distinct, "{f}");
        assert_eq!(n(f, "/overflow/packets"), overflow, "{f}");
        let top = f["top"].as_array().unwrap();
        let expected: Vec<(u64, u64)> = flows
            .iter()
            .take(distinct.min(3) as usize)
            .map(|(p, n)| (u64::from(*p), u64::from(*n)))
            .collect();
        let got: Vec<(u64, u64)> = top
            .iter()
            .map(|t| (n(t, "/src_port"), n(t, "/packets")))
            .collect();
        assert_eq!(got, expected, "{f}");
        for t in top {
            assert_eq!(t["protocol"], "udp");
            assert_eq!(t["src"], "198.18.0.1");
            assert_eq!(t["dst"], DUT_IPV4);
            assert_eq!(n(t, "/dst_port"), 9);
            // 14 Ethernet + 20 IPv4 + 8 UDP + 18 bytes of payload.
            assert_eq!(n(t, "/bytes"), n(t, "/packets") * 60, "{t}");
        }
        assert_eq!(n(&v, "/counted"), 650, "{v}");
    }
}

/// One line per captured frame, as tshark reads the pcapng: direction (1 in, 2 out), queue,
/// interface name, and the frame's protocols.
fn tshark_lines(path: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-T",
            "fields",
            "-E",
            "separator=,",
        ])
        .args([
            "-e",
            "frame.packet_flags_direction",
            "-e",
            "frame.interface_queue",
        ])
        .args(["-e", "frame.interface_name", "-e", "frame.protocols"])
        .output()
        .expect("tshark (apt package tshark; cargo xtask setup installs it)");
    assert!(out.status.success(), "tshark: {}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// `run --capture FILE`: what the loop received and what it sent back, in order, as pcapng
/// that tcpdump and tshark read, with the direction and the queue of each frame; malformed
/// frames are in it (received) but never answered.
#[test]
fn run_captures_what_it_receives_and_sends_as_pcapng() {
    let tb = testbed(1);
    let path = TempFile(
        std::env::temp_dir().join(format!("kbp-run-capture-{}.pcapng", std::process::id())),
    );
    let l = run_loader(&tb, &["--capture", path.to_str().unwrap()]);
    assert_eq!(tb.ping(false, 5), 5);
    let (ok, sent) = tb.udp_echo_sizes(7);
    assert_eq!(ok, sent);
    // UDP to port 7 with a wrong IPv4 header checksum: received, counted malformed, unanswered.
    inject(
        &tb,
        &[fix_frame(
            &"0800450000 1c00004000401100 00c6120001c6120002 9c40000700080000".replace(' ', ""),
            false,
        )],
    );
    std::thread::sleep(Duration::from_millis(200));
    let v = finish_json(l);
    let (rx, tx) = (n(&v, "/rx"), n(&v, "/tx"));
    assert_eq!((rx, tx), (5 + sent + 1, 5 + sent), "{v}");
    assert_eq!(n(&v, "/capture/written"), rx + tx, "{v}");
    assert_eq!(n(&v, "/capture/dropped"), 0, "{v}");
    // tcpdump reads every frame.
    let dump = std::process::Command::new("tcpdump")
        .args(["-nn", "-r", path.to_str().unwrap()])
        .output()
        .expect("tcpdump (apt package tcpdump)");
    assert_eq!(
        text(&dump.stdout).lines().count() as u64,
        rx + tx,
        "{}",
        text(&dump.stderr)
    );
    let lines = tshark_lines(&path);
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count() as u64;
    assert_eq!(count("0x00000001,0,dut0,"), rx, "{lines:?}");
    assert_eq!(count("0x00000002,0,dut0,"), tx, "{lines:?}");
    // Each ping request is followed by its reply.
    let icmp: Vec<&String> = lines.iter().filter(|l| l.ends_with(":icmp:data")).collect();
    assert_eq!(icmp.len(), 10, "{lines:?}");
    for pair in icmp.chunks(2) {
        assert!(pair[0].starts_with("0x00000001,") && pair[1].starts_with("0x00000002,"));
    }
    assert!(
        lines.last().unwrap().starts_with("0x00000001,"),
        "the malformed frame, unanswered"
    );
    let _ = std::fs::remove_file(&path);
}

/// A CPU this process may not run on (`--cores` for run, `--core` for gen) is refused before
/// anything is attached; it used to be a warning from the thread, which then ran unpinned.
#[test]
fn a_cpu_it_may_not_run_on_is_refused_before_anything_starts() {
    let tb = testbed(1);
    subcommand_fails_with(
        &tb,
        "run",
        &["--iface", DUT_IF, "--cores", "1000", "--duration", "2"],
        "--cores: CPU 1000 is not one this process may run on",
    );
    let out = tb
        .gen_from_peer(xdp_user(), xtask::testbed::DUT_IPV4)
        .args(["--core", "1000", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "gen --core 1000 ran");
    assert!(
        text(&out.stderr).contains("--core: CPU 1000 is not one this process may run on"),
        "{}",
        text(&out.stderr)
    );
}

/// Ring and batch sizes that cannot work are refused with what would: a batch of 0 (which
/// never took a frame off the RX ring) and one beyond the ring were once taken silently.
#[test]
fn bad_ring_and_batch_sizes_are_refused() {
    let tb = testbed(1);
    for (args, message) in [
        (
            ["--frames", "1000"],
            "--frames must be a power of two of at least 64 (got 1000)",
        ),
        (
            ["--batch", "0"],
            "--batch must be 1 to 2048, the RX ring's size with --frames 4096",
        ),
        (["--batch", "4096"], "--batch must be 1 to 2048"),
    ] {
        let mut all = vec!["--iface", DUT_IF, "--duration", "2"];
        all.extend(args);
        subcommand_fails_with(&tb, "run", &all, message);
    }
    assert!(!tb.dut_xdp_attached().unwrap());
}

/// SIGHUP (the terminal or SSH session closed) stops `run` the way SIGINT does: detached, its
/// report written. Its default action killed the process without either.
#[test]
fn sighup_stops_it_cleanly() {
    let tb = testbed(1);
    let mut l = run_loader(&tb, &[]);
    assert_eq!(ping(&tb, false, 2), 2);
    l.signal(libc::SIGHUP);
    let out = l.finish();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    let v = last_json(&out);
    assert_eq!(n(&v, "/echoed"), 2, "{v}");
    assert!(!tb.dut_xdp_attached().unwrap(), "detached on SIGHUP");
}
