//! Stage 2 (linear classifier on the frozen encoder) and the cross-entropy baseline, plus the
//! batched inference both use for validation and testing. Over several ranks both are data
//! parallel like stage 1 (see [`crate::dist`]), and inference is split between the ranks.

use ndarray::Array2;
use supcon_augment::Augmenter;
use supcon_collectives::{shard, Collectives};
use supcon_data::Dataset;
use supcon_models::{CrossEntropyModel, LinearClassifier, SupConModel};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::config::{Method, RunConfig};
use crate::dist::{self, Comm, DataParallelTensors};
use crate::error::TrainError;
use crate::optim::Optimizer;
use crate::pipeline::data::{augment_pipeline, prepare_batch, BatchRecipe, PreparedBatch};
use crate::pipeline::methods;
use crate::pipeline::runner::{StageModel, StepResult};

/// Runs `forward` (no gradient) over every image of `dataset`, unaugmented (normalised only),
/// in batches of `batch_size`; returns the stacked outputs `[len, out_dim]`. Over several
/// ranks each runs its consecutive part of the images and every rank gets all the rows.
pub fn infer(
    comm: &dyn Collectives,
    dataset: &Dataset,
    eval_augmenter: &Augmenter,
    batch_size: usize,
    device: Device,
    forward: &dyn Fn(&Tensor) -> Tensor,
) -> Result<Array2<f32>, TrainError> {
    if dataset.is_empty() {
        return Ok(Array2::zeros((0, 0)));
    }
    let mut rows: Vec<f32> = Vec::new();
    let mut dim = 0usize;
    let indices: Vec<usize> = shard(dataset.len(), comm.rank(), comm.world_size()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = prepare_batch(eval_augmenter, dataset, chunk, 0, 1)?;
        let out = to_host_rows(&tch::no_grad(|| forward(&batch.tensor(device))))?;
        dim = out.ncols();
        rows.extend(out.iter());
    }
    if indices.is_empty() {
        // A rank without images still learns the width, from one forward pass.
        let probe = prepare_batch(eval_augmenter, dataset, &[0], 0, 1)?;
        dim = to_host_rows(&tch::no_grad(|| forward(&probe.tensor(device))))?.ncols();
    }
    let mine = Array2::from_shape_vec((indices.len(), dim), rows)
        .map_err(|e| TrainError::Shape(format!("stacking inference outputs: {e}")))?;
    dist::gather_rows(comm, mine)
}

/// A `[rows, dim]` tensor as an f32 array on the host.
fn to_host_rows(tensor: &Tensor) -> Result<Array2<f32>, TrainError> {
    let tensor = tensor
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .contiguous();
    let size = tensor.size();
    let rows = size.first().copied().unwrap_or(0) as usize;
    let dim = size.get(1).copied().unwrap_or(0) as usize;
    let mut buffer = vec![0f32; rows * dim];
    tensor.f_copy_data(&mut buffer, rows * dim)?;
    Array2::from_shape_vec((rows, dim), buffer)
        .map_err(|e| TrainError::Shape(format!("a [{rows}, {dim}] output: {e}")))
}

/// `rows` as a `[rows, dim]` f32 tensor on `device`.
fn to_device_rows(rows: &Array2<f32>, device: Device) -> Result<Tensor, TrainError> {
    let (count, dim) = rows.dim();
    let values: Vec<f32> = rows.iter().copied().collect();
    Ok(Tensor::f_from_slice(&values)?
        .f_reshape([count as i64, dim as i64])?
        .f_to_device(device)?)
}

/// Top-1 accuracy of logits `[n, classes]` against `labels`.
pub fn top1(logits: &Array2<f32>, labels: &[i64]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let correct = logits
        .rows()
        .into_iter()
        .zip(labels)
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
                    if v > acc.1 {
                        (i, v)
                    } else {
                        acc
                    }
                });
            best.0 as i64 == label
        })
        .count();
    correct as f64 / labels.len() as f64
}

/// Cross-entropy of this rank's images, back-propagated with the weight of its `share` of the
/// step's images (so that the ranks' gradients add up to those of the mean over the whole
/// batch); returns the whole batch's mean loss and this rank's correct count.
fn cross_entropy_step(
    comm: &dyn Collectives,
    logits: &Tensor,
    labels: &Tensor,
    share: f64,
) -> Result<StepResult, TrainError> {
    let loss = logits.f_log_softmax(-1, Kind::Float)?.f_nll_loss(
        labels,
        None::<Tensor>,
        tch::Reduction::Mean,
        -100,
    )? * share;
    loss.f_backward()?;
    let total = dist::total(comm, loss.double_value(&[]))?;
    let correct = logits
        .argmax(-1, false)
        .eq_tensor(labels)
        .sum(Kind::Int64)
        .int64_value(&[]);
    Ok(StepResult {
        loss: total,
        correct: Some(correct as u64),
    })
}

/// The [`StageModel`] methods that every classifier stage (linear, CE, fine-tuning,
/// distillation) hands to its [`ClassifierTraining`] field `training`: the data-parallel
/// tensors, the update and the checkpoint groups.
macro_rules! classifier_stage_methods {
    () => {
        fn data_parallel(&self) -> DataParallelTensors {
            self.training.data_parallel()
        }

        fn update(&mut self, lr: f64, progress: f64) -> Result<(), TrainError> {
            self.training.update(lr, progress)
        }

        fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, tch::Tensor)>)> {
            self.training.checkpoint_groups()
        }

        fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
            self.training.restore(checkpoint)
        }
    };
}
pub(super) use classifier_stage_methods;

/// What the classifier stages (linear, CE, fine-tuning) share: the trained variables, their
/// optimizer and the validation split, and so the same update, validation and checkpoint code.
pub(super) struct ClassifierTraining<'a> {
    vs: VarStore,
    pub(super) optimizer: Optimizer,
    validation: &'a Dataset,
    /// Normalisation only: validation, testing and stored features see unaugmented images.
    eval_augmenter: Augmenter,
    eval_batch: usize,
    pub(super) device: Device,
    pub(super) comm: Comm,
}

impl<'a> ClassifierTraining<'a> {
    /// The stage's training of `vs` (rank 0's initial values on every rank).
    pub(super) fn new(
        vs: VarStore,
        optim: &crate::config::OptimConfig,
        validation: &'a Dataset,
        eval_augmenter: Augmenter,
        eval_batch: usize,
        device: Device,
        comm: Comm,
    ) -> Result<Self, TrainError> {
        let variables: Vec<Tensor> = varstore_tensors(&vs).into_iter().map(|(_, t)| t).collect();
        dist::broadcast_tensors(&*comm, &variables)?;
        let optimizer = Optimizer::new(optim, varstore_tensors(&vs));
        Ok(Self {
            vs,
            optimizer,
            validation,
            eval_augmenter,
            eval_batch,
            device,
            comm,
        })
    }

    /// Cross-entropy of a batch's logits (see [`cross_entropy_step`]).
    pub(super) fn cross_entropy(
        &self,
        logits: &Tensor,
        batch: &PreparedBatch,
    ) -> Result<StepResult, TrainError> {
        cross_entropy_step(
            &*self.comm,
            logits,
            &batch.label_tensor(self.device),
            batch.share(),
        )
    }

    pub(super) fn data_parallel(&self) -> DataParallelTensors {
        DataParallelTensors::new(&self.optimizer, dist::running_statistics(&self.vs))
    }

    /// [`infer`] with this stage's evaluation settings.
    pub(super) fn infer(
        &self,
        dataset: &Dataset,
        forward: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<Array2<f32>, TrainError> {
        infer(
            &*self.comm,
            dataset,
            &self.eval_augmenter,
            self.eval_batch,
            self.device,
            forward,
        )
    }

    pub(super) fn update(&mut self, lr: f64, _progress: f64) -> Result<(), TrainError> {
        self.optimizer.step(lr);
        Ok(())
    }

    /// Validation top-1 from `logits` of a data set (`None` without a validation split).
    pub(super) fn validate(
        &self,
        logits: impl Fn(&Dataset) -> Result<Array2<f32>, TrainError>,
    ) -> Result<Option<f64>, TrainError> {
        if self.validation.is_empty() {
            return Ok(None);
        }
        let logits = logits(self.validation)?;
        Ok(Some(top1(&logits, self.validation.labels())))
    }

    pub(super) fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        vec![
            ("model", varstore_tensors(&self.vs)),
            ("optim", self.optimizer.state()),
        ]
    }

    pub(super) fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        checkpoint.load_into("model", &mut self.vs)?;
        self.optimizer
            .load_state(checkpoint.group("optim").into_iter().collect())
    }
}

/// The frozen encoder of a pre-trained [`SupConModel`], read the way its method reads images
/// ([`methods::ProbeReading`]).
pub struct FrozenEncoder {
    pub vs: VarStore,
    pub model: SupConModel,
    reading: Box<dyn methods::ProbeReading>,
}

impl FrozenEncoder {
    /// Loads the `model.` tensors of a pre-training checkpoint (or a weights-only file), and
    /// what the method's probe reads besides them (CMC's second encoder); `mean`/`std` are the
    /// pixels' normalization (CMC's colour split undoes it).
    pub fn load(
        config: &RunConfig,
        checkpoint: &Checkpoint,
        device: Device,
        mean: &[f32],
        std: &[f32],
    ) -> Result<Self, TrainError> {
        let mut vs = VarStore::new(device);
        let model = SupConModel::new(&vs.root(), &methods::online_model(config))?;
        checkpoint.load_into("model", &mut vs)?;
        vs.freeze();
        refuse_other_methods_checkpoint(config, checkpoint)?;
        let reading = (methods::parts(config.pretrain.method).probe)(&methods::ProbeContext {
            config,
            checkpoint,
            device,
            mean,
            std,
        })?;
        Ok(Self { vs, model, reading })
    }

    /// The probe's features `[n, feature_dim]` in eval mode.
    pub fn encode(&self, images: &Tensor) -> Tensor {
        self.reading.features(&self.model, images)
    }

    /// Width of [`FrozenEncoder::encode`]'s features.
    pub fn feature_dim(&self) -> i64 {
        self.reading.width(&self.model)
    }

    /// The model whose projection head applies to [`FrozenEncoder::encode`]'s features; a
    /// method whose features are not one encoder's on the image (CMC, CPC) has none.
    pub fn projection_head(&self) -> Result<&SupConModel, TrainError> {
        match self.reading.headless() {
            Some(why) => Err(TrainError::Config(format!("--projections: {why}"))),
            None => Ok(&self.model),
        }
    }
}

/// A checkpoint holding a group that only another method writes is that method's: refused,
/// naming it and the fix.
fn refuse_other_methods_checkpoint(
    config: &RunConfig,
    checkpoint: &Checkpoint,
) -> Result<(), TrainError> {
    for method in Method::all() {
        if method == config.pretrain.method {
            continue;
        }
        for group in methods::parts(method).own_groups {
            if !checkpoint.group(group).is_empty() {
                return Err(TrainError::checkpoint(
                    &checkpoint.path,
                    format!(
                        "holds {group}.*, a {} encoder, and the configuration's method is {}: \
                         pass the run's --config, or --preset {}",
                        method.as_str(),
                        config.pretrain.method.as_str(),
                        crate::config::presets_of(method).join(" / ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What the linear stage leaves: the summary, the frozen encoder and the chosen classifier.
pub struct LinearOutcome {
    pub summary: super::session::StageSummary,
    pub encoder: FrozenEncoder,
    /// Classifier checkpoint used for testing: best validation epoch, else the last.
    pub classifier_checkpoint: std::path::PathBuf,
}

/// The linear stage: a linear layer trained on frozen encoder features.
pub struct LinearModel<'a> {
    pub encoder: &'a FrozenEncoder,
    training: ClassifierTraining<'a>,
    pub classifier: LinearClassifier,
    /// Encoder features of the training and validation images, when the stage does not
    /// augment (see [`LinearModel::store_features`]).
    stored: Option<StoredFeatures>,
    augmenter: Augmenter,
}

impl<'a> LinearModel<'a> {
    /// The classifier over `encoder`'s features; `mean`/`std` normalise the images.
    // The arguments are the stage's independent inputs; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &RunConfig,
        encoder: &'a FrozenEncoder,
        num_classes: usize,
        validation: &'a Dataset,
        image_size: usize,
        mean: &[f32],
        std: &[f32],
        device: Device,
        comm: Comm,
    ) -> Result<Self, TrainError> {
        tch::manual_seed(config.seed as i64 ^ 0x11);
        let vs = VarStore::new(device);
        let classifier = probe_classifier(
            &vs.root(),
            config,
            encoder.feature_dim(),
            num_classes as i64,
        )?;
        let pipeline = augment_pipeline(&config.linear.augment, image_size, mean, std)?;
        Ok(Self {
            encoder,
            training: ClassifierTraining::new(
                vs,
                &config.linear.optim,
                validation,
                Augmenter::new(augment_pipeline("none", image_size, mean, std)?, 0),
                config.eval.batch_size,
                device,
                comm,
            )?,
            classifier,
            stored: None,
            augmenter: Augmenter::new(pipeline, config.seed ^ 0x5eed_0002),
        })
    }

    /// Logits of every image of `dataset`.
    pub fn logits(&self, dataset: &Dataset) -> Result<Array2<f32>, TrainError> {
        self.training.infer(dataset, &|x| {
            self.classifier.forward(&self.encoder.encode(x))
        })
    }

    /// Encodes every image of `train` and of the validation split once, unaugmented, so that
    /// every epoch trains and validates the linear layer on these features instead of running
    /// the frozen encoder again. Only valid when the stage's augmentation is `none`: the
    /// features are then a pure function of the image (eval mode), so the result is the same,
    /// at the cost of one forward pass instead of one per epoch. Computed in a fixed order, so
    /// a resumed run gets the same features.
    pub fn store_features(&mut self, train: &Dataset) -> Result<(), TrainError> {
        self.stored = Some(StoredFeatures {
            train: self.encode_all(train)?,
            validation: self.encode_all(self.training.validation)?,
        });
        Ok(())
    }

    /// With `linear.standardize`, sets the classifier's standardization to the training
    /// features' statistics: the stored ones, else one unaugmented pass over `train` (every
    /// rank gets every row, so every rank computes the same statistics).
    pub fn fit_standardization(&mut self, train: &Dataset) -> Result<(), TrainError> {
        let features = match &self.stored {
            Some(stored) => stored.train.shallow_clone(),
            None => self.encode_all(train)?,
        };
        self.classifier.fit_standardization(&features)?;
        Ok(())
    }

    /// The frozen encoder's features of every image of `data` (unaugmented, in order), on
    /// the stage's device.
    fn encode_all(&self, data: &Dataset) -> Result<Tensor, TrainError> {
        let features = self.training.infer(data, &|x| self.encoder.encode(x))?;
        to_device_rows(&features, self.training.device)
    }
}

/// The linear probe's classifier as `config` builds it (with or without standardization), so
/// that training and evaluation build the same variables.
pub fn probe_classifier(
    root: &tch::nn::Path<'_>,
    config: &RunConfig,
    feature_dim: i64,
    num_classes: i64,
) -> Result<LinearClassifier, TrainError> {
    Ok(if config.linear.standardize {
        LinearClassifier::standardized(root, feature_dim, num_classes)?
    } else {
        LinearClassifier::new(root, feature_dim, num_classes)?
    })
}

/// See [`LinearModel::store_features`].
struct StoredFeatures {
    /// `[train, feature_dim]`, indexed like the training set.
    train: Tensor,
    /// `[validation, feature_dim]`, in the validation split's order.
    validation: Tensor,
}

impl StageModel for LinearModel<'_> {
    fn batch_recipe(&self) -> BatchRecipe {
        if self.stored.is_some() {
            // The features are stored: the step needs the labels and indices only.
            return BatchRecipe::LabelsOnly;
        }
        BatchRecipe::Views {
            augmenter: self.augmenter.clone(),
            views: 1,
        }
    }

    fn forward_backward(&mut self, batch: &PreparedBatch) -> Result<StepResult, TrainError> {
        self.training.optimizer.zero_grad();
        let features = match &self.stored {
            Some(stored) => {
                let rows: Vec<i64> = batch.indices.iter().map(|&i| i as i64).collect();
                let rows = Tensor::f_from_slice(&rows)?.f_to_device(self.training.device)?;
                stored.train.f_index_select(0, &rows)?
            }
            None => tch::no_grad(|| self.encoder.encode(&batch.tensor(self.training.device))),
        };
        let logits = self.classifier.forward(&features);
        self.training.cross_entropy(&logits, batch)
    }

    classifier_stage_methods!();

    fn validate(&mut self) -> Result<Option<f64>, TrainError> {
        self.training.validate(|data| match &self.stored {
            // `data` is the validation split the stored features were computed from.
            Some(stored) => to_host_rows(&tch::no_grad(|| {
                self.classifier.forward(&stored.validation)
            })),
            None => self.logits(data),
        })
    }
}

/// A classifier trained end to end with cross-entropy on one augmented view of the labeled
/// images: the CE baseline ([`CeModel`]) and SimCLR v2's fine-tuning
/// ([`super::finetune::FinetuneModel`]) differ only in their network and its start.
pub struct EndToEndClassifier<'a, M> {
    pub(super) training: ClassifierTraining<'a>,
    pub model: M,
    pub(super) augmenter: Augmenter,
}

impl<M: ModuleT> EndToEndClassifier<'_, M> {
    /// Logits of every image of `dataset` (eval mode).
    pub fn logits(&self, dataset: &Dataset) -> Result<Array2<f32>, TrainError> {
        self.training
            .infer(dataset, &|x| self.model.forward_t(x, false))
    }
}

/// The cross-entropy baseline: encoder + linear layer trained end to end.
pub type CeModel<'a> = EndToEndClassifier<'a, CrossEntropyModel>;

impl<'a> CeModel<'a> {
    // The arguments are the stage's independent inputs; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &RunConfig,
        num_classes: usize,
        validation: &'a Dataset,
        image_size: usize,
        mean: &[f32],
        std: &[f32],
        device: Device,
        comm: Comm,
    ) -> Result<Self, TrainError> {
        tch::manual_seed(config.seed as i64 ^ 0x22);
        let vs = VarStore::new(device);
        let model = CrossEntropyModel::new(&vs.root(), &config.model, num_classes as i64)?;
        let pipeline = augment_pipeline(&config.ce.augment, image_size, mean, std)?;
        Ok(Self {
            training: ClassifierTraining::new(
                vs,
                &config.ce.optim,
                validation,
                Augmenter::new(augment_pipeline("none", image_size, mean, std)?, 0),
                config.eval.batch_size,
                device,
                comm,
            )?,
            model,
            augmenter: Augmenter::new(pipeline, config.seed ^ 0x5eed_0003),
        })
    }

    /// Encoder features of every image of `dataset` (eval mode).
    pub fn embeddings(&self, dataset: &Dataset) -> Result<Array2<f32>, TrainError> {
        self.training
            .infer(dataset, &|x| self.model.encoder.forward_t(x, false))
    }
}

impl<M: ModuleT> StageModel for EndToEndClassifier<'_, M> {
    fn batch_recipe(&self) -> BatchRecipe {
        BatchRecipe::Views {
            augmenter: self.augmenter.clone(),
            views: 1,
        }
    }

    fn forward_backward(&mut self, batch: &PreparedBatch) -> Result<StepResult, TrainError> {
        self.training.optimizer.zero_grad();
        let logits = self
            .model
            .forward_t(&batch.tensor(self.training.device), true);
        self.training.cross_entropy(&logits, batch)
    }

    classifier_stage_methods!();

    fn validate(&mut self) -> Result<Option<f64>, TrainError> {
        self.training.validate(|data| self.logits(data))
    }
}
