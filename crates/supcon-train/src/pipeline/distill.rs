//! SimCLR v2's distillation stage (Chen et al. 2020b, §2, eq. 3): a student network, trained
//! from scratch on every training image, labeled or not, minimises
//!
//! ```text
//! L = −(1/B) Σ_b Σ_c p_T(c | x_b; τ) log p_S(c | x̃_b; τ)  +  α · (1/B) Σ_{b labeled} CE(y_b, p_S(· | x̃_b))
//! ```
//!
//! where `p(c | x; τ) = softmax(logits / τ)`, the teacher (the fine-tuned network) reads the
//! clean image `x` and the student an augmented one `x̃` (the noise of Noisy Student: the
//! student cannot just copy). The teacher's outputs are a fixed function of the clean image,
//! so they are computed once, before the first step, for the whole training split and kept on
//! the device (`[N, classes]` floats: 2.2 MB for Fashion-MNIST's 54 000 images); a resumed run
//! computes the same ones.

use ndarray::Array2;
use std::path::Path;
use supcon_augment::Augmenter;
use supcon_data::Dataset;
use supcon_models::{CrossEntropyModel, FineTunedModel, ModelConfig};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{finished_stage, Checkpoint};
use crate::config::RunConfig;
use crate::dist::{self, Comm, DataParallelTensors};
use crate::error::TrainError;
use crate::pipeline::classifier::{classifier_stage_methods, infer, ClassifierTraining};
use crate::pipeline::data::{augment_pipeline, BatchRecipe, PreparedBatch};
use crate::pipeline::finetune::load_finetuned;
use crate::pipeline::runner::{StageModel, StepResult};
use crate::run_dir::RunDir;
use crate::vocabulary::Stage;

/// The fine-tuned network a student learns from.
pub struct Teacher {
    pub checkpoint: std::path::PathBuf,
    _vs: VarStore,
    model: FineTunedModel,
}

impl Teacher {
    /// The fine-tuned network of `config`'s run at `checkpoint`, for `num_classes` classes.
    pub fn load(
        config: &RunConfig,
        checkpoint: &Path,
        num_classes: usize,
        device: Device,
    ) -> Result<Self, TrainError> {
        let (vs, model) = load_finetuned(config, checkpoint, num_classes, device)?;
        Ok(Self {
            checkpoint: checkpoint.to_path_buf(),
            _vs: vs,
            model,
        })
    }

    /// The fine-tuned network of the run folder `run` (`supcon distill --teacher`), checked
    /// against the student's data: the same data set (so the same image size), channels and
    /// classes.
    pub fn from_run(
        run: &Path,
        student: &RunConfig,
        num_classes: usize,
        device: Device,
    ) -> Result<Self, TrainError> {
        let config = crate::config::load_resolved(&run.join(crate::run_dir::CONFIG_FILE))?;
        let run_dir = RunDir::existing(run);
        let Some((state, chosen)) = finished_stage(&run_dir, Stage::Finetune)? else {
            return Err(TrainError::checkpoint(
                &run_dir.last_checkpoint(Stage::Finetune),
                "is missing: the teacher run has no fine-tuned network; run `supcon finetune` \
                 (or `supcon train` with [finetune]) first",
            ));
        };
        if state.num_classes != num_classes {
            return Err(TrainError::checkpoint(
                &run_dir.last_checkpoint(Stage::Finetune),
                format!(
                    "classifies {} classes and the student's data has {num_classes}: distil \
                     on the data the teacher was fine-tuned on",
                    state.num_classes
                ),
            ));
        }
        let (theirs, ours) = (&config.data, &student.data);
        if (&theirs.dataset, theirs.image_size, config.model.in_channels)
            != (&ours.dataset, ours.image_size, student.model.in_channels)
        {
            return Err(TrainError::Config(format!(
                "--teacher {}: trained on {} ({:?} px, {} channel(s)), the student reads {} \
                 ({:?} px, {} channel(s)): the teacher must read the student's images",
                run.display(),
                theirs.dataset,
                theirs.image_size,
                config.model.in_channels,
                ours.dataset,
                ours.image_size,
                student.model.in_channels
            )));
        }
        Self::load(&config, &chosen, num_classes, device)
    }

    /// Logits of `images` (eval mode).
    fn logits(&self, images: &Tensor) -> Tensor {
        self.model.forward_t(images, false)
    }
}

/// The student's network: the run's model with `distill.student`'s architecture when it names
/// one (a cross-entropy model: encoder + linear layer).
pub fn student_model(config: &RunConfig) -> ModelConfig {
    let mut model = config.model.clone();
    if let Some(architecture) = config.distill_settings().student {
        model.architecture = architecture;
    }
    model
}

/// The distillation stage: the student, its training and the teacher's probabilities.
pub struct DistillModel<'a> {
    training: ClassifierTraining<'a>,
    pub student: CrossEntropyModel,
    /// The student's augmented views, with the labels the run may show (few labels: the
    /// labeled subset's).
    recipe: BatchRecipe,
    /// `p_T(· | x; τ)` of every image of the training split, `[N, classes]`, on the device.
    targets: Tensor,
    temperature: f64,
    labeled_weight: f64,
}

impl<'a> DistillModel<'a> {
    /// A fresh student and the teacher's probabilities on every image of `images` (the
    /// training split, unaugmented); `labeled` marks the images whose label the batches show
    /// (`None`: all).
    // The arguments are the stage's independent inputs; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &RunConfig,
        teacher: &Teacher,
        images: &Dataset,
        labeled: Option<std::sync::Arc<[bool]>>,
        validation: &'a Dataset,
        image_size: usize,
        mean: &[f32],
        std: &[f32],
        device: Device,
        comm: Comm,
    ) -> Result<Self, TrainError> {
        let settings = config.distill_settings();
        let eval_augmenter = Augmenter::new(augment_pipeline("none", image_size, mean, std)?, 0);
        let logits = infer(
            &*comm,
            images,
            &eval_augmenter,
            config.eval.batch_size,
            device,
            &|x| teacher.logits(x),
        )?;
        let targets = teacher_probabilities(&logits, settings.temperature, device)?;
        tch::manual_seed(config.seed as i64 ^ 0x44);
        let vs = VarStore::new(device);
        let student =
            CrossEntropyModel::new(&vs.root(), &student_model(config), logits.ncols() as i64)?;
        let pipeline = augment_pipeline(&settings.augment, image_size, mean, std)?;
        Ok(Self {
            training: ClassifierTraining::new(
                vs,
                &settings.optim,
                validation,
                eval_augmenter,
                config.eval.batch_size,
                device,
                comm,
            )?,
            student,
            recipe: BatchRecipe::Views {
                augmenter: Augmenter::new(pipeline, config.seed ^ 0x5eed_0005),
                views: 1,
            }
            .hiding_labels(labeled),
            targets,
            temperature: settings.temperature,
            labeled_weight: settings.labeled_weight,
        })
    }

    /// Logits of every image of `dataset` (eval mode).
    pub fn logits(&self, dataset: &Dataset) -> Result<Array2<f32>, TrainError> {
        self.training
            .infer(dataset, &|x| self.student.forward_t(x, false))
    }
}

/// `softmax(logits / τ)` row by row, as a float tensor on `device`.
fn teacher_probabilities(
    logits: &Array2<f32>,
    temperature: f64,
    device: Device,
) -> Result<Tensor, TrainError> {
    let (rows, classes) = logits.dim();
    let values: Vec<f32> = logits.iter().copied().collect();
    let logits = Tensor::f_from_slice(&values)?.f_reshape([rows as i64, classes as i64])?;
    let probabilities = (logits / temperature).f_softmax(-1, Kind::Float)?;
    if probabilities.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
        return Err(TrainError::Shape(
            "the teacher's probabilities are not finite: its checkpoint holds NaN or infinite \
             weights"
                .into(),
        ));
    }
    Ok(probabilities.f_to_device(device)?)
}

impl StageModel for DistillModel<'_> {
    fn batch_recipe(&self) -> BatchRecipe {
        self.recipe.clone()
    }

    /// The loss of the module docs on this rank's images, weighted by their share of the
    /// step; "correct" counts the images where the student agrees with the teacher.
    fn forward_backward(&mut self, batch: &PreparedBatch) -> Result<StepResult, TrainError> {
        let device = self.training.device;
        self.training.optimizer.zero_grad();
        let logits = self.student.forward_t(&batch.tensor(device), true);
        let rows: Vec<i64> = batch.indices.iter().map(|&i| i as i64).collect();
        let rows = Tensor::f_from_slice(&rows)?.f_to_device(device)?;
        let targets = self.targets.f_index_select(0, &rows)?;
        let log_student = (&logits / self.temperature).f_log_softmax(-1, Kind::Float)?;
        let mut loss = -(&targets * &log_student)
            .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
            .f_mean(Kind::Float)?;
        if self.labeled_weight > 0.0 {
            // Unlabeled images carry UNLABELED (< 0): nll_loss's ignore_index leaves them out
            // of the sum, which is divided by the batch, not by the labeled count.
            let labels = batch.label_tensor(device);
            let summed = logits.f_log_softmax(-1, Kind::Float)?.f_nll_loss(
                &labels.f_where_scalarother(&labels.f_ge(0)?, -100)?,
                None::<Tensor>,
                tch::Reduction::Sum,
                -100,
            )?;
            loss += summed * (self.labeled_weight / batch.indices.len().max(1) as f64);
        }
        let loss = loss * batch.share();
        loss.f_backward()?;
        let total = dist::total(&*self.training.comm, loss.double_value(&[]))?;
        let agree = logits
            .f_argmax(-1, false)?
            .f_eq_tensor(&targets.f_argmax(-1, false)?)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?;
        Ok(StepResult {
            loss: total,
            correct: Some(agree as u64),
        })
    }

    classifier_stage_methods!();

    fn validate(&mut self) -> Result<Option<f64>, TrainError> {
        self.training.validate(|data| self.logits(data))
    }
}

/// Loads a distilled student from its stage's checkpoint (for the evaluation).
pub fn load_student(
    config: &RunConfig,
    checkpoint: &Path,
    num_classes: usize,
    device: Device,
) -> Result<(VarStore, CrossEntropyModel), TrainError> {
    let checkpoint = Checkpoint::load(checkpoint)?;
    let mut vs = VarStore::new(device);
    let model = CrossEntropyModel::new(&vs.root(), &student_model(config), num_classes as i64)?;
    checkpoint.load_into("model", &mut vs)?;
    Ok((vs, model))
}
