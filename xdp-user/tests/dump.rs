//! `xdp-user dump` and `load --capture`: known traffic against `load`, captured by the XDP
//! program itself into pcapng, read back with tshark and tcpdump: the frames, their verdicts
//! (`epb_verdict`, eBPF XDP), the rule that decided each, the RX queue, and the selections
//! (`--verdict`, `--rule`, `--match`). Capture is switched off again when a dump ends.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;
use xtask::testbed::{DUT_IF, Testbed};

fn load(tb: &Testbed, extra: &[&str]) -> Loader {
    let mut args = vec![
        "--iface",
        DUT_IF,
        "--rule",
        "proto udp dport 9 action drop",
        "--rule",
        "proto udp dport 10 action pass",
        "--json",
        "--duration",
        "30",
    ];
    args.extend_from_slice(extra);
    Loader::start(tb, &args)
}

/// The traffic every test sends: 3 pings (passed, no rule), 5 datagrams to port 9 (dropped by
/// rule 1), 4 to port 10 (passed by rule 2).
fn traffic(tb: &Testbed) {
    assert_eq!(ping(tb, false, 3), 3);
    send_udp(tb, 9, 5);
    send_udp(tb, 10, 4);
    std::thread::sleep(Duration::from_millis(300));
}

/// `xdp-user dump` on the DUT interface, in the background, with `extra` arguments.
fn dump(tb: &Testbed, path: &std::path::Path, extra: &[&str]) -> std::process::Child {
    let child = tb
        .in_dut(xdp_user())
        .args([
            "dump",
            "--iface",
            DUT_IF,
            "-w",
            path.to_str().unwrap(),
            "--json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Capture is on once the file exists (its header is written first).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child
}

/// `xdp-user dump --iface dut0 -w - DUMP_ARGS | tcpdump -nn -r - TCPDUMP_ARGS` in the DUT
/// namespace, with dump's exit status added to standard error as `dump-status=N`. Returns once
/// dump says capture is on (traffic sent after that is captured), and whether it did.
fn dump_into_tcpdump(tb: &Testbed, dump_args: &str, tcpdump_args: &str) -> (Loader, bool) {
    let pipe = tb
        .in_dut("bash")
        .args([
            "-c",
            &format!(
                "{} dump --iface {DUT_IF} -w - {dump_args} | tcpdump -nn -r - {tcpdump_args}; \
                 echo \"dump-status=${{PIPESTATUS[0]}}\" >&2",
                xdp_user()
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = Loader::spawned(pipe);
    pipe.follow_stderr();
    let on = pipe
        .wait_stderr("capturing on", Duration::from_secs(20))
        .is_some();
    (pipe, on)
}

/// (XDP verdict, queue, comment) per captured frame, as tshark reads them.
fn tshark(path: &std::path::Path) -> Vec<(u64, u64, String)> {
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-T",
            "fields",
            "-E",
            "separator=|",
        ])
        .args([
            "-e",
            "frame.verdict.ebpf_xdp",
            "-e",
            "frame.interface_queue",
        ])
        .args(["-e", "frame.comment"])
        .output()
        .expect("tshark (apt package tshark)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f.get(2).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// A capture file in the temporary directory, removed when the test ends, failed or not.
fn temp(name: &str) -> TempFile {
    let p = std::env::temp_dir().join(format!("kbp-{name}-{}.pcapng", std::process::id()));
    let _ = std::fs::remove_file(&p);
    TempFile(p)
}

#[test]
fn dump_writes_every_frame_with_its_verdict_and_rule() {
    let tb = quiet_testbed();
    let l = load(&tb, &[]);
    let path = temp("dump-all");
    let d = dump(&tb, &path, &["--duration", "4"]);
    traffic(&tb);
    let out = d.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = last_json(&out);
    let mut l = l;
    l.signal(libc::SIGINT);
    let v = last_json(&l.finish());
    let frames = tshark(&path);
    assert_eq!(frames.len() as u64, n(&summary, "/written"), "{summary}");
    assert_eq!(n(&summary, "/lost"), 0);
    let with = |verdict: u64, comment: &str| {
        frames
            .iter()
            .filter(|(v, q, c)| *v == verdict && *q == 0 && c.starts_with(comment))
            .count() as u64
    };
    // XDP_DROP = 1, XDP_PASS = 2.
    assert_eq!(with(1, "rule 1 "), 5, "{frames:?}");
    assert_eq!(with(2, "rule 2 "), 4, "{frames:?}");
    assert_eq!(with(2, "no rule matched"), 3, "the pings: {frames:?}");
    // Everything the program counted while capturing is in the file (a quiet testbed: the
    // only traffic is ours).
    assert_eq!(
        frames.len() as u64,
        n(&v, "/actions/pass") + n(&v, "/actions/drop"),
        "{v}"
    );
}

#[test]
fn dump_selects_by_verdict_rule_and_match_and_pipes_into_tcpdump() {
    let tb = quiet_testbed();
    let mut l = load(&tb, &[]);
    for (extra, want) in [
        (vec!["--verdict", "drop"], 5usize),
        (vec!["--rule", "2"], 4),
        (vec!["--match", "proto udp dport 10"], 4),
        (vec!["--match", "proto udp dport 9-10 action pass"], 4),
        (vec!["--match", "proto icmp icmp-type 8"], 3),
    ] {
        let path = temp("dump-select");
        let mut args = extra.clone();
        args.extend(["--duration", "3"]);
        let d = dump(&tb, &path, &args);
        traffic(&tb);
        let out = d.wait_with_output().unwrap();
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        assert_eq!(tshark(&path).len(), want, "{extra:?}");
    }
    // `-w -` into tcpdump: the dropped datagrams, by count.
    let (mut pipe, on) = dump_into_tcpdump(&tb, "--verdict drop --count 5 --duration 10", "");
    if on {
        traffic(&tb);
    }
    let out = pipe.finish();
    let stderr_text = text(&out.stderr);
    assert!(on, "dump never said it was capturing: {stderr_text}");
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5, "{lines:?} {stderr_text}");
    assert!(lines.iter().all(|l| l.contains(".9: UDP")), "{lines:?}");
    l.signal(libc::SIGINT);
    l.finish();
}

#[test]
fn load_capture_writes_what_the_program_saw_and_capture_ends_with_the_dump() {
    let tb = quiet_testbed();
    let path = temp("load-capture");
    let mut l = load(&tb, &["--capture", path.to_str().unwrap()]);
    traffic(&tb);
    // While `load` captures, a second capture is refused, clearly.
    let second = tb
        .in_dut(xdp_user())
        .args([
            "dump",
            "--iface",
            DUT_IF,
            "-w",
            "/dev/null",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("already running"),
        "{}",
        text(&second.stderr)
    );
    l.signal(libc::SIGINT);
    let v = last_json(&l.finish());
    assert_eq!(n(&v, "/capture/written"), 12, "{v}");
    assert_eq!(n(&v, "/capture/lost"), 0, "{v}");
    // Capture is on from before the attach to after the detach: every frame counted is in it.
    let counted = n(&v, "/actions/pass") + n(&v, "/actions/drop") + n(&v, "/actions/xsk");
    assert_eq!(n(&v, "/capture/seen"), counted, "{v}");
    assert_eq!(tshark(&path).len(), 12);

    // After a dump ends, capture is off: the next one starts.
    let l = load(&tb, &[]);
    for _ in 0..2 {
        let path = temp("dump-again");
        let d = dump(&tb, &path, &["--duration", "1"]);
        let out = d.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let mut l = l;
    l.signal(libc::SIGINT);
    l.finish();
}

/// Ctrl-C ends a dump while traffic still flows: it drains its ring once more (at most a
/// full ring's worth), writes its summary and exits, the file holding what it says it wrote.
#[test]
fn dump_ends_on_sigint_while_traffic_flows() {
    let tb = quiet_testbed();
    let l = load(&tb, &[]);
    let path = temp("dump-sigint");
    let mut d = Loader::spawned(dump(&tb, &path, &[]));
    // About 4 s of datagrams from the peer, in the background.
    let flood = tb
        .in_peer("python3")
        .args([
            "-c",
            &format!(
                "import socket,time\n\
                 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 end=time.time()+4\n\
                 while time.time()<end:\n\
                 \x20   for i in range(100): s.sendto(b'x'*64, ('{}', 10))\n\
                 \x20   time.sleep(0.001)\n",
                xtask::testbed::DUT_IPV4
            ),
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    d.signal(libc::SIGINT);
    let took = d
        .wait_exit(Duration::from_secs(10))
        .expect("dump still running 10 s after SIGINT");
    let out = d.finish();
    let mut flood = flood;
    let flood_running = flood.try_wait().unwrap().is_none();
    let _ = flood.wait();
    let mut l = l;
    l.signal(libc::SIGINT);
    l.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        flood_running,
        "the traffic ended before the dump did ({took:?}): nothing was checked"
    );
    let summary = last_json(&out);
    assert!(n(&summary, "/written") > 0, "{summary}");
    assert_eq!(tshark(&path).len() as u64, n(&summary, "/written"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn dump_says_what_to_do_without_a_program() {
    let tb = quiet_testbed();
    let out = tb
        .in_dut(xdp_user())
        .args([
            "dump",
            "--iface",
            DUT_IF,
            "-w",
            "/dev/null",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("no XDP program is attached to dut0") && e.contains("xdp-user load"),
        "{e}"
    );
    let out = tb
        .in_dut(xdp_user())
        .args(["dump", "--iface", "nosuch0", "-w", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nosuch0"),
        "{}",
        text(&out.stderr)
    );
}

/// A reader that cannot keep up loses frames, and says so: `dump` is stopped (SIGSTOP) while
/// 8 000 frames of 1 000 bytes arrive, more than the program's 8 MiB capture ring holds. Every
/// frame the program handled is then either in the file or counted as lost, and the file says
/// where the gap is (`epb_dropcount`): never a silent gap.
#[test]
fn a_full_capture_ring_is_counted_never_a_silent_gap() {
    let tb = quiet_testbed();
    let l = load(&tb, &[]);
    let path = temp("dump-full");
    let d = dump(&tb, &path, &["--duration", "6"]);
    // `ip netns exec` execs the program: the child is `xdp-user dump` itself.
    let pid = d.id() as libc::pid_t;
    // SAFETY: sending a signal to our own child process, which has not been reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    tb.peer_python(&format!(
        "import socket,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(8000):\n\
         \x20   s.sendto(b'x'*972, ('{}', 10))\n\
         \x20   if i % 100 == 99: time.sleep(0.001)\n",
        xtask::testbed::DUT_IPV4
    ));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let out = d.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = last_json(&out);
    let mut l = l;
    l.signal(libc::SIGINT);
    let v = last_json(&l.finish());
    let handled = n(&v, "/actions/pass") + n(&v, "/actions/drop") + n(&v, "/actions/xsk");
    let (written, lost) = (n(&summary, "/written"), n(&summary, "/lost"));
    assert!(lost > 0, "the ring never filled: {summary}");
    assert!(written > 0, "{summary}");
    assert_eq!(written + lost, handled, "dump {summary}, load {v}");
    assert_eq!(n(&v, "/capture_lost"), lost, "{v}");
    assert!(
        text(&out.stderr).contains("lost to a full capture ring"),
        "{}",
        text(&out.stderr)
    );
    let counts = std::process::Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-T", "fields"])
        .args(["-e", "frame.drop_count"])
        .output()
        .expect("tshark (apt package tshark)");
    let counts = text(&counts.stdout);
    assert_eq!(counts.lines().count() as u64, written);
    let in_file: u64 = counts
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(in_file, lost, "the file's epb_dropcount add up to the loss");
    let _ = std::fs::remove_file(&path);
}

/// A dump killed with `kill -9` cannot switch capture off. The `load` that holds the program
/// does it within moments, naming the gone process: the program stops paying for a ring
/// nobody reads and counting every frame as lost, and the next dump is not refused.
#[test]
fn a_killed_dumps_capture_is_switched_off_and_the_next_dump_runs() {
    let tb = quiet_testbed();
    let mut l = load(&tb, &[]);
    l.follow_stderr();
    let first = temp("dump-killed");
    let mut killed = dump(&tb, &first, &[]);
    let pid = killed.id();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let said = l.wait_stderr(
        &format!("capture switched off: process {pid}, which switched it on, is gone"),
        Duration::from_secs(5),
    );
    assert!(
        said.is_some(),
        "load did not switch the orphaned capture off"
    );
    // Frames now are neither captured nor lost.
    traffic(&tb);

    let second = temp("dump-after-kill");
    let mut d = Loader::spawned(dump(&tb, &second, &["--duration", "3"]));
    traffic(&tb);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
    let out = d.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = last_json(&out);
    l.signal(libc::SIGINT);
    let v = last_json(&l.finish());
    assert_eq!(
        n(&summary, "/written"),
        12,
        "the second dump saw the traffic: {summary}"
    );
    assert_eq!(n(&v, "/capture_lost"), 0, "{v}");
    for p in [first, second] {
        let _ = std::fs::remove_file(p);
    }
}

/// `dump -w - | tcpdump -c 2`: when tcpdump has its frames and exits, dump ends too, at once
/// even with no more traffic to write, with status 0, says why, and switches capture off.
#[test]
fn dump_ends_cleanly_when_the_reader_of_its_pipe_exits() {
    let tb = quiet_testbed();
    let mut l = load(&tb, &[]);
    let (mut pipe, on) = dump_into_tcpdump(&tb, "--json --duration 10", "-c 2");
    assert!(on, "dump never said it was capturing");
    // Two frames and then silence: nothing more for dump to write into the closed pipe (its
    // --duration only bounds the test when dump does not notice).
    assert_eq!(ping(&tb, false, 2), 2);
    let ended = pipe.wait_exit(Duration::from_secs(3));
    let out = pipe.finish();
    let err = text(&out.stderr);
    assert!(ended.is_some(), "dump outlived its reader: {err}");
    assert!(err.contains("dump-status=0"), "{err}");
    assert!(
        err.contains("the reader of standard output has gone"),
        "{err}"
    );
    assert!(err.contains("\"reader_gone\":true"), "{err}");
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "tcpdump read 2 frames"
    );

    // Capture is off again: another dump is not refused.
    let path = temp("dump-after-pipe");
    let mut d = Loader::spawned(dump(&tb, &path, &["--duration", "1"]));
    assert!(d.wait_exit(Duration::from_secs(10)).is_some());
    let out = d.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    l.signal(libc::SIGINT);
    l.finish();
    let _ = std::fs::remove_file(path);
}

/// `--capture` of the data paths writes a file: `-` is refused (it used to create a file
/// named `-`, the frames never reaching the pipe). A FIFO works, and when its reader has its
/// frames and exits, the data path goes on and ends with its report, saying the capture's
/// reader went away (it used to end with "Broken pipe" and status 1, its report lost). A FIFO
/// nobody reads yet is refused (it used to hang in open(2), the program attached).
#[test]
fn capture_to_a_fifo_survives_its_reader_and_dash_is_refused() {
    let tb = quiet_testbed();
    for cmd in ["load", "run"] {
        subcommand_fails_with(
            &tb,
            cmd,
            &["--iface", DUT_IF, "--capture", "-", "--duration", "2"],
            "--capture writes a file",
        );
        // Where a file named `-` would have been created: the working directory.
        assert!(!std::path::Path::new("-").exists(), "a file named -");
    }

    let fifo = std::env::temp_dir().join(format!("kbp-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // Nobody reads the FIFO yet: refused, instead of waiting without end (deaf to Ctrl-C) in
    // open(2) with the program attached and the sockets unread.
    let out = tb
        .in_dut("timeout")
        .args(["10", xdp_user(), "run", "--iface", DUT_IF, "--capture"])
        .arg(&fifo)
        .args(["--duration", "2"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("has no reader: start the reader first"),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(!tb.dut_xdp_attached().unwrap());
    let reader = std::process::Command::new("timeout")
        .args(["20", "tcpdump", "-nn", "-c", "2", "-r"])
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut run = Loader::start_cmd(
        &tb,
        "run",
        &[
            "--iface",
            DUT_IF,
            "--rule",
            "proto icmp action xsk",
            "--capture",
            fifo.to_str().unwrap(),
            "--json",
            "--duration",
            "30",
        ],
    );
    // Each ping is two frames (request in, reply out): tcpdump has its two after the first.
    assert_eq!(ping(&tb, false, 4), 4);
    let read = reader.wait_with_output().unwrap();
    assert_eq!(
        text(&read.stdout).lines().count(),
        2,
        "tcpdump read 2 frames"
    );
    assert_eq!(ping(&tb, false, 2), 2, "the loop still answers");
    run.signal(libc::SIGINT);
    let out = run.finish();
    let _ = std::fs::remove_file(&fifo);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("its reader went away"),
        "{}",
        text(&out.stderr)
    );
    let v = last_json(&out);
    assert_eq!(n(&v, "/echoed"), 6, "{v}");
    assert_eq!(v["capture"]["reader_gone"], true, "{v}");
    assert_eq!(n(&v, "/frames_lost"), 0, "{v}");
}
