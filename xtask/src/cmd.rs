//! Running commands: every command xtask runs is echoed first, so the user sees what happens.

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Builds a command for `program` with `args`, run from the workspace root.
pub fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args).current_dir(root());
    c
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited output; fails with the command line if it fails.
pub fn run(c: &mut Command) -> Result<()> {
    let line = describe(c);
    eprintln!("+ {line}");
    let status = c
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a command quietly and returns its output (whatever its exit status).
pub fn output(c: &mut Command) -> Result<Output> {
    let line = describe(c);
    c.stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))
}

/// True when the command runs and exits 0 (quietly).
pub fn succeeds(c: &mut Command) -> bool {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Standard output of a successful command, or `None`.
pub fn stdout_of(c: &mut Command) -> Option<String> {
    let out = output(c).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds `packages` in release mode (as locked) and returns the folder of the binaries.
pub fn build_release(packages: &[&str]) -> Result<PathBuf> {
    let mut args = vec!["build", "--release", "--locked"];
    for p in packages {
        args.extend(["-p", p]);
    }
    run(&mut cmd("cargo", args))?;
    // Where cargo put them: `CARGO_TARGET_DIR` (relative to the workspace root) if set.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    };
    Ok(target.join("release"))
}
