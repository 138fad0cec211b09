//! Adds libtorch's rpath (and libtorch_cuda where loadable) to our tests and examples.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    supcon_link::emit_libtorch_link_args();
}
