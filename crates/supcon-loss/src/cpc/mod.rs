//! Contrastive Predictive Coding's InfoNCE over a grid (van den Oord et al. 2018,
//! "Representation Learning with Contrastive Predictive Coding"; on images CPC v2, Hénaff et al.
//! 2020): a context at position t predicts the encodings k steps ahead, and each prediction
//! must pick its true target among the encodings of every position of the batch.
//!
//! ```
//! use ndarray::{Array3, Array4};
//! use supcon_loss::{cpc_loss, CpcOptions};
//!
//! // 2 sequences (e.g. patch columns) of 4 positions, predictions 1 and 2 steps ahead, 3 dims.
//! let z = Array3::from_shape_fn((2, 4, 3), |(b, t, d)| ((b * 7 + t * 3 + d) as f32).sin());
//! let p = Array4::from_shape_fn((2, 4, 2, 3), |(b, t, k, d)| ((b + t * 2 + k * 5 + d) as f32).cos());
//! let out = cpc_loss(p.view(), z.view(), &CpcOptions::default())?;
//! assert_eq!(out.predictions, 2 * (3 + 2)); // t + k + 1 < 4
//! assert_eq!(out.grad_targets.shape(), &[2, 4, 3]);
//! # Ok::<(), supcon_loss::LossError>(())
//! ```
//!
//! # The math
//!
//! Encoded targets `z[b, t]` (sequence b < B, position t < T, D dims) and predictions
//! `p[b, t, k]` of `z[b, t + k + 1]` made from the context at t (offset index k < K, so k = 0
//! predicts one step ahead; in CPC `p = W_k c_t` with a linear map per offset, trained with the
//! network). Valid predictions are those whose target exists: `V = {(b, t, k) : t + k + 1 < T}`.
//! Every target row of the batch is a candidate (the positive and the negatives: the other
//! positions of the same sequence and every position of the others). With `ẑ`, `p̂` the rows,
//! L2-normalized when `normalize`:
//!
//! ```text
//! s(b,t,k ; b',t') = p̂[b,t,k]·ẑ[b',t'] / τ
//! ℓ(b,t,k) = log Σ_{b'<B, t'<T} e^{s(b,t,k ; b',t')} − s(b,t,k ; b,t+k+1)
//! Loss = (1/|V|) Σ_{(b,t,k) ∈ V} ℓ(b,t,k)
//! ```
//!
//! **Gradient.** With `π` the softmax over candidates and `G = (π − [positive]) / (|V| τ)`:
//! `∂L/∂p̂ = Σ_candidates G ẑ`, `∂L/∂ẑ = Σ_predictions G p̂` (the targets come from the trained
//! encoder, so they get their gradient); invalid predictions get 0. CPC uses raw dot products
//! (τ = 1, no normalization), the defaults here.
//!
//! On images (CPC v2) the sequences are the columns of a grid of patch encodings and t the row:
//! the context of rows ≤ t predicts the rows below. Computed in `f64` in blocks of rows
//! (`matching.rs`): memory O(block · (|V| + B·T)), not |V| × B·T. Negatives are all positions
//! of the batch; a sampled subset is not offered.

use ndarray::{Array3, Array4, ArrayView3, ArrayView4};

use crate::checks::{check_finite, check_nonzero_rows};
use crate::explicit::check_temperature;
use crate::matching::{input_gradient, match_rows, prepared_rows};
use crate::{Element, LossError};

/// Options of [`cpc_loss`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CpcOptions {
    /// τ (1: CPC's raw dot products).
    pub temperature: f64,
    /// L2-normalize predictions and targets first (CPC does not).
    pub normalize: bool,
}

impl Default for CpcOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            normalize: false,
        }
    }
}

impl CpcOptions {
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

/// The CPC loss and its gradients.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CpcOutput<T = f32> {
    /// The loss, averaged over the valid predictions.
    pub loss: f64,
    /// ∂loss/∂predictions, `[B, T, K, D]` (0 for predictions without a target).
    pub grad_predictions: Array4<T>,
    /// ∂loss/∂targets, `[B, T, D]`.
    pub grad_targets: Array3<T>,
    /// |V|: the predictions whose target exists (t + k + 1 < T).
    pub predictions: usize,
}

/// Checks the inputs and options of [`cpc_loss`] (which calls it first): τ positive and finite;
/// predictions `[B, T, K, D]` and targets `[B, T, D]` non-empty, with the same B, T and D, and
/// T ≥ 2 (one step to predict); every value finite (predictions, then targets); with
/// `normalize`, no all-zero row. Errors name the input and index.
pub fn validate_cpc<T: Element>(
    predictions: ArrayView4<'_, T>,
    targets: ArrayView3<'_, T>,
    options: &CpcOptions,
) -> Result<(), LossError> {
    check_temperature(options.temperature)?;
    check_cpc_shapes(predictions.shape(), targets.shape())?;
    check_finite("predictions", predictions.into_dyn())?;
    check_finite("targets", targets.into_dyn())?;
    if options.normalize {
        check_nonzero_rows("predictions", predictions.into_dyn())?;
        check_nonzero_rows("targets", targets.into_dyn())?;
    }
    Ok(())
}

/// The shape rule of every CPC entry point (host arrays and tensors).
pub(crate) fn check_cpc_shapes(predictions: &[usize], targets: &[usize]) -> Result<(), LossError> {
    use crate::explicit::{check_len, check_not_empty};
    check_not_empty("targets", targets, &["batch", "positions", "dim"])?;
    check_not_empty(
        "predictions",
        predictions,
        &["batch", "positions", "offsets", "dim"],
    )?;
    if targets[1] < 2 {
        return Err(LossError::ShapeMismatch {
            what: "targets positions",
            expected: "at least 2 (a position to predict from and one to predict)".into(),
            actual: format!("{} (shape {targets:?})", targets[1]),
        });
    }
    let why = format!("as targets {targets:?}");
    check_len(
        "predictions batch",
        targets[0],
        &why,
        predictions[0],
        predictions,
    )?;
    check_len(
        "predictions positions",
        targets[1],
        &why,
        predictions[1],
        predictions,
    )?;
    check_len(
        "predictions dim",
        targets[2],
        &why,
        predictions[3],
        predictions,
    )
}

/// The positive (flat target row `b·T + t + k + 1`) of every valid prediction, in the
/// predictions' row order `((b·T + t)·K + k)`, with that row index.
pub(crate) fn valid_predictions(
    batch: usize,
    positions: usize,
    offsets: usize,
) -> Vec<(usize, usize)> {
    let mut valid = Vec::new();
    for b in 0..batch {
        for t in 0..positions {
            for k in 0..offsets {
                if t + k + 1 < positions {
                    valid.push(((b * positions + t) * offsets + k, b * positions + t + k + 1));
                }
            }
        }
    }
    valid
}

/// The CPC loss (see the [module docs](self)) and its gradients, in any [`Element`] type
/// (`f64` for gradient checks). Validates first ([`validate_cpc`]).
pub fn cpc_loss<T: Element>(
    predictions: ArrayView4<'_, T>,
    targets: ArrayView3<'_, T>,
    options: &CpcOptions,
) -> Result<CpcOutput<T>, LossError> {
    validate_cpc(predictions, targets, options)?;
    let (batch, positions, offsets, dim) = predictions.dim();
    let _span =
        tracing::debug_span!("cpc", batch, positions, offsets, dim, element = T::NAME).entered();
    let (p, p_inverse) = prepared_rows(predictions.into_dyn(), dim, options.normalize);
    let (z, z_inverse) = prepared_rows(targets.into_dyn(), dim, options.normalize);
    let valid = valid_predictions(batch, positions, offsets);
    let queries = p.select(
        ndarray::Axis(0),
        &valid.iter().map(|&(row, _)| row).collect::<Vec<_>>(),
    );
    let positive: Vec<usize> = valid.iter().map(|&(_, target)| target).collect();
    let out = match_rows(
        queries.view(),
        z.view(),
        &positive,
        options.temperature,
        1.0 / valid.len() as f64,
    );
    if !out.loss.is_finite() {
        return Err(LossError::Overflow { value: out.loss });
    }
    let mut grad_p = ndarray::Array2::<f64>::zeros(p.dim());
    for (&(row, _), g) in valid.iter().zip(out.grad_queries.outer_iter()) {
        grad_p.row_mut(row).assign(&g);
    }
    let shape_error =
        |e: ndarray::ShapeError| LossError::Backend(format!("CPC gradient shape: {e}"));
    Ok(CpcOutput {
        loss: out.loss,
        grad_predictions: input_gradient(predictions.into_dyn(), &grad_p, &p_inverse)
            .into_dimensionality()
            .map_err(shape_error)?,
        grad_targets: input_gradient(targets.into_dyn(), &out.grad_candidates, &z_inverse)
            .into_dimensionality()
            .map_err(shape_error)?,
        predictions: valid.len(),
    })
}

#[cfg(feature = "tch")]
pub mod tensor;

/// CPC's InfoNCE over a grid ([`cpc_loss`], [`tensor::cpc_loss_tensor`]); the input is
/// (predictions, targets).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpcOp(pub CpcOptions);

impl crate::LossOp for CpcOp {
    type Input<'a> = (ndarray::ArrayView4<'a, f32>, ndarray::ArrayView3<'a, f32>);
    type Output = CpcOutput;
    /// Predictions `[B, T, K, D]`, targets `[B, T, D]`.
    #[cfg(feature = "tch")]
    type Tensors<'a> = (&'a tch::Tensor, &'a tch::Tensor);
    #[cfg(feature = "tch")]
    type TensorOutput = tch::Tensor;

    fn name(&self) -> &'static str {
        "cpc"
    }

    fn validate(&self, (p, z): &Self::Input<'_>) -> Result<(), LossError> {
        validate_cpc(*p, *z, &self.0)
    }

    fn cpu_fwd(&self, (p, z): &Self::Input<'_>) -> Result<CpcOutput, LossError> {
        cpc_loss(*p, *z, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(
        &self,
        (p, z): &Self::Input<'_>,
        cuda: Option<usize>,
    ) -> Result<CpcOutput, LossError> {
        tensor::cpc_tch(*p, *z, &self.0, crate::libtorch::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(&self, (p, z): &Self::Tensors<'_>) -> Result<tch::Tensor, LossError> {
        tensor::cpc_loss_tensor(p, z, &self.0)
    }

    #[cfg(feature = "tch")]
    fn cpu_tensor_fwd(&self, (p, z): &Self::Tensors<'_>) -> Result<tch::Tensor, LossError> {
        use crate::libtorch::{host_rows, surrogate_from_host};
        let predictions = host_rows::<ndarray::Ix4>(p, "predictions rank", "[B, T, K, D]")?;
        let targets = host_rows::<ndarray::Ix3>(z, "targets rank", "[B, T, D]")?;
        let out = cpc_loss(predictions.view(), targets.view(), &self.0)?;
        surrogate_from_host(
            out.loss,
            &[
                (*p, out.grad_predictions.view().into_dyn()),
                (*z, out.grad_targets.view().into_dyn()),
            ],
        )
    }
}
