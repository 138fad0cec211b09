//! Each operation through a one-op pipeline: known values, shapes, probability 0 and 1.

use supcon_augment::ops::{sample_erasing, sample_resized_crop};
use supcon_augment::{ColorJitter, EraseValue, ImageRef, Op, Pipeline, ViewRng};

fn run(ops: Vec<Op>, c: usize, h: usize, w: usize, data: &[u8], key: u64) -> Vec<f32> {
    let pipeline = Pipeline::new(c, ops).expect("pipeline");
    let image = ImageRef::new(data, h, w, c).expect("image");
    let mut out = vec![0.0f32; pipeline.view_len(h, w)];
    pipeline
        .apply(image, &mut ViewRng::from_key(key), &mut out)
        .expect("apply");
    out
}

fn ramp(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 255 / n.max(1)) as u8).collect()
}

fn to_float(data: &[u8]) -> Vec<f32> {
    data.iter().map(|&b| f32::from(b) / 255.0).collect()
}

#[test]
fn identity_pipeline_is_to_tensor_with_chw_layout() {
    // HWC [[r,g,b],[r,g,b]] → CHW
    let data = [10u8, 20, 30, 40, 50, 60];
    let out = run(vec![], 3, 1, 2, &data, 0);
    let want = to_float(&[10, 40, 20, 50, 30, 60]);
    assert_eq!(out, want);
}

#[test]
fn flip_probability_zero_and_one() {
    let data = [0u8, 85, 170, 255];
    assert_eq!(
        run(vec![Op::HorizontalFlip { p: 0.0 }], 1, 1, 4, &data, 1),
        to_float(&data)
    );
    assert_eq!(
        run(vec![Op::HorizontalFlip { p: 1.0 }], 1, 1, 4, &data, 1),
        to_float(&[255, 170, 85, 0])
    );
}

#[test]
fn grayscale_and_random_apply_edges() {
    let data = [255u8, 0, 0];
    let gray = run(vec![Op::Grayscale { p: 1.0 }], 3, 1, 1, &data, 2);
    assert!(gray.iter().all(|&v| (v - 0.299).abs() < 1e-6));
    assert_eq!(
        run(vec![Op::Grayscale { p: 0.0 }], 3, 1, 1, &data, 2),
        vec![1.0, 0.0, 0.0]
    );
    let flip = || vec![Op::HorizontalFlip { p: 1.0 }];
    let two = [0u8, 255];
    assert_eq!(
        run(
            vec![Op::RandomApply {
                p: 0.0,
                ops: flip()
            }],
            1,
            1,
            2,
            &two,
            3
        ),
        vec![0.0, 1.0]
    );
    assert_eq!(
        run(
            vec![Op::RandomApply {
                p: 1.0,
                ops: flip()
            }],
            1,
            1,
            2,
            &two,
            3
        ),
        vec![1.0, 0.0]
    );
}

#[test]
fn color_jitter_with_fixed_ranges_is_exact() {
    // Degenerate ranges fix the factors; brightness 0.5 then contrast 1 (identity), in any order.
    let jitter = ColorJitter {
        brightness: Some((0.5, 0.5)),
        contrast: Some((1.0, 1.0)),
        saturation: None,
        hue: None,
    };
    let data = [200u8, 100, 50];
    let out = run(vec![Op::ColorJitter(jitter)], 3, 1, 1, &data, 4);
    for (g, b) in out.iter().zip(data) {
        assert!((g - f32::from(b) / 255.0 * 0.5).abs() < 1e-6);
    }
    // torchvision's ranges
    let j = ColorJitter::new(0.4, 0.4, 0.4, 0.1).expect("jitter");
    assert_eq!(j.brightness, Some((0.6, 1.4)));
    assert_eq!(j.hue, Some((-0.1, 0.1)));
    assert_eq!(
        ColorJitter::new(1.5, 0.0, 0.0, 0.0).expect("j").brightness,
        Some((0.0, 2.5))
    );
    assert_eq!(
        ColorJitter::new(0.0, 0.0, 0.0, 0.0).expect("j").contrast,
        None
    );
    // full jitter keeps values in [0, 1]
    let data = ramp(3 * 64);
    let out = run(vec![Op::ColorJitter(j)], 3, 8, 8, &data, 5);
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn resized_crop_sampling_follows_torchvision() {
    let mut rng = ViewRng::from_key(6);
    for _ in 0..500 {
        let (top, left, h, w) =
            sample_resized_crop(32, 32, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert!(h >= 1 && w >= 1 && top + h <= 32 && left + w <= 32);
        let area = (h * w) as f64 / 1024.0;
        // rounding of the sides can move the area a little outside the range
        assert!((0.17..=1.0).contains(&area), "{h}×{w}");
        let ratio = w as f64 / h as f64;
        assert!((0.6..=1.5).contains(&ratio), "{h}×{w}");
    }
    // Impossible scale → every attempt fails → central crop clamped to the ratio range.
    let mut rng = ViewRng::from_key(7);
    assert_eq!(
        sample_resized_crop(10, 40, (2.0, 3.0), (0.75, 4.0 / 3.0), &mut rng),
        (0, 13, 10, 13)
    );
    assert_eq!(
        sample_resized_crop(40, 10, (2.0, 3.0), (0.75, 4.0 / 3.0), &mut rng),
        (13, 0, 13, 10)
    );
    assert_eq!(
        sample_resized_crop(20, 20, (2.0, 3.0), (0.75, 4.0 / 3.0), &mut rng),
        (0, 0, 20, 20)
    );
}

#[test]
fn resized_crop_of_whole_image_is_identity_and_output_has_the_size() {
    let data = ramp(3 * 16 * 16);
    let whole = Op::RandomResizedCrop {
        height: 16,
        width: 16,
        scale: (1.0, 1.0),
        ratio: (1.0, 1.0),
    };
    assert_eq!(
        run(vec![whole], 3, 16, 16, &data, 8),
        run(vec![], 3, 16, 16, &data, 8)
    );
    let crop = Op::RandomResizedCrop {
        height: 24,
        width: 20,
        scale: (0.2, 1.0),
        ratio: (0.75, 1.33),
    };
    let out = run(vec![crop], 3, 16, 16, &data, 9);
    assert_eq!(out.len(), 3 * 24 * 20);
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn resize_and_center_crop() {
    let data: Vec<u8> = (0..16).collect();
    let out = run(
        vec![Op::CenterCrop {
            height: 2,
            width: 2,
        }],
        1,
        4,
        4,
        &data,
        0,
    );
    assert_eq!(out, to_float(&[5, 6, 9, 10]));
    // torchvision pads a larger crop with zeros: 2×2 → 4×4, pad 1 on each side
    let out = run(
        vec![Op::CenterCrop {
            height: 4,
            width: 4,
        }],
        1,
        2,
        2,
        &[255, 255, 255, 255],
        0,
    );
    assert_eq!(out.iter().filter(|&&v| v == 1.0).count(), 4);
    assert_eq!((out[5], out[0]), (1.0, 0.0));
    let flat = [128u8; 36];
    let out = run(
        vec![Op::Resize {
            height: 3,
            width: 2,
        }],
        1,
        6,
        6,
        &flat,
        0,
    );
    assert!(out.iter().all(|&v| (v - 128.0 / 255.0).abs() < 1e-6));
}

#[test]
fn blur_preserves_constants_and_mean_of_a_periodic_image() {
    let flat = [77u8; 3 * 10 * 10];
    let blur = Op::GaussianBlur {
        kernel_size: 5,
        sigma: (0.1, 2.0),
    };
    let out = run(vec![blur.clone()], 3, 10, 10, &flat, 10);
    assert!(out.iter().all(|&v| (v - 77.0 / 255.0).abs() < 1e-6));
    let data = ramp(100);
    let out = run(vec![blur], 1, 10, 10, &data, 11);
    assert_ne!(out, to_float(&data));
}

#[test]
fn erasing_and_cutout() {
    let data = [255u8; 100];
    let erase = |p| Op::RandomErasing {
        p,
        scale: (0.02, 0.33),
        ratio: (0.3, 3.3),
        value: EraseValue::Constant(0.0),
    };
    assert!(run(vec![erase(0.0)], 1, 10, 10, &data, 12)
        .iter()
        .all(|&v| v == 1.0));
    let out = run(vec![erase(1.0)], 1, 10, 10, &data, 12);
    let zeros = out.iter().filter(|&&v| v == 0.0).count();
    assert!((1..34).contains(&zeros), "{zeros} erased");
    let mut rng = ViewRng::from_key(13);
    for _ in 0..200 {
        if let Some((t, l, h, w)) = sample_erasing(10, 10, (0.02, 0.33), (0.3, 3.3), &mut rng) {
            assert!(h < 10 && w < 10 && t + h <= 10 && l + w <= 10);
        }
    }
    // Cutout: at most size² pixels, at least (size/2)² (a corner clips it).
    let out = run(
        vec![Op::Cutout {
            size: 4,
            p: 1.0,
            value: 0.0,
        }],
        1,
        10,
        10,
        &data,
        14,
    );
    let zeros = out.iter().filter(|&&v| v == 0.0).count();
    assert!((4..=16).contains(&zeros), "{zeros}");
    assert!(run(
        vec![Op::Cutout {
            size: 4,
            p: 0.0,
            value: 0.0
        }],
        1,
        10,
        10,
        &data,
        14
    )
    .iter()
    .all(|&v| v == 1.0));
}

#[test]
fn rotation_by_zero_degrees_is_identity_and_keeps_the_centre() {
    let data: Vec<u8> = (0..9).map(|i| i * 20).collect();
    for bilinear in [false, true] {
        let zero = Op::Rotation {
            degrees: 0.0,
            bilinear,
            fill: 0.5,
        };
        let out = run(vec![zero], 1, 3, 3, &data, 15);
        for (g, w) in out.iter().zip(to_float(&data)) {
            assert!((g - w).abs() < 1e-6);
        }
    }
    // Any angle: the centre pixel stays, values stay between the fill and the data's range.
    let out = run(
        vec![Op::Rotation {
            degrees: 45.0,
            bilinear: true,
            fill: 0.0,
        }],
        1,
        3,
        3,
        &data,
        17,
    );
    assert!(out
        .iter()
        .all(|&v| (0.0..=160.0 / 255.0 + 1e-6).contains(&v)));
    assert!((out[4] - 80.0 / 255.0).abs() < 1e-6, "the centre is fixed");
}

#[test]
fn noise_sobel_and_normalize() {
    let data = [128u8; 400];
    let out = run(
        vec![Op::GaussianNoise {
            mean: 0.0,
            sigma: 0.1,
            clip: true,
        }],
        1,
        20,
        20,
        &data,
        18,
    );
    let mean = out.iter().sum::<f32>() / 400.0;
    let var = out.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 400.0;
    assert!(
        (mean - 128.0 / 255.0).abs() < 0.02 && (var.sqrt() - 0.1).abs() < 0.02,
        "{mean} {var}"
    );
    assert_eq!(
        run(
            vec![Op::GaussianNoise {
                mean: 0.0,
                sigma: 0.0,
                clip: true
            }],
            1,
            20,
            20,
            &data,
            18
        ),
        to_float(&data)
    );
    // Sobel of a constant image is zero
    assert!(run(vec![Op::Sobel], 3, 4, 4, &[90u8; 48], 0)
        .iter()
        .all(|&v| v == 0.0));
    // Normalize in the middle of a pipeline (not fused) equals the fused trailing one.
    let data = ramp(12);
    let norm = Op::Normalize {
        mean: vec![0.1, 0.2, 0.3],
        std: vec![0.5, 0.25, 2.0],
    };
    let fused = run(vec![norm.clone()], 3, 2, 2, &data, 0);
    let unfused = run(vec![norm, Op::HorizontalFlip { p: 0.0 }], 3, 2, 2, &data, 0);
    assert_eq!(fused, unfused);
    let x = f32::from(data[0]) / 255.0;
    assert!((fused[0] - (x - 0.1) / 0.5).abs() < 1e-6);
}

#[test]
fn pad_and_crop_translates_by_at_most_the_padding_and_fills_with_zeros() {
    // One bright pixel in the middle of a 5×5 image: after padding 1 and cropping back to
    // 5×5 it lands at most one pixel away, and everything else is black.
    let mut data = vec![0u8; 25];
    data[12] = 255;
    let pad_crop = || Op::RandomCrop {
        height: 5,
        width: 5,
        padding: 1,
    };
    let mut offsets = std::collections::BTreeSet::new();
    for key in 0..200 {
        let out = run(vec![pad_crop()], 1, 5, 5, &data, key);
        assert_eq!(out.len(), 25);
        let lit: Vec<usize> = (0..25).filter(|&i| out[i] == 1.0).collect();
        assert_eq!(lit.len(), 1, "key {key}: {out:?}");
        let (y, x) = (lit[0] / 5, lit[0] % 5);
        assert!((1..=3).contains(&y) && (1..=3).contains(&x), "key {key}");
        assert_eq!(out.iter().filter(|&&v| v == 0.0).count(), 24);
        offsets.insert((y, x));
    }
    // All nine translations occur.
    assert_eq!(offsets.len(), 9);
    // Padding 0 at the image's size is the identity.
    let data = ramp(3 * 6 * 6);
    let identity = Op::RandomCrop {
        height: 6,
        width: 6,
        padding: 0,
    };
    assert_eq!(
        run(vec![identity], 3, 6, 6, &data, 3),
        run(vec![], 3, 6, 6, &data, 3)
    );
    // A crop may not sit inside RandomApply.
    let nested = Op::RandomApply {
        p: 0.5,
        ops: vec![pad_crop()],
    };
    assert!(Pipeline::new(1, vec![nested]).is_err());
}

#[test]
fn recipes_compose_steps_and_name_what_is_wrong() {
    use supcon_augment::presets::by_name;
    let (mean, std) = ([0.5f32], [0.25f32]);
    let recipe = by_name("pad-crop:3+flip:0.5+jitter:0.2+erase", 28, &mean, &std).unwrap();
    let ops = recipe.ops();
    assert_eq!(
        ops[0],
        Op::RandomCrop {
            height: 28,
            width: 28,
            padding: 3
        }
    );
    assert_eq!(ops[1], Op::HorizontalFlip { p: 0.5 });
    assert!(matches!(ops[2], Op::RandomApply { p, .. } if p == 0.8));
    assert!(matches!(ops[3], Op::RandomErasing { p, .. } if p == 0.25));
    assert!(matches!(ops.last(), Some(Op::Normalize { .. })));
    assert_eq!(recipe.output_size(28, 28), (28, 28));
    // A scale range for resized crops (multi-crop's local crops).
    let local = by_name("resized-crop:0.05..0.14+flip", 16, &mean, &std).unwrap();
    assert!(
        matches!(&local.ops()[0], Op::RandomResizedCrop { height: 16, scale, .. } if *scale == (0.05, 0.14)),
        "{:?}",
        local.ops()[0]
    );
    // Presets keep their names; `none` only normalises.
    assert_eq!(by_name("none", 28, &mean, &std).unwrap().ops().len(), 1);
    assert_eq!(
        by_name("pad-crop-flip", 28, &mean, &std).unwrap().ops()[0],
        Op::RandomCrop {
            height: 28,
            width: 28,
            padding: 2
        }
    );
    // The steps of SimCLR's augmentation study that have no preset of their own.
    let study = by_name("cutout:10+noise:0.2+sobel", 28, &mean, &std).unwrap();
    assert_eq!(
        study.ops()[..3],
        [
            Op::Cutout {
                size: 10,
                p: 1.0,
                value: 0.0
            },
            Op::GaussianNoise {
                mean: 0.0,
                sigma: 0.2,
                clip: true
            },
            Op::Sobel
        ]
    );
    assert!(matches!(
        by_name("cutout", 28, &mean, &std).unwrap().ops()[0],
        Op::Cutout { size: 14, .. }
    ));
    for (bad, needle) in [
        ("cutout:0", "whole number of pixels"),
        ("cutout:2.5", "whole number of pixels"),
        ("flop", "`flop` is neither a preset"),
        ("flip:x", "`x` is not a number"),
        ("flip+pad-crop:2", "must be the first step"),
        ("pad-crop:1.5", "whole number"),
        ("flip:2", "probability"),
        ("resized-crop:0.5..x", "`x` is not a number"),
        ("flip:0.1..0.2", "is not a number"),
    ] {
        let err = by_name(bad, 28, &mean, &std).unwrap_err().to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}
