//! Listeners and connections: accept (TCP, TLS, Unix socket), handshake, read frames, hand
//! each message to `send`, write acknowledgements back. `Shared` is what every connection
//! and task of the runtime shares.
//!
//! All connections are tasks of one tokio runtime on the `forward` thread; each has a
//! writer task for its acks. A connection stops reading while the window is full or while
//! its client leaves more than `ack::MAX_QUEUED_REPLIES` replies unread (the sender then
//! sees TCP backpressure), and is closed, with the reason logged (rate-limited), at its
//! first malformed message: other connections never notice.
//!
//! Memory is bounded whatever clients send. A connection holds at most [`SMALL_MESSAGE`]
//! bytes of a message on its own; a larger message, and any gzip decompression, needs one
//! of a few *large slots* shared by all connections (`large_slots`), held while it is read,
//! decompressed and handed to the producer. A slot held for reading longer than
//! [`LARGE_READ_DEADLINE`] closes the connection, so trickling clients cannot keep the slots.
//! Events are checked whole and then read again one by one (`protocol::EventList`): no
//! memory per event, however many a few kilobytes of gzip inflate to. A connection that
//! sends nothing for [`IDLE_TIMEOUT`] is closed (clients reconnect).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rdkafka::producer::Producer as _;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::ack::{self, Replies, Window};
use super::handshake::{Handshake, Keys};
use super::msgpack::{Scan, value_len_from};
use super::send;
use crate::config::{Config, ForwardConfig};
use crate::logging::RateLimit;
use crate::metrics::Metrics;

/// How often the runtime stamps its heartbeat.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(250);

/// How long a client has to finish the TLS and shared-key handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Read size; a message larger than this arrives over several reads.
const READ_CHUNK: usize = 64 * 1024;

/// A message up to this size is read with the connection's own memory; a larger one, and
/// any decompression, waits for a large slot.
pub(crate) const SMALL_MESSAGE: usize = 256 * 1024;

/// Memory all large slots may hold together: each holds up to a message and its
/// decompressed entries (two times `forward.max_message_bytes`), so this makes 4 slots at
/// the default 8 MiB (at least one whatever the setting).
pub(crate) const LARGE_BUDGET: usize = 64 << 20;

/// The longest a connection may hold a large slot while its message is still arriving.
const LARGE_READ_DEADLINE: Duration = Duration::from_secs(60);

/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A client that takes none of its replies for this long has its connection closed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a connection whose writer gave up (`REPLY_TIMEOUT`, or the connection lost) ends.
const STOPPED_TAKING_REPLIES: &str = "the client stopped taking its replies";

/// How many large slots `max_message_bytes` allows.
pub(crate) fn large_slots(max_message_bytes: usize) -> usize {
    (LARGE_BUDGET / (2 * max_message_bytes.max(1))).max(1)
}

/// What every connection shares.
pub(super) struct Shared {
    /// The configuration the producers are made from and messages are read with; a reload
    /// replaces it (`Server::reload`). Listener settings stay those of the start.
    pub(super) config: std::sync::Mutex<Arc<Config>>,
    /// Moves when a reload changes who may send (shared key, users, own hostname):
    /// connections that passed the handshake before are closed at their next message.
    pub(super) auth_generation: AtomicU64,
    pub(super) metrics: Arc<Metrics>,
    pub(super) producer: std::sync::Mutex<Arc<ack::Producer>>,
    pub(super) window: Arc<Window>,
    pub(super) repairs: Arc<ack::Repairs>,
    pub(super) stop: watch::Receiver<bool>,
    /// Large slots (see the module's notes).
    pub(super) large: Arc<Semaphore>,
    /// Refused connections are logged once a minute per reason, with the count between.
    pub(super) refusals: RateLimit,
    /// `config`'s reserved topics, made once per configuration rather than per message.
    pub(super) reserved: std::sync::Mutex<Arc<Vec<String>>>,
    /// When a producer was last made again after a fatal error.
    pub(super) remade: std::sync::Mutex<Option<Instant>>,
    /// The runtime's heartbeat (the watchdog): a task stamps it every `HEARTBEAT`.
    pub(super) report: crate::lifecycle::Report,
}

/// The Forward section of a configuration that has one.
pub(super) fn fwd(cfg: &Config) -> &ForwardConfig {
    cfg.forward.as_ref().expect("forward is configured")
}

impl Shared {
    /// The topics no template may make (`config::made_topic_usable`), of the current
    /// configuration.
    pub(super) fn reserved(&self) -> Arc<Vec<String>> {
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current producer, replaced after a fatal error (its unconfirmed chunks were
    /// never acknowledged, so their clients resend them to the new one).
    pub(super) fn producer(&self) -> Arc<ack::Producer> {
        let mut g = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if g.context().owner().fatal.load(Ordering::Acquire) && self.remake_due() {
            match self.make_producer(&self.config(), ack::Stage::Connections) {
                Ok(p) => send::retire(std::mem::replace(&mut *g, Arc::new(p)), Duration::ZERO),
                Err(e) => {
                    if let Some(repeats) = self.refusals.admit("producer not made") {
                        tracing::error!(repeats, "forward input: {e:#}");
                    }
                }
            }
        }
        g.clone()
    }

    /// A producer that keeps going fatal (an ACL that refuses idempotent writes) is made
    /// again at most once a second, not once per record.
    pub(super) fn remake_due(&self) -> bool {
        let mut last = self.remade.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    pub(super) fn make_producer(&self, cfg: &Config, stage: ack::Stage) -> Result<ack::Producer> {
        ack::producer(
            cfg,
            self.window.clone(),
            self.metrics.clone(),
            self.repairs.clone(),
            stage,
        )
    }
}

pub(super) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<openssl::ssl::SslAcceptor> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .context("cannot set up TLS")?;
    b.set_certificate_chain_file(cert)
        .with_context(|| format!("forward.tls_cert: cannot load {}", cert.display()))?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .with_context(|| format!("forward.tls_key: cannot load {}", key.display()))?;
    b.check_private_key()
        .context("forward.tls_key does not match forward.tls_cert")?;
    Ok(b.build())
}

pub(super) async fn serve(
    shared: Arc<Shared>,
    tcp: Option<std::net::TcpListener>,
    unix: Option<std::os::unix::net::UnixListener>,
    tls: Option<Arc<openssl::ssl::SslAcceptor>>,
    shutdown_timeout: Duration,
) {
    let started = shared.config();
    let slots = Arc::new(Semaphore::new(fwd(&started).max_connections));
    // Refused records the policy sends again, and the heartbeat the watchdog reads: both
    // outlive the accept loop (the last reports and repairs come during the drain).
    let repairer = tokio::spawn(send::repair(shared.clone()));
    let heart = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                shared.report.beat();
                tokio::time::sleep(HEARTBEAT).await;
            }
        })
    };
    let probe = tokio::spawn(send::probe(shared.clone()));
    let tcp = tcp.map(|l| tokio::net::TcpListener::from_std(l).expect("a listener for tokio"));
    let unix = unix.map(|l| tokio::net::UnixListener::from_std(l).expect("a listener for tokio"));
    let mut stop = shared.stop.clone();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted: Option<(Box<dyn Stream>, String)> = tokio::select! {
            _ = stop.changed() => break,
            Some(r) = async { match &tcp { Some(l) => Some(l.accept().await), None => None } } => match r {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    match &tls {
                        Some(tls) => {
                            let tls = tls.clone();
                            let shared2 = shared.clone();
                            // The TLS handshake runs in the connection's own task.
                            if let Ok(slot) = slots.clone().try_acquire_owned() {
                                conns.spawn(async move {
                                    let _slot = slot;
                                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_tls(&tls, s)).await {
                                        Ok(Ok(s)) => connection(Box::new(s), peer.to_string(), shared2).await,
                                        Ok(Err(e)) => refused(&shared2, &peer.to_string(), &format!("TLS handshake failed: {e}")),
                                        Err(_) => refused(&shared2, &peer.to_string(), "TLS handshake timed out"),
                                    }
                                });
                            } else {
                                refused(&shared, &peer.to_string(), "forward.max_connections reached");
                            }
                            None
                        }
                        None => Some((Box::new(s) as Box<dyn Stream>, peer.to_string())),
                    }
                }
                Err(e) => {
                    accept_failed(&shared, &e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    None
                }
            },
            Some(r) = async { match &unix { Some(l) => Some(l.accept().await), None => None } } => match r {
                Ok((s, _)) => Some((Box::new(s) as Box<dyn Stream>, "unix socket".to_string())),
                Err(e) => {
                    accept_failed(&shared, &e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    None
                }
            },
        };
        let Some((stream, peer)) = accepted else {
            continue;
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let shared = shared.clone();
                conns.spawn(async move {
                    let _slot = slot;
                    connection(stream, peer, shared).await;
                });
            }
            Err(_) => refused(&shared, &peer, "forward.max_connections reached"),
        }
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    // Stop: connections stop reading on the same signal; what they sent is confirmed and
    // acknowledged until the deadline.
    drop(tcp);
    drop(unix);
    let deadline = Instant::now() + shutdown_timeout;
    while shared.window.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if shared.window.in_flight() > 0 {
        tracing::warn!(
            bytes = shared.window.in_flight(),
            "forward input: records still unconfirmed at the shutdown deadline; their chunks stay unacknowledged and the clients resend them"
        );
    }
    // Acks queued by the last reports get written.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
    repairer.abort();
    heart.abort();
    probe.abort();
    if let Some(p) = &fwd(&started).socket {
        let _ = std::fs::remove_file(p);
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

async fn accept_tls(
    acceptor: &openssl::ssl::SslAcceptor,
    s: tokio::net::TcpStream,
) -> Result<tokio_openssl::SslStream<tokio::net::TcpStream>> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context())?;
    let mut s = tokio_openssl::SslStream::new(ssl, s)?;
    std::pin::Pin::new(&mut s)
        .accept()
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(s)
}

/// An accept error (out of descriptors in a connection flood): the listener waits and
/// goes on; the log gets one line a minute, not ten a second.
fn accept_failed(shared: &Shared, e: &std::io::Error) {
    if let Some(repeats) = shared.refusals.admit("accept failed") {
        tracing::warn!(error = %e, repeats_in_last_minute = repeats, "forward input: accept failed; waiting");
    }
}

fn refused(shared: &Shared, peer: &str, why: &str) {
    Metrics::add(&shared.metrics.forward_rejected, 1);
    // A flood of refusals (a scanner, a client stuck in a loop) is one line a minute per
    // reason; the text of the reason may name the client's mistake, never its data.
    // Keyed by the reason without its numbers (byte counts, element counts vary per
    // client), so a client cannot make every refusal a new line by varying them.
    let kind: String = why
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(100)
        .collect();
    if let Some(repeats) = shared.refusals.admit(&kind) {
        tracing::warn!(
            peer,
            repeats_in_last_minute = repeats,
            "forward input: connection closed: {why}"
        );
    }
}

/// Serves one connection until the client closes it, it sends something malformed, or
/// the agent stops.
async fn connection(stream: Box<dyn Stream>, peer: String, shared: Arc<Shared>) {
    Metrics::add(&shared.metrics.forward_connections_total, 1);
    shared
        .metrics
        .forward_connections_open
        .fetch_add(1, Ordering::Relaxed);
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx, queued) = Replies::new();
    let (close_tx, close_rx) = watch::channel(false);
    let writer = tokio::spawn(write_replies(wr, rx, queued, close_rx));
    let end = read_loop(rd, &tx, &peer, &shared).await;
    if let Err(why) = end {
        refused(&shared, &peer, &why);
        // Close at once: a client that sent garbage gets no more acks on this connection.
        let _ = close_tx.send(true);
    }
    // The writer ends when the last pending chunk of this connection is reported (or at
    // once after an error): acks for confirmed chunks still reach a client that is done
    // sending.
    drop(tx);
    let _ = writer.await;
    shared
        .metrics
        .forward_connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

async fn write_replies<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    mut close: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(bytes) => {
                    // A client that takes no replies for this long is gone for our
                    // purposes: the connection closes (its unacknowledged chunks are
                    // resent by the client, as after any lost connection).
                    let written = tokio::time::timeout(REPLY_TIMEOUT, wr.write_all(&bytes)).await;
                    queued.fetch_sub(1, Ordering::AcqRel);
                    if !matches!(written, Ok(Ok(()))) {
                        return;
                    }
                }
                None => break,
            },
            _ = close.changed() => break,
        }
    }
    let _ = wr.shutdown().await;
}

/// A connection back to messages that fit its own memory: the large slot and the buffers
/// it paid for go back (decompressed entries and large record values are a slot's memory,
/// not kept for the connection's life).
fn back_to_own_memory(
    buf: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    value_buf: &mut Vec<u8>,
    large: &mut Option<(OwnedSemaphorePermit, Instant)>,
) {
    *large = None;
    if buf.capacity() > 4 * READ_CHUNK && buf.len() < READ_CHUNK {
        buf.shrink_to(READ_CHUNK);
    }
    if scratch.capacity() > 0 {
        *scratch = Vec::new();
    }
    if value_buf.capacity() > SMALL_MESSAGE {
        *value_buf = Vec::new();
    }
}

/// How long the next read may take, and why the connection is closed if it takes longer
/// (`None`: idle between messages, a quiet close).
fn read_deadline(
    in_handshake: bool,
    opened: Instant,
    large: &Option<(OwnedSemaphorePermit, Instant)>,
    between_messages: bool,
) -> (Duration, Option<&'static str>) {
    match (in_handshake, large) {
        (true, _) => (
            HANDSHAKE_TIMEOUT.saturating_sub(opened.elapsed()),
            Some("no PING within the handshake timeout"),
        ),
        (false, Some((_, since))) => (
            LARGE_READ_DEADLINE.saturating_sub(since.elapsed()),
            Some(
                "a large message did not arrive within 60 s (it holds memory shared with other clients)",
            ),
        ),
        (false, None) if between_messages => (IDLE_TIMEOUT, None),
        (false, None) => (
            IDLE_TIMEOUT,
            Some("no byte of the message's rest for 10 minutes"),
        ),
    }
}

/// Reads messages until EOF (`Ok`) or a reason to close the connection (`Err`).
async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    tx: &Replies,
    peer: &str,
    shared: &Shared,
) -> Result<(), String> {
    // The handshake is the one of the configuration this connection began under; the
    // rest is read again for every message (a reload applies to the next one).
    // The generation first: a reload stores the configuration, then moves the generation,
    // so a connection that read an old configuration always sees the move.
    let generation = shared.auth_generation.load(Ordering::Acquire);
    let config = shared.config();
    let cfg = fwd(&config);
    let limit = cfg.max_message_bytes;
    let mut stop = shared.stop.clone();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut start = 0usize;
    let mut handshake = cfg
        .shared_key
        .as_ref()
        .map(|_| Handshake::new(!cfg.users.is_empty()));
    let opened = Instant::now();
    if let Some(h) = &handshake {
        let _ = tx.send(h.helo());
    }
    let mut scratch = Vec::new();
    let mut value_buf = Vec::new();
    let mut scan = Scan::default();
    // A large slot, and since when this connection holds it for reading.
    let mut large: Option<(OwnedSemaphorePermit, Instant)> = None;
    loop {
        // Every complete message in the buffer first (while the client takes its replies).
        let mut stopped_for_replies = false;
        loop {
            if tx.queued() > ack::MAX_QUEUED_REPLIES {
                stopped_for_replies = true;
                break;
            }
            let frame_len =
                value_len_from(&buf[start..], limit, &mut scan).map_err(|e| e.to_string())?;
            let Some(n) = frame_len else {
                break;
            };
            let frame = &buf[start..start + n];
            if shared.auth_generation.load(Ordering::Acquire) != generation {
                return Err(
                    "who may send changed (reload: shared key, users or self_hostname): the client must connect again".into(),
                );
            }
            if let Some(h) = &handshake {
                let keys = Keys {
                    shared_key: cfg.shared_key.as_ref().expect("a key with a handshake"),
                    self_hostname: &cfg.self_hostname,
                    users: &cfg.users,
                };
                let (pong, verdict) = h.ping(frame, &keys).map_err(|e| e.to_string())?;
                let _ = tx.send(pong);
                verdict.map_err(|why| format!("handshake refused: {why}"))?;
                tracing::debug!(peer, "forward input: handshake passed");
                handshake = None;
            } else {
                send::message(frame, tx, shared, &mut scratch, &mut value_buf, &mut large)
                    .await
                    .map_err(|e| format!("malformed message: {e}"))?;
            }
            start += n;
        }
        // Keep the unread tail only.
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        if buf.len() <= SMALL_MESSAGE {
            back_to_own_memory(&mut buf, &mut scratch, &mut value_buf, &mut large);
        }
        // A client that does not read its acks is not read either. The writer gives up
        // after REPLY_TIMEOUT (or at once when the connection is lost) and drops its end:
        // then this connection ends too, with whatever slot it holds.
        while tx.queued() > ack::MAX_QUEUED_REPLIES {
            if tx.is_closed() {
                return Err(STOPPED_TAKING_REPLIES.into());
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
        // The buffer may still hold complete messages: they are taken before the socket is
        // read again. A client that has sent everything and now only reads its acks would
        // otherwise wait for acks of chunks never produced (stop 42's CI failure).
        if stopped_for_replies {
            continue;
        }
        if buf.len() >= SMALL_MESSAGE && handshake.is_some() {
            return Err("a handshake message larger than 256 KiB".into());
        }
        if buf.len() >= SMALL_MESSAGE && large.is_none() {
            let Some(slot) = large_slot(shared).await else {
                return Ok(());
            };
            large = Some(slot);
        }
        if large.is_some() {
            // Grown in place (mremap for large blocks) rather than doubled: a slot's
            // memory is the message, not twice it.
            buf.reserve_exact(READ_CHUNK);
        } else {
            buf.reserve(READ_CHUNK);
        }
        let old = buf.len();
        buf.resize(old + READ_CHUNK, 0);
        let (timeout, why) = read_deadline(handshake.is_some(), opened, &large, old == 0);
        // A writer that gave up while this side still reads (fewer than
        // MAX_QUEUED_REPLIES waiting) ends the connection too: reading on would produce
        // events whose acks go nowhere, for as long as the client sends.
        let got = tokio::select! {
            r = tokio::time::timeout(timeout, rd.read(&mut buf[old..])) => r,
            _ = stop.changed() => return Ok(()),
            _ = tx.closed() => return Err(STOPPED_TAKING_REPLIES.into()),
        };
        let n = match got {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                buf.truncate(old);
                return Err(format!("read failed: {e}"));
            }
            Err(_) => match why {
                Some(why) => return Err(why.into()),
                None => {
                    tracing::debug!(peer, "forward input: idle connection closed");
                    return Ok(());
                }
            },
        };
        buf.truncate(old + n);
        if n == 0 {
            if !buf.is_empty() {
                return Err(format!(
                    "the connection closed in the middle of a message ({} bytes unread)",
                    buf.len()
                ));
            }
            return Ok(());
        }
    }
}

/// Waits for a large slot, and says since when it is held; `None` when the agent stops
/// first.
pub(super) async fn large_slot(shared: &Shared) -> Option<(OwnedSemaphorePermit, Instant)> {
    let mut stop = shared.stop.clone();
    tokio::select! {
        s = shared.large.clone().acquire_owned() => {
            Some((s.expect("the semaphore is never closed"), Instant::now()))
        }
        _ = stop.changed() => None,
    }
}
