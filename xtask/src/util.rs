//! Small helpers shared by the xtask commands.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the folder above `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs `cmd`, echoing it first, and fails with the command line when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Whether `program` can be started (it is on PATH).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `cargo build --release <args>` (e.g. `-p supcon-train --bin supcon`), then the path of the
/// built `relative` (e.g. `supcon`, `examples/bench_backends`), checked to exist: the one
/// release build of every xtask command.
pub fn build_release(args: &[&str], relative: &str) -> Result<PathBuf> {
    run(cargo().args(["build", "--release"]).args(args))?;
    let binary = release_binary(relative);
    if !binary.exists() {
        bail!(
            "`cargo build --release {}` left no {}",
            args.join(" "),
            binary.display()
        );
    }
    Ok(binary)
}

/// Where `cargo build --release` puts `relative` (e.g. `supcon`, `examples/bench_backends`):
/// `$CARGO_TARGET_DIR` (relative to the workspace root when relative) or `target/`, then
/// `release/`.
pub fn release_binary(relative: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    project_root().join(target).join("release").join(relative)
}

/// Writes `json` to `target/bench-results/<name>.json` atomically (`supcon-atomic`: a killed
/// run never leaves a torn file) and returns the path.
pub fn write_bench_result(name: &str, json: &str) -> Result<PathBuf> {
    let path = project_root()
        .join("target")
        .join("bench-results")
        .join(format!("{name}.json"));
    supcon_atomic::write(&path, json.as_bytes())?;
    Ok(path)
}

/// A `cargo` command that uses the same cargo as the one running xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// The command line of `cmd`, as the logs show it.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// The number after `"key":` in a one-line JSON object (the benches print flat JSON lines).
pub fn field(json: &str, key: &str) -> Option<f64> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// "AMD EPYC, 2 cores, 23 GiB" from /proc (Linux); "unknown" elsewhere.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or("?".into(), |k| format!("{:.0}", k / 1024.0 / 1024.0));
    format!("{cpu}, {cores} cores, {mem_gib} GiB")
}

/// A subcommand's options read in order: flags, and `--name value` pairs whose value is the
/// next argument.
pub struct OptionArgs<'a> {
    rest: std::slice::Iter<'a, String>,
}

impl<'a> OptionArgs<'a> {
    pub fn new(args: &'a [String]) -> Self {
        Self { rest: args.iter() }
    }

    /// The next option, or `None` at the end.
    pub fn next_option(&mut self) -> Option<&'a str> {
        self.rest.next().map(String::as_str)
    }

    /// The value that follows option `name`.
    pub fn value(&mut self, name: &str) -> Result<&'a str> {
        self.rest
            .next()
            .map(String::as_str)
            .with_context(|| format!("{name} needs a value"))
    }

    /// The value that follows option `name`, as a count.
    pub fn count(&mut self, name: &str) -> Result<usize> {
        count(name, self.value(name)?)
    }
}

/// `text`, a value of option `name`, as a count.
pub fn count(name: &str, text: &str) -> Result<usize> {
    text.trim()
        .parse()
        .with_context(|| format!("{name} takes a positive integer, got `{text}`"))
}
