//! Times the fused CUDA loss (forward + backward) with device events after warm-up, and prints
//! one JSON object per size. Needs the `cuda` feature and a GPU:
//!
//! ```text
//! cargo run --release -p supcon-loss --features cuda --example bench_cuda -- \
//!     [--precision f32|tf32] [--sizes 2048,8192,32768,1000000] [--dim 128] \
//!     [--warmup 3] [--iters 10] [--classes 100]
//! ```
//!
//! N is the number of feature rows V·B (V = 2 views, B = N/2 samples), as in the PyTorch
//! script `benches/supcon_dense_pytorch.py`; options: L_out, contrast mode All, τ = τ_base = 0.1,
//! random labels from `--classes` classes, rows L2-normalized on the host. Sizes above 100 000
//! rows run one timed evaluation after at most one warm-up (`--warmup 0`: none; each takes
//! seconds). docs/src/benchmarks/gpu.md
//! explains the fields and how to compare with the physical limit.

#[cfg(feature = "cuda")]
fn main() -> anyhow::Result<()> {
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use supcon_loss::cuda::{CudaBackend, Precision};
    use supcon_loss::{SupConInput, SupConOptions};

    let mut precision = Precision::F32;
    let mut sizes = vec![2048usize, 8192, 32_768, 1_000_000];
    let mut dim = 128usize;
    let mut warmup = 3usize;
    let mut iters = 10usize;
    let mut classes = 100i64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--precision" => {
                precision = match value.as_str() {
                    "f32" => Precision::F32,
                    "tf32" => Precision::Tf32,
                    other => anyhow::bail!("--precision f32|tf32, got {other}"),
                }
            }
            "--sizes" => {
                sizes = value
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--dim" => dim = value.parse()?,
            "--warmup" => warmup = value.parse()?,
            "--iters" => iters = value.parse()?,
            "--classes" => classes = value.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let backend = CudaBackend::new(0)?.with_precision(precision);
    let device = backend.device_name()?;
    let options = SupConOptions::default();
    for &n in &sizes {
        let batch = n / 2;
        let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
        let mut features =
            Array3::from_shape_fn((batch, 2, dim), |_| rng.random_range(-1.0f32..1.0));
        for mut row in features.rows_mut() {
            let norm = row.dot(&row).sqrt();
            row.mapv_inplace(|x| x / norm);
        }
        let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
        let input = SupConInput::new(features.view(), Some(&labels));
        let (w, k) = if n > 100_000 {
            (warmup.min(1), 1)
        } else {
            (warmup, iters)
        };
        let (free_before, total) = backend.memory_info()?;
        let mut times = backend.time_compute(&input, &options, w, k)?;
        times.sort_by(f32::total_cmp);
        let median = f64::from(times[times.len() / 2]);
        let rows = (2 * batch) as f64;
        // Useful work of the recomputing algorithm: forward 2·n·M·D, backward 6·n·M·D.
        let flop = 8.0 * rows * rows * dim as f64;
        let problem = supcon_loss::cuda::plan::Problem::new(
            batch,
            2,
            dim,
            0,
            supcon_loss::ContrastMode::All,
        )?;
        let times_ms: Vec<String> = times.iter().map(|t| format!("{t}")).collect();
        let record = format!(
            concat!(
                "{{\"impl\":\"supcon-cuda\",\"precision\":\"{}\",\"device\":\"{}\",",
                "\"n\":{},\"batch\":{},\"views\":2,\"dim\":{},\"classes\":{},",
                "\"warmup\":{},\"iters\":{},\"median_ms\":{},\"min_ms\":{},",
                "\"times_ms\":[{}],\"flop_8n2d\":{:e},\"tflops_8n2d\":{},",
                "\"device_bytes_allocated\":{},\"device_free_before_bytes\":{},",
                "\"device_total_bytes\":{}}}"
            ),
            precision.suffix(),
            device.replace('"', "'"),
            2 * batch,
            batch,
            dim,
            classes,
            w,
            k,
            median,
            times[0],
            times_ms.join(","),
            flop,
            flop / (median * 1e-3) / 1e12,
            problem.device_bytes(classes as usize, false),
            free_before,
            total,
        );
        println!("{record}");
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("bench_cuda needs the `cuda` feature: cargo run --release -p supcon-loss --features cuda --example bench_cuda");
    std::process::exit(2);
}
