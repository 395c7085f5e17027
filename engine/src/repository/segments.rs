//! The repository's active index segments, read one at a time, for passes over the whole index
//! (garbage collection) that must not hold all of it in memory: segments are kept between
//! passes only up to a budget of entries, and loaded again after that.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::pack::PackedBlob;
use crate::repository::Repository;
use crate::repository::store::ObjectKind;

/// Index entries kept in memory between passes (about 60 bytes each).
pub const KEPT_ENTRIES: usize = 500_000;

/// The active segments of a repository, as the synchronised local cache knows them.
pub struct ActiveSegments<'r> {
    repo: &'r Repository,
    /// Every listed segment (a segment written to replace them all supersedes these).
    pub listed: Vec<Id>,
    /// The highest epoch of the listed segments (format §7).
    pub epoch: u64,
    active: Vec<Id>,
    kept: HashMap<Id, Vec<(Id, Vec<PackedBlob>)>>,
    budget: usize,
}

impl<'r> ActiveSegments<'r> {
    /// The segments listed now that no listed segment supersedes, read by a pass that
    /// compacts them: those retired only by epoch are included too (format §7), since one may
    /// be a writer's segment stored after a compaction listed the index; the caller leaves out
    /// the entries of packs that are not stored, which is all a segment stored again can add.
    /// The local cache, synchronised just before, knows most segments; one it does not know
    /// was written since by a backup, or is damaged, or is an old one stored again: it is read
    /// here, and a damaged one stops the caller, since a pass over an incomplete index could
    /// take a pack for unindexed.
    pub fn of(repo: &'r Repository, keep_entries: usize) -> Result<ActiveSegments<'r>> {
        let known = repo.index().known_segments()?;
        let mut listed = Vec::new();
        let mut superseded = HashSet::new();
        let mut epoch = 0;
        for id in repo.store().ids(ObjectKind::Index)? {
            let lineage = match known.get(&id) {
                Some(k) => k.lineage.clone(),
                None => match repo.load_index(&id) {
                    Ok(segment) => segment.lineage,
                    Err(Error::Missing { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            if !known.contains_key(&id)
                && (!lineage.supersedes.is_empty() || lineage.retires_below > 0)
            {
                return Err(Error::Invalid(
                    "the index was rewritten while gc ran (by `cairn repair index`?): run gc again"
                        .into(),
                ));
            }
            epoch = epoch.max(lineage.epoch);
            superseded.extend(lineage.supersedes);
            listed.push(id);
        }
        let active = listed
            .iter()
            .filter(|id| !superseded.contains(*id))
            .copied()
            .collect();
        Ok(ActiveSegments {
            repo,
            listed,
            epoch,
            active,
            kept: HashMap::new(),
            budget: keep_entries,
        })
    }

    /// Calls `f` with every pack of the active segments and its blobs, each pack once (a pack
    /// listed by two segments has the same entries in both).
    pub fn for_each_pack(
        &mut self,
        mut f: impl FnMut(&Id, &[PackedBlob]) -> Result<()>,
    ) -> Result<()> {
        let mut seen = HashSet::new();
        let mut room = self.budget;
        for id in self.active.clone() {
            let packs = match self.kept.remove(&id) {
                Some(p) => p,
                None => self.repo.load_index(&id)?.packs,
            };
            for (pack, blobs) in &packs {
                if seen.insert(*pack) {
                    f(pack, blobs)?;
                }
            }
            let entries: usize = packs.iter().map(|(_, b)| b.len()).sum();
            if entries <= room {
                room -= entries;
                self.kept.insert(id, packs);
            }
        }
        Ok(())
    }
}
