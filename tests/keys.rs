//! Password management through the real binary: add, list, remove, passwd.

mod common;

use common::*;

#[test]
fn add_list_remove_and_change_passwords() {
    let env = Env::new();
    let second = env.path("second");
    std::fs::write(&second, "second password\n").unwrap();
    let added = env.json(&[
        "key",
        "add",
        "--new-password-file",
        second.to_str().unwrap(),
    ]);
    let added_id = added["id"].as_str().unwrap().to_owned();

    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert_eq!(
        keys.as_array()
            .unwrap()
            .iter()
            .filter(|k| k["current"] == true)
            .count(),
        1
    );

    // the second password opens the repository too
    let mut with_second = env.cmd(&["snapshots"]);
    with_second.env("CAIRN_PASSWORD_FILE", &second);
    assert!(with_second.output().unwrap().status.success());

    // the key in use cannot be removed; the other one can
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = env.run(&["key", "remove", &current[..12]]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("refusing"),
        "{}",
        stderr(&refused)
    );
    env.ok(&["key", "remove", &added_id[..12]]);
    let mut gone = env.cmd(&["snapshots"]);
    gone.env("CAIRN_PASSWORD_FILE", &second);
    let out = gone.output().unwrap();
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));

    // passwd replaces the current key
    let third = env.path("third");
    std::fs::write(&third, "third password\n").unwrap();
    env.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        third.to_str().unwrap(),
    ]);
    assert!(stderr(&env.run(&["snapshots"])).contains("wrong password"));
    let mut with_third = env.cmd(&["--json", "key", "list"]);
    with_third.env("CAIRN_PASSWORD_FILE", &third);
    let out = with_third.output().unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn password_sources_and_their_errors() {
    let env = Env::new();
    // CAIRN_PASSWORD works when no file is given
    let mut c = env.cmd(&["snapshots"]);
    c.env_remove("CAIRN_PASSWORD_FILE")
        .env("CAIRN_PASSWORD", PASSWORD);
    assert!(c.output().unwrap().status.success());
    // nothing given and no terminal: a clear error
    let mut c = env.cmd(&["snapshots"]);
    c.env_remove("CAIRN_PASSWORD_FILE");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no repository password given"),
        "{}",
        stderr(&out)
    );
    // a missing password file names itself
    let mut c = env.cmd(&["snapshots"]);
    c.env("CAIRN_PASSWORD_FILE", env.path("nope"));
    assert!(stderr(&c.output().unwrap()).contains("cannot read the password file"));
}
