//! The run folder `runs/<name>/` and atomic file writes.
//!
//! Layout:
//!
//! ```text
//! runs/<name>/
//!   .supcon-run                 the marker: this folder was made by supcon (--overwrite needs it)
//!   run.lock                    locked while a process writes in the folder; holds its pid
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
//!
//! **Invariant:** supcon deletes only folders it made: `--overwrite` needs the marker file, and
//! the run name is one plain path component, so `--name ..` or `--name /` cannot point above
//! `--runs-dir`. **Invariant:** one writer per run folder: every process that writes in one
//! (training, resuming, `supcon eval`) holds [`RunLock`] for its life; the operating system
//! drops the lock when the process ends, even by SIGKILL, so a killed run can be resumed.

use std::fs::{self, File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::TrainError;
use crate::vocabulary::Stage;

/// File name of the resolved configuration.
pub const CONFIG_FILE: &str = "config.toml";

/// Folder of the TensorBoard events files (one per process that logged scalars).
pub const TENSORBOARD_DIR: &str = "tensorboard";

pub use crate::files::{write_atomic, write_atomic_with};

/// File name of the metrics log inside a run folder (see `metrics_log`).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// The marker that says supcon made the folder: `--overwrite` deletes nothing without it.
pub const MARKER_FILE: &str = ".supcon-run";

/// The lock file: locked (`flock`) while a process writes in the folder; holds that pid.
pub const LOCK_FILE: &str = "run.lock";

/// Checks that a run name is one plain path component (`a-run`, not `..`, `/`, `a/b` or ``),
/// so the run folder lies directly inside the runs folder.
pub fn check_run_name(name: &str) -> Result<(), TrainError> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(part)), None) if part == name => Ok(()),
        _ => Err(TrainError::Config(format!(
            "--name {name:?} is not a plain folder name: it must be one path component \
             (no `/`, not `.` or `..`, not empty)"
        ))),
    }
}

/// The lock on a run folder, held while this value lives (the OS drops it when the process
/// ends, however it ends).
#[derive(Debug)]
pub struct RunLock {
    /// `None` where the file system has no locks (some network and FUSE mounts).
    _file: Option<File>,
}

impl RunLock {
    /// Locks `root`'s lock file, or says which process holds it.
    pub fn acquire(root: &Path) -> Result<Self, TrainError> {
        let path = root.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder's pid is a hint for the message; an unreadable one is no error.
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::RunDir {
                    path: root.to_path_buf(),
                    message: format!(
                        "is in use by another supcon process ({}); wait for it to finish or \
                         stop it first",
                        holder_description(&holder)
                    ),
                });
            }
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(
                    path = %path.display(),
                    "this file system has no file locks: the run folder is not protected \
                     against a second writer"
                );
                return Ok(Self { _file: None });
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
        }
        let record = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(record.as_bytes()))
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(Self { _file: Some(file) })
    }
}

fn holder_description(record: &str) -> String {
    match record.trim() {
        "" => "pid unknown".to_string(),
        pid => pid.to_string(),
    }
}

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
    /// Opens `root` as a run folder according to `reuse`, creates it unless resuming, and
    /// locks it for this process (see the module's invariants).
    pub fn prepare(root: &Path, reuse: Reuse) -> Result<(Self, RunLock), TrainError> {
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
            Reuse::Overwrite if exists => Self::delete_old_run(root)?,
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
        let lock = RunLock::acquire(root)?;
        if reuse != Reuse::Resume {
            write_atomic(&root.join(MARKER_FILE), b"a run folder made by supcon\n")?;
        }
        Ok((dir, lock))
    }

    /// Deletes a run folder for `--overwrite`: only one that supcon made (its marker) and
    /// that no process is using (its lock).
    fn delete_old_run(root: &Path) -> Result<(), TrainError> {
        if !root.join(MARKER_FILE).is_file() {
            return Err(TrainError::RunDir {
                path: root.to_path_buf(),
                message: format!(
                    "has no {MARKER_FILE} marker, so supcon did not make it (or made it before \
                     markers existed); refusing to delete it — remove it yourself or pick \
                     another --name"
                ),
            });
        }
        let lock = RunLock::acquire(root)?;
        fs::remove_dir_all(root).map_err(|e| TrainError::io(root, e))?;
        drop(lock);
        Ok(())
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
        let (run, lock) = RunDir::prepare(&root, Reuse::Refuse).unwrap();
        write_atomic(&run.config_path(), b"seed = 1").unwrap();
        drop(lock);
        let err = RunDir::prepare(&root, Reuse::Refuse).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(root.join(CONFIG_FILE).exists());
        drop(RunDir::prepare(&root, Reuse::Resume).unwrap());
        drop(RunDir::prepare(&root, Reuse::Overwrite).unwrap());
        assert!(!root.join(CONFIG_FILE).exists());
        let err = RunDir::prepare(&dir.path().join("none"), Reuse::Resume).unwrap_err();
        assert!(err.to_string().contains("cannot resume"), "{err}");
    }

    #[test]
    fn run_names_are_one_plain_component() {
        for good in ["run", "simclr-mlp3", "a.b", "..x"] {
            check_run_name(good).unwrap();
        }
        for bad in ["", ".", "..", "/", "/tmp/x", "a/b", "../x", "a/"] {
            let err = check_run_name(bad).unwrap_err();
            assert!(
                err.to_string().contains("plain folder name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn overwrite_deletes_only_unlocked_folders_that_supcon_made() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        fs::create_dir_all(&project).unwrap();
        fs::write(project.join(CONFIG_FILE), b"mine").unwrap();
        let err = RunDir::prepare(&project, Reuse::Overwrite).unwrap_err();
        assert!(err.to_string().contains(MARKER_FILE), "{err}");
        assert_eq!(fs::read(project.join(CONFIG_FILE)).unwrap(), b"mine");

        let root = dir.path().join("run");
        let (run, lock) = RunDir::prepare(&root, Reuse::Refuse).unwrap();
        write_atomic(&run.config_path(), b"seed = 1").unwrap();
        let err = RunDir::prepare(&root, Reuse::Overwrite).unwrap_err();
        assert!(
            err.to_string().contains("in use by another supcon process"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(run.config_path().exists());
        let err = RunDir::prepare(&root, Reuse::Resume).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(lock);
        drop(RunDir::prepare(&root, Reuse::Resume).unwrap());
    }
}
