//! Semi-supervised SupCon: labels optional per sample (a negative label = unlabeled).
//!
//! The two ends are the two known losses, bit for bit: no label at all is SimCLR (labels
//! `None`), every label present is SupCon. In between, an unlabeled sample is a class of its
//! own: the loss equals SupCon with a fresh class per unlabeled sample, matches the dense
//! reference, and its gradient matches finite differences.

mod common;

use common::{
    all_combinations, assert_close, combination_problem, finite_difference_gradient, max_abs,
    max_abs_diff, Problem,
};
use supcon_loss::{CpuBackend, LossOutput, UNLABELED};

/// `problem` with every `stride`-th sample (from `first`) and queue key unlabeled.
fn with_unlabeled(problem: &Problem, first: usize, stride: usize) -> Problem {
    let mut mixed = problem.clone();
    let unlabel = |labels: &mut Vec<i64>| {
        for label in labels.iter_mut().skip(first).step_by(stride) {
            *label = UNLABELED;
        }
    };
    if let Some(labels) = &mut mixed.labels {
        unlabel(labels);
    }
    if let Some((_, key_labels)) = &mut mixed.queue {
        unlabel(key_labels);
    }
    mixed
}

/// The labeled combinations (labels on; with and without a queue).
fn labeled_combinations() -> impl Iterator<Item = (usize, Problem)> {
    all_combinations()
        .into_iter()
        .enumerate()
        .filter(|(_, (_, _, labels, _, _))| *labels)
        .map(|(k, combination)| {
            let views = 1 + k % 3;
            (
                k,
                combination_problem(700 + k as u64, combination, 6, views, 3),
            )
        })
}

fn assert_bit_identical<T: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &LossOutput<T>,
    want: &LossOutput<T>,
) {
    assert_eq!(got.anchors, want.anchors, "{what}: anchors");
    assert!(
        got.loss == want.loss,
        "{what}: loss {:?} vs {:?}",
        got.loss,
        want.loss
    );
    assert!(got.grad == want.grad, "{what}: gradients differ");
}

#[test]
fn no_labeled_sample_is_simclr_bit_for_bit() {
    for tile in [1, 3, 64] {
        for cache in [0, usize::MAX] {
            let backend = CpuBackend::new().with_tile(tile).with_cache_bytes(cache);
            for (k, problem) in labeled_combinations() {
                // The queue is SimCLR's only with pure negatives: leave it out here (an unlabeled
                // queue key is a negative too, tested below).
                let mut unlabeled = problem.clone();
                unlabeled.queue = None;
                unlabeled.labels = Some(vec![UNLABELED; problem.features.dim().0]);
                let mut simclr = unlabeled.clone();
                simclr.labels = None;
                let what = format!("combination {k}, tile {tile}, cache {cache}");
                assert_bit_identical(
                    &what,
                    &unlabeled.run_with(&backend),
                    &simclr.run_with(&backend),
                );
                assert_bit_identical(
                    &format!("{what} (f32)"),
                    &unlabeled.run_f32(&backend),
                    &simclr.run_f32(&backend),
                );
            }
        }
    }
}

#[test]
fn unlabeled_queue_keys_are_negatives_as_in_simclr() {
    let backend = CpuBackend::new().with_tile(2);
    for (k, problem) in labeled_combinations().filter(|(_, p)| p.queue.is_some()) {
        let mut unlabeled = problem.clone();
        let batch = problem.features.dim().0;
        unlabeled.labels = Some(vec![UNLABELED; batch]);
        if let Some((_, key_labels)) = &mut unlabeled.queue {
            key_labels.fill(UNLABELED);
        }
        let mut simclr = unlabeled.clone();
        simclr.labels = None;
        // The class ids of the queue keys differ (one each, against one shared by all), so the
        // class sums are summed in another order: equal to rounding, not to the bit.
        assert_close(
            &format!("combination {k}"),
            &unlabeled.run_with(&backend),
            &simclr.run_with(&backend),
            1e-12,
        );
    }
}

#[test]
fn every_sample_labeled_is_supcon_bit_for_bit() {
    // The labels go through the same path whether or not the build knows of unlabeled samples:
    // a batch without a negative label is SupCon's input unchanged, whatever its class ids.
    let backend = CpuBackend::new().with_tile(3);
    for (k, problem) in labeled_combinations() {
        let mut shifted = problem.clone();
        // Labels far from 0 and from each other still name the same classes.
        shifted.labels = problem
            .labels
            .as_ref()
            .map(|l| l.iter().map(|&y| y * 1_000_003 + 17).collect());
        if let Some((_, key_labels)) = &mut shifted.queue {
            key_labels.iter_mut().for_each(|y| *y = *y * 1_000_003 + 17);
        }
        assert_bit_identical(
            &format!("combination {k}"),
            &shifted.run_with(&backend),
            &problem.run_with(&backend),
        );
    }
}

#[test]
fn an_unlabeled_sample_is_a_class_of_its_own() {
    let backend = CpuBackend::new().with_tile(2);
    for (k, problem) in labeled_combinations() {
        let mixed = with_unlabeled(&problem, k % 2, 2);
        // The same problem with an unused class id for each unlabeled sample and key.
        let mut fresh = mixed.clone();
        let mut next = 1_000;
        let mut own_class = |labels: &mut Vec<i64>| {
            for label in labels.iter_mut().filter(|l| **l == UNLABELED) {
                *label = next;
                next += 1;
            }
        };
        if let Some(labels) = &mut fresh.labels {
            own_class(labels);
        }
        if let Some((_, key_labels)) = &mut fresh.queue {
            own_class(key_labels);
        }
        let what = format!("combination {k}");
        let got = mixed.run_with(&backend);
        assert_close(&what, &got, &fresh.run_with(&backend), 1e-12);
        assert_close(&format!("{what}, dense"), &got, &mixed.reference(), 1e-9);
    }
}

#[test]
fn mixed_gradient_matches_finite_differences() {
    let backend = CpuBackend::new().with_tile(3);
    for (k, problem) in labeled_combinations() {
        let mixed = with_unlabeled(&problem, 1, 3);
        let analytic = mixed.run_with(&backend);
        let numeric = finite_difference_gradient(&mixed, |p| p.run_with(&backend).loss);
        let scale = max_abs(&analytic.grad).max(1e-8);
        let err = max_abs_diff(&analytic.grad, &numeric) / scale;
        assert!(
            err < 1e-4,
            "combination {k}: relative gradient error {err:e}"
        );
    }
}

#[test]
fn a_labeled_anchor_never_takes_an_unlabeled_sample_as_positive() {
    // Samples 0 and 1 share class 0; sample 2 is unlabeled. With one view, sample 2 has no
    // positive at all (it is left out of the mean) and samples 0 and 1 are each other's only
    // positive: the loss counts two anchors.
    let mut problem = combination_problem(
        5,
        (
            supcon_loss::Variant::Out,
            supcon_loss::ContrastMode::All,
            true,
            false,
            false,
        ),
        3,
        1,
        4,
    );
    problem.labels = Some(vec![0, 0, UNLABELED]);
    assert_eq!(problem.run().anchors, 2);
    // With two views the unlabeled sample's other view is its positive: six anchors.
    let mut two_views = combination_problem(
        5,
        (
            supcon_loss::Variant::Out,
            supcon_loss::ContrastMode::All,
            true,
            false,
            false,
        ),
        3,
        2,
        4,
    );
    two_views.labels = Some(vec![0, 0, UNLABELED]);
    assert_eq!(two_views.run().anchors, 6);
}
