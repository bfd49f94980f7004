//! Loading the XDP program, attaching it through a BPF link, installing rule tables and reading
//! its per-CPU counters.
//!
//! The program is attached only through a BPF link (`bpf_link_create`), never through the older
//! netlink interface: a link belongs to the file descriptor this process holds, so when the
//! process ends, however it ends (`kill -9` included), the kernel detaches the program. A
//! netlink attachment would stay on the interface and keep filtering (or black-holing) traffic
//! with nobody left to read or remove it; aya falls back to netlink when the kernel refuses a
//! link, and we refuse that fallback.
//!
//! # Atomic rule reloads
//! The program holds two rule-set slots (`RULESETS`, and for the address tries, keys that
//! start with the slot number) and one control word, `CONFIG.active_set`, which it reads once
//! per packet before it takes any table from that slot (the slot's number too: each
//! [`RuleSet`] value holds it, `RuleSet::slot`, set by `install`). [`XdpFilter::install`]:
//! 1. compiles the rules (a bad rule set fails here, before anything is written);
//! 2. writes the slot *not* in force: its trie entries and its [`RuleSet`] value, in one
//!    update, and reads its per-rule counters (in `Stats::rules`, which no packet touches
//!    now): the new set's counts are the counters less that reading;
//! 3. switches `active_set` to it: one update of the control word (the program's global
//!    `CONFIG`, map `.data.config`), the only step packets can see;
//! 4. retires the old slot after an RCU grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)`
//!    runs `synchronize_rcu()`; every XDP program run is an RCU read-side section), after
//!    which no packet is still being decided by the old slot. The wait runs on a thread of
//!    its own, so the reload returns as soon as the new set is in force; the next reload (and
//!    the detach) joins it before it writes that slot again.
//!
//! Every packet is thus decided entirely by the old or entirely by the new set, and a reload
//! that fails before step 3 leaves the old set in force untouched. This is the scheme Cilium
//! uses for its Maglev tables (build aside, switch one word), without map-in-map, which aya's
//! eBPF side does not offer here.

use crate::rules::{Compiled, Policy, Rule, compile};
use anyhow::{Context, Result, anyhow, bail};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::links::FdLink;
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
#[cfg(test)]
use packet::abi::ProbeRecord;
use packet::abi::outcome::Outcome;
use packet::abi::{Counter, MAX_RULES, RuleMask, RuleSet, Stats, XdpConfig, map_name, stat};
use std::ffi::CString;
use std::time::{Duration, Instant};

/// The program object, built by build.rs and embedded in the binary.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-ebpf"));
const PROGRAM_NAME: &str = "xdp_filter";

/// How to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Native (driver) mode, falling back to skb mode where the driver has none.
    Auto,
    /// Native (driver) mode: XDP runs in the NIC driver, before any socket buffer exists.
    Native,
    /// Generic (skb) mode: XDP runs in the kernel's network stack; works on every interface.
    Skb,
}

/// How much the XDP program logs (`--log-level`): fixed when it is loaded, so that the
/// verifier removes the code of every disabled level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LogLevel {
    #[default]
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Prints the program's log records on standard error.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        packet::stderr!(
            "xdp-user: [xdp {}] {}",
            record.level().as_str().to_lowercase(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// The attached program. Dropping it detaches the program.
pub struct XdpFilter {
    ebpf: Ebpf,
    /// Reads the program's log records (with a log level other than off).
    logger: Option<aya_log::EbpfLogger<StderrLog>>,
    link: Option<FdLink>,
    /// The mode the program runs in (native or skb), after `auto` chose.
    pub mode: Mode,
    /// Why `auto` fell back to skb mode: what the kernel said to native mode.
    pub native_refused: Option<String>,
    pub iface: String,
    if_index: u32,
    /// The rule-set slot in force, once a set is installed.
    active: Option<u32>,
    /// Rule sets installed so far; the generation of the set in force.
    generation: u32,
    /// The grace period that retires the previous slot, while it runs.
    retiring: Option<std::thread::JoinHandle<()>>,
    /// The per-rule counters (`Stats::rules`) of the slot in force as they were when the set
    /// was written into it, one per rule of the set: the set's own counts are the counters
    /// less these.
    rule_baseline: Vec<Counter>,
    /// `XdpConfig::xsk_frame_room`: set with the first socket registered.
    xsk_frame_room: u32,
}

/// What [`XdpFilter::install`] did.
#[derive(Clone, Copy, Debug)]
pub struct Installed {
    /// The new set's generation (1 for the first).
    pub generation: u32,
    /// From the start of the install until the switch: how long the new rules took to be in
    /// force.
    pub in_force_after: Duration,
}

impl std::fmt::Debug for XdpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpFilter")
            .field("iface", &self.iface)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The interface index of `iface`, or a clear error.
pub fn if_index(iface: &str) -> Result<u32> {
    let name = CString::new(iface).map_err(|_| anyhow!("bad interface name {iface:?}"))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no interface named `{iface}` here (list interfaces with `ip link`)");
    }
    Ok(index)
}

fn euid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Adds "what to try" to the errors users meet most: not root, no BPF support.
fn explain(e: anyhow::Error, what: &str) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        let who = if euid_is_root() {
            "running as root, but the kernel still refused (lockdown? unprivileged BPF limits?)"
        } else {
            "not running as root"
        };
        return e.context(format!(
            "{what}: permission denied ({who}). Run as root, or give the binary CAP_BPF, \
             CAP_NET_ADMIN and CAP_PERFMON"
        ));
    }
    e.context(what.to_string())
}

/// Why the kernel refused to attach in native mode, in words, when its error number says.
fn native_refusal(e: &anyhow::Error, iface: &str) -> Option<String> {
    let errno = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)?;
    match errno {
        // veth_xdp_set, and drivers alike: a program without multi-buffer support gets each
        // frame in one page, so the MTU must fit one.
        libc::ERANGE => Some(format!(
            "the MTU is too large: without multi-buffer support a frame must fit one page (on \
             a veth it is the peer's MTU that counts, 3506 at most with 4 KiB pages); a lower \
             MTU lets {iface} run native XDP"
        )),
        libc::EOPNOTSUPP => Some("the driver has no native XDP".to_string()),
        _ => None,
    }
}

impl XdpFilter {
    /// Loads the program for `iface`, without attaching it: install rules first, then
    /// [`attach`](Self::attach), so no packet ever meets an empty rule table. The AF_XDP
    /// socket map gets one slot per RX queue of the interface.
    pub fn load(iface: &str) -> Result<XdpFilter> {
        XdpFilter::load_logging(iface, LogLevel::Off)
    }

    /// As [`load`](Self::load), with the program logging rare events at `level` and above;
    /// call [`flush_logs`](Self::flush_logs) now and then to print them.
    pub fn load_logging(iface: &str, level: LogLevel) -> Result<XdpFilter> {
        let if_index = if_index(iface)?;
        let queues = crate::afxdp::rx_queue_count(iface)?.max(1);
        raise_memlock_limit();
        let level_byte = level as u8;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_name::XSKS, queues)
            .override_global(aya_log::LEVEL, &level_byte, true)
            .load(PROGRAM)
            .map_err(|e| explain(e.into(), "could not load the XDP program's maps"))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .context("the embedded object has no xdp_filter program")?
            .try_into()?;
        program
            .load()
            .map_err(|e| explain(e.into(), "the kernel rejected the XDP program"))?;
        // Kept for the program's life: dropping the logger closes its map.
        let logger = if level == LogLevel::Off {
            None
        } else {
            Some(
                aya_log::EbpfLogger::init_with_logger(&mut ebpf, StderrLog)
                    .context("could not open the XDP program's log")?,
            )
        };
        Ok(XdpFilter {
            ebpf,
            logger,
            link: None,
            mode: Mode::Auto,
            native_refused: None,
            iface: iface.to_string(),
            if_index,
            active: None,
            generation: 0,
            retiring: None,
            rule_baseline: Vec::new(),
            xsk_frame_room: 0,
        })
    }

    /// The kernel's id of the loaded program (attached or not).
    pub fn program_id(&self) -> Result<u32> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .context("the embedded object has no xdp_filter program")?
            .try_into()?;
        Ok(program.info()?.id())
    }

    /// Attaches the loaded program to its interface in `mode`; `self.mode` then says which
    /// mode it got.
    pub fn attach(&mut self, mode: Mode) -> Result<()> {
        let iface = self.iface.clone();
        let if_index = self.if_index;
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .context("the embedded object has no xdp_filter program")?
            .try_into()?;
        let try_mode = |program: &mut Xdp, m: XdpMode| -> Result<FdLink> {
            let id = program.attach_to_if_index(if_index, m)?;
            let link = program.take_link(id)?;
            FdLink::try_from(link).map_err(|_| {
                anyhow!(
                    "the kernel attached the program through netlink rather than a BPF link; \
                     refusing, since a netlink attachment would outlive this process \
                     (is another XDP program attached to {iface}? see `ip link show {iface}`)"
                )
            })
        };
        let attached = match mode {
            Mode::Native | Mode::Skb => {
                let m = if mode == Mode::Native {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                try_mode(program, m).map(|link| (link, mode)).map_err(|e| {
                    let hint = if mode == Mode::Native {
                        let why = native_refusal(&e, &iface)
                            .map_or(String::new(), |why| format!(": {why}"));
                        format!(
                            "{iface} cannot run XDP in native (driver) mode{why}; try `--mode \
                             skb` (generic XDP, works everywhere, slower) or `--mode auto`"
                        )
                    } else {
                        format!("could not attach XDP to {iface} in skb (generic) mode")
                    };
                    explain(e, &hint)
                })
            }
            Mode::Auto => match try_mode(program, XdpMode::Driver) {
                Ok(link) => Ok((link, Mode::Native)),
                Err(native_err) => try_mode(program, XdpMode::Skb)
                    .map(|link| {
                        self.native_refused = Some(
                            native_refusal(&native_err, &iface)
                                .unwrap_or_else(|| format!("{native_err:#}")),
                        );
                        (link, Mode::Skb)
                    })
                    .map_err(|e| {
                        explain(
                            e,
                            &format!(
                                "could not attach XDP to {iface} in native mode ({native_err:#}) \
                                 nor in skb mode"
                            ),
                        )
                    }),
            },
        };
        // Taken by another program (another xdp-user, xdp-loader, a netlink attachment): the
        // kernel only says EBUSY / EEXIST; say which program, who holds it and what to do.
        let (link, mode) = attached.map_err(|e| match packet::attached::occupied_by(&iface) {
            Some(why) => anyhow!(why),
            None => e,
        })?;
        self.link = Some(link);
        self.mode = mode;
        Ok(())
    }

    /// Compiles `rules` and makes them the rule set in force, atomically (see the module
    /// docs). On error the rule set in force before the call is still in force, unchanged.
    /// Per-rule counters start at zero with the new set; the global counters keep running.
    pub fn install(&mut self, rules: &[Rule], policy: Policy) -> Result<Installed> {
        let mut compiled = compile(rules, policy)?;
        let start = Instant::now();
        self.wait_retired();
        let slot = self.active.map_or(0, |a| 1 - a);
        let generation = self.generation + 1;
        compiled.set.generation = generation;
        compiled.set.slot = slot;
        let baseline = self
            .write_slot(slot, &compiled)
            .with_context(|| format!("could not write the new rule set (slot {slot})"))?;
        // The switch: the only write a packet can observe.
        self.write_config(slot, self.xsk_frame_room)
            .context("could not switch to the new rule set")?;
        let in_force_after = start.elapsed();
        let previous = self.active.replace(slot);
        self.generation = generation;
        self.rule_baseline = baseline;
        if previous.is_some() {
            // Packets that read the old slot number before the switch may still be running.
            self.retiring = Some(std::thread::spawn(grace_period));
        }
        Ok(Installed {
            generation,
            in_force_after,
        })
    }

    /// Waits until the slot retired by the last install is free: no packet is still being
    /// decided by it.
    pub fn wait_retired(&mut self) {
        if let Some(t) = self.retiring.take() {
            // `grace_period` cannot panic; if the thread died anyway, wait here instead.
            if t.join().is_err() {
                grace_period();
            }
        }
    }

    /// Prints the log records the program wrote since the last call.
    pub fn flush_logs(&mut self) {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
    }

    /// Switches off a capture whose process is gone ([`crate::dump::switch_off_orphaned`]);
    /// returns that process's pid.
    pub fn switch_off_orphaned_capture(&mut self) -> Result<Option<u32>> {
        let mut ctl: Array<&mut MapData, packet::abi::CaptureCtl> =
            Array::try_from(self.map(map_name::CAPTURE_CTL)?)?;
        crate::dump::switch_off_orphaned(&mut ctl)
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the XDP program has no map {name}"))
    }

    /// Writes everything of a rule set into `slot`, which no packet reads (it is not in force,
    /// and a grace period has passed since it last was). Returns the slot's per-rule counters
    /// as they are: the new set's counts start from them.
    fn write_slot(&mut self, slot: u32, c: &Compiled) -> Result<Vec<Counter>> {
        let s = slot as u8;
        let key4 = |e: &(u8, [u8; 4], RuleMask)| {
            let (len, a, m) = *e;
            (8 + u32::from(len), [s, a[0], a[1], a[2], a[3]], m)
        };
        let key6 = |e: &(u8, [u8; 16], RuleMask)| {
            let (len, a, m) = *e;
            let mut k = [s; 17];
            k[1..].copy_from_slice(&a);
            (8 + u32::from(len), k, m)
        };
        self.write_trie(map_name::SRC_V4, s, c.src_v4.iter().map(key4))?;
        self.write_trie(map_name::DST_V4, s, c.dst_v4.iter().map(key4))?;
        self.write_trie(map_name::SRC_V6, s, c.src_v6.iter().map(key6))?;
        self.write_trie(map_name::DST_V6, s, c.dst_v6.iter().map(key6))?;
        // The slot's per-rule counters now, which no packet changes until the switch: the
        // new set's counts start from here.
        let all = self.stats_summed()?;
        let first = slot as usize * MAX_RULES;
        let baseline = all.rules[first..first + c.set.rule_count as usize].to_vec();
        let mut sets: Array<&mut MapData, RuleSet> =
            Array::try_from(self.map(map_name::RULESETS)?)?;
        sets.set(slot, c.set.as_ref(), 0)?;
        Ok(baseline)
    }

    /// `STATS`, summed over CPUs.
    fn stats_summed(&mut self) -> Result<Stats> {
        let stats: PerCpuArray<&mut MapData, Stats> =
            PerCpuArray::try_from(self.map(map_name::STATS)?)?;
        let mut all = Stats::default();
        for per_cpu in stats.get(&0, 0)?.iter() {
            all.merge(per_cpu);
        }
        Ok(all)
    }

    /// Makes the trie's entries under `slot` exactly `entries`: inserts them, then removes
    /// the slot's entries that are not among them. Entries of the other slot are not touched.
    fn write_trie<const K: usize>(
        &mut self,
        name: &str,
        slot: u8,
        entries: impl Iterator<Item = (u32, [u8; K], RuleMask)>,
    ) -> Result<()>
    where
        [u8; K]: aya::Pod,
    {
        let mut trie: LpmTrie<&mut MapData, [u8; K], RuleMask> =
            LpmTrie::try_from(self.map(name)?)?;
        let mut wanted = Vec::new();
        for (len, key, mask) in entries {
            trie.insert(&Key::new(len, key), mask, 0)
                .with_context(|| format!("could not write {name}"))?;
            wanted.push((len, key));
        }
        let stale: Vec<Key<[u8; K]>> = trie
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.data()[0] == slot && !wanted.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale {
            trie.remove(&k)
                .with_context(|| format!("could not clean {name}"))?;
        }
        Ok(())
    }

    /// Runs `program` (`xdp_filter`, or the bare `xdp_drop_bare` reference) over `frame`
    /// `repeat` times in the kernel (BPF_PROG_TEST_RUN), without any interface: returns the
    /// XDP action and the kernel's average time per run.
    pub fn test_run(
        &mut self,
        program: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration)> {
        Self::test_run_loaded(self.loaded_here(program)?, frame, repeat)
    }

    /// `program` of the embedded object, loaded into the kernel if it is not yet (it is not
    /// attached anywhere).
    fn loaded_here(&mut self, program: &str) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("the embedded object has no program {program}"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| explain(e.into(), "the kernel rejected the XDP program"))?;
        }
        Ok(prog)
    }

    /// An XDP program already loaded in the kernel (by anyone: `xdp-filter`, a dispatcher),
    /// found by its id, for [`test_run_loaded`](Self::test_run_loaded). The handle holds a
    /// file descriptor of its own, so the program stays loaded while it lives.
    pub fn loaded_program(id: u32) -> Result<Xdp> {
        let info = aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .find(|p| p.id() == id)
            .with_context(|| format!("no loaded BPF program has id {id} (see `bpftool prog`)"))?;
        Xdp::from_program_info(
            info,
            std::borrow::Cow::Owned(format!("program {id}")),
            aya_obj::programs::XdpAttachType::Interface,
        )
        .with_context(|| format!("program {id} is not an XDP program"))
    }

    /// Runs a program from [`loaded_program`](Self::loaded_program) on `frame` `repeat` times:
    /// the same measurement as [`test_run`](Self::test_run), for a reference beside ours.
    pub fn test_run_loaded(
        prog: &Xdp,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration)> {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::new()
            })
            .map_err(|e| explain(e.into(), "BPF_PROG_TEST_RUN failed"))?;
        Ok((r.return_value, r.duration))
    }

    /// Writes the program's control word (`CONFIG`): one update, so a packet sees the old
    /// word or the new one.
    fn write_config(&mut self, active_set: u32, xsk_frame_room: u32) -> Result<()> {
        let mut config: Array<&mut MapData, XdpConfig> =
            Array::try_from(self.map(map_name::CONFIG)?)?;
        config.set(
            0,
            XdpConfig {
                active_set,
                xsk_frame_room,
            },
            0,
        )?;
        Ok(())
    }

    /// Says why `--mode auto` fell back to skb mode, if it did: skb mode is slower, and the
    /// cause (often an MTU) can usually be fixed.
    pub fn report_fallback(&self) {
        if let Some(why) = &self.native_refused {
            packet::stderr!(
                "xdp-user: {}: native XDP refused ({why}): running in skb (generic) mode, \
                 which is slower",
                self.iface
            );
        }
    }

    /// Registers the AF_XDP socket `fd` for RX queue `queue` in the XSKS map, so `xsk` rules
    /// redirect that queue's packets to it. Its UMEM frames hold frames of up to `frame_room`
    /// bytes: the program passes longer ones to the kernel instead of redirecting them into a
    /// socket that would drop them (see `XdpConfig::xsk_frame_room`).
    pub fn register_socket(
        &mut self,
        queue: u32,
        fd: std::os::fd::RawFd,
        frame_room: u32,
    ) -> Result<()> {
        if self.xsk_frame_room != frame_room {
            self.write_config(self.active.unwrap_or(0), frame_room)
                .context("could not set the sockets' frame room")?;
            self.xsk_frame_room = frame_room;
        }
        let mut map: aya::maps::XskMap<&mut MapData> =
            aya::maps::XskMap::try_from(self.map(map_name::XSKS)?)?;
        map.set(queue, fd, 0)
            .with_context(|| format!("could not register the socket of queue {queue}"))?;
        Ok(())
    }

    /// Runs the probe program (`xdp_filter_probe`: the filter's classification and decision,
    /// recorded instead of acted on) over `frame` with the rule set in force, and returns what
    /// it recorded. For the differential test.
    #[cfg(test)]
    pub fn probe(&mut self, frame: &[u8]) -> Result<ProbeRecord> {
        self.test_run("xdp_filter_probe", frame, 1)?;
        let probe: Array<&mut MapData, ProbeRecord> = Array::try_from(self.map(map_name::PROBE)?)?;
        Ok(probe.get(&0, 0)?)
    }

    /// How many instructions the kernel's verifier walked to accept `program` (loaded here if
    /// it is not yet): its limit is 1 000 000, and every branch the program adds can multiply
    /// the count. `None` on kernels older than 5.16, which do not say.
    #[cfg(test)]
    pub fn verified_instructions(&mut self, program: &str) -> Result<Option<u32>> {
        Ok(self
            .loaded_here(program)?
            .info()?
            .verified_instruction_count())
    }

    /// The counters now, summed over CPUs; the per-rule counters of the set in force.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let mut s = Snapshot::default();
        let all = self.stats_summed()?;
        s.stats = all.totals();
        s.outcomes = all
            .outcomes
            .iter()
            .enumerate()
            .filter(|(_, c)| c.packets > 0)
            .map(|(i, c)| (Outcome::from_index(i), *c))
            .collect();
        let first = self.active.unwrap_or(0) as usize * MAX_RULES;
        s.rules = all.rules[first..first + self.rule_baseline.len()]
            .iter()
            .zip(&self.rule_baseline)
            .map(|(now, then)| now.since(then))
            .collect();
        s.generation = self.generation;
        Ok(s)
    }

    /// Detaches the program and waits until no packet is still inside it, so counters read
    /// afterwards are final and agree with each other (dropping the filter also detaches).
    pub fn detach(&mut self) {
        self.wait_retired();
        if self.link.take().is_some() {
            grace_period();
        }
    }
}

/// Waits for an RCU grace period: every XDP program run that started before the call has
/// finished when it returns (XDP runs inside RCU read-side sections; `MEMBARRIER_CMD_GLOBAL`
/// is `synchronize_rcu()`). Kernels booted with `nohz_full` refuse that command; there we
/// wait a generous 50 ms instead, far longer than any program run.
fn grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers; any failure is reported through the result.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r != 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Older kernels charge BPF maps to RLIMIT_MEMLOCK; newer ones (5.11+) use memory cgroups.
/// Raising it is harmless where it is not needed.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `limit` is a valid rlimit that lives across the call; failure is harmless and
    // reported through the return value, which we may ignore.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
}

/// The program's counters at one moment, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Indexed by `packet::abi::stat`.
    pub stats: [Counter; stat::COUNT as usize],
    /// Per rule of the set in force, in rule order.
    pub rules: Vec<Counter>,
    /// The outcomes frames had (what they were, fragment kind, matched or not, action), those
    /// with at least one packet: the counters every total above is derived from.
    pub outcomes: Vec<(Outcome, Counter)>,
    /// The generation of the set in force.
    pub generation: u32,
}

impl Snapshot {
    pub fn get(&self, slot: u32) -> Counter {
        self.stats[slot as usize]
    }
}
