//! `cairn forget`: removes the snapshots that a retention policy no longer keeps.

use anyhow::Result;
use cairn_engine::Id;
use cairn_engine::ops::forget::{self, ForgetOptions, ForgetOutcome, GroupBy, Policy};
use cairn_engine::repository::store::ObjectKind;
use clap::Args;
use serde_json::json;

use super::gc::{GcArgs, extend_locks_within, print_gc, run_gc};
use super::{FilterArgs, open, print_json};
use crate::Global;

/// `cairn forget` options. Without any --keep option the repository's default retention
/// (`init --keep-within`, 720h unless set) applies.
#[derive(Args)]
pub struct ForgetArgs {
    /// Keep the newest N snapshots
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N weeks
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this span before the newest of its group (e.g. 720h)
    #[arg(long, value_parser = humantime::parse_duration)]
    keep_within: Option<std::time::Duration>,
    /// Group snapshots by these fields (comma-separated: host, paths, tags; empty for one group)
    /// [default: host,paths]
    #[arg(long)]
    group_by: Option<String>,
    /// Only show what would be removed and why the rest is kept
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
    /// Run garbage collection afterwards
    #[arg(long, conflicts_with = "dry_run")]
    prune: bool,
    #[command(flatten)]
    gc: GcArgs,
}

/// `cairn forget`
pub fn run(g: &Global, a: ForgetArgs) -> Result<u8> {
    let repo = open(g)?;
    let hours = |d: std::time::Duration| chrono::Duration::seconds(d.as_secs() as i64);
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within.map(hours),
    };
    let group_by = match &a.group_by {
        Some(spec) => spec.parse().map_err(anyhow::Error::msg)?,
        None => GroupBy::default(),
    };
    let options = ForgetOptions {
        policy,
        group_by,
        filter: a.filter.filter()?,
        extend_locks_within: extend_locks_within(&repo, &a.gc),
        dry_run: a.dry_run,
    };
    let ForgetOutcome {
        store_now,
        decisions,
        extensions,
        future,
        removed,
        locked,
    } = forget::forget(&repo, &options)?;
    let gc_report = if a.prune {
        Some(run_gc(g, &repo, &a.gc)?)
    } else {
        None
    };
    if g.json {
        print_json(
            &json!({"dry_run": a.dry_run, "removed": removed, "locked": locked, "ignored_future": future, "store_time": store_now, "decisions": decisions, "lock_extensions": extensions, "gc": gc_report}),
        );
        return Ok(0);
    }
    let mut group = None;
    for d in &decisions {
        if group != Some(&d.group) {
            println!(
                "{}:",
                if d.group.is_empty() {
                    "all snapshots"
                } else {
                    &d.group
                }
            );
            group = Some(&d.group);
        }
        let time = d
            .time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S");
        let snapshot = ObjectKind::Snapshot.path(&d.id).to_string();
        let lock = match extensions.iter().find(|e| e.object == snapshot) {
            Some(e) => format!(
                "; lock {} to {}",
                if a.dry_run {
                    "would be extended"
                } else {
                    "extended"
                },
                cairn_engine::repository::clock::when(e.until)
            ),
            None => String::new(),
        };
        let verdict = match (d.keep, a.dry_run) {
            (true, _) => format!("keep ({}){lock}", d.reasons.join(", ")),
            (false, true) => "would remove".to_owned(),
            (false, false) if locked.contains(&d.id) => {
                "kept for now: its object lock has not passed (a later forget removes it)"
                    .to_owned()
            }
            (false, false) => "removed".to_owned(),
        };
        println!("  {}  {time}  {verdict}", d.id.short());
    }
    if !future.is_empty() {
        let ids: Vec<String> = future.iter().map(Id::short).collect();
        println!(
            "ignored {} snapshots dated in the future of the repository's clock ({}): {}; kept, and not counted by the policy (check the clock or --time of the backups that made them)",
            future.len(),
            cairn_engine::repository::clock::when(store_now),
            ids.join(", ")
        );
    }
    if !extensions.is_empty() {
        let snapshots = extensions
            .iter()
            .filter(|e| e.object.starts_with(ObjectKind::Snapshot.dir()))
            .count();
        let packs = extensions
            .iter()
            .filter(|e| e.object.starts_with(ObjectKind::Pack.dir()))
            .count();
        println!(
            "{} the object locks of {} objects ({snapshots} snapshots, {packs} packs, {} config and keys) so that kept snapshots stay locked as long as the policy keeps them (--json lists them)",
            if a.dry_run {
                "would extend"
            } else {
                "extended"
            },
            extensions.len(),
            extensions.len() - snapshots - packs
        );
    }
    let gone = decisions.iter().filter(|d| !d.keep).count();
    match a.dry_run {
        true => println!("{gone} snapshots would be removed (dry run)"),
        false if gc_report.is_none() => {
            println!("{removed} snapshots removed; their data stays until `cairn gc`")
        }
        false => println!("{removed} snapshots removed"),
    }
    if let Some(r) = &gc_report {
        print_gc(r);
    }
    Ok(0)
}
