//! The chunker: chunks concatenate to the input, respect the maximum size, and do not depend on
//! the size hint (in-memory and streaming paths cut alike).
#![no_main]
use cairn_engine::format::chunker::ChunkerParams;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((seed, body)) = data.split_first_chunk::<8>() else {
        return;
    };
    let p = ChunkerParams {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        gear_seed: u64::from_le_bytes(*seed),
    };
    let hinted: Vec<Vec<u8>> = p
        .chunks(body, body.len() as u64)
        .map(Result::unwrap)
        .collect();
    let streamed: Vec<Vec<u8>> = p.chunks(body, u64::MAX).map(Result::unwrap).collect();
    assert_eq!(hinted.concat(), body);
    assert!(hinted.iter().all(|c| c.len() <= 1024));
    assert_eq!(hinted, streamed);
});
