//! InvSpread against an independent float64 implementation of the formula in its doc comment
//! (plain loops, the dense way), central finite differences in f64, libtorch's formulation and
//! the CPU's agreeing on random problems (proptest), and the errors of bad inputs.

use ndarray::Array3;
#[cfg(feature = "tch")]
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_loss::{invspread_loss, InvSpreadOptions, LossError};

fn random(batch: usize, dim: usize, seed: u64) -> Array3<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array3::from_shape_simple_fn((batch, 2, dim), || rng.random_range(-1.0..1.0))
}

/// The loss from the doc comment: rows j = 2b + v, each classified among the other rows.
fn reference(features: &Array3<f64>, options: &InvSpreadOptions) -> f64 {
    let (batch, _, dim) = features.dim();
    let n = 2 * batch;
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            let row: Vec<f64> = (0..dim).map(|d| features[[j / 2, j % 2, d]]).collect();
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
            row.iter()
                .map(|x| if options.normalize { x / norm } else { *x })
                .collect()
        })
        .collect();
    let mut total = 0.0;
    for j in 0..n {
        let s = |k: usize| {
            rows[j]
                .iter()
                .zip(&rows[k])
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / options.temperature
        };
        let denominator: f64 = (0..n).filter(|&k| k != j).map(|k| s(k).exp()).sum();
        let p = |k: usize| s(k).exp() / denominator;
        total -= p(j ^ 1).ln();
        for k in (0..n).filter(|&k| k != j && k != (j ^ 1)) {
            total -= (1.0 - p(k)).ln();
        }
    }
    total / n as f64
}

#[test]
fn the_loss_is_its_formula_and_the_gradient_its_finite_differences() {
    for (seed, normalize, temperature) in [(1, true, 0.1), (2, false, 0.5), (3, true, 0.5)] {
        let options = InvSpreadOptions::new(temperature).with_normalize(normalize);
        let features = random(4, 3, seed);
        let out = invspread_loss(features.view(), &options).unwrap();
        let expected = reference(&features, &options);
        assert!(
            (out.loss - expected).abs() <= 1e-10 * expected.abs().max(1.0),
            "seed {seed}: {} against {expected}",
            out.loss
        );
        let h = 1e-6;
        for (index, &g) in out.grad.indexed_iter() {
            let mut plus = features.clone();
            plus[index] += h;
            let mut minus = features.clone();
            minus[index] -= h;
            let numeric = (reference(&plus, &options) - reference(&minus, &options)) / (2.0 * h);
            assert!(
                (g - numeric).abs() <= 1e-6 * numeric.abs().max(1.0),
                "seed {seed}, {index:?}: analytic {g}, numeric {numeric}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_named_errors() {
    let options = InvSpreadOptions::default();
    let three_views = Array3::<f32>::ones((4, 3, 2));
    let err = invspread_loss(three_views.view(), &options).unwrap_err();
    assert!(
        matches!(
            err,
            LossError::ShapeMismatch {
                what: "features views",
                ..
            }
        ),
        "{err:?}"
    );
    let one_image = Array3::<f32>::ones((1, 2, 2));
    let err = invspread_loss(one_image.view(), &options).unwrap_err();
    assert!(
        matches!(
            err,
            LossError::ShapeMismatch {
                what: "features batch",
                ..
            }
        ),
        "{err:?}"
    );
    let mut nan = Array3::<f32>::ones((3, 2, 2));
    nan[[2, 1, 0]] = f32::NAN;
    let err = invspread_loss(nan.view(), &options).unwrap_err();
    assert!(
        matches!(&err, LossError::NonFinite { index, .. } if *index == vec![2, 1, 0]),
        "{err:?}"
    );
    let mut zero = Array3::<f32>::ones((3, 2, 2));
    zero.slice_mut(ndarray::s![1, 0, ..]).fill(0.0);
    let err = invspread_loss(zero.view(), &options).unwrap_err();
    assert!(matches!(err, LossError::ZeroNorm { .. }), "{err:?}");
    let err = invspread_loss(
        Array3::<f32>::ones((3, 2, 2)).view(),
        &options.clone().with_temperature(0.0),
    )
    .unwrap_err();
    assert!(
        matches!(err, LossError::InvalidTemperature { .. }),
        "{err:?}"
    );
}

#[cfg(feature = "tch")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// libtorch's formulation (autograd through both sides) and the CPU's analytic gradient
    /// agree, loss and gradient, on random problems.
    #[test]
    fn libtorch_and_the_cpu_agree(
        batch in 2usize..7,
        // One normalized dimension is degenerate (the gradient is 0 exactly; libtorch's is f32
        // rounding noise of ~1e-5 there): two and more.
        dim in 2usize..6,
        seed in 0u64..1000,
        normalize in any::<bool>(),
        temperature in 0.1f64..1.0,
    ) {
        let options = InvSpreadOptions::new(temperature).with_normalize(normalize);
        let features = random(batch, dim, seed).mapv(|x| x as f32);
        let cpu = invspread_loss(features.view(), &options).unwrap();
        let tch = supcon_loss::invspread_tch(features.view(), &options, tch::Device::Cpu).unwrap();
        prop_assert!((cpu.loss - tch.loss).abs() <= 1e-4 * cpu.loss.abs().max(1.0));
        let scale = tch.grad.iter().fold(1e-6f32, |m, g| m.max(g.abs()));
        for (a, b) in cpu.grad.iter().zip(tch.grad.iter()) {
            // The absolute term: f32 rounding in libtorch's normalization backward.
            prop_assert!((a - b).abs() <= 1e-3 * scale + 1e-5, "{a} vs {b} (scale {scale})");
        }
    }
}

/// Frozen from the property test: one-dimensional unit rows at τ = 0.1, where a negative's
/// probability is within f64's rounding of 1. The spreading term −log(1 − P) is large but
/// finite (it comes from the log-sum-exp of the other rows), on the CPU and in libtorch.
#[test]
fn a_negative_with_probability_near_one_keeps_the_loss_finite() {
    let mut features = Array3::<f32>::ones((3, 2, 1));
    // Image 0: +1 and its copy −1; images 1 and 2: −1 and +1, −1 and −1.
    for (index, value) in [
        ([0, 1, 0], -1.0),
        ([1, 0, 0], -1.0),
        ([2, 0, 0], -1.0),
        ([2, 1, 0], -1.0),
    ] {
        features[index] = value;
    }
    let options = InvSpreadOptions::new(0.1);
    let cpu = invspread_loss(features.view(), &options).unwrap();
    assert!(cpu.loss.is_finite() && cpu.loss > 10.0, "{}", cpu.loss);
    #[cfg(feature = "tch")]
    {
        let tch = supcon_loss::invspread_tch(features.view(), &options, tch::Device::Cpu).unwrap();
        assert!(
            (cpu.loss - tch.loss).abs() <= 1e-6 * cpu.loss,
            "{} vs {}",
            cpu.loss,
            tch.loss
        );
    }
}
