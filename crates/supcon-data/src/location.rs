//! Where the data lives: an explicit path (`--data PATH`), then `$SUPCON_DATA`, then a system
//! folder (Debian's `/usr/share/datasets/<name>/`).
//!
//! An explicit path is the only place tried when given: reading data from somewhere else than
//! the place a user named would be a surprise. `$SUPCON_DATA` may be a root that holds several
//! datasets, so each dataset also tries its usual sub-folder names under it, and when it does
//! not hold this dataset the system folder is still tried.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::DataError;

/// The environment variable naming a data folder.
pub const DATA_ENV: &str = "SUPCON_DATA";

/// What identifies a dataset's folder and how to get the data when it is missing.
#[derive(Clone, Debug)]
pub struct DatasetFiles {
    /// Name for messages, e.g. `"Fashion-MNIST"`.
    pub dataset: &'static str,
    /// Sub-folders tried under each location, after the location itself.
    pub subfolders: &'static [&'static str],
    /// File names that must all be present (each either as is or with `.gz` appended).
    pub required: &'static [&'static str],
    /// A system folder tried last, e.g. Debian's package folder.
    pub system_dir: Option<&'static str>,
    /// How to get the data, appended to the not-found error.
    pub hint: &'static str,
}

/// `dir/name` when it is a file, else `dir/name.gz` when that is, else `None`. The uncompressed
/// file wins when both exist: it reads faster.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Some(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// The candidate folders, in the order they are tried.
pub fn candidate_dirs(
    files: &DatasetFiles,
    explicit: Option<&Path>,
    env_value: Option<&OsStr>,
) -> Vec<PathBuf> {
    let with_subfolders = |root: &Path| {
        std::iter::once(root.to_path_buf())
            .chain(files.subfolders.iter().map(|sub| root.join(sub)))
            .collect::<Vec<_>>()
    };
    if let Some(explicit) = explicit {
        return with_subfolders(explicit);
    }
    let mut dirs = Vec::new();
    if let Some(env) = env_value.filter(|v| !v.is_empty()) {
        dirs.extend(with_subfolders(Path::new(env)));
    }
    if let Some(system) = files.system_dir {
        dirs.push(PathBuf::from(system));
    }
    dirs
}

/// The first candidate folder holding every required file, given the value of `$SUPCON_DATA`
/// (a parameter so that tests need not change the process environment).
pub fn resolve_dataset_dir_with(
    files: &DatasetFiles,
    explicit: Option<&Path>,
    env_value: Option<&OsStr>,
) -> Result<PathBuf, DataError> {
    let tried = candidate_dirs(files, explicit, env_value);
    for dir in &tried {
        if files
            .required
            .iter()
            .all(|name| find_file(dir, name).is_some())
        {
            tracing::debug!(dataset = files.dataset, dir = %dir.display(), "found data");
            return Ok(dir.clone());
        }
    }
    let mut hint = files.hint.to_owned();
    if explicit.is_none() && env_value.is_none_or(OsStr::is_empty) {
        hint.push_str(" (no --data PATH given and SUPCON_DATA is not set)");
    }
    Err(DataError::NotFound {
        dataset: files.dataset,
        missing: files
            .required
            .iter()
            .map(|name| format!("{name}[.gz]"))
            .collect(),
        tried,
        hint,
    })
}

/// [`resolve_dataset_dir_with`] with the process's `$SUPCON_DATA`.
pub fn resolve_dataset_dir(
    files: &DatasetFiles,
    explicit: Option<&Path>,
) -> Result<PathBuf, DataError> {
    let env = std::env::var_os(DATA_ENV);
    resolve_dataset_dir_with(files, explicit, env.as_deref())
}
