//! S3 Object Lock against the real S3 server the test script starts (moto): every object Cairn
//! writes carries a compliance retention, deleting one with the same credentials is refused,
//! `forget` and `gc` keep what is still locked and say so, and the snapshot still restores.
//! moto gaps (see the issue): it does not check signatures, it has no GetObjectRetention (the
//! retention is read from HeadObject here), and it would let a compliance lock be shortened,
//! which nothing here relies on. Without `AWS_ENDPOINT_URL` (outside `scripts/test.sh`) these
//! tests cannot run and say so.

mod common;

use common::backend::{create_bucket, s3_endpoint};
use common::*;

fn lock_env() -> Option<Env> {
    lock_env_for_days(2)
}

/// An object-locked repository whose objects stay locked `days` days.
fn lock_env_for_days(days: u32) -> Option<Env> {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        eprintln!("no S3 test server (AWS_ENDPOINT_URL unset): run scripts/test.sh");
        return None;
    }
    let mut env = Env::empty();
    env.objects = Backend::s3(&create_bucket(true), "repo");
    env.repo = env.objects.location.clone();
    env.ok(&[
        "init",
        "--object-lock",
        "compliance",
        "--lock-days",
        &days.to_string(),
    ]);
    Some(env)
}

/// A request to the test S3 server with curl: status and body (or headers, for HEAD). moto
/// answers some requests only when they carry an Authorization header, which it does not verify.
fn s3_request(method: &str, env: &Env, path_and_query: &str) -> (u16, String) {
    let url = format!(
        "{}/{}/{path_and_query}",
        s3_endpoint(),
        env.objects.bucket.as_ref().unwrap()
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", method, "-w", "\n%{http_code}", &url, "-H"])
        .arg("Authorization: AWS4-HMAC-SHA256 Credential=cairn-test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0")
        .args(if method == "HEAD" { &["-I"][..] } else { &[][..] })
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

/// The object's lock mode and retain-until date, from HeadObject.
fn head_lock(env: &Env, name: &str) -> (String, chrono::DateTime<chrono::Utc>) {
    let (code, headers) = s3_request("HEAD", env, &format!("repo/{name}"));
    assert_eq!(code, 200, "HEAD {name}");
    let headers = headers.to_ascii_lowercase();
    let value = |h: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{h}: ")))
            .unwrap_or_else(|| panic!("{name} has no {h}: {headers}"))
            .trim()
            .to_owned()
    };
    let until = value("x-amz-object-lock-retain-until-date").to_ascii_uppercase();
    (
        value("x-amz-object-lock-mode"),
        chrono::DateTime::parse_from_rfc3339(&until).unwrap().into(),
    )
}

/// The ids of an object's versions and of its delete markers.
fn versions(env: &Env, name: &str) -> (Vec<String>, Vec<String>) {
    let (code, body) = s3_request("GET", env, &format!("?versions&prefix=repo/{name}"));
    assert_eq!(code, 200, "{body}");
    let ids = |element: &str| {
        body.split(&format!("<{element}>"))
            .skip(1)
            .map(|block| {
                let id = block.split("<VersionId>").nth(1).unwrap();
                id.split('<').next().unwrap().to_owned()
            })
            .collect::<Vec<_>>()
    };
    (ids("Version"), ids("DeleteMarker"))
}

#[test]
fn every_object_is_locked_and_cannot_be_deleted() {
    let Some(env) = lock_env() else { return };
    let src = dir_with(&env, "src", 2 << 20, &[("a", 1)]);
    env.backup(&[&src]);
    let names = env.objects.names("");
    for dir in ["config", "keys/", "data/", "index/", "snapshots/"] {
        assert!(
            names.iter().any(|n| n.starts_with(dir)),
            "no {dir} in {names:?}"
        );
    }
    // the report reads each snapshot's lock: it ends before the snapshot expires (2 lock days,
    // 720 h retention), so erasing early is not prevented for the snapshot's whole life
    let report = env.json(&["report"]);
    assert_schema("report", &report);
    let snapshot = names.iter().find(|n| n.starts_with("snapshots/")).unwrap();
    let until: chrono::DateTime<chrono::Utc> = report["repository"]["earliest_unlock"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(until, head_lock(&env, snapshot).1);
    assert_eq!(report["repository"]["object_lock"]["mode"], "compliance");
    let lock = protection(&report, "Backups cannot be erased early");
    assert_eq!(lock["status"], "not_met", "{lock:#}");
    assert!(
        lock["how"]
            .as_str()
            .unwrap()
            .contains("1 snapshots not locked until they expire")
    );
    let now = chrono::Utc::now();
    for name in &names {
        let (mode, until) = head_lock(&env, name);
        assert_eq!(mode, "compliance", "{name}");
        let days = (until - now).num_hours() as f64 / 24.0;
        assert!((1.9..=2.01).contains(&days), "{name} locked {days} days");
    }
    // No version can be erased, not even with the credentials that wrote it.
    for name in names
        .iter()
        .filter(|n| n.starts_with("data/") || n.starts_with("snapshots/"))
    {
        let version = versions(&env, name).0.remove(0);
        let (code, body) = s3_request("DELETE", &env, &format!("repo/{name}?versionId={version}"));
        assert_eq!(
            code, 403,
            "{name}: erasing its version was not refused: {body}"
        );
    }
    // A plain delete only hides the snapshot behind a delete marker: its locked version stays
    // whole, and putting it back restores the repository.
    let snapshot = names.iter().find(|n| n.starts_with("snapshots/")).unwrap();
    let original = env.objects.read(snapshot);
    env.objects.delete(snapshot);
    assert!(env.snapshot_ids().is_empty());
    let (kept, markers) = versions(&env, snapshot);
    assert_eq!(
        (kept.len(), markers.len()),
        (1, 1),
        "the locked version and a marker"
    );
    let kept = env.objects.read_version(snapshot, &kept[0]);
    assert_eq!(kept, original);
    env.objects.write(snapshot, kept);
    assert_eq!(env.snapshot_ids().len(), 1);
    env.assert_intact();
}

#[test]
fn forget_and_gc_keep_what_is_locked_and_report_it() {
    let Some(env) = lock_env() else { return };
    let src = dir_with(&env, "src", 3 << 20, &[("a", 2)]);
    let first = env.backup(&[&src]);
    std::fs::write(src.join("a"), noise(3, 3 << 20)).unwrap();
    env.backup(&[&src]);

    // the policy lets the first snapshot go, but its lock has not passed: it stays
    let forget = env.json(&["forget", "--keep-last", "1"]);
    assert_eq!(forget["removed"], 0, "{forget}");
    assert_eq!(forget["locked"].as_array().unwrap().len(), 1, "{forget}");
    assert_eq!(env.snapshot_ids().len(), 2);

    // a pack no index lists (as an interrupted backup leaves), locked like everything else
    let leftover = {
        let repo = env.open_repo();
        let mut pack = cairn_engine::format::pack::PackWriter::default();
        let plain = noise(4, 100_000);
        let sealed = cairn_engine::format::blob::seal(
            repo.keys(),
            cairn_engine::format::crypto::Domain::Blob,
            0,
            &plain,
        );
        pack.add(
            cairn_engine::format::blob::BlobKind::Data,
            repo.keys().blob_id(&plain),
            &sealed,
            plain.len() as u32,
        );
        let (id, bytes, _) = pack.finish(repo.keys());
        repo.store()
            .put(
                &cairn_engine::repository::store::ObjectKind::Pack.path(&id),
                bytes,
            )
            .unwrap();
        format!("data/{}/{}", &id.to_hex()[..2], id.to_hex())
    };
    let segments_before = env.objects.names("index").len();
    assert!(segments_before >= 2);

    // a pack in no index goes through mark-then-sweep like any other: marked first
    let marking = env.json(&["gc", "--safety-interval", "0s"]);
    assert_eq!(marking["packs_marked"], 1, "{marking}");
    env.let_marks_fall_due();
    let gc = env.json(&["gc", "--safety-interval", "0s"]);
    assert_eq!(gc["packs_deleted"], 0, "{gc}");
    assert_eq!(gc["bytes_freed"], 0, "{gc}");
    // the leftover pack and every superseded index segment are still locked
    assert!(
        gc["objects_locked"].as_u64().unwrap() as usize > segments_before,
        "{gc}"
    );
    assert!(gc["bytes_locked"].as_u64().unwrap() > 100_000, "{gc}");
    assert!(env.objects.exists(&leftover));
    // superseded segments linger, and readers ignore them
    assert_eq!(env.objects.names("index").len(), segments_before + 2);
    env.assert_intact();

    let t = env.path("t");
    env.ok(&["restore", &first, "--target", t.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(t.join("src/a")).unwrap(),
        noise(2, 3 << 20),
        "the forgotten-but-locked snapshot still restores"
    );
    // and the repository stays usable
    std::fs::write(src.join("b"), b"more").unwrap();
    env.backup(&[&src]);
    env.ok(&["gc", "--safety-interval", "0s"]);
    env.assert_intact();
}

#[test]
fn gc_extends_the_locks_of_what_is_still_needed() {
    let Some(env) = lock_env() else { return };
    let src = dir_with(&env, "src", 1 << 20, &[("a", 5)]);
    env.backup(&[&src]);
    let before: Vec<_> = env
        .objects
        .names("")
        .into_iter()
        .map(|n| {
            let until = head_lock(&env, &n).1;
            (n, until)
        })
        .collect();
    // retain-until dates have a resolution of one second
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // by default only locks ending within half the lock days (1 day) are extended: none here
    let gc = env.json(&["gc"]);
    assert_eq!(gc["locks_extended"], 0, "{gc}");
    let gc = env.json(&["gc", "--extend-locks-within", "3days"]);
    // everything but the snapshot and the index segment the first gc superseded, plus the
    // segment it wrote
    assert_eq!(
        gc["locks_extended"].as_u64().unwrap(),
        before.len() as u64 - 1,
        "{gc}"
    );
    let superseded = &before
        .iter()
        .find(|(n, _)| n.starts_with("index/"))
        .unwrap()
        .0;
    for (name, old) in &before {
        let (mode, new) = head_lock(&env, name);
        assert_eq!(mode, "compliance");
        if name.starts_with("snapshots/") || name == superseded {
            // a snapshot's own lock covers its retention, and a superseded segment must go
            assert_eq!(new, *old, "{name}: lock extended");
        } else {
            assert!(new > *old, "{name}: lock not extended ({old} → {new})");
        }
    }
    let conflicting = env.run(&["gc", "--no-extend-locks", "--extend-locks-within", "3days"]);
    assert_eq!(conflicting.status.code(), Some(2));
}

#[test]
fn the_report_counts_snapshots_locked_beyond_their_retention_as_protected() {
    // 31 lock days cover the default 720 h retention
    let Some(env) = lock_env_for_days(31) else {
        return;
    };
    let src = dir_with(&env, "src", 1000, &[("a", 1)]);
    env.backup(&[&src]);
    let report = env.json(&["report"]);
    let lock = protection(&report, "Backups cannot be erased early");
    assert_eq!(lock["status"], "met", "{lock:#}");
    let snapshot = &report["groups"][0]["snapshots"][0];
    let until: chrono::DateTime<chrono::Utc> =
        snapshot["locked_until"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        snapshot["expires"].as_str().unwrap().parse().unwrap();
    assert!(until > expires, "{snapshot:#}");
}

#[test]
fn a_removed_key_is_hidden_and_its_lock_no_longer_extended() {
    let Some(env) = lock_env() else { return };
    let second = env.path("second");
    std::fs::write(&second, "second password\n").unwrap();
    let added = env.json(&[
        "key",
        "add",
        "--new-password-file",
        second.to_str().unwrap(),
    ]);
    let id = added["id"].as_str().unwrap().to_owned();
    let name = format!("keys/{id}");
    let locked = head_lock(&env, &name).1;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.ok(&["key", "remove", &id[..12]]);
    assert_eq!(env.json(&["key", "list"]).as_array().unwrap().len(), 1);
    let mut with_second = env.cmd(&["snapshots"]);
    with_second.env("CAIRN_PASSWORD_FILE", &second);
    assert_eq!(with_second.output().unwrap().status.code(), Some(1));
    // its locked version stays, behind a delete marker, for the lifecycle rule to remove
    // once the lock has passed; gc no longer extends that lock
    let (kept, markers) = versions(&env, &name);
    assert_eq!((kept.len(), markers.len()), (1, 1));
    let gc = env.json(&["gc", "--extend-locks-within", "3days"]);
    assert!(gc["locks_extended"].as_u64().unwrap() > 0, "{gc}");
    let (code, headers) = s3_request("HEAD", &env, &format!("repo/{name}?versionId={}", kept[0]));
    assert_eq!(code, 200, "{headers}");
    let until = headers
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-amz-object-lock-retain-until-date: ")
                .map(|v| v.trim().to_ascii_uppercase())
        })
        .unwrap();
    let until: chrono::DateTime<chrono::Utc> =
        chrono::DateTime::parse_from_rfc3339(&until).unwrap().into();
    assert_eq!(until, locked, "the removed key's lock was extended");
    env.assert_intact();
}

/// When `--keep-weekly n` stops keeping a snapshot taken at `t`, at the latest (while the group
/// is backed up weekly): the end of its ISO week (Monday 00:00 UTC) plus `n` weeks.
fn weekly_bound(t: chrono::DateTime<chrono::Utc>, n: i64) -> chrono::DateTime<chrono::Utc> {
    use chrono::Datelike;
    let monday = t.date_naive() - chrono::Duration::days(t.weekday().num_days_from_monday().into());
    monday.and_hms_opt(0, 0, 0).unwrap().and_utc() + chrono::Duration::weeks(1 + n)
}

/// The data packs in the repository.
fn packs(env: &Env) -> Vec<String> {
    env.objects.names("data")
}

#[test]
fn forget_extends_the_locks_of_kept_snapshots_and_their_data_as_long_as_the_policy_keeps_them() {
    let Some(env) = lock_env() else { return };
    let now = chrono::Utc::now();
    // an old snapshot (three weeks ago) of a and b, then one of a and c today: a's pack is shared
    let src = dir_with(&env, "src", 1 << 20, &[("a", 1), ("b", 2)]);
    let then = (now - chrono::Duration::days(21))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let old_time: chrono::DateTime<chrono::Utc> = then.parse().unwrap();
    let old = env.json(&["backup", "--time", &then, src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_packs = packs(&env);
    std::fs::remove_file(src.join("b")).unwrap();
    std::fs::write(src.join("c"), noise(3, 1 << 20)).unwrap();
    let new = env.backup(&[&src]);
    let new_time: chrono::DateTime<chrono::Utc> = env.json(&["cat", "snapshot", &new])["time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let names = env.objects.names("");
    let before: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), head_lock(&env, n).1))
        .collect();
    // written with 2 lock days: the old snapshot's lock ends before its retention does
    let report = env.json(&["report"]);
    assert_schema("report", &report);
    let entry = |report: &serde_json::Value, id: &str| {
        report["groups"][0]["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(entry(&report, &old)["lock_covers_retention"], false);

    // a dry run shows the extensions and makes none
    let dry = env.json(&["forget", "--keep-weekly", "5", "--dry-run"]);
    let planned = dry["lock_extensions"].as_array().unwrap().clone();
    assert!(!planned.is_empty(), "{dry}");
    for (name, until) in &before {
        assert_eq!(
            head_lock(&env, name).1,
            *until,
            "{name}: changed by a dry run"
        );
    }
    let text = env.ok(&["forget", "--keep-weekly", "5", "--dry-run"]);
    assert!(
        text.contains(&format!(
            "would extend the object locks of {} objects",
            planned.len()
        )),
        "{text}"
    );

    let forget = env.json(&["forget", "--keep-weekly", "5"]);
    assert_eq!(forget["removed"], 0, "{forget}");
    assert_eq!(forget["lock_extensions"], serde_json::Value::Array(planned));
    let (old_bound, new_bound) = (weekly_bound(old_time, 5), weekly_bound(new_time, 5));
    assert!(old_bound > now + chrono::Duration::days(14));
    let until = |name: &str| head_lock(&env, name).1;
    assert_eq!(until(&format!("snapshots/{old}")), old_bound);
    assert_eq!(until(&format!("snapshots/{new}")), new_bound);
    // the packs of the old backup: the one holding a (shared with the new snapshot) gets the
    // later bound, those only the old snapshot needs (its trees, b) the old one's
    let old_untils: Vec<_> = old_packs.iter().map(|p| until(p)).collect();
    assert!(old_untils.contains(&new_bound), "{old_untils:?}");
    assert!(old_untils.contains(&old_bound), "{old_untils:?}");
    assert!(
        old_untils
            .iter()
            .all(|u| *u == old_bound || *u == new_bound),
        "{old_untils:?}"
    );
    for name in packs(&env).iter().filter(|p| !old_packs.contains(p)) {
        assert_eq!(until(name), new_bound, "{name}");
    }
    // what a restore needs besides packs: the config and the key
    assert_eq!(until("config"), new_bound);
    for key in env.objects.names("keys") {
        assert_eq!(until(&key), new_bound);
    }
    // index segments are not: `repair index` rebuilds them from the packs
    for segment in env.objects.names("index") {
        let was = before.iter().find(|(n, _)| *n == segment).unwrap().1;
        assert_eq!(until(&segment), was, "{segment}");
    }

    // the report shows each snapshot's lock, now covering its retention
    let report = env.json(&["report"]);
    assert_schema("report", &report);
    let old_entry = entry(&report, &old);
    assert_eq!(old_entry["lock_covers_retention"], true, "{old_entry:#}");
    let shown: chrono::DateTime<chrono::Utc> =
        old_entry["locked_until"].as_str().unwrap().parse().unwrap();
    assert_eq!(shown, old_bound);
    let lock = protection(&report, "Backups cannot be erased early");
    assert_eq!(lock["status"], "met", "{lock:#}");
    let text = env.ok(&["report"]);
    assert!(
        text.contains(&format!(
            "{}  taken {}, locked until {}, lock covers retention: yes",
            &old[..8],
            old_time.format("%Y-%m-%d %H:%M UTC"),
            old_bound.format("%Y-%m-%d %H:%M UTC")
        )),
        "{text}"
    );

    // locks are only ever extended: a second run changes nothing, and a shorter policy never
    // shortens them
    let again = env.json(&["forget", "--keep-weekly", "5"]);
    assert_eq!(
        again["lock_extensions"].as_array().unwrap().len(),
        0,
        "{again}"
    );
    let shorter = env.json(&["forget", "--keep-weekly", "2"]);
    assert_eq!(
        shorter["lock_extensions"].as_array().unwrap().len(),
        0,
        "{shorter}"
    );
    assert_eq!(until(&format!("snapshots/{old}")), old_bound);
    env.assert_intact();
}
