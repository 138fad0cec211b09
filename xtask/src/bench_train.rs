//! `cargo xtask bench train [--train-per-class N] [--steps N] [--threads N] [--workers 0,2]
//! [--skip-pytorch]`: stage-1 (SupCon pre-training) throughput of the release `supcon` binary
//! against the equivalent PyTorch training step (`benches/train_pytorch.py`), on the same
//! machine in the same run, each with `--threads` (2) compute threads.
//!
//! Both sides include the Fashion-MNIST two-view augmentation in the timed loop (supcon: the
//! batch writer of supcon-augment inside each step's time; PyTorch: torchvision's PIL
//! transforms in a DataLoader), the resnet-tiny + MLP head forward and backward, the SupCon
//! loss (supcon: supcon-loss's CPU backend outside libtorch; PyTorch: SupContrast's
//! SupConLoss) and SGD with momentum. Batch 256, two views, Fashion-MNIST's real images.
//!
//! supcon runs `supcon pretrain` for one epoch on `--train-per-class` images per class and
//! reports the images/s of its `metrics.jsonl` step records (windows of 5 steps; the first
//! window, with libtorch's warm-up, is left out). PyTorch runs 3 warm-up steps and `--steps`
//! timed ones for each DataLoader worker count in `--workers`; the best is compared (the
//! stronger baseline). Writes `target/bench-results/train.json`; the goal is a ratio ≥ 1.

use crate::bench_augment::{bench_python, json_line};
use crate::setup::{self, Flavour};
use crate::util::{count, field, machine, OptionArgs};
use crate::util::{project_root, run as sh, write_bench_result};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

struct Options {
    train_per_class: usize,
    steps: usize,
    threads: usize,
    workers: Vec<usize>,
    skip_pytorch: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        train_per_class: 700,
        steps: 20,
        threads: 2,
        workers: vec![0, 2],
        skip_pytorch: false,
    };
    let mut args = OptionArgs::new(args);
    while let Some(arg) = args.next_option() {
        match arg {
            "--train-per-class" => {
                o.train_per_class = args.count(arg)?;
            }
            "--steps" => o.steps = args.count(arg)?,
            "--threads" => o.threads = args.count(arg)?,
            "--workers" => {
                o.workers = args
                    .value(arg)?
                    .split(',')
                    .map(|w| count("--workers", w))
                    .collect::<Result<_>>()?;
            }
            "--skip-pytorch" => o.skip_pytorch = true,
            other => bail!(
                "unknown option `{other}` for `cargo xtask bench train` (--train-per-class N, \
                 --steps N, --threads N, --workers 0,2, --skip-pytorch)"
            ),
        }
    }
    if o.steps == 0 || o.threads == 0 || o.train_per_class == 0 || o.workers.is_empty() {
        bail!("--steps, --threads and --train-per-class must be at least 1, --workers not empty");
    }
    Ok(o)
}

/// Images/s over the step records of `metrics.jsonl`, first window left out. Every window
/// holds the same number of steps, so the overall rate is the harmonic mean of the windows'.
fn supcon_rate(metrics: &Path) -> Result<(f64, usize)> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("reading {}", metrics.display()))?;
    let rates: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"step\"") && l.contains("\"stage\":\"pretrain\""))
        .filter_map(|l| field(l, "images_per_second"))
        .collect();
    if rates.len() < 2 {
        bail!(
            "{} has {} pre-training step records; need at least 2 (raise --train-per-class)",
            metrics.display(),
            rates.len()
        );
    }
    let timed = &rates[1..];
    let rate = timed.len() as f64 / timed.iter().map(|r| 1.0 / r).sum::<f64>();
    Ok((rate, timed.len()))
}

fn run_supcon(binary: &Path, o: &Options, ld_library_path: &str) -> Result<(f64, usize)> {
    let runs_dir = project_root().join("target").join("bench-train");
    let mut cmd = Command::new(binary);
    cmd.current_dir(project_root())
        .args([
            "--quiet",
            "pretrain",
            "--preset",
            "quick-cpu",
            "--epochs",
            "1",
        ])
        .args(["--train-per-class", &o.train_per_class.to_string()])
        .args(["--threads", &o.threads.to_string()])
        .arg("--runs-dir")
        .arg(&runs_dir)
        .args(["--name", "bench", "--overwrite", "--no-robustness"])
        // The step of benches/train_pytorch.py, whatever the default preset trains with.
        .args(["--views", "2", "--lr", "0.1", "--temperature", "0.1"])
        .args(["--set", "pretrain.augment=fashion-mnist"])
        .args(["--set", "checkpoint.log_every_steps=5"])
        .env("RAYON_NUM_THREADS", o.threads.to_string())
        .env("LD_LIBRARY_PATH", ld_library_path);
    sh(&mut cmd)?;
    supcon_rate(&runs_dir.join("bench").join("metrics.jsonl"))
}

fn run_pytorch(
    python: &crate::bench_augment::PythonEnv,
    o: &Options,
    workers: usize,
) -> Result<f64> {
    let script = project_root().join("benches").join("train_pytorch.py");
    let output = python
        .command()
        .arg(&script)
        .arg("--json")
        .args(["--steps", &o.steps.to_string()])
        .args(["--threads", &o.threads.to_string()])
        .args(["--workers", &workers.to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let line = json_line(&output, "train_pytorch.py")?;
    eprintln!("PyTorch ({workers} workers): {line}");
    field(&line, "img_per_s").with_context(|| format!("no img_per_s in {line}"))
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let python = if o.skip_pytorch {
        None
    } else {
        Some(bench_python()?)
    };
    let env = setup::ensure(Flavour::Cpu)?;
    let binary = crate::train::build_supcon()?;

    let (ours, windows) = run_supcon(&binary, &o, &env.ld_library_path())?;
    println!(
        "supcon pretrain: {ours:.0} images/s ({windows} windows of 5 steps, batch 256 x 2 views)"
    );
    let mut theirs: Vec<(usize, f64)> = Vec::new();
    if let Some(python) = &python {
        for &workers in &o.workers {
            let rate = run_pytorch(python, &o, workers)?;
            println!("PyTorch ({workers} DataLoader workers): {rate:.0} images/s");
            theirs.push((workers, rate));
        }
    }
    let best = theirs.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
    let ratio = best.map(|(_, t)| ours / t);
    match (best, ratio) {
        (Some((workers, t)), Some(r)) => println!(
            "stage-1 images/s: supcon {ours:.0} | PyTorch {t:.0} ({workers} workers) | ratio {r:.2} (goal ≥ 1.0)"
        ),
        _ => println!("stage-1 images/s: supcon {ours:.0} (PyTorch skipped)"),
    }
    let per_workers: Vec<String> = theirs
        .iter()
        .map(|(w, r)| format!("{{\"workers\": {w}, \"img_per_s\": {r:.1}}}"))
        .collect();
    let json = format!(
        "{{\n  \"benchmark\": \"train\",\n  \"what\": \"SupCon stage-1 step: Fashion-MNIST two-view augmentation + \
         resnet-tiny (16/32/64) + MLP head 64-64-128 forward/backward + SupCon loss + SGD momentum, batch 256\",\n  \
         \"supcon_img_per_s\": {ours:.1},\n  \"pytorch_img_per_s\": {},\n  \"pytorch_workers\": {},\n  \
         \"pytorch_runs\": [{}],\n  \"ratio\": {},\n  \"threads\": {},\n  \"supcon_train_per_class\": {},\n  \
         \"pytorch_steps\": {},\n  \"machine\": \"{}\"\n}}\n",
        best.map_or("null".into(), |(_, t)| format!("{t:.1}")),
        best.map_or("null".into(), |(w, _)| w.to_string()),
        per_workers.join(", "),
        ratio.map_or("null".into(), |r| format!("{r:.3}")),
        o.threads,
        o.train_per_class,
        o.steps,
        machine().replace('"', "'"),
    );
    let path = write_bench_result("train", &json)?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supcon_rate_is_the_harmonic_mean_after_the_first_window() {
        let dir = std::env::temp_dir().join(format!("bench-train-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let line = |kind: &str, ips: f64| {
            format!(
                "{{\"stage\":\"pretrain\",\"kind\":\"{kind}\",\"epoch\":0,\"step\":5,\"loss\":5.0,\"lr\":0.1,\
                 \"images_per_second\":{ips},\"val_top1\":null,\"train_top1\":null,\"wall_seconds\":1.0}}\n"
            )
        };
        let text = [
            line("step", 10.0),
            line("step", 300.0),
            line("step", 600.0),
            line("epoch", 1.0),
        ]
        .concat();
        std::fs::write(&path, text).unwrap();
        let (rate, windows) = supcon_rate(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(windows, 2);
        assert!((rate - 400.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn options_parse() {
        let o = parse(&[
            "--workers".into(),
            "0, 4".into(),
            "--steps".into(),
            "7".into(),
        ])
        .unwrap();
        assert_eq!((o.workers, o.steps, o.threads), (vec![0, 4], 7, 2));
        assert!(parse(&["--steps".into(), "0".into()]).is_err());
        assert!(parse(&["--what".into()]).is_err());
    }
}
