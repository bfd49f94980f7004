//! Packet logic shared by every data path of the toolkit: the AF_XDP loop in `xdp-user`, the
//! DPDK application, and (for [`abi`] only) the XDP program itself.
//!
//! - [`parse`](mod@parse): Ethernet (up to three VLAN tags), ARP, IPv4, IPv6 (a bounded extension-header
//!   walk), fragments, TCP, UDP, ICMPv4, ICMPv6, on top of etherparse's zero-copy slices, into a
//!   small [`parse::Headers`] value: the toolkit's one definition of a frame's class
//!   (`spec/classifier.md`).
//! - [`filter`]: the classifier's view of a frame as the XDP filter sees it (class, addresses,
//!   protocol class, ports, ICMP type, fragment kind): the model the eBPF program is tested
//!   against.
//! - [`echo`]: the in-place echo responder (ICMP/ICMPv6 echo, UDP echo, ARP and neighbour
//!   discovery for configured addresses) and the `reflect` benchmark mode.
//! - [`counter`]: per-protocol counters, a fixed-capacity per-flow table, and the counters of
//!   a poll loop.
//! - [`datapath`]: the per-frame step every poll loop shares (parse, count, answer).
//! - [`neighbour`]: the ARP request and neighbour solicitation that ask for a neighbour's MAC
//!   address, and the reading of the answer.
//! - [`checksum`]: RFC 1071 checksums and RFC 1624 incremental updates.
//! - [`abi`]: the `#[repr(C)]` types exchanged with the eBPF program through maps.
//! - [`verify`]: checksum verification independent of our own code, for tests and diagnostics.
//! - [`fixtures`]: real frames captured from the Linux stack, and their expected replies.
//! - [`attached`] (`cli`): the XDP program an interface already has, and who holds it, so
//!   that neither data path replaces or removes somebody else's.
//! - [`interface`] (`cli`): an interface's addresses and gateway, and routes and neighbours,
//!   as iproute2 shows them.
//! - [`capture`] (`capture`): what a poll loop received and sent, through a lock-free ring to a
//!   writer thread, as pcapng.
//! - [`metrics`] (`metrics`): the Prometheus / OpenMetrics endpoint every binary serves with
//!   `--metrics ADDR:PORT`, rendering the counter families its statistics thread publishes.
//! - [`craft`] (`std`): a seeded PRNG, header builders and a generator of hostile and
//!   well-formed random frames, for tests.
//!
//! Nothing here allocates per packet, logs, or panics on any input: every function that takes
//! bytes from the wire returns a verdict or an error instead. (`craft` is a test helper and
//! allocates the frames it builds.) The crate is `no_std`; the `std`
//! feature (on by default) adds `std::error::Error` impls and heap-backed constructors.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

pub mod abi;
#[cfg(feature = "cli")]
pub mod attached;
#[cfg(feature = "capture")]
pub mod capture;
pub mod checksum;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "parse")]
pub mod counter;
#[cfg(feature = "std")]
pub mod craft;
#[cfg(feature = "parse")]
pub mod datapath;
#[cfg(feature = "parse")]
pub mod echo;
#[cfg(feature = "parse")]
pub mod filter;
#[cfg(feature = "parse")]
pub mod fixtures;
#[cfg(feature = "cli")]
pub mod interface;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "parse")]
pub mod neighbour;
#[cfg(feature = "parse")]
pub mod parse;
#[cfg(feature = "parse")]
pub mod selfcheck;
#[cfg(feature = "parse")]
pub mod verify;

#[cfg(feature = "parse")]
pub use parse::{Headers, Malformed, parse};
