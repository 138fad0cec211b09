//! The upper bounds of the configuration's sizes: one table, checked before anything is
//! allocated or written.
//!
//! A configuration may come from someone else (a shared `config.toml`, a `--set` typed in a
//! hurry). Every count below sizes a buffer, a tensor or a thread pool; beyond its bound it
//! would make libtorch panic, the allocator abort, or the run fail hours in. The bounds are
//! far above any recipe in the book (ImageNet's included) and below what breaks; a value over
//! one is a configuration error naming the key, the value and the bound, raised by
//! [`RunConfig::validate`] before the run folder exists. Each method's own table checks its
//! sizes against these bounds in `config/methods.rs` (`[pretrain.<method>]`).

use super::RunConfig;
use crate::error::TrainError;

/// libtorch's intra-op threads (it takes an `i32`).
pub const MAX_THREADS: u64 = 1024;
/// Side of the images after resizing (`data.image_size`): 4 096² RGB is 48 MiB per image.
pub const MAX_IMAGE_SIDE: u64 = 4096;
/// Images held by the streamed sources' shuffle buffer.
pub const MAX_SHUFFLE_BUFFER: u64 = 1 << 20;
/// Batches prepared ahead of the step.
pub const MAX_PREFETCH: u64 = 64;
/// Augmented views (and multi-crop local views) per image.
pub const MAX_VIEWS: u64 = 64;
/// Any stage's batch size.
pub const MAX_BATCH: u64 = 1 << 20;
/// Entries of a queue or memory (label-aware, MoCo, SwAV) and InstDisc's negatives.
pub const MAX_QUEUE: u64 = 1 << 24;
/// SwAV's prototypes.
pub const MAX_PROTOTYPES: u64 = 1 << 20;
/// Sinkhorn–Knopp iterations, kNN neighbours and other per-step loop counts.
pub const MAX_ITERATIONS: u64 = 1 << 16;
/// Elements (entries × projection dimension) of the largest queue: 4 GiB of f32.
pub const MAX_QUEUE_ELEMENTS: u64 = 1 << 30;

/// Each `(key, value, bound)` against its bound, the key named as `<prefix><key>` (the one
/// check of the configuration's sizes and of each method's table).
pub(super) fn check_sizes(prefix: &str, sizes: &[(&str, u64, u64)]) -> Result<(), TrainError> {
    for &(key, value, max) in sizes {
        if value > max {
            return Err(TrainError::Config(format!(
                "{prefix}{key}: {value} is above the limit of {max} (config::limits)"
            )));
        }
    }
    Ok(())
}

impl RunConfig {
    /// Every size of the configuration against its bound.
    pub(super) fn validate_sizes(&self) -> Result<(), TrainError> {
        check_sizes("", &self.sizes())?;
        let queue = self.pretrain.queue as u64;
        let elements = queue.saturating_mul(self.model.projection_dim.max(0) as u64);
        if elements > MAX_QUEUE_ELEMENTS {
            return Err(TrainError::Config(format!(
                "pretrain.queue: {queue} entries × model.projection_dim {} = {elements} \
                 elements is above the limit of {MAX_QUEUE_ELEMENTS} (4 GiB of f32)",
                self.model.projection_dim
            )));
        }
        Ok(())
    }

    /// (key, value, bound) of every size in the configuration.
    fn sizes(&self) -> Vec<(&'static str, u64, u64)> {
        let p = &self.pretrain;
        let d = &self.data;
        let mut sizes = vec![
            ("threads", self.threads as u64, MAX_THREADS),
            (
                "data.image_size",
                d.image_size.map_or(0, u64::from),
                MAX_IMAGE_SIDE,
            ),
            (
                "data.shuffle_buffer",
                d.shuffle_buffer as u64,
                MAX_SHUFFLE_BUFFER,
            ),
            (
                "data.prefetch",
                d.prefetch.unwrap_or(0) as u64,
                MAX_PREFETCH,
            ),
            ("pretrain.views", p.views as u64, MAX_VIEWS),
            (
                "pretrain.multicrop.local_views",
                p.multicrop.local_views as u64,
                MAX_VIEWS,
            ),
            (
                "pretrain.multicrop.local_size",
                p.multicrop.local_size as u64,
                MAX_IMAGE_SIDE,
            ),
            ("pretrain.batch_size", p.batch_size as u64, MAX_BATCH),
            (
                "linear.batch_size",
                self.linear.batch_size as u64,
                MAX_BATCH,
            ),
            ("ce.batch_size", self.ce.batch_size as u64, MAX_BATCH),
            ("eval.batch_size", self.eval.batch_size as u64, MAX_BATCH),
            ("pretrain.queue", p.queue as u64, MAX_QUEUE),
            ("eval.knn_k", self.eval.knn_k as u64, MAX_ITERATIONS),
        ];
        if let Some(f) = &self.finetune {
            sizes.push(("finetune.batch_size", f.batch_size as u64, MAX_BATCH));
        }
        if let Some(distill) = &self.distill {
            sizes.push(("distill.batch_size", distill.batch_size as u64, MAX_BATCH));
        }
        sizes
    }
}
