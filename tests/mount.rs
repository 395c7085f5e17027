//! `cairn mount` through the real binary and real FUSE: the views (`snapshots/`, `latest`,
//! `hosts/`, `tags/`, `ids/`), every file byte for byte and its metadata as backed up, reads at
//! random offsets, a snapshot made while mounted, a damaged pack (EIO, never wrong bytes),
//! bad mount points, and a clean unmount on SIGTERM.

mod common;

use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A running `cairn mount`. Dropping it (a failing test) unmounts and kills it, so that no
/// stale mount is left behind.
struct Mounted {
    child: Child,
    at: PathBuf,
}

/// Whether something is mounted at `at` (by /proc/mounts).
fn is_mounted(at: &Path) -> bool {
    let at = at.to_str().unwrap();
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(at))
}

/// Waits, a minute at most, until `ready` holds; panics with `what` otherwise.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: still not so after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Mounted {
    /// Mounts `env`'s repository at `at` (made if missing) with `args`, and waits until the
    /// mount is live.
    fn start(env: &Env, at: &Path, args: &[&str]) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let at = at.canonicalize().unwrap();
        let mut all = vec!["mount", at.to_str().unwrap()];
        all.extend_from_slice(args);
        let child = env.cmd(&all).stderr(Stdio::piped()).spawn().unwrap();
        let mut m = Mounted { child, at };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(is_mounted(&m.at) && m.at.join("snapshots").is_dir()) {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!(
                    "cairn mount ended ({status}) before the mount was live: {}",
                    m.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the mount at {} is not live after 60 s",
                m.at.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut s).unwrap();
        }
        s
    }

    /// Stops the mount as an operator would (SIGTERM); returns its exit code and messages,
    /// having checked that nothing is mounted any more.
    fn stop(mut self) -> (Option<i32>, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "cairn mount still runs 60 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let err = self.stderr();
        assert!(
            !is_mounted(&self.at),
            "still mounted after cairn exited: {err}"
        );
        (status.code(), err)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.at) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.at)
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A source tree with a large file of several chunks, small files, a symlink, a hard-link
/// pair, a FIFO, odd modes, an xattr, owners (as root) and times with nanoseconds.
fn source(env: &Env) -> PathBuf {
    use std::fs;
    let src = env.path("src");
    fs::create_dir_all(src.join("dir/deeper")).unwrap();
    fs::create_dir(src.join("sticky")).unwrap();
    fs::write(src.join("big.bin"), noise(11, 24 * 1024 * 1024 + 4321)).unwrap();
    fs::write(src.join("dir/small.txt"), "small file\n".repeat(30)).unwrap();
    fs::write(src.join("dir/deeper/empty"), b"").unwrap();
    fs::write(src.join("setuid.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("setuid.sh"), fs::Permissions::from_mode(0o4751)).unwrap();
    fs::write(src.join("private"), b"secret-ish").unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("dir/small.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("dangling")).unwrap();
    fs::write(src.join("hard-a"), b"one file, two names").unwrap();
    fs::hard_link(src.join("hard-a"), src.join("dir/hard-b")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    xattr::set(src.join("dir/small.txt"), "user.note", b"kept").unwrap();
    if is_root() {
        nix::unistd::chown(&src.join("private"), Some(1234.into()), Some(5678.into())).unwrap();
    }
    for (i, p) in all_entries(&src).iter().rev().enumerate() {
        set_mtime(p, 1_500_000_000 + i as i64 * 777, 987_654_321 - i as i64);
    }
    set_mtime(&src, 1_400_000_000, 5);
    src
}

/// The names in folder `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

fn link_target(p: &Path) -> String {
    std::fs::read_link(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .display()
        .to_string()
}

/// `<time>_<short id>`: the folder name of snapshot `s` (from `snapshots --json`).
fn folder_name(s: &serde_json::Value) -> String {
    let time: chrono::DateTime<chrono::Utc> = s["time"].as_str().unwrap().parse().unwrap();
    format!(
        "{}_{}",
        time.format("%Y-%m-%dT%H:%M:%SZ"),
        s["short_id"].as_str().unwrap()
    )
}

#[test]
fn every_snapshot_is_browsable_with_its_bytes_and_metadata_as_backed_up() {
    let env = Env::new();
    let src = source(&env);
    let s = src.to_str().unwrap();
    env.ok(&["backup", s, "--tag", "first"]);
    env.ok(&["backup", s, "--tag", "second,nightly"]);
    let snaps = env.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    let (older, newer) = (folder_name(&snaps[0]), folder_name(&snaps[1]));
    let host = snaps[1]["host"].as_str().unwrap();

    let mnt = Mounted::start(&env, &env.path("mnt"), &[]);
    let root = mnt.at.clone();
    assert_eq!(names(&root), ["hosts", "ids", "snapshots", "tags"]);
    let mut expected = vec![older.clone(), newer.clone(), "latest".into()];
    expected.sort();
    assert_eq!(names(&root.join("snapshots")), expected);
    assert_eq!(link_target(&root.join("snapshots/latest")), newer);
    assert_eq!(names(&root.join("hosts")), [host]);
    assert_eq!(names(&root.join(format!("hosts/{host}"))), expected);
    assert_eq!(
        link_target(&root.join(format!("hosts/{host}/latest"))),
        format!("../../snapshots/{newer}")
    );
    assert_eq!(names(&root.join("tags")), ["first", "nightly", "second"]);
    let mut first = vec![older.clone(), "latest".into()];
    first.sort();
    assert_eq!(names(&root.join("tags/first")), first);
    assert_eq!(
        link_target(&root.join(format!("tags/nightly/{newer}"))),
        format!("../../snapshots/{newer}")
    );
    let short = snaps[0]["short_id"].as_str().unwrap();
    assert_eq!(
        link_target(&root.join(format!("ids/{short}"))),
        format!("../snapshots/{older}")
    );
    // through the links, as a user would go
    assert_eq!(
        names(&root.join(format!("tags/first/{older}"))),
        ["src"],
        "a snapshot's folder holds the path backed up"
    );

    // every entry, byte for byte and with its metadata, in both snapshots
    let with_owner = is_root();
    for view in [
        root.join("snapshots/latest/src"),
        root.join(format!("tags/first/{older}/src")),
    ] {
        assert_eq!(describe(&src, with_owner), describe(&view, with_owner));
        for entry in all_entries(&src) {
            let rel = entry.strip_prefix(&src).unwrap();
            assert_eq!(
                describe(&entry, with_owner),
                describe(&view.join(rel), with_owner),
                "{}",
                rel.display()
            );
        }
        assert_eq!(names(&src), names(&view));
        // the hard-link pair is one file in the mount too
        let (a, b) = (view.join("hard-a"), view.join("dir/hard-b"));
        assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
        assert_eq!(a.metadata().unwrap().nlink(), 2);
    }

    // random offsets and lengths, across blob boundaries and past the end
    let want = std::fs::read(src.join("big.bin")).unwrap();
    let file = std::fs::File::open(root.join("snapshots/latest/src/big.bin")).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = (x % (want.len() as u64 + 1000)) as usize;
        let len = 1 + ((x >> 32) % (3 << 20)) as usize;
        let mut got = vec![0; len];
        let n = file.read_at(&mut got, offset as u64).unwrap();
        let end = (offset + len).min(want.len()).max(offset.min(want.len()));
        assert_eq!(n, end - offset.min(end), "bytes read at {offset}+{len}");
        assert!(
            got[..n] == want[offset.min(end)..end],
            "bytes at {offset}+{len} differ"
        );
    }

    // read-only, devices and setuid bits inert, the stored permissions checked by the kernel
    let refused = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("snapshots/latest/src/private"));
    assert_eq!(refused.unwrap_err().raw_os_error(), Some(nix::libc::EROFS));
    let created = std::fs::write(root.join("snapshots/new"), b"x");
    assert_eq!(created.unwrap_err().raw_os_error(), Some(nix::libc::EROFS));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == root.to_str())
        .unwrap();
    let options: Vec<&str> = line.split(' ').nth(3).unwrap().split(',').collect();
    for option in ["ro", "nosuid", "nodev", "default_permissions"] {
        assert!(options.contains(&option), "{option} missing: {line}");
    }

    // a snapshot made while mounted shows up on a later listing, its new data readable
    std::fs::write(src.join("added later"), noise(12, 300_000)).unwrap();
    let third = env.backup(&[&src]);
    let third = &third[..8];
    wait_for("the new snapshot is listed", || {
        names(&root.join("snapshots"))
            .iter()
            .any(|n| n.ends_with(third))
    });
    assert_eq!(
        std::fs::read(root.join("snapshots/latest/src/added later")).unwrap(),
        noise(12, 300_000)
    );

    // filters select the snapshots shown, in a second mount beside the first
    let tagged = Mounted::start(
        &env,
        &env.path("mnt-tagged"),
        &["--tag", "first", "--allow-other"],
    );
    let mut only = vec![older.clone(), "latest".into()];
    only.sort();
    assert_eq!(names(&tagged.at.join("snapshots")), only);
    // only the user who mounted reads a mount, unless it is mounted with --allow-other
    if is_root() {
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let list_as_nobody = |dir: &Path| {
            std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg("ls")
                .arg(dir.join("snapshots"))
                .output()
                .unwrap()
        };
        let denied = list_as_nobody(&root);
        assert!(!denied.status.success(), "another user read the mount");
        let allowed = list_as_nobody(&tagged.at);
        assert!(allowed.status.success(), "{}", stderr(&allowed));
        assert!(String::from_utf8_lossy(&allowed.stdout).contains(&older));
    }
    let (code, err) = tagged.stop();
    assert_eq!(code, Some(0), "{err}");

    let (code, err) = mnt.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("unmounted"), "{err}");
    assert!(
        names(&root).is_empty(),
        "the mount point is the empty folder it was"
    );
}

#[test]
fn a_damaged_pack_fails_reads_with_eio_and_never_gives_wrong_bytes() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir(&src).unwrap();
    let want = noise(21, 24 * 1024 * 1024);
    std::fs::write(src.join("big.bin"), &want).unwrap();
    env.backup(&[&src]);
    // one byte flipped in the middle of the largest data pack
    let pack = env
        .objects
        .names("data")
        .into_iter()
        .max_by_key(|n| env.objects.read(n).len())
        .unwrap();
    let mut bytes = env.objects.read(&pack);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    env.objects.write(&pack, bytes);

    let mnt = Mounted::start(&env, &env.path("mnt"), &[]);
    let path = mnt.at.join("snapshots/latest/src/big.bin");
    assert_eq!(path.metadata().unwrap().len(), want.len() as u64);
    let whole = std::fs::read(&path);
    assert_eq!(
        whole.as_ref().map_err(|e| e.raw_os_error()).err(),
        Some(Some(nix::libc::EIO)),
        "reading the whole file fails"
    );
    // piece by piece: each read gives the right bytes or EIO
    let file = std::fs::File::open(&path).unwrap();
    let (mut good, mut failed, mut at) = (0usize, 0usize, 0usize);
    const PIECE: usize = 256 * 1024;
    while at < want.len() {
        let mut got = vec![0; PIECE];
        match file.read_at(&mut got, at as u64) {
            Ok(0) => panic!("end of file at {at} of {}", want.len()),
            Ok(n) => {
                assert!(got[..n] == want[at..at + n], "wrong bytes at {at}+{n}");
                good += n;
                at += n;
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(nix::libc::EIO), "at {at}: {e}");
                failed += 1;
                at = (at / PIECE + 1) * PIECE;
            }
        }
    }
    assert!(failed > 0, "no read failed");
    assert!(good > 0, "the intact blobs are readable");
    let (code, err) = mnt.stop();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("/src/big.bin") && err.contains("damaged"),
        "names the file and the damage: {err}"
    );
}

#[test]
fn a_mount_point_that_is_missing_a_file_or_not_empty_is_refused() {
    let env = Env::new();
    let file = env.path("file");
    std::fs::write(&file, b"x").unwrap();
    let full = env.path("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), b"x").unwrap();
    for (at, says) in [
        (env.path("missing"), "does not exist"),
        (file, "is not a folder"),
        (full, "is not empty"),
    ] {
        let out = env.run(&["mount", at.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!is_mounted(&at));
    }
}
