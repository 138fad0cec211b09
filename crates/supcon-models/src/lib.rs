//! ResNet encoders, projection heads and linear classifiers on tch (libtorch).
//!
//! The models follow SupContrast's `networks/resnet_big.py`, parameter names included, so a
//! SupContrast `state_dict()` exported to safetensors loads into them and back:
//!
//! - [`ResNet`] encoders ([`resnet18`], [`resnet50`], ... and the small [`resnet_tiny`],
//!   [`resnet_small`] for CPU runs), CIFAR stem by default, ImageNet stem as an option;
//! - [`SupConModel`]: encoder + projection head, L2-normalized output;
//! - [`LinearClassifier`] on frozen features, and [`CrossEntropyModel`], the baseline;
//! - [`ModelConfig`] / [`Architecture`]: what the train crate's TOML names;
//! - [`save_checkpoint`] / [`load_checkpoint`]: atomic safetensors checkpoints;
//! - [`lab_from_srgb`], [`sobel_magnitude`] and [`patch_grid`]: the other views of an image that
//!   CMC's encoders and CPC's patch encoder read.
//!
//! Models are built under a [`tch::nn::Path`] (usually `vs.root()`), in the style of
//! tch-rs' `vision::resnet`, and implement [`tch::nn::ModuleT`].

mod checkpoint;
mod config;
mod error;
mod layers;
mod models;
mod resnet;
mod views;

pub use checkpoint::{
    checkpoint_shapes, copy_into_varstore, load_checkpoint, read_safetensors, save_checkpoint,
    LoadMode, LoadReport,
};
pub use config::{Architecture, HeadKind, ModelConfig, Normalization, Stem};
pub use error::{ModelError, TensorMismatch};
pub use layers::l2_normalize;
pub use models::{
    CrossEntropyModel, FineTunedModel, LinearClassifier, ProjectionHead, SupConModel,
};
pub use resnet::{
    resnet, resnet101, resnet18, resnet34, resnet50, resnet_small, resnet_tiny, BlockKind, ResNet,
    ResNetSpec,
};
pub use views::{grid_positions, lab_from_srgb, patch_grid, sobel_magnitude};

/// Trainable parameters of a store (elements of its trainable variables; BN running
/// statistics excluded), comparable with PyTorch's `sum(p.numel() for p in m.parameters())`.
pub fn trainable_param_count(vs: &tch::nn::VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}
