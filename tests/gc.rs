//! Garbage collection through the real binary: two phases free the space of forgotten data,
//! repacking shrinks partly live packs, a marked pack that a snapshot still needs is kept, and
//! only one gc runs at a time.

mod common;

use std::path::Path;

use cairn_engine::snapshot::Snapshot;
use common::*;

fn gc(env: &Env, safety: &str) -> serde_json::Value {
    env.json(&["gc", "--safety-interval", safety])
}

/// Asserts that more than 3 MiB came back since `before` and that `kept` is whole.
fn assert_freed_and_whole(env: &Env, before: u64, kept: &str, src: &Path) {
    let after = env.repo_size();
    assert!(after < before - (3 << 20), "{before} -> {after}");
    env.assert_intact();
    restores_identically(env, kept, src);
}

fn restores_identically(env: &Env, snapshot: &str, src: &Path) {
    let t = env.path(&format!("restore-{}", &snapshot[..8]));
    env.ok(&["restore", snapshot, "--target", t.to_str().unwrap()]);
    let diffs = diff_trees(src, &t.join(src.file_name().unwrap()), true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A repository with two snapshots, the older (3 MiB in `old/`) forgotten; returns the kept
/// snapshot and its folder.
fn with_forgotten_data(env: &Env) -> (String, std::path::PathBuf) {
    let old = dir_with(env, "old", 1 << 20, &[("a", 1), ("b", 2), ("c", 3)]);
    let keep = dir_with(env, "keep", 1 << 20, &[("d", 4)]);
    env.backup(&[&old]);
    let kept = env.backup(&[&keep]);
    env.ok(&["forget", "--keep-last", "1", "--group-by", ""]);
    (kept, keep)
}

#[test]
fn forgotten_data_is_marked_then_swept_and_the_rest_survives() {
    let env = Env::new();
    let (kept, keep) = with_forgotten_data(&env);
    let before = env.repo_size();
    let first = gc(&env, "1h");
    assert_eq!(
        first["packs_marked"], 2,
        "old data pack and tree pack: {first}"
    );
    assert_eq!(first["bytes_freed"], 0);
    let second = gc(&env, "1h");
    assert_eq!(
        second["marks_pending"], 1,
        "the mark waits for its safety interval: {second}"
    );
    assert_eq!(second["packs_deleted"], 0);
    assert!(env.repo_size() + 4096 >= before);
    restores_identically(&env, &kept, &keep);

    // a mark made with a zero interval is due at once
    let env = Env::new();
    let (kept, keep) = with_forgotten_data(&env);
    let before = env.repo_size();
    gc(&env, "0s");
    let swept = gc(&env, "0s");
    assert_eq!(swept["packs_deleted"], 2, "{swept}");
    assert!(swept["bytes_freed"].as_u64().unwrap() > 3 << 20);
    assert_freed_and_whole(&env, before, &kept, &keep);
}

#[test]
fn partly_live_packs_are_repacked() {
    let env = Env::new();
    let src = dir_with(
        &env,
        "src",
        1 << 20,
        &[("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)],
    );
    env.backup(&[&src]);
    for f in ["b", "c", "d", "e"] {
        std::fs::remove_file(src.join(f)).unwrap();
    }
    let kept = env.backup(&[&src]);
    env.ok(&["forget", "--keep-last", "1", "--group-by", ""]);
    let before = env.repo_size();
    let first = gc(&env, "0s");
    assert_eq!(first["packs_repacked"], 1, "{first}");
    gc(&env, "0s");
    assert_freed_and_whole(&env, before, &kept, &src);
}

#[test]
fn a_marked_pack_that_a_new_snapshot_needs_is_kept() {
    let env = Env::new();
    let src = dir_with(&env, "src", 1 << 20, &[("a", 1)]);
    let id = env.backup(&[&src]);
    let snapshot = {
        let repo = env.open_repo();
        Snapshot::load(&repo, &id.parse().unwrap()).unwrap()
    };
    env.ok(&["forget", "--keep-last", "0", "--group-by", ""]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 0);
    let marked = gc(&env, "0s");
    assert_eq!(marked["packs_marked"], 2, "{marked}");
    // a backup that started before the mark now writes a snapshot that uses the marked packs
    let revived = snapshot.save(&env.open_repo()).unwrap().to_hex();
    let swept = gc(&env, "0s");
    assert_eq!(swept["packs_resurrected"], 2, "{swept}");
    assert_eq!(swept["packs_deleted"], 0);
    env.assert_intact();
    restores_identically(&env, &revived, &src);
}

#[test]
fn backups_do_not_reuse_marked_packs_and_refuse_to_commit_into_a_due_mark() {
    let env = Env::new();
    let src = dir_with(&env, "src", 1 << 20, &[("a", 1)]);
    // the file is 1 or 2 chunks depending on the repository's random gear seed
    let first = env.json(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", "--keep-last", "0", "--group-by", ""]);
    let started = chrono::Utc::now();
    gc(&env, "0s");
    // a backup after the mark stores the data anew instead of pointing into the marked pack
    let again = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(
        again["summary"]["new_blobs"], first["summary"]["new_blobs"],
        "every blob stored anew: {again}"
    );
    // a backup that started before a mark that is already due must not commit
    let err = cairn_engine::gc::check_backup_may_commit(&env.open_repo(), started).unwrap_err();
    assert!(err.to_string().contains("run the backup again"), "{err}");
    gc(&env, "0s");
    env.assert_intact();
    restores_identically(&env, again["snapshot_id"].as_str().unwrap(), &src);
}

#[test]
fn only_one_gc_at_a_time_and_abandoned_locks_are_cleared() {
    let env = Env::new();
    let lock = "locks/gc";
    let host = cairn_engine::host_name();
    let held =
        serde_json::json!({"host": host, "pid": std::process::id(), "time": chrono::Utc::now()});
    env.objects.write(lock, held.to_string().into_bytes());
    let out = env.run(&["gc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("another gc holds"),
        "{}",
        stderr(&out)
    );
    // a lock left by a process that no longer exists on this host is abandoned
    let dead = serde_json::json!({"host": host, "pid": 999_999_999u32, "time": chrono::Utc::now()});
    env.objects.write(lock, dead.to_string().into_bytes());
    env.ok(&["gc"]);
    assert!(!env.objects.exists(lock), "gc releases its lock");
}
