//! The HTTP endpoint: `/metrics`, `/health/live`, `/health/ready`, `/status` (tiny_http,
//! one thread).
//!
//! Readiness: the journal is open, a broker answers, the durable cursor is not stalled (it
//! has not failed to move for `metrics.stall_seconds` while entries are in flight), and,
//! while entries are in flight, journald is not forecast to delete unshipped ones within
//! `metrics.min_loss_forecast_seconds`. Liveness: the process answers.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Result, anyhow};

use super::{Metrics, unix_now};

/// Why the agent is not ready (every reason, most fundamental first), or `None` when it is.
pub fn not_ready(m: &Metrics) -> Option<String> {
    let stall_seconds = Metrics::get(&m.ready_stall_secs);
    let min_forecast = Metrics::get(&m.ready_min_forecast_secs);
    if !m.journal_open.load(Relaxed) {
        return Some("journal not open".into());
    }
    let mut why = Vec::new();
    if !m.broker_up.load(Relaxed) {
        why.push("no broker connection".to_string());
    }
    let pending = Metrics::get(&m.in_flight_entries);
    let since = unix_now().saturating_sub(Metrics::get(&m.last_progress));
    if pending > 0 && Metrics::get(&m.last_progress) > 0 && since >= stall_seconds {
        why.push(format!(
            "cursor stalled for {since}s with {pending} entries in flight"
        ));
    }
    let forecast = Metrics::get(&m.loss_forecast_secs);
    if pending > 0 && forecast < min_forecast {
        why.push(format!(
            "journald is forecast to delete entries not yet shipped in {forecast}s (metrics.min_loss_forecast_seconds = {min_forecast})"
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Serves until the process ends.
pub fn spawn(listen: &str, metrics: Arc<Metrics>) -> Result<()> {
    let server = tiny_http::Server::http(listen)
        .map_err(|e| anyhow!("cannot listen on {listen} for metrics: {e}"))?;
    let registry = metrics.registry();
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            loop {
                let req = match server.recv_timeout(Duration::from_secs(1)) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint: cannot accept");
                        continue;
                    }
                };
                let (code, body, ctype) = match req.url() {
                    "/metrics" => {
                        let mut text = String::new();
                        match prometheus_client::encoding::text::encode(&mut text, &registry) {
                            Ok(()) => (
                                200,
                                text,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                            Err(_) => (500, "encoding failed\n".to_string(), "text/plain"),
                        }
                    }
                    "/health/live" => (200, "ok\n".to_string(), "text/plain"),
                    "/status" => (200, metrics.status_json(), "application/json"),
                    "/health/ready" => match not_ready(&metrics) {
                        None => (200, "ready\n".to_string(), "text/plain"),
                        Some(why) => (503, format!("not ready: {why}\n"), "text/plain"),
                    },
                    _ => (
                        404,
                        "not found: try /metrics, /health/live, /health/ready, /status\n"
                            .to_string(),
                        "text/plain",
                    ),
                };
                let header =
                    tiny_http::Header::from_bytes("Content-Type", ctype).expect("static header");
                let _ = req.respond(
                    tiny_http::Response::from_string(body)
                        .with_status_code(code)
                        .with_header(header),
                );
            }
        })?;
    Ok(())
}
