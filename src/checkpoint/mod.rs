//! The checkpoint stage: which position is safe to remember, and remembering it.
//!
//! Owns the acknowledgement watermark, the in-flight window (backpressure) and the durable
//! cursor stores' common contract. The one rule this module exists to keep: a position
//! reaches durable storage only if its record and every record before it were confirmed
//! by the broker. The rule is kept by type: a [`Store`] commits only a [`SafeCursor`], and
//! only the [`Tracker`] (reading its watermark) can make one. Positions are opaque here:
//! journal cursors today, any input's positions tomorrow.
//!
//! It must never hold rdkafka types or talk to Kafka: the exactly-once store, which commits
//! inside a Kafka transaction, lives in `kafka::transaction` and takes a [`SafeCursor`]
//! like every store.

mod file;
pub(crate) mod place;
mod tracker;
mod watermark;

use anyhow::Result;

pub(crate) use file::{FileStore, read_cursor_file};
pub(crate) use tracker::{Limits, Tracker};
pub use watermark::Watermark;

/// A place (one position per stream, see [`place`]) the watermark vouches for: each
/// position's record and every record read before it were confirmed. Only
/// [`Tracker::safe_cursor`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafeCursor(String);

impl SafeCursor {
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for SafeCursor {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Durable storage for the safe cursor.
pub(crate) trait Store: Send {
    /// The last committed cursor, if any.
    fn load(&mut self) -> Result<Option<String>>;
    /// Makes `cursor` durable.
    fn commit(&mut self, cursor: &SafeCursor) -> Result<()>;
    /// Where the cursor lives, for messages.
    fn describe(&self) -> String;
}

/// What one checkpoint tick did.
#[derive(Debug)]
pub(crate) enum Committed {
    /// The safe cursor has not moved since the last commit (or there is none yet).
    Unchanged,
    Saved(SafeCursor),
    /// The store refused; the previous cursor stays valid and the next tick tries again.
    Failed(anyhow::Error),
}

/// Commits the watermark's safe cursor to a store, once per watermark generation.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    committed_generation: u64,
}

impl Default for Checkpointer {
    fn default() -> Self {
        Checkpointer {
            committed_generation: u64::MAX,
        }
    }
}

impl Checkpointer {
    /// The only way the at-least-once path moves a cursor into a store.
    pub(crate) fn commit_safe(&mut self, store: &mut dyn Store, tracker: &Tracker) -> Committed {
        let Some((cursor, generation)) = tracker.safe_cursor() else {
            return Committed::Unchanged;
        };
        if generation == self.committed_generation {
            return Committed::Unchanged;
        }
        match store.commit(&cursor) {
            Ok(()) => {
                self.committed_generation = generation;
                Committed::Saved(cursor)
            }
            Err(e) => Committed::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Memory {
        commits: Vec<String>,
        refuse: bool,
    }

    impl Store for Memory {
        fn load(&mut self) -> Result<Option<String>> {
            Ok(self.commits.last().cloned())
        }
        fn commit(&mut self, cursor: &SafeCursor) -> Result<()> {
            if self.refuse {
                anyhow::bail!("disk full");
            }
            self.commits.push(cursor.to_string());
            Ok(())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    #[test]
    fn only_the_safe_prefix_reaches_the_store_once_per_move() {
        let t = Tracker::for_tests(10, 1000);
        let mut store = Memory::default();
        let mut cp = Checkpointer::default();
        assert!(matches!(
            cp.commit_safe(&mut store, &t),
            Committed::Unchanged
        ));
        let a = t.admit("a".into(), 1).unwrap();
        let b = t.admit("b".into(), 1).unwrap();
        t.delivered(b);
        // "b" is confirmed but "a" is not: nothing is safe yet.
        assert!(matches!(
            cp.commit_safe(&mut store, &t),
            Committed::Unchanged
        ));
        t.delivered(a);
        assert!(matches!(cp.commit_safe(&mut store, &t), Committed::Saved(ref c) if &**c == "b"));
        assert!(matches!(
            cp.commit_safe(&mut store, &t),
            Committed::Unchanged
        ));
        assert_eq!(store.commits, ["b"]);
        t.pass("c".into());
        store.refuse = true;
        assert!(matches!(
            cp.commit_safe(&mut store, &t),
            Committed::Failed(_)
        ));
        store.refuse = false;
        assert!(matches!(cp.commit_safe(&mut store, &t), Committed::Saved(ref c) if &**c == "c"));
        assert_eq!(store.commits, ["b", "c"]);
    }

    #[test]
    fn exactly_once_commits_only_where_the_watermark_stands() {
        let t = Tracker::for_tests(10, 1000);
        let a = t.admit("a".into(), 1).unwrap();
        t.admit("b".into(), 1).unwrap();
        t.delivered(a);
        assert!(t.safe_cursor_at("b").is_err());
        assert_eq!(&*t.safe_cursor_at("a").unwrap(), "a");
    }
}
