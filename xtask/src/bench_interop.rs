//! `cargo xtask bench interop [--batch N] [--seed N] [--threads N] [--tolerance X]`: a real
//! PyTorch SupContrast model against supcon-models, side by side.
//!
//! `benches/supcontrast_interop.py` (in the benchmark venv of `bench_augment::bench_python`)
//! builds SupContrast's `SupConResNet('resnet18', 'mlp', 128)`, gives its BN layers random
//! scales, shifts and running statistics, and writes its eval-mode state dict (safetensors),
//! a batch of random 32×32 RGB inputs and its encoder features and projections (.npy) to
//! `target/interop/`. The `supcontrast_interop` example of supcon-models (release build) loads
//! the state dict strictly into a `SupConModel` and compares. Prints the largest absolute
//! differences, writes them to `target/bench-results/interop.json`, and fails when either is
//! above `--tolerance` (1e-4).

use crate::bench_augment::{bench_python, json_line};
use crate::util::{build_release, field, machine, project_root, write_bench_result};
use anyhow::{bail, Context, Result};
use std::process::Command;

struct Options {
    batch: usize,
    seed: u64,
    threads: usize,
    tolerance: f64,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        batch: 16,
        seed: 0,
        threads: 2,
        tolerance: 1e-4,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--batch" => o.batch = value()?.parse().context("--batch takes an integer")?,
            "--seed" => o.seed = value()?.parse().context("--seed takes an integer")?,
            "--threads" => o.threads = value()?.parse().context("--threads takes an integer")?,
            "--tolerance" => {
                o.tolerance = value()?.parse().context("--tolerance takes a number")?;
            }
            other => bail!(
                "unknown option `{other}` for `cargo xtask bench interop` \
                 (--batch N, --seed N, --threads N, --tolerance X)"
            ),
        }
    }
    if o.batch == 0 || o.threads == 0 {
        bail!("--batch and --threads must be at least 1");
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let python = bench_python()?;
    // libtorch must be there before the example links against it.
    if !project_root().join(".libtorch").exists() {
        crate::setup::ensure(crate::setup::Flavour::Cpu)?;
    }
    let exe = build_release(
        &["-p", "supcon-models", "--example", "supcontrast_interop"],
        "examples/supcontrast_interop",
    )?;
    let dir = project_root().join("target").join("interop");
    let threads = o.threads.to_string();

    let script = project_root()
        .join("benches")
        .join("supcontrast_interop.py");
    let output = python
        .command()
        .arg(&script)
        .arg("--out-dir")
        .arg(&dir)
        .args(["--batch", &o.batch.to_string()])
        .args(["--seed", &o.seed.to_string()])
        .args(["--threads", &threads, "--json"])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let theirs = json_line(&output, "supcontrast_interop.py")?;
    eprintln!("PyTorch: {theirs}");

    let output = Command::new(&exe)
        .arg("--dir")
        .arg(&dir)
        .args(["--threads", &threads, "--json"])
        .env("OMP_NUM_THREADS", &threads)
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let ours = json_line(&output, "supcontrast_interop example")?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if !line.starts_with('{') {
            println!("{line}");
        }
    }
    let get = |key: &str| field(&ours, key).with_context(|| format!("no `{key}` in {ours}"));
    let features = get("max_abs_diff_features")?;
    let projections = get("max_abs_diff_projections")?;
    let tensors = get("tensors")?;
    let torch = theirs
        .split("\"torch\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?");
    println!(
        "SupContrast SupConResNet(resnet18, mlp, 128) → supcon-models SupConModel: {tensors} tensors \
         loaded strictly; max |Δ| projections {projections:.3e}, features {features:.3e} \
         (tolerance {:e})",
        o.tolerance
    );
    let json = format!(
        "{{\n  \"benchmark\": \"interop\",\n  \"what\": \"SupContrast SupConResNet('resnet18', 'mlp', 128) \
         state dict (safetensors, BN buffers and num_batches_tracked included) loaded strictly into \
         supcon-models' SupConModel; eval-mode outputs on the same random 32x32 RGB batch\",\n  \
         \"tensors\": {tensors},\n  \"batch\": {},\n  \"max_abs_diff_projections\": {projections:e},\n  \
         \"max_abs_diff_features\": {features:e},\n  \"feature_abs_max\": {},\n  \"tolerance\": {:e},\n  \
         \"seed\": {},\n  \"threads\": {},\n  \"torch\": \"{torch}\",\n  \"machine\": \"{}\"\n}}\n",
        o.batch,
        field(&ours, "feature_abs_max").map_or("null".into(), |v| v.to_string()),
        o.tolerance,
        o.seed,
        o.threads,
        machine().replace('"', "'"),
    );
    let path = write_bench_result("interop", &json)?;
    println!("wrote {}", path.display());
    if projections > o.tolerance || features > o.tolerance {
        bail!(
            "supcon-models and SupContrast disagree: max |Δ| projections {projections:e}, \
             features {features:e} > {:e}",
            o.tolerance
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let o = parse(&[
            "--batch".into(),
            "4".into(),
            "--tolerance".into(),
            "1e-3".into(),
        ])
        .unwrap();
        assert_eq!((o.batch, o.seed, o.threads), (4, 0, 2));
        assert_eq!(o.tolerance, 1e-3);
        assert!(parse(&["--batch".into(), "0".into()]).is_err());
        assert!(parse(&["--seed".into()]).is_err());
        assert!(parse(&["--what".into()]).is_err());
    }
}
