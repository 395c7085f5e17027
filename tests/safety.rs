//! Bad input through the real binary: wrong passwords, damaged, truncated and tampered
//! objects, unknown versions, unsafe names in a snapshot. Each gives a clear error and a
//! non-zero exit; wrong data never comes out.

mod common;

use std::path::{Path, PathBuf};

use cairn_engine::format::blob::BlobKind;
use cairn_engine::format::snapshot::{SNAPSHOT_VERSION, Snapshot, Summary};
use cairn_engine::repository::packer::Packer;
use cairn_engine::repository::store::ObjectKind;
use common::*;

fn small_backup(env: &Env) -> (PathBuf, String) {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/file"), noise(7, 200_000)).unwrap();
    std::fs::write(src.join("text"), "hello ".repeat(100)).unwrap();
    let id = env.backup(&[&src]);
    (src, id)
}

fn flip(env: &Env, name: &str, at: usize) {
    let mut b = env.objects.read(name);
    let i = at.min(b.len() - 1);
    b[i] ^= 0x20;
    env.objects.write(name, b);
}

fn fails_with(env: &Env, args: &[&str], needle: &str) -> String {
    let out = env.run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "cairn {args:?}: {err}");
    assert!(
        err.contains(needle),
        "cairn {args:?}: expected {needle:?} in: {err}"
    );
    err
}

#[test]
fn wrong_password_and_missing_repository() {
    let env = Env::new();
    std::fs::write(&env.password_file, "not the password\n").unwrap();
    let err = fails_with(&env, &["snapshots"], "wrong password");
    assert!(
        err.contains("CAIRN_PASSWORD_FILE"),
        "says what to check: {err}"
    );

    let nowhere = Env::empty();
    fails_with(&nowhere, &["snapshots"], "no Cairn repository");
    let again = env.run(&["init"]);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn damaged_pack_is_named_and_no_wrong_data_comes_out() {
    let env = Env::new();
    let (_, id) = small_backup(&env);
    for pack in env.objects.names("data") {
        flip(&env, &pack, 100);
    }
    let target = env.path("t");
    let out = env.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("damaged"), "{err}");
    // nothing that failed verification was written
    if target.exists() {
        for f in all_files(&target) {
            let data = std::fs::read(&f).unwrap();
            assert!(
                data.is_empty() || f.ends_with("text") && data == "hello ".repeat(100).as_bytes(),
                "{} has unverified data",
                f.display()
            );
        }
    }
}

#[test]
fn damaged_or_truncated_snapshot_index_key_and_config_are_refused() {
    let env = Env::new();
    let (_, id) = small_backup(&env);
    let snap = env.objects.names("snapshots").pop().unwrap();
    let original = env.objects.read(&snap);
    flip(&env, &snap, 50);
    // a listing goes on without it and names it (tests/bad_objects.rs); by name it is refused
    let out = env.run(&["snapshots"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("damaged") && err.contains(&id),
        "names the snapshot: {err}"
    );
    fails_with(&env, &["cat", "snapshot", &id], "damaged");
    env.objects
        .write(&snap, original[..original.len() - 3].to_vec());
    fails_with(&env, &["cat", "snapshot", &id], "damaged");
    env.objects.write(&snap, original);

    let index = env.objects.names("index").pop().unwrap();
    flip(&env, &index, 30);
    std::fs::remove_dir_all(&env.cache).unwrap();
    let err = fails_with(&env, &["ls", "latest"], "repair index");
    assert!(err.contains("damaged"), "{err}");
    // repair index rebuilds from pack headers (dropping the damaged segment) and everything
    // restores again
    env.ok(&["repair", "index"]);
    assert!(!env.objects.exists(&index));
    let t = env.path("t");
    env.ok(&["restore", &id, "--target", t.to_str().unwrap()]);
    assert!(diff_trees(&env.path("src"), &t.join("src"), true).is_empty());

    let key = env.objects.names("keys").pop().unwrap();
    let original = env.objects.read(&key);
    env.objects
        .write(&key, original[..original.len() / 2].to_vec());
    fails_with(&env, &["snapshots"], "key");
    env.objects.write(&key, original);

    let original = env.objects.read("config");
    flip(&env, "config", original.len() - 5);
    fails_with(&env, &["snapshots"], "config");
    env.objects.write("config", original);
    env.ok(&["snapshots"]);
}

#[test]
fn unknown_format_version_is_refused_with_advice() {
    let env = Env::new();
    let mut b = env.objects.read("config");
    let newer = cairn_engine::format::config::FORMAT_VERSION + 1;
    b[8..12].copy_from_slice(&newer.to_le_bytes());
    env.objects.write("config", b);
    let err = fails_with(
        &env,
        &["snapshots"],
        &format!("version {newer} is not supported"),
    );
    assert!(err.contains("upgrade cairn"), "{err}");
}

#[test]
fn tampered_local_index_is_detected_and_healed() {
    let env = Env::new();
    let (src, id) = small_backup(&env);
    {
        // shift every cached data blob location by one byte (trees stay readable, so only
        // the content restore meets the damage), keeping the cache's segment list
        let repo = env.open_repo();
        for (seg, _) in repo.store().list(ObjectKind::Index).unwrap() {
            let mut segment = repo.load_index(&seg).unwrap();
            for (_, blobs) in &mut segment.packs {
                for b in blobs.iter_mut().filter(|b| b.kind == BlobKind::Data) {
                    b.offset += 1;
                }
            }
            repo.index().add_segment(&seg, &segment, true).unwrap();
        }
    }
    let t = env.path("t");
    env.ok(&["restore", &id, "--target", t.to_str().unwrap()]);
    assert!(diff_trees(&src, &t.join("src"), true).is_empty());
}

/// Writes a snapshot whose root tree holds a crafted entry named `name`, using the engine
/// directly (a backup itself never writes such names).
fn plant_unsafe_snapshot(env: &Env, name: &str) -> String {
    let repo = env.open_repo();
    let packer = Packer::new(&repo);
    let content = packer.save(BlobKind::Data, b"owned").unwrap();
    let tree = serde_json::json!({"nodes": [{
        "name": name, "type": "file", "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0, "ctime_ns": 0,
        "size": 5, "inode": 1, "device": 1, "links": 1, "content": [content]
    }]});
    let root = packer
        .save(BlobKind::Tree, tree.to_string().as_bytes())
        .unwrap();
    packer.finish().unwrap();
    let snap = Snapshot {
        version: SNAPSHOT_VERSION,
        time: chrono::Utc::now(),
        host: "evil".into(),
        user: "evil".into(),
        paths: vec![],
        tags: vec![],
        tree: root,
        parent: None,
        original: None,
        summary: Summary::default(),
        program: "test".into(),
    };
    snap.save(&repo).unwrap().to_hex()
}

#[test]
fn path_traversal_in_a_snapshot_is_refused() {
    let env = Env::new();
    for name in ["..", "../escaped", "/etc/escaped", "a/../../escaped"] {
        let id = plant_unsafe_snapshot(&env, name);
        let target = env.path("t/inner");
        let err = fails_with(
            &env,
            &["restore", &id, "--target", target.to_str().unwrap()],
            "not a plain file name",
        );
        assert!(err.contains("refused"), "{err}");
        assert!(!env.path("t/escaped").exists() && !Path::new("/etc/escaped").exists());
    }
}
