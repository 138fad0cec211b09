//! One op type per loss, several entry points (candle's `CustomOp` shape).
//!
//! Each loss of this crate is a [`LossOp`], defined in the loss's own module: its options, its
//! one validation ([`LossOp::validate`]: the function every entry point of the loss calls
//! first, before any work on a device), the host computation every loss has
//! ([`LossOp::cpu_fwd`]) and the libtorch and CUDA computations where they exist
//! ([`LossOp::tch_fwd`], [`LossOp::cuda_fwd`]), whose defaults say that the loss lacks them
//! ([`LossError::Unsupported`]). [`LossOp::run`] dispatches on a [`Backend`]; every entry point
//! takes the same host `f32` inputs and returns the same output type, so a test runs one table
//! of inputs through all of them and expects the CPU's errors.
//!
//! | op | input | output | cpu | tch | cuda |
//! |---|---|---|---|---|---|
//! | [`SupConOp`](crate::SupConOp) | [`SupConInput`](crate::SupConInput) | [`LossOutput`](crate::LossOutput) | yes | yes | yes |
//! | [`InfoNceOp`](crate::InfoNceOp) | [`InfoNceInput`](crate::InfoNceInput) | [`InfoNceOutput`](crate::InfoNceOutput) | yes | yes | — |
//! | [`NceOp`](crate::NceOp) | [`NceInput`](crate::NceInput) | [`NceOutput`](crate::NceOutput) | yes | yes | — |
//! | [`SwavOp`](crate::SwavOp) | [`SwavInput`](crate::SwavInput) | [`SwavOutput`](crate::SwavOutput) | yes | yes | — |
//! | [`CmcOp`](crate::CmcOp) | views `[V, B, D]` | [`CmcOutput`](crate::CmcOutput) | yes | yes | — |
//! | [`CpcOp`](crate::CpcOp) | (predictions `[B, T, K, D]`, targets `[B, T, D]`) | [`CpcOutput`](crate::CpcOutput) | yes | yes | — |
//! | [`InvSpreadOp`](crate::InvSpreadOp) | features `[B, 2, D]` | [`InvSpreadOutput`](crate::InvSpreadOutput) | yes | yes | — |
//!
//! **One way into autograd** (feature `tch`). Code that holds libtorch tensors (a training
//! loop) calls [`LossOp::autograd`] with the backend of its choice and gets the loss as a
//! scalar tensor with its graph; `backward()` on it fills the tensors' gradients whichever
//! backend computed it. On `tch` it is [`LossOp::tensor_fwd`] (the loss written in libtorch
//! on the tensors' own device, nothing copied); on `cpu` the tensors are copied to the host,
//! [`LossOp::cpu_fwd`] gives the loss and its exact gradients, and
//! [`crate::libtorch::surrogate`] hands them to autograd; on `cuda` (SupCon) the kernels read
//! the tensors in place and the surrogate does the same. So a caller never branches on the
//! backend.

use crate::supcon::cuda::Precision;
use crate::LossError;

/// Where a [`LossOp`] computes: the one name of the backend choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// This crate's CPU implementation (ndarray + rayon): every loss has it.
    Cpu,
    /// libtorch (feature `tch`): on the CPU (`cuda: None`) or on CUDA device `cuda` for host
    /// inputs; [`LossOp::autograd`] computes on the tensors' own device.
    Tch {
        /// The CUDA device's ordinal, or `None` for libtorch's CPU.
        cuda: Option<usize>,
    },
    /// This crate's CUDA kernels (feature `cuda`) on device `ordinal`.
    Cuda {
        /// The CUDA device's ordinal.
        ordinal: usize,
        /// The kernels' matrix precision.
        precision: Precision,
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

    /// The CUDA kernels on device `ordinal` in f32.
    pub fn cuda(ordinal: usize) -> Self {
        Backend::Cuda {
            ordinal,
            precision: Precision::F32,
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
    /// What [`LossOp::autograd`] returns: the scalar loss with its autograd graph, and what
    /// the loss reports besides (SupCon's anchor count, NCE's Z).
    #[cfg(feature = "tch")]
    type TensorOutput;

    /// The loss's name in logs and errors (`supcon`, `infonce`, `nce`, `swav`, `cmc`, `cpc`,
    /// `invspread`).
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

    /// The CUDA kernels' computation on device `ordinal` with `precision`.
    fn cuda_fwd(
        &self,
        _input: &Self::Input<'_>,
        _ordinal: usize,
        _precision: Precision,
    ) -> Result<Self::Output, LossError> {
        Err(self.unsupported(Backend::cuda(0)))
    }

    /// Computes on `backend` (which validates `input` first).
    fn run(&self, backend: Backend, input: &Self::Input<'_>) -> Result<Self::Output, LossError> {
        match backend {
            Backend::Cpu => self.cpu_fwd(input),
            Backend::Tch { cuda } => self.tch_fwd(input, cuda),
            Backend::Cuda { ordinal, precision } => self.cuda_fwd(input, ordinal, precision),
        }
    }

    /// The loss on libtorch tensors where they are, written in libtorch, with its autograd
    /// graph; validated with the same errors as [`LossOp::validate`].
    #[cfg(feature = "tch")]
    fn tensor_fwd(&self, tensors: &Self::Tensors<'_>) -> Result<Self::TensorOutput, LossError>;

    /// The loss of the tensors computed by [`LossOp::cpu_fwd`] on host copies, its exact
    /// gradients handed to autograd through [`crate::libtorch::surrogate`].
    #[cfg(feature = "tch")]
    fn cpu_tensor_fwd(&self, tensors: &Self::Tensors<'_>) -> Result<Self::TensorOutput, LossError>;

    /// The loss of the tensors computed by the CUDA kernels in place, handed to autograd
    /// through the surrogate.
    #[cfg(feature = "tch")]
    fn cuda_tensor_fwd(
        &self,
        _tensors: &Self::Tensors<'_>,
        _precision: Precision,
    ) -> Result<Self::TensorOutput, LossError> {
        Err(self.unsupported(Backend::cuda(0)))
    }

    /// **The one way into autograd**: the loss of `tensors`, computed by `backend`, as a scalar
    /// tensor with its graph (see the module docs). `Tch`'s and `Cuda`'s device is the
    /// tensors' own.
    #[cfg(feature = "tch")]
    fn autograd(
        &self,
        tensors: &Self::Tensors<'_>,
        backend: Backend,
    ) -> Result<Self::TensorOutput, LossError> {
        match backend {
            Backend::Cpu => self.cpu_tensor_fwd(tensors),
            Backend::Tch { .. } => self.tensor_fwd(tensors),
            Backend::Cuda { precision, .. } => self.cuda_tensor_fwd(tensors, precision),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SwavInput, SwavOp, SwavOptions};
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
        let err = op.run(Backend::cuda(0), &input).unwrap_err();
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
