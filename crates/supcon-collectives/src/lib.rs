//! The collectives seam of supcon: what data-parallel training needs from the processes it
//! runs in, over engines that clusters already run — never hand-written networking.
//!
//! [`Collectives`] is the one interface: rank, world size, all-reduce (sum), all-gather (equal
//! and variable lengths), broadcast, barrier and abort, on host buffers of `f32`, `f64`,
//! `i64` or `u8`. Its implementations:
//!
//! | type | transport | when |
//! |---|---|---|
//! | [`SingleProcess`] | none: every collective is the identity | the default, one process |
//! | [`LocalGroup`] | shared memory between threads | simulated ranks in tests and tools |
//! | `MpiCollectives` (feature `mpi`) | MPI (Open MPI via the `mpi` crate) | `mpirun`, `srun` |
//! | `NcclCollectives` (feature `nccl`) | NCCL (cudarc), started over MPI | one process per GPU |
//!
//! [`Watchdog`] wraps any of them with a deadline per collective: a rank stuck elsewhere (in
//! I/O, or dead unnoticed) would otherwise leave the others waiting forever.
//!
//! [`connect`] picks the implementation from how the process was started ([`Launch`]): a
//! process started by an MPI launcher talks MPI (or NCCL when asked), any other is alone.
//!
//! The typed helpers of [`CollectivesExt`] (generic over [`Scalar`]) sit on top: gathering
//! buffers of different lengths, broadcasting a byte string, agreeing on a flag.
//!
//! **Invariant:** every rank calls the same collectives in the same order with matching
//! lengths; a rank that cannot ends the job with [`Collectives::abort`] instead of leaving the
//! others waiting.
//!
//! ```
//! use supcon_collectives::{shard, Collectives, CollectivesExt, LocalGroup};
//!
//! // Three simulated ranks, each summing its share of 0..10.
//! let totals = LocalGroup::run(3, |comm| {
//!     let mine: i64 = (shard(10, comm.rank(), comm.world_size())).map(|i| i as i64).sum();
//!     let mut total = [mine];
//!     comm.all_reduce_sum_in_place(&mut total)?;
//!     Ok::<_, supcon_collectives::CollectiveError>(total[0])
//! })
//! .unwrap();
//! assert_eq!(totals, vec![45, 45, 45]);
//! ```

#![warn(missing_docs)]

mod error;
mod local;
#[cfg(feature = "mpi")]
mod mpi_transport;
#[cfg(feature = "nccl")]
mod nccl_transport;
mod single;
mod watchdog;

use std::ops::Range;

pub use error::CollectiveError;
pub use local::LocalGroup;
#[cfg(feature = "mpi")]
pub use mpi_transport::MpiCollectives;
#[cfg(feature = "nccl")]
pub use nccl_transport::NcclCollectives;
pub use single::SingleProcess;
pub use watchdog::{unwatched, Stalled, Watchdog};

/// A borrowed host buffer of one of the element types the collectives carry.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Buffer<'a> {
    /// `f32` values (features, gradients, pixels).
    F32(&'a [f32]),
    /// `f64` values (sums that must not lose precision).
    F64(&'a [f64]),
    /// `i64` values (labels, image indices, lengths).
    I64(&'a [i64]),
    /// Bytes (serialized state, flags, the NCCL unique id).
    U8(&'a [u8]),
}

/// A mutably borrowed host buffer; see [`Buffer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum BufferMut<'a> {
    /// `f32` values.
    F32(&'a mut [f32]),
    /// `f64` values.
    F64(&'a mut [f64]),
    /// `i64` values.
    I64(&'a mut [i64]),
    /// Bytes.
    U8(&'a mut [u8]),
}

impl Buffer<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Buffer::F32(v) => v.len(),
            Buffer::F64(v) => v.len(),
            Buffer::I64(v) => v.len(),
            Buffer::U8(v) => v.len(),
        }
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name (`f32`, `f64`, `i64`, `u8`).
    pub fn kind(&self) -> &'static str {
        match self {
            Buffer::F32(_) => "f32",
            Buffer::F64(_) => "f64",
            Buffer::I64(_) => "i64",
            Buffer::U8(_) => "u8",
        }
    }
}

impl BufferMut<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.as_ref().len()
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type's name.
    pub fn kind(&self) -> &'static str {
        self.as_ref().kind()
    }

    /// The same buffer, read-only.
    pub fn as_ref(&self) -> Buffer<'_> {
        match self {
            BufferMut::F32(v) => Buffer::F32(v),
            BufferMut::F64(v) => Buffer::F64(v),
            BufferMut::I64(v) => Buffer::I64(v),
            BufferMut::U8(v) => Buffer::U8(v),
        }
    }
}

/// The collectives of one rank in a group of `world_size` ranks (see the crate docs).
///
/// Every method is collective: all ranks call it, in the same order, with lengths that match
/// (a mismatch is a [`CollectiveError::Length`] where it can be seen locally). Buffers are host
/// memory; element types must match across ranks.
pub trait Collectives {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn world_size(&self) -> usize;

    /// The transport's name, for logs and reports (`single`, `local`, `mpi`, `nccl`).
    fn transport(&self) -> &'static str;

    /// Element-wise sum over the ranks, in place: afterwards every rank holds the sum.
    fn all_reduce_sum(&self, values: BufferMut<'_>) -> Result<(), CollectiveError>;

    /// Every rank's `local` (all of one length), concatenated in rank order into `gathered`
    /// (`world_size · local.len()` elements) on every rank.
    fn all_gather(&self, local: Buffer<'_>, gathered: BufferMut<'_>)
        -> Result<(), CollectiveError>;

    /// Every rank's `local`, concatenated in rank order into `gathered` on every rank, where
    /// rank r contributes `counts[r]` elements (every rank passes the same `counts`; see
    /// [`CollectivesExt::gather_all`], which learns them first).
    fn all_gather_varcount(
        &self,
        local: Buffer<'_>,
        counts: &[usize],
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError>;

    /// `values` of rank `root`, copied into `values` of every rank.
    fn broadcast(&self, values: BufferMut<'_>, root: usize) -> Result<(), CollectiveError>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), CollectiveError>;

    /// Ends every rank of the job with exit status `code` (MPI_Abort): what a rank does when it
    /// cannot go on, so that the others are not left waiting in a collective.
    fn abort(&self, code: i32) -> !;
}

/// A boxed transport (what [`connect`] returns) is a transport, so it can be wrapped
/// ([`Watchdog`]).
impl<C: Collectives + ?Sized> Collectives for Box<C> {
    fn rank(&self) -> usize {
        (**self).rank()
    }
    fn world_size(&self) -> usize {
        (**self).world_size()
    }
    fn transport(&self) -> &'static str {
        (**self).transport()
    }
    fn all_reduce_sum(&self, values: BufferMut<'_>) -> Result<(), CollectiveError> {
        (**self).all_reduce_sum(values)
    }
    fn all_gather(
        &self,
        local: Buffer<'_>,
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        (**self).all_gather(local, gathered)
    }
    fn all_gather_varcount(
        &self,
        local: Buffer<'_>,
        counts: &[usize],
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        (**self).all_gather_varcount(local, counts, gathered)
    }
    fn broadcast(&self, values: BufferMut<'_>, root: usize) -> Result<(), CollectiveError> {
        (**self).broadcast(values, root)
    }
    fn barrier(&self) -> Result<(), CollectiveError> {
        (**self).barrier()
    }
    fn abort(&self, code: i32) -> ! {
        (**self).abort(code)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for i64 {}
    impl Sealed for u8 {}
}

/// An element type the collectives carry: `f32`, `f64`, `i64` or `u8`.
pub trait Scalar: Copy + Default + sealed::Sealed + 'static {
    /// `values` as a [`Buffer`].
    fn buffer(values: &[Self]) -> Buffer<'_>;
    /// `values` as a [`BufferMut`].
    fn buffer_mut(values: &mut [Self]) -> BufferMut<'_>;
}

macro_rules! scalar {
    ($t:ty, $variant:ident) => {
        impl Scalar for $t {
            fn buffer(values: &[Self]) -> Buffer<'_> {
                Buffer::$variant(values)
            }
            fn buffer_mut(values: &mut [Self]) -> BufferMut<'_> {
                BufferMut::$variant(values)
            }
        }
    };
}
scalar!(f32, F32);
scalar!(f64, F64);
scalar!(i64, I64);
scalar!(u8, U8);

/// What [`CollectivesExt::gather_all`] returns: the ranks' buffers concatenated in rank
/// order, and how many elements each rank gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Gathered<T> {
    /// Every rank's values, rank 0's first.
    pub values: Vec<T>,
    /// Elements per rank.
    pub counts: Vec<usize>,
}

impl<T> Gathered<T> {
    /// Where rank `rank`'s values start in [`Gathered::values`].
    pub fn offset(&self, rank: usize) -> usize {
        self.counts[..rank].iter().sum()
    }

    /// Rank `rank`'s values.
    pub fn part(&self, rank: usize) -> &[T] {
        let start = self.offset(rank);
        &self.values[start..start + self.counts[rank]]
    }
}

/// Typed conveniences over any [`Collectives`].
pub trait CollectivesExt: Collectives {
    /// [`Collectives::all_reduce_sum`] of a typed slice.
    fn all_reduce_sum_in_place<T: Scalar>(&self, values: &mut [T]) -> Result<(), CollectiveError> {
        self.all_reduce_sum(T::buffer_mut(values))
    }

    /// [`Collectives::broadcast`] of a typed slice.
    fn broadcast_in_place<T: Scalar>(
        &self,
        values: &mut [T],
        root: usize,
    ) -> Result<(), CollectiveError> {
        self.broadcast(T::buffer_mut(values), root)
    }

    /// Every rank's `local`, whatever its length, concatenated in rank order: one all-gather
    /// of the lengths, then one of the values.
    fn gather_all<T: Scalar>(&self, local: &[T]) -> Result<Gathered<T>, CollectiveError> {
        let world = self.world_size();
        let mut counts = vec![0i64; world];
        self.all_gather(
            Buffer::I64(&[local.len() as i64]),
            BufferMut::I64(&mut counts),
        )?;
        let counts: Vec<usize> = counts.iter().map(|&c| c as usize).collect();
        let mut values = vec![T::default(); counts.iter().sum()];
        self.all_gather_varcount(T::buffer(local), &counts, T::buffer_mut(&mut values))?;
        Ok(Gathered { values, counts })
    }

    /// Rank `root`'s bytes on every rank (its length first, then the bytes); `bytes` is only
    /// read on `root`.
    fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>, CollectiveError> {
        let mut len = [bytes.len() as i64];
        self.broadcast(BufferMut::I64(&mut len), root)?;
        let mut out = if self.rank() == root {
            bytes.to_vec()
        } else {
            vec![0u8; len[0] as usize]
        };
        self.broadcast(BufferMut::U8(&mut out), root)?;
        Ok(out)
    }

    /// Whether `flag` is set on any rank (every rank gets the same answer).
    fn any(&self, flag: bool) -> Result<bool, CollectiveError> {
        let mut count = [i64::from(flag)];
        self.all_reduce_sum(BufferMut::I64(&mut count))?;
        Ok(count[0] > 0)
    }
}

impl<C: Collectives + ?Sized> CollectivesExt for C {}

/// The part of `0..len` that rank `rank` of `world` ranks owns: contiguous, in rank order, the
/// first `len % world` ranks one element longer. Concatenating the parts in rank order gives
/// `0..len` back, which is what makes a gathered batch the one-process batch.
pub fn shard(len: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1);
    let base = len / world;
    let extra = len % world;
    let start = rank * base + rank.min(extra);
    let size = base + usize::from(rank < extra);
    start..(start + size).min(len)
}

/// How this process was started, read from the environment the launchers set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// Not by an MPI launcher: one process.
    Alone,
    /// By an MPI launcher (`mpirun`, `mpiexec`, Slurm's `srun`), which set `variable`.
    Mpi {
        /// The variable that gave it away (`OMPI_COMM_WORLD_SIZE`, `PMI_SIZE`, ...).
        variable: &'static str,
        /// The world size it announces, when it announces one.
        world_size: Option<usize>,
    },
}

/// Variables that MPI launchers set in every rank's environment: Open MPI's `mpirun`, PMI-1/2
/// (MPICH, Intel MPI, Slurm's `srun --mpi=pmi2`), PMIx (`srun --mpi=pmix`, Open MPI 5).
const LAUNCHER_VARIABLES: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_RANK",
    "SLURM_STEP_NUM_TASKS",
];

impl Launch {
    /// Reads the process environment.
    pub fn detect() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Launch::detect`] over any variable lookup (testable without touching the
    /// environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        for variable in LAUNCHER_VARIABLES {
            if let Some(value) = lookup(variable) {
                let world_size = match variable {
                    // A rank, not a size: MPI itself will tell.
                    "PMIX_RANK" => None,
                    _ => value.trim().parse().ok(),
                };
                // `srun` of one task in a Slurm step is one process.
                if variable == "SLURM_STEP_NUM_TASKS" && world_size == Some(1) {
                    continue;
                }
                return Launch::Mpi {
                    variable,
                    world_size,
                };
            }
        }
        Launch::Alone
    }
}

/// The index of this process among the processes of its node, as the launchers announce it
/// (Open MPI, MPICH / Intel MPI, Slurm): the GPU a rank uses when each takes one.
pub fn local_rank() -> Option<usize> {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .into_iter()
    .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

/// The transport to use between the processes of a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// MPI when launched by an MPI launcher, otherwise one process.
    #[default]
    Auto,
    /// MPI (an error when the build has no `mpi` feature).
    Mpi,
    /// NCCL on the GPUs, started over MPI (an error without the `nccl` feature).
    Nccl,
}

/// The collectives for this process: [`SingleProcess`] when it was not started by an MPI
/// launcher (whatever `transport` says, so that `supcon train` behaves as one process when run
/// by hand), otherwise MPI or NCCL. `device` is the CUDA ordinal NCCL uses (ignored by MPI).
///
/// A process started by an MPI launcher in a build without the `mpi` feature gets
/// [`CollectiveError::Unavailable`], naming the feature, rather than running alone unaware of
/// its peers.
pub fn connect(
    transport: Transport,
    device: Option<usize>,
) -> Result<Box<dyn Collectives>, CollectiveError> {
    connect_as(&Launch::detect(), transport, device)
}

/// [`connect`] for a given [`Launch`].
pub fn connect_as(
    launch: &Launch,
    transport: Transport,
    device: Option<usize>,
) -> Result<Box<dyn Collectives>, CollectiveError> {
    let _ = device; // only NCCL reads it
    match (launch, transport) {
        (Launch::Alone, Transport::Auto) => Ok(Box::new(SingleProcess)),
        (Launch::Alone, _) => {
            tracing::info!("not started by an MPI launcher (mpirun, srun): running as one process");
            Ok(Box::new(SingleProcess))
        }
        (Launch::Mpi { .. }, Transport::Auto | Transport::Mpi) => mpi_or_unavailable(launch),
        (Launch::Mpi { .. }, Transport::Nccl) => nccl_or_unavailable(launch, device),
    }
}

#[cfg(feature = "mpi")]
fn mpi_or_unavailable(_launch: &Launch) -> Result<Box<dyn Collectives>, CollectiveError> {
    Ok(Box::new(MpiCollectives::init()?))
}

#[cfg(not(feature = "mpi"))]
fn mpi_or_unavailable(launch: &Launch) -> Result<Box<dyn Collectives>, CollectiveError> {
    Err(CollectiveError::Unavailable {
        transport: "mpi",
        reason: format!(
            "this process was started by an MPI launcher ({launch:?}) but was built without the \
             `mpi` feature; build with `--features mpi` (cargo xtask train --ranks R does)"
        ),
    })
}

#[cfg(feature = "nccl")]
fn nccl_or_unavailable(
    _launch: &Launch,
    device: Option<usize>,
) -> Result<Box<dyn Collectives>, CollectiveError> {
    Ok(Box::new(NcclCollectives::init(device)?))
}

#[cfg(not(feature = "nccl"))]
fn nccl_or_unavailable(
    _launch: &Launch,
    _device: Option<usize>,
) -> Result<Box<dyn Collectives>, CollectiveError> {
    Err(CollectiveError::Unavailable {
        transport: "nccl",
        reason: "this build has no `nccl` feature (build with `--features nccl`, which needs \
                 `cuda` and `mpi`)"
            .into(),
    })
}

/// Checks `gathered.len() == expected` for `operation`.
pub(crate) fn check_len(
    operation: &'static str,
    what: &'static str,
    actual: usize,
    expected: usize,
) -> Result<(), CollectiveError> {
    if actual == expected {
        Ok(())
    } else {
        Err(CollectiveError::Length {
            operation,
            what,
            expected,
            actual,
        })
    }
}

/// Checks that two buffers hold the same element type.
pub(crate) fn check_kinds(
    operation: &'static str,
    local: &Buffer<'_>,
    out: &BufferMut<'_>,
) -> Result<(), CollectiveError> {
    if local.kind() == out.kind() {
        Ok(())
    } else {
        Err(CollectiveError::Kind {
            operation,
            local: local.kind(),
            out: out.kind(),
        })
    }
}

/// The checks every transport applies to an all-gather of equal lengths.
pub(crate) fn check_all_gather(
    world: usize,
    local: &Buffer<'_>,
    gathered: &BufferMut<'_>,
) -> Result<(), CollectiveError> {
    check_kinds("all_gather", local, gathered)?;
    check_len(
        "all_gather",
        "gathered buffer (world size × local length)",
        gathered.len(),
        local.len() * world,
    )
}

/// A broadcast's root must be one of the ranks.
pub(crate) fn check_root(root: usize, world: usize) -> Result<(), CollectiveError> {
    if root < world {
        Ok(())
    } else {
        Err(CollectiveError::Root {
            operation: "broadcast",
            root,
            world,
        })
    }
}

/// The shape checks every transport applies to an all-gather of varying lengths.
pub(crate) fn check_varcount(
    world: usize,
    rank: usize,
    local: &Buffer<'_>,
    counts: &[usize],
    gathered: &BufferMut<'_>,
) -> Result<(), CollectiveError> {
    let operation = "all_gather_varcount";
    check_kinds(operation, local, gathered)?;
    check_len(operation, "counts (one per rank)", counts.len(), world)?;
    check_len(
        operation,
        "local buffer (counts[rank])",
        local.len(),
        counts[rank],
    )?;
    check_len(
        operation,
        "gathered buffer (sum of counts)",
        gathered.len(),
        counts.iter().sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_contiguous_cover_everything_and_differ_by_at_most_one() {
        for len in 0..40 {
            for world in 1..7 {
                let parts: Vec<Range<usize>> = (0..world).map(|r| shard(len, r, world)).collect();
                let mut next = 0;
                for part in &parts {
                    assert_eq!(part.start, next, "len {len} world {world}: {parts:?}");
                    next = part.end;
                }
                assert_eq!(next, len);
                let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "{sizes:?}");
            }
        }
    }

    #[test]
    fn launchers_are_recognized_by_their_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Launch::from_lookup(env(&[])), Launch::Alone);
        assert_eq!(
            Launch::from_lookup(env(&[("OMPI_COMM_WORLD_SIZE", "4")])),
            Launch::Mpi {
                variable: "OMPI_COMM_WORLD_SIZE",
                world_size: Some(4)
            }
        );
        assert_eq!(
            Launch::from_lookup(env(&[("PMIX_RANK", "2")])),
            Launch::Mpi {
                variable: "PMIX_RANK",
                world_size: None
            }
        );
        // One task of a Slurm step is a plain process; more is a job.
        assert_eq!(
            Launch::from_lookup(env(&[("SLURM_STEP_NUM_TASKS", "1")])),
            Launch::Alone
        );
        assert!(matches!(
            Launch::from_lookup(env(&[("SLURM_STEP_NUM_TASKS", "8")])),
            Launch::Mpi { .. }
        ));
    }

    #[test]
    fn a_lone_process_is_a_single_process_whatever_the_transport() {
        for transport in [Transport::Auto, Transport::Mpi, Transport::Nccl] {
            let comm = connect_as(&Launch::Alone, transport, None).unwrap();
            assert_eq!((comm.rank(), comm.world_size()), (0, 1));
            assert_eq!(comm.transport(), "single");
        }
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn an_mpi_launch_without_the_feature_is_an_error_naming_it() {
        let launch = Launch::Mpi {
            variable: "OMPI_COMM_WORLD_SIZE",
            world_size: Some(2),
        };
        let error = connect_as(&launch, Transport::Auto, None)
            .err()
            .expect("no MPI in this build");
        assert!(error.to_string().contains("--features mpi"), "{error}");
    }
}
