//! Forward + backward of the tiled CPU loss at D = 128.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ndarray::{Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_loss::{CpuBackend, Queue, SupConBackend, SupConInput, SupConOptions};

const DIM: usize = 128;
const VIEWS: usize = 2;

fn unit_rows(rng: &mut ChaCha8Rng, rows: usize) -> Array2<f32> {
    let mut x = Array2::from_shape_fn((rows, DIM), |_| rng.random_range(-1.0f32..1.0));
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row /= norm;
    }
    x
}

fn loss_forward_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group("supcon_cpu_fwd_bwd");
    group.sample_size(10);
    let backend = CpuBackend::default();
    let options = SupConOptions::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for rows in [512usize, 2048, 8192] {
        let batch = rows / VIEWS;
        let features = unit_rows(&mut rng, rows)
            .into_shape_with_order((batch, VIEWS, DIM))
            .expect("rows = batch · views");
        for classes in [10i64, 100] {
            let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
            group.throughput(Throughput::Elements(rows as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("classes{classes}"), rows),
                &features,
                |b, features: &Array3<f32>| {
                    let input = SupConInput::new(features.view(), Some(&labels));
                    b.iter(|| backend.compute(&input, &options).expect("valid input"))
                },
            );
        }
    }
    // With a MoCo-style queue of 8192 keys.
    let keys = unit_rows(&mut rng, 8192);
    let queue_labels: Vec<i64> = (0..8192).map(|_| rng.random_range(0..100)).collect();
    for rows in [512usize, 2048] {
        let batch = rows / VIEWS;
        let features = unit_rows(&mut rng, rows)
            .into_shape_with_order((batch, VIEWS, DIM))
            .expect("rows = batch · views");
        let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..100)).collect();
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(
            BenchmarkId::new("classes100_queue8192", rows),
            &features,
            |b, features: &Array3<f32>| {
                let input = SupConInput::new(features.view(), Some(&labels)).with_queue(Queue {
                    keys: keys.view(),
                    labels: &queue_labels,
                });
                b.iter(|| backend.compute(&input, &options).expect("valid input"))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, loss_forward_backward);
