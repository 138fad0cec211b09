//! Noise-contrastive estimation over a memory bank: InstDisc's loss (Wu et al. 2018, "Unsupervised
//! Feature Learning via Non-Parametric Instance Discrimination").
//!
//! ```
//! use ndarray::{Array2, Array3};
//! use supcon_loss::{nce_loss, NceInput, NceOptions};
//!
//! // 4 queries, the memory-bank entries of their own images, 5 sampled negatives each; 3 dims.
//! let row = |i: usize, d: usize| ((i * 7 + d * 3) as f32 * 0.37).sin();
//! let q = Array2::from_shape_fn((4, 3), |(b, d)| row(b, d));
//! let k = Array2::from_shape_fn((4, 3), |(b, d)| row(b, d) + 0.1);
//! let negatives = Array3::from_shape_fn((4, 5, 3), |(b, j, d)| row(b * 5 + j + 20, d));
//! let input = NceInput::new(q.view(), k.view(), negatives.view());
//!
//! // The first batch estimates Z ...
//! let options = NceOptions::new(0.07).with_dataset_size(50_000).with_normalize(true);
//! let first = nce_loss(&input, &options)?;
//! // ... which then stays fixed, as in InstDisc.
//! let options = options.with_partition(Some(first.partition));
//! let later = nce_loss(&input, &options)?;
//! assert_eq!(later.loss, first.loss);
//! # Ok::<(), supcon_loss::LossError>(())
//! ```
//!
//! # The math
//!
//! Queries `v = q_b` (the features of B images), their positives `k_b` (the memory-bank entries
//! of the same images) and m negatives `n_bj` per query (bank entries of other images, drawn
//! uniformly from the N images of the data set), all of D dims; `ẑ = x/‖x‖` with `normalize`,
//! `ẑ = x` otherwise. InstDisc's non-parametric softmax over the data set and the uniform noise
//! distribution are
//!
//! ```text
//! P(i|v) = e^{ẑ_i·ẑ_v/τ} / Z        P_n = 1/N
//! h(i, v) = P(i|v) / (P(i|v) + m·P_n)     the posterior that i is data, not noise
//! ℓ_b  = −log h(k_b, q_b) − Σ_{j<m} log(1 − h(n_bj, q_b))
//! Loss = (1/B) Σ_b ℓ_b
//! ```
//!
//! **Proximal regularization** (InstDisc §3.4, [`NceOptions::proximal`] = λ, 0 by default).
//! Each image is its own class and is seen once per epoch, so its bank entry `k_b = v_b^(t−1)`
//! can jump between epochs and the training oscillate; the paper adds the squared distance of
//! the new feature from the bank's:
//!
//! ```text
//! Loss = (1/B) Σ_b [ ℓ_b + λ ‖ẑ_qb − ẑ_kb‖² ]          ∂/∂ẑ_qb of the new term: 2λ(ẑ_qb − ẑ_kb)/B
//! ```
//!
//! (with `normalize` the distance of the normalized rows, whose gradient goes through the
//! normalization like the rest; the bank entry is a constant). As training converges the two
//! agree and the term vanishes.
//!
//! **Z.** Either given ([`NceOptions::partition`] = `Some(z)`) or, when `None`, estimated from
//! the batch by Monte Carlo, as InstDisc does on its first batch:
//! `Z = N · mean_{b<B, j<m} e^{ẑ_qb·ẑ_nbj/τ}` (in log space). Z is a constant either way: no
//! gradient flows through it. [`NceOutput::partition`] returns the Z used, so that the caller
//! can keep it fixed afterwards (an estimate beyond the range of `f64`, possible only when
//! similarities/τ exceed about 700, is a [`LossError::Overflow`]; give Z then, or raise τ).
//! [`NceOutput::batch_partition`] returns the batch's estimate even when Z was given, for a
//! caller that moves Z with a running average rather than keeping the first batch's: InstDisc
//! fixes Z once, on a bank of random vectors, which underestimates it once the bank holds
//! learned embeddings.
//! InstDisc's code takes the mean over the m + 1 entries of a
//! row, the positive included; this mean is over the negatives only, which are the uniform
//! samples the estimate needs (with m in the thousands the two differ by about 1/m).
//!
//! **Stable form.** With the log-odds `x = log P(i|v) − log(m·P_n) = s − log Z − log(m/N)`,
//! `s = ẑ_i·ẑ_v/τ`, the posterior is `h = σ(x)`, so
//!
//! ```text
//! log h     = −softplus(log(m·P_n) − log P) = −softplus(−x)
//! log(1−h)  = −softplus(log P − log(m·P_n)) = −softplus(x)
//! ℓ_b = softplus(−x_b0) + Σ_j softplus(x_bj)
//! x_b0 = ẑ_qb·ẑ_kb/τ − log Z − log(m/N)        x_bj = ẑ_qb·ẑ_nbj/τ − log Z − log(m/N)
//! ```
//!
//! finite for any finite logits. InstDisc's code divides `P` by `P + m·P_n + 1e-7` and takes the
//! log; there is no such epsilon here (it biases the loss where `P` is small and is not needed
//! in the softplus form).
//!
//! **Gradient** (with respect to the queries only; bank entries are constants, updated by
//! momentum outside the loss). `d softplus(x)/dx = σ(x)`, so `∂ℓ_b/∂x_b0 = −σ(−x_b0) =
//! −(1 − h_b0)` and `∂ℓ_b/∂x_bj = σ(x_bj) = h_bj`, and every `x` has `∂x/∂ẑ_qb = ẑ/τ` (Z fixed):
//!
//! ```text
//! ∂ℓ_b/∂ẑ_qb = (Σ_j h_bj ẑ_nbj − (1 − h_b0) ẑ_kb) / τ
//! ∂Loss/∂q_b = (1/B) · (g − ẑ_qb (ẑ_qb·g)) / ‖q_b‖   with g = ∂ℓ_b/∂ẑ_qb   (normalize)
//! ∂Loss/∂q_b = (1/B) · ∂ℓ_b/∂ẑ_qb                                        (otherwise)
//! ```
//!
//! plus the proximal term's `2λ(ẑ_qb − ẑ_kb)` added to `∂ℓ_b/∂ẑ_qb` before the normalization.
//!
//! # Computation
//!
//! Query by query in parallel blocks of [`NCE_ROW_BLOCK`] on rayon's current pool, dot products
//! and all sums in `f64`, normalized rows never copied (dot products of the raw rows are scaled
//! by inverse norms). Estimating Z takes one more pass over the dot products (a log-sum-exp per
//! query, combined in query order); with Z given, the batch's estimate comes from the loss
//! pass's own dot products (one more exponential per pair). Extra memory O(B·m) for the inverse
//! norms plus O(m + D) per task; bit-identical results for any number of threads.

use ndarray::{Array2, ArrayView2, ArrayView3, Axis};
use rayon::prelude::*;

use crate::explicit::{
    add_scaled, check_temperature, dot_f64, inverse_norm, normalization_backward, sigmoid, softplus,
};
use crate::infonce::check_rows;
use crate::{Element, LossError, Negatives};

/// Queries per parallel task.
pub const NCE_ROW_BLOCK: usize = 32;

/// The borrowed inputs of one NCE evaluation.
#[derive(Clone, Copy, Debug)]
pub struct NceInput<'a, T = f32> {
    /// `[B, D]` query features v; the gradient is with respect to them.
    pub queries: ArrayView2<'a, T>,
    /// `[B, D]`: the memory-bank entry of each query's own image; no gradient.
    pub positives: ArrayView2<'a, T>,
    /// `[B, m, D]`: m noise samples (bank entries of other images) per query; no gradient.
    pub negatives: ArrayView3<'a, T>,
}

impl<'a, T> NceInput<'a, T> {
    /// Queries, their positives and their negatives.
    pub fn new(
        queries: ArrayView2<'a, T>,
        positives: ArrayView2<'a, T>,
        negatives: ArrayView3<'a, T>,
    ) -> Self {
        Self {
            queries,
            positives,
            negatives,
        }
    }
}

/// Options of [`nce_loss`]. Build them with [`NceOptions::new`] or `default()` and the `with_*`
/// methods (the struct is `#[non_exhaustive]`, so options can be added later). The data-set
/// size has no sensible default and must be set.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NceOptions {
    /// τ, the temperature that divides every similarity. Default 0.07 (InstDisc's).
    pub temperature: f64,
    /// N, the number of images in the data set (memory-bank entries): the noise distribution
    /// is `P_n = 1/N`. Default 0, which is rejected: set it with [`Self::with_dataset_size`].
    pub dataset_size: usize,
    /// Z, the normalization constant of `P(i|v)`; `None` (the default) estimates it from the
    /// batch (see the [module docs](self)). Must be positive and finite when given.
    pub partition: Option<f64>,
    /// L2-normalize queries, positives and negatives inside the loss and back-propagate
    /// through the queries' normalization. Off by default (InstDisc normalizes its features
    /// in the model).
    pub normalize: bool,
    /// λ of InstDisc's proximal regularization `λ‖ẑ_q − ẑ_k‖²` (the query's distance from its
    /// own bank entry; see the [module docs](self)). 0 (the default) leaves it out; must be
    /// finite and at least 0.
    pub proximal: f64,
}

impl Default for NceOptions {
    fn default() -> Self {
        Self {
            temperature: 0.07,
            dataset_size: 0,
            partition: None,
            normalize: false,
            proximal: 0.0,
        }
    }
}

impl NceOptions {
    /// The default options with temperature `temperature` (the data-set size still has to be
    /// set).
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

    /// The same options with the data-set size N.
    pub fn with_dataset_size(self, dataset_size: usize) -> Self {
        Self {
            dataset_size,
            ..self
        }
    }

    /// The same options with Z given (`Some`) or estimated from the batch (`None`).
    pub fn with_partition(self, partition: Option<f64>) -> Self {
        Self { partition, ..self }
    }

    /// The same options with `normalize` set.
    pub fn with_normalize(self, normalize: bool) -> Self {
        Self { normalize, ..self }
    }

    /// The same options with the proximal weight λ (0: off).
    pub fn with_proximal(self, proximal: f64) -> Self {
        Self { proximal, ..self }
    }

    /// The option checks of every NCE entry point: τ positive and finite, N > 0, a given Z
    /// positive and finite.
    pub(crate) fn check(&self) -> Result<(), LossError> {
        check_temperature(self.temperature)?;
        if self.dataset_size == 0 {
            return Err(LossError::InvalidParameter {
                name: "dataset_size",
                value: 0.0,
                reason: "the data-set size N (P_n = 1/N) must be at least 1",
            });
        }
        if let Some(z) = self.partition {
            if !(z.is_finite() && z > 0.0) {
                return Err(LossError::InvalidParameter {
                    name: "partition",
                    value: z,
                    reason: "the normalization constant Z must be positive and finite",
                });
            }
        }
        if !(self.proximal.is_finite() && self.proximal >= 0.0) {
            return Err(LossError::InvalidParameter {
                name: "proximal",
                value: self.proximal,
                reason: "the proximal weight λ must be finite and at least 0",
            });
        }
        Ok(())
    }
}

/// The NCE loss, its gradient with respect to the queries, and the Z it used.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NceOutput<T = f32> {
    /// The loss, averaged over the B queries.
    pub loss: f64,
    /// ∂loss/∂queries, `[B, D]` (standard layout).
    pub grad: Array2<T>,
    /// The Z used: the given one, or the batch's estimate. Pass it back as
    /// [`NceOptions::partition`] to keep it fixed.
    pub partition: f64,
    /// The batch's estimate of Z, `N · mean_{b,j} e^{s_bj}`, whichever Z the loss used (equal to
    /// `partition` when Z was estimated). With Z given it is not checked: similarities/τ beyond
    /// about 700 make it ∞ while the loss, computed with the given Z, stays finite.
    pub batch_partition: f64,
}

/// Checks the inputs and options of [`nce_loss`] (which calls it first).
///
/// Checks, in this order: τ positive and finite; N > 0; a given Z positive and finite; λ
/// finite and ≥ 0;
/// queries `[B, D]` with B, D > 0; positives `[B, D]`; negatives `[B, m, D]` with m > 0; every
/// value finite (queries, positives, negatives); with `normalize`, no all-zero row (same
/// order). Errors name the input and, for values, the index of the first bad element.
/// Costs O(B·m·D).
pub fn validate_nce<T: Element>(
    input: &NceInput<'_, T>,
    options: &NceOptions,
) -> Result<(), LossError> {
    options.check()?;
    check_rows(
        input.queries,
        input.positives,
        Negatives::PerQuery(input.negatives),
        options.normalize,
    )
}

/// The NCE loss (see the [module docs](self)), ∂loss/∂queries and the Z used, in any
/// [`Element`] type: `f32` as in production, `f64` for gradient checks. Validates first
/// ([`validate_nce`]); runs on rayon's current pool.
pub fn nce_loss<T: Element>(
    input: &NceInput<'_, T>,
    options: &NceOptions,
) -> Result<NceOutput<T>, LossError> {
    validate_nce(input, options)?;
    let (batch, count, dim) = input.negatives.dim();
    let _span = tracing::debug_span!(
        "nce",
        batch,
        negatives = count,
        dim,
        estimate_partition = options.partition.is_none(),
        element = T::NAME
    )
    .entered();
    let prep = Prepared::new(input, options);

    let partition = match options.partition {
        Some(z) => z,
        None => {
            let row_lse: Vec<Vec<f64>> = (0..batch)
                .collect::<Vec<_>>()
                .par_chunks(NCE_ROW_BLOCK)
                .map(|rows| {
                    let mut logits = vec![0.0; count];
                    rows.iter()
                        .map(|&b| {
                            prep.logits(b, &mut logits);
                            log_sum_exp(&logits)
                        })
                        .collect()
                })
                .collect();
            let z = estimate_partition(&row_lse.concat(), options.dataset_size, count);
            if !(z.is_finite() && z > 0.0) {
                return Err(LossError::Overflow { value: z });
            }
            tracing::debug!(partition = z, "estimated the NCE normalization constant Z");
            z
        }
    };
    // x = s − log Z − log(m/N)
    let offset = partition.ln() + (count as f64).ln() - (options.dataset_size as f64).ln();

    let mut grad = vec![T::zero(); batch * dim];
    let rows: Vec<Vec<(f64, f64)>> = grad
        .par_chunks_mut(NCE_ROW_BLOCK * dim)
        .enumerate()
        .map(|(block, out)| prep.block(block * NCE_ROW_BLOCK, offset, out))
        .collect();
    let (row_losses, row_lse): (Vec<f64>, Vec<f64>) = rows.into_iter().flatten().unzip();
    // Summed in query order: deterministic.
    let loss = row_losses.iter().sum::<f64>() / batch as f64;
    let batch_partition = match options.partition {
        // The same per-query sums as the estimate above, so bit-identical to it.
        None => partition,
        Some(_) => estimate_partition(&row_lse, options.dataset_size, count),
    };
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
    Ok(NceOutput {
        loss,
        grad,
        partition,
        batch_partition,
    })
}

/// `log Σ e^{x}`, shifted by the maximum.
fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + values.iter().map(|&x| (x - max).exp()).sum::<f64>().ln()
}

/// `Z = N · mean_{b,j} e^{s_bj}` from each query's `log Σ_j e^{s_bj}` over its `count`
/// negatives, combined in query order (in log space: `log N + LSE − log(B·m)`). Unchecked:
/// beyond `f64` it is ∞ (or 0).
fn estimate_partition(row_lse: &[f64], dataset_size: usize, count: usize) -> f64 {
    let pairs = (row_lse.len() * count) as f64;
    ((dataset_size as f64).ln() + log_sum_exp(row_lse) - pairs.ln()).exp()
}

/// What every query block reads, built once in O(B·m·D).
struct Prepared<'p, 'a, T> {
    input: &'p NceInput<'a, T>,
    inv_tau: f64,
    normalize: bool,
    /// λ of the proximal term.
    proximal: f64,
    /// 1/‖q_b‖ (1 without normalize).
    inv_queries: Vec<f64>,
    /// 1/‖k_b‖ (1 without normalize).
    inv_positives: Vec<f64>,
    /// 1/‖n_bj‖, row-major over `[B, m]` (1 without normalize).
    inv_negatives: Vec<f64>,
}

impl<'p, 'a, T: Element> Prepared<'p, 'a, T> {
    fn new(input: &'p NceInput<'a, T>, options: &NceOptions) -> Self {
        let normalize = options.normalize;
        let inv_rows = |rows: ArrayView2<'_, T>| -> Vec<f64> {
            rows.outer_iter()
                .map(|r| inverse_norm(r, normalize))
                .collect()
        };
        Self {
            input,
            inv_tau: 1.0 / options.temperature,
            normalize,
            proximal: options.proximal,
            inv_queries: inv_rows(input.queries),
            inv_positives: inv_rows(input.positives),
            inv_negatives: input.negatives.outer_iter().flat_map(inv_rows).collect(),
        }
    }

    /// `s_bj = ẑ_qb·ẑ_nbj/τ` for every j, into `out` (length m).
    fn logits(&self, b: usize, out: &mut [f64]) {
        let q = self.input.queries.row(b);
        let scale = self.inv_queries[b] * self.inv_tau;
        let count = out.len();
        let inv_norms = &self.inv_negatives[b * count..(b + 1) * count];
        let negatives = self.input.negatives.index_axis(Axis(0), b);
        for ((x, n), &inv) in out.iter_mut().zip(negatives.outer_iter()).zip(inv_norms) {
            *x = dot_f64(q, n) * inv * scale;
        }
    }

    /// λ‖ẑ_qb − ẑ_kb‖² (returned) and its gradient `2λ(ẑ_qb − ẑ_kb)/B` (added to `grad`, the
    /// gradient with respect to ẑ_qb).
    fn add_proximal(&self, b: usize, grad: &mut [f64], batch: usize) -> f64 {
        let q = self.input.queries.row(b);
        let k = self.input.positives.row(b);
        let (inv_q, inv_k) = (self.inv_queries[b], self.inv_positives[b]);
        let scale = 2.0 * self.proximal / batch as f64;
        let mut squared = 0.0;
        for ((g, &qd), &kd) in grad.iter_mut().zip(q).zip(k) {
            let diff = qd.to_f64() * inv_q - kd.to_f64() * inv_k;
            squared += diff * diff;
            *g += scale * diff;
        }
        self.proximal * squared
    }

    /// The queries `b0..` of one block: writes their gradient rows into `out` and returns their
    /// losses `ℓ_b` with `log Σ_j e^{s_bj}` (for the batch's estimate of Z).
    /// `offset = log Z + log(m/N)`.
    fn block(&self, b0: usize, offset: f64, out: &mut [T]) -> Vec<(f64, f64)> {
        let (batch, count, dim) = self.input.negatives.dim();
        let height = out.len() / dim;
        let mut logits = vec![0.0; count];
        let mut losses = Vec::with_capacity(height);
        for r in 0..height {
            let b = b0 + r;
            let q = self.input.queries.row(b);
            let k = self.input.positives.row(b);
            let negatives = self.input.negatives.index_axis(Axis(0), b);
            let inv_norms = &self.inv_negatives[b * count..(b + 1) * count];
            self.logits(b, &mut logits);
            let inv_k = self.inv_positives[b];
            let x0 = dot_f64(q, k) * self.inv_queries[b] * inv_k * self.inv_tau - offset;
            // ℓ_b = softplus(−x_b0) + Σ_j softplus(x_bj)
            let mut loss = softplus(-x0);
            // Σ_j h_bj ẑ_nbj − (1 − h_b0) ẑ_kb
            let mut grad = vec![0.0f64; dim];
            add_scaled(&mut grad, -sigmoid(-x0) * inv_k, k);
            for ((&s, n), &inv) in logits.iter().zip(negatives.outer_iter()).zip(inv_norms) {
                let x = s - offset;
                loss += softplus(x);
                add_scaled(&mut grad, sigmoid(x) * inv, n);
            }
            let factor = self.inv_tau / batch as f64;
            for g in &mut grad {
                *g *= factor;
            }
            if self.proximal > 0.0 {
                loss += self.add_proximal(b, &mut grad, batch);
            }
            losses.push((loss, log_sum_exp(&logits)));
            normalization_backward(&mut grad, q, self.normalize.then_some(self.inv_queries[b]));
            for (o, g) in out[r * dim..(r + 1) * dim].iter_mut().zip(grad) {
                *o = T::from_f64(g);
            }
        }
        losses
    }
}

#[cfg(feature = "tch")]
pub mod tensor;

/// InstDisc's NCE over a memory bank ([`nce_loss`], [`tensor::nce_loss_tensor`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NceOp(pub NceOptions);

impl crate::LossOp for NceOp {
    type Input<'a> = NceInput<'a>;
    type Output = NceOutput;
    /// Queries `[B, D]`, positives `[B, D]`, negatives `[B, m, D]`.
    #[cfg(feature = "tch")]
    type Tensors<'a> = (&'a tch::Tensor, &'a tch::Tensor, &'a tch::Tensor);
    /// The loss, the Z it used and the batch's estimate of Z.
    #[cfg(feature = "tch")]
    type TensorOutput = tensor::NceTensorOutput;

    fn name(&self) -> &'static str {
        "nce"
    }

    fn validate(&self, input: &NceInput<'_>) -> Result<(), LossError> {
        validate_nce(input, &self.0)
    }

    fn cpu_fwd(&self, input: &NceInput<'_>) -> Result<NceOutput, LossError> {
        nce_loss(input, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(&self, input: &NceInput<'_>, cuda: Option<usize>) -> Result<NceOutput, LossError> {
        tensor::nce_tch(input, &self.0, crate::libtorch::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(
        &self,
        (queries, positives, negatives): &Self::Tensors<'_>,
    ) -> Result<tensor::NceTensorOutput, LossError> {
        tensor::nce_loss_tensor(queries, positives, negatives, &self.0)
    }

    #[cfg(feature = "tch")]
    fn cpu_tensor_fwd(
        &self,
        (queries, positives, negatives): &Self::Tensors<'_>,
    ) -> Result<tensor::NceTensorOutput, LossError> {
        use crate::libtorch::{host_rows, scalar, surrogate_from_host};
        let q = host_rows::<ndarray::Ix2>(queries, "queries rank", "[B, D]")?;
        let p = host_rows::<ndarray::Ix2>(positives, "positives rank", "[B, D]")?;
        let n = host_rows::<ndarray::Ix3>(negatives, "negatives rank", "[B, m, D]")?;
        let out = nce_loss(&NceInput::new(q.view(), p.view(), n.view()), &self.0)?;
        Ok(tensor::NceTensorOutput {
            loss: surrogate_from_host(out.loss, &[(queries, out.grad.view().into_dyn())])?,
            partition: out.partition,
            batch_partition: scalar(out.batch_partition, queries.device())?,
        })
    }
}
