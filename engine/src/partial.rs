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
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tempfile::TempPath;

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

/// Makes an entry under a new temporary name in the folder of `path` with `make`, which must
/// fail if its path exists (another name is then tried). The entry is removed when the returned
/// [`TempPath`] is dropped, unless it was put in place.
pub fn make<R>(path: &Path, make: impl FnMut(&Path) -> io::Result<R>) -> io::Result<(R, TempPath)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .prefix(PREFIX)
        .rand_bytes(RANDOM_LEN)
        .make_in(dir, make)
        .map(tempfile::NamedTempFile::into_parts)
}

/// Renames a complete entry to `path`; replaces what is there only if `replace`. On failure the
/// entry is removed.
pub fn put_in_place(entry: TempPath, path: &Path, replace: bool) -> io::Result<()> {
    if replace {
        return entry.persist(path).map_err(|e| e.error);
    }
    match entry.persist_noclobber(path) {
        Ok(()) => Ok(()),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "something else appeared under this name during the restore; it was left alone",
        )),
        // a file system that can neither rename without replacing nor hard-link: a plain rename
        // after making sure that nothing is there
        Err(e) if std::fs::symlink_metadata(path).is_err() => {
            e.path.persist(path).map_err(|e| e.error)
        }
        Err(e) => Err(e.error),
    }
}

/// Removes the temporary entries an interrupted restore left in `dir` (never folders, and never
/// the entries named in `keep`: snapshot entries whose names merely look temporary). Returns
/// how many were removed and what could not be.
pub fn remove_leftovers(dir: &Path, keep: &HashSet<PathBuf>) -> (u64, Vec<String>) {
    let (mut removed, mut errors) = (0, vec![]);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, vec![]);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !is_partial_name(&entry.file_name())
            || keep.contains(&path)
            || entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) => errors.push(format!(
                "{}: left by an interrupted restore and cannot be removed: {e}; remove it by hand",
                path.display()
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
        let (_, made) = make(&dir.path().join("final"), |p| std::fs::File::create_new(p)).unwrap();
        assert!(is_partial_name(made.file_name().unwrap()));
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
