//! The journal counted rather than read: its size and oldest entry for the metrics
//! (`Gauges`), and how far it is ahead of a saved place for `status` (`Behind`).
//!
//! A source read per writer is counted from file sizes and headers, never by opening a
//! handle per file: a collector of thousands of hosts would need a descriptor per file.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;

use super::source::{open, source_files};
use super::stream::newest_in;
use super::{cursor, header};
use crate::checkpoint::place;
use crate::config::{JournalConfig, Source};

/// What the journal looks like as a whole, for the metrics the caller keeps.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Gauges {
    pub usage_bytes: Option<u64>,
    pub oldest_usec: Option<u64>,
}

/// The disk usage and oldest entry time of the whole source, filters ignored. A source
/// read per writer is measured from file sizes and headers: a handle over every file of a
/// collector would need a descriptor per file.
pub(crate) fn measure(cfg: &JournalConfig) -> Result<Gauges> {
    match &cfg.source {
        Source::Local | Source::Namespace(_) => Ok(open(cfg, false)?.gauges()),
        Source::Directory(_) | Source::Files(_) => {
            let files = source_files(cfg)?;
            Ok(Gauges {
                usage_bytes: Some(usage_of(&files)),
                oldest_usec: files
                    .iter()
                    .filter_map(|f| header::read(f).ok().flatten())
                    .filter(|h| h.n_entries > 0)
                    .map(|h| h.head_realtime)
                    .min(),
            })
        }
    }
}

/// The bytes on disk of `files`, as `sd_journal_get_usage` counts them (allocated blocks).
pub(super) fn usage_of(files: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// How far the journal is ahead of a saved place, filters ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    /// Entries written after the place: per writer, its newest sequence number minus the
    /// saved one; every entry of a writer the place does not know yet.
    pub entries: u64,
    /// Writers in the source, and those with entries after the place.
    pub writers: usize,
    pub writers_behind: usize,
    /// The oldest time not known to be shipped, over the writers that are behind: the saved
    /// entry's time for a known writer, the oldest entry's for a new one.
    pub oldest_usec: Option<u64>,
}

/// How far the journal is ahead of `saved` (see [`Behind`]). For a source read per writer
/// this reads file headers only: cheap enough for `status` on a collector of thousands of
/// hosts.
pub fn behind(cfg: &JournalConfig, saved: &str) -> Result<Behind> {
    let saved_at = |space: &str| {
        place::position_of(saved, space).and_then(|p| {
            let (_, seq) = cursor::seqnum(p)?;
            Some((seq, cursor::parse(p).ok().map(|c| c.realtime_usec)))
        })
    };
    let mut b = Behind::default();
    let note = |entries: u64, oldest: Option<u64>, b: &mut Behind| {
        b.writers += 1;
        if entries > 0 {
            b.entries += entries;
            b.writers_behind += 1;
            b.oldest_usec = match (b.oldest_usec, oldest) {
                (Some(a), Some(o)) => Some(a.min(o)),
                (a, o) => a.or(o),
            };
        }
    };
    match &cfg.source {
        Source::Local | Source::Namespace(_) => {
            let newest = newest_in(open(cfg, false)?)?;
            let at = place::newest(saved);
            let entries = match (
                newest.as_deref().and_then(cursor::seqnum),
                at.and_then(cursor::seqnum),
            ) {
                (Some((space, seq)), Some((s, saved_seq))) if s == space => {
                    seq.saturating_sub(saved_seq)
                }
                _ => 0,
            };
            let oldest = at
                .and_then(|c| cursor::parse(c).ok())
                .map(|c| c.realtime_usec);
            note(entries, oldest, &mut b);
        }
        Source::Directory(_) | Source::Files(_) => {
            let mut per: HashMap<String, (u64, u64, Option<u64>)> = HashMap::new();
            for f in source_files(cfg)? {
                let Ok(Some(h)) = header::read(&f) else {
                    continue;
                };
                let e = per.entry(h.space()).or_insert((0, 0, None));
                if h.n_entries > 0 {
                    e.0 = e.0.max(h.tail_seqnum);
                    e.1 += h.n_entries;
                    e.2 = Some(e.2.map_or(h.head_realtime, |o: u64| o.min(h.head_realtime)));
                }
            }
            for (space, (tail, n, head)) in per {
                match saved_at(&space) {
                    Some((seq, t)) => note(tail.saturating_sub(seq), t, &mut b),
                    None => note(n, head, &mut b),
                }
            }
        }
    }
    Ok(b)
}
