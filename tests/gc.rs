//! Garbage collection through the real binary: two phases free the space of forgotten data,
//! repacking shrinks partly live packs, a marked pack that a snapshot still needs is kept, and
//! only one gc runs at a time.

mod common;

use std::path::Path;

use cairn_engine::format::snapshot::Snapshot;
use common::*;

fn gc(env: &Env, safety: &str) -> serde_json::Value {
    env.let_marks_fall_due();
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
    let err = cairn_engine::repository::marks::check_backup_may_commit(&env.open_repo(), started)
        .unwrap_err();
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

/// The largest object under `data/` (the data pack of a small backup).
fn largest_pack(env: &Env) -> String {
    env.objects
        .names("data")
        .into_iter()
        .max_by_key(|n| env.objects.read(n).len())
        .unwrap()
}

/// Issue 14.4: a flipped byte, `repair index` and gc used to delete the whole pack; now the
/// intact blobs are indexed again and the pack is kept, so every other file still restores.
#[test]
fn a_damaged_pack_is_salvaged_by_repair_and_never_deleted_by_gc() {
    let env = Env::new();
    let files = [("a", 1), ("b", 2), ("c", 3), ("d", 4)];
    let src = dir_with(&env, "src", 100_000, &files);
    let id = env.backup(&[&src]);
    let pack = largest_pack(&env);
    let mut bytes = env.objects.read(&pack);
    bytes[10] ^= 0x20; // inside the first blob
    env.objects.write(&pack, bytes);

    let repair = env.run(&["repair", "index"]);
    assert_eq!(repair.status.code(), Some(1), "{}", stderr(&repair));
    assert!(
        stderr(&repair).contains("damaged blob left out"),
        "{}",
        stderr(&repair)
    );
    for _ in 0..2 {
        gc(&env, "0s");
    }
    assert!(env.objects.exists(&pack), "gc deleted the damaged pack");

    let t = env.path("t");
    let out = env.run(&["restore", &id, "--target", t.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let mut intact = 0;
    for (name, _) in files {
        let restored = std::fs::read(t.join("src").join(name)).unwrap_or_default();
        if restored == std::fs::read(src.join(name)).unwrap() {
            intact += 1;
        } else {
            assert!(
                stderr(&out).contains(name),
                "{name} not named: {}",
                stderr(&out)
            );
        }
    }
    assert_eq!(intact, files.len() - 1, "{}", stderr(&out));
}

/// A repository whose only data pack is one quarter live: four 1 MiB files backed up, three
/// of them deleted and backed up again, the first snapshot forgotten. Returns the kept
/// snapshot and its folder.
fn with_partly_live_pack(env: &Env) -> (String, std::path::PathBuf) {
    let src = dir_with(
        env,
        "src",
        1 << 20,
        &[("a", 1), ("b", 2), ("c", 3), ("d", 4)],
    );
    env.backup(&[&src]);
    for f in ["b", "c", "d"] {
        std::fs::remove_file(src.join(f)).unwrap();
    }
    let kept = env.backup(&[&src]);
    env.ok(&["forget", "--keep-last", "1", "--group-by", ""]);
    (kept, src)
}

/// Issue 14.6: a pack shorter than its index entries says makes gc stop before deleting
/// anything (it panicked), and check names it.
#[test]
fn a_truncated_pack_stops_gc_before_it_deletes_anything() {
    let env = Env::new();
    with_partly_live_pack(&env);
    let pack = largest_pack(&env);
    let bytes = env.objects.read(&pack);
    env.objects.write(&pack, bytes[..100].to_vec()); // every blob cut short
    let before = env.objects.names("");

    let out = env.run(&["gc", "--safety-interval", "0s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let short = &pack[pack.rfind('/').unwrap() + 1..][..8];
    assert!(stderr(&out).contains(short), "{}", stderr(&out));
    assert_eq!(env.objects.names(""), before, "gc changed the repository");
    let check = env.run(&["check"]);
    assert_eq!(
        check.status.code(),
        Some(1),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    assert!(
        String::from_utf8_lossy(&check.stdout).contains(short) || stderr(&check).contains(short),
        "check does not name the pack"
    );
}

/// Starts a backup of `paths` and stops it (SIGSTOP) once it has stored a pack of its own;
/// returns the stopped process.
fn backup_paused_after_its_first_pack(
    env: &Env,
    paths: &[&Path],
    lease: &str,
) -> std::process::Child {
    let packs = env.objects.names("data").len();
    let mut args = vec!["--json", "backup"];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    let child = env
        .cmd(&args)
        .env("CAIRN_SESSION_LEASE", lease)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.objects.names("data").len() == packs {
        assert!(std::time::Instant::now() < deadline, "no pack written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    child
}

/// Runs gc with a 2 s safety interval a few times over 7 s, as a busy maintenance loop would.
fn gc_loop(env: &Env) {
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(2300));
        gc(&env.sharing(env.path("gc-cache")), "2s");
    }
}

fn resume(child: std::process::Child) -> std::process::Output {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    child.wait_with_output().unwrap()
}

/// Issue 14.5: a backup that spends longer than gc's safety interval between storing a pack
/// and indexing it (paused here) lost that pack to gc and committed anyway. Its session keeps
/// gc away from what it wrote; once its lease has run out it refuses to commit instead.
#[test]
fn gc_never_deletes_what_a_running_backup_wrote() {
    let env = Env::new();
    let old = dir_with(&env, "b-old", 8 << 20, &[("x", 10), ("y", 11)]);
    env.backup(&[&old]);
    let new = dir_with(&env, "a-new", 12 << 20, &[("p", 20), ("q", 21), ("r", 22)]);

    // paused for 7 s within a 15 min lease: gc keeps its packs, and it commits
    let child = backup_paused_after_its_first_pack(&env, &[&new, &old], "900");
    gc_loop(&env);
    let out = resume(child);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = json_result(&out.stdout)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..2 {
        gc(&env, "0s");
    }
    env.assert_intact();
    let t = env.path("t");
    env.ok(&["restore", &id, "--target", t.to_str().unwrap()]);
    for (src, name) in [(&new, "a-new"), (&old, "b-old")] {
        let diffs = diff_trees(src, &t.join(name), true);
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }

    // paused past its 4 s lease: gc may take its packs, so it must not commit
    let newer = dir_with(
        &env,
        "c-newer",
        12 << 20,
        &[("s", 30), ("u", 31), ("v", 32)],
    );
    let before = env.snapshot_ids();
    let child = backup_paused_after_its_first_pack(&env, &[&newer, &old], "4");
    gc_loop(&env);
    let out = resume(child);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("run it again"), "{}", stderr(&out));
    assert_eq!(env.snapshot_ids(), before);
    env.assert_intact();
}

/// A marked pack whose blobs were copied into a pack that is gone since is kept: only a copy
/// in a pack still stored counts, and the missing pack leaves the index.
#[test]
fn a_copy_in_a_missing_pack_does_not_doom_the_original() {
    let env = Env::new();
    let (kept, src) = with_partly_live_pack(&env);
    let before: std::collections::BTreeSet<String> =
        env.objects.names("data").into_iter().collect();
    let repacked = gc(&env, "0s");
    assert_eq!(repacked["packs_repacked"], 1, "{repacked}");
    let after: std::collections::BTreeSet<String> = env.objects.names("data").into_iter().collect();
    for copy in after.difference(&before) {
        env.objects.delete(copy);
    }
    let swept = gc(&env, "0s");
    assert!(swept["packs_resurrected"].as_u64().unwrap() >= 1, "{swept}");
    assert!(swept["packs_missing"].as_u64().unwrap() >= 1, "{swept}");
    restores_identically(&env, &kept, &src);
}

/// Anyone with put access to the bucket (no key needed) can store an old, authentic object
/// again: neither an index segment nor a mark may come back to life that way (format §7, §12).
#[test]
fn a_replayed_index_segment_never_lets_a_backup_reuse_deleted_packs() {
    let env = Env::new();
    let old = dir_with(&env, "old", 1 << 20, &[("a", 11), ("b", 12)]);
    env.backup(&[&old]);
    let first: Vec<(String, Vec<u8>)> = env
        .objects
        .names("index/")
        .into_iter()
        .map(|n| {
            let bytes = env.objects.read(&n);
            (n, bytes)
        })
        .collect();
    let keep = dir_with(&env, "keep", 1 << 20, &[("k", 13)]);
    env.backup(&[&keep]);
    env.ok(&["forget", "--keep-last", "1", "--group-by", ""]);
    gc(&env, "0s");
    let swept = gc(&env, "0s");
    assert_eq!(swept["packs_deleted"], 2, "{swept}");
    for (name, bytes) in &first {
        assert!(!env.objects.exists(name), "{name} was compacted away");
        env.objects.write(name, bytes.clone());
    }

    // the same data again, from a machine with a fresh cache as from this one
    let elsewhere = env.sharing(env.path("cache-elsewhere"));
    for (who, e) in [("a fresh cache", &elsewhere), ("the same cache", &env)] {
        let out = e.run(&["backup", old.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "backup with {who} after the replay: {}",
            stderr(&out)
        );
    }
    env.assert_intact();
    let latest = env.snapshot_ids().last().unwrap().clone();
    restores_identically(&env, &latest, &old);
}

/// A mark stored again is dated by when it appeared, not by the time sealed inside it: writers
/// that began before it appeared never saw it, and are covered by it (format §12).
#[test]
fn a_replayed_mark_counts_from_when_it_appeared() {
    let env = Env::new();
    let (kept, keep) = with_forgotten_data(&env);
    gc(&env, "5s");
    let marks = env.objects.names("marks/");
    assert_eq!(marks.len(), 1, "{marks:?}");
    std::thread::sleep(std::time::Duration::from_secs(6));
    let bytes = env.objects.read(&marks[0]);
    env.objects.write(&marks[0], bytes);
    let replayed = gc(&env, "5s");
    assert_eq!(replayed["packs_deleted"], 0, "{replayed}");
    assert_eq!(replayed["marks_pending"], 1, "{replayed}");
    std::thread::sleep(std::time::Duration::from_secs(6));
    let swept = gc(&env, "5s");
    assert_eq!(swept["packs_deleted"], 2, "{swept}");
    restores_identically(&env, &kept, &keep);
}
