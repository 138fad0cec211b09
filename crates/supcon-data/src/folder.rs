//! Image folders in torchvision's `ImageFolder` layout: `root/<class>/<image>`.
//!
//! Classes are the sub-folders of `root` in sorted (byte-wise) order, as torchvision sorts
//! them, so a folder gets the same label here and there; hidden sub-folders (name starting with
//! `.`) are skipped. Inside a class folder every file ending in `.png`, `.jpg` or `.jpeg`
//! (any case) is an image, found recursively and taken in sorted path order; other files are
//! ignored. The format is read from the file's bytes, not its extension.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};
use rayon::prelude::*;

use crate::{DataError, Dataset, ImageShape};

/// Gray or colour pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ColorMode {
    /// One channel: `image`'s luma conversion (Rec. 709 weights) of colour images.
    Gray,
    /// Three channels R, G, B; gray images are replicated.
    #[default]
    Rgb,
}

impl ColorMode {
    /// Channels per pixel: 1 for [`ColorMode::Gray`], 3 for [`ColorMode::Rgb`].
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Gray => 1,
            ColorMode::Rgb => 3,
        }
    }
}

/// How to read an image folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ImageFolderOptions {
    /// `Some((height, width))`: resize every image to it (bilinear, no aspect-ratio keeping).
    /// `None`: keep the sizes, which must then all be equal.
    pub resize: Option<(u32, u32)>,
    /// Channels to convert every image to. torchvision's `ImageFolder` loader always converts to
    /// RGB, i.e. [`ColorMode::Rgb`] (the default).
    pub color: ColorMode,
}

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

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    let image_error = |source| DataError::Image {
        path: path.to_path_buf(),
        source,
    };
    ImageReader::open(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .decode()
        .map_err(image_error)
}

/// One decoded image: its size and its bytes (HWC).
struct Decoded {
    height: usize,
    width: usize,
    bytes: Vec<u8>,
}

/// Decodes, resizes and converts one image.
fn load_one(path: &Path, options: &ImageFolderOptions) -> Result<Decoded, DataError> {
    let mut image = decode(path)?;
    if let Some((height, width)) = options.resize {
        if (image.height(), image.width()) != (height, width) {
            // Triangle = bilinear interpolation (with antialiasing when shrinking).
            image = image.resize_exact(width, height, FilterType::Triangle);
        }
    }
    let (height, width) = (image.height() as usize, image.width() as usize);
    let bytes = match options.color {
        ColorMode::Gray => image.into_luma8().into_raw(),
        ColorMode::Rgb => image.into_rgb8().into_raw(),
    };
    Ok(Decoded {
        height,
        width,
        bytes,
    })
}

/// Reads an image folder into a [`Dataset`]: labels are class-folder indices in sorted order,
/// images are decoded in parallel and stored in sorted order.
///
/// Errors: no class folder, an empty class folder, an unreadable image (named), or images of
/// different sizes when `options.resize` is `None`.
pub fn load_image_folder(root: &Path, options: &ImageFolderOptions) -> Result<Dataset, DataError> {
    if let Some((height, width)) = options.resize {
        if height == 0 || width == 0 {
            return Err(DataError::InvalidShape {
                shape: ImageShape::new(height as usize, width as usize, options.color.channels()),
                reason: "resize to a zero side",
            });
        }
    }
    let classes = scan_image_folder(root)?;
    let files: Vec<(&Path, i64)> = classes
        .iter()
        .enumerate()
        .flat_map(|(label, (_, paths))| paths.iter().map(move |p| (p.as_path(), label as i64)))
        .collect();
    // Decode everything, then report the first failure in file order, so that the error a
    // user sees does not depend on thread scheduling.
    let decoded: Vec<Result<Decoded, DataError>> = files
        .par_iter()
        .map(|(path, _)| load_one(path, options))
        .collect();
    let decoded: Vec<Decoded> = decoded.into_iter().collect::<Result<_, _>>()?;
    let (height, width) = (decoded[0].height, decoded[0].width);
    if let Some((index, odd)) = decoded
        .iter()
        .enumerate()
        .find(|(_, d)| (d.height, d.width) != (height, width))
    {
        return Err(DataError::MixedImageSizes {
            path: files[index].0.to_path_buf(),
            first: files[0].0.to_path_buf(),
            height,
            width,
            found_height: odd.height,
            found_width: odd.width,
        });
    }
    let shape = ImageShape::new(height, width, options.color.channels());
    let mut pixels = Vec::with_capacity(decoded.len() * shape.len());
    for image in decoded {
        pixels.extend_from_slice(&image.bytes);
    }
    tracing::debug!(images = files.len(), classes = classes.len(), %shape, root = %root.display(), "read image folder");
    Dataset::new(
        pixels,
        shape,
        files.iter().map(|&(_, label)| label).collect(),
        classes.into_iter().map(|(name, _)| name).collect(),
    )
}
