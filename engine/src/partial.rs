//! Entries a restore is still making: each is created under a temporary name in its final
//! folder (`.cairn-partial-` and 12 random letters or digits, created exclusively), given its
//! contents and metadata there, and renamed into place only when complete, so that a restore
//! killed at any moment never leaves an entry under its own name that is not what the snapshot
//! holds. A rerun removes what a killed run left under temporary names.
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, RenameFlags, renameat, renameat2};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use crate::dirfd;

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
        let dir = &*self.dir;
        let rename = || renameat(dir, self.name.as_os_str(), dir, name).map_err(io::Error::from);
        if replace {
            rename()?;
            self.placed = true;
            return Ok(());
        }
        match renameat2(
            dir,
            self.name.as_os_str(),
            dir,
            name,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                self.placed = true;
                Ok(())
            }
            Err(Errno::EEXIST) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something else appeared under this name during the restore; it was left alone",
            )),
            // a file system that cannot rename without replacing: a hard link fails if the name
            // is taken (the temporary name then goes when dropped); failing that, a plain rename
            // after making sure that nothing is there
            Err(Errno::EINVAL) => {
                match linkat(dir, self.name.as_os_str(), dir, name, AtFlags::empty()) {
                    Ok(()) => Ok(()),
                    Err(Errno::EEXIST) => Err(io::Error::from(Errno::EEXIST)),
                    Err(_) if dirfd::stat_at(dir, name).is_err() => {
                        rename()?;
                        self.placed = true;
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.placed {
            let _ = unlinkat(
                &*self.dir,
                self.name.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
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

/// Removes the temporary entries an interrupted restore left in the open folder `dir` (at
/// `path`; never folders, and never the entries named in `keep`: snapshot entries whose names
/// merely look temporary). Returns how many were removed and what could not be.
pub fn remove_leftovers(dir: &File, path: &Path, keep: &HashSet<PathBuf>) -> (u64, Vec<String>) {
    let (mut removed, mut errors) = (0, vec![]);
    let (names, _) = dirfd::list(dir);
    for name in names {
        let entry = path.join(&name);
        if !is_partial_name(&name) || keep.contains(&entry) {
            continue;
        }
        // a folder is never removed (unlinking one as a file fails)
        match unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => removed += 1,
            Err(Errno::EISDIR) => {}
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
}
