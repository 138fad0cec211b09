//! One op type per loss, several entry points (candle's `CustomOp` shape).
//!
//! Each loss of this crate is a [`LossOp`]: its options, its one validation
//! ([`LossOp::validate`]: the function every entry point of the loss calls first, before any
//! work on a device), the host computation every loss has ([`LossOp::cpu_fwd`]) and the
//! libtorch and CUDA computations where they exist ([`LossOp::tch_fwd`], [`LossOp::cuda_fwd`]),
//! whose defaults say that the loss lacks them ([`LossError::Unsupported`]). [`LossOp::run`]
//! dispatches on a [`Backend`]; every entry point takes the same host `f32` inputs and returns
//! the same output type, so a test runs one table of inputs through all of them and expects
//! the CPU's errors.
//!
//! | op | input | output | cpu | tch | cuda |
//! |---|---|---|---|---|---|
//! | [`SupConOp`] | [`SupConInput`] | [`LossOutput`] | yes | yes | yes |
//! | [`InfoNceOp`] | [`InfoNceInput`] | [`InfoNceOutput`] | yes | yes | — |
//! | [`NceOp`] | [`NceInput`] | [`NceOutput`] | yes | yes | — |
//! | [`SwavOp`] | [`SwavInput`] | [`SwavOutput`] | yes | yes | — |
//! | [`CmcOp`] | views `[V, B, D]` | [`CmcOutput`] | yes | yes | — |
//! | [`CpcOp`] | (predictions `[B, T, K, D]`, targets `[B, T, D]`) | [`CpcOutput`] | yes | yes | — |
//!
//! Code that already holds libtorch tensors (a training loop) calls [`LossOp::tensor_fwd`]
//! (feature `tch`): the loss as a scalar with its autograd graph on the tensors' own device,
//! nothing copied — the function `tch_fwd` runs on uploaded host inputs, with the same checks
//! and errors.

use ndarray::{ArrayView3, ArrayView4};

use crate::{
    cmc_loss, cpc_loss, infonce_loss, nce_loss, swav_generic, validate, validate_cmc, validate_cpc,
    validate_infonce, validate_nce, validate_swav, CmcOptions, CmcOutput, CpcOptions, CpcOutput,
    CpuBackend, InfoNceInput, InfoNceOptions, InfoNceOutput, LossBackend, LossError, LossOutput,
    NceInput, NceOptions, NceOutput, SupConInput, SupConOptions, SwavInput, SwavOptions,
    SwavOutput,
};

/// Where a [`LossOp`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// This crate's CPU implementation (ndarray + rayon): every loss has it.
    Cpu,
    /// libtorch (feature `tch`): on the CPU (`cuda: None`) or on CUDA device `cuda`.
    Tch {
        /// The CUDA device's ordinal, or `None` for libtorch's CPU.
        cuda: Option<usize>,
    },
    /// This crate's CUDA kernels (feature `cuda`) on device `ordinal`.
    Cuda {
        /// The CUDA device's ordinal.
        ordinal: usize,
    },
}

impl Backend {
    /// The backend's name in logs and errors (`cpu`, `tch`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Tch { .. } => "tch",
            Backend::Cuda { .. } => "cuda",
        }
    }
}

/// One loss with its entry points (see the module docs).
pub trait LossOp {
    /// The borrowed host inputs.
    type Input<'a>;
    /// The loss and its gradients.
    type Output;
    /// The libtorch tensors of one evaluation (feature `tch`): what a training loop holds.
    #[cfg(feature = "tch")]
    type Tensors<'a>;
    /// What [`LossOp::tensor_fwd`] returns: the scalar loss with its autograd graph, and what
    /// the loss reports besides (SupCon's anchor count, NCE's Z).
    #[cfg(feature = "tch")]
    type TensorOutput;

    /// The loss's name in logs and errors (`supcon`, `infonce`, `nce`, `swav`).
    fn name(&self) -> &'static str;

    /// The checks every entry point applies before computing: shapes, options, finiteness.
    /// Each `*_fwd` calls it (or its tensor counterpart, with the same errors) first; callers
    /// can use it to check an input ahead of time.
    fn validate(&self, input: &Self::Input<'_>) -> Result<(), LossError>;

    /// The CPU computation.
    fn cpu_fwd(&self, input: &Self::Input<'_>) -> Result<Self::Output, LossError>;

    /// The libtorch computation on `cuda` (`None`: libtorch's CPU).
    fn tch_fwd(
        &self,
        _input: &Self::Input<'_>,
        _cuda: Option<usize>,
    ) -> Result<Self::Output, LossError> {
        Err(self.unsupported(Backend::Tch { cuda: None }))
    }

    /// The loss on libtorch tensors where they are, with its autograd graph (`backward()` fills
    /// the inputs' gradients); validated with the same errors as [`LossOp::validate`].
    #[cfg(feature = "tch")]
    fn tensor_fwd(&self, tensors: &Self::Tensors<'_>) -> Result<Self::TensorOutput, LossError>;

    /// The CUDA kernels' computation on device `ordinal`.
    fn cuda_fwd(
        &self,
        _input: &Self::Input<'_>,
        _ordinal: usize,
    ) -> Result<Self::Output, LossError> {
        Err(self.unsupported(Backend::Cuda { ordinal: 0 }))
    }

    /// Computes on `backend` (which validates `input` first).
    fn run(&self, backend: Backend, input: &Self::Input<'_>) -> Result<Self::Output, LossError> {
        match backend {
            Backend::Cpu => self.cpu_fwd(input),
            Backend::Tch { cuda } => self.tch_fwd(input, cuda),
            Backend::Cuda { ordinal } => self.cuda_fwd(input, ordinal),
        }
    }

    /// [`LossError::Unsupported`] for this loss on `backend`.
    fn unsupported(&self, backend: Backend) -> LossError {
        let why = match backend {
            Backend::Tch { .. } if !cfg!(feature = "tch") => {
                "this build has no libtorch (feature `tch`)"
            }
            _ => "supcon-loss has no such implementation of it",
        };
        LossError::Unsupported {
            loss: self.name(),
            backend: backend.name(),
            why,
        }
    }
}

/// The SupCon / SimCLR loss ([`crate::CpuBackend`], `tch_backend::TchBackend`,
/// `cuda::CudaBackend`).
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
        crate::tch_backend::TchBackend::new(crate::tch_backend::device(cuda))
            .compute(input, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(
        &self,
        (features, labels, queue): &SupConTensors<'_>,
    ) -> Result<(tch::Tensor, usize), LossError> {
        crate::tch_backend::supcon_loss_tensor_with_anchors(features, *labels, *queue, &self.0)
    }

    fn cuda_fwd(&self, input: &SupConInput<'_>, ordinal: usize) -> Result<LossOutput, LossError> {
        crate::cuda::CudaBackend::new(ordinal)?.compute(input, &self.0)
    }
}

/// InfoNCE with explicit positives and negatives (MoCo's loss; [`crate::infonce_loss`],
/// `tch_backend::infonce_loss_tensor`).
#[derive(Clone, Debug, PartialEq)]
pub struct InfoNceOp(pub InfoNceOptions);

impl LossOp for InfoNceOp {
    type Input<'a> = InfoNceInput<'a>;
    type Output = InfoNceOutput;
    /// Queries `[B, D]`, positives `[B, D]`, negatives `[K, D]` or `[B, m, D]`.
    #[cfg(feature = "tch")]
    type Tensors<'a> = (&'a tch::Tensor, &'a tch::Tensor, &'a tch::Tensor);
    #[cfg(feature = "tch")]
    type TensorOutput = tch::Tensor;

    fn name(&self) -> &'static str {
        "infonce"
    }

    fn validate(&self, input: &InfoNceInput<'_>) -> Result<(), LossError> {
        validate_infonce(input, &self.0)
    }

    fn cpu_fwd(&self, input: &InfoNceInput<'_>) -> Result<InfoNceOutput, LossError> {
        infonce_loss(input, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(
        &self,
        input: &InfoNceInput<'_>,
        cuda: Option<usize>,
    ) -> Result<InfoNceOutput, LossError> {
        crate::tch_backend::infonce_tch(input, &self.0, crate::tch_backend::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(
        &self,
        (queries, positives, negatives): &Self::Tensors<'_>,
    ) -> Result<tch::Tensor, LossError> {
        crate::tch_backend::infonce_loss_tensor(queries, positives, negatives, &self.0)
    }
}

/// InstDisc's NCE over a memory bank ([`crate::nce_loss`], `tch_backend::nce_loss_tensor`).
#[derive(Clone, Debug, PartialEq)]
pub struct NceOp(pub NceOptions);

impl LossOp for NceOp {
    type Input<'a> = NceInput<'a>;
    type Output = NceOutput;
    /// Queries `[B, D]`, positives `[B, D]`, negatives `[B, m, D]`.
    #[cfg(feature = "tch")]
    type Tensors<'a> = (&'a tch::Tensor, &'a tch::Tensor, &'a tch::Tensor);
    /// The loss, the Z it used and the batch's estimate of Z.
    #[cfg(feature = "tch")]
    type TensorOutput = crate::tch_backend::NceTensorOutput;

    fn name(&self) -> &'static str {
        "nce"
    }

    fn validate(&self, input: &NceInput<'_>) -> Result<(), LossError> {
        validate_nce(input, &self.0)
    }

    fn cpu_fwd(&self, input: &NceInput<'_>) -> Result<NceOutput, LossError> {
        nce_loss(input, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(&self, input: &NceInput<'_>, cuda: Option<usize>) -> Result<NceOutput, LossError> {
        crate::tch_backend::nce_tch(input, &self.0, crate::tch_backend::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(
        &self,
        (queries, positives, negatives): &Self::Tensors<'_>,
    ) -> Result<crate::tch_backend::NceTensorOutput, LossError> {
        crate::tch_backend::nce_loss_tensor(queries, positives, negatives, &self.0)
    }
}

/// SwAV's swapped prediction with Sinkhorn–Knopp codes ([`crate::swav_generic`],
/// `tch_backend::swav_loss_tensor`).
#[derive(Clone, Debug, PartialEq)]
pub struct SwavOp(pub SwavOptions);

impl LossOp for SwavOp {
    type Input<'a> = SwavInput<'a>;
    type Output = SwavOutput;
    /// Features `[B, S, D]`, prototypes `[K, D]`, the queue `[A, Q, D]` if any.
    #[cfg(feature = "tch")]
    type Tensors<'a> = (&'a tch::Tensor, &'a tch::Tensor, Option<&'a tch::Tensor>);
    #[cfg(feature = "tch")]
    type TensorOutput = tch::Tensor;

    fn name(&self) -> &'static str {
        "swav"
    }

    fn validate(&self, input: &SwavInput<'_>) -> Result<(), LossError> {
        validate_swav(input, &self.0)
    }

    fn cpu_fwd(&self, input: &SwavInput<'_>) -> Result<SwavOutput, LossError> {
        swav_generic(input, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(&self, input: &SwavInput<'_>, cuda: Option<usize>) -> Result<SwavOutput, LossError> {
        crate::tch_backend::swav_tch(input, &self.0, crate::tch_backend::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(
        &self,
        (features, prototypes, queue): &Self::Tensors<'_>,
    ) -> Result<tch::Tensor, LossError> {
        crate::tch_backend::swav_loss_tensor(features, prototypes, *queue, &self.0)
    }
}

/// CMC's cross-view objective ([`crate::cmc_loss`], `tch_backend::cmc_loss_tensor`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CmcOp(pub CmcOptions);

impl LossOp for CmcOp {
    type Input<'a> = ArrayView3<'a, f32>;
    type Output = CmcOutput;
    /// Views `[V, B, D]`.
    #[cfg(feature = "tch")]
    type Tensors<'a> = &'a tch::Tensor;
    #[cfg(feature = "tch")]
    type TensorOutput = tch::Tensor;

    fn name(&self) -> &'static str {
        "cmc"
    }

    fn validate(&self, views: &ArrayView3<'_, f32>) -> Result<(), LossError> {
        validate_cmc(*views, &self.0)
    }

    fn cpu_fwd(&self, views: &ArrayView3<'_, f32>) -> Result<CmcOutput, LossError> {
        cmc_loss(*views, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(
        &self,
        views: &ArrayView3<'_, f32>,
        cuda: Option<usize>,
    ) -> Result<CmcOutput, LossError> {
        crate::tch_backend::cmc_tch(*views, &self.0, crate::tch_backend::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(&self, views: &&tch::Tensor) -> Result<tch::Tensor, LossError> {
        crate::tch_backend::cmc_loss_tensor(views, &self.0)
    }
}

/// CPC's InfoNCE over a grid ([`crate::cpc_loss`], `tch_backend::cpc_loss_tensor`); the input
/// is (predictions, targets).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpcOp(pub CpcOptions);

impl LossOp for CpcOp {
    type Input<'a> = (ArrayView4<'a, f32>, ArrayView3<'a, f32>);
    type Output = CpcOutput;
    /// Predictions `[B, T, K, D]`, targets `[B, T, D]`.
    #[cfg(feature = "tch")]
    type Tensors<'a> = (&'a tch::Tensor, &'a tch::Tensor);
    #[cfg(feature = "tch")]
    type TensorOutput = tch::Tensor;

    fn name(&self) -> &'static str {
        "cpc"
    }

    fn validate(&self, (p, z): &Self::Input<'_>) -> Result<(), LossError> {
        validate_cpc(*p, *z, &self.0)
    }

    fn cpu_fwd(&self, (p, z): &Self::Input<'_>) -> Result<CpcOutput, LossError> {
        cpc_loss(*p, *z, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(
        &self,
        (p, z): &Self::Input<'_>,
        cuda: Option<usize>,
    ) -> Result<CpcOutput, LossError> {
        crate::tch_backend::cpc_tch(*p, *z, &self.0, crate::tch_backend::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(&self, (p, z): &Self::Tensors<'_>) -> Result<tch::Tensor, LossError> {
        crate::tch_backend::cpc_loss_tensor(p, z, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    /// A loss without CUDA kernels says so, naming the loss and the backend; without the `tch`
    /// feature the libtorch entry point says the build lacks it.
    #[test]
    fn a_missing_entry_point_is_an_error_naming_loss_and_backend() {
        let features = Array3::<f32>::from_shape_fn((3, 2, 4), |(b, s, d)| {
            ((b * 5 + s * 3 + d) as f32).sin() + 0.1
        });
        let prototypes = Array2::<f32>::from_shape_fn((4, 4), |(k, d)| ((k + 2 * d) as f32).cos());
        let input = SwavInput::new(features.view(), prototypes.view());
        let op = SwavOp(SwavOptions::default());
        let err = op.run(Backend::Cuda { ordinal: 0 }, &input).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the swav loss has no cuda backend: supcon-loss has no such implementation of it"
        );
        let tch = op.run(Backend::Tch { cuda: None }, &input);
        if cfg!(feature = "tch") {
            assert!(tch.is_ok(), "{tch:?}");
        } else {
            assert!(matches!(
                tch,
                Err(LossError::Unsupported {
                    loss: "swav",
                    backend: "tch",
                    why: "this build has no libtorch (feature `tch`)"
                })
            ));
        }
        assert!(op.run(Backend::Cpu, &input).is_ok());
    }
}
