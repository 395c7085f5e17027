//! The audit report (`cairn report`): what the repository holds and how each protection the
//! platform promises for backups is met, with where the proof is. Built from the repository
//! alone (snapshots, config, keys, object locks, check and drill records) and, when given, the
//! off-site replica that `cairn copy` fills.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::format::config::ObjectLock;
use crate::format::id::Id;
use crate::format::snapshot::{Snapshot, SnapshotFilter};
use crate::ops::check::CheckRecord;
use crate::ops::drill::DrillRecord;
use crate::repository::Repository;
use crate::repository::clock::when;
use crate::repository::records;
use crate::repository::store::ObjectKind;
use crate::sources::kube;

/// Version of the report's JSON layout.
pub const REPORT_VERSION: u32 = 1;

/// What the report judges against.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// The time the report is made at.
    pub now: DateTime<Utc>,
    /// A group whose newest snapshot is older than this is not backed up daily (default 26 h).
    pub backup_max_age: Duration,
    /// A check or drill older than this does not count as regular testing (default 8 days).
    pub evidence_max_age: Duration,
    /// The snapshots reported on (default: all).
    pub filter: SnapshotFilter,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            now: Utc::now(),
            backup_max_age: Duration::hours(26),
            evidence_max_age: Duration::days(8),
            filter: SnapshotFilter::default(),
        }
    }
}

/// Whether a protection is in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In place, and the proof says so.
    Met,
    /// Not in place, or the proof says it failed.
    NotMet,
    /// Cannot be told from what the report was given.
    Unknown,
}

/// One promise, how Cairn meets it, and where an auditor finds the proof.
#[derive(Clone, Debug, Serialize)]
pub struct Protection {
    /// The promise (e.g. "Backups are encrypted at rest").
    pub promise: String,
    /// Whether it is met.
    pub status: Status,
    /// How Cairn meets it, with today's figures.
    pub how: String,
    /// Where the proof is.
    pub proof: String,
}

/// One snapshot in the report.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotEntry {
    /// Its id.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Hours since then.
    pub age_hours: f64,
    /// When the repository's retention lets it go (its time plus the retention).
    pub expires: DateTime<Utc>,
    /// When its object lock ends (object-locked repositories only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
    /// Whether its lock covers its retention: ends no earlier than `expires` and than now (a
    /// snapshot still here after `expires` is kept by a longer policy, which `forget` extends
    /// its lock for). Object-locked repositories only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_covers_retention: Option<bool>,
}

/// How far the off-site replica is behind for one group.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaState {
    /// The replica's newest snapshot of the group.
    pub newest: Option<DateTime<Utc>>,
    /// Hours between the newest snapshot here and the newest copied one (none copied: absent).
    pub lag_hours: Option<f64>,
    /// Snapshots here that the replica has no copy of.
    pub not_copied: u64,
}

/// The snapshots of one namespace's resources or one claim's volume (or of one host and path
/// set).
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// How the group is shown: `namespace shop (resources)`, `namespace shop (volumes of claim
    /// data)` or `host:/paths`.
    pub label: String,
    /// The host (the cluster, for Kubernetes snapshots).
    pub host: String,
    /// The paths.
    pub paths: Vec<String>,
    /// The namespace, for Kubernetes snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its snapshots, oldest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// Hours since its newest snapshot.
    pub newest_age_hours: f64,
    /// The off-site replica's state (when a replica was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaState>,
}

/// The last run of a check or drill.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    /// The record's id (`checks/<id>` or `drills/<id>`).
    pub id: Id,
    /// When it ran.
    pub time: DateTime<Utc>,
    /// Host that ran it.
    pub host: String,
    /// Whether it found everything intact.
    pub passed: bool,
    /// What it covered and found, in words.
    pub summary: String,
}

/// The repository's settings that protections rest on.
#[derive(Clone, Debug, Serialize)]
pub struct RepositoryFacts {
    /// Where it is.
    pub location: String,
    /// Its id.
    pub id: Id,
    /// Its format version.
    pub format_version: u32,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Default retention in hours (`forget` without options).
    pub retention_hours: u64,
    /// The encryption scheme, in words.
    pub encryption: String,
    /// Key files (passwords) that open it.
    pub keys: u64,
    /// Its object lock, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
    /// The earliest date any snapshot's lock ends (object-locked repositories only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earliest_unlock: Option<DateTime<Utc>>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// Layout version ([`REPORT_VERSION`]).
    pub version: u32,
    /// When it was made.
    pub generated: DateTime<Utc>,
    /// The program that made it.
    pub program: String,
    /// The repository.
    pub repository: RepositoryFacts,
    /// The replica's location, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// Each promise and how it is met.
    pub protections: Vec<Protection>,
    /// Snapshots by namespace (or host and paths).
    pub groups: Vec<Group>,
    /// The newest check record.
    pub last_check: Option<Evidence>,
    /// The newest drill record.
    pub last_drill: Option<Evidence>,
    /// Check records in the repository.
    pub checks: u64,
    /// Drill records in the repository.
    pub drills: u64,
}

/// How much earlier than a snapshot's expiry its lock may end and still count: the lock runs
/// from when the writer started, a little before the snapshot's time.
const LOCK_SLACK: Duration = Duration::hours(1);

/// Snapshots with their ids, oldest first.
type Snapshots = Vec<(Id, Snapshot)>;

/// Builds the report of `repo`, comparing with `replica` when given.
pub fn report(
    repo: &Repository,
    replica: Option<&Repository>,
    options: &AuditOptions,
) -> Result<AuditReport> {
    let config = repo.config();
    let retention = Duration::seconds(config.keep_within_secs as i64);
    let hours = |t: DateTime<Utc>| (options.now - t).as_seconds_f64() / 3600.0;
    let mut snapshots = Snapshot::load_all(repo)?;
    snapshots.retain(|(_, s)| options.filter.matches(s));
    let copies = replica.map(Snapshot::load_all).transpose()?;
    // what the replica holds copies of: copies name the snapshot they copy in `original`
    let copied: Option<HashSet<Id>> = copies.as_ref().map(|copies| {
        copies
            .iter()
            .map(|(id, s)| s.original.unwrap_or(*id))
            .collect()
    });

    let mut by_group: BTreeMap<(String, Vec<String>), Snapshots> = BTreeMap::new();
    for (id, s) in snapshots {
        let paths = s.paths.iter().map(|p| p.lossy()).collect();
        by_group
            .entry((s.host.clone(), paths))
            .or_default()
            .push((id, s));
    }
    let mut groups = vec![];
    let mut earliest_unlock: Option<DateTime<Utc>> = None;
    for ((host, paths), members) in by_group {
        let first = &members[0].1;
        let namespace = kube::tag(first, "namespace").map(str::to_owned);
        let label = match (&namespace, kube::tag(first, "content")) {
            (Some(ns), Some(c)) => match kube::tag(first, "claim") {
                Some(claim) => format!("namespace {ns} ({c} of claim {claim})"),
                None => format!("namespace {ns} ({c})"),
            },
            _ => format!("{host}:{}", paths.join(" ")),
        };
        let mut entries = vec![];
        for (id, s) in &members {
            let locked_until = match config.object_lock {
                Some(_) => repo.store().locked_until(&ObjectKind::Snapshot.path(id))?,
                None => None,
            };
            if let Some(t) = locked_until {
                earliest_unlock = Some(earliest_unlock.map_or(t, |e| e.min(t)));
            }
            let expires = s.time + retention;
            entries.push(SnapshotEntry {
                id: *id,
                time: s.time,
                age_hours: hours(s.time),
                expires,
                locked_until,
                lock_covers_retention: config.object_lock.map(|_| {
                    locked_until.is_some_and(|u| u + LOCK_SLACK >= expires && u > options.now)
                }),
            });
        }
        let newest = members.last().expect("groups are not empty").1.time;
        let replica = copies
            .as_ref()
            .zip(copied.as_ref())
            .map(|(copies, copied)| replica_state(&members, copies, copied, &host, &paths));
        groups.push(Group {
            label,
            host,
            paths,
            namespace,
            snapshots: entries,
            newest_age_hours: hours(newest),
            replica,
        });
    }

    let checks = records::load_all::<CheckRecord>(repo)?;
    let drills = records::load_all::<DrillRecord>(repo)?;
    let last_check = checks.last().map(|(id, c)| Evidence {
        id: *id,
        time: c.time,
        host: c.host.clone(),
        passed: c.report.problems.is_empty(),
        summary: format!(
            "{} snapshots, {} packs, {} read whole (read data: {}); {} problems",
            c.report.snapshots,
            c.report.packs,
            c.report.packs_read,
            c.read_data,
            c.report.problems.len()
        ),
    });
    let last_drill = drills.last().map(|(id, d)| Evidence {
        id: *id,
        time: d.time,
        host: d.host.clone(),
        passed: d.passed,
        summary: format!(
            "{} snapshots restored ({} files, {} bytes verified, {} manifests) in {:.1} s; {} problems",
            d.snapshots.len(),
            d.snapshots.iter().map(|s| s.files_restored).sum::<u64>(),
            d.snapshots.iter().map(|s| s.bytes_verified).sum::<u64>(),
            d.snapshots.iter().map(|s| s.manifests_checked).sum::<u64>(),
            d.seconds,
            d.snapshots.iter().map(|s| s.problems.len()).sum::<usize>()
        ),
    });
    let facts = RepositoryFacts {
        location: repo.location().to_string(),
        id: config.id,
        format_version: config.version,
        created: config.created,
        retention_hours: config.keep_within_secs / 3600,
        encryption: "AES-256-GCM, a fresh key per object derived from a 256-bit master key; \
                     master keys wrapped with Argon2id-derived keys; blobs named by keyed BLAKE3"
            .into(),
        keys: repo.store().ids(ObjectKind::Key)?.len() as u64,
        object_lock: config.object_lock,
        earliest_unlock,
    };
    let mut report = AuditReport {
        version: REPORT_VERSION,
        generated: options.now,
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        repository: facts,
        replica: replica.map(|r| r.location().to_string()),
        protections: vec![],
        groups,
        last_check,
        last_drill,
        checks: checks.len() as u64,
        drills: drills.len() as u64,
    };
    report.protections = protections(&report, options);
    Ok(report)
}

/// The replica's copies of one group: copies keep host, paths and tags; `copied` holds the
/// originals of every copy.
fn replica_state(
    members: &[(Id, Snapshot)],
    copies: &[(Id, Snapshot)],
    copied: &HashSet<Id>,
    host: &str,
    paths: &[String],
) -> ReplicaState {
    let newest = copies
        .iter()
        .filter(|(_, s)| {
            s.host == host && s.paths.iter().map(|p| p.lossy()).eq(paths.iter().cloned())
        })
        .map(|(_, s)| s.time)
        .max();
    let here = members.last().expect("groups are not empty").1.time;
    ReplicaState {
        newest,
        lag_hours: newest.map(|t| ((here - t).as_seconds_f64() / 3600.0).max(0.0)),
        not_copied: members
            .iter()
            .filter(|(id, s)| !copied.contains(&s.original.unwrap_or(*id)))
            .count() as u64,
    }
}

fn protections(r: &AuditReport, options: &AuditOptions) -> Vec<Protection> {
    let max_age_h = options.backup_max_age.num_hours();
    let evidence_days = options.evidence_max_age.num_days();
    let fresh = |t: DateTime<Utc>| options.now - t <= options.evidence_max_age;
    let row = |promise: &str, status, how: String, proof: &str| Protection {
        promise: promise.into(),
        status,
        how,
        proof: proof.into(),
    };
    let stale: Vec<&str> = r
        .groups
        .iter()
        .filter(|g| g.newest_age_hours > max_age_h as f64)
        .map(|g| g.label.as_str())
        .collect();
    let daily = row(
        "Every namespace is backed up daily",
        match (r.groups.is_empty(), stale.is_empty()) {
            (true, _) => Status::NotMet,
            (false, true) => Status::Met,
            (false, false) => Status::NotMet,
        },
        if r.groups.is_empty() {
            "no snapshots yet".into()
        } else if stale.is_empty() {
            format!(
                "all {} groups have a snapshot younger than {max_age_h} h",
                r.groups.len()
            )
        } else {
            format!("no snapshot within {max_age_h} h: {}", stale.join(", "))
        },
        "the snapshot table below; `cairn snapshots`",
    );
    let retention = row(
        "Backups are kept for the retention period",
        Status::Met,
        format!(
            "`forget` without options keeps every snapshot taken within {} h of its group's newest; \
             the maintenance CronJob runs it daily, then `gc`",
            r.repository.retention_hours
        ),
        "`cairn cat config` (keep_within_secs); each snapshot's expiry below",
    );
    let encryption = row(
        "Backups are encrypted at rest",
        Status::Met,
        format!(
            "client-side: {}; {} key files",
            r.repository.encryption, r.repository.keys
        ),
        "format-spec §2; `cairn key list`; no object holds plaintext (tests/kube.rs checks Secrets)",
    );
    let lock = match (&r.repository.object_lock, r.repository.earliest_unlock) {
        (None, _) => row(
            "Backups cannot be erased early",
            Status::NotMet,
            "no S3 Object Lock: anyone with the bucket's credentials can delete backups".into(),
            "`cairn cat config` (object_lock absent); make the repository with `cairn init --object-lock compliance`",
        ),
        (Some(l), earliest) => {
            let unprotected = r
                .groups
                .iter()
                .flat_map(|g| &g.snapshots)
                .filter(|s| s.lock_covers_retention != Some(true))
                .count();
            row(
                "Backups cannot be erased early",
                if unprotected == 0 {
                    Status::Met
                } else {
                    Status::NotMet
                },
                format!(
                    "S3 Object Lock in {:?} mode, {} days per object, extended by gc while needed and by forget as long as the policy keeps a snapshot; earliest unlock of a snapshot: {}; {unprotected} snapshots not locked until they expire (choose lock days ≥ the retention)",
                    l.mode,
                    l.days,
                    earliest.map_or("none".into(), when)
                ),
                "the bucket's object retention (HeadObject x-amz-object-lock-retain-until-date), listed per snapshot below",
            )
        }
    };
    let offsite = match &r.replica {
        None => row(
            "Backups are replicated off-site, out of the workload cluster's reach",
            Status::Unknown,
            "no replica given: run the report with --replica to compare".into(),
            "`cairn copy` run by a process outside the workload cluster",
        ),
        Some(place) => {
            let behind: Vec<&str> = r
                .groups
                .iter()
                .filter(|g| {
                    g.replica
                        .as_ref()
                        .is_none_or(|s| s.lag_hours.is_none_or(|h| h > max_age_h as f64))
                })
                .map(|g| g.label.as_str())
                .collect();
            row(
                "Backups are replicated off-site, out of the workload cluster's reach",
                if behind.is_empty() {
                    Status::Met
                } else {
                    Status::NotMet
                },
                if behind.is_empty() {
                    format!("every group is copied to {place} within {max_age_h} h")
                } else {
                    format!(
                        "more than {max_age_h} h behind at {place}: {}",
                        behind.join(", ")
                    )
                },
                "the replica column below (copies name their original); that the workload cluster \
                 holds no credentials for the replica is a deployment fact this report cannot see",
            )
        }
    };
    let evidence = |promise: &str, e: &Option<Evidence>, what: &str, proof: &str| match e {
        None => row(
            promise,
            Status::NotMet,
            format!("no {what} recorded yet"),
            proof,
        ),
        Some(e) => row(
            promise,
            if e.passed && fresh(e.time) {
                Status::Met
            } else {
                Status::NotMet
            },
            format!(
                "last {what} {} at {} ({}): {}{}",
                if e.passed { "passed" } else { "FAILED" },
                when(e.time),
                e.host,
                e.summary,
                if fresh(e.time) {
                    String::new()
                } else {
                    format!("; older than {evidence_days} days")
                }
            ),
            proof,
        ),
    };
    vec![
        daily,
        retention,
        encryption,
        lock,
        offsite,
        evidence(
            "The repository is verified regularly",
            &r.last_check,
            "check",
            "encrypted records in checks/ (`cairn report --json` lists the newest)",
        ),
        evidence(
            "Restores are tested regularly (ISO 27001 A.12.3.1)",
            &r.last_drill,
            "drill",
            "encrypted records in drills/, written by `cairn drill` (weekly CronJob)",
        ),
    ]
}
