//! Loading the data set, splitting it, and turning index batches into input tensors.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use supcon_augment::{presets, Augmenter, ImageRef, MultiCropAugmenter, Pipeline};
use supcon_data::{load_image_folder, ColorMode, Dataset, DatasetName, ImageFolderOptions, Split};
use tch::{Device, Tensor};

use crate::config::{DataConfig, EvalSplit, RunConfig};
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
    let context = format!("{} ({} split)", config.dataset, split_name(split));
    match DataSource::parse(config)? {
        DataSource::Named(name) => name
            .load(split, location)
            .map_err(|e| TrainError::data(context, e)),
        DataSource::Folder(options) => {
            let root = location.ok_or_else(|| {
                TrainError::Config(
                    "data.dataset = \"folder\" needs data.path (or --data): a folder with train/ and test/ inside".into(),
                )
            })?;
            load_image_folder(&root.join(split_name(split)), &options)
                .map_err(|e| TrainError::data(context, e))
        }
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// Where the images come from: a data set this project knows by name, or an image folder.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    Named(DatasetName),
    /// torchvision's `ImageFolder` layout under `data.path`: `train/<class>/*.png|jpg` and
    /// `test/<class>/*`, resized to `data.image_size` and read as `data.color`.
    Folder(ImageFolderOptions),
}

impl DataSource {
    /// The source `config` names; unknown names are an error listing the valid ones.
    pub fn parse(config: &DataConfig) -> Result<Self, TrainError> {
        if config.dataset.trim().eq_ignore_ascii_case("folder") {
            let color = match config.color.as_deref().unwrap_or("rgb") {
                "rgb" => ColorMode::Rgb,
                "gray" => ColorMode::Gray,
                other => {
                    return Err(TrainError::Config(format!(
                        "data.color `{other}` is not one of rgb, gray"
                    )))
                }
            };
            return Ok(DataSource::Folder(ImageFolderOptions {
                resize: config.image_size.map(|side| (side, side)),
                color,
            }));
        }
        if config.image_size.is_some() || config.color.is_some() {
            return Err(TrainError::Config(format!(
                "data.image_size and data.color apply to image folders only, not to `{}`",
                config.dataset
            )));
        }
        config.dataset.parse().map(DataSource::Named).map_err(|_| {
            let names: Vec<&str> = DatasetName::ALL.iter().map(|n| n.as_str()).collect();
            TrainError::Config(format!(
                "data.dataset `{}` is not one of {}, folder",
                config.dataset,
                names.join(", ")
            ))
        })
    }
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
            .map_err(|e| TrainError::data("validation split", e))?
    } else {
        let empty = full
            .subset(&[])
            .map_err(|e| TrainError::data("empty validation split", e))?;
        (full, empty)
    };
    let stats = train
        .channel_stats()
        .map_err(|e| TrainError::data("channel statistics", e))?;
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

/// The images of the final evaluation: the test set, or the validation split when
/// `eval.split = "validation"` (tuning runs that must not read the test set).
pub fn load_evaluation_split(config: &RunConfig, data: &TrainData) -> Result<Dataset, TrainError> {
    match config.eval.split {
        EvalSplit::Test => load_test(config),
        EvalSplit::Validation => Ok(data.validation.clone()),
    }
}

/// Loads the test set (read once, for the final evaluation).
pub fn load_test(config: &RunConfig) -> Result<Dataset, TrainError> {
    let mut test = load_split(&config.data, Split::Test)?;
    if config.data.test_per_class > 0 {
        test = test.first_per_class(config.data.test_per_class);
    }
    Ok(test)
}

/// The augmentation pipeline named `name` (a preset or a recipe such as
/// `pad-crop:2+flip`, see [`presets::by_name`]) for images of side `size`.
pub fn augment_pipeline(
    name: &str,
    size: usize,
    mean: &[f32],
    std: &[f32],
) -> Result<Pipeline, TrainError> {
    Ok(presets::by_name(name, size, mean, std)?)
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

/// Number of batches of an epoch of `len` images split between `ranks` ranks. A last, smaller
/// batch is kept unless `drop_last`, or unless it has fewer images than there are ranks (a rank
/// would have none to train on: at most `ranks − 1` images an epoch are left out, the one way a
/// data-parallel epoch differs from one process's).
pub fn batches_per_epoch(len: usize, batch_size: usize, drop_last: bool, ranks: usize) -> u64 {
    let (full, rest) = (len / batch_size, len % batch_size);
    let keep_rest = !drop_last && rest > 0 && rest >= ranks;
    (full + usize::from(keep_rest)) as u64
}

/// Where a rank's images lie in the step's global batch. In one process the two are the same;
/// in a data-parallel run each rank holds a consecutive part (see [`crate::dist`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalBatch {
    /// Image indices of the whole batch of the step, every rank's part in rank order.
    pub indices: Vec<usize>,
    /// Where this rank's images start in `indices`.
    pub offset: usize,
}

impl GlobalBatch {
    /// The number of images of the whole step.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the step has no image.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The images of a batch, augmented into `[batch·views, C, H, W]`, with their labels.
pub struct PreparedBatch {
    pub pixels: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<i64>,
    /// Indices of the images in their data set.
    pub indices: Vec<usize>,
    /// The epoch the views were drawn for.
    pub epoch: u32,
    /// Multi-crop: the local crops, `[batch·local views, C, h, w]` (smaller than the views).
    pub local: Option<CropBatch>,
    /// The step's whole batch, of which these images are this rank's part.
    pub global: GlobalBatch,
}

/// Crops of one resolution, laid out `[batch·views, C, H, W]` batch-major.
pub struct CropBatch {
    pub pixels: Vec<f32>,
    pub shape: [usize; 4],
}

impl CropBatch {
    /// The pixels as a tensor on `device`.
    pub fn tensor(&self, device: Device) -> Tensor {
        pixels_tensor(&self.pixels, self.shape, device)
    }
}

fn pixels_tensor(pixels: &[f32], [n, c, h, w]: [usize; 4], device: Device) -> Tensor {
    Tensor::from_slice(pixels)
        .reshape([n as i64, c as i64, h as i64, w as i64])
        .to_device(device)
}

impl PreparedBatch {
    /// Labels and indices only, no pixels: for a stage that reads stored features.
    pub fn without_pixels(dataset: &Dataset, indices: &[usize]) -> Self {
        Self {
            pixels: Vec::new(),
            shape: [indices.len(), 0, 0, 0],
            labels: indices.iter().map(|&i| dataset.label(i)).collect(),
            indices: indices.to_vec(),
            epoch: 0,
            local: None,
            global: GlobalBatch {
                indices: indices.to_vec(),
                offset: 0,
            },
        }
    }

    /// The pixels (the views) as a tensor on `device`.
    pub fn tensor(&self, device: Device) -> Tensor {
        pixels_tensor(&self.pixels, self.shape, device)
    }

    /// This rank's share of the step's images (1 in one process): what a loss averaged over
    /// this rank's images is weighted by, so that the ranks' shares add up to the mean over
    /// the whole batch.
    pub fn share(&self) -> f64 {
        self.indices.len() as f64 / self.global.len().max(1) as f64
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
    let [c, h, w] = augmenter.view_shape(&images)?;
    let mut pixels = vec![0f32; indices.len() * views * c * h * w];
    augmenter.augment_batch(&images, &ids, u64::from(epoch), views, &mut pixels)?;
    Ok(PreparedBatch {
        pixels,
        shape: [indices.len() * views, c, h, w],
        epoch,
        ..PreparedBatch::without_pixels(dataset, indices)
    })
}

/// Multi-crop: the `groups[0].views` global views as the batch's views and the second group
/// (if any) as its local crops.
pub fn prepare_multicrop_batch(
    augmenter: &MultiCropAugmenter,
    dataset: &Dataset,
    indices: &[usize],
    epoch: u32,
) -> Result<PreparedBatch, TrainError> {
    let images: Vec<ImageRef<'_>> = indices.iter().map(|&i| image_ref(dataset, i)).collect();
    let ids: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    let shapes = augmenter.view_shapes(&images)?;
    let mut crops: Vec<CropBatch> = augmenter
        .groups()
        .iter()
        .zip(&shapes)
        .map(|(group, &[c, h, w])| CropBatch {
            pixels: vec![0f32; indices.len() * group.views * c * h * w],
            shape: [indices.len() * group.views, c, h, w],
        })
        .collect();
    {
        let mut outs: Vec<&mut [f32]> = crops.iter_mut().map(|c| c.pixels.as_mut_slice()).collect();
        augmenter.augment_batch(&images, &ids, u64::from(epoch), &mut outs)?;
    }
    let mut crops = crops.into_iter();
    let global = crops
        .next()
        .ok_or_else(|| TrainError::Shape("multi-crop without a global group".into()))?;
    Ok(PreparedBatch {
        pixels: global.pixels,
        shape: global.shape,
        epoch,
        local: crops.next(),
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
        assert_eq!(batches_per_epoch(10, 4, true, 1), 2);
        assert_eq!(batches_per_epoch(10, 4, false, 1), 3);
        // The last batch of 2 images gives each of 2 ranks one; of 3 ranks, one has none.
        assert_eq!(batches_per_epoch(10, 4, false, 2), 3);
        assert_eq!(batches_per_epoch(10, 4, false, 3), 2);
        assert_eq!(batches_per_epoch(8, 4, false, 3), 2);
    }
}
