//! The IDX format of MNIST and Fashion-MNIST.
//!
//! A big-endian header — two zero bytes, a type byte (`0x08` = unsigned byte, the only type
//! these datasets use), a dimension count — then one big-endian `u32` per dimension, then the
//! data, row-major. Images: magic `0x00000803`, dimensions `[count, rows, cols]`. Labels:
//! magic `0x00000801`, dimension `[count]`.
//!
//! The parsers check the header's sizes against the buffer's length *before* allocating, so a
//! header that claims 2³¹ images in a 100-byte file is an error, not a 2 GiB allocation.

use std::path::Path;

use crate::{read_maybe_gzip, DataError, Dataset, ImageShape, ParseError};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Gray images parsed from an IDX file: `count` images of `height × width`, row-major, one
/// byte per pixel, image after image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images (the header's first dimension).
    pub count: usize,
    /// Rows per image, in pixels (28 for MNIST).
    pub height: usize,
    /// Columns per image, in pixels (28 for MNIST).
    pub width: usize,
    /// `count × height × width` bytes, 0–255 intensities, image after image.
    pub pixels: Vec<u8>,
}

/// Reads the header of an IDX buffer with the given magic number and returns its dimensions
/// and the data that follows, after checking that the data has exactly the announced length.
fn parse_idx<'a>(
    bytes: &'a [u8],
    magic: u32,
    what: &'static str,
) -> Result<(Vec<usize>, &'a [u8]), ParseError> {
    let dims_count = (magic & 0xff) as usize;
    let header_len = 4 + 4 * dims_count;
    if bytes.len() < 4 {
        return Err(ParseError::Truncated {
            what: "IDX header",
            offset: 0,
            expected: header_len,
            actual: bytes.len(),
        });
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(ParseError::BadMagic {
            what,
            expected: magic,
            found,
        });
    }
    if bytes.len() < header_len {
        return Err(ParseError::Truncated {
            what: "IDX header",
            offset: 0,
            expected: header_len,
            actual: bytes.len(),
        });
    }
    let dims_u64: Vec<u64> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    let mut data_len: usize = 1;
    let mut dims = Vec::with_capacity(dims_count);
    for &d in &dims_u64 {
        let d_usize = usize::try_from(d).map_err(|_| ParseError::InvalidDimensions {
            dims: dims_u64.clone(),
            reason: "a dimension does not fit in usize",
        })?;
        data_len = data_len
            .checked_mul(d_usize)
            .ok_or_else(|| ParseError::InvalidDimensions {
                dims: dims_u64.clone(),
                reason: "the product of the dimensions overflows",
            })?;
        dims.push(d_usize);
    }
    let data = &bytes[header_len..];
    if data.len() < data_len {
        return Err(ParseError::Truncated {
            what,
            offset: header_len,
            expected: data_len,
            actual: data.len(),
        });
    }
    if data.len() > data_len {
        return Err(ParseError::TrailingBytes {
            expected: header_len + data_len,
            extra: data.len() - data_len,
        });
    }
    Ok((dims, data))
}

/// Parses an (uncompressed) IDX image file: magic `0x00000803`, `[count, height, width]`.
pub fn parse_idx_images(bytes: &[u8]) -> Result<IdxImages, ParseError> {
    let (dims, data) = parse_idx(bytes, IDX_IMAGES_MAGIC, "IDX ubyte images (3 dimensions)")?;
    let (count, height, width) = (dims[0], dims[1], dims[2]);
    if height == 0 || width == 0 {
        return Err(ParseError::InvalidDimensions {
            dims: dims.iter().map(|&d| d as u64).collect(),
            reason: "images need a positive height and width",
        });
    }
    Ok(IdxImages {
        count,
        height,
        width,
        pixels: data.to_vec(),
    })
}

/// Parses an (uncompressed) IDX label file: magic `0x00000801`, `[count]`. Returns the raw
/// label bytes; [`check_labels`] checks them against a class count.
pub fn parse_idx_labels(bytes: &[u8]) -> Result<Vec<u8>, ParseError> {
    let (_, data) = parse_idx(bytes, IDX_LABELS_MAGIC, "IDX ubyte labels (1 dimension)")?;
    Ok(data.to_vec())
}

/// Byte offset of label `index` in an IDX label file.
pub const fn idx_label_offset(index: usize) -> usize {
    8 + index
}

/// Checks that every label of an IDX label file is below `num_classes`.
pub fn check_labels(labels: &[u8], num_classes: usize) -> Result<(), ParseError> {
    match labels
        .iter()
        .position(|&label| usize::from(label) >= num_classes)
    {
        Some(index) => Err(ParseError::LabelOutOfRange {
            index,
            offset: idx_label_offset(index),
            label: u64::from(labels[index]),
            num_classes,
        }),
        None => Ok(()),
    }
}

/// Reads an IDX image file and an IDX label file (each gzip-compressed or not, detected by the
/// gzip magic bytes) into a [`Dataset`] of `height × width × 1` gray images.
///
/// Errors name the file: wrong magic, truncation, trailing bytes, a label outside
/// `0..class_names.len()`, and a count that differs between the two files.
pub fn load_idx(
    images_path: &Path,
    labels_path: &Path,
    class_names: Vec<String>,
) -> Result<Dataset, DataError> {
    let image_bytes = read_maybe_gzip(images_path)?;
    let images = parse_idx_images(&image_bytes).map_err(|source| DataError::Parse {
        path: images_path.to_path_buf(),
        source,
    })?;
    drop(image_bytes);
    let label_bytes = read_maybe_gzip(labels_path)?;
    let labels = parse_idx_labels(&label_bytes).map_err(|source| DataError::Parse {
        path: labels_path.to_path_buf(),
        source,
    })?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.count,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    check_labels(&labels, class_names.len()).map_err(|source| DataError::Parse {
        path: labels_path.to_path_buf(),
        source,
    })?;
    tracing::debug!(
        images = images.count,
        height = images.height,
        width = images.width,
        path = %images_path.display(),
        "read IDX"
    );
    Dataset::new(
        images.pixels,
        ImageShape::new(images.height, images.width, 1),
        labels.into_iter().map(i64::from).collect(),
        class_names,
    )
}

/// Writes images and labels as uncompressed IDX buffers `(images, labels)`; the inverse of the
/// parsers, for tests and for converting data. Needs one channel and labels below 256.
pub fn encode_idx(dataset: &Dataset) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let shape = dataset.shape();
    let encode_error = |reason: String| DataError::Encode {
        format: "IDX",
        reason,
    };
    if shape.channels != 1 {
        return Err(encode_error(format!(
            "IDX images are gray; the dataset has {} channels",
            shape.channels
        )));
    }
    let as_u32 = |value: usize, what: &str| {
        u32::try_from(value).map_err(|_| encode_error(format!("{what} {value} exceeds u32")))
    };
    let count = as_u32(dataset.len(), "count")?;
    let mut images = Vec::with_capacity(16 + dataset.len() * shape.len());
    images.extend_from_slice(&IDX_IMAGES_MAGIC.to_be_bytes());
    images.extend_from_slice(&count.to_be_bytes());
    images.extend_from_slice(&as_u32(shape.height, "height")?.to_be_bytes());
    images.extend_from_slice(&as_u32(shape.width, "width")?.to_be_bytes());
    for sample in dataset.iter() {
        images.extend_from_slice(&sample?.0);
    }
    let mut labels = Vec::with_capacity(8 + dataset.len());
    labels.extend_from_slice(&IDX_LABELS_MAGIC.to_be_bytes());
    labels.extend_from_slice(&count.to_be_bytes());
    for &label in dataset.labels() {
        labels.push(
            u8::try_from(label)
                .map_err(|_| encode_error(format!("label {label} does not fit in a byte")))?,
        );
    }
    Ok((images, labels))
}
