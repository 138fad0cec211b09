//! The momentum encoder (MoCo's key encoder, SupCon's memory-efficient setting): an
//! exponential moving average of the online encoder + head, whose outputs fill a key queue.
//! Shared by [`super::moco`] and the label-aware queue of [`super::in_batch`].

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use supcon_models::{ModelConfig, SupConModel};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use supcon_collectives::{shard, Collectives};

use super::host_rows;
use crate::dist;
use crate::error::TrainError;

/// The order of MoCo's BatchNorm shuffle of `n` images (a permutation drawn from `seed`).
pub fn shuffle_order(n: usize, seed: u64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// m over a run: BYOL's half cosine from `start` to `end`,
/// `m = end − (end − start)·(cos(π·progress) + 1)/2` (solo-learn's MoCo v2+ rises from 0.99
/// to 1), constant when the two are equal. A rising m lets the keys follow the fast-changing
/// early encoder and keeps them consistent once it settles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MomentumSchedule {
    pub start: f64,
    pub end: f64,
}

impl MomentumSchedule {
    /// m after `progress` (the fraction of the run's steps done, 0 to 1).
    pub fn at(&self, progress: f64) -> f64 {
        let remaining = ((std::f64::consts::PI * progress.clamp(0.0, 1.0)).cos() + 1.0) / 2.0;
        self.end - (self.end - self.start) * remaining
    }
}

impl From<f64> for MomentumSchedule {
    /// A constant m.
    fn from(momentum: f64) -> Self {
        Self {
            start: momentum,
            end: momentum,
        }
    }
}

/// An EMA copy of the online network: `ema ← m·ema + (1 − m)·online` after every step.
pub struct MomentumEncoder {
    pub vs: VarStore,
    pub model: SupConModel,
    /// (EMA variable, online variable) pairs, sorted by name.
    pairs: Vec<(Tensor, Tensor)>,
    momentum: MomentumSchedule,
}

impl MomentumEncoder {
    /// A copy of `online` (built with `model`), frozen: it only moves by [`Self::update`].
    pub fn new(
        online: &VarStore,
        model: &ModelConfig,
        momentum: impl Into<MomentumSchedule>,
        device: Device,
    ) -> Result<Self, TrainError> {
        let mut vs = VarStore::new(device);
        let copy = SupConModel::new(&vs.root(), model)?;
        vs.copy(online)?;
        vs.freeze();
        let ema = vs.variables();
        let mut names: Vec<String> = ema.keys().cloned().collect();
        names.sort();
        let online_vars = online.variables();
        let pairs = names
            .iter()
            .map(|n| (ema[n].shallow_clone(), online_vars[n].shallow_clone()))
            .collect();
        Ok(Self {
            vs,
            model: copy,
            pairs,
            momentum: momentum.into(),
        })
    }

    /// `ema ← m·ema + (1 − m)·online` for every floating-point variable, BatchNorm statistics
    /// included, with m of the schedule at `progress` (the fraction of the run done).
    pub fn update(&mut self, progress: f64) {
        let m = self.momentum.at(progress);
        tch::no_grad(|| {
            for (ema, online) in &mut self.pairs {
                if ema.is_floating_point() {
                    let _ = ema.g_mul_scalar_(m).g_add_(&(online.detach() * (1.0 - m)));
                } else {
                    // Counters (BatchNorm's num_batches_tracked) are copied, not averaged.
                    ema.copy_(online);
                }
            }
        });
    }

    /// Keys of `images` (no gradient, BatchNorm in training mode as in MoCo).
    pub fn keys(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| self.model.forward_t(images, true))
    }

    /// Keys of `images` with MoCo's shuffled BatchNorm on one device: the images are put in a
    /// random order (drawn from `seed`) and cut into `groups` groups that each normalize with
    /// their own batch statistics, as the per-GPU sub-batches of MoCo's shuffle do; the keys
    /// come back in the images' order. So a key's BatchNorm statistics are not those of its
    /// query's batch, which closes the shortcut MoCo's shuffle exists for. `groups = 1` is
    /// [`Self::keys`].
    pub fn keys_shuffled(&self, images: &Tensor, groups: usize, seed: u64) -> Tensor {
        let n = images.size()[0] as usize;
        let groups = groups.clamp(1, n.max(1));
        if groups == 1 {
            return self.keys(images);
        }
        let order = shuffle_order(n, seed);
        let mut inverse = vec![0i64; n];
        for (position, &image) in order.iter().enumerate() {
            inverse[image as usize] = position as i64;
        }
        let device = images.device();
        let order = Tensor::from_slice(&order).to_device(device);
        let inverse = Tensor::from_slice(&inverse).to_device(device);
        let shuffled = images.index_select(0, &order);
        let chunk = n.div_ceil(groups) as i64;
        let keys: Vec<Tensor> = shuffled
            .split(chunk, 0)
            .iter()
            .map(|group| self.keys(group))
            .collect();
        Tensor::cat(&keys, 0).index_select(0, &inverse)
    }
}

impl MomentumEncoder {
    /// [`Self::keys_shuffled`] of the step's whole batch when each rank holds a consecutive
    /// part of it (`local`, in rank order): MoCo's shuffle across GPUs. The
    /// images are gathered, shuffled with `seed` (the same on every rank), cut into the same
    /// groups as in one process, and each rank forwards its share of the groups; the keys of
    /// every rank are gathered and put back in the images' order. Returns the keys of the
    /// whole batch `[global_len, dim]` on `local`'s device, every rank the same: exactly the
    /// keys one process computes with [`Self::keys_shuffled`] (each group normalized with its
    /// own statistics, on whichever rank). One process: [`Self::keys_shuffled`], no copy.
    pub fn keys_shuffled_across(
        &self,
        comm: &dyn Collectives,
        local: &Tensor,
        groups: usize,
        seed: u64,
    ) -> Result<Tensor, TrainError> {
        if comm.world_size() == 1 {
            return Ok(self.keys_shuffled(local, groups, seed));
        }
        let size = local.size();
        let pixels: Vec<f32> = Vec::try_from(local.to_device(Device::Cpu).flatten(0, -1))?;
        let gathered = dist::gather(comm, &pixels, "all-gather of the key images")?;
        let per_image: usize = size[1..].iter().product::<i64>() as usize;
        let n = gathered.len() / per_image.max(1);
        let images = Tensor::from_slice(&gathered)
            .view([n as i64, size[1], size[2], size[3]])
            .to_device(local.device());
        // The groups of one process (see `keys_shuffled`), this rank's share of them.
        let groups = groups.clamp(1, n.max(1));
        let chunk = n.div_ceil(groups).max(1);
        let order = shuffle_order(n, seed);
        let mine = shard(n.div_ceil(chunk), comm.rank(), comm.world_size());
        let mut keys = Vec::new();
        for group in mine {
            let rows = &order[group * chunk..((group + 1) * chunk).min(n)];
            let group_keys = self
                .keys(&images.index_select(0, &Tensor::from_slice(rows).to_device(local.device())));
            keys.extend(host_rows(&group_keys)?.0);
        }
        let shuffled = dist::gather(comm, &keys, "all-gather of the keys")?;
        let dim = shuffled.len() / n.max(1);
        let mut ordered = vec![0f32; shuffled.len()];
        for (position, &image) in order.iter().enumerate() {
            ordered[image as usize * dim..][..dim]
                .copy_from_slice(&shuffled[position * dim..][..dim]);
        }
        Ok(Tensor::from_slice(&ordered)
            .view([n as i64, dim as i64])
            .to_device(local.device()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use supcon_models::Architecture;

    #[test]
    fn shuffled_keys_use_their_groups_batch_statistics_not_the_query_batchs() {
        tch::manual_seed(3);
        let config = ModelConfig::new(Architecture::ResNetTiny).with_in_channels(1);
        let online = VarStore::new(Device::Cpu);
        SupConModel::new(&online.root(), &config).unwrap();
        let encoder = MomentumEncoder::new(&online, &config, 0.99, Device::Cpu).unwrap();
        // Eight images whose brightness differs a lot: batch statistics depend on the group.
        let images = Tensor::randn([8, 1, 12, 12], (tch::Kind::Float, Device::Cpu))
            + Tensor::arange(8, (tch::Kind::Float, Device::Cpu)).view([8, 1, 1, 1]);
        let whole_batch = encoder.keys(&images);
        let shuffled = encoder.keys_shuffled(&images, 2, 11);
        assert_eq!(shuffled.size(), whole_batch.size());
        let gap = (&shuffled - &whole_batch).abs().max().double_value(&[]);
        assert!(
            gap > 1e-3,
            "shuffled keys equal the whole batch's: gap {gap}"
        );
        // Each group's keys are exactly those of that group forwarded alone.
        let order = shuffle_order(8, 11);
        for group in order.chunks(4) {
            let index = Tensor::from_slice(group);
            let alone = encoder.keys(&images.index_select(0, &index));
            let picked = shuffled.index_select(0, &index);
            let gap = (&alone - &picked).abs().max().double_value(&[]);
            assert!(gap < 1e-5, "group {group:?}: {gap}");
        }
        // One group is the plain forward.
        let one = encoder.keys_shuffled(&images, 1, 11);
        assert!((&one - &whole_batch).abs().max().double_value(&[]) < 1e-6);
    }

    /// MoCo's shuffle across ranks: two simulated ranks, each holding half of the batch,
    /// compute the keys one process computes with the same groups, BatchNorm statistics
    /// included (each group is normalized alone, on whichever rank forwards it).
    #[test]
    fn keys_shuffled_across_ranks_are_the_keys_of_one_process() {
        let config = ModelConfig::new(Architecture::ResNetTiny).with_in_channels(1);
        let online = VarStore::new(Device::Cpu);
        SupConModel::new(&online.root(), &config).unwrap();
        // Copies of one encoder and one batch: one for the whole batch, one per rank
        // (libtorch tensors are not shared between threads).
        let encoder = || MomentumEncoder::new(&online, &config, 0.99, Device::Cpu).unwrap();
        let images = Tensor::randn([10, 1, 12, 12], (tch::Kind::Float, Device::Cpu))
            + Tensor::arange(10, (tch::Kind::Float, Device::Cpu)).view([10, 1, 1, 1]);
        for groups in [1, 2, 4] {
            let (whole, _, dim) = host_rows(&encoder().keys_shuffled(&images, groups, 21)).unwrap();
            let ranks: Vec<_> = supcon_collectives::LocalGroup::new(2)
                .into_iter()
                .map(|comm| (comm, (encoder(), images.copy())))
                .collect();
            let parts: Vec<Vec<f32>> = std::thread::scope(|scope| {
                let handles: Vec<_> = ranks
                    .into_iter()
                    .map(|(comm, (encoder, images))| {
                        scope.spawn(move || {
                            let mine = shard(10, comm.rank(), 2);
                            let local = images.narrow(0, mine.start as i64, mine.len() as i64);
                            let keys = encoder
                                .keys_shuffled_across(&comm, &local, groups, 21)
                                .unwrap();
                            host_rows(&keys).unwrap().0
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for keys in parts {
                let gap = keys
                    .iter()
                    .zip(&whole)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert_eq!(keys.len(), 10 * dim);
                assert!(gap < 1e-5, "{groups} groups: {gap}");
            }
        }
    }

    #[test]
    fn the_moving_average_moves_towards_the_online_weights() {
        let config = ModelConfig::new(Architecture::ResNetTiny).with_in_channels(1);
        let online = VarStore::new(Device::Cpu);
        SupConModel::new(&online.root(), &config).unwrap();
        let mut encoder = MomentumEncoder::new(&online, &config, 0.9, Device::Cpu).unwrap();
        let name = "head.2.weight";
        let before = encoder.vs.variables()[name].copy();
        tch::no_grad(|| {
            let _ = online.variables()[name].shallow_clone().g_add_scalar_(1.0);
        });
        encoder.update(0.5);
        let moved = (&encoder.vs.variables()[name] - &before)
            .mean(tch::Kind::Float)
            .double_value(&[]);
        assert!((moved - 0.1).abs() < 1e-5, "moved by {moved}");
    }

    #[test]
    fn the_momentum_schedule_rises_along_a_half_cosine() {
        let schedule = MomentumSchedule {
            start: 0.99,
            end: 1.0,
        };
        assert_eq!(schedule.at(0.0), 0.99);
        assert!((schedule.at(0.5) - 0.995).abs() < 1e-12);
        assert_eq!(schedule.at(1.0), 1.0);
        // Slow at both ends, fastest in the middle, never past the end.
        assert!(schedule.at(0.1) - 0.99 < schedule.at(0.6) - schedule.at(0.5));
        assert_eq!(schedule.at(2.0), 1.0);
        assert_eq!(MomentumSchedule::from(0.9).at(0.3), 0.9);
    }
}
