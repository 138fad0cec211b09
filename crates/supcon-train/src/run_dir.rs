//! The run folder `runs/<name>/` and atomic file writes.
//!
//! Layout:
//!
//! ```text
//! runs/<name>/
//!   config.toml                 the resolved configuration (preset + file + overrides)
//!   metrics.jsonl               see metrics_log
//!   checkpoints/<stage>-last.safetensors
//!   checkpoints/<stage>-epoch-0005.safetensors   every `checkpoint_every_epochs`
//!   checkpoints/linear-best.safetensors, ce-best.safetensors   best validation epoch
//!   report.json, report.md, plots/*.png
//!   tensorboard/events.out.tfevents.<time>.<host>.<pid>   the scalars, see tensorboard
//! ```
//!
//! Every file that a crash must not destroy is written with [`write_atomic`] (`files`): into a temporary
//! file in the same folder, flushed to disk, then renamed over the old one (a rename within one
//! file system is atomic on POSIX), so a reader sees the old file or the new one, never half.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::TrainError;
use crate::vocabulary::Stage;

/// File name of the resolved configuration.
pub const CONFIG_FILE: &str = "config.toml";

/// Folder of the TensorBoard events files (one per process that logged scalars).
pub const TENSORBOARD_DIR: &str = "tensorboard";

pub use crate::files::{write_atomic, write_atomic_with};

/// File name of the metrics log inside a run folder (see `metrics_log`).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// How to treat a run folder that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Refuse: the folder must not exist (the default; nothing is ever overwritten silently).
    Refuse,
    /// Delete the old folder and start afresh (`--overwrite`).
    Overwrite,
    /// Continue the run in it (`--resume`): it must exist and hold a config.
    Resume,
}

/// A run folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Opens `root` as a run folder according to `reuse`; creates it unless resuming.
    pub fn prepare(root: &Path, reuse: Reuse) -> Result<Self, TrainError> {
        let err = |message: String| TrainError::RunDir {
            path: root.to_path_buf(),
            message,
        };
        let exists = root.exists();
        match reuse {
            Reuse::Refuse if exists => {
                return Err(err(format!(
                "already exists; pass --resume {} to continue it or --overwrite to start it afresh",
                root.display()
            )))
            }
            Reuse::Overwrite if exists => {
                // Only delete what looks like one of our run folders.
                if !root.join(CONFIG_FILE).exists()
                    && fs::read_dir(root)
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(true)
                {
                    return Err(err(format!(
                        "exists and is not a run folder (no {CONFIG_FILE}); refusing to delete it"
                    )));
                }
                fs::remove_dir_all(root).map_err(|e| TrainError::io(root, e))?;
            }
            Reuse::Resume if !root.join(CONFIG_FILE).exists() => {
                return Err(err(format!(
                    "cannot resume: no {CONFIG_FILE} in it (is this a run folder?)"
                )))
            }
            _ => {}
        }
        let dir = Self {
            root: root.to_path_buf(),
        };
        fs::create_dir_all(dir.checkpoints()).map_err(|e| TrainError::io(root, e))?;
        Ok(dir)
    }

    /// The run folder at `root` as another rank of a data-parallel run sees it: paths only,
    /// nothing created or checked (rank 0 prepares the folder and writes in it).
    pub fn existing(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// `labeled_subset.json`: few labels, the indices of the training split that kept their
    /// label.
    pub fn labeled_subset_path(&self) -> PathBuf {
        self.root.join("labeled_subset.json")
    }

    /// `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(METRICS_FILE)
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `checkpoints/<stage>-last.safetensors`.
    pub fn last_checkpoint(&self, stage: Stage) -> PathBuf {
        self.checkpoints()
            .join(format!("{}-last.safetensors", stage.as_str()))
    }

    /// `checkpoints/<stage>-best.safetensors`.
    pub fn best_checkpoint(&self, stage: Stage) -> PathBuf {
        self.checkpoints()
            .join(format!("{}-best.safetensors", stage.as_str()))
    }

    /// The checkpoint a classifier stage is tested with (the one rule of the pipeline and
    /// `supcon eval`): the best-validation one when the stage selected an epoch and wrote it,
    /// otherwise the last one.
    pub fn chosen_checkpoint(&self, stage: Stage, best_epoch: Option<u32>) -> PathBuf {
        let best = self.best_checkpoint(stage);
        if best_epoch.is_some() && best.exists() {
            best
        } else {
            self.last_checkpoint(stage)
        }
    }

    /// `checkpoints/<stage>-epoch-NNNN.safetensors` (the epoch counted from 1).
    pub fn epoch_checkpoint(&self, stage: Stage, epoch_one_based: u32) -> PathBuf {
        self.checkpoints().join(format!(
            "{}-epoch-{epoch_one_based:04}.safetensors",
            stage.as_str()
        ))
    }

    /// `plots/`.
    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }

    /// `tensorboard/`: what `tensorboard --logdir runs` reads.
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join(TENSORBOARD_DIR)
    }

    /// A file at the top of the folder (`report.json`, `embeddings.npy`, ...).
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        let result = write_atomic_with(&path, |tmp| {
            fs::write(tmp, b"half")?;
            Err::<(), _>(std::io::Error::other("disk full"))
        });
        assert!(result.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn an_existing_run_is_refused_unless_resumed_or_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("run");
        let run = RunDir::prepare(&root, Reuse::Refuse).unwrap();
        write_atomic(&run.config_path(), b"seed = 1").unwrap();
        let err = RunDir::prepare(&root, Reuse::Refuse).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(root.join(CONFIG_FILE).exists());
        RunDir::prepare(&root, Reuse::Resume).unwrap();
        RunDir::prepare(&root, Reuse::Overwrite).unwrap();
        assert!(!root.join(CONFIG_FILE).exists());
        let err = RunDir::prepare(&dir.path().join("none"), Reuse::Resume).unwrap_err();
        assert!(err.to_string().contains("cannot resume"), "{err}");
    }
}
