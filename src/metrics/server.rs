//! The HTTP endpoint: `/metrics`, `/health/live`, `/health/ready` (tiny_http, one thread).
//!
//! Readiness: the journal is open, a broker connection is up, and the durable cursor is not
//! stalled — it has not failed to move for `metrics.stall_seconds` while entries are in
//! flight. Liveness: the process answers.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Result, anyhow};

use super::{Metrics, unix_now};

/// Why the agent is not ready, or `None` when it is.
pub fn not_ready(m: &Metrics, stall_seconds: u64) -> Option<String> {
    if !m.journal_open.load(Relaxed) {
        return Some("journal not open".into());
    }
    if !m.broker_up.load(Relaxed) {
        return Some("no broker connection".into());
    }
    let pending = Metrics::get(&m.in_flight_entries);
    let since = unix_now().saturating_sub(Metrics::get(&m.last_progress));
    if pending > 0 && Metrics::get(&m.last_progress) > 0 && since >= stall_seconds {
        return Some(format!(
            "cursor stalled for {since}s with {pending} entries in flight"
        ));
    }
    None
}

/// Serves until the process ends.
pub fn spawn(listen: &str, metrics: Arc<Metrics>, stall_seconds: u64) -> Result<()> {
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
                    "/health/ready" => match not_ready(&metrics, stall_seconds) {
                        None => (200, "ready\n".to_string(), "text/plain"),
                        Some(why) => (503, format!("not ready: {why}\n"), "text/plain"),
                    },
                    _ => (
                        404,
                        "not found: try /metrics, /health/live, /health/ready\n".to_string(),
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
