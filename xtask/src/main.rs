//! `cargo xtask`: the project's orchestration.
//!
//! - `setup`: install everything the project needs on a fresh Debian 12 machine.
//! - `test`: formatting, clippy, benchmarks (test mode), fuzzing, a short soak, unit and
//!   integration tests.
//! - `demo`: the main job on a testbed it builds itself.
//! - `bench`: every data path beside its reference; a report in target/bench.
//! - `soak`: every data path under load for minutes, with reloads, link flaps and kill -9s;
//!   checks for leaks and counters that do not add up.

mod bench;
mod demo;
mod soak;
mod test;
mod udp_echo;

use xtask::setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Setup, test and demo for the packet toolkit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the project needs (apt packages, nightly rust-src, bpf-linker, cargo-fuzz).
    Setup,
    /// Run formatting, clippy, benchmarks (test mode), fuzzing and every test.
    Test {
        /// Seconds to fuzz the packet parser and echo responder (0 skips fuzzing).
        #[arg(long, default_value_t = 30)]
        fuzz_seconds: u32,
        /// Frames in the differential test of the XDP program against the Rust model
        /// (BPF_PROG_TEST_RUN); e.g. 1000000 for a long run.
        #[arg(long, default_value_t = 100_000)]
        diff_cases: u64,
    },
    /// Measure every data path beside its reference on the veth testbed; write
    /// target/bench/report.{md,json,svg}.
    Bench {
        /// A short run (one round of 3 s per device), for CI.
        #[arg(long)]
        quick: bool,
        /// Only the rows whose name contains this text (repeatable), e.g. `--only testpmd
        /// --only dpdk-app`; sections: "generator", "XDP program", "packet crate", "net_pcap".
        #[arg(long)]
        only: Vec<String>,
        /// Offer every echo row this many packets per second (e.g. 350000) instead of all the
        /// generator can send: the devices compared at one load rather than overloaded.
        #[arg(long, value_name = "PPS", value_parser = positive_rate)]
        offered_pps: Option<f64>,
    },
    /// (Used by `bench`.) A kernel-stack UDP echo server: epoll + recvmmsg/sendmmsg.
    #[command(hide = true)]
    UdpEchoServer {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        seconds: f64,
    },
    /// Run every data path under `xdp-user gen` load for a while, with SIGHUP reloads, link
    /// flaps and kill -9 restarts at random moments; check that nothing leaks (XDP programs,
    /// UMEM frames, DPDK runtime files, memory) and that the counters add up.
    Soak {
        /// Minutes in total, shared equally by the data paths.
        #[arg(long, default_value_t = 3.0)]
        minutes: f64,
        /// Seed of the random moments (default: from the clock; the seed is printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Soak only these data paths (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<soak::DataPath>,
    },
    /// Run the main job on a testbed of network namespaces it builds (and removes) itself.
    Demo {
        /// Run on this real interface instead of a testbed.
        #[arg(long)]
        iface: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::setup(false),
        Command::Test {
            fuzz_seconds,
            diff_cases,
        } => test::test(&test::Options {
            fuzz_seconds,
            diff_cases,
        }),
        Command::Demo { iface } => demo::demo(iface.as_deref()),
        Command::Bench {
            quick,
            only,
            offered_pps,
        } => bench::bench(&bench::BenchOptions {
            quick,
            only,
            offered_pps,
        }),
        Command::Soak {
            minutes,
            seed,
            only,
        } => soak::soak(&soak::SoakOptions {
            seconds: minutes * 60.0,
            seed,
            paths: only,
        }),
        Command::UdpEchoServer { addr, seconds } => udp_echo::serve(&addr, seconds),
    }
}

/// A rate in packets per second: a positive number.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive rate in packets per second"
        )),
    }
}
