//! Snapshot documents: any bytes either parse into a snapshot that serializes back, or fail.
#![no_main]
use cairn_engine::format::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snap) = serde_json::from_slice::<Snapshot>(data) {
        let json = serde_json::to_vec(&snap).expect("a parsed snapshot serializes");
        let again: Snapshot = serde_json::from_slice(&json).expect("and parses again");
        assert_eq!(again, snap);
    }
});
