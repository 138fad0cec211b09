//! `cargo xtask test`: the one test command, and `cargo xtask gpu-test`.

use crate::setup::{self, Flavour, Provisioned};
use crate::util::{cargo, run as sh};
use anyhow::Result;

/// Set-up, formatting, lints, then every test of the workspace with every feature on
/// (`tch` and `cuda` included: the CUDA kernels are compiled by NVRTC even without a GPU).
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
    sh(with_libs(
        cargo()
            .args(["test", "--workspace", "--all-features"])
            .args(args),
        &env,
    ))?;
    Ok(())
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

fn with_libs<'a>(
    cmd: &'a mut std::process::Command,
    env: &Provisioned,
) -> &'a mut std::process::Command {
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
