//! Client configuration: the one place that turns the configuration into librdkafka
//! properties, for the producer and for every helper client (admin, cursor reader, `cat`,
//! `verify`), so that all of them reach the brokers the same way.

use rdkafka::ClientConfig;

use crate::config::{KafkaConfig, PipelineConfig};

/// librdkafka statistics interval: the producer's heartbeat.
pub(crate) const STATS_INTERVAL_MS: &str = "5000";

/// Property prefixes that concern reaching the brokers (address, TLS, SASL).
const CONNECTION_PREFIXES: &[&str] = &["security.", "sasl.", "ssl.", "socket.", "broker.address."];

/// The producer configuration: throughput-minded defaults, then the user's properties, then
/// the settings the guarantee depends on (which the user cannot change, see above).
pub(crate) fn client_config(k: &KafkaConfig, p: &PipelineConfig) -> ClientConfig {
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
    secrets(k, &mut c);
    c.set("bootstrap.servers", &k.brokers);
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c
}

/// Properties that concern reaching the brokers, for the helper clients (admin, cursor
/// reader, `cat`, `verify`) that must connect like the producer does.
pub(crate) fn connection_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = connection(&k.brokers, &k.properties);
    secrets(k, &mut c);
    c
}

/// Secrets kept out of the config file reach librdkafka here, and only here. With
/// OAUTHBEARER (OIDC) the secret is the client secret sent to the token endpoint.
fn secrets(k: &KafkaConfig, c: &mut ClientConfig) {
    if let Some(p) = &k.sasl_password {
        let oauth = ["sasl.mechanisms", "sasl.mechanism"].iter().any(|m| {
            k.properties
                .get(*m)
                .is_some_and(|v| v.eq_ignore_ascii_case("OAUTHBEARER"))
        });
        let key = if oauth {
            "sasl.oauthbearer.client.secret"
        } else {
            "sasl.password"
        };
        c.set(key, p.expose());
    }
}

/// [`connection_config`] from brokers and properties given apart (the command line).
pub(crate) fn connection<'a>(
    brokers: &str,
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (key, value) in properties {
        if CONNECTION_PREFIXES.iter().any(|p| key.starts_with(p)) {
            c.set(key, value);
        }
    }
    c.set("bootstrap.servers", brokers);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn guarantee_settings_win_over_user_properties() {
        let c = config::for_tests(
            "[kafka.properties]\n\"linger.ms\" = 5\n\"compression.codec\" = \"zstd\"\n",
        );
        let cc = client_config(&c.kafka, &c.pipeline);
        assert_eq!(cc.get("linger.ms"), Some("5"));
        assert_eq!(cc.get("compression.codec"), Some("zstd"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("bootstrap.servers"), Some("h:1"));
        assert_eq!(cc.get("message.timeout.ms"), Some("0"));
    }

    #[test]
    fn a_password_from_a_file_reaches_every_client_and_no_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = config::parse(&format!(
            "[kafka]\nbrokers = \"h:1\"\ntopic = \"t\"\nsasl_password_file = \"{}\"\n[kafka.properties]\n\"sasl.username\" = \"alice\"\n",
            pw.display()
        ))
        .unwrap();
        assert_eq!(
            client_config(&c.kafka, &c.pipeline).get("sasl.password"),
            Some("s3cret")
        );
        assert_eq!(
            connection_config(&c.kafka).get("sasl.password"),
            Some("s3cret")
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn helper_clients_connect_like_the_producer() {
        let c = config::for_tests(
            "[kafka.properties]\n\"linger.ms\" = 5\n\"security.protocol\" = \"sasl_ssl\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n",
        );
        let cc = connection_config(&c.kafka);
        assert_eq!(cc.get("bootstrap.servers"), Some("h:1"));
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cc.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(
            cc.get("linger.ms"),
            None,
            "producer tuning stays with the producer"
        );
    }
}
