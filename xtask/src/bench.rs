//! `cargo xtask bench <what>`: side-by-side benchmarks against the references (PyTorch,
//! torchvision), measured on the same machine in the same run. Each writes
//! `target/bench-results/<what>.json` and prints the ratio; `methods` compares accuracy too
//! (kNN top-1 and images/s of SimCLR, MoCo and SwAV against lightly's implementations), and
//! `interop` is a correctness check instead (SupContrast's weights in supcon-models, same
//! outputs) and prints the differences; `python` measures the Python package's SupCon loss
//! against pytorch-metric-learning's and SupContrast's.

use anyhow::{bail, Result};

pub fn run(args: &[String]) -> Result<()> {
    let (what, rest) = args
        .split_first()
        .map(|(w, r)| (w.as_str(), r))
        .unwrap_or(("", &[]));
    match what {
        "loss" => crate::bench_loss::run(rest),
        "augment" => crate::bench_augment::run(rest),
        "train" => crate::bench_train::run(rest),
        "data" => crate::bench_data::run(rest),
        "methods" => crate::bench_methods::run(rest),
        "interop" => crate::bench_interop::run(rest),
        "python" => crate::bench_python::run(rest),
        other => {
            bail!(
                "unknown benchmark `{other}`; expected one of: loss, augment, train, data, \
                 methods, interop, python"
            )
        }
    }
}
