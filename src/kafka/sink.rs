//! The output seam every input hands its records to: one producer type, one way of putting
//! a record on the wire, and one reading of what librdkafka says about it.
//!
//! An input implements [`Owner`] for its records: the sink classifies each delivery
//! report once (acknowledged; refused for the record's own fault, see `refusal`; failed
//! for any other reason) and hands it back, with the input's token, to the owner. Client
//! events are read here for every input alike: librdkafka's log lines, why the brokers
//! cannot be reached (`cause`, logged when it changes), the broker state readiness
//! reads, a fatal error. What an input's records look like (headers, topic, key) is the
//! input's; waiting for room when librdkafka's queue is full is the input's too (a thread
//! sleeps, a connection task yields), so [`Producer::try_send`] hands the record back.
//!
//! Who touches what:
//!
//! | field                     | input thread (`try_send`)  | polling thread (`Poller`): reports, errors, statistics |
//! |---------------------------|----------------------------|----------------------------------------------------------|
//! | `SinkContext::owner`      | through the owner's own API | calls its callbacks                                      |
//! | `cause`, `cause_reason`   | reads (`probe` errors)     | writes                                                   |
//! | `served`                  | —                          | counts callbacks; the poller drains while it moves       |
//!
//! It must never tell an owner "acknowledged" for anything but a successful delivery
//! report (acks=all, idempotent: `client`), and never drop a report: every record handed
//! to librdkafka comes back to its owner exactly once.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::util::IntoOpaque;

use super::refusal::{self, Class};
use super::{Cause, classify};
use crate::logging::RateLimit;
use crate::metrics::Metrics;

/// What an input does with the fate of each record it gave the sink. Called on the
/// producer's polling thread: no blocking, no producing on the same producer's behalf
/// beyond a non-blocking send.
pub(crate) trait Owner: Send + Sync + 'static {
    /// What names a record to its input (the journal: its sequence number in the
    /// watermark; Forward: its chunk).
    type Token: IntoOpaque;
    /// Whose producer this is, in librdkafka's log lines.
    const INPUT: &'static str;
    /// The broker acknowledged the record (`len`: its payload's length).
    fn acknowledged(&self, token: Self::Token, len: usize);
    /// The broker refused the record for its own fault: the input's refusal policy
    /// decides (`refusal::Policy`).
    fn refused(&self, token: Self::Token, refused: Refused);
    /// The record was not delivered for another reason (`kind`: librdkafka's code name).
    fn failed(&self, token: Self::Token, len: usize, kind: String, error: String);
    /// librdkafka declared the producer unusable: nothing more will be confirmed by it.
    fn fatal(&self, reason: &str);
    /// librdkafka's statistics arrived: the polling thread is alive.
    fn statistics(&self) {}
}

/// A record refused for its own fault, as the delivery report returned it: everything
/// needed to send it again or to the dead-letter topic.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub(crate) class: Class,
    /// The librdkafka error code's name, for the failure counter.
    pub(crate) kind: String,
    pub(crate) error: String,
    pub(crate) topic: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
    pub(crate) timestamp_ms: i64,
    /// Every header it carried, in order.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

impl Refused {
    /// One header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// How far in the future a record's time may lie before it gets the current time instead.
/// Brokers refuse records from the future (Kafka's `message.timestamp.after.max.ms`, one
/// hour by default) with a permanent error, and data written under a wrong clock must not
/// wedge an input. Every input keeps the original time in its record.
pub(crate) const FUTURE_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// `ts` (ms) when it is not too far ahead of `now_ms`; else the caller uses the current
/// time and counts it (`timestamps_clamped`).
pub(crate) fn within_tolerance(ts: i64, now_ms: i64) -> Option<i64> {
    (ts <= now_ms.saturating_add(FUTURE_TOLERANCE_MS)).then_some(ts)
}

/// Headers from (name, value) pairs.
pub(crate) fn owned_headers(pairs: &[(String, Vec<u8>)]) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(pairs.len() + 2);
    for (k, v) in pairs {
        h = h.insert(Header {
            key: k.as_str(),
            value: Some(v.as_slice()),
        });
    }
    h
}

/// The headers of a dead-lettered record: its own, then why and where it was meant to go.
pub(crate) fn dead_letter_headers(r: &Refused) -> OwnedHeaders {
    owned_headers(&r.headers)
        .insert(Header {
            key: crate::format::DEAD_LETTER_ERROR_HEADER,
            value: Some(r.error.as_bytes()),
        })
        .insert(Header {
            key: crate::format::DEAD_LETTER_TOPIC_HEADER,
            value: Some(r.topic.as_bytes()),
        })
}

/// One record, ready to send.
pub(crate) struct Outgoing<'a> {
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a [u8],
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) headers: OwnedHeaders,
    pub(crate) timestamp_ms: i64,
}

/// What became of a record handed to librdkafka.
#[must_use]
pub(crate) enum Sent<'a, T> {
    /// Queued: its delivery report will come to the owner.
    Queued,
    /// The queue is full: here it is back; wait for deliveries, then hand it over again.
    Full(Outgoing<'a>, T),
    /// librdkafka refused the record itself (too large for `message.max.bytes`, an
    /// unknown partition...): no delivery report will come.
    Refused(KafkaError, T),
}

/// Receives a producer's delivery reports and client events (on its polling thread).
pub(crate) struct SinkContext<O: Owner> {
    owner: O,
    metrics: Arc<Metrics>,
    repeats: RateLimit,
    /// Why the brokers could not be reached, last time librdkafka said; logged when it
    /// changes (not on every retry) and cleared by the next delivery.
    cause: AtomicU8,
    /// librdkafka's words for the last classified failure (which certificate check
    /// failed, say): errors are rare, so a lock is fine.
    cause_reason: Mutex<String>,
    /// Callbacks served (deliveries, statistics, errors, log lines).
    served: AtomicU64,
}

impl<O: Owner> SinkContext<O> {
    pub(crate) fn owner(&self) -> &O {
        &self.owner
    }

    /// The last classified connection failure, if the brokers have not answered since.
    pub(crate) fn cause(&self) -> Option<Cause> {
        Cause::from_u8(self.cause.load(Ordering::Relaxed))
    }

    /// librdkafka's text for the last classified failure.
    pub(crate) fn cause_reason(&self) -> String {
        self.cause_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the cause; says so only when it changes.
    fn set_cause(&self, c: Option<Cause>) {
        let new = c.map_or(0, Cause::as_u8);
        let old = self.cause.swap(new, Ordering::Relaxed);
        if old != new {
            match c {
                Some(c) => {
                    tracing::error!(
                        input = O::INPUT,
                        "cannot connect to the brokers: {c}; nothing is confirmed or acknowledged meanwhile and the agent keeps retrying"
                    );
                    self.metrics
                        .error(format!("cannot connect to the brokers: {c}"));
                }
                None => tracing::info!(input = O::INPUT, "the brokers answer again"),
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

impl<O: Owner> ClientContext for SinkContext<O> {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        super::msk_iam::oauth_token(config)
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        log_line(&self.repeats, O::INPUT, level, fac, msg);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.owner.statistics();
        self.metrics.librdkafka_stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            if self.metrics.broker_up.load(Ordering::Relaxed) {
                self.metrics.error(format!("no broker answers: {reason}"));
            }
            self.metrics.broker_state(false);
        }
        if let Some(c) = classify(code, reason) {
            *self.cause_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
            self.set_cause(Some(c));
            self.metrics.broker_state(false);
        }
        if code == Some(RDKafkaErrorCode::Fatal) {
            self.owner.fatal(reason);
        } else if let Some(repeats) = self.repeats.admit(&error.to_string()) {
            // Transient: broker down, connection refused... librdkafka keeps retrying.
            tracing::warn!(input = O::INPUT, %error, reason, repeats_in_last_minute = repeats, "kafka client error");
        }
    }
}

impl<O: Owner> ProducerContext for SinkContext<O> {
    type DeliveryOpaque = O::Token;

    fn delivery(&self, result: &DeliveryResult<'_>, token: O::Token) {
        self.served.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(m) => {
                // An acknowledgement is the surest sign a broker answers (readiness).
                self.metrics.broker_state(true);
                if self.cause.load(Ordering::Relaxed) != 0 {
                    self.set_cause(None);
                }
                self.owner.acknowledged(token, m.payload_len());
            }
            Err((e, msg)) => {
                let code = e.rdkafka_error_code();
                let kind = code.map_or_else(|| "Other".to_string(), |c| format!("{c:?}"));
                match code.and_then(refusal::classify) {
                    Some(class) => self.owner.refused(
                        token,
                        Refused {
                            class,
                            kind,
                            error: e.to_string(),
                            topic: msg.topic().to_string(),
                            key: msg.key().map(<[u8]>::to_vec),
                            payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                            timestamp_ms: msg.timestamp().to_millis().unwrap_or(0),
                            headers: msg
                                .headers()
                                .map(|h| {
                                    h.iter()
                                        .map(|h| {
                                            (
                                                h.key.to_string(),
                                                h.value.unwrap_or_default().to_vec(),
                                            )
                                        })
                                        .collect()
                                })
                                .unwrap_or_default(),
                        },
                    ),
                    None => self.owner.failed(
                        token,
                        msg.payload_len(),
                        kind,
                        format!("delivery to topic {} failed: {e}", msg.topic()),
                    ),
                }
            }
        }
    }
}

/// librdkafka's producer and the thread that serves its events (delivery reports,
/// statistics, errors). Clones share both; the last one stops the thread.
///
/// Not rdkafka's `ThreadedProducer`: its thread calls `poll(100 ms)`, which loops until
/// its deadline and, once less than a millisecond is left, polls without blocking — a
/// busy wait at the end of every call. Measured on an idle agent: 0.87 % of a core in
/// that thread alone (30 s idle: 0.26 s of CPU), most of it reading the clock (#19).
/// The [`Poller`] drains the events that are there without blocking and then sleeps.
pub(crate) struct Producer<O: Owner> {
    inner: Arc<BaseProducer<SinkContext<O>>>,
    _poller: Arc<Poller>,
}

impl<O: Owner> Clone for Producer<O> {
    fn clone(&self) -> Self {
        Producer {
            inner: self.inner.clone(),
            _poller: self._poller.clone(),
        }
    }
}

impl<O: Owner> std::ops::Deref for Producer<O> {
    type Target = BaseProducer<SinkContext<O>>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

/// Makes a producer whose reports go to `owner`; its polling thread is named `thread`.
pub(crate) fn create<O: Owner>(
    c: &rdkafka::ClientConfig,
    owner: O,
    metrics: Arc<Metrics>,
    thread: &str,
) -> KafkaResult<Producer<O>> {
    let inner: BaseProducer<SinkContext<O>> = c.create_with_context(SinkContext {
        owner,
        metrics,
        repeats: RateLimit::default(),
        cause: AtomicU8::new(0),
        cause_reason: Mutex::new(String::new()),
        served: AtomicU64::new(0),
    })?;
    let inner = Arc::new(inner);
    Ok(Producer {
        _poller: Arc::new(Poller::start(thread, inner.clone())),
        inner,
    })
}

impl<O: Owner> Producer<O> {
    /// Hands a record to librdkafka; when it does not take it, the token comes back (and
    /// the record, when it may be handed over again).
    pub(crate) fn try_send<'a>(&self, r: Outgoing<'a>, token: O::Token) -> Sent<'a, O::Token> {
        let mut record = BaseRecord::with_opaque_to(r.topic, token)
            .payload(r.payload)
            .headers(r.headers)
            .timestamp(r.timestamp_ms);
        if let Some(k) = r.key {
            record = record.key(k);
        }
        match self.inner.send(record) {
            Ok(()) => Sent::Queued,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => Sent::Full(
                Outgoing {
                    topic: back.topic,
                    payload: back.payload.unwrap_or_default(),
                    key: back.key,
                    headers: back.headers.unwrap_or_default(),
                    timestamp_ms: back.timestamp.unwrap_or(r.timestamp_ms),
                },
                back.delivery_opaque,
            ),
            Err((e, back)) => Sent::Refused(e, back.delivery_opaque),
        }
    }
}

/// The thread that serves a producer's events; stops and joins it when dropped.
///
/// It drains the events that are there without blocking and then sleeps: 100 ms when no
/// record is in flight; while records are, 2 ms after a drain that served reports (a
/// backlog: reports free room in the window), doubling up to 16 ms while drains find
/// nothing (live load: reports come once per produce response, every `linger.ms`; waking
/// every 2 ms for them was 9 % of the agent's CPU at 10,000 entries/s, #19).
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

impl Poller {
    fn start<O: Owner>(name: &str, p: Arc<BaseProducer<SinkContext<O>>>) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let served = |p: &BaseProducer<SinkContext<O>>| p.context().served.load(Ordering::Relaxed);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    let mut nap = POLL_BUSY_MIN;
                    while !stop.load(Ordering::Relaxed) {
                        // poll(0) serves at most one event; go on while callbacks run.
                        let start = served(&p);
                        for _ in 0..DRAIN_MAX {
                            let before = served(&p);
                            p.poll(Duration::ZERO);
                            if served(&p) == before {
                                break;
                            }
                        }
                        nap = if p.in_flight_count() == 0 {
                            POLL_IDLE
                        } else if served(&p) != start {
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
