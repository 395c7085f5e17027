//! Cairn's engine: a content-addressed, deduplicating, encrypted backup repository.
//!
//! The engine is built in layers, lowest first; a module uses only its own layer and those
//! below it (the `layers` unit test checks every import on the source):
//!
//! 1. [`format`](mod@format): what the bytes in a repository mean: ids, keys and the sealed box, the
//!    chunker, blobs, packs, trees, snapshots, index segments and the config. Encoding and
//!    decoding only; it reads and writes nothing.
//! 2. [`repository`]: where those bytes live and how they are read and written: the store
//!    back-ends (a folder, S3, Azure) that name every object by its kind, the
//!    [`Repository`](repository::Repository) opened with a password, its local caches, the
//!    packer, writer sessions and gc's marks, object-lock extensions, the store's clock, and
//!    snapshots, trees and evidence records as stored objects.
//! 3. [`sources`]: what is backed up and restored into: folders on this host, reached through
//!    descriptors, and Kubernetes clusters.
//! 4. [`ops`]: what a user runs: backup, restore, forget, gc, check, copy, repair, diff, find,
//!    stats, drill, mount, and the Kubernetes backups and restore.
//! 5. [`evidence`]: the audit report, built from the repository and its check and drill records.
//!
//! [`error`] and [`progress`] serve every layer.
//!
//! A backup ([`ops::backup`]) walks folders held open ([`sources::fs`]); [`format::chunker`]
//! cuts file contents into chunks, [`format::crypto`] names and encrypts them, [`format::blob`]
//! frames them, and [`repository::packer`] gathers them into packs ([`format::pack`]), uploads
//! them through the [`repository::store`] and lists them in index segments
//! ([`format::index`]); [`format::tree`]s describe the folders and a [`format::snapshot`] the
//! whole backup. A restore ([`ops::restore`]) reads the snapshot's trees back, finds each blob
//! through the local index cache ([`repository::local_index`]) and fills the files
//! ([`ops::restore::fill`]) under temporary names until they are complete
//! ([`ops::restore::partial`]). The on-disk format is specified in `format-spec/`.

pub mod error;
pub mod progress;

// The layers, lowest first (one a group, so that rustfmt keeps their order).
pub mod format;

pub mod repository;

pub mod sources;

pub mod ops;

pub mod evidence;

#[cfg(test)]
mod layers;

pub use error::{Error, Result};
pub use format::id::Id;

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

/// Asks the kernel to start writing the `len` bytes of `file` at `pos` to disk, without waiting,
/// and to drop from the page cache those of them already written. The kernel never drops a page
/// that is not yet on disk, so this is advice only: it changes no data, and an error is ignored.
/// Pages dropped this way hold the next writes: new pages cost more than reused ones (several
/// times more in a VM whose balloon hands freed memory back to the host).
pub(crate) fn drop_from_page_cache(file: &std::fs::File, pos: u64, len: u64) {
    let _ = nix::fcntl::posix_fadvise(
        file,
        i64::try_from(pos).unwrap_or(i64::MAX),
        i64::try_from(len).unwrap_or(i64::MAX),
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}
