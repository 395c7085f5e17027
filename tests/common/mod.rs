//! Helpers shared by the integration tests: run the real `cairn` binary against a repository in
//! a temporary folder, in a fresh bucket of the S3 server at `CAIRN_TEST_S3` (the test
//! script runs every test on both), or in a fresh container of Azurite at `CAIRN_TEST_AZURE`
//! (the test script runs the store's tests there too), build source trees with every kind of entry, and compare
//! trees field by field.
#![allow(dead_code)]

pub mod backend;
pub mod kube;
pub use backend::Backend;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;

pub const PASSWORD: &str = "correct horse battery staple";

/// A repository (folder or bucket), cache and password file; local files in one temporary
/// folder.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The repository location, as `--repo` takes it.
    pub repo: String,
    /// Raw access to the repository's objects.
    pub objects: Backend,
    pub cache: PathBuf,
    pub password_file: PathBuf,
}

impl Env {
    /// A fresh environment with an initialised repository.
    pub fn new() -> Env {
        let env = Env::empty();
        env.ok(&["init"]);
        env
    }

    /// A fresh environment without a repository.
    pub fn empty() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        let objects = Backend::fresh(&dir.path().join("repo"), false);
        Env {
            repo: objects.location.clone(),
            objects,
            cache: dir.path().join("cache"),
            password_file,
            dir,
        }
    }

    /// Another process's view of this environment's repository: its own cache and folder.
    pub fn sharing(&self, cache: PathBuf) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            repo: self.repo.clone(),
            objects: self.objects.clone(),
            cache,
            password_file: self.password_file.clone(),
        }
    }

    /// A path inside the temporary folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The command with this environment's repository, cache and password.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("CAIRN_REPOSITORY", &self.repo)
            .env("CAIRN_CACHE_DIR", &self.cache)
            .env("CAIRN_PASSWORD_FILE", &self.password_file)
            .envs(self.objects.env_vars())
            .stdin(std::process::Stdio::null());
        c
    }

    /// The command run as an unprivileged user: as root, through `setpriv` as `nobody` after
    /// handing the whole temporary folder to that user, so that file permissions apply.
    pub fn cmd_unprivileged(&self, args: &[&str]) -> Command {
        let c = self.cmd(args);
        if !is_root() {
            return c;
        }
        let (uid, gid) = (Some(65534.into()), Some(65534.into()));
        for p in all_entries(self.dir.path())
            .iter()
            .chain([&self.dir.path().to_owned()])
        {
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                p,
                uid,
                gid,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
        let mut s = Command::new("setpriv");
        s.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(c.get_program())
            .args(c.get_args())
            .env_clear()
            .envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(std::process::Stdio::null());
        s
    }

    /// Runs cairn; returns its output whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs cairn and asserts success; returns standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    /// Runs cairn with `--json` and parses its result (the last line).
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json_result(self.ok(&all).as_bytes())
    }

    /// Backs up `paths` and returns the snapshot id.
    pub fn backup(&self, paths: &[&Path]) -> String {
        let mut args = vec!["--json", "backup"];
        args.extend(paths.iter().map(|p| p.to_str().unwrap()));
        let v = json_result(self.ok(&args).as_bytes());
        v["snapshot_id"].as_str().unwrap().to_owned()
    }

    /// The ids of the repository's snapshots, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The paths `cairn ls SNAPSHOT` lists, in its order.
    pub fn ls_paths(&self, snapshot: &str) -> Vec<String> {
        self.json(&["ls", snapshot])
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Opens the repository in this process through the engine (for tests that plant objects).
    pub fn open_repo(&self) -> cairn_engine::repository::Repository {
        cairn_engine::repository::Repository::open(
            &cairn_engine::repository::store::Location::parse(&self.repo).unwrap(),
            PASSWORD.as_bytes(),
            &self.cache,
        )
        .unwrap()
    }

    /// Asserts that `check --read-data` finds nothing wrong.
    pub fn assert_intact(&self) {
        let out = self.run(&["check", "--read-data"]);
        assert!(
            out.status.success(),
            "check --read-data failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }

    /// Lets the store's clock pass the marks just written: gc dates them in the store's clock,
    /// which S3 and Azure give in whole seconds, so a sweep right after a mark waits a second
    /// there.
    pub fn let_marks_fall_due(&self) {
        if self.objects.bucket.is_some() {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
    }

    /// Total bytes of all repository objects.
    pub fn repo_size(&self) -> u64 {
        self.objects.size("")
    }
}

/// Asserts that the cairn run of `args` that gave `out` succeeded; returns its standard output.
pub fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}\n{}",
        out.status,
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The result of a `--json` run: its last line; every line before it must be a status event.
pub fn json_result(stdout: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(stdout).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let last = lines.pop().unwrap_or_else(|| panic!("no JSON output"));
    for event in &lines {
        assert_eq!(event["message_type"], "status", "{text}");
    }
    last
}

/// A target repository made to chunk and name data like `source`'s.
pub fn target_for(source: &Env, on_s3: bool) -> Env {
    let mut target = Env::empty();
    if on_s3 {
        target.objects = Backend::s3(&backend::create_bucket(false), "offsite");
        target.repo = target.objects.location.clone();
    }
    std::fs::write(&target.password_file, "another password\n").unwrap();
    let mut init = target.cmd(&["init", "--copy-chunker-params-from", &source.repo]);
    init.env("CAIRN_FROM_PASSWORD_FILE", &source.password_file);
    let out = init.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    target
}

/// The row of `cairn report --json` whose promise starts with `starts`.
pub fn protection<'a>(report: &'a serde_json::Value, starts: &str) -> &'a serde_json::Value {
    report["protections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["promise"].as_str().unwrap().starts_with(starts))
        .unwrap_or_else(|| panic!("no protection {starts:?} in {report:#}"))
}

/// Asserts that `value` matches the documented schema `docs/json/<name>.schema.json`.
pub fn assert_schema(name: &str, value: &serde_json::Value) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/json/{name}.schema.json"));
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name} schema: {errors:#?}\n{value:#}");
}

/// The result of a `--json` run of a long command, every status event before it checked against
/// the status schema and the result against schema `name`; also returns the events.
pub fn checked_result(name: &str, stdout: &[u8]) -> (serde_json::Value, Vec<serde_json::Value>) {
    let events: Vec<serde_json::Value> = std::str::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (result, events) = events.split_last().expect("some JSON output");
    for e in events {
        assert_schema("status", e);
    }
    assert_schema(name, result);
    (result.clone(), events.to_vec())
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every regular file below `dir`.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Relative path → content hash of every regular file below `dir`.
pub fn contents(dir: &Path) -> BTreeMap<String, String> {
    all_files(dir)
        .into_iter()
        .map(|f| {
            (
                f.strip_prefix(dir).unwrap().display().to_string(),
                blake_hex(&std::fs::read(&f).unwrap()),
            )
        })
        .collect()
}

/// A folder `name` in the environment holding one file of `len` noise bytes per
/// (file name, seed).
pub fn dir_with(env: &Env, name: &str, len: usize, files: &[(&str, u64)]) -> PathBuf {
    let d = env.path(name);
    std::fs::create_dir_all(&d).unwrap();
    for (f, seed) in files {
        std::fs::write(d.join(f), noise(*seed, len)).unwrap();
    }
    d
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, nsecs);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Builds a tree under `root` with every kind of entry a restore must rebuild.
pub fn make_full_tree(root: &Path) {
    use std::fs;
    fs::create_dir_all(root.join("docs/nested/deeper")).unwrap();
    fs::create_dir(root.join("empty dir")).unwrap();
    fs::write(
        root.join("docs/readme.txt"),
        "the quick brown fox\n".repeat(500),
    )
    .unwrap();
    fs::write(root.join("docs/nested/empty"), b"").unwrap();
    fs::write(
        root.join("docs/nested/deeper/big.bin"),
        noise(1, 12 * 1024 * 1024 + 12345),
    )
    .unwrap();
    fs::write(root.join("name with spaces"), b"spaces").unwrap();
    fs::write(root.join("new\nline"), b"newline").unwrap();
    fs::write(
        root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")),
        b"not utf-8",
    )
    .unwrap();
    fs::write(root.join("unicode-☃"), b"snowman").unwrap();
    // modes, including setuid/setgid/sticky bits
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("private"), b"secret-ish").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("empty dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    // symlinks: relative, absolute, dangling, to a directory
    std::os::unix::fs::symlink("docs/readme.txt", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("docs", root.join("link-dir")).unwrap();
    // hard links
    fs::write(root.join("hard-a"), b"linked content").unwrap();
    fs::hard_link(root.join("hard-a"), root.join("docs/hard-b")).unwrap();
    // fifo
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    // sparse file: 1 MiB data, 64 MiB hole, 1 MiB data, trailing hole
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(root.join("sparse.img")).unwrap();
        f.write_all(&noise(2, 1 << 20)).unwrap();
        f.seek(SeekFrom::Current(64 << 20)).unwrap();
        f.write_all(&noise(3, 1 << 20)).unwrap();
        f.set_len((66 << 20) + (16 << 20)).unwrap();
    }
    // user xattrs (tmpfs and ext4 both support them)
    xattr::set(root.join("docs/readme.txt"), "user.comment", b"hello xattr").unwrap();
    xattr::set(root.join("docs"), "user.dir", b"\x00\x01binary").unwrap();
    if is_root() {
        // device node and ownership need root
        nix::sys::stat::mknod(
            &root.join("null-device"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        nix::unistd::chown(&root.join("private"), Some(1234.into()), Some(5678.into())).unwrap();
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &root.join("link-rel"),
            Some(4321.into()),
            Some(8765.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
    // distinctive times, with nanoseconds, set last (children before parents)
    for (i, p) in all_entries(root).iter().rev().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 1000, 123_456_789 + i as i64);
    }
}

/// Every entry below `root` (not `root` itself), depth first, sorted.
pub fn all_entries(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    fn rec(d: &Path, out: &mut Vec<PathBuf>) {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            out.push(p.clone());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                rec(&p, out);
            }
        }
    }
    rec(root, &mut out);
    out
}

/// Everything a restore must preserve about one entry, as comparable text fields.
pub fn describe(path: &Path, with_owner: bool) -> BTreeMap<&'static str, String> {
    let m = std::fs::symlink_metadata(path).unwrap();
    let ft = m.file_type();
    let mut d = BTreeMap::new();
    d.insert("mode", format!("{:o}", m.mode()));
    d.insert("mtime", format!("{}.{:09}", m.mtime(), m.mtime_nsec()));
    if ft.is_symlink() {
        d.insert(
            "target",
            std::fs::read_link(path).unwrap().display().to_string(),
        );
    }
    if with_owner {
        d.insert("owner", format!("{}:{}", m.uid(), m.gid()));
    }
    if ft.is_file() {
        d.insert("size", m.len().to_string());
        d.insert("content", blake_hex(&std::fs::read(path).unwrap()));
        d.insert("links", m.nlink().to_string());
    }
    if ft.is_char_device() || ft.is_block_device() {
        d.insert("rdev", m.rdev().to_string());
    }
    let mut xs: Vec<String> = xattr::list(path)
        .map(|l| {
            l.filter(|n| n.as_bytes().starts_with(b"user."))
                .map(|n| {
                    let v = xattr::get(path, &n).unwrap().unwrap_or_default();
                    format!(
                        "{}={}",
                        n.to_string_lossy(),
                        base64::engine::general_purpose::STANDARD.encode(v)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    xs.sort();
    d.insert("xattrs", xs.join(","));
    d
}

pub fn blake_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Compares two trees entry by entry, field by field; returns every difference.
pub fn diff_trees(a: &Path, b: &Path, with_owner: bool) -> Vec<String> {
    let rel = |root: &Path| -> Vec<PathBuf> {
        all_entries(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_owned())
            .collect()
    };
    let (ea, eb) = (rel(a), rel(b));
    let mut diffs = vec![];
    if ea != eb {
        diffs.push(format!("entries differ:\n  {ea:?}\n  {eb:?}"));
        return diffs;
    }
    for r in &ea {
        let (da, db) = (
            describe(&a.join(r), with_owner),
            describe(&b.join(r), with_owner),
        );
        for (k, va) in &da {
            if db.get(k) != Some(va) {
                diffs.push(format!("{}: {k}: {va} != {:?}", r.display(), db.get(k)));
            }
        }
    }
    diffs
}

/// Every regular file below `dir` with its bytes, by path relative to `dir`.
pub fn file_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    all_files(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}
