//! Bandwidth limits (`--limit-upload`, `--limit-download`, in KiB/s as restic's): token buckets
//! that every [`Store`](super::Store) of the process draws from, whatever its back-end, before
//! sending an object's bytes and after receiving them.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A token bucket: `rate` bytes a second, up to `burst` saved up. Taking more than there is
/// leaves a debt that the taker waits out, so that over any span T at most `burst + rate × T`
/// bytes pass. Times are given (seconds since any fixed start), so that it can be tested
/// without a clock.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket of `rate` bytes a second, holding at most one second's worth (and at least
    /// 64 KiB).
    pub fn new(rate: u64) -> TokenBucket {
        let rate = rate.max(1) as f64;
        let burst = rate.max(65_536.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Duration::ZERO,
        }
    }

    /// Takes `bytes` at time `now`; returns how long to wait before they may pass.
    pub fn take(&mut self, bytes: u64, now: Duration) -> Duration {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - bytes as f64;
        match self.tokens < 0.0 {
            true => Duration::from_secs_f64(-self.tokens / self.rate),
            false => Duration::ZERO,
        }
    }
}

/// A shared limit on one direction.
#[derive(Debug)]
pub struct Limiter {
    /// In bytes a second.
    pub rate: u64,
    bucket: Mutex<TokenBucket>,
    start: Instant,
}

impl Limiter {
    fn new(rate: u64) -> Limiter {
        Limiter {
            rate,
            bucket: Mutex::new(TokenBucket::new(rate)),
            start: Instant::now(),
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn pass(&self, bytes: usize) {
        let wait = self
            .bucket
            .lock()
            .expect("the bucket is never poisoned")
            .take(bytes as u64, self.start.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The process's limits, by direction.
#[derive(Debug, Default)]
pub struct Limits {
    /// Bytes sent to stores.
    pub upload: Option<Limiter>,
    /// Bytes received from stores.
    pub download: Option<Limiter>,
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets the process's limits in KiB/s (`None` or 0: unlimited), once, before any store is used;
/// later calls change nothing.
pub fn set_limits(upload_kib: Option<u64>, download_kib: Option<u64>) {
    let limiter = |kib: Option<u64>| {
        kib.filter(|k| *k > 0)
            .map(|k| Limiter::new(k.saturating_mul(1024)))
    };
    let limits = Limits {
        upload: limiter(upload_kib),
        download: limiter(download_kib),
    };
    if limits.upload.is_some() || limits.download.is_some() {
        tracing::info!(
            upload_kib_per_s = upload_kib,
            download_kib_per_s = download_kib,
            "bandwidth limited"
        );
    }
    let _ = LIMITS.set(limits);
}

/// The process's limits (none unless [`set_limits`] set some).
pub fn limits() -> &'static Limits {
    LIMITS.get_or_init(Limits::default)
}

/// Waits until `bytes` may be sent.
pub async fn upload(bytes: usize) {
    if let Some(l) = &limits().upload {
        l.pass(bytes).await;
    }
}

/// Waits until `bytes` received may be handed on.
pub async fn download(bytes: usize) {
    if let Some(l) = &limits().download {
        l.pass(bytes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_through_its_burst_then_the_rate() {
        let s = Duration::from_secs;
        let mut b = TokenBucket::new(100_000);
        // one second's worth at once
        assert_eq!(b.take(100_000, s(0)), Duration::ZERO);
        // then 50 000 more must wait half a second
        assert_eq!(b.take(50_000, s(0)), Duration::from_millis(500));
        // a large object makes a debt that later takers wait out too
        let wait = b.take(1_000_000, s(0));
        assert_eq!(wait, Duration::from_millis(10_500));
        assert_eq!(b.take(0, s(10)), Duration::from_millis(500));
        // after the debt, an idle bucket fills to one second's worth, no more
        assert_eq!(b.take(0, s(100)), Duration::ZERO);
        assert_eq!(b.take(100_000, s(100)), Duration::ZERO);
        assert_eq!(b.take(100_000, s(100)), s(1));
        // over any span, what passed without waiting is at most burst + rate × span
        let mut b = TokenBucket::new(1000);
        let mut passed = 0u64;
        let mut now = Duration::ZERO;
        for _ in 0..1000 {
            now += b.take(300, now);
            passed += 300;
        }
        let allowed = 65_536.0 + 1000.0 * now.as_secs_f64();
        assert!(passed as f64 <= allowed + 1.0, "{passed} > {allowed}");
        assert!(
            passed as f64 >= allowed - 301.0,
            "the limit wastes bandwidth"
        );
        // a clock that goes back (two threads reading it in turn) is no refill
        let mut b = TokenBucket::new(1000);
        b.take(65_536, s(5));
        assert_eq!(b.take(1000, s(4)), s(1));
    }
}
