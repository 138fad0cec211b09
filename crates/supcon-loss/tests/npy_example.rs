//! The `loss_npy` example's logic on temporary `.npy` files: dtypes, queue, gradient output and
//! errors that name the bad file.
#![cfg(feature = "npy")]

#[path = "../examples/loss_npy/cli.rs"]
mod cli;

use ndarray::{Array1, Array2, Array3};
use ndarray_npy::{read_npy, write_npy};
use supcon_loss::{supcon, CpuBackend, Queue, SupConBackend, SupConInput, SupConOptions};

fn features() -> Array3<f32> {
    Array3::from_shape_fn((6, 2, 4), |(b, v, d)| {
        ((b * 11 + v * 3 + d) as f32 * 0.7).cos()
    })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn computes_the_same_loss_as_the_library_and_writes_the_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let x = features();
    write_npy(path("f32.npy"), &x).unwrap();
    write_npy(path("f64.npy"), &x.mapv(f64::from)).unwrap();
    let labels = Array1::from(vec![0i64, 1, 0, 2, 1, 2]);
    write_npy(path("labels64.npy"), &labels).unwrap();
    write_npy(path("labels32.npy"), &labels.mapv(|l| l as i32)).unwrap();

    let options = SupConOptions::default()
        .with_temperature(0.2)
        .with_base_temperature(Some(0.07))
        .with_variant(supcon_loss::Variant::In);
    let want = supcon(x.view(), Some(labels.as_slice().unwrap()), &options).unwrap();
    // float64 features run in float64 and give a float64 gradient.
    let x64 = x.mapv(f64::from);
    let input64 = SupConInput::new(x64.view(), Some(labels.as_slice().unwrap()));
    let want64 = CpuBackend::default()
        .compute_generic(&input64, &options)
        .unwrap();
    for (features, labels) in [("f32.npy", "labels64.npy"), ("f64.npy", "labels32.npy")] {
        let parsed = cli::parse_args(&args(&[
            &path(features),
            &path(labels),
            "--temperature",
            "0.2",
            "--base-temperature",
            "0.07",
            "--variant",
            "in",
            "--grad-out",
            &path("grad.npy"),
        ]))
        .unwrap();
        let report = cli::run(&parsed).unwrap();
        assert_eq!(report.anchors, want.anchors);
        if features == "f32.npy" {
            assert!((report.loss - want.loss).abs() < 1e-12);
            let grad: Array3<f32> = read_npy(path("grad.npy")).unwrap();
            assert_eq!(grad, want.grad);
        } else {
            assert_eq!(report.loss, want64.loss);
            let grad: Array3<f64> = read_npy(path("grad.npy")).unwrap();
            assert_eq!(grad, want64.grad);
        }
        let json = report.json();
        assert!(
            json.starts_with("{\"loss\": ")
                && json.ends_with(&format!("\"anchors\": {}}}", want.anchors)),
            "{json}"
        );
    }
}

#[test]
fn queue_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let x = features();
    let keys = Array2::from_shape_fn((5, 4), |(k, d)| ((k * 5 + d) as f32).sin());
    let key_labels = vec![0i64, 1, 5, 5, 2];
    write_npy(path("x.npy"), &x).unwrap();
    write_npy(path("k.npy"), &keys).unwrap();
    write_npy(path("kl.npy"), &Array1::from(key_labels.clone())).unwrap();
    write_npy(path("l.npy"), &Array1::from(vec![0i64, 1, 0, 2, 1, 2])).unwrap();
    let parsed = cli::parse_args(&args(&[
        &path("x.npy"),
        &path("l.npy"),
        "--queue",
        &path("k.npy"),
        "--queue-labels",
        &path("kl.npy"),
        "--contrast-mode",
        "one",
        "--normalize",
    ]))
    .unwrap();
    let report = cli::run(&parsed).unwrap();
    let options = SupConOptions::default()
        .with_contrast_mode(supcon_loss::ContrastMode::One)
        .with_normalize(true);
    let input = SupConInput::new(x.view(), Some(&[0, 1, 0, 2, 1, 2])).with_queue(Queue {
        keys: keys.view(),
        labels: &key_labels,
    });
    let want = CpuBackend::default().compute(&input, &options).unwrap();
    assert_eq!(report.anchors, want.anchors);
    assert!((report.loss - want.loss).abs() < 1e-12);
}

#[test]
fn bad_files_and_arguments_give_messages_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("garbage.npy"), b"not an npy file").unwrap();
    write_npy(path("2d.npy"), &Array2::<f32>::zeros((3, 4))).unwrap();
    write_npy(path("x.npy"), &features()).unwrap();
    write_npy(path("floats.npy"), &Array1::<f32>::zeros(6)).unwrap();
    write_npy(path("short.npy"), &Array1::<i64>::zeros(5)).unwrap();

    let message = |list: &[&str]| {
        let err = cli::parse_args(&args(list))
            .and_then(|a| cli::run(&a))
            .expect_err("should fail");
        format!("{err:#}")
    };
    for (list, needle) in [
        (vec![path("missing.npy")], "missing.npy"),
        (vec![path("garbage.npy")], "garbage.npy"),
        (vec![path("2d.npy")], "2d.npy"),
        (vec![path("x.npy"), path("floats.npy")], "floats.npy"),
        (vec![path("x.npy"), path("short.npy")], "labels length"),
    ] {
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        let msg = message(&refs);
        assert!(msg.contains(needle), "`{msg}` does not mention {needle}");
    }
    assert!(message(&["--temperature"]).contains("needs a value"));
    assert!(message(&[&path("x.npy"), "--temperature", "-1"]).contains("temperature"));
    assert!(message(&[&path("x.npy"), "--variant", "sideways"]).contains("--variant"));
    assert!(message(&[&path("x.npy"), "--queue", &path("x.npy")]).contains("--queue-labels"));
    assert!(message(&["--bogus"]).contains("unknown option"));
    assert!(message(&[]).contains("FEATURES"));
}

/// A bounded mutation fuzzer of the `.npy` readers (the in-CI stand-in for a cargo-fuzz target):
/// a valid file's header bytes are flipped, its length fields set to extremes, the file cut or
/// extended; every read returns an array or an error, never a panic, and never allocates
/// beyond what the file holds (a forged shape is refused before ndarray-npy sizes a buffer).
#[test]
fn mutated_npy_files_are_read_or_refused_never_allocated_blindly() {
    let dir = tempfile::tempdir().unwrap();
    let valid = dir.path().join("valid.npy");
    write_npy(&valid, &features()).unwrap();
    let seed = std::fs::read(&valid).unwrap();
    let path = dir.path().join("mutant.npy");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: a fixed, dependency-free stream of mutations.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut refused_by_size = 0;
    for case in 0..3000 {
        let mut bytes = seed.clone();
        match case % 4 {
            0 => {
                let at = next() as usize % 128;
                bytes[at] ^= 1 << (next() % 8);
            }
            1 => {
                // The header length (v1: two bytes at 8) set to an extreme.
                let value = [0u16, 1, 0x7fff, u16::MAX][next() as usize % 4];
                bytes[8..10].copy_from_slice(&value.to_le_bytes());
            }
            2 => bytes.truncate(next() as usize % bytes.len()),
            _ => {
                // A digit of the shape replaced by a long run of nines.
                let text = String::from_utf8_lossy(&bytes[10..128]).into_owned();
                if let Some(at) = text.find("(6") {
                    let at = 10 + at + 1;
                    bytes.splice(at..at + 1, b"99999999999999".iter().copied());
                    bytes.truncate(bytes.len().min(seed.len()));
                }
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let read = std::panic::catch_unwind(|| {
            let _ = supcon_loss::npy::read_labels(&path, "labels");
            supcon_loss::npy::read_floats::<ndarray::Ix3>(&path, "features", "a 3-D")
        });
        match read {
            Err(_) => panic!("case {case} panicked on {bytes:?}"),
            Ok(Err(supcon_loss::npy::NpyLossError::Bounds { .. })) => refused_by_size += 1,
            Ok(_) => {}
        }
    }
    assert!(
        refused_by_size > 100,
        "only {refused_by_size} forged sizes were tried"
    );
    eprintln!("{refused_by_size} of 3000 mutants refused by their declared size");
}
