//! `--host`, `--tag` and `--path` select the snapshots that `snapshots`, `forget`, `copy`,
//! `drill`, `report`, `find` and `stats` consider, with restic's semantics: any host, any tag
//! list (a list matching a snapshot that has all its tags), every path.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// The hosts, tags and first path of each listed snapshot, as `host:tag+tag:path` labels.
fn labels(listing: &Value) -> BTreeSet<String> {
    listing
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let tags: Vec<&str> = s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let path = s["paths"][0].as_str().unwrap();
            let folder = path.rsplit('/').next().unwrap();
            format!(
                "{}:{}:{folder}",
                s["host"].as_str().unwrap(),
                tags.join("+")
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn hosts_tags_and_paths_select_the_snapshots_every_command_considers() {
    let env = Env::new();
    let web = dir_with(&env, "web", 2_000, &[("index.html", 1)]);
    let db = dir_with(&env, "db", 3_000, &[("dump.sql", 2)]);
    let (web_arg, db_arg) = (web.to_str().unwrap(), db.to_str().unwrap());
    for (host, tags, path) in [
        ("alpha", "daily,web", web_arg),
        ("alpha", "daily,db", db_arg),
        ("beta", "weekly,db", db_arg),
        ("beta", "daily", web_arg),
    ] {
        env.ok(&["backup", path, "--host", host, "--tag", tags]);
    }
    let list = |filters: &[&str]| {
        let mut args = vec!["snapshots"];
        args.extend_from_slice(filters);
        labels(&env.json(&args))
    };
    assert_eq!(list(&[]).len(), 4);
    assert_eq!(
        list(&["--host", "beta"]),
        set(&["beta:weekly+db:db", "beta:daily:web"])
    );
    assert_eq!(
        list(&["--host", "beta", "--host", "alpha"]).len(),
        4,
        "hosts: any"
    );
    assert_eq!(
        list(&["--tag", "daily,db"]),
        set(&["alpha:daily+db:db"]),
        "a tag list: all of its tags"
    );
    assert_eq!(
        list(&["--tag", "daily,db", "--tag", "weekly"]),
        set(&["alpha:daily+db:db", "beta:weekly+db:db"]),
        "tag lists: any"
    );
    assert_eq!(
        list(&["--path", db_arg, "--host", "alpha"]),
        set(&["alpha:daily+db:db"])
    );
    assert!(
        list(&["--path", db_arg, "--path", web_arg]).is_empty(),
        "paths: all"
    );
    // a relative path is taken from the current folder
    let mut relative = env.cmd(&["--json", "snapshots", "--path", "web"]);
    relative.current_dir(env.dir.path());
    let out = relative.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        labels(&json_result(&out.stdout)),
        set(&["alpha:daily+web:web", "beta:daily:web"])
    );

    // a Kubernetes namespace selects by its tag; none of these has one
    assert!(list(&["--namespace", "shop"]).is_empty());

    // find and stats look only at the selected snapshots
    let found = env.json(&["find", "*.sql", "--host", "beta"]);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let stats = env.json(&["stats", "--tag", "web"]);
    assert_eq!(stats["snapshots"], 1, "{stats}");

    // copy only what the filter selects (no --all needed with a filter)
    let target = target_for(&env, false);
    let copied = env.json(&[
        "copy",
        "--to",
        &target.repo,
        "--to-password-file",
        target.password_file.to_str().unwrap(),
        "--tag",
        "db",
    ]);
    assert_eq!(copied["snapshots_copied"], 2, "{copied}");
    assert_eq!(
        labels(&target.json(&["snapshots"])),
        set(&["alpha:daily+db:db", "beta:weekly+db:db"])
    );

    // drill the newest of each group among the selected, and report on them alone
    let drill = env.json(&["drill", "--share", "100%", "--host", "alpha"]);
    let drilled = drill["record"]["snapshots"].as_array().unwrap();
    assert_eq!(drilled.len(), 2, "{drill}");
    let report = env.json(&["report", "--host", "beta"]);
    let hosts: BTreeSet<&str> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, BTreeSet::from(["beta"]), "{report}");

    // forget applies its policy to the selected snapshots only
    let forget = env.json(&[
        "forget",
        "--keep-last",
        "0",
        "--group-by",
        "",
        "--host",
        "beta",
    ]);
    assert_eq!(forget["removed"], 2, "{forget}");
    assert_eq!(
        list(&[]),
        set(&["alpha:daily+web:web", "alpha:daily+db:db"])
    );
}
