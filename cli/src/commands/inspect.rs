//! `cairn stats`, `cairn diff` and `cairn find`: looking into snapshots without restoring them.

use anyhow::Result;
use cairn_engine::format::snapshot::Snapshot;
use cairn_engine::ops::diff;
use cairn_engine::ops::find::{self, Patterns};
use cairn_engine::ops::stats;
use clap::Args;
use indicatif::HumanBytes;
use serde_json::json;

use super::{FilterArgs, find_snapshots, open, print_json};
use crate::Global;

/// `cairn stats` options.
#[derive(Args)]
pub struct StatsArgs {
    /// Snapshots to count (id prefixes or `latest`) [default: all]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// `cairn diff` options.
#[derive(Args)]
pub struct DiffArgs {
    /// The older snapshot (id prefix)
    old: String,
    /// The newer snapshot (id prefix or `latest`)
    new: String,
}

/// `cairn find` options.
#[derive(Args)]
pub struct FindArgs {
    /// Glob patterns (`*.sql`, `pg_wal/0000*`; with a `/`, matched against the whole path)
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Only look in these snapshots (repeatable) [default: all]
    #[arg(short, long = "snapshot")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// `cairn stats`
pub fn stats(g: &Global, a: StatsArgs) -> Result<u8> {
    let repo = open(g)?;
    let snapshots = find_snapshots(&repo, &a.snapshots, &a.filter)?;
    let s = stats::stats(&repo, &snapshots)?;
    if g.json {
        print_json(&s);
        return Ok(0);
    }
    println!("snapshots:            {}", s.snapshots);
    println!(
        "restore size:         {} in {} files",
        HumanBytes(s.restore_size),
        s.files
    );
    println!(
        "distinct data:        {} in {} blobs (deduplication {:.2}x)",
        HumanBytes(s.raw_size),
        s.blobs,
        s.dedup_ratio
    );
    println!(
        "stored:               {} (compression {:.2}x)",
        HumanBytes(s.stored_size),
        s.compression_ratio
    );
    println!(
        "repository:           {} in {} packs and metadata",
        HumanBytes(s.repository_size),
        s.packs
    );
    Ok(0)
}

/// `cairn diff`
pub fn diff(g: &Global, a: DiffArgs) -> Result<u8> {
    let repo = open(g)?;
    let (old_id, old) = Snapshot::find(&repo, &a.old)?;
    let (new_id, new) = Snapshot::find(&repo, &a.new)?;
    let d = diff::diff(&repo, &old.tree, &new.tree)?;
    if g.json {
        print_json(&json!({"old": old_id, "new": new_id, "diff": d}));
        return Ok(0);
    }
    println!(
        "comparing snapshot {} to {}:",
        old_id.short(),
        new_id.short()
    );
    for c in &d.changes {
        println!("{}    {}", c.change.mark(), c.path);
    }
    println!(
        "added:   {} files, {} dirs, {} others, {}",
        d.added.files,
        d.added.dirs,
        d.added.others,
        HumanBytes(d.added.bytes)
    );
    println!(
        "removed: {} files, {} dirs, {} others, {}",
        d.removed.files,
        d.removed.dirs,
        d.removed.others,
        HumanBytes(d.removed.bytes)
    );
    println!(
        "changed: {} files' contents, {} entries' metadata only",
        d.modified_files, d.metadata_changed
    );
    Ok(0)
}

/// `cairn find`
pub fn find(g: &Global, a: FindArgs) -> Result<u8> {
    let repo = open(g)?;
    let patterns = Patterns::new(&a.patterns)?;
    let snapshots = find_snapshots(&repo, &a.snapshots, &a.filter)?;
    let found = find::find(&repo, &snapshots, &patterns)?;
    if g.json {
        print_json(&found);
    } else {
        let mut last = None;
        for f in &found {
            if last != Some(f.snapshot) {
                let time = f.time.with_timezone(&chrono::Local);
                println!(
                    "snapshot {} ({}):",
                    f.snapshot.short(),
                    time.format("%Y-%m-%d %H:%M:%S")
                );
                last = Some(f.snapshot);
            }
            println!("  {:>12}  {}", f.size, f.path);
        }
        println!("{} matches in {} snapshots", found.len(), snapshots.len());
    }
    Ok(0)
}
