//! SupCon and SimCLR across the ranks of a data-parallel job (feature `collectives`), exactly
//! the loss of one process over the concatenated batch.
//!
//! Each rank holds the projections of its part of the global batch. The loss's positives and
//! negatives must span the global batch (SupContrast issue #26; what Lightning's DDP gives
//! lightly and solo-learn), so per step:
//!
//! 1. every rank's features `[b_r, V, D]` (and labels) are all-gathered in rank order into the
//!    global batch `[B, V, D]` — the one-process batch when the ranks own consecutive parts of
//!    it (`supcon_collectives::shard`);
//! 2. each rank computes the share of its own anchors against every contrast row,
//!    [`CpuBackend::compute_shard`]: `Loss_r = (τ/τ_base)·(1/|I|)·Σ_{i∈I, i of rank r} ℓ_i`
//!    and `∂Loss_r/∂f` over **all** rows;
//! 3. the gradients and the losses are summed over the ranks (all-reduce): `Σ_r Loss_r` is the
//!    global loss and `Σ_r ∂Loss_r/∂f` its gradient; each rank keeps its own rows.
//!
//! The result equals one process on the gathered batch up to the order of floating-point
//! sums (tested to 1e-6 relative with simulated ranks and under `mpirun`).

use ndarray::{s, Array3, ArrayView3};
use supcon_collectives::{Collectives, CollectivesExt};

use crate::{CpuBackend, LossError, LossOutput, Queue, SupConInput, SupConOptions};

/// The loss of the global batch (every rank's `features`, gathered in rank order) and its
/// gradient with respect to **this rank's** `features` (`[b_r, views, dim]`); `anchors` is
/// |I| of the global batch. `labels` are this rank's (`None` on every rank: SimCLR, where a
/// sample's index in the global batch is its class); `queue` must be the same on every rank
/// (a replicated key queue).
///
/// Every rank must call it together (it is collective). Ranks may hold different batch sizes
/// (a last short batch), even none, but the same `views` and `dim`. Bad inputs — a NaN on any
/// rank, labels on some ranks only — give the same error on every rank, so no rank is left
/// waiting.
pub fn supcon_across_ranks(
    comm: &dyn Collectives,
    backend: &CpuBackend,
    features: ArrayView3<'_, f32>,
    labels: Option<&[i64]>,
    queue: Option<Queue<'_, f32>>,
    options: &SupConOptions,
) -> Result<LossOutput, LossError> {
    let collective = |what: &'static str| {
        move |e: supcon_collectives::CollectiveError| LossError::library(what, e)
    };
    let (local_batch, views, dim) = features.dim();
    // Shapes first, seen by every rank, so that a bad one stops all of them with one error:
    // (batch, views, dim, labelled, labels length).
    let shape = [
        local_batch as i64,
        views as i64,
        dim as i64,
        i64::from(labels.is_some()),
        labels.map_or(0, <[i64]>::len) as i64,
    ];
    let shapes = comm
        .gather_all(&shape)
        .map_err(collective("all-gather of the ranks' feature shapes"))?;
    let mut batch = 0;
    let mut offset = 0;
    for (rank, theirs) in shapes.values.chunks_exact(shape.len()).enumerate() {
        if theirs[3] == 1 && theirs[4] != theirs[0] {
            return Err(LossError::ShapeMismatch {
                what: "labels length",
                expected: format!("{} (the batch of rank {rank})", theirs[0]),
                actual: format!("{} on rank {rank}", theirs[4]),
            });
        }
        if theirs[1..4] != shape[1..4] {
            return Err(LossError::ShapeMismatch {
                what: "features of another rank",
                expected: format!(
                    "[_, {views}, {dim}] with{} labels (this rank, {})",
                    if labels.is_some() { "" } else { "out" },
                    comm.rank()
                ),
                actual: format!(
                    "[{}, {}, {}] with{} labels on rank {rank}",
                    theirs[0],
                    theirs[1],
                    theirs[2],
                    if theirs[3] == 1 { "" } else { "out" }
                ),
            });
        }
        if rank == comm.rank() {
            offset = batch;
        }
        batch += theirs[0] as usize;
    }

    let local: Vec<f32> = features.iter().copied().collect();
    let gathered = comm
        .gather_all(&local)
        .map_err(collective("all-gather of the features"))?;
    let gathered = Array3::from_shape_vec((batch, views, dim), gathered.values)
        .map_err(|e| LossError::Backend(format!("gathered features: {e}")))?;
    let gathered_labels = match labels {
        Some(labels) => Some(
            comm.gather_all(labels)
                .map_err(collective("all-gather of the labels"))?
                .values,
        ),
        None => None,
    };
    let input = SupConInput {
        features: gathered.view(),
        labels: gathered_labels.as_deref(),
        // Re-borrowed: array views are invariant in their lifetime.
        queue: queue.as_ref().map(|q| Queue {
            keys: q.keys.view(),
            labels: q.labels,
        }),
    };
    let shard = backend.compute_shard(&input, offset..offset + local_batch, options)?;

    let mut grad = shard.grad.into_raw_vec_and_offset().0;
    comm.all_reduce_sum_in_place(&mut grad)
        .map_err(collective("all-reduce of the gradient"))?;
    let mut loss = [shard.loss];
    comm.all_reduce_sum_in_place(&mut loss)
        .map_err(collective("all-reduce of the loss"))?;
    let grad = Array3::from_shape_vec((batch, views, dim), grad)
        .map_err(|e| LossError::Backend(format!("reduced gradient: {e}")))?
        .slice_move(s![offset..offset + local_batch, .., ..])
        .as_standard_layout()
        .into_owned();
    Ok(LossOutput {
        loss: loss[0],
        grad,
        anchors: shard.anchors,
    })
}

/// [`supcon_across_ranks`] on this rank's libtorch tensors (feature `tch`): host copies, the
/// loss of the global batch on the CPU backend, and this rank's gradient handed to autograd
/// through [`crate::libtorch::surrogate`] — the loss across ranks as [`crate::LossOp::autograd`]
/// gives it in one process. Returns the loss (with its graph) and |I| of the global batch.
#[cfg(feature = "tch")]
pub fn supcon_across_ranks_autograd(
    comm: &dyn Collectives,
    backend: &CpuBackend,
    (features, labels, queue): &crate::SupConTensors<'_>,
    options: &SupConOptions,
) -> Result<(tch::Tensor, usize), LossError> {
    let host = crate::supcon::tensor::HostSupCon::copy(features, *labels, *queue)?;
    let input = host.input();
    let out = supcon_across_ranks(
        comm,
        backend,
        input.features,
        input.labels,
        input.queue,
        options,
    )?;
    let loss =
        crate::libtorch::surrogate_from_host(out.loss, &[(*features, out.grad.view().into_dyn())])?;
    Ok((loss, out.anchors))
}
