//! The exactly-once store: the cursor committed inside the Kafka transaction that carries
//! the entries (the model of KIP-618, Kafka Connect's exactly-once sources).
//!
//! A transaction holds a run of journal entries and, last, one record on the compacted
//! cursor topic, keyed by the transactional id, whose value is the cursor of the newest
//! entry of the run. Committing it makes the entries and the cursor visible to
//! `read_committed` consumers together, or neither. So after any crash the cursor topic
//! says exactly which entries are in Kafka, and the agent resumes right after them.
//!
//! Unlike the file store, a commit here must be made by the thread that produces (the
//! shipping thread), between entries: a transaction cannot be committed while another
//! thread adds records to it. When to commit is the pipeline's `exactly_once` cadence; this
//! file only knows how. It must never commit a cursor that is not a [`SafeCursor`], and
//! never hide a fencing error behind a retry.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer as _};

mod cursor_topic;

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
    let producer: rdkafka::producer::BaseProducer = connection_config(&cfg.kafka)
        .set("transactional.id", format!("{id}.check"))
        .create()
        .context("cannot create a transactional producer")?;
    producer
        .init_transactions(timeout)
        .map_err(|e| init_error(&format!("{id}.check"), e).into_error())?;
    let topic = &cfg.delivery.cursor_topic;
    let topic_state = match ensure_cursor_topic(cfg, timeout, false) {
        Ok(None) => format!("cursor topic {topic:?} is compacted"),
        Ok(Some(w)) => w,
        Err(_) if cfg.delivery.create_cursor_topic => {
            format!("cursor topic {topic:?} will be created (compacted)")
        }
        Err(e) => return Err(e),
    };
    let place = match read_committed_cursor(&cfg.kafka, topic, &id, timeout) {
        Ok(Some(c)) => format!("committed cursor {c}"),
        Ok(None) => "no committed cursor yet".to_string(),
        Err(_) => "no committed cursor yet (topic not readable)".to_string(),
    };
    Ok(format!(
        "transactions supported; transactional id {id:?}; {topic_state}; {place}"
    ))
}

/// The exactly-once store. Owned by the shipping thread of a session. It speaks to Kafka
/// only: waiting for the cursor record's answer is the session's (`pipeline::control`).
pub(crate) struct TransactionStore<O: Owner> {
    producer: Producer<O>,
    /// The delivery token of the cursor record: its report is the owner's to route.
    token: O::Token,
    kafka: KafkaConfig,
    topic: String,
    id: String,
    timeout: Duration,
    /// The cursor file, kept as a cache for `cursor show` and for a first switch from
    /// at-least-once; Kafka is the authority.
    cache: FileStore,
    open: bool,
    /// The cursor the open transaction's cursor record names: it commits only with a
    /// `SafeCursor` for this very place (the watermark stands exactly there).
    cursor_sent: Option<String>,
}

impl<O: Owner<Token: Copy>> TransactionStore<O> {
    /// Registers the transactional id with the coordinator: this fences any older agent
    /// with the same id and aborts its unfinished transaction, so what the cursor topic
    /// says afterwards is final. The cursor record goes out with delivery token `token`.
    pub(crate) fn init(
        producer: Producer<O>,
        token: O::Token,
        cfg: &Config,
        id: String,
    ) -> Result<TransactionStore<O>, Failure> {
        let timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms.max(10_000));
        producer
            .init_transactions(timeout)
            .map_err(|e| init_error(&id, e))?;
        Ok(TransactionStore {
            producer,
            token,
            kafka: cfg.kafka.clone(),
            topic: cfg.delivery.cursor_topic.clone(),
            id,
            timeout: Duration::from_millis(cfg.delivery.transaction_timeout_ms),
            cache: FileStore::new(&cfg.state.directory, crate::journal::validate_place),
            open: false,
            cursor_sent: None,
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
    /// consumers, and its cursor record neither.
    pub(crate) fn abort(&mut self) {
        self.abort_within(self.timeout);
    }

    /// Aborts, waiting for the coordinator at most `limit` (a stop has a deadline).
    pub(crate) fn abort_within(&mut self, limit: Duration) {
        if self.open {
            self.open = false;
            self.cursor_sent = None;
            if let Err(e) = self.producer.abort_transaction(limit) {
                // The next session's init_transactions aborts it on the coordinator anyway.
                tracing::warn!(error = %e, "cannot abort the transaction; the next start aborts it");
            }
        }
    }
}

impl<O: Owner<Token: Copy>> TransactionStore<O> {
    /// The newest cursor committed for this id (the cursor file is only a cache).
    pub(crate) fn load(&mut self) -> Result<Option<String>> {
        let from_kafka = read_committed_cursor(&self.kafka, &self.topic, &self.id, self.timeout)?;
        let cached = self.cache.load().unwrap_or_else(|e| {
            tracing::warn!(error = format!("{e:#}"), "ignoring the cursor file cache");
            None
        });
        match (from_kafka, cached) {
            (Some(k), cached) => {
                if cached.as_deref() != Some(k.as_str()) {
                    if cached.is_some() {
                        tracing::info!(
                            "the cursor file differs from the cursor topic; the cursor topic wins (it is committed with the entries)"
                        );
                    }
                    // Keep the cache (what `cursor show` reads) in step with Kafka.
                    if let Err(e) = self.cache.mirror_committed(&k) {
                        tracing::debug!(
                            error = format!("{e:#}"),
                            "cannot update the cursor file cache"
                        );
                    }
                }
                Ok(Some(k))
            }
            (None, Some(c)) => {
                // First start in exactly-once mode after at-least-once: continue from the
                // file (entries up to it are in Kafka already, at least once).
                tracing::info!(
                    "no cursor for this transactional id in the cursor topic; continuing from the cursor file"
                );
                Ok(Some(c))
            }
            (None, None) => Ok(None),
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!("cursor topic {:?} (key {:?})", self.topic, self.id)
    }
}

impl<O: Owner<Token: Copy>> TransactionStore<O> {
    /// First half of `commit`: adds the cursor record to the open transaction. It may be
    /// sent before the entries are confirmed (it then shares their batch's linger time);
    /// `finish_commit` is only called once the watermark has reached this very cursor and
    /// the record's delivery report has come back.
    pub(crate) fn send_cursor(&mut self, cursor: &str) -> Result<(), Failure> {
        self.begin()?;
        let record = BaseRecord::with_opaque_to(&self.topic, self.token)
            .key(self.id.as_str())
            .payload(cursor);
        self.producer
            .send(record)
            .map_err(|(e, _)| txn_error("cannot produce the cursor record", e))?;
        self.cursor_sent = Some(cursor.to_string());
        Ok(())
    }

    /// Second half of `commit`: once the cursor record is confirmed, commits the transaction.
    /// The caller has waited for the cursor record's report itself: rdkafka's
    /// commit_transaction flushes first, and its flush polls in 100 ms steps for events
    /// that the producer's own polling thread takes, so anything outstanding costs 100 ms.
    pub(crate) fn finish_commit(&mut self, cursor: &SafeCursor) -> Result<(), Failure> {
        // The rule is kept here, where the place becomes durable: the cursor record in
        // this transaction must name the very place the watermark vouches for.
        if self.cursor_sent.as_deref() != Some(&**cursor) {
            return Err(Failure::retry(anyhow!(
                "refusing to commit a transaction whose cursor record names another place than the safe one"
            )));
        }
        // Every record of the transaction is confirmed now; commit them with the cursor.
        // On failure the transaction stays open, for the caller to abort.
        self.producer
            .commit_transaction(self.timeout)
            .map_err(|e| txn_error("cannot commit the transaction", e))?;
        self.open = false;
        self.cursor_sent = None;
        if let Err(e) = self.cache.commit(cursor) {
            tracing::debug!(
                error = format!("{e:#}"),
                "cannot update the cursor file cache"
            );
        }
        Ok(())
    }
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
