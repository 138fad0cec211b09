//! Throughput of a two-view recipe on synthetic images, for `cargo xtask bench augment`.
//!
//! ```text
//! cargo run --release -p supcon-augment --example augment_throughput -- \
//!     [--recipe cifar|fmnist] [--threads 2] [--batch 256] [--batches 200] [--json]
//! ```
//! `img_per_s` counts source images per wall-clock second, each giving two views;
//! `img_per_cpu_s` divides by the process's CPU time instead (Linux: `/proc/self/stat`), which
//! a busy machine distorts less.

use std::time::Instant;
use supcon_augment::{presets, Augmenter, ImageRef};

struct Args {
    recipe: String,
    threads: usize,
    batch: usize,
    batches: usize,
    json: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        recipe: "cifar".into(),
        threads: 2,
        batch: 256,
        batches: 200,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--recipe" => args.recipe = value("--recipe")?,
            "--threads" => {
                args.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--batch" => {
                args.batch = value("--batch")?
                    .parse()
                    .map_err(|e| format!("--batch: {e}"))?
            }
            "--batches" => {
                args.batches = value("--batches")?
                    .parse()
                    .map_err(|e| format!("--batches: {e}"))?
            }
            "--json" => args.json = true,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// User + system CPU seconds of this process, all threads (Linux; `None` elsewhere). Fields 14
/// and 15 of `/proc/self/stat`, in clock ticks of 1/100 s (Linux's fixed `USER_HZ`).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let (pipeline, h, w, c) = match args.recipe.as_str() {
        "cifar" => (
            presets::supcon_cifar(32, &presets::CIFAR10_MEAN, &presets::CIFAR10_STD)?,
            32,
            32,
            3,
        ),
        "fmnist" => (presets::fashion_mnist(28)?, 28, 28, 1),
        other => return Err(format!("unknown recipe `{other}` (cifar | fmnist)").into()),
    };
    // A data set of 8 batches, visited repeatedly, like epochs over a small set.
    let n = args.batch * 8;
    let mut state = 0x1234_5678u64;
    let bytes: Vec<u8> = (0..n * h * w * c)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    let images: Vec<ImageRef<'_>> = bytes
        .chunks_exact(h * w * c)
        .map(|d| ImageRef {
            data: d,
            height: h,
            width: w,
            channels: c,
        })
        .collect();
    let augmenter = Augmenter::new(pipeline, 1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let mut out = vec![0.0f32; augmenter.output_len(&images[..args.batch], 2)?];
    let run =
        |batches: usize, epoch: u64, out: &mut [f32]| -> Result<(), supcon_augment::AugmentError> {
            for k in 0..batches {
                let start = (k % 8) * args.batch;
                let ids: Vec<u64> = (start as u64..(start + args.batch) as u64).collect();
                augmenter.augment_batch(
                    &images[start..start + args.batch],
                    &ids,
                    epoch + k as u64 / 8,
                    2,
                    out,
                )?;
            }
            Ok(())
        };
    pool.install(|| run(10, 0, &mut out))?; // warm-up: scratch buffers, caches
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    pool.install(|| run(args.batches, 1, &mut out))?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_start.zip(cpu_seconds()).map(|(a, b)| b - a);
    let images_done = args.batches * args.batch;
    let rate = images_done as f64 / seconds;
    let per_cpu = cpu.filter(|&c| c > 0.0).map_or("null".to_owned(), |c| {
        format!("{:.1}", images_done as f64 / c)
    });
    let cpu = cpu.map_or("null".to_owned(), |c| format!("{c:.2}"));
    if args.json {
        println!(
            "{{\"recipe\": \"{}\", \"img_per_s\": {rate:.1}, \"img_per_cpu_s\": {per_cpu}, \"cpu_seconds\": {cpu}, \"threads\": {}, \"batch\": {}, \"views\": 2, \"images\": {images_done}, \"seconds\": {seconds:.4}}}",
            args.recipe, args.threads, args.batch
        );
    } else {
        println!(
            "{}: {images_done} images × 2 views in {seconds:.3} s on {} threads: {rate:.0} images/s",
            args.recipe, args.threads
        );
    }
    Ok(())
}
