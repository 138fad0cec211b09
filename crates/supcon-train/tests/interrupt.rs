//! Ctrl-C (SIGINT) finishes the current step, writes a checkpoint, prints the resume command
//! and exits with 130; resuming from that checkpoint ends exactly where an uninterrupted run
//! ends.
#![cfg(unix)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::{run, supcon};
use supcon_train::checkpoint::Checkpoint;
use supcon_train::metrics_log::{read_metrics, RecordKind};

/// Pre-training on a 300-image subset: 3 epochs of 9 steps, no periodic checkpoint, so the
/// only mid-run checkpoint is the interrupt's.
fn args(name: &str, runs: &std::path::Path) -> Vec<String> {
    common::pretrain_args(
        name,
        runs,
        &[
            "data.train_per_class=30",
            "pretrain.epochs=3",
            "pretrain.batch_size=32",
        ],
    )
}

#[test]
fn ctrl_c_writes_a_checkpoint_prints_the_resume_command_and_resumes_exactly() {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    run(supcon().args(args("straight", dir.path())), true);

    let mut child = supcon()
        .args(args("interrupted", dir.path()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first step is logged (one metrics line per step).
    let metrics = dir.path().join("interrupted/metrics.jsonl");
    common::wait_until(&mut child, "its first step", || {
        std::fs::read_to_string(&metrics).is_ok_and(|m| m.lines().next().is_some())
    });
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
