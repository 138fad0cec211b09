//! Helpers of the integration tests: the `supcon` binary and small, fast settings.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The `supcon` binary built for these tests.
pub fn supcon() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_supcon"));
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Overrides that make a run take seconds: a class-balanced subset of Fashion-MNIST, the tiny
/// model, one epoch per stage, small batches, no robustness sweep.
pub const FAST: &[&str] = &[
    "--set",
    "data.train_per_class=60",
    "--set",
    "data.test_per_class=30",
    "--set",
    "pretrain.epochs=1",
    "--set",
    "pretrain.batch_size=64",
    "--set",
    "linear.epochs=1",
    "--set",
    "linear.batch_size=64",
    "--set",
    "ce.epochs=1",
    "--set",
    "ce.batch_size=64",
    "--set",
    "eval.robustness=false",
    "--set",
    "checkpoint.log_every_steps=1",
    "--set",
    "threads=2",
];

/// Runs `cmd` and returns its output, with both streams shown when `expect_success` fails.
pub fn run(cmd: &mut Command, expect_success: bool) -> Output {
    let output = cmd.output().expect("the supcon binary starts");
    if output.status.success() != expect_success {
        panic!(
            "supcon exited with {} (expected success: {expect_success})\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// Whether the Fashion-MNIST files are installed (Debian's dataset-fashion-mnist or
/// $SUPCON_DATA); `cargo xtask test` installs them.
pub fn have_fashion_mnist() -> bool {
    std::env::var_os("SUPCON_DATA").is_some()
        || Path::new("/usr/share/datasets/fashion-mnist").exists()
}

/// Fails the test with the set-up hint when Fashion-MNIST is missing.
pub fn require_fashion_mnist() {
    assert!(
        have_fashion_mnist(),
        "Fashion-MNIST is not installed (cargo xtask setup)"
    );
}

/// `supcon pretrain --quiet` into `runs/name` with [`FAST`], then the `sets` overrides.
pub fn pretrain_args(name: &str, runs: &Path, sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["pretrain".into(), "--quiet".into(), "--name".into()];
    args.push(name.into());
    args.push("--runs-dir".into());
    args.push(runs.display().to_string());
    args.extend(FAST.iter().map(|s| s.to_string()));
    for set in sets {
        args.push("--set".into());
        args.push(set.to_string());
    }
    args
}

/// Polls every 5 ms until `ready()`; panics if `child` ends first or after 5 minutes.
pub fn wait_until(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().expect("the child's status") {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no {what} after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
