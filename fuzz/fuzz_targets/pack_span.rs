//! Pack spans: a whole pack, then blobs read out of it, and out of a part of it, at its own
//! header's entries and at arbitrary ones (offsets, lengths and plaintext lengths that may point
//! past the end). Every read either yields the verified blob or is an error, never a panic.
//!
//! Input: `count u8 || count % 16 × (offset u32 || length u32 || raw_len u32) || span start u32
//! || span length u32 || pack`, each arbitrary entry taking the id and kind of a header entry
//! (at most 15 of them: the error messages of many more would take most of the time).
#![no_main]
use cairn_engine::Id;
use cairn_engine::format::crypto::MasterKeys;
use cairn_engine::format::pack::{
    PackedBlob, TRAILER_LEN, open_blob_in, read_header, read_header_of_damaged,
};
use libfuzzer_sys::fuzz_target;

const ARBITRARY_LEN: usize = 12;

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let Some((arbitrary, rest)) = rest.split_at_checked(count as usize % 16 * ARBITRARY_LEN) else {
        return;
    };
    let Some((span, pack)) = rest.split_at_checked(8) else {
        return;
    };
    let keys = MasterKeys::from_bytes([7; 32], [9; 32]);
    let id = Id::of_stored(pack);
    let header = read_header_of_damaged(&keys, &id, pack);
    // the pack is named by its hash, so checking the name changes nothing
    assert_eq!(
        read_header(&keys, &id, pack).ok(),
        header.as_ref().ok().cloned()
    );
    let header = header.unwrap_or_default();
    // no entry of a header that opens reaches into the header or the trailer
    assert!(
        header
            .iter()
            .all(|b| b.range().end <= pack.len() - TRAILER_LEN)
    );

    let start = (u32_at(span, 0) as usize).min(pack.len());
    let end = start
        .saturating_add(u32_at(span, 4) as usize)
        .min(pack.len());
    let part = &pack[start..end];
    let listed = arbitrary
        .chunks_exact(ARBITRARY_LEN)
        .enumerate()
        .map(|(i, e)| {
            let like = header.get(i % header.len().max(1)).copied();
            PackedBlob {
                kind: like.map_or(cairn_engine::format::blob::BlobKind::Data, |b| b.kind),
                id: like.map_or(Id::default(), |b| b.id),
                offset: u32_at(e, 0),
                length: u32_at(e, 4),
                raw_len: u32_at(e, 8),
            }
        });
    for b in header.iter().copied().chain(listed) {
        let whole = open_blob_in(&keys, &id, pack, 0, &b);
        if let Ok(plain) = &whole {
            assert!(b.range().end <= pack.len());
            assert_eq!(plain.len(), b.raw_len as usize);
            assert_eq!(keys.blob_id(plain), b.id);
        }
        // a part of the pack yields the same, or an error if the blob is not all in it
        let inside = start <= b.offset as usize && b.range().end <= end;
        match open_blob_in(&keys, &id, part, start as u64, &b) {
            Ok(plain) => {
                assert!(inside);
                assert_eq!(Some(plain), whole.ok());
            }
            Err(_) => assert!(!inside || whole.is_err()),
        }
    }
});
