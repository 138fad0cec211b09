//! Corruptions for robustness evaluation in the style of ImageNet-C / CIFAR-10-C (Hendrycks &
//! Dietterich 2019), each at five severities, seeded per image.
//!
//! The constants are those of `make_cifar_c.py` ([`SeverityScale::Cifar`], for 28–32 pixel
//! images such as Fashion-MNIST and CIFAR) and `make_imagenet_c.py`
//! ([`SeverityScale::ImageNet`]):
//!
//! | corruption | CIFAR-10-C c | ImageNet-C c | formula (x in [0, 1]) |
//! |---|---|---|---|
//! | Gaussian noise | .04 .06 .08 .09 .10 | .08 .12 .18 .26 .38 | clip(x + N(0, c²)) |
//! | shot noise | 500 250 100 75 50 | 60 25 12 5 3 | clip(Poisson(x·c) / c) |
//! | Gaussian blur | .4 .6 .7 .8 1 | 1 2 3 4 6 | skimage `gaussian(σ = c)`: radius ⌊4σ + ½⌋, edge samples repeated |
//! | contrast | .75 .5 .4 .3 .15 | .4 .3 .2 .1 .05 | clip((x − m)·c + m), m = per-channel mean |
//! | brightness | .05 .1 .15 .2 .3 | .1 .2 .3 .4 .5 | HSV value + c, clipped |
//! | pixelate | .95 .9 .85 .75 .65 | .6 .5 .4 .3 .25 | box-resize to ⌊w·c⌋ × ⌊h·c⌋ and back |
//!
//! Differences from the Python: our random streams are our own (seeded by `(seed,
//! corruption, severity, image id)`), Poisson draws use Knuth's method below λ = 10 and
//! Hörmann's PTRS above (numpy's legacy choice), pixelate resamples in float and rounds once
//! (Pillow rounds after each pass), and brightness scales RGB by v'/v, which is the HSV
//! round trip in closed form. Like the published data sets, results are stored as bytes by
//! truncation (`np.uint8`).

use rayon::prelude::*;

use crate::error::AugmentError;
use crate::filter::{gaussian_kernel, Border, Convolver};
use crate::image::{ImageRef, Planar};
use crate::resample::{Filter, Resampler};
use crate::rng::{stream_key, ViewRng};

/// The corruptions implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// Additive Gaussian noise of standard deviation `c`, clipped to [0, 1].
    GaussianNoise,
    /// Poisson (photon) noise: `Poisson(x·c) / c`, so a larger `c` is milder.
    ShotNoise,
    /// Gaussian blur of σ = `c` pixels, edge samples repeated.
    GaussianBlur,
    /// Contrast scaled by `c` about each channel's mean.
    Contrast,
    /// HSV value raised by `c`, clipped.
    Brightness,
    /// Box-downsampling to `c` of each side and back up (blocky pixels).
    Pixelate,
}

/// Which table of severity constants to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SeverityScale {
    /// CIFAR-10-C's constants (small images).
    #[default]
    Cifar,
    /// ImageNet-C's constants (224-pixel images).
    ImageNet,
}

impl Corruption {
    /// Every corruption, in the order of the module's table. A corruption's position here keys
    /// its random stream: reordering changes every corrupted image.
    pub const ALL: [Corruption; 6] = [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::GaussianBlur,
        Corruption::Contrast,
        Corruption::Brightness,
        Corruption::Pixelate,
    ];

    /// The name used by ImageNet-C's folders.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::ShotNoise => "shot_noise",
            Corruption::GaussianBlur => "gaussian_blur",
            Corruption::Contrast => "contrast",
            Corruption::Brightness => "brightness",
            Corruption::Pixelate => "pixelate",
        }
    }

    /// The severity constant `c` for severity 1..=5.
    pub fn constant(self, scale: SeverityScale, severity: u8) -> Result<f64, AugmentError> {
        if !(1..=5).contains(&severity) {
            return Err(AugmentError::Severity(severity));
        }
        let table: [f64; 5] = match (self, scale) {
            (Corruption::GaussianNoise, SeverityScale::Cifar) => [0.04, 0.06, 0.08, 0.09, 0.10],
            (Corruption::GaussianNoise, SeverityScale::ImageNet) => [0.08, 0.12, 0.18, 0.26, 0.38],
            (Corruption::ShotNoise, SeverityScale::Cifar) => [500.0, 250.0, 100.0, 75.0, 50.0],
            (Corruption::ShotNoise, SeverityScale::ImageNet) => [60.0, 25.0, 12.0, 5.0, 3.0],
            (Corruption::GaussianBlur, SeverityScale::Cifar) => [0.4, 0.6, 0.7, 0.8, 1.0],
            (Corruption::GaussianBlur, SeverityScale::ImageNet) => [1.0, 2.0, 3.0, 4.0, 6.0],
            (Corruption::Contrast, SeverityScale::Cifar) => [0.75, 0.5, 0.4, 0.3, 0.15],
            (Corruption::Contrast, SeverityScale::ImageNet) => [0.4, 0.3, 0.2, 0.1, 0.05],
            (Corruption::Brightness, SeverityScale::Cifar) => [0.05, 0.1, 0.15, 0.2, 0.3],
            (Corruption::Brightness, SeverityScale::ImageNet) => [0.1, 0.2, 0.3, 0.4, 0.5],
            (Corruption::Pixelate, SeverityScale::Cifar) => [0.95, 0.9, 0.85, 0.75, 0.65],
            (Corruption::Pixelate, SeverityScale::ImageNet) => [0.6, 0.5, 0.4, 0.3, 0.25],
        };
        Ok(table[usize::from(severity) - 1])
    }

    fn code(self) -> u64 {
        Corruption::ALL.iter().position(|&c| c == self).unwrap_or(0) as u64
    }
}

/// A Poisson(λ) sample: Knuth's product method for λ < 10, PTRS (Hörmann 1993) above.
pub fn poisson(lambda: f64, rng: &mut ViewRng) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 10.0 {
        let limit = (-lambda).exp();
        let mut k = 0u64;
        let mut product = rng.uniform();
        while product > limit {
            k += 1;
            product *= rng.uniform();
        }
        return k;
    }
    let slam = lambda.sqrt();
    let loglam = lambda.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = rng.uniform() - 0.5;
        let v = rng.uniform();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k as u64;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
            <= -lambda + k * loglam - ln_factorial(k)
        {
            return k as u64;
        }
    }
}

/// ln(k!) — exact sum below 20, Stirling's series above.
fn ln_factorial(k: f64) -> f64 {
    if k < 20.0 {
        return (2..=k as u64).map(|i| (i as f64).ln()).sum();
    }
    let x = k + 1.0;
    (x - 0.5) * x.ln() - x + 0.5 * (std::f64::consts::TAU).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x.powi(3))
        + 1.0 / (1260.0 * x.powi(5))
}

/// Scratch for one corruption call.
#[derive(Default)]
struct CorruptScratch {
    image: Planar,
    small: Planar,
    resampler: Resampler,
    convolver: Convolver,
    kernel: Vec<f32>,
}

fn corrupt_planar(
    img: &mut Planar,
    corruption: Corruption,
    c: f64,
    rng: &mut ViewRng,
    scratch: &mut CorruptScratch,
) {
    match corruption {
        Corruption::GaussianNoise => {
            for pair in img.pixels_mut().chunks_mut(2) {
                let (a, b) = rng.normal_pair();
                for (v, z) in pair.iter_mut().zip([a, b]) {
                    *v = (f64::from(*v) + c * z).clamp(0.0, 1.0) as f32;
                }
            }
        }
        Corruption::ShotNoise => {
            for v in img.pixels_mut() {
                *v = (poisson(f64::from(*v) * c, rng) as f64 / c).clamp(0.0, 1.0) as f32;
            }
        }
        Corruption::GaussianBlur => {
            let radius = (4.0 * c + 0.5) as usize;
            gaussian_kernel(2 * radius + 1, c, &mut scratch.kernel);
            scratch
                .convolver
                .separable(img, &scratch.kernel, Border::Nearest);
            for v in img.pixels_mut() {
                *v = v.clamp(0.0, 1.0);
            }
        }
        Corruption::Contrast => {
            let plane = img.plane();
            for values in img.pixels_mut().chunks_exact_mut(plane) {
                let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64;
                for v in values {
                    *v = ((f64::from(*v) - mean) * c + mean).clamp(0.0, 1.0) as f32;
                }
            }
        }
        Corruption::Brightness => {
            let (ch, plane) = (img.channels, img.plane());
            let data = img.pixels_mut();
            for p in 0..plane {
                let v = (0..ch).map(|k| data[k * plane + p]).fold(0.0f32, f32::max);
                let target = (f64::from(v) + c).min(1.0);
                for k in 0..ch {
                    let x = &mut data[k * plane + p];
                    // HSV keeps hue and saturation: every channel scales with the value.
                    *x = if v > 0.0 {
                        (f64::from(*x) * target / f64::from(v)).clamp(0.0, 1.0) as f32
                    } else {
                        target as f32
                    };
                }
            }
        }
        Corruption::Pixelate => {
            let (h, w) = (img.height, img.width);
            let sh = ((h as f64 * c) as usize).max(1);
            let sw = ((w as f64 * c) as usize).max(1);
            scratch.resampler.resized_crop(
                img,
                0,
                0,
                h,
                w,
                sh,
                sw,
                Filter::Box,
                &mut scratch.small,
            );
            let small = std::mem::take(&mut scratch.small);
            scratch
                .resampler
                .resized_crop(&small, 0, 0, sh, sw, h, w, Filter::Box, img);
            scratch.small = small;
        }
    }
}

fn store_bytes(img: &Planar, out: &mut [u8]) {
    let (c, plane) = (img.channels, img.plane());
    let px = img.pixels();
    for p in 0..plane {
        for k in 0..c {
            // np.uint8(x * 255) truncates.
            out[p * c + k] = (px[k * plane + p].clamp(0.0, 1.0) * 255.0) as u8;
        }
    }
}

/// Corrupts one image into `out` (HWC bytes of the same size). The random stream depends only
/// on `(seed, corruption, severity, id)`.
pub fn corrupt(
    image: ImageRef<'_>,
    corruption: Corruption,
    severity: u8,
    scale: SeverityScale,
    seed: u64,
    id: u64,
    out: &mut [u8],
) -> Result<(), AugmentError> {
    image.validate(0)?;
    let c = corruption.constant(scale, severity)?;
    if out.len() != image.data.len() {
        return Err(AugmentError::CorruptionOutput {
            len: out.len(),
            expected: image.data.len(),
        });
    }
    let mut scratch = CorruptScratch::default();
    run_one(&image, corruption, severity, c, seed, id, &mut scratch, out);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    image: &ImageRef<'_>,
    corruption: Corruption,
    severity: u8,
    c: f64,
    seed: u64,
    id: u64,
    scratch: &mut CorruptScratch,
    out: &mut [u8],
) {
    // A domain of its own: the "epoch" word carries the corruption and severity, offset so
    // that it never equals a training epoch in practice.
    let domain = (1u64 << 63) | (corruption.code() << 8) | u64::from(severity);
    let mut rng = ViewRng::from_key(stream_key(seed, domain, id, 0));
    let mut img = std::mem::take(&mut scratch.image);
    img.load(image);
    corrupt_planar(&mut img, corruption, c, &mut rng, scratch);
    store_bytes(&img, out);
    scratch.image = img;
}

/// Corrupts a batch of equally sized images (concatenated HWC bytes in `out`), in parallel.
#[allow(clippy::too_many_arguments)]
pub fn corrupt_batch(
    images: &[ImageRef<'_>],
    ids: &[u64],
    corruption: Corruption,
    severity: u8,
    scale: SeverityScale,
    seed: u64,
    out: &mut [u8],
) -> Result<(), AugmentError> {
    let c = corruption.constant(scale, severity)?;
    if ids.len() != images.len() {
        return Err(AugmentError::IdCount {
            images: images.len(),
            ids: ids.len(),
        });
    }
    let Some(first) = images.first() else {
        return Ok(());
    };
    let per_image = first.data.len();
    for (index, image) in images.iter().enumerate() {
        image.validate(index)?;
        if (image.height, image.width, image.channels)
            != (first.height, first.width, first.channels)
        {
            return Err(AugmentError::ViewSize {
                index,
                height: image.height,
                width: image.width,
                out_height: image.height,
                out_width: image.width,
                expected_height: first.height,
                expected_width: first.width,
            });
        }
    }
    if out.len() != per_image * images.len() {
        return Err(AugmentError::CorruptionOutput {
            len: out.len(),
            expected: per_image * images.len(),
        });
    }
    out.par_chunks_mut(per_image)
        .zip(images.par_iter().zip(ids.par_iter()))
        .for_each_init(CorruptScratch::default, |scratch, (dst, (image, &id))| {
            run_one(image, corruption, severity, c, seed, id, scratch, dst);
        });
    Ok(())
}
