//! The SupContrast two-view recipe on batches of 256: 32×32 RGB (CIFAR-like) and 28×28 gray
//! (Fashion-MNIST-like), on the ambient rayon pool (`RAYON_NUM_THREADS` sets its size).

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use supcon_augment::{presets, Augmenter, ImageRef, Pipeline};

const BATCH: usize = 256;
const VIEWS: usize = 2;

/// Deterministic pseudo-random bytes (an LCG): content only matters through the crop sizes.
fn synthetic(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

fn bench_recipe(c: &mut Criterion, name: &str, pipeline: Pipeline, h: usize, w: usize, ch: usize) {
    let bytes = synthetic(BATCH * h * w * ch, 42);
    let images: Vec<ImageRef<'_>> = bytes
        .chunks_exact(h * w * ch)
        .map(|d| ImageRef {
            data: d,
            height: h,
            width: w,
            channels: ch,
        })
        .collect();
    let ids: Vec<u64> = (0..BATCH as u64).collect();
    let augmenter = Augmenter::new(pipeline, 7);
    let mut out = vec![0.0f32; augmenter.output_len(&images, VIEWS).expect("valid batch")];
    let mut group = c.benchmark_group("augment_two_views");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut epoch = 0u64;
    group.bench_function(BenchmarkId::new(name, BATCH), |b| {
        b.iter(|| {
            epoch += 1;
            augmenter
                .augment_batch(black_box(&images), &ids, epoch, VIEWS, &mut out)
                .expect("augment");
            black_box(&out);
        })
    });
    group.finish();
}

fn supcon_cifar(c: &mut Criterion) {
    let pipeline =
        presets::supcon_cifar(32, &presets::CIFAR10_MEAN, &presets::CIFAR10_STD).expect("preset");
    bench_recipe(c, "supcon_cifar_32x32_rgb", pipeline, 32, 32, 3);
}

fn supcon_gray(c: &mut Criterion) {
    // The same recipe on one channel: crop, flip, jitter (hue/saturation are no-ops), gray.
    let pipeline = presets::supcon_cifar(
        28,
        &presets::FASHION_MNIST_MEAN,
        &presets::FASHION_MNIST_STD,
    )
    .expect("preset");
    bench_recipe(c, "supcon_28x28_gray", pipeline, 28, 28, 1);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = supcon_cifar, supcon_gray
}
