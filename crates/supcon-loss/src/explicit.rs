//! What the losses with an explicit positive per query share ([`crate::infonce`],
//! [`crate::nce`]): input checks that name the input and the index, L2 norms, the
//! normalization's backward pass, softplus and the logistic function.

use ndarray::{ArrayView1, ArrayViewMut1};

use crate::{Element, LossError};

/// τ must be positive and finite.
pub(crate) fn check_temperature(value: f64) -> Result<(), LossError> {
    crate::checks::check_temperature("temperature", value)
}

/// `EmptyAxis` for the first zero-length axis of `what` (axes named by `axes`).
pub(crate) fn check_not_empty(
    what: &'static str,
    shape: &[usize],
    axes: &[&'static str],
) -> Result<(), LossError> {
    for (&len, &axis) in shape.iter().zip(axes) {
        if len == 0 {
            return Err(LossError::EmptyAxis {
                what,
                axis,
                shape: shape.to_vec(),
            });
        }
    }
    Ok(())
}

/// `ShapeMismatch` unless `actual == expected` for the axis `what` (e.g. `"positives dim"`).
pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    expected_why: &str,
    actual: usize,
    actual_shape: &[usize],
) -> Result<(), LossError> {
    if actual == expected {
        Ok(())
    } else {
        Err(LossError::ShapeMismatch {
            what,
            expected: format!("{expected} ({expected_why})"),
            actual: format!("{actual} (shape {actual_shape:?})"),
        })
    }
}

/// Writes `row` into `out`, L2-normalized when `normalize` (in f64, rounded once to `T`), and
/// returns the `1/‖row‖` it used (1 when not normalizing): how every loss lays out its rows.
pub(crate) fn write_row<T: Element>(
    row: ArrayView1<'_, T>,
    mut out: ArrayViewMut1<'_, T>,
    normalize: bool,
) -> f64 {
    if !normalize {
        out.assign(&row);
        return 1.0;
    }
    let inv = inverse_norm(row, true);
    for (o, &e) in out.iter_mut().zip(row.iter()) {
        *o = T::from_f64(e.to_f64() * inv);
    }
    inv
}

/// 1/‖x‖ without overflow or underflow in the squares; 1 when not normalizing.
/// (Validation rejected all-zero rows when normalizing.)
pub(crate) fn inverse_norm<T: Element>(row: ArrayView1<'_, T>, normalize: bool) -> f64 {
    if !normalize {
        return 1.0;
    }
    let largest = row.iter().fold(0.0f64, |m, x| m.max(x.to_f64().abs()));
    let scaled: f64 = row
        .iter()
        .map(|x| {
            let x = x.to_f64() / largest;
            x * x
        })
        .sum();
    1.0 / (largest * scaled.sqrt())
}

/// `Σ_d a_d b_d` in `f64`.
pub(crate) fn dot_f64<T: Element>(a: ArrayView1<'_, T>, b: ArrayView1<'_, T>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| x.to_f64() * y.to_f64())
        .sum()
}

/// `acc += weight · row` in `f64`.
pub(crate) fn add_scaled<T: Element>(acc: &mut [f64], weight: f64, row: ArrayView1<'_, T>) {
    for (a, &x) in acc.iter_mut().zip(row.iter()) {
        *a += weight * x.to_f64();
    }
}

/// The normalization's backward pass in place: with `z = x·inv_norm`, `∂L/∂x = (g − z (z·g))
/// · inv_norm` for `g = ∂L/∂z`. Nothing to do when `inv_norm` is `None` (no normalization).
pub(crate) fn normalization_backward<T: Element>(
    grad: &mut [f64],
    x: ArrayView1<'_, T>,
    inv_norm: Option<f64>,
) {
    let Some(inv_norm) = inv_norm else {
        return;
    };
    let z_dot_g: f64 = x
        .iter()
        .zip(grad.iter())
        .map(|(&x, &g)| x.to_f64() * inv_norm * g)
        .sum();
    for (g, &x) in grad.iter_mut().zip(x.iter()) {
        *g = (*g - x.to_f64() * inv_norm * z_dot_g) * inv_norm;
    }
}

/// `log(1 + eˣ)` without overflow or cancellation.
pub(crate) fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `σ(x) = 1 / (1 + e⁻ˣ)`, the derivative of [`softplus`], without overflow.
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Streaming log-sum-exp of a row's similarities together with the softmax-weighted sum of the
/// rows they came from: `max`, `sum = Σ e^{x−max}` and `acc = Σ e^{x−max} c` (in `f64`),
/// rescaled whenever the maximum rises.
#[derive(Clone, Debug)]
pub(crate) struct OnlineSoftmax {
    pub(crate) max: f64,
    pub(crate) sum: f64,
    pub(crate) acc: Vec<f64>,
}

impl OnlineSoftmax {
    pub(crate) fn new(dim: usize) -> Self {
        Self {
            max: f64::NEG_INFINITY,
            sum: 0.0,
            acc: vec![0.0; dim],
        }
    }

    /// Raises the running maximum to `top` (if larger), rescaling `sum` and `acc`.
    pub(crate) fn raise_max(&mut self, top: f64) {
        if top > self.max {
            // e^{−∞} = 0 on the first call, when sum and acc are still 0.
            let rescale = (self.max - top).exp();
            self.sum *= rescale;
            for a in &mut self.acc {
                *a *= rescale;
            }
            self.max = top;
        }
    }

    /// `log Σ e^x` of everything folded in (−∞ for nothing).
    pub(crate) fn lse(&self) -> f64 {
        self.max + self.sum.ln()
    }
}
