//! A blocking connection to one cluster's API server: discovery, listing and creating objects
//! of any kind as JSON.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, AttachParams, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use serde_json::Value;

use super::hooks::{Hook, OUTPUT_MAX};
use crate::error::{Error, Result};

/// How to reach the API server.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    /// A kubeconfig file; without it, `KUBECONFIG`, `~/.kube/config` or the in-cluster service
    /// account are used, in that order.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current one.
    pub context: Option<String>,
}

/// One API resource the server serves, with what it supports.
#[derive(Clone, Debug)]
pub struct Resource {
    /// Group, version, kind and plural.
    pub api: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
    /// Whether it can be listed.
    pub listable: bool,
}

impl Resource {
    /// `plural` for the core group, `plural.group` otherwise, as `kubectl` names resources.
    pub fn qualified_name(&self) -> String {
        match self.api.group.as_str() {
            "" => self.api.plural.clone(),
            g => format!("{}.{g}", self.api.plural),
        }
    }
}

/// What creating an object did.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// The object was created.
    New,
    /// An object of that name already existed; it was left untouched.
    Existed,
}

/// A connection to one cluster, with the API resources it serves.
pub struct Cluster {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    discovery: Discovery,
    name: String,
}

impl Cluster {
    /// Connects and discovers the served API resources.
    pub fn connect(how: &Connect) -> Result<Cluster> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let options = KubeConfigOptions {
            context: how.context.clone(),
            ..Default::default()
        };
        let (config, name) = runtime.block_on(async {
            match &how.kubeconfig {
                Some(path) => {
                    let file = Kubeconfig::read_from(path).map_err(|e| {
                        Error::Invalid(format!(
                            "cannot read kubeconfig {}: {e}; check --kubeconfig",
                            path.display()
                        ))
                    })?;
                    let name = cluster_name(&file, &options);
                    let config = kube::Config::from_custom_kubeconfig(file, &options)
                        .await
                        .map_err(|e| {
                            Error::Invalid(format!(
                                "kubeconfig {} is not usable: {e}; check its current context",
                                path.display()
                            ))
                        })?;
                    Ok((config, name))
                }
                None => {
                    let config = kube::Config::infer().await.map_err(|e| {
                        Error::Invalid(format!(
                            "no Kubernetes connection found ({e}): give --kubeconfig, set KUBECONFIG, or run in a pod with a service account"
                        ))
                    })?;
                    let name = Kubeconfig::read()
                        .map(|f| cluster_name(&f, &options))
                        .unwrap_or_else(|_| "in-cluster".into());
                    Ok::<_, Error>((config, name))
                }
            }
        })?;
        // the client spawns its connection tasks: it must be made inside the runtime
        let _inside = runtime.enter();
        let client = kube::Client::try_from(config)
            .map_err(|e| Error::kube("setting up the Kubernetes client", e))?;
        let discovery = runtime
            .block_on(Discovery::new(client.clone()).run())
            .map_err(|e| Error::kube("discovering the API resources", e))?;
        Ok(Cluster {
            runtime,
            client,
            discovery,
            name,
        })
    }

    /// The cluster's name in the kubeconfig (`in-cluster` inside a pod).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Discovers the served API resources again (after CRDs were created).
    pub fn rediscover(&mut self) -> Result<()> {
        self.discovery = self
            .runtime
            .block_on(Discovery::new(self.client.clone()).run())
            .map_err(|e| Error::kube("discovering the API resources", e))?;
        Ok(())
    }

    /// Every served resource, each group's at its most stable version (so that kinds served
    /// only by an older version, like CronJob at `batch/v1beta1` on 1.20, are included).
    pub fn resources(&self) -> Vec<Resource> {
        self.discovery
            .groups()
            .flat_map(|g| g.resources_by_stability())
            .map(|(api, caps)| resource(api, &caps))
            .collect()
    }

    /// The resource serving `kind` at `api_version`, or else the kind in the same group at the
    /// version the server prefers.
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<Resource> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        self.discovery
            .resolve_gvk(&gvk)
            .or_else(|| self.discovery.get(group)?.recommended_kind(kind))
            .map(|(api, caps)| resource(api, &caps))
    }

    /// Every object of `resource` (in `namespace`, or everywhere), as JSON with `apiVersion`
    /// and `kind` set, read in pages of 500.
    pub fn list(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>> {
        self.list_selected(resource, namespace, None)
    }

    /// [`Cluster::list`], only the objects whose labels match `selector` (Kubernetes label
    /// selector syntax, evaluated by the API server).
    pub fn list_selected(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Result<Vec<Value>> {
        let api = self.api(resource, namespace);
        let mut params = ListParams::default().limit(500);
        if let Some(selector) = selector {
            params = params.labels(selector);
        }
        let mut out = Vec::new();
        loop {
            let page = self
                .block_on(api.list(&params))
                .map_err(|e| Error::kube(format!("listing {}", resource.qualified_name()), e))?;
            for mut item in page.items {
                item.types = Some(kube::api::TypeMeta {
                    api_version: resource.api.api_version.clone(),
                    kind: resource.api.kind.clone(),
                });
                out.push(serde_json::to_value(item).expect("objects serialize"));
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(out),
            }
        }
    }

    /// Whether the API server accepts `selector` as a label selector: `Err` holds its answer
    /// (asked by listing at most one Namespace with it).
    pub fn check_selector(&self, selector: &str) -> Result<std::result::Result<(), String>> {
        let namespaces = self.resolve("v1", "Namespace").ok_or_else(|| {
            Error::Invalid(
                "the cluster serves no Namespaces: is this a Kubernetes API server?".into(),
            )
        })?;
        let params = ListParams::default().limit(1).labels(selector);
        match self.block_on(self.api(&namespaces, None).list(&params)) {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(s)) if s.code == 400 => Ok(Err(s.message)),
            Err(e) => Err(Error::kube("checking the label selector", e)),
        }
    }

    /// The object `name` of `resource`, if it exists.
    pub fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        let api = self.api(resource, namespace);
        let got = self
            .block_on(api.get_opt(name))
            .map_err(|e| Error::kube(format!("reading {} {name}", resource.api.kind), e))?;
        Ok(got.map(|o| serde_json::to_value(o).expect("objects serialize")))
    }

    /// Creates `object`; never replaces or changes an existing one.
    pub fn create(&self, resource: &Resource, object: &Value) -> Result<Created, String> {
        let namespace = object["metadata"]["namespace"].as_str();
        let api = self.api(resource, namespace);
        let dynamic: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
        match self.block_on(api.create(&PostParams::default(), &dynamic)) {
            Ok(_) => Ok(Created::New),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Created::Existed),
            Err(kube::Error::Api(s)) => Err(s.message),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits until the CustomResourceDefinition `name` is established (at most `limit`).
    pub fn wait_established(&self, name: &str, limit: Duration) -> Result<bool> {
        let crd = self
            .resolve("apiextensions.k8s.io/v1", "CustomResourceDefinition")
            .ok_or_else(|| {
                Error::Invalid("this cluster serves no CustomResourceDefinitions".into())
            })?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            let established = self.get(&crd, None, name)?.is_some_and(|o| {
                o["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                })
            });
            if established || std::time::Instant::now() >= deadline {
                return Ok(established);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `hook`'s command in its pod and container; an error says why it failed.
    pub fn exec(&self, hook: &Hook) -> Result<(), String> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &hook.namespace);
        let params = AttachParams::default()
            .container(hook.container.clone())
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let run = async {
            let mut process = pods
                .exec(&hook.pod, hook.command.clone(), &params)
                .await
                .map_err(|e| e.to_string())?;
            let status = process.take_status().ok_or("the pod gave no exit status")?;
            let (stdout, stderr) = (process.stdout(), process.stderr());
            let (status, _, stderr) = futures::join!(
                status,
                bounded_read(stdout, OUTPUT_MAX),
                bounded_read(stderr, OUTPUT_MAX)
            );
            match status {
                Some(s) if s.status.as_deref() == Some("Success") => Ok(()),
                Some(s) => Err(format!(
                    "{} {}",
                    s.message.unwrap_or_default(),
                    stderr.trim()
                )),
                None => Err("the pod gave no exit status".into()),
            }
        };
        self.block_on(async { tokio::time::timeout(hook.timeout, run).await })
            .map_err(|_| format!("did not finish within {:?}", hook.timeout))?
    }

    fn api(&self, resource: &Resource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) if resource.namespaced => {
                Api::namespaced_with(self.client.clone(), ns, &resource.api)
            }
            _ => Api::all_with(self.client.clone(), &resource.api),
        }
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

/// Reads `from` to its end, keeping at most `max` bytes (as text; a note says how many more
/// there were): a process's output is drained, so it never blocks on a full pipe, and a tenant's
/// hook cannot fill the backup's memory.
async fn bounded_read(from: Option<impl tokio::io::AsyncRead + Unpin>, max: usize) -> String {
    use tokio::io::AsyncReadExt;
    let Some(mut from) = from else {
        return String::new();
    };
    let (mut kept, mut dropped) = (Vec::new(), 0usize);
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = n.min(max - kept.len());
        kept.extend_from_slice(&buf[..room]);
        dropped += n - room;
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text += &format!(" [{dropped} more bytes of output not kept]");
    }
    text
}

fn resource(api: ApiResource, caps: &ApiCapabilities) -> Resource {
    Resource {
        namespaced: caps.scope == Scope::Namespaced,
        listable: caps.supports_operation(verbs::LIST),
        api,
    }
}

/// The name of the cluster the kubeconfig's (chosen) context points at.
fn cluster_name(file: &Kubeconfig, options: &KubeConfigOptions) -> String {
    let context = options
        .context
        .clone()
        .or_else(|| file.current_context.clone());
    file.contexts
        .iter()
        .find(|c| Some(&c.name) == context.as_ref())
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_else(|| "cluster".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_output_is_drained_and_kept_up_to_a_bound() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let long = vec![b'x'; 100_000];
        let text = runtime.block_on(bounded_read(Some(long.as_slice()), 10));
        assert_eq!(text, "xxxxxxxxxx [99990 more bytes of output not kept]");
        let short = runtime.block_on(bounded_read(Some(&b"failed"[..]), 10));
        assert_eq!(short, "failed");
        let none = runtime.block_on(bounded_read(None::<&[u8]>, 10));
        assert_eq!(none, "");
    }
}
