//! The audit report as one self-contained HTML page: inline style, no script, no outside
//! resource, so that it can be archived and opened anywhere. Every value is escaped.

use cairn_engine::evidence::audit::{AuditReport, Evidence, SnapshotEntry, Status};
use cairn_engine::repository::clock::when;

/// Escapes text for HTML element content and quoted attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn status(s: Status) -> (&'static str, &'static str) {
    match s {
        Status::Met => ("met", "Met"),
        Status::NotMet => ("not-met", "Not met"),
        Status::Unknown => ("unknown", "Unknown"),
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#1b1f24;padding:0 1em}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #d0d7de}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.35em .6em;border-bottom:1px solid #e4e8ec}\
th{background:#f3f5f7}.status{font-weight:600;white-space:nowrap}\
tr.met .status{color:#1a7f37}tr.not-met .status{color:#cf222e}tr.unknown .status{color:#9a6700}\
tr.not-met{background:#fff5f5}code{font-size:.92em}.muted{color:#57606a}";

/// Renders the report.
pub fn render(r: &AuditReport) -> String {
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Cairn backup report {}</title><style>{STYLE}</style></head><body>\n\
         <h1>Backup report</h1>\n<p class=\"muted\">Generated {} by {} for repository \
         <code id=\"repository\">{}</code> ({}), format version {}, created {}.</p>\n",
        esc(&r.generated.format("%Y-%m-%d").to_string()),
        esc(&when(r.generated)),
        esc(&r.program),
        esc(&r.repository.location),
        esc(&r.repository.id.short()),
        r.repository.format_version,
        esc(&when(r.repository.created)),
    );
    let met = r
        .protections
        .iter()
        .filter(|p| p.status == Status::Met)
        .count();
    h += &format!(
        "<h2>Protections</h2>\n<p id=\"summary\">{met} of {} protections met.</p>\n\
         <table id=\"protections\"><tr><th>Promise</th><th>Status</th><th>How Cairn meets it</th><th>Proof</th></tr>\n",
        r.protections.len()
    );
    for p in &r.protections {
        let (class, label) = status(p.status);
        h += &format!(
            "<tr class=\"{class}\" data-status=\"{class}\"><td>{}</td><td class=\"status\">{label}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&p.promise),
            esc(&p.how),
            esc(&p.proof)
        );
    }
    h += "</table>\n";

    h += "<h2>Repository</h2>\n<table id=\"facts\">\n";
    let lock = r.repository.object_lock.map_or("none".to_owned(), |l| {
        format!("{:?} mode, {} days per object", l.mode, l.days)
    });
    let facts = [
        (
            "Retention",
            format!("{} hours", r.repository.retention_hours),
        ),
        ("Encryption", r.repository.encryption.clone()),
        ("Keys (passwords)", r.repository.keys.to_string()),
        ("Object lock", lock),
        (
            "Earliest unlock of a snapshot",
            r.repository.earliest_unlock.map_or("—".into(), when),
        ),
        (
            "Off-site replica",
            r.replica.clone().unwrap_or("not given".into()),
        ),
        ("Check records", r.checks.to_string()),
        ("Drill records", r.drills.to_string()),
    ];
    for (k, v) in facts {
        h += &format!("<tr><th>{}</th><td>{}</td></tr>\n", esc(k), esc(&v));
    }
    h += "</table>\n";

    h += "<h2>Last check and drill</h2>\n<table id=\"evidence\"><tr><th>Test</th><th>Result</th><th>When</th><th>Host</th><th>Covered and found</th><th>Record</th></tr>\n";
    for (name, e, dir) in [
        ("Check", &r.last_check, "checks"),
        ("Restore drill", &r.last_drill, "drills"),
    ] {
        h += &evidence_row(name, e.as_ref(), dir);
    }
    h += "</table>\n";

    h += "<h2>Snapshots</h2>\n<table id=\"groups\"><tr><th>Namespace or source</th><th>Snapshots</th><th>Newest</th><th>Age (h)</th><th>Oldest expires</th><th>Replica lag (h)</th></tr>\n";
    for g in &r.groups {
        let newest = g.snapshots.last().expect("groups are not empty");
        let lag = g
            .replica
            .as_ref()
            .map_or("—".to_owned(), |s| match s.lag_hours {
                Some(l) => format!("{l:.1} ({} not copied)", s.not_copied),
                None => "no copy".into(),
            });
        h += &format!(
            "<tr class=\"group\"><td>{}</td><td>{}</td><td><code>{}</code> {}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&g.label),
            g.snapshots.len(),
            esc(&newest.id.short()),
            esc(&when(newest.time)),
            g.newest_age_hours,
            esc(&when(g.snapshots[0].expires)),
            esc(&lag)
        );
    }
    h += "</table>\n";

    h += "<h2>Every snapshot</h2>\n<table id=\"snapshots\"><tr><th>Namespace or source</th><th>Snapshot</th><th>Taken</th><th>Age (h)</th><th>Expires</th><th>Locked until</th><th>Lock covers retention</th></tr>\n";
    for g in &r.groups {
        for s in &g.snapshots {
            h += &format!(
                "<tr class=\"snapshot\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&g.label),
                esc(&s.id.short()),
                esc(&when(s.time)),
                s.age_hours,
                esc(&when(s.expires)),
                esc(&s.locked_until.map_or("—".into(), when)),
                lock_covers(s)
            );
        }
    }
    h += "</table>\n</body></html>\n";
    h
}

/// Whether a snapshot's lock covers its retention, in words (— without object lock).
pub(crate) fn lock_covers(s: &SnapshotEntry) -> &'static str {
    match s.lock_covers_retention {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "—",
    }
}

fn evidence_row(name: &str, e: Option<&Evidence>, dir: &str) -> String {
    match e {
        None => format!(
            "<tr class=\"not-met\"><td>{name}</td><td class=\"status\">None recorded</td><td>—</td><td>—</td><td>—</td><td>—</td></tr>\n"
        ),
        Some(e) => {
            let (class, label) = if e.passed {
                ("met", "Passed")
            } else {
                ("not-met", "Failed")
            };
            format!(
                "<tr class=\"{class}\"><td>{name}</td><td class=\"status\">{label}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{dir}/{}</code></td></tr>\n",
                esc(&when(e.time)),
                esc(&e.host),
                esc(&e.summary),
                esc(&e.id.short())
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            esc(r#"<b class="x">Tom & Jerry's</b>"#),
            "&lt;b class=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/b&gt;"
        );
    }
}
