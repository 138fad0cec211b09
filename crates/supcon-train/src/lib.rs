//! The two-stage SupCon pipeline and the `supcon` command-line tool.
//!
//! Stage 1 pre-trains an encoder and projection head with a contrastive loss computed by
//! `supcon-loss` outside libtorch ([`loss_bridge`]); stage 2 trains a linear classifier on the
//! frozen encoder ([`pipeline::linear`]). A cross-entropy baseline ([`pipeline::ce`]) runs at
//! the same budget. Every run lives in a run folder ([`run_dir`]) with its resolved config,
//! `metrics.jsonl` ([`metrics_log`]) and its TensorBoard twin ([`tensorboard`]), atomically
//! written checkpoints ([`checkpoint`]) and the report ([`report`], [`plots`]).

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod curve;
pub mod dist;
pub mod error;
pub mod eval;
pub mod files;
pub mod interrupt;
pub mod loss_bridge;
pub mod metrics_log;
pub mod optim;
pub mod pipeline;
pub mod plots;
pub mod progress;
pub mod queue;
pub mod report;
pub mod run_dir;
pub mod study;
pub mod tensorboard;
pub mod vocabulary;

pub use error::TrainError;

/// The Rust examples of the README and the book, compiled (and run, unless marked `no_run`)
/// as doc tests, so that they stay true to the code.
#[cfg(doctest)]
pub mod book_examples {
    #[doc = include_str!("../../../README.md")]
    pub struct Readme;
    #[doc = include_str!("../../../docs/src/loss.md")]
    pub struct Loss;
    #[doc = include_str!("../../../docs/src/augment.md")]
    pub struct Augment;
    #[doc = include_str!("../../../docs/src/data.md")]
    pub struct Data;
    #[doc = include_str!("../../../docs/src/models.md")]
    pub struct Models;
    #[doc = include_str!("../../../docs/src/gpu.md")]
    pub struct Gpu;
}
