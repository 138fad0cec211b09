//! The logic of the `loss_npy` example, separate from `main` so that a test can run it.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use supcon_loss::npy::{supcon_files, Summary};
use supcon_loss::{ContrastMode, CpuBackend, SupConOptions, Variant};

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

/// What the example prints: `{"loss": .., "anchors": ..}` ([`Summary::json`]).
pub type Report = Summary;

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

/// Runs the loss on the files named in `args` (the library's own `.npy` path,
/// `supcon_loss::npy`, which `supcon loss` shares); writes the gradient when asked.
pub fn run(args: &Args) -> Result<Report> {
    let queue = args
        .queue
        .as_deref()
        .map(|keys| (keys, args.queue_labels.as_deref()));
    let summary = supcon_files(
        &args.features,
        args.labels.as_deref(),
        queue,
        &args.options,
        &CpuBackend::default(),
        args.grad_out.as_deref(),
    )
    .with_context(|| format!("computing the loss of {}", args.features.display()))?;
    Ok(summary)
}
