//! The three models of the pipeline, named like SupContrast's `SupConResNet`,
//! `LinearClassifier` and `SupCEResNet` so that their state dicts line up.

use crate::config::{HeadKind, ModelConfig};
use crate::error::ModelError;
use crate::layers::{apply_linear, l2_normalize, linear};
use crate::resnet::ResNet;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// The projection head: `head.0` → ReLU → `head.2` (MLP), a single `head` (linear), or
/// `head.0` → ReLU → `head.2` → ReLU → `head.4` (SimCLR v2's three layers).
#[derive(Debug)]
pub enum ProjectionHead {
    Mlp { fc1: nn::Linear, fc2: nn::Linear },
    Linear(nn::Linear),
    Mlp3 { layers: [nn::Linear; 3] },
}

impl ProjectionHead {
    /// Builds the head under `path` (SupContrast names it `head`).
    pub fn new(path: &nn::Path<'_>, kind: HeadKind, d_in: i64, d_out: i64) -> Self {
        match kind {
            HeadKind::Mlp => ProjectionHead::Mlp {
                fc1: linear(path / "0", d_in, d_in),
                fc2: linear(path / "2", d_in, d_out),
            },
            HeadKind::Linear => ProjectionHead::Linear(linear(path.clone(), d_in, d_out)),
            HeadKind::Mlp3 => ProjectionHead::Mlp3 {
                layers: [
                    linear(path / "0", d_in, d_in),
                    linear(path / "2", d_in, d_in),
                    linear(path / "4", d_in, d_out),
                ],
            },
        }
    }

    /// Projects encoder features (not normalized).
    pub fn forward(&self, features: &Tensor) -> Tensor {
        match self {
            ProjectionHead::Mlp { fc1, fc2 } => {
                apply_linear(fc2, &apply_linear(fc1, features).relu())
            }
            ProjectionHead::Linear(fc) => apply_linear(fc, features),
            ProjectionHead::Mlp3 {
                layers: [fc1, fc2, fc3],
            } => apply_linear(
                fc3,
                &apply_linear(fc2, &apply_linear(fc1, features).relu()).relu(),
            ),
        }
    }
}

fn build_encoder(root: &nn::Path<'_>, config: &ModelConfig) -> Result<ResNet, ModelError> {
    config.validate()?;
    Ok(ResNet::new(&(root / "encoder"), &config.encoder_spec()))
}

/// Encoder + projection head with L2-normalized output (SupContrast's `SupConResNet`).
/// Variables: `encoder.*`, `head.*`. `forward_t(images, train) -> [N, projection_dim]`, unit rows.
#[derive(Debug)]
pub struct SupConModel {
    pub encoder: ResNet,
    pub head: ProjectionHead,
    config: ModelConfig,
}

impl SupConModel {
    /// Builds `encoder` and `head` under `root` (usually `vs.root()`).
    pub fn new(root: &nn::Path<'_>, config: &ModelConfig) -> Result<Self, ModelError> {
        let encoder = build_encoder(root, config)?;
        let head = ProjectionHead::new(
            &(root / "head"),
            config.head,
            encoder.feature_dim(),
            config.projection_dim,
        );
        Ok(SupConModel {
            encoder,
            head,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Encoder features `[N, feature_dim]` (what the linear classifier sees).
    pub fn encode(&self, images: &Tensor, train: bool) -> Tensor {
        self.encoder.forward_t(images, train)
    }

    /// L2-normalized projections of encoder features.
    pub fn project(&self, features: &Tensor) -> Tensor {
        l2_normalize(&self.head.forward(features))
    }

    /// Like `forward_t`, but checks the input shape first.
    pub fn f_forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.encoder.check_input(images)?;
        Ok(self.forward_t(images, train))
    }

    pub fn feature_dim(&self) -> i64 {
        self.encoder.feature_dim()
    }

    pub fn projection_dim(&self) -> i64 {
        self.config.projection_dim
    }
}

impl ModuleT for SupConModel {
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        self.project(&self.encode(images, train))
    }
}

/// A single linear layer `fc` on (frozen) encoder features (SupContrast's `LinearClassifier`).
#[derive(Debug)]
pub struct LinearClassifier {
    pub fc: nn::Linear,
}

impl LinearClassifier {
    /// Builds `fc` under `root`.
    pub fn new(
        root: &nn::Path<'_>,
        feature_dim: i64,
        num_classes: i64,
    ) -> Result<Self, ModelError> {
        positive("num_classes", num_classes)?;
        positive("feature_dim", feature_dim)?;
        Ok(LinearClassifier {
            fc: linear(root / "fc", feature_dim, num_classes),
        })
    }

    /// Logits `[N, num_classes]` of features `[N, feature_dim]`.
    pub fn forward(&self, features: &Tensor) -> Tensor {
        apply_linear(&self.fc, features)
    }
}

impl nn::Module for LinearClassifier {
    fn forward(&self, features: &Tensor) -> Tensor {
        LinearClassifier::forward(self, features)
    }
}

/// Encoder + `fc` trained end to end with cross-entropy: the baseline
/// (SupContrast's `SupCEResNet`). Variables `encoder.*`, `fc.*`.
#[derive(Debug)]
pub struct CrossEntropyModel {
    pub encoder: ResNet,
    pub fc: nn::Linear,
}

impl CrossEntropyModel {
    /// Builds `encoder` and `fc` under `root`; the config's head fields are ignored.
    pub fn new(
        root: &nn::Path<'_>,
        config: &ModelConfig,
        num_classes: i64,
    ) -> Result<Self, ModelError> {
        positive("num_classes", num_classes)?;
        let encoder = build_encoder(root, config)?;
        let fc = linear(root / "fc", encoder.feature_dim(), num_classes);
        Ok(CrossEntropyModel { encoder, fc })
    }

    /// Like `forward_t`, but checks the input shape first.
    pub fn f_forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor, ModelError> {
        self.encoder.check_input(images)?;
        Ok(self.forward_t(images, train))
    }
}

impl ModuleT for CrossEntropyModel {
    /// Logits `[N, num_classes]`.
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        apply_linear(&self.fc, &self.encoder.forward_t(images, train))
    }
}

fn positive(field: &'static str, value: i64) -> Result<(), ModelError> {
    if value >= 1 {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig {
            field,
            value: value.to_string(),
            reason: "must be at least 1",
        })
    }
}
