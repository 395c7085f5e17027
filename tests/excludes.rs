//! `cairn backup`'s exclude options (restic's names and rules) on real trees through the real
//! binary: what the snapshot lists afterwards, the `excluded` count of the summary, entries left
//! out never being opened, usage errors for bad patterns, and per-volume excludes of
//! `cairn k8s backup-volumes` (annotations on pods and claims).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// Writes `files` (relative path, content) below `root`, making folders on the way.
fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// `cairn --json backup PATH ARGS…`: the result, checked against the backup schema.
fn backup(env: &Env, path: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json", "backup", path.to_str().unwrap()];
    all.extend_from_slice(args);
    checked_result("backup", env.ok(&all).as_bytes()).0
}

/// The paths the snapshot of a backup result lists.
fn listed(env: &Env, result: &Value) -> Vec<String> {
    env.ls_paths(result["snapshot_id"].as_str().unwrap())
}

#[test]
fn patterns_anchored_unanchored_recursive_negated_and_case_blind() {
    let env = Env::new();
    let src = env.path("src");
    write_tree(
        &src,
        &[
            ("a.log", b"a"),
            ("keep.log", b"k"),
            ("docs/readme.txt", b"r"),
            ("docs/b.log", b"b"),
            ("build/out.bin", b"o"),
            ("sub/build/x", b"x"),
            ("deep/x/y/target/t", b"t"),
            ("deep/target.txt", b"t"),
            ("Photo.JPG", b"p"),
        ],
    );
    let anchored = format!("{}/build", src.display());
    let out = backup(
        &env,
        &src,
        &[
            "--exclude",
            "*.log",
            "--exclude",
            "!keep.log",
            "--exclude",
            &anchored,
            "--exclude",
            "**/target",
            "--iexclude",
            "*.jpg",
        ],
    );
    assert_eq!(
        listed(&env, &out),
        [
            "/src",
            "/src/deep",
            "/src/deep/target.txt",
            "/src/deep/x",
            "/src/deep/x/y",
            "/src/docs",
            "/src/docs/readme.txt",
            "/src/keep.log",
            "/src/sub",
            "/src/sub/build",
            "/src/sub/build/x",
        ]
    );
    // a.log, docs/b.log, build (once, not read), deep/x/y/target (once), Photo.JPG
    assert_eq!(out["summary"]["excluded"], 5, "{out}");
    assert_eq!(out["errors"], json!([]), "{out}");

    // --exclude minds case; a path named for backup is never left out (as in restic)
    let out = backup(&env, &src, &["--exclude", "*.jpg", "--exclude", "/"]);
    assert_eq!(out["summary"]["excluded"], 7, "everything below src: {out}");
    assert_eq!(listed(&env, &out), ["/src"]);
    let out = backup(&env, &src.join("a.log"), &["--exclude", "*.log"]);
    assert_eq!(listed(&env, &out), ["/a.log"]);
    let out = backup(&env, &src, &["--exclude", "*.jpg"]);
    assert!(listed(&env, &out).contains(&"/src/Photo.JPG".to_string()));
    assert_eq!(out["summary"]["excluded"], 0, "{out}");

    // the text summary says how many were left out
    let text = env.ok(&["backup", src.to_str().unwrap(), "--exclude", "*.log"]);
    assert!(text.contains("(3 excluded)"), "{text}");
}

#[test]
fn exclude_files_skip_comments_and_blank_lines() {
    let env = Env::new();
    let src = env.path("src");
    write_tree(
        &src,
        &[
            ("x.tmp", b"x"),
            ("important.tmp", b"i"),
            ("Cache/data", b"d"),
            ("notes.txt", b"n"),
            ("# not a comment here", b"c"),
        ],
    );
    let file = env.path("excludes.txt");
    std::fs::write(
        &file,
        "# temporary files\n\n   *.tmp  \n# but not this one\n!important.tmp\n",
    )
    .unwrap();
    let ifile = env.path("iexcludes.txt");
    std::fs::write(&ifile, "# caches, however spelt\nCACHE\n").unwrap();
    let out = backup(
        &env,
        &src,
        &[
            "--exclude-file",
            file.to_str().unwrap(),
            "--iexclude-file",
            ifile.to_str().unwrap(),
        ],
    );
    assert_eq!(
        listed(&env, &out),
        [
            "/src",
            "/src/# not a comment here",
            "/src/important.tmp",
            "/src/notes.txt"
        ]
    );
    assert_eq!(out["summary"]["excluded"], 2, "{out}");
}

#[test]
fn bad_excludes_are_usage_errors_that_say_what_to_fix() {
    let env = Env::new();
    let src = env.path("src");
    write_tree(&src, &[("f", b"f")]);
    let bad_file = env.path("bad.txt");
    std::fs::write(&bad_file, "*.o\n# fine so far\n[oops\n").unwrap();
    let missing = env.path("missing.txt");
    let cases: [(&[&str], &str); 6] = [
        (&["--exclude", "[a"], "not closed"),
        (&["--iexclude", "x\\"], "lone \\"),
        (
            &["--exclude-file", bad_file.to_str().unwrap()],
            "bad.txt:3: bad pattern \"[oops\"",
        ),
        (
            &["--exclude-file", missing.to_str().unwrap()],
            "cannot read",
        ),
        (&["--exclude-if-present", ":header"], "give a file name"),
        (&["--exclude-larger-than", "1x"], "give a size"),
    ];
    for (args, says) in cases {
        let mut all = vec!["backup", src.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = env.run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert!(env.snapshot_ids().is_empty(), "nothing was backed up");
}

#[test]
fn tagged_folders_keep_only_their_tag() {
    let env = Env::new();
    let src = env.path("src");
    let signature = b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n";
    write_tree(
        &src,
        &[
            ("valid/CACHEDIR.TAG", signature),
            ("valid/data", b"cached"),
            ("valid/sub/more", b"cached"),
            ("invalid/CACHEDIR.TAG", b"Signature: 0000\n"),
            ("invalid/data", b"kept"),
            ("short/CACHEDIR.TAG", b"Signature"),
            ("short/data", b"kept"),
            ("nob/.nobackup", b""),
            ("nob/data", b"left out"),
            ("marked/MARK", b"yes, skip me"),
            ("marked/data", b"left out"),
            ("unmarked/MARK", b"no"),
            ("unmarked/data", b"kept"),
        ],
    );
    // a FIFO named as a tag is never opened (the backup would hang waiting for a writer)
    std::fs::create_dir(src.join("fifo")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo/CACHEDIR.TAG"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::fs::write(src.join("fifo/data"), b"kept").unwrap();
    let src_arg = src.to_str().unwrap();
    let args = [
        "--json",
        "backup",
        src_arg,
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-if-present",
        "MARK:yes",
    ];
    let run = env.run(&args);
    let out = checked_result("backup", succeeded(&args, run.clone()).as_bytes()).0;
    // a tag without its header marks nothing, with a warning
    let warned = format!(
        "{}: does not start with",
        src.join("invalid/CACHEDIR.TAG").display()
    );
    assert!(stderr(&run).contains(&warned), "{}", stderr(&run));
    assert_eq!(
        listed(&env, &out),
        [
            "/src",
            "/src/fifo",
            "/src/fifo/CACHEDIR.TAG",
            "/src/fifo/data",
            "/src/invalid",
            "/src/invalid/CACHEDIR.TAG",
            "/src/invalid/data",
            "/src/marked",
            "/src/marked/MARK",
            "/src/nob",
            "/src/nob/.nobackup",
            "/src/short",
            "/src/short/CACHEDIR.TAG",
            "/src/short/data",
            "/src/unmarked",
            "/src/unmarked/MARK",
            "/src/unmarked/data",
            "/src/valid",
            "/src/valid/CACHEDIR.TAG",
        ]
    );
    // valid/data, valid/sub, nob/data, marked/data
    assert_eq!(out["summary"]["excluded"], 4, "{out}");
    assert_eq!(out["errors"], json!([]), "{out}");
}

#[test]
fn files_larger_than_the_limit_are_left_out_and_the_limit_itself_kept() {
    let env = Env::new();
    let src = env.path("src");
    write_tree(
        &src,
        &[
            ("at", &[1u8; 1024]),
            ("above", &[2u8; 1025]),
            ("small", b"s"),
            // a folder's own size (4 KiB on most file systems) never counts
            ("folder/inner", b"i"),
        ],
    );
    let out = backup(&env, &src, &["--exclude-larger-than", "1k"]);
    assert_eq!(
        listed(&env, &out),
        [
            "/src",
            "/src/at",
            "/src/folder",
            "/src/folder/inner",
            "/src/small"
        ]
    );
    assert_eq!(out["summary"]["excluded"], 1, "{out}");
    let out = backup(&env, &src, &["--exclude-larger-than", "1023"]);
    assert_eq!(
        listed(&env, &out),
        ["/src", "/src/folder", "/src/folder/inner", "/src/small"]
    );
}

/// What the backup leaves out it never opens: entries it cannot read (as an unprivileged user)
/// are no error once excluded, by pattern, by tag or by size; without the excludes the same
/// tree is a partial backup (exit code 3).
#[test]
fn excluded_entries_are_never_opened() {
    let env = Env::new();
    let src = env.path("src");
    let signature = b"Signature: 8a477f597d28d172789f06886806bc55";
    write_tree(
        &src,
        &[
            ("locked/secret", b"s"),
            ("big", &[0u8; 4096]),
            ("cache/CACHEDIR.TAG", signature),
            ("cache/sealed", b"s"),
            ("ok", b"ok"),
        ],
    );
    for p in ["locked", "big", "cache/sealed"] {
        std::fs::set_permissions(src.join(p), PermissionsExt::from_mode(0o000)).unwrap();
    }
    let src_arg = src.to_str().unwrap();
    let out = env.cmd_unprivileged(&["backup", src_arg]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let args = [
        "--json",
        "backup",
        src_arg,
        "--exclude",
        "locked",
        "--exclude-larger-than",
        "4095",
        "--exclude-caches",
    ];
    let out = env.cmd_unprivileged(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (result, _) = checked_result("backup", &out.stdout);
    assert_eq!(result["errors"], json!([]), "{result}");
    assert_eq!(result["summary"]["excluded"], 3, "{result}");
    assert_eq!(
        listed(&env, &result),
        ["/src", "/src/cache", "/src/cache/CACHEDIR.TAG", "/src/ok"]
    );
}

/// An entry left out now is not carried over from the parent snapshot, and comes back once the
/// exclude is dropped.
#[test]
fn excluded_entries_are_not_taken_from_the_parent_snapshot() {
    let env = Env::new();
    let src = env.path("src");
    write_tree(&src, &[("a.log", b"a"), ("b.txt", b"b"), ("logs/c", b"c")]);
    let first = backup(&env, &src, &[]);
    assert_eq!(listed(&env, &first).len(), 5);
    let second = backup(&env, &src, &["--exclude", "*.log", "--exclude", "logs"]);
    assert_eq!(listed(&env, &second), ["/src", "/src/b.txt"]);
    assert_eq!(second["summary"]["files_unmodified"], 1, "{second}");
    assert_eq!(second["summary"]["excluded"], 2, "{second}");
    let third = backup(&env, &src, &[]);
    assert_eq!(listed(&env, &third), listed(&env, &first));
    let target = env.path("restored");
    env.ok(&[
        "restore",
        third["snapshot_id"].as_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ]);
    assert_eq!(contents(&target.join("src")), contents(&src));
}

/// Volume excludes through the real API server and a kubelet tree made of plain folders: a
/// pod's `backup.cairn.io/exclude-volumes` leaves a claim out (reported with why), a claim's
/// `backup.cairn.io/exclude-paths` leaves paths out of its volume (anchored at the volume's
/// root), and a claim whose patterns are bad is backed up whole, with an error. A real kubelet
/// would add mounts (each volume on its own file system) and running pods; neither changes
/// what is read below the folder the kubelet mounts, which is what this test checks.
#[test]
fn volume_annotations_leave_out_claims_and_paths() {
    use common::kube::Kube;
    let kube = Kube::connect();
    let env = Env::new();
    let s = common::kube::suffix();
    let ns = format!("excl-{s}");
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    let claim = |name: &str, annotations: Value| {
        let pv = format!("pv-{name}-{s}");
        kube.create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}}}}));
        pv
    };
    let data = claim(
        "data",
        json!({"backup.cairn.io/exclude-paths": "/cache, *.tmp ,!keep.tmp"}),
    );
    let scratch = claim("scratch", json!({}));
    let broken = claim(
        "broken",
        json!({"backup.cairn.io/exclude-paths": "*.tmp,[oops"}),
    );
    let pod = |name: &str, annotations: Value, claims: &[&str]| {
        let volumes: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        let pod = kube.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "busybox"}],
                "volumes": volumes}}));
        pod["metadata"]["uid"].as_str().unwrap().to_string()
    };
    let app = pod(
        "app",
        json!({"backup.cairn.io/exclude-volumes": "other, scratch"}),
        &["data", "scratch"],
    );
    let other = pod("other", json!({}), &["broken"]);
    let kubelet = env.path("kubelet");
    let mount = |uid: &str, pv: &str| {
        kubelet.join(format!("pods/{uid}/volumes/kubernetes.io~host-path/{pv}"))
    };
    write_tree(
        &mount(&app, &data),
        &[
            ("cache/x", b"x"),
            ("sub/cache/y", b"y"),
            ("a.tmp", b"a"),
            ("keep.tmp", b"k"),
            ("b.txt", b"b"),
        ],
    );
    write_tree(&mount(&app, &scratch), &[("junk", b"j")]);
    write_tree(&mount(&other, &broken), &[("a.tmp", b"a"), ("b.txt", b"b")]);

    let out = env.run(&[
        "--json",
        "k8s",
        "backup-volumes",
        "--node",
        "node-a",
        "--kubelet-root",
        kubelet.to_str().unwrap(),
        "--cluster",
        "test",
        "--kubeconfig",
        kube.kubeconfig.to_str().unwrap(),
        "-n",
        &ns,
    ]);
    // the bad annotation is an error of its claim; the other claims are backed up as asked
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let report = json_result(&out.stdout);
    assert_eq!(
        report["excluded"],
        json!([format!(
            "{ns}/scratch: volume scratch of pod {ns}/app is listed in its backup.cairn.io/exclude-volumes annotation"
        )]),
        "{report}"
    );
    let snaps = report["snapshots"].as_array().unwrap();
    let of = |claim: &str| snaps.iter().find(|s| s["claim"] == claim).unwrap().clone();
    assert_eq!(snaps.len(), 2, "{report}");

    let data = of("data");
    assert_eq!(data["errors"], json!([]), "{report}");
    assert_eq!(data["excluded"], 2, "/cache and a.tmp: {report}");
    assert_eq!(
        env.ls_paths(data["snapshot"].as_str().unwrap()),
        [
            "/volumes",
            "/volumes/data",
            "/volumes/data/b.txt",
            "/volumes/data/keep.tmp",
            "/volumes/data/sub",
            "/volumes/data/sub/cache",
            "/volumes/data/sub/cache/y",
        ]
    );

    let broken = of("broken");
    let errors = broken["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    let why = errors[0].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "annotation backup.cairn.io/exclude-paths of claim {ns}/broken: bad pattern \"[oops\""
        )) && why.contains("backed up whole"),
        "{why}"
    );
    assert_eq!(broken["excluded"], 0, "{report}");
    assert_eq!(
        env.ls_paths(broken["snapshot"].as_str().unwrap()),
        [
            "/volumes",
            "/volumes/broken",
            "/volumes/broken/a.tmp",
            "/volumes/broken/b.txt"
        ]
    );
}
