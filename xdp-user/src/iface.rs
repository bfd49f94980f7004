//! Noticing that the interface a data path runs on went away (deleted, or moved to another
//! network namespace): the XDP program goes with it, and counting zeros forever would hide it.

use anyhow::{Result, bail};

/// An interface, by name and index, to check on.
#[derive(Debug)]
pub struct IfaceWatch {
    name: String,
    index: u32,
}

impl IfaceWatch {
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
            bail!(
                "interface {} went away (deleted, or moved to another network namespace)",
                self.name
            );
        }
        Ok(())
    }
}
