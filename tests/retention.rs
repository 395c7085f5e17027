//! `forget` through the real binary: the repository's default retention (720 h), explicit
//! policies, grouping, and dry runs that change nothing; snapshot times checked against the
//! repository store's clock, so that no snapshot dated in the future makes `forget` drop a
//! group's history.

mod common;

use common::*;

fn backup_at(env: &Env, src: &std::path::Path, time: &str, host: &str) -> String {
    let out = env.json(&[
        "backup",
        "--time",
        time,
        "--host",
        host,
        src.to_str().unwrap(),
    ]);
    out["snapshot_id"].as_str().unwrap().to_owned()
}

/// A folder with one file to back up.
fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    src
}

#[test]
fn default_retention_keeps_720_hours_before_the_newest() {
    let env = Env::new();
    let src = source(&env);
    let old = backup_at(&env, &src, "2026-01-01T00:00:00Z", "h");
    let edge = backup_at(&env, &src, "2026-01-01T12:00:01Z", "h");
    let new = backup_at(&env, &src, "2026-01-31T12:00:00Z", "h");
    let other_host = backup_at(&env, &src, "2025-01-01T00:00:00Z", "h2");

    let dry = env.json(&["forget", "--dry-run"]);
    assert_eq!(dry["removed"], 0);
    assert_eq!(env.snapshot_ids().len(), 4, "a dry run removes nothing");
    let going: Vec<&str> = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(going, [old.as_str()]);
    let kept_edge = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == edge.as_str())
        .unwrap();
    assert!(
        kept_edge["reasons"][0]
            .as_str()
            .unwrap()
            .contains("within 720h"),
        "{kept_edge}"
    );

    let text = env.ok(&["forget"]);
    assert!(text.contains("1 snapshots removed"), "{text}");
    let mut left = env.snapshot_ids();
    left.sort();
    let mut want = vec![edge, new, other_host];
    want.sort();
    assert_eq!(
        left, want,
        "the lone snapshot of another host is the newest of its group and stays"
    );
}

#[test]
fn explicit_policies_and_grouping() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    for (day, host) in [(1, "a"), (2, "a"), (3, "a"), (3, "b")] {
        backup_at(&env, &src, &format!("2026-05-0{day}T10:00:00Z"), host);
    }
    let out = env.json(&["forget", "--keep-last", "1", "--group-by", ""]);
    assert_eq!(out["removed"], 3);
    assert_eq!(env.snapshot_ids().len(), 1);
    let bad = env.run(&["forget", "--keep-last", "1", "--group-by", "color"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("use host, paths and/or tags"));
}

/// Now plus `days`, as `--time` takes it.
fn days_from_now(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

#[test]
fn a_time_after_the_stores_clock_is_refused_unless_confirmed() {
    let env = Env::new();
    let src = source(&env);
    let future = days_from_now(3650);
    let out = env.run(&["backup", "--time", &future, src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("ahead of the repository's clock") && err.contains("--allow-future-time"),
        "{err}"
    );
    assert!(env.snapshot_ids().is_empty(), "nothing is written");
    // a clock a minute fast is ordinary drift
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    backup_at(&env, &src, &soon, "h");
    // confirmed: stored as asked
    let out = env.json(&[
        "backup",
        "--time",
        &future,
        "--allow-future-time",
        src.to_str().unwrap(),
    ]);
    let id = out["snapshot_id"].as_str().unwrap();
    let snap = env.json(&["cat", "snapshot", id]);
    let recorded: chrono::DateTime<chrono::Utc> = snap["time"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        recorded,
        future.parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    );
    // the confirmation goes with --time only
    let bad = env.run(&["backup", "--allow-future-time", src.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn a_machine_clock_ahead_of_the_stores_is_refused() {
    let env = Env::new();
    let src = source(&env);
    // cairn's clock ten years fast (libfaketime); the store's clock is the one that dates the
    // files the kernel writes in the folder, or the S3 server's
    let plain = env.cmd(&["backup", src.to_str().unwrap()]);
    let out = std::process::Command::new("faketime")
        .args(["-f", "+3650d"])
        .arg(plain.get_program())
        .args(plain.get_args())
        .env_clear()
        .envs(plain.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("DONT_FAKE_MONOTONIC", "1")
        .output()
        .expect("faketime is not installed: run scripts/setup.sh --tests");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("this machine's clock") && err.contains("ahead of the repository's clock"),
        "{err}"
    );
    assert!(env.snapshot_ids().is_empty(), "nothing is written");
}

#[test]
fn forget_ignores_snapshots_dated_in_the_future_and_names_them() {
    let env = Env::new();
    let src = source(&env);
    let real: Vec<String> = (1..=5)
        .map(|d| backup_at(&env, &src, &days_from_now(d - 5), "h"))
        .collect();
    // a --time typo, confirmed by mistake: ten years ahead
    let out = env.json(&[
        "backup",
        "--time",
        &days_from_now(3650),
        "--allow-future-time",
        "--host",
        "h",
        src.to_str().unwrap(),
    ]);
    let future = out["snapshot_id"].as_str().unwrap().to_owned();

    // the default retention (720 h before the newest) would have counted from 2036
    let plan = env.ok(&["forget", "--dry-run"]);
    assert!(plan.contains("0 snapshots would be removed"), "{plan}");
    assert!(
        plan.lines()
            .any(|l| l.contains(&future[..8]) && l.contains("in the future")),
        "{plan}"
    );
    let out = env.json(&["forget"]);
    assert_eq!(out["removed"], 0, "{out}");
    assert_eq!(out["ignored_future"], serde_json::json!([future]), "{out}");
    assert_eq!(env.snapshot_ids().len(), 6);

    // an explicit policy counts the real snapshots only: the three newest real ones stay
    let out = env.json(&["forget", "--keep-last", "3"]);
    assert_eq!(out["removed"], 2, "{out}");
    let mut left = env.snapshot_ids();
    left.sort();
    let mut want = vec![real[2].clone(), real[3].clone(), real[4].clone(), future];
    want.sort();
    assert_eq!(left, want);
}
