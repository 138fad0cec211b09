//! The run configuration: a preset, then an optional TOML file, then command-line overrides.
//!
//! Every table denies unknown fields, so a misspelt key is an error that names it instead of a
//! silently ignored setting. The resolved configuration is written to the run folder
//! (`config.toml`) and is what `--resume` reads back.
//!
//! Presets (TOML files in `src/presets/`, embedded in the binary):
//! - `quick-cpu` (default): Fashion-MNIST, resnet-tiny, sized so that `cargo xtask train`
//!   finishes within 30 minutes on 2 CPU cores;
//! - `paper-cifar`: SupContrast's CIFAR hyper-parameters (batch 1024, lr 0.5, τ 0.1, cosine,
//!   10 warm-up epochs; linear stage batch 512, lr 5) with ResNet-50 on CIFAR-10;
//! - `gpu-fashion`: Fashion-MNIST with ResNet-18 for one GPU.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use supcon_models::ModelConfig;

use crate::error::TrainError;

/// The embedded presets: (name, TOML text).
pub const PRESETS: &[(&str, &str)] = &[
    ("quick-cpu", include_str!("presets/quick-cpu.toml")),
    ("paper-cifar", include_str!("presets/paper-cifar.toml")),
    ("gpu-fashion", include_str!("presets/gpu-fashion.toml")),
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
    /// `fashion-mnist`, `cifar10` or `cifar100`.
    pub dataset: String,
    /// Folder of the data set files; `None`: `$SUPCON_DATA`, then the Debian package's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Fraction of the training set held out (stratified) for model selection.
    pub validation_fraction: f64,
    /// Keep only this many training images per class (before the validation split); 0 = all.
    #[serde(default)]
    pub train_per_class: usize,
    /// Keep only this many test images per class; 0 = all.
    #[serde(default)]
    pub test_per_class: usize,
}

/// Contrastive method of stage 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Supervised contrastive: every sample of the same class is a positive.
    Supcon,
    /// SimCLR: only the other views of the same image are positives (labels unused).
    Simclr,
}

impl Method {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Supcon => "supcon",
            Method::Simclr => "simclr",
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
    pub loss_backend: LossBackendKind,
    /// Size of the momentum-encoder key queue; 0 disables it.
    #[serde(default)]
    pub queue: usize,
    /// EMA coefficient m of the momentum encoder.
    #[serde(default = "default_queue_momentum")]
    pub queue_momentum: f64,
    /// supcon-augment preset of the views.
    pub augment: String,
    pub optim: OptimConfig,
}

fn default_queue_momentum() -> f64 {
    0.999
}

impl PretrainConfig {
    /// τ after applying the method's default.
    pub fn temperature(&self) -> f64 {
        self.temperature.unwrap_or(match self.method {
            Method::Supcon => 0.1,
            Method::Simclr => 0.5,
        })
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

/// What the final evaluation computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
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

/// Builds a configuration: `preset`, then `file` (a partial TOML overlay: only the keys it
/// names change), then `overrides` (`section.key=value`, value parsed as TOML, else a string).
pub fn resolve(
    preset: &str,
    file: Option<&Path>,
    overrides: &[String],
) -> Result<RunConfig, TrainError> {
    let mut table: toml::Table = toml::from_str(preset_text(preset)?)
        .map_err(|e| TrainError::Config(format!("preset `{preset}` is invalid: {e}")))?;
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
    let config = from_table(table)?;
    config.validate()?;
    Ok(config)
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
        other => other.to_string(),
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

    /// The resolved configuration as TOML (what `config.toml` holds).
    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string_pretty(self).map_err(|e| TrainError::Config(e.to_string()))
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
        self.model
            .validate()
            .map_err(|e| TrainError::Config(format!("model: {e}")))?;
        let p = &self.pretrain;
        if p.batch_size < 2 {
            return bad("pretrain.batch_size", format!("{} < 2", p.batch_size));
        }
        if p.views < 1 {
            return bad("pretrain.views", "must be at least 1".into());
        }
        if p.method == Method::Simclr && p.views < 2 {
            return bad("pretrain.views", "SimCLR needs at least 2 views".into());
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
    fn paper_preset_has_supcontrast_hyper_parameters() {
        let c = RunConfig::preset("paper-cifar").unwrap();
        assert_eq!(c.pretrain.batch_size, 1024);
        assert_eq!(c.pretrain.optim.lr, 0.5);
        assert_eq!(c.pretrain.temperature(), 0.1);
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
            &["pretrain.epochs=5".into(), "pretrain.method=simclr".into()],
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
