//! Session control: whether a session goes on, why it ends, and whether its threads show
//! life. The window and the watermark are the tracker's (`checkpoint::Tracker`); this
//! closes the window when the session must end, so the reader stops waiting for room.
//!
//! Who touches what (`State` is behind one mutex; the atomics are not):
//!
//! | state                  | written by                                                   | read by                                   |
//! |------------------------|--------------------------------------------------------------|-------------------------------------------|
//! | `stopping`, `stopped_at` | whoever asks the journal input to stop or reload, via `Shutdown` (the signal thread, the supervisor), and the session thread when it attaches a new session to a request already made | reader and shipping threads (`status`, `stopped_at`) |
//! | `failure`              | delivery thread (`record_failed`, `fatal`), shipping thread (`delivery::send` refused or ended, the refusal policy) | everyone (`status`, `failure`) |
//! | `reader_beat`          | reader thread, and the shipping thread while it waits for room | session thread (watchdog)               |
//! | `producer_beat`        | delivery thread (statistics callback)                        | session thread (watchdog)                 |
//! | `opened`               | reader thread, once                                          | session thread (readiness)                |
//!
//! The threads themselves are listed in `session.rs`. "Delivery thread" is the producer's
//! polling thread (`producer-poll`, and `producer-repair` for re-sent refused records),
//! which runs librdkafka's delivery-report, error and statistics callbacks.
//!
//! A failure is stored before the window closes, always: whoever finds the window closed
//! finds the reason too. It must never decide what is delivered or safe: that is the
//! watermark's alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::checkpoint::{Limits, Tracker};

/// Why a session does not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Halt {
    /// A stop (or a reload) was requested.
    Stopping,
    /// Something failed; the session must restart from the safe place.
    Failed(String),
}

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    /// When `stop` was called: a stop has a deadline of its own.
    stopped_at: Option<Instant>,
    /// The first failure: the one that explains the others.
    failure: Option<String>,
}

/// One session's control, shared by its threads; see the table at the top of this file.
pub(crate) struct Control {
    window: Arc<Tracker>,
    state: Mutex<State>,
    /// Liveness, for the watchdog: milliseconds since `born` of the reader's and the
    /// producer's last sign of life.
    born: Instant,
    reader_beat: AtomicU64,
    producer_beat: AtomicU64,
    opened: AtomicBool,
}

impl Control {
    pub(super) fn new(limits: Limits) -> Control {
        Control {
            window: Arc::new(Tracker::new(limits)),
            state: Mutex::new(State::default()),
            born: Instant::now(),
            reader_beat: AtomicU64::new(0),
            producer_beat: AtomicU64::new(0),
            opened: AtomicBool::new(false),
        }
    }

    /// The session's window and watermark.
    pub(super) fn window(&self) -> &Tracker {
        &self.window
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is one assignment: a panic while holding the lock leaves
        // consistent data, so poisoning is not a reason to stop shipping.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the reader to stop at the next entry.
    pub(super) fn stop(&self) {
        {
            let mut g = self.lock();
            g.stopping = true;
            g.stopped_at.get_or_insert_with(Instant::now);
        }
        self.halted();
    }

    /// When a stop was requested, if it was.
    pub(super) fn stopped_at(&self) -> Option<Instant> {
        self.lock().stopped_at
    }

    /// Whether the session should go on reading.
    pub(super) fn status(&self) -> Result<(), Halt> {
        let g = self.lock();
        match (&g.failure, g.stopping) {
            (Some(f), _) => Err(Halt::Failed(f.clone())),
            (None, true) => Err(Halt::Stopping),
            (None, false) => Ok(()),
        }
    }

    pub(super) fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// The session fails (the first reason is kept) and admits nothing more.
    pub(super) fn fail(&self, error: String) {
        Self::set_failure(&mut self.lock(), error);
        self.halted();
    }

    fn set_failure(g: &mut State, error: String) {
        if g.failure.is_none() {
            g.failure = Some(error);
        }
    }

    /// After a change that ends the session: a reader waiting for room wakes up.
    fn halted(&self) {
        self.window.close();
    }

    /// A record admitted as `seq` failed: the watermark stops there for good and the
    /// session fails.
    pub(super) fn record_failed(&self, seq: u64, error: String) {
        // The reason first: whoever finds the window closed must find why (a session
        // ended by a closed window and no failure would look like a clean stop).
        self.fail(error);
        self.window.failed(seq);
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// The reader is alive (reading, waiting for the journal, or waiting for room).
    pub(super) fn reader_beat(&self) {
        self.reader_beat.store(self.now_ms(), Ordering::Relaxed);
    }

    /// librdkafka's polling thread is alive (it delivered statistics).
    pub(super) fn producer_beat(&self) {
        self.producer_beat.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long ago the reader and the producer last showed life.
    pub(super) fn beat_ages(&self) -> (Duration, Duration) {
        let now = self.now_ms();
        let age =
            |b: &AtomicU64| Duration::from_millis(now.saturating_sub(b.load(Ordering::Relaxed)));
        (age(&self.reader_beat), age(&self.producer_beat))
    }

    /// The journal is open and positioned.
    pub(super) fn set_opened(&self) {
        self.opened.store(true, Ordering::Relaxed);
    }

    pub(super) fn opened(&self) -> bool {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> Arc<Control> {
        Arc::new(Control::new(Limits {
            entries: 1,
            bytes: 1000,
        }))
    }

    #[test]
    fn a_stop_wakes_a_reader_waiting_for_room() {
        let c = control();
        c.window().admit("a".into(), 1).unwrap();
        let c2 = c.clone();
        let h = std::thread::spawn(move || c2.window().admit("b".into(), 1));
        std::thread::sleep(Duration::from_millis(50));
        c.stop();
        assert!(h.join().unwrap().is_err());
        assert_eq!(c.status(), Err(Halt::Stopping));
        assert!(c.stopped_at().is_some());
    }

    #[test]
    fn a_failed_record_stops_the_watermark_and_the_session() {
        let c = control();
        c.window().admit("a".into(), 1).unwrap();
        c.record_failed(0, "MSG_SIZE_TOO_LARGE".into());
        c.fail("a later failure".into());
        // The first reason is the one that explains the others.
        assert_eq!(c.status(), Err(Halt::Failed("MSG_SIZE_TOO_LARGE".into())));
        assert!(c.window().admit("b".into(), 1).is_err());
        assert_eq!(c.window().safe_cursor(), None);
    }
}
