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
//! `supcon_loss::tch_backend::swav_loss_tensor` on the device (one process: its codes come
//! from the batch it sees).
//!
//! Across the ranks of a data-parallel run the codes must balance the prototypes over the
//! whole batch, as SwAV's `distributed_sinkhorn` does by all-reducing its sums: here every
//! rank gathers the assignment crops' embeddings of all ranks and runs Sinkhorn–Knopp on the
//! whole batch (the same codes, one all-gather instead of 2·iterations + 1 all-reduces); each
//! rank then computes the swapped prediction of its own images, and every rank's embeddings
//! join the (replicated) queue.

use crate::dist::{gather, gather_tensor_rows};
use supcon_loss::{swav_codes, swav_with_codes, Backend, LossOp, SwavInput, SwavOp, SwavOptions};
use supcon_models::SupConModel;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use super::{host_rows, random_unit_rows, ContrastiveMethod, MethodContext};
use crate::checkpoint::Checkpoint;
use crate::config::LossBackendKind;
use crate::error::TrainError;
use crate::loss_bridge::{backward_from_host_all, backward_scalar};
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
    loss_backend: LossBackendKind,
    freeze_epochs: u32,
    queue_start_epoch: u32,
    /// One queue per assignment crop (empty capacity: no queue).
    queues: Vec<KeyQueue>,
    device: Device,
    /// Embeddings of the assignment crops of the current step (`[B, dim]` each, every rank's
    /// images, on the device), queued after the step.
    pending: Option<Vec<Tensor>>,
}

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
        loss_backend: config.loss_backend,
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
        if self.loss_backend == LossBackendKind::Tch {
            // [B, S, D] on the device: each image's global crops, then its local crops.
            let mut crops = vec![global.view([b as i64, global_views as i64, dim])];
            if let Some(local) = &local {
                crops.push(local.view([b as i64, -1, dim]));
            }
            let features = Tensor::cat(&crops, 1);
            let queue = self.full_queue();
            let loss = self
                .loss
                .tensor_fwd(&(&features, &self.prototypes, queue.as_ref()))?;
            let value = backward_scalar(&loss, 1.0)?;
            self.pending = self.queued_crops(&global, global_views, batch)?;
            return Ok(value);
        }
        let (global_rows, _, dim) = host_rows(&global)?;
        let (local_rows, local_views) = match &local {
            Some(local) => {
                let (rows, _, _) = host_rows(local)?;
                let views = rows.len() / (b * dim);
                (rows, views)
            }
            None => (Vec::new(), 0),
        };
        let crops = global_views + local_views;
        // [B, S, D]: each image's global crops, then its local crops.
        let mut features = Vec::with_capacity(b * crops * dim);
        for image in 0..b {
            features.extend_from_slice(
                &global_rows[image * global_views * dim..][..global_views * dim],
            );
            features
                .extend_from_slice(&local_rows[image * local_views * dim..][..local_views * dim]);
        }
        let (prototypes, k, _) = host_rows(&self.prototypes)?;
        let queue = self
            .full_queue()
            .map(|q| host_rows(&q.view([-1, dim as i64])))
            .transpose()?
            .map(|(values, _, _)| values);
        let features_view = super::views_view(&features, b, crops, dim)?;
        let prototypes_view = super::rows_view(&prototypes, k, dim)?;
        let mut input = SwavInput::new(features_view, prototypes_view);
        let queue_view = match &queue {
            Some(values) => Some(
                ndarray::ArrayView3::from_shape(
                    (
                        ASSIGNMENT_CROPS,
                        values.len() / (ASSIGNMENT_CROPS * dim),
                        dim,
                    ),
                    values,
                )
                .map_err(|e| TrainError::Shape(format!("SwAV queue: {e}")))?,
            ),
            None => None,
        };
        if let Some(q) = queue_view {
            input = input.with_queue(q);
        }
        let comm = &*self.comm;
        let out = if comm.world_size() == 1 {
            self.loss.run(Backend::Cpu, &input)?
        } else {
            // The codes of the whole batch, from every rank's assignment crops.
            let assigned: Vec<f32> = features
                .chunks_exact(crops * dim)
                .flat_map(|image| image[..ASSIGNMENT_CROPS * dim].iter().copied())
                .collect();
            let all = gather(comm, &assigned, "all-gather of the assignment crops")?;
            let images = all.len() / (ASSIGNMENT_CROPS * dim);
            let mut whole = SwavInput::new(
                super::views_view(&all, images, ASSIGNMENT_CROPS, dim)?,
                prototypes_view,
            );
            if let Some(q) = queue_view {
                whole = whole.with_queue(q);
            }
            let codes = swav_codes(&whole, &self.loss.0)?;
            let offset = batch.global.offset;
            let own = codes.slice(ndarray::s![.., offset..offset + b, ..]);
            let mut out = swav_with_codes(
                &SwavInput::new(features_view, prototypes_view),
                own,
                &self.loss.0,
            )?;
            // This rank's share of the whole batch's mean; the ranks' shares add up.
            let share = batch.share();
            out.grad_features.mapv_inplace(|g| g * share as f32);
            out.grad_prototypes.mapv_inplace(|g| g * share as f32);
            out.loss = crate::dist::total(comm, out.loss * share)?;
            out
        };
        // Split ∂L/∂features back into the global and local outputs' row order.
        let mut global_grad = Vec::with_capacity(global_rows.len());
        let mut local_grad = Vec::with_capacity(local_rows.len());
        for image in out.grad_features.outer_iter() {
            for (crop, row) in image.outer_iter().enumerate() {
                let target = if crop < global_views {
                    &mut global_grad
                } else {
                    &mut local_grad
                };
                target.extend(row.iter().copied());
            }
        }
        let prototype_grad = out
            .grad_prototypes
            .as_slice()
            .ok_or_else(|| TrainError::Shape("SwAV prototype gradient layout".into()))?;
        // One backward pass over every output of the step.
        let mut outputs = vec![(&global, global_grad.as_slice())];
        if let Some(local) = &local {
            outputs.push((local, local_grad.as_slice()));
        }
        outputs.push((&self.prototypes, prototype_grad));
        backward_from_host_all(&outputs)?;
        self.pending = self.queued_crops(&global, global_views, batch)?;
        Ok(out.loss)
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
        self.loss_backend.as_str()
    }
}
