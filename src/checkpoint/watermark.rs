//! The acknowledgement watermark: which journal position is safe to remember.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug)]
struct Slot {
    cursor: String,
    bytes: usize,
    state: State,
    /// When it was registered, for one entry in `LATENCY_SAMPLE` (reading the clock for
    /// every entry, twice, was ~2 % of the agent's CPU on this VM's clock source, #19).
    read_at: Option<Instant>,
}

/// One entry in this many has its delivery latency measured.
const LATENCY_SAMPLE: u64 = 16;

/// Tracks entries by sequence number (their order of reading) and yields, for every
/// stream, the position of its newest entry such that it and every entry read before it
/// were delivered (see [`super::Place`] for streams).
///
/// Invariant: `safe` and `streams` are only ever set from a slot at the front of the ring
/// whose state is `Delivered`, so they never name an entry that has an undelivered
/// predecessor. A `Failed` slot stays at the front forever: nothing after it can become
/// safe in this session.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Sequence number of `ring[0]`.
    base: u64,
    ring: VecDeque<Slot>,
    safe: Option<String>,
    /// Each stream's safe position, with the generation it last moved at (the order the
    /// place lists them in: the stream that moved last comes last).
    streams: HashMap<Box<str>, (u64, String)>,
    /// Order of the streams' moves (seeded positions first).
    ticks: u64,
    /// Number of the safe cursor's advances, so callers can tell whether it moved.
    generation: u64,
}

impl Watermark {
    pub fn new() -> Watermark {
        Watermark::default()
    }

    /// Registers the next entry; returns its sequence number.
    pub fn push(&mut self, cursor: String, bytes: usize) -> u64 {
        let seq = self.base + self.ring.len() as u64;
        self.ring.push_back(Slot {
            cursor,
            bytes,
            state: State::Pending,
            read_at: (seq % LATENCY_SAMPLE == 0).then(Instant::now),
        });
        seq
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = seq.checked_sub(self.base)?;
        self.ring.get_mut(usize::try_from(i).ok()?)
    }

    /// Marks `seq` delivered. Returns the bytes it held, to release them from the window.
    /// Unknown or repeated sequence numbers are ignored and return 0.
    pub fn delivered(&mut self, seq: u64) -> usize {
        self.delivered_at(seq).0
    }

    /// Like [`Self::delivered`], also returning how long ago the entry was registered (for
    /// the entries whose time was taken).
    pub fn delivered_at(&mut self, seq: u64) -> (usize, Option<Duration>) {
        let Some(slot) = self.slot(seq) else {
            return (0, None);
        };
        if slot.state != State::Pending {
            return (0, None);
        }
        slot.state = State::Delivered;
        let bytes = slot.bytes;
        let latency = slot.read_at.map(|t| t.elapsed());
        while self
            .ring
            .front()
            .is_some_and(|s| s.state == State::Delivered)
        {
            let s = self.ring.pop_front().expect("front exists");
            self.base += 1;
            self.generation += 1;
            self.ticks += 1;
            advance(&mut self.streams, self.ticks, &s.cursor);
            self.safe = Some(s.cursor);
        }
        (bytes, latency)
    }

    /// Marks `seq` failed: the watermark can never move past it. Returns the bytes it held.
    pub fn failed(&mut self, seq: u64) -> usize {
        let Some(slot) = self.slot(seq) else { return 0 };
        if slot.state != State::Pending {
            return 0;
        }
        slot.state = State::Failed;
        slot.bytes
    }

    /// The newest safe position (of any stream).
    pub fn safe_cursor(&self) -> Option<&str> {
        self.safe.as_deref()
    }

    /// The place that may be written to durable storage: every stream's safe position,
    /// once anything moved in this session.
    pub fn safe_place(&self) -> Option<String> {
        self.safe.as_ref()?;
        Some(render(&self.streams))
    }

    /// Drops `stream`'s position from every place saved from now on (its writer's files
    /// are all gone). Refused (false) while entries of it are still registered: their
    /// delivery would bring the position back.
    pub fn forget(&mut self, stream: &str) -> bool {
        if self
            .ring
            .iter()
            .any(|s| super::place::stream_of(&s.cursor) == stream)
        {
            return false;
        }
        self.streams.remove(stream);
        true
    }

    /// The place the watermark will stand at once everything registered is delivered.
    pub fn newest_place(&self) -> Option<String> {
        if self.ring.is_empty() {
            return self.safe_place();
        }
        let mut streams = self.streams.clone();
        for (i, s) in self.ring.iter().enumerate() {
            advance(&mut streams, self.ticks + 1 + i as u64, &s.cursor);
        }
        Some(render(&streams))
    }

    /// Positions this session starts from, for the streams it may not move: they are part
    /// of every place it saves. Only before anything is registered.
    pub fn seed(&mut self, place: &str) {
        debug_assert!(self.ring.is_empty() && self.safe.is_none());
        for p in super::place::positions(place) {
            self.ticks += 1;
            advance(&mut self.streams, self.ticks, p);
        }
    }

    /// The cursor of the newest registered position, settled or not.
    pub fn newest_cursor(&self) -> Option<&str> {
        self.ring
            .back()
            .map(|s| s.cursor.as_str())
            .or(self.safe.as_deref())
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Entries registered but not yet part of the safe prefix.
    pub fn unsettled(&self) -> usize {
        self.ring.len()
    }

    /// Whether an entry failed: the session must end and restart from the safe cursor.
    pub fn blocked(&self) -> bool {
        self.ring.iter().any(|s| s.state == State::Failed)
    }

    /// Whether every registered entry has a final answer (delivered or failed).
    pub fn settled(&self) -> bool {
        self.ring.iter().all(|s| s.state != State::Pending)
    }
}

/// Moves the stream of `pos` to `pos`, at `tick`.
fn advance(streams: &mut HashMap<Box<str>, (u64, String)>, tick: u64, pos: &str) {
    let key = super::place::stream_of(pos);
    match streams.get_mut(key) {
        Some((t, p)) => {
            *t = tick;
            p.clear();
            p.push_str(pos);
        }
        None => {
            streams.insert(key.into(), (tick, pos.to_string()));
        }
    }
}

fn render(streams: &HashMap<Box<str>, (u64, String)>) -> String {
    let mut v: Vec<&(u64, String)> = streams.values().collect();
    v.sort_unstable_by_key(|(t, _)| *t);
    super::place::join(v.into_iter().map(|(_, p)| p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(i: u64) -> String {
        format!("c{i}")
    }

    #[test]
    fn in_order_acks_advance() {
        let mut w = Watermark::new();
        for i in 0..3 {
            assert_eq!(w.push(c(i), 10), i);
        }
        assert_eq!(w.safe_cursor(), None);
        assert_eq!(w.delivered(0), 10);
        assert_eq!(w.safe_cursor(), Some("c0"));
        w.delivered(1);
        w.delivered(2);
        assert_eq!(w.safe_cursor(), Some("c2"));
        assert_eq!(w.unsettled(), 0);
    }

    #[test]
    fn out_of_order_acks_wait_for_the_gap() {
        let mut w = Watermark::new();
        for i in 0..4 {
            w.push(c(i), 1);
        }
        w.delivered(2);
        w.delivered(3);
        assert_eq!(w.safe_cursor(), None);
        w.delivered(0);
        assert_eq!(w.safe_cursor(), Some("c0"));
        w.delivered(1);
        assert_eq!(w.safe_cursor(), Some("c3"));
    }

    #[test]
    fn a_failure_stops_the_watermark_for_good() {
        let mut w = Watermark::new();
        for i in 0..4 {
            w.push(c(i), 1);
        }
        w.delivered(0);
        assert_eq!(w.failed(1), 1);
        w.delivered(2);
        w.delivered(3);
        assert_eq!(w.safe_cursor(), Some("c0"));
        assert!(w.blocked());
        assert!(w.settled());
        // A late success report for the failed entry must not unblock it.
        assert_eq!(w.delivered(1), 0);
        assert_eq!(w.safe_cursor(), Some("c0"));
    }

    #[test]
    fn a_place_holds_every_streams_safe_position() {
        let mut w = Watermark::new();
        w.seed("s=c;i=9\ns=a;i=1");
        assert_eq!(w.safe_place(), None, "nothing moved yet");
        let a2 = w.push("s=a;i=2".into(), 1);
        let b1 = w.push("s=b;i=1".into(), 1);
        let a3 = w.push("s=a;i=3".into(), 1);
        assert_eq!(
            w.newest_place().as_deref(),
            Some("s=c;i=9\ns=b;i=1\ns=a;i=3")
        );
        w.delivered(b1);
        assert_eq!(w.safe_place(), None, "b1 waits for a2");
        w.delivered(a2);
        // The stream that moved last comes last; the seeded one keeps its position.
        assert_eq!(w.safe_place().as_deref(), Some("s=c;i=9\ns=a;i=2\ns=b;i=1"));
        w.delivered(a3);
        assert_eq!(w.safe_place().as_deref(), Some("s=c;i=9\ns=b;i=1\ns=a;i=3"));
        assert_eq!(w.newest_place(), w.safe_place());
    }

    #[test]
    fn duplicate_and_unknown_reports_are_ignored() {
        let mut w = Watermark::new();
        w.push(c(0), 5);
        assert_eq!(w.delivered(7), 0);
        assert_eq!(w.delivered(0), 5);
        assert_eq!(w.delivered(0), 0);
        assert_eq!(w.failed(0), 0);
        assert!(!w.blocked());
    }

    proptest! {
        /// Under any order of acks and failures, the safe cursor is always the newest entry
        /// whose predecessors were all delivered, never beyond the first failure.
        #[test]
        fn shuffled_acks(n in 1usize..200, seed in any::<u64>(), fail_at in prop::option::of(0usize..200)) {
            let mut w = Watermark::new();
            for i in 0..n as u64 {
                w.push(c(i), 1);
            }
            let mut order: Vec<usize> = (0..n).collect();
            // Deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..n).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut done = vec![false; n];
            for &i in &order {
                if Some(i) == fail_at {
                    w.failed(i as u64);
                } else {
                    w.delivered(i as u64);
                    done[i] = true;
                }
                let prefix = done.iter().take_while(|d| **d).count();
                let expect = if prefix == 0 { None } else { Some(c(prefix as u64 - 1)) };
                prop_assert_eq!(w.safe_cursor().map(str::to_string), expect);
            }
        }
    }
}
