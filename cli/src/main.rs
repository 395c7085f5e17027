//! `cairn`: encrypted, deduplicated backups (restic-style commands). Argument parsing and
//! output only; the work is done by `cairn-engine`.

mod commands;
mod excludes;
mod metrics;
mod password;
mod progress;
mod report_html;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit code: a backup or restore finished, but some entries were left out (see its warnings).
pub const EXIT_PARTIAL: u8 = 3;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Encrypted, deduplicated backups for Kubernetes and folders"
)]
#[command(
    after_help = "Exit codes: 0 ok; 1 error; 2 wrong usage; 3 done, but some entries could not be read or restored, or changed while read (listed)."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Clone)]
pub struct Global {
    /// Repository location: a folder, s3:BUCKET/PREFIX (endpoint and credentials from the
    /// AWS_* environment or AWS_PROFILE), or azure:CONTAINER/PREFIX (account and credentials
    /// from the AZURE_STORAGE_* environment)
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File whose first line is the repository password
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Base folder for local caches [default: $XDG_CACHE_HOME/cairn or ~/.cache/cairn]
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Print machine-readable JSON on standard output: one value per line, the result last
    /// (long commands print status events before it); schemas in docs/json.md
    #[arg(long, global = true)]
    pub json: bool,
    /// Print no progress
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How often progress is shown: the bar's refresh on a terminal [default: 200ms], else a
    /// plain line on standard error or, with --json, a status event [default: 10s]
    #[arg(long, env = "CAIRN_PROGRESS_INTERVAL", value_parser = humantime::parse_duration, global = true)]
    pub progress_interval: Option<std::time::Duration>,
    /// Limit what is sent to repositories to this many KiB/s (restic's flag)
    #[arg(
        long,
        env = "CAIRN_LIMIT_UPLOAD",
        value_name = "KIB_PER_S",
        global = true
    )]
    pub limit_upload: Option<u64>,
    /// Limit what is received from repositories to this many KiB/s (restic's flag)
    #[arg(
        long,
        env = "CAIRN_LIMIT_DOWNLOAD",
        value_name = "KIB_PER_S",
        global = true
    )]
    pub limit_download: Option<u64>,
    /// Log more (repeat for even more)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as text, or as one JSON object each (for Jobs whose logs are collected)
    #[arg(long, env = "CAIRN_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

/// How log lines are written (to standard error).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository
    Init(commands::init::InitArgs),
    /// Back up files and folders into a new snapshot
    Backup(commands::backup::BackupArgs),
    /// List snapshots
    Snapshots(commands::snapshots::SnapshotsArgs),
    /// List the files in a snapshot
    Ls(commands::ls::LsArgs),
    /// Restore a snapshot (or part of it) into a folder
    Restore(commands::restore::RestoreArgs),
    /// Remove snapshots that a retention policy no longer keeps
    Forget(commands::forget::ForgetArgs),
    /// Verify the repository; list what is damaged and which snapshots and files it affects
    Check(commands::check::CheckArgs),
    /// Free the space of data no snapshot needs (safe while backups run)
    Gc(commands::gc::GcArgs),
    /// Copy snapshots into another repository (off-site replication); the source is only read
    Copy(commands::copy::CopyArgs),
    /// Show what the snapshots hold and what deduplication and compression save
    Stats(commands::inspect::StatsArgs),
    /// Show what changed between two snapshots
    Diff(commands::inspect::DiffArgs),
    /// Find files by name pattern in the snapshots
    Find(commands::inspect::FindArgs),
    /// Browse the snapshots as a read-only file system (FUSE), until Ctrl-C or `umount`
    Mount(commands::mount::MountArgs),
    /// Test restores: restore a sample into a scratch folder, verify every byte, keep a record
    Drill(commands::evidence::DrillArgs),
    /// Audit report: protections, snapshots per namespace, last check and drill (text, JSON, HTML)
    Report(commands::evidence::ReportArgs),
    /// Manage the repository's passwords
    #[command(subcommand)]
    Key(commands::key::KeyCommand),
    /// Repair repository metadata
    #[command(subcommand)]
    Repair(commands::repair::RepairCommand),
    /// Back up and restore Kubernetes namespaces and their volumes
    #[command(subcommand)]
    K8s(commands::k8s::K8sCommand),
    /// Print a repository object as JSON, for debugging
    #[command(subcommand)]
    Cat(commands::cat::CatCommand),
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // colours only for people at a terminal: Job logs and files get plain text
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Has glibc give every buffer of 4 MiB or more back to the system when it is freed. By default
/// glibc raises that threshold after the first such free, so that the 16 MiB packs read and
/// written afterwards stay in per-thread arenas: peak memory then grows with the length of the
/// run (`benches/SCALE.md`; on 3 M blobs gc's peak went from 409 to 313 MB, copy's from 429 to
/// 286 MB). Freed memory below that size is trimmed only beyond 32 MiB, so that small buffers do
/// not cost a system call each.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    use nix::libc::{M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt};
    // SAFETY: runs first in `main`, before any other thread; it only sets two allocator limits
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 4 << 20);
        mallopt(M_TRIM_THRESHOLD, 32 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.global.verbose, cli.global.log_format);
    let g = &cli.global;
    cairn_engine::repository::store::bandwidth::set_limits(g.limit_upload, g.limit_download);
    let result = match cli.command {
        Command::Init(a) => commands::init::run(g, a),
        Command::Backup(a) => commands::backup::run(g, a),
        Command::Snapshots(a) => commands::snapshots::run(g, a),
        Command::Ls(a) => commands::ls::run(g, a),
        Command::Restore(a) => commands::restore::run(g, a),
        Command::Forget(a) => commands::forget::run(g, a),
        Command::Check(a) => commands::check::run(g, a),
        Command::Gc(a) => commands::gc::run(g, &a),
        Command::Copy(a) => commands::copy::run(g, a),
        Command::Stats(a) => commands::inspect::stats(g, a),
        Command::Diff(a) => commands::inspect::diff(g, a),
        Command::Find(a) => commands::inspect::find(g, a),
        Command::Mount(a) => commands::mount::mount(g, a),
        Command::Drill(a) => commands::evidence::drill(g, a),
        Command::Report(a) => commands::evidence::report(g, a),
        Command::Key(k) => commands::key::run(g, k),
        Command::Repair(r) => commands::repair::run(g, r),
        Command::Cat(c) => commands::cat::run(g, c),
        Command::K8s(k) => commands::k8s::run(g, k),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cairn: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Clap checks the argument definitions only in debug builds, and the tests build in
    /// release: check them here (duplicate names, conflicts naming unknown arguments, …).
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
