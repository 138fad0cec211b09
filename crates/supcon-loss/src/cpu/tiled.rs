//! The tiled, streaming SupCon algorithm (see the crate docs for the math and `loss-math.md` in
//! the book for the algorithm).
//!
//! Three passes over the n × M similarity matrix, each recomputing it tile by tile with a
//! matrix product and never storing more than one `tile × tile` block per task:
//!
//! 1. forward, parallel over anchor blocks: online log-sum-exp `LSE_i` (and `LSEP_i` for `L_in`);
//! 2. ∂L/∂a, parallel over anchor blocks: `Σ_j G_ij c_j`;
//! 3. ∂L/∂c, parallel over contrast blocks (feature rows only; queue keys get no gradient):
//!    `Σ_i G_ij a_i`, plus the row's ∂L/∂a from pass 2 and the normalization's backward.
//!
//! Every task owns its output rows and walks the other side's tiles in a fixed order, so the
//! result does not depend on the number of threads. Reductions across tiles are in `f64`.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rayon::prelude::*;

use super::fast_exp::exp_in_place;

use crate::{ContrastMode, Element, LossError, LossOutput, SupConInput, SupConOptions, Variant};

/// Everything the passes share, built once in O(M·D).
struct Prepared<T> {
    /// `M × D` contrast rows `c_j`, view-major then queue keys; normalized if asked.
    rows: Array2<T>,
    /// Dense class id `y_j` of every contrast row.
    class: Vec<u32>,
    /// Number of distinct class ids.
    classes: usize,
    /// n: anchors are contrast rows `0..n`.
    anchors: usize,
    /// V·B: contrast rows `0..trainable` are feature rows and receive a gradient.
    trainable: usize,
    /// |P(i)| for every anchor `i < n`.
    positives: Vec<usize>,
    /// 1/‖x_j‖ of every feature row when normalizing (empty otherwise).
    inv_norms: Vec<f64>,
}

/// The loss and its gradient for validated inputs (the caller ran [`crate::validate`]).
pub(crate) fn compute<T: Element>(
    input: &SupConInput<'_, T>,
    options: &SupConOptions,
    tile: usize,
) -> Result<LossOutput<T>, LossError> {
    let tile = tile.max(1);
    let (batch, views, dim) = input.features.dim();
    let prep = Prepared::new(input, options);
    let used = prep.positives.iter().filter(|&&p| p > 0).count();
    if used == 0 {
        return Ok(LossOutput::zero([batch, views, dim]));
    }
    let inv_tau = 1.0 / options.temperature;
    // Loss = scale · Σ_{i∈I} ℓ_i;  G_ij = grad_scale · (π_ij − w_ij).
    let scale = options.loss_scale() / used as f64;
    let grad_scale = scale * inv_tau;

    let (lse, lsep) = forward(&prep, options.variant, inv_tau, tile);
    let class_sums = match options.variant {
        Variant::Out => Some(prep.class_sums()),
        Variant::In => None,
    };

    // ℓ_i, summed in anchor order (deterministic).
    let mut total = 0.0f64;
    for i in 0..prep.anchors {
        let p = prep.positives[i];
        if p == 0 {
            continue;
        }
        total += match &class_sums {
            // ℓ_i = LSE_i − a_i·(S_{y_i} − c_i) / (τ |P(i)|)
            Some(sums) => {
                let a = prep.rows.row(i);
                let sum = sums.row(prep.class[i] as usize);
                let mut dot = 0.0f64;
                for (&x, &s) in a.iter().zip(sum.iter()) {
                    let x = x.to_f64();
                    dot += x * (s - x);
                }
                lse[i] - inv_tau * dot / p as f64
            }
            // ℓ_i = LSE_i − LSEP_i + log |P(i)|
            None => lse[i] - lsep[i] + (p as f64).ln(),
        };
    }
    let loss = scale * total;
    if !loss.is_finite() {
        return Err(LossError::Overflow { value: loss });
    }

    let grad_anchor = backward_anchors(
        &prep,
        options.variant,
        class_sums.as_ref(),
        &lse,
        &lsep,
        inv_tau,
        grad_scale,
        tile,
    );
    let anchor_weighted_sums = class_sums
        .as_ref()
        .map(|_| prep.anchor_weighted_class_sums());
    let grad_rows = backward_contrast(
        &prep,
        input,
        options.variant,
        anchor_weighted_sums.as_ref(),
        &grad_anchor,
        &lse,
        &lsep,
        inv_tau,
        grad_scale,
        tile,
    );
    // View-major rows (j = v·B + b) back to the features' [batch, views, dim] layout.
    let grad = Array3::from_shape_vec((views, batch, dim), grad_rows)
        .map_err(|e| LossError::Backend(format!("gradient layout: {e}")))?
        .permuted_axes([1, 0, 2])
        .as_standard_layout()
        .into_owned();
    Ok(LossOutput {
        loss,
        grad,
        anchors: used,
    })
}

impl<T: Element> Prepared<T> {
    fn new(input: &SupConInput<'_, T>, options: &SupConOptions) -> Self {
        let (batch, views, dim) = input.features.dim();
        let keys = input.queue_len();
        let trainable = batch * views;
        let total = trainable + keys;
        let mut rows = Array2::<T>::zeros((total, dim));
        let mut inv_norms = Vec::new();
        if options.normalize {
            inv_norms.reserve(trainable);
        }
        for v in 0..views {
            for b in 0..batch {
                let x = input.features.slice(s![b, v, ..]);
                let mut out = rows.row_mut(v * batch + b);
                if options.normalize {
                    let inv = inverse_norm(x.iter().map(|e| e.to_f64()));
                    inv_norms.push(inv);
                    for (o, &e) in out.iter_mut().zip(x.iter()) {
                        *o = T::from_f64(e.to_f64() * inv);
                    }
                } else {
                    out.assign(&x);
                }
            }
        }
        if let Some(queue) = &input.queue {
            for (k, key) in queue.keys.outer_iter().enumerate() {
                let mut out = rows.row_mut(trainable + k);
                if options.normalize {
                    let inv = inverse_norm(key.iter().map(|e| e.to_f64()));
                    for (o, &e) in out.iter_mut().zip(key.iter()) {
                        *o = T::from_f64(e.to_f64() * inv);
                    }
                } else {
                    out.assign(&key);
                }
            }
        }

        let (class, classes) = dense_classes(input, batch, views, keys);
        let mut class_count = vec![0usize; classes];
        for &c in &class {
            class_count[c as usize] += 1;
        }
        let anchors = match options.contrast_mode {
            ContrastMode::All => trainable,
            ContrastMode::One => batch,
        };
        // |P(i)| = rows of i's class minus i itself.
        let positives = class[..anchors]
            .iter()
            .map(|&c| class_count[c as usize] - 1)
            .collect();
        Self {
            rows,
            class,
            classes,
            anchors,
            trainable,
            positives,
            inv_norms,
        }
    }

    /// S_y = Σ_{j<M, y_j=y} c_j, in f64.
    fn class_sums(&self) -> Array2<f64> {
        let mut sums = Array2::<f64>::zeros((self.classes, self.rows.ncols()));
        for (row, &c) in self.rows.outer_iter().zip(&self.class) {
            for (s, &x) in sums.row_mut(c as usize).iter_mut().zip(row.iter()) {
                *s += x.to_f64();
            }
        }
        sums
    }

    /// T_y = Σ_{i∈I, y_i=y} a_i / |P(i)|, in f64.
    fn anchor_weighted_class_sums(&self) -> Array2<f64> {
        let mut sums = Array2::<f64>::zeros((self.classes, self.rows.ncols()));
        for i in 0..self.anchors {
            let p = self.positives[i];
            if p == 0 {
                continue;
            }
            let weight = 1.0 / p as f64;
            for (s, &x) in sums
                .row_mut(self.class[i] as usize)
                .iter_mut()
                .zip(self.rows.row(i).iter())
            {
                *s += x.to_f64() * weight;
            }
        }
        sums
    }
}

/// 1/‖x‖ without overflow or underflow in the squares (validation rejected all-zero rows).
fn inverse_norm(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let largest = values.clone().fold(0.0f64, |m, x| m.max(x.abs()));
    let scaled: f64 = values.map(|x| (x / largest) * (x / largest)).sum();
    1.0 / (largest * scaled.sqrt())
}

/// Dense class ids for all M contrast rows, and their count.
///
/// With labels, equal labels (batch or queue) share an id. Without labels (SimCLR) sample b
/// has id b in every view, and all queue keys share one extra id that no anchor has: they are
/// negatives only.
fn dense_classes<T>(
    input: &SupConInput<'_, T>,
    batch: usize,
    views: usize,
    keys: usize,
) -> (Vec<u32>, usize) {
    let mut class = Vec::with_capacity(batch * views + keys);
    match input.labels {
        Some(labels) => {
            let queue_labels = input.queue.as_ref().map_or(&[][..], |q| q.labels);
            let mut distinct: Vec<i64> = labels.iter().chain(queue_labels).copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            let id = |label: &i64| distinct.binary_search(label).unwrap_or(0) as u32;
            for _ in 0..views {
                class.extend(labels.iter().map(id));
            }
            class.extend(queue_labels.iter().map(id));
            (class, distinct.len())
        }
        None => {
            for _ in 0..views {
                class.extend((0..batch).map(|b| b as u32));
            }
            // One id past the samples' ids: no anchor has it.
            class.extend(std::iter::repeat_n(batch as u32, keys));
            (class, batch + usize::from(keys > 0))
        }
    }
}

/// Streaming log-sum-exp: `max + ln(sum)` with `sum = Σ exp(x − max)`.
#[derive(Clone, Copy, Debug)]
struct OnlineLse {
    max: f64,
    sum: f64,
}

impl OnlineLse {
    const EMPTY: Self = Self {
        max: f64::NEG_INFINITY,
        sum: 0.0,
    };

    /// Folds one tile's values in (consuming the buffer): one rescale per tile, one `exp` per
    /// value, vectorized.
    fn add(&mut self, values: &mut [f64]) {
        let Some(tile_max) = values.iter().copied().reduce(f64::max) else {
            return;
        };
        if tile_max > self.max {
            self.sum *= (self.max - tile_max).exp();
            self.max = tile_max;
        }
        let max = self.max;
        for x in values.iter_mut() {
            *x -= max;
        }
        exp_in_place(values);
        self.sum += values.iter().sum::<f64>();
    }

    fn value(self) -> f64 {
        self.max + self.sum.ln()
    }
}

/// `out = left · rightᵀ` in `T` (a tile of dot products).
fn dots<T: Element>(
    left: ArrayView2<'_, T>,
    right: ArrayView2<'_, T>,
    out: &mut ArrayViewMut2<'_, T>,
) {
    general_mat_mul(T::one(), &left, &right.t(), T::zero(), out);
}

/// Pass 1: `LSE_i` over A(i) and, for `L_in`, `LSEP_i` over P(i). `+inf` for anchors without
/// positives, which makes their coefficients `exp(x − LSE_i)` exactly 0 in pass 3.
fn forward<T: Element>(
    prep: &Prepared<T>,
    variant: Variant,
    inv_tau: f64,
    tile: usize,
) -> (Vec<f64>, Vec<f64>) {
    let n = prep.anchors;
    let m = prep.rows.nrows();
    let with_positives = variant == Variant::In;
    let mut lse = vec![f64::INFINITY; n];
    let mut lsep = vec![f64::INFINITY; if with_positives { n } else { 0 }];
    let work = |block: usize, lse_block: &mut [f64], mut lsep_block: Option<&mut [f64]>| {
        let i0 = block * tile;
        let height = lse_block.len();
        let anchors = prep.rows.slice(s![i0..i0 + height, ..]);
        let mut sims = Array2::<T>::zeros((height, tile));
        let mut all = vec![OnlineLse::EMPTY; height];
        let mut pos = vec![OnlineLse::EMPTY; height];
        let mut values = Vec::with_capacity(tile);
        let mut pos_values = Vec::with_capacity(tile);
        for j0 in (0..m).step_by(tile) {
            let width = tile.min(m - j0);
            let mut tile_sims = sims.slice_mut(s![.., ..width]);
            dots(
                anchors,
                prep.rows.slice(s![j0..j0 + width, ..]),
                &mut tile_sims,
            );
            for r in 0..height {
                let i = i0 + r;
                if prep.positives[i] == 0 {
                    continue;
                }
                let yi = prep.class[i];
                values.clear();
                pos_values.clear();
                for (c, &dot) in tile_sims.row(r).iter().enumerate() {
                    let j = j0 + c;
                    if j == i {
                        continue;
                    }
                    let x = dot.to_f64() * inv_tau;
                    values.push(x);
                    if with_positives && prep.class[j] == yi {
                        pos_values.push(x);
                    }
                }
                all[r].add(&mut values);
                if with_positives {
                    pos[r].add(&mut pos_values);
                }
            }
        }
        for r in 0..height {
            if prep.positives[i0 + r] > 0 {
                lse_block[r] = all[r].value();
                if let Some(lsep_block) = lsep_block.as_deref_mut() {
                    lsep_block[r] = pos[r].value();
                }
            }
        }
    };
    if with_positives {
        lse.par_chunks_mut(tile)
            .zip(lsep.par_chunks_mut(tile))
            .enumerate()
            .for_each(|(block, (l, p))| work(block, l, Some(p)));
    } else {
        lse.par_chunks_mut(tile)
            .enumerate()
            .for_each(|(block, l)| work(block, l, None));
    }
    (lse, lsep)
}

/// Writes one row of coefficients `π_ij − w_ij` (without the common factor G's scale) for a
/// row of dot products. `lse`/`lsep`/`class` are either one anchor's (broadcast) or one value per
/// column; anchors outside I carry `LSE = +inf`, so their coefficients vanish without a branch.
#[inline(always)]
fn coefficient_row<T: Element>(
    mut out: ArrayViewMut1<'_, T>,
    dots: ArrayView1<'_, T>,
    inv_tau: f64,
    lse: impl Fn(usize) -> f64,
    positive: Option<impl Fn(usize) -> Option<f64>>,
    scratch: &mut Scratch,
) {
    // Arguments first, then one vectorized exp over the row.
    let pi = &mut scratch.pi;
    pi.clear();
    pi.extend(
        dots.iter()
            .enumerate()
            .map(|(c, &dot)| dot.to_f64() * inv_tau - lse(c)),
    );
    exp_in_place(pi);
    if let Some(positive) = positive {
        // L_in's w_ij: only positives (few per row), so a plain scalar exp.
        for (c, (p, &dot)) in pi.iter_mut().zip(dots.iter()).enumerate() {
            if let Some(lsep) = positive(c) {
                *p -= (dot.to_f64() * inv_tau - lsep).exp();
            }
        }
    }
    for (g, &value) in out.iter_mut().zip(pi.iter()) {
        *g = T::from_f64(value);
    }
}

/// Per-task buffer of one coefficient row.
#[derive(Default)]
struct Scratch {
    pi: Vec<f64>,
}

/// Adds a `T` tile product into the `f64` accumulator.
fn accumulate<T: Element>(acc: &mut [f64], product: &Array2<T>) {
    for (a, &p) in acc.iter_mut().zip(product.iter()) {
        *a += p.to_f64();
    }
}

/// Pass 2: ∂L/∂a_i = grad_scale · (Σ_j π_ij c_j − Σ_j w_ij c_j), `n × D` row-major in f64.
#[allow(clippy::too_many_arguments)]
fn backward_anchors<T: Element>(
    prep: &Prepared<T>,
    variant: Variant,
    class_sums: Option<&Array2<f64>>,
    lse: &[f64],
    lsep: &[f64],
    inv_tau: f64,
    grad_scale: f64,
    tile: usize,
) -> Vec<f64> {
    let n = prep.anchors;
    let m = prep.rows.nrows();
    let dim = prep.rows.ncols();
    let in_variant = variant == Variant::In;
    let mut grad = vec![0.0f64; n * dim];
    grad.par_chunks_mut(tile * dim)
        .enumerate()
        .for_each(|(block, acc)| {
            let i0 = block * tile;
            let height = acc.len() / dim;
            let anchors = prep.rows.slice(s![i0..i0 + height, ..]);
            if prep.positives[i0..i0 + height].iter().all(|&p| p == 0) {
                return;
            }
            let mut sims = Array2::<T>::zeros((height, tile));
            let mut coefficients = Array2::<T>::zeros((height, tile));
            let mut product = Array2::<T>::zeros((height, dim));
            let mut scratch = Scratch::default();
            for j0 in (0..m).step_by(tile) {
                let width = tile.min(m - j0);
                let contrast = prep.rows.slice(s![j0..j0 + width, ..]);
                let mut tile_sims = sims.slice_mut(s![.., ..width]);
                dots(anchors, contrast, &mut tile_sims);
                let mut tile_coefficients = coefficients.slice_mut(s![.., ..width]);
                let classes = &prep.class[j0..j0 + width];
                for r in 0..height {
                    let i = i0 + r;
                    let (lse_i, yi) = (lse[i], prep.class[i]);
                    let lsep_i = if in_variant { lsep[i] } else { f64::NAN };
                    let mut out = tile_coefficients.row_mut(r);
                    if prep.positives[i] == 0 {
                        out.fill(T::zero());
                        continue;
                    }
                    coefficient_row(
                        out.view_mut(),
                        tile_sims.row(r),
                        inv_tau,
                        |_| lse_i,
                        in_variant.then_some(|c: usize| (classes[c] == yi).then_some(lsep_i)),
                        &mut scratch,
                    );
                    if (j0..j0 + width).contains(&i) {
                        out[i - j0] = T::zero(); // j = i is not in A(i)
                    }
                }
                general_mat_mul(
                    T::one(),
                    &tile_coefficients,
                    &contrast,
                    T::zero(),
                    &mut product,
                );
                accumulate(acc, &product);
            }
            for r in 0..height {
                let i = i0 + r;
                let row = &mut acc[r * dim..(r + 1) * dim];
                let p = prep.positives[i];
                if p == 0 {
                    row.fill(0.0);
                    continue;
                }
                if let Some(sums) = class_sums {
                    // L_out: Σ_j w_ij c_j = (S_{y_i} − c_i) / |P(i)|
                    let inv_p = 1.0 / p as f64;
                    let sum = sums.row(prep.class[i] as usize);
                    for ((g, &s), &c) in row.iter_mut().zip(sum.iter()).zip(anchors.row(r).iter()) {
                        *g -= (s - c.to_f64()) * inv_p;
                    }
                }
                for g in row.iter_mut() {
                    *g *= grad_scale;
                }
            }
        });
    grad
}

/// Pass 3: ∂L/∂c_j for the feature rows, plus ∂L/∂a_j, through the normalization: the final
/// gradient rows in view-major order, rounded to `T`.
#[allow(clippy::too_many_arguments)]
fn backward_contrast<T: Element>(
    prep: &Prepared<T>,
    input: &SupConInput<'_, T>,
    variant: Variant,
    anchor_weighted_sums: Option<&Array2<f64>>,
    grad_anchor: &[f64],
    lse: &[f64],
    lsep: &[f64],
    inv_tau: f64,
    grad_scale: f64,
    tile: usize,
) -> Vec<T> {
    let n = prep.anchors;
    let dim = prep.rows.ncols();
    let batch = input.features.dim().0;
    let in_variant = variant == Variant::In;
    let mut out = vec![T::zero(); prep.trainable * dim];
    out.par_chunks_mut(tile * dim)
        .enumerate()
        .for_each(|(block, out_block)| {
            let j0 = block * tile;
            let height = out_block.len() / dim;
            let contrast = prep.rows.slice(s![j0..j0 + height, ..]);
            let mut acc = vec![0.0f64; height * dim];
            let mut sims = Array2::<T>::zeros((height, tile));
            let mut coefficients = Array2::<T>::zeros((height, tile));
            let mut product = Array2::<T>::zeros((height, dim));
            let mut scratch = Scratch::default();
            for i0 in (0..n).step_by(tile) {
                let width = tile.min(n - i0);
                if prep.positives[i0..i0 + width].iter().all(|&p| p == 0) {
                    continue;
                }
                let anchors = prep.rows.slice(s![i0..i0 + width, ..]);
                let mut tile_sims = sims.slice_mut(s![.., ..width]);
                dots(contrast, anchors, &mut tile_sims);
                let mut tile_coefficients = coefficients.slice_mut(s![.., ..width]);
                let lse_tile = &lse[i0..i0 + width];
                let lsep_tile = if in_variant {
                    &lsep[i0..i0 + width]
                } else {
                    &[][..]
                };
                let classes = &prep.class[i0..i0 + width];
                for r in 0..height {
                    let j = j0 + r;
                    let yj = prep.class[j];
                    let mut out = tile_coefficients.row_mut(r);
                    coefficient_row(
                        out.view_mut(),
                        tile_sims.row(r),
                        inv_tau,
                        |c| lse_tile[c],
                        in_variant.then_some(|c: usize| (classes[c] == yj).then(|| lsep_tile[c])),
                        &mut scratch,
                    );
                    if (i0..i0 + width).contains(&j) {
                        out[j - i0] = T::zero(); // i = j is not in A(i)
                    }
                }
                general_mat_mul(
                    T::one(),
                    &tile_coefficients,
                    &anchors,
                    T::zero(),
                    &mut product,
                );
                accumulate(&mut acc, &product);
            }
            for r in 0..height {
                let j = j0 + r;
                let row = &mut acc[r * dim..(r + 1) * dim];
                if let Some(sums) = anchor_weighted_sums {
                    // L_out: Σ_i w_ij a_i = T_{y_j} − [j ∈ I] a_j / |P(j)|
                    let sum = sums.row(prep.class[j] as usize);
                    let self_weight = if j < n && prep.positives[j] > 0 {
                        1.0 / prep.positives[j] as f64
                    } else {
                        0.0
                    };
                    for ((g, &s), &c) in row.iter_mut().zip(sum.iter()).zip(contrast.row(r).iter())
                    {
                        *g -= s - c.to_f64() * self_weight;
                    }
                }
                for g in row.iter_mut() {
                    *g *= grad_scale;
                }
                if j < n {
                    for (g, &ga) in row.iter_mut().zip(&grad_anchor[j * dim..(j + 1) * dim]) {
                        *g += ga;
                    }
                }
                if let Some(&inv_norm) = prep.inv_norms.get(j) {
                    // z = x/‖x‖:  ∂L/∂x = (g − z (z·g)) / ‖x‖, with z recomputed in f64.
                    let x = input.features.slice(s![j % batch, j / batch, ..]);
                    let z_dot_g: f64 = x
                        .iter()
                        .zip(row.iter())
                        .map(|(&x, &g)| x.to_f64() * inv_norm * g)
                        .sum();
                    for (g, &x) in row.iter_mut().zip(x.iter()) {
                        *g = (*g - x.to_f64() * inv_norm * z_dot_g) * inv_norm;
                    }
                }
                for (o, &g) in out_block[r * dim..(r + 1) * dim].iter_mut().zip(row.iter()) {
                    *o = T::from_f64(g);
                }
            }
        });
    out
}
