//! A misbehaving S3 service, produced on demand: every command here reaches moto through the
//! fault proxy (`scripts/fault-proxy.py`, which `scripts/test.sh` starts and names in
//! `CAIRN_TEST_FAULT_PROXY`), which answers 500 or 503 SlowDown, resets connections mid-body,
//! cuts bodies short, delays, or drops headers, for the test's own bucket only. Without
//! `AWS_ENDPOINT_URL` (outside `scripts/test.sh`) these tests cannot run and say so. In the
//! Azure run (`CAIRN_TEST_AZURE`), repositories without a lock are containers of Azurite and
//! the proxy stands in front of Azurite instead.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::backend::{self, create_bucket};
use common::*;

/// The fault proxy's address.
fn proxy() -> String {
    std::env::var("CAIRN_TEST_FAULT_PROXY").expect(
        "CAIRN_TEST_FAULT_PROXY is unset: start scripts/fault-proxy.py in front of the S3 test server (scripts/test.sh does)",
    )
}

/// A repository in a fresh bucket, reached through the proxy; `None` without an S3 server.
fn proxied(lock: bool, init: &[&str]) -> Option<Proxied> {
    let p = uninitialised(lock)?;
    let mut args = vec!["init"];
    args.extend_from_slice(init);
    p.ok(&args);
    Some(p)
}

/// A fresh bucket reached through the proxy, without a repository yet.
fn uninitialised(lock: bool) -> Option<Proxied> {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        eprintln!("no S3 test server (AWS_ENDPOINT_URL unset): run scripts/test.sh");
        return None;
    }
    let mut env = Env::empty();
    if lock || !backend::on_azure() {
        env.objects = Backend::s3(&create_bucket(lock), "repo");
        env.repo = env.objects.location.clone();
    }
    let bucket = env.objects.bucket.clone().unwrap();
    Some(Proxied { env, bucket })
}

/// An environment whose commands go through the fault proxy.
struct Proxied {
    env: Env,
    bucket: String,
}

impl Proxied {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.env.cmd(args);
        let endpoint = match self.env.repo.starts_with("azure:") {
            true => "AZURITE_BLOB_STORAGE_URL",
            false => "AWS_ENDPOINT_URL",
        };
        c.env(endpoint, proxy())
            // short waits between retries keep the tests fast; the budget stays 8 retries
            .env("CAIRN_S3_BACKOFF_MS", "20")
            // packs over 5 MiB are uploaded in parts
            .env("CAIRN_MULTIPART_MB", "5");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json_result(self.ok(&all).as_bytes())
    }

    /// Replaces the bucket's faults (see scripts/fault-proxy.py for the rules).
    fn faults(&self, config: serde_json::Value) {
        faults(&self.bucket, config);
    }

    /// What the proxy injected into this bucket's requests since its faults were last set.
    fn injected(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/__faults/{}", proxy(), self.bucket)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn restore_matches(&self, snapshot: &str, src: &Path) {
        let t = self.env.path(&format!("restore-{snapshot}"));
        self.ok(&["restore", snapshot, "--target", t.to_str().unwrap()]);
        assert_eq!(
            file_contents(src),
            file_contents(&t.join(src.file_name().unwrap())),
            "restore of {snapshot} differs"
        );
    }
}

/// Sets a bucket's faults at the proxy.
fn faults(bucket: &str, config: serde_json::Value) {
    let status = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-X", "PUT", "--data-binary"])
        .arg(config.to_string())
        .arg(format!("{}/__faults/{bucket}", proxy()))
        .status()
        .unwrap();
    assert!(status.success(), "the fault proxy refused {config}");
}

/// A ListObjectsV2 request.
const LIST: &str = "list-type=2";

#[test]
fn a_listing_cut_mid_body_is_listed_again() {
    let Some(p) = proxied(false, &[]) else { return };
    let src = dir_with(&p.env, "src", 100_000, &[("a", 1), ("b", 2)]);
    p.ok(&["backup", src.to_str().unwrap()]);
    // the first listing's answer breaks after its headers, once truncated and once reset
    for action in ["truncate", "reset"] {
        p.faults(serde_json::json!({"rules": [
            {"action": action, "method": "GET", "path": LIST, "nth": [1]}
        ]}));
        let snapshots = p.json(&["snapshots"]);
        assert_eq!(snapshots.as_array().unwrap().len(), 1, "{action}");
        assert_eq!(p.injected()["injected"][action], 1);
    }
    // a listing that breaks every time outlasts the retries: exit 1 with the store's message,
    // and the repository is unharmed
    p.faults(serde_json::json!({"rules": [
        {"action": "truncate", "method": "GET", "path": LIST}
    ]}));
    let out = p.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("list response body"),
        "{}",
        stderr(&out)
    );
    p.faults(serde_json::json!({}));
    assert_eq!(p.json(&["snapshots"]).as_array().unwrap().len(), 1);
    p.ok(&["check", "--read-data"]);
}

/// The faults of a "5-10 %" run: 8 % of responses in all, for requests of every kind, chosen by
/// a hash of the request (its path holds random ids, so how many varies from run to run), plus
/// [`FIXED_FAULTS`] at fixed positions so that every run has at least that many.
fn random_faults(seed: u64) -> serde_json::Value {
    serde_json::json!({"seed": seed, "rules": [
        {"action": "status", "status": 503, "rate": 0.025},
        {"action": "status", "status": 500, "rate": 0.01},
        {"action": "reset", "rate": 0.015},
        {"action": "truncate", "rate": 0.02},
        {"action": "delay", "seconds": 0.3, "rate": 0.01},
        {"action": "status", "status": 503, "nth": [7, 31, 66, 102, 140]},
        {"action": "reset", "nth": [19, 83, 130]},
        {"action": "truncate", "method": "GET", "nth": [4, 25, 50]},
    ]})
}

/// How many faults [`random_faults`] injects at fixed positions when the run makes at least 140
/// requests, 50 of them GETs (one trial makes over 200).
const FIXED_FAULTS: u64 = 11;

/// Backup (multipart uploads of 6 MiB packs), restore, copy, forget, gc, check --read-data and
/// drill, all through 8 % faults: every command succeeds and every restore is identical.
fn commands_survive_random_faults(seed: u64) -> serde_json::Value {
    let p = proxied(false, &["--pack-size", "6"]).expect("checked by the caller");
    let src = p.env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("big"), noise(seed, 13 << 20)).unwrap();
    std::fs::write(src.join("d/small"), noise(seed + 1, 70_000)).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("d/f{i}")), format!("file {i} of {seed}\n")).unwrap();
    }
    p.faults(random_faults(seed));
    let first = p.json(&["backup", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(src.join("big"), noise(seed + 2, 12 << 20)).unwrap();
    let second = p.json(&["backup", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.restore_matches(&second, &src);

    // copy into a second faulty bucket
    let target = uninitialised(false).unwrap();
    let mut init = target.cmd(&["init", "--copy-chunker-params-from", &p.env.repo]);
    init.env("CAIRN_FROM_PASSWORD_FILE", &p.env.password_file);
    let out = init.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    target.faults(random_faults(seed + 100));
    let mut copy = p.cmd(&["--json", "copy", "--to", &target.env.repo, &first, &second]);
    copy.env("CAIRN_TO_PASSWORD_FILE", &target.env.password_file);
    let out = copy.output().unwrap();
    assert!(out.status.success(), "copy: {}", stderr(&out));
    // copies have their own ids in the target; the newest is the second backup
    target.restore_matches("latest", &src);

    p.ok(&["forget", "--keep-last", "1"]);
    p.ok(&["gc", "--safety-interval", "0s"]);
    p.env.let_marks_fall_due();
    let gc = p.json(&["gc", "--safety-interval", "0s"]);
    assert!(gc["packs_deleted"].as_u64().unwrap() > 0, "{gc}");
    p.ok(&["check", "--read-data"]);
    let scratch = p.env.path("scratch");
    p.ok(&[
        "drill",
        "--share",
        "100%",
        "--scratch",
        scratch.to_str().unwrap(),
    ]);
    p.restore_matches(&second, &src);
    let mut injected = p.injected();
    injected["copy target"] = target.injected();
    // without faults, the repositories are whole
    p.faults(serde_json::json!({}));
    target.faults(serde_json::json!({}));
    p.ok(&["check", "--read-data"]);
    target.ok(&["check", "--read-data"]);
    injected
}

#[test]
fn every_command_survives_a_faulty_store() {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        eprintln!("no S3 test server (AWS_ENDPOINT_URL unset): run scripts/test.sh");
        return;
    }
    // independent trials with different faults, in parallel
    let trials: Vec<_> = (1..=2)
        .map(|seed| std::thread::spawn(move || commands_survive_random_faults(seed)))
        .collect();
    for (seed, trial) in trials.into_iter().enumerate() {
        let injected = trial.join().unwrap();
        eprintln!("trial {}: {injected}", seed + 1);
        let count: u64 = injected["injected"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert!(count >= FIXED_FAULTS, "too few faults injected: {injected}");
    }
}

/// HeadObject without the retention (a caller without `s3:GetObjectRetention`, or a store that
/// omits it) must not read as "not locked" in a lock-enabled repository.
const RETENTION_HEADERS: [&str; 2] = [
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-mode",
];

#[test]
fn object_lock_fails_closed_when_the_retention_cannot_be_read() {
    let Some(p) = proxied(true, &["--object-lock", "compliance", "--lock-days", "2"]) else {
        return;
    };
    let src = dir_with(&p.env, "src", 1 << 20, &[("a", 1)]);
    p.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("a"), noise(2, 1 << 20)).unwrap();
    p.ok(&["backup", src.to_str().unwrap()]);
    let strip = serde_json::json!({"rules": [
        {"action": "strip_response", "method": "HEAD", "headers": RETENTION_HEADERS}
    ]});
    p.faults(strip.clone());
    // forget: the first snapshot is still locked, and that cannot be read
    let forget = p.run(&["--json", "forget", "--keep-last", "1"]);
    assert_eq!(forget.status.code(), Some(1), "{}", stderr(&forget));
    assert!(
        stderr(&forget).contains("s3:GetObjectRetention"),
        "{}",
        stderr(&forget)
    );
    p.faults(serde_json::json!({}));
    assert_eq!(p.json(&["snapshots"]).as_array().unwrap().len(), 2);

    // the first snapshot hidden behind a delete marker (as a forget with S3's own tools does):
    // its packs are garbage, still locked, and gc must not count them freed
    let first = p.env.objects.names("snapshots/").remove(0);
    p.env.objects.delete(&first);
    let size_before = p.env.objects.size("data/");
    p.faults(strip);
    for _ in 0..2 {
        let gc = p.run(&["--json", "gc", "--safety-interval", "0s"]);
        assert_eq!(
            gc.status.code(),
            Some(1),
            "gc: {}",
            String::from_utf8_lossy(&gc.stdout)
        );
        assert!(
            stderr(&gc).contains("s3:GetObjectRetention"),
            "{}",
            stderr(&gc)
        );
        p.env.let_marks_fall_due();
    }
    let extend = p.run(&["gc", "--extend-locks-within", "3days"]);
    assert_eq!(extend.status.code(), Some(1), "{}", stderr(&extend));
    assert_eq!(
        p.env.objects.size("data/"),
        size_before,
        "packs were deleted"
    );

    // a refused lock extension is an error too
    p.faults(serde_json::json!({"rules": [
        {"action": "status", "status": 403, "method": "PUT", "path": "retention"}
    ]}));
    let extend = p.run(&["gc", "--extend-locks-within", "3days"]);
    assert_eq!(extend.status.code(), Some(1), "{}", stderr(&extend));
    assert!(
        stderr(&extend).contains("s3:PutObjectRetention"),
        "{}",
        stderr(&extend)
    );
    p.faults(serde_json::json!({}));
    p.ok(&["check", "--read-data"]);
}

/// `gc` in two processes under different host names (each in its own UTS namespace), released
/// together by a barrier file.
fn gc_pair(p: &Proxied, lease: &str) -> Vec<Output> {
    let barrier = p.env.path("go");
    let children: Vec<_> = ["host-a", "host-b"]
        .into_iter()
        .map(|host| {
            let mut gc = p.cmd(&["--json", "gc", "--safety-interval", "0s"]);
            gc.env("CAIRN_GC_LOCK_LEASE", lease);
            let mut c = Command::new("unshare");
            c.args(["--uts", "sh", "-c"])
                .arg(r#"hostname "$0" && b=$1 && shift && while [ ! -e "$b" ]; do sleep 0.005; done && exec "$@""#)
                .arg(host)
                .arg(&barrier)
                .arg(gc.get_program())
                .args(gc.get_args())
                .env_clear()
                .envs(gc.get_envs().filter_map(|(k, v)| Some((k, v?))))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    std::fs::write(&barrier, b"").unwrap();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// A repository with garbage for gc, whose snapshot listings the proxy delays so that a gc
/// run lasts a while.
fn gc_race_repo() -> Option<Proxied> {
    let p = proxied(false, &[])?;
    let src = dir_with(&p.env, "src", 200_000, &[("a", 1)]);
    p.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("a"), noise(9, 200_000)).unwrap();
    p.ok(&["backup", src.to_str().unwrap()]);
    p.ok(&["forget", "--keep-last", "1"]);
    Some(p)
}

const SLOW_SNAPSHOT_LISTING: &str = "list-type=2.*snapshots";

#[test]
fn two_gc_runs_started_together_never_both_run() {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        eprintln!("no S3 test server (AWS_ENDPOINT_URL unset): run scripts/test.sh");
        return;
    }
    let trials: Vec<_> = (0..6)
        .map(|trial| {
            std::thread::spawn(move || {
                let p = gc_race_repo().unwrap();
                // odd trials: a store that ignores If-None-Match (the proxy drops it)
                let ignores = trial % 2 == 1;
                let mut rules = vec![serde_json::json!(
                    {"action": "delay", "seconds": 2.0, "method": "GET", "path": SLOW_SNAPSHOT_LISTING}
                )];
                if ignores {
                    rules.push(serde_json::json!(
                        {"action": "strip_request", "method": "PUT", "headers": ["If-None-Match"]}
                    ));
                }
                p.faults(serde_json::json!({ "rules": rules }));
                let outs = gc_pair(&p, "600");
                let ran = outs.iter().filter(|o| o.status.success()).count();
                let why: Vec<_> = outs.iter().map(stderr).collect();
                if ignores {
                    assert_eq!(ran, 0, "trial {trial}: {why:?}");
                    assert!(why.iter().all(|w| w.contains("ignores create-only puts")), "{why:?}");
                } else {
                    assert_eq!(ran, 1, "trial {trial}: {why:?}");
                    assert!(why.iter().any(|w| w.contains("another gc holds")), "{why:?}");
                }
                assert!(outs.iter().all(|o| o.status.code() != Some(0) || o.status.success()));
                p.faults(serde_json::json!({}));
                p.ok(&["check", "--read-data"]);
            })
        })
        .collect();
    for t in trials {
        t.join().unwrap();
    }
}

#[test]
fn a_gc_lock_is_abandoned_only_when_its_refresh_is_overdue() {
    let Some(p) = gc_race_repo() else { return };
    // another host's lock taken two days ago, refreshed just now: held
    let planted = serde_json::json!({
        "host": "elsewhere", "pid": 1, "nonce": "x",
        "time": (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339(),
    });
    p.env
        .objects
        .write("locks/gc", planted.to_string().into_bytes());
    let mut gc = p.cmd(&["gc"]);
    gc.env("CAIRN_GC_LOCK_LEASE", "3");
    let out = gc.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another gc holds"),
        "{}",
        stderr(&out)
    );
    // once its refresh is overdue, it is abandoned
    std::thread::sleep(std::time::Duration::from_secs(4));
    let out = gc.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // a gc that runs longer than the lease keeps its lock by refreshing it
    p.faults(serde_json::json!({"rules": [
        {"action": "delay", "seconds": 5.0, "method": "GET", "path": SLOW_SNAPSHOT_LISTING}
    ]}));
    let mut long = p.cmd(&["gc"]);
    long.env("CAIRN_GC_LOCK_LEASE", "2");
    let long = long.stdout(std::process::Stdio::null()).spawn().unwrap();
    while !p.env.objects.exists("locks/gc") {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut second = p.cmd(&["gc"]);
    second.env("CAIRN_GC_LOCK_LEASE", "2");
    let second = second.output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another gc holds"),
        "{}",
        stderr(&second)
    );
    assert!(long.wait_with_output().unwrap().status.success());
    p.faults(serde_json::json!({}));
    p.ok(&["check", "--read-data"]);
}

#[test]
fn gc_removes_the_staging_files_of_killed_uploads_to_a_folder() {
    let env = Env::new();
    if env.repo.starts_with("s3:") {
        return; // staging files are a folder's
    }
    let src = dir_with(&env, "src", 100_000, &[("a", 1)]);
    env.backup(&[&src]);
    let repo = Path::new(&env.repo);
    let pack = all_files(&repo.join("data")).remove(0);
    // what a backup killed while writing a pack leaves: an hour old, and one being written
    let old = std::path::PathBuf::from(format!("{}#3", pack.display()));
    let fresh = repo.join("index").join("0123#17");
    std::fs::write(&old, b"half a pack").unwrap();
    std::fs::write(&fresh, b"half a segment").unwrap();
    let hour_ago = chrono::Utc::now().timestamp() - 3700;
    set_mtime(&old, hour_ago, 0);
    env.ok(&["gc"]);
    assert!(!old.exists(), "the old staging file stayed");
    assert!(
        fresh.exists(),
        "a staging file still being written was removed"
    );
    env.assert_intact();
}

/// Multipart uploads that a killed writer left open cost storage for ever unless aborted: gc
/// aborts those that no running writer may still complete (a writer's session covers the
/// uploads it began), and leaves the others.
#[test]
fn gc_aborts_the_multipart_uploads_a_killed_writer_left_open() {
    let Some(p) = proxied(false, &[]) else {
        return;
    };
    let uploads_aborted = || {
        let out = p.ok(&["--json", "gc"]);
        let report = json_result(out.as_bytes());
        report["uploads_aborted"].clone()
    };
    let pack = format!("data/ab/{}", "ab".repeat(32));
    p.env.objects.leave_upload_open(&pack);
    assert_eq!(uploads_aborted(), 1);
    assert_eq!(uploads_aborted(), 0, "aborted: no longer listed");

    // a running writer's upload is left alone until its session ends
    let session = format!("sessions/{}", "cd".repeat(32));
    let started = chrono::Utc::now() - chrono::Duration::seconds(30);
    let file = serde_json::json!({"host": "elsewhere", "pid": 1, "command": "backup",
        "started": started.to_rfc3339(), "lease_secs": 900});
    p.env
        .objects
        .write(&session, serde_json::to_vec(&file).unwrap());
    p.env.objects.leave_upload_open(&pack);
    assert_eq!(uploads_aborted(), 0, "its writer still runs");
    p.env.objects.delete(&session);
    assert_eq!(uploads_aborted(), 1);
    p.ok(&["check", "--read-data"]);
}
