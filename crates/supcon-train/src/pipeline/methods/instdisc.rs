//! InstDisc (Wu et al. 2018): instance discrimination with a memory bank and NCE
//! (`supcon_loss::nce_loss`).
//!
//! The bank holds one L2-normalized vector per training image (N × dim, random unit vectors at
//! first). Each step the online network embeds one view of each image (`v`); the image's own
//! bank entry is its positive and `m` entries drawn uniformly from the bank (noise
//! distribution `P_n = 1/N`) are its negatives; the loss is NCE with temperature τ and the
//! partition constant Z, estimated on the first batch (N × the mean of `e^{v·v_j/τ}`) and then
//! kept fixed, as in InstDisc, or moved after every step towards the batch's estimate Ẑ,
//! `Z ← μ·Z + (1 − μ)·Ẑ` (`partition_momentum` μ < 1; the first estimate is made on a bank of
//! random vectors and stays low once the bank holds learned embeddings). Z is saved with the
//! bank, so a resumed run keeps it. After the optimizer step the entries of the batch move
//! towards the new embeddings:
//! `v̄_i ← normalize(β·v̄_i + (1 − β)·v_i)` with β = 0.5. Draws come from the run's seed,
//! the epoch and the batch (see [`super::batch_seed`]), so a resumed run draws the same ones.
//!
//! The bank is a tensor on the training device. The loss runs where `pretrain.loss_backend`
//! says: `cpu` is `supcon_loss::nce_loss` on host copies of the queries and of the bank rows
//! the step reads; `tch` is `supcon_loss::nce_loss_tensor` on the device.
//!
//! Across the ranks of a data-parallel run the bank is replicated: each rank draws the
//! negatives of the whole batch from the same seed and keeps its own images' share, Z is
//! estimated from the first batch of every rank together, and every rank writes the gathered
//! embeddings of the whole batch into its bank, so the banks stay identical and equal to the
//! bank of one process.

use crate::dist::{gather, gather_tensor_rows};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_loss::{LossOp, NceOp, NceOptions};
use supcon_models::SupConModel;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use super::{batch_seed, random_unit_rows, ContrastiveMethod, MethodContext};
use crate::checkpoint::Checkpoint;
use crate::error::TrainError;
use crate::loss_bridge::backward_scalar;
use crate::pipeline::data::PreparedBatch;

/// The memory bank and the NCE loss.
pub struct InstDisc {
    comm: crate::dist::Comm,
    /// `[N, dim]` f32 unit rows on the training device.
    bank: Tensor,
    dim: usize,
    loss: NceOp,
    /// Where the loss runs (`pretrain.loss_backend` on the run's device).
    backend: supcon_loss::Backend,
    negatives: usize,
    bank_momentum: f32,
    /// μ of Z's running average; 1: Z fixed after the first batch.
    partition_momentum: f64,
    seed: u64,
    device: Device,
    /// Image indices and embeddings (`[B, dim]`, on the device) of the current step's whole
    /// batch, written to the bank after the step.
    pending: Option<(Tensor, Tensor)>,
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
    let settings = &pretrain.instdisc;
    let dim = context.config.model.projection_dim as usize;
    let n = context.dataset_size;
    Ok(Box::new(InstDisc {
        comm: context.comm.clone(),
        bank: Tensor::from_slice(&random_unit_rows(context.config.seed ^ 0x1d15_0001, n, dim))
            .view([n as i64, dim as i64])
            .to_device(context.device),
        dim,
        loss: NceOp(
            NceOptions::new(pretrain.temperature())
                .with_dataset_size(n)
                .with_partition(settings.partition)
                .with_proximal(settings.proximal),
        ),
        backend: super::loss_backend(context),
        negatives: settings.negatives,
        bank_momentum: settings.bank_momentum as f32,
        partition_momentum: settings.partition_momentum,
        seed: context.config.seed,
        device: context.device,
        pending: None,
    }))
}

impl InstDisc {
    /// Entries in the bank.
    fn len(&self) -> usize {
        self.bank.size()[0] as usize
    }

    /// The bank's rows `indices`, `[indices.len(), dim]`, on its device.
    fn rows_of(&self, indices: &[usize]) -> Tensor {
        let indices: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        self.bank.index_select(
            0,
            &Tensor::from_slice(&indices).to_device(self.bank.device()),
        )
    }
}

impl InstDisc {
    /// Z of the whole batch of a data-parallel run, as `nce_loss` estimates it from one
    /// process's batch (`N · mean e^{s}` over every query's negatives): each rank's log-sum-exp
    /// of its own similarities, from its own estimate `local`, combined over the ranks.
    fn estimate_partition(&self, local: f64, batch: &PreparedBatch) -> Result<f64, TrainError> {
        let comm = &*self.comm;
        let n = self.len() as f64;
        let pairs = |images: usize| (images * self.negatives) as f64;
        // ln Z_r = ln N + LSE_r − ln(b_r·m)  ⇒  LSE_r, then LSE = ln Σ_r e^{LSE_r}.
        let lse = if batch.indices.is_empty() {
            f64::NEG_INFINITY
        } else {
            local.ln() - n.ln() + pairs(batch.indices.len()).ln()
        };
        let all = gather(comm, &[lse], "all-gather of the partition estimates")?;
        let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + all.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        Ok((n.ln() + lse - pairs(batch.global.len()).ln()).exp())
    }
}

impl ContrastiveMethod for InstDisc {
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        let n = self.len();
        if let Some(&bad) = batch.indices.iter().find(|&&i| i >= n) {
            return Err(TrainError::Shape(format!(
                "image index {bad} is outside the memory bank of {n} entries"
            )));
        }
        let images = batch.tensor(self.device);
        let embeddings = online.forward_t(&images, true);
        let rows = batch.indices.len();
        let positives = self.rows_of(&batch.indices);
        // The draws of the whole batch (the same on every rank); this rank's images' share.
        let mut rng = ChaCha8Rng::seed_from_u64(batch_seed(self.seed, batch));
        let drawn: Vec<usize> = (0..batch.global.len() * self.negatives)
            .map(|_| rng.random_range(0..n))
            .collect();
        let mine = &drawn[batch.global.offset * self.negatives..][..rows * self.negatives];
        let negatives =
            self.rows_of(mine)
                .view([rows as i64, self.negatives as i64, self.dim as i64]);
        let estimating = self.loss.0.partition.is_none();
        // This rank's share of the whole batch's mean.
        let share = batch.share();
        let tensors = (&embeddings, &positives, &negatives);
        if estimating && self.comm.world_size() > 1 {
            // Z from every rank's first batch: this rank's estimate, then the gathered mean.
            let local = self
                .loss
                .autograd(&tensors, self.backend)?
                .batch_partition
                .f_double_value(&[])?;
            let z = self.estimate_partition(local, batch)?;
            self.loss.0 = self.loss.0.clone().with_partition(Some(z));
        }
        let out = self.loss.autograd(&tensors, self.backend)?;
        let loss = backward_scalar(&out.loss, share)?;
        // Read after the backward pass, which has waited for the device already.
        let batch_partition = out.batch_partition.f_double_value(&[])?;
        let partition = out.partition;
        let next = if estimating {
            tracing::info!(
                partition,
                momentum = self.partition_momentum,
                "instdisc: Z estimated on the first batch"
            );
            partition
        } else if self.partition_momentum < 1.0 {
            let mu = self.partition_momentum;
            let z =
                mu * partition + (1.0 - mu) * self.estimate_partition(batch_partition, batch)?;
            // The batch's estimate is unchecked when Z is given (see `NceOutput`): a Z beyond
            // f64 would poison every later step, so it stops the run here, naming the value.
            if !(z.is_finite() && z > 0.0) {
                return Err(TrainError::NonFinitePartition { value: z });
            }
            z
        } else {
            partition
        };
        self.loss.0 = self.loss.0.clone().with_partition(Some(next));
        let comm = &*self.comm;
        let indices: Vec<i64> = batch.indices.iter().map(|&i| i as i64).collect();
        let indices = gather(comm, &indices, "all-gather of the batch's image indices")?;
        let embeddings = gather_tensor_rows(comm, &embeddings, "all-gather of the embeddings")?;
        let indices = Tensor::from_slice(&indices).to_device(self.bank.device());
        self.pending = Some((indices, embeddings));
        crate::dist::total(comm, loss)
    }

    fn after_step(&mut self, _progress: f64) -> Result<(), TrainError> {
        let Some((indices, embeddings)) = self.pending.take() else {
            return Ok(());
        };
        // v̄_i ← normalize(β·v̄_i + (1 − β)·v_i) for the batch's images (distinct indices).
        let beta = f64::from(self.bank_momentum);
        tch::no_grad(|| {
            let moved = self.bank.index_select(0, &indices) * beta
                + embeddings.to_kind(Kind::Float) * (1.0 - beta);
            let norm = moved.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
            let _ = self.bank.index_copy_(0, &indices, &(moved / norm));
        });
        Ok(())
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        let mut tensors = vec![("vectors".to_string(), self.bank.shallow_clone())];
        if let Some(z) = self.loss.0.partition {
            tensors.push(("partition".to_string(), Tensor::from_slice(&[z])));
        }
        vec![("bank", tensors)]
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        let group = checkpoint.group("bank");
        let vectors = group
            .get("vectors")
            .ok_or_else(|| TrainError::checkpoint(&checkpoint.path, "has no bank.vectors"))?;
        let expected = [self.len() as i64, self.dim as i64];
        if vectors.size() != expected {
            return Err(TrainError::checkpoint(
                &checkpoint.path,
                format!(
                    "bank.vectors is {:?}, this run's memory bank is {expected:?}",
                    vectors.size()
                ),
            ));
        }
        tch::no_grad(|| {
            self.bank
                .copy_(&vectors.to_device(self.bank.device()).to_kind(Kind::Float))
        });
        if let Some(z) = group.get("partition") {
            let z: Vec<f64> = Vec::try_from(z.to_kind(Kind::Double))?;
            self.loss.0 = self.loss.0.clone().with_partition(z.first().copied());
        }
        Ok(())
    }

    fn loss_backend(&self) -> &'static str {
        self.backend.name()
    }
}
