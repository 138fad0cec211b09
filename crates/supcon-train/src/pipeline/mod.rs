//! The training stages and the whole recipe.
//!
//! - [`Session`]: a resolved config, the training data (with its validation split), the run
//!   folder and its metrics log;
//! - [`pretrain`], [`linear`], [`ce`]: one stage each, resuming from the stage's `last`
//!   checkpoint when the session resumes;
//! - [`evaluate`]: the final evaluation on the test set;
//! - [`train`]: the whole recipe (what `supcon train` and `cargo xtask train` run).

pub mod classifier;
pub mod data;
pub mod evaluate;
pub mod methods;
pub mod pretrain;
pub mod runner;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::Device;

use crate::checkpoint::{Checkpoint, TrainState};
use crate::config::RunConfig;
use crate::error::TrainError;
use crate::metrics_log::{truncate_metrics, MetricsWriter, RecordKind, Stage};
use crate::run_dir::{write_atomic, Reuse, RunDir};
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
        }
    }
}

impl Session {
    /// Loads the data first (so a data error touches nothing), then prepares the run folder:
    /// a new one gets `config.toml`; a resumed one has its metrics cut back to its checkpoints.
    pub fn open(config: RunConfig, options: &SessionOptions) -> Result<Self, TrainError> {
        if config.threads > 0 {
            tch::set_num_threads(config.threads as i32);
        }
        let device = config.tch_device()?;
        let data = data::load_train(&config)?;
        let run = RunDir::prepare(&options.run_dir, options.reuse)?;
        let resuming = options.reuse == Reuse::Resume;
        if resuming {
            cut_metrics_to_checkpoints(&run)?;
        } else {
            write_atomic(&run.config_path(), config.to_toml()?.as_bytes())?;
        }
        let metrics = MetricsWriter::for_run(&run)?;
        tracing::info!(
            run = %run.root().display(),
            train = data.train.len(),
            validation = data.validation.len(),
            device = ?device,
            "session opened"
        );
        Ok(Self {
            config,
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
fn stage_spec<'a>(
    config: &'a RunConfig,
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
    if resuming && last.exists() {
        let checkpoint = Checkpoint::load(&last)?;
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
    for stage in [Stage::Pretrain, Stage::Linear, Stage::Ce] {
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
        data,
        run,
        metrics,
        resuming,
        quiet,
        ..
    } = session;
    let spec = StageSpec {
        setup_seconds,
        ..stage_spec(
            config,
            &data.train,
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
        session.data.train.len(),
    )?;
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
    let checkpoint = Checkpoint::load(encoder_checkpoint)?;
    if let Some(state) = &checkpoint.state {
        if state.stage != Stage::Pretrain {
            return Err(TrainError::checkpoint(
                encoder_checkpoint,
                format!("is a {} checkpoint, not a pre-training one", state.stage),
            ));
        }
    }
    let encoder = FrozenEncoder::load(&session.config, &checkpoint, session.device)?;
    let (size, mean, std) = image_params(session);
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
        )?;
        let mut setup_seconds = 0.0;
        if config.linear.augment == "none" {
            // Part of the stage's wall time (kept in the checkpoint state, so `supcon eval`
            // reports the same figure): time-to-accuracy includes it.
            let started = std::time::Instant::now();
            model.store_features(&session.data.train)?;
            setup_seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                "linear: no augmentation, so the training and validation features were computed once ({setup_seconds:.1} s)"
            );
        }
        run_stage_of(
            session,
            Stage::Linear,
            "linear".into(),
            &mut model,
            setup_seconds,
        )?
    };
    let classifier_checkpoint = session.run.chosen_checkpoint(Stage::Linear, &state);
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
        )?;
        run_stage_of(session, Stage::Ce, "ce".into(), &mut model, 0.0)?
    };
    let chosen = session.run.chosen_checkpoint(Stage::Ce, &state);
    Ok((StageSummary::from_state(&state), chosen))
}

/// The whole recipe: pre-training, linear stage, optional CE baseline, then the final
/// evaluation on the test set (read here, once) and the report.
pub fn train(
    session: &mut Session,
    with_baseline: bool,
) -> Result<crate::report::Report, TrainError> {
    let (pretrain_summary, encoder_checkpoint) = pretrain(session)?;
    let linear_outcome = linear(session, &encoder_checkpoint)?;
    let baseline = if with_baseline {
        Some(ce(session)?)
    } else {
        None
    };
    let test = data::load_evaluation_split(&session.config, &session.data)?;
    let mut methods = Vec::new();
    methods.push(evaluate::evaluate_supcon(
        session,
        &test,
        &linear_outcome,
        vec![pretrain_summary, linear_outcome.summary.clone()],
    )?);
    if let Some((summary, checkpoint)) = baseline {
        methods.push(evaluate::evaluate_ce(session, &test, &checkpoint, summary)?);
    }
    evaluate::finish_report(session, &test, methods)
}
