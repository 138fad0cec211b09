//! The recipes of the references, as pipelines.
//!
//! | preset | source |
//! |---|---|
//! | [`supcon_cifar`] | SupContrast `main_supcon.py`: `RandomResizedCrop(size, scale=(0.2, 1))`, `RandomHorizontalFlip()`, `RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)`, `RandomGrayscale(p=0.2)`, `ToTensor()`, `Normalize` |
//! | [`simclr`] | SimCLR (Chen et al. 2020, appendix A): the same colour distortion (strength 0.5) plus `GaussianBlur` with a kernel of 10 % of the side (odd), σ ∈ [0.1, 2], p = 0.5 |
//! | [`fashion_mnist`] | ours, for 28×28 gray: `RandomResizedCrop(28, scale=(0.35, 1))`, flip, `RandomApply([ColorJitter(brightness=0.4, contrast=0.4)], p=0.8)`, `Normalize(0.2860, 0.3530)` |
//! | [`crop_flip`] | SupContrast `main_ce.py` / `main_linear.py` (which reuses `main_ce.set_loader`): `RandomResizedCrop(size, scale=(0.2, 1))`, `RandomHorizontalFlip()`, `ToTensor()`, `Normalize` |
//! | [`eval`] | `ToTensor()`, `Normalize` |
//! | [`pad_crop_flip`] | the classic small-image recipe: `RandomCrop(size, padding)`, `RandomHorizontalFlip()`, `Normalize` |
//! | [`swav_multicrop`] | SwAV (Caron et al. 2020): 2 global crops, scale (0.14, 1), and k local crops, scale (0.05, 0.14); flip, colour distortion of strength 1 (`ColorJitter(0.8, 0.8, 0.8, 0.2)`, p 0.8), grayscale p 0.2, blur p 0.5 |

use crate::batch::CropGroup;
use crate::error::AugmentError;
use crate::ops::{ColorJitter, EraseValue, Op};
use crate::pipeline::Pipeline;

/// CIFAR-10 mean and std as SupContrast normalises them.
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 per-channel (R, G, B) std as SupContrast normalises them (`transforms.Normalize`'s
/// `std`; kept as SupContrast has them so that results compare).
pub const CIFAR10_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];
/// CIFAR-100 mean and std as SupContrast normalises them.
pub const CIFAR100_MEAN: [f32; 3] = [0.5071, 0.4867, 0.4408];
/// CIFAR-100 per-channel (R, G, B) std as SupContrast normalises them.
pub const CIFAR100_STD: [f32; 3] = [0.2675, 0.2565, 0.2761];
/// Fashion-MNIST training-set mean and std (of pixel / 255).
pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
/// Fashion-MNIST training-set std (of pixel / 255, population std).
pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];

fn normalize(mean: &[f32], std: &[f32]) -> Op {
    Op::Normalize {
        mean: mean.to_vec(),
        std: std.to_vec(),
    }
}

fn crop(size: usize, scale: (f32, f32)) -> Op {
    Op::RandomResizedCrop {
        height: size,
        width: size,
        scale,
        ratio: (3.0 / 4.0, 4.0 / 3.0),
    }
}

fn color_distortion(strength: f32) -> Result<Vec<Op>, AugmentError> {
    let s = strength;
    Ok(vec![
        Op::RandomApply {
            p: 0.8,
            ops: vec![Op::ColorJitter(ColorJitter::new(
                0.8 * s,
                0.8 * s,
                0.8 * s,
                0.2 * s,
            )?)],
        },
        Op::Grayscale { p: 0.2 },
    ])
}

/// SimCLR's blur kernel: 10 % of the side, made odd, at least 3.
pub fn blur_kernel_size(size: usize) -> usize {
    let k = (size / 10).max(3);
    if k.is_multiple_of(2) {
        k + 1
    } else {
        k
    }
}

fn blur(size: usize) -> Op {
    Op::RandomApply {
        p: 0.5,
        ops: vec![Op::GaussianBlur {
            kernel_size: blur_kernel_size(size),
            sigma: (0.1, 2.0),
        }],
    }
}

/// SupContrast's SupCon/SimCLR training transform (one view; use 2 views per image).
/// The channel count is `mean.len()`.
pub fn supcon_cifar(size: usize, mean: &[f32], std: &[f32]) -> Result<Pipeline, AugmentError> {
    let mut ops = vec![crop(size, (0.2, 1.0)), Op::HorizontalFlip { p: 0.5 }];
    ops.extend(color_distortion(0.5)?);
    ops.push(normalize(mean, std));
    Pipeline::new(mean.len(), ops)
}

/// SimCLR's recipe: [`supcon_cifar`] plus Gaussian blur.
pub fn simclr(size: usize, mean: &[f32], std: &[f32]) -> Result<Pipeline, AugmentError> {
    let mut ops = vec![crop(size, (0.2, 1.0)), Op::HorizontalFlip { p: 0.5 }];
    ops.extend(color_distortion(0.5)?);
    ops.push(blur(size));
    ops.push(normalize(mean, std));
    Pipeline::new(mean.len(), ops)
}

/// One-channel recipe for Fashion-MNIST (28×28 gray): milder crops than CIFAR's (a 0.2-area
/// crop of a 28-pixel garment keeps too little of it), flip, brightness/contrast jitter; hue
/// and saturation do not exist in gray.
pub fn fashion_mnist(size: usize) -> Result<Pipeline, AugmentError> {
    Pipeline::new(
        1,
        vec![
            crop(size, (0.35, 1.0)),
            Op::HorizontalFlip { p: 0.5 },
            Op::RandomApply {
                p: 0.8,
                ops: vec![Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.0, 0.0)?)],
            },
            normalize(&FASHION_MNIST_MEAN, &FASHION_MNIST_STD),
        ],
    )
}

/// The CE and linear-probe stages' transform of SupContrast: crop and flip only.
pub fn crop_flip(size: usize, mean: &[f32], std: &[f32]) -> Result<Pipeline, AugmentError> {
    Pipeline::new(
        mean.len(),
        vec![
            crop(size, (0.2, 1.0)),
            Op::HorizontalFlip { p: 0.5 },
            normalize(mean, std),
        ],
    )
}

/// Translation by up to `padding` pixels (zero padding, then a random `size × size` crop) and a
/// horizontal flip: the usual recipe of small-image classifiers (CIFAR's padding is 4 of 32).
pub fn pad_crop_flip(
    size: usize,
    padding: usize,
    mean: &[f32],
    std: &[f32],
) -> Result<Pipeline, AugmentError> {
    Pipeline::new(
        mean.len(),
        vec![
            pad_crop(size, padding),
            Op::HorizontalFlip { p: 0.5 },
            normalize(mean, std),
        ],
    )
}

fn pad_crop(size: usize, padding: usize) -> Op {
    Op::RandomCrop {
        height: size,
        width: size,
        padding,
    }
}

/// The named presets [`by_name`] knows, for error messages and `--help`.
pub const NAMES: &str = "supcon, simclr, fashion-mnist, crop-flip, pad-crop-flip, none";

/// The recipe steps [`by_name`] composes, for error messages and `--help`.
pub const RECIPE_STEPS: &str =
    "flip[:p], pad-crop[:pixels], resized-crop[:min_scale or min..max], \
jitter[:strength], grayscale[:p], blur[:p], erase[:p], rotate[:degrees], cutout[:side], \
noise[:sigma], sobel";

/// The pipeline called `name` for images of side `size` with `mean.len()` channels.
///
/// `name` is either a preset — `supcon` (SupContrast's recipe; on one-channel images
/// [`fashion_mnist`], whose crops are milder and which has no colour), `simclr` (adds blur;
/// on one channel also [`fashion_mnist`]), `fashion-mnist`, `crop-flip`, `pad-crop-flip`
/// (padding of 1/14 of the side: 2 pixels at 28), `none` (normalisation only) — or a
/// *recipe*: steps joined by `+`, each `step` or `step:value`, applied in order and followed
/// by the normalisation:
///
/// | step | operation | default |
/// |---|---|---|
/// | `flip:p` | horizontal flip with probability p | 0.5 |
/// | `pad-crop:n` | zero padding of n pixels, random crop back to `size` | 2 |
/// | `resized-crop:s` or `resized-crop:a..b` | `RandomResizedCrop(size, scale=(s, 1))` or `scale=(a, b)` | 0.35 |
/// | `jitter:x` | with p 0.8, brightness and contrast ×[1−x, 1+x] (colour: also saturation x, hue x/4) | 0.4 |
/// | `grayscale:p` | grayscale with probability p | 0.2 |
/// | `blur:p` | SimCLR's Gaussian blur with probability p | 0.5 |
/// | `erase:p` | `RandomErasing(p)` with torchvision's scale and ratio, value 0 | 0.25 |
/// | `rotate:d` | rotation by an angle uniform in ±d degrees, fill 0 | 10 |
/// | `cutout:n` | Cutout: an n × n square at a uniform centre set to 0 (always) | size / 2 |
/// | `noise:σ` | Gaussian noise N(0, σ²) per pixel, clamped to [0, 1] | 0.1 |
/// | `sobel` | Sobel gradient magnitude of the luma, in every channel | – |
///
/// For example `pad-crop:2+flip+jitter:0.2`. At most one size-changing step (`pad-crop` or
/// `resized-crop`) may appear, and it comes first.
pub fn by_name(
    name: &str,
    size: usize,
    mean: &[f32],
    std: &[f32],
) -> Result<Pipeline, AugmentError> {
    let gray = mean.len() == 1;
    match name {
        "supcon" | "simclr" | "fashion-mnist" if gray => fashion_mnist(size),
        "supcon" => supcon_cifar(size, mean, std),
        "simclr" => simclr(size, mean, std),
        "crop-flip" => crop_flip(size, mean, std),
        "pad-crop-flip" => pad_crop_flip(size, (size / 14).max(1), mean, std),
        "none" => eval(mean, std),
        recipe => parse_recipe(recipe, size, mean, std),
    }
}

fn parse_recipe(
    text: &str,
    size: usize,
    mean: &[f32],
    std: &[f32],
) -> Result<Pipeline, AugmentError> {
    let fail = |reason: String| AugmentError::UnknownRecipe {
        text: text.to_string(),
        reason,
    };
    let mut ops = Vec::new();
    for (position, step) in text.split('+').map(str::trim).enumerate() {
        let (name, text) = match step.split_once(':') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (step, None),
        };
        let number = |text: &str| -> Result<f32, AugmentError> {
            text.trim()
                .parse()
                .map_err(|_| fail(format!("step `{step}`: `{text}` is not a number")))
        };
        // `resized-crop` takes a scale range `min..max`; every other step one number.
        let range = match (name, text.and_then(|t| t.split_once(".."))) {
            ("resized-crop", Some((low, high))) => Some((number(low)?, number(high)?)),
            _ => None,
        };
        let value = match (text, range) {
            (Some(text), None) => Some(number(text)?),
            _ => None,
        };
        let value = |default: f32| value.unwrap_or(default);
        let resizes = matches!(name, "pad-crop" | "resized-crop");
        if resizes && position > 0 {
            return Err(fail(format!(
                "`{name}` changes the view's size and must be the first step"
            )));
        }
        let op = match name {
            "flip" => Op::HorizontalFlip { p: value(0.5) },
            "pad-crop" => {
                let pixels = value(2.0);
                if !(pixels >= 0.0 && pixels.fract() == 0.0) {
                    return Err(fail(format!(
                        "pad-crop: {pixels} is not a whole number of pixels"
                    )));
                }
                pad_crop(size, pixels as usize)
            }
            "resized-crop" => crop(size, range.unwrap_or((value(0.35), 1.0))),
            "jitter" => {
                let x = value(0.4);
                let jitter = if mean.len() == 1 {
                    ColorJitter::new(x, x, 0.0, 0.0)?
                } else {
                    ColorJitter::new(x, x, x, (x / 4.0).min(0.5))?
                };
                Op::RandomApply {
                    p: 0.8,
                    ops: vec![Op::ColorJitter(jitter)],
                }
            }
            "grayscale" => Op::Grayscale { p: value(0.2) },
            "blur" => Op::RandomApply {
                p: value(0.5),
                ops: vec![Op::GaussianBlur {
                    kernel_size: blur_kernel_size(size),
                    sigma: (0.1, 2.0),
                }],
            },
            "erase" => Op::RandomErasing {
                p: value(0.25),
                scale: (0.02, 0.33),
                ratio: (0.3, 3.3),
                value: EraseValue::Constant(0.0),
            },
            "rotate" => Op::Rotation {
                degrees: value(10.0),
                bilinear: false,
                fill: 0.0,
            },
            "cutout" => {
                let side = value((size / 2).max(1) as f32);
                if !(side >= 1.0 && side.fract() == 0.0) {
                    return Err(fail(format!(
                        "cutout: {side} is not a whole number of pixels ≥ 1"
                    )));
                }
                Op::Cutout {
                    size: side as usize,
                    p: 1.0,
                    value: 0.0,
                }
            }
            "noise" => Op::GaussianNoise {
                mean: 0.0,
                sigma: value(0.1),
                clip: true,
            },
            "sobel" => Op::Sobel,
            _ => {
                return Err(fail(format!(
                    "`{name}` is neither a preset ({NAMES}) nor a recipe step ({RECIPE_STEPS})"
                )))
            }
        };
        ops.push(op);
    }
    ops.push(normalize(mean, std));
    Pipeline::new(mean.len(), ops)
}

/// Evaluation: normalisation only (images must already have the model's size).
pub fn eval(mean: &[f32], std: &[f32]) -> Result<Pipeline, AugmentError> {
    Pipeline::new(mean.len(), vec![normalize(mean, std)])
}

/// SwAV's multi-crop: 2 global crops of `global_size` and `local_views` local crops of
/// `local_size`, for [`crate::MultiCropAugmenter`].
pub fn swav_multicrop(
    global_size: usize,
    local_size: usize,
    local_views: usize,
    mean: &[f32],
    std: &[f32],
) -> Result<Vec<CropGroup>, AugmentError> {
    let group = |size: usize, scale: (f32, f32), views: usize| -> Result<CropGroup, AugmentError> {
        let mut ops = vec![crop(size, scale), Op::HorizontalFlip { p: 0.5 }];
        ops.extend(color_distortion(1.0)?);
        ops.push(blur(size));
        ops.push(normalize(mean, std));
        Ok(CropGroup {
            pipeline: Pipeline::new(mean.len(), ops)?,
            views,
        })
    };
    let mut groups = vec![group(global_size, (0.14, 1.0), 2)?];
    if local_views > 0 {
        groups.push(group(local_size, (0.05, 0.14), local_views)?);
    }
    Ok(groups)
}
