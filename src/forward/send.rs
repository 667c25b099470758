//! The Forward input's output side: one message's events handed to the sink
//! (`kafka::sink`), refused events sent again as the policy decided (`repair`), replaced
//! producers retired off the runtime (`retire`), and the broker probe.
//!
//! It must never hold the producer across a wait (a reload retires it once nothing holds
//! it), and never let a record leave the window or its chunk but through its report (or
//! `Window::refuse` when librdkafka did not take it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer as _;
use tokio::sync::OwnedSemaphorePermit;

use super::ack::{self, Chunk, Replies};
use super::msgpack::Malformed;
use super::protocol;
use super::record;
use super::server::{Shared, fwd, large_slot};
use crate::config::Config;
use crate::kafka::Outgoing;
use crate::kafka::sink::Sent;
use crate::metrics::Metrics;

/// Lets a replaced producer go off the Forward runtime: its reports still come (to the
/// same chunks and window) while it confirms what it holds, and it is dropped (its polling
/// thread joined, what it still holds purged: those chunks stay unacknowledged and their
/// clients resend them) only once nothing else holds it and nothing is in flight, or the
/// shutdown timeout has passed and nothing else holds it. A connection holds a producer
/// only while it hands one record over.
pub(super) fn retire(old: Arc<ack::Producer>, timeout: Duration) {
    let _ = std::thread::Builder::new()
        .name("forward-retire".into())
        .spawn(move || {
            let since = Instant::now();
            let mut purged = false;
            loop {
                let alone = Arc::strong_count(&old) == 1;
                if alone && (old.in_flight_count() == 0 || since.elapsed() >= timeout) {
                    break;
                }
                // Past the timeout whoever still holds it: what it holds is given up
                // (reported failed, so those chunks stay unacknowledged and are resent).
                if !purged && since.elapsed() >= timeout {
                    old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                    purged = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(old);
        });
}

/// With the Forward input alone, asks the brokers for metadata at start and every second
/// while none is known to answer: readiness then follows the brokers without waiting for a client's events, and a
/// connection failure (a wrong password) is named at once, not at the first event.
pub(super) async fn probe(shared: Arc<Shared>) {
    // Beside the journal, its session's probe already keeps the broker state (the same
    // brokers, the same credentials); `journal.enabled` cannot change by reload.
    if shared.config().journal.enabled {
        return;
    }
    loop {
        if !shared.metrics.broker_up.load(Ordering::Relaxed) {
            let p = shared.producer();
            // One topic's metadata (the fallback: every record may go there), not the
            // whole cluster's.
            let topic = fwd(&shared.config()).topic_fallback.clone();
            let answered = tokio::task::spawn_blocking(move || {
                p.client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .is_ok()
            })
            .await;
            if matches!(answered, Ok(true)) {
                shared.metrics.broker_state(true);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sends refused records again as the policy decided (`ack::ForwardOwner::refused`): alone
/// in a batch of their own, or to the dead-letter topic, through a producer made at the
/// first refusal (most agents never need it). Each stays counted in its chunk and the
/// window until its new report.
pub(super) async fn repair(shared: Arc<Shared>) {
    let mut producer: Option<(Arc<Config>, Arc<ack::Producer>)> = None;
    loop {
        shared.repairs.wake.notified().await;
        while let Some(r) = shared.repairs.pop() {
            let config = shared.config();
            // Made again for a reloaded configuration, or after a fatal error; the one it
            // replaces confirms what it holds off this runtime.
            let same_config = producer
                .as_ref()
                .is_some_and(|(c, _)| Arc::ptr_eq(c, &config));
            let fatal = producer
                .as_ref()
                .is_some_and(|(_, p)| p.context().owner().fatal.load(Ordering::Acquire));
            if !same_config || (fatal && shared.remake_due()) {
                if let Some((_, old)) = producer.take() {
                    retire(old, Duration::from_secs(30));
                }
                match shared.make_producer(&config, ack::Stage::Repair) {
                    Ok(p) => producer = Some((config.clone(), Arc::new(p))),
                    Err(e) => {
                        if let Some(repeats) = shared.refusals.admit("repair producer not made") {
                            tracing::error!(repeats, "forward input: {e:#}");
                        }
                    }
                }
            }
            let len = r.refused.payload.len();
            let Some((_, p)) = &producer else {
                shared.window.refuse(&r.chunk, len);
                continue;
            };
            let dlq = config.delivery.dead_letter_topic.clone();
            let (topic, headers) = if r.dead_letter {
                Metrics::add(&shared.metrics.records_dead_lettered, 1);
                if shared.refusals.admit("dead-letter").is_some() {
                    tracing::error!(topic = %r.refused.topic, error = %r.refused.error, dead_letter_topic = %dlq, "forward input: the broker refused an event for good; sent it to the dead-letter topic (counted in records_dead_lettered); its chunk is acknowledged once it is confirmed there");
                }
                (dlq.as_str(), crate::kafka::dead_letter_headers(&r.refused))
            } else {
                (
                    r.refused.topic.as_str(),
                    crate::kafka::owned_headers(&r.refused.headers),
                )
            };
            let out = Outgoing {
                topic,
                payload: &r.refused.payload,
                key: r.refused.key.as_deref(),
                headers,
                timestamp_ms: r.refused.timestamp_ms,
            };
            if let Err((e, t)) = hand_over(|| p.clone(), out, r.chunk.clone()).await {
                tracing::error!(topic, error = %e, "forward input: a refused record cannot be sent again; its chunk is not acknowledged");
                shared.window.refuse(&t, len);
            }
        }
    }
}

/// Hands a record of `chunk` to a producer, yielding while librdkafka's queue is full;
/// `producer` is asked again at every attempt and let go before waiting. When librdkafka
/// refuses the record itself, the error and the chunk come back (no report will come).
async fn hand_over(
    producer: impl Fn() -> Arc<ack::Producer>,
    mut out: Outgoing<'_>,
    mut chunk: Arc<Chunk>,
) -> Result<(), (rdkafka::error::KafkaError, Arc<Chunk>)> {
    loop {
        let sent = producer().try_send(out, chunk);
        match sent {
            Sent::Queued => return Ok(()),
            Sent::Full(back, c) => {
                (out, chunk) = (back, c);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Sent::Refused(e, c) => return Err((e, c)),
        }
    }
}

/// One message: every event sent to Kafka (waiting for room in the window), the ack
/// promised once they are all confirmed.
pub(super) async fn message(
    frame: &[u8],
    tx: &Replies,
    shared: &Shared,
    scratch: &mut Vec<u8>,
    value_buf: &mut Vec<u8>,
    large: &mut Option<(OwnedSemaphorePermit, Instant)>,
) -> Result<(), Malformed> {
    let config = shared.config();
    let cfg = fwd(&config);
    let msg = protocol::parse(frame)?;
    if msg.mode == protocol::Mode::CompressedPackedForward && large.is_none() {
        // Decompressing takes up to a message's worth more: a large slot's. Stopping
        // meanwhile: nothing of this message was sent, the client resends it.
        let Some(slot) = large_slot(shared).await else {
            return Ok(());
        };
        *large = Some(slot);
    }
    // Every event is decoded before the first is sent: a malformed message sends nothing.
    let events = msg.events(scratch, cfg.max_message_bytes)?;
    let chunk_id = msg.options.chunk;
    Metrics::add(&shared.metrics.forward_events, events.len() as u64);
    if chunk_id.is_some() {
        Metrics::add(&shared.metrics.forward_chunks, 1);
    }
    let chunk = Chunk::new(chunk_id, tx, shared.metrics.clone());
    let now_ms = crate::metrics::unix_now_usec() as i64 / 1000;
    let reserved = shared.reserved();
    let (msg_topic, msg_fell_back) = record::message_topic(cfg, msg.tag, &reserved);
    let mut id = String::new();
    for (i, ev) in events.iter().enumerate() {
        let rec = match record::encode(
            cfg,
            msg.tag,
            &ev,
            now_ms,
            &reserved,
            std::mem::take(value_buf),
        ) {
            Ok(r) => r,
            Err(e) => {
                // Checked by `events`: a record is a map. Anything else here is a bug.
                chunk.fail();
                chunk.sent_all();
                return Err(e);
            }
        };
        if rec.fell_back || (rec.topic.is_none() && msg_fell_back) {
            Metrics::add(&shared.metrics.topics_invalid, 1);
        }
        if rec.clamped {
            Metrics::add(&shared.metrics.timestamps_clamped, 1);
        }
        let topic = rec.topic.as_deref().unwrap_or(&msg_topic);
        shared.window.admit(&chunk, rec.value.len()).await;
        let len = rec.value.len();
        let out = Outgoing {
            topic,
            payload: &rec.value[..],
            key: rec.key,
            headers: record::headers(msg.tag, chunk_id, i, &mut id),
            timestamp_ms: rec.timestamp_ms,
        };
        // The current producer at every attempt: a reload must not find the producer it
        // retires held by a connection waiting for room.
        if let Err((e, t)) = hand_over(|| shared.producer(), out, chunk.clone()).await {
            Metrics::add(&shared.metrics.forward_events_failed, 1);
            tracing::error!(topic, error = %e, "forward input: a record cannot be queued; its chunk is not acknowledged");
            shared
                .metrics
                .error(format!("forward input: a record cannot be queued: {e}"));
            shared.window.refuse(&t, len);
        }
        Metrics::add(&shared.metrics.bytes_produced, len as u64);
        *value_buf = rec.value;
    }
    chunk.sent_all();
    Ok(())
}
