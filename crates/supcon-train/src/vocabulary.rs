//! Words every part of a run shares, and nothing else: the training stages and the metric
//! record (one line of `metrics.jsonl`, one scalar set of TensorBoard, one point of a plot).
//! A leaf: it imports no other module of the crate, so the modules that log, store, report and
//! draw can all use it without importing each other.

use serde::{Deserialize, Serialize};

/// Which training stage a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Stage 1: contrastive pre-training (SupCon or SimCLR).
    Pretrain,
    /// Stage 2: linear classifier on the frozen encoder.
    Linear,
    /// The cross-entropy baseline.
    Ce,
    /// SimCLR v2's fine-tuning of the pre-trained encoder (and the head's first layers) with a
    /// new linear layer, on the labeled images.
    Finetune,
    /// SimCLR v2's distillation of the fine-tuned network into a student, on every training
    /// image.
    Distill,
}

impl Stage {
    /// The name used in file names and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pretrain => "pretrain",
            Stage::Linear => "linear",
            Stage::Ce => "ce",
            Stage::Finetune => "finetune",
            Stage::Distill => "distill",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a record is logged after one optimizer step or summarises an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// After an optimizer step (every `log_every` steps).
    Step,
    /// At the end of an epoch.
    Epoch,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub stage: Stage,
    pub kind: RecordKind,
    pub epoch: u32,
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub images_per_second: f64,
    pub val_top1: Option<f64>,
    pub train_top1: Option<f64>,
    pub wall_seconds: f64,
}
