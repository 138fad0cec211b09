//! InvSpread (Ye et al. 2019): instance discrimination inside the batch with one encoder and no
//! memory bank — each image's two views are each other's positive, every other row of the batch
//! a negative, with a binary term that spreads the other instances (`supcon_loss::invspread`'s
//! math).
//!
//! The projections `[batch·2, dim]` (batch-major, the augmentation writer's order) are the
//! loss's `[batch, 2, dim]` without a copy. Across the ranks of a data-parallel run the negatives
//! must span the global batch: every rank's projections are gathered, this rank's still in the
//! graph, so each rank back-propagates its own rows' share of the whole batch's loss.

use supcon_loss::{InvSpreadOp, InvSpreadOptions, LossOp};
use supcon_models::SupConModel;
use tch::nn::ModuleT;
use tch::Tensor;

use super::{ContrastiveMethod, MethodContext};
use crate::checkpoint::Checkpoint;
use crate::dist::whole_batch_rows;
use crate::error::TrainError;
use crate::loss_bridge::backward_scalar;
use crate::pipeline::data::PreparedBatch;

/// InvSpread: the online network alone, no state of its own.
pub struct InvSpread {
    comm: crate::dist::Comm,
    loss: InvSpreadOp,
    /// Where the loss runs (`pretrain.loss_backend` on the run's device).
    backend: supcon_loss::Backend,
    device: tch::Device,
}

/// The method's parts for the registry ([`super::parts`]).
pub(super) const PARTS: super::MethodParts = super::MethodParts {
    build,
    online_model: super::run_model,
    probe: super::image_probe,
    own_groups: &[],
};

pub(super) fn build(context: &MethodContext<'_>) -> Result<Box<dyn ContrastiveMethod>, TrainError> {
    super::cpu_loss_across_ranks(context, "its negatives are every rank's rows")?;
    // The model's projections are L2-normalized already.
    let options =
        InvSpreadOptions::new(context.config.pretrain.temperature()).with_normalize(false);
    Ok(Box::new(InvSpread {
        comm: context.comm.clone(),
        loss: InvSpreadOp(options),
        backend: super::loss_backend(context),
        device: context.device,
    }))
}

impl ContrastiveMethod for InvSpread {
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        let projections = online.forward_t(&batch.tensor(self.device), true);
        let (images, dim) = (batch.labels.len() as i64, projections.size()[1]);
        // [B, 2·D]: an image's two views side by side, so that a rank's images are rows.
        let rows = projections.view([images, 2 * dim]);
        let whole = whole_batch_rows(
            &*self.comm,
            &rows,
            batch.global.offset,
            "all-gather of InvSpread's projections",
        )?;
        let loss = self
            .loss
            .autograd(&&whole.view([-1, 2, dim]), self.backend)?;
        backward_scalar(&loss, 1.0)
    }

    fn after_step(&mut self, _progress: f64) -> Result<(), TrainError> {
        Ok(())
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        Vec::new()
    }

    fn restore(&mut self, _checkpoint: &Checkpoint) -> Result<(), TrainError> {
        Ok(())
    }

    fn loss_backend(&self) -> &'static str {
        self.backend.name()
    }
}
