//! InstDisc's NCE: the stable implementation against a direct f64 transcription of InstDisc's
//! formula and central finite differences, the estimated and the given Z, stability where the
//! direct formula overflows, invariances (proptest), f32, determinism across thread counts,
//! and every error.

mod common;

use common::infonce_nce::{
    assert_dense_close, finite_differences, max_abs2, max_abs_diff2, permutation, pool, random_nce,
    Dense, NceProblem,
};
use ndarray::{Array2, Array3, Axis};
use proptest::collection::vec;
use proptest::prelude::*;
use supcon_loss::{nce_loss, validate_nce, LossError, NceInput, NceOptions, NCE_ROW_BLOCK};

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn context(p: &NceProblem) -> String {
    format!("shape {:?} {:?}", p.negatives.dim(), p.options)
}

/// Every option combination: normalize × (Z estimated, Z given).
fn combinations() -> Vec<(bool, Option<f64>)> {
    [
        (false, None),
        (false, Some(3.0e3)),
        (true, None),
        (true, Some(4.0e4)),
    ]
    .to_vec()
}

#[test]
fn matches_the_direct_formula() {
    // (batch, dim, m): tiny, odd, more queries than a row block, many negatives.
    let shapes = [
        (1, 1, 1),
        (3, 2, 5),
        (7, 5, 13),
        (NCE_ROW_BLOCK + 5, 4, 29),
        (2, 9, 700),
    ];
    let mut seed = 0;
    for &(batch, dim, m) in &shapes {
        for (normalize, partition) in combinations() {
            for n in [100usize, 50_000] {
                seed += 1;
                let tau = [0.07, 0.2, 0.5][seed as usize % 3];
                let options = NceOptions::new(tau)
                    .with_dataset_size(n)
                    .with_partition(partition)
                    .with_normalize(normalize)
                    .with_proximal([0.0, 0.5, 30.0][seed as usize % 3]);
                let p = random_nce(seed, batch, dim, m, options);
                let want = p.reference();
                let got = p.run();
                // The brief's tolerances are 1e-6 (loss) and 1e-4 (gradient); f64 does far better.
                assert_dense_close(&context(&p), &got, &want, 1e-10, 1e-9);
                let z_err = (got.partition - want.partition).abs() / want.partition;
                assert!(
                    z_err < 1e-12,
                    "{}: Z {} vs {}",
                    context(&p),
                    got.partition,
                    want.partition
                );
            }
        }
    }
}

/// Z is a constant of the loss (no gradient through it): with Z estimated, the finite
/// differences keep Z at the value estimated at the unperturbed queries.
#[test]
fn gradient_matches_finite_differences_for_every_option() {
    let mut seed = 100;
    for (normalize, partition) in combinations() {
        for (tau, proximal) in [(0.07, 0.0), (0.5, 0.0), (0.07, 30.0), (0.5, 2.0)] {
            seed += 1;
            let options = NceOptions::new(tau)
                .with_dataset_size(1000)
                .with_partition(partition)
                .with_normalize(normalize)
                .with_proximal(proximal);
            let p = random_nce(seed, 5, 4, 7, options);
            let analytic = p.run();
            let mut fixed = p.clone();
            fixed.options = fixed.options.with_partition(Some(analytic.partition));
            let numeric = finite_differences(&p.queries, 1e-5, |q| {
                let mut shifted = fixed.clone();
                shifted.queries = q.clone();
                shifted.run().loss
            });
            let err = max_abs_diff2(&analytic.grad, &numeric) / max_abs2(&analytic.grad).max(1e-12);
            assert!(err < 1e-4, "{}: relative error {err:e}", context(&p));
        }
    }
}

#[test]
fn a_fixed_z_reproduces_the_run_that_estimated_it() {
    for normalize in [false, true] {
        let options = NceOptions::new(0.07)
            .with_dataset_size(10_000)
            .with_normalize(normalize);
        let p = random_nce(7, 6, 8, 20, options);
        let estimated = p.run();
        let mut fixed = p.clone();
        fixed.options = fixed.options.with_partition(Some(estimated.partition));
        let again = fixed.run();
        assert_eq!(estimated.loss.to_bits(), again.loss.to_bits());
        assert_eq!(estimated.grad, again.grad);
        assert_eq!(estimated.partition, again.partition);
        // Z = N · mean of e^{s/τ} over the query–negative pairs.
        assert!(
            (estimated.partition - p.reference().partition).abs() < 1e-12 * estimated.partition
        );
    }
}

/// With Z given, the output still carries the batch's own estimate of Z: bit-identical to the Z
/// the loss estimates when none is given, whatever the given Z (what a running average of Z
/// reads).
#[test]
fn the_batch_estimate_of_z_does_not_depend_on_the_given_z() {
    for normalize in [false, true] {
        let options = NceOptions::new(0.1)
            .with_dataset_size(10_000)
            .with_normalize(normalize);
        let p = random_nce(11, NCE_ROW_BLOCK + 3, 8, 20, options.clone());
        let estimated = nce_loss(&p.input(), &options).expect("valid");
        assert_eq!(estimated.batch_partition, estimated.partition);
        for z in [1.0, 1e4, 1e8] {
            let given =
                nce_loss(&p.input(), &options.clone().with_partition(Some(z))).expect("valid");
            assert_eq!(given.partition, z);
            assert_eq!(
                given.batch_partition.to_bits(),
                estimated.partition.to_bits(),
                "normalize {normalize}, Z {z}"
            );
        }
    }
}

/// τ = 0.001 on unit rows: `e^{s/τ}` overflows f64 (e^1000), so the direct formula gives NaN;
/// the softplus form stays finite and equals a log-space evaluation (a tiny Z makes `P` larger
/// still). With τ = 0.002 and Z estimated (about e^500 · N), the same.
#[test]
fn stable_where_the_direct_formula_overflows() {
    for (tau, partition) in [(0.001, Some(1.0)), (0.001, Some(1e-300)), (0.002, None)] {
        let options = NceOptions::new(tau)
            .with_dataset_size(1_000_000)
            .with_partition(partition)
            .with_normalize(true);
        let mut p = random_nce(3, 4, 3, 6, options);
        // Positives close to the queries: s_0 ≈ 1.
        p.positives = &p.queries + &(&p.positives * 0.01);
        let got = p.run();
        assert!(got.loss.is_finite() && got.grad.iter().all(|g| g.is_finite()));
        // Log space: log P = s − log Z, x = log P − log(m/N).
        let (batch, m, _) = p.negatives.dim();
        let unit = |x: ndarray::ArrayView1<'_, f64>| &x / x.dot(&x).sqrt();
        let s = |b: usize, row: ndarray::ArrayView1<'_, f64>| {
            unit(p.queries.row(b)).dot(&unit(row)) / tau
        };
        let log_z = match partition {
            Some(z) => z.ln(),
            None => {
                let all: Vec<f64> = (0..batch)
                    .flat_map(|b| (0..m).map(move |j| (b, j)).collect::<Vec<_>>())
                    .map(|(b, j)| s(b, p.negatives.slice(ndarray::s![b, j, ..])))
                    .collect();
                1e6f64.ln() + common::log_sum_exp(all.iter().copied()) - ((batch * m) as f64).ln()
            }
        };
        let offset = log_z + (m as f64 / 1e6).ln();
        let mut loss = 0.0;
        for b in 0..batch {
            loss += softplus(offset - s(b, p.positives.row(b)));
            for j in 0..m {
                loss += softplus(s(b, p.negatives.slice(ndarray::s![b, j, ..])) - offset);
            }
        }
        let loss = loss / batch as f64;
        assert!(
            (got.loss - loss).abs() <= 1e-9 * loss.abs().max(1.0),
            "τ {tau}, Z {partition:?}: {} vs {loss}",
            got.loss
        );
        if partition.is_none() {
            assert!((got.partition.ln() - log_z).abs() < 1e-9);
        }
    }
}

#[test]
fn bit_identical_for_one_and_two_threads() {
    for (normalize, partition) in combinations() {
        let options = NceOptions::new(0.1)
            .with_dataset_size(5000)
            .with_partition(partition)
            .with_normalize(normalize);
        let p = random_nce(41, 2 * NCE_ROW_BLOCK + 7, 8, 50, options);
        for run in [NceProblem::run, NceProblem::run_f32] {
            let one = pool(1).install(|| run(&p));
            let two = pool(2).install(|| run(&p));
            assert_eq!(one.loss.to_bits(), two.loss.to_bits(), "{}", context(&p));
            assert_eq!(
                one.partition.to_bits(),
                two.partition.to_bits(),
                "{}",
                context(&p)
            );
            assert_eq!(one.grad, two.grad, "{}", context(&p));
        }
    }
}

#[test]
fn options_defaults_and_builders() {
    let default = NceOptions::default();
    assert_eq!(default.temperature, 0.07);
    assert_eq!(default.dataset_size, 0);
    assert_eq!(default.partition, None);
    assert!(!default.normalize);
    let options = NceOptions::new(0.1)
        .with_dataset_size(7)
        .with_partition(Some(2.0))
        .with_normalize(true)
        .with_temperature(0.2);
    assert_eq!(
        (
            options.temperature,
            options.dataset_size,
            options.partition,
            options.normalize
        ),
        (0.2, 7, Some(2.0), true)
    );
}

// ---- Errors ----

fn rows(batch: usize, dim: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((batch, dim), |(b, d)| {
        ((b * 31 + d * 7 + seed * 3) as f32 * 0.37).sin() + 0.1
    })
}

fn negatives(batch: usize, m: usize, dim: usize) -> Array3<f32> {
    Array3::from_shape_fn((batch, m, dim), |(b, j, d)| {
        ((b * 31 + j * 11 + d * 7) as f32 * 0.53).cos() + 0.1
    })
}

fn valid() -> NceOptions {
    NceOptions::default().with_dataset_size(100)
}

/// `validate_nce` and `nce_loss` give the same error (compared as Debug strings: NaN values
/// do not compare equal).
fn error_of(input: &NceInput<'_, f32>, options: &NceOptions) -> LossError {
    let from_validate = validate_nce(input, options).expect_err("accepted by validate");
    let from_loss = nce_loss(input, options).expect_err("accepted by the loss");
    assert_eq!(format!("{from_validate:?}"), format!("{from_loss:?}"));
    from_loss
}

#[test]
fn invalid_options_name_the_option() {
    let (q, k, n) = (rows(4, 3, 0), rows(4, 3, 1), negatives(4, 5, 3));
    let input = NceInput::new(q.view(), k.view(), n.view());
    for bad in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let err = error_of(&input, &valid().with_temperature(bad));
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
        let err = error_of(&input, &valid().with_partition(Some(bad)));
        assert!(
            matches!(
                err,
                LossError::InvalidParameter {
                    name: "partition",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("partition"), "{err}");
    }
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let err = error_of(&input, &valid().with_proximal(bad));
        assert!(
            matches!(
                err,
                LossError::InvalidParameter {
                    name: "proximal",
                    ..
                }
            ),
            "{err}"
        );
    }
    let err = error_of(&input, &NceOptions::default());
    assert!(
        matches!(err, LossError::InvalidParameter { name: "dataset_size", value, .. } if value == 0.0),
        "{err}"
    );
    assert!(err.to_string().contains("dataset_size"), "{err}");
}

#[test]
fn empty_axes_name_the_input_and_the_axis() {
    let n = negatives(4, 5, 3);
    for (shape, axis) in [((0, 3), "batch"), ((4, 0), "dim")] {
        let q = Array2::<f32>::zeros(shape);
        let input = NceInput::new(q.view(), q.view(), n.view());
        let err = error_of(&input, &valid());
        assert!(
            matches!(err, LossError::EmptyAxis { what: "queries", axis: a, .. } if a == axis),
            "{err}"
        );
    }
    let (q, k) = (rows(4, 3, 0), rows(4, 3, 1));
    let empty = Array3::<f32>::zeros((4, 0, 3));
    let err = error_of(&NceInput::new(q.view(), k.view(), empty.view()), &valid());
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
    let q = rows(4, 3, 0);
    let cases = [
        (rows(3, 3, 1), negatives(4, 2, 3), "positives batch"),
        (rows(4, 2, 1), negatives(4, 2, 3), "positives dim"),
        (rows(4, 3, 1), negatives(5, 2, 3), "negatives batch"),
        (rows(4, 3, 1), negatives(4, 2, 4), "negatives dim"),
    ];
    for (k, n, want) in &cases {
        let err = error_of(&NceInput::new(q.view(), k.view(), n.view()), &valid());
        assert!(
            matches!(&err, LossError::ShapeMismatch { what, .. } if what == want),
            "{want}: {err}"
        );
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[test]
fn non_finite_values_name_the_input_and_the_first_bad_index() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (q, k, n) = (rows(4, 3, 0), rows(4, 3, 1), negatives(4, 3, 3));
        let (mut bad_q, mut bad_k, mut bad_n) = (q.clone(), k.clone(), n.clone());
        bad_q[[2, 1]] = bad;
        bad_q[[3, 0]] = bad;
        bad_k[[1, 0]] = bad;
        bad_n[[1, 2, 0]] = bad;
        let cases = [
            (
                NceInput::new(bad_q.view(), k.view(), n.view()),
                "queries",
                vec![2, 1],
            ),
            (
                NceInput::new(q.view(), bad_k.view(), n.view()),
                "positives",
                vec![1, 0],
            ),
            (
                NceInput::new(q.view(), k.view(), bad_n.view()),
                "negatives",
                vec![1, 2, 0],
            ),
        ];
        for (input, what, index) in &cases {
            let err = error_of(input, &valid());
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
    let normalize = valid().with_normalize(true);
    let (q, k, n) = (rows(4, 3, 0), rows(4, 3, 1), negatives(4, 3, 3));
    let (mut zero_q, mut zero_k, mut zero_n) = (q.clone(), k.clone(), n.clone());
    zero_q.row_mut(2).fill(0.0);
    zero_k.row_mut(1).fill(0.0);
    zero_n.slice_mut(ndarray::s![1, 2, ..]).fill(0.0);
    let cases = [
        (
            NceInput::new(zero_q.view(), k.view(), n.view()),
            "queries",
            vec![2],
        ),
        (
            NceInput::new(q.view(), zero_k.view(), n.view()),
            "positives",
            vec![1],
        ),
        (
            NceInput::new(q.view(), k.view(), zero_n.view()),
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
        assert!(validate_nce(input, &valid()).is_ok());
    }
}

#[test]
fn overflowing_similarities_are_an_error_not_a_nan() {
    // Similarities beyond f64 (1e400 / τ).
    let q = Array2::from_elem((2, 2), 1.0e200f64);
    let n = Array3::from_elem((2, 3, 2), 1.0e200f64);
    for partition in [None, Some(1.0)] {
        let err = nce_loss(
            &NceInput::new(q.view(), q.view(), n.view()),
            &valid().with_partition(partition),
        )
        .unwrap_err();
        assert!(matches!(err, LossError::Overflow { .. }), "{err}");
    }
    // f32 inputs are multiplied in f64: similarities of 1e39 are fine with a given Z, and the
    // estimated Z (e^{1e40}) overflows.
    let q = Array2::from_elem((2, 2), 3.0e19f32);
    let n = Array3::from_elem((2, 3, 2), 3.0e19f32);
    let input = NceInput::new(q.view(), q.view(), n.view());
    let out = nce_loss(&input, &valid().with_partition(Some(1.0))).expect("finite in f64");
    assert!(out.loss.is_finite() && out.grad.iter().all(|g| g.is_finite()));
    assert!(matches!(
        nce_loss(&input, &valid()),
        Err(LossError::Overflow { .. })
    ));
    // Unit rows, but an estimated Z beyond f64 (e^{1/τ} with τ = 0.0005): it could not be
    // returned and reused, so it is an error too.
    let q = rows(2, 3, 0);
    let n = Array3::from_shape_fn((2, 3, 3), |(b, _, d)| q[[b, d]]);
    let options = valid().with_temperature(0.0005).with_normalize(true);
    let err = nce_loss(&NceInput::new(q.view(), q.view(), n.view()), &options).unwrap_err();
    assert!(matches!(err, LossError::Overflow { .. }), "{err}");
    assert!(nce_loss(
        &NceInput::new(q.view(), q.view(), n.view()),
        &options.with_partition(Some(1.0))
    )
    .is_ok());
}

// ---- Properties ----

/// Values in [-1, 1]; with normalize the first column is shifted by 2 so no row is zero.
fn shaped(values: Vec<f64>, shape: &[usize], normalize: bool) -> ndarray::ArrayD<f64> {
    let mut x = ndarray::ArrayD::from_shape_vec(shape.to_vec(), values).expect("length");
    if normalize {
        let last = x.ndim() - 1;
        x.index_axis_mut(Axis(last), 0).mapv_inplace(|v| v + 2.0);
    }
    x
}

impl Arbitrary for NceProblem {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;

    fn arbitrary_with(_: ()) -> Self::Strategy {
        (
            (1usize..6, 1usize..5, 1usize..8),
            0.05f64..1.0,
            any::<bool>(),
            1usize..100_000,
            prop_oneof![Just(None), (0.1f64..1e5).prop_map(Some)],
        )
            .prop_flat_map(|((batch, dim, m), tau, normalize, n, z)| {
                (
                    vec(-1.0f64..1.0, batch * dim),
                    vec(-1.0f64..1.0, batch * dim),
                    vec(-1.0f64..1.0, batch * m * dim),
                    Just(((batch, dim, m), tau, normalize, n, z)),
                )
            })
            .prop_map(
                |(q, k, negatives, ((batch, dim, m), tau, normalize, n, z))| {
                    let two = |v| {
                        shaped(v, &[batch, dim], normalize)
                            .into_dimensionality()
                            .expect("2-d")
                    };
                    NceProblem {
                        queries: two(q),
                        positives: two(k),
                        negatives: shaped(negatives, &[batch, m, dim], normalize)
                            .into_dimensionality()
                            .expect("3-d"),
                        options: NceOptions::new(tau)
                            .with_dataset_size(n)
                            .with_partition(z)
                            .with_normalize(normalize),
                    }
                },
            )
            .boxed()
    }
}

proptest! {
    // Shrunk failures are frozen as named regression tests, not in a persistence file.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(48) })]

    #[test]
    fn stable_form_matches_the_direct_formula(problem: NceProblem) {
        let got = problem.run();
        let want = problem.reference();
        assert_dense_close("stable vs direct", &got, &want, 1e-10, 1e-9);
        prop_assert!((got.partition - want.partition).abs() <= 1e-12 * want.partition);
    }

    #[test]
    fn permuting_the_negatives_changes_nothing(problem: NceProblem, seed: u64) {
        let mut permuted = problem.clone();
        permuted.negatives =
            problem.negatives.select(Axis(1), &permutation(problem.negatives.dim().1, seed));
        let (a, b) = (problem.run(), permuted.run());
        assert_dense_close("permuted negatives", &b, &a, 1e-12, 1e-11);
        prop_assert!((a.partition - b.partition).abs() <= 1e-12 * a.partition);
    }

    #[test]
    fn permuting_the_queries_permutes_the_gradient(problem: NceProblem, seed: u64) {
        let perm = permutation(problem.queries.nrows(), seed);
        let mut permuted = problem.clone();
        permuted.queries = problem.queries.select(Axis(0), &perm);
        permuted.positives = problem.positives.select(Axis(0), &perm);
        permuted.negatives = problem.negatives.select(Axis(0), &perm);
        let want = problem.run();
        let got = permuted.run();
        prop_assert!((got.partition - want.partition).abs() <= 1e-12 * want.partition);
        let regathered = Dense {
            grad: want.grad.select(Axis(0), &perm),
            ..want
        };
        assert_dense_close("permuted queries", &got, &regathered, 1e-12, 1e-11);
    }

    /// Every NCE sum is in f64 whatever the element type: on the same (rounded) values the f32
    /// run gives the f64 loss and Z bit for bit, and the f64 gradient rounded once.
    #[test]
    fn f32_is_f64_rounded_once(problem: NceProblem) {
        let p = problem.rounded();
        let want = p.run();
        let got = p.run_f32();
        prop_assert_eq!(got.loss.to_bits(), want.loss.to_bits());
        prop_assert_eq!(got.partition.to_bits(), want.partition.to_bits());
        prop_assert_eq!(got.grad, want.grad.mapv(|g| f64::from(g as f32)));
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count(problem: NceProblem) {
        let one = pool(1).install(|| problem.run());
        let two = pool(2).install(|| problem.run());
        prop_assert_eq!(one.loss.to_bits(), two.loss.to_bits());
        prop_assert_eq!(one.grad, two.grad);
    }
}
