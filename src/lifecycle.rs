//! The one lifecycle every input joins: what `cli/run.rs` asks of the journal pipeline and
//! of the Forward input alike, so that readiness, the watchdog, `status`, reload and stop
//! treat every input the same way (issue 28: with both inputs on, the Forward input's
//! death went unnoticed and a reload never reached it).
//!
//! Owns the [`Input`] contract and [`Report`], the state an input's own threads publish
//! for the supervisor to read. It must never talk to the service manager or decide what
//! an input does: the supervisor (`cli/run.rs`) turns every input's answers into READY,
//! WATCHDOG and STATUS, and each input decides its own health.
//!
//! Who touches what in a [`Report`]:
//!
//! | field    | the input's threads                          | the supervisor (`cli/run.rs`) |
//! |----------|----------------------------------------------|-------------------------------|
//! | `ready`  | set once the input serves, cleared on reload | reads: READY=1 once all are   |
//! | `beat`   | stamps it while the input shows signs of life | reads: WATCHDOG=1 while all are fresh |
//! | `status` | writes its one line                          | reads: STATUS= joins them     |

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::Failure;

/// An input the supervisor runs: started before it is handed over, stopped through it.
pub(crate) trait Input {
    /// Its name in logs, `status` and readiness reasons ("journal", "forward").
    fn name(&self) -> &'static str;
    /// What to tell the service manager once it serves (READY=1 waits for every input).
    fn started(&self) -> Option<String>;
    /// Why it does not serve now, for `/health/ready` (`None`: it does).
    fn unhealthy(&self) -> Option<String>;
    /// Whether it showed a sign of life within `within` (the watchdog).
    fn alive(&self, within: Duration) -> bool;
    /// Its one-line status.
    fn status(&self) -> String;
    /// It ended on its own: the failure to exit with. Polled by the supervisor.
    fn ended(&mut self) -> Option<Failure>;
    /// The settings of `new` that only a restart can apply to it, from the parsed values
    /// (never from their text: a secret prints the same whatever it is).
    fn restart_needed(&self, old: &Config, new: &Config) -> Vec<&'static str>;
    /// Applies `new`, which [`Input::restart_needed`] accepted. An error leaves it
    /// running as it was.
    fn reload(&mut self, new: &Config) -> anyhow::Result<()>;
    /// Stops it: stop taking input, confirm what is in flight (within the shutdown
    /// timeout), then save the place. The failure it ended with, if any.
    fn stop(self: Box<Self>) -> Result<(), Failure>;
}

/// What an input's threads publish for the supervisor (see the table above).
#[derive(Debug)]
pub(crate) struct Report {
    epoch: Instant,
    /// The status READY=1 carries, with the generation it was set for.
    ready: Mutex<(u64, Option<String>)>,
    /// Moves at each [`Report::renew`]: a `set_ready` of an older generation (a session of
    /// the configuration before a reload) is ignored.
    generation: AtomicU64,
    /// Milliseconds after `epoch` of the last sign of life (0: none yet).
    beat: AtomicU64,
    status: Mutex<String>,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            epoch: Instant::now(),
            ready: Mutex::new((0, None)),
            generation: AtomicU64::new(0),
            beat: AtomicU64::new(0),
            status: Mutex::new(String::new()),
        }
    }
}

impl Report {
    /// The input serves, as of `generation` (from [`Report::renew`]).
    pub(crate) fn set_ready(&self, generation: u64, status: &str) {
        let mut g = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if generation == self.generation.load(Ordering::Acquire) {
            *g = (generation, Some(status.to_string()));
            drop(g);
            self.set_status(status);
        }
    }

    /// A new configuration: READY=1 is due again once the input serves with it, and only
    /// what is set for the generation returned counts.
    pub(crate) fn renew(&self) -> u64 {
        let mut g = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *g = (generation, None);
        generation
    }

    pub(crate) fn ready(&self) -> Option<String> {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    pub(crate) fn beat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.beat.store(ms.max(1), Ordering::Relaxed);
    }

    pub(crate) fn beat_within(&self, within: Duration) -> bool {
        let at = self.beat.load(Ordering::Relaxed);
        at > 0
            && (self.epoch.elapsed().as_millis() as u64).saturating_sub(at)
                <= within.as_millis() as u64
    }

    pub(crate) fn set_status(&self, status: &str) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status.to_string();
    }

    pub(crate) fn status(&self) -> String {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The names of the settings whose check says they changed (for `restart_needed`).
pub(crate) fn changed<const N: usize>(checks: [(&'static str, bool); N]) -> Vec<&'static str> {
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// Settings the process applies once, for every input: where the place lives and how
/// (a reload resumes from the committed place of the same store), the HTTP endpoint's
/// address, logging, which inputs run. Compared as parsed values.
pub(crate) fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let exactly_once = new.delivery.mode == crate::config::Mode::ExactlyOnce;
    changed([
        (
            "journal.enabled",
            old.journal.enabled != new.journal.enabled,
        ),
        (
            "forward (on or off)",
            old.forward.is_some() != new.forward.is_some(),
        ),
        (
            "state.directory",
            old.state.directory != new.state.directory,
        ),
        ("metrics.listen", old.metrics.listen != new.metrics.listen),
        ("log", old.log != new.log),
        ("delivery.mode", old.delivery.mode != new.delivery.mode),
        (
            "delivery.transactional_id",
            old.delivery.transactional_id != new.delivery.transactional_id,
        ),
        // Exactly-once without an explicit id derives it from the source at start:
        // another source would resume from the place of the first.
        (
            "journal.source (the exactly-once transactional id is derived from it)",
            exactly_once
                && new.delivery.transactional_id.is_none()
                && old.journal.source != new.journal.source,
        ),
        // Exactly-once keeps the place in the cursor topic of these brokers: a session
        // started elsewhere would not find it and fall back to `journal.start`.
        (
            "delivery.cursor_topic (exactly-once keeps the place there)",
            exactly_once && old.delivery.cursor_topic != new.delivery.cursor_topic,
        ),
        (
            "kafka.brokers (exactly-once keeps the place in their cursor topic)",
            exactly_once && old.kafka.brokers != new.kafka.brokers,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        crate::config::for_tests(extra)
    }

    #[test]
    fn what_needs_a_restart_is_decided_from_values_not_their_text() {
        let a = cfg("[log]\nlevel = \"info\"\n");
        assert!(restart_needed(&a, &a.clone()).is_empty());
        assert_eq!(
            restart_needed(&a, &cfg("[log]\nlevel = \"debug\"\n")),
            ["log"]
        );
        assert_eq!(
            restart_needed(&a, &cfg("[state]\ndirectory = \"/elsewhere\"\n")),
            ["state.directory"]
        );
    }

    #[test]
    fn ready_from_a_configuration_before_a_reload_does_not_count() {
        let r = Report::default();
        let old = r.renew();
        let new = r.renew();
        r.set_ready(old, "old session");
        assert_eq!(r.ready(), None);
        r.set_ready(new, "new session");
        assert_eq!(r.ready().as_deref(), Some("new session"));
        r.renew();
        assert_eq!(r.ready(), None, "a reload clears it");
    }

    #[test]
    fn a_beat_is_fresh_for_its_window_only() {
        let r = Report::default();
        assert!(!r.beat_within(Duration::from_secs(60)), "no beat yet");
        r.beat();
        assert!(r.beat_within(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!r.beat_within(Duration::from_millis(10)));
    }
}
