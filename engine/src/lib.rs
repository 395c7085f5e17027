//! Cairn's engine: a content-addressed, deduplicating, encrypted backup repository.
//!
//! The pipeline, module by module: [`chunker`] cuts data into chunks, [`crypto`] names and
//! encrypts them, [`blob`] frames them, [`pack`] gathers them into packs that [`packer`] uploads,
//! [`index`] records where each blob is, [`store`] reaches a folder or an S3 bucket,
//! [`repository`] holds the objects, [`session`] announces running writers to gc, [`tree`] and
//! [`snapshot`] describe what was backed up, [`archiver`] and [`restorer`] run backup and
//! restore ([`filler`] writes restored files, [`partial`] puts them in place) on folders held open
//! ([`dirfd`]), [`mount`] shows the snapshots as a read-only file system, and [`fsmeta`] reads and applies file metadata; [`sources`] holds what is backed up besides
//! folders (Kubernetes). The on-disk format is specified in
//! `format-spec/`.

pub mod archiver;
pub mod audit;
mod aws_profile;
mod azure;
pub mod bandwidth;
pub mod blob;
pub mod checker;
pub mod chunker;
pub mod clock;
pub mod copier;
pub mod crypto;
pub mod diff;
pub mod dirfd;
pub mod drill;
pub mod error;
pub mod exclude;
pub mod filler;
pub mod find;
pub mod folder;
pub mod fsmeta;
pub mod gc;
pub mod id;
pub mod index;
pub mod mount;
pub mod object_lock;
pub mod pack;
pub mod pack_cache;
pub mod packer;
pub mod partial;
pub mod progress;
pub mod records;
pub mod repair;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod s3_api;
pub mod segments;
pub mod session;
pub mod snapshot;
pub mod sources;
pub mod stats;
pub mod store;
pub mod tree;

pub use error::{Error, Result};
pub use id::Id;

/// This machine's host name (empty if unknown).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// The name of the user running this process (empty if unknown).
pub fn user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default()
}

/// A number from the environment variable `name` when it parses and lies in `allowed`, else
/// `default` (tuning settings such as `CAIRN_CONNECTIONS`).
pub(crate) fn env_number(
    name: &str,
    allowed: std::ops::RangeInclusive<usize>,
    default: usize,
) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| allowed.contains(n))
        .unwrap_or(default)
}
