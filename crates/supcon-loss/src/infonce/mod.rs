//! InfoNCE with an explicit positive and explicit negatives: MoCo's loss (He et al. 2020;
//! van den Oord et al. 2018).
//!
//! ```
//! use ndarray::{Array2, Array3};
//! use supcon_loss::{infonce_loss, InfoNceInput, InfoNceOptions, Negatives};
//!
//! // 4 queries, their 4 positive keys, a queue of 6 shared negatives; 3 dims.
//! let row = |i: usize, d: usize| ((i * 7 + d * 3) as f32 * 0.37).sin();
//! let q = Array2::from_shape_fn((4, 3), |(b, d)| row(b, d));
//! let k = Array2::from_shape_fn((4, 3), |(b, d)| row(b, d) + 0.1);
//! let queue = Array2::from_shape_fn((6, 3), |(j, d)| row(j + 10, d));
//! let options = InfoNceOptions::new(0.2).with_normalize(true);
//! let out = infonce_loss(
//!     &InfoNceInput::new(q.view(), k.view(), Negatives::Shared(queue.view())),
//!     &options,
//! )?;
//! assert!(out.loss.is_finite());
//! assert_eq!(out.grad.shape(), &[4, 3]); // ∂loss/∂q only
//!
//! // Or 5 negatives per query, e.g. sampled from a memory bank.
//! let bank = Array3::from_shape_fn((4, 5, 3), |(b, j, d)| row(b * 5 + j + 20, d));
//! let out = infonce_loss(
//!     &InfoNceInput::new(q.view(), k.view(), Negatives::PerQuery(bank.view())),
//!     &options,
//! )?;
//! assert!(out.loss > 0.0);
//! # Ok::<(), supcon_loss::LossError>(())
//! ```
//!
//! # The math
//!
//! Queries `q_b`, positives (keys) `k_b`, b < B; negatives `n_bj`, j < m: the same K rows
//! `n_j` for every query ([`Negatives::Shared`], MoCo's queue, m = K) or m rows per query
//! ([`Negatives::PerQuery`], sampled from a memory bank). All rows have D dims. With
//! `normalize`, `ẑ = x/‖x‖` for every row; otherwise `ẑ = x`. Temperature τ.
//!
//! ```text
//! x_b0 = ẑ_qb·ẑ_kb / τ                     the positive logit (index 0, as in MoCo's code)
//! x_bj = ẑ_qb·ẑ_nbj / τ                    the negative logits, j = 1..m
//! ℓ_b  = −log( e^{x_b0} / (e^{x_b0} + Σ_j e^{x_bj}) )
//!      = softplus(L_b − x_b0)               with L_b = log Σ_j e^{x_bj}
//! Loss = (1/B) Σ_b ℓ_b
//! ```
//!
//! **Gradient** (with respect to the queries only: keys and negatives are constants, as in
//! MoCo, where they come from the momentum encoder or the queue). With `p = softmax` over the
//! m + 1 logits `[x_b0, x_b1, ..]`, `∂ℓ_b/∂x_b0 = p_0 − 1` and `∂ℓ_b/∂x_bj = p_j`, so
//!
//! ```text
//! ∂ℓ_b/∂ẑ_qb = (Σ_j p_j ẑ_nbj + p_0 ẑ_kb − ẑ_kb) / τ
//! ```
//!
//! The code uses the equivalent form that stays accurate when `p_0 ≈ 1` (an easy positive):
//! with `u_b = L_b − x_b0`, `1 − p_0 = σ(u_b)` and `p_j = σ(u_b) · e^{x_bj − L_b}`, hence
//!
//! ```text
//! ∂ℓ_b/∂ẑ_qb = σ(u_b) · (Σ_j e^{x_bj − L_b} ẑ_nbj − ẑ_kb) / τ
//! ∂Loss/∂q_b = (1/B) · (g − ẑ_qb (ẑ_qb·g)) / ‖q_b‖   with g = ∂ℓ_b/∂ẑ_qb   (normalize)
//! ∂Loss/∂q_b = (1/B) · ∂ℓ_b/∂ẑ_qb                                        (otherwise)
//! ```
//!
//! σ is the logistic function, the derivative of `softplus(u) = log(1 + eᵘ)`.
//!
//! **Special cases** (the tests check each): one positive and one negative gives the
//! triplet-like `softplus((s_n − s_p)/τ)` with `s = q·k`; per-query negatives equal to the
//! other queries' positives give the N-pairs loss (Sohn 2016, with a temperature); SupCon
//! without labels, two views and [`crate::ContrastMode::One`] is this loss with the second view
//! as the positive and both views of the other samples as the negatives.
//!
//! # Computation
//!
//! Shared negatives are processed in column blocks of [`INFONCE_COLUMN_BLOCK`] keys for blocks
//! of [`INFONCE_ROW_BLOCK`] queries: a matrix product gives the block of similarities (in the
//! element type `T`), an online log-sum-exp folds it into `L_b` (in `f64`) and a second product
//! folds the weights `e^{x_bj − max}` times the negatives into a rescaled `f64` accumulator of
//! `Σ_j e^{x_bj − L_b} ẑ_nj`. One pass, no B × K matrix: extra memory O(B·D + K) (the
//! normalized queries, the negatives' inverse norms) plus
//! O(ROW_BLOCK·COLUMN_BLOCK + ROW_BLOCK·D) per task. Per-query negatives are streamed
//! the same way, one query at a time, with the dot products in `f64`. Normalized rows are
//! never copied: the similarities of the raw negatives are scaled by their inverse norms.
//!
//! Query blocks run in parallel on rayon's current pool; every block owns its rows and walks
//! the negatives in a fixed order, and the loss is summed in query order, so the results are
//! bit-identical for any number of threads.
//!
//! **Precision** (f32 inputs against the same computation in `f64` on the same values): with R
//! the largest row norm entering the dot products (1 when normalizing) and u = 2⁻²⁴, each logit
//! is within `γ = (D + 2)·u·R²/τ` of its f64 value, and `ℓ_b = softplus(L_b − x_b0)` is
//! 2-Lipschitz in the max norm of the logits (log-sum-exp and softplus are 1-Lipschitz), so
//! `|Loss_f32 − Loss_f64| ≤ 2γ`. The tests check this bound and a gradient within `1e-3` of its
//! largest element (τ ≥ 0.05, rows of norm about 1).

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

use crate::checks::{check_finite, check_nonzero_rows};
use crate::explicit::{
    add_scaled, check_len, check_not_empty, check_temperature, dot_f64, inverse_norm,
    normalization_backward, sigmoid, softplus, OnlineSoftmax,
};
use crate::{Element, LossError};

/// Queries per block (and per parallel task).
pub const INFONCE_ROW_BLOCK: usize = 32;

/// Negatives per block: at most `INFONCE_ROW_BLOCK × INFONCE_COLUMN_BLOCK` similarities exist at
/// a time per task, whatever K.
pub const INFONCE_COLUMN_BLOCK: usize = 512;

/// The negatives of every query.
#[derive(Clone, Copy, Debug)]
pub enum Negatives<'a, T = f32> {
    /// `[K, D]`: the same K negatives for every query (MoCo's queue).
    Shared(ArrayView2<'a, T>),
    /// `[B, m, D]`: m negatives of their own for each of the B queries (e.g. sampled from a
    /// memory bank).
    PerQuery(ArrayView3<'a, T>),
}

impl<T> Negatives<'_, T> {
    /// m, the number of negatives of each query (K for shared negatives).
    pub fn per_query(&self) -> usize {
        match self {
            Negatives::Shared(n) => n.nrows(),
            Negatives::PerQuery(n) => n.dim().1,
        }
    }

    /// The shape of the negatives: `[K, D]` or `[B, m, D]`.
    pub fn shape(&self) -> &[usize] {
        match self {
            Negatives::Shared(n) => n.shape(),
            Negatives::PerQuery(n) => n.shape(),
        }
    }
}

/// The borrowed inputs of one InfoNCE evaluation.
#[derive(Clone, Copy, Debug)]
pub struct InfoNceInput<'a, T = f32> {
    /// `[B, D]` queries; the gradient is with respect to them.
    pub queries: ArrayView2<'a, T>,
    /// `[B, D]`: the positive (key) of each query; no gradient.
    pub positives: ArrayView2<'a, T>,
    /// Shared `[K, D]` or per-query `[B, m, D]` negatives; no gradient.
    pub negatives: Negatives<'a, T>,
}

impl<'a, T> InfoNceInput<'a, T> {
    /// Queries, their positives and the negatives.
    pub fn new(
        queries: ArrayView2<'a, T>,
        positives: ArrayView2<'a, T>,
        negatives: Negatives<'a, T>,
    ) -> Self {
        Self {
            queries,
            positives,
            negatives,
        }
    }
}

/// Options of [`infonce_loss`]. Build them with [`InfoNceOptions::new`] or `default()` and the
/// `with_*` methods (the struct is `#[non_exhaustive]`, so options can be added later).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InfoNceOptions {
    /// τ, the temperature that divides every logit. Default 0.07, MoCo v1's value (MoCo v2
    /// uses 0.2).
    pub temperature: f64,
    /// L2-normalize queries, positives and negatives inside the loss and back-propagate
    /// through the queries' normalization. Off by default: models usually normalize their
    /// outputs (MoCo does) themselves.
    pub normalize: bool,
}

impl Default for InfoNceOptions {
    fn default() -> Self {
        Self {
            temperature: 0.07,
            normalize: false,
        }
    }
}

impl InfoNceOptions {
    /// The default options with temperature `temperature`.
    pub fn new(temperature: f64) -> Self {
        Self {
            temperature,
            ..Self::default()
        }
    }

    /// The same options with temperature `temperature`.
    pub fn with_temperature(self, temperature: f64) -> Self {
        Self {
            temperature,
            ..self
        }
    }

    /// The same options with `normalize` set.
    pub fn with_normalize(self, normalize: bool) -> Self {
        Self { normalize, ..self }
    }
}

/// The InfoNCE loss and its gradient with respect to the queries.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InfoNceOutput<T = f32> {
    /// The loss, averaged over the B queries.
    pub loss: f64,
    /// ∂loss/∂queries, `[B, D]` (standard layout).
    pub grad: Array2<T>,
}

/// Checks the inputs and options of [`infonce_loss`] (which calls it first).
///
/// Checks, in this order: τ positive and finite; queries `[B, D]` with B, D > 0; positives
/// `[B, D]`; negatives `[K, D]` with K > 0 or `[B, m, D]` with m > 0; every value finite
/// (queries, positives, negatives); with `normalize`, no all-zero row (same order). Errors name
/// the input and, for values, the index of the first bad element. Costs O((B + K)·D) or
/// O(B·m·D).
pub fn validate_infonce<T: Element>(
    input: &InfoNceInput<'_, T>,
    options: &InfoNceOptions,
) -> Result<(), LossError> {
    check_temperature(options.temperature)?;
    check_rows(
        input.queries,
        input.positives,
        input.negatives,
        options.normalize,
    )
}

/// The shape, finiteness and zero-row checks shared with [`crate::nce`]: queries `[B, D]`,
/// positives `[B, D]`, negatives `[K, D]` or `[B, m, D]`.
pub(crate) fn check_rows<T: Element>(
    queries: ArrayView2<'_, T>,
    positives: ArrayView2<'_, T>,
    negatives: Negatives<'_, T>,
    normalize: bool,
) -> Result<(), LossError> {
    check_row_shapes(
        queries.dim().into(),
        positives.dim().into(),
        negatives.shape(),
    )?;
    let negative_values = match negatives {
        Negatives::Shared(n) => n.into_dyn(),
        Negatives::PerQuery(n) => n.into_dyn(),
    };
    check_finite("queries", queries.into_dyn())?;
    check_finite("positives", positives.into_dyn())?;
    check_finite("negatives", negative_values.view())?;
    if normalize {
        check_nonzero_rows("queries", queries.into_dyn())?;
        check_nonzero_rows("positives", positives.into_dyn())?;
        check_nonzero_rows("negatives", negative_values)?;
    }
    Ok(())
}

/// The shape rules of InfoNCE and NCE, shared by every entry point (host arrays and
/// `tensor`'s tensors): queries `[B, D]` with B, D > 0; positives `[B, D]`; negatives
/// `[K, D]` (shared, K > 0) or `[B, m, D]` (per query, m > 0), told apart by their rank.
pub(crate) fn check_row_shapes(
    queries: [usize; 2],
    positives: [usize; 2],
    negatives: &[usize],
) -> Result<(), LossError> {
    let [batch, dim] = queries;
    check_not_empty("queries", &queries, &["batch", "dim"])?;
    let batch_why = format!("the batch size of queries {queries:?}");
    let dim_why = format!("the dim of queries {queries:?}");
    check_len(
        "positives batch",
        batch,
        &batch_why,
        positives[0],
        &positives,
    )?;
    check_len("positives dim", dim, &dim_why, positives[1], &positives)?;
    match *negatives {
        [_, d] => {
            check_not_empty("negatives", negatives, &["K", "dim"])?;
            check_len("negatives dim", dim, &dim_why, d, negatives)?;
        }
        [b, _, d] => {
            check_len("negatives batch", batch, &batch_why, b, negatives)?;
            check_not_empty("negatives", negatives, &["batch", "m", "dim"])?;
            check_len("negatives dim", dim, &dim_why, d, negatives)?;
        }
        _ => {
            return Err(LossError::ShapeMismatch {
                what: "negatives rank",
                expected: "2 ([K, D], shared) or 3 ([B, m, D], per query)".into(),
                actual: format!("{} (shape {negatives:?})", negatives.len()),
            })
        }
    }
    Ok(())
}

/// The InfoNCE loss (see the [module docs](self)) and ∂loss/∂queries, in any [`Element`] type:
/// `f32` as in production, `f64` for gradient checks. Validates first
/// ([`validate_infonce`]); runs on rayon's current pool.
pub fn infonce_loss<T: Element>(
    input: &InfoNceInput<'_, T>,
    options: &InfoNceOptions,
) -> Result<InfoNceOutput<T>, LossError> {
    validate_infonce(input, options)?;
    let (batch, dim) = input.queries.dim();
    let _span = tracing::debug_span!(
        "infonce",
        batch,
        dim,
        negatives = input.negatives.per_query(),
        shared = matches!(input.negatives, Negatives::Shared(_)),
        element = T::NAME
    )
    .entered();
    let prep = Prepared::new(input, options);
    let mut grad = vec![T::zero(); batch * dim];
    let row_losses: Vec<Vec<f64>> = grad
        .par_chunks_mut(INFONCE_ROW_BLOCK * dim)
        .enumerate()
        .map(|(block, out)| prep.block(block * INFONCE_ROW_BLOCK, out))
        .collect();
    // Summed in query order: deterministic.
    let loss = row_losses.iter().flatten().sum::<f64>() / batch as f64;
    if !loss.is_finite() {
        return Err(LossError::Overflow { value: loss });
    }
    if let Some(bad) = grad.iter().find(|g| !g.to_f64().is_finite()) {
        return Err(LossError::Overflow {
            value: bad.to_f64(),
        });
    }
    let grad = Array2::from_shape_vec((batch, dim), grad)
        .map_err(|e| LossError::Backend(format!("gradient layout: {e}")))?;
    Ok(InfoNceOutput { loss, grad })
}

/// What every query block reads, built once in O((B + K)·D) or O(B·m·D).
struct Prepared<'p, 'a, T> {
    input: &'p InfoNceInput<'a, T>,
    inv_tau: f64,
    normalize: bool,
    /// Shared negatives: `ẑ_q`, the (normalized) queries in `T`, for the block products
    /// (empty for per-query negatives).
    queries: Array2<T>,
    /// 1/‖q_b‖ (1 without normalize).
    inv_queries: Vec<f64>,
    /// 1/‖k_b‖ (1 without normalize).
    inv_positives: Vec<f64>,
    /// 1/‖n‖ of every negative row, row-major over `[K]` or `[B, m]` (1 without normalize).
    inv_negatives: Vec<f64>,
}

impl<'p, 'a, T: Element> Prepared<'p, 'a, T> {
    fn new(input: &'p InfoNceInput<'a, T>, options: &InfoNceOptions) -> Self {
        let normalize = options.normalize;
        let inv_rows = |rows: ArrayView2<'_, T>| -> Vec<f64> {
            rows.outer_iter()
                .map(|r| inverse_norm(r, normalize))
                .collect()
        };
        let inv_queries = inv_rows(input.queries);
        let inv_positives = inv_rows(input.positives);
        let (queries, inv_negatives) = match input.negatives {
            Negatives::Shared(n) => {
                let mut z = input.queries.to_owned();
                if normalize {
                    for (mut row, &inv) in z.outer_iter_mut().zip(&inv_queries) {
                        row.mapv_inplace(|x| T::from_f64(x.to_f64() * inv));
                    }
                }
                (z, inv_rows(n))
            }
            Negatives::PerQuery(n) => {
                let inv = n
                    .outer_iter()
                    .flat_map(|rows| {
                        rows.outer_iter()
                            .map(|r| inverse_norm(r, normalize))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                (Array2::zeros((0, 0)), inv)
            }
        };
        Self {
            input,
            inv_tau: 1.0 / options.temperature,
            normalize,
            queries,
            inv_queries,
            inv_positives,
            inv_negatives,
        }
    }

    /// The queries `b0..` of one block: writes their gradient rows into `out` and returns their
    /// losses `ℓ_b`.
    fn block(&self, b0: usize, out: &mut [T]) -> Vec<f64> {
        let dim = self.input.queries.ncols();
        let height = out.len() / dim;
        let states = match self.input.negatives {
            Negatives::Shared(n) => {
                self.shared_negatives(self.queries.slice(s![b0..b0 + height, ..]), n)
            }
            Negatives::PerQuery(n) => (b0..b0 + height)
                .map(|b| self.own_negatives(b, n.index_axis(Axis(0), b)))
                .collect(),
        };
        let batch = self.input.queries.nrows() as f64;
        let mut losses = Vec::with_capacity(height);
        for (r, state) in states.into_iter().enumerate() {
            let b = b0 + r;
            let q = self.input.queries.row(b);
            let k = self.input.positives.row(b);
            let inv_k = self.inv_positives[b];
            // x_b0 = ẑ_q·ẑ_k/τ in f64 from the raw rows.
            let x0 = dot_f64(q, k) * self.inv_queries[b] * inv_k * self.inv_tau;
            let u = state.lse() - x0;
            losses.push(softplus(u));
            // ∂ℓ_b/∂ẑ_q = σ(u)·(Σ_j e^{x_j − L} ẑ_nj − ẑ_k)/τ, times 1/B.
            let factor = sigmoid(u) * self.inv_tau / batch;
            let inv_sum = 1.0 / state.sum;
            let mut grad: Vec<f64> = state
                .acc
                .iter()
                .zip(k.iter())
                .map(|(&a, &k)| factor * (a * inv_sum - k.to_f64() * inv_k))
                .collect();
            normalization_backward(&mut grad, q, self.normalize.then_some(self.inv_queries[b]));
            for (o, g) in out[r * dim..(r + 1) * dim].iter_mut().zip(grad) {
                *o = T::from_f64(g);
            }
        }
        losses
    }

    /// Online softmax states of a block of (normalized) queries against the shared negatives,
    /// `INFONCE_COLUMN_BLOCK` at a time, each block two matrix products in `T`.
    fn shared_negatives(
        &self,
        queries: ArrayView2<'_, T>,
        negatives: ArrayView2<'_, T>,
    ) -> Vec<OnlineSoftmax> {
        let (height, dim) = queries.dim();
        let keys = negatives.nrows();
        let width = INFONCE_COLUMN_BLOCK.min(keys);
        let mut states = vec![OnlineSoftmax::new(dim); height];
        let mut sims = Array2::<T>::zeros((height, width));
        let mut weights = Array2::<T>::zeros((height, width));
        let mut product = Array2::<T>::zeros((height, dim));
        let mut logits = vec![0.0f64; width];
        for j0 in (0..keys).step_by(width) {
            let w = width.min(keys - j0);
            let block = negatives.slice(s![j0..j0 + w, ..]);
            let mut sims = sims.slice_mut(s![.., ..w]);
            general_mat_mul(T::one(), &queries, &block.t(), T::zero(), &mut sims);
            let inv_norms = &self.inv_negatives[j0..j0 + w];
            for (r, state) in states.iter_mut().enumerate() {
                let logits = &mut logits[..w];
                for ((x, &dot), &inv) in logits.iter_mut().zip(sims.row(r)).zip(inv_norms) {
                    *x = dot.to_f64() * inv * self.inv_tau;
                }
                state.raise_max(logits.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                let mut sum = 0.0;
                for ((weight, &x), &inv) in
                    weights.row_mut(r).iter_mut().zip(&*logits).zip(inv_norms)
                {
                    let e = (x - state.max).exp();
                    sum += e;
                    // Weight of the raw row n_j: e^{x − max}·(1/‖n_j‖).
                    *weight = T::from_f64(e * inv);
                }
                state.sum += sum;
            }
            general_mat_mul(
                T::one(),
                &weights.slice(s![.., ..w]),
                &block,
                T::zero(),
                &mut product,
            );
            for (state, row) in states.iter_mut().zip(product.outer_iter()) {
                for (a, &p) in state.acc.iter_mut().zip(row.iter()) {
                    *a += p.to_f64();
                }
            }
        }
        states
    }

    /// The online softmax state of query `b` against its own negatives `[m, D]`, dot products
    /// in `f64`.
    fn own_negatives(&self, b: usize, negatives: ArrayView2<'_, T>) -> OnlineSoftmax {
        let (count, dim) = negatives.dim();
        let q = self.input.queries.row(b);
        let scale = self.inv_queries[b] * self.inv_tau;
        let inv_norms = &self.inv_negatives[b * count..(b + 1) * count];
        let width = INFONCE_COLUMN_BLOCK.min(count);
        let mut state = OnlineSoftmax::new(dim);
        let mut logits = vec![0.0f64; width];
        for j0 in (0..count).step_by(width) {
            let w = width.min(count - j0);
            let logits = &mut logits[..w];
            for (c, x) in logits.iter_mut().enumerate() {
                *x = dot_f64(q, negatives.row(j0 + c)) * inv_norms[j0 + c] * scale;
            }
            state.raise_max(logits.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            for (c, &x) in logits.iter().enumerate() {
                let e = (x - state.max).exp();
                state.sum += e;
                add_scaled(&mut state.acc, e * inv_norms[j0 + c], negatives.row(j0 + c));
            }
        }
        state
    }
}

#[cfg(feature = "tch")]
pub mod tensor;

/// InfoNCE with explicit positives and negatives (MoCo's loss; [`infonce_loss`],
/// [`tensor::infonce_loss_tensor`]).
#[derive(Clone, Debug, PartialEq)]
pub struct InfoNceOp(pub InfoNceOptions);

impl crate::LossOp for InfoNceOp {
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
        tensor::infonce_tch(input, &self.0, crate::libtorch::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(
        &self,
        (queries, positives, negatives): &Self::Tensors<'_>,
    ) -> Result<tch::Tensor, LossError> {
        tensor::infonce_loss_tensor(queries, positives, negatives, &self.0)
    }

    #[cfg(feature = "tch")]
    fn cpu_tensor_fwd(
        &self,
        (queries, positives, negatives): &Self::Tensors<'_>,
    ) -> Result<tch::Tensor, LossError> {
        use crate::libtorch::{host_rows, surrogate_from_host};
        let q = host_rows::<ndarray::Ix2>(queries, "queries rank", "[B, D]")?;
        let p = host_rows::<ndarray::Ix2>(positives, "positives rank", "[B, D]")?;
        let n = crate::libtorch::host_array(negatives)?;
        let negatives_view = match n.ndim() {
            2 => Negatives::Shared(n.view().into_dimensionality().map_err(shape_bug)?),
            _ => Negatives::PerQuery(n.view().into_dimensionality().map_err(|_| {
                LossError::ShapeMismatch {
                    what: "negatives rank",
                    expected: "2 ([K, D]) or 3 ([B, m, D])".into(),
                    actual: format!("{} (shape {:?})", n.ndim(), n.shape()),
                }
            })?),
        };
        let out = infonce_loss(
            &InfoNceInput::new(q.view(), p.view(), negatives_view),
            &self.0,
        )?;
        surrogate_from_host(out.loss, &[(queries, out.grad.view().into_dyn())])
    }
}

/// An ndarray shape error where the shape was checked before: a bug, reported, not a panic.
#[cfg(feature = "tch")]
fn shape_bug(e: ndarray::ShapeError) -> LossError {
    LossError::Backend(format!("a checked shape did not fit: {e}"))
}
