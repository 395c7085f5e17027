//! Restore: rebuilds a snapshot (or parts of it) under a target folder.
//!
//! Safety: every name was checked when its tree was loaded (no `/`, `.`, `..`); existing
//! entries are never followed, and never replaced unless [`Overwrite`] says so; every blob is
//! verified against its id before a byte is written; and every entry but a folder is made under
//! a temporary name and renamed into place once complete ([`partial`]), so that a restore
//! killed at any point never leaves an incomplete entry under its own name, and running it
//! again finishes it.
//!
//! Every entry is made, written and given its metadata by name in a folder held open, or
//! through its own descriptor ([`dirfd`]), never by path: someone who owns a folder inside the
//! target and swaps it for a symlink while the restore runs gets nothing written outside.
//!
//! Files are restored a batch at a time while the walk goes on ([`BATCH_FILES`],
//! [`BATCH_BLOBS`]), so that a restore's memory grows with its folders and hard links, not
//! with its files or blobs.

pub mod fill;
pub mod partial;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag, mkdirat, mknodat};
use nix::unistd::symlinkat;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, Node, NodeKind, RawBytes, SnapshotPath, Tree};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::repository::trees;
use crate::sources::fs::dirfd::{self, Place};
use crate::sources::fs::metadata;
use fill::FileJob;

/// What a restore does with an entry that already exists in the target (a folder is always
/// reused, and gets the snapshot's metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Leave it alone and report it as skipped.
    #[default]
    Never,
    /// Keep a file that already holds the snapshot's contents (same size, then same blob ids),
    /// setting its metadata; replace other files and entries.
    IfChanged,
    /// Replace it.
    Always,
}

/// Settings of one restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Folder to restore into (created if missing).
    pub target: PathBuf,
    /// Paths inside the snapshot to restore (all if empty).
    pub includes: Vec<SnapshotPath>,
    /// What to do with entries that exist already.
    pub overwrite: Overwrite,
    /// Restore ownership (needs root).
    pub chown: bool,
    /// Return without waiting until the restored data is on disk (scratch restores such as
    /// drills, whose files nobody keeps).
    pub no_flush: bool,
}

/// What a restore did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreOutcome {
    /// Files written (hard links included).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Other entries created.
    pub others: u64,
    /// Content bytes written (holes excluded).
    pub bytes: u64,
    /// Files that already held the snapshot's contents and were kept
    /// ([`Overwrite::IfChanged`]).
    pub unchanged: u64,
    /// Temporary entries that an interrupted restore had left, removed.
    pub leftovers_removed: u64,
    /// Entries that already existed and were left alone.
    pub skipped: Vec<String>,
    /// Entries that could not be restored, with why.
    pub errors: Vec<String>,
}

/// The paths a restore is limited to, looked up in time proportional to a path's depth (a
/// drill may name many thousands of files).
struct Includes<'a> {
    /// As given, in order.
    given: &'a [SnapshotPath],
    /// The included paths.
    paths: HashSet<&'a [RawBytes]>,
    /// Their proper ancestors: folders on the way to one.
    ancestors: HashSet<&'a [RawBytes]>,
    /// Included paths found in the snapshot.
    found: HashSet<&'a [RawBytes]>,
}

impl<'a> Includes<'a> {
    fn new(given: &'a [SnapshotPath]) -> Includes<'a> {
        Includes {
            given,
            paths: given.iter().map(Vec::as_slice).collect(),
            ancestors: given
                .iter()
                .flat_map(|p| (0..p.len()).map(|n| &p[..n]))
                .collect(),
            found: HashSet::new(),
        }
    }

    /// The included path that `path` is inside of (itself or an ancestor), if any.
    fn containing(&self, path: &[RawBytes]) -> Option<&'a [RawBytes]> {
        (0..=path.len()).find_map(|n| self.paths.get(&path[..n]).copied())
    }

    /// Whether `path` is restored: nothing is excluded, or it is inside an included path.
    fn inside(&self, path: &[RawBytes]) -> bool {
        self.given.is_empty() || self.containing(path).is_some()
    }

    /// Whether `path` should be visited: it is restored, or on the way to an included path.
    fn wanted(&self, path: &[RawBytes]) -> bool {
        self.inside(path) || self.ancestors.contains(path)
    }

    /// Notes that `path` was visited.
    fn visit(&mut self, path: &[RawBytes]) {
        if let Some(p) = self.containing(path) {
            self.found.insert(p);
        }
    }

    /// The first included path the snapshot does not have.
    fn missing(&self) -> Option<&'a SnapshotPath> {
        self.given
            .iter()
            .find(|p| !self.found.contains(p.as_slice()))
    }

    /// The first included path that the tree `root` does not have, found by walking only the
    /// folders on the way to the included paths (whose listings are kept as they are read).
    fn missing_from(&mut self, repo: &Repository, root: &Id) -> Result<Option<&'a SnapshotPath>> {
        if self.given.is_empty() {
            return Ok(None);
        }
        trees::walk(
            repo,
            root,
            &mut Vec::new(),
            &mut |rel, _| {
                self.visit(rel);
                Ok(self.ancestors.contains(rel))
            },
            // an included path in a damaged listing is missing
            &mut |_, e| match e {
                Error::Damaged { .. } | Error::MissingBlob { .. } => Ok(()),
                e => Err(e),
            },
        )?;
        Ok(self.missing())
    }
}

/// A hard link to make once files are restored.
struct Link {
    at: Place,
    /// The restored (or kept) file it links to.
    first: Place,
    replace: bool,
}

/// A folder held open, with its path (for messages and look-ups only).
type HeldDir = (PathBuf, Arc<File>);

/// Files waiting for the next batch, at most this many: a restore holds the state (and an open
/// descriptor) of at most this many files at once, however many the snapshot holds.
const BATCH_FILES: usize = 1024;

/// Blobs the files waiting for the next batch hold, at most about this many (a file is never
/// split): the fill step's plan keeps a location and its targets for each one (about 200
/// bytes), so large files of many chunks go fewer to a batch and memory stays bounded however
/// many blobs the snapshot holds.
const BATCH_BLOBS: usize = 65_536;

/// Files are restored a batch at a time, in the order the walk finds them (which is the order
/// a backup stored their blobs in), while the walk goes on: the memory a restore needs grows
/// with its folders and hard links, never with its files.
struct Files<'a> {
    repo: &'a Repository,
    options: &'a RestoreOptions,
    progress: &'a Progress,
    /// Files found by the walk and not restored yet (at most [`BATCH_FILES`]).
    pending: Vec<FileJob>,
    /// The blobs they hold (about [`BATCH_BLOBS`] at most).
    pending_blobs: usize,
    /// Whether the local index cache was reread from the repository after a file failed.
    index_reread: bool,
    /// The entry each hard-link group's first name was made (or kept) as, held open until
    /// its later names are linked to that very inode (never to whatever has its name by then,
    /// nor to a new inode that got its number).
    firsts: HashMap<PathBuf, OwnedFd>,
    /// Hard-linked files that could not be restored (their later names are not linked).
    firsts_failed: HashSet<PathBuf>,
}

impl Files<'_> {
    /// Adds a file to restore; restores the batch once it is full.
    fn add(&mut self, job: FileJob, out: &mut RestoreOutcome) -> Result<()> {
        self.pending_blobs += job.node.content.len();
        self.pending.push(job);
        if self.pending.len() >= BATCH_FILES || self.pending_blobs >= BATCH_BLOBS {
            self.restore_batch(out)?;
        }
        Ok(())
    }

    /// Restores the pending files (those that already hold the snapshot's contents are only
    /// given their metadata, with [`Overwrite::IfChanged`]).
    fn restore_batch(&mut self, out: &mut RestoreOutcome) -> Result<()> {
        let (repo, options, progress) = (self.repo, self.options, self.progress);
        let mut jobs = std::mem::take(&mut self.pending);
        self.pending_blobs = 0;
        if options.overwrite == Overwrite::IfChanged {
            // a file that holds the snapshot's contents gets its metadata at once, through the
            // descriptor it was checked by; a hard-linked one stays open for its later names
            let kept: Vec<Option<(Option<String>, Option<OwnedFd>)>> = jobs
                .par_iter()
                .map(|job| {
                    let file = job
                        .replace
                        .then(|| holds(repo, &job.at, &job.node, options.chown))
                        .flatten()?;
                    let error = metadata::apply_to(&file, &job.node, options.chown)
                        .err()
                        .map(|e| metadata_failed(&job.at.path, e));
                    Some((error, job.node.is_hardlinked().then(|| file.into())))
                })
                .collect();
            let mut changed = vec![];
            for (job, kept) in jobs.into_iter().zip(kept) {
                if let Some((error, held)) = kept {
                    out.unchanged += 1;
                    out.errors.extend(error);
                    progress.entry_done(job.node.size);
                    self.firsts.extend(held.map(|held| (job.at.path, held)));
                } else {
                    changed.push(job);
                }
            }
            jobs = changed;
        }

        // each file gets its metadata under its temporary name, so that it is complete when it
        // appears under its own
        let metadata_errors = Mutex::new(vec![]);
        let firsts = Mutex::new(&mut self.firsts);
        let finish = |file: &File, job: &FileJob| {
            if job.node.is_hardlinked()
                && let Ok(held) = file.try_clone()
            {
                let mut firsts = firsts.lock().expect("lock");
                firsts.insert(job.at.path.clone(), held.into());
            }
            let applied = metadata::remove_inherited_acls(file, false)
                .and_then(|()| metadata::apply_to(file, &job.node, options.chown));
            if let Err(e) = applied {
                metadata_errors
                    .lock()
                    .expect("lock")
                    .push(metadata_failed(&job.at.path, e));
            }
        };
        let mut filled = fill::fill(repo, &jobs, &finish, progress);
        if !filled.failed.is_empty() {
            // A damaged or stale local index cache may point at wrong places: reread the index
            // from the repository (once per restore) and make those files once more.
            if !self.index_reread {
                self.index_reread = true;
                repo.rebuild_local_index()?;
            }
            let retry: Vec<usize> = filled.failed.keys().copied().collect();
            let subset: Vec<FileJob> = retry.iter().map(|&i| jobs[i].clone()).collect();
            let again = fill::fill(repo, &subset, &finish, progress);
            filled.bytes += again.bytes;
            filled.failed = again
                .failed
                .into_iter()
                .map(|(j, why)| (retry[j], why))
                .collect();
            filled.not_created.extend(
                again
                    .not_created
                    .into_iter()
                    .map(|(j, why)| (retry[j], why)),
            );
        }
        out.bytes += filled.bytes;
        for (i, job) in jobs.into_iter().enumerate() {
            if let Some(why) = filled.not_created.get(&i) {
                out.errors.push(format!("cannot create {why}"));
            } else if let Some(why) = filled.failed.get(&i) {
                out.errors
                    .push(format!("{}: not restored: {why}", job.at.path.display()));
            } else {
                out.files += 1;
                progress.entry_done(0);
                continue;
            }
            if job.node.is_hardlinked() {
                self.firsts_failed.insert(job.at.path);
            }
        }
        out.errors
            .extend(metadata_errors.into_inner().expect("lock"));
        Ok(())
    }
}

/// Which entry later links of each hard-linked file link to.
#[derive(Default)]
struct HardLinks {
    /// The entry of each group that is restored or kept.
    first: HashMap<(u64, u64), Place>,
    /// The entry of each group that existed and was skipped: later links link to it once it is
    /// found to hold the snapshot's contents.
    skipped: HashMap<(u64, u64), Place>,
    /// The links to make once files are restored.
    links: Vec<Link>,
}

/// The message for metadata that could not be set.
fn metadata_failed(path: &Path, e: std::io::Error) -> String {
    format!("{}: cannot set metadata: {e}", path.display())
}

/// Restores `snapshot` under `options.target`.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    let target = &options.target;
    // nothing is made when a path asked for is missing
    let mut includes = Includes::new(&options.includes);
    if let Some(p) = includes.missing_from(repo, &snapshot.tree)? {
        return Err(Error::PathNotInSnapshot(tree::display_path(p)));
    }
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    // every folder made stays open until its metadata is set, last
    dirfd::raise_open_file_limit();
    let root: HeldDir = (
        target.clone(),
        Arc::new(dirfd::open_dir(target).map_err(|e| Error::io(target, e))?),
    );
    let mut out = RestoreOutcome::default();
    remove_leftovers(repo, &root, Some(&snapshot.tree), &mut out);
    // folders whose metadata is set last, in pre-order
    let mut dirs: Vec<(HeldDir, Node)> = vec![];
    // the folders on the way to the entry visited: the target, then one per level
    let mut held = vec![root.clone()];
    let mut links = HardLinks::default();
    let mut files = Files {
        repo,
        options,
        progress,
        pending: Vec::with_capacity(BATCH_FILES),
        pending_blobs: 0,
        index_reread: false,
        firsts: HashMap::new(),
        firsts_failed: HashSet::new(),
    };
    let mut unreadable_dirs = vec![];

    trees::walk(
        repo,
        &snapshot.tree,
        &mut Vec::new(),
        &mut |rel, node| {
            if !includes.wanted(rel) {
                return Ok(false);
            }
            held.truncate(rel.len());
            let (dir_path, dir) = held.last().expect("the target is held");
            let at = Place::new(dir_path, dir, node.name.as_os());
            progress.set_current(at.path.display());
            let shown = tree::display_path(rel);
            let inside = includes.inside(rel);
            if node.kind == NodeKind::Dir {
                let made = make_dir(repo, &at, node, inside, &shown, &mut out, &mut dirs);
                return Ok(made.map(|dir| held.push(dir)).is_some());
            }
            if !inside {
                return Ok(false);
            }
            let key = (node.device, node.inode);
            let replace = match at.stat() {
                Err(_) => false,
                Ok(_) if options.overwrite == Overwrite::Never => {
                    if node.is_hardlinked() && !links.first.contains_key(&key) {
                        links.skipped.entry(key).or_insert(at);
                    }
                    out.skipped.push(shown);
                    return Ok(false);
                }
                Ok(st) if dirfd::kind(&st) == SFlag::S_IFDIR => {
                    out.errors.push(format!(
                        "{shown}: a folder is in the way; remove it to restore this entry"
                    ));
                    return Ok(false);
                }
                Ok(_) => true,
            };
            if node.is_hardlinked() {
                if let Some(first) = links.skipped.remove(&key)
                    && let Some(file) = holds(repo, &first, node, options.chown)
                {
                    files.firsts.insert(first.path.clone(), file.into());
                    links.first.insert(key, first);
                }
                if let Some(first) = links.first.get(&key) {
                    links.links.push(Link {
                        at,
                        first: first.clone(),
                        replace,
                    });
                    return Ok(false);
                }
                links.first.insert(key, at.clone());
            }
            if node.kind == NodeKind::File {
                // created by the fill step, a batch at a time, on all cores
                let job = FileJob {
                    at,
                    node: node.clone(),
                    replace,
                };
                files.add(job, &mut out)?;
                return Ok(false);
            }
            match make_other(&at, node, replace, options.chown) {
                Ok((metadata_error, made)) => {
                    out.others += 1;
                    out.errors.extend(metadata_error);
                    if node.is_hardlinked() {
                        files.firsts.insert(at.path, made);
                    }
                }
                Err(e) => out.errors.push(format!("{shown}: cannot create: {e}")),
            }
            Ok(false)
        },
        &mut |rel, e| match e {
            // a damaged directory listing: restore everything else, and name what is missing
            Error::Damaged { .. } | Error::MissingBlob { .. } => {
                unreadable_dirs.push(format!(
                    "{}: contents not restored: {e}",
                    tree::display_path(rel)
                ));
                Ok(())
            }
            e => Err(e),
        },
    )?;
    files.restore_batch(&mut out)?;
    out.errors.extend(unreadable_dirs);

    let Files {
        firsts,
        firsts_failed,
        ..
    } = files;
    for link in &links.links {
        let restored = !firsts_failed.contains(&link.first.path);
        let Some(first) = firsts.get(&link.first.path).filter(|_| restored) else {
            let why = match restored {
                false => "could not be restored",
                // not made (its own error says why), or its descriptor could not be kept
                true => {
                    "was not made or could not be held open (see the errors above; beyond `ulimit -Hn` folders and hard-linked files, raise the limit and run again)"
                }
            };
            out.errors.push(format!(
                "{}: not linked: {} {why}",
                link.at.path.display(),
                link.first.path.display()
            ));
            continue;
        };
        match make_link(link, first) {
            Ok(true) => out.files += 1,
            Ok(false) => out.unchanged += 1,
            Err(e) => out.errors.push(format!(
                "{}: cannot link to {}: {e}",
                link.at.path.display(),
                link.first.path.display()
            )),
        }
    }
    // Everything is created by now, so no later write changes a restored time. Directories go
    // last, deepest first (they come in pre-order), so that a directory's mode never keeps its
    // own entries from being reached.
    drop(firsts);
    out.errors
        .extend(dirs.iter().rev().filter_map(|((path, dir), node)| {
            metadata::apply_to(dir, node, options.chown)
                .err()
                .map(|e| metadata_failed(path, e))
        }));
    // One flush of the whole file system instead of one per file.
    let flush_started = std::time::Instant::now();
    if !options.no_flush
        && let Err(e) = nix::unistd::syncfs(&*root.1)
    {
        out.errors.push(format!(
            "{}: cannot flush to disk: {e}; the files may not survive a crash, run `sync` and check the disk",
            target.display()
        ));
    }
    tracing::info!(
        target = %target.display(),
        files = out.files,
        bytes = out.bytes,
        unchanged = out.unchanged,
        leftovers_removed = out.leftovers_removed,
        skipped = out.skipped.len(),
        errors = out.errors.len(),
        flush_seconds = flush_started.elapsed().as_secs_f64(),
        "restore done"
    );
    Ok(out)
}

/// Removes what an interrupted restore left in the existing folder `dir`, before any new
/// temporary entry is made in it. Its entries in the snapshot are those of the tree `subtree`
/// (none without one): those whose names merely look temporary are kept. A folder whose tree
/// cannot be loaded is left alone (the walk names it as unreadable), as what looks left over
/// in it may be the snapshot's.
fn remove_leftovers(
    repo: &Repository,
    (path, dir): &HeldDir,
    subtree: Option<&Id>,
    out: &mut RestoreOutcome,
) {
    let nodes = match subtree.map(|id| Tree::load(repo, id)) {
        None => vec![],
        Some(Ok(tree)) => tree.nodes,
        Some(Err(_)) => return,
    };
    let lookalikes: HashSet<&OsStr> = nodes
        .iter()
        .map(|node| node.name.as_os())
        .filter(|name| partial::is_partial_name(name))
        .collect();
    let (removed, errors) = partial::remove_leftovers(dir, path, &lookalikes);
    out.leftovers_removed += removed;
    out.errors.extend(errors);
}

/// Creates (or reuses) a directory; returns it, held open, if the walk descends into it. A
/// reused directory gets the snapshot's metadata too when it is restored (not only on the way
/// to an included path).
fn make_dir(
    repo: &Repository,
    at: &Place,
    node: &Node,
    inside: bool,
    shown: &str,
    out: &mut RestoreOutcome,
    dirs: &mut Vec<(HeldDir, Node)>,
) -> Option<HeldDir> {
    let opened = match at.stat() {
        Ok(st) if dirfd::kind(&st) == SFlag::S_IFDIR => {
            dirfd::open_dir_at(&at.dir, &at.name, Some(dirfd::identity(&st))).map(|dir| {
                let dir = (at.path.clone(), Arc::new(dir));
                remove_leftovers(repo, &dir, node.subtree.as_ref(), out);
                (dir, inside)
            })
        }
        Ok(_) => {
            out.skipped.push(shown.to_owned());
            return None;
        }
        Err(_) => mkdirat(
            &*at.dir,
            at.name.as_os_str(),
            Mode::from_bits_truncate(0o700),
        )
        .map_err(std::io::Error::from)
        .and_then(|()| dirfd::open_dir_at(&at.dir, &at.name, None))
        .and_then(|dir| metadata::remove_inherited_acls(&dir, true).map(|()| dir))
        .map(|dir| {
            out.dirs += 1;
            ((at.path.clone(), Arc::new(dir)), true)
        }),
    };
    match opened {
        Ok((dir, restored)) => {
            if restored {
                dirs.push((dir.clone(), node.clone()));
            }
            Some(dir)
        }
        Err(e) => {
            out.errors
                .push(format!("{shown}: cannot create directory: {e}"));
            None
        }
    }
}

/// Makes a symlink, fifo or device node with its metadata in a private folder of its own and
/// puts it in place ([`partial::Staged`]); returns a failure to set the metadata, if any, and
/// the entry, held (`O_PATH`).
fn make_other(
    at: &Place,
    node: &Node,
    replace: bool,
    chown: bool,
) -> std::io::Result<(Option<String>, OwnedFd)> {
    let entry = partial::make_staged(&at.dir, |dir, name| match node.kind {
        NodeKind::Symlink => {
            let target = node.target.clone().unwrap_or_default();
            symlinkat(target.as_os(), dir, name).map_err(Into::into)
        }
        kind => {
            let kind = match kind {
                NodeKind::Fifo => SFlag::S_IFIFO,
                NodeKind::Chardev => SFlag::S_IFCHR,
                _ => SFlag::S_IFBLK,
            };
            let mode = Mode::from_bits_truncate(node.mode);
            mknodat(dir, name, kind, mode, node.rdev).map_err(Into::into)
        }
    })?;
    let metadata_error = metadata::apply_at(entry.dir(), entry.name(), node, chown)
        .err()
        .map(|e| format!("{}: cannot set metadata: {e}", at.path.display()));
    let (made, _) = dirfd::reference_at(entry.dir(), entry.name(), None, None)?;
    entry.put_in_place(&at.name, replace)?;
    Ok((metadata_error, made))
}

/// Makes a hard link to the entry its group's first name was restored (or kept) as, `first`,
/// held open since; returns whether one was made (with `replace`, a link that is there already
/// is kept).
fn make_link(link: &Link, first: &OwnedFd) -> std::io::Result<bool> {
    let first_identity = dirfd::identity(&nix::sys::stat::fstat(first)?);
    if link.replace && dirfd::identity(&link.at.stat()?) == first_identity {
        return Ok(false);
    }
    let ((), entry) = partial::make(&link.at.dir, |dir, name| dirfd::link_to(first, dir, name))?;
    entry.put_in_place(&link.at.name, link.replace)?;
    Ok(true)
}

/// Whether the regular file `at` (a symlink is never followed) can be kept as the snapshot's
/// `node`: it holds exactly its contents (the same size, then the same blob ids), and no one
/// but its owner in the snapshot may have a hold on it; if so, the file, open. Else it is
/// rewritten under a temporary name and renamed over, which leaves other names alone:
/// - a file with more than one name may be a file outside the target that someone linked
///   here, whose owner, mode and times must not be set;
/// - with `chown`, a file owned by someone else than the snapshot says may be held open for
///   writing by that owner (a tenant), who would keep writing it once it is the snapshot's,
///   and through any later name linked to it in a folder they cannot reach;
/// - an access ACL gives rights that no snapshot holds.
fn holds(repo: &Repository, at: &Place, node: &Node, chown: bool) -> Option<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
    let (mut file, st) = dirfd::open_at(&at.dir, &at.name, flags, SFlag::S_IFREG, None).ok()?;
    (st.st_nlink == 1
        && (!chown || (st.st_uid, st.st_gid) == (node.uid, node.gid))
        && !metadata::has_acl(&file)
        && st.st_size as u64 == node.size
        && verify_content(repo, &mut file, node).is_ok())
    .then_some(file)
}

/// Reads a file's contents and compares them, blob by blob, with the ids of `node`'s blobs (the
/// repository's keyed hash); returns the bytes compared.
pub fn verify_content(
    repo: &Repository,
    file: &mut impl Read,
    node: &Node,
) -> std::result::Result<u64, String> {
    let mut offset = 0u64;
    let mut buf = vec![];
    for blob in &node.content {
        let len = repo.locate(blob).map_err(|e| e.to_string())?.blob.raw_len;
        buf.resize(len as usize, 0);
        file.read_exact(&mut buf)
            .map_err(|e| format!("cannot be read at offset {offset}: {e}"))?;
        if repo.keys().blob_id(&buf) != *blob {
            return Err(format!(
                "the {len} bytes at offset {offset} differ from the snapshot's"
            ));
        }
        offset += u64::from(len);
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SnapshotPath {
        tree::parse_snapshot_path(s.as_bytes())
    }

    #[test]
    fn includes_select_ancestors_and_descendants() {
        let given = vec![p("a/b"), p("a/d/e"), p("z")];
        let mut inc = Includes::new(&given);
        assert!(inc.wanted(&p("a")) && !inc.inside(&p("a")));
        assert!(inc.wanted(&p("a/d")) && !inc.inside(&p("a/d")));
        assert!(inc.inside(&p("a/b")));
        assert!(inc.inside(&p("a/b/c")));
        assert!(!inc.wanted(&p("a/c")));
        assert!(!inc.wanted(&p("x")));
        inc.visit(&p("a/b/c"));
        inc.visit(&p("a/d"));
        assert_eq!(inc.missing(), Some(&p("a/d/e")));
        inc.visit(&p("a/d/e"));
        assert_eq!(inc.missing(), Some(&p("z")));
        let none = vec![];
        assert!(Includes::new(&none).inside(&p("x")));
        assert_eq!(Includes::new(&none).missing(), None);
    }
}
