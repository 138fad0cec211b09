//! SwAV (Caron et al. 2020): swapped prediction of Sinkhorn–Knopp codes, with analytic gradients.
//!
//! Every crop of an image predicts, from its own prototype scores, the *code* (a soft cluster
//! assignment) that Sinkhorn–Knopp computed from another crop of the same image. The codes are
//! balanced over the batch (every prototype gets the same mass), which is what keeps SwAV from
//! collapsing onto one prototype.
//!
//! ```
//! use ndarray::{Array2, Array3};
//! use supcon_loss::{swav, SwavOptions};
//!
//! // 4 images, 3 crops (the first 2 are assignment crops), 5 dims, 6 prototypes.
//! let z = Array3::from_shape_fn((4, 3, 5), |(b, s, d)| ((b * 7 + s * 3 + d) as f32).sin());
//! let c = Array2::from_shape_fn((6, 5), |(k, d)| ((k * 5 + d) as f32 * 0.3).cos());
//! let out = swav(z.view(), c.view(), &SwavOptions::default().with_normalize(true))?;
//! assert!(out.loss.is_finite());
//! assert_eq!(out.grad_features.shape(), z.shape());
//! assert_eq!(out.grad_prototypes.shape(), c.shape());
//! assert_eq!(out.codes.shape(), &[2, 4, 6]); // [assignment crops, batch, prototypes]
//! assert_eq!(out.anchors, 8); // B · A
//! # Ok::<(), supcon_loss::LossError>(())
//! ```
//!
//! # The math
//!
//! The book's *The loss* page has the same section with the same symbols.
//!
//! **Inputs.** Features `z_s[b]` for image b < B, crop s < S (S ≥ 2), dim D; prototypes `c_k`,
//! k < K (`C`, `[K, D]`); the first A crops (1 ≤ A ≤ S) are the *assignment crops*. Optionally
//! a queue of `Q` stored features `u_a[j]` per assignment crop (`[A, Q, D]`). With `normalize`
//! the loss uses `z/‖z‖` (and normalizes the queue rows). Prototypes are used as given: SwAV
//! L2-normalizes them after every optimizer step, outside the loss.
//!
//! **Scores.** `s_s[b, k] = z_s[b]·c_k`, i.e. `S_s = Z_s Cᵀ` (`[B, K]`), for every crop s.
//!
//! **Codes.** For each assignment crop a, the scores of its queue rows are stacked *before* the
//! batch's, `X_a = [U_a Cᵀ; S_a]` (N = Q + B rows), and Sinkhorn–Knopp balances
//! `exp(X_a/ε)` — SwAV's `distributed_sinkhorn` on one device, whose `B` is N here:
//!
//! ```text
//! P        = exp(X_aᵀ/ε) / Σ_{n,k} exp(X_a[n,k]/ε)              [K, N], total mass 1
//! T times: P[k,:] ← P[k,:] / (K · Σ_n P[k,n])                   each prototype's mass 1/K
//!          P[:,n] ← P[:,n] / (N · Σ_k P[k,n])                   each sample's mass 1/N
//! q_a[b,k] = N · P[k, Q+b]                                      the batch's columns: Σ_k q_a[b,k] = 1
//! ```
//!
//! It is computed in log space, `P[k,n] = exp(X_a[n,k]/ε + α_k + β_n)`, with max-subtracted
//! log-sum-exps (LSE), so whatever K, ε and the scores no `exp` overflows and no sum underflows
//! to 0 (its largest term is 1):
//!
//! ```text
//! β = 0;  T times:  α_k = −log K − LSE_n(X_a[n,k]/ε + β_n)
//!                   β_n = −log N − LSE_k(X_a[n,k]/ε + α_k)
//! q_a[b,k] = exp(X_a[Q+b,k]/ε + α_k − LSE_k'(X_a[Q+b,k']/ε + α_k'))   (the last β, times N)
//! ```
//!
//! The first normalization (total mass 1) multiplies P by a constant that the first row step
//! divides out again, so it is skipped. **T ≥ 1 is required** (`sinkhorn_iterations = 0` is
//! rejected): SwAV uses 3, and without a column step the codes would not sum to 1. The codes are
//! constants for the gradient (SwAV computes them under `torch.no_grad()`).
//!
//! **Loss.** With `p_s[b,:] = softmax(s_s[b,:]/τ)`:
//!
//! ```text
//! L = (1/A) Σ_{a<A} (1/(S−1)) Σ_{s≠a} (1/B) Σ_b ( −Σ_k q_a[b,k] · log p_s[b,k] )
//! ```
//!
//! **Gradient.** With `w = 1/(A·(S−1)·B)` and `𝒜(s) = { a < A : a ≠ s }`, the assignment crops
//! that crop s predicts:
//!
//! ```text
//! G_s[b,k] = ∂L/∂s_s[b,k] = (w/τ) Σ_{a∈𝒜(s)} ( p_s[b,k] · Σ_k' q_a[b,k'] − q_a[b,k] )
//! ∂L/∂z_s  = G_s C                ∂L/∂C = Σ_{s<S} G_sᵀ Z_s       (queue and codes: no gradient)
//! ```
//!
//! For Sinkhorn codes `Σ_k' q_a[b,k'] = 1` and `G_s = (w/τ) Σ_{a∈𝒜(s)} (p_s − q_a)`; the general
//! form is the exact derivative for any given codes ([`swav_with_codes`]). With `normalize`,
//! `z = x/‖x‖` and `∂L/∂x = (∂L/∂z − z (z·∂L/∂z)) / ‖x‖`.
//!
//! # Semantics worth knowing
//!
//! - A crop s ≥ A predicts all A assignment crops; an assignment crop predicts the other A − 1.
//!   With A = 1, crop 0 only supplies codes: its features get no gradient (codes are
//!   constants).
//! - Queue rows only take part in the balancing of the codes (they make Sinkhorn's batch N = Q+B
//!   large enough when B is small); the loss and the codes returned are the batch's. An empty
//!   queue (Q = 0) is the same as none.
//! - `anchors` is B·A, the number of codes.
//! - [`swav_with_codes`] takes the codes as an input (`[A, B, K]`, held constant) and returns the
//!   loss and gradient for them: the entry point for finite-difference checks (the codes do not
//!   move with the features, exactly as in training) and for codes computed elsewhere.
//!
//! # Computation and accuracy
//!
//! One matrix product gives all S·B × K scores (kept, O(S·B·K) memory, plus N × K per assignment
//! crop for Sinkhorn); the backward pass is two more products (`G C` and `Gᵀ Z`). Products are
//! computed in blocks of 128 along their inner dimension in the element type `T` and the blocks
//! are summed in `f64`; Sinkhorn, the log-softmax, the codes and the loss are all in `f64`. Work
//! is split over rayon's current pool by blocks of output rows (and of prototypes for the column
//! sums of Sinkhorn); every task owns its outputs and reduces in a fixed order, so the results are
//! bit-identical for any thread count (run it inside `ThreadPool::install` to choose the pool).
//!
//! **Tolerance** (`f32` inputs against the same computation in `f64` on the same values, to
//! first order): with R_z the largest feature or queue row norm (1 when normalizing), R_c the
//! largest prototype norm and u = 2⁻²⁴, every score is within `γ = (D+2)·u·R_z·R_c` of its
//! `f64` value. The log-softmax moves by at most 2γ/τ, and every Sinkhorn half-step is a
//! (1-Lipschitz) log-sum-exp, so `log q_a` moves by at most 4T·γ/ε. The codes' weights sum to 1
//! over everything the loss averages, hence
//!
//! ```text
//! |L_f32 − L_f64| ≤ 2γ/τ + 4T·(γ/ε)·L
//! |ΔG_s[b,k]|     ≤ (w/τ)·|𝒜(s)|·(p_s[b,k] + q[b,k])·(2γ/τ + 4T·γ/ε)   (+ the products' rounding)
//! ```
//!
//! The property tests check both (the gradients through `G C`, `Gᵀ Z` and the normalization)
//! on random problems. They are worst cases: on unit rows the measured errors are around 1e-9
//! (loss, relative) and 1e-6 of the largest gradient entry, K up to 3000.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3};
use rayon::prelude::*;

use crate::checks::{check_finite, check_nonzero_rows};
use crate::explicit::write_row;
use crate::{Element, LossError};

/// Rows per parallel task, and the block length along the inner dimension of the products.
const TILE: usize = 128;

/// Prototypes per task of the Sinkhorn column reductions.
const PROTOTYPE_CHUNK: usize = 64;

/// Options of the SwAV loss. `#[non_exhaustive]`: start from [`SwavOptions::default`] and use
/// the `with_*` methods, so that new options do not break callers.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SwavOptions {
    /// τ, the temperature of the prediction softmax `softmax(s/τ)`. Default 0.1.
    pub temperature: f64,
    /// ε, Sinkhorn's entropic regularization: the codes balance `exp(s/ε)`. Default 0.05.
    pub epsilon: f64,
    /// Sinkhorn–Knopp iterations (one row and one column normalization each), at least 1.
    /// Default 3.
    pub sinkhorn_iterations: usize,
    /// A, the number of assignment crops: the first A crops get codes (1 ≤ A ≤ crops). Default 2.
    pub assignment_crops: usize,
    /// L2-normalize the features (and queue rows) inside the loss and back-propagate through the
    /// normalization. Off by default: SwAV's model normalizes its projections itself.
    pub normalize: bool,
}

impl Default for SwavOptions {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            epsilon: 0.05,
            sinkhorn_iterations: 3,
            assignment_crops: 2,
            normalize: false,
        }
    }
}

impl SwavOptions {
    /// The same options with temperature τ.
    pub fn with_temperature(self, temperature: f64) -> Self {
        Self {
            temperature,
            ..self
        }
    }

    /// The same options with Sinkhorn's ε.
    pub fn with_epsilon(self, epsilon: f64) -> Self {
        Self { epsilon, ..self }
    }

    /// The same options with `iterations` Sinkhorn–Knopp iterations.
    pub fn with_sinkhorn_iterations(self, iterations: usize) -> Self {
        Self {
            sinkhorn_iterations: iterations,
            ..self
        }
    }

    /// The same options with the first `crops` crops as assignment crops.
    pub fn with_assignment_crops(self, crops: usize) -> Self {
        Self {
            assignment_crops: crops,
            ..self
        }
    }

    /// The same options with (or without) normalization inside the loss.
    pub fn with_normalize(self, normalize: bool) -> Self {
        Self { normalize, ..self }
    }
}

/// The borrowed inputs of one SwAV loss evaluation.
#[derive(Clone, Copy, Debug)]
pub struct SwavInput<'a, T = f32> {
    /// `[batch, crops, dim]`: the projections of every crop of every image.
    pub features: ArrayView3<'a, T>,
    /// `[K, dim]`: the prototypes (the weights of SwAV's last linear layer).
    pub prototypes: ArrayView2<'a, T>,
    /// `[A, Q, dim]`: optional stored features per assignment crop, whose scores are stacked
    /// before the batch's for Sinkhorn; no gradient flows into them.
    pub queue: Option<ArrayView3<'a, T>>,
}

impl<'a, T> SwavInput<'a, T> {
    /// Features and prototypes, no queue.
    pub fn new(features: ArrayView3<'a, T>, prototypes: ArrayView2<'a, T>) -> Self {
        Self {
            features,
            prototypes,
            queue: None,
        }
    }

    /// The same input with a queue `[A, Q, dim]`.
    pub fn with_queue(self, queue: ArrayView3<'a, T>) -> Self {
        Self {
            queue: Some(queue),
            ..self
        }
    }

    /// Q, the number of queue rows per assignment crop (0 without a queue).
    pub fn queue_len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.dim().1)
    }
}

/// The SwAV loss, its gradients and the codes it used.
#[derive(Clone, Debug, PartialEq)]
pub struct SwavOutput<T = f32> {
    /// The loss, averaged over assignment crops, predicting crops and images.
    pub loss: f64,
    /// ∂loss/∂features, `[batch, crops, dim]` (standard layout).
    pub grad_features: Array3<T>,
    /// ∂loss/∂prototypes, `[K, dim]`.
    pub grad_prototypes: Array2<T>,
    /// The codes `q_a[b, k]`, `[A, batch, K]`: each row sums to 1 (Sinkhorn's), or the codes
    /// given to [`swav_with_codes`].
    pub codes: Array3<T>,
    /// B · A, the number of codes.
    pub anchors: usize,
}

/// The checks of [`validate_swav`] that need no input: τ, ε, iterations, A ≥ 1 (the libtorch
/// function shares them).
pub(crate) fn check_options(options: &SwavOptions) -> Result<(), LossError> {
    crate::checks::check_temperature("temperature", options.temperature)?;
    crate::checks::check_temperature("epsilon", options.epsilon)?;
    if options.sinkhorn_iterations == 0 {
        return Err(LossError::InvalidParameter {
            name: "sinkhorn_iterations",
            value: 0.0,
            reason: "must be at least 1: without a column normalization the codes do not sum to 1",
        });
    }
    if options.assignment_crops == 0 {
        return Err(LossError::InvalidParameter {
            name: "assignment_crops",
            value: 0.0,
            reason: "must be at least 1: some crop has to supply the codes",
        });
    }
    Ok(())
}

/// The shape checks of [`validate_swav`] on plain shapes (the libtorch function shares them):
/// features `[B, S, D]`, prototypes `[K, D]`, queue `[A, Q, D]`.
pub(crate) fn check_shapes(
    features: [usize; 3],
    prototypes: [usize; 2],
    queue: Option<[usize; 3]>,
    options: &SwavOptions,
) -> Result<(), LossError> {
    let assign = options.assignment_crops;
    let [batch, crops, dim] = features;
    for (axis, len) in [("batch", batch), ("crops", crops), ("dim", dim)] {
        if len == 0 {
            return Err(LossError::EmptyAxis {
                what: "features",
                axis,
                shape: vec![batch, crops, dim],
            });
        }
    }
    if crops < 2 {
        return Err(LossError::ShapeMismatch {
            what: "features crops",
            expected: "at least 2 (each crop predicts the codes of another)".into(),
            actual: format!("{crops} (features shape {:?})", [batch, crops, dim]),
        });
    }
    if assign > crops {
        return Err(LossError::ShapeMismatch {
            what: "assignment_crops",
            expected: format!("at most {crops} (the features' crops)"),
            actual: assign.to_string(),
        });
    }
    let [prototypes, prototype_dim] = prototypes;
    if prototypes == 0 {
        return Err(LossError::EmptyAxis {
            what: "prototypes",
            axis: "prototypes",
            shape: vec![prototypes, prototype_dim],
        });
    }
    if prototype_dim != dim {
        return Err(LossError::ShapeMismatch {
            what: "prototypes dim",
            expected: format!("{dim} (the features' dim)"),
            actual: format!(
                "{prototype_dim} (prototypes shape {:?})",
                [prototypes, prototype_dim]
            ),
        });
    }
    if let Some(queue) = queue {
        let [queue_crops, rows, queue_dim] = queue;
        if queue_crops != assign {
            return Err(LossError::ShapeMismatch {
                what: "queue assignment crops",
                expected: format!("{assign} (assignment_crops)"),
                actual: format!("{queue_crops} (queue shape {:?})", queue),
            });
        }
        if rows > 0 && queue_dim != dim {
            return Err(LossError::ShapeMismatch {
                what: "queue dim",
                expected: format!("{dim} (the features' dim)"),
                actual: format!("{queue_dim} (queue shape {:?})", queue),
            });
        }
    }
    Ok(())
}

/// Checks the SwAV inputs and options; every SwAV entry point calls it first.
///
/// Checks, in this order: τ and ε positive and finite (`InvalidTemperature`, named
/// `"temperature"` / `"epsilon"`); at least one Sinkhorn iteration and one assignment crop
/// (`InvalidParameter`); batch, crops, dim non-zero (`EmptyAxis`); at least 2 crops and A ≤ crops
/// (`ShapeMismatch`); K ≥ 1 prototypes of the features' dim; a queue of `[A, Q, dim]`; every
/// feature, prototype and queue value finite (`NonFinite`, the first bad index); with
/// `normalize`, no zero-norm feature or queue row (`ZeroNorm`). Costs O((S·B + K + A·Q)·D).
pub fn validate_swav<T: Element>(
    input: &SwavInput<'_, T>,
    options: &SwavOptions,
) -> Result<(), LossError> {
    check_options(options)?;
    let (b, s, d) = input.features.dim();
    let (k, kd) = input.prototypes.dim();
    check_shapes(
        [b, s, d],
        [k, kd],
        input.queue.as_ref().map(|q| {
            let (a, rows, qd) = q.dim();
            [a, rows, qd]
        }),
        options,
    )?;
    check_finite("features", input.features.into_dyn())?;
    check_finite("prototypes", input.prototypes.into_dyn())?;
    if let Some(queue) = &input.queue {
        check_finite("queue", queue.view().into_dyn())?;
    }
    if options.normalize {
        check_nonzero_rows("features", input.features.into_dyn())?;
        if let Some(queue) = &input.queue {
            check_nonzero_rows("queue", queue.view().into_dyn())?;
        }
    }
    Ok(())
}

/// The SwAV loss of `f32` features and prototypes without a queue: [`swav_generic`].
pub fn swav(
    features: ArrayView3<'_, f32>,
    prototypes: ArrayView2<'_, f32>,
    options: &SwavOptions,
) -> Result<SwavOutput, LossError> {
    swav_generic(&SwavInput::new(features, prototypes), options)
}

/// The SwAV loss in any [`Element`] type (`f32` in production, `f64` for gradient checks): the
/// Sinkhorn codes of the assignment crops, the swapped-prediction loss, its gradients with
/// respect to the features and the prototypes (codes held constant). Validates first.
pub fn swav_generic<T: Element>(
    input: &SwavInput<'_, T>,
    options: &SwavOptions,
) -> Result<SwavOutput<T>, LossError> {
    validate_swav(input, options)?;
    let _span = span(input, options, "swav");
    let prep = Prepared::new(input, options);
    let scores = product(prep.rows.view(), input.prototypes.t());
    let codes = prep.codes(input, &scores, options);
    prep.finish(input, &scores, &codes, options)
}

/// Only the Sinkhorn–Knopp codes `[A, batch, K]` of [`swav_generic`] (each row sums to 1).
/// Validates first.
pub fn swav_codes<T: Element>(
    input: &SwavInput<'_, T>,
    options: &SwavOptions,
) -> Result<Array3<T>, LossError> {
    validate_swav(input, options)?;
    let _span = span(input, options, "swav_codes");
    let prep = Prepared::new(input, options);
    let batch = input.features.dim().0;
    let assign_rows = prep.rows.slice(s![..options.assignment_crops * batch, ..]);
    let scores = product(assign_rows, input.prototypes.t());
    Ok(prep.codes(input, &scores, options).mapv(T::from_f64))
}

/// The SwAV loss and gradients for given codes `[A, batch, K]`, held constant: no Sinkhorn, and
/// the queue (if any) is not used. The gradient is exact for any codes (rows need not sum to 1),
/// so central finite differences of this function check [`swav_generic`]'s gradient, whose
/// codes are constants too. With the codes [`swav_generic`] returned, the result is the same
/// (bit for bit in `f64`). Validates the input, then the codes' shape and finiteness.
pub fn swav_with_codes<T: Element>(
    input: &SwavInput<'_, T>,
    codes: ArrayView3<'_, T>,
    options: &SwavOptions,
) -> Result<SwavOutput<T>, LossError> {
    validate_swav(input, options)?;
    let (batch, _, _) = input.features.dim();
    let expected = [options.assignment_crops, batch, input.prototypes.nrows()];
    if codes.shape() != expected {
        return Err(LossError::ShapeMismatch {
            what: "codes shape",
            expected: format!("{expected:?} ([assignment crops, batch, prototypes])"),
            actual: format!("{:?}", codes.shape()),
        });
    }
    check_finite("codes", codes.into_dyn())?;
    let _span = span(input, options, "swav_with_codes");
    let prep = Prepared::new(input, options);
    let scores = product(prep.rows.view(), input.prototypes.t());
    let codes = codes.mapv(T::to_f64);
    prep.finish(input, &scores, &codes, options)
}

fn span<T: Element>(
    input: &SwavInput<'_, T>,
    options: &SwavOptions,
    name: &'static str,
) -> tracing::span::EnteredSpan {
    let (batch, crops, dim) = input.features.dim();
    tracing::debug_span!(
        "swav",
        entry = name,
        batch,
        crops,
        dim,
        prototypes = input.prototypes.nrows(),
        queue = input.queue_len(),
        assignment_crops = options.assignment_crops,
        element = T::NAME
    )
    .entered()
}

/// The features as crop-major rows (`r = s·B + b`), normalized if asked.
struct Prepared<T> {
    /// `[S·B, D]` rows `z_s[b]`.
    rows: Array2<T>,
    /// `1/‖x‖` of every row when normalizing (empty otherwise).
    inv_norms: Vec<f64>,
}

impl<T: Element> Prepared<T> {
    fn new(input: &SwavInput<'_, T>, options: &SwavOptions) -> Self {
        let (batch, crops, dim) = input.features.dim();
        let mut rows = Array2::<T>::zeros((crops * batch, dim));
        let mut inv_norms = Vec::new();
        for c in 0..crops {
            for b in 0..batch {
                let x = input.features.slice(s![b, c, ..]);
                let inv = write_row(x, rows.row_mut(c * batch + b), options.normalize);
                if options.normalize {
                    inv_norms.push(inv);
                }
            }
        }
        Self { rows, inv_norms }
    }

    /// The codes `[A, B, K]` in f64 from the scores of (at least) the assignment crops' rows.
    fn codes(
        &self,
        input: &SwavInput<'_, T>,
        scores: &Array2<f64>,
        options: &SwavOptions,
    ) -> Array3<f64> {
        let batch = input.features.dim().0;
        let prototypes = input.prototypes.nrows();
        let mut codes = Array3::<f64>::zeros((options.assignment_crops, batch, prototypes));
        for (a, mut out) in codes.outer_iter_mut().enumerate() {
            let batch_scores = scores.slice(s![a * batch..(a + 1) * batch, ..]);
            let queue = input
                .queue
                .as_ref()
                .map(|q| q.index_axis(ndarray::Axis(0), a))
                .filter(|q| q.nrows() > 0);
            let q = match queue {
                None => sinkhorn(batch_scores, batch, options),
                Some(queue) => {
                    let queue = if options.normalize {
                        normalized_rows(queue)
                    } else {
                        queue.to_owned()
                    };
                    let queue_scores = product(queue.view(), input.prototypes.t());
                    let mut all = Array2::<f64>::zeros((queue.nrows() + batch, prototypes));
                    all.slice_mut(s![..queue.nrows(), ..]).assign(&queue_scores);
                    all.slice_mut(s![queue.nrows().., ..]).assign(&batch_scores);
                    sinkhorn(all.view(), batch, options)
                }
            };
            out.assign(&q);
        }
        codes
    }

    /// Loss and gradients from the scores of all crops and the codes.
    fn finish(
        &self,
        input: &SwavInput<'_, T>,
        scores: &Array2<f64>,
        codes: &Array3<f64>,
        options: &SwavOptions,
    ) -> Result<SwavOutput<T>, LossError> {
        let (batch, crops, dim) = input.features.dim();
        let prototypes = input.prototypes.nrows();
        let assign = options.assignment_crops;
        let inv_tau = 1.0 / options.temperature;
        let weight = 1.0 / (assign as f64 * (crops - 1) as f64 * batch as f64);
        let grad_scale = weight * inv_tau;

        // Per row r = s·B + b: its loss term Σ_{a∈𝒜(s)} Σ_k q_a[b,k]·(LSE − x_k) and G_s[b,:].
        let mut coefficients = Array2::<T>::zeros((crops * batch, prototypes));
        let mut row_losses = vec![0.0f64; crops * batch];
        coefficients
            .as_slice_mut()
            .expect("a new array is contiguous")
            .par_chunks_mut(prototypes)
            .zip(row_losses.par_iter_mut())
            .enumerate()
            .for_each(|(r, (g, row_loss))| {
                let (crop, b) = (r / batch, r % batch);
                let x: Vec<f64> = scores.row(r).iter().map(|&v| v * inv_tau).collect();
                let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + x.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
                let mut target = vec![0.0f64; prototypes];
                let mut mass = 0.0f64;
                for a in (0..assign).filter(|&a| a != crop) {
                    for (t, &q) in target.iter_mut().zip(codes.slice(s![a, b, ..]).iter()) {
                        *t += q;
                        mass += q;
                    }
                }
                let mut total = 0.0f64;
                for ((out, &xk), &t) in g.iter_mut().zip(&x).zip(&target) {
                    total += t * (lse - xk);
                    let p = (xk - lse).exp();
                    *out = T::from_f64(grad_scale * (p * mass - t));
                }
                *row_loss = total;
            });
        let loss = weight * row_losses.iter().sum::<f64>();
        if !loss.is_finite() {
            return Err(LossError::Overflow { value: loss });
        }

        // ∂L/∂z = G C (rows), ∂L/∂C = Gᵀ Z.
        let grad_rows = product(coefficients.view(), input.prototypes);
        let grad_prototypes = product(coefficients.t(), self.rows.view()).mapv(T::from_f64);
        let mut grad_features = Array3::<T>::zeros((batch, crops, dim));
        for c in 0..crops {
            for b in 0..batch {
                let r = c * batch + b;
                let g = grad_rows.row(r);
                let mut out = grad_features.slice_mut(s![b, c, ..]);
                if options.normalize {
                    // z = x/‖x‖ in f64, from the raw input.
                    let inv = self.inv_norms[r];
                    let x = input.features.slice(s![b, c, ..]);
                    let projection: f64 = x
                        .iter()
                        .zip(g.iter())
                        .map(|(&x, &g)| x.to_f64() * inv * g)
                        .sum();
                    for ((o, &x), &g) in out.iter_mut().zip(x.iter()).zip(g.iter()) {
                        *o = T::from_f64((g - x.to_f64() * inv * projection) * inv);
                    }
                } else {
                    for (o, &g) in out.iter_mut().zip(g.iter()) {
                        *o = T::from_f64(g);
                    }
                }
            }
        }
        Ok(SwavOutput {
            loss,
            grad_features,
            grad_prototypes,
            codes: codes.mapv(T::from_f64),
            anchors: batch * assign,
        })
    }
}

fn normalized_rows<T: Element>(x: ArrayView2<'_, T>) -> Array2<T> {
    let mut out = Array2::<T>::zeros(x.dim());
    for (row, out) in x.outer_iter().zip(out.outer_iter_mut()) {
        write_row(row, out, true);
    }
    out
}

/// `a · b` in f64: parallel over blocks of [`TILE`] output rows; the inner dimension in blocks of
/// [`TILE`], each block a GEMM in `T`, the blocks summed in f64 in order (deterministic).
fn product<T: Element>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Array2<f64> {
    let (m, inner) = a.dim();
    let n = b.ncols();
    let mut out = Array2::<f64>::zeros((m, n));
    if n == 0 {
        return out;
    }
    out.as_slice_mut()
        .expect("a new array is contiguous")
        .par_chunks_mut(TILE * n)
        .enumerate()
        .for_each(|(block, out)| {
            let r0 = block * TILE;
            let rows = out.len() / n;
            let mut tile = Array2::<T>::zeros((rows, n));
            for k0 in (0..inner).step_by(TILE) {
                let k1 = (k0 + TILE).min(inner);
                general_mat_mul(
                    T::one(),
                    &a.slice(s![r0..r0 + rows, k0..k1]),
                    &b.slice(s![k0..k1, ..]),
                    T::zero(),
                    &mut tile,
                );
                for (o, &t) in out.iter_mut().zip(tile.iter()) {
                    *o += t.to_f64();
                }
            }
        });
    out
}

/// Log-domain Sinkhorn–Knopp on `scores` `[N, K]` (queue rows first, then the `batch` rows):
/// the codes of the last `batch` rows, `[batch, K]`, each row a distribution. See the module
/// docs for the potentials α (prototypes) and β (samples).
fn sinkhorn(scores: ArrayView2<'_, f64>, batch: usize, options: &SwavOptions) -> Array2<f64> {
    let (samples, prototypes) = scores.dim();
    let logits = scores.mapv(|s| s / options.epsilon);
    let log_k = (prototypes as f64).ln();
    let log_n = (samples as f64).ln();
    let mut alpha = vec![0.0f64; prototypes];
    let mut beta = vec![0.0f64; samples];
    for iteration in 0..options.sinkhorn_iterations {
        // Rows of P: every prototype's mass 1/K.
        column_log_sum_exp(logits.view(), &beta, &mut alpha);
        for a in &mut alpha {
            *a = -log_k - *a;
        }
        // Columns of P: every sample's mass 1/N. The last one is folded into the codes below.
        if iteration + 1 < options.sinkhorn_iterations {
            beta.par_iter_mut().enumerate().for_each(|(n, b)| {
                *b = -log_n - row_log_sum_exp(logits.row(n).iter().copied(), &alpha);
            });
        }
    }
    // q[b, :] = N · P[:, Q+b] after the last column step: softmax_k(X/ε + α).
    let mut codes = Array2::<f64>::zeros((batch, prototypes));
    let first = samples - batch;
    codes
        .as_slice_mut()
        .expect("a new array is contiguous")
        .par_chunks_mut(prototypes)
        .enumerate()
        .for_each(|(b, out)| {
            let row = logits.row(first + b);
            let lse = row_log_sum_exp(row.iter().copied(), &alpha);
            for ((o, &x), &a) in out.iter_mut().zip(row.iter()).zip(&alpha) {
                *o = (x + a - lse).exp();
            }
        });
    codes
}

/// `LSE_k(x_k + shift_k)`, max-subtracted.
fn row_log_sum_exp(x: impl Iterator<Item = f64> + Clone, shift: &[f64]) -> f64 {
    let max = x
        .clone()
        .zip(shift)
        .fold(f64::NEG_INFINITY, |m, (x, &s)| m.max(x + s));
    let sum: f64 = x.zip(shift).map(|(x, &s)| (x + s - max).exp()).sum();
    max + sum.ln()
}

/// `out[k] = LSE_n(logits[n, k] + shift[n])`: parallel over blocks of prototypes, each summing
/// over n in order.
fn column_log_sum_exp(logits: ArrayView2<'_, f64>, shift: &[f64], out: &mut [f64]) {
    out.par_chunks_mut(PROTOTYPE_CHUNK)
        .enumerate()
        .for_each(|(chunk, out)| {
            let k0 = chunk * PROTOTYPE_CHUNK;
            let width = out.len();
            let columns = logits.slice(s![.., k0..k0 + width]);
            let mut max = vec![f64::NEG_INFINITY; width];
            for (row, &s) in columns.rows().into_iter().zip(shift) {
                for (m, &x) in max.iter_mut().zip(row.iter()) {
                    *m = m.max(x + s);
                }
            }
            let mut sum = vec![0.0f64; width];
            for (row, &s) in columns.rows().into_iter().zip(shift) {
                for ((acc, &x), &m) in sum.iter_mut().zip(row.iter()).zip(&max) {
                    *acc += (x + s - m).exp();
                }
            }
            for ((o, &m), &acc) in out.iter_mut().zip(&max).zip(&sum) {
                *o = m + acc.ln();
            }
        });
}

#[cfg(feature = "tch")]
pub mod tensor;

/// SwAV's swapped prediction with Sinkhorn–Knopp codes ([`swav_generic`],
/// [`tensor::swav_loss_tensor`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SwavOp(pub SwavOptions);

impl crate::LossOp for SwavOp {
    type Input<'a> = SwavInput<'a>;
    type Output = SwavOutput;
    /// Features `[B, S, D]`, prototypes `[K, D]`, the queue `[A, Q, D]` if any.
    #[cfg(feature = "tch")]
    type Tensors<'a> = (&'a tch::Tensor, &'a tch::Tensor, Option<&'a tch::Tensor>);
    #[cfg(feature = "tch")]
    type TensorOutput = tch::Tensor;

    fn name(&self) -> &'static str {
        "swav"
    }

    fn validate(&self, input: &SwavInput<'_>) -> Result<(), LossError> {
        validate_swav(input, &self.0)
    }

    fn cpu_fwd(&self, input: &SwavInput<'_>) -> Result<SwavOutput, LossError> {
        swav_generic(input, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(&self, input: &SwavInput<'_>, cuda: Option<usize>) -> Result<SwavOutput, LossError> {
        tensor::swav_tch(input, &self.0, crate::libtorch::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(
        &self,
        (features, prototypes, queue): &Self::Tensors<'_>,
    ) -> Result<tch::Tensor, LossError> {
        tensor::swav_loss_tensor(features, prototypes, *queue, &self.0)
    }

    #[cfg(feature = "tch")]
    fn cpu_tensor_fwd(
        &self,
        (features, prototypes, queue): &Self::Tensors<'_>,
    ) -> Result<tch::Tensor, LossError> {
        use crate::libtorch::{host_rows, surrogate_from_host};
        let f = host_rows::<ndarray::Ix3>(features, "features rank", "[B, S, D]")?;
        let c = host_rows::<ndarray::Ix2>(prototypes, "prototypes rank", "[K, D]")?;
        let q = queue
            .map(|q| host_rows::<ndarray::Ix3>(q, "queue rank", "[A, Q, D]"))
            .transpose()?;
        let mut input = SwavInput::new(f.view(), c.view());
        if let Some(q) = &q {
            input = input.with_queue(q.view());
        }
        let out = swav_generic(&input, &self.0)?;
        surrogate_from_host(
            out.loss,
            &[
                (features, out.grad_features.view().into_dyn()),
                (prototypes, out.grad_prototypes.view().into_dyn()),
            ],
        )
    }
}
