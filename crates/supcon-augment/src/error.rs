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
        index: usize,
        len: usize,
        height: usize,
        width: usize,
        channels: usize,
        expected: usize,
    },
    /// An image with a zero dimension.
    #[error("image {index} is empty ({height}×{width}×{channels})")]
    EmptyImage {
        index: usize,
        height: usize,
        width: usize,
        channels: usize,
    },
    /// An image whose channel count is not the pipeline's.
    #[error("image {index} has {channels} channels, but the pipeline expects {expected}")]
    ChannelMismatch {
        index: usize,
        channels: usize,
        expected: usize,
    },
    /// `images` and `ids` differ in length.
    #[error("{images} images but {ids} ids: every image needs its id")]
    IdCount { images: usize, ids: usize },
    /// `views` was zero.
    #[error("views must be at least 1")]
    ZeroViews,
    /// The output buffer has the wrong length.
    #[error(
        "output buffer {buffer} holds {len} floats, but {batch} images × {views} views × {per_view} floats per view need {expected}"
    )]
    OutputSize {
        buffer: usize,
        len: usize,
        expected: usize,
        batch: usize,
        views: usize,
        per_view: usize,
    },
    /// Images of one batch give views of different sizes (a pipeline without a crop or resize
    /// keeps each image's own size).
    #[error(
        "image {index} ({height}×{width}) gives a {out_height}×{out_width} view, but image 0 gives {expected_height}×{expected_width}; add a crop or resize to the pipeline"
    )]
    ViewSize {
        index: usize,
        height: usize,
        width: usize,
        out_height: usize,
        out_width: usize,
        expected_height: usize,
        expected_width: usize,
    },
    /// A multi-crop call got a different number of output buffers than crop groups.
    #[error("{groups} crop groups but {buffers} output buffers")]
    BufferCount { groups: usize, buffers: usize },
    /// An operation's parameter is out of its domain.
    #[error("invalid parameter `{name}` of {op}: {reason}")]
    InvalidParameter {
        op: &'static str,
        name: &'static str,
        reason: String,
    },
    /// An augmentation name that is neither a preset nor a valid recipe.
    #[error("augmentation `{text}`: {reason}")]
    UnknownRecipe { text: String, reason: String },
    /// A corruption severity outside 1..=5.
    #[error("corruption severity {0} is out of 1..=5")]
    Severity(u8),
    /// A corruption output buffer of the wrong length.
    #[error("corruption output holds {len} bytes, {expected} expected")]
    CorruptionOutput { len: usize, expected: usize },
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
