//! Seeded, parallel multi-view image augmentations for contrastive learning.
//!
//! - [`ops`]: the operations (random resized crop, flip, colour jitter, grayscale, blur,
//!   erasing/cutout, rotation, noise, Sobel, normalise, `RandomApply`) with torchvision's
//!   sampling rules and pixel semantics;
//! - [`Pipeline`]: a composition of operations (torchvision's `Compose`);
//! - [`presets`]: SupContrast's, SimCLR's and SwAV's recipes, a Fashion-MNIST recipe, the
//!   crop+flip recipe of the CE and linear stages, and the eval transform;
//! - [`Augmenter`] / [`MultiCropAugmenter`]: batch writers into one contiguous f32 buffer,
//!   laid out `[batch, views, C, H, W]` (see [`batch`] for why), parallel over images;
//! - [`mod@corrupt`]: ImageNet-C style corruptions at five severities.
//!
//! Determinism: the random stream of image `id`, view `v`, epoch `e` is
//! [`ViewRng::for_view`]`(seed, e, id, v)`, so outputs do not depend on thread count or on
//! how images are grouped into batches.
//!
//! ```
//! use supcon_augment::{presets, Augmenter, ImageRef};
//!
//! // Two 32×32 RGB images (HWC bytes), ids 10 and 11 in their data set.
//! let pixels = vec![128u8; 2 * 32 * 32 * 3];
//! let images: Vec<ImageRef<'_>> = pixels
//!     .chunks_exact(32 * 32 * 3)
//!     .map(|data| ImageRef { data, height: 32, width: 32, channels: 3 })
//!     .collect();
//! let pipeline = presets::supcon_cifar(32, &presets::CIFAR10_MEAN, &presets::CIFAR10_STD)?;
//! let augmenter = Augmenter::new(pipeline, 42);
//! let mut out = vec![0.0f32; augmenter.output_len(&images, 2)?];
//! augmenter.augment_batch(&images, &[10, 11], /* epoch */ 0, /* views */ 2, &mut out)?;
//! assert_eq!(out.len(), 2 * 2 * 3 * 32 * 32); // [batch, views, C, H, W]
//! # Ok::<(), supcon_augment::AugmentError>(())
//! ```
//!
//! Images come in as bytes (`&[u8]`, HWC) and are processed as f32 in [0, 1], like
//! torchvision's tensor transforms after `ToTensor`.

#![warn(missing_docs)]

pub mod batch;
pub mod color;
pub mod corrupt;
mod error;
pub mod filter;
pub mod image;
pub mod ops;
pub mod pipeline;
pub mod presets;
pub mod resample;
pub mod rng;

pub use batch::{Augmenter, CropGroup, MultiCropAugmenter};
pub use corrupt::{corrupt, corrupt_batch, Corruption, SeverityScale};
pub use error::AugmentError;
pub use image::ImageRef;
pub use ops::{ColorJitter, EraseValue, Op};
pub use pipeline::Pipeline;
pub use rng::ViewRng;
