//! The journal's producer: its creation and what its delivery reports mean to the
//! watermark (`JournalOwner`, the journal's side of the `sink` seam).
//!
//! Delivery reports are the only source of "confirmed": they feed the watermark, and
//! nothing else may tell it that a record was delivered.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::producer::Producer as _;

use super::client::client_config;
use super::refusal::{Refusal, Refusals};
use super::sink;
use crate::checkpoint::Tracker;
use crate::config::{KafkaConfig, PipelineConfig};
use crate::metrics::Metrics;

/// Delivery opaque of records that are not journal entries (the exactly-once cursor
/// record): their reports never touch the watermark.
pub(crate) const CONTROL: usize = usize::MAX;

/// Delivery opaque of progress records: never the watermark's either.
pub(crate) const PROGRESS: usize = usize::MAX - 1;

/// The journal's records in the sink: delivery reports feed the watermark (by sequence
/// number), records refused for their own fault go to the shipping thread's policy.
pub(crate) struct JournalOwner {
    tracker: Arc<Tracker>,
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
            CONTROL => self.tracker.control_answered(None),
            seq => {
                self.metrics.delivered();
                if let Some(latency) = self.tracker.delivered(seq as u64) {
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
                .header(crate::format::CURSOR_HEADER)
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
            // The transaction that carries it cannot commit; say why.
            CONTROL => self.tracker.control_answered(Some(format!(
                "the cursor record was not delivered: {error}"
            ))),
            seq => {
                self.metrics.failed(&kind);
                // Logged once per session by the pipeline; one line per record would flood.
                tracing::debug!(seq, "{error}");
                self.tracker.failed(seq as u64, error);
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
        self.tracker
            .fail_all(format!("fatal producer error: {reason}"));
    }

    fn statistics(&self) {
        // Statistics arrive from librdkafka's polling thread: proof that it is not wedged.
        self.tracker.producer_beat();
    }
}

/// The journal's producer.
pub(crate) type Producer = sink::Producer<JournalOwner>;

/// What makes a producer transactional (exactly-once mode).
pub(crate) struct Transactional<'a> {
    pub(crate) id: &'a str,
    pub(crate) timeout_ms: u64,
}

/// Creates the producer. librdkafka connects lazily; see [`probe`] to check reachability.
pub(crate) fn producer(
    k: &KafkaConfig,
    p: &PipelineConfig,
    transactional: Option<Transactional<'_>>,
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    refusals: Option<Arc<Refusals>>,
) -> Result<Producer> {
    let mut c = client_config(k, p);
    if let Some(t) = transactional {
        c.set("transactional.id", t.id);
        c.set("transaction.timeout.ms", t.timeout_ms.to_string());
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms. A record that
        // times out aborts its transaction and the reader rewinds, so nothing is lost.
        c.set("message.timeout.ms", t.timeout_ms.to_string());
    }
    create(c, tracker, metrics, refusals, "producer-poll")
        .context("cannot create the Kafka producer")
}

fn create(
    c: rdkafka::ClientConfig,
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    refusals: Option<Arc<Refusals>>,
    thread: &str,
) -> rdkafka::error::KafkaResult<Producer> {
    let owner = JournalOwner {
        tracker,
        metrics: metrics.clone(),
        refusals,
    };
    sink::create(&c, owner, metrics, thread)
}

/// A producer for records the brokers refused as too large: one record per batch and no
/// linger. Brokers apply `max.message.bytes` to whole batches, so a small record refused
/// beside a large one passes alone, and a re-encoded record is judged on its own size.
/// Its delivery reports feed the same watermark (the same sequence numbers).
pub(crate) fn repair_producer(
    k: &KafkaConfig,
    p: &PipelineConfig,
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    refusals: Arc<Refusals>,
) -> Result<Producer> {
    let mut c = client_config(k, p);
    c.set("batch.num.messages", "1");
    c.set("linger.ms", "0");
    // No statistics: this producer is not the watchdog's heartbeat.
    c.set("statistics.interval.ms", "0");
    create(c, tracker, metrics, Some(refusals), "producer-repair")
        .context("cannot create the Kafka producer for refused records")
}

/// Asks the brokers for the topic's metadata: proves they are reachable and the topic exists.
/// Returns the partition count.
pub(crate) fn probe(producer: &Producer, topic: &str, timeout: Duration) -> Result<usize> {
    let md = producer
        .client()
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| match producer.context().cause() {
            Some(c) => format!(
                "cannot reach the Kafka brokers within {timeout:?}: {c} (librdkafka: {})",
                producer.context().cause_reason()
            ),
            None => format!("cannot reach the Kafka brokers within {timeout:?}"),
        })?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        bail!("the brokers did not return metadata for topic {topic:?}");
    };
    if let Some(e) = t.error() {
        bail!(
            "topic {topic:?}: {}",
            rdkafka::types::RDKafkaErrorCode::from(e)
        );
    }
    Ok(t.partitions().len())
}
