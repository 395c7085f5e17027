//! Writes the seeds of the read-path targets (`pack_span`, `index_segment`, `tree_walk`) into
//! `corpus/<target>/seed-*`: real packs under the targets' fixed keys, the index segments that
//! list them, and small directory hierarchies. Run from `fuzz/` (see README.md).
use std::path::Path;

use cairn_engine::Id;
use cairn_engine::format::blob::{self, BlobKind};
use cairn_engine::format::crypto::{Domain, MasterKeys};
use cairn_engine::format::index::{IndexSegment, Lineage};
use cairn_engine::format::pack::{PackWriter, PackedBlob};
use cairn_engine::format::tree::{Node, NodeKind, RawBytes, Tree, Xattr};
// the coverage callbacks the instrumented build calls (the example itself is not fuzzed)
use libfuzzer_sys as _;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
}

/// A pack of `texts` (zstd level `level`) under the targets' keys.
fn pack(
    keys: &MasterKeys,
    kind: BlobKind,
    level: i32,
    texts: &[&[u8]],
) -> (Id, Vec<u8>, Vec<PackedBlob>) {
    let mut w = PackWriter::default();
    for text in texts {
        let sealed = blob::seal(keys, Domain::Blob, level, text);
        w.add(kind, keys.blob_id(text), &sealed, text.len() as u32);
    }
    w.finish(keys)
}

/// A `pack_span` input: arbitrary entries, a span, the pack.
fn span_input(entries: &[(u32, u32, u32)], span: (u32, u32), pack: &[u8]) -> Vec<u8> {
    let mut out = vec![entries.len() as u8];
    for (offset, length, raw_len) in entries {
        for v in [offset, length, raw_len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out.extend_from_slice(&span.0.to_le_bytes());
    out.extend_from_slice(&span.1.to_le_bytes());
    out.extend_from_slice(pack);
    out
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    let mode = if kind == NodeKind::Dir { 0o755 } else { 0o644 };
    serde_json::from_value(serde_json::json!({
        "name": RawBytes(name.to_vec()), "type": kind, "mode": mode, "uid": 1000, "gid": 1000,
        "user": "app", "mtime_ns": 1_700_000_000_000_000_000i64,
        "ctime_ns": 1_700_000_000_000_000_001i64, "size": 0, "inode": 42, "device": 2049, "links": 1
    }))
    .expect("a node")
}

fn dir(name: &[u8], subtree: &[u8]) -> Node {
    Node {
        subtree: Some(Id::of_stored(subtree)),
        ..node(name, NodeKind::Dir)
    }
}

/// A `tree_walk` input: the blobs, root first.
fn walk_input(blobs: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![];
    for b in blobs {
        out.extend_from_slice(&(b.len() as u16).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

fn main() {
    let keys = MasterKeys::from_bytes([7; 32], [9; 32]);
    let texts: [&[u8]; 3] = [b"hello, world\n", &[b'a'; 300], b"\x00\x01\x02 binary"];
    let (raw_id, raw, raw_blobs) = pack(&keys, BlobKind::Data, 0, &texts);
    let (zstd_id, zstd, zstd_blobs) = pack(&keys, BlobKind::Data, 3, &texts);
    let tree = Tree {
        nodes: vec![node(b"f", NodeKind::File)],
    }
    .encode();
    let (tree_id, tree_pack, tree_blobs) = pack(&keys, BlobKind::Tree, 3, &[&tree]);

    let b = raw_blobs[1];
    let len = raw.len() as u32;
    write("pack_span", "raw", &span_input(&[], (0, len), &raw));
    write("pack_span", "zstd", &span_input(&[], (0, u32::MAX), &zstd));
    write("pack_span", "tree", &span_input(&[], (0, 0), &tree_pack));
    write(
        "pack_span",
        "entries",
        &span_input(
            &[
                (b.offset, b.length, b.raw_len),
                (b.offset, b.length + 1, b.raw_len),
                (len - 4, 40, 1),
                (u32::MAX - 1, 1, u32::MAX),
            ],
            (b.offset, b.length),
            &raw,
        ),
    );
    write(
        "pack_span",
        "truncated",
        &span_input(
            &[(b.offset, b.length, b.raw_len)],
            (b.offset, b.length - 1),
            &raw[..raw.len() - 1],
        ),
    );

    let segment = |packs: Vec<(Id, Vec<PackedBlob>)>, lineage: Lineage| {
        IndexSegment { packs, lineage }.encode()
    };
    write(
        "index_segment",
        "packs",
        &segment(
            vec![(raw_id, raw_blobs.clone()), (tree_id, tree_blobs.clone())],
            Lineage::default(),
        ),
    );
    // the last segment of a compaction: it supersedes, starts epoch 3 and retires the older ones
    write(
        "index_segment",
        "compacted",
        &segment(
            vec![
                (zstd_id, zstd_blobs),
                (raw_id, raw_blobs),
                (tree_id, tree_blobs),
            ],
            Lineage {
                supersedes: vec![Id([1; 32]), Id([2; 32])],
                epoch: 3,
                retires_below: 2,
            },
        ),
    );
    write("index_segment", "empty", &segment(vec![], Lineage::default()));

    let leaf = Tree {
        nodes: vec![
            Node {
                content: vec![keys.blob_id(texts[0])],
                size: 13,
                xattrs: vec![Xattr {
                    name: RawBytes(b"user.comment".to_vec()),
                    value: "aGk=".into(),
                }],
                ..node(b"a.txt", NodeKind::File)
            },
            Node {
                target: Some(RawBytes(b"../../etc/passwd".to_vec())),
                size: 16,
                ..node(b"link", NodeKind::Symlink)
            },
            Node {
                links: 2,
                inode: 7,
                ..node(b"x", NodeKind::File)
            },
            Node {
                links: 2,
                inode: 7,
                ..node(b"y", NodeKind::File)
            },
        ],
    }
    .encode();
    let middle = Tree {
        nodes: vec![
            dir(b"caf\xe9", &leaf),
            Node {
                rdev: 259,
                ..node(b"dev", NodeKind::Blockdev)
            },
            node(b"pipe", NodeKind::Fifo),
        ],
    }
    .encode();
    let root = Tree {
        nodes: vec![
            dir(b"data", &middle),
            dir(b"gone", b"a missing tree"),
            dir(b"same", &leaf),
            node(b"top", NodeKind::File),
        ],
    }
    .encode();
    write("tree_walk", "nested", &walk_input(&[&root, &middle, &leaf]));
    write("tree_walk", "missing", &walk_input(&[&root, &leaf]));
    write("tree_walk", "flat", &walk_input(&[&leaf]));
    // a subtree that is not a tree, and one with a name that would leave the restore target
    let garbage = b"{\"nodes\": [{\"name\": 1}]}";
    let unsafe_names = Tree {
        nodes: vec![node(b"..", NodeKind::File)],
    }
    .encode();
    let damaged = Tree {
        nodes: vec![
            dir(b"bad", garbage),
            dir(b"evil", &unsafe_names),
            dir(b"ok", &leaf),
        ],
    }
    .encode();
    write(
        "tree_walk",
        "damaged",
        &walk_input(&[&damaged, garbage, &unsafe_names, &leaf]),
    );
}
