//! InvSpread on libtorch tensors (feature `tch`), written from the paper's formula the way a
//! PyTorch user writes it (dense similarities, `log_softmax`, `log1p` for the spreading term,
//! autograd through both sides of every similarity; the similarities in f64, as the CPU's): the reference the tests compare
//! [`crate::invspread_loss`] with, and the libtorch entry point of [`crate::InvSpreadOp`].

use ndarray::Array3;
use tch::{Device, Kind, Tensor};

use super::check_invspread_shape;
use crate::libtorch::{
    backend_error, checked_rows, finite_value, host_values, shape_of_rank, to_tensor,
};
use crate::{InvSpreadOptions, InvSpreadOutput, LossError};

/// The InvSpread loss on libtorch tensors, with its autograd graph. `features`: `[B, 2, D]`
/// (each image and its augmented copy; `requires_grad`). Shapes, τ, finiteness and zero rows
/// are checked with [`crate::validate_invspread`]'s errors (one device synchronization).
pub fn invspread_loss_tensor(
    features: &Tensor,
    options: &InvSpreadOptions,
) -> Result<Tensor, LossError> {
    let shape = shape_of_rank::<3>(features, "features rank", "[batch, 2, dim]")?;
    check_invspread_shape(&shape)?;
    let rows = checked_rows(
        &[(features, "features")],
        options.temperature,
        options.normalize,
    )?
    .remove(0);
    let n = (shape[0] * 2) as i64;
    // In f64, as the CPU computes (the gradient flows back to the input's kind).
    let z = rows
        .f_reshape([n, shape[2] as i64])
        .and_then(|z| z.f_to_kind(Kind::Double))
        .map_err(backend_error)?;
    let device = z.device();
    let own = Tensor::eye(n, (Kind::Bool, device));
    let partner: Vec<i64> = (0..n).map(|j| j ^ 1).collect();
    let partner = Tensor::from_slice(&partner).to_device(device).unsqueeze(1);
    let positive = own
        .zeros_like()
        .scatter_value(1, &partner, 1)
        .to_kind(Kind::Bool);
    let similarities =
        (z.matmul(&z.tr()) / options.temperature).masked_fill(&own, f64::NEG_INFINITY);
    let lse = similarities.logsumexp([1i64].as_slice(), true);
    let log_p = &similarities - &lse;
    let invariant = log_p.gather(1, &partner, false).sum(Kind::Double);
    // log(1 − P) stays finite for every column: each row's largest has it from the
    // log-sum-exp of the rest, the others (P ≤ ½) from log1p; the largest's own log1p input
    // is masked first, so that no infinite value meets autograd.
    let top = log_p.argmax(1, true);
    let is_top = own
        .zeros_like()
        .scatter_value(1, &top, 1)
        .to_kind(Kind::Bool);
    let lse_rest = similarities
        .masked_fill(&is_top, f64::NEG_INFINITY)
        .logsumexp([1i64].as_slice(), true);
    let top_is_negative = top.ne_tensor(&partner).to_kind(Kind::Double);
    let top_term = ((&lse_rest - &lse) * top_is_negative).sum(Kind::Double);
    let rest_terms = (-log_p.masked_fill(&is_top, f64::NEG_INFINITY).exp())
        .log1p()
        .masked_fill(&own.logical_or(&positive), 0.0)
        .sum(Kind::Double);
    let spreading = top_term + rest_terms;
    Ok(-(invariant + spreading) / n as f64)
}

/// [`invspread_loss_tensor`] on host `f32` features through libtorch on `device`, the
/// gradient copied back: the counterpart of [`crate::invspread_loss`] behind
/// [`crate::InvSpreadOp`].
pub fn invspread_tch(
    features: ndarray::ArrayView3<'_, f32>,
    options: &InvSpreadOptions,
    device: Device,
) -> Result<InvSpreadOutput, LossError> {
    let tensor = to_tensor(features.into_dyn(), device)?.set_requires_grad(true);
    let loss = invspread_loss_tensor(&tensor, options)?;
    loss.f_backward().map_err(backend_error)?;
    Ok(InvSpreadOutput {
        loss: finite_value(&loss)?,
        grad: Array3::from_shape_vec(features.dim(), host_values(&tensor.grad())?)
            .map_err(|e| LossError::Backend(format!("gradient of unexpected size: {e}")))?,
    })
}
