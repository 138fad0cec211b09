//! Contrastive Multiview Coding's cross-view objective (Tian et al. 2019, "Contrastive
//! Multiview Coding"): each view (modality) of a scene has its own encoder, and the embeddings of
//! the same scene in two views are positives, those of the other scenes of the batch
//! negatives.
//!
//! ```
//! use ndarray::Array3;
//! use supcon_loss::{cmc_loss, CmcOptions, Pairing};
//!
//! // 2 views of 4 scenes, 3 dims: the L and ab channels' embeddings, say.
//! let views = Array3::from_shape_fn((2, 4, 3), |(v, b, d)| ((v * 5 + b * 3 + d) as f32).sin());
//! let out = cmc_loss(views.view(), &CmcOptions::new(0.07).with_pairing(Pairing::FullGraph))?;
//! assert_eq!(out.grad.shape(), &[2, 4, 3]);
//! assert_eq!(out.pairs, 2); // (0, 1) and (1, 0)
//! # Ok::<(), supcon_loss::LossError>(())
//! ```
//!
//! # The math
//!
//! Views `z_v[b]` (view v < V, scene b < B, D dims; `ẑ = z/‖z‖` with `normalize`, `ẑ = z`
//! otherwise). For an ordered pair of views (i, j) — anchors from view i, candidates from view
//! j — every scene's anchor must pick its own scene among the B candidates:
//!
//! ```text
//! s_bc = ẑ_i[b]·ẑ_j[c] / τ
//! L_ij = (1/B) Σ_b (log Σ_{c<B} e^{s_bc} − s_bb)
//! Loss = Σ_{(i,j) ∈ pairs} L_ij
//! ```
//!
//! **Pairs** ([`Pairing`]): *core view* — view 0 against each other view, both directions:
//! `{(0, j), (j, 0) : 1 ≤ j < V}`; *full graph* — every ordered pair `{(i, j) : i ≠ j}`. With
//! V = 2 both are `L_01 + L_10`, the paper's `L(V₁, V₂)` (and CLIP's symmetric loss). The loss
//! is a sum over pairs, as in the paper, not a mean.
//!
//! **Gradient.** With `π_bc = softmax_c(s_bc)`, `G_bc = (π_bc − [b = c]) / (B τ)` per pair,
//! `∂L/∂ẑ_i[b] += Σ_c G_bc ẑ_j[c]` and `∂L/∂ẑ_j[c] += Σ_b G_bc ẑ_i[b]` (each view is trained,
//! so both sides get their gradient); with `normalize`, `∂L/∂z = (∂L/∂ẑ − ẑ (ẑ·∂L/∂ẑ)) / ‖z‖`.
//!
//! Negatives come from the batch (CMC's code can also draw them from a memory bank per view with
//! NCE, [`crate::nce_loss`]'s loss; the in-batch form is the one the paper's later versions and
//! CLIP use). Computed in `f64` whatever the input type, in blocks of rows (see `matching.rs`):
//! memory O(block · B) per pair, not B × B.

use ndarray::{Array3, ArrayView3};

use crate::checks::{check_finite, check_nonzero_rows};
use crate::explicit::check_temperature;
use crate::matching::{input_gradient, match_rows, prepared_rows};
use crate::{Element, LossError};

/// Which ordered pairs of views are contrasted (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pairing {
    /// View 0 against every other view, both directions (the paper's "core view").
    #[default]
    CoreView,
    /// Every ordered pair of distinct views (the paper's "full graph").
    FullGraph,
}

impl Pairing {
    /// The ordered pairs (anchor view, candidate view) for `views` views.
    pub fn pairs(self, views: usize) -> Vec<(usize, usize)> {
        match self {
            Pairing::CoreView => (1..views).flat_map(|j| [(0, j), (j, 0)]).collect(),
            Pairing::FullGraph => (0..views)
                .flat_map(|i| (0..views).filter(move |&j| j != i).map(move |j| (i, j)))
                .collect(),
        }
    }
}

/// Options of [`cmc_loss`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CmcOptions {
    /// τ (CMC's NCE uses 0.07).
    pub temperature: f64,
    /// L2-normalize every embedding first (CMC does).
    pub normalize: bool,
    /// Which view pairs are contrasted.
    pub pairing: Pairing,
}

impl Default for CmcOptions {
    fn default() -> Self {
        Self::new(0.07)
    }
}

impl CmcOptions {
    /// τ = `temperature`, normalized embeddings, core-view pairs.
    pub fn new(temperature: f64) -> Self {
        Self {
            temperature,
            normalize: true,
            pairing: Pairing::CoreView,
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

    /// The same options with `pairing`.
    pub fn with_pairing(self, pairing: Pairing) -> Self {
        Self { pairing, ..self }
    }
}

/// The CMC loss and its gradient.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CmcOutput<T = f32> {
    /// The loss: the sum over view pairs of each pair's mean over scenes.
    pub loss: f64,
    /// ∂loss/∂views, `[V, B, D]`.
    pub grad: Array3<T>,
    /// How many ordered view pairs were contrasted.
    pub pairs: usize,
}

/// Checks the views `[V, B, D]` and options of [`cmc_loss`] (which calls it first): τ positive
/// and finite; V ≥ 2 views, B ≥ 2 scenes (one positive and at least one negative), D > 0;
/// every value finite; with `normalize`, no all-zero row. Errors name the input and index.
pub fn validate_cmc<T: Element>(
    views: ArrayView3<'_, T>,
    options: &CmcOptions,
) -> Result<(), LossError> {
    check_temperature(options.temperature)?;
    check_cmc_shape(views.shape())?;
    check_finite("views", views.into_dyn())?;
    if options.normalize {
        check_nonzero_rows("views", views.into_dyn())?;
    }
    Ok(())
}

/// The shape rule of every CMC entry point (host arrays and tensors): `[V ≥ 2, B ≥ 2, D > 0]`.
pub(crate) fn check_cmc_shape(shape: &[usize]) -> Result<(), LossError> {
    crate::explicit::check_not_empty("views", shape, &["views", "batch", "dim"])?;
    for (axis, what, least) in [
        (0, "views count", "2 views"),
        (1, "views batch", "2 scenes"),
    ] {
        if shape[axis] < 2 {
            return Err(LossError::ShapeMismatch {
                what,
                expected: format!("at least {least} (a positive and a negative)"),
                actual: format!("{} (shape {shape:?})", shape[axis]),
            });
        }
    }
    Ok(())
}

/// The CMC loss of `views` `[V, B, D]` (see the [module docs](self)) and ∂loss/∂views, in any
/// [`Element`] type (`f64` for gradient checks). Validates first ([`validate_cmc`]).
pub fn cmc_loss<T: Element>(
    views: ArrayView3<'_, T>,
    options: &CmcOptions,
) -> Result<CmcOutput<T>, LossError> {
    validate_cmc(views, options)?;
    let (count, batch, dim) = views.dim();
    let _span = tracing::debug_span!("cmc", views = count, batch, dim, element = T::NAME).entered();
    let (rows, inverse) = prepared_rows(views.into_dyn(), dim, options.normalize);
    let view_rows = |v: usize| rows.slice(ndarray::s![v * batch..(v + 1) * batch, ..]);
    let positive: Vec<usize> = (0..batch).collect();
    let mut grad = ndarray::Array2::<f64>::zeros((count * batch, dim));
    let pairs = options.pairing.pairs(count);
    let mut loss = 0.0;
    for &(i, j) in &pairs {
        let out = match_rows(
            view_rows(i),
            view_rows(j),
            &positive,
            options.temperature,
            1.0 / batch as f64,
        );
        loss += out.loss;
        let mut rows_i = grad.slice_mut(ndarray::s![i * batch..(i + 1) * batch, ..]);
        rows_i += &out.grad_queries;
        let mut rows_j = grad.slice_mut(ndarray::s![j * batch..(j + 1) * batch, ..]);
        rows_j += &out.grad_candidates;
    }
    if !loss.is_finite() {
        return Err(LossError::Overflow { value: loss });
    }
    let grad = input_gradient(views.into_dyn(), &grad, &inverse)
        .into_dimensionality()
        .map_err(|e| LossError::Backend(format!("CMC gradient shape: {e}")))?;
    Ok(CmcOutput {
        loss,
        grad,
        pairs: pairs.len(),
    })
}

#[cfg(feature = "tch")]
pub mod tensor;

/// CMC's cross-view objective ([`cmc_loss`], [`tensor::cmc_loss_tensor`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CmcOp(pub CmcOptions);

impl crate::LossOp for CmcOp {
    type Input<'a> = ndarray::ArrayView3<'a, f32>;
    type Output = CmcOutput;
    /// Views `[V, B, D]`.
    #[cfg(feature = "tch")]
    type Tensors<'a> = &'a tch::Tensor;
    #[cfg(feature = "tch")]
    type TensorOutput = tch::Tensor;

    fn name(&self) -> &'static str {
        "cmc"
    }

    fn validate(&self, views: &ndarray::ArrayView3<'_, f32>) -> Result<(), LossError> {
        validate_cmc(*views, &self.0)
    }

    fn cpu_fwd(&self, views: &ndarray::ArrayView3<'_, f32>) -> Result<CmcOutput, LossError> {
        cmc_loss(*views, &self.0)
    }

    #[cfg(feature = "tch")]
    fn tch_fwd(
        &self,
        views: &ndarray::ArrayView3<'_, f32>,
        cuda: Option<usize>,
    ) -> Result<CmcOutput, LossError> {
        tensor::cmc_tch(*views, &self.0, crate::libtorch::device(cuda))
    }

    #[cfg(feature = "tch")]
    fn tensor_fwd(&self, views: &&tch::Tensor) -> Result<tch::Tensor, LossError> {
        tensor::cmc_loss_tensor(views, &self.0)
    }

    #[cfg(feature = "tch")]
    fn cpu_tensor_fwd(&self, views: &&tch::Tensor) -> Result<tch::Tensor, LossError> {
        use crate::libtorch::{host_rows, surrogate_from_host};
        let v = host_rows::<ndarray::Ix3>(views, "views rank", "[views, batch, dim]")?;
        let out = cmc_loss(v.view(), &self.0)?;
        surrogate_from_host(out.loss, &[(*views, out.grad.view().into_dyn())])
    }
}
