//! The interface goes away under a running data path: deleted, or moved to another network
//! namespace. The XDP program goes with it, so counting on would report zeros forever; `load`
//! and `run` must say so and exit with status 1 within a second or two, leaving nothing
//! behind. A rename is not going away. Needs root; fails with a clear message without it.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;
use xtask::testbed::{DUT_IF, Options, PEER_IF, Testbed};

fn testbed() -> Testbed {
    require_root();
    Testbed::new(&Options::default()).expect("testbed")
}

fn start(tb: &Testbed, subcommand: &str) -> Loader {
    let args: &[&str] = match subcommand {
        "load" => &[
            "--iface",
            DUT_IF,
            "--rule",
            "proto udp dport 6100 action drop",
            "--duration",
            "30",
        ],
        _ => &["--iface", DUT_IF, "--duration", "30"],
    };
    Loader::start_cmd(tb, subcommand, args)
}

/// `ip -d link show DEV` in `ns`: `None` if there is no such device there.
fn link(ns: &str, dev: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", dev])
        .output()
        .unwrap();
    out.status.success().then(|| text(&out.stdout))
}

fn has_xdp(link: &str) -> bool {
    link.contains("prog/xdp") || link.contains("xdpgeneric") || link.contains("xdpdrv")
}

fn namespaces() -> String {
    text(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
}

/// Takes the interface away with `how` under a running `subcommand`, and checks the exit:
/// status 1 within 2 s, with the message, and nothing left behind.
fn goes_away(subcommand: &str, how: &str) {
    let tb = testbed();
    let mut l = start(&tb, subcommand);
    std::thread::sleep(Duration::from_millis(200));
    match how {
        "deleted" => tb.ip_dut(&["link", "del", DUT_IF]).unwrap(),
        // The peer namespace is the test's own, and removed with the testbed.
        "moved" => tb
            .ip_dut(&["link", "set", DUT_IF, "netns", &tb.peer_ns])
            .unwrap(),
        _ => unreachable!(),
    }
    let took = l.wait_exit(Duration::from_secs(2));
    if took.is_none() {
        l.signal(libc::SIGKILL);
    }
    let out = l.finish();
    let err = text(&out.stderr);
    assert!(
        took.is_some(),
        "{subcommand}: still running 2 s after its interface was {how}: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "{subcommand}, {how}: {err}");
    assert!(
        err.contains(
            "error: interface dut0 went away (deleted, or moved to another network namespace)"
        ),
        "{subcommand}, {how}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    match how {
        // Deleting one end of a veth pair deletes both.
        "deleted" => {
            assert!(link(&tb.dut_ns, DUT_IF).is_none());
            assert!(link(&tb.peer_ns, PEER_IF).is_none());
        }
        // The interface lives on in the other namespace, without our program.
        _ => {
            let moved = link(&tb.peer_ns, DUT_IF).expect("dut0 in the peer namespace");
            assert!(
                !has_xdp(&moved),
                "{subcommand} left its XDP program on the moved interface: {moved}"
            );
        }
    }
    // The testbed's namespaces go, also when the veth pair went first.
    let (dut_ns, peer_ns) = (tb.dut_ns.clone(), tb.peer_ns.clone());
    drop(tb);
    let left = namespaces();
    assert!(
        !left.contains(&dut_ns) && !left.contains(&peer_ns),
        "namespaces left behind: {left}"
    );
}

#[test]
fn load_exits_when_its_interface_is_deleted() {
    goes_away("load", "deleted");
}

#[test]
fn load_exits_when_its_interface_moves_to_another_namespace() {
    goes_away("load", "moved");
}

#[test]
fn run_exits_when_its_interface_is_deleted() {
    goes_away("run", "deleted");
}

#[test]
fn run_exits_when_its_interface_moves_to_another_namespace() {
    goes_away("run", "moved");
}

/// A renamed interface is the same interface: the filter keeps running on it.
#[test]
fn load_keeps_running_when_its_interface_is_renamed() {
    let tb = testbed();
    let mut l = start(&tb, "load");
    // Older kernels rename only interfaces that are down; the program stays attached.
    tb.ip_dut(&["link", "set", DUT_IF, "down"]).unwrap();
    tb.ip_dut(&["link", "set", DUT_IF, "name", "dut9"]).unwrap();
    tb.ip_dut(&["link", "set", "dut9", "up"]).unwrap();
    if l.wait_exit(Duration::from_millis(1500)).is_some() {
        panic!("load exited after a rename: {}", text(&l.finish().stderr));
    }
    let renamed = link(&tb.dut_ns, "dut9").unwrap();
    assert!(has_xdp(&renamed), "{renamed}");
    l.signal(libc::SIGINT);
    let out = l.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!has_xdp(&link(&tb.dut_ns, "dut9").unwrap()));
}
