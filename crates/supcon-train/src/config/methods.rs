//! Each contrastive method's part of the schema: its settings table (`[pretrain.moco]`, …) and
//! its requirements (views, default τ), which validation reads. Schema-side, so that the
//! configuration never imports the pipeline; the methods themselves are
//! `pipeline::methods::*`, built by that registry.

use serde::{Deserialize, Serialize};

use super::{limits, LossBackendKind, Method, PretrainConfig};
use crate::error::TrainError;

/// What a method asks of the configuration.
pub struct MethodSpec {
    /// τ when the config does not set one (the method's published value).
    pub temperature: fn(&PretrainConfig) -> f64,
    /// The fewest augmented views per image the method works with.
    pub min_views: usize,
    /// The most views it uses (`None`: any number).
    pub max_views: Option<usize>,
    /// Whether it needs class labels (SupCon); the others train on unlabeled images.
    pub needs_labels: bool,
    /// Whether it takes the label-aware momentum queue (`pretrain.queue`); methods with a queue
    /// of their own keep it in their table.
    pub label_queue: bool,
    /// Whether it takes multi-crop's local views (`pretrain.multicrop`).
    pub multicrop: bool,
    /// Whether its probe reads one encoder on the image, so that `[finetune]` can train that
    /// network (CMC reads two encoders, CPC a patch grid).
    pub fine_tunable: bool,
    /// The `pretrain.loss_backend`s its loss has in `supcon-loss` (`cpu` always: the reference).
    pub loss_backends: &'static [LossBackendKind],
    /// The checks of its own settings table (`[pretrain.<name>]`), if it has one.
    pub settings: fn(&PretrainConfig) -> Result<(), TrainError>,
}

/// Each loss's published τ: what a method uses when the configuration sets none, and what
/// `supcon loss` uses without `--temperature` (one place for both).
pub mod default_temperature {
    /// SupCon (SupContrast's).
    pub const SUPCON: f64 = 0.1;
    /// SimCLR (SupContrast's SimCLR setting).
    pub const SIMCLR: f64 = 0.5;
    /// MoCo v1.
    pub const MOCO_V1: f64 = 0.07;
    /// MoCo v2 (and `supcon loss --method infonce`).
    pub const MOCO_V2: f64 = 0.2;
    /// InstDisc's NCE.
    pub const INSTDISC: f64 = 0.07;
    /// InvSpread (the paper's).
    pub const INVSPREAD: f64 = 0.1;
    /// SwAV.
    pub const SWAV: f64 = 0.1;
    /// CMC.
    pub const CMC: f64 = 0.07;

    /// CPC: 0.1 on unit rows (ours), 1 on CPC's raw dot products.
    pub fn cpc(normalize: bool) -> f64 {
        if normalize {
            0.1
        } else {
            1.0
        }
    }
}

/// Each `(key, value, bound)` of a method's table against its bound (`config::limits`).
fn within_limits(table: &str, sizes: &[(&str, usize, u64)]) -> Result<(), TrainError> {
    let sizes: Vec<(&str, u64, u64)> = sizes
        .iter()
        .map(|&(key, value, max)| (key, value as u64, max))
        .collect();
    limits::check_sizes(&format!("pretrain.{table}."), &sizes)
}

/// A method without a settings table has nothing of its own to check.
fn no_settings(_: &PretrainConfig) -> Result<(), TrainError> {
    Ok(())
}

const EVERY_BACKEND: &[LossBackendKind] = &[
    LossBackendKind::Cpu,
    LossBackendKind::Tch,
    LossBackendKind::Cuda,
];
/// Losses with a libtorch tensor function but no CUDA kernels.
const CPU_AND_TCH: &[LossBackendKind] = &[LossBackendKind::Cpu, LossBackendKind::Tch];

/// Every [`Method`]'s requirements.
pub fn spec(method: Method) -> MethodSpec {
    match method {
        // τ = 0.1 (SupContrast's), one view or more.
        Method::Supcon => MethodSpec {
            temperature: |_| default_temperature::SUPCON,
            min_views: 1,
            max_views: None,
            needs_labels: true,
            label_queue: true,
            multicrop: true,
            fine_tunable: true,
            loss_backends: EVERY_BACKEND,
            settings: no_settings,
        },
        // τ = 0.5 (SupContrast's SimCLR setting), two views or more.
        Method::Simclr => MethodSpec {
            temperature: |_| default_temperature::SIMCLR,
            min_views: 2,
            max_views: None,
            needs_labels: false,
            label_queue: true,
            multicrop: true,
            fine_tunable: true,
            loss_backends: EVERY_BACKEND,
            settings: no_settings,
        },
        // τ 0.07 (v1) or 0.2 (v2), two views.
        Method::Moco => MethodSpec {
            temperature: |config| {
                if config.moco.version == 1 {
                    default_temperature::MOCO_V1
                } else {
                    default_temperature::MOCO_V2
                }
            },
            min_views: 2,
            max_views: Some(2),
            needs_labels: false,
            label_queue: false,
            multicrop: false,
            fine_tunable: true,
            loss_backends: CPU_AND_TCH,
            settings: |config| config.moco.validate(),
        },
        // τ = 0.07, one view.
        Method::Instdisc => MethodSpec {
            temperature: |_| default_temperature::INSTDISC,
            min_views: 1,
            max_views: Some(1),
            needs_labels: false,
            label_queue: false,
            multicrop: false,
            fine_tunable: true,
            loss_backends: CPU_AND_TCH,
            settings: |config| config.instdisc.validate(),
        },
        // τ = 0.1 (the paper's), each image and one augmented copy.
        Method::Invspread => MethodSpec {
            temperature: |_| default_temperature::INVSPREAD,
            min_views: 2,
            max_views: Some(2),
            needs_labels: false,
            label_queue: false,
            multicrop: false,
            fine_tunable: true,
            loss_backends: CPU_AND_TCH,
            settings: no_settings,
        },
        // τ = 0.1, two global views (and any number of local crops).
        Method::Swav => MethodSpec {
            temperature: |_| default_temperature::SWAV,
            min_views: 2,
            max_views: Some(2),
            needs_labels: false,
            label_queue: false,
            multicrop: true,
            fine_tunable: true,
            loss_backends: CPU_AND_TCH,
            settings: |config| config.swav.validate(),
        },
        // τ = 0.07 (CMC's), one augmented view: the second modality is computed from it.
        Method::Cmc => MethodSpec {
            temperature: |_| default_temperature::CMC,
            min_views: 1,
            max_views: Some(1),
            needs_labels: false,
            label_queue: false,
            multicrop: false,
            fine_tunable: false,
            loss_backends: CPU_AND_TCH,
            settings: no_settings,
        },
        // τ = 0.1 on unit rows (ours), 1 with CPC's raw dot products; one view, cut into
        // patches.
        Method::Cpc => MethodSpec {
            temperature: |config| default_temperature::cpc(config.cpc.normalize),
            min_views: 1,
            max_views: Some(1),
            needs_labels: false,
            label_queue: false,
            multicrop: false,
            fine_tunable: false,
            loss_backends: CPU_AND_TCH,
            settings: |config| config.cpc.validate(),
        },
    }
}

/// CPC's settings (`[pretrain.cpc]`): the patch grid and what is predicted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpcConfig {
    /// Side of a square patch, in pixels (CPC v2: 64 of 256; here 10 of 28).
    pub patch: usize,
    /// Pixels between patches (CPC v2: half a patch, 32; here 6, so patches overlap by 4).
    pub stride: usize,
    /// K, the rows below that each context predicts (offsets 1..=K).
    pub offsets: usize,
    /// Unit-length predictions and targets with τ (ours), or CPC's raw dot products (`false`,
    /// then τ defaults to 1).
    pub normalize: bool,
}

impl Default for CpcConfig {
    fn default() -> Self {
        Self {
            patch: 10,
            stride: 6,
            offsets: 2,
            normalize: true,
        }
    }
}

impl CpcConfig {
    /// Rejects values that cannot work, naming the key (whether the grid fits the images is
    /// checked when the method is built, with the images' size).
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad =
            |key: &str, why: String| Err(TrainError::Config(format!("pretrain.cpc.{key}: {why}")));
        for (key, value) in [
            ("patch", self.patch),
            ("stride", self.stride),
            ("offsets", self.offsets),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        within_limits(
            "cpc",
            &[
                ("patch", self.patch, limits::MAX_IMAGE_SIDE),
                ("stride", self.stride, limits::MAX_IMAGE_SIDE),
                ("offsets", self.offsets, limits::MAX_IMAGE_SIDE),
            ],
        )
    }
}

/// MoCo's settings (`[pretrain.moco]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoConfig {
    /// 1 or 2: the default temperature (0.07 or 0.2).
    pub version: u8,
    /// K, keys in the queue (65 536 on ImageNet; a few thousand suit Fashion-MNIST's 54 000).
    pub queue: usize,
    /// m of the key encoder's moving average (at the start, with `momentum_final`).
    pub momentum: f64,
    /// When set, m rises from `momentum` to this along a half cosine over the run (BYOL's
    /// schedule; solo-learn's MoCo v2+ goes from 0.99 to 1.0); absent: m stays constant.
    pub momentum_final: Option<f64>,
    /// Use both directions (q₀·k₁ and q₁·k₀) and enqueue both keys.
    pub symmetric: bool,
    /// Groups of the shuffled BatchNorm of the key encoder (MoCo's per-GPU sub-batches).
    pub shuffle_groups: usize,
}

impl Default for MocoConfig {
    fn default() -> Self {
        Self {
            version: 2,
            queue: 4096,
            momentum: 0.999,
            momentum_final: None,
            symmetric: false,
            shuffle_groups: 4,
        }
    }
}

impl MocoConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad =
            |key: &str, why: String| Err(TrainError::Config(format!("pretrain.moco.{key}: {why}")));
        if !matches!(self.version, 1 | 2) {
            return bad("version", format!("{} is not 1 or 2", self.version));
        }
        if self.queue == 0 {
            return bad("queue", "MoCo needs a queue of at least one key".into());
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", format!("{} is not in [0, 1)", self.momentum));
        }
        if let Some(end) = self.momentum_final {
            if !(self.momentum..=1.0).contains(&end) {
                return bad(
                    "momentum_final",
                    format!("{end} is not in [momentum = {}, 1]", self.momentum),
                );
            }
        }
        if self.shuffle_groups == 0 {
            return bad("shuffle_groups", "must be at least 1".into());
        }
        within_limits(
            "moco",
            &[
                ("queue", self.queue, limits::MAX_QUEUE),
                ("shuffle_groups", self.shuffle_groups, limits::MAX_BATCH),
            ],
        )
    }
}

/// InstDisc's settings (`[pretrain.instdisc]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstDiscConfig {
    /// m, bank entries drawn per image as negatives (4096 in the paper).
    pub negatives: usize,
    /// β, the weight of the old entry in the bank update (0.5 in the paper).
    pub bank_momentum: f64,
    /// Z, when given; absent: estimated on the first batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<f64>,
    /// μ of Z's running average after every step, `Z ← μ·Z + (1 − μ)·Ẑ` with Ẑ the batch's
    /// estimate. 1 (InstDisc's): Z stays at its first value, estimated on a bank of random
    /// vectors, which is too small once the bank holds learned embeddings (HobbitLong/CMC
    /// issue #23 suggests 0.99).
    pub partition_momentum: f64,
    /// λ of the proximal regularization `λ‖v_i^(t) − v_i^(t−1)‖²` (InstDisc §3.4): the new
    /// embedding's squared distance from the image's bank entry; 0 = off.
    pub proximal: f64,
}

impl Default for InstDiscConfig {
    fn default() -> Self {
        Self {
            negatives: 4096,
            bank_momentum: 0.5,
            partition: None,
            partition_momentum: 1.0,
            proximal: 0.0,
        }
    }
}

impl InstDiscConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |key: &str, why: String| {
            Err(TrainError::Config(format!(
                "pretrain.instdisc.{key}: {why}"
            )))
        };
        if self.negatives == 0 {
            return bad("negatives", "must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.bank_momentum) {
            return bad(
                "bank_momentum",
                format!("{} is not in [0, 1)", self.bank_momentum),
            );
        }
        if let Some(z) = self.partition {
            if !(z.is_finite() && z > 0.0) {
                return bad("partition", format!("{z} is not a positive number"));
            }
        }
        if !(0.0..=1.0).contains(&self.partition_momentum) {
            return bad(
                "partition_momentum",
                format!("{} is not in [0, 1]", self.partition_momentum),
            );
        }
        if !(self.proximal.is_finite() && self.proximal >= 0.0) {
            return bad(
                "proximal",
                format!("{} is not a number >= 0", self.proximal),
            );
        }
        within_limits(
            "instdisc",
            &[("negatives", self.negatives, limits::MAX_QUEUE)],
        )
    }
}

/// SwAV's settings (`[pretrain.swav]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwavConfig {
    /// K, the prototypes (3 000 on ImageNet; a few hundred suit ten classes).
    pub prototypes: usize,
    /// ε of Sinkhorn–Knopp.
    pub epsilon: f64,
    /// Sinkhorn–Knopp iterations.
    pub sinkhorn_iterations: usize,
    /// Epochs at the start during which the prototypes do not move.
    pub freeze_prototypes_epochs: u32,
    /// Embeddings kept per assignment crop for the codes of small batches; 0: no queue.
    pub queue: usize,
    /// The epoch (from 0) from which the queue is filled.
    pub queue_start_epoch: u32,
}

impl Default for SwavConfig {
    fn default() -> Self {
        Self {
            prototypes: 100,
            epsilon: 0.05,
            sinkhorn_iterations: 3,
            freeze_prototypes_epochs: 1,
            queue: 0,
            queue_start_epoch: 0,
        }
    }
}

impl SwavConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad =
            |key: &str, why: String| Err(TrainError::Config(format!("pretrain.swav.{key}: {why}")));
        if self.prototypes < 2 {
            return bad("prototypes", format!("{} < 2", self.prototypes));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad(
                "epsilon",
                format!("{} is not a positive number", self.epsilon),
            );
        }
        if self.sinkhorn_iterations == 0 {
            return bad("sinkhorn_iterations", "must be at least 1".into());
        }
        within_limits(
            "swav",
            &[
                ("queue", self.queue, limits::MAX_QUEUE),
                ("prototypes", self.prototypes, limits::MAX_PROTOTYPES),
                (
                    "sinkhorn_iterations",
                    self.sinkhorn_iterations,
                    limits::MAX_ITERATIONS,
                ),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every method must provide on the schema side, listed and checked for each: a name
    /// that round-trips through the config, views and τ that make sense, and a preset to start
    /// from (named by `--method X`'s errors). The pipeline side (`pipeline::methods::parts`) is
    /// an exhaustive `match`: the compiler refuses a method without it.
    #[test]
    fn every_method_provides_what_the_schema_needs() {
        for &method in <Method as clap::ValueEnum>::value_variants() {
            let name = method.as_str();
            let parsed: Method = toml::Value::String(name.into())
                .try_into()
                .unwrap_or_else(|e| panic!("{name} does not parse back: {e}"));
            assert_eq!(parsed, method);
            let spec = spec(method);
            assert!(spec.min_views >= 1, "{name}");
            assert!(
                spec.max_views.is_none_or(|max| max >= spec.min_views),
                "{name}"
            );
            let preset = super::super::presets::presets_of(method);
            assert!(!preset.is_empty(), "{name} has no preset to start from");
            let config = super::super::RunConfig::preset(preset[0]).unwrap();
            let tau = (spec.temperature)(&config.pretrain);
            assert!(tau > 0.0 && tau.is_finite(), "{name}: default τ {tau}");
            // The CPU loss is every method's reference, and libtorch runs every loss on the
            // training device (tests/backend_parity.rs trains each on both).
            for backend in [LossBackendKind::Cpu, LossBackendKind::Tch] {
                assert!(spec.loss_backends.contains(&backend), "{name}: {backend:?}");
            }
            (spec.settings)(&config.pretrain)
                .unwrap_or_else(|e| panic!("{name}'s preset fails its own checks: {e}"));
        }
    }

    #[test]
    fn a_momentum_schedule_must_rise_and_stay_below_one() {
        let with_final = |end| MocoConfig {
            momentum: 0.99,
            momentum_final: Some(end),
            ..MocoConfig::default()
        };
        with_final(1.0).validate().unwrap();
        with_final(0.99).validate().unwrap();
        for end in [0.9, 1.01, f64::NAN] {
            let message = with_final(end).validate().unwrap_err().to_string();
            assert!(
                message.contains("pretrain.moco.momentum_final"),
                "{message}"
            );
        }
    }

    #[test]
    fn zs_running_average_needs_a_momentum_in_the_unit_interval() {
        let with = |partition_momentum| InstDiscConfig {
            partition_momentum,
            ..InstDiscConfig::default()
        };
        for mu in [0.0, 0.99, 1.0] {
            with(mu).validate().unwrap();
        }
        for mu in [-0.1, 1.01, f64::NAN] {
            let message = with(mu).validate().unwrap_err().to_string();
            assert!(
                message.contains("pretrain.instdisc.partition_momentum"),
                "{message}"
            );
        }
    }

    /// `pretrain.loss_backend` is checked against the method's own list: every backend it has
    /// passes, any other fails naming the ones it has.
    #[test]
    fn loss_backends_are_checked_against_the_methods_list() {
        use clap::ValueEnum;
        for method in Method::all() {
            let preset = super::super::presets::presets_of(method)[0];
            for &backend in LossBackendKind::value_variants() {
                let mut config = super::super::RunConfig::preset(preset).unwrap();
                config.pretrain.loss_backend = backend;
                let result = config.validate();
                if spec(method).loss_backends.contains(&backend) {
                    result.unwrap_or_else(|e| panic!("{method:?} with {backend:?}: {e}"));
                } else {
                    let message = result.unwrap_err().to_string();
                    assert!(
                        message.contains("pretrain.loss_backend")
                            && message.contains("use one of cpu, tch"),
                        "{method:?} with {backend:?}: {message}"
                    );
                }
            }
        }
    }
}
