//! safetensors checkpoints of a [`tch::nn::VarStore`], written atomically.
//!
//! A checkpoint holds every variable of the store (parameters and BN buffers) under its
//! PyTorch-style dotted name, so a SupContrast `state_dict()` saved with
//! `safetensors.torch.save_file` loads directly, and ours load in PyTorch.

use crate::error::{ModelError, TensorMismatch};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{nn, Device, Tensor};

/// How to treat checkpoint tensors that the model does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// Every model variable must be present and every checkpoint tensor used (PyTorch's
    /// `strict=True`).
    #[default]
    Strict,
    /// Extra checkpoint tensors are skipped: e.g. an encoder-only store loading a SupCon
    /// checkpoint ignores `head.*`. Missing model variables are still an error.
    IgnoreUnexpected,
}

/// What a successful load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variables overwritten from the checkpoint.
    pub loaded: usize,
    /// Checkpoint tensors skipped under [`LoadMode::IgnoreUnexpected`], sorted.
    pub ignored: Vec<String>,
}

/// Writes every variable of `vs` to `path` (safetensors). The data goes to a temporary
/// file in the same folder that is then renamed over `path` (`supcon-atomic`), so an
/// interrupted save never destroys the previous checkpoint.
pub fn save_checkpoint(vs: &nn::VarStore, path: impl AsRef<Path>) -> Result<(), ModelError> {
    let path = path.as_ref();
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let written = supcon_atomic::write_with(path, |tmp| Tensor::write_safetensors(&named, tmp))
        .map_err(|e| match e {
            supcon_atomic::AtomicWriteError::Write { source, .. } => ModelError::CheckpointFormat {
                path: path.to_path_buf(),
                source,
            },
            supcon_atomic::AtomicWriteError::Io { path, source } => ModelError::Io { path, source },
        });
    if written.is_ok() {
        tracing::debug!(path = %path.display(), tensors = named.len(), "checkpoint saved");
    }
    written
}

/// The names and shapes stored in a checkpoint, sorted by name.
pub fn checkpoint_shapes(path: impl AsRef<Path>) -> Result<Vec<(String, Vec<i64>)>, ModelError> {
    let path = path.as_ref();
    let mut shapes: Vec<(String, Vec<i64>)> = read_safetensors(path)?
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect();
    shapes.sort();
    Ok(shapes)
}

/// The tensors of a safetensors file, with typed errors naming it (missing file, unreadable
/// format).
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    // A readable error for the common case, rather than safetensors' wrapped one; and only a
    // regular file: `/dev/zero` or a FIFO would be read until memory or patience ran out.
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other(
            "is not a regular file (a checkpoint is a .safetensors file)",
        )));
    }
    Tensor::read_safetensors(path).map_err(|source| ModelError::CheckpointFormat {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads `path` into the variables of `vs`. Every name and shape is checked before the
/// first variable is written: on any mismatch the store is left untouched and the error
/// lists what differs ([`ModelError::CheckpointMismatch`]). Values are converted to each
/// variable's dtype and device.
pub fn load_checkpoint(
    vs: &mut nn::VarStore,
    path: impl AsRef<Path>,
    mode: LoadMode,
) -> Result<LoadReport, ModelError> {
    let path = path.as_ref();
    let stored: HashMap<String, Tensor> = read_safetensors(path)?.into_iter().collect();
    copy_into_varstore(vs, &stored, path, mode)
}

/// Copies `stored` (tensors by variable name, e.g. one prefix group of a training checkpoint
/// with the prefix removed) into `vs`, with [`load_checkpoint`]'s checks; `path` names the
/// source in errors.
pub fn copy_into_varstore(
    vs: &mut nn::VarStore,
    stored: &HashMap<String, Tensor>,
    path: &Path,
    mode: LoadMode,
) -> Result<LoadReport, ModelError> {
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();

    let mut problems = Vec::new();
    for (name, var) in &variables {
        match stored.get(name) {
            None => problems.push(TensorMismatch::Missing {
                name: name.clone(),
                expected: var.size(),
            }),
            Some(t) if t.size() != var.size() => problems.push(TensorMismatch::Shape {
                name: name.clone(),
                expected: var.size(),
                found: t.size(),
            }),
            Some(_) => {}
        }
    }
    let mut ignored: Vec<String> = stored
        .keys()
        .filter(|name| !variables.contains_key(*name))
        .cloned()
        .collect();
    ignored.sort();
    if mode == LoadMode::Strict {
        problems.extend(ignored.iter().map(|name| TensorMismatch::Unexpected {
            name: name.clone(),
            found: stored[name].size(),
        }));
    }
    if !problems.is_empty() {
        return Err(ModelError::CheckpointMismatch {
            path: path.to_path_buf(),
            problems,
        });
    }

    tch::no_grad(|| -> Result<(), ModelError> {
        for (name, var) in &variables {
            let mut var = var.shallow_clone();
            var.f_copy_(&stored[name])?;
        }
        Ok(())
    })?;
    tracing::debug!(path = %path.display(), loaded = variables.len(), ignored = ignored.len(), "checkpoint loaded");
    Ok(LoadReport {
        loaded: variables.len(),
        ignored,
    })
}
