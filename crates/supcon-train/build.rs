//! Adds libtorch's rpath to the `supcon` binary and our tests, so they start without
//! `LD_LIBRARY_PATH` (the logic is shared with supcon-models, see its build_support/).
include!("../supcon-models/build_support/libtorch_link.rs");

fn main() {
    emit_libtorch_link_args();
}
