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

pub use packet::interface::{Address, ipv4_gateway};

/// The interface's IP addresses now, IPv4 first ([`packet::interface::addresses`]).
pub fn addresses(name: &str) -> Result<Vec<Address>> {
    packet::interface::addresses(name).map_err(anyhow::Error::msg)
}

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
        packet::interface::operstate_passes_traffic(&self.operstate)
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

/// The state of the interface called `name` now, from sysfs.
fn read_link_named(name: &str) -> Result<Link> {
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

    /// The link at the last look (None if it could not be read).
    pub fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    /// The MTU at the last look (None if it could not be read).
    pub fn mtu(&self) -> Option<u32> {
        self.link.as_ref().map(|l| l.mtu)
    }

    /// The interface's state now, from sysfs (`ip netns exec` gives each namespace its own
    /// /sys, so this is the device of our namespace), under its current name. A rename
    /// between looking the name up and reading its files takes the old path away: then the
    /// name is looked up again and the files read under the new one.
    fn read_link(&self) -> Result<Link> {
        let mut name = self.current_name()?;
        for _ in 0..3 {
            match read_link_named(&name) {
                Ok(link) => return Ok(link),
                Err(e) => {
                    // Fails here if the interface went away meanwhile.
                    let now = self.current_name()?;
                    if now == name {
                        return Err(e);
                    }
                    name = now;
                }
            }
        }
        read_link_named(&name)
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
}
