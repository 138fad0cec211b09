//! Errors of the readers and of the dataset operations.
//!
//! Two levels: [`ParseError`] comes from the byte parsers ([`crate::parse_idx_images`],
//! [`crate::parse_cifar10`], …), which see bytes but no file, so it names the byte offset and
//! the entry; [`DataError`] adds the file (or folder) and covers everything that is not about
//! bytes (missing data, image folders, dataset operations).

use std::path::PathBuf;

/// A malformed byte buffer. Offsets are counted from the start of the (decompressed) buffer.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The first four bytes are not the magic number of the expected IDX file kind.
    #[error(
        "wrong magic number at byte 0: expected {expected:#010x} ({what}), found {found:#010x}"
    )]
    BadMagic {
        /// What the file should hold, e.g. `"IDX ubyte images, 3 dimensions"`.
        what: &'static str,
        expected: u32,
        found: u32,
    },
    /// The buffer ends before the header or the data it announces.
    #[error(
        "truncated {what}: expected {expected} bytes from byte {offset}, found {actual} \
         (the file is shorter than its header says; is the download complete?)"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        expected: usize,
        actual: usize,
    },
    /// More bytes than the header announces: the header's counts would silently drop data.
    #[error(
        "{extra} unexpected trailing bytes after the {expected} bytes announced by the header \
         (at byte {expected})"
    )]
    TrailingBytes { expected: usize, extra: usize },
    /// A dimension in the header is zero where an image needs a positive size, or the dimensions
    /// multiply past what this machine can address.
    #[error("invalid header dimensions {dims:?} at byte 4: {reason}")]
    InvalidDimensions {
        dims: Vec<u64>,
        reason: &'static str,
    },
    /// A label value is not a class index.
    #[error(
        "label {label} of entry {index} (byte {offset}) is out of range: {num_classes} classes"
    )]
    LabelOutOfRange {
        index: usize,
        offset: usize,
        label: u64,
        num_classes: usize,
    },
    /// The buffer is empty (an empty CIFAR batch is a failed download, not a dataset).
    #[error("empty {what}: 0 bytes")]
    Empty { what: &'static str },
}

/// Any failure of this crate.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum DataError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file starts with the gzip magic but does not decompress.
    #[error("{path}: corrupt or truncated gzip stream: {source}")]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file's bytes are malformed.
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    /// The image file and the label file disagree on the number of entries.
    #[error(
        "count mismatch: {images_path} holds {images} images but {labels_path} holds {labels} labels"
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },
    /// A dataset's files were found in none of the places tried.
    #[error(
        "{dataset} not found; looked for {files} in: {tried}. {hint}",
        files = .missing.join(", "),
        tried = display_paths(.tried)
    )]
    NotFound {
        dataset: &'static str,
        /// The file names looked for.
        missing: Vec<String>,
        /// The folders tried, in order.
        tried: Vec<PathBuf>,
        /// How to get the data.
        hint: String,
    },
    /// A class-names file does not list the expected number of classes.
    #[error("{path}: expected {expected} class names (one per line), found {found}")]
    ClassNames {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    /// An image file could not be opened or decoded.
    #[error("unreadable image {path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// An image folder's root holds no class sub-folders.
    #[error("no class folders in {root} (expected the layout root/<class>/<image>.png|jpg)")]
    NoClassFolders { root: PathBuf },
    /// A class folder holds no PNG or JPEG file.
    #[error("class folder {path} holds no PNG or JPEG image")]
    EmptyClass { path: PathBuf },
    /// Images of different sizes in one folder tree, and no resize asked for.
    #[error(
        "{path} is {found_height}x{found_width} but the first image ({first}) is \
         {height}x{width}; pass a resize size to load images of mixed sizes"
    )]
    MixedImageSizes {
        path: PathBuf,
        first: PathBuf,
        height: usize,
        width: usize,
        found_height: usize,
        found_width: usize,
    },
    /// The pixel buffer's length does not match `count × height × width × channels`.
    #[error("pixel buffer holds {actual} bytes, expected {expected} ({count} images of {shape})")]
    PixelCount {
        expected: usize,
        actual: usize,
        count: usize,
        shape: crate::ImageShape,
    },
    /// A shape with a zero side, or one whose size overflows.
    #[error("invalid image shape {shape}: {reason}")]
    InvalidShape {
        shape: crate::ImageShape,
        reason: &'static str,
    },
    /// A label is not in `0..num_classes`.
    #[error("label {label} of sample {index} is out of range: {num_classes} classes")]
    LabelOutOfRange {
        index: usize,
        label: i64,
        num_classes: usize,
    },
    /// A subset index is past the end of the dataset.
    #[error("index {index} is out of range for a dataset of {len} samples")]
    IndexOutOfRange { index: usize, len: usize },
    /// A fraction outside its allowed interval.
    #[error("{what} must be in {allowed}, got {value}")]
    InvalidFraction {
        what: &'static str,
        allowed: &'static str,
        value: f64,
    },
    /// A train/validation split of the test set was asked for: model selection must never look
    /// at the test set.
    #[error(
        "refusing to split a test set into train/validation: model selection must never look at \
         the test set; split the training set instead"
    )]
    SplitOfTestSet,
    /// An operation needs at least one sample.
    #[error("{what} needs a non-empty dataset")]
    EmptyDataset { what: &'static str },
    /// A dataset name that [`crate::DatasetName`] does not know.
    #[error("unknown dataset {name:?}; known: {}", .known.join(", "))]
    UnknownDataset {
        name: String,
        known: Vec<&'static str>,
    },
    /// The dataset cannot be written in the requested format.
    #[error("cannot encode as {format}: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(nowhere: no location given)".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
