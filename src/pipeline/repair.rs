//! What the shipping thread does with a record the brokers refused for its own fault
//! (`kafka::refusal`): the policies of `[delivery] on_too_large` and `on_topic_refused`.
//!
//! - `shrink` (too large): send it again alone in its batch (`delivery::repair_producer`),
//!   first unchanged (it may only have shared a batch with the record at fault: brokers
//!   judge whole batches against `max.message.bytes`), then re-encoded under a limit
//!   halved at each attempt, marked with the truncation field like any oversized entry;
//!   below the smallest limit it goes to the dead-letter topic.
//! - `dead-letter`: send the record unchanged to `delivery.dead_letter_topic`, with the
//!   error and the intended topic as headers.
//! - `stall`: fail it in the watermark, so the session ends and retries from the cursor
//!   before it until an operator acts (the behaviour before these policies existed).
//!
//! A repaired record keeps its sequence number, so it stays in flight until its new
//! delivery report: only it is sent again, never the window. Refusals of the fixed topic
//! (or the fallback) concern every record, not one: they end the session, which keeps
//! the cursor and retries with backoff. So does a refusal by the dead-letter topic.

use std::collections::HashMap;
use std::sync::Arc;

use super::control::Control;
use super::delivery::{self, Producer};
use crate::config::Config;
use crate::format::{self, Encoder};
use crate::kafka::{self, Action, Policy, Refusal, Refusals};
use crate::logging::RateLimit;
use crate::metrics::Metrics;

pub(super) struct Repairer {
    refusals: Arc<Refusals>,
    cfg: Config,
    policy: Policy,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    /// Made at the first refusal (most sessions never need it).
    producer: Option<Producer>,
    encoder: Encoder,
    payload: Vec<u8>,
    /// Attempts per refused record (by sequence number).
    attempts: HashMap<u64, u32>,
    /// Refused records handled in this session.
    settled: u64,
    log: RateLimit,
}

impl Repairer {
    pub(super) fn new(
        cfg: &Config,
        refusals: Arc<Refusals>,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> Repairer {
        Repairer {
            refusals,
            cfg: cfg.clone(),
            policy: Policy {
                on_too_large: cfg.delivery.on_too_large,
                on_topic_refused: cfg.delivery.on_topic_refused,
                dead_letter_topic: cfg.delivery.dead_letter_topic.clone(),
                // Topics every record may go to (the fixed topic, the fallback): their
                // refusals are not one record's fault.
                common_topics: cfg
                    .kafka
                    .fixed_topic()
                    .into_iter()
                    .chain(cfg.kafka.topic_fallback.as_deref())
                    .map(str::to_string)
                    .collect(),
                shrink_from: Some(cfg.encoding.max_record_bytes),
            },
            control,
            metrics,
            producer: None,
            encoder: Encoder::new(&cfg.encoding, &cfg.kafka).reserve(&cfg.delivery),
            payload: Vec::new(),
            attempts: HashMap::new(),
            settled: 0,
            log: RateLimit::default(),
        }
    }

    /// Whether this session has met refused records.
    pub(super) fn active(&self) -> bool {
        self.settled > 0
    }

    /// Applies the policy to every refused record waiting. False when the session must end.
    pub(super) fn repair_waiting(&mut self) -> bool {
        while let Some(r) = self.refusals.pop() {
            if self.producer.is_none() {
                match delivery::repair_producer(
                    &self.cfg.kafka,
                    &self.cfg.pipeline,
                    self.control.clone(),
                    self.metrics.clone(),
                    self.refusals.clone(),
                ) {
                    Ok(p) => self.producer = Some(p),
                    Err(e) => return self.fail(r, &format!("{e:#}")),
                }
            }
            let producer = self.producer.take().expect("made above");
            let go_on = self.settle(r, &producer);
            self.producer = Some(producer);
            if !go_on {
                return false;
            }
        }
        true
    }

    /// Applies the policy to one refused record. Returns false when the session must end.
    fn settle(&mut self, r: Refusal, producer: &Producer) -> bool {
        self.settled += 1;
        if self.attempts.len() > 100_000 {
            // Entries of records long settled: forget them rather than grow.
            self.attempts.clear();
        }
        let f = &r.refused;
        let attempt = self.attempts.get(&r.seq).copied().unwrap_or(0);
        match self
            .policy
            .decide(f.class, &f.topic, f.payload.len(), attempt)
        {
            Action::Fail(why) => self.fail(r, why),
            Action::Alone => {
                self.attempts.insert(r.seq, attempt + 1);
                let headers = kafka::owned_headers(&f.headers);
                self.send(&r, &f.topic, &f.payload, headers, producer)
            }
            Action::Shrink(limit) => {
                self.attempts.insert(r.seq, attempt + 1);
                self.shrink(r, limit, producer)
            }
            Action::DeadLetter => self.dead_letter(r, producer),
        }
    }

    fn shrink(&mut self, r: Refusal, limit: usize, producer: &Producer) -> bool {
        let f = &r.refused;
        let rebuilt = format::decode(&f.payload).and_then(format::to_entry);
        let (entry, prior) = match rebuilt {
            Ok(x) => x,
            Err(e) => {
                let why = format!("it cannot be re-encoded: {e:#}");
                return self.fail(r, &why);
            }
        };
        let mut payload = std::mem::take(&mut self.payload);
        if self.encoder.wants_observed_time() {
            self.encoder.observed_at(std::time::SystemTime::now());
        }
        self.encoder
            .encode_within(&entry, &mut payload, limit, prior);
        Metrics::add(&self.metrics.records_shrunk, 1);
        if self.log.admit("shrunk").is_some() {
            tracing::warn!(cursor = %r.cursor, topic = %f.topic, from = f.payload.len(), to = payload.len(), "the broker refused a record as too large; sending it again re-encoded smaller (marked in JOURNALD_KAFKA_TRUNCATED)");
        }
        let headers = kafka::owned_headers(&f.headers);
        let sent = self.send(&r, &f.topic, &payload, headers, producer);
        self.payload = payload;
        sent
    }

    fn send(
        &self,
        r: &Refusal,
        topic: &str,
        payload: &[u8],
        headers: rdkafka::message::OwnedHeaders,
        producer: &Producer,
    ) -> bool {
        delivery::send(
            producer,
            &self.control,
            r.seq,
            kafka::Outgoing {
                topic,
                payload,
                key: r.refused.key.as_deref(),
                headers,
                timestamp_ms: r.refused.timestamp_ms,
            },
        )
    }

    fn dead_letter(&mut self, r: Refusal, producer: &Producer) -> bool {
        self.attempts.remove(&r.seq);
        Metrics::add(&self.metrics.records_dead_lettered, 1);
        let f = &r.refused;
        let dlq = &self.policy.dead_letter_topic;
        if self.log.admit("dead-letter").is_some() {
            tracing::error!(cursor = %r.cursor, topic = %f.topic, error = %f.error, dead_letter_topic = %dlq, "the broker refused a record for good; sent it to the dead-letter topic (counted in records_dead_lettered)");
        }
        let headers = kafka::dead_letter_headers(f);
        self.send(&r, dlq, &f.payload, headers, producer)
    }

    fn fail(&mut self, r: Refusal, why: &str) -> bool {
        self.attempts.remove(&r.seq);
        self.metrics.failed(&r.refused.kind);
        self.control.record_failed(
            r.seq,
            format!(
                "delivery to topic {} failed: {} ({why}; the cursor stays before entry {})",
                r.refused.topic, r.refused.error, r.cursor
            ),
        );
        false
    }
}
