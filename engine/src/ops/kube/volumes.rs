//! `cairn k8s backup-volumes`: the files of every PersistentVolumeClaim mounted by a pod on
//! this node, read where the kubelet mounts them, one snapshot per claim (`volumes/<claim>/`).
//!
//! Each node backs up its own pods' claims, so nodes run in parallel into one repository; a
//! claim that no pod mounts cannot be read anywhere and is reported. A claim's snapshots form
//! one history whichever node read them (their paths name the namespace and the claim, not the
//! node), so retention keeps each claim's history on its own. The pods' [`hooks`](crate::sources::kube::hooks) run before
//! and after a namespace's claims are read.
//!
//! Namespace owners choose what is left out with annotations, which are treated as untrusted
//! input: [`EXCLUDE_VOLUMES`] on a pod names pod volumes whose claims are not backed up, and
//! [`EXCLUDE_PATHS`] on a claim lists path patterns left out of its files (a claim whose
//! patterns are bad is backed up whole, with an error saying so).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{RawBytes, Tree};
use crate::ops::backup::{self, BackupOptions, Parent, Source};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::sources::fs::exclude::Excludes;
use crate::sources::kube::hooks::{Hook, Phase};
use crate::sources::kube::select::{self, NamespaceChoice};
use crate::sources::kube::{Cluster, Resource, snapshot_paths, tags};

/// Pod annotation: the pod's volumes (names in its `spec.volumes`, comma-separated) whose claims
/// are not backed up (as Velero's `backup.velero.io/backup-volumes-excludes`).
pub const EXCLUDE_VOLUMES: &str = "backup.cairn.io/exclude-volumes";

/// Claim annotation: path patterns (comma-separated; the rules of `cairn backup --exclude`) left
/// out of the claim's backup; a pattern starting with `/` is anchored at the volume's root.
pub const EXCLUDE_PATHS: &str = "backup.cairn.io/exclude-paths";

/// The longest [`EXCLUDE_PATHS`] annotation, in bytes: its patterns are matched against every
/// path of the volume, and one namespace's annotation must not slow down the node's whole run.
pub const MAX_EXCLUDE_PATHS_LEN: usize = 4096;

/// Settings of a volume backup on one node.
#[derive(Clone, Debug)]
pub struct VolumeSettings {
    /// The cluster's name, recorded as the snapshots' host.
    pub cluster: String,
    /// This node's name: only pods scheduled here are looked at.
    pub node: String,
    /// Where the kubelet keeps its pods (`/var/lib/kubelet`), as mounted into this container.
    pub kubelet_root: PathBuf,
    /// Namespaces of the platform: their volumes are not backed up.
    pub platform_namespaces: Vec<String>,
    /// Only these namespaces (all when empty).
    pub only: Vec<String>,
    /// Time to record instead of the start time (for tests).
    pub time: Option<DateTime<Utc>>,
    /// Record `time` even if it is ahead of the store's clock.
    pub allow_future_time: bool,
    /// The longest a hook may run, whatever its pod's annotation asks for.
    pub hook_timeout_max: Duration,
}

/// One claim's volume snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeSnapshot {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim.
    pub claim: String,
    /// The snapshot written.
    pub snapshot: Id,
    /// When the snapshot was taken.
    pub time: DateTime<Utc>,
    /// Seconds it took.
    pub seconds: f64,
    /// Bytes of volume data read.
    pub bytes: u64,
    /// Bytes of new data the run added to the repository.
    pub new_bytes: u64,
    /// Entries left out by the claim's [`EXCLUDE_PATHS`] patterns.
    pub excluded: u64,
    /// Entries that could not be read, or changed while read, with why (as a backup's errors),
    /// and a bad [`EXCLUDE_PATHS`] annotation (the claim is then backed up whole).
    pub errors: Vec<String>,
}

/// What a volume backup on one node did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VolumeReport {
    /// Snapshots written, one per claim mounted on this node.
    pub snapshots: Vec<VolumeSnapshot>,
    /// Claims (`namespace/name`) that no pod mounts: nothing can read them; not backed up.
    pub not_mounted: Vec<String>,
    /// Claims mounted only on other nodes, with the node (their node's run takes them).
    pub elsewhere: Vec<String>,
    /// Claims left out by the opt-out label (on the claim or on a pod mounting it).
    pub opted_out: Vec<String>,
    /// Claims left out because a pod mounting them lists the volume in [`EXCLUDE_VOLUMES`],
    /// with which pod and volume.
    pub excluded: Vec<String>,
    /// Claims mounted here whose folder was not found under the kubelet root, or whose volume
    /// name is not one (see `volume_name`).
    pub missing: Vec<String>,
    /// Hooks that failed, with why.
    pub hook_errors: Vec<String>,
    /// Namespaces whose volumes were not backed up because a hook failed with `on-error: Fail`.
    pub failed: Vec<String>,
}

/// Where a claim is mounted: by which pod, on which node, as which of the pod's volumes.
struct Mount {
    node: String,
    pod: Value,
    volume: String,
}

impl Mount {
    fn uid(&self) -> &str {
        self.pod["metadata"]["uid"].as_str().unwrap_or_default()
    }

    /// Why the pod leaves this claim out, if its [`EXCLUDE_VOLUMES`] annotation names the volume.
    fn excluded(&self) -> Option<String> {
        let listed = self.pod["metadata"]["annotations"][EXCLUDE_VOLUMES].as_str()?;
        listed.split(',').any(|v| v.trim() == self.volume).then(|| {
            format!(
                "volume {} of pod {}/{} is listed in its {EXCLUDE_VOLUMES} annotation",
                self.volume,
                self.pod["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default(),
                self.pod["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
    }
}

/// One claim to back up: its folder, what to leave out, and why its annotation was refused.
struct ClaimPlan {
    dir: PathBuf,
    excludes: Excludes,
    refused: Option<String>,
}

/// What one namespace's volume backup takes: the claims by name, and the pods mounting them.
#[derive(Default)]
struct Plan {
    claims: BTreeMap<String, ClaimPlan>,
    pods: BTreeMap<String, Value>,
}

/// Backs up the claims mounted by pods on `settings.node`.
pub fn backup_volumes(
    repo: &Repository,
    cluster: &Cluster,
    settings: &VolumeSettings,
    progress: &Progress,
) -> Result<VolumeReport> {
    let find = |kind: &str| -> Result<Resource> {
        cluster
            .resolve("v1", kind)
            .ok_or_else(|| Error::Invalid(format!("the cluster does not serve v1 {kind}")))
    };
    let namespaces: BTreeSet<String> = cluster
        .list(&find("Namespace")?, None)?
        .into_iter()
        .filter(|ns| {
            select::choose_namespace(ns, &settings.platform_namespaces, &settings.only)
                == NamespaceChoice::User
        })
        .map(|ns| {
            ns["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let mut mounts: BTreeMap<(String, String), Vec<Mount>> = BTreeMap::new();
    for pod in cluster.list(&find("Pod")?, None)? {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        // a pod not scheduled mounts nothing yet: its claims are not mounted anywhere
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        if !namespaces.contains(ns) || node.is_empty() {
            continue;
        }
        for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                mounts
                    .entry((ns.into(), claim.into()))
                    .or_default()
                    .push(Mount {
                        node: node.into(),
                        pod: pod.clone(),
                        volume: volume["name"].as_str().unwrap_or_default().into(),
                    });
            }
        }
    }
    let mut report = VolumeReport::default();
    let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
    for claim in cluster.list(&find("PersistentVolumeClaim")?, None)? {
        let ns = claim["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = claim["metadata"]["name"].as_str().unwrap_or_default();
        if !namespaces.contains(ns) {
            continue;
        }
        let key = format!("{ns}/{name}");
        let here = mounts.get(&(ns.to_string(), name.to_string()));
        if select::opted_out(&claim)
            || here.is_some_and(|m| m.iter().any(|m| select::opted_out(&m.pod)))
        {
            report.opted_out.push(key);
            continue;
        }
        if let Some(why) = here.and_then(|m| m.iter().find_map(Mount::excluded)) {
            report.excluded.push(format!("{key}: {why}"));
            continue;
        }
        let Some(mounts) = here else {
            report.not_mounted.push(key);
            continue;
        };
        let Some(mount) = mounts.iter().find(|m| m.node == settings.node) else {
            report
                .elsewhere
                .push(format!("{key} on {}", mounts[0].node));
            continue;
        };
        let volume = match volume_name(&claim) {
            Ok(volume) => volume,
            Err(why) => {
                tracing::warn!("claim {key}: {why}");
                report.missing.push(key);
                continue;
            }
        };
        match mounted_folder(&settings.kubelet_root, mount.uid(), volume) {
            Some(dir) => {
                let plan = plans.entry(ns.to_string()).or_default();
                let (excludes, refused) = match claim_excludes(&claim, &dir) {
                    Ok(excludes) => (excludes, None),
                    Err(why) => (Excludes::default(), Some(why)),
                };
                let claim_plan = ClaimPlan {
                    dir,
                    excludes,
                    refused,
                };
                plan.claims.insert(name.to_string(), claim_plan);
                for m in mounts.iter().filter(|m| m.node == settings.node) {
                    let pod = m.pod["metadata"]["name"].as_str().unwrap_or_default();
                    plan.pods.insert(pod.to_string(), m.pod.clone());
                }
            }
            None => report.missing.push(key),
        }
    }
    for (ns, plan) in plans {
        let pods: Vec<&Value> = plan.pods.values().collect();
        let max = settings.hook_timeout_max;
        if !run_hooks(cluster, &pods, Phase::Pre, max, &mut report) {
            report.failed.push(ns);
            run_hooks(cluster, &pods, Phase::Post, max, &mut report);
            continue;
        }
        let out = plan.claims.into_iter().try_for_each(|(claim, plan)| {
            let snapshot = backup_claim(repo, settings, &ns, &claim, plan, progress)?;
            report.snapshots.push(snapshot);
            Ok::<_, Error>(())
        });
        run_hooks(cluster, &pods, Phase::Post, max, &mut report);
        out?;
    }
    Ok(report)
}

/// The excludes of a claim's [`EXCLUDE_PATHS`] annotation, anchored at `dir` (its volume's
/// root); the error says what is wrong with the annotation and what happens instead.
fn claim_excludes(claim: &Value, dir: &Path) -> std::result::Result<Excludes, String> {
    let mut excludes = Excludes::default();
    excludes.anchor = Some(dir.to_owned());
    let Some(listed) = claim["metadata"]["annotations"][EXCLUDE_PATHS].as_str() else {
        return Ok(excludes);
    };
    let refused = |why: String| {
        format!(
            "annotation {EXCLUDE_PATHS} of claim {}/{}: {why}; the claim was backed up whole: fix \
             the annotation",
            claim["metadata"]["namespace"].as_str().unwrap_or_default(),
            claim["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    if listed.len() > MAX_EXCLUDE_PATHS_LEN {
        return Err(refused(format!(
            "{} bytes, more than the {MAX_EXCLUDE_PATHS_LEN} allowed",
            listed.len()
        )));
    }
    let patterns: Vec<String> = listed
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    excludes.add_patterns(&patterns, false).map_err(refused)?;
    Ok(excludes)
}

/// Backs up the files of claim `claim` of namespace `ns` as its own snapshot.
fn backup_claim(
    repo: &Repository,
    settings: &VolumeSettings,
    ns: &str,
    claim: &str,
    plan: ClaimPlan,
    progress: &Progress,
) -> Result<VolumeSnapshot> {
    let dir = plan.dir;
    let folder = BTreeMap::from([(RawBytes(claim.as_bytes().to_vec()), Source::Path(dir))]);
    let root = BTreeMap::from([(RawBytes(b"volumes".to_vec()), Source::Folder(folder))]);
    let options = BackupOptions {
        host: settings.cluster.clone(),
        tags: tags(
            &settings.cluster,
            ns,
            "volumes",
            &[("claim", claim), ("node", &settings.node)],
        ),
        parent: Parent::Auto,
        time: settings.time,
        allow_future_time: settings.allow_future_time,
        excludes: plan.excludes,
    };
    let paths = snapshot_paths(ns, &format!("volumes/{claim}"));
    let out = backup::backup_sources(repo, root, paths, &options, progress)?;
    Ok(VolumeSnapshot {
        namespace: ns.to_string(),
        claim: claim.to_string(),
        snapshot: out.id,
        time: out.snapshot.time,
        seconds: out.snapshot.summary.seconds,
        bytes: out.snapshot.summary.bytes,
        new_bytes: out.snapshot.summary.new_bytes,
        excluded: out.excluded,
        errors: plan.refused.into_iter().chain(out.errors).collect(),
    })
}

/// Runs the `phase` hooks of `pods`, recording failures; false if one that must not fail did.
fn run_hooks(
    cluster: &Cluster,
    pods: &[&Value],
    phase: Phase,
    max: Duration,
    report: &mut VolumeReport,
) -> bool {
    let mut ok = true;
    for pod in pods {
        let hook = match Hook::of(pod, phase, max) {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(e) => {
                report.hook_errors.push(e);
                ok = false;
                continue;
            }
        };
        tracing::info!(pod = %hook.pod, "running {phase:?} hook {:?}", hook.command);
        if let Err(why) = cluster.exec(&hook) {
            let what = if hook.fail_backup {
                ""
            } else {
                " (on-error: Continue)"
            };
            report.hook_errors.push(format!(
                "{phase:?} hook of pod {}/{} in container {}{what}: {}",
                hook.namespace,
                hook.pod,
                hook.container,
                why.trim()
            ));
            ok &= !hook.fail_backup;
        }
    }
    ok
}

/// The name of the volume claim `claim` is bound to ("" if none), checked to be a name a
/// PersistentVolume can have (a DNS subdomain: lowercase letters, digits, `-` and `.`). The
/// API server does not check an unbound claim's `spec.volumeName`, and a tenant who sets it to
/// a path (`/var/lib/kubelet`, `../..`) must not point the node's backup, or a restore, at
/// anything but the volumes of their own pod.
fn volume_name(claim: &Value) -> std::result::Result<&str, String> {
    let name = claim["spec"]["volumeName"].as_str().unwrap_or_default();
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if name.is_empty() || (name.len() <= 253 && name.split('.').all(label)) {
        Ok(name)
    } else {
        Err(format!(
            "its spec.volumeName {name:?} is not the name of a volume, so it is not read: ask \
             the namespace's owner to recreate the claim bound to its PersistentVolume"
        ))
    }
}

/// The folder where the kubelet mounts volume `volume` of pod `pod_uid`:
/// `<root>/pods/<uid>/volumes/<plugin>/<volume>`, and its `mount` folder for CSI volumes.
fn mounted_folder(root: &Path, pod_uid: &str, volume: &str) -> Option<PathBuf> {
    if volume.is_empty() || pod_uid.is_empty() {
        return None;
    }
    let plugins = std::fs::read_dir(root.join("pods").join(pod_uid).join("volumes")).ok()?;
    plugins.flatten().find_map(|plugin| {
        let dir = plugin.path().join(volume);
        let csi = plugin.file_name() == "kubernetes.io~csi";
        let dir = if csi { dir.join("mount") } else { dir };
        dir.is_dir().then_some(dir)
    })
}

/// Where claim `claim` of namespace `ns` is mounted on this node for pod `pod`, under the
/// kubelet's folder `kubelet_root`: the folder a restore writes the claim's files into, on the
/// node, so that no repository credentials need to exist in the claim's namespace.
pub fn claim_folder(
    cluster: &Cluster,
    kubelet_root: &Path,
    ns: &str,
    pod: &str,
    claim: &str,
) -> Result<PathBuf> {
    let get = |kind: &str, name: &str| -> Result<Value> {
        let resource = cluster
            .resolve("v1", kind)
            .ok_or_else(|| Error::Invalid(format!("the cluster does not serve v1 {kind}")))?;
        cluster
            .get(&resource, Some(ns), name)?
            .ok_or_else(|| Error::Invalid(format!("{kind} {ns}/{name} does not exist")))
    };
    let pod_object = get("Pod", pod)?;
    let mounts = pod_object["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["persistentVolumeClaim"]["claimName"] == claim);
    if !mounts {
        return Err(Error::Invalid(format!(
            "pod {ns}/{pod} does not mount claim {claim}: start a pod that mounts it (and stays idle), then restore again"
        )));
    }
    let claim_object = get("PersistentVolumeClaim", claim)?;
    let volume = volume_name(&claim_object)
        .map_err(|why| Error::Invalid(format!("claim {ns}/{claim}: {why}")))?;
    let uid = pod_object["metadata"]["uid"].as_str().unwrap_or_default();
    mounted_folder(kubelet_root, uid, volume).ok_or_else(|| {
        Error::Invalid(format!(
            "claim {claim} of pod {ns}/{pod} is not mounted under {}: run on the pod's node ({}) with the kubelet's folder at --kubelet-root",
            kubelet_root.display(),
            pod_object["spec"]["nodeName"].as_str().unwrap_or("not scheduled")
        ))
    })
}

/// The tree of claim `claim` in a volume snapshot.
pub fn claim_tree(repo: &Repository, snapshot: &Snapshot, claim: &str) -> Result<Id> {
    let missing = || Error::PathNotInSnapshot(format!("volumes/{claim}"));
    let root = Tree::load(repo, &snapshot.tree)?;
    let volumes = root
        .find(&RawBytes(b"volumes".to_vec()))
        .ok_or_else(missing)?;
    let volumes = Tree::load(repo, volumes.subtree.as_ref().ok_or_else(missing)?)?;
    let node = volumes
        .find(&RawBytes(claim.as_bytes().to_vec()))
        .ok_or_else(missing)?;
    node.subtree.ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_patterns_are_anchored_at_the_volume_and_bounded() {
        let claim = |patterns: &str| {
            serde_json::json!({"metadata": {"namespace": "ns", "name": "c",
                "annotations": {EXCLUDE_PATHS: patterns}}})
        };
        let dir = Path::new("/kubelet/pods/u/volumes/v");
        let excludes = claim_excludes(&claim(" /tmp , *.log,"), dir).unwrap();
        assert!(excludes.excludes_path(&dir.join("tmp")));
        assert!(!excludes.excludes_path(&dir.join("a/tmp")));
        assert!(excludes.excludes_path(&dir.join("a/x.log")));
        let long = vec!["x"; 2100].join(",");
        let e = claim_excludes(&claim(&long), dir).unwrap_err();
        assert!(e.contains("4199 bytes, more than the 4096 allowed"), "{e}");
        let e = claim_excludes(&claim("*.log,[x"), dir).unwrap_err();
        assert!(
            e.starts_with(
                "annotation backup.cairn.io/exclude-paths of claim ns/c: bad pattern \"[x\""
            ),
            "{e}"
        );
    }

    #[test]
    fn finds_plain_and_csi_mounts() {
        let root = tempfile::tempdir().unwrap();
        let pods = root.path().join("pods");
        std::fs::create_dir_all(pods.join("u1/volumes/kubernetes.io~local-volume/pv-a")).unwrap();
        std::fs::create_dir_all(pods.join("u2/volumes/kubernetes.io~csi/pv-b/mount")).unwrap();
        assert_eq!(
            mounted_folder(root.path(), "u1", "pv-a"),
            Some(pods.join("u1/volumes/kubernetes.io~local-volume/pv-a"))
        );
        assert_eq!(
            mounted_folder(root.path(), "u2", "pv-b"),
            Some(pods.join("u2/volumes/kubernetes.io~csi/pv-b/mount"))
        );
        assert_eq!(mounted_folder(root.path(), "u1", "pv-b"), None);
        assert_eq!(mounted_folder(root.path(), "u3", "pv-a"), None);
        assert_eq!(mounted_folder(root.path(), "u1", ""), None);
    }

    #[test]
    fn only_names_a_volume_can_have_are_taken_as_a_claims_volume() {
        let claim = |v: &str| serde_json::json!({"spec": {"volumeName": v}});
        for good in ["pv-a", "pvc-0b1c.x", "a", ""] {
            assert_eq!(volume_name(&claim(good)), Ok(good));
        }
        let long = "a".repeat(254);
        for bad in [
            "/",
            "..",
            ".",
            "../x",
            "a/b",
            "/var/lib/kubelet",
            "-a",
            "a.",
            "A",
            &long,
        ] {
            assert!(volume_name(&claim(bad)).is_err(), "{bad:?}");
        }
    }
}
