//! Ranks as threads of one process, exchanging through shared memory: simulated ranks for
//! tests (the cross-rank loss, the gradient reduction) and for tools that want R ranks without
//! a launcher.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::single::copy_into;
use crate::{
    check_all_gather, check_len, check_root, check_varcount, Buffer, BufferMut, CollectiveError,
    Collectives,
};

/// An owned copy of one rank's buffer.
#[derive(Clone, Debug)]
enum Owned {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl Owned {
    fn of(buffer: Buffer<'_>) -> Self {
        match buffer {
            Buffer::F32(v) => Owned::F32(v.to_vec()),
            Buffer::F64(v) => Owned::F64(v.to_vec()),
            Buffer::I64(v) => Owned::I64(v.to_vec()),
            Buffer::U8(v) => Owned::U8(v.to_vec()),
        }
    }

    fn view(&self) -> Buffer<'_> {
        match self {
            Owned::F32(v) => Buffer::F32(v),
            Owned::F64(v) => Buffer::F64(v),
            Owned::I64(v) => Buffer::I64(v),
            Owned::U8(v) => Buffer::U8(v),
        }
    }
}

/// What one rank brings to a collective.
#[derive(Clone, Debug)]
struct Contribution {
    /// The collective and its element type, e.g. `all_reduce_sum(f32)`: ranks must agree.
    signature: String,
    data: Owned,
}

#[derive(Default)]
struct State {
    /// This collective's contributions so far, by rank.
    slots: Vec<Option<Contribution>>,
    arrived: usize,
    /// Collectives completed; a waiting rank knows its own is done when this moves on.
    generation: u64,
    /// Every rank's contribution to the last completed collective.
    result: Option<Arc<Vec<Contribution>>>,
    /// The first rank that left the group (error, panic, end) while others may still wait.
    left: Option<usize>,
}

struct Shared {
    world: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock left the state consistent (every
        // update is a few assignments): keep going, its departure is recorded on drop.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One rank of a group of threads (see the module docs). Collectives are exact and
/// deterministic: sums add the ranks' values in rank order.
///
/// A rank that returns, fails or panics leaves the group; a collective that another rank is
/// waiting in then fails with [`CollectiveError::PeerLeft`] instead of hanging.
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// The `world` ranks of a new group, rank order; move each into its own thread.
    pub fn new(world: usize) -> Vec<LocalGroup> {
        let world = world.max(1);
        let shared = Arc::new(Shared {
            world,
            state: Mutex::new(State {
                slots: vec![None; world],
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        (0..world)
            .map(|rank| LocalGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Runs `body` on `world` ranks, one thread each, and returns their results in rank
    /// order. When ranks fail, the error returned is that of the rank that left first (the
    /// cause; the others typically fail with [`CollectiveError::PeerLeft`]). A panic in a rank
    /// is resumed here once every rank has stopped.
    pub fn run<T, E, F>(world: usize, body: F) -> Result<Vec<T>, E>
    where
        T: Send,
        E: Send,
        F: Fn(&LocalGroup) -> Result<T, E> + Sync,
    {
        let ranks = LocalGroup::new(world);
        let shared = ranks[0].shared.clone();
        let outcomes: Vec<std::thread::Result<Result<T, E>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|rank| {
                    let body = &body;
                    scope.spawn(move || body(&rank))
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let first_left = shared.lock().left;
        let mut results = Vec::with_capacity(outcomes.len());
        let mut errors: Vec<(usize, E)> = Vec::new();
        for (rank, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(Ok(value)) => results.push(value),
                Ok(Err(error)) => errors.push((rank, error)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if errors.is_empty() {
            return Ok(results);
        }
        let cause = errors
            .iter()
            .position(|(rank, _)| Some(*rank) == first_left)
            .unwrap_or(0);
        Err(errors.swap_remove(cause).1)
    }

    /// Deposits this rank's contribution and waits for everyone's.
    fn exchange(
        &self,
        operation: &'static str,
        data: Buffer<'_>,
    ) -> Result<Arc<Vec<Contribution>>, CollectiveError> {
        let signature = format!("{operation}({})", data.kind());
        let contribution = Contribution {
            signature: signature.clone(),
            data: Owned::of(data),
        };
        let shared = &self.shared;
        let mut state = shared.lock();
        if let Some(rank) = state.left {
            return Err(CollectiveError::PeerLeft {
                operation,
                rank,
                this_rank: self.rank,
            });
        }
        let generation = state.generation;
        state.slots[self.rank] = Some(contribution);
        state.arrived += 1;
        if state.arrived == shared.world {
            let all: Vec<Contribution> = state.slots.iter_mut().filter_map(Option::take).collect();
            state.result = Some(Arc::new(all));
            state.arrived = 0;
            state.generation += 1;
            shared.changed.notify_all();
        } else {
            while state.generation == generation {
                if let Some(rank) = state.left {
                    return Err(CollectiveError::PeerLeft {
                        operation,
                        rank,
                        this_rank: self.rank,
                    });
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        let all = state
            .result
            .clone()
            .expect("a completed collective leaves its result");
        drop(state);
        for (rank, theirs) in all.iter().enumerate() {
            if theirs.signature != signature {
                return Err(CollectiveError::Mismatch {
                    ours: signature,
                    theirs: theirs.signature.clone(),
                    rank,
                    this_rank: self.rank,
                });
            }
        }
        Ok(all)
    }
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if state.left.is_none() {
            state.left = Some(self.rank);
        }
        self.shared.changed.notify_all();
    }
}

impl Collectives for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn transport(&self) -> &'static str {
        "local"
    }

    fn all_reduce_sum(&self, mut values: BufferMut<'_>) -> Result<(), CollectiveError> {
        let all = self.exchange("all_reduce_sum", values.as_ref())?;
        for theirs in all.iter() {
            check_len(
                "all_reduce_sum",
                "buffer (equal on every rank)",
                theirs.data.view().len(),
                values.len(),
            )?;
        }
        match &mut values {
            BufferMut::F32(out) => sum_into(out, all.iter().map(|c| &c.data), |o| match o {
                Owned::F32(v) => v,
                _ => unreachable!("signatures are checked"),
            }),
            BufferMut::F64(out) => sum_into(out, all.iter().map(|c| &c.data), |o| match o {
                Owned::F64(v) => v,
                _ => unreachable!("signatures are checked"),
            }),
            BufferMut::I64(out) => sum_into(out, all.iter().map(|c| &c.data), |o| match o {
                Owned::I64(v) => v,
                _ => unreachable!("signatures are checked"),
            }),
            BufferMut::U8(out) => sum_into(out, all.iter().map(|c| &c.data), |o| match o {
                Owned::U8(v) => v,
                _ => unreachable!("signatures are checked"),
            }),
        }
        Ok(())
    }

    fn all_gather(
        &self,
        local: Buffer<'_>,
        mut gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        check_all_gather(self.world_size(), &local, &gathered)?;
        let all = self.exchange("all_gather", local)?;
        let mut offset = 0;
        for theirs in all.iter() {
            let part = theirs.data.view();
            check_len(
                "all_gather",
                "buffer (equal on every rank)",
                part.len(),
                local.len(),
            )?;
            copy_into(part, &mut gathered, offset);
            offset += part.len();
        }
        Ok(())
    }

    fn all_gather_varcount(
        &self,
        local: Buffer<'_>,
        counts: &[usize],
        mut gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        check_varcount(self.world_size(), self.rank, &local, counts, &gathered)?;
        let all = self.exchange("all_gather_varcount", local)?;
        let mut offset = 0;
        for (theirs, &count) in all.iter().zip(counts) {
            let part = theirs.data.view();
            check_len(
                "all_gather_varcount",
                "a rank's buffer (its count)",
                part.len(),
                count,
            )?;
            copy_into(part, &mut gathered, offset);
            offset += count;
        }
        Ok(())
    }

    fn broadcast(&self, mut values: BufferMut<'_>, root: usize) -> Result<(), CollectiveError> {
        check_root(root, self.world_size())?;
        let all = self.exchange("broadcast", values.as_ref())?;
        let source = all[root].data.view();
        check_len(
            "broadcast",
            "buffer (the root's length)",
            values.len(),
            source.len(),
        )?;
        copy_into(source, &mut values, 0);
        Ok(())
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.exchange("barrier", Buffer::U8(&[])).map(|_| ())
    }

    /// A thread cannot end the process for its peers: the rank leaves the group (their
    /// collectives fail with [`CollectiveError::PeerLeft`]) and its thread panics.
    fn abort(&self, code: i32) -> ! {
        {
            let mut state = self.shared.lock();
            if state.left.is_none() {
                state.left = Some(self.rank);
            }
            self.shared.changed.notify_all();
        }
        panic!("rank {} aborted the group (code {code})", self.rank)
    }
}

/// `out[i] = Σ_r values_r[i]`, adding the ranks in rank order.
fn sum_into<'a, T, I>(out: &mut [T], all: I, values: impl Fn(&'a Owned) -> &'a Vec<T>)
where
    T: Copy + Summand + 'a,
    I: Iterator<Item = &'a Owned>,
{
    let mut first = true;
    for theirs in all {
        let theirs = values(theirs);
        if first {
            out.copy_from_slice(theirs);
            first = false;
        } else {
            for (o, &v) in out.iter_mut().zip(theirs) {
                *o = o.plus(v);
            }
        }
    }
}

/// Addition as MPI_SUM does it: IEEE for floats, wrapping for integers.
trait Summand {
    fn plus(self, other: Self) -> Self;
}

impl Summand for f32 {
    fn plus(self, other: Self) -> Self {
        self + other
    }
}

impl Summand for f64 {
    fn plus(self, other: Self) -> Self {
        self + other
    }
}

impl Summand for i64 {
    fn plus(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}

impl Summand for u8 {
    fn plus(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}
