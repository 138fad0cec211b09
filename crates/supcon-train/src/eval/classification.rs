//! Accuracy from logits: top-k, per class, and the confusion matrix.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::{argmax, checked_labels, in_top_k, EvalError};

/// Fraction of rows whose true label is among the `k` highest logits (ties broken towards
/// the lower class index). `logits` is `[samples, classes]`.
pub fn top_k_accuracy(
    logits: ArrayView2<'_, f32>,
    labels: &[i64],
    k: usize,
) -> Result<f64, EvalError> {
    let (rows, classes) = logits.dim();
    check_logits(rows, labels.len())?;
    let labels = checked_labels("top-k accuracy", labels, classes)?;
    let hits = logits
        .rows()
        .into_iter()
        .zip(&labels)
        .filter(|(row, &label)| match row.as_slice() {
            Some(values) => in_top_k(values, label, k),
            None => in_top_k(&row.to_vec(), label, k),
        })
        .count();
    Ok(hits as f64 / rows as f64)
}

fn check_logits(rows: usize, labels: usize) -> Result<(), EvalError> {
    if rows != labels {
        return Err(EvalError::LengthMismatch {
            what: "logits",
            expected: labels,
            actual: rows,
        });
    }
    if rows == 0 {
        return Err(EvalError::TooFewRows {
            what: "logits",
            needed: 1,
            actual: 0,
        });
    }
    Ok(())
}

/// Counts of (true class, predicted class): `counts[true][predicted]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub num_classes: usize,
    /// Row = true class, column = predicted class.
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// Builds the matrix from true labels and predicted classes.
    pub fn from_predictions(
        labels: &[i64],
        predictions: &[usize],
        num_classes: usize,
    ) -> Result<Self, EvalError> {
        if labels.len() != predictions.len() {
            return Err(EvalError::LengthMismatch {
                what: "predictions",
                expected: labels.len(),
                actual: predictions.len(),
            });
        }
        let truth = checked_labels("confusion matrix", labels, num_classes)?;
        let mut counts = vec![vec![0u64; num_classes]; num_classes];
        for (index, (&t, &p)) in truth.iter().zip(predictions).enumerate() {
            if p >= num_classes {
                return Err(EvalError::LabelOutOfRange {
                    what: "predictions",
                    index,
                    label: p as i64,
                    num_classes,
                });
            }
            counts[t][p] += 1;
        }
        Ok(Self {
            num_classes,
            counts,
        })
    }

    /// Samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction on the diagonal (top-1 accuracy); 0 for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let correct: u64 = (0..self.num_classes).map(|c| self.counts[c][c]).sum();
        correct as f64 / total as f64
    }

    /// Per-class recall (the usual "per-class accuracy"): correct / support for each class.
    pub fn per_class(&self) -> Vec<ClassAccuracy> {
        (0..self.num_classes)
            .map(|class| {
                let support: u64 = self.counts[class].iter().sum();
                let correct = self.counts[class][class];
                ClassAccuracy {
                    class,
                    support,
                    correct,
                    accuracy: if support == 0 {
                        None
                    } else {
                        Some(correct as f64 / support as f64)
                    },
                }
            })
            .collect()
    }
}

/// Accuracy of one class: `correct / support`, `None` when the class has no sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: usize,
    pub support: u64,
    pub correct: u64,
    pub accuracy: Option<f64>,
}

/// Everything a classifier's logits on a labelled set tell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub samples: usize,
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<ClassAccuracy>,
    pub confusion: ConfusionMatrix,
}

/// Top-1 / top-5 accuracy, per-class accuracy and the confusion matrix from `[samples,
/// classes]` logits. With fewer than five classes top-5 is 1.
pub fn classification_metrics(
    logits: ArrayView2<'_, f32>,
    labels: &[i64],
) -> Result<ClassificationMetrics, EvalError> {
    let (rows, classes) = logits.dim();
    check_logits(rows, labels.len())?;
    let predictions: Vec<usize> = logits
        .rows()
        .into_iter()
        .map(|row| match row.as_slice() {
            Some(values) => argmax(values),
            None => argmax(&row.to_vec()),
        })
        .collect();
    let confusion = ConfusionMatrix::from_predictions(labels, &predictions, classes)?;
    Ok(ClassificationMetrics {
        samples: rows,
        top1: confusion.accuracy(),
        top5: top_k_accuracy(logits, labels, 5)?,
        per_class: confusion.per_class(),
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn top_k_counts_hand_computed_rows() {
        // Row 0: label 2 is the best. Row 1: label 0 is second. Row 2: label 1 is last of 3.
        let logits = array![[0.1f32, 0.2, 0.9], [0.5, 0.7, 0.1], [0.3, 0.1, 0.2]];
        let labels = [2, 0, 1];
        assert!((top_k_accuracy(logits.view(), &labels, 1).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((top_k_accuracy(logits.view(), &labels, 2).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(top_k_accuracy(logits.view(), &labels, 3).unwrap(), 1.0);
    }

    #[test]
    fn ties_go_to_the_lower_class() {
        let logits = array![[1.0f32, 1.0], [1.0, 1.0]];
        assert_eq!(top_k_accuracy(logits.view(), &[0, 1], 1).unwrap(), 0.5);
    }

    #[test]
    fn confusion_matrix_counts_and_per_class() {
        let logits = array![
            [0.9f32, 0.0, 0.1], // true 0 → 0
            [0.9, 0.0, 0.1],    // true 1 → 0
            [0.0, 0.9, 0.1],    // true 1 → 1
            [0.0, 0.1, 0.9],    // true 2 → 2
            [0.0, 0.9, 0.1],    // true 2 → 1
            [0.0, 0.1, 0.9],    // true 2 → 2
        ];
        let labels = [0, 1, 1, 2, 2, 2];
        let metrics = classification_metrics(logits.view(), &labels).unwrap();
        assert_eq!(
            metrics.confusion.counts,
            vec![vec![1, 0, 0], vec![1, 1, 0], vec![0, 1, 2]]
        );
        assert_eq!(metrics.confusion.total(), 6);
        assert!((metrics.top1 - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(metrics.top5, 1.0);
        let per_class: Vec<_> = metrics.per_class.iter().map(|c| c.accuracy).collect();
        assert_eq!(per_class, vec![Some(1.0), Some(0.5), Some(2.0 / 3.0)]);
    }

    #[test]
    fn bad_inputs_are_named() {
        let logits = array![[0.1f32, 0.2]];
        assert!(matches!(
            top_k_accuracy(logits.view(), &[0, 1], 1),
            Err(EvalError::LengthMismatch { .. })
        ));
        assert!(matches!(
            top_k_accuracy(logits.view(), &[2], 1),
            Err(EvalError::LabelOutOfRange {
                index: 0,
                label: 2,
                ..
            })
        ));
        let empty = ndarray::Array2::<f32>::zeros((0, 3));
        assert!(matches!(
            classification_metrics(empty.view(), &[]),
            Err(EvalError::TooFewRows { .. })
        ));
    }
}
