//! The XDP program lives in `main.rs` and is built for `bpfel-unknown-none` by `xdp-user`'s
//! build script (aya-build). This library target is empty: it exists so that `xdp-user` can
//! name this crate as a build dependency, which makes cargo rebuild the loader whenever the
//! program changes.
#![no_std]
