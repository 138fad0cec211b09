//! Loading the data set, splitting it, and turning index batches into input tensors.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use supcon_augment::{presets, Augmenter, ImageRef, Pipeline};
use supcon_data::{Cifar10, Cifar100, Cifar100Label, Dataset, FashionMnist, Split};
use tch::{Device, Tensor};

use crate::config::{DataConfig, RunConfig};
use crate::error::TrainError;

/// The training images split into the part that trains and the part that selects the model.
pub struct TrainData {
    pub train: Dataset,
    pub validation: Dataset,
    /// Per-channel mean and standard deviation of `train` (in [0, 1] units), for normalisation.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

fn load_split(config: &DataConfig, split: Split) -> Result<Dataset, TrainError> {
    let location = config.path.as_deref();
    let name = config.dataset.to_ascii_lowercase().replace('_', "-");
    let dataset = match name.as_str() {
        "fashion-mnist" | "fashionmnist" => FashionMnist::load(split, location),
        "cifar10" | "cifar-10" => Cifar10::load(split, location),
        "cifar100" | "cifar-100" => Cifar100::load(split, Cifar100Label::Fine, location),
        other => {
            return Err(TrainError::Config(format!(
                "data.dataset `{other}` is not one of fashion-mnist, cifar10, cifar100"
            )))
        }
    };
    dataset.map_err(|e| TrainError::Data(format!("{} ({split:?} split): {e}", config.dataset)))
}

/// Loads the training set, limits it per class when asked, and carves the stratified
/// validation split (seeded with the run's seed).
pub fn load_train(config: &RunConfig) -> Result<TrainData, TrainError> {
    let mut full = load_split(&config.data, Split::Train)?;
    if config.data.train_per_class > 0 {
        full = full.first_per_class(config.data.train_per_class);
    }
    let (train, validation) = if config.data.validation_fraction > 0.0 {
        full.train_validation_split(config.data.validation_fraction, config.seed)
            .map_err(|e| TrainError::Data(format!("validation split: {e}")))?
    } else {
        let empty = full
            .subset(&[])
            .map_err(|e| TrainError::Data(format!("empty validation split: {e}")))?;
        (full, empty)
    };
    let stats = train
        .channel_stats()
        .map_err(|e| TrainError::Data(format!("channel statistics: {e}")))?;
    if stats.mean.len() as i64 != config.model.in_channels {
        return Err(TrainError::Config(format!(
            "model.in_channels is {} but {} images have {} channel(s)",
            config.model.in_channels,
            config.data.dataset,
            stats.mean.len()
        )));
    }
    Ok(TrainData {
        mean: stats.mean.iter().map(|&m| m as f32).collect(),
        std: stats.std.iter().map(|&s| (s as f32).max(1e-3)).collect(),
        train,
        validation,
    })
}

/// Loads the test set (read once, for the final evaluation).
pub fn load_test(config: &RunConfig) -> Result<Dataset, TrainError> {
    let mut test = load_split(&config.data, Split::Test)?;
    if config.data.test_per_class > 0 {
        test = test.first_per_class(config.data.test_per_class);
    }
    Ok(test)
}

/// The augmentation pipeline named `name` for images of side `size`.
///
/// `supcon` is SupContrast's recipe (on one-channel images supcon-augment's Fashion-MNIST
/// recipe, with milder crops and no colour), `simclr` adds blur, `crop-flip` is the linear and
/// CE stages' recipe, `none` only normalises.
pub fn augment_pipeline(
    name: &str,
    size: usize,
    mean: &[f32],
    std: &[f32],
) -> Result<Pipeline, TrainError> {
    let pipeline = match name {
        "supcon" | "fashion-mnist" if mean.len() == 1 => presets::fashion_mnist(size),
        "supcon" => presets::supcon_cifar(size, mean, std),
        "simclr" if mean.len() == 1 => presets::fashion_mnist(size),
        "simclr" => presets::simclr(size, mean, std),
        "crop-flip" => presets::crop_flip(size, mean, std),
        "none" => presets::eval(mean, std),
        other => {
            return Err(TrainError::Config(format!(
            "augment preset `{other}` is not one of supcon, simclr, fashion-mnist, crop-flip, none"
        )))
        }
    };
    pipeline.map_err(|e| TrainError::Augment(e.to_string()))
}

/// The order of the training images in `epoch`: a permutation drawn from (seed, stage, epoch)
/// alone, so a resumed run sees the same batches.
pub fn epoch_permutation(len: usize, seed: u64, stream: u64, epoch: u32) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream.wrapping_mul(1 << 32) ^ u64::from(epoch));
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    order
}

/// Number of batches of an epoch of `len` images.
pub fn batches_per_epoch(len: usize, batch_size: usize, drop_last: bool) -> u64 {
    if drop_last {
        (len / batch_size) as u64
    } else {
        len.div_ceil(batch_size) as u64
    }
}

/// The images of a batch, augmented into `[batch·views, C, H, W]`, with their labels.
pub struct PreparedBatch {
    pub pixels: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<i64>,
    /// Indices of the images in their data set.
    pub indices: Vec<usize>,
}

impl PreparedBatch {
    /// Labels and indices only, no pixels: for a stage that reads stored features.
    pub fn without_pixels(dataset: &Dataset, indices: &[usize]) -> Self {
        Self {
            pixels: Vec::new(),
            shape: [indices.len(), 0, 0, 0],
            labels: indices.iter().map(|&i| dataset.label(i)).collect(),
            indices: indices.to_vec(),
        }
    }

    /// The pixels as a tensor on `device`.
    pub fn tensor(&self, device: Device) -> Tensor {
        let [n, c, h, w] = self.shape;
        Tensor::from_slice(&self.pixels)
            .reshape([n as i64, c as i64, h as i64, w as i64])
            .to_device(device)
    }

    /// The labels as a tensor on `device`.
    pub fn label_tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.labels).to_device(device)
    }
}

/// The image `index` of `dataset` as an augmentation input.
pub fn image_ref(dataset: &Dataset, index: usize) -> ImageRef<'_> {
    let shape = dataset.shape();
    ImageRef {
        data: dataset.image(index),
        height: shape.height,
        width: shape.width,
        channels: shape.channels,
    }
}

/// Augments `views` views of the images at `indices` (epoch `epoch` of the random streams).
pub fn prepare_batch(
    augmenter: &Augmenter,
    dataset: &Dataset,
    indices: &[usize],
    epoch: u32,
    views: usize,
) -> Result<PreparedBatch, TrainError> {
    let images: Vec<ImageRef<'_>> = indices.iter().map(|&i| image_ref(dataset, i)).collect();
    let ids: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    let [c, h, w] = augmenter
        .view_shape(&images)
        .map_err(|e| TrainError::Augment(e.to_string()))?;
    let mut pixels = vec![0f32; indices.len() * views * c * h * w];
    augmenter
        .augment_batch(&images, &ids, u64::from(epoch), views, &mut pixels)
        .map_err(|e| TrainError::Augment(e.to_string()))?;
    Ok(PreparedBatch {
        pixels,
        shape: [indices.len() * views, c, h, w],
        ..PreparedBatch::without_pixels(dataset, indices)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_depend_on_seed_stream_and_epoch_only() {
        let a = epoch_permutation(100, 1, 0, 3);
        assert_eq!(a, epoch_permutation(100, 1, 0, 3));
        assert_ne!(a, epoch_permutation(100, 1, 0, 4));
        assert_ne!(a, epoch_permutation(100, 1, 1, 3));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(batches_per_epoch(10, 4, true), 2);
        assert_eq!(batches_per_epoch(10, 4, false), 3);
    }
}
