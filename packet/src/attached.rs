//! The XDP program an interface already has, and who holds it (the `cli` feature).
//!
//! An interface runs one XDP program. Both data paths refuse an interface that has one rather
//! than fight over it: the kernel's own answers (EBUSY, EEXIST) name neither the program nor
//! its owner, and DPDK's `net_af_xdp`, failing on such an interface, removes the program it
//! found there when it closes the port (a native-mode netlink attachment such as xdp-filter's):
//! the interface would be left unfiltered.

/// The XDP program attached to an interface (by anyone), as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedXdp {
    pub id: u32,
    pub name: String,
    /// `native`, `skb`, `offload` or `several` (more than one mode at once).
    pub mode: &'static str,
}

impl AttachedXdp {
    /// The `ip link set dev IFACE KEYWORD off` keyword that detaches a netlink attachment in
    /// this mode.
    pub fn ip_link_keyword(&self) -> &'static str {
        match self.mode {
            "skb" => "xdpgeneric",
            "native" => "xdpdrv",
            "offload" => "xdpoffload",
            _ => "xdp",
        }
    }
}

impl std::fmt::Display for AttachedXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "id {} `{}` in {} mode", self.id, self.name, self.mode)
    }
}

/// The XDP program attached to `iface`, from `ip -d -j link` (iproute2 reads the netlink
/// attribute; a BPF link and a netlink attachment look the same there). `None` when there is
/// none.
pub fn attached_xdp(iface: &str) -> Result<Option<AttachedXdp>, String> {
    let out = std::process::Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .map_err(|e| format!("could not run `ip` (install iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "no interface {iface} here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`ip -d -j link show dev {iface}` printed no JSON: {e}"))?;
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

/// What to tell a user whose interface already has an XDP program: which, who holds it, and
/// what to do; `None` when it has none (or it cannot be told).
pub fn occupied_by(iface: &str) -> Option<String> {
    let attached = attached_xdp(iface).ok()??;
    let holders = holders_of_program(attached.id);
    let held = if holders.is_empty() {
        let off = attached.ip_link_keyword();
        format!(
            "no process holds it, so it was attached through netlink (ip link, xdp-loader, \
             xdp-filter) and stays until removed: `ip link set dev {iface} {off} off` detaches it"
        )
    } else {
        format!("held by {}: stop that first", holders.join(", "))
    };
    Some(format!(
        "{iface} already has an XDP program attached ({attached}), and it was left in place: \
         {held}"
    ))
}

/// Detaches the netlink-attached XDP program `id` from `iface`, if it is still the one
/// attached there; `Ok(false)` when it is not (gone already, or another program is there now,
/// which is left alone).
pub fn detach_program(iface: &str, id: u32) -> Result<bool, String> {
    let Some(attached) = attached_xdp(iface)? else {
        return Ok(false);
    };
    if attached.id != id {
        return Ok(false);
    }
    let out = std::process::Command::new("ip")
        .args([
            "link",
            "set",
            "dev",
            iface,
            attached.ip_link_keyword(),
            "off",
        ])
        .output()
        .map_err(|e| format!("could not run `ip` (install iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "could not detach XDP program {id} from {iface}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
