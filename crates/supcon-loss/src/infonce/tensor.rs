//! MoCo's InfoNCE on libtorch tensors (feature `tch`), as MoCo's `forward` writes it (dense
//! logits with the positive at index 0, `cross_entropy` against label 0): the reference the
//! tests compare [`crate::infonce_loss`] with, and the libtorch entry point of
//! [`crate::InfoNceOp`].

use tch::{Device, Kind, Tensor};

use crate::explicit::check_temperature;
use crate::libtorch::{
    backend_error, check_all_finite, finite_value, host_values, maybe_normalize, shape_of,
    shape_of_rank, to_tensor,
};
use crate::{InfoNceOptions, LossError};

/// The shape rules of InfoNCE / NCE (`crate::infonce::check_row_shapes`, the host's) on
/// tensors; `per_query_only`: NCE's negatives are `[B, m, D]`. Returns the batch size.
pub(crate) fn check_row_tensors(
    queries: &Tensor,
    positives: &Tensor,
    negatives: &Tensor,
    per_query_only: bool,
) -> Result<i64, LossError> {
    let q = shape_of_rank::<2>(queries, "queries rank", "[B, D]")?;
    let p = shape_of_rank::<2>(positives, "positives rank", "[B, D]")?;
    let n = if per_query_only {
        shape_of_rank::<3>(negatives, "negatives rank", "[B, m, D]")?.to_vec()
    } else {
        shape_of(negatives)
    };
    crate::infonce::check_row_shapes(q, p, &n)?;
    Ok(q[0] as i64)
}

/// MoCo's InfoNCE on libtorch tensors, with its autograd graph, as MoCo's `MoCo.forward` writes
/// it: `l_pos = einsum('nc,nc->n', q, k)`, `l_neg` = the queries against the negatives,
/// `logits = cat([l_pos, l_neg], 1) / τ`, `cross_entropy(logits, zeros)`.
///
/// - `queries`: `[B, D]`, floating point (`requires_grad`).
/// - `positives`: `[B, D]`, detached inside (no gradient).
/// - `negatives`: `[K, D]` (shared, MoCo's queue) or `[B, m, D]` (per query), detached inside.
///
/// With `normalize`, every row is L2-normalized first. Returns the scalar loss (the mean over
/// the B queries); `loss.backward()` fills `queries.grad()`. Shapes, τ, finiteness and (with
/// `normalize`) zero rows are checked, with the errors of [`crate::infonce_loss`] (one
/// device synchronization for the finiteness of all three inputs).
pub fn infonce_loss_tensor(
    queries: &Tensor,
    positives: &Tensor,
    negatives: &Tensor,
    options: &InfoNceOptions,
) -> Result<Tensor, LossError> {
    check_temperature(options.temperature)?;
    let batch = check_row_tensors(queries, positives, negatives, false)?;
    let shared = negatives.dim() == 2;
    check_all_finite(&[
        (queries, "queries"),
        (positives, "positives"),
        (negatives, "negatives"),
    ])?;
    let q = maybe_normalize(queries, "queries", options.normalize)?;
    let k = maybe_normalize(&positives.detach(), "positives", options.normalize)?;
    let negatives = maybe_normalize(&negatives.detach(), "negatives", options.normalize)?;
    // positive logits: Nx1
    let l_pos = Tensor::f_einsum("nc,nc->n", &[&q, &k], None::<&[i64]>)
        .and_then(|t| t.f_unsqueeze(-1))
        .map_err(backend_error)?;
    // negative logits: NxK
    let equation = if shared { "nc,kc->nk" } else { "nc,nkc->nk" };
    let l_neg =
        Tensor::f_einsum(equation, &[&q, &negatives], None::<&[i64]>).map_err(backend_error)?;
    // logits: Nx(1+K), the positive at index 0
    let logits = Tensor::f_cat(&[&l_pos, &l_neg], 1).map_err(backend_error)? / options.temperature;
    let labels = Tensor::f_zeros([batch], (Kind::Int64, logits.device())).map_err(backend_error)?;
    logits
        .f_cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0)
        .map_err(backend_error)
}

/// Uploads host rows to `device` (queries with `requires_grad`).
pub(crate) fn upload_queries(
    queries: ndarray::ArrayView2<'_, f32>,
    positives: ndarray::ArrayView2<'_, f32>,
    device: Device,
) -> Result<(Tensor, Tensor), LossError> {
    Ok((
        to_tensor(queries.into_dyn(), device)?.set_requires_grad(true),
        to_tensor(positives.into_dyn(), device)?,
    ))
}

/// ∂loss/∂queries `[B, D]` on the host after the loss's backward pass.
pub(crate) fn query_gradient(queries: &Tensor) -> Result<ndarray::Array2<f32>, LossError> {
    let (batch, dim) = queries.size2().map_err(backend_error)?;
    ndarray::Array2::from_shape_vec(
        (batch as usize, dim as usize),
        host_values(&queries.grad())?,
    )
    .map_err(|e| LossError::Backend(format!("gradient of unexpected size: {e}")))
}

/// InfoNCE of host `f32` inputs through libtorch on `device`: [`infonce_loss_tensor`] (which
/// validates like [`crate::validate_infonce`]) and autograd; the loss and ∂loss/∂queries come
/// back. The counterpart of [`crate::infonce_loss`] behind [`crate::InfoNceOp`].
pub fn infonce_tch(
    input: &crate::InfoNceInput<'_>,
    options: &InfoNceOptions,
    device: Device,
) -> Result<crate::InfoNceOutput, LossError> {
    let (queries, positives) = upload_queries(input.queries, input.positives, device)?;
    let negatives = match &input.negatives {
        crate::Negatives::Shared(keys) => to_tensor(keys.into_dyn(), device)?,
        crate::Negatives::PerQuery(rows) => to_tensor(rows.into_dyn(), device)?,
    };
    let loss = infonce_loss_tensor(&queries, &positives, &negatives, options)?;
    loss.f_backward().map_err(backend_error)?;
    Ok(crate::InfoNceOutput {
        loss: finite_value(&loss)?,
        grad: query_gradient(&queries)?,
    })
}
