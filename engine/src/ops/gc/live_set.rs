//! The blobs that gc must keep: every tree and data blob a listed snapshot reaches.
//!
//! Trees are kept by id. Data blobs are kept as the first 8 bytes of their ids, sorted in
//! memory up to a budget; a live set larger than that (about 4 M blobs, 4 TB of data at 1 MiB
//! chunks) moves into a temporary RocksDB database in the cache folder, so that gc's memory does
//! not grow with the number of live blobs. A dead blob whose id shares those 8 bytes with a live
//! one (odds about n²/2⁶⁵) counts as live and is kept: an error that only ever keeps garbage.

use std::collections::HashSet;
use std::path::Path;

use rocksdb::{DB, IngestExternalFileOptions, SstFileWriter};

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack::PackedBlob;
use crate::repository::local_index;

/// Data blobs held in memory before the live set moves to disk: 32 MiB of prefixes. Looking a
/// blob up on disk costs a few microseconds (a gc of 3 M live blobs took 57 s with 2 M of them
/// in memory, 35 s with all), so the budget is as large as the memory it saves is worth.
pub const IN_MEMORY: usize = 1 << 22;

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
                let db = DB::open(&options, dir.path().join("db"))?;
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

    /// Ends the adding: after this, [`contains`](Self::contains) answers for every blob added.
    pub fn finish(&mut self) {
        self.sort();
        self.data.shrink_to_fit();
    }

    /// Whether a blob is live (or shares its first 8 bytes with a live data blob).
    pub fn contains(&self, id: &Id) -> Result<bool> {
        let prefix = id_prefix(id);
        if self.trees.contains(id) || self.data.binary_search(&prefix).is_ok() {
            return Ok(true);
        }
        Ok(match &self.spilled {
            Some(s) => s.db.get_pinned(prefix.to_be_bytes())?.is_some(),
            None => false,
        })
    }

    /// The live ones of `blobs`.
    pub fn live_in<'a>(&self, blobs: &'a [PackedBlob]) -> Result<Vec<&'a PackedBlob>> {
        let mut live = vec![];
        for b in blobs {
            if self.contains(&b.id)? {
                live.push(b);
            }
        }
        Ok(live)
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
