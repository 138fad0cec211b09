//! The loss across simulated ranks (threads of one process, `supcon_collectives::LocalGroup`)
//! equals the loss of one process over the concatenated batch: SupCon L_out and L_in, SimCLR,
//! one to three views, contrast modes all and one, a queue, anchors without positives, uneven
//! shards and a rank with no sample. The same check runs under `mpirun -np 2` in supcon-train's
//! tests (`supcon check-ranks`).
#![cfg(feature = "collectives")]

mod common;

use common::{all_combinations, combination_problem, Problem};
use ndarray::{s, Array3, Axis};
use supcon_collectives::{shard, Collectives, LocalGroup};
use supcon_loss::distributed::supcon_across_ranks;
use supcon_loss::{CpuBackend, LossError, LossOutput, Queue, SupConInput};

/// The problem in f32, as a training step would hold it.
struct F32Problem {
    features: Array3<f32>,
    labels: Option<Vec<i64>>,
    queue: Option<(ndarray::Array2<f32>, Vec<i64>)>,
    problem: Problem,
}

impl F32Problem {
    fn new(problem: Problem) -> Self {
        Self {
            features: problem.features.mapv(|x| x as f32),
            labels: problem.labels.clone(),
            queue: problem
                .queue
                .as_ref()
                .map(|(k, l)| (k.mapv(|x| x as f32), l.clone())),
            problem,
        }
    }

    fn queue(&self) -> Option<Queue<'_, f32>> {
        self.queue.as_ref().map(|(keys, labels)| Queue {
            keys: keys.view(),
            labels,
        })
    }

    /// One process over the whole batch.
    fn whole(&self) -> LossOutput {
        let input = SupConInput {
            features: self.features.view(),
            labels: self.labels.as_deref(),
            queue: self.queue(),
        };
        CpuBackend::new()
            .compute_generic(&input, &self.problem.options)
            .expect("valid problem")
    }

    /// `parts[r]` samples on rank r (consecutive, in rank order); the gradients of every
    /// rank's rows, concatenated.
    fn across(&self, parts: &[usize]) -> Result<LossOutput, LossError> {
        let starts: Vec<usize> = parts
            .iter()
            .scan(0, |next, &len| {
                let start = *next;
                *next += len;
                Some(start)
            })
            .collect();
        let outputs = LocalGroup::run(parts.len(), |comm| {
            let rank = comm.rank();
            let rows = starts[rank]..starts[rank] + parts[rank];
            let local = self.features.slice(s![rows.clone(), .., ..]);
            let labels = self.labels.as_ref().map(|l| &l[rows.clone()]);
            supcon_across_ranks(
                comm,
                &CpuBackend::new().with_tile(3),
                local,
                labels,
                self.queue(),
                &self.problem.options,
            )
        })?;
        let losses: Vec<f64> = outputs.iter().map(|o| o.loss).collect();
        assert!(
            losses.iter().all(|&l| l == losses[0]),
            "every rank reports the same loss: {losses:?}"
        );
        let grads: Vec<_> = outputs.iter().map(|o| o.grad.view()).collect();
        Ok(LossOutput {
            loss: losses[0],
            grad: ndarray::concatenate(Axis(0), &grads).expect("same views and dim"),
            anchors: outputs[0].anchors,
        })
    }
}

fn assert_equal_within(what: &str, got: &LossOutput, want: &LossOutput, tol: f32) {
    assert_eq!(got.anchors, want.anchors, "{what}: anchors");
    let loss_err = (got.loss - want.loss).abs() / want.loss.abs().max(1e-12);
    assert!(
        loss_err <= f64::from(tol) || (got.loss - want.loss).abs() < 1e-12,
        "{what}: loss {} vs {} (relative {loss_err:e})",
        got.loss,
        want.loss
    );
    let scale = want
        .grad
        .iter()
        .fold(0f32, |m, g| m.max(g.abs()))
        .max(1e-12);
    let grad_err = got
        .grad
        .iter()
        .zip(want.grad.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale;
    assert!(
        grad_err <= tol,
        "{what}: gradient relative error {grad_err:e}"
    );
}

#[test]
fn ranks_compute_exactly_the_one_process_loss_for_every_combination() {
    for (k, combination) in all_combinations().into_iter().enumerate() {
        for views in 1..=3 {
            let problem = F32Problem::new(combination_problem(
                500 + 7 * k as u64 + views as u64,
                combination,
                7,
                views,
                5,
            ));
            let want = problem.whole();
            for parts in [vec![7], vec![4, 3], vec![3, 2, 2], vec![5, 0, 2]] {
                let got = problem.across(&parts).expect("valid problem");
                assert_equal_within(
                    &format!("{combination:?} views {views} parts {parts:?}"),
                    &got,
                    &want,
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn even_shards_of_a_larger_batch_match_too() {
    // Batch 64 over 4 ranks, the way the training pipeline splits it.
    let problem = F32Problem::new(combination_problem(
        9,
        all_combinations()[4], // labels, no queue
        64,
        2,
        16,
    ));
    let parts: Vec<usize> = (0..4).map(|r| shard(64, r, 4).len()).collect();
    assert_equal_within(
        "64 over 4",
        &problem.across(&parts).unwrap(),
        &problem.whole(),
        1e-6,
    );
}

#[test]
fn a_bad_input_on_one_rank_is_the_same_error_on_every_rank() {
    let mut problem = F32Problem::new(combination_problem(3, all_combinations()[4], 6, 2, 4));
    problem.features[[4, 1, 2]] = f32::NAN; // on rank 1 of [3, 3]
    let error = problem.across(&[3, 3]).unwrap_err();
    assert!(matches!(error, LossError::NonFinite { .. }), "{error}");

    // Labels on one rank only: no rank waits for the other's gather.
    let problem = F32Problem::new(combination_problem(4, all_combinations()[4], 6, 2, 4));
    let outcome = LocalGroup::run(2, |comm| {
        let rank = comm.rank();
        let local = problem.features.slice(s![rank * 3..rank * 3 + 3, .., ..]);
        let labels = problem.labels.as_ref().filter(|_| rank == 0);
        supcon_across_ranks(
            comm,
            &CpuBackend::new(),
            local,
            labels.map(|l| &l[..3]),
            None,
            &problem.problem.options,
        )
    });
    let error = outcome.unwrap_err();
    assert!(error.to_string().contains("labels"), "{error}");
}
