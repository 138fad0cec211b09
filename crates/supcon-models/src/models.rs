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

/// A single linear layer `fc` on (frozen) encoder features (SupContrast's `LinearClassifier`),
/// optionally behind a fixed per-feature standardization.
///
/// Why standardize: one probe learning rate must serve every method, and encoders trained by
/// different losses give features of very different scales (InstDisc's are far larger than
/// SupCon's, and lr 0.5 chosen on SupCon's features diverges on them). Subtracting each
/// feature's training mean and dividing by its standard deviation is what MAE's linear probe
/// does with a BatchNorm without affine parameters; with the statistics of the whole training
/// set fixed up front it is that BatchNorm in eval mode, so training and inference see the
/// same function. The statistics are variables that are not trained (`standardize.mean`,
/// `standardize.std`), so checkpoints carry them.
#[derive(Debug)]
pub struct LinearClassifier {
    pub fc: nn::Linear,
    standardize: Option<Standardization>,
}

/// `(x - mean) / std` per feature; `std` includes BatchNorm's ε under the square root.
#[derive(Debug)]
struct Standardization {
    mean: Tensor,
    std: Tensor,
}

/// BatchNorm's default ε: a feature that never varies maps to 0 instead of dividing by 0.
const STANDARDIZE_EPS: f64 = 1e-5;

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
            standardize: None,
        })
    }

    /// Builds `fc` and the standardization's variables (mean 0, std 1 until
    /// [`LinearClassifier::fit_standardization`]) under `root`.
    pub fn standardized(
        root: &nn::Path<'_>,
        feature_dim: i64,
        num_classes: i64,
    ) -> Result<Self, ModelError> {
        let mut classifier = Self::new(root, feature_dim, num_classes)?;
        let path = root / "standardize";
        classifier.standardize = Some(Standardization {
            mean: path.zeros_no_train("mean", &[feature_dim]),
            std: path.ones_no_train("std", &[feature_dim]),
        });
        Ok(classifier)
    }

    /// Sets the standardization to the per-feature mean and standard deviation of `features`
    /// `[N, feature_dim]` (the training set's, N >= 1). An error, and nothing changed, for a
    /// classifier built without standardization, a wrong shape or non-finite features.
    pub fn fit_standardization(&mut self, features: &Tensor) -> Result<(), ModelError> {
        let Some(standardize) = &mut self.standardize else {
            return Err(ModelError::InvalidConfig {
                field: "standardize",
                value: "false".into(),
                reason: "this classifier was built without standardization",
            });
        };
        let dim = standardize.mean.size()[0];
        let shape = features.size();
        if shape.len() != 2 || shape[0] < 1 || shape[1] != dim {
            return Err(ModelError::InputShape {
                shape,
                expected: format!("[N >= 1, {dim}] training features"),
            });
        }
        let features = features.f_to_kind(tch::Kind::Double)?;
        if features.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Err(ModelError::NonFinite {
                what: "the training features the probe standardizes with",
            });
        }
        let mean = features.f_mean_dim(0, false, tch::Kind::Double)?;
        let variance = (&features - &mean)
            .f_square()?
            .f_mean_dim(0, false, tch::Kind::Double)?;
        let std = (variance + STANDARDIZE_EPS).f_sqrt()?;
        tch::no_grad(|| -> Result<(), ModelError> {
            standardize.mean.f_copy_(&mean)?;
            standardize.std.f_copy_(&std)?;
            Ok(())
        })
    }

    /// Logits `[N, num_classes]` of features `[N, feature_dim]`.
    pub fn forward(&self, features: &Tensor) -> Tensor {
        match &self.standardize {
            Some(s) => apply_linear(&self.fc, &((features - &s.mean) / &s.std)),
            None => apply_linear(&self.fc, features),
        }
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
