//! Blocks kept between calls. The similarity cache and the scratch blocks of one call are what
//! the next call of the same size needs (a training loop calls the loss at one size every
//! step), and allocating them afresh — 16 MiB of fresh, zeroed pages at 2 048 rows — took a
//! tenth of a call. Kept blocks are shared by every [`super::CpuBackend`] of the process, up
//! to [`KEPT_BYTES`]; [`release_kept_blocks`] frees them.

use std::any::Any;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ndarray::Array2;

use crate::Element;

/// The most bytes kept between calls: the default similarity cache and 32 MiB of scratch
/// blocks (64 tasks' worth at the default tile).
pub const KEPT_BYTES: usize = super::DEFAULT_CACHE_BYTES + (32 << 20);

/// Kept buffers (`Vec<T>` of either element type) and their bytes.
struct Kept {
    free: Vec<Box<dyn Any + Send>>,
    bytes: usize,
}

impl Kept {
    const EMPTY: Self = Self {
        free: Vec::new(),
        bytes: 0,
    };

    /// The smallest kept buffer of `T` with room for `len` elements.
    fn take<T: Element>(&mut self, len: usize) -> Option<Vec<T>> {
        let capacity = |b: &Box<dyn Any + Send>| b.downcast_ref::<Vec<T>>().map(Vec::capacity);
        let (room, i) = (0..self.free.len())
            .filter_map(|i| {
                capacity(&self.free[i])
                    .filter(|&c| c >= len)
                    .map(|c| (c, i))
            })
            .min()?;
        self.bytes -= room * std::mem::size_of::<T>();
        self.free
            .swap_remove(i)
            .downcast::<Vec<T>>()
            .ok()
            .map(|b| *b)
    }

    /// Keeps `buffer` unless that would pass [`KEPT_BYTES`].
    fn keep<T: Element>(&mut self, buffer: Vec<T>) {
        let bytes = buffer.capacity() * std::mem::size_of::<T>();
        if bytes > 0 && self.bytes + bytes <= KEPT_BYTES {
            self.bytes += bytes;
            self.free.push(Box::new(buffer));
        }
    }
}

static KEPT: Mutex<Kept> = Mutex::new(Kept::EMPTY);

fn kept() -> MutexGuard<'static, Kept> {
    // The list stays consistent whatever a panicking holder did (push and remove are whole).
    KEPT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A `rows × cols` block for a caller that writes every element before it reads it: the
/// smallest kept buffer of `T` with room (its old values stay), else a new one.
pub(super) fn block<T: Element>(rows: usize, cols: usize) -> Array2<T> {
    let len = rows * cols;
    if len == 0 {
        return Array2::zeros((rows, cols));
    }
    let mut buffer = kept().take::<T>(len).unwrap_or_default();
    buffer.resize(len, T::zero());
    Array2::from_shape_vec((rows, cols), buffer).expect("a buffer of rows·cols elements")
}

/// Keeps `block` for a later call, unless [`KEPT_BYTES`] are kept already.
pub(super) fn give_back<T: Element>(block: Array2<T>) {
    kept().keep(block.into_raw_vec_and_offset().0);
}

/// Frees the blocks the CPU backend keeps between calls (at most [`KEPT_BYTES`]); the next
/// call allocates afresh.
pub fn release_kept_blocks() {
    *kept() = Kept::EMPTY;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_buffer_with_room_is_taken_and_the_budget_holds() {
        let mut kept = Kept::EMPTY;
        let (small, large) = (vec![0f32; 12], vec![0f32; 100]);
        let small_at = small.as_ptr();
        kept.keep(large);
        kept.keep(small);
        assert_eq!(kept.bytes, 112 * 4);
        let taken = kept.take::<f32>(10).unwrap();
        assert_eq!(taken.as_ptr(), small_at);
        assert_eq!(kept.bytes, 100 * 4);
        // Another type, or too little room, takes nothing.
        assert!(kept.take::<f64>(10).is_none());
        assert!(kept.take::<f32>(101).is_none());
        // Beyond the budget, nothing more is kept.
        kept.keep(vec![0f64; KEPT_BYTES / 8]);
        assert_eq!(kept.bytes, 100 * 4);
    }
}
