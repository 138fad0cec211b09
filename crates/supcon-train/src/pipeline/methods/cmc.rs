//! CMC (Tian et al. 2019, "Contrastive Multiview Coding"): one encoder per view of a scene,
//! the same scene's embeddings in the two views as positives, the batch's other scenes as
//! negatives (`supcon_loss::cmc_loss`, both directions).
//!
//! The paper's views are modalities of one image (the L and ab channels of Lab colour, depth,
//! …), each with its own encoder ([`Modalities`]). Colour images are split as the paper does:
//! L (one channel) and ab (two), from the augmented image's sRGB (`supcon_models::
//! lab_from_srgb`), each normalized with CMC's constants. Gray images (Fashion-MNIST) have no
//! colour to split, so there our second modality is the Sobel gradient magnitude of the same
//! augmented image (`supcon_models::sobel_magnitude`): it keeps the shape and drops the
//! shading, which is what a second view must do — share the scene, not the pixels. View 0 goes
//! through the online network (built for view 0's channels: [`online_model`]), view 1 through
//! this method's own encoder + head (checkpoint group `cmc_view1`), trained by the same
//! optimizer. The linear probe reads both encoders' features concatenated, as CMC's does
//! ([`probe_features`]).
//!
//! The loss runs where `pretrain.loss_backend` says (`cpu`: host copies; `tch`:
//! `supcon_loss::cmc_loss_tensor` on the device). Across the ranks of a
//! data-parallel run (cpu backend) both views' embeddings are gathered, every rank computes the
//! loss of the whole batch and back-propagates the gradient of its own images' rows: what one
//! process computes on the global batch.

use supcon_loss::{CmcOp, CmcOptions, LossOp};
use supcon_models::{lab_from_srgb, sobel_magnitude, ModelConfig, SupConModel};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use super::{ContrastiveMethod, MethodContext};
use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::config::RunConfig;
use crate::dist::whole_batch_rows;
use crate::error::TrainError;
use crate::loss_bridge::backward_scalar;
use crate::pipeline::data::PreparedBatch;

/// Checkpoint group of the second view's encoder + head.
pub const VIEW1_GROUP: &str = "cmc_view1";

/// The second view's network and the loss options.
pub struct Cmc {
    comm: crate::dist::Comm,
    vs: VarStore,
    view1: SupConModel,
    modalities: Modalities,
    loss: CmcOp,
    /// Where the loss runs (`pretrain.loss_backend` on the run's device).
    backend: supcon_loss::Backend,
    device: Device,
}

/// The method's parts for the registry ([`super::parts`]): its online network reads view 0's
/// channels, its probe both encoders.
pub(super) const PARTS: super::MethodParts = super::MethodParts {
    build,
    online_model,
    probe: probe_reading,
    own_groups: &[VIEW1_GROUP],
};

pub(super) fn build(context: &MethodContext<'_>) -> Result<Box<dyn ContrastiveMethod>, TrainError> {
    let pretrain = &context.config.pretrain;
    super::cpu_loss_across_ranks(context, "CMC's loss contrasts the gathered batch")?;
    let vs = VarStore::new(context.device);
    let view1 = SupConModel::new(&vs.root(), &view1_model(context.config))?;
    Ok(Box::new(Cmc {
        comm: context.comm.clone(),
        vs,
        view1,
        modalities: Modalities::of(context.config.model.in_channels, context.mean, context.std),
        loss: CmcOp(CmcOptions::new(pretrain.temperature())),
        backend: super::loss_backend(context),
        device: context.device,
    }))
}

/// How CMC cuts an image into its two views.
#[derive(Clone, Debug, PartialEq)]
pub enum Modalities {
    /// Colour (3 channels): Lab's L and ab, the paper's split. `mean`/`std` are the pixels'
    /// normalization, undone to recover sRGB in [0, 1].
    LabSplit { mean: Vec<f32>, std: Vec<f32> },
    /// Any other channel count: the image itself and its Sobel gradient magnitude (ours).
    ImageAndEdges,
}

/// CMC's normalization of L, a and b (its `RGB2Lab` transform's constants): (mean, std).
const LAB_NORMALIZATION: [(f64, f64); 3] = [
    (50.0, 50.0),
    ((-86.183 + 98.233) / 2.0, (86.183 + 98.233) / 2.0),
    ((-107.857 + 94.478) / 2.0, (107.857 + 94.478) / 2.0),
];

impl Modalities {
    /// The split of `in_channels`-channel images normalized with `mean`/`std`.
    pub fn of(in_channels: i64, mean: &[f32], std: &[f32]) -> Self {
        if in_channels == 3 {
            Modalities::LabSplit {
                mean: mean.to_vec(),
                std: std.to_vec(),
            }
        } else {
            Modalities::ImageAndEdges
        }
    }

    /// The input channels of the two views' encoders for `in_channels`-channel images.
    pub fn channels(in_channels: i64) -> (i64, i64) {
        if in_channels == 3 {
            (1, 2)
        } else {
            (in_channels, 1)
        }
    }

    /// The two views of normalized images `[N, C, H, W]`.
    pub fn split(&self, images: &Tensor) -> (Tensor, Tensor) {
        match self {
            Modalities::ImageAndEdges => (images.shallow_clone(), sobel_magnitude(images)),
            Modalities::LabSplit { mean, std } => {
                let (kind, device) = (images.kind(), images.device());
                let per_channel = |values: Vec<f32>| {
                    Tensor::from_slice(&values)
                        .to_kind(kind)
                        .to_device(device)
                        .view([1, -1, 1, 1])
                };
                let rgb = images * per_channel(std.clone()) + per_channel(mean.clone());
                let lab = lab_from_srgb(&rgb);
                let (lab_mean, lab_std): (Vec<f32>, Vec<f32>) = LAB_NORMALIZATION
                    .iter()
                    .map(|&(m, s)| (m as f32, s as f32))
                    .unzip();
                let lab = (lab - per_channel(lab_mean)) / per_channel(lab_std);
                (lab.narrow(1, 0, 1), lab.narrow(1, 1, 2))
            }
        }
    }
}

/// The online network of a CMC run: the configured model, reading view 0's channels (L of a
/// colour image; a gray image itself).
fn online_model(config: &RunConfig) -> ModelConfig {
    let (view0, _) = Modalities::channels(config.model.in_channels);
    config.model.clone().with_in_channels(view0)
}

/// The second view's network: the configured model, reading view 1's channels.
fn view1_model(config: &RunConfig) -> ModelConfig {
    let (_, view1) = Modalities::channels(config.model.in_channels);
    config.model.clone().with_in_channels(view1)
}

/// CMC's probe: both views' encoders on their channels of the image, their features
/// concatenated (`[N, 2·feature_dim]`).
struct CmcReading {
    _vs: VarStore,
    view1: SupConModel,
    modalities: Modalities,
}

impl super::ProbeReading for CmcReading {
    fn features(&self, view0: &SupConModel, images: &Tensor) -> Tensor {
        let (first, second) = self.modalities.split(images);
        Tensor::cat(
            &[
                view0.encode(&first, false),
                self.view1.encode(&second, false),
            ],
            1,
        )
    }

    fn width(&self, view0: &SupConModel) -> i64 {
        view0.feature_dim() + self.view1.feature_dim()
    }

    fn headless(&self) -> Option<&'static str> {
        Some("CMC's features concatenate two encoders, each with its own head; embed the features instead")
    }
}

/// Loads the second view's encoder + head of a CMC checkpoint (frozen), for the probe.
fn probe_reading(
    context: &super::ProbeContext<'_>,
) -> Result<Box<dyn super::ProbeReading>, TrainError> {
    let mut vs = VarStore::new(context.device);
    let view1 = SupConModel::new(&vs.root(), &view1_model(context.config))?;
    context.checkpoint.load_into(VIEW1_GROUP, &mut vs)?;
    vs.freeze();
    Ok(Box::new(CmcReading {
        _vs: vs,
        view1,
        modalities: Modalities::of(context.config.model.in_channels, context.mean, context.std),
    }))
}

impl ContrastiveMethod for Cmc {
    fn forward_backward(
        &mut self,
        online: &SupConModel,
        batch: &PreparedBatch,
    ) -> Result<f64, TrainError> {
        let (first, second) = self.modalities.split(&batch.tensor(self.device));
        let z0 = online.forward_t(&first, true);
        let z1 = self.view1.forward_t(&second, true);
        // [2, B, D] of the whole batch, this rank's rows in the graph.
        let comm = &*self.comm;
        let first = batch.global.offset;
        let views = Tensor::stack(
            &[
                whole_batch_rows(comm, &z0, first, "all-gather of CMC's view 0")?,
                whole_batch_rows(comm, &z1, first, "all-gather of CMC's view 1")?,
            ],
            0,
        );
        let loss = self.loss.autograd(&&views, self.backend)?;
        backward_scalar(&loss, 1.0)
    }

    fn trainable(&self) -> Vec<(String, Tensor)> {
        varstore_tensors(&self.vs)
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| (format!("{VIEW1_GROUP}.{name}"), t))
            .collect()
    }

    fn after_step(&mut self, _progress: f64) -> Result<(), TrainError> {
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
        self.backend.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A colour image splits into L (one channel) and ab (two), normalized with CMC's
    /// constants: white is L = 100, a = b = 0 before them; a gray image into itself and its
    /// edges.
    #[test]
    fn colour_images_split_into_l_and_ab_gray_ones_into_image_and_edges() {
        let (mean, std) = (vec![0.5f32; 3], vec![0.25f32; 3]);
        // One white pixel, normalized: (1 − 0.5) / 0.25 = 2.
        let white = Tensor::full([1, 3, 1, 1], 2.0, (tch::Kind::Float, Device::Cpu));
        let (l, ab) = Modalities::of(3, &mean, &std).split(&white);
        assert_eq!((l.size(), ab.size()), (vec![1, 1, 1, 1], vec![1, 2, 1, 1]));
        let value = |t: &Tensor, c: i64| t.get(0).get(c).double_value(&[0, 0]);
        assert!((value(&l, 0) - 1.0).abs() < 1e-4, "L {}", value(&l, 0));
        let [(a_mean, a_std), (b_mean, b_std)] = [LAB_NORMALIZATION[1], LAB_NORMALIZATION[2]];
        assert!((value(&ab, 0) + a_mean / a_std).abs() < 1e-3);
        assert!((value(&ab, 1) + b_mean / b_std).abs() < 1e-3);
        assert_eq!(Modalities::channels(3), (1, 2));

        let gray = Tensor::rand([2, 1, 5, 5], (tch::Kind::Float, Device::Cpu));
        let (image, edges) = Modalities::of(1, &[0.5], &[0.25]).split(&gray);
        assert_eq!(image, gray);
        assert_eq!(edges.size(), vec![2, 1, 5, 5]);
        assert_eq!(Modalities::channels(1), (1, 1));
    }
}
