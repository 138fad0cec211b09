//! What the losses' libtorch code shares (feature `tch`): the error and device conventions,
//! uploads and host copies, the checks every tensor entry point applies (finiteness, zero rows,
//! ranks), and the gradient surrogate through which a loss computed off the graph (on the CPU
//! backend, or by the CUDA kernels) enters autograd — the provided [`crate::LossOp::autograd`].

use std::cell::Cell;

use ndarray::{ArrayD, ArrayViewD};
use tch::{Device, Kind, Tensor};

use crate::LossError;

pub(crate) fn backend_error(e: tch::TchError) -> LossError {
    LossError::library("libtorch", e)
}

/// libtorch's device for [`crate::Backend::Tch`]'s `cuda`: CUDA device `i`, or the CPU.
pub fn device(cuda: Option<usize>) -> Device {
    cuda.map_or(Device::Cpu, Device::Cuda)
}

/// A tensor's values on the host, as `f32`, in standard layout.
pub(crate) fn host_values(t: &Tensor) -> Result<Vec<f32>, LossError> {
    t.f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.contiguous().f_view([-1]))
        .and_then(|t| Vec::<f32>::try_from(&t))
        .map_err(backend_error)
}

/// The value of a scalar loss after its backward pass; not finite is [`LossError::Overflow`].
pub(crate) fn finite_value(loss: &Tensor) -> Result<f64, LossError> {
    let value = loss.f_double_value(&[]).map_err(backend_error)?;
    if !value.is_finite() {
        return Err(LossError::Overflow { value });
    }
    Ok(value)
}

/// [`check_finite`] over several tensors with one device synchronization when all are finite
/// (the common case); the error names the first bad value of the first bad tensor, in order.
pub(crate) fn check_all_finite(tensors: &[(&Tensor, &'static str)]) -> Result<(), LossError> {
    let flags: Vec<Tensor> = tensors
        .iter()
        .filter(|(t, _)| t.numel() > 0)
        .map(|(t, _)| t.isfinite().all())
        .collect();
    if flags.is_empty() || Tensor::stack(&flags, 0).all().int64_value(&[]) != 0 {
        return Ok(());
    }
    tensors
        .iter()
        .try_for_each(|(t, what)| check_finite(t, what))
}

/// [`LossError::NonFinite`] naming the first NaN or infinity of `t` (row-major index), if any.
pub(crate) fn check_finite(t: &Tensor, what: &'static str) -> Result<(), LossError> {
    if t.numel() == 0 {
        return Ok(());
    }
    let bad = t.isfinite().logical_not();
    if bad.any().int64_value(&[]) == 0 {
        return Ok(());
    }
    let flat = bad.view([-1]).nonzero().int64_value(&[0, 0]);
    let value = t.reshape([-1]).double_value(&[flat]);
    let mut index = Vec::new();
    let mut rest = flat as usize;
    for &size in t.size().iter().rev() {
        index.push(rest % size as usize);
        rest /= size as usize;
    }
    index.reverse();
    Err(LossError::NonFinite { what, index, value })
}

/// The L2 norms of `x`'s rows (last axis, kept as an axis of size 1), or
/// [`LossError::ZeroNorm`] naming the first zero row by its index over the leading axes (`[b, v]`
/// for a 3-d `x`, `[row]` for a 2-d one; one device synchronization).
pub(crate) fn row_norms(x: &Tensor, what: &'static str) -> Result<Tensor, LossError> {
    let norms = x.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true);
    let zero = norms.eq(0.0);
    if zero.any().int64_value(&[]) != 0 {
        let mut rest = zero.view([-1]).nonzero().int64_value(&[0, 0]) as usize;
        let size = x.size();
        let mut index: Vec<usize> = size[..size.len() - 1]
            .iter()
            .rev()
            .map(|&len| {
                let i = rest % len as usize;
                rest /= len as usize;
                i
            })
            .collect();
        index.reverse();
        return Err(LossError::ZeroNorm { what, index });
    }
    Ok(norms)
}

pub(crate) fn normalize_rows(x: &Tensor, what: &'static str) -> Result<Tensor, LossError> {
    Ok(x / row_norms(x, what)?)
}

/// Host values `values` as a tensor on `device` (standard layout).
pub(crate) fn to_tensor(
    values: ndarray::ArrayView<'_, f32, ndarray::IxDyn>,
    device: Device,
) -> Result<Tensor, LossError> {
    let shape: Vec<i64> = values.shape().iter().map(|&s| s as i64).collect();
    let standard = values.as_standard_layout();
    let slice = standard.as_slice().ok_or_else(|| {
        LossError::Backend("features are not contiguous after as_standard_layout".into())
    })?;
    Tensor::f_from_slice(slice)
        .and_then(|t| t.f_reshape(&shape))
        .and_then(|t| t.f_to_device(device))
        .map_err(backend_error)
}

/// The shape of `t` as `usize`s, for error messages.
pub(crate) fn shape_of(t: &Tensor) -> Vec<usize> {
    t.size().iter().map(|&s| s as usize).collect()
}

/// The shape of a tensor that must have rank `rank`, as `usize`s; `what rank` names it
/// otherwise (`expected`: the shape it should have).
pub(crate) fn shape_of_rank<const RANK: usize>(
    t: &Tensor,
    what: &'static str,
    expected: &str,
) -> Result<[usize; RANK], LossError> {
    shape_of(t)
        .try_into()
        .map_err(|shape: Vec<usize>| LossError::ShapeMismatch {
            what,
            expected: format!("{RANK} ({expected})"),
            actual: format!("{} (shape {shape:?})", shape.len()),
        })
}

/// `x / ‖x‖` along the last axis of queries, positives or negatives (`[B, D]`, `[K, D]` or
/// `[B, m, D]`) when `normalize`; a zero row is an error naming its index.
pub(crate) fn maybe_normalize(
    x: &Tensor,
    what: &'static str,
    normalize: bool,
) -> Result<Tensor, LossError> {
    if !normalize {
        return Ok(x.shallow_clone());
    }
    normalize_rows(x, what)
}

/// Shape, τ and finiteness checks of a CMC / CPC tensor entry point, then its rows normalized
/// with `normalize`.
pub(crate) fn checked_rows(
    inputs: &[(&Tensor, &'static str)],
    temperature: f64,
    normalize: bool,
) -> Result<Vec<Tensor>, LossError> {
    crate::explicit::check_temperature(temperature)?;
    check_all_finite(inputs)?;
    inputs
        .iter()
        .map(|(x, what)| maybe_normalize(x, what, normalize))
        .collect()
}

thread_local! {
    static HOST_COPIES: Cell<usize> = const { Cell::new(0) };
}

/// How many times this thread copied a tensor to the host for a loss computed there
/// ([`host_array`]): a test runs a training step on the libtorch backend and checks that the
/// count does not move.
pub fn host_copies() -> usize {
    HOST_COPIES.with(Cell::get)
}

/// A tensor's values on the host as `f32`, in standard layout, with its shape: how a loss
/// computed on the CPU backend reads libtorch tensors (counted by [`host_copies`]).
pub fn host_array(t: &Tensor) -> Result<ArrayD<f32>, LossError> {
    HOST_COPIES.with(|count| count.set(count.get() + 1));
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    let values = host_values(&t.detach())?;
    ArrayD::from_shape_vec(shape, values)
        .map_err(|e| LossError::Backend(format!("a tensor's host copy: {e}")))
}

/// A tensor of rank `D` copied to the host ([`host_array`]); another rank is
/// [`LossError::ShapeMismatch`] naming `what` and the `expected` shape.
pub fn host_rows<D: ndarray::Dimension>(
    t: &Tensor,
    what: &'static str,
    expected: &str,
) -> Result<ndarray::Array<f32, D>, LossError> {
    let rank_error = || LossError::ShapeMismatch {
        what,
        expected: format!("{} ({expected})", D::NDIM.unwrap_or(0)),
        actual: format!("{} (shape {:?})", t.dim(), t.size()),
    };
    if D::NDIM != Some(t.dim()) {
        return Err(rank_error());
    }
    host_array(t)?
        .into_dimensionality::<D>()
        .map_err(|_| rank_error())
}

/// An int64 tensor's values on the host (labels: small, not counted as a loss input's copy).
pub fn host_labels(t: &Tensor) -> Result<Vec<i64>, LossError> {
    t.f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Int64))
        .and_then(|t| t.contiguous().f_view([-1]))
        .and_then(|t| Vec::<i64>::try_from(&t))
        .map_err(backend_error)
}

/// `value` as a 0-d f64 tensor on `device`.
pub fn scalar(value: f64, device: Device) -> Result<Tensor, LossError> {
    Tensor::f_from_slice(&[value])
        .and_then(|t| t.f_reshape([] as [i64; 0]))
        .and_then(|t| t.f_to_device(device))
        .map_err(backend_error)
}

/// The scalar that enters autograd for a loss computed off the graph: its value is `loss`
/// (an f64 tensor, exactly) and its gradient with respect to each `outputs[k].0` is
/// `outputs[k].1` (a tensor of its shape, on any device) — the surrogate
/// `loss + S − stop_grad(S)` with `S = Σ_k Σ(x_k ⊙ g_k)`, whose value term cancels exactly and
/// whose derivative is `g_k` (tch 0.24 has no `backward` with a given gradient; the surrogate
/// costs one element-wise product per output). One backward pass runs through everything
/// the outputs share.
pub fn surrogate(loss: f64, outputs: &[(&Tensor, Tensor)]) -> Result<Tensor, LossError> {
    let device = outputs.first().map_or(Device::Cpu, |(t, _)| t.device());
    let mut sum: Option<Tensor> = None;
    for (output, grad) in outputs {
        if grad.size() != output.size() {
            return Err(LossError::ShapeMismatch {
                what: "gradient for the surrogate",
                expected: format!("{:?} (the output's shape)", output.size()),
                actual: format!("{:?}", grad.size()),
            });
        }
        let grad = grad
            .f_to_device(output.device())
            .and_then(|g| g.f_to_kind(output.kind()))
            .map_err(backend_error)?
            .detach();
        let term = (*output * grad).f_sum(Kind::Float).map_err(backend_error)?;
        sum = Some(match sum {
            Some(total) => total + term,
            None => term,
        });
    }
    let value = scalar(loss, device)?;
    Ok(match sum {
        Some(sum) => {
            let sum = sum.f_to_kind(Kind::Double).map_err(backend_error)?;
            value + (&sum - sum.detach())
        }
        None => value,
    })
}

/// [`surrogate`] with the gradients on the host (what [`crate::LossOp::cpu_fwd`] returns).
pub fn surrogate_from_host(
    loss: f64,
    outputs: &[(&Tensor, ArrayViewD<'_, f32>)],
) -> Result<Tensor, LossError> {
    let uploaded = outputs
        .iter()
        .map(|(output, grad)| Ok((*output, to_tensor(grad.view(), output.device())?)))
        .collect::<Result<Vec<_>, LossError>>()?;
    surrogate(loss, &uploaded)
}
