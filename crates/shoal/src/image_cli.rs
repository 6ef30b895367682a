//! `shoal image load|import|pull|ls|rm` (being written with the oci driver).

use anyhow::{bail, Result};

#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// List the images in this node's store.
    Ls,
}

pub fn run(_data_dir: &std::path::Path, _cmd: ImageCmd) -> Result<()> {
    bail!("the image store is not built yet")
}
