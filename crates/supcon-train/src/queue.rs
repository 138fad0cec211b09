//! The FIFO key queue of the memory-efficient setting (MoCo's queue, with labels), held on the
//! training device.
//!
//! Keys are projections of the momentum encoder; each step pushes the batch's keys with their
//! labels, overwriting the oldest once the queue is full. The loss sees the filled rows as extra
//! contrast rows (positives when their label matches the anchor's, negatives otherwise). The
//! order of the rows does not change the loss, so the ring buffer is handed over as it lies.
//!
//! The keys stay a tensor on the device they were computed on: a libtorch or CUDA loss reads
//! them in place, and only the CPU loss copies them to the host. The labels are a few bytes per
//! key and stay on the host.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::error::TrainError;

/// A ring buffer of `capacity` keys of dimension `dim` on one device, with their labels.
#[derive(Debug)]
pub struct KeyQueue {
    capacity: usize,
    dim: usize,
    /// `[capacity, dim]` f32.
    keys: Tensor,
    labels: Vec<i64>,
    /// Next slot to write.
    head: usize,
    /// Slots holding a key (grows to `capacity`).
    filled: usize,
}

impl KeyQueue {
    /// An empty queue on `device`.
    pub fn new(capacity: usize, dim: usize, device: Device) -> Self {
        Self {
            capacity,
            dim,
            keys: Tensor::zeros([capacity as i64, dim as i64], (Kind::Float, device)),
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

    /// Pushes `keys` (`[n, dim]`, any device and floating kind, no gradient kept) with their
    /// `n` labels, oldest overwritten first.
    pub fn push(&mut self, keys: &Tensor, labels: &[i64]) -> Result<(), TrainError> {
        if keys.size() != [labels.len() as i64, self.dim as i64] {
            return Err(TrainError::Shape(format!(
                "queue push: keys of shape {:?} for {} labels of dimension {}",
                keys.size(),
                labels.len(),
                self.dim
            )));
        }
        if self.capacity == 0 {
            return Ok(());
        }
        // Only the newest `capacity` rows survive a push larger than the queue.
        let skip = labels.len().saturating_sub(self.capacity);
        let rows = keys
            .detach()
            .narrow(0, skip as i64, (labels.len() - skip) as i64)
            .to_device(self.keys.device())
            .to_kind(Kind::Float);
        // At most two runs of slots: from the head to the end, then from the start.
        let mut written = 0;
        while written < rows.size()[0] as usize {
            let run = (rows.size()[0] as usize - written).min(self.capacity - self.head);
            tch::no_grad(|| {
                self.keys
                    .narrow(0, self.head as i64, run as i64)
                    .copy_(&rows.narrow(0, written as i64, run as i64))
            });
            self.labels[self.head..self.head + run]
                .copy_from_slice(&labels[skip + written..skip + written + run]);
            self.head = (self.head + run) % self.capacity;
            self.filled = (self.filled + run).min(self.capacity);
            written += run;
        }
        Ok(())
    }

    /// The filled rows `[len, dim]` (a view of the queue's storage, on its device) and their
    /// labels. Until the queue is full the filled slots are `0..len`; afterwards all slots.
    pub fn keys(&self) -> (Tensor, &[i64]) {
        (
            self.keys.narrow(0, 0, self.filled as i64),
            &self.labels[..self.filled],
        )
    }

    /// The queue as tensors for a checkpoint: `keys` [filled, dim], `labels` [filled],
    /// `head` [1].
    pub fn to_tensors(&self) -> Vec<(String, Tensor)> {
        let (keys, labels) = self.keys();
        vec![
            ("keys".into(), keys.copy()),
            ("labels".into(), Tensor::from_slice(labels)),
            ("head".into(), Tensor::from_slice(&[self.head as i64])),
        ]
    }

    /// Restores a queue saved by [`KeyQueue::to_tensors`] into an empty queue of the same
    /// capacity and dimension.
    pub fn load_tensors(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<(), TrainError> {
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| TrainError::Shape(format!("checkpoint has no queue.{name}")))
        };
        let keys = get("keys")?;
        let labels: Vec<i64> = Vec::try_from(get("labels")?)?;
        let head: Vec<i64> = Vec::try_from(get("head")?)?;
        let filled = labels.len();
        if filled > self.capacity
            || keys.size() != [filled as i64, self.dim as i64]
            || head.len() != 1
        {
            return Err(TrainError::Shape(format!(
                "checkpoint queue (keys {:?}, {filled} labels) does not fit a queue of {} × {}",
                keys.size(),
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
        tch::no_grad(|| {
            self.keys
                .narrow(0, 0, filled as i64)
                .copy_(&keys.to_device(self.keys.device()).to_kind(Kind::Float))
        });
        self.labels[..filled].copy_from_slice(&labels);
        self.filled = filled;
        self.head = head;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).view([-1, 2])
    }

    fn host(queue: &KeyQueue) -> (Vec<f32>, Vec<i64>) {
        let (keys, labels) = queue.keys();
        (Vec::try_from(keys.flatten(0, -1)).unwrap(), labels.to_vec())
    }

    #[test]
    fn the_queue_is_fifo_and_round_trips() {
        let mut q = KeyQueue::new(3, 2, Device::Cpu);
        assert!(q.is_empty());
        q.push(&rows(&[1.0, 1.0, 2.0, 2.0]), &[1, 2]).unwrap();
        assert_eq!(q.len(), 2);
        q.push(&rows(&[3.0, 3.0, 4.0, 4.0]), &[3, 4]).unwrap();
        // Key 1 was overwritten by key 4 (the push wrapped around the end).
        assert_eq!(
            host(&q),
            (vec![4.0, 4.0, 2.0, 2.0, 3.0, 3.0], vec![4, 2, 3])
        );
        let saved: BTreeMap<_, _> = q.to_tensors().into_iter().collect();
        let mut r = KeyQueue::new(3, 2, Device::Cpu);
        r.load_tensors(&saved).unwrap();
        assert_eq!((host(&r), r.head, r.filled), (host(&q), q.head, q.filled));
        assert!(q.push(&Tensor::from_slice(&[1.0f32]), &[1]).is_err());
        let mut small = KeyQueue::new(2, 2, Device::Cpu);
        assert!(small.load_tensors(&saved).is_err());
    }

    #[test]
    fn a_push_larger_than_the_queue_keeps_the_newest_rows() {
        let mut q = KeyQueue::new(2, 2, Device::Cpu);
        q.push(&rows(&[0.0, 0.0]), &[0]).unwrap();
        q.push(&rows(&[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]), &[1, 2, 3])
            .unwrap();
        // Slot 1 took key 2, slot 0 key 3 (the ring continued from the head).
        assert_eq!(host(&q), (vec![3.0, 3.0, 2.0, 2.0], vec![3, 2]));
    }
}
