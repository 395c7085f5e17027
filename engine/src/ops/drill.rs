//! Restore drills: restore a sample of snapshots into a scratch folder, read every restored byte
//! back and compare it with the snapshot's blob ids, check Kubernetes manifests, and keep the
//! outcome as an encrypted record (`drills/<id>`) that audit reports cite.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::crypto::Domain;
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, Node, NodeKind, RawBytes, SnapshotPath};
use crate::ops::forget::GroupBy;
use crate::ops::restore::{self, Overwrite, RestoreOptions};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::repository::records::{RECORD_VERSION, Record};
use crate::repository::store::ObjectKind;
use crate::repository::trees;

/// How a drill samples and where it restores.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// Folder to restore into; each snapshot goes into its own new subfolder.
    pub scratch: PathBuf,
    /// Share (0 < share ≤ 1) of the files of each snapshot that is not Kubernetes resources to
    /// restore; at least one file of a snapshot that has any is. Resources are restored whole.
    pub file_share: f64,
    /// Leave the restored files in `scratch` (default: removed after each snapshot). Kubernetes
    /// resources (Secrets among them) are verified in memory and never written there.
    pub keep_files: bool,
}

/// What a drill did with one snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrilledSnapshot {
    /// The snapshot.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Its host (the cluster, for Kubernetes snapshots).
    pub host: String,
    /// Its paths, as text.
    pub paths: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Regular files in the snapshot.
    pub files: u64,
    /// Files restored and read back.
    pub files_restored: u64,
    /// Bytes read back and verified against the blob ids.
    pub bytes_verified: u64,
    /// Kubernetes manifests parsed and matched with their file names.
    pub manifests_checked: u64,
    /// Seconds the restore and verification took.
    pub seconds: f64,
    /// Everything that went wrong (empty: the drill of this snapshot passed).
    pub problems: Vec<String>,
}

/// A record of one drill (`drills/<id>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Layout version ([`RECORD_VERSION`]).
    pub version: u32,
    /// When the drill started.
    pub time: DateTime<Utc>,
    /// Host that ran it.
    pub host: String,
    /// Wall-clock seconds it took.
    pub seconds: f64,
    /// Share of the files of non-resource snapshots that was restored.
    pub file_share: f64,
    /// Whether every drilled snapshot came back intact.
    pub passed: bool,
    /// Each snapshot drilled.
    pub snapshots: Vec<DrilledSnapshot>,
}

impl Record for DrillRecord {
    const KIND: ObjectKind = ObjectKind::DrillRecord;
    const DOMAIN: Domain = Domain::DrillRecord;
    fn time(&self) -> DateTime<Utc> {
        self.time
    }
    fn version(&self) -> u32 {
        self.version
    }
}

/// The default sample: the newest snapshot of each history, as `forget` groups them by default
/// (host and paths; for Kubernetes: each namespace's resources, and each claim's volume).
pub fn latest_of_each(all: Vec<(Id, Snapshot)>) -> Vec<(Id, Snapshot)> {
    let mut newest = BTreeMap::new();
    for (id, s) in all {
        // `all` is oldest first, so the last one wins
        newest.insert(GroupBy::default().key(&s), (id, s));
    }
    let mut out: Vec<_> = newest.into_values().collect();
    out.sort_by_key(|(_, s)| s.time);
    out
}

/// Drills `snapshots`, stores the record and returns it with its id.
pub fn run(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    options: &DrillOptions,
    progress: &Progress,
) -> Result<(Id, DrillRecord)> {
    let started = Utc::now();
    let drilled = snapshots
        .iter()
        .map(|(id, snap)| drill_one(repo, id, snap, options, progress))
        .collect::<Result<Vec<_>>>()?;
    let record = DrillRecord {
        version: RECORD_VERSION,
        time: started,
        host: crate::host_name(),
        seconds: (Utc::now() - started).as_seconds_f64(),
        file_share: options.file_share,
        passed: drilled.iter().all(|d| d.problems.is_empty()),
        snapshots: drilled,
    };
    let id = crate::repository::records::save(repo, &record)?;
    Ok((id, record))
}

fn drill_one(
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    options: &DrillOptions,
    progress: &Progress,
) -> Result<DrilledSnapshot> {
    let clock = Instant::now();
    let resources = snap.tags.iter().any(|t| t == "content=resources");
    let namespace = snap
        .tags
        .iter()
        .find_map(|t| t.strip_prefix("namespace="))
        .map(str::to_owned);
    let mut out = DrilledSnapshot {
        id: *id,
        time: snap.time,
        host: snap.host.clone(),
        paths: snap.paths.iter().map(RawBytes::lossy).collect(),
        tags: snap.tags.clone(),
        files: 0,
        files_restored: 0,
        bytes_verified: 0,
        manifests_checked: 0,
        seconds: 0.0,
        problems: vec![],
    };
    progress.set_current(format_args!("snapshot {}: choosing files", id.short()));
    let mut sample: Vec<(SnapshotPath, Node)> = vec![];
    let mut first_file = None;
    let walked = trees::walk(
        repo,
        &snap.tree,
        &mut Vec::new(),
        &mut |path, node| {
            if node.kind == NodeKind::File {
                out.files += 1;
                let chosen =
                    resources || options.file_share >= 1.0 || random_share() < options.file_share;
                if chosen {
                    sample.push((path.to_vec(), node.clone()));
                } else if first_file.is_none() {
                    first_file = Some((path.to_vec(), node.clone()));
                }
            }
            Ok(true)
        },
        &mut tree::stop_at_damage,
    );
    if let Err(e) = walked {
        out.problems
            .push(format!("the snapshot's folders cannot be read: {e}"));
        out.seconds = clock.elapsed().as_secs_f64();
        return Ok(out);
    }
    if sample.is_empty() {
        sample.extend(first_file);
    }

    if resources {
        // manifests hold Secrets: they are read and checked in memory, never written to disk
        for (path, node) in &sample {
            let shown = tree::display_path(path);
            progress.set_current(&shown);
            let bytes = match read_file(repo, node) {
                Ok(bytes) => bytes,
                Err(e) => {
                    out.problems.push(format!("{shown}: {e}"));
                    continue;
                }
            };
            out.files_restored += 1;
            out.bytes_verified += bytes.len() as u64;
            progress.entry_done(bytes.len() as u64);
            if is_manifest(path) {
                out.manifests_checked += 1;
                if let Err(e) = check_manifest(&bytes, path, namespace.as_deref()) {
                    out.problems.push(format!("{shown}: {e}"));
                }
            }
        }
    } else {
        restore_sample(repo, id, snap, &sample, options, &mut out, progress)?;
    }
    out.seconds = clock.elapsed().as_secs_f64();
    tracing::info!(
        snapshot = %id.short(),
        files_restored = out.files_restored,
        bytes_verified = out.bytes_verified,
        problems = out.problems.len(),
        "snapshot drilled"
    );
    Ok(out)
}

/// Restores the `sample` of `snap` into a new folder of the scratch folder and reads every
/// file back against the snapshot.
fn restore_sample(
    repo: &Repository,
    id: &Id,
    snap: &Snapshot,
    sample: &[(SnapshotPath, Node)],
    options: &DrillOptions,
    out: &mut DrilledSnapshot,
    progress: &Progress,
) -> Result<()> {
    let target = options
        .scratch
        .join(format!("{}-{}", id.short(), Utc::now().timestamp_micros()));
    let restore = RestoreOptions {
        target: target.clone(),
        includes: sample.iter().map(|(p, _)| p.clone()).collect(),
        overwrite: Overwrite::Never,
        chown: false,
        no_flush: true,
    };
    progress.set_current(format_args!("snapshot {}: restoring", id.short()));
    match restore::restore(repo, snap, &restore, &Progress::default()) {
        Ok(restored) => out.problems.extend(restored.errors),
        Err(e) => out.problems.push(format!("the restore failed: {e}")),
    }
    for (path, node) in sample {
        let on_disk = path.iter().fold(target.clone(), |p, c| p.join(c.as_os()));
        let shown = tree::display_path(path);
        progress.set_current(&shown);
        match verify_file(repo, &on_disk, node) {
            Ok(bytes) => {
                out.files_restored += 1;
                out.bytes_verified += bytes;
                progress.entry_done(bytes);
            }
            Err(e) => out.problems.push(format!("{shown}: {e}")),
        }
    }
    if !options.keep_files {
        std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    Ok(())
}

/// A file's bytes read out of the repository (every blob checked against its id), which must
/// be as long as the snapshot says.
fn read_file(repo: &Repository, node: &Node) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(node.size as usize);
    for blob in &node.content {
        bytes.extend(
            repo.load_blob(blob)
                .map_err(|e| format!("cannot be read: {e}"))?,
        );
    }
    if bytes.len() as u64 != node.size {
        return Err(format!(
            "has {} bytes, the snapshot says {}",
            bytes.len(),
            node.size
        ));
    }
    Ok(bytes)
}

fn random_share() -> f64 {
    f64::from(u32::from_le_bytes(crate::format::crypto::random_bytes())) / f64::from(u32::MAX)
}

/// Reads a restored file back: every blob's bytes must hash to its id, the length, permission
/// bits and modification time must be the snapshot's. Returns the bytes verified.
fn verify_file(repo: &Repository, path: &Path, node: &Node) -> std::result::Result<u64, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("not restored: {e}"))?;
    if !meta.is_file() {
        return Err("restored as something other than a file".into());
    }
    if meta.len() != node.size {
        return Err(format!(
            "restored with {} bytes, the snapshot has {}",
            meta.len(),
            node.size
        ));
    }
    if meta.permissions().mode() & 0o7777 != node.mode {
        return Err(format!(
            "restored with mode {:o}, the snapshot has {:o}",
            meta.permissions().mode() & 0o7777,
            node.mode
        ));
    }
    let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    if mtime_ns != node.mtime_ns {
        return Err("restored with another modification time".into());
    }
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    restore::verify_content(repo, &mut file, node)
}

/// Whether a path of a resources snapshot is a manifest (`resources/…/x.json`, `cluster/…`).
fn is_manifest(path: &[RawBytes]) -> bool {
    path.len() == 3
        && matches!(path[0].0.as_slice(), b"resources" | b"cluster")
        && path[2].0.ends_with(b".json")
}

/// A manifest must be a Kubernetes object named like its file and, for namespaced resources,
/// in the snapshot's namespace.
fn check_manifest(
    bytes: &[u8],
    rel: &[RawBytes],
    namespace: Option<&str>,
) -> std::result::Result<(), String> {
    let object: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("is not JSON: {e}"))?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    if text(&object["apiVersion"]).is_none() || text(&object["kind"]).is_none() {
        return Err("is not a Kubernetes object (no apiVersion or kind)".into());
    }
    let file = rel[2].lossy();
    let name = file.trim_end_matches(".json");
    if text(&object["metadata"]["name"]).as_deref() != Some(name) {
        return Err(format!("does not hold the object named {name:?}"));
    }
    if rel[0].0 == b"resources" && text(&object["metadata"]["namespace"]).as_deref() != namespace {
        return Err("holds an object of another namespace".into());
    }
    Ok(())
}
