//! Stage 1's contrastive methods behind one seam.
//!
//! [`PretrainModel`](super::pretrain::PretrainModel) owns what every method shares — the online
//! encoder + projection head, the optimizer, the augmenter — and hands each batch to the
//! run's [`ContrastiveMethod`], which owns everything particular to it (momentum encoder, key
//! queue, memory bank, prototypes), computes its loss with `supcon-loss`, back-propagates it
//! into the online network, updates its own state after the optimizer step and names its
//! checkpoint groups. [`parts`] is the registry: a method's module exports its [`MethodParts`]
//! (builder, online network, probe reading, own checkpoint groups). Adding a method: its module
//! here and one arm in [`parts`]; on the schema side a [`Method`] variant (with its name) and its arm in
//! `config::methods::spec` — views, default τ, labels, label-aware queue, multi-crop, the loss
//! backends it has, the checks of its settings table — plus the table there if it has one.
//! Every one of these is an exhaustive `match` (the compiler lists what a new variant lacks),
//! and `config::methods`' test checks what each method provides. The schema lives apart so
//! that the configuration never imports the pipeline.
//!
//! Each method holds its loss as a `supcon_loss::LossOp` and computes it through the op's one
//! way into autograd, `LossOp::autograd(&tensors, backend)`, on the backend
//! `pretrain.loss_backend` names: `cpu` on host copies, `tch` on the training device (its
//! queue, bank and prototypes are tensors there), `cuda` (SupCon, SimCLR) with the fused
//! kernels.
//!
//! | method | module | positives of an anchor | negatives | loss (`supcon-loss`) |
//! |---|---|---|---|---|
//! | `supcon` | [`in_batch`] | every other view of its class (batch, and the label-aware queue) | the other classes | SupCon L_out / L_in |
//! | `simclr` | [`in_batch`] | the other views of its image | everything else in the batch (and the queue) | NT-Xent |
//! | `moco` | [`moco`] | the momentum key of its image's other view | the key queue | InfoNCE |
//! | `instdisc` | [`instdisc`] | its image's memory-bank entry | m entries drawn from the bank | NCE |
//! | `invspread` | [`invspread`] | its image's other view | every other row of the batch (with a binary spreading term) | InvSpread |
//! | `swav` | [`swav`] | the Sinkhorn code of its image's other crops | (none: equipartition of the codes) | SwAV swapped prediction |
//! | `cmc` | [`cmc`] | the same image's embedding by the other view's encoder (Sobel magnitude) | the batch's other images in that view | CMC cross-view |
//! | `cpc` | [`cpc`] | the embedding of the patch k rows below, predicted from the column's context | every other patch of the batch | CPC InfoNCE over the grid |

pub mod cmc;
pub mod cpc;
pub mod in_batch;
pub mod instdisc;
pub mod invspread;
pub mod moco;
pub mod momentum;
pub mod swav;

use ndarray::ArrayView3;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::{Method, RunConfig};
use crate::error::TrainError;
pub use crate::loss_bridge::host_rows;
use crate::pipeline::data::PreparedBatch;
use supcon_models::SupConModel;

/// One contrastive method of stage 1 (see the module docs).
pub trait ContrastiveMethod {
    /// Forward pass of `online` on the batch's views, the method's loss, and its backward pass
    /// into the gradients of `online` (and of [`ContrastiveMethod::trainable`]). Returns the
    /// loss. Changes no parameter.
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError>;

    /// Tensors of the method itself that the stage's optimizer trains with the online
    /// network (SwAV's prototypes), as (name, tensor).
    fn trainable(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Whether the optimizer leaves [`ContrastiveMethod::trainable`] alone in epoch `epoch`
    /// (SwAV freezes its prototypes at first): no update, no weight decay, no momentum.
    fn frozen(&self, _epoch: u32) -> bool {
        false
    }

    /// Just after the optimizer step: momentum encoder, queue, memory bank, prototypes.
    /// `progress`: the fraction of the stage's steps done before this one (MoCo's momentum
    /// schedule).
    fn after_step(&mut self, progress: f64) -> Result<(), TrainError>;

    /// Running statistics of the method's own networks (a momentum encoder's BatchNorm),
    /// averaged over the ranks of a data-parallel run after every step.
    fn statistics(&self) -> Vec<Tensor> {
        Vec::new()
    }

    /// The method's state for a checkpoint, as (prefix, tensors) groups.
    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)>;

    /// Restores what [`ContrastiveMethod::checkpoint_groups`] saved.
    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError>;

    /// Where the loss runs, for the log (`cpu`, `tch`, `cuda`).
    fn loss_backend(&self) -> &'static str {
        "cpu"
    }
}

/// What a method's constructor gets.
pub struct MethodContext<'a> {
    pub config: &'a RunConfig,
    /// The online network's variables (a momentum encoder starts as their copy).
    pub online: &'a VarStore,
    pub device: Device,
    /// Images of the training split (the memory bank has one entry per image).
    pub dataset_size: usize,
    /// Side of the (square) training images in pixels (CPC's patch grid).
    pub image_size: usize,
    /// The pixels' per-channel normalization (CMC undoes it for Lab).
    pub mean: &'a [f32],
    pub std: &'a [f32],
    /// The ranks of the run: a method gathers what its loss needs from all of them.
    pub comm: crate::dist::Comm,
}

/// What the pipeline needs of a method besides its training step: how to build it, which
/// network is online, how its frozen encoder reads images for the probe, and the checkpoint
/// groups only it writes. Each method module has its `PARTS`; [`parts`] is the registry.
pub struct MethodParts {
    /// Builds the method of stage 1.
    pub build: fn(&MethodContext<'_>) -> Result<Box<dyn ContrastiveMethod>, TrainError>,
    /// The online network's configuration (the run's model, unless the method reads another
    /// view of the image with it: CMC's L channel).
    pub online_model: fn(&RunConfig) -> supcon_models::ModelConfig,
    /// How its pre-trained encoder turns images into the probe's features.
    pub probe: fn(&ProbeContext<'_>) -> Result<Box<dyn ProbeReading>, TrainError>,
    /// Checkpoint groups that only this method writes (a checkpoint holding one is this
    /// method's).
    pub own_groups: &'static [&'static str],
}

/// The registry: every [`Method`]'s parts.
pub fn parts(method: Method) -> MethodParts {
    match method {
        Method::Supcon | Method::Simclr => in_batch::PARTS,
        Method::Moco => moco::PARTS,
        Method::Instdisc => instdisc::PARTS,
        Method::Invspread => invspread::PARTS,
        Method::Swav => swav::PARTS,
        Method::Cmc => cmc::PARTS,
        Method::Cpc => cpc::PARTS,
    }
}

/// Builds the method of `config`'s stage 1.
pub fn build(context: &MethodContext<'_>) -> Result<Box<dyn ContrastiveMethod>, TrainError> {
    (parts(context.config.pretrain.method).build)(context)
}

/// The online network's configuration of `config`'s method.
pub fn online_model(config: &RunConfig) -> supcon_models::ModelConfig {
    (parts(config.pretrain.method).online_model)(config)
}

/// [`MethodParts::online_model`] of a method whose online network is the run's model.
pub fn run_model(config: &RunConfig) -> supcon_models::ModelConfig {
    config.model.clone()
}

/// What a method's probe reading is built from.
pub struct ProbeContext<'a> {
    pub config: &'a RunConfig,
    /// The pre-training checkpoint (a method with a second network reads it from here).
    pub checkpoint: &'a Checkpoint,
    pub device: Device,
    /// The pixels' per-channel normalization (CMC's colour split undoes it).
    pub mean: &'a [f32],
    pub std: &'a [f32],
}

/// How a method's frozen encoder turns images into the probe's features (the linear probe,
/// kNN, `supcon embed`).
pub trait ProbeReading {
    /// The features `[n, width]` of `images`, in eval mode.
    fn features(&self, encoder: &SupConModel, images: &Tensor) -> Tensor;

    /// The width of [`ProbeReading::features`].
    fn width(&self, encoder: &SupConModel) -> i64 {
        encoder.feature_dim()
    }

    /// Why the encoder's projection head does not apply to these features (`None`: it does).
    fn headless(&self) -> Option<&'static str> {
        None
    }
}

/// Every method's reading but CMC's and CPC's: the encoder on the image.
pub struct ImageReading;

impl ProbeReading for ImageReading {
    fn features(&self, encoder: &SupConModel, images: &Tensor) -> Tensor {
        encoder.encode(images, false)
    }
}

/// [`MethodParts::probe`] of a method whose probe reads its encoder on the image.
pub fn image_probe(_: &ProbeContext<'_>) -> Result<Box<dyn ProbeReading>, TrainError> {
    Ok(Box::new(ImageReading))
}

/// Where `context`'s method computes its loss: `pretrain.loss_backend` on the run's device.
pub fn loss_backend(context: &MethodContext<'_>) -> supcon_loss::Backend {
    let pretrain = &context.config.pretrain;
    pretrain
        .loss_backend
        .backend(context.device, pretrain.cuda_precision)
}

/// Across ranks a method whose loss needs the whole batch computes it on the gathered host
/// rows, with the `cpu` backend: any other `pretrain.loss_backend` is refused, saying `why`
/// the loss needs the gathered batch.
pub fn cpu_loss_across_ranks(context: &MethodContext<'_>, why: &str) -> Result<(), TrainError> {
    let ranks = context.comm.world_size();
    let backend = context.config.pretrain.loss_backend;
    if ranks > 1 && backend != crate::config::LossBackendKind::Cpu {
        return Err(TrainError::Config(format!(
            "pretrain.loss_backend `{}`: across {ranks} ranks {why}, on the cpu backend; set \
             --loss-backend cpu",
            backend.as_str()
        )));
    }
    Ok(())
}

/// `[batch, views, dim]` view of host rows laid out batch-major.
pub fn views_view(
    values: &[f32],
    batch: usize,
    views: usize,
    dim: usize,
) -> Result<ArrayView3<'_, f32>, TrainError> {
    ArrayView3::from_shape((batch, views, dim), values)
        .map_err(|e| TrainError::Shape(format!("{batch} × {views} × {dim} features: {e}")))
}

/// View `view` of every image of a batch tensor `[batch·views, C, H, W]` laid out batch-major
/// (the augmenter's order): `[batch, C, H, W]`.
pub fn select_view(images: &Tensor, views: usize, view: usize) -> Tensor {
    let size = images.size();
    let batch = size[0] / views as i64;
    images
        .view([batch, views as i64, size[1], size[2], size[3]])
        .select(1, view as i64)
}

/// A seed for the random choices of one batch (negative samples, BN shuffles) from the run's
/// seed, the epoch and the image indices of the step's whole batch (every rank's part): a
/// resumed run, and every rank of a data-parallel run, draws the same ones.
pub fn batch_seed(seed: u64, batch: &PreparedBatch) -> u64 {
    // FNV-1a over (epoch, indices): cheap, deterministic, and different for every batch.
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for word in std::iter::once(u64::from(batch.epoch))
        .chain(batch.global.indices.iter().map(|&i| i as u64))
    {
        for byte in word.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// `rows` random unit vectors of `dim` values (normalized Gaussian samples, so uniform on the
/// sphere), drawn from `seed`: MoCo's initial queue, InstDisc's initial memory bank.
pub fn random_unit_rows(seed: u64, rows: usize, dim: usize) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(rows * dim + 1);
    while values.len() < rows * dim {
        // Box–Muller: two uniforms in (0, 1] give two independent standard normals.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        values.push((radius * angle.cos()) as f32);
        values.push((radius * angle.sin()) as f32);
    }
    values.truncate(rows * dim);
    for row in values.chunks_exact_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    values
}
