//! Resource modifiers for `cairn k8s restore --resource-modifiers FILE`, in the format of
//! Velero's: rules that pick objects by resource, name, namespace and labels, and change them
//! with JSON Patches (RFC 6902) and JSON Merge Patches (RFC 7386) before they are created.
//!
//! ```yaml
//! version: v1
//! resourceModifierRules:
//!   - conditions:
//!       groupResource: persistentvolumeclaims   # resource[.group]; * and ? match any
//!       resourceNameRegex: "^data-.*"
//!       namespaces: [shop]
//!       labelSelector: {matchLabels: {app: db}}
//!     patches:
//!       - {operation: replace, path: /spec/storageClassName, value: fast}
//!     mergePatches:
//!       - patchData: '{"metadata": {"labels": {"restored": "yes"}}}'
//! ```
//!
//! Strategic merge patches (`strategicPatches`) need the schema of every kind to merge lists by
//! key; they are refused with a message pointing at `mergePatches`, which replace lists whole.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// The parsed rules of a resource modifiers file.
#[derive(Clone, Debug)]
pub struct Modifiers {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    group_resource: glob::Pattern,
    name: Option<Regex>,
    namespaces: Vec<String>,
    labels: Option<LabelSelector>,
    patches: Vec<json_patch::PatchOperation>,
    merge_patches: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: String,
    #[serde(rename = "resourceModifierRules")]
    rules: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleFile {
    conditions: Conditions,
    #[serde(default)]
    patches: Vec<PatchFile>,
    #[serde(default)]
    merge_patches: Vec<PatchData>,
    #[serde(default)]
    strategic_patches: Vec<PatchData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Conditions {
    group_resource: String,
    resource_name_regex: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    label_selector: Option<LabelSelector>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchFile {
    operation: String,
    path: String,
    from: Option<String>,
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PatchData {
    patch_data: String,
}

/// A Kubernetes label selector as objects write it (`matchLabels`, `matchExpressions`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabelSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Expression>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expression {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

impl LabelSelector {
    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        self.match_labels
            .iter()
            .all(|(k, v)| label(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|e| {
                let value = label(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.iter().any(|x| x == v)),
                    "NotIn" => value.is_none_or(|v| !e.values.iter().any(|x| x == v)),
                    "Exists" => value.is_some(),
                    _ => value.is_none(), // DoesNotExist, the only other one parsing lets in
                }
            })
    }
}

/// A JSON Patch value as Velero takes it: a YAML string holding JSON (a number, `true`, an
/// object, a quoted string…) is that JSON; any other string is itself.
fn patch_value(value: Value) -> Value {
    match value {
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        other => other,
    }
}

impl Modifiers {
    /// Parses a resource modifiers file (YAML or JSON); `Err` names the rule and the problem.
    pub fn parse(text: &str) -> Result<Modifiers, String> {
        let file: File = serde_saphyr::from_str(text)
            .map_err(|e| format!("not a resource modifiers file: {e}"))?;
        if file.version != "v1" {
            return Err(format!(
                "version {:?}: only version v1 is known",
                file.version
            ));
        }
        let rules = file
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| Rule::parse(rule).map_err(|e| format!("rule {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(Modifiers { rules })
    }

    /// Applies the rules that match `object` (of resource `resource`, `plural[.group]`), in
    /// order; returns the numbers (from 1) of the rules that matched. On `Err` (a patch that
    /// fails, such as a `test` operation) `object` is left as it was.
    pub fn apply(&self, resource: &str, object: &mut Value) -> Result<Vec<usize>, String> {
        let mut changed = object.clone();
        let mut matched = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches(resource, &changed) {
                continue;
            }
            matched.push(i + 1);
            json_patch::patch(&mut changed, &rule.patches)
                .map_err(|e| format!("resource modifier rule {}: {e}", i + 1))?;
            for merge in &rule.merge_patches {
                json_patch::merge(&mut changed, merge);
            }
        }
        for field in ["/apiVersion", "/kind", "/metadata/namespace"] {
            if changed.pointer(field) != object.pointer(field) {
                return Err(format!(
                    "resource modifier rules {matched:?} change {field}: restore into another namespace with --namespace-mapping"
                ));
            }
        }
        *object = changed;
        Ok(matched)
    }
}

impl Rule {
    fn parse(rule: RuleFile) -> Result<Rule, String> {
        if !rule.strategic_patches.is_empty() {
            return Err("strategicPatches are not supported (they need each kind's schema to merge lists): use mergePatches, which replace a list whole".into());
        }
        let c = rule.conditions;
        let group_resource = glob::Pattern::new(&c.group_resource.to_ascii_lowercase())
            .map_err(|e| format!("groupResource {:?}: {e}", c.group_resource))?;
        let name = c
            .resource_name_regex
            .map(|r| Regex::new(&r).map_err(|e| format!("resourceNameRegex {r:?}: {e}")))
            .transpose()?;
        if let Some(e) = c
            .label_selector
            .iter()
            .flat_map(|s| &s.match_expressions)
            .find(|e| {
                !matches!(
                    e.operator.as_str(),
                    "In" | "NotIn" | "Exists" | "DoesNotExist"
                )
            })
        {
            return Err(format!(
                "labelSelector operator {:?}: use In, NotIn, Exists or DoesNotExist",
                e.operator
            ));
        }
        let patches = rule
            .patches
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut op = serde_json::json!({"op": p.operation, "path": p.path});
                if let Some(from) = p.from {
                    op["from"] = Value::String(from);
                }
                if let Some(value) = p.value {
                    op["value"] = patch_value(value);
                }
                serde_json::from_value(op.clone())
                    .map_err(|e| format!("patch {}: {e} in {op}", i + 1))
            })
            .collect::<Result<_, _>>()?;
        let merge_patches = rule
            .merge_patches
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                serde_saphyr::from_str::<Value>(&p.patch_data).map_err(|e| {
                    format!("mergePatch {}: patchData is not YAML or JSON: {e}", i + 1)
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Rule {
            group_resource,
            name,
            namespaces: c.namespaces,
            labels: c.label_selector,
            patches,
            merge_patches,
        })
    }

    fn matches(&self, resource: &str, object: &Value) -> bool {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        self.group_resource.matches(&resource.to_ascii_lowercase())
            && self.name.as_ref().is_none_or(|r| r.is_match(name))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
            && self.labels.as_ref().is_none_or(|l| l.matches(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = r#"
version: v1
resourceModifierRules:
  - conditions:
      groupResource: persistentvolumeclaims
      resourceNameRegex: "^data"
      namespaces: [shop]
    patches:
      - operation: replace
        path: /spec/storageClassName
        value: fast
      - operation: add
        path: /metadata/labels/size
        value: "3"
  - conditions:
      groupResource: "*"
      labelSelector:
        matchExpressions:
          - {key: app, operator: In, values: [db]}
    mergePatches:
      - patchData: |
          metadata:
            annotations: {moved: "yes"}
"#;

    fn claim(name: &str, ns: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "db"}},
            "spec": {"storageClassName": "slow"}})
    }

    #[test]
    fn rules_pick_objects_and_patch_them_in_order() {
        let m = Modifiers::parse(FILE).unwrap();
        let mut c = claim("data-1", "shop");
        assert_eq!(m.apply("persistentvolumeclaims", &mut c).unwrap(), [1, 2]);
        assert_eq!(c["spec"]["storageClassName"], "fast");
        assert_eq!(c["metadata"]["labels"]["size"], 3);
        assert_eq!(c["metadata"]["annotations"]["moved"], "yes");
        let mut other = claim("logs", "shop");
        assert_eq!(m.apply("persistentvolumeclaims", &mut other).unwrap(), [2]);
        assert_eq!(other["spec"]["storageClassName"], "slow");
        let mut elsewhere = claim("data-1", "web");
        m.apply("persistentvolumeclaims", &mut elsewhere).unwrap();
        assert_eq!(elsewhere["spec"]["storageClassName"], "slow");
    }

    #[test]
    fn a_failing_patch_leaves_the_object_and_bad_files_name_the_rule() {
        let m = Modifiers::parse(
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: '*'}\n  patches:\n  - {operation: test, path: /spec/storageClassName, value: gold}\n",
        )
        .unwrap();
        let mut c = claim("data", "shop");
        let before = c.clone();
        let e = m.apply("persistentvolumeclaims", &mut c).unwrap_err();
        assert!(e.contains("rule 1"), "{e}");
        assert_eq!(c, before);
        for (text, expected) in [
            ("version: v2\nresourceModifierRules: []", "only version v1"),
            (
                "version: v1\nresourceModifierRules:\n- conditions: {groupResource: x}\n  patches: [{operation: jump, path: /a}]",
                "rule 1: patch 1",
            ),
            (
                "version: v1\nresourceModifierRules:\n- conditions: {groupResource: x, resourceNameRegex: '('}",
                "rule 1: resourceNameRegex",
            ),
            (
                "version: v1\nresourceModifierRules:\n- conditions: {groupResource: x}\n- conditions: {groupResource: x}\n  strategicPatches: [{patchData: '{}'}]",
                "rule 2: strategicPatches are not supported",
            ),
            (
                "version: v1\nresourceModifierRules:\n- conditions: {groupResource: x, matches: []}",
                "not a resource modifiers file",
            ),
        ] {
            let e = Modifiers::parse(text).unwrap_err();
            assert!(e.contains(expected), "{expected} not in {e}");
        }
        let moving = Modifiers::parse(
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: '*'}\n  patches: [{operation: replace, path: /metadata/namespace, value: kube-system}]",
        )
        .unwrap();
        assert!(
            moving
                .apply("x", &mut c)
                .unwrap_err()
                .contains("--namespace-mapping")
        );
    }
}
