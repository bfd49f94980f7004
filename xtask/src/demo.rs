//! `cargo xtask demo`: the main job, on a testbed it builds itself.
//!
//! It shows the data paths that exist today, each against real clients in the peer namespace:
//! 1. the in-kernel XDP filter/counter (`xdp-user load`): `ping`, and a UDP client sending to a
//!    dropped port and to a passed port, kernel sockets listening on both, with datagrams too
//!    large for the link, which the client's kernel fragments (IPv4 and IPv6): the first
//!    fragment meets the port rule, so a dropped datagram never reassembles;
//! 2. the AF_XDP echo (`xdp-user run`): `ping` over IPv4 and IPv6 answered by the user-space
//!    loop, and a UDP client that checks every echoed datagram byte for byte.
//!
//! 3. the DPDK echo (`dpdk-app`) on a veth end with no kernel address: it answers ARP and
//!    neighbour discovery itself, then `ping` and the UDP client.
//!
//! Everything the demo made is removed at the end, also on Ctrl-C.

use anyhow::{Context, Result, bail};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xtask::cmd::{build_release, run};
use xtask::setup;
use xtask::testbed::{self, DUT_IF, DUT_IPV4, DUT_IPV6, Options, Testbed};

const DATAGRAMS: u32 = 200;
const DROP_PORT: u16 = 9;
const PASS_PORT: u16 = 9000;
const PINGS: u32 = 5;
/// Datagrams of `BIG` bytes, per family, that the peer's kernel splits into fragments.
const FRAGMENTED: u32 = 20;
const BIG: usize = 3000;

pub fn demo(iface: Option<&str>) -> Result<()> {
    setup::setup(true)?;
    let release = build_release(&["xdp-user", "dpdk-app"])?;
    let xdp_user = release.join("xdp-user");
    let dpdk_app = release.join("dpdk-app");
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))?;
    }
    match iface {
        Some(iface) => real_interface(&xdp_user, iface),
        None => {
            on_testbed(&xdp_user, &interrupted)?;
            dpdk_echo(&dpdk_app, &xdp_user, &interrupted)
        }
    }
}

/// On a real interface: the AF_XDP echo for 30 s, with instructions to test it from another
/// host. Only ICMP/ICMPv6 echo requests and UDP to port 7 go to the loop; everything else (ssh
/// included) still reaches the kernel.
fn real_interface(xdp_user: &std::path::Path, iface: &str) -> Result<()> {
    let addrs = Command::new("ip")
        .args(["-brief", "addr", "show", "dev", iface])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    eprintln!(
        "demo: the AF_XDP echo on {iface} for 30 s ({addrs}).\n\
         It answers ICMP/ICMPv6 echo requests and UDP to port 7 from a user-space poll loop;\n\
         everything else still goes to the kernel. From another host on the same network, try:\n\
         \x20 ping <an address above>\n\
         \x20 echo hello | nc -u -w1 <address> 7\n\
         \x20 xdp-user gen --iface <its interface> --dst <address> --duration 5"
    );
    run(Command::new(xdp_user).args(["run", "--iface", iface, "--duration", "30"]))
}

fn on_testbed(xdp_user: &std::path::Path, interrupted: &AtomicBool) -> Result<()> {
    eprintln!("demo: building a testbed (two network namespaces joined by a veth pair)");
    let tb = Testbed::new(&Options::default())?;
    eprintln!(
        "demo: peer {} / {}  <->  device under test {} / {} ({DUT_IF})",
        testbed::PEER_IPV4,
        testbed::PEER_IPV6,
        DUT_IPV4,
        DUT_IPV6
    );

    // Kernel UDP sockets on the device side, IPv4 and IPv6: what a pass rule must still reach,
    // and what a drop rule must keep from ever arriving.
    let listener = spawn(
        tb.in_dut("python3")
            .args(["-c", &udp_listener_script(&[DROP_PORT, PASS_PORT], 12.0)]),
    )?;
    let mut filter = spawn(tb.in_dut(xdp_user.to_str().context("path")?).args([
        "load",
        "--iface",
        DUT_IF,
        "--rule",
        &format!("proto udp dport {DROP_PORT} action drop"),
        "--rule",
        "proto icmp icmp-type 8 action pass",
        "--rule",
        "proto icmpv6 icmp-type 128 action pass",
        "--duration",
        "10",
        "--interval",
        "2",
        "--json",
    ]))?;
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(status) = filter.try_wait()? {
        bail!("xdp-user load exited early ({status})");
    }

    eprintln!("\ndemo: {PINGS} pings over IPv4 and IPv6 from the peer");
    let ping4 = tb.ping(false, PINGS);
    let ping6 = tb.ping(true, PINGS);
    eprintln!(
        "demo: {DATAGRAMS} UDP datagrams to port {DROP_PORT} (drop rule) and {DATAGRAMS} to \
         port {PASS_PORT} (no rule: passed to the kernel socket), and to each {FRAGMENTED} \
         datagrams of {BIG} bytes over IPv4 and over IPv6, fragmented by the peer's kernel"
    );
    run(tb
        .in_peer("python3")
        .args(["-c", &udp_sender_script(&[DROP_PORT, PASS_PORT])]))?;
    eprintln!("demo: 2 s of generated load (xdp-user gen) to port {DROP_PORT}");
    let load_sent = gen_json(&tb, xdp_user, &["--dport", "9"])?["sent"]
        .as_u64()
        .unwrap_or(0);

    let filter_out = filter.wait_with_output()?;
    let listener_out = listener.wait_with_output()?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; the testbed has been removed");
    }
    let attached = tb.dut_xdp_attached()?;
    drop(tb);

    let json_line = String::from_utf8_lossy(&filter_out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    // (small, large) datagrams received on a port.
    let received = |port: u16| -> (u32, u32) {
        let text = String::from_utf8_lossy(&listener_out.stdout);
        let counts = text
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{port}=")))
            .unwrap_or("");
        let mut n = counts.split(',').map(|x| x.parse().unwrap_or(0));
        (n.next().unwrap_or(0), n.next().unwrap_or(0))
    };
    let report = Report {
        load_sent,
        json: json_line,
        ping4_replies: ping4,
        ping6_replies: ping6,
        udp_received: received(PASS_PORT),
        drop_port_received: received(DROP_PORT),
        left_attached: attached,
    };
    eprintln!(
        "\n{}",
        String::from_utf8_lossy(&filter_out.stderr).trim_end()
    );
    report.print()?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    afxdp_echo(xdp_user, interrupted)
}

/// Part 2: the AF_XDP echo answering real clients.
fn afxdp_echo(xdp_user: &std::path::Path, interrupted: &AtomicBool) -> Result<()> {
    eprintln!("\ndemo: part 2, the AF_XDP echo (kernel bypass) on a new testbed");
    let tb = Testbed::new(&Options::default())?;
    let echo = spawn(tb.in_dut(xdp_user.to_str().context("path")?).args([
        "run",
        "--iface",
        DUT_IF,
        "--cores",
        "1",
        "--duration",
        "10",
        "--interval",
        "2",
        "--json",
    ]))?;
    std::thread::sleep(Duration::from_millis(1500));
    let (ping4, ping6) = (tb.ping(false, PINGS), tb.ping(true, PINGS));
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1)\n\
         sizes=[1,64,512,1000,1472]*40; ok=0\n\
         for i,n in enumerate(sizes):\n\
         \x20   p=bytes((i+j)&255 for j in range(n)); s.sendto(p,('{DUT_IPV4}',7))\n\
         \x20   try: ok += s.recvfrom(2048)[0]==p\n\
         \x20   except socket.timeout: pass\n\
         print(ok, len(sizes))\n"
    );
    let udp = tb.in_peer("python3").args(["-c", &script]).output()?;
    let load = generated_load(&tb, xdp_user)?;
    let out = echo.wait_with_output()?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; the testbed has been removed");
    }
    let attached = tb.dut_xdp_attached()?;
    drop(tb);
    let udp_text = String::from_utf8_lossy(&udp.stdout);
    let mut udp_fields = udp_text
        .split_whitespace()
        .map(|x| x.parse::<u64>().unwrap_or(0));
    let udp_ok = udp_fields.next().unwrap_or(0);
    let udp_sent = udp_fields.next().unwrap_or(0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("xdp-user run printed no JSON summary: {json:?}"))?;
    let field = |path: &str| v.pointer(path).and_then(|x| x.as_u64()).unwrap_or(0);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim_end());
    println!(
        "\n=== demo summary: AF_XDP echo (user-space poll loop, {} XDP)",
        v["mode"].as_str().unwrap_or("?")
    );
    println!("sent by the peer                      came back");
    println!("  {PINGS} IPv4 pings                         {ping4} replies");
    println!("  {PINGS} IPv6 pings                         {ping6} replies");
    println!("  {udp_sent} UDP datagrams of 1..1472 bytes   {udp_ok} identical echoes");
    println!("  generated load: {load}");
    println!(
        "AF_XDP loop: rx {} tx {} echoed {} malformed {} not-for-us {}; UMEM frames lost: {}",
        field("/rx"),
        field("/tx"),
        field("/echoed"),
        field("/malformed"),
        field("/not_for_us"),
        field("/frames_lost")
    );
    println!(
        "XDP program left attached after exit: {}",
        if attached { "YES (bug)" } else { "no" }
    );
    let ok = ping4 == PINGS as usize
        && ping6 == PINGS as usize
        && udp_sent > 0
        && udp_ok == udp_sent
        && field("/frames_lost") == 0
        && !attached;
    if !ok {
        bail!("the AF_XDP echo did not answer every request (see above)");
    }
    println!("demo: every request answered by the AF_XDP loop; testbed removed");
    counters_along_the_path(xdp_user, interrupted)
}

/// Part 2b: below the loss rate, every counter on the path, side by side; they must agree.
fn counters_along_the_path(xdp_user: &std::path::Path, interrupted: &AtomicBool) -> Result<()> {
    eprintln!("\ndemo: part 2b, counters along the path (20000 requests at 20 kpps)");
    let tb = Testbed::new(&Options {
        quiet: true,
        ..Options::default()
    })?;
    let c = xtask::agree::path_counters(&tb, xdp_user.to_str().context("path")?, 20_000, 20_000)?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; the testbed has been removed");
    }
    drop(tb);
    println!("\n=== demo summary: counters along the path, in path order");
    print!("{}", c.table());
    let wrong = c.disagreements();
    if !wrong.is_empty() {
        bail!("counters along the path disagree: {}", wrong.join("; "));
    }
    println!(
        "demo: all {} counters agree; testbed removed",
        c.along.len() + c.zero.len()
    );
    Ok(())
}

struct Report {
    /// Datagrams xdp-user gen sent to the dropped port.
    load_sent: u64,
    json: String,
    ping4_replies: usize,
    ping6_replies: usize,
    /// Small and large (fragmented, reassembled) datagrams the sockets on the passed port
    /// received.
    udp_received: (u32, u32),
    /// Datagrams that reached the sockets on the dropped port: must be none.
    drop_port_received: (u32, u32),
    left_attached: bool,
}

impl Report {
    fn print(&self) -> Result<()> {
        let v: serde_json::Value = serde_json::from_str(&self.json)
            .with_context(|| format!("xdp-user printed no JSON summary: {:?}", self.json))?;
        let field = |path: &str| v.pointer(path).and_then(|x| x.as_u64()).unwrap_or(0);
        let dropped = field("/actions/drop");
        // Each fragmented datagram loses its first fragment; its later ones pass and expire.
        let expected_drops = u64::from(DATAGRAMS + 2 * FRAGMENTED) + self.load_sent;
        println!("\n=== demo summary: XDP filter/counter on the veth testbed");
        println!("sent by the peer             came back / arrived");
        println!(
            "  {PINGS} IPv4 pings                {} replies",
            self.ping4_replies
        );
        println!(
            "  {PINGS} IPv6 pings                {} replies",
            self.ping6_replies
        );
        println!(
            "  {DATAGRAMS} UDP to port {DROP_PORT} (drop)    and, from xdp-user gen, {} more in 2 s:",
            self.load_sent
        );
        println!("  + {FRAGMENTED} v4 and {FRAGMENTED} v6 datagrams of {BIG} B, fragmented");
        println!(
            "                              {dropped} dropped in XDP (first fragments by the \
             port rule); {} delivered",
            self.drop_port_received.0 + self.drop_port_received.1
        );
        println!(
            "  {DATAGRAMS} UDP to port {PASS_PORT}        {} received by the kernel socket",
            self.udp_received.0
        );
        println!(
            "  + {FRAGMENTED} v4 and {FRAGMENTED} v6 fragmented     {} reassembled and received",
            self.udp_received.1
        );
        println!(
            "XDP counters: pass {} drop {} malformed {} unparsed {}; fragments: first {} later {}; \
             protocols: arp {} ipv4 {} ipv6 {} udp {} icmp {} icmpv6 {}",
            field("/actions/pass"),
            dropped,
            field("/malformed"),
            field("/unparsed"),
            field("/fragments/first"),
            field("/fragments/later"),
            field("/protocols/arp"),
            field("/protocols/ipv4"),
            field("/protocols/ipv6"),
            field("/protocols/udp"),
            field("/protocols/icmp"),
            field("/protocols/icmpv6"),
        );
        println!("JSON: {}", self.json);
        println!(
            "XDP program left attached after exit: {}",
            if self.left_attached {
                "YES (bug)"
            } else {
                "no"
            }
        );
        let ok = self.ping4_replies == PINGS as usize
            && self.ping6_replies == PINGS as usize
            && dropped == expected_drops
            && self.udp_received == (DATAGRAMS, 2 * FRAGMENTED)
            && self.drop_port_received == (0, 0)
            && field("/fragments/first") == u64::from(4 * FRAGMENTED)
            && !self.left_attached;
        if !ok {
            bail!("the demo's traffic did not give the expected results (see above)");
        }
        println!("demo: all traffic behaved as the rules say; testbed removed");
        Ok(())
    }
}

fn spawn(c: &mut Command) -> Result<Child> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start a process in the testbed")
}

/// Counts datagrams on UDP ports (IPv4 and IPv6 sockets) for `seconds`, then prints
/// `PORT=SMALL,LARGE` for each port (LARGE: datagrams over 1500 bytes, which crossed the link
/// as fragments and were reassembled).
fn udp_listener_script(ports: &[u16], seconds: f64) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "import socket,select,time\n\
         ss={{}}\n\
         for p in [{}]:\n\
         \x20   for fam, a in ((socket.AF_INET, '{DUT_IPV4}'), (socket.AF_INET6, '{DUT_IPV6}')):\n\
         \x20       s=socket.socket(fam, socket.SOCK_DGRAM); s.bind((a, p)); ss[s]=p\n\
         n={{p: [0, 0] for p in ss.values()}}\n\
         end=time.time()+{seconds}\n\
         while time.time()<end:\n\
         \x20   r,_,_=select.select(list(ss),[],[],0.1)\n\
         \x20   for s in r:\n\
         \x20       n[ss[s]][len(s.recv(65535)) > 1500]+=1\n\
         print(' '.join('%d=%d,%d' % (p, c[0], c[1]) for p, c in sorted(n.items())))\n",
        ports.join(",")
    )
}

/// Sends DATAGRAMS small datagrams to each port, then FRAGMENTED datagrams of BIG bytes over
/// IPv4 and over IPv6, which the kernel splits into fragments; paced so nothing is lost to
/// buffer overflow.
fn udp_sender_script(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "import socket,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s6=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
         for p in [{}]:\n\
         \x20   for i in range({DATAGRAMS}):\n\
         \x20       s.sendto(b'demo %d' % i, ('{DUT_IPV4}', p))\n\
         \x20       if i % 50 == 49: time.sleep(0.01)\n\
         \x20   for i in range({FRAGMENTED}):\n\
         \x20       s.sendto(bytes({BIG}), ('{DUT_IPV4}', p))\n\
         \x20       s6.sendto(bytes({BIG}), ('{DUT_IPV6}', p))\n\
         \x20       time.sleep(0.005)\n",
        ports.join(",")
    )
}

/// Part 3: the DPDK echo on a veth end with no kernel address, answering ARP and neighbour
/// discovery itself.
fn dpdk_echo(
    dpdk_app: &std::path::Path,
    xdp_user: &std::path::Path,
    interrupted: &AtomicBool,
) -> Result<()> {
    eprintln!("\ndemo: part 3, the DPDK echo (net_af_packet on a veth end with no IP address)");
    let tb = Testbed::new(&Options {
        dut_addresses: false,
        ..Options::default()
    })?;
    let prefix = format!("kbpdemo{}", std::process::id());
    // The app on CPU 1; the generator of the load test runs on CPU 0.
    let app = spawn(
        tb.dpdk_echo_on_dut(dpdk_app.to_str().context("path")?, &prefix)
            .args(["--duration", "12", "--interval", "4", "--json"]),
    )?;
    std::thread::sleep(Duration::from_millis(2500));
    let ping4 = tb.ping(false, PINGS);
    let ping6 = tb.ping(true, PINGS);
    let neigh = tb
        .in_peer("ip")
        .args(["neigh", "show", "dev", testbed::PEER_IF])
        .output()?;
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    let (udp_ok, udp_sent) = tb.udp_echo_sizes(7);
    let load = generated_load(&tb, xdp_user)?;
    let out = app.wait_with_output()?;
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted; the testbed has been removed");
    }
    drop(tb);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("dpdk-app printed no JSON summary: {json:?}"))?;
    let field = |path: &str| v.pointer(path).and_then(|x| x.as_u64()).unwrap_or(0);
    let learned = |addr: &str| {
        neigh
            .lines()
            .any(|l| l.starts_with(&format!("{addr} ")) && l.contains(testbed::DUT_MAC))
    };
    println!("\n=== demo summary: DPDK echo (net_af_packet, one lcore, no hugepages)");
    println!("sent by the peer                      came back");
    println!(
        "  ARP / neighbour solicitation        answered by the app: {} / {}",
        if learned(DUT_IPV4) { "yes" } else { "NO" },
        if learned(DUT_IPV6) { "yes" } else { "NO" }
    );
    println!("  {PINGS} IPv4 pings                         {ping4} replies");
    println!("  {PINGS} IPv6 pings                         {ping6} replies");
    println!(
        "  {udp_sent} UDP datagrams of 1..MTU bytes     {udp_ok} identical echoes (v4 and v6)"
    );
    println!("  generated load: {load}");
    println!(
        "DPDK app: rx {} tx {} echoed {} malformed {} not-for-us {}",
        field("/rx"),
        field("/tx"),
        field("/echoed"),
        field("/malformed"),
        field("/not_for_us")
    );
    let ok = learned(DUT_IPV4)
        && learned(DUT_IPV6)
        && ping4 == PINGS as usize
        && ping6 == PINGS as usize
        && udp_sent > 0
        && udp_ok == udp_sent;
    if !ok {
        bail!("the DPDK echo did not answer every request (see above)");
    }
    println!("demo: every request answered by the DPDK app; testbed removed");
    Ok(())
}

/// Runs `xdp-user gen` from the peer at the DUT's IPv4 address for 2 s, with `extra`
/// arguments, and returns its JSON summary.
fn gen_json(tb: &Testbed, xdp_user: &std::path::Path, extra: &[&str]) -> Result<serde_json::Value> {
    let out = tb
        .gen_from_peer(xdp_user.to_str().context("path")?, DUT_IPV4)
        .args(["--duration", "2", "--json"])
        .args(extra)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).with_context(|| {
        format!(
            "xdp-user gen gave no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Two seconds of `xdp-user gen` from the peer at full speed: what it sent, what came back,
/// and the round-trip latency (figures are printed, not judged: this is a shared VM).
fn generated_load(tb: &Testbed, xdp_user: &std::path::Path) -> Result<String> {
    let v = gen_json(tb, xdp_user, &["--flows", "16", "--core", "0"])?;
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(format!(
        "2 s of xdp-user gen: sent {:.0} at {:.0} kpps, {:.0} came back ({:.2}% lost), \
         latency p50 {} us p99 {} us",
        num("sent"),
        num("pps_sent") / 1e3,
        num("received"),
        num("loss") * 100.0,
        v["latency_us"]["p50"],
        v["latency_us"]["p99"]
    ))
}
