//! `xdp-user dump`: capture the frames the XDP program of `load` or `run` sees on an
//! interface, with what it did to each (verdict, rule, RX queue), as pcapng: `-w FILE`, or
//! `-w -` to pipe into `tcpdump -r -`. This is the command line; the capture machinery is in
//! [`crate::dump`].

use crate::dump;
use anyhow::{Context, Result};
use packet::cli::print_report;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Arguments of `xdp-user dump`.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// An interface whose xdp-user program to capture from (repeatable: one pcapng
    /// interface block each).
    #[arg(long, required = true)]
    iface: Vec<String>,
    /// Where to write the pcapng: a file, or `-` for standard output.
    #[arg(short = 'w', long = "write", value_name = "FILE", default_value = "-")]
    write: String,
    /// Bytes kept of each frame (at most 1536).
    #[arg(long, default_value_t = 1536, value_parser = clap::value_parser!(u32).range(1..=1536))]
    snaplen: u32,
    /// Stop after writing this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Only frames this rule matches, in `load`'s grammar ("proto udp dport 9"); with an
    /// `action`, only those the program gave that action.
    #[arg(long = "match", value_name = "RULE")]
    matches: Option<String>,
    /// Only frames the program passed, dropped or redirected to AF_XDP.
    #[arg(long, value_parser = ["pass", "drop", "xsk"])]
    verdict: Option<String>,
    /// Only frames rule N decided (numbered from 1, in the order given to `load`).
    #[arg(long = "rule", value_name = "N")]
    rule: Option<u32>,
    /// On exit, print a JSON summary (to standard error when the capture goes to stdout).
    #[arg(long)]
    json: bool,
}

pub fn run_dump(args: DumpArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    packet::cli::stop_on_signals(&stop)?;
    let selection = dump::Selection {
        action: args
            .verdict
            .as_deref()
            .map(dump::Selection::action_of)
            .transpose()?,
        rule: args.rule,
        matches: args
            .matches
            .as_deref()
            .map(dump::Selection::parse_match)
            .transpose()?,
    };
    let maps = args
        .iface
        .iter()
        .map(|i| dump::CaptureMaps::of_attached(i))
        .collect::<Result<Vec<_>>>()?;
    let output = packet::capture::Output::parse(&args.write);
    // Said once capture is on in every program: a frame sent after this line is captured.
    let armed = || {
        packet::stderr!(
            "xdp-user dump: capturing on {} to {}",
            args.iface.join(", "),
            if args.write == "-" {
                "standard output"
            } else {
                &args.write
            }
        )
    };
    let opts = dump::DumpOptions {
        snaplen: args.snaplen,
        count: args.count,
        duration: args.duration,
        selection,
    };
    let r = dump::capture(maps, &output, &opts, &stop, armed)?;
    if r.reader_gone {
        packet::stderr!("xdp-user dump: the reader of standard output has gone: capture ended");
    }
    packet::stderr!(
        "xdp-user dump: {} frame(s) seen, {} written, {} lost to a full capture ring{}",
        r.seen,
        r.written,
        r.lost,
        if r.lost > 0 {
            " (the reader could not keep up: narrow it with --match/--verdict, or lower --snaplen)"
        } else {
            ""
        }
    );
    if args.json {
        let v = serde_json::json!({
            "seen": r.seen, "written": r.written, "lost": r.lost, "reader_gone": r.reader_gone,
        });
        if args.write == "-" {
            packet::stderr!("{v}");
        } else {
            print_report(&v).context("writing the JSON report")?;
        }
    }
    Ok(())
}
