//! Stage 1: contrastive pre-training of encoder + projection head. What every method shares
//! lives here (the online network, the optimizer, the augmentation, multi-crop); what is
//! particular to a method lives in its module of [`super::methods`].

use std::collections::BTreeSet;

use supcon_augment::{Augmenter, CropGroup, MultiCropAugmenter};
use supcon_models::SupConModel;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::config::RunConfig;
use crate::dist::{self, Comm, DataParallelTensors};
use crate::error::TrainError;
use crate::optim::Optimizer;
use crate::pipeline::data::{augment_pipeline, BatchRecipe, PreparedBatch};
use crate::pipeline::methods::{self, ContrastiveMethod, MethodContext};
use crate::pipeline::runner::{StageModel, StepResult};

/// The online encoder + head, its optimizer, the augmentation, and the run's method.
pub struct PretrainModel {
    pub vs: VarStore,
    pub model: SupConModel,
    optimizer: Optimizer,
    /// How the views of a batch are drawn.
    views: BatchRecipe,
    method: Box<dyn ContrastiveMethod>,
    /// Names of the method's own trainable tensors (skipped while the method freezes them).
    method_trainable: BTreeSet<String>,
    /// The epoch of the batch in flight (for the method's freezing).
    epoch: u32,
}

impl PretrainModel {
    /// A freshly initialised model (libtorch's generator seeded with the run's seed; over
    /// several ranks, rank 0's weights) and the configured method; `dataset_size` is the
    /// number of training images (InstDisc's bank).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &RunConfig,
        device: Device,
        image_size: usize,
        mean: &[f32],
        std: &[f32],
        dataset_size: usize,
        comm: Comm,
    ) -> Result<Self, TrainError> {
        tch::manual_seed(config.seed as i64);
        let vs = VarStore::new(device);
        let model = SupConModel::new(&vs.root(), &methods::online_model(config))?;
        let method = methods::build(&MethodContext {
            config,
            online: &vs,
            device,
            dataset_size,
            image_size,
            mean,
            std,
            comm: comm.clone(),
        })?;
        let trainable = method.trainable();
        let mut start: Vec<Tensor> = varstore_tensors(&vs).into_iter().map(|(_, t)| t).collect();
        start.extend(trainable.iter().map(|(_, t)| t.shallow_clone()));
        dist::broadcast_tensors(&*comm, &start)?;
        let method_trainable = trainable.iter().map(|(name, _)| name.clone()).collect();
        let mut params = varstore_tensors(&vs);
        params.extend(trainable);
        let optimizer = Optimizer::new(&config.pretrain.optim, params);
        let pretrain = &config.pretrain;
        let global = augment_pipeline(&pretrain.augment, image_size, mean, std)?;
        let seed = config.seed ^ 0x5eed_0001;
        let multicrop = &pretrain.multicrop;
        let views = if multicrop.local_views > 0 {
            let local =
                augment_pipeline(&multicrop.local_augment, multicrop.local_size, mean, std)?;
            BatchRecipe::MultiCrop(MultiCropAugmenter::new(
                vec![
                    CropGroup {
                        pipeline: global,
                        views: pretrain.views,
                    },
                    CropGroup {
                        pipeline: local,
                        views: multicrop.local_views,
                    },
                ],
                seed,
            )?)
        } else {
            let mut augmenter = Augmenter::new(global, seed);
            if let Some(first) = &pretrain.first_view_augment {
                augmenter =
                    augmenter.with_first_view(augment_pipeline(first, image_size, mean, std)?)?;
            }
            BatchRecipe::Views {
                augmenter,
                views: pretrain.views,
            }
        };
        Ok(Self {
            vs,
            model,
            optimizer,
            views,
            method,
            method_trainable,
            epoch: 0,
        })
    }

    /// The batches carry the labels of the images `labeled` marks only (`None`: all), every
    /// other label is [`supcon_loss::UNLABELED`] (with few labels SupCon then trains
    /// semi-supervised).
    pub fn hiding_labels(mut self, labeled: Option<std::sync::Arc<[bool]>>) -> Self {
        self.views = self.views.hiding_labels(labeled);
        self
    }

    /// The loss backend's name.
    pub fn loss_backend(&self) -> &'static str {
        self.method.loss_backend()
    }
}

impl StageModel for PretrainModel {
    fn batch_recipe(&self) -> BatchRecipe {
        self.views.clone()
    }

    fn forward_backward(&mut self, batch: &PreparedBatch) -> Result<StepResult, TrainError> {
        self.optimizer.zero_grad();
        self.epoch = batch.epoch;
        let loss = self.method.forward_backward(&self.model, batch)?;
        Ok(StepResult {
            loss,
            correct: None,
        })
    }

    fn update(&mut self, lr: f64, progress: f64) -> Result<(), TrainError> {
        if self.method.frozen(self.epoch) {
            let frozen = &self.method_trainable;
            self.optimizer.step_except(lr, |name| frozen.contains(name));
        } else {
            self.optimizer.step(lr);
        }
        self.method.after_step(progress)
    }

    fn data_parallel(&self) -> DataParallelTensors {
        let mut statistics = dist::running_statistics(&self.vs);
        statistics.extend(self.method.statistics());
        DataParallelTensors::new(&self.optimizer, statistics)
    }

    fn validate(&mut self) -> Result<Option<f64>, TrainError> {
        Ok(None)
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        let mut groups = vec![
            ("model", varstore_tensors(&self.vs)),
            ("optim", self.optimizer.state()),
        ];
        groups.extend(self.method.checkpoint_groups());
        groups
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        checkpoint.load_into("model", &mut self.vs)?;
        self.optimizer
            .load_state(checkpoint.group("optim").into_iter().collect())?;
        self.method.restore(checkpoint)
    }
}
