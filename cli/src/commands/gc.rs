//! `cairn gc`: garbage collection, also run by `cairn forget --prune`.

use std::sync::Arc;

use anyhow::Result;
use cairn_engine::ops::gc::{self, GcOptions, GcReport};
use cairn_engine::progress::Progress;
use cairn_engine::repository::Repository;
use clap::Args;
use indicatif::HumanBytes;

use super::{open, parse_percent, print_summary};
use crate::Global;
use crate::metrics::{Metrics, MetricsArgs};
use crate::progress::Display;

/// `cairn gc` options.
#[derive(Args)]
pub struct GcArgs {
    /// How long packs stay marked before they are deleted; must be longer than any backup takes
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    safety_interval: std::time::Duration,
    /// Repack packs whose live share is below this percentage
    #[arg(long, default_value = "30%", value_parser = parse_percent)]
    repack_below: f64,
    /// With object lock: extend the locks of needed objects that end within this long
    /// [default: half the repository's lock days]
    #[arg(long, value_parser = humantime::parse_duration)]
    extend_locks_within: Option<std::time::Duration>,
    /// With object lock: do not extend any lock
    #[arg(long, conflicts_with = "extend_locks_within")]
    no_extend_locks: bool,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// With object lock: how soon a lock must end to be extended (`None`: extend none).
pub(super) fn extend_locks_within(repo: &Repository, a: &GcArgs) -> Option<chrono::Duration> {
    match (a.no_extend_locks, a.extend_locks_within) {
        (true, _) => None,
        (false, Some(d)) => Some(chrono::Duration::seconds(d.as_secs() as i64)),
        (false, None) => repo.config().object_lock.map(|l| l.extend_within()),
    }
}

/// Runs gc with progress shown as `g` asks, and publishes its metrics.
pub(super) fn run_gc(g: &Global, repo: &Repository, a: &GcArgs) -> Result<GcReport> {
    let options = GcOptions {
        safety: chrono::Duration::seconds(a.safety_interval.as_secs() as i64),
        repack_below: a.repack_below,
        extend_locks_within: extend_locks_within(repo, a),
        ..GcOptions::default()
    };
    let progress = Arc::new(Progress::default());
    let display = Display::start(progress.clone(), "gc", "gc read", g);
    let started = std::time::Instant::now();
    let report = gc::run(repo, options, &progress)?;
    drop(display);
    let mut m = Metrics::new("gc");
    m.gauges(
        &[],
        &[
            (
                "gc_last_success_timestamp_seconds",
                "When the last successful gc ended (Unix time).",
                chrono::Utc::now().timestamp() as f64,
            ),
            (
                "gc_duration_seconds",
                "How long gc took.",
                started.elapsed().as_secs_f64(),
            ),
            (
                "gc_freed_bytes",
                "Bytes gc deleted.",
                report.bytes_freed as f64,
            ),
            (
                "gc_marked_bytes",
                "Bytes gc marked for deletion after the safety interval.",
                report.bytes_marked as f64,
            ),
            (
                "gc_locked_bytes",
                "Bytes gc could not delete yet because of their object lock.",
                report.bytes_locked as f64,
            ),
        ],
    );
    m.publish(repo, &a.metrics)?;
    Ok(report)
}

pub(super) fn print_gc(r: &GcReport) {
    println!(
        "gc: {} snapshots keep {} blobs; freed {} in {} packs; marked {} in {} packs ({} repacked) for deletion after the safety interval; {} still-needed packs kept; {} marks pending; {} objects ({}) still under object lock, kept until it passes; {} locks extended",
        r.snapshots,
        r.live_blobs,
        HumanBytes(r.bytes_freed),
        r.packs_deleted,
        HumanBytes(r.bytes_marked),
        r.packs_marked,
        r.packs_repacked,
        r.packs_resurrected,
        r.marks_pending,
        r.objects_locked,
        HumanBytes(r.bytes_locked),
        r.locks_extended
    );
    if r.marks_waiting_for_writers > 0 {
        println!(
            "gc: {} due marks wait for the {} backups or copies running since before them; a later gc sweeps them",
            r.marks_waiting_for_writers, r.writers_running
        );
    }
    if r.uploads_aborted > 0 {
        println!(
            "gc: {} multipart uploads left open by stopped backups or copies aborted",
            r.uploads_aborted
        );
    }
    if r.packs_adopted > 0 {
        println!(
            "gc: {} packs in no index hold data snapshots need: indexed again and kept",
            r.packs_adopted
        );
    }
    if r.packs_unreadable > 0 || r.packs_missing > 0 {
        eprintln!(
            "gc: {} packs in no index cannot be read (kept) and {} indexed packs are missing: run `cairn check --read-data` to see what they affect",
            r.packs_unreadable, r.packs_missing
        );
    }
}

/// `cairn gc`
pub fn run(g: &Global, a: &GcArgs) -> Result<u8> {
    let repo = open(g)?;
    let report = run_gc(g, &repo, a)?;
    if g.json {
        print_summary(&report);
    } else {
        print_gc(&report);
    }
    Ok(0)
}
