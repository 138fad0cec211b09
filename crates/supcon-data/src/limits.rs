//! The one budget for sizes this crate does not control: every size read from a file (an image
//! header, a tar member header, a `.cls` body, a gzip stream) or given as a setting (a resize,
//! a shard-list pattern) is checked against a [`Limits`] field **before** anything of that size
//! is allocated. Going over one is a [`crate::DataError::LimitExceeded`] that names the file
//! (and the tar member), the value, the limit and the field that raises it.
//!
//! The defaults are generous for real data (a 64-megapixel photo, a 256 MiB image, a million
//! classes, a hundred thousand shards) and small enough that a hostile input of a few bytes
//! cannot make the process abort on a failed allocation or hang.

/// Upper bounds on sizes that come from input files and settings (see the module docs).
///
/// Build one from [`Limits::default`] and raise the field an error names when the input is
/// trusted and legitimately larger:
///
/// ```
/// let mut limits = supcon_data::Limits::default();
/// limits.max_image_pixels = 1 << 28; // 16384 × 16384 scans
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Pixels (height × width) of any image buffer made while decoding one image: the decoded
    /// image, the image a resize produces (before a centre crop) and the resize's intermediate
    /// buffer (source width × target height, 16 bytes a pixel: the `image` crate resizes rows
    /// first). A very thin image meeting a centre crop is what this stops: a 1 × 3 000 000 PNG
    /// of a few KB would otherwise be scaled to 224 × 672 000 000.
    pub max_image_pixels: u64,
    /// Bytes of one image member of a tar shard, read whole into memory before decoding.
    pub max_shard_member_bytes: u64,
    /// Bytes of one `.cls` member (a decimal class index and perhaps a newline).
    pub max_label_bytes: u64,
    /// The largest class index a `.cls` member may hold: the class list is sized from it.
    pub max_class_id: u64,
    /// Bytes of one tar extension record, read whole: a GNU long name and a PAX extended header.
    pub max_tar_header_bytes: u64,
    /// Shard files one brace pattern may name (the product of its ranges' and lists' sizes).
    pub max_pattern_names: u64,
    /// Bytes a gzip-compressed dataset file (IDX, CIFAR) may decompress to.
    pub max_decompressed_bytes: u64,
}

impl Limits {
    /// 2^26 pixels (8192 × 8192; a 64-megapixel photo): at most 512 MiB for a decoded 16-bit RGBA
    /// image, the `image` crate's own default allocation cap.
    pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 1 << 26;
    /// 256 MiB: far above any image a training set holds, far below memory.
    pub const DEFAULT_MAX_SHARD_MEMBER_BYTES: u64 = 256 << 20;
    /// 64 bytes: a class index is a few digits.
    pub const DEFAULT_MAX_LABEL_BYTES: u64 = 64;
    /// 1 000 000 classes: ImageNet-21k has 21 841.
    pub const DEFAULT_MAX_CLASS_ID: u64 = 1_000_000;
    /// 64 KiB: a path is at most 4 KiB (`PATH_MAX`); the rest is room for PAX attributes.
    pub const DEFAULT_MAX_TAR_HEADER_BYTES: u64 = 64 << 10;
    /// 100 000 shard names: ImageNet-1k in WebDataset shards is about 1 300.
    pub const DEFAULT_MAX_PATTERN_NAMES: u64 = 100_000;
    /// 4 GiB: Fashion-MNIST's largest file is 47 MB, CIFAR-100's 150 MB once decompressed.
    pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 4 << 30;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_image_pixels: Self::DEFAULT_MAX_IMAGE_PIXELS,
            max_shard_member_bytes: Self::DEFAULT_MAX_SHARD_MEMBER_BYTES,
            max_label_bytes: Self::DEFAULT_MAX_LABEL_BYTES,
            max_class_id: Self::DEFAULT_MAX_CLASS_ID,
            max_tar_header_bytes: Self::DEFAULT_MAX_TAR_HEADER_BYTES,
            max_pattern_names: Self::DEFAULT_MAX_PATTERN_NAMES,
            max_decompressed_bytes: Self::DEFAULT_MAX_DECOMPRESSED_BYTES,
        }
    }
}

/// Longest shard name a brace pattern may expand to: Linux's `PATH_MAX`. Not a setting, as no
/// longer path can be opened; with [`Limits::max_pattern_names`] it bounds an expansion's bytes.
pub const MAX_PATH_BYTES: usize = 4096;
