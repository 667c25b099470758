//! The tracker: the watermark and the in-flight window behind one lock, shared by the
//! threads of a session. Session control (stop, failure text, exactly-once's pending
//! cursor records, signs of life) is the pipeline's (`pipeline::control`); it closes this
//! window when the session must end.
//!
//! Who touches what (every field of `Inner` is behind the one mutex):
//!
//! | state                         | written by                                   | read by                                  |
//! |-------------------------------|----------------------------------------------|------------------------------------------|
//! | `wm` push (`admit`, `pass`)   | shipping thread                              |                                          |
//! | `wm` delivered/failed         | delivery thread (`delivered`, `failed`); shipping thread (`failed`: a record that never reached librdkafka, or the refusal policy's verdict) |   |
//! | `wm` safe/newest place        |                                              | session thread (checkpoint tick), shipping thread (exactly-once commit) |
//! | `in_flight_*`                 | shipping thread (admit, and release through `failed`), delivery thread (release) | session thread (gauges) |
//! | `closed`                      | whoever ends the session, through `pipeline::control::Control` | shipping thread (`admit`) |
//!
//! "Delivery thread" is the producer's polling thread (`producer-poll`, and
//! `producer-repair` for re-sent refused records: `kafka::sink::Poller`), which runs
//! librdkafka's delivery-report callbacks.
//!
//! Every change to `Inner` signals `changed`, so a waiter never sleeps past an event
//! longer than its 100–200 ms cap.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{SafeCursor, Watermark};
use crate::logging::RateLimit;

/// Limits of the in-flight window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub entries: usize,
    pub bytes: usize,
}

/// `admit` admits nothing more: the window was closed (the session is stopping or
/// failed; the session's control says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

#[derive(Debug, Default)]
struct Inner {
    wm: Watermark,
    in_flight_entries: usize,
    in_flight_bytes: usize,
    closed: bool,
    /// Threads waiting on `changed`: a notification without a waiter is skipped, because
    /// std's condition variable makes a futex system call for every one (one per delivery
    /// report otherwise, #19).
    waiters: usize,
}

/// The watermark and the window, shared by the shipping thread (admit, pass), the
/// producer's delivery callback (delivered/failed) and the session thread's checkpoint tick
/// (safe_cursor); see the table at the top of this file.
pub(crate) struct Tracker {
    limits: Limits,
    inner: Mutex<Inner>,
    /// Signalled whenever room frees up or the state changes.
    changed: Condvar,
    /// At most one "backpressure engaged" line a minute.
    backpressure_log: RateLimit,
}

impl Tracker {
    /// A tracker with these limits (tests).
    #[cfg(test)]
    pub(crate) fn for_tests(entries: usize, bytes: usize) -> Tracker {
        Tracker::new(Limits { entries, bytes })
    }

    pub(crate) fn new(limits: Limits) -> Tracker {
        Tracker {
            limits,
            inner: Mutex::new(Inner::default()),
            changed: Condvar::new(),
            backpressure_log: RateLimit::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one
        // assignment), so poisoning is not a reason to stop shipping.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for room in the window, then registers the entry and returns its sequence
    /// number. An entry larger than the whole byte window is admitted alone once everything
    /// before it is settled, so it cannot wedge the pipeline.
    #[cfg(test)]
    pub(crate) fn admit(&self, cursor: String, bytes: usize) -> Result<u64, Closed> {
        self.admit_or(cursor, bytes, None, &|| ())
    }

    /// [`Tracker::admit`], running `while_full` (without the lock) every 20 ms while the
    /// window is full: records the brokers refused stay in the window until their policy
    /// settles them, and that policy runs on the waiting thread, so without this a window
    /// full of refused records would never empty (found when the default window shrank to
    /// 4 MiB, #19). `while_full` returning false ends the wait (the session is ending).
    /// `alive` is called on every wake-up while waiting: waiting for room is not being
    /// stuck, and the watchdog is fed through it.
    pub(crate) fn admit_or(
        &self,
        cursor: String,
        bytes: usize,
        mut while_full: Option<&mut dyn FnMut() -> bool>,
        alive: &dyn Fn(),
    ) -> Result<u64, Closed> {
        let wait = if while_full.is_some() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(200)
        };
        let mut g = self.lock();
        let mut waiting_since: Option<Instant> = None;
        let mut engaged = false;
        loop {
            if g.closed {
                return Err(Closed);
            }
            let fits = g.in_flight_entries < self.limits.entries
                && (g.in_flight_bytes + bytes <= self.limits.bytes || g.in_flight_entries == 0);
            if fits {
                if engaged {
                    let waited = waiting_since.map(|w| w.elapsed()).unwrap_or_default();
                    tracing::info!(waited = ?waited, "backpressure released: the broker confirmed entries; reading again");
                }
                g.in_flight_entries += 1;
                g.in_flight_bytes += bytes;
                return Ok(g.wm.push(cursor, bytes));
            }
            alive();
            // A full window for a moment is normal batching; say so only when it lasts.
            let since = *waiting_since.get_or_insert_with(Instant::now);
            if !engaged && since.elapsed() >= Duration::from_secs(2) {
                engaged = self.backpressure_log.admit("engaged").is_some();
                if engaged {
                    tracing::warn!(
                        entries = g.in_flight_entries,
                        bytes = g.in_flight_bytes,
                        "backpressure engaged: the in-flight window is full; reading paused until the broker confirms"
                    );
                }
            }
            g.waiters += 1;
            g = self
                .changed
                .wait_timeout(g, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            g.waiters -= 1;
            if let Some(f) = while_full.as_deref_mut() {
                drop(g);
                if !f() {
                    return Err(Closed);
                }
                g = self.lock();
            }
        }
    }

    /// Registers a position that needs no delivery (entries the filters removed) so the
    /// watermark can pass it once everything before it is delivered.
    pub(crate) fn pass(&self, cursor: String) {
        let mut g = self.lock();
        let seq = g.wm.push(cursor, 0);
        g.wm.delivered(seq);
    }

    /// Records a delivery; returns the time since the entry was admitted.
    pub(crate) fn delivered(&self, seq: u64) -> Option<Duration> {
        let mut g = self.lock();
        let (bytes, latency) = g.wm.delivered_at(seq);
        self.release(&mut g, bytes);
        latency
    }

    /// Records a failed delivery: the watermark stops there for good (nothing after it
    /// becomes safe) and the window closes; the session restarts from the safe place.
    pub(crate) fn failed(&self, seq: u64) {
        let mut g = self.lock();
        let bytes = g.wm.failed(seq);
        g.closed = true;
        self.release(&mut g, bytes);
    }

    /// Admits nothing more, and wakes a reader waiting for room.
    pub(crate) fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        self.notify(&g);
    }

    /// Waits until `done` holds or the deadline passes; false at the deadline. Every state
    /// change signals `changed`; the 100 ms cap only bounds a missed wake-up.
    fn wait_for(&self, deadline: Instant, done: impl Fn(&Inner) -> bool) -> bool {
        let mut g = self.lock();
        loop {
            if done(&g) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g.waiters += 1;
            g = self
                .changed
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            g.waiters -= 1;
        }
    }

    fn release(&self, g: &mut Inner, bytes: usize) {
        g.in_flight_entries = g.in_flight_entries.saturating_sub(1);
        g.in_flight_bytes = g.in_flight_bytes.saturating_sub(bytes);
        self.notify(g);
    }

    /// Wakes the waiters, if any. Called with the lock held: a thread that is about to
    /// wait has counted itself under the same lock, so none is missed.
    fn notify(&self, g: &Inner) {
        if g.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// The place that may be committed, with the watermark's generation. The only place a
    /// [`SafeCursor`] is made.
    pub(crate) fn safe_cursor(&self) -> Option<(SafeCursor, u64)> {
        let g = self.lock();
        g.wm.safe_place()
            .map(|c| (SafeCursor(c), g.wm.generation()))
    }

    /// The safe place, provided the watermark stands exactly at `target` (exactly-once: the
    /// cursor record already in the transaction names `target`).
    pub(crate) fn safe_cursor_at(&self, target: &str) -> Result<SafeCursor, String> {
        match self.safe_cursor() {
            Some((c, _)) if &*c == target => Ok(c),
            safe => Err(format!(
                "the watermark stopped at {:?}, before the transaction's cursor {target:?}",
                safe.map(|(c, _)| c.0)
            )),
        }
    }

    /// The place the watermark will reach once everything registered is delivered.
    pub(crate) fn newest_place(&self) -> Option<String> {
        self.lock().wm.newest_place()
    }

    /// Drops a gone writer's position (see [`Watermark::forget`]).
    pub(crate) fn forget(&self, stream: &str) -> bool {
        self.lock().wm.forget(stream)
    }

    /// The positions the session starts from (see [`Watermark::seed`]).
    pub(crate) fn seed(&self, place: &str) {
        self.lock().wm.seed(place);
    }

    pub(crate) fn in_flight(&self) -> (usize, usize) {
        let g = self.lock();
        (g.in_flight_entries, g.in_flight_bytes)
    }

    /// Waits until every admitted entry has a final answer, or the deadline passes.
    pub(crate) fn wait_settled(&self, deadline: Instant) -> bool {
        self.wait_for(deadline, |g| g.wm.settled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn window_blocks_until_delivery() {
        let t = Arc::new(Tracker::for_tests(2, 1000));
        assert_eq!(t.admit("a".into(), 10), Ok(0));
        assert_eq!(t.admit("b".into(), 10), Ok(1));
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.admit("c".into(), 10));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!h.is_finished(), "a full window must block the reader");
        t.delivered(0);
        assert_eq!(h.join().unwrap(), Ok(2));
        assert_eq!(t.safe_cursor().map(|c| c.0).as_deref(), Some("a"));
    }

    #[test]
    fn byte_window_and_oversized_entries() {
        let t = Tracker::for_tests(100, 100);
        assert_eq!(t.admit("a".into(), 60), Ok(0));
        t.delivered(0);
        // Bigger than the whole window: admitted alone.
        assert_eq!(t.admit("b".into(), 500), Ok(1));
        assert_eq!(t.in_flight(), (1, 500));
    }

    #[test]
    fn failure_stops_admission_and_the_watermark() {
        let t = Tracker::for_tests(10, 1000);
        t.admit("a".into(), 1).unwrap();
        t.admit("b".into(), 1).unwrap();
        t.admit("c".into(), 1).unwrap();
        t.delivered(0);
        t.failed(1);
        t.delivered(2);
        assert_eq!(t.admit("d".into(), 1), Err(Closed));
        assert_eq!(t.safe_cursor().map(|c| c.0).as_deref(), Some("a"));
        assert!(t.wait_settled(Instant::now()));
    }

    #[test]
    fn filtered_positions_pass_only_behind_deliveries() {
        let t = Tracker::for_tests(10, 1000);
        t.admit("a".into(), 1).unwrap();
        t.pass("tail".into());
        assert_eq!(t.safe_cursor(), None);
        t.delivered(0);
        assert_eq!(t.safe_cursor().map(|c| c.0).as_deref(), Some("tail"));
    }

    #[test]
    fn newest_place_and_safe_place() {
        let t = Tracker::for_tests(10, 1000);
        assert_eq!(t.newest_place(), None);
        t.admit("a".into(), 1).unwrap();
        t.pass("b".into());
        // Newest registered, whether settled or not; safe only once "a" is delivered.
        assert_eq!(t.newest_place().as_deref(), Some("b"));
        assert_eq!(t.safe_cursor(), None);
        t.delivered(0);
        assert_eq!(t.safe_cursor().map(|c| c.0).as_deref(), Some("b"));
        assert_eq!(t.newest_place().as_deref(), Some("b"));
    }

    #[test]
    fn closing_wakes_a_waiting_reader() {
        let t = Arc::new(Tracker::for_tests(1, 1000));
        t.admit("a".into(), 1).unwrap();
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.admit("b".into(), 1));
        std::thread::sleep(Duration::from_millis(50));
        t.close();
        assert_eq!(h.join().unwrap(), Err(Closed));
        assert!(!t.wait_settled(Instant::now() + Duration::from_millis(10)));
    }
}
