//! Separable resampling with Pillow's coefficients (`ImagingResample`), which torchvision's
//! antialiased tensor resize (`antialias=True`, the default since 0.17) reproduces too.
//! For upscaling the bilinear filter equals `align_corners=False` bilinear interpolation;
//! for downscaling its support widens with the scale factor, averaging like an area filter.

use crate::image::Planar;

/// The interpolation filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, support 1 (Pillow's and torchvision's BILINEAR).
    Bilinear,
    /// Box filter, support ½ (Pillow's BOX, used by ImageNet-C's pixelate).
    Box,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Box => 0.5,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// The taps of one axis: output `o` reads `count[o]` inputs from `start[o]` with
/// `weights[o * taps ..]`. Reused between views.
#[derive(Clone, Debug, Default)]
pub struct Coefficients {
    taps: usize,
    /// Every output has exactly `taps` taps.
    uniform: bool,
    start: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<f32>,
}

impl Coefficients {
    /// Pillow's `precompute_coeffs` for an input axis of `in_size` samples mapped onto
    /// `out_size`. With `pad`, every output gets exactly `taps` taps (zero weights added, the
    /// start moved back at the far edge) whenever the input is that long, so the horizontal
    /// pass can run a fixed-length, unrolled loop; the sums are unchanged.
    pub fn compute(&mut self, in_size: usize, out_size: usize, filter: Filter, pad: bool) {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter.support() * filter_scale;
        let taps = support.ceil() as usize * 2 + 1;
        self.taps = taps;
        self.start.clear();
        self.count.clear();
        self.weights.clear();
        self.weights.resize(out_size * taps, 0.0);
        let inv = 1.0 / filter_scale;
        let mut raw = [0.0f64; 64];
        for o in 0..out_size {
            let center = (o as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; the clamp makes negative values irrelevant.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = hi.saturating_sub(lo).min(taps);
            let mut total = 0.0;
            for (k, slot) in raw.iter_mut().enumerate().take(n) {
                let w = filter.weight((k as f64 + lo as f64 - center + 0.5) * inv);
                *slot = w;
                total += w;
            }
            let (start, offset, count) = if pad && in_size >= taps {
                let start = lo.min(in_size - taps);
                (start, lo - start, taps)
            } else {
                (lo, 0, n)
            };
            let row = &mut self.weights[o * taps + offset..o * taps + offset + n];
            for (dst, &w) in row.iter_mut().zip(&raw[..n]) {
                *dst = if total != 0.0 {
                    (w / total) as f32
                } else {
                    0.0
                };
            }
            self.start.push(start);
            self.count.push(count);
        }
        self.uniform = self.count.iter().all(|&n| n == taps);
    }

    fn taps_of(&self, o: usize) -> (usize, &[f32]) {
        let n = self.count[o];
        (
            self.start[o],
            &self.weights[o * self.taps..o * self.taps + n],
        )
    }
}

fn horizontal_any(coeffs: &Coefficients, src_row: &[f32], out_row: &mut [f32]) {
    for (o, dst_px) in out_row.iter_mut().enumerate() {
        let (start, weights) = coeffs.taps_of(o);
        let mut acc = 0.0f32;
        for (w, &v) in weights.iter().zip(&src_row[start..]) {
            acc += w * v;
        }
        *dst_px = acc;
    }
}

/// The horizontal pass when every output has exactly `T` taps (padded coefficients).
fn horizontal_fixed<const T: usize>(coeffs: &Coefficients, src_row: &[f32], out_row: &mut [f32]) {
    if !coeffs.uniform || coeffs.taps != T {
        return horizontal_any(coeffs, src_row, out_row);
    }
    for ((dst_px, &start), weights) in out_row
        .iter_mut()
        .zip(&coeffs.start)
        .zip(coeffs.weights.chunks_exact(T))
    {
        let src = &src_row[start..start + T];
        let mut acc = 0.0f32;
        for k in 0..T {
            acc += weights[k] * src[k];
        }
        *dst_px = acc;
    }
}

/// Reusable buffers of one resampling call.
#[derive(Clone, Debug, Default)]
pub struct Resampler {
    horizontal: Coefficients,
    vertical: Coefficients,
    rows: Vec<f32>,
}

impl Resampler {
    /// Resamples the crop `[top, top + crop_h) × [left, left + crop_w)` of `src` onto
    /// `out_h × out_w` pixels in `dst` (torchvision's `resized_crop`: crop, then resize).
    #[allow(clippy::too_many_arguments)]
    pub fn resized_crop(
        &mut self,
        src: &Planar,
        top: usize,
        left: usize,
        crop_h: usize,
        crop_w: usize,
        out_h: usize,
        out_w: usize,
        filter: Filter,
        dst: &mut Planar,
    ) {
        let c = src.channels;
        dst.reshape(c, out_h, out_w);
        let (sh, sw) = (src.height, src.width);
        if crop_h == out_h && crop_w == out_w {
            // Scale 1: every filter reduces to the identity.
            for ch in 0..c {
                for y in 0..out_h {
                    let s = ch * sh * sw + (top + y) * sw + left;
                    let d = ch * out_h * out_w + y * out_w;
                    dst.data[d..d + out_w].copy_from_slice(&src.data[s..s + out_w]);
                }
            }
            return;
        }
        self.horizontal.compute(crop_w, out_w, filter, true);
        self.vertical.compute(crop_h, out_h, filter, false);
        // Horizontal pass over the crop's rows: [c, crop_h, out_w].
        let rows_len = c * crop_h * out_w;
        if self.rows.len() < rows_len {
            self.rows.resize(rows_len, 0.0);
        }
        for ch in 0..c {
            for y in 0..crop_h {
                let src_row = &src.data[ch * sh * sw + (top + y) * sw + left..][..crop_w];
                let out_row = &mut self.rows[(ch * crop_h + y) * out_w..][..out_w];
                match self.horizontal.taps {
                    3 => horizontal_fixed::<3>(&self.horizontal, src_row, out_row),
                    5 => horizontal_fixed::<5>(&self.horizontal, src_row, out_row),
                    _ => horizontal_any(&self.horizontal, src_row, out_row),
                }
            }
        }
        // Vertical pass: whole rows at a time, which vectorises.
        for ch in 0..c {
            let plane_rows = &self.rows[ch * crop_h * out_w..][..crop_h * out_w];
            for oy in 0..out_h {
                let (start, weights) = self.vertical.taps_of(oy);
                let out_row = &mut dst.data[ch * out_h * out_w + oy * out_w..][..out_w];
                out_row.fill(0.0);
                for (k, &w) in weights.iter().enumerate() {
                    let in_row = &plane_rows[(start + k) * out_w..][..out_w];
                    for (d, &v) in out_row.iter_mut().zip(in_row) {
                        *d += w * v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planar(c: usize, h: usize, w: usize, data: Vec<f32>) -> Planar {
        Planar {
            data,
            channels: c,
            height: h,
            width: w,
        }
    }

    #[test]
    fn bilinear_upscale_matches_align_corners_false() {
        // 2 → 4 pixels: scale ½, source positions (o + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
        // clamped at the borders: [a, 0.75a + 0.25b, 0.25a + 0.75b, b].
        let src = planar(1, 1, 2, vec![0.0, 1.0]);
        let mut dst = Planar::default();
        Resampler::default().resized_crop(&src, 0, 0, 1, 2, 1, 4, Filter::Bilinear, &mut dst);
        let expected = [0.0, 0.25, 0.75, 1.0];
        for (got, want) in dst.pixels().iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?}", dst.pixels());
        }
    }

    #[test]
    fn downscale_by_two_averages_pairs() {
        // Pillow's bilinear at scale 2 has support 2: weights (1/8, 3/8, 3/8, 1/8) inside,
        // renormalised at the border.
        let src = planar(1, 1, 4, vec![0.0, 0.4, 0.8, 1.0]);
        let mut dst = Planar::default();
        Resampler::default().resized_crop(&src, 0, 0, 1, 4, 1, 2, Filter::Box, &mut dst);
        assert!((dst.pixels()[0] - 0.2).abs() < 1e-6);
        assert!((dst.pixels()[1] - 0.9).abs() < 1e-6);
        Resampler::default().resized_crop(&src, 0, 0, 1, 4, 1, 2, Filter::Bilinear, &mut dst);
        // output 0: center 1, taps x=0..2 at distances (0.5, 0.5, 1.5)/2 → weights 3/4,3/4,1/4
        let w = [0.75f32, 0.75, 0.25];
        let want = (w[0] * 0.0 + w[1] * 0.4 + w[2] * 0.8) / (w[0] + w[1] + w[2]);
        assert!((dst.pixels()[0] - want).abs() < 1e-6, "{:?}", dst.pixels());
    }

    #[test]
    fn crop_of_equal_size_copies() {
        let src = planar(1, 3, 3, (0..9).map(|v| v as f32).collect());
        let mut dst = Planar::default();
        Resampler::default().resized_crop(&src, 1, 1, 2, 2, 2, 2, Filter::Bilinear, &mut dst);
        assert_eq!(dst.pixels(), &[4.0, 5.0, 7.0, 8.0]);
    }
}
