//! Restores that are killed and run again, that meet what an earlier run left behind, and that
//! read a damaged repository, through the real binary: a file appears under its name only once
//! it is complete, running the same restore again finishes the job (`--overwrite
//! never|if-changed|always`), and a pack that comes back short names the files it held and
//! exits 3, never panics.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::*;

/// Name prefix of the entries a restore is still writing.
const PARTIAL: &str = ".cairn-partial-";

fn is_partial(p: &Path) -> bool {
    p.file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(PARTIAL)
}

/// Every entry below `dir` that is not a folder and carries a partial name.
fn partial_entries(dir: &Path) -> Vec<std::path::PathBuf> {
    all_entries(dir)
        .into_iter()
        .filter(|p| is_partial(p) && !std::fs::symlink_metadata(p).unwrap().is_dir())
        .collect()
}

/// The source of the kill test: two big files, 300 small ones in 10 folders, a hard link and a
/// symlink, about 190 MB of noise. Returns the bytes of file content.
fn big_tree(root: &Path) -> u64 {
    std::fs::create_dir_all(root).unwrap();
    let mut total = 0;
    for (name, seed, len) in [
        ("big-a", 1, (40 << 20) + 123),
        ("big-b", 2, (120 << 20) + 7),
    ] {
        std::fs::write(root.join(name), noise(seed, len)).unwrap();
        total += len as u64;
    }
    for d in 0..10 {
        let dir = root.join(format!("small/d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..30 {
            let k = d * 30 + f;
            let len = 1000 + k * 4567 % 200_000;
            std::fs::write(dir.join(format!("f{f}")), noise(100 + k as u64, len)).unwrap();
            total += len as u64;
        }
    }
    std::fs::hard_link(root.join("small/d0/f0"), root.join("small/link-f0")).unwrap();
    std::os::unix::fs::symlink("d1/f1", root.join("small/sym")).unwrap();
    total
}

/// Bytes a process has written so far (`wchar` of /proc/PID/io).
fn written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Whether a process is stopped, a zombie, or gone.
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('Z'))
    })
}

/// Runs cairn with `args`, letting it go on in slices of about a millisecond (stopped with
/// SIGSTOP in between, so that the point is found whatever the machine's speed), and kills it
/// with SIGKILL at the first stop where `reached(bytes written so far)` holds. Panics if it
/// finishes first.
fn kill_at(env: &Env, args: &[&str], what: &str, reached: &dyn Fn(u64) -> bool) {
    let mut child = env
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        std::thread::sleep(Duration::from_millis(1));
        kill(pid, Signal::SIGSTOP).unwrap();
        while !stopped(child.id()) {
            std::thread::sleep(Duration::from_micros(100));
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the restore finished ({status}) before {what}");
        }
        if reached(written(child.id())) {
            kill(pid, Signal::SIGKILL).unwrap();
            child.wait().unwrap();
            return;
        }
        kill(pid, Signal::SIGCONT).unwrap();
    }
}

#[test]
fn a_restore_killed_at_any_point_and_run_again_gives_the_snapshot_back() {
    let env = Env::new();
    let src = env.path("src");
    let total = big_tree(&src);
    let id = env.backup(&[&src]);
    let expected = contents(&src);
    let big_a = (40 << 20) + 123;
    // (what, when it is reached, whether some file must be half written then)
    type Point = (&'static str, Box<dyn Fn(&Path, u64) -> bool>, bool);
    let points: [Point; 4] = [
        (
            "its first folder appears",
            Box::new(|t, _| t.join("src").exists()),
            false,
        ),
        (
            "40% of the data is written",
            Box::new(move |_, w| w >= total * 2 / 5),
            true,
        ),
        (
            "a big file is complete",
            Box::new(move |t, w| w >= big_a && t.join("src/big-a").exists()),
            false,
        ),
        (
            "95% of the data is written",
            Box::new(move |_, w| w >= total / 100 * 95),
            true,
        ),
    ];
    for (n, (what, reached, half_written)) in points.iter().enumerate() {
        let target = env.path(&format!("t{n}"));
        let t = target.to_str().unwrap();
        kill_at(
            &env,
            &["--quiet", "restore", &id, "--target", t],
            what,
            &|w| reached(&target, w),
        );
        // whatever was interrupted, every file under its own name is complete
        for f in all_files(&target) {
            if is_partial(&f) {
                continue;
            }
            let rel = f
                .strip_prefix(target.join("src"))
                .unwrap()
                .display()
                .to_string();
            assert_eq!(
                Some(&blake_hex(&std::fs::read(&f).unwrap())),
                expected.get(&rel),
                "killed when {what}: {rel} is under its name but not what the snapshot holds"
            );
        }
        let leftovers = partial_entries(&target).len();
        assert!(
            leftovers > 0 || !half_written,
            "killed when {what}: no file was being written"
        );

        // the same restore, run again, finishes the job and cleans up
        let out = env.run(&["--json", "restore", &id, "--target", t]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let diffs = diff_trees(&src, &target.join("src"), is_root());
        assert!(
            diffs.is_empty(),
            "killed when {what}, then run again: the restore differs:\n{}",
            diffs.join("\n")
        );
        let (result, _) = checked_result("restore", &out.stdout);
        let outcome = &result["outcome"];
        assert_eq!(outcome["errors"].as_array().unwrap().len(), 0, "{outcome}");
        assert_eq!(
            outcome["leftovers_removed"].as_u64().unwrap_or(0),
            leftovers as u64,
            "killed when {what}: {outcome}"
        );
        assert_eq!(partial_entries(&target), Vec::<std::path::PathBuf>::new());
        std::fs::remove_dir_all(&target).unwrap();
    }
}

#[test]
fn running_a_restore_again_finishes_what_an_interrupted_one_left() {
    let env = Env::new();
    let src = env.path("src");
    make_full_tree(&src);
    // a file whose name looks like a partial file is data like any other
    let lookalike = format!("{PARTIAL}abcdefABCDEF");
    std::fs::write(src.join(&lookalike), b"not a left-over").unwrap();
    set_mtime(&src.join(&lookalike), 1_500_000_000, 5);
    let id = env.backup(&[&src]);
    let target = env.path("t");
    let t = target.to_str().unwrap();
    env.ok(&["restore", &id, "--target", t]);

    // what an interrupted run leaves: files not written yet, a hard link not made yet (docs/hard-b
    // comes first in the walk, hard-a links to it), a symlink not made yet, and partial entries
    let restored = target.join("src");
    for gone in [
        "docs/readme.txt",
        "docs/nested/deeper/big.bin",
        "hard-a",
        "link-rel",
    ] {
        std::fs::remove_file(restored.join(gone)).unwrap();
    }
    std::fs::write(
        restored.join(format!("{PARTIAL}Zq0pLm8Kx1Ab")),
        noise(9, 100_000),
    )
    .unwrap();
    std::fs::write(
        restored.join(format!("docs/nested/deeper/{PARTIAL}0123456789ab")),
        vec![0u8; 1 << 20],
    )
    .unwrap();
    std::os::unix::fs::symlink("docs", restored.join(format!("{PARTIAL}symlinkXXXXX"))).unwrap();

    let out = env.run(&["--json", "restore", &id, "--target", t]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let diffs = diff_trees(&src, &restored, is_root());
    assert!(diffs.is_empty(), "restore differs:\n{}", diffs.join("\n"));
    let (result, _) = checked_result("restore", &out.stdout);
    let outcome = &result["outcome"];
    assert_eq!(outcome["leftovers_removed"], 3, "{outcome:#}");
    assert_eq!(
        outcome["files"], 3,
        "readme, big.bin and the link: {outcome:#}"
    );
    assert_eq!(outcome["others"], 1, "the symlink: {outcome:#}");
    let skipped: Vec<&str> = outcome["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in [
        "/src/docs/hard-b",
        "/src/docs/nested/empty",
        "/src/link-abs",
    ] {
        assert!(skipped.contains(&s), "{s} not in {skipped:?}");
    }
    assert!(skipped.contains(&format!("/src/{lookalike}").as_str()));
    let (a, b) = (
        restored.join("hard-a").metadata().unwrap(),
        restored.join("docs/hard-b").metadata().unwrap(),
    );
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "linked again");
    assert_eq!(
        std::fs::read(restored.join(&lookalike)).unwrap(),
        b"not a left-over"
    );
}

#[test]
fn overwrite_if_changed_rewrites_what_differs_and_always_rewrites_everything() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let names = [
        "same", "edited", "resized", "chmodded", "sub/deep", "replaced",
    ];
    for (seed, name) in names.iter().enumerate() {
        std::fs::write(src.join(name), noise(seed as u64, 300_000)).unwrap();
    }
    let id = env.backup(&[&src]);
    let target = env.path("t");
    let t = target.to_str().unwrap();
    let restored = target.join("src");
    env.ok(&["restore", &id, "--target", t]);

    // local changes: other bytes of the same length, another length, another mode and time,
    // and a symlink to a file outside the target in place of a file
    let mut bytes = std::fs::read(restored.join("edited")).unwrap();
    bytes[200_000] ^= 1;
    std::fs::write(restored.join("edited"), bytes).unwrap();
    std::fs::write(restored.join("resized"), noise(2, 200_000)).unwrap();
    std::fs::set_permissions(
        restored.join("chmodded"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    set_mtime(&restored.join("chmodded"), 1, 0);
    let outside = env.path("outside");
    std::fs::write(&outside, b"outside the target").unwrap();
    std::fs::remove_file(restored.join("replaced")).unwrap();
    std::os::unix::fs::symlink(&outside, restored.join("replaced")).unwrap();
    let inode = |name: &str| restored.join(name).metadata().unwrap().ino();
    let kept = inode("same");

    let restore = |how: &str| {
        let out = env.run(&["--json", "restore", &id, "--target", t, "--overwrite", how]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        checked_result("restore", &out.stdout).0["outcome"].clone()
    };
    let outcome = restore("if-changed");
    assert_eq!(
        (outcome["files"].as_u64(), outcome["unchanged"].as_u64()),
        (Some(3), Some(3)),
        "{outcome:#}"
    );
    assert_eq!(outcome["skipped"].as_array().unwrap().len(), 0);
    let diffs = diff_trees(&src, &restored, is_root());
    assert!(diffs.is_empty(), "restore differs:\n{}", diffs.join("\n"));
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside the target");
    assert_eq!(
        inode("same"),
        kept,
        "an unchanged file is kept, not rewritten"
    );
    let text = env.ok(&["restore", &id, "--target", t, "--overwrite", "if-changed"]);
    assert!(
        text.contains("0 files") && text.contains("6 unchanged"),
        "{text}"
    );

    let outcome = restore("always");
    assert_eq!(
        (outcome["files"].as_u64(), outcome["unchanged"].as_u64()),
        (Some(6), Some(0)),
        "{outcome:#}"
    );
    assert_ne!(inode("same"), kept, "always rewrites");
    assert!(diff_trees(&src, &restored, is_root()).is_empty());

    let outcome = restore("never");
    assert_eq!(
        outcome["skipped"].as_array().unwrap().len(),
        6,
        "{outcome:#}"
    );
    let bad = env.run(&["restore", &id, "--target", t, "--overwrite", "sometimes"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn a_pack_that_comes_back_short_names_its_files_and_the_rest_is_restored() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // the small files first, in packs of their own (a walk on several threads mixes the
    // blobs of files read together), so that cutting the largest pack spares them
    for i in 0..20 {
        std::fs::write(src.join(format!("small{i}")), noise(100 + i, 10_000)).unwrap();
    }
    env.backup(&[&src]);
    for i in 0..8 {
        std::fs::write(src.join(format!("big{i}")), noise(i, 3 << 20)).unwrap();
    }
    let id = env.backup(&[&src]);
    let pack = env
        .objects
        .names("data")
        .into_iter()
        .max_by_key(|n| env.objects.read(n).len())
        .unwrap();
    let mut bytes = env.objects.read(&pack);
    let cut = bytes.len() / 2;
    // the files with a blob in that pack, and those with one past the cut
    let (touching, beyond) = {
        let repo = env.open_repo();
        let (_, snap) = cairn_engine::format::snapshot::Snapshot::find(&repo, &id).unwrap();
        let (mut touching, mut beyond) = (BTreeSet::new(), BTreeSet::new());
        cairn_engine::repository::trees::walk(
            &repo,
            &snap.tree,
            &mut vec![],
            &mut |path, node| {
                for blob in &node.content {
                    let loc = repo.locate(blob).unwrap();
                    if pack.ends_with(&loc.pack.to_hex()) {
                        let name = path.last().unwrap().lossy();
                        touching.insert(name.clone());
                        if (loc.blob.offset + loc.blob.length) as usize > cut {
                            beyond.insert(name);
                        }
                    }
                }
                Ok(true)
            },
            &mut cairn_engine::format::tree::stop_at_damage,
        )
        .unwrap();
        (touching, beyond)
    };
    assert!(!beyond.is_empty() && touching.len() < 28, "{touching:?}");
    bytes.truncate(cut);
    env.objects.write(&pack, bytes);

    let target = env.path("t");
    let out = env.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let named = |name: &str| {
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains(&format!("/src/{name}:")))
    };
    let mut restored = 0;
    for f in all_files(&src) {
        let name = f.file_name().unwrap().to_str().unwrap().to_owned();
        let at = target.join("src").join(&name);
        if named(&name) {
            assert!(
                touching.contains(&name),
                "{name} named but not in the pack: {err}"
            );
            assert!(!at.exists(), "{name} named but left under its name");
        } else {
            assert!(!beyond.contains(&name), "{name} not named: {err}");
            assert_eq!(
                std::fs::read(&at).unwrap(),
                std::fs::read(&f).unwrap(),
                "{name}"
            );
            restored += 1;
        }
    }
    assert!(restored >= 20, "{restored} files restored");
    assert_eq!(partial_entries(&target), Vec::<std::path::PathBuf>::new());

    // a drill of that snapshot fails, naming the same files, and does not panic either
    let scratch = env.path("scratch");
    let out = env.run(&[
        "--json",
        "drill",
        "--share",
        "100%",
        "--scratch",
        scratch.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let (result, _) = checked_result("drill", &out.stdout);
    let problems = result["record"]["snapshots"][0]["problems"].to_string();
    for name in &beyond {
        assert!(
            problems.contains(&format!("/src/{name}:")),
            "{name}: {problems}"
        );
    }
}

/// A restore works through files a batch at a time (a thousand or so): this tree holds several
/// batches, with a hard link whose first name is in the first batch and its second name in the
/// last, a name that looks temporary, and what an interrupted run left in a folder reached only
/// after some batches were restored.
#[test]
fn a_restore_of_many_files_finishes_every_batch_links_across_them_and_cleans_late_folders() {
    let env = Env::new();
    let src = env.path("src");
    for d in 0..25 {
        let dir = src.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..120 {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d}/{f}")).unwrap();
        }
    }
    std::fs::hard_link(src.join("d00/f000"), src.join("d24/link")).unwrap();
    let lookalike = format!("d24/{PARTIAL}abcdefABCDEF");
    std::fs::write(src.join(&lookalike), b"not a left-over").unwrap();
    let id = env.backup(&[&src]);
    let target = env.path("t");
    let t = target.to_str().unwrap();
    // the last folder exists already, with what an interrupted run left in it
    let late = target.join("src/d24");
    std::fs::create_dir_all(&late).unwrap();
    std::fs::write(late.join(format!("{PARTIAL}Zq0pLm8Kx1Ab")), b"half").unwrap();

    let out = env.run(&["--json", "restore", &id, "--target", t]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let restored = target.join("src");
    let diffs = diff_trees(&src, &restored, is_root());
    assert!(diffs.is_empty(), "restore differs:\n{}", diffs.join("\n"));
    let (result, _) = checked_result("restore", &out.stdout);
    let outcome = &result["outcome"];
    assert_eq!(outcome["leftovers_removed"], 1, "{outcome:#}");
    assert_eq!(outcome["files"], 25 * 120 + 2, "{outcome:#}");
    let inode = |p: &str| std::fs::metadata(restored.join(p)).unwrap().ino();
    assert_eq!(inode("d00/f000"), inode("d24/link"));

    // run again, keeping what holds the snapshot's contents: the look-alike is kept, as data;
    // the hard-linked file is rewritten (a file with two names always is) and linked again
    let out = env.run(&[
        "--json",
        "restore",
        &id,
        "--target",
        t,
        "--overwrite",
        "if-changed",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (result, _) = checked_result("restore", &out.stdout);
    let outcome = &result["outcome"];
    assert_eq!(
        (
            &outcome["files"],
            &outcome["unchanged"],
            &outcome["leftovers_removed"]
        ),
        (&2.into(), &(25 * 120).into(), &0.into()),
        "{outcome:#}"
    );
    let diffs = diff_trees(&src, &restored, is_root());
    assert!(diffs.is_empty(), "restore differs:\n{}", diffs.join("\n"));
}
