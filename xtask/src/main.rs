//! `cargo xtask`: the project's automation, in Rust so that it runs wherever cargo does.
//!
//! Every command does its own set-up (Debian packages, libtorch from PyPI, NVRTC), so that on
//! a fresh machine `cargo xtask train` and `cargo xtask test` are all a user has to type.

mod bench;
mod bench_augment;
mod bench_data;
mod bench_interop;
mod bench_loss;
mod bench_methods;
mod bench_python;
mod bench_train;
mod docs;
mod python;
mod setup;
mod test;
mod train;
mod util;

use anyhow::{bail, Result};

const HELP: &str = "\
cargo xtask <command> [options]

commands:
  setup [--cuda]        install what the workspace needs: Debian packages (dataset-fashion-mnist,
                        libopenblas-dev), libtorch 2.11 from the PyPI torch wheel (CPU flavour by
                        default, --cuda for the CUDA 13 one) and NVRTC; links libtorch at .libtorch
  test                  the one test command: set-up, cargo fmt --check, clippy -D warnings, and the
                        tests of the whole workspace (this is what CI runs)
  train [ARGS...]       build the `supcon` binary (release) and run the default two-stage recipe on
                        Fashion-MNIST; ARGS go to `supcon train`
  bench <what> [ARGS]   side-by-side benchmarks: loss | augment | train | data (see docs/src/benchmarks.md),
                        methods: SimCLR, MoCo v2 and SwAV by supcon and by lightly, kNN top-1 and
                        images/s (see docs/src/benchmarks/train.md), and interop: a PyTorch
                        SupContrast ResNet-18's weights loaded into supcon-models, max |difference|
                        of the outputs (see docs/src/models.md)
  gpu-test              build the GPU test binaries and run them where a GPU is present
  docs                  build the mdBook (installing mdbook when missing) and rustdoc
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    match command.as_deref() {
        Some("setup") => setup::run(&rest).map(|_| ()),
        Some("test") => test::run(&rest),
        Some("train") => train::run(&rest),
        Some("bench") => bench::run(&rest),
        Some("gpu-test") => test::gpu(&rest),
        Some("docs") => docs::run(&rest),
        Some("help" | "--help" | "-h") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command `{other}`\n\n{HELP}"),
    }
}
