//! The logic of the `loss_npy` example, separate from `main` so that a test can run it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ndarray::{Array1, Array2, Array3, Dimension};
use ndarray_npy::{read_npy, write_npy, ReadNpyError, ReadableElement};
use supcon_loss::{
    ContrastMode, CpuBackend, LossBackend, Queue, SupConInput, SupConOptions, Variant,
};

pub const USAGE: &str = "usage: loss_npy FEATURES.npy [LABELS.npy] [--temperature T] \
[--base-temperature B] [--variant out|in] [--contrast-mode all|one] [--normalize] \
[--queue KEYS.npy --queue-labels QL.npy] [--grad-out G.npy]";

/// Parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    pub features: PathBuf,
    pub labels: Option<PathBuf>,
    pub queue: Option<PathBuf>,
    pub queue_labels: Option<PathBuf>,
    pub grad_out: Option<PathBuf>,
    pub options: SupConOptions,
}

/// What the example prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub loss: f64,
    pub anchors: usize,
}

impl Report {
    pub fn json(&self) -> String {
        format!(
            "{{\"loss\": {:?}, \"anchors\": {}}}",
            self.loss, self.anchors
        )
    }
}

pub fn parse_args(args: &[String]) -> Result<Args> {
    let mut parsed = Args::default();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--temperature" => parsed.options.temperature = number(&value(arg)?, arg)?,
            "--base-temperature" => {
                parsed.options.base_temperature = Some(number(&value(arg)?, arg)?)
            }
            "--variant" => {
                parsed.options.variant = match value(arg)?.as_str() {
                    "out" => Variant::Out,
                    "in" => Variant::In,
                    other => bail!("--variant must be `out` or `in`, got `{other}`"),
                }
            }
            "--contrast-mode" => {
                parsed.options.contrast_mode = match value(arg)?.as_str() {
                    "all" => ContrastMode::All,
                    "one" => ContrastMode::One,
                    other => bail!("--contrast-mode must be `all` or `one`, got `{other}`"),
                }
            }
            "--normalize" => parsed.options.normalize = true,
            "--queue" => parsed.queue = Some(value(arg)?.into()),
            "--queue-labels" => parsed.queue_labels = Some(value(arg)?.into()),
            "--grad-out" => parsed.grad_out = Some(value(arg)?.into()),
            "-h" | "--help" => bail!("{USAGE}"),
            flag if flag.starts_with("--") => bail!("unknown option `{flag}`\n{USAGE}"),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let mut positional = positional.into_iter();
    parsed.features = positional
        .next()
        .ok_or_else(|| anyhow!("missing FEATURES.npy\n{USAGE}"))?;
    parsed.labels = positional.next();
    if let Some(extra) = positional.next() {
        bail!("unexpected argument `{}`\n{USAGE}", extra.display());
    }
    if parsed.queue.is_some() != parsed.queue_labels.is_some() {
        bail!("--queue and --queue-labels go together");
    }
    Ok(parsed)
}

fn number(text: &str, flag: &str) -> Result<f64> {
    text.parse()
        .with_context(|| format!("{flag} expects a number, got `{text}`"))
}

/// Reads an array of `Wanted` or, when the file holds another element type, of `Other`,
/// converted.
fn read_either<D, Wanted, Other>(
    path: &Path,
    what: &str,
    convert: impl Fn(Other) -> Wanted,
) -> Result<ndarray::Array<Wanted, D>>
where
    D: Dimension,
    Wanted: ReadableElement,
    Other: ReadableElement + Clone,
{
    // ndarray-npy's errors print their source themselves: format them once, naming the file.
    let failed = |e: ReadNpyError| anyhow!("reading {what} {}: {e}", path.display());
    match read_npy::<_, ndarray::Array<Wanted, D>>(path) {
        Ok(array) => Ok(array),
        Err(ReadNpyError::WrongDescriptor(_)) => read_npy::<_, ndarray::Array<Other, D>>(path)
            .map(|a| a.mapv(convert))
            .map_err(failed),
        Err(err) => Err(failed(err)),
    }
}

fn read_labels(path: &Path, what: &str) -> Result<Vec<i64>> {
    let labels: Array1<i64> = read_either(path, what, |x: i32| i64::from(x))
        .map_err(|e| e.context(format!("{what} must be a 1-D int64 or int32 array")))?;
    Ok(labels.to_vec())
}

/// Runs the loss on the files named in `args`; writes the gradient when asked.
pub fn run(args: &Args) -> Result<Report> {
    let features: Array3<f32> = read_either(&args.features, "features", |x: f64| x as f32)
        .map_err(|e| {
            e.context("features must be a [batch, views, dim] float32 or float64 array")
        })?;
    let labels = args
        .labels
        .as_deref()
        .map(|p| read_labels(p, "labels"))
        .transpose()?;
    let queue = match (&args.queue, &args.queue_labels) {
        (Some(keys), Some(key_labels)) => {
            let keys: Array2<f32> = read_either(keys, "queue keys", |x: f64| x as f32)
                .map_err(|e| e.context("queue keys must be a [K, dim] float32 or float64 array"))?;
            Some((keys, read_labels(key_labels, "queue labels")?))
        }
        _ => None,
    };
    let mut input = SupConInput::new(features.view(), labels.as_deref());
    if let Some((keys, key_labels)) = &queue {
        input = input.with_queue(Queue {
            keys: keys.view(),
            labels: key_labels,
        });
    }
    let out = CpuBackend::default()
        .compute(&input, &args.options)
        .with_context(|| format!("computing the loss of {}", args.features.display()))?;
    if let Some(path) = &args.grad_out {
        write_npy(path, &out.grad).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Report {
        loss: out.loss,
        anchors: out.anchors,
    })
}
