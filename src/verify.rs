//! The checker (`journald-kafka verify`): compares the journal with what reached Kafka.
//!
//! Owns the definition of "lost", "duplicated" and "out of order" that the fault tests and
//! operators rely on. It only reads — the journal through the same source and filters as the
//! agent, the topics from the beginning — and must never produce or move a cursor.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use rdkafka::message::Message;

use crate::config::{Config, Start};
use crate::format::CURSOR_HEADER;
use crate::journal::{Entry, Reader};

/// What the checker found.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Report {
    /// Journal entries that pass the filters.
    pub entries: u64,
    /// Records read from Kafka.
    pub records: u64,
    /// Journal entries with no record.
    pub lost: u64,
    /// Records whose cursor was already seen.
    pub duplicates: u64,
    /// First occurrences that arrived after a later journal entry with the same key. Records
    /// without a key carry no order promise (the partitioner spreads them) and are not counted.
    pub out_of_order: u64,
    /// Records whose cursor is not in the journal (vacuumed since, or another source).
    pub foreign: u64,
    /// Records without a `journal-cursor` header.
    pub unmarked: u64,
    /// The first lost cursors, to start an investigation from.
    pub first_lost: Vec<String>,
    /// Entries found only in the dead-letter topic (refused by their own topic): not lost,
    /// and counted apart so that an operator sees them.
    pub dead_lettered: u64,
    /// Records of the Forward input (`journald-kafka-source: forward`): not journal
    /// entries, whatever fields their sender wrote; not counted as records.
    pub forward: u64,
}

impl Report {
    pub(crate) fn ok(&self) -> bool {
        self.lost == 0 && self.out_of_order == 0 && self.unmarked == 0
    }

    /// One line of JSON, the fields in declaration order.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "journal entries: {}\nrecords: {}\nlost: {}\nduplicates: {}\nout of order: {}\nnot in the journal: {}\nwithout cursor header: {}",
            self.entries,
            self.records,
            self.lost,
            self.duplicates,
            self.out_of_order,
            self.foreign,
            self.unmarked
        )?;
        if self.dead_lettered > 0 {
            write!(f, "\nin the dead-letter topic: {}", self.dead_lettered)?;
        }
        if self.forward > 0 {
            write!(
                f,
                "\nForward-input records (not journal entries, not counted): {}",
                self.forward
            )?;
        }
        for c in &self.first_lost {
            write!(f, "\n  lost: {c}")?;
        }
        Ok(())
    }
}

/// Reads the whole journal (as the agent would from `head`, filters applied) and every
/// record of `topics`, and compares them.
pub(crate) fn verify(cfg: &Config, topics: &[String], idle: Duration) -> Result<Report> {
    let mut jcfg = cfg.journal.clone();
    jcfg.start = Start::Head;
    let mut reader = Reader::open(&jcfg)?;
    reader.seek(&jcfg, None)?;
    let mut entry = Entry::new();
    let mut index: HashMap<String, u64> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let own = crate::journal::OwnEntries::new(&jcfg.source, None);
    // The part of the filter the agent evaluates itself: what it drops is not expected.
    let selection = crate::journal::Selection::new(&jcfg.filter);
    while reader.next(&mut entry)? {
        if jcfg.exclude_own_entries && own.matches(&entry) {
            continue;
        }
        if selection.as_ref().is_some_and(|s| !s.keep(&entry)) {
            continue;
        }
        index.insert(entry.cursor.clone(), order.len() as u64);
        order.push(std::mem::take(&mut entry.cursor));
    }

    // The dead-letter topic holds entries their own topic refused; it exists only once
    // the agent needed it.
    let dead_letter = &cfg.delivery.dead_letter_topic;
    let with_dlq: Vec<String> = topics
        .iter()
        .cloned()
        .chain([dead_letter.clone()])
        .collect();
    let consumer = crate::readback::consumer_from_beginning(
        crate::kafka::connection_config(&cfg.kafka),
        &with_dlq,
    )
    .or_else(|_| {
        crate::readback::consumer_from_beginning(
            crate::kafka::connection_config(&cfg.kafka),
            topics,
        )
    })?;
    let mut report = Report {
        entries: order.len() as u64,
        ..Report::default()
    };
    let mut seen: HashSet<u64> = HashSet::new();
    let mut max_per_key: HashMap<(String, Vec<u8>), u64> = HashMap::new();
    crate::readback::read_until_idle(&consumer, idle, |m| {
        if crate::readback::is_progress(m) {
            return;
        }
        if crate::readback::is_forward(m) {
            report.forward += 1;
            return;
        }
        report.records += 1;
        let cursor = crate::readback::header(m, CURSOR_HEADER)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let Some(cursor) = cursor else {
            report.unmarked += 1;
            return;
        };
        let Some(&i) = index.get(&cursor) else {
            report.foreign += 1;
            return;
        };
        if !seen.insert(i) {
            report.duplicates += 1;
            return;
        }
        if m.topic() == dead_letter && !topics.contains(dead_letter) {
            report.dead_lettered += 1;
            return;
        }
        if let Some(key) = m.key() {
            let max = max_per_key
                .entry((m.topic().to_string(), key.to_vec()))
                .or_insert(0);
            if i < *max {
                report.out_of_order += 1;
            } else {
                *max = i;
            }
        }
    })?;
    for (i, c) in order.iter().enumerate() {
        if !seen.contains(&(i as u64)) {
            report.lost += 1;
            if report.first_lost.len() < 5 {
                report.first_lost.push(c.clone());
            }
        }
    }
    Ok(report)
}
