//! A deadline on every collective: [`Watchdog`] wraps a transport and, from a thread of its
//! own, reports a collective that has waited longer than the timeout.
//!
//! MPI and NCCL wait for the other ranks without end: one rank stuck reading a file (a FIFO, a
//! hung network mount) or dead without the launcher noticing leaves every other rank waiting
//! forever in its next collective. Under the watchdog each waiting rank calls `on_timeout` with
//! a [`Stalled`] report (the binary logs it and ends the process, and the launcher then ends
//! the job); the rank that does *not* report is the one that never arrived.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::{Buffer, BufferMut, CollectiveError, Collectives};

thread_local! {
    /// Set inside [`unwatched`]: this thread's collectives wait without a deadline.
    static UNWATCHED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with this thread's collectives exempt from every [`Watchdog`]'s deadline: for a
/// wait that is long by design, such as ranks waiting in a barrier while rank 0 alone runs the
/// final evaluation.
pub fn unwatched<T>(work: impl FnOnce() -> T) -> T {
    let before = UNWATCHED.with(|flag| flag.replace(true));
    let result = work();
    UNWATCHED.with(|flag| flag.set(before));
    result
}

/// A collective that waited longer than the timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stalled {
    /// The waiting rank.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    /// The collective it waits in (`all_reduce_sum`, `barrier`, ...).
    pub operation: &'static str,
    /// How long it had waited.
    pub waited: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rank {} of {} has waited {:.0} s in {} for the other ranks: a rank that did not \
             report this is stuck (in I/O?) or dead",
            self.rank,
            self.world_size,
            self.waited.as_secs_f64(),
            self.operation
        )
    }
}

/// What the watching thread shares with the rank: the collective in progress, if any.
#[derive(Default)]
struct InProgress {
    current: Option<(&'static str, Instant)>,
    /// Set when the watchdog is dropped: the thread ends.
    closed: bool,
}

/// A transport whose collectives run under a deadline (see the module docs).
pub struct Watchdog<C: Collectives> {
    inner: C,
    shared: Arc<(Mutex<InProgress>, Condvar)>,
}

impl<C: Collectives> Watchdog<C> {
    /// Wraps `inner`; `on_timeout` runs on the watching thread once per collective that waits
    /// longer than `timeout` (the collective itself goes on waiting).
    pub fn new(inner: C, timeout: Duration, on_timeout: impl Fn(Stalled) + Send + 'static) -> Self {
        let shared = Arc::new((Mutex::new(InProgress::default()), Condvar::new()));
        let (rank, world_size) = (inner.rank(), inner.world_size());
        let watched = Arc::clone(&shared);
        thread::Builder::new()
            .name("collectives-watchdog".into())
            .spawn(move || {
                watch(&watched, timeout, |operation, waited| {
                    on_timeout(Stalled {
                        rank,
                        world_size,
                        operation,
                        waited,
                    })
                })
            })
            .expect("spawning the collectives watchdog thread");
        Self { inner, shared }
    }

    /// Runs one collective with its start recorded for the watching thread.
    fn timed<T>(&self, operation: &'static str, run: impl FnOnce(&C) -> T) -> T {
        if UNWATCHED.with(Cell::get) {
            return run(&self.inner);
        }
        let (state, wake) = &*self.shared;
        set_current(state, Some((operation, Instant::now())));
        wake.notify_one();
        let result = run(&self.inner);
        set_current(state, None);
        result
    }
}

fn set_current(state: &Mutex<InProgress>, current: Option<(&'static str, Instant)>) {
    // A poisoned lock means the watching thread panicked: the collectives go on unwatched.
    if let Ok(mut state) = state.lock() {
        state.current = current;
    }
}

/// The watching thread: sleeps until a collective starts, then until its deadline; reports a
/// collective still running then (once), and ends when the watchdog is dropped.
fn watch(
    shared: &(Mutex<InProgress>, Condvar),
    timeout: Duration,
    report: impl Fn(&'static str, Duration),
) {
    let (state, wake) = shared;
    let Ok(mut guard) = state.lock() else { return };
    let mut reported: Option<Instant> = None;
    loop {
        if guard.closed {
            return;
        }
        let wait = match guard.current {
            Some((operation, started)) if reported != Some(started) => {
                let waited = started.elapsed();
                if waited >= timeout {
                    reported = Some(started);
                    drop(guard);
                    report(operation, waited);
                    let Ok(again) = state.lock() else { return };
                    guard = again;
                    continue;
                }
                timeout - waited
            }
            // Idle, or the current collective was reported: sleep until the next one starts.
            _ => Duration::from_secs(3600),
        };
        let Ok((again, _)) = wake.wait_timeout(guard, wait) else {
            return;
        };
        guard = again;
    }
}

impl<C: Collectives> Drop for Watchdog<C> {
    fn drop(&mut self) {
        let (state, wake) = &*self.shared;
        if let Ok(mut state) = state.lock() {
            state.closed = true;
        }
        wake.notify_one();
    }
}

impl<C: Collectives> Collectives for Watchdog<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn world_size(&self) -> usize {
        self.inner.world_size()
    }

    fn transport(&self) -> &'static str {
        self.inner.transport()
    }

    fn all_reduce_sum(&self, values: BufferMut<'_>) -> Result<(), CollectiveError> {
        self.timed("all_reduce_sum", |c| c.all_reduce_sum(values))
    }

    fn all_gather(
        &self,
        local: Buffer<'_>,
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        self.timed("all_gather", |c| c.all_gather(local, gathered))
    }

    fn all_gather_varcount(
        &self,
        local: Buffer<'_>,
        counts: &[usize],
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        self.timed("all_gather_varcount", |c| {
            c.all_gather_varcount(local, counts, gathered)
        })
    }

    fn broadcast(&self, values: BufferMut<'_>, root: usize) -> Result<(), CollectiveError> {
        self.timed("broadcast", |c| c.broadcast(values, root))
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.timed("barrier", |c| c.barrier())
    }

    fn abort(&self, code: i32) -> ! {
        self.inner.abort(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CollectivesExt, LocalGroup};
    use std::sync::mpsc;

    /// Runs `body` on two watched ranks (threads) with `timeout`; returns the reports.
    fn two_watched_ranks(
        timeout: Duration,
        body: impl Fn(&Watchdog<LocalGroup>) + Send + Sync + Copy + 'static,
    ) -> Vec<Stalled> {
        let (sender, reports) = mpsc::channel();
        let ranks: Vec<_> = LocalGroup::new(2)
            .into_iter()
            .map(|comm| {
                let sender = sender.clone();
                thread::spawn(move || {
                    body(&Watchdog::new(comm, timeout, move |stalled| {
                        sender.send(stalled).unwrap();
                    }))
                })
            })
            .collect();
        for rank in ranks {
            rank.join().unwrap();
        }
        reports.try_iter().collect()
    }

    #[test]
    fn a_collective_one_rank_is_late_to_is_reported_by_the_waiting_rank_only() {
        let reports = two_watched_ranks(Duration::from_millis(200), |comm| {
            if comm.rank() == 1 {
                // Rank 1 is "stuck in I/O" for a while before it joins.
                thread::sleep(Duration::from_millis(700));
            }
            let mut total = [1i64];
            comm.all_reduce_sum_in_place(&mut total).unwrap();
            assert_eq!(total, [2]);
            // Prompt collectives are not reported.
            comm.barrier().unwrap();
        });
        assert_eq!(reports.len(), 1, "{reports:?}");
        let stalled = &reports[0];
        assert_eq!((stalled.rank, stalled.world_size), (0, 2));
        assert_eq!(stalled.operation, "all_reduce_sum");
        assert!(stalled.waited >= Duration::from_millis(200));
        assert!(
            stalled.to_string().contains("rank 0 of 2 has waited"),
            "{stalled}"
        );
    }

    #[test]
    fn an_unwatched_wait_is_not_reported() {
        let reports = two_watched_ranks(Duration::from_millis(100), |comm| {
            if comm.rank() == 0 {
                thread::sleep(Duration::from_millis(400));
            }
            unwatched(|| comm.barrier()).unwrap();
        });
        assert!(reports.is_empty(), "{reports:?}");
    }
}
