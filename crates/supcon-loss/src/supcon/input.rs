//! Borrowed inputs, the output, and the validation every backend shares.

use ndarray::{Array3, ArrayView2, ArrayView3};

use crate::checks::{check_finite, check_nonzero_rows, check_temperature};

use crate::{Element, LossError, SupConOptions};

/// A memory queue (MoCo): K keys `[K, dim]` with one label each. Keys are extra contrast rows
/// for every anchor (positives where their label equals the anchor's, negatives otherwise);
/// no gradient flows into them.
#[derive(Clone, Copy, Debug)]
pub struct Queue<'a, T = f32> {
    /// `[K, dim]` keys.
    pub keys: ArrayView2<'a, T>,
    /// `[K]` labels, in the same label space as the batch labels. Without batch labels
    /// (SimCLR) they are ignored and every key is a negative.
    pub labels: &'a [i64],
}

/// The borrowed inputs of one loss evaluation.
#[derive(Clone, Copy, Debug)]
pub struct SupConInput<'a, T = f32> {
    /// `[batch, views, dim]`: the projections of every view of every sample.
    pub features: ArrayView3<'a, T>,
    /// `[batch]` class labels; `None` = SimCLR (each sample is its own class).
    pub labels: Option<&'a [i64]>,
    /// Optional memory queue of extra contrast rows.
    pub queue: Option<Queue<'a, T>>,
}

/// The loss, its gradient with respect to the features, and how many anchors it averages.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOutput<T = f32> {
    /// The loss, already scaled by τ / τ_base and averaged over the anchors that have a positive.
    pub loss: f64,
    /// ∂loss/∂features, the features' shape `[batch, views, dim]` (standard layout).
    pub grad: Array3<T>,
    /// |I|: anchors with at least one positive (the denominator of the mean). 0 means the loss
    /// and the gradient are exactly zero.
    pub anchors: usize,
}

impl<T: Element> LossOutput<T> {
    /// The output for a batch where no anchor has a positive: loss 0, zero gradient.
    pub fn zero(shape: [usize; 3]) -> Self {
        Self {
            loss: 0.0,
            grad: Array3::zeros(shape),
            anchors: 0,
        }
    }
}

impl<'a, T> SupConInput<'a, T> {
    /// Features and optional labels, no queue.
    pub fn new(features: ArrayView3<'a, T>, labels: Option<&'a [i64]>) -> Self {
        Self {
            features,
            labels,
            queue: None,
        }
    }

    /// The same input with a queue.
    pub fn with_queue(self, queue: Queue<'a, T>) -> Self {
        Self {
            queue: Some(queue),
            ..self
        }
    }

    /// K, the number of queue keys (0 without a queue).
    pub fn queue_len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.keys.nrows())
    }

    /// M = batch · views + K, the number of contrast rows.
    pub fn contrast_rows(&self) -> usize {
        let (batch, views, _) = self.features.dim();
        batch * views + self.queue_len()
    }
}

/// The shapes of one loss call, whatever holds the data (host arrays, libtorch or CUDA
/// tensors): what [`check_shape`] judges, so that every entry point applies one set of rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputShape {
    /// `[batch, views, dim]` of the features.
    pub features: [usize; 3],
    /// Length of the batch labels (`None`: SimCLR, no labels).
    pub labels: Option<usize>,
    /// `(keys, key dim, labels)` of the queue.
    pub queue: Option<(usize, usize, usize)>,
}

impl InputShape {
    /// The shapes of a host input.
    pub fn of<T>(input: &SupConInput<'_, T>) -> Self {
        let (batch, views, dim) = input.features.dim();
        Self {
            features: [batch, views, dim],
            labels: input.labels.map(<[i64]>::len),
            queue: input.queue.as_ref().map(|q| {
                let (keys, key_dim) = q.keys.dim();
                (keys, key_dim, q.labels.len())
            }),
        }
    }
}

/// The options and shape rules every entry point applies first, in this order: τ and τ_base
/// positive and finite; batch, views and dim non-zero; labels length = batch; queue keys
/// `[K, dim]`, with K labels when the batch has labels (without batch labels — SimCLR, MoCo —
/// every key is a negative and the queue labels are not read); at least two contrast rows.
pub fn check_shape(shape: &InputShape, options: &SupConOptions) -> Result<(), LossError> {
    check_temperature("temperature", options.temperature)?;
    if let Some(base) = options.base_temperature {
        check_temperature("base_temperature", base)?;
    }
    let [batch, views, dim] = shape.features;
    for (axis, len) in [("batch", batch), ("views", views), ("dim", dim)] {
        if len == 0 {
            return Err(LossError::EmptyAxis {
                what: "features",
                axis,
                shape: shape.features.to_vec(),
            });
        }
    }
    if let Some(labels) = shape.labels {
        if labels != batch {
            return Err(LossError::ShapeMismatch {
                what: "labels length",
                expected: format!("{batch} (the batch size of features {:?})", shape.features),
                actual: labels.to_string(),
            });
        }
    }
    let mut keys = 0;
    if let Some((k, key_dim, key_labels)) = shape.queue {
        keys = k;
        if k > 0 && key_dim != dim {
            return Err(LossError::ShapeMismatch {
                what: "queue keys dim",
                expected: format!("{dim} (the features' dim)"),
                actual: format!("{key_dim} (keys shape {:?})", [k, key_dim]),
            });
        }
        if shape.labels.is_some() {
            if k > 0 && key_labels == 0 {
                return Err(LossError::QueueLabelsMissing { keys: k });
            }
            if key_labels != k {
                return Err(LossError::ShapeMismatch {
                    what: "queue labels length",
                    expected: format!("{k} (the number of queue keys)"),
                    actual: key_labels.to_string(),
                });
            }
        }
    }
    let rows = batch * views + keys;
    if rows < 2 {
        return Err(LossError::TooFewContrastRows { rows });
    }
    Ok(())
}

/// Checks the inputs and options; every backend calls it first, so all backends reject the
/// same inputs with the same error.
///
/// [`check_shape`]'s rules, then every feature and key finite, and with `normalize` no
/// zero-norm row. Costs O((batch·views + K)·dim). The tensor entry points (`supcon::tensor`,
/// `CudaBackend::compute_tch`) apply the same rules to tensors.
pub fn validate<T: Element>(
    input: &SupConInput<'_, T>,
    options: &SupConOptions,
) -> Result<(), LossError> {
    check_shape(&InputShape::of(input), options)?;
    check_features(input.features, options.normalize)?;
    if let Some(queue) = &input.queue {
        check_keys(queue.keys, options.normalize)?;
    }
    Ok(())
}

fn check_features<T: Element>(
    features: ArrayView3<'_, T>,
    normalize: bool,
) -> Result<(), LossError> {
    // Finiteness first, over the whole array, so the error names the first bad element.
    check_finite("features", features.into_dyn())?;
    if normalize {
        check_nonzero_rows("features", features.into_dyn())?;
    }
    Ok(())
}

fn check_keys<T: Element>(keys: ArrayView2<'_, T>, normalize: bool) -> Result<(), LossError> {
    check_finite("queue keys", keys.into_dyn())?;
    if normalize {
        check_nonzero_rows("queue keys", keys.into_dyn())?;
    }
    Ok(())
}
