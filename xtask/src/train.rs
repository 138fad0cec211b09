//! `cargo xtask train`: the README's first command.
//!
//! Installs what is missing (Fashion-MNIST from Debian, libtorch), builds the `supcon` binary in
//! release mode and runs `supcon train` with the default preset (quick-cpu) and the user's
//! extra arguments, then says where the run folder and its report are.

use crate::setup::{self, Flavour};
use crate::util::{cargo, project_root, release_binary, run as sh};
use anyhow::{bail, Context, Result};
use std::process::Command;

pub fn run(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!(
            "cargo xtask train [ARGS...]: build `supcon` (release) and run `supcon train ARGS...`\n\
             (default preset quick-cpu: Fashion-MNIST, ≤ 30 min on 2 CPU cores).\n\
             Examples: cargo xtask train --with-baseline\n          \
             cargo xtask train --name my-run --set pretrain.epochs=2\n\
             `supcon train --help` lists every option."
        );
        return Ok(());
    }
    let env = setup::ensure(Flavour::Cpu)?;
    sh(cargo().args([
        "build",
        "--release",
        "-p",
        "supcon-train",
        "--bin",
        "supcon",
    ]))?;
    let binary = release_binary("supcon");
    if !binary.exists() {
        bail!("built `supcon` but found no binary at {}", binary.display());
    }
    let started = std::time::Instant::now();
    let mut cmd = Command::new(&binary);
    cmd.current_dir(project_root())
        .arg("train")
        .args(args)
        // libtorch has an rpath; the library path is for NVRTC and friends.
        .env("LD_LIBRARY_PATH", env.ld_library_path());
    eprintln!("$ {} train {}", binary.display(), args.join(" "));
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    if !status.success() {
        bail!("`supcon train` failed ({status}) after {minutes:.1} min");
    }
    eprintln!(
        "`supcon train` finished in {minutes:.1} min; the run folder (printed above) holds \
         report.md, report.json, metrics.jsonl, plots/ and checkpoints/"
    );
    Ok(())
}
