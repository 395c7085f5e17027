//! What the deployed service accounts may do, and what a snapshot may make a restore do, against
//! the real API server (RBAC authorizer on; started by scripts/test.sh): no role reaches a
//! subresource such as `pods/exec`, `nodes/proxy` or `serviceaccounts/token`; the backup's role
//! covers every kind the cluster serves; a restore creates only what the snapshot's namespace
//! may hold, whatever the snapshot's JSON claims.

mod common;

use std::path::Path;

use common::kube::{KINDS, Kube, create_crd, deploy_file, deploy_objects, rendered_roles, suffix};
use common::*;
use serde_json::{Value, json};

/// The questions of issue 16's table (and the other subresources a wildcard reaches), as
/// (verb, group, resource[/subresource], namespace): every service account must answer no.
const DANGEROUS: [(&str, &str, &str, Option<&str>); 10] = [
    ("get", "", "nodes/proxy", None),
    ("create", "", "nodes/proxy", None),
    ("get", "", "pods/exec", Some("kube-system")),
    ("create", "", "pods/exec", Some("kube-system")),
    ("create", "", "pods/attach", Some("kube-system")),
    ("create", "", "pods/portforward", Some("kube-system")),
    ("create", "", "pods/eviction", Some("kube-system")),
    ("get", "", "services/proxy", Some("kube-system")),
    ("create", "", "serviceaccounts/token", Some("kube-system")),
    (
        "create",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        None,
    ),
];

const ACCOUNTS: [&str; 4] = [
    "cairn-backup",
    "cairn-volumes",
    "cairn-restore",
    "cairn-maintenance",
];

/// `kubectl auth can-i` for every dangerous question and account, as a Markdown table.
fn can_i_table(kube: &Kube, system: &str) -> (String, Vec<String>) {
    let mut table = format!(
        "| `kubectl auth can-i … --as=system:serviceaccount:cairn:SA` | {} |\n|---|{}\n",
        ACCOUNTS.join(" | "),
        "---|".repeat(ACCOUNTS.len())
    );
    let mut yes = Vec::new();
    for (verb, group, resource, ns) in DANGEROUS {
        let (plural, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let mut question = format!("{verb} {plural}");
        if !group.is_empty() {
            question = format!("{verb} {plural}.{group}");
        }
        if !sub.is_empty() {
            question += &format!(" --subresource={sub}");
        }
        if let Some(ns) = ns {
            question += &format!(" -n {ns}");
        }
        table += &format!("| `{question}` |");
        for sa in ACCOUNTS {
            let allowed = kube.can_i((system, sa), verb, group, resource, ns);
            table += if allowed { " yes |" } else { " no |" };
            if allowed {
                yes.push(format!("{sa}: {question}"));
            }
        }
        table += "\n";
    }
    (table, yes)
}

#[test]
fn no_service_account_reaches_a_subresource_or_binds_cluster_roles() {
    let kube = Kube::connect();
    let s = suffix();
    let system = format!("cairn-{s}");
    for o in deploy_objects(&system, &s) {
        kube.create(o);
    }
    let (table, yes) = can_i_table(&kube, &system);
    eprintln!("deployed (deploy/base):\n{table}");
    assert!(yes.is_empty(), "dangerous rights granted: {yes:#?}");

    // bound for a restore, the restore's role still reaches no subresource
    let binding = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/restore-binding.yaml");
    for o in deploy_file(&binding, &system, &s) {
        kube.create(o);
    }
    let (table, yes) = can_i_table(&kube, &system);
    eprintln!("with deploy/restore-binding.yaml:\n{table}");
    assert!(yes.is_empty(), "dangerous rights granted: {yes:#?}");

    // what each one needs it has
    let sa = |name| (system.as_str(), name);
    assert!(kube.can_i(sa("cairn-backup"), "list", "", "secrets", None));
    assert!(kube.can_i(sa("cairn-backup"), "get", "apps", "deployments", Some("x")));
    assert!(!kube.can_i(sa("cairn-backup"), "create", "", "configmaps", Some("x")));
    assert!(kube.can_i(sa("cairn-volumes"), "list", "", "pods", None));
    assert!(!kube.can_i(sa("cairn-volumes"), "list", "", "secrets", None));
    assert!(kube.can_i(sa("cairn-restore"), "create", "", "configmaps", Some("x")));
    assert!(kube.can_i(sa("cairn-restore"), "create", "", "namespaces", None));
    assert!(!kube.can_i(sa("cairn-restore"), "delete", "", "configmaps", Some("x")));
    assert!(!kube.can_i(sa("cairn-maintenance"), "list", "", "pods", None));
}

/// The (group, plural) pairs a ClusterRole grants `verbs` on, refusing any wildcard or
/// subresource.
fn granted(role: &Value, verbs: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        let strings = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let (groups, resources) = (strings("apiGroups"), strings("resources"));
        for r in groups.iter().chain(&resources) {
            assert!(
                r != "*" && !r.contains('/'),
                "{} grants {r}",
                role["metadata"]["name"]
            );
        }
        if verbs
            .iter()
            .all(|v| strings("verbs").iter().any(|w| w == v))
        {
            for g in &groups {
                out.extend(resources.iter().map(|r| (g.clone(), r.clone())));
            }
        }
    }
    out
}

/// The resources a backup reads: namespaced ones and the four cluster-scoped kinds it stores,
/// leaving out those it never backs up; as (group, plural).
fn to_back_up(kube: &Kube) -> Vec<(String, String)> {
    const NEVER: [&str; 7] = [
        "events",
        "endpoints",
        "leases",
        "endpointslices",
        "bindings",
        "localsubjectaccessreviews",
        "tokenreviews",
    ];
    let cluster_kinds = [
        "namespaces",
        "persistentvolumes",
        "storageclasses",
        "customresourcedefinitions",
    ];
    kube.listable_resources()
        .into_iter()
        .filter(|(g, r, namespaced)| {
            (*namespaced || cluster_kinds.contains(&r.as_str()))
                && !NEVER.contains(&r.as_str())
                && g != "extensions"
                && g != "metrics.k8s.io"
        })
        .map(|(g, r, _)| (g, r))
        .collect()
}

#[test]
fn the_backup_role_covers_every_kind_and_a_kind_it_may_not_list_is_reported() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let system = format!("cairn-{s}");
    let group = format!("cov-{s}.example.com");
    create_crd(&kube, &group);
    let app = format!("app-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": app}}));
    kube.create(
        json!({"apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "w1", "namespace": app}, "spec": {"size": 1}}),
    );
    let custom: Vec<String> = kube
        .list("apiextensions.k8s.io/v1", "CustomResourceDefinition", "")
        .iter()
        .map(|c| c["spec"]["group"].as_str().unwrap().to_string())
        .collect();

    // deploy/base's role covers every built-in kind of the cluster, by name
    let deployed = deploy_objects(&system, &s);
    let role = |objects: &[Value], name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == format!("{name}-{s}"))
            .unwrap()
            .clone()
    };
    let static_backup = granted(&role(&deployed, "cairn-backup"), &["get", "list"]);
    let missing: Vec<_> = to_back_up(&kube)
        .into_iter()
        .filter(|(g, _)| !custom.contains(g))
        .filter(|k| !static_backup.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/base/rbac.yaml's cairn-backup does not cover {missing:?}"
    );
    granted(&role(&deployed, "cairn-restore"), &["create"]);

    // `cairn k8s rbac` renders roles that cover every kind, custom ones included
    let _no_new_kinds = KINDS.read().unwrap_or_else(|e| e.into_inner());
    let rendered = rendered_roles(&env, &kube, &system, &s);
    let rendered_backup = granted(&role(&rendered, "cairn-backup"), &["get", "list"]);
    let missing: Vec<_> = to_back_up(&kube)
        .into_iter()
        .filter(|k| !rendered_backup.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "cairn k8s rbac does not cover {missing:?}"
    );
    let restorable = granted(&role(&rendered, "cairn-restore"), &["create"]);
    assert!(restorable.contains(&(group.clone(), "widgets".into())));
    assert!(!restorable.iter().any(|(_, r)| r.starts_with("clusterrole")));

    // with deploy/base's role, the backup reports the custom kind it may not list
    for o in deployed {
        kube.create(o);
    }
    let kc = kube.kubeconfig_for(&system, "cairn-backup", &env.path("backup.kubeconfig"));
    let kc = kc.to_str().unwrap();
    let out = env.run(&["--json", "k8s", "backup", "--kubeconfig", kc, "-n", &app]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("widgets.{group}")),
        "{}",
        stderr(&out)
    );
    // with the rendered one, it backs up everything, the custom object included
    for o in rendered
        .into_iter()
        .filter(|o| o["metadata"]["name"] == format!("cairn-backup-{s}"))
    {
        kube.delete(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            None,
            &format!("cairn-backup-{s}"),
        );
        kube.create(o);
    }
    let report = env.json(&["k8s", "backup", "--kubeconfig", kc, "-n", &app]);
    assert_eq!(report["errors"], json!([]), "{report}");
    let snapshot = report["snapshots"][0]["snapshot"].as_str().unwrap();
    let listed = env.ok(&["ls", snapshot]);
    assert!(
        listed.contains(&format!("resources/widgets.{group}/w1.json")),
        "{listed}"
    );
}

