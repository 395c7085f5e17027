//! File-system metadata: reading an entry into a [`Node`] on backup, and applying a node's
//! metadata back on restore. Symlinks are never followed.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nix::fcntl::{AT_FDCWD, AtFlags};
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Group, Uid, User, fchownat};

use crate::tree::{Node, NodeKind, RawBytes, Xattr};

/// Caches uid → user name and gid → group name look-ups.
#[derive(Default)]
pub struct OwnerNames {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl OwnerNames {
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                User::from_uid(Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                Group::from_gid(Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// The kind of an entry, or `None` for sockets (which cannot be restored meaningfully).
pub fn node_kind(meta: &Metadata) -> Option<NodeKind> {
    let t = meta.file_type();
    Some(if t.is_file() {
        NodeKind::File
    } else if t.is_dir() {
        NodeKind::Dir
    } else if t.is_symlink() {
        NodeKind::Symlink
    } else if t.is_fifo() {
        NodeKind::Fifo
    } else if t.is_char_device() {
        NodeKind::Chardev
    } else if t.is_block_device() {
        NodeKind::Blockdev
    } else {
        return None;
    })
}

/// A file's size, modification and status-change times (ns since the epoch): what shows that
/// it changed.
pub type ChangeStamp = (u64, i64, i64);

/// The [`ChangeStamp`] of an entry, as recorded in its [`Node`].
pub fn change_stamp(meta: &Metadata) -> ChangeStamp {
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    (
        meta.size(),
        ns(meta.mtime(), meta.mtime_nsec()),
        ns(meta.ctime(), meta.ctime_nsec()),
    )
}

/// The node for an entry, without contents, subtree or symlink target.
pub fn node_from(
    name: RawBytes,
    kind: NodeKind,
    meta: &Metadata,
    path: &Path,
    names: &mut OwnerNames,
) -> Node {
    let (size, mtime_ns, ctime_ns) = change_stamp(meta);
    Node {
        name,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: names.user(meta.uid()),
        group: names.group(meta.gid()),
        mtime_ns,
        ctime_ns,
        size,
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        rdev: if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
            meta.rdev()
        } else {
            0
        },
        content: vec![],
        subtree: None,
        target: None,
        xattrs: read_xattrs(path),
    }
}

/// The `user.*` extended attributes of an entry (not following symlinks), sorted by name.
pub fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return vec![];
    };
    let mut out: Vec<Xattr> = names
        .filter(|n| n.as_encoded_bytes().starts_with(b"user."))
        .filter_map(|n| {
            let value = xattr::get(path, &n).ok().flatten()?;
            Some(Xattr {
                name: RawBytes::from_os(&n),
                value: B64.encode(value),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Applies ownership (when `chown`), mode, user xattrs and times of `node` to `path`; returns the
/// first failure, after trying everything.
pub fn apply(path: &Path, node: &Node, chown: bool) -> std::io::Result<()> {
    let mut first_err: Option<std::io::Error> = None;
    let mut note = |r: std::io::Result<()>| {
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    };
    if chown {
        note(
            fchownat(
                AT_FDCWD,
                path,
                Some(Uid::from_raw(node.uid)),
                Some(Gid::from_raw(node.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(std::io::Error::from),
        );
    }
    if node.kind != NodeKind::Symlink {
        for x in &node.xattrs {
            let value = B64.decode(&x.value).map_err(std::io::Error::other);
            note(value.and_then(|v| xattr::set(path, x.name.as_os(), &v)));
        }
        note(std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(node.mode),
        ));
    }
    note(
        utimensat(
            AT_FDCWD,
            path,
            &timespec(node.mtime_ns),
            &timespec(node.mtime_ns),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from),
    );
    first_err.map_or(Ok(()), Err)
}
