//! The operations and their parameters, with torchvision's sampling rules.
//!
//! Every random choice is drawn from the view's own [`ViewRng`], so one view's output depends
//! only on `(seed, epoch, image, view)`. Probabilities follow torchvision's
//! `torch.rand(1) < p`: `p = 0` never applies, `p = 1` always does.

use crate::color;
use crate::error::{invalid, AugmentError};
use crate::filter::{gaussian_kernel, Border, Convolver};
use crate::image::Planar;
use crate::resample::{Filter, Resampler};
use crate::rng::ViewRng;

/// torchvision's `ColorJitter`: each factor range is `None` (left out) or `(lo, hi)`;
/// the four adjustments run in a fresh random order per view.
#[derive(Clone, Debug, PartialEq)]
pub struct ColorJitter {
    /// Range of the brightness factor (pixels × factor, clamped to [0, 1]); each bound ≥ 0.
    pub brightness: Option<(f32, f32)>,
    /// Range of the contrast factor (blend with the mean of the gray image); each bound ≥ 0.
    pub contrast: Option<(f32, f32)>,
    /// Range of the saturation factor (blend with the gray image; RGB only); each bound ≥ 0.
    pub saturation: Option<(f32, f32)>,
    /// Range of the hue shift, in turns, within [-0.5, 0.5] (RGB only).
    pub hue: Option<(f32, f32)>,
}

impl ColorJitter {
    /// torchvision's constructor: `b`, `c`, `s` become `[max(0, 1 - x), 1 + x]`, `h` becomes
    /// `[-h, h]` (h ≤ ½); a zero leaves the adjustment out.
    pub fn new(
        brightness: f32,
        contrast: f32,
        saturation: f32,
        hue: f32,
    ) -> Result<Self, AugmentError> {
        let factor = |name: &'static str, x: f32| -> Result<Option<(f32, f32)>, AugmentError> {
            if !(x >= 0.0 && x.is_finite()) {
                return Err(invalid(
                    "ColorJitter",
                    name,
                    format!("{x} must be a finite value ≥ 0"),
                ));
            }
            Ok((x > 0.0).then(|| ((1.0 - x).max(0.0), 1.0 + x)))
        };
        if !(0.0..=0.5).contains(&hue) {
            return Err(invalid(
                "ColorJitter",
                "hue",
                format!("{hue} is outside [0, 0.5]"),
            ));
        }
        Ok(Self {
            brightness: factor("brightness", brightness)?,
            contrast: factor("contrast", contrast)?,
            saturation: factor("saturation", saturation)?,
            hue: (hue > 0.0).then_some((-hue, hue)),
        })
    }

    fn apply(&self, img: &mut Planar, rng: &mut ViewRng) {
        // torchvision: fn_idx = randperm(4), then the four factors in a fixed order.
        let mut order = [0usize, 1, 2, 3];
        for i in (1..4).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
        let mut draw = |range: Option<(f32, f32)>| {
            range.map(|(lo, hi)| rng.uniform_range(f64::from(lo), f64::from(hi)) as f32)
        };
        let factors = [
            draw(self.brightness),
            draw(self.contrast),
            draw(self.saturation),
            draw(self.hue),
        ];
        for which in order {
            let Some(f) = factors[which] else { continue };
            match which {
                0 => color::adjust_brightness(img, f),
                1 => color::adjust_contrast(img, f),
                2 => color::adjust_saturation(img, f),
                _ => color::adjust_hue(img, f),
            }
        }
    }
}

/// What random erasing writes into the erased box.
#[derive(Clone, Debug, PartialEq)]
pub enum EraseValue {
    /// One value for every channel (torchvision's default 0).
    Constant(f32),
    /// Standard normal noise (torchvision's `value="random"`).
    Random,
}

/// One augmentation step. Size-changing steps (`RandomResizedCrop`, `Resize`, `CenterCrop`)
/// may not sit inside [`Op::RandomApply`]: a batch's views must all have one size.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// torchvision's `RandomResizedCrop(size, scale, ratio)`, bilinear (antialiased like PIL):
    /// 10 attempts at an area fraction in `scale` and a log-uniform aspect ratio in `ratio`,
    /// else the central crop clamped to `ratio`.
    RandomResizedCrop {
        /// Output height, in pixels.
        height: usize,
        /// Output width, in pixels.
        width: usize,
        /// Range of the crop's area as a fraction of the input's, `0 < lo ≤ hi` (torchvision's
        /// default `(0.08, 1.0)`; SupContrast uses `(0.2, 1.0)`).
        scale: (f32, f32),
        /// Range of the crop's aspect ratio width / height, `0 < lo ≤ hi` (torchvision's
        /// default `(3/4, 4/3)`).
        ratio: (f32, f32),
    },
    /// torchvision's `RandomCrop(size, padding)`: zero padding of `padding` pixels on every
    /// side (black, before normalisation), then a `height × width` crop at a uniform offset.
    /// On 28×28 gray images this is the classic "pad and crop" translation by up to
    /// `padding` pixels.
    RandomCrop {
        /// Output height, in pixels.
        height: usize,
        /// Output width, in pixels.
        width: usize,
        /// Zero pixels added on each of the four sides before cropping (at most 1024).
        padding: usize,
    },
    /// Bilinear resize of the whole image.
    Resize {
        /// Output height, in pixels.
        height: usize,
        /// Output width, in pixels (the aspect ratio is not kept).
        width: usize,
    },
    /// torchvision's `CenterCrop` (zero padding when the image is smaller).
    CenterCrop {
        /// Output height, in pixels.
        height: usize,
        /// Output width, in pixels.
        width: usize,
    },
    /// Mirror left-right with probability `p`.
    HorizontalFlip {
        /// Probability of flipping, in [0, 1] (torchvision's default 0.5).
        p: f32,
    },
    /// Colour jitter (always applied; wrap it in `RandomApply` for SupContrast's p = 0.8).
    ColorJitter(ColorJitter),
    /// Replace RGB by its luma in every channel with probability `p`.
    Grayscale {
        /// Probability of converting, in [0, 1] (torchvision's `RandomGrayscale` default 0.1;
        /// SupContrast uses 0.2). One-channel images are left as they are.
        p: f32,
    },
    /// torchvision's `GaussianBlur(kernel_size, sigma)`: σ uniform in `sigma`, reflect padding.
    GaussianBlur {
        /// Taps of the kernel in each direction, in pixels: odd and positive.
        kernel_size: usize,
        /// Range of σ, in pixels, `0 < lo ≤ hi`; σ is drawn uniformly per view (SimCLR's
        /// `(0.1, 2.0)`).
        sigma: (f32, f32),
    },
    /// torchvision's `RandomErasing(p, scale, ratio, value)`.
    RandomErasing {
        /// Probability of erasing a box, in [0, 1] (torchvision's default 0.5).
        p: f32,
        /// Range of the box's area as a fraction of the image's, within [0, 1] (torchvision's
        /// default `(0.02, 0.33)`).
        scale: (f32, f32),
        /// Range of the box's aspect ratio height / width, drawn log-uniformly, `0 < lo ≤ hi`
        /// (torchvision's default `(0.3, 3.3)`).
        ratio: (f32, f32),
        /// What fills the box, in the pixel units at this point of the pipeline (0 is black
        /// before [`Op::Normalize`], the mean after it).
        value: EraseValue,
    },
    /// Cutout (DeVries & Taylor 2017): with probability `p`, a `size × size` square centred on
    /// a uniform pixel, clipped at the borders, set to `value`.
    Cutout {
        /// Side of the square, in pixels (positive).
        size: usize,
        /// Probability of cutting a square out, in [0, 1].
        p: f32,
        /// Fill value in the pixel units at this point of the pipeline (0 is black before
        /// [`Op::Normalize`]); finite.
        value: f32,
    },
    /// Rotation by an angle uniform in `[-degrees, degrees]` about the image centre,
    /// counter-clockwise for positive angles; outside samples read `fill`. Nearest neighbour
    /// (torchvision's default) unless `bilinear`.
    Rotation {
        /// Largest angle, in degrees (≥ 0); like torchvision's `RandomRotation(degrees)`.
        degrees: f32,
        /// Bilinear interpolation instead of nearest neighbour.
        bilinear: bool,
        /// Value of output pixels whose source lies outside the image, in the pixel units at
        /// this point of the pipeline (0 is black before [`Op::Normalize`]).
        fill: f32,
    },
    /// Adds N(mean, σ²) per sample, clamping to [0, 1] when `clip` (torchvision v2's
    /// `GaussianNoise`).
    GaussianNoise {
        /// Mean of the noise, in pixel units ([0, 1] scale before [`Op::Normalize`]).
        mean: f32,
        /// Standard deviation of the noise, same units, ≥ 0 (torchvision's default 0.1).
        sigma: f32,
        /// Clamp the result to [0, 1] (torchvision's default `clip=True`).
        clip: bool,
    },
    /// Sobel gradient magnitude of the luma, written to every channel (unscaled: a unit step
    /// gives 4).
    Sobel,
    /// `(x - mean[c]) / std[c]`; one entry per channel.
    Normalize {
        /// Per-channel mean, in [0, 1] units (pixel / 255), as `transforms.Normalize`'s `mean`.
        mean: Vec<f32>,
        /// Per-channel standard deviation, same units, each finite and > 0.
        std: Vec<f32>,
    },
    /// torchvision's `RandomApply(ops, p)`: all of `ops`, in order, with probability `p`.
    RandomApply {
        /// Probability of applying `ops`, in [0, 1], drawn once for the whole list.
        p: f32,
        /// The steps, run in order; none may change the view's size.
        ops: Vec<Op>,
    },
}

fn check_p(op: &'static str, p: f32) -> Result<(), AugmentError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(
            op,
            "p",
            format!("{p} is not a probability in [0, 1]"),
        ))
    }
}

fn check_range(
    op: &'static str,
    name: &'static str,
    r: (f32, f32),
    positive: bool,
) -> Result<(), AugmentError> {
    let ok = r.0.is_finite()
        && r.1.is_finite()
        && r.0 <= r.1
        && if positive { r.0 > 0.0 } else { r.0 >= 0.0 };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            op,
            name,
            format!(
                "({}, {}) must be finite, ordered and {}",
                r.0,
                r.1,
                if positive { "> 0" } else { "≥ 0" }
            ),
        ))
    }
}

fn check_size(op: &'static str, h: usize, w: usize) -> Result<(), AugmentError> {
    if h == 0 || w == 0 {
        Err(invalid(op, "size", format!("{h}×{w} has a zero side")))
    } else {
        Ok(())
    }
}

impl ColorJitter {
    /// The factors' ranges (non-negative, `lo ≤ hi`) and the hue's (within [-0.5, 0.5]).
    fn validate(&self) -> Result<(), AugmentError> {
        let j = self;
        for (name, r) in [
            ("brightness", j.brightness),
            ("contrast", j.contrast),
            ("saturation", j.saturation),
        ] {
            if let Some(r) = r {
                check_range("ColorJitter", name, r, false)?;
            }
        }
        if let Some((lo, hi)) = j.hue {
            if !(-0.5..=0.5).contains(&lo) || !(-0.5..=0.5).contains(&hi) || lo > hi {
                return Err(invalid(
                    "ColorJitter",
                    "hue",
                    format!("({lo}, {hi}) must lie in [-0.5, 0.5]"),
                ));
            }
        }
        Ok(())
    }
}

/// One mean and one positive, finite std per channel.
fn check_normalize(mean: &[f32], std: &[f32], channels: usize) -> Result<(), AugmentError> {
    if mean.len() != channels || std.len() != channels {
        return Err(invalid(
            "Normalize",
            "mean/std",
            format!(
                "{} means and {} stds for {channels} channels",
                mean.len(),
                std.len()
            ),
        ));
    }
    if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(invalid(
            "Normalize",
            "std",
            format!("{s} must be finite and > 0"),
        ));
    }
    Ok(())
}

impl Op {
    /// Checks the parameters; `channels` is the pipeline's channel count.
    pub(crate) fn validate(&self, channels: usize, nested: bool) -> Result<(), AugmentError> {
        match self {
            Op::RandomResizedCrop {
                height,
                width,
                scale,
                ratio,
            } => {
                if nested {
                    return Err(invalid(
                        "RandomApply",
                        "ops",
                        "a crop inside RandomApply would give views of different sizes",
                    ));
                }
                check_size("RandomResizedCrop", *height, *width)?;
                check_range("RandomResizedCrop", "scale", *scale, true)?;
                check_range("RandomResizedCrop", "ratio", *ratio, true)
            }
            Op::RandomCrop {
                height,
                width,
                padding,
            } => {
                if nested {
                    return Err(invalid(
                        "RandomApply",
                        "ops",
                        "a crop inside RandomApply would give views of different sizes",
                    ));
                }
                check_size("RandomCrop", *height, *width)?;
                if *padding > 1024 {
                    return Err(invalid(
                        "RandomCrop",
                        "padding",
                        format!("{padding} pixels is more than 1024"),
                    ));
                }
                Ok(())
            }
            Op::Resize { height, width } | Op::CenterCrop { height, width } => {
                if nested {
                    return Err(invalid(
                        "RandomApply",
                        "ops",
                        "a resize inside RandomApply would give views of different sizes",
                    ));
                }
                check_size("Resize/CenterCrop", *height, *width)
            }
            Op::HorizontalFlip { p } => check_p("HorizontalFlip", *p),
            Op::Grayscale { p } => check_p("Grayscale", *p),
            Op::ColorJitter(j) => j.validate(),
            Op::GaussianBlur { kernel_size, sigma } => {
                if *kernel_size == 0 || kernel_size % 2 == 0 {
                    return Err(invalid(
                        "GaussianBlur",
                        "kernel_size",
                        format!("{kernel_size} must be odd and positive"),
                    ));
                }
                check_range("GaussianBlur", "sigma", *sigma, true)
            }
            Op::RandomErasing {
                p, scale, ratio, ..
            } => {
                check_p("RandomErasing", *p)?;
                check_range("RandomErasing", "scale", *scale, false)?;
                if scale.1 > 1.0 {
                    return Err(invalid(
                        "RandomErasing",
                        "scale",
                        format!("{} exceeds 1", scale.1),
                    ));
                }
                check_range("RandomErasing", "ratio", *ratio, true)
            }
            Op::Cutout { size, p, value } => {
                check_p("Cutout", *p)?;
                if *size == 0 || !value.is_finite() {
                    return Err(invalid(
                        "Cutout",
                        "size",
                        format!("size {size} must be positive and value {value} finite"),
                    ));
                }
                Ok(())
            }
            Op::Rotation { degrees, fill, .. } => {
                if !(degrees.is_finite() && *degrees >= 0.0 && fill.is_finite()) {
                    return Err(invalid(
                        "Rotation",
                        "degrees",
                        format!("{degrees} must be finite and ≥ 0 (fill {fill} finite)"),
                    ));
                }
                Ok(())
            }
            Op::GaussianNoise { mean, sigma, .. } => {
                if !(mean.is_finite() && sigma.is_finite() && *sigma >= 0.0) {
                    return Err(invalid(
                        "GaussianNoise",
                        "sigma",
                        format!("mean {mean}, sigma {sigma}: finite, sigma ≥ 0"),
                    ));
                }
                Ok(())
            }
            Op::Sobel => Ok(()),
            Op::Normalize { mean, std } => check_normalize(mean, std, channels),
            Op::RandomApply { p, ops } => {
                check_p("RandomApply", *p)?;
                ops.iter().try_for_each(|op| op.validate(channels, true))
            }
        }
    }

    /// The size after this step for an input of `h × w`.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Op::RandomResizedCrop { height, width, .. }
            | Op::RandomCrop { height, width, .. }
            | Op::Resize { height, width }
            | Op::CenterCrop { height, width } => (*height, *width),
            _ => (h, w),
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: `(top, left, height, width)` of the crop.
pub fn sample_resized_crop(
    h: usize,
    w: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut ViewRng,
) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let log_ratio = (f64::from(ratio.0).ln(), f64::from(ratio.1).ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform_range(f64::from(scale.0), f64::from(scale.1));
        let aspect = rng.uniform_range(log_ratio.0, log_ratio.1).exp();
        // Python's round() rounds half to even.
        let cw = (target_area * aspect).sqrt().round_ties_even() as usize;
        let ch = (target_area / aspect).sqrt().round_ties_even() as usize;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let top = rng.below(h - ch + 1);
            let left = rng.below(w - cw + 1);
            return (top, left, ch, cw);
        }
    }
    // Fallback: the central crop, clamped to the ratio range.
    let in_ratio = w as f64 / h as f64;
    let (min_r, max_r) = (f64::from(ratio.0), f64::from(ratio.1));
    let (ch, cw) = if in_ratio < min_r {
        (((w as f64) / min_r).round_ties_even() as usize, w)
    } else if in_ratio > max_r {
        (h, ((h as f64) * max_r).round_ties_even() as usize)
    } else {
        (h, w)
    };
    let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// torchvision's `RandomErasing.get_params`: `Some((top, left, height, width))`, or `None`
/// when 10 attempts found no box strictly smaller than the image.
pub fn sample_erasing(
    h: usize,
    w: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut ViewRng,
) -> Option<(usize, usize, usize, usize)> {
    let area = (h * w) as f64;
    let log_ratio = (f64::from(ratio.0).ln(), f64::from(ratio.1).ln());
    for _ in 0..10 {
        let erase_area = area * rng.uniform_range(f64::from(scale.0), f64::from(scale.1));
        let aspect = rng.uniform_range(log_ratio.0, log_ratio.1).exp();
        let eh = (erase_area * aspect).sqrt().round_ties_even() as usize;
        let ew = (erase_area / aspect).sqrt().round_ties_even() as usize;
        if !(eh < h && ew < w) {
            continue;
        }
        let top = rng.below(h - eh + 1);
        let left = rng.below(w - ew + 1);
        return Some((top, left, eh, ew));
    }
    None
}

/// Reusable buffers of one thread.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    pub(crate) image: Planar,
    pub(crate) spare: Planar,
    resampler: Resampler,
    convolver: Convolver,
    kernel: Vec<f32>,
}

impl Op {
    /// Applies the step to `scratch.image`.
    pub(crate) fn apply(&self, scratch: &mut Scratch, rng: &mut ViewRng) {
        match self {
            Op::RandomResizedCrop {
                height,
                width,
                scale,
                ratio,
            } => {
                let img = &scratch.image;
                let (top, left, ch, cw) =
                    sample_resized_crop(img.height, img.width, *scale, *ratio, rng);
                scratch.resampler.resized_crop(
                    img,
                    top,
                    left,
                    ch,
                    cw,
                    *height,
                    *width,
                    Filter::Bilinear,
                    &mut scratch.spare,
                );
                std::mem::swap(&mut scratch.image, &mut scratch.spare);
            }
            Op::Resize { height, width } => {
                let img = &scratch.image;
                if img.height != *height || img.width != *width {
                    let (h, w) = (img.height, img.width);
                    scratch.resampler.resized_crop(
                        img,
                        0,
                        0,
                        h,
                        w,
                        *height,
                        *width,
                        Filter::Bilinear,
                        &mut scratch.spare,
                    );
                    std::mem::swap(&mut scratch.image, &mut scratch.spare);
                }
            }
            Op::RandomCrop {
                height,
                width,
                padding,
            } => {
                let img = &scratch.image;
                // torchvision's RandomCrop.get_params on the padded image: top, then left.
                let top = rng.below((img.height + 2 * padding).saturating_sub(*height) + 1);
                let left = rng.below((img.width + 2 * padding).saturating_sub(*width) + 1);
                crop_with_zeros(
                    scratch,
                    top as isize - *padding as isize,
                    left as isize - *padding as isize,
                    *height,
                    *width,
                );
            }
            Op::CenterCrop { height, width } => center_crop(scratch, *height, *width),
            Op::HorizontalFlip { p } => {
                if rng.bernoulli(f64::from(*p)) {
                    let img = &mut scratch.image;
                    let w = img.width;
                    for row in img.pixels_mut().chunks_exact_mut(w) {
                        row.reverse();
                    }
                }
            }
            Op::ColorJitter(jitter) => jitter.apply(&mut scratch.image, rng),
            Op::Grayscale { p } => {
                if rng.bernoulli(f64::from(*p)) {
                    color::to_grayscale(&mut scratch.image);
                }
            }
            Op::GaussianBlur { kernel_size, sigma } => {
                let s = rng.uniform_range(f64::from(sigma.0), f64::from(sigma.1));
                gaussian_kernel(*kernel_size, s, &mut scratch.kernel);
                scratch
                    .convolver
                    .separable(&mut scratch.image, &scratch.kernel, Border::Reflect);
            }
            Op::RandomErasing {
                p,
                scale,
                ratio,
                value,
            } => random_erasing(scratch, rng, *p, *scale, *ratio, value),
            Op::Cutout { size, p, value } => cutout(scratch, rng, *size, *p, *value),
            Op::Rotation {
                degrees,
                bilinear,
                fill,
            } => {
                let angle = rng.uniform_range(-f64::from(*degrees), f64::from(*degrees));
                rotate(&scratch.image, angle, *bilinear, *fill, &mut scratch.spare);
                std::mem::swap(&mut scratch.image, &mut scratch.spare);
            }
            Op::GaussianNoise { mean, sigma, clip } => {
                let data = scratch.image.pixels_mut();
                let (m, s) = (f64::from(*mean), f64::from(*sigma));
                for pair in data.chunks_mut(2) {
                    let (a, b) = rng.normal_pair();
                    for (v, z) in pair.iter_mut().zip([a, b]) {
                        let x = (f64::from(*v) + m + s * z) as f32;
                        *v = if *clip { x.clamp(0.0, 1.0) } else { x };
                    }
                }
            }
            Op::Sobel => scratch.convolver.sobel(&mut scratch.image),
            Op::Normalize { mean, std } => {
                let img = &mut scratch.image;
                let plane = img.plane();
                for (ch, values) in img.pixels_mut().chunks_exact_mut(plane).enumerate() {
                    let (m, inv) = (mean[ch], 1.0 / std[ch]);
                    for v in values {
                        *v = (*v - m) * inv;
                    }
                }
            }
            Op::RandomApply { p, ops } => {
                if rng.bernoulli(f64::from(*p)) {
                    for op in ops {
                        op.apply(scratch, rng);
                    }
                }
            }
        }
    }
}

/// torchvision's `RandomErasing`: with probability `p`, a box of `scale` × the image's area
/// and aspect ratio in `ratio` filled with `value`.
fn random_erasing(
    scratch: &mut Scratch,
    rng: &mut ViewRng,
    p: f32,
    scale: (f32, f32),
    ratio: (f32, f32),
    value: &EraseValue,
) {
    if !rng.bernoulli(f64::from(p)) {
        return;
    }
    let img = &mut scratch.image;
    let Some((top, left, eh, ew)) = sample_erasing(img.height, img.width, scale, ratio, rng) else {
        return;
    };
    let (c, w, plane) = (img.channels, img.width, img.plane());
    for ch in 0..c {
        for y in top..top + eh {
            let row = &mut img.data[ch * plane + y * w + left..][..ew];
            match value {
                EraseValue::Constant(v) => row.fill(*v),
                EraseValue::Random => {
                    for px in row.iter_mut() {
                        *px = rng.normal_pair().0 as f32;
                    }
                }
            }
        }
    }
}

/// Cutout (DeVries & Taylor 2017): with probability `p`, a `size` × `size` square around a
/// uniform centre (clipped at the borders) filled with `value`.
fn cutout(scratch: &mut Scratch, rng: &mut ViewRng, size: usize, p: f32, value: f32) {
    if !rng.bernoulli(f64::from(p)) {
        return;
    }
    let img = &mut scratch.image;
    let (c, h, w, plane) = (img.channels, img.height, img.width, img.plane());
    let cy = rng.below(h) as isize;
    let cx = rng.below(w) as isize;
    let half = (size / 2) as isize;
    let y0 = (cy - half).clamp(0, h as isize) as usize;
    let y1 = (cy - half + size as isize).clamp(0, h as isize) as usize;
    let x0 = (cx - half).clamp(0, w as isize) as usize;
    let x1 = (cx - half + size as isize).clamp(0, w as isize) as usize;
    for ch in 0..c {
        for y in y0..y1 {
            img.data[ch * plane + y * w + x0..ch * plane + y * w + x1].fill(value);
        }
    }
}

/// torchvision's `center_crop`: offsets `round((h - ch) / 2)`, zero padding when the crop is
/// larger than the image (padding `(ch - h) // 2` on top).
fn center_crop(scratch: &mut Scratch, ch_out: usize, cw_out: usize) {
    let (h, w) = (scratch.image.height, scratch.image.width);
    let offset = |side: usize, out: usize| -> isize {
        if out <= side {
            (((side - out) as f64) / 2.0).round_ties_even() as isize
        } else {
            -(((out - side) / 2) as isize)
        }
    };
    crop_with_zeros(
        scratch,
        offset(h, ch_out),
        offset(w, cw_out),
        ch_out,
        cw_out,
    );
}

/// The `ch_out × cw_out` window whose top-left corner is at `(top, left)` of the image (either
/// may be negative); pixels outside the image read 0.
fn crop_with_zeros(scratch: &mut Scratch, top: isize, left: isize, ch_out: usize, cw_out: usize) {
    let img = &scratch.image;
    let (c, h, w) = (img.channels, img.height, img.width);
    let out = &mut scratch.spare;
    out.reshape(c, ch_out, cw_out);
    for ch in 0..c {
        for y in 0..ch_out {
            for x in 0..cw_out {
                let (sy, sx) = (y as isize + top, x as isize + left);
                let v = if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                    img.data[ch * h * w + sy as usize * w + sx as usize]
                } else {
                    0.0
                };
                out.data[(ch * ch_out + y) * cw_out + x] = v;
            }
        }
    }
    std::mem::swap(&mut scratch.image, &mut scratch.spare);
}

/// Rotation about the centre `((w-1)/2, (h-1)/2)`: each output pixel reads the source at the
/// inverse-rotated position (y grows downwards, so a positive angle turns the content
/// counter-clockwise on screen).
fn rotate(src: &Planar, degrees: f64, bilinear: bool, fill: f32, dst: &mut Planar) {
    let (c, h, w) = (src.channels, src.height, src.width);
    dst.reshape(c, h, w);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let plane = h * w;
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let sx = cx + cos * dx - sin * dy;
            let sy = cy + sin * dx + cos * dy;
            for ch in 0..c {
                let s = &src.data[ch * plane..(ch + 1) * plane];
                let read = |yy: isize, xx: isize| -> f32 {
                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                        s[yy as usize * w + xx as usize]
                    } else {
                        fill
                    }
                };
                let v = if bilinear {
                    let (x0, y0) = (sx.floor(), sy.floor());
                    let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
                    let (x0, y0) = (x0 as isize, y0 as isize);
                    let top = read(y0, x0) * (1.0 - fx) + read(y0, x0 + 1) * fx;
                    let bottom = read(y0 + 1, x0) * (1.0 - fx) + read(y0 + 1, x0 + 1) * fx;
                    top * (1.0 - fy) + bottom * fy
                } else {
                    read(sy.round_ties_even() as isize, sx.round_ties_even() as isize)
                };
                dst.data[ch * plane + y * w + x] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_by_ninety_degrees_turns_counter_clockwise() {
        let src = Planar {
            data: (0..9).map(|v| v as f32).collect(),
            channels: 1,
            height: 3,
            width: 3,
        };
        let mut dst = Planar::default();
        // The right column comes to the top: [[2, 5, 8], [1, 4, 7], [0, 3, 6]].
        rotate(&src, 90.0, false, -1.0, &mut dst);
        assert_eq!(dst.pixels(), &[2.0, 5.0, 8.0, 1.0, 4.0, 7.0, 0.0, 3.0, 6.0]);
        rotate(&src, -90.0, true, -1.0, &mut dst);
        let want = [6.0, 3.0, 0.0, 7.0, 4.0, 1.0, 8.0, 5.0, 2.0];
        for (g, w) in dst.pixels().iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{:?}", dst.pixels());
        }
        // 45° on a 3×3: corners fall outside and read the fill.
        rotate(&src, 45.0, false, -1.0, &mut dst);
        assert_eq!(dst.pixels()[4], 4.0);
    }
}
