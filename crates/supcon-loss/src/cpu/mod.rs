//! The CPU backend: tiled, streaming, parallel (rayon), generic over `f32` / `f64`.

mod fast_exp;
mod tiled;

use std::sync::{Arc, OnceLock};

use ndarray::ArrayView3;

use crate::{validate, Element, LossBackend, LossError, LossOutput, SupConInput, SupConOptions};

/// Default tile edge: a 128 × 128 block of similarities, 128-row slabs of features.
pub const DEFAULT_TILE: usize = 128;

/// The CPU backend. Extra memory O((n + M)·D + tile²) per thread; never an n × M matrix.
///
/// Results do not depend on the thread count; the tile size changes only the rounding
/// (summation order inside a tile).
#[derive(Clone, Debug)]
pub struct CpuBackend {
    tile: usize,
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
        validate(input, options)?;
        let (batch, views, dim) = input.features.dim();
        let _span = tracing::debug_span!(
            "supcon_cpu",
            batch,
            views,
            dim,
            keys = input.queue_len(),
            element = T::NAME,
            tile = self.tile
        )
        .entered();
        match self.threads {
            None => tiled::compute(input, options, self.tile),
            Some(threads) => {
                let pool = match self.pool.get() {
                    Some(pool) => pool.clone(),
                    None => {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .map_err(|e| {
                                LossError::Backend(format!("building a {threads}-thread pool: {e}"))
                            })?;
                        self.pool.get_or_init(|| Arc::new(pool)).clone()
                    }
                };
                pool.install(|| tiled::compute(input, options, self.tile))
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

impl LossBackend for CpuBackend {
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
