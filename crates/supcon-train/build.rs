//! Adds libtorch's rpath to the `supcon` binary and our tests, so they start without
//! `LD_LIBRARY_PATH` (see the `supcon-link` crate).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    supcon_link::emit_libtorch_link_args();
}
