//! One sd-journal handle read in order: the whole source (local journal, a namespace), or
//! the files of one writer of a directory (one sequence-number space).
//!
//! Within one stream libsystemd never passes over an entry: a writer appends its entries in
//! the order of its sequence numbers, and a handle over that writer's files alone reads
//! them in that order. Merging several writers is the reader's business (`reader`).

use std::path::PathBuf;
use std::time::Instant;

use super::handle::Handle;
use anyhow::{Context, Result, anyhow, bail};

use super::source::open;
use super::{Located, Position, ReadStats};
use crate::config::{JournalConfig, ReaderKind, Start};

/// Consecutive failures of `sd_journal_next` before the journal is declared unreadable.
const MAX_NEXT_ERRORS: u32 = 1000;

pub(super) struct Stream {
    /// The open handle; `None` while the stream is parked (its files closed).
    j: Option<Handle>,
    /// The writer's sequence-number space (the `s=` part of its cursors) for a stream over
    /// some files of a directory; `None` for a stream over the whole source.
    pub(super) space: Option<String>,
    pub(super) files: Vec<PathBuf>,
    /// The handle stands on an entry that has not been returned yet.
    ready: bool,
    /// Where the handle was sought to, while it has not moved since (a reopened handle
    /// continues from there).
    sought: Option<String>,
    /// Where a handle that never stood on an entry was placed (head, or a time).
    origin: Anchor,
    /// Where a parked stream continues when it is opened again.
    parked: Option<Anchor>,
    next_errors: u32,
    pub(super) stats: ReadStats,
    /// The last boot id seen and its text: consecutive entries share it, and formatting
    /// 16 bytes as hex for every entry showed up in profiles.
    boot: Option<(systemd::id128::Id128, String)>,
    /// Entries returned since the handle was last opened, for sharing the open handles
    /// fairly among writers with entries to read.
    pub(super) taken_since_open: u64,
    /// The reader's bookkeeping for sources read per writer: waiting for a turn to open,
    /// the last time the stream had an entry to read, the newest sequence number its files'
    /// headers showed when it was parked, and its newest unfiltered cursor with the tail it
    /// was read at.
    pub(super) queued: bool,
    pub(super) active_at: Instant,
    tail_at_park: Option<u64>,
    pub(super) newest: Option<(u64, Option<String>)>,
    /// Files of this writer libsystemd refused, already reported; opened without them.
    unreadable: Vec<PathBuf>,
}

/// Where a parked stream resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Anchor {
    Head,
    Since(u64),
    /// After the entry `cursor`, or on it when `include` (it was stood on, not returned).
    /// A cursor whose entry is gone (vacuumed) resumes at the first entry after it.
    Cursor {
        cursor: String,
        include: bool,
    },
}

impl Stream {
    /// A stream over the whole source, with the filters installed.
    pub(super) fn whole(cfg: &JournalConfig) -> Result<Stream> {
        Ok(Stream::with(Some(open(cfg, true)?), None, Vec::new()))
    }

    /// A stream over the files of one writer, parked at its oldest entry: nothing is open
    /// until [`unpark`](Self::unpark).
    pub(super) fn writer(space: String, files: Vec<PathBuf>) -> Stream {
        let mut s = Stream::with(None, Some(space), files);
        s.parked = Some(Anchor::Head);
        s.queued = true;
        s
    }

    fn with(j: Option<Handle>, space: Option<String>, files: Vec<PathBuf>) -> Stream {
        Stream {
            j,
            space,
            files,
            ready: false,
            sought: None,
            origin: Anchor::Head,
            parked: None,
            next_errors: 0,
            stats: ReadStats::default(),
            boot: None,
            taken_since_open: 0,
            queued: false,
            active_at: Instant::now(),
            tail_at_park: None,
            newest: None,
            unreadable: Vec::new(),
        }
    }

    fn j(&mut self) -> &mut Handle {
        self.j
            .as_mut()
            .expect("a parked stream is opened before it is read")
    }

    /// Whether the stream holds its files open.
    pub(super) fn is_open(&self) -> bool {
        self.j.is_some()
    }

    /// The same entries without the filters, to tell "filtered out" from "gone".
    pub(super) fn unfiltered(&self, cfg: &JournalConfig) -> Result<Handle> {
        if self.files.is_empty() {
            open(cfg, false)
        } else {
            open_files(&self.files, None, cfg.reader)
        }
    }

    /// The journal handle, for waiting on the whole source.
    pub(super) fn handle(&mut self) -> &mut Handle {
        self.j()
    }

    /// Positions the stream: after `cursor` when given, else at `start`. Never skips
    /// anything but the cursor's own entry.
    pub(super) fn seek(
        &mut self,
        cfg: &JournalConfig,
        cursor: Option<&str>,
        start: Start,
    ) -> Result<Position> {
        if !self.is_open() {
            self.j = Some(open_readable(&self.files, &mut self.unreadable, cfg)?);
            self.parked = None;
            self.taken_since_open = 0;
        }
        self.ready = false;
        self.sought = cursor.map(str::to_string);
        self.origin = Anchor::Head;
        let Some(c) = cursor else {
            let j = self.j();
            match start {
                Start::Head => j.seek_head()?,
                Start::Tail => {
                    j.seek_tail()?;
                    // Step onto the newest entry so the next `next()` returns what comes after
                    // it; that entry counts as already seen.
                    j.previous()?;
                }
                Start::Since(usec) => {
                    j.seek_realtime_usec(usec)?;
                    self.origin = Anchor::Since(usec);
                }
            }
            return Ok(Position::Start(start));
        };
        let j = self.j();
        j.seek_cursor(c)
            .map_err(|e| anyhow!("the journal rejects the saved cursor {c:?}: {e}"))?;
        let landed = j.next()?;
        if landed && j.test_cursor(c)? {
            return Ok(Position::AfterCursor);
        }
        match locate_in(self.unfiltered(cfg)?, c)? {
            // The cursor's entry exists but does not pass the filters: what we landed on (if
            // anything) comes after it and has not been shipped.
            Located::Exists => {
                self.ready = landed;
                Ok(if landed {
                    Position::AfterFilteredCursor
                } else {
                    Position::AfterCursor
                })
            }
            // Gone, in the same sequence-number space: libsystemd put us on the first entry
            // after it that survives, which is exactly where the unshipped data resumes.
            Located::Missing {
                gap: Some(gap),
                first,
            } => {
                self.ready = landed;
                Ok(Position::CursorLost {
                    gap: Some(gap),
                    first,
                })
            }
            // Gone, and we cannot tell where it stood relative to what is left (another
            // machine's journal, or a journal that was recreated). libsystemd would place us
            // by timestamp and silently pass older entries that were never shipped, so
            // start from the oldest entry instead: duplicates are better than loss.
            Located::Missing { gap: None, .. } => {
                self.j().seek_head()?;
                self.sought = None;
                Ok(Position::CursorLost {
                    gap: None,
                    first: None,
                })
            }
        }
    }

    /// Moves onto the next entry unless the handle already stands on one not yet returned.
    /// Returns false at the end of the stream.
    pub(super) fn advance(&mut self) -> Result<bool> {
        if self.ready {
            return Ok(true);
        }
        loop {
            match self.j().next() {
                Ok(false) => return Ok(false),
                Ok(true) => {
                    self.next_errors = 0;
                    self.ready = true;
                    self.sought = None;
                    return Ok(true);
                }
                Err(e) => {
                    // A corrupt or truncated file: libsystemd moves past the bad entry on the
                    // next call. Give up (and let the pipeline restart from the durable
                    // cursor) only if this repeats without progress.
                    self.stats.unreadable_entries += 1;
                    self.next_errors += 1;
                    if self.next_errors > MAX_NEXT_ERRORS {
                        bail!("reading the journal keeps failing: {e}");
                    }
                    tracing::warn!(error = %e, "skipping a journal entry that cannot be read");
                }
            }
        }
    }

    /// The realtime timestamp of the entry `advance` stepped onto, for merging writers.
    pub(super) fn head_usec(&self) -> u64 {
        self.j
            .as_ref()
            .and_then(|j| j.timestamp_usec().ok())
            .unwrap_or(0)
    }

    /// Reads the entry `advance` stepped onto into `entry`.
    pub(super) fn take(&mut self, entry: &mut super::Entry) -> Result<()> {
        debug_assert!(self.ready);
        self.ready = false;
        // Returned: a later park anchors on this entry, never on where the handle was sought.
        self.sought = None;
        self.taken_since_open += 1;
        let j = self.j.as_mut().expect("a ready stream is open");
        let damaged = j.take(entry, &mut self.boot)?;
        self.stats.add(j.take_skipped());
        if let Some(why) = damaged {
            // Keep what could be read rather than losing the whole entry, and say so in the
            // record itself.
            self.stats.corrupt_fields += u64::from(matches!(j, Handle::Sd(_)));
            tracing::warn!(cursor = %entry.cursor, writer = self.space.as_deref().unwrap_or("(whole journal)"), files = ?self.files, error = %why, "fields of this entry cannot be read (corrupt journal file); shipping those that could, marked");
            entry.damaged = Some(why);
        }
        Ok(())
    }

    /// Whether the handle stands on an entry that `advance` will return.
    pub(super) fn is_ready(&self) -> bool {
        self.ready
    }

    /// Closes the stream's files, remembering exactly where it stood: on the last entry
    /// returned (or on one not returned yet), or where the handle was sought to if it never
    /// moved. A parked stream holds no descriptor.
    pub(super) fn park(&mut self) {
        let Some(mut j) = self.j.take() else { return };
        self.stats.add(j.take_skipped());
        let anchor = match (&self.sought, j.cursor()) {
            (Some(s), _) => Anchor::Cursor {
                cursor: s.clone(),
                include: false,
            },
            (None, Ok(h)) => Anchor::Cursor {
                cursor: h,
                include: self.ready,
            },
            (None, Err(_)) => self.origin.clone(),
        };
        self.parked = Some(anchor);
        self.ready = false;
        self.sought = None;
        self.tail_at_park = super::header::tail_of(&self.files);
    }

    /// Whether a parked stream's files' headers show entries newer than when it was parked
    /// (a change the watch did not report).
    pub(super) fn tail_moved(&self) -> bool {
        match (self.tail_at_park, super::header::tail_of(&self.files)) {
            (Some(then), Some(now)) => now > then,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// [`unpark`](Self::unpark), then `still` on the files: when they changed under their
    /// names meanwhile (a rotation since the listing), the stream is parked again at the
    /// very anchor it had, never at what the wrong files made it land on. Returns whether
    /// the stream is open.
    pub(super) fn unpark_checked(
        &mut self,
        cfg: &JournalConfig,
        still: impl Fn(&[PathBuf]) -> bool,
    ) -> Result<bool> {
        if !still(&self.files) {
            return Ok(false);
        }
        let anchor = self.parked.clone();
        self.unpark(cfg)?;
        if still(&self.files) {
            return Ok(true);
        }
        self.j = None;
        self.parked = anchor;
        self.ready = false;
        self.sought = None;
        Ok(false)
    }

    /// Parks a stream that could not be opened at all, to resume after `cursor` (or from its
    /// oldest entry) once it can.
    pub(super) fn park_at(&mut self, cursor: Option<&str>) {
        self.j = None;
        self.ready = false;
        self.sought = None;
        self.parked = Some(match cursor {
            Some(c) => Anchor::Cursor {
                cursor: c.to_string(),
                include: false,
            },
            None => Anchor::Head,
        });
    }

    /// Opens a parked stream's files again and puts the handle back where it stood.
    pub(super) fn unpark(&mut self, cfg: &JournalConfig) -> Result<()> {
        let Some(anchor) = self.parked.clone() else {
            return Ok(());
        };
        let mut j = open_readable(&self.files, &mut self.unreadable, cfg)?;
        let mut ready = false;
        let mut sought = None;
        match &anchor {
            Anchor::Head => j.seek_head()?,
            Anchor::Since(usec) => j.seek_realtime_usec(*usec)?,
            Anchor::Cursor { cursor: c, include } => {
                j.seek_cursor(c.as_str())
                    .map_err(|e| anyhow!("cannot find the cursor {c:?} again: {e}"))?;
                let landed = j.next()?;
                // On the anchor itself: returned already unless it was only stood on. Past
                // it (its file was vacuumed): the entry landed on is new.
                ready = landed && (*include || !j.test_cursor(c.as_str())?);
                // A handle that did not move keeps its anchor for the next park.
                if !ready && j.cursor().is_err() {
                    sought = Some(c.clone());
                }
            }
        }
        if let Anchor::Head | Anchor::Since(_) = anchor {
            self.origin = anchor;
        }
        self.j = Some(j);
        self.parked = None;
        self.ready = ready;
        self.sought = sought;
        self.taken_since_open = 0;
        Ok(())
    }
}

/// A handle over some journal files, with the data threshold lifted and, given a config,
/// its filters installed. No inotify watch: the reader's one watch covers the directory.
pub(super) fn open_files(
    files: &[PathBuf],
    filters: Option<&JournalConfig>,
    reader: ReaderKind,
) -> Result<Handle> {
    if reader == ReaderKind::Native {
        let n = super::native::NativeJournal::open_files(files, filters.map(|c| &c.filter))?;
        return Ok(Handle::Native(Box::new(n)));
    }
    let names = files
        .iter()
        .map(|f| {
            f.to_str()
                .ok_or_else(|| anyhow!("journal file {} is not UTF-8", f.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut j = systemd::journal::OpenFilesOptions::default()
        .open_files(names)
        .with_context(|| format!("cannot open the journal files {files:?}"))?;
    j.set_data_threshold(0)
        .context("cannot lift the journal data threshold")?;
    if let Some(cfg) = filters {
        super::matches::apply(&mut j, &cfg.filter)?;
    }
    Ok(Handle::Sd(j))
}

/// [`open_files`] with the filters, leaving out (and naming) files libsystemd refuses: a
/// handle over several files fails as a whole when one of them cannot be opened (a
/// truncated `.journal~`, a file vacuumed since the listing), and one bad file must not
/// stop its writer's good ones. Fails when no file can be opened, or when the process is
/// out of descriptors (the caller's budget decides then, not a file-by-file retry).
fn open_readable(
    files: &[PathBuf],
    unreadable: &mut Vec<PathBuf>,
    cfg: &JournalConfig,
) -> Result<Handle> {
    unreadable.retain(|f| files.contains(f));
    let known_good: Vec<PathBuf> = files
        .iter()
        .filter(|f| !unreadable.contains(f))
        .cloned()
        .collect();
    match open_files(&known_good, Some(cfg), cfg.reader) {
        Ok(j) if !known_good.is_empty() => return Ok(j),
        Err(e) if super::per_writer::is_out_of_descriptors(&e) => return Err(e),
        _ => {}
    }
    let mut good = Vec::with_capacity(files.len());
    for f in files {
        match open_files(std::slice::from_ref(f), None, cfg.reader) {
            Ok(_) => good.push(f.clone()),
            Err(e) if super::per_writer::is_out_of_descriptors(&e) => return Err(e),
            Err(e) => {
                if !unreadable.contains(f) {
                    unreadable.push(f.clone());
                    tracing::warn!(file = %f.display(), error = format!("{e:#}"), "this journal file cannot be opened; its writer is read without it");
                }
            }
        }
    }
    if good.is_empty() {
        bail!("none of the journal files {files:?} can be opened");
    }
    open_files(&good, Some(cfg), cfg.reader)
}

/// Looks the cursor up in an unfiltered handle: only there does "not found" mean "gone".
pub(super) fn locate_in(mut j: Handle, c: &str) -> Result<Located> {
    j.seek_cursor(c)
        .map_err(|e| anyhow!("the journal rejects the saved cursor {c:?}: {e}"))?;
    if !j.next()? {
        // Past the end of everything: either the cursor is the newest entry that ever was
        // and got vacuumed along with everything else, or we are simply at the end. An empty
        // journal has nothing to lose; a non-empty one without the cursor's entry does.
        j.seek_tail()?;
        if !j.previous()? {
            return Ok(Located::Missing {
                gap: None,
                first: None,
            });
        }
        // The cursor may point at the newest entry, which `next()` from the seek passed.
        return if j.test_cursor(c)? {
            Ok(Located::Exists)
        } else {
            let newest = j.cursor()?;
            Ok(Located::Missing {
                gap: None,
                first: Some(newest),
            })
        };
    }
    if j.test_cursor(c)? {
        return Ok(Located::Exists);
    }
    let landed = j.cursor()?;
    let gap = match (super::cursor::parse(c), super::cursor::parse(&landed)) {
        (Ok(old), Ok(new)) if old.seqnum_id == new.seqnum_id && new.seqnum > old.seqnum => {
            Some(new.seqnum - old.seqnum - 1)
        }
        _ => None,
    };
    Ok(Located::Missing {
        gap,
        first: Some(landed),
    })
}

/// The newest entry of an unfiltered handle, if any.
pub(super) fn newest_in(mut j: Handle) -> Result<Option<String>> {
    j.seek_tail()?;
    if !j.previous()? {
        return Ok(None);
    }
    Ok(Some(j.cursor()?))
}

/// The last entry of an unfiltered handle before `usec`, if any.
pub(super) fn before_in(mut j: Handle, usec: u64) -> Result<Option<String>> {
    j.seek_realtime_usec(usec)?;
    if !j.previous()? {
        return Ok(None);
    }
    Ok(Some(j.cursor()?))
}
