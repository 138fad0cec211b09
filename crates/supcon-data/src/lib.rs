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
//! against the bytes present before allocating; they are the fuzz targets (`fuzz/`).

#![warn(missing_docs)]

mod catalog;
mod cifar;
mod dataset;
mod error;
mod folder;
mod idx;
pub mod location;
mod mnist;
mod shards;
mod store;

use std::io::Read;
use std::path::Path;

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
pub use folder::{load_image_folder, open_image_folder, scan_image_folder, scan_unlabeled_folder};
pub use idx::{
    check_labels, encode_idx, idx_label_offset, load_idx, parse_idx_images, parse_idx_labels,
    IdxImages, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
};
pub use location::DATA_ENV;
pub use mnist::{idx_file_names, FashionMnist, Mnist};
pub use shards::{expand_braces, open_shards, shard_order, shard_paths, ShardStore};
pub use store::{ColorMode, FileStore, Fit, ImageFolderOptions, ImageStore};

/// The two bytes every gzip stream starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// True when `bytes` starts with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompresses `bytes` when they start with the gzip magic, else returns them as they are.
/// Concatenated gzip members are all read (as `gunzip` does).
pub fn maybe_gunzip(bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice()).read_to_end(&mut out)?;
    Ok(out)
}

/// Reads a file, decompressing it when its first bytes are the gzip magic (whatever its name).
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let compressed = is_gzip(&bytes);
    maybe_gunzip(bytes).map_err(|source| {
        if compressed {
            DataError::Gzip {
                path: path.to_path_buf(),
                source,
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}
