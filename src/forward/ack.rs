//! Kafka's confirmations turned into Forward acknowledgements: the Forward input's side of
//! the output seam (`ForwardOwner`), its in-flight window, and the chunk a record belongs
//! to.
//!
//! A chunk is acknowledged when its last record is confirmed (in its topic, or in the
//! dead-letter topic when the refusal policy sent it there) and none failed; a failed
//! record leaves its chunk unacknowledged for good (the client resends it, the dedup id
//! lets consumers drop the copies). The window is released only by delivery reports.
//!
//! Who touches what:
//!
//! | field                 | connection task (forward thread)     | `forward-poll` thread (delivery reports) |
//! |-----------------------|--------------------------------------|------------------------------------------|
//! | `Chunk::remaining`    | sets it, adds one per record sent, drops its own guard | subtracts one per report |
//! | `Chunk::failed`       | sets it when a record cannot be queued | sets it on a failed report (the repair task: when a resend cannot be queued) |
//! | `Chunk::reply`        | creates it                           | sends the ack through it, once           |
//! | `Window` permits      | takes them before sending            | gives them back (same length: the payload's) |
//!
//! The guard the connection holds while it still sends a chunk's records keeps a fast
//! report from acknowledging a chunk that is only half sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use tokio::sync::{Semaphore, mpsc};

use super::msgpack::write;
use crate::config::Config;
use crate::config::properties::Producer as Role;
use crate::kafka::sink::{self, Refused};
use crate::kafka::{Action, Policy};
use crate::logging::RateLimit;
use crate::metrics::Metrics;

/// A connection's replies (HELO, PONG, acks) on their way to its writer task, counted so
/// that the reading side can stop reading while a client does not take its acks: the
/// queue holds at most what the chunks in flight plus [`MAX_QUEUED_REPLIES`] produce.
#[derive(Clone)]
pub(crate) struct Replies {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// Replies a connection may have waiting for its client before it stops reading.
pub(crate) const MAX_QUEUED_REPLIES: usize = 1024;

impl Replies {
    pub(crate) fn new() -> (Replies, mpsc::UnboundedReceiver<Vec<u8>>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Replies {
                tx,
                queued: queued.clone(),
            },
            rx,
            queued,
        )
    }

    /// Queues a reply; false when the connection's writer is gone.
    pub(crate) fn send(&self, bytes: Vec<u8>) -> bool {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(bytes).is_ok() {
            true
        } else {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }

    /// Replies queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The writer is gone (the connection was lost, or the client took no reply for a
    /// minute): nothing more will be written.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the writer is gone (see [`Replies::is_closed`]).
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A message's events on their way to Kafka.
pub(crate) struct Chunk {
    /// Records not yet reported, plus one while the connection is still sending.
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// `{"ack": chunk}` and the connection's writer; `None`: no ack asked.
    reply: Option<(Vec<u8>, Replies)>,
    metrics: Arc<Metrics>,
}

impl Chunk {
    /// A chunk whose sender holds one guard (see [`Chunk::sent_all`]).
    pub(crate) fn new(id: Option<&[u8]>, writer: &Replies, metrics: Arc<Metrics>) -> Arc<Chunk> {
        let reply = id.map(|id| {
            let mut ack = Vec::with_capacity(id.len() + 8);
            write::map_len(&mut ack, 1);
            write::str(&mut ack, b"ack");
            write::str(&mut ack, id);
            (ack, writer.clone())
        });
        Arc::new(Chunk {
            remaining: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            reply,
            metrics,
        })
    }

    fn add_record(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    /// A record of this chunk will never be confirmed.
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// The sender is done with this chunk (all records sent, or it gave up on it).
    pub(crate) fn sent_all(&self) {
        self.release();
    }

    fn release(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        if let Some((ack, writer)) = &self.reply {
            // A closed connection cannot take its ack: the client resends the chunk.
            if writer.send(ack.clone()) {
                Metrics::add(&self.metrics.forward_acks, 1);
            }
        }
    }
}

/// The Forward input's records in the sink (`kafka::sink`): a confirmed record counts
/// down its chunk; a record refused for its own fault goes through the refusal policy
/// (`kafka::Policy`, the journal's rule): sent again alone, or to the dead-letter topic,
/// by the repair task, still counting in its chunk; a failed one leaves its chunk
/// unacknowledged.
pub(crate) struct ForwardOwner {
    metrics: Arc<Metrics>,
    window: Arc<Window>,
    repairs: Arc<Repairs>,
    /// Whose reports these are: the producer of connections (a first refusal) or the
    /// repair producer (a record the policy already sent again).
    stage: Stage,
    repeats: RateLimit,
    /// librdkafka declared the producer unusable; a new one is made.
    pub(crate) fatal: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Connections,
    Repair,
}

impl sink::Owner for ForwardOwner {
    type Token = Arc<Chunk>;
    const INPUT: &'static str = "forward";

    fn acknowledged(&self, chunk: Arc<Chunk>, len: usize) {
        Metrics::add(&self.metrics.forward_events_delivered, 1);
        self.window.give(len);
        chunk.release();
    }

    fn refused(&self, chunk: Arc<Chunk>, r: Refused) {
        let attempt = match self.stage {
            Stage::Connections => 0,
            Stage::Repair => 1,
        };
        let action = self
            .repairs
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .decide(r.class, &r.topic, r.payload.len(), attempt);
        if self.stage == Stage::Connections {
            Metrics::add(&self.metrics.records_refused, 1);
        }
        match action {
            Action::Fail(why) => {
                let error = format!("delivery to topic {} failed: {} ({why})", r.topic, r.error);
                self.failed(chunk, r.payload.len(), r.kind, error);
            }
            // The policy has no `shrink` for a client's record (`shrink_from` is `None`).
            Action::Alone | Action::Shrink(_) => self.repairs.push(Repair {
                chunk,
                refused: r,
                dead_letter: false,
            }),
            Action::DeadLetter => self.repairs.push(Repair {
                chunk,
                refused: r,
                dead_letter: true,
            }),
        }
    }

    fn failed(&self, chunk: Arc<Chunk>, len: usize, _kind: String, error: String) {
        Metrics::add(&self.metrics.forward_events_failed, 1);
        let line = format!("forward input: {error}");
        if let Some(repeats) = self.repeats.admit(&line) {
            tracing::error!(
                repeats,
                "{line}; the chunk is not acknowledged and the client will resend it"
            );
        }
        self.metrics.error(line);
        chunk.fail();
        self.window.give(len);
        chunk.release();
    }

    fn fatal(&self, reason: &str) {
        if let Some(repeats) = self.repeats.admit("fatal") {
            tracing::error!(
                reason,
                repeats,
                "forward input: fatal producer error; unconfirmed chunks stay unacknowledged and a new producer is made"
            );
        }
        self.fatal.store(true, Ordering::Release);
    }
}

/// A refused record the policy sends again, still counted in its chunk and the window.
pub(crate) struct Repair {
    pub(crate) chunk: Arc<Chunk>,
    pub(crate) refused: Refused,
    /// To the dead-letter topic (else to its own topic, alone in its batch).
    pub(crate) dead_letter: bool,
}

/// Refused records waiting for the repair task (`server::repair`), and the policy.
pub(crate) struct Repairs {
    /// Replaced by a reload.
    pub(crate) policy: std::sync::RwLock<Policy>,
    queue: std::sync::Mutex<std::collections::VecDeque<Repair>>,
    pub(crate) wake: tokio::sync::Notify,
}

impl Repairs {
    pub(crate) fn new(cfg: &Config) -> Repairs {
        Repairs {
            policy: std::sync::RwLock::new(Repairs::policy(cfg)),
            queue: std::sync::Mutex::new(std::collections::VecDeque::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The refusal policy of `cfg` for Forward records.
    pub(crate) fn policy(cfg: &Config) -> Policy {
        let fwd = cfg.forward.as_ref().expect("forward is configured");
        let fixed = match fwd.topic.as_slice() {
            [crate::config::ForwardPart::Literal(t)] => Some(t.clone()),
            _ => None,
        };
        Policy {
            on_too_large: cfg.delivery.on_too_large,
            on_topic_refused: cfg.delivery.on_topic_refused,
            dead_letter_topic: cfg.delivery.dead_letter_topic.clone(),
            common_topics: fixed
                .into_iter()
                .chain([fwd.topic_fallback.clone()])
                .collect(),
            // A client's record is never cut: it is sent as it came, or dead-lettered.
            shrink_from: None,
        }
    }

    fn push(&self, r: Repair) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(r);
        self.wake.notify_one();
    }

    pub(crate) fn pop(&self) -> Option<Repair> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

/// The Forward input's producers.
pub(crate) type Producer = sink::Producer<ForwardOwner>;

/// Makes a producer: the same client settings (and guarantee) as the journal's, with what
/// a Forward producer needs (`config::properties::Producer::Forward`): a short linger, room
/// for a client's largest message, no statistics; the repair producer sends one record per
/// batch.
pub(crate) fn producer(
    cfg: &Config,
    window: Arc<Window>,
    metrics: Arc<Metrics>,
    repairs: Arc<Repairs>,
    stage: Stage,
) -> Result<Producer> {
    let fwd = cfg.forward.as_ref().expect("forward is configured");
    let (max_message_bytes, max_in_flight_bytes) = (fwd.max_message_bytes, fwd.max_in_flight_bytes);
    let role = match stage {
        Stage::Connections => Role::Forward {
            max_message_bytes,
            max_in_flight_bytes,
        },
        Stage::Repair => Role::ForwardRepair {
            max_message_bytes,
            max_in_flight_bytes,
        },
    };
    let c = crate::kafka::producer_config(&cfg.kafka, &cfg.pipeline, role);
    let owner = ForwardOwner {
        metrics: metrics.clone(),
        window,
        repairs,
        stage,
        repeats: RateLimit::default(),
        fatal: AtomicBool::new(false),
    };
    let thread = match stage {
        Stage::Connections => "forward-poll",
        Stage::Repair => "forward-repair",
    };
    sink::create(&c, owner, metrics, thread).with_context(|| match stage {
        Stage::Connections => "cannot create the Forward input's Kafka producer",
        Stage::Repair => "cannot create the Forward input's producer for refused records",
    })
}

/// The in-flight window, in bytes of record value plus bookkeeping.
pub(crate) struct Window {
    pub(crate) sem: Arc<Semaphore>,
    pub(crate) max: u32,
}

/// What a record costs beyond its value while in flight (as the journal path counts it).
const RECORD_BOOKKEEPING: usize = 256;

impl Window {
    pub(crate) fn new(bytes: usize) -> Window {
        let max = bytes.min(u32::MAX as usize / 2) as u32;
        Window {
            sem: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// What a record of `len` value bytes holds of the window: one larger than the window
    /// takes all of it, so it waits for an empty window and then passes alone.
    fn permits(&self, len: usize) -> u32 {
        (len + RECORD_BOOKKEEPING).min(self.max as usize) as u32
    }

    /// Waits for room for a record of `len` bytes of `chunk`. The delivery report (or
    /// [`Window::refuse`]) gives the room back, from the same length.
    pub(crate) async fn admit(&self, chunk: &Chunk, len: usize) {
        // The semaphore is never closed.
        if let Ok(p) = self.sem.acquire_many(self.permits(len)).await {
            p.forget();
        }
        chunk.add_record();
    }

    pub(crate) fn give(&self, len: usize) {
        self.sem.add_permits(self.permits(len) as usize);
    }

    /// A record admitted for `chunk` never reached the producer.
    pub(crate) fn refuse(&self, chunk: &Chunk, len: usize) {
        self.give(len);
        chunk.fail();
        chunk.release();
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.max as usize - self.sem.available_permits()
    }
}
