//! Restore: rebuilds a snapshot (or parts of it) under a target folder.
//!
//! Safety: every name was checked when its tree was loaded (no `/`, `.`, `..`), existing
//! entries are never followed or overwritten (they are skipped and reported) unless
//! `overwrite` is set, and every blob is verified against its id before a byte is written.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, mknod};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::filler;
use crate::fsmeta;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::tree::{self, Node, NodeKind, RawBytes, SnapshotPath};

/// Settings of one restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Folder to restore into (created if missing).
    pub target: PathBuf,
    /// Paths inside the snapshot to restore (all if empty).
    pub includes: Vec<SnapshotPath>,
    /// Replace existing files instead of skipping them.
    pub overwrite: bool,
    /// Restore ownership (needs root).
    pub chown: bool,
    /// Return without waiting until the restored data is on disk (scratch restores such as
    /// drills, whose files nobody keeps).
    pub no_flush: bool,
}

/// What a restore did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreOutcome {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Other entries created.
    pub others: u64,
    /// Content bytes written (holes excluded).
    pub bytes: u64,
    /// Entries that already existed and were left alone.
    pub skipped: Vec<String>,
    /// Entries that could not be restored, with why.
    pub errors: Vec<String>,
}

fn os_path(target: &Path, rel: &[RawBytes]) -> PathBuf {
    rel.iter().fold(target.to_owned(), |p, c| {
        p.join(OsString::from_vec(c.0.clone()))
    })
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
}

struct Plan {
    files: Vec<(PathBuf, Node)>,
    links: Vec<(PathBuf, (u64, u64))>,
    metadata: Vec<(PathBuf, Node)>,
}

/// Restores `snapshot` under `options.target`.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    options: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    let target = &options.target;
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let mut out = RestoreOutcome::default();
    let mut plan = Plan {
        files: vec![],
        links: vec![],
        metadata: vec![],
    };
    let mut first_link: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut includes = Includes::new(&options.includes);
    let mut unreadable_dirs = vec![];

    tree::walk(
        repo,
        &snapshot.tree,
        &mut Vec::new(),
        &mut |rel, node| {
            if !includes.wanted(rel) {
                return Ok(false);
            }
            includes.visit(rel);
            let path = os_path(target, rel);
            progress.set_current(path.display());
            let shown = tree::display_path(rel);
            if node.kind == NodeKind::Dir {
                return Ok(make_dir(&path, node, &shown, &mut out, &mut plan));
            }
            if !includes.inside(rel) {
                return Ok(false);
            }
            let exists = std::fs::symlink_metadata(&path).is_ok();
            if exists && !options.overwrite {
                out.skipped.push(shown);
                return Ok(false);
            }
            if exists && let Err(e) = std::fs::remove_file(&path) {
                out.errors.push(format!("{shown}: cannot replace: {e}"));
                return Ok(false);
            }
            if node.is_hardlinked() {
                let key = (node.device, node.inode);
                if first_link.contains_key(&key) {
                    plan.links.push((path, key));
                    return Ok(false);
                }
                first_link.insert(key, path.clone());
            }
            let made = match node.kind {
                // created by the filler, on all cores
                NodeKind::File => {
                    plan.files.push((path.clone(), node.clone()));
                    Ok(())
                }
                NodeKind::Symlink => {
                    let t = node.target.clone().unwrap_or_default();
                    std::os::unix::fs::symlink(t.as_os(), &path)
                }
                NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                    let kind = match node.kind {
                        NodeKind::Fifo => SFlag::S_IFIFO,
                        NodeKind::Chardev => SFlag::S_IFCHR,
                        _ => SFlag::S_IFBLK,
                    };
                    mknod(&path, kind, Mode::from_bits_truncate(node.mode), node.rdev)
                        .map_err(Into::into)
                }
                NodeKind::Dir => unreachable!("handled above"),
            };
            match made {
                Ok(()) if node.kind == NodeKind::File => {}
                Ok(()) => {
                    out.others += 1;
                    plan.metadata.push((path, node.clone()));
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
    out.errors.extend(unreadable_dirs);
    if let Some(p) = includes.missing() {
        return Err(Error::PathNotInSnapshot(tree::display_path(p)));
    }

    let mut filled = filler::fill(repo, &plan.files, progress);
    if !filled.failed.is_empty() {
        // A damaged or stale local index cache may point at wrong places: reread the index from
        // the repository and make those files once more.
        repo.rebuild_local_index()?;
        let retry: Vec<usize> = filled.failed.keys().copied().collect();
        for &i in &retry {
            let _ = std::fs::remove_file(&plan.files[i].0);
        }
        let subset: Vec<(PathBuf, Node)> = retry.iter().map(|&i| plan.files[i].clone()).collect();
        let again = filler::fill(repo, &subset, progress);
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
    out.bytes = filled.bytes;
    for (i, (path, node)) in plan.files.iter().enumerate() {
        if let Some(why) = filled.not_created.get(&i) {
            out.errors.push(format!("cannot create {why}"));
            continue;
        }
        match filled.failed.get(&i) {
            // never leave a file with unverified or missing parts behind
            Some(why) => {
                let _ = std::fs::remove_file(path);
                out.errors
                    .push(format!("{}: not restored: {why}", path.display()));
            }
            None => {
                out.files += 1;
                progress.entry_done(0);
                plan.metadata.push((path.clone(), node.clone()));
            }
        }
    }
    for (path, key) in &plan.links {
        let first = &first_link[key];
        match std::fs::hard_link(first, path) {
            Ok(()) => out.files += 1,
            Err(e) => out.errors.push(format!(
                "{}: cannot link to {}: {e}",
                path.display(),
                first.display()
            )),
        }
    }
    // Everything is created by now, so no later write changes a restored time. Entries other
    // than directories go first, on all cores; then directories, deepest first (they come in
    // pre-order), so that a directory's mode never keeps its own entries from being reached.
    let apply = |(path, node): &(PathBuf, Node)| {
        fsmeta::apply(path, node, options.chown)
            .err()
            .map(|e| format!("{}: cannot set metadata: {e}", path.display()))
    };
    let (dirs, others): (Vec<_>, Vec<_>) = plan
        .metadata
        .iter()
        .partition(|(_, node)| node.kind == NodeKind::Dir);
    out.errors
        .extend(others.into_par_iter().filter_map(apply).collect::<Vec<_>>());
    out.errors.extend(dirs.into_iter().rev().filter_map(apply));
    // One flush of the whole file system instead of one per file.
    let flush_started = std::time::Instant::now();
    if !options.no_flush
        && let Err(e) = File::open(target).and_then(|d| nix::unistd::syncfs(d).map_err(Into::into))
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
        skipped = out.skipped.len(),
        errors = out.errors.len(),
        flush_seconds = flush_started.elapsed().as_secs_f64(),
        "restore done"
    );
    Ok(out)
}

/// Creates (or reuses) a directory; returns whether to descend into it.
fn make_dir(
    path: &Path,
    node: &Node,
    shown: &str,
    out: &mut RestoreOutcome,
    plan: &mut Plan,
) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            out.skipped.push(shown.to_owned());
            false
        }
        Err(_) => match std::fs::create_dir(path) {
            Ok(()) => {
                out.dirs += 1;
                plan.metadata.push((path.to_owned(), node.clone()));
                true
            }
            Err(e) => {
                out.errors
                    .push(format!("{shown}: cannot create directory: {e}"));
                false
            }
        },
    }
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
