//! Atomic file writes, the project's one writer (`supcon-atomic`) with this crate's errors: a
//! reader sees the old file or the new one, never half; and the one reader of small text
//! files (configurations), bounded and regular files only. A leaf beside `error`.

use std::path::Path;

use crate::error::TrainError;

/// Writes `bytes` to `path` atomically (the project's one writer, `supcon-atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    supcon_atomic::write(path, bytes).map_err(atomic_error)
}

/// Runs `write` on a temporary path beside `path`, then renames it over `path`
/// (`supcon-atomic`): when `write` fails the temporary is removed and `path` left untouched.
pub fn write_atomic_with<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), TrainError> {
    supcon_atomic::write_with(path, write).map_err(atomic_error)
}

/// The largest configuration file read (the book's largest is a few KB).
pub const MAX_TEXT_FILE_BYTES: u64 = 1 << 20;

/// Reads a small text file (a configuration): only a regular file (a FIFO or a device would
/// block or never end) of at most [`MAX_TEXT_FILE_BYTES`].
pub fn read_text_file(path: &Path) -> Result<String, TrainError> {
    read_text_file_within(path, MAX_TEXT_FILE_BYTES)
}

/// [`read_text_file`] with another bound (`max_bytes`).
pub fn read_text_file_within(path: &Path, max_bytes: u64) -> Result<String, TrainError> {
    let meta = std::fs::metadata(path).map_err(|e| TrainError::io(path, e))?;
    let refuse = |why: String| TrainError::io(path, std::io::Error::other(why));
    if !meta.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    if meta.len() > max_bytes {
        return Err(refuse(format!(
            "holds {} bytes, above the limit of {max_bytes}",
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))
}

fn atomic_error<E: std::error::Error + Send + Sync + 'static>(
    e: supcon_atomic::AtomicWriteError<E>,
) -> TrainError {
    match e {
        supcon_atomic::AtomicWriteError::Io { path, source } => TrainError::Io { path, source },
        supcon_atomic::AtomicWriteError::Write { path, tmp, source } => TrainError::Write {
            path,
            tmp,
            source: Box::new(source),
        },
    }
}
