//! Exactly-once mode: when the shipping thread's transaction opens and closes.
//!
//! The mechanics (begin, cursor record, commit, abort, fencing) are `kafka::transaction`'s;
//! this file owns the cadence: close on size, on age (well inside the transaction timeout)
//! or when the journal goes quiet, and commit only a cursor the watermark vouches for.
//! Runs on the shipping thread only: a transaction cannot be committed while another
//! thread adds records to it.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::control::Control;
use super::delivery::{JournalOwner, Producer};
use super::progress::Progress;
use crate::config::Config;
use crate::error::Failure;
use crate::kafka::TransactionStore;
use crate::metrics::Metrics;

/// How often an unmoved place is committed again, well inside the brokers' offsets
/// retention (7 days by default).
const REFRESH_EVERY: Duration = Duration::from_secs(24 * 3600);

/// When to close the open transaction: pure bookkeeping, so it can be tested alone.
#[derive(Debug)]
struct Cadence {
    /// Entries sent in the open transaction.
    sent: usize,
    opened: Option<Instant>,
    max_entries: usize,
    max_age: Duration,
    last_commit: Instant,
    /// How often a cursor that moved only over filtered entries is committed.
    pass_interval: Duration,
    /// The broker's transaction timeout: a transaction it outlives is aborted by the
    /// coordinator (and the producer's epoch bumped), which costs the whole transaction.
    timeout: Duration,
    /// How long the last close (settling its entries, then the commit) took: with a slow
    /// broker transactions close earlier, so they end well inside the timeout.
    close_took: Duration,
}

impl Cadence {
    fn opened(&mut self, now: Instant) {
        self.opened.get_or_insert(now);
    }

    /// After a send: the transaction is big or old enough to close.
    fn due(&self, now: Instant) -> bool {
        self.sent >= self.max_entries
            || self.opened.is_some_and(|o| {
                let age = now.duration_since(o);
                age >= self.max_age || age + 2 * self.close_took >= self.timeout / 2
            })
    }

    /// The latest moment a close may still wait for its entries: after it, the
    /// transaction is aborted by the agent rather than left for the coordinator.
    fn close_deadline(&self, began: Instant) -> Instant {
        self.opened
            .map_or(began + self.timeout, |o| o + self.timeout * 9 / 10)
    }

    /// The journal is quiet: close now if entries wait, or if only filtered positions moved
    /// the cursor and it has not been committed for a while.
    fn idle_due(&self, cursor_moved: bool, now: Instant) -> bool {
        self.sent > 0
            || (cursor_moved && now.duration_since(self.last_commit) >= self.pass_interval)
    }

    fn closed(&mut self, now: Instant, took: Duration) {
        self.close_took = took;
        self.sent = 0;
        self.opened = None;
        self.last_commit = now;
    }
}

/// The journal's exactly-once store.
pub(super) type Store = TransactionStore<JournalOwner>;

/// The shipping thread's open transaction.
pub(super) struct Transaction {
    store: Store,
    cadence: Cadence,
    shutdown_timeout: Duration,
    /// The last cursor this session committed.
    committed: Option<String>,
}

impl Transaction {
    pub(super) fn new(store: Store, cfg: &Config) -> Transaction {
        Transaction {
            store,
            cadence: Cadence {
                sent: 0,
                opened: None,
                max_entries: cfg.delivery.transaction_max_entries,
                max_age: Duration::from_millis(cfg.delivery.transaction_max_ms),
                last_commit: Instant::now(),
                pass_interval: Duration::from_millis(cfg.state.checkpoint_interval_ms),
                timeout: Duration::from_millis(cfg.delivery.transaction_timeout_ms),
                close_took: Duration::ZERO,
            },
            committed: None,
            shutdown_timeout: Duration::from_millis(cfg.pipeline.shutdown_timeout_ms),
        }
    }

    pub(super) fn before_send(&mut self) -> Result<(), Failure> {
        if !self.store.is_open() {
            self.store.begin()?;
            self.cadence.opened(Instant::now());
        }
        Ok(())
    }

    /// One more entry went into the transaction.
    pub(super) fn sent(
        &mut self,
        control: &Control,
        metrics: &Metrics,
        progress: Option<&mut Progress>,
        producer: &Producer,
    ) -> Result<(), Failure> {
        self.cadence.sent += 1;
        if self.cadence.due(Instant::now()) {
            self.commit(control, metrics, None, false, (progress, producer))?;
        }
        Ok(())
    }

    pub(super) fn idle(
        &mut self,
        control: &Control,
        metrics: &Metrics,
        progress: Option<&mut Progress>,
        producer: &Producer,
    ) -> Result<(), Failure> {
        let moved = control.window().newest_place() != self.committed;
        let now = Instant::now();
        // Brokers expire a group's offsets `offsets.retention.minutes` (7 days by default)
        // after its last commit: a journal that does not move for that long must not cost
        // the agent its place.
        let refresh = now.duration_since(self.cadence.last_commit) >= REFRESH_EVERY;
        if refresh || self.cadence.idle_due(moved, now) {
            self.commit(control, metrics, None, refresh, (progress, producer))?;
        }
        Ok(())
    }

    /// Commits the transaction with the watermark's place: the newest registered position,
    /// once everything before it is settled and confirmed. Any failure leaves the
    /// transaction to be aborted.
    /// `again`: commit the place even if it has not moved (a refresh of the offsets).
    /// `carry`: the progress window (when progress records are on), which goes into the
    /// transaction with the place, and the producer it goes through.
    fn commit(
        &mut self,
        control: &Control,
        metrics: &Metrics,
        stop_by: Option<Instant>,
        again: bool,
        carry: (Option<&mut Progress>, &Producer),
    ) -> Result<(), Failure> {
        let began = Instant::now();
        let deadline = self.cadence.close_deadline(began);
        let deadline = stop_by.map_or(deadline, |s| s.min(deadline));
        let target = control.window().newest_place();
        let fresh = target.is_some() && target != self.committed;
        // The watermark is fed by the delivery reports; waiting on it (not on rdkafka's
        // flush, which polls in 100 ms steps) lets the commit follow the last report at once.
        // Wait in short steps: a stop requested meanwhile has its own deadline
        // (pipeline.shutdown_timeout_ms), which systemd enforces with SIGKILL.
        loop {
            let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
            if control.window().wait_settled(step) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Failure::retry(anyhow!(
                    "entries of the transaction were not confirmed within 90% of delivery.transaction_timeout_ms; aborting it before the broker does"
                )));
            }
            if control
                .stopped_at()
                .is_some_and(|t| t.elapsed() >= self.shutdown_timeout)
            {
                return Err(Failure::retry(anyhow!(
                    "entries of the transaction were not confirmed within pipeline.shutdown_timeout_ms of the stop; abandoning the transaction (the next start ships them again)"
                )));
            }
        }
        if let Some(f) = control.failure() {
            return Err(Failure::retry(anyhow!(f)));
        }
        match target.filter(|_| fresh || again) {
            Some(cursor) => {
                // Only the place the watermark vouches for is committed: it stands exactly
                // at the newest registered position, every entry before it confirmed.
                let safe = control
                    .window()
                    .safe_cursor_at(&cursor)
                    .map_err(|e| Failure::retry(anyhow!(e)))?;
                // The window of this transaction's entries, ending at the place committed
                // with it (the commit's flush waits for it like for any record).
                if let (Some(p), producer) = carry {
                    self.store.begin()?;
                    if !p.emit(producer) {
                        return Err(Failure::retry(anyhow!(
                            "cannot add the progress record to the transaction"
                        )));
                    }
                }
                self.store.commit(&safe, deadline)?;
                tracing::debug!(
                    entries = self.cadence.sent,
                    open_for = ?self.cadence.opened.map(|o| o.elapsed()),
                    took = ?began.elapsed(),
                    "transaction committed"
                );
                super::session::place_saved(metrics, &cursor);
                self.committed = Some(cursor);
            }
            // Nothing new to commit: an open transaction holds no entry.
            None => self.store.abort(),
        }
        self.cadence.closed(Instant::now(), began.elapsed());
        Ok(())
    }

    /// Ends the session's last transaction: committed after a clean stop, aborted after
    /// a failure (its entries are read again by the next session).
    pub(super) fn finish(
        &mut self,
        result: Result<(), Failure>,
        control: &Control,
        metrics: &Metrics,
        progress: Option<&mut Progress>,
        producer: &Producer,
    ) -> Result<(), Failure> {
        // A stop must end within pipeline.shutdown_timeout_ms, or systemd kills the agent:
        // past it the transaction is aborted, and its entries are shipped by the next start.
        let stop_by = Instant::now() + self.shutdown_timeout;
        let result = match result {
            Ok(())
                if control.failure().is_none()
                    && (self.cadence.sent > 0 || self.store.is_open()) =>
            {
                self.commit(control, metrics, Some(stop_by), false, (progress, producer))
            }
            other => other,
        };
        if self.store.is_open() {
            Metrics::add(&metrics.transactions_aborted, 1);
            self.store.abort_within(
                stop_by
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100)),
            );
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cadence(now: Instant) -> Cadence {
        Cadence {
            sent: 0,
            opened: None,
            max_entries: 3,
            max_age: Duration::from_secs(5),
            last_commit: now,
            pass_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            close_took: Duration::ZERO,
        }
    }

    #[test]
    fn a_slow_broker_closes_transactions_earlier_and_aborts_before_the_coordinator() {
        let t0 = Instant::now();
        let mut c = cadence(t0);
        c.max_age = Duration::from_secs(30);
        c.opened(t0);
        c.sent = 1;
        assert!(!c.due(t0 + Duration::from_secs(20)));
        // Closes took 8 s: a transaction now closes once its age plus twice that reaches
        // half the timeout.
        c.closed(t0, Duration::from_secs(8));
        c.opened(t0);
        c.sent = 1;
        assert!(!c.due(t0 + Duration::from_secs(13)));
        assert!(c.due(t0 + Duration::from_secs(14)));
        assert_eq!(
            c.close_deadline(t0 + Duration::from_secs(14)),
            t0 + Duration::from_secs(54)
        );
    }

    #[test]
    fn closes_on_size_or_age() {
        let t0 = Instant::now();
        let mut c = cadence(t0);
        c.opened(t0);
        c.sent = 2;
        assert!(!c.due(t0 + Duration::from_secs(1)));
        c.sent = 3;
        assert!(c.due(t0 + Duration::from_secs(1)), "size");
        c.sent = 1;
        assert!(c.due(t0 + Duration::from_secs(5)), "age");
        // Re-opening keeps the first opening time: age counts from the first entry.
        c.opened(t0 + Duration::from_secs(4));
        assert!(c.due(t0 + Duration::from_secs(5)));
        c.closed(t0 + Duration::from_secs(5), Duration::ZERO);
        assert!(!c.due(t0 + Duration::from_secs(60)), "nothing open");
    }

    #[test]
    fn idle_commits_entries_at_once_and_filtered_moves_at_the_pass_interval() {
        let t0 = Instant::now();
        let mut c = cadence(t0);
        assert!(!c.idle_due(false, t0 + Duration::from_secs(60)));
        assert!(!c.idle_due(true, t0 + Duration::from_millis(500)));
        assert!(c.idle_due(true, t0 + Duration::from_secs(1)));
        c.sent = 1;
        assert!(c.idle_due(false, t0));
    }
}
