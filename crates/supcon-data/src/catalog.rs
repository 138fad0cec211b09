//! The datasets by name, for command lines: `"fashion-mnist"`, `"mnist"`, `"cifar10"`,
//! `"cifar100"` (fine labels), `"cifar100-coarse"`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::{Cifar10, Cifar100, Cifar100Label, DataError, Dataset, FashionMnist, Mnist, Split};

/// A dataset this crate can find and load by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetName {
    /// Fashion-MNIST (`"fashion-mnist"`): 28×28 gray clothing images, 10 classes.
    FashionMnist,
    /// MNIST (`"mnist"`): 28×28 gray handwritten digits, 10 classes.
    Mnist,
    /// CIFAR-10 (`"cifar10"`): 32×32 colour images, 10 classes.
    Cifar10,
    /// CIFAR-100 with the 100 fine labels as target.
    Cifar100,
    /// CIFAR-100 with the 20 coarse labels as target.
    Cifar100Coarse,
}

impl DatasetName {
    /// Every name, in the order `--help` texts list them.
    pub const ALL: [DatasetName; 5] = [
        DatasetName::FashionMnist,
        DatasetName::Mnist,
        DatasetName::Cifar10,
        DatasetName::Cifar100,
        DatasetName::Cifar100Coarse,
    ];

    /// The name [`FromStr`] accepts and [`fmt::Display`] prints.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Mnist => "mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Cifar100Coarse => "cifar100-coarse",
        }
    }

    /// Finds the data (`location`, then `$SUPCON_DATA`, then a system folder where there is
    /// one) and reads `split`.
    pub fn load(self, split: Split, location: Option<&Path>) -> Result<Dataset, DataError> {
        match self {
            DatasetName::FashionMnist => FashionMnist::load(split, location),
            DatasetName::Mnist => Mnist::load(split, location),
            DatasetName::Cifar10 => Cifar10::load(split, location),
            DatasetName::Cifar100 => Cifar100::load(split, Cifar100Label::Fine, location),
            DatasetName::Cifar100Coarse => Cifar100::load(split, Cifar100Label::Coarse, location),
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = DataError;

    /// Case-insensitive; `_` and `-` are interchangeable, and `cifar-10` / `fashion_mnist`
    /// style spellings are accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let canonical: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect();
        DatasetName::ALL
            .into_iter()
            .find(|name| name.as_str().replace('-', "") == canonical)
            .ok_or_else(|| DataError::UnknownDataset {
                name: s.to_owned(),
                known: DatasetName::ALL.iter().map(|n| n.as_str()).collect(),
            })
    }
}
