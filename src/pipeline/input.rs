//! The seam between an input and the rest of the pipeline.
//!
//! An input reads records from somewhere, in an order it can resume from, and hands each
//! one to [`Out`] together with its position. Positions are opaque strings to everyone
//! else: the watermark orders them by arrival, a store keeps the newest safe one, and the
//! next session gives it back to the same input to resume after. An input learns which
//! positions are safe only through the checkpoint (the store's cursor at the next session,
//! or `Tracker::safe_cursor` while running), never from the shipping side.
//!
//! The journal is the input of this kind (`reader`); an input with resumable positions
//! adds its record type to [`Item`] and its encoder to `format`, and the queue, the
//! shipping thread, the watermark and the stores stay as they are. The Forward input has no
//! positions (its clients resend what was not acknowledged) and runs beside the pipeline
//! instead (`crate::forward`, docs/design.md).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use crate::error::Failure;
use crate::journal::Entry;

/// Entries waiting between the reader and the shipping thread. Small: the in-flight window
/// is the real buffer; this only smooths the hand-over.
pub(super) const SHIP_QUEUE: usize = 256;

/// Items cross the queue in batches of up to this many: one channel operation and at most
/// one wake-up per batch instead of per entry (the futex wake-ups and channel work of the
/// per-entry hand-over were ~8 % of the agent's CPU in the profile, #19). An input sends a
/// partial batch whenever it would wait (end of its data, a full queue), so a batch never
/// holds an entry back.
pub(super) const BATCH: usize = 64;

/// The queue's bound in bytes the entries hold (`Entry::held_bytes`): 256 ordinary entries
/// are ~350 KiB, but 256 entries holding core dumps would be gigabytes. An entry larger
/// than this passes alone.
pub(super) const SHIP_QUEUE_BYTES: usize = 4 << 20;

/// Capacity a recycled entry buffer may keep; larger ones are given back. Ordinary entries
/// hold 1-4 KiB; the pool below may hold [`SPARES`] buffers, so this bounds what it keeps
/// with the offsets table (`Entry::release_large`): ~21 MiB at most, a few MiB in practice.
pub(super) const RECYCLE_KEEP_BYTES: usize = 16 << 10;

/// Buffers the input keeps for the entries it reads next: above what can be out of its
/// hands at once (the queue, its own batch, the shipping thread's batch and spent buffers,
/// those on their way back: 832), so a returned buffer is never dropped only to be missed a
/// moment later. Capped at 256 before, returned buffers were dropped in bursts and 5.8 % of
/// the entries then got a new buffer that grew from empty (#32).
const SPARES: usize = 4 * SHIP_QUEUE;

/// Bytes of entry data in the queue, shared by both ends. The common case (room) is one
/// atomic operation on each side; only a full queue takes the lock and waits.
#[derive(Debug, Default)]
struct Budget {
    used: AtomicUsize,
    /// The input is waiting for room (the shipping end then signals `freed`).
    waiting: AtomicBool,
    closed: AtomicBool,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Budget {
    /// Takes `n` bytes if they fit now (or the queue is empty); never waits for room (a
    /// lost race with the other end is retried).
    fn try_take(&self, n: usize) -> bool {
        loop {
            let used = self.used.load(Ordering::Acquire);
            if used != 0 && used + n > SHIP_QUEUE_BYTES {
                return false;
            }
            if self
                .used
                .compare_exchange(used, used + n, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return true;
            }
        }
    }

    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Waits until `n` more bytes fit (or the queue is empty), then takes them. Returns
    /// false when the shipping end is gone.
    fn take(&self, n: usize) -> bool {
        loop {
            if self.try_take(n) {
                return self.is_open();
            }
            if !self.is_open() {
                return false;
            }
            let g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.waiting.store(true, Ordering::Release);
            // Re-checked under the lock by the timeout: a wake-up missed between the load
            // above and this wait costs at most 100 ms.
            let _ = self
                .freed
                .wait_timeout(g, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner());
            self.waiting.store(false, Ordering::Release);
        }
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.freed.notify_all();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.freed.notify_all();
    }
}

/// What an input hands over, in its order: the watermark must see positions that need no
/// delivery in the same order as the records around them.
pub(super) enum Item {
    /// A journal entry; its cursor is its position.
    Entry(Entry),
    /// A position that needs no delivery (entries the filters removed).
    Pass(String),
    /// The input has nothing more for now (exactly-once: time to commit).
    Idle,
}

/// One input of the pipeline.
pub(super) trait Input {
    /// Reads until the session ends (a stop or failure the session's control reports) or `out` hangs
    /// up. Returns a failure only for the input's own trouble.
    fn follow(&mut self, out: &mut Out) -> Result<(), Failure>;
}

/// The input's end of the queue to the shipping thread. Every method returns false once
/// the shipping thread has hung up (the session is ending).
///
/// Items are gathered into a batch and sent when it is full, when the input says it is
/// idle, and before the input would wait for room; an input calls [`Out::flush`] before it
/// waits for data of its own. Dropping it sends what it holds.
pub(super) struct Out {
    tx: mpsc::SyncSender<VecDeque<Item>>,
    recycle: mpsc::Receiver<(VecDeque<Item>, Vec<Entry>)>,
    budget: Arc<Budget>,
    batch: VecDeque<Item>,
    /// Emptied batches back from the shipping thread: at live rates a batch is sent at
    /// every end of the journal, and allocating one each time showed in the profile.
    empties: Vec<VecDeque<Item>>,
    /// Cleared buffers back from the shipping thread, handed out one per entry shipped.
    spares: Vec<Entry>,
    /// Buffers made because none had come back (each grows from empty as it is filled).
    made: u64,
}

/// The shipping thread's end: items in, spent buffers back.
pub(super) struct In {
    rx: mpsc::Receiver<VecDeque<Item>>,
    recycle: mpsc::SyncSender<(VecDeque<Item>, Vec<Entry>)>,
    budget: Arc<Budget>,
    current: VecDeque<Item>,
    spent: Vec<Entry>,
}

/// A queue between an input and the shipping thread, bounded in entries and in bytes.
pub(super) fn queue() -> (Out, In) {
    let batches = SHIP_QUEUE / BATCH;
    let (tx, rx) = mpsc::sync_channel::<VecDeque<Item>>(batches);
    // Room for every batch in flight to come back, so a returned buffer is never dropped
    // for want of space.
    let (recycle_tx, recycle_rx) = mpsc::sync_channel(batches + 2);
    let budget = Arc::new(Budget::default());
    (
        Out {
            tx,
            recycle: recycle_rx,
            budget: budget.clone(),
            batch: VecDeque::with_capacity(BATCH),
            empties: Vec::new(),
            spares: Vec::new(),
            made: 0,
        },
        In {
            rx,
            recycle: recycle_tx,
            budget,
            current: VecDeque::new(),
            spent: Vec::with_capacity(BATCH),
        },
    )
}

impl Drop for In {
    fn drop(&mut self) {
        // Wakes an input waiting for bytes: nobody will take them any more.
        self.budget.close();
    }
}

impl In {
    /// The next item, waiting at most `timeout`. `Err(true)`: the input hung up.
    pub(super) fn next(&mut self, timeout: Duration) -> Result<Item, bool> {
        let item = match self.current.pop_front() {
            Some(item) => item,
            None => {
                // Most calls find a batch waiting: skip the deadline arithmetic of a timed
                // wait.
                let got = match self.rx.try_recv() {
                    Ok(batch) => Ok(batch),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        Err(mpsc::RecvTimeoutError::Disconnected)
                    }
                    Err(mpsc::TryRecvError::Empty) => self.rx.recv_timeout(timeout),
                };
                let batch = match got {
                    Ok(batch) => batch,
                    Err(mpsc::RecvTimeoutError::Timeout) => return Err(false),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Err(true),
                };
                // The emptied batch goes back with the buffers spent so far.
                let empty = std::mem::replace(&mut self.current, batch);
                let spent = std::mem::take(&mut self.spent);
                // A full return queue: the input has enough; these are freed.
                let _ = self.recycle.try_send((empty, spent));
                // A batch is never sent empty.
                self.current.pop_front().ok_or(false)?
            }
        };
        if let Item::Entry(e) = &item {
            self.budget.give(e.held_bytes());
        }
        Ok(item)
    }

    /// Hands a spent buffer back to the input (with the next emptied batch), without the
    /// capacity of a huge entry.
    pub(super) fn recycle(&mut self, mut entry: Entry) {
        entry.clear();
        entry.release_large(RECYCLE_KEEP_BYTES);
        if self.spent.len() < SHIP_QUEUE {
            self.spent.push(entry);
        }
    }
}

impl Out {
    /// Queues `entry`, which is replaced by a recycled buffer. Waits while the queue holds
    /// more than its byte bound.
    pub(super) fn ship(&mut self, entry: &mut Entry) -> bool {
        let n = entry.held_bytes();
        if !self.budget.try_take(n) {
            // What this end holds counts against the bound: send it before waiting, or the
            // shipping thread could never give the room back.
            if !self.flush() || !self.budget.take(n) {
                return false;
            }
        }
        if self.spares.is_empty() {
            self.take_back();
        }
        let spare = self.spares.pop().unwrap_or_else(|| {
            self.made += 1;
            Entry::default()
        });
        let full = std::mem::replace(entry, spare);
        self.push(Item::Entry(full))
    }

    /// Registers a position that needs no delivery, behind every entry queued so far.
    pub(super) fn pass(&mut self, cursor: String) -> bool {
        self.push(Item::Pass(cursor))
    }

    /// Says the input has nothing more for now; sends what is gathered.
    pub(super) fn idle(&mut self) -> bool {
        self.batch.push_back(Item::Idle);
        self.flush()
    }

    /// Sends the items gathered so far. An input calls it before it waits for data.
    pub(super) fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return self.budget.is_open();
        }
        // Once per batch: buffers left waiting in the return queue fill it, and the
        // shipping thread then frees what it cannot return.
        self.take_back();
        let next = self
            .empties
            .pop()
            .unwrap_or_else(|| VecDeque::with_capacity(BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        self.tx.send(batch).is_ok()
    }

    /// Collects the batches and buffers the shipping thread gave back.
    fn take_back(&mut self) {
        while let Ok((empty, spent)) = self.recycle.try_recv() {
            if self.empties.len() < SHIP_QUEUE / BATCH + 2 {
                self.empties.push(empty);
            }
            let room = SPARES - self.spares.len().min(SPARES);
            self.spares.extend(spent.into_iter().take(room));
        }
    }

    fn push(&mut self, item: Item) -> bool {
        self.batch.push_back(item);
        if self.batch.len() >= BATCH {
            self.flush()
        } else {
            self.budget.is_open()
        }
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        // What was read before the input ended still ships (a clean stop confirms it).
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_order_and_buffers_come_back() {
        let (mut out, mut inn) = queue();
        let mut e = Entry::new();
        e.cursor = "a".into();
        e.push_field(b"MESSAGE", b"x");
        assert!(out.ship(&mut e));
        assert!(
            e.is_empty() && e.cursor.is_empty(),
            "the reader gets a fresh buffer"
        );
        assert!(out.pass("b".into()));
        assert!(out.idle());
        let got: Vec<String> = (0..3)
            .map(|_| match inn.next(Duration::from_secs(1)).unwrap() {
                Item::Entry(e) => {
                    inn.recycle(e);
                    "entry a".to_string()
                }
                Item::Pass(c) => format!("pass {c}"),
                Item::Idle => "idle".to_string(),
            })
            .collect();
        assert_eq!(got, ["entry a", "pass b", "idle"]);
        let mut next = Entry::new();
        assert!(out.ship(&mut next));
        assert!(
            next.cursor.is_empty() && next.is_empty(),
            "a recycled buffer, cleared"
        );
        drop(inn);
        assert!(!out.idle(), "a hung-up shipping thread ends the input");
    }

    /// A file's entry may hold hundreds of thousands of empty fields (journald itself caps
    /// an entry at 1,024 fields; journal-remote's files and files copied in do not): each
    /// costs one byte of `NAME=value` but its headers and offsets in memory, and the bound
    /// must count the memory.
    #[test]
    fn the_byte_bound_counts_what_an_entry_holds_not_its_journal_bytes() {
        let (mut out, _inn) = queue();
        let mut e = Entry::new();
        for _ in 0..100_000 {
            e.push_field(b"", b"");
        }
        assert_eq!(e.data_len(), 100_000, "one byte each in the journal");
        assert!(out.ship(&mut e));
        let counted = out.budget.used.load(Ordering::Acquire);
        assert!(
            counted >= 100_000 * 18,
            "{counted} bytes counted for an entry holding at least 1.8 MB"
        );
    }

    /// Buffers circulate: once the pipeline is full, every entry is read into a buffer that
    /// came back, whatever the two threads' timing. A buffer made new grows from empty as
    /// it is filled (reallocations were ~4 % of the reader thread when 5.8 % of the entries
    /// got one: returned buffers were dropped while the reader held 256, then missed).
    #[test]
    fn buffers_keep_circulating_once_the_pipeline_is_full() {
        let (mut out, mut inn) = queue();
        let n = 200_000u64;
        let shipper = std::thread::spawn(move || {
            let mut got = 0u64;
            while let Ok(item) = inn.next(Duration::from_secs(5)) {
                if let Item::Entry(e) = item {
                    got += 1;
                    inn.recycle(e);
                    // Bursts: the shipping thread stalls now and then, then drains.
                    if got % 5_000 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
            got
        });
        for i in 0..n {
            let mut e = Entry::new();
            e.cursor = i.to_string();
            e.push_field(b"MESSAGE", b"hello");
            assert!(out.ship(&mut e));
            // The reader waits for its journal now and then too.
            if i % 3_000 == 0 {
                assert!(out.flush());
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let made = out.made;
        drop(out);
        assert_eq!(shipper.join().unwrap(), n);
        // At most every buffer that can be out of the input's hands at once: the queue, the
        // batch being gathered, the shipping thread's batch and spent buffers, and those on
        // their way back.
        let in_flight = (SHIP_QUEUE / BATCH + 3 + SHIP_QUEUE / BATCH + 2) * BATCH;
        assert!(
            made <= in_flight as u64,
            "{made} buffers made for {n} entries (at most {in_flight} can be in flight)"
        );
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_gives_back_large_buffers() {
        let (mut out, mut inn) = queue();
        let big = |c: &str| {
            let mut e = Entry::new();
            e.cursor = c.into();
            e.push_field(b"CORE", &vec![7u8; 3 << 20]);
            e
        };
        // Larger than the bound alone: it passes into an empty queue.
        assert!(out.ship(&mut big("1")));
        let t = std::thread::spawn(move || {
            let ok = out.ship(&mut big("2")) && out.flush();
            (ok, out)
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !t.is_finished(),
            "a second core dump waits for the first to leave"
        );
        let Ok(Item::Entry(first)) = inn.next(Duration::from_secs(1)) else {
            panic!("the first entry");
        };
        let (ok, _out) = t.join().unwrap();
        assert!(ok);
        inn.recycle(first);
        let Ok(Item::Entry(_)) = inn.next(Duration::from_secs(1)) else {
            panic!("the second entry");
        };
    }
}
