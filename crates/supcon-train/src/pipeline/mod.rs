//! The training stages and the whole recipe: the entry point, whose children do the work.
//!
//! - [`Session`] (`session.rs`): a resolved config, the training data (with its validation
//!   split), the run folder and its metrics log;
//! - [`pretrain`], [`linear`], [`ce`], [`finetune`](fn@finetune), [`distill`](fn@distill)
//!   (`stages.rs`): one stage each, resuming from the stage's `last` checkpoint when the
//!   session resumes; their models in `pretrain.rs` (+ `methods/`), `classifier.rs`,
//!   `finetune.rs`, `distill.rs`, the stage loop in `runner.rs`;
//! - [`evaluate`]: the final evaluation on the test set;
//! - [`train`]: the whole recipe (what `supcon train` and `cargo xtask train` run).
//!
//! A session spans the ranks of a data-parallel run ([`crate::dist`]): every rank trains, rank
//! 0 alone writes the run folder and evaluates ([`on_rank_zero`]).

pub mod classifier;
pub mod data;
pub mod distill;
pub mod evaluate;
pub mod finetune;
pub mod methods;
pub mod origin;
pub mod pretrain;
pub mod runner;
pub mod session;
pub mod stages;

pub use classifier::LinearOutcome;
pub use session::{on_rank_zero, Session, SessionOptions, StageSummary};
pub use stages::{ce, distill, finetune, linear, pretrain, train};
