//! SupCon / SimCLR on libtorch tensors (feature `tch`): the loss written the way a PyTorch user
//! writes it.
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

use ndarray::Array3;
use tch::{Device, Kind, Tensor};

use crate::libtorch::{
    backend_error, check_all_finite, finite_value, host_labels, host_rows, host_values,
    normalize_rows, to_tensor,
};
use crate::{
    validate, ContrastMode, LossError, LossOutput, Queue, SupConBackend, SupConInput,
    SupConOptions, Variant,
};

/// The SupCon / SimCLR loss on libtorch tensors, with its autograd graph.
///
/// - `features`: `[batch, views, dim]`, floating point, any device; usually the model's
///   L2-normalized projections (`requires_grad`).
/// - `labels`: `[batch]` int64 class labels, or `None` for SimCLR (each sample its own class);
///   a negative label marks an unlabeled sample (semi-supervised SupCon, [`crate::supcon::unlabeled`]).
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
/// `i64::MIN + offset + i`: [`crate::supcon::unlabeled::own_labels`]'s rule on the device, no copy to
/// the host.
fn own_labels_tensor(labels: &Tensor, offset: i64) -> Result<Tensor, LossError> {
    let len = labels.size()[0];
    let own = Tensor::f_arange(len, (Kind::Int64, labels.device())).map_err(backend_error)?
        + crate::supcon::unlabeled::own_label(offset as usize);
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

/// [`crate::SupConBackend`] on libtorch: copies the features into a tensor on `device`, runs
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

impl SupConBackend for TchBackend {
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

/// Host copies of SupCon's tensors, for the CPU backend (and the loss across ranks).
pub struct HostSupCon {
    features: ndarray::Array3<f32>,
    labels: Option<Vec<i64>>,
    queue: Option<(ndarray::Array2<f32>, Vec<i64>)>,
}

impl HostSupCon {
    /// Copies `features` `[B, V, D]`, `labels` `[B]` and the queue's keys `[K, D]` and labels to
    /// the host (the features and keys counted by [`crate::libtorch::host_copies`]).
    pub fn copy(
        features: &Tensor,
        labels: Option<&Tensor>,
        queue: Option<(&Tensor, &Tensor)>,
    ) -> Result<Self, LossError> {
        let features = host_rows::<ndarray::Ix3>(features, "features rank", "[batch, views, dim]")?;
        let labels = labels.map(host_labels).transpose()?;
        let queue = match queue {
            Some((keys, key_labels)) => Some((
                host_rows::<ndarray::Ix2>(keys, "queue keys rank", "[K, dim]")?,
                host_labels(key_labels)?,
            )),
            None => None,
        };
        Ok(Self {
            features,
            labels,
            queue,
        })
    }

    /// The copies as the loss's host input.
    pub fn input(&self) -> SupConInput<'_> {
        SupConInput {
            features: self.features.view(),
            labels: self.labels.as_deref(),
            queue: self.queue.as_ref().map(|(keys, labels)| Queue {
                keys: keys.view(),
                labels,
            }),
        }
    }
}

/// SupCon's CUDA kernels on the tensors where they are ([`crate::supcon::cuda::CudaBackend::compute_tch`]:
/// the features read in place, the gradient written on the device), handed to autograd through
/// [`crate::libtorch::surrogate`]. The labels come to the host (the kernels' class plan is
/// built there).
pub(crate) fn cuda_autograd(
    features: &Tensor,
    labels: Option<&Tensor>,
    queue: Option<(&Tensor, &Tensor)>,
    options: &SupConOptions,
    precision: crate::supcon::cuda::Precision,
) -> Result<(Tensor, usize), LossError> {
    let ordinal = match features.device() {
        Device::Cuda(ordinal) => ordinal,
        other => {
            return Err(LossError::ShapeMismatch {
                what: "features device",
                expected: "a CUDA device (the cuda backend reads the tensors in place)".into(),
                actual: format!("{other:?}"),
            })
        }
    };
    let backend = crate::supcon::cuda::shared_backend(ordinal, precision)?;
    let as_f32 = |t: &Tensor| -> Result<Tensor, LossError> {
        Ok(t.detach()
            .f_to_kind(Kind::Float)
            .map_err(backend_error)?
            .contiguous())
    };
    let labels = labels.map(host_labels).transpose()?;
    let keys = match queue {
        Some((keys, key_labels)) => Some((as_f32(keys)?, host_labels(key_labels)?)),
        None => None,
    };
    let out = backend.compute_tch(
        &as_f32(features)?,
        labels.as_deref(),
        keys.as_ref().map(|(k, l)| (k, l.as_slice())),
        options,
    )?;
    let loss = crate::libtorch::surrogate(out.loss, &[(features, out.grad)])?;
    Ok((loss, out.anchors))
}
