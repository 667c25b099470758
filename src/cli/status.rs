//! `journald-kafka status`: the running agent at a glance, from its cursor file and its
//! HTTP endpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::say;
use crate::checkpoint::read_cursor_file;
use crate::config::Config;
use crate::journal::{Behind, cursor};

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

/// A duration for people: "3h 02m", "45s".
fn human_secs(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m {:02}s", s / 60, s % 60),
        7200..=172_799 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / 1048576.0)
}

/// `systemctl status`-like: one screen, the state first, the details after.
pub(super) fn status(cfg: &Config, json: bool) -> Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let saved = Saved::read(cfg, &mut problems);
    let agent = match &cfg.metrics.listen {
        Some(addr) => Agent::ask(addr, &mut problems),
        None => Agent::default(),
    };
    // Every problem makes the agent unhealthy, and nothing else does.
    let healthy = problems.is_empty();
    let state = state_of(cfg, &agent, saved.lag_entries);
    if json {
        print_json(&saved, &agent, healthy, &state, &problems);
    } else {
        print_text(&saved, &agent, healthy, &state, &problems);
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The saved place and how far the journal is ahead of it: read from the state directory
/// and the journal, so known whether the agent runs or not.
struct Saved {
    path: PathBuf,
    cursor: Option<String>,
    /// Seconds since the cursor file was written.
    age: Option<u64>,
    behind: Option<Behind>,
    lag_entries: Option<u64>,
    /// Seconds between now and the oldest entry that may be unshipped.
    lag: Option<u64>,
}

impl Saved {
    fn read(cfg: &Config, problems: &mut Vec<String>) -> Saved {
        let path = cfg.state.cursor_file();
        let cursor = match read_cursor_file(&path, crate::journal::validate_place) {
            Ok(c) => c,
            Err(e) => {
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
        // Entries written after the cursor, over every writer (those the cursor does not know
        // yet too): read from the journal, not from the agent.
        let behind = cursor
            .as_deref()
            .and_then(|c| crate::journal::behind(&cfg.journal, c).ok());
        let lag_entries = behind.map(|b| b.entries);
        // How old the oldest unshipped entry may be: the furthest-behind writer's saved entry.
        // Caught up: the age of the newest saved entry, as before there were writers.
        let lag = match behind.and_then(|b| b.oldest_usec) {
            Some(t) => Some(t),
            None => cursor
                .as_deref()
                .and_then(|c| crate::checkpoint::place::newest(c))
                .and_then(|c| cursor::parse(c).ok())
                .map(|i| i.realtime_usec),
        }
        .map(|t| now_usec.saturating_sub(t) / 1_000_000);
        Saved {
            path,
            cursor,
            age,
            behind,
            lag_entries,
            lag,
        }
    }
}

/// What the running agent says about itself over its HTTP endpoint; all empty when it
/// does not answer or has no endpoint.
#[derive(Default)]
struct Agent {
    running: bool,
    ready: Option<bool>,
    not_ready: Option<String>,
    /// The metrics `status` shows, by full name, in the order asked.
    live: Vec<(&'static str, f64)>,
    last_error: Option<(u64, String)>,
    top_units: serde_json::Value,
    suppressed: serde_json::Value,
    inputs: serde_json::Value,
}

impl Agent {
    fn ask(addr: &str, problems: &mut Vec<String>) -> Agent {
        let mut agent = Agent::default();
        match http_get(addr, "/health/ready") {
            Ok((code, body)) => {
                agent.running = true;
                agent.ready = Some(code == 200);
                if code != 200 {
                    let why = body.trim().trim_start_matches("not ready: ").to_string();
                    problems.push(format!("not ready: {why}"));
                    agent.not_ready = Some(why);
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        if let Ok((200, text)) = http_get(addr, "/metrics") {
            for name in [
                "journald_kafka_entries_delivered_total",
                "journald_kafka_entries_failed_total",
                "journald_kafka_in_flight_entries",
                "journald_kafka_in_flight_bytes",
                "journald_kafka_watermark_lag_seconds",
                "journald_kafka_broker_up",
                "journald_kafka_pipeline_restarts_total",
                "journald_kafka_journal_disk_usage_bytes",
                "journald_kafka_journal_allowed_bytes",
                "journald_kafka_journal_write_rate_bytes",
                "journald_kafka_loss_forecast_seconds",
            ] {
                if let Some(v) = metric(&text, name) {
                    agent.live.push((name, v));
                }
            }
        }
        if let Ok((200, body)) = http_get(addr, "/status") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                if let (Some(at), Some(m)) = (
                    v["last_error"]["at"].as_u64(),
                    v["last_error"]["message"].as_str(),
                ) {
                    agent.last_error = Some((at, m.to_string()));
                }
                agent.top_units = v["top_units"].clone();
                agent.suppressed = v["suppressed"].clone();
                agent.inputs = v["inputs"].clone();
            }
        }
        agent
    }

    /// A metric by its name without the `journald_kafka_` prefix.
    fn get(&self, name: &str) -> Option<f64> {
        self.live
            .iter()
            .find(|(k, _)| k.trim_start_matches("journald_kafka_") == name)
            .map(|(_, v)| *v)
    }
}

/// The state line's words: whether the agent runs, is ready, and has anything to ship.
fn state_of(cfg: &Config, agent: &Agent, lag_entries: Option<u64>) -> String {
    let in_flight = agent.get("in_flight_entries").unwrap_or(0.0);
    match (agent.running, &agent.not_ready) {
        _ if cfg.metrics.listen.is_none() => "unknown (set [metrics] listen to see it)".to_string(),
        (false, _) => "not running (its endpoint does not answer)".to_string(),
        (true, Some(why)) => format!("NOT READY: {why}"),
        (true, None) if in_flight > 0.0 || lag_entries.is_some_and(|n| n > 0) => {
            "shipping".to_string()
        }
        (true, None) => "caught up".to_string(),
    }
}

fn print_json(saved: &Saved, agent: &Agent, healthy: bool, state: &str, problems: &[String]) {
    let mut o = serde_json::Map::new();
    o.insert("healthy".into(), healthy.into());
    o.insert("state".into(), state.into());
    o.insert(
        "cursor_file".into(),
        saved.path.display().to_string().into(),
    );
    o.insert(
        "cursor".into(),
        saved
            .cursor
            .clone()
            .map_or(serde_json::Value::Null, Into::into),
    );
    let opt = |v: Option<u64>| v.map_or(serde_json::Value::Null, Into::into);
    o.insert("cursor_age_seconds".into(), opt(saved.age));
    o.insert("lag_seconds".into(), opt(saved.lag));
    o.insert("lag_entries".into(), opt(saved.lag_entries));
    o.insert(
        "writers".into(),
        opt(saved.behind.map(|b| b.writers as u64)),
    );
    o.insert(
        "writers_behind".into(),
        opt(saved.behind.map(|b| b.writers_behind as u64)),
    );
    o.insert(
        "ready".into(),
        agent.ready.map_or(serde_json::Value::Null, Into::into),
    );
    for (k, v) in &agent.live {
        o.insert(k.trim_start_matches("journald_kafka_").into(), (*v).into());
    }
    o.insert(
        "last_error".into(),
        agent.last_error.clone().map_or(
            serde_json::Value::Null,
            |(at, m)| serde_json::json!({ "at": at, "message": m }),
        ),
    );
    o.insert("top_units".into(), agent.top_units.clone());
    o.insert("suppressed_by_journald".into(), agent.suppressed.clone());
    o.insert("inputs".into(), agent.inputs.clone());
    o.insert("problems".into(), problems.to_vec().into());
    say!("{}", serde_json::Value::Object(o));
}

fn print_text(saved: &Saved, agent: &Agent, healthy: bool, state: &str, problems: &[String]) {
    let dot = if healthy { "●" } else { "×" };
    say!("{dot} journald-kafka: {state}");
    print_cursor(saved);
    print_lag(saved);
    if agent.running {
        print_figures(agent);
        print_reports(agent);
    }
    for p in problems {
        say!("     Problem: {p}");
    }
}

fn print_cursor(saved: &Saved) {
    let path = &saved.path;
    match saved.cursor.as_deref() {
        None => say!("      Cursor: (none yet) in {}", path.display()),
        Some(c) => {
            // A collector's place has a line per host: show the newest few.
            const SHOWN: usize = 5;
            let all: Vec<&str> = crate::checkpoint::place::positions(c).collect();
            if all.len() > SHOWN {
                say!(
                    "              ({} writers; the {SHOWN} that moved last:)",
                    all.len()
                );
            }
            for (i, p) in all[all.len().saturating_sub(SHOWN)..].iter().enumerate() {
                say!(
                    "{}{p}",
                    if i == 0 {
                        "      Cursor: "
                    } else {
                        "              "
                    }
                );
            }
            say!(
                "              {} (written {} ago)",
                path.display(),
                saved.age.map_or("?".into(), human_secs)
            );
        }
    }
}

fn print_lag(saved: &Saved) {
    let behind = saved.behind;
    let mut lag_line = Vec::new();
    if let Some(n) = saved.lag_entries {
        lag_line.push(format!("{n} entries"));
    }
    match behind {
        Some(b) if b.writers > 1 => {
            lag_line.push(format!(
                "{} of {} writers behind",
                b.writers_behind, b.writers
            ));
        }
        _ => {}
    }
    if let Some(l) = saved.lag {
        let whose = if behind.is_some_and(|b| b.writers_behind > 0) {
            "the furthest-behind writer's saved entry"
        } else {
            "the cursor's entry"
        };
        lag_line.push(format!("{} behind now ({whose})", human_secs(l)));
    }
    if !lag_line.is_empty() {
        say!("         Lag: {}", lag_line.join(", "));
    }
}

/// The running agent's figures: in flight, brokers, deliveries, the journal's room.
fn print_figures(agent: &Agent) {
    let get = |name: &str| agent.get(name);
    say!(
        "   In flight: {} entries, {}",
        get("in_flight_entries").unwrap_or(0.0),
        mib(get("in_flight_bytes").unwrap_or(0.0))
    );
    say!(
        "     Brokers: {}",
        if get("broker_up") == Some(1.0) {
            "answering"
        } else {
            "NOT answering"
        }
    );
    say!(
        "   Delivered: {} ({} failed, {} restarts)",
        get("entries_delivered_total").unwrap_or(0.0),
        get("entries_failed_total").unwrap_or(0.0),
        get("pipeline_restarts_total").unwrap_or(0.0)
    );
    let allowed = get("journal_allowed_bytes").unwrap_or(0.0);
    let forecast = get("loss_forecast_seconds").filter(|f| *f >= 0.0);
    say!(
        "     Journal: {} used{}, written at {}/s; {}",
        mib(get("journal_disk_usage_bytes").unwrap_or(0.0)),
        if allowed > 0.0 {
            format!(" of {} allowed", mib(allowed))
        } else {
            String::new()
        },
        mib(get("journal_write_rate_bytes").unwrap_or(0.0)),
        match forecast {
            Some(f) => format!(
                "loss in {} if nothing more were shipped",
                human_secs(f as u64)
            ),
            None => "no deletion forecast".to_string(),
        }
    );
}

/// What the running agent reports beyond figures: its inputs, the busiest units,
/// journald's suppressions and the last error.
fn print_reports(agent: &Agent) {
    // Every input the agent runs, each as it reports itself.
    for i in agent.inputs.as_array().into_iter().flatten() {
        let name = i["input"].as_str().unwrap_or("?");
        match i["not_ready"].as_str() {
            Some(why) => say!("  {name:>10}: NOT READY: {why}"),
            None => say!("  {name:>10}: {}", i["status"].as_str().unwrap_or("")),
        }
    }
    let top = unit_list(&agent.top_units, "entries");
    if !top.is_empty() {
        say!("   Top units: {top} (entries read)");
    }
    let lost = unit_list(&agent.suppressed, "suppressed");
    say!(
        "  Suppressed: {}",
        if lost.is_empty() {
            "none by journald's rate limit".to_string()
        } else {
            format!("{lost} (dropped by journald's rate limit, never in the journal)")
        }
    );
    match &agent.last_error {
        Some((at, m)) => say!(
            "  Last error: {} ({} ago): {m}",
            jiff::Timestamp::from_second(*at as i64)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            human_secs(crate::metrics::unix_now().saturating_sub(*at))
        ),
        None => say!("  Last error: none since start"),
    }
}

/// `unit count, unit count` from the agent's per-unit list, `what` naming the count.
fn unit_list(v: &serde_json::Value, what: &str) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        r["unit"].as_str().unwrap_or("?"),
                        r[what].as_u64().unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
