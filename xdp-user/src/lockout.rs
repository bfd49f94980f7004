//! Rules that would lock the host out are refused, as a firewall front end asks before it
//! does (ufw's "may disrupt existing ssh connections"): an engineer who filters the interface
//! they are logged in through must not lock themselves out by a typo or a `--default drop`.
//! Two ways to be locked out are checked: an SSH session cut (now, or when the neighbours
//! forget the host), and an address with a lifetime (DHCP, router advertisements) that could
//! not be renewed (later, when it runs out).
//!
//! The sessions are the one this process runs in (`SSH_CONNECTION`, which `sudo` may drop)
//! and every established TCP connection to port 22 or to that session's server port on one of
//! the interface's addresses (`/proc/net/tcp`, `/proc/net/tcp6`, of this network namespace).
//! Each is decided by the rules' reference semantics (`rules::first_match`, the model the
//! XDP program is tested against) for a segment from the client to the server, and for what
//! keeps the host reachable on the link: ARP (the non-IP policy) or IPv6 neighbour discovery.

use crate::iface::Address;
use crate::rules::{PacketFields, Policy, Rule, first_match};
use anyhow::{Result, bail};
use packet::abi::{Action, proto_class};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A neighbour on the link that neighbour discovery, router advertisements and DHCPv6 come
/// from, for the checks: a link-local address (fe80::1), since their real one is not known.
const A_ROUTER: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));

/// An SSH connection into this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    /// The session this process runs in (`SSH_CONNECTION`).
    pub ours: bool,
}

/// What the data path does with what the rules send to AF_XDP: `load` has no sockets (the
/// program passes such packets to the kernel), `run`'s loop takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XskMeans {
    Pass,
    Taken,
}

/// Fails, saying what would be lost, which rule (or default) does it and what fixes it, when
/// `rules` and `policy` would cut an SSH session into `addresses` (the interface's) or keep
/// one of them with a lifetime from being renewed (`gateway`: the interface's IPv4 gateway,
/// taken to be the DHCP server). `force` turns the refusal into a warning.
pub fn check(
    rules: &[Rule],
    policy: Policy,
    addresses: &[Address],
    gateway: Option<IpAddr>,
    xsk: XskMeans,
    force: bool,
) -> Result<()> {
    let local: Vec<IpAddr> = addresses.iter().map(|a| a.addr).collect();
    for s in sessions(&local) {
        let Some((why, fix)) = cut_by(rules, policy, &s, xsk) else {
            continue;
        };
        let whose = if s.ours {
            "the SSH session this runs in"
        } else {
            "an SSH session"
        };
        let what = format!(
            "{whose} ({}:{} -> {}:{}) would be cut: {why}",
            s.client, s.client_port, s.server, s.server_port
        );
        refuse(&what, &fix, force)?;
    }
    for a in addresses {
        let Some(secs) = a.lease_secs else { continue };
        let Some((why, fix)) = lease_lost_by(rules, policy, a.addr, gateway, xsk) else {
            continue;
        };
        let what = format!(
            "the address {} (valid for {secs} s more, then renewed) would not be renewed: {why}, \
             and the host would lose it",
            a.addr
        );
        refuse(&what, fix, force)?;
    }
    Ok(())
}

/// Fails with `what` and `fix`, or with `force` only says `what`.
fn refuse(what: &str, fix: &str, force: bool) -> Result<()> {
    if force {
        packet::stderr!("xdp-user: --force: {what}");
        return Ok(());
    }
    bail!("{what}. {fix}, or give --force to apply the rules anyway")
}

/// Why `rules` would keep an address with a lifetime from being renewed, and the rules that
/// fix it: for IPv4 the DHCP server's replies (UDP 67 to 68, to the address or broadcast,
/// from the gateway where there is one); for IPv6 the router advertisements it was configured
/// from (ICMPv6 134 to all nodes) and DHCPv6 replies (UDP 547 to 546).
fn lease_lost_by(
    rules: &[Rule],
    policy: Policy,
    addr: IpAddr,
    gateway: Option<IpAddr>,
    xsk: XskMeans,
) -> Option<(String, &'static str)> {
    let udp =
        |src, sport, dst, dport| PacketFields::segment(proto_class::UDP, src, sport, dst, dport);
    // What renewing needs to receive: each packet, what it is, and the rule that passes it.
    let needs: Vec<(PacketFields, String, &'static str)> = match addr {
        IpAddr::V4(_) => {
            let server = gateway
                .filter(IpAddr::is_ipv4)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            [addr, IpAddr::V4(Ipv4Addr::BROADCAST)]
                .into_iter()
                .map(|dst| {
                    (
                        udp(server, 67, dst, 68),
                        format!("the DHCP server's replies (UDP 67 -> 68 to {dst})"),
                        "Put a rule that passes them first, e.g. --rule \"proto udp sport 67 \
                         dport 68 action pass\"",
                    )
                })
                .collect()
        }
        IpAddr::V6(_) => {
            let all_nodes = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
            vec![
                (
                    PacketFields::icmpv6(A_ROUTER, all_nodes, 134),
                    "router advertisements (ICMPv6 type 134 to ff02::1)".to_string(),
                    "Put a rule that passes them first, e.g. --rule \"proto icmpv6 icmp-type \
                     134 action pass\"",
                ),
                (
                    udp(A_ROUTER, 547, addr, 546),
                    "DHCPv6 replies (UDP 547 -> 546)".to_string(),
                    "Put a rule that passes them first, e.g. --rule \"proto udp sport 547 \
                     dport 546 action pass\"",
                ),
            ]
        }
    };
    needs.into_iter().find_map(|(p, what, fix)| {
        refused(rules, policy, &p, xsk).map(|why| (format!("{why} {what}"), fix))
    })
}

/// Why `rules` would cut `s`, or `None` when they pass it: its own segments, and what the
/// host needs to stay reachable on the link (ARP for IPv4, which is not IP and takes the
/// non-IP policy; neighbour discovery for IPv6, which is ICMPv6 and takes the rules). Without
/// those the session ends a little later, when the neighbours' entries for the host expire.
fn cut_by(rules: &[Rule], policy: Policy, s: &Session, xsk: XskMeans) -> Option<(String, String)> {
    let tcp = PacketFields::segment(
        proto_class::TCP,
        s.client,
        s.client_port,
        s.server,
        s.server_port,
    );
    if let Some(why) = refused(rules, policy, &tcp, xsk) {
        let bits = if s.client.is_ipv4() { 32 } else { 128 };
        let fix = format!(
            "Put a rule that passes it first, e.g. --rule \"src {}/{bits} proto tcp dport {} \
             action pass\"",
            s.client, s.server_port
        );
        return Some((format!("{why} it"), fix));
    }
    let server = match s.server {
        IpAddr::V4(_) => {
            return (policy.not_ip == Action::Drop).then(|| {
                (
                    "--non-ip drop drops ARP: the host stops answering its neighbours, and the \
                     session ends when their entries for it expire"
                        .to_string(),
                    "Give --non-ip pass".to_string(),
                )
            });
        }
        IpAddr::V6(server) => server,
    };
    let solicited = packet::neighbour::solicited_node(server);
    for src in [s.client, A_ROUTER] {
        for (dst, icmp_type) in [(server, 136), (server, 135), (solicited, 135)] {
            let nd = PacketFields::icmpv6(src, IpAddr::V6(dst), icmp_type);
            if let Some(why) = refused(rules, policy, &nd, xsk) {
                return Some((
                    format!(
                        "{why} neighbour discovery (ICMPv6 type {icmp_type} from {src} to \
                         {dst}): the host stops answering its neighbours, and the session ends \
                         when their entries for it expire"
                    ),
                    "Put rules that pass it first, e.g. --rule \"proto icmpv6 icmp-type 135 \
                     action pass\" --rule \"proto icmpv6 icmp-type 136 action pass\""
                        .to_string(),
                ));
            }
        }
    }
    None
}

/// Who keeps `p` from the kernel ("rule `...` drops", "the default action (no rule matches)
/// sends to the AF_XDP loop ..."), or `None` if it reaches the kernel.
fn refused(rules: &[Rule], policy: Policy, p: &PacketFields, xsk: XskMeans) -> Option<String> {
    let (action, by) = match first_match(rules, p) {
        Some(i) => (rules[i].action, format!("rule `{}`", rules[i].text)),
        None => (
            policy.default,
            "the default action (no rule matches)".to_string(),
        ),
    };
    match (action, xsk) {
        (Action::Drop, _) => Some(format!("{by} drops")),
        (Action::Xsk, XskMeans::Taken) => Some(format!(
            "{by} sends to the AF_XDP loop, which does not answer,"
        )),
        _ => None,
    }
}

/// The SSH sessions into `local`: ours, and the established connections to port 22 (or our
/// session's server port).
pub fn sessions(local: &[IpAddr]) -> Vec<Session> {
    let ours = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|v| parse_ssh_connection(&v));
    let mut ports = vec![22];
    if let Some(o) = ours {
        ports.push(o.server_port);
    }
    let mut out: Vec<Session> = ours
        .into_iter()
        .filter(|s| local.contains(&s.server))
        .collect();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for s in established(&text) {
            let known = out.iter().any(|o| {
                (o.client, o.client_port, o.server, o.server_port)
                    == (s.client, s.client_port, s.server, s.server_port)
            });
            if ports.contains(&s.server_port) && local.contains(&s.server) && !known {
                out.push(s);
            }
        }
    }
    out
}

/// `SSH_CONNECTION`: "client_ip client_port server_ip server_port".
fn parse_ssh_connection(v: &str) -> Option<Session> {
    let mut w = v.split_whitespace();
    let client = unmap(w.next()?.parse().ok()?);
    let client_port = w.next()?.parse().ok()?;
    let server = unmap(w.next()?.parse().ok()?);
    let server_port = w.next()?.parse().ok()?;
    Some(Session {
        client,
        client_port,
        server,
        server_port,
        ours: true,
    })
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as IPv4.
fn unmap(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// The established connections in a `/proc/net/tcp` or `tcp6` table, local end as server.
fn established(table: &str) -> Vec<Session> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; st 01 is ESTABLISHED.
            if f.get(3) != Some(&"01") {
                return None;
            }
            let (server, server_port) = proc_endpoint(f.get(1)?)?;
            let (client, client_port) = proc_endpoint(f.get(2)?)?;
            Some(Session {
                client,
                client_port,
                server,
                server_port,
                ours: false,
            })
        })
        .collect()
}

/// `0200A8C0:0016` (IPv4) or 32 hex digits (IPv6), each 32-bit word in host (little-endian)
/// order, then the port in hex.
fn proc_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_le_bytes(),
        )
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            unmap(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse_rule;

    const PASS_ALL: Policy = Policy {
        default: Action::Pass,
        malformed: Action::Drop,
        unparsed: Action::Drop,
        not_ip: Action::Pass,
    };

    fn session() -> Session {
        parse_ssh_connection("198.18.0.1 40000 198.18.0.2 22").unwrap()
    }

    #[test]
    fn ssh_connection_parses() {
        let s = session();
        assert_eq!(s.client, IpAddr::from([198, 18, 0, 1]));
        assert_eq!((s.client_port, s.server_port), (40000, 22));
        let mapped = parse_ssh_connection("::ffff:10.0.0.1 5 ::ffff:10.0.0.2 2222").unwrap();
        assert_eq!(mapped.server, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(parse_ssh_connection("10.0.0.1 5"), None);
    }

    /// Lines in the format Linux writes (the integration test in `tests/load.rs` reads the
    /// real table): an established IPv4 connection 198.18.0.1:40000 -> 198.18.0.2:22, a
    /// listener, and in tcp6 an IPv4-mapped connection and an IPv6 one.
    #[test]
    fn proc_tables_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
                   1: 020012C6:0016 010012C6:9C40 01 00000000:00000000 02:000A3B5C 00000000     0        0 2 4 0 20 4 30 10 -1\n";
        let s = established(tcp);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].client, s[0].client_port),
            (IpAddr::from([198, 18, 0, 1]), 40000)
        );
        assert_eq!(
            (s[0].server, s[0].server_port),
            (IpAddr::from([198, 18, 0, 2]), 22)
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
                    0: 0000000000000000FFFF0000020012C6:0016 0000000000000000FFFF0000010012C6:9C40 01 0\n\
                    1: B80D0120000000000000000002000000:0016 B80D0120000000000000000001000000:9C41 01 0\n";
        let s = established(tcp6);
        assert_eq!(s[0].server, IpAddr::from([198, 18, 0, 2]));
        assert_eq!(s[1].server, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(s[1].client, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(s[1].client_port, 0x9c41);
    }

    #[test]
    fn what_cuts_a_session_and_what_does_not() {
        let s = session();
        let rules = |texts: &[&str]| -> Vec<Rule> {
            texts.iter().map(|t| parse_rule(t).unwrap()).collect()
        };
        let drop_all = Policy {
            default: Action::Drop,
            ..PASS_ALL
        };
        // Nothing, or other traffic: passed.
        assert_eq!(cut_by(&[], PASS_ALL, &s, XskMeans::Pass), None);
        let r = rules(&["proto udp action drop", "proto tcp dport 80 action drop"]);
        assert_eq!(cut_by(&r, PASS_ALL, &s, XskMeans::Taken), None);
        // A default of drop, a rule that drops it, or the loop taking it: cut, and why.
        let (why, _) = cut_by(&[], drop_all, &s, XskMeans::Pass).unwrap();
        assert!(why.contains("the default action"), "{why}");
        let r = rules(&["proto tcp action drop"]);
        let (why, _) = cut_by(&r, PASS_ALL, &s, XskMeans::Pass).unwrap();
        assert!(
            why.contains("rule `proto tcp action drop` drops it"),
            "{why}"
        );
        let r = rules(&["proto tcp action xsk"]);
        assert!(cut_by(&r, PASS_ALL, &s, XskMeans::Taken).is_some());
        assert_eq!(cut_by(&r, PASS_ALL, &s, XskMeans::Pass), None);
        // A pass rule before the drop saves it.
        let r = rules(&[
            "src 198.18.0.1/32 proto tcp dport 22 action pass",
            "action drop",
        ]);
        assert_eq!(cut_by(&r, drop_all, &s, XskMeans::Pass), None);
        // Dropping ARP cuts an IPv4 session too, a little later.
        let no_arp = Policy {
            not_ip: Action::Drop,
            ..PASS_ALL
        };
        let (why, fix) = cut_by(&[], no_arp, &s, XskMeans::Pass).unwrap();
        assert!(why.contains("--non-ip drop drops ARP"), "{why}");
        assert_eq!(fix, "Give --non-ip pass");
        // Over IPv6, neighbour discovery is ICMPv6: a default of drop takes it, unless a rule
        // passes it.
        let s6 = parse_ssh_connection("2001:db8::1 40000 2001:db8::2 22").unwrap();
        let ssh6 = rules(&["proto tcp dport 22 action pass"]);
        let (why, fix) = cut_by(&ssh6, drop_all, &s6, XskMeans::Pass).unwrap();
        assert!(fix.contains("icmp-type 135 action pass"), "{fix}");
        assert!(
            why.contains("the default action (no rule matches) drops neighbour discovery"),
            "{why}"
        );
        let r = rules(&["proto tcp dport 22 action pass", "proto icmpv6 action pass"]);
        assert_eq!(cut_by(&r, drop_all, &s6, XskMeans::Pass), None);
        // ... to the solicited-node group as well as to the address itself.
        let r = rules(&[
            "proto tcp dport 22 action pass",
            "dst 2001:db8::2/128 proto icmpv6 action pass",
        ]);
        let (why, _) = cut_by(&r, drop_all, &s6, XskMeans::Pass).unwrap();
        assert!(why.contains("to ff02::1:ff00:2"), "{why}");
    }

    #[test]
    fn what_keeps_a_leased_address_from_being_renewed() {
        let rules = |texts: &[&str]| -> Vec<Rule> {
            texts.iter().map(|t| parse_rule(t).unwrap()).collect()
        };
        let drop_all = Policy {
            default: Action::Drop,
            ..PASS_ALL
        };
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        let gw: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        assert_eq!(lease_lost_by(&[], PASS_ALL, v4, gw, XskMeans::Pass), None);
        let (why, fix) = lease_lost_by(&[], drop_all, v4, gw, XskMeans::Pass).unwrap();
        assert!(
            why.contains("DHCP server's replies (UDP 67 -> 68 to 10.0.0.5)"),
            "{why}"
        );
        assert!(
            fix.contains("proto udp sport 67 dport 68 action pass"),
            "{fix}"
        );
        // Passed to the address but not to broadcast (where offers may go): still refused.
        let r = rules(&["dst 10.0.0.5/32 proto udp sport 67 dport 68 action pass"]);
        let (why, _) = lease_lost_by(&r, drop_all, v4, gw, XskMeans::Pass).unwrap();
        assert!(why.contains("to 255.255.255.255"), "{why}");
        let r = rules(&["proto udp sport 67 dport 68 action pass"]);
        assert_eq!(lease_lost_by(&r, drop_all, v4, gw, XskMeans::Pass), None);
        // run's loop takes all UDP by default: a leased address on its interface is at risk.
        let r = rules(&["proto udp action xsk"]);
        assert!(lease_lost_by(&r, PASS_ALL, v4, gw, XskMeans::Taken).is_some());
        // IPv6: router advertisements, then DHCPv6.
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        let (why, _) = lease_lost_by(&[], drop_all, v6, None, XskMeans::Pass).unwrap();
        assert!(why.contains("router advertisements"), "{why}");
        let r = rules(&["proto icmpv6 icmp-type 134 action pass"]);
        let (why, _) = lease_lost_by(&r, drop_all, v6, None, XskMeans::Pass).unwrap();
        assert!(why.contains("DHCPv6"), "{why}");
    }
}
