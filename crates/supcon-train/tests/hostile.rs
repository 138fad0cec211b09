//! Hostile input to the `supcon` binary: files and flags made to be wrong. Each case gets a
//! clear error naming what and where — no abort, no panic, no hang, no deleted folder and no
//! silently wrong result — and nothing on disk is lost.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{run, stderr, supcon, FAST};

/// Runs `cmd`, which must fail within a minute (a command that blocks is killed, then fails
/// the test), and returns its stderr.
fn fails_quickly(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the supcon binary starts");
    let started = Instant::now();
    while child.try_wait().expect("the child's status").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            panic!("supcon still running after 60 s: it blocked on its input");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("its output");
    assert_refused(&output);
    stderr(&output)
}

/// A refusal: a non-zero exit with an error line, not a crash (a signal has no exit code).
fn assert_refused(output: &Output) {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "not a clean error exit:\n{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
}

#[test]
fn a_run_name_cannot_leave_the_runs_folder() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("proj");
    fs::create_dir_all(project.join("runs")).unwrap();
    fs::write(project.join("config.toml"), "mine").unwrap();
    for name in ["..", "../proj", "/", "a/b", "."] {
        let err = fails_quickly(
            supcon()
                .args(["pretrain", "--overwrite", "--name", name, "--runs-dir"])
                .arg(project.join("runs")),
        );
        assert!(err.contains("plain folder name"), "{name}: {err}");
    }
    assert_eq!(fs::read(project.join("config.toml")).unwrap(), b"mine");
}

#[test]
fn overwrite_refuses_a_folder_supcon_did_not_make() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    fs::create_dir_all(&theirs).unwrap();
    fs::write(theirs.join("config.toml"), "keep me").unwrap();
    let err = fails_quickly(
        supcon()
            .args(["pretrain", "--overwrite", "--name", "theirs", "--runs-dir"])
            .arg(dir.path())
            .args(FAST),
    );
    assert!(
        err.contains(".supcon-run") && err.contains("refusing to delete"),
        "{err}"
    );
    assert_eq!(fs::read(theirs.join("config.toml")).unwrap(), b"keep me");
}

/// One finished quick pre-training run, for the lock and resume cases.
fn finished_run(runs: &Path) -> std::path::PathBuf {
    let args = common::pretrain_args("done", runs, &["pretrain.batch_size=64"]);
    run(supcon().args(&args), true);
    runs.join("done")
}

#[test]
fn a_live_run_is_locked_and_an_edited_config_is_not_resumed() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = finished_run(dir.path());
    assert!(run_dir.join(".supcon-run").is_file());
    let metrics = fs::read(run_dir.join("metrics.jsonl")).unwrap();

    // Another process holds the run (as a training run does for its life).
    let lock = fs::OpenOptions::new()
        .write(true)
        .open(run_dir.join("run.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    fs::write(run_dir.join("run.lock"), "pid 4242\n").unwrap();
    for args in [vec!["eval", "--run"], vec!["pretrain", "--resume"]] {
        let err = fails_quickly(supcon().args(&args).arg(&run_dir));
        assert!(
            err.contains("in use by another supcon process (pid 4242)"),
            "{args:?}: {err}"
        );
    }
    let err = fails_quickly(
        supcon()
            .args(["pretrain", "--overwrite", "--name", "done", "--runs-dir"])
            .arg(dir.path())
            .args(FAST),
    );
    assert!(err.contains("in use"), "{err}");
    assert_eq!(fs::read(run_dir.join("metrics.jsonl")).unwrap(), metrics);
    drop(lock);

    // An edited config.toml would resume another run under this one's name.
    let path = run_dir.join("config.toml");
    let mut config: toml::Table = toml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    config["pretrain"]["optim"]
        .as_table_mut()
        .unwrap()
        .insert("lr".into(), toml::Value::Float(0.123));
    fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let err = fails_quickly(supcon().args(["pretrain", "--resume"]).arg(&run_dir));
    assert!(
        err.contains("config.toml changed")
            && err.contains("pretrain.optim.lr")
            && err.contains("0.123 now"),
        "{err}"
    );
    assert_eq!(fs::read(run_dir.join("metrics.jsonl")).unwrap(), metrics);
}

#[test]
fn config_sizes_and_numbers_are_bounded_before_the_run_folder_exists() {
    let dir = tempfile::tempdir().unwrap();
    for (set, key) in [
        ("threads=4294967296", "threads"),
        ("model.projection_dim=10000000000", "projection_dim"),
        ("model.in_channels=100000", "in_channels"),
        ("pretrain.views=1000000", "pretrain.views"),
        ("pretrain.queue=100000000000", "pretrain.queue"),
        ("data.shuffle_buffer=100000000000", "data.shuffle_buffer"),
        ("data.prefetch=100000000", "data.prefetch"),
        ("data.image_size=1000000", "data.image_size"),
        ("eval.knn_temperature=0", "eval.knn_temperature"),
        ("eval.knn_temperature=nan", "eval.knn_temperature"),
        (
            "pretrain.optim.lr_decay_rate=-0.1",
            "pretrain.optim.lr_decay_rate",
        ),
        ("linear.optim.lars_eta=-1", "linear.optim.lars_eta"),
        (
            "ce.optim.warmup_from_fraction=2",
            "ce.optim.warmup_from_fraction",
        ),
    ] {
        let err = fails_quickly(
            supcon()
                .args(["train", "--name", "x", "--set", set, "--runs-dir"])
                .arg(dir.path()),
        );
        assert!(err.contains(key), "{set}: {err}");
        assert!(!dir.path().join("x").exists(), "{set} made the run folder");
    }
    let err = fails_quickly(supcon().args([
        "train",
        "--preset",
        "quick-cpu-moco-v2",
        "--set",
        "pretrain.moco.queue=100000000000",
    ]));
    assert!(
        err.contains("pretrain.moco.queue: 100000000000 is above"),
        "{err}"
    );
    let deep = format!("{}=1", vec!["a"; 50_000].join("."));
    let err = fails_quickly(supcon().args(["train", "--set", &deep]));
    assert!(err.contains("dotted parts"), "{err}");
}

#[test]
fn shards_without_test_shards_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails_quickly(
        supcon()
            .args(["train", "--name", "x", "--runs-dir"])
            .arg(dir.path())
            .args(["--set", "data.dataset=\"shards\"", "--set"])
            .arg(format!("data.path='{}/train-0.tar'", dir.path().display())),
    );
    assert!(err.contains("data.test_path"), "{err}");
    assert!(!dir.path().join("x").exists());
}

#[test]
fn special_files_are_refused_instead_of_read_forever() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let err = fails_quickly(supcon().args(["train", "--config"]).arg(&fifo));
    assert!(
        err.contains("not a regular file") && err.contains("config.toml"),
        "{err}"
    );

    let err = fails_quickly(
        supcon()
            .args(["embed", "--checkpoint", "/dev/zero", "--out"])
            .arg(dir.path().join("out")),
    );
    assert!(
        err.contains("not a regular file") && err.contains("/dev/zero"),
        "{err}"
    );
}

/// A checkpoint whose training state (JSON in its state tensor) was edited: the sizes in it
/// are input too, and `supcon embed` builds its model from them.
fn forge_state(checkpoint: &Path, out: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut tensors = tch::Tensor::read_safetensors(checkpoint).unwrap();
    let state = tensors
        .iter_mut()
        .find(|(name, _)| name == supcon_train::checkpoint::STATE_TENSOR)
        .expect("a training state");
    let bytes: Vec<u8> = Vec::try_from(&state.1).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    edit(&mut json);
    state.1 = tch::Tensor::from_slice(json.to_string().as_bytes());
    tch::Tensor::write_safetensors(&tensors, out).unwrap();
}

#[test]
fn a_forged_checkpoint_state_is_refused_by_embed_within_two_gib() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = finished_run(dir.path());
    let checkpoint = run_dir.join("checkpoints/pretrain-last.safetensors");
    let forged = dir.path().join("forged.safetensors");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 2] = [
        (
            "projection_dim",
            |state| state["model"]["projection_dim"] = 10_000_000_000u64.into(),
            "projection_dim",
        ),
        (
            "num_classes",
            |state| state["num_classes"] = 1_000_000_000_000u64.into(),
            "classes, above the limit",
        ),
    ];
    for (what, edit, expected) in cases {
        forge_state(&checkpoint, &forged, edit);
        let out = dir.path().join("embeddings");
        let output = within_two_gib(&[
            "embed".as_ref(),
            "--checkpoint".as_ref(),
            forged.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
        .output()
        .unwrap();
        assert_refused(&output);
        let err = stderr(&output);
        assert!(
            err.contains(expected) && err.contains("forged.safetensors"),
            "{what}: {err}"
        );
        assert!(!out.exists(), "{what}: wrote embeddings");
    }
}

/// `supcon args…` under a 2 GiB address-space limit (`ulimit -v`): an input of a few KB that
/// makes it allocate more aborts instead of failing cleanly.
fn within_two_gib(args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg("ulimit -v 2097152 && exec \"$@\"")
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_supcon"))
        .args(args)
        .env("RUST_LOG", "warn");
    cmd
}

/// A `.npy` file of `total` bytes whose header declares `shape` float32 elements.
fn forged_npy(path: &Path, shape: &str, total: usize) {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header);
    bytes.resize(total.max(bytes.len()), 0);
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_forged_npy_header_is_an_error_within_a_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let features = dir.path().join("features.npy");
    forged_npy(&features, "1099511627776, 2, 128", 256);
    // Under a 2 GiB address-space limit: asking for the declared terabytes would abort.
    let err = fails_quickly(&mut within_two_gib(&[
        "loss".as_ref(),
        "--features".as_ref(),
        features.as_os_str(),
    ]));
    assert!(
        err.contains("features.npy")
            && err.contains("1099511627776")
            && err.contains("truncated or forged"),
        "{err}"
    );

    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend(u32::MAX.to_le_bytes());
    v2.extend([b' '; 100]);
    fs::write(&features, v2).unwrap();
    let err = fails_quickly(supcon().args(["loss", "--features"]).arg(&features));
    assert!(err.contains("header of 4294967295 bytes"), "{err}");
}

/// `root/<split>/<class>/0.png` for each class name: 8 × 8 gray images.
fn image_folder(root: &Path, split: &str, classes: &[&str]) {
    for (i, class) in classes.iter().enumerate() {
        for j in 0..4u8 {
            let path = root.join(split).join(class).join(format!("{j}.png"));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            image::GrayImage::from_pixel(8, 8, image::Luma([40 * i as u8 + j]))
                .save(path)
                .unwrap();
        }
    }
}

/// `supcon train --name x` on the gray image folder `data` with the `sets` overrides, which
/// must fail; its stderr.
fn refused_on_folder(runs: &Path, data: &Path, sets: &[&str]) -> String {
    let mut cmd = supcon();
    cmd.args(["train", "--name", "x", "--runs-dir"]).arg(runs);
    for set in ["data.dataset=\"folder\"", "data.color=\"gray\""]
        .iter()
        .chain(sets)
    {
        cmd.args(["--set", set]);
    }
    fails_quickly(cmd.arg("--data").arg(data))
}

#[test]
fn test_classes_under_other_names_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    image_folder(&data, "train", &["cat", "dog"]);
    image_folder(&data, "test", &["cat", "fox"]);
    let err = refused_on_folder(dir.path(), &data, &[]);
    assert!(
        err.contains("[cat, fox]") && err.contains("[cat, dog]"),
        "{err}"
    );
    assert!(!dir.path().join("x").exists());
}

#[test]
fn the_data_limits_are_settings_and_their_errors_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    image_folder(&data, "train", &["cat", "dog"]);
    image_folder(&data, "test", &["cat", "dog"]);
    // 8 × 8 images under a limit of 10 pixels: the setting reaches the reader.
    let err = refused_on_folder(dir.path(), &data, &["data.limits.max_image_pixels=10"]);
    assert!(
        err.contains("max_image_pixels") && err.contains("64"),
        "{err}"
    );
    assert!(!dir.path().join("x").exists());
}

/// A tar shard holding `sample.png` (a real 8 × 8 image) and `sample.cls` = `label`.
fn shard_with_label(path: &Path, label: &str) {
    let mut png = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_pixel(8, 8, image::Luma([7]))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, body) in [
        ("sample.png", png.into_inner()),
        ("sample.cls", label.into()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, body.as_slice())
            .unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn hostile_image_data_is_refused_by_the_binary_within_two_gib() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let name_and_runs = |name: &str| -> Vec<std::ffi::OsString> {
        vec![
            "train".into(),
            "--name".into(),
            name.into(),
            "--runs-dir".into(),
            runs.clone().into(),
        ]
    };
    let with = |name: &str, sets: &[String]| {
        let mut args = name_and_runs(name);
        for set in sets {
            args.push("--set".into());
            args.push(set.into());
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        fails_quickly(&mut within_two_gib(&args))
    };

    // A 1 × 3 000 000 PNG (a few KB) centre-cropped to 32 × 32 would be resized to
    // 32 × 96 000 000 pixels first.
    let data = dir.path().join("thin");
    image_folder(&data, "train", &["cat", "dog"]);
    image_folder(&data, "test", &["cat", "dog"]);
    image::GrayImage::new(3_000_000, 1)
        .save(data.join("train/cat/thin.png"))
        .unwrap();
    let folder = |path: &Path| {
        vec![
            "data.dataset=\"folder\"".to_string(),
            "data.color=\"gray\"".into(),
            "data.image_size=32".into(),
            "data.fit=\"center-crop\"".into(),
            format!("data.path='{}'", path.display()),
        ]
    };
    let err = with("thin", &folder(&data));
    assert!(
        err.contains("thin.png") && err.contains("max_image_pixels"),
        "{err}"
    );

    // A brace pattern naming a hundred billion shards.
    let shards = dir.path().join("shards");
    fs::create_dir_all(&shards).unwrap();
    let pattern = |split: &str| format!("'{}/{split}-{{0..99999999999}}.tar'", shards.display());
    let sets = [
        "data.dataset=\"shards\"".to_string(),
        "data.color=\"gray\"".into(),
        format!("data.path={}", pattern("train")),
        format!("data.test_path={}", pattern("test")),
    ];
    let err = with("braces", &sets);
    assert!(
        err.contains("max_pattern_names") && err.contains("100000000000"),
        "{err}"
    );

    // A label of 10^11 would size the class list.
    shard_with_label(&shards.join("train.tar"), "100000000000");
    shard_with_label(&shards.join("test.tar"), "0");
    let sets = [
        "data.dataset=\"shards\"".to_string(),
        "data.color=\"gray\"".into(),
        format!("data.path='{}'", shards.join("train.tar").display()),
        format!("data.test_path='{}'", shards.join("test.tar").display()),
    ];
    let err = with("label", &sets);
    assert!(
        err.contains("sample.cls") && err.contains("max_class_id"),
        "{err}"
    );
    assert!(!runs.exists(), "a refused run made its folder");
}
