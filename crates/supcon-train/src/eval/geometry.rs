//! The geometry of an embedding: alignment and uniformity on the hypersphere (Wang & Isola,
//! "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
//! Hypersphere", ICML 2020) and the effective rank (Roy & Vetterli, "The effective rank: a
//! measure of effective dimensionality", EUSIPCO 2007).
//!
//! Alignment and uniformity are defined on L2-normalised features, so both functions
//! normalise their inputs first (as the loss sees them). The effective rank is taken of the
//! embedding matrix as given (not centred), as RankMe (Garrido et al. 2023) does.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use ndarray_linalg::{Eigh, SVD, UPLO};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::knn::l2_normalized;
use super::EvalError;

/// `E ‖f(x) − f(y)‖²` over positive pairs: row `i` of `view_a` and row `i` of `view_b` are two
/// views of one sample. 0 when both views embed identically; at most 4.
pub fn alignment(
    view_a: ArrayView2<'_, f32>,
    view_b: ArrayView2<'_, f32>,
) -> Result<f64, EvalError> {
    if view_a.dim() != view_b.dim() {
        return Err(if view_a.ncols() != view_b.ncols() {
            EvalError::DimensionMismatch {
                what: "alignment views",
                left: view_a.ncols(),
                right: view_b.ncols(),
            }
        } else {
            EvalError::LengthMismatch {
                what: "alignment second view",
                expected: view_a.nrows(),
                actual: view_b.nrows(),
            }
        });
    }
    if view_a.nrows() == 0 {
        return Err(EvalError::TooFewRows {
            what: "alignment",
            needed: 1,
            actual: 0,
        });
    }
    let a = l2_normalized(view_a, "alignment first view")?;
    let b = l2_normalized(view_b, "alignment second view")?;
    let total: f64 = a
        .rows()
        .into_iter()
        .zip(b.rows())
        .map(|(x, y)| {
            x.iter()
                .zip(y.iter())
                .map(|(&p, &q)| f64::from(p - q).powi(2))
                .sum::<f64>()
        })
        .sum();
    Ok(total / a.nrows() as f64)
}

/// `log E exp(−t ‖f(x) − f(y)‖²)` over distinct pairs `x ≠ y` (t = 2 in the paper). More
/// negative is more uniform; the minimum over `n → ∞` points on `S^{d−1}` approaches
/// `−t·2 = −4` for large `d`. At most `max_samples` rows enter (a seeded subsample,
/// so the `O(m²)` pairs stay affordable); pairs are taken in row blocks in parallel.
pub fn uniformity(
    embeddings: ArrayView2<'_, f32>,
    t: f64,
    max_samples: usize,
    seed: u64,
) -> Result<f64, EvalError> {
    if embeddings.nrows() < 2 || max_samples < 2 {
        return Err(EvalError::TooFewRows {
            what: "uniformity (rows and max_samples)",
            needed: 2,
            actual: embeddings.nrows().min(max_samples),
        });
    }
    let rows = subsample_rows(embeddings.nrows(), max_samples, seed);
    let picked = embeddings.select(Axis(0), &rows);
    let x = l2_normalized(picked.view(), "uniformity")?;
    let squared_norms: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
        .collect();
    let m = x.nrows();
    const BLOCK: usize = 256;
    let starts: Vec<usize> = (0..m).step_by(BLOCK).collect();
    let sum: f64 = starts
        .par_iter()
        .map(|&start| {
            let end = (start + BLOCK).min(m);
            // Only columns after the block's first row are needed (pairs i < j).
            let gram = x
                .slice(s![start..end, ..])
                .dot(&x.slice(s![start.., ..]).t());
            let mut partial = 0f64;
            for (local_i, row) in gram.rows().into_iter().enumerate() {
                let i = start + local_i;
                for (local_j, &g) in row.iter().enumerate().skip(local_i + 1) {
                    let j = start + local_j;
                    let d2 = (squared_norms[i] + squared_norms[j] - 2.0 * f64::from(g)).max(0.0);
                    partial += (-t * d2).exp();
                }
            }
            partial
        })
        .sum();
    let pairs = (m * (m - 1) / 2) as f64;
    Ok((sum / pairs).ln())
}

/// `min(n, max)` distinct row indices, sorted: all rows when `n ≤ max`, otherwise a seeded
/// partial Fisher–Yates shuffle (splitmix64), so a run's figure is reproducible.
fn subsample_rows(n: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..n).collect();
    if n <= max {
        return indices;
    }
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in 0..max {
        let j = i + (next() % (n - i) as u64) as usize;
        indices.swap(i, j);
    }
    indices.truncate(max);
    indices.sort_unstable();
    indices
}

/// `exp(H(p))` with `p_k = σ_k / Σ σ` the L1-normalised singular values of `embeddings`:
/// between 1 (rank one) and `min(rows, cols)` (all singular values equal). 0 for an all-zero
/// matrix, where it is undefined.
pub fn effective_rank(embeddings: ArrayView2<'_, f32>) -> Result<f64, EvalError> {
    if embeddings.nrows() == 0 || embeddings.ncols() == 0 {
        return Err(EvalError::TooFewRows {
            what: "effective rank",
            needed: 1,
            actual: 0,
        });
    }
    if let Some(row) = embeddings
        .rows()
        .into_iter()
        .position(|r| r.iter().any(|v| !v.is_finite()))
    {
        return Err(EvalError::NonFinite {
            what: "effective rank",
            row,
        });
    }
    let x: Array2<f64> = embeddings.mapv(f64::from);
    let (_, singular_values, _) = x.svd(false, false).map_err(|e| {
        EvalError::Linalg(format!("SVD failed: {e} (matrix {:?})", embeddings.dim()))
    })?;
    Ok(effective_rank_of_spectrum(&singular_values.to_vec()))
}

fn effective_rank_of_spectrum(singular_values: &[f64]) -> f64 {
    let total: f64 = singular_values.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = singular_values
        .iter()
        .map(|&s| s / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// Settings of [`embedding_geometry`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeometryOptions {
    /// `t` of the uniformity (2).
    pub uniformity_t: f64,
    /// Rows that enter the uniformity's pairs (5000 → 12.5 M pairs).
    pub max_uniformity_samples: usize,
    /// Seed of that subsample.
    pub seed: u64,
}

impl Default for GeometryOptions {
    fn default() -> Self {
        Self {
            uniformity_t: 2.0,
            max_uniformity_samples: 5000,
            seed: 0,
        }
    }
}

/// Alignment (when two views are given), uniformity and effective rank of one embedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingGeometry {
    pub samples: usize,
    pub dim: usize,
    pub alignment: Option<f64>,
    pub uniformity: f64,
    pub uniformity_samples: usize,
    pub effective_rank: f64,
}

/// Computes [`EmbeddingGeometry`] of `embeddings` (`[samples, dim]`); `second_view`, when
/// given, holds another augmented view of the same samples, row for row, for the alignment.
pub fn embedding_geometry(
    embeddings: ArrayView2<'_, f32>,
    second_view: Option<ArrayView2<'_, f32>>,
    options: &GeometryOptions,
) -> Result<EmbeddingGeometry, EvalError> {
    Ok(EmbeddingGeometry {
        samples: embeddings.nrows(),
        dim: embeddings.ncols(),
        alignment: second_view.map(|b| alignment(embeddings, b)).transpose()?,
        uniformity: uniformity(
            embeddings,
            options.uniformity_t,
            options.max_uniformity_samples,
            options.seed,
        )?,
        uniformity_samples: embeddings.nrows().min(options.max_uniformity_samples),
        effective_rank: effective_rank(embeddings)?,
    })
}

/// The 2-D principal-component projection of `embeddings` (`[n, dim]`, centred inside) and
/// the fraction of the variance each of the two components explains.
pub fn pca_2d(embeddings: ArrayView2<'_, f32>) -> Result<(Array2<f32>, [f64; 2]), EvalError> {
    let (n, dim) = embeddings.dim();
    let invalid =
        |message: &str| EvalError::Linalg(format!("PCA of embeddings {n}×{dim}: {message}"));
    if n < 2 || dim == 0 {
        return Err(invalid("needs at least 2 rows and 1 column"));
    }
    let x: Array2<f64> = embeddings.mapv(f64::from);
    let mean: Array1<f64> = x.mean_axis(Axis(0)).ok_or_else(|| invalid("empty"))?;
    let centred = &x - &mean;
    let covariance = centred.t().dot(&centred) / (n as f64 - 1.0);
    if covariance.iter().any(|v| !v.is_finite()) {
        return Err(invalid("non-finite values"));
    }
    let (eigenvalues, eigenvectors) = covariance
        .eigh(UPLO::Lower)
        .map_err(|e| invalid(&format!("eigen-decomposition failed: {e}")))?;
    // Eigenvalues come in ascending order: the last two are the principal components.
    let total: f64 = eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let mut projection = Array2::<f32>::zeros((n, 2));
    let mut explained = [0.0; 2];
    for (component, explained_part) in explained.iter_mut().enumerate().take(dim) {
        let index = dim - 1 - component;
        let mut vector = eigenvectors.column(index).to_owned();
        // Fix the sign (the largest entry positive) so plots of one run are reproducible.
        let largest =
            vector
                .iter()
                .copied()
                .fold(0.0f64, |acc, v| if v.abs() > acc.abs() { v } else { acc });
        if largest < 0.0 {
            vector.mapv_inplace(|v| -v);
        }
        let scores = centred.dot(&vector);
        projection
            .column_mut(component)
            .assign(&scores.mapv(|v| v as f32));
        *explained_part = if total > 0.0 {
            eigenvalues[index].max(0.0) / total
        } else {
            0.0
        };
    }
    Ok((projection, explained))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    fn pca_finds_the_direction_of_largest_variance() {
        // Points spread along (1, 1, 0) with a little spread along (0, 0, 1).
        let x = Array2::from_shape_fn((50, 3), |(i, c)| {
            let t = i as f32 - 25.0;
            match c {
                0 | 1 => t,
                _ => 0.1 * ((i % 5) as f32 - 2.0),
            }
        });
        let (projection, explained) = pca_2d(x.view()).unwrap();
        assert!(explained[0] > 0.99, "{explained:?}");
        assert!(explained[0] + explained[1] > 0.999, "{explained:?}");
        // PC1 score of row i is (i − 24.5)·√2 (the mean of i − 25 is −0.5) up to the sign,
        // which is fixed so that the largest entry of the component is positive.
        for i in [0usize, 10, 49] {
            let expected = (i as f32 - 24.5) * 2f32.sqrt();
            assert!(
                (projection[[i, 0]] - expected).abs() < 1e-3,
                "row {i}: {}",
                projection[[i, 0]]
            );
        }
        let one_column = array![[1.0f32], [2.0], [4.0]];
        let (p, e) = pca_2d(one_column.view()).unwrap();
        assert_eq!(p.column(1).iter().filter(|&&v| v != 0.0).count(), 0);
        assert!((e[0] - 1.0).abs() < 1e-12);
        assert!(pca_2d(array![[1.0f32, 2.0]].view()).is_err());
    }

    #[test]
    fn alignment_of_identical_views_is_zero_and_of_opposite_views_four() {
        let a = array![[1.0f32, 2.0, 3.0], [0.0, -1.0, 0.5]];
        assert!(alignment(a.view(), a.view()).unwrap().abs() < 1e-12);
        // Scaling does not matter: the features are normalised first.
        let scaled = a.mapv(|v| 3.0 * v);
        assert!(alignment(a.view(), scaled.view()).unwrap().abs() < 1e-10);
        let opposite = a.mapv(|v| -v);
        assert!((alignment(a.view(), opposite.view()).unwrap() - 4.0).abs() < 1e-6);
        // Orthogonal unit vectors: ‖x − y‖² = 2.
        let x = array![[1.0f32, 0.0]];
        let y = array![[0.0f32, 1.0]];
        assert!((alignment(x.view(), y.view()).unwrap() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn uniformity_of_hand_computed_configurations() {
        // All points equal: every pair at distance 0, log E exp(0) = 0 (up to f32 rounding
        // of the normalised rows).
        let same = Array2::from_elem((5, 3), 1.0f32);
        assert!(uniformity(same.view(), 2.0, 100, 0).unwrap().abs() < 1e-6);
        // Two antipodal points: ‖x − y‖² = 4, log exp(−2·4) = −8.
        let antipodal = array![[0.0f32, 1.0], [0.0, -1.0]];
        assert!((uniformity(antipodal.view(), 2.0, 100, 0).unwrap() + 8.0).abs() < 1e-9);
        // The 4 axis directions ±e1, ±e2: 4 pairs at distance² 2 and 2 at distance² 4.
        let square = array![[1.0f32, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]];
        let expected = ((4.0 * (-4.0f64).exp() + 2.0 * (-8.0f64).exp()) / 6.0).ln();
        assert!((uniformity(square.view(), 2.0, 100, 0).unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn uniformity_blocks_and_subsampling_agree_with_direct_sum() {
        // 600 points on a circle: more than one 256-row block.
        let n = 600;
        let points = Array2::from_shape_fn((n, 2), |(i, c)| {
            let angle = i as f32 * 0.37;
            if c == 0 {
                angle.cos()
            } else {
                angle.sin()
            }
        });
        let mut direct = 0f64;
        for i in 0..n {
            for j in i + 1..n {
                let d2: f64 = (0..2)
                    .map(|c| f64::from(points[[i, c]] - points[[j, c]]).powi(2))
                    .sum();
                direct += (-2.0 * d2).exp();
            }
        }
        let direct = (direct / (n * (n - 1) / 2) as f64).ln();
        assert!((uniformity(points.view(), 2.0, n, 0).unwrap() - direct).abs() < 1e-5);
        let sub = uniformity(points.view(), 2.0, 200, 7).unwrap();
        assert!(
            (sub - direct).abs() < 0.1,
            "subsample {sub} vs all {direct}"
        );
        let rows = subsample_rows(600, 200, 7);
        assert_eq!(rows.len(), 200);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn effective_rank_of_identity_is_d_and_of_rank_one_is_one() {
        let identity = Array2::<f32>::eye(6);
        assert!((effective_rank(identity.view()).unwrap() - 6.0).abs() < 1e-9);
        let rank_one = Array2::from_shape_fn((20, 5), |(i, j)| (i as f32 + 1.0) * (j as f32 - 2.5));
        assert!((effective_rank(rank_one.view()).unwrap() - 1.0).abs() < 1e-6);
        // diag(3, 1): p = (3/4, 1/4).
        let diag = array![[3.0f32, 0.0], [0.0, 1.0], [0.0, 0.0]];
        let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((effective_rank(diag.view()).unwrap() - h.exp()).abs() < 1e-9);
        assert_eq!(
            effective_rank(Array2::<f32>::zeros((3, 2)).view()).unwrap(),
            0.0
        );
    }

    #[test]
    fn geometry_bundles_the_three() {
        let a = array![[1.0f32, 0.0], [0.0, 1.0], [-1.0, 0.0]];
        let g = embedding_geometry(a.view(), Some(a.view()), &GeometryOptions::default()).unwrap();
        assert_eq!(g.alignment, Some(0.0));
        assert_eq!(g.uniformity_samples, 3);
        assert!((g.effective_rank - effective_rank(a.view()).unwrap()).abs() < 1e-12);
        let nan = array![[f32::NAN, 0.0], [0.0, 1.0]];
        assert!(matches!(
            effective_rank(nan.view()),
            Err(EvalError::NonFinite { row: 0, .. })
        ));
    }
}
