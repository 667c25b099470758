//! The librdkafka properties: the one owner of what every client is given and of which
//! user properties are allowed. Every rule about them lives here: the user's properties
//! are checked when the file is read (so a refused one is named with its line before
//! anything connects), each client's properties are built here (defaults, then the user's,
//! then what its role needs, then the guarantee), and the limits that tie them to the rest
//! of the configuration are checked here.
//!
//! It hands out name/value pairs, never an rdkafka type: `kafka::client` turns them into a
//! client configuration and adds the secrets, which never pass through here. It must never
//! let a user property weaken the guarantee: acks=all and idempotence are set last, over
//! the user's, so even a property the list below misses cannot weaken them.

use std::collections::BTreeMap;

use super::{DEFAULT_MAX_RECORD_BYTES, EncodingConfig, KafkaConfig, PipelineConfig};

/// librdkafka's statistics interval by default: the journal producer's heartbeat.
const STATS_INTERVAL_MS: u64 = 5000;

/// Property prefixes that concern reaching the brokers (address, TLS, SASL): what helper
/// clients (admin, cursor reader, `cat`, `verify`) share with the producer.
const CONNECTION_PREFIXES: &[&str] = &["security.", "sasl.", "ssl.", "socket.", "broker.address."];

/// Which producer the properties are for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Producer<'a> {
    /// The journal's producer (at-least-once).
    Journal,
    /// The journal's producer in exactly-once mode.
    Transactional { id: &'a str, timeout_ms: u64 },
    /// The journal's producer for records refused as too large.
    JournalRepair,
    /// The Forward input's producer: clients wait for their acks, and their messages may
    /// be larger than a journal record.
    Forward {
        max_message_bytes: usize,
        max_in_flight_bytes: usize,
    },
    /// The Forward input's producer for refused events.
    ForwardRepair {
        max_message_bytes: usize,
        max_in_flight_bytes: usize,
    },
}

/// A client's librdkafka properties, secrets aside, in the order they are to be set
/// (later ones win).
pub(crate) type Properties = Vec<(String, String)>;

fn push(out: &mut Properties, key: &str, value: impl ToString) {
    out.push((key.to_string(), value.to_string()));
}

/// The properties of `which` producer: throughput-minded defaults (docs/configuration.md),
/// then the user's, then what the role needs, then the guarantee.
pub(crate) fn producer(k: &KafkaConfig, p: &PipelineConfig, which: Producer<'_>) -> Properties {
    let window_bytes = match which {
        Producer::Forward {
            max_in_flight_bytes,
            ..
        }
        | Producer::ForwardRepair {
            max_in_flight_bytes,
            ..
        } => max_in_flight_bytes,
        _ => p.max_in_flight_bytes,
    };
    // gethostname(2), not /proc/sys: the unit's ProcSubset=pid hides /proc/sys.
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let mut out = Properties::new();
    let c = &mut out;
    push(
        c,
        "client.id",
        format!("journald-kafka@{}", hostname.trim()),
    );
    push(c, "compression.codec", "lz4");
    push(c, "linger.ms", 100);
    push(c, "batch.num.messages", 10000);
    push(c, "batch.size", 1000000);
    push(c, "message.max.bytes", 1000000);
    // The window bounds memory; librdkafka's queue only has to hold the window.
    push(
        c,
        "queue.buffering.max.messages",
        p.max_in_flight_entries + 1000,
    );
    push(c, "queue.buffering.max.kbytes", window_bytes / 1024 + 1024);
    // Never give up on an entry because the broker is away: the reader waits instead.
    push(c, "message.timeout.ms", 0);
    push(c, "socket.keepalive.enable", "true");
    push(c, "reconnect.backoff.max.ms", 5000);
    // Statistics double as the journal producer's heartbeat for the systemd watchdog.
    push(c, "statistics.interval.ms", STATS_INTERVAL_MS);
    // librdkafka connects only when it needs to; a metadata refresh every 30 s keeps a
    // connection, so readiness tells whether a broker is reachable even when idle.
    push(c, "topic.metadata.refresh.interval.ms", 30000);
    for (key, value) in &k.properties {
        push(c, key, value);
    }
    match which {
        Producer::Journal => {}
        Producer::Transactional { id, timeout_ms } => {
            push(c, "transactional.id", id);
            push(c, "transaction.timeout.ms", timeout_ms);
            // librdkafka requires message.timeout.ms <= transaction.timeout.ms. A record
            // that times out aborts its transaction and the reader rewinds: nothing is lost.
            push(c, "message.timeout.ms", timeout_ms);
        }
        Producer::JournalRepair => one_per_batch(c),
        Producer::Forward {
            max_message_bytes, ..
        } => forward(c, k, max_message_bytes),
        Producer::ForwardRepair {
            max_message_bytes, ..
        } => {
            forward(c, k, max_message_bytes);
            one_per_batch(c);
        }
    }
    push(c, "bootstrap.servers", &k.brokers);
    push(c, "enable.idempotence", "true");
    push(c, "acks", "all");
    out
}

/// A repair producer sends one record per batch, without linger: brokers apply
/// `max.message.bytes` to whole batches, so a small record refused beside a large one
/// passes alone, and a re-encoded record is judged on its own size. No statistics: it is
/// not the watchdog's heartbeat.
fn one_per_batch(c: &mut Properties) {
    push(c, "batch.num.messages", 1);
    push(c, "linger.ms", 0);
    push(c, "statistics.interval.ms", 0);
}

fn forward(c: &mut Properties, k: &KafkaConfig, max_message_bytes: usize) {
    // The journal producer's statistics feed the watchdog; these would double the work.
    push(c, "statistics.interval.ms", 0);
    // A client waits for its ack before it frees the chunk, and most keep only a few in
    // flight: the journal's 100 ms linger would cap a connection at a few chunks per 100 ms
    // (measured: 8 chunks of 1,000 in flight gave 80,000 events/s). Unless the user chose.
    let p = &k.properties;
    if !p.contains_key("linger.ms") && !p.contains_key("queue.buffering.max.ms") {
        push(c, "linger.ms", 5);
    }
    push(
        c,
        "message.max.bytes",
        (max_message_bytes + 64 * 1024).max(1_000_000),
    );
}

/// The properties that concern reaching the brokers, for helper clients that must connect
/// like the producer does.
pub(crate) fn connection<'a>(
    brokers: &str,
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Properties {
    let mut out: Properties = properties
        .into_iter()
        .filter(|(key, _)| CONNECTION_PREFIXES.iter().any(|p| key.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    push(&mut out, "bootstrap.servers", brokers);
    out
}

/// What every client (producers and helpers alike) adds to reach brokers with AWS MSK IAM:
/// SASL/OAUTHBEARER, over TLS unless the user chose the protocol, and the region in
/// `sasl.oauthbearer.config`, the string librdkafka hands back to each client's token
/// callback (`kafka::msk_iam::oauth_token`): how every client learns to sign the same way.
pub(crate) fn msk_iam(k: &KafkaConfig) -> Properties {
    let mut out = Properties::new();
    if let Some(region) = &k.msk_iam_region {
        push(&mut out, "sasl.mechanisms", "OAUTHBEARER");
        if !k.properties.contains_key("security.protocol") {
            push(&mut out, "security.protocol", "SASL_SSL");
        }
        push(
            &mut out,
            "sasl.oauthbearer.config",
            format!("{MSK_IAM_CONFIG}{region}"),
        );
    }
    out
}

/// The SASL mechanism the user's properties choose, lower-case: `sasl.mechanisms`, else its
/// alias `sasl.mechanism` (librdkafka takes them in that order: the plural is set last).
pub(crate) fn sasl_mechanism(properties: &BTreeMap<String, String>) -> Option<String> {
    properties
        .get("sasl.mechanisms")
        .or_else(|| properties.get("sasl.mechanism"))
        .map(|m| m.to_ascii_lowercase())
}

/// The start of `sasl.oauthbearer.config` for MSK IAM, followed by the region.
pub(crate) const MSK_IAM_CONFIG: &str = "journald-kafka-msk-iam region=";

/// The journal producer's statistics interval (its heartbeat), 0 when off.
pub(crate) fn statistics_interval_ms(k: &KafkaConfig) -> u64 {
    k.properties
        .get("statistics.interval.ms")
        .map_or(Some(STATS_INTERVAL_MS), |v| v.parse().ok())
        .unwrap_or(0)
}

/// The user's properties against the rest of the configuration.
pub(super) fn check_limits(
    properties: &BTreeMap<String, String>,
    encoding: &EncodingConfig,
) -> Result<(), String> {
    // librdkafka refuses a record above its message.max.bytes before sending it; the
    // encoder's limit must stay below, or such an entry could never be shipped.
    let producer_max: usize = properties
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_RECORD_BYTES);
    if encoding.max_record_bytes > producer_max {
        return Err(format!(
            "encoding.max_record_bytes ({}) exceeds the producer's message.max.bytes ({producer_max}): raise kafka.properties.\"message.max.bytes\" (and the broker's limit) or lower encoding.max_record_bytes",
            encoding.max_record_bytes
        ));
    }
    // librdkafka's queue must hold the largest record, or producing it fails with
    // QueueFull forever and the pipeline wedges on that entry.
    if let Some(kb) = properties.get("queue.buffering.max.kbytes") {
        let kb: usize = kb.parse().map_err(|_| {
            format!("kafka.properties.\"queue.buffering.max.kbytes\": {kb:?} is not a number")
        })?;
        if kb.saturating_mul(1024) < encoding.max_record_bytes {
            return Err(format!(
                "kafka.properties.\"queue.buffering.max.kbytes\" ({kb}) is smaller than one record of encoding.max_record_bytes ({} bytes): such a record could never be queued; remove the property (the agent sizes the queue from the in-flight window) or raise it",
                encoding.max_record_bytes
            ));
        }
    }
    Ok(())
}

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
    (
        "delivery.report.only.error",
        "the watermark moves only on a report for every record; without success reports the cursor would never advance",
    ),
    (
        "delivery.timeout.ms",
        "an alias of message.timeout.ms, which the agent sets itself in exactly-once mode (two names for one setting make start-up fail at random); set message.timeout.ms instead",
    ),
];

/// Checks one user-supplied librdkafka property against the delivery guarantee.
pub(crate) fn check_user_property(name: &str, value: &str) -> Result<(), String> {
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
        "message.timeout.ms" => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weakening_values_are_refused() {
        assert!(check_user_property("acks", "1").is_err());
        assert!(check_user_property("acks", "all").is_ok());
        assert!(check_user_property("request.required.acks", "-1").is_ok());
        assert!(check_user_property("enable.idempotence", "false").is_err());
        assert!(check_user_property("message.timeout.ms", "299999").is_err());
        assert!(check_user_property("message.timeout.ms", "0").is_ok());
        assert!(check_user_property("delivery.timeout.ms", "600000").is_err());
        assert!(check_user_property("delivery.report.only.error", "true").is_err());
        assert!(check_user_property("delivery.report.only.error", "false").is_err());
        assert!(check_user_property("max.in.flight.requests.per.connection", "6").is_err());
        assert!(check_user_property("transactional.id", "x").is_err());
        assert!(check_user_property("security.protocol", "ssl").is_ok());
    }

    fn get<'a>(p: &'a Properties, key: &str) -> Option<&'a str> {
        p.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn each_producer_gets_its_role_and_the_guarantee_last() {
        let c = crate::config::for_tests(
            "[kafka.properties]\n\"linger.ms\" = 7\n\"message.max.bytes\" = 2000000\n",
        );
        let (k, p) = (&c.kafka, &c.pipeline);
        let journal = producer(k, p, Producer::Journal);
        assert_eq!(get(&journal, "linger.ms"), Some("7"), "the user's choice");
        assert_eq!(get(&journal, "statistics.interval.ms"), Some("5000"));
        assert_eq!(get(&journal, "message.timeout.ms"), Some("0"));
        let eo = producer(
            k,
            p,
            Producer::Transactional {
                id: "x",
                timeout_ms: 60000,
            },
        );
        assert_eq!(get(&eo, "transactional.id"), Some("x"));
        assert_eq!(get(&eo, "message.timeout.ms"), Some("60000"));
        let repair = producer(k, p, Producer::JournalRepair);
        assert_eq!(get(&repair, "linger.ms"), Some("0"));
        assert_eq!(get(&repair, "batch.num.messages"), Some("1"));
        let fwd = Producer::Forward {
            max_message_bytes: 8 << 20,
            max_in_flight_bytes: 64 << 20,
        };
        let fwd = producer(k, p, fwd);
        assert_eq!(get(&fwd, "linger.ms"), Some("7"), "the user chose a linger");
        assert_eq!(get(&fwd, "statistics.interval.ms"), Some("0"));
        assert_eq!(
            get(&fwd, "message.max.bytes"),
            Some(&*((8 << 20) + 65536).to_string())
        );
        assert_eq!(
            get(&fwd, "queue.buffering.max.kbytes"),
            Some(&*((64 << 10) + 1024).to_string())
        );
        for props in [journal, eo, repair, fwd] {
            let n = props.len();
            assert_eq!(props[n - 1], ("acks".to_string(), "all".to_string()));
            assert_eq!(
                props[n - 2],
                ("enable.idempotence".to_string(), "true".to_string())
            );
        }
        let quiet = crate::config::for_tests("");
        let fwd = Producer::Forward {
            max_message_bytes: 1,
            max_in_flight_bytes: 1,
        };
        let fwd = producer(&quiet.kafka, &quiet.pipeline, fwd);
        assert_eq!(get(&fwd, "linger.ms"), Some("5"));
        assert_eq!(get(&fwd, "message.max.bytes"), Some("1000000"));
        assert_eq!(statistics_interval_ms(&quiet.kafka), 5000);
        assert_eq!(statistics_interval_ms(&c.kafka), 5000);
    }
}
