//! Snapshot times against the repository store's clock ([`Store::now`]).
//!
//! A snapshot dated in the future (a wrong clock, a `--time` typo) stays the newest of its group
//! until that date: `forget` would measure the group's retention from it and drop the group's
//! real history. So a backup refuses a time more than [`MAX_AHEAD`] after the store's clock
//! unless it was given on purpose, and `forget` leaves snapshots that are ahead out of its policy
//! (and keeps them). Times are shown in words by [`when`].
//!
//! [`Store::now`]: crate::repository::store::Store::now

use chrono::{DateTime, Duration, Utc};

use crate::error::{Error, Result};

/// How far a time may be ahead of the store's clock and still count as now: ordinary drift
/// between kept clocks, and the store's whole seconds.
pub const MAX_AHEAD: Duration = Duration::minutes(5);

/// Whether `time` lies in the future of the store's clock `store_now`.
pub fn is_future(time: DateTime<Utc>, store_now: DateTime<Utc>) -> bool {
    time > store_now + MAX_AHEAD
}

/// A time as reports and messages show it in words: `2026-11-28 02:00:00 UTC`.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Checks the time a backup dates its snapshot with against the store's clock `store_now`:
/// a time given (`--time`) may be in the future only with `allow_future`; without one, this
/// machine's clock `now` must not be ahead.
pub fn check_snapshot_time(
    given: Option<DateTime<Utc>>,
    allow_future: bool,
    now: DateTime<Utc>,
    store_now: DateTime<Utc>,
) -> Result<()> {
    let ahead = |t: DateTime<Utc>| {
        let secs = (t - store_now).num_seconds().max(0) as u64;
        humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
    };
    let harm = "a snapshot dated in the future counts as the newest of its group until then, and `forget` would drop the group's history because of it";
    match given {
        Some(t) if is_future(t, store_now) && allow_future => {
            tracing::warn!(
                "recording {} ({} ahead of the repository's clock), as --allow-future-time asks",
                when(t),
                ahead(t)
            );
            Ok(())
        }
        Some(t) if is_future(t, store_now) => Err(Error::Invalid(format!(
            "--time {} is {} ahead of the repository's clock ({}): {harm}; give the right time, or add --allow-future-time if you mean it",
            when(t),
            ahead(t),
            when(store_now)
        ))),
        None if is_future(now, store_now) => Err(Error::Invalid(format!(
            "this machine's clock ({}) is {} ahead of the repository's clock ({}): {harm}; set this machine's clock right (NTP) and back up again, or give the right time with --time",
            when(now),
            ahead(now),
            when(store_now)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_ahead_of_the_store_are_refused_unless_given_on_purpose() {
        let store: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let drift = store + Duration::minutes(4);
        let ahead = store + Duration::minutes(6);
        assert!(check_snapshot_time(None, false, drift, store).is_ok());
        assert!(check_snapshot_time(Some(drift), false, store, store).is_ok());
        let e = check_snapshot_time(None, false, ahead, store).unwrap_err();
        assert!(e.to_string().contains("this machine's clock"), "{e}");
        let e = check_snapshot_time(Some(ahead), false, store, store).unwrap_err();
        assert!(e.to_string().contains("6m ahead"), "{e}");
        assert!(check_snapshot_time(Some(ahead), true, store, store).is_ok());
        // a time given in the past is fine even when this machine's clock is wrong
        assert!(check_snapshot_time(Some(store), false, ahead, store).is_ok());
        // --allow-future-time does not excuse a wrong clock
        assert!(check_snapshot_time(None, true, ahead, store).is_err());
    }
}
