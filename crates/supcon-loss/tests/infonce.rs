//! InfoNCE with explicit negatives (MoCo): the streaming implementation against a dense f64
//! reference and central finite differences, its special cases (triplet-like, N-pairs,
//! SupCon), invariances (proptest), f32 precision, determinism across thread counts, and every
//! error.

mod common;

use common::infonce_nce::{
    assert_dense_close, finite_differences, max_abs2, max_abs_diff2, permutation, pool,
    random_infonce, Dense, InfoNceProblem, OwnedNegatives,
};
use ndarray::{Array2, Array3, Axis};
use proptest::collection::vec;
use proptest::prelude::*;
use supcon_loss::{
    infonce_loss, validate_infonce, ContrastMode, CpuBackend, InfoNceInput, InfoNceOptions,
    LossError, Negatives, Queue, SupConInput, SupConOptions, INFONCE_COLUMN_BLOCK,
    INFONCE_ROW_BLOCK,
};

/// u = 2⁻²⁴, the unit roundoff of f32.
const U: f64 = 1.0 / 16_777_216.0;

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Every option combination: shared or per-query negatives × normalize.
fn combinations() -> Vec<(bool, bool)> {
    [(true, false), (true, true), (false, false), (false, true)].to_vec()
}

fn context(p: &InfoNceProblem) -> String {
    format!(
        "B {} D {} m {} shared {} {:?}",
        p.queries.nrows(),
        p.queries.ncols(),
        p.negatives.of_query(0).nrows(),
        p.negatives.is_shared(),
        p.options
    )
}

#[test]
fn matches_the_dense_reference() {
    // (batch, dim, negatives): tiny, odd, more negatives than a column block, more queries
    // than a row block, several column blocks.
    let shapes = [
        (1, 1, 1),
        (3, 2, 5),
        (7, 5, 13),
        (9, 3, INFONCE_COLUMN_BLOCK + 37),
        (INFONCE_ROW_BLOCK + 5, 4, 29),
        (2, 17, 2 * INFONCE_COLUMN_BLOCK + 1),
    ];
    let mut seed = 0;
    for &(batch, dim, m) in &shapes {
        for (shared, normalize) in combinations() {
            seed += 1;
            let tau = [0.07, 0.2, 0.5][seed as usize % 3];
            let options = InfoNceOptions::new(tau).with_normalize(normalize);
            let p = random_infonce(seed, batch, dim, m, shared, options);
            let want = p.reference();
            // The brief's tolerances are 1e-6 (loss) and 1e-4 (gradient); f64 does far better.
            assert_dense_close(&context(&p), &p.run(), &want, 1e-10, 1e-9);
        }
    }
}

#[test]
fn gradient_matches_finite_differences_for_every_option() {
    let mut seed = 100;
    for (shared, normalize) in combinations() {
        for tau in [0.07, 0.5] {
            for (batch, dim, m) in [(5, 4, 7), (3, 3, INFONCE_COLUMN_BLOCK + 5)] {
                seed += 1;
                let options = InfoNceOptions::new(tau).with_normalize(normalize);
                let p = random_infonce(seed, batch, dim, m, shared, options);
                let analytic = p.run().grad;
                let numeric = finite_differences(&p.queries, 1e-5, |q| {
                    let mut shifted = p.clone();
                    shifted.queries = q.clone();
                    shifted.run().loss
                });
                let err = max_abs_diff2(&analytic, &numeric) / max_abs2(&analytic).max(1e-12);
                assert!(err < 1e-4, "{}: relative error {err:e}", context(&p));
            }
        }
    }
}

/// One positive, one negative: `ℓ = softplus((s_n − s_p)/τ)` with `s = q·k` (on unit rows),
/// the soft-margin triplet loss; its gradient is `σ(·)·(n − k)/τ`.
#[test]
fn one_positive_one_negative_is_the_triplet_like_softplus() {
    for (shared, normalize) in combinations() {
        let options = InfoNceOptions::new(0.3).with_normalize(normalize);
        let p = random_infonce(7, 6, 4, 1, shared, options);
        let unit = |x: ndarray::ArrayView1<'_, f64>| {
            if normalize {
                &x / x.dot(&x).sqrt()
            } else {
                x.to_owned()
            }
        };
        let mut loss = 0.0;
        let mut grad = Array2::zeros((6, 4));
        for b in 0..6 {
            let q = unit(p.queries.row(b));
            let k = unit(p.positives.row(b));
            let n = unit(p.negatives.of_query(b).row(0));
            let margin = (q.dot(&n) - q.dot(&k)) / 0.3;
            loss += softplus(margin);
            grad.row_mut(b)
                .assign(&((&n - &k) * (sigmoid(margin) / 0.3 / 6.0)));
        }
        let got = p.run();
        assert!(
            (got.loss - loss / 6.0).abs() < 1e-12,
            "{}: {} vs {}",
            context(&p),
            got.loss,
            loss / 6.0
        );
        if !normalize {
            assert!(max_abs_diff2(&got.grad, &grad) < 1e-12);
        }
    }
}

/// Per-query negatives that are the other queries' positives: the N-pairs loss (Sohn 2016),
/// `ℓ_b = log(1 + Σ_{b'≠b} exp((q_b·k_b' − q_b·k_b)/τ))`, with gradient
/// `Σ_{b'≠b} w_b' (k_b' − k_b)/τ`, `w_b' = e^{(q_b·k_b' − q_b·k_b)/τ} / (1 + Σ e^{..})`.
#[test]
fn negatives_from_the_other_positives_give_the_n_pairs_loss() {
    let (batch, dim, tau) = (6, 5, 0.2);
    let p = random_infonce(11, batch, dim, 1, false, InfoNceOptions::new(tau));
    let negatives = Array3::from_shape_fn((batch, batch - 1, dim), |(b, j, d)| {
        let other = if j < b { j } else { j + 1 };
        p.positives[[other, d]]
    });
    let problem = InfoNceProblem {
        negatives: OwnedNegatives::PerQuery(negatives),
        ..p
    };
    let (q, k) = (&problem.queries, &problem.positives);
    let mut loss = 0.0;
    let mut grad = Array2::<f64>::zeros((batch, dim));
    for b in 0..batch {
        let s = |j: usize| q.row(b).dot(&k.row(j));
        let terms: Vec<(usize, f64)> = (0..batch)
            .filter(|&j| j != b)
            .map(|j| (j, ((s(j) - s(b)) / tau).exp()))
            .collect();
        let total: f64 = terms.iter().map(|t| t.1).sum();
        loss += total.ln_1p();
        for &(j, e) in &terms {
            let w = e / (1.0 + total);
            let step = (&k.row(j) - &k.row(b)) * (w / tau / batch as f64);
            let mut row = grad.row_mut(b);
            row += &step;
        }
    }
    let got = problem.run();
    assert!((got.loss - loss / batch as f64).abs() < 1e-12);
    assert!(max_abs_diff2(&got.grad, &grad) < 1e-12);
}

/// SupCon without labels, two views, contrast mode `One`: each anchor `f[b, 0]` has exactly one
/// positive, its second view `f[b, 1]`, and every view of every other sample (plus the queue
/// keys) as negatives. That is InfoNCE with per-query negatives `{f[b', 0], f[b', 1] : b' ≠ b}`
/// (and the keys). Note that these negatives include the other *anchors*: it is the N-pairs
/// loss only with those removed, which SupCon cannot express. The gradients differ (SupCon
/// also differentiates through the contrast rows); the losses are equal.
#[test]
fn supcon_with_one_anchor_view_is_infonce_over_both_views_of_the_other_samples() {
    let (batch, dim, tau) = (5, 6, 0.1);
    for keys in [0, 4] {
        let p = random_infonce(
            21 + keys as u64,
            batch,
            dim,
            keys.max(1),
            true,
            InfoNceOptions::new(tau),
        );
        let queue = match &p.negatives {
            OwnedNegatives::Shared(n) => n.slice(ndarray::s![..keys, ..]).to_owned(),
            OwnedNegatives::PerQuery(_) => unreachable!("shared negatives requested"),
        };
        let mut features = Array3::<f64>::zeros((batch, 2, dim));
        features.index_axis_mut(Axis(1), 0).assign(&p.queries);
        features.index_axis_mut(Axis(1), 1).assign(&p.positives);
        let options = SupConOptions::default()
            .with_temperature(tau)
            .with_contrast_mode(ContrastMode::One);
        let queue_labels = vec![0i64; keys];
        let mut input = SupConInput::new(features.view(), None);
        if keys > 0 {
            input = input.with_queue(Queue {
                keys: queue.view(),
                labels: &queue_labels,
            });
        }
        let supcon = CpuBackend::default()
            .compute_generic(&input, &options)
            .expect("valid SupCon problem");
        assert_eq!(supcon.anchors, batch);

        let per_query = 2 * (batch - 1) + keys;
        let negatives = Array3::from_shape_fn((batch, per_query, dim), |(b, j, d)| {
            if j < 2 * (batch - 1) {
                let (other, view) = (j / 2, j % 2);
                let other = if other < b { other } else { other + 1 };
                features[[other, view, d]]
            } else {
                queue[[j - 2 * (batch - 1), d]]
            }
        });
        let infonce = InfoNceProblem {
            queries: p.queries.clone(),
            positives: p.positives.clone(),
            negatives: OwnedNegatives::PerQuery(negatives),
            options: InfoNceOptions::new(tau),
        }
        .run();
        assert!(
            (supcon.loss - infonce.loss).abs() < 1e-12 * infonce.loss.abs().max(1.0),
            "keys {keys}: SupCon {} vs InfoNCE {}",
            supcon.loss,
            infonce.loss
        );
        // The f32 entry point `supcon_loss::supcon` agrees too (no queue there).
        if keys == 0 {
            let out = supcon_loss::supcon(features.mapv(|x| x as f32).view(), None, &options)
                .expect("valid SupCon problem");
            assert!((out.loss - infonce.loss).abs() < 1e-5 * infonce.loss.abs().max(1.0));
        }
    }
}

#[test]
fn shared_negatives_equal_the_same_negatives_given_per_query() {
    for normalize in [false, true] {
        let p = random_infonce(
            31,
            9,
            5,
            INFONCE_COLUMN_BLOCK + 3,
            true,
            InfoNceOptions::new(0.1).with_normalize(normalize),
        );
        let OwnedNegatives::Shared(n) = &p.negatives else {
            unreachable!("shared negatives requested")
        };
        let broadcast = n
            .broadcast((9, n.nrows(), 5))
            .expect("broadcast")
            .to_owned();
        let per_query = InfoNceProblem {
            negatives: OwnedNegatives::PerQuery(broadcast),
            ..p.clone()
        };
        assert_dense_close(
            "shared vs per query",
            &p.run(),
            &per_query.run(),
            1e-12,
            1e-11,
        );
    }
}

/// The documented f32 guarantee: `|ΔL| ≤ 2γ`, `γ = (D + 2)·u·R²/τ`, against f64 on the same
/// (rounded) values; the gradient within 1e-3 of its largest element. Per-query negatives are
/// computed in f64 whatever the element type: identical loss, gradient rounded once.
#[test]
fn f32_stays_within_the_documented_bound_of_f64() {
    let mut seed = 500;
    for (shared, normalize) in combinations() {
        for tau in [0.05, 0.1, 0.5] {
            for (batch, dim, m) in [(24, 32, 100), (40, 16, INFONCE_COLUMN_BLOCK + 200)] {
                seed += 1;
                let options = InfoNceOptions::new(tau).with_normalize(normalize);
                let p = random_infonce(seed, batch, dim, m, shared, options).rounded();
                let want = p.run();
                let got = p.run_f32();
                let r = if normalize { 1.0 } else { p.max_norm() };
                let gamma = (dim as f64 + 2.0) * U * r * r / tau;
                let what = context(&p);
                assert!(
                    (got.loss - want.loss).abs() <= 2.0 * gamma,
                    "{what}: |ΔL| = {:e} > 2γ = {:e}",
                    (got.loss - want.loss).abs(),
                    2.0 * gamma
                );
                let err = max_abs_diff2(&got.grad, &want.grad) / max_abs2(&want.grad);
                assert!(err < 1e-3, "{what}: gradient error {err:e}");
                if !shared {
                    assert_eq!(got.loss.to_bits(), want.loss.to_bits(), "{what}");
                    assert_eq!(got.grad, want.grad.mapv(|g| f64::from(g as f32)), "{what}");
                }
            }
        }
    }
}

#[test]
fn bit_identical_for_one_and_two_threads() {
    for (shared, normalize) in combinations() {
        let m = if shared {
            INFONCE_COLUMN_BLOCK + 300
        } else {
            40
        };
        let options = InfoNceOptions::new(0.1).with_normalize(normalize);
        let p = random_infonce(41, 2 * INFONCE_ROW_BLOCK + 7, 8, m, shared, options);
        let one = pool(1).install(|| p.run());
        let two = pool(2).install(|| p.run());
        assert_eq!(one.loss.to_bits(), two.loss.to_bits(), "{}", context(&p));
        assert_eq!(one.grad, two.grad, "{}", context(&p));
        let one = pool(1).install(|| p.run_f32());
        let two = pool(2).install(|| p.run_f32());
        assert_eq!(
            one.loss.to_bits(),
            two.loss.to_bits(),
            "{} f32",
            context(&p)
        );
        assert_eq!(one.grad, two.grad, "{} f32", context(&p));
    }
}

#[test]
fn options_defaults_and_builders() {
    let default = InfoNceOptions::default();
    assert_eq!((default.temperature, default.normalize), (0.07, false));
    let options = InfoNceOptions::new(0.2).with_normalize(true);
    assert_eq!((options.temperature, options.normalize), (0.2, true));
    assert_eq!(options.with_temperature(0.5).temperature, 0.5);
}

// ---- Errors ----

fn rows(batch: usize, dim: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((batch, dim), |(b, d)| {
        ((b * 31 + d * 7 + seed * 3) as f32 * 0.37).sin() + 0.1
    })
}

fn per_query(batch: usize, m: usize, dim: usize) -> Array3<f32> {
    Array3::from_shape_fn((batch, m, dim), |(b, j, d)| {
        ((b * 31 + j * 11 + d * 7) as f32 * 0.53).cos() + 0.1
    })
}

/// `validate_infonce` and `infonce_loss` give the same error (compared as Debug strings: NaN
/// values do not compare equal).
fn error_of(input: &InfoNceInput<'_, f32>, options: &InfoNceOptions) -> LossError {
    let from_validate = validate_infonce(input, options).expect_err("accepted by validate");
    let from_loss = infonce_loss(input, options).expect_err("accepted by the loss");
    assert_eq!(format!("{from_validate:?}"), format!("{from_loss:?}"));
    from_loss
}

#[test]
fn invalid_temperatures() {
    let (q, k, n) = (rows(4, 3, 0), rows(4, 3, 1), rows(5, 3, 2));
    let input = InfoNceInput::new(q.view(), k.view(), Negatives::Shared(n.view()));
    for bad in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let err = error_of(&input, &InfoNceOptions::new(bad));
        assert!(
            matches!(
                err,
                LossError::InvalidTemperature {
                    name: "temperature",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("temperature"), "{err}");
    }
}

#[test]
fn empty_axes_name_the_input_and_the_axis() {
    let options = InfoNceOptions::default();
    let (k, n) = (rows(4, 3, 1), rows(5, 3, 2));
    for (shape, axis) in [((0, 3), "batch"), ((4, 0), "dim")] {
        let q = Array2::<f32>::zeros(shape);
        let k = Array2::<f32>::zeros(shape);
        let input = InfoNceInput::new(q.view(), k.view(), Negatives::Shared(n.view()));
        let err = error_of(&input, &options);
        assert!(
            matches!(err, LossError::EmptyAxis { what: "queries", axis: a, .. } if a == axis),
            "{err}"
        );
    }
    let q = rows(4, 3, 0);
    let empty = Array2::<f32>::zeros((0, 3));
    let err = error_of(
        &InfoNceInput::new(q.view(), k.view(), Negatives::Shared(empty.view())),
        &options,
    );
    assert!(
        matches!(
            err,
            LossError::EmptyAxis {
                what: "negatives",
                axis: "K",
                ..
            }
        ),
        "{err}"
    );
    let empty = Array3::<f32>::zeros((4, 0, 3));
    let err = error_of(
        &InfoNceInput::new(q.view(), k.view(), Negatives::PerQuery(empty.view())),
        &options,
    );
    assert!(
        matches!(
            err,
            LossError::EmptyAxis {
                what: "negatives",
                axis: "m",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn shape_mismatches_name_the_input() {
    let options = InfoNceOptions::default();
    let q = rows(4, 3, 0);
    let shared = rows(5, 3, 2);
    let cases = vec![
        (
            rows(3, 3, 1),
            shared.clone(),
            per_query(4, 2, 3),
            true,
            "positives batch",
        ),
        (
            rows(4, 2, 1),
            shared.clone(),
            per_query(4, 2, 3),
            true,
            "positives dim",
        ),
        (
            rows(4, 3, 1),
            rows(5, 2, 2),
            per_query(4, 2, 3),
            true,
            "negatives dim",
        ),
        (
            rows(4, 3, 1),
            shared.clone(),
            per_query(3, 2, 3),
            false,
            "negatives batch",
        ),
        (
            rows(4, 3, 1),
            shared.clone(),
            per_query(4, 2, 5),
            false,
            "negatives dim",
        ),
    ];
    for (k, shared, per_query, use_shared, want) in &cases {
        let negatives = if *use_shared {
            Negatives::Shared(shared.view())
        } else {
            Negatives::PerQuery(per_query.view())
        };
        let err = error_of(&InfoNceInput::new(q.view(), k.view(), negatives), &options);
        assert!(
            matches!(&err, LossError::ShapeMismatch { what, .. } if what == want),
            "{want}: {err}"
        );
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[test]
fn non_finite_values_name_the_input_and_the_first_bad_index() {
    let options = InfoNceOptions::default();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (q, k, n, m) = (
            rows(4, 3, 0),
            rows(4, 3, 1),
            rows(5, 3, 2),
            per_query(4, 3, 3),
        );
        let (mut bad_q, mut bad_k, mut bad_n, mut bad_m) =
            (q.clone(), k.clone(), n.clone(), m.clone());
        bad_q[[2, 1]] = bad;
        bad_q[[3, 0]] = bad;
        bad_k[[1, 0]] = bad;
        bad_n[[3, 2]] = bad;
        bad_m[[1, 2, 0]] = bad;
        let cases = [
            (
                InfoNceInput::new(bad_q.view(), k.view(), Negatives::Shared(n.view())),
                "queries",
                vec![2, 1],
            ),
            (
                InfoNceInput::new(q.view(), bad_k.view(), Negatives::Shared(n.view())),
                "positives",
                vec![1, 0],
            ),
            (
                InfoNceInput::new(q.view(), k.view(), Negatives::Shared(bad_n.view())),
                "negatives",
                vec![3, 2],
            ),
            (
                InfoNceInput::new(q.view(), k.view(), Negatives::PerQuery(bad_m.view())),
                "negatives",
                vec![1, 2, 0],
            ),
        ];
        for (input, what, index) in &cases {
            let err = error_of(input, &options);
            assert!(
                matches!(&err, LossError::NonFinite { what: w, index: i, .. } if w == what && i == index),
                "{what}{index:?}: {err}"
            );
            assert!(err.to_string().contains(what), "{err}");
        }
    }
}

#[test]
fn zero_norm_rows_with_normalize_name_the_input_and_the_row() {
    let normalize = InfoNceOptions::default().with_normalize(true);
    let (q, k, n, m) = (
        rows(4, 3, 0),
        rows(4, 3, 1),
        rows(5, 3, 2),
        per_query(4, 3, 3),
    );
    let mut zero_q = q.clone();
    zero_q.row_mut(2).fill(0.0);
    let mut zero_k = k.clone();
    zero_k.row_mut(1).fill(0.0);
    let mut zero_n = n.clone();
    zero_n.row_mut(3).fill(0.0);
    let mut zero_m = m.clone();
    zero_m.slice_mut(ndarray::s![1, 2, ..]).fill(0.0);
    let cases = [
        (
            InfoNceInput::new(zero_q.view(), k.view(), Negatives::Shared(n.view())),
            "queries",
            vec![2],
        ),
        (
            InfoNceInput::new(q.view(), zero_k.view(), Negatives::Shared(n.view())),
            "positives",
            vec![1],
        ),
        (
            InfoNceInput::new(q.view(), k.view(), Negatives::Shared(zero_n.view())),
            "negatives",
            vec![3],
        ),
        (
            InfoNceInput::new(q.view(), k.view(), Negatives::PerQuery(zero_m.view())),
            "negatives",
            vec![1, 2],
        ),
    ];
    for (input, what, index) in &cases {
        assert_eq!(
            error_of(input, &normalize),
            LossError::ZeroNorm {
                what,
                index: index.clone()
            }
        );
        // Without normalize a zero row is legal.
        assert!(validate_infonce(input, &InfoNceOptions::default()).is_ok());
    }
}

#[test]
fn overflowing_similarities_are_an_error_not_a_nan() {
    let q = Array2::from_elem((2, 2), 3.0e19f32);
    let n = Array2::from_elem((3, 2), 3.0e19f32);
    let err = infonce_loss(
        &InfoNceInput::new(q.view(), q.view(), Negatives::Shared(n.view())),
        &InfoNceOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LossError::Overflow { .. }), "{err}");
}

// ---- Properties ----

/// Rows never shrink to zero when the loss normalizes them (that is an error, tested above).
fn rows_from(values: Vec<f64>, shape: &[usize], normalize: bool) -> ndarray::ArrayD<f64> {
    let mut x = ndarray::ArrayD::from_shape_vec(shape.to_vec(), values).expect("length");
    if normalize {
        let last = x.ndim() - 1;
        x.index_axis_mut(Axis(last), 0).mapv_inplace(|v| v + 2.0);
    }
    x
}

impl Arbitrary for InfoNceProblem {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;

    fn arbitrary_with(_: ()) -> Self::Strategy {
        (
            1usize..6,
            1usize..5,
            1usize..8,
            any::<bool>(),
            0.05f64..1.0,
            any::<bool>(),
        )
            .prop_flat_map(|(batch, dim, m, shared, tau, normalize)| {
                let negatives = if shared { m * dim } else { batch * m * dim };
                (
                    vec(-1.0f64..1.0, batch * dim),
                    vec(-1.0f64..1.0, batch * dim),
                    vec(-1.0f64..1.0, negatives),
                    Just((batch, dim, m, shared, tau, normalize)),
                )
            })
            .prop_map(|(q, k, n, (batch, dim, m, shared, tau, normalize))| {
                let two = |v| {
                    rows_from(v, &[batch, dim], normalize)
                        .into_dimensionality()
                        .expect("2-d")
                };
                let negatives = if shared {
                    OwnedNegatives::Shared(
                        rows_from(n, &[m, dim], normalize)
                            .into_dimensionality()
                            .expect("2-d"),
                    )
                } else {
                    OwnedNegatives::PerQuery(
                        rows_from(n, &[batch, m, dim], normalize)
                            .into_dimensionality()
                            .expect("3-d"),
                    )
                };
                InfoNceProblem {
                    queries: two(q),
                    positives: two(k),
                    negatives,
                    options: InfoNceOptions::new(tau).with_normalize(normalize),
                }
            })
            .boxed()
    }
}

proptest! {
    // Shrunk failures are frozen as named regression tests, not in a persistence file.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(48) })]

    #[test]
    fn streaming_matches_dense(problem: InfoNceProblem) {
        assert_dense_close("streaming vs dense", &problem.run(), &problem.reference(), 1e-10, 1e-9);
    }

    #[test]
    fn permuting_the_negatives_changes_nothing(problem: InfoNceProblem, seed: u64) {
        let mut permuted = problem.clone();
        permuted.negatives = match &problem.negatives {
            OwnedNegatives::Shared(n) => {
                OwnedNegatives::Shared(n.select(Axis(0), &permutation(n.nrows(), seed)))
            }
            OwnedNegatives::PerQuery(n) => {
                OwnedNegatives::PerQuery(n.select(Axis(1), &permutation(n.dim().1, seed)))
            }
        };
        assert_dense_close("permuted negatives", &permuted.run(), &problem.run(), 1e-12, 1e-11);
    }

    #[test]
    fn permuting_the_queries_permutes_the_gradient(problem: InfoNceProblem, seed: u64) {
        let perm = permutation(problem.queries.nrows(), seed);
        let mut permuted = problem.clone();
        permuted.queries = problem.queries.select(Axis(0), &perm);
        permuted.positives = problem.positives.select(Axis(0), &perm);
        if let OwnedNegatives::PerQuery(n) = &problem.negatives {
            permuted.negatives = OwnedNegatives::PerQuery(n.select(Axis(0), &perm));
        }
        let want = problem.run();
        let got = permuted.run();
        let regathered = Dense {
            grad: want.grad.select(Axis(0), &perm),
            ..want
        };
        assert_dense_close("permuted queries", &got, &regathered, 1e-12, 1e-11);
    }

    #[test]
    fn f32_is_close_to_f64(problem: InfoNceProblem) {
        let p = problem.rounded();
        let want = p.run();
        let got = p.run_f32();
        let (batch, dim) = p.queries.dim();
        let tau = p.options.temperature;
        let r = if p.options.normalize { 1.0 } else { p.max_norm() };
        let gamma = (dim as f64 + 2.0) * U * r * r / tau;
        prop_assert!((got.loss - want.loss).abs() <= 2.0 * gamma,
            "|ΔL| = {:e} > 2γ = {:e}", (got.loss - want.loss).abs(), 2.0 * gamma);
        // Per row, |Δ∂ℓ/∂ẑ_q| ≤ (R/τ)·(6γ + (block + D + 2)·u): the softmax weights move by at
        // most 2γ in total and σ(u) by 2γ relative; the weighted sums round in T. The
        // normalization backward divides by ‖q‖ ≥ 1 here (first column shifted by 2).
        let bound = 2.0 * r / (tau * batch as f64)
            * (6.0 * gamma + (INFONCE_COLUMN_BLOCK + dim + 2) as f64 * U);
        let err = max_abs_diff2(&got.grad, &want.grad);
        prop_assert!(err <= 1e-3 * max_abs2(&want.grad) + bound, "gradient error {:e}", err);
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count(problem: InfoNceProblem) {
        let one = pool(1).install(|| problem.run());
        let two = pool(2).install(|| problem.run());
        prop_assert_eq!(one.loss.to_bits(), two.loss.to_bits());
        prop_assert_eq!(one.grad, two.grad);
    }
}
