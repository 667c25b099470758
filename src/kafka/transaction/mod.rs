//! The exactly-once store: the cursor committed inside the Kafka transaction that carries
//! the entries (the model of KIP-618, Kafka Connect's exactly-once sources).
//!
//! A transaction holds a run of journal entries and, last, the place after them, committed
//! as the offsets of a consumer group that is this agent's alone (`offsets`: KIP-447's
//! transactional offset commit). Committing makes the entries and the place visible
//! together, or neither. So after any crash the group says exactly which entries are in
//! Kafka, and the agent resumes right after them; and no other producer's transaction can
//! delay reading it. Earlier versions kept the place as records of the cursor topic
//! (`cursor_topic`): read once, on a first start, to migrate.
//!
//! Unlike the file store, a commit here must be made by the thread that produces (the
//! shipping thread), between entries: a transaction cannot be committed while another
//! thread adds records to it. When to commit is the pipeline's `exactly_once` cadence; this
//! file only knows how. It must never commit a cursor that is not a [`SafeCursor`], and
//! never hide a fencing error behind a retry.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rdkafka::consumer::{BaseConsumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer as _;

mod cursor_topic;
mod offsets;

pub(crate) use cursor_topic::ensure_cursor_topic;
use cursor_topic::read_committed_cursor;

use super::client::connection_config;
use super::sink::{Owner, Producer};
use crate::checkpoint::{FileStore, SafeCursor, Store};
use crate::config::{Config, KafkaConfig, Source};
use crate::error::Failure;

/// Classifies an `init_transactions` failure: a broker without transactions, or one that
/// refuses them to us, cannot be retried; anything else (broker down) may pass.
fn init_error(id: &str, e: KafkaError) -> Failure {
    let code = e.rdkafka_error_code();
    let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
    let why = match code {
        Some(
            RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedForMessageFormat,
        ) => Some(
            "the brokers do not support transactions; exactly-once needs Kafka 0.11 or later"
                .to_string(),
        ),
        Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed) => Some(format!(
            "the brokers refused transactional id {id:?} (TransactionalIdAuthorizationFailed): grant this client Write on that TransactionalId, or use a broker with transaction support (some Kafka-protocol brokers, Nisshi among them, answer this way because they have none)"
        )),
        Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => Some(format!(
            "the brokers refused the idempotent transactional producer (ClusterAuthorizationFailed) for id {id:?}: grant IdempotentWrite on the cluster"
        )),
        _ if fatal => Some(format!("the brokers refused a transactional producer: {e}")),
        _ => None,
    };
    match why {
        Some(w) => Failure::unsupported(w),
        None => txn_error("cannot initialise the transactional producer", e),
    }
}

/// Whether a librdkafka error code means this producer was fenced.
fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

/// The fencing error, if the producer's fatal error is one.
pub(crate) fn fenced<O: Owner>(producer: &Producer<O>) -> Option<Failure> {
    producer
        .client()
        .fatal_error()
        .filter(|(code, _)| is_fencing(*code))
        .map(|(_, reason)| Failure::fenced(reason))
}

/// Classifies a transactional API error: fencing, or something a new session may get past.
///
/// Only a *fatal* fencing error is fencing: another instance registered the same id.
/// A transaction the coordinator aborted because it outlived its timeout bumps the epoch
/// too, and the producer then sees an epoch error, but librdkafka reports that one as
/// abortable (it bumps its own epoch on the abort, KIP-360): a new session recovers from it,
/// and exiting with the fencing status would keep the agent down for good.
fn txn_error(what: &str, e: KafkaError) -> Failure {
    if let KafkaError::Transaction(t) = &e {
        if is_fencing(t.code()) && t.is_fatal() {
            return Failure::fenced(t);
        }
    }
    Failure::retry(anyhow!("{what}: {e}"))
}

/// The default transactional id: one per machine and journal source, stable across
/// reinstalls (machine-id survives them unless the host is re-imaged, and then the
/// operator should set it explicitly to keep the place).
pub(crate) fn default_transactional_id(source: &Source) -> Result<String> {
    let machine = crate::journal::machine_id().context(
        "cannot read /etc/machine-id to derive delivery.transactional_id (set it in the config)",
    )?;
    let machine = machine.as_str();
    Ok(match source {
        Source::Local => format!("journald-kafka.{machine}"),
        Source::Namespace(ns) => format!("journald-kafka.{machine}.{ns}"),
        Source::Directory(d) => format!(
            "journald-kafka.{machine}.dir-{:016x}",
            fnv1a(d.as_os_str().as_encoded_bytes())
        ),
        Source::Files(files) => {
            let mut all = Vec::new();
            for f in files {
                all.extend_from_slice(f.as_os_str().as_encoded_bytes());
                all.push(0);
            }
            format!("journald-kafka.{machine}.files-{:016x}", fnv1a(&all))
        }
    })
}

/// A stable, dependency-free hash for naming (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The transactional id in effect for a configuration.
pub(crate) fn transactional_id(cfg: &Config) -> Result<String> {
    match &cfg.delivery.transactional_id {
        Some(id) => Ok(id.clone()),
        None => default_transactional_id(&cfg.journal.source),
    }
}

/// For `check`: the brokers support transactions, and what the cursor topic holds. Uses a
/// separate transactional id (`<id>.check`) so that a running agent is not fenced.
pub(crate) fn check(cfg: &Config) -> Result<String> {
    let id = transactional_id(cfg)?;
    let timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms.clamp(1_000, 10_000));
    let mut config = connection_config(&cfg.kafka);
    config.set("transactional.id", format!("{id}.check"));
    let producer: rdkafka::producer::BaseProducer<super::client::AuthContext> = config
        .create_with_context(super::client::AuthContext)
        .context("cannot create a transactional producer")?;
    super::client::give_token(producer.client(), &config)?;
    producer
        .init_transactions(timeout)
        .map_err(|e| init_error(&format!("{id}.check"), e).into_error())?;
    let topic = &cfg.delivery.cursor_topic;
    let (topic_state, exists) = match ensure_cursor_topic(cfg, timeout, false) {
        Ok(None) => (format!("cursor topic {topic:?} is compacted"), true),
        Ok(Some(w)) => (w, true),
        Err(_) if cfg.delivery.create_cursor_topic => (
            format!(
                "cursor topic {topic:?} will be created ({} partitions)",
                cfg.delivery.cursor_topic_partitions
            ),
            false,
        ),
        Err(e) => return Err(e),
    };
    // Reading the group's offsets needs what the agent needs (Describe and Read on the
    // group, when ACLs are on): a refusal fails the check.
    let place = if exists {
        committed_place(cfg, &id, timeout)
            .with_context(|| format!("cannot read the place committed for group {id:?}"))?
    } else {
        "no place committed yet".to_string()
    };
    Ok(format!(
        "transactions supported; transactional id {id:?}; {topic_state}; {place}"
    ))
}

/// For `check`: what the agent's group holds, and how many writers the topic can hold.
fn committed_place(cfg: &Config, id: &str, timeout: Duration) -> Result<String> {
    let topic = &cfg.delivery.cursor_topic;
    let group = offsets::group_consumer(&cfg.kafka, id)?;
    let partitions = offsets::partition_count(&group, topic, timeout)?;
    let read = offsets::fetch(&group, topic, partitions, timeout)?;
    let capacity = offsets::capacity(partitions, cfg.delivery.place_metadata_bytes);
    let held = match offsets::join(&read).map_err(anyhow::Error::msg)? {
        Some((_, place)) => format!(
            "committed place of {} writer(s), newest {}",
            crate::checkpoint::place::positions(&place).count(),
            crate::checkpoint::place::newest(&place).unwrap_or("(none)")
        ),
        None => "no place committed yet".to_string(),
    };
    Ok(format!(
        "{held} (group {id:?}; {partitions} partition(s) hold about {capacity} writers)"
    ))
}

/// The exactly-once store. Owned by the shipping thread of a session. It speaks to Kafka
/// only, and commits only a [`SafeCursor`].
pub(crate) struct TransactionStore<O: Owner> {
    producer: Producer<O>,
    /// Speaks for the agent's offsets group (`offsets::group_consumer`).
    group: BaseConsumer<super::client::AuthContext>,
    group_metadata: ConsumerGroupMetadata,
    kafka: KafkaConfig,
    topic: String,
    /// Partitions of the cursor topic: the chunks a place may use.
    partitions: usize,
    /// `delivery.place_metadata_bytes`: what one partition's metadata may hold.
    metadata_bytes: usize,
    id: String,
    timeout: Duration,
    /// The generation of the last committed place (the offset its chunks carry).
    generation: i64,
    source: Found,
    /// How long the last `load` took.
    took: Duration,
    /// The cursor file, kept as a cache for `cursor show` and for a first switch from
    /// at-least-once or from the cursor-record layout; Kafka is the authority.
    cache: FileStore,
    open: bool,
}

impl<O: Owner> TransactionStore<O> {
    /// Registers the transactional id with the coordinator: this fences any older agent
    /// with the same id and aborts its unfinished transaction (and its pending offset
    /// commit), so what the group holds afterwards is final.
    pub(crate) fn init(
        producer: Producer<O>,
        cfg: &Config,
        id: String,
    ) -> Result<TransactionStore<O>, Failure> {
        let timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms.max(10_000));
        producer
            .init_transactions(timeout)
            .map_err(|e| init_error(&id, e))?;
        let topic = cfg.delivery.cursor_topic.clone();
        let group = offsets::group_consumer(&cfg.kafka, &id).map_err(Failure::retry)?;
        let group_metadata = offsets::group_metadata(&group).map_err(Failure::retry)?;
        let partitions =
            offsets::partition_count(&group, &topic, timeout).map_err(Failure::retry)?;
        Ok(TransactionStore {
            producer,
            group,
            group_metadata,
            kafka: cfg.kafka.clone(),
            topic,
            partitions,
            metadata_bytes: cfg.delivery.place_metadata_bytes,
            id,
            timeout: Duration::from_millis(cfg.delivery.transaction_timeout_ms),
            generation: 0,
            source: Found::Nowhere,
            took: Duration::ZERO,
            cache: FileStore::new(&cfg.state.directory, crate::journal::validate_place),
            open: false,
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Opens a transaction unless one is open.
    pub(crate) fn begin(&mut self) -> Result<(), Failure> {
        if !self.open {
            self.producer
                .begin_transaction()
                .map_err(|e| txn_error("cannot begin a transaction", e))?;
            self.open = true;
        }
        Ok(())
    }

    /// Drops the open transaction: none of its records become visible to read_committed
    /// consumers, and its place neither.
    pub(crate) fn abort(&mut self) {
        self.abort_within(self.timeout);
    }

    /// Aborts, waiting for the coordinator at most `limit` (a stop has a deadline).
    pub(crate) fn abort_within(&mut self, limit: Duration) {
        if self.open {
            self.open = false;
            if let Err(e) = self.producer.abort_transaction(limit) {
                // The next session's init_transactions aborts it on the coordinator anyway.
                tracing::warn!(error = %e, "cannot abort the transaction; the next start aborts it");
            }
        }
    }

    /// The place this agent committed last: its group's offsets (one stable fetch), or,
    /// before its first commit, what an older layout or mode left (`migrate`).
    pub(crate) fn load(&mut self) -> Result<Option<String>> {
        let started = Instant::now();
        let found = self.load_place();
        self.took = started.elapsed();
        found
    }

    fn load_place(&mut self) -> Result<Option<String>> {
        let read = offsets::fetch(&self.group, &self.topic, self.partitions, self.timeout)?;
        let joined = offsets::join(&read).map_err(|e| {
            anyhow!(
                "the place committed for group {:?} on cursor topic {:?} is not one this agent wrote ({e}); delete the group's offsets (kafka-consumer-groups --delete-offsets --group {:?} --topic {:?}) to start from an earlier version's cursor record, the cursor file or journal.start",
                self.id,
                self.topic,
                self.id,
                self.topic
            )
        })?;
        let Some((generation, place)) = joined else {
            return self.migrate();
        };
        crate::journal::validate_place(&place).map_err(|e| {
            anyhow!(
                "the place committed for group {:?} on cursor topic {:?} does not hold journal cursors: {e}",
                self.id,
                self.topic
            )
        })?;
        self.generation = generation;
        self.source = Found::Offsets;
        self.mirror(&place);
        self.warn_if_nearly_full(&place);
        Ok(Some(place))
    }

    /// No place in the group yet: a first start in exactly-once mode, or after an upgrade.
    /// Kafka first, as before: the newest cursor record this id left in the cursor topic
    /// (waiting for other producers only when our own record may lie behind their open
    /// transactions); else the cursor file (the at-least-once place: its entries are in
    /// Kafka at least once).
    fn migrate(&mut self) -> Result<Option<String>> {
        if let Some(c) = read_committed_cursor(&self.kafka, &self.topic, &self.id, self.timeout)? {
            tracing::info!(
                "no place in this agent's group yet: continuing from the cursor record an earlier version committed in the cursor topic; the place is committed as offsets from now on"
            );
            self.source = Found::Record;
            self.mirror(&c);
            return Ok(Some(c));
        }
        let cached = self.cache.load().unwrap_or_else(|e| {
            tracing::warn!(error = format!("{e:#}"), "ignoring the cursor file cache");
            None
        });
        if cached.is_some() {
            tracing::info!(
                "no place in this agent's group and no cursor record yet; continuing from the cursor file"
            );
            self.source = Found::File;
        }
        Ok(cached)
    }

    /// A place that fills most of what the topic can hold is said at start, not at the
    /// commit that no longer fits.
    fn warn_if_nearly_full(&self, place: &str) {
        let writers = crate::checkpoint::place::positions(place).count();
        let capacity = offsets::capacity(self.partitions, self.metadata_bytes);
        if writers * 5 > capacity * 4 {
            tracing::warn!(
                writers,
                capacity,
                topic = %self.topic,
                "the place holds more than 80 % of the writers the cursor topic's partitions can hold; add partitions to it before commits stop"
            );
        }
    }

    /// Keeps the cursor file (what `cursor show` reads) in step with Kafka.
    fn mirror(&mut self, place: &str) {
        if self.cache.load().ok().flatten().as_deref() == Some(place) {
            return;
        }
        if let Err(e) = self.cache.mirror_committed(place) {
            tracing::debug!(
                error = format!("{e:#}"),
                "cannot update the cursor file cache"
            );
        }
    }

    /// Where the last `load` found the place, and how long it took, for the log.
    pub(crate) fn describe(&self) -> String {
        let took = self.took.as_millis();
        let from = match self.source {
            Found::Offsets | Found::Nowhere => format!(
                "offsets of group {:?} on cursor topic {:?}",
                self.id, self.topic
            ),
            Found::Record => format!(
                "the cursor record of an earlier version in cursor topic {:?} (key {:?})",
                self.topic, self.id
            ),
            Found::File => "the cursor file (no place in Kafka yet)".to_string(),
        };
        format!("{from} (read in {took} ms)")
    }

    /// Commits the open transaction with `place` as this agent's offsets: its entries and
    /// the place become visible together, or neither. Waits for the brokers until
    /// `deadline` at most (a transaction's close, or a stop). On failure the transaction
    /// stays open, for the caller to abort.
    pub(crate) fn commit(&mut self, place: &SafeCursor, deadline: Instant) -> Result<(), Failure> {
        self.begin()?;
        let chunks = offsets::split(place, self.metadata_bytes)
            .map_err(|e| Failure::retry(anyhow!("cannot commit the place: {e}")))?;
        let bytes: usize = chunks.iter().map(String::len).sum();
        if chunks.len() > self.partitions || bytes > offsets::MAX_COMMIT_BYTES {
            // Retried: partitions added meanwhile are seen by the next session.
            return Err(Failure::retry(anyhow!(
                "the place of {} writers needs {} chunks of offset metadata ({} bytes each, delivery.place_metadata_bytes; {bytes} bytes in all, at most {} in one commit) but cursor topic {:?} has {} partitions: add partitions to the topic, or raise the brokers' offset.metadata.max.bytes and delivery.place_metadata_bytes with it",
                crate::checkpoint::place::positions(place).count(),
                chunks.len(),
                self.metadata_bytes,
                offsets::MAX_COMMIT_BYTES,
                self.topic,
                self.partitions
            )));
        }
        // An offset a hostile commit set near i64::MAX must not wrap to a negative one,
        // which librdkafka would drop without a word (the entries committed, the place not).
        let generation = self
            .generation
            .checked_add(1)
            .filter(|g| *g > 0)
            .unwrap_or(1);
        let tpl = offsets::offsets(&self.topic, generation, &chunks).map_err(Failure::retry)?;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .min(self.timeout)
        };
        self.producer
            .send_offsets_to_transaction(&tpl, &self.group_metadata, left())
            .map_err(|e| txn_error("cannot add the place to the transaction", e))?;
        self.producer
            .commit_transaction(left())
            .map_err(|e| txn_error("cannot commit the transaction", e))?;
        self.open = false;
        self.generation = generation;
        // The group's consumer is never assigned anything; what librdkafka queues for it
        // (connection errors) is drained here rather than kept for the session's life.
        while self.group.poll(Duration::ZERO).is_some() {}
        if let Err(e) = self.cache.commit(place) {
            tracing::debug!(
                error = format!("{e:#}"),
                "cannot update the cursor file cache"
            );
        }
        Ok(())
    }
}

/// Where a store's place came from at its last `load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Nowhere,
    Offsets,
    Record,
    File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_stable_and_tell_sources_apart() {
        if std::fs::read_to_string("/etc/machine-id").is_err() {
            return;
        }
        let local = default_transactional_id(&Source::Local).unwrap();
        assert!(local.starts_with("journald-kafka."));
        assert_eq!(local, default_transactional_id(&Source::Local).unwrap());
        let a = default_transactional_id(&Source::Directory("/a".into())).unwrap();
        let b = default_transactional_id(&Source::Directory("/b".into())).unwrap();
        assert_ne!(a, b);
        let ns = default_transactional_id(&Source::Namespace("audit".into())).unwrap();
        assert!(ns.ends_with(".audit"));
    }

    #[test]
    fn fencing_codes() {
        assert!(is_fencing(RDKafkaErrorCode::Fenced));
        assert!(is_fencing(RDKafkaErrorCode::ProducerFenced));
        assert!(!is_fencing(RDKafkaErrorCode::MessageTimedOut));
        // An epoch error on a send is not fencing by itself: a transaction the coordinator
        // timed out ends the same way. The session ends and `fenced()` asks the producer
        // whether librdkafka declared it fatally fenced.
        let e = txn_error(
            "x",
            KafkaError::MessageProduction(RDKafkaErrorCode::InvalidProducerEpoch),
        );
        assert!(e.is_retryable());
        assert_ne!(e.exit_code(), crate::error::EXIT_FENCED);
    }
}
