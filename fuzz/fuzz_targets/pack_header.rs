//! Pack headers: the plaintext parser, and a whole pack (named by its own hash so that parsing
//! gets past the name check) under fixed keys.
#![no_main]
use cairn_engine::Id;
use cairn_engine::format::crypto::MasterKeys;
use cairn_engine::format::pack::{decode_header, read_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = Id::of_stored(data);
    if let Ok(entries) = decode_header(&id, data, 1 << 20) {
        assert!(
            entries
                .iter()
                .all(|e| e.offset as usize + e.length as usize <= 1 << 20)
        );
    }
    let keys = MasterKeys::from_bytes([7; 32], [9; 32]);
    let _ = read_header(&keys, &id, data);
});
