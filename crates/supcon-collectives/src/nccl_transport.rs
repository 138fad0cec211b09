//! NCCL through cudarc: one process per GPU, started by an MPI launcher. MPI gives each
//! process its rank and carries the NCCL unique id from rank 0 to the others
//! (`ncclGetUniqueId` on rank 0, a broadcast, then `ncclCommInitRank` everywhere); the
//! collectives themselves run on the GPUs.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nccl::{Comm, Id, NcclType, ReduceOp};

use crate::{
    check_all_gather, check_root, check_varcount, local_rank, Buffer, BufferMut, CollectiveError,
    Collectives, CollectivesExt, MpiCollectives,
};

/// NCCL collectives between the GPUs of a job, one GPU per process.
///
/// The [`Collectives`] interface takes host buffers, so each call copies them to the GPU, runs
/// the NCCL collective on the communicator's stream and copies the result back; barrier and
/// abort go through MPI. The device is `device` when given, otherwise the rank's index among
/// the processes of its node (`OMPI_COMM_WORLD_LOCAL_RANK`, `SLURM_LOCALID`) modulo the
/// GPUs it sees.
pub struct NcclCollectives {
    // Dropped first: the communicator is torn down before MPI is finalized.
    comm: Comm,
    stream: Arc<CudaStream>,
    mpi: MpiCollectives,
    device: usize,
}

fn nccl_error(
    operation: &'static str,
    rank: usize,
    error: impl std::fmt::Debug,
) -> CollectiveError {
    CollectiveError::Transport {
        transport: "nccl",
        operation,
        rank,
        source: format!("{error:?}").into(),
    }
}

impl NcclCollectives {
    /// Initializes MPI, picks the GPU, and builds the NCCL communicator of `MPI_COMM_WORLD`.
    pub fn init(device: Option<usize>) -> Result<Self, CollectiveError> {
        let mpi = MpiCollectives::init()?;
        let rank = mpi.rank();
        // SAFETY: only tries to dlopen the libraries; cudarc panics on first use without them.
        let present = unsafe {
            cudarc::driver::sys::is_culib_present() && cudarc::nccl::sys::is_culib_present()
        };
        if !present {
            return Err(CollectiveError::Unavailable {
                transport: "nccl",
                reason: "libcuda.so or libnccl.so was not found on the library path (PyTorch's \
                         CUDA wheel brings libnccl as the nvidia-nccl-cu13 package)"
                    .into(),
            });
        }
        let count = CudaContext::device_count().map_err(|e| nccl_error("device count", rank, e))?;
        if count <= 0 {
            return Err(CollectiveError::Unavailable {
                transport: "nccl",
                reason: format!("rank {rank} sees no CUDA device"),
            });
        }
        let device = device.unwrap_or_else(|| local_rank().unwrap_or(rank) % count as usize);
        let context = CudaContext::new(device).map_err(|e| nccl_error("CUDA context", rank, e))?;
        let stream = context.default_stream();
        // Rank 0 draws the unique id; MPI carries its 128 bytes to the others.
        let id = if rank == 0 {
            Id::new().map_err(|e| nccl_error("ncclGetUniqueId", rank, e))?
        } else {
            Id::uninit([0; 128])
        };
        let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
        let bytes = mpi.broadcast_bytes(&bytes, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (slot, &byte) in internal.iter_mut().zip(&bytes) {
            *slot = byte as std::ffi::c_char;
        }
        let comm = Comm::from_rank(stream.clone(), rank, mpi.world_size(), Id::uninit(internal))
            .map_err(|e| nccl_error("ncclCommInitRank", rank, e))?;
        tracing::info!(
            rank,
            device,
            world = mpi.world_size(),
            "NCCL communicator ready"
        );
        Ok(Self {
            comm,
            stream,
            mpi,
            device,
        })
    }

    /// The CUDA ordinal this rank's collectives run on.
    pub fn device(&self) -> usize {
        self.device
    }

    fn upload<T: DeviceRepr>(
        &self,
        operation: &'static str,
        values: &[T],
    ) -> Result<CudaSlice<T>, CollectiveError> {
        self.stream
            .clone_htod(values)
            .map_err(|e| nccl_error(operation, self.rank(), e))
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        operation: &'static str,
        len: usize,
    ) -> Result<CudaSlice<T>, CollectiveError> {
        self.stream
            .alloc_zeros(len.max(1))
            .map_err(|e| nccl_error(operation, self.rank(), e))
    }

    /// Copies a device buffer back into `out` (the copy waits for the stream).
    fn download<T: DeviceRepr + Copy>(
        &self,
        operation: &'static str,
        device: &CudaSlice<T>,
        out: &mut [T],
    ) -> Result<(), CollectiveError> {
        let host = self
            .stream
            .clone_dtoh(device)
            .map_err(|e| nccl_error(operation, self.rank(), e))?;
        out.copy_from_slice(&host[..out.len()]);
        Ok(())
    }

    fn all_reduce_typed<T: DeviceRepr + NcclType + Copy>(
        &self,
        values: &mut [T],
    ) -> Result<(), CollectiveError> {
        let operation = "all_reduce_sum";
        let mut device = self.upload(operation, values)?;
        self.comm
            .all_reduce_in_place(&mut device, &ReduceOp::Sum)
            .map_err(|e| nccl_error(operation, self.rank(), e))?;
        self.download(operation, &device, values)
    }

    /// NCCL's all-gather with equal lengths of `width` elements per rank.
    fn all_gather_typed<T: DeviceRepr + ValidAsZeroBits + NcclType + Copy + Default>(
        &self,
        local: &[T],
        width: usize,
    ) -> Result<Vec<T>, CollectiveError> {
        let operation = "all_gather";
        let mut padded = local.to_vec();
        padded.resize(width, T::default());
        let send = self.upload(operation, &padded)?;
        let mut receive = self.zeros::<T>(operation, width * self.world_size())?;
        if width > 0 {
            self.comm
                .all_gather(&send, &mut receive)
                .map_err(|e| nccl_error(operation, self.rank(), e))?;
        }
        let mut out = vec![T::default(); width * self.world_size()];
        self.download(operation, &receive, &mut out)?;
        Ok(out)
    }

    fn broadcast_typed<T: DeviceRepr + NcclType + Copy>(
        &self,
        values: &mut [T],
        root: usize,
    ) -> Result<(), CollectiveError> {
        let operation = "broadcast";
        let mut device = self.upload(operation, values)?;
        self.comm
            .broadcast_in_place(&mut device, root as i32)
            .map_err(|e| nccl_error(operation, self.rank(), e))?;
        self.download(operation, &device, values)
    }
}

/// Gathers `local` (a typed slice) padded to `width` and copies each rank's first `counts[r]`
/// elements into `out`, in rank order.
macro_rules! gather_padded {
    ($self:expr, $local:expr, $out:expr, $width:expr, $counts:expr) => {{
        let all = $self.all_gather_typed($local, $width)?;
        let mut offset = 0;
        for (rank, &count) in $counts.iter().enumerate() {
            $out[offset..offset + count]
                .copy_from_slice(&all[rank * $width..rank * $width + count]);
            offset += count;
        }
    }};
}

impl Collectives for NcclCollectives {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }

    fn transport(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce_sum(&self, values: BufferMut<'_>) -> Result<(), CollectiveError> {
        match values {
            BufferMut::F32(v) => self.all_reduce_typed(v),
            BufferMut::F64(v) => self.all_reduce_typed(v),
            BufferMut::I64(v) => self.all_reduce_typed(v),
            BufferMut::U8(v) => self.all_reduce_typed(v),
        }
    }

    fn all_gather(
        &self,
        local: Buffer<'_>,
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        check_all_gather(self.world_size(), &local, &gathered)?;
        let counts = vec![local.len(); self.world_size()];
        self.all_gather_varcount(local, &counts, gathered)
    }

    /// NCCL has no all-gather of varying lengths: every rank sends `max(counts)` elements and
    /// the padding is dropped.
    fn all_gather_varcount(
        &self,
        local: Buffer<'_>,
        counts: &[usize],
        gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        check_varcount(self.world_size(), self.rank(), &local, counts, &gathered)?;
        let width = counts.iter().copied().max().unwrap_or(0);
        match (local, gathered) {
            (Buffer::F32(l), BufferMut::F32(o)) => gather_padded!(self, l, o, width, counts),
            (Buffer::F64(l), BufferMut::F64(o)) => gather_padded!(self, l, o, width, counts),
            (Buffer::I64(l), BufferMut::I64(o)) => gather_padded!(self, l, o, width, counts),
            (Buffer::U8(l), BufferMut::U8(o)) => gather_padded!(self, l, o, width, counts),
            (local, out) => unreachable!(
                "{} into {}: kinds are checked first",
                local.kind(),
                out.kind()
            ),
        }
        Ok(())
    }

    fn broadcast(&self, values: BufferMut<'_>, root: usize) -> Result<(), CollectiveError> {
        check_root(root, self.world_size())?;
        match values {
            BufferMut::F32(v) => self.broadcast_typed(v, root),
            BufferMut::F64(v) => self.broadcast_typed(v, root),
            BufferMut::I64(v) => self.broadcast_typed(v, root),
            BufferMut::U8(v) => self.broadcast_typed(v, root),
        }
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.mpi.barrier()
    }

    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }
}
