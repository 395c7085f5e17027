//! What the deployed service accounts may do, and what a snapshot may make a restore do, against
//! the real API server (RBAC authorizer on; started by scripts/test.sh): no role reaches a
//! subresource such as `pods/exec`, `nodes/proxy` or `serviceaccounts/token`; the backup's role
//! covers every kind the cluster serves; a restore creates only what the snapshot's namespace
//! may hold, whatever the snapshot's JSON claims.

mod common;

use std::path::Path;
use std::time::Duration;

use common::kube::{
    KINDS, Kube, create_crd, deploy_file, deploy_objects, names, rendered_roles, suffix, wait_until,
};
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

/// Writes `objects` as a resources snapshot would hold them (`resources/…` and `cluster/…`,
/// by path) and backs them up tagged as namespace `ns`'s resources: a snapshot crafted by
/// someone who can write to the repository. Returns its id.
fn crafted_snapshot(env: &Env, ns: &str, objects: &[(&str, Value)]) -> String {
    let root = env.path(&format!("crafted-{ns}"));
    for (path, object) in objects {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, serde_json::to_vec_pretty(object).unwrap()).unwrap();
    }
    let (resources, cluster) = (root.join("resources"), root.join("cluster"));
    let out = env.json(&[
        "backup",
        resources.to_str().unwrap(),
        cluster.to_str().unwrap(),
        "--tag",
        &format!("namespace={ns}"),
        "--tag",
        "content=resources",
        "--tag",
        "cluster=crafted",
    ]);
    out["snapshot_id"].as_str().unwrap().to_string()
}

#[test]
fn a_restore_creates_only_what_the_snapshots_namespace_may_hold() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("zz-{s}");
    let other = format!("other-{s}");
    let meta = |name: &str, namespace: &str| json!({"name": name, "namespace": namespace});
    let class = |name: &str| {
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": "example.com/none"})
    };
    let id = crafted_snapshot(
        &env,
        &ns,
        &[
            (
                "cluster/namespaces/ns.json",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
            (
                "cluster/namespaces/other.json",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}),
            ),
            (
                "resources/configmaps/ok.json",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("ok", &ns), "data": {"a": "1"}}),
            ),
            (
                "resources/configmaps/planted.json",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(&format!("planted-{s}"), "kube-system"), "data": {"a": "1"}}),
            ),
            (
                "resources/clusterrolebindings/disguised.json",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": meta(&format!("disguised-{s}"), &ns),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
            ),
            (
                "cluster/clusterrolebindings.rbac.authorization.k8s.io/evil.json",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": format!("evil-{s}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
            ),
            (
                "resources/persistentvolumeclaims/data.json",
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("data", &ns),
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": format!("used-{s}"), "resources": {"requests": {"storage": "1Gi"}}}}),
            ),
            (
                "cluster/storageclasses.storage.k8s.io/used.json",
                class(&format!("used-{s}")),
            ),
            (
                "cluster/storageclasses.storage.k8s.io/unused.json",
                class(&format!("unused-{s}")),
            ),
            (
                "cluster/priorityclasses.scheduling.k8s.io/planted.json",
                json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": format!("planted-{s}")}, "value": 1_000_000_000}),
            ),
            (
                "cluster/clusterroles.rbac.authorization.k8s.io/unbound.json",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": format!("unbound-{s}")},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
            ),
            (
                "cluster/persistentvolumes/theirs.json",
                json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("theirs-{s}")},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": "/etc"}, "claimRef": {"namespace": other, "name": "data"}}}),
            ),
        ],
    );
    let out = env.run(&[
        "k8s",
        "restore",
        &id,
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
    ]);
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    eprintln!("{stdout}{err}");
    // nothing outside the namespace, nothing it does not reference
    let rbac = "rbac.authorization.k8s.io/v1";
    let never_created = [
        (rbac, "ClusterRoleBinding", None, format!("evil-{s}")),
        (rbac, "ClusterRoleBinding", None, format!("disguised-{s}")),
        (
            "v1",
            "ConfigMap",
            Some("kube-system"),
            format!("planted-{s}"),
        ),
        ("v1", "Namespace", None, other.clone()),
        (
            "storage.k8s.io/v1",
            "StorageClass",
            None,
            format!("unused-{s}"),
        ),
        ("v1", "PersistentVolume", None, format!("theirs-{s}")),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            None,
            format!("planted-{s}"),
        ),
        (rbac, "ClusterRole", None, format!("unbound-{s}")),
    ];
    let none_created = || {
        for (api, kind, namespace, name) in &never_created {
            assert!(
                kube.get(api, kind, *namespace, name).is_none(),
                "{kind} {name} was created"
            );
        }
    };
    none_created();
    // ... and says so, with exit code 3
    assert_eq!(out.status.code(), Some(3), "{err}");
    for refused in [
        format!("refused: ClusterRoleBinding evil-{s}:"),
        format!("refused: ClusterRoleBinding {ns}/disguised-{s}:"),
        format!("refused: ConfigMap kube-system/planted-{s}:"),
        format!("refused: Namespace {other}:"),
        format!("refused: StorageClass unused-{s}:"),
        format!("refused: PersistentVolume theirs-{s}:"),
        format!("refused: PriorityClass planted-{s}:"),
        format!("refused: ClusterRole unbound-{s}:"),
    ] {
        assert!(err.contains(&refused), "{refused} missing in {err}");
    }
    // what the namespace holds is restored
    assert!(kube.get("v1", "ConfigMap", Some(&ns), "ok").is_some());
    assert!(
        kube.get("v1", "PersistentVolumeClaim", Some(&ns), "data")
            .is_some()
    );
    assert!(
        kube.get(
            "storage.k8s.io/v1",
            "StorageClass",
            None,
            &format!("used-{s}")
        )
        .is_some()
    );
    // the same with --json and a mapping: refused objects are listed where they claimed to be
    let mapped = format!("mapped-{s}");
    let out = env.run(&[
        "--json",
        "k8s",
        "restore",
        &id,
        "--namespace-mapping",
        &format!("{ns}={mapped}"),
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = &json_result(&out.stdout)["report"];
    assert_eq!(
        names(&report["refused"]),
        [
            format!("ClusterRoleBinding evil-{s}"),
            format!("ClusterRoleBinding {ns}/disguised-{s}"),
            format!("ConfigMap kube-system/planted-{s}"),
            format!("Namespace {other}"),
            format!("PersistentVolume theirs-{s}"),
            format!("PriorityClass planted-{s}"),
            format!("ClusterRole unbound-{s}"),
            format!("StorageClass unused-{s}"),
        ]
        .into_iter()
        .collect(),
        "{report}"
    );
    assert!(kube.get("v1", "ConfigMap", Some(&mapped), "ok").is_some());
    none_created();
}

#[test]
fn a_drill_verifies_a_resources_snapshot_without_writing_its_secrets_to_disk() {
    let env = Env::new();
    let password = format!("hunter2-{}", suffix());
    let id = crafted_snapshot(
        &env,
        "shop",
        &[
            (
                "cluster/namespaces/shop.json",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
            ),
            (
                "resources/secrets/db.json",
                json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "db", "namespace": "shop"}, "stringData": {"password": password}}),
            ),
        ],
    );
    let scratch = env.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let out = env.run(&[
        "--json",
        "drill",
        &id,
        "--scratch",
        scratch.to_str().unwrap(),
        "--keep-files",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = &json_result(&out.stdout)["record"];
    let drilled = &record["snapshots"][0];
    assert_eq!(drilled["manifests_checked"], 2, "{record}");
    assert_eq!(drilled["files_restored"], 2, "{record}");
    assert_eq!(drilled["problems"], json!([]), "{record}");
    // nothing of the snapshot was written: the scratch folder holds no file at all
    assert_eq!(all_files(&scratch), Vec::<std::path::PathBuf>::new());
}

/// A Service as a restore must bring it back: the fields the new cluster allocates dropped.
fn service_as_restored(service: &Value) -> Value {
    let mut spec = service["spec"].clone();
    for key in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
        spec.as_object_mut().unwrap().remove(key);
    }
    for port in spec["ports"].as_array_mut().unwrap() {
        port.as_object_mut().unwrap().remove("nodePort");
    }
    spec
}

#[test]
fn an_application_is_restored_mapped_twice_with_node_ports_classes_and_accounts() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let app = format!("guestbook-{s}");
    let class = format!("legacy-{s}");
    let meta = |name: &str| json!({"name": name, "namespace": app, "labels": {"app": "guestbook"}});
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": app}}));
    kube.create(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": class}, "provisioner": "example.com/none"}),
    );
    let selector = json!({"app": "guestbook"});
    for object in [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("frontend"),
            "spec": {"type": "NodePort", "selector": selector, "ports": [{"port": 80, "targetPort": 80}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("public"),
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": selector,
                "ports": [{"port": 443, "targetPort": 8443}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings"), "data": {"redis": "redis:6379"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("frontend")}),
        // an older chart names the class with the beta annotation
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": app, "annotations": {"volume.beta.kubernetes.io/storage-class": class}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        // no scheduler runs: this pod stays unscheduled
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("redis-0"),
            "spec": {"serviceAccountName": "frontend", "containers": [{"name": "redis", "image": "redis:7"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}),
    ] {
        kube.create(object);
    }
    // the controller manager gives the account its token Secret
    wait_until("the account's token", Duration::from_secs(60), || {
        kube.get("v1", "ServiceAccount", Some(&app), "frontend")
            .is_some_and(|sa| sa["secrets"].as_array().is_some_and(|s| !s.is_empty()))
    });
    let admin = kube.kubeconfig.to_str().unwrap();

    let backup = env.json(&["k8s", "backup", "--kubeconfig", admin, "-n", &app]);
    let snapshot = backup["snapshots"][0]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = env.ok(&["ls", &snapshot]);
    assert!(
        listed.contains(&format!(
            "cluster/storageclasses.storage.k8s.io/{class}.json"
        )),
        "the annotated class is not in the snapshot:\n{listed}"
    );
    let volumes = env.run(&[
        "--json",
        "k8s",
        "backup-volumes",
        "--kubeconfig",
        admin,
        "-n",
        &app,
        "--node",
        "node-a",
        "--kubelet-root",
        env.path("kubelet").to_str().unwrap(),
    ]);
    let volumes = json_result(&volumes.stdout);
    assert_eq!(
        volumes["not_mounted"],
        json!([format!("{app}/data")]),
        "{volumes}"
    );
    assert_eq!(volumes["elsewhere"], json!([]), "{volumes}");

    // restored into a scratch namespace while the original runs, twice
    let copy = format!("copy-{s}");
    let mapping = format!("{app}={copy}");
    let restore = || {
        let out = env.run(&[
            "--json",
            "k8s",
            "restore",
            &snapshot,
            "--namespace-mapping",
            &mapping,
            "--kubeconfig",
            admin,
        ]);
        (
            out.status.code(),
            json_result(&out.stdout)["report"].clone(),
        )
    };
    let (code, first) = restore();
    assert_eq!(
        (code, &first["failed"], &first["refused"]),
        (Some(0), &json!([]), &json!([])),
        "{first}"
    );
    let (code, second) = restore();
    assert_eq!(
        (code, &second["failed"], &second["created"]),
        (Some(0), &json!([]), &json!([])),
        "{second}"
    );
    assert!(
        names(&second["existing"]).is_superset(&names(&first["created"])),
        "{second}"
    );
    for name in ["frontend", "public"] {
        let original = kube.get("v1", "Service", Some(&app), name).unwrap();
        let restored = kube.get("v1", "Service", Some(&copy), name).unwrap();
        assert_eq!(
            service_as_restored(&restored),
            service_as_restored(&original)
        );
        assert_ne!(
            restored["spec"]["ports"][0]["nodePort"],
            original["spec"]["ports"][0]["nodePort"]
        );
    }
    let settings =
        |ns: &str| kube.get("v1", "ConfigMap", Some(ns), "settings").unwrap()["data"].clone();
    assert_eq!(settings(&copy), settings(&app));
    // the account does not name the original's token Secret, which was left out
    let original = kube
        .get("v1", "ServiceAccount", Some(&app), "frontend")
        .unwrap();
    let token = original["secrets"][0]["name"].as_str().unwrap();
    assert!(
        names(&first["left_out"]).contains(&format!("Secret {copy}/{token}")),
        "{first}"
    );
    let restored = kube
        .get("v1", "ServiceAccount", Some(&copy), "frontend")
        .unwrap();
    assert!(
        !restored["secrets"].to_string().contains(token),
        "{restored}"
    );
    let claim = kube
        .get("v1", "PersistentVolumeClaim", Some(&copy), "data")
        .unwrap();
    assert_eq!(
        claim["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"],
        class.as_str()
    );
}

#[test]
fn a_claim_is_restored_on_its_node_with_no_repository_credentials_in_its_namespace() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let system = format!("cairn-{s}");
    let ns = format!("tenant-{s}");
    let pv = format!("pv-{s}");
    for o in deploy_objects(&system, &s) {
        kube.create(o);
    }
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": pv, "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}}}}));
    let pod = |name: &str| {
        kube.create(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": "node-a", "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
        )
    };
    // node-a's kubelet tree: the claim is mounted under each pod's uid
    let kubelet = env.path("kubelet");
    let mount = |pod: &Value| {
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let dir = kubelet.join(format!(
            "pods/{uid}/volumes/kubernetes.io~local-volume/{pv}"
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let original = mount(&pod("app"));
    std::fs::create_dir_all(original.join("db")).unwrap();
    std::fs::write(original.join("db/table"), noise(7, 100_000)).unwrap();
    std::fs::write(original.join("notes.txt"), "kept").unwrap();
    let volumes_kc = kube.kubeconfig_for(&system, "cairn-volumes", &env.path("volumes.kubeconfig"));
    let volumes_kc = volumes_kc.to_str().unwrap();
    let kubelet_root = kubelet.to_str().unwrap();
    let backup = env.json(&[
        "k8s",
        "backup-volumes",
        "--kubeconfig",
        volumes_kc,
        "-n",
        &ns,
        "--node",
        "node-a",
        "--kubelet-root",
        kubelet_root,
    ]);
    assert_eq!(backup["snapshots"].as_array().unwrap().len(), 1, "{backup}");

    // the claim comes back into a new, empty volume, through the idle pod that mounts it,
    // restored by the node's component with the volume backup's own service account
    let target = mount(&pod("cairn-restore-target"));
    let restore_through = |pod: &str| {
        env.run(&[
            "--json",
            "k8s",
            "restore-volume",
            "latest",
            "-n",
            &ns,
            "--pvc",
            "data",
            "--pod",
            pod,
            "--kubelet-root",
            kubelet_root,
            "--kubeconfig",
            volumes_kc,
        ])
    };
    let restored = json_result(&restore_through("cairn-restore-target").stdout);
    assert_eq!(restored["outcome"]["errors"], json!([]), "{restored}");
    assert_eq!(contents(&target), contents(&original));
    // a pod that does not mount the claim is refused
    kube.create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lone", "namespace": ns},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}]}}),
    );
    let out = restore_through("lone");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not mount claim data"),
        "{}",
        stderr(&out)
    );

    // no Secret outside the backup's namespace holds the repository's password, and the
    // deployment's volume restore runs in the backup's namespace
    for secret in kube.list("v1", "Secret", &ns) {
        assert!(!secret.to_string().contains(PASSWORD), "{secret}");
    }
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/restore-volume-job.yaml");
    let text = std::fs::read_to_string(&job).unwrap();
    for o in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
        let uses_repository = o.to_string().contains("cairn-repository");
        assert!(
            !uses_repository || o["metadata"]["namespace"] == "cairn",
            "{} {} uses the repository's Secret outside namespace cairn",
            o["kind"],
            o["metadata"]["name"]
        );
    }
}

/// A tenant may set an unbound claim's `spec.volumeName` to anything (the API server checks it
/// only when a volume binds it): a path such as the kubelet's own folder must never point the
/// node's volume backup, nor a volume restore, outside the volumes of the tenant's own pod.
/// (No kubelet runs here: the folders under `--kubelet-root` stand for its mounts.)
#[test]
fn a_claim_naming_a_path_as_its_volume_reads_and_writes_nothing_outside_its_pods_volumes() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("sneaky-{s}");
    let kubelet = env.path("kubelet");
    std::fs::create_dir_all(kubelet.join("pki")).unwrap();
    std::fs::write(kubelet.join("pki/kubelet-client.key"), "THE NODE'S KEY").unwrap();
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    for (claim, volume) in [
        ("abs", kubelet.to_str().unwrap().to_string()),
        ("up", "../../../..".to_string()),
    ] {
        kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}}}}));
    }
    // the tenant's pod, placed on the node by name, with an emptyDir so that its volumes
    // folder exists there
    let pod = kube.create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "e", "emptyDir": {}},
                {"name": "a", "persistentVolumeClaim": {"claimName": "abs"}},
                {"name": "u", "persistentVolumeClaim": {"claimName": "up"}}]}}),
    );
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    std::fs::create_dir_all(kubelet.join(format!("pods/{uid}/volumes/kubernetes.io~empty-dir/e")))
        .unwrap();

    let kubelet_root = kubelet.to_str().unwrap();
    let out = env.run(&[
        "--json",
        "k8s",
        "backup-volumes",
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
        "-n",
        &ns,
        "--node",
        "node-a",
        "--kubelet-root",
        kubelet_root,
    ]);
    let report = json_result(&out.stdout);
    assert_eq!(report["snapshots"], json!([]), "{report}");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not the name of a volume"),
        "{}",
        stderr(&out)
    );
    // and a restore never writes where such a claim points (a snapshot of a claim of that
    // name, as the tenant's earlier claim would have left)
    let saved = env.path("saved");
    std::fs::create_dir_all(saved.join("volumes/abs")).unwrap();
    std::fs::write(saved.join("volumes/abs/planted"), "written by root").unwrap();
    let tags = format!("namespace={ns},content=volumes,claim=abs");
    env.ok(&[
        "backup",
        saved.join("volumes").to_str().unwrap(),
        "--tag",
        &tags,
    ]);
    let restore = env.run(&[
        "k8s",
        "restore-volume",
        "latest",
        "-n",
        &ns,
        "--pvc",
        "abs",
        "--pod",
        "p",
        "--kubelet-root",
        kubelet_root,
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
    ]);
    assert_ne!(restore.status.code(), Some(0), "{}", stderr(&restore));
    assert!(
        stderr(&restore).contains("not the name of a volume"),
        "{}",
        stderr(&restore)
    );
    assert!(
        !kubelet.join("planted").exists(),
        "the restore wrote into the kubelet's folder"
    );
}

/// A cluster-scoped object a namespace names is restored only if it cannot reach beyond the
/// namespace: a forged snapshot (written with the repository's key) must not make the restore
/// merge rules into the built-in roles, give pods a node's folders, or change the cluster's
/// defaults for every namespace.
#[test]
fn cluster_objects_that_would_reach_beyond_their_namespace_are_refused() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("forged-{s}");
    let meta = |name: &str| json!({"name": name, "namespace": ns});
    let rbac = "rbac.authorization.k8s.io";
    let id = crafted_snapshot(
        &env,
        &ns,
        &[
            (
                "cluster/namespaces/ns.json",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
            (
                "resources/rolebindings/helper.json",
                json!({"apiVersion": format!("{rbac}/v1"), "kind": "RoleBinding", "metadata": meta("helper"),
                "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": format!("helper-{s}")},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
            ),
            (
                "cluster/clusterroles/helper.json",
                json!({"apiVersion": format!("{rbac}/v1"), "kind": "ClusterRole",
                "metadata": {"name": format!("helper-{s}"),
                    "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
            ),
            (
                "resources/persistentvolumeclaims/data.json",
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("data"),
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": format!("fast-{s}"),
                    "volumeName": format!("root-{s}"), "resources": {"requests": {"storage": "1Gi"}}}}),
            ),
            (
                "cluster/persistentvolumes/root.json",
                json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("root-{s}")},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": format!("fast-{s}"), "hostPath": {"path": "/"},
                    "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": "data"}}}),
            ),
            (
                "cluster/storageclasses/fast.json",
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": format!("fast-{s}"),
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "nfs.csi.k8s.io", "parameters": {"server": "attacker.example.com"}}),
            ),
            (
                "resources/pods/p.json",
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("p"),
                "spec": {"priorityClassName": format!("boss-{s}"),
                    "containers": [{"name": "c", "image": "busybox"}]}}),
            ),
            (
                "cluster/priorityclasses/boss.json",
                json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": format!("boss-{s}")}, "value": 1000, "globalDefault": true}),
            ),
        ],
    );
    let out = env.run(&[
        "k8s",
        "restore",
        &id,
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    for (refused, why) in [
        (format!("ClusterRole helper-{s}"), "aggregate-to-view"),
        (format!("PersistentVolume root-{s}"), "hostPath"),
        (format!("StorageClass fast-{s}"), "default"),
        (format!("PriorityClass boss-{s}"), "globalDefault"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("refused: {refused}:")))
            .unwrap_or_else(|| panic!("{refused} was not refused: {err}"));
        assert!(line.contains(why), "{line}");
    }
    assert!(
        kube.get(
            &format!("{rbac}/v1"),
            "ClusterRole",
            None,
            &format!("helper-{s}")
        )
        .is_none()
    );
    assert!(
        kube.get("v1", "PersistentVolume", None, &format!("root-{s}"))
            .is_none()
    );
    assert!(
        kube.get(
            "storage.k8s.io/v1",
            "StorageClass",
            None,
            &format!("fast-{s}")
        )
        .is_none()
    );
    assert!(
        kube.get(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            None,
            &format!("boss-{s}")
        )
        .is_none()
    );
    // the namespace's own objects are restored
    assert!(
        kube.get("v1", "PersistentVolumeClaim", Some(&ns), "data")
            .is_some()
    );
}
