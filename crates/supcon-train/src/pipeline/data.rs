//! Loading the data set, splitting it, and turning index batches into input tensors.

use std::borrow::Cow;
use std::ops::Range;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use supcon_augment::{presets, Augmenter, ImageRef, MultiCropAugmenter, Pipeline};
use supcon_data::{
    open_image_folder_with_limits, open_shards_with_limits, shard_paths_with_limits, Dataset,
    LabelQuota, Split,
};
use tch::{Device, Tensor};

use crate::config::{DataConfig, DataSource, EvalSplit, RunConfig};
use crate::error::TrainError;

/// The training images split into the part that trains and the part that selects the model.
pub struct TrainData {
    /// The labeled images of the linear stage, CE and kNN: with few labels, the labeled subset.
    pub train: Dataset,
    pub validation: Dataset,
    /// The images of stage 1 when they are not `train`: with `data.labels = false` the
    /// unlabeled images (`train` and `validation` are then the labeled evaluation set's); with
    /// few labels the whole training split, the labeled subset included. `None`: stage 1
    /// trains on `train`.
    pub unlabeled: Option<Dataset>,
    /// Few labels: which of stage 1's images keep their label.
    pub labeled_subset: Option<LabeledSubset>,
    /// Per-channel mean and standard deviation of stage 1's images (in [0, 1] units), for
    /// normalisation.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Images left out because they could not be read (`data.skip_corrupt`).
    pub unreadable: usize,
}

/// The few-label protocol's labeled subset of the training split (`data.labeled_per_class`,
/// `data.labeled_fraction`): seeded with the run's seed, drawn after the validation split.
#[derive(Clone, Debug)]
pub struct LabeledSubset {
    pub quota: LabelQuota,
    /// Indices into the training split (stage 1's images), sorted.
    pub indices: Vec<usize>,
    /// `labeled[i]`: image `i` of the training split keeps its label.
    pub labeled: Arc<[bool]>,
}

impl LabeledSubset {
    /// The subset `quota` asks for of `split`.
    fn draw(split: &Dataset, quota: LabelQuota, seed: u64) -> Result<Self, TrainError> {
        let indices = split
            .labeled_subset(quota, seed)
            .map_err(|e| TrainError::data("the labeled subset", e))?;
        let mut labeled = vec![false; split.len()];
        for &i in &indices {
            labeled[i] = true;
        }
        Ok(Self {
            quota,
            indices,
            labeled: labeled.into(),
        })
    }

    /// What the run folder keeps of it (`labeled_subset.json`): enough to train another
    /// method on the same images, and to check that two runs did.
    pub fn to_json(&self, split_len: usize) -> String {
        let (quota_key, quota) = match self.quota {
            LabelQuota::PerClass(n) => ("labeled_per_class", serde_json::json!(n)),
            LabelQuota::Fraction(f) => ("labeled_fraction", serde_json::json!(f)),
        };
        let mut file = serde_json::json!({
            "labeled": self.indices.len(),
            "training_split": split_len,
            "indices": self.indices,
        });
        file[quota_key] = quota;
        format!("{file}\n")
    }
}

impl TrainData {
    /// Which of stage 1's images (and distillation's) may show their label: with few labels
    /// the labeled subset, with unlabeled images none; `None`: all of them.
    pub fn pretrain_label_mask(&self) -> Option<Arc<[bool]>> {
        match (&self.labeled_subset, &self.unlabeled) {
            (Some(subset), _) => Some(subset.labeled.clone()),
            (None, Some(images)) => Some(vec![false; images.len()].into()),
            (None, None) => None,
        }
    }

    /// The images of contrastive pre-training.
    pub fn pretrain_set(&self) -> &Dataset {
        self.unlabeled.as_ref().unwrap_or(&self.train)
    }

    /// Every data set the session loaded: `train`, `validation` and, when there is one,
    /// `unlabeled`.
    pub fn sets(&self) -> impl Iterator<Item = &Dataset> {
        [
            Some(&self.train),
            Some(&self.validation),
            self.unlabeled.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// The files the sets read their images from (image files or shards), sorted, each once
    /// (a split shares its parent's store); empty when every image is in memory.
    pub fn source_files(&self) -> Vec<&std::path::Path> {
        let mut paths: Vec<&std::path::Path> = self
            .sets()
            .flat_map(Dataset::source_files)
            .map(std::path::PathBuf::as_path)
            .collect();
        paths.sort_unstable();
        paths.dedup();
        paths
    }
}

/// The images of `split` ([`open_split`]), less the unreadable ones when `data.skip_corrupt`
/// (each one logged), decoded into memory unless the source streams; returns how many were
/// left out. The check comes before the decoding into memory, so that a corrupt file of an
/// in-memory folder is skipped too rather than failing the load.
fn load_split(config: &DataConfig, split: Split) -> Result<(Dataset, usize), TrainError> {
    let opened = open_split(config, split)?;
    let (opened, unreadable) = if config.skip_corrupt {
        let (dataset, unreadable) = opened.without_unreadable();
        for error in unreadable.iter().take(20) {
            tracing::warn!(
                split = split_name(split),
                "skipping an unreadable image: {}",
                crate::error::chain(error)
            );
        }
        if !unreadable.is_empty() {
            tracing::warn!(
                "{}: {} unreadable image(s) left out (data.skip_corrupt)",
                split_name(split),
                unreadable.len()
            );
        }
        (dataset, unreadable.len())
    } else {
        (opened, 0)
    };
    let dataset = if DataSource::parse(config)?.is_streamed() {
        opened
    } else {
        opened
            .into_memory()
            .map_err(|e| TrainError::data(split_context(config, split), e))?
    };
    Ok((dataset, unreadable))
}

fn split_context(config: &DataConfig, split: Split) -> String {
    format!("{} ({} split)", config.dataset, split_name(split))
}

/// The images of `split` as the source gives them: in memory for a named data set, indexed on
/// disk for folders and shards.
fn open_split(config: &DataConfig, split: Split) -> Result<Dataset, TrainError> {
    let location = config.path.as_deref();
    let data_error = |e| TrainError::data(split_context(config, split), e);
    match DataSource::parse(config)? {
        DataSource::Named(name) => name.load(split, location).map_err(data_error),
        DataSource::Folder { options, .. } => {
            let root = location.ok_or_else(|| {
                TrainError::Config(
                    "data.dataset = \"folder\" needs data.path (or --data): a folder with train/ and test/ inside (unlabeled: the folder of images)".into(),
                )
            })?;
            // Unlabeled images are every image file under the folder given.
            let root = if config.labels {
                root.join(split_name(split))
            } else {
                root.to_path_buf()
            };
            open_image_folder_with_limits(&root, &options, config.labels, &config.limits.resolve())
                .map_err(data_error)
        }
        DataSource::Shards(options) => {
            let (key, pattern) = match split {
                Split::Train => ("data.path", location),
                Split::Test => ("data.test_path", config.test_path.as_deref()),
            };
            let pattern = pattern.ok_or_else(|| {
                TrainError::Config(format!(
                    "data.dataset = \"shards\" needs {key}: the {} split's shards, e.g. 'dir/{}-{{000000..000009}}.tar'",
                    split_name(split),
                    split_name(split)
                ))
            })?;
            let limits = config.limits.resolve();
            let paths = shard_paths_with_limits(pattern, &limits).map_err(data_error)?;
            open_shards_with_limits(&paths, &options, config.labels, &limits).map_err(data_error)
        }
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// Loads the labeled training set, limits it per class when asked, and carves the stratified
/// validation split (seeded with the run's seed); with `data.labels = false`, also the
/// unlabeled images of stage 1; with few labels, the labeled subset of what is left (`train`)
/// and the whole of it for stage 1, see [`LabeledSubset`]. The normalisation statistics are those of stage 1's images
/// (of a seeded sample of `data.stats_images` of them when they are streamed and more
/// numerous; 0 measures them all).
pub fn load_train(config: &RunConfig) -> Result<TrainData, TrainError> {
    let labeled = config.data.labeled()?;
    let (mut full, mut unreadable) = load_split(&labeled, Split::Train)?;
    if labeled.train_per_class > 0 {
        full = full.first_per_class(labeled.train_per_class);
    }
    let (train, validation) = if labeled.validation_fraction > 0.0 {
        full.train_validation_split(labeled.validation_fraction, config.seed)
            .map_err(|e| TrainError::data("validation split", e))?
    } else {
        let empty = full
            .subset(&[])
            .map_err(|e| TrainError::data("empty validation split", e))?;
        (full, empty)
    };
    let (train, unlabeled, labeled_subset) = match config.data.label_quota()? {
        Some(quota) => {
            let subset = LabeledSubset::draw(&train, quota, config.seed)?;
            let labeled = train
                .subset(&subset.indices)
                .map_err(|e| TrainError::data("the labeled subset", e))?;
            (labeled, Some(train), Some(subset))
        }
        None if config.data.labels => (train, None, None),
        None => {
            let (images, skipped) = load_unlabeled(config, &labeled, &train)?;
            unreadable += skipped;
            (train, Some(images), None)
        }
    };
    let pretrain_set = unlabeled.as_ref().unwrap_or(&train);
    let stats_images = config.data.stats_images;
    let measured = if pretrain_set.is_in_memory() || stats_images == 0 {
        pretrain_set.clone()
    } else {
        pretrain_set.sample(stats_images, config.seed)
    };
    let stats = measured
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
        unlabeled,
        labeled_subset,
        unreadable,
    })
}

/// With `data.labels = false`: the unlabeled images of stage 1 (`train_per_class` limits the
/// labeled set only: unlabeled images have no class), which must have the labeled images' shape.
fn load_unlabeled(
    config: &RunConfig,
    labeled: &DataConfig,
    train: &Dataset,
) -> Result<(Dataset, usize), TrainError> {
    let (images, skipped) = load_split(&config.data, Split::Train)?;
    if images.shape() != train.shape() {
        return Err(TrainError::Config(format!(
            "the unlabeled images are {} but the labeled ones ({}) are {}: set data.image_size \
             and data.color so that they match",
            images.shape(),
            labeled.dataset,
            train.shape()
        )));
    }
    Ok((images, skipped))
}

/// The images of the final evaluation, and how many were left out as unreadable.
pub struct EvaluationSet {
    pub images: Dataset,
    /// Images left out because they could not be read (`data.skip_corrupt`).
    pub unreadable: usize,
}

impl std::ops::Deref for EvaluationSet {
    type Target = Dataset;

    fn deref(&self) -> &Dataset {
        &self.images
    }
}

/// The images of the final evaluation: the test set, or the validation split when
/// `eval.split = "validation"` (tuning runs that must not read the test set).
pub fn load_evaluation_split(
    config: &RunConfig,
    data: &TrainData,
) -> Result<EvaluationSet, TrainError> {
    match config.eval.split {
        EvalSplit::Test => load_test(config),
        EvalSplit::Validation => Ok(EvaluationSet {
            images: data.validation.clone(),
            unreadable: 0,
        }),
    }
}

/// Checks, before training, that the test split has the training split's classes under the
/// same names. The splits of an image folder or of shards are indexed separately: the same
/// count under other names would silently give the test images other classes' labels. A named
/// data set has fixed classes; a run evaluated on the validation split reads no test split.
pub fn check_test_classes(config: &RunConfig, data: &TrainData) -> Result<(), TrainError> {
    let labeled = config.data.labeled()?;
    let source = DataSource::parse(&labeled)?;
    if config.eval.split != EvalSplit::Test || matches!(source, DataSource::Named(_)) {
        return Ok(());
    }
    let test = open_split(&labeled, Split::Test)?;
    // Shards' classes are their label numbers 0..=the largest seen: a test split without the
    // largest one names a prefix of the training split's, with the same meanings.
    let shards = matches!(source, DataSource::Shards(_));
    same_classes(&data.train, &test, shards)
}

fn same_classes(train: &Dataset, test: &Dataset, prefix_ok: bool) -> Result<(), TrainError> {
    let (train_names, test_names) = (train.class_names(), test.class_names());
    if train_names == test_names || prefix_ok && train_names.starts_with(test_names) {
        return Ok(());
    }
    Err(TrainError::Config(format!(
        "data: the test split's classes [{}] are not the training split's [{}]: both need the \
         same class folders (or labels), so that a label means the same class in both",
        test.class_names().join(", "),
        train.class_names().join(", ")
    )))
}

/// Loads the test set (read once, for the final evaluation).
pub fn load_test(config: &RunConfig) -> Result<EvaluationSet, TrainError> {
    let labeled = config.data.labeled()?;
    let (mut test, unreadable) = load_split(&labeled, Split::Test)?;
    if labeled.test_per_class > 0 {
        test = test.first_per_class(labeled.test_per_class);
    }
    Ok(EvaluationSet {
        images: test,
        unreadable,
    })
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
    let mut rng = epoch_generator(seed, stream, epoch);
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    order
}

/// The order of `dataset`'s images in `epoch`: [`epoch_permutation`], or for tar shards with
/// a `shuffle_buffer` WebDataset's order (shards shuffled, then samples through the buffer),
/// drawn from the same (seed, stage, epoch) generator. `shard_runs` is
/// [`Dataset::shard_runs`], computed once per stage. Shards with `shuffle_buffer` 0 get the
/// permutation of an in-memory data set (reads then jump between shards).
pub fn epoch_order(
    len: usize,
    shard_runs: Option<&[Range<usize>]>,
    shuffle_buffer: usize,
    seed: u64,
    stream: u64,
    epoch: u32,
) -> Vec<usize> {
    match shard_runs {
        Some(runs) if shuffle_buffer > 0 => supcon_data::shard_order(
            runs,
            shuffle_buffer,
            &mut epoch_generator(seed, stream, epoch),
        ),
        _ => epoch_permutation(len, seed, stream, epoch),
    }
}

fn epoch_generator(seed: u64, stream: u64, epoch: u32) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream.wrapping_mul(1 << 32) ^ u64::from(epoch));
    rng
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

/// The images at `indices` (from memory, or read and decoded for a streamed data set).
fn read_images<'a>(
    dataset: &'a Dataset,
    indices: &[usize],
) -> Result<Vec<Cow<'a, [u8]>>, TrainError> {
    dataset
        .read_images(indices)
        .map_err(|e| TrainError::data("reading the images of a batch", e))
}

/// Images of `dataset` as augmentation inputs.
fn image_refs<'a>(dataset: &Dataset, images: &'a [Cow<'_, [u8]>]) -> Vec<ImageRef<'a>> {
    let shape = dataset.shape();
    images
        .iter()
        .map(|data| ImageRef {
            data,
            height: shape.height,
            width: shape.width,
            channels: shape.channels,
        })
        .collect()
}

/// How a stage turns image indices into its input batch: a pure function of (data set, indices,
/// epoch), so that it can run ahead of the step in another thread (see `data.prefetch`) and a
/// resumed run prepares the same batches.
#[derive(Clone, Debug)]
pub enum BatchRecipe {
    /// `views` augmented views of each image.
    Views { augmenter: Augmenter, views: usize },
    /// Global views and smaller local crops (multi-crop).
    MultiCrop(MultiCropAugmenter),
    /// Labels and indices only: the stage reads stored features.
    LabelsOnly,
    /// Few labels: `recipe`'s batch with the label of every image outside the labeled subset
    /// replaced by [`supcon_loss::UNLABELED`], so that stage 1 never sees a hidden label.
    HiddenLabels {
        recipe: Box<BatchRecipe>,
        labeled: Arc<[bool]>,
    },
}

impl BatchRecipe {
    /// This recipe, showing the labels of the images `labeled` marks only (`None`: all).
    pub fn hiding_labels(self, labeled: Option<Arc<[bool]>>) -> Self {
        match labeled {
            Some(labeled) => BatchRecipe::HiddenLabels {
                recipe: Box::new(self),
                labeled,
            },
            None => self,
        }
    }

    /// The batch of the images at `indices` for `epoch`.
    pub fn prepare(
        &self,
        dataset: &Dataset,
        indices: &[usize],
        epoch: u32,
    ) -> Result<PreparedBatch, TrainError> {
        match self {
            BatchRecipe::Views { augmenter, views } => {
                prepare_batch(augmenter, dataset, indices, epoch, *views)
            }
            BatchRecipe::MultiCrop(augmenter) => {
                prepare_multicrop_batch(augmenter, dataset, indices, epoch)
            }
            BatchRecipe::LabelsOnly => Ok(PreparedBatch::without_pixels(dataset, indices)),
            BatchRecipe::HiddenLabels { recipe, labeled } => {
                let mut batch = recipe.prepare(dataset, indices, epoch)?;
                for (label, &index) in batch.labels.iter_mut().zip(&batch.indices) {
                    if !labeled[index] {
                        *label = supcon_loss::UNLABELED;
                    }
                }
                Ok(batch)
            }
        }
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
    let decoded = read_images(dataset, indices)?;
    let images = image_refs(dataset, &decoded);
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
    let decoded = read_images(dataset, indices)?;
    let images = image_refs(dataset, &decoded);
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
    fn a_hidden_label_reaches_no_batch() {
        let shape = supcon_data::ImageShape::new(2, 2, 1);
        let names = vec!["a".to_string(), "b".to_string()];
        let dataset = Dataset::new(vec![0; 4 * shape.len()], shape, vec![0, 1, 1, 0], names)
            .expect("a valid dataset");
        let recipe = BatchRecipe::HiddenLabels {
            recipe: Box::new(BatchRecipe::LabelsOnly),
            labeled: vec![true, false, true, false].into(),
        };
        let batch = recipe.prepare(&dataset, &[3, 2, 1, 0], 0).expect("a batch");
        assert_eq!(batch.indices, [3, 2, 1, 0]);
        assert_eq!(
            batch.labels,
            [supcon_loss::UNLABELED, 1, supcon_loss::UNLABELED, 0]
        );
    }

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
