//! `cargo xtask setup`: everything the workspace needs that cargo does not fetch itself.
//!
//! - Debian packages: Fashion-MNIST (the embedded default data set), OpenBLAS
//!   (ndarray-linalg's `openblas-system` backend) and Open MPI with libclang (the `mpi`
//!   feature: data-parallel runs), installed with apt when we can.
//! - libtorch 2.11 for tch 0.24, taken from PyPI's `torch==2.11.0` wheel with
//!   `pip install --target` into a cache folder and linked at `<repo>/.libtorch`, where
//!   `.cargo/config.toml` points `LIBTORCH`. A marker file makes the step idempotent.
//! - NVRTC (`libnvrtc.so.13`, from the `nvidia-cuda-nvrtc` wheel) beside libtorch, so that
//!   machines without a GPU still compile every CUDA kernel in the tests.

use crate::util::{have, project_root, run as sh};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages the workspace needs, with the reason shown when we cannot install them.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    (
        "dataset-fashion-mnist",
        "the default data set (/usr/share/datasets/fashion-mnist)",
    ),
    (
        "libopenblas-dev",
        "BLAS/LAPACK for ndarray-linalg (openblas-system)",
    ),
    (
        "fonts-dejavu-core",
        "the font of the PNG plots written by `supcon`",
    ),
    (
        "openmpi-bin",
        "mpirun, which starts data-parallel runs (`cargo xtask train --ranks R`) and their tests",
    ),
    (
        "libopenmpi-dev",
        "MPI headers and mpicc for the `mpi` crate (the `mpi` feature of supcon-collectives)",
    ),
    (
        "libclang-dev",
        "libclang for bindgen, which the `mpi` crate's build runs",
    ),
];

const TORCH_VERSION: &str = "2.11.0";
/// libtorch_cpu.so links libcudart and libcupti even in the CPU flavour; NVRTC compiles our kernels.
const CPU_WHEELS: &[&str] = &[
    "torch==2.11.0",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cupti==13.0.85",
    "nvidia-cuda-nvrtc==13.0.88",
];
/// The CUDA flavour lets pip resolve torch's own CUDA dependencies (NVRTC among them).
const CUDA_WHEELS: &[&str] = &["torch==2.11.0"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavour {
    Cpu,
    Cuda,
}

/// Where libtorch ended up, and the library folders a test run needs on `LD_LIBRARY_PATH`
/// (NVRTC is loaded with `dlopen` by cudarc, so it needs the search path, not an rpath).
pub struct Provisioned {
    pub libtorch: PathBuf,
    pub library_dirs: Vec<PathBuf>,
}

impl Provisioned {
    /// `LD_LIBRARY_PATH` with our library folders in front of whatever was there.
    pub fn ld_library_path(&self) -> String {
        let mut parts: Vec<String> = self
            .library_dirs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if let Ok(old) = std::env::var("LD_LIBRARY_PATH") {
            if !old.is_empty() {
                parts.push(old);
            }
        }
        parts.join(":")
    }
}

pub fn run(args: &[String]) -> Result<Provisioned> {
    let mut flavour = Flavour::Cpu;
    for arg in args {
        match arg.as_str() {
            "--cuda" => flavour = Flavour::Cuda,
            "--cpu" => flavour = Flavour::Cpu,
            other => {
                bail!("unknown option `{other}` for `cargo xtask setup` (expected --cuda or --cpu)")
            }
        }
    }
    let provisioned = ensure(flavour)?;
    eprintln!("libtorch: {}", provisioned.libtorch.display());
    Ok(provisioned)
}

/// Makes sure every prerequisite is present; cheap when it already is.
pub fn ensure(flavour: Flavour) -> Result<Provisioned> {
    debian_packages()?;
    libtorch(flavour)
}

fn debian_packages() -> Result<()> {
    if !have("dpkg-query") {
        eprintln!(
            "note: not a Debian system; make sure these are installed: {}",
            DEBIAN_PACKAGES
                .iter()
                .map(|(name, why)| format!("{name} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !debian_package_installed(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let Some(prefix) = privilege_prefix() else {
        bail!(
            "missing Debian packages: {}\ninstall them with:\n  sudo apt-get install {}",
            missing.join(", "),
            missing.join(" ")
        );
    };
    eprintln!("installing Debian packages: {}", missing.join(" "));
    let apt = |args: &[&str]| {
        let mut cmd = Command::new(prefix.first().copied().unwrap_or("apt-get"));
        cmd.args(prefix.iter().skip(1))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    sh(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    sh(&mut install).with_context(|| {
        format!(
            "could not install {}; install them by hand: apt-get install {}",
            missing.join(", "),
            missing.join(" ")
        )
    })
}

fn debian_package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The command prefix that runs apt-get with the rights to install: none as root, `sudo -n`
/// where that works without a password, otherwise `None` (we then say what to run).
fn privilege_prefix() -> Option<Vec<&'static str>> {
    if !have("apt-get") {
        return None;
    }
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return Some(vec!["apt-get"]);
    }
    let sudo_ok = Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .map(|s| s.success());
    sudo_ok
        .unwrap_or(false)
        .then(|| vec!["sudo", "-n", "apt-get"])
}

pub(crate) fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SUPCON_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("supcon"));
    }
    let home = std::env::var_os("HOME").context("neither SUPCON_CACHE_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("supcon"))
}

/// The link that `.cargo/config.toml` points `LIBTORCH` at.
fn repo_link() -> PathBuf {
    project_root().join(".libtorch")
}

fn libtorch(flavour: Flavour) -> Result<Provisioned> {
    // cargo's `[env]` hands `LIBTORCH=<repo>/.libtorch` to xtask itself: only a different
    // value is the user's own libtorch, which we then use as it is.
    if let Some(user) = std::env::var_os("LIBTORCH").map(PathBuf::from) {
        if user != repo_link() {
            let lib = user.join("lib");
            if !lib.join("libtorch_cpu.so").exists() {
                bail!("LIBTORCH={} has no lib/libtorch_cpu.so; unset it to let xtask install libtorch", user.display());
            }
            return Ok(Provisioned {
                libtorch: user,
                library_dirs: vec![lib],
            });
        }
    }

    let (suffix, wheels, no_deps) = match flavour {
        Flavour::Cpu => ("cpu", CPU_WHEELS, true),
        Flavour::Cuda => ("cu130", CUDA_WHEELS, false),
    };
    let cache = cache_dir()?;
    let target = cache.join(format!("libtorch-{TORCH_VERSION}-{suffix}"));
    let marker = target.join(".supcon-ready");
    let expected_marker = wheels.join(" ");
    let ready = std::fs::read_to_string(&marker)
        .map(|m| m.trim() == expected_marker)
        .unwrap_or(false);
    if !ready {
        pip_install(&target, wheels, no_deps)?;
        std::fs::write(&marker, &expected_marker)
            .with_context(|| format!("writing {}", marker.display()))?;
    }
    let torch = target.join("torch");
    link(&torch, &repo_link())?;
    let library_dirs = vec![
        torch.join("lib"),
        target.join("nvidia").join("cu13").join("lib"),
    ];
    Ok(Provisioned {
        libtorch: torch,
        library_dirs,
    })
}

/// `pip install --target` into `<target>.partial`, then a rename: an interrupted download
/// never leaves a half-filled folder that looks ready.
fn pip_install(target: &Path, wheels: &[&str], no_deps: bool) -> Result<()> {
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-m", "pip", "--version"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .context(
            "pip is missing: libtorch comes from PyPI's torch wheel.\n\
             install it (Debian: apt-get install python3-pip), or set LIBTORCH to a libtorch 2.11 folder",
        )?;
    let partial = target.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the leftover {}", partial.display()))?;
    }
    if target.exists() {
        std::fs::remove_dir_all(target)
            .with_context(|| format!("removing {}", target.display()))?;
    }
    std::fs::create_dir_all(target.parent().unwrap_or(Path::new(".")))?;
    eprintln!(
        "downloading libtorch {TORCH_VERSION} from PyPI into {} (once; about 1.2 GB for the CPU flavour)",
        target.display()
    );
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--progress-bar",
        "on",
    ])
    .arg("--target")
    .arg(&partial);
    if no_deps {
        cmd.arg("--no-deps");
    }
    cmd.args(wheels);
    sh(&mut cmd).context(
        "pip could not install the torch wheel: is PyPI reachable from this machine? \
         (or set LIBTORCH to a libtorch 2.11 folder)",
    )?;
    std::fs::rename(&partial, target)
        .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))?;
    Ok(())
}

/// Points `link` at `dest`, replacing an older link atomically.
fn link(dest: &Path, link: &Path) -> Result<()> {
    if std::fs::read_link(link)
        .map(|cur| cur == dest)
        .unwrap_or(false)
    {
        return Ok(());
    }
    if link.exists() && std::fs::read_link(link).is_err() {
        bail!(
            "{} exists and is not a link; move it away so xtask can link libtorch there",
            link.display()
        );
    }
    let tmp = link.with_extension("tmp-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(dest, &tmp)
        .with_context(|| format!("linking {} -> {}", tmp.display(), dest.display()))?;
    std::fs::rename(&tmp, link).with_context(|| format!("replacing {}", link.display()))?;
    Ok(())
}
