//! The blobs that gc must keep: every tree and data blob a listed snapshot reaches.
//!
//! Trees are kept by id. Data blobs are kept as the first 8 bytes of their ids, sorted in
//! memory up to a budget; a live set larger than that (about 4 M blobs, 4 TB of data at 1 MiB
//! chunks) moves into a temporary RocksDB database in the cache folder, so that gc's memory does
//! not grow with the number of live blobs. A dead blob whose id shares those 8 bytes with a live
//! one (odds about n²/2⁶⁵) counts as live and is kept: an error that only ever keeps garbage.

use std::collections::HashSet;
use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DB, DEFAULT_COLUMN_FAMILY_NAME, IngestExternalFileOptions,
    SstFileWriter,
};

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack::PackedBlob;
use crate::repository::local_index;

/// Data blobs held in memory before the live set moves to disk: 32 MiB of prefixes. Looking a
/// blob up on disk costs a few microseconds (a gc of 3 M live blobs took 57 s with 2 M of them
/// in memory, 35 s with all), so the budget is as large as the memory it saves is worth.
pub const IN_MEMORY: usize = 1 << 22;

/// Blobs looked up on disk together by a [`Sweep`]: 128 Ki blobs, about 7 MiB queued.
pub const SWEEP_BATCH: usize = 1 << 17;

/// Look-ups handed to the spilled database at once. In key order, the blocks one call reads
/// are still cached for the next.
const ASKED_AT_ONCE: usize = 1024;

/// The spilled database's block cache. Its memtables stay empty: spills go in as table files.
const SPILL_CACHE: usize = 8 << 20;

/// The live set (see the module documentation).
pub struct LiveSet {
    trees: HashSet<Id>,
    data: Vec<u64>,
    /// Entries of `data` known sorted and distinct (the rest were added since).
    distinct: usize,
    budget: usize,
    spilled: Option<Spilled>,
}

/// Live data blobs on disk, in a database deleted with this value.
struct Spilled {
    db: DB,
    /// Table files written so far.
    runs: u32,
    dir: tempfile::TempDir,
}

/// The name of every spilled database's folder starts with this.
const SPILL_PREFIX: &str = "gc-live-";

/// Deletes the spilled databases of gc runs that were killed (only one gc runs at a time).
pub fn remove_leftovers(spill_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(spill_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let leftover = entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPILL_PREFIX);
        if leftover && let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(folder = %entry.path().display(), error = %e, "cannot delete the live set of an interrupted gc; delete it by hand");
        }
    }
}

/// See [`LiveSet::sweep`]; [`finish`](Self::finish) answers for the packs still queued.
pub struct Sweep<'a, F> {
    live: &'a LiveSet,
    queued: Vec<(Id, Vec<PackedBlob>)>,
    blobs: usize,
    batch: usize,
    f: F,
}

impl<F> Sweep<'_, F>
where
    F: FnMut(&Id, &[PackedBlob], Vec<&PackedBlob>) -> Result<()>,
{
    /// Adds one pack.
    pub fn push(&mut self, pack: &Id, blobs: &[PackedBlob]) -> Result<()> {
        // queued only to share reads with others, and then copied
        if self.live.spilled.is_none() || (self.queued.is_empty() && blobs.len() >= self.batch) {
            return (self.f)(pack, blobs, self.live.live_in(blobs)?);
        }
        self.queued.push((*pack, blobs.to_vec()));
        self.blobs += blobs.len();
        if self.blobs >= self.batch {
            self.settle()?;
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        let ids = (self.queued.iter()).flat_map(|(_, blobs)| blobs.iter().map(|b| &b.id));
        let mut live = self.live.which_live(ids)?.into_iter();
        for (pack, blobs) in self.queued.drain(..) {
            (self.f)(&pack, &blobs, kept(&blobs, live.by_ref()))?;
        }
        self.blobs = 0;
        Ok(())
    }

    /// Answers for the packs still queued.
    pub fn finish(mut self) -> Result<()> {
        self.settle()
    }
}

/// The blobs whose answer in `live` (one for each, in order) is true.
fn kept(blobs: &[PackedBlob], live: impl Iterator<Item = bool>) -> Vec<&PackedBlob> {
    (blobs.iter().zip(live))
        .filter(|(_, l)| *l)
        .map(|(b, _)| b)
        .collect()
}

fn id_prefix(id: &Id) -> u64 {
    u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"))
}

impl LiveSet {
    /// An empty live set that holds at most `budget` data blobs in memory; see
    /// [`add_data`](Self::add_data) for where the rest goes.
    pub fn new(budget: usize) -> LiveSet {
        LiveSet {
            trees: HashSet::new(),
            data: vec![],
            distinct: 0,
            budget: budget.max(1),
            spilled: None,
        }
    }

    /// Adds a tree; false if it was already in the set (its subtrees need no second visit).
    pub fn add_tree(&mut self, id: Id) -> bool {
        self.trees.insert(id)
    }

    /// Adds the data blobs of one file. Over the budget, the set moves into a temporary
    /// database in `spill_dir`, deleted when the set is dropped.
    pub fn add_data(&mut self, ids: &[Id], spill_dir: &Path) -> Result<()> {
        if self.data.capacity() == 0 {
            // the whole budget at once (touched only as it fills): doubling would overshoot it
            self.data.reserve_exact(self.budget);
        }
        if self.data.len() + ids.len() > self.budget {
            // unchanged files of changed folders repeat across snapshots: drop repeats first,
            // and spill unless that freed half the budget (so that sorting stays rare)
            self.sort();
            if self.data.len() + ids.len() > self.budget / 2 {
                self.spill(spill_dir)?;
            }
        }
        self.data.extend(ids.iter().map(id_prefix));
        Ok(())
    }

    fn sort(&mut self) {
        if self.distinct < self.data.len() {
            self.data.sort_unstable();
            self.data.dedup();
            self.distinct = self.data.len();
        }
    }

    /// Moves the data blobs held in memory into the database, opening it on first use. Sorted
    /// and distinct, they go in as one table file of their own, written in order: no
    /// memtable, no write-ahead log (the database dies with the run).
    fn spill(&mut self, spill_dir: &Path) -> Result<()> {
        self.sort();
        if self.data.is_empty() {
            return Ok(());
        }
        let options = local_index::db_options_within(SPILL_CACHE, 1 << 20);
        let spilled = match &mut self.spilled {
            Some(s) => s,
            none => {
                std::fs::create_dir_all(spill_dir).map_err(|e| Error::io(spill_dir, e))?;
                let dir = tempfile::Builder::new()
                    .prefix(SPILL_PREFIX)
                    .tempdir_in(spill_dir)
                    .map_err(|e| Error::io(spill_dir, e))?;
                tracing::info!(folder = %dir.path().display(), "the live set is large; keeping it on disk");
                // opened by its column, whose handle batched look-ups need
                let column =
                    ColumnFamilyDescriptor::new(DEFAULT_COLUMN_FAMILY_NAME, options.clone());
                let db = DB::open_cf_descriptors(&options, dir.path().join("db"), [column])?;
                none.insert(Spilled { db, runs: 0, dir })
            }
        };
        spilled.runs += 1;
        let run = spilled.dir.path().join(format!("run-{}.sst", spilled.runs));
        let mut table = SstFileWriter::create(&options);
        table.open(&run)?;
        for prefix in self.data.drain(..) {
            table.put(prefix.to_be_bytes(), [])?;
        }
        table.finish()?;
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        spilled.db.ingest_external_file_opts(&ingest, vec![run])?;
        self.distinct = 0;
        Ok(())
    }

    /// Ends the adding: after this, the set answers for every blob added.
    pub fn finish(&mut self) {
        self.sort();
        self.data.shrink_to_fit();
    }

    /// Whether a blob is live (or shares its first 8 bytes with a live data blob); gc asks
    /// for many at a time ([`live_in`](Self::live_in), [`sweep`](Self::sweep)).
    #[cfg(test)]
    pub fn contains(&self, id: &Id) -> Result<bool> {
        Ok(self.which_live([id].into_iter())?[0])
    }

    /// Whether each of `ids` is live, in their order. The ones that only the disk can answer
    /// are looked up there together, in key order, so that each block of the spilled database
    /// is read once for all of them rather than once for each.
    fn which_live<'a>(&self, ids: impl Iterator<Item = &'a Id>) -> Result<Vec<bool>> {
        let mut live = vec![];
        // (key on disk, index in `live`) of the blobs not found in memory
        let mut asked: Vec<([u8; 8], usize)> = vec![];
        for id in ids {
            let prefix = id_prefix(id);
            let known = self.trees.contains(id) || self.data.binary_search(&prefix).is_ok();
            if !known && self.spilled.is_some() {
                asked.push((prefix.to_be_bytes(), live.len()));
            }
            live.push(known);
        }
        let Some(spilled) = &self.spilled else {
            return Ok(live);
        };
        asked.sort_unstable();
        let column = (spilled.db.cf_handle(DEFAULT_COLUMN_FAMILY_NAME)).ok_or_else(|| {
            Error::Invalid("the live set kept on disk lost its column; run gc again".into())
        })?;
        // a few at a time: each answer pins its block in the cache until it is dropped
        for chunk in asked.chunks(ASKED_AT_ONCE) {
            let keys = chunk.iter().map(|(key, _)| key);
            let answers = spilled.db.batched_multi_get_cf(column, keys, true);
            for ((_, i), answer) in chunk.iter().zip(answers) {
                live[*i] = answer?.is_some();
            }
        }
        Ok(live)
    }

    /// The live ones of `blobs`.
    pub fn live_in<'a>(&self, blobs: &'a [PackedBlob]) -> Result<Vec<&'a PackedBlob>> {
        let live = self.which_live(blobs.iter().map(|b| &b.id))?;
        Ok(kept(blobs, live.into_iter()))
    }

    /// A sweep over many packs that calls `f` with each pack, its blobs and its live blobs.
    /// While the set is on disk, packs are queued until they hold `batch` blobs (see
    /// [`SWEEP_BATCH`]) and looked up together: packs of large chunks hold a few blobs each,
    /// too few to share the reads of the database's blocks. Otherwise each is answered at once.
    pub fn sweep<F>(&self, batch: usize, f: F) -> Sweep<'_, F>
    where
        F: FnMut(&Id, &[PackedBlob], Vec<&PackedBlob>) -> Result<()>,
    {
        Sweep {
            live: self,
            queued: vec![],
            blobs: 0,
            batch,
            f,
        }
    }

    /// Live blobs counted: trees, and data blobs by their distinct prefixes.
    pub fn len(&self) -> Result<u64> {
        let on_disk = match &self.spilled {
            None => 0,
            Some(s) => {
                let mut count = 0;
                let mut keys = s.db.raw_iterator();
                keys.seek_to_first();
                while keys.valid() {
                    let in_memory = keys
                        .key()
                        .and_then(|k| k.try_into().ok())
                        .is_some_and(|k| self.data.binary_search(&u64::from_be_bytes(k)).is_ok());
                    count += u64::from(!in_memory);
                    keys.next();
                }
                keys.status()?;
                count
            }
        };
        Ok((self.trees.len() + self.data.len()) as u64 + on_disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    fn id(n: u8, tail: u8) -> Id {
        let mut b = [0; 32];
        b[0] = n;
        b[31] = tail;
        Id(b)
    }

    #[test]
    fn the_live_set_never_misses_a_live_blob() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = LiveSet::new(IN_MEMORY);
        live.add_data(&[id(3, 0), id(1, 0), id(3, 0)], dir.path())
            .unwrap();
        assert!(live.add_tree(id(9, 9)));
        assert!(!live.add_tree(id(9, 9)), "a tree is visited once");
        live.finish();
        assert_eq!(live.len().unwrap(), 3);
        for present in [id(1, 0), id(3, 0), id(9, 9)] {
            assert!(live.contains(&present).unwrap());
        }
        assert!(!live.contains(&id(2, 0)).unwrap());
        assert!(
            !live.contains(&id(9, 8)).unwrap(),
            "trees are matched exactly"
        );
        // a data blob sharing the first 8 bytes of a live one is kept: never the reverse
        assert!(live.contains(&id(1, 7)).unwrap());
        assert_eq!(entries(dir.path()), 0, "nothing spilled");
    }

    #[test]
    fn a_live_set_over_budget_moves_to_disk_and_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = LiveSet::new(4);
        // 40 files of 3 blobs, each blob in two files: over the budget many times
        for n in 0..40u8 {
            live.add_data(&[id(n, 0), id(n / 2 + 100, 0), id(n, 0)], dir.path())
                .unwrap();
        }
        live.finish();
        assert!(live.data.len() <= 4, "memory holds at most the budget");
        assert_eq!(entries(dir.path()), 1, "one spill database");
        for n in 0..40u8 {
            assert!(live.contains(&id(n, 0)).unwrap(), "blob {n}");
            assert!(
                live.contains(&id(n / 2 + 100, 0)).unwrap(),
                "blob {}",
                n / 2 + 100
            );
        }
        assert!(!live.contains(&id(60, 0)).unwrap());
        assert!(!live.contains(&id(250, 0)).unwrap());
        // 40 + 20 distinct blobs, counted once whether in memory, on disk or both
        assert_eq!(live.len().unwrap(), 60);
        drop(live);
        assert_eq!(entries(dir.path()), 0, "the database is deleted");
    }

    #[test]
    fn a_sweep_finds_the_live_blobs_of_every_pack_whether_queued_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let blob = |n: u8, tail: u8| packed(id(n, tail), u32::from(n));
        // packs of 0 to 4 blobs, live and dead, a tree among them
        let packs: Vec<(Id, Vec<PackedBlob>)> = (0..20u8)
            .map(|p| {
                let blobs = (0..p % 5).map(|k| blob(p * 3 + k, 0)).collect();
                (id(p, 99), blobs)
            })
            .chain([(id(99, 99), vec![blob(200, 1), blob(200, 2)])])
            .collect();
        // live: data blobs n and n + 1 for every third n below 60, and the tree
        let is_live = |b: &PackedBlob| b.id == id(200, 1) || (b.id.0[0] < 60 && b.id.0[0] % 3 != 2);
        let expected: Vec<(Id, Vec<Id>)> = (packs.iter())
            .map(|(p, blobs)| {
                (
                    *p,
                    blobs.iter().filter(|b| is_live(b)).map(|b| b.id).collect(),
                )
            })
            .collect();
        assert!(expected.iter().any(|(_, k)| k.is_empty()));
        assert!(expected.iter().any(|(_, k)| k.len() < 3 && k.len() > 1));
        for batch in [1, 3, 1000] {
            for spilled in [false, true] {
                let mut live = LiveSet::new(if spilled { 4 } else { IN_MEMORY });
                for n in (0..60u8).step_by(3) {
                    live.add_data(&[id(n, 0), id(n + 1, 0)], dir.path())
                        .unwrap();
                }
                live.add_tree(id(200, 1));
                live.finish();
                assert_eq!(live.spilled.is_some(), spilled);
                let mut seen = vec![];
                let mut sweep = live.sweep(batch, |pack, blobs, kept| {
                    assert_eq!(
                        blobs,
                        packs[seen.len()].1,
                        "the blobs of the pack, in order"
                    );
                    seen.push((*pack, kept.iter().map(|b| b.id).collect()));
                    Ok(())
                });
                for (pack, blobs) in &packs {
                    sweep.push(pack, blobs).unwrap();
                }
                sweep.finish().unwrap();
                assert_eq!(seen, expected, "batch {batch}, spilled {spilled}");
            }
        }
    }

    fn packed(id: Id, length: u32) -> PackedBlob {
        PackedBlob {
            kind: crate::format::blob::BlobKind::Data,
            id,
            offset: 0,
            length,
            raw_len: 0,
        }
    }

    #[test]
    fn a_sweep_of_more_blobs_than_one_database_call_takes_misses_none() {
        let dir = tempfile::tempdir().unwrap();
        let wide = |n: u16| {
            let mut b = [0; 32];
            b[..2].copy_from_slice(&n.to_be_bytes());
            Id(b)
        };
        // live: every n below 5,000 but every third; all but 64 of them on disk
        let is_live = |n: u16| n < 5000 && !n.is_multiple_of(3);
        let mut live = LiveSet::new(64);
        let ids: Vec<Id> = (0..5000).filter(|n| is_live(*n)).map(wide).collect();
        for file in ids.chunks(7) {
            live.add_data(file, dir.path()).unwrap();
        }
        live.finish();
        // packs of 10 blobs up to 6,000, each with a blob of the pack before it again
        let packs: Vec<(Id, Vec<(u16, PackedBlob)>)> = (0..600u16)
            .map(|p| {
                let repeat = p.checked_sub(1).map(|q| q * 10 + 5);
                let ns = (p * 10..p * 10 + 10).chain(repeat);
                (wide(p), ns.map(|n| (n, packed(wide(n), 1))).collect())
            })
            .collect();
        for batch in [2500, SWEEP_BATCH] {
            let (mut wrong, mut calls) = (vec![], 0);
            let mut sweep = live.sweep(batch, |pack, blobs, kept| {
                let (p, expected) = &packs[calls];
                assert_eq!(p, pack, "packs in order, each once");
                calls += 1;
                for (n, b) in expected {
                    if is_live(*n) != kept.iter().any(|k| k.id == b.id) {
                        wrong.push(*n);
                    }
                }
                assert_eq!(blobs.len(), expected.len());
                Ok(())
            });
            for (pack, blobs) in &packs {
                let blobs: Vec<PackedBlob> = blobs.iter().map(|(_, b)| *b).collect();
                sweep.push(pack, &blobs).unwrap();
            }
            sweep.finish().unwrap();
            assert_eq!(calls, packs.len());
            assert!(
                wrong.is_empty(),
                "batch {batch}: wrong answers for {wrong:?}"
            );
        }
    }

    #[test]
    fn the_live_set_of_a_killed_gc_is_deleted_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = LiveSet::new(1);
        live.add_data(&[id(1, 0)], dir.path()).unwrap();
        live.add_data(&[id(2, 0)], dir.path()).unwrap();
        std::mem::forget(live); // as a killed process leaves it
        std::fs::create_dir(dir.path().join("index")).unwrap();
        remove_leftovers(dir.path());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["index"], "only the spilled live set goes");
    }
}
