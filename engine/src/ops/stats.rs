//! `stats`: how much the snapshots hold, how much distinct data that is, and what it takes in
//! the repository, which shows what deduplication and compression save. Figures per tree are
//! remembered, so folders shared by many snapshots are read once; the set of distinct blobs is
//! held in memory (32 bytes each).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::repository::Repository;
use crate::repository::store::ObjectKind;

/// Figures of a set of snapshots and of the repository.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files in them, counted once per snapshot.
    pub files: u64,
    /// Bytes a restore of every one of them would write.
    pub restore_size: u64,
    /// Distinct blobs (file contents and folders) they reference.
    pub blobs: u64,
    /// Plaintext bytes of those blobs.
    pub raw_size: u64,
    /// Bytes those blobs take in packs (compressed and encrypted).
    pub stored_size: u64,
    /// `restore_size / raw_size`: what deduplication saves.
    pub dedup_ratio: f64,
    /// `raw_size / stored_size`: what compression saves (less encryption's overhead).
    pub compression_ratio: f64,
    /// Packs in the repository.
    pub packs: u64,
    /// Bytes of the repository's content-named objects (packs, index, snapshots, keys, marks,
    /// records).
    pub repository_size: u64,
}

/// Computes the figures of `snapshots`.
pub fn stats(repo: &Repository, snapshots: &[(Id, Snapshot)]) -> Result<Stats> {
    let mut out = Stats {
        snapshots: snapshots.len() as u64,
        ..Stats::default()
    };
    let mut totals: HashMap<Id, (u64, u64)> = HashMap::new();
    let mut blobs: HashSet<Id> = HashSet::new();
    for (_, snap) in snapshots {
        let (files, bytes) = tree_totals(repo, &snap.tree, &mut totals, &mut blobs)?;
        out.files += files;
        out.restore_size += bytes;
    }
    for blob in &blobs {
        let at = repo.locate(blob)?.blob;
        out.raw_size += u64::from(at.raw_len);
        out.stored_size += u64::from(at.length);
    }
    out.blobs = blobs.len() as u64;
    out.dedup_ratio = ratio(out.restore_size, out.raw_size);
    out.compression_ratio = ratio(out.raw_size, out.stored_size);
    for kind in ObjectKind::ALL {
        let objects = repo.store().list(kind)?;
        if kind == ObjectKind::Pack {
            out.packs = objects.len() as u64;
        }
        out.repository_size += objects.iter().map(|(_, size)| size).sum::<u64>();
    }
    Ok(out)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Files and content bytes below tree `id`; adds every blob it references to `blobs`.
fn tree_totals(
    repo: &Repository,
    id: &Id,
    memo: &mut HashMap<Id, (u64, u64)>,
    blobs: &mut HashSet<Id>,
) -> Result<(u64, u64)> {
    if let Some(t) = memo.get(id) {
        return Ok(*t);
    }
    blobs.insert(*id);
    let (mut files, mut bytes) = (0, 0);
    for node in Tree::load(repo, id)?.nodes {
        if node.kind == NodeKind::File {
            files += 1;
            bytes += node.size;
            blobs.extend(node.content.iter().copied());
        }
        if let Some(sub) = &node.subtree {
            let (f, b) = tree_totals(repo, sub, memo, blobs)?;
            files += f;
            bytes += b;
        }
    }
    memo.insert(*id, (files, bytes));
    Ok((files, bytes))
}
