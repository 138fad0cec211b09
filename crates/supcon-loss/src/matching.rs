//! What CMC ([`crate::cmc`]) and CPC ([`crate::cpc`]) share: queries that must pick their
//! positive among one shared set of candidate rows, the positive included, with gradients for
//! both the queries and the candidates (both come from trained networks).
//!
//! With queries `q_a` (a < N), candidates `c_j` (j < M), the positive `pos(a)` of each query and
//! a weight w:
//!
//! ```text
//! s_aj = q_a·c_j / τ        LSE_a = log Σ_{j<M} e^{s_aj}        π_aj = e^{s_aj − LSE_a}
//! L = w · Σ_a (LSE_a − s_a,pos(a))
//! G_aj = w · (π_aj − [j = pos(a)]) / τ
//! ∂L/∂q_a = Σ_j G_aj c_j        ∂L/∂c_j = Σ_a G_aj q_a
//! ```
//!
//! Two passes over blocks of rows, each a matrix product in `f64`, in parallel on rayon: the
//! first over query blocks gives `LSE_a` and `∂L/∂q_a`; the second over candidate blocks
//! recomputes its similarities and gives `∂L/∂c_j`. Extra memory is O(block · (N + M)), never
//! the N × M matrix; every output row is written by one block reading the others in a fixed
//! order, so results do not depend on the thread count.

use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Rows per block of either pass.
const BLOCK: usize = 64;

/// The loss of one query set against one candidate set, and the gradients of both (`f64`).
pub(crate) struct Matched {
    pub(crate) loss: f64,
    pub(crate) grad_queries: Array2<f64>,
    pub(crate) grad_candidates: Array2<f64>,
}

/// `L`, `∂L/∂q` and `∂L/∂c` of the module docs for `queries` `[N, D]`, `candidates` `[M, D]`,
/// `positive[a] < M`, temperature `tau` and weight `weight`.
pub(crate) fn match_rows(
    queries: ArrayView2<'_, f64>,
    candidates: ArrayView2<'_, f64>,
    positive: &[usize],
    tau: f64,
    weight: f64,
) -> Matched {
    let (n, dim) = queries.dim();
    let m = candidates.nrows();
    let scale = 1.0 / tau;
    // Pass 1: per query block, the similarities to every candidate, LSE and ∂L/∂q.
    let mut lse = vec![0.0; n];
    let mut grad_queries = Array2::<f64>::zeros((n, dim));
    let losses: Vec<f64> = lse
        .par_chunks_mut(BLOCK)
        .zip(
            grad_queries
                .axis_chunks_iter_mut(Axis(0), BLOCK)
                .into_par_iter(),
        )
        .enumerate()
        .map(|(block, (lse, mut grad))| {
            let start = block * BLOCK;
            let rows = queries.slice(s![start..start + lse.len(), ..]);
            let mut scores = rows.dot(&candidates.t()) * scale;
            let mut loss = 0.0;
            for (r, mut row) in scores.outer_iter_mut().enumerate() {
                let max = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let sum: f64 = row.iter().map(|&x| (x - max).exp()).sum();
                lse[r] = max + sum.ln();
                let pos = positive[start + r];
                loss += lse[r] - row[pos];
                // Row r of G (before the weight and 1/τ, applied once below).
                row.mapv_inplace(|x| (x - lse[r]).exp());
                row[pos] -= 1.0;
            }
            grad.assign(&(scores.dot(&candidates) * (weight * scale)));
            loss
        })
        .collect();
    // Pass 2: per candidate block, the same similarities and ∂L/∂c = Gᵀ q.
    let mut grad_candidates = Array2::<f64>::zeros((m, dim));
    grad_candidates
        .axis_chunks_iter_mut(Axis(0), BLOCK)
        .into_par_iter()
        .enumerate()
        .for_each(|(block, mut grad)| {
            let start = block * BLOCK;
            let rows = candidates.slice(s![start..start + grad.nrows(), ..]);
            let mut g = queries.dot(&rows.t()) * scale;
            for (a, mut row) in g.outer_iter_mut().enumerate() {
                row.mapv_inplace(|x| (x - lse[a]).exp());
                if let Some(j) = positive[a].checked_sub(start).filter(|&j| j < row.len()) {
                    row[j] -= 1.0;
                }
            }
            grad.assign(&(g.t().dot(&queries) * (weight * scale)));
        });
    // Summed in block order: deterministic.
    let loss = weight * losses.iter().sum::<f64>();
    Matched {
        loss,
        grad_queries,
        grad_candidates,
    }
}

/// Rows `[rows, D]` of `values` (any layout) in `f64`, L2-normalized when `normalize`; returns
/// them and each row's `1/‖row‖` (`None` without normalization), for
/// [`crate::explicit::normalization_backward`].
pub(crate) fn prepared_rows<T: crate::Element>(
    values: ndarray::ArrayViewD<'_, T>,
    dim: usize,
    normalize: bool,
) -> (Array2<f64>, Vec<Option<f64>>) {
    let rows = values.len() / dim.max(1);
    let mut out = Array2::<f64>::zeros((rows, dim));
    let mut inverse = Vec::with_capacity(rows);
    for (lane, mut target) in values
        .lanes(Axis(values.ndim() - 1))
        .into_iter()
        .zip(out.outer_iter_mut())
    {
        let inv = crate::explicit::inverse_norm(lane, normalize);
        for (o, &x) in target.iter_mut().zip(lane.iter()) {
            *o = x.to_f64() * inv;
        }
        inverse.push(normalize.then_some(inv));
    }
    (out, inverse)
}

/// `∂L/∂x` in `T` from `∂L/∂x̂` (rows of `grad`) for the rows `values` prepared by
/// [`prepared_rows`] (the normalization's backward pass where it applied), in `values`' shape.
pub(crate) fn input_gradient<T: crate::Element>(
    values: ndarray::ArrayViewD<'_, T>,
    grad: &Array2<f64>,
    inverse: &[Option<f64>],
) -> ndarray::ArrayD<T> {
    let mut out = ndarray::ArrayD::<T>::from_elem(values.raw_dim(), T::from_f64(0.0));
    let last = values.ndim() - 1;
    for (((lane, mut target), g), inv) in values
        .lanes(Axis(last))
        .into_iter()
        .zip(out.lanes_mut(Axis(last)))
        .zip(grad.outer_iter())
        .zip(inverse)
    {
        let mut row: Vec<f64> = g.to_vec();
        crate::explicit::normalization_backward(&mut row, lane, *inv);
        for (o, v) in target.iter_mut().zip(row) {
            *o = T::from_f64(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two passes against the formula written densely.
    #[test]
    fn blocked_passes_match_the_dense_formula() {
        let (n, m, dim) = (70, 130, 5);
        let q = Array2::from_shape_fn((n, dim), |(a, d)| ((a * 3 + d) as f64 * 0.7).sin());
        let c = Array2::from_shape_fn((m, dim), |(j, d)| ((j * 5 + d * 2) as f64 * 0.3).cos());
        let positive: Vec<usize> = (0..n).map(|a| (a * 7) % m).collect();
        let (tau, weight) = (0.3, 0.25);
        let out = match_rows(q.view(), c.view(), &positive, tau, weight);
        let scores = q.dot(&c.t()) / tau;
        let mut g = Array2::<f64>::zeros((n, m));
        let mut loss = 0.0;
        for a in 0..n {
            let lse = scores.row(a).iter().map(|x| x.exp()).sum::<f64>().ln();
            loss += weight * (lse - scores[[a, positive[a]]]);
            for j in 0..m {
                g[[a, j]] =
                    weight * ((scores[[a, j]] - lse).exp() - f64::from(j == positive[a])) / tau;
            }
        }
        assert!((out.loss - loss).abs() < 1e-10 * loss.abs());
        let gap_q = (&out.grad_queries - &g.dot(&c))
            .mapv(f64::abs)
            .fold(0.0, |a: f64, &b| a.max(b));
        let gap_c = (&out.grad_candidates - &g.t().dot(&q))
            .mapv(f64::abs)
            .fold(0.0, |a: f64, &b| a.max(b));
        assert!(gap_q < 1e-12 && gap_c < 1e-12, "{gap_q} {gap_c}");
    }
}
