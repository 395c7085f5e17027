//! Makes a repository holding many small blobs, to measure what `cairn gc`, `check`, `copy`,
//! `restore` and opening cost per indexed blob (GC_MEMORY.md, SCALE.md).
//! Usage: `many-blobs REPO_FOLDER COUNT [--snapshot]` — password `bench`; the blobs are 40
//! distinct bytes each, in 16 MiB packs, indexed in segments of 500 000 entries (the largest a
//! gc writes). Without `--snapshot` no snapshot refers to them; with it, one snapshot of
//! `/blobs` refers to all of them: files of 1000 blobs each (40 000 bytes), 10 files a folder.

use std::path::PathBuf;

use cairn_engine::format::blob::BlobKind;
use cairn_engine::format::id::Id;
use cairn_engine::format::snapshot::{SNAPSHOT_VERSION, Snapshot, Summary};
use cairn_engine::format::tree::{Node, NodeKind, RawBytes, Tree};
use cairn_engine::repository::packer::Packer;
use cairn_engine::repository::store::Location;
use cairn_engine::repository::{InitOptions, Repository};
use rayon::prelude::*;

/// Blobs indexed by one segment (one packer run).
const SEGMENT_BLOBS: u64 = 500_000;
/// Blobs a file of the snapshot refers to.
const FILE_BLOBS: usize = 1000;
/// Files a folder of the snapshot holds.
const FOLDER_FILES: usize = 10;
/// Bytes of each blob.
const BLOB_BYTES: u64 = 40;

fn blob(n: u64) -> [u8; BLOB_BYTES as usize] {
    let mut data = [0u8; BLOB_BYTES as usize];
    data[..8].copy_from_slice(&n.to_le_bytes());
    data[8..].copy_from_slice(blake3::hash(&n.to_le_bytes()).as_bytes());
    data
}

fn node(name: String, kind: NodeKind, mtime_ns: i64) -> Node {
    let mode = if kind == NodeKind::Dir { 0o755 } else { 0o644 };
    Node::made(RawBytes(name.into_bytes()), kind, mode, mtime_ns)
}

/// Stores a snapshot of `/blobs` whose files refer to `ids` in order.
fn snapshot(repo: &Repository, ids: &[Id]) {
    let started = chrono::Utc::now();
    let mtime_ns = started.timestamp_nanos_opt().expect("a time after 1677");
    let packer = Packer::new(repo);
    let files: Vec<&[Id]> = ids.chunks(FILE_BLOBS).collect();
    let folders: Vec<Node> = files
        .par_chunks(FOLDER_FILES)
        .enumerate()
        .map(|(f, chunk)| {
            let nodes = chunk
                .iter()
                .enumerate()
                .map(|(i, content)| Node {
                    size: content.len() as u64 * BLOB_BYTES,
                    inode: (f * FOLDER_FILES + i + 1) as u64,
                    content: content.to_vec(),
                    ..node(format!("file-{i:02}"), NodeKind::File, mtime_ns)
                })
                .collect();
            let tree = packer
                .save(BlobKind::Tree, &Tree { nodes }.encode())
                .expect("tree stored");
            Node {
                subtree: Some(tree),
                ..node(format!("folder-{f:08}"), NodeKind::Dir, mtime_ns)
            }
        })
        .collect();
    let dirs = folders.len() as u64 + 1;
    let top = packer
        .save(BlobKind::Tree, &Tree { nodes: folders }.encode())
        .expect("tree stored");
    let root = Tree {
        nodes: vec![Node {
            subtree: Some(top),
            ..node("blobs".into(), NodeKind::Dir, mtime_ns)
        }],
    };
    let root = packer
        .save(BlobKind::Tree, &root.encode())
        .expect("tree stored");
    packer.finish().expect("trees indexed");
    let summary = Summary {
        files: files.len() as u64,
        dirs,
        bytes: ids.len() as u64 * BLOB_BYTES,
        started,
        ..Summary::default()
    };
    let id = Snapshot {
        version: SNAPSHOT_VERSION,
        time: started,
        host: cairn_engine::host_name(),
        user: cairn_engine::user_name(),
        paths: vec![RawBytes(b"/blobs".to_vec())],
        tags: vec![],
        tree: root,
        parent: None,
        original: None,
        summary,
        program: "many-blobs".into(),
    }
    .save(repo)
    .expect("snapshot stored");
    println!("snapshot {} of {} files", id.short(), files.len());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(folder), Some(count)) = (args.first(), args.get(1)) else {
        eprintln!("usage: many-blobs REPO_FOLDER COUNT [--snapshot]");
        std::process::exit(2);
    };
    let with_snapshot = args.get(2).is_some_and(|a| a == "--snapshot");
    let folder = PathBuf::from(folder);
    let count: u64 = count.parse().expect("COUNT is a number");
    let location = Location::Local(folder.join("repo"));
    let repo = Repository::init(
        &location,
        b"bench",
        InitOptions::default(),
        &folder.join("cache"),
    )
    .expect("a new repository");
    let (mut blobs, mut bytes, mut ids) = (0, 0, vec![]);
    for start in (0..count).step_by(SEGMENT_BLOBS as usize) {
        let packer = Packer::new(&repo);
        let saved: Vec<Id> = (start..(start + SEGMENT_BLOBS).min(count))
            .into_par_iter()
            .map(|n| packer.save(BlobKind::Data, &blob(n)).expect("blob stored"))
            .collect();
        if with_snapshot {
            ids.extend(saved);
        }
        let stats = packer.finish().expect("packs written");
        blobs += stats.blobs;
        bytes += stats.stored_bytes;
    }
    println!("{blobs} blobs in {bytes} bytes");
    if with_snapshot {
        snapshot(&repo, &ids);
    }
}
