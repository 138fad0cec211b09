//! IDX reader: crafted files for every error, gzip detection, a written-then-read round trip.

use std::io::Write;
use std::path::{Path, PathBuf};

use supcon_data::{
    encode_idx, load_idx, parse_idx_images, parse_idx_labels, DataError, Dataset, FashionMnist,
    ImageShape, ParseError, Split,
};

fn images_bytes(count: u32, height: u32, width: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3];
    for d in [count, height, width] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    bytes
}

fn labels_bytes(labels: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 1];
    bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class {i}")).collect()
}

fn load_pair(
    images: &[u8],
    labels: &[u8],
    classes: usize,
) -> (tempfile::TempDir, Result<Dataset, DataError>) {
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "images", images);
    let l = write(dir.path(), "labels", labels);
    let result = load_idx(&i, &l, names(classes));
    (dir, result)
}

#[test]
fn parses_a_small_file_in_row_major_order() {
    let pixels: Vec<u8> = (0..2 * 2 * 3).collect();
    let images = parse_idx_images(&images_bytes(2, 2, 3, &pixels)).unwrap();
    assert_eq!((images.count, images.height, images.width), (2, 2, 3));
    assert_eq!(images.pixels, pixels);
    assert_eq!(
        parse_idx_labels(&labels_bytes(&[3, 1])).unwrap(),
        vec![3, 1]
    );
}

#[test]
fn gzip_is_detected_by_magic_not_by_name() {
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|v| (v * 7) as u8).collect();
    let images = images_bytes(3, 4, 5, &pixels);
    let labels = labels_bytes(&[0, 1, 2]);
    let dir = tempfile::tempdir().unwrap();
    // Compressed but named without .gz, and raw but named .gz: both read.
    let i = write(dir.path(), "images-no-extension", &gzip(&images));
    let l = write(dir.path(), "labels.gz", &labels);
    let dataset = load_idx(&i, &l, names(3)).unwrap();
    assert_eq!(dataset.shape(), ImageShape::new(4, 5, 1));
    assert_eq!(dataset.pixels().unwrap(), pixels.as_slice());
    assert_eq!(dataset.labels(), &[0, 1, 2]);
    assert_eq!(dataset.read_image(1).unwrap(), &pixels[20..40]);
}

#[test]
fn wrong_magic_names_the_file_and_the_numbers() {
    let mut images = images_bytes(1, 2, 2, &[0; 4]);
    images[3] = 1; // a label file's magic
    let (_dir, result) = load_pair(&images, &labels_bytes(&[0]), 1);
    let err = result.unwrap_err();
    match &err {
        DataError::Parse { path, source } => {
            assert!(path.ends_with("images"));
            assert_eq!(
                source,
                &ParseError::BadMagic {
                    what: "IDX ubyte images (3 dimensions)",
                    expected: 0x803,
                    found: 0x801
                }
            );
        }
        other => panic!("unexpected {other}"),
    }
    let text = chain(&err);
    assert!(
        text.contains("images") && text.contains("byte 0") && text.contains("0x00000801"),
        "{text}"
    );
}

#[test]
fn truncated_data_reports_expected_and_actual_bytes() {
    let images = images_bytes(3, 2, 2, &[0; 11]); // 12 announced
    let (_dir, result) = load_pair(&images, &labels_bytes(&[0, 0, 0]), 1);
    match result.unwrap_err() {
        DataError::Parse {
            source:
                ParseError::Truncated {
                    offset,
                    expected,
                    actual,
                    ..
                },
            ..
        } => assert_eq!((offset, expected, actual), (16, 12, 11)),
        other => panic!("unexpected {other}"),
    }
    // A header cut short.
    let err = parse_idx_images(&[0, 0, 8, 3, 0, 0]).unwrap_err();
    assert_eq!(
        err,
        ParseError::Truncated {
            what: "IDX header",
            offset: 0,
            expected: 16,
            actual: 6
        }
    );
    assert!(matches!(
        parse_idx_labels(&[]).unwrap_err(),
        ParseError::Truncated { actual: 0, .. }
    ));
}

#[test]
fn trailing_bytes_are_an_error_not_ignored() {
    let err = parse_idx_labels(&[0, 0, 8, 1, 0, 0, 0, 2, 5, 5, 5]).unwrap_err();
    assert_eq!(
        err,
        ParseError::TrailingBytes {
            expected: 10,
            extra: 1
        }
    );
}

#[test]
fn absurd_header_counts_fail_before_allocating() {
    // 2^31 images of 2^16 × 2^16 pixels in a 100-byte file: the product overflows usize on
    // 32-bit and is 2^63 bytes on 64-bit; either way an error, at once.
    let mut bytes = images_bytes(1 << 31, 1 << 16, 1 << 16, &[0; 84]);
    let err = parse_idx_images(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            ParseError::Truncated { .. } | ParseError::InvalidDimensions { .. }
        ),
        "{err}"
    );
    // All dimensions u32::MAX: the product overflows u64 too.
    bytes[4..16].fill(0xff);
    assert!(matches!(
        parse_idx_images(&bytes).unwrap_err(),
        ParseError::InvalidDimensions { .. }
    ));
    // 2^31 labels in a 100-byte file.
    let mut labels = vec![0, 0, 8, 1, 0x80, 0, 0, 0];
    labels.extend_from_slice(&[0; 92]);
    assert_eq!(
        parse_idx_labels(&labels).unwrap_err(),
        ParseError::Truncated {
            what: "IDX ubyte labels (1 dimension)",
            offset: 8,
            expected: 1 << 31,
            actual: 92
        }
    );
}

#[test]
fn zero_sized_images_are_rejected() {
    let err = parse_idx_images(&images_bytes(2, 0, 28, &[])).unwrap_err();
    assert!(matches!(err, ParseError::InvalidDimensions { .. }), "{err}");
}

#[test]
fn count_mismatch_names_both_files() {
    let images = images_bytes(3, 1, 1, &[1, 2, 3]);
    let (_dir, result) = load_pair(&images, &labels_bytes(&[0, 0]), 1);
    match result.unwrap_err() {
        DataError::CountMismatch {
            images_path,
            images,
            labels_path,
            labels,
        } => {
            assert!(images_path.ends_with("images") && labels_path.ends_with("labels"));
            assert_eq!((images, labels), (3, 2));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn label_out_of_range_names_entry_and_offset() {
    let images = images_bytes(3, 1, 1, &[1, 2, 3]);
    let (_dir, result) = load_pair(&images, &labels_bytes(&[0, 9, 10]), 10);
    let err = result.unwrap_err();
    match &err {
        DataError::Parse {
            path,
            source:
                ParseError::LabelOutOfRange {
                    index,
                    offset,
                    label,
                    num_classes,
                },
        } => {
            assert!(path.ends_with("labels"));
            assert_eq!((*index, *offset, *label, *num_classes), (2, 10, 10, 10));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(chain(&err).contains("byte 10"), "{err}");
}

#[test]
fn corrupt_gzip_is_a_typed_error() {
    let compressed = gzip(&images_bytes(2, 2, 2, &[7; 8]));
    let dir = tempfile::tempdir().unwrap();
    let i = write(dir.path(), "images.gz", &compressed[..compressed.len() / 2]);
    let l = write(dir.path(), "labels", &labels_bytes(&[0, 0]));
    let err = load_idx(&i, &l, names(1)).unwrap_err();
    assert!(
        matches!(err, DataError::Gzip { ref path, .. } if path.ends_with("images.gz")),
        "{err}"
    );
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_idx(
        &dir.path().join("nope"),
        &dir.path().join("nope2"),
        names(1),
    )
    .unwrap_err();
    assert!(
        matches!(err, DataError::Io { ref path, .. } if path.ends_with("nope")),
        "{err}"
    );
}

#[test]
fn written_then_read_round_trip_through_the_fashion_mnist_loader() {
    // Two small "splits" written with the standard names (train compressed, test raw) read back
    // identically through FashionMnist::load with an explicit location.
    let pixels: Vec<u8> = (0..5 * 28 * 28).map(|v| (v % 251) as u8).collect();
    let original = Dataset::new(
        pixels,
        ImageShape::new(28, 28, 1),
        vec![0, 9, 3, 3, 1],
        FashionMnist::CLASS_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
    .unwrap();
    let (images, labels) = encode_idx(&original).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train-images-idx3-ubyte.gz", &gzip(&images));
    write(dir.path(), "train-labels-idx1-ubyte.gz", &gzip(&labels));
    write(dir.path(), "t10k-images-idx3-ubyte", &images);
    write(dir.path(), "t10k-labels-idx1-ubyte", &labels);
    for split in [Split::Train, Split::Test] {
        let read = FashionMnist::load(split, Some(dir.path())).unwrap();
        assert_eq!(read.pixels().unwrap(), original.pixels().unwrap());
        assert_eq!(read.labels(), original.labels());
        assert_eq!(read.class_names(), original.class_names());
    }
}

mod round_trip {
    use proptest::prelude::*;
    use supcon_data::{encode_idx, parse_idx_images, parse_idx_labels, Dataset, ImageShape};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Whatever the sizes, writing then parsing gives back the same pixels and labels.
        #[test]
        fn encode_then_parse_is_the_identity(
            count in 0usize..6,
            height in 1usize..9,
            width in 1usize..9,
            seed in any::<u8>(),
        ) {
            let shape = ImageShape::new(height, width, 1);
            let pixels: Vec<u8> = (0..count * shape.len()).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let labels: Vec<i64> = (0..count as i64).map(|i| (i + i64::from(seed)) % 7).collect();
            let names = (0..7).map(|c| c.to_string()).collect();
            let dataset = Dataset::new(pixels.clone(), shape, labels.clone(), names).unwrap();
            let (image_bytes, label_bytes) = encode_idx(&dataset).unwrap();
            let images = parse_idx_images(&image_bytes).unwrap();
            prop_assert_eq!((images.count, images.height, images.width), (count, height, width));
            prop_assert_eq!(images.pixels, pixels);
            let parsed: Vec<i64> = parse_idx_labels(&label_bytes).unwrap().into_iter().map(i64::from).collect();
            prop_assert_eq!(parsed, labels);
        }
    }
}

/// The error and its causes, `: `-separated (a message names its layer; the cause is its source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        line = format!("{line}: {source}");
        cause = source.source();
    }
    line
}
