//! The SwAV loss: against an independent dense f64 reference (Sinkhorn written like SwAV's
//! `distributed_sinkhorn`), against central finite differences with the codes held fixed, a
//! closed form, Sinkhorn's properties, symmetries and f32 accuracy (proptest), determinism
//! across thread counts, and every error.

mod common;

use common::swav::{
    assert_swav_close, random_swav_problem, relative_to_largest, widen, SwavProblem,
};
use ndarray::{s, Array2, Array3, Axis};
use proptest::collection::vec;
use proptest::prelude::*;
use supcon_loss::{
    swav, swav_codes, swav_generic, swav_with_codes, validate_swav, LossError, SwavInput,
    SwavOptions, SwavOutput,
};

/// Every combination the reference comparison covers: queue, normalize, A, S.
fn combinations() -> Vec<(usize, bool, usize, usize)> {
    let mut out = Vec::new();
    for queue in [0, 5] {
        for normalize in [false, true] {
            for assign in [1, 2] {
                for crops in [2, 6] {
                    out.push((queue, normalize, assign, crops));
                }
            }
        }
    }
    out
}

fn combination_problem(
    seed: u64,
    (queue, normalize, assign, crops): (usize, bool, usize, usize),
    batch: usize,
    dim: usize,
    prototypes: usize,
) -> SwavProblem {
    let options = SwavOptions::default()
        .with_temperature([0.1, 0.5, 0.07][seed as usize % 3])
        .with_epsilon([0.05, 0.2][seed as usize % 2])
        .with_sinkhorn_iterations(1 + seed as usize % 4)
        .with_assignment_crops(assign)
        .with_normalize(normalize);
    random_swav_problem(seed, (batch, crops, dim), prototypes, queue, options)
}

#[test]
fn matches_the_dense_reference() {
    for (i, combination) in combinations().into_iter().enumerate() {
        for (j, (batch, dim, prototypes)) in [(7, 5, 9), (3, 8, 4)].into_iter().enumerate() {
            let seed = 10 + 2 * i as u64 + j as u64;
            let problem = combination_problem(seed, combination, batch, dim, prototypes);
            let context = format!("{combination:?} B{batch} D{dim} K{prototypes} seed {seed}");
            // The brief's tolerances are 1e-6 (loss) and 1e-4 (gradients); f64 does far better.
            assert_swav_close(&context, &problem.run(), &problem.reference(), 1e-10, 1e-10);
        }
    }
}

/// Central differences of `swav_with_codes` (codes fixed) for every feature and prototype entry.
fn finite_differences(problem: &SwavProblem, codes: &Array3<f64>) -> (Array3<f64>, Array2<f64>) {
    let h = 1e-5;
    let loss = |p: &SwavProblem| {
        swav_with_codes(&p.input(), codes.view(), &p.options)
            .expect("valid problem")
            .loss
    };
    let mut shifted = problem.clone();
    let mut grad_features = Array3::zeros(problem.features.dim());
    for (index, g) in grad_features.indexed_iter_mut() {
        shifted.features[index] += h;
        let plus = loss(&shifted);
        shifted.features[index] -= 2.0 * h;
        let minus = loss(&shifted);
        shifted.features[index] += h;
        *g = (plus - minus) / (2.0 * h);
    }
    let mut grad_prototypes = Array2::zeros(problem.prototypes.dim());
    for (index, g) in grad_prototypes.indexed_iter_mut() {
        shifted.prototypes[index] += h;
        let plus = loss(&shifted);
        shifted.prototypes[index] -= 2.0 * h;
        let minus = loss(&shifted);
        shifted.prototypes[index] += h;
        *g = (plus - minus) / (2.0 * h);
    }
    (grad_features, grad_prototypes)
}

#[test]
fn gradients_match_finite_differences_with_codes_held_fixed() {
    for (i, combination) in combinations().into_iter().enumerate() {
        let problem = combination_problem(200 + i as u64, combination, 4, 3, 5);
        let analytic = problem.run();
        let codes = swav_codes(&problem.input(), &problem.options).unwrap();
        assert_eq!(codes, analytic.codes, "{combination:?}: swav_codes");
        // The same loss and gradients, bit for bit, when the codes are given.
        let given = swav_with_codes(&problem.input(), codes.view(), &problem.options).unwrap();
        assert_eq!(given, analytic, "{combination:?}: swav_with_codes");

        let (fd_features, fd_prototypes) = finite_differences(&problem, &codes);
        let err = relative_to_largest(&analytic.grad_features, &fd_features);
        assert!(
            err < 1e-4,
            "{combination:?}: features gradient rel err {err:e}"
        );
        let err = relative_to_largest(&analytic.grad_prototypes, &fd_prototypes);
        assert!(
            err < 1e-4,
            "{combination:?}: prototypes gradient rel err {err:e}"
        );
    }
}

#[test]
fn gradient_is_exact_for_codes_that_do_not_sum_to_one() {
    let problem = combination_problem(300, (0, true, 2, 3), 4, 3, 5);
    let codes = Array3::from_shape_fn((2, 4, 5), |(a, b, k)| {
        0.1 + ((a * 20 + b * 5 + k) as f64 * 0.7).sin().abs()
    });
    let out = swav_with_codes(&problem.input(), codes.view(), &problem.options).unwrap();
    assert_eq!(out.codes, codes);
    let (fd_features, fd_prototypes) = finite_differences(&problem, &codes);
    assert!(relative_to_largest(&out.grad_features, &fd_features) < 1e-4);
    assert!(relative_to_largest(&out.grad_prototypes, &fd_prototypes) < 1e-4);
}

/// One image, no queue: Sinkhorn over N = 1 sample gives every prototype mass 1/K, so the codes
/// are uniform and each term is the cross-entropy of the uniform distribution against p_s.
#[test]
fn single_image_closed_form() {
    let tau = 0.2;
    let features = Array3::from_shape_fn((1, 3, 2), |(_, s, d)| {
        let angle = 0.4 + 1.3 * s as f64;
        if d == 0 {
            angle.cos()
        } else {
            angle.sin()
        }
    });
    let prototypes = Array2::from_shape_fn((4, 2), |(k, d)| {
        let angle = 0.9 * k as f64;
        if d == 0 {
            angle.cos()
        } else {
            angle.sin()
        }
    });
    let options = SwavOptions::default().with_temperature(tau);
    let out = swav_generic(
        &SwavInput::new(features.view(), prototypes.view()),
        &options,
    )
    .unwrap();
    assert!(out.codes.iter().all(|&q| (q - 0.25).abs() < 1e-15));
    // Cross-entropy of uniform codes against crop s: LSE(x) − mean(x), x = s_s/τ.
    let term = |s: usize| {
        let x: Vec<f64> = (0..4)
            .map(|k| {
                features
                    .index_axis(Axis(0), 0)
                    .row(s)
                    .dot(&prototypes.row(k))
                    / tau
            })
            .collect();
        x.iter().map(|v| v.exp()).sum::<f64>().ln() - x.iter().sum::<f64>() / 4.0
    };
    // a = 0 is predicted by crops 1, 2; a = 1 by crops 0, 2.
    let want = ((term(1) + term(2)) / 2.0 + (term(0) + term(2)) / 2.0) / 2.0;
    assert!((out.loss - want).abs() < 1e-12, "{} vs {want}", out.loss);
    assert_eq!(out.anchors, 2);
}

#[test]
fn codes_are_distributions_and_balance_the_prototypes() {
    let options = SwavOptions::default()
        .with_epsilon(0.3)
        .with_sinkhorn_iterations(3);
    let (batch, prototypes) = (12, 5);
    let problem = random_swav_problem(400, (batch, 3, 6), prototypes, 0, options.clone());
    let deviation = |iterations: usize| {
        let mut p = problem.clone();
        p.options = p.options.clone().with_sinkhorn_iterations(iterations);
        let codes = p.run().codes;
        for row in codes.lanes(Axis(2)) {
            assert!(row.iter().all(|&q| q >= 0.0 && q.is_finite()));
            // Each sample's code sums to 1, exactly up to rounding.
            assert!((row.sum() - 1.0).abs() < 1e-14, "iterations {iterations}");
        }
        // Each prototype's mass over the batch approaches B/K.
        let target = batch as f64 / prototypes as f64;
        codes
            .sum_axis(Axis(1))
            .iter()
            .map(|m| (m - target).abs())
            .fold(0.0, f64::max)
    };
    let (three, many) = (deviation(3), deviation(300));
    assert!(many < 1e-9 * batch as f64, "after 300 iterations: {many:e}");
    assert!(
        three > many,
        "3 iterations {three:e}, 300 iterations {many:e}"
    );
    assert!(deviation(1) >= three * 0.999, "1 iteration vs 3");
}

#[test]
fn identical_samples_give_uniform_finite_codes() {
    for normalize in [false, true] {
        for queue in [0, 3] {
            let options = SwavOptions::default().with_normalize(normalize);
            let mut problem = random_swav_problem(500, (6, 3, 4), 7, queue, options);
            let first = problem.features.slice(s![0, 0, ..]).to_owned();
            for mut row in problem.features.lanes_mut(Axis(2)) {
                row.assign(&first);
            }
            if let Some(q) = problem.queue.as_mut() {
                for mut row in q.lanes_mut(Axis(2)) {
                    row.assign(&first);
                }
            }
            let out = problem.run();
            assert!(out.loss.is_finite());
            assert!(out.grad_features.iter().all(|g| g.is_finite()));
            assert!(out.grad_prototypes.iter().all(|g| g.is_finite()));
            // Nothing tells the samples apart: Sinkhorn spreads each one evenly.
            assert!(out.codes.iter().all(|&q| (q - 1.0 / 7.0).abs() < 1e-12));
            assert_swav_close("identical", &out, &problem.reference(), 1e-10, 1e-9);
            let out32 = problem.run_f32();
            assert!(out32.loss.is_finite());
            assert!(out32.codes.iter().all(|&q| (q - 1.0 / 7.0).abs() < 1e-6));
        }
    }
}

#[test]
fn large_k_and_small_epsilon_stay_finite() {
    let options = SwavOptions::default().with_epsilon(0.05);
    let problem = random_swav_problem(600, (16, 2, 32), 3000, 0, options);
    let out = problem.run();
    assert_swav_close("K 3000", &out, &problem.reference(), 1e-10, 1e-9);
    let out32 = problem.run_f32();
    assert!(out32.loss.is_finite());
    assert!(out32.grad_features.iter().all(|g| g.is_finite()));
    assert!(out32.grad_prototypes.iter().all(|g| g.is_finite()));
    for row in out32.codes.lanes(Axis(2)) {
        assert!((row.sum() - 1.0).abs() < 1e-4);
    }
    // Far beyond what a direct exp survives: scores of 50 with ε = 1e-3 (exp(5e4)).
    let mut extreme = problem.clone();
    extreme.features *= 50.0;
    extreme.options = extreme.options.clone().with_epsilon(1e-3);
    for out in [extreme.run(), widen(&extreme.run_f32())] {
        assert!(out.loss.is_finite());
        assert!(out.codes.iter().all(|q| q.is_finite()));
        assert!(out.grad_features.iter().all(|g| g.is_finite()));
        assert!(out.grad_prototypes.iter().all(|g| g.is_finite()));
        for row in out.codes.lanes(Axis(2)) {
            assert!((row.sum() - 1.0).abs() < 1e-6);
        }
    }
}

#[test]
fn the_queue_changes_the_codes_not_the_shapes() {
    let options = SwavOptions::default().with_assignment_crops(2);
    let with = random_swav_problem(700, (4, 3, 5), 6, 8, options);
    let mut without = with.clone();
    without.queue = None;
    let (a, b) = (with.run(), without.run());
    assert_eq!(a.codes.shape(), b.codes.shape());
    assert!(relative_to_largest(&a.codes, &b.codes) > 1e-3);
    // An empty queue is no queue.
    let mut empty = with.clone();
    empty.queue = Some(Array3::zeros((2, 0, 5)));
    assert_eq!(empty.run(), b);
}

#[test]
fn with_one_assignment_crop_it_gets_no_gradient() {
    let options = SwavOptions::default()
        .with_assignment_crops(1)
        .with_normalize(true);
    let problem = random_swav_problem(750, (5, 3, 4), 6, 0, options);
    let out = problem.run();
    assert_eq!(out.anchors, 5);
    assert!(out
        .grad_features
        .slice(s![.., 0, ..])
        .iter()
        .all(|&g| g == 0.0));
    assert!(out
        .grad_features
        .slice(s![.., 1.., ..])
        .iter()
        .any(|&g| g != 0.0));
}

/// Runs `f` on a private pool of `threads` threads.
fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

#[test]
fn bit_identical_for_any_thread_count() {
    // Large enough for several row blocks (128), prototype chunks (64) and inner blocks.
    for (seed, queue, normalize) in [(800u64, 0, false), (801, 70, true)] {
        let options = SwavOptions::default()
            .with_assignment_crops(2)
            .with_normalize(normalize);
        let problem = random_swav_problem(seed, (150, 3, 140), 200, queue, options);
        let one = in_pool(1, || problem.run());
        let two = in_pool(2, || problem.run());
        assert_eq!(one.loss.to_bits(), two.loss.to_bits());
        assert_eq!(one, two);
        let one = in_pool(1, || problem.run_f32());
        let two = in_pool(2, || problem.run_f32());
        assert_eq!(one.loss.to_bits(), two.loss.to_bits());
        assert_eq!(one, two);
    }
}

// ---------------------------------------------------------------------------------------------
// Properties (tract style): an arbitrary problem, its reference, and the loss's symmetries.

fn options_strategy(crops: usize) -> impl Strategy<Value = SwavOptions> {
    (
        0.05f64..1.0,
        0.05f64..1.0,
        1usize..5,
        1..=crops.min(3),
        any::<bool>(),
    )
        .prop_map(|(tau, eps, iterations, assign, normalize)| {
            SwavOptions::default()
                .with_temperature(tau)
                .with_epsilon(eps)
                .with_sinkhorn_iterations(iterations)
                .with_assignment_crops(assign)
                .with_normalize(normalize)
        })
}

/// Rows never shrink to zero when the loss normalizes them (an error, tested below).
fn shifted(mut x: Vec<f64>, dim: usize, normalize: bool) -> Vec<f64> {
    if normalize {
        for row in x.chunks_mut(dim) {
            row[0] += 2.0;
        }
    }
    x
}

impl Arbitrary for SwavProblem {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;

    fn arbitrary_with(_: ()) -> Self::Strategy {
        (1usize..6, 2usize..5, 1usize..5, 1usize..7, 0usize..4)
            .prop_flat_map(|(batch, crops, dim, prototypes, queue)| {
                (
                    Just((batch, crops, dim, prototypes, queue)),
                    options_strategy(crops),
                    vec(-1.0f64..1.0, batch * crops * dim),
                    vec(-1.0f64..1.0, prototypes * dim),
                    vec(-1.0f64..1.0, 3 * queue * dim),
                )
            })
            .prop_map(
                |((batch, crops, dim, k, q), options, features, prototypes, queue)| {
                    let assign = options.assignment_crops;
                    let features = shifted(features, dim, options.normalize);
                    let queue = shifted(queue, dim, options.normalize);
                    SwavProblem {
                        features: Array3::from_shape_vec((batch, crops, dim), features)
                            .expect("shape"),
                        prototypes: Array2::from_shape_vec((k, dim), prototypes).expect("shape"),
                        queue: (q > 0).then(|| {
                            Array3::from_shape_vec(
                                (assign, q, dim),
                                queue[..assign * q * dim].to_vec(),
                            )
                            .expect("shape")
                        }),
                        options,
                    }
                },
            )
            .boxed()
    }
}

/// The module docs' first-order f32 bounds, with a factor 2 of margin (w = 1/(A(S−1)B)): scores within
/// γ = (D+2)·u·R_z·R_c, log p within 2γ/τ, log q within 4T·γ/ε, so
/// |ΔL| ≤ 2γ/τ + 4T·(γ/ε)·L and |ΔG_s[b,k]| ≤ (w/τ)·|𝒜(s)|·(p + q)·(2γ/τ + 4T·γ/ε).
struct F32Bounds {
    loss: f64,
    grad_features: f64,
    grad_prototypes: f64,
}

impl F32Bounds {
    fn of(problem: &SwavProblem, loss: f64) -> Self {
        let o = &problem.options;
        let (batch, crops, dim) = problem.features.dim();
        let max_norm = |rows: &mut dyn Iterator<Item = ndarray::ArrayView1<'_, f64>>| {
            rows.map(|r| r.dot(&r).sqrt()).fold(0.0f64, f64::max)
        };
        let min_norm = problem
            .features
            .lanes(Axis(2))
            .into_iter()
            .map(|r| r.dot(&r).sqrt())
            .fold(f64::INFINITY, f64::min);
        let r_z = if o.normalize {
            1.0
        } else {
            let queue = problem
                .queue
                .as_ref()
                .map_or(0.0, |q| max_norm(&mut q.lanes(Axis(2)).into_iter()));
            max_norm(&mut problem.features.lanes(Axis(2)).into_iter()).max(queue)
        };
        let r_c = max_norm(&mut problem.prototypes.rows().into_iter());
        let u = 2f64.powi(-24);
        let gamma = (dim as f64 + 2.0) * u * r_z * r_c;
        let iterations = o.sinkhorn_iterations as f64;
        let drift = 2.0 * gamma / o.temperature + 4.0 * iterations * gamma / o.epsilon;
        let assign = o.assignment_crops as f64;
        // (w/τ)·max|𝒜(s)| with w = 1/(A(S−1)B).
        let coefficient = assign / (assign * (crops - 1) as f64 * batch as f64) / o.temperature;
        // Σ_k (p_k + q_k)·|c_k| ≤ 2·R_c; the normalization backward: ≤ (1 + √D)/‖x‖.
        let projection = if o.normalize {
            (1.0 + (dim as f64).sqrt()) / min_norm
        } else {
            1.0
        };
        Self {
            loss: 2.0 * (2.0 * gamma / o.temperature + 4.0 * iterations * gamma / o.epsilon * loss),
            grad_features: 2.0 * coefficient * drift * 2.0 * r_c * projection,
            grad_prototypes: 2.0 * coefficient * drift * 2.0 * r_z * (crops * batch) as f64,
        }
    }
}

/// The f32 run against the f64 run on the same (f32-rounded) inputs: errors within
/// `1e-4·max|grad| + bound` (gradients) and `bound` (loss).
fn check_f32_bounds(problem: &SwavProblem) -> Result<(), String> {
    let problem = problem.rounded_to_f32();
    let want = problem.run();
    let got = widen(&problem.run_f32());
    let bounds = F32Bounds::of(&problem, want.loss);
    let loss_err = (got.loss - want.loss).abs();
    if loss_err > bounds.loss {
        return Err(format!(
            "loss {} vs {} (bound {:e})",
            got.loss, want.loss, bounds.loss
        ));
    }
    for (name, got, want, bound) in [
        (
            "grad_features",
            got.grad_features.into_dyn(),
            want.grad_features.into_dyn(),
            bounds.grad_features,
        ),
        (
            "grad_prototypes",
            got.grad_prototypes.into_dyn(),
            want.grad_prototypes.into_dyn(),
            bounds.grad_prototypes,
        ),
    ] {
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        if err > 1e-4 * scale + bound {
            return Err(format!("{name}: {err:e} (max {scale:e}, bound {bound:e})"));
        }
    }
    Ok(())
}

/// A deterministic, non-trivial permutation of `0..len` from `seed`.
fn permutation(len: usize, seed: u64) -> Vec<usize> {
    let shift = seed as usize % len;
    (0..len).map(|i| (i + shift) % len).rev().collect()
}

fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(64) })]

    #[test]
    fn prop_matches_the_reference(problem: SwavProblem) {
        assert_swav_close("proptest", &problem.run(), &problem.reference(), 1e-8, 1e-8);
    }

    #[test]
    fn prop_batch_permutation_permutes_the_gradient(problem: SwavProblem, seed: u64) {
        let perm = permutation(problem.features.dim().0, seed);
        let mut permuted = problem.clone();
        permuted.features = problem.features.select(Axis(0), &perm);
        let (a, b) = (problem.run(), permuted.run());
        prop_assert!((a.loss - b.loss).abs() <= 1e-10 * a.loss.abs().max(1.0));
        // Row b of the permuted problem is row perm[b] of the original.
        let back = inverse(&perm);
        let grad = b.grad_features.select(Axis(0), &back);
        prop_assert!(relative_to_largest(&grad, &a.grad_features) <= 1e-8);
        prop_assert!(relative_to_largest(&b.grad_prototypes, &a.grad_prototypes) <= 1e-8);
        prop_assert!(relative_to_largest(&b.codes.select(Axis(1), &back), &a.codes) <= 1e-8);
    }

    #[test]
    fn prop_prototype_permutation_permutes_their_gradient_and_codes(
        problem: SwavProblem,
        seed: u64,
    ) {
        let perm = permutation(problem.prototypes.nrows(), seed);
        let mut permuted = problem.clone();
        permuted.prototypes = problem.prototypes.select(Axis(0), &perm);
        let (a, b) = (problem.run(), permuted.run());
        prop_assert!((a.loss - b.loss).abs() <= 1e-10 * a.loss.abs().max(1.0));
        let back = inverse(&perm);
        prop_assert!(relative_to_largest(&b.grad_features, &a.grad_features) <= 1e-8);
        let grad = b.grad_prototypes.select(Axis(0), &back);
        prop_assert!(relative_to_largest(&grad, &a.grad_prototypes) <= 1e-8);
        prop_assert!(relative_to_largest(&b.codes.select(Axis(2), &back), &a.codes) <= 1e-8);
    }

    #[test]
    fn prop_f32_stays_within_the_documented_bounds(problem: SwavProblem) {
        if let Err(message) = check_f32_bounds(&problem) {
            prop_assert!(false, "{}", message);
        }
    }

    #[test]
    fn prop_thread_count_independence(problem: SwavProblem) {
        let one = in_pool(1, || problem.run());
        let two = in_pool(2, || problem.run());
        prop_assert_eq!(one.loss.to_bits(), two.loss.to_bits());
        prop_assert_eq!(one, two);
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: every one reachable, typed, naming its input; the same from every entry point.

fn features(batch: usize, crops: usize, dim: usize) -> Array3<f32> {
    Array3::from_shape_fn((batch, crops, dim), |(b, c, d)| {
        ((b * 31 + c * 7 + d * 3) as f32 * 0.37).sin() + 0.1
    })
}

fn prototypes(k: usize, dim: usize) -> Array2<f32> {
    Array2::from_shape_fn((k, dim), |(k, d)| ((k * 5 + d) as f32 * 0.3).cos())
}

/// The error from `validate_swav`; every entry point must return the same one.
fn error_of(input: &SwavInput<'_>, options: &SwavOptions) -> LossError {
    let err = validate_swav(input, options).expect_err("invalid input accepted by validate");
    let from_loss = swav_generic(input, options).expect_err("accepted by swav_generic");
    let from_codes = swav_codes(input, options).expect_err("accepted by swav_codes");
    // Codes of the right shape when the shapes allow it, else any: validation comes first.
    let (batch, _, _) = input.features.dim();
    let codes = Array3::<f32>::zeros((options.assignment_crops, batch, input.prototypes.nrows()));
    let from_given = swav_with_codes(input, codes.view(), options).expect_err("accepted");
    for other in [from_loss, from_codes, from_given] {
        assert_eq!(format!("{err:?}"), format!("{other:?}"));
    }
    err
}

#[test]
fn invalid_temperature_and_epsilon() {
    let (x, c) = (features(4, 2, 3), prototypes(5, 3));
    let input = SwavInput::new(x.view(), c.view());
    for bad in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        for name in ["temperature", "epsilon"] {
            let options = match name {
                "temperature" => SwavOptions::default().with_temperature(bad),
                _ => SwavOptions::default().with_epsilon(bad),
            };
            let err = error_of(&input, &options);
            assert!(
                matches!(err, LossError::InvalidTemperature { name: n, .. } if n == name),
                "{err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}

#[test]
fn zero_iterations_and_zero_assignment_crops_are_invalid_parameters() {
    let (x, c) = (features(4, 2, 3), prototypes(5, 3));
    let input = SwavInput::new(x.view(), c.view());
    for (options, name) in [
        (
            SwavOptions::default().with_sinkhorn_iterations(0),
            "sinkhorn_iterations",
        ),
        (
            SwavOptions::default().with_assignment_crops(0),
            "assignment_crops",
        ),
    ] {
        let err = error_of(&input, &options);
        assert!(
            matches!(err, LossError::InvalidParameter { name: n, value, .. } if n == name && value == 0.0),
            "{err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    // One iteration and one assignment crop are fine.
    let options = SwavOptions::default()
        .with_sinkhorn_iterations(1)
        .with_assignment_crops(1);
    assert!(swav(x.view(), c.view(), &options).is_ok());
}

#[test]
fn empty_axes() {
    for (shape, axis) in [
        ((0, 2, 3), "batch"),
        ((4, 0, 3), "crops"),
        ((4, 2, 0), "dim"),
    ] {
        let x = Array3::<f32>::zeros(shape);
        let c = prototypes(5, shape.2);
        let err = error_of(&SwavInput::new(x.view(), c.view()), &SwavOptions::default());
        assert!(
            matches!(err, LossError::EmptyAxis { what: "features", axis: a, .. } if a == axis),
            "{shape:?}: {err}"
        );
    }
    let (x, c) = (features(4, 2, 3), Array2::<f32>::zeros((0, 3)));
    let err = error_of(&SwavInput::new(x.view(), c.view()), &SwavOptions::default());
    assert_eq!(
        err,
        LossError::EmptyAxis {
            what: "prototypes",
            axis: "prototypes",
            shape: vec![0, 3]
        }
    );
}

#[test]
fn shape_mismatches_name_the_input() {
    let c = prototypes(5, 3);
    let expect_mismatch = |err: LossError, want: &str| match &err {
        LossError::ShapeMismatch { what, .. } => assert_eq!(*what, want, "{err}"),
        other => panic!("expected ShapeMismatch of {want}, got {other}"),
    };
    // One crop: nothing to predict from.
    let x = features(4, 1, 3);
    let options = SwavOptions::default().with_assignment_crops(1);
    expect_mismatch(
        error_of(&SwavInput::new(x.view(), c.view()), &options),
        "features crops",
    );
    // A > S.
    let x = features(4, 2, 3);
    let options = SwavOptions::default().with_assignment_crops(3);
    expect_mismatch(
        error_of(&SwavInput::new(x.view(), c.view()), &options),
        "assignment_crops",
    );
    // Prototypes of another dim.
    let c4 = prototypes(5, 4);
    let err = error_of(
        &SwavInput::new(x.view(), c4.view()),
        &SwavOptions::default(),
    );
    assert!(err.to_string().contains("prototypes dim"), "{err}");
    expect_mismatch(err, "prototypes dim");
    // Queue for the wrong number of assignment crops, and of the wrong dim.
    let queue = Array3::<f32>::ones((1, 6, 3));
    let input = SwavInput::new(x.view(), c.view()).with_queue(queue.view());
    expect_mismatch(
        error_of(&input, &SwavOptions::default()),
        "queue assignment crops",
    );
    let queue = Array3::<f32>::ones((2, 6, 4));
    let input = SwavInput::new(x.view(), c.view()).with_queue(queue.view());
    expect_mismatch(error_of(&input, &SwavOptions::default()), "queue dim");
    // Codes of the wrong shape (only swav_with_codes takes them).
    let codes = Array3::<f32>::zeros((2, 4, 6));
    let err = swav_with_codes(
        &SwavInput::new(x.view(), c.view()),
        codes.view(),
        &SwavOptions::default(),
    )
    .unwrap_err();
    expect_mismatch(err, "codes shape");
}

#[test]
fn non_finite_values_name_the_input_and_the_first_bad_index() {
    let options = SwavOptions::default();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let expect = |err: LossError, input: &str, index: &[usize]| {
            match &err {
                LossError::NonFinite { what, index: i, .. } => {
                    assert_eq!((*what, i.as_slice()), (input, index), "{err}");
                }
                other => panic!("expected NonFinite, got {other}"),
            }
            assert!(err.to_string().contains(input), "{err}");
        };
        let (mut x, c) = (features(4, 2, 3), prototypes(5, 3));
        x[[2, 1, 0]] = bad;
        x[[3, 0, 2]] = bad;
        expect(
            error_of(&SwavInput::new(x.view(), c.view()), &options),
            "features",
            &[2, 1, 0],
        );
        let (x, mut c) = (features(4, 2, 3), prototypes(5, 3));
        c[[3, 1]] = bad;
        expect(
            error_of(&SwavInput::new(x.view(), c.view()), &options),
            "prototypes",
            &[3, 1],
        );
        let c = prototypes(5, 3);
        let mut queue = Array3::<f32>::ones((2, 4, 3));
        queue[[1, 2, 0]] = bad;
        let input = SwavInput::new(x.view(), c.view()).with_queue(queue.view());
        expect(error_of(&input, &options), "queue", &[1, 2, 0]);
        let mut codes = Array3::<f32>::zeros((2, 4, 5));
        codes[[1, 3, 4]] = bad;
        let err = swav_with_codes(&SwavInput::new(x.view(), c.view()), codes.view(), &options)
            .unwrap_err();
        expect(err, "codes", &[1, 3, 4]);
    }
}

#[test]
fn zero_norm_rows_with_normalize() {
    let options = SwavOptions::default().with_normalize(true);
    let (mut x, c) = (features(4, 3, 3), prototypes(5, 3));
    x.slice_mut(s![1, 2, ..]).fill(0.0);
    let err = error_of(&SwavInput::new(x.view(), c.view()), &options);
    assert_eq!(
        err,
        LossError::ZeroNorm {
            what: "features",
            index: vec![1, 2]
        }
    );
    // Without normalize a zero row is legal.
    assert!(swav(x.view(), c.view(), &SwavOptions::default()).is_ok());

    let x = features(4, 3, 3);
    let mut queue = Array3::<f32>::ones((2, 3, 3));
    queue.slice_mut(s![1, 2, ..]).fill(0.0);
    let input = SwavInput::new(x.view(), c.view()).with_queue(queue.view());
    assert_eq!(
        error_of(&input, &options),
        LossError::ZeroNorm {
            what: "queue",
            index: vec![1, 2]
        }
    );
    // Zero prototypes are legal (the loss does not normalize them).
    let zero = Array2::<f32>::zeros((5, 3));
    assert!(swav(x.view(), zero.view(), &options).is_ok());
}

#[test]
fn overflowing_scores_are_an_error_not_a_nan() {
    let x = Array3::from_elem((2, 2, 2), 3.0e19f32);
    let c = Array2::from_elem((3, 2), 3.0e19f32);
    let err = swav(x.view(), c.view(), &SwavOptions::default()).unwrap_err();
    assert!(matches!(err, LossError::Overflow { .. }), "{err}");
}

#[test]
fn options_builder_and_defaults() {
    let o = SwavOptions::default();
    assert_eq!(
        (
            o.temperature,
            o.epsilon,
            o.sinkhorn_iterations,
            o.assignment_crops,
            o.normalize
        ),
        (0.1, 0.05, 3, 2, false)
    );
    let o = o
        .with_temperature(0.2)
        .with_epsilon(0.03)
        .with_sinkhorn_iterations(5)
        .with_assignment_crops(1)
        .with_normalize(true);
    assert_eq!(
        (
            o.temperature,
            o.epsilon,
            o.sinkhorn_iterations,
            o.assignment_crops,
            o.normalize
        ),
        (0.2, 0.03, 5, 1, true)
    );
    // f32 and f64 entry points agree on the same values.
    let (x, c) = (features(6, 3, 4), prototypes(7, 4));
    let a: SwavOutput = swav(x.view(), c.view(), &o).unwrap();
    let b = swav_generic(
        &SwavInput::new(x.mapv(f64::from).view(), c.mapv(f64::from).view()),
        &o,
    )
    .unwrap();
    assert_eq!(a.anchors, 6);
    assert!((a.loss - b.loss).abs() < 1e-5 * b.loss.abs().max(1.0));
}

// ---------------------------------------------------------------------------------------------
// Shrunk proptest failures, frozen.

fn one_dim_problem(features: [f64; 2], prototypes: [f64; 2], normalize: bool) -> SwavProblem {
    SwavProblem {
        features: Array3::from_shape_vec((1, 2, 1), features.to_vec()).expect("shape"),
        prototypes: Array2::from_shape_vec((2, 1), prototypes.to_vec()).expect("shape"),
        queue: None,
        options: SwavOptions::default()
            .with_temperature(0.05)
            .with_epsilon(0.05)
            .with_sinkhorn_iterations(1)
            .with_assignment_crops(1)
            .with_normalize(normalize),
    }
}

/// From `prop_matches_the_reference` at 1e-9: with D = 1 and `normalize` the feature gradient
/// is exactly 0 (a unit "direction" cannot turn), and both sides return rounding noise of the
/// projection, ~1e-15 against gradients of ~1e-1 before it. The properties compare at 1e-8.
#[test]
fn regression_one_dim_normalized_gradient_is_rounding_noise() {
    let problem = one_dim_problem([2.0, 1.3747418344371076], [0.0, -0.8560747087398921], true);
    let out = problem.run();
    assert!(out.grad_features.iter().all(|g| g.abs() < 1e-12));
    assert_swav_close("D = 1", &out, &problem.reference(), 1e-8, 1e-8);
}

/// From the f32 property when it compared gradients at 1e-4 of their largest entry: two
/// almost equal prototypes make p ≈ q, the gradient (∝ p − q) cancels to ~1e-2, and the f32
/// rounding of the scores is then 1.5e-4 of it: absolute, as the documented bound says.
#[test]
fn regression_f32_gradient_cancels_when_p_is_close_to_q() {
    let problem = one_dim_problem(
        [0.0, 0.399054890055616],
        [-0.9720226309065234, -0.9715202803742516],
        false,
    );
    check_f32_bounds(&problem).unwrap();
}
