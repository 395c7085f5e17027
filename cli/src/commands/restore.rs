//! `cairn restore`: restores a snapshot, or part of it, into a folder.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use cairn_engine::format::snapshot::Snapshot;
use cairn_engine::format::tree::{self};
use cairn_engine::ops::restore::{self, Overwrite, RestoreOptions};
use cairn_engine::progress::Progress;
use clap::Args;
use indicatif::HumanBytes;
use serde_json::json;

use super::{open, print_summary};
use crate::progress::Display;
use crate::{EXIT_PARTIAL, Global};

/// `cairn restore` options.
#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot id prefix or `latest`
    snapshot: String,
    /// Folder to restore into
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only this path of the snapshot (repeatable)
    #[arg(short, long)]
    include: Vec<String>,
    /// What to do with files that exist already: never (skip them), if-changed (keep those
    /// that hold the snapshot's contents, rewrite the others), always; `--overwrite` alone
    /// means always
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        num_args = 0..=1,
        default_value = "never",
        default_missing_value = "always"
    )]
    overwrite: OverwriteArg,
    /// Return without waiting until the restored data is on disk (faster; for scratch
    /// restores that a crash may lose)
    #[arg(long)]
    no_flush: bool,
}

/// `cairn restore --overwrite` values.
#[derive(clap::ValueEnum, Clone, Copy)]
enum OverwriteArg {
    Never,
    IfChanged,
    Always,
}

impl From<OverwriteArg> for Overwrite {
    fn from(a: OverwriteArg) -> Overwrite {
        match a {
            OverwriteArg::Never => Overwrite::Never,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Always => Overwrite::Always,
        }
    }
}

/// `cairn restore`
pub fn run(g: &Global, a: RestoreArgs) -> Result<u8> {
    let repo = open(g)?;
    let (id, snap) = Snapshot::find(&repo, &a.snapshot)?;
    let options = RestoreOptions {
        target: a.target.clone(),
        includes: a
            .include
            .iter()
            .map(|i| tree::parse_snapshot_path(i.as_bytes()))
            .collect(),
        overwrite: a.overwrite.into(),
        chown: nix::unistd::geteuid().is_root(),
        no_flush: a.no_flush,
    };
    let progress = Arc::new(Progress::default());
    if options.includes.is_empty() {
        let s = &snap.summary;
        progress.set_totals(s.files + s.dirs + s.others, s.bytes);
    }
    let display = Display::start(progress.clone(), "restore", "restored", g);
    let out = restore::restore(&repo, &snap, &options, &progress)?;
    drop(display);
    if g.json {
        print_summary(&json!({"snapshot_id": id, "target": a.target, "outcome": out}));
    } else {
        for s in &out.skipped {
            eprintln!("skipped (already exists): {s}");
        }
        for e in &out.errors {
            eprintln!("error: {e}");
        }
        if !out.skipped.is_empty() {
            eprintln!(
                "entries that exist already were left alone; `--overwrite if-changed` rewrites the files among them that differ from the snapshot (run it that way after a machine crash during a restore)"
            );
        }
        println!(
            "restored snapshot {} to {}: {} files, {} dirs, {} others, {}; {} unchanged, {} skipped, {} left-overs of an interrupted restore removed, {} errors",
            id.short(),
            a.target.display(),
            out.files,
            out.dirs,
            out.others,
            HumanBytes(out.bytes),
            out.unchanged,
            out.skipped.len(),
            out.leftovers_removed,
            out.errors.len()
        );
    }
    Ok(if out.errors.is_empty() {
        0
    } else {
        EXIT_PARTIAL
    })
}
