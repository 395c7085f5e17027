//! `cairn cat …`: prints a repository object as JSON.

use anyhow::{Context, Result};
use cairn_engine::format::snapshot::Snapshot;
use clap::Subcommand;

use super::{open, print_json, snapshot_json};
use crate::Global;

/// `cairn cat` subcommands.
#[derive(Subcommand)]
pub enum CatCommand {
    /// The repository config
    Config,
    /// A snapshot document
    Snapshot {
        /// Snapshot id prefix or `latest`
        id: String,
    },
}

/// `cairn cat …`
pub fn run(g: &Global, c: CatCommand) -> Result<u8> {
    let repo = open(g)?;
    match c {
        CatCommand::Config => print_json(repo.config()),
        CatCommand::Snapshot { id } => {
            let (id, s) = Snapshot::find(&repo, &id).context("cannot read the snapshot")?;
            print_json(&snapshot_json(&id, &s));
        }
    }
    Ok(0)
}
