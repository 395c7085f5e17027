//! `cairn k8s …`: backup and restore of Kubernetes namespaces and their volumes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cairn_engine::format::snapshot::Snapshot;
use cairn_engine::ops::kube::backup::BackupSettings;
use cairn_engine::ops::kube::restore::{RestoreReport, RestoreSettings};
use cairn_engine::ops::kube::volumes::VolumeSettings;
use cairn_engine::ops::kube::{self as k8s, backup, volumes};
use cairn_engine::ops::restore::{self, Overwrite, RestoreOptions};
use cairn_engine::progress::Progress;
use cairn_engine::sources::kube::modifiers::Modifiers;
use cairn_engine::sources::kube::select::{
    DEFAULT_PLATFORM_NAMESPACES, Filters, KeepRule, Selector,
};
use cairn_engine::sources::kube::{self as kube, Cluster, Connect};
use clap::{Args, Subcommand};
use indicatif::HumanBytes;
use serde_json::json;

use super::{open, print_json, print_summary};
use crate::metrics::{Metrics, MetricsArgs};
use crate::progress::Display;
use crate::{EXIT_PARTIAL, Global};

/// `cairn k8s` commands.
#[derive(Subcommand)]
pub enum K8sCommand {
    /// Back up every object of every user namespace: one snapshot per namespace
    Backup(BackupArgs),
    /// Back up the files of the volumes that pods on this node mount: one snapshot per claim
    BackupVolumes(VolumeArgs),
    /// Create the objects of namespace snapshots in a cluster; existing objects are never changed
    Restore(RestoreArgs),
    /// Restore one claim's files from a volume snapshot into a folder
    RestoreVolume(RestoreVolumeArgs),
    /// Print the ClusterRoles of the backup and the restore for this cluster's kinds, every
    /// resource named (no wildcard, no subresource), for `kubectl apply -f -`
    Rbac(RbacArgs),
}

/// `cairn k8s rbac` options.
#[derive(Args)]
pub struct RbacArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How to reach the cluster.
#[derive(Args)]
pub struct ClusterArgs {
    /// Kubeconfig file [default: KUBECONFIG, ~/.kube/config, or the pod's service account]
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one
    #[arg(long)]
    context: Option<String>,
    /// Name recorded as the snapshots' host [default: the kubeconfig's cluster name]
    #[arg(long, env = "CAIRN_CLUSTER")]
    cluster: Option<String>,
}

impl ClusterArgs {
    fn connect(&self) -> Result<(Cluster, String)> {
        let cluster = Cluster::connect(&Connect {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        })?;
        let name = self
            .cluster
            .clone()
            .unwrap_or_else(|| cluster.name().into());
        Ok((cluster, name))
    }
}

/// Which namespaces a backup looks at.
#[derive(Args)]
pub struct NamespaceArgs {
    /// Platform namespaces besides kube-system, kube-public and kube-node-lease: only objects
    /// matching --keep are taken from them (comma-separated)
    #[arg(long, env = "CAIRN_PLATFORM_NAMESPACES", value_delimiter = ',')]
    platform_namespaces: Vec<String>,
    /// Only these namespaces (repeatable; all user namespaces if not given)
    #[arg(short, long = "namespace")]
    namespaces: Vec<String>,
    /// Record this time instead of now (RFC 3339); refused if more than 5 minutes ahead of the
    /// repository's clock unless --allow-future-time is given
    #[arg(long)]
    time: Option<chrono::DateTime<chrono::Utc>>,
    /// Record --time even if it is ahead of the repository's clock (such a snapshot is the
    /// newest of its group until then; `forget` leaves it out of its policy)
    #[arg(long, requires = "time")]
    allow_future_time: bool,
}

impl NamespaceArgs {
    fn platform(&self) -> Vec<String> {
        DEFAULT_PLATFORM_NAMESPACES
            .iter()
            .map(|s| s.to_string())
            .chain(self.platform_namespaces.iter().cloned())
            .collect()
    }
}

/// `cairn k8s backup` options.
#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    namespaces: NamespaceArgs,
    /// Also keep objects of this KIND:SELECTOR from platform namespaces (repeatable,
    /// `;`-separated in the variable) [default: ConfigMap:grafana_dashboard]
    #[arg(long, env = "CAIRN_KEEP", value_delimiter = ';', value_parser = KeepRule::parse)]
    keep: Vec<KeepRule>,
    /// Only these resources: kind, resource or resource.group, any case, as `kubectl
    /// api-resources` lists them; `*`: all (comma-separated, repeatable). The Namespace itself
    /// and the cluster-scoped objects the taken objects need are kept
    #[arg(long, value_delimiter = ',')]
    include_resources: Vec<String>,
    /// Never these resources, namespaced or cluster-scoped (same names; comma-separated,
    /// repeatable)
    #[arg(long, value_delimiter = ',')]
    exclude_resources: Vec<String>,
    /// Never these namespaces (patterns with `*`, `?`; comma-separated, repeatable)
    #[arg(long, value_delimiter = ',')]
    exclude_namespaces: Vec<String>,
    /// Only objects whose labels match this label selector (Kubernetes syntax, evaluated by the
    /// API server: `a=b,c!=d,e in (x,y),!f`); the Namespace is kept
    #[arg(short = 'l', long)]
    selector: Option<String>,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// `cairn k8s backup-volumes` options.
#[derive(Args)]
pub struct VolumeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    namespaces: NamespaceArgs,
    /// This node's name (in a pod: from the downward API's spec.nodeName)
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Where the kubelet's folder (/var/lib/kubelet) is mounted in this container
    #[arg(long, env = "CAIRN_KUBELET_ROOT", default_value = "/var/lib/kubelet")]
    kubelet_root: PathBuf,
    /// Keep running and back up every day at this UTC time (HH:MM), as the per-node DaemonSet
    /// does; a failed run is reported and the next day's runs anyway
    #[arg(long, value_name = "HH:MM", value_parser = parse_time_of_day)]
    daily_at: Option<chrono::NaiveTime>,
    /// The longest a backup hook may run, whatever its pod's timeout annotation asks for
    #[arg(long, env = "CAIRN_HOOK_TIMEOUT_MAX", default_value = "5m", value_parser = humantime::parse_duration)]
    hook_timeout_max: std::time::Duration,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// `cairn k8s restore` options.
#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Namespace snapshots to restore (id prefixes), or `latest`: the newest of every
    /// namespace (of --cluster, if given)
    #[arg(required = true)]
    snapshots: Vec<String>,
    /// Only print what would be created and what exists already
    #[arg(long)]
    dry_run: bool,
    /// Restore namespace OLD into NEW (repeatable)
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_mapping)]
    namespace_mapping: Vec<(String, String)>,
    /// Only these kinds (kind, resource or resource.group; comma-separated)
    #[arg(long, value_delimiter = ',')]
    include_kinds: Vec<String>,
    /// Only objects with matching labels (key=value, key!=value, key, !key; comma-separated)
    #[arg(short = 'l', long, value_parser = Selector::parse, default_value = "")]
    selector: Selector,
    /// Only these namespaces of the snapshots (comma-separated)
    #[arg(long, value_delimiter = ',')]
    include_namespaces: Vec<String>,
    /// Keep the node ports of Services (default: dropped, so that the cluster allocates new
    /// ones; the old ones are taken while the original Services exist)
    #[arg(long)]
    preserve_nodeports: bool,
    /// Also create the ClusterRoleBindings of the snapshots' service accounts, which grant
    /// rights in the whole cluster (default: listed as left out); each is created only if all
    /// its subjects are service accounts of its namespace and its ClusterRole grants what it
    /// granted when backed up
    #[arg(long)]
    restore_cluster_role_bindings: bool,
    /// Change objects before they are created, by the rules of this file (Velero's resource
    /// modifiers: JSON Patches and JSON Merge Patches of the objects a rule's conditions pick);
    /// with --dry-run, the changed objects are printed
    #[arg(long, value_name = "FILE")]
    resource_modifiers: Option<PathBuf>,
}

/// `cairn k8s restore-volume` options.
#[derive(Args)]
pub struct RestoreVolumeArgs {
    /// Volume snapshot id prefix, or `latest`: the newest volume snapshot of --namespace
    /// holding the claim
    snapshot: String,
    /// The claim whose files to restore
    #[arg(long)]
    pvc: String,
    /// The claim's namespace (needed with `latest`)
    #[arg(short, long)]
    namespace: Option<String>,
    /// Folder to restore into: the claim's mount point, or any folder
    #[arg(short, long, required_unless_present = "pod", conflicts_with = "pod")]
    target: Option<PathBuf>,
    /// Restore into the claim where this pod (of --namespace) mounts it on this node, through
    /// the kubelet's folder: run by the node's backup component, so that the repository's
    /// credentials never exist in the claim's namespace
    #[arg(long, requires = "namespace")]
    pod: Option<String>,
    /// Where the kubelet's folder (/var/lib/kubelet) is mounted in this container (with --pod)
    #[arg(long, env = "CAIRN_KUBELET_ROOT", default_value = "/var/lib/kubelet")]
    kubelet_root: PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Restore even if the target holds files (existing files are then replaced)
    #[arg(long)]
    overwrite: bool,
}

/// Reports wrong usage found after the command line was read (a name the cluster does not
/// serve, a bad selector or modifier file); returns exit code 2.
fn usage(why: &str) -> u8 {
    eprintln!("cairn: error: {why}");
    2
}

fn parse_time_of_day(s: &str) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| format!("{s:?}: give a UTC time of day as HH:MM, e.g. 01:30"))
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.into(), b.into())),
        _ => Err(format!("{s:?}: write a namespace mapping as OLD=NEW")),
    }
}

/// Runs a `cairn k8s` command.
pub fn run(g: &Global, command: K8sCommand) -> Result<u8> {
    match command {
        K8sCommand::Backup(a) => backup(g, a),
        K8sCommand::BackupVolumes(a) => backup_volumes(g, a),
        K8sCommand::Restore(a) => restore(g, a),
        K8sCommand::RestoreVolume(a) => restore_volume(g, a),
        K8sCommand::Rbac(a) => rbac(a),
    }
}

fn rbac(a: RbacArgs) -> Result<u8> {
    let (cluster, _) = a.cluster.connect()?;
    print!("{}", kube::rbac::render(&cluster.resources()));
    Ok(0)
}

fn backup(g: &Global, a: BackupArgs) -> Result<u8> {
    let repo = open(g)?;
    let (cluster, name) = a.cluster.connect()?;
    let settings = BackupSettings {
        cluster: name,
        platform_namespaces: a.namespaces.platform(),
        keep: if a.keep.is_empty() {
            vec![KeepRule::grafana_dashboards()]
        } else {
            a.keep
        },
        only: a.namespaces.namespaces.clone(),
        filters: Filters {
            include_resources: a.include_resources,
            exclude_resources: a.exclude_resources,
            exclude_namespaces: a.exclude_namespaces,
            selector: a.selector,
        },
        time: a.namespaces.time,
        allow_future_time: a.namespaces.allow_future_time,
    };
    if let Err(why) = backup::check_filters(&cluster, &settings.filters)? {
        return Ok(usage(&why));
    }
    let progress = Arc::new(Progress::default());
    let display = Display::start(progress.clone(), "k8s-backup", "backed up", g);
    let report = backup::backup(&repo, &cluster, &settings, &progress)?;
    drop(display);
    let mut m = Metrics::new("k8s-backup").grouped_by("cluster", &settings.cluster);
    for s in &report.snapshots {
        let labels = [
            ("cluster", settings.cluster.as_str()),
            ("namespace", s.namespace.as_str()),
        ];
        m.snapshot(&labels, s.time, s.seconds, s.bytes, s.new_bytes);
        m.gauge(
            "backup_objects",
            "Kubernetes objects stored.",
            &labels,
            s.objects as f64,
        );
    }
    let cluster_label = [("cluster", settings.cluster.as_str())];
    m.errors(&cluster_label, report.errors.len());
    m.publish(&repo, &a.metrics)?;
    if g.json {
        print_summary(&report);
    } else {
        for s in &report.snapshots {
            println!(
                "namespace {}: snapshot {} saved, {} objects, {} new",
                s.namespace,
                s.snapshot.short(),
                s.objects,
                HumanBytes(s.new_bytes)
            );
        }
        for l in &report.left_out {
            println!("namespace {} left out: {}", l.namespace, l.reason);
        }
        for o in &report.opted_out {
            println!("left out (opt-out label): {o}");
        }
        for m in &report.missing {
            println!("referenced but not found: {m}");
        }
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if !report.errors.is_empty() {
        eprintln!(
            "{} resources could not be listed and are not in the snapshots: give the service account get/list on them, then back up again",
            report.errors.len()
        );
        return Ok(EXIT_PARTIAL);
    }
    Ok(0)
}

fn backup_volumes(g: &Global, a: VolumeArgs) -> Result<u8> {
    let Some(at) = a.daily_at else {
        return backup_volumes_once(g, &a);
    };
    loop {
        let now = chrono::Utc::now();
        let mut next = now.date_naive().and_time(at).and_utc();
        if next <= now {
            next += chrono::Duration::days(1);
        }
        tracing::info!("next volume backup at {next}");
        std::thread::sleep((next - now).to_std().unwrap_or_default());
        match backup_volumes_once(g, &a) {
            Ok(0) => {}
            Ok(_) => eprintln!("the volume backup of {next} is incomplete (see above)"),
            Err(e) => eprintln!("cairn: error: the volume backup of {next} failed: {e:#}"),
        }
    }
}

fn backup_volumes_once(g: &Global, a: &VolumeArgs) -> Result<u8> {
    let repo = open(g)?;
    let (cluster, name) = a.cluster.connect()?;
    let settings = VolumeSettings {
        cluster: name,
        node: a.node.clone(),
        kubelet_root: a.kubelet_root.clone(),
        platform_namespaces: a.namespaces.platform(),
        only: a.namespaces.namespaces.clone(),
        time: a.namespaces.time,
        allow_future_time: a.namespaces.allow_future_time,
        hook_timeout_max: a.hook_timeout_max,
    };
    let progress = Arc::new(Progress::default());
    let display = Display::start(progress.clone(), "k8s-backup-volumes", "backed up", g);
    let report = volumes::backup_volumes(&repo, &cluster, &settings, &progress)?;
    drop(display);
    let errors: usize = report.snapshots.iter().map(|s| s.errors.len()).sum();
    let mut m = Metrics::new("k8s-backup-volumes")
        .grouped_by("cluster", &settings.cluster)
        .grouped_by("node", &settings.node);
    for s in &report.snapshots {
        let labels = [
            ("cluster", settings.cluster.as_str()),
            ("namespace", s.namespace.as_str()),
            ("claim", s.claim.as_str()),
            ("node", settings.node.as_str()),
        ];
        m.snapshot(&labels, s.time, s.seconds, s.bytes, s.new_bytes);
        m.errors(&labels, s.errors.len());
    }
    let node_labels = [
        ("cluster", settings.cluster.as_str()),
        ("node", settings.node.as_str()),
    ];
    let failed = report.failed.len() + report.missing.len();
    m.gauge(
        "backup_failed_namespaces",
        "Namespaces or claims not backed up (failed hook or missing folder).",
        &node_labels,
        failed as f64,
    );
    // one series per namespace or claim left without a backup, so each alerts by name
    let help = "1 for a namespace (failed hook) or claim (folder not found) not backed up.";
    let failures = report
        .failed
        .iter()
        .map(|ns| (ns.as_str(), "", "hook-failed"))
        .chain(report.missing.iter().map(|key| {
            let (ns, claim) = key.split_once('/').unwrap_or((key, ""));
            (ns, claim, "folder-missing")
        }));
    for (namespace, claim, reason) in failures {
        let labels = [
            node_labels[0],
            node_labels[1],
            ("namespace", namespace),
            ("claim", claim),
            ("reason", reason),
        ];
        m.gauge("volume_backup_failed", help, &labels, 1.0);
    }
    m.publish(&repo, &a.metrics)?;
    if g.json {
        print_summary(&report);
    } else {
        for s in &report.snapshots {
            println!(
                "claim {}/{}: snapshot {} saved, {} read, {} new, {} excluded",
                s.namespace,
                s.claim,
                s.snapshot.short(),
                HumanBytes(s.bytes),
                HumanBytes(s.new_bytes),
                s.excluded
            );
            for e in &s.errors {
                eprintln!("error: {e}");
            }
        }
        for c in &report.not_mounted {
            println!("not backed up: claim {c} is mounted by no pod");
        }
        for c in &report.opted_out {
            println!("left out (opt-out label): claim {c}");
        }
        for c in &report.excluded {
            println!("left out: claim {c}");
        }
        for h in &report.hook_errors {
            eprintln!("hook failed: {h}");
        }
        for ns in &report.failed {
            eprintln!(
                "error: the volumes of namespace {ns} were not backed up: a hook failed (see above); fix the hook or set its on-error annotation to Continue"
            );
        }
        for c in &report.missing {
            eprintln!(
                "error: claim {c} is mounted on this node but its folder is not under {}",
                a.kubelet_root.display()
            );
        }
    }
    if !report.missing.is_empty() {
        eprintln!(
            "mount the kubelet's folder read-only at --kubelet-root (CAIRN_KUBELET_ROOT), then back up again"
        );
    }
    let incomplete = errors + report.missing.len() + report.hook_errors.len() + report.failed.len();
    Ok(if incomplete > 0 { EXIT_PARTIAL } else { 0 })
}

fn restore(g: &Global, a: RestoreArgs) -> Result<u8> {
    let modifiers = match &a.resource_modifiers {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --resource-modifiers {}", path.display()))?;
            match Modifiers::parse(&text) {
                Ok(m) => Some(m),
                Err(why) => return Ok(usage(&format!("{}: {why}", path.display()))),
            }
        }
        None => None,
    };
    let repo = open(g)?;
    let (mut cluster, _) = a.cluster.connect()?;
    let mut snapshots = Vec::new();
    for spec in &a.snapshots {
        if spec == "latest" {
            let found = k8s::latest_resources(&repo, a.cluster.cluster.as_deref())?;
            if found.is_empty() {
                bail!(
                    "no Kubernetes resource snapshot in this repository (of that --cluster): list them with `cairn snapshots`"
                );
            }
            snapshots.extend(found.into_iter().map(|(_, s)| s));
        } else {
            let (id, snap) = Snapshot::find(&repo, spec)?;
            if kube::tag(&snap, "content") != Some("resources") {
                bail!(
                    "snapshot {} holds no Kubernetes resources: give a snapshot made by `cairn k8s backup`",
                    id.short()
                );
            }
            snapshots.push(snap);
        }
    }
    let settings = RestoreSettings {
        namespace_mapping: a.namespace_mapping.into_iter().collect::<BTreeMap<_, _>>(),
        include_kinds: a.include_kinds,
        selector: a.selector,
        include_namespaces: a.include_namespaces,
        dry_run: a.dry_run,
        preserve_nodeports: a.preserve_nodeports,
        cluster_role_bindings: a.restore_cluster_role_bindings,
        modifiers,
    };
    let report = k8s::restore::restore(&repo, &mut cluster, &snapshots, &settings)?;
    if g.json {
        print_json(&json!({"dry_run": a.dry_run, "report": report}));
    } else {
        print_restore(&report, a.dry_run);
    }
    Ok(if report.failed.is_empty() && report.refused.is_empty() {
        0
    } else {
        EXIT_PARTIAL
    })
}

fn print_restore(r: &RestoreReport, dry_run: bool) {
    let created = if dry_run { "would create" } else { "created" };
    for m in &r.modified {
        let rules: Vec<String> = m.rules.iter().map(usize::to_string).collect();
        println!("modified by rule {}: {}", rules.join(", "), m.object);
        if let Some(manifest) = &m.manifest {
            println!(
                "{}",
                serde_json::to_string_pretty(manifest).expect("JSON serializes")
            );
        }
    }
    for o in &r.created {
        println!("{created}: {o}");
    }
    for o in &r.existing {
        println!("exists, left untouched: {o}");
    }
    for o in &r.left_out {
        println!("left out: {}: {}", o.object, o.reason);
    }
    for o in &r.failed {
        eprintln!("failed: {}: {}", o.object, o.reason);
    }
    for o in &r.refused {
        eprintln!("refused: {}: {}", o.object, o.reason);
    }
    println!(
        "{} {created}, {} existing left untouched, {} left out, {} failed, {} refused",
        r.created.len(),
        r.existing.len(),
        r.left_out.len(),
        r.failed.len(),
        r.refused.len()
    );
    if !r.refused.is_empty() {
        eprintln!(
            "the snapshots hold objects their namespaces may not hold (another namespace's, or cluster-scoped ones they do not need): they were not created; someone may have written to the repository, check who can"
        );
    }
    if !r.failed.is_empty() {
        eprintln!(
            "fix what the messages say, then run the same restore again: what exists now is skipped"
        );
    }
}

fn restore_volume(g: &Global, a: RestoreVolumeArgs) -> Result<u8> {
    let repo = open(g)?;
    let (id, snap) = if a.snapshot == "latest" {
        let ns = a
            .namespace
            .as_deref()
            .context("give --namespace with `latest`")?;
        k8s::latest_claim(&repo, ns, &a.pvc)?
            .with_context(|| format!("no volume snapshot of namespace {ns} holds claim {}: list them with `cairn snapshots`", a.pvc))?
    } else {
        Snapshot::find(&repo, &a.snapshot)?
    };
    let tree = volumes::claim_tree(&repo, &snap, &a.pvc)?;
    let target = match (&a.target, &a.pod) {
        (Some(target), _) => target.clone(),
        (None, Some(pod)) => {
            let (cluster, _) = a.cluster.connect()?;
            let ns = a
                .namespace
                .as_deref()
                .context("give --namespace with --pod")?;
            volumes::claim_folder(&cluster, &a.kubelet_root, ns, pod, &a.pvc)?
        }
        (None, None) => bail!("give --target or --pod"),
    };
    let non_empty = std::fs::read_dir(&target).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !a.overwrite {
        bail!(
            "{} is not empty: the claim's data is not overwritten; restore into an empty volume or folder, or give --overwrite",
            target.display()
        );
    }
    let options = RestoreOptions {
        target: target.clone(),
        includes: vec![],
        overwrite: if a.overwrite {
            Overwrite::Always
        } else {
            Overwrite::Never
        },
        chown: nix::unistd::geteuid().is_root(),
        no_flush: false,
    };
    let progress = Arc::new(Progress::default());
    let display = Display::start(progress.clone(), "k8s-restore-volume", "restored", g);
    let claim = Snapshot { tree, ..snap };
    let out = restore::restore(&repo, &claim, &options, &progress)?;
    drop(display);
    if g.json {
        print_summary(&json!({"snapshot_id": id, "pvc": a.pvc, "target": target, "outcome": out}));
    } else {
        for e in &out.errors {
            eprintln!("error: {e}");
        }
        println!(
            "restored claim {} from snapshot {} to {}: {} files, {}",
            a.pvc,
            id.short(),
            target.display(),
            out.files,
            HumanBytes(out.bytes)
        );
    }
    Ok(if out.errors.is_empty() {
        0
    } else {
        EXIT_PARTIAL
    })
}
