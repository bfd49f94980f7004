//! `xdp-user`: the user-space side of the XDP data path.
//!
//! - `xdp-user load`: attach the XDP filter/counter to an interface, install rules, print
//!   rates, reload rules on SIGHUP, detach on SIGINT/SIGTERM or when `--duration` ends.
//! - `xdp-user run`: the AF_XDP poll-mode data path (echo, reflect, count, drop).
//! - `xdp-user cost`: the filter's cost per packet for a rule set (BPF_PROG_TEST_RUN).
//! - `xdp-user gen`: a UDP traffic generator that matches and times the replies.
//! - `xdp-user dump`: capture what the XDP program sees, with its verdicts, as pcapng.
//!
//! Each command's arguments and code are in a module of [`cmd`]; this file holds the command
//! line they share and the dispatch.

mod afxdp;
mod cmd;
#[cfg(test)]
mod differential;
mod dump;
mod frames;
mod generator;
mod iface;
mod lockout;
mod metrics;
mod neighbour;
mod report;
mod rules;
mod xdp;

use clap::{Parser, Subcommand};
use cmd::cost::CostArgs;
use cmd::dump::DumpArgs;
use cmd::r#gen::GenArgs;
use cmd::load::LoadArgs;
use cmd::run::RunArgs;
use std::time::Duration;
use xdp::LogLevel;

#[derive(Parser)]
#[command(
    name = "xdp-user",
    version,
    about = "XDP filter/counter and AF_XDP data path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP filter/counter to an interface and print its counters.
    Load(LoadArgs),
    /// Run the AF_XDP poll-mode loop: the XDP program redirects chosen packets to one socket
    /// per RX queue, and a thread per queue answers (echo, reflect), counts or drops them.
    Run(RunArgs),
    /// Send UDP over AF_XDP as fast as asked and count (and time) what comes back: a load
    /// generator and loopback tester for any UDP echo service.
    Gen(GenArgs),
    /// Measure the XDP program's cost per packet with a rule set, in the kernel
    /// (BPF_PROG_TEST_RUN, no interface needed), beside a bare XDP_DROP program in the same run.
    Cost(CostArgs),
    /// Capture the frames the XDP program of `load` or `run` sees on an interface, with what
    /// it did to each (verdict, rule, RX queue), as pcapng: `-w FILE`, or `-w -` to pipe into
    /// `tcpdump -r -`.
    Dump(DumpArgs),
}

/// How long `load` and `run` run and how they report.
#[derive(clap::Args, Debug)]
struct Reporting {
    /// Seconds between lines of rates.
    #[arg(long, default_value_t = 1.0, value_parser = packet::cli::positive)]
    interval: f64,
    /// Stop (and detach) after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration: Option<f64>,
    /// On exit, print the counters as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Serve Prometheus / OpenMetrics metrics at http://ADDR:PORT/metrics (e.g.
    /// 127.0.0.1:9100), refreshed every 250 ms.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
    /// What the XDP program logs (malformed frames and AF_XDP redirects without a socket at
    /// warn, rule-set switches at info), at most 100 records per second per CPU. Fixed at
    /// load time: levels below it cost nothing per packet.
    #[arg(long, value_enum, default_value = "off")]
    log_level: LogLevel,
}

/// How often the metrics are refreshed from the counters.
const METRICS_REFRESH: Duration = Duration::from_millis(250);

fn main() {
    let result = match Cli::parse().command {
        Command::Load(args) => cmd::load::load(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Gen(args) => cmd::r#gen::run_gen(args),
        Command::Cost(args) => cmd::cost::cost(args),
        Command::Dump(args) => cmd::dump::run_dump(args),
    };
    if let Err(e) = result {
        packet::stderr!("error: {e:#}");
        std::process::exit(1);
    }
}
