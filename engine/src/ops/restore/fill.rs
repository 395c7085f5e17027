//! Fills restored files with their contents: reads each run of nearby blobs needed from a pack
//! once (one ranged read), verifies and decompresses blobs on all cores, and writes each blob at
//! its offsets in every file that holds it, out of order. Files are created empty under a
//! temporary name first ([`partial`]) and held open until they are complete, and block-aligned
//! runs of zeros are never written, so holes stay holes (a file that ends in one is extended to
//! its size at the end); a file is renamed into place as soon as its last blob is written.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, fstat};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::{self, Scratch};
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

/// The largest gap between two blobs needed from a pack that is read through (and thrown away)
/// rather than read as two ranges: blobs that other files brought into a pack long before
/// cost a read of their own, never a read of the whole pack.
const GAP: u64 = 1 << 20;

/// Files at least this large have each blob's range handed to the disk as soon as it is
/// written ([`start_writeback`]); smaller ones are left to the final flush, which writes many
/// at once (one write-back request per small file costs more than writing it).
const WRITEBACK_FROM: u64 = 1 << 20;

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

/// Buffers kept for use again, as many as were ever in use at once: a fresh buffer of 4 MiB or
/// more costs a page fault for every 4 KiB written to it (the allocator maps each afresh), and
/// pack spans and blobs are that large.
#[derive(Default)]
struct Pool<T>(Mutex<Vec<T>>);

impl<T: Default> Pool<T> {
    /// Calls `f` with a buffer of the pool (a new one if none is free), then gives it back.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut buf = self.0.lock().expect("lock").pop().unwrap_or_default();
        let r = f(&mut buf);
        self.0.lock().expect("lock").push(buf);
        r
    }
}

/// The buffers filling reads pack spans into and opens blobs into.
#[derive(Default)]
struct Buffers {
    spans: Pool<Vec<u8>>,
    blobs: Pool<Scratch>,
}

/// A file created, open, with its identity.
type Opened = (File, Identity);

/// The files being filled, under their temporary names.
struct Partials<'a> {
    jobs: &'a [FileJob],
    /// Each file created, open for writing until filling ends, with its identity: it is
    /// written and given its metadata through this descriptor only, never reopened by name.
    files: Vec<Option<Opened>>,
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

    fn complete(&self, i: usize) {
        let Some(entry) = self.entries[i].lock().expect("lock").take() else {
            return;
        };
        let (job, file) = (&self.jobs[i], &self.files[i]);
        let (file, made) = file
            .as_ref()
            .expect("an entry is kept only for a file created");
        // the temporary name must still be the file made (not something put in its place,
        // which would be renamed into place), else the file is made again
        let size = match dirfd::stat_at(entry.dir(), entry.name()) {
            Ok(st) if dirfd::identity(&st) == *made => st.st_size as u64,
            // dropping the entry removes what is under its name
            _ => return self.fail(i, Error::io(&job.at.path, dirfd::replaced()).to_string()),
        };
        if size > job.node.size {
            let why =
                "it grew past its size while restored (someone else wrote into it); run again";
            return self.fail(i, why.into());
        }
        // a file that ends in a hole: written up to its last data, so far
        if size != job.node.size
            && let Err(e) = file.set_len(job.node.size)
        {
            return self.fail(i, Error::io(&job.at.path, e).to_string());
        }
        (self.finish)(file, job);
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
    let created: Vec<std::result::Result<(Partial, Opened), String>> =
        files.par_iter().map(create).collect();
    let mut not_created = HashMap::new();
    let mut opened = vec![];
    let mut entries = vec![];
    for (i, created) in created.into_iter().enumerate() {
        match created {
            Ok((entry, file)) => {
                opened.push(Some(file));
                entries.push(Mutex::new(Some(entry)));
            }
            Err(why) => {
                not_created.insert(i, why);
                opened.push(None);
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
        files: opened,
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
    let runs: Vec<(Id, Vec<Need>)> = by_pack
        .into_iter()
        .flat_map(|(pack, needs)| {
            let runs = runs(needs.into_values().collect());
            runs.into_iter().map(move |run| (pack, run))
        })
        .collect();
    let buffers = Buffers::default();
    let fill = || -> u64 {
        runs.into_par_iter()
            .map(|(pack, needs)| {
                match fill_from_pack(repo, &partials, &buffers, &pack, &needs, progress) {
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

/// Creates a new empty file under a temporary name in its folder, never through a symlink;
/// returns it, open for writing, with its identity.
fn create(job: &FileJob) -> std::result::Result<(Partial, Opened), String> {
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
    let st = fstat(&file).map_err(|e| fail(e.into()))?;
    Ok((entry, (file, dirfd::identity(&st))))
}

/// Splits the blobs needed from one pack into runs in pack order, each read with one ranged
/// read, a new run starting wherever more than [`GAP`] bytes lie between two blobs.
fn runs(mut needs: Vec<Need>) -> Vec<Vec<Need>> {
    needs.sort_by_key(|n| n.loc.blob.offset);
    let mut runs: Vec<Vec<Need>> = vec![];
    let mut end = 0u64;
    for need in needs {
        let (offset, length) = (
            u64::from(need.loc.blob.offset),
            u64::from(need.loc.blob.length),
        );
        match runs.last_mut() {
            Some(run) if offset <= end.saturating_add(GAP) => run.push(need),
            _ => runs.push(vec![need]),
        }
        end = end.max(offset + length);
    }
    runs
}

/// Reads the span of `pack` that holds `needs` once, then verifies and writes each blob, on
/// all cores.
fn fill_from_pack(
    repo: &Repository,
    partials: &Partials,
    buffers: &Buffers,
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
    buffers.spans.with(|span| {
        let span = repo
            .store()
            .get_range_into(&ObjectKind::Pack.path(pack), start..end, span)
            .map_err(|e| Error::damaged("pack", pack, format!("cannot be read: {e}")))?;
        let span = &*span;
        let written = needs
            .par_iter()
            .map(|need| {
                buffers.blobs.with(|scratch| {
                    let b = &need.loc.blob;
                    // a store may return less than asked for (a truncated pack): an error,
                    // never a panic
                    let opened = pack::stored_in(pack, span, start, b).and_then(|stored| {
                        blob::open_blob_into(repo.keys(), &b.id, stored, b.raw_len, scratch)
                    });
                    match opened {
                        Ok(data) => write_blob(partials, need, data, progress),
                        Err(e) => {
                            for (i, _) in &need.targets {
                                partials.fail(*i, e.to_string());
                            }
                            0
                        }
                    }
                })
            })
            .sum();
        Ok(written)
    })
}

/// Writes a verified blob at its offsets in every file that holds it; the bytes written.
fn write_blob(partials: &Partials, need: &Need, data: &[u8], progress: &Progress) -> u64 {
    let mut written = 0;
    for (i, offset) in &need.targets {
        let Some((file, _)) = &partials.files[*i] else {
            continue;
        };
        if partials.has_failed(*i) {
            continue;
        }
        match write_sparse_at(file, *offset, data) {
            Ok(n) => {
                written += n;
                if partials.jobs[*i].node.size >= WRITEBACK_FROM {
                    start_writeback(file, *offset, data.len());
                }
                partials.written(*i);
            }
            Err(e) => {
                let path = &partials.jobs[*i].at.path;
                partials.fail(*i, Error::io(path, e).to_string());
            }
        }
    }
    progress.add_bytes(data.len() as u64 * need.targets.len() as u64);
    written
}

/// Starts writing a just-written range to disk without waiting, so that the disk works while
/// the restore goes on and the final flush has little left to do; the kernel drops the range
/// from the page cache once written, rather than evicting other data.
fn start_writeback(file: &File, pos: u64, len: usize) {
    crate::drop_from_page_cache(file, pos, len as u64);
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
        if all_zero(&data[at..end]) {
            at = end;
            continue;
        }
        let mut stop = end;
        while stop < data.len() {
            let next = boundary(stop).min(data.len());
            if all_zero(&data[stop..next]) {
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

/// Whether every byte is zero, looked at 64 bytes at a time: a byte-by-byte test that stops at
/// the first non-zero byte cannot be vectorised, and took a tenth of a restore's time on data
/// with many zero blocks (a sparse disk image, a database's empty pages).
fn all_zero(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(64);
    chunks
        .by_ref()
        .all(|chunk| chunk.iter().fold(0, |acc, &b| acc | b) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn blobs_far_apart_in_a_pack_are_read_as_separate_runs() {
        let need = |offset: u32, length: u32| Need {
            loc: BlobLocation {
                pack: Id([1; 32]),
                blob: crate::format::pack::PackedBlob {
                    kind: crate::format::blob::BlobKind::Data,
                    id: Id([offset as u8; 32]),
                    offset,
                    length,
                    raw_len: length,
                },
            },
            targets: vec![],
        };
        let gap = GAP as u32;
        // out of order, as a hash map gives them
        let needs = vec![
            need(3 * gap + 10_000, 100),
            need(0, 5000),
            need(5000 + gap, 100),
            need(5000 + gap + 100 + gap + 1, 100),
        ];
        let offsets: Vec<Vec<u32>> = runs(needs)
            .iter()
            .map(|run| run.iter().map(|n| n.loc.blob.offset).collect())
            .collect();
        assert_eq!(
            offsets,
            [
                vec![0, 5000 + gap],
                vec![5000 + gap + 100 + gap + 1],
                vec![3 * gap + 10_000]
            ]
        );
    }

    #[test]
    fn a_single_non_zero_byte_anywhere_is_seen() {
        for len in [0, 1, 63, 64, 65, 200, 4096] {
            let mut data = vec![0u8; len];
            assert!(all_zero(&data), "{len} zeros");
            for at in 0..len {
                data[at] = 0x80;
                assert!(!all_zero(&data), "byte {at} of {len}");
                data[at] = 0;
            }
        }
    }

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
