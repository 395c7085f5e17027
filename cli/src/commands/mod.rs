//! The commands: one module per command or group of commands, each holding its arguments,
//! the engine call they make, and how it prints the result (as text or, with `--json`, as
//! JSON); what to do is the engine's to decide. This module holds what they share: snapshot
//! filters, opening repositories, finding snapshots, printing JSON.

pub mod backup;
pub mod cat;
pub mod check;
pub mod copy;
pub mod evidence;
pub mod forget;
pub mod gc;
pub mod init;
pub mod inspect;
pub mod k8s;
pub mod key;
pub mod ls;
pub mod mount;
pub mod repair;
pub mod restore;
pub mod snapshots;

use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_engine::Id;
use cairn_engine::format::snapshot::{Snapshot, SnapshotFilter};
use cairn_engine::repository::Repository;
use cairn_engine::repository::store::Location;
use clap::Args;
use serde_json::json;

use crate::{Global, password};

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

/// The snapshots `specs` names (every one if none), those the filter selects, oldest first.
pub(crate) fn find_snapshots(
    repo: &Repository,
    specs: &[String],
    filter: &FilterArgs,
) -> Result<Vec<(Id, Snapshot)>> {
    Ok(Snapshot::select(repo, specs, &filter.filter()?)?)
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

fn snapshot_json(id: &Id, s: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).expect("serializable");
    v["id"] = json!(id);
    v["short_id"] = json!(id.short());
    v
}
