//! One process: every collective is the identity.

use crate::{
    check_all_gather, check_root, check_varcount, Buffer, BufferMut, CollectiveError, Collectives,
};

/// The group of one: rank 0 of 1. Every collective returns what it was given, so code written
/// for R ranks runs unchanged (and at no cost) in one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collectives for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn transport(&self) -> &'static str {
        "single"
    }

    fn all_reduce_sum(&self, _values: BufferMut<'_>) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn all_gather(
        &self,
        local: Buffer<'_>,
        mut gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        check_all_gather(1, &local, &gathered)?;
        copy_into(local, &mut gathered, 0);
        Ok(())
    }

    fn all_gather_varcount(
        &self,
        local: Buffer<'_>,
        counts: &[usize],
        mut gathered: BufferMut<'_>,
    ) -> Result<(), CollectiveError> {
        check_varcount(1, 0, &local, counts, &gathered)?;
        copy_into(local, &mut gathered, 0);
        Ok(())
    }

    fn broadcast(&self, _values: BufferMut<'_>, root: usize) -> Result<(), CollectiveError> {
        check_root(root, 1)
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Copies `src` into `dst` from element `offset` on (same element type; the callers checked
/// kinds and lengths).
pub(crate) fn copy_into(src: Buffer<'_>, dst: &mut BufferMut<'_>, offset: usize) {
    match (src, dst) {
        (Buffer::F32(s), BufferMut::F32(d)) => d[offset..offset + s.len()].copy_from_slice(s),
        (Buffer::F64(s), BufferMut::F64(d)) => d[offset..offset + s.len()].copy_from_slice(s),
        (Buffer::I64(s), BufferMut::I64(d)) => d[offset..offset + s.len()].copy_from_slice(s),
        (Buffer::U8(s), BufferMut::U8(d)) => d[offset..offset + s.len()].copy_from_slice(s),
        (src, dst) => unreachable!(
            "copy of {} into {} (kinds are checked first)",
            src.kind(),
            dst.kind()
        ),
    }
}
