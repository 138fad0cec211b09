//! Invariant and Spreading instance features (Ye et al. 2019, "Unsupervised Embedding Learning
//! via Invariant and Spreading Instance Feature"): instance discrimination inside the batch —
//! each image and one augmented copy, the copy's positive its own image, every other image and
//! copy of the batch a negative; one encoder, no memory bank.
//!
//! ```
//! use ndarray::Array3;
//! use supcon_loss::{invspread_loss, InvSpreadOptions};
//!
//! // 4 images, each with its augmented copy, 3 dims: [batch, 2, dim].
//! let features = Array3::from_shape_fn((4, 2, 3), |(b, v, d)| ((b * 5 + v * 3 + d) as f32).sin());
//! let out = invspread_loss(features.view(), &InvSpreadOptions::default())?;
//! assert_eq!(out.grad.shape(), &[4, 2, 3]);
//! # Ok::<(), supcon_loss::LossError>(())
//! ```
//!
//! # The math
//!
//! Rows `z_j`, j < n = 2B: image b's two views at rows `2b` and `2b + 1` (the `[B, 2, D]`
//! layout), `ẑ = z/‖z‖` with `normalize`; `p(j)` is j's other view. Every row is classified
//! among the other n − 1 rows of the batch (the paper's eq. 2, written for both views, as its
//! code does):
//!
//! ```text
//! s_jk = ẑ_j·ẑ_k / τ,    P_jk = exp(s_jk) / Σ_{k'≠j} exp(s_jk')      (k ≠ j)
//! ℓ_j  = −log P_{j p(j)} − Σ_{k ∉ {j, p(j)}} log(1 − P_jk)
//! Loss = (1/n) Σ_j ℓ_j
//! ```
//!
//! The first term makes a row recognise its own image's other view (*invariant*); the second,
//! the binary form for the other instances, pushes every other row's probability towards 0
//! (*spreading*).
//!
//! **Gradient.** With `R_j = Σ_{k ∉ {j, p(j)}} P_jk / (1 − P_jk)`,
//!
//! ```text
//! G_jk = ∂ℓ_j/∂s_jk = P_jk − [k = p(j)] + [k ≠ p(j)] · P_jk/(1 − P_jk) − P_jk · R_j
//! ∂Loss/∂ẑ_j = (1/(n τ)) Σ_{k≠j} (G_jk + G_kj) ẑ_k
//! ```
//!
//! through both sides of every similarity (the reference code detaches the second factor of
//! each similarity; the loss is the same, the gradient here is the loss's exact one), then
//! through the normalization, `∂L/∂z = (∂L/∂ẑ − ẑ (ẑ·∂L/∂ẑ)) / ‖z‖`.
//!
//! Computed in `f64` whatever the input type, on the dense n × n similarities: memory O(n²)
//! (0.5 MB for the paper's batch of 128 images), which InvSpread's in-batch design keeps small.

#[cfg(feature = "tch")]
pub mod tensor;

use ndarray::{Array2, Array3, ArrayView3, Axis};
use rayon::prelude::*;

use crate::checks::{check_finite, check_nonzero_rows};
use crate::explicit::check_temperature;
use crate::matching::{input_gradient, prepared_rows};
use crate::{Element, LossError};

/// Options of [`invspread_loss`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InvSpreadOptions {
    /// τ (the paper's 0.1).
    pub temperature: f64,
    /// L2-normalize every row first (the paper does).
    pub normalize: bool,
}

impl Default for InvSpreadOptions {
    fn default() -> Self {
        Self::new(0.1)
    }
}

impl InvSpreadOptions {
    /// τ = `temperature`, normalized rows.
    pub fn new(temperature: f64) -> Self {
        Self {
            temperature,
            normalize: true,
        }
    }

    /// The same options with τ = `temperature`.
    pub fn with_temperature(self, temperature: f64) -> Self {
        Self {
            temperature,
            ..self
        }
    }

    /// The same options with `normalize`.
    pub fn with_normalize(self, normalize: bool) -> Self {
        Self { normalize, ..self }
    }
}

/// The InvSpread loss and its gradient.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InvSpreadOutput<T = f32> {
    /// The loss, the mean of `ℓ_j` over the 2B rows.
    pub loss: f64,
    /// ∂loss/∂features, `[B, 2, D]`.
    pub grad: Array3<T>,
}

/// The shape rule of every InvSpread entry point (host arrays and tensors): `[B ≥ 2, 2, D > 0]`
/// (with one image there is no negative).
pub(crate) fn check_invspread_shape(shape: &[usize]) -> Result<(), LossError> {
    crate::explicit::check_not_empty("features", shape, &["batch", "views", "dim"])?;
    if shape[1] != 2 {
        return Err(LossError::ShapeMismatch {
            what: "features views",
            expected: "2 (each image and its augmented copy)".into(),
            actual: format!("{} (shape {shape:?})", shape[1]),
        });
    }
    if shape[0] < 2 {
        return Err(LossError::ShapeMismatch {
            what: "features batch",
            expected: "at least 2 images (a positive and a negative)".into(),
            actual: format!("{} (shape {shape:?})", shape[0]),
        });
    }
    Ok(())
}

/// Checks the features `[B, 2, D]` and options of [`invspread_loss`] (which calls it first): τ
/// positive and finite, the shape rule, every value finite, and with `normalize` no all-zero
/// row. Errors name the input and the index.
pub fn validate_invspread<T: Element>(
    features: ArrayView3<'_, T>,
    options: &InvSpreadOptions,
) -> Result<(), LossError> {
    check_temperature(options.temperature)?;
    check_invspread_shape(features.shape())?;
    check_finite("features", features.into_dyn())?;
    if options.normalize {
        check_nonzero_rows("features", features.into_dyn())?;
    }
    Ok(())
}

/// The InvSpread loss of `features` `[B, 2, D]` (see the [module docs](self)) and
/// ∂loss/∂features, in any [`Element`] type (`f64` for gradient checks). Validates first
/// ([`validate_invspread`]).
pub fn invspread_loss<T: Element>(
    features: ArrayView3<'_, T>,
    options: &InvSpreadOptions,
) -> Result<InvSpreadOutput<T>, LossError> {
    validate_invspread(features, options)?;
    let (batch, views, dim) = features.dim();
    let _span = tracing::debug_span!("invspread", batch, dim, element = T::NAME).entered();
    let (rows, inverse) = prepared_rows(features.into_dyn(), dim, options.normalize);
    let n = batch * views;
    let tau = options.temperature;
    // G_jk and ℓ_j, row by row (each row's softmax over the other n − 1 rows).
    let per_row: Vec<(Vec<f64>, f64)> = (0..n)
        .into_par_iter()
        .map(|j| row_coefficients(&rows, j, tau))
        .collect();
    let loss = per_row.iter().map(|(_, l)| l).sum::<f64>() / n as f64;
    if !loss.is_finite() {
        return Err(LossError::Overflow { value: loss });
    }
    let mut g = Array2::<f64>::zeros((n, n));
    for (j, (coefficients, _)) in per_row.iter().enumerate() {
        g.row_mut(j)
            .iter_mut()
            .zip(coefficients)
            .for_each(|(o, &c)| *o = c);
    }
    let symmetric = (&g + &g.t()) / (n as f64 * tau);
    let grad_rows = symmetric.dot(&rows);
    let grad = input_gradient(features.into_dyn(), &grad_rows, &inverse)
        .into_dimensionality()
        .map_err(|e| LossError::Backend(format!("InvSpread gradient shape: {e}")))?;
    Ok(InvSpreadOutput { loss, grad })
}

/// Row j's coefficients `G_jk` (0 at k = j) and its loss `ℓ_j`.
///
/// `log(1 − P_jk)` and `P_jk / (1 − P_jk)` are computed so that they stay finite: every row but
/// the largest has `P ≤ ½`, where `ln_1p(−P)` is exact enough; for the largest, `1 − P` may
/// round to 0, so its terms come from the log-sum-exp of the rest, `LSE_{−k}`:
/// `log(1 − P_jk) = LSE_{−k} − LSE_j` and `P_jk / (1 − P_jk) = exp(s_jk − LSE_{−k})`.
fn row_coefficients(rows: &Array2<f64>, j: usize, tau: f64) -> (Vec<f64>, f64) {
    let n = rows.nrows();
    let positive = j ^ 1;
    let own = rows.row(j);
    let s: Vec<f64> = rows
        .axis_iter(Axis(0))
        .map(|other| own.dot(&other) / tau)
        .collect();
    let others = || (0..n).filter(move |&k| k != j);
    let top = others()
        .max_by(|&a, &b| s[a].total_cmp(&s[b]))
        .unwrap_or(positive);
    let log_sum_exp = |keep: &dyn Fn(usize) -> bool| {
        let max = others()
            .filter(|&k| keep(k))
            .map(|k| s[k])
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = others()
            .filter(|&k| keep(k))
            .map(|k| (s[k] - max).exp())
            .sum();
        max + sum.ln()
    };
    let lse = log_sum_exp(&|_| true);
    let lse_rest = log_sum_exp(&|k| k != top);
    let p: Vec<f64> = (0..n)
        .map(|k| if k == j { 0.0 } else { (s[k] - lse).exp() })
        .collect();
    // log(1 − P_jk) and P_jk / (1 − P_jk), finite however close P_jk is to 1.
    let log_not = |k: usize| {
        if k == top {
            lse_rest - lse
        } else {
            (-p[k]).ln_1p()
        }
    };
    let odds = |k: usize| {
        if k == top {
            (s[k] - lse_rest).exp()
        } else {
            p[k] / (1.0 - p[k])
        }
    };
    let negatives = || others().filter(move |&k| k != positive);
    let loss = (lse - s[positive]) - negatives().map(log_not).sum::<f64>();
    let r: f64 = negatives().map(odds).sum();
    let coefficients = (0..n)
        .map(|k| {
            if k == j {
                0.0
            } else if k == positive {
                p[k] - 1.0 - p[k] * r
            } else {
                p[k] + odds(k) - p[k] * r
            }
        })
        .collect();
    (coefficients, loss)
}

/// InvSpread as an op: [`invspread_loss`] on the host, [`tensor::invspread_loss_tensor`] in
/// libtorch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InvSpreadOp(pub InvSpreadOptions);

impl crate::LossOp for InvSpreadOp {
    type Input<'a> = ArrayView3<'a, f32>;
    type Output = InvSpreadOutput;
    /// Features `[B, 2, D]`.
    #[cfg(feature = "tch")]
    type Tensors<'a> = &'a tch::Tensor;
    #[cfg(feature = "tch")]
    type TensorOutput = tch::Tensor;

    fn name(&self) -> &'static str {
        "invspread"
    }

    fn validate(&self, features: &ArrayView3<'_, f32>) -> Result<(), LossError> {
        validate_invspread(*features, &self.0)
    }

    fn cpu_fwd(&self, features: &ArrayView3<'_, f32>) -> Result<InvSpreadOutput, LossError> {
        invspread_loss(*features, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(
        &self,
        features: &ArrayView3<'_, f32>,
        cuda: Option<usize>,
    ) -> Result<InvSpreadOutput, LossError> {
        tensor::invspread_tch(*features, &self.0, crate::libtorch::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(&self, features: &&tch::Tensor) -> Result<tch::Tensor, LossError> {
        tensor::invspread_loss_tensor(features, &self.0)
    }

    #[cfg(feature = "tch")]
    fn cpu_tensor_fwd(&self, features: &&tch::Tensor) -> Result<tch::Tensor, LossError> {
        use crate::libtorch::{host_rows, surrogate_from_host};
        let host = host_rows::<ndarray::Ix3>(features, "features rank", "[batch, 2, dim]")?;
        let out = invspread_loss(host.view(), &self.0)?;
        surrogate_from_host(out.loss, &[(*features, out.grad.view().into_dyn())])
    }
}
