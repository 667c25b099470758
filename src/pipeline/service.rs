//! What the supervisor and the operator see of a running pipeline: shutdown requests from
//! signal handlers, and readiness, signs of life and the one-line status published in
//! the journal input's `lifecycle::Report`.
//!
//! Runs on the session thread (the one that called `pipeline::run`), except
//! [`Shutdown::request`] and [`Shutdown::reload`], which the supervisor (and, for a stop,
//! the signal thread) call. It must never decide anything
//! about delivery: it only reports what the session's control and the probe say.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::control::Control;
use crate::config::Config;
use crate::lifecycle::Report;
use crate::metrics::Metrics;

/// How often a healthy pipeline publishes a sign of life.
const BEAT_EVERY: Duration = Duration::from_millis(200);

/// Lets a signal handler stop the pipeline, or hand it a new configuration, from another
/// thread.
#[derive(Default)]
pub(crate) struct Shutdown {
    requested: AtomicBool,
    session: Mutex<Option<Arc<Control>>>,
    wake: Condvar,
    /// A validated configuration to run the next session with (SIGHUP): the running
    /// session stops as for a shutdown, settles and commits, and the loop starts over.
    /// With the generation of the journal's `lifecycle::Report` it belongs to.
    reload: Mutex<Option<(Config, u64)>>,
}

impl Shutdown {
    pub(crate) fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let g = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = g.as_ref() {
            t.stop();
        }
        self.wake.notify_all();
    }

    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Ends the running session the way a stop does and makes the next one use `cfg`.
    pub(crate) fn reload(&self, cfg: Config, generation: u64) {
        *self.reload.lock().unwrap_or_else(|p| p.into_inner()) = Some((cfg, generation));
        let g = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = g.as_ref() {
            t.stop();
        }
        self.wake.notify_all();
    }

    pub(super) fn reload_pending(&self) -> bool {
        self.reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub(super) fn take_reload(&self) -> Option<(Config, u64)> {
        self.reload.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The running session's control, so that a request stops its reader at once.
    pub(super) fn attach(&self, t: Option<Arc<Control>>) {
        let mut g = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = &t {
            if self.requested() || self.reload_pending() {
                t.stop();
            }
        }
        *g = t;
    }

    /// Sleeps for `d` unless shutdown or a reload is requested first. Returns true if one was.
    pub(super) fn sleep(&self, d: Duration) -> bool {
        let g = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let _g = self
            .wake
            .wait_timeout_while(g, d, |_| !self.requested() && !self.reload_pending())
            .unwrap_or_else(|p| p.into_inner());
        self.requested() || self.reload_pending()
    }
}

/// What the journal input tells the supervisor (`lifecycle::Report`), which tells the
/// service manager: started once, signs of life while the pipeline is healthy, and a
/// one-line status.
pub(super) struct Service<'a> {
    report: &'a Report,
    /// This configuration's generation in the report (`Report::renew`).
    generation: u64,
    /// No sign of life is being published (said once per silence).
    quiet: bool,
    /// The service manager's watchdog interval, if it has one.
    watchdog: Option<Duration>,
    started: Instant,
    pub(super) ready: bool,
    last_ping: Instant,
    last_status: Instant,
    /// The producer's heartbeat may be older than this before the watchdog goes quiet.
    producer_grace: Option<Duration>,
    /// READY is not held back longer than this by brokers that do not answer.
    connect_timeout: Duration,
}

impl<'a> Service<'a> {
    /// `generation`: the report's generation this configuration belongs to (0 at start,
    /// then the one `Journal::reload` renewed to): readiness of another does not count.
    pub(super) fn new(
        report: &'a Report,
        generation: u64,
        watchdog: Option<Duration>,
        cfg: &Config,
    ) -> Service<'a> {
        let stats_ms = crate::config::properties::statistics_interval_ms(&cfg.kafka);
        let interval = watchdog.unwrap_or(Duration::from_secs(30));
        Service {
            report,
            generation,
            quiet: false,
            watchdog,
            started: Instant::now(),
            ready: false,
            last_ping: Instant::now(),
            last_status: Instant::now(),
            // Without statistics there is no heartbeat to check; trust the reader alone.
            producer_grace: (stats_ms > 0)
                .then(|| interval.max(Duration::from_millis(3 * stats_ms + 1000))),
            connect_timeout: Duration::from_millis(cfg.kafka.connect_timeout_ms),
        }
    }

    /// A sign of life is published every [`BEAT_EVERY`] while the pipeline is healthy
    /// (the supervisor pings systemd while it is fresh).
    fn ping_due(&self) -> bool {
        self.watchdog.is_some() && self.last_ping.elapsed() >= BEAT_EVERY
    }

    /// Called every ~100 ms while a session runs.
    pub(super) fn tick(
        &mut self,
        cfg: &Config,
        control: &Control,
        probe: &Probe,
        metrics: &Metrics,
    ) {
        if !self.ready && control.opened() {
            let timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms);
            let status = match probe.get() {
                Some(Ok(parts)) => Some(format!(
                    "journal open; brokers reachable ({parts} partitions)"
                )),
                Some(Err(e)) if self.started.elapsed() >= timeout => {
                    Some(format!("journal open; brokers NOT reachable yet: {e}"))
                }
                None if self.started.elapsed() >= timeout => {
                    Some("journal open; brokers NOT reachable yet".to_string())
                }
                _ => None,
            };
            if let Some(st) = status {
                tracing::info!("ready: {st}");
                self.report.set_ready(self.generation, &st);
                self.ready = true;
            }
        }
        if self.ping_due() {
            let w = self.watchdog.unwrap_or_default();
            let (reader_age, producer_age) = control.beat_ages();
            let producer_ok = self.producer_grace.is_none_or(|g| producer_age < g);
            if reader_age < w / 2 && producer_ok {
                self.report.beat();
                self.last_ping = Instant::now();
                self.quiet = false;
            } else if !self.quiet {
                tracing::error!(
                    ?reader_age,
                    ?producer_age,
                    "pipeline shows no sign of life; withholding the watchdog ping"
                );
                self.quiet = true;
            }
        }
        // Published every second (a string in memory); the supervisor sends it on.
        if self.last_status.elapsed() >= Duration::from_secs(1) {
            let (n, _) = control.window().in_flight();
            self.report.set_status(&format!(
                "shipping: {} entries delivered, {n} in flight, {} restarts",
                Metrics::get(&metrics.entries_delivered),
                Metrics::get(&metrics.sessions_restarted)
            ));
            self.last_status = Instant::now();
        }
    }

    /// Called while waiting to retry or on the brokers: deliberate waiting is healthy, and
    /// it does not hold READY back past the connect timeout (systemd would otherwise fail
    /// the start after TimeoutStartSec, and a broker outage at boot would become a failed
    /// unit).
    pub(super) fn waiting(&mut self, why: &str) {
        if !self.ready && self.started.elapsed() >= self.connect_timeout {
            let st = format!("brokers NOT reachable yet: {why}");
            tracing::info!("ready: {st}");
            self.report.set_ready(self.generation, &st);
            self.ready = true;
            self.last_status = Instant::now();
        }
        if self.ping_due() {
            self.report.beat();
            self.last_ping = Instant::now();
        }
        if self.last_status.elapsed() >= Duration::from_secs(1) {
            self.report.set_status(why);
            self.last_status = Instant::now();
        }
    }
}

/// The outcome of the startup metadata request, shared with the thread that makes it.
#[derive(Default)]
pub(super) struct Probe(Mutex<Option<Result<usize, String>>>);

impl Probe {
    fn get(&self) -> Option<Result<usize, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set(&self, r: Result<usize, String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}
