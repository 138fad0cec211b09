//! One table of bad inputs per loss — InfoNCE, NCE, SwAV, CMC, CPC, InvSpread — run through every entry point of its
//! [`LossOp`] that this build has: each must give the CPU's error, variant and fields alike
//! (compared by their `Debug` text: a NaN field is not equal to itself). Where the loss has no
//! implementation on a backend the op says so with `Unsupported`. Valid inputs give the CPU's
//! loss and gradient on every backend. (SupCon's table, with its CUDA entry points, is
//! `validation_table.rs`.)
#![cfg(feature = "tch")]

use ndarray::{Array2, Array3};
use supcon_loss::{
    Backend, InfoNceInput, InfoNceOp, InfoNceOptions, LossError, LossOp, NceInput, NceOp,
    NceOptions, Negatives, SwavInput, SwavOp, SwavOptions,
};

/// Every backend of this build that can run: the CPU, libtorch's CPU, libtorch on a GPU when
/// one answers, and the CUDA kernels (which these losses lack, with or without a GPU).
fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Tch { cuda: None }];
    if tch::Cuda::is_available() {
        all.push(Backend::Tch { cuda: Some(0) });
    }
    all.push(Backend::cuda(0));
    all
}

fn rows(n: usize, dim: usize, seed: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, dim), |(i, d)| {
        ((i * 7 + d * 3 + seed) as f32 * 0.37).sin() + 0.05
    })
}

fn cube(a: usize, b: usize, dim: usize, seed: usize) -> Array3<f32> {
    Array3::from_shape_fn((a, b, dim), |(i, j, d)| {
        ((i * 11 + j * 5 + d * 3 + seed) as f32 * 0.29).cos() + 0.05
    })
}

/// `op` on `input`: the CPU's result, and every other backend's error (or agreement).
fn check<O: LossOp>(case: &str, op: &O, input: &O::Input<'_>) -> Result<O::Output, LossError>
where
    O::Output: std::fmt::Debug,
{
    let cpu = op.run(Backend::Cpu, input);
    for backend in backends() {
        let other = op.run(backend, input);
        match (&cpu, other) {
            (
                _,
                Err(LossError::Unsupported {
                    loss,
                    backend: name,
                    ..
                }),
            ) => {
                assert_eq!(loss, op.name(), "{case}");
                assert!(
                    matches!(backend, Backend::Cuda { .. }),
                    "{case}: {name} is unsupported"
                );
            }
            (Err(expected), Err(actual)) => assert_eq!(
                format!("{actual:?}"),
                format!("{expected:?}"),
                "{case} on {backend:?}"
            ),
            (Ok(_), Ok(_)) => {}
            (expected, actual) => {
                panic!("{case} on {backend:?}: the CPU gave {expected:?}, it gave {actual:?}")
            }
        }
    }
    cpu
}

fn nan_at(mut x: Array2<f32>, at: (usize, usize)) -> Array2<f32> {
    x[at] = f32::NAN;
    x
}

#[test]
fn infonce_table() {
    let (q, k, queue) = (rows(4, 3, 0), rows(4, 3, 1), rows(5, 3, 2));
    let per_query = cube(4, 2, 3, 3);
    let ok = InfoNceOptions::new(0.2);
    let shared = |q: &Array2<f32>, k: &Array2<f32>, n: &Array2<f32>, o: &InfoNceOptions| {
        check(
            "infonce",
            &InfoNceOp(o.clone()),
            &InfoNceInput::new(q.view(), k.view(), Negatives::Shared(n.view())),
        )
    };
    let bad: Vec<(&str, Result<_, LossError>)> = vec![
        ("τ = 0", shared(&q, &k, &queue, &InfoNceOptions::new(0.0))),
        (
            "τ NaN",
            shared(&q, &k, &queue, &InfoNceOptions::new(f64::NAN)),
        ),
        (
            "empty batch",
            shared(&rows(0, 3, 0), &rows(0, 3, 1), &queue, &ok),
        ),
        ("positives rows", shared(&q, &rows(3, 3, 1), &queue, &ok)),
        ("negatives dim", shared(&q, &k, &rows(5, 2, 2), &ok)),
        ("no negatives", shared(&q, &k, &rows(0, 3, 2), &ok)),
        (
            "NaN query",
            shared(&nan_at(q.clone(), (2, 1)), &k, &queue, &ok),
        ),
        (
            "NaN negative",
            shared(&q, &k, &nan_at(queue.clone(), (4, 0)), &ok),
        ),
        (
            "zero row",
            shared(
                &q,
                &Array2::zeros((4, 3)),
                &queue,
                &ok.clone().with_normalize(true),
            ),
        ),
        (
            "per-query batch",
            check(
                "infonce per query",
                &InfoNceOp(ok.clone()),
                &InfoNceInput::new(
                    q.view(),
                    k.view(),
                    Negatives::PerQuery(cube(3, 2, 3, 3).view()),
                ),
            ),
        ),
    ];
    for (case, result) in bad {
        assert!(result.is_err(), "{case}: accepted");
    }
    let good = shared(&q, &k, &queue, &ok.clone().with_normalize(true)).unwrap();
    let per = check(
        "per query",
        &InfoNceOp(ok.clone()),
        &InfoNceInput::new(q.view(), k.view(), Negatives::PerQuery(per_query.view())),
    )
    .unwrap();
    assert!(good.loss.is_finite() && per.loss.is_finite());
}

#[test]
fn nce_table() {
    let (q, k, n) = (rows(4, 3, 0), rows(4, 3, 1), cube(4, 3, 3, 2));
    let ok = NceOptions::new(0.07).with_dataset_size(50);
    let run = |q: &Array2<f32>, k: &Array2<f32>, n: &Array3<f32>, o: &NceOptions| {
        check(
            "nce",
            &NceOp(o.clone()),
            &NceInput::new(q.view(), k.view(), n.view()),
        )
    };
    let mut nan_negative = n.clone();
    nan_negative[[1, 2, 0]] = f32::INFINITY;
    let bad = vec![
        ("τ = 0", run(&q, &k, &n, &ok.clone().with_temperature(0.0))),
        ("N = 0", run(&q, &k, &n, &ok.clone().with_dataset_size(0))),
        (
            "Z < 0",
            run(&q, &k, &n, &ok.clone().with_partition(Some(-1.0))),
        ),
        ("positives rows", run(&q, &rows(3, 3, 1), &n, &ok)),
        ("negatives batch", run(&q, &k, &cube(3, 3, 3, 2), &ok)),
        ("no negatives", run(&q, &k, &cube(4, 0, 3, 2), &ok)),
        ("NaN positive", run(&q, &nan_at(k.clone(), (3, 2)), &n, &ok)),
        ("infinite negative", run(&q, &k, &nan_negative, &ok)),
        (
            "zero query",
            run(
                &Array2::zeros((4, 3)),
                &k,
                &n,
                &ok.clone().with_normalize(true),
            ),
        ),
    ];
    for (case, result) in bad {
        assert!(result.is_err(), "{case}: accepted");
    }
    let fixed = ok.clone().with_partition(Some(3.0)).with_normalize(true);
    assert!(run(&q, &k, &n, &fixed).unwrap().loss.is_finite());
}

#[test]
fn swav_table() {
    let (features, prototypes) = (cube(4, 3, 5, 0), rows(6, 5, 1));
    let ok = SwavOptions::default();
    let run = |f: &Array3<f32>, p: &Array2<f32>, queue: Option<&Array3<f32>>, o: &SwavOptions| {
        let mut input = SwavInput::new(f.view(), p.view());
        if let Some(queue) = queue {
            input = input.with_queue(queue.view());
        }
        check("swav", &SwavOp(o.clone()), &input)
    };
    let mut nan_prototype = prototypes.clone();
    nan_prototype[[5, 4]] = f32::NAN;
    let mut zero_crop = features.clone();
    zero_crop.slice_mut(ndarray::s![2, 1, ..]).fill(0.0);
    let bad = vec![
        (
            "τ = 0",
            run(
                &features,
                &prototypes,
                None,
                &ok.clone().with_temperature(0.0),
            ),
        ),
        (
            "ε = 0",
            run(&features, &prototypes, None, &ok.clone().with_epsilon(0.0)),
        ),
        (
            "more assignment crops than crops",
            run(
                &features,
                &prototypes,
                None,
                &ok.clone().with_assignment_crops(4),
            ),
        ),
        ("prototype dim", run(&features, &rows(6, 4, 1), None, &ok)),
        (
            "queue dim",
            run(&features, &prototypes, Some(&cube(2, 3, 4, 2)), &ok),
        ),
        ("NaN prototype", run(&features, &nan_prototype, None, &ok)),
        (
            "zero crop",
            run(
                &zero_crop,
                &prototypes,
                None,
                &ok.clone().with_normalize(true),
            ),
        ),
    ];
    for (case, result) in bad {
        assert!(result.is_err(), "{case}: accepted");
    }
    let queue = cube(2, 3, 5, 2);
    assert!(run(&features, &prototypes, Some(&queue), &ok)
        .unwrap()
        .loss
        .is_finite());
}

/// Valid inputs: every backend that has the loss gives the CPU's loss and gradient.
#[test]
fn every_backend_with_the_loss_agrees_with_the_cpu() {
    let (q, k, queue) = (rows(6, 4, 0), rows(6, 4, 1), rows(9, 4, 2));
    let op = InfoNceOp(InfoNceOptions::new(0.2).with_normalize(true));
    let input = InfoNceInput::new(q.view(), k.view(), Negatives::Shared(queue.view()));
    let cpu = op.run(Backend::Cpu, &input).unwrap();
    let tch = op.run(Backend::Tch { cuda: None }, &input).unwrap();
    assert!((cpu.loss - tch.loss).abs() < 1e-5 * cpu.loss.abs());
    let gap = (&cpu.grad - &tch.grad)
        .mapv(f32::abs)
        .fold(0f32, |a, &b| a.max(b));
    assert!(gap < 1e-5, "infonce gradient differs by {gap}");

    let n = cube(6, 5, 4, 3);
    let op = NceOp(
        NceOptions::new(0.1)
            .with_dataset_size(40)
            .with_normalize(true),
    );
    let input = NceInput::new(q.view(), k.view(), n.view());
    let cpu = op.run(Backend::Cpu, &input).unwrap();
    let tch = op.run(Backend::Tch { cuda: None }, &input).unwrap();
    assert!((cpu.loss - tch.loss).abs() < 1e-5 * cpu.loss.abs());
    assert!((cpu.partition - tch.partition).abs() < 1e-5 * cpu.partition);
    let gap = (&cpu.grad - &tch.grad)
        .mapv(f32::abs)
        .fold(0f32, |a, &b| a.max(b));
    assert!(gap < 1e-5, "nce gradient differs by {gap}");

    let features = cube(6, 3, 4, 4);
    let prototypes = rows(5, 4, 5);
    let op = SwavOp(SwavOptions::default());
    let input = SwavInput::new(features.view(), prototypes.view());
    let cpu = op.run(Backend::Cpu, &input).unwrap();
    let tch = op.run(Backend::Tch { cuda: None }, &input).unwrap();
    assert!((cpu.loss - tch.loss).abs() < 1e-4 * cpu.loss.abs());
    let gap = (&cpu.grad_features - &tch.grad_features)
        .mapv(f32::abs)
        .fold(0f32, |a, &b| a.max(b));
    assert!(gap < 1e-4, "swav gradient differs by {gap}");
}

#[test]
fn cmc_table() {
    use supcon_loss::{CmcOp, CmcOptions, Pairing};
    let views = cube(3, 4, 5, 0);
    let run =
        |views: &Array3<f32>, options: CmcOptions| check("cmc", &CmcOp(options), &views.view());
    let mut nan = views.clone();
    nan[[2, 1, 3]] = f32::NAN;
    let mut zero = views.clone();
    zero.slice_mut(ndarray::s![1, 3, ..]).fill(0.0);
    let bad = vec![
        ("τ = 0", run(&views, CmcOptions::new(0.0))),
        ("one view", run(&cube(1, 4, 5, 0), CmcOptions::default())),
        ("one scene", run(&cube(3, 1, 5, 0), CmcOptions::default())),
        ("no dims", run(&cube(3, 4, 0, 0), CmcOptions::default())),
        ("NaN", run(&nan, CmcOptions::default())),
        ("zero row", run(&zero, CmcOptions::default())),
    ];
    for (case, result) in bad {
        assert!(result.is_err(), "{case}: accepted");
    }
    let full = CmcOptions::default().with_pairing(Pairing::FullGraph);
    assert!(run(&views, full).unwrap().loss.is_finite());
}

#[test]
fn invspread_table() {
    use supcon_loss::{InvSpreadOp, InvSpreadOptions};
    let features = cube(4, 2, 5, 0);
    let run = |features: &Array3<f32>, options: InvSpreadOptions| {
        check("invspread", &InvSpreadOp(options), &features.view())
    };
    let mut nan = features.clone();
    nan[[3, 1, 2]] = f32::NAN;
    let mut zero = features.clone();
    zero.slice_mut(ndarray::s![2, 0, ..]).fill(0.0);
    let bad = vec![
        ("τ = 0", run(&features, InvSpreadOptions::new(0.0))),
        (
            "three views",
            run(&cube(4, 3, 5, 0), InvSpreadOptions::default()),
        ),
        (
            "one image",
            run(&cube(1, 2, 5, 0), InvSpreadOptions::default()),
        ),
        (
            "no dims",
            run(&cube(4, 2, 0, 0), InvSpreadOptions::default()),
        ),
        ("NaN", run(&nan, InvSpreadOptions::default())),
        ("zero row", run(&zero, InvSpreadOptions::default())),
    ];
    for (case, result) in bad {
        assert!(result.is_err(), "{case}: accepted");
    }
    assert!(run(&features, InvSpreadOptions::default())
        .unwrap()
        .loss
        .is_finite());
}

#[test]
fn cpc_table() {
    use ndarray::Array4;
    use supcon_loss::{CpcOp, CpcOptions};
    let p = Array4::from_shape_fn((2, 3, 2, 4), |(b, t, k, d)| {
        ((b * 13 + t * 7 + k * 3 + d) as f32 * 0.31).sin() + 0.05
    });
    let z = cube(2, 3, 4, 1);
    let run = |p: &Array4<f32>, z: &Array3<f32>, options: CpcOptions| {
        check("cpc", &CpcOp(options), &(p.view(), z.view()))
    };
    let ok = CpcOptions::default();
    let mut nan = p.clone();
    nan[[1, 0, 1, 2]] = f32::NAN;
    let mut zero = z.clone();
    zero.slice_mut(ndarray::s![0, 1, ..]).fill(0.0);
    let bad = vec![
        ("τ < 0", run(&p, &z, ok.clone().with_temperature(-0.5))),
        ("batch", run(&p, &cube(1, 3, 4, 1), ok.clone())),
        ("positions", run(&p, &cube(2, 2, 4, 1), ok.clone())),
        ("dim", run(&p, &cube(2, 3, 5, 1), ok.clone())),
        (
            "one position",
            run(
                &p.slice(ndarray::s![.., ..1, .., ..]).to_owned(),
                &cube(2, 1, 4, 1),
                ok.clone(),
            ),
        ),
        ("NaN prediction", run(&nan, &z, ok.clone())),
        (
            "zero target",
            run(&p, &zero, ok.clone().with_normalize(true)),
        ),
    ];
    for (case, result) in bad {
        assert!(result.is_err(), "{case}: accepted");
    }
    assert!(run(&p, &z, ok).unwrap().loss.is_finite());
}
