//! InstDisc's NCE on libtorch tensors (feature `tch`), written from its formula: the reference
//! the tests compare [`crate::nce_loss`] with, and the libtorch entry point of
//! [`crate::NceOp`].

use tch::{Device, Kind, Tensor};

use crate::infonce::tensor::{check_row_tensors, query_gradient, upload_queries};
use crate::libtorch::{backend_error, check_all_finite, finite_value, maybe_normalize, to_tensor};
use crate::{LossError, NceOptions};

/// InstDisc's NCE on libtorch tensors, with its autograd graph, written from the formula:
/// `P = exp(s/τ) / Z` for the positive and the m negatives of each query,
/// `h = P / (P + m/N)`, `loss = −mean_b (log h_b0 + Σ_j log(1 − h_bj))`, plus
/// `λ · mean_b ‖ẑ_qb − ẑ_kb‖²` with the proximal weight λ.
///
/// - `queries`: `[B, D]`, floating point (`requires_grad`).
/// - `positives`: `[B, D]` and `negatives`: `[B, m, D]` (memory-bank entries), detached inside.
///
/// With `options.partition = None`, Z is estimated as `N · mean(exp(s_neg/τ))` over all
/// query–negative pairs and detached (no gradient through Z). Returns the loss, the Z used and
/// the batch's estimate of Z ([`NceTensorOutput`]).
/// Unlike [`crate::nce_loss`] this is the direct formula (what InstDisc's code computes, without
/// its 1e-7): it can underflow for extreme similarities. Shapes, τ, N, Z, finiteness and
/// (with `normalize`) zero rows are checked, with the errors of [`crate::nce_loss`].
pub fn nce_loss_tensor(
    queries: &Tensor,
    positives: &Tensor,
    negatives: &Tensor,
    options: &NceOptions,
) -> Result<NceTensorOutput, LossError> {
    options.check()?;
    let batch = check_row_tensors(queries, positives, negatives, true)?;
    let m = negatives.size()[1];
    check_all_finite(&[
        (queries, "queries"),
        (positives, "positives"),
        (negatives, "negatives"),
    ])?;
    let q = maybe_normalize(queries, "queries", options.normalize)?;
    let k = maybe_normalize(&positives.detach(), "positives", options.normalize)?;
    let negatives = maybe_normalize(&negatives.detach(), "negatives", options.normalize)?;
    let kind = q.kind();
    // [B, m+1, D] bank entries (the positive first) times the queries: [B, m+1] similarities.
    let weight = Tensor::f_cat(&[&k.unsqueeze(1), &negatives], 1).map_err(backend_error)?;
    let out = weight
        .f_bmm(&q.unsqueeze(2))
        .and_then(|t| t.f_squeeze_dim(2))
        .map_err(backend_error)?;
    let out = (out / options.temperature).exp();
    let n = options.dataset_size as f64;
    // The batch's estimate stays on the device: reading it waits for the device, so it is read
    // here only when Z must be estimated, and a caller reads it after its backward pass.
    let batch_partition = out
        .detach()
        .f_narrow(1, 1, m)
        .and_then(|t| t.f_mean(kind))
        .and_then(|t| t.f_to_kind(Kind::Double))
        .map_err(backend_error)?
        * n;
    let z = match options.partition {
        Some(z) => z,
        None => batch_partition.f_double_value(&[]).map_err(backend_error)?,
    };
    let p = out / z;
    let noise = m as f64 / n; // m·P_n
    let p_pos = p.f_narrow(1, 0, 1).map_err(backend_error)?;
    let p_neg = p.f_narrow(1, 1, m).map_err(backend_error)?;
    let log_h_pos = (&p_pos / (&p_pos + noise)).log();
    let log_one_minus_h_neg = (noise / (&p_neg + noise)).log();
    let total = log_h_pos.sum(kind) + log_one_minus_h_neg.sum(kind);
    let mut loss = total * (-1.0 / batch as f64);
    if options.proximal > 0.0 {
        // λ · mean_b ‖ẑ_qb − ẑ_kb‖², the bank entry a constant.
        loss += (&q - &k).square().sum(kind) * (options.proximal / batch as f64);
    }
    Ok(NceTensorOutput {
        loss,
        partition: z,
        batch_partition,
    })
}

/// What [`nce_loss_tensor`] returns.
#[derive(Debug)]
pub struct NceTensorOutput {
    /// The loss, with its autograd graph.
    pub loss: Tensor,
    /// The Z used: the given one, or the batch's estimate.
    pub partition: f64,
    /// The batch's estimate of Z whichever Z was used ([`crate::NceOutput::batch_partition`]),
    /// a detached f64 scalar on the loss's device: reading it (`f_double_value`) waits for the
    /// device, so read it after the backward pass.
    pub batch_partition: Tensor,
}

/// InstDisc's NCE of host `f32` inputs through libtorch on `device`: [`nce_loss_tensor`]
/// (which validates like [`crate::validate_nce`]) and autograd; the loss, ∂loss/∂queries and
/// the Z used come back. The counterpart of [`crate::nce_loss`] behind [`crate::NceOp`].
pub fn nce_tch(
    input: &crate::NceInput<'_>,
    options: &NceOptions,
    device: Device,
) -> Result<crate::NceOutput, LossError> {
    let (queries, positives) = upload_queries(input.queries, input.positives, device)?;
    let negatives = to_tensor(input.negatives.into_dyn(), device)?;
    let out = nce_loss_tensor(&queries, &positives, &negatives, options)?;
    out.loss.f_backward().map_err(backend_error)?;
    Ok(crate::NceOutput {
        loss: finite_value(&out.loss)?,
        grad: query_gradient(&queries)?,
        partition: out.partition,
        batch_partition: out
            .batch_partition
            .f_double_value(&[])
            .map_err(backend_error)?,
    })
}
