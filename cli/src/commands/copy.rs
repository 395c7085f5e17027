//! `cairn copy`: copies snapshots into another repository.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use cairn_engine::ops::copy;
use cairn_engine::progress::Progress;
use clap::Args;
use indicatif::HumanBytes;

use super::{FilterArgs, find_snapshots, open, open_target, print_summary};
use crate::Global;
use crate::metrics::{Metrics, MetricsArgs};
use crate::progress::Display;

/// `cairn copy` options.
#[derive(Args)]
pub struct CopyArgs {
    /// Snapshots to copy (id prefixes, or `latest`)
    #[arg(required_unless_present_any = ["all", "hosts", "tags", "paths", "namespaces"])]
    snapshots: Vec<String>,
    /// Copy every snapshot (that the filters select)
    #[arg(long, conflicts_with = "snapshots")]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
    /// The repository to copy into (made with `cairn init --copy-chunker-params-from`)
    #[arg(long, env = "CAIRN_TO_REPOSITORY")]
    to: String,
    /// File whose first line is the target's password [else CAIRN_TO_PASSWORD or a prompt]
    #[arg(long, env = "CAIRN_TO_PASSWORD_FILE")]
    to_password_file: Option<PathBuf>,
    /// Reach an S3 target with this AWS profile's credentials, region and endpoint_url (from
    /// the shared files) instead of the AWS_* environment, which stays the source's
    #[arg(long, env = "CAIRN_TO_AWS_PROFILE")]
    to_aws_profile: Option<String>,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// `cairn copy`
pub fn run(g: &Global, a: CopyArgs) -> Result<u8> {
    let source = open(g)?;
    let target = open_target(g, &a.to, a.to_password_file.as_deref(), a.to_aws_profile)?;
    let target_location = target.location().clone();
    let snapshots = find_snapshots(&source, &a.snapshots, &a.filter)?;
    let progress = Arc::new(Progress::default());
    let display = Display::start(progress.clone(), "copy", "copied", g);
    let started = std::time::Instant::now();
    let report = copy::copy(&source, &target, &snapshots, &progress)?;
    drop(display);
    let mut m = Metrics::new("copy");
    m.gauges(
        &[("target", a.to.as_str())],
        &[
            (
                "copy_last_success_timestamp_seconds",
                "When the last successful copy ended (Unix time).",
                chrono::Utc::now().timestamp() as f64,
            ),
            (
                "copy_duration_seconds",
                "How long the copy took.",
                started.elapsed().as_secs_f64(),
            ),
            (
                "copy_snapshots",
                "Snapshots copied by the run.",
                report.snapshots_copied as f64,
            ),
            (
                "copy_new_bytes",
                "Bytes of new data the run added to the target.",
                report.bytes_copied as f64,
            ),
        ],
    );
    m.publish(&source, &a.metrics)?;
    if g.json {
        print_summary(&report);
    } else {
        println!(
            "copied {} snapshots to {target_location} ({} already there): {} new blobs, {} ({} stored)",
            report.snapshots_copied,
            report.snapshots_present,
            report.blobs_copied,
            HumanBytes(report.bytes_copied),
            HumanBytes(report.stored_bytes)
        );
    }
    Ok(0)
}
