//! Atomic file writes, the project's one writer (`supcon-atomic`) with this crate's errors: a
//! reader sees the old file or the new one, never half. A leaf beside `error`.

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
