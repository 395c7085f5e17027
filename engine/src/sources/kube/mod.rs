//! Kubernetes as a backup source: the objects of every user namespace ([`backup`]), the data of
//! the volumes its pods mount ([`volumes`]), and a restore that never overwrites ([`restore`]).
//!
//! Every snapshot belongs to one namespace. Its host is the cluster's name, its path
//! `k8s:<namespace>/resources` or `k8s:<namespace>/volumes` (so retention keeps each history on
//! its own), and its tags `cluster=…`, `namespace=…`, `content=resources|volumes` and, for
//! volumes, `node=…`.

pub mod backup;
pub mod clean;
mod cluster;
pub mod hooks;
pub mod restore;
pub mod select;
pub mod volumes;

pub use cluster::{Cluster, Connect, Created, Resource};

use crate::error::Result;
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::RawBytes;

/// The `paths` recorded in a namespace snapshot of `content` (`resources` or `volumes`).
pub fn snapshot_paths(namespace: &str, content: &str) -> Vec<RawBytes> {
    vec![RawBytes(format!("k8s:{namespace}/{content}").into_bytes())]
}

/// The tags of a namespace snapshot.
pub fn tags(cluster: &str, namespace: &str, content: &str, node: Option<&str>) -> Vec<String> {
    let mut tags = vec![
        format!("cluster={cluster}"),
        format!("namespace={namespace}"),
        format!("content={content}"),
    ];
    tags.extend(node.map(|n| format!("node={n}")));
    tags
}

/// The value of tag `key=…` of a snapshot.
pub fn tag<'a>(snapshot: &'a Snapshot, key: &str) -> Option<&'a str> {
    snapshot
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

/// The newest snapshot of `content` of every namespace (of `cluster`, if given).
pub fn latest_per_namespace(
    repo: &Repository,
    cluster: Option<&str>,
    content: &str,
) -> Result<Vec<(Id, Snapshot)>> {
    let mut newest = std::collections::BTreeMap::new();
    for (id, snap) in Snapshot::load_all(repo)? {
        let fits = tag(&snap, "content") == Some(content)
            && cluster.is_none_or(|c| tag(&snap, "cluster") == Some(c));
        if let (true, Some(ns)) = (fits, tag(&snap, "namespace")) {
            newest.insert(ns.to_string(), (id, snap)); // oldest first: the last one wins
        }
    }
    Ok(newest.into_values().collect())
}
