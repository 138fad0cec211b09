//! InfoNCE and NCE on the CPU against their libtorch formulations (MoCo's dense logits and
//! `cross_entropy`, InstDisc's formula) with autograd: loss, ∂L/∂q and Z within 1e-4, for
//! every option, in f32 and f64; and the same errors.
#![cfg(feature = "tch")]

mod common;

use common::infonce_nce::{
    max_abs2, max_abs_diff2, random_infonce, random_nce, Dense, InfoNceProblem, NceProblem,
    OwnedNegatives,
};
use ndarray::{Array, Array2, Dimension};
use supcon_loss::{infonce_loss_tensor, nce_loss_tensor};
use supcon_loss::{InfoNceOptions, LossError, NceOptions, INFONCE_COLUMN_BLOCK, INFONCE_ROW_BLOCK};
use tch::{Kind, Tensor};

fn tensor<D: Dimension>(x: &Array<f64, D>, kind: Kind) -> Tensor {
    let shape: Vec<i64> = x.shape().iter().map(|&s| s as i64).collect();
    let flat: Vec<f64> = x.iter().copied().collect();
    Tensor::from_slice(&flat).reshape(&shape).to_kind(kind)
}

fn gradient(queries: &Tensor, shape: (usize, usize)) -> Array2<f64> {
    let grad: Vec<f64> =
        Vec::try_from(&queries.grad().to_kind(Kind::Double).view([-1])).expect("a gradient");
    Array2::from_shape_vec(shape, grad).expect("shape")
}

/// `infonce_loss_tensor` on the problem, in `kind`, with autograd for ∂L/∂q.
fn infonce_tch(p: &InfoNceProblem, kind: Kind) -> Dense {
    let queries = tensor(&p.queries, kind).set_requires_grad(true);
    let positives = tensor(&p.positives, kind);
    let negatives = match &p.negatives {
        OwnedNegatives::Shared(n) => tensor(n, kind),
        OwnedNegatives::PerQuery(n) => tensor(n, kind),
    };
    let loss = infonce_loss_tensor(&queries, &positives, &negatives, &p.options).expect("valid");
    loss.backward();
    Dense {
        loss: loss.double_value(&[]),
        grad: gradient(&queries, p.queries.dim()),
        partition: f64::NAN,
    }
}

fn nce_tch(p: &NceProblem, kind: Kind) -> Dense {
    let queries = tensor(&p.queries, kind).set_requires_grad(true);
    let out = nce_loss_tensor(
        &queries,
        &tensor(&p.positives, kind),
        &tensor(&p.negatives, kind),
        &p.options,
    )
    .expect("valid");
    out.loss.backward();
    Dense {
        loss: out.loss.double_value(&[]),
        grad: gradient(&queries, p.queries.dim()),
        partition: out.partition,
    }
}

/// Loss within 1e-4 relative, ∂L/∂q within 1e-4 of its largest entry.
fn assert_within_1e4(what: &str, cpu: &Dense, tch: &Dense) {
    assert!(
        (cpu.loss - tch.loss).abs() <= 1e-4 * cpu.loss.abs().max(1.0),
        "{what}: loss cpu {} vs tch {}",
        cpu.loss,
        tch.loss
    );
    let err = max_abs_diff2(&cpu.grad, &tch.grad) / max_abs2(&cpu.grad).max(1e-6);
    assert!(err <= 1e-4, "{what}: gradient error {err:e}");
}

#[test]
fn infonce_matches_mocos_cross_entropy_formulation() {
    tch::set_num_threads(1);
    let mut seed = 0;
    for shared in [true, false] {
        for normalize in [false, true] {
            for tau in [0.07, 0.2] {
                for (batch, dim, m) in [
                    (7, 16, 13),
                    (INFONCE_ROW_BLOCK + 3, 8, INFONCE_COLUMN_BLOCK + 40),
                ] {
                    seed += 1;
                    let options = InfoNceOptions::new(tau).with_normalize(normalize);
                    let p = random_infonce(seed, batch, dim, m, shared, options).rounded();
                    let what = format!("shared {shared} {batch}x{dim}x{m} {:?}", p.options);
                    // f32 everywhere, as in training.
                    assert_within_1e4(&what, &p.run_f32(), &infonce_tch(&p, Kind::Float));
                    // f64 everywhere: far closer.
                    let (cpu, tch) = (p.run(), infonce_tch(&p, Kind::Double));
                    assert!(
                        (cpu.loss - tch.loss).abs() < 1e-10 * cpu.loss.abs().max(1.0),
                        "{what}"
                    );
                    assert!(
                        max_abs_diff2(&cpu.grad, &tch.grad) < 1e-10 * max_abs2(&cpu.grad).max(1.0),
                        "{what}"
                    );
                }
            }
        }
    }
}

/// With Z given, the batch's own estimate of Z still comes back, equal to the CPU's.
#[test]
fn nce_returns_the_batchs_estimate_of_z_when_z_is_given() {
    let options = NceOptions::new(0.1)
        .with_dataset_size(10_000)
        .with_normalize(true);
    let p = random_nce(21, 6, 8, 30, options.clone());
    let estimated = p.run().partition;
    let out = nce_loss_tensor(
        &tensor(&p.queries, Kind::Double),
        &tensor(&p.positives, Kind::Double),
        &tensor(&p.negatives, Kind::Double),
        &options.with_partition(Some(1.0)),
    )
    .expect("valid");
    assert_eq!(out.partition, 1.0);
    let batch_partition = out.batch_partition.double_value(&[]);
    assert!((batch_partition - estimated).abs() < 1e-12 * estimated);
}

#[test]
fn nce_matches_instdiscs_formula() {
    tch::set_num_threads(1);
    let mut seed = 100;
    for normalize in [false, true] {
        for partition in [None, Some(2.0e4)] {
            for (batch, dim, m) in [(6, 16, 50), (40, 8, 257)] {
                seed += 1;
                let options = NceOptions::new(0.07)
                    .with_dataset_size(50_000)
                    .with_partition(partition)
                    .with_normalize(normalize)
                    .with_proximal(if seed % 2 == 0 { 30.0 } else { 0.0 });
                let p = random_nce(seed, batch, dim, m, options).rounded();
                let what = format!("{batch}x{dim}x{m} {:?}", p.options);
                let (cpu, tch) = (p.run_f32(), nce_tch(&p, Kind::Float));
                assert_within_1e4(&what, &cpu, &tch);
                assert!(
                    (cpu.partition - tch.partition).abs() <= 1e-4 * cpu.partition,
                    "{what}: Z"
                );
                let (cpu, tch) = (p.run(), nce_tch(&p, Kind::Double));
                assert!(
                    (cpu.loss - tch.loss).abs() < 1e-10 * cpu.loss.abs().max(1.0),
                    "{what}"
                );
                assert!(
                    max_abs_diff2(&cpu.grad, &tch.grad) < 1e-10 * max_abs2(&cpu.grad).max(1.0),
                    "{what}"
                );
                assert!(
                    (cpu.partition - tch.partition).abs() < 1e-12 * cpu.partition,
                    "{what}: Z"
                );
            }
        }
    }
}

#[test]
fn tensor_functions_reject_what_the_cpu_rejects() {
    let p = random_infonce(1, 4, 3, 5, true, InfoNceOptions::default());
    let q = tensor(&p.queries, Kind::Float);
    let k = tensor(&p.positives, Kind::Float);
    let OwnedNegatives::Shared(n) = &p.negatives else {
        unreachable!("shared negatives requested")
    };
    let n = tensor(n, Kind::Float);
    assert!(matches!(
        infonce_loss_tensor(&q, &k, &n, &InfoNceOptions::new(0.0)),
        Err(LossError::InvalidTemperature {
            name: "temperature",
            ..
        })
    ));
    assert!(matches!(
        infonce_loss_tensor(&q, &k.narrow(0, 0, 3), &n, &InfoNceOptions::default()),
        Err(LossError::ShapeMismatch {
            what: "positives batch",
            ..
        })
    ));
    assert!(matches!(
        infonce_loss_tensor(&q, &k, &n.narrow(1, 0, 2), &InfoNceOptions::default()),
        Err(LossError::ShapeMismatch {
            what: "negatives dim",
            ..
        })
    ));
    let zero = q.zeros_like();
    assert!(matches!(
        infonce_loss_tensor(&zero, &k, &n, &InfoNceOptions::default().with_normalize(true)),
        Err(LossError::ZeroNorm { what: "queries", index }) if index == vec![0]
    ));

    let per_query = n.unsqueeze(0).expand([4, 5, 3], false).contiguous();
    let options = NceOptions::default().with_dataset_size(10);
    assert!(matches!(
        nce_loss_tensor(&q, &k, &per_query, &NceOptions::default()),
        Err(LossError::InvalidParameter {
            name: "dataset_size",
            ..
        })
    ));
    assert!(matches!(
        nce_loss_tensor(
            &q,
            &k,
            &per_query,
            &options.clone().with_partition(Some(-1.0))
        ),
        Err(LossError::InvalidParameter {
            name: "partition",
            ..
        })
    ));
    assert!(matches!(
        nce_loss_tensor(&q, &k, &per_query.narrow(0, 0, 3), &options),
        Err(LossError::ShapeMismatch {
            what: "negatives batch",
            ..
        })
    ));
    assert!(matches!(
        nce_loss_tensor(&q, &k, &per_query.narrow(1, 0, 0), &options),
        Err(LossError::EmptyAxis {
            what: "negatives",
            axis: "m",
            ..
        })
    ));
    let zero_row = per_query.copy();
    let _ = zero_row.get(2).get(1).zero_();
    assert!(matches!(
        nce_loss_tensor(&q, &k, &zero_row, &options.with_normalize(true)),
        Err(LossError::ZeroNorm { what: "negatives", index }) if index == vec![2, 1]
    ));
}

/// A NaN or infinity anywhere gives the CPU functions' `NonFinite`, naming the same input and
/// index, in the same order (queries, positives, negatives).
#[test]
fn tensor_functions_name_non_finite_values_like_the_cpu() {
    let mut p = random_infonce(2, 4, 3, 5, false, InfoNceOptions::default());
    let OwnedNegatives::PerQuery(negatives) = &mut p.negatives else {
        unreachable!("per-query negatives requested")
    };
    negatives[[2, 1, 0]] = f64::INFINITY;
    p.positives[[3, 2]] = f64::NAN;
    let cpu = supcon_loss::infonce_loss(&p.input(), &p.options).unwrap_err();
    let OwnedNegatives::PerQuery(negatives) = &p.negatives else {
        unreachable!()
    };
    let (q, k, n) = (
        tensor(&p.queries, Kind::Double),
        tensor(&p.positives, Kind::Double),
        tensor(negatives, Kind::Double),
    );
    let tch = infonce_loss_tensor(&q, &k, &n, &p.options).unwrap_err();
    assert_eq!(format!("{cpu:?}"), format!("{tch:?}"));
    assert!(
        matches!(&tch, LossError::NonFinite { what: "positives", index, .. } if *index == vec![3, 2])
    );

    let options = NceOptions::default().with_dataset_size(10);
    let k = tensor(&p.queries, Kind::Double);
    let nce = nce_loss_tensor(&q, &k, &n, &options).unwrap_err();
    assert!(
        matches!(&nce, LossError::NonFinite { what: "negatives", index, .. } if *index == vec![2, 1, 0]),
        "{nce:?}"
    );
}
