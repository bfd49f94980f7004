//! `xdp-user cost`: measure the XDP program's cost per packet with a rule set, in the kernel
//! (BPF_PROG_TEST_RUN, no interface needed), beside a bare XDP_DROP program in the same run.

use super::common::{PASS_ALL, read_rules};
use crate::xdp::{LogLevel, XdpFilter};
use anyhow::{Context, Result};
use packet::cli::print_stdout;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `xdp-user cost`.
#[derive(clap::Args, Debug)]
pub struct CostArgs {
    /// A rule (repeatable), as for `load`.
    #[arg(long = "rule", value_name = "RULE")]
    rules: Vec<String>,
    /// A file of rules, as for `load`.
    #[arg(long = "rules", value_name = "FILE")]
    rules_file: Option<PathBuf>,
    /// Runs per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    repeat: u32,
    /// Times to load the program afresh and measure it again; each figure is the median over
    /// the loads. Every load is JIT-compiled to another place in memory, and that alone moves
    /// one frame's figure by up to 20 ns here: one load measures its placement as much as the
    /// program. A `--reference-prog-id` program is someone else's and is not reloaded: it is
    /// timed in every load's rounds, at its one placement (`cargo xtask bench` loads xdp-filter
    /// afresh itself).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    loads: u32,
    /// Also time this already-loaded XDP program (e.g. xdp-tools' xdp-filter, by the id
    /// `ip -d link` or `bpftool prog` shows), on the same frames, alternating with ours.
    /// Repeatable: each reference gets a column.
    #[arg(long = "reference-prog-id", value_name = "ID")]
    reference_prog_ids: Vec<u32>,
    /// Load the program with this log level (to see what logging costs).
    #[arg(long, value_enum, default_value = "off")]
    log_level: LogLevel,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// `xdp-user cost`: ns per packet of the filter with the given rules, and of a bare XDP_DROP
/// program, for a few kinds of packet, measured alternately in the same run; with
/// `--reference-prog-id`, also of programs others loaded (xdp-filter), in the same loop.
pub fn cost(args: CostArgs) -> Result<()> {
    let (repeat, json) = (args.repeat, args.json);
    let rules = read_rules(&args.rules, args.rules_file.as_deref())?;
    // Each reference is found once; its handle keeps it loaded while we time it.
    let references = args
        .reference_prog_ids
        .iter()
        .map(|&id| XdpFilter::loaded_program(id).map(|p| (id, p)))
        .collect::<Result<Vec<_>>>()?;
    // A line of output; a reader that went away (`| head`) ends the command quietly, as it
    // would a C tool killed by SIGPIPE.
    macro_rules! out {
        ($($t:tt)*) => {
            if !print_stdout(format_args!("{}\n", format_args!($($t)*)))
                .context("writing standard output")?
            {
                return Ok(());
            }
        };
    }
    let frames: [(&str, &[u8]); 5] = [
        ("udp4", &packet::fixtures::UDP4_ECHO_REQUEST),
        ("tcp4_syn", &packet::fixtures::TCP_SYN),
        ("icmp6_echo", &packet::fixtures::ICMPV6_ECHO_REQUEST),
        ("udp6", &packet::fixtures::UDP6_ECHO_REQUEST),
        // To a port the benchmark's 16 rules drop: the cost of a decision that drops.
        ("tcp4_syn_1003", &tcp_syn_to_port(1003)),
    ];
    out!(
        "{} rule(s), {repeat} runs per figure (BPF_PROG_TEST_RUN), median of {} load(s)",
        rules.len(),
        args.loads
    );
    let mut header = format!(
        "{:<12} {:>10} {:>10} {:>7}",
        "packet", "filter ns", "bare ns", "ratio"
    );
    for (id, _) in &references {
        header.push_str(&format!(" {:>14}", format!("prog {id} ns")));
    }
    if args.loads > 1 {
        header.push_str("  filter ns per load");
    }
    out!("{header}");
    // Per load, per frame: the fastest of the rounds.
    let mut loads: Vec<Vec<Timing>> = Vec::new();
    let mut filter = None;
    for _ in 0..args.loads {
        // Any interface will do: nothing is attached. Loopback always exists. The previous
        // load is dropped first, so the new one is placed afresh.
        drop(filter.take());
        let f = filter.insert(XdpFilter::load_logging("lo", args.log_level)?);
        f.install(&rules, PASS_ALL)?;
        loads.push(time_one_load(f, &frames, &references, repeat)?);
    }
    let best = median_over_loads(&loads, references.len());
    let mut filter = filter.context("no load")?;
    let mut rows = Vec::new();
    for (i, ((name, _), t)) in frames.iter().zip(&best).enumerate() {
        let (best_filter, best_bare) = (t.filter, t.bare);
        let per_load: Vec<f64> = loads.iter().map(|l| l[i].filter).collect();
        let bare_per_load: Vec<f64> = loads.iter().map(|l| l[i].bare).collect();
        // The kernel reports whole nanoseconds per run; a bare program may round to 0.
        let ratio = best_filter / best_bare.max(1.0);
        let mut line = format!("{name:<12} {best_filter:>10.0} {best_bare:>10.0} {ratio:>7.2}");
        for ns in &t.reference {
            line.push_str(&format!(" {ns:>14.0}"));
        }
        if per_load.len() > 1 {
            let each: Vec<String> = per_load.iter().map(|ns| format!("{ns:.0}")).collect();
            line.push_str(&format!("  {}", each.join(" ")));
        }
        out!("{line}");
        let refs: Vec<_> = references
            .iter()
            .zip(t.reference.iter().zip(&t.ref_action))
            .map(
                |((id, _), (ns, action))| serde_json::json!({"id": id, "ns": ns, "action": action}),
            )
            .collect();
        rows.push(serde_json::json!({
            "packet": name, "filter_ns": best_filter, "bare_ns": best_bare, "ratio": ratio,
            // Each load's figure, of which filter_ns is the median.
            "filter_ns_per_load": per_load,
            "bare_ns_per_load": bare_per_load,
            // XDP actions: 1 drop, 2 pass (so a reference can be checked to decide alike).
            "filter_action": t.filter_action, "bare_action": t.bare_action,
            // The first reference, as before there could be several.
            "reference_ns": t.reference.first(),
            "references": refs,
        }));
    }
    // Reloads: the same rule set installed again and again through the atomic path (write
    // the other slot, switch), as SIGHUP does; then the grace period that frees the old slot
    // for the next reload, which runs in the background and is timed apart.
    let mut in_force = Vec::new();
    let mut retired = Vec::new();
    for _ in 0..RELOADS {
        let done = filter.install(&rules, PASS_ALL)?;
        in_force.push(done.in_force_after.as_secs_f64() * 1e3);
        let t = Instant::now();
        filter.wait_retired();
        retired.push((done.in_force_after + t.elapsed()).as_secs_f64() * 1e3);
    }
    let (in_force, retired) = (median(&mut in_force), median(&mut retired));
    out!(
        "reload of {} rule(s), median of {RELOADS}: in force after {in_force:.2} ms; the old \
         set retired after {retired:.2} ms (an RCU grace period, in the background)",
        rules.len()
    );
    if json {
        out!(
            "{}",
            serde_json::json!({
                "rules": rules.len(), "repeat": repeat, "loads": args.loads, "rows": rows,
                "reload_ms": {"in_force_median": in_force, "retired_median": retired},
            })
        );
    }
    Ok(())
}

/// Reloads timed by `cost`.
const RELOADS: usize = 21;

/// The fixture TCP SYN (IPv4, to port 80) sent to `port` instead, its checksum kept right.
fn tcp_syn_to_port(port: u16) -> [u8; 74] {
    let mut f = packet::fixtures::TCP_SYN;
    // Ethernet (14) + IPv4 without options (20): the TCP header; its checksum at 16.
    const DPORT: usize = 14 + 20 + 2;
    const CHECK: usize = 14 + 20 + 16;
    let old = u16::from_be_bytes([f[DPORT], f[DPORT + 1]]);
    let check = u16::from_be_bytes([f[CHECK], f[CHECK + 1]]);
    let check = packet::checksum::update_word(check, old, port);
    f[DPORT..DPORT + 2].copy_from_slice(&port.to_be_bytes());
    f[CHECK..CHECK + 2].copy_from_slice(&check.to_be_bytes());
    f
}

#[cfg(test)]
mod cost_tests {
    #[test]
    fn the_syn_to_a_dropped_port_keeps_its_checksums_right() {
        let f = super::tcp_syn_to_port(1003);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 1003);
        packet::verify::verify_checksums(&f).expect("checksums");
        assert_ne!(f, packet::fixtures::TCP_SYN);
    }
}

/// Times one load of the filter: every program on every frame once untimed, then [`ROUNDS`]
/// rounds; per frame, the fastest of the rounds.
fn time_one_load(
    filter: &mut XdpFilter,
    frames: &[(&str, &[u8])],
    references: &[(u32, aya::programs::Xdp)],
    repeat: u32,
) -> Result<Vec<Timing>> {
    // Every program on every frame once, untimed: the first runs after a load are slower
    // (cold caches, the CPU's clock coming up), and were once all the first frame's figures.
    for (_, frame) in frames {
        filter.test_run("xdp_filter", frame, repeat)?;
        filter.test_run("xdp_drop_bare", frame, repeat)?;
        for (id, prog) in references {
            XdpFilter::test_run_loaded(prog, frame, repeat)
                .with_context(|| format!("timing program {id}"))?;
        }
    }
    // Then ROUNDS rounds, each over every frame and every program in turn, keeping each
    // figure's fastest: the least disturbed by the rest of the machine, and a slow spell hits
    // every column alike instead of one frame's.
    let mut best = vec![Timing::new(references.len()); frames.len()];
    for _ in 0..ROUNDS {
        for ((_, frame), t) in frames.iter().zip(&mut best) {
            let (a, d) = filter.test_run("xdp_filter", frame, repeat)?;
            (t.filter_action, t.filter) = (a, t.filter.min(d.as_nanos() as f64));
            let (a, d) = filter.test_run("xdp_drop_bare", frame, repeat)?;
            (t.bare_action, t.bare) = (a, t.bare.min(d.as_nanos() as f64));
            for (i, (id, prog)) in references.iter().enumerate() {
                let (a, d) = XdpFilter::test_run_loaded(prog, frame, repeat)
                    .with_context(|| format!("timing program {id}"))?;
                t.ref_action[i] = a;
                t.reference[i] = t.reference[i].min(d.as_nanos() as f64);
            }
        }
    }
    Ok(best)
}

/// Per frame, every figure's median over the loads (`loads[load][frame]`); the actions are
/// the last load's (every load runs the same program and rules).
fn median_over_loads(loads: &[Vec<Timing>], references: usize) -> Vec<Timing> {
    let of = |figure: &dyn Fn(&Timing) -> f64, f: usize| {
        median(&mut loads.iter().map(|l| figure(&l[f])).collect::<Vec<_>>())
    };
    let Some(last) = loads.last() else {
        return Vec::new();
    };
    (0..last.len())
        .map(|f| {
            let mut t = last[f].clone();
            t.filter = of(&|t| t.filter, f);
            t.bare = of(&|t| t.bare, f);
            for r in 0..references {
                t.reference[r] = of(&|t| t.reference[r], f);
            }
            t
        })
        .collect()
}

/// The median of `v` (the upper middle one for an even count: always a figure that was
/// measured). Sorts `v`; `v` is not empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rounds of timing after the warm-up; each figure is the fastest of its rounds.
const ROUNDS: usize = 5;

/// The fastest time (ns per run) and the action of each program on one frame.
#[derive(Clone)]
struct Timing {
    filter: f64,
    bare: f64,
    reference: Vec<f64>,
    filter_action: u32,
    bare_action: u32,
    ref_action: Vec<u32>,
}

impl Timing {
    fn new(references: usize) -> Timing {
        Timing {
            filter: f64::MAX,
            bare: f64::MAX,
            reference: vec![f64::MAX; references],
            filter_action: 0,
            bare_action: 0,
            ref_action: vec![0; references],
        }
    }
}
