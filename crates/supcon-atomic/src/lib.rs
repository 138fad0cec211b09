//! The project's one atomic file writer, used by checkpoints, run files (config, report,
//! metrics cuts), plots and benchmark results.
//!
//! [`write_with`] lets a writer fill a temporary file beside the target (same folder, so the
//! rename stays on one file system), flushes it to disk (`fsync`), renames it over the target
//! (atomic on POSIX: a reader sees the old file or the new one, never half of one), and
//! flushes the folder so that the rename itself survives a power cut. When anything fails the
//! temporary file is removed and the target is left as it was: a crash never destroys the last
//! good file.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("report.json");
//! supcon_atomic::write(&path, b"{}\n")?;
//! supcon_atomic::write_with(&path, |tmp| std::fs::write(tmp, b"{\"ok\": true}\n"))?;
//! assert_eq!(std::fs::read(&path)?, b"{\"ok\": true}\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an atomic write failed; the target file is unchanged in every case.
#[derive(thiserror::Error, Debug)]
pub enum AtomicWriteError<E: std::error::Error + 'static> {
    /// The caller's writer failed on the temporary file.
    #[error("writing {} (temporary file of {})", tmp.display(), path.display())]
    Write {
        /// The target.
        path: PathBuf,
        /// The temporary file that was being written (removed since).
        tmp: PathBuf,
        /// The writer's error.
        #[source]
        source: E,
    },
    /// Creating the folder, flushing, or renaming failed.
    #[error("{}", path.display())]
    Io {
        /// The file or folder the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl<E: std::error::Error + 'static> AtomicWriteError<E> {
    /// The target or folder the failure is about.
    pub fn path(&self) -> &Path {
        match self {
            AtomicWriteError::Write { path, .. } | AtomicWriteError::Io { path, .. } => path,
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError<std::io::Error>> {
    write_with(path, |tmp| {
        let mut file = fs::File::create(tmp)?;
        file.write_all(bytes)
    })
}

/// Runs `write` on a temporary path beside `path`, then makes it `path` atomically (see the
/// crate docs). The temporary file is `.<stem>.tmp-<pid>.<extension>`: hidden, unique per
/// process (a killed run and its resume never share one), and with the target's extension,
/// for writers that choose the format by it (image encoders).
pub fn write_with<E: std::error::Error + 'static>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), AtomicWriteError<E>> {
    let io = |at: &Path| {
        let at = at.to_path_buf();
        move |source| AtomicWriteError::Io { path: at, source }
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = temporary_path(path);
    if let Err(source) = write(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(AtomicWriteError::Write {
            path: path.to_path_buf(),
            tmp,
            source,
        });
    }
    // The data on disk before the rename makes it visible.
    let flushed = fs::File::open(&tmp)
        .and_then(|file| file.sync_all())
        .map_err(io(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if let Err(e) = flushed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable.
    if let Some(parent) = parent {
        fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io(parent))?;
    }
    Ok(())
}

/// `.<stem>.tmp-<pid>.<extension>` beside `path`.
pub fn temporary_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "file".into(), |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!(
            ".{stem}.tmp-{}.{}",
            std::process::id(),
            ext.to_string_lossy()
        ),
        None => format!(".{stem}.tmp-{}", std::process::id()),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.bin");
        write(&path, b"good").unwrap();
        let err = write_with(&path, |tmp| {
            fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("disk on fire"), "{err}");
        assert_eq!(err.path(), path);
        assert_eq!(fs::read(&path).unwrap(), b"good");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("state.bin")]);
    }

    #[test]
    fn the_temporary_keeps_the_extension_and_is_hidden() {
        let tmp = temporary_path(Path::new("runs/a/plots/loss.png"));
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".loss.tmp-") && name.ends_with(".png"),
            "{name}"
        );
        assert_eq!(tmp.parent(), Some(Path::new("runs/a/plots")));
        let bare = temporary_path(Path::new("config"));
        assert!(bare.to_string_lossy().starts_with(".config.tmp-"));
    }

    #[test]
    fn a_missing_folder_is_created_and_a_rename_onto_a_folder_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.txt");
        write(&path, b"x").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"x");
        let onto_dir = dir.path().join("a/b");
        let err = write(&onto_dir, b"y").unwrap_err();
        assert!(matches!(err, AtomicWriteError::Io { .. }), "{err}");
        assert!(onto_dir.is_dir());
    }
}
