//! SGD with momentum and weight decay, LARS, and the per-iteration learning-rate schedule.
//!
//! The optimizer is written here on tensors (under `no_grad`) rather than taken from
//! `tch::nn::Sgd` because its state — one momentum buffer per parameter — must be saved in a
//! checkpoint and restored for an exact resume, which tch's optimizers do not expose.
//!
//! SGD follows PyTorch's `torch.optim.SGD` (dampening 0, no Nesterov):
//! `g ← ∇p + wd·p`, `b ← μ·b + g` (`b ← g` on the first step), `p ← p − lr·b`.
//! LARS (You et al. 2017) scales the step of each weight tensor by the trust ratio
//! `η·‖p‖ / (‖∇p‖ + wd·‖p‖)`; biases and BatchNorm parameters (1-D tensors) keep plain SGD
//! without weight decay, as in the common LARS wrappers.

use std::collections::BTreeMap;
use tch::Tensor;

use crate::config::{OptimConfig, OptimizerKind, ScheduleKind};
use crate::error::TrainError;

/// The learning rate at every iteration of a stage.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    base_lr: f64,
    kind: ScheduleKind,
    warmup_steps: u64,
    warmup_from: f64,
    total_steps: u64,
    steps_per_epoch: u64,
    decay_epochs: Vec<u32>,
    decay_rate: f64,
}

impl LrSchedule {
    /// The schedule of `config` for a stage of `epochs` epochs of `steps_per_epoch` steps at
    /// batch size `batch_size` (which decides the default warm-up).
    pub fn new(config: &OptimConfig, epochs: u32, steps_per_epoch: u64, batch_size: usize) -> Self {
        let warmup_epochs = config.warmup_epochs.unwrap_or(if batch_size > 256 {
            // SupContrast warms up for 10 epochs when batch > 256; never more than a tenth of a
            // short run.
            (f64::from(epochs) / 10.0).min(10.0)
        } else {
            0.0
        });
        let warmup_steps = (warmup_epochs.max(0.0) * steps_per_epoch as f64).round() as u64;
        let total_steps = u64::from(epochs) * steps_per_epoch;
        Self {
            base_lr: config.lr,
            kind: config.schedule,
            warmup_steps: warmup_steps.min(total_steps),
            warmup_from: config.lr * config.warmup_from_fraction,
            total_steps,
            steps_per_epoch: steps_per_epoch.max(1),
            decay_epochs: config.lr_decay_epochs.clone(),
            decay_rate: config.lr_decay_rate,
        }
    }

    /// Number of warm-up steps.
    pub fn warmup_steps(&self) -> u64 {
        self.warmup_steps
    }

    /// The learning rate of optimizer step `step` (0-based, global within the stage).
    pub fn lr(&self, step: u64) -> f64 {
        let after_warmup = self.scheduled(self.warmup_steps);
        if step < self.warmup_steps {
            // Linear warm-up towards the value the schedule has where the warm-up ends.
            let t = (step + 1) as f64 / self.warmup_steps as f64;
            return self.warmup_from + t * (after_warmup - self.warmup_from);
        }
        self.scheduled(step)
    }

    fn scheduled(&self, step: u64) -> f64 {
        match self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Cosine => {
                let eta_min = self.base_lr * self.decay_rate.powi(3);
                let progress = if self.total_steps == 0 {
                    0.0
                } else {
                    step as f64 / self.total_steps as f64
                };
                eta_min
                    + (self.base_lr - eta_min) * (1.0 + (std::f64::consts::PI * progress).cos())
                        / 2.0
            }
            ScheduleKind::Step => {
                let epoch = step / self.steps_per_epoch;
                let passed = self
                    .decay_epochs
                    .iter()
                    .filter(|&&e| u64::from(e) <= epoch)
                    .count();
                self.base_lr * self.decay_rate.powi(passed as i32)
            }
        }
    }
}

/// SGD / LARS over named parameters, with momentum buffers that can be saved and restored.
pub struct Optimizer {
    kind: OptimizerKind,
    momentum: f64,
    weight_decay: f64,
    lars_eta: f64,
    params: Vec<(String, Tensor)>,
    buffers: BTreeMap<String, Tensor>,
}

impl Optimizer {
    /// An optimizer over `params` (name, parameter); parameters without `requires_grad` are
    /// ignored. Names are what the momentum buffers are saved under.
    pub fn new(config: &OptimConfig, params: Vec<(String, Tensor)>) -> Self {
        let mut params: Vec<(String, Tensor)> = params
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            kind: config.optimizer,
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            lars_eta: config.lars_eta,
            params,
            buffers: BTreeMap::new(),
        }
    }

    /// The parameters, sorted by name.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// One update with learning rate `lr`. Parameters without a gradient are skipped.
    pub fn step(&mut self, lr: f64) {
        self.step_except(lr, |_| false);
    }

    /// [`Optimizer::step`] leaving the parameters whose name `frozen` accepts untouched (no
    /// update, no weight decay, no momentum), as PyTorch does for a parameter whose gradient
    /// is `None`.
    pub fn step_except(&mut self, lr: f64, frozen: impl Fn(&str) -> bool) {
        tch::no_grad(|| {
            for (name, p) in &mut self.params {
                let grad = p.grad();
                if !grad.defined() || frozen(name) {
                    continue;
                }
                let is_vector = p.dim() <= 1;
                let decay = match self.kind {
                    OptimizerKind::Lars if is_vector => 0.0,
                    _ => self.weight_decay,
                };
                let mut d_p = if decay != 0.0 {
                    grad.shallow_clone() + &*p * decay
                } else {
                    grad.shallow_clone()
                };
                if self.kind == OptimizerKind::Lars && !is_vector {
                    let p_norm = p.norm().double_value(&[]);
                    let g_norm = grad.norm().double_value(&[]);
                    let denom = g_norm + self.weight_decay * p_norm;
                    if p_norm > 0.0 && denom > 0.0 {
                        d_p *= self.lars_eta * p_norm / denom;
                    }
                }
                if self.momentum != 0.0 {
                    let buf = match self.buffers.get_mut(name.as_str()) {
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(self.momentum).g_add_(&d_p);
                            buf.shallow_clone()
                        }
                        None => {
                            let buf = d_p.detach().copy();
                            self.buffers.insert(name.clone(), buf.shallow_clone());
                            buf
                        }
                    };
                    d_p = buf;
                }
                let _ = p.g_add_(&(d_p * (-lr)));
            }
        });
    }

    /// The momentum buffers as (name, tensor), for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.buffers
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect()
    }

    /// Restores momentum buffers saved by [`Optimizer::state`]; every name must be one of the
    /// parameters and every shape must match.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let mut buffers = BTreeMap::new();
        for (name, tensor) in state {
            let param = self
                .params
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| p)
                .ok_or_else(|| {
                    TrainError::Shape(format!(
                        "optimizer state names `{name}`, which is not a trainable parameter"
                    ))
                })?;
            if param.size() != tensor.size() {
                return Err(TrainError::Shape(format!(
                    "optimizer state `{name}` has shape {:?}, the parameter {:?}",
                    tensor.size(),
                    param.size()
                )));
            }
            let buf = tensor.to_device(param.device()).to_kind(param.kind());
            buffers.insert(name, buf);
        }
        self.buffers = buffers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    fn optim(kind: ScheduleKind) -> OptimConfig {
        let mut c = RunConfig::preset("quick-cpu").unwrap().pretrain.optim;
        c.schedule = kind;
        c.lr = 1.0;
        c.warmup_epochs = Some(1.0);
        c.lr_decay_epochs = vec![2, 3];
        c
    }

    #[test]
    fn warmup_rises_linearly_then_cosine_decays_to_eta_min() {
        let s = LrSchedule::new(&optim(ScheduleKind::Cosine), 4, 10, 128);
        assert_eq!(s.warmup_steps(), 10);
        assert!((s.lr(0) - (0.01 + 0.1 * (s.lr(10) - 0.01))).abs() < 1e-12);
        assert!(s.lr(0) < s.lr(5) && s.lr(5) < s.lr(9));
        assert!((s.lr(9) - s.lr(10)).abs() < 1e-12);
        // One step before the end: η_min + (lr − η_min)·(1 + cos(π·39/40))/2 ≈ 2.54e-3.
        let last = s.lr(39);
        assert!(last > 1e-3 && last < 3e-3, "{last}");
    }

    #[test]
    fn step_schedule_decays_at_the_named_epochs_and_default_warmup_needs_big_batches() {
        let mut c = optim(ScheduleKind::Step);
        c.warmup_epochs = None;
        let s = LrSchedule::new(&c, 4, 10, 256);
        assert_eq!(s.warmup_steps(), 0);
        assert_eq!(s.lr(19), 1.0);
        assert!((s.lr(20) - 0.1).abs() < 1e-12);
        assert!((s.lr(35) - 0.01).abs() < 1e-12);
        let s = LrSchedule::new(&c, 100, 10, 1024);
        assert_eq!(s.warmup_steps(), 100);
    }

    #[test]
    fn sgd_matches_pytorch_momentum_rule_and_state_round_trips() {
        let mut c = optim(ScheduleKind::Constant);
        c.momentum = 0.9;
        c.weight_decay = 0.1;
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(&c, vec![("w".into(), p.shallow_clone())]);
        let mut expected = [1.0f64, -2.0];
        let mut buf = [0.0f64; 2];
        for step in 0..3 {
            opt.zero_grad();
            let loss = (&p * &p).sum(tch::Kind::Float);
            loss.backward();
            opt.step(0.5);
            for i in 0..2 {
                let g = 2.0 * expected[i] + 0.1 * expected[i];
                buf[i] = if step == 0 { g } else { 0.9 * buf[i] + g };
                expected[i] -= 0.5 * buf[i];
            }
        }
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        for i in 0..2 {
            assert!(
                (f64::from(got[i]) - expected[i]).abs() < 1e-4,
                "{got:?} {expected:?}"
            );
        }
        let state = opt.state();
        assert_eq!(state.len(), 1);
        let mut other = Optimizer::new(&c, vec![("w".into(), p.shallow_clone())]);
        other.load_state(state).unwrap();
        assert_eq!(other.state()[0].1.size(), vec![2]);
        let bad = other.load_state(vec![("v".into(), Tensor::zeros([2], tch::kind::FLOAT_CPU))]);
        assert!(bad.unwrap_err().to_string().contains("`v`"));
    }

    /// One LARS run over a matrix `w` (loss `scale·‖w‖²/2`) and a bias `b` (loss `b·[1, 2]`).
    fn lars_run(
        momentum: f64,
        weight_decay: f64,
        scale: f64,
        steps: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut c = optim(ScheduleKind::Constant);
        c.optimizer = OptimizerKind::Lars;
        c.lars_eta = 0.02;
        c.momentum = momentum;
        c.weight_decay = weight_decay;
        let w = Tensor::from_slice(&[3.0f32, 4.0])
            .reshape([1, 2])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32, -1.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(
            &c,
            vec![
                ("w".into(), w.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
        );
        let direction = Tensor::from_slice(&[1.0f32, 2.0]);
        for _ in 0..steps {
            opt.zero_grad();
            let loss = (&w * &w).sum(tch::Kind::Float) * (scale / 2.0)
                + (&b * &direction).sum(tch::Kind::Float);
            loss.backward();
            opt.step(0.5);
        }
        let values = |t: &Tensor| Vec::<f32>::try_from(&t.detach().flatten(0, -1)).unwrap();
        (values(&w), values(&b))
    }

    #[test]
    fn lars_scales_matrix_updates_by_the_trust_ratio_and_leaves_vectors_plain() {
        // ∇w = w, d = (1 + wd)·w, trust ratio η‖w‖/(‖w‖ + wd‖w‖) = η/(1 + wd): every step
        // multiplies w by (1 − lr·η), whatever the weight decay.
        let (w, b) = lars_run(0.0, 0.1, 1.0, 3);
        let shrink = (1.0f64 - 0.5 * 0.02).powi(3);
        for (got, start) in w.iter().zip([3.0f64, 4.0]) {
            assert!((f64::from(*got) - start * shrink).abs() < 1e-5, "{w:?}");
        }
        // Vectors (biases, BatchNorm): no decay and no trust ratio: plain SGD, 3 × lr × ∇b.
        for (got, want) in b.iter().zip([1.0 - 1.5, -1.0 - 3.0]) {
            assert!((f64::from(*got) - want).abs() < 1e-5, "{b:?}");
        }
    }

    #[test]
    fn lars_matrix_updates_do_not_depend_on_the_gradient_scale() {
        let (w1, b1) = lars_run(0.9, 0.0, 1.0, 3);
        let (w10, b10) = lars_run(0.9, 0.0, 10.0, 3);
        for (a, b) in w1.iter().zip(&w10) {
            assert!((a - b).abs() < 1e-5, "{w1:?} vs {w10:?}");
        }
        assert!(w1[0] < 3.0, "w moved");
        assert_eq!(b1, b10, "the bias' loss does not depend on the scale");
    }
}
