//! SupCon's loss on the projections of a training step, on the backend the run names.
//!
//! Every backend enters autograd the same way, through supcon-loss's one door,
//! [`LossOp::autograd`]: `tch` writes the loss in libtorch on the projections' own device
//! (nothing copied); `cpu` copies the projections `[batch·views, dim]` to the host — batch-major
//! (image `b`, view `v` at row `b·views + v`, the augmentation writer's order), which *is* the
//! loss's `[batch, views, dim]` layout, no permutation — and hands the tiled CPU backend's exact
//! gradient back through the gradient surrogate; `cuda` runs the fused kernels on the
//! projections in place and uses the same surrogate.
//!
//! Across ranks (a data-parallel run) the loss runs on the CPU backend on the gathered batch,
//! each rank computing the share of its own anchors (`supcon_loss::distributed`).
//!
//! Only the CPU backend copies the projections to the host. The same holds for the methods
//! with their own losses (MoCo's InfoNCE, InstDisc's NCE, SwAV, CMC, CPC), which call the same
//! door; `supcon_loss::libtorch::host_copies` lets a test prove that nothing came back.

use supcon_collectives::Collectives;
use supcon_loss::{Backend, ContrastMode, CpuBackend, LossOp, SupConOp, SupConOptions, Variant};
use tch::{Device, Tensor};

use crate::config::{AnchorMode, CudaPrecision, LossBackendKind, LossVariant, PretrainConfig};
use crate::error::TrainError;

/// What one loss evaluation returned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossValue {
    pub loss: f64,
    /// Anchors that had at least one positive.
    pub anchors: usize,
}

/// SupCon's loss with its options, on one backend.
pub struct LossBridge {
    backend: Backend,
    options: SupConOptions,
}

impl LossBridge {
    /// The backend named by `kind` on `device`.
    pub fn new(
        kind: LossBackendKind,
        device: Device,
        options: SupConOptions,
    ) -> Result<Self, TrainError> {
        Self::with_precision(kind, device, options, CudaPrecision::F32)
    }

    /// [`LossBridge::new`] with the CUDA backend's matrix precision; a CUDA backend this build
    /// or machine lacks is refused here, before the first step.
    pub fn with_precision(
        kind: LossBackendKind,
        device: Device,
        options: SupConOptions,
        precision: CudaPrecision,
    ) -> Result<Self, TrainError> {
        let backend = kind.backend(device, precision);
        if let Backend::Cuda { ordinal, precision } = backend {
            // Built here once (NVRTC compiles its kernels), shared by every step's autograd.
            supcon_loss::cuda::shared_backend(ordinal, precision).map_err(|e| {
                TrainError::Config(format!(
                    "--loss-backend cuda is not available in this build or on this machine: {e}"
                ))
            })?;
        }
        Ok(Self { backend, options })
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

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
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
        self.backward_across(
            &supcon_collectives::SingleProcess,
            projections,
            batch,
            views,
            labels,
            queue,
        )
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
        let device = projections.device();
        let features = projections.f_reshape([batch as i64, views as i64, size[1]])?;
        let labels = labels
            .map(|l| Tensor::f_from_slice(l)?.f_to_device(device))
            .transpose()?;
        let queue = queue
            .map(
                |(keys, key_labels)| -> Result<(Tensor, Tensor), TrainError> {
                    Ok((
                        keys.f_to_device(device)?,
                        Tensor::f_from_slice(key_labels)?.f_to_device(device)?,
                    ))
                },
            )
            .transpose()?;
        let tensors = (
            &features,
            labels.as_ref(),
            queue.as_ref().map(|(k, l)| (k, l)),
        );
        let (loss, anchors) = match self.backend {
            _ if comm.world_size() == 1 => {
                SupConOp(self.options.clone()).autograd(&tensors, self.backend)?
            }
            Backend::Cpu => supcon_loss::distributed::supcon_across_ranks_autograd(
                comm,
                &CpuBackend::default(),
                &tensors,
                &self.options,
            )?,
            other => {
                return Err(TrainError::Config(format!(
                    "the {} loss backend does not run across ranks; use --loss-backend cpu",
                    other.name()
                )))
            }
        };
        Ok(LossValue {
            loss: backward_scalar(&loss, 1.0)?,
            anchors,
        })
    }
}

/// Rows `[n, dim]` of a 2-D tensor copied to the host as f32 (counted by
/// `supcon_loss::libtorch::host_copies`).
pub fn host_rows(tensor: &Tensor) -> Result<(Vec<f32>, usize, usize), TrainError> {
    let size = tensor.size();
    if size.len() != 2 {
        return Err(TrainError::Shape(format!(
            "expected a [rows, dim] tensor, got shape {size:?}"
        )));
    }
    let (rows, dim) = (size[0] as usize, size[1] as usize);
    let host = supcon_loss::libtorch::host_array(tensor)?;
    Ok((host.into_raw_vec_and_offset().0, rows, dim))
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
