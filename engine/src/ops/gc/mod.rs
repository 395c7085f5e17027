//! Garbage collection without locks that can go stale for backups.
//!
//! Two phases, documented with their safety argument in `format-spec/` (§12):
//! a run *marks* packs that no kept snapshot needs (writing `marks/<id>`), and a later run,
//! once the mark is older than the safety interval, *sweeps* them: it deletes each marked pack
//! whose live blobs (by the snapshots existing then) are all stored in unmarked packs, and
//! resurrects the others. Backups never deduplicate against marked packs. Partly live packs
//! are repacked (their live blobs copied into new packs) and their old copies marked. Each run
//! ends by writing a compacted index that supersedes the old segments. Only gc runs exclude
//! each other, through `locks/gc`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::config::ObjectLock;
use crate::format::crypto::Domain;
use crate::format::id::Id;
use crate::format::index::{IndexSegment, Lineage};
use crate::format::pack::{self, PackedBlob};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::ops::repair;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::repository::marks::{Mark, load_marks, marked_packs};
use crate::repository::object_lock::{self, Wanted};
use crate::repository::packer::Packer;
use crate::repository::segments::{self, ActiveSegments};
use crate::repository::session;
use crate::repository::store::ObjectKind;

mod live_set;
use live_set::LiveSet;

/// Settings of a gc run.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// How long marked packs wait before they are deleted; must exceed the longest backup.
    pub safety: Duration,
    /// Packs whose live share (by bytes) is below this fraction are repacked.
    pub repack_below: f64,
    /// In a repository with an object lock: extend the lock of every object still needed whose
    /// lock ends within this long (`None`: never extend).
    pub extend_locks_within: Option<Duration>,
    /// Most entries per index segment written by the compaction (bounds its memory).
    pub segment_entries: usize,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            safety: Duration::hours(24),
            repack_below: 0.3,
            extend_locks_within: None,
            segment_entries: 500_000,
        }
    }
}

/// What a gc run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// Snapshots whose data is kept.
    pub snapshots: u64,
    /// Live blobs.
    pub live_blobs: u64,
    /// Packs deleted (swept marks and old unindexed leftovers).
    pub packs_deleted: u64,
    /// Bytes those packs took.
    pub bytes_freed: u64,
    /// Packs newly marked for deletion (deleted by a run after the safety interval).
    pub packs_marked: u64,
    /// Bytes the newly marked packs take.
    pub bytes_marked: u64,
    /// Packs repacked (their live blobs copied to new packs, then marked).
    pub packs_repacked: u64,
    /// Marked packs found still needed and kept.
    pub packs_resurrected: u64,
    /// Index segments replaced by the compacted ones.
    pub segments_compacted: u64,
    /// Marks not swept this run (waiting for their safety interval, or for writers).
    pub marks_pending: u64,
    /// Among them, due marks kept because a writer that began before the mark still runs.
    pub marks_waiting_for_writers: u64,
    /// Writer sessions (backups, copies) running when this run began.
    pub writers_running: u64,
    /// Packs in no index that hold blobs a snapshot needs: added to the index, kept.
    pub packs_adopted: u64,
    /// Packs in no index whose header cannot be read: kept (never deleted for being damaged;
    /// `cairn check --read-data` names them).
    pub packs_unreadable: u64,
    /// Packs the index listed that are not in the repository: left out of the compacted index,
    /// so that no backup deduplicates against them (`cairn check` names what they affect).
    pub packs_missing: u64,
    /// Multipart uploads a killed writer left open, aborted (their parts cost storage).
    pub uploads_aborted: u64,
    /// Objects that were due for deletion but are still under their object lock (kept; a later
    /// run deletes them once the lock has passed).
    pub objects_locked: u64,
    /// Bytes of the packs among them.
    pub bytes_locked: u64,
    /// Objects still needed whose object lock was extended.
    pub locks_extended: u64,
}

/// Deletes an object; `false` if its object lock has not passed yet (counted in the report).
fn delete_unless_locked(
    repo: &Repository,
    path: &ObjectPath,
    report: &mut GcReport,
) -> Result<bool> {
    match repo.store().delete(path) {
        Ok(()) => Ok(true),
        Err(Error::Locked { .. }) => {
            report.objects_locked += 1;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The gc lock (`locks/gc`): plain JSON naming its holder. Its holder rewrites it while it runs
/// (a heartbeat), so its Last-Modified, in the store's clock, says when it was last refreshed.
#[derive(Serialize, Deserialize)]
struct LockFile {
    host: String,
    pid: u32,
    time: DateTime<Utc>,
    /// Tells this holder's lock from another's (absent in locks of older releases).
    #[serde(default)]
    nonce: String,
}

/// Seconds after its last refresh a gc lock counts as abandoned: `CAIRN_GC_LOCK_LEASE`
/// (2–86400), else 600. The holder refreshes it every third of that.
fn lock_lease() -> std::time::Duration {
    std::time::Duration::from_secs(crate::env_number("CAIRN_GC_LOCK_LEASE", 2..=86_400, 600) as u64)
}

/// The held gc lock; a heartbeat thread refreshes it until it is dropped.
struct GcLock<'r> {
    repo: &'r Repository,
    bytes: Vec<u8>,
    /// Set by the heartbeat when the lock is no longer this run's (or could not be refreshed).
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

fn lock_path() -> ObjectPath {
    ObjectPath::from("locks/gc")
}

/// Refuses a store that ignores create-only puts (`If-None-Match: *`), on which two gc runs
/// could both take the lock: writes a probe object twice, and the second write must fail.
fn require_create_only_puts(repo: &Repository) -> Result<()> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("the operating system's random source failed");
    let probe = ObjectPath::from(format!("locks/gc-probe-{}", hex::encode(random)));
    repo.store().put_new_unlocked(&probe, b"1".to_vec())?;
    let second = repo.store().put_new_unlocked(&probe, b"2".to_vec());
    repo.store().delete_unlocked(&probe)?;
    match second {
        Err(Error::Storage(object_store::Error::AlreadyExists { .. })) => Ok(()),
        Err(e) => Err(e),
        Ok(()) => Err(Error::Invalid(
            "this store ignores create-only puts (a second put with If-None-Match: * of the same object succeeded), so two gc runs could both take the gc lock: gc refuses to run on it; use a store that honours conditional puts (AWS S3 does since 2024)".into(),
        )),
    }
}

impl<'r> GcLock<'r> {
    fn acquire(repo: &'r Repository) -> Result<GcLock<'r>> {
        require_create_only_puts(repo)?;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the operating system's random source failed");
        let me = LockFile {
            host: crate::host_name(),
            pid: std::process::id(),
            time: Utc::now(),
            nonce: hex::encode(nonce),
        };
        let bytes = serde_json::to_vec(&me).expect("lock serializes");
        for _ in 0..2 {
            match repo.store().put_new_unlocked(&lock_path(), bytes.clone()) {
                Ok(()) => return Ok(GcLock::held(repo, bytes)),
                Err(Error::Storage(object_store::Error::AlreadyExists { .. })) => {}
                Err(e) => return Err(e),
            }
            let held: Option<LockFile> = repo
                .store()
                .get(&lock_path())?
                .and_then(|b| serde_json::from_slice(&b).ok());
            let refreshed = repo.store().modified(&lock_path())?;
            let stale = match (&held, refreshed) {
                (None, _) | (_, None) => true,
                (Some(h), _) if h.host == me.host && !process_alive(h.pid) => true,
                // another host's (or a live process's) lock: abandoned once its refresh is overdue
                (Some(_), Some(at)) => {
                    repo.store().now()? - at > Duration::from_std(lock_lease()).expect("lease fits")
                }
            };
            if !stale {
                let h = held.expect("not stale");
                return Err(Error::Invalid(format!(
                    "another gc holds the repository's gc lock (host {}, pid {}, since {}); wait for it, or delete locks/gc if it is certainly not running",
                    h.host, h.pid, h.time
                )));
            }
            tracing::warn!("removing an abandoned gc lock");
            repo.store().delete_unlocked(&lock_path())?;
        }
        Err(Error::Invalid(
            "could not take the gc lock: another gc started at the same moment; try again".into(),
        ))
    }

    /// The lock just taken, with its heartbeat started.
    fn held(repo: &'r Repository, bytes: Vec<u8>) -> GcLock<'r> {
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let store = repo.store().clone();
        let (mine, flag) = (bytes.clone(), lost.clone());
        let heartbeat = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(lock_lease() / 3)
            {
                // refresh only a lock that is still this run's
                let refreshed = match store.get(&lock_path()) {
                    Ok(Some(b)) if b == mine => store.put_unlocked(&lock_path(), mine.clone()),
                    Ok(_) => Err(Error::Invalid("the gc lock was taken over".into())),
                    Err(e) => Err(e),
                };
                if let Err(e) = refreshed {
                    tracing::error!("could not refresh the gc lock: {e}");
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        });
        GcLock {
            repo,
            bytes,
            lost,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        }
    }

    /// An error once the heartbeat could not keep the lock: another gc may be running.
    fn ensure_held(&self) -> Result<()> {
        if self.lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Invalid(
                "this gc could not refresh its gc lock in time (the store was unreachable, or the run was paused), so another gc may have taken it; it stopped before deleting anything: run gc again".into(),
            ));
        }
        Ok(())
    }
}

impl Drop for GcLock<'_> {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
        // release only a lock that is still this run's
        match self.repo.store().get(&lock_path()) {
            Ok(Some(b)) if b == self.bytes => {
                if let Err(e) = self.repo.store().delete_unlocked(&lock_path()) {
                    tracing::warn!("could not release the gc lock: {e}");
                }
            }
            Ok(_) => tracing::warn!("the gc lock was no longer this run's"),
            Err(e) => tracing::warn!("could not release the gc lock: {e}"),
        }
    }
}

fn process_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// The live set of every snapshot listed now, reading one tree at a time. Any snapshot or tree
/// that cannot be read stops the run: gc never deletes while unsure what is live.
/// At most `budget` data blobs are held in memory (see [`LiveSet`]).
fn live_set(
    repo: &Repository,
    report: &mut GcReport,
    progress: &Progress,
    budget: usize,
) -> Result<LiveSet> {
    let mut live = LiveSet::new(budget);
    // a large live set spills into the local cache, on the disk that holds it already
    let spill_dir = repo.cache_dir();
    live_set::remove_leftovers(spill_dir);
    let mut stack = vec![];
    for (id, _) in repo.store().list(ObjectKind::Snapshot)? {
        let snap = Snapshot::load(repo, &id)?;
        report.snapshots += 1;
        stack.push(snap.tree);
    }
    while let Some(tree_id) = stack.pop() {
        if !live.add_tree(tree_id) {
            continue;
        }
        progress.entry_done(0);
        for node in Tree::load(repo, &tree_id)?.nodes {
            live.add_data(&node.content, spill_dir)?;
            stack.extend(node.subtree);
        }
    }
    live.finish();
    report.live_blobs = live.len()?;
    Ok(live)
}

/// How much later than a mark (or a pack) a writer session may have begun and still not have
/// seen it: the slack for the different clocks behind those times.
const SESSION_MARGIN: Duration = Duration::minutes(5);

/// Runs garbage collection.
pub fn run(repo: &Repository, options: GcOptions, progress: &Progress) -> Result<GcReport> {
    let lock = GcLock::acquire(repo)?;
    // in a lock-enabled repository, only credentials that can read locks may delete
    repo.store().locked_until(&ObjectPath::from("config"))?;
    let mut report = GcReport::default();
    // Times compared below are the store's: its Last-Modified of the lock, packs and sessions,
    // and marks dated by this run from that start and a monotonic clock.
    // (S3 gives Last-Modified in whole seconds: the run's start is then up to a second early,
    // which only ever delays a deletion)
    let started = repo
        .store()
        .modified(&lock_path())?
        .unwrap_or_else(Utc::now);
    let clock = (std::time::Instant::now(), std::time::SystemTime::now());
    // Uploads before sessions: one begun by a writer still running is covered by its session.
    // (Stores' `Initiated` dates are not to be trusted: moto gives a fixed one.)
    let open_uploads = repo.store().open_uploads()?;
    // Sessions before snapshots: a writer that commits after the snapshots are listed is live.
    let sessions = session::live_sessions(repo, started)?;
    report.writers_running = sessions.len() as u64;
    for s in &sessions {
        tracing::info!(writer = %s.who, since = %s.started, "writer running");
    }
    // Whether a running writer may not have seen a mark written, or may have written a pack, at `t`.
    let writer_since = |t: DateTime<Utc>| sessions.iter().any(|s| s.started <= t + SESSION_MARGIN);
    progress.set_current("reading the index");
    repo.sync_index()?;
    let marks = load_marks(repo)?;
    let marked = marked_packs(&marks);
    progress.set_current("finding the data snapshots need (entries: trees read)");
    let live = live_set(repo, &mut report, progress, live_set::IN_MEMORY)?;
    progress.set_current("reading the index: live bytes per pack");

    // The index as the repository holds it now; segments written later by backups survive.
    // It is read one segment at a time, in passes: memory holds per-pack figures, not entries.
    let mut index = ActiveSegments::of(repo, segments::KEPT_ENTRIES)?;
    let sizes: HashMap<Id, (u64, DateTime<Utc>)> = repo
        .store()
        .list_dated(ObjectKind::Pack)?
        .into_iter()
        .map(|(id, size, t)| (id, (size, t)))
        .collect();
    let (due, waiting): (Vec<_>, Vec<_>) = marks
        .iter()
        .filter(|(_, m)| m.due() <= started)
        .partition(|(_, m)| !writer_since(m.time));
    report.marks_waiting_for_writers = waiting.len() as u64;
    report.marks_pending = (marks.len() - due.len()) as u64;
    let due_packs: HashSet<Id> = due
        .iter()
        .flat_map(|(_, m)| m.packs.iter().copied())
        .collect();

    // Pass 1: stored and live bytes of every pack; the live blobs of packs due for deletion.
    let mut figures: HashMap<Id, (u64, u64)> = HashMap::new();
    let mut at_risk: HashMap<Id, Vec<Id>> = HashMap::new();
    let mut sweep = live.sweep(live_set::SWEEP_BATCH, |pack, blobs, live_blobs| {
        let total = blobs.iter().map(|b| b.length as u64).sum();
        let alive = live_blobs.iter().map(|b| b.length as u64).sum();
        figures.insert(*pack, (total, alive));
        if due_packs.contains(pack) {
            at_risk.insert(*pack, live_blobs.iter().map(|b| b.id).collect());
        }
        Ok(())
    });
    index.for_each_pack(|pack, blobs| sweep.push(pack, blobs))?;
    sweep.finish()?;

    // Mark: dead packs, and partly live packs after copying their live blobs elsewhere.
    let mut to_mark = vec![];
    let mut to_repack = HashSet::new();
    for (pack, &(total, alive)) in &figures {
        if marked.contains(pack) {
            continue;
        }
        if alive == 0 {
            to_mark.push(*pack);
        } else if (alive as f64) < options.repack_below * total as f64 {
            to_repack.insert(*pack);
        }
    }

    // Pass 2 (when needed): which at-risk blobs another, unmarked pack also holds, and the
    // entries of the packs to repack.
    let wanted: HashSet<Id> = at_risk.values().flatten().copied().collect();
    let mut covered: HashSet<Id> = HashSet::new();
    let mut repack_entries: HashMap<Id, Vec<PackedBlob>> = HashMap::new();
    if !wanted.is_empty() || !to_repack.is_empty() {
        index.for_each_pack(|pack, blobs| {
            // only a copy in a pack that is stored, and long enough to hold its blobs, counts
            let stored = sizes
                .get(pack)
                .is_some_and(|(size, _)| blobs.iter().all(|b| b.range().end as u64 <= *size));
            if stored && !marked.contains(pack) {
                covered.extend(blobs.iter().map(|b| b.id).filter(|id| wanted.contains(id)));
            }
            if to_repack.contains(pack) {
                repack_entries.insert(*pack, blobs.to_vec());
            }
            Ok(())
        })?;
    }

    // Sweep: a due pack goes unless it holds a live blob that no unmarked pack holds. (Packs
    // in no index are judged by their own headers below.)
    let mut doomed: HashSet<Id> = HashSet::new();
    for (_, mark) in &due {
        for pack in mark.packs.iter().filter(|p| figures.contains_key(p)) {
            let needed = at_risk
                .get(pack)
                .is_some_and(|ids| ids.iter().any(|id| !covered.contains(id)));
            if needed {
                report.packs_resurrected += 1;
            } else {
                doomed.insert(*pack);
            }
        }
    }
    // Packs in no index, older than the safety interval and than every running writer:
    // leftovers of interrupted writers, or packs whose index segment was lost. Each is read
    // whole and judged by the blobs that verify in it: kept and indexed again if one is live,
    // kept if unreadable, else marked (or, when already due, deleted) like any dead pack.
    let mut adopted = vec![];
    for (pack, (_, modified)) in &sizes {
        if figures.contains_key(pack)
            || *modified + options.safety > started
            || writer_since(*modified)
        {
            continue;
        }
        // the whole pack, each blob verified: a planted or decayed pack must not count as a copy
        let read = repair::read_pack(repo, pack).map(repair::PackRead::into_intact);
        let holds_live = match &read {
            Ok(blobs) => !live.live_in(blobs)?.is_empty(),
            Err(_) => false,
        };
        match read {
            Err(e) => {
                tracing::warn!(
                    "pack {pack} is in no index and its header cannot be read; it is kept: {e}"
                );
                report.packs_unreadable += 1;
            }
            Ok(blobs) if holds_live => {
                report.packs_adopted += 1;
                adopted.push((*pack, blobs));
            }
            Ok(_) if due_packs.contains(pack) => {
                doomed.insert(*pack);
            }
            Ok(_) if !marked.contains(pack) => to_mark.push(*pack),
            Ok(_) => {}
        }
    }

    if !to_repack.is_empty() {
        progress.set_current(format_args!("repacking {} packs", to_repack.len()));
        let excluded: HashSet<Id> = to_repack.iter().chain(&marked).copied().collect();
        let packer = Packer::excluding(repo, excluded);
        for (pack, entries) in &repack_entries {
            let bytes = repo
                .store()
                .get_bounded(&ObjectKind::Pack.path(pack), ObjectKind::Pack.max_size())?
                .ok_or_else(|| Error::damaged("pack", pack, "it is missing from the repository"))?;
            for b in live.live_in(entries)? {
                let plain = pack::open_blob_in(repo.keys(), pack, &bytes, 0, b)?;
                packer.save_with_id(b.kind, b.id, &plain)?;
                progress.add_bytes(plain.len() as u64);
            }
        }
        packer.finish()?;
        report.packs_repacked = to_repack.len() as u64;
        to_mark.extend(&to_repack);
    }

    // Compact (pass 3): every pack that stays, in segments of at most `segment_entries`
    // entries; the last one written supersedes the segments read above, so that readers never
    // see a part of the new index without the old one.
    progress.set_current("writing the compacted index");
    let old_segments = index.listed.clone();
    // the compacted segments start a new epoch; the last retires every older one (format §7)
    let epoch = if repo.has_epochs() {
        index.epoch + 1
    } else {
        0
    };
    let fresh_segment = || IndexSegment {
        packs: vec![],
        lineage: Lineage {
            epoch,
            ..Lineage::default()
        },
    };
    let mut compacted = fresh_segment();
    let mut entries = 0;
    index.for_each_pack(|pack, blobs| {
        if doomed.contains(pack) {
            return Ok(());
        }
        // every listed segment's packs were stored before the packs were listed above
        if !sizes.contains_key(pack) {
            tracing::warn!("pack {pack} is indexed but not in the repository: left out of the index; run `cairn check` to see what it affects");
            report.packs_missing += 1;
            return Ok(());
        }
        if entries > 0 && entries + blobs.len() > options.segment_entries {
            repo.save_index(&std::mem::replace(&mut compacted, fresh_segment()))?;
            entries = 0;
        }
        entries += blobs.len();
        compacted.packs.push((*pack, blobs.to_vec()));
        Ok(())
    })?;
    compacted.packs.extend(adopted);
    compacted.lineage.supersedes = old_segments.clone();
    compacted.lineage.retires_below = epoch.saturating_sub(1);
    // what follows deletes: only while no other gc can be running
    lock.ensure_held()?;
    // staging files of uploads killed an hour ago or more (no upload takes that long idle)
    repo.store()
        .remove_staging_leftovers(std::time::Duration::from_secs(3600))?;
    // multipart uploads open when this run began, when no writer was running: their process
    // is gone (a writer stores its session before it uploads anything)
    if sessions.is_empty() {
        repo.store().abort_uploads(&open_uploads)?;
        report.uploads_aborted = open_uploads.len() as u64;
    }
    repo.save_index(&compacted)?;
    for seg in &old_segments {
        // a segment under an object lock stays, superseded, until a later run deletes it
        if delete_unless_locked(repo, &ObjectKind::Index.path(seg), &mut report)? {
            report.segments_compacted += 1;
        }
    }

    progress.set_current(format_args!("deleting {} packs", doomed.len()));
    for pack in &doomed {
        let size = sizes.get(pack).map_or(0, |(s, _)| *s);
        // a pack under an object lock is no longer indexed; a later run deletes it as a leftover
        if delete_unless_locked(repo, &ObjectKind::Pack.path(pack), &mut report)? {
            repo.forget_cached_pack(pack);
            report.packs_deleted += 1;
            report.bytes_freed += size;
        } else {
            report.bytes_locked += size;
        }
    }
    if !to_mark.is_empty() {
        report.packs_marked = to_mark.len() as u64;
        report.bytes_marked = to_mark
            .iter()
            .map(|p| sizes.get(p).map_or(0, |(s, _)| *s))
            .sum();
        let mark = Mark {
            version: 1,
            // the longer of the two clocks: a suspended machine's monotonic clock stands still
            time: started
                + Duration::from_std(clock.0.elapsed().max(clock.1.elapsed().unwrap_or_default()))
                    .unwrap_or_default(),
            safety_secs: options.safety.num_seconds().max(0) as u64,
            packs: to_mark,
        };
        repo.save_object(
            ObjectKind::Mark,
            Domain::Mark,
            &serde_json::to_vec(&mark).expect("mark serializes"),
        )?;
    }
    for (id, _) in due {
        delete_unless_locked(repo, &ObjectKind::Mark.path(id), &mut report)?;
    }
    repo.rebuild_local_index()?;
    if let (Some(within), Some(lock)) = (options.extend_locks_within, repo.store().lock()) {
        let marked_now: HashSet<Id> = load_marks(repo)?
            .iter()
            .flat_map(|(_, m)| m.packs.iter().copied())
            .collect();
        report.locks_extended = extend_locks(repo, lock, within, &marked_now)?;
    }
    tracing::info!(
        snapshots = report.snapshots,
        packs_deleted = report.packs_deleted,
        bytes_freed = report.bytes_freed,
        packs_marked = report.packs_marked,
        packs_repacked = report.packs_repacked,
        "gc done"
    );
    Ok(report)
}

/// Extends the object lock of every object still needed (config, keys, active index segments,
/// packs not marked for deletion) whose lock ends within `within`, to `lock.days` from now.
/// Snapshots are left to `forget`, which knows the policy: one the policy lets go must be able
/// to unlock. Only objects old enough to be near the end of their lock are asked.
fn extend_locks(
    repo: &Repository,
    lock: ObjectLock,
    within: Duration,
    marked: &HashSet<Id>,
) -> Result<u64> {
    let now = Utc::now();
    let horizon = now + within;
    // written at `modified`, an object was locked until at least `modified + days - 1 day`
    // (its writer started before; no backup takes a day)
    let may_end_soon =
        |modified: DateTime<Utc>| lock.retain_until(modified) - Duration::days(1) <= horizon;
    let superseded: HashSet<Id> = repo
        .index()
        .known_segments()?
        .into_iter()
        .filter(|(_, k)| !k.active)
        .map(|(id, _)| id)
        .collect();
    let mut paths = vec![];
    for (kind, left_out) in [
        (ObjectKind::Key, &HashSet::new()),
        (ObjectKind::Index, &superseded),
        (ObjectKind::Pack, marked),
    ] {
        for (id, _, modified) in repo.store().list_dated(kind)? {
            if may_end_soon(modified) && !left_out.contains(&id) {
                paths.push(kind.path(&id));
            }
        }
    }
    paths.push(ObjectPath::from("config"));
    let until = lock.retain_until(now);
    let wanted = paths
        .into_iter()
        .map(|path| Wanted {
            path,
            below: horizon,
            until,
        })
        .collect();
    // locked long enough (perhaps by `forget`, beyond `until`), or gone since the listing
    let extensions = object_lock::plan(repo, wanted)?;
    object_lock::extend(repo, &extensions)?;
    Ok(extensions.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backup::{self, BackupOptions};
    use crate::ops::check::{self, DataSubset};
    use crate::progress::Progress;

    /// A repository of many small packs: 4 KiB chunks in packs of 16 KiB.
    fn small_packs_repo(dir: &std::path::Path) -> Repository {
        crate::repository::small_test_repository(dir, 16 * 1024)
    }

    use crate::repository::test_noise as noise;

    fn pack_count(index: &mut ActiveSegments) -> usize {
        let mut packs = 0;
        index
            .for_each_pack(|_, _| {
                packs += 1;
                Ok(())
            })
            .unwrap();
        packs
    }

    /// Backs `data` up with the default options.
    fn back_up(repo: &Repository, data: &std::path::Path) {
        let data = [data.to_owned()];
        backup::backup(repo, &data, &BackupOptions::default(), &Progress::default()).unwrap();
    }

    #[test]
    fn compaction_writes_bounded_segments_and_keeps_every_pack_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = small_packs_repo(dir.path());
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("a"), noise(1, 600_000)).unwrap();
        back_up(&repo, &data);
        let packs = pack_count(&mut ActiveSegments::of(&repo, 0).unwrap());
        assert!(packs > 20, "{packs} packs");

        let options = GcOptions {
            segment_entries: 40,
            ..GcOptions::default()
        };
        run(&repo, options, &Progress::default()).unwrap();
        repo.rebuild_local_index().unwrap();
        let segments = repo.index_segments().unwrap();
        assert!(
            segments.active.len() > 2,
            "{} segments",
            segments.active.len()
        );
        for (_, segment) in &segments.active {
            let entries: usize = segment.packs.iter().map(|(_, b)| b.len()).sum();
            assert!(
                entries <= 40 || segment.packs.len() == 1,
                "{entries} entries"
            );
        }
        let superseding = segments
            .active
            .iter()
            .filter(|(_, s)| !s.lineage.supersedes.is_empty());
        assert_eq!(superseding.count(), 1, "only the last segment supersedes");
        // a pass with no room to keep segments still sees every pack, every time
        let mut index = ActiveSegments::of(&repo, 0).unwrap();
        for _ in 0..2 {
            assert_eq!(pack_count(&mut index), packs);
        }
        let report = check::check(&repo, DataSubset::All, &Progress::default()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    /// A writer's segment stored after a compaction listed the index, in an epoch that
    /// compaction retires (a put that outlasted a whole other gc run, format §7), is included
    /// by the next compaction: its packs never end up in no index.
    #[test]
    fn a_segment_retired_by_epoch_alone_is_compacted_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let repo = small_packs_repo(dir.path());
        let backup = |name: &str, seed: u64| {
            let data = dir.path().join(name);
            std::fs::create_dir(&data).unwrap();
            std::fs::write(data.join("f"), noise(seed, 100_000)).unwrap();
            back_up(&repo, &data);
        };
        backup("a", 1);
        for _ in 0..2 {
            run(&repo, GcOptions::default(), &Progress::default()).unwrap();
        }
        backup("b", 2);
        // the writer of b had seen epoch 0: its segment is retired by the floor of epoch 1
        let segments = repo.index_segments().unwrap();
        let (id, mut written) = segments
            .active
            .into_iter()
            .find(|(_, s)| s.lineage.supersedes.is_empty() && s.lineage.retires_below == 0)
            .unwrap();
        assert_eq!(written.lineage.epoch, 2);
        repo.store().delete(&ObjectKind::Index.path(&id)).unwrap();
        written.lineage.epoch = 0;
        repo.save_index(&written).unwrap();
        // a gc runs before the writer commits: its snapshot is not stored yet
        let (snapshot, _) = crate::format::snapshot::Snapshot::load_all(&repo)
            .unwrap()
            .pop()
            .unwrap();
        let path = ObjectKind::Snapshot.path(&snapshot);
        let stored = repo.store().get(&path).unwrap().unwrap();
        repo.store().delete(&path).unwrap();
        repo.rebuild_local_index().unwrap();
        run(&repo, GcOptions::default(), &Progress::default()).unwrap();
        repo.store().put(&path, stored).unwrap();

        repo.rebuild_local_index().unwrap();
        let report = check::check(&repo, DataSubset::All, &Progress::default()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn a_live_set_kept_on_disk_answers_as_the_one_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let repo = small_packs_repo(dir.path());
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        for (name, seed) in [("a", 1), ("b", 2)] {
            std::fs::write(data.join(name), noise(seed, 300_000)).unwrap();
        }
        back_up(&repo, &data);
        std::fs::write(data.join("b"), noise(3, 300_000)).unwrap();
        back_up(&repo, &data);

        let walk = |budget| {
            let mut report = GcReport::default();
            let live = live_set(&repo, &mut report, &Progress::default(), budget).unwrap();
            (live, report.live_blobs)
        };
        let (in_memory, count) = walk(live_set::IN_MEMORY);
        let (on_disk, count_on_disk) = walk(1);
        let spilled = || std::fs::read_dir(repo.cache_dir()).unwrap().count();
        assert_eq!(spilled(), 2, "the index cache and the spilled live set");
        assert_eq!(count_on_disk, count);
        let (mut indexed, mut live) = (0, 0);
        let mut index = ActiveSegments::of(&repo, 0).unwrap();
        index
            .for_each_pack(|_, blobs| {
                for b in blobs {
                    let kept = in_memory.contains(&b.id)?;
                    assert_eq!(on_disk.contains(&b.id)?, kept, "blob {}", b.id);
                    indexed += 1;
                    live += u64::from(kept);
                }
                Ok(())
            })
            .unwrap();
        // both snapshots' blobs: the trees of each, and a, b and b's replacement
        assert_eq!(live, count);
        assert!(indexed > 60 && live == indexed, "{live} of {indexed}");
        let unknown = Id([0xab; 32]);
        assert!(!in_memory.contains(&unknown).unwrap() && !on_disk.contains(&unknown).unwrap());
        drop(on_disk);
        assert_eq!(spilled(), 1, "the spilled live set is deleted with it");
    }
}
