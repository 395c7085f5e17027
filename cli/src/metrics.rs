//! Prometheus metrics of a finished run, in the text exposition format: written for
//! node-exporter's textfile collector (`--metrics-file`) and/or pushed to a Pushgateway
//! (`--metrics-push`), as Jobs that end before a scrape need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cairn_engine::repository::Repository;
use cairn_engine::repository::store::ObjectKind;
use clap::Args;

/// Where to send a run's metrics.
#[derive(Args, Clone, Default)]
pub struct MetricsArgs {
    /// Write the run's Prometheus metrics to this file (node-exporter textfile collector;
    /// replaced whole, never seen half-written)
    #[arg(long, env = "CAIRN_METRICS_FILE")]
    metrics_file: Option<PathBuf>,
    /// Push the run's Prometheus metrics to this Pushgateway (e.g. http://pushgateway:9091),
    /// grouped by job `cairn`, the command and its labels
    #[arg(long, env = "CAIRN_METRICS_PUSH")]
    metrics_push: Option<String>,
}

/// One metric family: help text and samples by label set.
struct Family {
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// The metrics of one run: gauges with labels.
pub struct Metrics {
    command: &'static str,
    grouping: Vec<(&'static str, String)>,
    families: BTreeMap<&'static str, Family>,
}

impl Metrics {
    /// Metrics of a run of `command` (a label of every sample, and the Pushgateway group).
    pub fn new(command: &'static str) -> Metrics {
        Metrics {
            command,
            grouping: vec![],
            families: BTreeMap::new(),
        }
    }

    /// Adds `label` to the Pushgateway group key: a push replaces its whole group, so runs
    /// that push in parallel (one per node or host) need groups of their own, or each erases
    /// the others' series.
    pub fn grouped_by(mut self, label: &'static str, value: &str) -> Metrics {
        self.grouping.push((label, value.to_string()));
        self
    }

    /// Records gauge `name` (prefixed `cairn_`) for `labels`.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.families
            .entry(name)
            .or_insert(Family {
                help,
                samples: vec![],
            })
            .samples
            .push((labels, value));
    }

    /// Records the figures every backup snapshot has: when it started, how long it took, the
    /// bytes it read and the new bytes it added.
    pub fn snapshot(
        &mut self,
        labels: &[(&'static str, &str)],
        time: chrono::DateTime<chrono::Utc>,
        seconds: f64,
        bytes: u64,
        new_bytes: u64,
    ) {
        let figures = [
            (
                "backup_last_success_timestamp_seconds",
                "When the last successful backup started (Unix time).",
                time.timestamp() as f64,
            ),
            (
                "backup_duration_seconds",
                "How long the backup took.",
                seconds,
            ),
            ("backup_bytes", "Bytes backed up.", bytes as f64),
            (
                "backup_new_bytes",
                "Bytes of new data added to the repository.",
                new_bytes as f64,
            ),
        ];
        self.gauges(labels, &figures);
    }

    /// Records several gauges (name, help, value) for the same `labels`.
    pub fn gauges(
        &mut self,
        labels: &[(&'static str, &str)],
        figures: &[(&'static str, &'static str, f64)],
    ) {
        for &(name, help, value) in figures {
            self.gauge(name, help, labels, value);
        }
    }

    /// Records how many resources or files a backup could not read.
    pub fn errors(&mut self, labels: &[(&'static str, &str)], count: usize) {
        let help = "Resources or files that could not be read.";
        self.gauge("backup_errors", help, labels, count as f64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, family) in &self.families {
            out += &format!(
                "# HELP cairn_{name} {}\n# TYPE cairn_{name} gauge\n",
                family.help
            );
            for (labels, value) in &family.samples {
                let labels: Vec<String> = [("command", self.command.to_string())]
                    .into_iter()
                    .chain(labels.iter().cloned())
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(&v)))
                    .collect();
                out += &format!("cairn_{name}{{{}}} {value}\n", labels.join(","));
            }
        }
        out
    }

    /// Adds the repository's snapshot count, then writes and pushes the metrics as `args` asks.
    pub fn publish(mut self, repo: &Repository, args: &MetricsArgs) -> Result<()> {
        if args.metrics_file.is_none() && args.metrics_push.is_none() {
            return Ok(());
        }
        let snapshots = repo.store().ids(ObjectKind::Snapshot)?.len();
        let help = "Snapshots in the repository.";
        self.gauge("repository_snapshots", help, &[], snapshots as f64);
        let text = self.render();
        if let Some(path) = &args.metrics_file {
            write_atomically(path, &text)?;
        }
        if let Some(url) = &args.metrics_push {
            let url = format!(
                "{}/metrics/job/cairn/command/{}{}",
                url.trim_end_matches('/'),
                self.command,
                group_path(&self.grouping)
            );
            push(&url, text)
                .with_context(|| format!("pushing metrics to {url}: check --metrics-push and that the Pushgateway is reachable"))?;
        }
        Ok(())
    }
}

/// The Pushgateway URL path of a group key: `/label/value`, or `/label@base64/…` for a value
/// that is empty or holds characters a path segment cannot carry as they are.
fn group_path(grouping: &[(&'static str, String)]) -> String {
    use base64::Engine;
    grouping
        .iter()
        .map(|(k, v)| {
            let plain = !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if plain {
                format!("/{k}/{v}")
            } else {
                let encoded = base64::engine::general_purpose::URL_SAFE.encode(v);
                format!("/{k}@base64/{}", if v.is_empty() { "=" } else { &encoded })
            }
        })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes beside the file, then renames over it: the collector never reads half a file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| {
            format!(
                "writing metrics to {}: check --metrics-file",
                path.display()
            )
        })
}

/// Replaces the group's metrics on the Pushgateway (HTTP PUT).
fn push(url: &str, text: String) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = reqwest::Client::new().put(url).body(text).send().await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "the Pushgateway answered {status}");
        Ok::<(), anyhow::Error>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_are_path_segments_or_base64() {
        let grouping = [
            ("node", "node-a.example".to_string()),
            ("cluster", "a/b c".to_string()),
            ("host", String::new()),
        ];
        assert_eq!(
            group_path(&grouping),
            "/node/node-a.example/cluster@base64/YS9iIGM=/host@base64/="
        );
    }

    #[test]
    fn renders_the_exposition_format_with_escaped_labels() {
        let mut m = Metrics::new("k8s-backup");
        m.gauge(
            "backup_bytes",
            "Bytes read.",
            &[("namespace", "a\"b")],
            12.0,
        );
        m.gauge("backup_bytes", "Bytes read.", &[("namespace", "c")], 1.5);
        assert_eq!(
            m.render(),
            "# HELP cairn_backup_bytes Bytes read.\n# TYPE cairn_backup_bytes gauge\n\
             cairn_backup_bytes{command=\"k8s-backup\",namespace=\"a\\\"b\"} 12\n\
             cairn_backup_bytes{command=\"k8s-backup\",namespace=\"c\"} 1.5\n"
        );
    }
}
