//! Helpers shared by the integration tests: running `xdp-user` in the testbed's DUT namespace,
//! clients in the peer namespace (ordinary kernel sockets, `ping`), raw frame injection.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xtask::testbed::{
    DUT_IF, DUT_IPV4, DUT_IPV6, DUT_MAC, Options, PEER_IF, PEER_IPV4, PEER_IPV6, PEER_MAC, Testbed,
};

pub fn require_root() {
    assert!(
        xtask::setup::is_root(),
        "these tests need root (network namespaces, XDP); run them as root (`cargo xtask test`)"
    );
}

pub fn quiet_testbed() -> Testbed {
    require_root();
    Testbed::new(&Options {
        quiet: true,
        ..Options::default()
    })
    .expect("testbed")
}

/// The `xdp-user` under test: this build, or the one `XDP_USER_BIN` names (to run the tests
/// against another build, e.g. an older one to see a test fail).
pub fn xdp_user() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("XDP_USER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_xdp-user").into())
    })
}

/// A running `xdp-user` process (`load`, `run`, `dump`...) inside the DUT namespace, killed
/// if the test ends without [`Loader::finish`].
pub struct Loader {
    child: Option<Child>,
    /// Set by [`Loader::follow_stderr`]: the thread that reads standard error as it comes.
    stderr_reader: Option<StderrReader>,
}

/// Standard error read line by line while the process runs: each line is handed over as it
/// arrives and kept for [`Loader::finish`].
struct StderrReader {
    lines: Receiver<String>,
    all: JoinHandle<Vec<u8>>,
}

impl Loader {
    /// Starts `xdp-user load ARGS` and waits until the program is attached.
    pub fn start(tb: &Testbed, args: &[&str]) -> Loader {
        Loader::start_cmd(tb, "load", args)
    }

    /// Takes over a process the test started itself (its stdout and stderr piped), without
    /// waiting for anything.
    pub fn spawned(child: Child) -> Loader {
        Loader {
            child: Some(child),
            stderr_reader: None,
        }
    }

    /// Starts `xdp-user SUBCOMMAND ARGS` and waits until the program is attached.
    pub fn start_cmd(tb: &Testbed, subcommand: &str, args: &[&str]) -> Loader {
        let child = tb
            .in_dut(xdp_user())
            .arg(subcommand)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn xdp-user");
        let mut l = Loader {
            child: Some(child),
            stderr_reader: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !tb.dut_xdp_attached().unwrap() {
            if let Some(status) = l.child.as_mut().unwrap().try_wait().unwrap() {
                let out = l.finish();
                panic!(
                    "xdp-user exited before attaching ({status}): {}",
                    text(&out.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "xdp-user did not attach within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        l
    }

    /// From now on, standard error is read as it comes (see [`Loader::wait_stderr`]); call it
    /// before the process writes more than a pipe holds (64 KiB).
    pub fn follow_stderr(&mut self) {
        let stderr = self
            .child
            .as_mut()
            .expect("running")
            .stderr
            .take()
            .expect("standard error not yet taken");
        let (tx, rx) = mpsc::channel();
        let all = std::thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                all.extend_from_slice(line.as_bytes());
                all.push(b'\n');
                // The test may have stopped listening; the line is kept in `all` anyway.
                let _ = tx.send(line);
            }
            all
        });
        self.stderr_reader = Some(StderrReader { lines: rx, all });
    }

    /// The next line of standard error that contains `pattern` (lines before it are skipped),
    /// or `None` if none comes within `limit`. Needs [`Loader::follow_stderr`].
    pub fn wait_stderr(&self, pattern: &str, limit: Duration) -> Option<String> {
        let reader = self
            .stderr_reader
            .as_ref()
            .expect("call follow_stderr first");
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match reader.lines.recv_timeout(left) {
                Ok(line) if line.contains(pattern) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits at most `limit` for the process to exit by itself; returns how long it took, or
    /// `None` if it still runs (it is left running: [`Loader::finish`] or drop ends it).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        while start.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Reads `lines` lines of standard output, then closes it, as `| head -n LINES` does when
    /// it exits.
    pub fn close_stdout_after(&mut self, lines: usize) {
        let stdout = self.child.as_mut().expect("running").stdout.take();
        let mut reader = BufReader::new(stdout.expect("standard output not yet taken"));
        for _ in 0..lines {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "standard output ended before {lines} line(s)"
            );
        }
    }

    /// Closes standard error unread, as a reader that exited does.
    pub fn close_stderr(&mut self) {
        drop(self.child.as_mut().expect("running").stderr.take());
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we spawned and have not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits for the process to end and returns its output.
    pub fn finish(&mut self) -> Output {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = child.wait().unwrap();
        // Either may have been closed by the test: then it reads as empty.
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut s) = child.stdout.take() {
            s.read_to_end(&mut stdout).unwrap();
        }
        match self.stderr_reader.take() {
            Some(r) => stderr = r.all.join().expect("stderr reader"),
            None => {
                if let Some(mut s) = child.stderr.take() {
                    s.read_to_end(&mut stderr).unwrap();
                }
            }
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `xdp-user SUBCOMMAND ... | head -n 2`: when the reader exits, the next line of rates finds
/// the pipe closed and the data path stops as on SIGINT (detached, its summary on standard
/// error) instead of panicking; with standard error gone as well (`|& head`), it still
/// detaches and exits 0.
pub fn stops_cleanly_when_its_readers_exit(tb: &Testbed, subcommand: &str, args: &[&str]) {
    for stderr_too in [false, true] {
        let mut all = vec!["--iface", DUT_IF, "--interval", "0.1"];
        all.extend_from_slice(args);
        let mut l = Loader::start_cmd(tb, subcommand, &all);
        if stderr_too {
            l.close_stderr();
        }
        l.close_stdout_after(2);
        assert!(
            l.wait_exit(Duration::from_secs(10)).is_some(),
            "{subcommand}, stderr closed {stderr_too}: still running with nobody reading"
        );
        let out = l.finish();
        let err = text(&out.stderr);
        assert!(
            out.status.success(),
            "{subcommand}, stderr closed {stderr_too}: {}: {err}",
            out.status
        );
        if !stderr_too {
            assert!(err.contains("standard output was closed"), "{err}");
            assert!(err.contains(&format!("detached from {DUT_IF}")), "{err}");
        }
        assert!(
            !tb.dut_xdp_attached().unwrap(),
            "{subcommand}, stderr closed {stderr_too}: still attached"
        );
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn last_json(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no JSON on the last line ({e}): {stdout}\n{}",
            text(&out.stderr)
        )
    })
}

pub fn n(v: &serde_json::Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(|x| x.as_u64())
        .unwrap_or_else(|| panic!("no {path} in {v}"))
}

/// Runs a Python snippet in the peer namespace (the clients: ordinary kernel sockets).
pub fn peer_python(tb: &Testbed, code: &str) -> String {
    tb.peer_python(code)
}

/// Sends `count` UDP datagrams to `port` on the DUT, paced so no socket buffer overflows.
pub fn send_udp(tb: &Testbed, port: u16, count: u32) {
    peer_python(
        tb,
        &format!(
            "import socket,time\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for i in range({count}):\n\
             \x20   s.sendto(b'x%d' % i, ('{DUT_IPV4}', {port}))\n\
             \x20   if i % 20 == 19: time.sleep(0.005)\n"
        ),
    );
}

/// Opens `count` TCP connections to `port` (each a SYN, answered by a RST: nothing listens).
pub fn send_syns(tb: &Testbed, port: u16, count: u32) {
    peer_python(
        tb,
        &format!(
            "import socket\n\
             for i in range({count}):\n\
             \x20   s=socket.socket(); s.settimeout(1)\n\
             \x20   try: s.connect(('{DUT_IPV4}', {port}))\n\
             \x20   except OSError: pass\n\
             \x20   s.close()\n"
        ),
    );
}

/// Sends raw Ethernet frames (hex, without source/destination MACs) from the peer.
pub fn inject(tb: &Testbed, frames: &[String]) {
    tb.inject(frames)
}

pub fn ping(tb: &Testbed, v6: bool, count: u32) -> usize {
    tb.ping(v6, count)
}

/// Counts datagrams arriving on the DUT's kernel UDP sockets, one per port, for `seconds`.
pub fn udp_listener(tb: &Testbed, ports: &[u16], seconds: f64) -> Child {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    tb.in_dut("python3")
        .args([
            "-c",
            &format!(
                "import socket,select,time\n\
                 ss={{}}\n\
                 for p in [{}]:\n\
                 \x20   s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('{DUT_IPV4}',p)); ss[s]=p\n\
                 n={{p:0 for p in ss.values()}}\n\
                 end=time.time()+{seconds}\n\
                 while time.time()<end:\n\
                 \x20   r,_,_=select.select(list(ss),[],[],0.05)\n\
                 \x20   for s in r:\n\
                 \x20       s.recv(2048); n[ss[s]]+=1\n\
                 print(' '.join('%d=%d' % kv for kv in sorted(n.items())))\n",
                ports.join(",")
            ),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn listener_counts(child: Child) -> std::collections::HashMap<u16, u64> {
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.parse().ok()?, v.parse().ok()?))
        })
        .collect()
}

/// The Python that has scapy (`python3-scapy`): the first `python3` on PATH may be another
/// installation (pyenv) without Debian's packages.
pub fn scapy_python() -> &'static str {
    static PYTHON: OnceLock<&'static str> = OnceLock::new();
    PYTHON.get_or_init(|| {
        for python in ["python3", "/usr/bin/python3"] {
            let found = std::process::Command::new(python)
                .args(["-c", "import scapy.all"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if found {
                return python;
            }
        }
        panic!(
            "these tests craft frames with scapy, which no python3 here can import: install \
             python3-scapy (`cargo xtask setup` does)"
        )
    })
}

/// What every scapy snippet of [`peer_scapy`] can use: the testbed's addresses, frame
/// builders, and `send(label, frames, l2=None)`, which sends from the peer's interface and
/// counts the frames under `label`.
const SCAPY_PRELUDE: &str = r#"
import json
from scapy.all import *
conf.verb = 0
P4, D4, P6, D6 = '@P4@', '@D4@', '@P6@', '@D6@'
SENT = {}
def eth():
    return Ether(src='@PMAC@', dst='@DMAC@')
def pay(n, seed=0):
    return bytes((i * 31 + seed) & 255 for i in range(n))
def udp4(dport, n, ident):
    return IP(src=P4, dst=D4, id=ident) / UDP(sport=40000, dport=dport) / pay(n, ident)
def udp6(dport, n, ext=0, seed=0):
    p = IPv6(src=P6, dst=D6)
    for _ in range(ext):
        p = p / IPv6ExtHdrDestOpt()
    return p / UDP(sport=40000, dport=dport) / pay(n, seed)
def frag4(dport, n, ident, size=400):
    return fragment(udp4(dport, n, ident), fragsize=size)
def frag6(dport, n, ident, size=500):
    p = IPv6(src=P6, dst=D6) / IPv6ExtHdrFragment(id=ident) / UDP(sport=40000, dport=dport)
    return fragment6(p / pay(n, ident), size)
def send(label, frames, l2=None):
    frames = list(frames) if isinstance(frames, (list, tuple)) else [frames]
    sendp([(l2 if l2 is not None else eth()) / f for f in frames], iface='@PIF@')
    SENT[label] = SENT.get(label, 0) + len(frames)
"#;

/// Runs a scapy snippet in the peer namespace (after [`SCAPY_PRELUDE`]) and returns the frames
/// it sent, by label: `{"label": frames}`.
pub fn peer_scapy(tb: &Testbed, code: &str) -> serde_json::Value {
    let prelude = SCAPY_PRELUDE
        .replace("@P4@", PEER_IPV4)
        .replace("@D4@", DUT_IPV4)
        .replace("@P6@", PEER_IPV6)
        .replace("@D6@", DUT_IPV6)
        .replace("@PMAC@", PEER_MAC)
        .replace("@DMAC@", DUT_MAC)
        .replace("@PIF@", PEER_IF);
    let out = tb
        .in_peer(scapy_python())
        .args([
            "-c",
            &format!("{prelude}\n{code}\nprint(json.dumps(SENT))\n"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run python3 in the peer namespace");
    assert!(
        out.status.success(),
        "scapy script failed: {}\n{code}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no count of sent frames ({e}): {stdout}"))
}

/// Kernel UDP sockets in the DUT namespace, IPv4 and IPv6, one per port and family, that
/// count (and measure) what arrives until [`UdpSink::finish`].
pub struct UdpSink {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

const SINK: &str = r#"
import json, select, socket, sys, time
socks = {}
for fam, addr, v in ((socket.AF_INET, '@D4@', 4), (socket.AF_INET6, '@D6@', 6)):
    for p in PORTS:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:  # SO_RCVBUFFORCE (root): beyond net.core.rmem_max
            s.setsockopt(socket.SOL_SOCKET, 33, 1 << 25)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 25)
        s.bind((addr, p))
        s.setblocking(False)
        socks[s] = '%d:%d' % (v, p)
res = {k: {'count': 0, 'lengths': [], 'buckets': []} for k in socks.values()}
def drain(s):
    r = res[socks[s]]
    while True:
        try:
            d = s.recv(65536)
        except BlockingIOError:
            return
        r['count'] += 1
        if len(r['lengths']) < 1000:
            r['lengths'].append(len(d))
        b = int(time.time() * 10)
        if not r['buckets'] or r['buckets'][-1] != b:
            r['buckets'].append(b)
print('ready', flush=True)
end = time.time() + MAX_SECONDS
while time.time() < end:
    ready, _, _ = select.select(list(socks) + [sys.stdin], [], [], 0.05)
    for s in ready:
        if s is not sys.stdin:
            drain(s)
    if sys.stdin in ready:
        break
for s in socks:
    drain(s)
print(json.dumps(res), flush=True)
"#;

impl UdpSink {
    /// Binds the sockets and returns once they are bound; they stop at [`UdpSink::finish`],
    /// or after `max_seconds` in any case.
    pub fn start(tb: &Testbed, ports: &[u16], max_seconds: f64) -> UdpSink {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let code = format!(
            "PORTS = [{}]\nMAX_SECONDS = {max_seconds}\n{}",
            ports.join(", "),
            SINK.replace("@D4@", DUT_IPV4).replace("@D6@", DUT_IPV6)
        );
        let mut child = tb
            .in_dut("python3")
            .args(["-c", &code])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 in the DUT namespace");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the UDP sockets could not be bound");
        UdpSink {
            child,
            stdin,
            stdout,
        }
    }

    /// Lets packets in flight arrive (`settle`), closes the sockets and returns what came.
    pub fn finish(mut self, settle: Duration) -> Received {
        std::thread::sleep(settle);
        drop(self.stdin.take());
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        let _ = self.child.wait();
        Received(
            serde_json::from_str(out.trim())
                .unwrap_or_else(|e| panic!("UDP sink printed no counts ({e}): {out}")),
        )
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a [`UdpSink`] received, per family and port.
#[derive(Debug)]
pub struct Received(pub serde_json::Value);

impl Received {
    fn of(&self, v6: bool, port: u16) -> &serde_json::Value {
        let key = format!("{}:{port}", if v6 { 6 } else { 4 });
        self.0
            .get(&key)
            .unwrap_or_else(|| panic!("no socket {key} in {}", self.0))
    }

    /// Datagrams received on `port` (IPv6 or IPv4).
    pub fn count(&self, v6: bool, port: u16) -> u64 {
        self.of(v6, port)["count"].as_u64().unwrap()
    }

    /// Their lengths (the first thousand), sorted.
    pub fn lengths(&self, v6: bool, port: u16) -> Vec<u64> {
        let mut l: Vec<u64> = self.of(v6, port)["lengths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        l.sort_unstable();
        l
    }

    /// The tenths of a second (of the Unix clock) in which something arrived.
    pub fn tenths(&self, v6: bool, port: u16) -> Vec<u64> {
        self.of(v6, port)["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    }
}

/// Asserts each JSON counter, naming the first that differs (and showing the whole report).
pub fn assert_counts(v: &serde_json::Value, want: &[(&str, u64)]) {
    for (path, want) in want {
        assert_eq!(n(v, path), *want, "{path} in {v}");
    }
}

/// The frames the program decided, whatever it decided.
pub fn frames_seen(v: &serde_json::Value) -> u64 {
    n(v, "/actions/pass") + n(v, "/actions/drop") + n(v, "/actions/xsk")
}

/// How many frames of `label` a scapy script sent (0 if none).
pub fn sent(s: &serde_json::Value, label: &str) -> u64 {
    s.get(label).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Writes `text` to `path` atomically: a reader sees the old or the new file, never a part.
pub fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
}

/// A directory of its own for one test's files, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("xdp-user-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

/// A file path that is removed (if the file exists) when dropped.
pub struct TempFile(pub std::path::PathBuf);

impl std::ops::Deref for TempFile {
    type Target = std::path::PathBuf;
    fn deref(&self) -> &std::path::PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempFile {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `xdp-user load ARGS` in the DUT namespace and checks that it fails, says `message`,
/// and leaves nothing attached.
pub fn fails_with(tb: &Testbed, args: &[&str], message: &str) {
    subcommand_fails_with(tb, "load", args, message)
}

/// [`fails_with`] for any subcommand: `xdp-user SUBCOMMAND ARGS`.
pub fn subcommand_fails_with(tb: &Testbed, subcommand: &str, args: &[&str], message: &str) {
    let out = tb
        .in_dut(xdp_user())
        .arg(subcommand)
        .args(args)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "expected a failure for {subcommand} {args:?}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(message),
        "{args:?}: expected `{message}` in:\n{err}"
    );
    assert!(
        !tb.dut_xdp_attached().unwrap(),
        "nothing may stay attached after {args:?}"
    );
}
