//! Trees: one JSON document per directory, listing its entries sorted by name with everything a
//! restore needs. Stored as tree blobs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::id::Id;

/// Raw bytes from the file system (names, link targets): a JSON string when they are valid
/// UTF-8, otherwise `{"b64": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RawBytes(pub Vec<u8>);

impl RawBytes {
    /// From an OS string.
    pub fn from_os(s: &OsStr) -> Self {
        RawBytes(s.as_bytes().to_vec())
    }

    /// As an OS string.
    pub fn as_os(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// For display (invalid UTF-8 replaced).
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawRepr {
    Text(String),
    Binary { b64: String },
}

impl Serialize for RawBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => RawRepr::Text(t.to_owned()),
            Err(_) => RawRepr::Binary {
                b64: B64.encode(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RawBytes(match RawRepr::deserialize(d)? {
            RawRepr::Text(t) => t.into_bytes(),
            RawRepr::Binary { b64 } => B64.decode(b64).map_err(serde::de::Error::custom)?,
        }))
    }
}

/// What kind of file system entry a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Chardev,
    /// Block device.
    Blockdev,
}

/// An extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name (e.g. `user.comment`).
    pub name: RawBytes,
    /// Value, base64.
    pub value: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name within its directory.
    pub name: RawBytes,
    /// Entry kind.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, if known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Group name, if known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the Unix epoch (change detection only).
    pub ctime_ns: i64,
    /// Size in bytes (files: content length; symlinks: target length).
    pub size: u64,
    /// Inode number on the source.
    pub inode: u64,
    /// Device id of the source file system.
    pub device: u64,
    /// Hard-link count on the source; entries with `links > 1` and the same (device, inode) are
    /// one file.
    pub links: u64,
    /// Device number of a char/block device.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// File contents: data blob ids in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// Directory contents: the tree blob id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// Symlink target, never followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RawBytes>,
    /// User extended attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// The node of an entry made in memory rather than read from a file system (a stream
    /// backed up as a file, the folders holding it): owned by root, with these permissions
    /// and time, and nothing else set.
    pub fn made(name: RawBytes, kind: NodeKind, mode: u32, mtime_ns: i64) -> Node {
        Node {
            name,
            kind,
            mode,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns,
            ctime_ns: mtime_ns,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            content: vec![],
            subtree: None,
            target: None,
            xattrs: vec![],
        }
    }

    /// Whether this node is one of several hard links to the same file.
    pub fn is_hardlinked(&self) -> bool {
        self.kind == NodeKind::File && self.links > 1
    }
}

/// A directory listing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries, sorted by name bytes, names unique.
    pub nodes: Vec<Node>,
}

/// Whether `name` is a single safe path component: not empty, `.` or `..`, and without `/` or
/// NUL, so that joining it to a directory can never leave that directory.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// JSON form, as stored in a tree blob.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("trees serialize")
    }

    /// Parses and validates a tree blob: every name must be safe and the names strictly sorted.
    pub fn decode(id: &Id, bytes: &[u8]) -> Result<Tree> {
        let tree: Tree =
            serde_json::from_slice(bytes).map_err(|e| Error::damaged("tree", id, e))?;
        for node in &tree.nodes {
            if !is_safe_name(&node.name.0) {
                return Err(Error::UnsafeName {
                    name: node.name.lossy(),
                });
            }
        }
        if tree.nodes.windows(2).any(|w| w[0].name >= w[1].name) {
            return Err(Error::damaged(
                "tree",
                id,
                "entries are not sorted or not unique",
            ));
        }
        Ok(tree)
    }
}

impl Tree {
    /// The entry named `name` (entries are sorted, so this is a binary search).
    pub fn find(&self, name: &RawBytes) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// A path inside a snapshot, as its components.
pub type SnapshotPath = Vec<RawBytes>;

/// Splits a user-given path inside a snapshot (`a/b/c`, leading `/` allowed) into components.
pub fn parse_snapshot_path(p: &[u8]) -> SnapshotPath {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| RawBytes(c.to_vec()))
        .collect()
}

/// Shows a snapshot path as `/a/b`.
pub fn display_path(p: &[RawBytes]) -> String {
    p.iter()
        .fold(String::new(), |acc, c| acc + "/" + &c.lossy())
}

/// How many folders deep below a path given a backup descends (deeper folders are stored
/// empty, with an error: a tenant's endlessly nested folders never exhaust the walk's stack or
/// descriptors), and so how deep a walk follows a snapshot's trees: a deeper chain of trees, which
/// only a forged snapshot holds, is unreadable there rather than exhausting the stack.
pub const MAX_DEPTH: usize = 1000;

/// Visits every node below tree `id` depth first, in name order, loading each tree with `load`
/// (a repository's, or any other source of them); `visit` gets each node's path and returns
/// whether to descend into it (for directories). When a subtree cannot be loaded, `unreadable`
/// gets the directory's path and the error, and decides whether to go on (`Ok`).
pub fn walk_trees(
    load: &dyn Fn(&Id) -> Result<Tree>,
    id: &Id,
    path: &mut SnapshotPath,
    visit: &mut dyn FnMut(&[RawBytes], &Node) -> Result<bool>,
    unreadable: &mut dyn FnMut(&[RawBytes], Error) -> Result<()>,
) -> Result<()> {
    for node in load(id)?.nodes {
        path.push(node.name.clone());
        if visit(path, &node)?
            && let Some(sub) = &node.subtree
        {
            // a root entry and MAX_DEPTH folders below it: no backup makes more
            let walked = match path.len() > MAX_DEPTH + 1 {
                true => Err(Error::damaged(
                    "tree",
                    sub,
                    format!("folders nested more than {MAX_DEPTH} deep, which no backup makes"),
                )),
                false => walk_trees(load, sub, path, visit, unreadable),
            };
            if let Err(e) = walked {
                unreadable(path, e)?;
            }
        }
        path.pop();
    }
    Ok(())
}

/// An `unreadable` handler for [`walk_trees`] that stops at the first unreadable tree.
pub fn stop_at_damage(_: &[RawBytes], e: Error) -> Result<()> {
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8]) -> Node {
        Node {
            uid: 1,
            gid: 2,
            ctime_ns: 2,
            inode: 3,
            device: 4,
            ..Node::made(RawBytes(name.to_vec()), NodeKind::File, 0o644, 1)
        }
    }

    #[test]
    fn a_walk_stops_at_trees_nested_deeper_than_any_backup_makes() {
        // a forged tree that holds itself: nested without end
        let id = Id([7; 32]);
        let looped = Tree {
            nodes: vec![Node {
                kind: NodeKind::Dir,
                subtree: Some(id),
                ..node(b"d")
            }],
        };
        let (mut visited, mut unreadable) = (0, vec![]);
        walk_trees(
            &|_| Ok(looped.clone()),
            &id,
            &mut vec![],
            &mut |_, _| {
                visited += 1;
                Ok(true)
            },
            &mut |path, e| {
                unreadable.push((path.len(), e.to_string()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            visited,
            MAX_DEPTH + 2,
            "a root entry and the folders below it"
        );
        assert_eq!(unreadable.len(), 1);
        assert_eq!(unreadable[0].0, MAX_DEPTH + 2);
        assert!(
            unreadable[0].1.contains("nested more than 1000 deep"),
            "{:?}",
            unreadable
        );
    }

    #[test]
    fn binary_names_round_trip() {
        let tree = Tree {
            nodes: vec![node(b"a b\n"), node(b"caf\xe9"), node("é".as_bytes())],
        };
        let json = String::from_utf8(tree.encode()).unwrap();
        assert!(json.contains(r#""name":{"b64":"Y2Fm6Q=="}"#), "{json}");
        assert_eq!(Tree::decode(&Id::default(), json.as_bytes()).unwrap(), tree);
    }

    #[test]
    fn unsafe_or_unsorted_trees_are_refused() {
        for bad in [&b".."[..], b".", b"", b"a/b", b"/etc", b"a\0"] {
            let t = Tree {
                nodes: vec![node(bad)],
            };
            assert!(matches!(
                Tree::decode(&Id::default(), &t.encode()),
                Err(Error::UnsafeName { .. })
            ));
        }
        let unsorted = Tree {
            nodes: vec![node(b"b"), node(b"a")],
        };
        assert!(Tree::decode(&Id::default(), &unsorted.encode()).is_err());
        let dup = Tree {
            nodes: vec![node(b"a"), node(b"a")],
        };
        assert!(Tree::decode(&Id::default(), &dup.encode()).is_err());
    }
}
