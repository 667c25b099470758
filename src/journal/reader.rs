//! The `Reader`: an open journal, positioned at the saved place and read as one stream, or
//! as one stream per writer merged by time (a heap of the streams standing on an entry).
//!
//! Reports where each stream landed relative to its cursor (`Placed`, `Position`) and which
//! writers' files went away, and leaves what to do about it to the caller: it never decides
//! what is safe to skip. How the writers of a source share the open files is `per_writer`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use systemd::journal::JournalWaitResult;

use super::Entry;
use super::header;
use super::measure::{Gauges, measure, usage_of};
use super::per_writer::{PerWriter, is_out_of_descriptors};
use super::source::source_files;
use super::stream::{Stream, newest_in};
use crate::checkpoint::place;
use crate::config::{JournalConfig, Source, Start};

/// Things the reader had to step over, counted for metrics and logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    /// Data objects libsystemd could not return (corrupt file); the rest of the entry is kept.
    pub corrupt_fields: u64,
    /// Entries `sd_journal_next` failed on (corrupt or truncated files).
    pub unreadable_entries: u64,
}

impl ReadStats {
    pub(super) fn add(&mut self, o: ReadStats) {
        self.corrupt_fields += o.corrupt_fields;
        self.unreadable_entries += o.unreadable_entries;
    }
}

/// Where reading begins, for the log line at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A writer the saved place does not know (it appeared since): read from its oldest
    /// entry.
    NewWriter,
    /// Every file of the saved cursor's writer is gone (vacuumed or removed, or the cursor
    /// is another journal's): whatever it wrote after the cursor was never shipped.
    WriterGone,
    /// The saved cursor's entry was found; reading continues right after it.
    AfterCursor,
    /// The saved cursor's entry is still in the journal but does not pass the filters;
    /// reading continues at the first matching entry after it.
    AfterFilteredCursor,
    /// The saved cursor's entry is gone. `gap` is the number of entries lost between it and
    /// the first entry now available, when both share a sequence-number space.
    CursorLost {
        gap: Option<u64>,
        first: Option<String>,
    },
    /// No cursor: the configured start position.
    Start(Start),
}

/// How many entries may be read from busy writers before the quiet ones are asked again
/// for new entries: a host that never stops must not starve the others.
const POLL_EVERY: u32 = 256;

/// An open journal, positioned and ready to read: one stream, or one per writer merged by
/// time.
pub struct Reader {
    // `pub(super)`: the sharing of descriptors among writers (`per_writer`) keeps these too.
    pub(super) cfg: JournalConfig,
    pub(super) streams: Vec<Stream>,
    /// Open streams standing on an entry not yet returned, by that entry's time.
    pub(super) heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// For sources read per writer: which writers hold files open and which wait.
    pub(super) per_writer: Option<PerWriter>,
    reads: u32,
    /// Read statistics of streams that were closed (their writer's files are gone).
    pub(super) retired: ReadStats,
    /// Writers whose files are all gone since the caller last asked.
    pub(super) gone: Vec<String>,
}

/// Where one stream begins, for the log lines at startup.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The writer (`s=` part of its cursors), for sources read per writer.
    pub writer: Option<String>,
    /// The saved cursor it resumes after, if any.
    pub cursor: Option<String>,
    pub position: Position,
}

impl Reader {
    pub fn open(cfg: &JournalConfig) -> Result<Reader> {
        let (streams, per_writer) = match &cfg.source {
            Source::Local | Source::Namespace(_) => (vec![Stream::whole(cfg)?], None),
            Source::Directory(_) | Source::Files(_) => {
                let (streams, pw) = PerWriter::open(cfg)?;
                (streams, Some(pw))
            }
        };
        let mut r = Reader {
            cfg: cfg.clone(),
            streams,
            heap: BinaryHeap::new(),
            per_writer,
            reads: 0,
            retired: ReadStats::default(),
            gone: Vec::new(),
        };
        r.reindex();
        Ok(r)
    }

    /// Positions every stream: after its writer's cursor in `place` when there is one,
    /// else at the configured start (no place at all) or at the oldest entry (a writer the
    /// place does not know). Never skips anything but the cursors' own entries. Streams
    /// are opened one at a time and parked again beyond the open-file budget.
    pub fn seek(&mut self, cfg: &JournalConfig, place: Option<&str>) -> Result<Vec<Placed>> {
        let mut placed = Vec::with_capacity(self.streams.len());
        for s in self.streams.iter_mut() {
            let cursor = match (&s.space, place) {
                (_, None) => None,
                // One stream over the whole source: the position that moved last.
                (None, Some(p)) => place::newest(p),
                (Some(space), Some(p)) => place::position_of(p, space),
            };
            let was_open = s.is_open();
            let sought = match (cursor, place) {
                (None, Some(_)) => s.seek(cfg, None, Start::Head).map(|_| Position::NewWriter),
                (c, _) => s.seek(cfg, c, cfg.start),
            };
            let position = match sought {
                Ok(p) => p,
                // One writer whose files cannot be opened must not keep the others from
                // starting: it waits, parked at its saved place, for its files to change.
                Err(e) if self.per_writer.is_some() && !is_out_of_descriptors(&e) => {
                    tracing::error!(
                        writer = s.space.as_deref().unwrap_or(""),
                        error = format!("{e:#}"),
                        "cannot read this writer's journal files; reading the others and trying it again when its files change"
                    );
                    s.park_at(cursor);
                    placed.push(Placed {
                        writer: s.space.clone(),
                        cursor: cursor.map(str::to_string),
                        position: if cursor.is_some() {
                            Position::AfterCursor
                        } else {
                            Position::NewWriter
                        },
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(pw) = &mut self.per_writer {
                let n = s.files.len();
                if !was_open {
                    pw.open_files += n;
                }
                // Beyond the budget: closed again, its place kept, and read in its turn.
                s.queued = pw.open_files > pw.budget;
                if s.queued {
                    pw.park(s);
                }
                s.active_at = Instant::now();
            }
            placed.push(Placed {
                writer: s.space.clone(),
                cursor: cursor.map(str::to_string),
                position,
            });
        }
        // Saved writers without a stream: their files are all gone.
        if let Some(pw) = &self.per_writer {
            for p in place.into_iter().flat_map(place::positions) {
                let stream = place::stream_of(p);
                if !pw.index.contains_key(stream) {
                    placed.push(Placed {
                        writer: Some(stream.to_string()),
                        cursor: Some(p.to_string()),
                        position: Position::WriterGone,
                    });
                }
            }
        }
        self.reindex();
        self.heap.clear();
        Ok(placed)
    }

    /// The part of `place` this reader continues from: the positions of writers still in
    /// the journal (the others' files are gone).
    pub fn kept(placed: &[Placed]) -> Option<String> {
        let kept: Vec<&str> = placed
            .iter()
            .filter(|p| p.position != Position::WriterGone)
            .filter_map(|p| p.cursor.as_deref())
            .collect();
        (!kept.is_empty()).then(|| place::join(kept.into_iter()))
    }

    /// Reads the next entry into `entry`. Returns false at the end of the journal.
    pub fn next(&mut self, entry: &mut Entry) -> Result<bool> {
        if self.per_writer.is_none() {
            let s = &mut self.streams[0];
            if !s.advance()? {
                return Ok(false);
            }
            s.take(entry)?;
            return Ok(true);
        }
        self.reads = self.reads.wrapping_add(1);
        if self.heap.is_empty() || self.reads % POLL_EVERY == 0 {
            self.poll()?;
        }
        let Some(Reverse((_, i))) = self.heap.pop() else {
            return Ok(false);
        };
        let s = &mut self.streams[i];
        s.take(entry)?;
        if s.advance()? {
            self.heap.push(Reverse((s.head_usec(), i)));
        }
        Ok(true)
    }

    /// Waits up to `timeout` for the journal to change. Rotation, new files and deleted files
    /// of one stream are handled inside libsystemd; for a source read per writer the watch
    /// says which files changed and the next read acts on it.
    pub fn wait(&mut self, timeout: Duration) -> Result<JournalWaitResult> {
        match &mut self.per_writer {
            None => self.streams[0].handle().wait(timeout),
            Some(pw) => {
                let changed = pw
                    .watch
                    .wait(timeout)
                    .context("cannot wait for the journal directory's changes")?;
                Ok(if changed {
                    JournalWaitResult::Append
                } else {
                    JournalWaitResult::Nop
                })
            }
        }
    }

    /// The journal's disk usage and oldest entry time (cheap, but not for every entry).
    pub(crate) fn gauges(&mut self) -> Gauges {
        if self.per_writer.is_some() {
            return measure(&self.cfg).unwrap_or_default();
        }
        self.streams[0].handle().gauges()
    }

    /// The total bytes of journal files this reader sees.
    pub fn usage(&mut self) -> Result<u64> {
        if self.per_writer.is_some() {
            return Ok(usage_of(&source_files(&self.cfg)?));
        }
        self.streams[0].handle().usage()
    }

    /// The writers whose files all went away (vacuumed, removed) since the last call: what
    /// to do with their saved positions is the caller's policy.
    pub fn take_gone(&mut self) -> Vec<String> {
        std::mem::take(&mut self.gone)
    }

    /// What the reader had to step over, over all streams.
    pub fn stats(&self) -> ReadStats {
        let mut t = self.retired;
        for s in &self.streams {
            t.add(s.stats);
        }
        t
    }

    /// How many writers the reader knows and how many hold files open, with those files.
    pub(crate) fn open_counts(&self) -> (usize, usize, usize) {
        let open = self.streams.iter().filter(|s| s.is_open()).count();
        let files = self.per_writer.as_ref().map_or(0, |pw| pw.open_files);
        (self.streams.len(), open, files)
    }

    /// The newest entry of every stream, filters ignored: positions the watermark may pass
    /// when the filters removed everything after the last shipped entry. A writer whose
    /// files' headers show no new entry since the last call answers from memory, so a
    /// directory of quiet hosts costs a header read each, not a journal handle each.
    pub fn newest_cursors(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for s in &mut self.streams {
            // Only a writer known to be read to its end may let the watermark pass its
            // newest entry: not one standing on an entry, waiting for its turn, or parked
            // with entries the watch has not reported yet.
            if s.space.is_some() && (s.queued || s.is_ready() || (!s.is_open() && s.tail_moved())) {
                continue;
            }
            let tail = s.space.as_ref().and_then(|_| header::tail_of(&s.files));
            if let (Some(t), Some((seen, c))) = (tail, &s.newest) {
                if t == *seen {
                    out.extend(c.clone());
                    continue;
                }
            }
            let c = newest_in(s.unfiltered(&self.cfg)?)?;
            if let Some(t) = tail {
                s.newest = Some((t, c.clone()));
            }
            out.extend(c);
        }
        Ok(out)
    }
}
