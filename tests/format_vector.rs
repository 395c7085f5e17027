//! The format test vector: a tiny repository written by format version 1, checked in under
//! `tests/vectors/v1/`. Every later release must still read it and restore exactly what
//! `expected.json` lists. Regenerate only when adding a new version's vector:
//! `cargo test --release -p cairn --test format_vector -- --ignored make_vector_v1`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/v1")
}

/// What the vector's restore must reproduce: type, permission bits, mtime, and contents or
/// link target of every entry (ownership is left out: it depends on who made the vector).
fn listing(root: &Path) -> Value {
    let items: Vec<Value> = all_entries(root)
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mut v = json!({"path": rel, "mode": m.mode() & 0o7777, "mtime_ns": m.mtime() * 1_000_000_000 + m.mtime_nsec()});
            if m.is_file() {
                v["content"] = json!(base64::engine::general_purpose::STANDARD.encode(std::fs::read(&p).unwrap()));
            } else if m.file_type().is_symlink() {
                v["target"] = json!(std::fs::read_link(&p).unwrap().to_string_lossy());
            } else {
                v["dir"] = json!(true);
            }
            v
        })
        .collect();
    Value::Array(items)
}

#[test]
#[ignore = "writes the checked-in vector; run by hand for a new format version"]
fn make_vector_v1() {
    let dir = vector_dir();
    assert!(
        !dir.join("repo").exists(),
        "the v1 vector exists already: never rewrite it"
    );
    let env = Env::empty();
    let src = env.path("vector-src");
    std::fs::create_dir_all(src.join("etc/app")).unwrap();
    std::fs::write(
        src.join("etc/app/config.yaml"),
        "replicas: 3\nimage: nginx:1.27\n",
    )
    .unwrap();
    std::fs::write(src.join("etc/app/binary.bin"), noise(42, 70_000)).unwrap();
    std::fs::write(src.join("etc/empty"), b"").unwrap();
    std::fs::write(
        src.join("notes with spaces.txt"),
        "cairn format vector v1\n".repeat(50),
    )
    .unwrap();
    std::fs::set_permissions(
        src.join("etc/app/config.yaml"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("etc/app/config.yaml", src.join("config-link")).unwrap();
    for (i, p) in all_entries(&src).iter().rev().chain([&src]).enumerate() {
        set_mtime(p, 1_700_000_000 + i as i64, 500_000_000 + i as i64);
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("password"), "cairn-test-vector\n").unwrap();
    let mut init = env.cmd(&["init", "--repo", dir.join("repo").to_str().unwrap()]);
    init.env("CAIRN_PASSWORD_FILE", dir.join("password"));
    assert!(init.status().unwrap().success());
    let mut backup = env.cmd(&[
        "backup",
        "--repo",
        dir.join("repo").to_str().unwrap(),
        "--host",
        "vector",
        "--tag",
        "v1",
        src.to_str().unwrap(),
    ]);
    backup.env("CAIRN_PASSWORD_FILE", dir.join("password"));
    assert!(backup.status().unwrap().success());
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_string_pretty(&listing(&src)).unwrap(),
    )
    .unwrap();
}

#[test]
fn vector_v1_still_reads_and_restores_exactly() {
    let dir = vector_dir();
    let env = Env::empty();
    let run = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("CAIRN_REPOSITORY", dir.join("repo"))
            .env("CAIRN_PASSWORD_FILE", dir.join("password"));
        let out = c.output().unwrap();
        assert!(out.status.success(), "cairn {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let config: Value = serde_json::from_str(&run(&["--json", "cat", "config"])).unwrap();
    assert_eq!(config["version"], 1);
    let snaps: Value = serde_json::from_str(&run(&["--json", "snapshots"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["host"], "vector");
    assert_eq!(snaps[0]["tags"][0], "v1");
    let target = env.path("restored");
    run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(listing(&target.join("vector-src")), expected);
}
