//! Fills restored files with their contents: reads each pack once (one ranged read covering the
//! blobs needed from it), verifies and decompresses blobs on all cores, and writes each blob at
//! its offsets in every file that holds it, out of order. Files are created at their full size
//! under a temporary name first ([`partial`]) and block-aligned runs of zeros are never written,
//! so holes stay holes; a file is renamed into place as soon as its last blob is written.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag, fstat};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack;
use crate::format::tree::Node;
use crate::ops::restore::partial::{self, Partial};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::repository::local_index::BlobLocation;
use crate::repository::store::ObjectKind;
use crate::sources::fs::dirfd::{self, Identity, Place};

/// File-system block size for hole detection.
const BLOCK: u64 = 4096;

/// A file to restore.
#[derive(Clone, Debug)]
pub struct FileJob {
    /// Where it goes.
    pub at: Place,
    /// What the snapshot holds.
    pub node: Node,
    /// Whether it replaces what is at `at` (otherwise nothing may be there).
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
    /// Temporary name and identity of each file created.
    made: Vec<Option<(OsString, Identity)>>,
    /// Each file created, until it is put in place (dropping it removes it).
    entries: Vec<Mutex<Option<Partial>>>,
    /// Blob writes each file still waits for.
    remaining: Vec<AtomicUsize>,
    /// Called with each complete file under its temporary name, before it is put in place.
    finish: &'a (dyn Fn(&File, &FileJob) + Sync),
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

    /// Opens file `i` under its temporary name for writing: by name in its folder, and only
    /// if it is still the file made.
    fn open(&self, i: usize) -> std::result::Result<File, String> {
        let Some((name, made)) = &self.made[i] else {
            return Err("not created".into());
        };
        let at = &self.jobs[i].at;
        dirfd::open_at(&at.dir, name, OFlag::O_WRONLY, SFlag::S_IFREG, Some(*made))
            .map(|(file, _)| file)
            .map_err(|e| Error::io(&at.path, e).to_string())
    }

    fn complete(&self, i: usize) {
        let Some(entry) = self.entries[i].lock().expect("lock").take() else {
            return;
        };
        let job = &self.jobs[i];
        match self.open(i) {
            Ok(file) => (self.finish)(&file, job),
            // dropping the entry removes it
            Err(why) => return self.fail(i, why),
        }
        if let Err(e) = entry.put_in_place(&job.at.name, job.replace) {
            self.fail(i, format!("cannot be put in place: {e}"));
        }
    }
}

/// Restores `files`: creates each under a temporary name, writes its contents, calls `finish`
/// on it (to set its metadata) and renames it into place. Whatever fails leaves nothing behind.
pub fn fill(
    repo: &Repository,
    files: &[FileJob],
    finish: &(dyn Fn(&File, &FileJob) + Sync),
    progress: &Progress,
) -> Filled {
    // on all cores: creating many files is mostly file-system work (inode allocation)
    let created: Vec<std::result::Result<(Partial, Identity), String>> =
        files.par_iter().map(create_sized).collect();
    let mut not_created = HashMap::new();
    let mut made = vec![];
    let mut entries = vec![];
    for (i, created) in created.into_iter().enumerate() {
        match created {
            Ok((entry, identity)) => {
                made.push(Some((entry.name().to_owned(), identity)));
                entries.push(Mutex::new(Some(entry)));
            }
            Err(why) => {
                not_created.insert(i, why);
                made.push(None);
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
        made,
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

/// Creates a new file of the job's size (a hole, filled later) under a temporary name in its
/// folder, never through a symlink; returns it with its identity. A file that cannot be sized
/// is removed again.
fn create_sized(job: &FileJob) -> std::result::Result<(Partial, Identity), String> {
    let fail = |e: std::io::Error| Error::io(&job.at.path, e).to_string();
    let flags = OFlag::O_WRONLY
        | OFlag::O_CREAT
        | OFlag::O_EXCL
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let (file, entry) = partial::make(&job.at.dir, |dir, name| {
        let fd = nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(0o600))?;
        Ok(File::from(fd))
    })
    .map_err(fail)?;
    file.set_len(job.node.size).map_err(fail)?;
    let st = fstat(&file).map_err(|e| fail(e.into()))?;
    Ok((entry, dirfd::identity(&st)))
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
            if partials.has_failed(*i) || partials.made[*i].is_none() {
                continue;
            }
            let path = &partials.jobs[*i].at.path;
            let file = match handles.entry(*i) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => match partials.open(*i) {
                    Ok(f) => v.insert(f),
                    Err(why) => {
                        partials.fail(*i, why);
                        continue;
                    }
                },
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
