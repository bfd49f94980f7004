//! Library side of xtask: the network-namespace testbed, shared by `cargo xtask demo` and the
//! data paths' integration tests.

pub mod agree;
pub mod cmd;
pub mod setup;
pub mod testbed;
pub mod xdp_filter;
