//! Sealed boxes and their framing: opening arbitrary bytes never panics, and unframing respects
//! the size bound it is given (no decompression bombs).
#![no_main]
use cairn_engine::format::blob::{open, unframe};
use cairn_engine::format::crypto::{Domain, MasterKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = MasterKeys::from_bytes([1; 32], [2; 32]);
    assert!(
        open(
            &keys,
            Domain::Snapshot,
            data,
            "snapshot",
            &"fuzz",
            Some(1 << 20)
        )
        .is_err()
    );
    if let Ok(plain) = unframe(data, "blob", &"fuzz", Some(1 << 20)) {
        assert!(plain.len() <= (1 << 20).max(data.len()));
    }
});
