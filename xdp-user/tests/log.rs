//! `--log-level`: the XDP program's own log records (aya-log) reach standard error: the rule
//! set in force (info), a malformed frame (warn), an AF_XDP redirect that found no socket
//! (warn); and nothing is logged at the default level, `off`.

mod common;

use common::*;
use std::time::Duration;
use xtask::testbed::DUT_IF;

/// UDP to port 7 with a wrong IPv4 header checksum (after the MACs, in hex): malformed.
const BAD_CHECKSUM: &str = "0800450000 1c00004000401100 00c6120001c6120002 9c40000700080000";

/// The same with an IPv4 total length of 255 in a 42-byte frame: malformed for another reason.
const TOO_LONG: &str = "0800450000 ff00004000401100 00c6120001c6120002 9c40000700080000";

fn frame() -> String {
    BAD_CHECKSUM.replace(' ', "")
}

#[test]
fn the_program_logs_rare_events_at_the_level_asked_for() {
    let tb = quiet_testbed();
    let mut l = Loader::start(
        &tb,
        &[
            "--iface",
            DUT_IF,
            "--rule",
            "proto udp dport 9 action xsk",
            "--log-level",
            "info",
            "--duration",
            "20",
        ],
    );
    l.follow_stderr();
    inject(&tb, &[frame()]);
    let malformed = l.wait_stderr("[xdp warn] malformed frame", Duration::from_secs(5));
    let malformed = malformed.expect("no malformed-frame record");
    // 14 bytes of Ethernet, 20 of IPv4, 8 of UDP; and which header was wrong.
    assert!(malformed.contains("42 bytes on RX queue 0"), "{malformed}");
    assert!(
        malformed.contains("malformed frame (bad IPv4 header checksum)"),
        "{malformed}"
    );
    // Past the rate limit (one record per 10 ms per CPU), another reason.
    std::thread::sleep(Duration::from_millis(100));
    inject(&tb, &[TOO_LONG.replace(' ', "")]);
    assert!(
        l.wait_stderr(
            "[xdp warn] malformed frame (IPv4 total length beyond the frame)",
            Duration::from_secs(5)
        )
        .is_some(),
        "no record naming the total length"
    );
    // `load` has no AF_XDP sockets: an xsk rule falls back to pass, and says so.
    send_udp(&tb, 9, 1);
    assert!(
        l.wait_stderr(
            "[xdp warn] xsk: no AF_XDP socket on RX queue 0",
            Duration::from_secs(5)
        )
        .is_some()
    );
    l.signal(libc::SIGINT);
    let out = l.finish();
    assert!(
        text(&out.stderr).contains(
            "warning: rule 1 (`proto udp dport 9 action xsk`) says xsk, but `load` opens no \
             AF_XDP socket"
        ),
        "said at start, before any packet"
    );
    assert!(
        text(&out.stderr).contains("[xdp info] rule set 1 (slot 0) in force"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn nothing_is_logged_by_default() {
    let tb = quiet_testbed();
    let mut l = Loader::start(&tb, &["--iface", DUT_IF, "--duration", "20"]);
    inject(&tb, &[frame()]);
    std::thread::sleep(Duration::from_millis(500));
    l.signal(libc::SIGINT);
    let out = l.finish();
    assert!(
        !text(&out.stderr).contains("[xdp "),
        "{}",
        text(&out.stderr)
    );
}
