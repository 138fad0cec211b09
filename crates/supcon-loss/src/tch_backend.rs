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

use crate::{
    validate, ContrastMode, LossBackend, LossError, LossOutput, SupConInput, SupConOptions, Variant,
};
use ndarray::Array3;
use tch::{Device, Kind, Tensor};

fn backend_error(e: tch::TchError) -> LossError {
    LossError::Backend(format!("libtorch: {e}"))
}

/// The SupCon / SimCLR loss on libtorch tensors, with its autograd graph.
///
/// - `features`: `[batch, views, dim]`, floating point, any device; usually the model's
///   L2-normalized projections (`requires_grad`).
/// - `labels`: `[batch]` int64 class labels, or `None` for SimCLR (each sample its own class).
/// - `queue`: `(keys [K, dim], labels [K])`: extra contrast rows that get no gradient; their
///   labels are ignored without batch labels (every key is then a negative).
///
/// Returns the scalar loss; `loss.backward()` fills `features.grad()`. When no anchor has a
/// positive the loss is `0 · Σ features` (zero, with a zero gradient). Shapes, temperatures
/// and (with `normalize`) zero rows are checked; finiteness is not (it would need a
/// device-to-host sync per call; [`TchBackend`] checks it on the host).
pub fn supcon_loss_tensor(
    features: &Tensor,
    labels: Option<&Tensor>,
    queue: Option<(&Tensor, &Tensor)>,
    options: &SupConOptions,
) -> Result<Tensor, LossError> {
    supcon_loss_tensor_with_anchors(features, labels, queue, options).map(|(loss, _)| loss)
}

/// [`supcon_loss_tensor`] and |I|, the number of anchors with at least one positive.
pub fn supcon_loss_tensor_with_anchors(
    features: &Tensor,
    labels: Option<&Tensor>,
    queue: Option<(&Tensor, &Tensor)>,
    options: &SupConOptions,
) -> Result<(Tensor, usize), LossError> {
    check_options(options)?;
    let (batch, views, dim) = features.size3().map_err(|_| LossError::ShapeMismatch {
        what: "features rank",
        expected: "3 ([batch, views, dim])".into(),
        actual: format!("{} (shape {:?})", features.dim(), features.size()),
    })?;
    for (axis, len) in [("batch", batch), ("views", views), ("dim", dim)] {
        if len == 0 {
            return Err(LossError::EmptyAxis {
                what: "features",
                axis,
                shape: features.size().iter().map(|&s| s as usize).collect(),
            });
        }
    }
    let device = features.device();
    let kind = features.kind();
    let n_views = batch * views;

    let mut feats = features.shallow_clone();
    if options.normalize {
        feats = normalize_rows(&feats, "features", views)?;
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
            l.f_to_kind(Kind::Int64)
                .and_then(|l| l.f_to_device(device))
                .map_err(backend_error)?
        }
        None => Tensor::f_arange(batch, (Kind::Int64, device)).map_err(backend_error)?,
    };
    let mut contrast = contrast_feats.shallow_clone();
    let mut contrast_labels = batch_labels.f_repeat([views]).map_err(backend_error)?;
    if let Some((keys, key_labels)) = queue {
        let (k, key_dim) = keys.size2().map_err(|_| LossError::ShapeMismatch {
            what: "queue keys rank",
            expected: "2 ([K, dim])".into(),
            actual: format!("{:?}", keys.size()),
        })?;
        if k > 0 {
            if key_dim != dim {
                return Err(LossError::ShapeMismatch {
                    what: "queue keys dim",
                    expected: format!("{dim} (the features' dim)"),
                    actual: format!("{key_dim} (keys shape {:?})", keys.size()),
                });
            }
            if key_labels.size() != [k] {
                return Err(LossError::ShapeMismatch {
                    what: "queue labels shape",
                    expected: format!("[{k}] (the number of queue keys)"),
                    actual: format!("{:?}", key_labels.size()),
                });
            }
            let mut keys = keys
                .f_to_device(device)
                .and_then(|t| t.f_to_kind(kind))
                .map_err(backend_error)?
                .detach();
            if options.normalize {
                keys = normalize_rows(&keys, "queue keys", 1)?;
            }
            // Without batch labels every key is a negative: −1 never equals a sample index.
            let key_labels = match labels {
                Some(_) => key_labels
                    .f_to_kind(Kind::Int64)
                    .and_then(|l| l.f_to_device(device))
                    .map_err(backend_error)?,
                None => Tensor::f_full([k], -1, (Kind::Int64, device)).map_err(backend_error)?,
            };
            contrast = Tensor::f_cat(&[&contrast, &keys], 0).map_err(backend_error)?;
            contrast_labels =
                Tensor::f_cat(&[&contrast_labels, &key_labels], 0).map_err(backend_error)?;
        }
    }
    let rows = contrast.size()[0];
    if rows < 2 {
        return Err(LossError::TooFewContrastRows {
            rows: rows as usize,
        });
    }

    // Anchors are contrast rows 0..n.
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

fn check_options(options: &SupConOptions) -> Result<(), LossError> {
    let temperatures = [
        ("temperature", Some(options.temperature)),
        ("base_temperature", options.base_temperature),
    ];
    for (name, value) in temperatures {
        if let Some(value) = value {
            if !(value.is_finite() && value > 0.0) {
                return Err(LossError::InvalidTemperature { name, value });
            }
        }
    }
    Ok(())
}

/// `x / ‖x‖` along the last axis. A zero row is an error naming its index: `[b, v]` for
/// `[batch, views, dim]` features, `[k]` for `[K, dim]` queue keys.
fn normalize_rows(x: &Tensor, what: &'static str, views: i64) -> Result<Tensor, LossError> {
    let norms = x.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true);
    let zero = norms.eq(0.0);
    if zero.any().int64_value(&[]) != 0 {
        let first = zero.view([-1]).nonzero().int64_value(&[0, 0]) as usize;
        let index = if x.dim() == 3 {
            vec![first / views as usize, first % views as usize]
        } else {
            vec![first]
        };
        return Err(LossError::ZeroNorm { what, index });
    }
    Ok(x / norms)
}

/// [`crate::LossBackend`] on libtorch: copies the features into a tensor on `device`, runs
/// [`supcon_loss_tensor`] and autograd, and copies the gradient back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TchBackend {
    /// Where the tensors live (`Device::Cpu`, `Device::Cuda(0)`, ...).
    pub device: Device,
}

impl TchBackend {
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
        let loss_value = loss.f_double_value(&[]).map_err(backend_error)?;
        if !loss_value.is_finite() {
            return Err(LossError::Overflow { value: loss_value });
        }
        let grad = features.grad();
        let grad: Vec<f32> = grad
            .f_to_device(Device::Cpu)
            .and_then(|g| g.contiguous().f_view([-1]))
            .and_then(|g| Vec::<f32>::try_from(&g))
            .map_err(backend_error)?;
        let grad = Array3::from_shape_vec((batch, views, dim), grad)
            .map_err(|e| LossError::Backend(format!("gradient of unexpected size: {e}")))?;
        Ok(LossOutput {
            loss: loss_value,
            grad,
            anchors,
        })
    }
}
