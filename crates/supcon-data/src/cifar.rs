//! CIFAR-10 and CIFAR-100 binary batches.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` … `data_batch_5.bin` (train, 10 000
//! records each) and `test_batch.bin`; a record is 1 label byte then 3 072 pixel bytes.
//! CIFAR-100 (`cifar-100-binary/`): `train.bin` (50 000) and `test.bin` (10 000); a record is a
//! coarse label byte (20 super-classes), a fine label byte (100 classes), then 3 072 pixel
//! bytes. The pixels are stored *planar* — the 1 024 red values of the 32×32 image row-major,
//! then green, then blue — and the readers turn them into the crate's HWC layout.
//!
//! Class names come from `batches.meta.txt` (CIFAR-10) or `fine_label_names.txt` /
//! `coarse_label_names.txt` (CIFAR-100) when present, else from the standard lists built in.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::files::open_regular_file;
use crate::location::{resolve_dataset_dir, DatasetFiles};
use crate::{read_maybe_gzip, DataError, Dataset, ImageShape, ParseError, Partition, Split};

/// Side of a CIFAR image.
pub const CIFAR_SIDE: usize = 32;
/// Pixel bytes of one CIFAR image (`32·32·3`).
pub const CIFAR_IMAGE_BYTES: usize = CIFAR_SIDE * CIFAR_SIDE * 3;
/// Bytes of one CIFAR-10 record: label, pixels.
pub const CIFAR10_RECORD_BYTES: usize = 1 + CIFAR_IMAGE_BYTES;
/// Bytes of one CIFAR-100 record: coarse label, fine label, pixels.
pub const CIFAR100_RECORD_BYTES: usize = 2 + CIFAR_IMAGE_BYTES;

/// The CIFAR-10 classes, in label order (as in `batches.meta.txt`).
pub const CIFAR10_CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The 100 CIFAR-100 fine classes, in label order (as in `fine_label_names.txt`).
pub const CIFAR100_FINE_NAMES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// The 20 CIFAR-100 super-classes, in label order (as in `coarse_label_names.txt`).
pub const CIFAR100_COARSE_NAMES: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// A parsed CIFAR-10 batch: HWC pixels (`count·32·32·3` bytes) and labels in `0..10`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cifar10Batch {
    /// All images, HWC, one after the other: `labels.len() × 3 072` bytes.
    pub pixels: Vec<u8>,
    /// One label per image, in `0..10` (index into [`CIFAR10_CLASS_NAMES`]).
    pub labels: Vec<i64>,
}

/// A parsed CIFAR-100 batch: HWC pixels and both labels of every image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cifar100Batch {
    /// All images, HWC, one after the other: `count × 3 072` bytes.
    pub pixels: Vec<u8>,
    /// Super-class labels in `0..20`.
    pub coarse_labels: Vec<i64>,
    /// Class labels in `0..100`.
    pub fine_labels: Vec<i64>,
}

/// Which CIFAR-100 label becomes the dataset's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Cifar100Label {
    /// The 100 classes (what "CIFAR-100 accuracy" usually means).
    #[default]
    Fine,
    /// The 20 super-classes.
    Coarse,
}

/// Splits `bytes` into records of `record_len`, after checking there is a whole number of them.
fn records<'a>(
    bytes: &'a [u8],
    record_len: usize,
    what: &'static str,
) -> Result<std::slice::ChunksExact<'a, u8>, ParseError> {
    if bytes.is_empty() {
        return Err(ParseError::Empty { what });
    }
    let remainder = bytes.len() % record_len;
    if remainder != 0 {
        let whole = bytes.len() / record_len;
        return Err(ParseError::Truncated {
            what,
            offset: whole * record_len,
            expected: record_len,
            actual: remainder,
        });
    }
    Ok(bytes.chunks_exact(record_len))
}

/// Appends a planar (RRR…GGG…BBB…) 32×32 image to `out` in HWC order.
fn planar_to_hwc(planar: &[u8], out: &mut Vec<u8>) {
    let plane = CIFAR_SIDE * CIFAR_SIDE;
    let (red, rest) = planar.split_at(plane);
    let (green, blue) = rest.split_at(plane);
    for ((&r, &g), &b) in red.iter().zip(green).zip(blue) {
        out.extend_from_slice(&[r, g, b]);
    }
}

/// Appends an HWC 32×32×3 image to `out` in planar order.
fn hwc_to_planar(hwc: &[u8], out: &mut Vec<u8>) {
    for channel in 0..3 {
        out.extend(hwc.iter().skip(channel).step_by(3));
    }
}

fn check_label(
    label: u8,
    num_classes: usize,
    index: usize,
    offset: usize,
) -> Result<i64, ParseError> {
    if usize::from(label) < num_classes {
        Ok(i64::from(label))
    } else {
        Err(ParseError::LabelOutOfRange {
            index,
            offset,
            label: u64::from(label),
            num_classes,
        })
    }
}

/// Parses a CIFAR-10 binary batch (a whole number of 3 073-byte records; not empty).
pub fn parse_cifar10(bytes: &[u8]) -> Result<Cifar10Batch, ParseError> {
    let records = records(bytes, CIFAR10_RECORD_BYTES, "CIFAR-10 record")?;
    let count = records.len();
    let mut pixels = Vec::with_capacity(count * CIFAR_IMAGE_BYTES);
    let mut labels = Vec::with_capacity(count);
    for (index, record) in records.enumerate() {
        let offset = index * CIFAR10_RECORD_BYTES;
        labels.push(check_label(record[0], 10, index, offset)?);
        planar_to_hwc(&record[1..], &mut pixels);
    }
    Ok(Cifar10Batch { pixels, labels })
}

/// Parses a CIFAR-100 binary batch (a whole number of 3 074-byte records; not empty).
pub fn parse_cifar100(bytes: &[u8]) -> Result<Cifar100Batch, ParseError> {
    let records = records(bytes, CIFAR100_RECORD_BYTES, "CIFAR-100 record")?;
    let count = records.len();
    let mut pixels = Vec::with_capacity(count * CIFAR_IMAGE_BYTES);
    let mut coarse_labels = Vec::with_capacity(count);
    let mut fine_labels = Vec::with_capacity(count);
    for (index, record) in records.enumerate() {
        let offset = index * CIFAR100_RECORD_BYTES;
        coarse_labels.push(check_label(record[0], 20, index, offset)?);
        fine_labels.push(check_label(record[1], 100, index, offset + 1)?);
        planar_to_hwc(&record[2..], &mut pixels);
    }
    Ok(Cifar100Batch {
        pixels,
        coarse_labels,
        fine_labels,
    })
}

fn encode_error(format: &'static str, reason: String) -> DataError {
    DataError::Encode { format, reason }
}

fn check_cifar_shape(dataset: &Dataset, format: &'static str) -> Result<(), DataError> {
    let expected = ImageShape::new(CIFAR_SIDE, CIFAR_SIDE, 3);
    if dataset.shape() != expected {
        return Err(encode_error(
            format,
            format!("images must be {expected}, not {}", dataset.shape()),
        ));
    }
    Ok(())
}

/// Writes a dataset of 32×32×3 images with labels in `0..10` as a CIFAR-10 binary batch; the
/// inverse of [`parse_cifar10`].
pub fn encode_cifar10(dataset: &Dataset) -> Result<Vec<u8>, DataError> {
    check_cifar_shape(dataset, "CIFAR-10")?;
    let mut out = Vec::with_capacity(dataset.len() * CIFAR10_RECORD_BYTES);
    for (index, sample) in dataset.iter().enumerate() {
        let (image, label) = sample?;
        if !(0..10).contains(&label) {
            return Err(encode_error(
                "CIFAR-10",
                format!("label {label} of sample {index} is not in 0..10"),
            ));
        }
        out.push(label as u8);
        hwc_to_planar(&image, &mut out);
    }
    Ok(out)
}

/// Writes a dataset of 32×32×3 images whose labels are the *fine* labels (`0..100`), with the
/// given coarse labels (`0..20`, one per image), as a CIFAR-100 binary batch; the inverse of
/// [`parse_cifar100`].
pub fn encode_cifar100(dataset: &Dataset, coarse_labels: &[i64]) -> Result<Vec<u8>, DataError> {
    check_cifar_shape(dataset, "CIFAR-100")?;
    if coarse_labels.len() != dataset.len() {
        return Err(encode_error(
            "CIFAR-100",
            format!(
                "{} coarse labels for {} images",
                coarse_labels.len(),
                dataset.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(dataset.len() * CIFAR100_RECORD_BYTES);
    for (index, (sample, &coarse)) in dataset.iter().zip(coarse_labels).enumerate() {
        let (image, fine) = sample?;
        if !(0..20).contains(&coarse) || !(0..100).contains(&fine) {
            return Err(encode_error(
                "CIFAR-100",
                format!(
                    "sample {index}: coarse {coarse} not in 0..20 or fine {fine} not in 0..100"
                ),
            ));
        }
        out.push(coarse as u8);
        out.push(fine as u8);
        hwc_to_planar(&image, &mut out);
    }
    Ok(out)
}

/// Class names from a one-name-per-line file (blank lines ignored) when it exists, else the
/// built-in list. A file with the wrong number of names is an error, not a silent fallback.
fn class_names(path: &Path, builtin: &[&str]) -> Result<Vec<String>, DataError> {
    if !path.exists() {
        return Ok(builtin.iter().map(|&s| s.to_owned()).collect());
    }
    let mut text = String::new();
    open_regular_file(path)?
        .read_to_string(&mut text)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() != builtin.len() {
        return Err(DataError::ClassNames {
            path: path.to_path_buf(),
            expected: builtin.len(),
            found: names.len(),
        });
    }
    Ok(names)
}

fn parse_file<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
) -> Result<T, DataError> {
    let bytes = read_maybe_gzip(path)?;
    parse(&bytes).map_err(|source| DataError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// CIFAR-10 from its binary distribution.
pub struct Cifar10;

impl Cifar10 {
    /// Batch files of the training split.
    pub const TRAIN_FILES: [&'static str; 5] = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ];
    /// Batch file of the test split.
    pub const TEST_FILES: [&'static str; 1] = ["test_batch.bin"];
    /// The folder the archive `cifar-10-binary.tar.gz` extracts to.
    pub const FOLDER: &'static str = "cifar-10-batches-bin";

    fn files(split: Split) -> &'static [&'static str] {
        match split {
            Split::Train => &Self::TRAIN_FILES,
            Split::Test => &Self::TEST_FILES,
        }
    }

    fn dataset_files() -> DatasetFiles {
        DatasetFiles {
            dataset: "CIFAR-10",
            subfolders: &[Self::FOLDER, "cifar-10", "cifar10"],
            required: &["test_batch.bin"],
            system_dir: None,
            hint: "download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, extract \
                   it, and pass --data PATH or set SUPCON_DATA to the folder that holds \
                   cifar-10-batches-bin/",
        }
    }

    /// Finds the data (`location`, then `$SUPCON_DATA`; each also tried with the subfolder
    /// `cifar-10-batches-bin`) and reads `split`.
    pub fn load(split: Split, location: Option<&Path>) -> Result<Dataset, DataError> {
        let dir = resolve_dataset_dir(&Self::dataset_files(), location)?;
        Self::load_dir(&dir, split)
    }

    /// Reads `split` from a folder that holds the batch files.
    pub fn load_dir(dir: &Path, split: Split) -> Result<Dataset, DataError> {
        let names = class_names(&dir.join("batches.meta.txt"), &CIFAR10_CLASS_NAMES)?;
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for file in Self::files(split) {
            let batch = parse_file(&dir.join(file), parse_cifar10)?;
            pixels.extend_from_slice(&batch.pixels);
            labels.extend_from_slice(&batch.labels);
        }
        tracing::debug!(images = labels.len(), dir = %dir.display(), "read CIFAR-10");
        Ok(Dataset::new(
            pixels,
            ImageShape::new(CIFAR_SIDE, CIFAR_SIDE, 3),
            labels,
            names,
        )?
        .with_partition(Partition::from(split)))
    }
}

/// CIFAR-100 from its binary distribution.
pub struct Cifar100;

impl Cifar100 {
    /// The folder the archive `cifar-100-binary.tar.gz` extracts to.
    pub const FOLDER: &'static str = "cifar-100-binary";

    fn file(split: Split) -> &'static str {
        match split {
            Split::Train => "train.bin",
            Split::Test => "test.bin",
        }
    }

    fn dataset_files() -> DatasetFiles {
        DatasetFiles {
            dataset: "CIFAR-100",
            subfolders: &[Self::FOLDER, "cifar-100", "cifar100"],
            required: &["test.bin"],
            system_dir: None,
            hint: "download https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz, extract \
                   it, and pass --data PATH or set SUPCON_DATA to the folder that holds \
                   cifar-100-binary/",
        }
    }

    /// Finds the data (`location`, then `$SUPCON_DATA`; each also tried with the subfolder
    /// `cifar-100-binary`) and reads `split` with `label` as the target.
    pub fn load(
        split: Split,
        label: Cifar100Label,
        location: Option<&Path>,
    ) -> Result<Dataset, DataError> {
        let dir = resolve_dataset_dir(&Self::dataset_files(), location)?;
        Self::load_dir(&dir, split, label)
    }

    /// Reads `split` from a folder that holds `train.bin` / `test.bin`.
    pub fn load_dir(dir: &Path, split: Split, label: Cifar100Label) -> Result<Dataset, DataError> {
        let (names_file, builtin): (PathBuf, &[&str]) = match label {
            Cifar100Label::Fine => (dir.join("fine_label_names.txt"), &CIFAR100_FINE_NAMES),
            Cifar100Label::Coarse => (dir.join("coarse_label_names.txt"), &CIFAR100_COARSE_NAMES),
        };
        let names = class_names(&names_file, builtin)?;
        let batch = parse_file(&dir.join(Self::file(split)), parse_cifar100)?;
        let labels = match label {
            Cifar100Label::Fine => batch.fine_labels,
            Cifar100Label::Coarse => batch.coarse_labels,
        };
        tracing::debug!(images = labels.len(), dir = %dir.display(), "read CIFAR-100");
        Ok(Dataset::new(
            batch.pixels,
            ImageShape::new(CIFAR_SIDE, CIFAR_SIDE, 3),
            labels,
            names,
        )?
        .with_partition(Partition::from(split)))
    }
}
