//! Tree walks: a small repository of tree blobs (the first one the root, subtrees named by the
//! hash of their blob) is decoded and walked like a restore walks a snapshot. Every path the walk
//! visits is made of safe names, stays inside the restore target when joined to it, and can be
//! named back by a user (`--include`); damaged and missing subtrees are reported, never a panic.
//!
//! Input: blobs, each `length u16 || bytes`.
#![no_main]
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cairn_engine::format::tree::{NodeKind, Tree, is_safe_name, parse_snapshot_path, walk_trees};
use cairn_engine::{Error, Id};
use libfuzzer_sys::fuzz_target;

/// Nodes visited before the walk is stopped (blobs shared by many directories multiply them).
const MAX_VISITS: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut blobs = HashMap::new();
    let mut root = None;
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = (u16::from_le_bytes(*len) as usize).min(tail.len());
        let (blob, tail) = tail.split_at(len);
        let id = Id::of_stored(blob);
        root.get_or_insert(id);
        blobs.insert(id, blob);
        rest = tail;
    }
    let Some(root) = root else { return };
    let load = |id: &Id| -> cairn_engine::Result<Tree> {
        let blob = blobs
            .get(id)
            .ok_or_else(|| Error::MissingBlob { id: id.to_hex() })?;
        let tree = Tree::decode(id, blob)?;
        for node in &tree.nodes {
            assert!(std::ptr::eq(tree.find(&node.name).expect("listed"), node));
        }
        Ok(tree)
    };
    let target = Path::new("/restore/target");
    let mut visits = 0;
    let mut unreadable = vec![];
    let walked = walk_trees(
        &load,
        &root,
        &mut Vec::new(),
        &mut |rel, node| {
            visits += 1;
            if visits > MAX_VISITS {
                return Err(Error::Invalid("too many nodes".into()));
            }
            assert_eq!(rel.last(), Some(&node.name));
            assert!(rel.iter().all(|c| is_safe_name(&c.0)));
            let path = rel
                .iter()
                .fold(PathBuf::from(target), |p, c| p.join(c.as_os()));
            assert!(path.starts_with(target));
            assert_eq!(
                path.components().count(),
                target.components().count() + rel.len()
            );
            assert_eq!(path.file_name(), Some(node.name.as_os()));
            let named: Vec<u8> = rel
                .iter()
                .flat_map(|c| [&b"/"[..], &c.0])
                .flatten()
                .copied()
                .collect();
            assert_eq!(parse_snapshot_path(&named), rel);
            Ok(node.kind == NodeKind::Dir)
        },
        // as the restore does: a damaged or missing directory listing is reported, the rest goes on
        &mut |rel, e| match e {
            Error::Damaged { .. } | Error::MissingBlob { .. } => {
                unreadable.push(rel.to_vec());
                Ok(())
            }
            e => Err(e),
        },
    );
    match walked {
        Ok(()) => {}
        // a damaged or missing root, or a name that would leave the target: refused, not walked
        Err(Error::Damaged { .. } | Error::MissingBlob { .. } | Error::UnsafeName { .. }) => {}
        Err(Error::Invalid(_)) => assert!(visits > MAX_VISITS),
        Err(e) => panic!("unexpected error: {e}"),
    }
    assert!(unreadable.iter().all(|p| !p.is_empty()));
});
