//! InfoNCE and NCE test helpers: owned problems, random problems, straightforward dense f64
//! references (every logit of every query, the textbook formulas, no streaming), finite
//! differences, and fixed thread pools.

use std::sync::OnceLock;

use ndarray::{Array1, Array2, Array3, ArrayView1, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_loss::{
    infonce_loss, nce_loss, InfoNceInput, InfoNceOptions, NceInput, NceOptions, Negatives,
};

use super::{log_sum_exp, random_rows};

/// A loss and its gradient with respect to the queries, in f64 (whatever the element type of
/// the run), and NCE's Z (NaN for InfoNCE).
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub loss: f64,
    pub grad: Array2<f64>,
    pub partition: f64,
}

/// Owned negatives: shared `[K, D]` or per query `[B, m, D]`.
#[derive(Clone, Debug)]
pub enum OwnedNegatives {
    Shared(Array2<f64>),
    PerQuery(Array3<f64>),
}

impl OwnedNegatives {
    pub fn view(&self) -> Negatives<'_, f64> {
        match self {
            OwnedNegatives::Shared(n) => Negatives::Shared(n.view()),
            OwnedNegatives::PerQuery(n) => Negatives::PerQuery(n.view()),
        }
    }

    /// The negatives of query `b`, `[m, D]`.
    pub fn of_query(&self, b: usize) -> Array2<f64> {
        match self {
            OwnedNegatives::Shared(n) => n.clone(),
            OwnedNegatives::PerQuery(n) => n.index_axis(Axis(0), b).to_owned(),
        }
    }

    /// The same negatives rounded to f32 and widened back: what an f32 run sees.
    pub fn rounded(&self) -> Self {
        match self {
            OwnedNegatives::Shared(n) => OwnedNegatives::Shared(round_f32(n)),
            OwnedNegatives::PerQuery(n) => OwnedNegatives::PerQuery(round_f32(n)),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, OwnedNegatives::Shared(_))
    }

    /// The largest row norm.
    pub fn max_norm(&self) -> f64 {
        match self {
            OwnedNegatives::Shared(n) => max_row_norm(n.rows().into_iter()),
            OwnedNegatives::PerQuery(n) => max_row_norm(n.rows().into_iter()),
        }
    }
}

/// `x` rounded to f32 and back.
pub fn round_f32<D: ndarray::Dimension>(x: &ndarray::Array<f64, D>) -> ndarray::Array<f64, D> {
    x.mapv(|v| f64::from(v as f32))
}

pub fn max_row_norm<'a>(rows: impl Iterator<Item = ArrayView1<'a, f64>>) -> f64 {
    rows.map(|r| r.dot(&r).sqrt()).fold(0.0, f64::max)
}

fn unit(row: ArrayView1<'_, f64>, normalize: bool) -> Array1<f64> {
    if normalize {
        &row / row.dot(&row).sqrt()
    } else {
        row.to_owned()
    }
}

/// `(g − z (z·g)) / ‖x‖` with `z = x/‖x‖`: the normalization's backward pass.
fn through_normalization(g: Array1<f64>, x: ArrayView1<'_, f64>, normalize: bool) -> Array1<f64> {
    if !normalize {
        return g;
    }
    let norm = x.dot(&x).sqrt();
    let z = &x / norm;
    let proj = z.dot(&g);
    (&g - &(&z * proj)) / norm
}

/// A pool of exactly `threads` threads, built once per test binary.
pub fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: [OnceLock<rayon::ThreadPool>; 4] = [const { OnceLock::new() }; 4];
    POOLS[threads.min(3)].get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool")
    })
}

/// Central differences (step `h`) of `loss` with respect to every element of `queries`.
pub fn finite_differences(
    queries: &Array2<f64>,
    h: f64,
    loss: impl Fn(&Array2<f64>) -> f64,
) -> Array2<f64> {
    let mut grad = Array2::zeros(queries.dim());
    for (index, g) in grad.indexed_iter_mut() {
        let mut shifted = queries.clone();
        shifted[index] += h;
        let plus = loss(&shifted);
        shifted[index] -= 2.0 * h;
        let minus = loss(&shifted);
        *g = (plus - minus) / (2.0 * h);
    }
    grad
}

pub fn max_abs2(a: &Array2<f64>) -> f64 {
    a.iter().map(|x| x.abs()).fold(0.0, f64::max)
}

pub fn max_abs_diff2(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Loss within `loss_tol` relative (to max(|loss|, 1)) and gradient within `grad_tol` of its
/// largest entry. Gradients that cancel to about 0 (e.g. a negative equal to the positive) are
/// compared absolutely at the scale 1e-4: the textbook references' `p_0 − 1` loses digits there.
pub fn assert_dense_close(what: &str, got: &Dense, want: &Dense, loss_tol: f64, grad_tol: f64) {
    let loss_err = (got.loss - want.loss).abs() / want.loss.abs().max(1.0);
    assert!(
        loss_err <= loss_tol,
        "{what}: loss {} vs {} (rel err {loss_err:e})",
        got.loss,
        want.loss
    );
    let scale = max_abs2(&want.grad).max(1e-4);
    let grad_err = max_abs_diff2(&got.grad, &want.grad) / scale;
    assert!(
        grad_err <= grad_tol,
        "{what}: gradient rel err {grad_err:e} > {grad_tol:e}"
    );
}

/// An owned InfoNCE problem in f64.
#[derive(Clone, Debug)]
pub struct InfoNceProblem {
    pub queries: Array2<f64>,
    pub positives: Array2<f64>,
    pub negatives: OwnedNegatives,
    pub options: InfoNceOptions,
}

impl InfoNceProblem {
    pub fn input(&self) -> InfoNceInput<'_, f64> {
        InfoNceInput::new(
            self.queries.view(),
            self.positives.view(),
            self.negatives.view(),
        )
    }

    /// The library in f64.
    pub fn run(&self) -> Dense {
        let out = infonce_loss(&self.input(), &self.options).expect("valid problem");
        Dense {
            loss: out.loss,
            grad: out.grad,
            partition: f64::NAN,
        }
    }

    /// The library on the f32-rounded inputs, in f32 (gradient widened).
    pub fn run_f32(&self) -> Dense {
        let q = self.queries.mapv(|x| x as f32);
        let k = self.positives.mapv(|x| x as f32);
        let out = match &self.negatives {
            OwnedNegatives::Shared(n) => {
                let n = n.mapv(|x| x as f32);
                infonce_loss(
                    &InfoNceInput::new(q.view(), k.view(), Negatives::Shared(n.view())),
                    &self.options,
                )
            }
            OwnedNegatives::PerQuery(n) => {
                let n = n.mapv(|x| x as f32);
                infonce_loss(
                    &InfoNceInput::new(q.view(), k.view(), Negatives::PerQuery(n.view())),
                    &self.options,
                )
            }
        }
        .expect("valid problem");
        Dense {
            loss: out.loss,
            grad: out.grad.mapv(f64::from),
            partition: f64::NAN,
        }
    }

    /// The same problem on the f32-rounded values, in f64.
    pub fn rounded(&self) -> Self {
        Self {
            queries: round_f32(&self.queries),
            positives: round_f32(&self.positives),
            negatives: self.negatives.rounded(),
            options: self.options.clone(),
        }
    }

    pub fn reference(&self) -> Dense {
        infonce_reference(self)
    }

    /// The largest row norm of all inputs.
    pub fn max_norm(&self) -> f64 {
        max_row_norm(self.queries.rows().into_iter())
            .max(max_row_norm(self.positives.rows().into_iter()))
            .max(self.negatives.max_norm())
    }
}

/// InfoNCE the textbook way: for each query the m + 1 logits with the positive at index 0,
/// `ℓ = −log softmax_0`, `p = softmax`, `∂ℓ/∂ẑ_q = (Σ_j p_j ẑ_nj + p_0 ẑ_k − ẑ_k)/τ`.
pub fn infonce_reference(problem: &InfoNceProblem) -> Dense {
    let (batch, dim) = problem.queries.dim();
    let tau = problem.options.temperature;
    let normalize = problem.options.normalize;
    let mut loss = 0.0;
    let mut grad = Array2::zeros((batch, dim));
    for b in 0..batch {
        let q = unit(problem.queries.row(b), normalize);
        let mut rows = vec![unit(problem.positives.row(b), normalize)];
        for n in problem.negatives.of_query(b).rows() {
            rows.push(unit(n, normalize));
        }
        let logits: Vec<f64> = rows.iter().map(|c| q.dot(c) / tau).collect();
        let lse = log_sum_exp(logits.iter().copied());
        loss += lse - logits[0];
        let mut g = Array1::<f64>::zeros(dim);
        for (j, c) in rows.iter().enumerate() {
            let p = (logits[j] - lse).exp();
            let coefficient = if j == 0 { p - 1.0 } else { p };
            g.scaled_add(coefficient / tau, c);
        }
        let g = through_normalization(g, problem.queries.row(b), normalize) / batch as f64;
        grad.row_mut(b).assign(&g);
    }
    Dense {
        loss: loss / batch as f64,
        grad,
        partition: f64::NAN,
    }
}

/// Random InfoNCE problem: unit rows, or rows of random norms in [0.5, 2] when the loss
/// normalizes (to exercise its backward pass).
pub fn random_infonce(
    seed: u64,
    batch: usize,
    dim: usize,
    negatives: usize,
    shared: bool,
    options: InfoNceOptions,
) -> InfoNceProblem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normalize = options.normalize;
    let rows = |rng: &mut ChaCha8Rng, count: usize| {
        let mut x = random_rows(rng, count, dim, true);
        if normalize {
            for mut r in x.rows_mut() {
                r *= rng.random_range(0.5..2.0);
            }
        }
        x
    };
    let queries = rows(&mut rng, batch);
    let positives = rows(&mut rng, batch);
    let negatives = if shared {
        OwnedNegatives::Shared(rows(&mut rng, negatives))
    } else {
        OwnedNegatives::PerQuery(
            rows(&mut rng, batch * negatives)
                .into_shape_with_order((batch, negatives, dim))
                .expect("shape"),
        )
    };
    InfoNceProblem {
        queries,
        positives,
        negatives,
        options,
    }
}

/// An owned NCE problem in f64.
#[derive(Clone, Debug)]
pub struct NceProblem {
    pub queries: Array2<f64>,
    pub positives: Array2<f64>,
    pub negatives: Array3<f64>,
    pub options: NceOptions,
}

impl NceProblem {
    pub fn input(&self) -> NceInput<'_, f64> {
        NceInput::new(
            self.queries.view(),
            self.positives.view(),
            self.negatives.view(),
        )
    }

    /// The library in f64.
    pub fn run(&self) -> Dense {
        let out = nce_loss(&self.input(), &self.options).expect("valid problem");
        Dense {
            loss: out.loss,
            grad: out.grad,
            partition: out.partition,
        }
    }

    /// The library on the f32-rounded inputs, in f32 (gradient widened).
    pub fn run_f32(&self) -> Dense {
        let q = self.queries.mapv(|x| x as f32);
        let k = self.positives.mapv(|x| x as f32);
        let n = self.negatives.mapv(|x| x as f32);
        let out = nce_loss(&NceInput::new(q.view(), k.view(), n.view()), &self.options)
            .expect("valid problem");
        Dense {
            loss: out.loss,
            grad: out.grad.mapv(f64::from),
            partition: out.partition,
        }
    }

    /// The same problem on the f32-rounded values, in f64.
    pub fn rounded(&self) -> Self {
        Self {
            queries: round_f32(&self.queries),
            positives: round_f32(&self.positives),
            negatives: round_f32(&self.negatives),
            options: self.options.clone(),
        }
    }

    pub fn reference(&self) -> Dense {
        nce_reference(self)
    }
}

/// InstDisc's NCE transcribed directly (its `NCEAverage` then `NCECriterion`, without the
/// 1e-7): `P = exp(s/τ)/Z`, `h = P/(P + m/N)`, `ℓ = −log h_0 − Σ_j log(1 − h_j)`; Z given or
/// `N · mean exp(s_neg/τ)`; `∂ℓ/∂ẑ_q = (Σ_j h_j ẑ_nj − (1 − h_0) ẑ_k)/τ`.
pub fn nce_reference(problem: &NceProblem) -> Dense {
    let (batch, count, dim) = problem.negatives.dim();
    let o = &problem.options;
    let normalize = o.normalize;
    let n = o.dataset_size as f64;
    let noise = count as f64 / n;
    // Bank rows [B, m+1, D], the positive first, and the similarities exp(s/τ).
    let mut bank = Vec::new();
    let mut out = Array2::<f64>::zeros((batch, count + 1));
    for b in 0..batch {
        let q = unit(problem.queries.row(b), normalize);
        let mut rows = vec![unit(problem.positives.row(b), normalize)];
        for r in problem.negatives.index_axis(Axis(0), b).rows() {
            rows.push(unit(r, normalize));
        }
        for (j, c) in rows.iter().enumerate() {
            out[[b, j]] = (q.dot(c) / o.temperature).exp();
        }
        bank.push(rows);
    }
    let z = o
        .partition
        .unwrap_or_else(|| n * out.slice(ndarray::s![.., 1..]).sum() / (batch * count) as f64);
    let mut loss = 0.0;
    let mut grad = Array2::zeros((batch, dim));
    for b in 0..batch {
        let mut g = Array1::<f64>::zeros(dim);
        for (j, c) in bank[b].iter().enumerate() {
            // As NCECriterion: h = P/(P + m·P_n) and 1 − h = m·P_n/(P + m·P_n), both without
            // a subtraction.
            let p = out[[b, j]] / z;
            let h = p / (p + noise);
            let one_minus_h = noise / (p + noise);
            if j == 0 {
                loss -= h.ln();
                g.scaled_add(-one_minus_h / o.temperature, c);
            } else {
                loss -= one_minus_h.ln();
                g.scaled_add(h / o.temperature, c);
            }
        }
        // InstDisc's proximal term λ‖ẑ_q − ẑ_k‖², its gradient 2λ(ẑ_q − ẑ_k).
        let q = unit(problem.queries.row(b), normalize);
        let drift = &q - &bank[b][0];
        loss += o.proximal * drift.dot(&drift);
        g.scaled_add(2.0 * o.proximal, &drift);
        let g = through_normalization(g, problem.queries.row(b), normalize) / batch as f64;
        grad.row_mut(b).assign(&g);
    }
    Dense {
        loss: loss / batch as f64,
        grad,
        partition: z,
    }
}

/// Random NCE problem (rows as in [`random_infonce`]).
pub fn random_nce(
    seed: u64,
    batch: usize,
    dim: usize,
    negatives: usize,
    options: NceOptions,
) -> NceProblem {
    let p = random_infonce(
        seed,
        batch,
        dim,
        negatives,
        false,
        InfoNceOptions::default().with_normalize(options.normalize),
    );
    let OwnedNegatives::PerQuery(negatives) = p.negatives else {
        unreachable!("per-query negatives requested")
    };
    NceProblem {
        queries: p.queries,
        positives: p.positives,
        negatives,
        options,
    }
}

/// A permutation of `0..len` from a seed (rotate, then reverse).
pub fn permutation(len: usize, seed: u64) -> Vec<usize> {
    let shift = seed as usize % len;
    (0..len).map(|i| (i + shift) % len).rev().collect()
}
