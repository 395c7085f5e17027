//! Evidence records (`checks/<id>`, `drills/<id>`): encrypted JSON documents that say when the
//! repository was verified and restored from, and with what result, for audit reports.
//! Records are written once and never changed; garbage collection and `forget` leave them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::format::crypto::Domain;
use crate::format::id::Id;
use crate::repository::Repository;
use crate::repository::store::ObjectKind;

/// Version of the record document layouts.
pub const RECORD_VERSION: u32 = 1;

/// A kind of record: where it is stored and how it is sealed.
pub trait Record: Serialize + DeserializeOwned {
    /// Its directory.
    const KIND: ObjectKind;
    /// Its encryption domain.
    const DOMAIN: Domain;
    /// When the recorded run started.
    fn time(&self) -> DateTime<Utc>;
    /// The record's layout version.
    fn version(&self) -> u32;
}

/// Stores a record.
pub fn save<R: Record>(repo: &Repository, record: &R) -> Result<Id> {
    let json = serde_json::to_vec(record).expect("records serialize");
    repo.save_object(R::KIND, R::DOMAIN, &json)
}

/// Loads one record.
pub fn load<R: Record>(repo: &Repository, id: &Id) -> Result<R> {
    let plain = repo.load_object(R::KIND, R::DOMAIN, id)?;
    let record: R =
        serde_json::from_slice(&plain).map_err(|e| Error::damaged(R::KIND.name(), id, e))?;
    if record.version() != RECORD_VERSION {
        return Err(Error::UnsupportedVersion {
            found: record.version(),
            supported: RECORD_VERSION,
        });
    }
    Ok(record)
}

/// Every record of one kind, oldest first.
pub fn load_all<R: Record>(repo: &Repository) -> Result<Vec<(Id, R)>> {
    let mut all = repo
        .store()
        .ids(R::KIND)?
        .into_iter()
        .map(|id| Ok((id, load(repo, &id)?)))
        .collect::<Result<Vec<(Id, R)>>>()?;
    all.sort_by(|a, b| a.1.time().cmp(&b.1.time()).then(a.0.cmp(&b.0)));
    Ok(all)
}
