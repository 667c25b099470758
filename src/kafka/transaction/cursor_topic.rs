//! The cursor topic: made when missing (its partitions carry the places as offset
//! metadata, `offsets`), and read once, on a first start after an upgrade, for the newest
//! cursor record an earlier version committed for this transactional id. Reading waits,
//! only when our own record may lie behind another producer's open transaction, until the
//! stable offset has passed it (`read_committed` hides what open transactions wrote), then
//! reads backwards in steps from the end, so the time does not grow with the topic.
//!
//! It must never return a cursor an aborted or still-open transaction wrote.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{Config, KafkaConfig};
use crate::kafka::client::{AuthContext, connection_config, give_token};

/// The cursor topic exists (created compacted when missing and allowed). Returns a warning
/// for an existing topic that is not compacted.
/// With `create` false (for `check`), a missing topic is reported, not created.
pub(crate) fn ensure_cursor_topic(
    cfg: &Config,
    timeout: Duration,
    create: bool,
) -> Result<Option<String>> {
    let topic = &cfg.delivery.cursor_topic;
    let config = connection_config(&cfg.kafka);
    let admin: AdminClient<AuthContext> = config
        .create_with_context(AuthContext)
        .context("cannot create the Kafka admin client")?;
    give_token(admin.inner(), &config)?;
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for the admin client")?;
    if create && cfg.delivery.create_cursor_topic {
        // No records go there any more: its partitions carry the places as offset
        // metadata, one chunk each (`offsets`), so their number bounds a place's writers.
        let partitions = i32::try_from(cfg.delivery.cursor_topic_partitions).unwrap_or(i32::MAX);
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let results = rt
            .block_on(admin.create_topics([&new], &opts))
            .with_context(|| format!("cannot create the cursor topic {topic:?}"))?;
        for r in results {
            match r {
                Ok(_) => tracing::info!(topic, "created the compacted cursor topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => bail!(
                    "cannot create the cursor topic {topic:?}: {code}; create it yourself with cleanup.policy=compact, or allow this client to create topics (delivery.cursor_topic, delivery.create_cursor_topic)"
                ),
            }
        }
    }
    let described = rt
        .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts))
        .with_context(|| format!("cannot describe the cursor topic {topic:?}"))?;
    for r in described {
        match r {
            Ok(res) => {
                let policy = res.get("cleanup.policy").and_then(|e| e.value.clone());
                if policy.is_none() && res.entries.is_empty() {
                    // Some brokers answer for a missing topic with an empty config list.
                    bail!("cursor topic {topic:?} does not exist");
                }
                if !policy.as_deref().is_some_and(|p| p.contains("compact")) {
                    return Ok(Some(format!(
                        "cursor topic {topic:?} has cleanup.policy={} instead of compact: the cursor records of earlier versions are deleted by retention, so an agent upgraded after that finds its place only in its cursor file (the place itself is kept as offsets)",
                        policy.as_deref().unwrap_or("(unknown)")
                    )));
                }
            }
            Err(code) => bail!(
                "cursor topic {topic:?} is not usable: {code}{}",
                if cfg.delivery.create_cursor_topic {
                    ""
                } else {
                    " (delivery.create_cursor_topic = false: create it with cleanup.policy=compact)"
                }
            ),
        }
    }
    Ok(None)
}

/// The restore reader's context: reaching the end of a partition is what it waits for,
/// not an error worth a log line.
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> std::result::Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        crate::kafka::msk_iam::oauth_token(config)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::warn!(%error, reason, "cursor topic reader");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// A reader of the cursor topic, never committing, told when it reaches a partition's end.
fn reader(k: &KafkaConfig, group: &str, isolation: &str) -> Result<BaseConsumer<QuietEof>> {
    let mut config = connection_config(k);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        // Small fetches: a step reads a few thousand small records, and some brokers
        // answer a large fetch with more than a client accepts in one response.
        .set("fetch.max.bytes", "1048576")
        .set("max.partition.fetch.bytes", "1048576")
        // ... and noida-db answers with everything up to the end whatever was asked: accept
        // responses up to 1 GiB rather than fail a restore for good.
        .set("receive.message.max.bytes", "1073741824");
    let reader: BaseConsumer<QuietEof> = config
        .create_with_context(QuietEof)
        .context("cannot create the cursor topic reader")?;
    give_token(reader.client(), &config)?;
    Ok(reader)
}

/// Reads the newest committed cursor for `id` from the cursor topic (read_committed).
pub(crate) fn read_committed_cursor(
    k: &KafkaConfig,
    topic: &str,
    id: &str,
    timeout: Duration,
) -> Result<Option<String>> {
    let consumer = reader(k, &format!("journald-kafka-restore-{id}"), "read_committed")?;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("cannot read metadata of the cursor topic {topic:?}"))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        if let Some(e) = t.error() {
            bail!("cursor topic {topic:?}: {}", RDKafkaErrorCode::from(e));
        }
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    if tpl.count() == 0 {
        bail!("cursor topic {topic:?} has no partitions");
    }
    let deadline = Instant::now() + timeout;
    wait_for_open_transactions(k, &consumer, topic, &tpl, id, deadline)?;
    // The last record with our key in each partition, by offset: records of one key go to
    // one partition, in the order they were written, whatever their timestamps say (a
    // host clock stepped back must not make an older cursor look newer).
    let mut last: Vec<(i64, String)> = Vec::new();
    for e in tpl.elements() {
        if let Some(found) = last_in_partition(&consumer, topic, e.partition(), id, deadline)? {
            last.push(found);
        }
    }
    // Several partitions hold our key only if the topic's partition count changed; then
    // the timestamps are all there is to go by.
    Ok(last.into_iter().max_by_key(|(ts, _)| *ts).map(|(_, c)| c))
}

/// Records read per step of the backward search, at first (it grows fourfold per step).
const RESTORE_STEP: i64 = 2_000;

/// The newest record with key `id` in one partition of the cursor topic: (timestamp, place).
///
/// Searched backwards from the end in growing steps, so the cost is the number of records
/// written since this agent's last commit (a step or two for an agent that was running),
/// not the size of a topic shared by a whole fleet: before compaction catches up, it holds
/// every commit of every agent (the test with 10,000 agents' records has the figures).
fn last_in_partition(
    consumer: &BaseConsumer<QuietEof>,
    topic: &str,
    partition: i32,
    id: &str,
    deadline: Instant,
) -> Result<Option<(i64, String)>> {
    let (low, high) = consumer
        .fetch_watermarks(
            topic,
            partition,
            deadline.saturating_duration_since(Instant::now()),
        )
        .with_context(|| format!("cannot read the offsets of cursor topic {topic:?}"))?;
    let mut end = high;
    let mut step = RESTORE_STEP;
    while end > low {
        let start = (end - step).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
        consumer.assign(&tpl)?;
        // Some(None): our newest record in this step is a tombstone (someone deleted our
        // place on purpose); nothing older counts.
        let mut found: Option<Option<(i64, String)>> = None;
        loop {
            if Instant::now() >= deadline {
                bail!(
                    "reading the cursor topic {topic:?} back to offset {start} did not finish in time (an open transaction of another agent holds it back, or the topic holds very many records before compaction)"
                );
            }
            let m = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    return Err(e).context(format!("reading the cursor topic {topic:?}"));
                }
                Some(Ok(m)) => m,
            };
            if m.offset() >= end {
                break;
            }
            if m.key() == Some(id.as_bytes()) {
                found = Some(match m.payload() {
                    None => None,
                    Some(value) => {
                        let text = std::str::from_utf8(value)
                            .ok()
                            .filter(|t| crate::journal::validate_place(t).is_ok())
                            .ok_or_else(|| {
                                anyhow!(
                                    "cursor topic {topic:?} partition {partition} offset {}: the record for {id:?} does not hold a journal cursor",
                                    m.offset()
                                )
                            })?;
                        Some((m.timestamp().to_millis().unwrap_or(0), text.to_string()))
                    }
                });
            }
            if m.offset() >= end - 1 {
                break;
            }
        }
        if let Some(answer) = found {
            return Ok(answer);
        }
        end = start;
        step = step.saturating_mul(4);
    }
    Ok(None)
}

/// Whether a record keyed `id` lies in `range` (from the stable offset to the end) of a
/// partition, as a `read_uncommitted` reader sees it: only then can an open transaction of
/// another producer hide our newest record.
fn ours_beyond(
    uncommitted: &BaseConsumer<QuietEof>,
    topic: &str,
    partition: i32,
    (from, end): (i64, i64),
    id: &str,
    deadline: Instant,
) -> Result<bool> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
    uncommitted.assign(&tpl)?;
    while Instant::now() < deadline {
        let m = match uncommitted.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(false),
            Some(Err(e)) => return Err(e).context(format!("reading the cursor topic {topic:?}")),
            Some(Ok(m)) => m,
        };
        if m.partition() != partition {
            continue;
        }
        if m.offset() >= end {
            return Ok(false);
        }
        if m.key() == Some(id.as_bytes()) {
            // Committed or aborted, it cannot be told before the transactions ahead of it
            // end: wait, as before.
            return Ok(true);
        }
        if m.offset() >= end - 1 {
            return Ok(false);
        }
    }
    // Not read in time: assume the worst and wait, as before.
    Ok(true)
}

/// Waits until every transaction open on the cursor topic when we started is decided,
/// where it may hide our own newest record.
///
/// A `read_committed` reader stops at the last stable offset: the first open transaction of
/// *any* agent sharing the topic. Our own newest commit may lie beyond it, and stopping
/// there would resume from an older cursor (duplicates; with `start = "tail"` on a wiped
/// host, loss). So take the log end now (as a `read_uncommitted` client sees it) and wait
/// until the stable offset (as a `read_committed` one sees it) has passed it. Another
/// agent's transaction closes within its `transaction_max_ms`, or is aborted by the
/// coordinator at its transaction timeout; `deadline` is ours, and past it the session
/// fails and retries rather than resume from a stale place.
fn wait_for_open_transactions(
    k: &KafkaConfig,
    committed: &BaseConsumer<QuietEof>,
    topic: &str,
    tpl: &TopicPartitionList,
    id: &str,
    deadline: Instant,
) -> Result<()> {
    let uncommitted = reader(k, "journald-kafka-restore-end", "read_uncommitted")?;
    let step = Duration::from_secs(5);
    let mut logged = false;
    for e in tpl.elements() {
        let p = e.partition();
        let (_, end) = uncommitted
            .fetch_watermarks(topic, p, step)
            .with_context(|| format!("cannot read the end of cursor topic {topic:?}"))?;
        tracing::debug!(partition = p, end, "cursor topic end");
        let stable_end = || {
            committed
                .fetch_watermarks(topic, p, step)
                .map(|(_, stable)| stable)
                .with_context(|| format!("cannot read the stable end of cursor topic {topic:?}"))
        };
        let mut stable = stable_end()?;
        if stable < end && !ours_beyond(&uncommitted, topic, p, (stable, end), id, deadline)? {
            // What open transactions hold back is other producers' records only: our
            // newest record is below the stable offset, readable now.
            continue;
        }
        while stable < end {
            if Instant::now() >= deadline {
                bail!(
                    "cursor topic {topic:?} partition {p}: transactions of other agents stay open (stable offset {stable}, end {end}); not resuming from a place that may be stale"
                );
            }
            if !logged {
                logged = true;
                tracing::info!(
                    partition = p,
                    stable,
                    end,
                    "waiting for other agents' open transactions on the cursor topic before reading our place"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
            stable = stable_end()?;
        }
    }
    Ok(())
}
