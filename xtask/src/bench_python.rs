//! `cargo xtask bench python [--rows 2048,8192,32768,131072] [--repeats 5] [--limit-gib 16]`:
//! forward + backward of the SupCon loss as a PyTorch user calls it — `supcon.torch.SupConLoss`
//! against pytorch-metric-learning's `SupConLoss` and SupContrast's formulation — at each N
//! rows (D = 128), one process per case (`benches/python_losses.py`) under an allocation limit,
//! in the same run on the same machine. Prints the median times and peak memory side by side,
//! the ratios, and the largest N each ran within the limit; writes
//! `target/bench-results/python.json`.

use crate::util::{field, machine, project_root, write_bench_result, OptionArgs};
use anyhow::{bail, Context, Result};

const IMPLEMENTATIONS: [&str; 3] = ["supcon", "pml", "supcontrast"];

struct Options {
    rows: Vec<usize>,
    repeats: usize,
    limit_gib: f64,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        rows: vec![2048, 8192, 32768, 131_072],
        repeats: 5,
        limit_gib: 16.0,
    };
    let mut args = OptionArgs::new(args);
    while let Some(arg) = args.next_option() {
        match arg {
            "--rows" => {
                o.rows = args
                    .value(arg)?
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .context("--rows: a comma-separated list of N")
                    })
                    .collect::<Result<_>>()?
            }
            "--repeats" => o.repeats = args.count(arg)?,
            "--limit-gib" => {
                o.limit_gib = args.value(arg)?.parse().context("--limit-gib: a number")?
            }
            other => bail!(
                "unknown option `{other}` for `cargo xtask bench python` \
                 (--rows N,N,…, --repeats N, --limit-gib G)"
            ),
        }
    }
    Ok(o)
}

/// One case's JSON line (`"ok": false` with the error when it could not run).
fn case(
    python: &crate::python::PythonEnv,
    implementation: &str,
    rows: usize,
    o: &Options,
) -> Result<String> {
    // The largest cases take minutes per repeat: fewer repeats there (the median of 3, or 1).
    let repeats = match rows {
        0..=16_384 => o.repeats,
        16_385..=65_536 => o.repeats.min(3),
        _ => 1,
    };
    let output = python
        .command()
        .arg(project_root().join("benches").join("python_losses.py"))
        .args(["--impl", implementation, "--rows", &rows.to_string()])
        .args(["--repeats", &repeats.to_string()])
        .args(["--limit-gib", &o.limit_gib.to_string()])
        // Two threads for every side: PyTorch's (the script's --threads) and our loss's.
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .context("running benches/python_losses.py")?;
    if !output.status.success() {
        // Killed by the limit (a failed allocation in Rust aborts): a case that did not run.
        return Ok(format!(
            "{{\"impl\": {implementation:?}, \"rows\": {rows}, \"ok\": false, \"error\": \"exited with {}\"}}",
            output.status
        ));
    }
    crate::bench_augment::json_line(&output, &format!("{implementation} at N = {rows}"))
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let python = crate::python::with_package()?;
    let mut lines = Vec::new();
    let mut failed_at = [None::<usize>; 3];
    println!(
        "| N | supcon | pytorch-metric-learning | SupContrast | best reference / supcon | memory: supcon | pml | SupContrast |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &rows in &o.rows {
        let mut medians = [None::<f64>; 3];
        let mut memory = [None::<f64>; 3];
        for (i, implementation) in IMPLEMENTATIONS.iter().enumerate() {
            if failed_at[i].is_some() {
                continue;
            }
            let line = case(&python, implementation, rows, &o)?;
            eprintln!("{line}");
            if line.contains("\"ok\": true") {
                medians[i] = field(&line, "median_s");
                memory[i] = field(&line, "peak_extra_mib");
            } else {
                failed_at[i] = Some(rows);
            }
            lines.push(line);
        }
        let show =
            |v: Option<f64>, unit: &str| v.map_or("—".into(), |v| format!("{v:.3} {unit}"));
        let best_reference = medians[1..].iter().flatten().copied().reduce(f64::min);
        let ratio = match (best_reference, medians[0]) {
            (Some(r), Some(ours)) => format!("{:.2}×", r / ours),
            _ => "—".into(),
        };
        println!(
            "| {rows} | {} | {} | {} | {ratio} | {} | {} | {} |",
            show(medians[0], "s"),
            show(medians[1], "s"),
            show(medians[2], "s"),
            show(memory[0], "MiB"),
            show(memory[1], "MiB"),
            show(memory[2], "MiB"),
        );
    }
    for (implementation, failed) in IMPLEMENTATIONS.iter().zip(failed_at) {
        let largest = o
            .rows
            .iter()
            .filter(|&&n| failed.is_none_or(|f| n < f))
            .max();
        println!(
            "{implementation}: largest N run within {} GiB: {}",
            o.limit_gib,
            largest.map_or("none".into(), |n| n.to_string())
        );
    }
    let json = format!(
        "{{\"machine\": {:?}, \"limit_gib\": {}, \"cases\": [{}]}}",
        machine(),
        o.limit_gib,
        lines.join(", ")
    );
    let path = write_bench_result("python", &json)?;
    println!("results: {}", path.display());
    Ok(())
}
