//! Marks (`marks/<id>`, format §12.1): the packs a garbage collection marked for deletion once
//! its safety interval has passed. Writers never deduplicate against marked packs, and a backup
//! refuses to commit if a mark made while it ran falls due too soon ([`check_backup_may_commit`]).

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::crypto::Domain;
use crate::format::id::Id;
use crate::repository::Repository;
use crate::repository::store::ObjectKind;

/// A set of packs marked for deletion (`marks/<id>`, sealed JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mark {
    /// Layout version (1).
    pub version: u32,
    /// When the mark was written.
    pub time: DateTime<Utc>,
    /// The safety interval the marking run used: the packs may go at `time + safety_secs`.
    pub safety_secs: u64,
    /// The marked packs.
    pub packs: Vec<Id>,
}

impl Mark {
    /// When the marked packs may be deleted.
    pub fn due(&self) -> DateTime<Utc> {
        self.time + Duration::seconds(self.safety_secs as i64)
    }
}

/// Loads every mark, dated by the later of the time sealed in it and the time its object was
/// stored: a mark stored again (by anyone who can write to the bucket) counts from when it
/// reappeared, since writers that began before never saw it (format §12.1). A damaged mark is
/// an error: nothing may be deleted or deduplicated while it is unclear which packs are marked.
pub fn load_marks(repo: &Repository) -> Result<Vec<(Id, Mark)>> {
    repo.store()
        .list_dated(ObjectKind::Mark)?
        .into_iter()
        .map(|(id, _, stored)| {
            let plain = repo.load_object(ObjectKind::Mark, Domain::Mark, &id)?;
            let mut mark: Mark =
                serde_json::from_slice(&plain).map_err(|e| Error::damaged("mark", id, e))?;
            mark.time = mark.time.max(stored);
            Ok((id, mark))
        })
        .collect()
}

/// The packs that backups must not deduplicate against.
pub fn marked_packs(marks: &[(Id, Mark)]) -> HashSet<Id> {
    marks
        .iter()
        .flat_map(|(_, m)| m.packs.iter().copied())
        .collect()
}

/// How long before a mark falls due a backup may still write its snapshot: 10 minutes, or a
/// quarter of the mark's safety interval if that is shorter.
fn margin(mark: &Mark) -> Duration {
    Duration::seconds(600.min(mark.safety_secs as i64 / 4))
}

/// Called by a backup just before it writes its snapshot: refuses if a gc marked packs after the
/// backup started and the mark falls due too soon, since the backup may reference those packs.
pub fn check_backup_may_commit(repo: &Repository, started: DateTime<Utc>) -> Result<()> {
    let now = Utc::now();
    for (_, mark) in load_marks(repo)? {
        if mark.time > started && mark.due() < now + margin(&mark) {
            return Err(Error::Invalid(format!(
                "a garbage collection marked packs at {} while this backup ran, and they may be deleted before it finishes; run the backup again (or give gc a --safety-interval longer than a backup takes)",
                mark.time
            )));
        }
    }
    Ok(())
}
