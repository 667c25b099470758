//! `journald-kafka status`: the running agent at a glance, from its cursor file and its
//! HTTP endpoint.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::say;
use crate::checkpoint::read_cursor_file;
use crate::config::Config;
use crate::journal::cursor;

/// Fetches `path` from the agent's HTTP endpoint: (status code, body).
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().context("metrics.listen")?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .with_context(|| format!("the agent's endpoint {addr} does not answer (is it running?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of a metric line `name value` (labels summed) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ')?;
        let base = key.split('{').next().unwrap_or(key);
        if base == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

pub(super) fn status(cfg: &Config, json: bool) -> Result<ExitCode> {
    let path = cfg.state.cursor_file();
    let mut healthy = true;
    let mut problems: Vec<String> = Vec::new();
    let cursor = match read_cursor_file(&path) {
        Ok(c) => c,
        Err(e) => {
            healthy = false;
            problems.push(format!("{e:#}"));
            None
        }
    };
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok())
        .map(|d| d.as_secs());
    let now_usec = crate::metrics::unix_now_usec();
    let lag = cursor
        .as_deref()
        .and_then(|c| crate::checkpoint::place::newest(c))
        .and_then(|c| cursor::parse(c).ok())
        .map(|i| now_usec.saturating_sub(i.realtime_usec) / 1_000_000);
    let mut live: Vec<(&str, f64)> = Vec::new();
    let mut ready = None;
    if let Some(addr) = &cfg.metrics.listen {
        match http_get(addr, "/health/ready") {
            Ok((code, body)) => {
                ready = Some(code == 200);
                if code != 200 {
                    healthy = false;
                    problems.push(body.trim().to_string());
                }
            }
            Err(e) => {
                healthy = false;
                problems.push(format!("{e:#}"));
            }
        }
        if let Ok((200, text)) = http_get(addr, "/metrics") {
            for name in [
                "journald_kafka_entries_delivered_total",
                "journald_kafka_entries_failed_total",
                "journald_kafka_in_flight_entries",
                "journald_kafka_watermark_lag_seconds",
                "journald_kafka_broker_up",
                "journald_kafka_pipeline_restarts_total",
            ] {
                if let Some(v) = metric(&text, name) {
                    live.push((name, v));
                }
            }
        }
    }
    if json {
        let mut o = serde_json::Map::new();
        o.insert("healthy".into(), healthy.into());
        o.insert("cursor_file".into(), path.display().to_string().into());
        o.insert(
            "cursor".into(),
            cursor.clone().map_or(serde_json::Value::Null, Into::into),
        );
        o.insert(
            "cursor_age_seconds".into(),
            age.map_or(serde_json::Value::Null, Into::into),
        );
        o.insert(
            "lag_seconds".into(),
            lag.map_or(serde_json::Value::Null, Into::into),
        );
        o.insert(
            "ready".into(),
            ready.map_or(serde_json::Value::Null, Into::into),
        );
        for (k, v) in &live {
            o.insert(k.trim_start_matches("journald_kafka_").into(), (*v).into());
        }
        o.insert("problems".into(), problems.clone().into());
        say!("{}", serde_json::Value::Object(o));
    } else {
        say!(
            "{}  {}",
            if healthy { "HEALTHY" } else { "UNHEALTHY" },
            path.display()
        );
        match cursor.as_deref() {
            None => say!("cursor:     (none yet)"),
            Some(c) => {
                for (i, p) in crate::checkpoint::place::positions(c).enumerate() {
                    say!(
                        "{}{p}",
                        if i == 0 {
                            "cursor:     "
                        } else {
                            "            "
                        }
                    );
                }
            }
        }
        if let Some(a) = age {
            say!("written:    {a}s ago");
        }
        if let Some(l) = lag {
            say!("lag:        {l}s behind now (time of the entry the cursor names)");
        }
        match ready {
            Some(r) => say!("ready:      {r}"),
            None => say!("live:       set [metrics] listen for live figures and readiness"),
        }
        for (k, v) in &live {
            say!(
                "{:<11} {v}",
                format!("{}:", k.trim_start_matches("journald_kafka_"))
            );
        }
        for p in &problems {
            say!("problem:    {p}");
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
