//! Criterion benchmarks of the CPU loss (candle's layout: one harness, modules per topic).

mod benchmarks;

criterion::criterion_main!(benchmarks::cpu::benches);
