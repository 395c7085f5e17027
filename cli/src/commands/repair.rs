//! `cairn repair index`: rebuilds the index from the pack headers.

use anyhow::Result;
use cairn_engine::ops::repair;
use clap::Subcommand;

use super::{open, print_json};
use crate::Global;

/// `cairn repair` subcommands.
#[derive(Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the pack headers
    Index,
}

/// `cairn repair index`
pub fn run(g: &Global, r: RepairCommand) -> Result<u8> {
    let RepairCommand::Index = r;
    let repo = open(g)?;
    let out = repair::rebuild_index(&repo)?;
    if g.json {
        print_json(&out);
    } else {
        for d in &out.damaged {
            eprintln!("unreadable pack left out of the index (kept): {d}");
        }
        for d in &out.damaged_blobs {
            eprintln!("damaged blob left out of the index: {d}");
        }
        println!(
            "index rebuilt from {} packs ({} blobs); {} old index segments removed; {} damaged packs salvaged ({} damaged blobs left out), {} unreadable packs",
            out.packs,
            out.blobs,
            out.removed_segments,
            out.salvaged_packs,
            out.damaged_blobs.len(),
            out.damaged.len()
        );
        if !out.damaged.is_empty() || !out.damaged_blobs.is_empty() {
            eprintln!(
                "run `cairn check` to see which snapshots and files are affected; back up again to store the lost data anew, or restore the damaged packs from a replica"
            );
        }
    }
    Ok(if out.damaged.is_empty() && out.damaged_blobs.is_empty() {
        0
    } else {
        1
    })
}
