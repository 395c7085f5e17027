//! The test API server (a real etcd + kube-apiserver + kube-controller-manager on 127.0.0.1,
//! started by `scripts/test.sh` through `scripts/kube-server.sh`), reached with the `kube`
//! crate directly, independently of the code under test, to set up and inspect objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiResource, Discovery, Scope, pinned_kind, verbs};

use serde_json::{Value, json};

use super::Env;

/// A client of the test API server.
pub struct Kube {
    /// The kubeconfig file, for `cairn --kubeconfig`.
    pub kubeconfig: PathBuf,
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
}

/// A short random suffix, so that tests sharing one API server use their own names.
pub fn suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:08x}", random as u32)
}

impl Kube {
    /// Connects to the server at `CAIRN_TEST_KUBECONFIG`.
    pub fn connect() -> Kube {
        let kubeconfig = PathBuf::from(std::env::var_os("CAIRN_TEST_KUBECONFIG").expect(
            "CAIRN_TEST_KUBECONFIG is not set: run the tests with scripts/test.sh, which starts a test API server",
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            let file = Kubeconfig::read_from(&kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        Kube {
            kubeconfig,
            runtime,
            client,
        }
    }

    fn api(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps): (ApiResource, _) = self
            .runtime
            .block_on(pinned_kind(&self.client, &gvk))
            .unwrap_or_else(|e| panic!("{api_version} {kind} not served: {e}"));
        match namespace {
            Some(ns) if caps.scope == Scope::Namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
            _ => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Creates `object` (JSON with apiVersion, kind and metadata) and returns it as stored.
    pub fn create(&self, object: Value) -> Value {
        let api = self.api(
            object["apiVersion"].as_str().unwrap(),
            object["kind"].as_str().unwrap(),
            object["metadata"]["namespace"].as_str(),
        );
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let made = self
            .runtime
            .block_on(api.create(&PostParams::default(), &dynamic))
            .unwrap_or_else(|e| panic!("creating {object}: {e}"));
        serde_json::to_value(made).unwrap()
    }

    /// The object, if it exists.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let api = self.api(api_version, kind, ns);
        self.runtime
            .block_on(api.get_opt(name))
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// Every object of a kind in a namespace.
    pub fn list(&self, api_version: &str, kind: &str, ns: &str) -> Vec<Value> {
        let api = self.api(api_version, kind, Some(ns));
        let list = self
            .runtime
            .block_on(api.list(&Default::default()))
            .unwrap();
        list.items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    /// Deletes an object and waits until it is gone (namespaces: until the controller manager
    /// has emptied and removed them).
    pub fn delete(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) {
        let api = self.api(api_version, kind, ns);
        self.runtime
            .block_on(api.delete(name, &DeleteParams::foreground()))
            .unwrap();
        wait_until(
            &format!("{kind} {name} to be deleted"),
            Duration::from_secs(120),
            || self.get(api_version, kind, ns, name).is_none(),
        );
    }
}

impl Kube {
    /// Whether service account `ns/sa` may `verb` `resource` (`plural` or `plural/subresource`)
    /// of `group` in `namespace` (everywhere: `None`), as `kubectl auth can-i VERB RESOURCE
    /// --as=system:serviceaccount:NS:SA` answers it: a SubjectAccessReview.
    pub fn can_i(
        &self,
        (ns, sa): (&str, &str),
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> bool {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let review = self.create(json!({"apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview", "metadata": {},
            "spec": {"user": format!("system:serviceaccount:{ns}:{sa}"),
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                    "subresource": subresource, "namespace": namespace.unwrap_or_default()}}}));
        review["status"]["allowed"] == true
    }

    /// Every listable resource the server serves, as (group, plural, namespaced), each group's
    /// at its most stable version.
    pub fn listable_resources(&self) -> BTreeSet<(String, String, bool)> {
        let discovery = self
            .runtime
            .block_on(Discovery::new(self.client.clone()).run())
            .unwrap();
        discovery
            .groups()
            .flat_map(|g| g.resources_by_stability())
            .filter(|(_, caps)| caps.supports_operation(verbs::LIST))
            .map(|(r, caps)| (r.group, r.plural, caps.scope == Scope::Namespaced))
            .collect()
    }

    /// A kubeconfig for the same server that authenticates as service account `sa` of `ns`
    /// (with the token the controller manager made for it), written to `path`.
    pub fn kubeconfig_for(&self, ns: &str, sa: &str, path: &std::path::Path) -> PathBuf {
        let mut token = String::new();
        wait_until(
            &format!("a token for {ns}/{sa}"),
            Duration::from_secs(60),
            || {
                let found = self.list("v1", "Secret", ns).into_iter().find(|s| {
                    s["type"] == "kubernetes.io/service-account-token"
                        && s["metadata"]["annotations"]["kubernetes.io/service-account.name"] == sa
                        && s["data"]["token"].is_string()
                });
                if let Some(secret) = found {
                    use base64::Engine;
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(secret["data"]["token"].as_str().unwrap())
                        .unwrap();
                    token = String::from_utf8(raw).unwrap();
                }
                !token.is_empty()
            },
        );
        let admin = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let theirs: String = admin
            .lines()
            .map(|l| match l.trim_start().strip_prefix("token: ") {
                Some(_) => format!("    token: {token}\n"),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(path, theirs).unwrap();
        path.to_owned()
    }
}

/// Polls `done` every 200 ms until it holds; panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A claim `claim` of namespace `ns`, bound to volume `pv`, and a pod `pod` on `node` that
/// mounts it; returns the folder where that node's kubelet (rooted at `kubelet`) would mount the
/// volume, not created. (No kubelet runs here: the folder stands for the mount.)
pub fn mounted_claim(
    kube: &Kube,
    ns: &str,
    (claim, pv): (&str, &str),
    (pod, node): (&str, &str),
    kubelet: &std::path::Path,
) -> PathBuf {
    kube.create(
        serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
            "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    pod_mounting(kube, ns, (claim, pv), (pod, node), kubelet)
}

/// A pod `pod` on `node` that mounts claim `claim` (bound to volume `pv`); returns the folder
/// where that node's kubelet (rooted at `kubelet`) would mount the volume, not created.
pub fn pod_mounting(
    kube: &Kube,
    ns: &str,
    (claim, pv): (&str, &str),
    (pod, node): (&str, &str),
    kubelet: &std::path::Path,
) -> PathBuf {
    let pod = kube.create(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}}));
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    kubelet.join(format!("pods/{uid}/volumes/kubernetes.io~host-path/{pv}"))
}

/// `cairn --json k8s ARGS… --kubeconfig K`.
pub fn k8s(env: &Env, kube: &Kube, args: &[&str]) -> Value {
    let mut all = vec!["k8s"];
    all.extend_from_slice(args);
    all.extend(["--kubeconfig", kube.kubeconfig.to_str().unwrap()]);
    env.json(&all)
}

/// Names in a restore report's list, as `Kind namespace/name` or `Kind name`.
pub fn names(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| match o["namespace"].as_str() {
            Some(ns) => format!(
                "{} {ns}/{}",
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            ),
            None => format!(
                "{} {}",
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            ),
        })
        .collect()
}

/// The objects of `deploy/base` (the files its kustomization lists), as kustomize would make
/// them for namespace `ns`, with cluster-wide names suffixed by `s` so that runs do not clash.
pub fn deploy_objects(ns: &str, s: &str) -> Vec<Value> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base");
    let kustomization: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(base.join("kustomization.yaml")).unwrap())
            .unwrap();
    kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|file| deploy_file(&base.join(file.as_str().unwrap()), ns, s))
        .collect()
}

/// The objects of one deployment file (`deploy/…`), made for namespace `ns` and suffix `s` as
/// [`deploy_objects`] makes them. The 1.20 test server serves CronJob only as batch/v1beta1
/// (1.21 and later: batch/v1, as the manifests say), so CronJobs are sent as v1beta1 here.
pub fn deploy_file(path: &Path, ns: &str, s: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for mut o in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
        let kind = o["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "Namespace" => o["metadata"]["name"] = json!(ns),
            "ClusterRole" | "ClusterRoleBinding" => {
                let name = format!("{}-{s}", o["metadata"]["name"].as_str().unwrap());
                o["metadata"]["name"] = json!(name);
                if kind == "ClusterRoleBinding" {
                    o["roleRef"]["name"] = json!(name);
                    o["subjects"][0]["namespace"] = json!(ns);
                }
            }
            _ => o["metadata"]["namespace"] = json!(ns),
        }
        if kind == "CronJob" {
            o["apiVersion"] = json!("batch/v1beta1");
        }
        out.push(o);
    }
    out
}

/// The CustomResourceDefinition of kind Widget (plural widgets) in `group`.
pub fn crd(group: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

/// Held for writing while a test adds a kind (a CRD) to the shared server, and for reading by
/// a test that renders the roles for the server's kinds and then backs up with them, so that no
/// kind appears in between.
pub static KINDS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The ClusterRoles `cairn k8s rbac` renders for the server's kinds, named as [`deploy_file`]
/// names them for suffix `s`.
pub fn rendered_roles(env: &Env, kube: &Kube, ns: &str, s: &str) -> Vec<Value> {
    let text = env.ok(&[
        "k8s",
        "rbac",
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
    ]);
    let file = env.path(&format!("rbac-{s}.yaml"));
    std::fs::write(&file, text).unwrap();
    deploy_file(&file, ns, s)
}

/// Creates [`crd`] of `group` and waits until the server serves it.
pub fn create_crd(kube: &Kube, group: &str) {
    let _adding = KINDS.write().unwrap_or_else(|e| e.into_inner());
    kube.create(crd(group));
    wait_until("the CRD to be established", Duration::from_secs(60), || {
        kube.get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &format!("widgets.{group}"),
        )
        .is_some_and(|c| {
            c["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            })
        })
    });
}
