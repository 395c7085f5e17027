//! One function per command: open the repository, call the engine, print the result as text
//! or JSON.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cairn_engine::Id;
use cairn_engine::format::chunker::ChunkerParams;
use cairn_engine::format::config::{LockMode, ObjectLock};
use cairn_engine::format::crypto::keys::KdfParams;
use cairn_engine::format::snapshot::{Snapshot, SnapshotFilter};
use cairn_engine::format::tree::{self, Node, NodeKind, RawBytes};
use cairn_engine::ops::backup::{self, BackupOptions, Parent};
use cairn_engine::ops::check::{self, CheckRecord, DataSubset};
use cairn_engine::ops::copy;
use cairn_engine::ops::forget::{self, GroupBy, Policy};
use cairn_engine::ops::gc::{self, GcOptions, GcReport};
use cairn_engine::ops::repair;
use cairn_engine::ops::restore::{self, Overwrite, RestoreOptions};
use cairn_engine::progress::Progress;
use cairn_engine::repository::object_lock;
use cairn_engine::repository::records;
use cairn_engine::repository::store::Location;
use cairn_engine::repository::store::ObjectKind;
use cairn_engine::repository::{InitOptions, Repository, trees};
use clap::{Args, Subcommand};
use indicatif::HumanBytes;
use serde_json::json;

use crate::excludes::ExcludeArgs;
use crate::metrics::{Metrics, MetricsArgs};
use crate::progress::Display;
use crate::{EXIT_PARTIAL, Global, password};

/// `cairn init` options.
#[derive(Args)]
pub struct InitArgs {
    /// zstd compression level for data (0 = off)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=19))]
    compression: i32,
    /// Target pack size in MiB
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pack_size: u32,
    /// Default retention: keep every snapshot younger than this (e.g. 720h, 30days)
    #[arg(long, default_value = "720h", value_parser = humantime::parse_duration)]
    keep_within: std::time::Duration,
    /// Lock every object with S3 Object Lock in this mode: compliance or governance (S3 only;
    /// the bucket must have been created with Object Lock enabled)
    #[arg(long, value_name = "MODE")]
    object_lock: Option<LockMode>,
    /// Days each object stays locked [default: the retention in days, plus 1]
    #[arg(long, requires = "object_lock", value_parser = clap::value_parser!(u32).range(1..=36500))]
    lock_days: Option<u32>,
    /// Chunk and name data like this repository (its encryption key stays apart), so that
    /// `cairn copy` from it deduplicates (its password: --from-password-file,
    /// CAIRN_FROM_PASSWORD_FILE or CAIRN_FROM_PASSWORD)
    #[arg(long, value_name = "REPO")]
    copy_chunker_params_from: Option<String>,
    /// File whose first line is the password of the --copy-chunker-params-from repository
    #[arg(
        long,
        env = "CAIRN_FROM_PASSWORD_FILE",
        requires = "copy_chunker_params_from"
    )]
    from_password_file: Option<PathBuf>,
}

/// Which snapshots a command considers (restic's `--host`, `--tag`, `--path`).
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable: any of them)
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Only snapshots holding every tag of this comma-separated list (repeatable: any list)
    #[arg(long = "tag", value_name = "TAG[,TAG…]")]
    tags: Vec<String>,
    /// Only snapshots that include this path (repeatable: all of them)
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Only Kubernetes snapshots of this namespace (repeatable: any of them)
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    namespaces: Vec<String>,
}

impl FilterArgs {
    /// The engine's filter; relative paths are taken from the current folder.
    pub fn filter(&self) -> Result<SnapshotFilter> {
        let paths = self
            .paths
            .iter()
            .map(|p| std::path::absolute(p).with_context(|| format!("--path {}", p.display())))
            .collect::<Result<_>>()?;
        Ok(SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self
                .tags
                .iter()
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect()
                })
                .collect(),
            paths,
            namespaces: self.namespaces.clone(),
        })
    }
}

/// `cairn snapshots` options.
#[derive(Args)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
}

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

/// `cairn ls` options.
#[derive(Args)]
pub struct LsArgs {
    /// Snapshot id prefix or `latest`
    snapshot: String,
    /// Only list below this path inside the snapshot
    path: Option<String>,
    /// Show type, mode, owner, size and time
    #[arg(short, long)]
    long: bool,
}

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
    #[arg(long, default_value = "host,paths")]
    group_by: String,
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

pub(crate) fn parse_percent(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 30%"))?;
    (0.0..=100.0)
        .contains(&p)
        .then_some(p / 100.0)
        .ok_or_else(|| format!("{s:?} is not between 0% and 100%"))
}

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

/// `cairn key` subcommands.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Add a password
    Add(NewPassword),
    /// List the keys
    List,
    /// Remove a key by id prefix
    Remove {
        /// Key id (prefix)
        id: String,
    },
    /// Change the password used to open the repository
    Passwd(NewPassword),
}

/// Where a new password comes from.
#[derive(Args)]
pub struct NewPassword {
    /// File whose first line is the new password [else CAIRN_NEW_PASSWORD or a prompt]
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

/// `cairn repair` subcommands.
#[derive(Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index from the pack headers
    Index,
}

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

fn cache_base(g: &Global) -> PathBuf {
    g.cache_dir.clone().unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("cairn")
    })
}

fn location(g: &Global) -> Result<Location> {
    Ok(Location::parse(g.repo.as_deref().unwrap_or_default())?)
}

pub(crate) fn open(g: &Global) -> Result<Repository> {
    let loc = location(g)?;
    let pw = password::get(
        g.password_file.as_deref(),
        "CAIRN_PASSWORD",
        "repository password",
        false,
    )?;
    Ok(Repository::open(&loc, &pw, &cache_base(g))?)
}

/// Opens the repository that `cairn copy` copies into (the off-site replica): its password
/// from `password_file` or CAIRN_TO_PASSWORD, S3 access from `aws_profile` when given.
pub(crate) fn open_target(
    g: &Global,
    location: &str,
    password_file: Option<&std::path::Path>,
    aws_profile: Option<String>,
) -> Result<Repository> {
    let pw = password::get(
        password_file,
        "CAIRN_TO_PASSWORD",
        "target repository password",
        false,
    )?;
    let location = Location::parse(location)?.with_aws_profile(aws_profile);
    Ok(Repository::open(&location, &pw, &cache_base(g))?)
}

/// The snapshots `specs` name (id prefixes or `latest`), oldest first; every snapshot if none.
/// The snapshots `specs` names (every one if none), those the filter selects, oldest first.
pub(crate) fn find_snapshots(
    repo: &Repository,
    specs: &[String],
    filter: &FilterArgs,
) -> Result<Vec<(Id, Snapshot)>> {
    let filter = filter.filter()?;
    let mut found = if specs.is_empty() {
        Snapshot::load_all(repo)?
    } else {
        specs
            .iter()
            .map(|spec| Snapshot::find(repo, spec))
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    found.retain(|(_, s)| filter.matches(s));
    found.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    found.dedup_by_key(|(id, _)| *id);
    Ok(found)
}

/// Prints a `--json` result: one line.
pub(crate) fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).expect("serializable"));
}

/// Prints the final `--json` line of a long command, after its status events: the result,
/// marked `"message_type": "summary"`.
pub(crate) fn print_summary(v: &impl serde::Serialize) {
    let mut v = serde_json::to_value(v).expect("serializable");
    v["message_type"] = json!("summary");
    print_json(&v);
}

/// `cairn init`
pub fn init(g: &Global, a: InitArgs) -> Result<u8> {
    let loc = location(g)?;
    let pw = password::get(
        g.password_file.as_deref(),
        "CAIRN_PASSWORD",
        "new repository password",
        true,
    )?;
    let keep_within_secs = a.keep_within.as_secs();
    let object_lock = a.object_lock.map(|mode| ObjectLock {
        mode,
        days: a
            .lock_days
            .unwrap_or((keep_within_secs.div_ceil(86_400) + 1) as u32),
    });
    let (chunker, keys) = match &a.copy_chunker_params_from {
        Some(from) => {
            let pw = password::get(
                a.from_password_file.as_deref(),
                "CAIRN_FROM_PASSWORD",
                "password of the repository to copy chunker parameters from",
                false,
            )?;
            let other = Repository::open(&Location::parse(from)?, &pw, &cache_base(g))?;
            (
                other.config().chunker,
                Some(other.keys().sharing_blob_ids()),
            )
        }
        None => (ChunkerParams::new_default(), None),
    };
    let options = InitOptions {
        chunker,
        compression_level: a.compression,
        pack_size: a.pack_size * 1024 * 1024,
        keep_within_secs,
        object_lock,
        keys,
        ..InitOptions::default()
    };
    let repo = Repository::init(&loc, &pw, options, &cache_base(g))?;
    if g.json {
        print_json(
            &json!({"id": repo.config().id, "location": loc.to_string(), "version": repo.config().version, "object_lock": repo.config().object_lock}),
        );
    } else {
        println!(
            "created Cairn repository {} at {loc}",
            repo.config().id.short()
        );
        println!(
            "Keep the password safe: without it the data in this repository cannot be read by anyone."
        );
    }
    Ok(0)
}

/// `cairn backup`
pub fn backup(g: &Global, a: BackupArgs) -> Result<u8> {
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
        let name = RawBytes(a.stdin_filename.clone().into_bytes());
        let mtime_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let root =
            std::collections::BTreeMap::from([(name, backup::Source::Stream { reader, mtime_ns })]);
        let paths = vec![RawBytes(format!("/{}", a.stdin_filename).into_bytes())];
        backup::backup_sources(&repo, root, paths, &options, &progress)?
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

fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).expect("serializable");
    v["id"] = json!(id);
    v["short_id"] = json!(id.short());
    v
}

/// `cairn snapshots`
pub fn snapshots(g: &Global, a: SnapshotsArgs) -> Result<u8> {
    let repo = open(g)?;
    let all = find_snapshots(&repo, &[], &a.filter)?;
    if g.json {
        print_json(
            &all.iter()
                .map(|(id, s)| snapshot_json(id, s))
                .collect::<Vec<_>>(),
        );
        return Ok(0);
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:<20}  {:>10}  paths",
        "id", "time (local)", "host", "tags", "size"
    );
    for (id, s) in &all {
        let time = s
            .time
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S");
        let paths: Vec<String> = s.paths.iter().map(|p| p.lossy()).collect();
        println!(
            "{:<8}  {time:<19}  {:<16}  {:<20}  {:>10}  {}",
            id.short(),
            s.host,
            s.tags.join(","),
            HumanBytes(s.summary.bytes).to_string(),
            paths.join(" ")
        );
    }
    println!("{} snapshots", all.len());
    Ok(0)
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
    };
    let rwx = (0..9).rev().map(|i| {
        if n.mode & (1 << i) != 0 {
            b"rwx"[(8 - i) % 3] as char
        } else {
            '-'
        }
    });
    std::iter::once(t).chain(rwx).collect()
}

/// `cairn ls`
pub fn ls(g: &Global, a: LsArgs) -> Result<u8> {
    let repo = open(g)?;
    let (_, snap) = Snapshot::find(&repo, &a.snapshot)?;
    let below = tree::parse_snapshot_path(a.path.as_deref().unwrap_or("").as_bytes());
    let mut rows = Vec::new();
    let mut found = below.is_empty();
    trees::walk(
        &repo,
        &snap.tree,
        &mut Vec::new(),
        &mut |path, node| {
            let n = below.len().min(path.len());
            if below[..n] != path[..n] {
                return Ok(false);
            }
            found |= path == below.as_slice();
            if path.len() >= below.len() {
                rows.push((tree::display_path(path), node.clone()));
            }
            Ok(true)
        },
        &mut tree::stop_at_damage,
    )?;
    if !found {
        return Err(cairn_engine::Error::PathNotInSnapshot(a.path.unwrap_or_default()).into());
    }
    if g.json {
        let items: Vec<_> = rows
            .iter()
            .map(|(p, n)| {
                json!({"path": p, "type": n.kind, "mode": n.mode, "size": n.size, "uid": n.uid, "gid": n.gid,
                       "mtime_ns": n.mtime_ns, "target": n.target.as_ref().map(|t| t.lossy())})
            })
            .collect();
        print_json(&items);
        return Ok(0);
    }
    for (p, n) in rows {
        if a.long {
            let time =
                chrono::DateTime::from_timestamp_nanos(n.mtime_ns).with_timezone(&chrono::Local);
            let link = n
                .target
                .as_ref()
                .map(|t| format!(" -> {}", t.lossy()))
                .unwrap_or_default();
            let owner = if n.user.is_empty() {
                n.uid.to_string()
            } else {
                n.user.clone()
            };
            let group = if n.group.is_empty() {
                n.gid.to_string()
            } else {
                n.group.clone()
            };
            println!(
                "{} {owner:>8} {group:>8} {:>12} {} {p}{link}",
                mode_string(&n),
                n.size,
                time.format("%Y-%m-%d %H:%M:%S")
            );
        } else {
            println!("{p}");
        }
    }
    Ok(0)
}

/// `cairn restore`
pub fn restore(g: &Global, a: RestoreArgs) -> Result<u8> {
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

/// `cairn copy`
pub fn copy(g: &Global, a: CopyArgs) -> Result<u8> {
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

fn group_by(spec: &str) -> Result<GroupBy> {
    let mut by = GroupBy {
        host: false,
        paths: false,
        tags: false,
    };
    for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match field {
            "host" => by.host = true,
            "paths" => by.paths = true,
            "tags" => by.tags = true,
            other => bail!("cannot group by {other:?}: use host, paths and/or tags"),
        }
    }
    Ok(by)
}

/// `cairn forget`
pub fn forget(g: &Global, a: ForgetArgs) -> Result<u8> {
    let repo = open(g)?;
    let hours = |d: std::time::Duration| chrono::Duration::seconds(d.as_secs() as i64);
    let mut policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within.map(hours),
    };
    if policy.is_empty() {
        policy.within = Some(chrono::Duration::seconds(
            repo.config().keep_within_secs as i64,
        ));
    }
    let store_now = repo.store().now()?;
    let snapshots = find_snapshots(&repo, &[], &a.filter)?;
    let decisions = forget::apply(&policy, group_by(&a.group_by)?, &snapshots, store_now);
    // kept snapshots, and what they need, stay locked as long as the policy can keep them
    let extensions = match (repo.store().lock(), extend_locks_within(&repo, &a.gc)) {
        (Some(lock), Some(within)) => forget::for_kept_snapshots(
            &repo,
            lock,
            &decisions,
            &snapshots,
            within,
            chrono::Utc::now(),
        )?,
        _ => vec![],
    };
    if !a.dry_run {
        object_lock::extend(&repo, &extensions)?;
    }
    let future: Vec<Id> = decisions
        .iter()
        .filter(|d| d.future)
        .map(|d| d.id)
        .collect();
    let mut removed = 0;
    // snapshots the policy lets go but whose object lock has not passed: kept for now
    let mut locked = HashSet::new();
    if !a.dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            match Snapshot::remove(&repo, &d.id) {
                Ok(()) => removed += 1,
                Err(cairn_engine::Error::Locked { .. }) => {
                    locked.insert(d.id);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
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

/// With object lock: how soon a lock must end to be extended (`None`: extend none).
fn extend_locks_within(repo: &Repository, a: &GcArgs) -> Option<chrono::Duration> {
    let half_lock = repo
        .config()
        .object_lock
        .map(|l| chrono::Duration::hours(i64::from(l.days) * 12));
    match (a.no_extend_locks, a.extend_locks_within) {
        (true, _) => None,
        (false, Some(d)) => Some(chrono::Duration::seconds(d.as_secs() as i64)),
        (false, None) => half_lock,
    }
}

/// Runs gc with progress shown as `g` asks, and publishes its metrics.
fn run_gc(g: &Global, repo: &Repository, a: &GcArgs) -> Result<GcReport> {
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

fn print_gc(r: &GcReport) {
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
pub fn gc(g: &Global, a: &GcArgs) -> Result<u8> {
    let repo = open(g)?;
    let report = run_gc(g, &repo, a)?;
    if g.json {
        print_summary(&report);
    } else {
        print_gc(&report);
    }
    Ok(0)
}

/// `cairn check`
pub fn check(g: &Global, a: CheckArgs) -> Result<u8> {
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

fn new_password(p: &NewPassword) -> Result<password::Password> {
    password::get(
        p.new_password_file.as_deref(),
        "CAIRN_NEW_PASSWORD",
        "new password",
        true,
    )
}

/// `cairn key …`
pub fn key(g: &Global, k: KeyCommand) -> Result<u8> {
    let mut repo = open(g)?;
    match k {
        KeyCommand::Add(p) => {
            let id = repo.add_key(&new_password(&p)?, KdfParams::default())?;
            if g.json {
                print_json(&json!({"id": id}));
            } else {
                println!("added key {}", id.short());
            }
        }
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                let items: Vec<_> = keys
                    .iter()
                    .map(|(id, k)| json!({"id": id, "current": *id == repo.key_id(), "created": k.created, "host": k.host, "user": k.user}))
                    .collect();
                print_json(&items);
            } else {
                println!("  {:<8}  {:<20}  {:<16}  created", "id", "user", "host");
                for (id, k) in keys {
                    let mark = if id == repo.key_id() { '*' } else { ' ' };
                    println!(
                        "{mark} {:<8}  {:<20}  {:<16}  {}",
                        id.short(),
                        k.user,
                        k.host,
                        k.created.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let keys = repo.list_keys()?;
            let matching: Vec<_> = keys
                .iter()
                .filter(|(k, _)| k.to_hex().starts_with(&id.to_ascii_lowercase()))
                .collect();
            let [(key_id, _)] = matching.as_slice() else {
                bail!(
                    "{} keys match {id:?}: give a unique id prefix from `cairn key list`",
                    matching.len()
                );
            };
            repo.remove_key(key_id)?;
            if !g.json {
                println!("removed key {}", key_id.short());
            }
        }
        KeyCommand::Passwd(p) => {
            let id = repo.change_password(&new_password(&p)?, KdfParams::default())?;
            if !g.json {
                println!("password changed: key {} replaces the old one", id.short());
            }
        }
    }
    Ok(0)
}

/// `cairn repair index`
pub fn repair(g: &Global, r: RepairCommand) -> Result<u8> {
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

/// `cairn cat …`
pub fn cat(g: &Global, c: CatCommand) -> Result<u8> {
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
