//! f32 problems drawn from a seed, for the backends that compute in f32 only: the CUDA kernels
//! on a GPU (`cuda_gpu.rs`) and on the CPU emulator (`cuda_emulated.rs`).

use ndarray::{Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use supcon_loss::{LossOutput, Queue, SupConBackend, SupConInput, SupConOptions};

/// Rows with E‖x‖² = 1, so similarities stay O(1/τ) whether or not the loss normalizes.
pub fn random_rows(rng: &mut ChaCha8Rng, rows: usize, dim: usize) -> Vec<f32> {
    let scale = (3.0 / dim as f32).sqrt();
    (0..rows * dim)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

#[derive(Clone, Debug)]
pub struct Case {
    pub batch: usize,
    pub views: usize,
    pub dim: usize,
    pub queue: usize,
    /// Random labels in `0..classes`; `None`: no labels (SimCLR).
    pub classes: Option<i64>,
    pub options: SupConOptions,
    pub seed: u64,
}

pub struct Data {
    pub features: Array3<f32>,
    pub labels: Option<Vec<i64>>,
    pub keys: Array2<f32>,
    pub key_labels: Vec<i64>,
}

impl Case {
    /// The case's features, labels and queue, drawn from its seed.
    pub fn data(&self) -> Data {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let features = Array3::from_shape_vec(
            (self.batch, self.views, self.dim),
            random_rows(&mut rng, self.batch * self.views, self.dim),
        )
        .unwrap();
        let classes = self.classes.unwrap_or(1);
        let labels = self.classes.map(|_| {
            (0..self.batch)
                .map(|_| rng.random_range(0..classes))
                .collect()
        });
        let keys = Array2::from_shape_vec(
            (self.queue, self.dim),
            random_rows(&mut rng, self.queue, self.dim),
        )
        .unwrap();
        let key_labels = (0..self.queue)
            .map(|_| rng.random_range(0..classes))
            .collect();
        Data {
            features,
            labels,
            keys,
            key_labels,
        }
    }
}

/// `backend`'s loss and gradient on `data`, with its queue when the case has one.
pub fn run_case(backend: &dyn SupConBackend, case: &Case, data: &Data) -> LossOutput {
    let mut input = SupConInput::new(data.features.view(), data.labels.as_deref());
    if case.queue > 0 {
        input = input.with_queue(Queue {
            keys: data.keys.view(),
            labels: &data.key_labels,
        });
    }
    backend
        .compute(&input, &case.options)
        .unwrap_or_else(|e| panic!("{} on {case:?}: {e}", backend.name()))
}
