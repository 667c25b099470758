//! The pipeline: wires journal → encode → kafka → checkpoint, and owns backpressure,
//! retries and shutdown.
//!
//! A *session* is one producer plus one reader thread, started from the last safe cursor.
//! When a delivery fails or the producer hits a fatal error, the session ends, everything
//! it sent is settled, the safe cursor is committed, and a new session starts from that
//! cursor after a backoff. So a failure can cause duplicates (never more than the in-flight
//! window) but never a gap. This module must never commit a cursor that did not come from
//! the watermark, and never drop an admitted entry without failing it in the watermark.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _};

use crate::checkpoint::transaction::{self, TransactionStore};
use crate::checkpoint::{Fenced, Limits, Store, Tracker};
use crate::config::{Config, CursorLost, Mode};
use crate::encode::{self, Encoder};
use crate::journal::{self, Entry, Position, Reader};
use crate::kafka::{self, Producer};
use crate::metrics::Metrics;
use crate::notify::Notifier;

/// Lets a signal handler stop the pipeline from another thread.
#[derive(Default)]
pub struct Shutdown {
    requested: AtomicBool,
    tracker: Mutex<Option<Arc<Tracker>>>,
    wake: Condvar,
}

impl Shutdown {
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let g = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = g.as_ref() {
            t.stop();
        }
        self.wake.notify_all();
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    fn attach(&self, t: Option<Arc<Tracker>>) {
        let mut g = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = &t {
            if self.requested() {
                t.stop();
            }
        }
        *g = t;
    }

    /// Sleeps for `d` unless shutdown is requested first. Returns true if it was.
    fn sleep(&self, d: Duration) -> bool {
        let g = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        let _g = self
            .wake
            .wait_timeout_while(g, d, |_| !self.requested())
            .unwrap_or_else(|p| p.into_inner());
        self.requested()
    }
}

/// How a session ended.
enum End {
    /// Shutdown was requested and everything that could be settled was.
    Stopped,
    /// Something failed that a fresh session may get past (delivery, producer, journal read).
    Retry(anyhow::Error),
    /// Something an operator must fix (a policy refused to continue, the cursor is rejected).
    Fatal(anyhow::Error),
}

/// What the service manager hears: readiness once, watchdog pings while the pipeline is
/// healthy, and a one-line status.
pub struct Service<'a> {
    notifier: &'a Notifier,
    started: Instant,
    ready: bool,
    last_ping: Instant,
    last_status: Instant,
    /// The producer's heartbeat may be older than this before the watchdog goes quiet.
    producer_grace: Option<Duration>,
}

impl<'a> Service<'a> {
    pub fn new(notifier: &'a Notifier, cfg: &Config) -> Service<'a> {
        let stats_ms: u64 = cfg
            .kafka
            .properties
            .get("statistics.interval.ms")
            .map(String::as_str)
            .unwrap_or(kafka::STATS_INTERVAL_MS)
            .parse()
            .unwrap_or(0);
        let watchdog = notifier.watchdog().unwrap_or(Duration::from_secs(30));
        Service {
            notifier,
            started: Instant::now(),
            ready: false,
            last_ping: Instant::now(),
            last_status: Instant::now(),
            // Without statistics there is no heartbeat to check; trust the reader alone.
            producer_grace: (stats_ms > 0)
                .then(|| watchdog.max(Duration::from_millis(3 * stats_ms + 1000))),
        }
    }

    fn ping_due(&self) -> bool {
        self.notifier
            .watchdog()
            .is_some_and(|w| self.last_ping.elapsed() >= w / 3)
    }

    /// Called every ~100 ms while a session runs.
    fn tick(&mut self, cfg: &Config, tracker: &Tracker, probe: &Probe, metrics: &Metrics) {
        if !self.ready && tracker.opened() {
            let timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms);
            let status = match probe.get() {
                Some(Ok(parts)) => Some(format!(
                    "journal open; brokers reachable ({parts} partitions)"
                )),
                Some(Err(e)) if self.started.elapsed() >= timeout => {
                    Some(format!("journal open; brokers NOT reachable yet: {e}"))
                }
                None if self.started.elapsed() >= timeout => {
                    Some("journal open; brokers NOT reachable yet".to_string())
                }
                _ => None,
            };
            if let Some(st) = status {
                tracing::info!("ready: {st}");
                self.notifier.ready(&st);
                self.ready = true;
            }
        }
        if self.ping_due() {
            let w = self.notifier.watchdog().unwrap_or_default();
            let (reader_age, producer_age) = tracker.beat_ages();
            let producer_ok = self.producer_grace.is_none_or(|g| producer_age < g);
            if reader_age < w / 2 && producer_ok {
                self.notifier.watchdog_ping();
                self.last_ping = Instant::now();
            } else {
                tracing::error!(
                    ?reader_age,
                    ?producer_age,
                    "pipeline shows no sign of life; withholding the watchdog ping"
                );
            }
        }
        if self.last_status.elapsed() >= Duration::from_secs(5) {
            let (n, _) = tracker.in_flight();
            self.notifier.status(&format!(
                "shipping: {} entries delivered, {n} in flight, {} restarts",
                Metrics::get(&metrics.entries_delivered),
                Metrics::get(&metrics.sessions_restarted)
            ));
            self.last_status = Instant::now();
        }
    }

    /// Called while waiting to retry: deliberate waiting is healthy.
    fn waiting(&mut self, why: &str) {
        if self.ping_due() {
            self.notifier.watchdog_ping();
            self.last_ping = Instant::now();
        }
        if self.last_status.elapsed() >= Duration::from_secs(5) {
            self.notifier.status(why);
            self.last_status = Instant::now();
        }
    }
}

/// The outcome of the startup metadata request, shared with the thread that makes it.
#[derive(Default)]
struct Probe(Mutex<Option<Result<usize, String>>>);

impl Probe {
    fn get(&self) -> Option<Result<usize, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, r: Result<usize, String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    }
}

/// Runs the agent until shutdown. Returns an error only for conditions an operator must fix.
pub fn run(
    cfg: &Config,
    store: &mut dyn Store,
    shutdown: &Arc<Shutdown>,
    metrics: &Arc<Metrics>,
    notifier: &Notifier,
) -> Result<()> {
    // In exactly-once mode every session reads its place from the cursor topic, because an
    // aborted transaction takes back what the watermark had already seen confirmed.
    let (mut resume, mut eo) = match cfg.delivery.mode {
        Mode::AtLeastOnce => {
            let resume = store.load()?;
            log_restore(resume.as_deref(), &store.describe(), cfg);
            (resume, None)
        }
        Mode::ExactlyOnce => (
            None,
            Some(ExactlyOnce {
                id: transaction::transactional_id(cfg)?,
                cursor_topic_ready: false,
            }),
        ),
    };
    let mut svc = Service::new(notifier, cfg);
    let mut backoff = Duration::from_millis(500);
    let max_backoff = Duration::from_millis(cfg.pipeline.retry_backoff_max_ms);
    let mut first = true;
    loop {
        let started = Instant::now();
        let (end, safe) = session(
            cfg,
            store,
            resume.clone(),
            shutdown,
            metrics,
            first,
            &mut svc,
            eo.as_mut(),
        );
        first = false;
        if safe.is_some() {
            resume = safe;
        }
        match end {
            End::Stopped => return Ok(()),
            End::Fatal(e) => return Err(e),
            End::Retry(e) => {
                Metrics::add(&metrics.sessions_restarted, 1);
                // A session that ran well for a while earns a fresh, short backoff.
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
                let error = format!("{e:#}");
                tracing::error!(
                    error,
                    retry_in = ?backoff,
                    cursor = resume.as_deref().unwrap_or("(none)"),
                    "pipeline stopped; restarting from the last safe cursor"
                );
                let until = Instant::now() + backoff;
                while Instant::now() < until {
                    svc.waiting(&format!(
                        "retrying in {}s after: {error}",
                        until.saturating_duration_since(Instant::now()).as_secs()
                    ));
                    if shutdown.sleep(
                        until
                            .saturating_duration_since(Instant::now())
                            .min(Duration::from_secs(1)),
                    ) {
                        return Ok(());
                    }
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

fn log_restore(resume: Option<&str>, from: &str, cfg: &Config) {
    match resume {
        Some(c) => tracing::info!(cursor = %c, "restoring from {from}"),
        None => {
            tracing::info!(start = ?cfg.journal.start, "no saved cursor in {from}; starting at the configured position")
        }
    }
}

/// What exactly-once sessions share across restarts.
struct ExactlyOnce {
    /// The transactional id, also the cursor record's key.
    id: String,
    /// The cursor topic was found or created (once per run, retried until it works).
    cursor_topic_ready: bool,
}

/// How a failure to set up the exactly-once store ends the session.
fn setup_failure(e: anyhow::Error) -> End {
    if e.downcast_ref::<Fenced>().is_some()
        || e.downcast_ref::<transaction::Unsupported>().is_some()
    {
        End::Fatal(e)
    } else {
        // A broker that is down at start is waited for, as in at-least-once mode.
        End::Retry(e)
    }
}

/// One producer and one reader from `resume`. Returns how it ended and the safe cursor it
/// reached (committed, or at least safe to resume from).
#[allow(clippy::too_many_arguments)]
fn session(
    cfg: &Config,
    store: &mut dyn Store,
    resume: Option<String>,
    shutdown: &Arc<Shutdown>,
    metrics: &Arc<Metrics>,
    first: bool,
    svc: &mut Service,
    mut eo: Option<&mut ExactlyOnce>,
) -> (End, Option<String>) {
    let tracker = Arc::new(Tracker::new(Limits {
        entries: cfg.pipeline.max_in_flight_entries,
        bytes: cfg.pipeline.max_in_flight_bytes,
    }));
    let exactly_once = eo.is_some();
    if let Some(eo) = eo.as_deref_mut().filter(|eo| !eo.cursor_topic_ready) {
        let timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms.max(10_000));
        match transaction::ensure_cursor_topic(cfg, timeout, true) {
            Ok(warning) => {
                if let Some(w) = warning {
                    tracing::warn!("{w}");
                }
                eo.cursor_topic_ready = true;
            }
            Err(e) => return (End::Retry(e), None),
        }
    }
    let txn_id = eo.map(|eo| eo.id.as_str());
    shutdown.attach(Some(tracker.clone()));
    let transactional = txn_id.map(|id| kafka::Transactional {
        id,
        timeout_ms: cfg.delivery.transaction_timeout_ms,
    });
    let producer = match kafka::producer(
        &cfg.kafka,
        &cfg.pipeline,
        transactional,
        tracker.clone(),
        metrics.clone(),
    ) {
        Ok(p) => p,
        Err(e) => {
            shutdown.attach(None);
            return (End::Fatal(e), None);
        }
    };
    // Exactly-once: fence older instances, then ask Kafka where we are.
    let (txn, resume) = match txn_id {
        None => (None, resume),
        Some(id) => {
            let setup =
                TransactionStore::init(producer.clone(), tracker.clone(), cfg, id.to_string())
                    .and_then(|mut s| {
                        let r = s.load()?;
                        if first {
                            log_restore(r.as_deref(), &s.describe(), cfg);
                        }
                        Ok((s, r))
                    });
            match setup {
                Ok((s, r)) => (Some(Transaction::new(s, cfg)), r),
                Err(e) => {
                    shutdown.attach(None);
                    return (setup_failure(e), None);
                }
            }
        }
    };

    // Readiness needs one successful metadata round trip; ask in the background so the
    // checkpointer below keeps ticking.
    let probe = Arc::new(Probe::default());
    if !svc.ready {
        let (probe, producer) = (probe.clone(), producer.clone());
        let topic = cfg
            .kafka
            .fixed_topic()
            .or(cfg.kafka.topic_fallback.as_deref())
            .unwrap_or("journal")
            .to_string();
        let timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms);
        let _ = thread::Builder::new()
            .name("broker-probe".into())
            .spawn(move || {
                probe.set(kafka::probe(&producer, &topic, timeout).map_err(|e| format!("{e:#}")));
            });
    }

    let reader = {
        let (cfg, tracker, producer, metrics) = (
            cfg.clone(),
            tracker.clone(),
            producer.clone(),
            metrics.clone(),
        );
        thread::Builder::new()
            .name("journal-reader".into())
            .spawn(move || {
                read_loop(
                    &cfg,
                    resume.as_deref(),
                    &tracker,
                    &producer,
                    &metrics,
                    first,
                    txn,
                )
            })
            .expect("spawn the journal reader thread")
    };

    // This thread is the checkpointer: it commits the safe cursor on every tick while the
    // reader runs, and speaks to the service manager.
    let interval = Duration::from_millis(cfg.state.checkpoint_interval_ms);
    let mut committed_gen = u64::MAX;
    let mut last_commit = Instant::now();
    while !reader.is_finished() {
        thread::sleep(interval.min(Duration::from_millis(100)));
        if !exactly_once && last_commit.elapsed() >= interval {
            commit(store, &tracker, &mut committed_gen, metrics);
            last_commit = Instant::now();
        }
        let (n, bytes) = tracker.in_flight();
        Metrics::set(&metrics.in_flight_entries, n as u64);
        Metrics::set(&metrics.in_flight_bytes, bytes as u64);
        svc.tick(cfg, &tracker, &probe, metrics);
    }
    let read_result = reader
        .join()
        .unwrap_or_else(|_| Err(ReadError::Retry(anyhow!("the journal reader panicked"))));

    // Settle what is in flight: every admitted entry gets delivered or failed, within the
    // shutdown deadline, and only then is the final cursor committed.
    let deadline = Instant::now() + Duration::from_millis(cfg.pipeline.shutdown_timeout_ms);
    let _ = producer.flush(deadline.saturating_duration_since(Instant::now()));
    let settled = tracker.wait_settled(deadline);
    if !settled {
        let (n, bytes) = tracker.in_flight();
        tracing::warn!(
            entries = n,
            bytes,
            "entries still unconfirmed at the deadline; they will be sent again after restart"
        );
    }
    // In exactly-once mode the shipping thread committed or aborted the last transaction, and
    // the watermark's view is not what Kafka kept: the next session asks the cursor topic.
    let safe = if exactly_once {
        None
    } else {
        commit(store, &tracker, &mut committed_gen, metrics);
        tracker.safe_cursor().map(|(c, _)| c)
    };
    shutdown.attach(None);
    let fenced = exactly_once
        .then(|| transaction::fenced(&producer))
        .flatten();
    drop(producer);
    if let Some(f) = fenced {
        return (End::Fatal(anyhow!(f)), safe);
    }

    let end = match read_result {
        Err(ReadError::Fatal(e)) => End::Fatal(e),
        Err(ReadError::Retry(e)) => End::Retry(e),
        Ok(()) => match tracker.failure() {
            Some(f) if !shutdown.requested() => End::Retry(anyhow!(f)),
            _ => End::Stopped,
        },
    };
    (end, safe)
}

fn commit(store: &mut dyn Store, tracker: &Tracker, committed_gen: &mut u64, metrics: &Metrics) {
    let Some((cursor, generation)) = tracker.safe_cursor() else {
        return;
    };
    if generation == *committed_gen {
        return;
    }
    match store.commit(&cursor) {
        Ok(()) => {
            *committed_gen = generation;
            Metrics::add(&metrics.cursor_writes, 1);
            Metrics::set(&metrics.last_cursor_write, crate::metrics::unix_now());
            Metrics::set(&metrics.last_progress, crate::metrics::unix_now());
            if let Ok(info) = journal::cursor::parse(&cursor) {
                Metrics::set(&metrics.checkpoint_realtime_usec, info.realtime_usec);
            }
        }
        Err(e) => {
            // The old cursor stays valid; we retry on the next tick. Log only the first
            // failure of a streak so a full disk does not flood the journal.
            if Metrics::get(&metrics.cursor_write_errors) == 0
                || Metrics::get(&metrics.cursor_writes) > 0
            {
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot save the cursor; retrying every checkpoint interval"
                );
            }
            Metrics::add(&metrics.cursor_write_errors, 1);
        }
    }
}

enum ReadError {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

fn read_loop(
    cfg: &Config,
    resume: Option<&str>,
    tracker: &Tracker,
    producer: &Producer,
    metrics: &Metrics,
    first: bool,
    txn: Option<Transaction>,
) -> Result<(), ReadError> {
    // Problems opening or positioning on the first start are for the operator; later the
    // journal may just be briefly unavailable (a namespace restarting), so retry.
    let wrap = |e: anyhow::Error| {
        if first {
            ReadError::Fatal(e)
        } else {
            ReadError::Retry(e)
        }
    };
    let mut reader = Reader::open(&cfg.journal).map_err(wrap)?;
    let position = reader.seek(&cfg.journal, resume).map_err(wrap)?;
    tracker.set_opened();
    tracker.reader_beat();
    metrics
        .journal_open
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let last_usage = Instant::now() - Duration::from_secs(3600);
    match &position {
        Position::AfterCursor | Position::AfterFilteredCursor => {
            if first {
                tracing::info!(
                    ?position,
                    "cursor found in the journal; continuing right after it"
                );
            }
        }
        Position::Start(s) => tracing::info!(start = ?s, "starting without a cursor"),
        Position::CursorLost { gap, first: landed } => {
            let msg = match gap {
                Some(g) => format!(
                    "the saved cursor {:?} is no longer in the journal (vacuumed before it was shipped): {g} entries between it and the oldest remaining entry were never shipped",
                    resume.unwrap_or_default()
                ),
                None => format!(
                    "the saved cursor {:?} is no longer in the journal and does not belong to its sequence of entries (another machine's journal, or the journal was recreated): an unknown number of entries may be missing",
                    resume.unwrap_or_default()
                ),
            };
            match cfg.journal.cursor_lost {
                CursorLost::Refuse => {
                    return Err(ReadError::Fatal(anyhow!(
                        "{msg}; journal.cursor_lost = \"refuse\", so not starting (set it to \"resume\" or delete the cursor file to go on)"
                    )));
                }
                CursorLost::Resume if gap.is_some() => {
                    tracing::error!(gap = ?gap, resume_at = landed.as_deref().unwrap_or("(end)"), "{msg}; resuming at the oldest remaining entry after it");
                }
                CursorLost::Resume => {
                    tracing::error!(
                        "{msg}; shipping the journal from its oldest entry (some entries may be sent twice)"
                    );
                }
            }
        }
    }

    let shipper = Shipper::new(Encoder::new(&cfg.encoding, &cfg.kafka));
    // Reading (libsystemd) and shipping (encoding, librdkafka's enqueue and, in exactly-once
    // mode, the transaction) each take about half of the per-entry work; a short queue lets
    // them use two cores. The shipping thread owns the transaction: commits fall between
    // two of its sends, and the reader tells it when the journal has gone quiet.
    let commit_on_idle = txn.is_some();
    thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Item>(SHIP_QUEUE);
        let (recycle_tx, recycle_rx) = mpsc::sync_channel::<Entry>(SHIP_QUEUE);
        let shipping = thread::Builder::new()
            .name("shipper".into())
            .spawn_scoped(scope, move || {
                let mut txn = txn;
                let result = ship_queue(
                    rx,
                    recycle_tx,
                    shipper,
                    txn.as_mut(),
                    tracker,
                    producer,
                    metrics,
                );
                match txn.as_mut() {
                    Some(t) => t.finish(result, tracker, metrics),
                    None => result,
                }
            })
            .expect("spawn the shipping thread");
        let mut out = Out {
            tx,
            recycle: recycle_rx,
        };
        let read = follow(
            &mut reader,
            cfg,
            tracker,
            metrics,
            commit_on_idle,
            &mut out,
            last_usage,
        );
        // Closing the queue lets the shipping thread finish what it holds, in order.
        drop(out);
        let shipped = shipping
            .join()
            .unwrap_or_else(|_| Err(ReadError::Retry(anyhow!("the shipping thread panicked"))));
        // The shipping side's error explains why the reader was told to stop.
        shipped.and(read)
    })
}

/// Entries waiting between the reader and the shipping thread. Small: the in-flight window
/// is the real buffer; this only smooths the hand-over.
const SHIP_QUEUE: usize = 256;

/// What the reader hands over, in journal order: the watermark must see filtered positions
/// in the same order as the entries around them.
enum Item {
    Entry(Entry),
    Pass(String),
    /// The journal has nothing more for now (exactly-once: time to commit).
    Idle,
}

/// The reader's end of the queue to the shipping thread. Every method returns false once
/// the shipping thread has hung up (the session is ending).
struct Out {
    tx: mpsc::SyncSender<Item>,
    recycle: mpsc::Receiver<Entry>,
}

impl Out {
    /// Queues `entry`, which is replaced by a recycled buffer.
    fn ship(&mut self, entry: &mut Entry) -> bool {
        let spare = self.recycle.try_recv().unwrap_or_default();
        let full = std::mem::replace(entry, spare);
        self.tx.send(Item::Entry(full)).is_ok()
    }

    /// Registers a position that needs no delivery, behind every entry queued so far.
    fn pass(&mut self, cursor: String) -> bool {
        self.tx.send(Item::Pass(cursor)).is_ok()
    }

    fn idle(&mut self) -> bool {
        self.tx.send(Item::Idle).is_ok()
    }
}

/// The shipping thread: encodes and produces queued entries (and runs the transaction)
/// until the queue closes or the session ends, handing the buffers back for reuse. Returns
/// with the queue closed, so a reader blocked on it wakes up.
#[allow(clippy::too_many_arguments)]
fn ship_queue(
    rx: mpsc::Receiver<Item>,
    recycle: mpsc::SyncSender<Entry>,
    mut shipper: Shipper,
    mut txn: Option<&mut Transaction>,
    tracker: &Tracker,
    producer: &Producer,
    metrics: &Metrics,
) -> Result<(), ReadError> {
    for item in rx {
        match item {
            Item::Entry(mut entry) => {
                if let Some(t) = txn.as_deref_mut() {
                    t.before_send()?;
                }
                // False: admission was refused (stop or failure). What is still queued was
                // never admitted, so the watermark cannot pass it.
                if !shipper.ship(&mut entry, tracker, producer, metrics)? {
                    return Ok(());
                }
                if let Some(t) = txn.as_deref_mut() {
                    t.sent += 1;
                    if t.due() {
                        t.commit(tracker, metrics)?;
                    }
                }
                entry.clear();
                let _ = recycle.try_send(entry);
            }
            Item::Pass(cursor) => tracker.pass(cursor),
            Item::Idle => {
                if let Some(t) = txn.as_deref_mut() {
                    // Nothing to read: close the transaction now rather than hold its
                    // entries back from read_committed consumers.
                    t.idle(tracker, metrics)?;
                }
            }
        }
    }
    Ok(())
}

/// The read loop proper: follows the journal and hands every entry to `out`.
#[allow(clippy::too_many_arguments)]
fn follow(
    reader: &mut Reader,
    cfg: &Config,
    tracker: &Tracker,
    metrics: &Metrics,
    commit_on_idle: bool,
    out: &mut Out,
    mut last_usage: Instant,
) -> Result<(), ReadError> {
    let mut entry = Entry::new();
    let filtered = !cfg.journal.filter.is_empty();
    let pass_interval = Duration::from_millis(cfg.state.checkpoint_interval_ms);
    let mut last_pass = Instant::now();
    let mut passed: Option<String> = None;

    let own_pid = std::process::id().to_string();
    let mut gaps = GapDetector::default();
    let mut count = 0u32;
    // An entry already read (by the idle check below) and not yet handled.
    let mut pending = false;
    let mut last_entry = Instant::now();
    // Entries were read since the shipping thread last heard that the journal is quiet.
    let mut fresh = false;
    loop {
        count = count.wrapping_add(1);
        if count % 1024 == 0 {
            tracker.reader_beat();
            if last_usage.elapsed() >= Duration::from_secs(10) {
                last_usage = Instant::now();
                reader.refresh_gauges(metrics);
            }
        }
        let got = pending || reader.next(&mut entry).map_err(ReadError::Retry)?;
        pending = false;
        if got && commit_on_idle {
            last_entry = Instant::now();
            fresh = true;
        }
        if got && !filtered {
            gaps.check(&entry.cursor, metrics);
        }
        if got && cfg.journal.exclude_own_entries && is_own(&entry, &own_pid) {
            // Our own log lines: shipping them would let the agent feed on itself. They
            // still move the watermark like any filtered-out entry.
            Metrics::add(&metrics.entries_own_skipped, 1);
            if !out.pass(entry.cursor.clone()) {
                return Ok(());
            }
            continue;
        }
        if !got {
            tracker.reader_beat();
            if last_usage.elapsed() >= Duration::from_secs(10) {
                last_usage = Instant::now();
                reader.refresh_gauges(metrics);
            }
            if filtered && last_pass.elapsed() >= pass_interval {
                last_pass = Instant::now();
                // Take the newest position first, then make sure no matching entry arrived
                // before it: only then may the watermark move past the filtered entries.
                let newest = journal::newest_cursor(&cfg.journal).map_err(ReadError::Retry)?;
                reader.wait(Duration::ZERO).map_err(ReadError::Retry)?;
                if reader.next(&mut entry).map_err(ReadError::Retry)? {
                    pending = true;
                    continue;
                }
                if let Some(n) = newest {
                    if passed.as_deref() != Some(n.as_str()) {
                        if !out.pass(n.clone()) {
                            return Ok(());
                        }
                        passed = Some(n);
                    }
                }
            }
            if tracker.status().is_err() {
                return Ok(());
            }
            if commit_on_idle {
                // A writer still in the middle of a burst leaves the end of the journal
                // for a moment between entries: wait for a short quiet spell before
                // committing, or a trickle turns into one small transaction per entry.
                let quiet = last_entry.elapsed();
                if fresh && quiet < QUIET_BEFORE_COMMIT {
                    reader
                        .wait(QUIET_BEFORE_COMMIT - quiet)
                        .map_err(ReadError::Retry)?;
                    continue;
                }
                fresh = false;
                if !out.idle() {
                    return Ok(());
                }
            }
            reader
                .wait(Duration::from_millis(250))
                .map_err(ReadError::Retry)?;
            continue;
        }
        if !out.ship(&mut entry) {
            return Ok(());
        }
    }
}

/// Exactly-once mode: how long the journal must stay quiet before the open transaction is
/// committed.
const QUIET_BEFORE_COMMIT: Duration = Duration::from_millis(10);

/// Exactly-once mode: the shipping thread's open transaction and when to close it.
struct Transaction {
    store: TransactionStore,
    /// Entries sent in the open transaction.
    sent: usize,
    opened: Option<Instant>,
    max_entries: usize,
    max_age: Duration,
    timeout: Duration,
    /// The last cursor this session committed.
    committed: Option<String>,
    last_commit: Instant,
    /// How often a cursor that moved only over filtered entries is committed.
    pass_interval: Duration,
}

impl Transaction {
    fn new(store: TransactionStore, cfg: &Config) -> Transaction {
        Transaction {
            store,
            sent: 0,
            opened: None,
            max_entries: cfg.delivery.transaction_max_entries,
            max_age: Duration::from_millis(cfg.delivery.transaction_max_ms),
            timeout: Duration::from_millis(cfg.delivery.transaction_timeout_ms),
            committed: None,
            last_commit: Instant::now(),
            pass_interval: Duration::from_millis(cfg.state.checkpoint_interval_ms),
        }
    }

    fn error(e: anyhow::Error) -> ReadError {
        if e.downcast_ref::<Fenced>().is_some() {
            ReadError::Fatal(e)
        } else {
            ReadError::Retry(e)
        }
    }

    fn before_send(&mut self) -> Result<(), ReadError> {
        if !self.store.is_open() {
            self.store.begin().map_err(Self::error)?;
            self.opened = Some(Instant::now());
        }
        Ok(())
    }

    fn due(&self) -> bool {
        self.sent >= self.max_entries || self.opened.is_some_and(|o| o.elapsed() >= self.max_age)
    }

    fn idle(&mut self, tracker: &Tracker, metrics: &Metrics) -> Result<(), ReadError> {
        let moved = tracker.newest_cursor() != self.committed;
        if self.sent > 0 || (moved && self.last_commit.elapsed() >= self.pass_interval) {
            self.commit(tracker, metrics)?;
        }
        Ok(())
    }

    /// Commits the transaction with the watermark's cursor. The cursor record is produced
    /// first, naming the newest registered position, so that it lingers in librdkafka with
    /// the transaction's last entries rather than after them; the commit then goes ahead
    /// only if the watermark, once everything is settled, stands exactly there. Any failure
    /// leaves the transaction to be aborted.
    fn commit(&mut self, tracker: &Tracker, metrics: &Metrics) -> Result<(), ReadError> {
        let began = Instant::now();
        let deadline = began + self.timeout;
        let target = tracker.newest_cursor();
        let fresh = target.is_some() && target != self.committed;
        if let (true, Some(t)) = (fresh, &target) {
            self.store.send_cursor(t).map_err(Self::error)?;
        }
        // The watermark is fed by the delivery reports; waiting on it (not on rdkafka's
        // flush, which polls in 100 ms steps) lets the commit follow the last report at once.
        if !tracker.wait_settled(deadline) {
            return Err(ReadError::Retry(anyhow!(
                "entries of the transaction were not confirmed within delivery.transaction_timeout_ms"
            )));
        }
        if let Some(f) = tracker.failure() {
            return Err(ReadError::Retry(anyhow!(f)));
        }
        match target.filter(|_| fresh) {
            Some(cursor) => {
                // The rule of every store: only the watermark's safe cursor is committed.
                let safe = tracker.safe_cursor().map(|(c, _)| c);
                if safe.as_deref() != Some(cursor.as_str()) {
                    return Err(ReadError::Retry(anyhow!(
                        "the watermark stopped at {safe:?}, before the transaction's cursor {cursor:?}"
                    )));
                }
                self.store.finish_commit(&cursor).map_err(Self::error)?;
                tracing::debug!(
                    entries = self.sent,
                    open_for = ?self.opened.map(|o| o.elapsed()),
                    took = ?began.elapsed(),
                    "transaction committed"
                );
                Metrics::add(&metrics.cursor_writes, 1);
                Metrics::set(&metrics.last_cursor_write, crate::metrics::unix_now());
                Metrics::set(&metrics.last_progress, crate::metrics::unix_now());
                if let Ok(info) = journal::cursor::parse(&cursor) {
                    Metrics::set(&metrics.checkpoint_realtime_usec, info.realtime_usec);
                }
                self.committed = Some(cursor);
            }
            // Nothing new to commit: an open transaction holds no entry.
            None => self.store.abort(),
        }
        self.sent = 0;
        self.opened = None;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Ends the session's last transaction: committed after a clean stop, aborted after
    /// a failure (its entries are read again by the next session).
    fn finish(
        &mut self,
        result: Result<(), ReadError>,
        tracker: &Tracker,
        metrics: &Metrics,
    ) -> Result<(), ReadError> {
        let result = match result {
            Ok(()) if tracker.failure().is_none() && (self.sent > 0 || self.store.is_open()) => {
                self.commit(tracker, metrics)
            }
            other => other,
        };
        if self.store.is_open() {
            Metrics::add(&metrics.transactions_aborted, 1);
            self.store.abort();
        }
        result
    }
}

/// Notices entries that vanished under the reader: within one sequence-number space,
/// consecutive entries of an unfiltered read have consecutive numbers, so a jump means
/// entries were deleted (vacuumed, or their file removed) before we could read them, or sit
/// in files we may not read. They cannot be shipped any more; we say so, with the size.
#[derive(Default)]
struct GapDetector {
    /// Last sequence number seen per sequence-number space (few: one per writer).
    last: Vec<(String, u64)>,
    reported: u32,
}

impl GapDetector {
    fn check(&mut self, cursor: &str, metrics: &Metrics) {
        let Some((id, n)) = journal::cursor::seqnum(cursor) else {
            return;
        };
        match self.last.iter_mut().find(|(i, _)| i == id) {
            Some((_, last)) => {
                if n > *last + 1 {
                    let gap = n - *last - 1;
                    Metrics::add(&metrics.journal_gaps, 1);
                    Metrics::add(&metrics.entries_missed, gap);
                    if self.reported < 10 {
                        self.reported += 1;
                        tracing::error!(
                            gap,
                            at = cursor,
                            "{gap} journal entries vanished before they could be read (vacuumed or deleted files, or files this user may not read); continuing after them"
                        );
                    }
                }
                *last = n;
            }
            None => self.last.push((id.to_string(), n)),
        }
    }
}

/// Whether an entry carries the agent's own log identifier (any run of the agent).
pub fn logged_by_agent(entry: &Entry) -> bool {
    entry.get(b"SYSLOG_IDENTIFIER") == Some(crate::logging::IDENTIFIER.as_bytes())
}

/// Whether an entry was logged by journald-kafka itself (this process or an earlier run).
fn is_own(entry: &Entry, own_pid: &str) -> bool {
    logged_by_agent(entry)
        || (entry.get(b"_PID") == Some(own_pid.as_bytes())
            && entry
                .get(b"_COMM")
                .is_some_and(|c| c.starts_with(b"journald-kafka")))
}

/// Encodes and produces entries, reusing its buffers from one entry to the next.
struct Shipper {
    encoder: Encoder,
    payload: Vec<u8>,
    topic: String,
    truncated_logged: u32,
    /// A recent reading of the clock (ms since the epoch), never ahead of the real time:
    /// the future-timestamp check re-reads the clock only when an entry looks too new.
    clock_ms: i64,
}

impl Shipper {
    fn new(encoder: Encoder) -> Shipper {
        Shipper {
            encoder,
            payload: Vec::with_capacity(4096),
            topic: String::new(),
            truncated_logged: 0,
            clock_ms: now_ms(),
        }
    }

    /// Encodes and produces one entry; its cursor moves into the watermark. Returns false
    /// when the session must end.
    fn ship(
        &mut self,
        entry: &mut Entry,
        tracker: &Tracker,
        producer: &Producer,
        metrics: &Metrics,
    ) -> Result<bool, ReadError> {
        Metrics::add(&metrics.entries_read, 1);
        Metrics::set(&metrics.read_realtime_usec, entry.realtime_usec);
        let outcome = self.encoder.encode(entry, &mut self.payload);
        if !outcome.truncated.is_empty() {
            Metrics::add(&metrics.entries_truncated, 1);
            if self.truncated_logged < 10 {
                self.truncated_logged += 1;
                tracing::warn!(cursor = %entry.cursor, fields = ?outcome.truncated, "entry larger than encoding.max_record_bytes; truncated the largest field(s) and marked the record");
            }
        }
        self.encoder.topic(entry, &mut self.topic);
        // The headers copy the cursor; then the watermark takes the string itself.
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: kafka::CURSOR_HEADER,
                value: Some(entry.cursor.as_bytes()),
            })
            .insert(Header {
                key: kafka::FORMAT_HEADER,
                value: Some(encode::FORMAT_VERSION.as_bytes()),
            });
        let bytes = self.payload.len() + entry.cursor.len();
        let seq = match tracker.admit(std::mem::take(&mut entry.cursor), bytes) {
            Ok(s) => s,
            Err(_) => return Ok(false),
        };
        let timestamp = self.record_timestamp(entry.realtime_usec, metrics);
        let topic = self.topic.as_str();
        let mut record = BaseRecord::with_opaque_to(topic, seq as usize)
            .payload(self.payload.as_slice())
            .headers(headers)
            .timestamp(timestamp);
        if let Some(k) = self.encoder.key(entry) {
            record = record.key(k);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // librdkafka's queue is sized above our window, so this is rare; wait for
                    // deliveries to make room rather than dropping anything.
                    if tracker.status().is_err() {
                        tracker.failed(seq, "not sent: the session is ending".into());
                        return Ok(false);
                    }
                    record = r;
                    thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    tracker.failed(seq, format!("cannot produce to topic {topic:?}: {e}"));
                    return Ok(false);
                }
            }
        }
        Metrics::add(&metrics.entries_produced, 1);
        Metrics::add(&metrics.bytes_produced, self.payload.len() as u64);
        Ok(true)
    }

    /// The record timestamp: the entry's realtime timestamp, unless it lies in the future.
    fn record_timestamp(&mut self, realtime_usec: u64, metrics: &Metrics) -> i64 {
        let ts = (realtime_usec / 1000) as i64;
        if ts <= self.clock_ms + FUTURE_TOLERANCE_MS {
            return ts;
        }
        self.clock_ms = now_ms();
        if ts <= self.clock_ms + FUTURE_TOLERANCE_MS {
            return ts;
        }
        if Metrics::get(&metrics.timestamps_clamped) == 0 {
            tracing::warn!(
                entry_time_ms = ts,
                now_ms = self.clock_ms,
                "an entry is timestamped in the future; its record gets the current time (counted in timestamps_clamped)"
            );
        }
        Metrics::add(&metrics.timestamps_clamped, 1);
        self.clock_ms
    }
}

fn now_ms() -> i64 {
    (crate::metrics::unix_now_usec() / 1000) as i64
}

/// How far in the future an entry's time may lie before the record gets the current time
/// instead. Brokers refuse records from the future (Kafka's message.timestamp.after.max.ms,
/// one hour by default) with a permanent error, and an entry written under a wrong clock
/// must not wedge the pipeline. The entry's own time always stays in __REALTIME_TIMESTAMP.
const FUTURE_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// For `check`: opens everything the agent needs and says what `run` would do.
pub fn describe_start(cfg: &Config, cursor: Option<&str>) -> Result<String> {
    let mut reader = Reader::open(&cfg.journal)?;
    let usage = reader.usage().unwrap_or(0);
    let position = reader.seek(&cfg.journal, cursor)?;
    let mut entry = Entry::new();
    let next = if reader.next(&mut entry)? {
        format!("the next entry to ship is {}", entry.cursor)
    } else {
        "the journal has nothing new to ship yet; the agent will wait for entries".to_string()
    };
    let what = match position {
        Position::AfterCursor => "resume right after the saved cursor".to_string(),
        Position::AfterFilteredCursor => {
            "resume at the first matching entry after the saved cursor".to_string()
        }
        Position::Start(s) => format!("start at {s:?} (no saved cursor)"),
        Position::CursorLost { gap, .. } => format!(
            "the saved cursor is gone from the journal ({} entries missed); policy journal.cursor_lost = {:?}",
            gap.map_or("unknown".to_string(), |g| g.to_string()),
            cfg.journal.cursor_lost
        ),
    };
    Ok(format!(
        "{} ({} MiB on disk): will {what}; {next}",
        cfg.journal.source,
        usage >> 20
    ))
}
