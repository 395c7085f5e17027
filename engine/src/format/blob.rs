//! Blobs: the unit of deduplication. A blob's stored form is a sealed box whose plaintext is one
//! compression byte (0 = raw, 1 = zstd) followed by the (maybe compressed) payload. The same
//! framing seals every other encrypted object (config body, snapshots, index segments, pack
//! headers), each under its own [`Domain`].

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::crypto::{Domain, MasterKeys};
use crate::format::id::Id;

/// What a blob holds; data and tree blobs live in separate packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// A chunk of file contents.
    Data,
    /// A serialized directory tree.
    Tree,
}

impl BlobKind {
    /// The byte used for this kind in pack headers and index segments.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }

    /// Parses the byte form.
    pub fn from_byte(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Frames and seals `plaintext`: zstd at `level` when that makes it smaller, raw otherwise
/// (level 0 means never compress).
pub fn seal(keys: &MasterKeys, domain: Domain, level: i32, plaintext: &[u8]) -> Vec<u8> {
    let compressed = (level != 0)
        .then(|| compress(plaintext, level))
        .flatten()
        .filter(|c| c.len() < plaintext.len());
    let (tag, body) = match &compressed {
        Some(c) => (ZSTD, c.as_slice()),
        None => (RAW, plaintext),
    };
    keys.seal_parts(domain, &[&[tag], body])
}

/// Opens and unframes a sealed object. `kind` and `id` only name it in errors; `size_hint`
/// bounds the decompressed size when it is known (blobs), guarding against decompression bombs.
pub fn open(
    keys: &MasterKeys,
    domain: Domain,
    stored: &[u8],
    kind: &'static str,
    id: &dyn std::fmt::Display,
    size_hint: Option<usize>,
) -> Result<Vec<u8>> {
    let framed = keys.open(domain, stored).ok_or_else(|| {
        Error::damaged(
            kind,
            id,
            "authentication failed (altered, truncated or foreign data)",
        )
    })?;
    unframe(&framed, kind, id, size_hint)
}

/// Removes the compression framing of an opened sealed box (see [`seal`]).
pub fn unframe(
    framed: &[u8],
    kind: &'static str,
    id: &dyn std::fmt::Display,
    size_hint: Option<usize>,
) -> Result<Vec<u8>> {
    match framed.split_first() {
        Some((&RAW, body)) => Ok(body.to_vec()),
        Some((&ZSTD, body)) => {
            let out = match size_hint {
                Some(n) => decompress(body, n),
                None => zstd::stream::decode_all(body),
            };
            out.map_err(|e| Error::damaged(kind, id, format!("cannot decompress: {e}")))
        }
        _ => Err(Error::damaged(kind, id, "unknown compression tag")),
    }
}

thread_local! {
    /// Each thread's zstd contexts, made on first use: making one costs more than compressing
    /// or decompressing a small blob.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// `plaintext` compressed at `level`, or `None` if zstd fails.
fn compress(plaintext: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|context| {
        if context.is_none() {
            *context = zstd::bulk::Compressor::new(level).ok();
        }
        let compressor = context.as_mut()?;
        compressor.set_compression_level(level).ok()?;
        compressor.compress(plaintext).ok()
    })
}

/// `body` decompressed, refused if it would be larger than `limit` bytes.
fn decompress(body: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|context| {
        if context.is_none() {
            *context = Some(zstd::bulk::Decompressor::new()?);
        }
        context
            .as_mut()
            .expect("made above")
            .decompress(body, limit)
    })
}

/// Opens a stored blob and checks that its plaintext hashes to `id`, so that no wrong data can
/// ever come out of the repository.
pub fn open_blob(keys: &MasterKeys, id: &Id, stored: &[u8], raw_len: u32) -> Result<Vec<u8>> {
    let plain = open(
        keys,
        Domain::Blob,
        stored,
        "blob",
        id,
        Some(raw_len as usize),
    )?;
    if plain.len() != raw_len as usize || keys.blob_id(&plain) != *id {
        return Err(Error::damaged(
            "blob",
            id,
            "contents do not match the blob id",
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compresses_only_when_it_helps() {
        let keys = MasterKeys::generate();
        let text = b"abcabcabc".repeat(1000);
        let sealed = seal(&keys, Domain::Blob, 3, &text);
        assert!(sealed.len() < text.len() / 10);
        let random: Vec<u8> = (0..4096)
            .map(|_| crate::format::crypto::random_bytes::<1>()[0])
            .collect();
        let sealed_random = seal(&keys, Domain::Blob, 3, &random);
        assert_eq!(
            sealed_random.len(),
            random.len() + 1 + crate::format::crypto::OVERHEAD
        );
    }

    #[test]
    fn open_blob_rejects_wrong_id() {
        let keys = MasterKeys::generate();
        let sealed = seal(&keys, Domain::Blob, 3, b"data");
        let id = keys.blob_id(b"data");
        assert_eq!(open_blob(&keys, &id, &sealed, 4).unwrap(), b"data");
        assert!(open_blob(&keys, &keys.blob_id(b"other"), &sealed, 4).is_err());
        assert!(open_blob(&keys, &id, &sealed, 3).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..4) {
            let keys = MasterKeys::generate();
            let sealed = seal(&keys, Domain::Snapshot, level, &data);
            let back = open(&keys, Domain::Snapshot, &sealed, "snapshot", &"x", None).unwrap();
            prop_assert_eq!(back, data);
        }
    }
}
