//! The format: what the bytes in a repository mean (specified in `format-spec/`). Ids
//! ([`id`]), master keys, key files and the sealed box every encrypted object uses
//! ([`crypto`]), content-defined chunking ([`chunker`]), blobs ([`blob`]), packs ([`pack`]),
//! trees ([`tree`]), snapshots ([`snapshot`]), index segments ([`index`]) and the config
//! ([`config`]).
//!
//! The lowest layer: it encodes, decodes and verifies, and uses nothing of the engine but
//! [`crate::error`] and the crate root's helpers. Reading and writing these objects is the
//! repository's.

pub mod blob;
pub mod chunker;
pub mod config;
pub mod crypto;
pub mod id;
pub mod index;
pub mod pack;
pub mod snapshot;
pub mod tree;
