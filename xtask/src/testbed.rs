//! A two-host testbed: network namespaces joined by a veth pair, made and removed by the
//! process that uses it (`shared/docs/testbed.md`).
//!
//! - The peer namespace plays the client / traffic generator: 198.18.0.1 and 2001:db8::1.
//! - The device under test (DUT) namespace holds the interface our data paths run on:
//!   198.18.0.2 and 2001:db8::2 (or no address, for DPDK, which has no kernel stack).
//!
//! Namespace names carry the creating process id, so runs never collide, and a new testbed
//! first removes the testbeds of processes that no longer exist (a run killed with `kill -9`
//! cannot clean up after itself). Dropping a [`Testbed`] deletes its namespaces, which deletes
//! the veth pair with them.

use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const PEER_IPV4: &str = "198.18.0.1";
pub const DUT_IPV4: &str = "198.18.0.2";
pub const PEER_IPV6: &str = "2001:db8::1";
pub const DUT_IPV6: &str = "2001:db8::2";
pub const PEER_MAC: &str = "02:00:00:00:00:01";
pub const DUT_MAC: &str = "02:00:00:00:00:02";
/// Interface names inside the namespaces (each namespace has its own name space).
pub const DUT_IF: &str = "dut0";
pub const PEER_IF: &str = "peer0";

const PREFIX: &str = "kbp";
static SEQ: AtomicU32 = AtomicU32::new(0);

/// How to build the testbed.
#[derive(Clone, Debug)]
pub struct Options {
    /// RX/TX queues on each veth end.
    pub queues: u32,
    /// Give the DUT end its IP addresses (off for DPDK, which answers ARP/ND itself).
    pub dut_addresses: bool,
    /// Make the link quiet, for tests that count packets exactly: static neighbour entries on
    /// both ends (no ARP / neighbour discovery), no router solicitations, and a pause for the
    /// multicast listener reports that follow link-up to pass.
    pub quiet: bool,
    /// Leave the peer's transmit checksum offload on (the veth default): its UDP and TCP
    /// packets then carry unfinished checksums (see `packet::echo`). Off by default.
    pub peer_checksum_offload: bool,
    /// Make the device, not the generator, the limit (`shared/docs/testbed.md`): GRO and
    /// threaded NAPI on both veth ends, so the receive work of each end runs in a kernel
    /// thread of its own ([`Testbed::pin_napi`] pins it) instead of in the softirq of the CPU
    /// that sent the packet.
    pub threaded_napi: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queues: 1,
            dut_addresses: true,
            quiet: false,
            peer_checksum_offload: false,
            threaded_napi: false,
        }
    }
}

#[derive(Debug)]
pub struct Testbed {
    pub dut_ns: String,
    pub peer_ns: String,
    /// With `threaded_napi`: the names of the NAPI kernel threads of the DUT end and of the
    /// peer end (`napi/dut0-<napi id>`). The names outlive the threads: a link flap, or a
    /// program that re-creates the queues, starts a new thread under the same name.
    pub dut_napi: Vec<String>,
    pub peer_napi: Vec<String>,
}

/// Runs `ip ARGS`, failing with its error text.
pub(crate) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("could not run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Every kernel thread whose name starts with `napi/`: (pid, name). Kernel threads have no
/// command line, so they are found by name.
fn napi_threads() -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let comm = comm.trim();
        comm.starts_with("napi/").then(|| (pid, comm.to_string()))
    })
    .collect()
}

/// Binds thread `pid` to `cpu` (what `taskset -pc CPU PID` does).
pub fn pin_thread(pid: u32, cpu: usize) -> Result<()> {
    // SAFETY: `set` is a plain bit set that CPU_ZERO/CPU_SET initialise; the kernel reads
    // size_of::<cpu_set_t>() bytes of it and keeps no reference.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(
            pid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Removes testbed namespaces left behind by processes that no longer run.
pub fn reap_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Testbed {
    pub fn new(opts: &Options) -> Result<Testbed> {
        if !crate::setup::is_root() {
            bail!("the testbed needs root (network namespaces and veth); run as root");
        }
        reap_stale();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut tb = Testbed {
            dut_ns: format!("{PREFIX}{pid}d{n}"),
            peer_ns: format!("{PREFIX}{pid}p{n}"),
            dut_napi: Vec::new(),
            peer_napi: Vec::new(),
        };
        ip(&["netns", "add", &tb.dut_ns])?;
        // From here on, dropping `tb` removes whatever was made.
        ip(&["netns", "add", &tb.peer_ns])?;
        for ns in [&tb.dut_ns, &tb.peer_ns] {
            // Before the interfaces exist, so `default` applies to them.
            let status = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                // No router solicitations, no link-local addresses (whose duplicate address
                // detection ends in a multicast listener report a second after link-up), no
                // DAD: the only traffic on the link is what the test sends.
                .args([
                    "net.ipv6.conf.default.router_solicitations=0",
                    "net.ipv6.conf.all.router_solicitations=0",
                    "net.ipv6.conf.default.accept_ra=0",
                    "net.ipv6.conf.default.addr_gen_mode=1",
                    "net.ipv6.conf.default.dad_transmits=0",
                ])
                .status()
                .context("could not run sysctl in the testbed namespace")?;
            if !status.success() {
                bail!("sysctl failed in namespace {ns}");
            }
        }
        let q = opts.queues.to_string();
        ip(&[
            "link",
            "add",
            DUT_IF,
            "netns",
            &tb.dut_ns,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            PEER_IF,
            "netns",
            &tb.peer_ns,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ])?;
        tb.ip_dut(&["link", "set", DUT_IF, "address", DUT_MAC])?;
        tb.ip_peer(&["link", "set", PEER_IF, "address", PEER_MAC])?;
        if opts.dut_addresses {
            tb.ip_dut(&["addr", "add", &format!("{DUT_IPV4}/24"), "dev", DUT_IF])?;
            tb.ip_dut(&[
                "addr",
                "add",
                &format!("{DUT_IPV6}/64"),
                "dev",
                DUT_IF,
                "nodad",
            ])?;
        }
        tb.ip_peer(&["addr", "add", &format!("{PEER_IPV4}/24"), "dev", PEER_IF])?;
        tb.ip_peer(&[
            "addr",
            "add",
            &format!("{PEER_IPV6}/64"),
            "dev",
            PEER_IF,
            "nodad",
        ])?;
        for (ns, dev) in [(&tb.dut_ns, DUT_IF), (&tb.peer_ns, PEER_IF)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // veth hands a kernel socket's UDP/TCP packets on with the checksum left for the
        // "hardware" (CHECKSUM_PARTIAL). Packets that go through XDP or AF_XDP lose that
        // note, so an echoed reply would carry a half-done checksum and be dropped by the
        // client. Real NICs deliver finished checksums; on veth the sender must compute them.
        if !opts.peer_checksum_offload {
            let status = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &tb.peer_ns,
                    "ethtool",
                    "-K",
                    PEER_IF,
                    "tx",
                    "off",
                ])
                .stdout(Stdio::null())
                .status()
                .context("could not run ethtool (install ethtool)")?;
            if !status.success() {
                bail!("ethtool -K {PEER_IF} tx off failed in {}", tb.peer_ns);
            }
        }
        if opts.threaded_napi {
            tb.dut_napi = tb.thread_napi(&tb.dut_ns, DUT_IF)?;
            tb.peer_napi = tb.thread_napi(&tb.peer_ns, PEER_IF)?;
        }
        if opts.quiet {
            // Each end learns the other's addresses for good.
            tb.neighbours_for_good(&tb.peer_ns, PEER_IF, [DUT_IPV4, DUT_IPV6], DUT_MAC)?;
            tb.dut_knows_peer()?;
            // MLD reports go out right after link-up (two, within a second).
            std::thread::sleep(std::time::Duration::from_millis(2500));
        }
        Ok(tb)
    }

    /// The DUT end learns the peer's addresses for good (permanent neighbour entries), so its
    /// kernel sends to the peer without asking first. Under a flood an ARP reply competes with
    /// the flood for the DUT end's receive ring and can lose for seconds (the entry stays
    /// INCOMPLETE and the kernel sends nothing); a server that has talked to its peer (its
    /// gateway) before a flood has the entry already.
    pub fn dut_knows_peer(&self) -> Result<()> {
        self.neighbours_for_good(&self.dut_ns, DUT_IF, [PEER_IPV4, PEER_IPV6], PEER_MAC)
    }

    /// Permanent neighbour entries in `ns`: `addrs` at `mac` on `dev`.
    fn neighbours_for_good(&self, ns: &str, dev: &str, addrs: [&str; 2], mac: &str) -> Result<()> {
        for addr in addrs {
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "nud",
                "permanent",
                "dev",
                dev,
            ])?;
        }
        Ok(())
    }

    /// Turns on GRO (veth runs NAPI only with GRO or an XDP program) and threaded NAPI on
    /// `dev` in `ns`; returns the names of the kernel threads that appeared.
    fn thread_napi(&self, ns: &str, dev: &str) -> Result<Vec<String>> {
        let before = napi_threads();
        let sh =
            format!("ethtool -K {dev} gro on >/dev/null && echo 1 > /sys/class/net/{dev}/threaded");
        let status = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &sh])
            .status()
            .context("could not run ethtool (install ethtool)")?;
        if !status.success() {
            bail!("could not turn on GRO and threaded NAPI on {dev} in {ns}: {sh}");
        }
        let prefix = format!("napi/{dev}-");
        let mut names: Vec<String> = napi_threads()
            .into_iter()
            .filter(|(_, name)| name.starts_with(&prefix) && !before.iter().any(|(_, b)| b == name))
            .map(|(_, name)| name)
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            bail!(
                "threaded NAPI is on for {dev} in {ns} but no kernel thread {prefix}* appeared \
                 (does this kernel support /sys/class/net/DEV/threaded?)"
            );
        }
        Ok(names)
    }

    /// Pins the DUT end's NAPI threads to `dut_cpu` and the peer end's to `peer_cpu`. Call it
    /// after the device under test has started: attaching a program may re-create the threads.
    pub fn pin_napi(&self, dut_cpu: usize, peer_cpu: usize) -> Result<()> {
        let threads = napi_threads();
        for (names, cpu) in [(&self.dut_napi, dut_cpu), (&self.peer_napi, peer_cpu)] {
            for name in names {
                let pids: Vec<u32> = threads
                    .iter()
                    .filter(|(_, n)| n == name)
                    .map(|(pid, _)| *pid)
                    .collect();
                if pids.is_empty() {
                    bail!("the NAPI thread {name} is gone (was the interface deleted?)");
                }
                for pid in pids {
                    pin_thread(pid, cpu).with_context(|| {
                        format!("could not pin {name} (pid {pid}) to CPU {cpu}")
                    })?;
                }
            }
        }
        Ok(())
    }

    pub fn ip_dut(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", self.dut_ns.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    pub fn ip_peer(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", self.peer_ns.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// Waits until the kernel shows the link of `dev` in namespace `ns` as up (`up`) or not:
    /// its `operstate`, as `ip link` prints it after "state" and as the data paths watch it
    /// ([`packet::interface::operstate_passes_traffic`]). `ip link set ... down` returns before
    /// that: the kernel applies a carrier change from its link-watch work, which needs the
    /// RTNL lock and runs events it does not deem urgent at most once a second, so with other
    /// tests creating and deleting namespaces and veths it can lag by a second or more. A test
    /// that times how fast a link change is reported starts its clock here. Fails after
    /// `limit`.
    pub fn wait_operstate(ns: &str, dev: &str, up: bool, limit: std::time::Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let out = Command::new("ip")
                .args(["-n", ns, "-o", "link", "show", dev])
                .output()
                .context("could not run ip")?;
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            let state = line
                .split_whitespace()
                .skip_while(|w| *w != "state")
                .nth(1)
                .unwrap_or("")
                .to_lowercase();
            if packet::interface::operstate_passes_traffic(&state) == up {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "the kernel still shows {dev} in {ns} as {state:?} after {limit:?}: {}",
                    line.trim()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A command that runs `program` inside the DUT namespace.
    pub fn in_dut(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.dut_ns, program]);
        c
    }

    /// `xdp-user gen` in the peer namespace, sending from the peer's interface to the DUT's
    /// MAC and `dst` (one of the DUT's addresses); the caller adds rate, count, duration...
    pub fn gen_from_peer(&self, xdp_user: &str, dst: &str) -> Command {
        let mut c = self.in_peer(xdp_user);
        c.args([
            "gen",
            "--iface",
            PEER_IF,
            "--dst-mac",
            DUT_MAC,
            "--dst",
            dst,
        ]);
        c
    }

    /// `dpdk-app` on the DUT end as the demo and the soak run it: one lcore on CPU 1 (the
    /// generator runs on CPU 0), no hugepages, `net_af_packet` on the DUT interface, answering
    /// ARP, neighbour discovery and echo for the DUT's addresses (build the testbed with
    /// `dut_addresses: false`). The caller adds the app's other options.
    pub fn dpdk_echo_on_dut(&self, dpdk_app: &str, file_prefix: &str) -> Command {
        let mut c = self.in_dut(dpdk_app);
        c.args(["-l", "1", "--no-huge", "-m", "256", "--no-pci"])
            .args(["--file-prefix", file_prefix])
            .args(["--vdev", &format!("net_af_packet0,iface={DUT_IF}"), "--"])
            .args(["--ip", DUT_IPV4, "--ip", DUT_IPV6]);
        c
    }

    /// A command that runs `program` inside the peer namespace.
    pub fn in_peer(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.peer_ns, program]);
        c
    }

    /// Runs a Python snippet in the peer namespace (clients are ordinary kernel sockets) and
    /// returns its standard output; panics with its error output if it fails (test helper).
    pub fn peer_python(&self, code: &str) -> String {
        let out = self
            .in_peer("python3")
            .args(["-c", code])
            .output()
            .expect("run python3 in the peer namespace");
        assert!(
            out.status.success(),
            "peer script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pings the DUT from the peer `count` times; returns the number of replies.
    pub fn ping(&self, v6: bool, count: u32) -> usize {
        self.ping_sized(v6, count, None)
    }

    /// As [`Testbed::ping`], with `payload` bytes of ICMP data (`ping -s`) when given.
    pub fn ping_sized(&self, v6: bool, count: u32, payload: Option<u32>) -> usize {
        let dst = if v6 { DUT_IPV6 } else { DUT_IPV4 };
        let mut c = self.in_peer("ping");
        if v6 {
            c.arg("-6");
        }
        if let Some(bytes) = payload {
            c.args(["-s", &bytes.to_string()]);
        }
        let out = c
            .args(["-c", &count.to_string(), "-i", "0.05", "-W", "1", dst])
            .output()
            .expect("run ping in the peer namespace");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("bytes from"))
            .count()
    }

    /// Sends raw Ethernet frames from the peer: each given as hex after the MAC addresses,
    /// which are filled in (to the DUT, from the peer).
    pub fn inject(&self, frames: &[String]) {
        let mac = |m: &str| m.replace(':', "");
        let list: Vec<String> = frames
            .iter()
            .map(|f| format!("'{}{}{}'", mac(DUT_MAC), mac(PEER_MAC), f))
            .collect();
        self.peer_python(&format!(
            "import socket\n\
             s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
             s.bind(('{PEER_IF}',0))\n\
             for f in [{}]:\n\
             \x20   s.send(bytes.fromhex(f))\n",
            list.join(",")
        ));
    }

    /// UDP datagrams of sizes from 1 byte to the MTU, to `port` on the DUT's IPv4 and IPv6
    /// addresses; returns (echoed back byte for byte, sent).
    pub fn udp_echo_sizes(&self, port: u16) -> (u64, u64) {
        let out = self.peer_python(&format!(
            "import socket\n\
             ok=0; sent=0\n\
             for fam, dst, top in ((socket.AF_INET, '{DUT_IPV4}', 1472), (socket.AF_INET6, '{DUT_IPV6}', 1452)):\n\
             \x20   s=socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(1)\n\
             \x20   for n in (1, 2, 3, 17, 64, 100, 255, 256, 512, 1000, 1400, top - 1, top):\n\
             \x20       p = bytes((i * 31 + n) & 255 for i in range(n)); sent += 1\n\
             \x20       s.sendto(p, (dst, {port}))\n\
             \x20       try:\n\
             \x20           d, a = s.recvfrom(4096); ok += (d == p and a[1] == {port})\n\
             \x20       except socket.timeout: pass\n\
             print(ok, sent)\n"
        ));
        let mut f = out
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        (f.next().unwrap_or(0), f.next().unwrap_or(0))
    }

    /// The XDP program attached to the DUT interface, if any (`ip link` shows `prog/xdp`).
    pub fn dut_xdp_attached(&self) -> Result<bool> {
        let out = Command::new("ip")
            .args(["-n", &self.dut_ns, "-d", "link", "show", DUT_IF])
            .output()?;
        let s = String::from_utf8_lossy(&out.stdout);
        Ok(s.contains("prog/xdp") || s.contains("xdpgeneric") || s.contains("xdpdrv"))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in [&self.dut_ns, &self.peer_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
