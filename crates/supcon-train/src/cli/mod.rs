//! The `supcon` command line: argument definitions (clap) and the commands behind them.

mod commands;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub use commands::execute;
pub use commands::{CURVE_MD, CURVE_PNG};

use crate::config::{AnchorMode, CudaPrecision, EvalSplit, LossBackendKind, LossVariant, Method};

/// Supervised contrastive learning (Khosla et al. 2020) in Rust: two-stage training,
/// evaluation and embeddings.
///
/// Configuration comes from a preset (--preset, default quick-cpu), then an optional TOML
/// file (--config), then --set KEY=VALUE overrides, then the dedicated options below; the
/// resolved configuration is written to the run folder as config.toml.
#[derive(Parser, Debug)]
#[command(name = "supcon", version, about, long_about)]
pub struct Cli {
    /// Logs only: no progress bars (also the default when stdout is not a terminal).
    #[arg(long, global = true)]
    pub quiet: bool,
    /// How the processes of a job started by mpirun / srun talk: auto (MPI when started by
    /// such a launcher, else one process), mpi, or nccl (GPU collectives; needs a build with
    /// the nccl feature). See the book's Scaling out.
    #[arg(long, global = true, value_enum, default_value_t = CollectivesArg::Auto)]
    pub collectives: CollectivesArg,
    /// Seconds a rank waits in one collective for the others before it ends the job, saying
    /// so (a rank stuck in I/O or dead would otherwise hang every other rank); 0: no limit.
    /// Generous by default: a training collective waits for one step's or one validation's
    /// work on another rank (waiting for rank 0's final evaluation is exempt).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 1800)]
    pub collective_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole recipe: contrastive pre-training, linear classifier on the frozen encoder,
    /// test evaluation and report (what `cargo xtask train` runs). Options that name one
    /// stage's setting (--epochs, --batch-size, --lr) apply to pre-training.
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// Also train the cross-entropy baseline (config section [ce]) and compare.
        #[arg(long)]
        with_baseline: bool,
    },
    /// Stage 1 only: contrastive pre-training; leaves checkpoints/pretrain-last.safetensors.
    Pretrain {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Stage 2 only: a linear classifier on the frozen encoder of a pre-training checkpoint,
    /// then the test evaluation. --epochs, --batch-size, --lr apply to this stage.
    Linear {
        /// Pre-training checkpoint (a run's checkpoints/pretrain-last.safetensors).
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// SimCLR v2's fine-tuning alone: the encoder and the first finetune.from_head_layer
    /// layers of the projection head of a pre-training checkpoint, plus a new linear layer,
    /// trained on the labeled images (with --labeled-per-class / --labeled-fraction, the
    /// labeled subset), then the test evaluation. --epochs, --batch-size, --lr, --augment
    /// apply to this stage; [finetune] of the configuration holds the rest.
    Finetune {
        /// Pre-training checkpoint (a run's checkpoints/pretrain-last.safetensors).
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// SimCLR v2's distillation alone: a student trained from scratch on every training
    /// image (labeled or not) to match the tempered class probabilities of a teacher run's
    /// fine-tuned network, then the test evaluation. --epochs, --batch-size, --lr, --augment
    /// apply to this stage; [distill] of the configuration holds the rest (the student's
    /// architecture, τ, the labeled images' weight).
    Distill {
        /// The teacher: a run folder with a fine-tuned network (checkpoints/finetune-*).
        #[arg(long, value_name = "DIR")]
        teacher: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The cross-entropy baseline alone (encoder + linear layer trained end to end), then the
    /// test evaluation. --epochs, --batch-size, --lr apply to this stage.
    Ce {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Evaluates a finished run's checkpoints and rewrites its report: on the run's own
    /// evaluation split, or on the one --evaluate-on names (so a tuning run trained with
    /// --evaluate-on validation is read on the test set once, when its recipe is chosen).
    Eval {
        /// The run folder (runs/<name>).
        #[arg(long, value_name = "DIR")]
        run: PathBuf,
        /// Print the report as JSON instead of the summary table.
        #[arg(long)]
        json: bool,
        /// The split to evaluate on: test or validation (default: the run's eval.split).
        #[arg(long, value_enum, value_name = "SPLIT")]
        evaluate_on: Option<EvalSplit>,
    },
    /// Writes the encoder embeddings of a data split as .npy (embeddings.npy [n, dim] f32,
    /// labels.npy [n] i64) for use elsewhere.
    Embed {
        /// A checkpoint: pre-training, CE, or a weights-only safetensors file of a
        /// pre-training model.
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        /// Which images: train (the training split), validation or test.
        #[arg(long, default_value = "test", value_parser = ["train", "validation", "test"])]
        split: String,
        /// Output folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Write the (normalised) projection-head outputs instead of encoder features.
        #[arg(long)]
        projections: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Accuracy against training time: reads the report.json of every run folder in --runs
    /// (one point per evaluated method), draws accuracy-vs-time.png and writes
    /// accuracy-vs-time.md there, and prints the table.
    Curve {
        /// The folder holding the run folders (e.g. runs/curve).
        #[arg(long, value_name = "DIR")]
        runs: PathBuf,
    },
    /// The Few labels page's figure: test top-1 against the labeled fraction, a line per row
    /// kind, from a CSV table of `row kind,labeled %,test top-1 %` lines.
    LabelEfficiency {
        /// The CSV table.
        #[arg(long, value_name = "FILE")]
        table: PathBuf,
        /// Where the PNG goes.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Checks the ranks of a data-parallel job before a long run: every collective between
    /// them, and the SupCon / SimCLR loss across them against one process's on the same
    /// batch (every option, to 1e-6). Start it the way the run will be started, e.g.
    /// `mpirun -np 4 supcon check-ranks`.
    CheckRanks,
    /// Computes a loss of arrays stored as .npy files and prints one JSON line
    /// {"loss": ..., "anchors": ...}; the gradients (--grad-out, --prototype-grad-out) are
    /// written in the input's shape and float type. Shares its file reading with
    /// supcon-loss's loss_npy example.
    Loss(LossArgs),
    /// Studies: many short runs that differ in one setting, read together as one figure.
    #[command(subcommand)]
    Study(StudyCommand),
}

/// `supcon study …`.
#[derive(Subcommand, Debug, Clone)]
pub enum StudyCommand {
    /// SimCLR's augmentation study (Chen et al. 2020, figure 5) for SimCLR or SupCon: one short
    /// pre-training per unordered pair of ops (the diagonal: one op alone), the ops on one view
    /// and the image itself as the other, each read by the linear probe on the validation
    /// split; writes study.json, study.md and heatmap.png into --out. Each cell is a run folder
    /// under --out/cells: run the same command again to continue an interrupted study.
    Augment(AugmentStudyArgs),
}

/// Options of `supcon study augment`.
#[derive(Args, Debug, Clone)]
pub struct AugmentStudyArgs {
    /// simclr (preset quick-cpu-simclr) or supcon (preset quick-cpu).
    #[arg(long, default_value = "simclr", value_parser = ["simclr", "supcon"])]
    pub method: String,
    /// The ops of the grid, comma-separated (default: crop,cutout,color,sobel,noise,blur,rotate).
    #[arg(long, value_delimiter = ',')]
    pub ops: Option<Vec<String>>,
    /// The study's folder (default: runs/augment-study-<method>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Settings of every cell (--set after the study's own budget; --preset and --config are
    /// refused: each cell starts from its method's preset).
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `--collectives`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CollectivesArg {
    /// MPI when started by an MPI launcher, otherwise one process.
    Auto,
    /// MPI (a build with the mpi feature).
    Mpi,
    /// NCCL between GPUs, started over MPI (a build with the nccl feature).
    Nccl,
}

impl From<CollectivesArg> for supcon_collectives::Transport {
    fn from(arg: CollectivesArg) -> Self {
        match arg {
            CollectivesArg::Auto => supcon_collectives::Transport::Auto,
            CollectivesArg::Mpi => supcon_collectives::Transport::Mpi,
            CollectivesArg::Nccl => supcon_collectives::Transport::Nccl,
        }
    }
}

/// Which loss `supcon loss` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LossMethod {
    /// SupCon (with --labels) or SimCLR (without): --features [batch, views, dim].
    Supcon,
    /// MoCo's InfoNCE: --features (queries) [B, D], --positives [B, D], --negatives [K, D]
    /// shared or [B, m, D] per query.
    Infonce,
    /// InstDisc's NCE: --features (queries) [B, D], --positives [B, D], --negatives [B, m, D],
    /// --data-size N, --nce-z Z (absent: estimated from these queries).
    Nce,
    /// SwAV: --features [B, crops, D], --prototypes [K, D].
    Swav,
    /// CMC: --features (the views) [V, B, D], --pairing core-view or full-graph.
    Cmc,
    /// CPC: --features (the predictions) [B, T, K, D], --targets [B, T, D].
    Cpc,
    /// InvSpread: --features [B, 2, D] (each image and its augmented copy).
    Invspread,
}

/// Which view pairs CMC contrasts (supcon-loss's `Pairing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CmcPairing {
    /// View 0 against each other view, both directions.
    #[default]
    CoreView,
    /// Every ordered pair of views.
    FullGraph,
}

/// Options of `supcon loss`.
#[derive(Args, Debug, Clone)]
pub struct LossArgs {
    /// The loss.
    #[arg(long, value_enum, default_value_t = LossMethod::Supcon)]
    pub method: LossMethod,
    /// Features (supcon, swav), queries (infonce, nce), views (cmc) or predictions (cpc),
    /// float32 or float64 .npy.
    #[arg(long, value_name = "FILE")]
    pub features: PathBuf,
    /// supcon: labels [batch], int64 or int32 .npy; without it the loss is SimCLR's. A label
    /// of -1 (any negative) marks an unlabeled sample: semi-supervised SupCon.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// supcon: queue keys [K, dim] (extra contrast rows without gradient).
    #[arg(long, value_name = "FILE", requires = "queue_labels")]
    pub queue: Option<PathBuf>,
    /// supcon: labels of the queue keys [K].
    #[arg(long, value_name = "FILE", requires = "queue")]
    pub queue_labels: Option<PathBuf>,
    /// infonce, nce: the positive of each query [B, D].
    #[arg(long, value_name = "FILE")]
    pub positives: Option<PathBuf>,
    /// infonce, nce: negatives [K, D] (shared) or [B, m, D] (per query).
    #[arg(long, value_name = "FILE")]
    pub negatives: Option<PathBuf>,
    /// swav: prototypes [K, D].
    #[arg(long, value_name = "FILE")]
    pub prototypes: Option<PathBuf>,
    /// cpc: the encoded targets [B, T, D].
    #[arg(long, value_name = "FILE")]
    pub targets: Option<PathBuf>,
    /// cmc: which view pairs are contrasted.
    #[arg(long, value_enum, default_value_t = CmcPairing::CoreView)]
    pub pairing: CmcPairing,
    /// Temperature τ (default: supcon 0.1, infonce 0.2, nce 0.07, swav 0.1, cmc 0.07,
    /// invspread 0.1, cpc 1 on raw dot products and 0.1 with --normalize, as the pipeline).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// supcon: τ_base (default: τ).
    #[arg(long)]
    pub base_temperature: Option<f64>,
    /// supcon: L_out (default) or L_in.
    #[arg(long, value_enum)]
    pub variant: Option<LossVariant>,
    /// supcon: anchors are all views (default) or view 0 only.
    #[arg(long, value_enum)]
    pub contrast_mode: Option<AnchorMode>,
    /// L2-normalise the inputs inside the loss (and back-propagate through it).
    #[arg(long)]
    pub normalize: bool,
    /// supcon: where the loss is computed (float64 inputs always run on the CPU backend); the
    /// other losses take only cpu here.
    #[arg(long, value_enum, default_value_t = LossBackendKind::Cpu)]
    pub loss_backend: LossBackendKind,
    /// nce: N, the data-set size (the noise distribution is 1/N).
    #[arg(long)]
    pub data_size: Option<usize>,
    /// nce: the partition constant Z (absent: estimated from these queries).
    #[arg(long)]
    pub nce_z: Option<f64>,
    /// nce: λ of InstDisc's proximal term λ‖q − positive‖² (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub proximal: f64,
    /// swav: ε of Sinkhorn–Knopp.
    #[arg(long, default_value_t = 0.05)]
    pub epsilon: f64,
    /// swav: Sinkhorn–Knopp iterations.
    #[arg(long, default_value_t = 3)]
    pub sinkhorn_iterations: usize,
    /// swav: the first A crops whose codes are computed.
    #[arg(long, default_value_t = 2)]
    pub assign_crops: usize,
    /// Also write ∂L/∂features (or ∂L/∂queries) here.
    #[arg(long, value_name = "FILE")]
    pub grad_out: Option<PathBuf>,
    /// swav: also write ∂L/∂prototypes here.
    #[arg(long, value_name = "FILE")]
    pub prototype_grad_out: Option<PathBuf>,
    /// cpc: also write ∂L/∂targets here.
    #[arg(long, value_name = "FILE")]
    pub target_grad_out: Option<PathBuf>,
}

/// Every embedded preset, for `--preset`'s check and help.
fn preset_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::config::PRESETS.iter().map(|(name, _)| *name))
}

/// Where the configuration comes from.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Preset to start from (default: quick-cpu; the book's Training page describes each).
    #[arg(long, value_name = "NAME", value_parser = preset_names())]
    pub preset: Option<String>,
    /// TOML file whose keys override the preset's (unknown keys are errors).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. --set pretrain.optim.lr=0.2 (repeatable; applied after --config).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Data set folder (default: $SUPCON_DATA, then /usr/share/datasets/<name>).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long)]
    pub device: Option<String>,
    /// libtorch threads (0: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of every random stream.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Options of the training commands.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run name: the run folder is <runs-dir>/<name> (default: <command>-<date>-<time>).
    #[arg(long)]
    pub name: Option<String>,
    /// Folder of the run folders.
    #[arg(long, default_value = "runs", value_name = "DIR")]
    pub runs_dir: PathBuf,
    /// Continue an interrupted run exactly (its config.toml is used; no other config options).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["name", "overwrite"])]
    pub resume: Option<PathBuf>,
    /// With --resume: continue although config.toml or the data changed since the run started
    /// (the resume is then not exact; each change is logged).
    #[arg(long, requires = "resume")]
    pub accept_changes: bool,
    /// Delete an existing run folder of the same name first.
    #[arg(long)]
    pub overwrite: bool,
    /// Contrastive method of pre-training.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Epochs of the command's stage.
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Batch size of the command's stage.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate of the command's stage.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Temperature τ of the contrastive loss.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// τ_base: the loss is scaled by τ / τ_base (SupContrast's default is 0.07).
    #[arg(long)]
    pub base_temperature: Option<f64>,
    /// L_out (the paper's eq. 2, default) or L_in (eq. 3).
    #[arg(long, value_enum)]
    pub variant: Option<LossVariant>,
    /// Anchors: every view (all) or view 0 only (one).
    #[arg(long, value_enum)]
    pub contrast_mode: Option<AnchorMode>,
    /// Augmented views per image in pre-training.
    #[arg(long)]
    pub views: Option<usize>,
    /// Augmentation of the command's stage: a preset (supcon, simclr, fashion-mnist,
    /// crop-flip, pad-crop-flip, none) or a recipe such as pad-crop:2+flip+jitter:0.4.
    #[arg(long, value_name = "RECIPE")]
    pub augment: Option<String>,
    /// Data set: fashion-mnist, mnist, cifar10, cifar100, cifar100-coarse, or folder (an
    /// image-folder tree with train/ and test/ at --data).
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
    /// Matrix precision of --loss-backend cuda.
    #[arg(long, value_enum)]
    pub cuda_precision: Option<CudaPrecision>,
    /// Where the contrastive loss is computed (cuda needs a build with the cuda feature).
    #[arg(long, value_enum)]
    pub loss_backend: Option<LossBackendKind>,
    /// Momentum-encoder key queue size (0: off), e.g. --queue 8192.
    #[arg(long)]
    pub queue: Option<usize>,
    /// EMA coefficient of the momentum encoder.
    #[arg(long)]
    pub queue_momentum: Option<f64>,
    /// Train on only this many images per class (quick experiments; 0: all).
    #[arg(long)]
    pub train_per_class: Option<usize>,
    /// Test on only this many images per class (0: all).
    #[arg(long)]
    pub test_per_class: Option<usize>,
    /// Few labels: keep the labels of only this many training images per class
    /// (`data.labeled_per_class`).
    #[arg(long)]
    pub labeled_per_class: Option<usize>,
    /// Few labels: keep the labels of this fraction of each class, e.g. 0.01
    /// (`data.labeled_fraction`).
    #[arg(long)]
    pub labeled_fraction: Option<f64>,
    /// Also write the `last` checkpoint every N optimizer steps.
    #[arg(long, value_name = "N")]
    pub checkpoint_every_steps: Option<u64>,
    /// Keep a numbered checkpoint every N epochs.
    #[arg(long, value_name = "N")]
    pub checkpoint_every_epochs: Option<u32>,
    /// Skip the robustness sweep of the final evaluation.
    #[arg(long)]
    pub no_robustness: bool,
    /// The split of the final evaluation: test (default) or validation, for tuning runs
    /// that must not read the test set.
    #[arg(long, value_enum, value_name = "SPLIT")]
    pub evaluate_on: Option<EvalSplit>,
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn train_help_lists_every_preset() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("train")
            .expect("a train subcommand")
            .render_long_help()
            .to_string();
        for (name, _) in crate::config::PRESETS {
            assert!(
                help.contains(name),
                "`supcon train --help` omits {name}:\n{help}"
            );
        }
    }
}
