//! Copies snapshots into another repository (off-site replication). The source is only read.
//! Only blobs the target lacks are uploaded, and each pack written is read back whole and every
//! blob in it verified from the target before the snapshot that needs them is written there, so an interrupted copy resumes where it
//! stopped and a snapshot in the target is always complete.
//!
//! Both repositories must name blobs alike (the target made with `cairn init
//! --copy-chunker-params-from SOURCE`, which shares the chunker and the blob-naming key but not
//! the encryption key): then a blob's id is the same in both and trees copy unchanged.

use std::collections::HashSet;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::blob::BlobKind;
use crate::format::id::Id;
use crate::format::pack;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::repository::packer::Packer;
use crate::repository::session::Session;
use crate::repository::store::ObjectKind;

/// What a copy did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots written to the target.
    pub snapshots_copied: u64,
    /// Snapshots the target already had (copied before).
    pub snapshots_present: u64,
    /// Blobs uploaded.
    pub blobs_copied: u64,
    /// Their plaintext bytes.
    pub bytes_copied: u64,
    /// Bytes stored in the target (packs and index).
    pub stored_bytes: u64,
    /// Ids of the new snapshots in the target, in the order of `snapshots`.
    pub new_ids: Vec<Id>,
}

/// Checks that blobs have the same ids in both repositories.
pub fn check_compatible(source: &Repository, target: &Repository) -> Result<()> {
    if source.config().chunker != target.config().chunker
        || source.keys().blob_id(b"cairn copy probe") != target.keys().blob_id(b"cairn copy probe")
    {
        return Err(Error::Invalid(
            "the target repository chunks and names data differently from the source: create it with `cairn init --copy-chunker-params-from SOURCE` so that copies deduplicate".into(),
        ));
    }
    Ok(())
}

/// Copies `snapshots` (oldest first is best) from `source` to `target`, skipping those the
/// target already holds a copy of.
pub fn copy(
    source: &Repository,
    target: &Repository,
    snapshots: &[(Id, Snapshot)],
    progress: &Progress,
) -> Result<CopyReport> {
    check_compatible(source, target)?;
    let present: HashSet<Id> = Snapshot::load_all(target)?
        .into_iter()
        .filter_map(|(_, s)| s.original)
        .collect();
    let mut report = CopyReport::default();
    // a copy writes into the target as a backup does (format-spec §12.3)
    let session = Session::begin(target, "copy")?;
    for (id, snap) in snapshots {
        let original = snap.original.unwrap_or(*id);
        if present.contains(&original) {
            report.snapshots_present += 1;
            continue;
        }
        let packer = Packer::in_session(target, &session);
        copy_tree(source, &packer, &snap.tree, progress)?;
        let stats = packer.finish()?;
        // read back every new blob from the target before the snapshot points at it
        stats
            .packs
            .par_iter()
            .try_for_each(|pack| read_back(target, pack))?;
        let copy = Snapshot {
            original: Some(original),
            ..snap.clone()
        };
        session.confirm_commit(target, &stats)?;
        let copied_id = copy.save(target)?;
        session.confirm_stored(target, ObjectKind::Snapshot, &copied_id)?;
        tracing::info!(snapshot = %id.short(), copy = %copied_id.short(), blobs = stats.blobs, "snapshot copied");
        report.new_ids.push(copied_id);
        report.snapshots_copied += 1;
        report.blobs_copied += stats.blobs;
        report.bytes_copied += stats.raw_bytes;
        report.stored_bytes += stats.stored_bytes;
    }
    Ok(report)
}

/// Copies one tree and everything below it that the target lacks; children are saved before
/// the tree that names them. Every tree is walked, even one the target has, because an
/// interrupted copy may have indexed a tree before the data below it.
fn copy_tree(
    source: &Repository,
    packer: &Packer,
    tree_id: &Id,
    progress: &Progress,
) -> Result<()> {
    let plain = source.load_blob(tree_id)?;
    let tree = Tree::decode(tree_id, &plain)?;
    for node in &tree.nodes {
        if let Some(sub) = &node.subtree {
            copy_tree(source, packer, sub, progress)?;
        }
    }
    let mut missing = vec![];
    for id in tree.nodes.iter().flat_map(|n| &n.content) {
        if !packer.has(id)? && !missing.contains(id) {
            missing.push(*id);
        }
    }
    missing.par_iter().try_for_each(|id| {
        let data = source.load_blob(id)?;
        progress.add_bytes(data.len() as u64);
        packer.save_with_id(BlobKind::Data, *id, &data).map(drop)
    })?;
    packer.save_with_id(BlobKind::Tree, *tree_id, &plain)?;
    for node in &tree.nodes {
        progress.entry_done(if node.subtree.is_some() { 0 } else { node.size });
    }
    Ok(())
}

/// Reads a pack the copy wrote back from the target, whole, and opens every blob in it: one
/// pack in memory per thread, whatever the number of blobs copied.
fn read_back(target: &Repository, pack: &Id) -> Result<()> {
    let bytes = target.store().get_named(ObjectKind::Pack, pack)?;
    for blob in pack::read_header(target.keys(), pack, &bytes)? {
        pack::open_blob_in(target.keys(), pack, &bytes, 0, &blob)?;
    }
    Ok(())
}
