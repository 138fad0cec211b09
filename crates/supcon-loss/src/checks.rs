//! The checks every loss's host entry point shares: positive temperatures, finite values and
//! rows that can be normalized, each error naming the input and the index.

use ndarray::{ArrayViewD, Axis, Dimension};

use crate::{Element, LossError};

/// A temperature-like option (τ, τ_base, SwAV's ε) must be positive and finite: the one check
/// every loss uses.
pub(crate) fn check_temperature(name: &'static str, value: f64) -> Result<(), LossError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(LossError::InvalidTemperature { name, value })
    }
}

/// The one finiteness check of every host entry point (SupCon, InfoNCE, NCE, SwAV):
/// `NonFinite` naming the first NaN or infinity of `values` in row-major order.
pub(crate) fn check_finite<T: Element>(
    what: &'static str,
    values: ArrayViewD<'_, T>,
) -> Result<(), LossError> {
    // The common case (all finite) without building indices.
    if values.iter().all(|x| x.to_f64().is_finite()) {
        return Ok(());
    }
    match values.indexed_iter().find(|(_, x)| !x.to_f64().is_finite()) {
        Some((index, &x)) => Err(LossError::NonFinite {
            what,
            index: index.slice().to_vec(),
            value: x.to_f64(),
        }),
        None => Ok(()),
    }
}

/// `ZeroNorm` naming the first all-zero row (last axis) of `values`; the index leaves out the
/// last axis (`[b]` for `[B, D]`, `[b, j]` for `[B, m, D]`).
pub(crate) fn check_nonzero_rows<T: Element>(
    what: &'static str,
    values: ArrayViewD<'_, T>,
) -> Result<(), LossError> {
    let last = values.ndim().saturating_sub(1);
    let outer: Vec<usize> = values.shape()[..last].to_vec();
    for (flat, row) in values.lanes(Axis(last)).into_iter().enumerate() {
        if row.iter().all(|x| x.to_f64() == 0.0) {
            return Err(LossError::ZeroNorm {
                what,
                index: unravel(flat, &outer),
            });
        }
    }
    Ok(())
}

/// The row-major multi-index of `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (i, &len) in shape.iter().enumerate().rev() {
        index[i] = flat % len.max(1);
        flat /= len.max(1);
    }
    index
}
