//! The CUDA backend: fused SupCon / SimCLR forward + backward kernels, compiled by NVRTC at run
//! time and launched through `cudarc` (feature `cuda`).
//!
//! Like candle's backends, [`CudaBackend`] exists in every build: without the `cuda` feature
//! [`CudaBackend::new`] returns [`LossError::CudaUnavailable`](crate::LossError::CudaUnavailable), so callers need no `#[cfg]`.
//! With the feature, `new` checks for the driver library first (`cudarc`'s `CudaContext::new`
//! would panic without one) and for NVRTC, and returns the same typed error when either is
//! missing or no device answers.
//!
//! # Algorithm (flash-attention structure; nothing n × M is ever stored)
//!
//! 1. `supcon_gather_rows`: features `[B, V, D]` → contrast rows `C [M, D]` (view-major, then
//!    the queue keys), L2-normalized when asked (1/‖x‖ kept).
//! 2. L_out: `supcon_class_sums` S_y = Σ_{y_j=y} c_j (rows sorted by class on the host, a
//!    deterministic segmented reduction in f64).
//! 3. `supcon_forward_*`: per block of 64 anchors, loop over 64-row contrast tiles, score tile
//!    from shared memory, online log-sum-exp per anchor (and over positives for L_in); store
//!    LSE_i, LSEP_i and ℓ_i (L_out's positive term from the class sums).
//! 4. `supcon_sum_terms`: Σ ℓ_i in f64, one block, fixed order.
//! 5. `supcon_grad_anchor_*` and `supcon_grad_contrast_*`: recompute the score tiles, turn them
//!    into G_ij = coef_i·(π_ij − w_ij) in shared memory, and accumulate Σ_j G_ij c_j (per anchor
//!    block) and Σ_i G_ij a_i (per contrast block) over 128-column slices of D.
//! 6. L_out: T_y = Σ_{i∈I, y_i=y} coef·a_i/|P(i)| (class sums again); `supcon_finalize_grad`
//!    adds both sides, L_out's w terms from S and T, the normalization backward, and scatters
//!    to `[B, V, D]`.
//!
//! The host computes everything that depends only on the labels ([`plan::ClassIndex`]: dense
//! class ids, |P(i)|, |I|, rows sorted by class), so the kernels compare integers only.
//!
//! # Precision
//!
//! [`Precision::F32`] (default): f32 FMA, f32 log-sum-exp, f64 for class sums, dot products
//! with class sums and the loss sum. Expected agreement with the CPU reference: loss within
//! 1e-4 relative, gradient within 1e-3 of its largest element (the GPU tests' tolerance).
//! [`Precision::Tf32`]: the score tiles and the G·rows products (all 10·n·M·D FLOP) run on
//! the tensor cores (`mma.sync.m16n8k8`) with TF32 inputs (10-bit mantissa, relative rounding
//! 2⁻¹¹ per input, `cvt.rna`) and f32 accumulation; a similarity a·c/τ of unit rows is off by
//! about 2⁻¹⁰/τ at worst, so expect the loss within 5e-3 relative and the gradient within 2e-2
//! of its largest element (the TF32 tests' tolerance) — fine for training, not for gradient
//! checks.
//!
//! # Kernel sources
//!
//! [`kernels`] holds the CUDA C sources (embedded with `include_str!`) and the entry points
//! each must define; `tests/cuda_nvrtc.rs` compiles every one with NVRTC on machines without a
//! GPU, so a broken kernel fails `cargo xtask test`.

// Launch planning is an implementation detail; it is public (hidden) only so that the
// emulation tests (tests/cuda_emulated.rs) can run the exact launch schedule on the CPU.
#[doc(hidden)]
pub mod plan;

pub use plan::Precision;

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub use device::{nvrtc_compile, CudaBackend, NvrtcOutput};

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::CudaBackend;

/// The backend on device `ordinal` with `precision`, built once per process (its kernels
/// compiled by NVRTC once) and shared: a training step must not pay the compilation, and every
/// entry point that names the backend by its ordinal (`LossOp::autograd`, `supcon loss`) gets
/// this one. A failure is not kept: the next call tries again.
pub fn shared_backend(
    ordinal: usize,
    precision: Precision,
) -> Result<std::sync::Arc<CudaBackend>, crate::LossError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Backends = Mutex<HashMap<(usize, Precision), Arc<CudaBackend>>>;
    static BACKENDS: OnceLock<Backends> = OnceLock::new();
    let mut backends = BACKENDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(backend) = backends.get(&(ordinal, precision)) {
        return Ok(backend.clone());
    }
    let backend = Arc::new(CudaBackend::new(ordinal)?.with_precision(precision));
    backends.insert((ordinal, precision), backend.clone());
    Ok(backend)
}

/// f32 memory on a CUDA device that the caller owns (a PyTorch tensor's `data_ptr()`), for
/// [`CudaBackend::compute_device`].
#[derive(Clone, Copy, Debug)]
pub struct DeviceBuffers<'a> {
    /// Address of the features, contiguous `[batch, views, dim]` f32.
    pub features: u64,
    /// `[batch, views, dim]`.
    pub shape: [usize; 3],
    /// One label per sample, on the host (`None`: SimCLR).
    pub labels: Option<&'a [i64]>,
    /// The queue: address of its `[k, dim]` f32 keys, `k`, and the keys' labels on the host.
    pub queue: Option<(u64, usize, &'a [i64])>,
    /// Address of the gradient, the features' shape, written by the call.
    pub grad: u64,
}

/// The default NVRTC target when the device cannot be asked: Hopper (H100 / H200).
pub const DEFAULT_ARCH: &str = "compute_90";

/// Output of [`CudaBackend::compute_tch`] (features `tch` and `cuda`): the loss, its gradient
/// as a CUDA tensor on the features' device, and |I|.
#[cfg(feature = "tch")]
#[derive(Debug)]
pub struct TchLossOutput {
    /// The loss (τ/τ_base)·mean over anchors with a positive.
    pub loss: f64,
    /// ∂loss/∂features, `[batch, views, dim]`, f32, on the features' CUDA device.
    pub grad: tch::Tensor,
    /// |I|: anchors with at least one positive.
    pub anchors: usize,
}

/// The CUDA C sources of the backend and the entry points each defines.
pub mod kernels {
    /// The three O(n·M·D) tiled passes, f32 and TF32 variants.
    pub const TILES: &str = include_str!("kernels/supcon_tiles.cu");
    /// The O((n + M)·D) row-wise kernels.
    pub const ROWS: &str = include_str!("kernels/supcon_rows.cu");

    /// Entry points of [`TILES`].
    pub const TILES_ENTRIES: &[&str] = &[
        "supcon_forward_f32",
        "supcon_forward_tf32",
        "supcon_grad_anchor_f32",
        "supcon_grad_anchor_tf32",
        "supcon_grad_contrast_f32",
        "supcon_grad_contrast_tf32",
    ];
    /// Entry points of [`ROWS`].
    pub const ROWS_ENTRIES: &[&str] = &[
        "supcon_gather_rows",
        "supcon_class_sums",
        "supcon_sum_terms",
        "supcon_finalize_grad",
    ];

    /// Every source: (file name, text, entry points).
    pub const SOURCES: &[(&str, &str, &[&str])] = &[
        ("supcon_tiles.cu", TILES, TILES_ENTRIES),
        ("supcon_rows.cu", ROWS, ROWS_ENTRIES),
    ];
}

#[cfg(test)]
mod tests;
