//! The FIFO key queue of the memory-efficient setting (MoCo's queue, with labels).
//!
//! Keys are projections of the momentum encoder; each step pushes the batch's keys with their
//! labels, overwriting the oldest once the queue is full. The loss sees the filled rows as extra
//! contrast rows (positives when their label matches the anchor's, negatives otherwise). The
//! order of the rows does not change the loss, so the ring buffer is handed over as it lies.

use ndarray::ArrayView2;
use tch::Tensor;

use crate::error::TrainError;

/// A ring buffer of `capacity` keys of dimension `dim`, with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyQueue {
    capacity: usize,
    dim: usize,
    keys: Vec<f32>,
    labels: Vec<i64>,
    /// Next slot to write.
    head: usize,
    /// Slots holding a key (grows to `capacity`).
    filled: usize,
}

impl KeyQueue {
    /// An empty queue.
    pub fn new(capacity: usize, dim: usize) -> Self {
        Self {
            capacity,
            dim,
            keys: vec![0.0; capacity * dim],
            labels: vec![0; capacity],
            head: 0,
            filled: 0,
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Keys it holds when full.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values per key.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether no key has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Pushes `keys` (rows of `dim` values) with their labels, oldest overwritten first.
    pub fn push(&mut self, keys: &[f32], labels: &[i64]) -> Result<(), TrainError> {
        if keys.len() != labels.len() * self.dim {
            return Err(TrainError::Shape(format!(
                "queue push: {} key values for {} labels of dimension {}",
                keys.len(),
                labels.len(),
                self.dim
            )));
        }
        if self.capacity == 0 {
            return Ok(());
        }
        // Only the newest `capacity` rows survive a push larger than the queue.
        let skip = labels.len().saturating_sub(self.capacity);
        for (row, &label) in labels.iter().enumerate().skip(skip) {
            let slot = self.head;
            self.keys[slot * self.dim..(slot + 1) * self.dim]
                .copy_from_slice(&keys[row * self.dim..(row + 1) * self.dim]);
            self.labels[slot] = label;
            self.head = (self.head + 1) % self.capacity;
            self.filled = (self.filled + 1).min(self.capacity);
        }
        Ok(())
    }

    /// The filled rows and their labels. Until the queue is full the filled slots are
    /// `0..filled`; afterwards all slots.
    pub fn view(&self) -> (ArrayView2<'_, f32>, &[i64]) {
        let keys = ArrayView2::from_shape(
            (self.filled, self.dim),
            &self.keys[..self.filled * self.dim],
        )
        .expect("queue storage holds filled·dim values");
        (keys, &self.labels[..self.filled])
    }

    /// The queue as tensors for a checkpoint: `keys` [filled, dim], `labels` [filled],
    /// `head` [1].
    pub fn to_tensors(&self) -> Vec<(String, Tensor)> {
        let (keys, labels) = self.view();
        let keys = Tensor::from_slice(keys.as_slice().expect("contiguous"))
            .reshape([self.filled as i64, self.dim as i64]);
        vec![
            ("keys".into(), keys),
            ("labels".into(), Tensor::from_slice(labels)),
            ("head".into(), Tensor::from_slice(&[self.head as i64])),
        ]
    }

    /// Restores a queue saved by [`KeyQueue::to_tensors`] into an empty queue of the same
    /// capacity and dimension.
    pub fn load_tensors(
        &mut self,
        tensors: &std::collections::BTreeMap<String, Tensor>,
    ) -> Result<(), TrainError> {
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| TrainError::Shape(format!("checkpoint has no queue.{name}")))
        };
        let keys: Vec<f32> = Vec::try_from(get("keys")?.flatten(0, -1))?;
        let labels: Vec<i64> = Vec::try_from(get("labels")?)?;
        let head: Vec<i64> = Vec::try_from(get("head")?)?;
        let filled = labels.len();
        if filled > self.capacity || keys.len() != filled * self.dim || head.len() != 1 {
            return Err(TrainError::Shape(format!(
                "checkpoint queue ({filled} keys of {} values) does not fit a queue of {} × {}",
                keys.len(),
                self.capacity,
                self.dim
            )));
        }
        let head = usize::try_from(head[0])
            .ok()
            .filter(|&h| h < self.capacity.max(1));
        let Some(head) = head else {
            return Err(TrainError::Shape(
                "checkpoint queue head out of range".into(),
            ));
        };
        self.keys[..keys.len()].copy_from_slice(&keys);
        self.labels[..filled].copy_from_slice(&labels);
        self.filled = filled;
        self.head = head;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_fifo_and_round_trips() {
        let mut q = KeyQueue::new(3, 2);
        assert!(q.is_empty());
        q.push(&[1.0, 1.0, 2.0, 2.0], &[1, 2]).unwrap();
        assert_eq!(q.len(), 2);
        q.push(&[3.0, 3.0, 4.0, 4.0], &[3, 4]).unwrap();
        let (keys, labels) = q.view();
        assert_eq!(keys.shape(), &[3, 2]);
        // Key 1 was overwritten by key 4.
        assert_eq!(labels, &[4, 2, 3]);
        assert_eq!(keys[[0, 0]], 4.0);
        let saved: std::collections::BTreeMap<_, _> = q.to_tensors().into_iter().collect();
        let mut r = KeyQueue::new(3, 2);
        r.load_tensors(&saved).unwrap();
        assert_eq!(r, q);
        assert!(q.push(&[1.0], &[1]).is_err());
        let mut small = KeyQueue::new(2, 2);
        assert!(small.load_tensors(&saved).is_err());
    }
}
