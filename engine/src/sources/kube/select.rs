//! What a Kubernetes backup takes and leaves out: platform namespaces, the opt-out label,
//! resources that can never be restored meaningfully, and label selectors.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use super::cluster::Resource;

/// Namespaces and objects with this label (any value) are never backed up.
pub const NOBACKUP_LABEL: &str = "compliantkubernetes.io/nobackup";

/// Namespaces that belong to the platform, not to its users; the configuration can add more.
pub const DEFAULT_PLATFORM_NAMESPACES: [&str; 3] =
    ["kube-system", "kube-public", "kube-node-lease"];

/// Resources never backed up, as `(group, plural)` (`*`: every resource of the group):
/// what the cluster makes or reports by itself (events, nodes, endpoints, leases, metrics),
/// requests that are not objects (reviews, bindings), and the `extensions` group, whose
/// objects are the same as those served by `apps` and `networking.k8s.io`.
pub const NEVER_BACKED_UP: &[(&str, &str)] = &[
    ("", "events"),
    ("events.k8s.io", "*"),
    ("", "nodes"),
    ("", "endpoints"),
    ("discovery.k8s.io", "*"),
    ("coordination.k8s.io", "*"),
    ("", "componentstatuses"),
    ("", "bindings"),
    ("authentication.k8s.io", "*"),
    ("authorization.k8s.io", "*"),
    ("metrics.k8s.io", "*"),
    ("extensions", "*"),
];

/// Whether objects of `(group, plural)` are left out of every backup.
pub fn never_backed_up(group: &str, plural: &str) -> bool {
    NEVER_BACKED_UP
        .iter()
        .any(|&(g, p)| g == group && (p == "*" || p == plural))
}

/// Whether an object (or namespace) carries the opt-out label.
pub fn opted_out(object: &Value) -> bool {
    object["metadata"]["labels"].get(NOBACKUP_LABEL).is_some()
}

/// Which resources, namespaces and labels a resource backup takes, as Velero's
/// `--include-resources`, `--exclude-resources`, `--exclude-namespaces` and `--selector` do;
/// empty: everything.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Only these resources (kind, plural or `plural.group`, any case; `*`: all).
    pub include_resources: Vec<String>,
    /// Never these resources (same names).
    pub exclude_resources: Vec<String>,
    /// Namespaces never backed up (glob patterns: `*`, `?`, `[…]`).
    pub exclude_namespaces: Vec<String>,
    /// Only objects whose labels match this Kubernetes label selector, evaluated by the API
    /// server (`a=b,c!=d,e in (x,y),!f`).
    pub selector: Option<String>,
}

/// [`Filters`] resolved against the cluster's discovery.
#[derive(Clone, Debug, Default)]
pub struct ResolvedFilters {
    /// Resources asked for, as `(group, plural)`; `None`: all.
    pub include: Option<BTreeSet<(String, String)>>,
    /// Resources left out, as `(group, plural)`.
    pub exclude: BTreeSet<(String, String)>,
    /// Namespaces left out.
    pub exclude_namespaces: Vec<glob::Pattern>,
}

impl ResolvedFilters {
    /// Whether objects of `resource` are taken.
    pub fn takes(&self, resource: &Resource) -> bool {
        let key = (resource.api.group.clone(), resource.api.plural.clone());
        self.include.as_ref().is_none_or(|i| i.contains(&key)) && !self.excludes(resource)
    }

    /// Whether objects of `resource` are left out by `--exclude-resources`.
    pub fn excludes(&self, resource: &Resource) -> bool {
        self.exclude
            .contains(&(resource.api.group.clone(), resource.api.plural.clone()))
    }

    /// Whether namespace `name` is left out by `--exclude-namespaces`.
    pub fn excludes_namespace(&self, name: &str) -> bool {
        self.exclude_namespaces.iter().any(|p| p.matches(name))
    }
}

impl Filters {
    /// Resolves the resource names through `resources` (the cluster's discovery) and the
    /// namespace patterns; `Err` names an entry that matches nothing or a bad pattern.
    pub fn resolve(&self, resources: &[Resource]) -> Result<ResolvedFilters, String> {
        let resolve = |flag: &str, entries: &[String]| {
            let mut out = BTreeSet::new();
            for entry in entries {
                let found: Vec<&Resource> = resources
                    .iter()
                    .filter(|r| entry == "*" || names_resource(entry, r))
                    .collect();
                if found.is_empty() {
                    return Err(format!(
                        "{flag} {entry:?}: the cluster serves no such resource; give a kind (ConfigMap), a resource (configmaps) or resource.group (deployments.apps) as `kubectl api-resources` lists them"
                    ));
                }
                out.extend(
                    found
                        .into_iter()
                        .map(|r| (r.api.group.clone(), r.api.plural.clone())),
                );
            }
            Ok(out)
        };
        let include = resolve("--include-resources", &self.include_resources)?;
        let exclude = resolve("--exclude-resources", &self.exclude_resources)?;
        let exclude_namespaces = self
            .exclude_namespaces
            .iter()
            .map(|p| {
                glob::Pattern::new(p)
                    .map_err(|e| format!("--exclude-namespaces {p:?} is not a pattern: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(ResolvedFilters {
            include: (!self.include_resources.is_empty()).then_some(include),
            exclude,
            exclude_namespaces,
        })
    }

    /// The tags that record these filters in a snapshot: `include-resource=<resource>` and
    /// `exclude-resource=<resource>` per entry (as `kubectl` names the resource), and
    /// `selector=<selector>`.
    pub fn tags(&self, resolved: &ResolvedFilters) -> Vec<(&'static str, String)> {
        let named = |set: &BTreeSet<(String, String)>| -> Vec<String> {
            set.iter()
                .map(|(g, p)| match g.as_str() {
                    "" => p.clone(),
                    g => format!("{p}.{g}"),
                })
                .collect()
        };
        let mut tags = Vec::new();
        if let Some(include) = &resolved.include {
            tags.extend(named(include).into_iter().map(|r| ("include-resource", r)));
        }
        tags.extend(
            named(&resolved.exclude)
                .into_iter()
                .map(|r| ("exclude-resource", r)),
        );
        if let Some(selector) = self.selector.as_ref().filter(|s| !s.trim().is_empty()) {
            tags.push(("selector", selector.clone()));
        }
        tags
    }
}

/// Whether `name` (a kind, a plural or `plural.group`, any case) names `resource`.
pub fn names_resource(name: &str, resource: &Resource) -> bool {
    name.eq_ignore_ascii_case(&resource.api.kind)
        || name.eq_ignore_ascii_case(&resource.api.plural)
        || name.eq_ignore_ascii_case(&resource.qualified_name())
}

/// What a backup (of resources or of volumes) makes of a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceChoice {
    /// Not among the namespaces asked for.
    NotAsked,
    /// Carries the opt-out label: nothing is taken.
    OptedOut,
    /// A platform namespace: only kept objects are taken, never volumes.
    Platform,
    /// A user namespace: everything is taken.
    User,
}

/// Sorts a namespace object: `only` lists the namespaces asked for (all when empty),
/// `platform` the platform's namespaces.
pub fn choose_namespace(
    namespace: &Value,
    platform: &[String],
    only: &[String],
) -> NamespaceChoice {
    let name = namespace["metadata"]["name"].as_str().unwrap_or_default();
    if !only.is_empty() && !only.iter().any(|n| n == name) {
        NamespaceChoice::NotAsked
    } else if opted_out(namespace) {
        NamespaceChoice::OptedOut
    } else if platform.iter().any(|n| n == name) {
        NamespaceChoice::Platform
    } else {
        NamespaceChoice::User
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// An equality-based label selector (`a=b,c!=d,e,!f`), as `kubectl -l` takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses `a=b`, `a==b`, `a!=b`, `a` and `!a`, joined by commas.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let req = if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::Absent(k.trim().into())
            } else {
                Requirement::Exists(term.into())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::Absent(k) => k,
            };
            if key.is_empty() || key.contains([' ', '(', ')']) {
                return Err(format!(
                    "{term:?} is not a label requirement: use key=value, key!=value, key or !key"
                ));
            }
            out.push(req);
        }
        Ok(Selector(out))
    }

    /// Whether `object`'s labels meet every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::Absent(k) => label(k).is_none(),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::Exists(k) => k.clone(),
                Requirement::Absent(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&terms.join(","))
    }
}

/// Objects kept even from platform namespaces: a kind and a label selector, written
/// `KIND:SELECTOR` (default: `ConfigMap:grafana_dashboard`, Grafana's dashboards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepRule {
    /// The kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Which objects of that kind.
    pub selector: Selector,
}

impl KeepRule {
    /// The default rule: Grafana dashboards.
    pub fn grafana_dashboards() -> KeepRule {
        KeepRule::parse("ConfigMap:grafana_dashboard").expect("valid rule")
    }

    /// Parses `KIND:SELECTOR`.
    pub fn parse(text: &str) -> Result<KeepRule, String> {
        let (kind, selector) = text.split_once(':').ok_or_else(|| {
            format!("{text:?}: write a kept-object rule as KIND:SELECTOR, e.g. ConfigMap:grafana_dashboard")
        })?;
        Ok(KeepRule {
            kind: kind.trim().into(),
            selector: Selector::parse(selector)?,
        })
    }

    /// Whether `object` is kept by this rule.
    pub fn matches(&self, object: &Value) -> bool {
        object["kind"].as_str() == Some(self.kind.as_str()) && self.selector.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_are_chosen_by_request_label_and_platform() {
        let ns = |name: &str, out: bool| {
            let labels = if out {
                json!({ NOBACKUP_LABEL: "" })
            } else {
                json!({})
            };
            json!({"metadata": {"name": name, "labels": labels}})
        };
        let platform = vec!["kube-system".to_string()];
        let choose = |v: &Value, only: &[&str]| {
            let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
            choose_namespace(v, &platform, &only)
        };
        assert_eq!(choose(&ns("shop", false), &[]), NamespaceChoice::User);
        assert_eq!(choose(&ns("shop", true), &[]), NamespaceChoice::OptedOut);
        assert_eq!(
            choose(&ns("kube-system", false), &[]),
            NamespaceChoice::Platform
        );
        // asking for a namespace never overrides its opt-out label
        assert_eq!(
            choose(&ns("shop", true), &["shop"]),
            NamespaceChoice::OptedOut
        );
        assert_eq!(
            choose(&ns("shop", false), &["web"]),
            NamespaceChoice::NotAsked
        );
        assert_eq!(choose(&ns("web", false), &["web"]), NamespaceChoice::User);
    }

    #[test]
    fn selectors_match_labels() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let yes = [
            "app=web",
            "app==web",
            "app",
            "!db",
            "tier!=back",
            "app=web,tier",
        ];
        let no = ["app=db", "db", "!app", "tier!=front", "app=web,db"];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&o), "{s}");
        }
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&o), "{s}");
        }
        assert!(Selector::parse("").unwrap().matches(&json!({})));
        assert!(Selector::parse("a in (b)").is_err());
        assert_eq!(Selector::parse("a==b, !c").unwrap().to_string(), "a=b,!c");
    }

    #[test]
    fn keep_rules_name_a_kind_and_labels() {
        let rule = KeepRule::grafana_dashboards();
        let dash = json!({"kind": "ConfigMap", "metadata": {"labels": {"grafana_dashboard": "1"}}});
        let secret = json!({"kind": "Secret", "metadata": {"labels": {"grafana_dashboard": "1"}}});
        assert!(rule.matches(&dash));
        assert!(!rule.matches(&secret));
        assert!(KeepRule::parse("ConfigMap").is_err());
    }

    #[test]
    fn opt_out_and_never_backed_up() {
        assert!(opted_out(
            &json!({"metadata": {"labels": {NOBACKUP_LABEL: ""}}})
        ));
        assert!(!opted_out(&json!({"metadata": {"labels": {"other": "x"}}})));
        assert!(never_backed_up("", "events"));
        assert!(never_backed_up("coordination.k8s.io", "leases"));
        assert!(!never_backed_up("", "configmaps"));
        assert!(!never_backed_up("apps", "deployments"));
    }
}
