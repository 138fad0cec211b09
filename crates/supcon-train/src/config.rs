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

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use supcon_models::ModelConfig;

use crate::error::TrainError;
use crate::pipeline::methods::instdisc::InstDiscConfig;
use crate::pipeline::methods::moco::MocoConfig;
use crate::pipeline::methods::swav::SwavConfig;

/// The embedded presets: (name, TOML text).
pub const PRESETS: &[(&str, &str)] = &[
    ("quick-cpu", include_str!("presets/quick-cpu.toml")),
    ("paper-cifar", include_str!("presets/paper-cifar.toml")),
    ("gpu-fashion", include_str!("presets/gpu-fashion.toml")),
    ("cpu-long", include_str!("presets/cpu-long.toml")),
    (
        "quick-cpu-simclr",
        include_str!("presets/quick-cpu-simclr.toml"),
    ),
    (
        "quick-cpu-moco-v1",
        include_str!("presets/quick-cpu-moco-v1.toml"),
    ),
    (
        "quick-cpu-moco-v2",
        include_str!("presets/quick-cpu-moco-v2.toml"),
    ),
    (
        "quick-cpu-instdisc",
        include_str!("presets/quick-cpu-instdisc.toml"),
    ),
    (
        "quick-cpu-swav",
        include_str!("presets/quick-cpu-swav.toml"),
    ),
];

/// The preset used when none is named.
pub const DEFAULT_PRESET: &str = "quick-cpu";

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
}

impl DataConfig {
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
    /// SwAV: Sinkhorn–Knopp codes and swapped prediction (`[pretrain.swav]`).
    Swav,
}

impl Method {
    /// The name used in configs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Supcon => "supcon",
            Method::Simclr => "simclr",
            Method::Moco => "moco",
            Method::Instdisc => "instdisc",
            Method::Swav => "swav",
        }
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
    pub optim: OptimConfig,
}

fn default_queue_momentum() -> f64 {
    0.999
}

impl PretrainConfig {
    /// τ after applying the method's default (its registry entry).
    pub fn temperature(&self) -> f64 {
        self.temperature
            .unwrap_or_else(|| (crate::pipeline::methods::info(self.method).temperature)(self))
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
    pub optim: OptimConfig,
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

/// Text of a named preset.
pub fn preset_text(name: &str) -> Result<&'static str, TrainError> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            TrainError::Config(format!(
                "unknown preset `{name}` (expected one of: {})",
                names.join(", ")
            ))
        })
}

/// The table of preset `name`. A preset may start with `extends = "other"`: the other
/// preset's table with this one's keys laid over it (so a method's preset names only what
/// differs from the default recipe).
fn preset_table(name: &str, depth: usize) -> Result<toml::Table, TrainError> {
    let mut table: toml::Table = toml::from_str(preset_text(name)?)
        .map_err(|e| TrainError::Config(format!("preset `{name}` is invalid: {e}")))?;
    match table.remove("extends") {
        None => Ok(table),
        Some(toml::Value::String(base)) if depth < 4 => {
            let mut merged = preset_table(&base, depth + 1)?;
            merge(&mut merged, table);
            Ok(merged)
        }
        Some(other) => Err(TrainError::Config(format!(
            "preset `{name}`: `extends = {other}` must name another preset (at most 4 deep)"
        ))),
    }
}

/// Builds a configuration: `preset`, then `file` (a partial TOML overlay: only the keys it
/// names change), then `overrides` (`section.key=value`, value parsed as TOML, else a string).
pub fn resolve(
    preset: &str,
    file: Option<&Path>,
    overrides: &[String],
) -> Result<RunConfig, TrainError> {
    let mut table = preset_table(preset, 0)?;
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| TrainError::io(file, e))?;
        let overlay: toml::Table = toml::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", file.display())))?;
        merge(&mut table, overlay);
        // Check the file's keys alone first, so an error names the file.
        from_table(table.clone()).map_err(|e| {
            TrainError::Config(format!("{}: {}", file.display(), strip_config_prefix(&e)))
        })?;
    }
    for item in overrides {
        apply_override(&mut table, item)?;
    }
    let config = from_table(table.clone())?;
    check_method_tables(&table, config.pretrain.method)?;
    config.validate()?;
    Ok(config)
}

/// Another method's table (`[pretrain.swav]` under `method = "moco"`) would be read by nothing:
/// an error, like a misspelt key. (Resolved `config.toml` files leave those tables out.)
fn check_method_tables(table: &toml::Table, method: Method) -> Result<(), TrainError> {
    let Some(pretrain) = table.get("pretrain").and_then(toml::Value::as_table) else {
        return Ok(());
    };
    match pretrain
        .keys()
        .find(|key| is_other_methods_table(key, method))
    {
        Some(other) => Err(TrainError::Config(format!(
            "[pretrain.{other}] is read only with pretrain.method = \"{other}\", and the method \
             is \"{}\": drop the table, or pass --method {other}",
            method.as_str()
        ))),
        None => Ok(()),
    }
}

/// `key` of `[pretrain]` names a method's own table, and not `method`'s.
fn is_other_methods_table(key: &str, method: Method) -> bool {
    key != method.as_str()
        && <Method as clap::ValueEnum>::value_variants()
            .iter()
            .any(|m| m.as_str() == key)
}

/// The presets whose recipe is `method`'s (named in errors as a starting point).
fn presets_of(method: Method) -> Vec<&'static str> {
    PRESETS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| {
            preset_table(name, 0).is_ok_and(|table| {
                let preset_method = table
                    .get("pretrain")
                    .and_then(|p| p.get("method"))
                    .and_then(toml::Value::as_str);
                preset_method == Some(method.as_str())
            })
        })
        .collect()
}

/// Reads a resolved configuration (a run folder's `config.toml`).
pub fn load_resolved(path: &Path) -> Result<RunConfig, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let config = from_table(table).map_err(|e| {
        TrainError::Config(format!("{}: {}", path.display(), strip_config_prefix(&e)))
    })?;
    config.validate()?;
    Ok(config)
}

fn strip_config_prefix(e: &TrainError) -> String {
    match e {
        TrainError::Config(message) => message.clone(),
        other => crate::error::chain(other),
    }
}

fn from_table(table: toml::Table) -> Result<RunConfig, TrainError> {
    RunConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| TrainError::Config(e.to_string().trim().to_string()))
}

/// Applies one `a.b.c=value` override.
pub fn apply_override(table: &mut toml::Table, item: &str) -> Result<(), TrainError> {
    let (key, raw) = item.split_once('=').ok_or_else(|| {
        TrainError::Config(format!(
            "override `{item}` is not of the form section.key=value"
        ))
    })?;
    let key = key.trim();
    let raw = raw.trim();
    // A TOML value when it parses as one (numbers, booleans, arrays), else a bare string.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TrainError::Config(format!(
            "override `{item}`: empty key part"
        )));
    }
    let mut current = table;
    for part in &parts[..parts.len() - 1] {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            TrainError::Config(format!("override `{item}`: `{part}` is not a table"))
        })?;
    }
    current.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Recursively overlays `overlay` on `base`.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl RunConfig {
    /// The configuration of a named preset, unchanged.
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        resolve(name, None, &[])
    }

    /// The resolved configuration as TOML (what `config.toml` holds). The other methods' tables
    /// are left out, so the file can be given back with `--config`, where they are errors.
    pub fn to_toml(&self) -> Result<String, TrainError> {
        let error = |e: &dyn std::fmt::Display| TrainError::Config(e.to_string());
        let mut table = toml::Table::try_from(self).map_err(|e| error(&e))?;
        if let Some(pretrain) = table
            .get_mut("pretrain")
            .and_then(toml::Value::as_table_mut)
        {
            pretrain.retain(|key, _| !is_other_methods_table(key, self.pretrain.method));
        }
        toml::to_string_pretty(&table).map_err(|e| error(&e))
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |key: &str, why: String| Err(TrainError::Config(format!("{key}: {why}")));
        if !(0.0..1.0).contains(&self.data.validation_fraction) {
            return bad(
                "data.validation_fraction",
                format!("{} is not in [0, 1)", self.data.validation_fraction),
            );
        }
        crate::pipeline::data::DataSource::parse(&self.data)?;
        if !self.data.labels {
            if self.pretrain.method == Method::Supcon {
                return bad(
                    "data.labels",
                    format!(
                        "{} needs labels; train a self-supervised method (simclr, moco, instdisc, swav) on unlabeled images",
                        self.pretrain.method.as_str()
                    ),
                );
            }
            crate::pipeline::data::DataSource::parse(&self.data.labeled()?)?;
        }
        self.model
            .validate()
            .map_err(|e| TrainError::Config(format!("model: {e}")))?;
        let p = &self.pretrain;
        if p.batch_size < 2 {
            return bad("pretrain.batch_size", format!("{} < 2", p.batch_size));
        }
        let method = crate::pipeline::methods::info(p.method);
        let name = p.method.as_str();
        // `--method X` on another method's preset lands here first: name the fix.
        let fix = |views: usize| {
            let presets = presets_of(p.method);
            let start = match presets.as_slice() {
                [] => String::new(),
                names => format!(", or start from --preset {}", names.join(" / ")),
            };
            format!("pass --views {views}{start}")
        };
        if p.views < method.min_views {
            return bad(
                "pretrain.views",
                format!(
                    "{name} needs at least {} views, got {}: {}",
                    method.min_views,
                    p.views,
                    fix(method.min_views)
                ),
            );
        }
        if let Some(max) = method.max_views.filter(|&max| p.views > max) {
            return bad(
                "pretrain.views",
                format!("{name} uses {max} view(s), got {}: {}", p.views, fix(max)),
            );
        }
        let in_batch = matches!(p.method, Method::Supcon | Method::Simclr);
        if !in_batch && p.queue > 0 {
            return bad(
                "pretrain.queue",
                format!("the label-aware queue is SupCon's and SimCLR's; {name} has its own settings in [pretrain.{name}]"),
            );
        }
        if !in_batch && p.loss_backend != LossBackendKind::Cpu {
            return bad(
                "pretrain.loss_backend",
                format!("{name}'s loss runs on supcon-loss's CPU backend only"),
            );
        }
        if p.multicrop.local_views > 0 && !(in_batch || p.method == Method::Swav) {
            return bad(
                "pretrain.multicrop.local_views",
                format!("multi-crop is for swav, supcon and simclr, not {name}"),
            );
        }
        if p.multicrop.local_views > 0 && p.multicrop.local_size == 0 {
            return bad("pretrain.multicrop.local_size", "must be at least 1".into());
        }
        match p.method {
            Method::Moco => p.moco.validate()?,
            Method::Instdisc => p.instdisc.validate()?,
            Method::Swav => p.swav.validate()?,
            Method::Supcon | Method::Simclr => {}
        }
        let t = p.temperature();
        if !(t.is_finite() && t > 0.0) {
            return bad(
                "pretrain.temperature",
                format!("{t} is not a positive number"),
            );
        }
        if !(0.0..1.0).contains(&p.queue_momentum) {
            return bad(
                "pretrain.queue_momentum",
                format!("{} is not in [0, 1)", p.queue_momentum),
            );
        }
        for (name, stage_batch, optim) in [
            ("pretrain", p.batch_size, &p.optim),
            ("linear", self.linear.batch_size, &self.linear.optim),
            ("ce", self.ce.batch_size, &self.ce.optim),
        ] {
            if stage_batch == 0 {
                return bad(&format!("{name}.batch_size"), "must be at least 1".into());
            }
            if !(optim.lr.is_finite() && optim.lr > 0.0) {
                return bad(
                    &format!("{name}.optim.lr"),
                    format!("{} is not positive", optim.lr),
                );
            }
            if !(0.0..1.0).contains(&optim.momentum) {
                return bad(
                    &format!("{name}.optim.momentum"),
                    format!("{} is not in [0, 1)", optim.momentum),
                );
            }
            if optim.weight_decay.is_nan() || optim.weight_decay < 0.0 {
                return bad(
                    &format!("{name}.optim.weight_decay"),
                    format!("{} is negative", optim.weight_decay),
                );
            }
        }
        if self.eval.split == EvalSplit::Validation && self.data.validation_fraction == 0.0 {
            return bad(
                "eval.split",
                "`validation` needs data.validation_fraction > 0".into(),
            );
        }
        if self.eval.knn_k == 0 {
            return bad("eval.knn_k", "must be at least 1".into());
        }
        if self.eval.batch_size == 0 {
            return bad("eval.batch_size", "must be at least 1".into());
        }
        if self.checkpoint.log_every_steps == 0 {
            return bad("checkpoint.log_every_steps", "must be at least 1".into());
        }
        Ok(())
    }

    /// The libtorch device named by `device`.
    pub fn tch_device(&self) -> Result<tch::Device, TrainError> {
        parse_device(&self.device)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_resolves_and_round_trips_through_its_toml() {
        for (name, _) in PRESETS {
            let config = RunConfig::preset(name).unwrap();
            let text = config.to_toml().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).unwrap();
            assert_eq!(load_resolved(&path).unwrap(), config, "preset {name}");
        }
    }

    #[test]
    fn another_methods_table_is_an_error_and_config_toml_leaves_them_out() {
        let err = resolve(
            "quick-cpu",
            None,
            &[
                "pretrain.method=moco".into(),
                "pretrain.views=2".into(),
                "pretrain.swav.prototypes=10".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("[pretrain.swav]"), "{err}");
        assert!(err.contains("\"moco\""), "{err}");
        // The method's own table is read; every preset's config.toml goes back in as --config.
        for (name, _) in PRESETS {
            let config = RunConfig::preset(name).unwrap();
            let text = config.to_toml().unwrap();
            let tables: Vec<&str> = ["moco", "instdisc", "swav"]
                .into_iter()
                .filter(|m| text.contains(&format!("[pretrain.{m}]")))
                .collect();
            let own = config.pretrain.method.as_str();
            assert!(tables.iter().all(|m| *m == own), "{name}: {tables:?}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).unwrap();
            assert_eq!(resolve(name, Some(&path), &[]).unwrap(), config, "{name}");
        }
    }

    #[test]
    fn a_method_without_its_views_names_the_fix() {
        let err = resolve("quick-cpu", None, &["pretrain.method=simclr".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--views 2"), "{err}");
        assert!(err.contains("--preset quick-cpu-simclr"), "{err}");
        let err = resolve("quick-cpu-moco-v2", None, &["pretrain.views=3".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--views 2"), "{err}");
        assert!(
            err.contains("quick-cpu-moco-v1 / quick-cpu-moco-v2"),
            "{err}"
        );
    }

    #[test]
    fn paper_preset_has_supcontrast_hyper_parameters() {
        let c = RunConfig::preset("paper-cifar").unwrap();
        assert_eq!(c.pretrain.batch_size, 1024);
        assert_eq!(c.pretrain.optim.lr, 0.5);
        assert_eq!(c.pretrain.temperature(), 0.1);
        // SupContrast's SupConLoss default.
        assert_eq!(c.pretrain.base_temperature, Some(0.07));
        assert_eq!(c.pretrain.optim.schedule, ScheduleKind::Cosine);
        assert_eq!(c.linear.batch_size, 512);
        assert_eq!(c.linear.optim.lr, 5.0);
    }

    #[test]
    fn a_misspelt_key_in_a_file_is_an_error_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "[pretrain]\nepochz = 3\n").unwrap();
        let err = resolve("quick-cpu", Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochz"), "{err}");
        assert!(err.contains("run.toml"), "{err}");
    }

    #[test]
    fn file_then_overrides_are_applied_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "seed = 7\n[pretrain]\nepochs = 3\n").unwrap();
        let c = resolve(
            "quick-cpu",
            Some(&path),
            &[
                "pretrain.epochs=5".into(),
                "pretrain.method=simclr".into(),
                "pretrain.views=2".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.pretrain.epochs, 5);
        assert_eq!(c.pretrain.method, Method::Simclr);
        assert_eq!(c.pretrain.temperature(), 0.5);
        let err = resolve("quick-cpu", None, &["pretrain.lr=0.1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr"), "{err}");
        let err = resolve("quick-cpu", None, &["pretrain.optim.lr=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pretrain.optim.lr"), "{err}");
    }
}
