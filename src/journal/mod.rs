//! The journal stage: opening the journal, applying matches, positioning at the saved
//! place and reading entries as raw bytes.
//!
//! A directory or file set may hold several writers (a central `systemd-journal-remote`
//! directory holds one per host), each with its own sequence-number space. libsystemd
//! merges a directory's files by time, so one read position passes over a writer whose
//! entries arrive older than what was already read (a late upload, a host's backlog).
//! Such sources are therefore read as one stream per writer, each in its own order, merged
//! here by time; the saved place holds one cursor per writer (`checkpoint::place`). The
//! local journal and namespaces have a single writer (journald) and are one stream.
//!
//! Owns the sd-journal handle, which is neither thread-safe nor non-blocking: it lives on
//! one OS thread (the reader) and never crosses to another. This module must never decide
//! what is safe to skip: it reports where it landed relative to the cursor and leaves the
//! policy to the caller, and it never drops a field (the data threshold is lifted).

pub mod cursor;
mod entry;
mod matches;
mod own;
pub(crate) mod retention;
mod select;
mod stream;
mod writers;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use systemd::journal::{self, Journal, JournalWaitResult};

pub use entry::Entry;
pub use matches::{apply as apply_matches, shorthand_terms};
pub(crate) use own::OwnEntries;
pub(crate) use select::{Selection, effect as filter_effect};

use self::stream::{Stream, before_in, locate_in, newest_in};
use self::writers::Writers;
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

/// What the journal looks like as a whole, for the metrics the caller keeps.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Gauges {
    pub usage_bytes: Option<u64>,
    pub oldest_usec: Option<u64>,
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

/// Opens the journal described by `cfg`, lifts the data threshold and installs the filters
/// unless `filtered` is false.
pub fn open(cfg: &JournalConfig, filtered: bool) -> Result<Journal> {
    let mut j = match &cfg.source {
        Source::Local => journal::OpenOptions::default()
            .local_only(true)
            .open()
            .context("cannot open the local journal")?,
        Source::Namespace(ns) => journal::OpenOptions::default()
            .open_namespace(ns.as_str())
            .with_context(|| format!("cannot open journal namespace {ns:?}"))?,
        Source::Directory(d) => {
            if !d.is_dir() {
                bail!(
                    "journal directory {} does not exist or is not a directory",
                    d.display()
                );
            }
            journal::OpenDirectoryOptions::default()
                .open_directory(
                    d.to_str()
                        .ok_or_else(|| anyhow!("journal directory {} is not UTF-8", d.display()))?,
                )
                .with_context(|| format!("cannot open journal directory {}", d.display()))?
        }
        Source::Files(files) => {
            let mut names = Vec::with_capacity(files.len());
            for f in files {
                std::fs::metadata(f)
                    .with_context(|| format!("cannot open journal file {}", f.display()))?;
                names.push(
                    f.to_str()
                        .ok_or_else(|| anyhow!("journal file {} is not UTF-8", f.display()))?,
                );
            }
            journal::OpenFilesOptions::default()
                .open_files(names)
                .context("cannot open the journal files")?
        }
    };
    // 0 lifts the 64 KiB default: fields are never cut short.
    j.set_data_threshold(0)
        .context("cannot lift the journal data threshold")?;
    // Asking for the fd makes libsystemd watch the files with inotify: deleted or rotated
    // files are then reported as INVALIDATE instead of failing reads with EBADMSG.
    j.fd().context("cannot watch the journal for changes")?;
    if filtered {
        matches::apply(&mut j, &cfg.filter)?;
    }
    Ok(j)
}

/// How often the files of a directory are listed again even without an inotify event.
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// How often a directory holding a file without entries yet is listed again.
const EMPTY_RESCAN: Duration = Duration::from_millis(250);

/// How many entries may be read from busy writers before the quiet ones are asked again
/// for new entries: a host that never stops must not starve the others.
const POLL_EVERY: u32 = 256;

/// An open journal, positioned and ready to read: one stream, or one per writer merged by
/// time.
pub struct Reader {
    cfg: JournalConfig,
    streams: Vec<Stream>,
    /// Streams standing on an entry not yet returned, by that entry's time.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// For sources read per writer: the files known so far and the handle over them all
    /// that is only used to wait for changes.
    writers: Option<(Writers, Journal)>,
    last_scan: Instant,
    rescan: bool,
    reads: u32,
    /// Read statistics of streams that were closed (their writer's files are gone).
    retired: ReadStats,
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
        let (streams, writers) = match &cfg.source {
            Source::Local | Source::Namespace(_) => (vec![Stream::whole(cfg)?], None),
            Source::Directory(_) | Source::Files(_) => {
                // The handle over everything watches the directory (inotify) for the rest.
                let watcher = open(cfg, false)?;
                let mut writers = Writers::default();
                let groups = writers.group(source_files(cfg)?);
                let streams = groups
                    .into_iter()
                    .map(|(space, files)| Stream::writer(cfg, space, files))
                    .collect::<Result<Vec<_>>>()?;
                (streams, Some((writers, watcher)))
            }
        };
        Ok(Reader {
            cfg: cfg.clone(),
            streams,
            heap: BinaryHeap::new(),
            writers,
            last_scan: Instant::now(),
            rescan: false,
            reads: 0,
            retired: ReadStats::default(),
        })
    }

    /// Positions every stream: after its writer's cursor in `place` when there is one,
    /// else at the configured start (no place at all) or at the oldest entry (a writer the
    /// place does not know). Never skips anything but the cursors' own entries.
    pub fn seek(&mut self, cfg: &JournalConfig, place: Option<&str>) -> Result<Vec<Placed>> {
        let mut placed = Vec::with_capacity(self.streams.len());
        for s in &mut self.streams {
            let cursor = match (&s.space, place) {
                (_, None) => None,
                // One stream over the whole source: the position that moved last.
                (None, Some(p)) => place::newest(p),
                (Some(space), Some(p)) => place::position_of(p, space),
            };
            let position = match (cursor, place) {
                (None, Some(_)) => {
                    s.seek(cfg, None, Start::Head)?;
                    Position::NewWriter
                }
                (c, _) => s.seek(cfg, c, cfg.start)?,
            };
            placed.push(Placed {
                writer: s.space.clone(),
                cursor: cursor.map(str::to_string),
                position,
            });
        }
        // Saved writers without a stream: their files are all gone.
        if self.writers.is_some() {
            for p in place.into_iter().flat_map(place::positions) {
                let stream = place::stream_of(p);
                if !self
                    .streams
                    .iter()
                    .any(|s| s.space.as_deref() == Some(stream))
                {
                    placed.push(Placed {
                        writer: Some(stream.to_string()),
                        cursor: Some(p.to_string()),
                        position: Position::WriterGone,
                    });
                }
            }
        }
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
        if self.writers.is_none() {
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

    /// Asks the quiet streams for new entries, and lists the files again when they changed.
    fn poll(&mut self) -> Result<()> {
        let since = self.last_scan.elapsed();
        // A file without entries yet (just created) has no known writer: look again soon.
        let unsettled = self
            .writers
            .as_ref()
            .is_some_and(|(w, _)| w.has_empty_files());
        if self.rescan || since >= RESCAN_INTERVAL || (unsettled && since >= EMPTY_RESCAN) {
            self.scan()?;
        }
        for (i, s) in self.streams.iter_mut().enumerate() {
            if !s.is_ready() && s.advance()? {
                self.heap.push(Reverse((s.head_usec(), i)));
            }
        }
        Ok(())
    }

    /// Regroups the files by writer: new writers get a stream from their oldest entry,
    /// rotated or vacuumed files reopen their writer's stream where it stood, writers whose
    /// files are all gone are closed.
    fn scan(&mut self) -> Result<()> {
        self.rescan = false;
        self.last_scan = Instant::now();
        let files = source_files(&self.cfg)?;
        let Some((writers, _)) = &mut self.writers else {
            return Ok(());
        };
        let mut groups = writers.group(files);
        let mut changed = false;
        let mut kept = Vec::with_capacity(self.streams.len());
        for mut s in std::mem::take(&mut self.streams) {
            let space = s.space.clone().unwrap_or_default();
            match groups.remove(&space) {
                Some(files) if files == s.files => kept.push(s),
                Some(files) => {
                    s.reopen(&self.cfg, files)?;
                    kept.push(s);
                    changed = true;
                }
                None => {
                    tracing::info!(writer = %space, "the journal files of this writer are gone; closing its stream");
                    self.retired.add(s.stats);
                    changed = true;
                }
            }
        }
        for (space, files) in groups {
            tracing::info!(writer = %space, files = files.len(), "a new writer in the journal directory: reading it from its oldest entry");
            let mut s = Stream::writer(&self.cfg, space, files)?;
            s.seek(&self.cfg, None, Start::Head)?;
            kept.push(s);
            changed = true;
        }
        self.streams = kept;
        if changed {
            self.heap.clear();
            for (i, s) in self.streams.iter_mut().enumerate() {
                if s.is_ready() {
                    self.heap.push(Reverse((s.head_usec(), i)));
                }
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for the journal to change. Rotation, new files and deleted files
    /// of one stream are handled inside libsystemd; files of a directory that come and go
    /// make the next read list the directory again.
    pub fn wait(&mut self, timeout: Duration) -> Result<JournalWaitResult> {
        let r = match &mut self.writers {
            None => self.streams[0].handle().wait(Some(timeout))?,
            Some((_, watcher)) => watcher.wait(Some(timeout))?,
        };
        if matches!(r, JournalWaitResult::Invalidate) {
            self.rescan = true;
        }
        Ok(r)
    }

    fn whole(&mut self) -> &mut Journal {
        match &mut self.writers {
            None => self.streams[0].handle(),
            Some((_, watcher)) => watcher,
        }
    }

    /// The journal's disk usage and oldest entry time (cheap, but not for every entry).
    pub(crate) fn gauges(&mut self) -> Gauges {
        let j = self.whole();
        Gauges {
            usage_bytes: j.usage().ok(),
            oldest_usec: j.cutoff_realtime_usec().ok().flatten().map(|(o, _)| o),
        }
    }

    /// The total bytes of journal files this handle sees.
    pub fn usage(&mut self) -> Result<u64> {
        Ok(self.whole().usage()?)
    }

    /// What the reader had to step over, over all streams.
    pub fn stats(&self) -> ReadStats {
        let mut t = self.retired;
        for s in &self.streams {
            t.add(s.stats);
        }
        t
    }

    /// The newest entry of every stream, filters ignored: positions the watermark may pass
    /// when the filters removed everything after the last shipped entry.
    pub fn newest_cursors(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for s in &self.streams {
            if let Some(c) = newest_in(s.unfiltered(&self.cfg)?)? {
                out.push(c);
            }
        }
        Ok(out)
    }
}

impl ReadStats {
    fn add(&mut self, o: ReadStats) {
        self.corrupt_fields += o.corrupt_fields;
        self.unreadable_entries += o.unreadable_entries;
    }
}

/// The journal files of a source read per writer.
fn source_files(cfg: &JournalConfig) -> Result<Vec<PathBuf>> {
    match &cfg.source {
        Source::Directory(d) => writers::list(d)
            .with_context(|| format!("cannot list journal directory {}", d.display())),
        Source::Files(f) => Ok(f.clone()),
        Source::Local | Source::Namespace(_) => Ok(Vec::new()),
    }
}

/// How many journal files a directory or files source names now (`None` for the local
/// journal and namespaces), for `check` to set against the open-file limit: the directory
/// source holds about two descriptors per file while it runs (issue 31).
pub fn file_count(cfg: &JournalConfig) -> Option<usize> {
    match &cfg.source {
        Source::Directory(_) | Source::Files(_) => source_files(cfg).ok().map(|f| f.len()),
        Source::Local | Source::Namespace(_) => None,
    }
}

/// Unfiltered handles, one per writer (one over everything for a single-writer source),
/// each with its writer's `s=` part.
fn unfiltered_writers(cfg: &JournalConfig) -> Result<Vec<(Option<String>, Journal)>> {
    match &cfg.source {
        Source::Local | Source::Namespace(_) => Ok(vec![(None, open(cfg, false)?)]),
        Source::Directory(_) | Source::Files(_) => Writers::default()
            .group(source_files(cfg)?)
            .into_iter()
            .map(|(space, files)| Ok((Some(space), stream::open_files(&files, None)?)))
            .collect(),
    }
}

/// Whether a cursor's entry is still in the (unfiltered) journal.
pub enum Located {
    Exists,
    Missing {
        gap: Option<u64>,
        first: Option<String>,
    },
}

/// Looks the cursor up without filters (among its writer's files, for a source read per
/// writer): only then does "not found" mean "gone".
pub fn locate(cfg: &JournalConfig, c: &str) -> Result<Located> {
    let stream = place::stream_of(c);
    for (space, j) in unfiltered_writers(cfg)? {
        if space.as_deref().is_none_or(|s| s == stream) {
            return locate_in(j, c);
        }
    }
    // No file of the cursor's writer is left.
    Ok(Located::Missing {
        gap: None,
        first: None,
    })
}

/// The configured start as a place to resume after, so that it can be saved before
/// anything is shipped: a restart must not seek to "the tail" again (it has moved) or it
/// would pass over what was written in between. `None` where the start needs no cursor:
/// `head`, or a journal with nothing before the start. Writers without an entry before the
/// start are left out: everything they hold is to be shipped.
pub(crate) fn start_cursor(cfg: &JournalConfig) -> Result<Option<String>> {
    if cfg.start == Start::Head {
        return Ok(None);
    }
    let mut positions = Vec::new();
    for (_, j) in unfiltered_writers(cfg)? {
        let p = match cfg.start {
            Start::Head => None,
            Start::Tail => newest_in(j)?,
            Start::Since(usec) => before_in(j, usec)?,
        };
        positions.extend(p);
    }
    Ok((!positions.is_empty()).then(|| place::join(positions.iter().map(String::as_str))))
}

/// How many entries the journal holds after the saved `place`, filters ignored: per
/// writer, its newest sequence number minus the saved one. Writers the place does not
/// know are not counted (their first entries' numbers are unknown without reading them).
pub fn entries_behind(cfg: &JournalConfig, saved: &str) -> Result<u64> {
    let newest = Reader::open(cfg)?.newest_cursors()?;
    let mut behind = 0;
    for n in &newest {
        let Some((space, seq)) = cursor::seqnum(n) else {
            continue;
        };
        let at = place::positions(saved)
            .filter_map(cursor::seqnum)
            .find(|(s, _)| *s == space);
        if let Some((_, saved_seq)) = at {
            behind += seq.saturating_sub(saved_seq);
        }
    }
    Ok(behind)
}

/// The journal files of the source that cannot be opened, with why: libsystemd leaves such
/// files out of a handle without a word, so what they held looks vacuumed. Opens every
/// file: for rare events (a gap, startup), not for every entry.
pub fn unreadable_files(cfg: &JournalConfig) -> Vec<(PathBuf, String)> {
    let files = match &cfg.source {
        Source::Directory(_) | Source::Files(_) => source_files(cfg).unwrap_or_default(),
        Source::Local | Source::Namespace(_) => {
            let mid = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
            let sub = match &cfg.source {
                Source::Namespace(ns) => format!("{}.{ns}", mid.trim()),
                _ => mid.trim().to_string(),
            };
            ["/var/log/journal", "/run/log/journal"]
                .iter()
                .flat_map(|base| writers::list(&PathBuf::from(base).join(&sub)).unwrap_or_default())
                .filter(|p| {
                    p.parent()
                        .and_then(|d| d.file_name())
                        .is_some_and(|d| d == sub.as_str())
                })
                .collect()
        }
    };
    files
        .into_iter()
        .filter_map(|f| {
            let check = stream::open_files(std::slice::from_ref(&f), None).and_then(|mut j| {
                j.seek_head()?;
                j.next()?;
                Ok(())
            });
            check.err().map(|e| (f, format!("{e:#}")))
        })
        .collect()
}
