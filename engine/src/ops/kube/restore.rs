//! `cairn k8s restore`: creates the objects of namespace snapshots in a cluster, in dependency
//! order, and never changes an object that already exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::backup::{self, Needs, REFERENCED_CLUSTER_KINDS};
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, NodeKind, RawBytes};
use crate::repository::Repository;
use crate::repository::trees;
use crate::sources::kube::modifiers::Modifiers;
use crate::sources::kube::select::{Selector, names_resource};
use crate::sources::kube::{self, Cluster, Created, clean};

/// Settings of a Kubernetes restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreSettings {
    /// Old namespace → the namespace to restore it into.
    pub namespace_mapping: BTreeMap<String, String>,
    /// Only these kinds (kind, plural or `plural.group`, any case); all when empty.
    /// Namespaces are created when needed whatever this says.
    pub include_kinds: Vec<String>,
    /// Only objects whose labels match (Namespaces are created when needed regardless).
    pub selector: Selector,
    /// Only these (old) namespaces; all when empty.
    pub include_namespaces: Vec<String>,
    /// Only print what would be done.
    pub dry_run: bool,
    /// Keep the node ports of Services (default: dropped, so the new cluster allocates them).
    pub preserve_nodeports: bool,
    /// Also create the ClusterRoleBindings of the snapshots' service accounts (they grant rights
    /// in the whole cluster; default: listed as left out).
    pub cluster_role_bindings: bool,
    /// Changes made to the objects before they are created (`--resource-modifiers`).
    pub modifiers: Option<Modifiers>,
}

/// Names one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    /// Its kind.
    pub kind: String,
    /// Its namespace (after mapping), if namespaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    fn of(object: &Value) -> ObjectRef {
        ObjectRef {
            kind: object["kind"].as_str().unwrap_or_default().into(),
            namespace: object["metadata"]["namespace"].as_str().map(str::to_string),
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// An object with why it was not created.
#[derive(Clone, Debug, Serialize)]
pub struct NotCreated {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
    /// Why.
    pub reason: String,
}

/// An object resource modifier rules changed.
#[derive(Clone, Debug, Serialize)]
pub struct Modified {
    /// The object.
    #[serde(flatten)]
    pub object: ObjectRef,
    /// The rules that matched it, numbered from 1 in the file's order.
    pub rules: Vec<usize>,
    /// In a dry run: the object as it would be created (Secrets' values hidden).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
}

/// What a restore did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    /// Objects created (dry run: that would be created).
    pub created: Vec<ObjectRef>,
    /// Objects that already existed and were left untouched.
    pub existing: Vec<ObjectRef>,
    /// Objects not restored on purpose, with why (their controller recreates them, ...).
    pub left_out: Vec<NotCreated>,
    /// Objects the server refused, with its answer.
    pub failed: Vec<NotCreated>,
    /// Objects the snapshot's namespace may not hold (another namespace's, or a cluster-scoped
    /// one of a kind a backup does not store or that its objects do not reference), with why;
    /// never created. Listed where the snapshot claims they are.
    pub refused: Vec<NotCreated>,
    /// Objects resource modifiers changed (those whose modifiers failed are in `failed`).
    pub modified: Vec<Modified>,
}

/// The objects stored in a namespace snapshot, as JSON.
pub fn stored_objects(repo: &Repository, snapshot: &Snapshot) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    trees::walk(
        repo,
        &snapshot.tree,
        &mut Vec::new(),
        &mut |path, node| {
            let top = &path[0];
            if *top != RawBytes(b"resources".to_vec()) && *top != RawBytes(b"cluster".to_vec()) {
                return Ok(false);
            }
            if node.kind == NodeKind::File {
                let mut bytes = Vec::with_capacity(node.size as usize);
                for id in &node.content {
                    bytes.extend(repo.load_blob(id)?);
                }
                let object = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::damaged("stored Kubernetes object", tree::display_path(path), e)
                })?;
                out.push(object);
            }
            Ok(true)
        },
        &mut tree::stop_at_damage,
    )?;
    Ok(out)
}

/// The order objects are created in: what others depend on first.
fn rank(kind: &str) -> u8 {
    match kind {
        "CustomResourceDefinition" => 0,
        "Namespace" => 1,
        "StorageClass" | "PriorityClass" | "RuntimeClass" | "IngressClass" => 2,
        "PersistentVolume" => 3,
        "PersistentVolumeClaim" => 4,
        "Secret" => 5,
        "ConfigMap" => 6,
        "ServiceAccount" => 7,
        "LimitRange" => 8,
        "ResourceQuota" => 9,
        "Role" | "ClusterRole" => 10,
        "RoleBinding" | "ClusterRoleBinding" => 11,
        "Pod" => 13,
        _ => 12,
    }
}

/// Why a stored object is not restored on purpose, if it is not.
fn policy(object: &Value) -> Option<String> {
    let owners = object["metadata"]["ownerReferences"].as_array();
    if let Some(owner) = owners.and_then(|o| o.iter().find(|o| o["controller"] == true)) {
        return Some(format!(
            "owned by {} {}: its controller makes it again",
            owner["kind"].as_str().unwrap_or("?"),
            owner["name"].as_str().unwrap_or("?")
        ));
    }
    match object["kind"].as_str() {
        Some("Secret") if object["type"] == "kubernetes.io/service-account-token" => {
            Some("service account token: the cluster makes a new one".into())
        }
        Some("ConfigMap") if object["metadata"]["name"] == "kube-root-ca.crt" => {
            Some("made by the cluster in every namespace".into())
        }
        Some("Service")
            if object["metadata"]["name"] == "kubernetes"
                && object["metadata"]["namespace"] == "default" =>
        {
            Some("the API server's own service".into())
        }
        Some("PersistentVolume") if object["spec"]["persistentVolumeReclaimPolicy"] != "Retain" => {
            Some("provisioned dynamically: the restored claim gets a new volume; bring its data back with `cairn k8s restore-volume`".into())
        }
        _ => None,
    }
}

/// What a cluster-scoped object a namespace refers to would do to the rest of the cluster, if
/// anything: a ClusterRole that aggregates or is aggregated merges rules into other roles (the
/// built-in `view`, `edit`, `admin` are bound in every namespace); a PersistentVolume on a
/// node's folder (`hostPath`, `local`) gives pods that node's files; a default StorageClass or
/// IngressClass, or a PriorityClass with `globalDefault`, applies to every namespace's new
/// objects. Such objects are never created from a snapshot, whoever may have written it.
fn reach_beyond_namespace(group: &str, kind: &str, object: &Value) -> Option<String> {
    let labels = object["metadata"]["labels"].as_object();
    let annotation = |key: &str| object["metadata"]["annotations"][key] == "true";
    match (group, kind) {
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            if !object["aggregationRule"].is_null() {
                return Some("has an aggregationRule (it takes in other roles' rules)".into());
            }
            labels
                .into_iter()
                .flatten()
                .find(|(key, _)| key.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
                .map(|(key, _)| format!("has label {key} (its rules would join that role)"))
        }
        ("", "PersistentVolume") => ["hostPath", "local"]
            .into_iter()
            .find(|source| !object["spec"][source].is_null())
            .map(|source| format!("is a node's folder ({source})")),
        ("storage.k8s.io", "StorageClass")
            if annotation("storageclass.kubernetes.io/is-default-class")
                || annotation("storageclass.beta.kubernetes.io/is-default-class") =>
        {
            Some("is marked the default class".into())
        }
        ("networking.k8s.io", "IngressClass")
            if annotation("ingressclass.kubernetes.io/is-default-class") =>
        {
            Some("is marked the default class".into())
        }
        ("scheduling.k8s.io", "PriorityClass") if object["globalDefault"] == true => {
            Some("has globalDefault set (it would apply to every new pod)".into())
        }
        _ => None,
    }
}

fn group_of(object: &Value) -> &str {
    match object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .split_once('/')
    {
        Some((group, _)) => group,
        None => "",
    }
}

/// Why `object`, stored in the snapshot of namespace `ns` with `objects`, may not be created,
/// if it may not: a namespaced object must be in `ns`; a cluster-scoped one must be of a kind a
/// backup stores for a namespace and be referenced by the snapshot's objects (its Namespace,
/// the volumes and classes of its claims, the definitions of its custom objects, the
/// ClusterRoles of its RoleBindings, the classes its pods and Ingresses name, the
/// ClusterRoleBindings whose subjects are all its service accounts and their ClusterRoles). A
/// snapshot is treated as hostile: whoever can write to the repository could have made it.
fn refusal(cluster: &Cluster, object: &Value, ns: &str, objects: &[Value]) -> Option<String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let group = group_of(object);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let own = || objects.iter().filter(|o| o["metadata"]["namespace"] == ns);
    // named by one of the namespace's objects, as a backup finds what it needs
    let named = |kind: &str| {
        own().any(|o| {
            let mut need = Needs::new();
            let o_kind = o["kind"].as_str().unwrap_or_default();
            backup::referenced((group_of(o), o_kind), o, &mut need);
            need.keys().any(|(k, n)| *k == kind && n == name)
        })
    };
    let accepted_binding = |o: &&Value| {
        o["kind"] == "ClusterRoleBinding"
            && group_of(o) == "rbac.authorization.k8s.io"
            && refusal(cluster, o, ns, objects).is_none()
    };
    if let Some(why) = reach_beyond_namespace(group, kind, object) {
        return Some(format!(
            "{kind} {name} {why}, which reaches beyond namespace {ns}: create it by hand if it is right"
        ));
    }
    let cluster_scoped = matches!(kind, "Namespace" | "CustomResourceDefinition")
        || REFERENCED_CLUSTER_KINDS.contains(&(group, kind));
    if cluster_scoped && !object["metadata"]["namespace"].is_null() {
        return Some(format!(
            "{kind} is cluster-scoped but this one claims namespace {}",
            object["metadata"]["namespace"]
        ));
    }
    let referenced = match (group, kind) {
        ("", "Namespace") => name == ns,
        ("", "PersistentVolume") => {
            object["spec"]["claimRef"]["namespace"] == ns && named("PersistentVolume")
        }
        ("storage.k8s.io", "StorageClass") => {
            named("StorageClass")
                || objects.iter().any(|pv| {
                    pv["kind"] == "PersistentVolume"
                        && pv["spec"]["storageClassName"] == name
                        && refusal(cluster, pv, ns, objects).is_none()
                })
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            object["spec"]["scope"] == "Namespaced"
                && own().any(|o| {
                    group_of(o) == object["spec"]["group"]
                        && o["kind"] == object["spec"]["names"]["kind"]
                })
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            named("ClusterRole")
                || objects
                    .iter()
                    .filter(accepted_binding)
                    .any(|b| b["roleRef"]["kind"] == "ClusterRole" && b["roleRef"]["name"] == name)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            let subjects = object["subjects"].as_array().map(Vec::as_slice);
            let others: Vec<String> = subjects
                .unwrap_or_default()
                .iter()
                .filter(|s| s["kind"] != "ServiceAccount" || s["namespace"] != ns)
                .map(|s| {
                    format!(
                        "{} {}",
                        s["kind"].as_str().unwrap_or("?"),
                        s["name"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            if !others.is_empty() {
                return Some(format!(
                    "ClusterRoleBinding {name} also binds {} (only service accounts of namespace {ns} may be bound by its snapshot): create it by hand if it is right",
                    others.join(", ")
                ));
            }
            let stored = |kind: &str, name: &Value| {
                objects
                    .iter()
                    .any(|o| o["kind"] == kind && o["metadata"]["name"] == *name)
            };
            object["roleRef"]["kind"] == "ClusterRole"
                && stored("ClusterRole", &object["roleRef"]["name"])
                && subjects.unwrap_or_default().iter().any(|s| {
                    own().any(|o| {
                        o["kind"] == "ServiceAccount" && o["metadata"]["name"] == s["name"]
                    })
                })
        }
        ("scheduling.k8s.io", "PriorityClass") => named("PriorityClass"),
        ("networking.k8s.io", "IngressClass") => named("IngressClass"),
        ("node.k8s.io", "RuntimeClass") => named("RuntimeClass"),
        _ => {
            let namespaced = cluster
                .resolve(object["apiVersion"].as_str().unwrap_or_default(), kind)
                .is_none_or(|r| r.namespaced);
            return match object["metadata"]["namespace"].as_str() {
                _ if !namespaced => Some(format!(
                    "{kind} is cluster-scoped: a namespace's snapshot holds no {kind}"
                )),
                Some(theirs) if theirs == ns => None,
                Some(theirs) => Some(format!(
                    "in namespace {theirs}, not in the snapshot's namespace {ns}"
                )),
                None => Some(format!(
                    "no namespace: a namespace's snapshot holds only objects of namespace {ns} and the cluster-scoped Namespace, CustomResourceDefinition, {}",
                    REFERENCED_CLUSTER_KINDS.map(|(_, k)| k).join(", ")
                )),
            };
        }
    };
    (!referenced)
        .then(|| format!("{kind} {name} is not one that the objects of namespace {ns} need"))
}

/// Whether `kind_filter` (kind, plural or `plural.group`, any case) names `object`'s kind.
fn kind_matches(cluster: &Cluster, filters: &[String], object: &Value) -> bool {
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = cluster.resolve(object["apiVersion"].as_str().unwrap_or_default(), kind);
    filters.iter().any(|f| {
        f.eq_ignore_ascii_case(kind) || resource.as_ref().is_some_and(|r| names_resource(f, r))
    })
}

/// Restores the objects of `snapshots` into the cluster.
pub fn restore(
    repo: &Repository,
    cluster: &mut Cluster,
    snapshots: &[Snapshot],
    settings: &RestoreSettings,
) -> Result<RestoreReport> {
    let ns_wanted = |ns: &str| {
        settings.include_namespaces.is_empty()
            || settings.include_namespaces.iter().any(|n| n == ns)
    };
    let mut report = RestoreReport::default();
    let mut stored: BTreeMap<(String, String, String, String), Value> = BTreeMap::new();
    for snapshot in snapshots {
        let Some(namespace) = kube::tag(snapshot, "namespace") else {
            return Err(Error::Invalid(
                "a resources snapshot without a namespace tag was not made by `cairn k8s backup`: give the snapshots of namespaces".into(),
            ));
        };
        let objects = stored_objects(repo, snapshot)?;
        for object in &objects {
            if let Some(reason) = refusal(cluster, object, namespace, &objects) {
                if ns_wanted(namespace) {
                    report.refused.push(NotCreated {
                        object: ObjectRef::of(object),
                        reason,
                    });
                }
                continue;
            }
            let object = object.clone();
            let key = (
                object["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object["kind"].as_str().unwrap_or_default().to_string(),
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            stored.insert(key, object);
        }
    }
    let mut chosen = Vec::new();
    let mut changes = clean::Changes {
        mapping: settings.namespace_mapping.clone(),
        preserve_nodeports: settings.preserve_nodeports,
        ..clean::Changes::default()
    };
    let mut custom_kinds = BTreeSet::new();
    for ((_, kind, ns, name), object) in stored {
        let wanted = match kind.as_str() {
            "Namespace" => ns_wanted(&name),
            "PersistentVolume" => ns_wanted(
                object["spec"]["claimRef"]["namespace"]
                    .as_str()
                    .unwrap_or_default(),
            ),
            "ClusterRoleBinding" => object["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| ns_wanted(s["namespace"].as_str().unwrap_or_default())),
            _ if ns.is_empty() => true, // classes, roles, definitions
            _ => ns_wanted(&ns),
        };
        let filtered = matches!(kind.as_str(), "Namespace" | "CustomResourceDefinition")
            || (settings.include_kinds.is_empty()
                || kind_matches(cluster, &settings.include_kinds, &object))
                && settings.selector.matches(&object);
        if !wanted || !filtered {
            continue;
        }
        let reason = policy(&object).or_else(|| {
            (kind == "ClusterRoleBinding" && !settings.cluster_role_bindings).then(|| {
                "grants rights in the whole cluster: restored only with --restore-cluster-role-bindings (check it with --dry-run first)".to_string()
            })
        });
        if let Some(reason) = reason {
            if kind == "PersistentVolume" {
                let claim = &object["spec"]["claimRef"];
                changes.unbind_claims.push(format!(
                    "{}/{}",
                    claim["namespace"].as_str().unwrap_or_default(),
                    claim["name"].as_str().unwrap_or_default()
                ));
            }
            if kind == "Secret" {
                changes.left_out_secrets.push(format!("{ns}/{name}"));
            }
            // reported where it would have gone
            let mut object_ref = ObjectRef::of(&object);
            object_ref.namespace = object_ref
                .namespace
                .map(|ns| settings.namespace_mapping.get(&ns).cloned().unwrap_or(ns));
            report.left_out.push(NotCreated {
                object: object_ref,
                reason,
            });
            continue;
        }
        if kind != "CustomResourceDefinition" {
            let group = object["apiVersion"].as_str().unwrap_or_default();
            custom_kinds.insert((
                group.split('/').next().unwrap_or_default().to_string(),
                kind,
            ));
        }
        chosen.push(object);
    }
    // CustomResourceDefinitions are restored only for the custom objects restored with them,
    // unless asked for by kind
    chosen.retain(|o| {
        o["kind"] != "CustomResourceDefinition"
            || custom_kinds.contains(&(
                o["spec"]["group"].as_str().unwrap_or_default().to_string(),
                o["spec"]["names"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ))
            || (!settings.include_kinds.is_empty()
                && kind_matches(cluster, &settings.include_kinds, o))
    });
    for object in &mut chosen {
        clean::for_restore(object, &changes);
    }
    if let Some(modifiers) = &settings.modifiers {
        chosen.retain_mut(|object| {
            let kind = object["kind"].as_str().unwrap_or_default();
            let resource = cluster
                .resolve(object["apiVersion"].as_str().unwrap_or_default(), kind)
                .map(|r| r.qualified_name())
                .unwrap_or_else(|| kind.to_ascii_lowercase());
            match modifiers.apply(&resource, object) {
                Ok(rules) if rules.is_empty() => true,
                Ok(rules) => {
                    report.modified.push(Modified {
                        object: ObjectRef::of(object),
                        rules,
                        manifest: settings.dry_run.then(|| shown(object)),
                    });
                    true
                }
                Err(reason) => {
                    report.failed.push(NotCreated {
                        object: ObjectRef::of(object),
                        reason,
                    });
                    false
                }
            }
        });
    }
    chosen.sort_by_key(|o| {
        (
            rank(o["kind"].as_str().unwrap_or_default()),
            ObjectRef::of(o),
        )
    });

    let crds: Vec<&Value> = chosen
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    for crd in &crds {
        create(cluster, crd, settings.dry_run, &mut report)?;
    }
    if !crds.is_empty() && !settings.dry_run {
        for crd in &crds {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            if !cluster.wait_established(name, Duration::from_secs(60))? {
                tracing::warn!("CustomResourceDefinition {name} is not established after 60 s");
            }
        }
        cluster.rediscover()?;
    }
    for object in chosen
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        if object["kind"] == "ClusterRoleBinding"
            && let Some(reason) = grants_otherwise(cluster, object, &chosen)?
        {
            report.failed.push(NotCreated {
                object: ObjectRef::of(object),
                reason,
            });
            continue;
        }
        create(cluster, object, settings.dry_run, &mut report)?;
    }
    Ok(report)
}

/// `object` to be shown: a Secret's values are replaced by `(hidden)`.
fn shown(object: &Value) -> Value {
    let mut shown = object.clone();
    if object["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(values) = shown[field].as_object_mut() {
                values
                    .values_mut()
                    .for_each(|v| *v = Value::from("(hidden)"));
            }
        }
    }
    shown
}

/// Why ClusterRoleBinding `binding` would grant other rights than it did when backed up, if it
/// would: its ClusterRole must be among the restored objects (`chosen`) and, if the cluster
/// holds one of that name, with the same rules.
fn grants_otherwise(
    cluster: &Cluster,
    binding: &Value,
    chosen: &[Value],
) -> Result<Option<String>> {
    let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
    let Some(stored) = chosen
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == role)
    else {
        return Ok(Some(format!(
            "its ClusterRole {role} is not restored with it (not in the snapshot, or filtered out): bind it by hand if it is right"
        )));
    };
    let Some(resource) = cluster.resolve("rbac.authorization.k8s.io/v1", "ClusterRole") else {
        return Ok(Some("this cluster serves no ClusterRoles".into()));
    };
    let rights = |o: &Value| (o["rules"].clone(), o["aggregationRule"].clone());
    Ok(match cluster.get(&resource, None, role)? {
        Some(existing) if rights(&existing) != rights(stored) => Some(format!(
            "ClusterRole {role} in this cluster grants other rules than the one in the snapshot: the binding would grant what the backup did not have; compare them and bind by hand"
        )),
        _ => None,
    })
}

/// Creates one object (or, in a dry run, checks whether it exists), recording the outcome.
fn create(
    cluster: &Cluster,
    object: &Value,
    dry_run: bool,
    report: &mut RestoreReport,
) -> Result<()> {
    let who = ObjectRef::of(object);
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let Some(resource) = cluster.resolve(api_version, kind) else {
        if dry_run {
            report.created.push(who); // its API comes with a CustomResourceDefinition restored first
        } else {
            report.failed.push(NotCreated {
                object: who,
                reason: format!(
                    "this cluster does not serve {kind} ({api_version}): install its API (CustomResourceDefinition or operator) first, then restore again"
                ),
            });
        }
        return Ok(());
    };
    let mut object = object.clone();
    object["apiVersion"] = Value::from(resource.api.api_version.clone());
    if dry_run {
        let exists = cluster
            .get(&resource, who.namespace.as_deref(), &who.name)?
            .is_some();
        if exists {
            report.existing.push(who)
        } else {
            report.created.push(who)
        }
        return Ok(());
    }
    match cluster.create(&resource, &object) {
        Ok(Created::New) => {
            tracing::info!("created {who}");
            report.created.push(who)
        }
        Ok(Created::Existed) => report.existing.push(who),
        // the server may refuse an object that exists for another reason first (a Service's
        // node port is taken: 422 before 409): an object that exists is listed as existing
        Err(reason) => match cluster.get(&resource, who.namespace.as_deref(), &who.name) {
            Ok(Some(_)) => report.existing.push(who),
            _ => report.failed.push(NotCreated {
                object: who,
                reason,
            }),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dependencies_come_first() {
        let order = [
            "Deployment",
            "Secret",
            "Namespace",
            "CustomResourceDefinition",
            "Pod",
            "RoleBinding",
            "Role",
            "PersistentVolumeClaim",
        ];
        let mut sorted = order.to_vec();
        sorted.sort_by_key(|k| rank(k));
        assert_eq!(
            sorted,
            [
                "CustomResourceDefinition",
                "Namespace",
                "PersistentVolumeClaim",
                "Secret",
                "Role",
                "RoleBinding",
                "Deployment",
                "Pod"
            ]
        );
    }

    #[test]
    fn owned_objects_and_cluster_made_ones_are_left_to_the_cluster() {
        let owned = json!({"kind": "ReplicaSet", "metadata": {"ownerReferences": [{"kind": "Deployment", "name": "web", "controller": true}]}});
        assert!(policy(&owned).unwrap().contains("Deployment web"));
        let referenced = json!({"kind": "ConfigMap", "metadata": {"name": "c", "ownerReferences": [{"kind": "X", "name": "y"}]}});
        assert!(policy(&referenced).is_none());
        assert!(policy(&json!({"kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {}})).is_some());
        assert!(policy(&json!({"kind": "Secret", "type": "Opaque", "metadata": {}})).is_none());
        let api =
            json!({"kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default"}});
        assert!(policy(&api).is_some());
        let other =
            json!({"kind": "Service", "metadata": {"name": "kubernetes", "namespace": "shop"}});
        assert!(policy(&other).is_none());
        assert!(policy(&json!({"kind": "PersistentVolume", "metadata": {}, "spec": {"persistentVolumeReclaimPolicy": "Delete"}})).is_some());
        assert!(policy(&json!({"kind": "PersistentVolume", "metadata": {}, "spec": {"persistentVolumeReclaimPolicy": "Retain"}})).is_none());
    }
}
