//! `CudaBackend` without the `cuda` feature: same API, every constructor fails with
//! [`LossError::CudaUnavailable`](crate::LossError::CudaUnavailable), so no `#[cfg]` spreads to callers.

use super::Precision;
use crate::{LossError, LossOutput, SupConBackend, SupConInput, SupConOptions};

const NOT_BUILT: &str = "not compiled with CUDA: supcon-loss was built without the `cuda` feature";

/// The CUDA backend (unavailable in this build: enable the `cuda` feature of `supcon-loss`).
#[derive(Debug)]
pub struct CudaBackend {
    precision: Precision,
}

impl CudaBackend {
    /// Always `Err(LossError::CudaUnavailable)` in this build.
    pub fn new(ordinal: usize) -> Result<Self, LossError> {
        Err(LossError::CudaUnavailable(format!(
            "{NOT_BUILT} (asked for device {ordinal})"
        )))
    }

    /// Always `Err(LossError::CudaUnavailable)` in this build.
    pub fn with_arch(ordinal: usize, arch: &str) -> Result<Self, LossError> {
        Err(LossError::CudaUnavailable(format!(
            "{NOT_BUILT} (asked for device {ordinal}, arch {arch})"
        )))
    }

    /// The same backend with another matrix precision.
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision }
    }

    /// The matrix precision of the tiled passes.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Always `Err(LossError::CudaUnavailable)` in this build.
    ///
    /// # Safety
    /// Nothing is read; the contract is the CUDA build's.
    pub unsafe fn compute_device(
        &self,
        _buffers: super::DeviceBuffers<'_>,
        _options: &SupConOptions,
    ) -> Result<(f64, usize), LossError> {
        Err(LossError::CudaUnavailable(NOT_BUILT.into()))
    }
}

impl SupConBackend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn compute(
        &self,
        _input: &SupConInput<'_>,
        _options: &SupConOptions,
    ) -> Result<LossOutput, LossError> {
        Err(LossError::CudaUnavailable(NOT_BUILT.into()))
    }
}

#[cfg(feature = "tch")]
impl CudaBackend {
    /// Always `Err(LossError::CudaUnavailable)` in this build.
    pub fn compute_tch(
        &self,
        _features: &tch::Tensor,
        _labels: Option<&[i64]>,
        _queue: Option<(&tch::Tensor, &[i64])>,
        _options: &SupConOptions,
    ) -> Result<super::TchLossOutput, LossError> {
        Err(LossError::CudaUnavailable(NOT_BUILT.into()))
    }
}
