//! Batch writer: layout, determinism across threads and batch order, multi-crop, errors.

use supcon_augment::{
    presets, AugmentError, Augmenter, ImageRef, MultiCropAugmenter, Op, Pipeline, ViewRng,
};

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

fn images(data: &[u8], h: usize, w: usize, c: usize) -> Vec<ImageRef<'_>> {
    data.chunks_exact(h * w * c)
        .map(|d| ImageRef {
            data: d,
            height: h,
            width: w,
            channels: c,
        })
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
}

fn cifar_augmenter(seed: u64) -> Augmenter {
    Augmenter::new(
        presets::simclr(32, &presets::CIFAR10_MEAN, &presets::CIFAR10_STD).expect("preset"),
        seed,
    )
}

#[test]
fn bit_identical_for_one_and_two_threads_and_any_batch_order() {
    let data = bytes(12 * 32 * 32 * 3, 1);
    let imgs = images(&data, 32, 32, 3);
    let ids: Vec<u64> = (100..112).collect();
    let aug = cifar_augmenter(9);
    let len = aug.output_len(&imgs, 2).expect("len");
    let per_image = len / imgs.len();
    let mut one = vec![0.0f32; len];
    let mut two = vec![0.0f32; len];
    pool(1)
        .install(|| aug.augment_batch(&imgs, &ids, 3, 2, &mut one))
        .expect("1 thread");
    pool(2)
        .install(|| aug.augment_batch(&imgs, &ids, 3, 2, &mut two))
        .expect("2 threads");
    assert_eq!(one, two);

    // Permuted batch order, split in two batches: each image's rows are unchanged.
    let order = [7usize, 2, 11, 0, 5, 9, 1, 3, 10, 4, 8, 6];
    for half in order.chunks(6) {
        let sub_imgs: Vec<ImageRef<'_>> = half.iter().map(|&k| imgs[k]).collect();
        let sub_ids: Vec<u64> = half.iter().map(|&k| ids[k]).collect();
        let mut out = vec![0.0f32; per_image * half.len()];
        pool(2)
            .install(|| aug.augment_batch(&sub_imgs, &sub_ids, 3, 2, &mut out))
            .expect("sub batch");
        for (row, &k) in half.iter().enumerate() {
            assert_eq!(
                &out[row * per_image..(row + 1) * per_image],
                &one[k * per_image..(k + 1) * per_image]
            );
        }
    }

    // A different epoch, seed, or id changes the views; the two views of an image differ.
    let mut other = vec![0.0f32; len];
    aug.augment_batch(&imgs, &ids, 4, 2, &mut other)
        .expect("epoch 4");
    assert_ne!(one, other);
    cifar_augmenter(10)
        .augment_batch(&imgs, &ids, 3, 2, &mut other)
        .expect("seed 10");
    assert_ne!(one, other);
    assert_ne!(&one[..per_image / 2], &one[per_image / 2..per_image]);
}

#[test]
fn batch_major_layout_matches_single_views() {
    let data = bytes(3 * 32 * 32 * 3, 2);
    let imgs = images(&data, 32, 32, 3);
    let ids = [5u64, 6, 7];
    let aug = cifar_augmenter(1);
    let views = 3;
    let mut out = vec![0.0f32; aug.output_len(&imgs, views).expect("len")];
    aug.augment_batch(&imgs, &ids, 0, views, &mut out)
        .expect("batch");
    let per_view = 3 * 32 * 32;
    let mut single = vec![0.0f32; per_view];
    for b in 0..3 {
        for v in 0..views {
            aug.augment_view(imgs[b], ids[b], 0, v as u64, &mut single)
                .expect("view");
            let row = b * views + v;
            assert_eq!(
                &out[row * per_view..(row + 1) * per_view],
                &single[..],
                "image {b} view {v}"
            );
        }
    }
}

#[test]
fn eval_transform_normalizes_exactly() {
    let data = [0u8, 51, 255, 102];
    let imgs = images(&data, 2, 2, 1);
    let aug = Augmenter::new(presets::eval(&[0.5], &[0.25]).expect("eval"), 0);
    let mut out = vec![0.0f32; 4];
    aug.augment_batch(&imgs, &[0], 0, 1, &mut out)
        .expect("eval");
    let want = [-2.0, (0.2 - 0.5) / 0.25, 2.0, (0.4 - 0.5) / 0.25];
    for (g, w) in out.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{out:?}");
    }
}

#[test]
fn crop_flip_and_fashion_mnist_presets_give_expected_shapes_and_ranges() {
    let data = bytes(4 * 28 * 28, 3);
    let imgs = images(&data, 28, 28, 1);
    let aug = Augmenter::new(presets::fashion_mnist(28).expect("fmnist"), 3);
    assert_eq!(aug.view_shape(&imgs).expect("shape"), [1, 28, 28]);
    let mut out = vec![0.0f32; aug.output_len(&imgs, 2).expect("len")];
    aug.augment_batch(&imgs, &[0, 1, 2, 3], 0, 2, &mut out)
        .expect("batch");
    let (lo, hi) = ((0.0 - 0.2860) / 0.3530, (1.0 - 0.2860) / 0.3530);
    assert!(out.iter().all(|&v| v >= lo - 1e-5 && v <= hi + 1e-5));

    // Larger images are cropped down to the preset's size.
    let data = bytes(2 * 40 * 48 * 3, 4);
    let imgs = images(&data, 40, 48, 3);
    let aug = Augmenter::new(
        presets::crop_flip(32, &presets::CIFAR100_MEAN, &presets::CIFAR100_STD).expect("cf"),
        0,
    );
    assert_eq!(aug.view_shape(&imgs).expect("shape"), [3, 32, 32]);
}

#[test]
fn multicrop_writes_each_group_and_numbers_views_across_groups() {
    let data = bytes(3 * 32 * 32 * 3, 5);
    let imgs = images(&data, 32, 32, 3);
    let ids = [0u64, 1, 2];
    let groups = presets::swav_multicrop(24, 12, 4, &presets::CIFAR10_MEAN, &presets::CIFAR10_STD)
        .expect("swav");
    let multi = MultiCropAugmenter::new(groups.clone(), 11).expect("multi");
    assert_eq!(
        multi.view_shapes(&imgs).expect("shapes"),
        vec![[3, 24, 24], [3, 12, 12]]
    );
    let mut global = vec![0.0f32; 3 * 2 * 3 * 24 * 24];
    let mut local = vec![0.0f32; 3 * 4 * 3 * 12 * 12];
    pool(2)
        .install(|| multi.augment_batch(&imgs, &ids, 1, &mut [&mut global[..], &mut local[..]]))
        .expect("multi-crop");
    // Local crop 0 of image 1 is view 2 of its stream.
    let per_local = 3 * 12 * 12;
    let mut single = vec![0.0f32; per_local];
    let mut rng = ViewRng::for_view(11, 1, 1, 2);
    groups[1]
        .pipeline
        .apply(imgs[1], &mut rng, &mut single)
        .expect("single");
    assert_eq!(&local[4 * per_local..5 * per_local], &single[..]);

    let mut one_thread = vec![0.0f32; local.len()];
    let mut g2 = vec![0.0f32; global.len()];
    pool(1)
        .install(|| multi.augment_batch(&imgs, &ids, 1, &mut [&mut g2[..], &mut one_thread[..]]))
        .expect("one thread");
    assert_eq!(local, one_thread);
    assert_eq!(global, g2);
    assert_eq!(
        multi.augment_batch(&imgs, &ids, 1, &mut [&mut global[..]]),
        Err(AugmentError::BufferCount {
            groups: 2,
            buffers: 1
        })
    );
}

#[test]
fn typed_errors_for_bad_inputs() {
    let data = bytes(2 * 32 * 32 * 3, 6);
    let imgs = images(&data, 32, 32, 3);
    let aug = cifar_augmenter(0);
    let mut out = vec![0.0f32; 2 * 2 * 3 * 32 * 32];
    assert!(matches!(
        aug.augment_batch(&imgs, &[0], 0, 2, &mut out),
        Err(AugmentError::IdCount { images: 2, ids: 1 })
    ));
    assert!(matches!(
        aug.augment_batch(&imgs, &[0, 1], 0, 0, &mut out),
        Err(AugmentError::ZeroViews)
    ));
    assert!(matches!(
        aug.augment_batch(&imgs, &[0, 1], 0, 2, &mut out[1..]),
        Err(AugmentError::OutputSize {
            expected: 12288,
            ..
        })
    ));
    let short = ImageRef {
        data: &data[..100],
        height: 32,
        width: 32,
        channels: 3,
    };
    assert!(matches!(
        aug.augment_batch(&[imgs[0], short], &[0, 1], 0, 1, &mut out[..6144]),
        Err(AugmentError::ImageSize {
            index: 1,
            len: 100,
            expected: 3072,
            ..
        })
    ));
    let gray = ImageRef {
        data: &data[..1024],
        height: 32,
        width: 32,
        channels: 1,
    };
    assert!(matches!(
        aug.augment_batch(&[gray], &[0], 0, 1, &mut out[..3072]),
        Err(AugmentError::ChannelMismatch {
            index: 0,
            channels: 1,
            expected: 3
        })
    ));
    // Without a crop, images of different sizes cannot share a batch.
    let eval = Augmenter::new(presets::eval(&[0.5; 3], &[0.5; 3]).expect("eval"), 0);
    let small = ImageRef {
        data: &data[..16 * 16 * 3],
        height: 16,
        width: 16,
        channels: 3,
    };
    assert!(matches!(
        eval.augment_batch(&[imgs[0], small], &[0, 1], 0, 1, &mut out[..2 * 3072]),
        Err(AugmentError::ViewSize { index: 1, .. })
    ));
    assert!(ImageRef::new(&data[..10], 0, 10, 1).is_err());
    // Parameter validation
    assert!(Pipeline::new(3, vec![Op::HorizontalFlip { p: 1.5 }]).is_err());
    assert!(Pipeline::new(
        1,
        vec![Op::Normalize {
            mean: vec![0.5; 3],
            std: vec![0.5; 3]
        }]
    )
    .is_err());
    assert!(Pipeline::new(
        1,
        vec![Op::Normalize {
            mean: vec![0.5],
            std: vec![0.0]
        }]
    )
    .is_err());
    assert!(Pipeline::new(
        1,
        vec![Op::GaussianBlur {
            kernel_size: 4,
            sigma: (0.1, 2.0)
        }]
    )
    .is_err());
    assert!(Pipeline::new(
        1,
        vec![Op::RandomApply {
            p: 0.5,
            ops: vec![Op::Resize {
                height: 8,
                width: 8
            }]
        }]
    )
    .is_err());
    assert!(supcon_augment::ColorJitter::new(0.4, 0.4, 0.4, 0.6).is_err());
}

/// Asymmetric views: view 0 through its own pipeline (here the identity, as in SimCLR's
/// augmentation study and InvSpread), every other view through the main one, each from the
/// stream of its (image, view).
#[test]
fn the_first_view_has_its_own_pipeline() {
    let (h, w, c) = (12, 10, 1);
    let data = bytes(3 * h * w * c, 9);
    let imgs = images(&data, h, w, c);
    let (mean, std) = ([0.5f32], [0.25f32]);
    let augmented = presets::by_name("rotate:40+noise:0.3", h, &mean, &std).unwrap();
    let identity = presets::by_name("none", h, &mean, &std).unwrap();
    let augmenter = Augmenter::new(augmented.clone(), 5)
        .with_first_view(identity.clone())
        .unwrap();
    let per_view = h * w * c;
    let mut out = vec![0f32; 3 * 3 * per_view];
    augmenter
        .augment_batch(&imgs, &[0, 1, 2], 1, 3, &mut out)
        .unwrap();
    let plain = Augmenter::new(identity, 5);
    let symmetric = Augmenter::new(augmented, 5);
    for (b, image) in imgs.iter().enumerate() {
        for v in 0..3 {
            let mut expected = vec![0f32; per_view];
            let maker = if v == 0 { &plain } else { &symmetric };
            maker
                .augment_view(*image, b as u64, 1, v as u64, &mut expected)
                .unwrap();
            let got = &out[(b * 3 + v) * per_view..][..per_view];
            assert_eq!(got, &expected[..], "image {b} view {v}");
        }
    }
    // A first view of another size or channel count is refused.
    let other_size = presets::by_name("resized-crop", 8, &mean, &std).unwrap();
    let augmenter = Augmenter::new(presets::by_name("none", h, &mean, &std).unwrap(), 5)
        .with_first_view(other_size)
        .unwrap();
    let err = augmenter.view_shape(&imgs[..1]).unwrap_err().to_string();
    assert!(err.contains("one size"), "{err}");
    let color = presets::by_name("none", h, &[0.5; 3], &[0.25; 3]).unwrap();
    assert!(
        Augmenter::new(presets::by_name("none", h, &mean, &std).unwrap(), 5)
            .with_first_view(color)
            .is_err()
    );
}
