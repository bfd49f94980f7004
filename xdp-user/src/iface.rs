//! Noticing what happens to the interface a data path runs on, at once:
//! - it went away (deleted, or moved to another network namespace): the XDP program goes with
//!   it, and counting zeros forever would hide it. The data paths exit with status 1.
//! - its link went down or came back (`operstate`): reported; the program stays attached and
//!   the data path resumes by itself when the link returns, so nothing has to be redone.
//! - its MTU changed: reported, so a frame size that no longer fits is seen at once.
//!
//! The interface is remembered by its index, which the kernel never reuses for another device
//! while this one lives: a rename keeps the index (and is not "gone"); deleting the device or
//! moving it to another namespace makes the index name nothing here.

use anyhow::{Result, bail};
use std::ffi::CStr;

/// An interface, by name and index, to check on.
#[derive(Debug)]
pub struct IfaceWatch {
    name: String,
    index: u32,
    /// What the last look saw.
    link: Option<Link>,
}

/// The state of a link that matters to a data path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// `operstate` (RFC 2863): `up`, `down`, `lowerlayerdown` (a veth whose peer is down),
    /// `unknown` (loopback and some virtual devices, which pass traffic), ...
    pub operstate: String,
    pub mtu: u32,
}

impl Link {
    /// Whether traffic can flow.
    pub fn is_up(&self) -> bool {
        matches!(self.operstate.as_str(), "up" | "unknown")
    }
}

/// What changed on a link between two looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    Down { operstate: String },
    Up,
    Mtu { from: u32, to: u32 },
}

impl std::fmt::Display for LinkChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkChange::Down { operstate } => write!(
                f,
                "link down (operstate {operstate}): no traffic until it comes back; the XDP \
                 program stays attached and the data path resumes by itself"
            ),
            LinkChange::Up => write!(f, "link up again"),
            LinkChange::Mtu { from, to } => write!(f, "MTU changed from {from} to {to}"),
        }
    }
}

/// The changes from `before` to `now`.
pub fn changes(before: &Link, now: &Link) -> Vec<LinkChange> {
    let mut out = Vec::new();
    if before.is_up() && !now.is_up() {
        out.push(LinkChange::Down {
            operstate: now.operstate.clone(),
        });
    }
    if !before.is_up() && now.is_up() {
        out.push(LinkChange::Up);
    }
    if before.mtu != now.mtu {
        out.push(LinkChange::Mtu {
            from: before.mtu,
            to: now.mtu,
        });
    }
    out
}

impl IfaceWatch {
    /// Watches the interface called `name` now; fails if there is none.
    pub fn new(name: &str) -> Result<IfaceWatch> {
        let mut w = IfaceWatch {
            name: name.to_string(),
            index: crate::xdp::if_index(name)?,
            link: None,
        };
        w.link = w.read_link().ok();
        Ok(w)
    }

    /// The interface's state now, from sysfs (`ip netns exec` gives each namespace its own
    /// /sys, so this is the device of our namespace), under its current name.
    fn read_link(&self) -> Result<Link> {
        let name = self.current_name()?;
        let read = |file: &str| -> Result<String> {
            let path = format!("/sys/class/net/{name}/{file}");
            Ok(std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?
                .trim()
                .to_string())
        };
        Ok(Link {
            operstate: read("operstate")?,
            mtu: read("mtu")?.parse().unwrap_or(0),
        })
    }

    /// Fails when the interface went away; otherwise returns what changed since the last
    /// call (link down, link up, MTU), to be reported.
    pub fn poll(&mut self) -> Result<Vec<LinkChange>> {
        let now = self.read_link()?;
        let out = match &self.link {
            Some(before) => changes(before, &now),
            None => Vec::new(),
        };
        self.link = Some(now);
        Ok(out)
    }

    /// The interface's name now (it may have been renamed). Fails when it no longer exists
    /// in this namespace.
    fn current_name(&self) -> Result<String> {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write, and outlives the
        // call.
        let found = unsafe { libc::if_indextoname(self.index, buf.as_mut_ptr()) };
        if found.is_null() {
            let e = std::io::Error::last_os_error();
            // ENXIO: no device has this index here. Anything else (no socket to ask with)
            // says nothing about the interface.
            if e.raw_os_error() == Some(libc::ENXIO) || e.raw_os_error() == Some(libc::ENODEV) {
                bail!(
                    "interface {} went away (deleted, or moved to another network namespace)",
                    self.name
                );
            }
            bail!("could not check on interface {}: {e}", self.name);
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`, which lives here.
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Ok(name.to_string_lossy().into_owned())
    }
}

/// The XDP program attached to an interface (by anyone), as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedXdp {
    pub id: u32,
    pub name: String,
    /// `native`, `skb`, `offload` or `several` (more than one mode at once).
    pub mode: &'static str,
}

impl std::fmt::Display for AttachedXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "id {} `{}` in {} mode", self.id, self.name, self.mode)
    }
}

/// The XDP program attached to `iface`, from `ip -d -j link` (iproute2 reads the netlink
/// attribute; a BPF link and a netlink attachment look the same there). `None` when there is
/// none.
pub fn attached_xdp(iface: &str) -> Result<Option<AttachedXdp>> {
    let out = std::process::Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .map_err(|e| anyhow::anyhow!("could not run `ip` (install iproute2): {e}"))?;
    if !out.status.success() {
        bail!(
            "no interface {iface} here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(attached_from_json(&v))
}

/// [`attached_xdp`] from `ip -d -j link show dev IFACE`'s output.
fn attached_from_json(v: &serde_json::Value) -> Option<AttachedXdp> {
    let xdp = v.pointer("/0/xdp")?;
    // One mode: `prog` is the program. Several at once (multi-attach): `attached` lists them.
    let prog = xdp
        .get("prog")
        .or_else(|| xdp.pointer("/attached/0/prog"))?;
    // XDP_ATTACHED_DRV, _SKB, _HW, _MULTI (linux/if_link.h).
    let mode = match xdp.get("mode").and_then(|m| m.as_u64()) {
        Some(1) => "native",
        Some(2) => "skb",
        Some(3) => "offload",
        _ => "several",
    };
    Some(AttachedXdp {
        id: u32::try_from(prog.get("id")?.as_u64()?).ok()?,
        name: prog
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string(),
        mode,
    })
}

/// The processes holding BPF program `id` open (its program or link file descriptor), as
/// `PID (command)`, from `/proc/*/fdinfo`: who to stop when an interface is taken. Empty when
/// nobody does (a netlink attachment outlives its loader) or /proc cannot be read.
pub fn holders_of_program(id: u32) -> Vec<String> {
    let want = format!("prog_id:\t{id}");
    let mut holders = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_to_string(fd.path()).is_ok_and(|info| info.lines().any(|l| l == want))
        });
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            holders.push(format!("{pid} ({})", comm.trim()));
        }
    }
    holders
}

/// Why attaching to `iface` failed, when the cause is that it already has an XDP program:
/// which, who holds it, and what to do. `None` when it has none (the failure is something
/// else).
pub fn occupied_by(iface: &str) -> Option<String> {
    let attached = attached_xdp(iface).ok()??;
    let holders = holders_of_program(attached.id);
    let held = if holders.is_empty() {
        let off = match attached.mode {
            "skb" => "xdpgeneric",
            "native" => "xdpdrv",
            "offload" => "xdpoffload",
            _ => "xdp",
        };
        format!(
            "no process holds it, so it was attached through netlink (ip link, xdp-loader, \
             xdp-filter) and stays until removed: `ip link set dev {iface} {off} off` detaches it"
        )
    } else {
        format!(
            "held by {}: stop that first (xdp-user detaches on SIGINT)",
            holders.join(", ")
        )
    };
    Some(format!(
        "{iface} already has an XDP program attached ({attached}); one program per interface, \
         and this one was not replaced: {held}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_there() {
        let mut lo = IfaceWatch::new("lo").unwrap();
        assert_eq!(lo.index, 1, "loopback is always index 1");
        assert_eq!(lo.poll().unwrap(), vec![]);
        assert!(lo.link.as_ref().is_some_and(Link::is_up), "{:?}", lo.link);
    }

    #[test]
    fn no_such_interface_is_a_clear_error() {
        let e = IfaceWatch::new("nosuch0").unwrap_err();
        assert!(
            format!("{e:#}").contains("no interface named `nosuch0`"),
            "{e:#}"
        );
    }

    #[test]
    fn an_index_that_names_nothing_is_gone() {
        // Indexes are ints counted up from 1: none is this high.
        let mut gone = IfaceWatch {
            name: "ghost0".into(),
            index: i32::MAX as u32,
            link: None,
        };
        assert_eq!(
            gone.poll().unwrap_err().to_string(),
            "interface ghost0 went away (deleted, or moved to another network namespace)"
        );
    }

    #[test]
    fn link_changes() {
        let link = |operstate: &str, mtu| Link {
            operstate: operstate.into(),
            mtu,
        };
        assert_eq!(changes(&link("up", 1500), &link("up", 1500)), vec![]);
        assert_eq!(
            changes(&link("up", 1500), &link("lowerlayerdown", 1500)),
            vec![LinkChange::Down {
                operstate: "lowerlayerdown".into()
            }]
        );
        assert_eq!(
            changes(&link("down", 1500), &link("up", 3000)),
            vec![
                LinkChange::Up,
                LinkChange::Mtu {
                    from: 1500,
                    to: 3000
                }
            ]
        );
        // Loopback reports "unknown" and passes traffic: that is up.
        assert_eq!(changes(&link("unknown", 65536), &link("up", 65536)), vec![]);
    }

    #[test]
    fn the_attached_program_from_ip_link_json() {
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(
            attached_from_json(&json(r#"[{"ifname":"dut0","mtu":1500}]"#)),
            None
        );
        // `ip -d -j link show dev dut0` with xdp-user's program in native mode (trimmed).
        let one = r#"[{"ifname":"dut0","xdp":{"mode":1,"prog":{"id":25763,"name":"xdp_filter",
            "tag":"967073f1382f007b","jited":1},"attached":[{"mode":1,"prog":{"id":25763,
            "name":"xdp_filter"}}]}}]"#;
        let want = AttachedXdp {
            id: 25763,
            name: "xdp_filter".into(),
            mode: "native",
        };
        assert_eq!(attached_from_json(&json(one)), Some(want.clone()));
        assert_eq!(want.to_string(), "id 25763 `xdp_filter` in native mode");
        // Several modes at once (XDP_ATTACHED_MULTI): no top-level `prog`, the list names them.
        let multi = r#"[{"ifname":"dut0","xdp":{"mode":4,"attached":[{"mode":2,"prog":{"id":7,
            "name":"xdp_dispatcher"}},{"mode":1,"prog":{"id":9,"name":"other"}}]}}]"#;
        assert_eq!(
            attached_from_json(&json(multi)),
            Some(AttachedXdp {
                id: 7,
                name: "xdp_dispatcher".into(),
                mode: "several",
            })
        );
    }
}
