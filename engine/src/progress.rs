//! Live counters that a long operation updates and a front end may display.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared between an operation and whoever shows its progress.
#[derive(Default, Debug)]
pub struct Progress {
    /// Entries (files, directories, others) done.
    pub entries: AtomicU64,
    /// Content bytes done.
    pub bytes: AtomicU64,
    /// Entries that failed.
    pub errors: AtomicU64,
    /// Entries the operation will do in all (0: not known).
    pub total_entries: AtomicU64,
    /// Content bytes the operation will do in all (0: not known).
    pub total_bytes: AtomicU64,
    current: Mutex<String>,
}

impl Progress {
    /// Counts one entry of `bytes` bytes.
    pub fn entry_done(&self, bytes: u64) {
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Adds content bytes as they stream.
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Names the entry being worked on (a path, a pack, a snapshot).
    pub fn set_current(&self, what: impl std::fmt::Display) {
        *self.current.lock().expect("lock") = what.to_string();
    }

    /// Says how much work there is in all, when it is known in advance.
    pub fn set_totals(&self, entries: u64, bytes: u64) {
        self.total_entries.store(entries, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The entry being worked on.
    pub fn current(&self) -> String {
        self.current.lock().expect("lock").clone()
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
