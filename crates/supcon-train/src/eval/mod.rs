//! Evaluation of trained models and their embeddings.
//!
//! Everything here works on plain `ndarray` views and label slices, so it can be tested
//! without libtorch and reused on embeddings written by `supcon embed`:
//!
//! - [`classification`]: top-k accuracy from logits, per-class accuracy, confusion matrix;
//! - [`knn`]: weighted k-nearest-neighbour accuracy on embeddings (InstDisc / solo-learn vote);
//! - [`geometry`]: alignment and uniformity (Wang & Isola 2020), effective rank (Roy & Vetterli 2007);
//! - [`robustness`]: accuracy under image corruptions at severities 1..=5.
//!
//! Labels are `i64` class indices in `0..num_classes`, as everywhere in the workspace.

pub mod classification;
pub mod geometry;
pub mod knn;
pub mod robustness;

pub use classification::{
    classification_metrics, top_k_accuracy, ClassAccuracy, ClassificationMetrics, ConfusionMatrix,
};
pub use geometry::{
    alignment, effective_rank, embedding_geometry, uniformity, EmbeddingGeometry, GeometryOptions,
};
pub use knn::{knn_classify, KnnOptions, KnnResult};
pub use robustness::{
    robustness_accuracy, FnCorruption, ImageCorruption, RobustnessEntry, RobustnessOptions,
    RobustnessReport,
};

/// What went wrong while evaluating: always names the offending shape, index or value.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum EvalError {
    #[error("{what}: expected {expected} rows (one per label), got {actual}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("{what}: label {label} at index {index} is outside 0..{num_classes}")]
    LabelOutOfRange {
        what: &'static str,
        index: usize,
        label: i64,
        num_classes: usize,
    },
    #[error("{what}: feature dimensions differ ({left} vs {right})")]
    DimensionMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
    #[error("{what}: needs at least {needed} rows, got {actual}")]
    TooFewRows {
        what: &'static str,
        needed: usize,
        actual: usize,
    },
    #[error("{what}: invalid option: {message}")]
    InvalidOption { what: &'static str, message: String },
    #[error("{what}: non-finite value at row {row}")]
    NonFinite { what: &'static str, row: usize },
    #[error("linear algebra: {0}")]
    Linalg(String),
    /// The caller's classifier failed; its error is kept as the source.
    #[error("classifier failed on {context}")]
    Classifier {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("corruption failed on {context}: {message}")]
    Corruption { context: String, message: String },
}

/// Checks that every label lies in `0..num_classes`; returns them as `usize`.
pub(crate) fn checked_labels(
    what: &'static str,
    labels: &[i64],
    num_classes: usize,
) -> Result<Vec<usize>, EvalError> {
    labels
        .iter()
        .enumerate()
        .map(|(index, &label)| {
            usize::try_from(label)
                .ok()
                .filter(|&l| l < num_classes)
                .ok_or(EvalError::LabelOutOfRange {
                    what,
                    index,
                    label,
                    num_classes,
                })
        })
        .collect()
}

/// Index of the largest value; the first one on ties, so results are deterministic.
/// NaN never wins.
pub(crate) fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best
}

/// Whether `target` is among the `k` largest of `values` (ties broken towards lower
/// indices, as `argmax`): counts the entries that would be ranked before it.
pub(crate) fn in_top_k(values: &[f32], target: usize, k: usize) -> bool {
    let t = values[target];
    if t.is_nan() {
        return false;
    }
    let ahead = values
        .iter()
        .enumerate()
        .filter(|&(i, &v)| v > t || (v == t && i < target))
        .count();
    ahead < k
}
