//! The process's interrupt request (Ctrl-C, SIGTERM): a signal is process-wide, so is the flag.
//! A leaf module: the handler in `main.rs` sets it, the stage loop reads it (and every rank
//! agrees on it before acting), and nothing else depends on where it lives.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the running stage to stop after its current step (the Ctrl-C handler calls this).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether an interrupt was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
