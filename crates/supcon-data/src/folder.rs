//! Image folders in torchvision's `ImageFolder` layout: `root/<class>/<image>`.
//!
//! Classes are the sub-folders of `root` in sorted (byte-wise) order, as torchvision sorts
//! them, so a folder gets the same label here and there; hidden sub-folders (name starting with
//! `.`) are skipped. Inside a class folder every file ending in `.png`, `.jpg` or `.jpeg`
//! (any case) is an image, found recursively and taken in sorted path order; other files are
//! ignored. The format is read from the file's bytes, not its extension.
//!
//! [`load_image_folder`] decodes everything into memory; [`open_image_folder`] only indexes the
//! files and decodes each image when it is read (a streamed dataset), with or without labels.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::FileStore;
use crate::{DataError, Dataset, ImageFolderOptions, Limits};

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io_error = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(io_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error)?;
    paths.sort();
    Ok(paths)
}

/// Appends the image files under `dir` (recursively, sorted). Symbolic links are followed, as
/// torchvision does; `visited` holds the canonical folders already walked, so that a link loop
/// ends instead of recursing forever.
fn collect_images(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), DataError> {
    let canonical = dir.canonicalize().map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !visited.insert(canonical) {
        tracing::warn!(dir = %dir.display(), "skipping a folder already read (link loop?)");
        return Ok(());
    }
    for path in read_dir_sorted(dir)? {
        if path.is_dir() {
            collect_images(&path, out, visited)?;
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The class folders of `root` (sorted) and the image files of each (sorted).
pub fn scan_image_folder(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, DataError> {
    let mut classes = Vec::new();
    for path in read_dir_sorted(root)? {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        let mut images = Vec::new();
        collect_images(&path, &mut images, &mut HashSet::new())?;
        if images.is_empty() {
            return Err(DataError::EmptyClass { path });
        }
        classes.push((name, images));
    }
    if classes.is_empty() {
        return Err(DataError::NoClassFolders {
            root: root.to_path_buf(),
        });
    }
    Ok(classes)
}

/// Every image file under `root` (recursively, sorted), for an unlabeled folder whose images
/// need not sit in class folders.
pub fn scan_unlabeled_folder(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut images = Vec::new();
    collect_images(root, &mut images, &mut HashSet::new())?;
    if images.is_empty() {
        return Err(DataError::EmptyClass {
            path: root.to_path_buf(),
        });
    }
    Ok(images)
}

/// Indexes an image folder without decoding it: a streamed [`Dataset`] that reads each image
/// when asked for it. `labeled`: labels are class-folder indices in sorted order (as
/// [`load_image_folder`]); otherwise every image file under `root` is one unlabeled image.
///
/// Errors: no class folder, an empty class folder, an unreadable folder; without a resize, an
/// unreadable first image (its size is every image's). Later images are checked when read.
/// Images are decoded within the default [`Limits`].
pub fn open_image_folder(
    root: &Path,
    options: &ImageFolderOptions,
    labeled: bool,
) -> Result<Dataset, DataError> {
    open_image_folder_with_limits(root, options, labeled, &Limits::default())
}

/// [`open_image_folder`] decoding within `limits`: an image, its resize, and a resize target
/// with more pixels than [`Limits::max_image_pixels`] are refused before they are allocated.
pub fn open_image_folder_with_limits(
    root: &Path,
    options: &ImageFolderOptions,
    labeled: bool,
    limits: &Limits,
) -> Result<Dataset, DataError> {
    let (paths, labels, class_names) = if labeled {
        let classes = scan_image_folder(root)?;
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        let mut names = Vec::with_capacity(classes.len());
        for (label, (name, images)) in classes.into_iter().enumerate() {
            labels.extend(std::iter::repeat_n(label as i64, images.len()));
            paths.extend(images);
            names.push(name);
        }
        (paths, Some(labels), names)
    } else {
        (scan_unlabeled_folder(root)?, None, Vec::new())
    };
    let count = paths.len();
    let store = FileStore::with_limits(paths, *options, *limits)?;
    let shape = store.shape();
    tracing::debug!(images = count, classes = class_names.len(), %shape, root = %root.display(), "indexed image folder");
    Dataset::stored(Arc::new(store), shape, labels, class_names)
}

/// Reads an image folder into memory: [`open_image_folder`] with labels, every image decoded
/// (in parallel, stored in sorted order, the same bytes a streamed read gives).
///
/// Errors: no class folder, an empty class folder, an unreadable image (the first in file
/// order, named), or images of different sizes when `options.resize` is `None`.
pub fn load_image_folder(root: &Path, options: &ImageFolderOptions) -> Result<Dataset, DataError> {
    open_image_folder(root, options, true)?.into_memory()
}
