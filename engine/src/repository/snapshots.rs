//! Snapshots in a repository (`snapshots/<id>`): saving, removing, loading, listing, finding
//! them by id prefix or `latest`, and selecting them with a filter.

use crate::error::{Error, Result};
use crate::format::crypto::Domain;
use crate::format::id::Id;
use crate::format::snapshot::{SNAPSHOT_VERSION, Snapshot, SnapshotFilter};
use crate::repository::Repository;
use crate::repository::store::ObjectKind;

impl Snapshot {
    /// Stores the snapshot; only call after every blob it references is indexed.
    pub fn save(&self, repo: &Repository) -> Result<Id> {
        let json = serde_json::to_vec(self).expect("snapshots serialize");
        repo.save_object(ObjectKind::Snapshot, Domain::Snapshot, &json)
    }

    /// Removes a snapshot (`forget`); its data stays until garbage collection.
    pub fn remove(repo: &Repository, id: &Id) -> Result<()> {
        repo.store().delete(&ObjectKind::Snapshot.path(id))
    }

    /// Loads one snapshot.
    pub fn load(repo: &Repository, id: &Id) -> Result<Snapshot> {
        let plain = repo.load_object(ObjectKind::Snapshot, Domain::Snapshot, id)?;
        let snap: Snapshot =
            serde_json::from_slice(&plain).map_err(|e| Error::damaged("snapshot", id, e))?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: snap.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        Ok(snap)
    }

    /// Loads every snapshot that can be read, oldest first. One that cannot (damaged, not
    /// Cairn's, too large, of a newer layout) is left out with a warning naming it, so that one
    /// bad object does not stop listings, parent choice and `forget`; `gc` reads the snapshots
    /// itself and stops at such a one, and `check` reports it.
    pub fn load_all(repo: &Repository) -> Result<Vec<(Id, Snapshot)>> {
        let ids = repo.store().list(ObjectKind::Snapshot)?;
        let mut all = Snapshot::load_some(repo, ids.into_iter().map(|(id, _)| id))?;
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(all)
    }

    /// Loads the snapshots `ids` that can be read, as [`Snapshot::load_all`] does (in no
    /// particular order).
    pub fn load_some(
        repo: &Repository,
        ids: impl IntoIterator<Item = Id>,
    ) -> Result<Vec<(Id, Snapshot)>> {
        let mut all = vec![];
        for id in ids {
            match Snapshot::load(repo, &id) {
                Ok(s) => all.push((id, s)),
                // forgotten by another process since the listing
                Err(Error::Missing { .. }) => {}
                Err(e @ (Error::Damaged { .. } | Error::UnsupportedVersion { .. })) => {
                    tracing::warn!(
                        "snapshot {id} cannot be read and is left out ({e}); `cairn check` reports it, and `cairn gc` deletes nothing until it is readable or deleted: restore `snapshots/{id}` from a replica, or delete it if it is not Cairn's"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    /// Finds a snapshot by `latest` or a unique id prefix.
    pub fn find(repo: &Repository, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return Snapshot::load_all(repo)?
                .pop()
                .ok_or_else(|| Error::SnapshotNotFound(spec.into()));
        }
        let spec_lc = spec.to_ascii_lowercase();
        let mut matches = repo
            .store()
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_lc));
        let (id, _) = matches
            .next()
            .ok_or_else(|| Error::SnapshotNotFound(spec.into()))?;
        if spec_lc.is_empty() || matches.next().is_some() {
            return Err(Error::AmbiguousSnapshot(spec.into()));
        }
        Ok((id, Snapshot::load(repo, &id)?))
    }

    /// The snapshots `specs` names (id prefixes or `latest`; every snapshot if none) that
    /// `filter` selects, oldest first, each once.
    pub fn select(
        repo: &Repository,
        specs: &[String],
        filter: &SnapshotFilter,
    ) -> Result<Vec<(Id, Snapshot)>> {
        let mut found = if specs.is_empty() {
            Snapshot::load_all(repo)?
        } else {
            specs
                .iter()
                .map(|spec| Snapshot::find(repo, spec))
                .collect::<Result<Vec<_>>>()?
        };
        found.retain(|(_, s)| filter.matches(s));
        found.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        found.dedup_by_key(|(id, _)| *id);
        Ok(found)
    }
}
