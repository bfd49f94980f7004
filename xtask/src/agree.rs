//! Counters along the path: at a rate below loss, the generator, both veth ends, the XDP
//! program and the AF_XDP loop must count the same packets. The integration test asserts it
//! and `cargo xtask demo` prints it side by side; both run [`path_counters`].

use crate::testbed::{DUT_IF, DUT_IPV4, PEER_IF, Testbed};
use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (rx, tx) packets of an interface, from its kernel counters.
pub fn link_packets(ns: &str, dev: &str) -> Result<(u64, u64)> {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", "dev", dev])
        .output()
        .context("could not run ip")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`ip -s -j link show dev {dev}` in {ns} printed no JSON"))?;
    let get = |dir: &str| {
        v.pointer(&format!("/0/stats64/{dir}/packets"))
            .and_then(|x| x.as_u64())
            .with_context(|| format!("no {dir} counter for {dev} in {ns}"))
    };
    Ok((get("rx")?, get("tx")?))
}

/// What each counter on the path saw, in path order, and the counters that must stay zero.
#[derive(Debug)]
pub struct PathCounters {
    pub sent: u64,
    pub along: Vec<(&'static str, u64)>,
    pub zero: Vec<(&'static str, u64)>,
}

impl PathCounters {
    /// The counters that disagree with what was sent, or are not zero where they must be.
    pub fn disagreements(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .along
            .iter()
            .filter(|(_, n)| *n != self.sent)
            .map(|(what, n)| format!("{what}: {n}, not {}", self.sent))
            .collect();
        out.extend(
            self.zero
                .iter()
                .filter(|(_, n)| *n != 0)
                .map(|(what, n)| format!("{what}: {n}, not 0")),
        );
        out
    }

    /// A two-column table, one counter per line.
    pub fn table(&self) -> String {
        self.along
            .iter()
            .chain(&self.zero)
            .map(|(what, n)| format!("  {what:<36} {n:>8}\n"))
            .collect()
    }
}

/// Runs `xdp-user run` (echo) on the DUT end of `tb` (a quiet testbed: nothing else on the
/// link) and `xdp-user gen` from the peer, `count` UDP requests at `rate` per second, and
/// reads every counter on the way.
pub fn path_counters(tb: &Testbed, xdp_user: &str, count: u64, rate: u64) -> Result<PathCounters> {
    let mut run = tb
        .in_dut(xdp_user)
        .args(["run", "--iface", DUT_IF, "--json", "--interval", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start xdp-user run")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tb.dut_xdp_attached()? {
        if Instant::now() > deadline || run.try_wait()?.is_some() {
            let _ = run.kill();
            let out = run.wait_with_output()?;
            bail!(
                "xdp-user run did not attach: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (peer0, dut0) = (
        link_packets(&tb.peer_ns, PEER_IF)?,
        link_packets(&tb.dut_ns, DUT_IF)?,
    );
    let g = tb
        .gen_from_peer(xdp_user, DUT_IPV4)
        .args(["--count", &count.to_string(), "--rate", &rate.to_string()])
        .args(["--flows", "4", "--json"])
        .output()
        .context("could not run xdp-user gen")?;
    // SAFETY: a plain kill(2) of our own child, which has not been waited for yet.
    unsafe { libc::kill(run.id() as libc::pid_t, libc::SIGINT) };
    let r = run.wait_with_output()?;
    let (peer1, dut1) = (
        link_packets(&tb.peer_ns, PEER_IF)?,
        link_packets(&tb.dut_ns, DUT_IF)?,
    );
    let json = |out: &std::process::Output, what: &str| -> Result<serde_json::Value> {
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap_or("")).with_context(|| {
            format!(
                "{what} printed no JSON summary ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let (g, r) = (json(&g, "xdp-user gen")?, json(&r, "xdp-user run")?);
    let n =
        |v: &serde_json::Value, p: &str| v.pointer(p).and_then(|x| x.as_u64()).unwrap_or(u64::MAX);
    Ok(PathCounters {
        sent: count,
        along: vec![
            ("gen: sent (completed by the kernel)", n(&g, "/sent")),
            ("peer interface: tx", peer1.1 - peer0.1),
            ("DUT interface: rx", dut1.0 - dut0.0),
            ("XDP program: redirected to AF_XDP", n(&r, "/xdp/xsk")),
            ("AF_XDP loop: rx", n(&r, "/rx")),
            ("AF_XDP loop: echoed", n(&r, "/echoed")),
            ("AF_XDP loop: tx", n(&r, "/tx")),
            ("DUT interface: tx", dut1.1 - dut0.1),
            ("peer interface: rx", peer1.0 - peer0.0),
            ("gen: received (by sequence number)", n(&g, "/received")),
        ],
        zero: vec![
            ("XDP program: passed", n(&r, "/xdp/pass")),
            ("XDP program: dropped", n(&r, "/xdp/drop")),
            ("AF_XDP loop: dropped", n(&r, "/dropped")),
            ("gen: duplicate replies", n(&g, "/duplicates")),
            ("gen: reordered replies", n(&g, "/reordered")),
            ("gen: foreign frames", n(&g, "/foreign")),
        ],
    })
}
