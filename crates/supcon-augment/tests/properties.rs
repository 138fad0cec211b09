//! Properties over random image sizes (1×1 included), channel counts, seeds and ops: every
//! pipeline stays finite and in range, and equal inputs give equal outputs.

use proptest::prelude::*;
use supcon_augment::{
    corrupt, presets, Augmenter, ColorJitter, Corruption, EraseValue, ImageRef, Op, Pipeline,
    SeverityScale,
};

fn every_op(channels: usize) -> Vec<Op> {
    vec![
        Op::RandomResizedCrop {
            height: 9,
            width: 7,
            scale: (0.05, 1.0),
            ratio: (0.3, 3.0),
        },
        Op::HorizontalFlip { p: 0.5 },
        Op::RandomApply {
            p: 0.8,
            ops: vec![Op::ColorJitter(
                ColorJitter::new(0.8, 0.8, 0.8, 0.5).expect("jitter"),
            )],
        },
        Op::Grayscale { p: 0.5 },
        Op::GaussianBlur {
            kernel_size: 5,
            sigma: (0.1, 3.0),
        },
        Op::Rotation {
            degrees: 180.0,
            bilinear: true,
            fill: 0.0,
        },
        Op::Sobel,
        Op::GaussianNoise {
            mean: 0.0,
            sigma: 0.2,
            clip: true,
        },
        Op::RandomErasing {
            p: 0.5,
            scale: (0.02, 0.5),
            ratio: (0.3, 3.3),
            value: EraseValue::Constant(0.0),
        },
        Op::Cutout {
            size: 3,
            p: 0.5,
            value: 0.0,
        },
        Op::CenterCrop {
            height: 8,
            width: 8,
        },
        Op::Normalize {
            mean: vec![0.5; channels],
            std: vec![0.25; channels],
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn pipelines_stay_finite_and_in_range(
        h in 1usize..24,
        w in 1usize..24,
        rgb in any::<bool>(),
        seed in any::<u64>(),
        fill in any::<u8>(),
    ) {
        let c = if rgb { 3 } else { 1 };
        let data: Vec<u8> = (0..h * w * c).map(|i| (i as u8).wrapping_mul(31).wrapping_add(fill)).collect();
        let image = ImageRef::new(&data, h, w, c).expect("image");

        // All ops together: finite, and the right size.
        let all = Augmenter::new(Pipeline::new(c, every_op(c)).expect("pipeline"), seed);
        let mut out = vec![0.0f32; all.output_len(&[image], 2).expect("len")];
        prop_assert_eq!(out.len(), 2 * c * 8 * 8);
        all.augment_batch(&[image], &[seed], 0, 2, &mut out).expect("batch");
        prop_assert!(out.iter().all(|v| v.is_finite()));

        // The SimCLR preset (values in [0, 1] before normalisation) stays in the normalised
        // range, and the same call gives the same bits.
        let (mean, std) = if rgb {
            (presets::CIFAR10_MEAN.to_vec(), presets::CIFAR10_STD.to_vec())
        } else {
            (presets::FASHION_MNIST_MEAN.to_vec(), presets::FASHION_MNIST_STD.to_vec())
        };
        let simclr = Augmenter::new(presets::simclr(16, &mean, &std).expect("simclr"), seed);
        let mut a = vec![0.0f32; 2 * c * 16 * 16];
        let mut b = a.clone();
        simclr.augment_batch(&[image], &[7], 3, 2, &mut a).expect("a");
        simclr.augment_batch(&[image], &[7], 3, 2, &mut b).expect("b");
        prop_assert_eq!(&a, &b);
        let plane = 16 * 16;
        for (k, v) in a.iter().enumerate() {
            let ch = (k / plane) % c;
            let (lo, hi) = ((0.0 - mean[ch]) / std[ch], (1.0 - mean[ch]) / std[ch]);
            prop_assert!(*v >= lo - 1e-4 && *v <= hi + 1e-4, "{} outside [{}, {}]", v, lo, hi);
        }

        // Corruptions keep the size at every severity.
        for corruption in Corruption::ALL {
            let severity = (seed % 5) as u8 + 1;
            let mut bytes = vec![0u8; data.len()];
            corrupt(image, corruption, severity, SeverityScale::ImageNet, seed, 0, &mut bytes)
                .expect("corrupt");
        }
    }
}
