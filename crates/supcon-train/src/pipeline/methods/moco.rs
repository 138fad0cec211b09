//! MoCo v1 / v2 (He et al. 2020; Chen et al. 2020): a query encoder (the online network), a
//! momentum key encoder, and a FIFO queue of keys as negatives; the loss is InfoNCE
//! (`supcon_loss::infonce_loss`) with the positive of each query being its own image's key
//! from the other view.
//!
//! Per step, with views `x₀, x₁` of each image: `q = f_q(x₀)`, `k = f_k(x₁)` (no gradient,
//! shuffled BatchNorm, see [`MomentumEncoder::keys_shuffled`]), loss `InfoNCE(q, k, queue)`;
//! after the optimizer step `f_k ← m·f_k + (1 − m)·f_q` and `k` enters the queue. With
//! `symmetric` both directions are used (`q₀` against `k₁` and `q₁` against `k₀`, each half
//! of the loss) and both keys enter the queue. The queue starts as random unit vectors, as in
//! MoCo's code.
//!
//! v1 and v2 differ in their published settings: v1 has a linear head and τ = 0.07; v2 an MLP
//! head, τ = 0.2, blur in the augmentation and a cosine schedule. `version` chooses the default
//! τ; the head and augmentation come from the config (presets `quick-cpu-moco-v1`/`-v2`).
//!
//! The loss runs where `pretrain.loss_backend` says: `cpu` is `supcon_loss::infonce_loss` on
//! host copies of the queries, keys and queue; `tch` is `supcon_loss::
//! infonce_loss_tensor` (through `InfoNceOp::tensor_fwd`) on the training device, where the keys
//! and the queue stay.
//!
//! Across the ranks of a data-parallel run, MoCo's own design: the key images of every rank
//! are gathered and shuffled, each rank computes the keys of its share of the shuffled batch
//! (so BatchNorm statistics mix images of all ranks), the keys are gathered back, every rank
//! enqueues all of them, and each rank's queries meet their own keys. The result is what one
//! process computes with `shuffle_groups` groups.

use supcon_loss::{InfoNceOp, InfoNceOptions, LossOp};
use supcon_models::SupConModel;
use tch::nn::ModuleT;
use tch::{Device, Tensor};

use super::momentum::{MomentumEncoder, MomentumSchedule};
use super::{batch_seed, random_unit_rows, select_view, ContrastiveMethod, MethodContext};
use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::error::TrainError;
use crate::loss_bridge::backward_scalar;
use crate::pipeline::data::PreparedBatch;
use crate::queue::KeyQueue;

/// Query encoder's loss against the momentum keys and the queue.
pub struct Moco {
    comm: crate::dist::Comm,
    key_encoder: MomentumEncoder,
    queue: KeyQueue,
    loss: InfoNceOp,
    /// Where the loss runs (`pretrain.loss_backend` on the run's device).
    backend: supcon_loss::Backend,
    symmetric: bool,
    shuffle_groups: usize,
    seed: u64,
    device: Device,
    /// Keys of the current step (on the device), enqueued after the optimizer step.
    pending: Option<Tensor>,
}

/// The method's parts for the registry ([`super::parts`]).
pub(super) const PARTS: super::MethodParts = super::MethodParts {
    build,
    online_model: super::run_model,
    probe: super::image_probe,
    own_groups: &[],
};

pub(super) fn build(context: &MethodContext<'_>) -> Result<Box<dyn ContrastiveMethod>, TrainError> {
    let pretrain = &context.config.pretrain;
    let moco = &pretrain.moco;
    let dim = context.config.model.projection_dim as usize;
    let mut queue = KeyQueue::new(moco.queue, dim, context.device);
    // MoCo starts from a queue of random unit vectors (`normalize(randn(dim, K))`).
    let keys = random_unit_rows(context.config.seed ^ 0x40c0_0001, moco.queue, dim);
    queue.push(
        &Tensor::from_slice(&keys).view([moco.queue as i64, dim as i64]),
        &vec![0; moco.queue],
    )?;
    Ok(Box::new(Moco {
        comm: context.comm.clone(),
        key_encoder: MomentumEncoder::new(
            context.online,
            &context.config.model,
            MomentumSchedule {
                start: moco.momentum,
                end: moco.momentum_final.unwrap_or(moco.momentum),
            },
            context.device,
        )?,
        queue,
        loss: InfoNceOp(InfoNceOptions::new(pretrain.temperature())),
        backend: super::loss_backend(context),
        symmetric: moco.symmetric,
        shuffle_groups: moco.shuffle_groups,
        seed: context.config.seed,
        device: context.device,
        pending: None,
    }))
}

impl Moco {
    /// InfoNCE of the queries `online(query_images)` against `keys` and the queue, scaled by
    /// `weight`, back-propagated; returns the weighted loss.
    fn direction(
        &self,
        online: &SupConModel,
        query_images: &Tensor,
        keys: &Tensor,
        weight: f64,
    ) -> Result<f64, TrainError> {
        let queries = online.forward_t(query_images, true);
        let (queue, _) = self.queue.keys();
        let loss = self
            .loss
            .autograd(&(&queries, keys, &queue), self.backend)?;
        backward_scalar(&loss, weight)
    }
}

impl ContrastiveMethod for Moco {
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        let images = batch.tensor(self.device);
        let (first, second) = (select_view(&images, 2, 0), select_view(&images, 2, 1));
        let seed = batch_seed(self.seed, batch);
        let comm = &*self.comm;
        // Keys of the whole batch (every rank's images); this rank's queries meet their own.
        let keys = |images: &Tensor, seed: u64| {
            self.key_encoder
                .keys_shuffled_across(comm, images, self.shuffle_groups, seed)
        };
        let own =
            |keys: &Tensor| keys.narrow(0, batch.global.offset as i64, batch.indices.len() as i64);
        // This rank's share of the whole batch's mean.
        let share = batch.share();
        let k1 = keys(&second, seed)?;
        let (loss, pending) = if !self.symmetric {
            let loss = self.direction(online, &first, &own(&k1), share)?;
            (loss, k1)
        } else {
            let k0 = keys(&first, seed ^ 0x5bd1_e995)?;
            let loss = self.direction(online, &first, &own(&k1), 0.5 * share)?
                + self.direction(online, &second, &own(&k0), 0.5 * share)?;
            (loss, Tensor::cat(&[k1, k0], 0))
        };
        self.pending = Some(pending);
        crate::dist::total(comm, loss)
    }

    fn after_step(&mut self, progress: f64) -> Result<(), TrainError> {
        self.key_encoder.update(progress);
        if let Some(keys) = self.pending.take() {
            self.queue.push(&keys, &vec![0; keys.size()[0] as usize])?;
        }
        Ok(())
    }

    fn statistics(&self) -> Vec<Tensor> {
        crate::dist::running_statistics(&self.key_encoder.vs)
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        vec![
            ("ema", varstore_tensors(&self.key_encoder.vs)),
            ("queue", self.queue.to_tensors()),
        ]
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        checkpoint.load_into("ema", &mut self.key_encoder.vs)?;
        self.queue.load_tensors(&checkpoint.group("queue"))
    }

    fn loss_backend(&self) -> &'static str {
        self.backend.name()
    }
}
