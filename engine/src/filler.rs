//! Fills restored files with their contents: reads each pack once (one ranged read covering the
//! blobs needed from it), verifies and decompresses blobs on all cores, and writes each blob at
//! its offsets in every file that holds it, out of order. Files are created at their full size
//! under a temporary name first ([`partial`]) and block-aligned runs of zeros are never written,
//! so holes stay holes; a file is renamed into place as soon as its last blob is written.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use tempfile::TempPath;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::BlobLocation;
use crate::pack;
use crate::partial;
use crate::progress::Progress;
use crate::repository::{ObjectKind, Repository};
use crate::tree::Node;

/// File-system block size for hole detection.
const BLOCK: u64 = 4096;

/// A file to restore.
#[derive(Clone, Debug)]
pub struct FileJob {
    /// Where it goes.
    pub path: PathBuf,
    /// What the snapshot holds.
    pub node: Node,
    /// Whether it replaces what is at `path` (otherwise nothing may be there).
    pub replace: bool,
}

/// What filling did.
#[derive(Debug, Default)]
pub struct Filled {
    /// Bytes written (holes excluded).
    pub bytes: u64,
    /// Files (by index into the input) not restored, with why; nothing of them is left behind.
    pub failed: HashMap<usize, String>,
    /// Files that could not be created (no room, no permission), with why.
    pub not_created: HashMap<usize, String>,
}

/// One blob needed from a pack, and where it goes: (file index, offset).
struct Need {
    loc: BlobLocation,
    targets: Vec<(usize, u64)>,
}

/// The files being filled, under their temporary names.
struct Partials<'a> {
    jobs: &'a [FileJob],
    /// Temporary path of each file created.
    paths: Vec<Option<PathBuf>>,
    /// Each file created, until it is put in place (dropping it removes it).
    entries: Vec<Mutex<Option<TempPath>>>,
    /// Blob writes each file still waits for.
    remaining: Vec<AtomicUsize>,
    /// Called with each complete file under its temporary name, before it is put in place.
    finish: &'a (dyn Fn(&Path, &FileJob) + Sync),
    failed: Mutex<HashMap<usize, String>>,
}

impl Partials<'_> {
    fn fail(&self, i: usize, why: String) {
        self.failed.lock().expect("lock").entry(i).or_insert(why);
    }

    fn has_failed(&self, i: usize) -> bool {
        self.failed.lock().expect("lock").contains_key(&i)
    }

    /// Notes one blob written to file `i`; the last one puts the file in place.
    fn written(&self, i: usize) {
        if self.remaining[i].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete(i);
        }
    }

    fn complete(&self, i: usize) {
        let Some(entry) = self.entries[i].lock().expect("lock").take() else {
            return;
        };
        let job = &self.jobs[i];
        (self.finish)(&entry, job);
        if let Err(e) = partial::put_in_place(entry, &job.path, job.replace) {
            self.fail(i, format!("cannot be put in place: {e}"));
        }
    }
}

/// Restores `files`: creates each under a temporary name, writes its contents, calls `finish`
/// on it (to set its metadata) and renames it into place. Whatever fails leaves nothing behind.
pub fn fill(
    repo: &Repository,
    files: &[FileJob],
    finish: &(dyn Fn(&Path, &FileJob) + Sync),
    progress: &Progress,
) -> Filled {
    // on all cores: creating many files is mostly file-system work (inode allocation)
    let created: Vec<std::result::Result<TempPath, String>> = files
        .par_iter()
        .map(|job| create_sized(&job.path, job.node.size))
        .collect();
    let mut not_created = HashMap::new();
    let mut paths = vec![];
    let mut entries = vec![];
    for (i, made) in created.into_iter().enumerate() {
        match made {
            Ok(entry) => {
                paths.push(Some(entry.to_path_buf()));
                entries.push(Mutex::new(Some(entry)));
            }
            Err(why) => {
                not_created.insert(i, why);
                paths.push(None);
                entries.push(Mutex::new(None));
            }
        }
    }
    let mut failed: HashMap<usize, String> = HashMap::new();
    let mut by_pack: HashMap<Id, HashMap<Id, Need>> = HashMap::new();
    for (i, job) in files.iter().enumerate() {
        if not_created.contains_key(&i) {
            continue;
        }
        let node = &job.node;
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
                    loc,
                    targets: vec![],
                });
            need.targets.push((i, offset));
            offset += u64::from(loc.blob.raw_len);
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
    let partials = Partials {
        jobs: files,
        paths,
        entries,
        remaining: files
            .iter()
            .map(|job| AtomicUsize::new(job.node.content.len()))
            .collect(),
        finish,
        failed: Mutex::new(failed),
    };
    // files without contents are complete already
    files
        .par_iter()
        .enumerate()
        .filter(|(i, job)| job.node.content.is_empty() && !partials.has_failed(*i))
        .for_each(|(i, _)| partials.complete(i));
    let fill = || -> u64 {
        by_pack
            .into_par_iter()
            .map(|(pack, needs)| {
                let needs: Vec<Need> = needs.into_values().collect();
                match fill_from_pack(repo, &partials, &pack, &needs, progress) {
                    Ok(n) => n,
                    Err(e) => {
                        for (i, _) in needs.iter().flat_map(|n| &n.targets) {
                            partials.fail(*i, e.to_string());
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
    let mut failed = partials.failed.into_inner().expect("lock");
    // whatever was not put in place is removed here, as its temporary path is dropped
    for (i, entry) in partials.entries.into_iter().enumerate() {
        if entry.into_inner().expect("lock").is_some() {
            failed
                .entry(i)
                .or_insert_with(|| "not all of its contents could be written".into());
        }
    }
    Filled {
        bytes: written,
        failed,
        not_created,
    }
}

/// Creates a new file of `size` bytes (a hole, filled later) under a temporary name next to
/// `path`. A file that cannot be sized is removed again.
fn create_sized(path: &Path, size: u64) -> std::result::Result<TempPath, String> {
    let (file, entry) =
        partial::make(path, |p| File::create_new(p)).map_err(|e| Error::io(path, e).to_string())?;
    file.set_len(size)
        .map_err(|e| Error::io(path, e).to_string())?;
    Ok(entry)
}

/// Reads the span of `pack` that holds `needs` once, then verifies and writes each blob.
fn fill_from_pack(
    repo: &Repository,
    partials: &Partials,
    pack: &Id,
    needs: &[Need],
    progress: &Progress,
) -> Result<u64> {
    let start = needs
        .iter()
        .map(|n| u64::from(n.loc.blob.offset))
        .min()
        .unwrap_or(0);
    let end = needs
        .iter()
        .map(|n| u64::from(n.loc.blob.offset) + u64::from(n.loc.blob.length))
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
        // a store may return less than asked for (a truncated pack): an error, never a panic
        let opened = pack::open_blob_in(repo.keys(), pack, &span, start, b);
        let data = match opened {
            Ok(d) => d,
            Err(e) => {
                for (i, _) in &need.targets {
                    partials.fail(*i, e.to_string());
                }
                continue;
            }
        };
        for (i, offset) in &need.targets {
            if partials.has_failed(*i) {
                continue;
            }
            let Some(path) = &partials.paths[*i] else {
                continue;
            };
            let file = match handles.entry(*i) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    match File::options().write(true).open(path) {
                        Ok(f) => v.insert(f),
                        Err(e) => {
                            partials.fail(*i, Error::io(path, e).to_string());
                            continue;
                        }
                    }
                }
            };
            match write_sparse_at(file, *offset, &data) {
                Ok(n) => {
                    written += n;
                    start_writeback(file, *offset, data.len());
                    partials.written(*i);
                }
                Err(e) => partials.fail(*i, Error::io(path, e).to_string()),
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
