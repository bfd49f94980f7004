//! Code generation options for the XDP program, given to bpf-linker (which runs LLVM's BPF
//! back end on the whole program).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    // Packet fields are read at 2-byte-aligned offsets (14 + 4n); without this LLVM splits
    // every such u16/u32 read into byte loads, shifts and ors. The verifier allows misaligned
    // packet access wherever the architecture has efficient unaligned access (x86-64, arm64).
    println!("cargo:rustc-link-arg-bins=--cpu-features=+allows-misaligned-mem-access");
}
