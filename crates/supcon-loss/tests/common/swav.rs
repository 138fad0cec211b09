//! SwAV test helpers: an owned problem, random problems, and a straightforward dense f64
//! reference whose Sinkhorn is written like SwAV's `distributed_sinkhorn` (exp, normalize the
//! total, alternate row and column normalizations, times N).

use ndarray::{concatenate, s, Array, Array2, Array3, Axis, Dimension};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use supcon_loss::{swav_generic, SwavInput, SwavOptions, SwavOutput};

use super::random_rows;

/// An owned SwAV problem in f64.
#[derive(Clone, Debug)]
pub struct SwavProblem {
    /// `[B, S, D]`.
    pub features: Array3<f64>,
    /// `[K, D]`.
    pub prototypes: Array2<f64>,
    /// `[A, Q, D]`.
    pub queue: Option<Array3<f64>>,
    pub options: SwavOptions,
}

impl SwavProblem {
    pub fn input(&self) -> SwavInput<'_, f64> {
        SwavInput {
            features: self.features.view(),
            prototypes: self.prototypes.view(),
            queue: self.queue.as_ref().map(|q| q.view()),
        }
    }

    /// The library in f64.
    pub fn run(&self) -> SwavOutput<f64> {
        swav_generic(&self.input(), &self.options).expect("valid problem")
    }

    /// The library on the f32-rounded inputs.
    pub fn run_f32(&self) -> SwavOutput<f32> {
        let features = self.features.mapv(|x| x as f32);
        let prototypes = self.prototypes.mapv(|x| x as f32);
        let queue = self.queue.as_ref().map(|q| q.mapv(|x| x as f32));
        let input = SwavInput {
            features: features.view(),
            prototypes: prototypes.view(),
            queue: queue.as_ref().map(|q| q.view()),
        };
        swav_generic(&input, &self.options).expect("valid problem")
    }

    /// The same problem with its inputs rounded to f32 (and kept in f64).
    pub fn rounded_to_f32(&self) -> Self {
        let round = |x: f64| f64::from(x as f32);
        Self {
            features: self.features.mapv(round),
            prototypes: self.prototypes.mapv(round),
            queue: self.queue.as_ref().map(|q| q.mapv(round)),
            options: self.options.clone(),
        }
    }

    pub fn reference(&self) -> SwavOutput<f64> {
        swav_reference(self)
    }
}

/// A random problem: unit feature rows (norm 1.7 when the loss normalizes, to exercise its
/// backward), unit prototypes, unit queue rows.
pub fn random_swav_problem(
    seed: u64,
    (batch, crops, dim): (usize, usize, usize),
    prototypes: usize,
    queue: usize,
    options: SwavOptions,
) -> SwavProblem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let unit = !options.normalize;
    let mut features = random_rows(&mut rng, batch * crops, dim, unit)
        .into_shape_with_order((batch, crops, dim))
        .expect("shape");
    if options.normalize {
        features *= 1.7;
    }
    let prototypes = random_rows(&mut rng, prototypes, dim, true);
    let queue = (queue > 0).then(|| {
        random_rows(&mut rng, options.assignment_crops * queue, dim, true)
            .into_shape_with_order((options.assignment_crops, queue, dim))
            .expect("shape")
    });
    SwavProblem {
        features,
        prototypes,
        queue,
        options,
    }
}

/// SwAV's `distributed_sinkhorn` with world size 1, on `out` `[N, K]`: returns `[N, K]`.
pub fn distributed_sinkhorn(out: &Array2<f64>, epsilon: f64, iterations: usize) -> Array2<f64> {
    // Q is K-by-N.
    let mut q = out.mapv(|x| (x / epsilon).exp()).reversed_axes();
    let n = q.ncols() as f64;
    let k = q.nrows() as f64;
    let total = q.sum();
    q /= total;
    for _ in 0..iterations {
        // Each prototype's total mass 1/K.
        let rows = q.sum_axis(Axis(1)).insert_axis(Axis(1));
        q /= &rows;
        q /= k;
        // Each sample's total mass 1/N.
        let columns = q.sum_axis(Axis(0)).insert_axis(Axis(0));
        q /= &columns;
        q /= n;
    }
    q *= n;
    q.reversed_axes()
}

fn normalize_rows(x: &mut Array2<f64>) {
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row /= norm;
    }
}

/// The loss, the gradients and the codes, the obvious way.
pub fn swav_reference(problem: &SwavProblem) -> SwavOutput<f64> {
    let o = &problem.options;
    let (batch, crops, dim) = problem.features.dim();
    let c = &problem.prototypes;
    let k = c.nrows();
    let assign = o.assignment_crops;
    let tau = o.temperature;

    // z_s: [B, D] per crop, and the raw norms.
    let mut z = Vec::new();
    let mut norms = Vec::new();
    for s in 0..crops {
        let mut zs = problem.features.slice(s![.., s, ..]).to_owned();
        norms.push(zs.map_axis(Axis(1), |r| r.dot(&r).sqrt()));
        if o.normalize {
            normalize_rows(&mut zs);
        }
        z.push(zs);
    }
    let scores: Vec<Array2<f64>> = z.iter().map(|zs| zs.dot(&c.t())).collect();

    let mut codes = Array3::<f64>::zeros((assign, batch, k));
    for (a, batch_scores) in scores.iter().enumerate().take(assign) {
        let mut out = batch_scores.clone();
        if let Some(queue) = &problem.queue {
            if queue.dim().1 > 0 {
                let mut rows = queue.index_axis(Axis(0), a).to_owned();
                if o.normalize {
                    normalize_rows(&mut rows);
                }
                out = concatenate![Axis(0), rows.dot(&c.t()), out];
            }
        }
        let q = distributed_sinkhorn(&out, o.epsilon, o.sinkhorn_iterations);
        let n = q.nrows();
        codes
            .index_axis_mut(Axis(0), a)
            .assign(&q.slice(s![n - batch.., ..]));
    }

    // loss = (1/A) Σ_a (1/(S−1)) Σ_{s≠a} −mean_b Σ_k q_a log softmax(s_s/τ)
    let mut loss = 0.0;
    let mut g: Vec<Array2<f64>> = vec![Array2::zeros((batch, k)); crops];
    let w = 1.0 / (assign as f64 * (crops - 1) as f64 * batch as f64);
    for a in 0..assign {
        let q = codes.index_axis(Axis(0), a);
        for s in (0..crops).filter(|&s| s != a) {
            let x = &scores[s] / tau;
            let mut log_p = x.clone();
            for mut row in log_p.rows_mut() {
                let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                let lse = max + row.mapv(|v| (v - max).exp()).sum().ln();
                row -= lse;
            }
            loss -= w * (&q * &log_p).sum();
            g[s] = &g[s] + &((log_p.mapv(f64::exp) - q) * (w / tau));
        }
    }

    let mut grad_features = Array3::<f64>::zeros((batch, crops, dim));
    let mut grad_prototypes = Array2::<f64>::zeros((k, dim));
    for s in 0..crops {
        let mut gz = g[s].dot(c);
        grad_prototypes = grad_prototypes + g[s].t().dot(&z[s]);
        if o.normalize {
            for (b, &norm) in norms[s].iter().enumerate() {
                let zb = z[s].row(b);
                let projection = zb.dot(&gz.row(b));
                let row = (&gz.row(b) - &(&zb * projection)) / norm;
                gz.row_mut(b).assign(&row);
            }
        }
        grad_features.slice_mut(s![.., s, ..]).assign(&gz);
    }
    SwavOutput {
        loss,
        grad_features,
        grad_prototypes,
        codes,
        anchors: batch * assign,
    }
}

/// max |got − want| / max(max |want|, 1e-6): an error relative to the largest entry (absolute
/// for arrays that are all but zero, like `assert_close`).
pub fn relative_to_largest<D: Dimension>(got: &Array<f64, D>, want: &Array<f64, D>) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-6);
    got.iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / scale
}

/// Asserts loss (relative), both gradients and the codes (relative to their largest entry)
/// agree within `loss_tol` / `grad_tol`, and the anchor counts are equal.
pub fn assert_swav_close(
    what: &str,
    got: &SwavOutput<f64>,
    want: &SwavOutput<f64>,
    loss_tol: f64,
    grad_tol: f64,
) {
    assert_eq!(got.anchors, want.anchors, "{what}: anchors");
    let loss_err = (got.loss - want.loss).abs() / want.loss.abs().max(1e-6);
    assert!(
        loss_err <= loss_tol,
        "{what}: loss {} vs {} (rel err {loss_err:e})",
        got.loss,
        want.loss
    );
    for (name, err) in [
        (
            "grad_features",
            relative_to_largest(&got.grad_features, &want.grad_features),
        ),
        (
            "grad_prototypes",
            relative_to_largest(&got.grad_prototypes, &want.grad_prototypes),
        ),
        ("codes", relative_to_largest(&got.codes, &want.codes)),
    ] {
        assert!(
            err <= grad_tol,
            "{what}: {name} rel err {err:e} > {grad_tol:e}"
        );
    }
}

/// The f32 output widened to f64.
pub fn widen(out: &SwavOutput<f32>) -> SwavOutput<f64> {
    SwavOutput {
        loss: out.loss,
        grad_features: out.grad_features.mapv(f64::from),
        grad_prototypes: out.grad_prototypes.mapv(f64::from),
        codes: out.codes.mapv(f64::from),
        anchors: out.anchors,
    }
}
