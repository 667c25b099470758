//! Sharing the open files among the writers of a source read per writer (a directory, a
//! file set): which writers hold their files open, which wait their turn, and the budget
//! of descriptors they share. Also the reader's side of the watch: listing the files
//! again, waking the writers whose files changed, closing those whose files are gone.
//!
//! Never exits over running out of descriptors: it reads with what is open and tries the
//! others again later. A parked writer keeps its exact place, so parking loses nothing.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::reader::Reader;
use super::source::{source_files, watched_dirs};
use super::stream::Stream;
use super::watch::Watch;
use super::writers::{self, Writers};
use crate::config::JournalConfig;

/// How often the files of a directory are listed again, and parked writers' headers
/// looked at, without an inotify event (events can be lost: a queue overflow, a file
/// system that does not report remote writes).
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

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

/// What a source read per writer keeps besides its streams.
///
/// Descriptors: one for the inotify watch, plus the files of the writers open now, which
/// never exceed `budget` (half the soft open-file limit, at most [`MAX_OPEN_FILES`])
/// unless one writer alone has more files. A writer is open while it has entries to read
/// and for [`QUIET`] after; then it is parked (files closed, its exact place kept) until
/// the watch says one of its files changed.
pub(super) struct PerWriter {
    writers: Writers,
    pub(super) watch: Watch,
    /// Space → index into `streams`.
    pub(super) index: HashMap<String, usize>,
    /// Parked streams with entries to read (or possibly so), in the order they asked.
    queue: VecDeque<usize>,
    pub(super) open_files: usize,
    pub(super) budget: usize,
    /// When the budget was cut for running out of descriptors.
    cut_at: Option<Instant>,
    /// The number of files listed last, for the error that names the limit.
    listed: usize,
    last_scan: Instant,
    rescan: bool,
    log: crate::logging::RateLimit,
}

impl PerWriter {
    /// One stream per writer of the source, all parked, and the watch and bookkeeping that
    /// share the descriptors among them. Reads file headers, opens no journal file.
    pub(super) fn open(cfg: &JournalConfig) -> Result<(Vec<Stream>, PerWriter)> {
        // Watch first: a file that changes while the rest is set up is reported.
        let watch =
            Watch::new(&watched_dirs(cfg)).context("cannot watch the journal for changes")?;
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
        Ok((streams, pw))
    }

    /// Parks an open stream, giving its files back to the budget.
    pub(super) fn park(&mut self, s: &mut Stream) {
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

    /// Opens the waiting streams in the order they asked while the budget allows; the first
    /// that does not fit stops the others, so no writer is passed over for ever.
    fn open_queued(
        &mut self,
        streams: &mut [Stream],
        cfg: &JournalConfig,
        now: Instant,
    ) -> Result<()> {
        while let Some(&i) = self.queue.front() {
            let s = &mut streams[i];
            if s.is_open() {
                self.queue.pop_front();
                s.queued = false;
                continue;
            }
            let n = s.files.len();
            if self.open_files > 0 && self.open_files + n > self.budget {
                break;
            }
            let writers = &self.writers;
            match s.unpark_checked(cfg, |files| writers.unchanged(files)) {
                Ok(false) => {
                    // Rotated since the listing: list again before opening it.
                    self.rescan = true;
                    break;
                }
                Ok(true) => {
                    self.queue.pop_front();
                    s.queued = false;
                    self.open_files += n;
                    s.active_at = now;
                    if !s.is_ready() {
                        s.advance()?;
                    }
                }
                Err(e) if is_out_of_descriptors(&e) => {
                    // Something else in the process holds descriptors too: read with what
                    // is open and try again later, never exit over it.
                    self.budget = self.open_files.max(1);
                    self.cut_at = Some(now);
                    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
                    let msg = format!(
                        "cannot open more journal files: too many open files (the open-file limit is {}, hard {}; the source has {} journal files, {} of them open now); shipping the writers that are open and trying the others again as descriptors free up",
                        limit
                            .current
                            .map_or("unlimited".to_string(), |l| l.to_string()),
                        limit
                            .maximum
                            .map_or("unlimited".to_string(), |l| l.to_string()),
                        self.listed,
                        self.open_files,
                    );
                    if let Some(suppressed) = self.log.admit(&msg) {
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
                    self.queue.pop_front();
                    s.queued = false;
                    let msg = format!("cannot read this writer's journal files: {e:#}");
                    if let Some(suppressed) = self.log.admit(&msg) {
                        tracing::error!(
                            suppressed,
                            writer = s.space.as_deref().unwrap_or(""),
                            "{msg}; reading the other writers and trying it again when its files change"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

impl Reader {
    /// Wakes the writers whose files changed, lists the files again when they came or
    /// went, parks caught-up writers and gives the freed descriptors to the waiting ones.
    pub(super) fn poll(&mut self) -> Result<()> {
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
        pw.open_queued(&mut self.streams, &self.cfg, now)?;
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
    pub(super) fn reindex(&mut self) {
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

/// Whether `e` is the process (or the system) out of descriptors: the budget's business,
/// not a reason to set a writer aside or to fail.
pub(super) fn is_out_of_descriptors(e: &anyhow::Error) -> bool {
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
