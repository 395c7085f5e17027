//! The read-only file system that `cairn mount` shows, apart from FUSE: every snapshot as a
//! folder (`snapshots/<time>_<id>`, `snapshots/latest`), and links to them by host, tag and id
//! (`hosts/<host>/…`, `tags/<tag>/…`, `ids/<id>`). Below a snapshot, its trees with the
//! metadata they store. Files are read blob by blob on demand, only the blobs a read needs,
//! each one authenticated and checked against its id as a restore does; recently read blobs
//! stay in a small cache, so sequential reads fetch each blob once. A blob that fails
//! verification fails the read (logged), never gives wrong bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::Error;
use crate::format::id::Id;
use crate::format::snapshot::{Snapshot, SnapshotFilter};
use crate::format::tree::{self, Node, NodeKind, Tree};
use crate::repository::Repository;
use crate::repository::store::ObjectKind;

/// Inode number of the root folder.
pub const ROOT: u64 = 1;
/// How long a listing of the repository's snapshots is used before it is listed again.
const RELIST_AFTER: Duration = Duration::from_secs(2);
/// Bytes of decoded blobs kept for reads (at least the last one, whatever its size).
const BLOB_CACHE_BYTES: usize = 32 << 20;
/// Decoded trees kept.
const TREE_CACHE_ENTRIES: usize = 256;
/// Most entries one [`SnapshotFs::list`] call returns.
const LIST_BATCH: usize = 512;

/// An extended attribute: its name and value.
pub type NamedValue = (Vec<u8>, Vec<u8>);

/// Why an operation has no answer (the FUSE glue turns it into an errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such entry (ENOENT).
    NoEntry,
    /// Not a folder (ENOTDIR).
    NotDir,
    /// Not what the operation needs: reading a folder, a link target of a file (EINVAL).
    Invalid,
    /// The repository gave damaged or no data; logged with the reason (EIO).
    Damaged,
}

/// The attributes of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number in the mount.
    pub ino: u64,
    /// Entry kind.
    pub kind: NodeKind,
    /// Permission bits with setuid, setgid and sticky.
    pub perm: u32,
    /// Bytes (files: contents; symlinks: target length).
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard-link count.
    pub links: u64,
    /// Device number of a device node.
    pub rdev: u64,
}

/// Which grouping a folder of links shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Group {
    Host,
    Tag,
}

/// What an inode is.
#[derive(Clone, Debug)]
enum What {
    Root,
    /// `snapshots/`
    Snapshots,
    /// `hosts/` or `tags/`
    Groups(Group),
    /// `hosts/<host>/` or `tags/<tag>/`
    Group(Group, String),
    /// `ids/`
    Ids,
    /// A link made by the mount (to a snapshot's folder).
    Link {
        target: String,
        time_ns: i64,
    },
    /// A snapshot's folder: the entries of its root tree.
    Snapshot {
        tree: Id,
        time_ns: i64,
    },
    /// An entry of a snapshot's tree; `snapshot` is the inode of its snapshot's folder.
    Entry {
        node: Arc<Node>,
        snapshot: u64,
    },
}

struct Inode {
    parent: u64,
    name: Vec<u8>,
    what: What,
}

/// How an inode is found again: by parent and name, or, for hard-linked files, by the file
/// they all are in their snapshot (so that they share the inode, as on the source).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Child(u64, Vec<u8>),
    Linked {
        snapshot: u64,
        device: u64,
        inode: u64,
    },
}

/// A snapshot shown, with its folder name.
struct Listed {
    id: Id,
    snapshot: Snapshot,
    name: String,
}

#[derive(Default)]
struct State {
    inodes: Vec<Inode>,
    keys: HashMap<Key, u64>,
    /// The snapshots shown, oldest first.
    listed: Vec<Listed>,
    /// Every snapshot id looked at (shown, filtered out or unreadable): not loaded again.
    seen: HashSet<Id>,
    listed_at: Option<Instant>,
}

/// A small least-recently-used cache by blob id, bounded by a weight (bytes, or entries).
struct Lru<V> {
    items: VecDeque<(Id, V, usize)>,
    weight: usize,
    budget: usize,
}

impl<V: Clone> Lru<V> {
    fn new(budget: usize) -> Self {
        Lru {
            items: VecDeque::new(),
            weight: 0,
            budget,
        }
    }

    fn get(&mut self, id: &Id) -> Option<V> {
        let at = self.items.iter().position(|(i, _, _)| i == id)?;
        let item = self.items.remove(at).expect("position is valid");
        let v = item.1.clone();
        self.items.push_back(item);
        Some(v)
    }

    fn put(&mut self, id: Id, v: V, weight: usize) {
        if self.items.iter().any(|(i, _, _)| *i == id) {
            return;
        }
        self.items.push_back((id, v, weight));
        self.weight += weight;
        while self.weight > self.budget && self.items.len() > 1 {
            let (_, _, w) = self.items.pop_front().expect("not empty");
            self.weight -= w;
        }
    }
}

/// The snapshots of a repository as a read-only file system, by inode number.
pub struct SnapshotFs {
    repo: Repository,
    filter: SnapshotFilter,
    state: Mutex<State>,
    trees: Mutex<Lru<Arc<Tree>>>,
    blobs: Mutex<Lru<Arc<Vec<u8>>>>,
    /// Per file inode: where each of its blobs ends in the file.
    ends: Mutex<HashMap<u64, Arc<Vec<u64>>>>,
    /// Owner of the folders and links the mount makes up.
    owner: (u32, u32),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The folder names of snapshots: `<time>_<short id>`, the time in UTC to the second (sorts
/// in time order), the full id for snapshots whose names would otherwise be the same.
fn folder_names(snapshots: &[(Id, Snapshot)]) -> Vec<String> {
    let name = |id: &Id, s: &Snapshot, full: bool| {
        let id = if full { id.to_hex() } else { id.short() };
        format!("{}_{id}", s.time.format("%Y-%m-%dT%H:%M:%SZ"))
    };
    let mut count: HashMap<String, usize> = HashMap::new();
    for (id, s) in snapshots {
        *count.entry(name(id, s, false)).or_default() += 1;
    }
    snapshots
        .iter()
        .map(|(id, s)| {
            let short = name(id, s, false);
            if count[&short] > 1 {
                name(id, s, true)
            } else {
                short
            }
        })
        .collect()
}

fn time_ns(s: &Snapshot) -> i64 {
    s.time.timestamp_nanos_opt().unwrap_or(0)
}

impl SnapshotFs {
    /// The snapshots of `repo` that `filter` selects; fails if they cannot be listed.
    pub fn new(repo: Repository, filter: SnapshotFilter) -> crate::Result<SnapshotFs> {
        let fs = SnapshotFs {
            repo,
            filter,
            state: Mutex::new(State::default()),
            trees: Mutex::new(Lru::new(TREE_CACHE_ENTRIES)),
            blobs: Mutex::new(Lru::new(BLOB_CACHE_BYTES)),
            ends: Mutex::new(HashMap::new()),
            owner: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        {
            let mut st = lock(&fs.state);
            st.inodes.push(Inode {
                parent: ROOT,
                name: vec![],
                what: What::Root,
            });
            fs.relist(&mut st)?;
        }
        Ok(fs)
    }

    /// How many snapshots are shown.
    pub fn snapshot_count(&self) -> usize {
        lock(&self.state).listed.len()
    }

    /// Lists the repository's snapshots again: loads the new ones, drops the forgotten ones.
    fn relist(&self, st: &mut State) -> crate::Result<()> {
        st.listed_at = Some(Instant::now());
        let ids: HashSet<Id> = self
            .repo
            .store()
            .ids(ObjectKind::Snapshot)?
            .into_iter()
            .collect();
        st.listed.retain(|l| ids.contains(&l.id));
        let new: Vec<Id> = ids
            .iter()
            .filter(|id| !st.seen.contains(id))
            .copied()
            .collect();
        if new.is_empty() && !st.listed.is_empty() {
            return Ok(());
        }
        st.seen.extend(new.iter().copied());
        let loaded = Snapshot::load_some(&self.repo, new)?;
        let fresh = loaded.iter().any(|(_, s)| self.filter.matches(s));
        let mut all: Vec<(Id, Snapshot)> = std::mem::take(&mut st.listed)
            .into_iter()
            .map(|l| (l.id, l.snapshot))
            .chain(loaded.into_iter().filter(|(_, s)| self.filter.matches(s)))
            .collect();
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        let names = folder_names(&all);
        st.listed = all
            .into_iter()
            .zip(names)
            .map(|((id, snapshot), name)| Listed { id, snapshot, name })
            .collect();
        if fresh && st.inodes.len() > 1 {
            // the new snapshots' blobs are in index segments written since the mount
            if let Err(e) = self.repo.sync_index() {
                tracing::warn!("cannot read the repository's new index segments: {e}");
            }
        }
        Ok(())
    }

    /// The state, with the snapshot listing brought up to date if it is old.
    fn state_listed(&self) -> MutexGuard<'_, State> {
        let mut st = lock(&self.state);
        if st.listed_at.is_none_or(|at| at.elapsed() >= RELIST_AFTER)
            && let Err(e) = self.relist(&mut st)
        {
            tracing::warn!(
                "cannot list the repository's snapshots again (showing the last listing): {e}"
            );
        }
        st
    }

    fn what(&self, ino: u64) -> Result<(What, u64), Refusal> {
        let st = lock(&self.state);
        let i = usize::try_from(ino.wrapping_sub(1)).map_err(|_| Refusal::NoEntry)?;
        st.inodes
            .get(i)
            .map(|n| (n.what.clone(), n.parent))
            .ok_or(Refusal::NoEntry)
    }

    /// The path of an inode inside the mount, for messages.
    fn path(&self, mut ino: u64) -> String {
        let st = lock(&self.state);
        let mut parts = vec![];
        while ino != ROOT {
            let Some(n) = st.inodes.get(ino as usize - 1) else {
                break;
            };
            parts.push(String::from_utf8_lossy(&n.name).into_owned());
            ino = n.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// The inode of `name` in `parent` with `what`, made on first use; a made-up entry (a
    /// link, a group) takes its latest `what`.
    fn inode(st: &mut State, parent: u64, name: &[u8], what: What) -> u64 {
        let key = match &what {
            What::Entry { node, snapshot } if node.is_hardlinked() => Key::Linked {
                snapshot: *snapshot,
                device: node.device,
                inode: node.inode,
            },
            _ => Key::Child(parent, name.to_vec()),
        };
        if let Some(&ino) = st.keys.get(&key) {
            if !matches!(what, What::Entry { .. }) {
                st.inodes[ino as usize - 1].what = what;
            }
            return ino;
        }
        st.inodes.push(Inode {
            parent,
            name: name.to_vec(),
            what,
        });
        let ino = st.inodes.len() as u64;
        st.keys.insert(key, ino);
        ino
    }

    /// The entries of a made-up folder (root, snapshots, groups, ids), in name order.
    fn made_up_children(st: &State, what: &What) -> Vec<(Vec<u8>, What)> {
        // a link to a snapshot's folder, from a folder `up` below the root
        let link = |l: &Listed, up: &str| What::Link {
            target: format!("{up}{}", l.name),
            time_ns: time_ns(&l.snapshot),
        };
        let sorted = |mut v: Vec<(Vec<u8>, What)>| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let latest =
            |newest: Option<&Listed>, up: &str| newest.map(|l| (b"latest".to_vec(), link(l, up)));
        match what {
            What::Root => vec![
                (b"hosts".to_vec(), What::Groups(Group::Host)),
                (b"ids".to_vec(), What::Ids),
                (b"snapshots".to_vec(), What::Snapshots),
                (b"tags".to_vec(), What::Groups(Group::Tag)),
            ],
            What::Snapshots => sorted(
                st.listed
                    .iter()
                    .map(|l| {
                        let what = What::Snapshot {
                            tree: l.snapshot.tree,
                            time_ns: time_ns(&l.snapshot),
                        };
                        (l.name.clone().into_bytes(), what)
                    })
                    .chain(latest(st.listed.last(), ""))
                    .collect(),
            ),
            What::Groups(g) => {
                let mut names: Vec<&String> = st
                    .listed
                    .iter()
                    .flat_map(|l| match g {
                        Group::Host => std::slice::from_ref(&l.snapshot.host),
                        Group::Tag => l.snapshot.tags.as_slice(),
                    })
                    .filter(|n| tree::is_safe_name(n.as_bytes()))
                    .collect();
                names.sort();
                names.dedup();
                names
                    .into_iter()
                    .map(|n| (n.clone().into_bytes(), What::Group(*g, n.clone())))
                    .collect()
            }
            What::Group(g, value) => {
                let members: Vec<&Listed> = st
                    .listed
                    .iter()
                    .filter(|l| match g {
                        Group::Host => l.snapshot.host == *value,
                        Group::Tag => l.snapshot.tags.contains(value),
                    })
                    .collect();
                let up = "../../snapshots/";
                sorted(
                    members
                        .iter()
                        .map(|l| (l.name.clone().into_bytes(), link(l, up)))
                        .chain(latest(members.last().copied(), up))
                        .collect(),
                )
            }
            // by the id part of the folder name: the short id, or the full one where needed
            What::Ids => sorted(
                st.listed
                    .iter()
                    .map(|l| {
                        let id = l.name.rsplit('_').next().unwrap_or_default();
                        (id.as_bytes().to_vec(), link(l, "../snapshots/"))
                    })
                    .collect(),
            ),
            _ => vec![],
        }
    }

    /// The tree holding the entries of a folder inode, if it is one from a snapshot.
    fn tree_of(&self, ino: u64, what: &What) -> Result<Option<(Arc<Tree>, u64)>, Refusal> {
        let (id, snapshot) = match what {
            What::Snapshot { tree, .. } => (*tree, ino),
            What::Entry { node, snapshot } if node.kind == NodeKind::Dir => match node.subtree {
                Some(t) => (t, *snapshot),
                None => return Ok(Some((Arc::new(Tree::default()), *snapshot))),
            },
            What::Entry { .. } | What::Link { .. } => return Err(Refusal::NotDir),
            _ => return Ok(None),
        };
        if let Some(t) = lock(&self.trees).get(&id) {
            return Ok(Some((t, snapshot)));
        }
        let t = Arc::new(Tree::load(&self.repo, &id).map_err(|e| {
            tracing::error!("cannot list {}: {e}", self.path(ino));
            Refusal::Damaged
        })?);
        lock(&self.trees).put(id, t.clone(), 1);
        Ok(Some((t, snapshot)))
    }

    /// Looks up `name` in folder `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, Refusal> {
        let (what, _) = self.what(parent)?;
        if let Some((tree, snapshot)) = self.tree_of(parent, &what)? {
            let node = tree
                .find(&tree::RawBytes(name.to_vec()))
                .ok_or(Refusal::NoEntry)?;
            let what = What::Entry {
                node: Arc::new(node.clone()),
                snapshot,
            };
            let ino = Self::inode(&mut lock(&self.state), parent, name, what);
            return self.attr(ino);
        }
        let mut st = self.state_listed();
        let (_, child) = Self::made_up_children(&st, &what)
            .into_iter()
            .find(|(n, _)| n == name)
            .ok_or(Refusal::NoEntry)?;
        let ino = Self::inode(&mut st, parent, name, child);
        drop(st);
        self.attr(ino)
    }

    /// Up to a batch of the entries of folder `dir` from the `skip`th on, in name order: name,
    /// inode and kind (an empty batch: no more).
    pub fn list(&self, dir: u64, skip: usize) -> Result<Vec<(Vec<u8>, u64, NodeKind)>, Refusal> {
        let (what, _) = self.what(dir)?;
        if let Some((tree, snapshot)) = self.tree_of(dir, &what)? {
            let mut st = lock(&self.state);
            return Ok(tree
                .nodes
                .iter()
                .skip(skip)
                .take(LIST_BATCH)
                .map(|node| {
                    let what = What::Entry {
                        node: Arc::new(node.clone()),
                        snapshot,
                    };
                    let ino = Self::inode(&mut st, dir, &node.name.0, what);
                    (node.name.0.clone(), ino, node.kind)
                })
                .collect());
        }
        let mut st = self.state_listed();
        Ok(Self::made_up_children(&st, &what)
            .into_iter()
            .skip(skip)
            .take(LIST_BATCH)
            .map(|(name, what)| {
                let kind = match what {
                    What::Link { .. } => NodeKind::Symlink,
                    _ => NodeKind::Dir,
                };
                let ino = Self::inode(&mut st, dir, &name, what);
                (name, ino, kind)
            })
            .collect())
    }

    /// The folder holding `ino` (the root for the root).
    pub fn parent(&self, ino: u64) -> Result<u64, Refusal> {
        self.what(ino).map(|(_, parent)| parent)
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, Refusal> {
        let (what, _) = self.what(ino)?;
        let newest = || {
            lock(&self.state)
                .listed
                .last()
                .map(|l| time_ns(&l.snapshot))
                .unwrap_or(0)
        };
        let folder = |time_ns: i64| Attr {
            ino,
            kind: NodeKind::Dir,
            perm: 0o555,
            size: 0,
            mtime_ns: time_ns,
            ctime_ns: time_ns,
            uid: self.owner.0,
            gid: self.owner.1,
            links: 2,
            rdev: 0,
        };
        Ok(match what {
            What::Root | What::Snapshots | What::Groups(_) | What::Ids | What::Group(..) => {
                folder(newest())
            }
            What::Snapshot { time_ns, .. } => folder(time_ns),
            What::Link { target, time_ns } => Attr {
                kind: NodeKind::Symlink,
                perm: 0o777,
                size: target.len() as u64,
                links: 1,
                ..folder(time_ns)
            },
            What::Entry { node, .. } => Attr {
                ino,
                kind: node.kind,
                perm: node.mode & 0o7777,
                size: node.size,
                mtime_ns: node.mtime_ns,
                ctime_ns: node.ctime_ns,
                uid: node.uid,
                gid: node.gid,
                links: node.links.max(1),
                rdev: node.rdev,
            },
        })
    }

    /// The target of symlink `ino`.
    pub fn read_link(&self, ino: u64) -> Result<Vec<u8>, Refusal> {
        match self.what(ino)?.0 {
            What::Link { target, .. } => Ok(target.into_bytes()),
            What::Entry { node, .. } => node
                .target
                .as_ref()
                .map(|t| t.0.clone())
                .ok_or(Refusal::Invalid),
            _ => Err(Refusal::Invalid),
        }
    }

    /// The user extended attributes of `ino` stored in its snapshot: names and values.
    pub fn xattrs(&self, ino: u64) -> Result<Vec<NamedValue>, Refusal> {
        Ok(match self.what(ino)?.0 {
            What::Entry { node, .. } => node
                .xattrs
                .iter()
                .filter_map(|x| Some((x.name.0.clone(), B64.decode(&x.value).ok()?)))
                .collect(),
            _ => vec![],
        })
    }

    /// Up to `size` bytes of file `ino` from `offset` (fewer at its end).
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Refusal> {
        let node = match self.what(ino)?.0 {
            What::Entry { node, .. } if node.kind == NodeKind::File => node,
            _ => return Err(Refusal::Invalid),
        };
        let end = offset.saturating_add(u64::from(size)).min(node.size);
        if offset >= end {
            return Ok(vec![]);
        }
        let ends = self.blob_ends(ino, &node)?;
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        // the first blob that ends after `offset`
        let mut i = ends.partition_point(|&e| e <= offset);
        while at < end {
            let (Some(id), Some(&blob_end)) = (node.content.get(i), ends.get(i)) else {
                break;
            };
            let blob_start = if i == 0 { 0 } else { ends[i - 1] };
            let data = self.blob(ino, id)?;
            let from = (at - blob_start) as usize;
            let to = (end.min(blob_end) - blob_start) as usize;
            // the blob verified, but its length is not the one the index gave for the file's
            // layout (an index changed since): refuse rather than guess
            let Some(part) = data.get(from..to) else {
                tracing::error!(
                    "cannot read {}: blob {id} is not as long as the index said",
                    self.path(ino)
                );
                return Err(Refusal::Damaged);
            };
            out.extend_from_slice(part);
            at = blob_start + to as u64;
            i += 1;
        }
        Ok(out)
    }

    /// Where each blob of a file ends in it (its blobs' sizes from the index, summed), checked
    /// against the file's size.
    fn blob_ends(&self, ino: u64, node: &Node) -> Result<Arc<Vec<u64>>, Refusal> {
        if let Some(e) = lock(&self.ends).get(&ino) {
            return Ok(e.clone());
        }
        let mut ends = Vec::with_capacity(node.content.len());
        let mut total = 0u64;
        for id in &node.content {
            let loc = self.locate(ino, id)?;
            total += u64::from(loc.blob.raw_len);
            ends.push(total);
        }
        if total != node.size {
            tracing::error!(
                "cannot read {}: its blobs hold {total} bytes but the snapshot says {}; the tree is damaged",
                self.path(ino),
                node.size
            );
            return Err(Refusal::Damaged);
        }
        let ends = Arc::new(ends);
        lock(&self.ends).insert(ino, ends.clone());
        Ok(ends)
    }

    /// Where blob `id` of file `ino` is; the index is read again once if it does not know it
    /// (a snapshot made since the mount).
    fn locate(
        &self,
        ino: u64,
        id: &Id,
    ) -> Result<crate::repository::local_index::BlobLocation, Refusal> {
        let located = self.repo.locate(id).or_else(|e| match e {
            Error::MissingBlob { .. } => self.repo.sync_index().and_then(|()| self.repo.locate(id)),
            e => Err(e),
        });
        located.map_err(|e| {
            tracing::error!("cannot read {}: {e}", self.path(ino));
            Refusal::Damaged
        })
    }

    /// Blob `id` of file `ino`, decrypted and verified (from the cache if read lately).
    fn blob(&self, ino: u64, id: &Id) -> Result<Arc<Vec<u8>>, Refusal> {
        if let Some(b) = lock(&self.blobs).get(id) {
            return Ok(b);
        }
        let loc = self.locate(ino, id)?;
        let data = self.repo.read_blob_at(id, &loc).map_err(|e| {
            tracing::error!("cannot read {}: {e}", self.path(ino));
            Refusal::Damaged
        })?;
        let data = Arc::new(data);
        lock(&self.blobs).put(*id, data.clone(), data.len());
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{SNAPSHOT_VERSION, Summary};

    fn snapshot(secs: i64) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: chrono::DateTime::from_timestamp(secs, 500).unwrap(),
            host: "h".into(),
            user: "u".into(),
            paths: vec![],
            tags: vec![],
            tree: Id([0; 32]),
            parent: None,
            original: None,
            summary: Summary::default(),
            program: String::new(),
        }
    }

    #[test]
    fn folder_names_sort_by_time_and_stay_unique_within_a_second() {
        let mut a = [7u8; 32];
        let mut b = a;
        b[31] = 8;
        let c = [9u8; 32];
        a[0] = 1;
        b[0] = 1;
        let snaps = [
            (Id(a), snapshot(1_800_000_000)),
            (Id(b), snapshot(1_800_000_000)),
            (Id(c), snapshot(1_800_000_001)),
        ];
        let names = folder_names(&snaps);
        assert_eq!(names[2], "2027-01-15T08:00:01Z_09090909");
        // same second and same short id: the full ids keep them apart
        assert_eq!(names[0], format!("2027-01-15T08:00:00Z_{}", Id(a).to_hex()));
        assert_ne!(names[0], names[1]);
        assert!(names.iter().all(|n| tree::is_safe_name(n.as_bytes())));
    }

    #[test]
    fn the_cache_keeps_the_latest_within_its_budget() {
        let mut lru = Lru::new(10);
        for i in 0..4u8 {
            lru.put(Id([i; 32]), i, 4);
        }
        assert_eq!(lru.get(&Id([0; 32])), None);
        assert_eq!(lru.get(&Id([2; 32])), Some(2));
        assert_eq!(lru.get(&Id([3; 32])), Some(3));
        lru.put(Id([9; 32]), 9, 100);
        assert_eq!(
            lru.get(&Id([9; 32])),
            Some(9),
            "one item over budget is kept"
        );
        assert_eq!(lru.get(&Id([3; 32])), None);
    }
}
