//! `check` through the real binary: a healthy repository passes; a flipped byte, a truncation or
//! a deletion of any kind of object is detected, and the report names the snapshots and files
//! it affects; a restore of a damaged snapshot restores the rest and never writes wrong data.

mod common;

use std::path::PathBuf;

use common::*;

fn fixture() -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/random.bin"), noise(1, 3 << 20)).unwrap();
    std::fs::write(src.join("text.txt"), "some text\n".repeat(1000)).unwrap();
    env.backup(&[&src]);
    std::fs::write(src.join("later.txt"), b"added later").unwrap();
    env.backup(&[&src]);
    (env, src)
}

/// A way to damage an object in place.
type Damage = fn(&Backend, &str);

/// A copy of the fixture's repository with one object changed by `damage`.
fn damaged_copy(env: &Env, object: &str, damage: Damage) -> Env {
    let copy = Env::empty();
    env.objects.copy_to(&copy.objects);
    damage(&copy.objects, object);
    copy
}

fn flip_middle(b: &Backend, name: &str) {
    let mut bytes = b.read(name);
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    b.write(name, bytes);
}

fn truncate(b: &Backend, name: &str) {
    let mut bytes = b.read(name);
    bytes.pop();
    b.write(name, bytes);
}

fn delete(b: &Backend, name: &str) {
    b.delete(name);
}

#[test]
fn healthy_repository_passes_every_level() {
    let (env, _) = fixture();
    let report = env.json(&["check"]);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["snapshots"], 2);
    assert_eq!(report["packs_read"], 0);
    let full = env.json(&["check", "--read-data"]);
    assert_eq!(full["packs_read"], full["packs"]);
    let mut read = 0;
    for n in 1..=3 {
        read += env.json(&["check", "--read-data-subset", &format!("{n}/3")])["packs_read"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(
        read,
        full["packs"].as_u64().unwrap(),
        "the three parts read every pack once"
    );
    assert_eq!(
        env.json(&["check", "--read-data-subset", "100%"])["packs_read"],
        full["packs"]
    );
    let bad = env.run(&["check", "--read-data-subset", "4/3"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn every_kind_of_damage_to_every_object_is_detected() {
    let (env, src) = fixture();
    let objects = env.objects.names("");
    assert!(objects.len() >= 7, "{objects:?}");
    let damages: [(&str, Damage); 3] = [
        ("flip", flip_middle),
        ("truncate", truncate),
        ("delete", delete),
    ];
    let mut trials = 0;
    for object in &objects {
        let is_snapshot = object.starts_with("snapshots/");
        for (what, damage) in &damages {
            if is_snapshot && *what == "delete" {
                continue; // deleting a snapshot is `forget`: nothing is left to miss
            }
            trials += 1;
            let copy = damaged_copy(&env, object, *damage);
            let out = copy.run(&["check", "--read-data"]);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{what} of {object} went unnoticed: {}",
                String::from_utf8_lossy(&out.stdout)
            );

            // whatever is damaged, no restore writes wrong data
            let target = copy.path("t");
            let restore = copy.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
            if target.join("src").exists() {
                for f in all_files(&target.join("src")) {
                    let original = src.join(f.strip_prefix(target.join("src")).unwrap());
                    assert_eq!(
                        std::fs::read(&f).unwrap(),
                        std::fs::read(&original).unwrap(),
                        "{what} of {object}: {} restored wrong",
                        f.display()
                    );
                }
            }
            let _ = restore;
        }
    }
    assert!(trials >= 20, "{trials} trials");
}

#[test]
fn report_names_affected_snapshots_and_paths_and_restore_does_the_rest() {
    let (env, src) = fixture();
    // damage the data pack that holds random.bin (the largest data pack)
    let data_pack = env
        .objects
        .names("data")
        .into_iter()
        .max_by_key(|n| env.objects.read(n).len())
        .unwrap();
    flip_middle(&env.objects, &data_pack);
    let out = env.run(&["--json", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = json_result(&out.stdout);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(
        problems[0]["snapshots"].as_array().unwrap().len(),
        2,
        "both snapshots hold the file"
    );
    assert_eq!(problems[0]["paths"][0], "/src/dir/random.bin");

    let target = env.path("t");
    let restore = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(restore.status.code(), Some(3), "{}", stderr(&restore));
    assert!(
        stderr(&restore).contains("random.bin"),
        "names the file: {}",
        stderr(&restore)
    );
    assert!(
        !target.join("src/dir/random.bin").exists(),
        "no partial file with unverified data"
    );
    assert_eq!(
        std::fs::read(target.join("src/text.txt")).unwrap(),
        std::fs::read(src.join("text.txt")).unwrap()
    );
    assert_eq!(
        std::fs::read(target.join("src/later.txt")).unwrap(),
        b"added later"
    );
}

/// A gc that compacts the index while `check --read-data` reads packs deletes the segments the
/// check listed: they are gone, not damaged, and the check reads the segment that replaced them.
/// Each round makes several segments (one per backup), starts a check slowed by a download
/// limit, and runs gc (its own process and cache) once the check reports a pack done.
#[test]
fn a_gc_compacting_the_index_during_a_check_is_not_damage() {
    use std::io::BufRead;
    let env = Env::empty();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let gc_env = env.sharing(env.path("gc-cache"));
    let mut raced = 0;
    for round in 0..3u64 {
        for n in 0..3 {
            let name = format!("f{round}-{n}");
            std::fs::write(src.join(name), noise(10 * round + n, 3 << 20)).unwrap();
            env.backup(&[&src]);
        }
        let segments = env.objects.names("index").len();
        let mut check = env
            .cmd(&[
                "--json",
                "--progress-interval",
                "100ms",
                "--limit-download",
                "4096",
            ])
            .args(["check", "--read-data"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(check.stdout.take().unwrap()).lines();
        let mut summary = None;
        for line in lines.by_ref() {
            let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if event["message_type"] == "summary" {
                summary = Some(event);
                break;
            }
            if event["entries_done"].as_u64() > Some(0) {
                gc_env.ok(&["gc"]);
                break;
            }
        }
        let report = summary.unwrap_or_else(|| {
            let rest: Vec<String> = lines.map(Result::unwrap).collect();
            serde_json::from_str(rest.last().expect("a summary")).unwrap()
        });
        let out = check.wait_with_output().unwrap();
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert_eq!(
            report["problems"].as_array().unwrap().len(),
            0,
            "round {round}: {report}"
        );
        assert_eq!(report["unindexed_packs"], 0, "round {round}: {report}");
        assert_eq!(
            report["packs_read"], report["packs"],
            "round {round}: {report}"
        );
        // the listed segments, then the one gc wrote: gc landed inside the check's pack phase
        raced += u32::from(report["index_segments"] == segments + 1);
    }
    assert!(
        raced > 0,
        "gc never ran while the check read packs: slow the check down"
    );
}
