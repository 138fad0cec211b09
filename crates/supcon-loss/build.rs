//! With the `tch` feature, tests and examples link libtorch: give them its rpath (and
//! libtorch_cuda where loadable), as every tch-linking crate of the workspace does.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    supcon_link::emit_libtorch_link_args();
}
