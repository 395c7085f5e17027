//! Compliance evidence through the real binary: `cairn drill` restores, verifies and records,
//! and catches a planted corruption that a structural check cannot see; it checks Kubernetes
//! manifests; `cairn report` judges protections from records, locks and the replica, and its
//! HTML page is rendered by a real headless Chromium (Debian's package, installed by
//! scripts/setup.sh).

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

/// Runs cairn with `--json` and status events every millisecond.
fn run_json(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let mut c = env.cmd(&all);
    c.env("CAIRN_PROGRESS_INTERVAL", "1ms");
    c.output().unwrap()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The largest object under `prefix`.
fn largest(b: &Backend, prefix: &str) -> String {
    b.names(prefix)
        .into_iter()
        .max_by_key(|n| b.read(n).len())
        .unwrap()
}

#[test]
fn a_drill_verifies_every_restored_byte_and_records_a_planted_corruption() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("db")).unwrap();
    std::fs::write(src.join("db/table.bin"), noise(7, 3 << 20)).unwrap();
    std::fs::write(src.join("notes.txt"), "notes\n".repeat(500)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    env.backup(&[&src]);
    let metrics = env.path("drill.prom");
    let metrics_arg = metrics.to_str().unwrap();
    let scratch = env.path("scratch");
    let scratch_arg = scratch.to_str().unwrap();
    let drill = [
        "drill",
        "--share",
        "100%",
        "--scratch",
        scratch_arg,
        "--metrics-file",
        metrics_arg,
    ];

    let out = run_json(&env, &drill);
    assert!(out.status.success(), "{}", stderr(&out));
    let (result, _) = checked_result("drill", &out.stdout);
    let record = &result["record"];
    assert_eq!(record["passed"], true, "{result:#}");
    let drilled = &record["snapshots"][0];
    assert_eq!(drilled["files"], 3);
    assert_eq!(drilled["files_restored"], 3);
    assert_eq!(drilled["bytes_verified"], (3 << 20) + 3000);
    let id = result["record_id"].as_str().unwrap();
    assert!(env.objects.exists(&format!("drills/{id}")));
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "restored files are removed"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(metric(&text, "cairn_drill_problems"), Some(0.0), "{text}");
    assert_eq!(
        metric(&text, "cairn_drill_bytes_verified"),
        Some(((3 << 20) + 3000) as f64)
    );
    assert!(metric(&text, "cairn_drill_last_success_timestamp_seconds").is_some());

    // one flipped bit in the pack holding the table: the structural check sees nothing...
    let pack = largest(&env.objects, "data/");
    let mut bytes = env.objects.read(&pack);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    env.objects.write(&pack, bytes);
    assert!(env.run(&["check"]).status.success());
    // ... the drill does, fails, and still records what it found
    let out = run_json(&env, &drill);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cairn check --read-data"),
        "{}",
        stderr(&out)
    );
    let (result, _) = checked_result("drill", &out.stdout);
    let drilled = &result["record"]["snapshots"][0];
    assert_eq!(result["record"]["passed"], false);
    let problems = drilled["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("table.bin")),
        "{problems:?}"
    );
    assert!(
        !problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("notes.txt")),
        "only the damaged file is reported: {problems:?}"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        metric(&text, "cairn_drill_problems").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "cairn_drill_last_success_timestamp_seconds"),
        None
    );

    let report = env.json(&["report"]);
    assert_schema("report", &report);
    assert_eq!(report["drills"], 2);
    assert_eq!(report["last_drill"]["passed"], false);
    assert_eq!(
        protection(&report, "Restores are tested")["status"],
        "not_met"
    );
}

#[test]
fn a_drill_checks_that_each_manifest_holds_the_object_its_file_names() {
    let env = Env::new();
    let ns = env.path("ns");
    let write = |rel: &str, object: Value| {
        let p = ns.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_vec_pretty(&object).unwrap()).unwrap();
    };
    let cm = |name: &str, ns: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": ns}, "data": {"k": "v"}})
    };
    write("resources/configmaps/settings.json", cm("settings", "shop"));
    write("resources/configmaps/renamed.json", cm("other", "shop"));
    write("resources/configmaps/moved.json", cm("moved", "elsewhere"));
    write(
        "cluster/namespaces/shop.json",
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    );
    env.ok(&[
        "backup",
        "--tag",
        "content=resources",
        "--tag",
        "namespace=shop",
        ns.join("resources").to_str().unwrap(),
        ns.join("cluster").to_str().unwrap(),
    ]);
    // a small share: resources are restored whole all the same
    let out = run_json(&env, &["drill", "--share", "1%"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (result, _) = checked_result("drill", &out.stdout);
    let drilled = &result["record"]["snapshots"][0];
    assert_eq!(drilled["files_restored"], 4, "{result:#}");
    assert_eq!(drilled["manifests_checked"], 4);
    let mut problems: Vec<&str> = drilled["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    problems.sort();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0]
            .starts_with("/resources/configmaps/moved.json: holds an object of another namespace"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("/resources/configmaps/renamed.json: does not hold"),
        "{problems:?}"
    );
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&png[16..20]), be(&png[20..24]))
}

fn chromium(env: &Env, args: &[&str], page: &Path) -> Output {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,1600",
        ])
        .arg(format!(
            "--user-data-dir={}",
            env.path("chromium").display()
        ))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (scripts/setup.sh installs Debian's chromium package)");
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[test]
fn the_report_follows_the_replica_and_its_html_page_renders_in_a_real_browser() {
    let env = Env::new();
    let data = dir_with(&env, "data", 50_000, &[("a", 1), ("b", 2)]);
    env.ok(&["backup", "--host", "<i>evil</i>", data.to_str().unwrap()]);
    env.ok(&["check"]);
    env.ok(&["drill"]);
    let replica = target_for(&env, backend::on_s3());
    let with_replica = |args: &[&str]| {
        let mut all = vec!["--json", "report", "--replica", &replica.repo];
        all.extend_from_slice(args);
        let mut c = env.cmd(&all);
        c.env("CAIRN_TO_PASSWORD_FILE", &replica.password_file);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };

    let before = json_result(&with_replica(&[]).stdout);
    assert_schema("report", &before);
    let group = &before["groups"][0];
    assert_eq!(group["replica"]["not_copied"], 1, "{before:#}");
    assert_eq!(group["replica"]["lag_hours"], Value::Null);
    assert_eq!(
        protection(&before, "Backups are replicated")["status"],
        "not_met"
    );
    assert_eq!(
        protection(&before, "Every namespace is backed up")["status"],
        "met"
    );
    assert_eq!(
        protection(&before, "The repository is verified")["status"],
        "met"
    );
    assert_eq!(protection(&before, "Restores are tested")["status"], "met");
    assert_eq!(
        protection(&before, "Backups cannot be erased")["status"],
        "not_met"
    );

    let mut copy = env.cmd(&["copy", "--all", "--to", &replica.repo]);
    copy.env("CAIRN_TO_PASSWORD_FILE", &replica.password_file);
    assert!(copy.output().unwrap().status.success());
    let after = json_result(&with_replica(&[]).stdout);
    assert_eq!(after["groups"][0]["replica"]["not_copied"], 0, "{after:#}");
    assert_eq!(after["groups"][0]["replica"]["lag_hours"], 0.0);
    assert_eq!(
        protection(&after, "Backups are replicated")["status"],
        "met"
    );
    let met = after["protections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "met")
        .count();

    let page = env.path("report.html");
    with_replica(&["--format", "html", "--output", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("<script"),
        "the page is self-contained"
    );

    let dom = String::from_utf8(chromium(&env, &["--dump-dom"], &page).stdout).unwrap();
    let rows = |class: &str| dom.matches(&format!("<tr class=\"{class}\"")).count();
    assert_eq!(rows("snapshot"), 1, "{dom}");
    assert_eq!(rows("group"), 1);
    assert_eq!(dom.matches("data-status=\"met\"").count(), met);
    assert!(
        dom.contains(&format!("{met} of 7 protections met")),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;i&gt;evil&lt;/i&gt;"),
        "markup in a host name is shown as text"
    );
    assert!(
        !dom.contains("<i>evil</i>"),
        "markup in a host name never becomes an element"
    );

    let shot = env.path("report.png");
    chromium(&env, &[&format!("--screenshot={}", shot.display())], &page);
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(png_size(&png), (1280, 1600));
    // a blank page compresses to a few kilobytes; tables of text do not
    assert!(png.len() > 40_000, "{} bytes", png.len());
}
