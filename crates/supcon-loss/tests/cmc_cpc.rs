//! CMC's cross-view loss and CPC's InfoNCE over a grid against independent float64
//! implementations of the formulas in their doc comments (written here with plain loops, the
//! dense way), central finite differences in f64 over every option, invariances as properties,
//! f32 against f64, and the errors of bad inputs.

use ndarray::{Array, Array3, Array4, Dimension};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_loss::{cmc_loss, cpc_loss, CmcOptions, CpcOptions, LossError, Pairing};

fn random<Sh: ndarray::ShapeBuilder>(shape: Sh, seed: u64) -> Array<f64, Sh::Dim> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array::from_shape_simple_fn(shape, || rng.random_range(-1.0..1.0))
}

fn normalized(row: &[f64], normalize: bool) -> Vec<f64> {
    let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
    row.iter()
        .map(|x| if normalize { x / norm } else { *x })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// CMC's loss from its doc comment: Σ over pairs of the mean over scenes of
/// `log Σ_c e^{s_bc} − s_bb`.
fn cmc_reference(views: &Array3<f64>, options: &CmcOptions) -> f64 {
    let (count, batch, _) = views.dim();
    let row = |v: usize, b: usize| {
        normalized(
            views.slice(ndarray::s![v, b, ..]).as_slice().unwrap(),
            options.normalize,
        )
    };
    let mut loss = 0.0;
    for (i, j) in options.pairing.pairs(count) {
        for b in 0..batch {
            let scores: Vec<f64> = (0..batch)
                .map(|c| dot(&row(i, b), &row(j, c)) / options.temperature)
                .collect();
            loss += (log_sum_exp(&scores) - scores[b]) / batch as f64;
        }
    }
    loss
}

/// CPC's loss from its doc comment: the mean over valid (b, t, k) of
/// `log Σ_{b',t'} e^{s} − s(positive)`.
fn cpc_reference(p: &Array4<f64>, z: &Array3<f64>, options: &CpcOptions) -> f64 {
    let (batch, positions, offsets, _) = p.dim();
    let mut total = 0.0;
    let mut count = 0;
    for b in 0..batch {
        for t in 0..positions {
            for k in 0..offsets {
                if t + k + 1 >= positions {
                    continue;
                }
                let query = normalized(
                    p.slice(ndarray::s![b, t, k, ..]).as_slice().unwrap(),
                    options.normalize,
                );
                let mut scores = Vec::new();
                let mut positive = 0.0;
                for b2 in 0..batch {
                    for t2 in 0..positions {
                        let target = normalized(
                            z.slice(ndarray::s![b2, t2, ..]).as_slice().unwrap(),
                            options.normalize,
                        );
                        let s = dot(&query, &target) / options.temperature;
                        if (b2, t2) == (b, t + k + 1) {
                            positive = s;
                        }
                        scores.push(s);
                    }
                }
                total += log_sum_exp(&scores) - positive;
                count += 1;
            }
        }
    }
    total / count as f64
}

/// Central differences of `f` at `x`, every coordinate.
fn numeric_gradient<D: Dimension>(
    x: &Array<f64, D>,
    f: impl Fn(&Array<f64, D>) -> f64,
) -> Array<f64, D> {
    let h = 1e-6;
    let mut grad = x.clone();
    for (i, g) in grad.iter_mut().enumerate() {
        let mut plus = x.clone();
        let mut minus = x.clone();
        plus.as_slice_mut().unwrap()[i] += h;
        minus.as_slice_mut().unwrap()[i] -= h;
        *g = (f(&plus) - f(&minus)) / (2.0 * h);
    }
    grad
}

/// Elementwise within `tol` of the largest entry of `want` (and an absolute floor).
fn assert_close<D: Dimension>(what: &str, got: &Array<f64, D>, want: &Array<f64, D>, tol: f64) {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-8);
    let gap = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        gap <= tol * scale,
        "{what}: off by {gap} (largest entry {scale})"
    );
}

fn cmc_options() -> Vec<CmcOptions> {
    let mut all = Vec::new();
    for pairing in [Pairing::CoreView, Pairing::FullGraph] {
        for normalize in [false, true] {
            for tau in [0.07, 0.5] {
                all.push(
                    CmcOptions::new(tau)
                        .with_pairing(pairing)
                        .with_normalize(normalize),
                );
            }
        }
    }
    all
}

fn cpc_options() -> Vec<CpcOptions> {
    let mut all = Vec::new();
    for normalize in [false, true] {
        for tau in [0.1, 1.0] {
            all.push(
                CpcOptions::default()
                    .with_temperature(tau)
                    .with_normalize(normalize),
            );
        }
    }
    all
}

#[test]
fn cmc_gradient_matches_finite_differences_for_every_option() {
    for (case, options) in cmc_options().iter().enumerate() {
        for views in [2, 3] {
            let x = random((views, 4, 3), case as u64 * 10 + views as u64);
            let out = cmc_loss(x.view(), options).unwrap();
            let want = numeric_gradient(&x, |x| cmc_reference(x, options));
            let reference = cmc_reference(&x, options);
            assert!(
                (out.loss - reference).abs() <= 1e-10 * reference.abs(),
                "{options:?}: {} vs {reference}",
                out.loss
            );
            assert_close(
                &format!("{options:?}, {views} views"),
                &out.grad,
                &want,
                1e-6,
            );
        }
    }
}

#[test]
fn cpc_gradients_match_finite_differences_for_every_option() {
    for (case, options) in cpc_options().iter().enumerate() {
        // Offsets reaching past the end (K = 3 with T = 3) exercise the invalid predictions.
        for (positions, offsets) in [(3, 1), (3, 3), (4, 2)] {
            let seed = case as u64 * 100 + positions as u64 * 10 + offsets as u64;
            let p = random((2, positions, offsets, 3), seed);
            let z = random((2, positions, 3), seed + 1);
            let out = cpc_loss(p.view(), z.view(), options).unwrap();
            let reference = cpc_reference(&p, &z, options);
            assert!((out.loss - reference).abs() <= 1e-10 * reference.abs());
            let what = format!("{options:?}, T {positions}, K {offsets}");
            let grad_p = numeric_gradient(&p, |p| cpc_reference(p, &z, options));
            let grad_z = numeric_gradient(&z, |z| cpc_reference(&p, z, options));
            assert_close(
                &format!("{what}: predictions"),
                &out.grad_predictions,
                &grad_p,
                1e-6,
            );
            assert_close(
                &format!("{what}: targets"),
                &out.grad_targets,
                &grad_z,
                1e-6,
            );
        }
    }
}

#[test]
fn cpc_counts_and_zeroes_the_predictions_without_a_target() {
    let p = random((2, 3, 3, 2), 5);
    let z = random((2, 3, 2), 6);
    let out = cpc_loss(p.view(), z.view(), &CpcOptions::default()).unwrap();
    // (t, k) with t + k + 1 < 3: (0, 0), (0, 1), (1, 0), per sequence.
    assert_eq!(out.predictions, 2 * 3);
    for (t, k) in [(0, 2), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)] {
        assert!(out
            .grad_predictions
            .slice(ndarray::s![.., t, k, ..])
            .iter()
            .all(|&g| g == 0.0));
    }
}

#[test]
fn two_views_are_the_symmetric_clip_loss_whatever_the_pairing() {
    let x = random((2, 5, 4), 9);
    let core = cmc_loss(x.view(), &CmcOptions::new(0.2)).unwrap();
    let full = cmc_loss(
        x.view(),
        &CmcOptions::new(0.2).with_pairing(Pairing::FullGraph),
    )
    .unwrap();
    assert_eq!(core.pairs, 2);
    assert_eq!((core.loss, &core.grad), (full.loss, &full.grad));
    // Three views: the full graph adds the pairs (1, 2) and (2, 1).
    assert_eq!(Pairing::CoreView.pairs(3).len(), 4);
    assert_eq!(Pairing::FullGraph.pairs(3).len(), 6);
}

#[test]
fn f32_is_close_to_f64() {
    let x = random((3, 6, 5), 11);
    let options = CmcOptions::new(0.1).with_pairing(Pairing::FullGraph);
    let want = cmc_loss(x.view(), &options).unwrap();
    let got = cmc_loss(x.mapv(|v| v as f32).view(), &options).unwrap();
    assert!((got.loss - want.loss).abs() < 1e-5 * want.loss);
    assert_close("cmc f32", &got.grad.mapv(f64::from), &want.grad, 1e-5);

    let p = random((2, 4, 2, 5), 12);
    let z = random((2, 4, 5), 13);
    let want = cpc_loss(p.view(), z.view(), &CpcOptions::default()).unwrap();
    let got = cpc_loss(
        p.mapv(|v| v as f32).view(),
        z.mapv(|v| v as f32).view(),
        &CpcOptions::default(),
    )
    .unwrap();
    assert!((got.loss - want.loss).abs() < 1e-5 * want.loss);
    assert_close(
        "cpc f32 targets",
        &got.grad_targets.mapv(f64::from),
        &want.grad_targets,
        1e-5,
    );
}

#[test]
fn bad_inputs_are_named_errors() {
    let x = random((2, 3, 4), 1).mapv(|v| v as f32);
    assert!(matches!(
        cmc_loss(x.view(), &CmcOptions::new(0.0)),
        Err(LossError::InvalidTemperature { .. })
    ));
    assert!(matches!(
        cmc_loss(x.slice(ndarray::s![..1, .., ..]), &CmcOptions::default()),
        Err(LossError::ShapeMismatch {
            what: "views count",
            ..
        })
    ));
    assert!(matches!(
        cmc_loss(x.slice(ndarray::s![.., ..1, ..]), &CmcOptions::default()),
        Err(LossError::ShapeMismatch {
            what: "views batch",
            ..
        })
    ));
    let mut nan = x.clone();
    nan[[1, 2, 3]] = f32::NAN;
    assert!(matches!(
        cmc_loss(nan.view(), &CmcOptions::default()),
        Err(LossError::NonFinite { what: "views", ref index, .. }) if index == &vec![1, 2, 3]
    ));
    let mut zero = x.clone();
    zero.slice_mut(ndarray::s![1, 0, ..]).fill(0.0);
    assert!(matches!(
        cmc_loss(zero.view(), &CmcOptions::default()),
        Err(LossError::ZeroNorm { what: "views", ref index }) if index == &vec![1, 0]
    ));

    let p = random((2, 3, 2, 4), 2).mapv(|v| v as f32);
    let z = random((2, 3, 4), 3).mapv(|v| v as f32);
    let options = CpcOptions::default();
    assert!(matches!(
        cpc_loss(p.view(), z.view(), &options.clone().with_temperature(-1.0)),
        Err(LossError::InvalidTemperature { .. })
    ));
    assert!(matches!(
        cpc_loss(p.view(), z.slice(ndarray::s![..1, .., ..]), &options),
        Err(LossError::ShapeMismatch {
            what: "predictions batch",
            ..
        })
    ));
    assert!(matches!(
        cpc_loss(p.view(), z.slice(ndarray::s![.., .., ..3]), &options),
        Err(LossError::ShapeMismatch {
            what: "predictions dim",
            ..
        })
    ));
    assert!(matches!(
        cpc_loss(
            p.slice(ndarray::s![.., ..1, .., ..]),
            z.slice(ndarray::s![.., ..1, ..]),
            &options
        ),
        Err(LossError::ShapeMismatch {
            what: "targets positions",
            ..
        })
    ));
    let mut inf = z.clone();
    inf[[0, 2, 1]] = f32::INFINITY;
    assert!(matches!(
        cpc_loss(p.view(), inf.view(), &options),
        Err(LossError::NonFinite { what: "targets", ref index, .. }) if index == &vec![0, 2, 1]
    ));
    let mut zero = p.clone();
    zero.slice_mut(ndarray::s![1, 2, 1, ..]).fill(0.0);
    assert!(matches!(
        cpc_loss(zero.view(), z.view(), &options.with_normalize(true)),
        Err(LossError::ZeroNorm { what: "predictions", ref index }) if index == &vec![1, 2, 1]
    ));
}

prop_compose! {
    fn cmc_problem()(views in 2usize..4, batch in 2usize..7, dim in 1usize..5, seed: u64,
                     full: bool, normalize: bool, tau in 0.05f64..1.0)
                    -> (Array3<f64>, CmcOptions) {
        let pairing = if full { Pairing::FullGraph } else { Pairing::CoreView };
        let mut x = random((views, batch, dim), seed);
        // Keep rows away from zero so that normalization is well defined.
        x.mapv_inplace(|v| v + 0.1f64.copysign(v));
        (x, CmcOptions::new(tau).with_pairing(pairing).with_normalize(normalize))
    }
}

prop_compose! {
    fn cpc_problem()(batch in 1usize..4, positions in 2usize..5, offsets in 1usize..4,
                     dim in 1usize..5, seed: u64, normalize: bool, tau in 0.1f64..2.0)
                    -> (Array4<f64>, Array3<f64>, CpcOptions) {
        let mut p = random((batch, positions, offsets, dim), seed);
        let mut z = random((batch, positions, dim), seed ^ 1);
        p.mapv_inplace(|v| v + 0.1f64.copysign(v));
        z.mapv_inplace(|v| v + 0.1f64.copysign(v));
        (p, z, CpcOptions::default().with_temperature(tau).with_normalize(normalize))
    }
}

proptest! {
    // Shrunk failures are frozen as named regression tests, not in a persistence file.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(48) })]

    #[test]
    fn cmc_matches_the_dense_formula((x, options) in cmc_problem()) {
        let out = cmc_loss(x.view(), &options).unwrap();
        let want = cmc_reference(&x, &options);
        prop_assert!((out.loss - want).abs() <= 1e-9 * want.abs().max(1.0));
        prop_assert!(out.loss >= 0.0);
    }

    /// The same permutation of the scenes in every view leaves the loss alone and permutes the
    /// gradient.
    #[test]
    fn cmc_is_equivariant_under_a_permutation_of_the_scenes((x, options) in cmc_problem(), shift in 1usize..6) {
        let batch = x.dim().1;
        let order: Vec<usize> = (0..batch).map(|b| (b + shift) % batch).collect();
        let permuted = x.select(ndarray::Axis(1), &order);
        let a = cmc_loss(x.view(), &options).unwrap();
        let b = cmc_loss(permuted.view(), &options).unwrap();
        prop_assert!((a.loss - b.loss).abs() <= 1e-10 * a.loss.abs().max(1.0));
        let gap = (&a.grad.select(ndarray::Axis(1), &order) - &b.grad)
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        prop_assert!(gap <= 1e-10, "{gap}");
    }

    #[test]
    fn cpc_matches_the_dense_formula((p, z, options) in cpc_problem()) {
        let out = cpc_loss(p.view(), z.view(), &options).unwrap();
        let want = cpc_reference(&p, &z, &options);
        prop_assert!((out.loss - want).abs() <= 1e-9 * want.abs().max(1.0));
    }

    /// Permuting the sequences of the batch leaves the loss alone (every target row stays a
    /// candidate, each prediction's positive moves with it).
    #[test]
    fn cpc_is_invariant_under_a_permutation_of_the_sequences((p, z, options) in cpc_problem()) {
        let batch = z.dim().0;
        let order: Vec<usize> = (0..batch).rev().collect();
        let a = cpc_loss(p.view(), z.view(), &options).unwrap();
        let b = cpc_loss(
            p.select(ndarray::Axis(0), &order).view(),
            z.select(ndarray::Axis(0), &order).view(),
            &options,
        )
        .unwrap();
        prop_assert!((a.loss - b.loss).abs() <= 1e-10 * a.loss.abs().max(1.0));
    }
}

/// The libtorch versions give the CPU's loss and gradients (through their `LossOp`s).
#[cfg(feature = "tch")]
#[test]
fn libtorch_matches_the_cpu() {
    use supcon_loss::{Backend, CmcOp, CpcOp, LossOp};
    for options in cmc_options() {
        let x = random((3, 6, 5), 21).mapv(|v| v as f32);
        let op = CmcOp(options.clone());
        let cpu = op.run(Backend::Cpu, &x.view()).unwrap();
        let tch = op.run(Backend::Tch { cuda: None }, &x.view()).unwrap();
        assert!((cpu.loss - tch.loss).abs() < 1e-5 * cpu.loss, "{options:?}");
        assert_close(
            &format!("{options:?}"),
            &tch.grad.mapv(f64::from),
            &cpu.grad.mapv(f64::from),
            1e-4,
        );
    }
    for options in cpc_options() {
        let p = random((2, 4, 3, 5), 22).mapv(|v| v as f32);
        let z = random((2, 4, 5), 23).mapv(|v| v as f32);
        let op = CpcOp(options.clone());
        let cpu = op.run(Backend::Cpu, &(p.view(), z.view())).unwrap();
        let tch = op
            .run(Backend::Tch { cuda: None }, &(p.view(), z.view()))
            .unwrap();
        assert!((cpu.loss - tch.loss).abs() < 1e-5 * cpu.loss, "{options:?}");
        assert_eq!(cpu.predictions, tch.predictions);
        assert_close(
            &format!("{options:?}: predictions"),
            &tch.grad_predictions.mapv(f64::from),
            &cpu.grad_predictions.mapv(f64::from),
            1e-4,
        );
        assert_close(
            &format!("{options:?}: targets"),
            &tch.grad_targets.mapv(f64::from),
            &cpu.grad_targets.mapv(f64::from),
            1e-4,
        );
    }
}
