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

use std::fmt;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

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

/// Images (`u8`, contiguous HWC per image, see the module docs), `i64` labels and class names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pixels: Vec<u8>,
    shape: ImageShape,
    labels: Vec<i64>,
    class_names: Vec<String>,
    partition: Partition,
}

impl Dataset {
    /// Checks that `pixels.len() == labels.len() · shape.len()`, that the shape has no zero
    /// side, and that every label is in `0..class_names.len()`.
    pub fn new(
        pixels: Vec<u8>,
        shape: ImageShape,
        labels: Vec<i64>,
        class_names: Vec<String>,
    ) -> Result<Self, DataError> {
        let per_image = shape.checked_len().ok_or(DataError::InvalidShape {
            shape,
            reason: "H·W·C overflows",
        })?;
        if per_image == 0 {
            return Err(DataError::InvalidShape {
                shape,
                reason: "a side is zero",
            });
        }
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
        let num_classes = class_names.len();
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 0 || l as u64 >= num_classes as u64)
        {
            return Err(DataError::LabelOutOfRange {
                index,
                label,
                num_classes,
            });
        }
        Ok(Self {
            pixels,
            shape,
            labels,
            class_names,
            partition: Partition::Unspecified,
        })
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

    /// All pixels, image after image, HWC inside each image.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Image `index` as `H·W·C` bytes in HWC order. Panics when `index >= len()`, like slice
    /// indexing; use [`Dataset::get`] for a checked access.
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.shape.len();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Label of image `index`. Panics when `index >= len()`.
    pub fn label(&self, index: usize) -> i64 {
        self.labels[index]
    }

    /// Image and label `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<(&[u8], i64)> {
        (index < self.len()).then(|| (self.image(index), self.labels[index]))
    }

    /// Images with their labels, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], i64)> + '_ {
        self.pixels
            .chunks_exact(self.shape.len())
            .zip(self.labels.iter().copied())
    }

    /// Takes the dataset apart: `(pixels, shape, labels, class_names)`.
    pub fn into_parts(self) -> (Vec<u8>, ImageShape, Vec<i64>, Vec<String>) {
        (self.pixels, self.shape, self.labels, self.class_names)
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
    /// Exact: a 256-bin histogram per channel (in parallel over images), then `f64` sums.
    pub fn channel_stats(&self) -> Result<ChannelStats, DataError> {
        if self.is_empty() {
            return Err(DataError::EmptyDataset {
                what: "channel statistics",
            });
        }
        let channels = self.shape.channels;
        // Chunks of whole images, large enough to amortise a histogram per chunk.
        let chunk = self.shape.len() * 256;
        let histograms = self
            .pixels
            .par_chunks(chunk)
            .map(|part| {
                let mut histogram = vec![[0u64; 256]; channels];
                for (c, channel_histogram) in histogram.iter_mut().enumerate() {
                    for &value in part.iter().skip(c).step_by(channels) {
                        channel_histogram[value as usize] += 1;
                    }
                }
                histogram
            })
            .reduce(
                || vec![[0u64; 256]; channels],
                |mut a, b| {
                    for (ha, hb) in a.iter_mut().zip(&b) {
                        for (x, y) in ha.iter_mut().zip(hb) {
                            *x += y;
                        }
                    }
                    a
                },
            );
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

    /// [`Dataset::subset`] for indices known to be in range.
    fn subset_unchecked(&self, indices: &[usize]) -> Dataset {
        let n = self.shape.len();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            pixels,
            shape: self.shape,
            labels,
            class_names: self.class_names.clone(),
            partition: self.partition,
        }
    }
}
