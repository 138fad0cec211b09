//! Pixel semantics against torchvision 0.26.0 (torch 2.11.0, CPU).
//!
//! The expected numbers were produced once with torchvision's tensor functional API
//! (`torchvision.transforms.functional`), on the inputs built below, by this script:
//!
//! ```python
//! import torch, torchvision.transforms.functional as F
//! b = torch.tensor([[[ 12, 200,  90], [255,  30, 140]],
//!                   [[ 60,  60, 250], [ 10, 180, 180]],
//!                   [[220,   5, 128], [100, 100,  40]]], dtype=torch.uint8)  # C=3, H=2, W=3
//! x = b.float() / 255
//! F.adjust_hue(x, 0.2); F.adjust_hue(x, -0.37); F.adjust_saturation(x, 1.7)
//! F.adjust_contrast(x, 0.6); F.adjust_brightness(x, 1.3)
//! g = (torch.arange(16, dtype=torch.float32) * 16 / 255).reshape(1, 4, 4)
//! F.resized_crop(g, 1, 0, 3, 4, [5, 7], antialias=True)
//! h = (torch.arange(64, dtype=torch.float32) * 4 / 255).reshape(1, 8, 8) ** 2
//! F.resize(h, [3, 3], antialias=True)
//! k = torch.zeros(1, 5, 5); k[0, 1, 3] = 1.0; k[0, 4, 0] = 0.5
//! F.gaussian_blur(k, [3, 3], [0.9, 0.9])
//! ```
//! (each result flattened and printed with 7 decimals). torchvision's tensor luma weighs red
//! 0.2989 where we use 0.299, hence the looser tolerance for contrast and saturation.

// The numbers are pasted as Python printed them (7 decimals), trailing zeros included.
#![allow(clippy::excessive_precision)]

use supcon_augment::color;
use supcon_augment::filter::{gaussian_kernel, Border, Convolver};
use supcon_augment::image::{ImageRef, Planar};
use supcon_augment::resample::{Filter, Resampler};

const PIXELS: [u8; 18] = [
    12, 200, 90, 255, 30, 140, // red plane
    60, 60, 250, 10, 180, 180, // green plane
    220, 5, 128, 100, 100, 40, // blue plane
];

/// The CHW planes above as an image (our loader takes HWC bytes).
fn image() -> Planar {
    let mut hwc = [0u8; 18];
    for c in 0..3 {
        for p in 0..6 {
            hwc[p * 3 + c] = PIXELS[c * 6 + p];
        }
    }
    let mut img = Planar::default();
    img.load(&ImageRef::new(&hwc, 2, 3, 3).expect("image"));
    img
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: {g} vs torchvision {w}\n{got:?}"
        );
    }
}

#[test]
fn colour_adjustments_match_torchvision() {
    let cases: [(&str, f32, f32, [f32; 18]); 5] = [
        (
            "hue",
            0.2,
            2e-6,
            [
                0.8376466, 0.4156863, 0.3529412, 1.0000000, 0.1176470, 0.1568627, 0.0470588,
                0.7843137, 0.7058824, 0.8392161, 0.3137256, 0.7058824, 0.8627451, 0.0196078,
                0.9803922, 0.0392157, 0.7058824, 0.4235295,
            ],
        ),
        (
            "hue",
            -0.37,
            2e-6,
            [
                0.4147455, 0.0670585, 0.9803922, 0.0392157, 0.7058824, 0.7058824, 0.8627451,
                0.0196078, 0.3639217, 0.6035293, 0.2627451, 0.1568627, 0.0470588, 0.7843137,
                0.3529412, 1.0000000, 0.1176470, 0.6698039,
            ],
        ),
        (
            "saturation",
            1.7,
            1e-4,
            [
                0.0000000, 1.0000000, 0.0832545, 1.0000000, 0.0000000, 0.5158973, 0.2246245,
                0.1376510, 1.0000000, 0.0000000, 0.8540436, 0.7825640, 1.0000000, 0.0000000,
                0.3365878, 0.4100288, 0.3207102, 0.0000000,
            ],
        ),
        (
            "contrast",
            0.6,
            1e-4,
            [
                0.2162830, 0.6586360, 0.3998124, 0.7880477, 0.2586359, 0.5174595, 0.3292242,
                0.3292242, 0.7762830, 0.2115771, 0.6115772, 0.6115772, 0.7056948, 0.1998124,
                0.4892242, 0.4233418, 0.4233418, 0.2821653,
            ],
        ),
        (
            "brightness",
            1.3,
            1e-6,
            [
                0.0611765, 1.0000000, 0.4588235, 1.0000000, 0.1529412, 0.7137255, 0.3058823,
                0.3058823, 1.0000000, 0.0509804, 0.9176471, 0.9176471, 1.0000000, 0.0254902,
                0.6525490, 0.5098039, 0.5098039, 0.2039216,
            ],
        ),
    ];
    for (what, factor, tol, want) in cases {
        let mut img = image();
        match what {
            "hue" => color::adjust_hue(&mut img, factor),
            "saturation" => color::adjust_saturation(&mut img, factor),
            "contrast" => color::adjust_contrast(&mut img, factor),
            _ => color::adjust_brightness(&mut img, factor),
        }
        assert_close(img.pixels(), &want, tol, what);
    }
}

fn plane(h: usize, w: usize, data: Vec<f32>) -> Planar {
    Planar {
        data,
        channels: 1,
        height: h,
        width: w,
    }
}

#[test]
fn resized_crop_and_antialiased_downscale_match_torchvision() {
    let g = plane(4, 4, (0..16).map(|i| i as f32 * 16.0 / 255.0).collect());
    let mut out = Planar::default();
    Resampler::default().resized_crop(&g, 1, 0, 3, 4, 5, 7, Filter::Bilinear, &mut out);
    let want = [
        0.2509804, 0.2733894, 0.3092437, 0.3450980, 0.3809524, 0.4168067, 0.4392157, 0.3513726,
        0.3737815, 0.4096359, 0.4454902, 0.4813446, 0.5171989, 0.5396079, 0.5019608, 0.5243698,
        0.5602241, 0.5960785, 0.6319328, 0.6677871, 0.6901961, 0.6525491, 0.6749581, 0.7108124,
        0.7466667, 0.7825211, 0.8183754, 0.8407844, 0.7529412, 0.7753502, 0.8112045, 0.8470588,
        0.8829132, 0.9187675, 0.9411765,
    ];
    assert_close(out.pixels(), &want, 2e-6, "resized_crop");

    let h = plane(
        8,
        8,
        (0..64).map(|i| (i as f32 * 4.0 / 255.0).powi(2)).collect(),
    );
    Resampler::default().resized_crop(&h, 0, 0, 8, 8, 3, 3, Filter::Bilinear, &mut out);
    let want = [
        0.0376389, 0.0508643, 0.0667291, 0.2275801, 0.2633830, 0.3018253, 0.5864450, 0.6448254,
        0.7058451,
    ];
    assert_close(out.pixels(), &want, 2e-6, "antialiased resize");
}

#[test]
fn gaussian_blur_matches_torchvision() {
    let mut k = plane(5, 5, vec![0.0; 25]);
    k.data[5 + 3] = 1.0;
    k.data[20] = 0.5;
    let mut kernel = Vec::new();
    gaussian_kernel(3, 0.9, &mut kernel);
    Convolver::default().separable(&mut k, &kernel, Border::Reflect);
    let want = [
        0.0000000, 0.0000000, 0.1346580, 0.2496406, 0.2693161, 0.0000000, 0.0000000, 0.1248203,
        0.2314026, 0.2496406, 0.0000000, 0.0000000, 0.0673290, 0.1248203, 0.1346580, 0.0624102,
        0.0336645, 0.0000000, 0.0000000, 0.0000000, 0.1157013, 0.0624102, 0.0000000, 0.0000000,
        0.0000000,
    ];
    assert_close(k.pixels(), &want, 2e-6, "gaussian_blur");
}
