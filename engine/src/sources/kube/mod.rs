//! Kubernetes as a source: a blocking connection to a cluster's API server ([`Cluster`]), which
//! namespaces, objects and volumes are backed up ([`select`]), how objects are stored and
//! brought back ([`clean`]), pre- and post-backup hooks ([`hooks`]), restore modifiers
//! ([`modifiers`]) and the RBAC roles that backup and restore need ([`rbac`]). The `cairn k8s`
//! operations built on them are in `ops::kube`.
//!
//! Every snapshot belongs to one namespace: the objects of the namespace, or the files of one
//! of its claims. Its host is the cluster's name, its path `k8s:<namespace>/resources` or
//! `k8s:<namespace>/volumes/<claim>` (so retention keeps each history on its own, whichever node
//! backs a claim up), and its tags `cluster=…`, `namespace=…`, `content=resources|volumes` and,
//! for volumes, `claim=…` and `node=…` (format-spec §14).

pub mod clean;
mod cluster;
pub mod hooks;
pub mod modifiers;
pub mod rbac;
pub mod select;

pub use cluster::{Cluster, Connect, Created, Resource};

use crate::format::snapshot::Snapshot;
use crate::format::tree::RawBytes;

/// The `paths` recorded in a namespace snapshot of `what`: `resources`, or `volumes/<claim>`.
pub fn snapshot_paths(namespace: &str, what: &str) -> Vec<RawBytes> {
    vec![RawBytes(format!("k8s:{namespace}/{what}").into_bytes())]
}

/// The tags of a namespace snapshot of `content`, then `extra` (`claim`, `node`) as `key=value`.
pub fn tags(cluster: &str, namespace: &str, content: &str, extra: &[(&str, &str)]) -> Vec<String> {
    let mut tags = vec![
        format!("cluster={cluster}"),
        format!("namespace={namespace}"),
        format!("content={content}"),
    ];
    tags.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    tags
}

/// The value of tag `key=…` of a snapshot.
pub fn tag<'a>(snapshot: &'a Snapshot, key: &str) -> Option<&'a str> {
    snapshot
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// The node of a volume snapshot that holds all the claims of its namespace mounted on that
/// node, as volume snapshots did before they held one claim each; `None` for any other.
pub fn namespace_volumes_node(snapshot: &Snapshot) -> Option<&str> {
    match (tag(snapshot, "content"), tag(snapshot, "claim")) {
        (Some("volumes"), None) => tag(snapshot, "node"),
        _ => None,
    }
}
