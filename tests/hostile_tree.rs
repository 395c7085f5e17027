//! Backups and restores as root over trees that a tenant controls, through the real binary: a
//! folder swapped for a symlink to a place outside the tree while cairn works never lets
//! anything from that place into a snapshot (backup) or anything of the snapshot into that place
//! (restore); FIFOs and device nodes are recorded as what they are and never opened.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use common::*;

/// What the files outside the tree hold: found in a snapshot, it leaked.
const MARKER: &str = "SECRET-FROM-OUTSIDE-THE-TREE";

/// A folder outside the backed-up (or restored) tree, with files named like a node's secrets
/// holding the marker. Returns its path.
fn outside(env: &Env) -> PathBuf {
    let dir = env.path("outside");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["passwd", "shadow", "hosts", "only-outside"] {
        std::fs::write(dir.join(name), format!("{MARKER} {name}\n")).unwrap();
    }
    dir
}

/// Every entry below `dir` with what it holds (a file's content, a symlink's target, a folder's
/// nothing), never following symlinks.
fn snapshot_of(dir: &Path) -> BTreeMap<PathBuf, String> {
    all_entries(dir)
        .into_iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_file() {
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
            } else if m.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("{:?}", m.file_type())
            };
            (p, what)
        })
        .collect()
}

/// A thread that swaps each `(a, b)` pair's entries (atomically, `RENAME_EXCHANGE`) in a loop
/// until `stop` is set, once `a` exists; returns how many swaps it made.
fn swapper(pairs: Vec<(PathBuf, PathBuf)>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            for (a, b) in &pairs {
                if renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).is_ok() {
                    swaps += 1;
                }
            }
            if swaps == 0 {
                std::thread::yield_now();
            }
        }
        swaps
    })
}

/// Regular files below `dir` (symlinks not followed) whose content holds the marker.
fn leaked(dir: &Path) -> Vec<String> {
    all_files(dir)
        .into_iter()
        .filter(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).contains(MARKER))
        .map(|f| f.display().to_string())
        .collect()
}

#[test]
fn a_folder_swapped_for_a_symlink_during_backups_never_lets_outside_files_in() {
    let env = Env::new();
    let outside = outside(&env);
    let vol = env.path("vol");
    let stage = env.path("stage");
    std::fs::create_dir_all(&stage).unwrap();
    let mut pairs = vec![];
    for k in 0..20 {
        let d = vol.join(format!("d{k}"));
        std::fs::create_dir_all(&d).unwrap();
        for name in ["passwd", "shadow", "hosts"] {
            std::fs::write(d.join(name), format!("harmless {name} of the volume\n")).unwrap();
        }
        let link = stage.join(format!("d{k}"));
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        pairs.push((d, link));
    }
    let before = snapshot_of(&outside);
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(pairs, stop.clone());
    let started = Instant::now();
    let mut runs = 0;
    let mut found = vec![];
    while runs < 30 && started.elapsed() < Duration::from_secs(15) && found.is_empty() {
        runs += 1;
        let out = env.run(&["--json", "backup", vol.to_str().unwrap()]);
        // entries replaced while being read are left out and reported (exit 3)
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "backup {runs}: {}\n{}",
            out.status,
            stderr(&out)
        );
        let id = json_result(&out.stdout)["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let listed = env.ls_paths(&id);
        found.extend(listed.into_iter().filter(|p| p.ends_with("/only-outside")));
        let target = env.path(&format!("restored-{runs}"));
        env.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
        found.extend(leaked(&target));
        std::fs::remove_dir_all(&target).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    assert!(swaps > 0, "the folders were never swapped");
    assert_eq!(
        found,
        Vec::<String>::new(),
        "files from outside the backed-up folder got into snapshot {runs} ({swaps} swaps)"
    );
    assert_eq!(snapshot_of(&outside), before);
}

/// Runs cairn with `args`, its output piped.
fn spawn_piped(env: &Env, args: &[&str]) -> Child {
    env.cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The output of `child` once it ends; kills it and panics if it has not ended after a minute
/// (a hang guard, not a timing assertion: a process that opened a FIFO never ends).
fn ended(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not end\n{}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn fifos_and_device_nodes_are_recorded_as_such_and_never_opened() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let env = Env::new();
    let vol = env.path("vol");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    std::fs::write(vol.join("sub/file"), b"plain").unwrap();
    let mode = Mode::from_bits_truncate(0o640);
    nix::unistd::mkfifo(&vol.join("fifo"), mode).unwrap();
    // a character device (/dev/zero's numbers: reading it never ends) and a block device
    mknod(&vol.join("zero"), SFlag::S_IFCHR, mode, makedev(1, 5))
        .expect("mknod of a character device (the tests run as root)");
    mknod(&vol.join("sub/loop"), SFlag::S_IFBLK, mode, makedev(7, 200))
        .expect("mknod of a block device (the tests run as root)");

    let child = spawn_piped(&env, &["--json", "backup", vol.to_str().unwrap()]);
    let out = ended(child, "the backup of a tree with a FIFO and devices");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = json_result(&out.stdout)["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let kinds: BTreeMap<String, String> = env
        .json(&["ls", &id])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap();
            let name = path.strip_prefix("/vol/").unwrap_or(path).to_owned();
            (name, e["type"].as_str().unwrap().to_owned())
        })
        .collect();
    for (name, kind) in [
        ("fifo", "fifo"),
        ("zero", "chardev"),
        ("sub/loop", "blockdev"),
        ("sub/file", "file"),
    ] {
        assert_eq!(kinds.get(name).map(String::as_str), Some(kind), "{kinds:?}");
    }
    // restored as what they are
    let target = env.path("restored");
    env.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
    let diffs = diff_trees(&vol, &target.join("vol"), true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_folder_swapped_for_a_symlink_during_a_restore_never_gets_anything_outside_written() {
    let env = Env::new();
    let outside = outside(&env);
    let src = env.path("src");
    for k in 0..4 {
        let d = src.join(format!("d{k}"));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for f in 0..300 {
            std::fs::write(d.join(format!("f{f}")), format!("restored {k}/{f}\n")).unwrap();
        }
        std::fs::write(d.join("sub/passwd"), b"restored passwd\n").unwrap();
        std::os::unix::fs::symlink("f0", d.join("link")).unwrap();
        std::fs::hard_link(d.join("f1"), d.join("hard")).unwrap();
        nix::unistd::mkfifo(
            &d.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    let id = env.backup(&[&src]);
    let before = snapshot_of(&outside);
    let mut written_outside = None;
    for run in 0..10 {
        let target = env.path(&format!("t{run}"));
        let stage = env.path(&format!("stage{run}"));
        std::fs::create_dir_all(&stage).unwrap();
        let mut pairs = vec![];
        for k in 0..4 {
            let link = stage.join(format!("d{k}"));
            std::os::unix::fs::symlink(&outside, &link).unwrap();
            pairs.push((target.join(format!("src/d{k}")), link));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = swapper(pairs, stop.clone());
        // errors are expected: entries vanish and appear under the restore's feet
        let out = env.run(&["restore", &id, "--target", target.to_str().unwrap()]);
        stop.store(true, Ordering::Relaxed);
        let swaps = swaps.join().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "restore {run}: {}\n{}",
            out.status,
            stderr(&out)
        );
        let now = snapshot_of(&outside);
        if now != before {
            written_outside = Some((run, swaps, now));
            break;
        }
    }
    assert_eq!(
        written_outside, None,
        "the restore wrote into the folder a symlink in the target pointed to (run, swaps, what \
         that folder then held)"
    );
}

/// A tmpfs mounted at a path for the life of the value.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "cairn-test", at.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs (the tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_mount_point_below_the_root_is_stored_as_an_empty_folder_and_a_mounted_root_whole() {
    let env = Env::new();
    let vol = env.path("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("own"), b"on the volume").unwrap();
    let mnt = vol.join("mnt");
    let _mount = Mount::tmpfs(&mnt);
    std::fs::write(mnt.join("other-fs"), b"on another file system").unwrap();

    let out = env.run(&["backup", vol.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warning = format!(
        "warning: {}: another file system is mounted here",
        mnt.display()
    );
    assert!(stderr(&out).contains(&warning), "{}", stderr(&out));
    assert_eq!(env.ls_paths("latest"), ["/vol", "/vol/mnt", "/vol/own"]);

    // named as a root, a mount point is backed up whole
    let out = env.run(&["backup", mnt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.ls_paths("latest"), ["/mnt", "/mnt/other-fs"]);
}

/// Whether a process is stopped (SIGSTOP), a zombie, or gone.
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('Z'))
    })
}

#[test]
fn a_temporary_file_replaced_by_a_fifo_during_a_restore_is_never_opened_and_made_again() {
    use nix::sys::signal::{Signal, kill};
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), noise(7, 96 << 20)).unwrap();
    std::fs::write(src.join("small"), b"small").unwrap();
    let id = env.backup(&[&src]);
    let target = env.path("t");
    let mut child = spawn_piped(
        &env,
        &["restore", &id, "--target", target.to_str().unwrap()],
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // the restore goes on in slices of about a millisecond, stopped in between, until the big
    // file's temporary name appears: then a FIFO takes that name
    loop {
        std::thread::sleep(Duration::from_millis(1));
        kill(pid, Signal::SIGSTOP).unwrap();
        while !stopped(child.id()) {
            std::thread::sleep(Duration::from_micros(100));
        }
        // the big file's, not the small one's, which may be listed first
        let partial = std::fs::read_dir(target.join("src")).ok().and_then(|d| {
            d.map(|e| e.unwrap().path()).find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".cairn-partial-")
                    && std::fs::metadata(p).unwrap().len() > 1 << 20
            })
        });
        if let Some(p) = partial {
            std::fs::rename(&p, env.path("moved-away")).unwrap();
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            kill(pid, Signal::SIGCONT).unwrap();
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the restore ended ({status}) before its temporary file was seen");
        }
        kill(pid, Signal::SIGCONT).unwrap();
    }
    let out = ended(child, "the restore whose temporary file became a FIFO");
    // the file is made once more under a new temporary name (a failed file is retried), and
    // the FIFO is gone with the temporary name it took
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let diffs = diff_trees(&src, &target.join("src"), true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_kept_file_hard_linked_to_a_file_outside_the_target_is_rewritten_and_the_outside_file_untouched()
 {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"the same bytes").unwrap();
    std::fs::set_permissions(src.join("f"), PermissionsExt::from_mode(0o644)).unwrap();
    set_mtime(&src.join("f"), 1_600_000_000, 0);
    let id = env.backup(&[&src]);
    let target = env.path("t");
    env.ok(&["restore", &id, "--target", target.to_str().unwrap()]);

    // a victim outside the target with the same bytes but its own owner, mode and times; the
    // tenant puts a hard link to it under the restored file's name
    let victim = env.path("victim");
    std::fs::write(&victim, b"the same bytes").unwrap();
    std::fs::set_permissions(&victim, PermissionsExt::from_mode(0o600)).unwrap();
    nix::unistd::chown(&victim, Some(1234.into()), Some(1234.into())).unwrap();
    set_mtime(&victim, 1_000_000_000, 0);
    let restored = target.join("src/f");
    std::fs::remove_file(&restored).unwrap();
    std::fs::hard_link(&victim, &restored).unwrap();
    let outside = || {
        let mut d = describe(&victim, true);
        d.remove("links");
        d
    };
    let before = outside();

    let out = env.run(&[
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
        "if-changed",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(outside(), before, "the file outside was changed");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().nlink(),
        1,
        "still linked"
    );
    let diffs = diff_trees(&src, &target.join("src"), true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// An access ACL giving user 4242 read and write (the kernel's binary form of `u::rw-,u:4242:rw-,g::r--,m::rw-,o::---`).
fn acl_for_4242() -> Vec<u8> {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 6, 4242),
        (0x04, 4, u32::MAX),
        (0x10, 6, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    acl
}

#[test]
fn what_the_restore_makes_sheds_the_acls_a_default_acl_on_the_target_would_give_it() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("folder")).unwrap();
    std::fs::write(src.join("file"), b"data").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("folder/inner"), b"more data").unwrap();
    std::os::unix::fs::symlink("file", src.join("link")).unwrap();
    let id = env.backup(&[&src]);

    // a tenant's folders, already there, whose default ACL gives user 4242 read and write on
    // all made in them: the restore makes folders in the first and files in the second
    let target = env.path("t");
    let restored = target.join("src");
    std::fs::create_dir_all(restored.join("folder")).unwrap();
    for folder in [&target, &restored] {
        xattr::set(folder, "system.posix_acl_default", &acl_for_4242()).unwrap();
    }
    let probe = target.join("probe");
    std::fs::create_dir(&probe).unwrap();
    for acl in ["system.posix_acl_access", "system.posix_acl_default"] {
        assert!(xattr::get(&probe, acl).unwrap().is_some(), "not inherited");
    }
    std::fs::remove_dir(&probe).unwrap();
    std::fs::remove_dir(restored.join("folder")).unwrap();

    env.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
    for name in ["file", "empty", "folder", "folder/inner"] {
        let path = restored.join(name);
        let folder = path.is_dir();
        for acl in ["system.posix_acl_access", "system.posix_acl_default"] {
            let kept = xattr::get(&path, acl).unwrap();
            assert!(kept.is_none(), "{} kept {acl}", path.display());
        }
        assert!(folder || std::fs::read(&path).unwrap() == std::fs::read(src.join(name)).unwrap());
    }
    let diffs = diff_trees(&src, &restored, true);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_kept_file_a_tenant_owns_or_has_an_acl_on_is_rewritten_so_their_open_handle_writes_elsewhere() {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for name in ["owned", "acl"] {
        std::fs::write(src.join(name), b"the same bytes").unwrap();
        std::fs::set_permissions(src.join(name), PermissionsExt::from_mode(0o600)).unwrap();
    }
    let id = env.backup(&[&src]);
    let target = env.path("t");
    env.ok(&["restore", &id, "--target", target.to_str().unwrap()]);

    // the tenant makes the first file theirs and gets an ACL on the second, both with the
    // snapshot's bytes, and keeps each open for writing
    let owned = target.join("src/owned");
    nix::unistd::chown(&owned, Some(4242.into()), Some(4242.into())).unwrap();
    let acl = target.join("src/acl");
    xattr::set(&acl, "system.posix_acl_access", &acl_for_4242()).unwrap();
    let mut handles: Vec<std::fs::File> = [&owned, &acl]
        .iter()
        .map(|p| std::fs::OpenOptions::new().write(true).open(p).unwrap())
        .collect();

    let out = env.run(&[
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
        "if-changed",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for handle in &mut handles {
        handle.write_all(b"TENANT").unwrap();
    }
    for path in [&owned, &acl] {
        assert_eq!(
            std::fs::read(path).unwrap(),
            b"the same bytes",
            "{}",
            path.display()
        );
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", path.display());
        assert!(
            xattr::get(path, "system.posix_acl_access")
                .unwrap()
                .is_none(),
            "{} kept its ACL",
            path.display()
        );
    }
}

#[test]
fn folders_nested_deeper_than_the_limit_are_stored_empty_with_an_error() {
    use nix::sys::stat::Mode;
    let env = Env::new();
    let vol = env.path("vol");
    std::fs::create_dir_all(&vol).unwrap();
    // 3,000 nested folders, made one below the other by descriptor (no path gets long)
    let mut dir = std::fs::File::open(&vol).unwrap();
    for _ in 0..3000 {
        nix::sys::stat::mkdirat(&dir, "a", Mode::from_bits_truncate(0o755)).unwrap();
        let fd = nix::fcntl::openat(
            &dir,
            "a",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        dir = std::fs::File::from(fd);
    }
    let out = env.run(&["backup", vol.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("more than 1000 folders deep; stored as an empty folder"),
        "{}",
        stderr(&out)
    );
    let paths = env.ls_paths("latest");
    assert_eq!(
        paths.len(),
        1 + 1000,
        "the root and 1,000 nested folders, the last empty"
    );
}

/// A thread that plays a tenant who owns `dir` during a restore: each time an entry appears
/// there under a name that `is_target` picks, it at once puts `planted()` (a new name of a file
/// of its choice, made in `dir`) under that name. Returns (names seen, plants that succeeded)
/// once `stop` is set.
fn planter(
    dir: PathBuf,
    events: rustix::fs::inotify::WatchFlags,
    is_target: fn(&str) -> bool,
    planted: impl Fn(u64) -> PathBuf + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    use rustix::fs::inotify;
    let watch = inotify::init(inotify::CreateFlags::NONBLOCK).unwrap();
    inotify::add_watch(&watch, &dir, events).unwrap();
    std::thread::spawn(move || {
        let (mut seen, mut planted_count) = (0, 0);
        let mut buf = [std::mem::MaybeUninit::uninit(); 8192];
        let mut reader = inotify::Reader::new(&watch, &mut buf);
        while !stop.load(Ordering::Relaxed) {
            let event = match reader.next() {
                Ok(e) => e,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    std::thread::yield_now();
                    continue;
                }
                Err(e) => panic!("inotify: {e}"),
            };
            let Some(name) = event.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if !is_target(&name) {
                continue;
            }
            seen += 1;
            if std::fs::rename(planted(seen), dir.join(&name)).is_ok() {
                planted_count += 1;
            }
        }
        (seen, planted_count)
    })
}

/// What a restore must not change about a file outside its target: owner, mode and times.
fn victim(env: &Env) -> (PathBuf, impl Fn() -> BTreeMap<&'static str, String>) {
    use std::os::unix::fs::PermissionsExt;
    let victim = env.path("outside-victim");
    std::fs::write(&victim, b"only its owner may write this").unwrap();
    std::fs::set_permissions(&victim, PermissionsExt::from_mode(0o600)).unwrap();
    nix::unistd::chown(&victim, Some(4242.into()), Some(4242.into())).unwrap();
    set_mtime(&victim, 1_000_000_000, 0);
    let described = victim.clone();
    let describe_it = move || {
        let mut d = describe(&described, true);
        d.remove("links");
        d
    };
    (victim, describe_it)
}

#[test]
fn a_temporary_fifo_swapped_for_a_hard_link_never_passes_its_metadata_to_the_linked_file() {
    use nix::sys::stat::Mode;
    use std::os::unix::fs::FileTypeExt;
    let env = Env::new();
    let src = env.path("fifos");
    std::fs::create_dir_all(&src).unwrap();
    // world-writable FIFOs: their mode put on the victim would open it to everyone
    for i in 0..1500 {
        let fifo = src.join(format!("f{i:04}"));
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o666)).unwrap();
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &fifo,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .unwrap();
        set_mtime(&fifo, 1_500_000_000, 0);
    }
    let id = env.backup(&[&src]);
    let (victim, outside) = victim(&env);
    let before = outside();
    // the tenant's folder, reused by the restore
    let target = env.path("t");
    std::fs::create_dir_all(target.join("fifos")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let dir = target.join("fifos");
    let spare = dir.clone();
    let linked = victim.clone();
    let tenant = planter(
        dir,
        rustix::fs::inotify::WatchFlags::CREATE,
        |name| name.starts_with(".cairn-partial-"),
        move |n| {
            let link = spare.join(format!("link-{n}"));
            std::fs::hard_link(&linked, &link).unwrap();
            link
        },
        stop.clone(),
    );
    let out = env.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    stop.store(true, Ordering::Relaxed);
    let (seen, planted) = tenant.join().unwrap();
    eprintln!("temporary names seen: {seen}, hard links planted under them: {planted}");
    assert!(
        seen > 0,
        "the tenant never saw a temporary name: the race was not run"
    );
    assert_eq!(
        outside(),
        before,
        "the file outside got a restored entry's metadata ({planted} links planted)"
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for fifo in std::fs::read_dir(target.join("fifos")).unwrap() {
        let fifo = fifo.unwrap();
        let name = fifo.file_name().to_string_lossy().into_owned();
        if name.starts_with('f') {
            assert!(fifo.file_type().unwrap().is_fifo(), "{name} is not a FIFO");
        }
    }
}

#[test]
fn a_hard_link_is_never_made_to_a_file_swapped_in_after_its_first_name_was_restored() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("a/first"), b"the snapshot's bytes").unwrap();
    std::fs::hard_link(src.join("a/first"), src.join("b/second")).unwrap();
    std::fs::set_permissions(src.join("b"), PermissionsExt::from_mode(0o700)).unwrap();
    // links are made once every file is filled: this keeps the restore busy meanwhile
    std::fs::write(src.join("big"), noise(11, 64 << 20)).unwrap();
    let id = env.backup(&[&src]);
    // the tenant owns `a` (reused by the restore) and holds a file of its own there
    let target = env.path("t");
    let a = target.join("src/a");
    std::fs::create_dir_all(&a).unwrap();
    let own = a.join("tenant-file");
    std::fs::write(&own, b"TENANT-CONTROLLED").unwrap();
    let own_inode = std::fs::metadata(&own).unwrap().ino();

    let stop = Arc::new(AtomicBool::new(false));
    let theirs = own.clone();
    let tenant = planter(
        a.clone(),
        rustix::fs::inotify::WatchFlags::MOVED_TO,
        |name| name == "first",
        move |_| theirs.clone(),
        stop.clone(),
    );
    let out = env.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    stop.store(true, Ordering::Relaxed);
    let (seen, planted) = tenant.join().unwrap();
    assert!(
        seen >= 1 && planted == 1,
        "the tenant swapped the first name once: {seen} {planted}"
    );
    let second = target.join("src/b/second");
    assert!(
        std::fs::symlink_metadata(&second).map_or(true, |m| m.ino() != own_inode),
        "the root-only folder got a link to the tenant's file: {}",
        String::from_utf8_lossy(&std::fs::read(&second).unwrap())
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("b/second") && stderr(&out).contains("replaced by someone else"),
        "{}",
        stderr(&out)
    );
}
