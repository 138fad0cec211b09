//! Separable convolution with a chosen border rule, and the Sobel gradient magnitude.

use crate::color::LUMA;
use crate::image::Planar;

/// How samples outside the image are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// Mirror without repeating the edge (`…c b | a b c | b a…`): torch's `reflect` padding,
    /// which torchvision's `gaussian_blur` uses.
    Reflect,
    /// Repeat the edge sample: scipy's `nearest`, skimage's default for `gaussian`.
    Nearest,
}

impl Border {
    fn index(self, i: isize, n: usize) -> usize {
        let n = n as isize;
        if n == 1 {
            return 0;
        }
        match self {
            Border::Nearest => i.clamp(0, n - 1) as usize,
            Border::Reflect => {
                // Fold repeatedly so that kernels wider than the image stay defined.
                let period = 2 * (n - 1);
                let mut j = i.rem_euclid(period);
                if j >= n {
                    j = period - j;
                }
                j as usize
            }
        }
    }
}

/// The normalised Gaussian taps at integer offsets `-r..=r`, `r = (size - 1) / 2`
/// (torchvision's `_get_gaussian_kernel1d`; scipy's kernel for `size = 2·round(4σ) + 1`).
pub fn gaussian_kernel(size: usize, sigma: f64, out: &mut Vec<f32>) {
    // Written into `out` directly: this runs once per blurred view, so no temporary buffer.
    out.clear();
    let half = (size as f64 - 1.0) * 0.5;
    let weight = |k: usize| (-0.5 * ((k as f64 - half) / sigma).powi(2)).exp();
    let total: f64 = (0..size).map(weight).sum();
    out.extend((0..size).map(|k| (weight(k) / total) as f32));
}

/// Reusable buffers for separable filtering.
#[derive(Clone, Debug, Default)]
pub struct Convolver {
    tmp: Vec<f32>,
    index: Vec<usize>,
}

impl Convolver {
    /// Convolves every channel with `kernel` along x, then along y, in place.
    pub fn separable(&mut self, img: &mut Planar, kernel: &[f32], border: Border) {
        let (c, h, w) = (img.channels, img.height, img.width);
        let k = kernel.len();
        let r = (k / 2) as isize;
        let plane = h * w;
        if self.tmp.len() < plane {
            self.tmp.resize(plane, 0.0);
        }
        for ch in 0..c {
            let data = &mut img.data[ch * plane..(ch + 1) * plane];
            // along x: tmp ← data
            self.index.clear();
            self.index.extend(
                (0..w)
                    .flat_map(|x| (0..k).map(move |t| (x as isize, t as isize)))
                    .map(|(x, t)| border.index(x + t - r, w)),
            );
            for y in 0..h {
                let row = &data[y * w..(y + 1) * w];
                for x in 0..w {
                    let idx = &self.index[x * k..(x + 1) * k];
                    let mut acc = 0.0f32;
                    for (&wt, &i) in kernel.iter().zip(idx) {
                        acc += wt * row[i];
                    }
                    self.tmp[y * w + x] = acc;
                }
            }
            // along y: data ← tmp, a row at a time
            for y in 0..h {
                let out = &mut data[y * w..(y + 1) * w];
                out.fill(0.0);
                for (t, &wt) in kernel.iter().enumerate() {
                    let sy = border.index(y as isize + t as isize - r, h);
                    let src = &self.tmp[sy * w..(sy + 1) * w];
                    for (o, &s) in out.iter_mut().zip(src) {
                        *o += wt * s;
                    }
                }
            }
        }
    }

    /// Sobel gradient magnitude of the luma (edge samples repeated), written to every channel.
    pub fn sobel(&mut self, img: &mut Planar) {
        let (c, h, w) = (img.channels, img.height, img.width);
        let plane = h * w;
        if self.tmp.len() < plane {
            self.tmp.resize(plane, 0.0);
        }
        for p in 0..plane {
            self.tmp[p] = if c == 3 {
                LUMA[0] * img.data[p]
                    + LUMA[1] * img.data[plane + p]
                    + LUMA[2] * img.data[2 * plane + p]
            } else {
                (0..c).map(|ch| img.data[ch * plane + p]).sum::<f32>() / c as f32
            };
        }
        let at = |tmp: &[f32], y: isize, x: isize| -> f32 {
            let yy = y.clamp(0, h as isize - 1) as usize;
            let xx = x.clamp(0, w as isize - 1) as usize;
            tmp[yy * w + xx]
        };
        for y in 0..h as isize {
            for x in 0..w as isize {
                let t = &self.tmp;
                let gx = (at(t, y - 1, x + 1) + 2.0 * at(t, y, x + 1) + at(t, y + 1, x + 1))
                    - (at(t, y - 1, x - 1) + 2.0 * at(t, y, x - 1) + at(t, y + 1, x - 1));
                let gy = (at(t, y + 1, x - 1) + 2.0 * at(t, y + 1, x) + at(t, y + 1, x + 1))
                    - (at(t, y - 1, x - 1) + 2.0 * at(t, y - 1, x) + at(t, y - 1, x + 1));
                let m = (gx * gx + gy * gy).sqrt();
                let p = y as usize * w + x as usize;
                for ch in 0..c {
                    img.data[ch * plane + p] = m;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders_fold_like_torch_and_scipy() {
        let reflect: Vec<usize> = (-3..7).map(|i| Border::Reflect.index(i, 4)).collect();
        assert_eq!(reflect, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        let nearest: Vec<usize> = (-2..6).map(|i| Border::Nearest.index(i, 4)).collect();
        assert_eq!(nearest, vec![0, 0, 0, 1, 2, 3, 3, 3]);
    }

    #[test]
    fn gaussian_kernel_known_values() {
        // size 3, sigma 1: [e^-0.5, 1, e^-0.5] / (1 + 2 e^-0.5)
        let mut k = Vec::new();
        gaussian_kernel(3, 1.0, &mut k);
        let e = (-0.5f64).exp();
        let total = 1.0 + 2.0 * e;
        assert!((f64::from(k[0]) - e / total).abs() < 1e-7);
        assert!((f64::from(k[1]) - 1.0 / total).abs() < 1e-7);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn blur_of_an_impulse_is_the_outer_product_and_constants_stay() {
        let mut img = Planar {
            data: vec![0.0; 25],
            channels: 1,
            height: 5,
            width: 5,
        };
        img.data[12] = 1.0;
        let mut k = Vec::new();
        gaussian_kernel(3, 0.8, &mut k);
        Convolver::default().separable(&mut img, &k, Border::Reflect);
        assert!((img.data[12] - k[1] * k[1]).abs() < 1e-7);
        assert!((img.data[6] - k[0] * k[0]).abs() < 1e-7);
        assert!((img.data[7] - k[0] * k[1]).abs() < 1e-7);
        let mut flat = Planar {
            data: vec![0.7; 12],
            channels: 1,
            height: 3,
            width: 4,
        };
        Convolver::default().separable(&mut flat, &k, Border::Nearest);
        assert!(flat.data.iter().all(|&v| (v - 0.7).abs() < 1e-6));
    }

    #[test]
    fn sobel_of_a_vertical_step() {
        // columns 0,1 dark, 2,3 bright: |gx| = 4 at the columns next to the step, gy = 0.
        let row = [0.0, 0.0, 1.0, 1.0];
        let mut img = Planar {
            data: row.iter().cycle().take(12).copied().collect(),
            channels: 1,
            height: 3,
            width: 4,
        };
        Convolver::default().sobel(&mut img);
        assert_eq!(&img.data[4..8], &[0.0, 4.0, 4.0, 0.0]);
    }
}
