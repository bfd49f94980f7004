//! Takes `net_af_xdp`'s XDP program off its interface when dpdk-app ends without closing its
//! ports: `kill -9`, a crash, an abort.
//!
//! DPDK attaches that program through netlink (libxdp), not through a BPF link, so unlike
//! `xdp-user`'s it outlives the process: after a `kill -9` the interface kept it, and the next
//! start found its interface taken. A BPF link cannot be had through DPDK's PMD, so a guard
//! does the clean-up instead: a second process (this binary, started with [`GUARD_ARG`]),
//! reading on a pipe from the app the programs to watch, one `IFACE ID` line per attached
//! program. The pipe's end comes when the app's process ends, however it ends; the guard then
//! detaches each program that is still the one attached (a clean stop has already removed
//! it; another program put there since is left alone) and exits.
//!
//! The guard runs in a process group of its own, so a Ctrl-C at the terminal reaches only the
//! app (which stops cleanly), and it ignores SIGINT, SIGTERM and SIGHUP: it ends only when the
//! app has.

use anyhow::{Context, Result};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};

/// The first argument that makes this binary the guard (never given by a user).
pub const GUARD_ARG: &str = "--internal-xdp-guard";

/// The app's side: the guard process and the pipe to it.
#[derive(Debug)]
pub struct XdpGuard {
    child: Child,
    to_guard: Option<ChildStdin>,
}

impl XdpGuard {
    /// Starts the guard (before EAL, so nothing of DPDK's is inherited but the pipe).
    pub fn spawn() -> Result<XdpGuard> {
        let exe = std::env::current_exe().context("cannot find our own binary")?;
        let mut child = Command::new(exe)
            .arg(GUARD_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("could not start the XDP guard process")?;
        let to_guard = child.stdin.take();
        Ok(XdpGuard { child, to_guard })
    }

    /// Hands the guard the XDP program now attached to `iface` (if any) to take off should
    /// the app die without closing its port.
    pub fn watch(&mut self, iface: &str) -> Result<()> {
        let attached = packet::attached::attached_xdp(iface).map_err(anyhow::Error::msg)?;
        if let (Some(a), Some(pipe)) = (attached, self.to_guard.as_mut()) {
            writeln!(pipe, "{iface} {}", a.id)
                .and_then(|()| pipe.flush())
                .context("could not reach the XDP guard process")?;
        }
        Ok(())
    }
}

impl Drop for XdpGuard {
    /// A clean stop: the ports are closed (DPDK removed its programs), so the guard finds
    /// nothing to do; wait for it, so that no process of ours outlives the app.
    fn drop(&mut self) {
        drop(self.to_guard.take());
        let _ = self.child.wait();
    }
}

/// The guard's side: reads `IFACE ID` lines until the app's end of the pipe closes, then
/// detaches each program still attached. Never returns.
pub fn run() -> ! {
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // Registered, so the default action (ending the process) no longer applies.
        let _ = signal_hook::flag::register(sig, std::sync::Arc::default());
    }
    let mut watched: Vec<(String, u32)> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut parts = line.split_whitespace();
        if let (Some(iface), Some(Ok(id))) = (parts.next(), parts.next().map(str::parse)) {
            watched.push((iface.to_string(), id));
        }
    }
    for (iface, id) in watched {
        match packet::attached::detach_program(&iface, id) {
            Ok(true) => packet::stderr!(
                "dpdk-app: it ended without closing its ports; took net_af_xdp's XDP program \
                 (id {id}) off {iface}"
            ),
            Ok(false) => {}
            Err(e) => packet::stderr!("dpdk-app: {e}"),
        }
    }
    std::process::exit(0)
}
