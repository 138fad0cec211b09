//! The training stages and the whole recipe.
//!
//! - [`Session`]: a resolved config, the training data (with its validation split), the run
//!   folder and its metrics log;
//! - [`pretrain`], [`linear`], [`ce`]: one stage each, resuming from the stage's `last`
//!   checkpoint when the session resumes;
//! - [`evaluate`]: the final evaluation on the test set;
//! - [`train`]: the whole recipe (what `supcon train` and `cargo xtask train` run).
//!
//! A session spans the ranks of a data-parallel run ([`crate::dist`]): every rank trains, rank
//! 0 alone writes the run folder and evaluates ([`on_rank_zero`]).

pub mod classifier;
pub mod data;
pub mod distill;
pub mod evaluate;
pub mod finetune;
pub mod methods;
pub mod pretrain;
pub mod runner;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::Device;

use supcon_collectives::CollectivesExt;

use crate::checkpoint::{Checkpoint, TrainState};
use crate::config::RunConfig;
use crate::dist::{self, Comm};
use crate::error::TrainError;
use crate::metrics_log::{truncate_metrics, MetricsWriter};
use crate::run_dir::{write_atomic, Reuse, RunDir};
use crate::vocabulary::{RecordKind, Stage};
use classifier::{CeModel, FrozenEncoder, LinearModel};
use data::TrainData;
use pretrain::PretrainModel;
use runner::{check_resumable, run_stage, StageModel, StageSpec};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks the running stage to stop after its current step (the Ctrl-C handler calls this).
pub fn request_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether an interrupt was requested.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How a session treats its run folder and the terminal.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub run_dir: PathBuf,
    pub reuse: Reuse,
    /// Logs only, no progress bars.
    pub quiet: bool,
    /// The command that runs (`train`, `pretrain`, ...), for the resume hint.
    pub command: String,
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
        same_as_rank_zero(&*comm, &config, &data)?;
        let resuming = options.reuse == Reuse::Resume;
        let (run, metrics) = if comm.rank() == 0 {
            let run = RunDir::prepare(&options.run_dir, options.reuse)?;
            if resuming {
                cut_metrics_to_checkpoints(&run)?;
            } else {
                write_atomic(&run.config_path(), config.to_toml()?.as_bytes())?;
                if let Some(subset) = &data.labeled_subset {
                    let json = subset.to_json(data.pretrain_set().len());
                    write_atomic(&run.labeled_subset_path(), json.as_bytes())?;
                }
            }
            let metrics = MetricsWriter::for_run(&run)?;
            (run, metrics)
        } else {
            (RunDir::existing(&options.run_dir), MetricsWriter::discard())
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

/// The loop's view of a stage, borrowing only the parts of a session it needs.
#[allow(clippy::too_many_arguments)]
fn stage_spec<'a>(
    config: &'a RunConfig,
    comm: &'a dyn supcon_collectives::Collectives,
    dataset: &'a supcon_data::Dataset,
    num_classes: usize,
    resume_command: String,
    quiet: bool,
    stage: Stage,
    method: String,
) -> StageSpec<'a> {
    let (epochs, batch_size, optim, drop_last) = match stage {
        Stage::Pretrain => (
            config.pretrain.epochs,
            config.pretrain.batch_size,
            &config.pretrain.optim,
            true,
        ),
        Stage::Linear => (
            config.linear.epochs,
            config.linear.batch_size,
            &config.linear.optim,
            false,
        ),
        Stage::Ce => (
            config.ce.epochs,
            config.ce.batch_size,
            &config.ce.optim,
            false,
        ),
        Stage::Finetune => {
            let finetune = config.finetune_settings();
            (finetune.epochs, finetune.batch_size, &finetune.optim, false)
        }
        Stage::Distill => {
            let distill = config.distill_settings();
            (distill.epochs, distill.batch_size, &distill.optim, false)
        }
    };
    StageSpec {
        stage,
        method,
        epochs,
        batch_size,
        drop_last,
        dataset,
        optim,
        seed: config.seed,
        model: config.model.clone(),
        num_classes,
        checkpoints: &config.checkpoint,
        resume_command,
        quiet,
        setup_seconds: 0.0,
        comm,
        prefetch: config.data.prefetch,
        shuffle_buffer: config.data.shuffle_buffer,
    }
}

/// Runs a stage, resuming from its `last` checkpoint when the session resumes and one
/// exists; a finished stage is only restored.
fn run_resumable(
    run: &RunDir,
    metrics: &mut MetricsWriter,
    resuming: bool,
    spec: &StageSpec<'_>,
    model: &mut dyn StageModel,
) -> Result<TrainState, TrainError> {
    let last = run.last_checkpoint(spec.stage);
    let mut resume = None;
    if resuming && dist::exists_on_rank_zero(spec.comm, &last)? {
        let checkpoint = dist::load_checkpoint(spec.comm, &last)?;
        let state = checkpoint.require_state()?.clone();
        check_resumable(spec, &state, &last)?;
        model.restore(&checkpoint)?;
        tracing::info!(stage = %spec.stage, epoch = state.epoch, step = state.global_step, "resuming");
        resume = Some(state);
    }
    if let Some(state) = &resume {
        if state.epoch >= spec.epochs {
            return Ok(state.clone());
        }
    }
    run_stage(spec, model, run, metrics, resume)
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

/// Runs `stage` with `model` on the session's training split; `setup_seconds` (work done
/// for the stage before its first step) counts in its wall time.
fn run_stage_of(
    session: &mut Session,
    stage: Stage,
    method: String,
    model: &mut dyn StageModel,
    setup_seconds: f64,
) -> Result<TrainState, TrainError> {
    let num_classes = session.num_classes();
    let resume_command = session.resume_command();
    let Session {
        config,
        comm,
        data,
        run,
        metrics,
        resuming,
        quiet,
        ..
    } = session;
    let dataset = match stage {
        Stage::Pretrain | Stage::Distill => data.pretrain_set(),
        Stage::Linear | Stage::Ce | Stage::Finetune => &data.train,
    };
    let spec = StageSpec {
        setup_seconds,
        ..stage_spec(
            config,
            &**comm,
            dataset,
            num_classes,
            resume_command,
            *quiet,
            stage,
            method,
        )
    };
    run_resumable(run, metrics, *resuming, &spec, model)
}

/// Stage 1 of `session`'s config; returns the summary and the path of the final checkpoint.
pub fn pretrain(session: &mut Session) -> Result<(StageSummary, PathBuf), TrainError> {
    let (size, mean, std) = image_params(session);
    let mut model = PretrainModel::new(
        &session.config,
        session.device,
        size,
        &mean,
        &std,
        session.data.pretrain_set().len(),
        session.comm.clone(),
    )?;
    model = model.hiding_labels(session.data.pretrain_label_mask());
    tracing::info!(
        method = session.config.pretrain.method.as_str(),
        loss_backend = model.loss_backend(),
        queue = session.config.pretrain.queue,
        "stage 1: contrastive pre-training"
    );
    let method = session.config.pretrain.method.as_str().to_string();
    let state = run_stage_of(session, Stage::Pretrain, method, &mut model, 0.0)?;
    Ok((
        StageSummary::from_state(&state),
        session.run.last_checkpoint(Stage::Pretrain),
    ))
}

fn image_params(session: &Session) -> (usize, Vec<f32>, Vec<f32>) {
    (
        session.image_size(),
        session.data.mean.clone(),
        session.data.std.clone(),
    )
}

/// What the linear stage leaves: the summary, the frozen encoder and the chosen classifier.
pub struct LinearOutcome {
    pub summary: StageSummary,
    pub encoder: FrozenEncoder,
    /// Classifier checkpoint used for testing: best validation epoch, else the last.
    pub classifier_checkpoint: PathBuf,
}

/// Stage 2 on the encoder of `encoder_checkpoint`.
pub fn linear(
    session: &mut Session,
    encoder_checkpoint: &Path,
) -> Result<LinearOutcome, TrainError> {
    let checkpoint = dist::load_checkpoint(&*session.comm, encoder_checkpoint)?;
    checkpoint.require_pretraining()?;
    let (size, mean, std) = image_params(session);
    let encoder = FrozenEncoder::load(&session.config, &checkpoint, session.device, &mean, &std)?;
    tracing::info!("stage 2: linear classifier on the frozen encoder");
    // The model borrows the validation split; a copy keeps the session free to borrow mutably.
    let validation = session.data.validation.clone();
    let config = session.config.clone();
    let state = {
        let mut model = LinearModel::new(
            &config,
            &encoder,
            session.num_classes(),
            &validation,
            size,
            &mean,
            &std,
            session.device,
            session.comm.clone(),
        )?;
        // The one-off work before the first epoch is part of the stage's wall time (kept in
        // the checkpoint state, so `supcon eval` reports the same figure): time-to-accuracy
        // includes it.
        let started = std::time::Instant::now();
        if config.linear.augment == "none" {
            model.store_features(&session.data.train)?;
            tracing::info!(
                "linear: no augmentation, so the training and validation features were computed once ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
        if config.linear.standardize {
            model.fit_standardization(&session.data.train)?;
            tracing::info!("linear: features standardized with the training set's statistics");
        }
        let setup_seconds = started.elapsed().as_secs_f64();
        run_stage_of(
            session,
            Stage::Linear,
            "linear".into(),
            &mut model,
            setup_seconds,
        )?
    };
    let classifier_checkpoint = session
        .run
        .chosen_checkpoint(Stage::Linear, state.best_epoch);
    Ok(LinearOutcome {
        summary: StageSummary::from_state(&state),
        encoder,
        classifier_checkpoint,
    })
}

/// The cross-entropy baseline; returns the summary and the checkpoint used for testing.
pub fn ce(session: &mut Session) -> Result<(StageSummary, PathBuf), TrainError> {
    let (size, mean, std) = image_params(session);
    tracing::info!("cross-entropy baseline");
    let validation = session.data.validation.clone();
    let config = session.config.clone();
    let state = {
        let mut model = CeModel::new(
            &config,
            session.num_classes(),
            &validation,
            size,
            &mean,
            &std,
            session.device,
            session.comm.clone(),
        )?;
        run_stage_of(session, Stage::Ce, "ce".into(), &mut model, 0.0)?
    };
    let chosen = session.run.chosen_checkpoint(Stage::Ce, state.best_epoch);
    Ok((StageSummary::from_state(&state), chosen))
}

/// SimCLR v2's fine-tuning of the network of `pretrained` (a pre-training checkpoint) on the
/// labeled training images; returns the summary and the checkpoint used for testing.
pub fn finetune(
    session: &mut Session,
    pretrained: &Path,
) -> Result<(StageSummary, PathBuf), TrainError> {
    let checkpoint = dist::load_checkpoint(&*session.comm, pretrained)?;
    let (size, mean, std) = image_params(session);
    tracing::info!(
        from_head_layer = session.config.finetune_settings().from_head_layer,
        labeled = session.data.train.len(),
        "fine-tuning"
    );
    let validation = session.data.validation.clone();
    let config = session.config.clone();
    let state = {
        let mut model = finetune::FinetuneModel::new(
            &config,
            &checkpoint,
            session.num_classes(),
            &validation,
            size,
            &mean,
            &std,
            session.device,
            session.comm.clone(),
        )?;
        run_stage_of(session, Stage::Finetune, "finetune".into(), &mut model, 0.0)?
    };
    let chosen = session
        .run
        .chosen_checkpoint(Stage::Finetune, state.best_epoch);
    Ok((StageSummary::from_state(&state), chosen))
}

/// SimCLR v2's distillation of `teacher` into a student on every training image; returns the
/// summary and the checkpoint used for testing.
pub fn distill(
    session: &mut Session,
    teacher: &distill::Teacher,
) -> Result<(StageSummary, PathBuf), TrainError> {
    let (size, mean, std) = image_params(session);
    let settings = session.config.distill_settings();
    tracing::info!(
        teacher = %teacher.checkpoint.display(),
        student = %distill::student_model(&session.config).architecture,
        temperature = settings.temperature,
        images = session.data.pretrain_set().len(),
        "distillation"
    );
    let validation = session.data.validation.clone();
    let config = session.config.clone();
    let state = {
        let started = std::time::Instant::now();
        let mut model = distill::DistillModel::new(
            &config,
            teacher,
            session.data.pretrain_set(),
            session.data.pretrain_label_mask(),
            &validation,
            size,
            &mean,
            &std,
            session.device,
            session.comm.clone(),
        )?;
        // The teacher's pass over the training split is part of the stage's wall time.
        let setup_seconds = started.elapsed().as_secs_f64();
        run_stage_of(
            session,
            Stage::Distill,
            "distill".into(),
            &mut model,
            setup_seconds,
        )?
    };
    let chosen = session
        .run
        .chosen_checkpoint(Stage::Distill, state.best_epoch);
    Ok((StageSummary::from_state(&state), chosen))
}

/// The whole recipe: pre-training, linear stage, optional CE baseline, then the final
/// evaluation on the test set (read here, once) and the report; `None` on ranks other than 0.
pub fn train(
    session: &mut Session,
    with_baseline: bool,
) -> Result<Option<crate::report::Report>, TrainError> {
    let (pretrain_summary, encoder_checkpoint) = pretrain(session)?;
    let linear_outcome = linear(session, &encoder_checkpoint)?;
    let finetuned = match session.config.finetune {
        Some(_) => Some(finetune(session, &encoder_checkpoint)?),
        None => None,
    };
    let distilled = match (&finetuned, &session.config.distill) {
        (Some((_, teacher)), Some(_)) => {
            let teacher = distill::Teacher::load(
                &session.config,
                teacher,
                session.num_classes(),
                session.device,
            )?;
            Some(distill(session, &teacher)?)
        }
        _ => None,
    };
    let baseline = if with_baseline {
        Some(ce(session)?)
    } else {
        None
    };
    on_rank_zero(session, |session| {
        let test = data::load_evaluation_split(&session.config, &session.data)?;
        let mut methods = Vec::new();
        methods.push(evaluate::evaluate_supcon(
            session,
            &test,
            &linear_outcome,
            vec![pretrain_summary.clone(), linear_outcome.summary.clone()],
        )?);
        if let Some((summary, checkpoint)) = finetuned {
            let mut stages = vec![pretrain_summary, summary];
            methods.push(evaluate::evaluate_finetune(
                session,
                &test,
                &checkpoint,
                stages.clone(),
            )?);
            if let Some((summary, checkpoint)) = distilled {
                stages.push(summary);
                methods.push(evaluate::evaluate_distill(
                    session,
                    &test,
                    &checkpoint,
                    stages,
                )?);
            }
        }
        if let Some((summary, checkpoint)) = baseline {
            methods.push(evaluate::evaluate_ce(session, &test, &checkpoint, summary)?);
        }
        evaluate::finish_report(session, &test, methods)
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
    comm.barrier()
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
    data: &data::TrainData,
) -> Result<(), TrainError> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    // Where the data lives may differ between machines; what is read may not.
    let mut comparable = config.clone();
    comparable.data.path = None;
    comparable.data.eval_path = None;
    comparable.data.test_path = None;
    let ours = format!(
        "{}\n# {} training, {} validation and {} pre-training images, {} classes",
        comparable.to_toml()?,
        data.train.len(),
        data.validation.len(),
        data.pretrain_set().len(),
        data.train.num_classes()
    );
    let theirs = comm
        .broadcast_bytes(ours.as_bytes(), 0)
        .map_err(dist::failed("broadcast of rank 0's configuration"))?;
    if theirs != ours.as_bytes() {
        let theirs = String::from_utf8_lossy(&theirs);
        let first = ours
            .lines()
            .zip(theirs.lines())
            .find(|(a, b)| a != b)
            .map_or_else(
                || "one of them has more lines".to_string(),
                |(a, b)| format!("rank {} has `{a}` where rank 0 has `{b}`", comm.rank()),
            );
        return Err(TrainError::Config(format!(
            "the ranks disagree on the run's configuration or data: {first}; start every rank \
             with the same arguments and data"
        )));
    }
    Ok(())
}
