//! The seam between an input and the rest of the pipeline.
//!
//! An input reads records from somewhere, in an order it can resume from, and hands each
//! one to [`Out`] together with its position. Positions are opaque strings to everyone
//! else: the watermark orders them by arrival, a store keeps the newest safe one, and the
//! next session gives it back to the same input to resume after. An input learns which
//! positions are safe only through the checkpoint (the store's cursor at the next session,
//! or `Tracker::safe_cursor` while running), never from the shipping side.
//!
//! The journal is the first input (`reader`). A second input adds its record type to
//! [`Item`] and its encoder to `format`; the queue, the shipping thread, the watermark and
//! the stores stay as they are.

use std::sync::mpsc;

use crate::error::Failure;
use crate::journal::Entry;

/// Entries waiting between the reader and the shipping thread. Small: the in-flight window
/// is the real buffer; this only smooths the hand-over.
pub(super) const SHIP_QUEUE: usize = 256;

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
    /// Reads until the session ends (a stop or failure the tracker reports) or `out` hangs
    /// up. Returns a failure only for the input's own trouble.
    fn follow(&mut self, out: &mut Out) -> Result<(), Failure>;
}

/// The input's end of the queue to the shipping thread. Every method returns false once
/// the shipping thread has hung up (the session is ending).
pub(super) struct Out {
    tx: mpsc::SyncSender<Item>,
    recycle: mpsc::Receiver<Entry>,
}

/// The shipping thread's end: items in, spent buffers back.
pub(super) struct In {
    pub(super) rx: mpsc::Receiver<Item>,
    pub(super) recycle: mpsc::SyncSender<Entry>,
}

/// A bounded queue between an input and the shipping thread.
pub(super) fn queue() -> (Out, In) {
    let (tx, rx) = mpsc::sync_channel::<Item>(SHIP_QUEUE);
    let (recycle_tx, recycle_rx) = mpsc::sync_channel::<Entry>(SHIP_QUEUE);
    (
        Out {
            tx,
            recycle: recycle_rx,
        },
        In {
            rx,
            recycle: recycle_tx,
        },
    )
}

impl Out {
    /// Queues `entry`, which is replaced by a recycled buffer.
    pub(super) fn ship(&mut self, entry: &mut Entry) -> bool {
        let spare = self.recycle.try_recv().unwrap_or_default();
        let full = std::mem::replace(entry, spare);
        self.tx.send(Item::Entry(full)).is_ok()
    }

    /// Registers a position that needs no delivery, behind every entry queued so far.
    pub(super) fn pass(&mut self, cursor: String) -> bool {
        self.tx.send(Item::Pass(cursor)).is_ok()
    }

    pub(super) fn idle(&mut self) -> bool {
        self.tx.send(Item::Idle).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_order_and_buffers_come_back() {
        let (mut out, inn) = queue();
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
            .map(|_| match inn.rx.recv().unwrap() {
                Item::Entry(e) => {
                    inn.recycle.send(e).unwrap();
                    "entry a".to_string()
                }
                Item::Pass(c) => format!("pass {c}"),
                Item::Idle => "idle".to_string(),
            })
            .collect();
        assert_eq!(got, ["entry a", "pass b", "idle"]);
        let mut next = Entry::new();
        assert!(out.ship(&mut next));
        assert_eq!(
            next.cursor, "a",
            "a recycled buffer, cleared by the shipper in real use"
        );
        drop(inn);
        assert!(!out.idle(), "a hung-up shipping thread ends the input");
    }
}
