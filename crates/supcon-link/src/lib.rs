//! For the build scripts of every crate whose binaries, tests or examples link tch: call
//! [`emit_libtorch_link_args`] from `build.rs` (with `supcon-link` as a build-dependency).
//!
//! Why: torch-sys adds `-L <libtorch>/lib` but no rpath, so binaries only start with
//! `LD_LIBRARY_PATH` set; and rustc links with `--as-needed`, which drops libtorch_cuda.so
//! because no symbol of ours refers to it. libtorch then silently runs on the CPU only
//! (tch-rs issue #907). We add the rpath and force libtorch_cuda in when it can be loaded.
//!
//! The calling crate needs torch-sys as a *direct* dependency: cargo hands
//! `DEP_TCH_LIBTORCH_LIB` (torch-sys has `links = "tch"` and prints `cargo:libtorch_lib=...`)
//! only to those.

#![warn(missing_docs)]

/// Prints the `cargo:rustc-link-arg` lines; does nothing when torch-sys gave no lib folder.
pub fn emit_libtorch_link_args() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=SUPCON_LINK_TORCH_CUDA");
    let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB is not set: is torch-sys a direct dependency? No rpath added.");
        return;
    };
    let lib_dir = std::path::PathBuf::from(lib_dir);
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" && target_os != "macos" {
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if target_os == "linux" && torch_cuda_loadable(&lib_dir) {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// Whether libtorch_cuda.so is present *and* its CUDA libraries are there to load it.
///
/// The PyPI wheel always ships libtorch_cuda.so; our CPU flavour installs it without cuBLAS
/// and cuDNN, and forcing it into DT_NEEDED there would stop every binary from starting.
/// `SUPCON_LINK_TORCH_CUDA=0|1` overrides the guess.
pub fn torch_cuda_loadable(lib_dir: &std::path::Path) -> bool {
    if let Ok(forced) = std::env::var("SUPCON_LINK_TORCH_CUDA") {
        return forced == "1";
    }
    if !lib_dir.join("libtorch_cuda.so").exists() {
        return false;
    }
    // Where libtorch_cuda.so looks for its dependencies: its own folder (the libtorch zip
    // bundles them), the wheel's `nvidia/*/lib` folders (its RPATH), the system's CUDA.
    // Resolve links first: `.libtorch` points into the wheel's site folder.
    let lib_dir = std::fs::canonicalize(lib_dir).unwrap_or_else(|_| lib_dir.to_path_buf());
    let mut dirs = vec![lib_dir.clone()];
    if let Some(site) = lib_dir.parent().and_then(|torch| torch.parent()) {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            dirs.extend(entries.flatten().map(|e| e.path().join("lib")));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/lib/x86_64-linux-gnu".into());
    let has = |prefix: &str| {
        dirs.iter().any(|dir| {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
                })
                .unwrap_or(false)
        })
    };
    has("libcublas") && has("libcudnn")
}
