//! Data-parallel runs under a real MPI (`mpirun -np 2`, Open MPI from `cargo xtask setup`):
//! the loss and the collectives across ranks (`supcon check-ranks`), two ranks training what
//! one process trains, a rank killed or failing ending the job with a message that names it,
//! and resuming exactly on as many ranks (and only on as many).
#![cfg(feature = "mpi")]

mod common;
#[path = "common/images.rs"]
mod images;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, stderr, supcon};
use supcon_train::checkpoint::Checkpoint;
use supcon_train::metrics_log::{read_metrics, MetricRecord, RecordKind};

/// `mpirun -np ranks supcon`, allowed as root, not pinned, with more ranks than cores if need
/// be (what `cargo xtask train --ranks` runs).
fn mpirun(ranks: usize) -> Command {
    let mut cmd = launcher(ranks);
    cmd.arg(env!("CARGO_BIN_EXE_supcon"));
    cmd
}

/// `mpirun -np ranks`, set up as [`mpirun`], before the program.
fn launcher(ranks: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RUST_LOG", "warn")
        .args(["--oversubscribe", "--bind-to", "none", "-np"])
        .arg(ranks.to_string());
    cmd
}

fn require_mpirun() {
    common::require_fashion_mnist();
    let found = Command::new("mpirun").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "mpirun is missing: cargo xtask setup installs Debian's openmpi-bin"
    );
}

#[test]
fn the_loss_and_the_collectives_across_two_ranks_match_one_process() {
    require_mpirun();
    let output = run(mpirun(2).arg("check-ranks"), true);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("2 rank(s) over mpi"), "{text}");
    assert!(
        text.contains("collectives:") && text.contains(": ok"),
        "{text}"
    );
    assert!(text.contains("32 SupCon / SimCLR cases"), "{text}");
    // Only rank 0 reports.
    assert_eq!(text.matches("loss:").count(), 1, "{text}");
}

/// `supcon train --with-baseline` on a small subset with GroupNorm (statistics per image, so
/// the split of a batch between ranks changes nothing but rounding) and small learning rates:
/// at the recipes' rates a rounding difference of 1e-8 that flips one ReLU grows by 10× a
/// step (one process with another thread count diverges the same way), which would hide what
/// this test checks behind chaos.
fn small_run(name: &str, runs: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--quiet", "--with-baseline", "--name", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push("--runs-dir".into());
    args.push(runs.display().to_string());
    args.extend(common::FAST.iter().map(|s| s.to_string()));
    for set in [
        "model.norm=group",
        "threads=1",
        "data.train_per_class=40",
        "pretrain.optim.lr=0.01",
        "linear.optim.lr=0.01",
        "ce.optim.lr=0.01",
    ] {
        args.push("--set".into());
        args.push(set.into());
    }
    args
}

fn steps_of(run: &Path) -> Vec<MetricRecord> {
    read_metrics(&run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == RecordKind::Step)
        .collect()
}

/// Largest |a − b| over the `model.` tensors of two checkpoints, and the largest |a|.
fn weight_difference(a: &Path, b: &Path) -> (f64, f64) {
    let (a, b) = (Checkpoint::load(a).unwrap(), Checkpoint::load(b).unwrap());
    let (a, b) = (a.group("model"), b.group("model"));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut difference = 0f64;
    let mut scale = 0f64;
    for (name, ta) in &a {
        if !ta.is_floating_point() {
            assert!(ta.equal(&b[name]), "{name}");
            continue;
        }
        difference = difference.max((ta - &b[name]).abs().max().double_value(&[]));
        scale = scale.max(ta.abs().max().double_value(&[]));
    }
    (difference, scale)
}

/// Two ranks with GroupNorm compute what one process computes: the same loss at every step
/// of every stage (pre-training, linear probe, CE baseline; measured: at most 6e-7 relative)
/// and the same final weights, up to the rounding of libtorch's kernels on half batches and
/// of the sums over ranks.
#[test]
fn two_ranks_train_what_one_process_trains() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    run(supcon().args(small_run("one", dir.path())), true);
    run(mpirun(2).args(small_run("two", dir.path())), true);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));

    let (a, b) = (steps_of(&one), steps_of(&two));
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().any(|r| r.stage.as_str() == "ce"),
        "the baseline ran"
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.stage, x.step, x.lr), (y.stage, y.step, y.lr));
        let relative = (x.loss - y.loss).abs() / x.loss.abs();
        assert!(
            relative < 5e-6,
            "{} step {}: loss {} on one process, {} on two ranks (relative {relative:.1e})",
            x.stage,
            x.step,
            x.loss,
            y.loss
        );
    }
    for stage in ["pretrain", "linear", "ce"] {
        let file = format!("checkpoints/{stage}-last.safetensors");
        let (difference, scale) = weight_difference(&one.join(&file), &two.join(&file));
        assert!(
            difference <= 2e-5 * scale.max(1.0),
            "{stage}: weights differ by {difference:.2e} (largest weight {scale:.2})"
        );
        eprintln!("{stage}: weights differ by at most {difference:.2e} (largest {scale:.2})");
    }
    // The report says on how many ranks each stage ran.
    let report = std::fs::read_to_string(two.join("report.json")).unwrap();
    assert!(report.contains("\"ranks\": 2"), "{report}");
}

/// Few labels on two ranks: semi-supervised SupCon (the gathered batch's unlabeled samples
/// are their own classes on every rank), fine-tuning and distillation compute what one
/// process computes. Each stage starts from the one-process result of the stage before: from
/// the two-rank one it would also carry its rounding, which fine-tuning a fresh layer on 50
/// images magnifies.
#[test]
fn two_ranks_train_semi_supervised_fine_tune_and_distil_as_one_process() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    let args = |command: &str, name: &str| {
        let mut args = small_run(name, dir.path());
        args[0] = command.into();
        args.retain(|a| a != "--with-baseline");
        for set in [
            "data.labeled_per_class=5",
            "finetune.epochs=1",
            "finetune.batch_size=16",
            "finetune.optim.lr=0.01",
        ] {
            args.push("--set".into());
            args.push(set.into());
        }
        args
    };
    run(supcon().args(args("pretrain", "one")), true);
    run(mpirun(2).args(args("pretrain", "two")), true);
    let encoder = dir.path().join("one/checkpoints/pretrain-last.safetensors");
    let finetune = |name: &str| {
        let mut args = args("finetune", name);
        args.push("--checkpoint".into());
        args.push(encoder.display().to_string());
        args
    };
    run(supcon().args(finetune("one-ft")), true);
    run(mpirun(2).args(finetune("two-ft")), true);
    let teacher = dir.path().join("one-ft");
    let distill = |name: &str| {
        let mut args = args("distill", name);
        for set in [
            "distill.epochs=1",
            "distill.batch_size=64",
            "distill.optim.lr=0.01",
            "distill.labeled_weight=0.5",
        ] {
            args.push("--set".into());
            args.push(set.into());
        }
        args.push("--teacher".into());
        args.push(teacher.display().to_string());
        args
    };
    run(supcon().args(distill("one-kd")), true);
    run(mpirun(2).args(distill("two-kd")), true);
    for (one, two, stage) in [
        ("one", "two", "pretrain"),
        ("one-ft", "two-ft", "finetune"),
        ("one-kd", "two-kd", "distill"),
    ] {
        let (one, two) = (dir.path().join(one), dir.path().join(two));
        let (a, b) = (steps_of(&one), steps_of(&two));
        assert_eq!(a.len(), b.len());
        assert!(a.iter().all(|r| r.stage.as_str() == stage) && !a.is_empty());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.step, x.lr), (y.step, y.lr));
            let relative = (x.loss - y.loss).abs() / x.loss.abs();
            assert!(
                relative < 5e-6,
                "{stage} step {}: loss {} on one process, {} on two ranks",
                x.step,
                x.loss,
                y.loss
            );
        }
        let file = format!("checkpoints/{stage}-last.safetensors");
        let (difference, scale) = weight_difference(&one.join(&file), &two.join(&file));
        assert!(
            difference <= 2e-5 * scale.max(1.0),
            "{stage}: weights differ by {difference:.2e} (largest weight {scale:.2})"
        );
    }
}

/// Ranks that hold other images under the same class names, counts and shape (one rank's
/// copy of the data differs) refuse to start, naming the difference, before rank 0 makes the
/// run folder.
#[test]
fn ranks_with_other_images_refuse_to_start_before_writing() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    for rank in 0..2 {
        images::write_folder(&dir.path().join(format!("rank{rank}")));
    }
    // Rank 1's copy: two images of a class swapped.
    let class = dir.path().join("rank1/train/c0");
    let (a, b) = (class.join("00000.png"), class.join("00001.png"));
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, bytes_b).unwrap();
    std::fs::write(&b, bytes_a).unwrap();
    let mut args = small_run("mixed", dir.path());
    for set in [
        "data.dataset=folder",
        "data.color=gray",
        "data.image_size=28",
    ] {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    let output = run(
        launcher(2)
            .args(["bash", "-c"])
            .arg(r#"exec "$0" "$@" --set "data.path=$DATA/rank$OMPI_COMM_WORLD_RANK""#)
            .arg(env!("CARGO_BIN_EXE_supcon"))
            .args(&args)
            .env("DATA", dir.path()),
        false,
    );
    let err = stderr(&output);
    assert!(
        err.contains("the ranks disagree") && err.contains("content"),
        "{err}"
    );
    assert!(
        !dir.path().join("mixed").exists(),
        "rank 0 made the run folder"
    );
}

/// Two ranks streaming tar shards — each reading and decoding only its share of every global
/// batch — train what one process trains on the same images decoded into memory (the shards
/// with `data.shuffle_buffer = 0`: the same permutation as in memory).
#[test]
fn two_ranks_streaming_shards_train_what_one_process_trains_in_memory() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    let (folder, shards) = (dir.path().join("folder"), dir.path().join("shards"));
    images::write_folder(&folder);
    images::write_shards(&folder, &shards, 3, true);
    let with = |name: &str, sets: Vec<String>| -> Vec<String> {
        let mut args = small_run(name, dir.path());
        for set in [
            "data.train_per_class=0".to_string(),
            "data.test_per_class=0".into(),
            "data.color=gray".into(),
        ]
        .into_iter()
        .chain(sets)
        {
            args.push("--set".into());
            args.push(set);
        }
        args
    };
    let memory = with(
        "memory",
        vec![
            "data.dataset=folder".into(),
            format!("data.path={}", folder.display()),
        ],
    );
    let streamed = with(
        "streamed",
        vec![
            "data.dataset=shards".into(),
            format!(
                "data.path={}",
                shards.join("train-{000000..000002}.tar").display()
            ),
            format!(
                "data.test_path={}",
                shards.join("test-{000000..000002}.tar").display()
            ),
            "data.shuffle_buffer=0".into(),
        ],
    );
    run(supcon().args(memory), true);
    run(mpirun(2).args(streamed), true);
    let (a, b) = (
        steps_of(&dir.path().join("memory")),
        steps_of(&dir.path().join("streamed")),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.stage, x.step), (y.stage, y.step));
        let relative = (x.loss - y.loss).abs() / x.loss.abs();
        assert!(
            relative < 5e-6,
            "{} step {}: loss {} in memory on one process, {} streamed on two ranks",
            x.stage,
            x.step,
            x.loss,
            y.loss
        );
    }
}

/// Every method computes across two ranks what it computes in one process: the same loss at
/// every step (GroupNorm and a small learning rate, as above; measured: at most 6e-8
/// relative) with its state replicated on
/// the ranks — SimCLR's label-aware key queue, MoCo's keys shuffled across ranks and its
/// queue, InstDisc's bank, partition estimates (a moving Z) and negatives, SwAV's codes over
/// the whole batch and its queue, CMC's, CPC's and InvSpread's in-batch negatives over the
/// gathered batch.
#[test]
fn every_method_trains_across_two_ranks_as_in_one_process() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    let methods: [(&str, &[&str]); 7] = [
        (
            "simclr",
            &[
                "pretrain.method=simclr",
                "pretrain.views=2",
                "pretrain.queue=64",
            ],
        ),
        (
            "moco",
            &[
                "pretrain.method=moco",
                "pretrain.views=2",
                "pretrain.moco.queue=64",
                "pretrain.moco.symmetric=true",
                "pretrain.moco.shuffle_groups=4",
            ],
        ),
        (
            "instdisc",
            &[
                "pretrain.method=instdisc",
                "pretrain.views=1",
                "pretrain.instdisc.negatives=32",
                // Z moves every step with the whole batch's estimate, gathered over the ranks.
                "pretrain.instdisc.partition_momentum=0.9",
                // Its loss climbs from 5 to 150 in these 8 steps: at 0.01 the rounding of
                // step 1 is 1e-4 by step 5 (one process with other thread counts too).
                "pretrain.optim.lr=0.0001",
            ],
        ),
        (
            "swav",
            &[
                "pretrain.method=swav",
                "pretrain.views=2",
                "pretrain.swav.prototypes=20",
                "pretrain.swav.freeze_prototypes_epochs=0",
                "pretrain.swav.queue=64",
                "pretrain.multicrop.local_views=2",
                "pretrain.multicrop.local_size=14",
            ],
        ),
        ("cmc", &["pretrain.method=cmc", "pretrain.views=1"]),
        (
            "invspread",
            &[
                "pretrain.method=invspread",
                "pretrain.views=2",
                // The spreading term at tau 0.1 amplifies rounding fast: at lr 0.01 the ranks'
                // summation order (2e-9 at step 2) grew to 1.0e-6 by step 7.
                "pretrain.optim.lr=0.001",
            ],
        ),
        (
            "cpc",
            &[
                "pretrain.method=cpc",
                "pretrain.views=1",
                "pretrain.cpc.patch=10",
                "pretrain.cpc.stride=6",
                "pretrain.cpc.offsets=2",
            ],
        ),
    ];
    for (method, settings) in methods {
        let args = |name: &str| {
            let mut sets = vec![
                "data.train_per_class=30",
                "pretrain.batch_size=32",
                "pretrain.optim.lr=0.01",
                "model.norm=group",
                "threads=1",
            ];
            // The method's settings last: they may override the learning rate.
            sets.extend_from_slice(settings);
            common::pretrain_args(name, dir.path(), &sets)
        };
        run(supcon().args(args(&format!("{method}-one"))), true);
        run(mpirun(2).args(args(&format!("{method}-two"))), true);
        let one = steps_of(&dir.path().join(format!("{method}-one")));
        let two = steps_of(&dir.path().join(format!("{method}-two")));
        assert_eq!(one.len(), 8, "{method}");
        assert_eq!(one.len(), two.len(), "{method}");
        for (x, y) in one.iter().zip(&two) {
            let relative = (x.loss - y.loss).abs() / x.loss.abs();
            eprintln!(
                "{method} step {}: relative difference {relative:.1e}",
                x.step
            );
            assert!(
                relative < 1e-6,
                "{method} step {}: loss {} on one process, {} on two ranks",
                x.step,
                x.loss,
                y.loss
            );
        }
    }
}

/// The pid of rank `rank` among the processes `mpirun` (pid `launcher`) started.
fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent pid follows the parenthesized command name.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent != Some(launcher) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ
            .split(|&b| b == 0)
            .any(|var| var == wanted.as_bytes())
        {
            return Some(pid);
        }
    }
    None
}

fn pretrain_args(name: &str, runs: &Path) -> Vec<String> {
    common::pretrain_args(
        name,
        runs,
        &[
            "data.train_per_class=30",
            "pretrain.epochs=2",
            "pretrain.batch_size=32",
            "checkpoint.every_steps=3",
            "threads=1",
        ],
    )
}

fn epoch_records(run: &Path) -> Vec<MetricRecord> {
    read_metrics(&run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == RecordKind::Epoch)
        .collect()
}

/// SIGKILL of one rank ends the whole job (no rank left waiting in a collective) with a
/// message naming the rank; the run then refuses to resume on another number of ranks and
/// resumes exactly on as many.
#[test]
fn a_killed_rank_ends_the_job_and_the_run_resumes_exactly_on_as_many_ranks() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    run(mpirun(2).args(pretrain_args("straight", dir.path())), true);

    let log = dir.path().join("killed.log");
    let mut job = mpirun(2)
        .args(pretrain_args("killed", dir.path()))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let checkpoint = dir
        .path()
        .join("killed/checkpoints/pretrain-last.safetensors");
    common::wait_until(&mut job, "the first checkpoint", || checkpoint.exists());
    let victim = rank_pid(job.id(), 1).expect("rank 1 is a child of mpirun");
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job still runs 60 s after rank 1 was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the job ended with {status}");
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        message.contains("rank 1") && message.contains("signal 9"),
        "mpirun names the rank and the signal:\n{message}"
    );

    // One process cannot continue a two-rank run: it says why and how.
    let refused = run(
        supcon()
            .args(["pretrain", "--quiet", "--resume"])
            .arg(dir.path().join("killed")),
        false,
    );
    let text = stderr(&refused);
    assert!(
        text.contains("2 rank(s)") && text.contains("mpirun -np 2"),
        "{text}"
    );

    // Two ranks continue it exactly.
    run(
        mpirun(2)
            .args(["pretrain", "--quiet", "--resume"])
            .arg(dir.path().join("killed")),
        true,
    );
    let (straight, resumed) = (
        epoch_records(&dir.path().join("straight")),
        epoch_records(&dir.path().join("killed")),
    );
    assert_eq!(straight.len(), 2);
    assert_eq!(resumed.len(), 2);
    for (a, b) in straight.iter().zip(&resumed) {
        assert_eq!((a.epoch, a.step, a.loss), (b.epoch, b.step, b.loss));
    }
    let file = "checkpoints/pretrain-last.safetensors";
    let (difference, _) = weight_difference(
        &dir.path().join("straight").join(file),
        &dir.path().join("killed").join(file),
    );
    assert_eq!(
        difference, 0.0,
        "resumed weights differ from the straight run's"
    );
}

/// Ctrl-C at the terminal reaches mpirun, which forwards SIGINT to every rank: the ranks agree
/// on the step to stop at, rank 0 writes the checkpoint and prints the resume command (with
/// its launcher), and the run resumes to the end on as many ranks. (mpirun forwards the
/// signal a second or so late, hence 20 short epochs.)
#[test]
fn ctrl_c_stops_every_rank_at_one_step_with_a_checkpoint() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("interrupted.log");
    let args = common::pretrain_args(
        "interrupted",
        dir.path(),
        &[
            "data.train_per_class=30",
            "pretrain.epochs=20",
            "pretrain.batch_size=32",
            "threads=1",
        ],
    );
    let mut job = mpirun(2)
        .args(&args)
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let metrics = dir.path().join("interrupted/metrics.jsonl");
    common::wait_until(&mut job, "its first step", || {
        std::fs::read_to_string(&metrics).is_ok_and(|m| m.lines().next().is_some())
    });
    let sent = Command::new("kill")
        .args(["-INT", &job.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = job.wait().unwrap();
    let message = std::fs::read_to_string(&log).unwrap();
    // mpirun reports the ranks' 130 as a failure of the job.
    assert!(!status.success(), "{status}\n{message}");
    assert!(
        message.contains("resume with:") && message.contains("mpirun -np 2"),
        "{message}"
    );
    assert_eq!(
        message.matches("checkpoint written").count(),
        1,
        "rank 0 alone speaks:\n{message}"
    );
    let checkpoint = dir
        .path()
        .join("interrupted/checkpoints/pretrain-last.safetensors");
    let state = Checkpoint::load(&checkpoint).unwrap().state.unwrap();
    assert!(
        state.global_step < 160,
        "stopped at step {}",
        state.global_step
    );
    run(
        mpirun(2)
            .args(["pretrain", "--quiet", "--resume"])
            .arg(dir.path().join("interrupted")),
        true,
    );
    let state = Checkpoint::load(&checkpoint).unwrap().state.unwrap();
    assert_eq!((state.epoch, state.global_step), (20, 160));
}

/// A batch that cannot give every rank an image is refused before the first step.
#[test]
fn a_batch_smaller_than_the_number_of_ranks_is_refused() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    let args = common::pretrain_args("tiny", dir.path(), &["pretrain.batch_size=2"]);
    let output = run(mpirun(3).args(&args), false);
    let text = stderr(&output);
    assert!(
        text.contains("a batch of 2 images cannot be split between 3 ranks"),
        "{text}"
    );
}

/// A rank whose data is missing (another machine without the files) ends the job at once with
/// its error and rank, instead of leaving rank 0 waiting.
#[test]
fn a_rank_that_fails_ends_the_job_with_its_error() {
    require_mpirun();
    let dir = tempfile::tempdir().unwrap();
    let args = pretrain_args("failing", dir.path());
    let missing: PathBuf = dir.path().join("no-such-data");
    // Open MPI's MPMD form: rank 0 as usual, rank 1 pointed at a folder without the data.
    let mut cmd = mpirun(1);
    cmd.args(&args)
        .arg(":")
        .args(["-np", "1", env!("CARGO_BIN_EXE_supcon")])
        .args(&args)
        .arg("--data")
        .arg(&missing);
    let started = Instant::now();
    let output = run(&mut cmd, false);
    let text = stderr(&output);
    assert!(
        text.contains("rank 1 of 2: error:") && text.contains("no-such-data"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
