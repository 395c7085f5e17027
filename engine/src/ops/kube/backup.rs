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

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::tree::{RawBytes, is_safe_name};
use crate::ops::backup::{self, BackupOptions, Parent, Source};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::sources::kube::select::{self, Filters, KeepRule, NamespaceChoice};
use crate::sources::kube::{Cluster, Resource, clean, snapshot_paths, tags};

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
    /// Which resources, namespaces and labels are taken.
    pub filters: Filters,
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
    /// Cluster-scoped objects the namespaces' objects name but the cluster does not hold.
    pub missing: Vec<String>,
    /// The tags recording the filters used (see [`Filters::tags`]).
    pub filter_tags: Vec<(&'static str, String)>,
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
    /// Cluster-scoped objects named by what was backed up but not in the cluster (not stored).
    pub missing: Vec<String>,
}

/// How a namespace is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Treatment {
    Everything,
    KeptOnly,
}

/// The cluster-scoped kinds a namespace's snapshot holds when its objects reference them, as
/// (group, kind), besides its Namespace and the CustomResourceDefinitions of its custom objects.
pub const REFERENCED_CLUSTER_KINDS: [(&str, &str); 7] = [
    ("", "PersistentVolume"),
    ("storage.k8s.io", "StorageClass"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
];

/// The cluster-scoped objects a namespace's objects need: (kind, name) → who names it.
pub(super) type Needs = BTreeMap<(&'static str, String), String>;

/// Checks `filters` against the cluster: `Ok(Err(why))` for a resource name that matches
/// nothing, a bad namespace pattern or a label selector the API server refuses.
pub fn check_filters(
    cluster: &Cluster,
    filters: &Filters,
) -> Result<std::result::Result<(), String>> {
    if let Err(why) = filters.resolve(&cluster.resources()) {
        return Ok(Err(why));
    }
    match &filters.selector {
        Some(selector) => Ok(cluster
            .check_selector(selector)?
            .map_err(|why| format!("--selector {selector:?}: the API server says: {why}"))),
        None => Ok(Ok(())),
    }
}

/// Adds to `need` what the namespaced `object` of kind `(group, kind)` names: the volume and
/// class of a claim, the ClusterRole of a RoleBinding, the classes of pod specs and of an
/// Ingress. A restore allows a cluster-scoped object of these kinds only if this names it.
pub(super) fn referenced((group, kind): (&str, &str), object: &Value, need: &mut Needs) {
    let by = format!(
        "{kind} {}",
        object["metadata"]["name"].as_str().unwrap_or_default()
    );
    let mut add = |kind: &'static str, name: &Value| {
        if let Some(name) = name.as_str().filter(|n| !n.is_empty()) {
            need.entry((kind, name.to_string()))
                .or_insert_with(|| by.clone());
        }
    };
    match (group, kind) {
        ("", "PersistentVolumeClaim") => {
            add("PersistentVolume", &object["spec"]["volumeName"]);
            add("StorageClass", &object["spec"]["storageClassName"]);
            add(
                "StorageClass",
                &object["metadata"]["annotations"][clean::BETA_STORAGE_CLASS],
            );
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
            if object["roleRef"]["kind"] == "ClusterRole" =>
        {
            add("ClusterRole", &object["roleRef"]["name"]);
        }
        ("networking.k8s.io", "Ingress") => {
            add("IngressClass", &object["spec"]["ingressClassName"])
        }
        _ => {}
    }
    // pod specs: of pods, of templates (Deployments, Jobs, CronJobs' job templates, custom
    // objects of operators) at any depth
    let mut stack = vec![&object["spec"]];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match key.as_str() {
                        "priorityClassName" => add("PriorityClass", v),
                        "runtimeClassName" => add("RuntimeClass", v),
                        _ => stack.push(v),
                    }
                }
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
}

/// Reads every object to back up.
pub fn collect(cluster: &Cluster, settings: &BackupSettings) -> Result<Inventory> {
    let served = cluster.resources();
    let filters = settings.filters.resolve(&served).map_err(Error::Invalid)?;
    let selector = settings
        .filters
        .selector
        .as_deref()
        .filter(|s| !s.trim().is_empty());
    let resources: Vec<Resource> = served
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
    let mut inv = Inventory {
        filter_tags: settings.filters.tags(&filters),
        ..Inventory::default()
    };
    let mut treatment = BTreeMap::new();
    let mut namespace_objects = BTreeMap::new();
    for ns in cluster.list(find("", "Namespace")?, None)? {
        let name = name_of(&ns).to_string();
        let how = match select::choose_namespace(&ns, &settings.platform_namespaces, &settings.only)
        {
            NamespaceChoice::NotAsked => continue,
            _ if filters.excludes_namespace(&name) => {
                inv.left_out.push(LeftOut {
                    namespace: name,
                    reason: "excluded by --exclude-namespaces".into(),
                });
                continue;
            }
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
    let mut needs: BTreeMap<String, Needs> = BTreeMap::new();
    let mut accounts: BTreeSet<(String, String)> = BTreeSet::new();
    for resource in resources
        .iter()
        .filter(|r| r.namespaced && filters.takes(r))
    {
        let objects = match cluster.list_selected(resource, None, selector) {
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
            referenced((&resource.api.group, &resource.api.kind), &object, need);
            if resource.api.group.is_empty() && resource.api.kind == "ServiceAccount" {
                accounts.insert((ns.clone(), name.clone()));
            }
            let crd = format!("{}.{}", resource.api.plural, resource.api.group);
            if custom.contains_key(&crd) {
                need.insert(
                    ("CustomResourceDefinition", crd),
                    format!("{} {name}", resource.api.kind),
                );
            }
            let path = format!("resources/{}/{name}.json", resource.qualified_name());
            add(&mut inv, &ns, path, &mut object);
        }
    }

    // the cluster-scoped kinds some namespace needs, each listed once: `None` when left out
    // by --exclude-resources or unreadable (reported), absent when the cluster serves none
    let mut wanted: BTreeSet<&str> = needs
        .values()
        .flat_map(|n| n.keys().map(|(k, _)| *k))
        .collect();
    if !accounts.is_empty() {
        wanted.insert("ClusterRoleBinding");
    }
    for (kind, then) in [
        ("PersistentVolume", "StorageClass"),
        ("ClusterRoleBinding", "ClusterRole"),
    ] {
        if wanted.contains(kind) {
            wanted.insert(then);
        }
    }
    let mut listed: BTreeMap<&str, Option<(&Resource, Vec<Value>)>> = BTreeMap::new();
    for (group, kind) in REFERENCED_CLUSTER_KINDS {
        let served = resources
            .iter()
            .find(|r| r.api.group == group && r.api.kind == kind);
        let Some(resource) = served.filter(|_| wanted.contains(kind)) else {
            continue;
        };
        let all = match filters.excludes(resource) {
            true => Ok(None),
            false => cluster
                .list(resource, None)
                .map(|all| Some((resource, all))),
        };
        let all = match all {
            Ok(all) => all,
            Err(e) => {
                inv.errors.push(e.to_string());
                None
            }
        };
        listed.insert(kind, all);
    }
    let crds = find("apiextensions.k8s.io", "CustomResourceDefinition")
        .ok()
        .filter(|r| !filters.excludes(r));
    for (ns, how) in &treatment {
        let mut need = needs.remove(ns).unwrap_or_default();
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
        // the ClusterRoleBindings naming its backed-up service accounts
        let subject_of = |crb: &Value| {
            crb["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|s| {
                    let account = (
                        s["namespace"].as_str()?.to_string(),
                        s["name"].as_str()?.to_string(),
                    );
                    (s["kind"] == "ServiceAccount"
                        && account.0 == *ns
                        && accounts.contains(&account))
                    .then(|| format!("ServiceAccount {}", account.1))
                })
        };
        if accounts.iter().any(|(n, _)| n == ns)
            && let Some(Some((_, crbs))) = listed.get("ClusterRoleBinding")
        {
            for crb in crbs {
                if let Some(by) = subject_of(crb) {
                    need.insert(("ClusterRoleBinding", name_of(crb).to_string()), by);
                }
            }
        }
        // what the cluster-scoped objects need in turn: the class of a bound volume, the role
        // of a binding
        let mut found: BTreeMap<(&str, String), (&Resource, Value)> = BTreeMap::new();
        let mut pending: Vec<((&'static str, String), String)> = need.into_iter().collect();
        while let Some(((kind, name), by)) = pending.pop() {
            if found.contains_key(&(kind, name.clone())) {
                continue;
            }
            let object = if kind == "CustomResourceDefinition" {
                crds.and_then(|r| Some((r, custom.get(&name)?.clone())))
            } else {
                let (resource, object) = match listed.get(kind) {
                    Some(Some((resource, all))) => (Some(*resource), find_named(all, &name)),
                    Some(None) => continue, // excluded, or reported as unreadable
                    None => (None, None),
                };
                if object.is_none() {
                    inv.missing.push(format!(
                        "namespace {ns}: {kind} {name}, named by {by}, is not in the cluster"
                    ));
                }
                resource.zip(object)
            };
            let Some((resource, object)) = object else {
                continue;
            };
            let then = match kind {
                "PersistentVolume" => Some(("StorageClass", &object["spec"]["storageClassName"])),
                "ClusterRoleBinding" if object["roleRef"]["kind"] == "ClusterRole" => {
                    Some(("ClusterRole", &object["roleRef"]["name"]))
                }
                _ => None,
            };
            if let Some((next, Some(next_name))) = then.map(|(k, v)| (k, v.as_str())) {
                pending.push(((next, next_name.to_string()), format!("{kind} {name}")));
            }
            found.insert((kind, name), (resource, object));
        }
        for ((_, name), (resource, mut object)) in found {
            let path = format!("cluster/{}/{name}.json", resource.qualified_name());
            add(&mut inv, ns, path, &mut object);
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
    let filter_tags: Vec<(&str, &str)> = inventory
        .filter_tags
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
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
            tags: tags(&settings.cluster, ns, "resources", &filter_tags),
            parent: Parent::Auto,
            time: settings.time,
            allow_future_time: settings.allow_future_time,
            ..BackupOptions::default()
        };
        let paths = snapshot_paths(ns, "resources");
        let out = backup::backup_sources(repo, root, paths, &options, progress)?;
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
        missing: inventory.missing,
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
