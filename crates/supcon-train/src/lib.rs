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
pub mod error;
pub mod eval;
pub mod loss_bridge;
pub mod metrics_log;
pub mod optim;
pub mod pipeline;
pub mod plots;
pub mod progress;
pub mod queue;
pub mod report;
pub mod run_dir;
pub mod tensorboard;

pub use error::TrainError;
