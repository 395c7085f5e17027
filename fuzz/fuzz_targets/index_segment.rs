//! Index segments: any bytes either parse, and then re-encode to exactly the same bytes, or are
//! refused. A parsed segment is then walked like the readers walk one: every entry's span fits a
//! pack (its end does not overflow), and the local index cache, given the segment (as active or
//! as superseded), finds every blob where the segment puts it (the last entry of a blob listed
//! twice), counts them by kind and remembers the segment's lineage (what it supersedes, its epoch).
#![no_main]
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use cairn_engine::Id;
use cairn_engine::format::blob::BlobKind;
use cairn_engine::format::index::IndexSegment;
use cairn_engine::repository::local_index::{BlobLocation, LocalIndex};
use libfuzzer_sys::fuzz_target;

/// One cache for the whole run, emptied before each input (opening one costs milliseconds),
/// and compacted now and then (the deletions that empty it slow it down as they pile up).
fn cache() -> &'static LocalIndex {
    static CACHE: OnceLock<LocalIndex> = OnceLock::new();
    static USES: AtomicU32 = AtomicU32::new(0);
    let cache = CACHE.get_or_init(|| {
        let dir = std::env::temp_dir().join("cairn-fuzz-index-cache");
        LocalIndex::open(&dir).expect("a local index cache opens")
    });
    if USES.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
        cache.compact();
    }
    cache.clear().expect("the cache clears");
    cache
}

fuzz_target!(|data: &[u8]| {
    let Some(segment) = IndexSegment::decode(data) else {
        return;
    };
    assert_eq!(segment.encode(), data);
    let mut located = HashMap::new();
    for (pack, blobs) in &segment.packs {
        for &blob in blobs {
            assert!(blob.offset.checked_add(blob.length).is_some());
            located.insert(blob.id, BlobLocation { pack: *pack, blob });
        }
    }

    // a segment superseded by another one adds no entries
    let id = Id::of_stored(data);
    let active = id.0[0] & 1 == 0;
    if !active {
        located.clear();
    }
    let cache = cache();
    cache
        .add_segment(&id, &segment, active)
        .expect("the cache takes the segment");
    for (blob, location) in &located {
        assert_eq!(cache.get(blob).expect("the cache reads"), Some(*location));
    }
    let data_blobs = located
        .values()
        .filter(|l| l.blob.kind == BlobKind::Data)
        .count() as u64;
    let counted = cache.count().expect("the cache counts");
    assert_eq!(counted, (data_blobs, located.len() as u64 - data_blobs));
    let known = cache.known_segments().expect("the cache lists segments");
    assert_eq!(known.len(), 1);
    assert_eq!(known[&id].active, active);
    assert_eq!(known[&id].lineage, segment.lineage);
});
