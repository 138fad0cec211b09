//! `cargo xtask test`: the one test command, and `cargo xtask gpu-test`.

use crate::setup::{self, Flavour, Provisioned};
use crate::util::{cargo, run as sh};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The crates that build with a bare Rust toolchain (no libtorch, no CUDA): CI also lints and
/// tests them without features, so the CUDA stub and the "bare toolchain" invariant are built.
const LIBTORCH_FREE: [&str; 4] = [
    "supcon-loss",
    "supcon-data",
    "supcon-augment",
    "supcon-collectives",
];

/// Set-up, formatting, lints, then every test of the workspace with every feature on
/// (`tch` and `cuda` included: the CUDA kernels are compiled by NVRTC even without a GPU), and
/// the libtorch-free crates once more without features.
/// Extra arguments go to `cargo test` (e.g. `cargo xtask test -- loss::`).
pub fn run(args: &[String]) -> Result<()> {
    let env = setup::ensure(linked_flavour())?;
    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(with_libs(
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
        &env,
    ))?;
    let packages: Vec<&str> = LIBTORCH_FREE.iter().flat_map(|p| ["-p", p]).collect();
    sh(cargo()
        .arg("clippy")
        .args(&packages)
        .args(["--all-targets", "--", "-D", "warnings"]))?;
    let mut counts = run_counting(with_libs(
        cargo()
            .args(["test", "--workspace", "--all-features"])
            .args(args),
        &env,
    ))?;
    let bare = run_counting(cargo().arg("test").args(&packages).args(args))?;
    counts.add(&bare);
    if args.is_empty() {
        // The Python package through Python, as its users install and call it.
        counts.add(&python_tests()?);
    }
    // One closing line for the whole workspace: cargo's last block is often a doc-test
    // binary with nothing in it, which says "0 passed" about a run of hundreds of tests.
    println!(
        "summary: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    if counts.passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

#[derive(Default, Debug, PartialEq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    fn add(&mut self, other: &TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Adds the counts of pytest's closing line, `12 passed, 1 skipped in 3.45s` (with `-q`;
    /// `failed`, `error(s)` and `skipped` as they come).
    fn add_pytest_line(&mut self, line: &str) {
        let line = line.trim().trim_matches('=').trim();
        let counted = [" passed", " failed", " skipped", " error"];
        if !line.contains(" in ") || !counted.iter().any(|word| line.contains(word)) {
            return;
        }
        self.add_parts(line.split(" in ").next().unwrap_or("").split(','));
    }

    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
    fn add_result_line(&mut self, line: &str) {
        if let Some(rest) = line.trim().strip_prefix("test result: ") {
            self.add_parts(rest.split(['.', ';']));
        }
    }

    /// Adds each `<number> <what>` part (cargo's and pytest's words for the outcomes).
    fn add_parts<'a>(&mut self, parts: impl Iterator<Item = &'a str>) {
        for part in parts {
            let mut words = part.split_whitespace();
            let (Some(number), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += number,
                "failed" | "error" | "errors" => self.failed += number,
                "ignored" | "skipped" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// Runs `cmd` (a `cargo test`), passing its output through while adding up the result lines.
fn run_counting(cmd: &mut Command) -> Result<TestCounts> {
    run_counting_with(cmd, "cargo test", TestCounts::add_result_line)
}

/// Runs a test command, passing its output through while `count` adds up its result lines.
fn run_counting_with(
    cmd: &mut Command,
    what: &str,
    count: fn(&mut TestCounts, &str),
) -> Result<TestCounts> {
    eprintln!("$ {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {what}"))?;
    let mut counts = TestCounts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("reading {what}'s output"))?;
            println!("{line}");
            count(&mut counts, &line);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {what}"))?;
    if !status.success() {
        println!(
            "summary: {} passed, {} failed, {} skipped",
            counts.passed, counts.failed, counts.ignored
        );
        bail!("{what} failed ({status})");
    }
    Ok(counts)
}

/// The Python package's pytest suite, run in the package environment (`crate::python`).
fn python_tests() -> Result<TestCounts> {
    let python = crate::python::with_package()?;
    run_counting_with(
        python
            .command()
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(crate::python::package_dir().join("tests")),
        "pytest",
        TestCounts::add_pytest_line,
    )
}

/// The tests marked `#[ignore = "needs a CUDA GPU ..."]` (names containing `gpu`), run where
/// a GPU is present; elsewhere the test binaries are only built (`--no-run`), e.g. to copy them
/// to a GPU host. See docs/src/gpu.md for running them on a GPU host without a Rust toolchain.
pub fn gpu(args: &[String]) -> Result<()> {
    let env = setup::ensure(Flavour::Cuda)?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--all-features", "--release"])
        .args(args);
    if gpu_present() {
        cmd.args(["--", "--ignored", "gpu"]);
    } else {
        eprintln!(
            "no NVIDIA driver found (/dev/nvidiactl): building the GPU tests, not running them"
        );
        cmd.arg("--no-run");
    }
    sh(with_libs(&mut cmd, &env))
}

/// An NVIDIA driver is loaded (its control device exists).
fn gpu_present() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

fn with_libs<'a>(cmd: &'a mut Command, env: &Provisioned) -> &'a mut Command {
    cmd.env("LD_LIBRARY_PATH", env.ld_library_path())
}

/// Keeps the CUDA flavour when the user set it up, rather than switching back to the CPU one.
fn linked_flavour() -> Flavour {
    let link = crate::util::project_root().join(".libtorch");
    match std::fs::read_link(link) {
        Ok(dest) if dest.to_string_lossy().contains("-cu130") => Flavour::Cuda,
        _ => Flavour::Cpu,
    }
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn result_lines_are_added_up() {
        let mut counts = TestCounts::default();
        counts.add_result_line(
            "test result: ok. 18 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        );
        counts.add_result_line("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured");
        counts.add_result_line("running 4 tests");
        counts.add_pytest_line("40 passed, 2 skipped, 1 failed in 12.34s");
        counts.add_pytest_line("=============== 3 passed in 0.5s ===============");
        counts.add_pytest_line("tests/test_torch.py ....   [ 50%]");
        counts.add_pytest_line("2 skipped in 0.1s");
        assert_eq!(
            counts,
            TestCounts {
                passed: 64,
                failed: 2,
                ignored: 6
            }
        );
    }
}
