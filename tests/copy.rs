//! `cairn copy` (off-site replication) through the real binary: into a folder and into an S3
//! bucket, from a source that is a folder or (in the S3 run of the suite) a bucket; copies are
//! incremental, upload only what the target lacks, survive kill -9 and resume, and the target
//! passes `check --read-data` and restores identically.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// `cairn copy` from `source` into `target`, with the target's password.
fn copy_cmd(source: &Env, target: &Env, args: &[&str]) -> std::process::Command {
    let mut all = vec!["--json", "copy", "--to", &target.repo];
    all.extend_from_slice(args);
    let mut c = source.cmd(&all);
    c.env("CAIRN_TO_PASSWORD_FILE", &target.password_file);
    c
}

fn copy(source: &Env, target: &Env, args: &[&str]) -> serde_json::Value {
    let out = copy_cmd(source, target, args).output().unwrap();
    assert!(out.status.success(), "copy failed: {}", stderr(&out));
    json_result(&out.stdout)
}

fn assert_restores(env: &Env, snapshot: &str, src: &Path) {
    let t = env.path(&format!("restore-{snapshot}"));
    env.ok(&["restore", snapshot, "--target", t.to_str().unwrap()]);
    let diff = diff_trees(src, &t.join("src"), true);
    assert!(diff.is_empty(), "{diff:?}");
}

fn copies_incrementally(target_on_s3: bool) {
    let source = Env::new();
    let src = source.path("src");
    make_full_tree(&src);
    source.backup(&[&src]);
    let target = target_for(&source, target_on_s3);

    let first = copy(&source, &target, &["--all"]);
    assert_eq!(first["snapshots_copied"], 1, "{first}");
    assert!(first["blobs_copied"].as_u64().unwrap() > 3, "{first}");
    assert_restores(&target, "latest", &src);
    target.assert_intact();

    // nothing new: nothing copied
    let again = copy(&source, &target, &["--all"]);
    assert_eq!(again["snapshots_copied"], 0, "{again}");
    assert_eq!(again["snapshots_present"], 1, "{again}");
    assert_eq!(again["blobs_copied"], 0, "{again}");

    // one new file: only its blobs and the changed trees travel
    std::fs::write(src.join("new-file"), noise(77, 300_000)).unwrap();
    let id = source.backup(&[&src]);
    let size_before = target.repo_size();
    let source_objects = source.objects.names("");
    let third = copy(&source, &target, &[&id]);
    assert_eq!(third["snapshots_copied"], 1, "{third}");
    let grown = target.repo_size() - size_before;
    assert!(
        grown < 300_000 + 64 * 1024,
        "grew by {grown} bytes for a 300 kB file"
    );
    assert_eq!(target.snapshot_ids().len(), 2);
    assert_restores(&target, "latest", &src);
    target.assert_intact();
    // the source was only read
    assert_eq!(source.objects.names(""), source_objects);
}

#[test]
fn copies_into_a_folder() {
    copies_incrementally(false);
}

#[test]
fn copies_into_a_bucket() {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        eprintln!("no S3 test server (AWS_ENDPOINT_URL unset): run scripts/test.sh");
        return;
    }
    copies_incrementally(true);
}

#[test]
fn a_target_that_names_data_differently_is_refused() {
    let source = Env::new();
    let src = source.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    source.backup(&[&src]);
    let target = Env::new();
    let out = copy_cmd(&source, &target, &["--all"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--copy-chunker-params-from"),
        "{}",
        stderr(&out)
    );
    assert!(target.snapshot_ids().is_empty());
}

#[test]
fn an_interrupted_copy_resumes_without_copying_twice() {
    let source = Env::new();
    let src = source.path("src");
    std::fs::create_dir(&src).unwrap();
    let mut ids = vec![];
    for g in 0..4u64 {
        std::fs::write(src.join(format!("gen-{g}")), noise(g, 12 << 20)).unwrap();
        ids.push(source.backup(&[&src]));
    }
    let target = target_for(&source, backend::on_s3());

    // kill -9 the copy once it has committed some snapshots but not all
    let mut killed_after = None;
    for _ in 0..5 {
        let mut child = copy_cmd(&source, &target, &["--all"]).spawn().unwrap();
        let started = Instant::now();
        loop {
            let done = target.objects.names("snapshots").len();
            if (1..4).contains(&done) {
                child.kill().unwrap();
                killed_after = Some(());
                break;
            }
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.wait();
        if killed_after.is_some() {
            break;
        }
    }
    killed_after.expect("the copy was never caught between two snapshots");
    let done = target.objects.names("snapshots").len();
    assert!(
        (1..4).contains(&done),
        "{done} snapshots copied before the kill"
    );

    let resumed = copy(&source, &target, &["--all"]);
    assert_eq!(resumed["snapshots_present"], done as u64, "{resumed}");
    assert_eq!(resumed["snapshots_copied"], 4 - done as u64, "{resumed}");
    // only the data of the snapshots not yet copied travels again: one 12 MiB file each
    let copied = resumed["bytes_copied"].as_u64().unwrap();
    assert!(
        copied < (4 - done as u64) * (12 << 20) + (1 << 20),
        "{copied} bytes copied again: {resumed}"
    );
    target.assert_intact();
    assert_eq!(target.snapshot_ids().len(), 4);
    assert_restores(&target, "latest", &src);
}

#[test]
fn a_copy_target_can_use_its_own_aws_profile() {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        eprintln!("no S3 test server (AWS_ENDPOINT_URL unset): run scripts/test.sh");
        return;
    }
    // the source is a folder, so the environment's S3 settings can point nowhere
    let mut source = Env::empty();
    source.objects = Backend::local(&source.path("local-repo"));
    source.repo = source.objects.location.clone();
    source.ok(&["init"]);
    let src = dir_with(&source, "src", 100_000, &[("f", 9)]);
    source.backup(&[&src]);
    let target = target_for(&source, true);

    let aws = source.dir.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[offsite]\naws_access_key_id = offsite-key\naws_secret_access_key = offsite-secret\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        format!(
            "[profile offsite]\nregion = us-east-1\nendpoint_url = {}\n",
            backend::s3_endpoint()
        ),
    )
    .unwrap();
    let mut c = copy_cmd(&source, &target, &["--all", "--to-aws-profile", "offsite"]);
    // nothing listens there: only the profile's endpoint_url reaches the target
    c.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(target.snapshot_ids().len(), 1);
    assert_restores(&target, "latest", &src);
}

/// Issue 14.3: a copy follows the gc protocol in the target as a backup does. It used to
/// deduplicate against packs the target's gc had marked, so a sweep running beside it deleted
/// the data of the snapshot it then committed.
#[test]
fn a_copy_stores_anew_what_the_targets_gc_marked() {
    let source = Env::new();
    let src = dir_with(&source, "src", 1 << 20, &[("a", 1), ("b", 2)]);
    source.backup(&[&src]);
    let target = target_for(&source, backend::on_s3());
    let first = copy(&source, &target, &["--all"]);
    target.ok(&["forget", "--keep-last", "0", "--group-by", ""]);
    let marked = target.json(&["gc", "--safety-interval", "0s"]);
    assert!(marked["packs_marked"].as_u64().unwrap() >= 2, "{marked}");

    let again = copy(&source, &target, &["--all"]);
    assert_eq!(again["snapshots_copied"], 1, "{again}");
    assert_eq!(
        again["blobs_copied"], first["blobs_copied"],
        "every blob stored anew, none taken from the marked packs: {again}"
    );
    target.let_marks_fall_due();
    let swept = target.json(&["gc", "--safety-interval", "0s"]);
    assert!(swept["packs_deleted"].as_u64().unwrap() >= 2, "{swept}");
    target.assert_intact();
    assert_restores(&target, "latest", &src);
}
