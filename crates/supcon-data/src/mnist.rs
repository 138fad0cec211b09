//! Fashion-MNIST and MNIST: the four IDX files, found by [`crate::location`].

use std::path::{Path, PathBuf};

use crate::location::{find_file, resolve_dataset_dir, resolve_dataset_dir_with, DatasetFiles};
use crate::{load_idx, DataError, Dataset, Partition, Split};

/// The IDX file names shared by MNIST and Fashion-MNIST: `(images, labels)` of a split.
pub fn idx_file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Reads `split` from a folder that holds the IDX files (each `.gz` or not).
fn load_split(
    dir: &Path,
    split: Split,
    class_names: &[&str],
    dataset: &'static str,
) -> Result<Dataset, DataError> {
    let (images, labels) = idx_file_names(split);
    let locate = |name: &str| {
        find_file(dir, name).ok_or_else(|| DataError::NotFound {
            dataset,
            missing: vec![format!("{name}[.gz]")],
            tried: vec![dir.to_path_buf()],
            hint: "the folder must hold the four IDX files".to_owned(),
        })
    };
    let (images, labels) = (locate(images)?, locate(labels)?);
    Ok(load_idx(
        &images,
        &labels,
        class_names.iter().map(|&s| s.to_owned()).collect(),
    )?
    .with_partition(Partition::from(split)))
}

/// Fashion-MNIST (Zalando): 60 000 train and 10 000 test gray 28×28 images, 10 classes.
pub struct FashionMnist;

impl FashionMnist {
    /// The classes, in label order.
    pub const CLASS_NAMES: [&'static str; 10] = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ];
    /// Where Debian's `dataset-fashion-mnist` package installs the files.
    pub const DEBIAN_DIR: &'static str = "/usr/share/datasets/fashion-mnist";

    /// How the data is found and what to say when it is not.
    pub fn files() -> DatasetFiles {
        DatasetFiles {
            dataset: "Fashion-MNIST",
            subfolders: &["fashion-mnist", "fashion_mnist", "FashionMNIST"],
            required: &IDX_FILES,
            system_dir: Some(Self::DEBIAN_DIR),
            hint: "install it with `apt-get install dataset-fashion-mnist` (files in \
                   /usr/share/datasets/fashion-mnist/), or pass --data PATH or set SUPCON_DATA \
                   to a folder holding the four IDX files",
        }
    }

    /// The folder [`FashionMnist::load`] reads: `location` when given, else `$SUPCON_DATA`
    /// (or a `fashion-mnist` sub-folder of it), else Debian's folder.
    pub fn locate(location: Option<&Path>) -> Result<PathBuf, DataError> {
        resolve_dataset_dir(&Self::files(), location)
    }

    /// Reads `split`, finding the files as [`FashionMnist::locate`] does.
    pub fn load(split: Split, location: Option<&Path>) -> Result<Dataset, DataError> {
        Self::load_dir(&Self::locate(location)?, split)
    }

    /// Reads `split` from a folder that holds the IDX files.
    pub fn load_dir(dir: &Path, split: Split) -> Result<Dataset, DataError> {
        load_split(dir, split, &Self::CLASS_NAMES, "Fashion-MNIST")
    }

    /// [`FashionMnist::locate`] with a given `$SUPCON_DATA` value, for callers (and tests) that
    /// manage the environment themselves.
    pub fn locate_with_env(
        location: Option<&Path>,
        env_value: Option<&std::ffi::OsStr>,
    ) -> Result<PathBuf, DataError> {
        resolve_dataset_dir_with(&Self::files(), location, env_value)
    }
}

/// MNIST digits: same files and format as Fashion-MNIST, classes `"0"` … `"9"`.
pub struct Mnist;

impl Mnist {
    /// The classes, in label order.
    pub const CLASS_NAMES: [&'static str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

    /// How the data is found and what to say when it is not.
    pub fn files() -> DatasetFiles {
        DatasetFiles {
            dataset: "MNIST",
            subfolders: &["mnist", "MNIST"],
            required: &IDX_FILES,
            system_dir: None,
            hint: "put the four MNIST IDX files (train-images-idx3-ubyte.gz, …) in a folder and \
                   pass --data PATH or set SUPCON_DATA to it",
        }
    }

    /// Reads `split`: `location` when given, else `$SUPCON_DATA` (or an `mnist` sub-folder).
    pub fn load(split: Split, location: Option<&Path>) -> Result<Dataset, DataError> {
        Self::load_dir(&resolve_dataset_dir(&Self::files(), location)?, split)
    }

    /// Reads `split` from a folder that holds the IDX files.
    pub fn load_dir(dir: &Path, split: Split) -> Result<Dataset, DataError> {
        load_split(dir, split, &Self::CLASS_NAMES, "MNIST")
    }
}
