//! One pre-training step gives the same parameters whether the loss runs on supcon-loss's CPU
//! backend or on its libtorch backend.

use supcon_data::{Dataset, ImageShape};
use supcon_train::checkpoint::varstore_tensors;
use supcon_train::config::{LossBackendKind, RunConfig};
use supcon_train::pipeline::pretrain::PretrainModel;
use supcon_train::pipeline::runner::StageModel;
use tch::Device;

fn synthetic(n: usize) -> Dataset {
    // Deterministic 28×28 gray images with a class-dependent pattern.
    let mut pixels = Vec::with_capacity(n * 28 * 28);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 4) as i64;
        labels.push(class);
        for y in 0..28 {
            for x in 0..28 {
                let v = ((x * (class as usize + 1) + y * 3 + i * 7) % 256) as u8;
                pixels.push(v);
            }
        }
    }
    let names = (0..4).map(|c| format!("class{c}")).collect();
    Dataset::new(pixels, ImageShape::new(28, 28, 1), labels, names).unwrap()
}

/// Parameters after `steps` steps, and the losses of those steps.
fn train(
    backend: LossBackendKind,
    queue: usize,
    steps: u32,
) -> (Vec<(String, tch::Tensor)>, Vec<f64>) {
    let mut config = RunConfig::preset("quick-cpu").unwrap();
    config.pretrain.loss_backend = backend;
    config.pretrain.queue = queue;
    let data = synthetic(16);
    let mut model = PretrainModel::new(
        &config,
        Device::Cpu,
        28,
        &[0.5],
        &[0.25],
        data.len(),
        supcon_train::dist::single_process(),
    )
    .unwrap();
    let indices: Vec<usize> = (0..16).collect();
    let mut losses = Vec::new();
    for epoch in 0..steps {
        let batch = model
            .batch_recipe()
            .prepare(&data, &indices, epoch)
            .unwrap();
        let result = model.forward_backward(&batch).unwrap();
        assert!(result.loss.is_finite() && result.loss > 0.0, "{result:?}");
        losses.push(result.loss);
        model.update(0.1).unwrap();
    }
    (varstore_tensors(&model.vs), losses)
}

#[test]
fn cpu_and_tch_loss_backends_train_to_the_same_parameters() {
    let (initial, _) = train(LossBackendKind::Cpu, 0, 0);
    // Without the queue one step; with it two, so that the second step sees queued keys.
    // Both backends sum in f32 in different orders (relative differences ~1e-7 in the loss
    // gradient); BatchNorm's backward and a second step amplify them, hence a looser bound
    // (absolute, relative) for the two-step run.
    for (queue, steps, atol, rtol) in [(0, 1, 1e-5, 1e-4), (64, 2, 1e-4, 1e-3)] {
        let (cpu, cpu_losses) = train(LossBackendKind::Cpu, queue, steps);
        let (tch, tch_losses) = train(LossBackendKind::Tch, queue, steps);
        for (a, b) in cpu_losses.iter().zip(&tch_losses) {
            assert!(
                (a - b).abs() < 1e-5 * a.abs(),
                "queue {queue}: losses {a} vs {b}"
            );
        }
        assert_eq!(cpu.len(), tch.len());
        let mut moved = false;
        for (((name, a), (name_b, b)), (_, init)) in cpu.iter().zip(&tch).zip(&initial) {
            assert_eq!(name, name_b);
            // Elementwise |a − b| ≤ atol + rtol·|a|.
            let excess = ((a - b).abs() - a.abs() * rtol - atol)
                .max()
                .double_value(&[]);
            assert!(
                excess <= 0.0,
                "queue {queue}: {name} differs by up to {excess} beyond the tolerance"
            );
            moved |= (a - init).abs().max().double_value(&[]) > 1e-4;
        }
        assert!(moved, "the step did not change the parameters");
    }
}
