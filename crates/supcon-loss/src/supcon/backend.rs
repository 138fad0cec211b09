//! The backend trait: one loss, several implementations (CPU, libtorch, CUDA).

use ndarray::ArrayViewMut3;

use crate::{LossError, LossOutput, SupConInput, SupConOptions};

/// One loss op, several backends (the idea of candle's `CustomOp`): every backend takes the same
/// borrowed `f32` inputs and returns the loss, ∂loss/∂features and the anchor count, with the
/// same semantics and the same validation ([`crate::validate`]).
pub trait SupConBackend: Send + Sync {
    /// A short name for logs and benchmarks (`"cpu"`, `"tch"`, `"cuda"`).
    fn name(&self) -> &'static str;

    /// The loss and its gradient. Invalid inputs give a [`LossError`], never a panic.
    fn compute(
        &self,
        input: &SupConInput<'_>,
        options: &SupConOptions,
    ) -> Result<LossOutput, LossError>;

    /// The loss with its gradient written into the caller's buffer `grad` (the features'
    /// shape; e.g. a framework's gradient tensor viewed as an array). Returns the loss and
    /// the anchor count. A buffer of the wrong shape is a [`LossError::ShapeMismatch`] and is
    /// left untouched, as it is on any error.
    fn compute_into(
        &self,
        input: &SupConInput<'_>,
        options: &SupConOptions,
        mut grad: ArrayViewMut3<'_, f32>,
    ) -> Result<(f64, usize), LossError> {
        if grad.dim() != input.features.dim() {
            return Err(LossError::ShapeMismatch {
                what: "gradient buffer shape",
                expected: format!("{:?} (the features' shape)", input.features.shape()),
                actual: format!("{:?}", grad.shape()),
            });
        }
        let out = self.compute(input, options)?;
        grad.assign(&out.grad);
        Ok((out.loss, out.anchors))
    }
}
