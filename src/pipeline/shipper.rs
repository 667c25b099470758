//! The shipping thread: takes queued entries in order, encodes them, admits them to the
//! window and hands them to the producer; runs the exactly-once transaction between sends.
//!
//! It alone calls `Tracker::admit_or` and `Tracker::pass`, so the watermark sees positions in
//! the input's order. It must never drop an admitted entry without failing it in the
//! watermark, and never let a record leave with a timestamp the broker would refuse for
//! good.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::control::Control;
use super::delivery::{self, Producer};
use super::exactly_once::Transaction;
use super::input::{In, Item};
use super::repair::Repairer;
use crate::config::Config;
use crate::error::Failure;
use crate::format::Encoder;
use crate::journal::Entry;
use crate::kafka::{self, within_tolerance};
use crate::metrics::Metrics;

/// Runs the shipping thread until the queue closes or the session ends, then closes the
/// transaction (exactly-once). Returns with the queue closed, so a blocked input wakes up.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    queue: In,
    cfg: &Config,
    mut txn: Option<Transaction>,
    mut repairs: Option<Repairer>,
    control: &Control,
    producer: &Producer,
    metrics: &Metrics,
) -> Result<(), Failure> {
    let mut shipper = Shipper::new(
        Encoder::new(&cfg.encoding, &cfg.kafka).reserve(&cfg.delivery),
        !cfg.kafka.headers.is_empty(),
    );
    shipper.progress = super::progress::Progress::new(cfg);
    let result = ship_all(
        queue,
        &mut shipper,
        txn.as_mut(),
        repairs.as_mut(),
        control,
        producer,
        metrics,
    );
    // The input is done; refused records still in flight get their policy until the
    // shutdown deadline, so a clean stop does not leave them to the next start.
    // Only a session that met refusals lingers: otherwise the session's own settling wait
    // is all there is, as before.
    if let (Ok(()), Some(repairs)) = (&result, repairs.as_mut().filter(|r| r.active())) {
        let deadline = Instant::now() + Duration::from_millis(cfg.pipeline.shutdown_timeout_ms);
        while Instant::now() < deadline
            && !control.window().wait_settled(Instant::now() + REPAIR_POLL)
        {
            if !repairs.repair_waiting() {
                break;
            }
        }
    }
    match txn.as_mut() {
        // The last transaction carries the last window.
        Some(t) => t.finish(
            result,
            control,
            metrics,
            shipper.progress.as_mut(),
            producer,
        ),
        None => {
            // The last window, so a clean stop leaves nothing unaccounted.
            if let Some(p) = shipper.progress.as_mut() {
                p.emit(producer);
            }
            result
        }
    }
}

/// What a record costs beyond its value and cursor while in flight (librdkafka's message
/// and headers, the watermark's slot), counted against the byte window so that it bounds
/// memory for small entries too.
const RECORD_BOOKKEEPING: usize = 256;

/// How often the shipping thread looks for refused records while the queue is quiet.
const REPAIR_POLL: Duration = Duration::from_millis(20);

/// The same, before any record was refused in this session and without progress records.
const IDLE_POLL: Duration = Duration::from_millis(250);

fn ship_all(
    mut queue: In,
    shipper: &mut Shipper,
    mut txn: Option<&mut Transaction>,
    mut repairs: Option<&mut Repairer>,
    control: &Control,
    producer: &Producer,
    metrics: &Metrics,
) -> Result<(), Failure> {
    loop {
        // A quiet queue is woken for refused records and progress windows; with neither
        // in play, four times a second is enough (50 wake-ups a second were a third of an
        // idle agent's CPU, #19): a first refusal then waits at most that long.
        let busy = repairs.as_deref().is_some_and(Repairer::active) || shipper.progress.is_some();
        let item = match queue.next(if busy { REPAIR_POLL } else { IDLE_POLL }) {
            Ok(item) => Some(item),
            Err(false) => None,
            Err(true) => return Ok(()),
        };
        if let Some(r) = repairs.as_deref_mut() {
            if !r.repair_waiting() {
                return Ok(());
            }
        }
        // In exactly-once mode each transaction carries its window (`exactly_once`).
        if let Some(p) = shipper
            .progress
            .as_mut()
            .filter(|p| txn.is_none() && p.due())
        {
            p.emit(producer);
        }
        let Some(item) = item else {
            continue;
        };
        match item {
            Item::Entry(mut entry) => {
                if let Some(t) = txn.as_deref_mut() {
                    t.before_send()?;
                }
                // False: admission was refused (stop or failure). What is still queued was
                // never admitted, so the watermark cannot pass it.
                let shipped = match repairs.as_deref_mut() {
                    Some(r) => shipper.ship(
                        &mut entry,
                        control,
                        producer,
                        metrics,
                        Some(&mut || r.repair_waiting()),
                    ),
                    None => shipper.ship(&mut entry, control, producer, metrics, None),
                };
                if !shipped {
                    return Ok(());
                }
                if let Some(t) = txn.as_deref_mut() {
                    t.sent(control, metrics, shipper.progress.as_mut(), producer)?;
                }
                queue.recycle(entry);
            }
            Item::Pass(cursor) => {
                if let Some(p) = shipper.progress.as_mut() {
                    p.filtered(&cursor);
                }
                control.window().pass(cursor)
            }
            Item::Idle => {
                if let Some(t) = txn.as_deref_mut() {
                    // Nothing to read: close the transaction now rather than hold its
                    // entries back from read_committed consumers.
                    t.idle(control, metrics, shipper.progress.as_mut(), producer)?;
                }
            }
        }
    }
}

/// Encodes and produces entries, reusing its buffers from one entry to the next.
struct Shipper {
    encoder: Encoder,
    payload: Vec<u8>,
    topic: String,
    key: Vec<u8>,
    /// Headers beyond the cursor and format ones are configured.
    extra_headers: bool,
    /// Progress records for `audit`, when configured.
    progress: Option<super::progress::Progress>,
    truncated_logged: u32,
    /// A recent reading of the clock (ms since the epoch), never ahead of the real time:
    /// the future-timestamp check re-reads the clock only when an entry looks too new.
    clock_ms: i64,
}

impl Shipper {
    fn new(encoder: Encoder, extra_headers: bool) -> Shipper {
        Shipper {
            encoder,
            payload: Vec::with_capacity(4096),
            topic: String::new(),
            key: Vec::new(),
            extra_headers,
            progress: None,
            truncated_logged: 0,
            clock_ms: now_ms(),
        }
    }

    /// Encodes and produces one entry; its cursor moves into the watermark. Returns false
    /// when the session must end.
    fn ship(
        &mut self,
        entry: &mut Entry,
        control: &Control,
        producer: &Producer,
        metrics: &Metrics,
        while_full: Option<&mut dyn FnMut() -> bool>,
    ) -> bool {
        Metrics::add(&metrics.entries_read, 1);
        Metrics::set(&metrics.read_realtime_usec, entry.realtime_usec);
        if self.encoder.wants_observed_time() {
            self.encoder.observed_at(std::time::SystemTime::now());
        }
        let outcome = self.encoder.encode(entry, &mut self.payload);
        if !outcome.truncated.is_empty() {
            Metrics::add(&metrics.entries_truncated, 1);
            if self.truncated_logged < 10 {
                self.truncated_logged += 1;
                tracing::warn!(cursor = %entry.cursor, fields = ?outcome.truncated, "entry larger than encoding.max_record_bytes; truncated the largest field(s) and marked the record");
            }
        }
        if !self.encoder.topic(entry, &mut self.topic) {
            if Metrics::get(&metrics.topics_invalid) == 0 {
                tracing::warn!(cursor = %entry.cursor, fallback = %self.topic, "the topic template made a name Kafka refuses; using the fallback topic (counted in topics_invalid)");
            }
            Metrics::add(&metrics.topics_invalid, 1);
        }
        let headers = if self.extra_headers {
            delivery::headers_with(&entry.cursor, &self.encoder.headers(entry))
        } else {
            delivery::headers(&entry.cursor)
        };
        let keyed = self.encoder.key(entry, &mut self.key);
        if let Some(p) = self.progress.as_mut() {
            p.shipped(&entry.cursor);
        }
        let bytes = self.payload.len() + entry.cursor.len() + RECORD_BOOKKEEPING;
        // Waiting for room is not being stuck: the watchdog stays fed meanwhile.
        let alive = || control.reader_beat();
        let cursor = std::mem::take(&mut entry.cursor);
        let Ok(seq) = control.window().admit_or(cursor, bytes, while_full, &alive) else {
            return false;
        };
        let timestamp_ms = self.record_timestamp(entry.realtime_usec, metrics);
        let sent = delivery::send(
            producer,
            control,
            seq,
            kafka::Outgoing {
                topic: &self.topic,
                payload: &self.payload,
                key: keyed.then_some(self.key.as_slice()),
                headers,
                timestamp_ms,
            },
        );
        if sent {
            Metrics::add(&metrics.entries_produced, 1);
            Metrics::add(&metrics.bytes_produced, self.payload.len() as u64);
        }
        sent
    }

    /// The record timestamp: the entry's realtime timestamp, unless it lies in the future.
    fn record_timestamp(&mut self, realtime_usec: u64, metrics: &Metrics) -> i64 {
        let ts = (realtime_usec / 1000) as i64;
        if let Some(ts) = within_tolerance(ts, self.clock_ms) {
            return ts;
        }
        self.clock_ms = now_ms();
        if let Some(ts) = within_tolerance(ts, self.clock_ms) {
            return ts;
        }
        if Metrics::get(&metrics.timestamps_clamped) == 0 {
            tracing::warn!(
                entry_time_ms = ts,
                now_ms = self.clock_ms,
                "an entry is timestamped in the future; its record gets the current time (counted in timestamps_clamped)"
            );
        }
        Metrics::add(&metrics.timestamps_clamped, 1);
        self.clock_ms
    }
}

fn now_ms() -> i64 {
    (crate::metrics::unix_now_usec() / 1000) as i64
}

/// Why the session ended, when its control holds a reason.
pub(super) fn session_failure(control: &Control) -> Option<Failure> {
    control.failure().map(|f| Failure::retry(anyhow!(f)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::sink::FUTURE_TOLERANCE_MS;

    #[test]
    fn future_timestamps_are_clamped_past_the_tolerance_only() {
        let now = 1_700_000_000_000;
        assert_eq!(
            within_tolerance(now - 86_400_000, now),
            Some(now - 86_400_000)
        );
        assert_eq!(
            within_tolerance(now + FUTURE_TOLERANCE_MS, now),
            Some(now + FUTURE_TOLERANCE_MS)
        );
        assert_eq!(within_tolerance(now + FUTURE_TOLERANCE_MS + 1, now), None);

        let metrics = Metrics::default();
        let cfg = crate::config::parse("[kafka]\nbrokers = \"b:1\"\ntopic = \"t\"\n").unwrap();
        let mut s = Shipper::new(
            Encoder::new(&cfg.encoding, &cfg.kafka).reserve(&cfg.delivery),
            !cfg.kafka.headers.is_empty(),
        );
        let real_now = now_ms();
        let past = s.record_timestamp(1_000_000, &metrics);
        assert_eq!(past, 1_000, "old entries keep their time");
        let far = (real_now as u64 + 3_600_000) * 1000;
        let clamped = s.record_timestamp(far, &metrics);
        assert!(
            clamped >= real_now && clamped < real_now + 60_000,
            "{clamped}"
        );
        assert_eq!(Metrics::get(&metrics.timestamps_clamped), 1);
    }
}
