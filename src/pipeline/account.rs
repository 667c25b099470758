//! The loss account's reader side: entries and bytes per unit, and the messages journald's
//! rate limit dropped (its "Suppressed N messages from UNIT" entries), counted on the
//! reader thread and handed to the metrics in batches.
//!
//! Owns the batch and the rule for which suppression entries count: only those journald
//! wrote about itself (`_TRANSPORT=driver`, `_UID=0`: trusted fields that journald sets
//! and no client can), since `MESSAGE_ID`, `N_DROPPED` and `OBJECT_SYSTEMD_UNIT` are
//! fields any user can log. Counts saturate, never wrap. It must never take a lock per
//! entry (the metrics table is locked once per batch) and never change what is shipped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::journal::Entry;
use crate::metrics::{Metrics, UnitCounts};

/// journald's SD_MESSAGE_JOURNAL_DROPPED: "Suppressed N messages from UNIT".
const DROPPED: &[u8] = b"a596d6fe7bfa4994828e72309e95d61e";

/// Entries between two merges into the metrics.
const BATCH: u32 = 4096;

pub(super) struct Account<'m> {
    metrics: &'m Metrics,
    batch: HashMap<Vec<u8>, UnitCounts, BuildHasherDefault<UnitHasher>>,
    pending: u32,
    last_flush: std::time::Instant,
}

/// At the end of the journal the batch is handed over if it is this old: a live reader
/// reaches the end many times a second, and merging each time showed in its profile.
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

impl<'m> Account<'m> {
    pub(super) fn new(metrics: &'m Metrics) -> Account<'m> {
        Account {
            metrics,
            batch: HashMap::default(),
            pending: 0,
            last_flush: std::time::Instant::now(),
        }
    }

    /// Counts one entry read. One pass over its fields.
    pub(super) fn observe(&mut self, e: &Entry) {
        let (mut unit, mut id, mut dropped, mut object, mut message) =
            (None, None, None, None, None);
        let (mut transport, mut uid) = (None, None);
        for (n, v) in e.fields() {
            match n {
                b"_SYSTEMD_UNIT" => unit = Some(v),
                b"MESSAGE_ID" => id = Some(v),
                b"N_DROPPED" => dropped = Some(v),
                b"OBJECT_SYSTEMD_UNIT" => object = Some(v),
                b"MESSAGE" => message = Some(v),
                b"_TRANSPORT" => transport = Some(v),
                b"_UID" => uid = Some(v),
                _ => {}
            }
        }
        let unit = unit.unwrap_or(b"(none)");
        let c = match self.batch.get_mut(unit) {
            Some(c) => c,
            None => self.batch.entry(unit.to_vec()).or_default(),
        };
        c.entries = c.entries.saturating_add(1);
        c.bytes = c.bytes.saturating_add(e.data_len() as u64);
        // journald's own message, not a user's copy of it.
        if id == Some(DROPPED) && transport == Some(b"driver") && uid == Some(b"0") {
            let n = dropped
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.trim().parse::<u64>().ok())
                .unwrap_or(0);
            // The unit the messages came from: journald names the client as the object, and
            // in the text.
            let from = object.map(<[u8]>::to_vec).or_else(|| {
                let m = message?;
                let at = m.windows(6).position(|w| w == b" from ")?;
                Some(m[at + 6..].to_vec())
            });
            let from = from.unwrap_or_else(|| b"(unknown)".to_vec());
            let row = self.batch.entry(from).or_default();
            row.suppressed = row.suppressed.saturating_add(n);
        }
        self.pending += 1;
        if self.pending >= BATCH {
            self.flush();
        }
    }

    /// At the end of the journal: hands the batch over if it waited long enough, or if
    /// the journal stayed quiet since the last end (`quiet`): then nothing is coming that
    /// would make the merge worth deferring.
    pub(super) fn idle(&mut self, quiet: bool) {
        if !self.batch.is_empty() && (quiet || self.last_flush.elapsed() >= IDLE_FLUSH) {
            self.flush();
        }
    }

    /// Hands the batch to the metrics (also when dropped).
    pub(super) fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.pending = 0;
        self.last_flush = std::time::Instant::now();
        let mut t = self.metrics.units.lock().unwrap_or_else(|p| p.into_inner());
        t.merge(
            self.batch
                .drain()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)),
        );
    }
}

/// A hasher for unit names in the reader's own batch: SipHash's defence against chosen
/// keys buys nothing for a map that lives 4,096 entries and holds at most the units of one
/// host, and it was a visible part of the reader's time (#19).
#[derive(Default)]
struct UnitHasher(u64);

impl Hasher for UnitHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Drop for Account<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suppression(transport: &str, uid: &str, n: &str, unit: &str) -> Entry {
        let mut e = Entry::new();
        for (k, v) in [
            ("_TRANSPORT", transport),
            ("_UID", uid),
            ("MESSAGE_ID", "a596d6fe7bfa4994828e72309e95d61e"),
            ("N_DROPPED", n),
            ("OBJECT_SYSTEMD_UNIT", unit),
        ] {
            e.push_field(k.as_bytes(), v.as_bytes());
        }
        e
    }

    fn suppressed(m: &Metrics, unit: &str) -> u64 {
        let t = m.units.lock().unwrap();
        t.rows()
            .find(|(u, _)| *u == unit)
            .map_or(0, |(_, c)| c.suppressed)
    }

    #[test]
    fn only_journalds_own_suppressions_count_and_counts_saturate() {
        let m = Metrics::default();
        let mut a = Account::new(&m);
        let max = u64::MAX.to_string();
        // A user's copies: another transport, another uid.
        a.observe(&suppression("journal", "1000", &max, "sshd.service"));
        a.observe(&suppression("syslog", "0", &max, "sshd.service"));
        a.observe(&suppression("driver", "1000", &max, "sshd.service"));
        // journald's own, twice at the maximum: saturates instead of wrapping to 2^64-2.
        a.observe(&suppression("driver", "0", "5", "flood.service"));
        a.observe(&suppression("driver", "0", &max, "big.service"));
        a.observe(&suppression("driver", "0", &max, "big.service"));
        a.flush();
        assert_eq!(suppressed(&m, "sshd.service"), 0);
        assert_eq!(suppressed(&m, "flood.service"), 5);
        assert_eq!(suppressed(&m, "big.service"), u64::MAX);
        // And again across merges into the table.
        a.observe(&suppression("driver", "0", &max, "big.service"));
        a.flush();
        assert_eq!(suppressed(&m, "big.service"), u64::MAX);
    }
}
