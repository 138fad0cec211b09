//! safetensors checkpoints of a [`tch::nn::VarStore`], written atomically.
//!
//! A checkpoint holds every variable of the store (parameters and BN buffers) under its
//! PyTorch-style dotted name, so a SupContrast `state_dict()` saved with
//! `safetensors.torch.save_file` loads directly, and ours load in PyTorch.

use crate::error::{ModelError, TensorMismatch};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
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
/// file in the same folder that is then renamed over `path`, so an interrupted save never
/// destroys the previous checkpoint.
pub fn save_checkpoint(vs: &nn::VarStore, path: impl AsRef<Path>) -> Result<(), ModelError> {
    let path = path.as_ref();
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tmp = temp_path(path);
    let io_err = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let written = Tensor::write_safetensors(&named, &tmp)
        .map_err(|source| ModelError::CheckpointFormat {
            path: path.to_path_buf(),
            source,
        })
        .and_then(|()| {
            // Data on disk before the rename makes it visible.
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err)
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io_err));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        tracing::debug!(path = %path.display(), tensors = named.len(), "checkpoint saved");
    }
    written
}

/// `.<name>.tmp-<pid>` beside `path`: same folder, so the rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".to_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The names and shapes stored in a checkpoint, sorted by name.
pub fn checkpoint_shapes(path: impl AsRef<Path>) -> Result<Vec<(String, Vec<i64>)>, ModelError> {
    let path = path.as_ref();
    let mut shapes: Vec<(String, Vec<i64>)> = read(path)?
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect();
    shapes.sort();
    Ok(shapes)
}

fn read(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    // A readable error for the common case, rather than safetensors' wrapped one.
    std::fs::metadata(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
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
    let stored: HashMap<String, Tensor> = read(path)?.into_iter().collect();
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
