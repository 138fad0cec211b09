//! CMC (Tian et al. 2019, "Contrastive Multiview Coding"): one encoder per view of a scene,
//! the same scene's embeddings in the two views as positives, the batch's other scenes as
//! negatives (`supcon_loss::cmc_loss`, both directions).
//!
//! The paper's views are modalities of one image (the L and ab channels of Lab colour, depth,
//! …), each with its own encoder. Fashion-MNIST is gray, so our second modality is the Sobel
//! gradient magnitude of the same augmented image (`supcon_models::sobel_magnitude`): it keeps
//! the shape and drops the shading, which is what a second view must do — share the scene, not
//! the pixels. View 0 (the image) goes through the online network, view 1 through this
//! method's own encoder + head (checkpoint group `cmc_view1`), trained by the same optimizer.
//! The linear probe reads both encoders' features concatenated, as CMC's does
//! ([`probe_features`]).
//!
//! The loss runs where `pretrain.loss_backend` says (`cpu`: host copies; `tch`:
//! `supcon_loss::tch_backend::cmc_loss_tensor` on the device). Across the ranks of a
//! data-parallel run (cpu backend) both views' embeddings are gathered, every rank computes the
//! loss of the whole batch and back-propagates the gradient of its own images' rows: what one
//! process computes on the global batch.

use supcon_loss::{Backend, CmcOp, CmcOptions, LossOp};
use supcon_models::{sobel_magnitude, SupConModel};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use super::{host_rows, ContrastiveMethod, MethodContext};
use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::config::{LossBackendKind, RunConfig};
use crate::dist::gather;
use crate::error::TrainError;
use crate::loss_bridge::{backward_from_host_all, backward_scalar};
use crate::pipeline::data::PreparedBatch;

/// Checkpoint group of the second view's encoder + head.
pub const VIEW1_GROUP: &str = "cmc_view1";

/// The second view's network and the loss options.
pub struct Cmc {
    comm: crate::dist::Comm,
    vs: VarStore,
    view1: SupConModel,
    loss: CmcOp,
    loss_backend: LossBackendKind,
    device: Device,
}

pub(super) fn build(context: &MethodContext<'_>) -> Result<Box<dyn ContrastiveMethod>, TrainError> {
    let pretrain = &context.config.pretrain;
    super::cpu_loss_across_ranks(context, "CMC's loss contrasts the gathered batch")?;
    let vs = VarStore::new(context.device);
    let view1 = SupConModel::new(&vs.root(), &view1_model(context.config))?;
    Ok(Box::new(Cmc {
        comm: context.comm.clone(),
        vs,
        view1,
        loss: CmcOp(CmcOptions::new(pretrain.temperature())),
        loss_backend: pretrain.loss_backend,
        device: context.device,
    }))
}

/// The second view's network: the online one's, reading the one-channel gradient magnitude.
fn view1_model(config: &RunConfig) -> supcon_models::ModelConfig {
    config.model.clone().with_in_channels(1)
}

/// The second view of `images` (normalized pixels `[N, C, H, W]`): their Sobel gradient
/// magnitude `[N, 1, H, W]`.
pub fn second_view(images: &Tensor) -> Tensor {
    sobel_magnitude(images)
}

/// The linear probe's features of `images` with a CMC encoder pair: both encoders' features,
/// concatenated (`[N, 2·feature_dim]`).
pub fn probe_features(view0: &SupConModel, view1: &SupConModel, images: &Tensor) -> Tensor {
    Tensor::cat(
        &[
            view0.encode(images, false),
            view1.encode(&second_view(images), false),
        ],
        1,
    )
}

/// Loads the second view's encoder + head of a CMC checkpoint (frozen), for the probe.
pub fn load_view1(
    config: &RunConfig,
    checkpoint: &Checkpoint,
    device: Device,
) -> Result<(VarStore, SupConModel), TrainError> {
    let mut vs = VarStore::new(device);
    let model = SupConModel::new(&vs.root(), &view1_model(config))?;
    checkpoint.load_into(VIEW1_GROUP, &mut vs)?;
    vs.freeze();
    Ok((vs, model))
}

impl ContrastiveMethod for Cmc {
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        let images = batch.tensor(self.device);
        let z0 = online.forward_t(&images, true);
        let z1 = self.view1.forward_t(&second_view(&images), true);
        if self.loss_backend == LossBackendKind::Tch {
            let loss = self.loss.tensor_fwd(&&Tensor::stack(&[&z0, &z1], 0))?;
            return backward_scalar(&loss, 1.0);
        }
        let (rows0, own, dim) = host_rows(&z0)?;
        let (rows1, _, _) = host_rows(&z1)?;
        let comm = &*self.comm;
        // [2, B, D] of the whole batch: every rank's view-0 rows, then every rank's view-1 rows.
        let all0 = gather(comm, &rows0, "all-gather of CMC's view 0")?;
        let all1 = gather(comm, &rows1, "all-gather of CMC's view 1")?;
        let global = all0.len() / dim.max(1);
        let views = ndarray::Array3::from_shape_vec((2, global, dim), [all0, all1].concat())
            .map_err(|e| TrainError::Shape(format!("CMC views: {e}")))?;
        let out = self.loss.run(Backend::Cpu, &views.view())?;
        // This rank's rows of the whole batch's gradient.
        let mine = batch.global.offset..batch.global.offset + own;
        let grad = |view: usize| -> Vec<f32> {
            out.grad
                .slice(ndarray::s![view, mine.clone(), ..])
                .iter()
                .copied()
                .collect()
        };
        backward_from_host_all(&[(&z0, &grad(0)), (&z1, &grad(1))])?;
        Ok(out.loss)
    }

    fn trainable(&self) -> Vec<(String, Tensor)> {
        varstore_tensors(&self.vs)
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| (format!("{VIEW1_GROUP}.{name}"), t))
            .collect()
    }

    fn after_step(&mut self) -> Result<(), TrainError> {
        Ok(())
    }

    fn statistics(&self) -> Vec<Tensor> {
        crate::dist::running_statistics(&self.vs)
    }

    fn checkpoint_groups(&self) -> Vec<(&'static str, Vec<(String, Tensor)>)> {
        vec![(VIEW1_GROUP, varstore_tensors(&self.vs))]
    }

    fn restore(&mut self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        checkpoint.load_into(VIEW1_GROUP, &mut self.vs)
    }

    fn loss_backend(&self) -> &'static str {
        self.loss_backend.as_str()
    }
}
