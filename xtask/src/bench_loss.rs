//! `cargo xtask bench loss`: the CPU reference backend of `supcon-loss` against its libtorch
//! backend (the dense SupContrast formulation with autograd, what a PyTorch user runs), on
//! the same machine in the same run, with the same thread count.
//!
//! Each (backend, size) runs in its own process (`supcon-loss`'s `bench_backends` example,
//! release build) so that its peak resident memory is its own. Results go to
//! `target/bench-results/loss.json`.

use crate::util::{build_release, field, machine, project_root, write_bench_result};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

const HELP: &str = "\
cargo xtask bench loss [--rows 512,2048,8192] [--dim 128] [--classes 10] [--threads 2] [--reps N]

Forward + backward of the SupCon loss (2 views, random labels): CPU reference vs libtorch.";

struct Options {
    rows: Vec<usize>,
    dim: usize,
    classes: usize,
    threads: usize,
    reps: Option<usize>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        rows: vec![512, 2048, 8192],
        dim: 128,
        classes: 10,
        threads: 2,
        reps: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n\n{HELP}"))?;
        match flag.as_str() {
            "--rows" => {
                options.rows = value
                    .split(',')
                    .map(|r| r.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--rows {value}"))?
            }
            "--dim" => options.dim = value.parse()?,
            "--classes" => options.classes = value.parse()?,
            "--threads" => options.threads = value.parse()?,
            "--reps" => options.reps = Some(value.parse()?),
            other => bail!("unknown option `{other}`\n\n{HELP}"),
        }
    }
    Ok(options)
}

/// One measurement printed by the example (a flat JSON object of numbers and one string).
struct Measurement {
    median_ms: f64,
    min_ms: f64,
    loss: f64,
    peak_rss_mib: Option<f64>,
    extra_rss_mib: Option<f64>,
}

fn measure(exe: &PathBuf, backend: &str, rows: usize, o: &Options) -> Result<Measurement> {
    // Fewer repetitions where one call takes seconds.
    let reps = o.reps.unwrap_or(match rows {
        0..=1024 => 20,
        1025..=4096 => 10,
        _ => 3,
    });
    let threads = o.threads.to_string();
    let output = Command::new(exe)
        .args(["--backend", backend, "--rows", &rows.to_string()])
        .args([
            "--dim",
            &o.dim.to_string(),
            "--classes",
            &o.classes.to_string(),
        ])
        .args(["--threads", &threads, "--reps", &reps.to_string()])
        .env("RAYON_NUM_THREADS", &threads)
        .env("OMP_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{} --backend {backend} --rows {rows} failed ({}):\n{}{}",
            exe.display(),
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the benchmark printed no JSON line")?;
    let get = |key: &str| field(line, key).with_context(|| format!("no `{key}` in {line}"));
    Ok(Measurement {
        median_ms: get("median_ms")?,
        min_ms: get("min_ms")?,
        loss: get("loss")?,
        peak_rss_mib: field(line, "peak_rss_mib"),
        extra_rss_mib: field(line, "extra_rss_mib"),
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.1}"))
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    // libtorch must be there before the example links against it.
    if !project_root().join(".libtorch").exists() {
        crate::setup::ensure(crate::setup::Flavour::Cpu)?;
    }
    let exe = build_release(
        &[
            "-p",
            "supcon-loss",
            "--features",
            "tch",
            "--example",
            "bench_backends",
        ],
        "examples/bench_backends",
    )?;
    let machine = machine();
    eprintln!(
        "SupCon loss, forward + backward, dim {}, {} classes, {} threads: {machine}",
        o.dim, o.classes, o.threads
    );
    eprintln!(
        "{:>6} {:>12} {:>14} {:>8} {:>14} {:>16} {:>16} {:>16}",
        "N",
        "ours (ms)",
        "libtorch (ms)",
        "ratio",
        "ours +MiB",
        "libtorch +MiB",
        "streaming (ms)",
        "streaming +MiB"
    );
    let mut rows = Vec::new();
    for &n in &o.rows {
        let ours = measure(&exe, "cpu", n, &o)?;
        let theirs = measure(&exe, "tch", n, &o)?;
        // Ours without the similarity cache: the O(N·D)-memory path large N takes.
        let streaming = measure(&exe, "cpu-streaming", n, &o)?;
        let rel = (ours.loss - theirs.loss).abs() / ours.loss.abs().max(1e-12);
        if rel > 1e-3 {
            bail!(
                "N = {n}: the backends disagree (cpu loss {}, libtorch loss {})",
                ours.loss,
                theirs.loss
            );
        }
        let ratio = theirs.median_ms / ours.median_ms;
        eprintln!(
            "{n:>6} {:>12.2} {:>14.2} {ratio:>7.2}x {:>14} {:>16} {:>16.2} {:>16}",
            ours.median_ms,
            theirs.median_ms,
            opt(ours.extra_rss_mib),
            opt(theirs.extra_rss_mib),
            streaming.median_ms,
            opt(streaming.extra_rss_mib)
        );
        rows.push(format!(
            "  {{\"n\": {n}, \"dim\": {}, \"classes\": {}, \"threads\": {}, \
             \"ours_ms\": {:.3}, \"libtorch_ms\": {:.3}, \"ratio\": {ratio:.3}, \
             \"ours_min_ms\": {:.3}, \"libtorch_min_ms\": {:.3}, \
             \"ours_peak_rss_mib\": {}, \"libtorch_peak_rss_mib\": {}, \
             \"ours_extra_rss_mib\": {}, \"libtorch_extra_rss_mib\": {}, \
             \"streaming_ms\": {:.3}, \"streaming_extra_rss_mib\": {}, \
             \"loss\": {}, \"machine\": \"{}\"}}",
            o.dim,
            o.classes,
            o.threads,
            ours.median_ms,
            theirs.median_ms,
            ours.min_ms,
            theirs.min_ms,
            opt(ours.peak_rss_mib),
            opt(theirs.peak_rss_mib),
            opt(ours.extra_rss_mib),
            opt(theirs.extra_rss_mib),
            streaming.median_ms,
            opt(streaming.extra_rss_mib),
            ours.loss,
            machine.replace('"', "'"),
        ));
    }
    let path = write_bench_result("loss", &format!("[\n{}\n]\n", rows.join(",\n")))?;
    eprintln!(
        "ratio = libtorch time / ours; written to {}",
        path.display()
    );
    Ok(())
}
