//! `cargo xtask setup`: installs, idempotently, everything the project needs on a fresh Debian 12
//! machine, saying what it does. What is present is skipped.
//!
//! What works here is recorded in `shared/docs/toolchain.md`: bpf-linker must be built against
//! the LLVM whose major version matches the nightly rustc's LLVM, with that LLVM's prefix
//! given explicitly (Debian's default `llvm-config` on PATH is LLVM 14).

use crate::cmd::{cmd, output, run, stdout_of, succeeds};
use anyhow::{Context, Result, bail};

/// Debian packages every part of the project needs, besides `llvm-N-dev` / `libpolly-N-dev`
/// for the nightly's LLVM major N.
const APT_PACKAGES: &[&str] = &[
    // The eBPF build and bindgen.
    "clang",
    "libclang-dev",
    "pkg-config",
    // xsk-rs builds a vendored libxdp/libbpf: configure needs m4, headers need these.
    "m4",
    "make",
    "libelf-dev",
    "zlib1g-dev",
    "gcc-multilib",
    // DPDK: the libraries, headers, tools (dpdk-testpmd, dpdk-devbind.py) and PMDs.
    "dpdk",
    "dpdk-dev",
    "libdpdk-dev",
    "libpcap-dev",
    // Testbeds, demos and diagnostics.
    "iproute2",
    "iputils-ping",
    "ethtool",
    "bpftool",
    "python3",
    // Crafted frames in the filter tests (IPv4/IPv6 fragments, extension-header chains,
    // VLAN tags), sent from the peer namespace with scapy's `sendp`.
    "python3-scapy",
    // The benchmark's references: xdp-filter beside our XDP program.
    "xdp-tools",
    // The metrics endpoint's test: a real Prometheus server, promtool, and curl.
    "prometheus",
    "curl",
    // Reading the captures back in the tests: what users read them with.
    "tcpdump",
    "tshark",
];

#[derive(Debug)]
pub struct Status {
    pub missing_apt: Vec<String>,
    pub nightly: bool,
    pub rust_src: bool,
    /// The nightly's Miri, which runs the pure-Rust DPDK bookkeeping tests.
    pub miri: bool,
    pub bpf_linker: bool,
    pub cargo_fuzz: bool,
    pub llvm_major: Option<u32>,
}

impl Status {
    pub fn complete(&self) -> bool {
        self.missing_apt.is_empty()
            && self.nightly
            && self.rust_src
            && self.miri
            && self.bpf_linker
            && self.cargo_fuzz
    }
}

/// The LLVM major version of the nightly rustc (`rustc +nightly -vV`).
fn nightly_llvm_major() -> Option<u32> {
    let out = stdout_of(&mut cmd("rustc", ["+nightly", "-vV"]))?;
    let line = out.lines().find(|l| l.starts_with("LLVM version:"))?;
    line.split(':')
        .nth(1)?
        .trim()
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn apt_installed(pkg: &str) -> bool {
    stdout_of(&mut cmd("dpkg-query", ["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// The LLVM major bpf-linker was linked against (it links libLLVM dynamically).
fn bpf_linker_llvm_major() -> Option<u32> {
    let path = stdout_of(&mut cmd("sh", ["-c", "command -v bpf-linker"]))?;
    let ldd = stdout_of(&mut cmd("ldd", [path.trim()]))?;
    let lib = ldd.split_whitespace().find(|w| w.starts_with("libLLVM"))?;
    // libLLVM.so.22.1 or libLLVM-22.so
    lib.trim_start_matches("libLLVM")
        .trim_start_matches(['.', '-'])
        .trim_start_matches("so.")
        .split(['.', '-'])
        .next()?
        .parse()
        .ok()
}

pub fn status() -> Status {
    let llvm_major = nightly_llvm_major();
    let mut wanted: Vec<String> = APT_PACKAGES.iter().map(|s| s.to_string()).collect();
    if let Some(n) = llvm_major {
        wanted.push(format!("llvm-{n}-dev"));
        wanted.push(format!("libpolly-{n}-dev"));
    }
    let missing_apt = wanted.into_iter().filter(|p| !apt_installed(p)).collect();
    let installed = stdout_of(&mut cmd(
        "rustup",
        ["component", "list", "--toolchain", "nightly", "--installed"],
    ))
    .unwrap_or_default();
    let rust_src = installed.lines().any(|l| l.starts_with("rust-src"));
    let miri = installed.lines().any(|l| l.starts_with("miri"));
    Status {
        missing_apt,
        nightly: llvm_major.is_some(),
        rust_src,
        miri,
        bpf_linker: llvm_major.is_some() && bpf_linker_llvm_major() == llvm_major,
        cargo_fuzz: succeeds(&mut cmd("cargo", ["fuzz", "--version"])),
        llvm_major,
    }
}

/// Installs whatever is missing. With `quiet_if_complete`, says nothing when all is present.
pub fn setup(quiet_if_complete: bool) -> Result<()> {
    let mut st = status();
    if st.complete() {
        if !quiet_if_complete {
            eprintln!("setup: everything is installed (nothing to do)");
        }
        return Ok(());
    }
    eprintln!("setup: installing what is missing");

    if !st.nightly {
        eprintln!("setup: the nightly toolchain is missing; installing it with rustup");
        run(&mut cmd(
            "rustup",
            ["toolchain", "install", "nightly", "--profile", "minimal"],
        ))
        .context(
            "the nightly toolchain is needed to build the eBPF program (-Z build-std); \
             install it with `rustup toolchain install nightly` and run setup again",
        )?;
        st = status();
    }
    let llvm = st
        .llvm_major
        .context("could not read the nightly rustc's LLVM version (`rustc +nightly -vV`)")?;

    if !st.missing_apt.is_empty() {
        if !is_root() {
            bail!(
                "these Debian packages are missing: {}\n\
                 setup needs root to install them: run it as root, or install them yourself with \
                 `sudo apt-get install {}`",
                st.missing_apt.join(" "),
                st.missing_apt.join(" ")
            );
        }
        eprintln!("setup: apt packages missing: {}", st.missing_apt.join(" "));
        run(&mut cmd("apt-get", ["update"]))
            .context("apt-get update failed: is there network access to the Debian mirrors?")?;
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend(st.missing_apt.iter().map(String::as_str));
        let mut c = cmd("apt-get", args);
        c.env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c).with_context(|| {
            format!(
                "apt-get could not install {}; llvm-{llvm}-dev must match the nightly's LLVM \
                 {llvm} (bookworm-security carries it)",
                st.missing_apt.join(" ")
            )
        })?;
    } else {
        eprintln!("setup: apt packages: all present");
    }

    if !st.rust_src {
        run(&mut cmd(
            "rustup",
            ["component", "add", "rust-src", "--toolchain", "nightly"],
        ))
        .context("rust-src for the nightly is needed by -Z build-std=core")?;
    } else {
        eprintln!("setup: nightly rust-src: present");
    }

    if !st.miri {
        run(&mut cmd(
            "rustup",
            ["component", "add", "miri", "--toolchain", "nightly"],
        ))
        .context("Miri for the nightly runs the DPDK burst tests under `cargo xtask test`")?;
    } else {
        eprintln!("setup: nightly miri: present");
    }

    if !st.bpf_linker {
        eprintln!("setup: building bpf-linker against LLVM {llvm} (1-2 minutes)");
        let prefix = format!("/usr/lib/llvm-{llvm}");
        let path = format!("{prefix}/bin:{}", std::env::var("PATH").unwrap_or_default());
        let feature = format!("llvm-{llvm}");
        let mut c = cmd(
            "cargo",
            [
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                &feature,
            ],
        );
        // Debian's default llvm-config is LLVM 14: point the build at the matching LLVM.
        c.env("LLVM_PREFIX", &prefix).env("PATH", path);
        run(&mut c).with_context(|| {
            format!(
                "could not build bpf-linker with LLVM {llvm}; check that llvm-{llvm}-dev and \
                 libpolly-{llvm}-dev are installed and {prefix} exists"
            )
        })?;
    } else {
        eprintln!("setup: bpf-linker (LLVM {llvm}): present");
    }

    if !st.cargo_fuzz {
        run(&mut cmd("cargo", ["install", "cargo-fuzz", "--locked"]))
            .context("could not install cargo-fuzz from crates.io")?;
    } else {
        eprintln!("setup: cargo-fuzz: present");
    }

    let st = status();
    if !st.complete() {
        bail!(
            "setup finished but something is still missing (apt: {:?}, rust-src: {}, miri: {}, \
             bpf-linker: {}, cargo-fuzz: {})",
            st.missing_apt,
            st.rust_src,
            st.miri,
            st.bpf_linker,
            st.cargo_fuzz
        );
    }
    eprintln!("setup: done");
    Ok(())
}

pub fn is_root() -> bool {
    output(&mut cmd("id", ["-u"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
