//! Writer sessions: a backup or copy announces itself in `sessions/<id>` while it runs, so that
//! garbage collection never deletes what a running writer may still reference (format-spec §12).
//!
//! A session is a lease. Its object is written when the writer starts (before it reads the
//! marks) and rewritten every fifth of the lease; gc counts a session live while the store's
//! `Last-Modified` of that object is younger than the lease, and neither sweeps a mark written
//! before a live session began nor touches an unindexed pack written after it began. A writer
//! commits only if it never went longer than half its lease without a successful refresh (so
//! no gc can have taken it for dead) and every pack it wrote is still stored.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Duration, Utc};
use crossbeam_channel::{Sender, bounded};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::repository::Repository;
use crate::repository::marks::{self, Mark};
use crate::repository::packer::PackerStats;
use crate::repository::store::ObjectKind;
use crate::repository::store::Store;

/// The lease a writer takes, in seconds: `CAIRN_SESSION_LEASE` (2 s to 1 day), default 15 min.
fn lease_secs() -> u64 {
    crate::env_number("CAIRN_SESSION_LEASE", 2..=86_400, 900) as u64
}

/// The content of `sessions/<id>` (plain JSON: it grants nothing; whoever can rewrite it can
/// delete packs anyway).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionFile {
    /// Host of the writer.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// What it does (`backup`, `copy`).
    pub command: String,
    /// When the session began, in the store's clock (the object's first `Last-Modified`).
    pub started: Option<DateTime<Utc>>,
    /// How long after its last refresh the session counts as abandoned.
    pub lease_secs: u64,
}

/// A session as gc sees it.
#[derive(Clone, Debug)]
pub struct LiveSession {
    /// When it began (store clock).
    pub started: DateTime<Utc>,
    /// Host and process, for messages.
    pub who: String,
}

/// Sessions whose lease has not run out at `now` (store clock). A session object that cannot be
/// read counts as live from the start of time, so that gc errs on the side of keeping data.
pub fn live_sessions(repo: &Repository, now: DateTime<Utc>) -> Result<Vec<LiveSession>> {
    let mut live = vec![];
    for (id, _, modified) in repo.store().list_dated(ObjectKind::Session)? {
        // a session that ended since the listing is gone, not unreadable
        let Some(bytes) = repo.store().get_bounded(
            &ObjectKind::Session.path(&id),
            ObjectKind::Session.max_size(),
        )?
        else {
            continue;
        };
        let file: Option<SessionFile> = serde_json::from_slice(&bytes).ok();
        let lease = file.as_ref().map_or(86_400, |f| f.lease_secs.min(86_400));
        if modified + Duration::seconds(lease as i64) <= now {
            continue;
        }
        live.push(match file {
            Some(f) => LiveSession {
                started: f.started.unwrap_or(modified).min(modified),
                who: format!("{} on {} (pid {})", f.command, f.host, f.pid),
            },
            None => LiveSession {
                started: DateTime::<Utc>::MIN_UTC,
                who: format!("unreadable session {}", id.short()),
            },
        });
    }
    Ok(live)
}

/// How the lease has been kept so far.
struct Lease {
    /// Start of the last refresh that succeeded (monotonic and wall clock).
    last_ok: (Instant, SystemTime),
    /// Longest time between two successful refreshes.
    longest_gap: std::time::Duration,
}

impl Lease {
    /// Time from the last successful refresh to `at`: the longer of the monotonic and the wall
    /// clock, so that neither a stopped process nor a suspended machine hides a gap.
    fn gap_until(&self, at: (Instant, SystemTime)) -> std::time::Duration {
        let wall = at.1.duration_since(self.last_ok.1).unwrap_or_default();
        at.0.saturating_duration_since(self.last_ok.0).max(wall)
    }
}

/// A running writer's session; dropping it ends the session.
pub struct Session {
    store: Store,
    path: object_store::path::Path,
    /// When it began, in the store's clock.
    started: DateTime<Utc>,
    lease: std::time::Duration,
    state: Arc<Mutex<Lease>>,
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
    /// The marks read at the start: packs the writer must not deduplicate against.
    marks: Vec<(Id, Mark)>,
}

impl Session {
    /// Announces a writer (`command` names it) and reads the marks, in that order.
    pub fn begin(repo: &Repository, command: &str) -> Result<Session> {
        let store = repo.store().clone();
        let path = ObjectKind::Session.path(&Id(crate::format::crypto::random_bytes()));
        let lease_secs = lease_secs();
        let mut file = SessionFile {
            host: crate::host_name(),
            pid: std::process::id(),
            command: command.into(),
            started: None,
            lease_secs,
        };
        let first = (Instant::now(), SystemTime::now());
        store.put_unlocked(
            &path,
            serde_json::to_vec(&file).expect("session serializes"),
        )?;
        let begun = store
            .modified(&path)
            .map(|t| t.unwrap_or_else(Utc::now))
            .and_then(|started| Ok((started, marks::load_marks(repo)?)));
        let (started, marks) = match begun {
            Ok(begun) => begun,
            Err(e) => {
                let _ = store.delete_unlocked(&path);
                return Err(e);
            }
        };
        file.started = Some(started);
        let body = serde_json::to_vec(&file).expect("session serializes");
        let lease = std::time::Duration::from_secs(lease_secs);
        let state = Arc::new(Mutex::new(Lease {
            last_ok: first,
            longest_gap: std::time::Duration::ZERO,
        }));
        let (stop, stopped) = bounded::<()>(0);
        let refresher = {
            let (store, path, state) = (store.clone(), path.clone(), state.clone());
            std::thread::Builder::new()
                .name("cairn-session".into())
                .spawn(move || {
                    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(lease / 5)
                    {
                        let attempt = (Instant::now(), SystemTime::now());
                        match store.put_unlocked(&path, body.clone()) {
                            Ok(()) => {
                                let mut s = state.lock().expect("lock");
                                s.longest_gap = s.longest_gap.max(s.gap_until(attempt));
                                s.last_ok = attempt;
                            }
                            Err(e) => tracing::warn!("could not refresh the writer session: {e}"),
                        }
                    }
                })
                .map_err(|e| Error::io("session thread", e))?
        };
        Ok(Session {
            store,
            path,
            started,
            lease,
            state,
            stop: Some(stop),
            refresher: Some(refresher),
            marks,
        })
    }

    /// When the session began, in the store's clock.
    pub fn started(&self) -> DateTime<Utc> {
        self.started
    }

    /// The packs marked for deletion when the session began: never deduplicate against them.
    pub fn marked_packs(&self) -> HashSet<Id> {
        marks::marked_packs(&self.marks)
    }

    /// Refuses unless the lease was kept so far: the writer never went half its lease without
    /// renewing it, so no gc can have counted it as gone. Called before each index segment
    /// and before the snapshot is stored.
    pub fn check_lease(&self) -> Result<()> {
        let gap = {
            let s = self.state.lock().expect("lock");
            s.longest_gap
                .max(s.gap_until((Instant::now(), SystemTime::now())))
        };
        if gap * 2 >= self.lease {
            return Err(Error::Invalid(format!(
                "this writer went {}s without renewing its session (lease {}s: paused, suspended or cut off from the store), so a garbage collection may have deleted data it references; nothing was committed: run it again",
                gap.as_secs(),
                self.lease.as_secs()
            )));
        }
        Ok(())
    }

    /// Called right after the writer stored `object` (its snapshot, or an index segment): if
    /// the lease lapsed while it was being stored, a gc may have deleted what it references,
    /// so the object is deleted again and the writer fails.
    pub fn confirm_stored(&self, repo: &Repository, kind: ObjectKind, object: &Id) -> Result<()> {
        let lapsed = self.check_lease();
        if lapsed.is_err() {
            let path = kind.path(object);
            if let Err(e) = repo.store().delete(&path) {
                tracing::error!(
                    "could not take back {path} after the session lapsed: {e}; run `cairn check`"
                );
            }
        }
        lapsed
    }

    /// Called just before the writer's snapshot is stored: refuses unless the lease was kept
    /// throughout and every pack the writer stored or deduplicated against (`stats`) is still
    /// in the repository, and, in repositories of format version 4 and older (where a gc of an
    /// older release, which ignores sessions, may run), unless no mark written since the start
    /// falls due soon; and unless no index segment it stored was retired meanwhile (format §7).
    pub fn confirm_commit(&self, repo: &Repository, stats: &PackerStats) -> Result<()> {
        self.check_lease()?;
        let needed: Vec<&Id> = stats.packs.iter().chain(&stats.referenced).collect();
        let stored: HashSet<Id> = if needed.len() > 256 {
            repo.store().ids(ObjectKind::Pack)?.into_iter().collect()
        } else {
            let mut present = HashSet::new();
            for pack in &needed {
                if repo
                    .store()
                    .modified(&ObjectKind::Pack.path(pack))?
                    .is_some()
                {
                    present.insert(**pack);
                }
            }
            present
        };
        if let Some(lost) = needed.iter().find(|p| !stored.contains(p)) {
            return Err(Error::Invalid(format!(
                "pack {} that this run stored or reuses data from is no longer in the repository (deleted by a garbage collection or by hand); nothing was committed: run it again (`cairn check` shows what else it affects)",
                lost.short()
            )));
        }
        if repo.config().version < 5 {
            marks::check_backup_may_commit(repo, self.started)?;
        }
        if repo.has_epochs() && !stats.segments.is_empty() {
            // a gc that listed the index before a segment of this run appeared, in an epoch
            // older than the one it started, retires that segment without including it (§7)
            repo.sync_index()?;
            let known = repo.index().known_segments()?;
            let floor = known.values().map(|k| k.lineage.retires_below).max();
            let superseded: HashSet<&Id> =
                known.values().flat_map(|k| &k.lineage.supersedes).collect();
            let dropped = stats.segments.iter().find(|s| {
                known.get(*s).is_some_and(|k| Some(k.lineage.epoch) < floor)
                    && !superseded.contains(s)
            });
            if let Some(segment) = dropped {
                return Err(Error::Invalid(format!(
                    "index segment {} that this run stored was retired by a garbage collection that ran meanwhile; nothing was committed and nothing is lost: run it again",
                    segment.short()
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        if let Err(e) = self.store.delete_unlocked(&self.path) {
            tracing::warn!("could not remove the writer session {}: {e}", self.path);
        }
    }
}
