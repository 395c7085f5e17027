//! The power-cut harness: a journal of the file-system calls a [`Folder`] makes, a model of
//! what a disk keeps of them when the power fails after any one of them, and tests that cut the
//! power at every such point of a backup and of a forget and two gc runs, then check what is
//! left: `check --read-data` finds nothing wrong and every listed snapshot restores exactly.
//!
//! The model: a file's data is on disk only as of its last flush, and a folder's entries only
//! as of the folder's last flush; what was not flushed is either lost or kept, as an adversary
//! chooses (all lost; all names kept but unflushed data lost; and random choices per entry and
//! per file).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use object_store::PutPayload;

/// One file-system call that changed a folder.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    MkDir(PathBuf),
    Create(PathBuf),
    Write(PathBuf, Vec<u8>),
    SyncFile(PathBuf),
    Rename(PathBuf, PathBuf),
    Link(PathBuf, PathBuf),
    Remove(PathBuf),
    SyncDir(PathBuf),
}

impl Op {
    pub(crate) fn write(path: &Path, payload: &PutPayload) -> Op {
        Op::Write(
            path.to_owned(),
            payload.iter().flat_map(|b| b.iter().copied()).collect(),
        )
    }

    fn path(&self) -> &Path {
        match self {
            Op::MkDir(p)
            | Op::Create(p)
            | Op::Write(p, _)
            | Op::SyncFile(p)
            | Op::Rename(p, _)
            | Op::Link(p, _)
            | Op::Remove(p)
            | Op::SyncDir(p) => p,
        }
    }
}

/// The journals of the folders being watched.
static JOURNALS: Mutex<Vec<(PathBuf, Vec<Op>)>> = Mutex::new(Vec::new());

fn journals() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Vec<Op>)>> {
    JOURNALS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes a call; if it changes a watched folder and succeeds, records it (holding the journal,
/// so that the journal's order is the order the calls took effect).
pub(crate) fn record<T>(op: Op, call: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut journals = journals();
    match journals
        .iter_mut()
        .find(|(root, _)| op.path().starts_with(root))
    {
        Some((_, ops)) => {
            let done = call();
            if done.is_ok() {
                ops.push(op);
            }
            done
        }
        None => {
            drop(journals);
            call()
        }
    }
}

fn watch(root: &Path) {
    journals().push((root.canonicalize().unwrap(), vec![]));
}

fn take(root: &Path) -> Vec<Op> {
    let root = root.canonicalize().unwrap();
    let mut journals = journals();
    let at = journals.iter().position(|(r, _)| *r == root).unwrap();
    journals.remove(at).1
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Entry {
    File(usize),
    Dir,
}

/// A folder's entries: now, and as on disk.
#[derive(Clone, Default)]
struct Dir {
    now: BTreeMap<OsString, Entry>,
    disk: BTreeMap<OsString, Entry>,
}

/// A file's data: now, and as on disk.
#[derive(Clone)]
struct Inode {
    now: Vec<u8>,
    disk: Vec<u8>,
}

/// What a disk holds of a folder tree.
#[derive(Clone)]
struct Model {
    root: PathBuf,
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: Vec<Inode>,
}

/// What an adversary keeps of what was not flushed.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Nothing.
    LoseAll,
    /// Every name (as a journaling file system may), but no unflushed data.
    KeepNames,
    /// Random choices, per entry and per file.
    Random(u64),
}

impl Cut {
    fn keeps(&mut self) -> bool {
        match self {
            Cut::LoseAll => false,
            Cut::KeepNames => unreachable!("asked per kind"),
            Cut::Random(x) => {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                *x & 1 == 1
            }
        }
    }
    fn keeps_name(&mut self) -> bool {
        matches!(self, Cut::KeepNames) || self.keeps()
    }
    fn keeps_data(&mut self) -> bool {
        !matches!(self, Cut::KeepNames) && self.keeps()
    }
}

fn split(p: &Path) -> (PathBuf, OsString) {
    (
        p.parent().unwrap().to_owned(),
        p.file_name().unwrap().to_owned(),
    )
}

impl Model {
    /// A folder tree taken to be wholly on disk.
    fn load(root: &Path) -> Model {
        let mut model = Model {
            root: root.canonicalize().unwrap(),
            dirs: BTreeMap::new(),
            inodes: vec![],
        };
        let root = model.root.clone();
        model.load_dir(&root);
        model
    }

    fn load_dir(&mut self, dir: &Path) {
        let mut entries = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let entry = if e.file_type().unwrap().is_dir() {
                self.load_dir(&e.path());
                Entry::Dir
            } else {
                let data = std::fs::read(e.path()).unwrap();
                self.inodes.push(Inode {
                    now: data.clone(),
                    disk: data,
                });
                Entry::File(self.inodes.len() - 1)
            };
            entries.insert(e.file_name(), entry);
        }
        self.dirs.insert(
            dir.to_owned(),
            Dir {
                now: entries.clone(),
                disk: entries,
            },
        );
    }

    fn inode(&self, p: &Path) -> usize {
        let (dir, name) = split(p);
        match self.dirs[&dir].now[&name] {
            Entry::File(i) => i,
            Entry::Dir => panic!("{} is a folder", p.display()),
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::MkDir(p) => {
                let (dir, name) = split(p);
                self.dirs
                    .get_mut(&dir)
                    .unwrap()
                    .now
                    .insert(name, Entry::Dir);
                self.dirs.entry(p.clone()).or_default();
            }
            Op::Create(p) => {
                self.inodes.push(Inode {
                    now: vec![],
                    disk: vec![],
                });
                let (dir, name) = split(p);
                let file = Entry::File(self.inodes.len() - 1);
                self.dirs.get_mut(&dir).unwrap().now.insert(name, file);
            }
            Op::Write(p, data) => {
                let i = self.inode(p);
                self.inodes[i].now = data.clone();
            }
            Op::SyncFile(p) => {
                let i = self.inode(p);
                self.inodes[i].disk = self.inodes[i].now.clone();
            }
            Op::Rename(from, to) | Op::Link(from, to) => {
                let (from_dir, from_name) = split(from);
                let entry = self.dirs[&from_dir].now[&from_name];
                if matches!(op, Op::Rename(..)) {
                    self.dirs.get_mut(&from_dir).unwrap().now.remove(&from_name);
                }
                let (dir, name) = split(to);
                self.dirs.get_mut(&dir).unwrap().now.insert(name, entry);
            }
            Op::Remove(p) => {
                let (dir, name) = split(p);
                self.dirs.get_mut(&dir).unwrap().now.remove(&name);
            }
            Op::SyncDir(p) => {
                let dir = self.dirs.get_mut(p).unwrap();
                dir.disk = dir.now.clone();
            }
        }
    }

    /// What the disk holds after the power is cut now: file path (relative) → data.
    fn after_cut(&self, mut cut: Cut) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut data = BTreeMap::new();
        self.cut_dir(&self.root, Path::new(""), &mut cut, &mut data, &mut out);
        out
    }

    fn cut_dir(
        &self,
        dir: &Path,
        rel: &Path,
        cut: &mut Cut,
        data: &mut BTreeMap<usize, Vec<u8>>,
        out: &mut BTreeMap<PathBuf, Vec<u8>>,
    ) {
        let d = &self.dirs[dir];
        let names: std::collections::BTreeSet<_> = d.now.keys().chain(d.disk.keys()).collect();
        for name in names {
            let (now, disk) = (d.now.get(name), d.disk.get(name));
            let entry = if now == disk || cut.keeps_name() {
                now
            } else {
                disk
            };
            match entry {
                None => {}
                Some(Entry::Dir) => {
                    self.cut_dir(&dir.join(name), &rel.join(name), cut, data, out);
                }
                Some(Entry::File(i)) => {
                    let inode = &self.inodes[*i];
                    let bytes = data.entry(*i).or_insert_with(|| {
                        if inode.now == inode.disk || cut.keeps_data() {
                            inode.now.clone()
                        } else {
                            inode.disk.clone()
                        }
                    });
                    out.insert(rel.join(name), bytes.clone());
                }
            }
        }
        // an empty folder is kept too (a new, empty `data/<hh>`)
        out.entry(rel.join("")).or_default();
    }
}

/// Writes a cut's files into a new folder.
fn materialize(files: &BTreeMap<PathBuf, Vec<u8>>, to: &Path) {
    for (path, data) in files {
        if path.as_os_str().is_empty() || path.to_string_lossy().ends_with('/') {
            std::fs::create_dir_all(to.join(path)).unwrap();
            continue;
        }
        std::fs::create_dir_all(to.join(path).parent().unwrap()).unwrap();
        std::fs::write(to.join(path), data).unwrap();
    }
}

/// Every cut of `ops` applied to `base`, each once: (cut point, adversary, files).
fn cuts(base: &Model, ops: &[Op]) -> Vec<(usize, Cut, BTreeMap<PathBuf, Vec<u8>>)> {
    let mut model = base.clone();
    let mut seen = HashSet::new();
    let mut out = vec![];
    for k in 0..=ops.len() {
        if k > 0 {
            model.apply(&ops[k - 1]);
        }
        let adversaries = [Cut::LoseAll, Cut::KeepNames]
            .into_iter()
            .chain((1..=4).map(|s| Cut::Random(0x9e37_79b9_7f4a_7c15 ^ (s * 7919 + k as u64))));
        for cut in adversaries {
            let files = model.after_cut(cut);
            let digest = blake3::hash(format!("{files:?}").as_bytes());
            if seen.insert(digest) {
                out.push((k, cut, files));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::format::id::Id;
    use crate::format::snapshot::Snapshot;
    use crate::ops::backup::{self, BackupOptions};
    use crate::ops::check::{self, DataSubset};
    use crate::ops::gc::{self, GcOptions};
    use crate::ops::restore::{self, RestoreOptions};
    use crate::progress::Progress;
    use crate::repository::Repository;
    use crate::repository::store::Location;

    use crate::repository::test_noise as noise;

    /// A source folder named `name` of a few files (several packs of 16 KiB).
    fn source(dir: &Path, name: &str, seed: u64) -> PathBuf {
        let src = dir.join(name);
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a"), noise(seed, 40_000)).unwrap();
        std::fs::write(src.join("sub/b"), noise(seed + 1, 25_000)).unwrap();
        std::fs::write(src.join("shared"), noise(99, 30_000)).unwrap();
        std::fs::write(src.join("small"), name.as_bytes()).unwrap();
        src
    }

    /// The files under `dir` whose path passes through a folder named `name`, keyed by the
    /// rest of their path.
    fn files_under(dir: &Path, name: &str) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(
            dir: &Path,
            name: &str,
            rel: Option<PathBuf>,
            out: &mut BTreeMap<PathBuf, Vec<u8>>,
        ) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let rel = match &rel {
                    Some(r) => Some(r.join(e.file_name())),
                    None if e.file_name() == name => Some(PathBuf::new()),
                    None => None,
                };
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), name, rel, out);
                } else if let Some(r) = rel {
                    out.insert(r, std::fs::read(e.path()).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(dir, name, None, &mut out);
        out
    }

    struct Setup {
        dir: tempfile::TempDir,
        repo: Repository,
        /// Each snapshot taken, with its source folder's name.
        snapshots: Vec<(Id, String)>,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::small_test_repository(dir.path(), 16 * 1024);
        Setup {
            dir,
            repo,
            snapshots: vec![],
        }
    }

    impl Setup {
        fn backup(&mut self, name: &str, seed: u64) {
            let src = source(self.dir.path(), name, seed);
            let out = backup::backup(
                &self.repo,
                &[src],
                &BackupOptions::default(),
                &Progress::default(),
            )
            .unwrap();
            self.snapshots.push((out.id, name.into()));
        }

        fn root(&self) -> PathBuf {
            self.dir.path().join("repo")
        }
    }

    /// Cuts the power at every point of `run` (after every file-system call in the repository's
    /// folder, under every adversary) and checks each repository left: it opens, `check
    /// --read-data` finds no problem, the snapshots `kept` are there, and every listed snapshot
    /// restores exactly. Returns how many calls were cut after, and how many distinct cuts
    /// (repositories left) were checked.
    fn cut_everywhere(
        s: &mut Setup,
        kept: &[usize],
        run: impl FnOnce(&mut Setup),
    ) -> (usize, usize) {
        let root = s.root();
        let base = Model::load(&root);
        watch(&root);
        run(s);
        let ops = take(&root);
        assert!(ops.len() > 20, "{} calls", ops.len());
        let states = cuts(&base, &ops);
        let s = &*s;
        let failures: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = states
                .chunks(states.len().div_ceil(2))
                .map(|chunk| {
                    let ops = &ops;
                    scope.spawn(move || {
                        let mut failed = vec![];
                        for (k, cut, files) in chunk {
                            if let Err(e) = verify(s, kept, files) {
                                let last = k.checked_sub(1).map(|i| match &ops[i] {
                                    Op::Write(p, data) => {
                                        format!("write {} bytes to {}", data.len(), p.display())
                                    }
                                    op => format!("{op:?}"),
                                });
                                let e: String = e.chars().take(400).collect();
                                failed.push(format!(
                                    "power cut after call {k} of {} ({}), {cut:?}: {e}",
                                    ops.len(),
                                    last.unwrap_or_default()
                                ));
                            }
                        }
                        failed
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert!(
            failures.is_empty(),
            "{} of {} cuts lost data, e.g.:\n{}",
            failures.len(),
            states.len(),
            failures[..failures.len().min(5)].join("\n")
        );
        (ops.len(), states.len())
    }

    /// Checks the repository a cut left.
    fn verify(s: &Setup, kept: &[usize], files: &BTreeMap<PathBuf, Vec<u8>>) -> Result<(), String> {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("repo");
        materialize(files, &root);
        let repo = Repository::open(&Location::Local(root), b"pw", &scratch.path().join("cache"))
            .map_err(|e| format!("cannot open: {e}"))?;
        let report = check::check(&repo, DataSubset::All, &Progress::default())
            .map_err(|e| format!("check failed: {e}"))?;
        if !report.problems.is_empty() {
            return Err(format!("check found {:?}", report.problems));
        }
        let listed = Snapshot::load_all(&repo).map_err(|e| format!("cannot list: {e}"))?;
        for &i in kept {
            let id = s.snapshots[i].0;
            if !listed.iter().any(|(l, _)| *l == id) {
                return Err(format!("snapshot {id} is gone"));
            }
        }
        for (id, snap) in &listed {
            let Some((_, name)) = s.snapshots.iter().find(|(t, _)| t == id) else {
                return Err(format!("unknown snapshot {id}"));
            };
            let target = scratch.path().join(format!("restore-{id}"));
            let options = RestoreOptions {
                target: target.clone(),
                no_flush: true,
                ..RestoreOptions::default()
            };
            restore::restore(&repo, snap, &options, &Progress::default())
                .map_err(|e| format!("restore of {id} failed: {e}"))?;
            if files_under(&target, name) != files_under(s.dir.path(), name) {
                return Err(format!("snapshot {id} restores other data"));
            }
        }
        Ok(())
    }

    #[test]
    fn a_backup_survives_a_power_cut_at_every_point() {
        let mut s = setup();
        s.backup("src-one", 1);
        let (calls, cuts) = cut_everywhere(&mut s, &[0], |s| s.backup("src-two", 2));
        eprintln!(
            "backup: power cut after each of {calls} calls, {cuts} distinct repositories left, nothing lost"
        );
    }

    #[test]
    fn forget_and_gc_survive_a_power_cut_at_every_point() {
        let mut s = setup();
        s.backup("src-one", 1);
        s.backup("src-two", 2);
        let (calls, cuts) = cut_everywhere(&mut s, &[1], |s| {
            Snapshot::remove(&s.repo, &s.snapshots[0].0).unwrap();
            let options = GcOptions {
                safety: chrono::Duration::zero(),
                ..GcOptions::default()
            };
            let marked = gc::run(&s.repo, options, &Progress::default()).unwrap();
            assert!(marked.packs_marked > 0, "{marked:?}");
            let swept = gc::run(&s.repo, options, &Progress::default()).unwrap();
            assert!(swept.packs_deleted > 0, "{swept:?}");
        });
        eprintln!(
            "forget and gc: power cut after each of {calls} calls, {cuts} distinct repositories left, nothing lost"
        );
    }

    /// Objects over the multipart threshold go through `put_multipart`: written whole, the
    /// data flushed before the rename and the folder after it.
    #[test]
    fn a_large_object_is_written_whole_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let store = Location::Local(root.clone()).open(true, None).unwrap();
        let path = object_store::path::Path::from("data/ab/large");
        let bytes = noise(5, 40 << 20);
        watch(&root);
        store.put(&path, bytes.clone()).unwrap();
        let ops = take(&root);
        assert_eq!(store.get(&path).unwrap().unwrap(), bytes);
        let at = |want: fn(&Op) -> bool| ops.iter().position(want).unwrap();
        let renamed = at(|op| matches!(op, Op::Rename(..)));
        assert!(at(|op| matches!(op, Op::Write(_, d) if d.len() == 40 << 20)) < renamed);
        assert!(at(|op| matches!(op, Op::SyncFile(_))) < renamed);
        assert!(
            matches!(&ops[renamed + 1], Op::SyncDir(d) if d.ends_with("data/ab")),
            "{:?}",
            &ops[renamed + 1]
        );
        // the new folders were flushed into their parents before
        assert!(at(|op| matches!(op, Op::SyncDir(d) if d.ends_with("repo/data"))) < renamed);
    }
}
