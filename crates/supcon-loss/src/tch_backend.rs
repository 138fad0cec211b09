//! The libtorch backend (feature `tch`): the loss written the way a PyTorch user writes it.
//!
//! [`supcon_loss_tensor`] follows SupContrast's `SupConLoss.forward` op for op: the dense
//! n × M similarity matrix, `logits_max` subtraction, a self-mask, `log_prob`, the mean over
//! positives; autograd does the backward pass. It differs from SupContrast where this crate
//! does (see the crate docs): anchors without positives are left out of the mean, queue keys
//! are appended to the contrast rows, `L_in` is available, and `normalize` normalizes inside.
//!
//! It is a third, independent implementation (tests compare it with [`crate::CpuBackend`]),
//! the baseline the benchmarks compare against (memory O(n·M), unlike the CPU backend), and
//! the function a tch training loop can call on its projections directly.
//!
//! [`infonce_loss_tensor`] is MoCo's InfoNCE as MoCo's `forward` writes it (dense logits with
//! the positive at index 0, `cross_entropy` against label 0) and [`nce_loss_tensor`] is
//! InstDisc's NCE written from its formula; both are the references the tests compare
//! [`crate::infonce_loss`] and [`crate::nce_loss`] with.
//!
//! [`swav_loss_tensor`] is SwAV's loss as SwAV's `main_swav.py` computes it (Sinkhorn under
//! `no_grad`, `log_softmax` against the codes, autograd for the features and the prototypes);
//! [`swav_tch`] runs it on host inputs, the reference the tests compare [`crate::swav`] with.

use crate::{
    validate, ContrastMode, LossBackend, LossError, LossOutput, SupConInput, SupConOptions, Variant,
};
use ndarray::Array3;
use tch::{Device, Kind, Tensor};

fn backend_error(e: tch::TchError) -> LossError {
    LossError::library("libtorch", e)
}

/// libtorch's device for [`crate::Backend::Tch`]'s `cuda`: CUDA device `i`, or the CPU.
pub fn device(cuda: Option<usize>) -> Device {
    cuda.map_or(Device::Cpu, Device::Cuda)
}

/// A tensor's values on the host, as `f32`, in standard layout.
fn host_values(t: &Tensor) -> Result<Vec<f32>, LossError> {
    t.f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.contiguous().f_view([-1]))
        .and_then(|t| Vec::<f32>::try_from(&t))
        .map_err(backend_error)
}

/// The value of a scalar loss after its backward pass; not finite is [`LossError::Overflow`].
fn finite_value(loss: &Tensor) -> Result<f64, LossError> {
    let value = loss.f_double_value(&[]).map_err(backend_error)?;
    if !value.is_finite() {
        return Err(LossError::Overflow { value });
    }
    Ok(value)
}

/// The SupCon / SimCLR loss on libtorch tensors, with its autograd graph.
///
/// - `features`: `[batch, views, dim]`, floating point, any device; usually the model's
///   L2-normalized projections (`requires_grad`).
/// - `labels`: `[batch]` int64 class labels, or `None` for SimCLR (each sample its own class);
///   a negative label marks an unlabeled sample (semi-supervised SupCon, [`crate::unlabeled`]).
/// - `queue`: `(keys [K, dim], labels [K])`: extra contrast rows that get no gradient; their
///   labels are ignored without batch labels (every key is then a negative).
///
/// Returns the scalar loss; `loss.backward()` fills `features.grad()`. When no anchor has a
/// positive the loss is `0 · Σ features` (zero, with a zero gradient). The inputs are checked
/// with the same rules and errors as every other entry point ([`crate::check_shape`], then
/// finiteness and, with `normalize`, zero rows; see [`validate_tensors`]); the finiteness
/// scan costs one device synchronization. Without batch labels the queue labels are not
/// read (they may be empty).
pub fn supcon_loss_tensor(
    features: &Tensor,
    labels: Option<&Tensor>,
    queue: Option<(&Tensor, &Tensor)>,
    options: &SupConOptions,
) -> Result<Tensor, LossError> {
    supcon_loss_tensor_with_anchors(features, labels, queue, options).map(|(loss, _)| loss)
}

/// `labels` (`[len]`, int64) with each unlabeled entry `i` given the label
/// `i64::MIN + offset + i`: [`crate::unlabeled::own_labels`]'s rule on the device, no copy to
/// the host.
fn own_labels_tensor(labels: &Tensor, offset: i64) -> Result<Tensor, LossError> {
    let len = labels.size()[0];
    let own = Tensor::f_arange(len, (Kind::Int64, labels.device())).map_err(backend_error)?
        + crate::unlabeled::own_label(offset as usize);
    let labeled = labels.f_ge(0).map_err(backend_error)?;
    labels.f_where_self(&labeled, &own).map_err(backend_error)
}

/// [`supcon_loss_tensor`] and |I|, the number of anchors with at least one positive.
pub fn supcon_loss_tensor_with_anchors(
    features: &Tensor,
    labels: Option<&Tensor>,
    queue: Option<(&Tensor, &Tensor)>,
    options: &SupConOptions,
) -> Result<(Tensor, usize), LossError> {
    validate_tensors(features, labels, queue, options)?;
    let (batch, views, dim) = features.size3().map_err(backend_error)?;
    let device = features.device();
    let kind = features.kind();
    let n_views = batch * views;

    let mut feats = features.shallow_clone();
    if options.normalize {
        feats = normalize_rows(&feats, "features")?;
    }
    // torch.cat(torch.unbind(features, 1)): row j = v·B + b.
    let contrast_feats = feats
        .f_transpose(0, 1)
        .and_then(|t| t.f_reshape([n_views, dim]))
        .map_err(backend_error)?;

    let batch_labels = match labels {
        Some(l) => {
            if l.size() != [batch] {
                return Err(LossError::ShapeMismatch {
                    what: "labels shape",
                    expected: format!("[{batch}] (the batch size)"),
                    actual: format!("{:?}", l.size()),
                });
            }
            let l = l
                .f_to_kind(Kind::Int64)
                .and_then(|l| l.f_to_device(device))
                .map_err(backend_error)?;
            own_labels_tensor(&l, 0)?
        }
        None => Tensor::f_arange(batch, (Kind::Int64, device)).map_err(backend_error)?,
    };
    let mut contrast = contrast_feats.shallow_clone();
    let mut contrast_labels = batch_labels.f_repeat([views]).map_err(backend_error)?;
    if let Some((keys, key_labels)) = queue {
        let k = keys.size()[0];
        if k > 0 {
            let mut keys = keys
                .f_to_device(device)
                .and_then(|t| t.f_to_kind(kind))
                .map_err(backend_error)?
                .detach();
            if options.normalize {
                keys = normalize_rows(&keys, "queue keys")?;
            }
            // Without batch labels every key is a negative: −1 never equals a sample index.
            let key_labels = match labels {
                Some(_) => own_labels_tensor(
                    &key_labels
                        .f_to_kind(Kind::Int64)
                        .and_then(|l| l.f_to_device(device))
                        .map_err(backend_error)?,
                    batch,
                )?,
                None => Tensor::f_full([k], -1, (Kind::Int64, device)).map_err(backend_error)?,
            };
            contrast = Tensor::f_cat(&[&contrast, &keys], 0).map_err(backend_error)?;
            contrast_labels =
                Tensor::f_cat(&[&contrast_labels, &key_labels], 0).map_err(backend_error)?;
        }
    }
    let rows = contrast.size()[0];
    let n = match options.contrast_mode {
        ContrastMode::All => n_views,
        ContrastMode::One => batch,
    };
    let anchors = contrast_feats.f_narrow(0, 0, n).map_err(backend_error)?;
    let anchor_labels = contrast_labels.f_narrow(0, 0, n).map_err(backend_error)?;

    let logits = anchors
        .f_matmul(&contrast.f_tr().map_err(backend_error)?)
        .map_err(backend_error)?
        / options.temperature;
    // For numerical stability, as SupContrast does (a constant per row: no effect on the loss).
    let (logits_max, _) = logits.f_max_dim(1, true).map_err(backend_error)?;
    let logits = &logits - logits_max.detach();
    // logits_mask: everything but the anchor itself (anchor i is contrast row i).
    let self_index = Tensor::f_arange(n, (Kind::Int64, device))
        .map_err(backend_error)?
        .view([n, 1]);
    let logits_mask = Tensor::f_ones([n, rows], (kind, device))
        .and_then(|m| m.f_scatter_value(1, &self_index, 0.0))
        .map_err(backend_error)?;
    let positives = anchor_labels
        .view([n, 1])
        .f_eq_tensor(&contrast_labels.view([1, rows]))
        .map_err(backend_error)?
        .to_kind(kind)
        * &logits_mask;
    let exp_logits = logits.exp() * &logits_mask;
    let log_prob = &logits
        - exp_logits
            .sum_dim_intlist([1i64].as_slice(), true, kind)
            .log();
    let pos_count = positives.sum_dim_intlist([1i64].as_slice(), false, kind);

    // Keep only anchors with a positive *before* anything that is undefined without one
    // (log of an empty sum would put NaN into the gradient of the other rows).
    let with_positive = pos_count.gt(0.0).nonzero().view([-1]);
    let anchor_count = with_positive.size()[0];
    if anchor_count == 0 {
        return Ok(((features * 0.0).sum(kind), 0));
    }
    let log_prob = log_prob.index_select(0, &with_positive);
    let positives = positives.index_select(0, &with_positive);
    let pos_count = pos_count.index_select(0, &with_positive);
    let mean_log_prob_pos = match options.variant {
        // (1/|P|) Σ_P log_prob
        Variant::Out => {
            (&positives * &log_prob).sum_dim_intlist([1i64].as_slice(), false, kind) / &pos_count
        }
        // log((1/|P|) Σ_P exp(log_prob))
        Variant::In => {
            log_prob
                .masked_fill(&positives.eq(0.0), f64::NEG_INFINITY)
                .logsumexp([1i64].as_slice(), false)
                - pos_count.log()
        }
    };
    let loss = mean_log_prob_pos.mean(kind) * (-options.loss_scale());
    Ok((loss, anchor_count as usize))
}

/// The checks of every entry point ([`crate::validate`]'s rules) on tensors: shapes and
/// options by [`crate::check_shape`], then the first non-finite value of the features and the
/// queue keys (one device synchronization). Zero rows under `normalize` are found where the
/// rows are normalized, with the same [`LossError::ZeroNorm`].
pub fn validate_tensors(
    features: &Tensor,
    labels: Option<&Tensor>,
    queue: Option<(&Tensor, &Tensor)>,
    options: &SupConOptions,
) -> Result<(), LossError> {
    let rank = |t: &Tensor, what: &'static str, rank: usize, shape: &str| {
        if t.dim() == rank {
            Ok(t.size().iter().map(|&s| s as usize).collect::<Vec<usize>>())
        } else {
            Err(LossError::ShapeMismatch {
                what,
                expected: format!("{rank} ({shape})"),
                actual: format!("{} (shape {:?})", t.dim(), t.size()),
            })
        }
    };
    let f = rank(features, "features rank", 3, "[batch, views, dim]")?;
    let labels_len = labels
        .map(|l| rank(l, "labels rank", 1, "[batch]").map(|s| s[0]))
        .transpose()?;
    let queue_shape = match queue {
        Some((keys, key_labels)) => {
            let k = rank(keys, "queue keys rank", 2, "[K, dim]")?;
            // Without batch labels the queue labels are not read: any shape will do.
            let key_labels = match labels {
                Some(_) => rank(key_labels, "queue labels rank", 1, "[K]")?[0],
                None => 0,
            };
            Some((k[0], k[1], key_labels))
        }
        None => None,
    };
    crate::check_shape(
        &crate::InputShape {
            features: [f[0], f[1], f[2]],
            labels: labels_len,
            queue: queue_shape,
        },
        options,
    )?;
    let mut inputs = vec![(features, "features")];
    inputs.extend(queue.map(|(keys, _)| (keys, "queue keys")));
    check_all_finite(&inputs)
}

/// [`check_finite`] over several tensors with one device synchronization when all are finite
/// (the common case); the error names the first bad value of the first bad tensor, in order.
pub(crate) fn check_all_finite(tensors: &[(&Tensor, &'static str)]) -> Result<(), LossError> {
    let flags: Vec<Tensor> = tensors
        .iter()
        .filter(|(t, _)| t.numel() > 0)
        .map(|(t, _)| t.isfinite().all())
        .collect();
    if flags.is_empty() || Tensor::stack(&flags, 0).all().int64_value(&[]) != 0 {
        return Ok(());
    }
    tensors
        .iter()
        .try_for_each(|(t, what)| check_finite(t, what))
}

/// [`LossError::NonFinite`] naming the first NaN or infinity of `t` (row-major index), if any.
pub(crate) fn check_finite(t: &Tensor, what: &'static str) -> Result<(), LossError> {
    if t.numel() == 0 {
        return Ok(());
    }
    let bad = t.isfinite().logical_not();
    if bad.any().int64_value(&[]) == 0 {
        return Ok(());
    }
    let flat = bad.view([-1]).nonzero().int64_value(&[0, 0]);
    let value = t.reshape([-1]).double_value(&[flat]);
    let mut index = Vec::new();
    let mut rest = flat as usize;
    for &size in t.size().iter().rev() {
        index.push(rest % size as usize);
        rest /= size as usize;
    }
    index.reverse();
    Err(LossError::NonFinite { what, index, value })
}

/// The L2 norms of `x`'s rows (last axis, kept as an axis of size 1), or
/// [`LossError::ZeroNorm`] naming the first zero row by its index over the leading axes (`[b, v]`
/// for a 3-d `x`, `[row]` for a 2-d one; one device synchronization).
pub(crate) fn row_norms(x: &Tensor, what: &'static str) -> Result<Tensor, LossError> {
    let norms = x.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true);
    let zero = norms.eq(0.0);
    if zero.any().int64_value(&[]) != 0 {
        let mut rest = zero.view([-1]).nonzero().int64_value(&[0, 0]) as usize;
        let size = x.size();
        let mut index: Vec<usize> = size[..size.len() - 1]
            .iter()
            .rev()
            .map(|&len| {
                let i = rest % len as usize;
                rest /= len as usize;
                i
            })
            .collect();
        index.reverse();
        return Err(LossError::ZeroNorm { what, index });
    }
    Ok(norms)
}

fn normalize_rows(x: &Tensor, what: &'static str) -> Result<Tensor, LossError> {
    Ok(x / row_norms(x, what)?)
}

/// [`crate::LossBackend`] on libtorch: copies the features into a tensor on `device`, runs
/// [`supcon_loss_tensor`] and autograd, and copies the gradient back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TchBackend {
    /// Where the tensors live (`Device::Cpu`, `Device::Cuda(0)`, ...).
    pub device: Device,
}

impl TchBackend {
    /// The backend computing on `device`.
    pub fn new(device: Device) -> Self {
        TchBackend { device }
    }
}

impl Default for TchBackend {
    fn default() -> Self {
        TchBackend::new(Device::Cpu)
    }
}

fn to_tensor(
    values: ndarray::ArrayView<'_, f32, ndarray::IxDyn>,
    device: Device,
) -> Result<Tensor, LossError> {
    let shape: Vec<i64> = values.shape().iter().map(|&s| s as i64).collect();
    let standard = values.as_standard_layout();
    let slice = standard.as_slice().ok_or_else(|| {
        LossError::Backend("features are not contiguous after as_standard_layout".into())
    })?;
    Tensor::f_from_slice(slice)
        .and_then(|t| t.f_reshape(&shape))
        .and_then(|t| t.f_to_device(device))
        .map_err(backend_error)
}

impl LossBackend for TchBackend {
    fn name(&self) -> &'static str {
        "tch"
    }

    fn compute(
        &self,
        input: &SupConInput<'_>,
        options: &SupConOptions,
    ) -> Result<LossOutput, LossError> {
        validate(input, options)?;
        let (batch, views, dim) = input.features.dim();
        let features = to_tensor(input.features.into_dyn(), self.device)?.set_requires_grad(true);
        let labels = input
            .labels
            .map(|l| Tensor::f_from_slice(l).and_then(|t| t.f_to_device(self.device)))
            .transpose()
            .map_err(backend_error)?;
        let queue = match &input.queue {
            Some(q) if q.keys.nrows() > 0 => Some((
                to_tensor(q.keys.into_dyn(), self.device)?,
                Tensor::f_from_slice(q.labels)
                    .and_then(|t| t.f_to_device(self.device))
                    .map_err(backend_error)?,
            )),
            _ => None,
        };
        let (loss, anchors) = supcon_loss_tensor_with_anchors(
            &features,
            labels.as_ref(),
            queue.as_ref().map(|(k, l)| (k, l)),
            options,
        )?;
        loss.f_backward().map_err(backend_error)?;
        let loss_value = finite_value(&loss)?;
        let grad = host_values(&features.grad())?;
        let grad = Array3::from_shape_vec((batch, views, dim), grad)
            .map_err(|e| LossError::Backend(format!("gradient of unexpected size: {e}")))?;
        Ok(LossOutput {
            loss: loss_value,
            grad,
            anchors,
        })
    }
}

// InfoNCE (MoCo) and NCE (InstDisc) on tensors.

use crate::{InfoNceOptions, NceOptions};

/// The shape of `t` as `usize`s, for error messages.
fn shape_of(t: &Tensor) -> Vec<usize> {
    t.size().iter().map(|&s| s as usize).collect()
}

/// The shape of a tensor that must have rank `rank`, as `usize`s; `what rank` names it
/// otherwise (`expected`: the shape it should have).
fn shape_of_rank<const RANK: usize>(
    t: &Tensor,
    what: &'static str,
    expected: &str,
) -> Result<[usize; RANK], LossError> {
    shape_of(t)
        .try_into()
        .map_err(|shape: Vec<usize>| LossError::ShapeMismatch {
            what,
            expected: format!("{RANK} ({expected})"),
            actual: format!("{} (shape {shape:?})", shape.len()),
        })
}

/// The shape rules of InfoNCE / NCE (`crate::infonce::check_row_shapes`, the host's) on
/// tensors; `per_query_only`: NCE's negatives are `[B, m, D]`. Returns the batch size.
fn check_row_tensors(
    queries: &Tensor,
    positives: &Tensor,
    negatives: &Tensor,
    per_query_only: bool,
) -> Result<i64, LossError> {
    let q = shape_of_rank::<2>(queries, "queries rank", "[B, D]")?;
    let p = shape_of_rank::<2>(positives, "positives rank", "[B, D]")?;
    let n = if per_query_only {
        shape_of_rank::<3>(negatives, "negatives rank", "[B, m, D]")?.to_vec()
    } else {
        shape_of(negatives)
    };
    crate::infonce::check_row_shapes(q, p, &n)?;
    Ok(q[0] as i64)
}

/// `x / ‖x‖` along the last axis of queries, positives or negatives (`[B, D]`, `[K, D]` or
/// `[B, m, D]`) when `normalize`; a zero row is an error naming its index.
fn maybe_normalize(x: &Tensor, what: &'static str, normalize: bool) -> Result<Tensor, LossError> {
    if !normalize {
        return Ok(x.shallow_clone());
    }
    normalize_rows(x, what)
}

use crate::explicit::check_temperature;

/// MoCo's InfoNCE on libtorch tensors, with its autograd graph, as MoCo's `MoCo.forward` writes
/// it: `l_pos = einsum('nc,nc->n', q, k)`, `l_neg` = the queries against the negatives,
/// `logits = cat([l_pos, l_neg], 1) / τ`, `cross_entropy(logits, zeros)`.
///
/// - `queries`: `[B, D]`, floating point (`requires_grad`).
/// - `positives`: `[B, D]`, detached inside (no gradient).
/// - `negatives`: `[K, D]` (shared, MoCo's queue) or `[B, m, D]` (per query), detached inside.
///
/// With `normalize`, every row is L2-normalized first. Returns the scalar loss (the mean over
/// the B queries); `loss.backward()` fills `queries.grad()`. Shapes, τ, finiteness and (with
/// `normalize`) zero rows are checked, with the errors of [`crate::infonce_loss`] (one
/// device synchronization for the finiteness of all three inputs).
pub fn infonce_loss_tensor(
    queries: &Tensor,
    positives: &Tensor,
    negatives: &Tensor,
    options: &InfoNceOptions,
) -> Result<Tensor, LossError> {
    check_temperature(options.temperature)?;
    let batch = check_row_tensors(queries, positives, negatives, false)?;
    let shared = negatives.dim() == 2;
    check_all_finite(&[
        (queries, "queries"),
        (positives, "positives"),
        (negatives, "negatives"),
    ])?;
    let q = maybe_normalize(queries, "queries", options.normalize)?;
    let k = maybe_normalize(&positives.detach(), "positives", options.normalize)?;
    let negatives = maybe_normalize(&negatives.detach(), "negatives", options.normalize)?;
    // positive logits: Nx1
    let l_pos = Tensor::f_einsum("nc,nc->n", &[&q, &k], None::<&[i64]>)
        .and_then(|t| t.f_unsqueeze(-1))
        .map_err(backend_error)?;
    // negative logits: NxK
    let equation = if shared { "nc,kc->nk" } else { "nc,nkc->nk" };
    let l_neg =
        Tensor::f_einsum(equation, &[&q, &negatives], None::<&[i64]>).map_err(backend_error)?;
    // logits: Nx(1+K), the positive at index 0
    let logits = Tensor::f_cat(&[&l_pos, &l_neg], 1).map_err(backend_error)? / options.temperature;
    let labels = Tensor::f_zeros([batch], (Kind::Int64, logits.device())).map_err(backend_error)?;
    logits
        .f_cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0)
        .map_err(backend_error)
}

/// InstDisc's NCE on libtorch tensors, with its autograd graph, written from the formula:
/// `P = exp(s/τ) / Z` for the positive and the m negatives of each query,
/// `h = P / (P + m/N)`, `loss = −mean_b (log h_b0 + Σ_j log(1 − h_bj))`.
///
/// - `queries`: `[B, D]`, floating point (`requires_grad`).
/// - `positives`: `[B, D]` and `negatives`: `[B, m, D]` (memory-bank entries), detached inside.
///
/// With `options.partition = None`, Z is estimated as `N · mean(exp(s_neg/τ))` over all
/// query–negative pairs and detached (no gradient through Z). Returns the loss, the Z used and
/// the batch's estimate of Z ([`NceTensorOutput`]).
/// Unlike [`crate::nce_loss`] this is the direct formula (what InstDisc's code computes, without
/// its 1e-7): it can underflow for extreme similarities. Shapes, τ, N, Z, finiteness and
/// (with `normalize`) zero rows are checked, with the errors of [`crate::nce_loss`].
pub fn nce_loss_tensor(
    queries: &Tensor,
    positives: &Tensor,
    negatives: &Tensor,
    options: &NceOptions,
) -> Result<NceTensorOutput, LossError> {
    options.check()?;
    let batch = check_row_tensors(queries, positives, negatives, true)?;
    let m = negatives.size()[1];
    check_all_finite(&[
        (queries, "queries"),
        (positives, "positives"),
        (negatives, "negatives"),
    ])?;
    let q = maybe_normalize(queries, "queries", options.normalize)?;
    let k = maybe_normalize(&positives.detach(), "positives", options.normalize)?;
    let negatives = maybe_normalize(&negatives.detach(), "negatives", options.normalize)?;
    let kind = q.kind();
    // [B, m+1, D] bank entries (the positive first) times the queries: [B, m+1] similarities.
    let weight = Tensor::f_cat(&[&k.unsqueeze(1), &negatives], 1).map_err(backend_error)?;
    let out = weight
        .f_bmm(&q.unsqueeze(2))
        .and_then(|t| t.f_squeeze_dim(2))
        .map_err(backend_error)?;
    let out = (out / options.temperature).exp();
    let n = options.dataset_size as f64;
    // The batch's estimate stays on the device: reading it waits for the device, so it is read
    // here only when Z must be estimated, and a caller reads it after its backward pass.
    let batch_partition = out
        .detach()
        .f_narrow(1, 1, m)
        .and_then(|t| t.f_mean(kind))
        .and_then(|t| t.f_to_kind(Kind::Double))
        .map_err(backend_error)?
        * n;
    let z = match options.partition {
        Some(z) => z,
        None => batch_partition.f_double_value(&[]).map_err(backend_error)?,
    };
    let p = out / z;
    let noise = m as f64 / n; // m·P_n
    let p_pos = p.f_narrow(1, 0, 1).map_err(backend_error)?;
    let p_neg = p.f_narrow(1, 1, m).map_err(backend_error)?;
    let log_h_pos = (&p_pos / (&p_pos + noise)).log();
    let log_one_minus_h_neg = (noise / (&p_neg + noise)).log();
    let total = log_h_pos.sum(kind) + log_one_minus_h_neg.sum(kind);
    Ok(NceTensorOutput {
        loss: total * (-1.0 / batch as f64),
        partition: z,
        batch_partition,
    })
}

/// What [`nce_loss_tensor`] returns.
#[derive(Debug)]
pub struct NceTensorOutput {
    /// The loss, with its autograd graph.
    pub loss: Tensor,
    /// The Z used: the given one, or the batch's estimate.
    pub partition: f64,
    /// The batch's estimate of Z whichever Z was used ([`crate::NceOutput::batch_partition`]),
    /// a detached f64 scalar on the loss's device: reading it (`f_double_value`) waits for the
    /// device, so read it after the backward pass.
    pub batch_partition: Tensor,
}

/// Uploads host rows to `device` (queries with `requires_grad`).
fn upload_queries(
    queries: ndarray::ArrayView2<'_, f32>,
    positives: ndarray::ArrayView2<'_, f32>,
    device: Device,
) -> Result<(Tensor, Tensor), LossError> {
    Ok((
        to_tensor(queries.into_dyn(), device)?.set_requires_grad(true),
        to_tensor(positives.into_dyn(), device)?,
    ))
}

/// ∂loss/∂queries `[B, D]` on the host after the loss's backward pass.
fn query_gradient(queries: &Tensor) -> Result<ndarray::Array2<f32>, LossError> {
    let (batch, dim) = queries.size2().map_err(backend_error)?;
    ndarray::Array2::from_shape_vec(
        (batch as usize, dim as usize),
        host_values(&queries.grad())?,
    )
    .map_err(|e| LossError::Backend(format!("gradient of unexpected size: {e}")))
}

/// InfoNCE of host `f32` inputs through libtorch on `device`: [`infonce_loss_tensor`] (which
/// validates like [`crate::validate_infonce`]) and autograd; the loss and ∂loss/∂queries come
/// back. The counterpart of [`crate::infonce_loss`] behind [`crate::InfoNceOp`].
pub fn infonce_tch(
    input: &crate::InfoNceInput<'_>,
    options: &InfoNceOptions,
    device: Device,
) -> Result<crate::InfoNceOutput, LossError> {
    let (queries, positives) = upload_queries(input.queries, input.positives, device)?;
    let negatives = match &input.negatives {
        crate::Negatives::Shared(keys) => to_tensor(keys.into_dyn(), device)?,
        crate::Negatives::PerQuery(rows) => to_tensor(rows.into_dyn(), device)?,
    };
    let loss = infonce_loss_tensor(&queries, &positives, &negatives, options)?;
    loss.f_backward().map_err(backend_error)?;
    Ok(crate::InfoNceOutput {
        loss: finite_value(&loss)?,
        grad: query_gradient(&queries)?,
    })
}

/// InstDisc's NCE of host `f32` inputs through libtorch on `device`: [`nce_loss_tensor`]
/// (which validates like [`crate::validate_nce`]) and autograd; the loss, ∂loss/∂queries and
/// the Z used come back. The counterpart of [`crate::nce_loss`] behind [`crate::NceOp`].
pub fn nce_tch(
    input: &crate::NceInput<'_>,
    options: &NceOptions,
    device: Device,
) -> Result<crate::NceOutput, LossError> {
    let (queries, positives) = upload_queries(input.queries, input.positives, device)?;
    let negatives = to_tensor(input.negatives.into_dyn(), device)?;
    let out = nce_loss_tensor(&queries, &positives, &negatives, options)?;
    out.loss.f_backward().map_err(backend_error)?;
    Ok(crate::NceOutput {
        loss: finite_value(&out.loss)?,
        grad: query_gradient(&queries)?,
        partition: out.partition,
        batch_partition: out
            .batch_partition
            .f_double_value(&[])
            .map_err(backend_error)?,
    })
}

// SwAV on tensors.

use crate::{SwavInput, SwavOptions, SwavOutput};

/// SwAV's loss on libtorch tensors, with its autograd graph, the way SwAV's `main_swav.py`
/// computes it: `output` = the crops' scores against the prototypes (crop-major, `[S·B, K]`);
/// for each assignment crop, under `torch.no_grad()`, the queue's scores are concatenated before
/// the crop's and `distributed_sinkhorn` (world size 1: `exp(out/ε)`, normalize, alternate row
/// and column normalizations, times N) gives the codes of the batch rows; every other crop adds
/// `−mean(sum(q · log_softmax(x/τ, 1), 1))`, divided by S − 1; the sum over assignment crops is
/// divided by A.
///
/// - `features`: `[B, S, D]` (`requires_grad`), normalized inside with `options.normalize`.
/// - `prototypes`: `[K, D]` (`requires_grad` for their gradient); used as given.
/// - `queue`: `[A, Q, D]` stored features, detached (no gradient); normalized with `normalize`.
///
/// Sinkhorn runs in the features' kind without log-space stabilization, as SwAV's does, so it
/// needs scores below about 88·ε in `f32` (unit rows with ε = 0.05 are far from it). Options, shapes
/// and finiteness are checked like [`crate::validate_swav`] (the same errors; one device
/// synchronization for the finiteness).
pub fn swav_loss_tensor(
    features: &Tensor,
    prototypes: &Tensor,
    queue: Option<&Tensor>,
    options: &SwavOptions,
) -> Result<Tensor, LossError> {
    swav_loss_tensor_with_codes(features, prototypes, queue, options).map(|(loss, _)| loss)
}

/// [`swav_loss_tensor`] and the codes it used, `[A, B, K]` (no gradient).
pub fn swav_loss_tensor_with_codes(
    features: &Tensor,
    prototypes: &Tensor,
    queue: Option<&Tensor>,
    options: &SwavOptions,
) -> Result<(Tensor, Tensor), LossError> {
    crate::swav::check_options(options)?;
    let (batch, crops, dim) = features.size3().map_err(|_| LossError::ShapeMismatch {
        what: "features rank",
        expected: "3 ([batch, crops, dim])".into(),
        actual: format!("{} (shape {:?})", features.dim(), features.size()),
    })?;
    let (k, prototype_dim) = prototypes.size2().map_err(|_| LossError::ShapeMismatch {
        what: "prototypes rank",
        expected: "2 ([K, dim])".into(),
        actual: format!("{} (shape {:?})", prototypes.dim(), prototypes.size()),
    })?;
    let queue_shape = match queue {
        Some(q) => Some(q.size3().map_err(|_| LossError::ShapeMismatch {
            what: "queue rank",
            expected: "3 ([assignment crops, Q, dim])".into(),
            actual: format!("{} (shape {:?})", q.dim(), q.size()),
        })?),
        None => None,
    };
    let as_usize = |x: i64| x as usize;
    crate::swav::check_shapes(
        [as_usize(batch), as_usize(crops), as_usize(dim)],
        [as_usize(k), as_usize(prototype_dim)],
        queue_shape.map(|(a, q, d)| [as_usize(a), as_usize(q), as_usize(d)]),
        options,
    )?;
    let mut inputs = vec![(features, "features"), (prototypes, "prototypes")];
    inputs.extend(queue.map(|q| (q, "queue")));
    check_all_finite(&inputs)?;
    let kind = features.kind();
    let device = features.device();
    let z = if options.normalize {
        normalize_rows(features, "features")?
    } else {
        features.shallow_clone()
    };
    // SwAV's `output`: row v·B + b is crop v of image b.
    let output = z
        .f_transpose(0, 1)
        .and_then(|t| t.f_reshape([crops * batch, dim]))
        .and_then(|t| t.f_matmul(&prototypes.tr()))
        .map_err(backend_error)?;
    let queue = match (queue, queue_shape) {
        (Some(q), Some((_, rows, _))) if rows > 0 => {
            let q = q
                .f_to_device(device)
                .and_then(|t| t.f_to_kind(kind))
                .map_err(backend_error)?
                .detach();
            Some(if options.normalize {
                normalize_rows(&q, "queue")?
            } else {
                q
            })
        }
        _ => None,
    };
    let assign = options.assignment_crops as i64;
    let mut loss = Tensor::f_zeros([], (kind, device)).map_err(backend_error)?;
    let mut codes = Vec::new();
    for i in 0..assign {
        let q = tch::no_grad(|| -> Result<Tensor, LossError> {
            let mut out = output
                .f_narrow(0, batch * i, batch)
                .map_err(backend_error)?
                .detach();
            if let Some(queue) = &queue {
                let stored = queue
                    .f_get(i)
                    .and_then(|u| u.f_matmul(&prototypes.detach().tr()))
                    .map_err(backend_error)?;
                out = Tensor::f_cat(&[&stored, &out], 0).map_err(backend_error)?;
            }
            let q = swav_sinkhorn(&out, options.epsilon, options.sinkhorn_iterations);
            let n = q.size()[0];
            q.f_narrow(0, n - batch, batch).map_err(backend_error)
        })?;
        let mut subloss = Tensor::f_zeros([], (kind, device)).map_err(backend_error)?;
        for v in (0..crops).filter(|&v| v != i) {
            let x = output
                .f_narrow(0, batch * v, batch)
                .map_err(backend_error)?
                / options.temperature;
            let term = (&q * x.log_softmax(1, kind))
                .sum_dim_intlist([1i64].as_slice(), false, kind)
                .mean(kind);
            subloss -= term;
        }
        loss += subloss / (crops - 1) as f64;
        codes.push(q);
    }
    let codes = Tensor::f_stack(&codes, 0).map_err(backend_error)?;
    Ok((loss / assign as f64, codes))
}

/// SwAV's `distributed_sinkhorn` with world size 1, on scores `out` `[N, K]`: `[N, K]` codes.
fn swav_sinkhorn(out: &Tensor, epsilon: f64, iterations: usize) -> Tensor {
    let kind = out.kind();
    // Q is K-by-N.
    let mut q = (out / epsilon).exp().tr();
    let (k, n) = (q.size()[0] as f64, q.size()[1] as f64);
    // Make the matrix sum to 1 (in place, as SwAV's `Q /= sum_Q`).
    let total = q.sum(kind);
    q /= total;
    for _ in 0..iterations {
        // Each prototype's total mass 1/K.
        let rows = q.sum_dim_intlist([1i64].as_slice(), true, kind);
        q /= rows;
        q /= k;
        // Each sample's total mass 1/N.
        let columns = q.sum_dim_intlist([0i64].as_slice(), true, kind);
        q /= columns;
        q /= n;
    }
    q *= n;
    q.tr()
}

/// The SwAV loss of host `f32` inputs through libtorch on `device`: runs
/// [`swav_loss_tensor_with_codes`] (which validates like [`crate::validate_swav`], finiteness
/// included) and autograd, and copies the loss, both gradients and the codes back. The
/// counterpart of [`crate::swav`] that the tests compare it with.
pub fn swav_tch(
    input: &SwavInput<'_>,
    options: &SwavOptions,
    device: Device,
) -> Result<SwavOutput, LossError> {
    let (batch, crops, dim) = input.features.dim();
    let k = input.prototypes.nrows();
    let features = to_tensor(input.features.into_dyn(), device)?.set_requires_grad(true);
    let prototypes = to_tensor(input.prototypes.into_dyn(), device)?.set_requires_grad(true);
    let queue = input
        .queue
        .map(|q| to_tensor(q.into_dyn(), device))
        .transpose()?;
    let (loss, codes) =
        swav_loss_tensor_with_codes(&features, &prototypes, queue.as_ref(), options)?;
    loss.f_backward().map_err(backend_error)?;
    let loss_value = finite_value(&loss)?;
    let to_host = host_values;
    let shape_error = |e: ndarray::ShapeError| LossError::Backend(format!("unexpected size: {e}"));
    Ok(SwavOutput {
        loss: loss_value,
        grad_features: Array3::from_shape_vec((batch, crops, dim), to_host(&features.grad())?)
            .map_err(shape_error)?,
        grad_prototypes: ndarray::Array2::from_shape_vec((k, dim), to_host(&prototypes.grad())?)
            .map_err(shape_error)?,
        codes: Array3::from_shape_vec((options.assignment_crops, batch, k), to_host(&codes)?)
            .map_err(shape_error)?,
        anchors: batch * options.assignment_crops,
    })
}

// CMC and CPC on tensors.

use crate::{CmcOptions, CmcOutput, CpcOptions, CpcOutput};

/// Shape, τ and finiteness checks of a CMC / CPC tensor entry point, then its rows normalized
/// with `normalize`.
fn checked_rows(
    inputs: &[(&Tensor, &'static str)],
    temperature: f64,
    normalize: bool,
) -> Result<Vec<Tensor>, LossError> {
    check_temperature(temperature)?;
    check_all_finite(inputs)?;
    inputs
        .iter()
        .map(|(x, what)| maybe_normalize(x, what, normalize))
        .collect()
}

/// CMC's cross-view loss on libtorch tensors, with its autograd graph: for every pair (i, j)
/// of `options.pairing`, `cross_entropy(ẑ_i ẑ_jᵀ / τ, arange(B))`, summed over the pairs.
/// `views`: `[V, B, D]` (`requires_grad`). Shapes, τ, finiteness and zero rows are checked with
/// [`crate::validate_cmc`]'s errors.
pub fn cmc_loss_tensor(views: &Tensor, options: &CmcOptions) -> Result<Tensor, LossError> {
    crate::cmc::check_cmc_shape(&shape_of(views)).and_then(|()| {
        if views.dim() == 3 {
            Ok(())
        } else {
            Err(LossError::ShapeMismatch {
                what: "views rank",
                expected: "3 ([views, batch, dim])".into(),
                actual: format!("{} (shape {:?})", views.dim(), views.size()),
            })
        }
    })?;
    let z = checked_rows(&[(views, "views")], options.temperature, options.normalize)?.remove(0);
    let (count, batch) = (views.size()[0], views.size()[1]);
    let labels = Tensor::f_arange(batch, (Kind::Int64, views.device())).map_err(backend_error)?;
    let mut loss = Tensor::f_zeros([], (z.kind(), z.device())).map_err(backend_error)?;
    for (i, j) in options.pairing.pairs(count as usize) {
        let logits = z.get(i as i64).matmul(&z.get(j as i64).tr()) / options.temperature;
        loss += logits
            .f_cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0)
            .map_err(backend_error)?;
    }
    Ok(loss)
}

/// CPC's InfoNCE over a grid on libtorch tensors, with its autograd graph: the valid
/// predictions (t + k + 1 < T) against every target row, `cross_entropy(p̂ ẑᵀ / τ, positives)`.
/// `predictions`: `[B, T, K, D]`, `targets`: `[B, T, D]` (both `requires_grad`). Checked with
/// [`crate::validate_cpc`]'s errors.
pub fn cpc_loss_tensor(
    predictions: &Tensor,
    targets: &Tensor,
    options: &CpcOptions,
) -> Result<Tensor, LossError> {
    let p_shape = shape_of_rank::<4>(predictions, "predictions rank", "[B, T, K, D]")?;
    let z_shape = shape_of_rank::<3>(targets, "targets rank", "[B, T, D]")?;
    crate::cpc::check_cpc_shapes(&p_shape, &z_shape)?;
    let rows = checked_rows(
        &[(predictions, "predictions"), (targets, "targets")],
        options.temperature,
        options.normalize,
    )?;
    let [batch, positions, offsets, dim] = p_shape;
    let valid = crate::cpc::valid_predictions(batch, positions, offsets);
    let query_rows: Vec<i64> = valid.iter().map(|&(row, _)| row as i64).collect();
    let positives: Vec<i64> = valid.iter().map(|&(_, target)| target as i64).collect();
    let device = predictions.device();
    let queries = rows[0]
        .reshape([-1, dim as i64])
        .index_select(0, &Tensor::from_slice(&query_rows).to_device(device));
    let candidates = rows[1].reshape([-1, dim as i64]);
    let logits = queries.matmul(&candidates.tr()) / options.temperature;
    logits
        .f_cross_entropy_loss::<Tensor>(
            &Tensor::from_slice(&positives).to_device(device),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        )
        .map_err(backend_error)
}

/// [`cmc_loss_tensor`] on host `f32` views through libtorch on `device`, the gradient copied
/// back: the counterpart of [`crate::cmc_loss`] behind [`crate::CmcOp`].
pub fn cmc_tch(
    views: ndarray::ArrayView3<'_, f32>,
    options: &CmcOptions,
    device: Device,
) -> Result<CmcOutput, LossError> {
    let tensor = to_tensor(views.into_dyn(), device)?.set_requires_grad(true);
    let loss = cmc_loss_tensor(&tensor, options)?;
    loss.f_backward().map_err(backend_error)?;
    Ok(CmcOutput {
        loss: finite_value(&loss)?,
        grad: Array3::from_shape_vec(views.dim(), host_values(&tensor.grad())?)
            .map_err(|e| LossError::Backend(format!("gradient of unexpected size: {e}")))?,
        pairs: options.pairing.pairs(views.dim().0).len(),
    })
}

/// [`cpc_loss_tensor`] on host `f32` inputs through libtorch on `device`, both gradients
/// copied back: the counterpart of [`crate::cpc_loss`] behind [`crate::CpcOp`].
pub fn cpc_tch(
    predictions: ndarray::ArrayView4<'_, f32>,
    targets: ndarray::ArrayView3<'_, f32>,
    options: &CpcOptions,
    device: Device,
) -> Result<CpcOutput, LossError> {
    let p = to_tensor(predictions.into_dyn(), device)?.set_requires_grad(true);
    let z = to_tensor(targets.into_dyn(), device)?.set_requires_grad(true);
    let loss = cpc_loss_tensor(&p, &z, options)?;
    loss.f_backward().map_err(backend_error)?;
    let shape_error = |e: ndarray::ShapeError| LossError::Backend(format!("unexpected size: {e}"));
    let (batch, positions, offsets, _) = predictions.dim();
    Ok(CpcOutput {
        loss: finite_value(&loss)?,
        grad_predictions: ndarray::Array4::from_shape_vec(
            predictions.dim(),
            host_values(&p.grad())?,
        )
        .map_err(shape_error)?,
        grad_targets: Array3::from_shape_vec(targets.dim(), host_values(&z.grad())?)
            .map_err(shape_error)?,
        predictions: crate::cpc::valid_predictions(batch, positions, offsets).len(),
    })
}
