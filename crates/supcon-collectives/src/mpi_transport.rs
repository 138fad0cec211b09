//! MPI through the `mpi` crate (rsmpi): processes started by `mpirun`, `mpiexec` or `srun`.

use std::time::Duration;

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use crate::{
    check_all_gather, check_root, check_varcount, Buffer, BufferMut, CollectiveError, Collectives,
};

/// The ranks of `MPI_COMM_WORLD`. Created once per process ([`MpiCollectives::init`]); MPI is
/// finalized when it is dropped.
///
/// MPI's default error handler (`MPI_ERRORS_ARE_FATAL`) ends the whole job on a failed
/// collective, so failures of the transport itself do not come back as errors; a rank that
/// dies ends the job through the launcher (Open MPI's `mpirun` kills the other ranks and says
/// which one died).
pub struct MpiCollectives {
    // Dropped before the universe, which finalizes MPI.
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    _universe: Universe,
}

impl MpiCollectives {
    /// Initializes MPI (once per process: a second call is [`CollectiveError::Unavailable`]).
    /// Only the calling thread may use MPI afterwards (`MPI_THREAD_FUNNELED`): libtorch's and
    /// rayon's worker threads never call it.
    pub fn init() -> Result<Self, CollectiveError> {
        let (universe, _threading) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| CollectiveError::Unavailable {
                transport: "mpi",
                reason: "MPI was already initialized in this process".into(),
            })?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        Ok(Self {
            world,
            rank,
            size,
            _universe: universe,
        })
    }

    /// MPI counts are C `int`s.
    fn count(operation: &'static str, len: usize) -> Result<Count, CollectiveError> {
        Count::try_from(len).map_err(|_| CollectiveError::Length {
            operation,
            what: "buffer (MPI counts are 32-bit)",
            expected: Count::MAX as usize,
            actual: len,
        })
    }
}

/// Runs `$body` with `$local` and `$out` bound to the typed slices of one element type.
macro_rules! typed_pair {
    ($local:expr, $out:expr, |$l:ident, $o:ident| $body:expr) => {
        match ($local, $out) {
            (Buffer::F32($l), BufferMut::F32($o)) => $body,
            (Buffer::F64($l), BufferMut::F64($o)) => $body,
            (Buffer::I64($l), BufferMut::I64($o)) => $body,
            (Buffer::U8($l), BufferMut::U8($o)) => $body,
            (local, out) => unreachable!(
                "{} into {}: kinds are checked first",
                local.kind(),
                out.kind()
            ),
        }
    };
}

impl Collectives for MpiCollectives {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn transport(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&self, values: BufferMut<'_>) -> Result<(), CollectiveError> {
        Self::count("all_reduce_sum", values.len())?;
        // The send buffer must not alias the receive buffer.
        match values {
            BufferMut::F32(v) => {
                let local = v.to_vec();
                self.world
                    .all_reduce_into(&local[..], v, SystemOperation::sum());
            }
            BufferMut::F64(v) => {
                let local = v.to_vec();
                self.world
                    .all_reduce_into(&local[..], v, SystemOperation::sum());
            }
            BufferMut::I64(v) => {
                let local = v.to_vec();
                self.world
                    .all_reduce_into(&local[..], v, SystemOperation::sum());
            }
            BufferMut::U8(v) => {
                let local = v.to_vec();
                self.world
                    .all_reduce_into(&local[..], v, SystemOperation::sum());
            }
        }
        Ok(())
    }

    fn all_gather(
        &self,
        local: Buffer<'_>,
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        check_all_gather(self.size, &local, &gathered)?;
        Self::count("all_gather", gathered.len())?;
        typed_pair!(local, gathered, |l, o| self.world.all_gather_into(l, o));
        Ok(())
    }

    fn all_gather_varcount(
        &self,
        local: Buffer<'_>,
        counts: &[usize],
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        check_varcount(self.size, self.rank, &local, counts, &gathered)?;
        Self::count("all_gather_varcount", gathered.len())?;
        let counts: Vec<Count> = counts.iter().map(|&c| c as Count).collect();
        let displacements: Vec<Count> = counts
            .iter()
            .scan(0, |offset, &c| {
                let start = *offset;
                *offset += c;
                Some(start)
            })
            .collect();
        typed_pair!(local, gathered, |l, o| {
            let mut partition = PartitionMut::new(o, &counts[..], &displacements[..]);
            self.world.all_gather_varcount_into(l, &mut partition)
        });
        Ok(())
    }

    fn broadcast(&self, values: BufferMut<'_>, root: usize) -> Result<(), CollectiveError> {
        check_root(root, self.size)?;
        Self::count("broadcast", values.len())?;
        let root = self.world.process_at_rank(root as i32);
        match values {
            BufferMut::F32(v) => root.broadcast_into(v),
            BufferMut::F64(v) => root.broadcast_into(v),
            BufferMut::I64(v) => root.broadcast_into(v),
            BufferMut::U8(v) => root.broadcast_into(v),
        }
        Ok(())
    }

    /// A non-blocking barrier polled with short sleeps: a rank that waits long (while rank 0
    /// evaluates and writes the report) leaves its core to the others, where a blocking MPI
    /// barrier would spin on it.
    fn barrier(&self) -> Result<(), CollectiveError> {
        let mut request = self.world.immediate_barrier();
        let mut pause = Duration::from_micros(50);
        loop {
            match request.test() {
                Ok(_) => return Ok(()),
                Err(pending) => request = pending,
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
