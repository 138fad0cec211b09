//! Pixel arithmetic with torchvision's tensor semantics (`torchvision.transforms.functional`,
//! float images in [0, 1]): blends clamp to [0, 1]; hue is rotated in HSV.
//!
//! Luma uses ITU-R 601 weights 0.299 / 0.587 / 0.114, as Pillow's `convert("L")` does (the
//! PIL path is what SupContrast runs); torchvision's tensor path writes 0.2989 for red.

use crate::image::Planar;

/// Red, green and blue weights of the luma.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

#[inline]
fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

/// `blend(img, 0, factor)`: multiply and clamp.
pub fn adjust_brightness(img: &mut Planar, factor: f32) {
    for v in img.pixels_mut() {
        *v = clamp01(*v * factor);
    }
}

/// The mean of the luma image (of the image itself when it has one channel).
pub fn gray_mean(img: &Planar) -> f32 {
    let plane = img.plane();
    let px = img.pixels();
    // Eight f32 partial sums (vectorisable), added up in f64.
    let mut lanes = [0.0f32; 8];
    let sum: f64 = if img.channels == 3 {
        let (r, rest) = px.split_at(plane);
        let (g, b) = rest.split_at(plane);
        let (r8, g8, b8) = (r.chunks_exact(8), g.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = r8
            .remainder()
            .iter()
            .zip(g8.remainder())
            .zip(b8.remainder())
            .map(|((r, g), b)| LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)
            .sum();
        for ((r, g), b) in r8.zip(g8).zip(b8) {
            for k in 0..8 {
                lanes[k] += LUMA[0] * r[k] + LUMA[1] * g[k] + LUMA[2] * b[k];
            }
        }
        lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + f64::from(tail)
    } else {
        let chunks = px.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().sum();
        for chunk in chunks {
            for k in 0..8 {
                lanes[k] += chunk[k];
            }
        }
        (lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + f64::from(tail)) / img.channels as f64
    };
    (sum / plane as f64) as f32
}

/// `blend(img, mean(gray(img)), factor)`.
pub fn adjust_contrast(img: &mut Planar, factor: f32) {
    let mean = gray_mean(img);
    let offset = (1.0 - factor) * mean;
    for v in img.pixels_mut() {
        *v = clamp01(factor * *v + offset);
    }
}

/// `blend(img, gray(img), factor)`; a no-op for images that are not RGB (as torchvision).
pub fn adjust_saturation(img: &mut Planar, factor: f32) {
    if img.channels != 3 {
        return;
    }
    let plane = img.plane();
    let (r, rest) = img.data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b[..plane].iter_mut()) {
        let l = (1.0 - factor) * (LUMA[0] * *r + LUMA[1] * *g + LUMA[2] * *b);
        *r = clamp01(factor * *r + l);
        *g = clamp01(factor * *g + l);
        *b = clamp01(factor * *b + l);
    }
}

/// RGB → HSV exactly as torchvision's `_rgb2hsv`.
#[inline]
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let equal = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if equal { 1.0 } else { maxc };
    let divisor = if equal { 1.0 } else { cr };
    let rc = (maxc - r) / divisor;
    let gc = (maxc - g) / divisor;
    let bc = (maxc - b) / divisor;
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = (h / 6.0 + 1.0) % 1.0;
    (h, s, maxc)
}

/// HSV → RGB exactly as torchvision's `_hsv2rgb`.
#[inline]
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = clamp01(v * (1.0 - s));
    let q = clamp01(v * (1.0 - s * f));
    let t = clamp01(v * (1.0 - s * (1.0 - f)));
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// One pixel's hue rotation, branch-free so that the loop vectorises. Mathematically the
/// same as `hsv_to_rgb(frac(h + shift), s, v)` of `rgb_to_hsv(r, g, b)` (tested against it):
/// with `c = max - min` (= v·s) a channel is `max - c·clamp(min(k, 4 - k), 0, 1)`,
/// `k = (n + 6h) mod 6`, n = 5, 3, 1 for red, green, blue.
#[inline(always)]
pub fn shift_hue_pixel(r: f32, g: f32, b: f32, shift: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let chroma = maxc - minc;
    let inv = if chroma > 0.0 { 1.0 / chroma } else { 0.0 };
    // torchvision's hue in sixths of a turn, in (-1, 5)
    let h_r = (g - b) * inv;
    let h_g = 2.0 + (b - r) * inv;
    let h_b = 4.0 + (r - g) * inv;
    let h6 = if maxc == r {
        h_r
    } else if maxc == g {
        h_g
    } else {
        h_b
    };
    // t lies in (-2/3, 4/3): its fractional part by selects (`floor` is a libm call on
    // baseline x86-64 and would stop the loop from vectorising).
    let t = h6 * (1.0 / 6.0) + shift;
    let t = if t < 0.0 {
        t + 1.0
    } else if t >= 1.0 {
        t - 1.0
    } else {
        t
    };
    let sixths = t * 6.0;
    let channel = |n: f32| {
        let k = n + sixths;
        let k = if k >= 6.0 { k - 6.0 } else { k };
        maxc - chroma * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    (channel(5.0), channel(3.0), channel(1.0))
}

/// Rotates the hue by `shift` turns (torchvision's `adjust_hue`, `shift` in [-½, ½]); a no-op
/// for images that are not RGB.
pub fn adjust_hue(img: &mut Planar, shift: f32) {
    if img.channels != 3 {
        return;
    }
    let plane = img.plane();
    let (r, rest) = img.data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b[..plane].iter_mut()) {
        let (nr, ng, nb) = shift_hue_pixel(*r, *g, *b, shift);
        *r = nr;
        *g = ng;
        *b = nb;
    }
}

/// Replaces every channel of an RGB image by its luma; other images are left as they are
/// (torchvision's `rgb_to_grayscale` keeps a one-channel image).
pub fn to_grayscale(img: &mut Planar) {
    if img.channels != 3 {
        return;
    }
    let plane = img.plane();
    let (r, rest) = img.data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b[..plane].iter_mut()) {
        let l = LUMA[0] * *r + LUMA[1] * *g + LUMA[2] * *b;
        *r = l;
        *g = l;
        *b = l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(pixels: &[[f32; 3]]) -> Planar {
        let n = pixels.len();
        let mut data = vec![0.0; 3 * n];
        for (p, px) in pixels.iter().enumerate() {
            for c in 0..3 {
                data[c * n + p] = px[c];
            }
        }
        Planar {
            data,
            channels: 3,
            height: 1,
            width: n,
        }
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn brightness_scales_and_clamps() {
        let mut img = rgb(&[[0.2, 0.5, 0.8]]);
        adjust_brightness(&mut img, 1.5);
        assert!(close(img.data[0], 0.3) && close(img.data[1], 0.75) && close(img.data[2], 1.0));
    }

    #[test]
    fn contrast_blends_towards_the_luma_mean() {
        // luma of (1,0,0) = 0.299 and of (0,0,1) = 0.114; mean 0.2065.
        let mut img = rgb(&[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]);
        adjust_contrast(&mut img, 0.5);
        let mean = 0.2065f32;
        assert!(close(img.data[0], 0.5 + 0.5 * mean)); // r of pixel 0
        assert!(close(img.data[1], 0.5 * mean)); // r of pixel 1
        assert!(close(img.data[5], 0.5 + 0.5 * mean)); // b of pixel 1
    }

    #[test]
    fn saturation_zero_is_grayscale_and_two_is_clamped() {
        let mut img = rgb(&[[0.6, 0.4, 0.2]]);
        let l = 0.299 * 0.6 + 0.587 * 0.4 + 0.114 * 0.2;
        adjust_saturation(&mut img, 0.0);
        assert!(img.data.iter().all(|&v| close(v, l)));
        let mut img = rgb(&[[0.6, 0.4, 0.2]]);
        adjust_saturation(&mut img, 2.0);
        assert!(close(img.data[0], (1.2 - l).clamp(0.0, 1.0)));
        assert!(close(img.data[2], (0.4 - l).clamp(0.0, 1.0)));
    }

    #[test]
    fn hsv_round_trip_and_known_values() {
        assert_eq!(rgb_to_hsv(1.0, 0.0, 0.0), (0.0, 1.0, 1.0));
        let (h, s, v) = rgb_to_hsv(0.0, 1.0, 0.0);
        assert!(close(h, 1.0 / 3.0) && close(s, 1.0) && close(v, 1.0));
        let (h, s, v) = rgb_to_hsv(0.5, 0.5, 0.5);
        assert!(close(h, 0.0) && close(s, 0.0) && close(v, 0.5));
        for px in [[0.1, 0.7, 0.3], [0.9, 0.2, 0.6], [0.3, 0.3, 0.8]] {
            let (h, s, v) = rgb_to_hsv(px[0], px[1], px[2]);
            let (r, g, b) = hsv_to_rgb(h, s, v);
            assert!(
                close(r, px[0]) && close(g, px[1]) && close(b, px[2]),
                "{px:?}"
            );
        }
    }

    #[test]
    fn hue_shift_by_a_third_rotates_primaries() {
        let mut img = rgb(&[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]);
        adjust_hue(&mut img, 1.0 / 3.0);
        // red → green, blue → red (hue 2/3 + 1/3 wraps to 0)
        let got: Vec<f32> = img.data.clone();
        let want = [0.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
        // a shift of zero keeps the image
        let mut img = rgb(&[[0.25, 0.5, 0.75]]);
        adjust_hue(&mut img, 0.0);
        assert!(close(img.data[0], 0.25) && close(img.data[1], 0.5) && close(img.data[2], 0.75));
    }

    #[test]
    fn fast_hue_shift_equals_the_hsv_round_trip() {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        for k in 0..5000 {
            // include gray pixels and exact ties between channels
            let (r, g, b) = match k % 5 {
                0 => {
                    let v = next();
                    (v, v, v)
                }
                1 => {
                    let v = next();
                    (v, v, next())
                }
                _ => (next(), next(), next()),
            };
            let shift = next() - 0.5;
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let want = hsv_to_rgb((h + shift).rem_euclid(1.0), s, v);
            let got = shift_hue_pixel(r, g, b, shift);
            for (x, y) in [(got.0, want.0), (got.1, want.1), (got.2, want.2)] {
                assert!(
                    (x - y).abs() < 2e-6,
                    "{r} {g} {b} shift {shift}: {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn grayscale_uses_601_weights_and_keeps_gray_images() {
        let mut img = rgb(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);
        to_grayscale(&mut img);
        assert!(
            close(img.data[0], 0.299) && close(img.data[2], 0.299) && close(img.data[4], 0.299)
        );
        assert!(close(img.data[1], 0.587));
        let mut gray = Planar {
            data: vec![0.3, 0.6],
            channels: 1,
            height: 1,
            width: 2,
        };
        to_grayscale(&mut gray);
        adjust_hue(&mut gray, 0.3);
        adjust_saturation(&mut gray, 0.0);
        assert_eq!(gray.data, vec![0.3, 0.6]);
        adjust_contrast(&mut gray, 0.0);
        assert!(close(gray.data[0], 0.45) && close(gray.data[1], 0.45));
    }
}
