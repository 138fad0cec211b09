//! Data-parallel training over `supcon-collectives`: what the stages share when a run spans R
//! ranks (processes started by `mpirun` or `srun`; one process is the group of one).
//!
//! The contract every stage keeps, which makes R ranks compute what one process computes on
//! the same global batch:
//!
//! - the global batch of a step is the one-process batch (the epoch's seeded permutation);
//!   rank r takes the consecutive part `supcon_collectives::shard(B, r, R)` of it and augments
//!   it with the same per-image seeds (`PreparedBatch::global` says where the part lies);
//! - a model's `forward_backward` returns the loss of the **global** batch (the same on every
//!   rank) and leaves in the gradients this rank's **share** of the global batch's gradient, so
//!   that their sum over the ranks ([`all_reduce_step`]) is the one-process gradient;
//! - every rank then takes the same optimizer step, so the weights stay identical; BatchNorm
//!   normalizes with each rank's own batch statistics (as PyTorch's DDP does) and its running
//!   statistics are averaged over the ranks after each step;
//! - rank 0 alone writes the run folder.

use std::path::Path;
use std::rc::Rc;

use ndarray::{Array2, Array3};
use supcon_collectives::{shard, CollectiveError, Collectives, CollectivesExt, SingleProcess};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::checkpoint::Checkpoint;
use crate::error::TrainError;

/// The collectives of a run, shared by its stages and models.
pub type Comm = Rc<dyn Collectives>;

/// One process alone: every collective is the identity.
pub fn single_process() -> Comm {
    Rc::new(SingleProcess)
}

/// `TrainError::Collective` for a failed `what`.
pub fn failed(what: &'static str) -> impl Fn(CollectiveError) -> TrainError {
    move |source| TrainError::Collective { what, source }
}

/// What the ranks keep identical after every optimizer step: the gradients of the trained
/// tensors are summed over the ranks, the floating-point statistics (BatchNorm's running mean
/// and variance) averaged.
#[derive(Default)]
pub struct DataParallelTensors {
    /// Tensors the optimizer trains: their `.grad()` is all-reduced.
    pub parameters: Vec<Tensor>,
    /// Running statistics that the forward pass updates from each rank's own batch.
    pub statistics: Vec<Tensor>,
}

impl DataParallelTensors {
    /// The parameters `optimizer` trains and the given running statistics.
    pub fn new(optimizer: &crate::optim::Optimizer, statistics: Vec<Tensor>) -> Self {
        Self {
            parameters: optimizer
                .params()
                .iter()
                .map(|(_, p)| p.shallow_clone())
                .collect(),
            statistics,
        }
    }
}

/// The running statistics of a variable store: floating-point variables that are not trained
/// (BatchNorm's `running_mean` and `running_var`).
pub fn running_statistics(vs: &VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| t.is_floating_point() && !t.requires_grad())
        .collect()
}

/// Sums the parameters' gradients over the ranks and averages the statistics, in one
/// all-reduce. A no-op in one process.
pub fn all_reduce_step(
    comm: &dyn Collectives,
    tensors: &DataParallelTensors,
) -> Result<(), TrainError> {
    let world = comm.world_size();
    if world == 1 {
        return Ok(());
    }
    // Parameters without a gradient (frozen this step) are skipped on every rank alike.
    let gradients: Vec<Tensor> = tensors
        .parameters
        .iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .collect();
    let scaled_statistics: Vec<Tensor> = tensors
        .statistics
        .iter()
        .map(|s| s.detach() / world as f64)
        .collect();
    let all: Vec<&Tensor> = gradients.iter().chain(&scaled_statistics).collect();
    let mut flat = to_host(&all)?;
    comm.all_reduce_sum_in_place(&mut flat)
        .map_err(failed("all-reduce of the gradients"))?;
    let targets: Vec<&Tensor> = gradients.iter().chain(&tensors.statistics).collect();
    from_host(&flat, &targets)
}

/// Rank 0's values of `tensors` on every rank, in place (weights at the start of a stage, so
/// that every rank trains the same model whatever its libtorch draws).
pub fn broadcast_tensors(comm: &dyn Collectives, tensors: &[Tensor]) -> Result<(), TrainError> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let floating: Vec<&Tensor> = tensors.iter().filter(|t| t.is_floating_point()).collect();
    let mut flat = to_host(&floating)?;
    comm.broadcast_in_place(&mut flat, 0)
        .map_err(failed("broadcast of rank 0's weights"))?;
    from_host(&flat, &floating)
}

/// Every rank's rows `[n_r, dim]`, stacked in rank order.
pub fn gather_rows(comm: &dyn Collectives, local: Array2<f32>) -> Result<Array2<f32>, TrainError> {
    if comm.world_size() == 1 {
        return Ok(local);
    }
    let dim = local.ncols();
    let values: Vec<f32> = local.iter().copied().collect();
    let gathered = gather(comm, &values, "all-gather of inference outputs")?;
    let rows = gathered.len() / dim.max(1);
    Array2::from_shape_vec((rows, dim), gathered)
        .map_err(|e| TrainError::Shape(format!("gathered rows: {e}")))
}

/// Every rank's rows `[n_r, dim]` of a tensor (detached), stacked in rank order on the
/// tensor's device. One process: the rows themselves, no copy; across ranks they travel
/// through the host, where the collectives are.
pub fn gather_tensor_rows(
    comm: &dyn Collectives,
    local: &Tensor,
    what: &'static str,
) -> Result<Tensor, TrainError> {
    let local = local.detach();
    if comm.world_size() == 1 {
        return Ok(local);
    }
    let dim = local.size().get(1).copied().unwrap_or(1);
    let values = to_host(&[&local])?;
    let gathered = gather(comm, &values, what)?;
    Ok(Tensor::from_slice(&gathered)
        .view([-1, dim])
        .to_device(local.device()))
}

/// The rows `[n, …]` of every rank's `local` in rank order, this rank's (which start at row
/// `first` of the whole) still in their autograd graph and the others' detached: a loss of
/// the whole batch computed on the result back-propagates into this rank's rows only — its
/// share of the whole batch's gradient, as a data-parallel step needs. One process: `local`
/// itself.
pub fn whole_batch_rows(
    comm: &dyn Collectives,
    local: &Tensor,
    first: usize,
    what: &'static str,
) -> Result<Tensor, TrainError> {
    if comm.world_size() == 1 {
        return Ok(local.shallow_clone());
    }
    let shape = local.size();
    let flat = local.f_reshape([shape[0], -1])?;
    let all = gather_tensor_rows(comm, &flat, what)?;
    let (first, own) = (first as i64, shape[0]);
    let after = all.size()[0] - first - own;
    if after < 0 {
        return Err(TrainError::Shape(format!(
            "{what}: rows {first}..{} of a batch of {}",
            first + own,
            all.size()[0]
        )));
    }
    let whole = Tensor::f_cat(
        &[
            all.f_narrow(0, 0, first)?,
            flat,
            all.f_narrow(0, first + own, after)?,
        ],
        0,
    )?;
    let mut whole_shape = shape;
    whole_shape[0] = -1;
    Ok(whole.f_reshape(&whole_shape)?)
}

/// The tensors' values, concatenated, as host `f32`.
fn to_host(tensors: &[&Tensor]) -> Result<Vec<f32>, TrainError> {
    let mut flat = Vec::with_capacity(tensors.iter().map(|t| t.numel()).sum());
    for tensor in tensors {
        let values: Vec<f32> = Vec::try_from(
            tensor
                .detach()
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Float)
                .flatten(0, -1),
        )?;
        flat.extend(values);
    }
    Ok(flat)
}

/// Copies consecutive parts of `flat` into `tensors` (each in its own shape, kind and device).
fn from_host(flat: &[f32], tensors: &[&Tensor]) -> Result<(), TrainError> {
    let mut offset = 0;
    for tensor in tensors {
        let len = tensor.numel();
        let part = flat.get(offset..offset + len).ok_or_else(|| {
            TrainError::Shape(format!(
                "reduced buffer of {} values is too short for the tensors",
                flat.len()
            ))
        })?;
        let values = Tensor::from_slice(part)
            .view(tensor.size().as_slice())
            .to_kind(tensor.kind())
            .to_device(tensor.device());
        tch::no_grad(|| {
            let mut target = tensor.shallow_clone();
            target.copy_(&values);
        });
        offset += len;
    }
    Ok(())
}

/// Rank 0's checkpoint `path` on every rank: rank 0 reads the file and sends its bytes, so the
/// other ranks need not see rank 0's disk (the encoder the linear stage starts from, a resumed
/// stage's state). One process reads the file.
pub fn load_checkpoint(comm: &dyn Collectives, path: &Path) -> Result<Checkpoint, TrainError> {
    if comm.world_size() == 1 {
        return Checkpoint::load(path);
    }
    let bytes = if comm.rank() == 0 {
        std::fs::read(path).map_err(|source| TrainError::io(path, source))?
    } else {
        Vec::new()
    };
    let bytes = comm
        .broadcast_bytes(&bytes, 0)
        .map_err(failed("broadcast of rank 0's checkpoint"))?;
    if comm.rank() == 0 {
        return Checkpoint::load(path);
    }
    // libtorch reads safetensors from files only: a private copy, removed once read.
    let copy = std::env::temp_dir().join(format!(
        "supcon-rank{}-{}-{}",
        comm.rank(),
        std::process::id(),
        path.file_name()
            .map_or("checkpoint".into(), |n| n.to_string_lossy())
    ));
    std::fs::write(&copy, &bytes).map_err(|source| TrainError::io(&copy, source))?;
    let loaded = Checkpoint::load(&copy);
    let _ = std::fs::remove_file(&copy);
    let mut checkpoint = loaded?;
    checkpoint.path = path.to_path_buf();
    Ok(checkpoint)
}

/// Whether `path` exists on rank 0 (the answer every rank acts on: rank 0 owns the run folder).
pub fn exists_on_rank_zero(comm: &dyn Collectives, path: &Path) -> Result<bool, TrainError> {
    comm.any(comm.rank() == 0 && path.exists())
        .map_err(failed("asking rank 0 for a checkpoint"))
}

/// Sums `values` over the ranks (each rank's share of a global quantity).
pub fn sum(comm: &dyn Collectives, values: &mut [f64]) -> Result<(), TrainError> {
    comm.all_reduce_sum_in_place(values)
        .map_err(failed("all-reduce of the step's loss"))
}

/// The whole batch's value from this rank's `share` of it (a loss weighted by the rank's
/// share of the images): the sum over the ranks.
pub fn total(comm: &dyn Collectives, share: f64) -> Result<f64, TrainError> {
    let mut total = [share];
    sum(comm, &mut total)?;
    Ok(total[0])
}

/// Every rank's `values`, concatenated in rank order (`what`: for the error).
pub fn gather<T: supcon_collectives::Scalar>(
    comm: &dyn Collectives,
    values: &[T],
    what: &'static str,
) -> Result<Vec<T>, TrainError> {
    Ok(comm.gather_all(values).map_err(failed(what))?.values)
}

/// `supcon check-ranks`: every collective between the ranks of this job, then the SupCon /
/// SimCLR loss across them against one process's loss on the same global batch, for every
/// option (L_out / L_in, contrast mode all / one, labels or SimCLR, a queue or none,
/// normalization, 1–3 views) on uneven shards. Returns the report (on rank 0; empty
/// elsewhere), or [`TrainError::RankCheck`] naming the first thing that differed.
pub fn check_ranks(comm: &dyn Collectives) -> Result<String, TrainError> {
    use rand::{Rng, SeedableRng};
    use supcon_loss::{ContrastMode, CpuBackend, Queue, SupConInput, SupConOptions, Variant};

    let (rank, world) = (comm.rank(), comm.world_size());
    let check = |ok: bool, what: String| -> Result<(), TrainError> {
        if ok {
            Ok(())
        } else {
            Err(TrainError::RankCheck(format!(
                "rank {rank} of {world}: {what}"
            )))
        }
    };
    let mut report = format!(
        "{world} rank(s) over {}; rank 0 on {}\n",
        comm.transport(),
        std::env::var("HOSTNAME").unwrap_or_else(|_| "this machine".into())
    );

    let mut sum = [rank as i64 + 1];
    comm.all_reduce_sum_in_place(&mut sum)
        .map_err(failed("all-reduce"))?;
    let want = (world * (world + 1) / 2) as i64;
    check(
        sum[0] == want,
        format!("all-reduce gave {}, expected {want}", sum[0]),
    )?;
    let gathered = comm
        .gather_all(&vec![rank as f32; rank + 1])
        .map_err(failed("all-gather"))?;
    let want: Vec<f32> = (0..world).flat_map(|r| vec![r as f32; r + 1]).collect();
    check(
        gathered.values == want,
        "all-gather of varying lengths differs".into(),
    )?;
    let bytes = comm
        .broadcast_bytes(format!("from rank {rank}").as_bytes(), 0)
        .map_err(failed("broadcast"))?;
    check(bytes == b"from rank 0", "broadcast differs".into())?;
    comm.barrier().map_err(failed("barrier"))?;
    report.push_str(
        "collectives: all-reduce, all-gather (varying lengths), broadcast, barrier: ok\n",
    );

    // The same random problems on every rank; batch 3·R + 1, so the shards are uneven.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5c0_fee);
    let batch = 3 * world + 1;
    let mine = shard(batch, rank, world);
    let mut worst = 0.0f64;
    let mut cases = 0;
    for variant in [Variant::Out, Variant::In] {
        for mode in [ContrastMode::All, ContrastMode::One] {
            for labelled in [true, false] {
                for keys in [0usize, 5] {
                    for normalize in [false, true] {
                        let views = 1 + cases % 3;
                        let dim = 8;
                        let mut features = Array3::<f32>::zeros((batch, views, dim));
                        features.mapv_inplace(|_| rng.random_range(-1.0..1.0));
                        let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..3)).collect();
                        let queue_keys = Array2::<f32>::from_shape_fn((keys, dim), |_| {
                            rng.random_range(-1.0..1.0)
                        });
                        let queue_labels: Vec<i64> =
                            (0..keys).map(|_| rng.random_range(0..3)).collect();
                        let options = SupConOptions::new(0.2)
                            .with_variant(variant)
                            .with_contrast_mode(mode)
                            .with_normalize(normalize);
                        let labels = labelled.then_some(labels.as_slice());
                        let queue = (keys > 0).then(|| Queue {
                            keys: queue_keys.view(),
                            labels: &queue_labels,
                        });
                        let backend = CpuBackend::new();
                        let input = SupConInput {
                            features: features.view(),
                            labels,
                            queue,
                        };
                        let whole = backend.compute_generic(&input, &options)?;
                        let across = supcon_loss::distributed::supcon_across_ranks(
                            comm,
                            &backend,
                            features.slice(ndarray::s![mine.clone(), .., ..]),
                            labels.map(|l| &l[mine.clone()]),
                            queue,
                            &options,
                        )?;
                        let loss_error =
                            (across.loss - whole.loss).abs() / whole.loss.abs().max(1e-12);
                        let scale = whole
                            .grad
                            .iter()
                            .fold(0f32, |m, g| m.max(g.abs()))
                            .max(1e-12);
                        let grad_error = across
                            .grad
                            .iter()
                            .zip(whole.grad.slice(ndarray::s![mine.clone(), .., ..]).iter())
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max)
                            / scale;
                        worst = worst.max(loss_error).max(f64::from(grad_error));
                        cases += 1;
                    }
                }
            }
        }
    }
    // The worst error of any rank.
    let errors = comm
        .gather_all(&[worst])
        .map_err(failed("all-gather of the errors"))?;
    let worst = errors.values.iter().copied().fold(0.0, f64::max);
    check(
        worst <= 1e-6,
        format!("the loss across ranks differs from one process's by {worst:.2e} (relative; limit 1e-6)"),
    )?;
    report.push_str(&format!(
        "loss: {cases} SupCon / SimCLR cases (batch {batch} split {:?}): worst relative difference from one process {worst:.2e} (limit 1e-6): ok\n",
        (0..world).map(|r| shard(batch, r, world).len()).collect::<Vec<_>>()
    ));
    Ok(if rank == 0 { report } else { String::new() })
}
