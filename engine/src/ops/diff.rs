//! `diff`: what changed between two snapshots. Subtrees with the same id are equal and are not
//! read, so comparing two nightly snapshots costs as much as what changed.

use serde::Serialize;

use crate::error::Result;
use crate::format::id::Id;
use crate::format::tree::{self, Node, NodeKind, RawBytes, Tree};
use crate::repository::Repository;

/// How an entry changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Change {
    /// `+`: only in the second snapshot.
    #[serde(rename = "added")]
    Added,
    /// `-`: only in the first snapshot.
    #[serde(rename = "removed")]
    Removed,
    /// `M`: a file whose contents changed.
    #[serde(rename = "modified")]
    Modified,
    /// `U`: same contents, other metadata (mode, owner, times, attributes, link target).
    #[serde(rename = "metadata")]
    Metadata,
    /// `T`: another kind of entry (a file became a folder…).
    #[serde(rename = "type")]
    Type,
}

impl Change {
    /// The one-letter mark restic users know.
    pub fn mark(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
            Change::Type => 'T',
        }
    }
}

/// One changed entry.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    /// Path inside the snapshots (`/a/b`; folders end in `/`).
    pub path: String,
    /// What changed.
    pub change: Change,
}

/// Entries and content bytes on one side of a diff.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Regular files.
    pub files: u64,
    /// Folders.
    pub dirs: u64,
    /// Other entries.
    pub others: u64,
    /// Content bytes of the files.
    pub bytes: u64,
}

impl Counts {
    fn add(&mut self, node: &Node) {
        match node.kind {
            NodeKind::File => {
                self.files += 1;
                self.bytes += node.size;
            }
            NodeKind::Dir => self.dirs += 1,
            _ => self.others += 1,
        }
    }
}

/// Everything that differs between two snapshots.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diff {
    /// Changed entries, in path order.
    pub changes: Vec<Difference>,
    /// What the second snapshot adds.
    pub added: Counts,
    /// What the second snapshot no longer has.
    pub removed: Counts,
    /// Files whose contents changed.
    pub modified_files: u64,
    /// Entries whose metadata only changed.
    pub metadata_changed: u64,
}

/// Compares the trees of two snapshots.
pub fn diff(repo: &Repository, old: &Id, new: &Id) -> Result<Diff> {
    let mut out = Diff::default();
    compare(repo, Some(old), Some(new), &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn load(repo: &Repository, id: Option<&Id>) -> Result<Vec<Node>> {
    Ok(match id {
        Some(id) => Tree::load(repo, id)?.nodes,
        None => vec![],
    })
}

fn compare(
    repo: &Repository,
    old: Option<&Id>,
    new: Option<&Id>,
    path: &mut Vec<RawBytes>,
    out: &mut Diff,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let (old, new) = (load(repo, old)?, load(repo, new)?);
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.name.0.cmp(&b.name.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (a, b) = match order {
            std::cmp::Ordering::Less => (old.get(i), None),
            std::cmp::Ordering::Greater => (None, new.get(j)),
            std::cmp::Ordering::Equal => (old.get(i), new.get(j)),
        };
        i += usize::from(a.is_some());
        j += usize::from(b.is_some());
        let node = a.or(b).expect("one side has an entry");
        path.push(node.name.clone());
        entry(repo, a, b, path, out)?;
        path.pop();
    }
    Ok(())
}

fn entry(
    repo: &Repository,
    old: Option<&Node>,
    new: Option<&Node>,
    path: &mut Vec<RawBytes>,
    out: &mut Diff,
) -> Result<()> {
    let shown = |node: &Node| {
        let mut p = tree::display_path(path);
        if node.kind == NodeKind::Dir {
            p.push('/');
        }
        p
    };
    match (old, new) {
        (Some(a), Some(b)) if a.kind == b.kind => {
            if a.kind == NodeKind::File && a.content != b.content {
                out.modified_files += 1;
                record(out, shown(b), Change::Modified);
            } else if !same_metadata(a, b) {
                out.metadata_changed += 1;
                record(out, shown(b), Change::Metadata);
            }
            compare(repo, a.subtree.as_ref(), b.subtree.as_ref(), path, out)
        }
        (Some(a), Some(b)) => {
            record(out, shown(b), Change::Type);
            out.removed.add(a);
            out.added.add(b);
            compare(repo, a.subtree.as_ref(), b.subtree.as_ref(), path, out)
        }
        (Some(a), None) => {
            record(out, shown(a), Change::Removed);
            out.removed.add(a);
            compare(repo, a.subtree.as_ref(), None, path, out)
        }
        (None, Some(b)) => {
            record(out, shown(b), Change::Added);
            out.added.add(b);
            compare(repo, None, b.subtree.as_ref(), path, out)
        }
        (None, None) => Ok(()),
    }
}

fn record(out: &mut Diff, path: String, change: Change) {
    out.changes.push(Difference { path, change });
}

/// Whether two entries of the same kind agree on everything a restore sets besides contents.
fn same_metadata(a: &Node, b: &Node) -> bool {
    (a.mode, a.uid, a.gid, a.mtime_ns, a.size, a.rdev)
        == (b.mode, b.uid, b.gid, b.mtime_ns, b.size, b.rdev)
        && a.target == b.target
        && a.xattrs == b.xattrs
}
