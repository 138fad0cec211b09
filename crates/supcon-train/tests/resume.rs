//! Killing a run in the middle of an epoch and resuming it gives the same result as a run
//! that was never interrupted.
//!
//! libtorch's CPU kernels are deterministic for a fixed thread count (the tests pin 2), the
//! augmentation is a pure function of (seed, epoch, image, view), shuffling of (seed, stage,
//! epoch), and the checkpoint holds the model, BatchNorm statistics, momentum buffers,
//! momentum encoder, key queue and schedule position: so the comparison is exact.

mod common;
#[path = "common/tfevents.rs"]
mod tfevents;

use common::{run, supcon};
use supcon_train::checkpoint::Checkpoint;
use supcon_train::metrics_log::{read_metrics, MetricRecord, RecordKind};

/// Pre-training on a 300-image subset: 2 epochs of 8 steps, checkpointing every 3 steps,
/// with the method's settings `method`.
fn args(name: &str, runs: &std::path::Path, method: &[&str]) -> Vec<String> {
    let mut sets = vec![
        "data.train_per_class=30",
        "pretrain.epochs=2",
        "pretrain.batch_size=32",
        "checkpoint.every_steps=3",
    ];
    sets.extend_from_slice(method);
    common::pretrain_args(name, runs, &sets)
}

fn epoch_records(path: &std::path::Path) -> Vec<MetricRecord> {
    read_metrics(path)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == RecordKind::Epoch)
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_same_metrics_and_weights() {
    // SupCon with the label-aware momentum queue.
    killed_run_resumes_exactly(&["pretrain.queue=256"], &["model", "optim", "ema", "queue"]);
}

#[test]
fn a_killed_moco_run_resumes_with_its_key_encoder_and_queue() {
    killed_run_resumes_exactly(
        &[
            "pretrain.method=moco",
            "pretrain.views=2",
            "pretrain.moco.queue=96",
            "pretrain.moco.symmetric=true",
        ],
        &["model", "optim", "ema", "queue"],
    );
}

#[test]
fn a_killed_instdisc_run_resumes_with_its_memory_bank_and_partition() {
    killed_run_resumes_exactly(
        &[
            "pretrain.method=instdisc",
            "pretrain.views=1",
            "pretrain.instdisc.negatives=64",
            // Z moves at every step: a resumed run that lost it would part from the straight one.
            "pretrain.instdisc.partition_momentum=0.9",
        ],
        &["model", "optim", "bank"],
    );
}

#[test]
fn a_killed_swav_run_with_multicrop_resumes_with_its_prototypes_and_queue() {
    killed_run_resumes_exactly(
        &[
            "pretrain.method=swav",
            "pretrain.views=2",
            "pretrain.swav.prototypes=20",
            "pretrain.swav.freeze_prototypes_epochs=0",
            "pretrain.swav.queue=64",
            "pretrain.multicrop.local_views=2",
            "pretrain.multicrop.local_size=14",
        ],
        &["model", "optim", "prototypes", "swav_queue0", "swav_queue1"],
    );
}

#[test]
fn a_killed_cmc_run_resumes_with_its_second_encoder() {
    killed_run_resumes_exactly(
        &["pretrain.method=cmc", "pretrain.views=1"],
        &["model", "optim", "cmc_view1"],
    );
}

#[test]
fn a_killed_invspread_run_resumes_exactly() {
    killed_run_resumes_exactly(
        &["pretrain.method=invspread", "pretrain.views=2"],
        &["model", "optim"],
    );
}

#[test]
fn a_killed_cpc_run_resumes_with_its_context_network() {
    killed_run_resumes_exactly(
        &[
            "pretrain.method=cpc",
            "pretrain.views=1",
            "pretrain.cpc.patch=10",
            "pretrain.cpc.stride=6",
            "pretrain.cpc.offsets=2",
        ],
        &["model", "optim", "cpc_context"],
    );
}

/// Runs pre-training with `method` once straight and once killed after its first step
/// checkpoint and resumed; the epoch metrics, the TensorBoard loss curve and every tensor of
/// `groups` must be identical.
fn killed_run_resumes_exactly(method: &[&str], groups: &[&str]) {
    common::require_fashion_mnist();
    let dir = tempfile::tempdir().unwrap();
    let args = |name: &str| args(name, dir.path(), method);

    // The reference: never interrupted.
    run(supcon().args(args("straight")), true);

    // The same run, killed (SIGKILL: no chance to clean up) after its first step checkpoint.
    let mut child = supcon().args(args("killed")).spawn().unwrap();
    let checkpoint = dir
        .path()
        .join("killed/checkpoints/pretrain-last.safetensors");
    common::wait_until(&mut child, "its first checkpoint", || checkpoint.exists());
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");
    let state = Checkpoint::load(&checkpoint).unwrap().state.unwrap();
    assert!(
        state.global_step < 32,
        "killed too late: step {}",
        state.global_step
    );
    assert!(
        state.step_in_epoch > 0,
        "the checkpoint should be mid-epoch"
    );

    // Without --resume the folder is refused; with it the run continues.
    run(supcon().args(args("killed")), false);
    run(
        supcon()
            .args(["pretrain", "--quiet", "--resume"])
            .arg(dir.path().join("killed")),
        true,
    );

    let straight = epoch_records(&dir.path().join("straight/metrics.jsonl"));
    let resumed = epoch_records(&dir.path().join("killed/metrics.jsonl"));
    assert_eq!(straight.len(), 2);
    assert_eq!(resumed.len(), 2);
    for (a, b) in straight.iter().zip(&resumed) {
        assert_eq!((a.epoch, a.step), (b.epoch, b.step));
        assert_eq!(a.loss, b.loss, "epoch {} mean loss differs", a.epoch);
        assert_eq!(a.lr, b.lr);
    }
    // One step record per step: the lines logged after the checkpoint were replaced.
    let steps: Vec<u64> = read_metrics(&dir.path().join("killed/metrics.jsonl"))
        .unwrap()
        .iter()
        .filter(|r| r.kind == RecordKind::Step)
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, (1..=16).collect::<Vec<_>>());

    // TensorBoard: the killed process's events file and the resumed one's, which logs the
    // steps after the checkpoint again; read in name order with TensorBoard's rule (a step
    // logged again replaces the points from it on), the loss curve is the uninterrupted one.
    let straight = tfevents::events_files(&dir.path().join("straight/tensorboard"));
    let killed = tfevents::events_files(&dir.path().join("killed/tensorboard"));
    assert_eq!(straight.len(), 1, "{straight:?}");
    assert_eq!(killed.len(), 2, "{killed:?}");
    let straight = [tfevents::read_events(&straight[0])];
    let killed = [
        tfevents::read_events_allowing_torn_tail(&killed[0]),
        tfevents::read_events(&killed[1]),
    ];
    let resumed_steps = tfevents::series(&killed[1], "pretrain/loss");
    assert_eq!(resumed_steps[0].0, state.global_step as i64 + 1);
    let curve = tfevents::preempted_series(&killed, "pretrain/loss");
    assert_eq!(curve.len(), 16);
    assert_eq!(
        curve,
        tfevents::preempted_series(&straight, "pretrain/loss")
    );

    let a = Checkpoint::load(
        &dir.path()
            .join("straight/checkpoints/pretrain-last.safetensors"),
    )
    .unwrap();
    let b = Checkpoint::load(
        &dir.path()
            .join("killed/checkpoints/pretrain-last.safetensors"),
    )
    .unwrap();
    for &group in groups {
        let (ga, gb) = (a.group(group), b.group(group));
        assert!(!ga.is_empty(), "no {group} tensors");
        assert_eq!(ga.keys().collect::<Vec<_>>(), gb.keys().collect::<Vec<_>>());
        for (name, t) in &ga {
            assert!(t.equal(&gb[name]), "{group}.{name} differs after resuming");
        }
    }
}
