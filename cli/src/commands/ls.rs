//! `cairn ls`: lists the entries of a snapshot.

use anyhow::Result;
use cairn_engine::format::snapshot::Snapshot;
use cairn_engine::format::tree::{self, Node, NodeKind};
use cairn_engine::repository::trees;
use clap::Args;
use serde_json::json;

use super::{open, print_json};
use crate::Global;

/// `cairn ls` options.
#[derive(Args)]
pub struct LsArgs {
    /// Snapshot id prefix or `latest`
    snapshot: String,
    /// Only list below this path inside the snapshot
    path: Option<String>,
    /// Show type, mode, owner, size and time
    #[arg(short, long)]
    long: bool,
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
    };
    let rwx = (0..9).rev().map(|i| {
        if n.mode & (1 << i) != 0 {
            b"rwx"[(8 - i) % 3] as char
        } else {
            '-'
        }
    });
    std::iter::once(t).chain(rwx).collect()
}

/// `cairn ls`
pub fn run(g: &Global, a: LsArgs) -> Result<u8> {
    let repo = open(g)?;
    let (_, snap) = Snapshot::find(&repo, &a.snapshot)?;
    let below = tree::parse_snapshot_path(a.path.as_deref().unwrap_or("").as_bytes());
    let mut rows = Vec::new();
    let mut found = below.is_empty();
    trees::walk(
        &repo,
        &snap.tree,
        &mut Vec::new(),
        &mut |path, node| {
            let n = below.len().min(path.len());
            if below[..n] != path[..n] {
                return Ok(false);
            }
            found |= path == below.as_slice();
            if path.len() >= below.len() {
                rows.push((tree::display_path(path), node.clone()));
            }
            Ok(true)
        },
        &mut tree::stop_at_damage,
    )?;
    if !found {
        return Err(cairn_engine::Error::PathNotInSnapshot(a.path.unwrap_or_default()).into());
    }
    if g.json {
        let items: Vec<_> = rows
            .iter()
            .map(|(p, n)| {
                json!({"path": p, "type": n.kind, "mode": n.mode, "size": n.size, "uid": n.uid, "gid": n.gid,
                       "mtime_ns": n.mtime_ns, "target": n.target.as_ref().map(|t| t.lossy())})
            })
            .collect();
        print_json(&items);
        return Ok(0);
    }
    for (p, n) in rows {
        if a.long {
            let time =
                chrono::DateTime::from_timestamp_nanos(n.mtime_ns).with_timezone(&chrono::Local);
            let link = n
                .target
                .as_ref()
                .map(|t| format!(" -> {}", t.lossy()))
                .unwrap_or_default();
            let owner = if n.user.is_empty() {
                n.uid.to_string()
            } else {
                n.user.clone()
            };
            let group = if n.group.is_empty() {
                n.gid.to_string()
            } else {
                n.group.clone()
            };
            println!(
                "{} {owner:>8} {group:>8} {:>12} {} {p}{link}",
                mode_string(&n),
                n.size,
                time.format("%Y-%m-%d %H:%M:%S")
            );
        } else {
            println!("{p}");
        }
    }
    Ok(0)
}
