//! Fills restored files with their contents: reads each pack once (one ranged read covering the
//! blobs needed from it), verifies and decompresses blobs on all cores, and writes each blob at
//! its offsets in every file that holds it, out of order. Files are created at their full size
//! first and block-aligned runs of zeros are never written, so holes stay holes.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::blob;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::progress::Progress;
use crate::repository::{ObjectKind, Repository};
use crate::tree::Node;

/// File-system block size for hole detection.
const BLOCK: u64 = 4096;

/// What filling did.
#[derive(Debug, Default)]
pub struct Filled {
    /// Bytes written (holes excluded).
    pub bytes: u64,
    /// Files (by index into the input) created but not filled, with why.
    pub failed: HashMap<usize, String>,
    /// Files that could not be created (something is in the way, or no room), with why.
    pub not_created: HashMap<usize, String>,
}

/// One blob needed from a pack, and where it goes: (file index, offset).
struct Need {
    id: Id,
    loc: BlobLocation,
    targets: Vec<(usize, u64)>,
}

/// Creates `files` (each given as its path and node; none may exist) and writes their contents.
pub fn fill(repo: &Repository, files: &[(PathBuf, Node)], progress: &Progress) -> Filled {
    // on all cores: creating many files is mostly file-system work (inode allocation)
    let not_created: HashMap<usize, String> = files
        .par_iter()
        .enumerate()
        .filter_map(|(i, (path, node))| create_sized(path, node.size).err().map(|e| (i, e)))
        .collect();
    let mut failed: HashMap<usize, String> = HashMap::new();
    let mut by_pack: HashMap<Id, HashMap<Id, Need>> = HashMap::new();
    for (i, (_, node)) in files.iter().enumerate() {
        if not_created.contains_key(&i) {
            continue;
        }
        let mut offset = 0u64;
        for id in &node.content {
            let loc = match repo.locate(id) {
                Ok(loc) => loc,
                Err(e) => {
                    failed.entry(i).or_insert_with(|| e.to_string());
                    break;
                }
            };
            let need = by_pack
                .entry(loc.pack)
                .or_default()
                .entry(*id)
                .or_insert_with(|| Need {
                    id: *id,
                    loc,
                    targets: vec![],
                });
            need.targets.push((i, offset));
            offset += loc.blob.raw_len as u64;
        }
        if offset != node.size && !failed.contains_key(&i) {
            failed.insert(
                i,
                format!(
                    "its blobs hold {offset} bytes but the snapshot says {}; the tree is damaged",
                    node.size
                ),
            );
        }
    }
    let failed = Mutex::new(failed);
    let fill = || -> u64 {
        by_pack
            .into_par_iter()
            .map(|(pack, needs)| {
                let needs: Vec<Need> = needs.into_values().collect();
                match fill_from_pack(repo, files, &pack, &needs, &failed, progress) {
                    Ok(n) => n,
                    Err(e) => {
                        let mut f = failed.lock().expect("lock");
                        for (i, _) in needs.iter().flat_map(|n| &n.targets) {
                            f.entry(*i).or_insert_with(|| e.to_string());
                        }
                        0
                    }
                }
            })
            .sum()
    };
    // from a remote store, one worker per connection (each waits on its download most of the
    // time); from a folder, one per core
    let workers = repo.store().is_remote().then(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(repo.store().connections())
            .build()
    });
    let written = match workers {
        Some(Ok(workers)) => workers.install(fill),
        _ => fill(),
    };
    Filled {
        bytes: written,
        failed: failed.into_inner().expect("lock"),
        not_created,
    }
}

/// Creates a new file of `size` bytes (a hole, filled later). A file that cannot be sized is
/// removed again, so that a failure leaves nothing behind.
fn create_sized(path: &Path, size: u64) -> std::result::Result<(), String> {
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, e).to_string())?;
    file.set_len(size).map_err(|e| {
        let _ = std::fs::remove_file(path);
        Error::io(path, e).to_string()
    })
}

/// Reads the span of `pack` that holds `needs` once, then verifies and writes each blob.
fn fill_from_pack(
    repo: &Repository,
    files: &[(PathBuf, Node)],
    pack: &Id,
    needs: &[Need],
    failed: &Mutex<HashMap<usize, String>>,
    progress: &Progress,
) -> Result<u64> {
    let start = needs
        .iter()
        .map(|n| n.loc.blob.offset as u64)
        .min()
        .unwrap_or(0);
    let end = needs
        .iter()
        .map(|n| (n.loc.blob.offset + n.loc.blob.length) as u64)
        .max()
        .unwrap_or(0);
    let span = repo
        .store()
        .get_range(&ObjectKind::Pack.path(pack), start..end)
        .map_err(|e| Error::damaged("pack", pack, format!("cannot be read: {e}")))?;
    let mut written = 0;
    let mut handles: HashMap<usize, File> = HashMap::new();
    for need in needs {
        let b = &need.loc.blob;
        let at = (b.offset as u64 - start) as usize;
        let data = match blob::open_blob(
            repo.keys(),
            &need.id,
            &span[at..at + b.length as usize],
            b.raw_len,
        ) {
            Ok(d) => d,
            Err(e) => {
                let mut f = failed.lock().expect("lock");
                for (i, _) in &need.targets {
                    f.entry(*i).or_insert_with(|| e.to_string());
                }
                continue;
            }
        };
        for (i, offset) in &need.targets {
            if failed.lock().expect("lock").contains_key(i) {
                continue;
            }
            let path = &files[*i].0;
            let file = match handles.entry(*i) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    match File::options().write(true).open(path) {
                        Ok(f) => v.insert(f),
                        Err(e) => {
                            failed
                                .lock()
                                .expect("lock")
                                .insert(*i, Error::io(path, e).to_string());
                            continue;
                        }
                    }
                }
            };
            match write_sparse_at(file, *offset, &data) {
                Ok(n) => {
                    written += n;
                    start_writeback(file, *offset, data.len());
                }
                Err(e) => {
                    failed
                        .lock()
                        .expect("lock")
                        .insert(*i, Error::io(path, e).to_string());
                }
            }
        }
        progress.add_bytes(data.len() as u64 * need.targets.len() as u64);
    }
    Ok(written)
}

/// Starts writing a just-written range to disk without waiting, so that the disk works while
/// the restore goes on and the final flush has little left to do; the kernel drops the range
/// from the page cache once written, rather than evicting other data. Advice only: an error
/// changes nothing.
fn start_writeback(file: &File, pos: u64, len: usize) {
    let _ = nix::fcntl::posix_fadvise(
        file,
        pos as i64,
        len as i64,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// Writes `data` at `pos`, skipping every block-aligned run of zeros (the file was sized
/// beforehand, so skipped blocks stay holes). Returns the bytes written.
fn write_sparse_at(file: &File, pos: u64, data: &[u8]) -> std::io::Result<u64> {
    let mut written = 0;
    let mut at = 0usize;
    // block boundaries of the file, as offsets into `data`
    let boundary = |k: usize| -> usize {
        let abs = pos + k as u64;
        (((abs / BLOCK) + 1) * BLOCK - pos) as usize
    };
    while at < data.len() {
        let end = boundary(at).min(data.len());
        if data[at..end].iter().all(|&b| b == 0) {
            at = end;
            continue;
        }
        let mut stop = end;
        while stop < data.len() {
            let next = boundary(stop).min(data.len());
            if data[stop..next].iter().all(|&b| b == 0) {
                break;
            }
            stop = next;
        }
        file.write_all_at(&data[at..stop], pos + at as u64)?;
        written += (stop - at) as u64;
        at = stop;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_writes_at_offsets_keep_zero_blocks_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let mut data = vec![0u8; 1 << 20];
        data[10] = 1;
        data[700_000] = 2;
        let tail = vec![3u8; 5000];
        f.set_len((data.len() + tail.len()) as u64).unwrap();
        // out of order: the tail first
        let mut n = write_sparse_at(&f, data.len() as u64, &tail).unwrap();
        n += write_sparse_at(&f, 0, &data).unwrap();
        assert!(n < 5 * BLOCK + 5000, "wrote {n} bytes");
        assert_eq!(std::fs::read(&path).unwrap(), [data, tail].concat());
        assert!(path.metadata().unwrap().blocks() * 512 < 64 * 1024);
    }
}
