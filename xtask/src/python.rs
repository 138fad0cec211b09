//! Python environments of xtask, in the cache folder of `cargo xtask setup`: one per purpose
//! (`bench-venv` for the benchmarks' PyTorch references, `test-venv` for the Python package
//! `crates/supcon-py`, its tests and its benchmark), each with its pinned wheels, installed
//! once. A marker file that lists the wheels
//! makes the installation happen once (and again when the list changes). Where Python has no
//! `venv` module, `pip install --target` into the same folder and `PYTHONPATH` take its place.
//!
//! PyTorch comes as PyPI's full `torch` wheel with its CUDA libraries (about 4.6 GB), which
//! `import torch` loads even on a machine without a GPU.

use crate::util::run as sh;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter of an environment: a venv's, or the system one with `PYTHONPATH`.
pub(crate) struct PythonEnv {
    program: PathBuf,
    pythonpath: Option<PathBuf>,
}

impl PythonEnv {
    /// A command running this environment's Python, with the environment's scripts first on
    /// `PATH` (pip's build backends run tools such as `maturin` from there).
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        let scripts = match &self.pythonpath {
            Some(site) => {
                cmd.env("PYTHONPATH", site);
                site.join("bin")
            }
            None => self
                .program
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let path = std::env::var_os("PATH").unwrap_or_default();
        let paths = std::iter::once(scripts).chain(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env("PATH", joined);
        }
        cmd
    }

    /// `python -m pip install …` into this environment.
    pub(crate) fn pip_install(&self) -> Command {
        let mut cmd = self.command();
        cmd.args(["-m", "pip", "install", "--disable-pip-version-check"]);
        if let Some(site) = &self.pythonpath {
            // Without --upgrade, --target keeps a package that is already there.
            cmd.arg("--upgrade").arg("--target").arg(site);
        }
        cmd
    }
}

fn system_python() -> Result<&'static str> {
    ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .context("python3 is missing: install it (Debian: apt-get install python3 python3-venv)")
}

fn works(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// The environment `<cache>/<name>` with `wheels` installed (once).
pub(crate) fn environment(name: &str, wheels: &[&str]) -> Result<PythonEnv> {
    let dir = crate::setup::cache_dir()?.join(name);
    let marker = dir.join(".supcon-ready");
    let expected = wheels.join(" ");
    let venv = PythonEnv {
        program: dir.join("bin").join("python"),
        pythonpath: None,
    };
    let target = || -> Result<PythonEnv> {
        Ok(PythonEnv {
            program: PathBuf::from(system_python()?),
            pythonpath: Some(dir.join("site")),
        })
    };
    let ready = std::fs::read_to_string(&marker)
        .map(|m| m.trim() == expected)
        .unwrap_or(false);
    if ready && venv.program.exists() {
        return Ok(venv);
    }
    if ready && dir.join("site").exists() {
        return target();
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    eprintln!(
        "installing {expected} into {} (once; torch is about 4.6 GB)",
        dir.display()
    );
    let env = if works(
        Command::new(system_python()?)
            .args(["-m", "venv"])
            .arg(&dir),
    ) {
        venv
    } else {
        eprintln!("note: python has no working venv module; using pip install --target");
        // A failed venv may leave bin/python behind: it must not pass for the environment.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        target()?
    };
    install(&env, wheels, &dir)?;
    std::fs::write(&marker, &expected).with_context(|| format!("writing {}", marker.display()))?;
    Ok(env)
}

fn install(env: &PythonEnv, wheels: &[&str], dir: &Path) -> Result<()> {
    sh(env.pip_install().arg("--no-cache-dir").args(wheels)).with_context(|| {
        format!(
            "pip could not install {} into {}: is PyPI reachable?",
            wheels.join(" "),
            dir.display()
        )
    })
}

/// What the Python package's tests and benchmark import, in `<cache>/test-venv`: PyTorch (the
/// full wheel: `import torch` loads cuDNN even without a GPU), pytorch-metric-learning (the loss
/// PyTorch users compare with), pytest, and maturin, which builds the package.
pub(crate) const PACKAGE_WHEELS: &[&str] = &[
    "torch==2.11.0",
    "pytorch-metric-learning==2.9.0",
    "pytest==9.2.0",
    "maturin==1.16.0",
    "numpy==2.4.6",
];

/// `crates/supcon-py`, the Python package.
pub(crate) fn package_dir() -> PathBuf {
    crate::util::project_root().join("crates").join("supcon-py")
}

/// The package environment with the package built from the checkout and installed the way
/// its README says (`pip install ./crates/supcon-py`; here with the environment's maturin
/// rather than a fresh download).
pub(crate) fn with_package() -> Result<PythonEnv> {
    let python = environment("test-venv", PACKAGE_WHEELS)?;
    sh(python
        .pip_install()
        .args([
            "--no-deps",
            "--no-build-isolation",
            "--force-reinstall",
            "--quiet",
        ])
        .arg(package_dir()))
    .context("building and installing the Python package (crates/supcon-py)")?;
    Ok(python)
}
