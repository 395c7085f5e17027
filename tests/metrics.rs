//! Prometheus metrics of backups: written as a node-exporter textfile, and pushed to a real
//! Pushgateway (Debian's prometheus-pushgateway, started on 127.0.0.1 by scripts/test.sh).

mod common;

use std::io::{Read, Write};

use common::*;

/// The value of metric `name` on the line whose labels include every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn snapshot_time(env: &Env) -> f64 {
    let snaps = env.json(&["snapshots"]);
    let time = snaps.as_array().unwrap().last().unwrap()["time"]
        .as_str()
        .unwrap()
        .to_owned();
    chrono::DateTime::parse_from_rfc3339(&time)
        .unwrap()
        .timestamp() as f64
}

#[test]
fn a_backup_writes_its_figures_for_the_textfile_collector() {
    let env = Env::new();
    let data = dir_with(&env, "data", 10_000, &[("a", 1), ("b", 2), ("c", 3)]);
    let file = env.path("cairn.prom");
    let args = [
        "backup",
        data.to_str().unwrap(),
        "--host",
        "web-1",
        "--metrics-file",
        file.to_str().unwrap(),
    ];
    env.ok(&args);
    let text = std::fs::read_to_string(&file).unwrap();
    let host = "host=\"web-1\"";
    assert_eq!(
        metric(&text, "cairn_backup_files", &[host, "command=\"backup\""]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cairn_backup_bytes", &[host]),
        Some(30_000.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cairn_backup_errors", &[host]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cairn_repository_snapshots", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "cairn_backup_last_success_timestamp_seconds",
            &[host]
        ),
        Some(snapshot_time(&env))
    );
    assert!(text.contains("# TYPE cairn_backup_files gauge"), "{text}");

    // the next run replaces the file whole
    env.ok(&args);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        metric(&text, "cairn_repository_snapshots", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cairn_backup_new_bytes", &[host]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(env.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count(),
        0
    );
}

/// What the Pushgateway at `base` exposes.
fn scrape(base: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_backup_pushes_its_figures_to_a_pushgateway_and_says_when_it_cannot() {
    let gateway = std::env::var("CAIRN_TEST_PUSHGATEWAY").expect(
        "CAIRN_TEST_PUSHGATEWAY is not set: run the tests with scripts/test.sh, which starts a Pushgateway",
    );
    let env = Env::new();
    let data = dir_with(&env, "data", 5_000, &[("a", 4), ("b", 5)]);
    let host = format!("push-{}", std::process::id());
    env.ok(&[
        "backup",
        data.to_str().unwrap(),
        "--host",
        &host,
        "--metrics-push",
        &gateway,
    ]);
    let text = scrape(&gateway);
    let labels = [
        &format!("host=\"{host}\"")[..],
        "job=\"cairn\"",
        "command=\"backup\"",
    ];
    assert_eq!(
        metric(&text, "cairn_backup_files", &labels),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "cairn_backup_bytes", &labels),
        Some(10_000.0),
        "{text}"
    );

    // an unreachable gateway: the snapshot is saved, and the run says what failed
    let out = env.run(&[
        "backup",
        data.to_str().unwrap(),
        "--metrics-push",
        "http://127.0.0.1:9",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--metrics-push"), "{}", stderr(&out));
    assert_eq!(env.snapshot_ids().len(), 2);
}

#[test]
fn check_gc_and_copy_write_their_figures() {
    let env = Env::new();
    let data = dir_with(&env, "data", 20_000, &[("a", 1), ("b", 2)]);
    env.backup(&[&data]);
    std::fs::write(data.join("a"), noise(9, 300_000)).unwrap();
    env.backup(&[&data]);
    let file = env.path("maintenance.prom");
    let file_arg = file.to_str().unwrap();

    env.ok(&["check", "--read-data", "--metrics-file", file_arg]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        metric(&text, "cairn_check_problems", &["command=\"check\""]),
        Some(0.0),
        "{text}"
    );
    let packs = env.objects.names("data/").len() as f64;
    assert_eq!(
        metric(&text, "cairn_check_packs_read", &[]),
        Some(packs),
        "{text}"
    );
    let ran = metric(&text, "cairn_check_last_run_timestamp_seconds", &[]).unwrap();
    assert_eq!(
        metric(&text, "cairn_check_last_success_timestamp_seconds", &[]),
        Some(ran)
    );

    // the first snapshot goes; gc with no safety interval frees what only it needed
    let first = env.snapshot_ids()[0].clone();
    env.ok(&["forget", "--keep-last", "1"]);
    assert!(!env.snapshot_ids().contains(&first));
    let gc = env.json(&["gc", "--safety-interval", "0s", "--metrics-file", file_arg]);
    let gc = if gc["bytes_freed"] == 0 {
        // marked in the first run, deleted in the next
        env.let_marks_fall_due();
        env.json(&["gc", "--safety-interval", "0s", "--metrics-file", file_arg])
    } else {
        gc
    };
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(gc["bytes_freed"].as_u64().unwrap() > 0, "{gc:#}");
    assert_eq!(
        metric(&text, "cairn_gc_freed_bytes", &["command=\"gc\""]),
        Some(gc["bytes_freed"].as_u64().unwrap() as f64),
        "{text}"
    );
    assert!(metric(&text, "cairn_gc_duration_seconds", &[]).is_some());

    let target = target_for(&env, false);
    let mut copy = env.cmd(&[
        "copy",
        "--all",
        "--to",
        &target.repo,
        "--metrics-file",
        file_arg,
    ]);
    copy.env("CAIRN_TO_PASSWORD_FILE", &target.password_file);
    let out = copy.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    let to = format!("target=\"{}\"", target.repo);
    assert_eq!(
        metric(&text, "cairn_copy_snapshots", &[&to]),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "cairn_copy_new_bytes", &[&to]).unwrap() > 300_000.0,
        "{text}"
    );
}

/// Volume backups run on every node at the same hour and push to one Pushgateway: each node's
/// push must leave the others' series in place, and a claim a node could not back up must keep
/// a series of its own, named, for the alert (`deploy/alerts.yaml`, whose rules
/// `scripts/test-alerts.sh` tests with promtool). The API server is real; no kubelet runs, so
/// a folder under a fake kubelet root stands for each mounted volume.
#[test]
fn every_nodes_volume_figures_stay_on_the_pushgateway_and_a_failed_claim_shows() {
    use common::kube::{Kube, mounted_claim, suffix};
    let gateway = std::env::var("CAIRN_TEST_PUSHGATEWAY").expect(
        "CAIRN_TEST_PUSHGATEWAY is not set: run the tests with scripts/test.sh, which starts a Pushgateway",
    );
    let kube = Kube::connect();
    let env = Env::new();
    let s = suffix();
    let ns = format!("metrics-{s}");
    let (node_a, node_b) = (format!("node-a-{s}"), format!("node-b-{s}"));
    kube.create(
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
    for node in [&node_a, &node_b] {
        kube.create(
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
        );
    }
    let kubelet = |node: &str| env.path(&format!("kubelet-{node}"));
    let web = mounted_claim(
        &kube,
        &ns,
        ("web", &format!("pv-web-{s}")),
        ("a", &node_a),
        &kubelet(&node_a),
    );
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("index.html"), "hello").unwrap();
    // node b's folder for claim db is missing: that claim cannot be backed up
    mounted_claim(
        &kube,
        &ns,
        ("db", &format!("pv-db-{s}")),
        ("b", &node_b),
        &kubelet(&node_b),
    );
    let run = |node: &str| {
        env.run(&[
            "k8s",
            "backup-volumes",
            "-n",
            &ns,
            "--node",
            node,
            "--kubelet-root",
            kubelet(node).to_str().unwrap(),
            "--cluster",
            "test",
            "--kubeconfig",
            kube.kubeconfig.to_str().unwrap(),
            "--metrics-push",
            &gateway,
        ])
    };
    let a = run(&node_a);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = run(&node_b);
    assert!(
        !b.status.success(),
        "a claim whose folder is missing is not a success"
    );

    let text = scrape(&gateway);
    let ns_label = format!("namespace=\"{ns}\"");
    let on = |node: &str| format!("node=\"{node}\"");
    assert!(
        metric(
            &text,
            "cairn_backup_last_success_timestamp_seconds",
            &[
                &on(&node_a),
                &ns_label,
                "claim=\"web\"",
                "command=\"k8s-backup-volumes\""
            ]
        )
        .is_some(),
        "node a's series survive node b's push:\n{text}"
    );
    for (node, failed) in [(&node_a, 0.0), (&node_b, 1.0)] {
        assert_eq!(
            metric(
                &text,
                "cairn_backup_failed_namespaces",
                &[&on(node), "cluster=\"test\""]
            ),
            Some(failed),
            "{node}:\n{text}"
        );
    }
    assert_eq!(
        metric(
            &text,
            "cairn_volume_backup_failed",
            &[
                &on(&node_b),
                &ns_label,
                "claim=\"db\"",
                "reason=\"folder-missing\""
            ]
        ),
        Some(1.0),
        "the failed claim has a series of its own:\n{text}"
    );
}
