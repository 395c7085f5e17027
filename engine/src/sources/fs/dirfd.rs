//! Folders held open by descriptor, and the entries in them reached one name at a time, never
//! through a symlink: how backups and restores work on trees that someone else may change
//! under them. A folder swapped for a symlink to `/etc` while cairn works leads nowhere, because
//! no path is resolved twice: every entry is found by its name in a folder that is already
//! open (`openat`, `fstatat`, `mkdirat`… with `O_NOFOLLOW` / `AT_SYMLINK_NOFOLLOW`), and what is
//! opened is checked (`fstat`) to be the entry that was listed or made.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::linkat;

/// An entry by name in a folder held open, with its path (for messages only, never opened).
#[derive(Clone, Debug)]
pub struct Place {
    /// Its path, as shown in messages.
    pub path: PathBuf,
    /// The folder that holds it.
    pub dir: Arc<File>,
    /// Its name in that folder.
    pub name: OsString,
}

impl Place {
    /// The entry `name` of the folder `dir`, which is at `dir_path`.
    pub fn new(dir_path: &Path, dir: &Arc<File>, name: &OsStr) -> Place {
        Place {
            path: dir_path.join(name),
            dir: dir.clone(),
            name: name.to_owned(),
        }
    }

    /// The entry's status, not following a symlink.
    pub fn stat(&self) -> io::Result<FileStat> {
        stat_at(&self.dir, &self.name)
    }
}

/// A file's identity: (device, inode).
pub type Identity = (u64, u64);

/// The identity of an entry's status.
pub fn identity(st: &FileStat) -> Identity {
    (st.st_dev, st.st_ino)
}

/// The kind bits of a status (`S_IFMT`).
pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Opens the folder at `path`, which the caller trusts (the root of a backup or restore; a
/// symlink on the way is followed).
pub fn open_dir(path: &Path) -> io::Result<File> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// The status of the entry `name` in `dir`, not following a symlink.
pub fn stat_at(dir: &File, name: &OsStr) -> io::Result<FileStat> {
    Ok(fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?)
}

/// The error for an entry that is no longer what was listed or made (not an operating system
/// error: its `raw_os_error` is `None`).
pub fn replaced() -> io::Error {
    io::Error::other(
        "replaced by another entry while cairn was working on it; left alone, run again",
    )
}

/// Holds the entry `name` in `dir` as a mere reference (`O_PATH | O_NOFOLLOW`, which opens
/// nothing: no FIFO waits, no device is touched), only if it is of `kind` (when given) and has
/// the identity `expected` (when given); else [`replaced`]. A symlink is held as itself.
pub fn reference_at(
    dir: &File,
    name: &OsStr,
    kind: Option<SFlag>,
    expected: Option<Identity>,
) -> io::Result<(OwnedFd, FileStat)> {
    let reference = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP => replaced(),
        e => e.into(),
    })?;
    let st = fstat(&reference)?;
    if kind.is_some_and(|k| self::kind(&st) != k) || expected.is_some_and(|id| id != identity(&st))
    {
        return Err(replaced());
    }
    Ok((reference, st))
}

/// The path under which the kernel gives back the very inode a descriptor holds.
fn held_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The error for a descriptor that cannot be reached through `/proc/self/fd`.
fn no_proc() -> io::Error {
    io::Error::other(
        "cannot reopen it through /proc/self/fd; mount /proc (cairn needs it to open entries \
         safely) and run again",
    )
}

/// Opens the entry `name` in `dir` with `flags` (plus `O_NOCTTY`, `O_CLOEXEC`), and only if it
/// is of `kind` and, if given, has the identity `expected`: the name is first held by
/// [`reference_at`], and only then is the very inode it holds opened with `flags` (through
/// `/proc/self/fd`). A symlink, a FIFO or device where a file was expected, or another entry than
/// expected, is refused with [`replaced`]; nothing is ever opened through a symlink, and nothing
/// is opened before it is known to be what was expected.
pub fn open_at(
    dir: &File,
    name: &OsStr,
    flags: OFlag,
    kind: SFlag,
    expected: Option<Identity>,
) -> io::Result<(File, FileStat)> {
    let (reference, st) = reference_at(dir, name, Some(kind), expected)?;
    let flags = (flags | OFlag::O_NOCTTY | OFlag::O_CLOEXEC) & !OFlag::O_NOFOLLOW;
    let fd = nix::fcntl::open(held_path(&reference).as_str(), flags, Mode::empty()).map_err(
        |e| match e {
            nix::errno::Errno::ENOENT => no_proc(),
            e => e.into(),
        },
    )?;
    Ok((File::from(fd), st))
}

/// Makes `name` in `dir` a new hard link to the inode that `reference` (any descriptor) holds,
/// never to whatever has one of its names by now: by descriptor (`AT_EMPTY_PATH`,
/// which needs `CAP_DAC_READ_SEARCH`), else through `/proc/self/fd`.
pub fn link_to(reference: &OwnedFd, dir: &File, name: &OsStr) -> io::Result<()> {
    match linkat(reference, "", dir, name, AtFlags::AT_EMPTY_PATH) {
        // an inode whose every name is gone cannot get a new one
        Err(nix::errno::Errno::ENOENT) if fstat(reference)?.st_nlink == 0 => Err(io::Error::other(
            "its every name was removed or replaced by someone else while cairn was working on it; run again",
        )),
        Err(nix::errno::Errno::ENOENT) => linkat(
            AT_FDCWD,
            held_path(reference).as_str(),
            dir,
            name,
            AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(|e| match e {
            nix::errno::Errno::ENOENT => no_proc(),
            e => e.into(),
        }),
        other => other.map_err(Into::into),
    }
}

/// Opens the folder `name` in `dir` for listing, checking it is the one expected.
pub fn open_dir_at(dir: &File, name: &OsStr, expected: Option<Identity>) -> io::Result<File> {
    open_at(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NONBLOCK,
        SFlag::S_IFDIR,
        expected,
    )
    .map(|(f, _)| f)
}

/// The names in the folder `dir` (without `.` and `..`), in the order listed; on an error
/// part way, the names listed so far and the error.
pub fn list(dir: &File) -> (Vec<OsString>, Option<io::Error>) {
    // a descriptor of its own for the listing ("." of the folder held, never a symlink)
    let listing = match rustix::fs::Dir::read_from(dir) {
        Ok(d) => d,
        Err(e) => return (vec![], Some(e.into())),
    };
    let mut names = vec![];
    for entry in listing {
        match entry {
            Ok(e) => {
                let name = e.file_name().to_bytes();
                if name != b"." && name != b".." {
                    names.push(OsStr::from_bytes(name).to_owned());
                }
            }
            Err(e) => return (names, Some(e.into())),
        }
    }
    (names, None)
}

/// Lets this process hold as many descriptors as it may (a restore holds every folder it makes
/// open until it sets their metadata last; a backup a chain of folders per walking thread).
/// Best effort; returns the limit now in force (`u64::MAX` if unlimited or unknown).
pub fn raise_open_file_limit() -> u64 {
    use nix::libc::{RLIM_INFINITY, RLIMIT_NOFILE, getrlimit, rlimit, setrlimit};
    let mut limit = rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the `rlimit` passed
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut limit) != 0 {
            return u64::MAX;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    match limit.rlim_cur {
        RLIM_INFINITY => u64::MAX,
        n => n,
    }
}

/// Whether `e` says this process (or the system) has no descriptor left to open one more file.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_opened_only_as_listed_and_never_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), b"inside").unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/f"), b"outside").unwrap();
        let dir = open_dir(&root).unwrap();
        let listed = stat_at(&dir, OsStr::new("d")).unwrap();
        let d = open_dir_at(&dir, OsStr::new("d"), Some(identity(&listed))).unwrap();
        let (mut names, err) = list(&d);
        names.sort();
        assert_eq!((names, err.is_none()), (vec![OsString::from("f")], true));

        // `d` swapped for a symlink: the folder held still reads `d`'s own file, and opening
        // `d` again is refused
        std::fs::rename(root.join("d"), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("d")).unwrap();
        let (f, _) = open_at(&d, OsStr::new("f"), OFlag::O_RDONLY, SFlag::S_IFREG, None).unwrap();
        assert_eq!(std::io::read_to_string(f).unwrap(), "inside");
        let e = open_dir_at(&dir, OsStr::new("d"), None).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        // another folder under the listed name is refused too
        std::fs::remove_file(root.join("d")).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        let e = open_dir_at(&dir, OsStr::new("d"), Some(identity(&listed))).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        // a FIFO where a file is expected is refused without being opened (opening it for
        // writing would wait for a reader forever)
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_at(
            &dir,
            OsStr::new("fifo"),
            OFlag::O_WRONLY,
            SFlag::S_IFREG,
            None,
        );
        assert!(e.unwrap_err().to_string().contains("replaced"));
    }
}
