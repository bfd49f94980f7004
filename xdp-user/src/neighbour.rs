//! The MAC address to send to, found as the kernel would find it: the route to the target
//! out of the interface gives the next hop (the target itself when it is on the link, else
//! the gateway); the kernel's neighbour table may know the next hop's MAC address already;
//! otherwise we ask the link, with the ARP request or neighbour solicitation the kernel would
//! send (`packet::neighbour`), on a packet socket of our own.
//!
//! Routes and the neighbour table are read with iproute2 (`ip -j`), as the source address
//! already is: the same answers `ip route get` and `ip neigh` give the engineer.

use anyhow::{Context, Result, bail};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long to wait for an answer to each question, and how many questions to ask (the
/// kernel asks 3 times, a second apart: `ucast_solicit` / `mcast_solicit`, `retrans_time_ms`).
const WAIT_PER_QUESTION: Duration = Duration::from_secs(1);
const QUESTIONS: u32 = 3;

/// Where the MAC address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    KernelTable,
    Answer,
}

/// The next hop to `dst` out of `iface`, and its MAC address.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub next_hop: IpAddr,
    /// The next hop is a gateway, not the target itself.
    pub via_gateway: bool,
    pub mac: [u8; 6],
    pub source: Source,
}

impl Resolved {
    /// For the start-up line: `02:00:00:00:00:02 (198.18.0.2, on the link; ARP reply)`.
    pub fn describe(&self) -> String {
        let how = match (self.source, self.next_hop) {
            (Source::KernelTable, _) => "the kernel's neighbour table",
            (Source::Answer, IpAddr::V4(_)) => "ARP reply",
            (Source::Answer, IpAddr::V6(_)) => "neighbour advertisement",
        };
        let hop = if self.via_gateway {
            format!("gateway {}", self.next_hop)
        } else {
            format!("{}, on the link", self.next_hop)
        };
        let mac = packet::interface::format_mac(&self.mac);
        format!("{mac} ({hop}; {how})")
    }
}

/// Finds the MAC address frames to `dst` must carry out of `iface`, asking from `src_mac` /
/// `src` if the kernel does not know it.
pub fn resolve(iface: &str, src_mac: [u8; 6], src: IpAddr, dst: IpAddr) -> Result<Resolved> {
    let hop = next_hop(iface, dst)?;
    let resolved = |mac, source| Resolved {
        next_hop: hop.addr,
        via_gateway: hop.via_gateway,
        mac,
        source,
    };
    if let Some(mac) = kernel_neighbour(iface, hop.addr)? {
        return Ok(resolved(mac, Source::KernelTable));
    }
    let mac = ask(iface, src_mac, src, hop.addr).map_err(|e| {
        if hop.assumed_on_link {
            e.context(format!(
                "no route to {dst} leads out of {iface}, so it was taken to be on that link"
            ))
        } else {
            e
        }
    })?;
    Ok(resolved(mac, Source::Answer))
}

/// [`packet::interface::ip_json`], its error as `anyhow`'s.
fn ip_json(args: &[&str]) -> Result<serde_json::Value> {
    packet::interface::ip_json(args).map_err(anyhow::Error::msg)
}

/// The next hop to `dst` out of `iface`: the route the kernel would take (`ip route get
/// DST`) when it leaves through `iface`; else the route out of `iface` (`ip route get DST oif
/// IFACE`), where the kernel takes a destination it has no route for to be on the link, as it
/// does for a socket bound to the interface.
fn next_hop(iface: &str, dst: IpAddr) -> Result<Hop> {
    let target = dst.to_string();
    let routed = ip_json(&["route", "get", &target])
        .ok()
        .filter(|r| r[0]["dev"].as_str() == Some(iface));
    let (route, assumed) = match routed {
        Some(r) => (r, false),
        None => {
            let command = format!("ip route get {target} oif {iface}");
            let r = ip_json(&["route", "get", &target, "oif", iface]).with_context(|| {
                format!(
                    "no route to {target} out of {iface} (`{command}`): give the MAC address to \
                     send to with --dst-mac"
                )
            })?;
            (r, true)
        }
    };
    let route = &route[0];
    let dev = route["dev"].as_str().unwrap_or("");
    if route["type"].as_str() == Some("local") || dev == "lo" {
        bail!("{target} is an address of this host: send to another host on {iface}");
    }
    if dev != iface {
        bail!(
            "{target} is reached through {dev}, not {iface} (`ip route get {target} oif \
             {iface}`): send from {dev}, or give the MAC address to send to with --dst-mac"
        );
    }
    let gateway = match route["gateway"].as_str() {
        Some(g) => Some(
            g.parse()
                .with_context(|| format!("`ip route get {target}` names gateway {g}"))?,
        ),
        None => None,
    };
    Ok(Hop {
        addr: gateway.unwrap_or(dst),
        via_gateway: gateway.is_some(),
        assumed_on_link: assumed && gateway.is_none(),
    })
}

/// Where frames to a target go first.
struct Hop {
    addr: IpAddr,
    via_gateway: bool,
    /// No route leads out of the interface: the kernel takes the target to be on the link.
    assumed_on_link: bool,
}

/// The MAC address the kernel's neighbour table holds for `hop` on `iface`, if it holds a
/// usable one (not an entry still being resolved, nor a failed one).
fn kernel_neighbour(iface: &str, hop: IpAddr) -> Result<Option<[u8; 6]>> {
    let entries = ip_json(&["neigh", "show", "to", &hop.to_string(), "dev", iface])
        .context("could not read the neighbour table")?;
    let Some(entries) = entries.as_array() else {
        return Ok(None);
    };
    for e in entries {
        let states: Vec<&str> = e["state"]
            .as_array()
            .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if states.iter().any(|s| matches!(*s, "INCOMPLETE" | "FAILED")) {
            continue;
        }
        if let Some(mac) = e["lladdr"].as_str().and_then(packet::interface::parse_mac) {
            return Ok(Some(mac));
        }
    }
    Ok(None)
}

/// Asks the link for `hop`'s MAC address: an ARP request (IPv4) or a neighbour solicitation
/// (IPv6) from `src_mac` / `src`, up to [`QUESTIONS`] times, [`WAIT_PER_QUESTION`] each.
fn ask(iface: &str, src_mac: [u8; 6], src: IpAddr, hop: IpAddr) -> Result<[u8; 6]> {
    let (question, ether_type, what): (Vec<u8>, u16, &str) = match (src, hop) {
        (IpAddr::V4(s), IpAddr::V4(h)) => (
            packet::neighbour::arp_request(src_mac, s, h).to_vec(),
            packet::parse::ETHER_TYPE_ARP,
            "ARP request",
        ),
        (IpAddr::V6(s), IpAddr::V6(h)) => (
            packet::neighbour::neighbour_solicitation(src_mac, s, h).to_vec(),
            packet::parse::ETHER_TYPE_IPV6,
            "neighbour solicitation",
        ),
        _ => bail!("the source address {src} and the next hop {hop} are of different families"),
    };
    let socket = PacketSocket::bind(iface, ether_type)?;
    let mut buf = [0u8; 2048];
    for _ in 0..QUESTIONS {
        socket
            .send(&question)
            .with_context(|| format!("could not send an {what} for {hop} on {iface}"))?;
        let deadline = Instant::now() + WAIT_PER_QUESTION;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(len) = socket.recv(&mut buf, left)? else {
                break;
            };
            if let Some(mac) = packet::neighbour::answer(&buf[..len], hop) {
                return Ok(mac);
            }
        }
    }
    bail!(
        "no answer from {hop} on {iface} to {QUESTIONS} {what}s in {} s: is it on that link, and \
         up? Give the MAC address to send to with --dst-mac",
        QUESTIONS as u64 * WAIT_PER_QUESTION.as_secs()
    )
}

/// A packet socket bound to one interface and one ether type.
struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    fn bind(iface: &str, ether_type: u16) -> Result<PacketSocket> {
        let index = crate::xdp::if_index(iface)?;
        let protocol = ether_type.to_be();
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("could not open a packet socket to ask for the target's MAC address");
        }
        // SAFETY: `fd` is a socket we just opened and own; OwnedFd closes it once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value to fill in.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("could not bind a packet socket to {iface}"));
        }
        Ok(PacketSocket { fd })
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: `frame` is valid for reads of its length for the duration of the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame, or `None` when `wait` passes without one.
    fn recv(&self, buf: &mut [u8], wait: Duration) -> Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, and its count.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Some(0));
            }
            return Err(e).context("poll on the packet socket");
        }
        if ready == 0 {
            return Ok(None);
        }
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) {
                return Ok(Some(0));
            }
            return Err(e).context("recv on the packet socket");
        }
        Ok(Some(n as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_line_says_where_the_address_came_from() {
        let r = Resolved {
            next_hop: "198.18.0.254".parse().unwrap(),
            via_gateway: true,
            mac: [2, 0, 0, 0, 0, 2],
            source: Source::Answer,
        };
        assert_eq!(
            r.describe(),
            "02:00:00:00:00:02 (gateway 198.18.0.254; ARP reply)"
        );
    }
}
