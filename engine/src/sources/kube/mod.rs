//! Kubernetes as a backup source: the objects of every user namespace ([`backup`]), the data of
//! the volumes its pods mount ([`volumes`]), and a restore that never overwrites ([`restore`]).
//!
//! Every snapshot belongs to one namespace: the objects of the namespace, or the files of one
//! of its claims. Its host is the cluster's name, its path `k8s:<namespace>/resources` or
//! `k8s:<namespace>/volumes/<claim>` (so retention keeps each history on its own, whichever node
//! backs a claim up), and its tags `cluster=…`, `namespace=…`, `content=resources|volumes` and,
//! for volumes, `claim=…` and `node=…` (format-spec §14).

pub mod backup;
pub mod clean;
mod cluster;
pub mod hooks;
pub mod modifiers;
pub mod rbac;
pub mod restore;
pub mod select;
pub mod volumes;

pub use cluster::{Cluster, Connect, Created, Resource};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::RawBytes;

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

/// The newest resource snapshot of every namespace (of `cluster`, if given).
pub fn latest_resources(repo: &Repository, cluster: Option<&str>) -> Result<Vec<(Id, Snapshot)>> {
    let mut newest = std::collections::BTreeMap::new();
    for (id, snap) in Snapshot::load_all(repo)? {
        let fits = tag(&snap, "content") == Some("resources")
            && cluster.is_none_or(|c| tag(&snap, "cluster") == Some(c));
        if let (true, Some(ns)) = (fits, tag(&snap, "namespace")) {
            newest.insert(ns.to_string(), (id, snap)); // oldest first: the last one wins
        }
    }
    Ok(newest.into_values().collect())
}

/// The newest volume snapshot of namespace `namespace` that holds claim `claim` (a snapshot of a
/// namespace's claims on one node, of the older convention, is looked into).
pub fn latest_claim(
    repo: &Repository,
    namespace: &str,
    claim: &str,
) -> Result<Option<(Id, Snapshot)>> {
    for (id, snap) in Snapshot::load_all(repo)?.into_iter().rev() {
        if tag(&snap, "namespace") != Some(namespace) || tag(&snap, "content") != Some("volumes") {
            continue;
        }
        let holds = match tag(&snap, "claim") {
            Some(c) => c == claim,
            None => match volumes::claim_tree(repo, &snap, claim) {
                Ok(_) => true,
                Err(Error::PathNotInSnapshot(_)) => false,
                Err(e) => return Err(e),
            },
        };
        if holds {
            return Ok(Some((id, snap)));
        }
    }
    Ok(None)
}
