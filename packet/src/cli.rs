//! Command-line helpers shared by the binaries (the `cli` feature).

use std::io::{self, Write};

/// A clap value parser for a positive, finite number (seconds, packets per second).
pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

/// Sets `stop` on SIGINT, SIGTERM and SIGHUP: a data path then stops the way it always does
/// (detach, DPDK's port close, the final counters). SIGHUP is a closed terminal or SSH
/// session, whose default action would kill the process without that clean-up (`load` keeps
/// SIGHUP for reloading its rules and registers the first two only).
pub fn stop_on_signals(stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(stop))?;
    }
    Ok(())
}

/// Writes to standard output; `Ok(false)` when nobody reads it any more.
///
/// Rust ignores SIGPIPE, so a write into a pipe whose reader has gone (`xdp-user load ... |
/// head`) fails with EPIPE, and `print!` panics on that: in a data path's reporting loop the
/// panic would end the tool without its clean-up (detach, DPDK's port close, the final
/// counters). Other write errors (a full disk under a redirect) are returned.
pub fn print_stdout(args: std::fmt::Arguments<'_>) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes a run's last output (its JSON report) and a newline. A reader that has gone (`| head`)
/// stopped reading by choice: not an error; any other failure to write it is.
pub fn print_report(report: impl std::fmt::Display) -> io::Result<()> {
    print_stdout(format_args!("{report}\n")).map(|_| ())
}

/// `eprintln!` that survives a closed standard error: the line is lost, the tool goes on.
///
/// `eprintln!` panics when standard error cannot be written (`xdp-user load ... |& head` once
/// head has exited, a terminal that went away). A panic there would skip the clean-up the
/// message is about (detach, the ports' close, the final counters); a lost status line costs
/// nothing.
#[macro_export]
macro_rules! stderr {
    ($($arg:tt)*) => {
        $crate::cli::write_stderr_line(format_args!($($arg)*))
    };
}

/// What [`stderr!`] calls: writes the line and ignores a failure.
pub fn write_stderr_line(args: std::fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// [`print_stdout`] for a running data path's periodic lines: `false` when standard output
/// takes no more, having said why on standard error (after `tool`, the tool's name). The caller
/// then stops the way it does on SIGINT, clean-up and final counters included.
pub fn print_or_stop(tool: &str, args: std::fmt::Arguments<'_>) -> bool {
    match print_stdout(args) {
        Ok(true) => true,
        Ok(false) => {
            crate::stderr!(
                "{tool}: standard output was closed (its reader exited): stopping, as on SIGINT"
            );
            false
        }
        Err(e) => {
            crate::stderr!("{tool}: cannot write standard output ({e}): stopping, as on SIGINT");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_finite_numbers() {
        assert_eq!(positive("1.5"), Ok(1.5));
        for bad in ["0", "-1", "nan", "inf", "x", ""] {
            assert!(positive(bad).is_err(), "{bad}");
        }
    }
}
