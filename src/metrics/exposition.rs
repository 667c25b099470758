//! The Prometheus exposition of [`Metrics`]: every family's name, HELP text and type, in
//! the order `/metrics` has always served them.
//!
//! Renders at scrape time from the atomics and the few locked tables; it must never write a
//! figure, and must never hold a lock longer than one family's rendering, since the
//! pipeline takes the same locks. The order of the families is part of the output (tests
//! and `docs/metrics.md` follow it): splitting or adding a helper must keep it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{Metrics, UnitTable, unix_now};

impl Metrics {
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
        // One helper per group of families, called in the exposition's order.
        self.delivery_counters(&mut enc)?;
        self.journal_counters(&mut enc)?;
        self.forward_counters(&mut enc)?;
        self.failures_by_kind(&mut enc)?;
        self.unit_counters(&mut enc)?;
        self.input_gauges(&mut enc)?;
        self.delivery_gauges(&mut enc)?;
        self.journal_gauges(&mut enc)?;
        self.broker_gauges(&mut enc)
    }
}

impl Metrics {
    /// What became of the entries read: produced, delivered, cut, refused, and the cursor
    /// commits behind them.
    fn delivery_counters(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        counters(
            enc,
            &[
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
            ],
        )
    }

    /// The journal's damage the reader stepped over, and the sessions restarted.
    fn journal_counters(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        counters(
            enc,
            &[
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
            ],
        )
    }

    /// The Forward input (zero when it is off).
    fn forward_counters(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        counters(
            enc,
            &[
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
            ],
        )
    }

    /// Failed deliveries, one series per librdkafka error seen.
    fn failures_by_kind(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
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
        Ok(())
    }

    /// Per-unit volume and journald's suppressions, one family each, labelled by unit.
    fn unit_counters(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
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
        Ok(())
    }

    /// What the inputs hold open or cannot open now.
    fn input_gauges(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauges(
            enc,
            &[
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
            ],
        )
    }

    /// The in-flight window, how far the durable cursor lags, and the cursor file's health.
    fn delivery_gauges(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = unix_now();
        let last_write = Self::get(&self.last_cursor_write);
        gauges(
            enc,
            &[
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
            ],
        )
    }

    /// The journal's size, its writer's limits and rate, and the loss forecast.
    fn journal_gauges(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let oldest = Self::get(&self.journal_oldest_usec);
        let checkpoint = Self::get(&self.checkpoint_realtime_usec);
        gauges(
            enc,
            &[
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
            ],
        )
    }

    /// The brokers and librdkafka's producer, as its statistics report them.
    fn broker_gauges(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauges(
            enc,
            &[
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
            ],
        )
    }
}

/// One counter family per `(name, help, counter)`, in the order given.
fn counters(
    enc: &mut DescriptorEncoder,
    family: &[(&str, &str, &AtomicU64)],
) -> Result<(), std::fmt::Error> {
    for &(name, help, v) in family {
        let c = ConstCounter::new(Metrics::get(v));
        c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
    }
    Ok(())
}

/// One gauge family per `(name, help, value)`, in the order given.
fn gauges(
    enc: &mut DescriptorEncoder,
    family: &[(&str, &str, f64)],
) -> Result<(), std::fmt::Error> {
    for &(name, help, v) in family {
        let g = ConstGauge::new(v);
        g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
    }
    Ok(())
}
