//! Model configuration: architecture names, stems, heads, parsed from strings and TOML.

use crate::error::ModelError;
use crate::resnet::{BlockKind, ResNetSpec};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The encoders we build. Parsed case-insensitively, ignoring `-` and `_`
/// (`"resnet18"`, `"ResNet-18"`, `"resnet_tiny"`, `"resnet-tiny"` all work).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Architecture {
    /// CIFAR-style ResNet, widths 8/16/32, one BasicBlock per stage: a quarter of resnet-tiny's
    /// parameters, the zoo's student for distillation into a smaller network.
    ResNetMicro,
    /// CIFAR-style ResNet, widths 16/32/64, one BasicBlock per stage (trains in minutes on 2 cores).
    ResNetTiny,
    /// CIFAR-style ResNet, widths 16/32/64, two BasicBlocks per stage.
    ResNetSmall,
    /// ResNet-18: BasicBlock, [2, 2, 2, 2], widths 64..512.
    ResNet18,
    /// ResNet-34: BasicBlock, [3, 4, 6, 3].
    ResNet34,
    /// ResNet-50: Bottleneck, [3, 4, 6, 3], feature dimension 2048.
    ResNet50,
    /// ResNet-101: Bottleneck, [3, 4, 23, 3].
    ResNet101,
}

const ARCHITECTURE_NAMES: &str =
    "resnet-micro, resnet-tiny, resnet-small, resnet18, resnet34, resnet50, resnet101";

impl Architecture {
    /// Every architecture, smallest first.
    pub const ALL: [Architecture; 7] = [
        Architecture::ResNetMicro,
        Architecture::ResNetTiny,
        Architecture::ResNetSmall,
        Architecture::ResNet18,
        Architecture::ResNet34,
        Architecture::ResNet50,
        Architecture::ResNet101,
    ];

    /// The canonical name (what `Display` and serde write).
    pub fn name(self) -> &'static str {
        match self {
            Architecture::ResNetMicro => "resnet-micro",
            Architecture::ResNetTiny => "resnet-tiny",
            Architecture::ResNetSmall => "resnet-small",
            Architecture::ResNet18 => "resnet18",
            Architecture::ResNet34 => "resnet34",
            Architecture::ResNet50 => "resnet50",
            Architecture::ResNet101 => "resnet101",
        }
    }

    /// The full description of the encoder for the given input channels and stem.
    pub fn spec(self, in_channels: i64, stem: Stem, zero_init_residual: bool) -> ResNetSpec {
        let (block, blocks, widths): (BlockKind, &[usize], &[i64]) = match self {
            Architecture::ResNetMicro => (BlockKind::Basic, &[1, 1, 1], &[8, 16, 32]),
            Architecture::ResNetTiny => (BlockKind::Basic, &[1, 1, 1], &[16, 32, 64]),
            Architecture::ResNetSmall => (BlockKind::Basic, &[2, 2, 2], &[16, 32, 64]),
            Architecture::ResNet18 => (BlockKind::Basic, &[2, 2, 2, 2], &[64, 128, 256, 512]),
            Architecture::ResNet34 => (BlockKind::Basic, &[3, 4, 6, 3], &[64, 128, 256, 512]),
            Architecture::ResNet50 => (BlockKind::Bottleneck, &[3, 4, 6, 3], &[64, 128, 256, 512]),
            Architecture::ResNet101 => {
                (BlockKind::Bottleneck, &[3, 4, 23, 3], &[64, 128, 256, 512])
            }
        };
        ResNetSpec {
            block,
            blocks_per_stage: blocks.to_vec(),
            widths: widths.to_vec(),
            in_channels,
            stem,
            zero_init_residual,
            norm: Normalization::Batch,
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Architecture {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        Ok(match key.as_str() {
            "resnetmicro" => Architecture::ResNetMicro,
            "resnettiny" => Architecture::ResNetTiny,
            "resnetsmall" => Architecture::ResNetSmall,
            "resnet18" => Architecture::ResNet18,
            "resnet34" => Architecture::ResNet34,
            "resnet50" => Architecture::ResNet50,
            "resnet101" => Architecture::ResNet101,
            _ => {
                return Err(ModelError::UnknownArchitecture {
                    name: s.to_owned(),
                    expected: ARCHITECTURE_NAMES,
                })
            }
        })
    }
}

impl TryFrom<String> for Architecture {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Architecture> for String {
    fn from(a: Architecture) -> String {
        a.name().to_owned()
    }
}

/// The first layers of the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// SupContrast's CIFAR stem: 3×3 convolution, stride 1, no max-pool (small images).
    #[default]
    Cifar,
    /// The ImageNet stem: 7×7 convolution, stride 2, then a 3×3 max-pool with stride 2.
    Imagenet,
}

impl FromStr for Stem {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cifar" => Ok(Stem::Cifar),
            "imagenet" => Ok(Stem::Imagenet),
            _ => Err(ModelError::UnknownStem { name: s.to_owned() }),
        }
    }
}

/// The normalization layer after every convolution of the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// BatchNorm (SupContrast's and every reference's): statistics of the batch in training,
    /// running statistics in evaluation. In a data-parallel run each rank normalizes with its
    /// own part of the batch, so R ranks differ slightly from one process.
    #[default]
    Batch,
    /// GroupNorm (Wu & He 2018), 32 groups or one per channel when there are fewer: statistics
    /// of each image alone, so a data-parallel run computes exactly what one process computes,
    /// whatever the split of the batch; no running statistics.
    Group,
}

impl FromStr for Normalization {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "batch" => Ok(Normalization::Batch),
            "group" => Ok(Normalization::Group),
            _ => Err(ModelError::InvalidConfig {
                field: "norm",
                value: s.to_owned(),
                reason: "expected batch or group",
            }),
        }
    }
}

/// The projection head of [`crate::SupConModel`] (SupContrast's `head` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// Linear(dim, dim) → ReLU → Linear(dim, projection_dim); names `head.0.*`, `head.2.*`.
    #[default]
    Mlp,
    /// Linear(dim, projection_dim); names `head.weight`, `head.bias` (MoCo v1's head).
    Linear,
    /// SimCLR v2's deeper head: Linear(dim, dim) → ReLU → Linear(dim, dim) → ReLU →
    /// Linear(dim, projection_dim); names `head.0.*`, `head.2.*`, `head.4.*`.
    Mlp3,
}

impl HeadKind {
    /// Its name in configurations (`linear`, `mlp`, `mlp3`).
    pub fn as_str(self) -> &'static str {
        match self {
            HeadKind::Linear => "linear",
            HeadKind::Mlp => "mlp",
            HeadKind::Mlp3 => "mlp3",
        }
    }

    /// How many linear layers the head has.
    pub fn depth(self) -> usize {
        match self {
            HeadKind::Linear => 1,
            HeadKind::Mlp => 2,
            HeadKind::Mlp3 => 3,
        }
    }
}

impl FromStr for HeadKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mlp" => Ok(HeadKind::Mlp),
            "linear" => Ok(HeadKind::Linear),
            "mlp3" => Ok(HeadKind::Mlp3),
            _ => Err(ModelError::UnknownHead { name: s.to_owned() }),
        }
    }
}

/// The most input channels a model takes (images have 1, 3 or 4; multispectral a few dozen).
pub const MAX_IN_CHANNELS: i64 = 64;

/// The widest projection head output.
pub const MAX_PROJECTION_DIM: i64 = 65_536;

/// Everything needed to build an encoder (and a projection head): the `[model]` table of
/// the train crate's TOML config. Missing fields take SupContrast's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub architecture: Architecture,
    /// 3 for RGB (CIFAR), 1 for Fashion-MNIST.
    pub in_channels: i64,
    pub stem: Stem,
    /// Zero-initialise the last BN's scale of each residual branch (each block starts as identity).
    pub zero_init_residual: bool,
    pub head: HeadKind,
    /// Output dimension of the projection head (SupContrast's `feat_dim`, 128).
    pub projection_dim: i64,
    /// BatchNorm (default) or GroupNorm in the encoder.
    pub norm: Normalization,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            architecture: Architecture::ResNet18,
            in_channels: 3,
            stem: Stem::Cifar,
            zero_init_residual: false,
            head: HeadKind::Mlp,
            projection_dim: 128,
            norm: Normalization::Batch,
        }
    }
}

impl ModelConfig {
    /// The default configuration for an architecture.
    pub fn new(architecture: Architecture) -> Self {
        ModelConfig {
            architecture,
            ..ModelConfig::default()
        }
    }

    /// Sets the number of input channels.
    pub fn with_in_channels(mut self, in_channels: i64) -> Self {
        self.in_channels = in_channels;
        self
    }

    /// The encoder's description.
    pub fn encoder_spec(&self) -> ResNetSpec {
        ResNetSpec {
            norm: self.norm,
            ..self
                .architecture
                .spec(self.in_channels, self.stem, self.zero_init_residual)
        }
    }

    /// Checks the numeric fields: at least 1 and at most [`MAX_IN_CHANNELS`] /
    /// [`MAX_PROJECTION_DIM`], so a size from a file cannot ask libtorch for a tensor it
    /// cannot allocate.
    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, value, max, reason) in [
            (
                "in_channels",
                self.in_channels,
                MAX_IN_CHANNELS,
                "must be 1 to 64",
            ),
            (
                "projection_dim",
                self.projection_dim,
                MAX_PROJECTION_DIM,
                "must be 1 to 65536",
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(ModelError::InvalidConfig {
                    field,
                    value: value.to_string(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_names_parse_leniently_and_print_canonically() {
        for (text, arch) in [
            ("resnet18", Architecture::ResNet18),
            ("ResNet-18", Architecture::ResNet18),
            ("resnet_50", Architecture::ResNet50),
            ("resnet101", Architecture::ResNet101),
            ("resnet-tiny", Architecture::ResNetTiny),
            ("resnet_tiny", Architecture::ResNetTiny),
            ("ResNetSmall", Architecture::ResNetSmall),
            ("resnet-micro", Architecture::ResNetMicro),
        ] {
            assert_eq!(text.parse::<Architecture>().unwrap(), arch, "{text}");
        }
        for arch in Architecture::ALL {
            assert_eq!(arch.to_string().parse::<Architecture>().unwrap(), arch);
        }
        let err = "vgg16".parse::<Architecture>().unwrap_err();
        assert!(err.to_string().contains("vgg16") && err.to_string().contains("resnet-tiny"));
        assert!("mlp".parse::<HeadKind>().is_ok() && "conv".parse::<HeadKind>().is_err());
        assert!("ImageNet".parse::<Stem>().is_ok() && "tiny".parse::<Stem>().is_err());
    }
}
