//! The checks of a resolved configuration, each error naming its key.

use super::presets::presets_of;
use super::{EvalSplit, Method, RunConfig};
use crate::error::TrainError;

impl RunConfig {
    /// `[finetune]`: a head prefix the model has, of an encoder that reads the image.
    fn validate_finetune(&self) -> Result<(), TrainError> {
        let Some(finetune) = &self.finetune else {
            return Ok(());
        };
        let model = super::methods::spec(self.pretrain.method);
        let depth = self.model.head.depth();
        if finetune.from_head_layer > depth {
            return Err(TrainError::Config(format!(
                "finetune.from_head_layer: {} is beyond the projection head's {depth} layer(s) \
                 (model.head = \"{}\"): use 0 (the encoder) to {depth}",
                finetune.from_head_layer,
                self.model.head.as_str()
            )));
        }
        if !model.fine_tunable {
            return Err(TrainError::Config(format!(
                "[finetune]: {}'s probe does not read one encoder on the image, so there is no \
                 single network to fine-tune; drop [finetune] or pre-train another method",
                self.pretrain.method.as_str()
            )));
        }
        Ok(())
    }

    /// `[distill]`: a positive τ and a non-negative weight.
    fn validate_distill(&self) -> Result<(), TrainError> {
        let Some(distill) = &self.distill else {
            return Ok(());
        };
        let bad = |key: &str, why: String| Err(TrainError::Config(format!("{key}: {why}")));
        let t = distill.temperature;
        if !(t.is_finite() && t > 0.0) {
            return bad(
                "distill.temperature",
                format!("{t} is not a positive number"),
            );
        }
        let w = distill.labeled_weight;
        if !(w.is_finite() && w >= 0.0) {
            return bad(
                "distill.labeled_weight",
                format!("{w} is not a number >= 0"),
            );
        }
        Ok(())
    }

    /// What the training command `command` (`train`, `pretrain`, `linear`, ...) needs beyond
    /// [`RunConfig::validate`], checked before its run folder exists: the whole recipe's
    /// ([`RunConfig::validate_whole_recipe`]) for `train`, the final evaluation's for every
    /// command but `pretrain`.
    pub fn validate_for_command(&self, command: &str) -> Result<(), TrainError> {
        if command == "train" {
            self.validate_whole_recipe()?;
        }
        if command != "pretrain" {
            self.validate_final_evaluation()?;
        }
        Ok(())
    }

    /// What `supcon train` (the whole recipe) needs beyond [`RunConfig::validate`]: its
    /// distillation's teacher is the run's own fine-tuned network, so `[distill]` needs
    /// `[finetune]` (`supcon distill --teacher` takes another run's instead).
    pub fn validate_whole_recipe(&self) -> Result<(), TrainError> {
        if self.distill.is_some() && self.finetune.is_none() {
            return Err(TrainError::Config(
                "[distill] in `supcon train` distils the run's fine-tuned network: add \
                 [finetune] (or run `supcon distill --teacher <run>`)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// What a command that ends in the final evaluation (every one but `pretrain`) needs
    /// beyond [`RunConfig::validate`]: shards evaluated on the test split need the test split's
    /// shards, checked before training rather than after it.
    pub fn validate_final_evaluation(&self) -> Result<(), TrainError> {
        let labeled = self.data.labeled()?;
        if matches!(
            super::DataSource::parse(&labeled)?,
            super::DataSource::Shards(_)
        ) && self.eval.split == EvalSplit::Test
            && labeled.test_path.is_none()
        {
            return bad(
                "data.test_path",
                "data.dataset = \"shards\" with eval.split = \"test\" needs the test split's \
                 shards, e.g. 'dir/test-{000000..000009}.tar' (or eval.split = \"validation\")"
                    .into(),
            );
        }
        Ok(())
    }

    /// The few-label keys: one of the two, in range, on a labeled training set.
    fn validate_label_quota(&self) -> Result<(), TrainError> {
        let Some(quota) = self.data.label_quota()? else {
            return Ok(());
        };
        let key = quota.setting();
        let bad = |why: String| Err(TrainError::Config(format!("{key}: {why}")));
        match quota {
            supcon_data::LabelQuota::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                return bad(format!(
                    "{f} is not in (0, 1]: e.g. 0.01 for 1 % of the labels"
                ));
            }
            supcon_data::LabelQuota::PerClass(0) => {
                return bad("0 leaves every class without a labeled image: use 1 or more".into());
            }
            _ => {}
        }
        if !self.data.labels {
            return bad(
                "the training images have no labels (data.labels = false) to keep a few of; \
                 point data.dataset at a labeled training set"
                    .into(),
            );
        }
        Ok(())
    }

    /// Rejects values that cannot work, naming the key: the data, stage 1's method, the
    /// stages' batches and optimizers, the evaluation, in that order.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.validate_sizes()?;
        self.validate_data()?;
        self.model
            .validate()
            .map_err(|e| TrainError::Config(format!("model: {e}")))?;
        self.validate_method()?;
        self.validate_pretrain_values()?;
        if self.ce.standardize {
            return bad(
                "ce.standardize",
                "the baseline trains its encoder; standardization is the linear probe's \
                 (linear.standardize)"
                    .into(),
            );
        }
        self.validate_finetune()?;
        self.validate_distill()?;
        self.validate_stage_optimizers()?;
        self.validate_eval()
    }

    /// `[data]`: the validation split, the few-label keys, the source, and labels where the
    /// method needs them.
    fn validate_data(&self) -> Result<(), TrainError> {
        if !(0.0..1.0).contains(&self.data.validation_fraction) {
            return bad(
                "data.validation_fraction",
                format!("{} is not in [0, 1)", self.data.validation_fraction),
            );
        }
        self.validate_label_quota()?;
        super::DataSource::parse(&self.data)?;
        if !self.data.labels {
            if super::methods::spec(self.pretrain.method).needs_labels {
                return bad(
                    "data.labels",
                    format!(
                        "{} needs labels; train a self-supervised method ({}) on unlabeled images",
                        self.pretrain.method.as_str(),
                        Method::self_supervised().join(", ")
                    ),
                );
            }
            super::DataSource::parse(&self.data.labeled()?)?;
        }
        Ok(())
    }

    /// Stage 1 against its method's requirements (`config::methods::spec`): the batch, the
    /// views, the label-aware queue, the loss backend, multi-crop and the method's own table.
    fn validate_method(&self) -> Result<(), TrainError> {
        let p = &self.pretrain;
        let method = super::methods::spec(p.method);
        if p.batch_size < 2 {
            return bad("pretrain.batch_size", format!("{} < 2", p.batch_size));
        }
        let name = p.method.as_str();
        // `--method X` on another method's preset lands here first: name the fix.
        let fix = |views: usize| {
            let presets = presets_of(p.method);
            let start = match presets.as_slice() {
                [] => String::new(),
                names => format!(", or start from --preset {}", names.join(" / ")),
            };
            format!("pass --views {views}{start}")
        };
        if p.views < method.min_views {
            return bad(
                "pretrain.views",
                format!(
                    "{name} needs at least {} views, got {}: {}",
                    method.min_views,
                    p.views,
                    fix(method.min_views)
                ),
            );
        }
        if let Some(max) = method.max_views.filter(|&max| p.views > max) {
            return bad(
                "pretrain.views",
                format!("{name} uses {max} view(s), got {}: {}", p.views, fix(max)),
            );
        }
        let with = |has: fn(&super::methods::MethodSpec) -> bool| {
            Method::all()
                .filter(|&m| has(&super::methods::spec(m)))
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !method.label_queue && p.queue > 0 {
            return bad(
                "pretrain.queue",
                format!(
                    "the label-aware queue is for {}; {name} has its own settings in [pretrain.{name}]",
                    with(|m| m.label_queue)
                ),
            );
        }
        if !method.loss_backends.contains(&p.loss_backend) {
            let names: Vec<&str> = method.loss_backends.iter().map(|b| b.as_str()).collect();
            return bad(
                "pretrain.loss_backend",
                format!(
                    "supcon-loss has no `{}` backend for {name}'s loss: use one of {} (`tch` runs on the run's device, GPU included)",
                    p.loss_backend.as_str(),
                    names.join(", ")
                ),
            );
        }
        if p.multicrop.local_views > 0 && !method.multicrop {
            return bad(
                "pretrain.multicrop.local_views",
                format!("multi-crop is for {}, not {name}", with(|m| m.multicrop)),
            );
        }
        if p.multicrop.local_views > 0 && p.multicrop.local_size == 0 {
            return bad("pretrain.multicrop.local_size", "must be at least 1".into());
        }
        (method.settings)(p)
    }

    /// Stage 1's numbers: τ and the label-aware queue's momentum.
    fn validate_pretrain_values(&self) -> Result<(), TrainError> {
        let p = &self.pretrain;
        let t = p.temperature();
        if !(t.is_finite() && t > 0.0) {
            return bad(
                "pretrain.temperature",
                format!("{t} is not a positive number"),
            );
        }
        if !(0.0..1.0).contains(&p.queue_momentum) {
            return bad(
                "pretrain.queue_momentum",
                format!("{} is not in [0, 1)", p.queue_momentum),
            );
        }
        if p.first_view_augment.is_some() {
            if p.views < 2 {
                return bad(
                    "pretrain.first_view_augment",
                    format!(
                        "makes view 0 only, and pretrain.views is {}: with one view set \
                         pretrain.augment",
                        p.views
                    ),
                );
            }
            if p.multicrop.local_views > 0 {
                return bad(
                    "pretrain.first_view_augment",
                    "not with multi-crop (its crop groups have their own pipelines)".into(),
                );
            }
        }
        Ok(())
    }

    /// Every stage's batch size and optimizer (lr, momentum, weight decay).
    fn validate_stage_optimizers(&self) -> Result<(), TrainError> {
        let p = &self.pretrain;
        let finetune = self
            .finetune
            .as_ref()
            .map(|f| ("finetune", f.batch_size, &f.optim));
        let distill = self
            .distill
            .as_ref()
            .map(|d| ("distill", d.batch_size, &d.optim));
        for (name, stage_batch, optim) in [
            ("pretrain", p.batch_size, &p.optim),
            ("linear", self.linear.batch_size, &self.linear.optim),
            ("ce", self.ce.batch_size, &self.ce.optim),
        ]
        .into_iter()
        .chain(finetune)
        .chain(distill)
        {
            if stage_batch == 0 {
                return bad(&format!("{name}.batch_size"), "must be at least 1".into());
            }
            if !(optim.lr.is_finite() && optim.lr > 0.0) {
                return bad(
                    &format!("{name}.optim.lr"),
                    format!("{} is not positive", optim.lr),
                );
            }
            if !(0.0..1.0).contains(&optim.momentum) {
                return bad(
                    &format!("{name}.optim.momentum"),
                    format!("{} is not in [0, 1)", optim.momentum),
                );
            }
            if optim.weight_decay.is_nan() || optim.weight_decay < 0.0 {
                return bad(
                    &format!("{name}.optim.weight_decay"),
                    format!("{} is negative", optim.weight_decay),
                );
            }
            validate_schedule(name, optim)?;
        }
        Ok(())
    }

    /// `[eval]` and `[checkpoint]`.
    fn validate_eval(&self) -> Result<(), TrainError> {
        if self.eval.split == EvalSplit::Validation && self.data.validation_fraction == 0.0 {
            return bad(
                "eval.split",
                "`validation` needs data.validation_fraction > 0".into(),
            );
        }
        let t = self.eval.knn_temperature;
        if !(t.is_finite() && t > 0.0) {
            return bad(
                "eval.knn_temperature",
                format!("{t} is not a positive number"),
            );
        }
        if self.eval.knn_k == 0 {
            return bad("eval.knn_k", "must be at least 1".into());
        }
        if self.eval.batch_size == 0 {
            return bad("eval.batch_size", "must be at least 1".into());
        }
        if self.checkpoint.log_every_steps == 0 {
            return bad("checkpoint.log_every_steps", "must be at least 1".into());
        }
        Ok(())
    }
}

/// A configuration error naming `key` and `why`.
fn bad(key: &str, why: String) -> Result<(), TrainError> {
    Err(TrainError::Config(format!("{key}: {why}")))
}

/// A stage's schedule numbers: a decay factor ≥ 0 (0: cosine down to 0) and a positive trust
/// coefficient (a negative one would turn the learning rate negative), a warm-up start within
/// [0, 1] of the rate, and a warm-up length that is a number of epochs.
fn validate_schedule(stage: &str, optim: &super::OptimConfig) -> Result<(), TrainError> {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !(optim.lr_decay_rate.is_finite() && optim.lr_decay_rate >= 0.0) {
        return bad(
            &format!("{stage}.optim.lr_decay_rate"),
            format!("{} is not a number >= 0", optim.lr_decay_rate),
        );
    }
    if !positive(optim.lars_eta) {
        return bad(
            &format!("{stage}.optim.lars_eta"),
            format!("{} is not a positive number", optim.lars_eta),
        );
    }
    if !(0.0..=1.0).contains(&optim.warmup_from_fraction) {
        return bad(
            &format!("{stage}.optim.warmup_from_fraction"),
            format!("{} is not in [0, 1]", optim.warmup_from_fraction),
        );
    }
    if let Some(w) = optim
        .warmup_epochs
        .filter(|w| !(w.is_finite() && *w >= 0.0))
    {
        return bad(
            &format!("{stage}.optim.warmup_epochs"),
            format!("{w} is not a number of epochs >= 0"),
        );
    }
    Ok(())
}
