//! The whole recipe on a small real subset of Fashion-MNIST: pre-training, linear stage, CE
//! baseline, test evaluation, report, TensorBoard events; then `supcon eval` and `supcon embed`
//! on the result.

mod common;
#[path = "common/tfevents.rs"]
mod tfevents;

use common::{run, supcon, FAST};
use supcon_train::checkpoint::Checkpoint;
use supcon_train::metrics_log::{read_metrics, RecordKind, Stage};
use tfevents::series;

#[test]
fn train_with_baseline_on_a_fashion_mnist_subset_beats_chance_by_far() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        supcon()
            .args([
                "train",
                "--quiet",
                "--with-baseline",
                "--name",
                "e2e",
                "--runs-dir",
            ])
            .arg(dir.path())
            .args(FAST)
            .args([
                "--set",
                "pretrain.batch_size=32",
                "--set",
                "linear.epochs=3",
            ])
            // The CE baseline gets the linear stage's small batch too: at quick-cpu's 256 its 2
            // epochs on 540 images are 6 steps, too few to be far above chance on every machine.
            .args(["--set", "linear.batch_size=32", "--set", "ce.epochs=2"])
            .args(["--set", "ce.batch_size=32"])
            .args(["--set", "eval.robustness=true"])
            .args(["--set", "eval.robustness_per_class=3"]),
        true,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("test top-1"), "{stdout}");
    let run_dir = dir.path().join("e2e");
    for file in [
        "config.toml",
        "metrics.jsonl",
        "report.json",
        "checkpoints/pretrain-last.safetensors",
        "checkpoints/linear-last.safetensors",
        "checkpoints/linear-best.safetensors",
        "checkpoints/ce-last.safetensors",
    ] {
        assert!(run_dir.join(file).exists(), "{file} is missing");
    }
    // quick-cpu's probe standardizes: the classifier's checkpoint carries the training
    // features' statistics, fitted (not the initial mean 0, std 1) and finite.
    let classifier =
        Checkpoint::load(&run_dir.join("checkpoints/linear-best.safetensors")).unwrap();
    let model = classifier.group("model");
    let (mean, std) = (&model["standardize.mean"], &model["standardize.std"]);
    assert_eq!(mean.size(), [64], "resnet-tiny's feature width");
    assert_eq!(std.size(), [64]);
    assert!(
        mean.abs().max().double_value(&[]) > 0.0,
        "mean never fitted"
    );
    assert!(std.ne(1.0).any().int64_value(&[]) == 1, "std never fitted");
    assert!(std.isfinite().all().int64_value(&[]) == 1 && std.min().double_value(&[]) > 0.0);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    let stage = |stage: &str, method: &str| stage_row(&report, stage, method);
    // Ten classes: chance is 10 %. After so few steps (16 of pre-training) the kNN accuracy
    // of the embeddings is the meaningful figure (about 60 %); the linear classifier and the
    // CE model, trained for a few dozen steps, are asked to be far above chance.
    for (classifier, encoder) in [
        (stage("linear", "supcon"), stage("pretrain", "supcon")),
        (stage("ce", "ce"), stage("ce", "ce")),
    ] {
        let top1 = classifier["test_top1"].as_f64().unwrap();
        let knn = encoder["knn_top1"].as_f64().unwrap();
        assert!(top1 > 0.25, "{}: test top-1 {top1}", classifier["method"]);
        assert!(knn > 0.5, "{}: kNN top-1 {knn}", encoder["method"]);
        assert!(classifier["wall_seconds"].as_f64().unwrap() > 0.0);
        assert!(classifier["images_per_second"].as_f64().unwrap() > 0.0);
    }
    let evaluations = report["evaluations"].as_array().unwrap();
    assert_eq!(evaluations.len(), 2);
    for e in evaluations {
        assert!(
            e["robustness"]["entries"].as_array().unwrap().len() >= 5,
            "{e}"
        );
    }
    assert!(run_dir.join("report.md").exists());
    let metrics = read_metrics(&run_dir.join("metrics.jsonl")).unwrap();
    let epochs = |stage| {
        metrics
            .iter()
            .filter(|r| r.stage == stage && r.kind == RecordKind::Epoch)
            .count()
    };
    assert_eq!(epochs(Stage::Pretrain), 1);
    assert_eq!(epochs(Stage::Linear), 3);
    assert_eq!(epochs(Stage::Ce), 2);
    assert!(metrics
        .iter()
        .filter(|r| r.stage == Stage::Linear && r.kind == RecordKind::Epoch)
        .all(|r| r.val_top1.is_some() && r.train_top1.is_some()));

    // The same scalars as TensorBoard events, in one file (one process), every record's CRCs
    // checked by the reader; then the final figures.
    let files = tfevents::events_files(&run_dir.join("tensorboard"));
    assert_eq!(files.len(), 1, "{files:?}");
    let events = tfevents::read_events(&files[0]);
    let pretrain_steps: Vec<(i64, f32)> = metrics
        .iter()
        .filter(|r| r.stage == Stage::Pretrain && r.kind == RecordKind::Step)
        .map(|r| (r.step as i64, r.loss as f32))
        .collect();
    assert!(!pretrain_steps.is_empty());
    assert_eq!(series(&events, "pretrain/loss"), pretrain_steps);
    assert_eq!(series(&events, "linear/val_top1").len(), 3);
    assert_eq!(series(&events, "ce/epoch_loss").len(), 2);
    let test_top1 = stage("linear", "supcon")["test_top1"].as_f64().unwrap() as f32;
    let top1: Vec<f32> = series(&events, "eval/supcon/top1")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(top1, [test_top1]);
    for tag in [
        "eval/supcon/knn_top1",
        "eval/ce/top1",
        "eval/ce/mean_corrupted_top1",
    ] {
        assert_eq!(series(&events, tag).len(), 1, "{tag}");
    }

    // `supcon eval` re-measures the same checkpoints: the same test accuracy.
    let output = run(
        supcon()
            .args(["eval", "--quiet", "--json", "--run"])
            .arg(&run_dir),
        true,
    );
    let again: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(again["stages"], report["stages"]);

    // `--evaluate-on validation` reads the validation split instead: the linear classifier's
    // accuracy there is the one its stage measured on the same checkpoint.
    let output = run(
        supcon()
            .args([
                "eval",
                "--quiet",
                "--json",
                "--evaluate-on",
                "validation",
                "--run",
            ])
            .arg(&run_dir),
        true,
    );
    let on_validation: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(on_validation["evaluated_on"], "validation");
    let linear = stage_row(&on_validation, "linear", "supcon");
    let (evaluated, measured) = (linear["test_top1"].as_f64(), linear["val_top1"].as_f64());
    assert!(
        (evaluated.unwrap() - measured.unwrap()).abs() < 1e-6,
        "{linear}"
    );
    // Another split was read: 60 validation images against the 300 test images.
    let samples =
        |report: &serde_json::Value| report["evaluations"][0]["classification"]["samples"].as_u64();
    assert_eq!(samples(&report), Some(300));
    assert_eq!(samples(&on_validation), Some(60));

    // `supcon embed` writes .npy files of the expected shapes.
    let out = dir.path().join("embed");
    run(
        supcon()
            .args([
                "embed",
                "--split",
                "test",
                "--set",
                "data.test_per_class=30",
                "--checkpoint",
            ])
            .arg(run_dir.join("checkpoints/pretrain-last.safetensors"))
            .arg("--out")
            .arg(&out),
        true,
    );
    let embeddings: ndarray::Array2<f32> =
        ndarray_npy::read_npy(out.join("embeddings.npy")).unwrap();
    let labels: ndarray::Array1<i64> = ndarray_npy::read_npy(out.join("labels.npy")).unwrap();
    assert_eq!(embeddings.dim(), (300, 64));
    assert_eq!(labels.len(), 300);
}

/// CMC and CPC through the whole recipe: their linear probe reads their own features (CMC's two
/// encoders concatenated, CPC's patch grid averaged), and `supcon embed` finds those features
/// only with the method's configuration.
#[test]
fn cmc_and_cpc_train_end_to_end_and_their_probe_reads_their_features() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    for (preset, width) in [("quick-cpu-cmc", 128), ("quick-cpu-cpc", 64)] {
        run(
            supcon()
                .args(["train", "--quiet", "--preset", preset, "--name", preset])
                .arg("--runs-dir")
                .arg(dir.path())
                .args(FAST)
                .args([
                    "--set",
                    "pretrain.batch_size=32",
                    "--set",
                    "linear.epochs=3",
                ])
                .args(["--set", "linear.batch_size=32"]),
            true,
        );
        let run_dir = dir.path().join(preset);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
        let method = preset.trim_start_matches("quick-cpu-");
        let top1 = stage_row(&report, "linear", method)["test_top1"]
            .as_f64()
            .unwrap();
        let knn = stage_row(&report, "pretrain", method)["knn_top1"]
            .as_f64()
            .unwrap();
        eprintln!("{preset}: linear test top-1 {top1}, kNN {knn}");
        // Ten classes, 19 steps of pre-training: well above chance (10 %), not more.
        assert!(
            top1 > 0.2 && knn > 0.4,
            "{preset}: test top-1 {top1}, kNN {knn}"
        );
        let embed = |extra: &[&str]| {
            supcon()
                .args([
                    "embed",
                    "--split",
                    "test",
                    "--set",
                    "data.test_per_class=30",
                ])
                .args(extra)
                .arg("--checkpoint")
                .arg(run_dir.join("checkpoints/pretrain-last.safetensors"))
                .arg("--out")
                .arg(dir.path().join(format!("{preset}-embed")))
                .output()
                .unwrap()
        };
        // The default preset's method reads images the SupCon way: refused, naming the preset.
        let refused = embed(&[]);
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains(preset),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        assert!(embed(&["--preset", preset]).status.success());
        let embeddings: ndarray::Array2<f32> =
            ndarray_npy::read_npy(dir.path().join(format!("{preset}-embed/embeddings.npy")))
                .unwrap();
        assert_eq!(embeddings.dim(), (300, width));
    }
}

/// The row of `report.json`'s stage table for one stage of one method.
fn stage_row(report: &serde_json::Value, stage: &str, method: &str) -> serde_json::Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage && s["method"] == method)
        .unwrap_or_else(|| panic!("no {stage}/{method} row in {report}"))
        .clone()
}
