//! Crash safety and concurrency through the real binary: backups and gc runs killed with
//! SIGKILL at random moments never damage what is kept, and backups running alongside gc runs
//! lose nothing.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::*;

/// Writes generation `g` of the source: eight files, file `i` changing every `i + 1`
/// generations, plus one file per generation; contents are deterministic.
fn write_generation(dir: &Path, g: u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for i in 0..8u64 {
        let version = g / (i + 1);
        std::fs::write(
            dir.join(format!("sub/f{i}")),
            noise(i * 1000 + version, 700_000 + i as usize * 100_000),
        )
        .unwrap();
    }
    std::fs::write(dir.join(format!("gen-{g}")), g.to_string()).unwrap();
}

/// Every listed snapshot restores to exactly the generation it was taken of.
fn all_restore_identically(env: &Env, taken: &HashMap<String, u64>, scratch: &Path) {
    for id in env.snapshot_ids() {
        let g = taken[&id];
        let expected = scratch.join(format!("expected-{g}"));
        if !expected.exists() {
            write_generation(&expected.join("src"), g);
        }
        let target = scratch.join(format!("restore-{}", &id[..8]));
        let _ = std::fs::remove_dir_all(&target);
        env.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
        assert_eq!(
            contents(&target.join("src")),
            contents(&expected.join("src")),
            "snapshot {id} of generation {g}"
        );
        std::fs::remove_dir_all(&target).unwrap();
    }
}

fn kill_after(mut child: Child, millis: u64) {
    std::thread::sleep(Duration::from_millis(millis));
    let _ = child.kill();
    let _ = child.wait();
}

/// Forget all but the newest two snapshots of each writer and collect, with a 2 s safety
/// interval (backups here take well under a second).
const PRUNE_CONCURRENT: [&str; 9] = [
    "forget",
    "--keep-last",
    "2",
    "--group-by",
    "host",
    "--prune",
    "--safety-interval",
    "2s",
    "--quiet",
];

const PRUNE: [&str; 9] = [
    "forget",
    "--keep-last",
    "3",
    "--group-by",
    "",
    "--prune",
    "--safety-interval",
    "0s",
    "--quiet",
];

#[test]
fn sigkill_during_backup_and_gc_never_breaks_kept_snapshots() {
    let env = Env::new();
    let src = env.path("src");
    let scratch = env.path("scratch");
    let mut taken: HashMap<String, u64> = HashMap::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let trials = 50;
    for trial in 0..trials {
        write_generation(&src, trial);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = rng % 500;
        let victim = if trial % 2 == 0 {
            env.cmd(&["backup", "--quiet", src.to_str().unwrap()])
        } else {
            env.cmd(&PRUNE)
        };
        let mut victim = victim;
        kill_after(
            victim
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
            delay,
        );
        // a killed backup may have committed its snapshot just before the kill: of this generation
        for id in env.snapshot_ids() {
            taken.entry(id).or_insert(trial);
        }
        let check = env.run(&["check"]);
        assert!(
            check.status.success(),
            "trial {trial} (killed after {delay} ms): check failed: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        all_restore_identically(&env, &taken, &scratch);
        // the next backup and gc succeed
        let id = env.backup(&[&src]);
        taken.insert(id, trial);
        env.ok(&PRUNE);
    }
    env.assert_intact();
}

#[test]
fn backups_alongside_gc_lose_nothing() {
    let env = Env::new();
    let writers = 3;
    let rounds = 4;
    let mut handles = vec![];
    for w in 0..writers {
        let cmd_env = (
            env.repo.clone(),
            env.cache.join(format!("w{w}")),
            env.password_file.clone(),
        );
        let src = env.path(&format!("w{w}/src"));
        handles.push(std::thread::spawn(move || {
            let mut taken = vec![];
            for r in 0..rounds {
                let g = w * 100 + r;
                write_generation(&src, g);
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
                    .args([
                        "--json",
                        "backup",
                        "--host",
                        &format!("writer-{w}"),
                        src.to_str().unwrap(),
                    ])
                    .env("CAIRN_REPOSITORY", &cmd_env.0)
                    .env("CAIRN_CACHE_DIR", &cmd_env.1)
                    .env("CAIRN_PASSWORD_FILE", &cmd_env.2)
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                if out.status.success() {
                    let v: serde_json::Value = json_result(&out.stdout);
                    taken.push((v["snapshot_id"].as_str().unwrap().to_owned(), g));
                } else {
                    // the one refusal the protocol allows: a mark fell due during the backup
                    assert!(err.contains("run the backup again"), "backup failed: {err}");
                }
            }
            taken
        }));
    }
    let gc_env = env.sharing(env.cache.join("gc"));
    let mut gc_runs = 0;
    while !handles.iter().all(|h| h.is_finished()) {
        let out = gc_env.run(&PRUNE_CONCURRENT);
        assert!(out.status.success(), "gc failed: {}", stderr(&out));
        gc_runs += 1;
    }
    let mut taken = HashMap::new();
    for h in handles {
        taken.extend(h.join().unwrap());
    }
    assert!(gc_runs >= 2, "gc ran {gc_runs} times");
    std::thread::sleep(Duration::from_secs(3));
    env.ok(&PRUNE_CONCURRENT);
    env.assert_intact();
    let ids = env.snapshot_ids();
    assert!(
        ids.len() >= writers as usize && ids.len() <= writers as usize * 2,
        "{} snapshots kept",
        ids.len()
    );
    all_restore_identically(&env, &taken, &env.path("scratch"));
}
