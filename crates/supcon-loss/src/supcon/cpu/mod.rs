//! The CPU backend: tiled, streaming, parallel (rayon), generic over `f32` / `f64`.

mod kernels;
mod tiled;
mod workspace;

pub use workspace::{release_kept_blocks, KEPT_BYTES};

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use ndarray::ArrayView3;

use crate::{validate, Element, LossError, LossOutput, SupConBackend, SupConInput, SupConOptions};

/// Default tile edge: blocks of 128 rows × 512 columns of similarities.
pub const DEFAULT_TILE: usize = 128;

/// Default similarity cache: the n × M matrix is kept between the passes up to 64 MiB
/// (n = M = 4096 in f32), saving a third of the matrix products.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// The CPU backend. Extra memory O((n + M)·D + tile²) per thread, plus the n × M similarity
/// matrix only when it fits the cache budget ([`DEFAULT_CACHE_BYTES`]).
///
/// Results do not depend on the thread count or on the cache; the tile size changes only the
/// rounding (summation order across blocks).
#[derive(Clone, Debug)]
pub struct CpuBackend {
    tile: usize,
    cache_bytes: usize,
    threads: Option<usize>,
    /// A private pool when `threads` is set, built on first use.
    pool: OnceLock<Arc<rayon::ThreadPool>>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// Tile [`DEFAULT_TILE`], rayon's global pool.
    pub fn new() -> Self {
        Self {
            tile: DEFAULT_TILE,
            cache_bytes: DEFAULT_CACHE_BYTES,
            threads: None,
            pool: OnceLock::new(),
        }
    }

    /// Tile edge (rows of anchors and of contrast rows per block); 0 is treated as 1.
    pub fn with_tile(self, tile: usize) -> Self {
        Self {
            tile: tile.max(1),
            ..self
        }
    }

    /// Keeps the n × M similarities between the passes when they take at most `bytes`
    /// (0: always recompute them, memory O((n + M)·D) whatever n).
    pub fn with_cache_bytes(self, bytes: usize) -> Self {
        Self {
            cache_bytes: bytes,
            ..self
        }
    }

    /// Runs on a private pool of `threads` threads instead of rayon's global pool (0 = rayon's
    /// default count).
    pub fn with_threads(self, threads: usize) -> Self {
        Self {
            threads: Some(threads),
            pool: OnceLock::new(),
            ..self
        }
    }

    /// The tile edge in use.
    pub fn tile(&self) -> usize {
        self.tile
    }

    /// The loss in any [`Element`] type: `f32` as in production, `f64` for gradient checks and
    /// references. Validates first.
    pub fn compute_generic<T: Element>(
        &self,
        input: &SupConInput<'_, T>,
        options: &SupConOptions,
    ) -> Result<LossOutput<T>, LossError> {
        self.compute_shard(input, 0..input.features.dim().0, options)
    }

    /// The share of the loss that the anchors of samples `shard` contribute, and its gradient
    /// with respect to **every** feature row: what one rank of a data-parallel job computes
    /// when the batch of every rank has been gathered into `input` (rank r owning samples
    /// `shard`).
    ///
    /// With `I` the anchors of the whole batch that have a positive (as in the crate docs)
    /// and `S` those of samples in `shard`,
    ///
    /// ```text
    /// Loss_S = (τ/τ_base) · (1/|I|) · Σ_{i∈I∩S} ℓ_i        ∂Loss_S/∂f  (all of f)
    /// ```
    ///
    /// so over shards that partition `0..batch`, the losses add up to the loss of the whole
    /// batch and the gradients to its gradient (exactly, up to rounding): the ranks all-reduce
    /// (sum) the gradient and each keeps its own rows. `anchors` is |I| of the whole batch.
    /// The shard's anchors are contrasted against every row, so its cost is about `|S|/B` of
    /// the whole loss's plus the contrast gradient of the other rows (`≈ 5/R` of the one-process
    /// cost on R equal shards, against 2–3 for the whole batch).
    ///
    /// An empty `shard` gives a zero loss and gradient; a `shard` beyond the batch is a
    /// [`LossError::ShapeMismatch`].
    pub fn compute_shard<T: Element>(
        &self,
        input: &SupConInput<'_, T>,
        shard: Range<usize>,
        options: &SupConOptions,
    ) -> Result<LossOutput<T>, LossError> {
        validate(input, options)?;
        let (batch, views, dim) = input.features.dim();
        if shard.start > shard.end || shard.end > batch {
            return Err(LossError::ShapeMismatch {
                what: "anchor shard",
                expected: format!("a range of samples within 0..{batch} (the batch)"),
                actual: format!("{shard:?}"),
            });
        }
        let _span = tracing::debug_span!(
            "supcon_cpu",
            batch,
            views,
            dim,
            keys = input.queue_len(),
            element = T::NAME,
            tile = self.tile,
            shard = ?shard
        )
        .entered();
        let compute = || tiled::compute(input, shard.clone(), options, self.tile, self.cache_bytes);
        match self.threads {
            None => compute(),
            Some(threads) => {
                let pool = match self.pool.get() {
                    Some(pool) => pool.clone(),
                    None => {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .map_err(|e| {
                                LossError::library(format!("building a {threads}-thread pool"), e)
                            })?;
                        self.pool.get_or_init(|| Arc::new(pool)).clone()
                    }
                };
                pool.install(compute)
            }
        }
    }

    /// Convenience for `f64` features without a queue.
    pub fn compute_f64(
        &self,
        features: ArrayView3<'_, f64>,
        labels: Option<&[i64]>,
        options: &SupConOptions,
    ) -> Result<LossOutput<f64>, LossError> {
        self.compute_generic(&SupConInput::new(features, labels), options)
    }
}

impl SupConBackend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn compute(
        &self,
        input: &SupConInput<'_>,
        options: &SupConOptions,
    ) -> Result<LossOutput, LossError> {
        self.compute_generic(input, options)
    }
}
