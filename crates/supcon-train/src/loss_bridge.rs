//! The hand-over between libtorch and `supcon-loss`.
//!
//! The projections leave libtorch as one contiguous f32 buffer `[batch·views, dim]` in
//! batch-major order (image `b`, view `v` at row `b·views + v`, the augmentation writer's
//! order), which *is* the loss's `[batch, views, dim]` layout: no copy or permutation. The
//! chosen backend returns the loss and `∂L/∂features`; the gradient goes back into libtorch's
//! autograd through the surrogate `Σ (projections ⊙ stop_grad(∂L/∂features))`, whose gradient
//! with respect to the projections is exactly `∂L/∂features`. (tch 0.24 exposes no
//! `backward_with_grad`; the surrogate costs one element-wise product.)

use ndarray::{ArrayView2, ArrayView3};
use supcon_loss::{
    ContrastMode, CpuBackend, LossBackend, Queue, SupConInput, SupConOptions, Variant,
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

/// A loss backend with its options.
pub struct LossBridge {
    backend: Box<dyn LossBackend>,
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
        let backend: Box<dyn LossBackend> = match kind {
            LossBackendKind::Cpu => Box::new(CpuBackend::default()),
            LossBackendKind::Tch => Box::new(supcon_loss::tch_backend::TchBackend { device }),
            LossBackendKind::Cuda => {
                let ordinal = match device {
                    Device::Cuda(i) => i,
                    _ => 0,
                };
                let precision = match precision {
                    CudaPrecision::F32 => supcon_loss::cuda::Precision::F32,
                    CudaPrecision::Tf32 => supcon_loss::cuda::Precision::Tf32,
                };
                Box::new(
                    supcon_loss::cuda::CudaBackend::new(ordinal)
                        .map_err(|e| {
                            TrainError::Config(format!(
                                "--loss-backend cuda is not available in this build or on this machine: {e}"
                            ))
                        })?
                        .with_precision(precision),
                )
            }
        };
        Ok(Self { backend, options })
    }

    /// The bridge for a pre-training stage: SupCon or SimCLR options from the config.
    pub fn for_pretrain(config: &PretrainConfig, device: Device) -> Result<Self, TrainError> {
        let options = SupConOptions {
            temperature: config.temperature(),
            base_temperature: config.base_temperature,
            variant: match config.variant {
                LossVariant::Out => Variant::Out,
                LossVariant::In => Variant::In,
            },
            contrast_mode: match config.contrast_mode {
                AnchorMode::All => ContrastMode::All,
                AnchorMode::One => ContrastMode::One,
            },
            ..SupConOptions::default()
        };
        Self::with_precision(config.loss_backend, device, options, config.cuda_precision)
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The backend.
    pub fn backend(&self) -> &dyn LossBackend {
        self.backend.as_ref()
    }

    /// The loss options.
    pub fn options(&self) -> &SupConOptions {
        &self.options
    }

    /// The loss and gradient of host features (no libtorch graph involved).
    pub fn compute(&self, input: &SupConInput<'_>) -> Result<supcon_loss::LossOutput, TrainError> {
        Ok(self.backend.compute(input, &self.options)?)
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
        queue: Option<(ArrayView2<'_, f32>, &[i64])>,
    ) -> Result<LossValue, TrainError> {
        let (features, dim) = to_host(projections, batch, views)?;
        let view = ArrayView3::from_shape((batch, views, dim), &features)
            .map_err(|e| TrainError::Shape(format!("projections to [batch, views, dim]: {e}")))?;
        let input = SupConInput {
            features: view,
            labels,
            queue: queue.map(|(keys, labels)| Queue { keys, labels }),
        };
        let output = self.backend.compute(&input, &self.options)?;
        let grad = output.grad.as_standard_layout();
        let grad = Tensor::from_slice(grad.as_slice().expect("standard layout"))
            .reshape([(batch * views) as i64, dim as i64])
            .to_device(projections.device())
            .to_kind(projections.kind());
        // d/dP Σ P ⊙ G = G.
        (projections * grad).sum(Kind::Float).f_backward()?;
        Ok(LossValue {
            loss: output.loss,
            anchors: output.anchors,
        })
    }
}

/// Copies `[batch·views, dim]` projections to a host `Vec<f32>`; returns it and `dim`.
pub fn to_host(
    projections: &Tensor,
    batch: usize,
    views: usize,
) -> Result<(Vec<f32>, usize), TrainError> {
    let size = projections.size();
    if size.len() != 2 || size[0] != (batch * views) as i64 {
        return Err(TrainError::Shape(format!(
            "projections have shape {size:?}, expected [{}, dim] for {batch} images × {views} views",
            batch * views
        )));
    }
    let dim = size[1] as usize;
    let host = projections
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let mut features = vec![0f32; batch * views * dim];
    host.f_copy_data(&mut features, batch * views * dim)?;
    Ok((features, dim))
}
