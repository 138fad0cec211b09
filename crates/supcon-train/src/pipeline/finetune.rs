//! SimCLR v2's fine-tuning stage (Chen et al. 2020b, §2): the pre-trained encoder and the first
//! `finetune.from_head_layer` layers of its projection head, topped by a new linear layer, all
//! trained with cross-entropy on the labeled training images (with few labels, the labeled
//! subset) and their augmentation. Data parallel, checkpointed and resumed like the CE stage,
//! whose training code ([`ClassifierTraining`]) it shares.

use std::path::Path;
use supcon_augment::Augmenter;
use supcon_data::Dataset;
use supcon_models::{FineTunedModel, SupConModel};
use tch::nn::VarStore;
use tch::Device;

use crate::checkpoint::{varstore_tensors, Checkpoint};
use crate::config::RunConfig;
use crate::dist::Comm;
use crate::error::TrainError;
use crate::pipeline::classifier::{ClassifierTraining, EndToEndClassifier};
use crate::pipeline::data::augment_pipeline;
use crate::pipeline::methods;

/// The fine-tuning stage's network and its training.
pub type FinetuneModel<'a> = EndToEndClassifier<'a, FineTunedModel>;

impl<'a> FinetuneModel<'a> {
    /// The network with the encoder and head layers of `pretrained` (a pre-training
    /// checkpoint of `config`'s model) and a new linear layer.
    // The arguments are the stage's independent inputs; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &RunConfig,
        pretrained: &Checkpoint,
        num_classes: usize,
        validation: &'a Dataset,
        image_size: usize,
        mean: &[f32],
        std: &[f32],
        device: Device,
        comm: Comm,
    ) -> Result<Self, TrainError> {
        let settings = config.finetune_settings();
        tch::manual_seed(config.seed as i64 ^ 0x33);
        let mut vs = VarStore::new(device);
        let model = FineTunedModel::new(
            &vs.root(),
            &methods::online_model(config),
            settings.from_head_layer,
            num_classes as i64,
        )?;
        copy_pretrained(config, pretrained, &mut vs, device)?;
        let pipeline = augment_pipeline(&settings.augment, image_size, mean, std)?;
        Ok(Self {
            training: ClassifierTraining::new(
                vs,
                &settings.optim,
                validation,
                Augmenter::new(augment_pipeline("none", image_size, mean, std)?, 0),
                config.eval.batch_size,
                device,
                comm,
            )?,
            model,
            augmenter: Augmenter::new(pipeline, config.seed ^ 0x5eed_0004),
        })
    }
}

/// Copies the encoder and the kept head layers of `pretrained` into `vs` (whose other
/// variables, `fc.*`, keep their fresh values). The checkpoint is first loaded whole into the
/// pre-training model, so a checkpoint of another kind or model is refused by name.
fn copy_pretrained(
    config: &RunConfig,
    pretrained: &Checkpoint,
    vs: &mut VarStore,
    device: Device,
) -> Result<(), TrainError> {
    pretrained.require_pretraining()?;
    let mut source = VarStore::new(device);
    SupConModel::new(&source.root(), &methods::online_model(config))?;
    pretrained.load_into("model", &mut source)?;
    let from = source.variables();
    tch::no_grad(|| -> Result<(), TrainError> {
        for (name, mut variable) in varstore_tensors(vs) {
            if name.starts_with("fc.") {
                continue;
            }
            let value = from.get(&name).ok_or_else(|| {
                TrainError::checkpoint(&pretrained.path, format!("has no {name} to fine-tune"))
            })?;
            variable.f_copy_(value)?;
        }
        Ok(())
    })
}

/// Loads a fine-tuned network from its stage's checkpoint (for the evaluation).
pub fn load_finetuned(
    config: &RunConfig,
    checkpoint: &Path,
    num_classes: usize,
    device: Device,
) -> Result<(VarStore, FineTunedModel), TrainError> {
    let checkpoint = Checkpoint::load(checkpoint)?;
    let mut vs = VarStore::new(device);
    let model = FineTunedModel::new(
        &vs.root(),
        &methods::online_model(config),
        config.finetune_settings().from_head_layer,
        num_classes as i64,
    )?;
    checkpoint.load_into("model", &mut vs)?;
    Ok((vs, model))
}
