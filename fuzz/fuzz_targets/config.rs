//! The config object: the clear header is split and checked, and the body parsed as JSON.
#![no_main]
use cairn_engine::format::config::{Config, FORMAT_VERSION, split_config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((version, body)) = split_config(data) {
        assert!((1..=FORMAT_VERSION).contains(&version));
        assert_eq!(body.len() + 12, data.len());
    }
    if let Ok(config) = serde_json::from_slice::<Config>(data) {
        let _ = config.chunker.validate();
    }
});
