//! Adds libtorch's rpath (and libtorch_cuda where loadable) to our tests and examples.
include!("build_support/libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_support/libtorch_link.rs");
    emit_libtorch_link_args();
}
