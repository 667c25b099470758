//! Listeners and connections: accept (TCP, TLS, Unix socket), handshake, read frames,
//! send each event to Kafka, write acknowledgements back.
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

use crate::kafka::Outgoing;
use crate::kafka::sink::Sent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::ack::{self, Chunk, Replies, Window};
use super::handshake::{Handshake, Keys};
use super::msgpack::{Malformed, Scan, value_len_from};
use super::protocol;
use super::record;
use crate::config::{Config, ForwardConfig};
use crate::logging::RateLimit;
use crate::metrics::Metrics;

/// How often the runtime stamps its heartbeat.
const HEARTBEAT: Duration = Duration::from_millis(250);

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

/// How many large slots `max_message_bytes` allows.
pub(crate) fn large_slots(max_message_bytes: usize) -> usize {
    (LARGE_BUDGET / (2 * max_message_bytes.max(1))).max(1)
}

/// What every connection shares.
struct Shared {
    /// The configuration the producers are made from and messages are read with; a reload
    /// replaces it (`Server::reload`). Listener settings stay those of the start.
    config: std::sync::Mutex<Arc<Config>>,
    /// Moves when a reload changes who may send (shared key, users, own hostname):
    /// connections that passed the handshake before are closed at their next message.
    auth_generation: AtomicU64,
    metrics: Arc<Metrics>,
    producer: std::sync::Mutex<Arc<ack::Producer>>,
    window: Arc<Window>,
    repairs: Arc<ack::Repairs>,
    stop: watch::Receiver<bool>,
    /// Large slots (see the module's notes).
    large: Arc<Semaphore>,
    /// Refused connections are logged once a minute per reason, with the count between.
    refusals: RateLimit,
    /// `config`'s reserved topics, made once per configuration rather than per message.
    reserved: std::sync::Mutex<Arc<Vec<String>>>,
    /// When a producer was last made again after a fatal error.
    remade: std::sync::Mutex<Option<Instant>>,
    /// The runtime's heartbeat (the watchdog): a task stamps it every `HEARTBEAT`.
    report: crate::lifecycle::Report,
}

/// The Forward section of a configuration that has one.
fn fwd(cfg: &Config) -> &ForwardConfig {
    cfg.forward.as_ref().expect("forward is configured")
}

impl Shared {
    /// The topics no template may make (`config::made_topic_usable`), of the current
    /// configuration.
    fn reserved(&self) -> Arc<Vec<String>> {
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current producer, replaced after a fatal error (its unconfirmed chunks were
    /// never acknowledged, so their clients resend them to the new one).
    fn producer(&self) -> Arc<ack::Producer> {
        let mut g = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        if g.context().owner().fatal.load(Ordering::Acquire) && self.remake_due() {
            match self.make_producer(&self.config(), ack::Stage::Connections) {
                Ok(p) => retire(std::mem::replace(&mut *g, Arc::new(p)), Duration::ZERO),
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
    fn remake_due(&self) -> bool {
        let mut last = self.remade.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn make_producer(&self, cfg: &Config, stage: ack::Stage) -> Result<ack::Producer> {
        ack::producer(
            cfg,
            self.window.clone(),
            self.metrics.clone(),
            self.repairs.clone(),
            stage,
        )
    }
}

/// The running Forward input.
pub(crate) struct Server {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
    /// Where it listens, for logs and `status`.
    pub(crate) listening: Vec<String>,
}

/// Binds the listeners (an address in use is an error now, not later) and starts serving.
pub(crate) fn start(
    cfg: &Config,
    metrics: Arc<Metrics>,
    shutdown_timeout: Duration,
) -> Result<Server> {
    let fwd = fwd(cfg);
    let mut listening = Vec::new();
    let tcp = match &fwd.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("forward.listen: cannot listen on {addr}"))?;
            l.set_nonblocking(true)?;
            listening.push(format!(
                "{}://{}",
                if fwd.tls.is_some() { "tls" } else { "tcp" },
                l.local_addr()?
            ));
            Some(l)
        }
        None => None,
    };
    let unix = match &fwd.socket {
        Some(path) => {
            // A socket left by an earlier run: nobody listens on it any more.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                && std::os::unix::net::UnixStream::connect(path).is_err()
            {
                let _ = std::fs::remove_file(path);
            }
            let l = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("forward.socket: cannot listen on {}", path.display()))?;
            l.set_nonblocking(true)?;
            // The unit's UMask=0077 would leave it to the agent's user alone: applications
            // in the agent's group may send.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
                .with_context(|| {
                    format!("forward.socket: cannot set the mode of {}", path.display())
                })?;
            listening.push(format!("unix:{}", path.display()));
            Some(l)
        }
        None => None,
    };
    let tls = match &fwd.tls {
        Some((cert, key)) => Some(Arc::new(tls_acceptor(cert, key)?)),
        None => None,
    };
    let window = Arc::new(Window::new(fwd.max_in_flight_bytes));
    let repairs = Arc::new(ack::Repairs::new(cfg));
    let producer = ack::producer(
        cfg,
        window.clone(),
        metrics.clone(),
        repairs.clone(),
        ack::Stage::Connections,
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        window,
        repairs,
        metrics,
        producer: std::sync::Mutex::new(Arc::new(producer)),
        config: std::sync::Mutex::new(Arc::new(cfg.clone())),
        auth_generation: AtomicU64::new(0),
        stop: stop_rx,
        large: Arc::new(Semaphore::new(large_slots(fwd.max_message_bytes))),
        refusals: RateLimit::default(),
        report: crate::lifecycle::Report::default(),
        remade: std::sync::Mutex::new(None),
        reserved: std::sync::Mutex::new(Arc::new(cfg.delivery.reserved_topics())),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the Forward input's runtime")?;
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("forward".into())
            .spawn(move || rt.block_on(serve(shared, tcp, unix, tls, shutdown_timeout)))
            .context("cannot start the Forward input's thread")?
    };
    Ok(Server {
        stop: stop_tx,
        thread: Some(thread),
        shared,
        shutdown_timeout,
        listening,
    })
}

impl crate::lifecycle::Input for Server {
    fn name(&self) -> &'static str {
        "forward"
    }

    /// Ready once it listens: the listeners are bound before the input is handed over.
    fn started(&self) -> Option<String> {
        Some(format!(
            "forward input listening on {}",
            self.listening.join(", ")
        ))
    }

    fn unhealthy(&self) -> Option<String> {
        (!self.running()).then(|| "the forward input's thread ended".to_string())
    }

    /// Its runtime's heartbeat: a wedged task would hold every connection.
    fn alive(&self, within: Duration) -> bool {
        self.running() && self.shared.report.beat_within(within.max(2 * HEARTBEAT))
    }

    fn status(&self) -> String {
        let m = &self.shared.metrics;
        format!(
            "forward: {} connections, {} chunks acknowledged",
            m.forward_connections_open.load(Ordering::Relaxed),
            Metrics::get(&m.forward_acks)
        )
    }

    fn ended(&mut self) -> Option<crate::error::Failure> {
        (!self.running()).then(|| {
            crate::error::Failure::fatal(anyhow!("the forward input stopped unexpectedly"))
        })
    }

    /// Settings of `[forward]` the listeners and the memory bounds were made from at
    /// start. Everything else (`[kafka]`, `[delivery]`'s refusal policy, the topic, key,
    /// tag and time settings, the shared key and users) applies at a reload.
    fn restart_needed(&self, old: &Config, new: &Config) -> Vec<&'static str> {
        let (Some(a), Some(b)) = (old.forward.as_ref(), new.forward.as_ref()) else {
            return vec!["forward (on or off)"];
        };
        let mut fixed = Vec::new();
        let mut differs = |name: &'static str, changed: bool| {
            if changed {
                fixed.push(name);
            }
        };
        differs("forward.listen", a.listen != b.listen);
        differs("forward.socket", a.socket != b.socket);
        differs("forward.tls_cert, forward.tls_key", a.tls != b.tls);
        differs(
            "forward.max_connections",
            a.max_connections != b.max_connections,
        );
        differs(
            "forward.max_in_flight_bytes",
            a.max_in_flight_bytes != b.max_in_flight_bytes,
        );
        differs(
            "forward.max_message_bytes",
            a.max_message_bytes != b.max_message_bytes,
        );
        fixed
    }

    /// A new producer from the new `[kafka]` (the old one confirms what it holds and goes;
    /// chunks it cannot confirm in time stay unacknowledged and their clients resend
    /// them), the new policy and `[forward]` settings from every connection's next
    /// message, and a new handshake for connections whose key or users changed.
    fn reload(&mut self, new: &Config) -> Result<()> {
        let producer = Arc::new(self.shared.make_producer(new, ack::Stage::Connections)?);
        let old_cfg = self.shared.config();
        let (a, b) = (fwd(&old_cfg), fwd(new));
        *self
            .shared
            .repairs
            .policy
            .write()
            .unwrap_or_else(|p| p.into_inner()) = ack::Repairs::policy(new);
        *self
            .shared
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(new.delivery.reserved_topics());
        *self.shared.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new.clone());
        // After the configuration is stored (connections read the generation first).
        if a.shared_key != b.shared_key || a.users != b.users || a.self_hostname != b.self_hostname
        {
            self.shared.auth_generation.fetch_add(1, Ordering::AcqRel);
        }
        let old = std::mem::replace(
            &mut *self
                .shared
                .producer
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            producer,
        );
        retire(old, self.shutdown_timeout);
        Ok(())
    }

    /// Stops accepting and reading, waits (up to the shutdown timeout) for what is in
    /// flight to be confirmed and acknowledged, then closes every connection.
    fn stop(mut self: Box<Self>) -> Result<(), crate::error::Failure> {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

impl Server {
    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
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

async fn serve(
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
    let repairer = tokio::spawn(repair(shared.clone()));
    let heart = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                shared.report.beat();
                tokio::time::sleep(HEARTBEAT).await;
            }
        })
    };
    let probe = tokio::spawn(probe(shared.clone()));
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
        loop {
            if tx.queued() > ack::MAX_QUEUED_REPLIES {
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
                message(frame, tx, shared, &mut scratch, &mut value_buf, &mut large)
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
            // Back to the connection's own memory: the slot and its buffers go.
            large = None;
            if buf.capacity() > 4 * READ_CHUNK && buf.len() < READ_CHUNK {
                buf.shrink_to(READ_CHUNK);
            }
            // Decompressed entries and large record values are a slot's memory: given
            // back with it, not kept for the connection's life.
            if scratch.capacity() > 0 {
                scratch = Vec::new();
            }
            if value_buf.capacity() > SMALL_MESSAGE {
                value_buf = Vec::new();
            }
        }
        // A client that does not read its acks is not read either. The writer gives up
        // after REPLY_TIMEOUT (or at once when the connection is lost) and drops its end:
        // then this connection ends too, with whatever slot it holds.
        while tx.queued() > ack::MAX_QUEUED_REPLIES {
            if tx.is_closed() {
                return Err("the client stopped taking its replies".into());
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => return Ok(()),
            }
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
        // How long this read may take, and why the connection is closed if it takes
        // longer (`None`: idle between messages, a quiet close).
        let (timeout, why) = match (&handshake, &large) {
            (Some(_), _) => (
                HANDSHAKE_TIMEOUT.saturating_sub(opened.elapsed()),
                Some("no PING within the handshake timeout"),
            ),
            (None, Some((_, since))) => (
                LARGE_READ_DEADLINE.saturating_sub(since.elapsed()),
                Some(
                    "a large message did not arrive within 60 s (it holds memory shared with other clients)",
                ),
            ),
            (None, None) if old == 0 => (IDLE_TIMEOUT, None),
            (None, None) => (
                IDLE_TIMEOUT,
                Some("no byte of the message's rest for 10 minutes"),
            ),
        };
        let got = tokio::select! {
            r = tokio::time::timeout(timeout, rd.read(&mut buf[old..])) => r,
            _ = stop.changed() => return Ok(()),
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

/// Lets a replaced producer go off the Forward runtime: its reports still come (to the
/// same chunks and window) while it confirms what it holds, and it is dropped (its polling
/// thread joined, what it still holds purged: those chunks stay unacknowledged and their
/// clients resend them) only once nothing else holds it and nothing is in flight, or the
/// shutdown timeout has passed and nothing else holds it. A connection holds a producer
/// only while it hands one record over.
fn retire(old: Arc<ack::Producer>, timeout: Duration) {
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

/// Asks the brokers for metadata at start and every second while none is known to answer:
/// readiness then follows the brokers without waiting for a client's events, and a
/// connection failure (a wrong password) is named at once, not at the first event.
async fn probe(shared: Arc<Shared>) {
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
async fn repair(shared: Arc<Shared>) {
    let mut producer: Option<(Arc<Config>, Arc<ack::Producer>)> = None;
    loop {
        shared.repairs.wake.notified().await;
        while let Some(r) = shared.repairs.pop() {
            let config = shared.config();
            // Made again for a reloaded configuration, or after a fatal error; the one it
            // replaces confirms what it holds off this runtime.
            let usable = producer.as_ref().is_some_and(|(c, p)| {
                Arc::ptr_eq(c, &config) && !p.context().owner().fatal.load(Ordering::Acquire)
            });
            let fresh_config = !producer
                .as_ref()
                .is_some_and(|(c, _)| Arc::ptr_eq(c, &config));
            if !usable && (fresh_config || shared.remake_due()) {
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
            let mut out = Outgoing {
                topic,
                payload: &r.refused.payload,
                key: r.refused.key.as_deref(),
                headers,
                timestamp_ms: r.refused.timestamp_ms,
            };
            let mut token = r.chunk.clone();
            loop {
                match p.try_send(out, token) {
                    Sent::Queued => break,
                    Sent::Full(back, t) => {
                        (out, token) = (back, t);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Sent::Refused(e, t) => {
                        tracing::error!(topic, error = %e, "forward input: a refused record cannot be sent again; its chunk is not acknowledged");
                        shared.window.refuse(&t, len);
                        break;
                    }
                }
            }
        }
    }
}

/// Waits for a large slot, and says since when it is held; `None` when the agent stops
/// first.
async fn large_slot(shared: &Shared) -> Option<(OwnedSemaphorePermit, Instant)> {
    let mut stop = shared.stop.clone();
    tokio::select! {
        s = shared.large.clone().acquire_owned() => {
            Some((s.expect("the semaphore is never closed"), Instant::now()))
        }
        _ = stop.changed() => None,
    }
}

/// One message: every event sent to Kafka (waiting for room in the window), the ack
/// promised once they are all confirmed.
async fn message(
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
        let mut out = Outgoing {
            topic,
            payload: &rec.value[..],
            key: rec.key,
            headers: record::headers(msg.tag, chunk_id, i, &mut id),
            timestamp_ms: rec.timestamp_ms,
        };
        let mut token = chunk.clone();
        loop {
            // Taken again at every attempt and let go before waiting: a reload must not
            // find its retired producer held by a connection waiting for room.
            let sent = shared.producer().try_send(out, token);
            match sent {
                Sent::Queued => break,
                Sent::Full(back, t) => {
                    (out, token) = (back, t);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Sent::Refused(e, t) => {
                    Metrics::add(&shared.metrics.forward_events_failed, 1);
                    tracing::error!(topic, error = %e, "forward input: a record cannot be queued; its chunk is not acknowledged");
                    shared
                        .metrics
                        .error(format!("forward input: a record cannot be queued: {e}"));
                    shared.window.refuse(&t, len);
                    break;
                }
            }
        }
        Metrics::add(&shared.metrics.bytes_produced, len as u64);
        *value_buf = rec.value;
    }
    chunk.sent_all();
    Ok(())
}
