//! Extending S3 Object Lock retention (format §13): how the extensions that `forget` (for
//! every kept snapshot, as long as its retention policy can keep it) and `gc` (while objects
//! are needed) ask for are read, made and reported.

use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::repository::store::ObjectKind;

/// An object whose lock should end no earlier than `below`; if it does, it is extended to
/// `until` (never shortened).
#[derive(Clone, Debug)]
pub struct Wanted {
    /// The object.
    pub path: ObjectPath,
    /// Its lock must not end before this.
    pub below: DateTime<Utc>,
    /// The date it is extended to.
    pub until: DateTime<Utc>,
}

/// One lock extension, planned or made.
#[derive(Clone, Debug, Serialize)]
pub struct Extension {
    /// The object's name in the repository.
    pub object: String,
    /// When its lock ended before.
    pub from: DateTime<Utc>,
    /// When it ends now.
    pub until: DateTime<Utc>,
}

/// Reads the lock of every wanted object (HeadObject, in parallel) and returns the extensions
/// needed: objects whose lock ends before their `below` and before their `until`. Objects gone
/// since they were listed need none.
pub fn plan(repo: &Repository, wanted: Vec<Wanted>) -> Result<Vec<Extension>> {
    let planned: Vec<Option<Extension>> = wanted
        .into_par_iter()
        .map(|w| {
            Ok(match repo.store().locked_until(&w.path)? {
                Some(from) if from < w.below && from < w.until => Some(Extension {
                    object: w.path.to_string(),
                    from,
                    until: w.until,
                }),
                _ => None,
            })
        })
        .collect::<Result<_>>()?;
    Ok(planned.into_iter().flatten().collect())
}

/// Makes the extensions, in parallel, each request retried by the store as any other: first
/// those of other objects, then those of snapshots, so that no snapshot is extended before its
/// data. Every one of a phase is tried, and those that failed are named in one error.
pub fn extend(repo: &Repository, extensions: &[Extension]) -> Result<()> {
    let (snapshots, others): (Vec<&Extension>, Vec<&Extension>) = extensions
        .iter()
        .partition(|e| e.object.starts_with(ObjectKind::Snapshot.dir()));
    extend_all(repo, &others)?;
    extend_all(repo, &snapshots)
}

fn extend_all(repo: &Repository, extensions: &[&Extension]) -> Result<()> {
    let failed: Vec<String> = extensions
        .par_iter()
        .filter_map(|e| {
            repo.store()
                .extend_lock(&ObjectPath::from(e.object.as_str()), e.until)
                .err()
                .map(|err| format!("{} ({err})", e.object))
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    const NAMED: usize = 20;
    let more = match failed.len() > NAMED {
        true => format!(" and {} more", failed.len() - NAMED),
        false => String::new(),
    };
    Err(Error::Invalid(format!(
        "could not extend the object lock of {} objects: {}{more}; check the credentials' s3:PutObjectRetention permission and run the command again",
        failed.len(),
        failed[..failed.len().min(NAMED)].join(", ")
    )))
}
