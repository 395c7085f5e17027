//! The local index cache (format §7.1): a RocksDB database in the cache directory that says
//! where each blob is, copied from the repository's index segments ([`crate::format::index`])
//! for fast look-ups, and rebuilt from them whenever it is missing, damaged or out of date.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rocksdb::{BlockBasedIndexType, BlockBasedOptions, Cache, DB, Options, WriteBatch};

use crate::error::{Error, Result};
use crate::format::blob::BlobKind;
use crate::format::id::Id;
use crate::format::index::{IndexSegment, Lineage};
use crate::format::pack::{PackedBlob, Reader};

/// Version of the local cache layout; a cache of another version is rebuilt (4: a segment can be
/// recorded as being added, which an older cairn would take for retired).
const CACHE_VERSION: &[u8] = b"cairn-index-cache/4";

/// Where a blob is: its pack and its place there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: Id,
    /// The blob's entry in that pack's header.
    pub blob: PackedBlob,
}

impl BlobLocation {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + crate::format::pack::ENTRY_LEN);
        v.extend_from_slice(&self.pack.0);
        self.blob.encode(&mut v);
        v
    }

    fn decode(v: &[u8]) -> Option<BlobLocation> {
        Some(BlobLocation {
            pack: Id::from_slice(v.get(..32)?)?,
            blob: PackedBlob::decode(v.get(32..)?)?,
        })
    }
}

const BLOB_PREFIX: u8 = b'b';
const SEGMENT_PREFIX: u8 = b's';
const VERSION_KEY: &[u8] = b"version";

fn key(prefix: u8, id: &Id) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.0);
    k
}

/// The local RocksDB copy of the repository's index.
pub struct LocalIndex {
    db: DB,
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// RocksDB's block cache when `CAIRN_INDEX_CACHE_MB` does not say otherwise.
const DEFAULT_CACHE_MB: usize = 32;

/// The block cache size: `CAIRN_INDEX_CACHE_MB` (8–65536), else 32 MiB.
fn cache_bytes() -> usize {
    crate::env_number("CAIRN_INDEX_CACHE_MB", 8..=65536, DEFAULT_CACHE_MB) << 20
}

/// Options that keep look-ups fast and memory bounded at any index size: a bloom filter
/// answers most look-ups of new blobs without reading a data block, and filters and index
/// blocks live in the one block cache (partitioned, so only their top level is pinned) rather
/// than in memory that grows with the number of entries.
fn db_options() -> Options {
    db_options_within(cache_bytes(), 16 << 20)
}

/// [`db_options`] with a block cache of `cache` bytes and two memtables of `memtable` bytes
/// each: the memory a database of any size holds.
pub(crate) fn db_options_within(cache: usize, memtable: usize) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(cache));
    table.set_bloom_filter(10.0, false);
    table.set_partition_filters(true);
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_block_based_table_factory(&table);
    // Keys and values are random hashes: compression would only cost time.
    o.set_compression_type(rocksdb::DBCompressionType::None);
    // memtables: at most two while a large index is written (a cache rebuild)
    o.set_write_buffer_size(memtable);
    o.set_max_write_buffer_number(2);
    o.set_max_open_files(256);
    o.set_keep_log_file_num(2);
    o
}

/// Entries of a segment written to the cache in one batch. A segment of 500 000 entries written
/// whole took about 150 MB of batch and 67 MB of memtable at the peak of a check of 10 M blobs.
const ENTRIES_PER_WRITE: usize = 1 << 16;

/// The states of a segment's record: retired (no entries), active (all entries in), and
/// active with its entries being added.
const RETIRED: u8 = 0;
const ACTIVE: u8 = 1;
const ADDING: u8 = 2;

/// What the cache remembers of a segment it has seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownSegment {
    /// Whether its entries are in the cache (it was not [`retired`](crate::format::index::retired) when added).
    pub active: bool,
    /// Whether all of them are: false while they are being added, and after a run that stopped
    /// midway (the cache must then be rebuilt).
    pub complete: bool,
    /// What it replaces, and its epoch.
    pub lineage: Lineage,
}

impl LocalIndex {
    /// Opens (or creates) the cache at `path`. A damaged cache or one of another layout is
    /// deleted and started afresh; one locked by another process is replaced by a temporary
    /// one for this run.
    pub fn open(path: &Path) -> Result<LocalIndex> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let db = match DB::open(&db_options(), path) {
            Ok(db) => db,
            Err(e) if e.as_ref().contains("lock") => return Self::temporary(),
            Err(e) => {
                tracing::warn!(cache = %path.display(), error = %e, "local index cache is damaged; rebuilding it");
                let _ = DB::destroy(&db_options(), path);
                let _ = std::fs::remove_dir_all(path);
                DB::open(&db_options(), path)?
            }
        };
        let index = LocalIndex {
            db,
            path: path.to_owned(),
            _temp: None,
        };
        if index.db.get(VERSION_KEY)?.as_deref() != Some(CACHE_VERSION) {
            index.clear()?;
        }
        Ok(index)
    }

    fn temporary() -> Result<LocalIndex> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        tracing::info!(cache = %dir.path().display(), "local index cache is in use by another process; using a temporary one");
        let db = DB::open(&db_options(), dir.path())?;
        let index = LocalIndex {
            db,
            path: dir.path().to_owned(),
            _temp: Some(dir),
        };
        index.clear()?;
        Ok(index)
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets everything (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        // one range deletion: a batch of every key would take memory in proportion to the index
        let mut batch = WriteBatch::default();
        batch.delete_range(&[][..], &[0xff; 64][..]);
        batch.put(VERSION_KEY, CACHE_VERSION);
        Ok(self.db.write(batch)?)
    }

    /// Rewrites the cache as one sorted run without deleted entries. Worth it after a rebuild:
    /// look-ups then read one level instead of every freshly written file and the range
    /// deletion of [`LocalIndex::clear`].
    pub fn compact(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
    }

    /// Looks a blob up.
    pub fn get(&self, id: &Id) -> Result<Option<BlobLocation>> {
        Ok(self
            .db
            .get_pinned(key(BLOB_PREFIX, id))?
            .and_then(|v| BlobLocation::decode(&v)))
    }

    /// Whether a blob is indexed (of any kind).
    pub fn contains(&self, id: &Id) -> Result<bool> {
        Ok(self.db.get_pinned(key(BLOB_PREFIX, id))?.is_some())
    }

    /// Remembers a stored segment and, if it is `active` (superseded by no listed segment),
    /// adds its entries, 65,536 to a write.
    pub fn add_segment(&self, segment_id: &Id, segment: &IndexSegment, active: bool) -> Result<()> {
        // The segment is recorded as being added before its entries, and as active after the
        // last: a run that stops between two writes leaves it incomplete, and the next
        // `Repository::sync_index` rebuilds the cache; never entries of an unknown segment,
        // which the segment's retirement would not clear.
        if !active {
            return self.record(segment_id, &segment.lineage, RETIRED);
        }
        self.record(segment_id, &segment.lineage, ADDING)?;
        let mut batch = WriteBatch::default();
        for (pack, blobs) in &segment.packs {
            for blob in blobs {
                let loc = BlobLocation {
                    pack: *pack,
                    blob: *blob,
                };
                batch.put(key(BLOB_PREFIX, &blob.id), loc.encode());
                if batch.len() >= ENTRIES_PER_WRITE {
                    self.db.write(std::mem::take(&mut batch))?;
                }
            }
        }
        self.db.write(batch)?;
        self.record(segment_id, &segment.lineage, ACTIVE)
    }

    /// Leaves the cache as a run that stopped adding `segment_id` leaves it, without `lost`.
    #[cfg(test)]
    pub(crate) fn stop_adding(&self, segment_id: &Id, lineage: &Lineage, lost: &Id) -> Result<()> {
        self.db.delete(key(BLOB_PREFIX, lost))?;
        self.record(segment_id, lineage, ADDING)
    }

    /// Records a segment in `state`.
    fn record(&self, segment_id: &Id, lineage: &Lineage, state: u8) -> Result<()> {
        let mut value = vec![state];
        value.extend_from_slice(&lineage.epoch.to_le_bytes());
        value.extend_from_slice(&lineage.retires_below.to_le_bytes());
        for id in &lineage.supersedes {
            value.extend_from_slice(&id.0);
        }
        Ok(self.db.put(key(SEGMENT_PREFIX, segment_id), value)?)
    }

    /// The segments already seen by this cache.
    pub fn known_segments(&self) -> Result<HashMap<Id, KnownSegment>> {
        let mut out = HashMap::new();
        for item in self.db.prefix_iterator([SEGMENT_PREFIX]) {
            let (k, v) = item?;
            if k.first() != Some(&SEGMENT_PREFIX) {
                break;
            }
            let mut r = Reader(&v);
            let known = (|| {
                let state = r.u8()?;
                let (active, complete) = (state != RETIRED, state != ADDING);
                let (epoch, retires_below) = (r.u64()?, r.u64()?);
                let supersedes = r.0.chunks_exact(32).filter_map(Id::from_slice).collect();
                Some(KnownSegment {
                    active,
                    complete,
                    lineage: Lineage {
                        supersedes,
                        epoch,
                        retires_below,
                    },
                })
            })();
            if let (Some(id), Some(known)) = (Id::from_slice(&k[1..]), known) {
                out.insert(id, known);
            }
        }
        Ok(out)
    }

    /// Counts indexed blobs by kind.
    pub fn count(&self) -> Result<(u64, u64)> {
        let (mut data, mut tree) = (0, 0);
        for item in self.db.prefix_iterator([BLOB_PREFIX]) {
            let (k, v) = item?;
            if k.first() != Some(&BLOB_PREFIX) {
                break;
            }
            match BlobLocation::decode(&v).map(|l| l.blob.kind) {
                Some(BlobKind::Data) => data += 1,
                Some(BlobKind::Tree) => tree += 1,
                None => {}
            }
        }
        Ok((data, tree))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::tests::{entry, segment};

    #[test]
    fn local_index_add_get_clear_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let seg_id = Id([7; 32]);
        {
            let idx = LocalIndex::open(dir.path()).unwrap();
            idx.add_segment(&seg_id, &segment(), true).unwrap();
            let loc = idx.get(&Id([3; 32])).unwrap().unwrap();
            assert_eq!(loc.pack, Id([2; 32]));
            assert_eq!(loc.blob, entry(3, BlobKind::Data));
            assert_eq!(idx.count().unwrap(), (2, 1));
        }
        let idx = LocalIndex::open(dir.path()).unwrap();
        assert_eq!(
            idx.known_segments().unwrap().keys().collect::<Vec<_>>(),
            vec![&seg_id]
        );
        idx.clear().unwrap();
        assert!(!idx.contains(&Id([3; 32])).unwrap());
        assert!(idx.known_segments().unwrap().is_empty());
    }

    #[test]
    fn a_segment_larger_than_one_write_is_added_whole() {
        let dir = tempfile::tempdir().unwrap();
        let idx = LocalIndex::open(dir.path()).unwrap();
        let mut large = segment();
        let blob_id = |n: usize| {
            let mut b = [0xee; 32];
            b[..8].copy_from_slice(&(n as u64).to_le_bytes());
            Id(b)
        };
        let blobs = (0..2 * ENTRIES_PER_WRITE + 3).map(|n| PackedBlob {
            id: blob_id(n),
            ..entry(4, BlobKind::Data)
        });
        large.packs.push((Id([4; 32]), blobs.collect()));
        idx.add_segment(&Id([8; 32]), &large, true).unwrap();
        assert_eq!(
            idx.count().unwrap(),
            (2 + 2 * ENTRIES_PER_WRITE as u64 + 3, 1)
        );
        for n in [
            0,
            ENTRIES_PER_WRITE - 1,
            ENTRIES_PER_WRITE,
            2 * ENTRIES_PER_WRITE + 2,
        ] {
            assert_eq!(idx.get(&blob_id(n)).unwrap().unwrap().pack, Id([4; 32]));
        }
        let added = &idx.known_segments().unwrap()[&Id([8; 32])];
        assert!(added.active && added.complete);
        // a retired one is known, with no entries
        idx.add_segment(&Id([9; 32]), &segment(), false).unwrap();
        assert!(!idx.known_segments().unwrap()[&Id([9; 32])].active);
        // one whose adding stopped midway is known as incomplete
        idx.record(&Id([10; 32]), &segment().lineage, ADDING)
            .unwrap();
        let stopped = &idx.known_segments().unwrap()[&Id([10; 32])];
        assert!(stopped.active && !stopped.complete);
    }

    #[test]
    fn a_garbage_cache_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        LocalIndex::open(dir.path())
            .unwrap()
            .add_segment(&Id([7; 32]), &segment(), true)
            .unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let p = f.unwrap().path();
            std::fs::write(&p, b"garbage").unwrap();
        }
        let idx = LocalIndex::open(dir.path()).unwrap();
        assert!(idx.known_segments().unwrap().is_empty());
    }
}
