//! `cargo xtask bench methods [--methods simclr,moco-v2,swav] [--epochs 2] [--train-per-class N]
//! [--test-per-class N] [--threads 2] [--workers 0] [--skip-peer]`: each self-supervised
//! method trained by the release `supcon` binary and by a maintained peer implementation,
//! lightly 1.6.0's modules on a PyTorch replica of resnet-tiny (`benches/peer_lightly.py`),
//! on the same machine in the same run; both kNN top-1 figures and both images/s.
//!
//! Our side runs `supcon train --preset quick-cpu-<method>` with `--epochs`, every training
//! image (`data.validation_fraction = 0`; SwAV with its two global views only,
//! `pretrain.multicrop.local_views = 0`), `--threads` and no robustness sweep, and reads its
//! run's `report.json`: the weighted kNN top-1 of the evaluation (backbone features, the
//! training images as the bank, the test images as the queries, k 20, T 0.1) and the
//! pre-training stage's `images_per_second` and `wall_seconds`; the steps come from the last
//! pre-training epoch record of `metrics.jsonl`. The peer then reads the `config.toml` that run
//! wrote (one file for both sides: data, subset, augmentation, network, τ, queue, momentum,
//! Sinkhorn, optimiser, schedule, epochs, seed) and trains the same recipe with lightly's
//! `NTXentLoss` (SimCLR; MoCo with its memory bank), `update_momentum` and
//! `deactivate_requires_grad` (MoCo's key encoder, shuffled BatchNorm in 4 groups),
//! `SwaVLoss` and `SwaVPrototypes` (with its frozen-prototype steps), and reads the same kNN
//! out with lightly's `knn_predict`. What differs is listed at the top of the script and in the
//! book (Benchmarks, Training).
//!
//! The two sides must train the same number of steps (checked). Prints a side-by-side table
//! and writes `target/bench-results/methods.json`; the goal is our kNN top-1 within 1 point of
//! the peer's, or ahead.

use crate::bench_augment::{bench_python, json_line, PythonEnv};
use crate::setup::{self, Flavour};
use crate::util::{field, machine, project_root, run as sh, write_bench_result, OptionArgs};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A method of the bench: its name (`--methods`, the peer's `--method`, the run folder), our
/// preset, and the overrides our run takes besides the common ones.
struct MethodSpec {
    name: &'static str,
    preset: &'static str,
    overrides: &'static [&'static str],
}

const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "simclr",
        preset: "quick-cpu-simclr",
        overrides: &[],
    },
    MethodSpec {
        name: "moco-v1",
        preset: "quick-cpu-moco-v1",
        overrides: &[],
    },
    MethodSpec {
        name: "moco-v2",
        preset: "quick-cpu-moco-v2",
        overrides: &[],
    },
    MethodSpec {
        name: "swav",
        preset: "quick-cpu-swav",
        // Two global views: the peer has no multi-crop.
        overrides: &["pretrain.multicrop.local_views=0"],
    },
];

/// Every run trains on all training images: the peer does not replicate the seeded split.
const COMMON_OVERRIDES: &[&str] = &["data.validation_fraction=0.0"];

/// The goal: our kNN top-1 at most this many points behind the peer's.
const TOLERANCE_POINTS: f64 = 1.0;

struct Options {
    methods: Vec<&'static MethodSpec>,
    epochs: u32,
    train_per_class: Option<usize>,
    test_per_class: Option<usize>,
    threads: usize,
    workers: usize,
    skip_peer: bool,
}

fn method_spec(name: &str) -> Result<&'static MethodSpec> {
    match METHODS.iter().find(|m| m.name == name) {
        Some(method) => Ok(method),
        None => {
            let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
            bail!(
                "unknown method `{name}` for --methods (one of {})",
                names.join(", ")
            )
        }
    }
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        methods: ["simclr", "moco-v2", "swav"]
            .into_iter()
            .map(method_spec)
            .collect::<Result<_>>()?,
        epochs: 2,
        train_per_class: None,
        test_per_class: None,
        threads: 2,
        workers: 0,
        skip_peer: false,
    };
    let mut args = OptionArgs::new(args);
    while let Some(arg) = args.next_option() {
        match arg {
            "--methods" => {
                o.methods = args
                    .value(arg)?
                    .split(',')
                    .map(|m| method_spec(m.trim()))
                    .collect::<Result<_>>()?;
            }
            "--epochs" => {
                let v = args.value(arg)?;
                o.epochs = v
                    .parse()
                    .with_context(|| format!("--epochs takes a positive integer, got `{v}`"))?;
            }
            "--train-per-class" => o.train_per_class = Some(args.count(arg)?),
            "--test-per-class" => o.test_per_class = Some(args.count(arg)?),
            "--threads" => o.threads = args.count(arg)?,
            "--workers" => o.workers = args.count(arg)?,
            "--skip-peer" => o.skip_peer = true,
            other => bail!(
                "unknown option `{other}` for `cargo xtask bench methods` (--methods \
                 simclr,moco-v2,swav, --epochs N, --train-per-class N, --test-per-class N, \
                 --threads N, --workers N, --skip-peer)"
            ),
        }
    }
    if o.epochs == 0 || o.threads == 0 || o.methods.is_empty() {
        bail!("--epochs and --threads must be at least 1, --methods not empty");
    }
    if o.train_per_class == Some(0) || o.test_per_class == Some(0) {
        bail!("--train-per-class and --test-per-class must be at least 1 (leave them out: all)");
    }
    Ok(o)
}

/// What one side measured for one method.
struct Measured {
    /// Weighted kNN top-1, a fraction.
    knn_top1: f64,
    /// Source images per second of stage 1.
    images_per_second: f64,
    /// Seconds of stage 1.
    wall_seconds: f64,
    /// Optimizer steps of stage 1.
    steps: u64,
}

/// `json` without the whitespace outside its strings: serde_json's pretty printing as one
/// flat line, which [`field`] reads.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// The flat part of a compact JSON object from `marker` to the object's end (the first `}`):
/// the objects read here (a stage, a kNN result) hold no nested object after the marker.
fn object_from<'a>(json: &'a str, marker: &str) -> Option<&'a str> {
    let start = json.find(marker)?;
    let rest = &json[start..];
    Some(&rest[..rest.find('}').unwrap_or(rest.len())])
}

/// The number `key` of a flat JSON object (`what` names it in the error).
fn number(object: &str, key: &str, what: &str) -> Result<f64> {
    match field(object, key) {
        Some(value) => Ok(value),
        None => bail!("{what}: no number `{key}` in {object}"),
    }
}

/// kNN top-1, stage-1 images/s and seconds from a run's `report.json`.
fn read_report(text: &str, path: &Path) -> Result<(f64, f64, f64)> {
    let what = path.display().to_string();
    let json = compact(text);
    let stage = object_from(&json, "\"stage\":\"pretrain\"")
        .with_context(|| format!("{what} has no pre-training stage"))?;
    let images_per_second = number(stage, "images_per_second", &what)?;
    let wall_seconds = number(stage, "wall_seconds", &what)?;
    let knn =
        object_from(&json, "\"knn\":{").with_context(|| format!("{what} has no kNN evaluation"))?;
    let knn_top1 = number(knn, "top1", &what)?;
    Ok((knn_top1, images_per_second, wall_seconds))
}

/// Stage 1's steps: the `step` of the last pre-training epoch record of `metrics.jsonl`.
fn read_steps(text: &str, path: &Path) -> Result<u64> {
    text.lines()
        .filter(|l| l.contains("\"kind\":\"epoch\"") && l.contains("\"stage\":\"pretrain\""))
        .filter_map(|l| field(l, "step"))
        .next_back()
        .map(|s| s as u64)
        .with_context(|| format!("{} has no pre-training epoch record", path.display()))
}

/// Trains `method` with the release `supcon` binary; returns what its run folder reports and
/// the folder.
fn run_ours(
    binary: &Path,
    method: &MethodSpec,
    o: &Options,
    ld_library_path: &str,
) -> Result<(Measured, PathBuf)> {
    let runs_dir = project_root().join("target").join("bench-methods");
    let mut cmd = Command::new(binary);
    cmd.current_dir(project_root())
        .args(["--quiet", "train", "--preset", method.preset])
        .args(["--epochs", &o.epochs.to_string()])
        .args(["--threads", &o.threads.to_string()]);
    for &item in COMMON_OVERRIDES.iter().chain(method.overrides) {
        cmd.args(["--set", item]);
    }
    if let Some(n) = o.train_per_class {
        cmd.args(["--train-per-class", &n.to_string()]);
    }
    if let Some(n) = o.test_per_class {
        cmd.args(["--test-per-class", &n.to_string()]);
    }
    cmd.arg("--runs-dir")
        .arg(&runs_dir)
        .args(["--name", method.name, "--overwrite", "--no-robustness"])
        .env("RAYON_NUM_THREADS", o.threads.to_string())
        // libtorch has an rpath; the library path is for NVRTC and friends.
        .env("LD_LIBRARY_PATH", ld_library_path);
    sh(&mut cmd)?;
    let run = runs_dir.join(method.name);
    let report_path = run.join("report.json");
    let report = std::fs::read_to_string(&report_path)
        .with_context(|| format!("reading {}", report_path.display()))?;
    let (knn_top1, images_per_second, wall_seconds) = read_report(&report, &report_path)?;
    let metrics_path = run.join("metrics.jsonl");
    let metrics = std::fs::read_to_string(&metrics_path)
        .with_context(|| format!("reading {}", metrics_path.display()))?;
    let steps = read_steps(&metrics, &metrics_path)?;
    let measured = Measured {
        knn_top1,
        images_per_second,
        wall_seconds,
        steps,
    };
    Ok((measured, run))
}

/// Trains `method` with lightly on the configuration of our run (`config.toml` of `run`);
/// returns what it measured and its JSON line.
fn run_peer(
    python: &PythonEnv,
    method: &MethodSpec,
    run: &Path,
    o: &Options,
) -> Result<(Measured, String)> {
    let script = project_root().join("benches").join("peer_lightly.py");
    let output = python
        .command()
        .current_dir(project_root())
        .arg(&script)
        .args(["--method", method.name])
        .arg("--config")
        .arg(run.join("config.toml"))
        .args(["--threads", &o.threads.to_string()])
        .args(["--workers", &o.workers.to_string()])
        // Its per-epoch progress, live.
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let line = json_line(&output, "peer_lightly.py")?;
    let what = "peer_lightly.py's JSON line";
    let measured = Measured {
        knn_top1: number(&line, "knn_top1", what)?,
        images_per_second: number(&line, "img_per_s", what)?,
        wall_seconds: number(&line, "wall_s", what)?,
        steps: number(&line, "steps", what)? as u64,
    };
    Ok((measured, line))
}

/// One method's figures on both sides.
struct Row {
    method: &'static MethodSpec,
    ours: Measured,
    peer: Option<(Measured, String)>,
}

impl Row {
    /// Our kNN top-1 minus the peer's, in points.
    fn difference(&self) -> Option<f64> {
        self.peer
            .as_ref()
            .map(|(p, _)| 100.0 * (self.ours.knn_top1 - p.knn_top1))
    }

    /// Our images/s over the peer's.
    fn ratio(&self) -> Option<f64> {
        self.peer
            .as_ref()
            .map(|(p, _)| self.ours.images_per_second / p.images_per_second.max(1e-9))
    }
}

/// `format(value)`, or `-` for a figure not measured.
fn or_dash(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    match value {
        Some(v) => format(v),
        None => "-".to_string(),
    }
}

/// `value` as JSON: the number with `decimals` decimals, or `null`.
fn or_null(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "null".to_string(),
    }
}

/// `value` as JSON: its `Display`, or `null`.
fn display_or_null(value: Option<impl std::fmt::Display>) -> String {
    match value {
        Some(v) => v.to_string(),
        None => "null".to_string(),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| method | ours kNN top-1 | lightly kNN top-1 | difference (points) | ours images/s \
         | lightly images/s | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let peer = row.peer.as_ref().map(|(p, _)| p);
        println!(
            "| {} | {:.2} % | {} | {} | {:.0} | {} | {} |",
            row.method.name,
            100.0 * row.ours.knn_top1,
            or_dash(peer.map(|p| p.knn_top1), |v| format!("{:.2} %", 100.0 * v)),
            or_dash(row.difference(), |d| format!("{d:+.2}")),
            row.ours.images_per_second,
            or_dash(peer.map(|p| p.images_per_second), |v| format!("{v:.0}")),
            or_dash(row.ratio(), |r| format!("{r:.2}")),
        );
    }
}

fn row_json(row: &Row) -> String {
    let peer = row.peer.as_ref().map(|(p, _)| p);
    let peer_run = match &row.peer {
        Some((_, line)) => line.as_str(),
        None => "null",
    };
    format!(
        "{{\"method\": \"{}\", \"preset\": \"{}\", \"steps\": {}, \"ours_knn_top1\": {:.6}, \
         \"peer_knn_top1\": {}, \"difference_points\": {}, \"ours_img_per_s\": {:.1}, \
         \"peer_img_per_s\": {}, \"ratio\": {}, \"ours_wall_s\": {:.1}, \"peer_wall_s\": {}, \
         \"peer_run\": {}}}",
        row.method.name,
        row.method.preset,
        row.ours.steps,
        row.ours.knn_top1,
        or_null(peer.map(|p| p.knn_top1), 6),
        or_null(row.difference(), 3),
        row.ours.images_per_second,
        or_null(peer.map(|p| p.images_per_second), 1),
        or_null(row.ratio(), 3),
        row.ours.wall_seconds,
        or_null(peer.map(|p| p.wall_seconds), 1),
        peer_run,
    )
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let python = if o.skip_peer {
        None
    } else {
        Some(bench_python()?)
    };
    let env = setup::ensure(Flavour::Cpu)?;
    let binary = crate::train::build_supcon()?;

    let mut rows = Vec::new();
    for &method in &o.methods {
        let (ours, run) = run_ours(&binary, method, &o, &env.ld_library_path())?;
        println!(
            "supcon {}: kNN top-1 {:.2} %, {:.0} images/s, {} steps in {:.0} s",
            method.name,
            100.0 * ours.knn_top1,
            ours.images_per_second,
            ours.steps,
            ours.wall_seconds
        );
        let peer = match &python {
            Some(python) => {
                let (peer, line) = run_peer(python, method, &run, &o)?;
                println!(
                    "lightly {}: kNN top-1 {:.2} %, {:.0} images/s, {} steps in {:.0} s",
                    method.name,
                    100.0 * peer.knn_top1,
                    peer.images_per_second,
                    peer.steps,
                    peer.wall_seconds
                );
                if peer.steps != ours.steps {
                    bail!(
                        "{}: supcon trained {} steps and the peer {}: the two sides did not \
                         read the same recipe ({})",
                        method.name,
                        ours.steps,
                        peer.steps,
                        run.join("config.toml").display()
                    );
                }
                Some((peer, line))
            }
            None => None,
        };
        rows.push(Row { method, ours, peer });
    }
    print_table(&rows);
    let differences: Vec<f64> = rows.iter().filter_map(Row::difference).collect();
    let met = if differences.len() == rows.len() {
        Some(differences.iter().all(|&d| d >= -TOLERANCE_POINTS))
    } else {
        None
    };
    match met {
        Some(true) => println!(
            "goal met: every kNN top-1 within {TOLERANCE_POINTS} point of lightly's, or ahead"
        ),
        Some(false) => {
            println!("goal missed: a kNN top-1 more than {TOLERANCE_POINTS} point behind lightly's")
        }
        None => println!("lightly skipped: no comparison"),
    }
    let runs: Vec<String> = rows.iter().map(row_json).collect();
    let json = format!(
        "{{\n  \"benchmark\": \"methods\",\n  \"what\": \"self-supervised stage 1 \
         (quick-cpu-<method> on every Fashion-MNIST training image) by supcon and by lightly's \
         modules on a PyTorch resnet-tiny, same config.toml; weighted kNN top-1 on the test set \
         (k 20, T 0.1) and stage-1 source images/s\",\n  \"epochs\": {},\n  \
         \"train_per_class\": {},\n  \"test_per_class\": {},\n  \"threads\": {},\n  \
         \"peer_workers\": {},\n  \
         \"goal_points\": {TOLERANCE_POINTS},\n  \"goal_met\": {},\n  \"runs\": [\n    {}\n  ],\n  \
         \"machine\": \"{}\"\n}}\n",
        o.epochs,
        display_or_null(o.train_per_class),
        display_or_null(o.test_per_class),
        o.threads,
        o.workers,
        display_or_null(met),
        runs.join(",\n    "),
        machine().replace('"', "'"),
    );
    let path = write_bench_result("methods", &json)?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `report.json` as serde_json pretty-prints it (abridged).
    const REPORT: &str = r#"{
  "run_name": "simclr",
  "evaluated_on": "test",
  "dataset": "fashion-mnist (60000 train / 0 val / 10000 test)",
  "class_names": ["T-shirt/top", "Trouser"],
  "stages": [
    {
      "stage": "pretrain",
      "method": "simclr",
      "epochs": 2,
      "wall_seconds": 301.5,
      "images_per_second": 397.25,
      "ranks": 1,
      "val_top1": null,
      "best_epoch": null,
      "test_top1": null,
      "test_top5": null,
      "knn_top1": null
    },
    {
      "stage": "linear",
      "method": "simclr",
      "epochs": 10,
      "wall_seconds": 20.0,
      "images_per_second": 30000.0,
      "ranks": 1,
      "val_top1": null,
      "best_epoch": null,
      "test_top1": 0.8229,
      "test_top5": 0.99,
      "knn_top1": 0.5
    }
  ],
  "evaluations": [
    {
      "method": "simclr",
      "knn": {
        "k": 20,
        "temperature": 0.1,
        "bank_size": 60000,
        "queries": 10000,
        "top1": 0.8099,
        "top5": 0.9912
      },
      "geometry": null
    }
  ]
}"#;

    #[test]
    fn the_report_gives_knn_top1_and_the_pretraining_stage() {
        let (knn, rate, seconds) = read_report(REPORT, Path::new("report.json")).unwrap();
        assert_eq!((knn, rate, seconds), (0.8099, 397.25, 301.5));
        assert!(read_report("{\"stages\": []}", Path::new("r.json")).is_err());
    }

    #[test]
    fn compact_keeps_the_spaces_inside_strings() {
        assert_eq!(
            compact("{ \"a b\": [1, 2],\n \"c\": \"x \\\" y\" }"),
            "{\"a b\":[1,2],\"c\":\"x \\\" y\"}"
        );
    }

    #[test]
    fn steps_are_those_of_the_last_pretraining_epoch() {
        let line = |stage: &str, kind: &str, step: u64| {
            format!(
                "{{\"stage\":\"{stage}\",\"kind\":\"{kind}\",\"epoch\":0,\"step\":{step},\
                 \"loss\":5.0,\"lr\":0.1,\"images_per_second\":400.0,\"val_top1\":null,\
                 \"train_top1\":null,\"wall_seconds\":1.0}}\n"
            )
        };
        let text = [
            line("pretrain", "step", 20),
            line("pretrain", "epoch", 234),
            line("pretrain", "epoch", 468),
            line("linear", "epoch", 235),
        ]
        .concat();
        assert_eq!(read_steps(&text, Path::new("m.jsonl")).unwrap(), 468);
        assert!(read_steps("", Path::new("m.jsonl")).is_err());
    }

    #[test]
    fn options_parse() {
        let o = parse(&[]).unwrap();
        let names: Vec<&str> = o.methods.iter().map(|m| m.name).collect();
        assert_eq!(names, ["simclr", "moco-v2", "swav"]);
        assert_eq!((o.epochs, o.threads, o.workers), (2, 2, 0));
        let o = parse(&[
            "--methods".into(),
            "swav, moco-v1".into(),
            "--epochs".into(),
            "1".into(),
            "--train-per-class".into(),
            "100".into(),
            "--skip-peer".into(),
        ])
        .unwrap();
        let names: Vec<&str> = o.methods.iter().map(|m| m.name).collect();
        assert_eq!(names, ["swav", "moco-v1"]);
        assert_eq!(
            (o.epochs, o.train_per_class, o.skip_peer),
            (1, Some(100), true)
        );
        assert!(parse(&["--methods".into(), "byol".into()]).is_err());
        assert!(parse(&["--epochs".into(), "0".into()]).is_err());
        assert!(parse(&["--what".into()]).is_err());
    }
}
