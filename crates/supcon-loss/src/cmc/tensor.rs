//! CMC's cross-view loss on libtorch tensors (feature `tch`): the reference the tests compare
//! [`crate::cmc_loss`] with, and the libtorch entry point of [`crate::CmcOp`].

use ndarray::Array3;
use tch::{Device, Kind, Tensor};

use crate::libtorch::{
    backend_error, checked_rows, finite_value, host_values, shape_of, to_tensor,
};
use crate::{CmcOptions, CmcOutput, LossError};

/// CMC's cross-view loss on libtorch tensors, with its autograd graph: for every pair (i, j)
/// of `options.pairing`, `cross_entropy(ẑ_i ẑ_jᵀ / τ, arange(B))`, summed over the pairs.
/// `views`: `[V, B, D]` (`requires_grad`). Shapes, τ, finiteness and zero rows are checked with
/// [`crate::validate_cmc`]'s errors.
pub fn cmc_loss_tensor(views: &Tensor, options: &CmcOptions) -> Result<Tensor, LossError> {
    crate::cmc::check_cmc_shape(&shape_of(views)).and_then(|()| {
        if views.dim() == 3 {
            Ok(())
        } else {
            Err(LossError::ShapeMismatch {
                what: "views rank",
                expected: "3 ([views, batch, dim])".into(),
                actual: format!("{} (shape {:?})", views.dim(), views.size()),
            })
        }
    })?;
    let z = checked_rows(&[(views, "views")], options.temperature, options.normalize)?.remove(0);
    let (count, batch) = (views.size()[0], views.size()[1]);
    let labels = Tensor::f_arange(batch, (Kind::Int64, views.device())).map_err(backend_error)?;
    let mut loss = Tensor::f_zeros([], (z.kind(), z.device())).map_err(backend_error)?;
    for (i, j) in options.pairing.pairs(count as usize) {
        let logits = z.get(i as i64).matmul(&z.get(j as i64).tr()) / options.temperature;
        loss += logits
            .f_cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0)
            .map_err(backend_error)?;
    }
    Ok(loss)
}

/// [`cmc_loss_tensor`] on host `f32` views through libtorch on `device`, the gradient copied
/// back: the counterpart of [`crate::cmc_loss`] behind [`crate::CmcOp`].
pub fn cmc_tch(
    views: ndarray::ArrayView3<'_, f32>,
    options: &CmcOptions,
    device: Device,
) -> Result<CmcOutput, LossError> {
    let tensor = to_tensor(views.into_dyn(), device)?.set_requires_grad(true);
    let loss = cmc_loss_tensor(&tensor, options)?;
    loss.f_backward().map_err(backend_error)?;
    Ok(CmcOutput {
        loss: finite_value(&loss)?,
        grad: Array3::from_shape_vec(views.dim(), host_values(&tensor.grad())?)
            .map_err(|e| LossError::Backend(format!("gradient of unexpected size: {e}")))?,
        pairs: options.pairing.pairs(views.dim().0).len(),
    })
}
