//! The subcommands of `xdp-user`, one module each: its arguments (a `clap::Args` struct, with
//! the help text) and the function that carries it out. The capture machinery of `dump` is in
//! [`crate::dump`], the report formatting of `load` in [`crate::report`].

pub mod common;
pub mod cost;
pub mod dump;
pub mod r#gen;
pub mod load;
pub mod run;
