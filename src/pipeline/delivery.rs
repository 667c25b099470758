//! The journal's side of the output seam (`kafka::sink`): its records on the wire (the
//! cursor header consumers de-duplicate by), its producers, and what their delivery
//! reports mean to the watermark (`JournalOwner`), as `forward::ack` is the Forward
//! input's side.
//!
//! Delivery reports are the only source of "confirmed": they feed the watermark, and
//! nothing else may tell it that a record was delivered.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use super::control::Control;
use crate::config::properties::Producer as Role;
use crate::config::{KafkaConfig, PipelineConfig};
use crate::format::{CURSOR_HEADER, FORMAT_HEADER, FORMAT_VERSION, PROGRESS_HEADER};
use crate::kafka::sink::{self, Outgoing, Sent};
use crate::kafka::{Refusal, Refusals};
use crate::metrics::Metrics;

/// Delivery token of progress records: outside the watermark (their reports are only
/// logged).
const PROGRESS: usize = usize::MAX;

/// The journal's records in the sink: delivery reports feed the watermark (by sequence
/// number), records refused for their own fault go to the shipping thread's policy.
pub(crate) struct JournalOwner {
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    /// Where records refused for their own fault go, when a policy other than "stall"
    /// takes care of them; `None`: every failure fails the session.
    refusals: Option<Arc<Refusals>>,
}

impl sink::Owner for JournalOwner {
    type Token = usize;
    const INPUT: &'static str = "journal";

    fn acknowledged(&self, seq: usize, _len: usize) {
        match seq {
            PROGRESS => {}
            seq => {
                self.metrics.delivered();
                if let Some(latency) = self.control.window().delivered(seq as u64) {
                    self.metrics.delivery_latency.observe(latency.as_secs_f64());
                }
            }
        }
    }

    fn refused(&self, seq: usize, r: sink::Refused) {
        let Some(refusals) = self.refusals.as_ref().filter(|_| seq < PROGRESS) else {
            let error = format!("delivery to topic {} failed: {}", r.topic, r.error);
            return self.failed(seq, r.payload.len(), r.kind, error);
        };
        // The record's own fault: the shipping thread applies the policy; the record
        // stays in flight meanwhile.
        Metrics::add(&self.metrics.records_refused, 1);
        refusals.push(Refusal {
            seq: seq as u64,
            cursor: r
                .header(CURSOR_HEADER)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
            refused: r,
        });
    }

    fn failed(&self, seq: usize, _len: usize, kind: String, error: String) {
        match seq {
            PROGRESS => tracing::warn!(
                error,
                "a progress record was not delivered; audit will see that window as unaccounted"
            ),
            seq => {
                self.metrics.failed(&kind);
                // Logged once per session by the pipeline; one line per record would flood.
                tracing::debug!(seq, "{error}");
                self.control.record_failed(seq as u64, error);
            }
        }
    }

    fn fatal(&self, reason: &str) {
        // A fatal error (for instance a broken idempotent-producer sequence) makes this
        // producer unusable: end the session and start over from the safe cursor.
        tracing::error!(
            reason,
            "fatal producer error; restarting from the last safe cursor"
        );
        self.control.fail(format!("fatal producer error: {reason}"));
    }

    fn statistics(&self) {
        // Statistics arrive from librdkafka's polling thread: proof that it is not wedged.
        self.control.producer_beat();
    }
}

/// The journal's producer.
pub(super) type Producer = sink::Producer<JournalOwner>;

/// Creates the session's producer (`role`: `Journal` or `Transactional`). librdkafka
/// connects lazily; `kafka::probe` checks
/// reachability.
pub(super) fn producer(
    k: &KafkaConfig,
    p: &PipelineConfig,
    role: Role<'_>,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    refusals: Option<Arc<Refusals>>,
) -> Result<Producer> {
    let c = crate::kafka::producer_config(k, p, role);
    create(c, control, metrics, refusals, "producer-poll")
        .context("cannot create the Kafka producer")
}

/// The producer for records the brokers refused as too large (one record per batch).
/// Its delivery reports feed the same watermark (the same sequence numbers).
pub(super) fn repair_producer(
    k: &KafkaConfig,
    p: &PipelineConfig,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    refusals: Arc<Refusals>,
) -> Result<Producer> {
    let c = crate::kafka::producer_config(k, p, Role::JournalRepair);
    create(c, control, metrics, Some(refusals), "producer-repair")
        .context("cannot create the Kafka producer for refused records")
}

fn create(
    c: rdkafka::ClientConfig,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    refusals: Option<Arc<Refusals>>,
    thread: &str,
) -> rdkafka::error::KafkaResult<Producer> {
    let owner = JournalOwner {
        control,
        metrics: metrics.clone(),
        refusals,
    };
    sink::create(&c, owner, metrics, thread)
}

/// The headers every entry's record carries: its cursor (consumers de-duplicate by it) and
/// the layout version. They copy the cursor, so they are built before the watermark takes it.
pub(crate) fn headers(cursor: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: CURSOR_HEADER,
            value: Some(cursor.as_bytes()),
        })
        .insert(Header {
            key: FORMAT_HEADER,
            value: Some(FORMAT_VERSION.as_bytes()),
        })
}

/// [`headers`] and the configured extra ones (name, value).
pub(super) fn headers_with<N: AsRef<str>, V: AsRef<[u8]>>(
    cursor: &str,
    extra: &[(N, V)],
) -> OwnedHeaders {
    let mut h = headers(cursor);
    for (k, v) in extra {
        h = h.insert(Header {
            key: k.as_ref(),
            value: Some(v.as_ref()),
        });
    }
    h
}

/// Hands the record admitted as `seq` to librdkafka, waiting (on this thread) while its
/// queue is full. Returns false when the session must end; the record is then failed in
/// the watermark, so nothing after it becomes safe.
pub(super) fn send(producer: &Producer, control: &Control, seq: u64, mut r: Outgoing<'_>) -> bool {
    let topic = r.topic;
    loop {
        match producer.try_send(r, seq as usize) {
            Sent::Queued => return true,
            Sent::Full(back, _) => {
                // librdkafka's queue is sized above our window, so this is rare; wait for
                // deliveries to make room rather than dropping anything.
                if control.status().is_err() {
                    control.record_failed(seq, "not sent: the session is ending".into());
                    return false;
                }
                r = back;
                thread::sleep(Duration::from_millis(5));
            }
            Sent::Refused(e, _) => {
                control.record_failed(seq, format!("cannot produce to topic {topic:?}: {e}"));
                return false;
            }
        }
    }
}

/// Produces a progress record (`pipeline::progress`): marked by its header, keyed by the
/// machine, outside the watermark (its delivery report is only logged). False when
/// librdkafka cannot take it now.
pub(super) fn send_progress(producer: &Producer, topic: &str, key: &[u8], payload: &[u8]) -> bool {
    let headers = OwnedHeaders::new().insert(Header {
        key: PROGRESS_HEADER,
        value: Some(b"1".as_slice()),
    });
    let record = BaseRecord::with_opaque_to(topic, PROGRESS)
        .payload(payload)
        .key(key)
        .headers(headers);
    producer.send(record).is_ok()
}
