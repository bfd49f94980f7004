//! What the host's network configuration says about an interface (the `cli` feature): its
//! addresses, its IPv4 gateway, and iproute2's JSON (`ip -j`) to read routes and neighbours
//! with, so that both binaries see an interface the way `ip` shows it to the engineer.

use std::net::IpAddr;

/// Runs `ip -j ARGS` and returns its JSON, or `ip`'s own message as the error.
pub fn ip_json(args: &[&str]) -> Result<serde_json::Value, String> {
    let out = std::process::Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .map_err(|e| format!("could not run `ip` (iproute2): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`ip -j {}` printed no JSON: {e}", args.join(" ")))
}

/// An IP address of an interface, as `ip addr` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub addr: IpAddr,
    /// Scope `global` (not link-local nor host).
    pub global: bool,
    /// Seconds it stays valid, for an address with a lifetime (`dynamic`: leased by DHCP or
    /// configured from router advertisements, to be renewed before it runs out).
    pub lease_secs: Option<u64>,
}

/// The interface's IP addresses now (`ip -j addr show dev NAME`), IPv4 first, in the order
/// `ip` lists them.
pub fn addresses(name: &str) -> Result<Vec<Address>, String> {
    let links = ip_json(&["addr", "show", "dev", name])
        .map_err(|e| format!("could not read {name}'s addresses: {e}"))?;
    let mut found: Vec<Address> = links[0]["addr_info"]
        .as_array()
        .map(|infos| {
            infos
                .iter()
                .filter_map(|i| {
                    Some(Address {
                        addr: i["local"].as_str()?.parse().ok()?,
                        global: i["scope"].as_str() == Some("global"),
                        lease_secs: (i["dynamic"].as_bool() == Some(true))
                            .then(|| i["valid_life_time"].as_u64())
                            .flatten(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|a| a.addr.is_ipv6());
    Ok(found)
}

/// The IPv4 default gateway through the interface (`ip -j -4 route show default dev NAME`),
/// if it has one: where a DHCP lease usually comes from.
pub fn ipv4_gateway(name: &str) -> Option<IpAddr> {
    let routes = ip_json(&["-4", "route", "show", "default", "dev", name]).ok()?;
    routes[0]["gateway"].as_str()?.parse().ok()
}

/// `02:00:00:00:00:02` as bytes ([`format_mac`] the other way).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

/// `[2, 0, 0, 0, 0, 2]` as `02:00:00:00:00:02`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether an interface whose `operstate` (RFC 2863, as sysfs spells it; `ip link` prints it in
/// capitals after "state") is `operstate` passes traffic: `up`, or `unknown` (loopback and
/// some virtual devices, which pass traffic without reporting a carrier). `down`,
/// `lowerlayerdown` (a veth whose peer is down), `dormant` and the rest do not.
pub fn operstate_passes_traffic(operstate: &str) -> bool {
    matches!(operstate, "up" | "unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_up_and_unknown_pass_traffic() {
        for (state, passes) in [
            ("up", true),
            ("unknown", true),
            ("down", false),
            ("lowerlayerdown", false),
            ("dormant", false),
            ("notpresent", false),
            ("", false),
        ] {
            assert_eq!(operstate_passes_traffic(state), passes, "{state}");
        }
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:00:00:00:0a:ff"),
            Some([2, 0, 0, 0, 0x0a, 0xff])
        );
        assert_eq!(format_mac(&[2, 0, 0, 0, 0x0a, 0xff]), "02:00:00:00:0a:ff");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "zz:00:00:00:00:00",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_has_its_addresses_and_no_gateway() {
        let found = addresses("lo").unwrap();
        assert_eq!(found[0].addr, IpAddr::from([127, 0, 0, 1]));
        assert!(!found[0].global && found[0].lease_secs.is_none());
        assert_eq!(ipv4_gateway("lo"), None);
        assert!(
            addresses("no-such-if0")
                .unwrap_err()
                .contains("no-such-if0")
        );
    }
}
