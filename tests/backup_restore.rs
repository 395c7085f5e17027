//! Backup and restore through the real binary: every entry kind comes back field by field,
//! deduplication works, nothing readable leaks into the repository, restore never overwrites.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

#[test]
fn full_tree_round_trip_field_by_field() {
    let env = Env::new();
    let src = env.path("src");
    make_full_tree(&src);
    let out = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(out["errors"].as_array().unwrap().len(), 0, "{out}");
    let id = out["snapshot_id"].as_str().unwrap();

    let target = env.path("restored");
    env.ok(&["restore", id, "--target", target.to_str().unwrap()]);
    let restored = target.join("src");
    let diffs = diff_trees(&src, &restored, is_root());
    assert!(diffs.is_empty(), "restore differs:\n{}", diffs.join("\n"));

    // the hard link is one file again
    let (a, b) = (
        restored.join("hard-a").metadata().unwrap(),
        restored.join("docs/hard-b").metadata().unwrap(),
    );
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    // holes stay holes: far fewer blocks than bytes
    let sparse = restored.join("sparse.img").metadata().unwrap();
    assert_eq!(sparse.len(), 82 << 20);
    assert!(
        sparse.blocks() * 512 < 8 << 20,
        "sparse file restored with {} blocks",
        sparse.blocks()
    );
    // the root folder's own metadata comes back too
    assert_eq!(describe(&src, is_root()), describe(&restored, is_root()));

    // a scratch restore that does not wait for the disk gives the same tree, and the log says
    // how long a restore waited for its flush
    let scratch = env.path("scratch");
    let out = env.run(&[
        "-v",
        "--log-format",
        "json",
        "restore",
        id,
        "--no-flush",
        "--target",
        scratch.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let diffs = diff_trees(&src, &scratch.join("src"), is_root());
    assert!(diffs.is_empty(), "restore differs:\n{}", diffs.join("\n"));
    let done: serde_json::Value = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| l["fields"]["message"] == "restore done")
        .expect("a 'restore done' log line");
    assert!(done["fields"]["flush_seconds"].as_f64().is_some(), "{done}");
}

#[test]
fn socket_is_skipped_with_a_warning_and_unreadable_files_exit_3() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let out = env.run(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("socket left out"), "{}", stderr(&out));

    // an unreadable file (as root, the backup runs as nobody so that permissions apply)
    std::fs::write(src.join("locked.txt"), b"no").unwrap();
    std::fs::set_permissions(
        src.join("locked.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let out = env
        .cmd_unprivileged(&["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("locked.txt"), "{}", stderr(&out));
}

/// Folders near the root are walked on several threads: what the backup reports (errors,
/// entries left out, counts) must still be complete and in the order of the tree.
#[test]
fn a_walk_on_several_threads_reports_in_tree_order() {
    let env = Env::new();
    let src = env.path("src");
    let mut sockets = vec![];
    let mut locked = vec![];
    for a in 0..6 {
        for b in 0..5 {
            let dir = src.join(format!("d{a}/e{b}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..20 {
                std::fs::write(dir.join(format!("f{f:02}")), format!("{a} {b} {f}")).unwrap();
            }
            let file = dir.join("locked");
            std::fs::write(&file, b"no").unwrap();
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o000))
                .unwrap();
            locked.push(file);
            sockets.push(std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap());
        }
    }
    let mut backup = env.cmd_unprivileged(&["--json", "backup", src.to_str().unwrap()]);
    let out = backup.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().split(": ").next().unwrap().to_owned())
            .collect()
    };
    let expected: Vec<String> = locked.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(paths("errors"), expected, "{report}");
    let expected: Vec<String> = expected
        .iter()
        .map(|p| p.replace("/locked", "/sock"))
        .collect();
    assert_eq!(paths("skipped"), expected, "{report}");
    let summary = &report["summary"];
    assert_eq!(summary["files"], 6 * 5 * 20, "{report}");
    assert_eq!(summary["dirs"], 1 + 6 + 6 * 5, "{report}");
    assert_eq!(summary["errors"], 6 * 5, "{report}");
    drop(sockets);
}

/// `cmd` run with at most `limit` open files (soft and hard: the backup cannot raise it).
fn with_open_file_limit(mut cmd: std::process::Command, limit: u64) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let rlimit = nix::libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit is async-signal-safe and only reads `rlimit`
    unsafe {
        cmd.pre_exec(
            move || match nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &rlimit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            },
        );
    }
    cmd.output().unwrap()
}

/// Makes `depth` nested folders `d` below `root`, with a file at the bottom.
fn deep_branch(root: &std::path::Path, depth: usize) {
    let bottom: std::path::PathBuf = std::iter::repeat_n("d", depth).collect();
    std::fs::create_dir_all(root.join(&bottom)).unwrap();
    std::fs::write(root.join(bottom).join("bottom"), root.to_str().unwrap()).unwrap();
}

/// Each walking thread holds a descriptor per folder of the chain it walks down: a backup walks
/// on no more threads than its open-file limit lets hold them, and running out of descriptors
/// fails it (with what to do) instead of storing the folders it could not open as empty.
#[test]
fn the_walk_fits_the_open_file_limit_or_fails_saying_so() {
    let env = Env::new();
    let src = env.path("src");
    deep_branch(&src.join("a"), 400);
    deep_branch(&src.join("b"), 400);
    let out = with_open_file_limit(env.cmd(&["--json", "backup", src.to_str().unwrap()]), 700);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["dirs"], 1 + 2 * 401, "{report}");
    let restored = env.path("restored");
    env.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    for branch in ["a", "b"] {
        let bottom: std::path::PathBuf = std::iter::repeat_n("d", 400).collect();
        let file = restored
            .join("src")
            .join(branch)
            .join(bottom)
            .join("bottom");
        assert!(file.is_file(), "{} was not restored", file.display());
    }

    // deeper than the limit allows even on one thread
    let deep = env.path("deep");
    deep_branch(&deep, 600);
    let out = with_open_file_limit(env.cmd(&["backup", deep.to_str().unwrap()]), 400);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("raise the open-file limit"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unchanged_data_adds_almost_nothing_and_dedups_across_paths() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("f{i}")), noise(i, 300_000)).unwrap();
    }
    std::fs::write(src.join("big"), noise(99, 20 << 20)).unwrap();
    env.backup(&[&src]);
    let first = env.repo_size();
    let second = env.json(&["backup", src.to_str().unwrap()]);
    let grown = env.repo_size() - first;
    assert_eq!(second["summary"]["new_blobs"], 0, "{second}");
    assert!(grown < 4096, "unchanged re-backup added {grown} bytes");

    // a copy of the data elsewhere (another "host" path) dedups too
    let copy = env.path("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(src.join("big"), copy.join("big-again")).unwrap();
    let third = env.json(&["backup", "--host", "other", copy.to_str().unwrap()]);
    assert_eq!(
        third["summary"]["new_blobs"], 2,
        "only the new folder's tree and root tree: {third}"
    );
    // and the repository is hardly larger than the data (random data does not compress)
    let data = 20 * 300_000 + (20 << 20);
    assert!(
        env.repo_size() < data + data / 100 + 65536,
        "repo {} bytes for {data}",
        env.repo_size()
    );
}

#[test]
fn nothing_readable_in_the_repository() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(
        src.join("unmistakable-file-name.txt"),
        "UNMISTAKABLE-CONTENT-MARKER ".repeat(1000),
    )
    .unwrap();
    std::fs::create_dir(src.join("unmistakable-dir-name")).unwrap();
    env.backup(&[&src]);
    for f in env.objects.names("") {
        let bytes = env.objects.read(&f);
        for needle in [
            &b"unmistakable"[..],
            b"UNMISTAKABLE",
            b"CONTENT-MARKER",
            src.to_str().unwrap().as_bytes(),
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{f} contains {:?} in clear",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn restore_never_overwrites_unless_asked_and_include_selects() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("a/b/one"), b"one").unwrap();
    std::fs::write(src.join("a/two"), b"two").unwrap();
    std::fs::write(src.join("three"), b"three").unwrap();
    let id = env.backup(&[&src]);
    let target = env.path("t");
    let t = target.to_str().unwrap();

    env.ok(&["restore", &id, "--target", t, "--include", "src/a/b"]);
    assert_eq!(std::fs::read(target.join("src/a/b/one")).unwrap(), b"one");
    assert!(!target.join("src/a/two").exists());
    assert!(!target.join("src/three").exists());

    std::fs::write(target.join("src/a/b/one"), b"changed locally").unwrap();
    let again = env.json(&["restore", &id, "--target", t]);
    let skipped: Vec<&str> = again["outcome"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["/src/a/b/one"]);
    assert_eq!(
        std::fs::read(target.join("src/a/b/one")).unwrap(),
        b"changed locally"
    );
    assert_eq!(std::fs::read(target.join("src/three")).unwrap(), b"three");

    env.ok(&["restore", &id, "--target", t, "--overwrite"]);
    assert_eq!(std::fs::read(target.join("src/a/b/one")).unwrap(), b"one");

    let missing = env.run(&["restore", &id, "--target", t, "--include", "src/nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("not in this snapshot"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn restore_does_not_follow_a_symlink_planted_in_the_target() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/file"), b"data").unwrap();
    let id = env.backup(&[&src]);
    let target = env.path("t");
    let outside = env.path("outside");
    std::fs::create_dir_all(target.join("src")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("src/dir")).unwrap();
    let out = env.json(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_eq!(out["outcome"]["skipped"][0], "/src/dir");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through the symlink"
    );
}

#[test]
fn snapshots_ls_and_cat_show_what_was_stored() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/file.txt"), b"12345").unwrap();
    let id = env.backup(&[&src]);
    env.ok(&[
        "backup",
        "--tag",
        "daily",
        "--host",
        "node-1",
        src.to_str().unwrap(),
    ]);

    let snaps = env.json(&["snapshots"]);
    let arr = snaps.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], id.as_str());
    assert_eq!(arr[1]["host"], "node-1");
    assert_eq!(arr[1]["tags"][0], "daily");
    assert_eq!(arr[1]["summary"]["files"], 1);
    assert_eq!(arr[1]["paths"][0], src.to_str().unwrap());

    let ls = env.json(&["ls", "latest", "src/sub"]);
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/src/sub", "/src/sub/file.txt"]);
    assert_eq!(ls[1]["size"], 5);
    let long = env.ok(&["ls", "-l", &id[..8]]);
    assert!(
        long.contains("-rw-r--r--") && long.contains("/src/sub/file.txt"),
        "{long}"
    );

    let cfg = env.json(&["cat", "config"]);
    assert_eq!(cfg["version"], cairn_engine::format::config::FORMAT_VERSION);
    assert_eq!(cfg["chunker"]["avg_size"], 1 << 20);
    assert_eq!(
        cfg["keep_within_secs"],
        720 * 3600,
        "the default retention is 720 h"
    );
    let custom = Env::empty();
    custom.ok(&["init", "--keep-within", "7days", "--compression", "0"]);
    let cfg = custom.json(&["cat", "config"]);
    assert_eq!(
        (
            cfg["keep_within_secs"].as_u64(),
            cfg["compression_level"].as_i64()
        ),
        (Some(7 * 86400), Some(0))
    );
    let snap = env.json(&["cat", "snapshot", &id[..10]]);
    assert_eq!(snap["id"], id.as_str());
}

#[test]
fn deleting_the_cache_changes_nothing_but_speed() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), noise(5, 3 << 20)).unwrap();
    let id = env.backup(&[&src]);
    std::fs::remove_dir_all(&env.cache).unwrap();
    let t1 = env.path("t1");
    env.ok(&["restore", &id, "--target", t1.to_str().unwrap()]);
    assert!(diff_trees(&src, &t1.join("src"), true).is_empty());
    // a second backup after losing the cache still deduplicates
    std::fs::remove_dir_all(&env.cache).unwrap();
    let again = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(again["summary"]["new_blobs"], 0);
}

#[test]
fn unchanged_files_are_not_read_again() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("sub/f{i}")), noise(i, 10_000)).unwrap();
    }
    let first = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(first["summary"]["files_new"], 5);
    std::fs::write(src.join("sub/f0"), noise(100, 10_000)).unwrap();
    std::fs::write(src.join("added"), b"new").unwrap();
    let second = env.json(&["backup", src.to_str().unwrap()]);
    let s = &second["summary"];
    assert_eq!(
        (
            s["files_new"].as_u64(),
            s["files_changed"].as_u64(),
            s["files_unmodified"].as_u64()
        ),
        (Some(1), Some(1), Some(4)),
        "{s}"
    );
    let snap = env.json(&["cat", "snapshot", second["snapshot_id"].as_str().unwrap()]);
    assert_eq!(snap["parent"], first["snapshot_id"]);
    // --force reads everything; another host does not count as a parent
    let forced = env.json(&["backup", "--force", src.to_str().unwrap()]);
    assert_eq!(forced["summary"]["files_unmodified"], 0);
    let other = env.json(&["backup", "--host", "elsewhere", src.to_str().unwrap()]);
    assert_eq!(other["summary"]["files_new"], 6);
    // the reused content restores correctly
    let t = env.path("t");
    env.ok(&[
        "restore",
        second["snapshot_id"].as_str().unwrap(),
        "--target",
        t.to_str().unwrap(),
    ]);
    assert!(diff_trees(&src, &t.join("src"), true).is_empty());
}

/// Appends a block to a file every millisecond on a thread, until stopped.
struct Appender {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Appender {
    fn start(path: &std::path::Path) -> Appender {
        use std::io::Write;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seed = 1000;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                file.write_all(&noise(seed, 4096)).unwrap();
                seed += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        Appender { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

#[test]
fn a_file_written_while_read_exits_3_and_the_next_backup_reads_it_again() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("steady.txt"), b"steady").unwrap();
    let growing = src.join("growing.log");
    std::fs::write(&growing, noise(1, 32 << 20)).unwrap();
    let src_arg = src.to_str().unwrap();

    // The writer appends every millisecond for the whole run, so some append falls within the
    // read of the 32 MiB file unless the writer is not scheduled at all meanwhile; a few
    // attempts make that moot (a backup that notices nothing exits 0 and is tried again).
    let mut first = None;
    for attempt in 1..=5 {
        let writer = Appender::start(&growing);
        let out = env.run(&["--json", "backup", src_arg]);
        writer.stop();
        match out.status.code() {
            Some(3) => {
                first = Some(out);
                break;
            }
            Some(0) => eprintln!("attempt {attempt}: no append during the read; again"),
            _ => panic!("backup failed: {}", stderr(&out)),
        }
    }
    let first = first.expect("5 backups of a file appended to all along: none reported it");
    let (result, _) = checked_result("backup", &first.stdout);
    let errors = result["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{result}");
    let error = errors[0].as_str().unwrap();
    assert!(
        error.starts_with(&format!("{}: changed while", growing.display())),
        "{error}"
    );
    assert!(
        stderr(&first).contains("back up again"),
        "{}",
        stderr(&first)
    );
    let first_id = result["snapshot_id"].as_str().unwrap();

    // what was stored is what was read: the file as listed, a prefix of what it became
    let grown = std::fs::read(&growing).unwrap();
    let t1 = env.path("t1");
    env.ok(&["restore", first_id, "--target", t1.to_str().unwrap()]);
    let stored = std::fs::read(t1.join("src/growing.log")).unwrap();
    assert!(stored.len() >= 32 << 20, "{} bytes stored", stored.len());
    assert!(grown.len() > stored.len() && grown.starts_with(&stored));

    // the writer has stopped: a backup with the first as parent reads the file again
    let second = env.json(&["backup", "--parent", first_id, src_arg]);
    assert_eq!(second["errors"], serde_json::json!([]), "{second}");
    let s = &second["summary"];
    assert_eq!(
        (s["files_changed"].as_u64(), s["files_unmodified"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let t2 = env.path("t2");
    let second_id = second["snapshot_id"].as_str().unwrap();
    env.ok(&["restore", second_id, "--target", t2.to_str().unwrap()]);
    assert!(std::fs::read(t2.join("src/growing.log")).unwrap() == grown);
}

#[test]
fn an_unreadable_folder_is_named_and_kept_and_the_rest_is_backed_up() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("locked/inner")).unwrap();
    std::fs::write(src.join("locked/inner/secret.txt"), b"hidden").unwrap();
    std::fs::create_dir(src.join("open")).unwrap();
    std::fs::write(src.join("open/file.txt"), b"readable").unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    std::fs::set_permissions(src.join("locked"), PermissionsExt::from_mode(0o000)).unwrap();

    // as root, the backup runs as nobody so that the folder's permissions apply
    let out = env
        .cmd_unprivileged(&["backup", src.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let named = format!("error: {}: cannot list", src.join("locked").display());
    assert!(stderr(&out).contains(&named), "{}", stderr(&out));

    // the folder itself is in the snapshot, empty; everything else is there
    assert_eq!(
        env.ls_paths("latest"),
        [
            "/src",
            "/src/locked",
            "/src/open",
            "/src/open/file.txt",
            "/src/top.txt"
        ]
    );
    let target = env.path("t");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = target.join("src");
    assert_eq!(
        std::fs::read(restored.join("open/file.txt")).unwrap(),
        b"readable"
    );
    assert_eq!(std::fs::read(restored.join("top.txt")).unwrap(), b"top");
    let locked = restored.join("locked").symlink_metadata().unwrap();
    assert!(locked.is_dir());
    assert_eq!(locked.mode() & 0o7777, 0o000);
    assert_eq!(
        std::fs::read_dir(restored.join("locked")).unwrap().count(),
        0
    );
}

/// `--limit-upload` and `--limit-download` (KiB/s) hold a backup and a restore to their rate:
/// 1 MiB of incompressible data through a limit of 256 KiB/s, which lets one second's worth
/// pass at once, cannot take less than 3 s, however fast the machine (a lower bound only: the
/// test never fails for being slow).
#[test]
fn bandwidth_limits_hold_backup_and_restore_to_their_rate() {
    let env = Env::new();
    let src = dir_with(&env, "src", 1 << 20, &[("a", 7)]);
    let started = std::time::Instant::now();
    let out = env
        .cmd(&[
            "-v",
            "--json",
            "--limit-upload",
            "256",
            "backup",
            src.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let logs = stderr(&out);
    let id = json_result(&out.stdout)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        logs.contains("bandwidth limited") && logs.contains("upload_kib_per_s=256"),
        "{logs}"
    );
    assert!(
        !logs.contains('\x1b'),
        "colour codes in logs that go to no terminal: {logs}"
    );
    assert!(
        elapsed >= std::time::Duration::from_secs(3),
        "1 MiB went up in {elapsed:?} under 256 KiB/s"
    );

    // the environment variable, for the download side
    let target = env.path("t");
    let started = std::time::Instant::now();
    let mut restore = env.cmd(&["restore", &id, "--target", target.to_str().unwrap()]);
    restore.env("CAIRN_LIMIT_DOWNLOAD", "512");
    succeeded(&["restore"], restore.output().unwrap());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_secs(1),
        "1 MiB came down in {elapsed:?} under 512 KiB/s"
    );
    assert_eq!(
        std::fs::read(target.join("src/a")).unwrap(),
        noise(7, 1 << 20)
    );
    let bad = env.run(&["--limit-upload", "fast", "snapshots"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `backup --stdin` stores standard input as one file at the snapshot's root (mode 0644, this
/// user's, dated now), which restores byte for byte; `--stdin-from-command` stores what a
/// command prints, and a command that fails fails the backup with no snapshot saved.
#[test]
fn standard_input_and_a_commands_output_are_backed_up_as_one_file() {
    use std::io::Write;
    let env = Env::new();
    let data = noise(11, 5 << 20);
    let start = chrono::Utc::now().timestamp_nanos_opt().unwrap() - 1_000_000_000;
    let mut backup = env.cmd(&["--json", "backup", "--stdin", "--stdin-filename", "db.dump"]);
    let mut child = backup
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    let id = json_result(succeeded(&["backup", "--stdin"], out).as_bytes())["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = env.json(&["ls", &id]);
    let files: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["path"].is_string())
        .collect();
    assert_eq!(files.len(), 1, "{listed}");
    assert_eq!(files[0]["path"], "/db.dump", "{listed}");
    assert_eq!(files[0]["mode"], 0o644, "{listed}");
    assert_eq!(files[0]["uid"], nix::unistd::geteuid().as_raw(), "{listed}");
    assert!(files[0]["mtime_ns"].as_i64().unwrap() >= start, "{listed}");
    let t = env.path("t");
    env.ok(&["restore", &id, "--target", t.to_str().unwrap()]);
    assert_eq!(std::fs::read(t.join("db.dump")).unwrap(), data);

    // a command's output, under the default name; its standard error passes through
    let printed = env.ok(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "printf 'dumped\\n'; echo a warning >&2",
    ]);
    assert!(printed.contains("snapshot"), "{printed}");
    let t = env.path("t2");
    env.ok(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(std::fs::read(t.join("stdin")).unwrap(), b"dumped\n");
    let before = env.snapshot_ids();
    let failing = env.run(&[
        "backup",
        "--stdin-from-command",
        "--",
        "sh",
        "-c",
        "printf 'half a dump'; echo dump failed >&2; exit 3",
    ]);
    assert_eq!(failing.status.code(), Some(1), "{}", stderr(&failing));
    let err = stderr(&failing);
    assert!(
        err.contains("dump failed") && err.contains("exit status: 3"),
        "{err}"
    );
    assert!(err.contains("no snapshot was saved"), "{err}");
    assert_eq!(env.snapshot_ids(), before, "a snapshot was saved");
    let missing = env.run(&["backup", "--stdin-from-command", "--", "/no/such/command"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(env.snapshot_ids(), before);

    // usage errors: --stdin with paths, a name that is a path, a name without --stdin
    let src = dir_with(&env, "src", 10, &[("a", 1)]);
    for args in [
        &["backup", "--stdin", src.to_str().unwrap()][..],
        &["backup", "--stdin", "--stdin-filename", "a/b"],
        &["backup", "--stdin-filename", "x", src.to_str().unwrap()],
        &["backup", "--stdin-from-command"],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(env.snapshot_ids(), before);
}

/// `cairn init` on Azure creates the container when it does not exist yet (as restic does);
/// before it, the location is reported as holding no repository.
#[test]
fn init_creates_a_missing_azure_container() {
    if !backend::on_azure() {
        eprintln!("not the Azure run (CAIRN_TEST_AZURE unset): run scripts/test.sh");
        return;
    }
    let mut env = Env::empty();
    env.objects = Backend::azure(&backend::fresh_name(), "repo");
    env.repo = env.objects.location.clone();
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no Cairn repository"),
        "{}",
        stderr(&out)
    );
    env.ok(&["init"]);
    let src = dir_with(&env, "src", 100_000, &[("a", 1)]);
    let id = env.backup(&[&src]);
    assert_eq!(env.snapshot_ids(), vec![id]);
    assert!(env.objects.exists("config"));
}
