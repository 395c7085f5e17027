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
    let framed = keys
        .open(domain, stored)
        .ok_or_else(|| unopened(kind, id))?;
    unframe(&framed, kind, id, size_hint)
}

/// The error for a sealed box that does not open.
fn unopened(kind: &'static str, id: &dyn std::fmt::Display) -> Error {
    Error::damaged(
        kind,
        id,
        "authentication failed (altered, truncated or foreign data)",
    )
}

/// Buffers that [`open_blob_into`] reuses from one blob to the next. Fresh buffers cost a
/// page fault for every 4 KiB the first time they are written: with blobs of up to 16 MiB,
/// which the allocator maps afresh each time, that was a tenth of a restore's CPU.
#[derive(Default)]
pub struct Scratch {
    /// The opened box: the compression byte and the maybe compressed payload.
    framed: Vec<u8>,
    /// The payload.
    plain: Vec<u8>,
}

/// Removes the compression framing of an opened sealed box (see [`seal`]).
pub fn unframe(
    framed: &[u8],
    kind: &'static str,
    id: &dyn std::fmt::Display,
    size_hint: Option<usize>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    unframe_into(framed, kind, id, size_hint, &mut out)?;
    Ok(out)
}

/// [`unframe`] into `out` (its contents replaced, its memory reused).
fn unframe_into(
    framed: &[u8],
    kind: &'static str,
    id: &dyn std::fmt::Display,
    size_hint: Option<usize>,
    out: &mut Vec<u8>,
) -> Result<()> {
    out.clear();
    match framed.split_first() {
        Some((&RAW, body)) => out.extend_from_slice(body),
        Some((&ZSTD, body)) => match size_hint {
            Some(n) => decompress(body, n, out),
            None => zstd::stream::copy_decode(body, &mut *out),
        }
        .map_err(|e| Error::damaged(kind, id, format!("cannot decompress: {e}")))?,
        _ => return Err(Error::damaged(kind, id, "unknown compression tag")),
    }
    Ok(())
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

/// `body` decompressed into `out` (empty, its memory reused), refused if it would be larger
/// than `limit` bytes.
fn decompress(body: &[u8], limit: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    DECOMPRESSOR.with_borrow_mut(|context| {
        if context.is_none() {
            *context = Some(zstd::bulk::Decompressor::new()?);
        }
        // zstd writes into the spare capacity and never beyond it; a buffer grown by an earlier,
        // larger blob may hold more than `limit`, hence the check after
        let room = zstd::bulk::Decompressor::upper_bound(body).map_or(limit, |n| n.min(limit));
        out.clear();
        out.try_reserve_exact(room).map_err(|e| {
            std::io::Error::other(format!("cannot set aside {room} bytes for it: {e}"))
        })?;
        let decompressor = context.as_mut().expect("made above");
        decompressor.decompress_to_buffer(body, out)?;
        if out.len() > limit {
            out.clear();
            return Err(std::io::Error::other(format!(
                "more than the {limit} bytes expected"
            )));
        }
        Ok(())
    })
}

/// Opens a stored blob and checks that its plaintext hashes to `id`, so that no wrong data can
/// ever come out of the repository.
pub fn open_blob(keys: &MasterKeys, id: &Id, stored: &[u8], raw_len: u32) -> Result<Vec<u8>> {
    let mut scratch = Scratch::default();
    open_blob_into(keys, id, stored, raw_len, &mut scratch)?;
    Ok(scratch.plain)
}

/// [`open_blob`] into `scratch`'s memory: the verified plaintext, borrowed from `scratch`.
pub fn open_blob_into<'s>(
    keys: &MasterKeys,
    id: &Id,
    stored: &[u8],
    raw_len: u32,
    scratch: &'s mut Scratch,
) -> Result<&'s [u8]> {
    scratch.plain.clear();
    if !keys.open_into(Domain::Blob, stored, &mut scratch.framed) {
        return Err(unopened("blob", id));
    }
    let (framed, plain) = (&scratch.framed, &mut scratch.plain);
    unframe_into(framed, "blob", id, Some(raw_len as usize), plain)?;
    let plain = &scratch.plain;
    if plain.len() != raw_len as usize || keys.blob_id(plain) != *id {
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

    #[test]
    fn one_scratch_opens_blob_after_blob_whatever_came_before() {
        let keys = MasterKeys::generate();
        let big = b"abcdefgh".repeat(40_000);
        let noise: Vec<u8> = (0..3000)
            .map(|_| crate::format::crypto::random_bytes::<1>()[0])
            .collect();
        let small = b"xy".repeat(300);
        let blob = |data: &[u8]| (keys.blob_id(data), seal(&keys, Domain::Blob, 1, data));
        let (big_id, big_sealed) = blob(&big);
        let (noise_id, noise_sealed) = blob(&noise);
        let (small_id, small_sealed) = blob(&small);
        let mut tampered = small_sealed.clone();
        tampered[30] ^= 1;
        let mut scratch = Scratch::default();
        let mut open = |id, sealed: &[u8], len: usize| {
            open_blob_into(&keys, id, sealed, len as u32, &mut scratch).map(<[u8]>::to_vec)
        };
        // compressed, large; raw; compressed, small; each exactly its own plaintext
        assert_eq!(open(&big_id, &big_sealed, big.len()).unwrap(), big);
        assert_eq!(open(&noise_id, &noise_sealed, noise.len()).unwrap(), noise);
        assert_eq!(open(&small_id, &small_sealed, small.len()).unwrap(), small);
        // a damaged blob after good ones is refused, never answered with what was there
        assert!(open(&small_id, &tampered, small.len()).is_err());
        // a blob whose index entry claims fewer bytes than it holds is refused, though the
        // buffer grown by the large blob would hold it
        assert!(open(&big_id, &big_sealed, 1000).is_err());
        assert_eq!(open(&small_id, &small_sealed, small.len()).unwrap(), small);
    }

    #[test]
    fn decompression_stops_at_the_limit_in_a_buffer_with_more_room() {
        let body = zstd::bulk::compress(&[5; 10_000], 1).unwrap();
        let mut out = Vec::with_capacity(1 << 20);
        assert!(decompress(&body, 9_999, &mut out).is_err());
        assert!(out.is_empty());
        decompress(&body, 10_000, &mut out).unwrap();
        assert_eq!(out, [5; 10_000]);
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
