//! `cargo xtask bench loss`: the CPU reference backend of `supcon-loss` against its libtorch
//! backend (the dense SupContrast formulation with autograd, what a PyTorch user runs), on
//! the same machine in the same run, with the same thread count.
//!
//! Each (backend, size) runs in its own process (`supcon-loss`'s `bench_backends` example,
//! release build) so that its peak resident memory is its own, `--runs` times (5 by default),
//! the two sides alternating so that a slow spell of the machine hits both; each process
//! reports the median of its repetitions, and the bench prints the median and the range of
//! those over the runs (times and ratios), not a best run. Results go to
//! `target/bench-results/loss.json`.

use crate::util::{build_release, field, machine, project_root, write_bench_result};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

const HELP: &str = "\
cargo xtask bench loss [--rows 512,2048,8192] [--dim 128] [--classes 10] [--threads 2] [--reps N] [--runs 5]

Forward + backward of the SupCon loss (2 views, random labels): CPU reference vs libtorch,
each size measured in --runs processes per side (alternating); medians and ranges over them.";

struct Options {
    rows: Vec<usize>,
    dim: usize,
    classes: usize,
    threads: usize,
    reps: Option<usize>,
    runs: usize,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        rows: vec![512, 2048, 8192],
        dim: 128,
        classes: 10,
        threads: 2,
        reps: None,
        runs: 5,
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
            "--runs" => options.runs = value.parse::<usize>()?.max(1),
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

/// Median, smallest and largest of some values (the median of an even count is the mean of
/// the middle two).
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }

    /// `12.3 [11.9–13.0]`
    fn show(self, precision: usize) -> String {
        format!(
            "{:.p$} [{:.p$}–{:.p$}]",
            self.median,
            self.min,
            self.max,
            p = precision
        )
    }

    fn json(self) -> String {
        format!(
            "{{\"median\": {:.3}, \"min\": {:.3}, \"max\": {:.3}}}",
            self.median, self.min, self.max
        )
    }
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
        "{} run(s) per side; median [range] over the runs of each process's median time",
        o.runs
    );
    eprintln!(
        "{:>6} {:>24} {:>24} {:>22} {:>10} {:>14} {:>16} {:>15}",
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
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut streaming = Vec::new();
        for _ in 0..o.runs {
            ours.push(measure(&exe, "cpu", n, &o)?);
            theirs.push(measure(&exe, "tch", n, &o)?);
            // Ours without the similarity cache: the O(N·D)-memory path large N takes.
            streaming.push(measure(&exe, "cpu-streaming", n, &o)?);
        }
        let (first_ours, first_theirs) = (&ours[0], &theirs[0]);
        let rel = (first_ours.loss - first_theirs.loss).abs() / first_ours.loss.abs().max(1e-12);
        if rel > 1e-3 {
            bail!(
                "N = {n}: the backends disagree (cpu loss {}, libtorch loss {})",
                first_ours.loss,
                first_theirs.loss
            );
        }
        let times = |ms: &[Measurement]| ms.iter().map(|m| m.median_ms).collect::<Vec<_>>();
        let (ours_ms, theirs_ms, streaming_ms) = (times(&ours), times(&theirs), times(&streaming));
        let per_run_ratios: Vec<f64> = theirs_ms.iter().zip(&ours_ms).map(|(t, o)| t / o).collect();
        let (ours_spread, theirs_spread) = (Spread::of(&ours_ms), Spread::of(&theirs_ms));
        let ratio = theirs_spread.median / ours_spread.median;
        let ratio_range = Spread::of(&per_run_ratios);
        let streaming_spread = Spread::of(&streaming_ms);
        eprintln!(
            "{n:>6} {:>24} {:>24} {:>22} {:>10} {:>14} {:>16} {:>15}",
            ours_spread.show(2),
            theirs_spread.show(2),
            format!(
                "{ratio:.2}x [{:.2}–{:.2}]",
                ratio_range.min, ratio_range.max
            ),
            opt(first_ours.extra_rss_mib),
            opt(first_theirs.extra_rss_mib),
            format!("{:.2}", streaming_spread.median),
            opt(streaming[0].extra_rss_mib)
        );
        let list = |values: &[f64]| {
            values
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push(format!(
            "  {{\"n\": {n}, \"dim\": {}, \"classes\": {}, \"threads\": {}, \"runs\": {}, \
             \"ours_ms\": {:.3}, \"libtorch_ms\": {:.3}, \"ratio\": {ratio:.3}, \
             \"ratio_min\": {:.3}, \"ratio_max\": {:.3}, \
             \"ours\": {}, \"libtorch\": {}, \
             \"ours_runs_ms\": [{}], \"libtorch_runs_ms\": [{}], \
             \"ours_min_ms\": {:.3}, \"libtorch_min_ms\": {:.3}, \
             \"ours_peak_rss_mib\": {}, \"libtorch_peak_rss_mib\": {}, \
             \"ours_extra_rss_mib\": {}, \"libtorch_extra_rss_mib\": {}, \
             \"streaming_ms\": {:.3}, \"streaming_extra_rss_mib\": {}, \
             \"loss\": {}, \"machine\": \"{}\"}}",
            o.dim,
            o.classes,
            o.threads,
            o.runs,
            ours_spread.median,
            theirs_spread.median,
            ratio_range.min,
            ratio_range.max,
            ours_spread.json(),
            theirs_spread.json(),
            list(&ours_ms),
            list(&theirs_ms),
            ours.iter().map(|m| m.min_ms).fold(f64::INFINITY, f64::min),
            theirs
                .iter()
                .map(|m| m.min_ms)
                .fold(f64::INFINITY, f64::min),
            opt(first_ours.peak_rss_mib),
            opt(first_theirs.peak_rss_mib),
            opt(first_ours.extra_rss_mib),
            opt(first_theirs.extra_rss_mib),
            streaming_spread.median,
            opt(streaming[0].extra_rss_mib),
            first_ours.loss,
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
