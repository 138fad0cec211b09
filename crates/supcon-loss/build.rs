//! With the `tch` feature, tests and examples link libtorch: give them its rpath (and
//! libtorch_cuda where loadable), exactly as supcon-models does.
include!("../supcon-models/build_support/libtorch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../supcon-models/build_support/libtorch_link.rs");
    if std::env::var_os("CARGO_FEATURE_TCH").is_some() {
        emit_libtorch_link_args();
    }
}
