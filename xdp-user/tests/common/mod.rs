//! Helpers shared by the integration tests: running `xdp-user` in the testbed's DUT namespace,
//! clients in the peer namespace (ordinary kernel sockets, `ping`), raw frame injection.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use xtask::testbed::{DUT_IPV4, Options, Testbed};

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

pub fn xdp_user() -> &'static str {
    env!("CARGO_BIN_EXE_xdp-user")
}

/// A running `xdp-user load` inside the DUT namespace.
pub struct Loader {
    child: Option<Child>,
}

impl Loader {
    /// Starts `xdp-user load ARGS` and waits until the program is attached.
    pub fn start(tb: &Testbed, args: &[&str]) -> Loader {
        Loader::start_cmd(tb, "load", args)
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
        let mut l = Loader { child: Some(child) };
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
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
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
