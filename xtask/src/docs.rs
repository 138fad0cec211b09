//! `cargo xtask docs`: the mdBook in `docs/` and the rustdoc of every crate.

use crate::setup::{self, Flavour};
use crate::util::{cargo, have, project_root, run as sh};
use anyhow::Result;
use std::process::Command;

pub fn run(_args: &[String]) -> Result<()> {
    if !have("mdbook") {
        eprintln!("mdbook is missing: installing it with cargo (once)");
        sh(cargo().args(["install", "mdbook", "--locked", "--version", "^0.4"]))?;
    }
    sh(Command::new("mdbook")
        .arg("build")
        .arg(project_root().join("docs")))?;
    // rustdoc runs the tch build script, so libtorch has to be there.
    let env = setup::ensure(Flavour::Cpu)?;
    sh(cargo()
        .args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("LD_LIBRARY_PATH", env.ld_library_path()))?;
    eprintln!("book: docs/book/index.html; rustdoc: target/doc/supcon_loss/index.html");
    Ok(())
}
