//! SwAV's loss on libtorch tensors (feature `tch`), as SwAV's `main_swav.py` computes it
//! (Sinkhorn under `no_grad`, `log_softmax` against the codes, autograd for the features and
//! the prototypes): the reference the tests compare [`crate::swav`] with, and the libtorch
//! entry point of [`crate::SwavOp`].

use ndarray::Array3;
use tch::{Device, Tensor};

use crate::libtorch::{
    backend_error, check_all_finite, finite_value, host_values, normalize_rows, to_tensor,
};
use crate::{LossError, SwavInput, SwavOptions, SwavOutput};

/// SwAV's loss on libtorch tensors, with its autograd graph, the way SwAV's `main_swav.py`
/// computes it: `output` = the crops' scores against the prototypes (crop-major, `[S·B, K]`);
/// for each assignment crop, under `torch.no_grad()`, the queue's scores are concatenated before
/// the crop's and `distributed_sinkhorn` (world size 1: `exp(out/ε)`, normalize, alternate row
/// and column normalizations, times N) gives the codes of the batch rows; every other crop adds
/// `−mean(sum(q · log_softmax(x/τ, 1), 1))`, divided by S − 1; the sum over assignment crops is
/// divided by A.
///
/// - `features`: `[B, S, D]` (`requires_grad`), normalized inside with `options.normalize`.
/// - `prototypes`: `[K, D]` (`requires_grad` for their gradient); used as given.
/// - `queue`: `[A, Q, D]` stored features, detached (no gradient); normalized with `normalize`.
///
/// Sinkhorn runs in the features' kind without log-space stabilization, as SwAV's does, so it
/// needs scores below about 88·ε in `f32` (unit rows with ε = 0.05 are far from it). Options, shapes
/// and finiteness are checked like [`crate::validate_swav`] (the same errors; one device
/// synchronization for the finiteness).
pub fn swav_loss_tensor(
    features: &Tensor,
    prototypes: &Tensor,
    queue: Option<&Tensor>,
    options: &SwavOptions,
) -> Result<Tensor, LossError> {
    swav_loss_tensor_with_codes(features, prototypes, queue, options).map(|(loss, _)| loss)
}

/// [`swav_loss_tensor`] and the codes it used, `[A, B, K]` (no gradient).
pub fn swav_loss_tensor_with_codes(
    features: &Tensor,
    prototypes: &Tensor,
    queue: Option<&Tensor>,
    options: &SwavOptions,
) -> Result<(Tensor, Tensor), LossError> {
    crate::swav::check_options(options)?;
    let (batch, crops, dim) = features.size3().map_err(|_| LossError::ShapeMismatch {
        what: "features rank",
        expected: "3 ([batch, crops, dim])".into(),
        actual: format!("{} (shape {:?})", features.dim(), features.size()),
    })?;
    let (k, prototype_dim) = prototypes.size2().map_err(|_| LossError::ShapeMismatch {
        what: "prototypes rank",
        expected: "2 ([K, dim])".into(),
        actual: format!("{} (shape {:?})", prototypes.dim(), prototypes.size()),
    })?;
    let queue_shape = match queue {
        Some(q) => Some(q.size3().map_err(|_| LossError::ShapeMismatch {
            what: "queue rank",
            expected: "3 ([assignment crops, Q, dim])".into(),
            actual: format!("{} (shape {:?})", q.dim(), q.size()),
        })?),
        None => None,
    };
    let as_usize = |x: i64| x as usize;
    crate::swav::check_shapes(
        [as_usize(batch), as_usize(crops), as_usize(dim)],
        [as_usize(k), as_usize(prototype_dim)],
        queue_shape.map(|(a, q, d)| [as_usize(a), as_usize(q), as_usize(d)]),
        options,
    )?;
    let mut inputs = vec![(features, "features"), (prototypes, "prototypes")];
    inputs.extend(queue.map(|q| (q, "queue")));
    check_all_finite(&inputs)?;
    let kind = features.kind();
    let device = features.device();
    let z = if options.normalize {
        normalize_rows(features, "features")?
    } else {
        features.shallow_clone()
    };
    // SwAV's `output`: row v·B + b is crop v of image b.
    let output = z
        .f_transpose(0, 1)
        .and_then(|t| t.f_reshape([crops * batch, dim]))
        .and_then(|t| t.f_matmul(&prototypes.tr()))
        .map_err(backend_error)?;
    let queue = match (queue, queue_shape) {
        (Some(q), Some((_, rows, _))) if rows > 0 => {
            let q = q
                .f_to_device(device)
                .and_then(|t| t.f_to_kind(kind))
                .map_err(backend_error)?
                .detach();
            Some(if options.normalize {
                normalize_rows(&q, "queue")?
            } else {
                q
            })
        }
        _ => None,
    };
    let assign = options.assignment_crops as i64;
    let mut loss = Tensor::f_zeros([], (kind, device)).map_err(backend_error)?;
    let mut codes = Vec::new();
    for i in 0..assign {
        let q = tch::no_grad(|| -> Result<Tensor, LossError> {
            let mut out = output
                .f_narrow(0, batch * i, batch)
                .map_err(backend_error)?
                .detach();
            if let Some(queue) = &queue {
                let stored = queue
                    .f_get(i)
                    .and_then(|u| u.f_matmul(&prototypes.detach().tr()))
                    .map_err(backend_error)?;
                out = Tensor::f_cat(&[&stored, &out], 0).map_err(backend_error)?;
            }
            let q = swav_sinkhorn(&out, options.epsilon, options.sinkhorn_iterations);
            let n = q.size()[0];
            q.f_narrow(0, n - batch, batch).map_err(backend_error)
        })?;
        let mut subloss = Tensor::f_zeros([], (kind, device)).map_err(backend_error)?;
        for v in (0..crops).filter(|&v| v != i) {
            let x = output
                .f_narrow(0, batch * v, batch)
                .map_err(backend_error)?
                / options.temperature;
            let term = (&q * x.log_softmax(1, kind))
                .sum_dim_intlist([1i64].as_slice(), false, kind)
                .mean(kind);
            subloss -= term;
        }
        loss += subloss / (crops - 1) as f64;
        codes.push(q);
    }
    let codes = Tensor::f_stack(&codes, 0).map_err(backend_error)?;
    Ok((loss / assign as f64, codes))
}

/// SwAV's `distributed_sinkhorn` with world size 1, on scores `out` `[N, K]`: `[N, K]` codes.
fn swav_sinkhorn(out: &Tensor, epsilon: f64, iterations: usize) -> Tensor {
    let kind = out.kind();
    // Q is K-by-N.
    let mut q = (out / epsilon).exp().tr();
    let (k, n) = (q.size()[0] as f64, q.size()[1] as f64);
    // Make the matrix sum to 1 (in place, as SwAV's `Q /= sum_Q`).
    let total = q.sum(kind);
    q /= total;
    for _ in 0..iterations {
        // Each prototype's total mass 1/K.
        let rows = q.sum_dim_intlist([1i64].as_slice(), true, kind);
        q /= rows;
        q /= k;
        // Each sample's total mass 1/N.
        let columns = q.sum_dim_intlist([0i64].as_slice(), true, kind);
        q /= columns;
        q /= n;
    }
    q *= n;
    q.tr()
}

/// The SwAV loss of host `f32` inputs through libtorch on `device`: runs
/// [`swav_loss_tensor_with_codes`] (which validates like [`crate::validate_swav`], finiteness
/// included) and autograd, and copies the loss, both gradients and the codes back. The
/// counterpart of [`crate::swav`] that the tests compare it with.
pub fn swav_tch(
    input: &SwavInput<'_>,
    options: &SwavOptions,
    device: Device,
) -> Result<SwavOutput, LossError> {
    let (batch, crops, dim) = input.features.dim();
    let k = input.prototypes.nrows();
    let features = to_tensor(input.features.into_dyn(), device)?.set_requires_grad(true);
    let prototypes = to_tensor(input.prototypes.into_dyn(), device)?.set_requires_grad(true);
    let queue = input
        .queue
        .map(|q| to_tensor(q.into_dyn(), device))
        .transpose()?;
    let (loss, codes) =
        swav_loss_tensor_with_codes(&features, &prototypes, queue.as_ref(), options)?;
    loss.f_backward().map_err(backend_error)?;
    let loss_value = finite_value(&loss)?;
    let to_host = host_values;
    let shape_error = |e: ndarray::ShapeError| LossError::Backend(format!("unexpected size: {e}"));
    Ok(SwavOutput {
        loss: loss_value,
        grad_features: Array3::from_shape_vec((batch, crops, dim), to_host(&features.grad())?)
            .map_err(shape_error)?,
        grad_prototypes: ndarray::Array2::from_shape_vec((k, dim), to_host(&prototypes.grad())?)
            .map_err(shape_error)?,
        codes: Array3::from_shape_vec((options.assignment_crops, batch, k), to_host(&codes)?)
            .map_err(shape_error)?,
        anchors: batch * options.assignment_crops,
    })
}
