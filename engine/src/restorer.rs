//! Restore: rebuilds a snapshot (or parts of it) under a target folder.
//!
//! Safety: every name was checked when its tree was loaded (no `/`, `.`, `..`), existing
//! entries are never followed or overwritten (they are skipped and reported) unless
//! `overwrite` is set, and every blob is verified against its id before a byte is written.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::stat::{Mode, SFlag, mknod};
use rayon::prelude::*;

use crate::error::{Error, Result};
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

/// Whether `path` should be visited for these includes: it is inside one, or on the way to one.
fn wanted(path: &[RawBytes], includes: &[SnapshotPath]) -> bool {
    includes.is_empty()
        || includes.iter().any(|inc| {
            let n = inc.len().min(path.len());
            inc[..n] == path[..n]
        })
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
    let mut matched = vec![false; options.includes.len()];
    let mut unreadable_dirs = vec![];

    tree::walk(
        repo,
        &snapshot.tree,
        &mut Vec::new(),
        &mut |rel, node| {
            if !wanted(rel, &options.includes) {
                return Ok(false);
            }
            for (m, inc) in matched.iter_mut().zip(&options.includes) {
                *m |= rel.starts_with(inc);
            }
            let path = os_path(target, rel);
            progress.set_current(&path);
            let shown = tree::display_path(rel);
            if node.kind == NodeKind::Dir {
                return Ok(make_dir(&path, node, &shown, &mut out, &mut plan));
            }
            if !options.includes.is_empty() && !options.includes.iter().any(|i| rel.starts_with(i))
            {
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
                NodeKind::File => {
                    plan.files.push((path.clone(), node.clone()));
                    Ok(())
                }
                NodeKind::Symlink => {
                    let t = node.target.clone().unwrap_or_default();
                    std::os::unix::fs::symlink(t.as_os(), &path)
                }
                NodeKind::Fifo => mknod(
                    &path,
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(node.mode),
                    0,
                )
                .map_err(Into::into),
                NodeKind::Chardev => mknod(
                    &path,
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(node.mode),
                    node.rdev,
                )
                .map_err(Into::into),
                NodeKind::Blockdev => mknod(
                    &path,
                    SFlag::S_IFBLK,
                    Mode::from_bits_truncate(node.mode),
                    node.rdev,
                )
                .map_err(Into::into),
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
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(Error::PathNotInSnapshot(tree::display_path(
            &options.includes[i],
        )));
    }

    let results = Mutex::new(&mut out);
    plan.files.par_iter().for_each(|(path, node)| {
        let written = write_file(repo, path, node, progress);
        let mut out = results.lock().expect("lock");
        match written {
            Ok(bytes) => {
                out.files += 1;
                out.bytes += bytes;
                progress.entry_done(0);
            }
            Err(e) => {
                let _ = std::fs::remove_file(path);
                out.errors.push(format!("{}: {e}", path.display()));
            }
        }
    });
    for (path, node) in &plan.files {
        if path.exists() {
            plan.metadata.push((path.clone(), node.clone()));
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
    // Directories come first in `metadata` (pre-order); apply in reverse so that writing into a
    // directory never changes its restored times afterwards.
    for (path, node) in plan.metadata.iter().rev() {
        if let Err(e) = fsmeta::apply(path, node, options.chown) {
            out.errors
                .push(format!("{}: cannot set metadata: {e}", path.display()));
        }
    }
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

/// Writes one file's contents; runs of zero bytes become holes. Returns bytes written.
fn write_file(repo: &Repository, path: &Path, node: &Node, progress: &Progress) -> Result<u64> {
    let io = |e| Error::io(path, e);
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    let mut pos = 0u64;
    let mut written = 0u64;
    for id in &node.content {
        let data = repo.load_blob(id)?;
        written += write_sparse(&mut file, pos, &data).map_err(io)?;
        pos += data.len() as u64;
        progress.add_bytes(data.len() as u64);
    }
    file.set_len(pos).map_err(io)?;
    if pos != node.size {
        return Err(Error::damaged(
            "tree",
            path.display(),
            format!("file size {} differs from its contents ({pos})", node.size),
        ));
    }
    file.sync_all().map_err(io)?;
    Ok(written)
}

/// File-system block size for hole detection.
const BLOCK: u64 = 4096;

/// Writes `data` at `pos` (the file's current position), seeking over every block-aligned run of
/// zeros instead of writing it, so that holes stay holes. Returns the bytes written.
fn write_sparse(file: &mut File, pos: u64, data: &[u8]) -> std::io::Result<u64> {
    let mut written = 0;
    let mut at = 0usize;
    while at < data.len() {
        // the next block boundary of the file, or the end of the data
        let end = ((pos + at as u64) / BLOCK + 1) * BLOCK;
        let end = ((end - pos) as usize).min(data.len());
        let block = &data[at..end];
        if block.iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(block.len() as i64))?;
        } else {
            // extend over the following non-zero blocks to write them in one call
            let mut stop = end;
            while stop < data.len() {
                let next = (stop + BLOCK as usize).min(data.len());
                if data[stop..next].iter().all(|&b| b == 0) {
                    break;
                }
                stop = next;
            }
            file.write_all(&data[at..stop])?;
            written += (stop - at) as u64;
            at = stop;
            continue;
        }
        at = end;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SnapshotPath {
        tree::parse_snapshot_path(s.as_bytes())
    }

    #[test]
    fn sparse_writes_keep_zero_blocks_as_holes() {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[10] = 1; // first block has data
        data[700_000] = 2; // one block in the middle
        let tail = vec![3u8; 5000];
        let mut n = write_sparse(&mut f, 0, &data).unwrap();
        n += write_sparse(&mut f, data.len() as u64, &tail).unwrap();
        f.set_len((data.len() + tail.len()) as u64).unwrap();
        assert!(n < 5 * BLOCK + 5000, "wrote {n} bytes");
        let mut back = vec![];
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, [data, tail].concat());
        assert!(path.metadata().unwrap().blocks() * 512 < 64 * 1024);
    }

    #[test]
    fn includes_select_ancestors_and_descendants() {
        let inc = vec![p("a/b")];
        assert!(wanted(&p("a"), &inc));
        assert!(wanted(&p("a/b"), &inc));
        assert!(wanted(&p("a/b/c"), &inc));
        assert!(!wanted(&p("a/c"), &inc));
        assert!(!wanted(&p("x"), &inc));
        assert!(wanted(&p("x"), &[]));
    }
}
