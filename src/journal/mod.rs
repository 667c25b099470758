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
mod header;
mod host;
mod matches;
mod own;
pub(crate) mod retention;
mod select;
mod stream;
mod watch;
mod writers;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use systemd::journal::{self, Journal, JournalWaitResult};

pub(crate) use cursor::validate_place;
pub use entry::Entry;
pub(crate) use host::machine_id;
pub use matches::{apply as apply_matches, shorthand_terms};
pub(crate) use own::OwnEntries;
pub(crate) use select::{Selection, effect as filter_effect};

use self::stream::{Stream, before_in, locate_in, newest_in};
use self::watch::Watch;
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

/// How often the files of a directory are listed again, and parked writers' headers
/// looked at, without an inotify event (events can be lost: a queue overflow, a file
/// system that does not report remote writes).
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// How many entries may be read from busy writers before the quiet ones are asked again
/// for new entries: a host that never stops must not starve the others.
const POLL_EVERY: u32 = 256;

/// How long a caught-up writer keeps its files open while nobody else waits for the
/// descriptors: a writer that logs every second is not reopened every second.
const QUIET: Duration = Duration::from_secs(2);

/// How many entries a writer reads in one turn while other writers with entries wait for
/// a free descriptor: a host that never stops must not hold its files for ever.
const TURN: u64 = 4096;

/// The most journal files the reader holds open at once, whatever the limit allows:
/// each open file costs maps and memory too.
const MAX_OPEN_FILES: usize = 4096;

/// How long the budget stays cut after running out of descriptors anyway (something else
/// in the process held them) before the reader tries its full share again.
const EMFILE_BACKOFF: Duration = Duration::from_secs(30);

/// An open journal, positioned and ready to read: one stream, or one per writer merged by
/// time.
pub struct Reader {
    cfg: JournalConfig,
    streams: Vec<Stream>,
    /// Open streams standing on an entry not yet returned, by that entry's time.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    /// For sources read per writer: which writers hold files open and which wait.
    per_writer: Option<PerWriter>,
    reads: u32,
    /// Read statistics of streams that were closed (their writer's files are gone).
    retired: ReadStats,
    /// Writers whose files are all gone since the caller last asked.
    gone: Vec<String>,
}

/// What a source read per writer keeps besides its streams.
///
/// Descriptors: one for the inotify watch, plus the files of the writers open now, which
/// never exceed `budget` (half the soft open-file limit, at most [`MAX_OPEN_FILES`])
/// unless one writer alone has more files. A writer is open while it has entries to read
/// and for [`QUIET`] after; then it is parked (files closed, its exact place kept) until
/// the watch says one of its files changed.
struct PerWriter {
    writers: Writers,
    watch: Watch,
    /// Space → index into `streams`.
    index: HashMap<String, usize>,
    /// Parked streams with entries to read (or possibly so), in the order they asked.
    queue: VecDeque<usize>,
    open_files: usize,
    budget: usize,
    /// When the budget was cut for running out of descriptors.
    cut_at: Option<Instant>,
    /// The number of files listed last, for the error that names the limit.
    listed: usize,
    last_scan: Instant,
    rescan: bool,
    log: crate::logging::RateLimit,
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
                // Watch first: a file that changes while the rest is set up is reported.
                let watch = Watch::new(&watched_dirs(cfg))
                    .context("cannot watch the journal for changes")?;
                let files = source_files(cfg)?;
                let listed = files.len();
                let mut writers = Writers::default();
                let streams: Vec<Stream> = writers
                    .group(files)
                    .into_iter()
                    .map(|(space, files)| Stream::writer(space, files))
                    .collect();
                let pw = PerWriter {
                    writers,
                    watch,
                    index: HashMap::new(),
                    queue: VecDeque::new(),
                    open_files: 0,
                    budget: file_budget(),
                    cut_at: None,
                    listed,
                    last_scan: Instant::now(),
                    rescan: false,
                    log: Default::default(),
                };
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

    /// Wakes the writers whose files changed, lists the files again when they came or
    /// went, parks caught-up writers and gives the freed descriptors to the waiting ones.
    fn poll(&mut self) -> Result<()> {
        let Some(pw) = &mut self.per_writer else {
            return Ok(());
        };
        let changes = pw
            .watch
            .take()
            .context("cannot read the journal directory's changes")?;
        if changes.listing {
            pw.rescan = true;
        }
        for f in &changes.created {
            pw.writers.forget(f);
        }
        for f in &changes.modified {
            match pw.writers.known_space(f) {
                Some(space) => {
                    if let Some(&i) = pw.index.get(space) {
                        pw.wake(&mut self.streams[i], i);
                    }
                }
                // A file whose header was not written when it was listed.
                None => pw.rescan |= writers::is_journal(f),
            }
        }
        let periodic = pw.last_scan.elapsed() >= RESCAN_INTERVAL;
        if changes.overflow || periodic {
            // Events may have been lost: a parked writer whose files say they hold newer
            // entries than when it was parked is looked at again.
            // (Not every parked writer on an overflow: reopening thousands of hosts because
            // the queue overflowed while Kafka pushed back would feed the overload.)
            for (i, s) in self.streams.iter_mut().enumerate() {
                if !s.is_open() && !s.queued && s.tail_moved() {
                    pw.wake(s, i);
                }
            }
        }
        if pw.rescan || periodic {
            self.scan()?;
        }
        self.share()
    }

    /// Parks, advances and opens streams within the budget; rebuilds the merge heap.
    fn share(&mut self) -> Result<()> {
        let Some(pw) = &mut self.per_writer else {
            return Ok(());
        };
        if pw.cut_at.is_some_and(|at| at.elapsed() >= EMFILE_BACKOFF) {
            pw.cut_at = None;
            pw.budget = file_budget();
        }
        let now = Instant::now();
        let waiting = !pw.queue.is_empty();
        for (i, s) in self.streams.iter_mut().enumerate() {
            if !s.is_open() {
                continue;
            }
            // A writer that had its turn while others wait gives its files up, keeping the
            // entry it stands on for its next turn.
            if waiting && s.taken_since_open >= TURN {
                pw.park(s);
                pw.wake(s, i);
                continue;
            }
            if s.is_ready() || s.advance()? {
                s.active_at = now;
                continue;
            }
            if waiting || s.active_at.elapsed() >= QUIET {
                pw.park(s);
            }
        }
        while let Some(&i) = pw.queue.front() {
            let s = &mut self.streams[i];
            if s.is_open() {
                pw.queue.pop_front();
                s.queued = false;
                continue;
            }
            let n = s.files.len();
            if pw.open_files > 0 && pw.open_files + n > pw.budget {
                break;
            }
            let writers = &pw.writers;
            match s.unpark_checked(&self.cfg, |files| writers.unchanged(files)) {
                Ok(false) => {
                    // Rotated since the listing: list again before opening it.
                    pw.rescan = true;
                    break;
                }
                Ok(true) => {
                    pw.queue.pop_front();
                    s.queued = false;
                    pw.open_files += n;
                    s.active_at = now;
                    if !s.is_ready() {
                        s.advance()?;
                    }
                }
                Err(e) if is_out_of_descriptors(&e) => {
                    // Something else in the process holds descriptors too: read with what
                    // is open and try again later, never exit over it.
                    pw.budget = pw.open_files.max(1);
                    pw.cut_at = Some(now);
                    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
                    let msg = format!(
                        "cannot open more journal files: too many open files (the open-file limit is {}, hard {}; the source has {} journal files, {} of them open now); shipping the writers that are open and trying the others again as descriptors free up",
                        limit
                            .current
                            .map_or("unlimited".to_string(), |l| l.to_string()),
                        limit
                            .maximum
                            .map_or("unlimited".to_string(), |l| l.to_string()),
                        pw.listed,
                        pw.open_files,
                    );
                    if let Some(suppressed) = pw.log.admit(&msg) {
                        tracing::error!(
                            suppressed,
                            writer = s.space.as_deref().unwrap_or(""),
                            "{msg}"
                        );
                    }
                    break;
                }
                Err(e) => {
                    // None of its files can be opened now (corrupt, vacuumed since the
                    // listing): the others go on; it is tried again when its files change.
                    pw.queue.pop_front();
                    s.queued = false;
                    let msg = format!("cannot read this writer's journal files: {e:#}");
                    if let Some(suppressed) = pw.log.admit(&msg) {
                        tracing::error!(
                            suppressed,
                            writer = s.space.as_deref().unwrap_or(""),
                            "{msg}; reading the other writers and trying it again when its files change"
                        );
                    }
                }
            }
        }
        self.heap.clear();
        for (i, s) in self.streams.iter().enumerate() {
            if s.is_open() && s.is_ready() {
                self.heap.push(Reverse((s.head_usec(), i)));
            }
        }
        Ok(())
    }

    /// Regroups the files by writer: new writers get a stream from their oldest entry,
    /// writers with new, rotated or vacuumed files are reopened where they stood, writers
    /// whose files are all gone are closed. Reads file headers, opens no journal.
    fn scan(&mut self) -> Result<()> {
        let files = source_files(&self.cfg)?;
        let Some(pw) = &mut self.per_writer else {
            return Ok(());
        };
        pw.rescan = false;
        pw.last_scan = Instant::now();
        pw.listed = files.len();
        let mut groups = pw.writers.group(files);
        let mut kept = Vec::with_capacity(self.streams.len());
        for mut s in std::mem::take(&mut self.streams) {
            let space = s.space.clone().unwrap_or_default();
            match groups.remove(&space) {
                Some(files) if files == s.files => kept.push(s),
                Some(files) => {
                    pw.park(&mut s);
                    s.files = files;
                    // New or rotated files: likely new entries.
                    s.queued = true;
                    kept.push(s);
                }
                // Its files are not in the listing, yet some still exist (a header that could
                // not be read just now, a subdirectory that could not be listed): keep it.
                None if s.files.iter().any(|f| f.exists()) => kept.push(s),
                None => {
                    tracing::info!(writer = %space, "the journal files of this writer are gone; closing its stream");
                    if s.is_open() {
                        pw.open_files -= s.files.len();
                    }
                    self.retired.add(s.stats);
                    self.gone.push(space);
                }
            }
        }
        for (space, files) in groups {
            tracing::info!(writer = %space, files = files.len(), "a new writer in the journal directory: reading it from its oldest entry");
            kept.push(Stream::writer(space, files));
        }
        self.streams = kept;
        self.reindex();
        Ok(())
    }

    /// Rebuilds the space index and the queue after streams came or went.
    fn reindex(&mut self) {
        let Some(pw) = &mut self.per_writer else {
            return;
        };
        pw.index.clear();
        pw.queue.clear();
        for (i, s) in self.streams.iter_mut().enumerate() {
            pw.index.insert(s.space.clone().unwrap_or_default(), i);
            if s.queued {
                pw.queue.push_back(i);
            }
        }
    }

    /// Waits up to `timeout` for the journal to change. Rotation, new files and deleted files
    /// of one stream are handled inside libsystemd; for a source read per writer the watch
    /// says which files changed and the next read acts on it.
    pub fn wait(&mut self, timeout: Duration) -> Result<JournalWaitResult> {
        match &mut self.per_writer {
            None => Ok(self.streams[0].handle().wait(Some(timeout))?),
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
        gauges_of(self.streams[0].handle())
    }

    /// The total bytes of journal files this reader sees.
    pub fn usage(&mut self) -> Result<u64> {
        if self.per_writer.is_some() {
            return Ok(usage_of(&source_files(&self.cfg)?));
        }
        Ok(self.streams[0].handle().usage()?)
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

impl PerWriter {
    /// Parks an open stream, giving its files back to the budget.
    fn park(&mut self, s: &mut Stream) {
        if s.is_open() {
            self.open_files -= s.files.len();
            s.park();
        }
    }

    /// Puts a parked stream in the queue of those with entries to read.
    fn wake(&mut self, s: &mut Stream, i: usize) {
        if !s.is_open() && !s.queued {
            s.queued = true;
            self.queue.push_back(i);
        }
    }
}

/// The journal files a source read per writer holds open at most, under the soft limit
/// now in force.
fn file_budget() -> usize {
    open_file_budget(
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX),
    )
}

/// Half of an open-file limit, for the journal files of a source read per writer: the rest
/// is for Kafka connections, listeners and the state directory.
pub fn open_file_budget(limit: u64) -> usize {
    usize::try_from(limit / 2)
        .unwrap_or(usize::MAX)
        .clamp(8, MAX_OPEN_FILES)
}

fn is_out_of_descriptors(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let os = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .or_else(|| {
                c.downcast_ref::<systemd::Error>()
                    .and_then(|e| e.raw_os_error())
            });
        use rustix::io::Errno;
        matches!(os, Some(n) if n == Errno::MFILE.raw_os_error() || n == Errno::NFILE.raw_os_error())
    })
}

/// The disk usage and oldest entry time of the whole source, filters ignored. A source
/// read per writer is measured from file sizes and headers: a handle over every file of a
/// collector would need a descriptor per file.
pub(crate) fn measure(cfg: &JournalConfig) -> Result<Gauges> {
    match &cfg.source {
        Source::Local | Source::Namespace(_) => Ok(gauges_of(&mut open(cfg, false)?)),
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

fn gauges_of(j: &mut Journal) -> Gauges {
    Gauges {
        usage_bytes: j.usage().ok(),
        oldest_usec: j.cutoff_realtime_usec().ok().flatten().map(|(o, _)| o),
    }
}

/// The bytes on disk of `files`, as `sd_journal_get_usage` counts them (allocated blocks).
fn usage_of(files: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// The directories a source read per writer watches.
fn watched_dirs(cfg: &JournalConfig) -> Vec<PathBuf> {
    match &cfg.source {
        Source::Directory(d) => {
            let mut dirs = vec![d.clone()];
            dirs.extend(writers::subdirectories(d));
            dirs
        }
        Source::Files(files) => {
            let mut dirs: Vec<PathBuf> = files
                .iter()
                .map(|f| match f.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                })
                .collect();
            dirs.sort();
            dirs.dedup();
            dirs
        }
        Source::Local | Source::Namespace(_) => Vec::new(),
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
/// journal and namespaces), for `check` to set against the open-file limit.
pub fn file_count(cfg: &JournalConfig) -> Option<usize> {
    match &cfg.source {
        Source::Directory(_) | Source::Files(_) => source_files(cfg).ok().map(|f| f.len()),
        Source::Local | Source::Namespace(_) => None,
    }
}

/// A writer's space and files; `(None, None)` is the whole single-writer source.
type WriterFiles = (Option<String>, Option<Vec<PathBuf>>);

/// The writers of the source, each with its files (`None`: the whole single-writer source).
/// Opens nothing: handles are opened one writer at a time by [`unfiltered`], so that a
/// directory of thousands of hosts never holds more than one writer's files at once here.
fn writer_files(cfg: &JournalConfig) -> Result<Vec<WriterFiles>> {
    match &cfg.source {
        Source::Local | Source::Namespace(_) => Ok(vec![(None, None)]),
        Source::Directory(_) | Source::Files(_) => Ok(Writers::default()
            .group(source_files(cfg)?)
            .into_iter()
            .map(|(space, files)| (Some(space), Some(files)))
            .collect()),
    }
}

/// An unfiltered handle over one writer's files, or over the whole source.
fn unfiltered(cfg: &JournalConfig, files: Option<&[PathBuf]>) -> Result<Journal> {
    match files {
        None => open(cfg, false),
        Some(f) => stream::open_files(f, None),
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
    for (space, files) in writer_files(cfg)? {
        if space.as_deref().is_none_or(|s| s == stream) {
            return locate_in(unfiltered(cfg, files.as_deref())?, c);
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
    for (_, files) in writer_files(cfg)? {
        let j = unfiltered(cfg, files.as_deref())?;
        let p = match cfg.start {
            Start::Head => None,
            Start::Tail => newest_in(j)?,
            Start::Since(usec) => before_in(j, usec)?,
        };
        positions.extend(p);
    }
    Ok((!positions.is_empty()).then(|| place::join(positions.iter().map(String::as_str))))
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

/// The journal files of the source that cannot be opened, with why: libsystemd leaves such
/// files out of a handle without a word, so what they held looks vacuumed. Opens every
/// file: for rare events (a gap, startup), not for every entry.
pub fn unreadable_files(cfg: &JournalConfig) -> Vec<(PathBuf, String)> {
    let files = match &cfg.source {
        Source::Directory(_) | Source::Files(_) => source_files(cfg).unwrap_or_default(),
        Source::Local | Source::Namespace(_) => {
            let mid = host::machine_id().unwrap_or_default();
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
