//! Images left on disk and decoded when read: the [`ImageStore`] behind a streamed
//! [`crate::Dataset`], and the one decoder (decode, fit, convert) every reader of encoded images
//! uses, so that a streamed image and its in-memory copy are the same bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};

use crate::{DataError, ImageShape};

/// Encoded images read one at a time, each decoded to the same [`ImageShape`].
///
/// Implementations must be cheap to share between threads (a file index, not file handles):
/// [`crate::Dataset::read_images`] calls [`ImageStore::read`] from rayon's pool.
pub trait ImageStore: Send + Sync + fmt::Debug {
    /// Number of images.
    fn len(&self) -> usize;
    /// True when the store has no image.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Image `id` (`< len()`), decoded to HWC bytes of the store's shape.
    fn read(&self, id: usize) -> Result<Vec<u8>, DataError>;
    /// Where image `id` comes from, for messages: a path, or a shard and its member.
    fn describe(&self, id: usize) -> String;
    /// The shard holding image `id`, for stores read shard by shard (see
    /// [`crate::Dataset::shard_runs`]); `None` for random-access stores.
    fn shard_of(&self, _id: usize) -> Option<usize> {
        None
    }
}

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

/// How an image of another size is brought to the resize target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fit {
    /// Scale each side to the target, ignoring the aspect ratio.
    #[default]
    Stretch,
    /// Scale (keeping the aspect ratio) until the image covers the target, then keep the
    /// centre: torchvision's `Resize(S)` followed by `CenterCrop(S)` for a square target.
    CenterCrop,
}

/// How to decode an image into a dataset's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ImageFolderOptions {
    /// `Some((height, width))`: bring every image to it (see `fit`; bilinear, antialiased when
    /// shrinking). `None`: keep the sizes, which must then all be equal.
    pub resize: Option<(u32, u32)>,
    /// How an image of another aspect ratio meets `resize`.
    pub fit: Fit,
    /// Channels to convert every image to. torchvision's `ImageFolder` loader always converts to
    /// RGB, i.e. [`ColorMode::Rgb`] (the default).
    pub color: ColorMode,
}

impl ImageFolderOptions {
    /// Refuses a resize with a zero side.
    pub(crate) fn check(&self) -> Result<(), DataError> {
        match self.resize {
            Some((height, width)) if height == 0 || width == 0 => Err(DataError::InvalidShape {
                shape: ImageShape::new(height as usize, width as usize, self.color.channels()),
                reason: "resize to a zero side",
            }),
            _ => Ok(()),
        }
    }

    /// The shape of every image, when `resize` fixes it.
    pub(crate) fn fixed_shape(&self) -> Option<ImageShape> {
        self.resize.map(|(height, width)| {
            ImageShape::new(height as usize, width as usize, self.color.channels())
        })
    }
}

/// One decoded image: its shape and its bytes (HWC).
pub(crate) struct Decoded {
    pub shape: ImageShape,
    pub bytes: Vec<u8>,
}

/// Fits and converts a decoded image (see [`ImageFolderOptions`]).
pub(crate) fn convert(mut image: DynamicImage, options: &ImageFolderOptions) -> Decoded {
    if let Some((height, width)) = options.resize {
        if (image.height(), image.width()) != (height, width) {
            image = match options.fit {
                // Triangle = bilinear interpolation (with antialiasing when shrinking).
                Fit::Stretch => image.resize_exact(width, height, FilterType::Triangle),
                Fit::CenterCrop => {
                    let scale = f64::max(
                        f64::from(height) / f64::from(image.height()),
                        f64::from(width) / f64::from(image.width()),
                    );
                    let covered = |side: u32, target: u32| {
                        ((f64::from(side) * scale).round() as u32).max(target)
                    };
                    let (h, w) = (
                        covered(image.height(), height),
                        covered(image.width(), width),
                    );
                    image.resize_exact(w, h, FilterType::Triangle).crop_imm(
                        (w - width) / 2,
                        (h - height) / 2,
                        width,
                        height,
                    )
                }
            };
        }
    }
    let shape = ImageShape::new(
        image.height() as usize,
        image.width() as usize,
        options.color.channels(),
    );
    let bytes = match options.color {
        ColorMode::Gray => image.into_luma8().into_raw(),
        ColorMode::Rgb => image.into_rgb8().into_raw(),
    };
    Decoded { shape, bytes }
}

/// Decodes an image file (format read from its bytes, not its name).
pub(crate) fn decode_file(path: &Path, options: &ImageFolderOptions) -> Result<Decoded, DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let image = ImageReader::open(path)
        .map_err(io_error)?
        .with_guessed_format()
        .map_err(io_error)?
        .decode()
        .map_err(|source| DataError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(convert(image, options))
}

/// The size check every streamed read makes: all images of a store have the shape of its first.
pub(crate) fn check_size(
    decoded: Decoded,
    expected: ImageShape,
    path: impl FnOnce() -> PathBuf,
    first: impl FnOnce() -> PathBuf,
) -> Result<Vec<u8>, DataError> {
    if decoded.shape == expected {
        return Ok(decoded.bytes);
    }
    Err(DataError::MixedImageSizes {
        path: path(),
        first: first(),
        height: expected.height,
        width: expected.width,
        found_height: decoded.shape.height,
        found_width: decoded.shape.width,
    })
}

/// Image files read from their paths: the store of a streamed image folder.
#[derive(Debug)]
pub struct FileStore {
    paths: Vec<PathBuf>,
    options: ImageFolderOptions,
    shape: ImageShape,
}

impl FileStore {
    /// A store of `paths` (at least one); without a resize, the first image is decoded to learn
    /// the shape every image must have.
    pub fn new(paths: Vec<PathBuf>, options: ImageFolderOptions) -> Result<Self, DataError> {
        options.check()?;
        let shape = match (options.fixed_shape(), paths.first()) {
            (Some(shape), _) => shape,
            (None, Some(first)) => decode_file(first, &options)?.shape,
            (None, None) => {
                return Err(DataError::EmptyDataset {
                    what: "an image file store",
                })
            }
        };
        Ok(Self {
            paths,
            options,
            shape,
        })
    }

    /// The shape every image is decoded to.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }
}

impl ImageStore for FileStore {
    fn len(&self) -> usize {
        self.paths.len()
    }

    fn read(&self, id: usize) -> Result<Vec<u8>, DataError> {
        let path = &self.paths[id];
        check_size(
            decode_file(path, &self.options)?,
            self.shape,
            || path.clone(),
            || self.paths[0].clone(),
        )
    }

    fn describe(&self, id: usize) -> String {
        self.paths[id].display().to_string()
    }
}
