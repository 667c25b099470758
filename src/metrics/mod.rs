//! What the agent did and how it is doing, shared by every stage, and its exposition.
//!
//! Owns plain atomic counters and gauges that any thread may update without locking, the
//! delivery-latency histogram, and the Prometheus rendering (`exposition`, with
//! `prometheus-client`) served by [`server`]. It must never block the pipeline: the hot
//! path only touches atomics, and all formatting happens at scrape time.

mod exposition;
pub(crate) mod server;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// One input as the supervisor saw it (`/status`, `/health/ready`).
#[derive(Debug, Clone)]
pub(crate) struct InputState {
    pub name: &'static str,
    pub status: String,
    /// Why it does not serve now.
    pub unhealthy: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub entries_read: AtomicU64,
    /// The agent's own log entries, skipped (journal.exclude_own_entries).
    pub entries_own_skipped: AtomicU64,
    /// Entries the filter's exclusions or patterns dropped (evaluated by the agent).
    pub entries_excluded: AtomicU64,
    pub entries_produced: AtomicU64,
    pub entries_delivered: AtomicU64,
    pub entries_failed: AtomicU64,
    pub entries_truncated: AtomicU64,
    /// Records the brokers refused for their own fault (too large, topic refused), and what
    /// the policy made of them.
    pub records_refused: AtomicU64,
    pub records_shrunk: AtomicU64,
    pub records_dead_lettered: AtomicU64,
    /// Template-made topic names that were not valid topic names (the fallback was used).
    pub topics_invalid: AtomicU64,
    /// Records whose entry was timestamped in the future and got the current time instead.
    pub timestamps_clamped: AtomicU64,
    pub bytes_produced: AtomicU64,
    pub cursor_writes: AtomicU64,
    /// Jumps in the journal's sequence numbers seen while reading, and the entries missing.
    pub journal_gaps: AtomicU64,
    pub entries_missed: AtomicU64,
    /// Fields libsystemd could not return, and entries it could not read (corrupt files).
    pub journal_corrupt_fields: AtomicU64,
    pub journal_unreadable_entries: AtomicU64,
    pub journal_unreadable_files: AtomicU64,
    pub cursor_write_errors: AtomicU64,
    /// The streak of failed cursor saves going on now (`None`: the last save worked).
    /// Shipping goes on meanwhile; readiness says so.
    pub cursor_save_failure: Mutex<Option<SaveFailure>>,
    /// Exactly-once mode: transactions aborted (their entries are sent again).
    pub transactions_aborted: AtomicU64,
    pub sessions_restarted: AtomicU64,
    // The Forward input (zero when it is off).
    pub forward_connections_total: AtomicU64,
    pub forward_events: AtomicU64,
    pub forward_events_delivered: AtomicU64,
    pub forward_events_failed: AtomicU64,
    pub forward_chunks: AtomicU64,
    pub forward_acks: AtomicU64,
    pub forward_rejected: AtomicU64,
    /// Forward connections open now.
    pub forward_connections_open: AtomicU64,
    /// Failed deliveries by librdkafka error code name.
    pub failures_by_kind: Mutex<BTreeMap<String, u64>>,
    /// Readiness thresholds (`metrics.stall_seconds`, `metrics.min_loss_forecast_seconds`):
    /// here rather than captured by the endpoint, so that a reload applies them.
    pub ready_stall_secs: AtomicU64,
    pub ready_min_forecast_secs: AtomicU64,
    /// Per-unit volume and journald's suppressions, merged in batches by the reader.
    pub units: Mutex<UnitTable>,
    /// The last error an operator should know of, and when (unix seconds): shown by `status`.
    pub last_error: Mutex<Option<(u64, String)>>,
    /// Seconds from reading an entry to the broker's acknowledgement.
    pub delivery_latency: Histogram,

    // Gauges, refreshed by the checkpointer and the reader.
    pub in_flight_entries: AtomicU64,
    pub in_flight_bytes: AtomicU64,
    /// Unix seconds of the last successful cursor write (0: never).
    pub last_cursor_write: AtomicU64,
    /// Realtime (µs) of the entry named by the last durable cursor (0: none).
    pub checkpoint_realtime_usec: AtomicU64,
    /// Realtime (µs) of the newest entry read.
    pub read_realtime_usec: AtomicU64,
    /// Realtime (µs) of the oldest entry still in the journal.
    pub journal_oldest_usec: AtomicU64,
    pub journal_usage_bytes: AtomicU64,
    /// Writers of a source read per writer (hosts of a collector), those holding their
    /// files open now, and the journal files open.
    pub journal_writers: AtomicU64,
    pub journal_writers_open: AtomicU64,
    pub journal_files_open: AtomicU64,
    /// The bytes the journal's writer lets it occupy now (journald's space rule; 0: unknown).
    pub journal_allowed_bytes: AtomicU64,
    /// Bytes per second written to the journal, measured (0: not yet known).
    pub journal_write_rate: AtomicU64,
    /// Forecast: seconds until the writer deletes the oldest entry not yet shipped, if
    /// nothing more were shipped (`u64::MAX`: no deletion coming or not yet known).
    pub loss_forecast_secs: AtomicU64,
    /// Unix seconds when the safe cursor last advanced.
    pub last_progress: AtomicU64,
    pub journal_open: AtomicBool,
    /// Each input as the supervisor last saw it (`None` until it first looked).
    pub inputs: Mutex<Option<Vec<InputState>>>,
    /// A broker answers: set by acknowledgements, metadata answers, librdkafka errors and
    /// statistics (`broker_state`), whichever comes first.
    pub broker_up: AtomicBool,
    // From librdkafka statistics.
    pub broker_rtt_usec: AtomicU64,
    pub producer_queue_messages: AtomicU64,
    pub producer_retries: AtomicU64,
    pub producer_request_errors: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            entries_read: AtomicU64::new(0),
            entries_own_skipped: AtomicU64::new(0),
            entries_excluded: AtomicU64::new(0),
            entries_produced: AtomicU64::new(0),
            entries_delivered: AtomicU64::new(0),
            entries_failed: AtomicU64::new(0),
            entries_truncated: AtomicU64::new(0),
            records_refused: AtomicU64::new(0),
            records_shrunk: AtomicU64::new(0),
            records_dead_lettered: AtomicU64::new(0),
            topics_invalid: AtomicU64::new(0),
            timestamps_clamped: AtomicU64::new(0),
            bytes_produced: AtomicU64::new(0),
            cursor_writes: AtomicU64::new(0),
            journal_gaps: AtomicU64::new(0),
            entries_missed: AtomicU64::new(0),
            journal_corrupt_fields: AtomicU64::new(0),
            journal_unreadable_entries: AtomicU64::new(0),
            journal_unreadable_files: AtomicU64::new(0),
            cursor_write_errors: AtomicU64::new(0),
            cursor_save_failure: Mutex::new(None),
            transactions_aborted: AtomicU64::new(0),
            sessions_restarted: AtomicU64::new(0),
            forward_connections_total: AtomicU64::new(0),
            forward_events: AtomicU64::new(0),
            forward_events_delivered: AtomicU64::new(0),
            forward_events_failed: AtomicU64::new(0),
            forward_chunks: AtomicU64::new(0),
            forward_acks: AtomicU64::new(0),
            forward_rejected: AtomicU64::new(0),
            forward_connections_open: AtomicU64::new(0),
            failures_by_kind: Mutex::new(BTreeMap::new()),
            last_error: Mutex::new(None),
            units: Mutex::new(UnitTable::default()),
            ready_stall_secs: AtomicU64::new(60),
            ready_min_forecast_secs: AtomicU64::new(0),
            // 1 ms to ~65 s.
            delivery_latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            in_flight_entries: AtomicU64::new(0),
            in_flight_bytes: AtomicU64::new(0),
            last_cursor_write: AtomicU64::new(0),
            checkpoint_realtime_usec: AtomicU64::new(0),
            read_realtime_usec: AtomicU64::new(0),
            journal_oldest_usec: AtomicU64::new(0),
            journal_usage_bytes: AtomicU64::new(0),
            journal_writers: AtomicU64::new(0),
            journal_writers_open: AtomicU64::new(0),
            journal_files_open: AtomicU64::new(0),
            journal_allowed_bytes: AtomicU64::new(0),
            journal_write_rate: AtomicU64::new(0),
            loss_forecast_secs: AtomicU64::new(u64::MAX),
            last_progress: AtomicU64::new(0),
            journal_open: AtomicBool::new(false),
            inputs: Mutex::new(None),
            broker_up: AtomicBool::new(false),
            broker_rtt_usec: AtomicU64::new(0),
            producer_queue_messages: AtomicU64::new(0),
            producer_retries: AtomicU64::new(0),
            producer_request_errors: AtomicU64::new(0),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    unix_now_usec() / 1_000_000
}

pub(crate) fn unix_now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Metrics {
    pub(crate) fn delivered(&self) {
        self.entries_delivered.fetch_add(1, Relaxed);
    }

    pub(crate) fn failed(&self, kind: &str) {
        self.entries_failed.fetch_add(1, Relaxed);
        let mut m = self
            .failures_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(kind.to_string()).or_default() += 1;
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub(crate) fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Relaxed);
    }

    /// Updates the librdkafka-derived gauges from a statistics JSON document.
    pub(crate) fn librdkafka_stats(&self, json: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
            return;
        };
        Self::set(
            &self.producer_queue_messages,
            v["msg_cnt"].as_u64().unwrap_or(0),
        );
        let (mut up, mut rtt, mut retries, mut errors) = (false, 0u64, 0u64, 0u64);
        if let Some(brokers) = v["brokers"].as_object() {
            for b in brokers.values() {
                // Internal pseudo-brokers (":0/internal") have no node id.
                if b["nodeid"].as_i64().unwrap_or(-1) < 0 {
                    continue;
                }
                up |= b["state"].as_str() == Some("UP");
                rtt = rtt.max(b["rtt"]["avg"].as_u64().unwrap_or(0));
                retries += b["txretries"].as_u64().unwrap_or(0);
                errors += b["txerrs"].as_u64().unwrap_or(0);
            }
        }
        self.broker_state(up);
        Self::set(&self.broker_rtt_usec, rtt);
        Self::set(&self.producer_retries, retries);
        Self::set(&self.producer_request_errors, errors);
    }

    pub(crate) fn set_inputs(&self, inputs: Vec<InputState>) {
        *self.inputs.lock().unwrap_or_else(|p| p.into_inner()) = Some(inputs);
    }

    /// Why inputs do not serve now ("journal: journal not open"), if any does not.
    pub(crate) fn inputs_unhealthy(&self) -> Option<String> {
        let g = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(inputs) = g.as_ref() else {
            return Some("starting".into());
        };
        let why: Vec<String> = inputs
            .iter()
            .filter_map(|i| i.unhealthy.as_ref().map(|w| format!("{}: {w}", i.name)))
            .collect();
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// The readiness thresholds, at start and at every reload.
    pub(crate) fn set_thresholds(&self, stall_seconds: u64, min_loss_forecast_seconds: u64) {
        Self::set(&self.ready_stall_secs, stall_seconds);
        Self::set(&self.ready_min_forecast_secs, min_loss_forecast_seconds);
    }

    /// Remembers `message` as the last error (rare: errors, not per-entry events).
    pub(crate) fn error(&self, message: impl Into<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((unix_now(), message.into()));
    }

    /// The agent's own view for `status`: what `/metrics` cannot carry (text, times).
    pub(crate) fn status_json(&self) -> String {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut o = serde_json::Map::new();
        o.insert(
            "last_error".into(),
            last.map_or(
                serde_json::Value::Null,
                |(at, m)| serde_json::json!({ "at": at, "message": m }),
            ),
        );
        o.insert("broker_up".into(), self.broker_up.load(Relaxed).into());
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        o.insert(
            "inputs".into(),
            inputs
                .unwrap_or_default()
                .iter()
                .map(|i| serde_json::json!({ "input": i.name, "status": i.status, "not_ready": i.unhealthy }))
                .collect(),
        );
        let units = self.units.lock().unwrap_or_else(|p| p.into_inner());
        let row = |u: &str, c: UnitCounts| serde_json::json!({ "unit": u, "entries": c.entries, "bytes": c.bytes, "suppressed": c.suppressed });
        o.insert(
            "top_units".into(),
            units.top(5).iter().map(|(u, c)| row(u, *c)).collect(),
        );
        o.insert(
            "suppressed".into(),
            units
                .rows()
                .filter(|(_, c)| c.suppressed > 0)
                .map(|(u, c)| row(u, c))
                .collect(),
        );
        serde_json::Value::Object(o).to_string()
    }

    /// Whether a broker answers, from whichever source knows first: an acknowledgement or a
    /// metadata answer (up), librdkafka's "all brokers down" or a connection failure (down),
    /// and the statistics snapshot (either). One log line per change, not per report.
    pub(crate) fn broker_state(&self, up: bool) {
        if self.broker_up.load(Relaxed) == up {
            return;
        }
        if self.broker_up.swap(up, Relaxed) != up {
            if up {
                tracing::info!("connected to the brokers");
            } else {
                tracing::warn!(
                    "no broker connection; librdkafka keeps retrying, the reader waits once the window is full"
                );
            }
        }
    }

    /// Seconds between now and the entry named by the durable cursor: how far behind the
    /// saved position is. 0 before the first checkpoint.
    pub(crate) fn lag_seconds(&self) -> f64 {
        let t = Self::get(&self.checkpoint_realtime_usec);
        if t == 0 {
            return 0.0;
        }
        unix_now_usec().saturating_sub(t) as f64 / 1e6
    }

    /// One line for the periodic log and for `STATUS=`.
    pub(crate) fn summary(&self) -> String {
        format!(
            "read={} produced={} delivered={} failed={} truncated={} bytes={}",
            Self::get(&self.entries_read),
            Self::get(&self.entries_produced),
            Self::get(&self.entries_delivered),
            Self::get(&self.entries_failed),
            Self::get(&self.entries_truncated),
            Self::get(&self.bytes_produced),
        )
    }
}

/// A streak of failed cursor saves: since when, the last error, and when the operator was
/// last told in the log (one line at the start, then a reminder every few minutes).
#[derive(Debug, Clone)]
pub(crate) struct SaveFailure {
    pub since: u64,
    pub error: String,
    pub logged: u64,
}

/// Counts for one unit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnitCounts {
    pub entries: u64,
    pub bytes: u64,
    /// Messages journald dropped for this unit (rate limit).
    pub suppressed: u64,
}

impl UnitCounts {
    fn add(&mut self, o: UnitCounts) {
        // Saturating: the counts come from entries, and a journal-remote writer chooses
        // its own fields.
        self.entries = self.entries.saturating_add(o.entries);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.suppressed = self.suppressed.saturating_add(o.suppressed);
    }
}

/// Per-unit counts with bounded cardinality: at most [`UnitTable::MAX`] units by name, the
/// rest under `(other)`, so a host with thousands of transient units cannot blow up the
/// scrape. Suppressions always get a row of their own while there is room, since they are
/// the loss an operator has to see.
#[derive(Debug, Default)]
pub(crate) struct UnitTable {
    rows: BTreeMap<String, UnitCounts>,
}

impl UnitTable {
    pub(crate) const MAX: usize = 100;
    pub(crate) const OTHER: &'static str = "(other)";

    /// Adds a batch the reader gathered (unit name → counts).
    pub(crate) fn merge(&mut self, batch: impl IntoIterator<Item = (String, UnitCounts)>) {
        for (unit, c) in batch {
            if let Some(row) = self.rows.get_mut(&unit) {
                row.add(c);
            } else if self.rows.len() < Self::MAX {
                self.rows.insert(unit, c);
            } else {
                self.rows.entry(Self::OTHER.to_string()).or_default().add(c);
            }
        }
    }

    pub(crate) fn rows(&self) -> impl Iterator<Item = (&str, UnitCounts)> {
        self.rows.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The `n` units with the most entries, busiest first.
    pub(crate) fn top(&self, n: usize) -> Vec<(String, UnitCounts)> {
        let mut v: Vec<_> = self.rows.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.entries.cmp(&a.1.entries).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}
