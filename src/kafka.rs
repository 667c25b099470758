//! The Kafka stage: the librdkafka producer, its configuration and its delivery reports.
//!
//! Owns the one producer of the process and the translation of delivery reports into
//! watermark updates. It must never report an entry as delivered unless the broker
//! acknowledged it (acks=all, idempotent), and never let a user property weaken that.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};

use crate::checkpoint::Tracker;
use crate::config::{KafkaConfig, PipelineConfig};
use crate::metrics::Metrics;

/// Header carrying the entry's journal cursor on every record.
pub const CURSOR_HEADER: &str = "journal-cursor";
/// Header carrying the record layout version (see `docs/format.md`).
pub const FORMAT_HEADER: &str = "journal-format";

/// Delivery opaque of records that are not journal entries (the exactly-once cursor
/// record): their reports never touch the watermark.
pub const CONTROL: usize = usize::MAX;

/// librdkafka statistics interval: the producer's heartbeat.
pub const STATS_INTERVAL_MS: &str = "5000";

/// Properties the agent sets itself and that users may not override, with the reason.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    (
        "transactional.id",
        "reserved for the exactly-once delivery mode",
    ),
    (
        "enable.gapless.guarantee",
        "the agent's own watermark already prevents gaps",
    ),
];

/// Checks one user-supplied librdkafka property against the delivery guarantee.
pub fn check_user_property(name: &str, value: &str) -> Result<(), String> {
    if let Some((_, why)) = RESERVED.iter().find(|(n, _)| *n == name) {
        return Err(format!("cannot be set here: {why}"));
    }
    match name {
        "acks" | "request.required.acks" if !matches!(value, "all" | "-1") => {
            return Err(format!(
                "{value:?} would confirm entries before every in-sync replica has them; only \"all\" is allowed"
            ));
        }
        "enable.idempotence" if value != "true" => {
            return Err(
                "must stay true: without it a retried batch can be duplicated or reordered".into(),
            );
        }
        "message.timeout.ms" | "delivery.timeout.ms" => {
            let ms: u64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not a number of milliseconds"))?;
            if ms != 0 && ms < 300_000 {
                return Err(format!(
                    "{ms} ms would give up on entries during a short broker outage; use 0 (never) or at least 300000"
                ));
            }
        }
        "max.in.flight.requests.per.connection" | "max.in.flight" => {
            let n: u64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not a number"))?;
            if !(1..=5).contains(&n) {
                return Err("must be between 1 and 5 with the idempotent producer".into());
            }
        }
        _ => {}
    }
    Ok(())
}

/// The producer configuration: throughput-minded defaults, then the user's properties, then
/// the settings the guarantee depends on (which the user cannot change, see above).
pub fn client_config(k: &KafkaConfig, p: &PipelineConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    // Defaults, each chosen for an agent that ships many small records (docs/configuration.md).
    let queue_kbytes = (p.max_in_flight_bytes / 1024 + 1024).to_string();
    let queue_messages = (p.max_in_flight_entries + 1000).to_string();
    // gethostname(2), not /proc/sys: the unit's ProcSubset=pid hides /proc/sys.
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let defaults: &[(&str, &str)] = &[
        ("client.id", &format!("journald-kafka@{}", hostname.trim())),
        ("compression.codec", "lz4"),
        ("linger.ms", "100"),
        ("batch.num.messages", "10000"),
        ("batch.size", "1000000"),
        ("message.max.bytes", "1000000"),
        // The window bounds memory; librdkafka's queue only has to hold the window.
        ("queue.buffering.max.messages", &queue_messages),
        ("queue.buffering.max.kbytes", &queue_kbytes),
        // Never give up on an entry because the broker is away: the reader waits instead.
        ("message.timeout.ms", "0"),
        ("socket.keepalive.enable", "true"),
        ("reconnect.backoff.max.ms", "5000"),
        // Statistics double as the producer's heartbeat for the systemd watchdog.
        ("statistics.interval.ms", STATS_INTERVAL_MS),
        // librdkafka connects only when it needs to; a metadata refresh every 30 s keeps a
        // connection, so readiness tells whether a broker is reachable even when idle.
        ("topic.metadata.refresh.interval.ms", "30000"),
    ];
    for (key, value) in defaults {
        c.set(*key, *value);
    }
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    c.set("bootstrap.servers", &k.brokers);
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c
}

/// Receives delivery reports and global errors from librdkafka (on its polling thread).
pub struct DeliveryContext {
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    repeats: RateLimit,
}

/// Keeps repeating messages (a broker that stays down is reported on every reconnect
/// attempt, often as two alternating errors) to one line per message per minute, with the
/// number of repeats in between.
#[derive(Default)]
pub struct RateLimit(
    std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
);

impl RateLimit {
    /// Returns `Some(repeats suppressed since the last line)` when `msg` should be logged.
    pub fn admit(&self, msg: &str) -> Option<u64> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 64 {
            // Messages with ever-changing text: forget old ones rather than grow.
            g.clear();
        }
        match g.get_mut(msg) {
            Some((at, n)) if at.elapsed() < Duration::from_secs(60) => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let suppressed = *n;
                *at = std::time::Instant::now();
                *n = 0;
                Some(suppressed)
            }
            None => {
                g.insert(msg.to_string(), (std::time::Instant::now(), 0));
                Some(0)
            }
        }
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        // librdkafka repeats connection failures on every attempt; one line a minute per
        // kind of message is enough (the key ignores its "N identical suppressed" suffix).
        let key: String = format!("{fac}:{}", msg.chars().take(80).collect::<String>());
        let Some(repeats) = self.repeats.admit(&key) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", repeats, "{fac}: {msg}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", repeats, "{fac}: {msg}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {msg}"),
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        // Statistics arrive from librdkafka's polling thread: proof that it is not wedged.
        self.tracker.producer_beat();
        self.metrics.librdkafka_stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
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
                self.metrics.delivered();
                if let Some(latency) = self.tracker.delivered(seq as u64) {
                    self.metrics.delivery_latency.observe(latency.as_secs_f64());
                }
            }
            Err((e, msg)) => {
                let kind = e
                    .rdkafka_error_code()
                    .map_or_else(|| "Other".to_string(), |c| format!("{c:?}"));
                self.metrics.failed(&kind);
                use rdkafka::message::Message;
                let error = format!("delivery to topic {} failed: {e}", msg.topic());
                // Logged once per session by the pipeline; one line per record would flood.
                tracing::debug!(seq, "{error}");
                self.tracker.failed(seq as u64, error);
            }
        }
    }
}

pub type Producer = ThreadedProducer<DeliveryContext>;

/// What makes a producer transactional (exactly-once mode).
pub struct Transactional<'a> {
    pub id: &'a str,
    pub timeout_ms: u64,
}

/// Creates the producer. librdkafka connects lazily; see [`probe`] to check reachability.
pub fn producer(
    k: &KafkaConfig,
    p: &PipelineConfig,
    transactional: Option<Transactional<'_>>,
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
) -> Result<Producer> {
    let mut c = client_config(k, p);
    if let Some(t) = transactional {
        c.set("transactional.id", t.id);
        c.set("transaction.timeout.ms", t.timeout_ms.to_string());
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms. A record that
        // times out aborts its transaction and the reader rewinds, so nothing is lost.
        c.set("message.timeout.ms", t.timeout_ms.to_string());
    }
    c.create_with_context(DeliveryContext {
        tracker,
        metrics,
        repeats: RateLimit::default(),
    })
    .context("cannot create the Kafka producer")
}

/// Asks the brokers for the topic's metadata: proves they are reachable and the topic exists.
/// Returns the partition count.
pub fn probe(producer: &Producer, topic: &str, timeout: Duration) -> Result<usize> {
    let md = producer
        .client()
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot reach the Kafka brokers within {timeout:?}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn guarantee_settings_win_over_user_properties() {
        let c = config::parse("[kafka]\nbrokers = \"h:1\"\ntopic = \"t\"\n[kafka.properties]\n\"linger.ms\" = 5\n\"compression.codec\" = \"zstd\"\n").unwrap();
        let cc = client_config(&c.kafka, &c.pipeline);
        assert_eq!(cc.get("linger.ms"), Some("5"));
        assert_eq!(cc.get("compression.codec"), Some("zstd"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("bootstrap.servers"), Some("h:1"));
        assert_eq!(cc.get("message.timeout.ms"), Some("0"));
    }

    #[test]
    fn repeated_errors_are_rate_limited() {
        let r = RateLimit::default();
        assert_eq!(r.admit("down"), Some(0));
        assert_eq!(r.admit("down"), None);
        assert_eq!(r.admit("down"), None);
        assert_eq!(r.admit("other"), Some(0));
        assert_eq!(
            r.admit("down"),
            None,
            "alternating messages are limited each on its own"
        );
        assert_eq!(r.admit("other"), None);
    }

    #[test]
    fn weakening_values_are_refused() {
        assert!(check_user_property("acks", "1").is_err());
        assert!(check_user_property("acks", "all").is_ok());
        assert!(check_user_property("request.required.acks", "-1").is_ok());
        assert!(check_user_property("enable.idempotence", "false").is_err());
        assert!(check_user_property("message.timeout.ms", "299999").is_err());
        assert!(check_user_property("message.timeout.ms", "0").is_ok());
        assert!(check_user_property("delivery.timeout.ms", "600000").is_ok());
        assert!(check_user_property("max.in.flight.requests.per.connection", "6").is_err());
        assert!(check_user_property("transactional.id", "x").is_err());
        assert!(check_user_property("security.protocol", "ssl").is_ok());
    }
}
