//! SupCon and SimCLR (Khosla et al. 2020, eq. 2 and 3; the crate docs hold the math): the
//! options and inputs, the one validation, the op, and the implementations beside them — the
//! tiled CPU engine (`cpu`), the fused CUDA kernels ([`cuda`]), the libtorch formulation
//! ([`tensor`], feature `tch`), the rule for unlabeled samples ([`unlabeled`]) and the loss
//! across the ranks of a data-parallel job ([`distributed`], feature `collectives`).

mod backend;
mod cpu;
pub mod cuda;
#[cfg(feature = "collectives")]
pub mod distributed;
mod input;
mod options;
#[cfg(feature = "tch")]
pub mod tensor;
pub mod unlabeled;

pub use backend::SupConBackend;
pub use cpu::{release_kept_blocks, CpuBackend, DEFAULT_CACHE_BYTES, DEFAULT_TILE, KEPT_BYTES};
pub use input::{check_shape, validate, InputShape, LossOutput, Queue, SupConInput};
pub use options::{ContrastMode, SupConOptions, Variant};

use crate::{LossError, LossOp};

/// The SupCon / SimCLR loss as an op: [`CpuBackend`] on the host, [`tensor::TchBackend`] and
/// [`tensor::supcon_loss_tensor_with_anchors`] in libtorch, [`cuda::CudaBackend`] on the GPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SupConOp(pub SupConOptions);

/// SupCon's tensors: features `[B, V, D]`, labels `[B]` (none: SimCLR), queue keys `[K, D]`
/// with their labels `[K]`.
#[cfg(feature = "tch")]
pub type SupConTensors<'a> = (
    &'a tch::Tensor,
    Option<&'a tch::Tensor>,
    Option<(&'a tch::Tensor, &'a tch::Tensor)>,
);

impl LossOp for SupConOp {
    type Input<'a> = SupConInput<'a>;
    type Output = LossOutput;
    #[cfg(feature = "tch")]
    type Tensors<'a> = SupConTensors<'a>;
    /// The loss and the anchor count.
    #[cfg(feature = "tch")]
    type TensorOutput = (tch::Tensor, usize);

    fn name(&self) -> &'static str {
        "supcon"
    }

    fn validate(&self, input: &SupConInput<'_>) -> Result<(), LossError> {
        validate(input, &self.0)
    }

    fn cpu_fwd(&self, input: &SupConInput<'_>) -> Result<LossOutput, LossError> {
        CpuBackend::default().compute(input, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(
        &self,
        input: &SupConInput<'_>,
        cuda: Option<usize>,
    ) -> Result<LossOutput, LossError> {
        host_backend(crate::Backend::Tch { cuda })?.compute(input, &self.0)
    }

    fn cuda_fwd(
        &self,
        input: &SupConInput<'_>,
        ordinal: usize,
        precision: cuda::Precision,
    ) -> Result<LossOutput, LossError> {
        host_backend(crate::Backend::Cuda { ordinal, precision })?.compute(input, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(
        &self,
        (features, labels, queue): &SupConTensors<'_>,
    ) -> Result<(tch::Tensor, usize), LossError> {
        tensor::supcon_loss_tensor_with_anchors(features, *labels, *queue, &self.0)
    }

    #[cfg(feature = "tch")]
    fn cpu_tensor_fwd(
        &self,
        (features, labels, queue): &SupConTensors<'_>,
    ) -> Result<(tch::Tensor, usize), LossError> {
        let host = tensor::HostSupCon::copy(features, *labels, *queue)?;
        let out = CpuBackend::default().compute(&host.input(), &self.0)?;
        let loss = crate::libtorch::surrogate_from_host(
            out.loss,
            &[(*features, out.grad.view().into_dyn())],
        )?;
        Ok((loss, out.anchors))
    }

    #[cfg(feature = "tch")]
    fn cuda_tensor_fwd(
        &self,
        (features, labels, queue): &SupConTensors<'_>,
        precision: cuda::Precision,
    ) -> Result<(tch::Tensor, usize), LossError> {
        tensor::cuda_autograd(features, *labels, *queue, &self.0, precision)
    }
}

/// The [`SupConBackend`] of a backend choice, for host inputs (`Tch`'s `cuda` and `Cuda`'s
/// ordinal name the device; the CUDA one is the process's shared backend,
/// [`cuda::shared_backend`]); a backend this build or machine lacks is an error.
pub fn host_backend(
    backend: crate::Backend,
) -> Result<std::sync::Arc<dyn SupConBackend>, LossError> {
    match backend {
        crate::Backend::Cpu => Ok(std::sync::Arc::new(CpuBackend::default())),
        #[cfg(feature = "tch")]
        crate::Backend::Tch { cuda } => Ok(std::sync::Arc::new(tensor::TchBackend::new(
            crate::libtorch::device(cuda),
        ))),
        #[cfg(not(feature = "tch"))]
        crate::Backend::Tch { .. } => Err(SupConOp::default().unsupported(backend)),
        crate::Backend::Cuda { ordinal, precision } => {
            Ok(cuda::shared_backend(ordinal, precision)?)
        }
    }
}
