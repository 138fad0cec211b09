//! CPC's InfoNCE over a grid on libtorch tensors (feature `tch`): the reference the tests
//! compare [`crate::cpc_loss`] with, and the libtorch entry point of [`crate::CpcOp`].

use ndarray::Array3;
use tch::{Device, Tensor};

use crate::libtorch::{
    backend_error, checked_rows, finite_value, host_values, shape_of_rank, to_tensor,
};
use crate::{CpcOptions, CpcOutput, LossError};

/// CPC's InfoNCE over a grid on libtorch tensors, with its autograd graph: the valid
/// predictions (t + k + 1 < T) against every target row, `cross_entropy(p̂ ẑᵀ / τ, positives)`.
/// `predictions`: `[B, T, K, D]`, `targets`: `[B, T, D]` (both `requires_grad`). Checked with
/// [`crate::validate_cpc`]'s errors.
pub fn cpc_loss_tensor(
    predictions: &Tensor,
    targets: &Tensor,
    options: &CpcOptions,
) -> Result<Tensor, LossError> {
    let p_shape = shape_of_rank::<4>(predictions, "predictions rank", "[B, T, K, D]")?;
    let z_shape = shape_of_rank::<3>(targets, "targets rank", "[B, T, D]")?;
    crate::cpc::check_cpc_shapes(&p_shape, &z_shape)?;
    let rows = checked_rows(
        &[(predictions, "predictions"), (targets, "targets")],
        options.temperature,
        options.normalize,
    )?;
    let [batch, positions, offsets, dim] = p_shape;
    let valid = crate::cpc::valid_predictions(batch, positions, offsets);
    let query_rows: Vec<i64> = valid.iter().map(|&(row, _)| row as i64).collect();
    let positives: Vec<i64> = valid.iter().map(|&(_, target)| target as i64).collect();
    let device = predictions.device();
    let queries = rows[0]
        .reshape([-1, dim as i64])
        .index_select(0, &Tensor::from_slice(&query_rows).to_device(device));
    let candidates = rows[1].reshape([-1, dim as i64]);
    let logits = queries.matmul(&candidates.tr()) / options.temperature;
    logits
        .f_cross_entropy_loss::<Tensor>(
            &Tensor::from_slice(&positives).to_device(device),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )
        .map_err(backend_error)
}

/// [`cpc_loss_tensor`] on host `f32` inputs through libtorch on `device`, both gradients
/// copied back: the counterpart of [`crate::cpc_loss`] behind [`crate::CpcOp`].
pub fn cpc_tch(
    predictions: ndarray::ArrayView4<'_, f32>,
    targets: ndarray::ArrayView3<'_, f32>,
    options: &CpcOptions,
    device: Device,
) -> Result<CpcOutput, LossError> {
    let p = to_tensor(predictions.into_dyn(), device)?.set_requires_grad(true);
    let z = to_tensor(targets.into_dyn(), device)?.set_requires_grad(true);
    let loss = cpc_loss_tensor(&p, &z, options)?;
    loss.f_backward().map_err(backend_error)?;
    let shape_error = |e: ndarray::ShapeError| LossError::Backend(format!("unexpected size: {e}"));
    let (batch, positions, offsets, _) = predictions.dim();
    Ok(CpcOutput {
        loss: finite_value(&loss)?,
        grad_predictions: ndarray::Array4::from_shape_vec(
            predictions.dim(),
            host_values(&p.grad())?,
        )
        .map_err(shape_error)?,
        grad_targets: Array3::from_shape_vec(targets.dim(), host_values(&z.grad())?)
            .map_err(shape_error)?,
        predictions: crate::cpc::valid_predictions(batch, positions, offsets).len(),
    })
}
