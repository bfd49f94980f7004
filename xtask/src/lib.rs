//! Library side of xtask: the network-namespace testbed, shared by `cargo xtask demo` and the
//! data paths' integration tests.

pub mod agree;
pub mod cmd;
pub mod setup;
pub mod testbed;
pub mod xdp_filter;

/// The median of a set of measurements (the upper middle one for an even count: always a figure
/// that was measured); 0 for none. Sorts `v`.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
