//! The run configuration: a preset, then an optional TOML file, then command-line overrides.
//!
//! Every table denies unknown fields, so a misspelt key is an error that names it instead of a
//! silently ignored setting. The resolved configuration is written to the run folder
//! (`config.toml`) and is what `--resume` reads back.
//!
//! Presets (TOML files in `src/presets/`, embedded in the binary):
//! - `quick-cpu` (default): Fashion-MNIST, resnet-tiny, sized so that `cargo xtask train`
//!   finishes in about 15 minutes on 2 CPU cores;
//! - `quick-cpu-simclr`, `quick-cpu-moco-v1`, `quick-cpu-moco-v2`, `quick-cpu-instdisc`,
//!   `quick-cpu-swav`: the other methods on the same data and model (they extend `quick-cpu`);
//! - `cpu-long`: `quick-cpu` with resnet-small and 24 epochs;
//! - `paper-cifar`: SupContrast's CIFAR hyper-parameters (batch 1024, lr 0.5, τ 0.1, cosine,
//!   10 warm-up epochs; linear stage batch 512, lr 5) with ResNet-50 on CIFAR-10;
//! - `gpu-fashion`: Fashion-MNIST with ResNet-18 for one GPU.

//!
//! Three files: the schema (here), preset resolution and overrides (`presets.rs`), and the
//! checks of a resolved configuration (`validate.rs`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use supcon_models::ModelConfig;

use crate::error::TrainError;

mod data;
pub mod limits;
pub mod methods;
mod presets;
mod validate;

pub use data::DataSource;
pub use methods::{CpcConfig, InstDiscConfig, MocoConfig, SwavConfig};

pub use presets::{
    apply_override, load_resolved, parse_resolved, preset_text, presets_of, resolve,
    DEFAULT_PRESET, PRESETS,
};

/// Everything a run needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seed of every random stream: initialisation, shuffling, augmentation, splits.
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
    pub device: String,
    /// libtorch intra-op threads; 0 keeps libtorch's default (one per core).
    #[serde(default)]
    pub threads: usize,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub pretrain: PretrainConfig,
    pub linear: StageConfig,
    pub ce: StageConfig,
    /// The fine-tuning stage, run after the linear stage when present (`supcon finetune`
    /// runs it alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneConfig>,
    /// The distillation stage, run after fine-tuning when present (`supcon distill` runs it
    /// alone from a teacher run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
    pub checkpoint: CheckpointConfig,
    pub eval: EvalConfig,
}

/// Which data set and how much of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `fashion-mnist`, `mnist`, `cifar10`, `cifar100` (fine labels), `cifar100-coarse` (the
    /// 20 super-classes) or `folder` (an image-folder tree at `path`: `train/<class>/*` and
    /// `test/<class>/*`).
    pub dataset: String,
    /// Folder of the data set files; `None`: `$SUPCON_DATA`, then the Debian package's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Fraction of the training set held out (stratified) for model selection.
    pub validation_fraction: f64,
    /// Keep only this many training images per class (before the validation split); 0 = all.
    /// Labeled images only (with `labels = false`, the evaluation set's).
    #[serde(default)]
    pub train_per_class: usize,
    /// Keep only this many test images per class; 0 = all.
    #[serde(default)]
    pub test_per_class: usize,
    /// Few labels: only this many training images per class keep their label (a seeded,
    /// class-balanced subset of the training split, drawn after the validation split); the
    /// others train stage 1 without one. The linear stage, CE, kNN and fine-tuning see the
    /// labeled subset only; validation and test are untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labeled_per_class: Option<usize>,
    /// Few labels, as a fraction in `(0, 1]` of each class (e.g. 0.01); see
    /// `labeled_per_class` (set one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labeled_fraction: Option<f64>,
    /// Image folders: resize every image to this side (square, bilinear); absent: keep the
    /// sizes, which must then all be equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u32>,
    /// Image folders: `rgb` (default) or `gray`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Image folders and shards: how an image of another aspect ratio meets `image_size`:
    /// `stretch` (default) or `center-crop` (shorter side to the size, then the centre).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<String>,
    /// Image folders: read each image from disk when a batch needs it instead of decoding the
    /// whole folder up front (tar shards are always streamed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    /// False: the training images have no labels (an unlabeled folder, every image file under
    /// `path`, or shards without `.cls` members); stage 1 trains on them and the linear stage,
    /// kNN and the test read the labeled set `eval_dataset` / `eval_path`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub labels: bool,
    /// With `labels = false`: the labeled data set of the evaluation (a name, `folder` or
    /// `shards`), read like `dataset` with `eval_path` as its `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_dataset: Option<String>,
    /// With `labels = false`: where `eval_dataset` lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_path: Option<PathBuf>,
    /// Tar shards: the test split's shards (a brace pattern, a `.tar` or a folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// Tar shards: samples in WebDataset's shuffle buffer (the shards are shuffled per epoch
    /// too); 1 reads each shard in order; 0 shuffles all images as an in-memory data set
    /// (the same batches as the same images in memory, at the cost of reads across shards).
    #[serde(default = "default_shuffle_buffer")]
    pub shuffle_buffer: usize,
    /// Batches prepared ahead of the step in a background thread (reading, decoding and
    /// augmenting on rayon's pool); absent: 2 for streamed images, 0 for images in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    /// Images that cannot be read (corrupt, truncated, of another size) are left out and
    /// counted in the report, instead of stopping the run with the file's name. Every image
    /// is decoded once when the data set is opened to find them (an epoch of decoding).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_corrupt: bool,
    /// Streamed images: the normalisation statistics are measured on this many training
    /// images (a seeded sample; all of them when there are fewer, or with 0). In memory they
    /// are always measured on every image, so a streamed run trains exactly as in memory when
    /// its training set has at most this many images, or with 0.
    #[serde(default = "default_stats_images")]
    pub stats_images: usize,
    /// Image folders and shards: raises (or lowers) `supcon_data::Limits`, the bounds on sizes
    /// read from the files, for trusted data beyond them (`[data.limits]`, the fields named
    /// as the errors name them).
    #[serde(default, skip_serializing_if = "DataLimits::is_default")]
    pub limits: DataLimits,
}

/// `[data.limits]`: each key absent keeps `supcon_data::Limits`'s default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_image_pixels: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shard_member_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_class_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pattern_names: Option<u64>,
}

impl DataLimits {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The data crate's limits with these keys applied.
    pub fn resolve(&self) -> supcon_data::Limits {
        let mut limits = supcon_data::Limits::default();
        let overrides = [
            (self.max_image_pixels, &mut limits.max_image_pixels),
            (
                self.max_shard_member_bytes,
                &mut limits.max_shard_member_bytes,
            ),
            (self.max_class_id, &mut limits.max_class_id),
            (self.max_pattern_names, &mut limits.max_pattern_names),
        ];
        for (given, field) in overrides {
            if let Some(value) = given {
                *field = value;
            }
        }
        limits
    }
}

impl DataConfig {
    /// The few-label quota `labeled_per_class` or `labeled_fraction` asks for; `None`: every
    /// training image keeps its label.
    pub fn label_quota(&self) -> Result<Option<supcon_data::LabelQuota>, TrainError> {
        use supcon_data::LabelQuota;
        match (self.labeled_per_class, self.labeled_fraction) {
            (None, None) => Ok(None),
            (Some(n), None) => Ok(Some(LabelQuota::PerClass(n))),
            (None, Some(fraction)) => Ok(Some(LabelQuota::Fraction(fraction))),
            (Some(_), Some(_)) => Err(TrainError::Config(
                "data.labeled_per_class and data.labeled_fraction both set: keep one".into(),
            )),
        }
    }

    /// The labeled data set: this one, or with `labels = false` the one `eval_dataset` and
    /// `eval_path` name (read with the same image settings when it is a folder or shards).
    pub fn labeled(&self) -> Result<DataConfig, TrainError> {
        if self.labels {
            return Ok(self.clone());
        }
        let dataset = self.eval_dataset.clone().ok_or_else(|| {
            TrainError::Config(
                "data.labels = false needs data.eval_dataset (and data.eval_path): the labeled \
                 images of the linear stage, kNN and the test"
                    .into(),
            )
        })?;
        let named = dataset.parse::<supcon_data::DatasetName>().is_ok();
        Ok(DataConfig {
            dataset,
            path: self.eval_path.clone(),
            labels: true,
            eval_dataset: None,
            eval_path: None,
            // A data set known by name has its own image format.
            image_size: self.image_size.filter(|_| !named),
            color: self.color.clone().filter(|_| !named),
            fit: self.fit.clone().filter(|_| !named),
            stream: self.stream && !named,
            ..self.clone()
        })
    }
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn default_shuffle_buffer() -> usize {
    1000
}

fn default_stats_images() -> usize {
    10_000
}

/// Contrastive method of stage 1 (each one a module of `pipeline::methods`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Supervised contrastive: every sample of the same class is a positive.
    Supcon,
    /// SimCLR: only the other views of the same image are positives (labels unused).
    Simclr,
    /// MoCo v1/v2: momentum key encoder and a queue of keys as negatives (`[pretrain.moco]`).
    Moco,
    /// InstDisc: memory bank and NCE (`[pretrain.instdisc]`).
    Instdisc,
    /// InvSpread: in-batch instance discrimination of each image and its augmented copy, with
    /// a binary spreading term for the other instances.
    Invspread,
    /// SwAV: Sinkhorn–Knopp codes and swapped prediction (`[pretrain.swav]`).
    Swav,
    /// CMC: a second encoder for a second modality of each image, contrasted across views.
    Cmc,
    /// CPC v2: a context network over a grid of patch encodings predicts the rows below
    /// (`[pretrain.cpc]`).
    Cpc,
}

impl Method {
    /// The name used in configs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Supcon => "supcon",
            Method::Simclr => "simclr",
            Method::Moco => "moco",
            Method::Instdisc => "instdisc",
            Method::Invspread => "invspread",
            Method::Swav => "swav",
            Method::Cmc => "cmc",
            Method::Cpc => "cpc",
        }
    }

    /// Every method, in declaration order.
    pub fn all() -> impl Iterator<Item = Method> {
        <Method as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
    }

    /// The names of the methods that train without labels.
    pub fn self_supervised() -> Vec<&'static str> {
        Method::all()
            .filter(|&m| !methods::spec(m).needs_labels)
            .map(Method::as_str)
            .collect()
    }
}

/// Where the loss is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossBackendKind {
    /// supcon-loss's tiled CPU backend (ndarray + rayon).
    Cpu,
    /// supcon-loss's libtorch backend, on the run's device.
    Tch,
    /// supcon-loss's CUDA kernels (needs a build with the `cuda` feature and a GPU).
    Cuda,
}

impl LossBackendKind {
    /// The name used in configs (`cpu`, `tch`, `cuda`).
    pub fn as_str(self) -> &'static str {
        match self {
            LossBackendKind::Cpu => "cpu",
            LossBackendKind::Tch => "tch",
            LossBackendKind::Cuda => "cuda",
        }
    }

    /// The loss backend this names, on the run's `device` (CUDA's ordinal) with the CUDA
    /// kernels' `precision`: the configuration's spelling of `supcon_loss::Backend`.
    pub fn backend(self, device: tch::Device, precision: CudaPrecision) -> supcon_loss::Backend {
        match self {
            LossBackendKind::Cpu => supcon_loss::Backend::Cpu,
            LossBackendKind::Tch => supcon_loss::Backend::Tch {
                cuda: match device {
                    tch::Device::Cuda(i) => Some(i),
                    _ => None,
                },
            },
            LossBackendKind::Cuda => supcon_loss::Backend::Cuda {
                ordinal: match device {
                    tch::Device::Cuda(i) => i,
                    _ => 0,
                },
                precision: match precision {
                    CudaPrecision::F32 => supcon_loss::cuda::Precision::F32,
                    CudaPrecision::Tf32 => supcon_loss::cuda::Precision::Tf32,
                },
            },
        }
    }
}

/// Where the mean over positives sits (supcon-loss's `Variant`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossVariant {
    /// `L_out` (Khosla et al. eq. 2, SupContrast's choice).
    #[default]
    Out,
    /// `L_in` (eq. 3).
    In,
}

/// Which rows are anchors (supcon-loss's `ContrastMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AnchorMode {
    /// Every view of every image (SupContrast's `contrast_mode='all'`).
    #[default]
    All,
    /// View 0 only (`contrast_mode='one'`).
    One,
}

/// Matrix precision of the CUDA loss backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CudaPrecision {
    /// f32 FMA throughout.
    #[default]
    F32,
    /// Tensor-core TF32 products with f32 accumulation (Ampere and later).
    Tf32,
}

/// The optimizer's update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum and (coupled) weight decay, PyTorch's rule.
    Sgd,
    /// LARS (You et al. 2017): SGD whose step per tensor is scaled by a trust ratio;
    /// biases and BatchNorm parameters are excluded from the scaling and from weight decay.
    Lars,
}

/// The learning-rate schedule, evaluated per iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Cosine from `lr` down to `lr · lr_decay_rate³` (SupContrast's η_min).
    Cosine,
    /// Multiply by `lr_decay_rate` at each epoch in `lr_decay_epochs`.
    Step,
    /// Constant `lr`.
    Constant,
}

/// Optimizer and schedule settings shared by every stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: ScheduleKind,
    /// Linear warm-up length in epochs; absent: 10 epochs (capped at a tenth of the run) when
    /// the batch exceeds 256, as in SupContrast, else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_epochs: Option<f64>,
    /// The warm-up starts at `lr · warmup_from_fraction`.
    #[serde(default = "default_warmup_from")]
    pub warmup_from_fraction: f64,
    /// Epochs at which the step schedule decays.
    #[serde(default)]
    pub lr_decay_epochs: Vec<u32>,
    /// Decay factor of the step schedule; the cosine schedule ends at `lr · rate³`.
    #[serde(default = "default_decay_rate")]
    pub lr_decay_rate: f64,
    /// LARS trust coefficient η.
    #[serde(default = "default_lars_eta")]
    pub lars_eta: f64,
}

fn default_warmup_from() -> f64 {
    0.01
}
fn default_decay_rate() -> f64 {
    0.1
}
fn default_lars_eta() -> f64 {
    0.001
}

/// Stage 1 (contrastive pre-training).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    pub method: Method,
    pub epochs: u32,
    pub batch_size: usize,
    /// Augmented views per image (2 in the paper).
    pub views: usize,
    /// τ; absent: 0.1 for SupCon, 0.5 for SimCLR (SupContrast's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// τ_base; absent: τ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_temperature: Option<f64>,
    /// `out` (L_out, default) or `in` (L_in).
    #[serde(default)]
    pub variant: LossVariant,
    /// `all` (every view is an anchor, default) or `one` (view 0 only).
    #[serde(default)]
    pub contrast_mode: AnchorMode,
    pub loss_backend: LossBackendKind,
    /// Matrix precision of `loss_backend = "cuda"`: `f32` (default) or `tf32`.
    #[serde(default)]
    pub cuda_precision: CudaPrecision,
    /// Size of the momentum-encoder key queue; 0 disables it.
    #[serde(default)]
    pub queue: usize,
    /// EMA coefficient m of the momentum encoder.
    #[serde(default = "default_queue_momentum")]
    pub queue_momentum: f64,
    /// supcon-augment preset or recipe of the views.
    pub augment: String,
    /// A preset or recipe of view 0 alone (`"none"`: the image itself, as InvSpread's image
    /// and SimCLR's augmentation study's identity branch); absent: view 0 as the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_view_augment: Option<String>,
    /// Multi-crop: smaller local crops besides the views.
    #[serde(default)]
    pub multicrop: MultiCropConfig,
    /// MoCo's settings (`method = "moco"`).
    #[serde(default)]
    pub moco: MocoConfig,
    /// InstDisc's settings (`method = "instdisc"`).
    #[serde(default)]
    pub instdisc: InstDiscConfig,
    /// SwAV's settings (`method = "swav"`).
    #[serde(default)]
    pub swav: SwavConfig,
    /// CPC's settings (`method = "cpc"`).
    #[serde(default)]
    pub cpc: CpcConfig,
    pub optim: OptimConfig,
}

fn default_queue_momentum() -> f64 {
    0.999
}

impl PretrainConfig {
    /// τ after applying the method's default (its registry entry).
    pub fn temperature(&self) -> f64 {
        self.temperature
            .unwrap_or_else(|| (methods::spec(self.method).temperature)(self))
    }
}

/// Multi-crop (SwAV): `local_views` crops of `local_size` × `local_size` besides the
/// `pretrain.views` views, each resolution forwarded as its own batch; for `swav`, `supcon`
/// and `simclr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiCropConfig {
    /// Local crops per image; 0: no multi-crop.
    pub local_views: usize,
    /// Side of the local crops.
    pub local_size: usize,
    /// Augmentation of the local crops (a recipe whose crop sets the size).
    pub local_augment: String,
}

impl Default for MultiCropConfig {
    fn default() -> Self {
        Self {
            local_views: 0,
            local_size: 16,
            // SwAV's local crops cover 5-14 % of the image.
            local_augment: "resized-crop:0.05..0.14+flip+jitter:0.4".into(),
        }
    }
}

/// Stage 2 (linear classifier) or the cross-entropy baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub epochs: u32,
    pub batch_size: usize,
    /// supcon-augment preset of the training images.
    pub augment: String,
    /// Linear stage only: standardize each frozen feature with the training set's mean and
    /// standard deviation before the linear layer (MAE's probe; the book's Training page), so
    /// that one learning rate fits every method's feature scale. Absent in a configuration
    /// written before it existed: off, so an old run's classifier still loads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standardize: bool,
    pub optim: OptimConfig,
}

/// SimCLR v2's fine-tuning stage (`[finetune]`): the pre-trained encoder, the first
/// `from_head_layer` layers of its projection head and a new linear layer, trained end to end
/// with cross-entropy on the labeled training images (with few labels, the labeled subset).
///
/// Every key has a default (`--set finetune.epochs=30` alone is a whole table): SimCLR v2's
/// choices where they carry over (fine-tuning from the head's first layer, SGD with momentum
/// and no weight decay), the learning rate chosen on the validation split at 1 % of
/// Fashion-MNIST's labels (the book's Few labels page).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    pub epochs: u32,
    pub batch_size: usize,
    /// supcon-augment preset of the training images.
    pub augment: String,
    /// How many layers of the projection head the network keeps: 0 = the encoder alone, 1 =
    /// up to the head's first layer (SimCLR v2's choice with its 3-layer head), at most the
    /// head's depth (`model.head`: linear 1, mlp 2, mlp3 3).
    pub from_head_layer: usize,
    pub optim: OptimConfig,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 64,
            augment: "jitter:0.2".into(),
            from_head_layer: 1,
            optim: OptimConfig {
                optimizer: OptimizerKind::Sgd,
                lr: 0.2,
                momentum: 0.9,
                weight_decay: 0.0,
                schedule: ScheduleKind::Cosine,
                warmup_epochs: Some(0.0),
                warmup_from_fraction: default_warmup_from(),
                lr_decay_epochs: Vec::new(),
                lr_decay_rate: default_decay_rate(),
                lars_eta: default_lars_eta(),
            },
        }
    }
}

/// SimCLR v2's distillation stage (`[distill]`): a student trained from scratch on every
/// training image, labeled or not, to match the fine-tuned teacher's tempered class
/// probabilities (the teacher reads clean images, the student augmented ones), optionally
/// plus a weighted cross-entropy on the labeled ones. Every key has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    pub epochs: u32,
    pub batch_size: usize,
    /// supcon-augment preset of the student's images (the teacher's are not augmented).
    pub augment: String,
    /// τ of both softmaxes (SimCLR v2: 1).
    pub temperature: f64,
    /// Weight of the cross-entropy on the labeled images of a batch (summed over them and
    /// divided by the batch size); 0: the teacher alone.
    pub labeled_weight: f64,
    /// The student's architecture; absent: the teacher's (self-distillation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student: Option<supcon_models::Architecture>,
    pub optim: OptimConfig,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            epochs: 6,
            batch_size: 256,
            augment: "jitter:0.2".into(),
            temperature: 1.0,
            labeled_weight: 0.0,
            student: None,
            optim: OptimConfig {
                optimizer: OptimizerKind::Sgd,
                lr: 0.8,
                momentum: 0.9,
                weight_decay: 5e-4,
                schedule: ScheduleKind::Cosine,
                warmup_epochs: Some(0.5),
                warmup_from_fraction: default_warmup_from(),
                lr_decay_epochs: Vec::new(),
                lr_decay_rate: default_decay_rate(),
                lars_eta: default_lars_eta(),
            },
        }
    }
}

/// When checkpoints are written (the `last` one always at the end of each epoch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Keep a numbered checkpoint every this many epochs; 0 = never.
    pub every_epochs: u32,
    /// Also overwrite `last` every this many optimizer steps; 0 = only at epoch ends.
    pub every_steps: u64,
    /// Write a metrics line every this many steps.
    pub log_every_steps: u64,
}

/// The split the final evaluation reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// The test set: read once per final recipe.
    #[default]
    Test,
    /// The held-out validation split: for choosing settings without reading the test set.
    Validation,
}

impl EvalSplit {
    /// The name used in reports and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            EvalSplit::Test => "test",
            EvalSplit::Validation => "validation",
        }
    }
}

/// What the final evaluation computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Which split the final evaluation reads (`test`, or `validation` while tuning).
    #[serde(default)]
    pub split: EvalSplit,
    /// Neighbours of the weighted kNN classifier.
    pub knn_k: usize,
    /// Temperature of the kNN vote weights exp(s/T).
    pub knn_temperature: f64,
    /// Evaluate accuracy under corruptions (severities 1..=5).
    pub robustness: bool,
    /// Test images per class used for the robustness sweep (0 = all).
    pub robustness_per_class: usize,
    /// Batch size of inference.
    pub batch_size: usize,
}

impl RunConfig {
    /// The configuration without where the data lies (`data.path`, `eval_path`,
    /// `test_path`), which may differ between machines while what is read may not: what ranks
    /// compare with each other and a resume with its start.
    pub fn machine_independent(&self) -> RunConfig {
        let mut config = self.clone();
        config.data.path = None;
        config.data.eval_path = None;
        config.data.test_path = None;
        config
    }

    /// The libtorch device named by `device`.
    pub fn tch_device(&self) -> Result<tch::Device, TrainError> {
        parse_device(&self.device)
    }

    /// The distillation stage's settings: `[distill]`, or its defaults without one.
    pub fn distill_settings(&self) -> &DistillConfig {
        static DEFAULT: std::sync::LazyLock<DistillConfig> =
            std::sync::LazyLock::new(DistillConfig::default);
        self.distill.as_ref().unwrap_or(&DEFAULT)
    }

    /// The fine-tuning stage's settings: `[finetune]`, or its defaults without one.
    pub fn finetune_settings(&self) -> &FinetuneConfig {
        static DEFAULT: std::sync::LazyLock<FinetuneConfig> =
            std::sync::LazyLock::new(FinetuneConfig::default);
        self.finetune.as_ref().unwrap_or(&DEFAULT)
    }
}

/// Parses `cpu`, `cuda`, `cuda:N`, `auto`.
pub fn parse_device(name: &str) -> Result<tch::Device, TrainError> {
    match name {
        "cpu" => Ok(tch::Device::Cpu),
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cuda" => cuda_device(0, name),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => cuda_device(index, name),
            _ => Err(TrainError::Config(format!(
                "device `{name}` is not one of cpu, cuda, cuda:N, auto"
            ))),
        },
    }
}

fn cuda_device(index: usize, name: &str) -> Result<tch::Device, TrainError> {
    if tch::Cuda::is_available() && index < tch::Cuda::device_count() as usize {
        Ok(tch::Device::Cuda(index))
    } else {
        Err(TrainError::Config(format!(
            "device `{name}`: no such CUDA device available to libtorch ({} found)",
            if tch::Cuda::is_available() {
                tch::Cuda::device_count()
            } else {
                0
            }
        )))
    }
}
