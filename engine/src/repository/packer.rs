//! The packer: saves blobs for a backup. It deduplicates against the index and against blobs
//! already saved in this run, gathers sealed blobs into packs (data and trees apart), uploads
//! full packs in the background, and writes an index segment for stored packs, always after
//! the packs themselves are stored.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinHandle;

use crate::error::Result;
use crate::format::blob::{self, BlobKind};
use crate::format::crypto::Domain;
use crate::format::id::Id;
use crate::format::index::{IndexSegment, Lineage};
use crate::format::pack::{PackWriter, PackedBlob};
use crate::repository::Repository;
use crate::repository::session::Session;
use crate::repository::store::ObjectKind;

/// Stored packs gathered before an index segment is written.
const PACKS_PER_SEGMENT: usize = 64;

/// Blobs in stored packs gathered before an index segment is written, whatever the number of
/// packs: small blobs fill a pack with hundreds of thousands, each held in memory (its id, and
/// its entry for the segment) until its segment is written.
const BLOBS_PER_SEGMENT: usize = 100_000;

/// What a packer added to the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackerStats {
    /// New blobs.
    pub blobs: u64,
    /// Their plaintext bytes.
    pub raw_bytes: u64,
    /// Bytes stored (packs and index segments).
    pub stored_bytes: u64,
    /// The packs stored.
    pub packs: Vec<Id>,
    /// The packs of indexed blobs it found already stored and did not store again.
    pub referenced: HashSet<Id>,
    /// The index segments stored.
    pub segments: Vec<Id>,
}

type Upload = (Id, Vec<PackedBlob>, JoinHandle<Result<()>>);

#[derive(Default)]
struct Uploads {
    running: VecDeque<Upload>,
    stored: Vec<(Id, Vec<PackedBlob>)>,
    /// Every pack stored so far.
    written: Vec<Id>,
    /// Every index segment stored so far.
    segments: Vec<Id>,
}

/// Saves blobs into a repository; shared by reference between worker threads.
pub struct Packer<'r> {
    repo: &'r Repository,
    /// The writer session whose lease is confirmed before each index segment.
    session: Option<&'r Session>,
    excluded: HashSet<Id>,
    /// Packs of blobs found in the index (deduplicated against).
    referenced: Mutex<HashSet<Id>>,
    /// Blobs saved by this run and not yet indexed (or being looked up).
    seen: Mutex<HashSet<Id>>,
    open: [Mutex<PackWriter>; 2],
    uploads: Mutex<Uploads>,
    blobs: AtomicU64,
    raw_bytes: AtomicU64,
    stored_bytes: AtomicU64,
}

impl<'r> Packer<'r> {
    /// A packer writing into `repo`.
    pub fn new(repo: &'r Repository) -> Self {
        Self::excluding(repo, HashSet::new())
    }

    /// A packer that does not count blobs stored in the `excluded` packs as present (packs
    /// marked for deletion by garbage collection, or being repacked): it stores them anew.
    pub fn excluding(repo: &'r Repository, excluded: HashSet<Id>) -> Self {
        Packer {
            repo,
            session: None,
            excluded,
            referenced: Mutex::default(),
            seen: Mutex::default(),
            open: Default::default(),
            uploads: Mutex::default(),
            blobs: AtomicU64::new(0),
            raw_bytes: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
        }
    }

    /// A packer for a writer session (backup, copy): it does not deduplicate against the packs
    /// marked when the session began, and writes an index segment only while the session's
    /// lease holds (format-spec §12.3).
    pub fn in_session(repo: &'r Repository, session: &'r Session) -> Self {
        Packer {
            session: Some(session),
            ..Self::excluding(repo, session.marked_packs())
        }
    }

    /// Whether a blob is already in the repository or saved by this run.
    pub fn has(&self, id: &Id) -> Result<bool> {
        // `seen` first: a blob leaves it only once it is in the index
        Ok(self.seen.lock().expect("lock").contains(id) || self.indexed(id)?)
    }

    /// Whether the index holds a blob in a pack that is not excluded.
    fn indexed(&self, id: &Id) -> Result<bool> {
        Ok(match self.repo.index().get(id)? {
            Some(loc) if !self.excluded.contains(&loc.pack) => {
                self.referenced.lock().expect("lock").insert(loc.pack);
                true
            }
            _ => false,
        })
    }

    /// Saves one blob whose id the caller computed (e.g. on another thread); returns whether it
    /// was new. Compression and encryption happen on the calling thread.
    pub fn save_with_id(&self, kind: BlobKind, id: Id, plaintext: &[u8]) -> Result<bool> {
        // Claim the id before looking it up, so that two threads never both store it; a blob
        // leaves `seen` only after it is indexed, so one not in `seen` is found in the index.
        if !self.seen.lock().expect("lock").insert(id) {
            return Ok(false);
        }
        if self.indexed(&id)? {
            self.seen.lock().expect("lock").remove(&id);
            return Ok(false);
        }
        let sealed = blob::seal(
            self.repo.keys(),
            Domain::Blob,
            self.repo.config().compression_level,
            plaintext,
        );
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.raw_bytes
            .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        let full = {
            let mut open = self.open[kind.to_byte() as usize].lock().expect("lock");
            open.add(kind, id, &sealed, plaintext.len() as u32);
            (open.len() >= self.repo.config().pack_size as usize)
                .then(|| std::mem::take(&mut *open))
        };
        if let Some(pack) = full {
            self.upload(kind, pack)?;
        }
        Ok(true)
    }

    /// Hashes and saves one blob; returns its id.
    pub fn save(&self, kind: BlobKind, plaintext: &[u8]) -> Result<Id> {
        let id = self.repo.keys().blob_id(plaintext);
        self.save_with_id(kind, id, plaintext)?;
        Ok(id)
    }

    fn upload(&self, kind: BlobKind, pack: PackWriter) -> Result<()> {
        let (id, bytes, blobs) = pack.finish(self.repo.keys());
        if kind == BlobKind::Tree {
            self.repo.remember_tree_pack(&id, &bytes);
        }
        self.stored_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let task = self
            .repo
            .store()
            .put_async(ObjectKind::Pack.path(&id), bytes);
        let mut uploads = self.uploads.lock().expect("lock");
        uploads.running.push_back((id, blobs, task));
        // uploads in flight, each holding a pack, bound memory
        while uploads.running.len() > self.repo.store().connections() {
            self.settle_one(&mut uploads)?;
        }
        let blobs: usize = uploads.stored.iter().map(|(_, blobs)| blobs.len()).sum();
        if uploads.stored.len() >= PACKS_PER_SEGMENT || blobs >= BLOBS_PER_SEGMENT {
            self.write_segment(&mut uploads)?;
        }
        Ok(())
    }

    fn settle_one(&self, uploads: &mut Uploads) -> Result<()> {
        if let Some((id, blobs, task)) = uploads.running.pop_front() {
            self.repo.store().wait(task)?;
            uploads.written.push(id);
            uploads.stored.push((id, blobs));
        }
        Ok(())
    }

    fn write_segment(&self, uploads: &mut Uploads) -> Result<()> {
        if uploads.stored.is_empty() {
            return Ok(());
        }
        if let Some(session) = self.session {
            // a writer taken for dead may have lost these packs to a gc: never index them then
            session.check_lease()?;
        }
        let segment = IndexSegment {
            packs: std::mem::take(&mut uploads.stored),
            lineage: Lineage {
                epoch: self.repo.writer_epoch()?,
                ..Lineage::default()
            },
        };
        let encoded_len = segment.encode().len() as u64;
        let stored = self.repo.save_index(&segment)?;
        if let Some(session) = self.session {
            session.confirm_stored(self.repo, ObjectKind::Index, &stored)?;
        }
        uploads.segments.push(stored);
        self.stored_bytes.fetch_add(encoded_len, Ordering::Relaxed);
        // indexed now: the index answers for them, so memory does not grow with the run
        let mut seen = self.seen.lock().expect("lock");
        for blob in segment.packs.iter().flat_map(|(_, blobs)| blobs) {
            seen.remove(&blob.id);
        }
        Ok(())
    }

    /// Stores the partly filled packs, waits for every upload and indexes them all. After this
    /// returns, every blob saved is in the repository's index.
    pub fn finish(self) -> Result<PackerStats> {
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let pack =
                std::mem::take(&mut *self.open[kind.to_byte() as usize].lock().expect("lock"));
            if !pack.is_empty() {
                self.upload(kind, pack)?;
            }
        }
        let mut uploads = self.uploads.lock().expect("lock");
        while !uploads.running.is_empty() {
            self.settle_one(&mut uploads)?;
        }
        self.write_segment(&mut uploads)?;
        Ok(PackerStats {
            blobs: self.blobs.load(Ordering::Relaxed),
            raw_bytes: self.raw_bytes.load(Ordering::Relaxed),
            stored_bytes: self.stored_bytes.load(Ordering::Relaxed),
            packs: std::mem::take(&mut uploads.written),
            referenced: std::mem::take(&mut *self.referenced.lock().expect("lock")),
            segments: std::mem::take(&mut uploads.segments),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_stores_each_blob_once_and_forgets_what_the_index_holds() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::repository::small_test_repository(dir.path(), 1024);
        let packer = Packer::new(&repo);
        // incompressible 400-byte blobs
        let blob = |n: u32| -> Vec<u8> {
            let mut b = vec![0; 400];
            blake3::Hasher::new()
                .update(&n.to_le_bytes())
                .finalize_xof()
                .fill(&mut b);
            b
        };
        // 400-byte blobs in 1 KiB packs: a segment is written every 64 packs (about 128 blobs)
        let count = 400;
        let ids: Vec<Id> = (0..count)
            .map(|n| packer.save(BlobKind::Data, &blob(n)).unwrap())
            .collect();
        let not_indexed = packer.seen.lock().unwrap().len();
        assert!(
            not_indexed < count as usize / 2,
            "{not_indexed} blobs still held in memory after their segments were written"
        );
        // every blob saved again in the same run, indexed or not, is found
        for (n, id) in (0..count).zip(&ids) {
            assert!(packer.has(id).unwrap());
            assert!(!packer.save_with_id(BlobKind::Data, *id, &blob(n)).unwrap());
        }
        let stats = packer.finish().unwrap();
        assert_eq!(stats.blobs, count as u64);
        for id in &ids {
            assert!(repo.index().contains(id).unwrap());
        }
    }

    #[test]
    fn tiny_blobs_are_indexed_long_before_sixty_four_packs() {
        let dir = tempfile::tempdir().unwrap();
        // 2 MiB packs of 16-byte blobs: over 20 000 a pack, 250 000 in about ten packs
        let repo = crate::repository::small_test_repository(dir.path(), 2 << 20);
        let packer = Packer::new(&repo);
        let count: u32 = 250_000;
        for n in 0..count {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&n.to_le_bytes());
            packer.save(BlobKind::Data, &b).unwrap();
        }
        let not_indexed = packer.seen.lock().unwrap().len();
        assert!(
            not_indexed <= BLOBS_PER_SEGMENT + 50_000,
            "{not_indexed} blobs still held in memory"
        );
        assert_eq!(packer.finish().unwrap().blobs, u64::from(count));
    }
}
