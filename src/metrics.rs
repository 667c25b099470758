//! What the agent did and how it is doing, shared by every stage, and its exposition.
//!
//! Owns plain atomic counters and gauges that any thread may update without locking, the
//! delivery-latency histogram, and the Prometheus rendering (`prometheus-client`) served by
//! [`server`]. It must never block the pipeline: the hot path only touches atomics, and all
//! formatting happens at scrape time.

pub(crate) mod server;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

    /// A registry exposing these metrics (and the latency histogram) in Prometheus format.
    pub(crate) fn registry(self: &std::sync::Arc<Self>) -> Registry {
        let mut r = Registry::default();
        r.register(
            "journald_kafka_delivery_latency_seconds",
            "Time from reading an entry to the broker's acknowledgement (one entry in 16)",
            self.delivery_latency.clone(),
        );
        r.register_collector(Box::new(self.clone()));
        r
    }
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters: [(&str, &str, &AtomicU64); 27] = [
            (
                "journald_kafka_entries_read",
                "Journal entries read (after the journal matches)",
                &self.entries_read,
            ),
            (
                "journald_kafka_entries_filtered_out",
                "Entries read but not shipped (the agent's own log entries)",
                &self.entries_own_skipped,
            ),
            (
                "journald_kafka_entries_excluded",
                "Entries read and dropped by the filter's exclusions or patterns (evaluated by the agent)",
                &self.entries_excluded,
            ),
            (
                "journald_kafka_entries_produced",
                "Records handed to the producer",
                &self.entries_produced,
            ),
            (
                "journald_kafka_entries_delivered",
                "Records acknowledged by the broker",
                &self.entries_delivered,
            ),
            (
                "journald_kafka_entries_truncated",
                "Entries truncated to encoding.max_record_bytes",
                &self.entries_truncated,
            ),
            (
                "journald_kafka_timestamps_clamped",
                "Records given the send time because the entry was dated in the future",
                &self.timestamps_clamped,
            ),
            (
                "journald_kafka_produced_bytes",
                "Record value bytes handed to the producer",
                &self.bytes_produced,
            ),
            (
                "journald_kafka_cursor_writes",
                "Durable cursor commits (cursor file writes, or committed transactions in exactly-once mode)",
                &self.cursor_writes,
            ),
            (
                "journald_kafka_cursor_write_errors",
                "Failed cursor writes (the previous cursor stays)",
                &self.cursor_write_errors,
            ),
            (
                "journald_kafka_transactions_aborted",
                "Exactly-once mode: transactions aborted; their entries are read and sent again",
                &self.transactions_aborted,
            ),
            (
                "journald_kafka_journal_gaps",
                "Jumps in journal sequence numbers seen while reading",
                &self.journal_gaps,
            ),
            (
                "journald_kafka_entries_missed",
                "Entries that vanished from the journal before they could be read",
                &self.entries_missed,
            ),
            (
                "journald_kafka_records_refused",
                "Records the brokers refused for their own fault (too large, topic refused)",
                &self.records_refused,
            ),
            (
                "journald_kafka_records_shrunk",
                "Refused records re-encoded smaller and sent again",
                &self.records_shrunk,
            ),
            (
                "journald_kafka_records_dead_lettered",
                "Refused records sent to the dead-letter topic",
                &self.records_dead_lettered,
            ),
            (
                "journald_kafka_topics_invalid",
                "Template-made topic names that were invalid; the fallback topic was used",
                &self.topics_invalid,
            ),
            (
                "journald_kafka_journal_corrupt_fields",
                "Fields of read entries that libsystemd could not return (corrupt journal data)",
                &self.journal_corrupt_fields,
            ),
            (
                "journald_kafka_journal_unreadable_entries",
                "Entries libsystemd could not read and stepped over (corrupt journal data)",
                &self.journal_unreadable_entries,
            ),
            (
                "journald_kafka_pipeline_restarts",
                "Pipeline restarts from the last safe cursor after a failure",
                &self.sessions_restarted,
            ),
            (
                "journald_kafka_forward_connections",
                "Forward-protocol connections accepted",
                &self.forward_connections_total,
            ),
            (
                "journald_kafka_forward_events",
                "Forward events received in well-formed messages",
                &self.forward_events,
            ),
            (
                "journald_kafka_forward_events_delivered",
                "Forward events acknowledged by the broker",
                &self.forward_events_delivered,
            ),
            (
                "journald_kafka_forward_events_failed",
                "Forward events the producer could not deliver (their chunk is not acknowledged; the client resends)",
                &self.forward_events_failed,
            ),
            (
                "journald_kafka_forward_chunks",
                "Forward messages that asked for an acknowledgement (option chunk)",
                &self.forward_chunks,
            ),
            (
                "journald_kafka_forward_acks",
                "Acknowledgements sent after every event of the chunk was confirmed by the broker",
                &self.forward_acks,
            ),
            (
                "journald_kafka_forward_rejected",
                "Forward connections closed for malformed input, a failed handshake or the connection limit",
                &self.forward_rejected,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(Self::get(v));
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        {
            let failures = self
                .failures_by_kind
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let c = ConstCounter::new(0u64);
            let mut m = enc.encode_descriptor(
                "journald_kafka_entries_failed",
                "Failed deliveries, by librdkafka error",
                None,
                c.metric_type(),
            )?;
            for (kind, n) in failures.iter() {
                let labels = [("error", kind.as_str())];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let units = self.units.lock().unwrap_or_else(|p| p.into_inner());
            for (name, help, pick) in [
                (
                    "journald_kafka_unit_entries",
                    "Entries read, by _SYSTEMD_UNIT (the busiest units; the rest as \"(other)\")",
                    0usize,
                ),
                (
                    "journald_kafka_unit_bytes",
                    "Bytes of entry data read, by _SYSTEMD_UNIT (the busiest units; the rest as \"(other)\")",
                    1,
                ),
                (
                    "journald_kafka_journal_suppressed",
                    "Messages journald's rate limit dropped before they reached the journal (its \"Suppressed N messages from UNIT\" entries), by unit",
                    2,
                ),
            ] {
                let c = ConstCounter::new(0u64);
                let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
                for (unit, v) in units.rows() {
                    let n = [v.entries, v.bytes, v.suppressed][pick];
                    if n > 0 || (pick < 2 && unit == UnitTable::OTHER) {
                        let labels = [("unit", unit)];
                        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
        }
        let now = unix_now();
        let last_write = Self::get(&self.last_cursor_write);
        let oldest = Self::get(&self.journal_oldest_usec);
        let checkpoint = Self::get(&self.checkpoint_realtime_usec);
        let gauges: Vec<(&str, &str, f64)> = vec![
            (
                "journald_kafka_forward_connections_open",
                "Forward-protocol connections open now",
                Self::get(&self.forward_connections_open) as f64,
            ),
            (
                "journald_kafka_journal_unreadable_files",
                "Journal files of the source that cannot be opened (corrupt, or not readable by the agent), as of the last check",
                Self::get(&self.journal_unreadable_files) as f64,
            ),
            (
                "journald_kafka_in_flight_entries",
                "Records sent and not yet acknowledged",
                Self::get(&self.in_flight_entries) as f64,
            ),
            (
                "journald_kafka_in_flight_bytes",
                "Bytes sent and not yet acknowledged",
                Self::get(&self.in_flight_bytes) as f64,
            ),
            (
                "journald_kafka_watermark_lag_entries",
                "Entries read but not yet behind the durable cursor",
                Self::get(&self.entries_read).saturating_sub(
                    Self::get(&self.entries_delivered) + Self::get(&self.entries_failed),
                ) as f64,
            ),
            (
                "journald_kafka_watermark_lag_seconds",
                "Now minus the time of the entry named by the durable cursor",
                self.lag_seconds(),
            ),
            (
                "journald_kafka_cursor_age_seconds",
                "Seconds since the cursor file was last written (-1: never)",
                if last_write == 0 {
                    -1.0
                } else {
                    now.saturating_sub(last_write) as f64
                },
            ),
            (
                "journald_kafka_cursor_save_failing_seconds",
                "Seconds the cursor save has been failing (0: the last save worked); entries shipped meanwhile would be sent again after a restart",
                self.cursor_save_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map_or(0.0, |f| now.saturating_sub(f.since) as f64),
            ),
            (
                "journald_kafka_journal_disk_usage_bytes",
                "Bytes of journal files the agent reads",
                Self::get(&self.journal_usage_bytes) as f64,
            ),
            (
                "journald_kafka_journal_writers",
                "Writers (sequence-number spaces: hosts of a central directory) the reader follows; 1 for the local journal",
                Self::get(&self.journal_writers) as f64,
            ),
            (
                "journald_kafka_journal_writers_open",
                "Writers holding their journal files open now (the others are caught up and wait for a change)",
                Self::get(&self.journal_writers_open) as f64,
            ),
            (
                "journald_kafka_journal_files_open",
                "Journal files the reader of a directory holds open now (bounded by half the open-file limit)",
                Self::get(&self.journal_files_open) as f64,
            ),
            (
                "journald_kafka_retention_headroom_seconds",
                "Time between the oldest entry left in the journal and the durable cursor: when it reaches 0, journald's retention overtakes the agent",
                if oldest == 0 || checkpoint == 0 {
                    -1.0
                } else {
                    (checkpoint as f64 - oldest as f64) / 1e6
                },
            ),
            (
                "journald_kafka_journal_allowed_bytes",
                "Bytes the journal's writer lets it occupy (journald's SystemMaxUse/SystemKeepFree rule; 0: unknown)",
                Self::get(&self.journal_allowed_bytes) as f64,
            ),
            (
                "journald_kafka_journal_write_rate_bytes",
                "Bytes per second written to the journal, measured over about a minute",
                Self::get(&self.journal_write_rate) as f64,
            ),
            (
                "journald_kafka_loss_forecast_seconds",
                "Seconds until the journal's writer deletes the oldest entry not yet shipped if nothing more were shipped (-1: no deletion coming)",
                match Self::get(&self.loss_forecast_secs) {
                    u64::MAX => -1.0,
                    s => s as f64,
                },
            ),
            (
                "journald_kafka_journal_open",
                "1 when the journal is open",
                f64::from(u8::from(self.journal_open.load(Relaxed))),
            ),
            (
                "journald_kafka_broker_up",
                "1 when a broker answers (acknowledgements, metadata, librdkafka's connection state)",
                f64::from(u8::from(self.broker_up.load(Relaxed))),
            ),
            (
                "journald_kafka_broker_rtt_seconds",
                "Average broker round-trip time (librdkafka statistics)",
                Self::get(&self.broker_rtt_usec) as f64 / 1e6,
            ),
            (
                "journald_kafka_producer_queue_messages",
                "Messages in librdkafka's queues",
                Self::get(&self.producer_queue_messages) as f64,
            ),
            (
                "journald_kafka_producer_retries",
                "Request retries (librdkafka statistics, since the producer started)",
                Self::get(&self.producer_retries) as f64,
            ),
            (
                "journald_kafka_producer_request_errors",
                "Request errors (librdkafka statistics, since the producer started)",
                Self::get(&self.producer_request_errors) as f64,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
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
