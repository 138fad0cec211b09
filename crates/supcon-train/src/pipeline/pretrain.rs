//! Stage 1: contrastive pre-training of encoder + projection head (SupCon or SimCLR), with the
//! optional momentum encoder and key queue.

use supcon_augment::Augmenter;
use supcon_data::Dataset;
use supcon_models::SupConModel;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::config::{Method, RunConfig};
use crate::error::TrainError;
use crate::loss_bridge::{to_host, LossBridge};
use crate::optim::Optimizer;
use crate::pipeline::data::{augment_pipeline, prepare_batch, PreparedBatch};
use crate::pipeline::runner::{StageModel, StepResult};
use crate::queue::KeyQueue;

/// The momentum encoder: an EMA copy of encoder + head whose outputs fill the queue.
struct MomentumEncoder {
    vs: VarStore,
    model: SupConModel,
    /// (EMA variable, online variable) pairs, sorted by name.
    pairs: Vec<(Tensor, Tensor)>,
    momentum: f64,
    queue: KeyQueue,
    /// Keys and labels of the current batch, pushed after the optimizer step.
    pending: Option<(Vec<f32>, Vec<i64>)>,
}

impl MomentumEncoder {
    fn new(online: &VarStore, config: &RunConfig, device: Device) -> Result<Self, TrainError> {
        let mut vs = VarStore::new(device);
        let model = SupConModel::new(&vs.root(), &config.model)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        vs.copy(online)?;
        vs.freeze();
        let ema = vs.variables();
        let mut names: Vec<String> = ema.keys().cloned().collect();
        names.sort();
        let online_vars = online.variables();
        let pairs = names
            .iter()
            .map(|n| (ema[n].shallow_clone(), online_vars[n].shallow_clone()))
            .collect();
        Ok(Self {
            vs,
            model,
            pairs,
            momentum: config.pretrain.queue_momentum,
            queue: KeyQueue::new(config.pretrain.queue, config.model.projection_dim as usize),
            pending: None,
        })
    }

    /// `ema ← m·ema + (1 − m)·online` for every floating-point variable, BatchNorm statistics
    /// included.
    fn update(&mut self) {
        let m = self.momentum;
        tch::no_grad(|| {
            for (ema, online) in &mut self.pairs {
                if ema.is_floating_point() {
                    let _ = ema.g_mul_scalar_(m).g_add_(&(online.detach() * (1.0 - m)));
                } else {
                    // Counters (BatchNorm's num_batches_tracked) are copied, not averaged.
                    ema.copy_(online);
                }
            }
        });
    }
}

/// Encoder + head, optimizer, loss and (optionally) the momentum encoder.
pub struct PretrainModel {
    pub vs: VarStore,
    pub model: SupConModel,
    optimizer: Optimizer,
    bridge: LossBridge,
    augmenter: Augmenter,
    views: usize,
    method: Method,
    device: Device,
    momentum: Option<MomentumEncoder>,
}

impl PretrainModel {
    /// A freshly initialised model (libtorch's generator seeded with the run's seed).
    pub fn new(
        config: &RunConfig,
        device: Device,
        image_size: usize,
        mean: &[f32],
        std: &[f32],
    ) -> Result<Self, TrainError> {
        tch::manual_seed(config.seed as i64);
        let vs = VarStore::new(device);
        let model = SupConModel::new(&vs.root(), &config.model)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        let optimizer = Optimizer::new(&config.pretrain.optim, varstore_tensors(&vs));
        let bridge = LossBridge::for_pretrain(&config.pretrain, device)?;
        let pipeline = augment_pipeline(&config.pretrain.augment, image_size, mean, std)?;
        let augmenter = Augmenter::new(pipeline, config.seed ^ 0x5eed_0001);
        let momentum = if config.pretrain.queue > 0 {
            Some(MomentumEncoder::new(&vs, config, device)?)
        } else {
            None
        };
        Ok(Self {
            vs,
            model,
            optimizer,
            bridge,
            augmenter,
            views: config.pretrain.views,
            method: config.pretrain.method,
            device,
            momentum,
        })
    }

    /// The loss backend's name.
    pub fn loss_backend(&self) -> &'static str {
        self.bridge.backend_name()
    }
}

impl StageModel for PretrainModel {
    fn prepare(
        &self,
        dataset: &Dataset,
        indices: &[usize],
        epoch: u32,
    ) -> Result<PreparedBatch, TrainError> {
        prepare_batch(&self.augmenter, dataset, indices, epoch, self.views)
    }

    fn forward_backward(&mut self, batch: &PreparedBatch) -> Result<StepResult, TrainError> {
        let images = batch.tensor(self.device);
        let n = batch.labels.len();
        self.optimizer.zero_grad();
        let projections = self.model.forward_t(&images, true);
        // SimCLR: each image is its own class. With a queue the keys need labels, so the image
        // index serves as the label (a key of the same image from an earlier step is a positive).
        let instance_labels: Vec<i64> = batch.indices.iter().map(|&i| i as i64).collect();
        let labels: Option<&[i64]> = match (self.method, &self.momentum) {
            (Method::Supcon, _) => Some(&batch.labels),
            (Method::Simclr, Some(_)) => Some(&instance_labels),
            (Method::Simclr, None) => None,
        };
        let value = match &mut self.momentum {
            Some(momentum) => {
                let keys = tch::no_grad(|| momentum.model.forward_t(&images, true));
                let (keys, _) = to_host(&keys, n, self.views)?;
                let key_labels: Vec<i64> = labels
                    .expect("queue runs always have labels")
                    .iter()
                    .flat_map(|&l| std::iter::repeat_n(l, self.views))
                    .collect();
                let queue = (!momentum.queue.is_empty()).then(|| momentum.queue.view());
                let value = self
                    .bridge
                    .backward(&projections, n, self.views, labels, queue)?;
                momentum.pending = Some((keys, key_labels));
                value
            }
            None => self
                .bridge
                .backward(&projections, n, self.views, labels, None)?,
        };
        Ok(StepResult {
            loss: value.loss,
            correct: None,
        })
    }

    fn update(&mut self, lr: f64) -> Result<(), TrainError> {
        self.optimizer.step(lr);
        if let Some(momentum) = &mut self.momentum {
            momentum.update();
            if let Some((keys, labels)) = momentum.pending.take() {
                momentum.queue.push(&keys, &labels)?;
            }
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<Option<f64>, TrainError> {
        Ok(None)
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        let mut groups = vec![
            ("model", varstore_tensors(&self.vs)),
            ("optim", self.optimizer.state()),
        ];
        if let Some(momentum) = &self.momentum {
            groups.push(("ema", varstore_tensors(&momentum.vs)));
            groups.push(("queue", momentum.queue.to_tensors()));
        }
        groups
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        checkpoint.load_into("model", &mut self.vs)?;
        self.optimizer
            .load_state(checkpoint.group("optim").into_iter().collect())?;
        if let Some(momentum) = &mut self.momentum {
            checkpoint.load_into("ema", &mut momentum.vs)?;
            momentum.queue.load_tensors(&checkpoint.group("queue"))?;
        }
        Ok(())
    }
}
