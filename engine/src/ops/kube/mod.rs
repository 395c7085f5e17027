//! `cairn k8s`: backing up the objects of every user namespace ([`backup`]) and the data of the
//! volumes its pods mount ([`volumes`]), one snapshot per namespace and per claim, and a restore
//! that never overwrites ([`restore`]). The cluster is reached through
//! [`crate::sources::kube`]; the snapshots follow its naming (format §14).

pub mod backup;
pub mod restore;
pub mod volumes;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::repository::Repository;
use crate::sources::kube::tag;

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
