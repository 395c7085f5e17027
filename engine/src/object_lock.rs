//! Extending S3 Object Lock retention (format §13): what `forget` extends so that every kept
//! snapshot stays locked for as long as its retention policy can keep it, what `gc` extends
//! while objects are needed, and how extensions are read, made and reported.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use object_store::path::Path as ObjectPath;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repository::{ObjectKind, Repository};
use crate::retention::Decision;
use crate::snapshot::Snapshot;
use crate::store::ObjectLock;
use crate::tree::Tree;

/// An object whose lock should end no earlier than `below`; if it does, it is extended to
/// `until` (never shortened).
#[derive(Clone, Debug)]
pub struct Wanted {
    /// The object.
    pub path: ObjectPath,
    /// Its lock must not end before this.
    pub below: DateTime<Utc>,
    /// The date it is extended to.
    pub until: DateTime<Utc>,
}

/// One lock extension, planned or made.
#[derive(Clone, Debug, Serialize)]
pub struct Extension {
    /// The object's name in the repository.
    pub object: String,
    /// When its lock ended before.
    pub from: DateTime<Utc>,
    /// When it ends now.
    pub until: DateTime<Utc>,
}

/// Reads the lock of every wanted object (HeadObject, in parallel) and returns the extensions
/// needed: objects whose lock ends before their `below` and before their `until`. Objects gone
/// since they were listed need none.
pub fn plan(repo: &Repository, wanted: Vec<Wanted>) -> Result<Vec<Extension>> {
    let planned: Vec<Option<Extension>> = wanted
        .into_par_iter()
        .map(|w| {
            Ok(match repo.store().locked_until(&w.path)? {
                Some(from) if from < w.below && from < w.until => Some(Extension {
                    object: w.path.to_string(),
                    from,
                    until: w.until,
                }),
                _ => None,
            })
        })
        .collect::<Result<_>>()?;
    Ok(planned.into_iter().flatten().collect())
}

/// Makes the extensions, in parallel, each request retried by the store as any other: first
/// those of other objects, then those of snapshots, so that no snapshot is extended before its
/// data. Every one of a phase is tried, and those that failed are named in one error.
pub fn extend(repo: &Repository, extensions: &[Extension]) -> Result<()> {
    let (snapshots, others): (Vec<&Extension>, Vec<&Extension>) = extensions
        .iter()
        .partition(|e| e.object.starts_with(ObjectKind::Snapshot.dir()));
    extend_all(repo, &others)?;
    extend_all(repo, &snapshots)
}

fn extend_all(repo: &Repository, extensions: &[&Extension]) -> Result<()> {
    let failed: Vec<String> = extensions
        .par_iter()
        .filter_map(|e| {
            repo.store()
                .extend_lock(&ObjectPath::from(e.object.as_str()), e.until)
                .err()
                .map(|err| format!("{} ({err})", e.object))
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    const NAMED: usize = 20;
    let more = match failed.len() > NAMED {
        true => format!(" and {} more", failed.len() - NAMED),
        false => String::new(),
    };
    Err(Error::Invalid(format!(
        "could not extend the object lock of {} objects: {}{more}; check the credentials' s3:PutObjectRetention permission and run the command again",
        failed.len(),
        failed[..failed.len().min(NAMED)].join(", ")
    )))
}

/// What `forget` extends, given its decisions: every kept snapshot, every pack holding a blob
/// it needs, `config` and the key files are to stay locked until the snapshot's
/// [`Decision::kept_until`] (packs shared by several snapshots: the latest); and, rolling, every
/// kept snapshot whose lock ends within `within` is extended to `lock.days` from `now`, as `gc`
/// does for the objects it keeps. Index segments are not: they are rebuilt from the packs'
/// headers (`repair index`), and superseded ones must be able to go.
pub fn for_kept_snapshots(
    repo: &Repository,
    lock: ObjectLock,
    decisions: &[Decision],
    snapshots: &[(Id, Snapshot)],
    within: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Extension>> {
    let kept: Vec<&Decision> = decisions.iter().filter(|d| d.keep).collect();
    let (rolling_below, rolling_until) = (now + within, lock.retain_until(now));
    // the walk below needs the index
    // blobs → packs, through the trees of snapshots taken by decreasing bound: a tree already
    // walked for a later bound has all its packs at that bound
    let mut bounded: Vec<(&Decision, DateTime<Utc>)> = kept
        .iter()
        .filter_map(|d| d.kept_until.map(|b| (*d, b)))
        .filter(|(_, b)| *b > now)
        .collect();
    bounded.sort_by_key(|d| std::cmp::Reverse(d.1));
    let trees: HashMap<Id, Id> = snapshots.iter().map(|(id, s)| (*id, s.tree)).collect();
    let mut pack_bound: HashMap<Id, DateTime<Utc>> = HashMap::new();
    if !bounded.is_empty() {
        repo.sync_index()?;
    }
    let mut walked = HashSet::new();
    for (d, bound) in &bounded {
        let mut stack: Vec<Id> = trees.get(&d.id).copied().into_iter().collect();
        while let Some(tree) = stack.pop() {
            if !walked.insert(tree) {
                continue;
            }
            let mut blobs = vec![tree];
            match Tree::load(repo, &tree) {
                Ok(t) => {
                    for node in t.nodes {
                        blobs.extend(node.content);
                        stack.extend(node.subtree);
                    }
                }
                // what cannot be read cannot be protected: `check` names it
                Err(e) => tracing::warn!("tree {tree} of snapshot {} cannot be read: {e}", d.id),
            }
            for blob in blobs {
                match repo.index().get(&blob)? {
                    Some(at) => {
                        pack_bound.entry(at.pack).or_insert(*bound);
                    }
                    None => tracing::warn!("blob {blob} of snapshot {} is in no index", d.id),
                }
            }
        }
    }

    let mut wanted = vec![];
    // written at `modified`, an object was locked until at least `modified + days - 1 day`
    // (its writer started before; no backup takes a day): such objects need not be asked
    let surely_until = |modified: DateTime<Utc>| lock.retain_until(modified) - Duration::days(1);
    for (pack, _, modified) in repo.store().list_dated(ObjectKind::Pack)? {
        if let Some(bound) = pack_bound.get(&pack)
            && surely_until(modified) < *bound
        {
            wanted.push(Wanted {
                path: ObjectKind::Pack.path(&pack),
                below: *bound,
                until: *bound,
            });
        }
    }
    if let Some(latest) = bounded.first().map(|(_, b)| *b) {
        let keys = repo.store().ids(ObjectKind::Key)?;
        let others = keys.iter().map(|k| ObjectKind::Key.path(k));
        for path in others.chain([ObjectPath::from("config")]) {
            wanted.push(Wanted {
                path,
                below: latest,
                until: latest,
            });
        }
    }
    for d in &kept {
        let bound = d.kept_until.unwrap_or(now);
        wanted.push(Wanted {
            path: ObjectKind::Snapshot.path(&d.id),
            below: bound.max(rolling_below),
            until: bound.max(rolling_until),
        });
    }
    plan(repo, wanted)
}
