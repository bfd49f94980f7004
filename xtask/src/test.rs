//! `cargo xtask test`: formatting, clippy (host crates and the eBPF program), the benchmarks in
//! test mode, a bounded fuzz run, then every unit and integration test (the privileged ones
//! build their own network-namespace testbeds; see `shared/docs/testbed.md`).
//!
//! `cargo test` runs last, so its summary closes the output.

use anyhow::{Context, Result};
use std::fs;
use xtask::cmd::{cmd, root, run};
use xtask::setup;

pub struct Options {
    /// Seconds of fuzzing (0 skips it).
    pub fuzz_seconds: u32,
}

pub fn test(opts: &Options) -> Result<()> {
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
    stage("unit and integration tests", &mut || {
        run(&mut cmd(
            "cargo",
            ["test", "--locked", "--workspace", "--exclude", "xdp-ebpf"],
        ))
    })?;
    eprintln!("\nxtask test: every stage succeeded: {}", stages.join(", "));
    Ok(())
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
