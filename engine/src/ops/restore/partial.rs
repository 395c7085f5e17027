//! Entries a restore is still making: each is created under a temporary name in its final
//! folder (`.cairn-partial-` and 12 random letters or digits, created exclusively), given its
//! contents and metadata there, and renamed into place only when complete, so that a restore
//! killed at any moment never leaves an entry under its own name that is not what the snapshot
//! holds. A rerun removes what a killed run left under temporary names.
//!
//! Symlinks, FIFOs and devices, whose metadata can only be set by name, are made in a private
//! folder of their own under such a temporary name ([`Staged`]), so that no one who can write
//! their final folder can swap the name for another file while its metadata is set.
//!
//! Durability: no entry is flushed before its rename. A killed process loses nothing (the data
//! is in the kernel's page cache before the rename), and a finished restore flushes the whole
//! file system once; only a machine crash during a restore can leave renamed files whose data
//! never reached the disk, which `--overwrite if-changed` finds and rewrites.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, RenameFlags, renameat, renameat2};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, geteuid, linkat, unlinkat};

use crate::sources::fs::{dirfd, metadata};

/// Name prefix of entries under construction.
pub const PREFIX: &str = ".cairn-partial-";
/// Random letters and digits after the prefix.
const RANDOM_LEN: usize = 12;

/// Whether `name` has the form of a temporary name.
pub fn is_partial_name(name: &OsStr) -> bool {
    name.as_bytes()
        .strip_prefix(PREFIX.as_bytes())
        .is_some_and(|rest| rest.len() == RANDOM_LEN && rest.iter().all(u8::is_ascii_alphanumeric))
}

/// A new random temporary name.
fn temporary_name() -> OsString {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut random = [0u8; RANDOM_LEN];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let mut name = PREFIX.as_bytes().to_vec();
    name.extend(random.iter().map(|b| LETTERS[*b as usize % LETTERS.len()]));
    OsStr::from_bytes(&name).to_owned()
}

/// An entry being made under a temporary name in a folder held open; removed when dropped,
/// unless it was put in place.
#[derive(Debug)]
pub struct Partial {
    dir: Arc<File>,
    name: OsString,
    placed: bool,
    /// Whether it is a folder (a [`Staged`] entry's), removed as one.
    folder: bool,
}

impl Partial {
    /// The folder it is in.
    pub fn dir(&self) -> &File {
        &self.dir
    }

    /// Its temporary name.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// Renames the complete entry to `name` in its folder; replaces what is there only if
    /// `replace`. On failure the entry is removed.
    pub fn put_in_place(mut self, name: &OsStr, replace: bool) -> io::Result<()> {
        self.placed = place((&self.dir, &self.name), (&self.dir, name), replace)?;
        Ok(())
    }
}

/// Renames `from` (a folder held open and a name in it) to `to`; replaces what is there only if
/// `replace`. Returns whether `from` was renamed (on a file system that cannot rename without
/// replacing, `to` is made a hard link instead, and `from` stays for the caller to remove).
fn place(from: (&File, &OsStr), to: (&File, &OsStr), replace: bool) -> io::Result<bool> {
    let rename = || renameat(from.0, from.1, to.0, to.1).map_err(io::Error::from);
    if replace {
        rename()?;
        return Ok(true);
    }
    match renameat2(from.0, from.1, to.0, to.1, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "something else appeared under this name during the restore; it was left alone",
        )),
        // a file system that cannot rename without replacing: a hard link fails if the name is
        // taken; failing that, a plain rename after making sure that nothing is there
        Err(Errno::EINVAL) => match linkat(from.0, from.1, to.0, to.1, AtFlags::empty()) {
            Ok(()) => Ok(false),
            Err(Errno::EEXIST) => Err(io::Error::from(Errno::EEXIST)),
            Err(_) if dirfd::stat_at(to.0, to.1).is_err() => rename().map(|()| true),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.placed {
            let how = match self.folder {
                true => UnlinkatFlags::RemoveDir,
                false => UnlinkatFlags::NoRemoveDir,
            };
            let _ = unlinkat(&*self.dir, self.name.as_os_str(), how);
        }
    }
}

/// Makes an entry under a new temporary name in the open folder `dir` with `make(dir, name)`,
/// which must fail with `AlreadyExists` if the name is taken (another name is then tried).
pub fn make<R>(
    dir: &Arc<File>,
    mut make: impl FnMut(&File, &OsStr) -> io::Result<R>,
) -> io::Result<(R, Partial)> {
    for _ in 0..100 {
        let name = temporary_name();
        match make(dir, &name) {
            Ok(made) => {
                let entry = Partial {
                    dir: dir.clone(),
                    name,
                    placed: false,
                    folder: false,
                };
                return Ok((made, entry));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name found",
    ))
}

/// A symlink, FIFO or device node being made in a private folder of its own (a temporary
/// folder in its final folder, mode 0700 without ACLs, owned by this process's user, the entry
/// under the same temporary name inside), where it gets its metadata by name: its final folder
/// may belong to someone else (a tenant, in their volume), who could otherwise swap the
/// temporary name for a hard link to another file between its making and its metadata, and have
/// that file get the metadata (owner, mode, times). No one else can change the private folder's
/// entries. Removed when dropped, unless put in place.
#[derive(Debug)]
pub struct Staged {
    /// The private folder, held open.
    inside: File,
    /// Its temporary name in the final folder.
    folder: Partial,
    /// Whether the entry was made (and so is this process's to remove).
    made: bool,
    placed: bool,
}

impl Staged {
    /// The private folder the entry is in.
    pub fn dir(&self) -> &File {
        &self.inside
    }

    /// The entry's name in it.
    pub fn name(&self) -> &OsStr {
        self.folder.name()
    }

    /// Moves the complete entry to `name` in its final folder; replaces what is there only if
    /// `replace`. On failure the entry is removed.
    pub fn put_in_place(mut self, name: &OsStr, replace: bool) -> io::Result<()> {
        let to = (&*self.folder.dir, name);
        self.placed = place((&self.inside, self.name()), to, replace)?;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.made && !self.placed {
            let _ = unlinkat(&self.inside, self.name(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// Makes an entry with `make(dir, name)` in a new [`Staged`] private folder in the open folder
/// `dir`.
pub fn make_staged(
    dir: &Arc<File>,
    make_entry: impl FnOnce(&File, &OsStr) -> io::Result<()>,
) -> io::Result<Staged> {
    let private = Mode::from_bits_truncate(0o700);
    let ((), mut folder) = make(dir, |d, name| Ok(mkdirat(d, name, private)?))?;
    folder.folder = true;
    let inside = dirfd::open_dir_at(dir, folder.name(), None)?;
    // the empty private folder just made, unless someone swapped another in under its name
    // (which is then left as it is)
    let st = fstat(&inside)?;
    if !is_private(&st) || st.st_nlink != 2 || !dirfd::list(&inside).0.is_empty() {
        return Err(dirfd::replaced());
    }
    metadata::remove_inherited_acls(&inside, true)?;
    let mut staged = Staged {
        inside,
        folder,
        made: false,
        placed: false,
    };
    make_entry(&staged.inside, staged.folder.name())?;
    staged.made = true;
    Ok(staged)
}

/// Whether a folder's status is that of a [`Staged`] private folder: this process's user's,
/// and no one else's to read, write or enter.
fn is_private(st: &nix::sys::stat::FileStat) -> bool {
    st.st_uid == geteuid().as_raw() && st.st_mode & 0o077 == 0
}

/// Removes the private folder `name` in `dir` that a [`Staged`] entry of an interrupted restore
/// left, with its entry (the symlink, FIFO or device of the same name, and nothing else); a
/// folder that is not private or holds anything else is not one, and is left alone. Returns
/// whether it was removed.
fn remove_staged(dir: &File, name: &OsStr) -> io::Result<bool> {
    let inside = dirfd::open_dir_at(dir, name, None)?;
    if !is_private(&fstat(&inside)?) {
        return Ok(false);
    }
    let (names, unlisted) = dirfd::list(&inside);
    if let Some(e) = unlisted {
        return Err(e);
    }
    match names.as_slice() {
        [] => {}
        [entry] if entry == name => {
            let kind = dirfd::kind(&dirfd::stat_at(&inside, entry)?);
            if kind == SFlag::S_IFDIR || kind == SFlag::S_IFREG {
                return Ok(false);
            }
            unlinkat(&inside, entry.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
        }
        _ => return Ok(false),
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(true)
}

/// Removes the temporary entries an interrupted restore left in the open folder `dir` (at
/// `path`; never folders, and never the entries named in `keep`: snapshot entries whose names
/// merely look temporary). Returns how many were removed and what could not be.
pub fn remove_leftovers(dir: &File, path: &Path, keep: &HashSet<&OsStr>) -> (u64, Vec<String>) {
    let (mut removed, mut errors) = (0, vec![]);
    let (names, unlisted) = dirfd::list(dir);
    if let Some(e) = unlisted {
        errors.push(format!(
            "{}: cannot be listed to remove what an interrupted restore left: {e}; remove \
             entries named {PREFIX}… by hand",
            path.display()
        ));
    }
    for name in names {
        if !is_partial_name(&name) || keep.contains(name.as_os_str()) {
            continue;
        }
        let entry = path.join(&name);
        // a folder is removed only if it is a private folder of a staged entry
        let outcome = match unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Err(Errno::EISDIR) => remove_staged(dir, &name).map(u64::from),
            done => done.map(|()| 1).map_err(io::Error::from),
        };
        match outcome {
            Ok(n) => removed += n,
            Err(e) => errors.push(format!(
                "{}: left by an interrupted restore and cannot be removed: {e}; remove it by hand",
                entry.display()
            )),
        }
    }
    (removed, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let held = Arc::new(dirfd::open_dir(dir.path()).unwrap());
        let (_, made) = make(&held, |d, name| {
            nix::fcntl::openat(
                d,
                name,
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_EXCL
                    | nix::fcntl::OFlag::O_WRONLY,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .map_err(io::Error::from)
        })
        .unwrap();
        assert!(is_partial_name(made.name()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        for other in [
            ".cairn-partial-",
            ".cairn-partial-abc",
            ".cairn-partial-abcdefghijk!",
            "x",
        ] {
            assert!(!is_partial_name(OsStr::new(other)), "{other}");
        }
        drop(made);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "dropped, removed"
        );
    }

    #[test]
    fn a_staged_entry_left_by_a_killed_run_is_removed_and_anyone_elses_folder_kept() {
        let dir = tempfile::tempdir().unwrap();
        let held = Arc::new(dirfd::open_dir(dir.path()).unwrap());
        let staged = make_staged(&held, |d, name| {
            nix::unistd::symlinkat("somewhere", d, name).map_err(io::Error::from)
        })
        .unwrap();
        let folder = dir.path().join(staged.folder.name());
        assert!(is_partial_name(staged.folder.name()));
        let st = std::fs::symlink_metadata(&folder).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&st.permissions()) & 0o777,
            0o700
        );
        // killed: nothing dropped
        std::mem::forget(staged);
        // a folder with a temporary-looking name that is not private is someone else's
        let theirs = dir.path().join(".cairn-partial-abcdefABCDEF");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let (removed, errors) = remove_leftovers(&held, dir.path(), &HashSet::new());
        assert_eq!((removed, errors), (1, vec![]));
        assert!(!folder.exists());
        assert!(theirs.exists());
    }

    #[test]
    fn a_staged_entry_is_moved_into_its_folder_and_its_private_folder_removed() {
        let dir = tempfile::tempdir().unwrap();
        let held = Arc::new(dirfd::open_dir(dir.path()).unwrap());
        let staged = make_staged(&held, |d, name| {
            nix::unistd::symlinkat("somewhere", d, name).map_err(io::Error::from)
        })
        .unwrap();
        staged.put_in_place(OsStr::new("link"), false).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["link"]);
        assert_eq!(
            std::fs::read_link(dir.path().join("link")).unwrap(),
            Path::new("somewhere")
        );
    }
}
