//! Criterion benches of supcon-augment: `cargo bench -p supcon-augment`.

use criterion::criterion_main;

mod benchmarks;

criterion_main!(benchmarks::augment::benches);
