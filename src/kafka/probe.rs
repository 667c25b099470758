//! The brokers' probe: a metadata request with a producer's own connection. What a
//! producer is configured with is `config::properties`'s; what its delivery reports mean is
//! its input's (`pipeline::delivery`, `forward::ack`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::producer::Producer as _;

use super::client::producer_config;
use super::sink::{self, Owner, Producer};
use crate::config::properties::Producer as Role;
use crate::config::{KafkaConfig, PipelineConfig};

/// A producer that sends nothing: `check` only asks the brokers for metadata with the
/// configuration the agent ships with.
struct Unowned;

impl Owner for Unowned {
    type Token = usize;
    const INPUT: &'static str = "check";
    fn acknowledged(&self, _: usize, _: usize) {}
    fn refused(&self, _: usize, _: sink::Refused) {}
    fn failed(&self, _: usize, _: usize, _: String, _: String) {}
    fn fatal(&self, _: &str) {}
}

/// `check`'s probe: the journal producer's configuration, asked for `topic`'s metadata.
pub(crate) fn probe_brokers(
    k: &KafkaConfig,
    p: &PipelineConfig,
    topic: &str,
    timeout: Duration,
) -> Result<usize> {
    let producer = sink::create(
        &producer_config(k, p, Role::Journal),
        Unowned,
        std::sync::Arc::new(crate::metrics::Metrics::default()),
        "producer-poll",
    )
    .context("cannot create the Kafka producer")?;
    probe(&producer, topic, timeout)
}

/// Asks the brokers for the topic's metadata: proves they are reachable and the topic exists.
/// Returns the partition count.
pub(crate) fn probe<O: Owner>(
    producer: &Producer<O>,
    topic: &str,
    timeout: Duration,
) -> Result<usize> {
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
