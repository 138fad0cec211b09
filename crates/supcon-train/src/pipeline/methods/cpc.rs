//! CPC v2 on images (van den Oord et al. 2018; Hénaff et al. 2020): every image is cut into a
//! grid of overlapping patches, the online encoder + head embeds each patch, a context network
//! reads each column of the grid from the top and predicts the embeddings of the rows below;
//! each prediction must pick its true target among the embeddings of every patch of the batch
//! (`supcon_loss::cpc_loss`).
//!
//! What we adapted, for 28 × 28 images on two CPU cores (CPC v2 cuts 256 × 256 ImageNet crops
//! into 7 × 7 patches of 64 pixels with stride 32 and uses a masked-convolution context network
//! over the whole grid):
//! - patches of `[pretrain.cpc] patch` pixels every `stride` (10 and 6: a 4 × 4 grid
//!   overlapping by 4 pixels), from one augmented view of the image; CPC v2 augments each
//!   patch independently, we augment the image once;
//! - the context of row t in a column is a GRU over that column's rows 0..=t (CPC v1's
//!   recurrent summary, run per column), not a masked convolution over all columns;
//! - per-offset linear predictors `W_k` (offsets 1..=K, `offsets`), trained with the network;
//! - with `normalize` (the default) predictions and targets are unit vectors and τ = 0.1; CPC's
//!   raw dot products are `normalize = false` with τ = 1.
//!
//! The linear probe reads the encoder's features of every patch, averaged over the grid
//! ([`probe_features`]). The loss runs where `pretrain.loss_backend` says; across the ranks of
//! a data-parallel run (cpu backend) predictions and targets are gathered and each rank
//! back-propagates its own images' rows of the whole batch's gradient.

use supcon_loss::{CpcOp, CpcOptions, LossOp};
use supcon_models::{grid_positions, patch_grid, SupConModel};
use tch::nn::{self, ModuleT, VarStore, RNN};
use tch::{Device, Tensor};

use super::{ContrastiveMethod, MethodContext};
use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::config::CpcConfig;
use crate::dist::whole_batch_rows;
use crate::error::TrainError;
use crate::loss_bridge::backward_scalar;
use crate::pipeline::data::PreparedBatch;

/// Checkpoint group of the context network and the predictors.
pub const CONTEXT_GROUP: &str = "cpc_context";

/// The context network, the predictors, the grid and the loss options.
pub struct Cpc {
    comm: crate::dist::Comm,
    vs: VarStore,
    context: nn::GRU,
    predictors: Vec<nn::Linear>,
    patch: i64,
    stride: i64,
    loss: CpcOp,
    /// Where the loss runs (`pretrain.loss_backend` on the run's device).
    backend: supcon_loss::Backend,
    device: Device,
}

/// The method's parts for the registry ([`super::parts`]): its probe averages the patch grid.
pub(super) const PARTS: super::MethodParts = super::MethodParts {
    build,
    online_model: super::run_model,
    probe: |context| Ok(Box::new(CpcReading(context.config.pretrain.cpc.clone()))),
    own_groups: &[CONTEXT_GROUP],
};

pub(super) fn build(context: &MethodContext<'_>) -> Result<Box<dyn ContrastiveMethod>, TrainError> {
    let pretrain = &context.config.pretrain;
    let settings = &pretrain.cpc;
    super::cpu_loss_across_ranks(context, "CPC's loss contrasts the gathered batch's patches")?;
    let rows = grid_positions(
        context.image_size as i64,
        settings.patch as i64,
        settings.stride as i64,
    );
    if rows < 2 {
        return Err(TrainError::Config(format!(
            "pretrain.cpc: patches of {} pixels every {} make {rows} row(s) on {}-pixel images; \
             CPC needs at least 2 (a row to predict from and one to predict)",
            settings.patch, settings.stride, context.image_size
        )));
    }
    let dim = context.config.model.projection_dim;
    let vs = VarStore::new(context.device);
    let root = vs.root();
    let gru = nn::gru(
        &root / "gru",
        dim,
        dim,
        nn::RNNConfig {
            batch_first: true,
            ..Default::default()
        },
    );
    let predictors = (0..settings.offsets)
        .map(|k| {
            nn::linear(
                &root / format!("predict{k}"),
                dim,
                dim,
                nn::LinearConfig {
                    bias: false,
                    ..Default::default()
                },
            )
        })
        .collect();
    Ok(Box::new(Cpc {
        comm: context.comm.clone(),
        vs,
        context: gru,
        predictors,
        patch: settings.patch as i64,
        stride: settings.stride as i64,
        loss: CpcOp(
            CpcOptions::default()
                .with_temperature(pretrain.temperature())
                .with_normalize(settings.normalize),
        ),
        backend: super::loss_backend(context),
        device: context.device,
    }))
}

/// CPC's probe: the encoder's features of every patch of the grid, averaged
/// (`[N, feature_dim]`).
struct CpcReading(CpcConfig);

impl super::ProbeReading for CpcReading {
    fn features(&self, model: &SupConModel, images: &Tensor) -> Tensor {
        let n = images.size()[0];
        let (patches, _) = patch_grid(images, self.0.patch as i64, self.0.stride as i64);
        let features = model.encode(&patches, false);
        let dim = features.size()[1];
        features
            .view([n, -1, dim])
            .mean_dim([1i64].as_slice(), false, features.kind())
    }

    fn headless(&self) -> Option<&'static str> {
        Some("CPC's features average the patch grid; its head embeds patches, not images; embed the features instead")
    }
}

impl Cpc {
    /// Targets `[B·cols, rows, D]` (one sequence per image column, top to bottom) and the
    /// predictions `[B·cols, rows, K, D]` of the rows below, for `images`.
    fn predict(&self, online: &SupConModel, images: &Tensor) -> (Tensor, Tensor) {
        let n = images.size()[0];
        let (patches, (rows, cols)) = patch_grid(images, self.patch, self.stride);
        let embeddings = online.forward_t(&patches, true);
        let dim = embeddings.size()[1];
        let targets = embeddings
            .view([n, rows, cols, dim])
            .permute([0, 2, 1, 3])
            .contiguous()
            .view([n * cols, rows, dim]);
        let (contexts, _) = self.context.seq(&targets);
        let predictions = Tensor::stack(
            &self
                .predictors
                .iter()
                .map(|w| contexts.apply(w))
                .collect::<Vec<_>>(),
            2,
        );
        (targets, predictions)
    }
}

impl ContrastiveMethod for Cpc {
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        let images = batch.tensor(self.device);
        let (targets, predictions) = self.predict(online, &images);
        // The whole batch's sequences (image-major, so each rank's are consecutive), this
        // rank's in the graph.
        let per_image = predictions.size()[0] as usize / batch.indices.len().max(1);
        let first = batch.global.offset * per_image;
        let comm = &*self.comm;
        let predictions =
            whole_batch_rows(comm, &predictions, first, "all-gather of CPC's predictions")?;
        let targets = whole_batch_rows(comm, &targets, first, "all-gather of CPC's targets")?;
        let loss = self
            .loss
            .autograd(&(&predictions, &targets), self.backend)?;
        backward_scalar(&loss, 1.0)
    }

    fn trainable(&self) -> Vec<(String, Tensor)> {
        varstore_tensors(&self.vs)
            .into_iter()
            .map(|(name, t)| (format!("{CONTEXT_GROUP}.{name}"), t))
            .collect()
    }

    fn after_step(&mut self, _progress: f64) -> Result<(), TrainError> {
        Ok(())
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        vec![(CONTEXT_GROUP, varstore_tensors(&self.vs))]
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        checkpoint.load_into(CONTEXT_GROUP, &mut self.vs)
    }

    fn loss_backend(&self) -> &'static str {
        self.backend.name()
    }
}
