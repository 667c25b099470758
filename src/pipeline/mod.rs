//! The pipeline: wires input → format → kafka → checkpoint, and owns backpressure,
//! retries and shutdown.
//!
//! A *session* (`session`) is one producer, one reader thread (`reader`, the journal input
//! behind the `input` seam) and one shipping thread (`shipper`, with the exactly-once
//! cadence of `exactly_once`), started from the last safe cursor. When a delivery fails or
//! the producer hits a fatal error, the session ends, everything it sent is settled, the
//! safe cursor is committed, and a new session starts from that cursor after a backoff
//! (this file). So a failure can cause duplicates (never more than the in-flight window)
//! but never a gap. [`Journal`] is the journal input in the process's lifecycle
//! (`lifecycle::Input`): this loop on its own `pipeline` thread, and the loss forecast
//! (`forecast`) beside it. `service` is what the supervisor and signal handlers see.
//! `control` is a session's control (stop, failure, signs of life; the window and the
//! watermark are `checkpoint::Tracker`'s), and `delivery` the journal's side of the
//! output seam (its records' headers, its producers, what their reports mean).
//!
//! This module must never commit a cursor itself (the checkpoint's `Checkpointer` and the
//! exactly-once store take only a `SafeCursor`), and never drop an admitted entry without
//! failing it in the watermark.

mod account;
mod control;
mod delivery;
mod exactly_once;
mod forecast;
mod input;
mod progress;
mod reader;
mod repair;
mod service;
mod session;
mod shipper;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use delivery::headers as record_headers;
pub(crate) use reader::describe_start;
pub(crate) use service::Shutdown;

/// The journal input in the process's lifecycle: the session loop ([`run`]) on a thread of
/// its own, as `cli/run.rs` drives every input.
pub(crate) struct Journal {
    thread: Option<std::thread::JoinHandle<Result<(), Failure>>>,
    /// How the thread ended, when it ended while a stop was already requested: `stop`
    /// returns it (a failure must not turn into a clean exit).
    ended: Option<Result<(), Failure>>,
    shutdown: Arc<Shutdown>,
    report: Arc<Report>,
    metrics: Arc<Metrics>,
}

impl Journal {
    pub(crate) fn start(
        cfg: Config,
        mut store: Box<dyn Store + Send>,
        shutdown: Arc<Shutdown>,
        metrics: Arc<Metrics>,
        watchdog: Option<Duration>,
    ) -> anyhow::Result<Journal> {
        forecast::spawn(&cfg, metrics.clone(), shutdown.clone())?;
        let report = Arc::new(Report::default());
        let thread = {
            let (shutdown, metrics, report) = (shutdown.clone(), metrics.clone(), report.clone());
            std::thread::Builder::new()
                .name("pipeline".into())
                .spawn(move || run(cfg, &mut *store, &shutdown, &metrics, &report, watchdog))?
        };
        Ok(Journal {
            thread: Some(thread),
            ended: None,
            shutdown,
            report,
            metrics,
        })
    }

    fn join(&mut self) -> Result<(), Failure> {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Failure::fatal(anyhow::anyhow!(
                "the journal pipeline panicked"
            ))),
        }
    }
}

impl crate::lifecycle::Input for Journal {
    fn name(&self) -> &'static str {
        "journal"
    }

    fn started(&self) -> Option<String> {
        self.report.ready()
    }

    fn unhealthy(&self) -> Option<String> {
        (!self
            .metrics
            .journal_open
            .load(std::sync::atomic::Ordering::Relaxed))
        .then(|| "journal not open".to_string())
    }

    fn alive(&self, within: Duration) -> bool {
        self.report.beat_within(within)
    }

    fn status(&self) -> String {
        self.report.status()
    }

    fn ended(&mut self) -> Option<Failure> {
        if !self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return None;
        }
        let end = self.join();
        if self.shutdown.requested() {
            self.ended = Some(end);
            return None;
        }
        Some(end.err().unwrap_or_else(|| {
            Failure::fatal(anyhow::anyhow!("the journal pipeline stopped unexpectedly"))
        }))
    }

    /// Everything but the process-wide settings (`lifecycle::restart_needed`) applies:
    /// the session ends (what is in flight is confirmed and the place saved) and the next
    /// one starts from that place with the new configuration.
    fn restart_needed(&self, _old: &Config, _new: &Config) -> Vec<&'static str> {
        Vec::new()
    }

    fn reload(&mut self, new: &Config) -> anyhow::Result<()> {
        // The running session's readiness no longer counts, even if it comes late; only
        // the session of this configuration (this generation) may say ready.
        let generation = self.report.renew();
        self.shutdown.reload(new.clone(), generation);
        Ok(())
    }

    fn stop(mut self: Box<Self>) -> Result<(), Failure> {
        self.shutdown.request();
        match self.ended.take() {
            Some(end) => end,
            None => self.join(),
        }
    }
}

use crate::checkpoint::Store;
use crate::config::{Config, Mode};
use crate::error::Failure;
use crate::kafka::transaction;
use crate::lifecycle::Report;
use crate::metrics::Metrics;

/// A session that ran this long earns a fresh, short backoff after it fails.
const HEALTHY_SESSION: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Runs the agent until shutdown. Returns a failure only for conditions a new session
/// cannot get past.
pub(crate) fn run(
    mut cfg: Config,
    store: &mut dyn Store,
    shutdown: &Arc<Shutdown>,
    metrics: &Arc<Metrics>,
    report: &Report,
    watchdog: Option<Duration>,
) -> Result<(), Failure> {
    // In exactly-once mode every session reads its place from the cursor topic, because an
    // aborted transaction takes back what the watermark had already seen confirmed.
    let (mut resume, mut eo) = match cfg.delivery.mode {
        Mode::AtLeastOnce => {
            let resume = store.load().map_err(Failure::fatal)?;
            log_restore(resume.as_deref(), &store.describe(), &cfg);
            (resume, None)
        }
        Mode::ExactlyOnce => (
            None,
            Some(session::ExactlyOnce {
                id: transaction::transactional_id(&cfg).map_err(Failure::fatal)?,
                cursor_topic_ready: false,
            }),
        ),
    };
    let mut svc = service::Service::new(report, 0, watchdog, &cfg);
    let mut backoff = Backoff::new(Duration::from_millis(cfg.pipeline.retry_backoff_max_ms));
    let mut first = true;
    loop {
        if let Some((new, generation)) = shutdown.take_reload() {
            // The session that ended committed its safe cursor; the next one resumes from
            // it with the new settings (the delivery mode cannot change here: see `run`'s
            // reload check). READY follows once the new session is up.
            cfg = new;
            svc = service::Service::new(report, generation, watchdog, &cfg);
            backoff = Backoff::new(Duration::from_millis(cfg.pipeline.retry_backoff_max_ms));
            if let Some(eo) = eo.as_mut() {
                eo.cursor_topic_ready = false;
            }
            tracing::info!(
                cursor = resume.as_deref().unwrap_or("(none)"),
                "configuration reloaded; starting a session with it"
            );
        }
        let started = Instant::now();
        let cx = session::Context {
            cfg: &cfg,
            shutdown,
            metrics,
            first,
        };
        let (end, safe) = session::run(&cx, store, resume.clone(), &mut svc, eo.as_mut());
        first = false;
        if safe.is_some() {
            resume = safe;
        }
        let e = match end {
            Ok(()) if shutdown.reload_pending() && !shutdown.requested() => continue,
            Ok(()) => return Ok(()),
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => e,
        };
        Metrics::add(&metrics.sessions_restarted, 1);
        let wait = backoff.next(started.elapsed());
        let error = e.to_string();
        metrics.error(format!("pipeline restarted: {error}"));
        tracing::error!(
            error,
            retry_in = ?wait,
            cursor = resume.as_deref().unwrap_or("(none)"),
            "pipeline stopped; restarting from the last safe cursor"
        );
        let until = Instant::now() + wait;
        while Instant::now() < until {
            svc.waiting(&format!(
                "retrying in {}s after: {error}",
                until.saturating_duration_since(Instant::now()).as_secs()
            ));
            if shutdown.sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1)),
            ) {
                if shutdown.requested() {
                    return Ok(());
                }
                break;
            }
        }
    }
}

/// Exponential backoff between sessions, reset by a session that ran well for a while.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            next: FIRST_BACKOFF.min(max),
            max,
        }
    }

    /// The wait before the next session, given how long the failed one ran.
    fn next(&mut self, ran: Duration) -> Duration {
        if ran > HEALTHY_SESSION {
            self.next = FIRST_BACKOFF.min(self.max);
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

fn log_restore(resume: Option<&str>, from: &str, cfg: &Config) {
    match resume {
        Some(c) => tracing::info!(cursor = %c, "restoring from {from}"),
        None => {
            tracing::info!(start = ?cfg.journal.start, "no saved cursor in {from}; starting at the configured position")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_after_a_healthy_session() {
        let mut b = Backoff::new(Duration::from_secs(3));
        let quick = Duration::from_secs(1);
        let waits: Vec<u64> = (0..5).map(|_| b.next(quick).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 3000, 3000]);
        assert_eq!(b.next(Duration::from_secs(61)), Duration::from_millis(500));
        assert_eq!(b.next(quick), Duration::from_millis(1000));
    }
}
