//! A run in progress ([`Session`]): the resolved configuration, the training data, the run
//! folder and its metrics log, across the ranks of a data-parallel run; what a finished stage
//! leaves ([`StageSummary`]); and the rank utilities a session needs (the rank's device, the
//! check that every rank read what rank 0 read, [`on_rank_zero`]).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

use supcon_collectives::CollectivesExt;

use crate::checkpoint::{Checkpoint, TrainState};
use crate::config::RunConfig;
use crate::dist::{self, Comm};
use crate::error::TrainError;
use crate::metrics_log::{truncate_metrics, MetricsWriter};
use crate::run_dir::{write_atomic, Reuse, RunDir, RunLock};
use crate::vocabulary::{RecordKind, Stage};

use super::data::{self, TrainData};
use super::origin::{DataFingerprint, RunOrigin};

/// How a session treats its run folder and the terminal.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub run_dir: PathBuf,
    pub reuse: Reuse,
    /// Logs only, no progress bars.
    pub quiet: bool,
    /// The command that runs (`train`, `pretrain`, ...), for the resume hint.
    pub command: String,
    /// Resume although the configuration or the data changed since the run started
    /// (`--accept-changes`): not exactly, with a warning per change.
    pub accept_changes: bool,
}

/// A run in progress.
pub struct Session {
    pub config: RunConfig,
    /// The ranks of the run (one process: the group of one).
    pub comm: Comm,
    pub device: Device,
    pub run: RunDir,
    pub metrics: MetricsWriter,
    pub data: TrainData,
    pub resuming: bool,
    pub quiet: bool,
    /// Rank 0's lock on the run folder, held for the session's life.
    _lock: Option<RunLock>,
    command: String,
    resume_override: Option<String>,
    started: Instant,
}

/// Summary of one finished stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    pub stage: Stage,
    pub method: String,
    pub epochs: u32,
    pub steps: u64,
    pub wall_seconds: f64,
    pub images_per_second: f64,
    pub best_val_top1: Option<f64>,
    pub best_epoch: Option<u32>,
    /// Ranks the stage ran on.
    pub ranks: usize,
}

impl StageSummary {
    /// The summary of a stage from its final state.
    pub fn from_state(state: &TrainState) -> Self {
        Self {
            stage: state.stage,
            method: state.method.clone(),
            epochs: state.epochs,
            steps: state.global_step,
            wall_seconds: state.wall_seconds,
            images_per_second: state.images_seen as f64 / state.wall_seconds.max(1e-9),
            best_val_top1: state.best_val_top1,
            best_epoch: state.best_epoch,
            ranks: state.world_size,
        }
    }
}

impl Session {
    /// Loads the data first (so a data error touches nothing), then prepares the run folder:
    /// a new one gets `config.toml`; a resumed one has its metrics cut back to its checkpoints.
    /// Over several ranks, each checks that it resolved the configuration and read the data
    /// as rank 0 did, and only rank 0 touches the run folder.
    pub fn open(
        config: RunConfig,
        options: &SessionOptions,
        comm: Comm,
    ) -> Result<Self, TrainError> {
        if config.threads > 0 {
            tch::set_num_threads(config.threads as i32);
        }
        let device = rank_device(&config, comm.world_size())?;
        let data = data::load_train(&config)?;
        let fingerprint = DataFingerprint::of(&data);
        same_as_rank_zero(&*comm, &config, &fingerprint)?;
        // Only pre-training alone never reads the test split.
        if options.command != "pretrain" {
            data::check_test_classes(&config, &data)?;
        }
        let resuming = options.reuse == Reuse::Resume;
        let (run, metrics, lock) = if comm.rank() == 0 {
            let (run, lock) = RunDir::prepare(&options.run_dir, options.reuse)?;
            if resuming {
                // `supcon eval` may read another split than the run trained for; only a
                // training command continues the run itself (and only it stamps the files).
                if options.command != "eval" {
                    let now = RunOrigin::new(&config, fingerprint, &data)?;
                    let changes = RunOrigin::changes_since_start(&run, &now, &config)?;
                    RunOrigin::refuse_changes(&run, &changes, options.accept_changes)?;
                }
                cut_metrics_to_checkpoints(&run)?;
            } else {
                let origin = RunOrigin::new(&config, fingerprint, &data)?;
                write_atomic(&run.config_path(), origin.config.as_bytes())?;
                origin.write(&run)?;
                if let Some(subset) = &data.labeled_subset {
                    let json = subset.to_json(data.pretrain_set().len());
                    write_atomic(&run.labeled_subset_path(), json.as_bytes())?;
                }
            }
            let metrics = MetricsWriter::for_run(&run)?;
            (run, metrics, Some(lock))
        } else {
            (
                RunDir::existing(&options.run_dir),
                MetricsWriter::discard(),
                None,
            )
        };
        tracing::info!(
            run = %run.root().display(),
            train = data.train.len(),
            validation = data.validation.len(),
            unlabeled = data.unlabeled.as_ref().map(|d| d.len()),
            streamed = !data.pretrain_set().is_in_memory(),
            device = ?device,
            ranks = comm.world_size(),
            transport = comm.transport(),
            "session opened"
        );
        Ok(Self {
            config,
            comm,
            device,
            run,
            metrics,
            data,
            resuming,
            quiet: options.quiet,
            _lock: lock,
            command: options.command.clone(),
            resume_override: None,
            started: Instant::now(),
        })
    }

    /// Side of the (square) images.
    pub fn image_size(&self) -> usize {
        self.data.train.shape().height
    }

    /// Classes of the data set.
    pub fn num_classes(&self) -> usize {
        self.data.train.num_classes()
    }

    /// Seconds since the session opened.
    pub fn elapsed_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// What to type to continue this run.
    pub fn resume_command(&self) -> String {
        self.resume_override.clone().unwrap_or_else(|| {
            format!(
                "supcon {} --resume {}",
                self.command,
                self.run.root().display()
            )
        })
    }

    /// Replaces the resume hint (for commands that need more than `--resume`).
    pub fn set_resume_command(&mut self, command: String) {
        self.resume_override = Some(command);
    }
}

/// Drops the metrics lines that no checkpoint has seen: a resumed stage logs them again.
fn cut_metrics_to_checkpoints(run: &RunDir) -> Result<(), TrainError> {
    let mut states = std::collections::HashMap::new();
    for stage in [
        Stage::Pretrain,
        Stage::Linear,
        Stage::Ce,
        Stage::Finetune,
        Stage::Distill,
    ] {
        let path = run.last_checkpoint(stage);
        if path.exists() {
            let checkpoint = Checkpoint::load(&path)?;
            states.insert(stage, checkpoint.require_state()?.clone());
        }
    }
    truncate_metrics(&run.metrics_path(), |record| {
        match states.get(&record.stage) {
            None => false,
            Some(state) => match record.kind {
                RecordKind::Step => record.step <= state.global_step,
                RecordKind::Epoch => record.epoch < state.epoch,
            },
        }
    })
}

/// Runs `work` (the final evaluation and report) on rank 0 alone, with every core of its
/// machine, while the other ranks wait for it without spinning; returns its result on rank 0
/// and `None` elsewhere. In one process it simply runs `work`.
pub fn on_rank_zero<T>(
    session: &Session,
    work: impl FnOnce(&Session) -> Result<T, TrainError>,
) -> Result<Option<T>, TrainError> {
    let comm = &session.comm;
    if comm.world_size() == 1 {
        return work(session).map(Some);
    }
    let result = if comm.rank() == 0 {
        // The other ranks sleep in the barrier below: their cores are free.
        if let Ok(cores) = std::thread::available_parallelism() {
            tch::set_num_threads(cores.get() as i32);
        }
        Some(work(session)?)
    } else {
        None
    };
    // Long by design (the whole evaluation): exempt from --collective-timeout.
    supcon_collectives::unwatched(|| comm.barrier())
        .map_err(dist::failed("waiting for rank 0's evaluation"))?;
    Ok(result)
}

/// The device of this rank: `cuda` (and `auto` on a GPU machine) means the GPU of the rank's
/// index on its node when a run has several ranks; `cuda:N` is taken as given.
fn rank_device(config: &RunConfig, ranks: usize) -> Result<Device, TrainError> {
    let device = config.tch_device()?;
    let named_gpu = config.device.starts_with("cuda:");
    match device {
        Device::Cuda(_) if ranks > 1 && !named_gpu => {
            let local = supcon_collectives::local_rank().unwrap_or(0);
            let gpus = tch::Cuda::device_count().max(1) as usize;
            Ok(Device::Cuda(local % gpus))
        }
        other => Ok(other),
    }
}

/// Checks that this rank resolved the same configuration and read the same data as rank 0
/// (a rank started with other arguments, or whose data differs, would train something else).
fn same_as_rank_zero(
    comm: &dyn supcon_collectives::Collectives,
    config: &RunConfig,
    data: &DataFingerprint,
) -> Result<(), TrainError> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    // The data's fingerprint (sizes, image shape, class names), one field per line.
    let fingerprint =
        serde_json::to_string_pretty(data).map_err(|e| TrainError::Config(e.to_string()))?;
    let ours = format!("{}\n{fingerprint}", config.machine_independent().to_toml()?);
    let theirs = comm
        .broadcast_bytes(ours.as_bytes(), 0)
        .map_err(dist::failed("broadcast of rank 0's configuration"))?;
    let disagreement = (theirs != ours.as_bytes()).then(|| {
        let theirs = String::from_utf8_lossy(&theirs);
        ours.lines()
            .zip(theirs.lines())
            .find(|(a, b)| a != b)
            .map_or_else(
                || "one of them has more lines".to_string(),
                |(a, b)| format!("rank {} has `{a}` where rank 0 has `{b}`", comm.rank()),
            )
    });
    // Every rank learns whether any disagrees before rank 0 touches the run folder.
    let any_disagrees = comm
        .any(disagreement.is_some())
        .map_err(dist::failed("agreement on the configuration"))?;
    if any_disagrees {
        let what = disagreement.unwrap_or_else(|| "another rank differs from rank 0".into());
        return Err(TrainError::Config(format!(
            "the ranks disagree on the run's configuration or data: {what}; start every rank \
             with the same arguments and data (nothing was written)"
        )));
    }
    Ok(())
}
