//! `cairn k8s rbac`: the ClusterRoles of the resource backup and of the restore, rendered from
//! the cluster's discovery with every resource named. RBAC has no "deny" and a wildcard
//! (`resources: ["*"]`) also matches subresources, so a role that must read every kind lists
//! them: `get` on `*` would also grant `nodes/proxy` (the kubelet's API) and `pods/exec`, and
//! `create` on `*` would grant `serviceaccounts/token` (a token for any account).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::cluster::Resource;
use super::select;

/// The cluster-scoped kinds a namespace's snapshot stores for it (and a restore creates), as
/// (group, plural); no other cluster-scoped kind is read or created.
pub const STORED_CLUSTER_RESOURCES: [(&str, &str); 4] = [
    ("", "namespaces"),
    ("", "persistentvolumes"),
    ("storage.k8s.io", "storageclasses"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
];

/// The cluster-scoped kinds a namespace's snapshot holds when its objects name them, as
/// (group, plural): the backup reads them; the restore only reads them (whether one exists, what
/// a ClusterRole grants), so only a restore with an administrator's rights creates them.
pub const REFERENCED_CLUSTER_RESOURCES: [(&str, &str); 5] = [
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("networking.k8s.io", "ingressclasses"),
    ("node.k8s.io", "runtimeclasses"),
];

/// One rule of a ClusterRole: these resources of these groups, these verbs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""`: the core group).
    pub groups: Vec<String>,
    /// Resource plurals, never a subresource or a wildcard.
    pub resources: Vec<String>,
    /// Verbs.
    pub verbs: Vec<&'static str>,
}

/// The served resources named in `cluster` (as (group, plural)), and every listable
/// namespaced kind a backup does not leave out if `namespaced`, by group.
fn stored(
    resources: &[Resource],
    namespaced: bool,
    cluster: &[(&str, &str)],
) -> BTreeMap<String, Vec<String>> {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in resources {
        let kept = (namespaced && r.namespaced)
            || cluster
                .iter()
                .any(|(g, p)| r.api.group == *g && r.api.plural == *p);
        if kept && r.listable && !select::never_backed_up(&r.api.group, &r.api.plural) {
            by_group
                .entry(r.api.group.clone())
                .or_default()
                .push(r.api.plural.clone());
        }
    }
    for plurals in by_group.values_mut() {
        plurals.sort();
        plurals.dedup();
    }
    by_group
}

/// The backup's rules: `get` and `list` on every resource it backs up (namespaced kinds,
/// [`STORED_CLUSTER_RESOURCES`] and [`REFERENCED_CLUSTER_RESOURCES`]), by name.
pub fn backup_rules(resources: &[Resource]) -> Vec<Rule> {
    let cluster: Vec<(&str, &str)> = STORED_CLUSTER_RESOURCES
        .into_iter()
        .chain(REFERENCED_CLUSTER_RESOURCES)
        .collect();
    stored(resources, true, &cluster)
        .into_iter()
        .map(|(group, plurals)| Rule {
            groups: vec![group],
            resources: plurals,
            verbs: vec!["get", "list"],
        })
        .collect()
}

/// The restore's rules: `get` and `create` on the resources a backup stores, never on a
/// subresource; `get` on [`REFERENCED_CLUSTER_RESOURCES`]; and `bind` on roles, so that
/// RoleBindings to roles holding rights the restore lacks (such as the built-in `admin` and
/// `edit`) can be restored.
pub fn restore_rules(resources: &[Resource]) -> Vec<Rule> {
    let rule = |verbs: Vec<&'static str>| {
        move |(group, plurals): (String, Vec<String>)| Rule {
            groups: vec![group],
            resources: plurals,
            verbs: verbs.clone(),
        }
    };
    let mut rules: Vec<Rule> = stored(resources, true, &STORED_CLUSTER_RESOURCES)
        .into_iter()
        .map(rule(vec!["get", "create"]))
        .chain(
            stored(resources, false, &REFERENCED_CLUSTER_RESOURCES)
                .into_iter()
                .map(rule(vec!["get"])),
        )
        .collect();
    rules.push(Rule {
        groups: vec!["rbac.authorization.k8s.io".into()],
        resources: vec!["clusterroles".into(), "roles".into()],
        verbs: vec!["bind"],
    });
    rules
}

/// The two ClusterRoles, `cairn-backup` and `cairn-restore`, as YAML for `kubectl apply -f -`.
pub fn render(resources: &[Resource]) -> String {
    let mut out = String::from(
        "# Rendered by `cairn k8s rbac` from this cluster's discovery: every resource is named, no\n\
         # wildcard (which would also grant subresources such as pods/exec, nodes/proxy and\n\
         # serviceaccounts/token). Render and apply again after installing new kinds (CRDs).\n",
    );
    for (name, comment, rules) in [
        (
            "cairn-backup",
            "reads every kind it backs up; nothing else",
            backup_rules(resources),
        ),
        (
            "cairn-restore",
            "creates objects of namespaces and the cluster-scoped kinds they need; never changes one",
            restore_rules(resources),
        ),
    ] {
        let list = |items: &[String]| serde_json::to_string(items).expect("strings serialize");
        let _ = write!(
            out,
            "---\n# {comment}\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {name}\nrules:\n"
        );
        for rule in rules {
            let verbs: Vec<String> = rule.verbs.iter().map(|v| v.to_string()).collect();
            let _ = write!(
                out,
                "  - apiGroups: {}\n    resources: {}\n    verbs: {}\n",
                list(&rule.groups),
                list(&rule.resources),
                list(&verbs)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::discovery::ApiResource;

    fn resource(group: &str, plural: &str, namespaced: bool) -> Resource {
        Resource {
            api: ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: plural.into(),
                plural: plural.into(),
            },
            namespaced,
            listable: true,
        }
    }

    #[test]
    fn roles_name_every_resource_and_never_a_wildcard() {
        let all = [
            resource("", "pods", true),
            resource("", "secrets", true),
            resource("", "nodes", false),
            resource("", "namespaces", false),
            resource("rbac.authorization.k8s.io", "clusterrolebindings", false),
            resource("example.com", "widgets", true),
        ];
        let backup = backup_rules(&all);
        assert_eq!(
            backup[0],
            Rule {
                groups: vec!["".into()],
                resources: vec!["namespaces".into(), "pods".into(), "secrets".into()],
                verbs: vec!["get", "list"],
            }
        );
        assert_eq!(backup.len(), 3, "{backup:?}"); // no nodes
        assert_eq!(backup[2].resources, ["clusterrolebindings"]);
        let restore = restore_rules(&all);
        let creatable: Vec<&String> = restore
            .iter()
            .filter(|r| r.verbs.contains(&"create"))
            .flat_map(|r| &r.resources)
            .collect();
        assert_eq!(creatable, ["namespaces", "pods", "secrets", "widgets"]);
        // cluster role bindings are only read: never created with this role
        assert!(restore.contains(&Rule {
            groups: vec!["rbac.authorization.k8s.io".into()],
            resources: vec!["clusterrolebindings".into()],
            verbs: vec!["get"],
        }));
        for rule in backup.iter().chain(&restore) {
            assert!(rule.resources.iter().all(|r| r != "*" && !r.contains('/')));
        }
        assert!(!render(&all).contains("\"*\""));
    }
}
