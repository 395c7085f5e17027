//! Index segments: any bytes either parse, and then re-encode to exactly the same bytes, or are
//! refused.
#![no_main]
use cairn_engine::index::IndexSegment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(segment) = IndexSegment::decode(data) {
        assert_eq!(segment.encode(), data);
    }
});
