//! Dataset readers for contrastive learning: IDX (MNIST / Fashion-MNIST), CIFAR-10 / CIFAR-100
//! binary batches, image folders and WebDataset tar shards, all into one [`Dataset`] type whose
//! images are in memory or, streamed, decoded from disk when read ([`open_image_folder`],
//! [`open_shards`]; labeled or not).
//!
//! A [`Dataset`] holds `u8` pixels, contiguous and **HWC** inside each image (image `i`,
//! row `y`, column `x`, channel `c` is byte `i·H·W·C + (y·W + x)·C + c`), `i64` labels in
//! `0..num_classes` and the class names. It splits ([`Dataset::train_validation_split`], seeded
//! and stratified, refusing test sets), subsets ([`Dataset::subset`],
//! [`Dataset::first_per_class`], [`Dataset::fraction_per_class`]) and measures itself
//! ([`Dataset::channel_stats`]).
//!
//! ```no_run
//! use supcon_data::{FashionMnist, Split};
//! # fn main() -> Result<(), supcon_data::DataError> {
//! let train = FashionMnist::load(Split::Train, None)?; // --data, $SUPCON_DATA, Debian's folder
//! let (train, validation) = train.train_validation_split(0.1, 42)?;
//! let stats = train.channel_stats()?;
//! assert_eq!(train.shape().channels, stats.mean.len());
//! # Ok(()) }
//! ```
//!
//! The byte parsers ([`parse_idx_images`], [`parse_idx_labels`], [`parse_cifar10`],
//! [`parse_cifar100`]) take a byte slice, never panic, and check every size the header claims
//! against the bytes present before allocating; they are the fuzz targets (`fuzz/`), with the
//! tar shard indexer [`index_tar`].
//!
//! Every other size that comes from a file or a setting — an image's pixels before and after a
//! resize, a tar member's or extension record's declared size, a `.cls` body and its class
//! index, a brace pattern's expansion, a gzip stream's decompressed size — is checked against
//! one budget, [`Limits`], before it is allocated, and only regular files are opened (a FIFO
//! would block). The `…_with_limits` functions take a budget; the others use the defaults.

#![warn(missing_docs)]

mod braces;
mod catalog;
mod cifar;
mod dataset;
mod error;
mod files;
mod folder;
mod idx;
mod limits;
pub mod location;
mod mnist;
mod shards;
mod store;
mod tar_index;

use std::io::Read;
use std::path::Path;

use files::open_regular_file;

pub use braces::{expand_braces, expand_braces_with_limits};
pub use catalog::DatasetName;
pub use cifar::{
    encode_cifar10, encode_cifar100, parse_cifar10, parse_cifar100, Cifar10, Cifar100,
    Cifar100Batch, Cifar100Label, Cifar10Batch, CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES,
    CIFAR100_RECORD_BYTES, CIFAR10_CLASS_NAMES, CIFAR10_RECORD_BYTES, CIFAR_IMAGE_BYTES,
    CIFAR_SIDE,
};
pub use dataset::{
    ChannelStats, Dataset, ImageShape, LabelQuota, Partition, Split, UNLABELED_CLASS,
};
pub use error::{DataError, ParseError};
pub use folder::{
    load_image_folder, open_image_folder, open_image_folder_with_limits, scan_image_folder,
    scan_unlabeled_folder,
};
pub use idx::{
    check_labels, encode_idx, idx_label_offset, load_idx, parse_idx_images, parse_idx_labels,
    IdxImages, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
};
pub use limits::{Limits, MAX_PATH_BYTES};
pub use location::DATA_ENV;
pub use mnist::{idx_file_names, FashionMnist, Mnist};
pub use shards::{
    open_shards, open_shards_with_limits, shard_order, shard_paths, shard_paths_with_limits,
    ShardStore,
};
pub use store::{ColorMode, FileStore, Fit, ImageFolderOptions, ImageStore};
pub use tar_index::{index_tar, TarSample};

/// The two bytes every gzip stream starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// True when `bytes` starts with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompresses `bytes` when they start with the gzip magic, else returns them as they are.
/// Concatenated gzip members are all read (as `gunzip` does). A stream that decompresses to more
/// than [`Limits::DEFAULT_MAX_DECOMPRESSED_BYTES`] is an [`std::io::ErrorKind::InvalidData`]
/// error, found after decompressing that much and no more.
pub fn maybe_gunzip(bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let limit = Limits::DEFAULT_MAX_DECOMPRESSED_BYTES;
    gunzip_at_most(bytes, limit)?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("gzip stream decompresses to more than {limit} bytes"),
        )
    })
}

/// [`maybe_gunzip`] with a cap: `None` when the stream decompresses to more than `limit` bytes.
/// Reading through `take(limit + 1)` is what keeps a gzip bomb from filling memory.
fn gunzip_at_most(bytes: Vec<u8>, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    if !is_gzip(&bytes) {
        return Ok(Some(bytes));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

/// Reads a file, decompressing it when its first bytes are the gzip magic (whatever its name),
/// with the default [`Limits`].
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    read_maybe_gzip_with_limits(path, &Limits::default())
}

/// [`read_maybe_gzip`] with a given budget: the file must be a regular file, and it may
/// decompress to at most [`Limits::max_decompressed_bytes`].
pub fn read_maybe_gzip_with_limits(path: &Path, limits: &Limits) -> Result<Vec<u8>, DataError> {
    let mut bytes = Vec::new();
    open_regular_file(path)?
        .read_to_end(&mut bytes)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let limit = limits.max_decompressed_bytes;
    match gunzip_at_most(bytes, limit) {
        Ok(Some(decompressed)) => Ok(decompressed),
        Ok(None) => Err(DataError::LimitExceeded {
            path: Some(path.to_path_buf()),
            member: None,
            what: "decompressed size in bytes (at least)".to_owned(),
            value: limit.saturating_add(1),
            limit,
            setting: "max_decompressed_bytes",
        }),
        // Only a gzip stream is decompressed, so only a gzip stream can fail here.
        Err(source) => Err(DataError::Gzip {
            path: path.to_path_buf(),
            source,
        }),
    }
}
