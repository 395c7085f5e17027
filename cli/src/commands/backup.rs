//! `cairn backup`: backs up files and folders, standard input or a command's output into a
//! new snapshot.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_engine::format::snapshot::Snapshot;
use cairn_engine::format::tree::{self};
use cairn_engine::ops::backup::{self, BackupOptions, Parent};
use cairn_engine::progress::Progress;
use clap::Args;
use indicatif::HumanBytes;
use serde_json::json;

use super::{open, print_summary};
use crate::excludes::ExcludeArgs;
use crate::metrics::{Metrics, MetricsArgs};
use crate::progress::Display;
use crate::{EXIT_PARTIAL, Global};

/// `cairn backup` options.
#[derive(Args)]
pub struct BackupArgs {
    /// Files and folders to back up (with --stdin-from-command: the command and its arguments,
    /// after --)
    #[arg(required_unless_present = "stdin")]
    paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable, or a comma-separated list as restic takes it)
    #[arg(long, value_delimiter = ',')]
    tag: Vec<String>,
    /// Host name to record [default: this machine's]
    #[arg(long)]
    host: Option<String>,
    /// Compare with this snapshot instead of the newest one with the same host and paths
    #[arg(long, conflicts_with = "force")]
    parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    force: bool,
    /// Record this time instead of now (RFC 3339, e.g. 2026-01-31T02:00:00Z); refused if more
    /// than 5 minutes ahead of the repository's clock unless --allow-future-time is given
    #[arg(long)]
    time: Option<chrono::DateTime<chrono::Utc>>,
    /// Record --time even if it is ahead of the repository's clock (such a snapshot is the
    /// newest of its group until then; `forget` leaves it out of its policy)
    #[arg(long, requires = "time")]
    allow_future_time: bool,
    /// Back up standard input, as one file at the snapshot's root (--stdin-filename)
    #[arg(long, group = "stdin_input", conflicts_with_all = ["paths", "stdin_from_command"])]
    stdin: bool,
    /// Back up what a command prints (the command and its arguments follow --), as one file; a
    /// command that fails (non-zero exit) fails the backup, and no snapshot is saved
    #[arg(long, group = "stdin_input")]
    stdin_from_command: bool,
    /// Name of the file --stdin or --stdin-from-command stores
    #[arg(long, default_value = "stdin", value_parser = parse_file_name, requires = "stdin_input")]
    stdin_filename: String,
    #[command(flatten)]
    excludes: ExcludeArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// A name for a file at a snapshot's root: no `/`, not `.` or `..`, not empty.
fn parse_file_name(s: &str) -> Result<String, String> {
    tree::is_safe_name(s.as_bytes())
        .then(|| s.to_owned())
        .ok_or_else(|| format!("{s:?} is not a file name (no '/', not '.' or '..')"))
}

/// The output of a command being backed up: at its end, the command's exit status, an error
/// if it failed (so that the backup fails before any snapshot is saved).
struct CommandOutput {
    command: String,
    child: std::process::Child,
    stdout: std::process::ChildStdout,
}

impl std::io::Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!(
                    "the command {:?} failed ({status}); no snapshot was saved",
                    self.command
                )));
            }
        }
        Ok(n)
    }
}

/// The stream `--stdin` or `--stdin-from-command` backs up.
fn stdin_source(a: &BackupArgs) -> Result<backup::StreamReader> {
    if !a.stdin_from_command {
        return Ok(backup::StreamReader::new(std::io::stdin()));
    }
    let (program, args) = a
        .paths
        .split_first()
        .expect("clap requires paths without --stdin");
    let command = a
        .paths
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok(backup::StreamReader::new(CommandOutput {
        command,
        child,
        stdout,
    }))
}

/// `cairn backup`
pub fn run(g: &Global, a: BackupArgs) -> Result<u8> {
    let repo = open(g)?;
    let stream = (a.stdin || a.stdin_from_command)
        .then(|| stdin_source(&a))
        .transpose()?;
    let parent = match (&a.parent, a.force) {
        (_, true) => Parent::Ignore,
        (Some(spec), _) => Parent::Given(Snapshot::find(&repo, spec)?.0),
        (None, false) => Parent::Auto,
    };
    let options = BackupOptions {
        host: a.host.unwrap_or_else(cairn_engine::host_name),
        tags: a.tag,
        parent,
        time: a.time,
        allow_future_time: a.allow_future_time,
        excludes: a.excludes.excludes(),
    };
    let progress = Arc::new(Progress::default());
    let display = Display::start(progress.clone(), "backup", "backed up", g);
    let out = if let Some(reader) = stream {
        backup::backup_stream(&repo, &a.stdin_filename, reader, &options, &progress)?
    } else {
        backup::backup(&repo, &a.paths, &options, &progress)?
    };
    drop(display);
    let s = &out.snapshot.summary;
    let mut m = Metrics::new("backup").grouped_by("host", &options.host);
    let labels = [("host", options.host.as_str())];
    let time = out.snapshot.time;
    m.snapshot(&labels, time, s.seconds, s.bytes, s.new_bytes);
    m.gauge("backup_files", "Files backed up.", &labels, s.files as f64);
    m.errors(&labels, out.errors.len());
    m.publish(&repo, &a.metrics)?;
    if g.json {
        // `excluded` is reported, not stored in the snapshot's summary (format-spec §9)
        let mut summary = json!(s);
        summary["excluded"] = json!(out.excluded);
        print_summary(
            &json!({"snapshot_id": out.id, "summary": summary, "errors": out.errors, "skipped": out.skipped}),
        );
    } else {
        for w in &out.skipped {
            eprintln!("warning: {w}");
        }
        for e in &out.errors {
            eprintln!("error: {e}");
        }
        println!(
            "snapshot {} saved: {} files, {} dirs, {} others, {} in {:.1}s ({} excluded); added {} new blobs, {} ({} stored)",
            out.id.short(),
            s.files,
            s.dirs,
            s.others,
            HumanBytes(s.bytes),
            s.seconds,
            out.excluded,
            s.new_blobs,
            HumanBytes(s.new_bytes),
            HumanBytes(s.stored_bytes)
        );
    }
    if !out.errors.is_empty() {
        eprintln!(
            "{} entries were not stored whole (listed above): fix their permissions, or back up again once they are no longer being written",
            out.errors.len()
        );
        return Ok(EXIT_PARTIAL);
    }
    Ok(0)
}
