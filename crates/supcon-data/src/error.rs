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
        /// The magic number that kind of file starts with (big-endian), e.g. `0x00000803`.
        expected: u32,
        /// The first four bytes of the buffer, read as a big-endian `u32`.
        found: u32,
    },
    /// The buffer ends before the header or the data it announces.
    #[error(
        "truncated {what}: expected {expected} bytes from byte {offset}, found {actual} \
         (the file is shorter than its header says; is the download complete?)"
    )]
    Truncated {
        /// The part that is cut short, e.g. `"IDX header"` or `"CIFAR-10 record"`.
        what: &'static str,
        /// Byte offset where that part starts (0 for a header; the start of the incomplete last
        /// record for CIFAR).
        offset: usize,
        /// Bytes the part needs from `offset` (header length, announced data length, or one
        /// record's length).
        expected: usize,
        /// Bytes actually present from `offset` (for a header, the whole buffer's length).
        actual: usize,
    },
    /// More bytes than the header announces: the header's counts would silently drop data.
    #[error(
        "{extra} unexpected trailing bytes after the {expected} bytes announced by the header \
         (at byte {expected})"
    )]
    TrailingBytes {
        /// Bytes the header announces, header included: where the extra bytes start.
        expected: usize,
        /// Number of bytes past `expected`.
        extra: usize,
    },
    /// A dimension in the header is zero where an image needs a positive size, or the dimensions
    /// multiply past what this machine can address.
    #[error("invalid header dimensions {dims:?} at byte 4: {reason}")]
    InvalidDimensions {
        /// The dimensions as the header lists them, e.g. `[count, rows, cols]` for images.
        dims: Vec<u64>,
        /// Why they are refused, e.g. `"images need a positive height and width"`.
        reason: &'static str,
    },
    /// A label value is not a class index.
    #[error(
        "label {label} of entry {index} (byte {offset}) is out of range: {num_classes} classes"
    )]
    LabelOutOfRange {
        /// Entry (image/record) number, counted from 0.
        index: usize,
        /// Byte offset of the offending label byte in the buffer.
        offset: usize,
        /// The label value found.
        label: u64,
        /// Number of classes; valid labels are `0..num_classes`.
        num_classes: usize,
    },
    /// The buffer is empty (an empty CIFAR batch is a failed download, not a dataset).
    #[error("empty {what}: 0 bytes")]
    Empty {
        /// What the buffer should hold, e.g. `"CIFAR-10 record"`.
        what: &'static str,
    },
}

/// Any failure of this crate.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum DataError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file (or folder, when listing one) that could not be read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file starts with the gzip magic but does not decompress.
    #[error("{path}: corrupt or truncated gzip stream")]
    Gzip {
        /// The compressed file.
        path: PathBuf,
        /// The decompressor's error.
        #[source]
        source: std::io::Error,
    },
    /// A file's bytes are malformed.
    #[error("{path}")]
    Parse {
        /// The file whose (decompressed) bytes are malformed.
        path: PathBuf,
        /// What is wrong, with the byte offset inside the file.
        #[source]
        source: ParseError,
    },
    /// The image file and the label file disagree on the number of entries.
    #[error(
        "count mismatch: {images_path} holds {images} images but {labels_path} holds {labels} labels"
    )]
    CountMismatch {
        /// The image file (e.g. `train-images-idx3-ubyte`).
        images_path: PathBuf,
        /// Number of images its header announces.
        images: usize,
        /// The label file (e.g. `train-labels-idx1-ubyte`).
        labels_path: PathBuf,
        /// Number of labels its header announces.
        labels: usize,
    },
    /// A dataset's files were found in none of the places tried.
    #[error(
        "{dataset} not found; looked for {files} in: {tried}. {hint}",
        files = .missing.join(", "),
        tried = display_paths(.tried)
    )]
    NotFound {
        /// The dataset's name for messages, e.g. `"Fashion-MNIST"`.
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
        /// The class-names file (e.g. CIFAR's `batches.meta.txt`).
        path: PathBuf,
        /// Number of classes of the dataset.
        expected: usize,
        /// Number of non-empty lines in the file.
        found: usize,
    },
    /// An image file could not be opened or decoded.
    #[error("unreadable image {path}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The `image` crate's decoding error.
        #[source]
        source: image::ImageError,
    },
    /// An image folder's root holds no class sub-folders.
    #[error("no class folders in {root} (expected the layout root/<class>/<image>.png|jpg)")]
    NoClassFolders {
        /// The folder given as the dataset root.
        root: PathBuf,
    },
    /// A class folder holds no PNG or JPEG file.
    #[error("class folder {path} holds no PNG or JPEG image")]
    EmptyClass {
        /// The class folder, `root/<class>`.
        path: PathBuf,
    },
    /// Images of different sizes in one folder tree, and no resize asked for.
    #[error(
        "{path} is {found_height}x{found_width} but the first image ({first}) is \
         {height}x{width}; pass a resize size to load images of mixed sizes"
    )]
    MixedImageSizes {
        /// The first image (in load order) whose size differs from the first image's.
        path: PathBuf,
        /// The first image, whose size every other image must have.
        first: PathBuf,
        /// Height of `first`, in pixels.
        height: usize,
        /// Width of `first`, in pixels.
        width: usize,
        /// Height of `path`, in pixels.
        found_height: usize,
        /// Width of `path`, in pixels.
        found_width: usize,
    },
    /// An image member of a tar shard could not be decoded.
    #[error("unreadable image {member} in shard {shard}")]
    ShardMember {
        /// The `.tar` file.
        shard: PathBuf,
        /// The member's name inside it.
        member: String,
        /// The `image` crate's decoding error.
        #[source]
        source: image::ImageError,
    },
    /// A tar shard is malformed (its headers could not be read).
    #[error("cannot index tar shard {path}")]
    Tar {
        /// The `.tar` file.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },
    /// A sample of a tar shard is incomplete.
    #[error("shard {shard}: sample `{key}` {reason}")]
    ShardSample {
        /// The `.tar` file.
        shard: PathBuf,
        /// The sample's key (its members' names up to the first dot).
        key: String,
        /// What is missing.
        reason: &'static str,
    },
    /// A `.cls` member does not hold a class index.
    #[error("shard {shard}: label member {member} holds `{text}`, not a class index (0, 1, …)")]
    ShardLabel {
        /// The `.tar` file.
        shard: PathBuf,
        /// The `.cls` member.
        member: String,
        /// Its text (the first 40 characters).
        text: String,
    },
    /// A tar member's data runs past the end of its shard: the file is cut short, or the
    /// member's header declares more bytes than the shard holds.
    #[error(
        "shard {shard}: member {member} declares {size} bytes from byte {offset}, but the shard \
         ends at byte {shard_len} (truncated file?)"
    )]
    ShardTruncated {
        /// The `.tar` file.
        shard: PathBuf,
        /// The member's name inside it.
        member: String,
        /// Byte offset of the member's data in the shard.
        offset: u64,
        /// Bytes its header declares.
        size: u64,
        /// Bytes the shard holds.
        shard_len: u64,
    },
    /// Decoding a streamed dataset into memory needs a buffer this process cannot allocate.
    #[error(
        "{images} images of {shape} need {bytes} bytes in memory, more than can be allocated; \
         stream them instead (data.stream = true for an image folder)"
    )]
    TooLargeForMemory {
        /// Number of images.
        images: usize,
        /// Shape of one image.
        shape: crate::ImageShape,
        /// Bytes the images need.
        bytes: u128,
    },
    /// A size read from a file or given as a setting is over its [`crate::Limits`] bound; nothing
    /// of that size was allocated.
    #[error(
        "{}{what} is {value}, over the limit of {limit}; raise `Limits::{setting}` if this input \
         is trusted",
        location(.path.as_deref(), .member.as_deref())
    )]
    LimitExceeded {
        /// The file the size comes from (an image, a shard, a compressed file) or the shard-list
        /// pattern as given; `None` for a setting (a resize).
        path: Option<PathBuf>,
        /// The tar member, when the size comes from one.
        member: Option<String>,
        /// What was measured, with its unit, e.g. `"declared size in bytes"`.
        what: String,
        /// The size found. For a stream read up to its limit (gzip), the bytes read: limit + 1.
        value: u64,
        /// The bound it exceeds.
        limit: u64,
        /// The [`crate::Limits`] field that sets the bound.
        setting: &'static str,
    },
    /// A path that must be a regular file (an image, a shard, a dataset file) is something else:
    /// opening a FIFO would block forever, a device would never end.
    #[error("{path} is {kind}, not a regular file")]
    NotAFile {
        /// The path as given or found.
        path: PathBuf,
        /// What it is instead, e.g. `"a FIFO (named pipe)"`.
        kind: &'static str,
    },
    /// A shard list that names no usable shard.
    #[error("shard list `{pattern}` {reason}")]
    ShardPattern {
        /// The pattern or path as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A store's image decoded to another size than the dataset's images.
    #[error("{source_name} decoded to {bytes} bytes, but images of this dataset are {expected}")]
    WrongImageSize {
        /// Where the image was read from.
        source_name: String,
        /// The dataset's image shape.
        expected: crate::ImageShape,
        /// Bytes the store returned.
        bytes: usize,
    },
    /// Labels given for a store do not match its number of images.
    #[error("{labels} labels for {images} images")]
    LabelCount {
        /// Images in the store.
        images: usize,
        /// Labels given.
        labels: usize,
    },
    /// The pixel buffer's length does not match `count × height × width × channels`.
    #[error("pixel buffer holds {actual} bytes, expected {expected} ({count} images of {shape})")]
    PixelCount {
        /// Bytes needed: `count × H·W·C`.
        expected: usize,
        /// Bytes given.
        actual: usize,
        /// Number of images (the number of labels given).
        count: usize,
        /// Shape of one image.
        shape: crate::ImageShape,
    },
    /// A shape with a zero side, or one whose size overflows.
    #[error("invalid image shape {shape}: {reason}")]
    InvalidShape {
        /// The refused shape (for a folder resize, the requested size).
        shape: crate::ImageShape,
        /// Why, e.g. `"a side is zero"` or `"H·W·C overflows"`.
        reason: &'static str,
    },
    /// A label is not in `0..num_classes`.
    #[error("label {label} of sample {index} is out of range: {num_classes} classes")]
    LabelOutOfRange {
        /// Position of the sample in the dataset, counted from 0.
        index: usize,
        /// The label found (possibly negative).
        label: i64,
        /// Number of classes (class names given); valid labels are `0..num_classes`.
        num_classes: usize,
    },
    /// A subset index is past the end of the dataset.
    #[error("index {index} is out of range for a dataset of {len} samples")]
    IndexOutOfRange {
        /// The first offending index.
        index: usize,
        /// Number of samples in the dataset.
        len: usize,
    },
    /// A fraction outside its allowed interval.
    #[error("{what} must be in {allowed}, got {value}")]
    InvalidFraction {
        /// The parameter, e.g. `"validation fraction"` or `"subset fraction"`.
        what: &'static str,
        /// Its allowed interval in interval notation, e.g. `"(0, 1)"` or `"(0, 1]"`.
        allowed: &'static str,
        /// The value given.
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
    EmptyDataset {
        /// The operation, e.g. `"channel statistics"`.
        what: &'static str,
    },
    /// A dataset name that [`crate::DatasetName`] does not know.
    #[error("unknown dataset {name:?}; known: {}", .known.join(", "))]
    UnknownDataset {
        /// The name as given.
        name: String,
        /// The names that are accepted ([`crate::DatasetName::ALL`]).
        known: Vec<&'static str>,
    },
    /// A labeled subset asked for more images of a class than the class has.
    #[error(
        "{what} asks for {wanted} labeled image(s) of class {class} ({name}), which has only \
         {available}; lower it to {available} or less"
    )]
    TooFewInClass {
        /// The setting, e.g. `"data.labeled_per_class"`.
        what: &'static str,
        /// The class index.
        class: usize,
        /// The class's name.
        name: String,
        /// How many images the subset asked for.
        wanted: usize,
        /// How many the class has.
        available: usize,
    },
    /// A labeled subset would leave a class without any labeled image.
    #[error(
        "{what} leaves class {class} ({name}, {available} image(s)) without a labeled image; \
         raise it so that every class keeps at least one"
    )]
    ClassWithoutLabel {
        /// The setting, e.g. `"data.labeled_fraction"`.
        what: &'static str,
        /// The class index.
        class: usize,
        /// The class's name.
        name: String,
        /// How many images the class has.
        available: usize,
    },
    /// An operation needs labels, and the dataset has none.
    #[error("{what} needs labeled images, and this dataset has no labels")]
    NoLabels {
        /// The operation, e.g. `"a labeled subset"`.
        what: &'static str,
    },
    /// The dataset cannot be written in the requested format.
    #[error("cannot encode as {format}: {reason}")]
    Encode {
        /// The target format: `"IDX"`, `"CIFAR-10"` or `"CIFAR-100"`.
        format: &'static str,
        /// What about the dataset does not fit the format (image shape, channel count, a label).
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

/// `"path: "`, `"path, member `name`: "` or nothing: where a [`DataError::LimitExceeded`] comes from.
fn location(path: Option<&std::path::Path>, member: Option<&str>) -> String {
    match (path, member) {
        (Some(path), Some(member)) => format!("{}, member `{member}`: ", path.display()),
        (Some(path), None) => format!("{}: ", path.display()),
        (None, _) => String::new(),
    }
}
