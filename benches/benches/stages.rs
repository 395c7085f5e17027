//! Criterion micro-benchmarks of every stage of a backup, each on its own: chunking, keyed
//! hashing, compression, encryption, sealing (all three), pack writing, and look-ups in the
//! local RocksDB index at 10 M entries (`CAIRN_BENCH_INDEX_ENTRIES` overrides the count).
//! Run: `cargo bench -p cairn-benches --bench stages` (figures in benches/RESULTS.md).

use std::hint::black_box;

use cairn_engine::Id;
use cairn_engine::format::blob::{self, BlobKind};
use cairn_engine::format::chunker::ChunkerParams;
use cairn_engine::format::crypto::{Domain, MasterKeys};
use cairn_engine::format::index::IndexSegment;
use cairn_engine::format::pack::{PackWriter, PackedBlob};
use cairn_engine::repository::local_index::LocalIndex;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const MIB: usize = 1024 * 1024;

/// Incompressible bytes: BLAKE3's extendable output for `seed`.
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Text-like bytes that zstd -3 shrinks about 3:1: words drawn from a small vocabulary.
fn text(len: usize) -> Vec<u8> {
    let words: Vec<&[u8]> = b"the quick brown fox jumps over lazy dog backup restore chunk index pack snapshot tree volume namespace kubernetes data 0123 4567 89ab"
        .split(|b| *b == b' ')
        .collect();
    let noise = random(len, 7);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(words[noise[i % len] as usize % words.len()]);
        out.push(if noise[(i + 1) % len].is_multiple_of(9) {
            b'\n'
        } else {
            b' '
        });
        i += 2;
    }
    out.truncate(len);
    out
}

fn inputs() -> [(&'static str, Vec<u8>); 2] {
    [("random", random(16 * MIB, 1)), ("text", text(16 * MIB))]
}

fn chunker(c: &mut Criterion) {
    let params = ChunkerParams::new_default();
    let mut g = c.benchmark_group("chunker");
    for (name, data) in inputs() {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                params
                    .chunks(black_box(&data[..]), u64::MAX)
                    .map(|c| c.unwrap().len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

fn per_chunk(c: &mut Criterion) {
    let keys = MasterKeys::generate();
    let chunk = random(MIB, 2);
    let text_chunk = text(MIB);
    let mut g = c.benchmark_group("stage_1MiB_chunk");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("keyed_hash", |b| b.iter(|| keys.blob_id(black_box(&chunk))));
    for (name, data) in [("random", &chunk), ("text", &text_chunk)] {
        g.bench_function(format!("zstd3_compress/{name}"), |b| {
            b.iter(|| zstd::bulk::compress(black_box(data), 3).unwrap())
        });
        g.bench_function(format!("seal_zstd3_aes/{name}"), |b| {
            b.iter(|| blob::seal(&keys, Domain::Blob, 3, black_box(data)))
        });
    }
    g.bench_function("aes256gcm_encrypt", |b| {
        b.iter(|| keys.seal(Domain::Blob, black_box(&chunk)))
    });
    g.finish();
}

fn pack_writing(c: &mut Criterion) {
    let keys = MasterKeys::generate();
    let sealed: Vec<(Id, Vec<u8>)> = (0..16u64)
        .map(|i| {
            let plain = random(MIB, 10 + i);
            (
                keys.blob_id(&plain),
                blob::seal(&keys, Domain::Blob, 0, &plain),
            )
        })
        .collect();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes((16 * MIB) as u64));
    g.bench_function("write_16x1MiB", |b| {
        b.iter(|| {
            let mut pack = PackWriter::default();
            for (id, s) in &sealed {
                pack.add(BlobKind::Data, *id, s, MIB as u32);
            }
            pack.finish(&keys).1.len()
        })
    });
    g.finish();
}

fn index_lookup(c: &mut Criterion) {
    let entries: u64 = std::env::var("CAIRN_BENCH_INDEX_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let index = LocalIndex::open(dir.path()).unwrap();
    let id_of = |n: u64| Id(*blake3::hash(&n.to_le_bytes()).as_bytes());
    let per_segment = 100_000;
    for s in 0..entries.div_ceil(per_segment) {
        let blobs = (s * per_segment..((s + 1) * per_segment).min(entries))
            .map(|n| PackedBlob {
                kind: BlobKind::Data,
                id: id_of(n),
                offset: (n % 16) as u32 * MIB as u32,
                length: MIB as u32,
                raw_len: MIB as u32,
            })
            .collect();
        let segment = IndexSegment {
            packs: vec![(id_of(u64::MAX - s), blobs)],
            ..IndexSegment::default()
        };
        index
            .add_segment(&id_of(s + (1 << 40)), &segment, true)
            .unwrap();
    }
    // as after a cache rebuild (Repository::sync_index)
    index.compact();
    let mut g = c.benchmark_group(format!("index_{entries}_entries"));
    let mut n = 0u64;
    g.bench_function("lookup_present", |b| {
        b.iter_batched(
            || {
                n = (n + 7_919) % entries;
                id_of(n)
            },
            |id| assert!(index.get(&id).unwrap().is_some()),
            BatchSize::SmallInput,
        )
    });
    let mut m = entries;
    g.bench_function("lookup_absent", |b| {
        b.iter_batched(
            || {
                m += 1;
                id_of(m)
            },
            |id| assert!(index.get(&id).unwrap().is_none()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = stages;
    config = Criterion::default().sample_size(20);
    targets = chunker, per_chunk, pack_writing, index_lookup
}
criterion_main!(stages);
