//! SwAV (Caron et al. 2020): online clustering with Sinkhorn–Knopp codes and swapped
//! prediction (`supcon_loss::swav_generic`), usually with multi-crop.
//!
//! The crops of each image — the global views, then the local crops of multi-crop — are
//! embedded by the online network (each resolution as its own forward pass) into `[B, S, D]`.
//! The prototypes `C [K, D]` are a bias-free linear layer trained with the network, frozen
//! (gradient cleared) during the first `freeze_prototypes_epochs` epochs and L2-normalized
//! after every step. The codes of the first two (global) crops are computed by Sinkhorn–Knopp
//! (ε, iterations), over the batch and, for small batches, a queue of earlier embeddings of
//! the same crops (`queue` per crop, from epoch `queue_start_epoch`, used once full, as in
//! SwAV's code); every other crop predicts each code.
//!
//! The queues are tensors on the training device. The loss runs where `pretrain.loss_backend`
//! says: `cpu` is `supcon_loss::swav_generic` on host copies; `tch` is
//! `supcon_loss::swav_loss_tensor` on the device (one process: its codes come
//! from the batch it sees).
//!
//! Across the ranks of a data-parallel run the codes must balance the prototypes over the
//! whole batch, as SwAV's `distributed_sinkhorn` does by all-reducing its sums: here every
//! rank gathers the assignment crops' embeddings of all ranks and runs Sinkhorn–Knopp on the
//! whole batch (the same codes, one all-gather instead of 2·iterations + 1 all-reduces); each
//! rank then computes the swapped prediction of its own images, and every rank's embeddings
//! join the (replicated) queue.

use crate::dist::{gather, gather_tensor_rows};
use supcon_loss::{swav_codes, swav_with_codes, LossOp, SwavInput, SwavOp, SwavOptions};
use supcon_models::SupConModel;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use super::{random_unit_rows, ContrastiveMethod, MethodContext};
use crate::checkpoint::Checkpoint;
use crate::error::TrainError;
use crate::loss_bridge::backward_scalar;
use crate::pipeline::data::PreparedBatch;
use crate::queue::KeyQueue;

/// The crops whose codes are computed (SwAV's `crops_for_assign`: the two global views).
const ASSIGNMENT_CROPS: usize = 2;
/// Checkpoint groups of the queues, one per assignment crop.
const QUEUE_GROUPS: [&str; ASSIGNMENT_CROPS] = ["swav_queue0", "swav_queue1"];

/// Prototypes, options and the queue.
pub struct Swav {
    comm: crate::dist::Comm,
    vs: VarStore,
    prototypes: Tensor,
    loss: SwavOp,
    /// Where the loss runs (`pretrain.loss_backend` on the run's device).
    backend: supcon_loss::Backend,
    freeze_epochs: u32,
    queue_start_epoch: u32,
    /// One queue per assignment crop (empty capacity: no queue).
    queues: Vec<KeyQueue>,
    device: Device,
    /// Embeddings of the assignment crops of the current step (`[B, dim]` each, every rank's
    /// images, on the device), queued after the step.
    pending: Option<Vec<Tensor>>,
}

/// The method's parts for the registry ([`super::parts`]).
pub(super) const PARTS: super::MethodParts = super::MethodParts {
    build,
    online_model: super::run_model,
    probe: super::image_probe,
    own_groups: &[],
};

pub(super) fn build(context: &MethodContext<'_>) -> Result<Box<dyn ContrastiveMethod>, TrainError> {
    let config = &context.config.pretrain;
    let settings = &config.swav;
    let dim = context.config.model.projection_dim as usize;
    super::cpu_loss_across_ranks(
        context,
        "SwAV's codes balance the prototypes over the gathered batch",
    )?;
    let vs = VarStore::new(context.device);
    // Random unit prototypes, as SwAV's normalized nn.Linear initialization.
    let initial = random_unit_rows(context.config.seed ^ 0x5a5a_0001, settings.prototypes, dim);
    let prototypes = vs.root().var_copy(
        "weight",
        &Tensor::from_slice(&initial).reshape([settings.prototypes as i64, dim as i64]),
    );
    Ok(Box::new(Swav {
        comm: context.comm.clone(),
        vs,
        prototypes,
        loss: SwavOp(
            SwavOptions::default()
                .with_temperature(config.temperature())
                .with_epsilon(settings.epsilon)
                .with_sinkhorn_iterations(settings.sinkhorn_iterations)
                .with_assignment_crops(ASSIGNMENT_CROPS),
        ),
        backend: super::loss_backend(context),
        freeze_epochs: settings.freeze_prototypes_epochs,
        queue_start_epoch: settings.queue_start_epoch,
        queues: (0..ASSIGNMENT_CROPS)
            .map(|_| KeyQueue::new(settings.queue, dim, context.device))
            .collect(),
        device: context.device,
        pending: None,
    }))
}

impl Swav {
    /// `[A, Q, D]` of the queues once they are full (SwAV waits for a full queue).
    fn full_queue(&self) -> Option<Tensor> {
        let full = self
            .queues
            .iter()
            .all(|q| q.capacity() > 0 && q.len() == q.capacity());
        full.then(|| {
            let keys: Vec<Tensor> = self.queues.iter().map(|q| q.keys().0).collect();
            Tensor::stack(&keys, 0)
        })
    }

    /// The assignment crops' embeddings of every rank's images, queued after the step (from
    /// `queue_start_epoch` on).
    fn queued_crops(
        &self,
        global: &Tensor,
        global_views: usize,
        batch: &PreparedBatch,
    ) -> Result<Option<Vec<Tensor>>, TrainError> {
        if batch.epoch < self.queue_start_epoch {
            return Ok(None);
        }
        let b = batch.labels.len() as i64;
        let dim = global.size()[1];
        let per_image = global.detach().view([b, global_views as i64, dim]);
        (0..ASSIGNMENT_CROPS)
            .map(|crop| {
                gather_tensor_rows(
                    &*self.comm,
                    &per_image.select(1, crop as i64),
                    "all-gather of the queued embeddings",
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The loss across ranks (the `cpu` backend, [`super::cpu_loss_across_ranks`]): the codes
    /// from every rank's assignment crops (SwAV's `distributed_sinkhorn`, one all-gather), this
    /// rank's images' loss against them, and its share of the whole batch's mean
    /// back-propagated into `features` (`[B, S, D]`, this rank's) and the prototypes; returns
    /// the whole batch's loss.
    fn backward_across_ranks(
        &self,
        features: &Tensor,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        use supcon_loss::libtorch::{host_rows, surrogate_from_host};
        let comm = &*self.comm;
        let crops = host_rows::<ndarray::Ix3>(features, "SwAV crops rank", "[B, S, D]")?;
        let prototypes = host_rows::<ndarray::Ix2>(&self.prototypes, "prototypes rank", "[K, D]")?;
        let queue = self
            .full_queue()
            .map(|q| host_rows::<ndarray::Ix3>(&q, "SwAV queue rank", "[A, Q, D]"))
            .transpose()?;
        let (images, _, dim) = crops.dim();
        let assigned: Vec<f32> = crops
            .slice(ndarray::s![.., ..ASSIGNMENT_CROPS, ..])
            .iter()
            .copied()
            .collect();
        let all = gather(comm, &assigned, "all-gather of the assignment crops")?;
        let mut whole = SwavInput::new(
            super::views_view(
                &all,
                all.len() / (ASSIGNMENT_CROPS * dim),
                ASSIGNMENT_CROPS,
                dim,
            )?,
            prototypes.view(),
        );
        if let Some(queue) = &queue {
            whole = whole.with_queue(queue.view());
        }
        let codes = swav_codes(&whole, &self.loss.0)?;
        let offset = batch.global.offset;
        let out = swav_with_codes(
            &SwavInput::new(crops.view(), prototypes.view()),
            codes.slice(ndarray::s![.., offset..offset + images, ..]),
            &self.loss.0,
        )?;
        let loss = surrogate_from_host(
            out.loss,
            &[
                (features, out.grad_features.view().into_dyn()),
                (&self.prototypes, out.grad_prototypes.view().into_dyn()),
            ],
        )?;
        // This rank's share of the whole batch's mean; the ranks' shares add up. The collective
        // first, as every rank reaches it.
        let share = batch.share();
        let total = crate::dist::total(comm, out.loss * share)?;
        backward_scalar(&loss, share)?;
        Ok(total)
    }
}

impl ContrastiveMethod for Swav {
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        let b = batch.labels.len();
        let global = online.forward_t(&batch.tensor(self.device), true);
        let local = batch
            .local
            .as_ref()
            .map(|crops| online.forward_t(&crops.tensor(self.device), true));
        let dim = global.size()[1];
        let global_views = global.size()[0] as usize / b.max(1);
        // [B, S, D]: each image's global crops, then its local crops.
        let mut crops = vec![global.view([b as i64, global_views as i64, dim])];
        if let Some(local) = &local {
            crops.push(local.view([b as i64, -1, dim]));
        }
        let features = Tensor::cat(&crops, 1);
        let loss = if self.comm.world_size() == 1 {
            let queue = self.full_queue();
            let loss = self
                .loss
                .autograd(&(&features, &self.prototypes, queue.as_ref()), self.backend)?;
            backward_scalar(&loss, 1.0)?
        } else {
            self.backward_across_ranks(&features, batch)?
        };
        self.pending = self.queued_crops(&global, global_views, batch)?;
        Ok(loss)
    }

    fn trainable(&self) -> Vec<(String, Tensor)> {
        vec![("prototypes.weight".into(), self.prototypes.shallow_clone())]
    }

    fn frozen(&self, epoch: u32) -> bool {
        epoch < self.freeze_epochs
    }

    fn after_step(&mut self, _progress: f64) -> Result<(), TrainError> {
        tch::no_grad(|| {
            let norm = self
                .prototypes
                .norm_scalaropt_dim(2, [1], true)
                .clamp_min(1e-12);
            let normalized = &self.prototypes / norm;
            self.prototypes.copy_(&normalized);
        });
        if let Some(crops) = self.pending.take() {
            for (queue, rows) in self.queues.iter_mut().zip(crops) {
                queue.push(&rows, &vec![0; rows.size()[0] as usize])?;
            }
        }
        Ok(())
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        let mut groups = vec![(
            "prototypes",
            vec![("weight".to_string(), self.prototypes.shallow_clone())],
        )];
        if self.queues.iter().any(|q| q.capacity() > 0) {
            for (index, queue) in self.queues.iter().enumerate() {
                groups.push((QUEUE_GROUPS[index], queue.to_tensors()));
            }
        }
        groups
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        checkpoint.load_into("prototypes", &mut self.vs)?;
        if self.queues.iter().any(|q| q.capacity() > 0) {
            for (index, queue) in self.queues.iter_mut().enumerate() {
                queue.load_tensors(&checkpoint.group(QUEUE_GROUPS[index]))?;
            }
        }
        Ok(())
    }

    fn loss_backend(&self) -> &'static str {
        self.backend.name()
    }
}
