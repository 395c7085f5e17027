//! `cairn mount`: the repository's snapshots as a read-only file system through FUSE (the view
//! itself is the engine's [`SnapshotFs`]), served in the foreground until Ctrl-C, SIGTERM or
//! `umount`, then unmounted.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use cairn_engine::format::tree::NodeKind;
use cairn_engine::ops::mount::{Attr, Refusal, SnapshotFs};
use clap::Args;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyXattr, Request, SessionACL,
};
use nix::sys::signal::{SigSet, Signal};

use super::{FilterArgs, open};
use crate::Global;

/// `cairn mount` options.
#[derive(Args)]
pub struct MountArgs {
    /// Empty folder to show the snapshots in
    mountpoint: PathBuf,
    /// Let users other than the one mounting read the mount (a user other than root needs
    /// `user_allow_other` in /etc/fuse.conf); file permissions still apply
    #[arg(long)]
    allow_other: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// How long the kernel may keep attributes and names before asking again (the snapshot list
/// may change; snapshot contents never do).
const TTL: Duration = Duration::from_secs(1);

/// Why `path` cannot be mounted on, if it cannot.
fn unusable_mountpoint(path: &Path) -> Option<String> {
    let shown = path.display();
    match std::fs::read_dir(path) {
        Ok(mut entries) => entries
            .next()
            .is_some()
            .then(|| format!("mount point {shown} is not empty: mount on an empty folder")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "mount point {shown} does not exist: create an empty folder first (mkdir {shown})"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Some(format!(
            "mount point {shown} is not a folder: give an empty folder"
        )),
        Err(e) => Some(format!("mount point {shown} cannot be listed: {e}")),
    }
}

/// `cairn mount`
pub fn mount(g: &Global, a: MountArgs) -> Result<u8> {
    if let Some(why) = unusable_mountpoint(&a.mountpoint) {
        eprintln!("cairn: error: {why}");
        return Ok(2);
    }
    // Ctrl-C and SIGTERM unmount: blocked in every thread (all started after this), and
    // waited for by one
    let signals = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]);
    signals.thread_block()?;
    let fs = SnapshotFs::new(open(g)?, a.filter.filter()?)?;
    let count = fs.snapshot_count();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
        MountOption::DefaultPermissions,
    ];
    if a.allow_other {
        config.acl = SessionACL::All;
    }
    // a slow read (a download from S3) does not hold up the others
    config.n_threads = Some(4);
    config.clone_fd = true;
    let mut session = fuser::Session::new(Fuse(fs), &a.mountpoint, &config).map_err(|e| {
        anyhow::anyhow!(
            "cannot mount on {}: {e}. FUSE needs the device /dev/fuse (`modprobe fuse`; in a container, pass /dev/fuse and CAP_SYS_ADMIN) and, unless run as root, fusermount3 (Debian: apt-get install fuse3)",
            a.mountpoint.display()
        )
    })?;
    let mut unmounter = session.unmount_callable();
    let at = a.mountpoint.canonicalize()?;
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            tracing::info!("{signal}: unmounting");
        }
        match unmounter.unmount() {
            // the session ends and `mount` returns
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                detach(&at);
                // the kernel keeps a busy mount until its files are closed: end the session
                // now, and with it their reads
                std::process::exit(0);
            }
            Err(e) => eprintln!(
                "cairn: error: cannot unmount {0}: {e}; run `umount {0}`",
                at.display()
            ),
        }
    });
    if !g.quiet {
        eprintln!(
            "{count} snapshots mounted read-only at {0}; serving until Ctrl-C or `umount {0}`",
            a.mountpoint.display()
        );
    }
    session.run()?;
    if !g.quiet {
        eprintln!("unmounted {}", a.mountpoint.display());
    }
    Ok(0)
}

/// Unmounts `at` although files are open in it (lazily: it leaves the file system tree now).
fn detach(at: &Path) {
    let detached = match nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH) {
        // not root: through the setuid helper
        Err(nix::errno::Errno::EPERM) => ["fusermount3", "fusermount"].iter().any(|helper| {
            std::process::Command::new(helper)
                .args(["-u", "-z", "--"])
                .arg(at)
                .status()
                .is_ok_and(|s| s.success())
        }),
        done => done.is_ok(),
    };
    if detached {
        eprintln!(
            "unmounted {}, although files were still open in it (their reads fail from now on)",
            at.display()
        );
    } else {
        eprintln!(
            "cairn: error: cannot unmount {0}; close the files open in it and run `umount {0}`",
            at.display()
        );
    }
}

/// The FUSE side of [`SnapshotFs`].
struct Fuse(SnapshotFs);

fn errno(r: Refusal) -> Errno {
    match r {
        Refusal::NoEntry => Errno::ENOENT,
        Refusal::NotDir => Errno::ENOTDIR,
        Refusal::Invalid => Errno::EINVAL,
        Refusal::Damaged => Errno::EIO,
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Chardev => FileType::CharDevice,
        NodeKind::Blockdev => FileType::BlockDevice,
    }
}

fn time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time(a.mtime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: time(a.mtime_ns),
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: u32::try_from(a.links).unwrap_or(u32::MAX),
        uid: a.uid,
        gid: a.gid,
        rdev: u32::try_from(a.rdev).unwrap_or(0),
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for Fuse {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.0.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(r) => reply.error(errno(r)),
        }
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(r) => reply.error(errno(r)),
        }
    }

    fn readlink(&self, _: &Request, ino: INodeNo, reply: ReplyData) {
        match self.0.read_link(ino.0) {
            Ok(target) => reply.data(&target),
            Err(r) => reply.error(errno(r)),
        }
    }

    fn open(&self, _: &Request, _: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        // contents never change: the kernel may keep what it read
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    // nothing is ever written: nothing to flush
    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.0.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(r) => reply.error(errno(r)),
        }
    }

    fn readdir(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // offsets: 1 after ".", 2 after "..", 2 + n after the n-th entry
        let mut next = offset;
        if next == 0 {
            if reply.add(ino, 1, FileType::Directory, ".") {
                return reply.ok();
            }
            next = 1;
        }
        if next == 1 {
            let parent = match self.0.parent(ino.0) {
                Ok(p) => p,
                Err(r) => return reply.error(errno(r)),
            };
            if reply.add(INodeNo(parent), 2, FileType::Directory, "..") {
                return reply.ok();
            }
            next = 2;
        }
        loop {
            let batch = match self.0.list(ino.0, (next - 2) as usize) {
                Ok(b) => b,
                Err(r) => return reply.error(errno(r)),
            };
            if batch.is_empty() {
                return reply.ok();
            }
            for (name, child, kind) in batch {
                if reply.add(
                    INodeNo(child),
                    next + 1,
                    file_type(kind),
                    OsStr::from_bytes(&name),
                ) {
                    return reply.ok();
                }
                next += 1;
            }
        }
    }

    fn getxattr(&self, _: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = match self.0.xattrs(ino.0) {
            Ok(all) => all.into_iter().find(|(n, _)| n == name.as_bytes()),
            Err(r) => return reply.error(errno(r)),
        };
        match value {
            None => reply.error(Errno::NO_XATTR),
            Some((_, v)) => xattr_reply(&v, size, reply),
        }
    }

    fn listxattr(&self, _: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.0.xattrs(ino.0) {
            Ok(all) => {
                let names: Vec<u8> = all
                    .into_iter()
                    .flat_map(|(mut n, _)| {
                        n.push(0);
                        n
                    })
                    .collect();
                xattr_reply(&names, size, reply)
            }
            Err(r) => reply.error(errno(r)),
        }
    }
}

/// Answers an xattr request: the size asked for with `size` 0, else the bytes if they fit.
fn xattr_reply(bytes: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}
