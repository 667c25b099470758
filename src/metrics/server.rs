//! The HTTP endpoint: `/metrics`, `/health/live`, `/health/ready`, `/status`.
//!
//! A small HTTP/1.x server of its own, because the endpoint is reachable by every local
//! user (and more, if an operator widens `metrics.listen`) and must survive them: the accept
//! loop never ends (running out of descriptors in a connection flood makes it wait, not
//! die), [`WORKERS`] threads serve at most [`QUEUE`] waiting connections and the newest
//! beyond that get a 503 at once, a request head is read within [`REQUEST_DEADLINE`] of
//! the accept and [`HEADER_LIMIT`] bytes (an idle or trickling client is dropped, an
//! endless header gets 431), the answer is written within [`WRITE_DEADLINE`], and every
//! connection is closed after one answer. It holds at most `WORKERS + QUEUE` connections
//! and `WORKERS * HEADER_LIMIT` bytes of requests. Known limit: a sustained flood of idle
//! connections (about 30 new ones a second) keeps the queue full, and probes then get the
//! quick 503 "overloaded" until it stops; reading request heads on one `poll` loop would
//! remove that, and is not built yet.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use prometheus_client::registry::Registry;

/// Threads answering requests. Answers take microseconds; the number only bounds how many
/// slow clients can hold a thread at once.
const WORKERS: usize = 8;
/// Accepted connections waiting for a thread; beyond this the newest gets a 503.
const QUEUE: usize = 64;
/// The longest request head read (request line and headers).
const HEADER_LIMIT: usize = 8 << 10;
/// Time for a client to send its whole request head, from the moment it was accepted.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Time for a client to take the whole answer (a reader that takes a byte at a time
/// cannot hold a thread for longer).
const WRITE_DEADLINE: Duration = Duration::from_secs(5);

use super::{Metrics, unix_now};

/// Why the agent is not ready (every reason, most fundamental first), or `None` when it is.
pub(crate) fn not_ready(m: &Metrics) -> Option<String> {
    let stall_seconds = Metrics::get(&m.ready_stall_secs);
    let min_forecast = Metrics::get(&m.ready_min_forecast_secs);
    if let Some(why) = m.inputs_unhealthy() {
        return Some(why);
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
    if let Some(f) = m
        .cursor_save_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        why.push(format!(
            "cursor not saved for {}s ({}); entries are shipped, but a restart would send them again",
            unix_now().saturating_sub(f.since),
            f.error
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
pub(crate) fn spawn(listen: &str, metrics: Arc<Metrics>) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| anyhow!("cannot listen on {listen} for metrics: {e}"))?;
    let registry = Arc::new(Mutex::new(metrics.registry()));
    let (tx, rx) = std::sync::mpsc::sync_channel::<(TcpStream, Instant)>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..WORKERS {
        let (rx, metrics, registry) = (rx.clone(), metrics.clone(), registry.clone());
        std::thread::Builder::new()
            .name(format!("metrics-http-{i}"))
            .spawn(move || work(&rx, &metrics, &registry))
            .context("cannot start the metrics endpoint")?;
    }
    std::thread::Builder::new()
        .name("metrics-accept".into())
        .spawn(move || accept(&listener, &tx))
        .context("cannot start the metrics endpoint")?;
    Ok(())
}

/// The accept loop. It never returns while the workers live: an error from `accept` (out
/// of descriptors or memory in a flood, a connection reset before it was taken) is waited
/// out and logged at most once a minute.
fn accept(listener: &TcpListener, tx: &SyncSender<(TcpStream, Instant)>) {
    let repeats = crate::logging::RateLimit::default();
    loop {
        match listener.accept() {
            Ok((stream, _)) => match tx.try_send((stream, Instant::now())) {
                Ok(()) => {}
                Err(TrySendError::Full((stream, _))) => overloaded(stream),
                Err(TrySendError::Disconnected(_)) => return,
            },
            Err(e) => {
                if let Some(n) = repeats.admit("accept") {
                    tracing::warn!(error = %e, repeats_in_last_minute = n, "metrics endpoint: cannot accept a connection; waiting for others to close");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The newest connection when every thread and queue place is taken: a 503 if the client's
/// buffer takes it at once, never a wait.
fn overloaded(stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nRetry-After: 1\r\nConnection: close\r\n\r\noverloaded\n",
    );
}

fn work(rx: &Mutex<Receiver<(TcpStream, Instant)>>, metrics: &Metrics, registry: &Mutex<Registry>) {
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((stream, accepted)) = next else {
            return;
        };
        serve(stream, accepted, metrics, registry);
    }
}

/// Reads one request head within the limits, answers it, closes. The deadline runs from
/// the accept, so connections that sat idle in the queue past it are dropped without a
/// wait: a crowd of idle clients delays a probe by one deadline at most.
fn serve(mut stream: TcpStream, accepted: Instant, metrics: &Metrics, registry: &Mutex<Registry>) {
    let deadline = accepted + REQUEST_DEADLINE;
    let mut buf = [0u8; HEADER_LIMIT];
    let mut n = 0;
    // Past the deadline one more read is tried: a request that waited in the queue while
    // idle clients held the threads is complete in the socket and gets its answer.
    let mut last_try = false;
    let end = loop {
        if let Some(end) = head_end(&buf[..n]) {
            break end;
        }
        if n == buf.len() {
            respond(
                &mut stream,
                431,
                "request header too large\n",
                "text/plain",
                false,
            );
            return;
        }
        let mut wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            if last_try {
                return;
            }
            last_try = true;
            wait = Duration::from_millis(1);
        }
        if stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut buf[n..]) {
            Ok(0) => return,
            Ok(k) => n += k,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    };
    let line = buf[..end].split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.trim_ascii().split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    let head_only = method == Some(b"HEAD".as_slice());
    if !matches!(method, Some(b"GET" | b"HEAD")) {
        respond(&mut stream, 405, "only GET and HEAD\n", "text/plain", false);
        return;
    }
    let path = target
        .map(|t| t.split(|&b| b == b'?').next().unwrap_or_default())
        .unwrap_or_default();
    let (code, body, ctype) = route(path, metrics, registry);
    respond(&mut stream, code, &body, ctype, head_only);
}

/// Where the request head ends (the blank line), if it has arrived.
fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| b.windows(2).position(|w| w == b"\n\n"))
}

fn route(
    path: &[u8],
    metrics: &Metrics,
    registry: &Mutex<Registry>,
) -> (u16, String, &'static str) {
    match path {
        b"/metrics" => {
            let mut text = String::new();
            let registry = registry.lock().unwrap_or_else(|p| p.into_inner());
            match prometheus_client::encoding::text::encode(&mut text, &registry) {
                Ok(()) => (
                    200,
                    text,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(_) => (500, "encoding failed\n".to_string(), "text/plain"),
            }
        }
        b"/health/live" => (200, "ok\n".to_string(), "text/plain"),
        b"/status" => (200, metrics.status_json(), "application/json"),
        b"/health/ready" => match not_ready(metrics) {
            None => (200, "ready\n".to_string(), "text/plain"),
            Some(why) => (503, format!("not ready: {why}\n"), "text/plain"),
        },
        _ => (
            404,
            "not found: try /metrics, /health/live, /health/ready, /status\n".to_string(),
            "text/plain",
        ),
    }
}

fn respond(stream: &mut TcpStream, code: u16, body: &str, ctype: &str, head_only: bool) {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let deadline = Instant::now() + WRITE_DEADLINE;
    if write_until(stream, head.as_bytes(), deadline) && !head_only {
        write_until(stream, body.as_bytes(), deadline);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Writes `bytes` unless the deadline passes first.
fn write_until(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> bool {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.write(bytes) {
            Ok(0) => return false,
            Ok(k) => bytes = &bytes[k..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
