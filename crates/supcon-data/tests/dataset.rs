//! The dataset type: construction checks, layout, subsets, the split's guarantees, statistics.

use proptest::prelude::*;
use supcon_data::{DataError, Dataset, ImageShape, LabelQuota, Partition};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

/// Image `i` is filled with byte `i % 256` so that subsets can be checked pixel by pixel.
fn tagged(labels: Vec<i64>, num_classes: usize) -> Dataset {
    let shape = ImageShape::new(2, 3, 2);
    let pixels = (0..labels.len())
        .flat_map(|i| std::iter::repeat_n((i % 256) as u8, shape.len()))
        .collect();
    Dataset::new(pixels, shape, labels, names(num_classes)).unwrap()
}

#[test]
fn construction_checks_sizes_and_labels() {
    let shape = ImageShape::new(2, 2, 1);
    let err = Dataset::new(vec![0; 7], shape, vec![0, 0], names(1)).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::PixelCount {
                expected: 8,
                actual: 7,
                count: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = Dataset::new(vec![0; 8], shape, vec![0, 2], names(2)).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 2,
                num_classes: 2
            }
        ),
        "{err}"
    );
    let err = Dataset::new(vec![0; 8], shape, vec![-1, 0], names(2)).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 0,
                label: -1,
                ..
            }
        ),
        "{err}"
    );
    let err = Dataset::new(vec![], ImageShape::new(0, 2, 1), vec![], names(1)).unwrap_err();
    assert!(matches!(err, DataError::InvalidShape { .. }), "{err}");
    let huge = ImageShape::new(usize::MAX, 2, 1);
    assert!(matches!(
        Dataset::new(vec![], huge, vec![], names(1)),
        Err(DataError::InvalidShape { .. })
    ));
}

#[test]
fn images_are_hwc_slices() {
    // 1 image 2×2×3: pixel (y, x) channel c = 100·y + 10·x + c.
    let pixels: Vec<u8> = (0..2)
        .flat_map(|y| (0..2).flat_map(move |x| (0..3).map(move |c| (100 * y + 10 * x + c) as u8)))
        .collect();
    let d = Dataset::new(pixels, ImageShape::new(2, 2, 3), vec![0], names(1)).unwrap();
    let image = d.read_image(0).unwrap();
    let (w, c) = (2, 3);
    assert_eq!(image[(w + 1) * c + 2], 112);
    assert_eq!(d.label(0), 0);
    assert!(matches!(
        d.read_image(1),
        Err(DataError::IndexOutOfRange { index: 1, len: 1 })
    ));
    assert_eq!(d.iter().len(), 1);
}

#[test]
fn subsets_copy_the_right_images() {
    let d = tagged(vec![0, 1, 0, 2, 1, 0, 2], 3);
    let s = d.subset(&[6, 0, 0]).unwrap();
    assert_eq!(s.labels(), &[2, 0, 0]);
    assert_eq!(s.read_image(0).unwrap()[0], 6);
    assert_eq!(s.class_names(), d.class_names());
    assert!(matches!(
        d.subset(&[7]).unwrap_err(),
        DataError::IndexOutOfRange { index: 7, len: 7 }
    ));

    let first = d.first_per_class(2);
    assert_eq!(first.labels(), &[0, 1, 0, 2, 1, 2]);
    assert_eq!(first.read_image(5).unwrap()[0], 6);
    let half = d.fraction_per_class(0.5).unwrap();
    // Class 0 has 3 → round(1.5) = 2; classes 1 and 2 have 2 → 1.
    assert_eq!(half.class_counts(), vec![2, 1, 1]);
    assert_eq!(half.labels(), &[0, 1, 0, 2]);
    assert!(d.fraction_per_class(0.0).is_err());
    assert!(d.fraction_per_class(f64::NAN).is_err());
    assert_eq!(d.fraction_per_class(1.0).unwrap(), d);
}

#[test]
fn split_is_reproducible_and_seed_dependent() {
    let labels: Vec<i64> = (0..300).map(|i| (i * 7 % 3) as i64).collect();
    let d = tagged(labels, 3);
    let (t1, v1) = d.train_validation_split(0.2, 11).unwrap();
    let (t2, v2) = d.train_validation_split(0.2, 11).unwrap();
    assert_eq!((&t1, &v1), (&t2, &v2));
    let (_, v3) = d.train_validation_split(0.2, 12).unwrap();
    assert_ne!(
        v1.pixels().unwrap(),
        v3.pixels().unwrap(),
        "another seed, another split"
    );
    assert_eq!(v1.class_counts(), vec![20, 20, 20]);
    assert_eq!(
        (t1.partition(), v1.partition()),
        (Partition::Train, Partition::Validation)
    );
    for bad in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(matches!(
            d.train_validation_split(bad, 0),
            Err(DataError::InvalidFraction { .. })
        ));
    }
    let test = d.clone().with_partition(Partition::Test);
    assert!(matches!(
        test.train_validation_split(0.2, 0),
        Err(DataError::SplitOfTestSet)
    ));
    assert!(matches!(
        test.subset(&[0]).unwrap().train_validation_split(0.2, 0),
        Err(DataError::SplitOfTestSet)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Disjoint, complete, stratified as documented, and both parts in dataset order.
    #[test]
    fn split_partitions_every_class(
        labels in proptest::collection::vec(0i64..5, 1..200),
        fraction in 0.01f64..0.99,
        seed in any::<u64>(),
    ) {
        let d = tagged(labels.clone(), 5);
        let (train, validation) = d.train_validation_split(fraction, seed).unwrap();
        prop_assert_eq!(train.len() + validation.len(), d.len());
        // Image i carries byte i % 256; with < 256 images the bytes are the original indices.
        let train_idx: Vec<u8> = train.iter().map(|s| s.unwrap().0[0]).collect();
        let val_idx: Vec<u8> = validation.iter().map(|s| s.unwrap().0[0]).collect();
        prop_assert!(train_idx.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(val_idx.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<u8> = train_idx.iter().chain(&val_idx).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..d.len()).map(|i| i as u8).collect::<Vec<_>>());
        for (i, sample) in validation.iter().enumerate() {
            let (image, label) = sample.unwrap();
            prop_assert_eq!(labels[image[0] as usize], label, "validation sample {}", i);
        }
        let counts = d.class_counts();
        let val_counts = validation.class_counts();
        for c in 0..5 {
            let mut expected = (fraction * counts[c] as f64).round() as usize;
            if counts[c] >= 2 {
                expected = expected.clamp(1, counts[c] - 1);
            }
            prop_assert_eq!(val_counts[c], expected, "class {}", c);
        }
    }
}

#[test]
fn channel_stats_are_exact_per_channel() {
    // Two 1×2×2 images: channel 0 takes 0, 255, 255, 255; channel 1 is always 51.
    let pixels = vec![0, 51, 255, 51, 255, 51, 255, 51];
    let d = Dataset::new(pixels, ImageShape::new(1, 2, 2), vec![0, 0], names(1)).unwrap();
    let stats = d.channel_stats().unwrap();
    assert_eq!(stats.count, 4);
    assert!((stats.mean[0] - 0.75).abs() < 1e-12);
    assert!((stats.std[0] - (0.75f64 * 0.25).sqrt()).abs() < 1e-12);
    assert!((stats.mean[1] - 0.2).abs() < 1e-12);
    assert!(stats.std[1].abs() < 1e-12);
    let empty = Dataset::new(vec![], ImageShape::new(1, 1, 1), vec![], names(1)).unwrap();
    assert!(matches!(
        empty.channel_stats(),
        Err(DataError::EmptyDataset { .. })
    ));
}

#[test]
fn channel_stats_match_a_direct_sum_on_many_images() {
    // More than one parallel chunk (256 images per chunk), odd sizes.
    let shape = ImageShape::new(3, 5, 3);
    let count = 700;
    let pixels: Vec<u8> = (0..count * shape.len())
        .map(|i| ((i * 2_654_435_761) >> 7) as u8)
        .collect();
    let d = Dataset::new(pixels.clone(), shape, vec![0; count], names(1)).unwrap();
    let stats = d.channel_stats().unwrap();
    for c in 0..3 {
        let values: Vec<f64> = pixels
            .iter()
            .skip(c)
            .step_by(3)
            .map(|&v| f64::from(v) / 255.0)
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len() as f64;
        assert!((stats.mean[c] - mean).abs() < 1e-12);
        assert!((stats.std[c] - var.sqrt()).abs() < 1e-12);
    }
}

#[test]
fn labeled_subset_is_seeded_class_balanced_and_sorted() {
    // Class 0: 8 images, class 1: 4, class 2: 8, interleaved.
    let data = tagged((0..20).map(|i| [0, 1, 2, 2, 0][i % 5]).collect(), 3);
    let counts = data.class_counts();
    let per_class = data.labeled_subset(LabelQuota::PerClass(2), 7).unwrap();
    assert_eq!(per_class.len(), 6);
    assert!(
        per_class.windows(2).all(|w| w[0] < w[1]),
        "sorted, no repeat"
    );
    for class in 0..3 {
        let kept = per_class
            .iter()
            .filter(|&&i| data.label(i) == class)
            .count();
        assert_eq!(kept, 2, "class {class}");
    }
    assert_eq!(
        per_class,
        data.labeled_subset(LabelQuota::PerClass(2), 7).unwrap()
    );
    assert!((0..20)
        .any(|seed| data.labeled_subset(LabelQuota::PerClass(2), seed).unwrap() != per_class));
    let fraction = data.labeled_subset(LabelQuota::Fraction(0.5), 7).unwrap();
    for (class, &count) in counts.iter().enumerate() {
        let kept = fraction
            .iter()
            .filter(|&&i| data.label(i) == class as i64)
            .count();
        assert_eq!(kept, (count as f64 * 0.5).round() as usize, "class {class}");
    }
    assert_eq!(
        data.labeled_subset(LabelQuota::Fraction(1.0), 7).unwrap(),
        (0..20).collect::<Vec<_>>()
    );
}

#[test]
fn labeled_subset_refuses_what_it_cannot_give() {
    let data = tagged((0..20).map(|i| [0, 1, 2, 2, 0][i % 5]).collect(), 3);
    for fraction in [0.0, -0.1, 1.5, f64::NAN] {
        let err = data
            .labeled_subset(LabelQuota::Fraction(fraction), 0)
            .unwrap_err();
        assert!(
            matches!(err, DataError::InvalidFraction { .. }),
            "{fraction}: {err}"
        );
    }
    let err = data.labeled_subset(LabelQuota::PerClass(5), 0).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooFewInClass {
                class: 1,
                wanted: 5,
                available: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("data.labeled_per_class"), "{err}");
    // 10 % of 4 images rounds to none.
    let err = data
        .labeled_subset(LabelQuota::Fraction(0.1), 0)
        .unwrap_err();
    assert!(
        matches!(err, DataError::ClassWithoutLabel { class: 1, .. }),
        "{err}"
    );
    let err = data.labeled_subset(LabelQuota::PerClass(0), 0).unwrap_err();
    assert!(
        matches!(err, DataError::ClassWithoutLabel { class: 0, .. }),
        "{err}"
    );
}
