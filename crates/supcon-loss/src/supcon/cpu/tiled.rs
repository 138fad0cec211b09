//! The tiled, streaming SupCon algorithm (see the crate docs for the math and `loss-math.md` in
//! the book for the algorithm).
//!
//! Two passes over the n × M similarity matrix, in blocks of `2·tile` rows and `4·tile` columns,
//! each block a matrix product:
//!
//! 1. forward, parallel over anchor blocks: online log-sum-exp `LSE_i` (and `LSEP_i` for `L_in`).
//!    When the whole n × M matrix fits the similarity cache budget, the blocks are kept;
//! 2. backward, parallel over blocks of feature rows j: the similarity block (kept or
//!    recomputed), the coefficients `G_jk + G_kj` of both roles of a row at once (an anchor's
//!    `∂ℓ_j/∂s_jk` and a contrast row's `∂ℓ_k/∂s_kj`; `s` is symmetric), then one product with the
//!    contrast rows, plus the normalization's backward.
//!
//! That is 2 (cached) or 3 matrix products of n·M·D multiply-adds, against 5 for separate
//! anchor and contrast passes. Every task owns its output rows and walks the columns in a fixed
//! order, so the result does not depend on the number of threads. Reductions across tiles are
//! in `f64`.
//!
//! Only the column width (`4·tile`) and the rows of one coefficient shift (`tile`) set the
//! rounding; how many rows a task takes does not (each similarity and each product row is the
//! same arithmetic in a taller block), so tasks take [`ROW_TILES`] tiles of rows: the
//! contrast rows of a column block are packed for the matrix product once per task, and taller
//! tasks pack them half as often (2 048 rows: 24 ms against 27 ms on two cores).

use std::ops::Range;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Array3, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::{kernels, workspace};
use crate::explicit::write_row;
use crate::fast_exp::exp;

use crate::{ContrastMode, Element, LossError, LossOutput, SupConInput, SupConOptions, Variant};

/// Everything the passes share, built once in O(M·D).
///
/// The contrast rows are ordered so that the anchors of the call come first: for the whole
/// batch that is the view-major order of the crate docs; for a shard of the batch
/// ([`crate::CpuBackend::compute_shard`]) the shard's anchor rows come first, then every other
/// feature row in view-major order, then the queue. The loss is a sum over anchors of terms
/// that do not depend on the order of the contrast rows, so the order changes only rounding.
struct Prepared<T> {
    /// `M × D` contrast rows `c_j`: the call's anchors, the other feature rows, the queue
    /// keys; normalized if asked.
    rows: Array2<T>,
    /// `(b, v)` of every feature row `j < trainable`, in row order.
    source: Vec<(usize, usize)>,
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
    /// |I| over the anchors of the whole batch (not only this call's): the mean's
    /// denominator, so that the shards of a batch add up to its loss.
    batch_anchors_used: usize,
    /// 1/‖x_j‖ of every feature row when normalizing (empty otherwise).
    inv_norms: Vec<f64>,
}

/// The loss and its gradient for validated inputs (the caller ran [`crate::validate`] and
/// checked that `shard` lies in `0..batch`): the terms of the anchors of samples `shard`, over
/// the mean of the whole batch (`shard = 0..batch` is the whole loss).
pub(crate) fn compute<T: Element>(
    input: &SupConInput<'_, T>,
    shard: Range<usize>,
    options: &SupConOptions,
    tile: usize,
    cache_bytes: usize,
) -> Result<LossOutput<T>, LossError> {
    let tiles = input
        .features
        .dim()
        .0
        .saturating_mul(input.features.dim().1)
        / tile.max(1);
    // Taller tasks only while every thread still gets two or more.
    let row_tiles = if tiles >= 2 * ROW_TILES * rayon::current_num_threads() {
        ROW_TILES
    } else {
        1
    };
    compute_in_blocks(
        input,
        shard,
        options,
        Blocks::of(tile, row_tiles),
        cache_bytes,
    )
}

/// Rows per task, in tiles, when there are tasks enough for every thread: see the module docs.
const ROW_TILES: usize = 2;

/// How the n × M matrix is cut: `tile` sets the rounding (columns per block `4·tile`, rows per
/// coefficient shift `tile`), `rows` the rows of a task (a multiple of `tile`).
#[derive(Clone, Copy, Debug)]
struct Blocks {
    tile: usize,
    rows: usize,
    width: usize,
}

impl Blocks {
    fn of(tile: usize, row_tiles: usize) -> Self {
        let tile = tile.max(1);
        Self {
            tile,
            rows: tile * row_tiles.max(1),
            width: tile * COLUMN_TILES,
        }
    }
}

/// [`compute`] with tasks of `blocks.rows` rows.
fn compute_in_blocks<T: Element>(
    input: &SupConInput<'_, T>,
    shard: Range<usize>,
    options: &SupConOptions,
    blocks: Blocks,
    cache_bytes: usize,
) -> Result<LossOutput<T>, LossError> {
    let (batch, views, dim) = input.features.dim();
    let prep = Prepared::new(input, options, shard);
    let used = prep.batch_anchors_used;
    let mut zero = LossOutput::zero([batch, views, dim]);
    zero.anchors = used;
    if used == 0 || prep.positives.iter().all(|&p| p == 0) {
        return Ok(zero);
    }
    let inv_tau = 1.0 / options.temperature;
    // Loss = scale · Σ_{i∈I} ℓ_i;  G_ij = grad_scale · (π_ij − w_ij).
    let scale = options.loss_scale() / used as f64;
    let grad_scale = scale * inv_tau;

    let Forward { lse, lsep, cache } =
        forward(&prep, options.variant, inv_tau, blocks, cache_bytes);
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

    let anchor_weighted_sums = class_sums
        .as_ref()
        .map(|_| prep.anchor_weighted_class_sums());
    let grad_rows = backward(
        &prep,
        input,
        Coefficients {
            variant: options.variant,
            lse: &lse,
            lsep: &lsep,
            inv_tau,
        },
        class_sums.as_ref(),
        anchor_weighted_sums.as_ref(),
        cache.as_deref(),
        grad_scale,
        blocks,
    );
    // Rows back to the features' [batch, views, dim] layout.
    let mut grad = Array3::<T>::zeros((batch, views, dim));
    for (row, &(b, v)) in grad_rows.chunks_exact(dim).zip(&prep.source) {
        grad.slice_mut(s![b, v, ..])
            .iter_mut()
            .zip(row)
            .for_each(|(g, &r)| *g = r);
    }
    cache.into_iter().flatten().for_each(workspace::give_back);
    workspace::give_back(prep.rows);
    Ok(LossOutput {
        loss,
        grad,
        anchors: used,
    })
}

impl<T: Element> Prepared<T> {
    fn new(input: &SupConInput<'_, T>, options: &SupConOptions, shard: Range<usize>) -> Self {
        let (batch, views, dim) = input.features.dim();
        let keys = input.queue_len();
        let trainable = batch * views;
        let total = trainable + keys;
        // The shard's anchor rows first (view-major), then every other feature row.
        let anchor_views = match options.contrast_mode {
            ContrastMode::All => views,
            ContrastMode::One => 1,
        };
        let is_anchor = |b: usize, v: usize| v < anchor_views && shard.contains(&b);
        let view_major = (0..views).flat_map(|v| (0..batch).map(move |b| (b, v)));
        let source: Vec<(usize, usize)> = view_major
            .clone()
            .filter(|&(b, v)| is_anchor(b, v))
            .chain(view_major.filter(|&(b, v)| !is_anchor(b, v)))
            .collect();
        let anchors = shard.len() * anchor_views;

        // Every row is written below: the feature rows (`source` lists each once), the keys.
        let mut rows = workspace::block::<T>(total, dim);
        let mut inv_norms = Vec::new();
        if options.normalize {
            inv_norms.reserve(trainable);
        }
        for (j, &(b, v)) in source.iter().enumerate() {
            let x = input.features.slice(s![b, v, ..]);
            let inv = write_row(x, rows.row_mut(j), options.normalize);
            if options.normalize {
                inv_norms.push(inv);
            }
        }
        if let Some(queue) = &input.queue {
            for (k, key) in queue.keys.outer_iter().enumerate() {
                write_row(key, rows.row_mut(trainable + k), options.normalize);
            }
        }

        let (sample_class, key_class, classes) = dense_classes(input, batch, keys);
        let class: Vec<u32> = source
            .iter()
            .map(|&(b, _)| sample_class[b])
            .chain(key_class)
            .collect();
        let mut class_count = vec![0usize; classes];
        for &c in &class {
            class_count[c as usize] += 1;
        }
        // |P(i)| = rows of i's class minus i itself.
        let positives_of = |c: u32| class_count[c as usize] - 1;
        let positives = class[..anchors].iter().map(|&c| positives_of(c)).collect();
        // |I| of the whole batch: its anchors are views 0..anchor_views of every sample.
        let batch_anchors_used = anchor_views
            * sample_class
                .iter()
                .filter(|&&c| positives_of(c) > 0)
                .count();
        Self {
            rows,
            source,
            class,
            classes,
            anchors,
            trainable,
            positives,
            batch_anchors_used,
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

/// Dense class ids of the samples and of the queue keys, and their count.
///
/// With labels, equal labels (batch or queue) share an id, and every unlabeled sample or key
/// has one of its own ([`crate::supcon::unlabeled`]). Without labels (SimCLR) sample b has id b (in
/// every view), and all queue keys share one extra id that no anchor has: they are negatives
/// only.
fn dense_classes<T>(
    input: &SupConInput<'_, T>,
    batch: usize,
    keys: usize,
) -> (Vec<u32>, Vec<u32>, usize) {
    match input.labels {
        Some(labels) => {
            let queue_labels = input.queue.as_ref().map_or(&[][..], |q| q.labels);
            let (labels, queue_labels) = crate::supcon::unlabeled::own_labels(labels, queue_labels);
            let (labels, queue_labels) = (&*labels, &*queue_labels);
            let mut distinct: Vec<i64> = labels.iter().chain(queue_labels).copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            let id = |label: &i64| distinct.binary_search(label).unwrap_or(0) as u32;
            (
                labels.iter().map(id).collect(),
                queue_labels.iter().map(id).collect(),
                distinct.len(),
            )
        }
        None => (
            (0..batch as u32).collect(),
            // One id past the samples' ids: no anchor has it.
            vec![batch as u32; keys],
            batch + usize::from(keys > 0),
        ),
    }
}

/// Columns per block: wider than tall, so the backward product `coefficients · contrast rows`
/// has a long inner dimension and few `f64` accumulations.
const COLUMN_TILES: usize = 4;

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

    /// Folds in `x_c = dots[c]·inv_tau`: one rescale per call, one vectorized `exp` per value.
    fn add_dots<T: Element>(&mut self, dots: &[T], inv_tau: f64) {
        let top = kernels::max_dot(dots) * inv_tau;
        if top == f64::NEG_INFINITY {
            return; // empty
        }
        self.raise_max(top);
        self.sum += kernels::exp_sum(dots, inv_tau, self.max);
    }

    fn raise_max(&mut self, top: f64) {
        if top > self.max {
            self.sum *= exp(self.max - top);
            self.max = top;
        }
    }

    fn value(self) -> f64 {
        self.max + self.sum.ln()
    }
}

/// `out = left · rightᵀ` in `T` (a block of dot products).
fn dots<T: Element>(
    left: ArrayView2<'_, T>,
    right: ArrayView2<'_, T>,
    out: &mut ArrayViewMut2<'_, T>,
) {
    general_mat_mul(T::one(), &left, &right.t(), T::zero(), out);
}

/// Row `r` of a block whose rows are contiguous (every block here is a column range of a
/// row-major array).
fn row<'a, T>(block: &'a ArrayView2<'_, T>, r: usize) -> &'a [T] {
    block
        .row(r)
        .to_slice()
        .expect("a row of a row-major block is contiguous")
}

/// The columns `0..width` without `diagonal` (when it lies inside), as two ranges.
fn around_diagonal(width: usize, diagonal: Option<usize>) -> [std::ops::Range<usize>; 2] {
    match diagonal {
        Some(d) if d < width => [0..d, d + 1..width],
        _ => [0..width, width..width],
    }
}

/// The n·M similarities of pass 1, kept for pass 2 when they fit the budget: block `b` holds
/// rows `b·blocks.rows..` and every column.
type SimilarityCache<T> = Vec<Array2<T>>;

/// What pass 1 leaves for the loss and pass 2.
struct Forward<T> {
    /// `LSE_i` per anchor; `+inf` for anchors without positives.
    lse: Vec<f64>,
    /// `LSEP_i` per anchor for `L_in` (empty for `L_out`).
    lsep: Vec<f64>,
    cache: Option<SimilarityCache<T>>,
}

/// One anchor block's share of [`Forward`].
struct ForwardBlock<T> {
    lse: Vec<f64>,
    lsep: Vec<f64>,
    kept: Option<Array2<T>>,
}

/// Pass 1: `LSE_i` over A(i) and, for `L_in`, `LSEP_i` over P(i). `+inf` for anchors without
/// positives, which makes their coefficients `exp(x − LSE_i)` exactly 0 in pass 2.
fn forward<T: Element>(
    prep: &Prepared<T>,
    variant: Variant,
    inv_tau: f64,
    blocks: Blocks,
    cache_bytes: usize,
) -> Forward<T> {
    let n = prep.anchors;
    let m = prep.rows.nrows();
    let Blocks { rows, width, .. } = blocks;
    let with_positives = variant == Variant::In;
    // Pass 2's row blocks are the anchor blocks only when every feature row is an anchor.
    let keep = n == prep.trainable
        && n.saturating_mul(m).saturating_mul(std::mem::size_of::<T>()) <= cache_bytes;
    let blocks: Vec<ForwardBlock<T>> = (0..n.div_ceil(rows))
        .into_par_iter()
        .map(|block| {
            let i0 = block * rows;
            let height = rows.min(n - i0);
            let anchors = prep.rows.slice(s![i0..i0 + height, ..]);
            // Similarity blocks are written by their product before they are read.
            let mut kept = keep.then(|| workspace::block::<T>(height, m));
            let mut scratch = workspace::block::<T>(height, if keep { 0 } else { width });
            let mut all = vec![OnlineLse::EMPTY; height];
            let mut pos = vec![OnlineLse::EMPTY; height];
            let mut pos_values = Vec::new();
            for j0 in (0..m).step_by(width) {
                let w = width.min(m - j0);
                let mut sims = match kept.as_mut() {
                    Some(kept) => kept.slice_mut(s![.., j0..j0 + w]),
                    None => scratch.slice_mut(s![.., ..w]),
                };
                dots(anchors, prep.rows.slice(s![j0..j0 + w, ..]), &mut sims);
                let sims = sims.view();
                for r in 0..height {
                    let i = i0 + r;
                    if prep.positives[i] == 0 {
                        continue;
                    }
                    let values = row(&sims, r);
                    // j = i is not in A(i): fold the columns before and after it separately.
                    // L_in's positives are folded in the same groups, so that LSEP_i equals
                    // LSE_i bit for bit when every other row is a positive (then π − w = 0).
                    for part in around_diagonal(w, i.checked_sub(j0)) {
                        all[r].add_dots(&values[part.clone()], inv_tau);
                        if with_positives {
                            // The positives' dots through the same kernel: equal dots in
                            // equal positions give a bit-identical sum.
                            let yi = prep.class[i];
                            pos_values.clear();
                            pos_values.extend(
                                values[part.clone()]
                                    .iter()
                                    .zip(&prep.class[j0 + part.start..j0 + part.end])
                                    .filter(|&(_, &yj)| yj == yi)
                                    .map(|(&dot, _)| dot),
                            );
                            pos[r].add_dots(&pos_values, inv_tau);
                        }
                    }
                }
            }
            let finished = |stats: &[OnlineLse]| -> Vec<f64> {
                stats
                    .iter()
                    .enumerate()
                    .map(|(r, s)| {
                        if prep.positives[i0 + r] > 0 {
                            s.value()
                        } else {
                            f64::INFINITY
                        }
                    })
                    .collect()
            };
            let lsep = if with_positives {
                finished(&pos)
            } else {
                Vec::new()
            };
            workspace::give_back(scratch);
            ForwardBlock {
                lse: finished(&all),
                lsep,
                kept,
            }
        })
        .collect();
    let mut forward = Forward {
        lse: Vec::with_capacity(n),
        lsep: Vec::with_capacity(if with_positives { n } else { 0 }),
        cache: keep.then(Vec::new),
    };
    for ForwardBlock { lse, lsep, kept } in blocks {
        forward.lse.extend(lse);
        forward.lsep.extend(lsep);
        if let (Some(cache), Some(kept)) = (forward.cache.as_mut(), kept) {
            cache.push(kept);
        }
    }
    forward
}

/// What the coefficients `G_jk = ∂ℓ_j/∂s_jk · τ/grad_scale` depend on besides the similarity.
struct Coefficients<'a> {
    variant: Variant,
    lse: &'a [f64],
    lsep: &'a [f64],
    inv_tau: f64,
}

/// `e^{x−LSE_j} + e^{x−LSE_k} = e^{x−μ}·(e^{μ−LSE_j} + e^{μ−LSE_k})` for a block of rows j and
/// columns k, with μ the smallest finite `LSE` of the block: one exponential per similarity
/// instead of two. The factors lie in (0, 1] and `x − μ ≤ LSE_j − μ`, so nothing overflows or
/// underflows while the block's finite `LSE`s span at most `T::EXP_SPAN` (for normalized rows
/// the span is at most 2/τ + ln M: always within f64's 600, and within f32's 60 for τ ≥ 0.04 at
/// M = 65 536); wider blocks take the two-exponential path, in `f64`.
struct Factored<T> {
    shift: T,
    row_factors: Vec<T>,
    column_factors: Vec<T>,
}

impl<T: Element> Factored<T> {
    /// `T::EXP_SPAN`: 600 for `f64` (far below `ln(f64::MAX) ≈ 709`), 60 for `f32` (below
    /// `ln(f32::MAX) ≈ 88`), leaving room for the products.
    fn new(row_lse: &[f64], column_lse: &[f64]) -> Option<Self> {
        let (low, high) = row_lse
            .iter()
            .chain(column_lse)
            .filter(|l| l.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &l| {
                (lo.min(l), hi.max(l))
            });
        if low > high || high - low > T::EXP_SPAN {
            return None; // no finite LSE (all coefficients 0) or too wide a span
        }
        // The shift as the kernel sees it (rounded to T), so that the factors cancel it exactly.
        let shift = T::from_f64(low);
        let factors = |lse: &[f64]| {
            lse.iter()
                .map(|&l| T::from_f64(exp(shift.to_f64() - l)))
                .collect()
        };
        Some(Self {
            shift,
            row_factors: factors(row_lse),
            column_factors: factors(column_lse),
        })
    }
}

/// Adds a `T` block product into the `f64` accumulator.
fn accumulate<T: Element>(acc: &mut [f64], product: &Array2<T>) {
    for (a, &p) in acc.iter_mut().zip(product.iter()) {
        *a += p.to_f64();
    }
}

/// Pass 2: the final gradient rows of the features in view-major order, rounded to `T`.
///
/// Row j receives `Σ_k (G_jk + G_kj) c_k` (its anchor role and its contrast role; `G` is 0 for
/// rows that are not anchors with positives and on the diagonal), minus the `L_out` positive
/// terms from class sums, times `grad_scale`, through the normalization.
#[allow(clippy::too_many_arguments)]
fn backward<T: Element>(
    prep: &Prepared<T>,
    input: &SupConInput<'_, T>,
    coefficients: Coefficients<'_>,
    class_sums: Option<&Array2<f64>>,
    anchor_weighted_sums: Option<&Array2<f64>>,
    cache: Option<&[Array2<T>]>,
    grad_scale: f64,
    blocks: Blocks,
) -> Vec<T> {
    let Coefficients {
        variant,
        lse,
        lsep,
        inv_tau,
    } = coefficients;
    let n = prep.anchors;
    let m = prep.rows.nrows();
    let dim = prep.rows.ncols();
    let Blocks { tile, rows, width } = blocks;
    let in_variant = variant == Variant::In;
    // Per row of the contrast matrix: +inf past the anchors (feature rows of contrast mode One,
    // queue keys), so their terms vanish without a branch.
    let per_row = |anchor_values: &[f64]| -> Vec<f64> {
        (0..m)
            .map(|k| anchor_values.get(k).copied().unwrap_or(f64::INFINITY))
            .collect()
    };
    let lse_rows = per_row(lse);
    let lsep_rows = if in_variant {
        per_row(lsep)
    } else {
        Vec::new()
    };
    let mut out = vec![T::zero(); prep.trainable * dim];
    out.par_chunks_mut(rows * dim)
        .enumerate()
        .for_each(|(block, out_block)| {
            let j0 = block * rows;
            let height = out_block.len() / dim;
            let own_rows = prep.rows.slice(s![j0..j0 + height, ..]);
            // Rows that are not anchors only meet anchors (columns < n) with a non-zero G_kj.
            let any_anchor = (j0..j0 + height).any(|j| lse_rows[j].is_finite());
            let columns = if any_anchor { m } else { n };
            let kept = cache.map(|cache| cache[block].view());
            // Written before read: similarities and products by their product, coefficients
            // row by row over each block's columns.
            let mut scratch = workspace::block::<T>(height, if kept.is_some() { 0 } else { width });
            let mut coefficient_block = workspace::block::<T>(height, width);
            let mut product = workspace::block::<T>(height, dim);
            let mut acc = vec![0.0f64; height * dim];
            for k0 in (0..columns).step_by(width) {
                let w = width.min(columns - k0);
                let contrast = prep.rows.slice(s![k0..k0 + w, ..]);
                let sims = match kept {
                    Some(kept) => kept.slice_move(s![.., k0..k0 + w]),
                    None => {
                        dots(own_rows, contrast, &mut scratch.slice_mut(s![.., ..w]));
                        scratch.slice(s![.., ..w])
                    }
                };
                let mut g = coefficient_block.slice_mut(s![.., ..w]);
                let column_lse = &lse_rows[k0..k0 + w];
                // One shift per tile of rows, whatever the task's height (see the module docs).
                let shifts: Vec<Option<Factored<T>>> = (j0..j0 + height)
                    .step_by(tile)
                    .map(|t0| {
                        Factored::new(&lse_rows[t0..(t0 + tile).min(j0 + height)], column_lse)
                    })
                    .collect();
                for r in 0..height {
                    let j = j0 + r;
                    let factored = &shifts[r / tile];
                    let values = row(&sims, r);
                    let mut g_row = g.row_mut(r);
                    let g_row = g_row
                        .as_slice_mut()
                        .expect("a row of a row-major block is contiguous");
                    match factored {
                        Some(f) => kernels::factored_pair_softmax(
                            values,
                            T::from_f64(inv_tau),
                            f.shift,
                            f.row_factors[r % tile],
                            &f.column_factors,
                            g_row,
                        ),
                        None => {
                            kernels::pair_softmax(values, inv_tau, lse_rows[j], column_lse, g_row)
                        }
                    }
                    if in_variant {
                        // L_in's w_jk + w_kj, only on same-class columns (a few per row); the
                        // whole coefficient is recomputed in f64 so π − w cancels exactly there.
                        let yj = prep.class[j];
                        for (c, (&dot, &yk)) in
                            values.iter().zip(&prep.class[k0..k0 + w]).enumerate()
                        {
                            if yk != yj {
                                continue;
                            }
                            let k = k0 + c;
                            let x = dot.to_f64() * inv_tau;
                            // (π_jk − w_jk) + (π_kj − w_kj): each difference is exactly 0
                            // where A = P, as in the reference.
                            g_row[c] = T::from_f64(
                                (exp(x - lse_rows[j]) - exp(x - lsep_rows[j]))
                                    + (exp(x - lse_rows[k]) - exp(x - lsep_rows[k])),
                            );
                        }
                    }
                    if (k0..k0 + w).contains(&j) {
                        g_row[j - k0] = T::zero(); // k = j is not in A(j)
                    }
                }
                general_mat_mul(T::one(), &g, &contrast, T::zero(), &mut product);
                accumulate(&mut acc, &product);
            }
            for r in 0..height {
                finish_row(
                    prep,
                    input,
                    class_sums.zip(anchor_weighted_sums),
                    grad_scale,
                    j0 + r,
                    own_rows.row(r),
                    &mut acc[r * dim..(r + 1) * dim],
                    &mut out_block[r * dim..(r + 1) * dim],
                );
            }
            [scratch, coefficient_block, product]
                .into_iter()
                .for_each(workspace::give_back);
        });
    out
}

/// The end of feature row `j`'s gradient in [`backward`]: `grad` (its accumulated
/// `Σ_k (G_jk + G_kj) c_k`) minus `L_out`'s positive terms from the class sums `l_out`
/// (`S`, `T`), times `grad_scale`, through the normalization, rounded to `T` into `out`.
#[allow(clippy::too_many_arguments)]
fn finish_row<T: Element>(
    prep: &Prepared<T>,
    input: &SupConInput<'_, T>,
    l_out: Option<(&Array2<f64>, &Array2<f64>)>,
    grad_scale: f64,
    j: usize,
    c_j: ndarray::ArrayView1<'_, T>,
    grad: &mut [f64],
    out: &mut [T],
) {
    if let Some((sums, weighted)) = l_out {
        // L_out's w terms from class sums: Σ_k w_jk c_k = (S_{y_j} − c_j)/|P(j)| for
        // an anchor j, and Σ_i w_ij a_i = T_{y_j} − [j ∈ I] c_j/|P(j)|.
        let y = prep.class[j] as usize;
        let used = j < prep.anchors && prep.positives[j] > 0;
        let inv_p = if used {
            1.0 / prep.positives[j] as f64
        } else {
            0.0
        };
        let anchor_sum = sums.row(y);
        let contrast_sum = weighted.row(y);
        for (((g, &s), &t), &c) in grad
            .iter_mut()
            .zip(anchor_sum.iter())
            .zip(contrast_sum.iter())
            .zip(c_j.iter())
        {
            let c = c.to_f64();
            *g -= (s - c) * inv_p + t - c * inv_p;
        }
    }
    for g in grad.iter_mut() {
        *g *= grad_scale;
    }
    if let Some(&inv_norm) = prep.inv_norms.get(j) {
        // z = x/‖x‖:  ∂L/∂x = (g − z (z·g)) / ‖x‖, with z recomputed in f64.
        let (b, v) = prep.source[j];
        let x = input.features.slice(s![b, v, ..]);
        let z_dot_g: f64 = x
            .iter()
            .zip(grad.iter())
            .map(|(&x, &g)| x.to_f64() * inv_norm * g)
            .sum();
        for (g, &x) in grad.iter_mut().zip(x.iter()) {
            *g = (*g - x.to_f64() * inv_norm * z_dot_g) * inv_norm;
        }
    }
    for (o, &g) in out.iter_mut().zip(grad.iter()) {
        *o = T::from_f64(g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// How many rows a task takes changes no bit of the loss or the gradient (the module docs'
    /// claim, on which the speed of taller tasks rests): rows that are not a multiple of the
    /// tile, both variants, contrast modes, with and without the similarity cache and
    /// normalization.
    fn same_bits_for_every_task_height<T: Element>(to_t: fn(f64) -> T) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // The last case is past matrixmultiply's own row and depth blocking.
        for (batch, classes, tile, dim) in [
            (37, 4, 4, 12),
            (50, 50, 8, 12),
            (19, 3, 5, 7),
            (300, 10, 48, 300),
        ] {
            let features =
                Array3::from_shape_fn((batch, 2, dim), |_| to_t(rng.random_range(-1.0..1.0)));
            let labels: Vec<i64> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
            let input = SupConInput::new(features.view(), Some(&labels));
            for (variant, mode, normalize, cache) in [
                (Variant::Out, ContrastMode::All, false, usize::MAX),
                (Variant::In, ContrastMode::All, true, 0),
                (Variant::Out, ContrastMode::One, true, 0),
                (Variant::In, ContrastMode::One, false, usize::MAX),
            ] {
                let options = SupConOptions {
                    variant,
                    contrast_mode: mode,
                    normalize,
                    ..SupConOptions::default()
                };
                let run = |row_tiles| {
                    compute_in_blocks(
                        &input,
                        0..batch,
                        &options,
                        Blocks::of(tile, row_tiles),
                        cache,
                    )
                    .unwrap()
                };
                let one = run(1);
                for row_tiles in [2, 3, 64] {
                    let taller = run(row_tiles);
                    assert_eq!(one.loss.to_bits(), taller.loss.to_bits(), "{row_tiles}");
                    assert!(
                        one.grad.iter().zip(&taller.grad).all(|(a, b)| a == b),
                        "gradient of {batch} rows, {variant:?} {mode:?}, {row_tiles} tiles"
                    );
                }
            }
        }
    }

    #[test]
    fn task_height_changes_no_bit_in_f32() {
        same_bits_for_every_task_height::<f32>(|x| x as f32);
    }

    #[test]
    fn task_height_changes_no_bit_in_f64() {
        same_bits_for_every_task_height::<f64>(|x| x);
    }
}
