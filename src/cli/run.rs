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

pub(super) fn run(cfg: Config) -> Result<ExitCode> {
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
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _enter = rt.enter();
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        )
    };
    let (sig, sig_notifier) = (shutdown.clone(), notifier.clone());
    let signals = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || rt.block_on(handle_signals(term, int, sig, sig_notifier)))
        .context("cannot start the signal thread")?;

    let mut store = FileStore::new(&cfg.state.directory);
    store.prepare()?;
    let metrics = Arc::new(Metrics::default());
    if let Some(listen) = &cfg.metrics.listen {
        crate::metrics::server::spawn(listen, metrics.clone(), cfg.metrics.stall_seconds)?;
        tracing::info!(
            "metrics and health on http://{listen}/metrics, /health/live, /health/ready"
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        source = %cfg.journal.source,
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

    let result = pipeline::run(&cfg, &mut store, &shutdown, &metrics, &notifier);
    notifier.stopping();
    shutdown.request();
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
    shutdown: Arc<Shutdown>,
    notifier: Arc<Notifier>,
) {
    let mut count = 0;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
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
