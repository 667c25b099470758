//! The loss forecast: the journal sampled beside the session (which cannot while it waits
//! on the brokers), for how long journald will keep what is not yet shipped.
//!
//! Runs on its own `forecast` thread for the life of the journal input. It must never
//! read the journal through the session's handle or decide anything about delivery: it
//! only keeps gauges and says once when the forecast falls below the threshold.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Shutdown;
use crate::config::Config;
use crate::metrics::Metrics;

/// How often the journal is sampled for the loss forecast: cheap (one open, two calls).
const FORECAST_EVERY: Duration = Duration::from_secs(5);

/// Samples the journal beside the pipeline (which cannot while it waits on the brokers) and
/// keeps the loss forecast in the metrics: its write rate, the room its writer allows, and
/// when the oldest unshipped entry would be deleted. Logs once when the forecast falls
/// below `metrics.min_loss_forecast_seconds` while entries wait.
pub(super) fn spawn(cfg: &Config, metrics: Arc<Metrics>, shutdown: Arc<Shutdown>) -> Result<()> {
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
                // Not `Shutdown::sleep`: it also wakes for a pending reload, which this
                // thread does not take (it would spin until the session took it).
                let until = std::time::Instant::now() + FORECAST_EVERY;
                while std::time::Instant::now() < until {
                    if shutdown.requested() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
        .context("cannot start the forecast thread")?;
    Ok(())
}
