//! The collectives between simulated ranks (threads): every operation, element type and
//! failure, checked against what one process computes.

use supcon_collectives::{
    Buffer, BufferMut, CollectiveError, Collectives, CollectivesExt, LocalGroup, SingleProcess,
};

#[test]
fn sums_are_exact_and_in_rank_order_for_every_element_type() {
    let out = LocalGroup::run(3, |comm| {
        let r = comm.rank();
        let mut f32s = [r as f32 + 0.5, -(r as f32)];
        let mut f64s: [f64; 1] = [[1e16, 1.0, -1e16][r]];
        let mut i64s = [r as i64 * 10, 1];
        let mut bytes = [r as u8, 200];
        comm.all_reduce_sum_in_place(&mut f32s)?;
        comm.all_reduce_sum_in_place(&mut f64s)?;
        comm.all_reduce_sum_in_place(&mut i64s)?;
        comm.all_reduce_sum_in_place(&mut bytes)?;
        Ok::<_, CollectiveError>((f32s, f64s, i64s, bytes))
    })
    .unwrap();
    for (f32s, f64s, i64s, bytes) in out {
        assert_eq!(f32s, [4.5, -3.0]);
        // (1e16 + 1) − 1e16 in rank order is 0 (the 1 is rounded away), on every rank.
        assert_eq!(f64s[0].to_bits(), 0.0f64.to_bits());
        assert_eq!(i64s, [30, 3]);
        assert_eq!(bytes, [3, 88]); // 600 wraps, as MPI_SUM on bytes does
    }
}

#[test]
fn gathers_concatenate_in_rank_order_with_equal_and_varying_lengths() {
    let out = LocalGroup::run(3, |comm| {
        let r = comm.rank();
        let mut equal = vec![0i64; 6];
        comm.all_gather(
            Buffer::I64(&[r as i64, -(r as i64)]),
            BufferMut::I64(&mut equal),
        )?;
        // Rank r gives r + 1 values; rank 1 none at all in the second gather.
        let varying = comm.gather_all(&vec![r as f32; r + 1])?;
        let some_empty = comm.gather_all(&vec![7.0f64; if r == 1 { 0 } else { 2 }])?;
        Ok::<_, CollectiveError>((equal, varying, some_empty))
    })
    .unwrap();
    for (equal, varying, some_empty) in out {
        assert_eq!(equal, [0, 0, 1, -1, 2, -2]);
        assert_eq!(varying.values, [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(varying.counts, [1, 2, 3]);
        assert_eq!(varying.part(2), &[2.0, 2.0, 2.0]);
        assert_eq!(some_empty.counts, [2, 0, 2]);
        assert_eq!(some_empty.offset(2), 2);
    }
}

#[test]
fn broadcasts_copy_the_roots_values() {
    let out = LocalGroup::run(4, |comm| {
        let mut values = [comm.rank() as f64; 3];
        comm.broadcast_in_place(&mut values, 2)?;
        let bytes = comm.broadcast_bytes(
            if comm.rank() == 0 {
                b"from rank 0"
            } else {
                b""
            },
            0,
        )?;
        comm.barrier()?;
        Ok::<_, CollectiveError>((values, bytes, comm.any(comm.rank() == 3)?))
    })
    .unwrap();
    for (values, bytes, any) in out {
        assert_eq!(values, [2.0; 3]);
        assert_eq!(bytes, b"from rank 0");
        assert!(any);
    }
}

#[test]
fn the_group_of_one_is_the_identity() {
    let comm = SingleProcess;
    let mut values = [1.5f32, 2.0];
    comm.all_reduce_sum_in_place(&mut values).unwrap();
    assert_eq!(values, [1.5, 2.0]);
    let gathered = comm.gather_all(&[4i64, 5]).unwrap();
    assert_eq!((gathered.values, gathered.counts), (vec![4, 5], vec![2]));
    assert!(matches!(
        comm.broadcast(BufferMut::F32(&mut values), 1),
        Err(CollectiveError::Root { root: 1, .. })
    ));
}

#[test]
fn mismatched_calls_are_errors_that_name_both_sides() {
    // Ranks reduce buffers of different element types: both see the mismatch, nobody hangs.
    let error = LocalGroup::run(2, |comm| {
        if comm.rank() == 0 {
            comm.all_reduce_sum(BufferMut::F32(&mut [1.0]))
        } else {
            comm.all_reduce_sum(BufferMut::F64(&mut [1.0]))
        }
    })
    .unwrap_err();
    assert!(matches!(error, CollectiveError::Mismatch { .. }), "{error}");
    let text = error.to_string();
    assert!(text.contains("f32") && text.contains("f64"), "{text}");

    // Different lengths in an all-reduce.
    let error = LocalGroup::run(2, |comm| {
        comm.all_reduce_sum_in_place(&mut vec![0i64; 2 + comm.rank()])
    })
    .unwrap_err();
    assert!(matches!(error, CollectiveError::Length { .. }), "{error}");
}

#[test]
fn a_rank_that_leaves_fails_the_others_collectives_and_is_reported_as_the_cause() {
    let error = LocalGroup::run(3, |comm| {
        if comm.rank() == 1 {
            // Rank 1 gives up before the first collective.
            return Err(CollectiveError::Unavailable {
                transport: "test",
                reason: "rank 1 could not read its data".into(),
            });
        }
        comm.barrier()?;
        comm.barrier()
    })
    .unwrap_err();
    assert!(
        error.to_string().contains("rank 1 could not read its data"),
        "the cause, not the peers' PeerLeft: {error}"
    );
}

#[test]
fn a_panicking_rank_does_not_hang_the_others() {
    let outcome = std::panic::catch_unwind(|| {
        LocalGroup::run(2, |comm| {
            if comm.rank() == 0 {
                panic!("rank 0 breaks");
            }
            let left = comm.barrier();
            assert!(
                matches!(left, Err(CollectiveError::PeerLeft { rank: 0, .. })),
                "{left:?}"
            );
            Ok::<_, CollectiveError>(())
        })
    });
    let panic = outcome.expect_err("the panic comes back to the caller");
    let message = panic.downcast_ref::<&str>().copied().unwrap_or_default();
    assert_eq!(message, "rank 0 breaks");
}
