//! `cairn check`: verifies the repository and stores a record of the check.

use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_engine::ops::check::{self, CheckRecord, DataSubset};
use cairn_engine::progress::Progress;
use cairn_engine::repository::records;
use clap::Args;
use serde_json::json;

use super::{open, print_summary};
use crate::Global;
use crate::metrics::{Metrics, MetricsArgs};
use crate::progress::Display;

/// `cairn check` options.
#[derive(Args)]
pub struct CheckArgs {
    /// Also read every pack and verify every blob
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read only part of the data: a percentage (`5%`) or a part (`2/7`, for rotating checks)
    #[arg(long, value_parser = parse_subset)]
    read_data_subset: Option<DataSubset>,
    /// Do not store a record of this check in the repository (checks/), e.g. when its
    /// credentials are read-only; `cairn report` then cannot cite it
    #[arg(long)]
    no_record: bool,
    #[command(flatten)]
    metrics: MetricsArgs,
}

fn parse_subset(s: &str) -> Result<DataSubset, String> {
    let bad = || format!("{s:?} is neither a percentage like 5% nor a part like 2/7");
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        return (p > 0.0 && p <= 100.0)
            .then_some(DataSubset::Percent(p))
            .ok_or_else(bad);
    }
    let (n, t) = s.split_once('/').ok_or_else(bad)?;
    let (n, t): (u32, u32) = (
        n.trim().parse().map_err(|_| bad())?,
        t.trim().parse().map_err(|_| bad())?,
    );
    (n >= 1 && n <= t && t <= 256)
        .then_some(DataSubset::Part(n, t))
        .ok_or_else(bad)
}

/// `cairn check`
pub fn run(g: &Global, a: CheckArgs) -> Result<u8> {
    let repo = open(g)?;
    let subset = match (a.read_data, a.read_data_subset) {
        (true, _) => DataSubset::All,
        (false, Some(s)) => s,
        (false, None) => DataSubset::None,
    };
    let progress = Arc::new(Progress::default());
    let display = Display::start(progress.clone(), "check", "checked", g);
    let started = chrono::Utc::now();
    let report = check::check(&repo, subset, &progress)?;
    drop(display);
    let record = CheckRecord::new(started, subset, report);
    let record_id = match a.no_record {
        true => None,
        false => Some(records::save(&repo, &record).context(
            "the check ran, but its record could not be stored; give the repository write access or use --no-record",
        )?),
    };
    let report = record.report;
    let mut m = Metrics::new("check");
    let started_at = started.timestamp() as f64;
    if report.problems.is_empty() {
        m.gauge(
            "check_last_success_timestamp_seconds",
            "When the last check that found no problem started (Unix time).",
            &[],
            started_at,
        );
    }
    m.gauges(
        &[],
        &[
            (
                "check_last_run_timestamp_seconds",
                "When the last check started (Unix time).",
                started_at,
            ),
            (
                "check_duration_seconds",
                "How long the check took.",
                record.seconds,
            ),
            (
                "check_problems",
                "Damaged or missing objects the check found.",
                report.problems.len() as f64,
            ),
            (
                "check_packs_read",
                "Packs read whole and verified.",
                report.packs_read as f64,
            ),
        ],
    );
    m.publish(&repo, &a.metrics)?;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        v["record_id"] = json!(record_id);
        print_summary(&v);
    } else {
        println!(
            "checked {} snapshots, {} trees, {} index segments, {} packs ({} read whole)",
            report.snapshots, report.trees, report.index_segments, report.packs, report.packs_read
        );
        if report.unindexed_packs > 0 {
            println!(
                "{} packs are in no index (left by interrupted backups; harmless, they only take space)",
                report.unindexed_packs
            );
        }
        for p in &report.problems {
            println!("DAMAGED {}: {}", p.object, p.reason);
            for s in &p.snapshots {
                println!("  affects snapshot {}", &s[..8]);
            }
            for path in &p.paths {
                println!("    {path}");
            }
            if p.path_count > p.paths.len() as u64 {
                println!(
                    "    … and {} more paths",
                    p.path_count - p.paths.len() as u64
                );
            }
        }
    }
    if report.problems.is_empty() {
        if !g.json {
            println!("no problems found");
        }
        return Ok(0);
    }
    eprintln!(
        "{} problems found: restore what is affected from a replica, or run `cairn repair index` if only the index is damaged",
        report.problems.len()
    );
    Ok(1)
}
