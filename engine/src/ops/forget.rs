//! `forget`: retention policies (restic-style), which snapshots `forget` keeps and why, and the
//! object-lock extensions that keep them locked ([`for_kept_snapshots`]).
//!
//! Snapshots are grouped (by host, paths and/or tags); within a group, newest first, a snapshot
//! is kept if any rule keeps it. `keep_within` is measured from the group's newest snapshot, not
//! from now, so that a stopped backup job never lets its last snapshots expire. Snapshots dated
//! in the future of the store's clock ([`clock`]) are kept and left out of the policy, so that
//! none of them can push a group's real history out.
//!
//! Each kept snapshot also gets a bound on how long the rules that keep it can keep it
//! ([`Decision::kept_until`]), which `forget` extends object locks to (format §13).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Timelike, Utc};
use object_store::path::Path as ObjectPath;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::config::ObjectLock;
use crate::format::id::Id;
use crate::format::snapshot::{Snapshot, SnapshotFilter};
use crate::format::tree::Tree;
use crate::repository::Repository;
use crate::repository::clock;
use crate::repository::object_lock::{self, Extension, Wanted, plan};
use crate::repository::store::ObjectKind;
use crate::sources::kube;

/// How many snapshots each rule keeps. A rule left at `None` keeps nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N.
    pub last: Option<u32>,
    /// Keep the newest of each of the last N hours with snapshots.
    pub hourly: Option<u32>,
    /// … days.
    pub daily: Option<u32>,
    /// … ISO weeks.
    pub weekly: Option<u32>,
    /// … months.
    pub monthly: Option<u32>,
    /// … years.
    pub yearly: Option<u32>,
    /// Keep every snapshot taken within this span before the group's newest.
    pub within: Option<Duration>,
}

impl Policy {
    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// Which snapshot fields form a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// Group by host.
    pub host: bool,
    /// Group by the set of paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// Host and paths, as restic does.
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: Id,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Its group, as text.
    pub group: String,
    /// Whether the policy keeps it.
    pub keep: bool,
    /// Why it is kept (empty when it goes).
    pub reasons: Vec<String>,
    /// Whether it is dated in the future of the store's clock: kept, and not counted by the
    /// policy.
    pub future: bool,
    /// Kept snapshots: the latest time the rules that keep it can keep it, while its group is
    /// backed up at least once per period of each rule (see `keep_bound`); absent when no rule
    /// that keeps it is bounded in time (`keep-last`, snapshots dated in the future).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_until: Option<DateTime<Utc>>,
}

impl GroupBy {
    /// The group of a snapshot, as text. Grouping by paths also separates the volume snapshots
    /// of a namespace written by different nodes before volume snapshots held one claim each
    /// (format-spec §14): their paths were the same, what they held was not.
    pub fn key(self, s: &Snapshot) -> String {
        let mut parts = vec![];
        if self.host {
            parts.push(format!("host={}", s.host));
        }
        if self.paths {
            let mut p: Vec<String> = s.paths.iter().map(|p| p.lossy()).collect();
            p.sort();
            parts.push(format!("paths={}", p.join(",")));
            if let Some(node) = kube::namespace_volumes_node(s) {
                parts.push(format!("node={node}"));
            }
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            parts.push(format!("tags={}", t.join(",")));
        }
        parts.join(" ")
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    /// Fields to group by, comma-separated: `host`, `paths`, `tags` (none: one group).
    fn from_str(spec: &str) -> std::result::Result<GroupBy, String> {
        let mut by = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "host" => by.host = true,
                "paths" => by.paths = true,
                "tags" => by.tags = true,
                other => {
                    return Err(format!(
                        "cannot group by {other:?}: use host, paths and/or tags"
                    ));
                }
            }
        }
        Ok(by)
    }
}

type Bucket = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);

/// When the period (hour, day, …) holding a time ends, `n` periods later.
type PeriodEnd = fn(&DateTime<Utc>, u32) -> Option<DateTime<Utc>>;

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

const BUCKETS: [(&str, Bucket, PeriodEnd); 5] = [
    (
        "hourly",
        |t| (t.year(), t.ordinal(), t.hour(), 0),
        |t, n| {
            midnight(t.date_naive())
                .checked_add_signed(Duration::hours(i64::from(t.hour()) + 1 + i64::from(n)))
        },
    ),
    (
        "daily",
        |t| (t.year(), t.ordinal(), 0, 0),
        |t, n| midnight(t.date_naive()).checked_add_signed(Duration::days(1 + i64::from(n))),
    ),
    (
        "weekly",
        |t| (t.iso_week().year(), t.iso_week().week(), 0, 0),
        |t, n| {
            let monday =
                t.date_naive() - Duration::days(i64::from(t.weekday().num_days_from_monday()));
            midnight(monday).checked_add_signed(Duration::weeks(1 + i64::from(n)))
        },
    ),
    (
        "monthly",
        |t| (t.year(), t.month(), 0, 0),
        |t, n| {
            let first = NaiveDate::from_ymd_opt(t.year(), t.month(), 1)?;
            Some(midnight(
                first.checked_add_months(Months::new(n.checked_add(1)?))?,
            ))
        },
    ),
    (
        "yearly",
        |t| (t.year(), 0, 0, 0),
        |t, n| {
            let year = i32::try_from(n).ok()?.checked_add(t.year() + 1)?;
            Some(midnight(NaiveDate::from_ymd_opt(year, 1, 1)?))
        },
    ),
];

/// No lock bound lies further than this after its snapshot (the longest `--lock-days` that
/// `init` accepts), so that a huge rule count still gives a date S3 takes.
const LONGEST_BOUND: Duration = Duration::days(36_500);

/// The latest time rule `name` (`hourly` … `yearly` with count `n`, or `within` a span `w`)
/// can keep a snapshot taken at `t` that it keeps now, while its group gets at least one
/// snapshot per period (for `within`: while backups go on):
///
/// - a bucket rule keeps the newest snapshot of each of the `n` newest periods that hold
///   snapshots; once the `n` periods after the snapshot's each hold one, it is no longer among
///   them, and the last of those periods ends `n` periods after the snapshot's own ends: the
///   bound is the end of the snapshot's period plus `n` periods;
/// - `within` keeps it while the group's newest snapshot is at most `w` younger: until the
///   first backup after `t + w`; the bound is `t + w`.
///
/// Either bound can be passed while the snapshot is still kept: by the time to the next backup
/// and `forget`, or for good when the group's backups stop. That is covered by the rolling
/// extension of kept snapshots' locks at every `forget` (format §13), as `keep-last`, which
/// has no bound in time, is. Bounds are capped at 100 years after `t`.
fn keep_bound(name: &str, t: &DateTime<Utc>, n: u32, w: Option<Duration>) -> DateTime<Utc> {
    let cap = *t + LONGEST_BOUND;
    let bound = match (name, w) {
        ("within", Some(w)) => t.checked_add_signed(w),
        _ => BUCKETS
            .iter()
            .find(|(b, _, _)| *b == name)
            .and_then(|(_, _, end)| end(t, n)),
    };
    bound.map_or(cap, |b| b.min(cap))
}

/// Applies `policy` to `snapshots`, group by group; returns one decision per snapshot, newest
/// first within each group. Snapshots dated in the future of `store_now` (the store's clock)
/// are kept and not counted.
pub fn apply(
    policy: &Policy,
    by: GroupBy,
    snapshots: &[(Id, Snapshot)],
    store_now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut groups: BTreeMap<String, Vec<&(Id, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(by.key(&s.1)).or_default().push(s);
    }
    let counts = [
        policy.hourly,
        policy.daily,
        policy.weekly,
        policy.monthly,
        policy.yearly,
    ];
    let mut out = vec![];
    for (group, mut snaps) in groups {
        snaps.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
        let present = snaps.partition_point(|s| clock::is_future(s.1.time, store_now));
        for (id, snap) in snaps.drain(..present).map(|s| (&s.0, &s.1)) {
            out.push(Decision {
                id: *id,
                time: snap.time,
                group: group.clone(),
                keep: true,
                reasons: vec![format!(
                    "in the future of the repository's clock ({}): not counted",
                    crate::repository::clock::when(store_now)
                )],
                future: true,
                kept_until: None,
            });
        }
        let Some(newest) = snaps.first().map(|s| s.1.time) else {
            continue;
        };
        let mut left = counts;
        let mut last_bucket: [Option<(i32, u32, u32, u32)>; 5] = [None; 5];
        for (i, (id, snap)) in snaps.iter().map(|s| (&s.0, &s.1)).enumerate() {
            let mut reasons = vec![];
            let mut kept_until: Option<DateTime<Utc>> = None;
            let mut bound_by = |b: DateTime<Utc>| kept_until = kept_until.max(Some(b));
            if policy.last.is_some_and(|n| (i as u32) < n) {
                reasons.push(format!("last {}", policy.last.unwrap_or(0)));
            }
            for (k, (name, bucket, _)) in BUCKETS.iter().enumerate() {
                let b = bucket(&snap.time);
                if left[k].is_some_and(|n| n > 0) && last_bucket[k] != Some(b) {
                    left[k] = left[k].map(|n| n - 1);
                    last_bucket[k] = Some(b);
                    let n = counts[k].unwrap_or(0);
                    reasons.push(format!("{name} {n}"));
                    bound_by(keep_bound(name, &snap.time, n, None));
                }
            }
            if let Some(w) = policy.within
                && snap.time >= newest - w
            {
                reasons.push(format!("within {}h of the newest", w.num_hours()));
                bound_by(keep_bound("within", &snap.time, 0, Some(w)));
            }
            out.push(Decision {
                id: *id,
                time: snap.time,
                group: group.clone(),
                keep: !reasons.is_empty(),
                reasons,
                future: false,
                kept_until,
            });
        }
    }
    out
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

/// Settings of one `forget` run.
#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    /// Which snapshots to keep; one that keeps nothing stands for the repository's default
    /// retention (`keep_within_secs` of its config).
    pub policy: Policy,
    /// How snapshots are grouped.
    pub group_by: GroupBy,
    /// Which snapshots the policy is applied to (the others are left alone).
    pub filter: SnapshotFilter,
    /// With object lock: extend the locks of what the policy keeps that end within this long
    /// (`None`: extend none).
    pub extend_locks_within: Option<Duration>,
    /// Decide and report only: remove nothing, extend no lock.
    pub dry_run: bool,
}

/// What a `forget` run decided and did.
#[derive(Debug)]
pub struct ForgetOutcome {
    /// The store's clock, which the policy was applied against.
    pub store_now: DateTime<Utc>,
    /// One decision per snapshot the filter selected, group by group ([`apply`]).
    pub decisions: Vec<Decision>,
    /// The object-lock extensions made (in a dry run: that would be made).
    pub extensions: Vec<Extension>,
    /// Snapshots dated in the future of the store's clock: kept, and not counted.
    pub future: Vec<Id>,
    /// How many snapshots were removed.
    pub removed: usize,
    /// Snapshots the policy lets go whose object lock has not passed: kept for now (a later
    /// `forget` removes them).
    pub locked: HashSet<Id>,
}

/// `forget`: applies the policy to the snapshots the filter selects, extends the object locks
/// of what it keeps ([`for_kept_snapshots`]) and removes the snapshots it lets go, unless
/// their lock has not passed. Their data stays until garbage collection.
pub fn forget(repo: &Repository, options: &ForgetOptions) -> Result<ForgetOutcome> {
    let mut policy = options.policy.clone();
    if policy.is_empty() {
        policy.within = Some(Duration::seconds(repo.config().keep_within_secs as i64));
    }
    let store_now = repo.store().now()?;
    let snapshots = Snapshot::select(repo, &[], &options.filter)?;
    let decisions = apply(&policy, options.group_by, &snapshots, store_now);
    // kept snapshots, and what they need, stay locked as long as the policy can keep them
    let extensions = match (repo.store().lock(), options.extend_locks_within) {
        (Some(lock), Some(within)) => {
            for_kept_snapshots(repo, lock, &decisions, &snapshots, within, Utc::now())?
        }
        _ => vec![],
    };
    if !options.dry_run {
        object_lock::extend(repo, &extensions)?;
    }
    let future: Vec<Id> = decisions
        .iter()
        .filter(|d| d.future)
        .map(|d| d.id)
        .collect();
    let mut removed = 0;
    // snapshots the policy lets go but whose object lock has not passed: kept for now
    let mut locked = HashSet::new();
    if !options.dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            match Snapshot::remove(repo, &d.id) {
                Ok(()) => removed += 1,
                Err(Error::Locked { .. }) => {
                    locked.insert(d.id);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(ForgetOutcome {
        store_now,
        decisions,
        extensions,
        future,
        removed,
        locked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{SNAPSHOT_VERSION, Summary};
    use crate::format::tree::RawBytes;

    fn snap(n: u8, time: &str, host: &str) -> (Id, Snapshot) {
        (
            Id([n; 32]),
            Snapshot {
                version: SNAPSHOT_VERSION,
                time: time.parse().unwrap(),
                host: host.into(),
                user: String::new(),
                paths: vec![RawBytes(b"/data".to_vec())],
                tags: vec![],
                tree: Id::default(),
                parent: None,
                original: None,
                summary: Summary::default(),
                program: String::new(),
            },
        )
    }

    /// The store's clock in these tests.
    fn now() -> DateTime<Utc> {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    fn kept(d: &[Decision]) -> Vec<u8> {
        let mut k: Vec<u8> = d.iter().filter(|d| d.keep).map(|d| d.id.0[0]).collect();
        k.sort();
        k
    }

    #[test]
    fn keep_within_counts_from_the_newest_snapshot() {
        let s = vec![
            snap(1, "2026-01-01T00:00:00Z", "a"),
            snap(2, "2026-01-20T00:00:00Z", "a"),
            snap(3, "2026-02-01T00:00:00Z", "a"),
            snap(4, "2026-02-01T12:00:00Z", "a"),
        ];
        let p = Policy {
            within: Some(Duration::hours(720)),
            ..Policy::default()
        };
        let d = apply(&p, GroupBy::default(), &s, now());
        // 2026-01-20 is within 30 days of 2026-02-01T12; 2026-01-01 is not
        assert_eq!(kept(&d), vec![2, 3, 4]);
        assert!(d.iter().find(|d| d.id.0[0] == 2).unwrap().reasons[0].contains("within 720h"));
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_groups_are_separate() {
        let s = vec![
            snap(1, "2026-03-01T01:00:00Z", "a"),
            snap(2, "2026-03-01T23:00:00Z", "a"),
            snap(3, "2026-03-02T10:00:00Z", "a"),
            snap(4, "2026-03-03T10:00:00Z", "a"),
            snap(5, "2026-03-01T10:00:00Z", "b"),
        ];
        let p = Policy {
            daily: Some(2),
            ..Policy::default()
        };
        assert_eq!(
            kept(&apply(&p, GroupBy::default(), &s, now())),
            vec![3, 4, 5]
        );
        let p = Policy {
            last: Some(1),
            monthly: Some(5),
            ..Policy::default()
        };
        assert_eq!(kept(&apply(&p, GroupBy::default(), &s, now())), vec![4, 5]);
        let all = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        assert_eq!(
            kept(&apply(
                &Policy {
                    last: Some(2),
                    ..Policy::default()
                },
                all,
                &s,
                now()
            )),
            vec![3, 4]
        );
    }

    #[test]
    fn weekly_and_yearly_buckets() {
        let s = vec![
            snap(1, "2025-12-29T00:00:00Z", "a"), // ISO week 1 of 2026
            snap(2, "2026-01-01T00:00:00Z", "a"), // same ISO week
            snap(3, "2026-01-05T00:00:00Z", "a"),
            snap(4, "2024-06-01T00:00:00Z", "a"),
        ];
        assert_eq!(
            kept(&apply(
                &Policy {
                    weekly: Some(2),
                    ..Policy::default()
                },
                GroupBy::default(),
                &s,
                now()
            )),
            vec![2, 3]
        );
        assert_eq!(
            kept(&apply(
                &Policy {
                    yearly: Some(3),
                    ..Policy::default()
                },
                GroupBy::default(),
                &s,
                now()
            )),
            vec![1, 3, 4]
        );
    }

    #[test]
    fn snapshots_in_the_future_are_kept_and_not_counted() {
        let s = vec![
            snap(1, "2026-11-27T00:00:00Z", "a"),
            snap(2, "2026-11-28T00:00:00Z", "a"),
            snap(3, "2026-11-30T23:00:00Z", "a"),
            // within the clocks' drift: an ordinary snapshot
            snap(4, "2026-12-01T00:04:00Z", "a"),
            snap(5, "2036-11-05T00:00:00Z", "a"),
            snap(6, "2036-11-06T00:00:00Z", "b"),
        ];
        let p = Policy {
            within: Some(Duration::hours(48)),
            ..Policy::default()
        };
        let d = apply(&p, GroupBy::default(), &s, now());
        // within 48 h of the newest real snapshot (4), not of 2036
        assert_eq!(kept(&d), vec![3, 4, 5, 6]);
        let future: Vec<u8> = d.iter().filter(|d| d.future).map(|d| d.id.0[0]).collect();
        assert_eq!(future, vec![5, 6]);
        assert!(d[0].reasons[0].contains("in the future"), "{:?}", d[0]);
        let p = Policy {
            last: Some(1),
            ..Policy::default()
        };
        assert_eq!(
            kept(&apply(&p, GroupBy::default(), &s, now())),
            vec![4, 5, 6]
        );
    }

    #[test]
    fn kept_snapshots_are_bounded_by_the_end_of_their_period_plus_the_count() {
        let s = vec![
            snap(1, "2026-11-04T10:00:00Z", "a"), // a Wednesday
            snap(2, "2026-11-30T10:00:00Z", "a"), // a Monday
        ];
        let p = Policy {
            last: Some(1),
            weekly: Some(5),
            monthly: Some(2),
            ..Policy::default()
        };
        let d = apply(&p, GroupBy::default(), &s, now());
        let bound = |n: u8| d.iter().find(|d| d.id.0[0] == n).unwrap().kept_until;
        let at = |t: &str| Some(t.parse::<DateTime<Utc>>().unwrap());
        // 1: its week ends on Monday 2026-11-09, plus 5 weeks (2 is the newest of the month)
        assert_eq!(bound(1), at("2026-12-14T00:00:00Z"));
        // 2: week ends 2026-12-07 + 5 weeks = 2027-01-11; month 2027-02-01; keep-last adds none
        assert_eq!(bound(2), at("2027-02-01T00:00:00Z"));
        let p = Policy {
            hourly: Some(3),
            daily: Some(1),
            within: Some(Duration::hours(10)),
            ..Policy::default()
        };
        let d = apply(&p, GroupBy::default(), &s, now());
        assert_eq!(
            d.iter().find(|d| d.id.0[0] == 2).unwrap().kept_until,
            at("2026-12-02T00:00:00Z"),
            "daily: the day's end plus a day"
        );
        assert_eq!(
            keep_bound("hourly", &s[0].1.time, 3, None),
            "2026-11-04T14:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            keep_bound("yearly", &s[0].1.time, 2, None),
            "2029-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            keep_bound("within", &s[0].1.time, 0, Some(Duration::hours(2))),
            "2026-11-04T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // a huge count is capped at 100 years
        assert_eq!(
            keep_bound("yearly", &s[0].1.time, u32::MAX, None),
            s[0].1.time + LONGEST_BOUND
        );
        let last = Policy {
            last: Some(2),
            ..Policy::default()
        };
        let d = apply(&last, GroupBy::default(), &s, now());
        assert!(d.iter().all(|d| d.keep && d.kept_until.is_none()));
    }

    #[test]
    fn volume_snapshots_of_a_namespace_from_several_nodes_are_separate_groups() {
        let volumes = |n: u8, time: &str, node: &str, claim: Option<&str>| {
            let (id, mut s) = snap(n, time, "cluster");
            s.paths = vec![RawBytes(b"k8s:shop/volumes".to_vec())];
            s.tags = vec!["namespace=shop".into(), "content=volumes".into()];
            s.tags.push(format!("node={node}"));
            if let Some(c) = claim {
                s.paths = vec![RawBytes(format!("k8s:shop/volumes/{c}").into_bytes())];
                s.tags.push(format!("claim={c}"));
            }
            (id, s)
        };
        let s = vec![
            // written before snapshots held one claim each: one per namespace and node
            volumes(1, "2026-11-01T01:00:00Z", "node-a", None),
            volumes(2, "2026-11-01T02:00:00Z", "node-b", None),
            volumes(3, "2026-11-02T01:00:00Z", "node-a", None),
            // one claim each: the node does not matter (the claim moved)
            volumes(4, "2026-11-03T01:00:00Z", "node-a", Some("data")),
            volumes(5, "2026-11-04T01:00:00Z", "node-b", Some("data")),
        ];
        let p = Policy {
            last: Some(1),
            ..Policy::default()
        };
        assert_eq!(
            kept(&apply(&p, GroupBy::default(), &s, now())),
            vec![2, 3, 5]
        );
    }
}
