//! The producer: its creation, its delivery reports and its global errors.
//!
//! Delivery reports are the only source of "confirmed": they feed the watermark, and
//! nothing else may tell it that a record was delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer as _, ProducerContext};

use super::client::client_config;
use super::refusal::{self, Refusal, Refusals};
use crate::checkpoint::Tracker;
use crate::config::{KafkaConfig, PipelineConfig};
use crate::logging::RateLimit;
use crate::metrics::Metrics;

/// Delivery opaque of records that are not journal entries (the exactly-once cursor
/// record): their reports never touch the watermark.
pub(crate) const CONTROL: usize = usize::MAX;

/// Delivery opaque of progress records: never the watermark's either.
pub(crate) const PROGRESS: usize = usize::MAX - 1;

/// Receives delivery reports and global errors from librdkafka (on its polling thread).
pub(crate) struct DeliveryContext {
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    /// Where records refused for their own fault go, when a policy other than "stall"
    /// takes care of them; `None`: every failure fails the session.
    refusals: Option<Arc<Refusals>>,
    repeats: RateLimit,
    /// Why the brokers could not be reached, last time librdkafka said; logged when it
    /// changes (not on every retry) and cleared by the next delivery.
    cause: std::sync::atomic::AtomicU8,
    /// librdkafka's words for the last classified failure (which certificate check
    /// failed, say): errors are rare, so a lock is fine.
    cause_reason: std::sync::Mutex<String>,
    /// Callbacks served (deliveries, statistics, errors, log lines): the polling thread
    /// drains events while this moves.
    served: AtomicU64,
}

impl DeliveryContext {
    /// The last classified connection failure, if the brokers have not answered since.
    pub(crate) fn cause(&self) -> Option<super::Cause> {
        super::Cause::from_u8(self.cause.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// librdkafka's text for the last classified failure.
    pub(crate) fn cause_reason(&self) -> String {
        self.cause_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the cause (delivery thread, error callback); says so only when it changes.
    fn set_cause(&self, c: Option<super::Cause>) {
        let new = c.map_or(0, super::Cause::as_u8);
        let old = self.cause.swap(new, std::sync::atomic::Ordering::Relaxed);
        if old != new {
            match c {
                Some(c) => {
                    tracing::error!(
                        "cannot connect to the brokers: {c}; the cursor stays where it is and the agent keeps retrying"
                    );
                    self.metrics
                        .error(format!("cannot connect to the brokers: {c}"));
                }
                None => tracing::info!("the brokers answer again"),
            }
        }
    }
}

/// librdkafka's log lines into ours, for every producer (`input` says whose). librdkafka
/// repeats connection failures on every attempt; one line a minute per kind of message is
/// enough (the key ignores its "N identical suppressed" suffix).
pub(crate) fn log_line(
    repeats: &RateLimit,
    input: &str,
    level: RDKafkaLogLevel,
    fac: &str,
    msg: &str,
) {
    let key: String = format!("{fac}:{}", msg.chars().take(80).collect::<String>());
    let Some(repeats) = repeats.admit(&key) else {
        return;
    };
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", input, repeats, "{fac}: {msg}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", input, repeats, "{fac}: {msg}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", input, "{fac}: {msg}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", input, "{fac}: {msg}"),
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        log_line(&self.repeats, "journal", level, fac, msg);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.served.fetch_add(1, Ordering::Relaxed);
        // Statistics arrive from librdkafka's polling thread: proof that it is not wedged.
        self.tracker.producer_beat();
        self.metrics.librdkafka_stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let code = error.rdkafka_error_code();
        if code == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            if self
                .metrics
                .broker_up
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                self.metrics.error(format!("no broker answers: {reason}"));
            }
            self.metrics.broker_state(false);
        }
        if let Some(c) = super::classify(code, reason) {
            *self.cause_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
            self.set_cause(Some(c));
            self.metrics.broker_state(false);
        }
        let fatal = error
            .rdkafka_error_code()
            .is_some_and(|c| c == rdkafka::types::RDKafkaErrorCode::Fatal);
        if fatal {
            // A fatal error (for instance a broken idempotent-producer sequence) makes this
            // producer unusable: end the session and start over from the safe cursor.
            tracing::error!(%error, reason, "fatal producer error; restarting from the last safe cursor");
            self.tracker
                .fail_all(format!("fatal producer error: {reason}"));
        } else if let Some(repeats) = self.repeats.admit(&error.to_string()) {
            // Transient: broker down, connection refused... librdkafka keeps retrying.
            tracing::warn!(%error, reason, repeats_in_last_minute = repeats, "kafka client error");
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if result.is_ok() {
            // An acknowledgement is the surest sign a broker answers (readiness).
            self.metrics.broker_state(true);
        }
        if seq == PROGRESS {
            if let Err((e, _)) = result {
                tracing::warn!(error = %e, "a progress record was not delivered; audit will see that window as unaccounted");
            }
            return;
        }
        if seq == CONTROL {
            // A failure means the transaction that carries it cannot commit; say why.
            self.tracker.control_answered(
                result
                    .as_ref()
                    .err()
                    .map(|(e, _)| format!("the cursor record was not delivered: {e}")),
            );
            return;
        }
        match result {
            Ok(_) => {
                if self.cause.load(std::sync::atomic::Ordering::Relaxed) != 0 {
                    self.set_cause(None);
                }
                self.metrics.delivered();
                if let Some(latency) = self.tracker.delivered(seq as u64) {
                    self.metrics.delivery_latency.observe(latency.as_secs_f64());
                }
            }
            Err((e, msg)) => {
                use rdkafka::message::{Headers, Message};
                let class = e.rdkafka_error_code().and_then(refusal::classify);
                if let (Some(class), Some(refusals)) = (class, &self.refusals) {
                    // The record's own fault: the shipping thread applies the policy; the
                    // record stays in flight meanwhile.
                    Metrics::add(&self.metrics.records_refused, 1);
                    let cursor = msg
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == crate::format::CURSOR_HEADER))
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default();
                    refusals.push(Refusal {
                        seq: seq as u64,
                        class,
                        kind: e
                            .rdkafka_error_code()
                            .map_or_else(|| "Other".to_string(), |c| format!("{c:?}")),
                        error: e.to_string(),
                        topic: msg.topic().to_string(),
                        key: msg.key().map(<[u8]>::to_vec),
                        payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        cursor,
                        timestamp_ms: msg.timestamp().to_millis().unwrap_or(0),
                        extra_headers: msg
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .filter(|h| {
                                        h.key != crate::format::CURSOR_HEADER
                                            && h.key != crate::format::FORMAT_HEADER
                                    })
                                    .map(|h| {
                                        (h.key.to_string(), h.value.unwrap_or_default().to_vec())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    });
                    return;
                }
                let kind = e
                    .rdkafka_error_code()
                    .map_or_else(|| "Other".to_string(), |c| format!("{c:?}"));
                self.metrics.failed(&kind);
                let error = format!("delivery to topic {} failed: {e}", msg.topic());
                // Logged once per session by the pipeline; one line per record would flood.
                tracing::debug!(seq, "{error}");
                self.tracker.failed(seq as u64, error);
            }
        }
    }
}

/// librdkafka's producer and the thread that serves its events (delivery reports,
/// statistics, errors).
///
/// Not rdkafka's `ThreadedProducer`: its thread calls `poll(100 ms)`, which loops until
/// its deadline and, once less than a millisecond is left, polls without blocking — a
/// busy wait at the end of every call. Measured on an idle agent: 0.87 % of a core in
/// that thread alone (30 s idle: 0.26 s of CPU), most of it reading the clock (#19).
/// This thread drains the events that are there without blocking and then sleeps: 100 ms
/// when no record is in flight; while records are, 2 ms after a drain that served reports
/// (a backlog: reports free room in the window), doubling up to 16 ms while drains find
/// nothing (live load: reports come once per produce response, every `linger.ms`; waking
/// every 2 ms for them was 9 % of the agent's CPU at 10,000 entries/s, #19).
#[derive(Clone)]
pub(crate) struct Producer {
    inner: Arc<BaseProducer<DeliveryContext>>,
    /// Stops and joins the polling thread when the last clone goes.
    _poller: Arc<Poller>,
}

/// The thread that serves a producer's events; stops and joins it when dropped.
pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleep between drains while records are in flight (from the shortest, after a drain
/// that served something, doubling to the longest), and while none are.
const POLL_BUSY_MIN: Duration = Duration::from_millis(2);
const POLL_BUSY_MAX: Duration = Duration::from_millis(16);
const POLL_IDLE: Duration = Duration::from_millis(100);

/// At most this many events per drain, so a stop is noticed under any load.
const DRAIN_MAX: u32 = 1024;

impl Producer {
    fn start(inner: BaseProducer<DeliveryContext>) -> Producer {
        let inner = Arc::new(inner);
        Producer {
            _poller: Arc::new(Poller::start("producer-poll", inner.clone(), |c| {
                c.served.load(Ordering::Relaxed)
            })),
            inner,
        }
    }
}

impl Poller {
    /// Serves `p`'s events on a thread of its own until dropped. `served` counts the
    /// callbacks run so far: the thread drains while it moves.
    pub(crate) fn start<C: ProducerContext + 'static>(
        name: &str,
        p: Arc<BaseProducer<C>>,
        served: fn(&C) -> u64,
    ) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let mut nap = POLL_BUSY_MIN;
                    while !stop.load(Ordering::Relaxed) {
                        // poll(0) serves at most one event; go on while callbacks run.
                        let start = served(p.context());
                        for _ in 0..DRAIN_MAX {
                            let before = served(p.context());
                            p.poll(Duration::ZERO);
                            if served(p.context()) == before {
                                break;
                            }
                        }
                        nap = if p.in_flight_count() == 0 {
                            POLL_IDLE
                        } else if served(p.context()) != start {
                            POLL_BUSY_MIN
                        } else {
                            (nap * 2).clamp(POLL_BUSY_MIN, POLL_BUSY_MAX)
                        };
                        std::thread::sleep(nap);
                    }
                })
                .expect("spawn the producer's polling thread")
        };
        Poller {
            stop,
            thread: Some(thread),
        }
    }
}

impl std::ops::Deref for Producer {
    type Target = BaseProducer<DeliveryContext>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

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
    create(c, tracker, metrics, refusals).context("cannot create the Kafka producer")
}

fn create(
    c: rdkafka::ClientConfig,
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    refusals: Option<Arc<Refusals>>,
) -> rdkafka::error::KafkaResult<Producer> {
    c.create_with_context(DeliveryContext {
        tracker,
        metrics,
        refusals,
        repeats: RateLimit::default(),
        cause: std::sync::atomic::AtomicU8::new(0),
        cause_reason: std::sync::Mutex::new(String::new()),
        served: AtomicU64::new(0),
    })
    .map(Producer::start)
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
    create(c, tracker, metrics, Some(refusals))
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
