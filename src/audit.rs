//! `journald-kafka audit`: did we lose entries, answered from Kafka alone.
//!
//! Reads every record of the topics: journal entries by the position their `journal-cursor`
//! header names (the agent sets it; a Forward event cannot set headers, so its fields can
//! never pass for a journal entry), progress records (`pipeline::progress`) by the windows
//! they state. Per sequence-number space, the positions the windows cover are either
//! shipped (a record holds them), filtered (the agent says how many) or lost. Owns that
//! definition; it only reads, and never needs the hosts.
//!
//! Records are hostile input (a topic is writable by more than the agent): a record without
//! the header, from the Forward input, undecodable, or whose fields disagree with its header
//! is reported and counted in [`Skipped`], never as a journal entry, and never fatal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Result;
use rdkafka::ClientConfig;
use rdkafka::message::Message;

use crate::format::{Value, decode};

/// What the audit found for one sequence-number space (one journal writer).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Space {
    pub seqnum_id: String,
    /// Hosts named by the records (`_HOSTNAME`, or the progress records' host).
    pub hosts: BTreeSet<String>,
    pub boots: BTreeSet<String>,
    /// Records of this space, and those whose position was already seen.
    pub records: u64,
    pub duplicates: u64,
    /// Positions the progress windows cover (their union), and of those: shipped,
    /// filtered as the agent reported, and lost (neither).
    pub covered: u64,
    pub shipped: u64,
    pub filtered: u64,
    pub lost: u64,
    /// Positions between the first and last record that no progress window covers
    /// (shipped before progress records were on, or their records are missing).
    pub unaccounted: u64,
    /// Windows that overlap another (an agent re-read after a crash): their filtered counts
    /// may be counted twice, so `lost` is then a lower bound.
    pub overlapping_windows: u64,
}

#[derive(Default)]
struct Gather {
    seqs: HashMap<u64, u32>,
    windows: Vec<(u64, u64, u64)>,
    hosts: BTreeSet<String>,
    boots: BTreeSet<String>,
}

fn text(fields: &[(String, Value)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.first_text())
}

/// Records that are not counted as journal entries, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Skipped {
    /// Records without a `journal-cursor` header (another producer's), or whose header is
    /// not a cursor.
    pub not_journal: u64,
    /// Records of the Forward input (`journald-kafka-source: forward`).
    pub forward: u64,
    /// Records with a cursor header whose value cannot be decoded; the position is still
    /// counted (the header says the agent shipped it), the record is named on stderr.
    pub undecodable: u64,
    /// Records whose `__SEQNUM_ID`/`__SEQNUM` disagree with their cursor header.
    pub mismatched: u64,
    /// Progress windows that cannot be true (ending before they start): ignored.
    pub bad_windows: u64,
    /// The first few problems, each naming the record (topic/partition@offset) and why.
    pub examples: Vec<String>,
}

impl Skipped {
    const EXAMPLES: usize = 20;

    fn note(&mut self, m: &impl Message, why: impl std::fmt::Display) {
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(format!(
                "record {}/{}@{}: {why}",
                m.topic(),
                m.partition(),
                m.offset()
            ));
        }
    }

    /// One line per kind, for stderr; empty when nothing was skipped.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (n, what) in [
            (self.forward, "Forward-input records (not journal entries)"),
            (
                self.not_journal,
                "records without a journal cursor header (not written by the agent's journal input)",
            ),
            (
                self.undecodable,
                "journal records whose value cannot be decoded (their positions are counted)",
            ),
            (
                self.mismatched,
                "records whose __SEQNUM_ID/__SEQNUM disagree with their cursor header (not counted)",
            ),
            (
                self.bad_windows,
                "progress windows that end before they start (ignored)",
            ),
        ] {
            if n > 0 {
                out.push_str(&format!("skipped {n} {what}\n"));
            }
        }
        for e in &self.examples {
            out.push_str(&format!("  {e}\n"));
        }
        out
    }
}

/// Reads `topics` until no record came for `idle` and reports every space, by seqnum id,
/// and the records that were not counted.
pub(crate) fn audit(
    connection: ClientConfig,
    topics: &[String],
    idle: Duration,
) -> Result<(Vec<Space>, Skipped)> {
    let consumer = crate::readback::consumer_from_beginning(connection, topics)?;
    let mut spaces: BTreeMap<String, Gather> = BTreeMap::new();
    let mut skipped = Skipped::default();
    crate::readback::read_until_idle(&consumer, idle, |m| {
        let payload = m.payload().unwrap_or_default();
        if crate::readback::is_progress(m) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
                return;
            };
            let host = v["host"].as_str().unwrap_or_default().to_string();
            for s in v["spaces"].as_array().into_iter().flatten() {
                let (Some(id), Some(first), Some(lastn), Some(filtered)) = (
                    s["seqnum_id"].as_str(),
                    s["first"].as_u64(),
                    s["last"].as_u64(),
                    s["filtered"].as_u64(),
                ) else {
                    continue;
                };
                // A window is the agent's statement about positions: one that cannot be
                // true (ends before it starts) is ignored, and it cannot filter more
                // positions than it covers.
                if first > lastn {
                    skipped.bad_windows += 1;
                    skipped.note(m, "a progress window that ends before it starts");
                    continue;
                }
                let filtered = filtered.min((lastn - first).saturating_add(1));
                let g = spaces.entry(id.to_string()).or_default();
                g.windows.push((first, lastn, filtered));
                if !host.is_empty() {
                    g.hosts.insert(host.clone());
                }
            }
            return;
        }
        if crate::readback::is_forward(m) {
            skipped.forward += 1;
            return;
        }
        let Some(cursor) = crate::readback::header(m, crate::format::CURSOR_HEADER) else {
            skipped.not_journal += 1;
            return;
        };
        let Some(at) = std::str::from_utf8(cursor)
            .ok()
            .and_then(|c| crate::journal::cursor::parse(c).ok())
        else {
            skipped.not_journal += 1;
            skipped.note(m, "its journal-cursor header is not a journal cursor");
            return;
        };
        let fields = match decode(payload) {
            Ok(f) => Some(f),
            Err(e) => {
                skipped.undecodable += 1;
                skipped.note(m, format_args!("cannot decode: {e:#}"));
                None
            }
        };
        if let Some(fields) = &fields {
            let seq = fields.iter().find_map(|(k, v)| match (k.as_str(), v) {
                ("__SEQNUM", Value::Int(n)) => Some(*n),
                _ => None,
            });
            let id = text(fields, "__SEQNUM_ID");
            if seq.is_some_and(|n| n != at.seqnum)
                || id.as_ref().is_some_and(|i| *i != at.seqnum_id)
            {
                skipped.mismatched += 1;
                skipped.note(m, "__SEQNUM_ID/__SEQNUM disagree with the cursor header");
                return;
            }
        }
        let g = spaces.entry(at.seqnum_id).or_default();
        *g.seqs.entry(at.seqnum).or_default() += 1;
        g.boots.insert(at.boot_id);
        if let Some(h) = fields.as_ref().and_then(|f| text(f, "_HOSTNAME")) {
            g.hosts.insert(h);
        }
    })?;
    Ok((
        spaces.into_iter().map(|(id, g)| settle(id, g)).collect(),
        skipped,
    ))
}

fn settle(seqnum_id: String, mut g: Gather) -> Space {
    let mut s = Space {
        seqnum_id,
        hosts: std::mem::take(&mut g.hosts),
        boots: std::mem::take(&mut g.boots),
        ..Space::default()
    };
    s.records = g.seqs.values().map(|&n| u64::from(n)).sum();
    s.duplicates = g
        .seqs
        .values()
        .map(|&n| u64::from(n.saturating_sub(1)))
        .sum();
    // The union of the windows, in order; overlaps counted. Positions are any u64 a record
    // names, so sizes are computed with saturation and nothing walks a range position by
    // position (two forged cursors 0 and 2^64-1 must not make a loop of 2^64 steps).
    g.windows.sort_unstable();
    let mut union: Vec<(u64, u64)> = Vec::new();
    for &(first, last, filtered) in &g.windows {
        s.filtered = s.filtered.saturating_add(filtered);
        match union.last_mut() {
            Some((_, end)) if first <= end.saturating_add(1) => {
                if first <= *end {
                    s.overlapping_windows += 1;
                }
                *end = (*end).max(last);
            }
            _ => union.push((first, last)),
        }
    }
    let covered = |n: u64| {
        let i = union.partition_point(|&(a, _)| a <= n);
        i > 0 && n <= union[i - 1].1
    };
    let size = |a: u64, b: u64| (b - a).saturating_add(1);
    s.covered = union
        .iter()
        .fold(0u64, |acc, &(a, b)| acc.saturating_add(size(a, b)));
    s.shipped = g.seqs.keys().filter(|&&n| covered(n)).count() as u64;
    s.lost = s
        .covered
        .saturating_sub(s.shipped.saturating_add(s.filtered));
    if let (Some(&lo), Some(&hi)) = (g.seqs.keys().min(), g.seqs.keys().max()) {
        // Positions from the first record to the last that no window covers, minus those a
        // record holds.
        let in_windows = union.iter().fold(0u64, |acc, &(a, b)| {
            let (a, b) = (a.max(lo), b.min(hi));
            if a <= b {
                acc.saturating_add(size(a, b))
            } else {
                acc
            }
        });
        let inside = size(lo, hi).saturating_sub(in_windows);
        let shipped_outside = g.seqs.keys().filter(|&&n| !covered(n)).count() as u64;
        s.unaccounted = inside.saturating_sub(shipped_outside);
    }
    s
}

/// Text for people: one block per space.
pub(crate) fn render(spaces: &[Space]) -> String {
    let mut out = String::new();
    for s in spaces {
        out.push_str(&format!(
            "writer {} (host {}; {} boot(s)): {} records, {} duplicates; of {} positions the agent accounted for: {} shipped, {} filtered, {} LOST{}{}\n",
            s.seqnum_id,
            if s.hosts.is_empty() { "?".to_string() } else { s.hosts.iter().map(|h| crate::readback::printable(h).into_owned()).collect::<Vec<_>>().join(",") },
            s.boots.len(),
            s.records,
            s.duplicates,
            s.covered,
            s.shipped,
            s.filtered,
            s.lost,
            if s.unaccounted > 0 { format!("; {} positions between its records with no progress record", s.unaccounted) } else { String::new() },
            if s.overlapping_windows > 0 { format!("; {} overlapping windows (agent restarts): lost is a lower bound", s.overlapping_windows) } else { String::new() },
        ));
    }
    let lost: u64 = spaces.iter().map(|s| s.lost).sum();
    out.push_str(&format!("total lost: {lost}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_split_positions_into_shipped_filtered_and_lost() {
        let mut g = Gather::default();
        // Positions 1..=10 shipped except 4 (filtered) and 7 (lost); 9 twice.
        for n in [1, 2, 3, 5, 6, 8, 9, 9, 10] {
            *g.seqs.entry(n).or_default() += 1;
        }
        g.windows = vec![(1, 5, 1), (6, 10, 0)];
        let s = settle("x".into(), g);
        assert_eq!((s.records, s.duplicates), (9, 1));
        assert_eq!((s.covered, s.shipped, s.filtered, s.lost), (10, 8, 1, 1));
        assert_eq!((s.unaccounted, s.overlapping_windows), (0, 0));
    }

    /// The reviewer's case: records at positions 0 and 2^64-1 of one space (forged cursor
    /// headers) made the count of unaccounted positions walk 2^64 numbers; and windows at
    /// the ends of the range overflowed.
    #[test]
    fn extreme_positions_and_windows_are_counted_without_walking_or_overflowing() {
        let mut g = Gather::default();
        for n in [0, 5, u64::MAX] {
            *g.seqs.entry(n).or_default() += 1;
        }
        g.windows = vec![(0, 10, 2), (u64::MAX - 1, u64::MAX, 0), (0, u64::MAX, 0)];
        let s = settle("x".into(), g);
        assert_eq!(s.covered, u64::MAX);
        assert_eq!(s.shipped, 3);
        assert_eq!(s.unaccounted, 0);
        let mut g = Gather::default();
        for n in [0, u64::MAX] {
            *g.seqs.entry(n).or_default() += 1;
        }
        let s = settle("x".into(), g);
        // 2^64 - 2 positions in truth; counts saturate at 2^64 - 1 on the way.
        assert!(s.unaccounted >= u64::MAX - 2, "{}", s.unaccounted);
    }

    #[test]
    fn positions_without_windows_are_unaccounted_not_lost() {
        let mut g = Gather::default();
        for n in [1, 2, 5] {
            *g.seqs.entry(n).or_default() += 1;
        }
        let s = settle("x".into(), g);
        assert_eq!((s.lost, s.unaccounted), (0, 2));
    }
}
