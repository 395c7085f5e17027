//! `check`: verifies that every snapshot can be restored, and names what is damaged.
//!
//! Default: every snapshot loads; every index segment opens; every indexed pack exists and its
//! header agrees with the index; every tree loads and every blob it references is indexed.
//! With a data subset, the chosen packs are read whole: their id, header, and every blob's MAC
//! and id are verified. Each problem lists the snapshots and paths it affects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::crypto::Domain;
use crate::format::id::Id;
use crate::format::index;
use crate::format::pack::{self, PackedBlob};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{self, Tree};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::repository::records::{RECORD_VERSION, Record};
use crate::repository::store::ObjectKind;

/// Which packs `--read-data` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataSubset {
    /// None: structure only.
    None,
    /// Every pack.
    All,
    /// A random share of the packs, in percent.
    Percent(f64),
    /// Part `n` of `t` (1-based): the packs whose first id byte modulo `t` is `n - 1`, so that
    /// `t` runs with `n = 1..=t` read everything once.
    Part(u32, u32),
}

impl DataSubset {
    fn wants(&self, id: &Id) -> bool {
        match *self {
            DataSubset::None => false,
            DataSubset::All => true,
            DataSubset::Percent(p) => {
                (u32::from_le_bytes(crate::format::crypto::random_bytes()) as f64)
                    < p / 100.0 * u32::MAX as f64
            }
            DataSubset::Part(n, t) => u32::from(id.0[0]) % t == n - 1,
        }
    }
}

impl std::fmt::Display for DataSubset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSubset::None => f.write_str("none"),
            DataSubset::All => f.write_str("all"),
            DataSubset::Percent(p) => write!(f, "{p}%"),
            DataSubset::Part(n, t) => write!(f, "{n}/{t}"),
        }
    }
}

/// A record of one `check` run (`checks/<id>`), the evidence audit reports cite.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Layout version ([`RECORD_VERSION`]).
    pub version: u32,
    /// When the check started.
    pub time: DateTime<Utc>,
    /// Host that ran it.
    pub host: String,
    /// Wall-clock seconds it took.
    pub seconds: f64,
    /// Which packs were read whole: `none`, `all`, a percentage or a part (`2/7`).
    pub read_data: String,
    /// What it found.
    pub report: CheckReport,
}

impl CheckRecord {
    /// Records `report`, of a check that started at `time` and read `subset`.
    pub fn new(time: DateTime<Utc>, subset: DataSubset, report: CheckReport) -> CheckRecord {
        CheckRecord {
            version: RECORD_VERSION,
            time,
            host: crate::host_name(),
            seconds: (Utc::now() - time).as_seconds_f64(),
            read_data: subset.to_string(),
            report,
        }
    }
}

impl Record for CheckRecord {
    const KIND: ObjectKind = ObjectKind::CheckRecord;
    const DOMAIN: Domain = Domain::CheckRecord;
    fn time(&self) -> DateTime<Utc> {
        self.time
    }
    fn version(&self) -> u32 {
        self.version
    }
}

/// How much of a problem's reach is listed.
const MAX_PATHS: usize = 50;

/// One damaged or missing object and what it breaks.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Problem {
    /// The object, e.g. `pack 1a2b…` or `blob 3c4d…`.
    pub object: String,
    /// What is wrong.
    pub reason: String,
    /// Snapshots (ids) that cannot be fully restored because of it.
    pub snapshots: BTreeSet<String>,
    /// Paths inside those snapshots that it affects (at most 50 listed).
    pub paths: BTreeSet<String>,
    /// How many paths it affects in all.
    pub path_count: u64,
}

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Distinct trees loaded.
    pub trees: u64,
    /// Index segments read.
    pub index_segments: u64,
    /// Packs listed in the index.
    pub packs: u64,
    /// Packs read whole and verified.
    pub packs_read: u64,
    /// Packs in the repository that no index lists (left by an interrupted backup).
    pub unindexed_packs: u64,
    /// Everything damaged or missing.
    pub problems: Vec<Problem>,
}

/// Damaged things found before the tree walk: blob id → object key, and object key → reason.
#[derive(Default)]
struct Damage {
    blobs: HashMap<Id, String>,
    reasons: BTreeMap<String, String>,
}

impl Damage {
    fn add(&mut self, key: String, reason: String) {
        self.reasons.entry(key).or_insert(reason);
    }

    /// Notes an index segment that could not be read; returns whether it is gone since it was
    /// listed (a gc replaced it), which is not damage.
    fn unreadable_segment(&mut self, id: &Id, e: Error) -> bool {
        if matches!(e, Error::Missing { .. }) {
            return true;
        }
        self.add(format!("index {id}"), e.to_string());
        false
    }
}

/// What checking the packs of one index segment needs.
struct PackCheck<'a> {
    repo: &'a Repository,
    /// Every stored pack's size.
    sizes: &'a HashMap<Id, u64>,
    subset: DataSubset,
    progress: &'a Progress,
}

impl PackCheck<'_> {
    /// Checks packs in parallel against the blobs their segment lists, and notes what is
    /// damaged: the whole pack, or single blobs in it.
    fn check(
        &self,
        packs: Vec<(Id, Vec<PackedBlob>)>,
        report: &mut CheckReport,
        damage: &mut Damage,
    ) {
        let results: Vec<_> = packs
            .par_iter()
            .map(|(pack_id, listed)| {
                self.progress.set_current(format_args!("pack {pack_id}"));
                let size = self.sizes.get(pack_id).copied();
                let result = check_pack(self.repo, pack_id, listed, size, self.subset);
                let read = matches!(result, Ok(true) | Err(PackFault::Blobs(_)));
                self.progress
                    .entry_done(if read { size.unwrap_or(0) } else { 0 });
                result
            })
            .collect();
        for ((pack_id, listed), result) in packs.iter().zip(results) {
            report.packs += 1;
            match result {
                Ok(read) => report.packs_read += read as u64,
                Err(PackFault::Whole(e)) => {
                    let key = format!("pack {pack_id}");
                    for b in listed {
                        damage.blobs.insert(b.id, key.clone());
                    }
                    damage.add(key, e.to_string());
                }
                Err(PackFault::Blobs(bad)) => {
                    report.packs_read += 1;
                    for (id, e) in bad {
                        let key = format!("blob {id} in pack {pack_id}");
                        damage.blobs.insert(id, key.clone());
                        damage.add(key, e.to_string());
                    }
                }
            }
        }
    }
}

/// Listings of the index a check makes at most, while segments vanish under it (each one a gc
/// that compacted the index meanwhile).
const INDEX_LISTINGS: usize = 8;

/// Runs the check; `progress` counts packs checked and bytes read.
pub fn check(repo: &Repository, subset: DataSubset, progress: &Progress) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut damage = Damage::default();
    progress.set_current("index");
    repo.rebuild_local_index()?;

    let pack_sizes: HashMap<Id, u64> = repo.store().list(ObjectKind::Pack)?.into_iter().collect();
    let read_all = matches!(subset, DataSubset::All).then(|| pack_sizes.values().sum());
    progress.set_totals(pack_sizes.len() as u64, read_all.unwrap_or(0));
    let packs = PackCheck {
        repo,
        sizes: &pack_sizes,
        subset,
        progress,
    };
    let mut indexed = HashSet::new();
    // Segments are read one at a time, so that memory does not grow with the index: the
    // rebuild just read every segment that opens and knows its lineage; one it does not know
    // is damaged (or new), and is read here to say which. A gc running meanwhile deletes the
    // segments it compacted once its own is stored: a segment gone since it was listed is not
    // damage, and the index is listed again for the one that replaced it (packs already
    // checked are not checked again).
    let known = repo.index().known_segments()?;
    let mut lineages = vec![];
    let mut listed = HashSet::new();
    for _ in 0..INDEX_LISTINGS {
        let mut vanished = false;
        let mut new = vec![];
        for seg_id in repo.store().ids(ObjectKind::Index)? {
            if !listed.insert(seg_id) {
                continue;
            }
            report.index_segments += 1;
            let lineage = match known.get(&seg_id) {
                Some(k) => k.lineage.clone(),
                None => match repo.load_index(&seg_id) {
                    Ok(s) => s.lineage,
                    Err(e) => {
                        vanished |= damage.unreadable_segment(&seg_id, e);
                        continue;
                    }
                },
            };
            new.push(seg_id);
            lineages.push((seg_id, lineage));
        }
        // retired segments linger under an object lock or come back stored again; their packs may be gone
        let retired = index::retired(lineages.iter().map(|(id, l)| (id, l)));
        for seg_id in new.iter().filter(|id| !retired.contains(*id)) {
            let segment = match repo.load_index(seg_id) {
                Ok(s) => s,
                Err(e) => {
                    vanished |= damage.unreadable_segment(seg_id, e);
                    continue;
                }
            };
            let fresh = segment
                .packs
                .into_iter()
                .filter(|(p, _)| indexed.insert(*p));
            packs.check(fresh.collect(), &mut report, &mut damage);
        }
        if !vanished {
            break;
        }
    }
    report.unindexed_packs = pack_sizes.keys().filter(|p| !indexed.contains(*p)).count() as u64;

    let mut problems: BTreeMap<String, Problem> = BTreeMap::new();
    let mut memo: HashMap<Id, Vec<(String, String)>> = HashMap::new();
    for (snap_id, _) in repo.store().list(ObjectKind::Snapshot)? {
        report.snapshots += 1;
        progress.set_current(format_args!("snapshot {}", snap_id.short()));
        let snap = match Snapshot::load(repo, &snap_id) {
            Ok(s) => s,
            Err(e) => {
                damage.add(format!("snapshot {snap_id}"), e.to_string());
                continue;
            }
        };
        for (key, path) in tree_damage(repo, &snap.tree, &mut memo, &mut damage, &mut report.trees)
        {
            let p = problems.entry(key.clone()).or_insert_with(|| Problem {
                object: key,
                ..Problem::default()
            });
            p.snapshots.insert(snap_id.to_hex());
            p.path_count += 1;
            if p.paths.len() < MAX_PATHS {
                p.paths.insert(path);
            }
        }
    }
    for (key, reason) in damage.reasons {
        let p = problems.entry(key.clone()).or_insert_with(|| Problem {
            object: key,
            ..Problem::default()
        });
        p.reason = reason;
    }
    report.problems = problems.into_values().collect();
    tracing::info!(
        snapshots = report.snapshots,
        packs = report.packs,
        packs_read = report.packs_read,
        problems = report.problems.len(),
        "check done"
    );
    Ok(report)
}

enum PackFault {
    /// The pack as a whole is missing or unreadable.
    Whole(Error),
    /// Some blobs failed verification.
    Blobs(Vec<(Id, Error)>),
}

/// Checks one pack against its index entries; returns whether it was read whole.
fn check_pack(
    repo: &Repository,
    id: &Id,
    listed: &[PackedBlob],
    size: Option<u64>,
    subset: DataSubset,
) -> Result<bool, PackFault> {
    let size = size.ok_or_else(|| {
        PackFault::Whole(Error::damaged(
            "pack",
            id,
            "it is missing from the repository",
        ))
    })?;
    let path = ObjectKind::Pack.path(id);
    let whole = |e| PackFault::Whole(e);
    let (header, bytes) = if subset.wants(id) {
        let bytes = repo
            .store()
            .get_bounded(&path, ObjectKind::Pack.max_size())
            .map_err(whole)?
            .ok_or_else(|| whole(Error::damaged("pack", id, "vanished while reading")))?;
        (
            pack::read_header(repo.keys(), id, &bytes).map_err(whole)?,
            Some(bytes),
        )
    } else {
        (repo.read_pack_header(id, size).map_err(whole)?, None)
    };
    if header != listed {
        return Err(whole(Error::damaged(
            "pack",
            id,
            "its header disagrees with the index",
        )));
    }
    let Some(bytes) = bytes else { return Ok(false) };
    let bad: Vec<_> = header
        .iter()
        .filter_map(|b| {
            pack::open_blob_in(repo.keys(), id, &bytes, 0, b)
                .err()
                .map(|e| (b.id, e))
        })
        .collect();
    if bad.is_empty() {
        Ok(true)
    } else {
        Err(PackFault::Blobs(bad))
    }
}

/// The damaged objects below tree `id`, each with the path (relative to the tree) it breaks.
/// Results per tree are memoized, so shared subtrees are walked once across all snapshots.
fn tree_damage(
    repo: &Repository,
    id: &Id,
    memo: &mut HashMap<Id, Vec<(String, String)>>,
    damage: &mut Damage,
    trees: &mut u64,
) -> Vec<(String, String)> {
    if let Some(found) = memo.get(id) {
        return found.clone();
    }
    *trees += 1;
    let mut found = vec![];
    let blob_fault = |blob: &Id, damage: &mut Damage| -> Option<String> {
        if let Some(key) = damage.blobs.get(blob) {
            return Some(key.clone());
        }
        match repo.index().contains(blob) {
            Ok(true) => None,
            _ => {
                let key = format!("blob {blob}");
                damage.add(
                    key.clone(),
                    "it is in no index (its pack is lost, or run `cairn repair index`)".into(),
                );
                Some(key)
            }
        }
    };
    let loaded = match blob_fault(id, damage) {
        Some(key) => Err(key),
        None => Tree::load(repo, id).map_err(|e| {
            let key = format!("tree {id}");
            damage.add(key.clone(), e.to_string());
            key
        }),
    };
    match loaded {
        Err(key) => found.push((key, String::new())),
        Ok(t) => {
            for node in &t.nodes {
                let name = tree::display_path(std::slice::from_ref(&node.name));
                for blob in &node.content {
                    if let Some(key) = blob_fault(blob, damage) {
                        found.push((key, name.clone()));
                    }
                }
                if let Some(sub) = &node.subtree {
                    for (key, below) in tree_damage(repo, sub, memo, damage, trees) {
                        found.push((key, format!("{name}{below}")));
                    }
                }
            }
        }
    }
    found.sort();
    found.dedup();
    memo.insert(*id, found.clone());
    found
}
