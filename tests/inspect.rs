//! `cairn diff`, `cairn find` and `cairn stats` through the real binary, on real files changed
//! between two backups, with figures checked against what is on disk and in the store; and the
//! status events and results of long commands against their documented JSON schemas.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Files and bytes of the regular files below `dir`.
fn files_and_bytes(dir: &Path) -> (u64, u64) {
    let files = all_files(dir);
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    (files.len() as u64, bytes)
}

/// Two snapshots of `src`, with a change of every kind between them.
fn two_snapshots(env: &Env) -> (String, String, (u64, u64), (u64, u64)) {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n".repeat(2000)).unwrap();
    std::fs::write(src.join("b.txt"), "bravo\n").unwrap();
    std::fs::write(src.join("dir/c.bin"), noise(3, 1 << 20)).unwrap();
    std::fs::write(src.join("dir/d.txt"), "delta\n").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let first = env.backup(&[&src]);
    let first_size = files_and_bytes(&src);

    std::fs::write(src.join("b.txt"), "bravo, edited\n").unwrap();
    std::fs::set_permissions(
        src.join("dir/d.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::remove_file(src.join("dir/c.bin")).unwrap();
    std::fs::write(src.join("dir/new.txt"), "new\n").unwrap();
    std::fs::remove_file(src.join("link")).unwrap();
    std::fs::create_dir(src.join("link")).unwrap();
    std::fs::write(src.join("link/x"), "x\n").unwrap();
    let second = env.backup(&[&src]);
    (first, second, first_size, files_and_bytes(&src))
}

#[test]
fn diff_find_and_stats_report_what_changed_and_what_is_stored() {
    let env = Env::new();
    let (first, second, (files1, bytes1), (files2, bytes2)) = two_snapshots(&env);

    let diff = env.json(&["diff", &first[..8], &second]);
    assert_schema("diff", &diff);
    let changes: BTreeSet<(String, String)> = diff["diff"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_owned(),
                c["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("/src/", "metadata"),
        ("/src/b.txt", "modified"),
        ("/src/dir/", "metadata"),
        ("/src/dir/c.bin", "removed"),
        ("/src/dir/d.txt", "metadata"),
        ("/src/dir/new.txt", "added"),
        ("/src/link/", "type"),
        ("/src/link/x", "added"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    assert_eq!(changes, want);
    let d = &diff["diff"];
    assert_eq!(d["added"]["files"], 2, "{d:#}");
    assert_eq!(d["added"]["dirs"], 1);
    assert_eq!(d["removed"]["files"], 1);
    assert_eq!(d["removed"]["others"], 1);
    assert_eq!(d["removed"]["bytes"], 1 << 20);
    let text = env.ok(&["diff", &first, &second]);
    assert!(text.contains("M    /src/b.txt\n"), "{text}");
    assert!(text.contains("-    /src/dir/c.bin\n"), "{text}");

    let found = env.json(&["find", "*.txt"]);
    assert_schema("find", &found);
    let hits: Vec<(String, String)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["snapshot"].as_str().unwrap()[..8].to_owned(),
                f["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let p = |s: &str, path: &str| (s[..8].to_owned(), path.to_owned());
    assert_eq!(
        hits,
        vec![
            p(&first, "/src/a.txt"),
            p(&first, "/src/b.txt"),
            p(&first, "/src/dir/d.txt"),
            p(&second, "/src/a.txt"),
            p(&second, "/src/b.txt"),
            p(&second, "/src/dir/d.txt"),
            p(&second, "/src/dir/new.txt"),
        ]
    );
    let whole_path = env.json(&["find", "/src/dir/*.bin"]);
    assert_eq!(whole_path.as_array().unwrap().len(), 1, "{whole_path:#}");
    assert_eq!(whole_path[0]["size"], 1 << 20);
    assert_eq!(
        env.json(&["find", "c.bin", "--snapshot", "latest"]),
        Value::Array(vec![])
    );
    let bad = env.run(&["find", "[a-"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("not a valid pattern"),
        "{}",
        stderr(&bad)
    );

    let stats = env.json(&["stats"]);
    assert_schema("stats", &stats);
    assert_eq!(stats["snapshots"], 2);
    assert_eq!(stats["files"], files1 + files2);
    assert_eq!(stats["restore_size"], bytes1 + bytes2);
    let raw = stats["raw_size"].as_u64().unwrap();
    // unchanged a.txt and d.txt are stored once: distinct data is less than what a restore writes
    assert!(raw < bytes1 + bytes2 && raw >= bytes1, "{stats:#}");
    let stored = stats["stored_size"].as_u64().unwrap();
    assert!(stored < raw, "a.txt compresses: {stats:#}");
    let on_store: u64 = ["data/", "index/", "snapshots/", "keys/"]
        .iter()
        .map(|p| env.objects.size(p))
        .sum();
    assert_eq!(stats["repository_size"], on_store);
    assert!(stored <= env.objects.size("data/"));
    let latest = env.json(&["stats", "latest"]);
    assert_eq!(latest["restore_size"], bytes2);
}

/// Runs a long command with status events every millisecond.
fn events_of(env: &Env, args: &[&str], schema: &str) -> (Value, Vec<Value>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let mut c = env.cmd(&all);
    c.env("CAIRN_PROGRESS_INTERVAL", "1ms");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    checked_result(schema, &out.stdout)
}

#[test]
fn long_commands_print_status_events_and_results_that_follow_their_schemas() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), noise(i, 4 << 20)).unwrap();
    }
    let (backup, events) = events_of(&env, &["backup", src.to_str().unwrap()], "backup");
    assert!(
        !events.is_empty(),
        "a backup of 16 MiB runs longer than a millisecond"
    );
    assert!(events.iter().all(|e| e["command"] == "backup"));
    let done: Vec<u64> = events
        .iter()
        .map(|e| e["bytes_done"].as_u64().unwrap())
        .collect();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "bytes only grow: {done:?}"
    );
    assert_eq!(backup["summary"]["bytes"], 16 << 20);

    let target = env.path("restored");
    let (restore, events) = events_of(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
        "restore",
    );
    assert_eq!(restore["outcome"]["files"], 4);
    // a whole restore knows its size, so its events say how far along it is
    let last = events
        .last()
        .expect("a restore of 16 MiB runs longer than a millisecond");
    assert_eq!(last["total_bytes"], 16 << 20);
    assert!(last["percent_done"].as_f64().unwrap() <= 100.0);

    let (check, _) = events_of(&env, &["check", "--read-data"], "check");
    let record = check["record_id"].as_str().unwrap();
    assert!(env.objects.exists(&format!("checks/{record}")));
    let (unrecorded, _) = events_of(&env, &["check", "--no-record"], "check");
    assert_eq!(unrecorded["record_id"], Value::Null);
    assert_eq!(env.objects.names("checks/").len(), 1);
    let report = env.json(&["report"]);
    assert_eq!(report["last_check"]["id"], record);
    assert_eq!(report["checks"], 1);
}

#[test]
fn json_logs_are_one_object_per_line_and_hold_no_password_and_no_file_contents() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let content = "the-quarterly-figures-7f3a9c";
    std::fs::write(src.join("figures.txt"), content.repeat(100)).unwrap();
    for args in [
        vec![
            "-vv",
            "--log-format",
            "json",
            "backup",
            src.to_str().unwrap(),
        ],
        vec!["-vv", "--log-format", "json", "drill", "--share", "100%"],
        vec!["-vv", "--log-format", "json", "check", "--read-data"],
    ] {
        let out = env.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let logs = stderr(&out);
        assert!(logs.lines().count() > 0, "{args:?} logs at debug level");
        for line in logs.lines() {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not a JSON line ({e}): {line}"));
            assert!(
                event["level"].is_string() && event["fields"].is_object(),
                "{line}"
            );
        }
        assert!(!logs.contains(PASSWORD), "{args:?} logs the password");
        assert!(!logs.contains(content), "{args:?} logs file contents");
    }
}
