//! The checks of a resolved configuration, each error naming its key.

use super::presets::presets_of;
use super::{EvalSplit, Method, RunConfig};
use crate::error::TrainError;

impl RunConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |key: &str, why: String| Err(TrainError::Config(format!("{key}: {why}")));
        if !(0.0..1.0).contains(&self.data.validation_fraction) {
            return bad(
                "data.validation_fraction",
                format!("{} is not in [0, 1)", self.data.validation_fraction),
            );
        }
        super::DataSource::parse(&self.data)?;
        let method = super::methods::spec(self.pretrain.method);
        if !self.data.labels {
            if method.needs_labels {
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
        self.model
            .validate()
            .map_err(|e| TrainError::Config(format!("model: {e}")))?;
        let p = &self.pretrain;
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
        (method.settings)(p)?;
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
        if self.ce.standardize {
            return bad(
                "ce.standardize",
                "the baseline trains its encoder; standardization is the linear probe's \
                 (linear.standardize)"
                    .into(),
            );
        }
        for (name, stage_batch, optim) in [
            ("pretrain", p.batch_size, &p.optim),
            ("linear", self.linear.batch_size, &self.linear.optim),
            ("ce", self.ce.batch_size, &self.ce.optim),
        ] {
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
        }
        if self.eval.split == EvalSplit::Validation && self.data.validation_fraction == 0.0 {
            return bad(
                "eval.split",
                "`validation` needs data.validation_fraction > 0".into(),
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
