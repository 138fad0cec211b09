//! The libtorch backend against the CPU reference: loss, gradient and anchor count on random
//! inputs across every option, plus the edge cases and errors.
#![cfg(feature = "tch")]

use ndarray::{Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_loss::{supcon_loss_tensor, TchBackend};
use supcon_loss::{
    ContrastMode, CpuBackend, LossError, LossOutput, Queue, SupConBackend, SupConInput,
    SupConOptions, Variant, UNLABELED,
};
use tch::{Device, Kind, Tensor};

struct Problem {
    features: Array3<f32>,
    labels: Vec<i64>,
    keys: Array2<f32>,
    key_labels: Vec<i64>,
}

/// Random rows; unit-norm unless `raw` (then the loss's `normalize` option does it).
fn problem(
    seed: u64,
    batch: usize,
    views: usize,
    dim: usize,
    keys: usize,
    classes: i64,
    raw: bool,
) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let row = |rng: &mut ChaCha8Rng| {
        let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let scale = if raw { 1.7 } else { 1.0 / norm };
        v.into_iter().map(move |x| x * scale)
    };
    let features: Vec<f32> = (0..batch * views).flat_map(|_| row(&mut rng)).collect();
    let key_rows: Vec<f32> = (0..keys).flat_map(|_| row(&mut rng)).collect();
    Problem {
        features: Array3::from_shape_vec((batch, views, dim), features).unwrap(),
        labels: (0..batch).map(|_| rng.random_range(0..classes)).collect(),
        keys: Array2::from_shape_vec((keys, dim), key_rows).unwrap(),
        key_labels: (0..keys).map(|_| rng.random_range(0..classes)).collect(),
    }
}

fn both(
    input: &SupConInput<'_>,
    options: &SupConOptions,
) -> (Result<LossOutput, LossError>, Result<LossOutput, LossError>) {
    (
        CpuBackend::default().compute(input, options),
        TchBackend::new(Device::Cpu).compute(input, options),
    )
}

fn assert_close(reference: &LossOutput, tch: &LossOutput, context: &str) {
    let loss_tol = 1e-4 * reference.loss.abs().max(1.0);
    assert!(
        (reference.loss - tch.loss).abs() <= loss_tol,
        "{context}: loss cpu {} vs tch {}",
        reference.loss,
        tch.loss
    );
    assert_eq!(reference.anchors, tch.anchors, "{context}: anchors");
    let scale = reference.grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    let worst = reference
        .grad
        .iter()
        .zip(tch.grad.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-4 * scale + 1e-7,
        "{context}: grad max diff {worst} (max |grad| {scale})"
    );
}

#[test]
fn matches_the_cpu_reference_across_options() {
    tch::set_num_threads(1);
    let mut case = 0u64;
    for variant in [Variant::Out, Variant::In] {
        for contrast_mode in [ContrastMode::All, ContrastMode::One] {
            for normalize in [false, true] {
                for with_labels in [true, false] {
                    for with_queue in [false, true] {
                        case += 1;
                        let p =
                            problem(case, 7, 2, 16, if with_queue { 5 } else { 0 }, 3, normalize);
                        let options = SupConOptions::default()
                            .with_temperature(if case.is_multiple_of(2) { 0.1 } else { 0.5 })
                            .with_base_temperature(case.is_multiple_of(3).then_some(0.07))
                            .with_variant(variant)
                            .with_contrast_mode(contrast_mode)
                            .with_normalize(normalize);
                        let mut input = SupConInput::new(
                            p.features.view(),
                            with_labels.then_some(p.labels.as_slice()),
                        );
                        if with_queue {
                            input = input.with_queue(Queue {
                                keys: p.keys.view(),
                                labels: &p.key_labels,
                            });
                        }
                        let (cpu, tch) = both(&input, &options);
                        let context = format!(
                            "case {case}: {options:?} labels={with_labels} queue={with_queue}"
                        );
                        assert_close(&cpu.unwrap(), &tch.unwrap(), &context);
                    }
                }
            }
        }
    }
}

#[test]
fn anchors_without_positives_are_left_out() {
    // One view and few repeated labels: several anchors have no positive.
    let p = problem(100, 9, 1, 8, 0, 12, false);
    let labels = [0, 0, 1, 2, 3, 3, 3, 4, 5];
    for variant in [Variant::Out, Variant::In] {
        let options = SupConOptions::default().with_variant(variant);
        let input = SupConInput::new(p.features.view(), Some(&labels));
        let (cpu, tch) = both(&input, &options);
        let (cpu, tch) = (cpu.unwrap(), tch.unwrap());
        assert_eq!(tch.anchors, 5);
        assert_close(&cpu, &tch, "v=1");
        // Rows without a positive still get gradient as negatives of the others.
        assert!(tch
            .grad
            .index_axis(ndarray::Axis(0), 2)
            .iter()
            .any(|g| *g != 0.0));
    }
    // No positive anywhere: zero loss, zero gradient.
    let distinct: Vec<i64> = (0..9).collect();
    let input = SupConInput::new(p.features.view(), Some(&distinct));
    let out = TchBackend::default()
        .compute(&input, &SupConOptions::default())
        .unwrap();
    assert_eq!((out.loss, out.anchors), (0.0, 0));
    assert!(out.grad.iter().all(|g| *g == 0.0));
}

#[test]
fn semi_supervised_labels_match_the_cpu_and_their_two_ends() {
    tch::set_num_threads(1);
    let p = problem(41, 12, 2, 16, 6, 3, true);
    // Every third sample and every other key unlabeled (a negative label).
    let labels: Vec<i64> = p
        .labels
        .iter()
        .enumerate()
        .map(|(b, &y)| if b % 3 == 1 { UNLABELED } else { y })
        .collect();
    let key_labels: Vec<i64> = p
        .key_labels
        .iter()
        .enumerate()
        .map(|(k, &y)| if k % 2 == 0 { -7 } else { y })
        .collect();
    for variant in [Variant::Out, Variant::In] {
        for contrast_mode in [ContrastMode::All, ContrastMode::One] {
            let options = SupConOptions::default()
                .with_variant(variant)
                .with_contrast_mode(contrast_mode)
                .with_normalize(true);
            let input = SupConInput::new(p.features.view(), Some(&labels)).with_queue(Queue {
                keys: p.keys.view(),
                labels: &key_labels,
            });
            let (cpu, tch) = both(&input, &options);
            assert_close(&cpu.unwrap(), &tch.unwrap(), &format!("{options:?} mixed"));
        }
    }
    // No label at all: SimCLR's loss on libtorch, bit for bit.
    let tch = TchBackend::new(Device::Cpu);
    let options = SupConOptions::simclr(0.5);
    let unlabeled = vec![UNLABELED; 12];
    let semi = tch
        .compute(
            &SupConInput::new(p.features.view(), Some(&unlabeled)),
            &options,
        )
        .unwrap();
    let simclr = tch
        .compute(&SupConInput::new(p.features.view(), None), &options)
        .unwrap();
    assert_eq!((semi.loss, semi.anchors), (simclr.loss, simclr.anchors));
    assert!(semi.grad == simclr.grad, "SimCLR's gradient, bit for bit");
}

#[test]
fn larger_problem_matches() {
    let p = problem(7, 64, 2, 128, 32, 10, false);
    let input = SupConInput::new(p.features.view(), Some(&p.labels)).with_queue(Queue {
        keys: p.keys.view(),
        labels: &p.key_labels,
    });
    let (cpu, tch) = both(&input, &SupConOptions::default());
    assert_close(&cpu.unwrap(), &tch.unwrap(), "64x2x128 + 32 keys");
}

#[test]
fn rejects_what_the_cpu_backend_rejects() {
    let p = problem(3, 4, 2, 8, 0, 2, false);
    let cases: Vec<(SupConOptions, Vec<i64>)> = vec![
        (
            SupConOptions::default().with_temperature(0.0),
            p.labels.clone(),
        ),
        (
            SupConOptions::default().with_base_temperature(Some(f64::NAN)),
            p.labels.clone(),
        ),
        (SupConOptions::default(), vec![0, 1, 2]),
    ];
    for (options, labels) in cases {
        let input = SupConInput::new(p.features.view(), Some(&labels));
        let (cpu, tch) = both(&input, &options);
        // Debug strings: NaN values in the errors do not compare equal.
        assert_eq!(
            format!("{:?}", cpu.unwrap_err()),
            format!("{:?}", tch.unwrap_err())
        );
    }
    let mut bad = p.features.clone();
    bad[[1, 1, 3]] = f32::NAN;
    let input = SupConInput::new(bad.view(), None);
    let (cpu, tch) = both(&input, &SupConOptions::default());
    assert_eq!(
        format!("{:?}", cpu.unwrap_err()),
        format!("{:?}", tch.unwrap_err())
    );
}

#[test]
fn tensor_function_keeps_the_autograd_graph() {
    let p = problem(11, 5, 3, 6, 0, 2, false);
    let flat: Vec<f32> = p.features.iter().copied().collect();
    let features = Tensor::from_slice(&flat)
        .reshape([5, 3, 6])
        .set_requires_grad(true);
    let labels = Tensor::from_slice(&p.labels);
    let options = SupConOptions::default();
    let loss = supcon_loss_tensor(&features, Some(&labels), None, &options).unwrap();
    assert_eq!(loss.size(), Vec::<i64>::new());
    loss.backward();
    let grad: Vec<f32> = Vec::try_from(&features.grad().view([-1])).unwrap();
    let reference = supcon_loss::supcon(p.features.view(), Some(&p.labels), &options).unwrap();
    assert!((loss.double_value(&[]) - reference.loss).abs() < 1e-4 * reference.loss.abs().max(1.0));
    let scale = reference.grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    for (a, b) in reference.grad.iter().zip(&grad) {
        assert!((a - b).abs() <= 1e-4 * scale + 1e-7);
    }
    // Shape errors are typed, not panics.
    let flat2 = Tensor::zeros([4, 6], (Kind::Float, Device::Cpu));
    assert!(matches!(
        supcon_loss_tensor(&flat2, None, None, &options),
        Err(LossError::ShapeMismatch { .. })
    ));
    let short = Tensor::from_slice(&[0i64, 1]);
    assert!(matches!(
        supcon_loss_tensor(&features, Some(&short), None, &options),
        Err(LossError::ShapeMismatch { .. })
    ));
    let zero = Tensor::zeros([2, 2, 3], (Kind::Float, Device::Cpu));
    let normalize = options.clone().with_normalize(true);
    assert!(matches!(
        supcon_loss_tensor(&zero, None, None, &normalize),
        Err(LossError::ZeroNorm { index, .. }) if index == vec![0, 0]
    ));
}
