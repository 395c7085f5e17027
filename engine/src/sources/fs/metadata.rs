//! File-system metadata: reading an entry into a [`Node`] on backup, and applying a node's
//! metadata back on restore, through descriptors or by name in
//! an open folder ([`dirfd`]). Symlinks are never followed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nix::fcntl::AtFlags;
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Group, Uid, User, fchown, fchownat};
use xattr::FileExt;

use crate::format::tree::{Node, NodeKind, RawBytes, Xattr};
use crate::sources::fs::dirfd;

/// Caches uid → user name and gid → group name look-ups (shared by the threads of a walk).
#[derive(Default)]
pub struct OwnerNames {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl OwnerNames {
    fn user(&self, uid: u32) -> String {
        let mut users = self.users.lock().expect("lock");
        users
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

    fn group(&self, gid: u32) -> String {
        let mut groups = self.groups.lock().expect("lock");
        groups
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
pub fn node_kind(st: &FileStat) -> Option<NodeKind> {
    Some(match dirfd::kind(st) {
        SFlag::S_IFREG => NodeKind::File,
        SFlag::S_IFDIR => NodeKind::Dir,
        SFlag::S_IFLNK => NodeKind::Symlink,
        SFlag::S_IFIFO => NodeKind::Fifo,
        SFlag::S_IFCHR => NodeKind::Chardev,
        SFlag::S_IFBLK => NodeKind::Blockdev,
        _ => return None,
    })
}

/// A file's size, modification and status-change times (ns since the epoch): what shows that
/// it changed.
pub type ChangeStamp = (u64, i64, i64);

/// The [`ChangeStamp`] of an entry, as recorded in its [`Node`].
pub fn change_stamp(st: &FileStat) -> ChangeStamp {
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    (
        st.st_size as u64,
        ns(st.st_mtime, st.st_mtime_nsec),
        ns(st.st_ctime, st.st_ctime_nsec),
    )
}

/// The node for an entry, without contents, subtree, symlink target or extended attributes.
pub fn node_from(name: RawBytes, kind: NodeKind, st: &FileStat, names: &OwnerNames) -> Node {
    let (size, mtime_ns, ctime_ns) = change_stamp(st);
    Node {
        name,
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        user: names.user(st.st_uid),
        group: names.group(st.st_gid),
        mtime_ns,
        ctime_ns,
        size,
        inode: st.st_ino,
        device: st.st_dev,
        links: st.st_nlink,
        rdev: if matches!(kind, NodeKind::Chardev | NodeKind::Blockdev) {
            st.st_rdev
        } else {
            0
        },
        content: vec![],
        subtree: None,
        target: None,
        xattrs: vec![],
    }
}

/// The `user.*` extended attributes of an open file or folder, sorted by name (other entries
/// cannot have any).
pub fn read_xattrs(file: &File) -> Vec<Xattr> {
    let Ok(names) = file.list_xattr() else {
        return vec![];
    };
    let mut out: Vec<Xattr> = names
        .filter(|n| n.as_encoded_bytes().starts_with(b"user."))
        .filter_map(|n| {
            let value = file.get_xattr(&n).ok().flatten()?;
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

/// Collects the first failure of several steps.
#[derive(Default)]
struct FirstError(Option<std::io::Error>);

impl FirstError {
    fn note<E: Into<std::io::Error>>(&mut self, r: std::result::Result<(), E>) {
        if let Err(e) = r {
            self.0.get_or_insert(e.into());
        }
    }

    fn result(self) -> std::io::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// The POSIX ACLs a new entry inherits from its folder's default ACL.
const ACLS: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

/// Whether an open file or folder has an access ACL (which may give others rights its mode does
/// not show).
pub fn has_acl(file: &File) -> bool {
    file.get_xattr(ACLS[0]).is_ok_and(|v| v.is_some())
}

/// Removes the ACLs an entry the restore made inherited from the default ACL of the folder it
/// was made in (which belongs to whoever owns that folder): snapshots hold no ACLs, and an
/// inherited one could give that owner rights on what is restored, or on what is made inside.
/// Only a folder can hold a default ACL, so a file (`folder` false) is spared that removal.
pub fn remove_inherited_acls(file: &File, folder: bool) -> std::io::Result<()> {
    for acl in &ACLS[..if folder { 2 } else { 1 }] {
        match file.remove_xattr(acl) {
            Err(e)
                if matches!(
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                    nix::errno::Errno::ENODATA | nix::errno::Errno::EOPNOTSUPP
                ) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Applies ownership (when `chown`), user xattrs, mode and times of `node` to an open file or
/// folder (through its descriptor: nothing is looked up by name); returns the first failure,
/// after trying everything.
pub fn apply_to(file: &File, node: &Node, chown: bool) -> std::io::Result<()> {
    let mut errors = FirstError::default();
    if chown {
        errors.note(fchown(
            file,
            Some(Uid::from_raw(node.uid)),
            Some(Gid::from_raw(node.gid)),
        ));
    }
    for x in &node.xattrs {
        let value = B64.decode(&x.value).map_err(std::io::Error::other);
        errors.note(value.and_then(|v| file.set_xattr(x.name.as_os(), &v)));
    }
    errors.note(fchmod(file, Mode::from_bits_truncate(node.mode)));
    let time = timespec(node.mtime_ns);
    errors.note(futimens(file, &time, &time));
    errors.result()
}

/// Applies ownership (when `chown`), mode (not to a symlink) and times of `node` to the symlink,
/// FIFO or device node `name` in the open folder `dir`, never following a symlink; returns the
/// first failure, after trying everything.
pub fn apply_at(dir: &File, name: &OsStr, node: &Node, chown: bool) -> std::io::Result<()> {
    let mut errors = FirstError::default();
    if chown {
        errors.note(fchownat(
            dir,
            name,
            Some(Uid::from_raw(node.uid)),
            Some(Gid::from_raw(node.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ));
    }
    if node.kind != NodeKind::Symlink {
        errors.note(fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(node.mode),
            FchmodatFlags::NoFollowSymlink,
        ));
    }
    let time = timespec(node.mtime_ns);
    errors.note(utimensat(
        dir,
        name,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    ));
    errors.result()
}
