//! Weighted k-nearest-neighbour accuracy on embeddings.
//!
//! The weighted vote of InstDisc (Wu et al. 2018), as solo-learn's `WeightedKNNClassifier`
//! implements it: embeddings are L2-normalised, similarity is the cosine, the `k` most similar
//! bank samples each vote for their class with weight `exp(sim / T)`, and the class with the
//! largest summed weight is the prediction. The defaults, k = 20 and T = 0.07, are solo-learn's;
//! InstDisc's paper and code use k = 200 (with T = 0.07). The training embeddings are the bank and the
//! test embeddings the queries.
//!
//! Memory stays bounded for a 60 000 × 10 000 evaluation: queries are taken in blocks (in
//! parallel with rayon), the bank in blocks too, and each query keeps only its running top-k,
//! so the largest temporary is one `query_block × bank_block` similarity tile.

use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{argmax, checked_labels, in_top_k, EvalError};

/// Settings of the kNN evaluation. The defaults are solo-learn's (InstDisc uses k = 200).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnnOptions {
    /// Neighbours that vote (20).
    pub k: usize,
    /// Temperature of the vote weights `exp(sim / T)` (0.07).
    pub temperature: f64,
    /// Queries per block: one rayon task each (256).
    pub query_block: usize,
    /// Bank rows per similarity tile (4096).
    pub bank_block: usize,
}

impl Default for KnnOptions {
    fn default() -> Self {
        Self {
            k: 20,
            temperature: 0.07,
            query_block: 256,
            bank_block: 4096,
        }
    }
}

/// Result of a kNN evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnnResult {
    /// Neighbours that actually voted: `min(k, bank size)`.
    pub k: usize,
    pub temperature: f64,
    pub bank_size: usize,
    pub queries: usize,
    pub top1: f64,
    pub top5: f64,
    /// Predicted class of every query (not written to reports: it is as long as the test set).
    #[serde(skip)]
    pub predictions: Vec<usize>,
}

/// Weighted kNN classification of `queries` against the labelled `bank` (see the module docs).
/// Both are `[rows, dim]`; `num_classes` bounds the labels.
pub fn knn_classify(
    bank: ArrayView2<'_, f32>,
    bank_labels: &[i64],
    queries: ArrayView2<'_, f32>,
    query_labels: &[i64],
    num_classes: usize,
    options: &KnnOptions,
) -> Result<KnnResult, EvalError> {
    validate(bank, bank_labels, queries, query_labels, options)?;
    let bank_classes = checked_labels("kNN bank labels", bank_labels, num_classes)?;
    let query_classes = checked_labels("kNN query labels", query_labels, num_classes)?;
    let bank = l2_normalized(bank, "kNN bank")?;
    let queries = l2_normalized(queries, "kNN queries")?;
    let k = options.k.min(bank.nrows());
    let inverse_temperature = (1.0 / options.temperature) as f32;

    let starts: Vec<usize> = (0..queries.nrows()).step_by(options.query_block).collect();
    let per_block: Vec<Vec<Vec<f32>>> = starts
        .par_iter()
        .map(|&start| {
            let end = (start + options.query_block).min(queries.nrows());
            let block = queries.slice(s![start..end, ..]);
            let neighbours = top_k_neighbours(block, bank.view(), k, options.bank_block);
            neighbours
                .into_iter()
                .map(|list| {
                    let mut votes = vec![0f32; num_classes];
                    for (similarity, bank_row) in list {
                        votes[bank_classes[bank_row]] += (similarity * inverse_temperature).exp();
                    }
                    votes
                })
                .collect()
        })
        .collect();

    let mut predictions = Vec::with_capacity(queries.nrows());
    let mut top1_hits = 0usize;
    let mut top5_hits = 0usize;
    for (votes, &truth) in per_block.iter().flatten().zip(&query_classes) {
        let predicted = argmax(votes);
        top1_hits += usize::from(predicted == truth);
        top5_hits += usize::from(in_top_k(votes, truth, 5));
        predictions.push(predicted);
    }
    let n = queries.nrows() as f64;
    Ok(KnnResult {
        k,
        temperature: options.temperature,
        bank_size: bank.nrows(),
        queries: queries.nrows(),
        top1: top1_hits as f64 / n,
        top5: top5_hits as f64 / n,
        predictions,
    })
}

fn validate(
    bank: ArrayView2<'_, f32>,
    bank_labels: &[i64],
    queries: ArrayView2<'_, f32>,
    query_labels: &[i64],
    options: &KnnOptions,
) -> Result<(), EvalError> {
    if bank.nrows() != bank_labels.len() {
        return Err(EvalError::LengthMismatch {
            what: "kNN bank",
            expected: bank_labels.len(),
            actual: bank.nrows(),
        });
    }
    if queries.nrows() != query_labels.len() {
        return Err(EvalError::LengthMismatch {
            what: "kNN queries",
            expected: query_labels.len(),
            actual: queries.nrows(),
        });
    }
    if bank.ncols() != queries.ncols() {
        return Err(EvalError::DimensionMismatch {
            what: "kNN bank vs queries",
            left: bank.ncols(),
            right: queries.ncols(),
        });
    }
    for (what, rows) in [("kNN bank", bank.nrows()), ("kNN queries", queries.nrows())] {
        if rows == 0 {
            return Err(EvalError::TooFewRows {
                what,
                needed: 1,
                actual: 0,
            });
        }
    }
    let invalid = |message: &str| {
        Err(EvalError::InvalidOption {
            what: "kNN",
            message: message.to_string(),
        })
    };
    if options.k == 0 {
        return invalid("k must be at least 1");
    }
    if !(options.temperature.is_finite() && options.temperature > 0.0) {
        return invalid(&format!(
            "temperature must be positive and finite, got {}",
            options.temperature
        ));
    }
    if options.query_block == 0 || options.bank_block == 0 {
        return invalid("block sizes must be at least 1");
    }
    Ok(())
}

/// Rows scaled to unit L2 norm; all-zero rows stay zero (cosine 0 with everything).
pub(crate) fn l2_normalized(
    x: ArrayView2<'_, f32>,
    what: &'static str,
) -> Result<Array2<f32>, EvalError> {
    let mut out = x.to_owned();
    for (row_index, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() {
            return Err(EvalError::NonFinite {
                what,
                row: row_index,
            });
        }
        if norm > 0.0 {
            let scale = (1.0 / norm) as f32;
            row.mapv_inplace(|v| v * scale);
        }
    }
    Ok(out)
}

/// For each query row, its `k` most similar bank rows as `(similarity, bank row)`, most
/// similar first; ties keep the earlier bank row.
fn top_k_neighbours(
    queries: ArrayView2<'_, f32>,
    bank: ArrayView2<'_, f32>,
    k: usize,
    bank_block: usize,
) -> Vec<Vec<(f32, usize)>> {
    let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(k + 1); queries.nrows()];
    let mut start = 0;
    while start < bank.nrows() {
        let end = (start + bank_block).min(bank.nrows());
        let similarities = queries.dot(&bank.slice(s![start..end, ..]).t());
        for (list, row) in best.iter_mut().zip(similarities.rows()) {
            for (offset, &similarity) in row.iter().enumerate() {
                if list.len() == k && similarity <= list[k - 1].0 {
                    continue;
                }
                // Insert after every entry at least as similar: keeps earlier rows first on ties.
                let position = list.partition_point(|&(s, _)| s >= similarity);
                list.insert(position, (similarity, start + offset));
                list.truncate(k);
            }
        }
        start = end;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Points around three well separated directions of the plane, `per_class` each.
    fn clusters(per_class: usize, jitter: f32) -> (Array2<f32>, Vec<i64>) {
        let centres = [(1.0f32, 0.0f32), (-0.5, 0.866), (-0.5, -0.866)];
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for (class, &(cx, cy)) in centres.iter().enumerate() {
            for i in 0..per_class {
                let t = (i as f32 / per_class as f32 - 0.5) * jitter;
                rows.extend_from_slice(&[cx - t * cy, cy + t * cx]);
                labels.push(class as i64);
            }
        }
        (
            Array2::from_shape_vec((labels.len(), 2), rows).unwrap(),
            labels,
        )
    }

    #[test]
    fn clustered_points_are_all_classified_correctly() {
        let (bank, bank_labels) = clusters(30, 0.4);
        let (queries, query_labels) = clusters(7, 0.3);
        let result = knn_classify(
            bank.view(),
            &bank_labels,
            queries.view(),
            &query_labels,
            3,
            &KnnOptions::default(),
        )
        .unwrap();
        assert_eq!(result.k, 20);
        assert_eq!(result.top1, 1.0);
        assert_eq!(result.top5, 1.0);
        assert_eq!(result.predictions.len(), 21);
    }

    #[test]
    fn the_vote_is_weighted_by_similarity() {
        // One neighbour of class 0 at cosine 1, two of class 1 at cosine 0. Majority voting
        // would say class 1; with weights exp(1/0.07) ≫ 2·exp(0) the answer is class 0.
        let bank = array![[1.0f32, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]];
        let bank_labels = [0, 1, 1, 0];
        let queries = array![[2.0f32, 0.0]];
        let options = KnnOptions {
            k: 3,
            ..KnnOptions::default()
        };
        let result =
            knn_classify(bank.view(), &bank_labels, queries.view(), &[0], 2, &options).unwrap();
        assert_eq!(result.predictions, vec![0]);
        // At a very high temperature the weights are almost equal and the majority wins.
        let flat = KnnOptions {
            temperature: 1e6,
            ..options
        };
        let result =
            knn_classify(bank.view(), &bank_labels, queries.view(), &[0], 2, &flat).unwrap();
        assert_eq!(result.predictions, vec![1]);
        assert_eq!(result.top1, 0.0);
    }

    #[test]
    fn blocking_does_not_change_the_answer() {
        let (bank, bank_labels) = clusters(40, 3.0);
        let (queries, query_labels) = clusters(15, 2.5);
        let whole = knn_classify(
            bank.view(),
            &bank_labels,
            queries.view(),
            &query_labels,
            3,
            &KnnOptions {
                k: 5,
                ..KnnOptions::default()
            },
        )
        .unwrap();
        let blocked = knn_classify(
            bank.view(),
            &bank_labels,
            queries.view(),
            &query_labels,
            3,
            &KnnOptions {
                k: 5,
                query_block: 4,
                bank_block: 7,
                ..KnnOptions::default()
            },
        )
        .unwrap();
        assert_eq!(whole.predictions, blocked.predictions);
        assert_eq!(whole.top1, blocked.top1);
    }

    #[test]
    fn top_k_neighbours_are_the_most_similar_in_order() {
        let bank = array![[1.0f32, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]];
        let queries = array![[1.0f32, 0.0]];
        let found = top_k_neighbours(queries.view(), bank.view(), 3, 2);
        let rows: Vec<usize> = found[0].iter().map(|&(_, r)| r).collect();
        assert_eq!(rows, vec![0, 3, 1]);
    }

    #[test]
    fn errors_name_the_problem() {
        let bank = array![[1.0f32, 0.0]];
        let queries = array![[1.0f32, 0.0, 0.0]];
        assert!(matches!(
            knn_classify(
                bank.view(),
                &[0],
                queries.view(),
                &[0],
                1,
                &KnnOptions::default()
            ),
            Err(EvalError::DimensionMismatch { .. })
        ));
        let nan = array![[f32::NAN, 0.0]];
        assert!(matches!(
            knn_classify(
                nan.view(),
                &[0],
                bank.view(),
                &[0],
                1,
                &KnnOptions::default()
            ),
            Err(EvalError::NonFinite { row: 0, .. })
        ));
        assert!(matches!(
            knn_classify(
                bank.view(),
                &[3],
                bank.view(),
                &[0],
                2,
                &KnnOptions::default()
            ),
            Err(EvalError::LabelOutOfRange { label: 3, .. })
        ));
    }
}
