//! The `config` object (format §4): a clear header (magic and format version) and the sealed
//! repository-wide settings, among them the S3 Object Lock every object is written with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::chunker::ChunkerParams;
use crate::format::id::Id;

/// The repository format version this build writes; it reads every version from 1 up to it.
pub const FORMAT_VERSION: u32 = 6;
/// The first format version whose index segments carry compaction epochs (format §7).
pub const EPOCHS_VERSION: u32 = 6;
/// First bytes of the `config` object.
pub const CONFIG_MAGIC: &[u8; 8] = b"CAIRNCFG";

/// Repository-wide settings, stored encrypted in `config`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// Format version (also in the object's plain header, which must agree).
    pub version: u32,
    /// Random repository id; names the local cache directory.
    pub id: Id,
    /// When the repository was created.
    pub created: DateTime<Utc>,
    /// FastCDC parameters.
    pub chunker: ChunkerParams,
    /// zstd level for blobs (0 = no compression).
    pub compression_level: i32,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// Default retention: snapshots younger than this many seconds are always kept.
    pub keep_within_secs: u64,
    /// S3 Object Lock applied to every object written (format version 3; absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLock>,
}

/// S3 Object Lock settings of a repository: every object is written with a retention date.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectLock {
    /// Retention mode.
    pub mode: LockMode,
    /// Days each object stays locked after it is written (or after its lock was last extended).
    pub days: u32,
}

/// S3 Object Lock retention modes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody, not even the account's root user, can delete or shorten the lock.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

impl LockMode {
    /// The value of the `x-amz-object-lock-mode` header.
    pub fn header(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

impl std::str::FromStr for LockMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "compliance" => Ok(LockMode::Compliance),
            "governance" => Ok(LockMode::Governance),
            _ => Err(format!(
                "unknown object lock mode {s:?}: use compliance or governance"
            )),
        }
    }
}

impl ObjectLock {
    /// The lock days that cover a retention of `keep_within_secs` (the default of
    /// `init --object-lock`): the retention in whole days, plus one.
    pub fn days_covering(keep_within_secs: u64) -> u32 {
        (keep_within_secs.div_ceil(86_400) + 1) as u32
    }

    /// How soon a lock must end for `gc` and `forget` to extend it, unless told otherwise: within
    /// half the lock days.
    pub fn extend_within(&self) -> chrono::Duration {
        chrono::Duration::hours(i64::from(self.days) * 12)
    }

    /// When an object written now will unlock.
    pub fn retain_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::days(self.days.into())
    }
}

/// Splits a stored `config` into its clear format version (checked to be one this build reads)
/// and its sealed body.
pub fn split_config(raw: &[u8]) -> Result<(u32, &[u8])> {
    if raw.len() < 12 || &raw[..8] != CONFIG_MAGIC {
        return Err(Error::damaged(
            "config",
            "object",
            "not a Cairn config (bad magic)",
        ));
    }
    let version = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok((version, &raw[12..]))
}

/// The clear header of a `config` this build writes.
pub(crate) fn config_header() -> Vec<u8> {
    let mut out = CONFIG_MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out
}
