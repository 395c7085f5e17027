//! `forget` through the real binary: the repository's default retention (720 h), explicit
//! policies, grouping, and dry runs that change nothing.

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

#[test]
fn default_retention_keeps_720_hours_before_the_newest() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
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
