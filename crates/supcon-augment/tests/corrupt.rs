//! Corruptions: severities, determinism, known effects.

use supcon_augment::corrupt::poisson;
use supcon_augment::{
    corrupt, corrupt_batch, AugmentError, Corruption, ImageRef, SeverityScale, ViewRng,
};

fn image_bytes() -> Vec<u8> {
    (0..32 * 32 * 3).map(|i| ((i * 37) % 256) as u8).collect()
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn every_corruption_is_deterministic_and_grows_with_severity() {
    let data = image_bytes();
    let img = ImageRef::new(&data, 32, 32, 3).expect("image");
    for corruption in Corruption::ALL {
        let mut previous = 0.0;
        for severity in 1..=5u8 {
            let mut a = vec![0u8; data.len()];
            let mut b = vec![0u8; data.len()];
            corrupt(
                img,
                corruption,
                severity,
                SeverityScale::Cifar,
                1,
                5,
                &mut a,
            )
            .expect("a");
            corrupt(
                img,
                corruption,
                severity,
                SeverityScale::Cifar,
                1,
                5,
                &mut b,
            )
            .expect("b");
            assert_eq!(a, b, "{} {severity}", corruption.name());
            let d = mean_abs_diff(&a, &data);
            assert!(
                d > 0.0,
                "{} {severity} left the image unchanged",
                corruption.name()
            );
            // Noise levels rise monotonically in the constants; allow sampling jitter.
            assert!(
                d + 1.0 >= previous,
                "{} {severity}: {d} < {previous}",
                corruption.name()
            );
            previous = d;
        }
    }
    let mut out = vec![0u8; data.len()];
    assert_eq!(
        corrupt(
            img,
            Corruption::Contrast,
            6,
            SeverityScale::Cifar,
            0,
            0,
            &mut out
        ),
        Err(AugmentError::Severity(6))
    );
    assert_eq!(
        Corruption::ShotNoise.constant(SeverityScale::ImageNet, 5),
        Ok(3.0)
    );
    assert_eq!(
        Corruption::GaussianNoise.constant(SeverityScale::Cifar, 1),
        Ok(0.04)
    );
}

#[test]
fn contrast_and_brightness_known_values() {
    // Gray 2×1: values 0.2 and 0.6 (51, 153), mean 0.4; contrast c = 0.5 (CIFAR severity 2)
    // gives 0.3 and 0.5 → bytes 76 and 127 (truncated: 76.5, 127.5).
    let data = [51u8, 153];
    let img = ImageRef::new(&data, 1, 2, 1).expect("image");
    let mut out = [0u8; 2];
    corrupt(
        img,
        Corruption::Contrast,
        2,
        SeverityScale::Cifar,
        0,
        0,
        &mut out,
    )
    .expect("contrast");
    assert_eq!(out, [76, 127]);
    // Brightness c = 0.1 (severity 2): v 0.4 → 0.5 scales (0.4, 0.2, 0) by 1.25.
    let data = [102u8, 51, 0];
    let img = ImageRef::new(&data, 1, 1, 3).expect("image");
    let mut out = [0u8; 3];
    corrupt(
        img,
        Corruption::Brightness,
        2,
        SeverityScale::Cifar,
        0,
        0,
        &mut out,
    )
    .expect("brightness");
    assert_eq!(out, [127, 63, 0]);
}

#[test]
fn pixelate_makes_blocks_and_blur_keeps_constants() {
    // 0.5 (ImageNet severity 2) on 4×4: 2×2 blocks of the block mean.
    let data: Vec<u8> = (0..16).map(|i| i * 10).collect();
    let img = ImageRef::new(&data, 4, 4, 1).expect("image");
    let mut out = vec![0u8; 16];
    corrupt(
        img,
        Corruption::Pixelate,
        2,
        SeverityScale::ImageNet,
        0,
        0,
        &mut out,
    )
    .expect("pixelate");
    // top-left block: (0 + 10 + 40 + 50) / 4 = 25
    assert_eq!(&out[..2], &[25, 25]);
    assert_eq!(&out[4..6], &[25, 25]);
    let flat = vec![100u8; 64];
    let img = ImageRef::new(&flat, 8, 8, 1).expect("image");
    let mut out = vec![0u8; 64];
    corrupt(
        img,
        Corruption::GaussianBlur,
        5,
        SeverityScale::ImageNet,
        0,
        0,
        &mut out,
    )
    .expect("blur");
    // 100/255·255 may land a hair below 100 in f32 before truncation
    assert!(out.iter().all(|&v| v == 100 || v == 99), "{out:?}");
}

#[test]
fn batch_matches_single_images_and_poisson_has_its_mean() {
    let data = image_bytes();
    let imgs: Vec<ImageRef<'_>> = data
        .chunks_exact(16 * 16 * 3)
        .map(|d| ImageRef::new(d, 16, 16, 3).expect("img"))
        .collect();
    let ids = [3u64, 4, 5, 6];
    let mut batch = vec![0u8; data.len()];
    corrupt_batch(
        &imgs,
        &ids,
        Corruption::ShotNoise,
        3,
        SeverityScale::Cifar,
        9,
        &mut batch,
    )
    .expect("batch");
    for (k, img) in imgs.iter().enumerate() {
        let mut single = vec![0u8; img.data.len()];
        corrupt(
            *img,
            Corruption::ShotNoise,
            3,
            SeverityScale::Cifar,
            9,
            ids[k],
            &mut single,
        )
        .expect("single");
        assert_eq!(
            &batch[k * single.len()..(k + 1) * single.len()],
            &single[..]
        );
    }
    let mut rng = ViewRng::from_key(1);
    for lambda in [0.5, 3.0, 25.0, 300.0] {
        let n = 4000;
        let samples: Vec<f64> = (0..n).map(|_| poisson(lambda, &mut rng) as f64).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (mean - lambda).abs() < 4.0 * (lambda / n as f64).sqrt() + 0.01,
            "λ {lambda}: mean {mean}"
        );
        assert!((var / lambda - 1.0).abs() < 0.15, "λ {lambda}: var {var}");
    }
}
