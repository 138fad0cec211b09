//! The supcon-models side of `cargo xtask bench interop`: loads the state dict of a real
//! PyTorch SupContrast `SupConResNet` (written by `benches/supcontrast_interop.py`) into a
//! [`SupConModel`] with [`LoadMode::Strict`], runs the same inputs in eval mode and prints the
//! largest absolute differences of the encoder features and the projections.
//!
//! ```text
//! python benches/supcontrast_interop.py --out-dir target/interop
//! cargo run --release -p supcon-models --example supcontrast_interop -- --dir target/interop
//! ```
//!
//! Reads `<dir>/supcontrast.safetensors`, `inputs.npy` `[N, C, H, W]`, `features.npy`
//! `[N, feature_dim]` and `projections.npy` `[N, projection_dim]` (float32). Options:
//! `--arch resnet18`, `--head mlp`, `--projection-dim 128`, `--in-channels 3` (the model the
//! script built), `--threads 2`, `--json` (one JSON line at the end). Exits with an error when
//! the checkpoint does not load strictly. As a control it also reports how far a model that
//! was *not* loaded (its own random init) is from PyTorch's projections.

use ndarray::ArrayD;
use std::error::Error;
use std::path::{Path, PathBuf};
use supcon_models::{load_checkpoint, Architecture, HeadKind, LoadMode, ModelConfig, SupConModel};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

struct Options {
    dir: PathBuf,
    config: ModelConfig,
    threads: i32,
    json: bool,
}

fn parse() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        dir: PathBuf::from("target/interop"),
        config: ModelConfig::new(Architecture::ResNet18),
        threads: 2,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--dir" => o.dir = PathBuf::from(value()?),
            "--arch" => o.config.architecture = value()?.parse()?,
            "--head" => o.config.head = value()?.parse::<HeadKind>()?,
            "--projection-dim" => o.config.projection_dim = value()?.parse()?,
            "--in-channels" => o.config.in_channels = value()?.parse()?,
            "--threads" => o.threads = value()?.parse()?,
            "--json" => o.json = true,
            other => {
                return Err(format!(
                    "unknown option `{other}` (--dir DIR, --arch A, --head mlp|linear, \
                     --projection-dim N, --in-channels N, --threads N, --json)"
                )
                .into())
            }
        }
    }
    Ok(o)
}

/// A float32 .npy file as a CPU tensor of the same shape.
fn read_tensor(path: &Path) -> Result<Tensor, Box<dyn Error>> {
    let array: ArrayD<f32> =
        ndarray_npy::read_npy(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let shape: Vec<i64> = array.shape().iter().map(|&d| d as i64).collect();
    let data: Vec<f32> = array.as_standard_layout().iter().copied().collect();
    Ok(Tensor::from_slice(&data).reshape(shape.as_slice()))
}

fn head_name(head: HeadKind) -> &'static str {
    match head {
        HeadKind::Mlp => "mlp",
        HeadKind::Linear => "linear",
        HeadKind::Mlp3 => "mlp3",
    }
}

/// Largest |a - b| and largest |b| (the reference's scale).
fn max_abs_diff(ours: &Tensor, theirs: &Tensor) -> Result<(f64, f64), Box<dyn Error>> {
    if ours.size() != theirs.size() {
        return Err(format!(
            "shape mismatch: supcon-models {:?}, PyTorch {:?}",
            ours.size(),
            theirs.size()
        )
        .into());
    }
    let diff = (ours - theirs).abs().max().double_value(&[]);
    let scale = theirs.abs().max().double_value(&[]);
    Ok((diff, scale))
}

fn main() -> Result<(), Box<dyn Error>> {
    let o = parse()?;
    tch::set_num_threads(o.threads);
    let weights = o.dir.join("supcontrast.safetensors");

    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = SupConModel::new(&vs.root(), &o.config)?;
    let report = load_checkpoint(&mut vs, &weights, LoadMode::Strict)?;

    let inputs = read_tensor(&o.dir.join("inputs.npy"))?;
    let ref_features = read_tensor(&o.dir.join("features.npy"))?;
    let ref_projections = read_tensor(&o.dir.join("projections.npy"))?;
    model.encoder.check_input(&inputs)?;

    let (features, projections) = tch::no_grad(|| {
        let features = model.encode(&inputs, false);
        (features, model.forward_t(&inputs, false))
    });
    let (feature_diff, feature_scale) = max_abs_diff(&features, &ref_features)?;
    let (projection_diff, _) = max_abs_diff(&projections, &ref_projections)?;
    let norms = projections.norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
    let norm_error = (norms - 1.0).abs().max().double_value(&[]);
    let cosine_min = (&projections * &ref_projections)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .min()
        .double_value(&[]);
    // Control: the same model before loading (its own random init) must be far off, or the
    // comparison proves nothing.
    let control_vs = nn::VarStore::new(Device::Cpu);
    let control = SupConModel::new(&control_vs.root(), &o.config)?;
    let control_projections = tch::no_grad(|| control.forward_t(&inputs, false));
    let (control_diff, _) = max_abs_diff(&control_projections, &ref_projections)?;

    let c = &o.config;
    println!(
        "loaded {} tensors of {} strictly into SupConModel({}, head {}, projection {}, {} channels)",
        report.loaded,
        weights.display(),
        c.architecture,
        head_name(c.head),
        c.projection_dim,
        c.in_channels,
    );
    println!(
        "{} inputs {:?}: max |Δ| features {feature_diff:.3e} (largest |feature| {feature_scale:.3}), \
         projections {projection_diff:.3e}; min cosine {cosine_min:.9}; max | |z| - 1 | {norm_error:.2e}; \
         control (not loaded): projections {control_diff:.3}",
        inputs.size()[0],
        inputs.size(),
    );
    if o.json {
        println!(
            "{{\"tensors\": {}, \"batch\": {}, \"max_abs_diff_features\": {feature_diff:e}, \
             \"max_abs_diff_projections\": {projection_diff:e}, \"feature_abs_max\": {feature_scale}, \
             \"min_cosine\": {cosine_min}, \
             \"control_max_abs_diff_projections\": {control_diff}, \"arch\": \"{}\", \"head\": \"{}\", \"projection_dim\": {}, \
             \"in_channels\": {}, \"threads\": {}}}",
            report.loaded,
            inputs.size()[0],
            c.architecture,
            head_name(c.head),
            c.projection_dim,
            c.in_channels,
            o.threads,
        );
    }
    Ok(())
}
