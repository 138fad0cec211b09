//! One measured backend of `cargo xtask bench loss` (run once per backend and size, each in
//! its own process so that its peak memory is its own).
//!
//! ```text
//! cargo run --release -p supcon-loss --features tch --example bench_backends -- \
//!     --backend cpu|cpu-streaming|tch --rows 2048 [--dim 128] [--classes 10] [--threads 2] [--reps 5] [--tile 128]
//! ```
//!
//! Times forward + backward (one `SupConBackend::compute` call: loss and ∂L/∂features) on
//! `rows` = batch · 2 views unit-norm random rows with random labels, after one warm-up call.
//! Prints one JSON object: the median / min time in ms, the peak resident memory of the
//! process (VmHWM) and the growth over the resident memory just before the first call.

use anyhow::{bail, Context, Result};
use ndarray::Array3;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use supcon_loss::TchBackend;
use supcon_loss::{CpuBackend, SupConBackend, SupConInput, SupConOptions};

struct Args {
    backend: String,
    rows: usize,
    dim: usize,
    classes: i64,
    threads: usize,
    reps: usize,
    /// Tile edge of the CPU backend (its default, [`supcon_loss::DEFAULT_TILE`], unless set).
    tile: usize,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        backend: "cpu".into(),
        rows: 2048,
        dim: 128,
        classes: 10,
        threads: 2,
        reps: 5,
        tile: supcon_loss::DEFAULT_TILE,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--backend" => args.backend = value,
            "--rows" => args.rows = value.parse()?,
            "--dim" => args.dim = value.parse()?,
            "--classes" => args.classes = value.parse()?,
            "--threads" => args.threads = value.parse()?,
            "--reps" => args.reps = value.parse()?,
            "--tile" => args.tile = value.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    if args.rows < 2 || !args.rows.is_multiple_of(2) || args.reps == 0 {
        bail!("--rows must be even and ≥ 2 (2 views), --reps ≥ 1");
    }
    Ok(args)
}

/// `VmRSS` / `VmHWM` of this process in KiB (Linux); `None` elsewhere.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() -> Result<()> {
    let args = parse()?;
    let backend: Box<dyn SupConBackend> = match args.backend.as_str() {
        "cpu" => Box::new(
            CpuBackend::default()
                .with_threads(args.threads)
                .with_tile(args.tile),
        ),
        // The memory-bounded path: similarities recomputed in the backward pass, never kept.
        "cpu-streaming" => Box::new(
            CpuBackend::default()
                .with_threads(args.threads)
                .with_cache_bytes(0),
        ),
        "tch" => {
            tch::set_num_threads(args.threads as i32);
            Box::new(TchBackend::default())
        }
        other => bail!("unknown backend {other} (cpu | cpu-streaming | tch)"),
    };
    let batch = args.rows / 2;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut features =
        Array3::from_shape_fn((batch, 2, args.dim), |_| rng.random_range(-1.0f32..1.0));
    for mut row in features.rows_mut() {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.mapv_inplace(|x| x / norm);
    }
    let labels: Vec<i64> = (0..batch)
        .map(|_| rng.random_range(0..args.classes))
        .collect();
    let input = SupConInput::new(features.view(), Some(&labels));
    let options = SupConOptions::default();

    let rss_before = status_kib("VmRSS:");
    let warm = backend.compute(&input, &options)?;
    let mut times = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        let start = Instant::now();
        let out = backend.compute(&input, &options)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(out);
    }
    times.sort_by(f64::total_cmp);
    let peak = status_kib("VmHWM:");
    let mib = |k: Option<u64>| k.map_or("null".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
    let extra = match (peak, rss_before) {
        (Some(p), Some(b)) => Some(p.saturating_sub(b)),
        _ => None,
    };
    println!(
        "{{\"backend\":\"{}\",\"n\":{},\"dim\":{},\"classes\":{},\"threads\":{},\"reps\":{},\"median_ms\":{:.3},\"min_ms\":{:.3},\"loss\":{},\"peak_rss_mib\":{},\"extra_rss_mib\":{}}}",
        backend.name(),
        args.rows,
        args.dim,
        args.classes,
        args.threads,
        args.reps,
        times[times.len() / 2],
        times[0],
        warm.loss,
        mib(peak),
        mib(extra),
    );
    Ok(())
}
