//! `repair index`: rebuilds the repository's index from the pack headers alone.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::index::IndexSegment;
use crate::pack;
use crate::repository::{ObjectKind, Repository};

/// What a repair found and did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepairOutcome {
    /// Packs read and indexed.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Packs that could not be read, with why (left out of the new index).
    pub damaged: Vec<String>,
    /// Old index segments removed.
    pub removed_segments: u64,
}

/// Reads every pack header and writes a fresh index that supersedes all existing segments;
/// the old segments are deleted only after the new one is stored.
pub fn rebuild_index(repo: &Repository) -> Result<RepairOutcome> {
    let old = repo.store().ids(ObjectKind::Index)?;
    let packs = repo.store().list(ObjectKind::Pack)?;
    let read: Vec<_> = packs
        .par_iter()
        .map(|(id, _)| {
            let bytes = repo
                .store()
                .get(&ObjectKind::Pack.path(id))?
                .ok_or_else(|| Error::damaged("pack", id, "vanished while reading"))?;
            Ok((*id, pack::read_header(repo.keys(), id, &bytes)?))
        })
        .collect::<Vec<Result<_>>>();
    let mut out = RepairOutcome::default();
    let mut segment = IndexSegment {
        packs: vec![],
        supersedes: old.clone(),
    };
    for r in read {
        match r {
            Ok((id, blobs)) => {
                out.packs += 1;
                out.blobs += blobs.len() as u64;
                segment.packs.push((id, blobs));
            }
            Err(e) => out.damaged.push(e.to_string()),
        }
    }
    repo.save_index(&segment)?;
    for id in &old {
        match repo.store().delete(&ObjectKind::Index.path(id)) {
            Ok(()) => out.removed_segments += 1,
            // kept, superseded, until its object lock passes
            Err(Error::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    repo.rebuild_local_index()?;
    Ok(out)
}
