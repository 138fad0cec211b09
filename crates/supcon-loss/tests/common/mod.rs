//! Shared test helpers: a straightforward dense n × M reference (f64) and random problems.
#![allow(dead_code)]

pub mod f32_case;
pub mod infonce_nce;
pub mod swav;

use ndarray::{Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_loss::{
    ContrastMode, CpuBackend, LossOutput, Queue, SupConInput, SupConOptions, Variant,
};

/// An owned loss problem in f64.
#[derive(Clone, Debug)]
pub struct Problem {
    pub features: Array3<f64>,
    pub labels: Option<Vec<i64>>,
    pub queue: Option<(Array2<f64>, Vec<i64>)>,
    pub options: SupConOptions,
}

impl Problem {
    pub fn input(&self) -> SupConInput<'_, f64> {
        SupConInput {
            features: self.features.view(),
            labels: self.labels.as_deref(),
            queue: self.queue.as_ref().map(|(keys, labels)| Queue {
                keys: keys.view(),
                labels,
            }),
        }
    }

    /// The tiled CPU backend in f64.
    pub fn run_with(&self, backend: &CpuBackend) -> LossOutput<f64> {
        backend
            .compute_generic(&self.input(), &self.options)
            .expect("valid problem")
    }

    /// The share of the anchors of samples `shard` (see `CpuBackend::compute_shard`).
    pub fn run_shard(
        &self,
        backend: &CpuBackend,
        shard: std::ops::Range<usize>,
    ) -> LossOutput<f64> {
        backend
            .compute_shard(&self.input(), shard, &self.options)
            .expect("valid problem")
    }

    pub fn run(&self) -> LossOutput<f64> {
        self.run_with(&CpuBackend::default())
    }

    /// The tiled CPU backend on the f32-rounded inputs.
    pub fn run_f32(&self, backend: &CpuBackend) -> LossOutput<f32> {
        let features = self.features.mapv(|x| x as f32);
        let keys = self.queue.as_ref().map(|(k, _)| k.mapv(|x| x as f32));
        let input = SupConInput {
            features: features.view(),
            labels: self.labels.as_deref(),
            queue: self.queue.as_ref().map(|(_, labels)| Queue {
                keys: keys.as_ref().expect("keys with the queue").view(),
                labels,
            }),
        };
        backend
            .compute_generic(&input, &self.options)
            .expect("valid problem")
    }

    pub fn reference(&self) -> LossOutput<f64> {
        dense_reference(self)
    }
}

/// The loss and gradient the obvious way: the full n × M similarity and coefficient matrices.
pub fn dense_reference(problem: &Problem) -> LossOutput<f64> {
    let o = &problem.options;
    let (batch, views, dim) = problem.features.dim();
    let keys = problem.queue.as_ref().map_or(0, |(k, _)| k.nrows());
    let m = batch * views + keys;
    let n = match o.contrast_mode {
        ContrastMode::All => batch * views,
        ContrastMode::One => batch,
    };
    // Raw rows x_j and labels y_j (queue keys without batch labels: a label no sample has).
    let mut x = Array2::<f64>::zeros((m, dim));
    let mut y = vec![0i64; m];
    for v in 0..views {
        for b in 0..batch {
            let j = v * batch + b;
            x.row_mut(j)
                .assign(&problem.features.slice(ndarray::s![b, v, ..]));
            y[j] = problem.labels.as_ref().map_or(b as i64, |l| l[b]);
        }
    }
    if let Some((k, kl)) = &problem.queue {
        for q in 0..keys {
            x.row_mut(batch * views + q).assign(&k.row(q));
            y[batch * views + q] = if problem.labels.is_some() {
                kl[q]
            } else {
                -1 - q as i64
            };
        }
    }
    let norms: Vec<f64> = x.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
    let mut z = x.clone();
    if o.normalize {
        for (mut r, &nr) in z.rows_mut().into_iter().zip(&norms) {
            r /= nr;
        }
    }
    let tau = o.temperature;
    let factor = o.temperature / o.base_temperature.unwrap_or(o.temperature);
    let s = z.slice(ndarray::s![..n, ..]).dot(&z.t()) / tau; // n × M
    let mut coef = Array2::<f64>::zeros((n, m));
    let mut terms = Vec::new();
    // Positives: the same label; an unlabeled row (negative label: semi-supervised SupCon, and
    // SimCLR's queue keys) is a positive of the other views of its own sample only.
    let sample = |j: usize| (j < batch * views).then_some(j % batch);
    let positive = |i: usize, j: usize| {
        j != i
            && if y[i] < 0 || y[j] < 0 {
                y[i] < 0 && y[j] < 0 && sample(i) == sample(j)
            } else {
                y[i] == y[j]
            }
    };
    for i in 0..n {
        let pos: Vec<usize> = (0..m).filter(|&j| positive(i, j)).collect();
        if pos.is_empty() {
            continue;
        }
        let all: Vec<usize> = (0..m).filter(|&j| j != i).collect();
        let lse = log_sum_exp(all.iter().map(|&j| s[[i, j]]));
        let lsep = log_sum_exp(pos.iter().map(|&j| s[[i, j]]));
        let p = pos.len() as f64;
        let term = match o.variant {
            Variant::Out => lse - pos.iter().map(|&j| s[[i, j]]).sum::<f64>() / p,
            Variant::In => lse - lsep + p.ln(),
        };
        terms.push(term);
        for &j in &all {
            coef[[i, j]] += (s[[i, j]] - lse).exp();
        }
        for &j in &pos {
            coef[[i, j]] -= match o.variant {
                Variant::Out => 1.0 / p,
                Variant::In => (s[[i, j]] - lsep).exp(),
            };
        }
    }
    let anchors = terms.len();
    if anchors == 0 {
        return LossOutput::zero([batch, views, dim]);
    }
    let loss = factor * terms.iter().sum::<f64>() / anchors as f64;
    coef *= factor / anchors as f64 / tau;
    // ∂L/∂z: anchors get G·Z, every row gets Gᵀ·A.
    let mut gz = coef.t().dot(&z.slice(ndarray::s![..n, ..]));
    let ga = coef.dot(&z);
    for i in 0..n {
        let mut r = gz.row_mut(i);
        r += &ga.row(i);
    }
    let mut grad = Array3::<f64>::zeros((batch, views, dim));
    for v in 0..views {
        for b in 0..batch {
            let j = v * batch + b;
            let mut g = gz.row(j).to_owned();
            if o.normalize {
                let zj = z.row(j);
                let proj = zj.dot(&g);
                g = (&g - &(&zj * proj)) / norms[j];
            }
            grad.slice_mut(ndarray::s![b, v, ..]).assign(&g);
        }
    }
    LossOutput {
        loss,
        grad,
        anchors,
    }
}

pub fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Random rows, unit norm when `unit`.
pub fn random_rows(rng: &mut ChaCha8Rng, rows: usize, dim: usize, unit: bool) -> Array2<f64> {
    let mut x = Array2::from_shape_fn((rows, dim), |_| rng.random_range(-1.0f64..1.0));
    if unit {
        for mut r in x.rows_mut() {
            let norm = r.dot(&r).sqrt();
            r /= norm;
        }
    }
    x
}

/// Every combination of variant × contrast mode × labels × queue × normalize.
pub fn all_combinations() -> Vec<(Variant, ContrastMode, bool, bool, bool)> {
    let mut out = Vec::new();
    for variant in [Variant::Out, Variant::In] {
        for mode in [ContrastMode::All, ContrastMode::One] {
            for labels in [false, true] {
                for queue in [false, true] {
                    for normalize in [false, true] {
                        out.push((variant, mode, labels, queue, normalize));
                    }
                }
            }
        }
    }
    out
}

pub fn combination_problem(
    seed: u64,
    (variant, mode, labels, queue, normalize): (Variant, ContrastMode, bool, bool, bool),
    batch: usize,
    views: usize,
    dim: usize,
) -> Problem {
    let options = SupConOptions::default()
        .with_temperature([0.1, 0.5, 0.07][seed as usize % 3])
        .with_base_temperature(seed.is_multiple_of(2).then_some(0.07))
        .with_variant(variant)
        .with_contrast_mode(mode)
        .with_normalize(normalize);
    random_problem(
        seed,
        batch,
        views,
        dim,
        3,
        labels,
        if queue { 5 } else { 0 },
        options,
    )
}

/// Central differences of `loss` with respect to the features.
pub fn finite_difference_gradient(
    problem: &Problem,
    loss: impl Fn(&Problem) -> f64,
) -> Array3<f64> {
    let h = 1e-5;
    let mut grad = Array3::zeros(problem.features.dim());
    for (index, g) in grad.indexed_iter_mut() {
        let mut shifted = problem.clone();
        shifted.features[index] += h;
        let plus = loss(&shifted);
        shifted.features[index] -= 2.0 * h;
        let minus = loss(&shifted);
        *g = (plus - minus) / (2.0 * h);
    }
    grad
}

/// A random problem with the given switches; shapes small enough for finite differences.
#[allow(clippy::too_many_arguments)]
pub fn random_problem(
    seed: u64,
    batch: usize,
    views: usize,
    dim: usize,
    classes: i64,
    labels: bool,
    queue: usize,
    options: SupConOptions,
) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Unit rows unless the loss normalizes itself (then random norms exercise its backward).
    let unit = !options.normalize;
    let mut features = random_rows(&mut rng, batch * views, dim, unit)
        .into_shape_with_order((batch, views, dim))
        .expect("shape");
    if options.normalize {
        features *= 1.7;
    }
    let labels = labels.then(|| (0..batch).map(|_| rng.random_range(0..classes)).collect());
    let queue = (queue > 0).then(|| {
        let keys = random_rows(&mut rng, queue, dim, true);
        let kl = (0..queue).map(|_| rng.random_range(0..classes)).collect();
        (keys, kl)
    });
    Problem {
        features,
        labels,
        queue,
        options,
    }
}

/// Largest absolute elementwise difference.
pub fn max_abs_diff(a: &Array3<f64>, b: &Array3<f64>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn max_abs(a: &Array3<f64>) -> f64 {
    a.iter().map(|x| x.abs()).fold(0.0, f64::max)
}

/// Asserts loss, anchors and gradient agree within `tol` (relative to the larger magnitude).
pub fn assert_close(what: &str, got: &LossOutput<f64>, want: &LossOutput<f64>, tol: f64) {
    assert_eq!(got.anchors, want.anchors, "{what}: anchors");
    let loss_err = (got.loss - want.loss).abs() / want.loss.abs().max(1.0);
    assert!(
        loss_err <= tol,
        "{what}: loss {} vs {} (rel err {loss_err:e})",
        got.loss,
        want.loss
    );
    // Gradients that cancel to ~0 (identical normalized rows, an anchor whose only other row is
    // its positive) are compared absolutely, to tol·1e-3: their terms are of order |x|/τ ≈ 20,
    // and another summation order leaves a few ulp of those (2.2e-15 in
    // `regression_tiled_gradient_that_cancels_to_zero`).
    let scale = max_abs(&want.grad).max(1e-3);
    let grad_err = max_abs_diff(&got.grad, &want.grad) / scale;
    assert!(
        grad_err <= tol,
        "{what}: gradient rel err {grad_err:e} > {tol:e}"
    );
}
