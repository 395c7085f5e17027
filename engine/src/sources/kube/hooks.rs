//! Pre- and post-backup hooks: a command run in a pod's container before its volumes are read
//! (to flush or freeze a database) and after (to thaw it), declared by the pod's annotations
//! as Velero's are:
//!
//! - `pre.hook.backup.cairn.io/command` (and `post.…`): a JSON array (`["/bin/sh", "-c", "…"]`)
//!   or a single word;
//! - `…/container`: the container to run it in (default: the pod's first);
//! - `…/timeout`: how long it may take, e.g. `30s`, `2m` (default 30 s), at most the operator's
//!   `--hook-timeout-max` ([`DEFAULT_TIMEOUT_MAX`]);
//! - `…/on-error`: `Fail` (default: the namespace's volumes are not backed up) or `Continue`.

use std::time::Duration;

use serde_json::Value;

/// The longest a hook may run unless the operator says otherwise: a tenant's annotation cannot
/// hold the node's backup for longer.
pub const DEFAULT_TIMEOUT_MAX: Duration = Duration::from_secs(5 * 60);

/// Bytes of a hook's output kept for the report; the rest is read and dropped.
pub const OUTPUT_MAX: usize = 4096;

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the pod's volumes are read.
    Pre,
    /// After they were read.
    Post,
}

impl Phase {
    fn prefix(self) -> &'static str {
        match self {
            Phase::Pre => "pre.hook.backup.cairn.io",
            Phase::Post => "post.hook.backup.cairn.io",
        }
    }
}

/// A hook declared by a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The container to run in.
    pub container: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
    /// Whether a failure stops the backup of the namespace's volumes.
    pub fail_backup: bool,
}

impl Hook {
    /// The pod's hook for `phase`, if it declares one, running for at most `max`; an error
    /// names a malformed annotation.
    pub fn of(pod: &Value, phase: Phase, max: Duration) -> Result<Option<Hook>, String> {
        let annotations = &pod["metadata"]["annotations"];
        let get = |key: &str| {
            annotations
                .get(format!("{}/{key}", phase.prefix()))
                .and_then(Value::as_str)
        };
        let Some(command) = get("command") else {
            return Ok(None);
        };
        let bad = |what: &str, value: &str| {
            format!(
                "annotation {}/{what} of pod {} is {value:?}: fix it on the pod",
                phase.prefix(),
                pod["metadata"]["name"].as_str().unwrap_or_default()
            )
        };
        let command = if command.trim_start().starts_with('[') {
            serde_json::from_str::<Vec<String>>(command).map_err(|_| bad("command", command))?
        } else {
            vec![command.trim().to_string()]
        };
        if command.is_empty() || command[0].is_empty() {
            return Err(bad("command", "empty"));
        }
        let timeout = match get("timeout") {
            Some(t) => humantime::parse_duration(t).map_err(|_| bad("timeout", t))?,
            None => Duration::from_secs(30),
        }
        .min(max);
        let fail_backup = match get("on-error") {
            None | Some("Fail") => true,
            Some("Continue") => false,
            Some(other) => return Err(bad("on-error", other)),
        };
        let first = pod["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or_default();
        Ok(Some(Hook {
            namespace: pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            pod: pod["metadata"]["name"].as_str().unwrap_or_default().into(),
            container: get("container").unwrap_or(first).into(),
            command,
            timeout,
            fail_backup,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(annotations: Value) -> Value {
        json!({"metadata": {"name": "db-0", "namespace": "shop", "annotations": annotations},
            "spec": {"containers": [{"name": "postgres"}, {"name": "exporter"}]}})
    }

    #[test]
    fn hooks_are_read_from_annotations_with_defaults() {
        let p = pod(json!({"pre.hook.backup.cairn.io/command": "[\"/bin/sh\", \"-c\", \"sync\"]"}));
        let hook = Hook::of(&p, Phase::Pre, DEFAULT_TIMEOUT_MAX)
            .unwrap()
            .unwrap();
        assert_eq!(hook.command, ["/bin/sh", "-c", "sync"]);
        assert_eq!(hook.container, "postgres");
        assert_eq!(hook.timeout, Duration::from_secs(30));
        assert!(hook.fail_backup);
        assert_eq!(
            Hook::of(&p, Phase::Post, DEFAULT_TIMEOUT_MAX).unwrap(),
            None
        );

        let p = pod(json!({"post.hook.backup.cairn.io/command": "/thaw",
            "post.hook.backup.cairn.io/container": "exporter",
            "post.hook.backup.cairn.io/timeout": "2m",
            "post.hook.backup.cairn.io/on-error": "Continue"}));
        let hook = Hook::of(&p, Phase::Post, DEFAULT_TIMEOUT_MAX)
            .unwrap()
            .unwrap();
        assert_eq!(
            (hook.command, hook.container.as_str()),
            (vec!["/thaw".to_string()], "exporter")
        );
        assert_eq!(hook.timeout, Duration::from_secs(120));
        assert!(!hook.fail_backup);
    }

    #[test]
    fn a_hook_runs_no_longer_than_the_operators_limit() {
        let p = pod(json!({"pre.hook.backup.cairn.io/command": "/x",
            "pre.hook.backup.cairn.io/timeout": "1000h"}));
        let hook = Hook::of(&p, Phase::Pre, DEFAULT_TIMEOUT_MAX)
            .unwrap()
            .unwrap();
        assert_eq!(hook.timeout, DEFAULT_TIMEOUT_MAX);
        let hook = Hook::of(&p, Phase::Pre, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(hook.timeout, Duration::from_secs(10));
    }

    #[test]
    fn malformed_hooks_are_refused_with_the_annotation_named() {
        for (key, value) in [
            ("command", "[\"unclosed\""),
            ("timeout", "soon"),
            ("on-error", "Ignore"),
        ] {
            let mut a = json!({"pre.hook.backup.cairn.io/command": "/x"});
            a[format!("pre.hook.backup.cairn.io/{key}")] = json!(value);
            let e = Hook::of(&pod(a), Phase::Pre, DEFAULT_TIMEOUT_MAX).unwrap_err();
            assert!(e.contains(key), "{e}");
        }
    }
}
