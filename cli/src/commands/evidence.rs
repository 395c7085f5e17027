//! `cairn drill` (restore tests kept as records) and `cairn report` (the audit report).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_engine::evidence::audit::{self, AuditOptions, AuditReport, Status};
use cairn_engine::ops::drill::{self, DrillOptions};
use cairn_engine::progress::Progress;
use clap::Args;
use indicatif::HumanBytes;

use super::{
    FilterArgs, find_snapshots, open, open_target, parse_percent, print_json, print_summary,
};
use crate::metrics::{Metrics, MetricsArgs};
use crate::progress::Display;
use crate::{Global, report_html};

/// `cairn drill` options.
#[derive(Args)]
pub struct DrillArgs {
    /// Snapshots to drill (id prefixes or `latest`) [default: the newest of each namespace and
    /// content, or of each host and path set]
    snapshots: Vec<String>,
    /// Share of each snapshot's files to restore (Kubernetes resources are always restored
    /// whole; at least one file of each snapshot is)
    #[arg(long, default_value = "10%", value_parser = parse_percent, env = "CAIRN_DRILL_SHARE")]
    share: f64,
    /// Folder to restore into (a new subfolder per snapshot, removed afterwards)
    /// [default: the system's temporary folder]
    #[arg(long, env = "CAIRN_DRILL_SCRATCH")]
    scratch: Option<PathBuf>,
    /// Leave the restored files in the scratch folder
    #[arg(long)]
    keep_files: bool,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// `cairn drill`
pub fn drill(g: &Global, a: DrillArgs) -> Result<u8> {
    let repo = open(g)?;
    let all = find_snapshots(&repo, &a.snapshots, &a.filter)?;
    let chosen = if a.snapshots.is_empty() {
        drill::latest_of_each(all)
    } else {
        all
    };
    anyhow::ensure!(
        !chosen.is_empty(),
        "the repository has no snapshots to drill: back something up first"
    );
    let options = DrillOptions {
        scratch: a.scratch.unwrap_or_else(std::env::temp_dir),
        file_share: a.share.max(f64::MIN_POSITIVE),
        keep_files: a.keep_files,
    };
    let progress = Arc::new(Progress::default());
    let display = Display::start(progress.clone(), "drill", "verified", g);
    let (id, record) = drill::run(&repo, &chosen, &options, &progress)?;
    drop(display);

    let mut m = Metrics::new("drill");
    let time = record.time.timestamp() as f64;
    let problems: usize = record.snapshots.iter().map(|s| s.problems.len()).sum();
    let bytes: u64 = record.snapshots.iter().map(|s| s.bytes_verified).sum();
    if record.passed {
        m.gauge(
            "drill_last_success_timestamp_seconds",
            "When the last restore drill that found everything intact started (Unix time).",
            &[],
            time,
        );
    }
    m.gauges(
        &[],
        &[
            (
                "drill_last_run_timestamp_seconds",
                "When the last restore drill started (Unix time).",
                time,
            ),
            (
                "drill_duration_seconds",
                "How long the drill took.",
                record.seconds,
            ),
            (
                "drill_snapshots",
                "Snapshots the drill restored.",
                record.snapshots.len() as f64,
            ),
            (
                "drill_bytes_verified",
                "Restored bytes read back and verified.",
                bytes as f64,
            ),
            (
                "drill_problems",
                "Problems the drill found.",
                problems as f64,
            ),
        ],
    );
    m.publish(&repo, &a.metrics)?;

    if g.json {
        print_summary(&serde_json::json!({"record_id": id, "record": record}));
    } else {
        for s in &record.snapshots {
            println!(
                "{} snapshot {} {} {}: {} of {} files restored, {} verified, {} manifests, {:.1} s",
                if s.problems.is_empty() {
                    "ok    "
                } else {
                    "FAILED"
                },
                s.id.short(),
                s.host,
                s.paths.join(" "),
                s.files_restored,
                s.files,
                HumanBytes(s.bytes_verified),
                s.manifests_checked,
                s.seconds
            );
            for p in &s.problems {
                println!("    {p}");
            }
        }
        println!(
            "drill {} in {:.1} s; record drills/{} stored",
            if record.passed { "passed" } else { "FAILED" },
            record.seconds,
            id.short()
        );
    }
    if record.passed {
        return Ok(0);
    }
    eprintln!(
        "the drill found {problems} problems: run `cairn check --read-data` to find what is damaged, and restore it from the off-site replica"
    );
    Ok(1)
}

/// How `cairn report` writes the report.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// For reading at a terminal.
    Text,
    /// Machine-readable (also with --json).
    Json,
    /// One self-contained HTML page, for auditors.
    Html,
}

/// `cairn report` options.
#[derive(Args)]
pub struct ReportArgs {
    /// Output format [default: json with --json, else text]
    #[arg(long)]
    format: Option<ReportFormat>,
    /// Write to this file instead of standard output
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The off-site replica that `cairn copy` fills, to report how far behind it is
    #[arg(long, env = "CAIRN_TO_REPOSITORY")]
    replica: Option<String>,
    /// File whose first line is the replica's password [else CAIRN_TO_PASSWORD or a prompt]
    #[arg(long, env = "CAIRN_TO_PASSWORD_FILE", requires = "replica")]
    replica_password_file: Option<PathBuf>,
    /// Reach an S3 replica with this AWS profile (as `cairn copy --to-aws-profile`)
    #[arg(long, env = "CAIRN_TO_AWS_PROFILE", requires = "replica")]
    replica_aws_profile: Option<String>,
    /// A group with no snapshot younger than this is reported as not backed up daily
    #[arg(long, default_value = "26h", value_parser = humantime::parse_duration)]
    backup_max_age: std::time::Duration,
    /// A check or drill older than this does not count as regular testing
    #[arg(long, default_value = "8days", value_parser = humantime::parse_duration)]
    evidence_max_age: std::time::Duration,
    #[command(flatten)]
    filter: FilterArgs,
}

/// `cairn report`
pub fn report(g: &Global, a: ReportArgs) -> Result<u8> {
    let repo = open(g)?;
    let replica = a
        .replica
        .as_deref()
        .map(|r| {
            open_target(
                g,
                r,
                a.replica_password_file.as_deref(),
                a.replica_aws_profile.clone(),
            )
        })
        .transpose()
        .context("cannot open the replica: check --replica and its password")?;
    let span = |d: std::time::Duration| chrono::Duration::seconds(d.as_secs() as i64);
    let options = AuditOptions {
        backup_max_age: span(a.backup_max_age),
        evidence_max_age: span(a.evidence_max_age),
        filter: a.filter.filter()?,
        ..AuditOptions::default()
    };
    let report = audit::report(&repo, replica.as_ref(), &options)?;
    let format = a.format.unwrap_or(match g.json {
        true => ReportFormat::Json,
        false => ReportFormat::Text,
    });
    let text = match format {
        ReportFormat::Json => serde_json::to_string(&report)? + "\n",
        ReportFormat::Html => report_html::render(&report),
        ReportFormat::Text => render_text(&report),
    };
    match &a.output {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}: check --output", path.display()))?;
            if g.json {
                print_json(&serde_json::json!({"written": path}));
            }
        }
        None => print!("{text}"),
    }
    Ok(0)
}

/// The report for a terminal.
fn render_text(r: &AuditReport) -> String {
    let mut out = format!(
        "Cairn backup report, {}\nrepository {} ({}), format version {}, retention {} h\n\n",
        r.generated.format("%Y-%m-%d %H:%M UTC"),
        r.repository.location,
        r.repository.id.short(),
        r.repository.format_version,
        r.repository.retention_hours
    );
    for p in &r.protections {
        let mark = match p.status {
            Status::Met => "met    ",
            Status::NotMet => "NOT MET",
            Status::Unknown => "unknown",
        };
        out += &format!(
            "[{mark}] {}\n          {}\n          proof: {}\n",
            p.promise, p.how, p.proof
        );
    }
    out += "\nsnapshots:\n";
    for grp in &r.groups {
        let newest = grp.snapshots.last().expect("groups are not empty");
        let replica = grp
            .replica
            .as_ref()
            .map_or(String::new(), |s| match s.lag_hours {
                Some(h) => format!(", replica {h:.1} h behind ({} not copied)", s.not_copied),
                None => ", replica has no copy".into(),
            });
        out += &format!(
            "  {:<40} {:>3} snapshots, newest {} ({:.1} h ago), oldest expires {}{replica}\n",
            grp.label,
            grp.snapshots.len(),
            newest.id.short(),
            grp.newest_age_hours,
            grp.snapshots[0].expires.format("%Y-%m-%d %H:%M UTC")
        );
        for snap in grp
            .snapshots
            .iter()
            .filter(|s| s.lock_covers_retention.is_some())
        {
            out += &format!(
                "    {}  taken {}, locked until {}, lock covers retention: {}\n",
                snap.id.short(),
                snap.time.format("%Y-%m-%d %H:%M UTC"),
                snap.locked_until
                    .map_or("—".into(), |u| u.format("%Y-%m-%d %H:%M UTC").to_string()),
                report_html::lock_covers(snap)
            );
        }
    }
    out += &format!(
        "\n{} check records, {} drill records in the repository\n",
        r.checks, r.drills
    );
    out
}
