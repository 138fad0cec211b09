//! `cargo xtask train`: the README's first command.

use anyhow::{bail, Result};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("`cargo xtask train` arrives with the supcon-train crate (issue 5)")
}
