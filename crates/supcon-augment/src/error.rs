//! The crate's one error type: every variant names the image, parameter or buffer at fault.

/// What went wrong while building a pipeline or augmenting a batch.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AugmentError {
    /// An image's byte slice does not hold `height × width × channels` bytes.
    #[error(
        "image {index}: {len} bytes do not hold {height}×{width}×{channels} pixels ({expected} bytes expected)"
    )]
    ImageSize {
        /// Position of the image in the batch (`images[index]`), 0 for a single image.
        index: usize,
        /// Bytes in the image's slice.
        len: usize,
        /// Claimed height, in pixels.
        height: usize,
        /// Claimed width, in pixels.
        width: usize,
        /// Claimed channels per pixel.
        channels: usize,
        /// `height × width × channels` (`usize::MAX` when the product overflows).
        expected: usize,
    },
    /// An image with a zero dimension.
    #[error("image {index} is empty ({height}×{width}×{channels})")]
    EmptyImage {
        /// Position of the image in the batch (`images[index]`), 0 for a single image.
        index: usize,
        /// Height, in pixels.
        height: usize,
        /// Width, in pixels.
        width: usize,
        /// Channels per pixel.
        channels: usize,
    },
    /// An image whose channel count is not the pipeline's.
    #[error("image {index} has {channels} channels, but the pipeline expects {expected}")]
    ChannelMismatch {
        /// Position of the image in the batch (`images[index]`), 0 for a single image.
        index: usize,
        /// The image's channel count.
        channels: usize,
        /// The pipeline's channel count (as given to [`crate::Pipeline::new`]).
        expected: usize,
    },
    /// `images` and `ids` differ in length.
    #[error("{images} images but {ids} ids: every image needs its id")]
    IdCount {
        /// Number of images in the batch.
        images: usize,
        /// Number of ids given.
        ids: usize,
    },
    /// `views` was zero.
    #[error("views must be at least 1")]
    ZeroViews,
    /// The output buffer has the wrong length.
    #[error(
        "output buffer {buffer} holds {len} floats, but {batch} images × {views} views × {per_view} floats per view need {expected}"
    )]
    OutputSize {
        /// Which buffer: the crop group's index for [`crate::MultiCropAugmenter`], else 0.
        buffer: usize,
        /// Floats in the buffer.
        len: usize,
        /// Floats needed: `batch × views × per_view`.
        expected: usize,
        /// Number of images.
        batch: usize,
        /// Views per image (of this crop group).
        views: usize,
        /// Floats per view, `C × H × W`.
        per_view: usize,
    },
    /// Images of one batch give views of different sizes (a pipeline without a crop or resize
    /// keeps each image's own size).
    #[error(
        "image {index} ({height}×{width}) gives a {out_height}×{out_width} view, but image 0 gives {expected_height}×{expected_width}; add a crop or resize to the pipeline"
    )]
    ViewSize {
        /// Position in the batch of the first image whose view size differs from image 0's.
        index: usize,
        /// That image's height, in pixels.
        height: usize,
        /// That image's width, in pixels.
        width: usize,
        /// Height of its view (for [`crate::corrupt_batch`], its own height).
        out_height: usize,
        /// Width of its view (for [`crate::corrupt_batch`], its own width).
        out_width: usize,
        /// Height of image 0's view.
        expected_height: usize,
        /// Width of image 0's view.
        expected_width: usize,
    },
    /// A multi-crop call got a different number of output buffers than crop groups.
    #[error("{groups} crop groups but {buffers} output buffers")]
    BufferCount {
        /// Number of crop groups of the augmenter.
        groups: usize,
        /// Number of output buffers given.
        buffers: usize,
    },
    /// An operation's parameter is out of its domain.
    #[error("invalid parameter `{name}` of {op}: {reason}")]
    InvalidParameter {
        /// The operation, by its torchvision name, e.g. `"RandomResizedCrop"` (`"Pipeline"` for
        /// the pipeline itself).
        op: &'static str,
        /// The parameter, e.g. `"scale"` or `"p"`.
        name: &'static str,
        /// The value given and the rule it breaks.
        reason: String,
    },
    /// An augmentation name that is neither a preset nor a valid recipe.
    #[error("augmentation `{text}`: {reason}")]
    UnknownRecipe {
        /// The whole name or recipe as given, e.g. `"pad-crop:2+flip"`.
        text: String,
        /// Which step is wrong and why.
        reason: String,
    },
    /// A corruption severity outside 1..=5.
    #[error("corruption severity {0} is out of 1..=5")]
    Severity(
        /// The severity given.
        u8,
    ),
    /// A corruption output buffer of the wrong length.
    #[error("corruption output holds {len} bytes, {expected} expected")]
    CorruptionOutput {
        /// Bytes in the output buffer.
        len: usize,
        /// Bytes needed: those of the input image(s), same HWC layout.
        expected: usize,
    },
}

pub(crate) fn invalid(
    op: &'static str,
    name: &'static str,
    reason: impl Into<String>,
) -> AugmentError {
    AugmentError::InvalidParameter {
        op,
        name,
        reason: reason.into(),
    }
}
