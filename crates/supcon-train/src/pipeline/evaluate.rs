//! The final evaluation on the test set: top-1/top-5, per-class accuracy and confusion matrix
//! from the classifier's logits, weighted kNN on encoder embeddings (the training split is
//! the bank), alignment/uniformity/effective rank of the test embeddings, and accuracy under
//! corruptions.

use ndarray::{Array2, Array4, ArrayViewMut3};
use std::path::Path;
use supcon_augment::{corrupt, Augmenter, Corruption, ImageRef, SeverityScale};
use supcon_data::Dataset;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use super::classifier::LinearOutcome;
use super::session::{Session, StageSummary};
use crate::checkpoint::Checkpoint;
use crate::error::TrainError;
use crate::eval::robustness::ImageCorruption;
use crate::eval::{
    classification_metrics, embedding_geometry, knn_classify, GeometryOptions, KnnOptions,
    RobustnessReport,
};
use crate::pipeline::classifier::{infer, FrozenEncoder};
use crate::pipeline::data::{augment_pipeline, EvaluationSet};
use crate::plots::{EmbeddingsForPlot, PlotOptions};
use crate::report::{write_report, MethodEvaluation, Report, ReportInput, StageReport};
use crate::vocabulary::Stage;

/// Everything measured for one method (SupCon / SimCLR + linear, or CE).
pub struct MethodResult {
    pub method: String,
    pub stages: Vec<StageSummary>,
    pub evaluation: MethodEvaluation,
    /// Encoder embeddings of the test set (for the PCA plot).
    pub test_embeddings: Array2<f32>,
}

struct Evaluator<'a> {
    session: &'a Session,
    test: &'a Dataset,
    eval_augmenter: Augmenter,
}

impl<'a> Evaluator<'a> {
    fn new(session: &'a Session, test: &'a Dataset) -> Result<Self, TrainError> {
        let pipeline = augment_pipeline(
            "none",
            session.image_size(),
            &session.data.mean,
            &session.data.std,
        )?;
        Ok(Self {
            session,
            test,
            eval_augmenter: Augmenter::new(pipeline, 0),
        })
    }

    fn infer(
        &self,
        dataset: &Dataset,
        forward: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<Array2<f32>, TrainError> {
        // Rank 0 evaluates alone (see `pipeline::on_rank_zero`).
        infer(
            &supcon_collectives::SingleProcess,
            dataset,
            &self.eval_augmenter,
            self.session.config.eval.batch_size,
            self.session.device,
            forward,
        )
    }

    /// Metrics from a classifier and an embedding function.
    fn measure(
        &self,
        method: String,
        stages: Vec<StageSummary>,
        classify: &dyn Fn(&Tensor) -> Tensor,
        embed: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<MethodResult, TrainError> {
        let config = &self.session.config;
        let logits = self.infer(self.test, classify)?;
        let classification = classification_metrics(logits.view(), self.test.labels())?;
        let test_embeddings = self.infer(self.test, embed)?;
        let bank = self.infer(&self.session.data.train, embed)?;
        let knn = knn_classify(
            bank.view(),
            self.session.data.train.labels(),
            test_embeddings.view(),
            self.test.labels(),
            self.test.num_classes(),
            &KnnOptions {
                k: config.eval.knn_k,
                temperature: config.eval.knn_temperature,
                ..KnnOptions::default()
            },
        )?;
        let geometry = match embedding_geometry(
            test_embeddings.view(),
            None,
            &GeometryOptions {
                seed: config.seed,
                ..GeometryOptions::default()
            },
        ) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(
                    "embedding geometry not measured: {}",
                    crate::error::chain(&e)
                );
                None
            }
        };
        let robustness = if config.eval.robustness {
            Some(self.robustness(classify)?)
        } else {
            None
        };
        Ok(MethodResult {
            evaluation: MethodEvaluation {
                method: method.clone(),
                knn: Some(knn),
                geometry,
                classification: Some(classification),
                robustness,
            },
            method,
            stages,
            test_embeddings,
        })
    }

    /// Top-1 under supcon-augment's corruptions at severities 1..=5 on a class-balanced test
    /// subset.
    fn robustness(
        &self,
        classify: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<RobustnessReport, TrainError> {
        let per_class = self.session.config.eval.robustness_per_class;
        let subset = if per_class > 0 {
            self.test.first_per_class(per_class)
        } else {
            self.test.clone()
        };
        let shape = subset.shape();
        let (c, h, w) = (shape.channels, shape.height, shape.width);
        // [n, C, H, W] in [0, 1] (the corruptions' domain); normalisation happens in `classify`.
        let mut images = Array4::<f32>::zeros((subset.len(), c, h, w));
        for (i, sample) in subset.iter().enumerate() {
            let (pixels, _) = sample.map_err(|e| TrainError::data("test images", e))?;
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        images[[i, ch, y, x]] = f32::from(pixels[(y * w + x) * c + ch]) / 255.0;
                    }
                }
            }
        }
        let mean = Tensor::from_slice(&self.session.data.mean).reshape([1, c as i64, 1, 1]);
        let std = Tensor::from_slice(&self.session.data.std).reshape([1, c as i64, 1, 1]);
        let device = self.session.device;
        let corruptions: Vec<AugmentCorruption> = Corruption::ALL
            .iter()
            .map(|&corruption| AugmentCorruption {
                corruption,
                name: format!("{corruption:?}"),
            })
            .collect();
        let refs: Vec<&dyn ImageCorruption> = corruptions
            .iter()
            .map(|c| c as &dyn ImageCorruption)
            .collect();
        crate::eval::robustness_accuracy(
            images.view(),
            subset.labels(),
            &refs,
            |batch| -> Result<Array2<f32>, TrainError> {
                let batch = batch.as_standard_layout();
                let dims: Vec<i64> = batch.shape().iter().map(|&d| d as i64).collect();
                let x = Tensor::from_slice(batch.as_slice().expect("standard layout"))
                    .reshape(dims.as_slice());
                let x = ((x - &mean) / &std).to_device(device);
                let logits = tch::no_grad(|| classify(&x)).to_device(Device::Cpu);
                let size = logits.size();
                let values: Vec<f32> = Vec::try_from(logits.flatten(0, -1))?;
                Array2::from_shape_vec((size[0] as usize, size[1] as usize), values)
                    .map_err(|e| TrainError::Shape(e.to_string()))
            },
            &crate::eval::RobustnessOptions {
                seed: self.session.config.seed,
                ..crate::eval::RobustnessOptions::default()
            },
        )
        .map_err(TrainError::from)
    }
}

/// A supcon-augment corruption (bytes, HWC) seen as the evaluation's `[C, H, W]` f32 one.
struct AugmentCorruption {
    corruption: Corruption,
    name: String,
}

impl ImageCorruption for AugmentCorruption {
    fn name(&self) -> &str {
        &self.name
    }

    fn corrupt(
        &self,
        mut image: ArrayViewMut3<'_, f32>,
        severity: u8,
        seed: u64,
    ) -> Result<(), String> {
        let (c, h, w) = image.dim();
        let mut bytes = vec![0u8; c * h * w];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    bytes[(y * w + x) * c + ch] =
                        (image[[ch, y, x]].clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
        let mut out = vec![0u8; bytes.len()];
        let source = ImageRef {
            data: &bytes,
            height: h,
            width: w,
            channels: c,
        };
        corrupt(
            source,
            self.corruption,
            severity,
            SeverityScale::Cifar,
            seed,
            0,
            &mut out,
        )
        .map_err(|e| e.to_string())?;
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    image[[ch, y, x]] = f32::from(out[(y * w + x) * c + ch]) / 255.0;
                }
            }
        }
        Ok(())
    }
}

/// SupCon (or SimCLR) + linear classifier on the test set.
pub fn evaluate_supcon(
    session: &Session,
    test: &Dataset,
    outcome: &LinearOutcome,
    stages: Vec<StageSummary>,
) -> Result<MethodResult, TrainError> {
    let checkpoint = Checkpoint::load(&outcome.classifier_checkpoint)?;
    let mut vs = VarStore::new(session.device);
    let classifier = crate::pipeline::classifier::probe_classifier(
        &vs.root(),
        &session.config,
        outcome.encoder.feature_dim(),
        test.num_classes() as i64,
    )?;
    checkpoint.load_into("model", &mut vs)?;
    let encoder: &FrozenEncoder = &outcome.encoder;
    let evaluator = Evaluator::new(session, test)?;
    evaluator.measure(
        session.config.pretrain.method.as_str().to_string(),
        stages,
        &|x| classifier.forward(&encoder.encode(x)),
        &|x| encoder.encode(x),
    )
}

/// The CE baseline (weights of `checkpoint`) on the test set.
pub fn evaluate_ce(
    session: &Session,
    test: &Dataset,
    checkpoint: &Path,
    summary: StageSummary,
) -> Result<MethodResult, TrainError> {
    let checkpoint = Checkpoint::load(checkpoint)?;
    let mut vs = VarStore::new(session.device);
    let model = supcon_models::CrossEntropyModel::new(
        &vs.root(),
        &session.config.model,
        test.num_classes() as i64,
    )?;
    checkpoint.load_into("model", &mut vs)?;
    let evaluator = Evaluator::new(session, test)?;
    evaluator.measure(
        "ce".into(),
        vec![summary],
        &|x| model.forward_t(x, false),
        &|x| model.encoder.forward_t(x, false),
    )
}

/// The fine-tuned network (weights of `checkpoint`) on the test set, as the method
/// `<pre-training method>+finetune`; kNN reads what its classifier reads.
pub fn evaluate_finetune(
    session: &Session,
    test: &Dataset,
    checkpoint: &Path,
    stages: Vec<StageSummary>,
) -> Result<MethodResult, TrainError> {
    let (_vs, model) = crate::pipeline::finetune::load_finetuned(
        &session.config,
        checkpoint,
        test.num_classes(),
        session.device,
    )?;
    let evaluator = Evaluator::new(session, test)?;
    evaluator.measure(
        format!("{}+finetune", session.config.pretrain.method.as_str()),
        stages,
        &|x| model.forward_t(x, false),
        &|x| model.features(x, false),
    )
}

/// The distilled student (weights of `checkpoint`) on the test set, as the method
/// `<pre-training method>+distill`.
pub fn evaluate_distill(
    session: &Session,
    test: &Dataset,
    checkpoint: &Path,
    stages: Vec<StageSummary>,
) -> Result<MethodResult, TrainError> {
    let (_vs, student) = crate::pipeline::distill::load_student(
        &session.config,
        checkpoint,
        test.num_classes(),
        session.device,
    )?;
    let evaluator = Evaluator::new(session, test)?;
    evaluator.measure(
        format!("{}+distill", session.config.pretrain.method.as_str()),
        stages,
        &|x| student.forward_t(x, false),
        &|x| student.encoder.forward_t(x, false),
    )
}

/// Writes the plots, `report.json` and `report.md`; returns the report.
pub fn finish_report(
    session: &Session,
    test: &EvaluationSet,
    methods: Vec<MethodResult>,
) -> Result<Report, TrainError> {
    let mut stages = Vec::new();
    for m in &methods {
        for s in &m.stages {
            let mut stage = StageReport::new(
                s.stage,
                &m.method,
                s.epochs,
                s.wall_seconds,
                s.images_per_second,
            );
            stage.val_top1 = s.best_val_top1;
            stage.ranks = s.ranks;
            stage.best_epoch = s.best_epoch;
            stages.push(stage);
        }
    }
    let class_names = session.data.train.class_names().to_vec();
    let run_name = session
        .run
        .root()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pca = methods.first().map(|m| EmbeddingsForPlot {
        embeddings: m.test_embeddings.view(),
        labels: test.labels(),
        class_names: test.class_names(),
    });
    let input = ReportInput {
        run_name,
        evaluated_on: session.config.eval.split.as_str().to_string(),
        dataset: Some(data_description(session, test)?),
        class_names,
        stages,
        evaluations: methods.iter().map(|m| m.evaluation.clone()).collect(),
        pca,
        plot_options: PlotOptions::default(),
    };
    let report = write_report(session.run.root(), input)?;
    // The final figures go to TensorBoard too, at the step where each method's last stage
    // ended (after the report: a failing events file does not cost it).
    for m in &methods {
        let step = m.stages.last().map_or(0, |s| s.steps);
        let scalars = m.evaluation.scalars();
        session.metrics.write_scalars(step, &scalars)?;
    }
    Ok(report)
}

/// The report's description of the data, e.g. `fashion-mnist (54000 train / 6000 val / 10000
/// test)`; unlabeled pre-training images are named before the labeled set, a few-label
/// subset after it.
fn data_description(session: &Session, test: &EvaluationSet) -> Result<String, TrainError> {
    let data = &session.data;
    let mut labeled = format!(
        "{} ({} train / {} val / {} {})",
        session.config.data.labeled()?.dataset,
        data.train.len(),
        data.validation.len(),
        test.len(),
        session.config.eval.split.as_str()
    );
    let unreadable = data.unreadable + test.unreadable;
    if unreadable > 0 {
        labeled.push_str(&format!(
            "; {unreadable} unreadable image(s) left out (data.skip_corrupt)"
        ));
    }
    if let Some(subset) = &data.labeled_subset {
        let quota = match subset.quota {
            supcon_data::LabelQuota::PerClass(n) => format!("{n} per class"),
            supcon_data::LabelQuota::Fraction(f) => format!("{} %", f * 100.0),
        };
        return Ok(format!(
            "{labeled}; few labels: {} of {} training images labeled ({quota}, labeled_subset.json), \
             all {} for pre-training",
            subset.indices.len(),
            data.pretrain_set().len(),
            data.pretrain_set().len()
        ));
    }
    Ok(match &data.unlabeled {
        Some(images) => format!(
            "{} of {} unlabeled images for pre-training; {labeled}",
            session.config.data.dataset,
            images.len()
        ),
        None => labeled,
    })
}

/// The summary of `stage` in the session's run folder and the checkpoint its evaluation reads;
/// `None` when the stage never ran there.
fn finished_stage(
    session: &Session,
    stage: Stage,
) -> Result<Option<(StageSummary, std::path::PathBuf)>, TrainError> {
    Ok(crate::checkpoint::finished_stage(&session.run, stage)?
        .map(|(state, chosen)| (StageSummary::from_state(&state), chosen)))
}

/// Evaluates a run again from its checkpoints (`supcon eval`): SupCon's encoder + linear
/// classifier when both stages finished, the CE baseline when it did, then the report — what
/// the end of `train` evaluates, read back from the run folder.
pub fn evaluate_checkpoints(session: &Session) -> Result<Report, TrainError> {
    let test = super::data::load_evaluation_split(&session.config, &session.data)?;
    let mut methods = Vec::new();
    let pretrain_last = session.run.last_checkpoint(Stage::Pretrain);
    let linear_last = session.run.last_checkpoint(Stage::Linear);
    if pretrain_last.exists() && linear_last.exists() {
        let pretrain = Checkpoint::load(&pretrain_last)?;
        let linear = Checkpoint::load(&linear_last)?;
        let encoder = FrozenEncoder::load(
            &session.config,
            &pretrain,
            session.device,
            &session.data.mean,
            &session.data.std,
        )?;
        let linear_state = linear.require_state()?;
        let outcome = LinearOutcome {
            summary: StageSummary::from_state(linear_state),
            encoder,
            classifier_checkpoint: session
                .run
                .chosen_checkpoint(Stage::Linear, linear_state.best_epoch),
        };
        let stages = vec![
            StageSummary::from_state(pretrain.require_state()?),
            outcome.summary.clone(),
        ];
        methods.push(evaluate_supcon(session, &test, &outcome, stages)?);
    }
    // Fine-tuning and distillation, after the pre-training of the same run when it has one.
    let mut stages: Vec<StageSummary> = finished_stage(session, Stage::Pretrain)?
        .map(|(summary, _)| summary)
        .into_iter()
        .collect();
    if let Some((summary, chosen)) = finished_stage(session, Stage::Finetune)? {
        stages.push(summary);
        methods.push(evaluate_finetune(session, &test, &chosen, stages.clone())?);
    }
    if let Some((summary, chosen)) = finished_stage(session, Stage::Distill)? {
        stages.push(summary);
        methods.push(evaluate_distill(session, &test, &chosen, stages)?);
    }
    if let Some((summary, chosen)) = finished_stage(session, Stage::Ce)? {
        methods.push(evaluate_ce(session, &test, &chosen, summary)?);
    }
    if methods.is_empty() {
        return Err(TrainError::RunDir {
            path: session.run.root().to_path_buf(),
            message: "no finished stage to evaluate (needs pretrain + linear, finetune, distill \
                      or ce checkpoints)"
                .into(),
        });
    }
    finish_report(session, &test, methods)
}
