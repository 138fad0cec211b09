//! `cargo xtask train`: the README's first command.
//!
//! Installs what is missing (Fashion-MNIST from Debian, libtorch), builds the `supcon` binary in
//! release mode and runs `supcon train` with the default preset (quick-cpu) and the user's
//! extra arguments, then says where the run folder and its report are.
//!
//! `cargo xtask train --curve` runs each method's recipe at several budgets instead (each run
//! is a final recipe: it reads the test set once) and draws accuracy against training time.

use crate::setup::{self, Flavour, Provisioned};
use crate::util::{build_release, project_root, run as sh};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Budgets (epochs of the encoder's stage) of `--curve` unless `--budgets` says otherwise.
const CURVE_BUDGETS: &str = "1,2,4,8,16";
/// Methods of `--curve`: (name, `supcon` subcommand, preset).
const CURVE_METHODS: [(&str, &str, &str); 3] = [
    ("supcon", "train", "quick-cpu"),
    ("simclr", "train", "quick-cpu-simclr"),
    ("ce", "ce", "quick-cpu"),
];

pub fn run(args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        eprintln!(
            "cargo xtask train [ARGS...]: build `supcon` (release) and run `supcon train ARGS...`\n\
             (default preset quick-cpu: Fashion-MNIST, ≤ 20 min on 2 CPU cores).\n\
             Examples: cargo xtask train --with-baseline\n          \
             cargo xtask train --name my-run --set pretrain.epochs=2\n\
             `supcon train --help` lists every option.\n\n\
             cargo xtask train --ranks R [ARGS...]: the same over R processes started by mpirun\n\
             (data parallel over MPI; each rank gets cores/R threads unless --threads says).\n\n\
             cargo xtask train --curve [--budgets {CURVE_BUDGETS}] [--methods supcon,simclr,ce] [ARGS...]:\n\
             every method at every budget (epochs) in runs/curve/<method>-<E>ep (finished runs are\n\
             kept, so an interrupted curve continues), then `supcon curve --runs runs/curve`:\n\
             runs/curve/accuracy-vs-time.png and .md. ARGS go to every run."
        );
        return Ok(());
    }
    let env = setup::ensure(Flavour::Cpu)?;
    let (ranks, args) = take_ranks(args)?;
    let binary = match ranks {
        None => build_supcon()?,
        Some(_) => build_release(
            &["-p", "supcon-train", "--bin", "supcon", "--features", "mpi"],
            "supcon",
        )?,
    };
    if args.iter().any(|a| a == "--curve") {
        if ranks.is_some() {
            bail!("--curve runs one process per recipe; drop --ranks");
        }
        return curve(&binary, &env, &args);
    }
    let started = std::time::Instant::now();
    let mut cmd = match ranks {
        None => supcon(&binary, &env),
        Some(ranks) => mpirun(&binary, &env, ranks)?,
    };
    cmd.arg("train").args(&args);
    if let Some(ranks) = ranks {
        if !args
            .iter()
            .any(|a| a == "--threads" || a.starts_with("--threads="))
        {
            // The ranks share the machine's cores.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cmd.args(["--threads", &(cores / ranks).max(1).to_string()]);
        }
    }
    eprintln!("$ {}", crate::util::display(&cmd));
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

/// `--ranks R` taken out of the arguments (the rest go to `supcon train`).
fn take_ranks(args: &[String]) -> Result<(Option<usize>, Vec<String>)> {
    let mut ranks = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = match arg.as_str() {
            "--ranks" => Some(iter.next().context("--ranks needs a number")?.clone()),
            other => other.strip_prefix("--ranks=").map(str::to_string),
        };
        match value {
            Some(value) => {
                let r: usize =
                    value.parse().ok().filter(|&r| r >= 1).with_context(|| {
                        format!("--ranks: `{value}` is not a number of ranks ≥ 1")
                    })?;
                ranks = Some(r);
            }
            None => rest.push(arg.clone()),
        }
    }
    Ok((ranks, rest))
}

/// `mpirun -np ranks <binary>` on this machine: as root it needs Open MPI's permission, more
/// ranks than cores need `--oversubscribe`, and the ranks' threads are not pinned to a core
/// each.
fn mpirun(binary: &Path, env: &Provisioned, ranks: usize) -> Result<Command> {
    if !crate::util::have("mpirun") {
        bail!("mpirun is missing: `cargo xtask setup` installs Debian's openmpi-bin");
    }
    let mut cmd = Command::new("mpirun");
    cmd.current_dir(project_root())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("LD_LIBRARY_PATH", env.ld_library_path())
        .args([
            "--oversubscribe",
            "--bind-to",
            "none",
            "-x",
            "LD_LIBRARY_PATH",
        ])
        .args(["-np", &ranks.to_string()])
        .arg(binary);
    Ok(cmd)
}

/// The release `supcon` binary, built (incrementally) first.
pub fn build_supcon() -> Result<PathBuf> {
    build_release(&["-p", "supcon-train", "--bin", "supcon"], "supcon")
}

/// The `supcon` binary, run from the repository root.
fn supcon(binary: &Path, env: &Provisioned) -> Command {
    let mut cmd = Command::new(binary);
    cmd.current_dir(project_root())
        // libtorch has an rpath; the library path is for NVRTC and friends.
        .env("LD_LIBRARY_PATH", env.ld_library_path());
    cmd
}

/// `--curve`: every (method, budget) run that has no report yet, then the figure and table.
fn curve(binary: &Path, env: &Provisioned, args: &[String]) -> Result<()> {
    let mut budgets = CURVE_BUDGETS.to_string();
    let mut methods: Vec<String> = CURVE_METHODS.iter().map(|m| m.0.to_string()).collect();
    let mut extra = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--curve" => {}
            "--budgets" => budgets = rest.next().context("--budgets needs a value")?.clone(),
            "--methods" => {
                let list = rest.next().context("--methods needs a value")?;
                methods = list.split(',').map(|m| m.trim().to_string()).collect();
            }
            "--name" | "--runs-dir" | "--epochs" | "--preset" => {
                bail!("--curve chooses {arg} itself (runs/curve/<method>-<E>ep)")
            }
            _ => extra.push(arg.clone()),
        }
    }
    let budgets: Vec<u32> = budgets
        .split(',')
        .map(|b| {
            b.trim()
                .parse()
                .with_context(|| format!("--budgets: `{b}` is not a number of epochs"))
        })
        .collect::<Result<_>>()?;
    let runs_dir = Path::new("runs").join("curve");
    for method in &methods {
        let Some(&(_, command, preset)) = CURVE_METHODS.iter().find(|m| m.0 == method) else {
            let known: Vec<&str> = CURVE_METHODS.iter().map(|m| m.0).collect();
            bail!("--methods: `{method}` is not one of {}", known.join(", "));
        };
        for &epochs in &budgets {
            let name = format!("{method}-{epochs}ep");
            let run_dir = runs_dir.join(&name);
            let mut cmd = supcon(binary, env);
            cmd.args([command, "--quiet"]);
            if project_root().join(&run_dir).join("report.json").exists() {
                eprintln!("{name}: finished earlier, kept");
                continue;
            } else if project_root().join(&run_dir).join("config.toml").exists() {
                // Interrupted earlier: continue exactly where its checkpoints left off.
                cmd.arg("--resume").arg(&run_dir);
            } else {
                cmd.args(["--preset", preset, "--name", &name])
                    .args(["--epochs", &epochs.to_string()])
                    .arg("--runs-dir")
                    .arg(&runs_dir)
                    .args(&extra);
            }
            sh(&mut cmd)?;
        }
    }
    sh(supcon(binary, env)
        .arg("curve")
        .arg("--runs")
        .arg(&runs_dir))
}
