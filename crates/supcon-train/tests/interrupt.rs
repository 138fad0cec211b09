//! Ctrl-C (SIGINT) finishes the current step, writes a checkpoint, prints the resume command
//! and exits with 130; resuming from that checkpoint ends exactly where an uninterrupted run
//! ends.
#![cfg(unix)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, supcon, FAST};
use supcon_train::checkpoint::Checkpoint;
use supcon_train::metrics_log::{read_metrics, RecordKind};

/// Pre-training on a 300-image subset: 3 epochs of 9 steps, no periodic checkpoint, so the
/// only mid-run checkpoint is the interrupt's.
fn args(name: &str, runs: &std::path::Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["pretrain".into(), "--quiet".into(), "--name".into()];
    a.push(name.into());
    a.push("--runs-dir".into());
    a.push(runs.display().to_string());
    a.extend(FAST.iter().map(|s| s.to_string()));
    for set in [
        "data.train_per_class=30",
        "pretrain.epochs=3",
        "pretrain.batch_size=32",
    ] {
        a.push("--set".into());
        a.push(set.into());
    }
    a
}

#[test]
fn ctrl_c_writes_a_checkpoint_prints_the_resume_command_and_resumes_exactly() {
    assert!(
        common::have_fashion_mnist(),
        "Fashion-MNIST is not installed (cargo xtask setup)"
    );
    let dir = tempfile::tempdir().unwrap();
    run(supcon().args(args("straight", dir.path())), true);

    let mut child = supcon()
        .args(args("interrupted", dir.path()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first step is logged (one metrics line per step).
    let metrics = dir.path().join("interrupted/metrics.jsonl");
    let started = Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|m| m.lines().next().is_some()) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before its first step");
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no step after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -INT failed");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(130), "exit status; stderr:\n{stderr}");
    assert!(
        stderr.contains("resume with:") && stderr.contains("--resume"),
        "no resume command printed:\n{stderr}"
    );

    let checkpoint = dir
        .path()
        .join("interrupted/checkpoints/pretrain-last.safetensors");
    let state = Checkpoint::load(&checkpoint).unwrap().state.unwrap();
    assert!(
        state.global_step >= 1 && state.global_step < 27,
        "checkpoint at step {}",
        state.global_step
    );

    run(
        supcon()
            .args(["pretrain", "--quiet", "--resume"])
            .arg(dir.path().join("interrupted")),
        true,
    );
    let epochs = |name: &str| -> Vec<(u32, u64, f64)> {
        read_metrics(&dir.path().join(name).join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == RecordKind::Epoch)
            .map(|r| (r.epoch, r.step, r.loss))
            .collect()
    };
    let straight = epochs("straight");
    assert_eq!(straight.len(), 3);
    assert_eq!(epochs("interrupted"), straight);
}
