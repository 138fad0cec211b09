//! The stages — pre-training, the linear probe, the CE baseline, SimCLR v2's fine-tuning and
//! distillation — and the whole recipe ([`train`]): each builds its model, hands it to the
//! stage loop ([`super::runner`]), resuming from the stage's `last` checkpoint when the
//! session resumes, and returns its summary and the checkpoint it is tested with.

use std::path::{Path, PathBuf};

use crate::checkpoint::TrainState;
use crate::config::RunConfig;
use crate::dist;
use crate::error::TrainError;
use crate::metrics_log::MetricsWriter;
use crate::run_dir::RunDir;
use crate::vocabulary::Stage;

use super::classifier::{CeModel, FrozenEncoder, LinearModel, LinearOutcome};
use super::pretrain::PretrainModel;
use super::runner::{check_resumable, run_stage, StageModel, StageSpec};
use super::session::{on_rank_zero, Session, StageSummary};
use super::{data, evaluate};

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
        let mut model = super::finetune::FinetuneModel::new(
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
    teacher: &super::distill::Teacher,
) -> Result<(StageSummary, PathBuf), TrainError> {
    let (size, mean, std) = image_params(session);
    let settings = session.config.distill_settings();
    tracing::info!(
        teacher = %teacher.checkpoint.display(),
        student = %super::distill::student_model(&session.config).architecture,
        temperature = settings.temperature,
        images = session.data.pretrain_set().len(),
        "distillation"
    );
    let validation = session.data.validation.clone();
    let config = session.config.clone();
    let state = {
        let started = std::time::Instant::now();
        let mut model = super::distill::DistillModel::new(
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
    // `supcon train` checks it before the session opens; a library caller gets it here.
    session.config.validate_whole_recipe()?;
    let (pretrain_summary, encoder_checkpoint) = pretrain(session)?;
    let linear_outcome = linear(session, &encoder_checkpoint)?;
    let finetuned = match session.config.finetune {
        Some(_) => Some(finetune(session, &encoder_checkpoint)?),
        None => None,
    };
    let distilled = match (&finetuned, &session.config.distill) {
        (Some((_, teacher)), Some(_)) => {
            let teacher = super::distill::Teacher::load(
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
