//! `repair index`: rebuilds the repository's index from the pack headers alone, salvaging
//! every blob that still verifies in a damaged pack.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::index::{IndexSegment, Lineage};
use crate::format::pack::{self, PackedBlob};
use crate::repository::Repository;
use crate::repository::store::ObjectKind;

/// What a repair found and did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepairOutcome {
    /// Packs read and indexed (whole or salvaged).
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Packs whose header could not be read at all, with why. They are left out of the index
    /// but never deleted: `gc` keeps a pack it cannot read.
    pub damaged: Vec<String>,
    /// Damaged packs whose intact blobs were indexed (each blob verified on its own).
    pub salvaged_packs: u64,
    /// Blobs of salvaged packs that failed verification and were left out of the index (a
    /// later backup of the same data stores them again), with why.
    pub damaged_blobs: Vec<String>,
    /// Old index segments removed.
    pub removed_segments: u64,
}

/// What one pack yielded.
pub(crate) enum PackRead {
    /// It hashes to its name: every blob its header lists.
    Whole(Vec<PackedBlob>),
    /// It does not: the blobs that verify one by one, and why the others do not.
    Salvaged {
        intact: Vec<PackedBlob>,
        damaged: Vec<String>,
    },
}

impl PackRead {
    /// The blobs that can be trusted.
    pub(crate) fn into_intact(self) -> Vec<PackedBlob> {
        match self {
            PackRead::Whole(blobs) => blobs,
            PackRead::Salvaged { intact, .. } => intact,
        }
    }
}

/// Reads every pack header and writes a fresh index that supersedes all existing segments;
/// the old segments are deleted only after the new one is stored.
pub fn rebuild_index(repo: &Repository) -> Result<RepairOutcome> {
    let old = repo.store().ids(ObjectKind::Index)?;
    let packs = repo.store().list(ObjectKind::Pack)?;
    let read: Vec<_> = packs
        .par_iter()
        .map(|(id, _)| Ok((*id, read_pack(repo, id)?)))
        .collect::<Vec<Result<_>>>();
    let mut out = RepairOutcome::default();
    // a new epoch that retires every older one (format §7)
    let epoch = if repo.has_epochs() {
        repo.writer_epoch()? + 1
    } else {
        0
    };
    let mut segment = IndexSegment {
        packs: vec![],
        lineage: Lineage {
            supersedes: old.clone(),
            epoch,
            retires_below: epoch.saturating_sub(1),
        },
    };
    for r in read {
        let (id, blobs) = match r {
            Ok((id, PackRead::Whole(blobs))) => (id, blobs),
            Ok((id, PackRead::Salvaged { intact, damaged })) => {
                out.salvaged_packs += 1;
                out.damaged_blobs.extend(damaged);
                (id, intact)
            }
            Err(e) => {
                out.damaged.push(e.to_string());
                continue;
            }
        };
        if blobs.is_empty() {
            continue;
        }
        out.packs += 1;
        out.blobs += blobs.len() as u64;
        segment.packs.push((id, blobs));
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

/// Reads one pack's header; if the pack does not hash to its name, keeps the blobs that
/// still verify one by one.
pub(crate) fn read_pack(repo: &Repository, id: &Id) -> Result<PackRead> {
    let bytes = repo
        .store()
        .get_bounded(&ObjectKind::Pack.path(id), ObjectKind::Pack.max_size())?
        .ok_or_else(|| Error::damaged("pack", id, "vanished while reading"))?;
    if let Ok(blobs) = pack::read_header(repo.keys(), id, &bytes) {
        return Ok(PackRead::Whole(blobs));
    }
    let entries = pack::read_header_of_damaged(repo.keys(), id, &bytes)?;
    let (mut intact, mut damaged) = (vec![], vec![]);
    for b in entries {
        match pack::open_blob_in(repo.keys(), id, &bytes, 0, &b) {
            Ok(_) => intact.push(b),
            Err(e) => damaged.push(format!("blob {} in pack {}: {e}", b.id, id.short())),
        }
    }
    Ok(PackRead::Salvaged { intact, damaged })
}
