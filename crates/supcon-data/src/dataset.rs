//! The one in-memory dataset type every reader produces, with splits, subsets and statistics.
//!
//! # Layout
//!
//! All pixels of all images live in one contiguous `Vec<u8>`. Image `i` occupies bytes
//! `i·(H·W·C) .. (i+1)·(H·W·C)`; inside an image the order is **HWC**, row-major:
//! the byte of row `y`, column `x`, channel `c` is at `(y·W + x)·C + c`. Gray images have
//! `C = 1`, colour images `C = 3` (R, G, B). Values are the raw 0–255 intensities.
//!
//! Labels are `i64` (the type `supcon-loss` takes), always in `0..num_classes`.
//!
//! # Streamed datasets
//!
//! A dataset can also leave its pixels on disk: an [`ImageStore`] (an image folder or tar
//! shards, see [`crate::open_image_folder`] and [`crate::open_shards`]) decodes an image when
//! it is read, so memory holds the file index and the labels, not the images. Every operation
//! works on both kinds; [`Dataset::read_images`] is how a consumer gets pixels from either.
//!
//! An **unlabeled** dataset ([`Dataset::is_labeled`] false) has one pseudo-class, so that its
//! labels stay indices; methods that need labels must check and refuse it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::store::ImageStore;
use crate::DataError;

/// Height, width and channel count of every image of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Rows, in pixels.
    pub height: usize,
    /// Columns, in pixels.
    pub width: usize,
    /// Bytes per pixel, e.g. 1 (gray) or 3 (R, G, B).
    pub channels: usize,
}

impl ImageShape {
    /// A shape from its height, width and channel count (no check; see [`Dataset::new`]).
    pub const fn new(height: usize, width: usize, channels: usize) -> Self {
        Self {
            height,
            width,
            channels,
        }
    }

    /// Bytes per image, `H·W·C`; `None` when it overflows `usize`.
    pub fn checked_len(&self) -> Option<usize> {
        self.height
            .checked_mul(self.width)?
            .checked_mul(self.channels)
    }

    /// Bytes per image, `H·W·C` (saturating at `usize::MAX`; the shapes a [`Dataset`] holds
    /// never get there).
    pub fn len(&self) -> usize {
        self.height
            .saturating_mul(self.width)
            .saturating_mul(self.channels)
    }

    /// True when a side is zero.
    pub fn is_empty(&self) -> bool {
        self.height == 0 || self.width == 0 || self.channels == 0
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{}x{} (HxWxC)",
            self.height, self.width, self.channels
        )
    }
}

/// Which released split a loader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The released training split (torchvision's `train=True`).
    Train,
    /// The released test split (torchvision's `train=False`): evaluation only.
    Test,
}

/// Where a dataset's samples come from; carried through subsets so that a test set cannot be
/// split into train/validation by mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Partition {
    /// A released training split, or the training part of a train/validation split.
    Train,
    /// The validation part of [`Dataset::train_validation_split`].
    Validation,
    /// A released test split: evaluation only.
    Test,
    /// Not known (e.g. an image folder); tag it with [`Dataset::with_partition`].
    #[default]
    Unspecified,
}

impl From<Split> for Partition {
    fn from(split: Split) -> Self {
        match split {
            Split::Train => Partition::Train,
            Split::Test => Partition::Test,
        }
    }
}

/// Per-channel mean and standard deviation in `[0, 1]` units (pixel / 255).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    /// One entry per channel.
    pub mean: Vec<f64>,
    /// Population standard deviation (divides by the count), one entry per channel.
    pub std: Vec<f64>,
    /// Number of values per channel (`images·H·W`).
    pub count: u64,
}

/// Where a dataset's pixels are.
#[derive(Clone, Debug)]
enum Images {
    /// Decoded, contiguous, in dataset order (see the module docs).
    Memory(Vec<u8>),
    /// Decoded when read: image `i` of the dataset is image `ids[i]` of `store`.
    Stored {
        store: Arc<dyn ImageStore>,
        ids: Vec<usize>,
    },
}

impl PartialEq for Images {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Images::Memory(a), Images::Memory(b)) => a == b,
            (Images::Stored { store: a, ids: i }, Images::Stored { store: b, ids: j }) => {
                Arc::ptr_eq(a, b) && i == j
            }
            _ => false,
        }
    }
}

impl Eq for Images {}

/// How many images of each class a labeled subset keeps ([`Dataset::labeled_subset`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LabelQuota {
    /// The same number of every class (`data.labeled_per_class`).
    PerClass(usize),
    /// `round(fraction · count_c)` of class `c`, `fraction` in `(0, 1]`
    /// (`data.labeled_fraction`).
    Fraction(f64),
}

impl LabelQuota {
    /// How many of a class of `available` images the subset keeps.
    pub fn count(self, available: usize) -> usize {
        match self {
            LabelQuota::PerClass(n) => n,
            LabelQuota::Fraction(fraction) => (fraction * available as f64).round() as usize,
        }
    }

    /// The setting that asked for it, for errors.
    pub fn setting(self) -> &'static str {
        match self {
            LabelQuota::PerClass(_) => "data.labeled_per_class",
            LabelQuota::Fraction(_) => "data.labeled_fraction",
        }
    }

    fn check(self) -> Result<(), DataError> {
        match self {
            LabelQuota::Fraction(fraction) if !(fraction > 0.0 && fraction <= 1.0) => {
                Err(DataError::InvalidFraction {
                    what: "data.labeled_fraction",
                    allowed: "(0, 1]",
                    value: fraction,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Images (`u8`, HWC per image, in memory or read from an [`ImageStore`], see the module docs),
/// `i64` labels and class names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    images: Images,
    shape: ImageShape,
    labels: Vec<i64>,
    class_names: Vec<String>,
    partition: Partition,
    labeled: bool,
}

/// The class name of every image of an unlabeled dataset.
pub const UNLABELED_CLASS: &str = "(unlabeled)";

impl Dataset {
    /// Checks that `pixels.len() == labels.len() · shape.len()`, that the shape has no zero
    /// side, and that every label is in `0..class_names.len()`.
    pub fn new(
        pixels: Vec<u8>,
        shape: ImageShape,
        labels: Vec<i64>,
        class_names: Vec<String>,
    ) -> Result<Self, DataError> {
        let per_image = image_len(shape)?;
        let expected = per_image
            .checked_mul(labels.len())
            .ok_or(DataError::InvalidShape {
                shape,
                reason: "count·H·W·C overflows",
            })?;
        if pixels.len() != expected {
            return Err(DataError::PixelCount {
                expected,
                actual: pixels.len(),
                count: labels.len(),
                shape,
            });
        }
        labels_in_range(&labels, class_names.len())?;
        Ok(Self {
            images: Images::Memory(pixels),
            shape,
            labels,
            class_names,
            partition: Partition::Unspecified,
            labeled: true,
        })
    }

    /// A dataset whose images stay in `store` (every one of its images, in its order), each of
    /// `shape`; `labels` (one per image, in `0..class_names.len()`) or `None` for unlabeled
    /// images.
    pub fn stored(
        store: Arc<dyn ImageStore>,
        shape: ImageShape,
        labels: Option<Vec<i64>>,
        class_names: Vec<String>,
    ) -> Result<Self, DataError> {
        let count = store.len();
        let labeled = labels.is_some();
        let (labels, class_names) = match labels {
            Some(labels) => (labels, class_names),
            None => (vec![0; count], vec![UNLABELED_CLASS.to_owned()]),
        };
        if labels.len() != count {
            return Err(DataError::LabelCount {
                images: count,
                labels: labels.len(),
            });
        }
        image_len(shape)?;
        labels_in_range(&labels, class_names.len())?;
        Ok(Self {
            images: Images::Stored {
                store,
                ids: (0..count).collect(),
            },
            shape,
            labels,
            class_names,
            partition: Partition::Unspecified,
            labeled,
        })
    }

    /// False for images without labels (see the module docs).
    pub fn is_labeled(&self) -> bool {
        self.labeled
    }

    /// True when the pixels are in memory; false when they are read from disk on demand.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.images, Images::Memory(_))
    }

    /// The same images decoded into memory (a no-op for an in-memory dataset). Decodes in
    /// parallel, each image straight into its place in the one buffer (peak memory: the
    /// pixels, plus an image per thread); the error reported is the first in dataset order.
    pub fn into_memory(self) -> Result<Dataset, DataError> {
        if self.is_in_memory() {
            return Ok(self);
        }
        let mut pixels = self.pixel_buffer()?;
        let first_error = pixels
            .par_chunks_mut(self.shape.len())
            .enumerate()
            .filter_map(|(index, out)| match self.read_image(index) {
                Ok(image) => {
                    out.copy_from_slice(&image);
                    None
                }
                Err(error) => Some((index, error)),
            })
            .min_by_key(|(index, _)| *index);
        if let Some((_, error)) = first_error {
            return Err(error);
        }
        Ok(Dataset {
            images: Images::Memory(pixels),
            ..self
        })
    }

    /// A zeroed buffer for every image, or an error when this process cannot have it: the
    /// image count and size come from files, and a failed allocation would abort.
    fn pixel_buffer(&self) -> Result<Vec<u8>, DataError> {
        let too_large = || DataError::TooLargeForMemory {
            images: self.len(),
            shape: self.shape,
            bytes: self.len() as u128 * self.shape.len() as u128,
        };
        let bytes = self
            .len()
            .checked_mul(self.shape.len())
            .ok_or_else(too_large)?;
        let mut pixels = Vec::new();
        pixels.try_reserve_exact(bytes).map_err(|_| too_large())?;
        pixels.resize(bytes, 0);
        Ok(pixels)
    }

    /// The dataset without the images that cannot be read (corrupt, truncated, of another
    /// size, unreadable files), and what was wrong with each one left out (in dataset order).
    /// Every image is decoded once (in parallel), so the images left are known good when the
    /// run starts and every rank of a data-parallel run drops the same ones. An in-memory
    /// dataset is returned as it is: its images were decoded when it was read.
    pub fn without_unreadable(self) -> (Dataset, Vec<DataError>) {
        if self.is_in_memory() {
            return (self, Vec::new());
        }
        let checked: Vec<Option<DataError>> = (0..self.len())
            .into_par_iter()
            .map(|i| self.read_image(i).err())
            .collect();
        let mut keep = Vec::with_capacity(self.len());
        let mut unreadable = Vec::new();
        for (index, error) in checked.into_iter().enumerate() {
            match error {
                None => keep.push(index),
                Some(error) => unreadable.push(error),
            }
        }
        if unreadable.is_empty() {
            return (self, unreadable);
        }
        (self.subset_unchecked(&keep), unreadable)
    }

    /// The files a stored dataset's images are read from (its store's, all of them: a split
    /// shares its parent's); empty for images in memory.
    pub fn source_files(&self) -> &[std::path::PathBuf] {
        match &self.images {
            Images::Memory(_) => &[],
            Images::Stored { store, .. } => store.files(),
        }
    }

    /// The images of each shard of a sharded dataset, as runs of consecutive indices (in
    /// dataset order); `None` when the images are not read from shards.
    pub fn shard_runs(&self) -> Option<Vec<std::ops::Range<usize>>> {
        let Images::Stored { store, ids } = &self.images else {
            return None;
        };
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        let mut previous = None;
        for (index, &id) in ids.iter().enumerate() {
            let shard = store.shard_of(id)?;
            match runs.last_mut() {
                Some(run) if previous == Some(shard) => run.end = index + 1,
                _ => runs.push(index..index + 1),
            }
            previous = Some(shard);
        }
        Some(runs)
    }

    /// The same dataset tagged with `partition`.
    pub fn with_partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self
    }

    /// Where the samples come from ([`Partition::Unspecified`] unless tagged).
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape every image has.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }

    /// Number of classes (of class names), whether or not each has a sample.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The class names, indexed by label.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// All labels, one per image, each in `0..num_classes`.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// All pixels, image after image, HWC inside each image; `None` for a streamed dataset
    /// (see [`Dataset::into_memory`]).
    pub fn pixels(&self) -> Option<&[u8]> {
        match &self.images {
            Images::Memory(pixels) => Some(pixels),
            Images::Stored { .. } => None,
        }
    }

    /// Image `index` as `H·W·C` bytes in HWC order: borrowed from memory, or read and decoded
    /// from the store.
    pub fn read_image(&self, index: usize) -> Result<Cow<'_, [u8]>, DataError> {
        let len = self.len();
        if index >= len {
            return Err(DataError::IndexOutOfRange { index, len });
        }
        match &self.images {
            Images::Memory(pixels) => {
                let n = self.shape.len();
                Ok(Cow::Borrowed(&pixels[index * n..(index + 1) * n]))
            }
            Images::Stored { store, ids } => {
                let bytes = store.read(ids[index])?;
                if bytes.len() != self.shape.len() {
                    return Err(DataError::WrongImageSize {
                        source_name: store.describe(ids[index]),
                        expected: self.shape,
                        bytes: bytes.len(),
                    });
                }
                Ok(Cow::Owned(bytes))
            }
        }
    }

    /// The images at `indices`, in that order: [`Dataset::read_image`] of each, decoded in
    /// parallel (rayon's pool) for a streamed dataset. The error reported is the first in
    /// `indices` order, whatever the thread scheduling.
    pub fn read_images(&self, indices: &[usize]) -> Result<Vec<Cow<'_, [u8]>>, DataError> {
        if self.is_in_memory() {
            return indices.iter().map(|&i| self.read_image(i)).collect();
        }
        let read: Vec<Result<Cow<'_, [u8]>, DataError>> =
            indices.par_iter().map(|&i| self.read_image(i)).collect();
        read.into_iter().collect()
    }

    /// Label of image `index`. Panics when `index >= len()`.
    pub fn label(&self, index: usize) -> i64 {
        self.labels[index]
    }

    /// Images with their labels, in order (read one after the other for a streamed dataset).
    pub fn iter(
        &self,
    ) -> impl ExactSizeIterator<Item = Result<(Cow<'_, [u8]>, i64), DataError>> + '_ {
        (0..self.len()).map(|i| Ok((self.read_image(i)?, self.labels[i])))
    }

    /// Number of images of each class, indexed by class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// Indices of each class's images, in dataset order, indexed by class.
    pub fn indices_by_class(&self) -> Vec<Vec<usize>> {
        let mut by_class = vec![Vec::new(); self.num_classes()];
        for (index, &label) in self.labels.iter().enumerate() {
            by_class[label as usize].push(index);
        }
        by_class
    }

    /// The images at `indices`, in that order (repeats allowed), with the same class names
    /// and partition tag.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        let len = self.len();
        if let Some(&index) = indices.iter().find(|&&i| i >= len) {
            return Err(DataError::IndexOutOfRange { index, len });
        }
        Ok(self.subset_unchecked(indices))
    }

    /// The first `n` images of each class (all of a class's images when it has fewer), in
    /// dataset order: a small, class-balanced, deterministic subset for quick runs.
    pub fn first_per_class(&self, n: usize) -> Dataset {
        let mut taken = vec![0usize; self.num_classes()];
        let indices: Vec<usize> = (0..self.len())
            .filter(|&i| {
                let class = self.labels[i] as usize;
                let keep = taken[class] < n;
                taken[class] += usize::from(keep);
                keep
            })
            .collect();
        self.subset_unchecked(&indices)
    }

    /// The first `round(fraction · count_c)` images of each class `c`, in dataset order.
    /// `fraction` must be in `(0, 1]`.
    pub fn fraction_per_class(&self, fraction: f64) -> Result<Dataset, DataError> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(DataError::InvalidFraction {
                what: "subset fraction",
                allowed: "(0, 1]",
                value: fraction,
            });
        }
        let quota: Vec<usize> = self
            .class_counts()
            .iter()
            .map(|&count| (fraction * count as f64).round() as usize)
            .collect();
        let mut taken = vec![0usize; self.num_classes()];
        let indices: Vec<usize> = (0..self.len())
            .filter(|&i| {
                let class = self.labels[i] as usize;
                let keep = taken[class] < quota[class];
                taken[class] += usize::from(keep);
                keep
            })
            .collect();
        Ok(self.subset_unchecked(&indices))
    }

    /// The indices of a seeded, class-balanced labeled subset (few-label training: the other
    /// images keep their pixels but lose their labels), sorted.
    ///
    /// Each class `c` keeps [`LabelQuota::count`] of its images, chosen by a ChaCha8 generator
    /// seeded with `seed` alone (one shuffle per class, in class order), so the same dataset and
    /// seed give the same subset on every machine. Refused: a dataset without labels, a
    /// fraction outside `(0, 1]`, more images than a class has, a class left with none.
    pub fn labeled_subset(&self, quota: LabelQuota, seed: u64) -> Result<Vec<usize>, DataError> {
        if !self.is_labeled() {
            return Err(DataError::NoLabels {
                what: "a labeled subset (data.labeled_per_class, data.labeled_fraction)",
            });
        }
        quota.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut chosen = Vec::new();
        for (class, mut indices) in self.indices_by_class().into_iter().enumerate() {
            let name = || self.class_names[class].clone();
            let available = indices.len();
            let wanted = quota.count(available);
            if wanted > available {
                return Err(DataError::TooFewInClass {
                    what: quota.setting(),
                    class,
                    name: name(),
                    wanted,
                    available,
                });
            }
            if wanted == 0 {
                return Err(DataError::ClassWithoutLabel {
                    what: quota.setting(),
                    class,
                    name: name(),
                    available,
                });
            }
            indices.shuffle(&mut rng);
            chosen.extend_from_slice(&indices[..wanted]);
        }
        chosen.sort_unstable();
        Ok(chosen)
    }

    /// A seeded, stratified split into `(train, validation)`.
    ///
    /// Guarantees: the two parts are disjoint and together hold every image exactly once;
    /// each class `c` with `count_c` images puts `round(validation_fraction · count_c)` of
    /// them in validation, clamped to `1..=count_c − 1` when `count_c ≥ 2` (so every class with
    /// two images or more is seen by both parts); which ones is decided by a ChaCha8 generator
    /// seeded with `seed` alone, so the same dataset and seed give the same split on every
    /// machine and thread count; both parts keep the dataset's order. The parts are tagged
    /// [`Partition::Train`] and [`Partition::Validation`].
    ///
    /// Splitting a dataset tagged [`Partition::Test`] is refused ([`DataError::SplitOfTestSet`]):
    /// model selection must never look at the test set.
    pub fn train_validation_split(
        &self,
        validation_fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset), DataError> {
        if self.partition == Partition::Test {
            return Err(DataError::SplitOfTestSet);
        }
        if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
            return Err(DataError::InvalidFraction {
                what: "validation fraction",
                allowed: "(0, 1)",
                value: validation_fraction,
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut train = Vec::with_capacity(self.len());
        let mut validation = Vec::new();
        for mut indices in self.indices_by_class() {
            let count = indices.len();
            let mut n_validation = (validation_fraction * count as f64).round() as usize;
            if count >= 2 {
                n_validation = n_validation.clamp(1, count - 1);
            }
            indices.shuffle(&mut rng);
            validation.extend_from_slice(&indices[..n_validation]);
            train.extend_from_slice(&indices[n_validation..]);
        }
        train.sort_unstable();
        validation.sort_unstable();
        let train = self
            .subset_unchecked(&train)
            .with_partition(Partition::Train);
        let validation = self
            .subset_unchecked(&validation)
            .with_partition(Partition::Validation);
        Ok((train, validation))
    }

    /// Per-channel mean and (population) standard deviation in `[0, 1]` units.
    ///
    /// Exact: a 256-bin histogram per channel (in parallel over images), then `f64` sums. A
    /// streamed dataset decodes every image once; measure a [`Dataset::sample`] of a large one.
    pub fn channel_stats(&self) -> Result<ChannelStats, DataError> {
        if self.is_empty() {
            return Err(DataError::EmptyDataset {
                what: "channel statistics",
            });
        }
        let channels = self.shape.channels;
        let histograms = match &self.images {
            // Chunks of whole images, large enough to amortise a histogram per chunk.
            Images::Memory(pixels) => pixels
                .par_chunks(self.shape.len() * 256)
                .map(|part| Ok(channel_histograms(part, channels)))
                .try_reduce(|| vec![[0u64; 256]; channels], add_histograms),
            Images::Stored { .. } => (0..self.len())
                .into_par_iter()
                .map(|i| Ok(channel_histograms(&self.read_image(i)?, channels)))
                .try_reduce(|| vec![[0u64; 256]; channels], add_histograms),
        }?;
        let count = (self.len() * self.shape.height * self.shape.width) as u64;
        let mut mean = Vec::with_capacity(channels);
        let mut std = Vec::with_capacity(channels);
        for histogram in &histograms {
            let m = histogram
                .iter()
                .enumerate()
                .map(|(v, &k)| v as f64 / 255.0 * k as f64)
                .sum::<f64>()
                / count as f64;
            let variance = histogram
                .iter()
                .enumerate()
                .map(|(v, &k)| {
                    let d = v as f64 / 255.0 - m;
                    d * d * k as f64
                })
                .sum::<f64>()
                / count as f64;
            mean.push(m);
            std.push(variance.sqrt());
        }
        Ok(ChannelStats { mean, std, count })
    }

    /// `count` images drawn without replacement by a ChaCha8 generator seeded with `seed`, in
    /// dataset order; the whole dataset when it has `count` images or fewer.
    pub fn sample(&self, count: usize, seed: u64) -> Dataset {
        if count >= self.len() {
            return self.clone();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut indices = rand::seq::index::sample(&mut rng, self.len(), count).into_vec();
        indices.sort_unstable();
        self.subset_unchecked(&indices)
    }

    /// [`Dataset::subset`] for indices known to be in range.
    fn subset_unchecked(&self, indices: &[usize]) -> Dataset {
        let images = match &self.images {
            Images::Memory(pixels) => {
                let n = self.shape.len();
                let mut subset = Vec::with_capacity(indices.len() * n);
                for &i in indices {
                    subset.extend_from_slice(&pixels[i * n..(i + 1) * n]);
                }
                Images::Memory(subset)
            }
            Images::Stored { store, ids } => Images::Stored {
                store: Arc::clone(store),
                ids: indices.iter().map(|&i| ids[i]).collect(),
            },
        };
        Dataset {
            images,
            shape: self.shape,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
            partition: self.partition,
            labeled: self.labeled,
        }
    }
}

/// Bytes per image of `shape`, refusing a zero side or an overflowing size.
fn image_len(shape: ImageShape) -> Result<usize, DataError> {
    match shape.checked_len() {
        None => Err(DataError::InvalidShape {
            shape,
            reason: "H·W·C overflows",
        }),
        Some(0) => Err(DataError::InvalidShape {
            shape,
            reason: "a side is zero",
        }),
        Some(len) => Ok(len),
    }
}

/// Every label in `0..num_classes`, or the first that is not.
fn labels_in_range(labels: &[i64], num_classes: usize) -> Result<(), DataError> {
    match labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as u64 >= num_classes as u64)
    {
        Some((index, &label)) => Err(DataError::LabelOutOfRange {
            index,
            label,
            num_classes,
        }),
        None => Ok(()),
    }
}

/// A 256-bin histogram of each channel of HWC `bytes`.
fn channel_histograms(bytes: &[u8], channels: usize) -> Vec<[u64; 256]> {
    let mut histogram = vec![[0u64; 256]; channels];
    for (c, channel_histogram) in histogram.iter_mut().enumerate() {
        for &value in bytes.iter().skip(c).step_by(channels) {
            channel_histogram[value as usize] += 1;
        }
    }
    histogram
}

fn add_histograms(
    mut a: Vec<[u64; 256]>,
    b: Vec<[u64; 256]>,
) -> Result<Vec<[u64; 256]>, DataError> {
    for (ha, hb) in a.iter_mut().zip(&b) {
        for (x, y) in ha.iter_mut().zip(hb) {
            *x += y;
        }
    }
    Ok(a)
}
