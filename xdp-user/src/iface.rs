//! Noticing that the interface a data path runs on went away (deleted, or moved to another
//! network namespace): the XDP program goes with it, and counting zeros forever would hide it.
//!
//! The interface is remembered by its index, which the kernel never reuses for another device
//! while this one lives: a rename keeps the index (and is not "gone"); deleting the device or
//! moving it to another namespace makes the index name nothing here.

use anyhow::{Result, bail};

/// An interface, by name and index, to check on.
#[derive(Debug)]
pub struct IfaceWatch {
    name: String,
    index: u32,
}

impl IfaceWatch {
    /// Watches the interface called `name` now; fails if there is none.
    pub fn new(name: &str) -> Result<IfaceWatch> {
        Ok(IfaceWatch {
            name: name.to_string(),
            index: crate::xdp::if_index(name)?,
        })
    }

    /// Fails when the interface no longer exists in this namespace. A rename is fine: the
    /// index still names the same device.
    pub fn check(&self) -> Result<()> {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_there() {
        let lo = IfaceWatch::new("lo").unwrap();
        assert_eq!(lo.index, 1, "loopback is always index 1");
        lo.check().unwrap();
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
        let gone = IfaceWatch {
            name: "ghost0".into(),
            index: i32::MAX as u32,
        };
        assert_eq!(
            gone.check().unwrap_err().to_string(),
            "interface ghost0 went away (deleted, or moved to another network namespace)"
        );
    }
}
