//! Counters of what the agent did, shared by every stage.
//!
//! Owns plain atomic counters that any thread may bump without locking. It must never
//! block or allocate on the hot path; exposition (logs now, an HTTP endpoint later) reads
//! them from the outside.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Metrics {
    pub entries_read: AtomicU64,
    /// The agent's own log entries, skipped (journal.exclude_own_entries).
    pub entries_own_skipped: AtomicU64,
    pub entries_produced: AtomicU64,
    pub entries_delivered: AtomicU64,
    pub entries_failed: AtomicU64,
    pub entries_truncated: AtomicU64,
    /// Records whose entry was timestamped in the future and got the current time instead.
    pub timestamps_clamped: AtomicU64,
    pub bytes_produced: AtomicU64,
    pub cursor_writes: AtomicU64,
    /// Jumps in the journal's sequence numbers seen while reading, and the entries missing.
    pub journal_gaps: AtomicU64,
    pub entries_missed: AtomicU64,
    pub cursor_write_errors: AtomicU64,
    pub sessions_restarted: AtomicU64,
}

impl Metrics {
    pub fn delivered(&self) {
        self.entries_delivered.fetch_add(1, Relaxed);
    }

    pub fn failed(&self) {
        self.entries_failed.fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// One line for the periodic log and for `STATUS=`.
    pub fn summary(&self) -> String {
        format!(
            "read={} produced={} delivered={} failed={} truncated={} bytes={}",
            Self::get(&self.entries_read),
            Self::get(&self.entries_produced),
            Self::get(&self.entries_delivered),
            Self::get(&self.entries_failed),
            Self::get(&self.entries_truncated),
            Self::get(&self.bytes_produced),
        )
    }
}
