//! The tiled CPU loss against a dense reference, finite differences, hand-computed SupContrast
//! values, and its own f64 run (the f32 tolerance guarantee).

mod common;

use common::{
    all_combinations, assert_close, combination_problem, finite_difference_gradient, max_abs,
    max_abs_diff, random_problem,
};
use ndarray::{array, Array3};
use supcon_loss::{
    supcon, ContrastMode, CpuBackend, Queue, SupConBackend, SupConInput, SupConOptions,
};

#[test]
fn analytic_gradient_matches_finite_differences_for_every_combination() {
    let backend = CpuBackend::new().with_tile(3);
    for (k, combination) in all_combinations().into_iter().enumerate() {
        let seed = 100 + k as u64;
        let views = 1 + k % 3;
        let problem = combination_problem(seed, combination, 5, views, 3);
        let analytic = problem.run_with(&backend);
        let numeric = finite_difference_gradient(&problem, |p| p.run_with(&backend).loss);
        let scale = max_abs(&analytic.grad).max(1e-8);
        let err = max_abs_diff(&analytic.grad, &numeric) / scale;
        assert!(
            err < 1e-4,
            "{combination:?} views {views}: relative gradient error {err:e} (anchors {})",
            analytic.anchors
        );
        if analytic.anchors == 0 {
            assert_eq!(analytic.loss, 0.0);
            assert!(analytic.grad.iter().all(|&g| g == 0.0));
        }
    }
}

/// The share of one shard of the batch (what a rank computes in data-parallel training) is a
/// loss of its own: its analytic gradient, over every feature row, matches finite differences.
#[test]
fn shard_gradient_matches_finite_differences_for_every_combination() {
    let backend = CpuBackend::new().with_tile(2);
    for (k, combination) in all_combinations().into_iter().enumerate() {
        let views = 1 + k % 3;
        let problem = combination_problem(300 + k as u64, combination, 5, views, 3);
        // A middle shard: anchors before and after it are contrast rows only.
        let shard = 1..3;
        let analytic = problem.run_shard(&backend, shard.clone());
        let numeric =
            finite_difference_gradient(&problem, |p| p.run_shard(&backend, shard.clone()).loss);
        let scale = max_abs(&analytic.grad).max(1e-8);
        let err = max_abs_diff(&analytic.grad, &numeric) / scale;
        assert!(
            err < 1e-4,
            "{combination:?} views {views}: relative gradient error {err:e}"
        );
        assert_eq!(analytic.anchors, problem.run_with(&backend).anchors);
    }
}

#[test]
fn a_shard_outside_the_batch_is_an_error_and_an_empty_one_is_zero() {
    let problem = combination_problem(7, all_combinations()[0], 4, 2, 3);
    let error = CpuBackend::new()
        .compute_shard(&problem.input(), 2..5, &problem.options)
        .unwrap_err();
    assert!(error.to_string().contains("anchor shard"), "{error}");
    let empty = problem.run_shard(&CpuBackend::new(), 3..3);
    assert_eq!(empty.loss, 0.0);
    assert!(empty.grad.iter().all(|&g| g == 0.0));
    assert_eq!(empty.anchors, problem.run().anchors);
}

#[test]
fn tiled_matches_dense_reference_for_every_combination() {
    for (k, combination) in all_combinations().into_iter().enumerate() {
        for (shape_seed, (batch, views, dim)) in
            [(6, 2, 5), (9, 3, 4), (7, 1, 6)].into_iter().enumerate()
        {
            let problem = combination_problem(
                1000 + 10 * k as u64 + shape_seed as u64,
                combination,
                batch,
                views,
                dim,
            );
            let want = problem.reference();
            for tile in [1, 4, 64] {
                let got = problem.run_with(&CpuBackend::new().with_tile(tile));
                assert_close(
                    &format!("{combination:?} {batch}x{views}x{dim} tile {tile}"),
                    &got,
                    &want,
                    1e-10,
                );
            }
        }
    }
}

/// SimCLR, batch 2, views 2, dim 2 on the unit circle: every similarity is a cosine of an
/// angle difference, and the loss is written out term by term.
#[test]
fn simclr_two_by_two_matches_the_closed_form() {
    let tau = 0.5f64;
    let angles = [[0.3f64, 1.1], [2.0, -0.7]]; // [sample][view]
    let features = Array3::from_shape_fn((2, 2, 2), |(b, v, d)| {
        let a = angles[b][v];
        (if d == 0 { a.cos() } else { a.sin() }) as f32
    });
    let s = |(b1, v1): (usize, usize), (b2, v2): (usize, usize)| {
        (angles[b1][v1] - angles[b2][v2]).cos() / tau
    };
    let rows = [(0, 0), (1, 0), (0, 1), (1, 1)];
    let mut total = 0.0;
    for &anchor in &rows {
        let positive = (anchor.0, 1 - anchor.1);
        let denominator: f64 = rows
            .iter()
            .filter(|&&r| r != anchor)
            .map(|&r| s(anchor, r).exp())
            .sum();
        total += denominator.ln() - s(anchor, positive);
    }
    let want = total / 4.0;
    let out = supcon(features.view(), None, &SupConOptions::simclr(tau)).unwrap();
    assert_eq!(out.anchors, 4);
    assert!((out.loss - want).abs() < 1e-6, "{} vs {want}", out.loss);

    // Same class for both samples: three positives per anchor, τ_base = 0.07 scales by τ/0.07.
    let options = SupConOptions::default()
        .with_temperature(tau)
        .with_base_temperature(Some(0.07));
    let mut total = 0.0;
    for &anchor in &rows {
        let others: Vec<f64> = rows
            .iter()
            .filter(|&&r| r != anchor)
            .map(|&r| s(anchor, r))
            .collect();
        let lse = others.iter().map(|x| x.exp()).sum::<f64>().ln();
        total += lse - others.iter().sum::<f64>() / 3.0;
    }
    let want = tau / 0.07 * total / 4.0;
    let out = supcon(features.view(), Some(&[5, 5]), &options).unwrap();
    assert!(
        (out.loss - want).abs() < 1e-5 * want.abs(),
        "{} vs {want}",
        out.loss
    );
}

/// SupContrast's `SupConLoss.forward`, transcribed op for op (mask, logits_max, log_prob,
/// mean_log_prob_pos, −(τ/τ_base)·mean): equal to ours whenever every anchor has a positive.
fn supcontrast(features: &Array3<f64>, labels: &[i64], tau: f64, base: f64, one: bool) -> f64 {
    let (batch, views, dim) = features.dim();
    let contrast_count = views;
    let contrast: Vec<Vec<f64>> = (0..views)
        .flat_map(|v| (0..batch).map(move |b| (b, v)))
        .map(|(b, v)| (0..dim).map(|d| features[[b, v, d]]).collect())
        .collect();
    let anchor_count = if one { 1 } else { contrast_count };
    let anchors = &contrast[..batch * anchor_count];
    let total = contrast.len();
    let mut mean_log_prob_pos = Vec::new();
    for (i, a) in anchors.iter().enumerate() {
        let logits: Vec<f64> = contrast
            .iter()
            .map(|c| a.iter().zip(c).map(|(x, y)| x * y).sum::<f64>() / tau)
            .collect();
        let logits_max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let logits: Vec<f64> = logits.iter().map(|l| l - logits_max).collect();
        let logits_mask: Vec<f64> = (0..total).map(|j| if j == i { 0.0 } else { 1.0 }).collect();
        let mask: Vec<f64> = (0..total)
            .map(|j| f64::from(u8::from(labels[j % batch] == labels[i % batch])) * logits_mask[j])
            .collect();
        let exp_sum: f64 = (0..total).map(|j| logits[j].exp() * logits_mask[j]).sum();
        let log_prob: Vec<f64> = logits.iter().map(|l| l - exp_sum.ln()).collect();
        let pos: f64 = mask.iter().sum();
        mean_log_prob_pos.push((0..total).map(|j| mask[j] * log_prob[j]).sum::<f64>() / pos);
    }
    -(tau / base) * mean_log_prob_pos.iter().sum::<f64>() / mean_log_prob_pos.len() as f64
}

#[test]
fn matches_supcontrast_when_every_anchor_has_a_positive() {
    for (seed, one) in [(1u64, false), (2, true), (3, false)] {
        let problem = random_problem(
            seed,
            8,
            2 + seed as usize % 2,
            5,
            3,
            true,
            0,
            SupConOptions::default()
                .with_contrast_mode(if one {
                    ContrastMode::One
                } else {
                    ContrastMode::All
                })
                .with_base_temperature(Some(0.07)),
        );
        let labels = problem.labels.clone().unwrap();
        let want = supcontrast(&problem.features, &labels, 0.1, 0.07, one);
        let got = problem.run();
        assert!(
            (got.loss - want).abs() < 1e-10 * want.abs(),
            "{} vs {want}",
            got.loss
        );
    }
}

/// The documented f32 guarantee: |ΔL| ≤ 2·(τ/τ_base)·(D+2)·u·R²/τ, gradient within 1e-3 of its
/// largest element (τ ≥ 0.05, unit rows).
#[test]
fn f32_stays_within_the_documented_tolerance_of_f64() {
    let u = 2f64.powi(-24);
    for (k, combination) in all_combinations().into_iter().enumerate() {
        let mut problem = combination_problem(5000 + k as u64, combination, 24, 2, 32);
        problem.options.temperature = [0.05, 0.1, 0.5][k % 3];
        let dim = 32.0;
        // Rows have norm 1 (or 1.7, normalized inside); R is the norm entering the dots.
        let bound =
            2.0 * problem.options.loss_scale() * (dim + 2.0) * u / problem.options.temperature;
        let want = problem.run();
        let got = problem.run_f32(&CpuBackend::default());
        assert_eq!(got.anchors, want.anchors);
        assert!(
            (got.loss - want.loss).abs() <= bound,
            "{combination:?}: |ΔL| = {:e} > {bound:e}",
            (got.loss - want.loss).abs()
        );
        let grad32 = got.grad.mapv(f64::from);
        let err = max_abs_diff(&grad32, &want.grad) / max_abs(&want.grad).max(1e-12);
        assert!(err < 1e-3, "{combination:?}: gradient error {err:e}");
    }
}

#[test]
fn queue_keys_with_a_batch_label_are_positives_and_get_no_gradient() {
    // One sample, one view: alone it has no positive; a queue key of its class gives it one.
    let features = array![[[1.0f32, 0.0]]];
    let keys = array![[0.0f32, 1.0], [1.0, 0.0]];
    let backend = CpuBackend::default();
    let options = SupConOptions::default();
    let input = SupConInput::new(features.view(), Some(&[4])).with_queue(Queue {
        keys: keys.view(),
        labels: &[4, 9],
    });
    let out = backend.compute(&input, &options).unwrap();
    assert_eq!(out.anchors, 1);
    // s = (0 with the positive key, 10 with the negative key): ℓ = log(e^0 + e^10) − 0
    let want = (1.0f64 + 10f64.exp()).ln();
    assert!((out.loss - want).abs() < 1e-6);
    // Without labels the keys are pure negatives: no positive, loss 0.
    let input = SupConInput::new(features.view(), None).with_queue(Queue {
        keys: keys.view(),
        labels: &[0, 0],
    });
    let out = backend.compute(&input, &options).unwrap();
    assert_eq!((out.loss, out.anchors), (0.0, 0));
}

#[test]
fn f32_and_f64_entry_points_agree() {
    let problem = random_problem(77, 10, 2, 8, 4, true, 0, SupConOptions::default());
    let features32 = problem.features.mapv(|x| x as f32);
    let labels = problem.labels.clone().unwrap();
    let a = supcon(features32.view(), Some(&labels), &problem.options).unwrap();
    let b = CpuBackend::default()
        .compute_f64(
            features32.mapv(f64::from).view(),
            Some(&labels),
            &problem.options,
        )
        .unwrap();
    assert_eq!(a.anchors, b.anchors);
    assert!((a.loss - b.loss).abs() < 1e-5);
    assert_eq!(CpuBackend::default().name(), "cpu");
}
