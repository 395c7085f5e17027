//! `cairn k8s` against a real API server (etcd + kube-apiserver 1.20 + kube-controller-manager
//! on 127.0.0.1, started by scripts/test.sh): namespaces with workloads, a custom resource and
//! opt-outs are backed up, deleted, restored and compared object by object; a second restore
//! changes nothing; restores into other namespaces, dry runs and filters do what they say.
//!
//! What this cannot catch: no kubelet or scheduler runs, so pods never start. Volume data is
//! read from a folder laid out like the kubelet's pod volume tree (as a node's
//! `/var/lib/kubelet` appears to the backup container), and a restore into a claim is tested
//! as a restore into its (empty) mount folder. Backup hooks cannot run without a kubelet: the
//! tests see them fail and check what each on-error policy then does, not a successful exec.
//! Whether a restored Deployment's pods come up again is the cluster's business and is not
//! tested here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::kube::{
    KINDS, Kube, create_crd, deploy_file, deploy_objects, k8s, names, pod_mounting, rendered_roles,
    suffix, wait_until,
};
use common::*;
use serde_json::{Value, json};

/// Every stored object of a snapshot, restored into a folder and read back, by path.
fn stored_objects(env: &Env, snapshot: &str) -> BTreeMap<String, Value> {
    let target = env.path(&format!("objects-{snapshot}"));
    env.ok(&["restore", snapshot, "--target", target.to_str().unwrap()]);
    all_files(&target)
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&target)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            (
                rel,
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

/// A namespace of an online shop: every common kind, a custom object and an opted-out object.
fn make_shop(kube: &Kube, ns: &str, group: &str, secret: &str) {
    let meta = |name: &str| json!({"name": name, "namespace": ns, "labels": {"app": "web"}});
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    create_crd(kube, group);
    for object in [
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("web"),
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings"), "data": {"mode": "production"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "scratch", "namespace": ns,
            "labels": {"compliantkubernetes.io/nobackup": "true"}}, "data": {"tmp": "1"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns},
            "type": "Opaque", "stringData": {"password": secret}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta("data"),
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": ns}]}),
        json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": meta("w1"), "spec": {"size": 3}}),
    ] {
        kube.create(object);
    }
    // the controller manager makes the Deployment's ReplicaSet
    wait_until(
        "the Deployment's ReplicaSet",
        Duration::from_secs(60),
        || !kube.list("apps/v1", "ReplicaSet", ns).is_empty(),
    );
}

/// The fields a restore must bring back unchanged (the server's own fields aside).
fn comparable(object: &Value) -> Value {
    let mut spec = object["spec"].clone();
    if object["kind"] == "Service" {
        let s = spec.as_object_mut().unwrap();
        s.remove("clusterIP");
        s.remove("clusterIPs");
    }
    json!({"labels": object["metadata"]["labels"], "spec": spec, "data": object["data"],
        "rules": object["rules"], "subjects": object["subjects"], "roleRef": object["roleRef"]})
}

#[test]
fn namespaces_are_backed_up_deleted_restored_and_never_overwritten() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let (shop, quiet, group) = (
        format!("shop-{s}"),
        format!("quiet-{s}"),
        format!("t{s}.cairn.test"),
    );
    let secret = format!("pa55-{s}-word");
    make_shop(&kube, &shop, &group, &secret);
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": quiet, "labels": {"compliantkubernetes.io/nobackup": ""}}}));
    kube.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": quiet}}));
    let dash = format!("dash-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": dash, "namespace": "kube-system", "labels": {"grafana_dashboard": "1"}}, "data": {"d.json": "{}"}}));
    kube.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("plain-{s}"), "namespace": "kube-system"}, "data": {"x": "y"}}));

    let report = k8s(
        &env,
        &kube,
        &[
            "backup",
            "-n",
            &shop,
            "-n",
            &quiet,
            "-n",
            "kube-system",
            "--cluster",
            "test",
        ],
    );
    let snaps: BTreeMap<&str, &str> = report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["namespace"].as_str().unwrap(),
                s["snapshot"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        snaps.keys().copied().collect::<Vec<_>>(),
        ["kube-system", shop.as_str()]
    );
    let left_out = report["left_out"].as_array().unwrap();
    assert!(
        left_out.iter().any(|l| l["namespace"] == quiet.as_str()
            && l["reason"].as_str().unwrap().contains("nobackup")),
        "{report}"
    );
    assert_eq!(
        report["opted_out"],
        json!([format!("{shop}/configmaps/scratch")])
    );

    // the shop's snapshot: its objects without server fields, the cluster objects it needs
    let stored = stored_objects(&env, snaps[shop.as_str()]);
    // a drill restores the namespace's manifests whole and finds each one intact and in place
    let drill = env.json(&["drill", snaps[shop.as_str()]]);
    assert_eq!(drill["record"]["passed"], true, "{drill:#}");
    assert_eq!(
        drill["record"]["snapshots"][0]["manifests_checked"],
        stored.len()
    );
    let paths: BTreeSet<&str> = stored.keys().map(String::as_str).collect();
    for p in [
        "resources/configmaps/settings.json".to_string(),
        "resources/deployments.apps/web.json".into(),
        "resources/services/web.json".into(),
        "resources/secrets/db.json".into(),
        "resources/persistentvolumeclaims/data.json".into(),
        "resources/serviceaccounts/app.json".into(),
        "resources/roles.rbac.authorization.k8s.io/reader.json".into(),
        "resources/rolebindings.rbac.authorization.k8s.io/reader.json".into(),
        format!("resources/widgets.{group}/w1.json"),
        format!("cluster/namespaces/{shop}.json"),
        format!("cluster/customresourcedefinitions.apiextensions.k8s.io/widgets.{group}.json"),
    ] {
        assert!(
            paths.contains(p.as_str()),
            "{p} not stored; stored: {paths:?}"
        );
    }
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("resources/replicasets.apps/"))
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.contains("scratch") || p.contains("events")),
        "{paths:?}"
    );
    for (path, object) in &stored {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            assert!(
                object["metadata"].get(field).is_none(),
                "{path} keeps {field}"
            );
        }
        assert!(object.get("status").is_none(), "{path} keeps its status");
    }
    let system = stored_objects(&env, snaps["kube-system"]);
    assert!(
        system.contains_key(&format!("resources/configmaps/{dash}.json")),
        "{system:?}"
    );
    assert!(
        !system.keys().any(|p| p.contains("plain-")),
        "only dashboards come from platform namespaces"
    );
    // secrets are encrypted at rest like everything else
    let encoded = base64::engine::general_purpose::STANDARD.encode(&secret);
    for name in env.objects.names("") {
        let bytes = env.objects.read(&name);
        for needle in [secret.as_bytes(), encoded.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{name} holds the secret in clear"
            );
        }
    }

    // disaster: the namespace and the CRD are gone
    kube.delete("v1", "Namespace", None, &shop);
    kube.delete(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        &format!("widgets.{group}"),
    );

    let restored = k8s(&env, &kube, &["restore", snaps[shop.as_str()]]);
    let report = &restored["report"];
    assert_eq!(report["failed"], json!([]), "{report}");
    let created = names(&report["created"]);
    for o in [
        format!("Namespace {shop}"),
        format!("CustomResourceDefinition widgets.{group}"),
        format!("Deployment {shop}/web"),
        format!("Service {shop}/web"),
        format!("ConfigMap {shop}/settings"),
        format!("Secret {shop}/db"),
        format!("PersistentVolumeClaim {shop}/data"),
        format!("ServiceAccount {shop}/app"),
        format!("Role {shop}/reader"),
        format!("RoleBinding {shop}/reader"),
        format!("Widget {shop}/w1"),
    ] {
        assert!(created.contains(&o), "{o} not created: {report}");
    }
    let left: Vec<&Value> = report["left_out"].as_array().unwrap().iter().collect();
    assert!(
        left.iter().any(|l| l["kind"] == "ReplicaSet"
            && l["reason"].as_str().unwrap().contains("Deployment web")),
        "{report}"
    );
    assert!(!created.iter().any(|c| c.starts_with("ReplicaSet")));

    // object by object, the cluster holds what was backed up
    for (path, object) in &stored {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let ns = object["metadata"]["namespace"].as_str();
        let shown = match ns {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        };
        if !created.contains(&shown) || matches!(kind, "Namespace" | "CustomResourceDefinition") {
            continue;
        }
        let live = kube
            .get(object["apiVersion"].as_str().unwrap(), kind, ns, name)
            .unwrap_or_else(|| panic!("{path} reported created but not in the cluster"));
        assert_eq!(
            comparable(&live),
            comparable(object),
            "{path} differs after restore"
        );
    }
    let live_secret = kube.get("v1", "Secret", Some(&shop), "db").unwrap();
    assert_eq!(
        live_secret["data"]["password"],
        json!(base64::engine::general_purpose::STANDARD.encode(&secret))
    );

    // again: everything exists, nothing is touched
    let before = kube
        .get("v1", "ConfigMap", Some(&shop), "settings")
        .unwrap();
    let again = k8s(&env, &kube, &["restore", snaps[shop.as_str()]]);
    assert_eq!(again["report"]["created"], json!([]), "{again}");
    assert_eq!(again["report"]["failed"], json!([]), "{again}");
    assert!(
        names(&again["report"]["existing"]).is_superset(&created),
        "{again}"
    );
    let after = kube
        .get("v1", "ConfigMap", Some(&shop), "settings")
        .unwrap();
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );

    // into another namespace
    let copy = format!("copy-{s}");
    let mapped = k8s(
        &env,
        &kube,
        &[
            "restore",
            snaps[shop.as_str()],
            "--namespace-mapping",
            &format!("{shop}={copy}"),
        ],
    );
    let created = names(&mapped["report"]["created"]);
    assert!(created.contains(&format!("Namespace {copy}")), "{mapped}");
    let left = mapped["report"]["left_out"].as_array().unwrap();
    assert!(
        !left.is_empty() && left.iter().all(|l| l["namespace"] == copy.as_str()),
        "reported where they would have gone: {mapped}"
    );
    assert!(
        created.contains(&format!("Deployment {copy}/web")),
        "{mapped}"
    );
    assert!(
        names(&mapped["report"]["existing"])
            .contains(&format!("CustomResourceDefinition widgets.{group}"))
    );
    let binding = kube
        .get(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            Some(&copy),
            "reader",
        )
        .unwrap();
    assert_eq!(binding["subjects"][0]["namespace"], copy.as_str());
    assert_eq!(
        kube.get("v1", "ConfigMap", Some(&copy), "settings")
            .unwrap()["data"],
        json!({"mode": "production"})
    );

    // a dry run changes nothing
    let dry = format!("dry-{s}");
    let planned = k8s(
        &env,
        &kube,
        &[
            "restore",
            snaps[shop.as_str()],
            "--dry-run",
            "--namespace-mapping",
            &format!("{shop}={dry}"),
        ],
    );
    assert!(
        names(&planned["report"]["created"]).contains(&format!("ConfigMap {dry}/settings")),
        "{planned}"
    );
    assert!(kube.get("v1", "Namespace", None, &dry).is_none());

    // only some kinds, only some labels
    let some = format!("some-{s}");
    let filtered = k8s(
        &env,
        &kube,
        &[
            "restore",
            "latest",
            "--cluster",
            "test",
            "--include-namespaces",
            &shop,
            "--namespace-mapping",
            &format!("{shop}={some}"),
            "--include-kinds",
            "configmaps,Secret",
            "-l",
            "app=web",
        ],
    );
    assert_eq!(
        names(&filtered["report"]["created"]),
        BTreeSet::from([
            format!("Namespace {some}"),
            format!("ConfigMap {some}/settings")
        ]),
        "{filtered}"
    );
}

/// The arguments of `cairn --json k8s backup-volumes` for node `node-a` of cluster `test`,
/// reading the kubelet tree at `kubelet`, for `namespaces`.
fn backup_volumes_args<'a>(
    kube: &'a Kube,
    kubelet: &'a str,
    namespaces: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--json",
        "k8s",
        "backup-volumes",
        "--node",
        "node-a",
        "--kubelet-root",
        kubelet,
        "--cluster",
        "test",
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
    ];
    for ns in namespaces {
        args.extend(["-n", ns]);
    }
    args
}

#[test]
fn volumes_are_read_from_the_kubelet_tree_and_restored_into_empty_folders() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("vols-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    let claim = |name: &str, volume: Option<&str>| {
        let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}});
        if let Some(v) = volume {
            c["spec"]["volumeName"] = json!(v);
        }
        kube.create(c);
    };
    let pv = format!("pv-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "", "hostPath": {"path": "/srv/data"},
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": "data"}}}));
    claim("data", Some(&pv));
    claim("idle", None);
    claim("remote", Some("pv-elsewhere"));
    let pod = |ns: &str, name: &str, node: &str, claim: &str, on_error: &str| {
        kube.create(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns,
                "annotations": {"pre.hook.backup.cairn.io/command": "[\"/bin/sync\"]",
                    "pre.hook.backup.cairn.io/on-error": on_error}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}),
        )
    };
    // no kubelet runs, so every hook fails: `Continue` lets the backup go on, `Fail` stops it
    let db = pod(&ns, "db", "node-a", "data", "Continue");
    pod(&ns, "other", "node-b", "remote", "Continue");
    let frozen = format!("frozen-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": frozen}}));
    kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "db", "namespace": frozen},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": "pv-frozen", "resources": {"requests": {"storage": "1Gi"}}}}));
    let stuck = pod(&frozen, "db", "node-a", "db", "Fail");

    // node-a's kubelet tree: the claim's volume is mounted under the pod's uid
    let kubelet = env.path("kubelet");
    let uid = db["metadata"]["uid"].as_str().unwrap();
    let mount = kubelet.join(format!("pods/{uid}/volumes/kubernetes.io~host-path/{pv}"));
    make_full_tree(&mount);

    let stuck_uid = stuck["metadata"]["uid"].as_str().unwrap();
    std::fs::create_dir_all(kubelet.join(format!(
        "pods/{stuck_uid}/volumes/kubernetes.io~csi/pv-frozen/mount"
    )))
    .unwrap();

    let args = backup_volumes_args(&kube, kubelet.to_str().unwrap(), &[&ns, &frozen]);
    let out = env.run(&args);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json_result(&out.stdout);
    assert_eq!(report["failed"], json!([frozen]), "{report}");
    let hook_errors = report["hook_errors"].as_array().unwrap();
    assert_eq!(hook_errors.len(), 2, "{report}");
    assert!(
        hook_errors
            .iter()
            .any(|e| e.as_str().unwrap().contains(&format!(
                "Pre hook of pod {ns}/db in container c (on-error: Continue)"
            ))),
        "{report}"
    );
    let snaps = report["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{report}");
    assert_eq!(snaps[0]["claim"], "data");
    assert_eq!(report["not_mounted"], json!([format!("{ns}/idle")]));
    assert_eq!(
        report["elsewhere"],
        json!([format!("{ns}/remote on node-b")])
    );
    let snapshot = snaps[0]["snapshot"].as_str().unwrap();
    let tags = env.json(&["snapshots"]);
    let tags = &tags
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == snapshot)
        .unwrap()["tags"];
    for t in [
        format!("namespace={ns}"),
        "content=volumes".into(),
        "claim=data".into(),
        "node=node-a".into(),
        "cluster=test".into(),
    ] {
        assert!(tags.as_array().unwrap().contains(&json!(t)), "{tags}");
    }

    // restored into an empty folder (a new claim's mount point): identical files
    let target = env.path("new-claim");
    std::fs::create_dir(&target).unwrap();
    env.ok(&[
        "k8s",
        "restore-volume",
        "latest",
        "-n",
        &ns,
        "--pvc",
        "data",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(diff_trees(&mount, &target, is_root()), Vec::<String>::new());

    // a volume holding files is not overwritten unless asked
    std::fs::write(target.join("docs/readme.txt"), "changed since").unwrap();
    let refused = env.run(&[
        "k8s",
        "restore-volume",
        snapshot,
        "--pvc",
        "data",
        "--target",
        target.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--overwrite"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("docs/readme.txt")).unwrap(),
        "changed since"
    );
    env.ok(&[
        "k8s",
        "restore-volume",
        snapshot,
        "--pvc",
        "data",
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(
        std::fs::read(target.join("docs/readme.txt")).unwrap(),
        std::fs::read(mount.join("docs/readme.txt")).unwrap()
    );

    // a claim not in the snapshot
    let missing = env.run(&[
        "k8s",
        "restore-volume",
        snapshot,
        "--pvc",
        "nope",
        "--target",
        env.path("x").to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("cairn ls"),
        "{}",
        stderr(&missing)
    );
    assert!(!Path::new(&env.path("x")).join("docs").exists());
}

#[test]
fn unreadable_volume_data_is_its_namespace_error_and_the_rest_is_backed_up() {
    use std::os::unix::fs::PermissionsExt;
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("locked-{s}");
    let pv = format!("pv-locked-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeName": pv, "resources": {"requests": {"storage": "1Gi"}}}}));
    let pod = kube.create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": ns},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}),
    );
    let kubelet = env.path("kubelet");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let mount = kubelet.join(format!("pods/{uid}/volumes/kubernetes.io~csi/{pv}/mount"));
    std::fs::create_dir_all(mount.join("locked")).unwrap();
    std::fs::write(mount.join("locked/secret"), b"hidden").unwrap();
    std::fs::write(mount.join("ok.txt"), b"readable").unwrap();
    std::fs::set_permissions(mount.join("locked"), PermissionsExt::from_mode(0o000)).unwrap();

    // as root, the backup runs as nobody so that the folder's permissions apply
    let args = backup_volumes_args(&kube, kubelet.to_str().unwrap(), &[&ns]);
    let out = env.cmd_unprivileged(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json_result(&out.stdout);
    let snaps = report["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{report}");
    assert_eq!(snaps[0]["namespace"], json!(ns));
    let errors = snaps[0]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    let named = format!("{}: cannot list", mount.join("locked").display());
    assert!(errors[0].as_str().unwrap().starts_with(&named), "{report}");
    assert_eq!(
        env.ls_paths(snaps[0]["snapshot"].as_str().unwrap()),
        [
            "/volumes",
            "/volumes/data",
            "/volumes/data/locked",
            "/volumes/data/ok.txt"
        ]
    );
}

#[test]
fn deployed_roles_are_enough_to_back_up_and_the_backup_role_cannot_restore() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let system = format!("cairn-{s}");
    // the backup's role as `cairn k8s rbac` renders it for the server's kinds (other tests add
    // custom kinds, which deploy/base's role does not name), the rest as deploy/base has it
    let _no_new_kinds = KINDS.read().unwrap_or_else(|e| e.into_inner());
    let backup_role = rendered_roles(&env, &kube, &system, &s)
        .into_iter()
        .find(|o| o["metadata"]["name"] == format!("cairn-backup-{s}"))
        .unwrap();
    let objects: Vec<Value> = deploy_objects(&system, &s)
        .into_iter()
        .map(|o| {
            match o["metadata"]["name"] == backup_role["metadata"]["name"]
                && o["kind"] == "ClusterRole"
            {
                true => backup_role.clone(),
                false => o,
            }
        })
        .collect();
    // least privilege, as written: backup only reads; the volume backup reads (hooks are a
    // separate role, bound by nobody); restore creates but never changes or deletes
    for o in objects.iter().filter(|o| o["kind"] == "ClusterRole") {
        let role = o["metadata"]["name"].as_str().unwrap();
        for rule in o["rules"].as_array().unwrap() {
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            for verb in rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
            {
                let allowed = matches!(verb, "get" | "list")
                    || matches!(verb, "create" | "bind") && role.starts_with("cairn-restore")
                    || verb == "create"
                        && role.starts_with("cairn-volume-hooks")
                        && resources == ["pods/exec"];
                assert!(allowed, "{role} may {verb} {resources:?}");
            }
        }
    }
    // the real API server accepts every object of the deployment
    for o in objects {
        kube.create(o);
    }

    let app = format!("app-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": app}}));
    kube.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": app}, "data": {"a": "1"}}));
    kube.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "key", "namespace": app}, "stringData": {"k": "v"}}));
    kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": app},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}));
    let as_sa = |sa: &str| kube.kubeconfig_for(&system, sa, &env.path(&format!("{sa}.kubeconfig")));

    // the backup's service account reads everything it needs, with no error
    let backup_kc = as_sa("cairn-backup");
    let metrics = env.path("k8s.prom");
    let report = env.json(&[
        "k8s",
        "backup",
        "--kubeconfig",
        backup_kc.to_str().unwrap(),
        "-n",
        &app,
        "--cluster",
        "prod-1",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(report["errors"], json!([]), "{report}");
    // the run's figures, by cluster and namespace, for monitoring
    let text = std::fs::read_to_string(&metrics).unwrap();
    let line = format!(
        "cairn_backup_objects{{command=\"k8s-backup\",cluster=\"prod-1\",namespace=\"{app}\"}} "
    );
    let objects = text
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        objects,
        report["snapshots"][0]["objects"].to_string(),
        "{text}"
    );
    assert!(
        text.contains("cairn_backup_errors{command=\"k8s-backup\",cluster=\"prod-1\"} 0\n"),
        "{text}"
    );
    assert_eq!(
        report["snapshots"][0]["namespace"],
        app.as_str(),
        "{report}"
    );
    assert!(
        report["snapshots"][0]["objects"].as_u64().unwrap() >= 4,
        "{report}"
    );
    let volumes_kc = as_sa("cairn-volumes");
    let volumes = env.json(&[
        "k8s",
        "backup-volumes",
        "--kubeconfig",
        volumes_kc.to_str().unwrap(),
        "-n",
        &app,
        "--node",
        "node-a",
        "--kubelet-root",
        env.path("none").to_str().unwrap(),
    ]);
    assert_eq!(
        volumes["not_mounted"],
        json!([format!("{app}/data")]),
        "{volumes}"
    );

    // ... and cannot create anything
    let moved = format!("moved-{s}");
    let mapping = format!("{app}={moved}");
    let snapshot = report["snapshots"][0]["snapshot"].as_str().unwrap();
    let refused = env.run(&[
        "--json",
        "k8s",
        "restore",
        snapshot,
        "--namespace-mapping",
        &mapping,
        "--kubeconfig",
        backup_kc.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    let refused: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(refused["report"]["created"], json!([]));
    assert!(
        refused["report"]["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("forbidden"),
        "{refused}"
    );
    assert!(kube.get("v1", "Namespace", None, &moved).is_none());

    // the restore's service account, bound for the restore as the README shows, can restore,
    // and still never overwrites
    let binding = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/restore-binding.yaml");
    for o in deploy_file(&binding, &system, &s) {
        kube.create(o);
    }
    let restore_kc = as_sa("cairn-restore");
    let restore = |kc: &Path| {
        env.json(&[
            "k8s",
            "restore",
            snapshot,
            "--namespace-mapping",
            &mapping,
            "--kubeconfig",
            kc.to_str().unwrap(),
        ])
    };
    let first = restore(&restore_kc);
    assert_eq!(first["report"]["failed"], json!([]), "{first}");
    assert!(
        names(&first["report"]["created"]).contains(&format!("ConfigMap {moved}/settings")),
        "{first}"
    );
    let second = restore(&restore_kc);
    assert_eq!(second["report"]["created"], json!([]), "{second}");
    assert!(
        names(&second["report"]["existing"]).contains(&format!("ConfigMap {moved}/settings")),
        "{second}"
    );
}

/// Which days' snapshots of each claim of namespace `ns` are left: every claim is restored from
/// every volume snapshot of the namespace (as a user picking a day in `cairn snapshots` would),
/// and each restore must bring back exactly what the claim held when that day's backup ran
/// (`had`, by claim and day of the month).
fn claim_days(
    env: &Env,
    ns: &str,
    had: &BTreeMap<(&str, u32), BTreeMap<String, Vec<u8>>>,
) -> BTreeMap<String, BTreeSet<u32>> {
    let claims: BTreeSet<&str> = had.keys().map(|(claim, _)| *claim).collect();
    let namespace = json!(format!("namespace={ns}"));
    let mut days: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for snap in env.json(&["snapshots"]).as_array().unwrap() {
        let tags = snap["tags"].as_array().unwrap();
        if !tags.contains(&namespace) || !tags.contains(&json!("content=volumes")) {
            continue;
        }
        let id = snap["id"].as_str().unwrap();
        let day: u32 = snap["time"].as_str().unwrap()[8..10].parse().unwrap();
        for claim in &claims {
            let target = env.path(&format!("restored-{claim}-{id}"));
            let out = env.run(&[
                "k8s",
                "restore-volume",
                id,
                "--pvc",
                claim,
                "--target",
                target.to_str().unwrap(),
            ]);
            if !out.status.success() {
                assert!(
                    stderr(&out).contains("is not in this snapshot"),
                    "{}",
                    stderr(&out)
                );
                continue;
            }
            assert!(
                file_contents(&target) == had[&(*claim, day)],
                "claim {claim} restored from snapshot {id} of day {day} differs from what it held that day"
            );
            std::fs::remove_dir_all(&target).unwrap();
            days.entry(claim.to_string()).or_default().insert(day);
        }
    }
    days
}

/// What claim `claim` (folder `dir`) holds on `day`, recorded in `had`: a file changed every day,
/// and one more log file each day.
fn write_day(
    had: &mut BTreeMap<(&str, u32), BTreeMap<String, Vec<u8>>>,
    claim: &'static str,
    dir: &Path,
    day: u32,
) {
    std::fs::write(dir.join("day.txt"), format!("{claim} on day {day}\n")).unwrap();
    let log = noise(day.into(), 3000 + day as usize);
    std::fs::write(dir.join(format!("log-{day:02}")), log).unwrap();
    had.insert((claim, day), file_contents(dir));
}

/// Claims' day-by-day histories, as `claim_days` returns them.
fn history(days: &[(&str, std::ops::RangeInclusive<u32>)]) -> BTreeMap<String, BTreeSet<u32>> {
    days.iter()
        .map(|(claim, range)| (claim.to_string(), range.clone().collect()))
        .collect()
}

#[test]
fn every_claim_keeps_its_own_history_whichever_node_backs_it_up() {
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("history-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    for claim in ["alpha", "beta"] {
        kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": format!("pv-{claim}-{s}"),
                "resources": {"requests": {"storage": "1Gi"}}}}));
    }
    // two nodes (registered, or the controller manager deletes their pods as orphans)
    let (node_a, node_b) = (format!("node-a-{s}"), format!("node-b-{s}"));
    for node in [&node_a, &node_b] {
        kube.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}));
    }
    let kubelet = |node: &str| env.path(&format!("kubelet-{node}"));
    // a pod on `node` mounting `claim`, and the claim's folder in that node's kubelet tree
    let mount = |claim: &str, node: &str, pod: &str| {
        let pv = format!("pv-{claim}-{s}");
        let dir = pod_mounting(&kube, &ns, (claim, &pv), (pod, node), &kubelet(node));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };
    let mut had = BTreeMap::new();
    let backup = |node: &str, day: u32, hour: u32| {
        k8s(
            &env,
            &kube,
            &[
                "backup-volumes",
                "-n",
                &ns,
                "--node",
                node,
                "--kubelet-root",
                kubelet(node).to_str().unwrap(),
                "--cluster",
                "test",
                "--time",
                &format!("2026-03-{day:02}T{hour:02}:00:00Z"),
            ],
        )
    };

    // ten days: node-a backs up alpha at 01:00; node-b backs up beta at 02:00 until day 7,
    // when its backups stop
    let alpha = mount("alpha", &node_a, "a");
    let beta = mount("beta", &node_b, "b");
    for day in 1..=10 {
        write_day(&mut had, "alpha", &alpha, day);
        backup(&node_a, day, 1);
        if day <= 7 {
            write_day(&mut had, "beta", &beta, day);
            backup(&node_b, day, 2);
        }
    }

    // the README's daily retention: every claim keeps its last 7 days
    let plan = env.ok(&["forget", "--keep-daily", "7", "--dry-run"]);
    env.ok(&["forget", "--keep-daily", "7"]);
    assert_eq!(
        claim_days(&env, &ns, &had),
        history(&[("alpha", 4..=10), ("beta", 1..=7)])
    );
    // the dry run showed one group per claim
    for claim in ["alpha", "beta"] {
        assert!(
            plan.lines()
                .any(|l| l.ends_with(':') && l.contains(&format!("k8s:{ns}/volumes/{claim}"))),
            "{plan}"
        );
    }
    // --keep-within counts from each claim's own newest snapshot: beta's history stays although
    // node-b stopped backing up
    env.ok(&["forget", "--keep-within", "48h"]);
    assert_eq!(
        claim_days(&env, &ns, &had),
        history(&[("alpha", 8..=10), ("beta", 5..=7)])
    );
    // `latest` is each claim's own newest
    let latest = |claim: &str| {
        let target = env.path(&format!("latest-{claim}-{}", suffix()));
        env.ok(&[
            "k8s",
            "restore-volume",
            "latest",
            "-n",
            &ns,
            "--pvc",
            claim,
            "--target",
            target.to_str().unwrap(),
        ]);
        file_contents(&target)
    };
    assert!(latest("alpha") == had[&("alpha", 10)]);
    assert!(latest("beta") == had[&("beta", 7)]);

    // alpha moves to node-b (a pod there mounts it now; node-b's backups run again): its
    // history goes on in the same group
    let moved = mount("alpha", &node_b, "a2");
    for (name, file) in file_contents(&alpha) {
        std::fs::write(moved.join(name), file).unwrap();
    }
    write_day(&mut had, "alpha", &moved, 11);
    write_day(&mut had, "beta", &beta, 11);
    let day11 = backup(&node_b, 11, 1);
    env.ok(&["forget", "--keep-within", "48h"]);
    assert_eq!(
        claim_days(&env, &ns, &had),
        history(&[("alpha", 9..=11), ("beta", 11..=11)])
    );
    assert!(latest("alpha") == had[&("alpha", 11)]);

    // the drill's default sample is each claim's newest snapshot; copies keep the claims apart,
    // and the audit report judges each claim's history, here and in the replica
    let newest: BTreeSet<&str> = day11["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(newest.len(), 2, "{day11}");
    let drill = env.json(&["drill"]);
    let drilled: BTreeSet<&str> = drill["record"]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(drilled, newest, "{drill}");
    let replica = target_for(&env, backend::on_s3());
    let mut copy = env.cmd(&["copy", "--all", "--to", &replica.repo]);
    copy.env("CAIRN_TO_PASSWORD_FILE", &replica.password_file);
    assert!(copy.output().unwrap().status.success());
    let mut report = env.cmd(&["--json", "report", "--replica", &replica.repo]);
    report.env("CAIRN_TO_PASSWORD_FILE", &replica.password_file);
    let report = json_result(&report.output().unwrap().stdout);
    assert_schema("report", &report);
    let groups: BTreeMap<&str, &Value> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["label"].as_str().unwrap(), g))
        .collect();
    for (claim, days) in [("alpha", 3), ("beta", 1)] {
        let group = groups[format!("namespace {ns} (volumes of claim {claim})").as_str()];
        assert_eq!(
            group["snapshots"].as_array().unwrap().len(),
            days,
            "{report}"
        );
        assert_eq!(group["replica"]["not_copied"], 0, "{report}");
    }

    // a --time in the future is refused by both Kubernetes backups: nothing is written
    let future = (chrono::Utc::now() + chrono::Duration::days(3650)).to_rfc3339();
    let before = env.snapshot_ids();
    let kubelet_b = kubelet(&node_b);
    for args in [
        vec!["backup"],
        vec![
            "backup-volumes",
            "--node",
            &node_b,
            "--kubelet-root",
            kubelet_b.to_str().unwrap(),
        ],
    ] {
        let mut all = vec!["k8s"];
        all.extend(args);
        all.extend([
            "-n",
            &ns,
            "--cluster",
            "test",
            "--time",
            &future,
            "--kubeconfig",
            kube.kubeconfig.to_str().unwrap(),
        ]);
        let out = env.run(&all);
        assert_eq!(out.status.code(), Some(1), "{all:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--allow-future-time"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(env.snapshot_ids(), before);
}
