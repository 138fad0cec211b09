//! SwAV's loss written the PyTorch way (`supcon_loss::swav_loss_tensor`, autograd) against the
//! CPU implementation: loss, both gradients and the codes on random f32 problems, plus the
//! tensor function's graph and errors.
#![cfg(feature = "tch")]

mod common;

use common::swav::{random_swav_problem, SwavProblem};
use ndarray::{Array2, Array3};
use supcon_loss::{swav_generic, LossError, SwavInput, SwavOptions, SwavOutput};
use supcon_loss::{swav_loss_tensor, swav_loss_tensor_with_codes, swav_tch};
use tch::{Device, Kind, Tensor};

/// The problem's inputs in f32.
struct Inputs {
    features: Array3<f32>,
    prototypes: Array2<f32>,
    queue: Option<Array3<f32>>,
}

impl Inputs {
    fn of(problem: &SwavProblem) -> Self {
        Self {
            features: problem.features.mapv(|x| x as f32),
            prototypes: problem.prototypes.mapv(|x| x as f32),
            queue: problem.queue.as_ref().map(|q| q.mapv(|x| x as f32)),
        }
    }

    fn input(&self) -> SwavInput<'_> {
        SwavInput {
            features: self.features.view(),
            prototypes: self.prototypes.view(),
            queue: self.queue.as_ref().map(|q| q.view()),
        }
    }
}

fn max_abs_diff<'a>(a: impl Iterator<Item = &'a f32>, b: impl Iterator<Item = &'a f32>) -> f32 {
    a.zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn max_abs<'a>(a: impl Iterator<Item = &'a f32>) -> f32 {
    a.fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Loss within 1e-4 (relative), gradients and codes within 1e-4 of their largest entry.
fn assert_close(cpu: &SwavOutput, tch: &SwavOutput, context: &str) {
    assert_eq!(cpu.anchors, tch.anchors, "{context}: anchors");
    assert!(
        (cpu.loss - tch.loss).abs() <= 1e-4 * cpu.loss.abs().max(1.0),
        "{context}: loss cpu {} vs tch {}",
        cpu.loss,
        tch.loss
    );
    for (name, a, b) in [
        (
            "grad_features",
            cpu.grad_features.as_slice().unwrap(),
            tch.grad_features.as_slice().unwrap(),
        ),
        (
            "grad_prototypes",
            cpu.grad_prototypes.as_slice().unwrap(),
            tch.grad_prototypes.as_slice().unwrap(),
        ),
        (
            "codes",
            cpu.codes.as_slice().unwrap(),
            tch.codes.as_slice().unwrap(),
        ),
    ] {
        let (worst, scale) = (max_abs_diff(a.iter(), b.iter()), max_abs(a.iter()));
        assert!(
            worst <= 1e-4 * scale + 1e-7,
            "{context}: {name} max diff {worst} (max |cpu| {scale})"
        );
    }
}

#[test]
fn matches_the_cpu_implementation() {
    tch::set_num_threads(1);
    let mut case = 0u64;
    for queue in [0, 6] {
        for normalize in [false, true] {
            for assign in [1, 2] {
                for crops in [2, 4] {
                    case += 1;
                    let options = SwavOptions::default()
                        .with_temperature([0.1, 0.5][case as usize % 2])
                        .with_epsilon([0.05, 0.1][case as usize / 2 % 2])
                        .with_sinkhorn_iterations(1 + case as usize % 3)
                        .with_assignment_crops(assign)
                        .with_normalize(normalize);
                    let problem =
                        random_swav_problem(case, (7, crops, 16), 10, queue, options.clone());
                    let inputs = Inputs::of(&problem);
                    let cpu = swav_generic(&inputs.input(), &options).unwrap();
                    let tch = swav_tch(&inputs.input(), &options, Device::Cpu).unwrap();
                    let context = format!("case {case}: {options:?} queue {queue}");
                    assert_close(&cpu, &tch, &context);
                }
            }
        }
    }
}

#[test]
fn larger_problem_matches() {
    let options = SwavOptions::default();
    let problem = random_swav_problem(99, (64, 4, 64), 300, 32, options.clone());
    let inputs = Inputs::of(&problem);
    let cpu = swav_generic(&inputs.input(), &options).unwrap();
    let tch = swav_tch(&inputs.input(), &options, Device::Cpu).unwrap();
    assert_close(&cpu, &tch, "64x4x64, K 300, queue 32");
}

#[test]
fn tensor_function_keeps_the_autograd_graph() {
    let options = SwavOptions::default().with_normalize(true);
    let problem = random_swav_problem(5, (5, 3, 6), 4, 0, options.clone());
    let inputs = Inputs::of(&problem);
    let flat: Vec<f32> = inputs.features.iter().copied().collect();
    let features = Tensor::from_slice(&flat)
        .reshape([5, 3, 6])
        .set_requires_grad(true);
    let flat: Vec<f32> = inputs.prototypes.iter().copied().collect();
    let prototypes = Tensor::from_slice(&flat)
        .reshape([4, 6])
        .set_requires_grad(true);
    let (loss, codes) =
        swav_loss_tensor_with_codes(&features, &prototypes, None, &options).unwrap();
    assert_eq!(loss.size(), Vec::<i64>::new());
    assert_eq!(codes.size(), vec![2, 5, 4]);
    assert!(!codes.requires_grad());
    loss.backward();
    let cpu = swav_generic(&inputs.input(), &options).unwrap();
    assert!((loss.double_value(&[]) - cpu.loss).abs() < 1e-4 * cpu.loss.abs().max(1.0));
    let grad: Vec<f32> = Vec::try_from(&features.grad().view([-1])).unwrap();
    let scale = max_abs(cpu.grad_features.iter());
    assert!(max_abs_diff(cpu.grad_features.iter(), grad.iter()) <= 1e-4 * scale + 1e-7);
    let grad: Vec<f32> = Vec::try_from(&prototypes.grad().view([-1])).unwrap();
    let scale = max_abs(cpu.grad_prototypes.iter());
    assert!(max_abs_diff(cpu.grad_prototypes.iter(), grad.iter()) <= 1e-4 * scale + 1e-7);

    // Shape and option errors are typed, not panics, and the same as the CPU's.
    let flat2 = Tensor::zeros([4, 6], (Kind::Float, Device::Cpu));
    assert!(matches!(
        swav_loss_tensor(&flat2, &prototypes, None, &options),
        Err(LossError::ShapeMismatch {
            what: "features rank",
            ..
        })
    ));
    let other_dim = Tensor::zeros([4, 5], (Kind::Float, Device::Cpu));
    assert!(matches!(
        swav_loss_tensor(&features, &other_dim, None, &options),
        Err(LossError::ShapeMismatch {
            what: "prototypes dim",
            ..
        })
    ));
    let queue = Tensor::ones([3, 2, 6], (Kind::Float, Device::Cpu));
    assert!(matches!(
        swav_loss_tensor(&features, &prototypes, Some(&queue), &options),
        Err(LossError::ShapeMismatch {
            what: "queue assignment crops",
            ..
        })
    ));
    let zero = Tensor::zeros([2, 2, 6], (Kind::Float, Device::Cpu));
    assert!(matches!(
        swav_loss_tensor(&zero, &prototypes, None, &options),
        Err(LossError::ZeroNorm { index, .. }) if index == vec![0, 0]
    ));
    assert!(matches!(
        swav_loss_tensor(
            &features,
            &prototypes,
            None,
            &options.clone().with_sinkhorn_iterations(0)
        ),
        Err(LossError::InvalidParameter {
            name: "sinkhorn_iterations",
            ..
        })
    ));
}

#[test]
fn rejects_what_the_cpu_rejects() {
    let problem = random_swav_problem(7, (4, 2, 8), 5, 3, SwavOptions::default());
    let mut inputs = Inputs::of(&problem);
    for options in [
        SwavOptions::default().with_temperature(0.0),
        SwavOptions::default().with_epsilon(f64::NAN),
        SwavOptions::default().with_assignment_crops(3),
        SwavOptions::default().with_assignment_crops(1),
    ] {
        let cpu = swav_generic(&inputs.input(), &options).unwrap_err();
        let tch = swav_tch(&inputs.input(), &options, Device::Cpu).unwrap_err();
        // Debug strings: NaN values in the errors do not compare equal.
        assert_eq!(format!("{cpu:?}"), format!("{tch:?}"));
    }
    inputs.features[[1, 1, 3]] = f32::NAN;
    let options = SwavOptions::default();
    let cpu = swav_generic(&inputs.input(), &options).unwrap_err();
    let tch = swav_tch(&inputs.input(), &options, Device::Cpu).unwrap_err();
    assert_eq!(format!("{cpu:?}"), format!("{tch:?}"));
}

/// The tensor function itself (not only the host wrapper) names a non-finite value as the CPU
/// does, prototypes and queue included.
#[test]
fn tensor_function_names_non_finite_values_like_the_cpu() {
    let problem = random_swav_problem(8, (4, 2, 8), 5, 0, SwavOptions::default());
    let mut inputs = Inputs::of(&problem);
    inputs.prototypes[[4, 7]] = f32::NEG_INFINITY;
    let options = SwavOptions::default();
    let cpu = swav_generic(&inputs.input(), &options).unwrap_err();
    let features = Tensor::from_slice(inputs.features.as_slice().unwrap()).reshape([4, 2, 8]);
    let prototypes = Tensor::from_slice(inputs.prototypes.as_slice().unwrap()).reshape([5, 8]);
    let tch = swav_loss_tensor_with_codes(&features, &prototypes, None, &options).unwrap_err();
    assert_eq!(format!("{cpu:?}"), format!("{tch:?}"));
    assert!(
        matches!(
            &tch,
            LossError::NonFinite {
                what: "prototypes",
                ..
            }
        ),
        "{tch:?}"
    );
}
