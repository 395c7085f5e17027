//! Key files: any bytes either parse or are refused; parsed ones with cheap Argon2 costs are
//! unwrapped (and fail: no fuzzed file carries keys for this password).
#![no_main]
use cairn_engine::format::crypto::keys::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = serde_json::from_slice::<KeyFile>(data) {
        let p = file.kdf.params;
        if p.m_cost <= 64 && p.t_cost <= 2 && p.p_cost <= 2 {
            assert!(!matches!(file.unwrap_keys(b"fuzz"), Ok(Some(_))));
        }
    }
});
