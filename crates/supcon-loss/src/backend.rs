//! The backend trait: one loss, several implementations (CPU, libtorch, CUDA).

use crate::{LossError, LossOutput, SupConInput, SupConOptions};

/// One loss op, several backends (the idea of candle's `CustomOp`): every backend takes the same
/// borrowed `f32` inputs and returns the loss, ∂loss/∂features and the anchor count, with the
/// same semantics and the same validation ([`crate::validate`]).
pub trait LossBackend: Send + Sync {
    /// A short name for logs and benchmarks (`"cpu"`, `"tch"`, `"cuda"`).
    fn name(&self) -> &'static str;

    /// The loss and its gradient. Invalid inputs give a [`LossError`], never a panic.
    fn compute(
        &self,
        input: &SupConInput<'_>,
        options: &SupConOptions,
    ) -> Result<LossOutput, LossError>;
}
