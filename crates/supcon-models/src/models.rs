//! The three models of the pipeline, named like SupContrast's `SupConResNet`,
//! `LinearClassifier` and `SupCEResNet` so that their state dicts line up.

use crate::config::{HeadKind, ModelConfig};
use crate::error::ModelError;
use crate::layers::{apply_linear, l2_normalize, linear};
use crate::resnet::ResNet;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// The projection head: `head.0` → ReLU → `head.2` (MLP), a single `head` (linear), or
/// `head.0` → ReLU → `head.2` → ReLU → `head.4` (SimCLR v2's three layers): linear layers with
/// a ReLU after every one but the head's last, named like SupContrast's `nn.Sequential`.
///
/// [`ProjectionHead::first_layers`] keeps only the first `k` of them, each with its ReLU:
/// SimCLR v2 fine-tunes "from the middle of the head" on that prefix.
#[derive(Debug)]
pub struct ProjectionHead {
    layers: Vec<nn::Linear>,
    /// The head's last layer is among `layers`: no ReLU after it.
    complete: bool,
}

impl ProjectionHead {
    /// Builds the head under `path` (SupContrast names it `head`).
    pub fn new(path: &nn::Path<'_>, kind: HeadKind, d_in: i64, d_out: i64) -> Self {
        Self::first_layers(path, kind, d_in, d_out, kind.depth())
    }

    /// The first `k` layers (at most [`HeadKind::depth`]) of the head [`ProjectionHead::new`]
    /// builds, with the same names, so that a pre-trained head's tensors load into them.
    pub fn first_layers(
        path: &nn::Path<'_>,
        kind: HeadKind,
        d_in: i64,
        d_out: i64,
        k: usize,
    ) -> Self {
        let layers = layer_shapes(kind, d_in, d_out)
            .into_iter()
            .take(k)
            .map(|(name, from, to)| match name {
                Some(name) => linear(path / name, from, to),
                None => linear(path.clone(), from, to),
            })
            .collect();
        ProjectionHead {
            layers,
            complete: k >= kind.depth(),
        }
    }

    /// How many linear layers it has.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Projects encoder features (not normalized); with no layer, the features themselves.
    pub fn forward(&self, features: &Tensor) -> Tensor {
        let mut out = features.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            out = apply_linear(layer, &out);
            if i + 1 < self.layers.len() || !self.complete {
                out = out.relu();
            }
        }
        out
    }
}

/// `(name under the head, input width, output width)` of each layer of a head of `kind`.
fn layer_shapes(kind: HeadKind, d_in: i64, d_out: i64) -> Vec<(Option<&'static str>, i64, i64)> {
    match kind {
        HeadKind::Mlp => vec![(Some("0"), d_in, d_in), (Some("2"), d_in, d_out)],
        HeadKind::Linear => vec![(None, d_in, d_out)],
        HeadKind::Mlp3 => vec![
            (Some("0"), d_in, d_in),
            (Some("2"), d_in, d_in),
            (Some("4"), d_in, d_out),
        ],
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

/// SimCLR v2's fine-tuning network (Chen et al. 2020b, §2): the pre-trained encoder, the first
/// `head_layers` layers of its projection head, each with its ReLU (0: the encoder alone), and
/// a new linear layer `fc`, all trained with cross-entropy on the labeled images. Variables
/// `encoder.*`, `head.*` (those layers, named as in [`SupConModel`]) and `fc.*`.
#[derive(Debug)]
pub struct FineTunedModel {
    pub encoder: ResNet,
    pub head: ProjectionHead,
    pub fc: nn::Linear,
}

impl FineTunedModel {
    /// Builds the network under `root`; `head_layers` may not exceed the head's depth.
    pub fn new(
        root: &nn::Path<'_>,
        config: &ModelConfig,
        head_layers: usize,
        num_classes: i64,
    ) -> Result<Self, ModelError> {
        positive("num_classes", num_classes)?;
        let depth = config.head.depth();
        if head_layers > depth {
            return Err(ModelError::InvalidConfig {
                field: "head_layers",
                value: head_layers.to_string(),
                reason: "exceeds the depth of the projection head",
            });
        }
        let encoder = build_encoder(root, config)?;
        let d_in = encoder.feature_dim();
        let head = ProjectionHead::first_layers(
            &(root / "head"),
            config.head,
            d_in,
            config.projection_dim,
            head_layers,
        );
        // The last kept layer's output width; the encoder's without a head layer.
        let shapes = layer_shapes(config.head, d_in, config.projection_dim);
        let width = head_layers
            .checked_sub(1)
            .map_or(d_in, |last| shapes[last].2);
        let fc = linear(root / "fc", width, num_classes);
        Ok(FineTunedModel { encoder, head, fc })
    }

    /// What `fc` reads: the encoder's features through the kept head layers `[N, width]`.
    pub fn features(&self, images: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.encoder.forward_t(images, train))
    }
}

impl ModuleT for FineTunedModel {
    /// Logits `[N, num_classes]`.
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        apply_linear(&self.fc, &self.features(images, train))
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
