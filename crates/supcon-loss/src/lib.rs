//! Supervised contrastive (SupCon) and SimCLR losses: exact, streaming, with analytic gradients.
//!
//! One function of the projections `f[b, v, :]` (batch b < B, view v < V, dim D) returns the
//! loss, ∂loss/∂features and the number of anchors averaged. Backends: [`CpuBackend`] (tiled,
//! rayon, this crate), `TchBackend` (feature `tch`), [`cuda::CudaBackend`] (feature `cuda`),
//! all behind the [`SupConBackend`] trait and the shared [`validate`].
//!
//! The crate also computes the SwAV loss (module [`mod@swav`], entry points [`swav()`] and
//! [`swav_generic`]): Sinkhorn–Knopp codes over K prototypes and swapped prediction between
//! crops, with gradients for the features and the prototypes (`swav_loss_tensor` is its
//! libtorch counterpart).
//!
//! Two losses with an explicit positive per query, gradients with respect to the queries:
//! InfoNCE with shared or per-query negatives, MoCo's loss (module [`mod@infonce`], entry point
//! [`infonce_loss`]; streaming over large queues), and InstDisc's NCE over a memory bank
//! (module [`mod@nce`], entry point [`nce_loss`]). Their libtorch counterparts are
//! `infonce_loss_tensor` and `nce_loss_tensor`.
//!
//! Two losses whose candidates are the batch's own rows, with gradients for both sides: CMC's
//! cross-view objective (module [`mod@cmc`], entry point [`cmc_loss`]; one encoder per view)
//! and CPC's InfoNCE over a grid of predictions (module [`mod@cpc`], entry point [`cpc_loss`]).
//! InvSpread's in-batch instance loss with its spreading term (module [`mod@invspread`], entry
//! point [`invspread_loss`]) trains both sides of every similarity too.
//!
//! Every loss is also a [`LossOp`] (module [`mod@op`]): one type per loss with its CPU, libtorch
//! and CUDA entry points where they exist, run on a [`Backend`], and one way into autograd for
//! code that holds libtorch tensors ([`LossOp::autograd`], feature `tch`).
//!
//! **Layout: one loss, one folder.** Each loss's module ([`mod@supcon`], [`mod@infonce`],
//! [`mod@nce`], [`mod@swav`], [`mod@cmc`], [`mod@cpc`], [`mod@invspread`]) holds its options, its validation, its
//! op and its implementations (the CPU code; `tensor`, the libtorch code; SupCon's `cuda`).
//! Below them, what they share: the host checks (`checks`), the row kernels (`explicit`), the
//! two-pass matching core of CMC and CPC (`matching`), the vectorized `exp` (`fast_exp`), and
//! the libtorch utilities with the gradient surrogate ([`mod@libtorch`]).
//!
//! ```
//! use ndarray::Array3;
//! use supcon_loss::{supcon, SupConOptions};
//!
//! // 4 samples, 2 views, 3 dims; samples 0 and 1 share a class.
//! let features = Array3::from_shape_fn((4, 2, 3), |(b, v, d)| ((b * 7 + v * 3 + d) as f32).sin());
//! let out = supcon(features.view(), Some(&[0, 0, 1, 2]), &SupConOptions::default())?;
//! assert!(out.loss.is_finite());
//! assert_eq!(out.grad.shape(), features.shape());
//! assert_eq!(out.anchors, 8); // every view has at least its other view as a positive
//! # Ok::<(), supcon_loss::LossError>(())
//! ```
//!
//! # The math
//!
//! The book's *The loss* page (`docs/src/loss-math.md`) holds the same definitions and derives the
//! algorithm; the symbols here are the book's.
//!
//! **Rows.** Contrast rows `c_j`, j < M: all views stacked view-major (`j = v·B + b`, SupContrast's
//! `torch.cat(torch.unbind(features, 1))`), then the K queue keys: M = V·B + K. Anchors `a_i`,
//! i < n, are contrast rows `0..n`: n = V·B ([`ContrastMode::All`]) or n = B, view 0 only
//! ([`ContrastMode::One`]). Labels `y_j`; queue keys carry their own; without labels (SimCLR)
//! `y = b`, the sample index.
//!
//! **Loss.** With `s_ij = a_i·c_j / τ`, `A(i) = { j < M : j ≠ i }`, `P(i) = { j ∈ A(i) : y_j = y_i }`,
//! `LSE_i = log Σ_{j∈A(i)} exp(s_ij)` and `LSEP_i = log Σ_{j∈P(i)} exp(s_ij)`:
//!
//! ```text
//! L_out:  ℓ_i = LSE_i − (1/|P(i)|) Σ_{p∈P(i)} s_ip        (Khosla et al. eq. 2, the default)
//! L_in:   ℓ_i = LSE_i − LSEP_i + log |P(i)|               (eq. 3; ℓ_in ≤ ℓ_out by Jensen)
//! I = { i < n : |P(i)| > 0 }
//! Loss = (τ / τ_base) · (1/|I|) · Σ_{i∈I} ℓ_i,  and 0 (zero gradient, anchors 0) when I = ∅
//! ```
//!
//! For L_out the positive term uses class sums `S_y = Σ_{j<M, y_j=y} c_j`:
//! `Σ_{p∈P(i)} s_ip = a_i·(S_{y_i} − c_i)/τ`.
//!
//! **Gradient.** With `π_ij = exp(s_ij − LSE_i)` on A(i) and `w_ij = 1/|P(i)|` (L_out) or
//! `exp(s_ij − LSEP_i)` (L_in) on P(i), 0 elsewhere:
//!
//! ```text
//! G_ij = (τ/τ_base) · (1/|I|) · (π_ij − w_ij) / τ       for i ∈ I, 0 otherwise
//! ∂L/∂a_i = Σ_j G_ij c_j        ∂L/∂c_j = Σ_i G_ij a_i  (queue keys: no gradient)
//! ```
//!
//! A feature row that is both anchor i and contrast row j gets both terms. For L_out the w part
//! uses class sums again: `Σ_j w_ij c_j = (S_{y_i} − c_i)/|P(i)|` and
//! `Σ_i w_ij a_i = T_{y_j} − [j∈I]·a_j/|P(j)|` with `T_y = Σ_{i∈I, y_i=y} a_i/|P(i)|`.
//! With `normalize`, `z = x/‖x‖` and `∂L/∂x = (∂L/∂z − z (z·∂L/∂z)) / ‖x‖`; queue keys are
//! normalized too (they get no gradient).
//!
//! # Semantics worth knowing
//!
//! - **Anchors without a positive are left out of the mean** (SupContrast counts them as 0 in
//!   the mean, which dilutes the loss). With ContrastMode::All and V ≥ 2 every anchor has a
//!   positive, so the two agree; with V = 1 they differ.
//! - **No labels with a queue** (MoCo-style): batch rows get their sample index as label and
//!   every queue key is a pure negative; the queue labels are ignored.
//! - A queue key whose label equals an anchor's label is a positive of that anchor.
//!
//! # Computation and accuracy
//!
//! The CPU backend needs no n × M matrix: a forward pass computes blocks of similarities with a
//! matrix product and keeps an online log-sum-exp per anchor (`LSE_i`, and `LSEP_i`); a backward
//! pass recomputes the blocks and gives each feature row both its anchor and its contrast
//! gradient from the same (symmetric) similarities. Extra memory is O((n + M)·D + threads·tile²),
//! plus the n × M similarities only when they fit a fixed budget (64 MiB by default,
//! [`CpuBackend::with_cache_bytes`]), which saves one of the three matrix products. Blocks run in
//! parallel on rayon; every block owns its output rows and reads the columns in a fixed order, so
//! results do not depend on the thread count or on the cache.
//!
//! Tiles of dot products and gradient products are computed in the element type `T`; every
//! reduction across tiles (log-sum-exp, gradient rows, class sums, the loss) is accumulated in
//! `f64` (the exponentials with a vectorizable f64 `exp` within 1e-15 relative of libm's).
//! **Tolerance guarantee** (f32 inputs against the same computation in f64 on the same
//! values): with R the largest row norm that enters the dot products (1 when normalizing) and
//! u = 2⁻²⁴, every similarity is within `γ = (D + 2)·u·R²/τ` of its f64 value, and because
//! log-sum-exp and means are 1-Lipschitz,
//!
//! ```text
//! |Loss_f32 − Loss_f64| ≤ 2 · (τ/τ_base) · γ  (+ f64 rounding, negligible)
//! ```
//!
//! The gradient is within `1e-3 · max|grad_f64|` elementwise for τ ≥ 0.05 and unit-norm rows
//! (tested on random problems; typical errors are around 1e-6 relative). Gradient checks run
//! the same code in `f64` ([`CpuBackend::compute_generic`]) against central finite differences.

#![warn(missing_docs)]

mod checks;
mod element;
mod error;
mod explicit;
mod fast_exp;
mod matching;

pub mod cmc;
pub mod cpc;
pub mod infonce;
pub mod invspread;
#[cfg(feature = "tch")]
pub mod libtorch;
pub mod nce;
#[cfg(feature = "npy")]
pub mod npy;
pub mod op;
pub mod supcon;
pub mod swav;

pub use cmc::{cmc_loss, validate_cmc, CmcOp, CmcOptions, CmcOutput, Pairing};
pub use cpc::{cpc_loss, validate_cpc, CpcOp, CpcOptions, CpcOutput};
pub use element::Element;
pub use error::{LibraryError, LossError};
pub use infonce::{
    infonce_loss, validate_infonce, InfoNceInput, InfoNceOp, InfoNceOptions, InfoNceOutput,
    Negatives, INFONCE_COLUMN_BLOCK, INFONCE_ROW_BLOCK,
};
pub use invspread::{
    invspread_loss, validate_invspread, InvSpreadOp, InvSpreadOptions, InvSpreadOutput,
};
pub use nce::{nce_loss, validate_nce, NceInput, NceOp, NceOptions, NceOutput, NCE_ROW_BLOCK};
pub use op::{Backend, LossOp};
#[cfg(feature = "collectives")]
pub use supcon::distributed;
pub use supcon::unlabeled::{is_unlabeled, UNLABELED};
#[cfg(feature = "tch")]
pub use supcon::SupConTensors;
pub use supcon::{
    check_shape, cuda, validate, ContrastMode, CpuBackend, InputShape, LossOutput, Queue,
    SupConBackend, SupConInput, SupConOp, SupConOptions, Variant, DEFAULT_CACHE_BYTES,
    DEFAULT_TILE,
};
pub use supcon::{release_kept_blocks, KEPT_BYTES};
pub use swav::{
    swav, swav_codes, swav_generic, swav_with_codes, validate_swav, SwavInput, SwavOp, SwavOptions,
    SwavOutput,
};

// The libtorch entry points of every loss (feature `tch`), beside the CPU ones.
#[cfg(feature = "tch")]
pub use cmc::tensor::{cmc_loss_tensor, cmc_tch};
#[cfg(feature = "tch")]
pub use cpc::tensor::{cpc_loss_tensor, cpc_tch};
#[cfg(feature = "tch")]
pub use infonce::tensor::{infonce_loss_tensor, infonce_tch};
#[cfg(feature = "tch")]
pub use invspread::tensor::{invspread_loss_tensor, invspread_tch};
#[cfg(feature = "tch")]
pub use nce::tensor::{nce_loss_tensor, nce_tch, NceTensorOutput};
#[cfg(feature = "tch")]
pub use supcon::tensor::{
    supcon_loss_tensor, supcon_loss_tensor_with_anchors, validate_tensors, TchBackend,
};
#[cfg(feature = "tch")]
pub use swav::tensor::{swav_loss_tensor, swav_loss_tensor_with_codes, swav_tch};

use ndarray::ArrayView3;

/// The loss with the default [`CpuBackend`]: `CpuBackend::default().compute(..)` without a queue.
pub fn supcon(
    features: ArrayView3<'_, f32>,
    labels: Option<&[i64]>,
    options: &SupConOptions,
) -> Result<LossOutput, LossError> {
    CpuBackend::default().compute(&SupConInput::new(features, labels), options)
}
