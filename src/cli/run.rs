//! `journald-kafka run`: the agent process around the pipeline (signals, metrics server,
//! the periodic summary line) and how it exits.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::checkpoint::FileStore;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::pipeline::{self, Shutdown};

/// Runs the agent. `reread` loads the config file again (SIGHUP).
pub(super) fn run(
    cfg: Config,
    reread: impl Fn() -> Result<Config> + Send + 'static,
) -> Result<ExitCode> {
    // Signals first: a SIGTERM that arrives while we open things must stop us cleanly, not
    // kill us. The handlers are registered here, synchronously, and served by a small tokio
    // runtime on its own thread; the pipeline itself is plain threads because sd-journal and
    // librdkafka calls block.
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
    let signals = {
        let (shutdown, notifier) = (shutdown.clone(), notifier.clone());
        let mut reload = Reload {
            current: cfg.clone(),
            reread: Box::new(reread),
        };
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                rt.block_on(handle_signals(
                    term,
                    int,
                    hup,
                    &shutdown,
                    &notifier,
                    &mut reload,
                ))
            })
            .context("cannot start the signal thread")?
    };

    let mut store = FileStore::new(&cfg.state.directory);
    store.prepare().map_err(|e| match unit_state_directory(&cfg) {
        Some(given) => e.context(format!(
            "the unit gives this agent the state directory {given} (StateDirectory=) but the config says {}: set [state] directory = \"{given}\"",
            cfg.state.directory.display()
        )),
        None => e,
    })?;
    if let Some(given) = unit_state_directory(&cfg) {
        tracing::warn!(
            unit = %given,
            config = %cfg.state.directory.display(),
            "the state directory differs from the one the unit gives (StateDirectory=); systemd will not manage or clean it"
        );
    }
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
    let summary = {
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
            .context("cannot start the summary thread")?
    };

    let forward = match &cfg.forward {
        Some(_) => {
            let server = crate::forward::start(
                &cfg,
                metrics.clone(),
                Duration::from_millis(cfg.pipeline.shutdown_timeout_ms),
            )?;
            tracing::info!(
                listening = server.listening.join(", "),
                "forward input: listening"
            );
            Some(server)
        }
        None => None,
    };
    let result = if cfg.journal.enabled {
        spawn_forecast(&cfg, metrics.clone(), shutdown.clone())?;
        pipeline::run(cfg, &mut store, &shutdown, &metrics, &notifier)
    } else {
        forward_only(forward.as_ref(), &shutdown, &notifier)
    };
    notifier.stopping();
    shutdown.request();
    // After the journal pipeline settled: both stop within their shutdown timeout.
    if let Some(f) = forward {
        f.stop();
    }
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

/// The agent with the Forward input alone (`journal.enabled = false`): READY once it
/// listens, watchdog pings while its thread lives.
fn forward_only(
    forward: Option<&crate::forward::Server>,
    shutdown: &Shutdown,
    notifier: &Notifier,
) -> Result<(), crate::error::Failure> {
    let Some(server) = forward else {
        return Ok(());
    };
    notifier.ready(&format!(
        "forward input listening on {}",
        server.listening.join(", ")
    ));
    let ping = notifier
        .watchdog()
        .map(|w| w / 2)
        .unwrap_or(Duration::from_secs(3600));
    let mut last = std::time::Instant::now();
    while !shutdown_wait(shutdown, Duration::from_millis(200).min(ping)) {
        if !server.is_running() {
            return Err(crate::error::Failure::fatal(anyhow::anyhow!(
                "the forward input stopped unexpectedly"
            )));
        }
        if last.elapsed() >= ping {
            notifier.watchdog_ping();
            last = std::time::Instant::now();
        }
    }
    Ok(())
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
    reload: &mut Reload,
) {
    let mut count = 0;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                if count == 0 {
                    reload.try_reload(shutdown, notifier);
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

/// SIGHUP: the config file read again and, when valid, handed to the pipeline.
struct Reload {
    /// The configuration the pipeline runs with (or will, once the reload is taken).
    current: Config,
    reread: Box<dyn Fn() -> Result<Config> + Send>,
}

impl Reload {
    /// An invalid config, or a change only a restart can apply, is refused with the reason
    /// and the running session goes on untouched.
    fn try_reload(&mut self, shutdown: &Shutdown, notifier: &Notifier) {
        let new = match (self.reread)() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "SIGHUP: reload refused, still running with the previous configuration: {e:#}"
                );
                return;
            }
        };
        if !self.current.journal.enabled {
            // Nothing runs that a reload could restart: the Forward input holds its
            // connections, producer and listeners for the life of the process.
            tracing::error!(
                "SIGHUP: reload refused, still running with the previous configuration: the Forward input (the only input, journal.enabled = false) applies its settings at start (use systemctl restart)"
            );
            return;
        }
        let fixed = needs_restart(&self.current, &new);
        if !fixed.is_empty() {
            tracing::error!(
                "SIGHUP: reload refused, still running with the previous configuration: {} cannot change while running (use systemctl restart)",
                fixed.join(", ")
            );
            return;
        }
        tracing::info!(
            "SIGHUP: configuration is valid; ending the session (what is in flight is confirmed first) and starting one with it"
        );
        notifier.reloading();
        self.current = new.clone();
        shutdown.reload(new);
    }
}

/// Settings the process applies once, at start: the HTTP endpoint's address, logging, where
/// the cursor lives and how (a reload resumes from the committed cursor of the same store).
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    use std::fmt::Debug;
    let fixed: [(&'static str, &dyn Debug, &dyn Debug); 7] = [
        ("forward", &old.forward, &new.forward),
        (
            "journal.enabled",
            &old.journal.enabled,
            &new.journal.enabled,
        ),
        (
            "state.directory",
            &old.state.directory,
            &new.state.directory,
        ),
        ("metrics.listen", &old.metrics.listen, &new.metrics.listen),
        ("log", &old.log, &new.log),
        ("delivery.mode", &old.delivery.mode, &new.delivery.mode),
        (
            "delivery.transactional_id",
            &old.delivery.transactional_id,
            &new.delivery.transactional_id,
        ),
    ];
    fixed
        .into_iter()
        .filter(|(_, a, b)| format!("{a:?}") != format!("{b:?}"))
        .map(|(name, _, _)| name)
        .collect()
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

/// How often the journal is sampled for the loss forecast: cheap (one open, two calls).
const FORECAST_EVERY: Duration = Duration::from_secs(5);

/// Samples the journal beside the pipeline (which cannot while it waits on the brokers) and
/// keeps the loss forecast in the metrics: its write rate, the room its writer allows, and
/// when the oldest unshipped entry would be deleted. Logs once when the forecast falls
/// below `metrics.min_loss_forecast_seconds` while entries wait.
fn spawn_forecast(cfg: &Config, metrics: Arc<Metrics>, shutdown: Arc<Shutdown>) -> Result<()> {
    use crate::journal::retention::{self, Limits, WriteRate};
    if Limits::of(&cfg.journal).is_none() {
        return Ok(());
    }
    let journal = cfg.journal.clone();
    std::thread::Builder::new()
        .name("forecast".into())
        .spawn(move || {
            let mut rate = WriteRate::default();
            let mut warned = false;
            loop {
                let now = crate::metrics::unix_now_usec();
                // Read every time (a few small files): an operator who changes journald's
                // limits sees the forecast follow without restarting the agent.
                let limits = Limits::of(&journal);
                if let (Ok(sample), Some(limits)) = (retention::sample(&journal, now), limits) {
                    let r = rate.add(sample);
                    let allowed = limits.allowed(sample.usage);
                    Metrics::set(&metrics.journal_usage_bytes, sample.usage);
                    Metrics::set(&metrics.journal_allowed_bytes, allowed.unwrap_or(0));
                    Metrics::set(&metrics.journal_write_rate, r.unwrap_or(0.0) as u64);
                    // The oldest unshipped entry follows the durable cursor; before the
                    // first one, everything in the journal is unshipped.
                    let shipped = match Metrics::get(&metrics.checkpoint_realtime_usec) {
                        0 => sample.oldest_usec,
                        c => c,
                    };
                    let f = retention::seconds_until_loss(&limits, allowed, &sample, shipped, r);
                    let secs = f.map_or(u64::MAX, |f| f as u64);
                    Metrics::set(&metrics.loss_forecast_secs, secs);
                    let waiting = Metrics::get(&metrics.in_flight_entries) > 0;
                    let margin = Metrics::get(&metrics.ready_min_forecast_secs);
                    if waiting && secs < margin && !warned {
                        tracing::warn!(
                            forecast_seconds = secs,
                            allowed_bytes = allowed.unwrap_or(0),
                            write_rate_bytes = r.unwrap_or(0.0) as u64,
                            "journald is forecast to delete entries not yet shipped in {secs}s at the current write rate"
                        );
                        warned = true;
                    } else if secs >= margin {
                        warned = false;
                    }
                }
                if shutdown_wait(&shutdown, FORECAST_EVERY) {
                    return;
                }
            }
        })
        .context("cannot start the forecast thread")?;
    Ok(())
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
