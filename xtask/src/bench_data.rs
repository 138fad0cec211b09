//! `cargo xtask bench data [--images N] [--side S] [--batches K] [--workers 1,2]
//! [--epoch-images N] [--skip-torchvision] [--skip-epoch]`: the streamed data path side by side
//! with torchvision, measured in the same run.
//!
//! 1. **Throughput**: read + decode + SupContrast's two-view augmentation + batching from a
//!    folder of `N` JPEGs of `S`×`S` (Fashion-MNIST's training images upsampled, tinted per
//!    class, quality 90; written once under `target/bench-data/`), through supcon-data's
//!    streamed folder and rayon's pool of `w` threads (the `stream_throughput` example, which
//!    does what the training pipeline's batch recipe does), and through torchvision's
//!    `ImageFolder` + `DataLoader` with `w` worker processes (`benches/data_torchvision.py`),
//!    for each `w` of `--workers`.
//! 2. **Memory**: peak resident memory of one epoch over a folder of `--epoch-images` 28×28
//!    PNGs (Fashion-MNIST cycled, default one million): streamed, streamed from the same images
//!    packed into WebDataset shards of 10 000, and decoded into memory first.
//!
//! Writes `target/bench-results/data.json`.

use crate::bench_augment::{bench_python, json_line};
use crate::util::{
    build_release, count, field, machine, project_root, write_bench_result, OptionArgs,
};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Options {
    images: usize,
    side: usize,
    batch: usize,
    batches: usize,
    workers: Vec<usize>,
    epoch_images: usize,
    skip_torchvision: bool,
    skip_epoch: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        images: 2048,
        side: 224,
        batch: 64,
        batches: 24,
        workers: vec![1, 2],
        epoch_images: 1_000_000,
        skip_torchvision: false,
        skip_epoch: false,
    };
    let mut args = OptionArgs::new(args);
    while let Some(arg) = args.next_option() {
        match arg {
            "--images" => o.images = args.count(arg)?,
            "--side" => o.side = args.count(arg)?,
            "--batch" => o.batch = args.count(arg)?,
            "--batches" => o.batches = args.count(arg)?,
            "--epoch-images" => o.epoch_images = args.count(arg)?,
            "--workers" => {
                o.workers = args
                    .value(arg)?
                    .split(',')
                    .map(|w| count("--workers", w))
                    .collect::<Result<_>>()?
            }
            "--skip-torchvision" => o.skip_torchvision = true,
            "--skip-epoch" => o.skip_epoch = true,
            other => bail!(
                "unknown option `{other}` for `cargo xtask bench data` (--images N, --side S, \
                 --batch B, --batches K, --workers 1,2, --epoch-images N, --skip-torchvision, \
                 --skip-epoch)"
            ),
        }
    }
    if o.images < o.batches * o.batch {
        bail!(
            "--images {} is fewer than the {} images of {} batches of {}",
            o.images,
            o.batches * o.batch,
            o.batches,
            o.batch
        );
    }
    Ok(o)
}

/// A generated folder under `target/bench-data/`, written once (a marker says it is complete).
fn generated(exe: &Path, name: &str, generate: &[String]) -> Result<PathBuf> {
    let dir = project_root().join("target").join("bench-data").join(name);
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    eprintln!("writing {} (once)", dir.display());
    let status = Command::new(exe)
        .arg(generate[0].as_str())
        .arg(&dir)
        .args(&generate[1..])
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    if !status.success() {
        bail!("generating {} failed ({status})", dir.display());
    }
    std::fs::write(&marker, "")?;
    Ok(dir)
}

fn measured(cmd: &mut Command, what: &str) -> Result<String> {
    let output = cmd.output().with_context(|| format!("running {what}"))?;
    json_line(&output, what)
}

fn rate(line: &str, key: &str) -> Result<f64> {
    field(line, key).with_context(|| format!("no {key} in {line}"))
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let python = if o.skip_torchvision {
        None
    } else {
        Some(bench_python()?)
    };
    let exe = build_release(
        &["-p", "supcon-data", "--example", "stream_throughput"],
        "examples/stream_throughput",
    )?;
    let jpegs = generated(
        &exe,
        &format!("jpeg-{}-{}", o.side, o.images),
        &[
            "generate-jpeg".into(),
            o.images.to_string(),
            o.side.to_string(),
        ],
    )?;
    let mut fields = Vec::new();
    for &workers in &o.workers {
        let ours = measured(
            Command::new(&exe)
                .arg("throughput")
                .arg(&jpegs)
                .args(["--threads", &workers.to_string()])
                .args(["--batch", &o.batch.to_string()])
                .args(["--batches", &o.batches.to_string()]),
            "stream_throughput",
        )?;
        let ours_rate = rate(&ours, "img_per_s")?;
        let theirs = python
            .as_ref()
            .map(|p| {
                measured(
                    p.command()
                        .arg(project_root().join("benches").join("data_torchvision.py"))
                        .arg(&jpegs)
                        .args(["--workers", &workers.to_string()])
                        .args(["--batch", &o.batch.to_string()])
                        .args(["--batches", &o.batches.to_string()])
                        .args(["--side", &o.side.to_string()]),
                    "data_torchvision.py",
                )
            })
            .transpose()?;
        let theirs_rate = theirs
            .as_deref()
            .map(|t| rate(t, "img_per_s"))
            .transpose()?;
        let ratio = theirs_rate.map(|t| ours_rate / t);
        println!(
            "{workers} worker(s): supcon {ours_rate:>7.1} img/s | torchvision {:>7} img/s | ratio {}   \
             (per CPU second: {} vs {})",
            theirs_rate.map_or("-".into(), |t| format!("{t:.1}")),
            ratio.map_or("-".into(), |r| format!("{r:.2}×")),
            field(&ours, "img_per_cpu_s").map_or("-".into(), |v| format!("{v:.1}")),
            theirs
                .as_deref()
                .and_then(|t| field(t, "img_per_cpu_s"))
                .map_or("-".into(), |v| format!("{v:.1}")),
        );
        fields.push(format!(
            "\"workers_{workers}\": {{\"supcon\": {ours}, \"torchvision\": {}, \"ratio\": {}}}",
            theirs.unwrap_or_else(|| "null".into()),
            ratio.map_or("null".into(), |r| format!("{r:.2}"))
        ));
    }
    if !o.skip_epoch {
        let pngs = generated(
            &exe,
            &format!("png-28-{}", o.epoch_images),
            &["generate-png".into(), o.epoch_images.to_string()],
        )?;
        let shards = generated(
            &exe,
            &format!("shards-28-{}", o.epoch_images),
            &[
                "pack-shards".into(),
                pngs.display().to_string(),
                (o.epoch_images / 10_000).max(1).to_string(),
            ],
        )?;
        for mode in ["--stream", "--shards", "--memory"] {
            let source = if mode == "--shards" { &shards } else { &pngs };
            let line = measured(
                Command::new(&exe)
                    .arg("epoch")
                    .arg(source)
                    .arg(mode)
                    .args(["--threads", "2"])
                    .args(["--batch", "256"]),
                "stream_throughput epoch",
            )?;
            println!(
                "epoch over {} images {}: peak RSS {} MiB ({} MiB after indexing), {} img/s",
                o.epoch_images,
                match mode {
                    "--stream" => "streamed ",
                    "--shards" => "in shards",
                    _ => "in memory",
                },
                field(&line, "peak_rss_mib").map_or("-".into(), |v| format!("{v:.0}")),
                field(&line, "rss_after_index_mib").map_or("-".into(), |v| format!("{v:.0}")),
                field(&line, "img_per_s").map_or("-".into(), |v| format!("{v:.0}")),
            );
            fields.push(format!("\"epoch_{}\": {line}", &mode[2..]));
        }
    }
    let json = format!(
        "{{\n  \"benchmark\": \"data\",\n  \"recipe\": \"SupContrast two-view recipe on {side}x{side} \
         JPEGs (Fashion-MNIST upsampled and tinted), batch {batch}; epoch: presets::fashion_mnist \
         two views on 28x28 PNGs\",\n  {},\n  \"machine\": \"{}\"\n}}\n",
        fields.join(",\n  "),
        machine().replace('"', "'"),
        side = o.side,
        batch = o.batch,
    );
    let path = write_bench_result("data", &json)?;
    println!("wrote {}", path.display());
    Ok(())
}
