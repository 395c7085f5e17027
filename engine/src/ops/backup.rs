//! Backup: walks folders into trees and file contents into deduplicated, encrypted blobs, then
//! writes a snapshot.
//!
//! Pipeline: the walking thread reads each file, cuts it into chunks and names them (FastCDC and
//! BLAKE3 are fast enough for one core); chunks not yet in the repository go through a bounded
//! queue to worker threads that compress, encrypt and pack them, while packs upload in the
//! background. Memory is bounded by the queue and pack sizes, never by file or data size.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use crossbeam_channel::{Receiver, Sender, bounded};
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, SFlag, fstat};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::BlobKind;
use crate::format::id::Id;
use crate::format::snapshot::{SNAPSHOT_VERSION, Snapshot, Summary};
use crate::format::tree::{MAX_DEPTH, Node, NodeKind, RawBytes, Tree, Xattr};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::repository::clock;
use crate::repository::packer::Packer;
use crate::repository::session::Session;
use crate::repository::store::ObjectKind;
use crate::sources::fs::dirfd;
use crate::sources::fs::exclude::Excludes;
use crate::sources::fs::metadata::{self, ChangeStamp, OwnerNames};

/// Which earlier snapshot a backup compares files with, to skip reading unchanged ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parent {
    /// The newest snapshot with the same host and paths.
    #[default]
    Auto,
    /// None: read every file.
    Ignore,
    /// This snapshot.
    Given(Id),
}

/// Settings of one backup run.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Host name recorded in the snapshot.
    pub host: String,
    /// Tags recorded in the snapshot.
    pub tags: Vec<String>,
    /// The snapshot to compare with.
    pub parent: Parent,
    /// Time to record instead of the start time (for imports and tests).
    pub time: Option<chrono::DateTime<Utc>>,
    /// Record `time` even if it is ahead of the store's clock ([`clock`]).
    pub allow_future_time: bool,
    /// What to leave out below the paths backed up.
    pub excludes: Excludes,
}

/// The result of a backup.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: Id,
    /// The new snapshot.
    pub snapshot: Snapshot,
    /// Entries that could not be read (left out, or folders stored empty or in part) or that
    /// changed while read (stored as read), with why.
    pub errors: Vec<String>,
    /// Entries left out on purpose (sockets), with why.
    pub skipped: Vec<String>,
    /// Entries left out by the excludes (an excluded folder counts once: it is not read).
    pub excluded: u64,
}

/// What one entry of a snapshot's tree holds.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file or folder on disk (symlinks are stored, never followed).
    Path(PathBuf),
    /// Bytes made in memory (e.g. a Kubernetes manifest), stored as a regular file readable by
    /// its owner only, with this modification time (nanoseconds since the epoch).
    Bytes {
        /// The file's content.
        data: Vec<u8>,
        /// Its modification time.
        mtime_ns: i64,
    },
    /// A folder made in memory, its entries by name.
    Folder(BTreeMap<RawBytes, Source>),
    /// Bytes read from a stream to its end (standard input, a command's output), stored as a
    /// regular file with mode 0644 owned by this process's user, with this modification time.
    /// A read error (a command that failed, see [`StreamReader`]) fails the backup.
    Stream {
        /// Where the bytes come from; read once.
        reader: StreamReader,
        /// The file's modification time (nanoseconds since the epoch).
        mtime_ns: i64,
    },
}

/// A stream to back up, shared so that a [`Source`] can be cloned; the first backup of it
/// reads it.
#[derive(Clone)]
pub struct StreamReader(Arc<Mutex<Option<Box<dyn Read + Send>>>>);

impl StreamReader {
    /// Wraps `reader`.
    pub fn new(reader: impl Read + Send + 'static) -> StreamReader {
        StreamReader(Arc::new(Mutex::new(Some(Box::new(reader)))))
    }

    fn take(&self) -> Option<Box<dyn Read + Send>> {
        self.0.lock().expect("lock").take()
    }
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamReader")
    }
}

type Job = (Id, Vec<u8>);

/// The `ctime_ns` recorded for a file that changed while it was read. No status-change time
/// read from a file system is this value, and [`unchanged`] never matches it, so a backup with
/// this snapshot as parent reads the file again (`ctime_ns` serves change detection only).
const CHANGED_WHILE_READ: i64 = i64::MIN;

/// A file's content as read: its blob ids, the bytes read, and whether the file changed from
/// when it was listed to when it was read to the end.
struct FileRead {
    ids: Vec<Id>,
    size: u64,
    changed: bool,
}

/// What a file with several links held when read.
struct HardLinkRead {
    stamp: ChangeStamp,
    ids: Vec<Id>,
    xattrs: Vec<Xattr>,
}

/// What a part of a walk found besides its nodes. Parts walked on different threads are added
/// up in name order, so that messages come in the order of the tree.
#[derive(Default)]
struct Tally {
    errors: Vec<String>,
    skipped: Vec<String>,
    /// Entries left out by the excludes.
    excluded: u64,
    summary: Summary,
}

impl Tally {
    fn add(&mut self, part: Tally) {
        self.errors.extend(part.errors);
        self.skipped.extend(part.skipped);
        self.excluded += part.excluded;
        let (s, p) = (&mut self.summary, part.summary);
        s.files += p.files;
        s.files_new += p.files_new;
        s.files_changed += p.files_changed;
        s.files_unmodified += p.files_unmodified;
        s.dirs += p.dirs;
        s.others += p.others;
        s.bytes += p.bytes;
    }
}

/// Folders this deep or less have their entries walked in parallel; deeper ones on the thread
/// that reached them, which then never waits for other threads' work, so that a thread's stack
/// holds at most one walk [`MAX_DEPTH`] folders deep, below the shallow frames of the jobs it
/// took over while waiting.
const PARALLEL_DEPTH: usize = 16;

/// Stack of each walking thread: a walk [`MAX_DEPTH`] folders deep takes about 8 MiB, and each
/// job taken over while waiting a few hundred KiB (reserved address space; only what is used
/// is memory).
const WALK_STACK: usize = 64 << 20;

/// Descriptors a walking thread may hold: one per folder of a chain [`MAX_DEPTH`] deep, and
/// those of the shallow jobs it took over while waiting.
const DESCRIPTORS_PER_WALKER: u64 = MAX_DEPTH as u64 + 64;

/// Descriptors kept for everything but the walk (the local index, packs being written, the
/// store's connections).
const DESCRIPTORS_KEPT: u64 = 512;

/// How many threads walk: one per core, but no more than the open-file limit (raised as far as
/// allowed) lets hold their folders, and at least one.
fn walking_threads(cores: usize) -> usize {
    let limit = dirfd::raise_open_file_limit();
    let fit = limit.saturating_sub(DESCRIPTORS_KEPT) / DESCRIPTORS_PER_WALKER;
    cores.min(usize::try_from(fit).unwrap_or(usize::MAX)).max(1)
}

/// The error that ends a backup when no descriptor is left to open `path`: the process's limit,
/// not the entry, is at fault, and going on would leave folders out at random.
fn out_of_descriptors(path: &Path, e: &std::io::Error) -> Error {
    Error::Invalid(format!(
        "{}: {e}: raise the open-file limit (ulimit -n; LimitNOFILE= for a service) and run the \
         backup again",
        path.display()
    ))
}

/// What the threads of one walk share.
struct Walk<'a, 'r> {
    repo: &'r Repository,
    packer: &'a Packer<'r>,
    queue: Sender<Job>,
    failed: &'a Mutex<Option<Error>>,
    progress: &'a Progress,
    names: OwnerNames,
    /// Files with several links read so far, by (device, inode), if they read unchanged.
    hardlinks: Mutex<HashMap<(u64, u64), HardLinkRead>>,
    excludes: &'a Excludes,
}

/// Backs up `paths` (each becomes one entry of the snapshot's root tree, named by its last
/// component) and writes a snapshot.
pub fn backup(
    repo: &Repository,
    paths: &[PathBuf],
    options: &BackupOptions,
    progress: &Progress,
) -> Result<BackupOutcome> {
    let roots = root_entries(paths)?;
    let root_paths: Vec<RawBytes> = roots
        .iter()
        .map(|(_, p)| RawBytes::from_os(p.as_os_str()))
        .collect();
    let root = roots
        .into_iter()
        .map(|(name, path)| (name, Source::Path(path)))
        .collect();
    backup_sources(repo, root, root_paths, options, progress)
}

/// Backs up what `reader` gives (standard input, a command's output) as one file `name` at the
/// snapshot's root, dated now, and writes a snapshot recording `/<name>` as what was backed up.
pub fn backup_stream(
    repo: &Repository,
    name: &str,
    reader: StreamReader,
    options: &BackupOptions,
    progress: &Progress,
) -> Result<BackupOutcome> {
    let mtime_ns = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let root = BTreeMap::from([(
        RawBytes(name.as_bytes().to_vec()),
        Source::Stream { reader, mtime_ns },
    )]);
    let paths = vec![RawBytes(format!("/{name}").into_bytes())];
    backup_sources(repo, root, paths, options, progress)
}

/// Backs up the entries of `root` (the snapshot's root tree) and writes a snapshot recording
/// `paths` as what was backed up; the parent snapshot is looked up by host and `paths`. Before
/// reading anything it refuses a snapshot time ahead of the store's clock
/// ([`clock::check_snapshot_time`]).
pub fn backup_sources(
    repo: &Repository,
    root: BTreeMap<RawBytes, Source>,
    root_paths: Vec<RawBytes>,
    options: &BackupOptions,
    progress: &Progress,
) -> Result<BackupOutcome> {
    let started = Utc::now();
    clock::check_snapshot_time(
        options.time,
        options.allow_future_time,
        started,
        repo.store().now()?,
    )?;
    let timer = Instant::now();
    // the session begins before the parent is chosen: a gc that marks the parent's packs once
    // it is forgotten then waits for this backup (format-spec §12.4)
    let session = Session::begin(repo, "backup")?;
    let parent = find_parent(repo, options, &root_paths)?;
    let parent_root = parent
        .as_ref()
        .and_then(|(_, snap)| load_parent_tree(repo, &snap.tree));
    let packer = Packer::in_session(repo, &session);
    let failed = Mutex::new(None);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (tx, rx) = bounded::<Job>(workers * 2);
    let walkers = rayon::ThreadPoolBuilder::new()
        .num_threads(walking_threads(workers))
        .stack_size(WALK_STACK)
        .thread_name(|i| format!("cairn-walk-{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the walking threads: {e}")))?;

    let walked = std::thread::scope(|s| {
        for _ in 0..workers {
            let rx: Receiver<Job> = rx.clone();
            let (packer, failed) = (&packer, &failed);
            s.spawn(move || {
                for (id, data) in rx {
                    if let Err(e) = packer.save_with_id(BlobKind::Data, id, &data) {
                        failed.lock().expect("lock").get_or_insert(e);
                    }
                }
            });
        }
        let walk = Walk {
            repo,
            packer: &packer,
            queue: tx,
            failed: &failed,
            progress,
            names: OwnerNames::default(),
            hardlinks: Mutex::new(HashMap::new()),
            excludes: &options.excludes,
        };
        let mut tally = Tally::default();
        let nodes = walkers.install(|| {
            let mut nodes = Vec::new();
            for (name, source) in &root {
                let before = parent_root.as_ref().and_then(|t| t.find(name));
                match walk.source(&mut tally, name.clone(), source, before)? {
                    Some(node) => nodes.push(node),
                    None => {
                        let why = tally.errors.iter().chain(&tally.skipped).cloned();
                        return Err(Error::Invalid(why.collect::<Vec<_>>().join("; ")));
                    }
                }
            }
            Ok(nodes)
        });
        // the workers stop once the queue is closed and empty
        drop(walk);
        let root = packer.save(BlobKind::Tree, &Tree { nodes: nodes? }.encode())?;
        Ok::<_, Error>((root, tally))
    });
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(e);
    }
    let (root, tally) = walked?;
    let Tally {
        errors,
        skipped,
        excluded,
        mut summary,
    } = tally;
    let stats = packer.finish()?;
    summary.new_blobs = stats.blobs;
    summary.new_bytes = stats.raw_bytes;
    summary.started = started;
    summary.errors = errors.len() as u64;
    summary.stored_bytes = stats.stored_bytes;
    summary.seconds = timer.elapsed().as_secs_f64();
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: options.time.unwrap_or(started),
        host: options.host.clone(),
        user: crate::user_name(),
        paths: root_paths,
        tags: options.tags.clone(),
        tree: root,
        parent: parent.map(|(id, _)| id),
        original: None,
        summary,
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
    };
    session.confirm_commit(repo, &stats)?;
    let id = snapshot.save(repo)?;
    session.confirm_stored(repo, ObjectKind::Snapshot, &id)?;
    let s = &snapshot.summary;
    tracing::info!(
        snapshot = %id.short(),
        files = s.files,
        bytes = s.bytes,
        new_bytes = s.new_bytes,
        errors = errors.len(),
        excluded,
        seconds = s.seconds,
        "snapshot saved"
    );
    Ok(BackupOutcome {
        id,
        snapshot,
        errors,
        skipped,
        excluded,
    })
}

/// The snapshot to compare with, per `options.parent`.
fn find_parent(
    repo: &Repository,
    options: &BackupOptions,
    paths: &[RawBytes],
) -> Result<Option<(Id, Snapshot)>> {
    Ok(match options.parent {
        Parent::Ignore => None,
        Parent::Given(id) => Some((id, Snapshot::load(repo, &id)?)),
        Parent::Auto => Snapshot::load_all(repo)?
            .into_iter()
            .rev()
            .find(|(_, s)| s.host == options.host && s.paths == paths),
    })
}

/// A tree of the parent snapshot; if it cannot be read, the files below are simply read again.
fn load_parent_tree(repo: &Repository, id: &Id) -> Option<Tree> {
    Tree::load(repo, id)
        .inspect_err(|e| {
            tracing::warn!("parent snapshot tree unusable, reading its files again: {e}")
        })
        .ok()
}

/// Whether a file is unchanged since `before` was recorded: same size, times and identity, and
/// `before` was not changing while it was read.
fn unchanged(now: &Node, before: &Node) -> bool {
    before.kind == NodeKind::File
        && before.ctime_ns != CHANGED_WHILE_READ
        && (now.size, now.mtime_ns, now.ctime_ns, now.inode, now.device)
            == (
                before.size,
                before.mtime_ns,
                before.ctime_ns,
                before.inode,
                before.device,
            )
}

/// Absolute paths with their entry names in the root tree; names must be distinct.
fn root_entries(paths: &[PathBuf]) -> Result<Vec<(RawBytes, PathBuf)>> {
    if paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: name at least one path".into(),
        ));
    }
    let mut out: Vec<(RawBytes, PathBuf)> = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
        let abs = normalize(&abs);
        let name = abs.file_name().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: back up the folders inside it instead of the root itself",
                p.display()
            ))
        })?;
        out.push((RawBytes::from_os(name), abs));
    }
    out.sort();
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::Invalid(format!(
            "{} and {} would both be stored as {:?}: back them up in separate snapshots",
            w[0].1.display(),
            w[1].1.display(),
            w[0].0.lossy()
        )));
    }
    Ok(out)
}

/// Removes `.` and resolves `..` lexically (without following symlinks).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

impl Walk<'_, '_> {
    fn warn(&self, t: &mut Tally, path: &Path, what: impl std::fmt::Display) {
        tracing::debug!(path = %path.display(), "{what}");
        self.progress
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        t.errors.push(format!("{}: {what}", path.display()));
    }

    /// The node of one entry of a [`Source`], or `None` (with a warning) if it is left out.
    fn source(
        &self,
        t: &mut Tally,
        name: RawBytes,
        source: &Source,
        before: Option<&Node>,
    ) -> Result<Option<Node>> {
        match source {
            Source::Path(path) => {
                // the root itself is trusted (named by whoever runs the backup): its folder is
                // opened by path, and the walk goes on from descriptors
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                let parent = parent.unwrap_or(Path::new("."));
                let base = path.file_name().unwrap_or(OsStr::new("."));
                let listed =
                    dirfd::open_dir(parent).and_then(|dir| Ok((dirfd::stat_at(&dir, base)?, dir)));
                match listed {
                    Ok((st, dir)) => {
                        let at = Listed {
                            dir: &dir,
                            name: base,
                            path,
                            st: &st,
                        };
                        self.entry(t, name, &at, before, None, 0)
                    }
                    Err(e) => {
                        self.warn(t, path, format!("cannot stat: {e}"));
                        Ok(None)
                    }
                }
            }
            Source::Bytes { data, mtime_ns } => {
                let node = Node::made(name, NodeKind::File, 0o600, *mtime_ns);
                let size = data.len() as u64;
                self.made_file(t, node, data.as_slice(), size, before)
                    .map(Some)
            }
            Source::Stream { reader, mtime_ns } => {
                let data = reader
                    .take()
                    .ok_or_else(|| Error::Invalid("a stream can be backed up only once".into()))?;
                let mut node = Node::made(name, NodeKind::File, 0o644, *mtime_ns);
                node.uid = nix::unistd::geteuid().as_raw();
                node.gid = nix::unistd::getegid().as_raw();
                self.made_file(t, node, data, 0, before).map(Some)
            }
            Source::Folder(entries) => {
                let before = before
                    .and_then(|b| b.subtree.as_ref())
                    .and_then(|id| load_parent_tree(self.repo, id).map(|tree| (*id, tree)));
                let mut nodes = Vec::with_capacity(entries.len());
                for (child, source) in entries {
                    let old = before.as_ref().and_then(|(_, tree)| tree.find(child));
                    nodes.extend(self.source(t, child.clone(), source, old)?);
                }
                let mtime_ns = nodes.iter().map(|n| n.mtime_ns).max().unwrap_or(0);
                let mut node = Node::made(name, NodeKind::Dir, 0o700, mtime_ns);
                node.subtree = Some(self.save_tree(Tree { nodes }, before.as_ref())?);
                t.summary.dirs += 1;
                Ok(Some(node))
            }
        }
    }

    /// Counts an entry left out by the excludes.
    fn exclude(&self, t: &mut Tally, path: &Path, why: &str) {
        tracing::debug!(path = %path.display(), "excluded: {why}");
        t.excluded += 1;
    }

    /// Stores `data` (about `size_hint` bytes) as the content of `node`, a file made in memory
    /// or read from a stream; `before` is its entry in the parent snapshot.
    fn made_file(
        &self,
        t: &mut Tally,
        mut node: Node,
        data: impl Read,
        size_hint: u64,
        before: Option<&Node>,
    ) -> Result<Node> {
        let name = PathBuf::from(node.name.as_os());
        let (content, size) = self.content(data, size_hint, Some(&name))?;
        node.content = content;
        node.size = size;
        t.summary.files += 1;
        t.summary.bytes += size;
        match before {
            Some(b) if b.content == node.content => t.summary.files_unmodified += 1,
            Some(_) => t.summary.files_changed += 1,
            None => t.summary.files_new += 1,
        }
        Ok(node)
    }

    fn check_workers(&self) -> Result<()> {
        match self.failed.lock().expect("lock").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Saves a folder's tree and returns its id. When the parent snapshot's tree of the same
    /// folder (`before`: its id and content) holds the same nodes, its blob is used as it is,
    /// without encoding the tree again.
    fn save_tree(&self, tree: Tree, before: Option<&(Id, Tree)>) -> Result<Id> {
        if let Some((id, old)) = before
            && *old == tree
            && self.packer.has(id)?
        {
            return Ok(*id);
        }
        self.packer.save(BlobKind::Tree, &tree.encode())
    }

    /// The node of one entry, or `None` (with a warning) if it is left out. `before` is the
    /// entry of the same name in the parent snapshot, if any; `parent_device` the device of the
    /// folder it is in (none for a root: a folder on another device below it is a mount point);
    /// `depth` how many folders below the root being walked it is.
    fn entry(
        &self,
        t: &mut Tally,
        name: RawBytes,
        at: &Listed,
        before: Option<&Node>,
        parent_device: Option<u64>,
        depth: usize,
    ) -> Result<Option<Node>> {
        let path = at.path;
        let Some(kind) = metadata::node_kind(at.st) else {
            t.skipped.push(format!(
                "{}: socket left out (sockets cannot be restored)",
                path.display()
            ));
            return Ok(None);
        };
        let mut node = metadata::node_from(name, kind, at.st, &self.names);
        match kind {
            NodeKind::File if let Some(b) = before.filter(|b| unchanged(&node, b)) => {
                // setting an extended attribute changes the status-change time: unchanged
                // files keep theirs
                node.content = b.content.clone();
                node.xattrs = b.xattrs.clone();
                self.progress.add_bytes(node.size);
                t.summary.files += 1;
                t.summary.files_unmodified += 1;
                t.summary.bytes += node.size;
            }
            NodeKind::File => {
                self.progress.set_current(path.display());
                match self.file_content(at, &mut node) {
                    Ok(FileRead { ids, size, changed }) => {
                        if changed {
                            node.ctime_ns = CHANGED_WHILE_READ;
                            self.warn(
                                t,
                                path,
                                "changed while being read: stored as read, which may mix old and \
                                 new data; the next backup reads it again",
                            );
                        }
                        node.content = ids;
                        node.size = size;
                        t.summary.files += 1;
                        match before {
                            Some(_) => t.summary.files_changed += 1,
                            None => t.summary.files_new += 1,
                        }
                        t.summary.bytes += size;
                    }
                    Err(Error::Io { source, .. }) if dirfd::out_of_descriptors(&source) => {
                        return Err(out_of_descriptors(path, &source));
                    }
                    Err(Error::Io { source, .. }) => {
                        self.warn(t, path, format!("cannot read: {source}"));
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                }
            }
            NodeKind::Dir if parent_device.is_some_and(|d| d != at.st.st_dev) => {
                // like restic's --one-file-system: the mount point itself, empty
                t.skipped.push(format!(
                    "{}: another file system is mounted here; stored as an empty folder (back it \
                     up by naming it)",
                    path.display()
                ));
                node.subtree = Some(self.save_tree(Tree::default(), None)?);
                node.size = 0;
                t.summary.dirs += 1;
            }
            NodeKind::Dir => {
                self.progress.set_current(path.display());
                let subtree =
                    match dirfd::open_dir_at(at.dir, at.name, Some(dirfd::identity(at.st))) {
                        Ok(_) if depth >= MAX_DEPTH => {
                            self.warn(
                                t,
                                path,
                                format!(
                                    "more than {MAX_DEPTH} folders deep; stored as an empty folder \
                                 (back it up by naming a folder below it)"
                                ),
                            );
                            self.save_tree(Tree::default(), None)?
                        }
                        Ok(dir) => {
                            node.xattrs = metadata::read_xattrs(&dir);
                            let before = before.and_then(|b| b.subtree.as_ref());
                            self.directory(t, &dir, path, before, at.st.st_dev, depth + 1)?
                        }
                        Err(e) if dirfd::out_of_descriptors(&e) => {
                            return Err(out_of_descriptors(path, &e));
                        }
                        // not a folder any more
                        Err(e) if e.raw_os_error().is_none() => {
                            self.warn(t, path, format!("cannot open: {e}"));
                            return Ok(None);
                        }
                        Err(e) => {
                            self.warn(
                                t,
                                path,
                                format!("cannot list: {e}; stored as an empty folder"),
                            );
                            self.save_tree(Tree::default(), None)?
                        }
                    };
                node.subtree = Some(subtree);
                node.size = 0;
                t.summary.dirs += 1;
            }
            NodeKind::Symlink => match nix::fcntl::readlinkat(at.dir, at.name) {
                Ok(target) => {
                    node.target = Some(RawBytes::from_os(&target));
                    t.summary.others += 1;
                }
                Err(e) => {
                    self.warn(t, path, format!("cannot read link: {e}"));
                    return Ok(None);
                }
            },
            // FIFOs and device nodes are recorded, never opened
            _ => t.summary.others += 1,
        }
        self.progress
            .entries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(node))
    }

    /// Saves the tree of the open folder `dir` (at `path`, on `device`, `depth` folders below
    /// the root being walked) and returns its id; entries that cannot be read are left out with
    /// a warning, and a folder that cannot be listed (completely) keeps the entries listed,
    /// with a warning. `before` is the folder's tree in the parent snapshot. Near the root,
    /// entries are walked on several threads ([`PARALLEL_DEPTH`]).
    fn directory(
        &self,
        t: &mut Tally,
        dir: &File,
        path: &Path,
        before: Option<&Id>,
        device: u64,
        depth: usize,
    ) -> Result<Id> {
        let before = before.and_then(|id| load_parent_tree(self.repo, id).map(|tree| (*id, tree)));
        let (mut names, error) = dirfd::list(dir);
        match error {
            Some(e) if dirfd::out_of_descriptors(&e) => return Err(out_of_descriptors(path, &e)),
            Some(e) if names.is_empty() => self.warn(
                t,
                path,
                format!("cannot list: {e}; stored as an empty folder"),
            ),
            Some(e) => self.warn(
                t,
                path,
                format!("cannot list all entries: {e}; stored with those listed"),
            ),
            None => {}
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let tags = self.excludes.marking_tags(dir, path, &names);
        let old = before.as_ref().map(|(_, tree)| tree);
        // entries in order, each run of them with what it found: rayon folds runs and joins
        // neighbouring runs in order, so the tree and the messages keep the order of the names
        let walk_one = |(mut nodes, mut part): (Vec<Node>, Tally), name: &OsString| {
            let at = Named { dir, path, name };
            nodes.extend(self.named(&mut part, &at, &tags, old, device, depth)?);
            Ok::<_, Error>((nodes, part))
        };
        let (mut nodes, part): (Vec<Node>, Tally) = if depth <= PARALLEL_DEPTH {
            names
                .par_iter()
                .try_fold(Default::default, walk_one)
                .try_reduce(Default::default, |(mut nodes, mut part), (more, tally)| {
                    nodes.extend(more);
                    part.add(tally);
                    Ok((nodes, part))
                })?
        } else {
            names.iter().try_fold(Default::default(), walk_one)?
        };
        t.add(part);
        // a tree's names must be sorted; they are, and checking costs one pass
        nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        self.save_tree(Tree { nodes }, before.as_ref())
    }

    /// The node of the entry `at` names, or `None` if the excludes or a warning leave it out;
    /// `tags` are the exclude tags its folder holds, `before` that folder's tree in the parent
    /// snapshot.
    fn named(
        &self,
        t: &mut Tally,
        at: &Named,
        tags: &[&OsStr],
        before: Option<&Tree>,
        device: u64,
        depth: usize,
    ) -> Result<Option<Node>> {
        let child = at.path.join(at.name);
        // decided before the entry is opened (or, for patterns and tags, even looked at)
        if tags.iter().any(|tag| *tag != at.name.as_os_str()) {
            self.exclude(t, &child, "its folder holds a tag file");
            return Ok(None);
        }
        if self.excludes.excludes_path(&child) {
            self.exclude(t, &child, "matches an exclude pattern");
            return Ok(None);
        }
        match dirfd::stat_at(at.dir, at.name) {
            Ok(st)
                if dirfd::kind(&st) == SFlag::S_IFREG
                    && self.excludes.excludes_size(st.st_size as u64) =>
            {
                self.exclude(t, &child, "larger than --exclude-larger-than");
                Ok(None)
            }
            Ok(st) => {
                let listed = Listed {
                    dir: at.dir,
                    name: at.name,
                    path: &child,
                    st: &st,
                };
                let name = RawBytes::from_os(at.name);
                let old = before.and_then(|tree| tree.find(&name));
                self.entry(t, name, &listed, old, Some(device), depth)
            }
            Err(e) => {
                self.warn(t, &child, format!("cannot stat: {e}"));
                Ok(None)
            }
        }
    }

    /// Chunks the regular file `node` was listed from, queueing new chunks, and tells whether
    /// it changed from when it was listed to when it was read to the end (one `fstat` after
    /// reading); records its extended attributes in `node`. A file with several hard links is
    /// read once while it does not change.
    fn file_content(&self, at: &Listed, node: &mut Node) -> Result<FileRead> {
        let path = at.path;
        let listed: ChangeStamp = (node.size, node.mtime_ns, node.ctime_ns);
        let link_key = (node.device, node.inode);
        if node.is_hardlinked()
            && let Some(read) = self.hardlinks.lock().expect("lock").get(&link_key)
            && read.stamp == listed
        {
            node.xattrs = read.xattrs.clone();
            return Ok(FileRead {
                ids: read.ids.clone(),
                size: node.size,
                changed: false,
            });
        }
        let (file, _) = open_listed(at).map_err(|e| Error::io(path, e))?;
        node.xattrs = metadata::read_xattrs(&file);
        let (ids, size) = self.content(&file, node.size, Some(path))?;
        let after = fstat(&file).map_err(|e| Error::io(path, e.into()))?;
        let changed = size != node.size || metadata::change_stamp(&after) != listed;
        if node.is_hardlinked() && !changed {
            let read = HardLinkRead {
                stamp: listed,
                ids: ids.clone(),
                xattrs: node.xattrs.clone(),
            };
            self.hardlinks.lock().expect("lock").insert(link_key, read);
        }
        Ok(FileRead { ids, size, changed })
    }

    /// Chunks `data` (about `size_hint` bytes), queueing new chunks; returns the blob ids and
    /// the bytes read. `path` names the source in read errors.
    fn content(
        &self,
        data: impl Read,
        size_hint: u64,
        path: Option<&Path>,
    ) -> Result<(Vec<Id>, u64)> {
        let mut ids = Vec::new();
        let mut size = 0u64;
        for chunk in self.repo.config().chunker.chunks(data, size_hint) {
            let chunk = chunk.map_err(|e| Error::io(path.unwrap_or(Path::new("-")), e))?;
            size += chunk.len() as u64;
            self.progress.add_bytes(chunk.len() as u64);
            let id = self.repo.keys().blob_id(&chunk);
            ids.push(id);
            if !self.packer.has(&id)? {
                self.queue
                    .send((id, chunk))
                    .map_err(|_| Error::Invalid("backup workers stopped".into()))?;
            }
        }
        self.check_workers()?;
        Ok((ids, size))
    }
}

/// An entry by name in the open folder `dir` (at `path`), not yet looked at.
struct Named<'a> {
    dir: &'a File,
    path: &'a Path,
    name: &'a OsString,
}

/// An entry as listed: its name in the open folder `dir`, its path (for messages) and status.
struct Listed<'a> {
    dir: &'a File,
    name: &'a OsStr,
    path: &'a Path,
    st: &'a FileStat,
}

/// Opens the regular file an entry was listed as, for reading: by its name in the open folder,
/// never through a symlink, never waiting (on a FIFO), never as a controlling terminal. An
/// entry replaced since it was listed (by another file, a symlink, a FIFO or a device) is
/// refused before anything is read.
fn open_listed(at: &Listed) -> std::io::Result<(File, FileStat)> {
    dirfd::open_at(
        at.dir,
        at.name,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK,
        SFlag::S_IFREG,
        Some(dirfd::identity(at.st)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_names_are_basenames_and_must_differ() {
        let r = root_entries(&[PathBuf::from("/a/b/../c"), PathBuf::from("/x/./y")]).unwrap();
        assert_eq!(r[0], (RawBytes(b"c".to_vec()), PathBuf::from("/a/c")));
        assert_eq!(r[1].0, RawBytes(b"y".to_vec()));
        assert!(root_entries(&[PathBuf::from("/a/z"), PathBuf::from("/b/z")]).is_err());
        assert!(root_entries(&[PathBuf::from("/")]).is_err());
        assert!(root_entries(&[]).is_err());
    }

    #[test]
    fn a_file_that_changed_while_read_never_counts_as_unchanged() {
        let mut before = Node::made(RawBytes(b"f".to_vec()), NodeKind::File, 0o644, 5);
        assert!(unchanged(&before.clone(), &before));
        before.ctime_ns = CHANGED_WHILE_READ;
        // not even against a file claiming that very stamp
        assert!(!unchanged(&before.clone(), &before));
    }

    #[test]
    fn only_the_regular_file_listed_is_opened() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"listed").unwrap();
        let dir = dirfd::open_dir(tmp.path()).unwrap();
        let name = OsStr::new("f");
        let st = dirfd::stat_at(&dir, name).unwrap();
        let listed = Listed {
            dir: &dir,
            name,
            path: &path,
            st: &st,
        };
        let mut read = String::new();
        open_listed(&listed)
            .unwrap()
            .0
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read, "listed");

        let other = tmp.path().join("other");
        std::fs::write(&other, b"not listed").unwrap();
        let refused = |why: &str| {
            let e = open_listed(&listed).expect_err(why);
            assert!(e.to_string().contains("replaced"), "{why}: {e}");
            std::fs::remove_file(&path).unwrap();
        };
        // made while the listed file exists, so that it cannot reuse its inode
        let new = tmp.path().join("new");
        std::fs::write(&new, b"a new file").unwrap();
        std::fs::rename(&new, &path).unwrap();
        refused("another file");
        std::os::unix::fs::symlink(&other, &path).unwrap();
        refused("a symlink");
        // opening a FIFO without a writer would wait forever unless non-blocking
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o644)).unwrap();
        refused("a FIFO");
        if nix::unistd::geteuid().is_root() {
            let zero = makedev(1, 5);
            mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o644), zero).unwrap();
            refused("/dev/zero's device");
        }
    }
}
