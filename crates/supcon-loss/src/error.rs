//! The one error type of every backend.

/// Why a loss could not be computed. Every variant names what was wrong and where.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LossError {
    /// A length or shape does not match another input (labels vs. batch, keys vs. dim, ...).
    #[error("shape mismatch: {what} is {actual}, expected {expected}")]
    ShapeMismatch {
        /// Which input, e.g. `"labels length"`.
        what: &'static str,
        /// What it should be, e.g. `"8 (the batch size)"`.
        expected: String,
        /// What it is.
        actual: String,
    },
    /// An axis of the features has length zero (batch, views or dim).
    #[error("{what} is empty: {axis} has length 0 (shape {shape:?})")]
    EmptyAxis {
        /// Which input, e.g. `"features"`.
        what: &'static str,
        /// Which axis, e.g. `"views"`.
        axis: &'static str,
        /// The full shape.
        shape: Vec<usize>,
    },
    /// A NaN or infinity in an input; `index` is the first bad element in row-major order.
    #[error("{what}{index:?} is {value}: inputs must be finite")]
    NonFinite {
        /// `"features"` or `"queue keys"` (SwAV: also `"prototypes"`, `"queue"`, `"codes"`;
        /// InfoNCE / NCE: `"queries"`, `"positives"`, `"negatives"`).
        what: &'static str,
        /// `[batch, view, dim]` for features, `[key, dim]` for queue keys (SwAV: `[k, dim]` for
        /// prototypes, `[crop, row, dim]` for its queue, `[crop, batch, k]` for codes;
        /// InfoNCE / NCE: `[b, d]` for queries and positives, `[j, d]` or `[b, j, d]` for
        /// negatives).
        index: Vec<usize>,
        /// The bad value (NaN or ±inf).
        value: f64,
    },
    /// τ or τ_base (or SwAV's Sinkhorn ε) is zero, negative, NaN or infinite.
    #[error("{name} must be positive and finite, got {value}")]
    InvalidTemperature {
        /// `"temperature"` or `"base_temperature"` (SwAV: also `"epsilon"`).
        name: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// An option outside its valid range (other than a temperature), e.g. SwAV's
    /// `sinkhorn_iterations = 0`, NCE's `dataset_size = 0` or a given `partition` (Z) that is
    /// not positive and finite.
    #[error("{name} = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The option's name, e.g. `"sinkhorn_iterations"`.
        name: &'static str,
        /// The rejected value (integers widened to `f64`).
        value: f64,
        /// Why, and what is valid.
        reason: &'static str,
    },
    /// Fewer than two contrast rows (batch · views + queue keys): no pair to contrast.
    #[error("need at least two contrast rows (batch · views + queue keys), got {rows}")]
    TooFewContrastRows {
        /// batch · views + K.
        rows: usize,
    },
    /// A row with zero L2 norm while `normalize` is on: its direction is undefined.
    #[error("{what} row {index:?} has zero L2 norm and cannot be normalized")]
    ZeroNorm {
        /// `"features"` or `"queue keys"` (SwAV: also `"queue"`; InfoNCE / NCE: `"queries"`,
        /// `"positives"`, `"negatives"`).
        what: &'static str,
        /// `[batch, view]` for features, `[key]` for queue keys (SwAV: `[crop, row]` for its
        /// queue; InfoNCE / NCE: `[b]` for queries and positives, `[j]` or `[b, j]` for
        /// negatives).
        index: Vec<usize>,
    },
    /// A non-empty queue came with no labels at all (queue keys need labels to be positives).
    #[error("the queue has {keys} keys but no labels; give one label per key")]
    QueueLabelsMissing {
        /// K, the number of keys.
        keys: usize,
    },
    /// The similarities overflowed (features far from unit norm with a small τ).
    #[error("the loss is not finite ({value}): similarities overflow; normalize the features or raise the temperature")]
    Overflow {
        /// The non-finite loss (InfoNCE / NCE: or the first non-finite gradient entry, or NCE's
        /// estimated Z).
        value: f64,
    },
    /// A failure inside a backend that no library reported (a layout or size this crate
    /// did not expect).
    #[error("backend error: {0}")]
    Backend(String),
    /// libtorch, the CUDA driver or the thread pool failed; its error is kept as the source.
    #[error("{context}")]
    Library {
        /// What the backend was doing, e.g. `"CUDA launch supcon_forward_lout"`.
        context: String,
        /// The library's own error.
        #[source]
        source: LibraryError,
    },
    /// The loss has no implementation on the backend asked for, or the build lacks it.
    #[error("the {loss} loss has no {backend} backend: {why}")]
    Unsupported {
        /// The loss (`supcon`, `infonce`, `nce`, `swav`).
        loss: &'static str,
        /// The backend asked for (`tch`, `cuda`).
        backend: &'static str,
        /// Why: not in this build, or not implemented.
        why: &'static str,
    },
    /// The CUDA backend is not available (not compiled in, no driver, no device).
    #[error("CUDA unavailable: {0}")]
    CudaUnavailable(String),
}

/// A library's error (libtorch's, the CUDA driver's, rayon's) shared so that [`LossError`]
/// stays `Clone`. Two are equal when they say the same.
#[derive(Clone, Debug)]
pub struct LibraryError(pub std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl LibraryError {
    /// Wraps `error`.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(error))
    }
}

impl std::fmt::Display for LibraryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for LibraryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for LibraryError {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl LossError {
    /// [`LossError::Library`]: `source` failed while the backend was doing `context`.
    pub fn library(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        LossError::Library {
            context: context.into(),
            source: LibraryError::new(source),
        }
    }
}
