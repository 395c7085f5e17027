//! `cairn k8s backup`: every object of every user namespace, one snapshot per namespace.
//!
//! A namespace's snapshot holds its objects under `resources/<resource>[.<group>]/<name>.json`
//! and the cluster-scoped objects a restore of it needs (the Namespace itself, the
//! CustomResourceDefinitions of its custom objects, the PersistentVolumes bound to its claims
//! and their StorageClasses) under `cluster/<resource>[.<group>]/<name>.json`, as canonical JSON
//! without the fields the server sets.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::cluster::{Cluster, Resource};
use super::select::{self, KeepRule, NamespaceChoice};
use super::{clean, snapshot_paths, tags};
use crate::archiver::{self, BackupOptions, Parent, Source};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::tree::{RawBytes, is_safe_name};

/// Settings of a Kubernetes resource backup.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    /// The cluster's name, recorded as the snapshots' host.
    pub cluster: String,
    /// Namespaces of the platform: only objects matching `keep` are taken from them.
    pub platform_namespaces: Vec<String>,
    /// Objects taken even from platform namespaces.
    pub keep: Vec<KeepRule>,
    /// Only these namespaces (all when empty).
    pub only: Vec<String>,
    /// Time to record instead of the start time (for tests).
    pub time: Option<DateTime<Utc>>,
    /// Record `time` even if it is ahead of the store's clock.
    pub allow_future_time: bool,
}

/// Why a namespace has no snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct LeftOut {
    /// The namespace.
    pub namespace: String,
    /// Why.
    pub reason: String,
}

/// The objects to store, per namespace, by their path in the snapshot.
#[derive(Debug, Default)]
pub struct Inventory {
    /// namespace → path → (object as stored, its creation time in ns since the epoch).
    pub namespaces: BTreeMap<String, BTreeMap<String, (Value, i64)>>,
    /// Namespaces left out, with why.
    pub left_out: Vec<LeftOut>,
    /// Objects left out by their opt-out label, as `namespace/resource/name`.
    pub opted_out: Vec<String>,
    /// Resources that could not be listed, with the server's answer; the backup of what could
    /// be read goes on.
    pub errors: Vec<String>,
}

/// One namespace's snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct NamespaceSnapshot {
    /// The namespace.
    pub namespace: String,
    /// The snapshot written.
    pub snapshot: Id,
    /// Objects stored.
    pub objects: usize,
    /// When the snapshot was taken.
    pub time: DateTime<Utc>,
    /// Seconds it took.
    pub seconds: f64,
    /// Bytes of manifests stored.
    pub bytes: u64,
    /// Bytes of new data the run added to the repository.
    pub new_bytes: u64,
}

/// What a resource backup did.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    /// Snapshots written, one per namespace.
    pub snapshots: Vec<NamespaceSnapshot>,
    /// Namespaces left out, with why.
    pub left_out: Vec<LeftOut>,
    /// Objects left out by their opt-out label.
    pub opted_out: Vec<String>,
    /// Resources that could not be listed.
    pub errors: Vec<String>,
}

/// How a namespace is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Treatment {
    Everything,
    KeptOnly,
}

/// Reads every object to back up.
pub fn collect(cluster: &Cluster, settings: &BackupSettings) -> Result<Inventory> {
    let resources: Vec<Resource> = cluster
        .resources()
        .into_iter()
        .filter(|r| r.listable && !select::never_backed_up(&r.api.group, &r.api.plural))
        .collect();
    let find = |group: &str, kind: &str| {
        resources
            .iter()
            .find(|r| r.api.group == group && r.api.kind == kind)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the cluster does not serve {kind} (group {group:?}) or it cannot be listed: check the service account's RBAC permissions"
                ))
            })
    };
    let mut inv = Inventory::default();
    let mut treatment = BTreeMap::new();
    let mut namespace_objects = BTreeMap::new();
    for ns in cluster.list(find("", "Namespace")?, None)? {
        let name = name_of(&ns).to_string();
        let how = match select::choose_namespace(&ns, &settings.platform_namespaces, &settings.only)
        {
            NamespaceChoice::NotAsked => continue,
            NamespaceChoice::OptedOut => {
                inv.left_out.push(LeftOut {
                    namespace: name,
                    reason: format!("labelled {}", select::NOBACKUP_LABEL),
                });
                continue;
            }
            NamespaceChoice::Platform => Treatment::KeptOnly,
            NamespaceChoice::User => Treatment::Everything,
        };
        treatment.insert(name.clone(), how);
        namespace_objects.insert(name, ns);
    }
    let custom: BTreeMap<String, Value> = find("apiextensions.k8s.io", "CustomResourceDefinition")
        .and_then(|r| cluster.list(r, None))
        .unwrap_or_default()
        .into_iter()
        .map(|crd| (name_of(&crd).to_string(), crd))
        .collect();

    let mut seen = HashSet::new();
    let mut needs: BTreeMap<String, BTreeSet<(&str, String)>> = BTreeMap::new();
    for resource in resources.iter().filter(|r| r.namespaced) {
        let objects = match cluster.list(resource, None) {
            Ok(o) => o,
            Err(e) => {
                inv.errors.push(e.to_string());
                continue;
            }
        };
        for mut object in objects {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let Some(&how) = treatment.get(&ns) else {
                continue;
            };
            let uid = object["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !uid.is_empty() && !seen.insert(uid) {
                continue; // the same object, served by a second group
            }
            let name = name_of(&object).to_string();
            if select::opted_out(&object) {
                inv.opted_out
                    .push(format!("{ns}/{}/{name}", resource.qualified_name()));
                continue;
            }
            if how == Treatment::KeptOnly && !settings.keep.iter().any(|k| k.matches(&object)) {
                continue;
            }
            let need = needs.entry(ns.clone()).or_default();
            if resource.api.group.is_empty() && resource.api.kind == "PersistentVolumeClaim" {
                if let Some(pv) = object["spec"]["volumeName"].as_str() {
                    need.insert(("PersistentVolume", pv.to_string()));
                }
                let annotated = &object["metadata"]["annotations"][clean::BETA_STORAGE_CLASS];
                for sc in [&object["spec"]["storageClassName"], annotated] {
                    if let Some(sc) = sc.as_str() {
                        need.insert(("StorageClass", sc.to_string()));
                    }
                }
            }
            let crd = format!("{}.{}", resource.api.plural, resource.api.group);
            if custom.contains_key(&crd) {
                need.insert(("CustomResourceDefinition", crd));
            }
            let path = format!("resources/{}/{name}.json", resource.qualified_name());
            add(&mut inv, &ns, path, &mut object);
        }
    }

    let volumes = find("", "PersistentVolume")
        .and_then(|r| Ok((r, cluster.list(r, None)?)))
        .ok();
    let classes = find("storage.k8s.io", "StorageClass")
        .and_then(|r| Ok((r, cluster.list(r, None)?)))
        .ok();
    let crds = find("apiextensions.k8s.io", "CustomResourceDefinition").ok();
    for (ns, how) in &treatment {
        let need = needs.remove(ns).unwrap_or_default();
        if *how == Treatment::KeptOnly && need.is_empty() && !inv.namespaces.contains_key(ns) {
            continue;
        }
        let mut ns_object = namespace_objects[ns].clone();
        add(
            &mut inv,
            ns,
            format!("cluster/namespaces/{ns}.json"),
            &mut ns_object,
        );
        // a class used by a bound volume is needed too
        let mut need = need;
        if let Some((_, pvs)) = &volumes {
            let classes: Vec<String> = pvs
                .iter()
                .filter(|pv| need.contains(&("PersistentVolume", name_of(pv).into())))
                .filter_map(|pv| pv["spec"]["storageClassName"].as_str().map(str::to_string))
                .collect();
            need.extend(classes.into_iter().map(|c| ("StorageClass", c)));
        }
        for (kind, name) in need {
            let (resource, object) = match kind {
                "PersistentVolume" => volumes
                    .as_ref()
                    .and_then(|(r, all)| Some((*r, find_named(all, &name)?))),
                "StorageClass" => classes
                    .as_ref()
                    .and_then(|(r, all)| Some((*r, find_named(all, &name)?))),
                _ => crds.and_then(|r| Some((r, custom.get(&name)?.clone()))),
            }
            .unzip();
            if let (Some(resource), Some(mut object)) = (resource, object) {
                let path = format!("cluster/{}/{name}.json", resource.qualified_name());
                add(&mut inv, ns, path, &mut object);
            }
        }
    }
    for ns in treatment.keys() {
        if !inv.namespaces.contains_key(ns) {
            inv.left_out.push(LeftOut {
                namespace: ns.clone(),
                reason: "platform namespace with nothing to keep".into(),
            });
        }
    }
    Ok(inv)
}

/// Backs up every user namespace's objects: one snapshot per namespace.
pub fn backup(
    repo: &Repository,
    cluster: &Cluster,
    settings: &BackupSettings,
    progress: &Progress,
) -> Result<BackupReport> {
    let inventory = collect(cluster, settings)?;
    let mut snapshots = Vec::new();
    for (ns, objects) in &inventory.namespaces {
        let mut root = BTreeMap::new();
        for (path, (object, mtime_ns)) in objects {
            let data = clean::canonical_json(object);
            insert(
                &mut root,
                path,
                Source::Bytes {
                    data,
                    mtime_ns: *mtime_ns,
                },
            )?;
        }
        let options = BackupOptions {
            host: settings.cluster.clone(),
            tags: tags(&settings.cluster, ns, "resources", &[]),
            parent: Parent::Auto,
            time: settings.time,
            allow_future_time: settings.allow_future_time,
            ..BackupOptions::default()
        };
        let paths = snapshot_paths(ns, "resources");
        let out = archiver::backup_sources(repo, root, paths, &options, progress)?;
        tracing::info!(namespace = %ns, objects = objects.len(), snapshot = %out.id, "namespace backed up");
        snapshots.push(NamespaceSnapshot {
            namespace: ns.clone(),
            snapshot: out.id,
            objects: objects.len(),
            time: out.snapshot.time,
            seconds: out.snapshot.summary.seconds,
            bytes: out.snapshot.summary.bytes,
            new_bytes: out.snapshot.summary.new_bytes,
        });
    }
    Ok(BackupReport {
        snapshots,
        left_out: inventory.left_out,
        opted_out: inventory.opted_out,
        errors: inventory.errors,
    })
}

/// Puts `source` at the `/`-separated `path` of a folder tree made in memory.
pub(super) fn insert(
    root: &mut BTreeMap<RawBytes, Source>,
    path: &str,
    source: Source,
) -> Result<()> {
    let mut parts: Vec<&str> = path.split('/').collect();
    let leaf = parts.pop().expect("split yields one part");
    let mut folder = root;
    for part in parts.iter().copied().chain([leaf]) {
        if !is_safe_name(part.as_bytes()) {
            return Err(Error::Invalid(format!(
                "{path:?} cannot be stored: {part:?} is not a plain file name"
            )));
        }
    }
    for part in parts {
        let entry = folder
            .entry(RawBytes(part.as_bytes().to_vec()))
            .or_insert_with(|| Source::Folder(BTreeMap::new()));
        folder = match entry {
            Source::Folder(f) => f,
            _ => return Err(Error::Invalid(format!("{path:?} is below a file"))),
        };
    }
    folder.insert(RawBytes(leaf.as_bytes().to_vec()), source);
    Ok(())
}

fn add(inv: &mut Inventory, ns: &str, path: String, object: &mut Value) {
    let created = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0);
    clean::for_backup(object);
    inv.namespaces
        .entry(ns.to_string())
        .or_default()
        .insert(path, (object.take(), created));
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn find_named(all: &[Value], name: &str) -> Option<Value> {
    all.iter().find(|o| name_of(o) == name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_builds_folders_and_refuses_unsafe_names() {
        let mut root = BTreeMap::new();
        let file = || Source::Bytes {
            data: b"{}".to_vec(),
            mtime_ns: 0,
        };
        insert(&mut root, "resources/configmaps/a.json", file()).unwrap();
        insert(&mut root, "resources/configmaps/b.json", file()).unwrap();
        insert(&mut root, "cluster/namespaces/n.json", file()).unwrap();
        let Source::Folder(res) = &root[&RawBytes(b"resources".to_vec())] else {
            panic!()
        };
        let Source::Folder(cms) = &res[&RawBytes(b"configmaps".to_vec())] else {
            panic!()
        };
        assert_eq!(cms.len(), 2);
        assert!(insert(&mut root, "resources/../x.json", file()).is_err());
        assert!(insert(&mut root, "resources/configmaps/a.json/x", file()).is_err());
    }
}
