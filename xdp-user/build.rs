//! Builds the XDP program (`xdp-ebpf`) for `bpfel-unknown-none` with the nightly toolchain and
//! bpf-linker (through aya-build), so the object is embedded in the `xdp-user` binary.

use std::path::Path;
use std::process::Command;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../xdp-ebpf")
        .canonicalize()?;
    let have = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("bpf-linker", "--version") {
        anyhow::bail!(
            "bpf-linker is not installed; it links the XDP program. Run `cargo xtask setup` \
             (it builds bpf-linker against the LLVM that matches the nightly toolchain)."
        );
    }
    let root_dir = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "xdp-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
