//! The models crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong building, running or (de)serializing a model.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ModelError {
    /// An architecture name that [`crate::Architecture`]'s parser does not know.
    #[error("unknown architecture `{name}`; expected one of: {expected}")]
    UnknownArchitecture {
        name: String,
        expected: &'static str,
    },
    /// A projection-head name other than `mlp` / `linear`.
    #[error("unknown projection head `{name}`; expected `mlp`, `linear` or `mlp3`")]
    UnknownHead { name: String },
    /// A stem name other than `cifar` / `imagenet`.
    #[error("unknown stem `{name}`; expected `cifar` or `imagenet`")]
    UnknownStem { name: String },
    /// A configuration value out of range (the field is named in the message).
    #[error("invalid model configuration: {field} = {value}: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// An input batch that the model cannot take.
    #[error("input of shape {shape:?}: expected {expected}")]
    InputShape { shape: Vec<i64>, expected: String },
    /// Values that must be finite are not (NaN or infinite); nothing was changed.
    #[error("{what} hold NaN or infinite values")]
    NonFinite { what: &'static str },
    /// A checkpoint whose tensors do not fit the model; nothing was overwritten.
    #[error("checkpoint {} does not fit the model ({} problem(s)): {}", path.display(), problems.len(), Problems(problems))]
    CheckpointMismatch {
        path: PathBuf,
        problems: Vec<TensorMismatch>,
    },
    /// Reading, writing or renaming a checkpoint file failed.
    #[error("checkpoint {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// libtorch (or tch's safetensors reader/writer) failed on a checkpoint.
    #[error("checkpoint {}", path.display())]
    CheckpointFormat {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    /// Any other libtorch error.
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
}

/// One way in which a checkpoint's tensor differs from the model's variable of that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorMismatch {
    /// The model has the variable, the checkpoint does not.
    Missing { name: String, expected: Vec<i64> },
    /// Both have it, with different shapes.
    Shape {
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    /// The checkpoint has a tensor the model does not (only an error in strict loading).
    Unexpected { name: String, found: Vec<i64> },
}

impl TensorMismatch {
    /// The tensor's name.
    pub fn name(&self) -> &str {
        match self {
            TensorMismatch::Missing { name, .. }
            | TensorMismatch::Shape { name, .. }
            | TensorMismatch::Unexpected { name, .. } => name,
        }
    }
}

impl fmt::Display for TensorMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorMismatch::Missing { name, expected } => {
                write!(f, "`{name}` missing (model has shape {expected:?})")
            }
            TensorMismatch::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "`{name}` has shape {found:?}, model has shape {expected:?}"
            ),
            TensorMismatch::Unexpected { name, found } => {
                write!(f, "`{name}` (shape {found:?}) is not in the model")
            }
        }
    }
}

/// Shows the first few problems; a wrong architecture can produce hundreds.
struct Problems<'a>(&'a [TensorMismatch]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 5;
        for (i, problem) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "; and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}
