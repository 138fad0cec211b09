//! Few labels: the labeled subset, semi-supervised SupCon in the pipeline, SimCLR v2's
//! fine-tuning and distillation stages (end to end, SIGKILL resume), and the bad-input table.

mod common;

use std::path::Path;

use common::{run, stderr, supcon};
use supcon_train::checkpoint::Checkpoint;
use supcon_train::metrics_log::{read_metrics, RecordKind};

/// `supcon COMMAND --quiet` into `runs/name` with the fast settings, 5 labels per class of
/// the 54 training images per class left after the validation split, and `sets`.
fn few_label_args(command: &str, name: &str, runs: &Path, sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [command, "--quiet", "--name", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push("--runs-dir".into());
    args.push(runs.display().to_string());
    args.extend(common::FAST.iter().map(|s| s.to_string()));
    for set in ["data.labeled_per_class=5"].iter().chain(sets) {
        args.push("--set".into());
        args.push(set.to_string());
    }
    args
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn the_semi_cpu_preset_runs_simclr_v2s_whole_system_on_one_percent_of_the_labels() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = ["train", "--quiet", "--with-baseline", "--name", "system"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--runs-dir".into(), dir.path().display().to_string()]);
    args.extend(common::FAST.iter().map(|s| s.to_string()));
    args.extend(
        [
            "--preset",
            "semi-cpu",
            "--set",
            "finetune.epochs=1",
            "--set",
            "distill.epochs=1",
        ]
        .map(String::from),
    );
    run(supcon().args(&args), true);
    let root = dir.path().join("system");
    // 1 % of 54 images per class rounds to one.
    assert_eq!(json(&root.join("labeled_subset.json"))["labeled"], 10);
    let report = json(&root.join("report.json"));
    let methods: Vec<&str> = report["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["simclr", "simclr+finetune", "simclr+distill", "ce"]
    );
    for stage in ["pretrain", "linear", "finetune", "distill", "ce"] {
        assert!(
            root.join(format!("checkpoints/{stage}-last.safetensors"))
                .exists(),
            "{stage}"
        );
    }
}

#[test]
fn the_whole_system_trains_on_a_few_labels_and_says_which() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let args = few_label_args(
        "train",
        "semi",
        dir.path(),
        &[
            "finetune.epochs=1",
            "finetune.batch_size=16",
            "distill.epochs=1",
            "distill.batch_size=64",
            "distill.labeled_weight=0.5",
        ],
    );
    run(supcon().args(&args).arg("--with-baseline"), true);
    let root = dir.path().join("semi");

    // The subset: 5 of each class, indices into the training split, written once.
    let subset = json(&root.join("labeled_subset.json"));
    assert_eq!(subset["labeled_per_class"], 5);
    assert_eq!(subset["labeled"], 50);
    let indices: Vec<u64> = subset["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    assert_eq!(indices.len(), 50);
    assert!(indices.windows(2).all(|w| w[0] < w[1]));
    assert!(*indices.last().unwrap() < subset["training_split"].as_u64().unwrap());

    // Stage 1 saw every training image; the classifier stages only the 50 labeled ones.
    let images_per_stage = |stage: &str| {
        let state = Checkpoint::load(&root.join(format!("checkpoints/{stage}-last.safetensors")))
            .unwrap()
            .state
            .unwrap();
        state.images_seen / u64::from(state.epochs)
    };
    assert_eq!(images_per_stage("pretrain"), 512, "8 batches of 64 of 540");
    assert_eq!(
        images_per_stage("distill"),
        540,
        "every image, the last batch kept"
    );
    for stage in ["linear", "ce", "finetune"] {
        assert_eq!(images_per_stage(stage), 50, "{stage}");
    }

    // One report row per trained system, and the data line names the subset.
    let report = json(&root.join("report.json"));
    let methods: Vec<&str> = report["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["supcon", "supcon+finetune", "supcon+distill", "ce"]
    );
    let dataset = report["dataset"].as_str().unwrap();
    assert!(dataset.contains("few labels: 50 of 540"), "{dataset}");
    // `supcon eval` reads every stage's network back: the same rows, the same figures.
    run(supcon().args(["eval", "--quiet", "--run"]).arg(&root), true);
    let again = json(&root.join("report.json"));
    assert_eq!(again["evaluations"], report["evaluations"]);

    // The same seed gives the same subset: another method is compared on the same labels.
    let other = few_label_args("pretrain", "simclr", dir.path(), &[]);
    run(
        supcon()
            .args(&other)
            .args(["--method", "simclr", "--views", "2"]),
        true,
    );
    assert_eq!(
        json(&dir.path().join("simclr/labeled_subset.json"))["indices"],
        subset["indices"]
    );
}

/// Runs `stage` (the command `args(name)` starts) straight and killed after its first
/// checkpoint then resumed with `resume`; the weights, optimizer state and epoch losses agree.
fn killed_stage_resumes_exactly(
    runs: &Path,
    stage: &str,
    args: &dyn Fn(&str) -> Vec<String>,
    resume: &[String],
) {
    run(supcon().args(args("straight")), true);
    let mut child = supcon().args(args("killed")).spawn().unwrap();
    let file = format!("checkpoints/{stage}-last.safetensors");
    let checkpoint = runs.join("killed").join(&file);
    common::wait_until(&mut child, "its first checkpoint", || checkpoint.exists());
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "finished before the kill");
    let state = Checkpoint::load(&checkpoint).unwrap().state.unwrap();
    assert!(
        state.global_step < 14,
        "killed too late: {}",
        state.global_step
    );
    run(
        supcon()
            .args(resume)
            .arg("--resume")
            .arg(runs.join("killed")),
        true,
    );
    let a = Checkpoint::load(&runs.join("straight").join(&file)).unwrap();
    let b = Checkpoint::load(&runs.join("killed").join(&file)).unwrap();
    for group in ["model", "optim"] {
        let (ga, gb) = (a.group(group), b.group(group));
        assert!(!ga.is_empty(), "no {group} tensors");
        assert_eq!(ga.keys().collect::<Vec<_>>(), gb.keys().collect::<Vec<_>>());
        for (name, t) in &ga {
            assert!(
                t.equal(&gb[name]),
                "{stage}: {group}.{name} differs after resuming"
            );
        }
    }
    let losses = |name: &str| -> Vec<f64> {
        read_metrics(&runs.join(name).join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == RecordKind::Epoch)
            .map(|r| r.loss)
            .collect()
    };
    assert_eq!(losses("straight"), losses("killed"), "{stage}");
}

#[test]
fn killed_fine_tuning_and_distillation_resume_to_the_same_weights() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    run(
        supcon().args(few_label_args("pretrain", "encoder", dir.path(), &[])),
        true,
    );
    let encoder = dir
        .path()
        .join("encoder/checkpoints/pretrain-last.safetensors");
    // 2 epochs of 7 steps (50 labeled images, batches of 8), a checkpoint every 2 steps.
    let finetune = |name: &str| {
        let mut args = few_label_args(
            "finetune",
            name,
            dir.path().join("ft").as_path(),
            &["finetune.epochs=2", "checkpoint.every_steps=2"],
        );
        args.extend(["--batch-size".into(), "8".into(), "--checkpoint".into()]);
        args.push(encoder.display().to_string());
        args
    };
    let resume: Vec<String> = ["finetune", "--quiet", "--checkpoint"]
        .iter()
        .map(|s| s.to_string())
        .chain([encoder.display().to_string()])
        .collect();
    killed_stage_resumes_exactly(&dir.path().join("ft"), "finetune", &finetune, &resume);
    // The fine-tuned network kept the head's first layer (mlp head, from layer 1).
    let tuned = Checkpoint::load(
        &dir.path()
            .join("ft/straight/checkpoints/finetune-last.safetensors"),
    )
    .unwrap();
    assert!(tuned.group("model").contains_key("head.0.weight"));
    assert!(!tuned.group("model").contains_key("head.2.weight"));

    // Distillation from that run: 1 epoch of 9 steps (540 images, batches of 64).
    let teacher = dir.path().join("ft/straight");
    let distill = |name: &str| {
        let mut args = few_label_args(
            "distill",
            name,
            dir.path().join("kd").as_path(),
            &[
                "distill.epochs=1",
                "distill.labeled_weight=0.5",
                "checkpoint.every_steps=2",
            ],
        );
        args.extend(["--batch-size".into(), "64".into(), "--teacher".into()]);
        args.push(teacher.display().to_string());
        args
    };
    let resume: Vec<String> = ["distill", "--quiet", "--teacher"]
        .iter()
        .map(|s| s.to_string())
        .chain([teacher.display().to_string()])
        .collect();
    killed_stage_resumes_exactly(&dir.path().join("kd"), "distill", &distill, &resume);
}

#[test]
fn bad_few_label_fine_tuning_and_distillation_settings_are_refused_by_name() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let refused = |name: &str, command: &str, sets: &[&str], extra: &[&str], says: &[&str]| {
        let mut args: Vec<String> = [command, "--quiet", "--name", name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push("--runs-dir".into());
        args.push(dir.path().display().to_string());
        args.extend(common::FAST.iter().map(|s| s.to_string()));
        for set in sets {
            args.push("--set".into());
            args.push(set.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let output = run(supcon().args(&args), false);
        let message = stderr(&output);
        for word in says {
            assert!(message.contains(word), "{name}: `{word}` not in {message}");
        }
        assert!(!message.contains("panicked"), "{name}: {message}");
        let trained = std::fs::read_dir(dir.path().join(name).join("checkpoints"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(trained, 0, "{name}: trained anyway");
    };
    refused(
        "zero",
        "pretrain",
        &["data.labeled_fraction=0.0"],
        &[],
        &["data.labeled_fraction", "(0, 1]"],
    );
    refused(
        "above-one",
        "pretrain",
        &["data.labeled_fraction=1.5"],
        &[],
        &["data.labeled_fraction", "(0, 1]"],
    );
    refused(
        "none-per-class",
        "pretrain",
        &["data.labeled_per_class=0"],
        &[],
        &["data.labeled_per_class", "without a labeled image"],
    );
    refused(
        "both",
        "pretrain",
        &["data.labeled_per_class=5", "data.labeled_fraction=0.1"],
        &[],
        &[
            "data.labeled_per_class",
            "data.labeled_fraction",
            "keep one",
        ],
    );
    // 54 images per class after the validation split.
    refused(
        "too-many",
        "pretrain",
        &["data.labeled_per_class=100"],
        &[],
        &["data.labeled_per_class", "100", "only 54"],
    );
    refused(
        "rounds-to-none",
        "pretrain",
        &["data.labeled_fraction=0.001"],
        &[],
        &["data.labeled_fraction", "without a labeled image"],
    );
    refused(
        "unlabeled-data",
        "pretrain",
        &[
            "data.labeled_per_class=5",
            "data.labels=false",
            "data.eval_dataset=\"fashion-mnist\"",
        ],
        &["--method", "simclr", "--views", "2"],
        &["data.labeled_per_class", "no labels"],
    );
    refused(
        "deep",
        "pretrain",
        &["finetune.from_head_layer=3"],
        &[],
        &["finetune.from_head_layer", "2 layer(s)", "mlp"],
    );
    refused(
        "cmc",
        "pretrain",
        &["finetune.epochs=1"],
        &["--preset", "quick-cpu-cmc"],
        &["[finetune]", "cmc"],
    );
    refused(
        "cold-distill",
        "distill",
        &["distill.temperature=0.0"],
        &["--teacher", "nowhere"],
        &["distill.temperature", "positive"],
    );
    refused(
        "negative-weight",
        "pretrain",
        &["distill.labeled_weight=-1.0"],
        &[],
        &["distill.labeled_weight"],
    );
    refused(
        "distill-without-teacher",
        "train",
        &["distill.epochs=1"],
        &[],
        &["[distill]", "[finetune]"],
    );
    // Refused with the configuration's checks, before the run folder is made.
    assert!(!dir.path().join("distill-without-teacher").exists());
    // Fine-tuning from a checkpoint of the wrong kind names it.
    let ce_args = few_label_args("ce", "ce", dir.path(), &[]);
    run(supcon().args(&ce_args), true);
    let ce = dir.path().join("ce/checkpoints/ce-last.safetensors");
    refused(
        "from-ce",
        "finetune",
        &[],
        &["--checkpoint", &ce.display().to_string()],
        &["is a ce checkpoint, not a pre-training one"],
    );
    // A teacher run without a fine-tuned network, or trained on other images.
    let ce_run = dir.path().join("ce");
    refused(
        "teacher-without-finetune",
        "distill",
        &[],
        &["--teacher", &ce_run.display().to_string()],
        &["finetune-last.safetensors", "no fine-tuned network"],
    );
    let other = dir.path().join("other-data");
    std::fs::create_dir_all(other.join("checkpoints")).unwrap();
    let config = std::fs::read_to_string(ce_run.join("config.toml"))
        .unwrap()
        .replace("dataset = \"fashion-mnist\"", "dataset = \"mnist\"");
    std::fs::write(other.join("config.toml"), config).unwrap();
    // A fine-tuning checkpoint of the right class count: the CE one, relabelled by its path.
    std::fs::copy(&ce, other.join("checkpoints/finetune-last.safetensors")).unwrap();
    refused(
        "teacher-of-other-images",
        "distill",
        &[],
        &["--teacher", &other.display().to_string()],
        &["mnist", "the teacher must read the student's images"],
    );
    // A teacher of another class count: the CE network's weights under a state that says 7.
    let classes = dir.path().join("other-classes");
    std::fs::create_dir_all(classes.join("checkpoints")).unwrap();
    std::fs::copy(ce_run.join("config.toml"), classes.join("config.toml")).unwrap();
    let source = Checkpoint::load(&ce).unwrap();
    let mut state = source.require_state().unwrap().clone();
    state.num_classes = 7;
    let weights: Vec<(String, tch::Tensor)> = source.group("model").into_iter().collect();
    supcon_train::checkpoint::save(
        &classes.join("checkpoints/finetune-last.safetensors"),
        &state,
        &[("model", weights)],
    )
    .unwrap();
    refused(
        "teacher-of-other-classes",
        "distill",
        &[],
        &["--teacher", &classes.display().to_string()],
        &[
            "classifies 7 classes",
            "has 10",
            "finetune-last.safetensors",
        ],
    );
}
