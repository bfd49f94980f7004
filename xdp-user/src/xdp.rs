//! Loading the XDP program, attaching it through a BPF link, installing rule tables and reading
//! its per-CPU counters.
//!
//! The program is attached only through a BPF link (`bpf_link_create`), never through the older
//! netlink interface: a link belongs to the file descriptor this process holds, so when the
//! process ends, however it ends (`kill -9` included), the kernel detaches the program. A
//! netlink attachment would stay on the interface and keep filtering (or black-holing) traffic
//! with nobody left to read or remove it; aya falls back to netlink when the kernel refuses a
//! link, and we refuse that fallback.

use crate::rules::{Rule, Tables, compile};
use anyhow::{Context, Result, anyhow, bail};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};
use aya::programs::links::FdLink;
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use packet::abi::{Action, Counter, MAX_RULES, RuleMask, XdpConfig, map_name, stat};
use std::ffi::CString;

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

/// The attached program. Dropping it detaches the program.
pub struct XdpFilter {
    ebpf: Ebpf,
    link: Option<FdLink>,
    /// The mode the program runs in (native or skb), after `auto` chose.
    pub mode: Mode,
    pub iface: String,
    if_index: u32,
    rule_count: usize,
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

impl XdpFilter {
    /// Loads the program for `iface`, without attaching it: install rules first, then
    /// [`attach`](Self::attach), so no packet ever meets an empty rule table.
    pub fn load(iface: &str) -> Result<XdpFilter> {
        let if_index = if_index(iface)?;
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .load(PROGRAM)
            .map_err(|e| explain(e.into(), "could not load the XDP program's maps"))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .context("the embedded object has no xdp_filter program")?
            .try_into()?;
        program
            .load()
            .map_err(|e| explain(e.into(), "the kernel rejected the XDP program"))?;
        Ok(XdpFilter {
            ebpf,
            link: None,
            mode: Mode::Auto,
            iface: iface.to_string(),
            if_index,
            rule_count: 0,
        })
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
        let (link, mode) = match mode {
            Mode::Native | Mode::Skb => {
                let m = if mode == Mode::Native {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                let link = try_mode(program, m).map_err(|e| {
                    let hint = if mode == Mode::Native {
                        format!(
                            "{iface} cannot run XDP in native (driver) mode; try `--mode skb` \
                             (generic XDP, works everywhere, slower) or `--mode auto`"
                        )
                    } else {
                        format!("could not attach XDP to {iface} in skb (generic) mode")
                    };
                    explain(e, &hint)
                })?;
                (link, mode)
            }
            Mode::Auto => match try_mode(program, XdpMode::Driver) {
                Ok(link) => (link, Mode::Native),
                Err(native_err) => {
                    let link = try_mode(program, XdpMode::Skb).map_err(|e| {
                        explain(
                            e,
                            &format!(
                                "could not attach XDP to {iface} in native mode ({native_err:#}) \
                                 nor in skb mode"
                            ),
                        )
                    })?;
                    (link, Mode::Skb)
                }
            },
        };
        self.link = Some(link);
        self.mode = mode;
        Ok(())
    }

    /// Compiles `rules` and writes them, with the default action, into the program's maps.
    /// Per-rule counters restart at zero (rule numbers may mean other rules now); the global
    /// counters keep running.
    pub fn install(&mut self, rules: &[Rule], default: Action) -> Result<()> {
        let tables = compile(rules)?;
        self.write_tables(&tables)?;
        let mut rule_stats: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(self.map(map_name::RULE_STATS)?)?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        for i in 0..MAX_RULES as u32 {
            let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus])?;
            rule_stats.set(i, zeros, 0)?;
        }
        let mut config: Array<&mut MapData, XdpConfig> =
            Array::try_from(self.map(map_name::CONFIG)?)?;
        config.set(
            0,
            XdpConfig {
                default_action: default as u32,
                rule_count: rules.len() as u32,
                flags: tables.flags,
            },
            0,
        )?;
        self.rule_count = rules.len();
        Ok(())
    }

    fn map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the XDP program has no map {name}"))
    }

    fn write_tables(&mut self, t: &Tables) -> Result<()> {
        {
            let mut actions: Array<&mut MapData, u32> =
                Array::try_from(self.map(map_name::RULE_ACTIONS)?)?;
            for (i, a) in t.actions.iter().enumerate() {
                actions.set(i as u32, *a, 0)?;
            }
        }
        for (name, table) in [
            (map_name::PROTO_MASKS, &t.proto),
            (map_name::SPORT_MASKS, &t.sport),
            (map_name::DPORT_MASKS, &t.dport),
            (map_name::ICMP_MASKS, &t.icmp),
        ] {
            let mut map: Array<&mut MapData, RuleMask> = Array::try_from(self.map(name)?)?;
            for (i, m) in table.iter().enumerate() {
                map.set(i as u32, *m, 0)?;
            }
        }
        self.write_trie(map_name::SRC_V4, &t.src_v4)?;
        self.write_trie(map_name::DST_V4, &t.dst_v4)?;
        self.write_trie(map_name::SRC_V6, &t.src_v6)?;
        self.write_trie(map_name::DST_V6, &t.dst_v6)?;
        Ok(())
    }

    /// Writes the new entries first, then removes entries no longer wanted, so a lookup never
    /// finds an empty trie while a rule set is being replaced.
    fn write_trie<const N: usize>(
        &mut self,
        name: &str,
        entries: &[(u8, [u8; N], RuleMask)],
    ) -> Result<()>
    where
        [u8; N]: aya::Pod,
    {
        let mut trie: LpmTrie<&mut MapData, [u8; N], RuleMask> =
            LpmTrie::try_from(self.map(name)?)?;
        for (len, addr, mask) in entries {
            trie.insert(&Key::new(u32::from(*len), *addr), *mask, 0)?;
        }
        let stale: Vec<Key<[u8; N]>> = trie
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| {
                !entries
                    .iter()
                    .any(|(l, a, _)| u32::from(*l) == k.prefix_len() && *a == k.data())
            })
            .collect();
        for k in stale {
            trie.remove(&k)?;
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
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("the embedded object has no program {program}"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| explain(e.into(), "the kernel rejected the XDP program"))?;
        }
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::new()
            })
            .map_err(|e| explain(e.into(), "BPF_PROG_TEST_RUN failed"))?;
        Ok((r.return_value, r.duration))
    }

    /// Registers the AF_XDP socket `fd` for RX queue `queue` in the XSKS map, so `xsk` rules
    /// redirect that queue's packets to it.
    pub fn register_socket(&mut self, queue: u32, fd: std::os::fd::RawFd) -> Result<()> {
        let mut map: aya::maps::XskMap<&mut MapData> =
            aya::maps::XskMap::try_from(self.map(map_name::XSKS)?)?;
        map.set(queue, fd, 0)
            .with_context(|| format!("could not register the socket of queue {queue}"))?;
        Ok(())
    }

    /// The counters now, summed over CPUs.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let stats: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(self.map(map_name::STATS)?)?;
        let mut s = Snapshot::default();
        for i in 0..stat::COUNT {
            let per_cpu = stats.get(&i, 0)?;
            let mut c = Counter::default();
            for v in per_cpu.iter() {
                c.merge(v);
            }
            s.stats[i as usize] = c;
        }
        let rule_count = self.rule_count;
        let rule_stats: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(self.map(map_name::RULE_STATS)?)?;
        for i in 0..rule_count as u32 {
            let mut c = Counter::default();
            for v in rule_stats.get(&i, 0)?.iter() {
                c.merge(v);
            }
            s.rules.push(c);
        }
        Ok(s)
    }

    /// Detaches the program now (dropping the filter does the same).
    pub fn detach(&mut self) {
        self.link.take();
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
    /// Per rule, in rule order.
    pub rules: Vec<Counter>,
}

impl Snapshot {
    pub fn get(&self, slot: u32) -> Counter {
        self.stats[slot as usize]
    }
}
