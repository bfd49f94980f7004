//! `cargo xtask test`: formatting, clippy (host crates and the eBPF program), the benchmarks in
//! test mode, a bounded fuzz run, the demo, a quick benchmark run and a short soak, then every
//! unit and integration test (the privileged ones
//! build their own network-namespace testbeds; see `shared/docs/testbed.md`).
//!
//! `cargo test` runs last, so its summary closes the output.

use anyhow::{Context, Result};
use std::fs;
use xtask::cmd::{cmd, output, root, run};
use xtask::setup;

/// Seconds of the short soak in `test`: 25 s per data path, four lives each.
const SOAK_SECONDS: f64 = 75.0;

/// Free space `test` wants before it starts: a build from a fresh clone (the workspace, the
/// eBPF program, the fuzz target under ASan) takes about 4.5 GiB. A full disk otherwise shows
/// up minutes later as a SIGBUS from `ar` or a linker error, far from its cause.
const FREE_BYTES_NEEDED: u64 = 6 << 30;

pub struct Options {
    /// Seconds of fuzzing (0 skips it).
    pub fuzz_seconds: u32,
    /// Frames in the XDP program's differential test (`KBP_DIFF_CASES`).
    pub diff_cases: u64,
}

pub fn test(opts: &Options) -> Result<()> {
    check_free_space()?;
    setup::setup(true)?;
    let mut stages = Vec::new();
    let mut stage = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        eprintln!("\n=== {name}");
        f().with_context(|| format!("test stage `{name}` failed"))?;
        stages.push(name.to_string());
        Ok(())
    };

    stage("format", &mut || {
        run(&mut cmd("cargo", ["fmt", "--all", "--", "--check"]))?;
        run(&mut cmd(
            "cargo",
            [
                "fmt",
                "--manifest-path",
                "packet/fuzz/Cargo.toml",
                "--",
                "--check",
            ],
        ))
    })?;
    stage("clippy (host crates)", &mut || {
        run(&mut cmd(
            "cargo",
            [
                "clippy",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        ))
    })?;
    stage("clippy (eBPF program, bpfel-unknown-none)", &mut || {
        run(&mut cmd(
            "cargo",
            [
                "+nightly",
                "clippy",
                "--package",
                "xdp-ebpf",
                "--bins",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
        ))
    })?;
    stage("benchmarks (test mode: each runs once)", &mut || {
        run(&mut cmd(
            "cargo",
            [
                "bench", "--locked", "-p", "packet", "--bench", "packet", "--", "--test",
            ],
        ))
    })?;
    if opts.fuzz_seconds > 0 {
        stage("fuzz (packet: parse + count + echo + reflect)", &mut || {
            fuzz(opts.fuzz_seconds)
        })?;
    }
    // The main job and the benchmark, as a new user would run them: both must work end to end
    // (the benchmark's figures are printed, never asserted).
    stage("demo (cargo xtask demo)", &mut || crate::demo::demo(None))?;
    // The DPDK burst bookkeeping and per-packet step, on heap buffers without EAL, under Miri:
    // undefined behaviour in the pure-Rust parts fails here.
    stage("miri (dpdk-app unit tests)", &mut || {
        run(&mut cmd(
            "cargo",
            [
                "+nightly", "miri", "test", "-p", "dpdk-app", "--bin", "dpdk-app",
            ],
        ))
    })?;
    stage(
        "benchmark smoke run (cargo xtask bench --quick)",
        &mut || {
            crate::bench::bench(&crate::bench::BenchOptions {
                quick: true,
                only: Vec::new(),
                offered_pps: None,
            })
        },
    )?;
    // Every data path under load with reloads, link flaps and kill -9 restarts: a short run
    // (about 75 s) that asserts only invariants (exit statuses, nothing left attached or
    // behind, counters that add up, flat memory), never rates or timings.
    stage("soak, short (cargo xtask soak --minutes 1.25)", &mut || {
        crate::soak::soak(&crate::soak::SoakOptions {
            seconds: SOAK_SECONDS,
            seed: None,
            paths: crate::soak::DataPath::ALL.to_vec(),
        })
    })?;
    let mut totals = (0u64, 0u64);
    stage("unit and integration tests", &mut || {
        totals = cargo_test(
            &["test", "--locked", "--workspace", "--exclude", "xdp-ebpf"],
            opts.diff_cases,
        )?;
        Ok(())
    })?;
    eprintln!("\nxtask test: every stage succeeded: {}", stages.join(", "));
    // One closing line with the totals over every test binary (cargo's own last lines are
    // often a doc-test binary's "0 passed").
    println!("tests: {} passed, {} failed", totals.0, totals.1);
    Ok(())
}

/// Fails early, and says so, when the disk under the workspace cannot hold a build.
fn check_free_space() -> Result<()> {
    let root = root();
    let out = output(cmd("df", ["--output=avail", "-B1"]).arg(&root))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(free) = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok())
    else {
        anyhow::bail!(
            "could not read the free space under {} from df: {text:?}",
            root.display()
        );
    };
    if free < FREE_BYTES_NEEDED {
        anyhow::bail!(
            "only {:.1} GiB free under {}; the build and tests need about {} GiB. \
             Free some space (old target/ folders, /tmp) and run again.",
            free as f64 / (1u64 << 30) as f64,
            root.display(),
            FREE_BYTES_NEEDED >> 30
        );
    }
    Ok(())
}

/// Runs `cargo ARGS`, passing its output through, and sums the `test result:` lines.
/// `diff_cases` goes to the XDP differential test as `KBP_DIFF_CASES`.
fn cargo_test(args: &[&str], diff_cases: u64) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    eprintln!("+ KBP_DIFF_CASES={diff_cases} cargo {}", args.join(" "));
    let mut child = cmd("cargo", args)
        .env("KBP_DIFF_CASES", diff_cases.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("could not start cargo test")?;
    let mut totals = (0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            // "ok. 79 passed; 0 failed; 0 ignored; ..."
            let count = |word: &str| -> u64 {
                rest.split(['.', ';'])
                    .filter_map(|part| part.trim().strip_suffix(word))
                    .find_map(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            totals.0 += count(" passed");
            totals.1 += count(" failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!("tests: {} passed, {} failed", totals.0, totals.1.max(1));
        anyhow::bail!("cargo test failed ({status})");
    }
    Ok(totals)
}

/// Runs the fuzz target for `seconds`, its corpus seeded with the real captured frames.
fn fuzz(seconds: u32) -> Result<()> {
    let corpus = root().join("packet/fuzz/corpus/frame");
    fs::create_dir_all(&corpus).context("create the fuzz corpus folder")?;
    for (i, frame) in packet::fixtures::REQUESTS.iter().enumerate() {
        fs::write(corpus.join(format!("fixture-{i:02}")), frame)?;
    }
    let mut c = cmd(
        "cargo",
        [
            "+nightly".to_string(),
            "fuzz".into(),
            "run".into(),
            "frame".into(),
            "--".into(),
            format!("-max_total_time={seconds}"),
            "-print_final_stats=1".into(),
        ],
    );
    c.current_dir(root().join("packet"));
    run(&mut c)
}
