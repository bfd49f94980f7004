//! Integration tests of `dpdk-app` on DPDK's virtual devices: net_af_packet and net_af_xdp over
//! a veth pair whose DUT end has no kernel address (the app answers ARP and neighbour
//! discovery itself), net_null without any veth, with --no-huge and with real hugepages, with
//! one lcore, two lcores, and two polling lcores on two queues of one port; and the error
//! paths, which must stop what started and leave no runtime files. They need root and fail
//! with a clear message without it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use xtask::testbed::{DUT_IF, DUT_IPV4, DUT_IPV6, DUT_MAC, Options, PEER_IF, Testbed};

fn require_root() {
    assert!(
        xtask::setup::is_root(),
        "these tests need root (network namespaces, DPDK); run them as root (`cargo xtask test`)"
    );
}

/// A veth testbed whose DUT end has no addresses: there is no kernel stack on a DPDK port.
fn testbed() -> Testbed {
    require_root();
    Testbed::new(&Options {
        dut_addresses: false,
        ..Options::default()
    })
    .expect("testbed")
}

static PREFIX: AtomicU32 = AtomicU32::new(0);

/// EAL's runtime directory for a file prefix.
fn runtime_dir(prefix: &str) -> std::path::PathBuf {
    std::path::Path::new("/var/run/dpdk").join(prefix)
}

/// EAL arguments that keep concurrent DPDK processes apart, and the guard of their file
/// prefix: the app removes its runtime directory itself, but when EAL initialisation fails
/// (some tests make it fail) DPDK leaves it behind, so the guard removes it after the test.
struct EalArgs {
    args: Vec<String>,
    prefix: String,
}

impl Drop for EalArgs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(runtime_dir(&self.prefix));
    }
}

/// `lcores` goes to `-l`, or to `--lcores` when it holds an `@` (lcore-to-CPU mapping).
fn eal_common(lcores: &str, huge: bool) -> EalArgs {
    let prefix = format!(
        "kbpt{}x{}",
        std::process::id(),
        PREFIX.fetch_add(1, Ordering::Relaxed)
    );
    let mut v: Vec<String> = if lcores.contains('@') {
        vec![format!("--lcores={lcores}")]
    } else {
        vec!["-l".into(), lcores.into()]
    };
    v.extend([
        "--no-pci".into(),
        "--file-prefix".into(),
        prefix.clone(),
        "--log-level".into(),
        "lib.eal:error".into(),
    ]);
    if !huge {
        v.extend(["--no-huge".into(), "-m".into(), "256".into()]);
    }
    EalArgs { args: v, prefix }
}

fn spawn_app(tb: Option<&Testbed>, eal: &EalArgs, app: &[&str]) -> Child {
    let bin = env!("CARGO_BIN_EXE_dpdk-app");
    let mut c = match tb {
        Some(tb) => tb.in_dut(bin),
        None => Command::new(bin),
    };
    c.args(&eal.args)
        .arg("--")
        .args(app)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dpdk-app")
}

/// Gives EAL time to start and the ports to come up, checking the process stays alive.
fn wait_started(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dpdk-app exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_of(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no JSON on the last line ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn n(v: &serde_json::Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("no {path} in {v}"))
}

/// True when the peer's neighbour entry for `addr` holds the DUT's MAC.
fn peer_neighbour_is_dut(tb: &Testbed, addr: &str) -> bool {
    let out = tb
        .in_peer("ip")
        .args(["neigh", "show", addr, "dev", PEER_IF])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(DUT_MAC)
}

/// Real clients against the app on `vdev`: ARP and ND answered by the app, ping v4/v6, UDP of
/// every size byte for byte, malformed frames counted and not answered.
///
/// `max_in_use` is how many mbufs the driver may still hold after the port is closed: 0 for
/// net_af_packet; net_af_xdp (DPDK 22.11) keeps the 2048 mbufs of its fill ring and the last
/// transmitted ones whose completions it never collects. Our loop frees everything it gets.
fn echo_over(vdev: &str, lcores: &str, huge_dir: Option<&str>, max_in_use: u64) {
    let tb = testbed();
    let mut eal = eal_common(lcores, huge_dir.is_some());
    if let Some(dir) = huge_dir {
        eal.args.extend(["--huge-dir".into(), dir.into()]);
    }
    eal.args.extend(["--vdev".into(), vdev.into()]);
    let mut app = spawn_app(
        Some(&tb),
        &eal,
        &[
            "--ip",
            DUT_IPV4,
            "--ip",
            DUT_IPV6,
            "--duration",
            "9",
            "--json",
        ],
    );
    wait_started(&mut app);
    assert_eq!(tb.ping(false, 4), 4, "{vdev}: every IPv4 ping answered");
    assert_eq!(tb.ping(true, 4), 4, "{vdev}: every IPv6 ping answered");
    // Only the app can have answered ARP and neighbour discovery: the DUT end has no address.
    assert!(
        peer_neighbour_is_dut(&tb, DUT_IPV4),
        "{vdev}: ARP answered with the port's MAC"
    );
    assert!(
        peer_neighbour_is_dut(&tb, DUT_IPV6),
        "{vdev}: ND answered with the port's MAC"
    );
    let (ok, sent) = tb.udp_echo_sizes(7);
    assert_eq!(
        (ok, sent),
        (26, 26),
        "{vdev}: every datagram echoed byte for byte"
    );
    // Malformed: an IPv4 header with IHL 3, and UDP to port 7 with a bad header checksum.
    tb.inject(&[
        "0800430000280000400040110000c6120001c6120002".into(),
        "08004500001c00004000401100dec6120001c61200029c40000700080000".into(),
    ]);
    let out = app.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{vdev}: exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    assert_eq!(n(&v, "/malformed"), 2, "{vdev}: {v}");
    // 8 pings, 26 datagrams, at least one ARP reply and one neighbour advertisement.
    assert!(n(&v, "/echoed") >= 8 + 26 + 2, "{vdev}: {v}");
    assert_eq!(
        n(&v, "/tx") + n(&v, "/dropped"),
        n(&v, "/echoed"),
        "{vdev}: {v}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let in_use: u64 = stderr
        .split("mbufs still in use: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{vdev}: no mbuf count in {stderr}"));
    assert!(
        in_use <= max_in_use,
        "{vdev}: {in_use} mbufs not returned: {stderr}"
    );
    // What the driver keeps is said to be the driver's, not left unexplained.
    assert_eq!(
        in_use > 0,
        stderr.contains("(held by net_af_xdp"),
        "{vdev}: {stderr}"
    );
    assert!(
        !runtime_dir(&eal.prefix).exists(),
        "{vdev}: the runtime directory is left behind"
    );
}

#[test]
fn af_packet_one_lcore_no_huge() {
    echo_over(&format!("net_af_packet0,iface={DUT_IF}"), "0", None, 0);
}

#[test]
fn af_xdp_two_lcores_no_huge() {
    // Two lcores: the main lcore prints, one worker polls.
    echo_over(
        &format!("net_af_xdp0,iface={DUT_IF},start_queue=0,queue_count=1"),
        "0,1",
        None,
        2048 + 32,
    );
}

/// The line `ip -d link` shows for the XDP program attached to the DUT's interface.
fn dut_xdp_program(tb: &Testbed) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", &tb.dut_ns, "-d", "link", "show", DUT_IF])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("prog/xdp id"))
        .map(|l| l.trim().to_string())
}

/// net_af_xdp on an interface that already has an XDP program (xdp-tools' xdp-filter, a
/// native-mode netlink attachment) is refused before EAL starts, and that program stays:
/// DPDK itself would fail on the port and then remove the program it found there.
#[test]
fn af_xdp_leaves_an_interface_with_another_program_alone() {
    let tb = testbed();
    let out = tb
        .in_dut("sh")
        .args([
            "-c",
            &format!("mount -t bpf bpf /sys/fs/bpf && xdp-filter load --mode native {DUT_IF}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xdp-filter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = dut_xdp_program(&tb).expect("xdp-filter attached");
    let mut with_vdev = eal_common("0", false);
    with_vdev.args.extend([
        "--vdev".into(),
        format!("net_af_xdp0,iface={DUT_IF},start_queue=0,queue_count=1"),
    ]);
    let out = spawn_app(Some(&tb), &with_vdev, &["--duration", "2"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started over another program: {err}");
    assert!(
        err.contains(&format!("{DUT_IF} already has an XDP program attached"))
            && err.contains(&format!("ip link set dev {DUT_IF} xdpdrv off"))
            && err.contains("not started"),
        "{err}"
    );
    assert_eq!(
        dut_xdp_program(&tb),
        Some(before),
        "xdp-filter's program stays"
    );
    assert!(
        !runtime_dir(&with_vdev.prefix).exists(),
        "refused before EAL started"
    );
}

/// DPDK attaches net_af_xdp's program through netlink, which outlives the process: after a
/// `kill -9` the app's guard process takes it off the interface, so the next start finds the
/// interface free; a clean stop leaves the guard nothing to do (DPDK removed it already).
#[test]
fn af_xdp_kill_9_leaves_no_program_attached() {
    let tb = testbed();
    let vdev = format!("net_af_xdp0,iface={DUT_IF},start_queue=0,queue_count=1");
    let mut eal = eal_common("0", false);
    eal.args.extend(["--vdev".into(), vdev.clone()]);
    let mut child = spawn_app(Some(&tb), &eal, &["--duration", "30"]);
    wait_started(&mut child);
    let attached = dut_xdp_program(&tb).expect("net_af_xdp attached its program");
    assert!(attached.contains("xsk_def_prog"), "{attached}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(p) = dut_xdp_program(&tb) {
        assert!(
            Instant::now() < deadline,
            "still attached after kill -9: {p}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("took net_af_xdp's XDP program"), "{err}");

    // The next start finds the interface free, and its clean stop leaves nothing either.
    let mut eal = eal_common("0", false);
    eal.args.extend(["--vdev".into(), vdev]);
    let out = spawn_app(Some(&tb), &eal, &["--duration", "1"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("took net_af_xdp's XDP program"), "{err}");
    assert_eq!(dut_xdp_program(&tb), None);
}

/// Hugepages reserved for the test and given back afterwards, on a private hugetlbfs mount.
struct Hugepages {
    dir: String,
    before: String,
}

impl Hugepages {
    fn reserve(pages: u32) -> Hugepages {
        let before = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap();
        let want = before.trim().parse::<u32>().unwrap() + pages;
        std::fs::write("/proc/sys/vm/nr_hugepages", want.to_string()).unwrap();
        let dir = format!("/tmp/kbp-huge-{}", std::process::id());
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "hugetlbfs", "nodev", &dir])
            .status()
            .unwrap()
            .success();
        assert!(ok, "could not mount hugetlbfs on {dir}");
        Hugepages { dir, before }
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", self.before.trim());
    }
}

#[test]
fn af_packet_with_hugepages() {
    require_root();
    let huge = Hugepages::reserve(256);
    echo_over(
        &format!("net_af_packet0,iface={DUT_IF}"),
        "0",
        Some(&huge.dir),
        0,
    );
}

#[test]
fn net_null_counts_without_any_veth() {
    require_root();
    let mut eal = eal_common("0", false);
    eal.args.extend(["--vdev".into(), "net_null0".into()]);
    let out = spawn_app(
        None,
        &eal,
        &["--action", "count", "--duration", "1", "--json"],
    )
    .wait_with_output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    let rx = n(&v, "/rx");
    assert!(
        rx > 10_000,
        "net_null delivers packets as fast as we poll: {v}"
    );
    assert_eq!(n(&v, "/counted") + n(&v, "/malformed"), rx, "{v}");
    assert_eq!(
        n(&v, "/ports/0/ipackets"),
        rx,
        "port and lcore counters agree: {v}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mbufs still in use: 0"), "{err}");
    assert!(
        err.contains("when idle: spin (no port is fed by the kernel)"),
        "{err}"
    );
}

/// `dpdk-app ... | head -n 2`: when the reader exits, the next statistics line finds the pipe
/// closed and the app stops as on SIGINT (ports stopped and closed, every mbuf back) instead
/// of panicking on its main lcore; with standard error gone as well (`|& head`) it still
/// exits 0.
#[test]
fn a_closed_output_pipe_stops_it_cleanly() {
    require_root();
    for stderr_too in [false, true] {
        let mut eal = eal_common("0", false);
        eal.args.extend(["--vdev".into(), "net_null0".into()]);
        let app = ["--action", "count", "--interval", "0.1", "--duration", "60"];
        let mut child = spawn_app(None, &eal, &app);
        if stderr_too {
            drop(child.stderr.take());
        }
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        for _ in 0..2 {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "no statistics line"
            );
        }
        drop(stdout);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("stderr closed {stderr_too}: still running with nobody reading");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "stderr closed {stderr_too}: {}: {err}",
            out.status
        );
        if !stderr_too {
            assert!(err.contains("standard output was closed"), "{err}");
            assert!(err.contains("mbufs still in use: 0"), "{err}");
        }
    }
}

#[test]
fn eal_and_argument_errors_are_clear() {
    require_root();
    let mut eal = eal_common("0", false);
    eal.args
        .extend(["--vdev".into(), "net_nosuchdriver0".into()]);
    let out = spawn_app(None, &eal, &["--duration", "1"])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EAL initialisation failed") && err.contains("What to try"),
        "{err}"
    );

    // No port at all.
    let eal = eal_common("0", false);
    let out = spawn_app(None, &eal, &["--duration", "1"])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no ports") && err.contains("--vdev"), "{err}");
    assert!(!runtime_dir(&eal.prefix).exists(), "runtime directory left");

    // A bad option of ours is reported before EAL starts.
    let out = spawn_app(None, &eal_common("0", false), &["--echo-ports", "0"])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--echo-ports"));
}

/// Two polling lcores on two queues of one port. `net_af_packet` with `qpairs=2` opens one
/// AF_PACKET socket per queue in a `PACKET_FANOUT_HASH` group: the kernel spreads flows over
/// the queues by their flow hash, which is the RSS of this port (DPDK's `mq_mode` RSS applies
/// to ports that report RSS offloads; this one reports none, the spreading is the kernel's).
///
/// Why not `net_af_xdp,queue_count=2` on a two-queue veth: DPDK 22.11's af_xdp PMD sizes
/// its queues from ethtool's *combined* channel count, and veth reports separate RX/TX
/// channels (combined 0), so the PMD refuses more than one queue ("Specified queue count 2 is
/// larger than combined queue count 1"). The veth still gets two queues here, as a real NIC
/// would have; the fan-out does not depend on them.
///
/// The client opens one UDP socket per flow (64 source ports), so the flow hashes differ;
/// the chance that all 64 land on one queue is 2^-63. Every request must come back, each
/// lcore must have received and answered a share, and the per-lcore counters must sum to the
/// totals (and to the port's own counters).
#[test]
fn two_lcores_share_the_flows_of_one_two_queue_port() {
    require_root();
    let tb = Testbed::new(&Options {
        queues: 2,
        dut_addresses: false,
        ..Options::default()
    })
    .expect("testbed");
    // Main lcore 0 (it sleeps and prints) and two polling workers, on the two CPUs.
    let mut eal = eal_common("0@0,1@1,2@0", false);
    eal.args.extend([
        "--vdev".into(),
        format!("net_af_packet0,iface={DUT_IF},qpairs=2"),
    ]);
    let mut app = spawn_app(
        Some(&tb),
        &eal,
        &[
            "--ip",
            DUT_IPV4,
            "--duration",
            "10",
            "--interval",
            "100",
            "--json",
        ],
    );
    wait_started(&mut app);
    const FLOWS: u32 = 64;
    const ROUNDS: u32 = 4;
    let out = tb.peer_python(&format!(
        "import socket\n\
         socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range({FLOWS})]\n\
         for s in socks:\n\
         \x20   s.bind(('0.0.0.0', 0)); s.settimeout(2)\n\
         ok = 0; sent = 0\n\
         for r in range({ROUNDS}):\n\
         \x20   for i, s in enumerate(socks):\n\
         \x20       p = b'flow %d round %d' % (i, r); sent += 1\n\
         \x20       s.sendto(p, ('{DUT_IPV4}', 7))\n\
         \x20       try:\n\
         \x20           d, a = s.recvfrom(2048); ok += (d == p and a[1] == 7)\n\
         \x20       except socket.timeout: pass\n\
         print(ok, sent)\n"
    ));
    let counts: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let requests = u64::from(FLOWS * ROUNDS);
    assert_eq!(counts, [requests, requests], "every request echoed: {out}");
    let _ = Command::new("kill")
        .args(["-INT", &app.id().to_string()])
        .status();
    let out = app.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(
        stderr.contains("2 queue(s)") && stderr.contains("2 polling lcore(s)"),
        "{stderr}"
    );
    let v = json_of(&out);
    let lcores = v["lcores"].as_array().expect("lcores");
    assert_eq!(lcores.len(), 2, "{v}");
    eprintln!(
        "per-lcore rx: {:?}",
        lcores.iter().map(|l| n(l, "/rx")).collect::<Vec<_>>()
    );
    for (i, l) in lcores.iter().enumerate() {
        // Each lcore answered UDP of its own flows (ARP may have gone to either).
        assert!(
            n(l, "/rx") > 0 && n(l, "/echoed") > 0 && n(l, "/tx") > 0,
            "lcore {i} got no share of the {FLOWS} flows: {v}"
        );
    }
    for field in ["rx", "tx", "echoed", "dropped", "malformed", "not_for_us"] {
        let sum: u64 = lcores.iter().map(|l| n(l, &format!("/{field}"))).sum();
        assert_eq!(sum, n(&v, &format!("/{field}")), "{field} summed: {v}");
    }
    // The UDP requests plus at least one ARP reply; every answer sent.
    assert!(n(&v, "/echoed") > requests, "{v}");
    assert_eq!(n(&v, "/tx"), n(&v, "/echoed"), "{v}");
    assert_eq!(n(&v, "/ports/0/ipackets"), n(&v, "/rx"), "{v}");
    assert_eq!(n(&v, "/ports/0/opackets"), n(&v, "/tx"), "{v}");
    assert!(stderr.contains("mbufs still in use: 0"), "{stderr}");
    assert!(!runtime_dir(&eal.prefix).exists(), "runtime directory left");
}

/// An error after a port started: port 0 (net_af_xdp, whose fill ring holds 2048 mbufs of the
/// pool from start on) starts; port 1 (net_af_xdp on the same interface queue, which the
/// kernel gives to one AF_XDP socket only) fails to set up its RX queue. The app must stop and
/// close port 0 before it frees the pool and cleans EAL up: a clear message, exit status 1
/// (not a signal), no XDP program left on the interface, and no runtime files left.
#[test]
fn an_error_after_a_port_started_stops_it_first() {
    let tb = testbed();
    let mut eal = eal_common("0", false);
    for port in 0..2 {
        eal.args.extend([
            "--vdev".into(),
            format!("net_af_xdp{port},iface={DUT_IF},start_queue=0,queue_count=1"),
        ]);
    }
    let out = spawn_app(Some(&tb), &eal, &["--duration", "5"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit {:?}: {err}", out.status);
    assert!(
        err.contains("port 0 (net_af_xdp0)") && err.contains("started: 1 queue(s)"),
        "port 0 started first: {err}"
    );
    assert!(
        err.contains("error: port 1 RX queue 0: setup failed"),
        "{err}"
    );
    assert!(
        !tb.dut_xdp_attached().unwrap(),
        "the started port's XDP program is left attached"
    );
    assert!(!runtime_dir(&eal.prefix).exists(), "runtime directory left");
}

/// More `--ip` addresses of a family than the responder holds: reported before EAL starts
/// (so before any port), with what to do.
#[test]
fn too_many_addresses_are_refused_before_eal_starts() {
    require_root();
    let ips: Vec<String> = (1..=17).map(|i| format!("198.18.1.{i}")).collect();
    let mut app: Vec<&str> = Vec::new();
    for ip in &ips {
        app.extend(["--ip", ip]);
    }
    let mut eal = eal_common("0", false);
    eal.args.extend(["--vdev".into(), "net_null0".into()]);
    let out = spawn_app(None, &eal, &app).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit {:?}: {err}", out.status);
    assert!(
        err.contains("--ip 198.18.1.17") && err.contains("at most 16"),
        "{err}"
    );
    assert!(!err.contains("started"), "no port may start: {err}");
    assert!(!runtime_dir(&eal.prefix).exists(), "EAL never ran: {err}");
}

/// On a port the kernel feeds (net_af_packet), an idle lcore yields its CPU to the kernel's
/// receive work by default (twice the echo rate on veth, overloaded); `--idle spin` polls
/// without pause, as testpmd does. Both answer.
#[test]
fn idle_lcores_yield_to_the_kernel_unless_told_to_spin() {
    for (idle, said) in [
        (
            None,
            "when idle: yield to the kernel's receive work for net_af_packet0 (--idle spin to spin)",
        ),
        (Some("spin"), "when idle: spin (--idle spin)"),
    ] {
        let tb = testbed();
        let mut eal = eal_common("0", false);
        eal.args
            .extend(["--vdev".into(), format!("net_af_packet0,iface={DUT_IF}")]);
        let mut args = vec!["--ip", DUT_IPV4, "--duration", "3", "--json"];
        if let Some(idle) = idle {
            args.extend(["--idle", idle]);
        }
        let mut app = spawn_app(Some(&tb), &eal, &args);
        wait_started(&mut app);
        assert_eq!(tb.ping(false, 2), 2, "{idle:?}: every ping answered");
        let out = app.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains(said), "{idle:?}: {err}");
        let v = json_of(&out);
        let yields = n(&v, "/idle_yields");
        assert_eq!(n(&v, "/lcores/0/idle_yields"), yields, "{v}");
        if idle.is_none() {
            assert!(yields > 1000, "an idle lcore yields: {v}");
        } else {
            assert_eq!(yields, 0, "a spinning lcore never yields: {v}");
        }
    }
}

/// A UDP client whose veth leaves checksums to the "NIC" (offload on, the veth default): the
/// app counts such requests, explains once, and `--complete-checksums` finishes them so the
/// client gets every echo; without it, the client's stack drops the unfinished echoes.
#[test]
fn unfinished_checksums_are_counted_explained_and_completed_on_request() {
    const SENT: u32 = 10;
    let client = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)\n\
         got=0\n\
         for i in range({SENT}):\n\
         \x20   p = b'offload %d' % i\n\
         \x20   s.sendto(p, ('{DUT_IPV4}', 7))\n\
         \x20   try: got += s.recvfrom(2048)[0] == p\n\
         \x20   except socket.timeout: pass\n\
         print(got)\n"
    );
    for complete in [false, true] {
        require_root();
        let tb = Testbed::new(&Options {
            dut_addresses: false,
            peer_checksum_offload: true,
            ..Options::default()
        })
        .expect("testbed");
        let mut eal = eal_common("0", false);
        eal.args
            .extend(["--vdev".into(), format!("net_af_packet0,iface={DUT_IF}")]);
        let mut args = vec!["--ip", DUT_IPV4, "--duration", "7", "--json"];
        if complete {
            args.push("--complete-checksums");
        }
        let mut app = spawn_app(Some(&tb), &eal, &args);
        wait_started(&mut app);
        // The first datagram waits for ARP, which the app answers.
        let got: u32 = tb.peer_python(&client).trim().parse().unwrap();
        let out = app.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let v = json_of(&out);
        assert!(n(&v, "/checksum_partial") >= u64::from(SENT - 1), "{v}");
        if complete {
            assert!(
                got >= SENT - 1,
                "echoes arrive with finished checksums: {got}"
            );
            assert!(!err.contains("unfinished checksum"), "{err}");
        } else {
            assert_eq!(got, 0, "the client's stack drops unfinished echoes");
            assert_eq!(
                err.matches("carry an unfinished checksum").count(),
                1,
                "the hint is printed once: {err}"
            );
        }
    }
}

/// The link of a port goes down and comes back: both are reported at once, the app polls on,
/// and it exits cleanly. net_tap reports its interface's state (net_af_packet always reports
/// "up", so a veth flap is invisible through it); the tap lives in the testbed's namespace.
#[test]
fn a_link_flap_is_reported_and_polling_goes_on() {
    let tb = testbed();
    let mut eal = eal_common("0", false);
    eal.args
        .extend(["--vdev".into(), "net_tap0,iface=kbptap0".into()]);
    let mut app = spawn_app(Some(&tb), &eal, &["--duration", "5", "--json"]);
    wait_started(&mut app);
    tb.ip_dut(&["link", "set", "kbptap0", "down"]).unwrap();
    Testbed::wait_operstate(&tb.dut_ns, "kbptap0", false, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    tb.ip_dut(&["link", "set", "kbptap0", "up"]).unwrap();
    let out = app.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let down = err.find("port 0 link down").expect("link down reported");
    let up = err.find("port 0 link up again").expect("link up reported");
    assert!(down < up, "{err}");
    json_of(&out);
}

/// The veth behind a net_af_packet port is deleted under the app: the PMD does not notice,
/// the app does (it watches the `iface=` of its vdevs), stops, and exits 1 within 2 s with the
/// message, leaving no runtime files.
#[test]
fn the_interface_behind_a_port_going_away_stops_the_app() {
    let tb = testbed();
    let mut eal = eal_common("0", false);
    eal.args
        .extend(["--vdev".into(), format!("net_af_packet0,iface={DUT_IF}")]);
    let mut app = spawn_app(Some(&tb), &eal, &["--duration", "30"]);
    wait_started(&mut app);
    tb.ip_dut(&["link", "del", DUT_IF]).unwrap();
    let start = Instant::now();
    while app.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = app.try_wait().unwrap().is_some();
    if !stopped {
        let _ = app.kill();
    }
    let out = app.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        stopped,
        "still running 2 s after its interface went away: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("interface dut0 went away (deleted, or moved to another network namespace)"),
        "{err}"
    );
    assert!(
        !runtime_dir(&eal.prefix).exists(),
        "runtime files left behind"
    );
}

/// net_af_packet always reports its link "up", so the app watches the kernel interface behind
/// it: a flap of the veth (its peer set down and up) and an MTU change are reported at once,
/// and the app polls on and exits cleanly.
#[test]
fn the_interface_behind_a_port_is_watched_for_flaps_and_mtu() {
    let tb = testbed();
    let mut eal = eal_common("0", false);
    eal.args
        .extend(["--vdev".into(), format!("net_af_packet0,iface={DUT_IF}")]);
    let mut app = spawn_app(Some(&tb), &eal, &["--duration", "9", "--json"]);
    wait_started(&mut app);
    // Each state is held a second after the kernel shows it (the app looks every 20 ms;
    // the kernel can take a second to show it, see `Testbed::wait_operstate`).
    tb.ip_peer(&["link", "set", PEER_IF, "down"]).unwrap();
    Testbed::wait_operstate(&tb.dut_ns, DUT_IF, false, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    tb.ip_peer(&["link", "set", PEER_IF, "up"]).unwrap();
    Testbed::wait_operstate(&tb.dut_ns, DUT_IF, true, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    tb.ip_dut(&["link", "set", DUT_IF, "mtu", "2000"]).unwrap();
    let out = app.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let down = err
        .find("interface dut0: link down (operstate")
        .unwrap_or_else(|| panic!("no link-down report: {err}"));
    let up = err
        .find("interface dut0: link up again")
        .unwrap_or_else(|| panic!("no link-up report: {err}"));
    assert!(down < up, "{err}");
    assert!(
        err.contains("interface dut0: MTU changed from 1500 to 2000"),
        "{err}"
    );
    json_of(&out);
}

/// `--flows`, `--capture` and `--metrics`: known flows come out ranked, the capture holds
/// every frame received and every reply sent (tshark reads the directions back), and the
/// metrics endpoint serves text that promtool accepts, with the loop's and the port's counters.
#[test]
fn flows_capture_and_metrics_show_what_the_app_sees() {
    let tb = testbed();
    let mut eal = eal_common("1", false);
    eal.args
        .extend(["--vdev".into(), format!("net_af_packet0,iface={DUT_IF}")]);
    let capture =
        std::env::temp_dir().join(format!("kbp-dpdk-capture-{}.pcapng", std::process::id()));
    let mut app = spawn_app(
        Some(&tb),
        &eal,
        &[
            "--ip",
            DUT_IPV4,
            "--flows",
            "3",
            "--capture",
            capture.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:9466",
            "--duration",
            "8",
            "--json",
        ],
    );
    wait_started(&mut app);
    assert_eq!(tb.ping(false, 4), 4);
    // Four pings are four bursts, far fewer than the 64 between regular hand-overs: the loop
    // hands its top flows over when it goes idle, so the endpoint shows them already.
    // The endpoint's text (a failed scrape fails the test with curl's error).
    let scrape = || {
        let out = tb
            .in_dut("curl")
            .args(["-sS", "--fail", "http://127.0.0.1:9466/metrics"])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::thread::sleep(Duration::from_millis(700));
    let early = scrape();
    assert!(
        early.contains("kbp_top_flow_packets{"),
        "no top flow after 4 pings:\n{early}"
    );
    tb.peer_python(&format!(
        "import socket,time\n\
         for port, n in ((1111,300),(2222,200),(3333,100),(4444,50)):\n\
         \x20   s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('', port))\n\
         \x20   for i in range(n):\n\
         \x20       s.sendto(b'f'*18, ('{DUT_IPV4}', 9))\n\
         \x20       if i % 50 == 49: time.sleep(0.002)\n\
         \x20   s.close()\n"
    ));
    std::thread::sleep(Duration::from_millis(700));
    let text = scrape();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let value = |prefix: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    let loop_rx = value("kbp_loop_packets_total{iface=\"net_af_packet0\",queue=\"0\",what=\"rx\"}");
    let port_rx =
        value("kbp_dpdk_port_packets_total{port=\"0\",name=\"net_af_packet0\",direction=\"rx\"}");
    assert!(loop_rx >= 4 + 650, "{text}");
    assert_eq!(loop_rx, port_rx, "the loop and the port agree: {text}");
    assert!(text.contains("kbp_top_flow_packets{"), "{text}");

    let out = app.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out);
    let top: Vec<(u64, u64)> = v["flows"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (n(t, "/src_port"), n(t, "/packets")))
        .collect();
    assert_eq!(top, [(1111, 300), (2222, 200), (3333, 100)], "{v}");
    assert_eq!(n(&v, "/flows/overflow/packets"), 0, "{v}");
    let (rx, tx) = (n(&v, "/rx"), n(&v, "/tx"));
    assert_eq!(n(&v, "/capture/written"), rx + tx, "{v}");
    assert_eq!(n(&v, "/capture/dropped"), 0, "{v}");
    let dirs = Command::new("tshark")
        .args(["-r", capture.to_str().unwrap(), "-T", "fields"])
        .args(["-e", "frame.packet_flags_direction"])
        .output()
        .expect("tshark (apt package tshark)");
    let dirs = String::from_utf8_lossy(&dirs.stdout);
    let count = |d: &str| dirs.lines().filter(|l| *l == d).count() as u64;
    assert_eq!((count("0x00000001"), count("0x00000002")), (rx, tx), "{v}");
    let _ = std::fs::remove_file(&capture);
}

/// What is wrong with the interfaces behind the vdevs is said at start: one that does not
/// exist here is refused before EAL (which said only "Bus (vdev) probe failed", then "no
/// ports"); one that is down is reported (net_af_packet calls its port up regardless); and
/// `--capture -` is refused before EAL rather than written to a file named `-`.
#[test]
fn the_interfaces_behind_the_vdevs_are_checked_at_start() {
    let tb = testbed();
    let mut eal = eal_common("0", false);
    eal.args
        .extend(["--vdev".into(), "net_af_xdp0,iface=nosuch0".into()]);
    let out = spawn_app(Some(&tb), &eal, &["--duration", "1"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--vdev net_af_xdp0: no interface named nosuch0 in this network namespace"),
        "{err}"
    );
    assert!(!runtime_dir(&eal.prefix).exists(), "refused before EAL");

    let eal = eal_common("0", false);
    let out = spawn_app(None, &eal, &["--capture", "-", "--duration", "1"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--capture writes a file"), "{err}");
    assert!(!runtime_dir(&eal.prefix).exists(), "refused before EAL");

    // The interface set down before the app starts (a peer set down would do too, but veth
    // passes that on to this end's operstate only a moment later).
    tb.ip_dut(&["link", "set", DUT_IF, "down"]).unwrap();
    let mut eal = eal_common("0", false);
    eal.args
        .extend(["--vdev".into(), format!("net_af_packet0,iface={DUT_IF}")]);
    let out = spawn_app(Some(&tb), &eal, &["--duration", "1", "--json"])
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("interface dut0: link down (operstate down): no traffic until it comes up"),
        "{err}"
    );
    json_of(&out);
}

/// On an interface the host uses (one with addresses), the app says at start what a
/// kernel-backed vdev does to the host's traffic there: net_af_xdp takes it all, net_af_packet
/// leaves the kernel answering too. Nothing is said for an interface without addresses.
#[test]
fn it_says_what_it_does_to_an_interface_the_host_uses() {
    let tb = testbed();
    let run = |driver: &str| {
        let mut eal = eal_common("0", false);
        eal.args
            .extend(["--vdev".into(), format!("{driver}0,iface={DUT_IF}")]);
        let out = spawn_app(Some(&tb), &eal, &["--duration", "1", "--json"])
            .wait_with_output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        err
    };
    for driver in ["net_af_packet", "net_af_xdp"] {
        assert!(
            !run(driver).contains("addresses ("),
            "{driver}: no address, nothing said"
        );
    }
    tb.ip_dut(&["addr", "add", "198.18.0.2/24", "dev", DUT_IF])
        .unwrap();
    let err = run("net_af_xdp");
    assert!(
        err.contains("every frame dut0 receives comes to the app, none to the kernel")
            && err.contains("dut0's addresses (198.18.0.2"),
        "{err}"
    );
    let err = run("net_af_packet");
    assert!(
        err.contains("answers its addresses (198.18.0.2") && err.contains("two replies"),
        "{err}"
    );
}

/// SIGHUP (a closed terminal or SSH session) stops the app as SIGINT does: ports stopped and
/// closed, every mbuf back, the report written, no runtime files left. Its default action
/// killed the app without any of it.
#[test]
fn sighup_stops_it_cleanly() {
    require_root();
    let mut eal = eal_common("0", false);
    eal.args.extend(["--vdev".into(), "net_null0".into()]);
    let mut app = spawn_app(
        None,
        &eal,
        &["--action", "count", "--duration", "20", "--json"],
    );
    wait_started(&mut app);
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &app.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = app.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.contains("mbufs still in use: 0"), "{err}");
    json_of(&out);
    assert!(!runtime_dir(&eal.prefix).exists(), "runtime directory left");
}
