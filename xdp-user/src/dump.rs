//! `xdp-user dump` and `load --capture`: the frames our XDP program sees, with what it did to
//! each, as pcapng.
//!
//! The program itself feeds a BPF ring buffer (`CAPTURE`) while `CAPTURE_CTL` holds a snap
//! length (see `xdp-ebpf`): no fentry/fexit programs (refused on some kernels, and what makes
//! xdpdump lose packets under load), and no cost but one array load while off. `dump` finds
//! the program attached to an interface by another process (`load` or `run`), opens its maps
//! by id, switches capture on, and switches it off again when it stops, however it stops
//! (Ctrl-C, `--count`, `--duration`, an error).
//!
//! Each packet's enhanced packet block carries the XDP verdict (`epb_verdict`, type 2: eBPF
//! XDP, the action returned), the RX queue (`epb_queue`), inbound direction, a comment saying
//! why (the rule number, no rule matched, malformed, unparsed, not IP), and, when the ring
//! was full, how many frames were lost before it (`epb_dropcount`). Losses are also counted
//! in the program's statistics (`capture_lost`) and in the summary: never a silent gap.

use crate::rules::{self, PacketFields, Rule};
use anyhow::{Context, Result, bail};
use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use packet::abi::{CaptureCtl, CaptureRecord, Stats, map_name, verdict};
use packet::capture::{Output, PcapFile, Written, epb_option, wall_clock_ns};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use std::borrow::Cow;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// XDP actions as the program returns them.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// Which captured frames to keep.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only frames whose XDP action is this (`pass`, `drop`, `xsk`).
    pub action: Option<u32>,
    /// Only frames rule N (from 1, as in the metrics) decided.
    pub rule: Option<u32>,
    /// Only frames this rule's keys match, and, when the text named an action, that the
    /// program gave that action.
    pub matches: Option<(Rule, Option<u32>)>,
}

impl Selection {
    /// `--match RULE`: a rule in `load`'s grammar; `action` may be left out.
    pub fn parse_match(text: &str) -> Result<(Rule, Option<u32>)> {
        let named = text.split_whitespace().any(|w| w == "action");
        let full = if named {
            text.to_string()
        } else {
            format!("{text} action pass")
        };
        let rule = rules::parse_rule(&full).map_err(|e| anyhow::anyhow!("--match: {e}"))?;
        let action = named.then(|| xdp_action_of(rule.action));
        Ok((rule, action))
    }

    /// `--verdict pass|drop|xsk` as an XDP action.
    pub fn action_of(name: &str) -> Result<u32> {
        match name {
            "pass" => Ok(XDP_PASS),
            "drop" => Ok(XDP_DROP),
            "xsk" => Ok(XDP_REDIRECT),
            _ => bail!("--verdict {name}: expected pass, drop or xsk"),
        }
    }

    fn keeps(&self, r: &CaptureRecord) -> bool {
        if self.action.is_some_and(|a| a != r.xdp_action) {
            return false;
        }
        if let Some(n) = self.rule
            && (r.verdict != verdict::RULE || r.rule + 1 != n)
        {
            return false;
        }
        if let Some((rule, action)) = &self.matches {
            let data = &r.data[..r.cap_len as usize];
            let packet::filter::Class::Ip(f) = packet::filter::classify(data) else {
                return false;
            };
            if rules::first_match(std::slice::from_ref(rule), &PacketFields::from_ip(&f)).is_none()
            {
                return false;
            }
            if action.is_some_and(|a| a != r.xdp_action) {
                return false;
            }
        }
        true
    }
}

fn xdp_action_of(a: packet::abi::Action) -> u32 {
    match a {
        packet::abi::Action::Drop => XDP_DROP,
        packet::abi::Action::Xsk => XDP_REDIRECT,
        packet::abi::Action::Pass => XDP_PASS,
    }
}

/// The capture maps of the program attached to one interface.
pub struct CaptureMaps {
    pub iface: String,
    ctl: Array<MapData, CaptureCtl>,
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, Stats>,
}

impl std::fmt::Debug for CaptureMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureMaps")
            .field("iface", &self.iface)
            .finish_non_exhaustive()
    }
}

/// The id of the XDP program attached to `iface`.
fn attached_program_id(iface: &str) -> Result<u32> {
    let attached = packet::attached::attached_xdp(iface)
        .map_err(anyhow::Error::msg)?
        .with_context(|| {
            format!(
                "no XDP program is attached to {iface}: start `xdp-user load --iface {iface}` \
             (or `run`) first, or use `xdp-user load --capture FILE`"
            )
        })?;
    Ok(attached.id)
}

impl CaptureMaps {
    /// Opens the maps of our program attached to `iface` (by another process, or this one).
    pub fn of_attached(iface: &str) -> Result<CaptureMaps> {
        CaptureMaps::of_program(iface, attached_program_id(iface)?)
    }

    /// Opens the maps of our program `id`, loaded for `iface` (attached or not yet).
    pub fn of_program(iface: &str, id: u32) -> Result<CaptureMaps> {
        let program = aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .find(|p| p.id() == id)
            .with_context(|| format!("the XDP program {id} on {iface} went away"))?;
        if program.name_as_str() != Some("xdp_filter") {
            bail!(
                "the XDP program on {iface} is {:?}, not xdp-user's xdp_filter: dump reads only \
                 our program's captures",
                program.name_as_str().unwrap_or("?")
            );
        }
        let mut maps = std::collections::HashMap::new();
        for map_id in program.map_ids()?.unwrap_or_default() {
            let info = aya::maps::MapInfo::from_id(map_id)?;
            if let Some(name) = info.name_as_str() {
                maps.insert(name.to_string(), map_id);
            }
        }
        let open = |name: &str| -> Result<aya::maps::Map> {
            let id = maps.get(name).with_context(|| {
                format!(
                    "the program on {iface} has no map {name}: it is an older xdp-user's; \
                     restart it with this one"
                )
            })?;
            Ok(aya::maps::Map::from_map_data(MapData::from_id(*id)?)?)
        };
        Ok(CaptureMaps {
            iface: iface.to_string(),
            ctl: Array::try_from(open(map_name::CAPTURE_CTL)?)?,
            ring: RingBuf::try_from(open(map_name::CAPTURE)?)?,
            stats: PerCpuArray::try_from(open(map_name::STATS)?)?,
        })
    }

    fn lost(&self) -> u64 {
        self.stats
            .get(&0, 0)
            .map(|v| v.iter().map(|s| s.capture_lost.packets).sum())
            .unwrap_or(0)
    }
}

/// What `load` and `run` say when they switch off a capture whose process is gone.
pub fn orphan_message(iface: &str, pid: u32) -> String {
    format!("{iface}: capture switched off: process {pid}, which switched it on, is gone (killed?)")
}

/// What a capture saw and wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpReport {
    /// Frames that came through the ring.
    pub seen: u64,
    /// Frames the selection kept, written to the file.
    pub written: u64,
    /// Frames lost to a full ring while capturing.
    pub lost: u64,
    /// The capture ended because the reader of its pipe had gone (`-w - | tcpdump -c N`);
    /// the last frame taken may not have reached it.
    pub reader_gone: bool,
}

/// How a capture runs.
#[derive(Clone, Debug)]
pub struct DumpOptions {
    pub snaplen: u32,
    pub count: Option<u64>,
    pub duration: Option<f64>,
    pub selection: Selection,
}

/// Switches capture off again when dropped, whatever ends the capture.
struct CaptureOn<'a>(&'a mut Array<MapData, CaptureCtl>);

impl<'a> CaptureOn<'a> {
    /// Switches capture on, as this process's: the snap length and the owner in one write,
    /// so that whoever sees it on also sees who switched it on (see [`switch_off_orphaned`]).
    fn switch_on(ctl: &'a mut Array<MapData, CaptureCtl>, snaplen: u32) -> Result<CaptureOn<'a>> {
        let on = CaptureCtl {
            snaplen,
            owner_pid: std::process::id(),
        };
        ctl.set(0, on, 0)?;
        Ok(CaptureOn(ctl))
    }
}

impl Drop for CaptureOn<'_> {
    fn drop(&mut self) {
        let _ = self.0.set(0, CaptureCtl::default(), 0);
    }
}

/// Switches capture off when the process that switched it on is gone (`kill -9` gives it no
/// chance to): an orphaned capture costs every packet a ring-buffer reservation that nobody
/// reads, counts them all as lost, and refuses the next `dump`. Returns the gone owner's pid.
/// Called by the process that holds the program (`load`, `run`) every 20 ms.
///
/// Race-free with [`CaptureOn`]: the snap length and the owner are written together, so an
/// owner read here with capture on is the one that switched this capture on, or 0 (a read
/// that met a write half done: left alone); and no other capture can start while this one is
/// on.
pub fn switch_off_orphaned<T: std::borrow::BorrowMut<MapData>>(
    ctl: &mut Array<T, CaptureCtl>,
) -> Result<Option<u32>> {
    let now = ctl.get(&0, 0)?;
    if now.snaplen == 0 {
        return Ok(None);
    }
    let owner = now.owner_pid;
    if owner == 0
        || std::path::Path::new("/proc")
            .join(owner.to_string())
            .exists()
    {
        return Ok(None);
    }
    // Had that owner cleared up and a new dump started since the reads above, the owner would
    // differ now: leave that capture alone.
    if ctl.get(&0, 0)?.owner_pid != owner {
        return Ok(None);
    }
    ctl.set(0, CaptureCtl::default(), 0)?;
    Ok(Some(owner))
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn why(r: &CaptureRecord) -> String {
    match r.verdict {
        verdict::RULE => format!("rule {} (rule set {})", r.rule + 1, r.generation),
        verdict::NO_RULE => "no rule matched: default action".into(),
        verdict::NOT_IP => "not IP: the non-IP policy".into(),
        verdict::MALFORMED => "malformed: malformed policy".into(),
        verdict::UNPARSED => "unparsed: unparsed policy".into(),
        _ => "unknown verdict".into(),
    }
}

/// The most records one capture ring can hold (each has an 8-byte header in the ring).
const RING_RECORDS_MAX: usize =
    packet::abi::CAPTURE_RING_BYTES as usize / (std::mem::size_of::<CaptureRecord>() + 8);

/// Captures from every interface in `maps` into `output` until `stop`, `count` or `duration`.
/// `armed` is called once capture is switched on in every program: from then on no frame
/// goes uncaptured (or uncounted), so a caller that must not miss the first frame waits for it.
pub fn capture(
    maps: Vec<CaptureMaps>,
    output: &Output,
    opts: &DumpOptions,
    stop: &AtomicBool,
    armed: impl FnOnce(),
) -> Result<DumpReport> {
    let snaplen = opts.snaplen.clamp(1, packet::abi::CAPTURE_BYTES as u32);
    for m in &maps {
        let now = m.ctl.get(&0, 0)?;
        if now.snaplen != 0 {
            let owner = now.owner_pid;
            bail!(
                "a capture is already running on {} (process {owner}: another `xdp-user \
                 dump`?); stop it first. One whose process was killed is switched off by the \
                 `load` or `run` that holds the program within 20 ms",
                m.iface
            );
        }
    }
    let names: Vec<(&str, usize)> = maps
        .iter()
        .map(|m| (m.iface.as_str(), snaplen as usize))
        .collect();
    let mut file = PcapFile::create(output, &names).map_err(anyhow::Error::msg)?;
    let mut lost_seen: Vec<u64> = maps.iter().map(CaptureMaps::lost).collect();
    let start_lost: u64 = lost_seen.iter().sum();
    let mut stats = Vec::new();
    let mut rings = Vec::new();
    let mut ctls = Vec::new();
    for m in maps {
        stats.push(m.stats);
        rings.push(m.ring);
        ctls.push(m.ctl);
    }
    let mut on = Vec::new();
    for ctl in ctls.iter_mut() {
        on.push(CaptureOn::switch_on(ctl, snaplen)?);
    }
    armed();
    let lost_now = |i: usize| {
        stats[i]
            .get(&0, 0)
            .map(|v| v.iter().map(|s| s.capture_lost.packets).sum::<u64>())
            .unwrap_or(0)
    };
    let to_wall = wall_clock_ns().wrapping_sub(monotonic_ns());
    let start = Instant::now();
    let mut report = DumpReport::default();
    let limit_reached = |report: &DumpReport| {
        opts.count.is_some_and(|c| report.written >= c)
            || opts
                .duration
                .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
    };
    'outer: while !limit_reached(&report) {
        // A stop still drains what the ring holds: a caller that detaches the program first
        // and then stops the capture gets every frame the program saw.
        let stopping = stop.load(Ordering::Relaxed);
        let mut got = 0;
        for (i, ring) in rings.iter_mut().enumerate() {
            // Frames lost since the last look go on the next packet written for this
            // interface (pcapng: lost between it and the packet before).
            let lost = lost_now(i);
            let pending = lost.saturating_sub(lost_seen[i]);
            lost_seen[i] = lost;
            let mut pending = Some(pending).filter(|p| *p > 0);
            let mut taken = 0;
            loop {
                // A stop ends this pass (before a record is taken, so none is lost); the last
                // pass takes at most what a full ring holds, so traffic faster than the
                // writer cannot keep a capture running.
                taken += 1;
                if (stopping && taken > RING_RECORDS_MAX)
                    || (!stopping && stop.load(Ordering::Relaxed))
                {
                    break;
                }
                let Some(item) = ring.next() else { break };
                if item.len() < std::mem::size_of::<CaptureRecord>() {
                    continue;
                }
                // SAFETY: the item holds at least size_of::<CaptureRecord>() bytes the
                // program wrote as a CaptureRecord (integers and bytes: any bit pattern is
                // valid); read_unaligned copies it out of the ring.
                let record: CaptureRecord =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                drop(item);
                got += 1;
                report.seen += 1;
                if !opts.selection.keeps(&record) {
                    continue;
                }
                let mut options = vec![
                    // Inbound: XDP sees frames as they arrive.
                    EnhancedPacketOption::Flags(1),
                    // epb_queue (6): the RX queue.
                    epb_option(6, &record.rx_queue.to_ne_bytes()).map_err(anyhow::Error::msg)?,
                ];
                // epb_verdict (7): type 2 is eBPF XDP, then the action returned.
                let mut v = [0u8; 9];
                v[0] = 2;
                v[1..].copy_from_slice(&u64::from(record.xdp_action).to_ne_bytes());
                options.push(epb_option(7, &v).map_err(anyhow::Error::msg)?);
                options.push(EnhancedPacketOption::Comment(Cow::Owned(why(&record))));
                if let Some(p) = pending.take() {
                    options.push(EnhancedPacketOption::DropCount(p));
                }
                let cap = (record.cap_len as usize).min(record.data.len());
                let written = file
                    .packet(
                        i as u32,
                        record.ts_ns.wrapping_add(to_wall),
                        record.orig_len,
                        &record.data[..cap],
                        options,
                    )
                    .map_err(anyhow::Error::msg)?;
                if written == Written::ReaderGone {
                    report.reader_gone = true;
                    break 'outer;
                }
                report.written += 1;
                if limit_reached(&report) {
                    break 'outer;
                }
            }
        }
        if stopping {
            break;
        }
        if got == 0 {
            if file.flush().map_err(anyhow::Error::msg)? == Written::ReaderGone {
                report.reader_gone = true;
                break;
            }
            let mut fds: Vec<libc::pollfd> = rings
                .iter()
                .map(|r| libc::pollfd {
                    fd: r.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // Writing to a pipe: its write end reports POLLERR once the reader has closed
            // it, so a capture with nothing to write ends then, not at the next frame.
            if matches!(output, Output::Stdout) {
                fds.push(libc::pollfd {
                    fd: libc::STDOUT_FILENO,
                    events: 0,
                    revents: 0,
                });
            }
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs; poll writes only
            // their `revents`.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
            if matches!(output, Output::Stdout)
                && fds.last().is_some_and(|f| f.revents & libc::POLLERR != 0)
            {
                report.reader_gone = true;
                break;
            }
        }
    }
    // Capture off first, then count what was lost while it was on.
    drop(on);
    report.lost = (0..stats.len()).map(lost_now).sum::<u64>() - start_lost;
    if file.flush().map_err(anyhow::Error::msg)? == Written::ReaderGone {
        report.reader_gone = true;
    }
    Ok(report)
}
