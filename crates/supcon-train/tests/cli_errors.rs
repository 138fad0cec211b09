//! Clear errors, non-zero exit codes, and nothing overwritten: bad config keys, unknown
//! presets, missing data, an existing run folder, an incompatible checkpoint.

mod common;

use common::{run, stderr, supcon, FAST};

#[test]
fn help_explains_every_command() {
    let output = run(supcon().arg("--help"), true);
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["train", "pretrain", "linear", "ce", "eval", "embed", "loss"] {
        assert!(
            text.contains(command),
            "{command} missing from --help:\n{text}"
        );
    }
    let output = run(supcon().args(["train", "--help"]), true);
    let text = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--resume",
        "--overwrite",
        "--loss-backend",
        "--queue",
        "--with-baseline",
        "--preset",
        "--config",
    ] {
        assert!(text.contains(option), "{option} missing from train --help");
    }
}

#[test]
fn a_misspelt_config_key_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "[pretrain]\nepochz = 2\n").unwrap();
    let output = run(
        supcon()
            .args(["train", "--name", "x", "--runs-dir"])
            .arg(dir.path())
            .arg("--config")
            .arg(&config),
        false,
    );
    let err = stderr(&output);
    assert!(err.contains("epochz") && err.contains("run.toml"), "{err}");
    assert!(!dir.path().join("x").exists());

    let output = run(
        supcon()
            .args(["train", "--preset", "nope", "--runs-dir"])
            .arg(dir.path()),
        false,
    );
    assert!(
        stderr(&output).contains("invalid value 'nope' for '--preset <NAME>'")
            && stderr(&output).contains("quick-cpu-swav"),
        "{}",
        stderr(&output)
    );

    let output = run(
        supcon()
            .args(["train", "--set", "pretrain.optim.lr=-1", "--runs-dir"])
            .arg(dir.path()),
        false,
    );
    assert!(
        stderr(&output).contains("pretrain.optim.lr"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn missing_or_corrupt_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        supcon()
            .args(["pretrain", "--name", "x", "--runs-dir"])
            .arg(dir.path())
            .arg("--data")
            .arg(dir.path().join("no-such-folder")),
        false,
    );
    let err = stderr(&output);
    assert!(
        err.contains("data") && err.contains("no-such-folder"),
        "{err}"
    );
    assert!(
        !dir.path().join("x").exists(),
        "a run folder was created for a failed run"
    );

    let data = dir.path().join("corrupt");
    std::fs::create_dir(&data).unwrap();
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::write(data.join(name), b"definitely not gzip").unwrap();
    }
    let output = run(
        supcon()
            .args(["pretrain", "--name", "y", "--runs-dir"])
            .arg(dir.path())
            .arg("--data")
            .arg(&data),
        false,
    );
    assert!(stderr(&output).contains("data"), "{}", stderr(&output));
    assert!(!dir.path().join("y").exists());
}

#[test]
fn an_existing_run_folder_is_not_overwritten_and_a_foreign_checkpoint_is_refused() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("taken");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::write(run_dir.join("config.toml"), "keep me").unwrap();
    let output = run(
        supcon()
            .args(["pretrain", "--name", "taken", "--runs-dir"])
            .arg(dir.path())
            .args(FAST),
        false,
    );
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("config.toml")).unwrap(),
        "keep me"
    );

    // A weights file of another architecture cannot feed the linear stage.
    let foreign = dir.path().join("foreign.safetensors");
    let t = tch::Tensor::zeros([3, 3], tch::kind::FLOAT_CPU);
    tch::Tensor::write_safetensors(&[("encoder.conv1.weight", &t)], &foreign).unwrap();
    let output = run(
        supcon()
            .args(["linear", "--name", "lin", "--runs-dir"])
            .arg(dir.path())
            .args(FAST)
            .arg("--checkpoint")
            .arg(&foreign),
        false,
    );
    let err = stderr(&output);
    assert!(
        err.contains("does not fit the model") && err.contains("foreign.safetensors"),
        "{err}"
    );

    let output = run(
        supcon()
            .args(["train", "--resume"])
            .arg(dir.path().join("none")),
        false,
    );
    assert!(
        stderr(&output).contains("config.toml"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_loss_command_reads_npy_features() {
    let dir = tempfile::tempdir().unwrap();
    let features = ndarray::Array3::<f32>::from_shape_fn((4, 2, 3), |(b, v, d)| {
        ((b * 7 + v * 3 + d) as f32 * 0.37).sin()
    });
    let labels = ndarray::Array1::<i64>::from(vec![0, 1, 0, 1]);
    ndarray_npy::write_npy(dir.path().join("f.npy"), &features).unwrap();
    ndarray_npy::write_npy(dir.path().join("l.npy"), &labels).unwrap();
    let output = run(
        supcon()
            .args(["loss", "--normalize", "--features"])
            .arg(dir.path().join("f.npy"))
            .arg("--labels")
            .arg(dir.path().join("l.npy"))
            .arg("--grad-out")
            .arg(dir.path().join("g.npy")),
        true,
    );
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let loss = value["loss"].as_f64().unwrap();
    let expected = supcon_loss::supcon(
        features.view(),
        Some(labels.as_slice().unwrap()),
        &supcon_loss::SupConOptions::default().with_normalize(true),
    )
    .unwrap()
    .loss;
    assert!((loss - expected).abs() < 1e-9, "{loss} vs {expected}");
    let grad: ndarray::Array3<f32> = ndarray_npy::read_npy(dir.path().join("g.npy")).unwrap();
    assert_eq!(grad.dim(), (4, 2, 3));
    let output = run(
        supcon()
            .args(["loss", "--features"])
            .arg(dir.path().join("missing.npy")),
        false,
    );
    assert!(
        stderr(&output).contains("missing.npy"),
        "{}",
        stderr(&output)
    );
}
