//! Our XDP program beside xdp-tools' `xdp-filter` (1.3.1), like against like: the same 16
//! port rules in both, both loaded as a user would load them, both timed the same way (the
//! same fixture frames and the same repeat through `BPF_PROG_TEST_RUN`, alternating in one
//! loop, best of five rounds after a warm-up: `xdp-user cost --reference-prog-id`).
//!
//! `xdp-filter` is loaded on veth interfaces in a network namespace of our own. It keeps its
//! maps pinned in bpffs, which `ip netns exec` mounts afresh for every command, so one shell
//! mounts bpffs, loads it, adds the port rules, waits while we time it, and unloads it again;
//! dropping the guards (also on error) ends that shell, detaches whatever is still attached
//! and deletes the namespace.
//!
//! libxdp puts its dispatcher in front of a program where it can; on kernel 6.18 its
//! compatibility check fails ("Compatibility check for dispatcher program failed: Operation
//! not permitted") and it attaches xdp-filter's program directly. Either way we time the
//! program attached to the interface, which is what real traffic runs.
//!
//! xdp-tools' own benchmark tools do not load here; [`reference_tools_that_do_not_load`] tries
//! them briefly and returns the error lines, so a report says so rather than leaving them out.

use crate::cmd::output;
use crate::testbed::ip;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The TCP destination ports both tools drop.
pub const DROPPED_TCP_PORTS: std::ops::Range<u16> = 1000..1015;

/// What `xdp-tools` 1.3.1's benchmark tools printed when they failed to load on kernel 6.18
/// (tool, the libbpf line that names the cause, the tool's own last line). Recorded data for
/// reports; [`reference_tools_that_do_not_load`] checks it on the machine at hand.
pub const SEEN_NOT_LOADING: &[(&str, &str, &str)] = &[
    (
        "xdp-bench",
        "libbpf: prog 'tp_xdp_redirect_map_err': failed to find kernel BTF type ID of \
         'xdp_redirect_map_err': -3",
        "Failed to attach XDP program: No such process",
    ),
    (
        "xdp-trafficgen",
        "libbpf: prog 'tp_xdp_redirect_map_err': failed to find kernel BTF type ID of \
         'xdp_redirect_map_err': -3",
        "Error probing kernel support: No such process",
    ),
];

/// Our 16 rules, as `cargo xtask bench` times "16 rules": 15 TCP destination ports dropped,
/// UDP port 7 passed; everything else passes.
pub fn our_rules() -> Vec<String> {
    DROPPED_TCP_PORTS
        .map(|p| format!("proto tcp dport {p} action drop"))
        .chain(std::iter::once("proto udp dport 7 action pass".into()))
        .collect()
}

/// xdp-filter's equivalent: policy allow (its default), the same 15 TCP destination ports
/// denied. UDP port 7 passes under the allow policy, as our pass rule passes it.
pub fn xdp_filter_port_commands() -> Vec<String> {
    DROPPED_TCP_PORTS
        .map(|p| format!("xdp-filter port {p} --proto tcp --mode dst"))
        .collect()
}

/// One xdp-filter program, as loaded and attached.
#[derive(Clone, Debug)]
pub struct XdpFilterProgram {
    /// `--features` given to `xdp-filter load`.
    pub features: String,
    /// The program xdp-filter chose for them (e.g. `xdpfilt_alw_all`), or libxdp's
    /// dispatcher if one is in front.
    pub attached_name: String,
    /// The id of the attached program: the one timed.
    pub id: u32,
    /// libxdp's dispatcher is in front of xdp-filter's program (then the timed run includes
    /// the dispatcher, as real traffic does).
    pub dispatcher: bool,
}

/// One fixture frame's figures, in ns per packet (best of five runs of `repeat`).
#[derive(Clone, Debug, PartialEq)]
pub struct PacketCost {
    /// As `xdp-user cost` names it: `udp4`, `tcp4_syn`, `icmp6_echo`, `udp6`, `tcp4_syn_1003`
    /// (to a port the rules drop).
    pub packet: String,
    /// Our `xdp_filter` with [`our_rules`].
    pub ours_ns: f64,
    /// The bare XDP_DROP program.
    pub bare_ns: f64,
    /// xdp-filter with its default feature set for these rules (`--features tcp,udp`, which
    /// selects its full program, `xdpfilt_alw_all`).
    pub xdp_filter_ns: f64,
    /// xdp-filter with only the feature these rules need (`--features tcp`:
    /// `xdpfilt_alw_tcp`, which does not parse UDP or ICMP at all).
    pub xdp_filter_tcp_ns: f64,
    /// The XDP action all three filters returned (1 drop, 2 pass): checked equal.
    pub action: u32,
}

/// What [`cost_beside_xdp_filter`] measured.
#[derive(Clone, Debug)]
pub struct XdpFilterCost {
    /// `BPF_PROG_TEST_RUN` repeat per figure.
    pub repeat: u32,
    /// Our rules ([`our_rules`]).
    pub rules: Vec<String>,
    /// xdp-filter's rules ([`xdp_filter_port_commands`]).
    pub xdp_filter_commands: Vec<String>,
    /// `--features tcp,udp`.
    pub xdp_filter: XdpFilterProgram,
    /// `--features tcp`.
    pub xdp_filter_tcp: XdpFilterProgram,
    /// libxdp's own line about its dispatcher, if it printed one (e.g. why it fell back to
    /// attaching the program alone).
    pub libxdp_note: Option<String>,
    pub rows: Vec<PacketCost>,
    /// How many times both filters were loaded afresh and timed; each figure is the median.
    pub placements: usize,
    /// `xdp-bench` and `xdp-trafficgen`, tried briefly.
    pub reference_tools: Vec<ToolProbe>,
}

impl XdpFilterCost {
    /// The figures of one frame (`udp4`, `tcp4_syn`, ...).
    pub fn row(&self, packet: &str) -> Option<&PacketCost> {
        self.rows.iter().find(|r| r.packet == packet)
    }

    /// A table for people.
    pub fn text(&self) -> String {
        let mut s = format!(
            "16 rules, BPF_PROG_TEST_RUN, {} runs per figure, best of 5 after a warm-up, median of {} \
             load(s) of each program, ns per packet\n\
             {:<14} {:>6} {:>6} {:>16} {:>16} {:>7}\n",
            self.repeat,
            self.placements,
            "packet",
            "ours",
            "bare",
            format!("{} ns", self.xdp_filter.attached_name),
            format!("{} ns", self.xdp_filter_tcp.attached_name),
            "action"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:<14} {:>6.0} {:>6.0} {:>16.0} {:>16.0} {:>7}\n",
                r.packet,
                r.ours_ns,
                r.bare_ns,
                r.xdp_filter_ns,
                r.xdp_filter_tcp_ns,
                if r.action == 1 { "drop" } else { "pass" }
            ));
        }
        for p in [&self.xdp_filter, &self.xdp_filter_tcp] {
            s.push_str(&format!(
                "xdp-filter --features {}: program {} (id {}), {}\n",
                p.features,
                p.attached_name,
                p.id,
                if p.dispatcher {
                    "behind libxdp's dispatcher (timed together)"
                } else {
                    "attached directly, no dispatcher"
                }
            ));
        }
        if let Some(note) = &self.libxdp_note {
            s.push_str(&format!("libxdp said: {note}\n"));
        }
        for t in &self.reference_tools {
            s.push_str(&t.text());
            s.push('\n');
        }
        s
    }
}

/// What happened when a reference tool was tried.
#[derive(Clone, Debug)]
pub struct ToolProbe {
    pub tool: String,
    /// The command, as run inside the namespace.
    pub command: String,
    /// It loaded and ran until `timeout` stopped it (or exited 0).
    pub loaded: bool,
    /// Its exit status (`timeout` gives 124 when it had to stop it).
    pub status: Option<i32>,
    /// The libbpf line that names the cause, if any (the first "failed to find" or "failed
    /// to load" line).
    pub cause_line: Option<String>,
    /// The tool's own last line of output (its error message when it failed).
    pub error_line: Option<String>,
    /// Everything it printed.
    pub output: String,
}

impl ToolProbe {
    pub fn text(&self) -> String {
        if self.loaded {
            format!("{} loaded and ran (`{}`)", self.tool, self.command)
        } else {
            format!(
                "{} does not load on this kernel (`{}`, exit {}): {}{}",
                self.tool,
                self.command,
                self.status.map_or("by signal".into(), |c| c.to_string()),
                self.cause_line.as_deref().unwrap_or("(no libbpf line)"),
                self.error_line
                    .as_deref()
                    .map_or(String::new(), |l| format!(" -> {l}"))
            )
        }
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace of our own, deleted on drop (its veth ends go with it). The name
/// starts with the testbed's prefix and our process id, so `testbed::reap_stale` removes it
/// if this process dies without cleaning up.
struct Netns {
    name: String,
}

impl Netns {
    /// A namespace with veth pairs `x0`/`y0`, `x1`/`y1`, ... (`pairs` of them), all up.
    fn new(pairs: u32) -> Result<Netns> {
        if !crate::setup::is_root() {
            bail!("comparing with xdp-filter needs root (network namespaces, XDP); run as root");
        }
        crate::testbed::reap_stale();
        let ns = Netns {
            name: format!(
                "kbp{}x{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
        };
        ip(&["netns", "add", &ns.name])?;
        for i in 0..pairs {
            let (x, y) = (format!("x{i}"), format!("y{i}"));
            ip(&[
                "-n", &ns.name, "link", "add", &x, "type", "veth", "peer", "name", &y,
            ])?;
            for dev in [&x, &y] {
                ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
            }
        }
        Ok(ns)
    }

    /// `sh -c SCRIPT` inside the namespace (and in a mount namespace of its own).
    fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "sh", "-c", script]);
        c
    }

    /// The XDP program attached to `dev`: (id, name), or `None`.
    fn attached(&self, dev: &str) -> Result<Option<(u32, String)>> {
        let out = output(
            Command::new("ip").args(["-n", &self.name, "-d", "-j", "link", "show", "dev", dev]),
        )?;
        if !out.status.success() {
            bail!(
                "`ip -d link show {dev}` failed in {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("`ip -j link` printed no JSON")?;
        let prog = &v[0]["xdp"]["prog"];
        Ok(prog["id"]
            .as_u64()
            .map(|id| (id as u32, prog["name"].as_str().unwrap_or("?").to_string())))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pairs, which detaches anything left on them.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Fails with what to do when `tool` is not installed.
fn require(tool: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        bail!(
            "`{tool}` is not installed (Debian package xdp-tools 1.3.1; `cargo xtask setup` \
             installs it): the comparison with xdp-filter cannot run"
        );
    }
    Ok(())
}

const READY: &str = "KBP-XDP-FILTER-READY";
const UNLOADED: &str = "KBP-XDP-FILTER-UNLOADED";

/// The shell that loaded xdp-filter and holds its bpffs: it waits for a line (or the end) on
/// its standard input, then unloads xdp-filter. Dropping it without [`unload`](Self::unload)
/// closes that input and gives it a few seconds, then kills it.
struct Loader {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Everything the shell printed so far.
    log: Vec<String>,
}

impl Loader {
    fn start(ns: &Netns, script: &str) -> Result<Loader> {
        let mut child = ns
            .sh(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("could not start the shell that loads xdp-filter")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the loader's stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Loader {
            child,
            stdin,
            lines,
            log: Vec::new(),
        })
    }

    /// Reads lines until `marker` (true), the end of output (false) or `timeout` (error).
    fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<bool> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == marker => return Ok(true),
                Ok(line) => self.log.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "xdp-filter's shell printed no `{marker}` within {timeout:?}; it said:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Lets the shell unload xdp-filter, and waits for it to say it did.
    fn unload(&mut self) -> Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        let done = self.wait_for(UNLOADED, Duration::from_secs(20))?;
        let _ = self.child.wait();
        if !done {
            bail!(
                "`xdp-filter unload` failed; the shell said:\n{}",
                self.log.join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // End of input: the shell goes on to unload.
        self.stdin.take();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once no BPF program has id `id` (a program is freed after an RCU grace period once
/// its last reference goes). Needs `bpftool`.
fn program_gone(id: u32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        let gone = output(Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]))
            .is_ok_and(|o| !o.status.success());
        if gone || Instant::now() >= end {
            return gone;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Our XDP program (16 rules: [`our_rules`]), the bare XDP_DROP program and xdp-filter with the
/// equivalent rules ([`xdp_filter_port_commands`]), twice (`--features tcp,udp` and
/// `--features tcp`), timed by `xdp_user cost --reference-prog-id` on the same frames with the
/// same `repeat`. Loads xdp-filter in a namespace of its own and unloads it at the end, also on
/// error; fails if any of the filters decides a frame differently from ours. Also tries
/// `xdp-bench` and `xdp-trafficgen` ([`reference_tools_that_do_not_load`]).
///
/// Everything is done `placements` times, each with both filters loaded afresh, and each
/// figure is the median over the placements: a program is JIT-compiled to another place in
/// memory at every load, and that alone moves one frame's figure by up to 20 ns on this VM,
/// ours and xdp-filter's alike.
///
/// The caller takes care of the machine being quiet (the figures are timings).
pub fn cost_beside_xdp_filter(
    xdp_user: &Path,
    repeat: u32,
    placements: usize,
) -> Result<XdpFilterCost> {
    let mut each = Vec::new();
    for _ in 0..placements.max(1) {
        each.push(cost_beside_xdp_filter_once(xdp_user, repeat)?);
    }
    let mut combined = each.last().context("no placement")?.clone();
    for (i, row) in combined.rows.iter_mut().enumerate() {
        let of = |f: fn(&PacketCost) -> f64| {
            crate::median(&mut each.iter().map(|c| f(&c.rows[i])).collect::<Vec<_>>())
        };
        row.ours_ns = of(|r| r.ours_ns);
        row.bare_ns = of(|r| r.bare_ns);
        row.xdp_filter_ns = of(|r| r.xdp_filter_ns);
        row.xdp_filter_tcp_ns = of(|r| r.xdp_filter_tcp_ns);
    }
    combined.placements = each.len();
    combined.reference_tools = reference_tools_that_do_not_load()?;
    Ok(combined)
}

/// One placement of [`cost_beside_xdp_filter`]: both filters loaded, timed and unloaded once.
fn cost_beside_xdp_filter_once(xdp_user: &Path, repeat: u32) -> Result<XdpFilterCost> {
    for tool in ["xdp-filter", "bpftool"] {
        require(tool)?;
    }
    if !xdp_user.is_file() {
        bail!("no xdp-user binary at {}", xdp_user.display());
    }
    let ns = Netns::new(2)?;
    let variants = [("x0", "tcp,udp"), ("x1", "tcp")];
    let commands = xdp_filter_port_commands();
    let mut script = String::from("exec 2>&1\nset -e\nmount -t bpf bpf /sys/fs/bpf\n");
    for (dev, features) in variants {
        script.push_str(&format!("xdp-filter load -v {dev} --features {features}\n"));
    }
    // The port table is shared by every interface xdp-filter is loaded on.
    for c in &commands {
        script.push_str(c);
        script.push('\n');
    }
    script.push_str(&format!("echo {READY}\nread _ || true\n"));
    for (dev, _) in variants {
        script.push_str(&format!("xdp-filter unload {dev}\n"));
    }
    script.push_str(&format!("echo {UNLOADED}\n"));

    let mut loader = Loader::start(&ns, &script)?;
    if !loader.wait_for(READY, Duration::from_secs(60))? {
        bail!(
            "xdp-filter did not load with the 16 rules; it said:\n{}",
            loader.log.join("\n")
        );
    }
    let libxdp_note = loader
        .log
        .iter()
        .find(|l| l.contains("libxdp") && l.contains("dispatcher"))
        .map(|l| l.trim().to_string());
    let mut programs = Vec::new();
    for (dev, features) in variants {
        let (id, name) = ns.attached(dev)?.with_context(|| {
            format!(
                "xdp-filter said it loaded on {dev}, but no XDP program is attached; it said:\n{}",
                loader.log.join("\n")
            )
        })?;
        programs.push(XdpFilterProgram {
            features: features.to_string(),
            dispatcher: name.starts_with("xdp_dispatcher"),
            attached_name: name,
            id,
        });
    }

    let rules = our_rules();
    let mut c = Command::new(xdp_user);
    // One load of ours per placement: xdp-filter is placed afresh each time too.
    c.args([
        "cost",
        "--repeat",
        &repeat.to_string(),
        "--loads",
        "1",
        "--json",
    ]);
    for p in &programs {
        c.args(["--reference-prog-id", &p.id.to_string()]);
    }
    for r in &rules {
        c.args(["--rule", r]);
    }
    let out = output(&mut c)?;
    if !out.status.success() {
        bail!(
            "xdp-user cost beside xdp-filter failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .context("xdp-user cost printed no JSON on its last line")?;
    let mut rows = Vec::new();
    for r in v["rows"].as_array().context("xdp-user cost gave no rows")? {
        let packet = r["packet"].as_str().unwrap_or("?").to_string();
        let num = |x: &serde_json::Value| x.as_f64().context("a figure is missing");
        let refs = r["references"]
            .as_array()
            .filter(|a| a.len() == programs.len())
            .with_context(|| format!("{packet}: xdp-user cost timed no reference programs"))?;
        let action = r["filter_action"].as_u64().unwrap_or(0) as u32;
        for (p, x) in programs.iter().zip(refs) {
            let theirs = x["action"].as_u64().unwrap_or(0) as u32;
            if theirs != action {
                bail!(
                    "{packet}: our filter returned XDP action {action}, xdp-filter \
                     (--features {}) {theirs}: the rule sets are not equivalent",
                    p.features
                );
            }
        }
        rows.push(PacketCost {
            ours_ns: num(&r["filter_ns"])?,
            bare_ns: num(&r["bare_ns"])?,
            xdp_filter_ns: num(&refs[0]["ns"])?,
            xdp_filter_tcp_ns: num(&refs[1]["ns"])?,
            action,
            packet,
        });
    }
    if !rows.iter().any(|r| r.action == 1) || !rows.iter().any(|r| r.action == 2) {
        bail!("the frames timed should include both a dropped and a passed one: {rows:?}");
    }

    // Unload with xdp-filter itself (in its bpffs), then check that nothing is left.
    loader.unload()?;
    drop(loader);
    for (dev, _) in variants {
        if let Some((id, name)) = ns.attached(dev)? {
            bail!("after `xdp-filter unload`, {name} (id {id}) is still attached to {dev}");
        }
    }
    drop(ns);
    for p in &programs {
        if !program_gone(p.id, Duration::from_secs(5)) {
            bail!(
                "xdp-filter's program {} (id {}) is still loaded after unload",
                p.attached_name,
                p.id
            );
        }
    }
    let mut programs = programs.into_iter();
    Ok(XdpFilterCost {
        repeat,
        rules,
        xdp_filter_commands: commands,
        xdp_filter: programs.next().context("two programs")?,
        xdp_filter_tcp: programs.next().context("two programs")?,
        libxdp_note,
        rows,
        placements: 1,
        reference_tools: Vec::new(),
    })
}

/// Tries `xdp-bench drop` and `xdp-trafficgen udp` for at most two seconds each on a veth in a
/// namespace of its own, and reports what they printed. On kernel 6.18 both fail to load (see
/// [`SEEN_NOT_LOADING`]); a [`ToolProbe`] with `loaded` says if that ever changes.
pub fn reference_tools_that_do_not_load() -> Result<Vec<ToolProbe>> {
    for tool in ["xdp-bench", "xdp-trafficgen"] {
        require(tool)?;
    }
    let ns = Netns::new(1)?;
    let mut probes = Vec::new();
    for (tool, args) in [
        ("xdp-bench", "drop x0"),
        // One packet at most, to the peer end inside the namespace.
        ("xdp-trafficgen", "udp x0 -n 1"),
    ] {
        let command = format!("timeout 2 {tool} {args}");
        let out = output(&mut ns.sh(&format!(
            "exec 2>&1; mount -t bpf bpf /sys/fs/bpf && exec {command}"
        )))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let cause_line = lines
            .iter()
            .find(|l| l.contains("failed to find"))
            .or_else(|| lines.iter().find(|l| l.contains("failed to load")))
            .map(|l| l.to_string());
        let status = out.status.code();
        probes.push(ToolProbe {
            tool: tool.into(),
            command,
            loaded: matches!(status, Some(0) | Some(124)),
            status,
            cause_line,
            error_line: lines.last().map(|l| l.to_string()),
            output: text,
        });
    }
    if ns.attached("x0")?.is_some() {
        bail!("an XDP program is left on x0 after trying xdp-bench and xdp-trafficgen");
    }
    Ok(probes)
}
