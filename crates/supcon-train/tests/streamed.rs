//! Training on streamed data: Fashion-MNIST written out as a PNG folder and as WebDataset tar
//! shards trains exactly as the same images in memory; unlabeled images train SimCLR with a
//! labeled set for the evaluation; a corrupt image stops the run with its name and loses no
//! checkpoint; a killed run on shards resumes exactly.

mod common;
#[path = "common/images.rs"]
mod images;

use std::path::Path;

use common::{run, supcon, FAST};
use images::{write_folder, write_shards};
use supcon_train::checkpoint::Checkpoint;
use supcon_train::metrics_log::{read_metrics, MetricRecord, RecordKind};

/// `supcon <command> --quiet` into `runs/name` with FAST settings on 28×28 gray images and
/// `sets`.
fn command(command: &str, name: &str, runs: &Path, sets: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![command.into(), "--quiet".into(), "--name".into()];
    args.push(name.into());
    args.push("--runs-dir".into());
    args.push(runs.display().to_string());
    args.extend(FAST.iter().map(|s| s.to_string()));
    for set in [
        "data.train_per_class=0",
        "data.test_per_class=0",
        "data.validation_fraction=0.2",
    ]
    .into_iter()
    .map(String::from)
    .chain(sets.iter().cloned())
    {
        args.push("--set".into());
        args.push(set);
    }
    args
}

fn folder_sets(root: &Path) -> Vec<String> {
    vec![
        "data.dataset=folder".into(),
        format!("data.path={}", root.display()),
        "data.image_size=28".into(),
        "data.color=gray".into(),
    ]
}

fn records(run_dir: &Path) -> Vec<MetricRecord> {
    read_metrics(&run_dir.join("metrics.jsonl")).unwrap()
}

fn losses(run_dir: &Path, kind: RecordKind) -> Vec<(String, u64, f64)> {
    records(run_dir)
        .into_iter()
        .filter(|r| r.kind == kind)
        .map(|r| (r.stage.to_string(), r.step, r.loss))
        .collect()
}

fn test_top1(run_dir: &Path) -> f64 {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "linear")
        .and_then(|s| s["test_top1"].as_f64())
        .unwrap_or_else(|| panic!("no linear test accuracy in {report}"))
}

/// The same images in memory, streamed from the folder (prefetched by a batch thread) and
/// streamed from tar shards with a full shuffle train identically: every step's loss, the
/// probe's accuracy. Shards in WebDataset's order train on other batches.
#[test]
fn streamed_folders_and_shards_train_as_the_images_in_memory() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let (folder, shards, runs) = (
        dir.path().join("folder"),
        dir.path().join("shards"),
        dir.path().join("runs"),
    );
    write_folder(&folder);
    write_shards(&folder, &shards, 3, true);
    let shard_sets = |buffer: usize| {
        vec![
            "data.dataset=shards".to_string(),
            "data.color=gray".to_string(),
            format!(
                "data.path={}/train-{{000000..000002}}.tar",
                shards.display()
            ),
            format!(
                "data.test_path={}/test-{{000000..000002}}.tar",
                shards.display()
            ),
            format!("data.shuffle_buffer={buffer}"),
        ]
    };
    let variants: Vec<(&str, Vec<String>)> = vec![
        ("memory", folder_sets(&folder)),
        (
            "stream",
            [folder_sets(&folder), vec!["data.stream=true".into()]].concat(),
        ),
        ("shards", shard_sets(0)),
        ("webdataset", shard_sets(64)),
    ];
    for (name, sets) in &variants {
        run(supcon().args(command("train", name, &runs, sets)), true);
    }
    let memory = runs.join("memory");
    let steps = losses(&memory, RecordKind::Step);
    assert_eq!(
        steps.len(),
        3 + 4,
        "3 pre-training and 4 linear steps: {steps:?}"
    );
    for name in ["stream", "shards"] {
        assert_eq!(losses(&runs.join(name), RecordKind::Step), steps, "{name}");
        assert_eq!(test_top1(&runs.join(name)), test_top1(&memory), "{name}");
    }
    // WebDataset's order: as many steps, other batches (a run this short says nothing about
    // accuracy; the book's measured runs do).
    let webdataset = losses(&runs.join("webdataset"), RecordKind::Step);
    assert_eq!(webdataset.len(), steps.len());
    assert_ne!(webdataset, steps);
}

/// SimCLR pre-trains on a folder of unlabeled images exactly as on the same images with
/// labels (SimCLR does not read them); the probe and the test then read the labeled
/// Fashion-MNIST. SupCon refuses unlabeled images.
#[test]
fn simclr_trains_on_an_unlabeled_folder() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let (folder, runs) = (dir.path().join("folder"), dir.path().join("runs"));
    write_folder(&folder);
    // Unlabeled: the same images without their class folders (file names keep the order).
    let unlabeled = dir.path().join("unlabeled");
    std::fs::create_dir_all(&unlabeled).unwrap();
    for class in std::fs::read_dir(folder.join("train")).unwrap() {
        for image in std::fs::read_dir(class.unwrap().path()).unwrap() {
            let image = image.unwrap().path();
            std::fs::copy(&image, unlabeled.join(image.file_name().unwrap())).unwrap();
        }
    }
    let simclr: Vec<String> = vec![
        "data.stream=true".into(),
        "pretrain.method=simclr".into(),
        "pretrain.views=2".into(),
    ];
    let labeled_sets = [
        folder_sets(&folder),
        simclr.clone(),
        vec!["data.validation_fraction=0".into()],
    ]
    .concat();
    run(
        supcon().args(command("train", "labeled", &runs, &labeled_sets)),
        true,
    );
    let unlabeled_sets = [
        folder_sets(&unlabeled),
        simclr,
        vec![
            "data.labels=false".into(),
            "data.eval_dataset=fashion-mnist".into(),
            "data.train_per_class=60".into(),
            "data.test_per_class=30".into(),
        ],
    ]
    .concat();
    run(
        supcon().args(command("train", "unlabeled", &runs, &unlabeled_sets)),
        true,
    );
    let pretrain_losses = |name: &str| -> Vec<(String, u64, f64)> {
        losses(&runs.join(name), RecordKind::Step)
            .into_iter()
            .filter(|(stage, _, _)| stage == "pretrain")
            .collect()
    };
    // 300 images in batches of 64.
    assert_eq!(pretrain_losses("labeled").len(), 4);
    assert_eq!(pretrain_losses("unlabeled"), pretrain_losses("labeled"));
    // The evaluation read the labeled set: 300 test images of Fashion-MNIST.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.join("unlabeled/report.json")).unwrap())
            .unwrap();
    let dataset = report["dataset"].as_str().unwrap_or_default();
    assert!(dataset.contains("300 test"), "{dataset}");
    let top1 = test_top1(&runs.join("unlabeled"));
    assert!((0.0..=1.0).contains(&top1), "{top1}");

    let supcon_sets: Vec<String> = unlabeled_sets
        .iter()
        .filter(|s| !s.starts_with("pretrain."))
        .cloned()
        .collect();
    let output = run(
        supcon().args(command("train", "refused", &runs, &supcon_sets)),
        false,
    );
    let stderr = common::stderr(&output);
    assert!(stderr.contains("needs labels"), "{stderr}");
}

/// A corrupt image met in the middle of an epoch stops the run with the file's name; the
/// checkpoints written before it load, and once the file is repaired the run resumes.
#[test]
fn a_corrupt_streamed_image_is_named_and_loses_no_checkpoint() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let (folder, runs) = (dir.path().join("folder"), dir.path().join("runs"));
    write_folder(&folder);
    let sets = [
        folder_sets(&folder),
        vec![
            "data.stream=true".into(),
            "checkpoint.every_steps=1".into(),
            "pretrain.epochs=2".into(),
            "data.validation_fraction=0".into(),
            // The statistics read a sample of the images before the run starts; a small one
            // that misses the corrupt image lets the run meet it in the middle of an epoch.
            "data.stats_images=20".into(),
        ],
    ]
    .concat();
    let args = command("pretrain", "corrupt", &runs, &sets);
    // Every training image is read in the first epoch (no validation split here), so the run
    // stops at whichever step meets this one.
    let bad = folder.join("train/c3/00095.png");
    let good = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &good[..good.len() / 3]).unwrap();
    let output = run(supcon().args(&args), false);
    let stderr = common::stderr(&output);
    assert!(stderr.contains("00095.png"), "{stderr}");
    let last = runs.join("corrupt/checkpoints/pretrain-last.safetensors");
    let state = Checkpoint::load(&last).unwrap().state.unwrap();
    assert!(
        (1..4).contains(&state.global_step),
        "step {}",
        state.global_step
    );
    // The repair is a change to the data's files: a plain resume names it and refuses.
    std::fs::write(&bad, &good).unwrap();
    let resume = || {
        let mut cmd = supcon();
        cmd.args(["pretrain", "--quiet", "--resume"])
            .arg(runs.join("corrupt"));
        cmd
    };
    let refused = common::stderr(&run(&mut resume(), false));
    assert!(
        refused.contains("the data files changed") && refused.contains("00095.png"),
        "{refused}"
    );
    run(resume().arg("--accept-changes"), true);
    let epochs = records(&runs.join("corrupt"))
        .into_iter()
        .filter(|r| r.kind == RecordKind::Epoch)
        .count();
    assert_eq!(epochs, 2);

    // Asked to skip unreadable images, a run leaves this one (and a test image) out and says
    // so in its report.
    std::fs::write(&bad, &good[..good.len() / 3]).unwrap();
    let bad_test = folder.join("test/c0/00001.png");
    std::fs::write(&bad_test, b"not a png").unwrap();
    let skip_sets = [sets.clone(), vec!["data.skip_corrupt=true".into()]].concat();
    run(
        supcon().args(command("train", "skip", &runs, &skip_sets)),
        true,
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.join("skip/report.json")).unwrap()).unwrap();
    let dataset = report["dataset"].as_str().unwrap_or_default();
    assert!(
        dataset.contains("299 train") && dataset.contains("99 test"),
        "{dataset}"
    );
    assert!(
        dataset.contains("2 unreadable image(s) left out"),
        "{dataset}"
    );
    // The same with the folder decoded into memory: the check comes before the decoding.
    let in_memory = [skip_sets, vec!["data.stream=false".into()]].concat();
    run(
        supcon().args(command("train", "skip-memory", &runs, &in_memory)),
        true,
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.join("skip-memory/report.json")).unwrap())
            .unwrap();
    let dataset = report["dataset"].as_str().unwrap_or_default();
    assert!(
        dataset.contains("2 unreadable image(s) left out"),
        "{dataset}"
    );
}

/// A run on tar shards in WebDataset's order, killed in the middle of an epoch, resumes to the
/// losses of a run never interrupted.
#[test]
fn a_killed_run_on_shards_resumes_exactly() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let (folder, shards, runs) = (
        dir.path().join("folder"),
        dir.path().join("shards"),
        dir.path().join("runs"),
    );
    write_folder(&folder);
    write_shards(&folder, &shards, 4, true);
    let sets = vec![
        "data.dataset=shards".to_string(),
        "data.color=gray".to_string(),
        format!(
            "data.path={}",
            shards.join("train-{000000..000003}.tar").display()
        ),
        "data.shuffle_buffer=50".into(),
        "pretrain.epochs=2".into(),
        "pretrain.batch_size=32".into(),
        "checkpoint.every_steps=3".into(),
    ];
    let args = |name: &str| command("pretrain", name, &runs, &sets);
    run(supcon().args(args("straight")), true);
    let mut child = supcon().args(args("killed")).spawn().unwrap();
    let checkpoint = runs.join("killed/checkpoints/pretrain-last.safetensors");
    common::wait_until(&mut child, "its first checkpoint", || checkpoint.exists());
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "finished before the kill");
    run(
        supcon()
            .args(["pretrain", "--quiet", "--resume"])
            .arg(runs.join("killed")),
        true,
    );
    let straight = losses(&runs.join("straight"), RecordKind::Step);
    assert_eq!(straight.len(), 14, "2 epochs of 7 steps");
    assert_eq!(losses(&runs.join("killed"), RecordKind::Step), straight);

    // A shard rewritten since (here only its modification time) is other data: the resume is
    // refused, naming it, unless the changes are accepted.
    let touched = shards.join("train-000002.tar");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&touched)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let resume = |accept: bool| {
        let mut cmd = supcon();
        cmd.args(["pretrain", "--quiet", "--resume"])
            .arg(runs.join("killed"));
        if accept {
            cmd.arg("--accept-changes");
        }
        cmd
    };
    let refused = run(&mut resume(false), false);
    let err = common::stderr(&refused);
    assert!(
        err.contains("the data files changed") && err.contains("newest train-000002.tar"),
        "{err}"
    );
    let accepted = run(&mut resume(true), true);
    assert!(
        common::stderr(&accepted).contains("--accept-changes"),
        "{}",
        common::stderr(&accepted)
    );
}
