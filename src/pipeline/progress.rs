//! Progress records, the Kafka side of the loss account: every `delivery.progress_interval_ms`
//! the shipping thread produces one small record stating, per journal sequence-number space,
//! the range of positions it handled since the previous one and how many of them it shipped
//! and how many the filters dropped. `journald-kafka audit` reads them beside the entries'
//! `__SEQNUM`s and tells lost from filtered without access to the host.
//!
//! In exactly-once mode the record goes into every transaction, just before its commit
//! (`exactly_once`), whatever the interval: a window then ends exactly at a committed place,
//! so after a crash the next session's windows start right after the last one a
//! `read_committed` reader sees, and `audit` sees a window exactly when it sees its entries.
//!
//! Owns the per-space window. Runs on the shipping thread only. It must never hold an entry
//! back or touch the watermark: in at-least-once mode a progress record that fails is
//! logged and the next one carries on from where the failed one ended; in exactly-once mode
//! it fails its transaction like any record of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::delivery::{self, Producer};
use crate::config::Config;
use crate::journal::cursor;

#[derive(Debug, Clone, Copy)]
struct Span {
    first: u64,
    last: u64,
    shipped: u64,
    filtered: u64,
}

pub(super) struct Progress {
    every: Duration,
    topic: String,
    last_emit: Instant,
    /// Positions handled since the last record, per sequence-number space.
    spaces: BTreeMap<String, Span>,
    /// The last position each space's previous record covered: windows tile, so a position
    /// libsystemd's matches skipped between two records is still inside one of them.
    covered: BTreeMap<String, u64>,
    host: String,
    machine_id: String,
}

impl Progress {
    pub(super) fn new(cfg: &Config) -> Option<Progress> {
        if cfg.delivery.progress_interval_ms == 0 {
            return None;
        }
        let topic = cfg
            .delivery
            .progress_topic
            .clone()
            .or_else(|| cfg.kafka.fixed_topic().map(str::to_string))
            .or_else(|| cfg.kafka.topic_fallback.clone())
            .unwrap_or_else(|| "journal".into());
        Some(Progress {
            every: Duration::from_millis(cfg.delivery.progress_interval_ms),
            topic,
            last_emit: Instant::now(),
            spaces: BTreeMap::new(),
            covered: BTreeMap::new(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            machine_id: crate::journal::machine_id().unwrap_or_default(),
        })
    }

    fn note(&mut self, c: &str, shipped: bool) {
        let Some((space, n)) = cursor::seqnum(c) else {
            return;
        };
        let span = match self.spaces.get_mut(space) {
            Some(s) => s,
            None => {
                let first = self.covered.get(space).map_or(n, |&c| (c + 1).min(n));
                self.spaces.entry(space.to_string()).or_insert(Span {
                    first,
                    last: n,
                    shipped: 0,
                    filtered: 0,
                })
            }
        };
        span.last = span.last.max(n);
        if shipped {
            span.shipped += 1;
        } else {
            span.filtered += 1;
        }
    }

    /// An entry handed to the producer.
    pub(super) fn shipped(&mut self, c: &str) {
        self.note(c, true);
    }

    /// A position passed without a record (the agent's own entries, exclusions, the end of
    /// a stretch libsystemd's matches left out).
    pub(super) fn filtered(&mut self, c: &str) {
        self.note(c, false);
    }

    pub(super) fn due(&self) -> bool {
        self.last_emit.elapsed() >= self.every && !self.spaces.is_empty()
    }

    /// Produces the record for the window and starts the next one. False when librdkafka
    /// could not take it now (the window stays, the next record covers it too).
    pub(super) fn emit(&mut self, producer: &Producer) -> bool {
        self.last_emit = Instant::now();
        if self.spaces.is_empty() {
            return true;
        }
        let spaces: Vec<serde_json::Value> = self
            .spaces
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "seqnum_id": id, "first": s.first, "last": s.last,
                    "shipped": s.shipped, "filtered": s.filtered,
                })
            })
            .collect();
        let record = serde_json::json!({
            "progress": 1,
            "host": self.host,
            "machine_id": self.machine_id,
            "at_usec": crate::metrics::unix_now_usec(),
            "spaces": spaces,
        })
        .to_string();
        if delivery::send_progress(
            producer,
            &self.topic,
            self.machine_id.as_bytes(),
            record.as_bytes(),
        ) {
            for (id, s) in std::mem::take(&mut self.spaces) {
                self.covered.insert(id, s.last);
            }
            true
        } else {
            tracing::warn!(topic = %self.topic, "cannot produce a progress record now; the next one covers its window too");
            false
        }
    }
}
