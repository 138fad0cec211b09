//! The hand-over between libtorch and `supcon-loss`, staying where the tensors are.
//!
//! - **cpu**: the projections `[batch·views, dim]` leave libtorch as one contiguous f32 host
//!   buffer in batch-major order (image `b`, view `v` at row `b·views + v`, the augmentation
//!   writer's order), which *is* the loss's `[batch, views, dim]` layout: no permutation. The
//!   tiled CPU backend returns the loss and `∂L/∂features`, and the gradient goes back into
//!   autograd through the surrogate `Σ projections ⊙ stop_grad(∂L/∂features)`, whose gradient
//!   with respect to the projections is exactly `∂L/∂features` (tch 0.24 has no `backward`
//!   with a given gradient; the surrogate costs one element-wise product).
//! - **tch**: the loss is an autograd graph on the projections' own device
//!   (`supcon_loss::tch_backend::supcon_loss_tensor_with_anchors`); nothing is copied.
//! - **cuda**: the fused kernels read the CUDA projections in place and write the gradient on
//!   the device (`CudaBackend::compute_tch`); the surrogate takes it from there.
//!
//! - **across ranks** (a data-parallel run): the CPU backend on the gathered batch, each rank
//!   the share of its own anchors (`supcon_loss::distributed`); one process is the group of
//!   one, so the CPU path is the same code in both.
//!
//! Only the CPU backend copies the projections to the host. The same holds for the methods
//! with their own losses (MoCo's InfoNCE, InstDisc's NCE, SwAV): with `tch` their losses are
//! `supcon-loss`'s libtorch tensor functions on the training device, their queues, banks and
//! prototypes stay there, and [`host_copies`] lets a test prove that nothing came back.

use std::cell::Cell;

use ndarray::{ArrayView2, ArrayView3};
use supcon_collectives::{Collectives, SingleProcess};
use supcon_loss::cuda::CudaBackend;
use supcon_loss::tch_backend::TchBackend;
use supcon_loss::{
    ContrastMode, CpuBackend, LossBackend, LossOp, Queue, SupConOp, SupConOptions, Variant,
};
use tch::{Device, Kind, Tensor};

use crate::config::{AnchorMode, CudaPrecision, LossBackendKind, LossVariant, PretrainConfig};
use crate::error::TrainError;

/// What one loss evaluation returned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossValue {
    pub loss: f64,
    /// Anchors that had at least one positive.
    pub anchors: usize,
}

/// The backend a bridge computes with.
enum Engine {
    Cpu(CpuBackend),
    Tch(TchBackend),
    Cuda(CudaBackend),
}

/// A loss backend with its options.
pub struct LossBridge {
    engine: Engine,
    options: SupConOptions,
}

impl LossBridge {
    /// The backend named by `kind`; `device` is where the tch backend computes.
    pub fn new(
        kind: LossBackendKind,
        device: Device,
        options: SupConOptions,
    ) -> Result<Self, TrainError> {
        Self::with_precision(kind, device, options, CudaPrecision::F32)
    }

    /// [`LossBridge::new`] with the CUDA backend's matrix precision.
    pub fn with_precision(
        kind: LossBackendKind,
        device: Device,
        options: SupConOptions,
        precision: CudaPrecision,
    ) -> Result<Self, TrainError> {
        let engine = match kind {
            LossBackendKind::Cpu => Engine::Cpu(CpuBackend::default()),
            LossBackendKind::Tch => Engine::Tch(TchBackend::new(device)),
            LossBackendKind::Cuda => {
                let ordinal = match device {
                    Device::Cuda(i) => i,
                    _ => 0,
                };
                let precision = match precision {
                    CudaPrecision::F32 => supcon_loss::cuda::Precision::F32,
                    CudaPrecision::Tf32 => supcon_loss::cuda::Precision::Tf32,
                };
                let backend = CudaBackend::new(ordinal).map_err(|e| {
                    TrainError::Config(format!(
                        "--loss-backend cuda is not available in this build or on this machine: {e}"
                    ))
                })?;
                Engine::Cuda(backend.with_precision(precision))
            }
        };
        Ok(Self { engine, options })
    }

    /// The bridge for a pre-training stage: SupCon or SimCLR options from the config.
    pub fn for_pretrain(config: &PretrainConfig, device: Device) -> Result<Self, TrainError> {
        let options = SupConOptions::new(config.temperature())
            .with_base_temperature(config.base_temperature)
            .with_variant(match config.variant {
                LossVariant::Out => Variant::Out,
                LossVariant::In => Variant::In,
            })
            .with_contrast_mode(match config.contrast_mode {
                AnchorMode::All => ContrastMode::All,
                AnchorMode::One => ContrastMode::One,
            });
        Self::with_precision(config.loss_backend, device, options, config.cuda_precision)
    }

    /// The backend as supcon-loss's trait (host inputs).
    pub fn backend(&self) -> &dyn LossBackend {
        match &self.engine {
            Engine::Cpu(b) => b,
            Engine::Tch(b) => b,
            Engine::Cuda(b) => b,
        }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend().name()
    }

    /// The loss options.
    pub fn options(&self) -> &SupConOptions {
        &self.options
    }

    /// Computes the loss of `projections` (`[batch·views, dim]`, batch-major, part of an
    /// autograd graph) and back-propagates it. `labels` is `None` for SimCLR; `queue` holds
    /// extra contrast rows (momentum keys) with their labels.
    pub fn backward(
        &self,
        projections: &Tensor,
        batch: usize,
        views: usize,
        labels: Option<&[i64]>,
        queue: Option<(&Tensor, &[i64])>,
    ) -> Result<LossValue, TrainError> {
        self.backward_across(&SingleProcess, projections, batch, views, labels, queue)
    }

    /// [`LossBridge::backward`] for the part of a global batch that this rank of `comm` holds:
    /// the loss of the whole batch (every rank's `projections`, gathered) and, in the
    /// projections' gradients, this rank's share of its gradient (`supcon_loss::distributed`).
    /// Across ranks the loss runs on the CPU backend.
    pub fn backward_across(
        &self,
        comm: &dyn Collectives,
        projections: &Tensor,
        batch: usize,
        views: usize,
        labels: Option<&[i64]>,
        queue: Option<(&Tensor, &[i64])>,
    ) -> Result<LossValue, TrainError> {
        let size = projections.size();
        if size.len() != 2 || size[0] != (batch * views) as i64 {
            return Err(TrainError::Shape(format!(
                "projections have shape {size:?}, expected [{}, dim] for {batch} images × {views} views",
                batch * views
            )));
        }
        let dim = size[1];
        let device = projections.device();
        match &self.engine {
            Engine::Cpu(backend) => {
                let (features, dim) = to_host(projections, batch, views)?;
                let view = ArrayView3::from_shape((batch, views, dim), &features).map_err(|e| {
                    TrainError::Shape(format!("projections to [batch, views, dim]: {e}"))
                })?;
                let keys = queue.map(|(keys, _)| host_rows(keys)).transpose()?;
                let queue = match (&keys, queue) {
                    (Some((values, rows, dim)), Some((_, labels))) => Some(Queue {
                        keys: ArrayView2::from_shape((*rows, *dim), values.as_slice())
                            .map_err(|e| TrainError::Shape(format!("queue keys: {e}")))?,
                        labels,
                    }),
                    _ => None,
                };
                // One process is the group of one: the same code, every collective a copy.
                let output = supcon_loss::distributed::supcon_across_ranks(
                    comm,
                    backend,
                    view,
                    labels,
                    queue,
                    &self.options,
                )?;
                let grad = output.grad.as_standard_layout();
                let grad = grad
                    .as_slice()
                    .ok_or_else(|| TrainError::Shape("loss gradient layout".into()))?;
                backward_from_host(projections, grad)?;
                Ok(LossValue {
                    loss: output.loss,
                    anchors: output.anchors,
                })
            }
            _ if comm.world_size() > 1 => Err(TrainError::Config(format!(
                "the {} loss backend does not run across ranks; use --loss-backend cpu",
                self.backend_name()
            ))),
            Engine::Tch(_) => {
                let features = projections.view([batch as i64, views as i64, dim]);
                let labels = labels.map(|l| Tensor::from_slice(l).to_device(device));
                let queue = queue.map(|(keys, key_labels)| {
                    (
                        keys.to_device(device),
                        Tensor::from_slice(key_labels).to_device(device),
                    )
                });
                let (loss, anchors) = SupConOp(self.options.clone()).tensor_fwd(&(
                    &features,
                    labels.as_ref(),
                    queue.as_ref().map(|(k, l)| (k, l)),
                ))?;
                let value = backward_scalar(&loss, 1.0)?;
                Ok(LossValue {
                    loss: value,
                    anchors,
                })
            }
            Engine::Cuda(backend) => {
                let features = projections
                    .detach()
                    .to_kind(Kind::Float)
                    .contiguous()
                    .view([batch as i64, views as i64, dim]);
                let keys = queue.map(|(keys, key_labels)| {
                    (
                        keys.to_device(device).to_kind(Kind::Float).contiguous(),
                        key_labels,
                    )
                });
                let out = backend.compute_tch(
                    &features,
                    labels,
                    keys.as_ref().map(|(k, l)| (k, *l)),
                    &self.options,
                )?;
                let grad = out
                    .grad
                    .view([(batch * views) as i64, dim])
                    .to_kind(projections.kind());
                (projections * grad).sum(Kind::Float).f_backward()?;
                Ok(LossValue {
                    loss: out.loss,
                    anchors: out.anchors,
                })
            }
        }
    }
}

/// Copies `[batch·views, dim]` projections to a host `Vec<f32>`; returns it and `dim`.
pub fn to_host(
    projections: &Tensor,
    batch: usize,
    views: usize,
) -> Result<(Vec<f32>, usize), TrainError> {
    let (values, rows, dim) = host_rows(projections)?;
    if rows != batch * views {
        return Err(TrainError::Shape(format!(
            "projections have {rows} rows, expected {} for {batch} images × {views} views",
            batch * views
        )));
    }
    Ok((values, dim))
}

thread_local! {
    static HOST_COPIES: Cell<usize> = const { Cell::new(0) };
}

/// How many times this thread copied a loss input to the host with [`host_rows`] (every CPU
/// loss reads its inputs through it): a test runs the `tch` loss backend's steps and checks
/// that the count does not move.
pub fn host_copies() -> usize {
    HOST_COPIES.with(Cell::get)
}

/// Rows `[n, dim]` of a 2-D tensor copied to the host as f32.
pub fn host_rows(tensor: &Tensor) -> Result<(Vec<f32>, usize, usize), TrainError> {
    HOST_COPIES.with(|count| count.set(count.get() + 1));
    let size = tensor.size();
    if size.len() != 2 {
        return Err(TrainError::Shape(format!(
            "expected a [rows, dim] tensor, got shape {size:?}"
        )));
    }
    let (rows, dim) = (size[0] as usize, size[1] as usize);
    let host = tensor
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let mut values = vec![0f32; rows * dim];
    host.f_copy_data(&mut values, rows * dim)?;
    Ok((values, rows, dim))
}

/// Back-propagates a host gradient `∂L/∂outputs` (same shape as `outputs`) into the graph of
/// `outputs` through the surrogate `Σ outputs ⊙ stop_grad(grad)`, whose gradient with respect
/// to `outputs` is exactly `grad` (tch 0.24 has no `backward` with a given gradient).
pub fn backward_from_host(outputs: &Tensor, grad: &[f32]) -> Result<(), TrainError> {
    backward_from_host_all(&[(outputs, grad)])
}

/// [`backward_from_host`] for several outputs of one graph at once (one backward pass through
/// what they share): the surrogate sums `Σ outputs ⊙ stop_grad(grad)` over all of them.
pub fn backward_from_host_all(outputs: &[(&Tensor, &[f32])]) -> Result<(), TrainError> {
    let mut surrogate: Option<Tensor> = None;
    for (output, grad) in outputs {
        if grad.len() != output.numel() {
            return Err(TrainError::Shape(format!(
                "a gradient of {} values for an output of shape {:?}",
                grad.len(),
                output.size()
            )));
        }
        let grad = Tensor::from_slice(grad)
            .reshape(output.size())
            .to_device(output.device())
            .to_kind(output.kind());
        let term = (*output * grad).sum(Kind::Float);
        surrogate = Some(match surrogate {
            Some(total) => total + term,
            None => term,
        });
    }
    match surrogate {
        Some(total) => Ok(total.f_backward()?),
        None => Ok(()),
    }
}

/// Back-propagates the scalar `weight · loss` (a loss tensor with its autograd graph) and
/// returns its value; a loss that is not finite is [`supcon_loss::LossError::Overflow`] (the
/// libtorch counterpart of the CPU losses' own check).
pub fn backward_scalar(loss: &Tensor, weight: f64) -> Result<f64, TrainError> {
    let weighted = loss * weight;
    weighted.f_backward()?;
    let value = weighted.f_double_value(&[])?;
    if !value.is_finite() {
        return Err(supcon_loss::LossError::Overflow { value }.into());
    }
    Ok(value)
}
