//! `find`: which snapshots hold entries whose name (or, for patterns with a `/`, whose path)
//! matches a glob pattern. Matches are remembered per tree, so folders shared by many
//! snapshots are read once.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, NodeKind, Tree};
use crate::repository::Repository;

/// One matching entry of one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// The snapshot.
    pub snapshot: Id,
    /// When it was taken.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Path inside it (`/a/b`).
    pub path: String,
    /// Entry kind.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// A compiled set of patterns: an entry matches if any pattern does.
pub struct Patterns(Vec<(glob::Pattern, bool)>);

impl Patterns {
    /// Compiles glob patterns (`*`, `?`, `[…]`); a pattern with a `/` is matched against the
    /// whole path (`/data/*.log`), any other against the entry's name.
    pub fn new(patterns: &[String]) -> Result<Patterns> {
        patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p)
                    .map(|g| (g, p.contains('/')))
                    .map_err(|e| Error::Invalid(format!("{p:?} is not a valid pattern ({e}); use *, ? and [...] as in shell globs")))
            })
            .collect::<Result<_>>()
            .map(Patterns)
    }

    fn matches(&self, name: &str, path: &str) -> bool {
        self.0.iter().any(|(g, whole)| {
            g.matches_with(
                if *whole { path } else { name },
                glob::MatchOptions {
                    require_literal_separator: true,
                    ..glob::MatchOptions::new()
                },
            )
        })
    }
}

/// A match below a tree: path relative to it, kind, size, mtime.
type Hit = (String, NodeKind, u64, i64);

/// Finds `patterns` in `snapshots`.
pub fn find(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    patterns: &Patterns,
) -> Result<Vec<Found>> {
    let mut memo = HashMap::new();
    let mut out = vec![];
    for (id, snap) in snapshots {
        for (path, kind, size, mtime_ns) in below(repo, &snap.tree, "", patterns, &mut memo)? {
            out.push(Found {
                snapshot: *id,
                time: snap.time,
                path,
                kind,
                size,
                mtime_ns,
            });
        }
    }
    Ok(out)
}

/// The matches below tree `id`, whose path is `at`. Whole-path patterns depend on `at`, so the
/// memo is keyed by both.
fn below(
    repo: &Repository,
    id: &Id,
    at: &str,
    patterns: &Patterns,
    memo: &mut HashMap<(Id, String), Vec<Hit>>,
) -> Result<Vec<Hit>> {
    let key = (*id, at.to_owned());
    if let Some(hits) = memo.get(&key) {
        return Ok(hits.clone());
    }
    let mut hits = vec![];
    for node in Tree::load(repo, id)?.nodes {
        let name = node.name.lossy();
        let path = format!(
            "{at}{}",
            tree::display_path(std::slice::from_ref(&node.name))
        );
        if patterns.matches(&name, &path) {
            hits.push((path.clone(), node.kind, node.size, node.mtime_ns));
        }
        if let Some(sub) = &node.subtree {
            hits.extend(below(repo, sub, &path, patterns, memo)?);
        }
    }
    memo.insert(key, hits.clone());
    Ok(hits)
}
