//! Checkpoints: one safetensors file per checkpoint, written atomically.
//!
//! A checkpoint holds groups of tensors under name prefixes — `model.` (the model's variables,
//! BatchNorm running statistics included), `optim.` (momentum buffers), `ema.` (the momentum
//! encoder) and `queue.` (keys and labels) — and the training state ([`TrainState`]: stage,
//! position in the schedule, running epoch sums, best validation accuracy) as JSON in a 1-D
//! `u8` tensor named [`STATE_TENSOR`]. Keeping everything in one file makes the atomic rename
//! cover all of it: a crash leaves either the previous checkpoint or the new one.
//!
//! A plain safetensors file of a model's variables (no state tensor, no prefixes) is accepted
//! too where only weights are needed (`supcon linear --checkpoint`, `supcon eval`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use supcon_models::ModelConfig;
use tch::{nn::VarStore, Kind, Tensor};

use crate::error::TrainError;
use crate::files::write_atomic_with;
use crate::run_dir::RunDir;
use crate::vocabulary::Stage;

/// Name of the tensor that carries the JSON training state.
pub const STATE_TENSOR: &str = "__train_state__";
/// Version of the checkpoint layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Where a stage stands, and everything besides tensors that an exact resume needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub format_version: u32,
    pub stage: Stage,
    /// `supcon`, `simclr` (pre-training) or `linear` / `ce`.
    pub method: String,
    /// The model the `model.` tensors belong to.
    pub model: ModelConfig,
    pub num_classes: usize,
    /// The epoch in progress (0-based); equals `epochs` when the stage has finished.
    pub epoch: u32,
    /// Optimizer steps already done in `epoch` (the batches of its permutation to skip).
    pub step_in_epoch: u64,
    /// Optimizer steps done in the stage.
    pub global_step: u64,
    /// Epochs the stage runs.
    pub epochs: u32,
    /// The run's seed: shuffling and augmentation are pure functions of (seed, epoch, index).
    pub seed: u64,
    /// Training wall time of the stage so far.
    pub wall_seconds: f64,
    /// Images processed in the stage so far (for images/s over the whole stage).
    pub images_seen: u64,
    /// Running sums of the epoch in progress.
    pub epoch_loss_sum: f64,
    pub epoch_steps: u64,
    pub epoch_correct: u64,
    pub epoch_seen: u64,
    /// Best validation top-1 so far and its epoch (0-based), for the classifier stages.
    pub best_val_top1: Option<f64>,
    pub best_epoch: Option<u32>,
    /// Ranks of the data-parallel run that wrote it (1: one process); a resume needs as many.
    #[serde(default = "one_rank")]
    pub world_size: usize,
}

fn one_rank() -> usize {
    1
}

/// The most classes a checkpoint's classifier may have (ImageNet-21k has 21 841).
pub const MAX_CLASSES: usize = 1 << 20;

/// A checkpoint's own model sizes are input too (`supcon embed` builds the model from them):
/// bounded like a configuration's before anything is built.
fn check_state_sizes(state: &TrainState, path: &Path) -> Result<(), TrainError> {
    state.model.validate().map_err(|e| {
        TrainError::checkpoint(path, format!("its model is not one supcon builds: {e}"))
    })?;
    if state.num_classes > MAX_CLASSES {
        return Err(TrainError::checkpoint(
            path,
            format!(
                "its state names {} classes, above the limit of {MAX_CLASSES}",
                state.num_classes
            ),
        ));
    }
    Ok(())
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub path: PathBuf,
    /// `None` for a plain weights file.
    pub state: Option<TrainState>,
    tensors: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let named = supcon_models::read_safetensors(path)?;
        let mut tensors = BTreeMap::new();
        let mut state = None;
        for (name, tensor) in named {
            if name == STATE_TENSOR {
                let bytes: Vec<u8> = Vec::try_from(&tensor).map_err(|e| {
                    TrainError::checkpoint(path, format!("unreadable training state: {e}"))
                })?;
                let parsed: TrainState = serde_json::from_slice(&bytes).map_err(|e| {
                    TrainError::checkpoint(path, format!("corrupt training state: {e}"))
                })?;
                if parsed.format_version != FORMAT_VERSION {
                    return Err(TrainError::checkpoint(
                        path,
                        format!(
                            "checkpoint format {} is not the supported {FORMAT_VERSION}",
                            parsed.format_version
                        ),
                    ));
                }
                check_state_sizes(&parsed, path)?;
                state = Some(parsed);
            } else {
                tensors.insert(name, tensor);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            state,
            tensors,
        })
    }

    /// The training state, or an error saying that this is a weights-only file.
    pub fn require_state(&self) -> Result<&TrainState, TrainError> {
        self.state.as_ref().ok_or_else(|| {
            TrainError::checkpoint(&self.path, "has no training state (a weights-only file?)")
        })
    }

    /// The tensors under `prefix` (`"model"`, `"optim"`, ...), with the prefix removed. For a
    /// weights-only file, `"model"` returns every tensor.
    pub fn group(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        if self.state.is_none() && prefix == "model" {
            return self
                .tensors
                .iter()
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect();
        }
        let dotted = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&dotted)
                    .map(|rest| (rest.to_string(), v.shallow_clone()))
            })
            .collect()
    }

    /// Nothing when this is a pre-training checkpoint (or a weights-only file); else a typed
    /// error naming the stage it is of.
    pub fn require_pretraining(&self) -> Result<(), TrainError> {
        match self.state.as_ref().map(|s| s.stage) {
            Some(Stage::Pretrain) | None => Ok(()),
            Some(other) => Err(TrainError::checkpoint(
                &self.path,
                format!(
                    "is a {other} checkpoint, not a pre-training one: pass a run's \
                     checkpoints/pretrain-last.safetensors"
                ),
            )),
        }
    }

    /// Copies the `prefix` group into `vs` with supcon-models' checks: every variable must be
    /// present with its shape and no extra tensor may be left over, otherwise nothing is copied
    /// and the error lists the differences (the checkpoint is from another model).
    pub fn load_into(&self, prefix: &str, vs: &mut VarStore) -> Result<(), TrainError> {
        let group: std::collections::HashMap<String, Tensor> =
            self.group(prefix).into_iter().collect();
        supcon_models::copy_into_varstore(vs, &group, &self.path, supcon_models::LoadMode::Strict)?;
        Ok(())
    }
}

/// The training state of `stage`'s last checkpoint in `run` and the checkpoint the stage is
/// tested with ([`RunDir::chosen_checkpoint`]); `None` when the stage never wrote one there.
pub fn finished_stage(
    run: &RunDir,
    stage: Stage,
) -> Result<Option<(TrainState, PathBuf)>, TrainError> {
    let last = run.last_checkpoint(stage);
    if !last.exists() {
        return Ok(None);
    }
    let state = Checkpoint::load(&last)?.require_state()?.clone();
    let chosen = run.chosen_checkpoint(stage, state.best_epoch);
    Ok(Some((state, chosen)))
}

/// The variables of `vs` as (name, tensor), sorted by name.
pub fn varstore_tensors(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Writes a checkpoint atomically: `groups` are (prefix, tensors); `state` goes in as JSON.
pub fn save(
    path: &Path,
    state: &TrainState,
    groups: &[(&str, Vec<(String, Tensor)>)],
) -> Result<(), TrainError> {
    let json = serde_json::to_vec(state).map_err(|e| TrainError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (prefix, tensors) in groups {
        for (name, tensor) in tensors {
            // safetensors needs contiguous CPU data; detach so no graph is kept alive.
            let t = tensor.detach().to_device(tch::Device::Cpu).contiguous();
            named.push((format!("{prefix}.{name}"), t));
        }
    }
    named.push((
        STATE_TENSOR.to_string(),
        Tensor::from_slice(&json).to_kind(Kind::Uint8),
    ));
    write_atomic_with(path, |tmp| Tensor::write_safetensors(&named, tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use supcon_models::{Architecture, SupConModel};
    use tch::Device;

    fn state() -> TrainState {
        TrainState {
            format_version: FORMAT_VERSION,
            stage: Stage::Pretrain,
            method: "supcon".into(),
            model: ModelConfig::new(Architecture::ResNetTiny).with_in_channels(1),
            num_classes: 10,
            epoch: 1,
            step_in_epoch: 3,
            global_step: 13,
            epochs: 2,
            seed: 5,
            wall_seconds: 1.5,
            images_seen: 100,
            epoch_loss_sum: 2.0,
            epoch_steps: 3,
            epoch_correct: 0,
            epoch_seen: 0,
            best_val_top1: None,
            best_epoch: None,
            world_size: 1,
        }
    }

    fn model(config: &ModelConfig) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        SupConModel::new(&vs.root(), config).unwrap();
        vs
    }

    #[test]
    fn a_checkpoint_round_trips_and_refuses_another_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let config = state().model;
        let vs = model(&config);
        save(&path, &state(), &[("model", varstore_tensors(&vs))]).unwrap();
        let ckpt = Checkpoint::load(&path).unwrap();
        assert_eq!(ckpt.require_state().unwrap(), &state());
        let mut other = model(&config);
        ckpt.load_into("model", &mut other).unwrap();
        for (name, t) in varstore_tensors(&vs) {
            let o = &other.variables()[&name];
            assert!(t.equal(o), "{name}");
        }
        let mut bigger = model(&ModelConfig::new(Architecture::ResNetSmall).with_in_channels(1));
        let err = crate::error::chain(&ckpt.load_into("model", &mut bigger).unwrap_err());
        assert!(err.contains("does not fit the model"), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"not a checkpoint at all").unwrap();
        let err = crate::error::chain(&Checkpoint::load(&path).err().unwrap());
        assert!(
            err.contains("bad.safetensors") && err.contains("safetensors"),
            "{err}"
        );
        let err = crate::error::chain(&Checkpoint::load(&dir.path().join("none")).err().unwrap());
        assert!(err.to_lowercase().contains("no such file"), "{err}");
    }
}
