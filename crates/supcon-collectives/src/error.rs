//! The one error type of the collectives.

/// What went wrong in a collective, or in setting up the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectiveError {
    /// A buffer's length does not fit the collective.
    #[error("{operation}: the {what} has {actual} elements, expected {expected}")]
    Length {
        /// The collective (`all_gather`, ...).
        operation: &'static str,
        /// Which buffer.
        what: &'static str,
        /// The length the collective needs.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The send and receive buffers hold different element types.
    #[error("{operation}: the local buffer holds {local} but the output holds {out}")]
    Kind {
        /// The collective.
        operation: &'static str,
        /// Element type of the local buffer.
        local: &'static str,
        /// Element type of the output buffer.
        out: &'static str,
    },
    /// A root rank outside the group.
    #[error("{operation}: root rank {root} is not in a group of {world} ranks")]
    Root {
        /// The collective.
        operation: &'static str,
        /// The root given.
        root: usize,
        /// The group's size.
        world: usize,
    },
    /// Another rank of a [`crate::LocalGroup`] gave up (returned an error or panicked), so
    /// this collective can never complete.
    #[error("rank {rank} left the group; {operation} on rank {this_rank} cannot complete")]
    PeerLeft {
        /// The collective that was waiting.
        operation: &'static str,
        /// The rank that left.
        rank: usize,
        /// The rank whose collective failed.
        this_rank: usize,
    },
    /// Ranks called different collectives, or the same one with different element types.
    #[error("rank {rank} called {theirs} while rank {this_rank} called {ours}")]
    Mismatch {
        /// This rank's collective.
        ours: String,
        /// The other rank's.
        theirs: String,
        /// The other rank.
        rank: usize,
        /// This rank.
        this_rank: usize,
    },
    /// The transport is not in this build, or could not start.
    #[error("the {transport} transport is not available: {reason}")]
    Unavailable {
        /// `mpi` or `nccl`.
        transport: &'static str,
        /// Why, and what to do.
        reason: String,
    },
    /// The transport's library reported an error.
    #[error("{transport} {operation} failed on rank {rank}")]
    Transport {
        /// `mpi` or `nccl`.
        transport: &'static str,
        /// The collective or set-up step.
        operation: &'static str,
        /// This rank.
        rank: usize,
        /// The library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
