//! The crate's error type: every failure names what was wrong and where.
//!
//! Each layer's message says what that layer adds and keeps the cause as its `source()`, never
//! in its text: [`chain`] prints the whole story once, `: `-separated (what `main` prints).

use std::path::{Path, PathBuf};

/// Everything that can stop a run.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a file's new content failed; the old file is untouched.
    #[error("writing {} (temporary {})", path.display(), tmp.display())]
    Write {
        path: PathBuf,
        tmp: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A JSON file (metrics, state, report) could not be written or parsed.
    #[error("{}: {message}", path.display())]
    Json { path: PathBuf, message: String },
    /// A `.npy` file could not be read as the array a command needs.
    #[error("{}: not {expected} .npy file", path.display())]
    Npy {
        path: PathBuf,
        /// What the file should hold, e.g. `a [batch, views, dim] f32`.
        expected: &'static str,
        #[source]
        source: ndarray_npy::ReadNpyError,
    },
    /// A loss on `.npy` files (`supcon loss`) failed: the file, or the loss, is named.
    #[error(transparent)]
    NpyLoss(#[from] supcon_loss::npy::NpyLossError),
    /// The configuration is invalid: unknown key, wrong type, impossible value.
    #[error("configuration error: {0}")]
    Config(String),
    /// The run folder cannot be used as asked (exists without --resume/--overwrite, missing).
    #[error("run folder {}: {message}", path.display())]
    RunDir { path: PathBuf, message: String },
    /// A checkpoint is unreadable or does not fit the model it is loaded into.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// A data set could not be found, read or split; `context` says which and what for.
    #[error("data: {context}")]
    Data {
        context: String,
        /// Boxed: image decoding errors are large, and every `Result` carries the variant.
        #[source]
        source: Box<supcon_data::DataError>,
    },
    /// The augmentation pipeline failed or could not be built.
    #[error("augmentation")]
    Augment(#[from] supcon_augment::AugmentError),
    /// Building a model or loading its weights failed.
    #[error("model")]
    Model(#[from] supcon_models::ModelError),
    /// An evaluation (kNN, geometry, classification, robustness) rejected its input.
    #[error("evaluation")]
    Eval(#[from] crate::eval::EvalError),
    /// Arrays or tensors of the run do not fit together (a queue, optimizer state or output
    /// of an unexpected shape); the message names them.
    #[error("shape: {0}")]
    Shape(String),
    /// libtorch reported an error.
    #[error("libtorch")]
    Tch(#[from] tch::TchError),
    /// The loss backend rejected its input or failed.
    #[error("loss")]
    Loss(#[from] supcon_loss::LossError),
    /// The loss became NaN or infinite; the last good checkpoint is kept.
    #[error("non-finite loss ({loss}) at {stage} epoch {epoch} step {step} (lr {lr:.6}); {batch}")]
    NonFiniteLoss {
        stage: String,
        epoch: u32,
        step: u64,
        lr: f64,
        loss: f64,
        /// Statistics of the offending batch (inputs and projections).
        batch: String,
    },
    /// InstDisc's running average of Z left `f64` (the batch's estimate overflowed); the last
    /// good checkpoint is kept.
    #[error(
        "instdisc: the running average of Z is {value}, not a positive finite number: the batch's \
         estimate of Z overflowed (similarities/tau beyond about 700); raise pretrain.temperature \
         or keep Z fixed with pretrain.instdisc.partition_momentum = 1"
    )]
    NonFinitePartition { value: f64 },
    /// A collective between the ranks of a data-parallel run failed (`what` it was for).
    #[error("{what}")]
    Collective {
        what: &'static str,
        #[source]
        source: supcon_collectives::CollectiveError,
    },
    /// `supcon check-ranks` found ranks that do not compute what one process computes.
    #[error("check-ranks: {0}")]
    RankCheck(String),
    /// The user pressed Ctrl-C: a checkpoint was written and the run can be resumed.
    #[error("interrupted at {stage} epoch {epoch} step {step}; resume with: {resume_command}")]
    Interrupted {
        stage: String,
        epoch: u32,
        step: u64,
        resume_command: String,
    },
}

impl TrainError {
    /// A data error while doing `context` (e.g. `fashion-mnist (train split)`).
    pub fn data(context: impl Into<String>, source: supcon_data::DataError) -> Self {
        TrainError::Data {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A checkpoint error on `path`.
    pub fn checkpoint(path: &Path, message: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// `error` and its causes (`source()` chain) on one line, `: `-separated.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        line.push_str(": ");
        line.push_str(&source.to_string());
        cause = source.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = TrainError::data(
            "fashion-mnist (train split)",
            supcon_data::DataError::Io {
                path: "/data/train.gz".into(),
                source: io,
            },
        );
        assert_eq!(
            chain(&error),
            "data: fashion-mnist (train split): cannot read /data/train.gz: no such file"
        );
    }
}
