//! What a `cairn k8s backup` takes (Velero's resource, namespace and label filters; the
//! cluster-scoped objects a namespace's objects name) and what `cairn k8s restore` makes of it
//! (create-only; ClusterRoleBindings only when asked for and only as they were; resource
//! modifiers), against the real test API server with RBAC on.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::kube::{Kube, k8s, names, suffix};
use common::*;
use serde_json::{Value, json};

/// The stored object paths of each snapshot a backup reported, by namespace, and its tags.
fn backed_up(env: &Env, report: &Value) -> BTreeMap<String, (BTreeSet<String>, Vec<String>)> {
    let snapshots = env.json(&["snapshots"]);
    report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let id = s["snapshot"].as_str().unwrap();
            let paths = env
                .ls_paths(id)
                .into_iter()
                .map(|p| p.trim_start_matches('/').to_string())
                .filter(|p| p.ends_with(".json"))
                .collect();
            let tags = snapshots
                .as_array()
                .unwrap()
                .iter()
                .find(|snap| snap["id"] == id)
                .map(|snap| serde_json::from_value(snap["tags"].clone()).unwrap())
                .unwrap();
            (s["namespace"].as_str().unwrap().to_string(), (paths, tags))
        })
        .collect()
}

fn config_map(ns: &str, name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": labels}, "data": {"k": name}})
}

#[test]
fn backup_filters_take_only_the_resources_namespaces_and_labels_asked_for() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let (a, b, skipped) = (format!("fa-{s}"), format!("fb-{s}"), format!("fskip-{s}"));
    for ns in [&a, &b, &skipped] {
        kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        kube.create(config_map(ns, "web", json!({"app": "web"})));
        kube.create(config_map(ns, "db", json!({"app": "db"})));
        kube.create(config_map(
            ns,
            "scratch",
            json!({"app": "web", "compliantkubernetes.io/nobackup": ""}),
        ));
        kube.create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "key", "namespace": ns, "labels": {"app": "web"}}, "stringData": {"k": "v"}}));
    }
    let namespaces = ["-n", &a, "-n", &b, "-n", &skipped];
    let backup = |filters: &[&str]| {
        let mut args = vec!["backup", "--cluster", "test"];
        args.extend(namespaces);
        args.extend(filters);
        let report = k8s(&env, &kube, &args);
        (backed_up(&env, &report), report)
    };

    // a kind, a comma list and a repeated flag; namespace patterns
    let (taken, report) = backup(&[
        "--include-resources",
        "ConfigMap",
        "--exclude-namespaces",
        "fskip-*,nothing-*",
        "--exclude-namespaces",
        "other",
    ]);
    assert_eq!(
        taken.keys().cloned().collect::<BTreeSet<_>>(),
        [a.clone(), b.clone()].into(),
        "{report}"
    );
    assert!(
        report["left_out"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["namespace"] == skipped.as_str()
                && l["reason"]
                    .as_str()
                    .unwrap()
                    .contains("--exclude-namespaces")),
        "{report}"
    );
    let (paths, tags) = &taken[&a];
    for p in [
        "resources/configmaps/web.json".to_string(),
        "resources/configmaps/db.json".into(),
        format!("cluster/namespaces/{a}.json"),
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    assert!(
        paths
            .iter()
            .all(|p| p.starts_with("resources/configmaps/") || p.starts_with("cluster/namespaces/")),
        "{paths:?}"
    );
    assert!(
        tags.contains(&"include-resource=configmaps".to_string()),
        "{tags:?}"
    );

    // exclusions and a set-based selector, evaluated by the API server; the opt-out label wins
    let (taken, report) = backup(&[
        "--exclude-resources",
        "secrets,ServiceAccount",
        "--selector",
        "app in (web,none),!missing",
    ]);
    let (paths, tags) = &taken[&b];
    assert_eq!(
        paths,
        &[
            "resources/configmaps/web.json".to_string(),
            format!("cluster/namespaces/{b}.json")
        ]
        .into(),
        "{report}"
    );
    assert!(
        report["opted_out"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("{b}/configmaps/scratch"))),
        "{report}"
    );
    for tag in [
        "exclude-resource=secrets",
        "exclude-resource=serviceaccounts",
        "selector=app in (web,none),!missing",
    ] {
        assert!(tags.contains(&tag.to_string()), "{tag} not in {tags:?}");
    }
    // a resource.group name; secrets only
    let (taken, _) = backup(&["--include-resources", "SECRETS", "-l", "app=web"]);
    assert!(taken[&a].0.contains("resources/secrets/key.json"));
    assert!(
        !taken[&a]
            .0
            .iter()
            .any(|p| p.starts_with("resources/configmaps/"))
    );

    // wrong usage: exit code 2, naming what is wrong, and nothing written
    let before = env.snapshot_ids().len();
    let kubeconfig = kube.kubeconfig.to_str().unwrap();
    for (flags, expected) in [
        (
            vec!["--include-resources", "configmaps,gadgets"],
            "--include-resources \"gadgets\": the cluster serves no such resource",
        ),
        (
            vec!["--exclude-resources", "deployments.nowhere"],
            "--exclude-resources \"deployments.nowhere\"",
        ),
        (
            vec!["--selector", "app in (web"],
            "--selector \"app in (web\": the API server says: ",
        ),
        (
            vec!["--exclude-namespaces", "[x"],
            "--exclude-namespaces \"[x\"",
        ),
    ] {
        let mut args = vec!["k8s", "backup", "--kubeconfig", kubeconfig];
        args.extend(namespaces);
        args.extend(flags);
        let out = env.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{expected} not in {err}");
    }
    assert_eq!(env.snapshot_ids().len(), before);
}

const RBAC: &str = "rbac.authorization.k8s.io/v1";

fn cluster_role(name: &str, resource: &str) -> Value {
    json!({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get"]}]})
}

fn binding(kind: &str, ns: Option<&str>, name: &str, role: &str, account_ns: &str) -> Value {
    json!({"apiVersion": RBAC, "kind": kind, "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": account_ns}]})
}

#[test]
fn cluster_objects_a_namespace_names_are_kept_and_restored_create_only() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("needs-{s}");
    let (role, bound_role, ghost) = (
        format!("cr-{s}"),
        format!("crb-role-{s}"),
        format!("ghost-{s}"),
    );
    let (crb, crb_other) = (format!("crb-{s}"), format!("crb-other-{s}"));
    let (pc, ic, rc) = (format!("pc-{s}"), format!("ic-{s}"), format!("rc-{s}"));
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    kube.create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": ns}}));
    kube.create(cluster_role(&role, "configmaps"));
    kube.create(cluster_role(&bound_role, "pods"));
    kube.create(binding("RoleBinding", Some(&ns), "uses-role", &role, &ns));
    kube.create(binding("RoleBinding", Some(&ns), "uses-ghost", &ghost, &ns));
    kube.create(binding("ClusterRoleBinding", None, &crb, &bound_role, &ns));
    // a cluster-wide binding of the same account to the role the namespace also binds
    kube.create(binding("ClusterRoleBinding", None, &crb_other, &role, &ns));
    kube.create(
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": pc}, "value": 1000}),
    );
    kube.create(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": ic}, "spec": {"controller": "example.com/ingress"}}),
    );
    kube.create(
        json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": rc}, "handler": "runc"}),
    );
    kube.create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"priorityClassName": pc, "runtimeClassName": rc, "serviceAccountName": "app",
                    "containers": [{"name": "web", "image": "nginx:1.25"}]}}}}));
    kube.create(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": ns},
        "spec": {"ingressClassName": ic, "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}));

    let report = k8s(&env, &kube, &["backup", "-n", &ns, "--cluster", "test"]);
    let taken = backed_up(&env, &report);
    let (paths, _) = &taken[&ns];
    for p in [
        format!("cluster/clusterroles.rbac.authorization.k8s.io/{role}.json"),
        format!("cluster/clusterroles.rbac.authorization.k8s.io/{bound_role}.json"),
        format!("cluster/clusterrolebindings.rbac.authorization.k8s.io/{crb}.json"),
        format!("cluster/clusterrolebindings.rbac.authorization.k8s.io/{crb_other}.json"),
        format!("cluster/priorityclasses.scheduling.k8s.io/{pc}.json"),
        format!("cluster/ingressclasses.networking.k8s.io/{ic}.json"),
        format!("cluster/runtimeclasses.node.k8s.io/{rc}.json"),
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    // the missing ClusterRole is reported, in the text output too
    assert!(
        report["missing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().contains(&format!(
                "ClusterRole {ghost}, named by RoleBinding uses-ghost"
            ))),
        "{report}"
    );
    let text = env.ok(&[
        "k8s",
        "backup",
        "-n",
        &ns,
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
    ]);
    assert!(
        text.contains(&format!(
            "referenced but not found: namespace {ns}: ClusterRole {ghost}"
        )),
        "{text}"
    );

    // gone from the cluster; one ClusterRole exists again, granting something else
    kube.delete("v1", "Namespace", None, &ns);
    for (api, kind, name) in [
        (RBAC, "ClusterRoleBinding", &crb),
        (RBAC, "ClusterRoleBinding", &crb_other),
        (RBAC, "ClusterRole", &bound_role),
        (RBAC, "ClusterRole", &role),
        ("scheduling.k8s.io/v1", "PriorityClass", &pc),
        ("networking.k8s.io/v1", "IngressClass", &ic),
        ("node.k8s.io/v1", "RuntimeClass", &rc),
    ] {
        kube.delete(api, kind, None, name);
    }
    kube.create(cluster_role(&role, "secrets"));

    let snapshot = report["snapshots"][0]["snapshot"].as_str().unwrap();
    let restore = |extra: &[&str], code: i32| {
        let mut args = vec![
            "--json",
            "k8s",
            "restore",
            snapshot,
            "--kubeconfig",
            kube.kubeconfig.to_str().unwrap(),
        ];
        args.extend(extra);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        json_result(&out.stdout)["report"].clone()
    };
    // without asking, cluster-wide bindings are left out, the rest is created
    let first = restore(&[], 0);
    let created = names(&first["created"]);
    for o in [
        format!("ClusterRole {bound_role}"),
        format!("PriorityClass {pc}"),
        format!("IngressClass {ic}"),
        format!("RuntimeClass {rc}"),
        format!("RoleBinding {ns}/uses-role"),
        format!("Deployment {ns}/web"),
    ] {
        assert!(created.contains(&o), "{o} not created: {first}");
    }
    assert!(
        names(&first["existing"]).contains(&format!("ClusterRole {role}")),
        "{first}"
    );
    let left_out = names(&first["left_out"]);
    assert!(
        left_out.contains(&format!("ClusterRoleBinding {crb}")),
        "{first}"
    );
    assert!(
        first
            .to_string()
            .contains("--restore-cluster-role-bindings")
    );
    assert!(kube.get(RBAC, "ClusterRoleBinding", None, &crb).is_none());
    // the existing ClusterRole is left untouched
    let kept = kube.get(RBAC, "ClusterRole", None, &role).unwrap();
    assert_eq!(kept["rules"][0]["resources"], json!(["secrets"]));
    for (api, kind, name) in [
        ("scheduling.k8s.io/v1", "PriorityClass", &pc),
        ("networking.k8s.io/v1", "IngressClass", &ic),
        ("node.k8s.io/v1", "RuntimeClass", &rc),
    ] {
        assert!(kube.get(api, kind, None, name).is_some(), "{kind} {name}");
    }

    // asked for: the binding to the role as it was is created; the one to a role that grants
    // something else now is not, and is reported (exit code 3)
    let second = restore(&["--restore-cluster-role-bindings"], 3);
    assert_eq!(
        names(&second["created"]),
        [format!("ClusterRoleBinding {crb}")].into(),
        "{second}"
    );
    let failed = &second["failed"][0];
    assert_eq!(failed["name"], crb_other.as_str(), "{second}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("grants other rules")
    );
    assert!(
        kube.get(RBAC, "ClusterRoleBinding", None, &crb_other)
            .is_none()
    );
    let made = kube.get(RBAC, "ClusterRoleBinding", None, &crb).unwrap();
    assert_eq!(made["subjects"][0]["namespace"], ns.as_str());

    for (kind, name) in [
        ("ClusterRoleBinding", &crb),
        ("ClusterRole", &role),
        ("ClusterRole", &bound_role),
    ] {
        kube.delete(RBAC, kind, None, name);
    }
}

#[test]
fn resource_modifiers_change_objects_before_they_are_created() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("mod-{s}");
    let web = json!({"app": "web"});
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "slow", "resources": {"requests": {"storage": "1Gi"}}}}));
    kube.create(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns, "labels": web},
        "spec": {"replicas": 3, "selector": {"matchLabels": web},
            "template": {"metadata": {"labels": web},
                "spec": {"containers": [{"name": "web", "image": "docker.io/library/nginx:1.25"}]}}}}));
    kube.create(config_map(&ns, "guarded", json!({})));
    kube.create(config_map(&ns, "settings", json!({})));
    let secret = format!("s3cret-{s}");
    kube.create(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns},
        "stringData": {"password": secret}}),
    );
    let report = k8s(&env, &kube, &["backup", "-n", &ns, "--cluster", "test"]);
    let snapshot = report["snapshots"][0]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    kube.delete("v1", "Namespace", None, &ns);

    let file = env.path("modifiers.yaml");
    std::fs::write(
        &file,
        format!(
            r#"version: v1
resourceModifierRules:
  - conditions:
      groupResource: persistentvolumeclaims
      resourceNameRegex: "^data$"
    patches:
      - {{operation: replace, path: /spec/storageClassName, value: fast}}
  - conditions:
      groupResource: deployments.apps
      namespaces: [{ns}]
      labelSelector: {{matchLabels: {{app: web}}}}
    patches:
      - {{operation: test, path: /spec/template/spec/containers/0/image, value: docker.io/library/nginx:1.25}}
      - {{operation: replace, path: /spec/template/spec/containers/0/image, value: registry.example.com/library/nginx:1.25}}
    mergePatches:
      - patchData: '{{"spec": {{"replicas": 1}}}}'
  - conditions:
      groupResource: configmaps
      resourceNameRegex: "^guarded$"
    patches:
      - {{operation: test, path: /data/k, value: something-else}}
  - conditions:
      groupResource: secrets
    mergePatches:
      - patchData: |
          metadata:
            labels: {{restored: "yes"}}
"#
        ),
    )
    .unwrap();
    let kubeconfig = kube.kubeconfig.to_str().unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "k8s",
            "restore",
            &snapshot,
            "--kubeconfig",
            kubeconfig,
            "--resource-modifiers",
            file.to_str().unwrap(),
        ];
        args.extend(extra);
        env.run(&args)
    };

    // the plan: every changed object as it would be created, Secrets' values hidden
    let out = restore(&["--dry-run"]);
    let (text, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        text.contains(&format!("modified by rule 2: Deployment {ns}/web")),
        "{text}"
    );
    assert!(
        text.contains("registry.example.com/library/nginx:1.25"),
        "{text}"
    );
    assert!(!text.contains(&secret) && !err.contains(&secret));
    assert!(
        err.contains(&format!(
            "failed: ConfigMap {ns}/guarded: resource modifier rule 3"
        )),
        "{err}"
    );
    let out = restore(&["--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let plan = &json_result(&out.stdout)["report"];
    let modified = |kind: &str| {
        plan["modified"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {plan}"))
            .clone()
    };
    let claim = modified("PersistentVolumeClaim");
    assert_eq!(claim["rules"], json!([1]));
    assert_eq!(claim["manifest"]["spec"]["storageClassName"], "fast");
    let deployment = modified("Deployment");
    assert_eq!(deployment["manifest"]["spec"]["replicas"], 1);
    let stored_secret = modified("Secret");
    assert_eq!(
        stored_secret["manifest"]["metadata"]["labels"]["restored"],
        "yes"
    );
    assert_eq!(stored_secret["manifest"]["data"]["password"], "(hidden)");
    assert_eq!(
        names(&plan["failed"]),
        [format!("ConfigMap {ns}/guarded")].into()
    );
    assert!(
        kube.get("v1", "Namespace", None, &ns).is_none(),
        "a dry run created"
    );

    // the restore: changed objects created as changed, the failed one not, the rest as stored
    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let claim = kube
        .get("v1", "PersistentVolumeClaim", Some(&ns), "data")
        .unwrap();
    assert_eq!(claim["spec"]["storageClassName"], "fast");
    let deployment = kube.get("apps/v1", "Deployment", Some(&ns), "web").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/library/nginx:1.25"
    );
    assert!(kube.get("v1", "ConfigMap", Some(&ns), "guarded").is_none());
    assert!(kube.get("v1", "ConfigMap", Some(&ns), "settings").is_some());

    // a bad file: wrong usage (exit code 2) naming the rule and the problem; nothing is read
    std::fs::write(
        &file,
        "version: v1\nresourceModifierRules:\n  - conditions: {groupResource: pods}\n  - conditions: {groupResource: pods, resourceNameRegex: 'web('}\n",
    )
    .unwrap();
    let out = restore(&["--dry-run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("rule 2: resourceNameRegex \"web(\""), "{err}");
}
