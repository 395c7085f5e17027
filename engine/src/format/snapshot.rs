//! Snapshots (`snapshots/<id>`): the root of one backup, with when, where and what.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::format::id::Id;
use crate::format::tree::RawBytes;

/// Version of the snapshot document layout.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Figures about one backup run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Files not in the parent snapshot.
    #[serde(default)]
    pub files_new: u64,
    /// Files in the parent snapshot that changed (and were read again).
    #[serde(default)]
    pub files_changed: u64,
    /// Files unchanged since the parent snapshot (not read again).
    #[serde(default)]
    pub files_unmodified: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Other entries (symlinks, fifos, devices).
    pub others: u64,
    /// Bytes of file contents in the snapshot.
    pub bytes: u64,
    /// Plaintext bytes of blobs this run added to the repository.
    pub new_bytes: u64,
    /// Bytes this run added to the repository as stored (compressed, encrypted).
    pub stored_bytes: u64,
    /// Blobs this run added.
    pub new_blobs: u64,
    /// Entries that could not be read and were left out.
    pub errors: u64,
    /// When the run started.
    pub started: DateTime<Utc>,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
}

/// A snapshot document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Layout version.
    pub version: u32,
    /// When the backup started.
    pub time: DateTime<Utc>,
    /// Host that made it.
    pub host: String,
    /// User that made it.
    pub user: String,
    /// The backed-up paths as given (absolute).
    pub paths: Vec<RawBytes>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The root tree: one entry per backed-up path.
    pub tree: Id,
    /// The snapshot this one was compared against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// For a copy made by `cairn copy`: the id of the first snapshot it is a copy of, in the
    /// repository where that backup was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
    /// Figures of the run.
    pub summary: Summary,
    /// The program that wrote it.
    pub program: String,
}

/// Which snapshots a command considers, with restic's semantics: any of the hosts; any of the
/// tag sets, a set matching a snapshot that has all its tags; all of the paths. An empty field
/// matches every snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Hosts, any of which matches.
    pub hosts: Vec<String>,
    /// Tag sets, any of which matches a snapshot holding every tag of the set.
    pub tags: Vec<Vec<String>>,
    /// Absolute paths that the snapshot's paths must all include.
    pub paths: Vec<std::path::PathBuf>,
    /// Kubernetes namespaces, any of which matches a snapshot tagged `namespace=<it>`.
    pub namespaces: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `s` is one of the snapshots considered.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&s.host);
        let tags = self.tags.is_empty()
            || self
                .tags
                .iter()
                .any(|set| set.iter().all(|t| s.tags.contains(t)));
        let paths = self.paths.iter().all(|want| {
            s.paths
                .iter()
                .any(|p| std::path::Path::new(p.as_os()) == want)
        });
        let namespace = self.namespaces.is_empty()
            || self
                .namespaces
                .iter()
                .any(|ns| s.tags.contains(&format!("namespace={ns}")));
        host && tags && paths && namespace
    }

    /// Whether it matches every snapshot.
    pub fn is_empty(&self) -> bool {
        *self == SnapshotFilter::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `snapshot` fuzz target: without serde_json's exact float parsing, a summary's
    /// `seconds` changed in the last digit when read back.
    #[test]
    fn summary_floats_round_trip_exactly() {
        let s = Summary {
            seconds: 1.1111111111111113e23,
            ..Summary::default()
        };
        let back: Summary = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn filters_take_any_host_any_tag_set_and_every_path() {
        let snapshot = |host: &str, tags: &[&str], paths: &[&str]| Snapshot {
            version: SNAPSHOT_VERSION,
            time: Utc::now(),
            host: host.into(),
            user: "root".into(),
            paths: paths
                .iter()
                .map(|p| RawBytes(p.as_bytes().to_vec()))
                .collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: Id([0; 32]),
            parent: None,
            original: None,
            summary: Summary::default(),
            program: String::new(),
        };
        let s = snapshot("web1", &["daily", "db"], &["/srv/data", "/etc"]);
        let filter = |hosts: &[&str], tags: &[&[&str]], paths: &[&str]| SnapshotFilter {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            tags: tags
                .iter()
                .map(|set| set.iter().map(|t| t.to_string()).collect())
                .collect(),
            paths: paths.iter().map(Into::into).collect(),
            namespaces: vec![],
        };
        assert!(filter(&[], &[], &[]).matches(&s));
        assert!(filter(&["web2", "web1"], &[], &[]).matches(&s));
        assert!(!filter(&["web2"], &[], &[]).matches(&s));
        assert!(filter(&[], &[&["daily", "db"]], &[]).matches(&s));
        assert!(!filter(&[], &[&["daily", "weekly"]], &[]).matches(&s));
        assert!(filter(&[], &[&["daily", "weekly"], &["db"]], &[]).matches(&s));
        assert!(filter(&[], &[], &["/srv/data/", "/etc"]).matches(&s));
        assert!(!filter(&[], &[], &["/srv/data", "/var"]).matches(&s));
        assert!(!filter(&["web1"], &[&["db"]], &["/var"]).matches(&s));
        let k8s = snapshot(
            "c",
            &["cluster=c", "namespace=shop"],
            &["k8s:shop/resources"],
        );
        let namespaces = |n: &[&str]| SnapshotFilter {
            namespaces: n.iter().map(|n| n.to_string()).collect(),
            ..SnapshotFilter::default()
        };
        assert!(namespaces(&["blog", "shop"]).matches(&k8s));
        assert!(!namespaces(&["blog"]).matches(&k8s));
        assert!(!namespaces(&["shop"]).matches(&s));
    }
}
