//! SupCon and SimCLR: end-to-end in-batch contrast of every view against every other (local
//! crops of multi-crop included), with the
//! optional label-aware momentum queue of SupCon's memory-efficient setting (Khosla et al.
//! 2020, §4: a memory of keys from a momentum encoder).
//!
//! The projections of all views of the batch, `[batch, views, dim]`, go to the configured
//! loss backend through the [`LossBridge`]. With `pretrain.queue = K > 0` a momentum encoder
//! (an EMA of the online network) computes keys of the same views; after each step they join a
//! FIFO queue of K keys that the loss sees as extra contrast rows, positives where their label
//! matches the anchor's. SimCLR has no labels: with a queue the image index serves as the
//! label, so a key of the same image from an earlier step is a positive.
//!
//! Across the ranks of a data-parallel run, the projections of every rank are gathered so that
//! positives and negatives span the global batch (`supcon_loss::distributed`), and every
//! rank's keys join the (replicated) queue in the global batch's order: the run computes what
//! one process computes on the global batch.

use crate::dist::{gather, gather_tensor_rows};
use tch::Tensor;

use super::momentum::MomentumEncoder;
use super::{ContrastiveMethod, MethodContext};
use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::config::Method;
use crate::error::TrainError;
use crate::loss_bridge::LossBridge;
use crate::pipeline::data::PreparedBatch;
use crate::queue::KeyQueue;
use supcon_models::SupConModel;
use tch::nn::ModuleT;

/// The momentum encoder and its queue.
struct LabelQueue {
    encoder: MomentumEncoder,
    queue: KeyQueue,
    /// Keys (on the device) and labels of the current batch, pushed after the optimizer step.
    pending: Option<(Tensor, Vec<i64>)>,
}

/// SupCon or SimCLR.
pub struct InBatch {
    bridge: LossBridge,
    comm: crate::dist::Comm,
    supervised: bool,
    views: usize,
    device: tch::Device,
    queue: Option<LabelQueue>,
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
    super::cpu_loss_across_ranks(
        context,
        "each rank computes its own anchors against the gathered batch",
    )?;
    let queue = if pretrain.queue > 0 {
        Some(LabelQueue {
            encoder: MomentumEncoder::new(
                context.online,
                &context.config.model,
                pretrain.queue_momentum,
                context.device,
            )?,
            queue: KeyQueue::new(
                pretrain.queue,
                context.config.model.projection_dim as usize,
                context.device,
            ),
            pending: None,
        })
    } else {
        None
    };
    Ok(Box::new(InBatch {
        bridge: LossBridge::for_pretrain(pretrain, context.device)?,
        comm: context.comm.clone(),
        supervised: pretrain.method == Method::Supcon,
        views: pretrain.views,
        device: context.device,
        queue,
    }))
}

impl ContrastiveMethod for InBatch {
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        let images = batch.tensor(self.device);
        let n = batch.labels.len();
        let projections = online.forward_t(&images, true);
        // Multi-crop: each resolution is its own forward pass; the loss sees every crop of an
        // image as one more view, `[batch, views + local views, dim]`.
        let (projections, views) = match &batch.local {
            None => (projections, self.views),
            Some(local) => {
                let local_views = local.shape[0] / n;
                let dim = projections.size()[1];
                let local = online.forward_t(&local.tensor(self.device), true);
                let all = Tensor::cat(
                    &[
                        projections.view([n as i64, self.views as i64, dim]),
                        local.view([n as i64, local_views as i64, dim]),
                    ],
                    1,
                )
                .view([(n * (self.views + local_views)) as i64, dim]);
                (all, self.views + local_views)
            }
        };
        // SimCLR: each image is its own class. With a queue the keys need labels, so the image
        // index serves as the label (a key of the same image from an earlier step is a positive).
        let instance_labels: Vec<i64> = batch.indices.iter().map(|&i| i as i64).collect();
        let labels: Option<&[i64]> = match (self.supervised, &self.queue) {
            (true, _) => Some(&batch.labels),
            (false, Some(_)) => Some(&instance_labels),
            (false, None) => None,
        };
        let comm = &*self.comm;
        let Some(state) = &mut self.queue else {
            let value = self
                .bridge
                .backward_across(comm, &projections, n, views, labels, None)?;
            return Ok(value.loss);
        };
        // Keys of the global views (the queue holds those); they stay on the device.
        let keys = state.encoder.keys(&images);
        let key_labels: Vec<i64> = labels
            .unwrap_or(&instance_labels)
            .iter()
            .flat_map(|&l| std::iter::repeat_n(l, self.views))
            .collect();
        let queue = (!state.queue.is_empty()).then(|| state.queue.keys());
        let value = self.bridge.backward_across(
            comm,
            &projections,
            n,
            views,
            labels,
            queue.as_ref().map(|(keys, labels)| (keys, *labels)),
        )?;
        // Every rank's keys, in the global batch's order.
        let keys = gather_tensor_rows(comm, &keys, "all-gather of the queue keys")?;
        let key_labels = gather(comm, &key_labels, "all-gather of the queue labels")?;
        state.pending = Some((keys, key_labels));
        Ok(value.loss)
    }

    fn after_step(&mut self, progress: f64) -> Result<(), TrainError> {
        if let Some(state) = &mut self.queue {
            state.encoder.update(progress);
            if let Some((keys, labels)) = state.pending.take() {
                state.queue.push(&keys, &labels)?;
            }
        }
        Ok(())
    }

    fn statistics(&self) -> Vec<Tensor> {
        self.queue
            .as_ref()
            .map(|state| crate::dist::running_statistics(&state.encoder.vs))
            .unwrap_or_default()
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        match &self.queue {
            Some(state) => vec![
                ("ema", varstore_tensors(&state.encoder.vs)),
                ("queue", state.queue.to_tensors()),
            ],
            None => Vec::new(),
        }
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        if let Some(state) = &mut self.queue {
            checkpoint.load_into("ema", &mut state.encoder.vs)?;
            state.queue.load_tensors(&checkpoint.group("queue"))?;
        }
        Ok(())
    }

    fn loss_backend(&self) -> &'static str {
        self.bridge.backend_name()
    }
}
