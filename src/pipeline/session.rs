//! One session: a producer, a reader thread and a shipping thread, started from the last
//! safe cursor and settled before it returns.
//!
//! Threads of a session and what each owns (the tables in `control.rs` and
//! `checkpoint::Tracker` say who touches which field of the shared state):
//!
//! | thread            | owns                                             | ends when                               |
//! |-------------------|--------------------------------------------------|-----------------------------------------|
//! | session (`pipeline`) | the cursor file commits, the journal's `lifecycle::Report` | the reader thread has ended and all is settled |
//! | `journal-reader`  | the sd-journal handle (the input)                | stop/failure seen, or the queue hung up |
//! | `shipper`         | encoder, admission, the exactly-once transaction | the queue closed, or admission refused  |
//! | `producer-poll`   | delivery reports into the watermark (`delivery::JournalOwner`, run by `kafka::sink::Poller`) | the producer is dropped |
//! | `broker-probe`    | metadata requests while no broker answers        | the session ends (within one probe)     |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use rdkafka::producer::Producer as _;

use super::control::Control;
use super::delivery::{self, Producer};
use super::exactly_once::Transaction;
use super::input::{self, Input};
use super::reader::JournalInput;
use super::repair::Repairer;
use super::service::{Probe, Service, Shutdown};
use super::shipper;
use crate::checkpoint::{Checkpointer, Committed, Limits, Store, Tracker, place};
use crate::config::properties::Producer as Role;
use crate::config::{Config, OnRefused};
use crate::error::Failure;
use crate::journal;
use crate::kafka::{self, Refusals, TransactionStore, transaction};
use crate::metrics::Metrics;

/// What exactly-once sessions share across restarts.
pub(super) struct ExactlyOnce {
    /// The transactional id, also the cursor record's key.
    pub(super) id: String,
    /// The cursor topic was found or created (once per run, retried until it works).
    pub(super) cursor_topic_ready: bool,
}

/// What a session needs from the run around it.
pub(super) struct Context<'a> {
    pub(super) cfg: &'a Config,
    pub(super) shutdown: &'a Arc<Shutdown>,
    pub(super) metrics: &'a Arc<Metrics>,
    /// The first session of the run: problems opening the journal are the operator's.
    pub(super) first: bool,
}

/// Runs one session from `resume`. Returns how it ended (`Ok` for a requested stop) and
/// the safe cursor it reached, to resume from (at-least-once only).
pub(super) fn run(
    cx: &Context,
    store: &mut dyn Store,
    resume: Option<String>,
    svc: &mut Service,
    eo: Option<&mut ExactlyOnce>,
) -> (Result<(), Failure>, Option<String>) {
    let cfg = cx.cfg;
    let control = Arc::new(Control::new(Limits {
        entries: cfg.pipeline.max_in_flight_entries,
        bytes: cfg.pipeline.max_in_flight_bytes,
    }));
    // From here on a stop reaches this session's reader at once; detached on every return.
    let _attached = Attached::new(cx.shutdown, control.clone());
    let exactly_once = eo.is_some();
    // One checkpointer for the session: the start position it saves is not saved again.
    let mut checkpointer = Checkpointer::default();
    let Prepared {
        producer,
        txn,
        resume,
        refusals,
    } = match prepare(cx, store, resume, svc, eo, &control, &mut checkpointer) {
        Ok(Some(p)) => p,
        Ok(None) => return (Ok(()), None),
        Err(e) => return (Err(e), None),
    };
    let (probe, _probing) = watch_brokers(cfg, &producer, cx.metrics);

    let reader = {
        let (cfg, control, producer, metrics) = (
            cfg.clone(),
            control.clone(),
            producer.clone(),
            cx.metrics.clone(),
        );
        let first = cx.first;
        thread::Builder::new()
            .name("journal-reader".into())
            .spawn(move || {
                let commit_on_idle = txn.is_some();
                let mut input = JournalInput::open(
                    &cfg,
                    resume.as_deref(),
                    first,
                    &control,
                    &metrics,
                    commit_on_idle,
                )?;
                let repairs =
                    refusals.map(|r| Repairer::new(&cfg, r, control.clone(), metrics.clone()));
                read_and_ship(
                    &mut input, &cfg, txn, repairs, &control, &producer, &metrics,
                )
            })
            .expect("spawn the journal reader thread")
    };

    // This thread commits the safe cursor on every tick while the reader runs, and speaks
    // to the service manager.
    let interval = Duration::from_millis(cfg.state.checkpoint_interval_ms);
    let tracker = control.window();
    let mut last_commit = Instant::now();
    while !reader.is_finished() {
        thread::sleep(interval.min(Duration::from_millis(100)));
        if !exactly_once && last_commit.elapsed() >= interval {
            checkpoint(store, tracker, &mut checkpointer, cx.metrics);
            last_commit = Instant::now();
        }
        let (n, bytes) = tracker.in_flight();
        Metrics::set(&cx.metrics.in_flight_entries, n as u64);
        Metrics::set(&cx.metrics.in_flight_bytes, bytes as u64);
        svc.tick(cfg, &control, &probe, cx.metrics);
    }
    let read_result = reader
        .join()
        .unwrap_or_else(|_| Err(Failure::retry(anyhow!("the journal reader panicked"))));

    let safe = settle(
        cx,
        store,
        &control,
        &producer,
        &mut checkpointer,
        exactly_once,
    );
    let fenced = exactly_once
        .then(|| transaction::fenced(&producer))
        .flatten();
    drop(producer);
    if let Some(f) = fenced {
        return (Err(f), safe);
    }
    let end = read_result.and_then(|()| match shipper::session_failure(&control) {
        Some(f) if !cx.shutdown.requested() => Err(f),
        _ => Ok(()),
    });
    (end, safe)
}

/// What a session starts its threads with.
struct Prepared {
    producer: Producer,
    /// The exactly-once transaction (the store, restored from Kafka).
    txn: Option<Transaction>,
    /// Where the reader starts.
    resume: Option<String>,
    /// Where refused records wait for their policy, when one other than "stall" applies.
    refusals: Option<Arc<Refusals>>,
}

/// Everything before the threads start: the cursor topic and the place Kafka holds
/// (exactly-once), the producer, and the configured start made a place of its own.
/// `Ok(None)`: a stop or a reload came first.
fn prepare(
    cx: &Context,
    store: &mut dyn Store,
    resume: Option<String>,
    svc: &mut Service,
    mut eo: Option<&mut ExactlyOnce>,
    control: &Arc<Control>,
    checkpointer: &mut Checkpointer,
) -> Result<Option<Prepared>, Failure> {
    let cfg = cx.cfg;
    let exactly_once = eo.is_some();
    if let Some(eo) = eo.as_deref_mut().filter(|eo| !eo.cursor_topic_ready) {
        let timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms.max(10_000));
        let owned = cfg.clone();
        let made = beside_service(
            cx,
            svc,
            "exactly-once: creating the cursor topic",
            move || transaction::ensure_cursor_topic(&owned, timeout, true).map_err(Failure::retry),
        )?;
        let Some(warning) = made else {
            return Ok(None);
        };
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        eo.cursor_topic_ready = true;
    }
    let txn_id = eo.map(|eo| eo.id.as_str());
    // Refused records get their policy on the shipping thread. Exactly-once mode stalls
    // instead: a refused record makes its transaction abortable, so there is nothing to
    // repair inside it (docs/delivery.md).
    let stall_only = cfg.delivery.on_too_large == OnRefused::Stall
        && cfg.delivery.on_topic_refused == OnRefused::Stall;
    let refusals = (!exactly_once && !stall_only).then(|| Arc::new(Refusals::default()));
    let role = match txn_id {
        Some(id) => Role::Transactional {
            id,
            timeout_ms: cfg.delivery.transaction_timeout_ms,
        },
        None => Role::Journal,
    };
    let producer = delivery::producer(
        &cfg.kafka,
        &cfg.pipeline,
        role,
        control.clone(),
        cx.metrics.clone(),
        refusals.clone(),
    )
    .map_err(Failure::fatal)?;
    // Exactly-once: fence older instances, then ask Kafka where we are.
    let (txn, resume) = match txn_id {
        None => (None, resume),
        Some(id) => {
            let (producer, owned, id, first) =
                (producer.clone(), cfg.clone(), id.to_string(), cx.first);
            let restored = beside_service(
                cx,
                svc,
                "exactly-once: registering the transactional id and reading the cursor topic",
                move || restore(&owned, first, producer, id),
            )?;
            let Some((s, r)) = restored else {
                return Ok(None);
            };
            (Some(Transaction::new(s, cfg)), r)
        }
    };
    // No saved place and a start other than the head: make the start a place of its own
    // before anything is produced, or a restart before the first acknowledgement would
    // seek to the (moved) tail again and pass over what was written in between.
    let resume = match resume {
        Some(r) => Some(r),
        None => start_position(cx, store, control.window(), checkpointer, exactly_once)?,
    };
    Ok(Some(Prepared {
        producer,
        txn,
        resume,
        refusals,
    }))
}

/// Settles what is in flight once the reader has ended: every admitted entry gets
/// delivered or failed, within the shutdown deadline, and only then is the final place
/// committed. Returns it (at-least-once; in exactly-once mode the shipping thread committed
/// or aborted the last transaction, the watermark's view is not what Kafka kept, and the
/// next session asks the cursor topic).
fn settle(
    cx: &Context,
    store: &mut dyn Store,
    control: &Control,
    producer: &Producer,
    checkpointer: &mut Checkpointer,
    exactly_once: bool,
) -> Option<String> {
    let tracker = control.window();
    let deadline = Instant::now() + Duration::from_millis(cx.cfg.pipeline.shutdown_timeout_ms);
    let _ = producer.flush(deadline.saturating_duration_since(Instant::now()));
    if !tracker.wait_settled(deadline) {
        let (n, bytes) = tracker.in_flight();
        tracing::warn!(
            entries = n,
            bytes,
            "entries still unconfirmed at the deadline; they will be sent again after restart"
        );
    }
    if exactly_once {
        return None;
    }
    checkpoint(store, tracker, checkpointer, cx.metrics);
    tracker.safe_cursor().map(|(c, _)| c.into_string())
}

/// The session's control, attached to `Shutdown` while the session runs: a stop or a
/// reload reaches its reader at once. Detached when dropped, on every way out of `run`.
struct Attached<'a>(&'a Shutdown);

impl<'a> Attached<'a> {
    fn new(shutdown: &'a Shutdown, control: Arc<Control>) -> Attached<'a> {
        shutdown.attach(Some(control));
        Attached(shutdown)
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.0.attach(None);
    }
}

/// Ends the broker probe thread when dropped (within one probe timeout; the thread holds
/// its own producer handle).
struct Probing(Arc<AtomicBool>);

impl Drop for Probing {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Readiness: one metadata round trip at the start (READY waits for it, up to the connect
/// timeout), then again every second while no broker is known to answer, so an idle agent
/// sees the brokers come back without waiting for traffic or statistics.
fn watch_brokers(
    cfg: &Config,
    producer: &Producer,
    metrics: &Arc<Metrics>,
) -> (Arc<Probe>, Probing) {
    let probe = Arc::new(Probe::default());
    let probing = Arc::new(AtomicBool::new(true));
    let (answers, producer, on, metrics) = (
        probe.clone(),
        producer.clone(),
        probing.clone(),
        metrics.clone(),
    );
    let topic = cfg
        .kafka
        .fixed_topic()
        .or(cfg.kafka.topic_fallback.as_deref())
        .unwrap_or("journal")
        .to_string();
    let first_timeout = Duration::from_millis(cfg.kafka.connect_timeout_ms);
    let _ = thread::Builder::new()
        .name("broker-probe".into())
        .spawn(move || {
            let mut timeout = first_timeout;
            let mut first = true;
            let on = || on.load(Ordering::Relaxed);
            while on() {
                if first || !metrics.broker_up.load(Ordering::Relaxed) {
                    first = false;
                    let answer = kafka::probe(&producer, &topic, timeout);
                    if answer.is_ok() {
                        metrics.broker_state(true);
                    }
                    answers.set(answer.map_err(|e| format!("{e:#}")));
                    timeout = first_timeout.min(Duration::from_secs(2));
                }
                for _ in 0..4 {
                    if on() {
                        thread::sleep(Duration::from_millis(250));
                    }
                }
            }
        });
    (probe, Probing(probing))
}

/// Registers the configured start (`tail`, `since`) as the first position of the watermark
/// and, in at-least-once mode, saves it at once. Exactly-once commits it with the first
/// transaction (a pass-only transaction when the journal is quiet).
fn start_position(
    cx: &Context,
    store: &mut dyn Store,
    tracker: &Tracker,
    checkpointer: &mut Checkpointer,
    exactly_once: bool,
) -> Result<Option<String>, Failure> {
    let start = journal::start_cursor(&cx.cfg.journal).map_err(|e| {
        if cx.first {
            Failure::fatal(e)
        } else {
            Failure::retry(e)
        }
    })?;
    let Some(start) = start else {
        return Ok(None);
    };
    tracing::info!(start = ?cx.cfg.journal.start, place = %start.replace('\n', " "), "no saved cursor: saving the start position before shipping");
    for p in place::positions(&start) {
        tracker.pass(p.to_string());
    }
    if !exactly_once {
        checkpoint(store, tracker, checkpointer, cx.metrics);
    }
    Ok(Some(start))
}

/// Exactly-once: registers the transactional id (fencing older instances and aborting
/// their open transaction), then reads this id's committed cursor.
fn restore(
    cfg: &Config,
    first: bool,
    producer: Producer,
    id: String,
) -> Result<(TransactionStore<delivery::JournalOwner>, Option<String>), Failure> {
    let mut store = TransactionStore::init(producer, cfg, id)?;
    let resume = store.load().map_err(Failure::retry)?;
    if first {
        super::log_restore(resume.as_deref(), &store.describe(), cfg);
    }
    Ok((store, resume))
}

/// Runs a step of the exactly-once setup that waits on the brokers (with timeouts of its
/// own, up to tens of seconds) on a helper thread, while this thread keeps systemd informed:
/// watchdog pings, READY once `kafka.connect_timeout_ms` has passed, and a prompt exit on
/// SIGTERM. `Ok(None)`: a shutdown was requested meanwhile; the helper is left to finish on
/// its own while the process exits (nothing it does moves a cursor).
fn beside_service<T: Send + 'static>(
    cx: &Context,
    svc: &mut Service,
    what: &'static str,
    step: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<Option<T>, Failure> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::Builder::new()
        .name("eo-setup".into())
        .spawn(move || {
            let _ = tx.send(step());
        })
        .map_err(|e| Failure::retry(anyhow!("cannot start the exactly-once setup: {e}")))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => return r.map(Some),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure::retry(anyhow!("the exactly-once setup panicked")));
            }
        }
        if cx.shutdown.requested() || cx.shutdown.reload_pending() {
            return Ok(None);
        }
        svc.waiting(what);
    }
}

/// Runs the shipping thread beside `input` (on this thread) until either ends.
fn read_and_ship(
    input: &mut dyn Input,
    cfg: &Config,
    txn: Option<Transaction>,
    repairs: Option<Repairer>,
    control: &Control,
    producer: &Producer,
    metrics: &Metrics,
) -> Result<(), Failure> {
    // Reading (libsystemd) and shipping (encoding, librdkafka's enqueue and, in exactly-once
    // mode, the transaction) each take about half of the per-entry work; a short queue lets
    // them use two cores.
    thread::scope(|scope| {
        let (mut out, queue) = input::queue();
        let shipping = thread::Builder::new()
            .name("shipper".into())
            .spawn_scoped(scope, move || {
                shipper::run(queue, cfg, txn, repairs, control, producer, metrics)
            })
            .expect("spawn the shipping thread");
        let read = input.follow(&mut out);
        // Closing the queue lets the shipping thread finish what it holds, in order.
        drop(out);
        let shipped = shipping
            .join()
            .unwrap_or_else(|_| Err(Failure::retry(anyhow!("the shipping thread panicked"))));
        // The shipping side's error explains why the reader was told to stop.
        shipped.and(read)
    })
}

/// A failing cursor save is logged when the streak starts, then every this many seconds.
const SAVE_REMINDER_SECS: u64 = 300;

/// The metrics of a place that became durable (the cursor file, or a committed
/// transaction): one home for both delivery modes.
pub(super) fn place_saved(metrics: &Metrics, place: &str) {
    let now = crate::metrics::unix_now();
    Metrics::add(&metrics.cursor_writes, 1);
    Metrics::set(&metrics.last_cursor_write, now);
    Metrics::set(&metrics.last_progress, now);
    if let Some(Ok(info)) = place::newest(place).map(journal::cursor::parse) {
        Metrics::set(&metrics.checkpoint_realtime_usec, info.realtime_usec);
    }
}

/// One checkpoint tick of the at-least-once path, with its metrics and log lines.
fn checkpoint(store: &mut dyn Store, tracker: &Tracker, cp: &mut Checkpointer, metrics: &Metrics) {
    match cp.commit_safe(store, tracker) {
        Committed::Unchanged => {}
        Committed::Saved(cursor) => {
            place_saved(metrics, &cursor);
            let now = crate::metrics::unix_now();
            let ended = metrics
                .cursor_save_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(f) = ended {
                tracing::info!(
                    failed_for_secs = now.saturating_sub(f.since),
                    "the cursor is saved again"
                );
            }
        }
        Committed::Failed(e) => {
            // The old cursor stays valid and shipping goes on; the next tick tries again.
            // One line when the streak starts, then a reminder every few minutes, so a
            // full disk neither floods the journal nor goes unnoticed (readiness and
            // `status` say it all along). The streak lives in the metrics, so it outlives
            // the session that met it (a full disk stays full across session restarts).
            let now = crate::metrics::unix_now();
            let error = format!("cannot save the cursor: {e:#}");
            {
                let mut g = metrics
                    .cursor_save_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let f = g.get_or_insert(crate::metrics::SaveFailure {
                    since: now,
                    error: String::new(),
                    logged: 0,
                });
                f.error = error.clone();
                if f.logged == 0 {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "cannot save the cursor; shipping goes on (a restart now would send again what was shipped since the last save); retrying every checkpoint interval"
                    );
                    f.logged = now.max(1);
                } else if now.saturating_sub(f.logged) >= SAVE_REMINDER_SECS {
                    tracing::error!(
                        error = format!("{e:#}"),
                        failing_for_secs = now.saturating_sub(f.since),
                        "still cannot save the cursor"
                    );
                    f.logged = now.max(1);
                }
            }
            Metrics::add(&metrics.cursor_write_errors, 1);
            metrics.error(error);
        }
    }
}
