//! `journald-kafka run`: the agent process around its inputs (signals, metrics server,
//! the periodic summary line), the supervisor that drives every input through one
//! lifecycle (`lifecycle::Input`: ready, alive, reload, stop), and how it exits.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::checkpoint::FileStore;
use crate::config::Config;
use crate::error::Failure;
use crate::lifecycle::Input;
use crate::metrics::{InputState, Metrics};
use crate::notify::Notifier;
use crate::pipeline::{self, Shutdown};

/// Runs the agent. `reread` loads the config file again (SIGHUP).
pub(super) fn run(
    cfg: Config,
    reread: impl Fn() -> Result<Config> + Send + 'static,
) -> Result<ExitCode> {
    // Signals first: a SIGTERM that arrives while we open things must stop us cleanly, not
    // kill us. The handlers are registered here, synchronously, and served by a small tokio
    // runtime on its own thread; the inputs themselves are plain threads because sd-journal
    // and librdkafka calls block.
    let shutdown = Shutdown::new();
    let notifier = Arc::new(Notifier::from_env());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler runtime")?;
    let (term, int, hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _enter = rt.enter();
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        )
    };
    let (reloads, reloaded) = std::sync::mpsc::channel();
    let signals = {
        let (shutdown, notifier) = (shutdown.clone(), notifier.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                rt.block_on(handle_signals(
                    term, int, hup, &shutdown, &notifier, &reread, &reloads,
                ))
            })
            .context("cannot start the signal thread")?
    };

    let store = state_directory(&cfg)?;
    let metrics = Arc::new(Metrics::default());
    metrics.set_thresholds(
        cfg.metrics.stall_seconds,
        cfg.metrics.min_loss_forecast_seconds,
    );
    if let Some(listen) = &cfg.metrics.listen {
        crate::metrics::server::spawn(listen, metrics.clone())?;
        tracing::info!(
            "metrics and health on http://{listen}/metrics, /health/live, /health/ready"
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        source = %if cfg.journal.enabled { cfg.journal.source.to_string() } else { "none (the Forward input only)".to_string() },
        brokers = %cfg.kafka.brokers,
        "journald-kafka starting"
    );
    let summary = summarise(&metrics, &shutdown)?;

    // Every input joins the same lifecycle; the Forward input first, so that its
    // listeners are bound (or the start fails) before the journal opens.
    let mut inputs: Vec<Box<dyn Input>> = Vec::new();
    if cfg.forward.is_some() {
        let server = crate::forward::start(
            &cfg,
            metrics.clone(),
            Duration::from_millis(cfg.pipeline.shutdown_timeout_ms),
        )?;
        tracing::info!(
            listening = server.listening.join(", "),
            "forward input: listening"
        );
        inputs.push(Box::new(server));
    }
    if cfg.journal.enabled {
        inputs.push(Box::new(pipeline::Journal::start(
            cfg.clone(),
            Box::new(store),
            shutdown.clone(),
            metrics.clone(),
            notifier.watchdog(),
        )?));
    }
    let mut supervisor = Supervisor::new(inputs, cfg, &notifier, &metrics);
    let result = supervisor.run(&shutdown, &reloaded);
    notifier.stopping();
    shutdown.request();
    let result = stop_all(supervisor.inputs.drain(..), result);
    let _ = summary.join();
    drop(signals);
    match result {
        Ok(()) => {
            tracing::info!("{}; stopped cleanly", metrics.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            eprintln!("journald-kafka: error: {f}");
            tracing::error!("{f}");
            Ok(ExitCode::from(f.exit_code()))
        }
    }
}

/// The cursor file store, its directory made ready; an error names the directory the unit
/// gives when the configuration names another.
fn state_directory(cfg: &Config) -> Result<FileStore> {
    let store = FileStore::new(&cfg.state.directory, crate::journal::validate_place);
    store.prepare().map_err(|e| match unit_state_directory(cfg) {
        Some(given) => e.context(format!(
            "the unit gives this agent the state directory {given} (StateDirectory=) but the config says {}: set [state] directory = \"{given}\"",
            cfg.state.directory.display()
        )),
        None => e,
    })?;
    if let Some(given) = unit_state_directory(cfg) {
        tracing::warn!(
            unit = %given,
            config = %cfg.state.directory.display(),
            "the state directory differs from the one the unit gives (StateDirectory=); systemd will not manage or clean it"
        );
    }
    Ok(store)
}

/// A one-line summary in the log every minute while it changes, until the shutdown.
fn summarise(
    metrics: &Arc<Metrics>,
    shutdown: &Arc<Shutdown>,
) -> Result<std::thread::JoinHandle<()>> {
    let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
    std::thread::Builder::new()
        .name("summary".into())
        .spawn(move || {
            let mut last = String::new();
            while !shutdown_wait(&shutdown, Duration::from_secs(60)) {
                let s = metrics.summary();
                if s != last {
                    tracing::info!("{s}");
                    last = s;
                }
            }
        })
        .context("cannot start the summary thread")
}

/// Stops every input, each within its shutdown timeout (stop taking input, confirm what is
/// in flight, save the place). The run's own failure comes first; then the first input's.
fn stop_all(
    inputs: impl Iterator<Item = Box<dyn Input>>,
    mut result: Result<(), Failure>,
) -> Result<(), Failure> {
    for input in inputs {
        let name = input.name();
        if let Err(f) = input.stop() {
            tracing::debug!(input = name, "stopped with: {f}");
            if result.is_ok() {
                result = Err(f);
            }
        }
    }
    result
}

/// The main thread while the inputs run: what the service manager and `/health/ready` hear
/// of all of them, reloads handed to each, and an input that ends on its own.
struct Supervisor<'a> {
    inputs: Vec<Box<dyn Input>>,
    /// The configuration the inputs run with.
    current: Config,
    notifier: &'a Notifier,
    metrics: &'a Metrics,
    /// READY=1 was sent for the current configuration.
    ready: bool,
    /// The watchdog ping is being withheld (said once), and a ping was ever sent.
    quiet: bool,
    pinged: bool,
    last_ping: Instant,
    last_status: Instant,
}

/// How often the supervisor looks at the inputs.
const TICK: Duration = Duration::from_millis(200);

impl<'a> Supervisor<'a> {
    fn new(
        inputs: Vec<Box<dyn Input>>,
        current: Config,
        notifier: &'a Notifier,
        metrics: &'a Metrics,
    ) -> Supervisor<'a> {
        Supervisor {
            inputs,
            current,
            notifier,
            metrics,
            ready: false,
            quiet: false,
            pinged: false,
            last_ping: Instant::now(),
            last_status: Instant::now(),
        }
    }

    /// Until a stop is requested (`Ok`) or an input ends on its own (its failure).
    fn run(
        &mut self,
        shutdown: &Shutdown,
        reloads: &std::sync::mpsc::Receiver<Config>,
    ) -> Result<(), Failure> {
        loop {
            if shutdown.requested() {
                return Ok(());
            }
            for input in &mut self.inputs {
                if let Some(f) = input.ended() {
                    if shutdown.requested() {
                        return Ok(());
                    }
                    tracing::error!(input = input.name(), "an input ended: {f}");
                    return Err(f);
                }
            }
            // A burst of SIGHUPs is one reload, of the newest file.
            if let Some(new) = reloads.try_iter().last() {
                self.reload(new);
            }
            self.tick();
            std::thread::sleep(TICK);
        }
    }

    fn tick(&mut self) {
        self.metrics.set_inputs(
            self.inputs
                .iter()
                .map(|i| InputState {
                    name: i.name(),
                    status: i.status(),
                    unhealthy: i.unhealthy(),
                })
                .collect(),
        );
        if !self.ready {
            let started: Option<Vec<String>> = self.inputs.iter().map(|i| i.started()).collect();
            if let Some(started) = started {
                let st = started.join("; ");
                if self.inputs.len() > 1 {
                    tracing::info!("ready: {st}");
                }
                self.notifier.ready(&st);
                self.ready = true;
            }
        }
        if let Some(w) = self.notifier.watchdog() {
            if self.last_ping.elapsed() >= w / 3 {
                // Fresh within a third of the interval (and a tick): an input that stops
                // costs at most one more ping, so systemd acts within about the interval.
                let quiet: Vec<&str> = self
                    .inputs
                    .iter()
                    .filter(|i| !i.alive(w / 3 + TICK))
                    .map(|i| i.name())
                    .collect();
                if quiet.is_empty() {
                    self.notifier.watchdog_ping();
                    self.last_ping = Instant::now();
                    self.quiet = false;
                    self.pinged = true;
                } else if !self.quiet && self.pinged {
                    // Once per silence, not every tick; before the first ping an input may
                    // not have shown a sign of life yet.
                    tracing::error!(
                        inputs = quiet.join(", "),
                        "no sign of life; withholding the watchdog ping"
                    );
                    self.quiet = true;
                }
            }
        }
        if self.last_status.elapsed() >= Duration::from_secs(5) {
            let st: Vec<String> = self.inputs.iter().map(|i| i.status()).collect();
            self.notifier.status(&st.join("; "));
            self.last_status = Instant::now();
        }
    }

    /// An invalid config was refused by the signal thread; here a change only a restart
    /// can apply is refused with the reason, and the inputs go on untouched. Otherwise
    /// every input takes it.
    fn reload(&mut self, new: Config) {
        // Applied even when the parsed configuration is unchanged: files it names (a
        // renewed client certificate, a keytab) are read again only by a new producer.
        // Process-wide settings first: an input is only asked about a configuration it
        // can run with (one without `[forward]` is not the Forward input's to read).
        let mut fixed = crate::lifecycle::restart_needed(&self.current, &new);
        if fixed.is_empty() {
            for input in &self.inputs {
                fixed.extend(input.restart_needed(&self.current, &new));
            }
        }
        if !fixed.is_empty() {
            tracing::error!(
                "SIGHUP: reload refused, still running with the previous configuration: {} cannot change while running (use systemctl restart)",
                fixed.join(", ")
            );
            return;
        }
        self.notifier.reloading();
        self.ready = false;
        // The inputs whose reload can fail come first (the Forward input makes a producer;
        // the journal's cannot fail): a failure stops the reload before the others change.
        let mut applied = Vec::new();
        for input in &mut self.inputs {
            if let Err(e) = input.reload(&new) {
                tracing::error!(
                    input = input.name(),
                    applied = applied.join(", "),
                    "SIGHUP: reload stopped: {e:#}; the inputs not listed as applied keep the previous configuration"
                );
                return;
            }
            applied.push(input.name());
        }
        self.metrics.set_thresholds(
            new.metrics.stall_seconds,
            new.metrics.min_loss_forecast_seconds,
        );
        tracing::info!(
            inputs = applied.join(", "),
            "SIGHUP: configuration reloaded (the journal session confirms what is in flight and starts again with it)"
        );
        self.current = new;
    }
}

fn shutdown_wait(s: &Shutdown, d: Duration) -> bool {
    let step = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    while waited < d {
        if s.requested() {
            return true;
        }
        std::thread::sleep(step);
        waited += step;
    }
    s.requested()
}

async fn handle_signals(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
    mut hup: tokio::signal::unix::Signal,
    shutdown: &Shutdown,
    notifier: &Notifier,
    reread: &(impl Fn() -> Result<Config> + Send),
    reloads: &std::sync::mpsc::Sender<Config>,
) {
    let mut count = 0;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                if count == 0 {
                    // Read and validated here; what may change is the supervisor's call.
                    match reread() {
                        Ok(c) => { let _ = reloads.send(c); }
                        Err(e) => tracing::error!(
                            "SIGHUP: reload refused, still running with the previous configuration: {e:#}"
                        ),
                    }
                }
                continue;
            }
        };
        count += 1;
        if count == 1 {
            tracing::info!("{name}: stopping; waiting for the broker to confirm what is in flight");
            notifier.stopping();
            shutdown.request();
        } else {
            // The cursor file only ever holds confirmed positions, so leaving now loses
            // nothing: what was in flight is sent again on the next start.
            tracing::warn!("{name} again: exiting at once");
            std::process::exit(130);
        }
    }
}

/// The state directory systemd made for this unit (`StateDirectory=`, given in
/// `$STATE_DIRECTORY`) when the config names another: an instance of the templated unit
/// whose config was copied from another instance, typically. `None` outside systemd.
fn unit_state_directory(cfg: &Config) -> Option<String> {
    let given = std::env::var("STATE_DIRECTORY").ok()?;
    let ours = cfg.state.directory.as_path();
    (!given.split(':').any(|d| std::path::Path::new(d) == ours))
        .then(|| given.split(':').next().unwrap_or_default().to_string())
}

/// Raises the soft limit on open files to the hard one, as systemd recommends for programs
/// that do not use `select()`: a central journal-remote directory holds a file per host
/// and more, and the soft default (1,024) is far below what the hard limit allows (issue
/// 31). Returns (old, new) soft limits when it changed. Under the packaged unit both are
/// `LimitNOFILE=`, and its syscall filter refuses `setrlimit`: nothing to do there.
pub(super) fn raise_open_files_limit() -> Option<(u64, u64)> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (l.current, l.maximum) else {
        return None;
    };
    let target = hard.unwrap_or(u64::MAX).min(1 << 20);
    if soft >= target {
        return None;
    }
    l.current = Some(target);
    setrlimit(Resource::Nofile, l).ok()?;
    Some((soft, target))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// An input whose answers the test sets.
    #[derive(Default)]
    struct Fake {
        dead: AtomicBool,
        quiet: AtomicBool,
        unhealthy: Mutex<Option<String>>,
    }

    struct FakeInput(&'static str, Arc<Fake>);

    impl Input for FakeInput {
        fn name(&self) -> &'static str {
            self.0
        }
        fn started(&self) -> Option<String> {
            Some(format!("{} serving", self.0))
        }
        fn unhealthy(&self) -> Option<String> {
            self.1.unhealthy.lock().unwrap().clone()
        }
        fn alive(&self, _within: Duration) -> bool {
            !self.1.quiet.load(Ordering::Relaxed)
        }
        fn status(&self) -> String {
            format!("{}: fine", self.0)
        }
        fn ended(&mut self) -> Option<Failure> {
            self.1
                .dead
                .load(Ordering::Relaxed)
                .then(|| Failure::fatal(anyhow::anyhow!("the {} input stopped", self.0)))
        }
        fn restart_needed(&self, _old: &Config, _new: &Config) -> Vec<&'static str> {
            Vec::new()
        }
        fn reload(&mut self, _new: &Config) -> Result<()> {
            Ok(())
        }
        fn stop(self: Box<Self>) -> Result<(), Failure> {
            Ok(())
        }
    }

    fn received(sock: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    /// Issue 28, item 2: with both inputs on, readiness, the watchdog and the process
    /// looked at the journal pipeline only; a dead Forward input went unnoticed. Every
    /// input now counts for each of them.
    #[test]
    fn every_input_counts_for_readiness_the_watchdog_and_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd.set_nonblocking(true).unwrap();
        let notifier = Notifier::to(&path, Some(Duration::from_millis(300)));
        let metrics = Metrics::default();
        metrics.broker_state(true);
        let (journal, forward) = (Arc::new(Fake::default()), Arc::new(Fake::default()));
        let cfg = crate::config::for_tests("");
        let inputs: Vec<Box<dyn Input>> = vec![
            Box::new(FakeInput("journal", journal.clone())),
            Box::new(FakeInput("forward", forward.clone())),
        ];
        let mut s = Supervisor::new(inputs, cfg, &notifier, &metrics);
        s.last_ping = Instant::now() - Duration::from_secs(1);
        s.tick();
        let sent = received(&systemd);
        assert!(
            sent.iter()
                .any(|m| m.starts_with("READY=1") && m.contains("journal serving; forward serving")),
            "{sent:?}"
        );
        assert!(sent.iter().any(|m| m == "WATCHDOG=1"), "{sent:?}");
        assert_eq!(crate::metrics::server::not_ready(&metrics), None);

        // The Forward input falls silent: no ping, whatever the journal says.
        forward.quiet.store(true, Ordering::Relaxed);
        *forward.unhealthy.lock().unwrap() = Some("the forward input's thread ended".into());
        s.last_ping = Instant::now() - Duration::from_secs(1);
        s.tick();
        let sent = received(&systemd);
        assert!(!sent.iter().any(|m| m == "WATCHDOG=1"), "{sent:?}");
        let why = crate::metrics::server::not_ready(&metrics).unwrap_or_default();
        assert!(
            why.contains("forward: the forward input's thread ended"),
            "{why}"
        );

        // It ends: the supervisor returns its failure (the process exits with it).
        forward.dead.store(true, Ordering::Relaxed);
        let shutdown = Shutdown::new();
        let (_tx, rx) = std::sync::mpsc::channel();
        let end = s.run(&shutdown, &rx);
        assert!(
            end.as_ref()
                .is_err_and(|f| f.to_string().contains("the forward input stopped")),
            "{:?}",
            end.err().map(|f| f.to_string())
        );
    }
}
