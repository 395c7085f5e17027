//! How objects are stored and brought back: the server-set fields removed on backup, the
//! canonical JSON they are stored as, and the changes that let them be created in a new cluster.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Metadata fields the API server sets; they are never stored.
const SERVER_METADATA: [&str; 8] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Annotations that record a binding or provisioning decision of the old cluster.
const BINDING_ANNOTATIONS: [&str; 5] = [
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// The annotation older charts name a claim's StorageClass with, instead of
/// `spec.storageClassName`.
pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// What a restore changes in stored objects, besides the decisions it leaves to the new cluster.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Old namespace → the namespace to restore it into.
    pub mapping: BTreeMap<String, String>,
    /// `namespace/name` of claims whose old volume is not restored (restored without
    /// `volumeName`, so that the new cluster provisions one).
    pub unbind_claims: Vec<String>,
    /// `namespace/name` of Secrets left out (service-account tokens): ServiceAccounts restored
    /// without references to them.
    pub left_out_secrets: Vec<String>,
    /// Keep the node ports of Services (default: the new cluster allocates them, as the old
    /// ones are taken while the original Service exists).
    pub preserve_nodeports: bool,
}

/// Removes what the server sets (status and the server's metadata fields) from an object.
pub fn for_backup(object: &mut Value) {
    remove(object, &[], &["status"]);
    remove(object, &["metadata"], &SERVER_METADATA);
}

/// The object as stored: JSON with keys sorted at every level, indented, ending in a newline,
/// so that an unchanged object gives the same bytes (and the same blobs) on every run.
pub fn canonical_json(object: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&sorted(object)).expect("JSON values serialize");
    out.push(b'\n');
    out
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut entries: Vec<(&String, &Value)> = o.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        v => v.clone(),
    }
}

/// Prepares a stored object for creation in a (possibly new) cluster: moves it to its mapped
/// namespace, drops owner references (the owners' ids belong to the old cluster, and the
/// garbage collector would delete an object whose owner it cannot find), lets the new cluster
/// choose cluster IPs, node ports, node names and Job selectors, clears binding decisions and
/// drops references to Secrets that are not restored ([`Changes`]).
pub fn for_restore(object: &mut Value, changes: &Changes) {
    let map = |ns: &str| {
        changes
            .mapping
            .get(ns)
            .cloned()
            .unwrap_or_else(|| ns.to_string())
    };
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let old_ns = object["metadata"]["namespace"].as_str().map(str::to_string);
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(ns) = &old_ns {
            meta.insert("namespace".into(), Value::from(map(ns)));
        }
        if kind == "Namespace" {
            meta.insert("name".into(), Value::from(map(&name)));
        }
        meta.remove("ownerReferences");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            for k in BINDING_ANNOTATIONS {
                a.remove(k);
            }
        }
    }
    match kind.as_str() {
        "Service" => {
            if object["spec"]["clusterIP"] != "None" {
                remove(object, &["spec"], &["clusterIP", "clusterIPs"]);
            }
            if !changes.preserve_nodeports {
                remove(object, &["spec"], &["healthCheckNodePort"]);
                let ports = at(object, &["spec", "ports"]).and_then(Value::as_array_mut);
                for port in ports.into_iter().flatten() {
                    remove(port, &[], &["nodePort"]);
                }
            }
        }
        "ServiceAccount" => {
            let ns = old_ns.as_deref().unwrap_or_default();
            if let Some(secrets) = at(object, &["secrets"]).and_then(Value::as_array_mut) {
                secrets.retain(|s| {
                    let name = s["name"].as_str().unwrap_or_default();
                    !changes.left_out_secrets.contains(&format!("{ns}/{name}"))
                });
            }
        }
        "Pod" => remove(object, &["spec"], &["nodeName"]),
        "Job" if object["spec"]["manualSelector"] != true => {
            remove(object, &["spec"], &["selector"]);
            let labels = ["controller-uid", "batch.kubernetes.io/controller-uid"];
            remove(object, &["spec", "template", "metadata", "labels"], &labels);
        }
        "PersistentVolumeClaim" => {
            let key = format!("{}/{name}", old_ns.as_deref().unwrap_or_default());
            if changes.unbind_claims.contains(&key) {
                remove(object, &["spec"], &["volumeName"]);
            }
        }
        "PersistentVolume" => {
            if let Some(c) = at(object, &["spec", "claimRef"]).and_then(Value::as_object_mut) {
                c.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "name" | "namespace"));
                if let Some(ns) = c.get("namespace").and_then(Value::as_str) {
                    let mapped = map(ns);
                    c.insert("namespace".into(), Value::from(mapped));
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = at(object, &["subjects"]).and_then(Value::as_array_mut);
            for s in subjects.into_iter().flatten() {
                if s["kind"] == "ServiceAccount"
                    && let Some(ns) = s["namespace"].as_str()
                {
                    let mapped = map(ns);
                    s["namespace"] = Value::from(mapped);
                }
            }
        }
        _ => {}
    }
    remove(object, &[], &["status"]);
}

/// The value at `path` (object keys), if there is one; never adds anything.
fn at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(*k))
}

/// Removes `keys` from the object at `path`, if there is one.
fn remove(v: &mut Value, path: &[&str], keys: &[&str]) {
    if let Some(o) = at(v, path).and_then(Value::as_object_mut) {
        for k in keys {
            o.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backup_drops_server_fields_and_keeps_the_rest() {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [],
                "labels": {"a": "b"}},
            "data": {"k": "v"}, "status": {"x": 1}});
        for_backup(&mut o);
        assert_eq!(
            o,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "n", "labels": {"a": "b"}},
                "data": {"k": "v"}})
        );
    }

    #[test]
    fn canonical_json_does_not_depend_on_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b": {"y": 1, "x": [ {"q": 1, "p": 2} ]}, "a": 0}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a": 0, "b": {"x": [ {"p": 2, "q": 1} ], "y": 1}}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert!(
            String::from_utf8(canonical_json(&a))
                .unwrap()
                .starts_with("{\n  \"a\": 0")
        );
    }

    #[test]
    fn restore_maps_namespaces_and_clears_old_cluster_decisions() {
        let mapping = Changes {
            mapping: BTreeMap::from([("old".to_string(), "new".to_string())]),
            ..Changes::default()
        };
        let unbind = Changes {
            unbind_claims: vec!["old/data".into()],
            ..mapping.clone()
        };
        let mut svc = json!({"kind": "Service", "metadata": {"name": "s", "namespace": "old",
            "ownerReferences": [{"uid": "x"}]}, "spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ports": []}});
        for_restore(&mut svc, &mapping);
        assert_eq!(
            svc,
            json!({"kind": "Service", "metadata": {"name": "s", "namespace": "new"}, "spec": {"ports": []}})
        );

        let mut headless = json!({"kind": "Service", "metadata": {"name": "h", "namespace": "x"}, "spec": {"clusterIP": "None"}});
        for_restore(&mut headless, &mapping);
        assert_eq!(headless["spec"]["clusterIP"], "None");

        let mut pvc = json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "old",
            "annotations": {"pv.kubernetes.io/bind-completed": "yes", "mine": "1"}}, "spec": {"volumeName": "pv-1"}});
        let mut kept = pvc.clone();
        for_restore(&mut pvc, &unbind);
        assert_eq!(pvc["spec"], json!({}));
        assert_eq!(pvc["metadata"]["annotations"], json!({"mine": "1"}));
        for_restore(&mut kept, &mapping);
        assert_eq!(kept["spec"]["volumeName"], "pv-1");

        let mut pv = json!({"kind": "PersistentVolume", "metadata": {"name": "pv-1"},
            "spec": {"claimRef": {"kind": "PersistentVolumeClaim", "namespace": "old", "name": "data", "uid": "u", "resourceVersion": "3"}}});
        for_restore(&mut pv, &mapping);
        assert_eq!(
            pv["spec"]["claimRef"],
            json!({"kind": "PersistentVolumeClaim", "namespace": "new", "name": "data"})
        );

        let mut cm = json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}});
        let untouched = cm.clone();
        for_restore(&mut cm, &mapping);
        assert_eq!(cm, untouched, "nothing is added to an object");

        let mut ns = json!({"kind": "Namespace", "metadata": {"name": "old"}});
        for_restore(&mut ns, &mapping);
        assert_eq!(ns["metadata"]["name"], "new");

        let mut job = json!({"kind": "Job", "metadata": {"name": "j", "namespace": "x"},
            "spec": {"selector": {"matchLabels": {"controller-uid": "u"}},
                     "template": {"metadata": {"labels": {"controller-uid": "u", "job-name": "j"}}}}});
        for_restore(&mut job, &mapping);
        assert_eq!(
            job["spec"],
            json!({"template": {"metadata": {"labels": {"job-name": "j"}}}})
        );

        let mut rb = json!({"kind": "RoleBinding", "metadata": {"name": "r", "namespace": "old"},
            "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "old"}, {"kind": "User", "name": "u"}]});
        for_restore(&mut rb, &mapping);
        assert_eq!(rb["subjects"][0]["namespace"], "new");
        assert_eq!(rb["subjects"][1], json!({"kind": "User", "name": "u"}));
    }

    #[test]
    fn node_ports_are_dropped_unless_kept_and_left_out_tokens_are_not_named() {
        let svc = json!({"kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "healthCheckNodePort": 31000, "externalTrafficPolicy": "Local",
                "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443}]}});
        let mut dropped = svc.clone();
        for_restore(&mut dropped, &Changes::default());
        assert_eq!(
            dropped["spec"],
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}, {"port": 443}]})
        );
        let mut kept = svc.clone();
        let preserve = Changes {
            preserve_nodeports: true,
            ..Changes::default()
        };
        for_restore(&mut kept, &preserve);
        assert_eq!(kept["spec"], svc["spec"]);

        let mut sa = json!({"kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "shop"},
            "secrets": [{"name": "app-token-x1"}, {"name": "registry"}]});
        let changes = Changes {
            left_out_secrets: vec!["shop/app-token-x1".into()],
            ..Changes::default()
        };
        for_restore(&mut sa, &changes);
        assert_eq!(sa["secrets"], json!([{"name": "registry"}]));
    }
}
