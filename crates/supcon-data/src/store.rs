//! Images left on disk and decoded when read: the [`ImageStore`] behind a streamed
//! [`crate::Dataset`], and the one decoder (decode, fit, convert) every reader of encoded images
//! uses, so that a streamed image and its in-memory copy are the same bytes.

use std::fmt;
use std::io::{BufRead, BufReader, Seek};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::files::open_regular_file;
use crate::{DataError, ImageShape, Limits};

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
    /// The files the images are read from (image files or shards), so that a caller can tell
    /// whether they changed on disk; empty for stores that read no files.
    fn files(&self) -> &[PathBuf] {
        &[]
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
    /// Refuses a resize with a zero side, or to more pixels than `limits` allow.
    pub(crate) fn check(&self, limits: &Limits) -> Result<(), DataError> {
        let Some((height, width)) = self.resize else {
            return Ok(());
        };
        if height == 0 || width == 0 {
            return Err(DataError::InvalidShape {
                shape: ImageShape::new(height as usize, width as usize, self.color.channels()),
                reason: "resize to a zero side",
            });
        }
        let pixels = u64::from(height) * u64::from(width);
        if pixels > limits.max_image_pixels {
            return Err(DataError::LimitExceeded {
                path: None,
                member: None,
                what: format!("pixels of the resize target {height}x{width} (height x width)"),
                value: pixels,
                limit: limits.max_image_pixels,
                setting: "max_image_pixels",
            });
        }
        Ok(())
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

/// Where an encoded image comes from: what its errors name.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ImageOrigin<'a> {
    /// An image file.
    File(&'a Path),
    /// An image member of a tar shard.
    ShardMember {
        /// The `.tar` file.
        shard: &'a Path,
        /// The member's name inside it.
        member: &'a str,
    },
}

impl ImageOrigin<'_> {
    fn decode_error(self, source: image::ImageError) -> DataError {
        match self {
            ImageOrigin::File(path) => DataError::Image {
                path: path.to_path_buf(),
                source,
            },
            ImageOrigin::ShardMember { shard, member } => DataError::ShardMember {
                shard: shard.to_path_buf(),
                member: member.to_owned(),
                source,
            },
        }
    }

    fn io_error(self, source: std::io::Error) -> DataError {
        let path = match self {
            ImageOrigin::File(path) => path,
            ImageOrigin::ShardMember { shard, .. } => shard,
        };
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Refuses an image buffer of `pixels` pixels over the limit, naming this image and `what`
    /// the buffer is.
    fn check_pixels(
        self,
        what: impl FnOnce() -> String,
        pixels: u64,
        limits: &Limits,
    ) -> Result<(), DataError> {
        if pixels <= limits.max_image_pixels {
            return Ok(());
        }
        let (path, member) = match self {
            ImageOrigin::File(path) => (path, None),
            ImageOrigin::ShardMember { shard, member } => (shard, Some(member.to_owned())),
        };
        Err(DataError::LimitExceeded {
            path: Some(path.to_path_buf()),
            member,
            what: what(),
            value: pixels,
            limit: limits.max_image_pixels,
            setting: "max_image_pixels",
        })
    }
}

/// The size (height, width) `resize_exact` is asked for: the target itself, or for a centre
/// crop the size that covers it at the image's aspect ratio (sides saturate at `u32::MAX`, far
/// over any pixel limit).
fn scaled_size(image: &DynamicImage, (height, width): (u32, u32), fit: Fit) -> (u32, u32) {
    match fit {
        Fit::Stretch => (height, width),
        Fit::CenterCrop => {
            let scale = f64::max(
                f64::from(height) / f64::from(image.height()),
                f64::from(width) / f64::from(image.width()),
            );
            let covered =
                |side: u32, target: u32| ((f64::from(side) * scale).round() as u32).max(target);
            (
                covered(image.height(), height),
                covered(image.width(), width),
            )
        }
    }
}

/// Brings `image` to `target` (height, width) as `fit` says, after checking the pixels of the
/// buffers the resize allocates: the scaled image, and the `image` crate's intermediate one
/// (it scales columns first, into a buffer of the source's width × the new height).
fn fit_to(
    image: DynamicImage,
    target: (u32, u32),
    fit: Fit,
    limits: &Limits,
    origin: ImageOrigin<'_>,
) -> Result<DynamicImage, DataError> {
    let (height, width) = target;
    let (scaled_height, scaled_width) = scaled_size(&image, target, fit);
    let scaled_pixels = u64::from(scaled_height) * u64::from(scaled_width);
    let intermediate_pixels = u64::from(image.width()) * u64::from(scaled_height);
    origin.check_pixels(
        || {
            format!(
                "pixels a resize from {}x{} to {scaled_height}x{scaled_width} (height x width) \
                 allocates",
                image.height(),
                image.width()
            )
        },
        scaled_pixels.max(intermediate_pixels),
        limits,
    )?;
    // Triangle = bilinear interpolation (with antialiasing when shrinking).
    let scaled = image.resize_exact(scaled_width, scaled_height, FilterType::Triangle);
    Ok(match fit {
        Fit::Stretch => scaled,
        Fit::CenterCrop => scaled.crop_imm(
            (scaled_width - width) / 2,
            (scaled_height - height) / 2,
            width,
            height,
        ),
    })
}

/// Fits and converts a decoded image (see [`ImageFolderOptions`]).
pub(crate) fn convert(
    mut image: DynamicImage,
    options: &ImageFolderOptions,
    limits: &Limits,
    origin: ImageOrigin<'_>,
) -> Result<Decoded, DataError> {
    if let Some((height, width)) = options.resize {
        if (image.height(), image.width()) != (height, width) {
            image = fit_to(image, (height, width), options.fit, limits, origin)?;
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
    Ok(Decoded { shape, bytes })
}

/// Decodes an encoded image (the format read from its bytes, else the one `reader` was given),
/// refusing one with more pixels than `limits` allow before its pixels are allocated, then
/// fits and converts it: the one decoder of every reader of encoded images.
pub(crate) fn decode_image<R: BufRead + Seek>(
    reader: ImageReader<R>,
    origin: ImageOrigin<'_>,
    options: &ImageFolderOptions,
    limits: &Limits,
) -> Result<Decoded, DataError> {
    let decoder = reader
        .with_guessed_format()
        .map_err(|source| origin.io_error(source))?
        .into_decoder()
        .map_err(|source| origin.decode_error(source))?;
    let (width, height) = decoder.dimensions();
    origin.check_pixels(
        || format!("pixels of the decoded image ({height}x{width}, height x width)"),
        u64::from(height) * u64::from(width),
        limits,
    )?;
    let image =
        DynamicImage::from_decoder(decoder).map_err(|source| origin.decode_error(source))?;
    convert(image, options, limits, origin)
}

/// Decodes an image file (format read from its bytes, else from its name). Only a regular file
/// is opened.
pub(crate) fn decode_file(
    path: &Path,
    options: &ImageFolderOptions,
    limits: &Limits,
) -> Result<Decoded, DataError> {
    let mut reader = ImageReader::new(BufReader::new(open_regular_file(path)?));
    if let Ok(format) = ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    decode_image(reader, ImageOrigin::File(path), options, limits)
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
    limits: Limits,
    shape: ImageShape,
}

impl FileStore {
    /// A store of `paths` (at least one); without a resize, the first image is decoded to learn
    /// the shape every image must have. Decodes within the default [`Limits`].
    pub fn new(paths: Vec<PathBuf>, options: ImageFolderOptions) -> Result<Self, DataError> {
        Self::with_limits(paths, options, Limits::default())
    }

    /// [`FileStore::new`] decoding within `limits` (image pixels, before and after a resize).
    pub fn with_limits(
        paths: Vec<PathBuf>,
        options: ImageFolderOptions,
        limits: Limits,
    ) -> Result<Self, DataError> {
        options.check(&limits)?;
        let shape = match (options.fixed_shape(), paths.first()) {
            (Some(shape), _) => shape,
            (None, Some(first)) => decode_file(first, &options, &limits)?.shape,
            (None, None) => {
                return Err(DataError::EmptyDataset {
                    what: "an image file store",
                })
            }
        };
        Ok(Self {
            paths,
            options,
            limits,
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
            decode_file(path, &self.options, &self.limits)?,
            self.shape,
            || path.clone(),
            || self.paths[0].clone(),
        )
    }

    fn describe(&self, id: usize) -> String {
        self.paths[id].display().to_string()
    }

    fn files(&self) -> &[PathBuf] {
        &self.paths
    }
}
