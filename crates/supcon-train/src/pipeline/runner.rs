//! The epoch/step loop shared by every stage: shuffling, the learning-rate schedule, metrics,
//! checkpoints, Ctrl-C, non-finite losses and resuming in the middle of an epoch; over R ranks,
//! each step's global batch is split between them (see [`crate::dist`]).

use std::time::Instant;

use supcon_collectives::{shard, Collectives, CollectivesExt};

use supcon_data::Dataset;
use supcon_models::ModelConfig;
use tch::Tensor;

use crate::checkpoint::{self, Checkpoint, TrainState, FORMAT_VERSION};
use crate::config::CheckpointConfig;
use crate::dist::{self, DataParallelTensors};
use crate::error::TrainError;
use crate::metrics_log::MetricsWriter;
use crate::optim::LrSchedule;
use crate::pipeline::data::{
    batches_per_epoch, epoch_order, BatchRecipe, GlobalBatch, PreparedBatch,
};
use crate::progress::{ProgressMode, StageProgress};
use crate::run_dir::RunDir;
use crate::vocabulary::{MetricRecord, RecordKind, Stage};

/// What one forward/backward pass produced.
#[derive(Clone, Copy, Debug)]
pub struct StepResult {
    /// The loss of the step's whole batch (over every rank: the same on each).
    pub loss: f64,
    /// Correctly classified training images of this rank (classifier stages).
    pub correct: Option<u64>,
}

/// A stage's model as the loop sees it.
pub trait StageModel {
    /// How the stage's batches are prepared from image indices (run ahead of the step when
    /// `data.prefetch` asks for it).
    fn batch_recipe(&self) -> BatchRecipe;
    /// Clears gradients, runs forward and backward; does not change parameters. Leaves this
    /// rank's share of the whole batch's gradient (see [`crate::dist`]).
    fn forward_backward(&mut self, batch: &PreparedBatch) -> Result<StepResult, TrainError>;
    /// The tensors the ranks keep identical: trained parameters (gradients summed) and
    /// running statistics (averaged).
    fn data_parallel(&self) -> DataParallelTensors;
    /// Applies the gradients (optimizer step, momentum encoder, queue). `progress` is the
    /// fraction of the stage's steps done before this one, in [0, 1) (schedules other than the
    /// learning rate's, such as MoCo's key momentum, follow it).
    fn update(&mut self, lr: f64, progress: f64) -> Result<(), TrainError>;
    /// Validation top-1 at the end of an epoch, when the stage has one.
    fn validate(&mut self) -> Result<Option<f64>, TrainError>;
    /// Tensors to checkpoint, grouped by prefix.
    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)>;
    /// Restores the tensors of a checkpoint written from `checkpoint_groups`.
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError>;
}

/// What the loop needs to know about a stage.
pub struct StageSpec<'a> {
    pub stage: Stage,
    pub method: String,
    pub epochs: u32,
    pub batch_size: usize,
    /// Drop the last, smaller batch of an epoch (contrastive stages: a stable batch size).
    pub drop_last: bool,
    pub dataset: &'a Dataset,
    pub optim: &'a crate::config::OptimConfig,
    pub seed: u64,
    pub model: ModelConfig,
    pub num_classes: usize,
    pub checkpoints: &'a CheckpointConfig,
    /// Shown when the run is interrupted: how to continue it.
    pub resume_command: String,
    /// Hide progress output (logs only).
    pub quiet: bool,
    /// Seconds the stage spent before its first step in this process (the linear stage's
    /// one-off feature pass): counted in its wall time, so that time-to-accuracy figures
    /// include it.
    pub setup_seconds: f64,
    /// The ranks the stage runs on (one process: [`supcon_collectives::SingleProcess`]).
    pub comm: &'a dyn Collectives,
    /// Batches prepared ahead of the step in a background thread; `None`: 2 when the images
    /// are streamed from disk, 0 when they are in memory.
    pub prefetch: Option<usize>,
    /// Tar shards: WebDataset's shuffle buffer (see [`epoch_order`]).
    pub shuffle_buffer: usize,
}

impl StageSpec<'_> {
    /// Optimizer steps per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        batches_per_epoch(
            self.dataset.len(),
            self.batch_size,
            self.drop_last,
            self.comm.world_size(),
        )
    }

    fn fresh_state(&self) -> TrainState {
        TrainState {
            format_version: FORMAT_VERSION,
            stage: self.stage,
            method: self.method.clone(),
            model: self.model.clone(),
            num_classes: self.num_classes,
            epoch: 0,
            step_in_epoch: 0,
            global_step: 0,
            epochs: self.epochs,
            seed: self.seed,
            wall_seconds: 0.0,
            images_seen: 0,
            epoch_loss_sum: 0.0,
            epoch_steps: 0,
            epoch_correct: 0,
            epoch_seen: 0,
            best_val_top1: None,
            best_epoch: None,
            world_size: self.comm.world_size(),
        }
    }

    /// Batches prepared ahead of the step.
    fn prefetch_depth(&self) -> usize {
        self.prefetch
            .unwrap_or(if self.dataset.is_in_memory() { 0 } else { 2 })
    }

    /// Stream id of the stage's shuffling (stages do not share permutations).
    fn stream(&self) -> u64 {
        match self.stage {
            Stage::Pretrain => 1,
            Stage::Linear => 2,
            Stage::Ce => 3,
            Stage::Finetune => 4,
            Stage::Distill => 5,
        }
    }
}

/// Checks that a checkpoint's state belongs to this stage and run.
pub fn check_resumable(
    spec: &StageSpec<'_>,
    state: &TrainState,
    path: &std::path::Path,
) -> Result<(), TrainError> {
    let mismatch = |what: &str, ours: String, theirs: String| {
        Err(TrainError::checkpoint(
            path,
            format!("{what} is {theirs} in the checkpoint but {ours} in this run's config"),
        ))
    };
    if state.stage != spec.stage {
        return mismatch("the stage", spec.stage.to_string(), state.stage.to_string());
    }
    if state.model != spec.model {
        return mismatch(
            "the model",
            format!("{:?}", spec.model),
            format!("{:?}", state.model),
        );
    }
    if state.seed != spec.seed {
        return mismatch("the seed", spec.seed.to_string(), state.seed.to_string());
    }
    if state.epochs != spec.epochs {
        return mismatch(
            "the number of epochs",
            spec.epochs.to_string(),
            state.epochs.to_string(),
        );
    }
    if state.method != spec.method {
        return mismatch("the method", spec.method.clone(), state.method.clone());
    }
    let ranks = spec.comm.world_size();
    if state.world_size != ranks {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "was written by a run on {} rank(s) and this run has {ranks}: resume it on {} \
                 (e.g. mpirun -np {} …). Another number of ranks splits each batch differently \
                 (BatchNorm statistics, the sampling of the global batch), so the run would not \
                 continue exactly",
                state.world_size, state.world_size, state.world_size
            ),
        ));
    }
    Ok(())
}

/// Runs (or continues, from `resume`) a stage to its end; returns the final state. Composes
/// the pieces below: the checks of the stage's size, then per epoch its steps
/// ([`StageLoop::run_steps`]) and its end ([`StageLoop::finish_epoch`]: validation, records,
/// checkpoints, the agreed interrupt).
pub fn run_stage(
    spec: &StageSpec<'_>,
    model: &mut dyn StageModel,
    run: &RunDir,
    metrics: &mut MetricsWriter,
    resume: Option<TrainState>,
) -> Result<TrainState, TrainError> {
    let steps_per_epoch = check_stage_size(spec)?;
    let stage = StageLoop::new(spec, run, steps_per_epoch);
    let mut state = resume.unwrap_or_else(|| spec.fresh_state());
    state.wall_seconds += spec.setup_seconds;
    let recipe = model.batch_recipe();
    while state.epoch < spec.epochs {
        stage.run_steps(&mut state, model, metrics, &recipe)?;
        stage.finish_epoch(&mut state, model, metrics)?;
    }
    stage.progress.finish();
    Ok(state)
}

/// Optimizer steps per epoch, or a configuration error when the stage's batch cannot be
/// split between the ranks or the data set holds less than one batch.
fn check_stage_size(spec: &StageSpec<'_>) -> Result<u64, TrainError> {
    let ranks = spec.comm.world_size();
    if spec.batch_size < ranks {
        return Err(TrainError::Config(format!(
            "{}: a batch of {} images cannot be split between {ranks} ranks; raise the batch \
             size to at least the number of ranks",
            spec.stage, spec.batch_size
        )));
    }
    let steps_per_epoch = spec.steps_per_epoch();
    if steps_per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "{}: {} training images are fewer than one batch of {}",
            spec.stage,
            spec.dataset.len(),
            spec.batch_size
        )));
    }
    Ok(steps_per_epoch)
}

/// What a stage's loop holds while it runs: the spec, the schedule, the progress display and
/// where checkpoints go.
struct StageLoop<'s, 'a> {
    spec: &'s StageSpec<'a>,
    run: &'s RunDir,
    schedule: LrSchedule,
    steps_per_epoch: u64,
    total_steps: u64,
    progress: StageProgress,
}

/// Images and seconds since the last step record (the throughput it reports).
#[derive(Default)]
struct Window {
    images: u64,
    seconds: f64,
}

impl<'s, 'a> StageLoop<'s, 'a> {
    fn new(spec: &'s StageSpec<'a>, run: &'s RunDir, steps_per_epoch: u64) -> Self {
        let (stage, epochs) = (spec.stage.as_str(), spec.epochs);
        // Rank 0 shows the progress of every rank.
        let progress = if spec.comm.rank() == 0 {
            StageProgress::new(stage, epochs, steps_per_epoch, spec.quiet)
        } else {
            StageProgress::with_mode(stage, epochs, steps_per_epoch, ProgressMode::Silent)
        };
        Self {
            spec,
            run,
            schedule: LrSchedule::new(spec.optim, spec.epochs, steps_per_epoch, spec.batch_size),
            steps_per_epoch,
            total_steps: u64::from(spec.epochs) * steps_per_epoch,
            progress,
        }
    }

    /// Writes a checkpoint of `state` and `model` to `path` (rank 0 alone: every rank holds
    /// the same state).
    fn save(
        &self,
        state: &TrainState,
        model: &dyn StageModel,
        path: &std::path::Path,
    ) -> Result<(), TrainError> {
        if self.spec.comm.rank() == 0 {
            checkpoint::save(path, state, &model.checkpoint_groups())
        } else {
            Ok(())
        }
    }

    /// The steps left in the current epoch, their batches prepared ahead in a scoped thread
    /// that lives for the epoch (an error or an interrupt drops the receiver, which stops the
    /// thread at its next batch).
    fn run_steps(
        &self,
        state: &mut TrainState,
        model: &mut dyn StageModel,
        metrics: &mut MetricsWriter,
        recipe: &BatchRecipe,
    ) -> Result<(), TrainError> {
        let spec = self.spec;
        let epoch = state.epoch;
        let shard_runs = spec.dataset.shard_runs();
        let order = epoch_order(
            spec.dataset.len(),
            shard_runs.as_deref(),
            spec.shuffle_buffer,
            spec.seed,
            spec.stream(),
            epoch,
        );
        self.progress.start_epoch(epoch, state.step_in_epoch);
        let steps = state.step_in_epoch..self.steps_per_epoch;
        let epoch_batches = EpochBatches {
            dataset: spec.dataset,
            recipe,
            order: &order,
            batch_size: spec.batch_size,
            rank: spec.comm.rank(),
            world: spec.comm.world_size(),
            epoch,
        };
        std::thread::scope(|scope| -> Result<(), TrainError> {
            let mut batches =
                prefetched(scope, steps.clone(), spec.prefetch_depth(), &epoch_batches);
            let mut window = Window::default();
            for step_in_epoch in steps {
                let batch = batches.next().unwrap_or_else(|| {
                    Err(TrainError::Shape("the batch thread stopped early".into()))
                })?;
                self.step(state, model, metrics, &batch, step_in_epoch, &mut window)?;
            }
            Ok(())
        })
    }

    /// One optimizer step on `batch`: forward and backward, the ranks' gradients summed, the
    /// update, the state's counts, the progress and step records, the step checkpoint, and an
    /// interrupt agreed by every rank (all of them stop at the same step).
    fn step(
        &self,
        state: &mut TrainState,
        model: &mut dyn StageModel,
        metrics: &mut MetricsWriter,
        batch: &PreparedBatch,
        step_in_epoch: u64,
        window: &mut Window,
    ) -> Result<(), TrainError> {
        let spec = self.spec;
        let started = Instant::now();
        let lr = self.schedule.lr(state.global_step);
        let result = model.forward_backward(batch)?;
        dist::all_reduce_step(spec.comm, &model.data_parallel())?;
        // Every rank learns the whole batch's correct count and whether any was interrupted.
        let mut counts = [
            result.correct.unwrap_or(0) as f64,
            f64::from(u8::from(crate::interrupt::requested())),
        ];
        dist::sum(spec.comm, &mut counts)?;
        let (correct, interrupted) = (result.correct.map(|_| counts[0] as u64), counts[1] > 0.0);
        if !result.loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                stage: spec.stage.to_string(),
                epoch: state.epoch,
                step: state.global_step,
                lr,
                loss: result.loss,
                batch: batch_statistics(batch),
            });
        }
        model.update(lr, state.global_step as f64 / self.total_steps as f64)?;
        let seconds = started.elapsed().as_secs_f64();
        let images = batch.global.indices.len() as u64;
        state.global_step += 1;
        state.step_in_epoch = step_in_epoch + 1;
        state.wall_seconds += seconds;
        state.images_seen += images;
        state.epoch_loss_sum += result.loss;
        state.epoch_steps += 1;
        if let Some(correct) = correct {
            state.epoch_correct += correct;
            state.epoch_seen += images;
        }
        window.images += images;
        window.seconds += seconds;
        let images_per_second = window.images as f64 / window.seconds.max(1e-9);
        self.progress.step(result.loss, lr, images_per_second);
        if state
            .global_step
            .is_multiple_of(spec.checkpoints.log_every_steps.max(1))
        {
            metrics.write(&MetricRecord {
                stage: spec.stage,
                kind: RecordKind::Step,
                epoch: state.epoch,
                step: state.global_step,
                loss: result.loss,
                lr,
                images_per_second,
                val_top1: None,
                train_top1: None,
                wall_seconds: state.wall_seconds,
            })?;
            *window = Window::default();
        }
        let every = spec.checkpoints.every_steps;
        if (every > 0 && state.global_step.is_multiple_of(every)) || interrupted {
            self.save(state, model, &self.run.last_checkpoint(spec.stage))?;
            tracing::debug!(step = state.global_step, "checkpoint written");
        }
        if interrupted {
            self.progress.finish();
            return Err(self.interrupted(state.epoch, state.global_step));
        }
        Ok(())
    }

    /// The end of an epoch: validation, the epoch record, the state's epoch counts reset, the
    /// best, last and periodic checkpoints, and an interrupt agreed by every rank.
    fn finish_epoch(
        &self,
        state: &mut TrainState,
        model: &mut dyn StageModel,
        metrics: &mut MetricsWriter,
    ) -> Result<(), TrainError> {
        let spec = self.spec;
        let epoch = state.epoch;
        let started = Instant::now();
        let val_top1 = model.validate()?;
        state.wall_seconds += started.elapsed().as_secs_f64();
        let record = self.epoch_record(state, val_top1);
        self.progress.finish_epoch(&record);
        tracing::debug!(
            stage = %spec.stage,
            epoch = epoch + 1,
            loss = record.loss,
            val_top1 = ?val_top1,
            train_top1 = ?record.train_top1,
            images_per_second = record.images_per_second,
            "epoch finished"
        );
        state.epoch += 1;
        state.step_in_epoch = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_steps = 0;
        state.epoch_correct = 0;
        state.epoch_seen = 0;
        if let Some(val) = val_top1 {
            if state.best_val_top1.is_none_or(|best| val > best) {
                state.best_val_top1 = Some(val);
                state.best_epoch = Some(epoch);
                self.save(state, model, &self.run.best_checkpoint(spec.stage))?;
            }
        }
        self.save(state, model, &self.run.last_checkpoint(spec.stage))?;
        let every = spec.checkpoints.every_epochs;
        if every > 0 && state.epoch.is_multiple_of(every) {
            let path = self.run.epoch_checkpoint(spec.stage, state.epoch);
            self.save(state, model, &path)?;
        }
        metrics.write(&record)?;
        // Agreed by every rank, like the interrupt of a step.
        let stop = spec
            .comm
            .any(crate::interrupt::requested())
            .map_err(dist::failed("agreeing on an interrupt"))?;
        if stop && state.epoch < spec.epochs {
            self.progress.finish();
            return Err(self.interrupted(state.epoch, state.global_step));
        }
        Ok(())
    }

    /// The record of the epoch `state` is finishing (its counts not yet reset).
    fn epoch_record(&self, state: &TrainState, val_top1: Option<f64>) -> MetricRecord {
        MetricRecord {
            stage: self.spec.stage,
            kind: RecordKind::Epoch,
            epoch: state.epoch,
            step: state.global_step,
            loss: state.epoch_loss_sum / state.epoch_steps.max(1) as f64,
            lr: self.schedule.lr(state.global_step.saturating_sub(1)),
            images_per_second: state.images_seen as f64 / state.wall_seconds.max(1e-9),
            val_top1,
            train_top1: (state.epoch_seen > 0)
                .then(|| state.epoch_correct as f64 / state.epoch_seen as f64),
            wall_seconds: state.wall_seconds,
        }
    }

    /// The error that stops an interrupted stage, with the command that continues it.
    fn interrupted(&self, epoch: u32, step: u64) -> TrainError {
        TrainError::Interrupted {
            stage: self.spec.stage.to_string(),
            epoch,
            step,
            resume_command: self.spec.resume_command.clone(),
        }
    }
}

/// What the batches of one epoch are made from; shared with the batch thread.
struct EpochBatches<'a> {
    dataset: &'a Dataset,
    recipe: &'a BatchRecipe,
    /// The epoch's order of the images ([`epoch_order`]).
    order: &'a [usize],
    batch_size: usize,
    rank: usize,
    world: usize,
    epoch: u32,
}

impl EpochBatches<'_> {
    /// The batch of step `step`: this rank's share of the global batch, prepared with the
    /// recipe (a pure function of its arguments: any thread may run it).
    fn batch(&self, step: u64) -> Result<PreparedBatch, TrainError> {
        let from = step as usize * self.batch_size;
        let to = (from + self.batch_size).min(self.order.len());
        let global = &self.order[from..to];
        let mine = shard(global.len(), self.rank, self.world);
        let mut batch = self
            .recipe
            .prepare(self.dataset, &global[mine.clone()], self.epoch)?;
        batch.global = GlobalBatch {
            indices: global.to_vec(),
            offset: mine.start,
        };
        Ok(batch)
    }
}

/// The batches of `steps`, in order: prepared when asked for (`depth` 0), or by a thread of
/// `scope` that keeps up to `depth` of them ready (reading and decoding images, augmenting)
/// while the step before runs. Memory is bounded by `depth` batches whatever the data set.
fn prefetched<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    steps: std::ops::Range<u64>,
    depth: usize,
    batches: &'env EpochBatches<'env>,
) -> Box<dyn Iterator<Item = Result<PreparedBatch, TrainError>> + 'env> {
    if depth == 0 {
        return Box::new(steps.map(|step| batches.batch(step)));
    }
    let (sender, receiver) = std::sync::mpsc::sync_channel(depth);
    scope.spawn(move || {
        for step in steps {
            let batch = batches.batch(step);
            let failed = batch.is_err();
            // A closed channel: the loop stopped (error or interrupt), so stop too.
            if sender.send(batch).is_err() || failed {
                break;
            }
        }
    });
    Box::new(receiver.into_iter())
}

/// Mean, standard deviation, min and max of a batch's pixels, and whether any is non-finite:
/// the diagnostic of a non-finite loss.
pub fn batch_statistics(batch: &PreparedBatch) -> String {
    let first = batch
        .indices
        .iter()
        .take(8)
        .map(|i| i.to_string())
        .collect::<Vec<_>>();
    if batch.pixels.is_empty() {
        // A stage on stored features: the images were not prepared.
        return format!(
            "batch of {} images (first indices {}) read from stored features; the last good checkpoint is kept",
            batch.indices.len(),
            first.join(",")
        );
    }
    let n = batch.pixels.len() as f64;
    let mut sum = 0.0f64;
    let mut sum_sq = 0.0f64;
    let mut min = f32::INFINITY;
    let mut max = f32::NEG_INFINITY;
    let mut non_finite = 0usize;
    for &p in &batch.pixels {
        if !p.is_finite() {
            non_finite += 1;
            continue;
        }
        sum += f64::from(p);
        sum_sq += f64::from(p) * f64::from(p);
        min = min.min(p);
        max = max.max(p);
    }
    let mean = sum / n;
    let std = (sum_sq / n - mean * mean).max(0.0).sqrt();
    format!(
        "batch of {} images (first indices {}): pixel mean {mean:.4}, std {std:.4}, min {min:.4}, max {max:.4}, {non_finite} non-finite; the last good checkpoint is kept",
        batch.indices.len(),
        first.join(",")
    )
}
