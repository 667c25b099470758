//! The journal stage: opening the journal, applying matches, positioning at the saved
//! cursor and reading entries as raw bytes.
//!
//! Owns the sd-journal handle, which is neither thread-safe nor non-blocking: it lives on
//! one OS thread (the reader) and never crosses to another. This module must never decide
//! what is safe to skip: it reports where it landed relative to the cursor and leaves the
//! policy to the caller, and it never drops a field (the data threshold is lifted).

pub mod cursor;
mod entry;
mod matches;
mod own;

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use systemd::journal::{self, Journal, JournalWaitResult};

pub use entry::Entry;
pub use matches::{apply as apply_matches, shorthand_terms};
pub(crate) use own::OwnEntries;

use crate::config::{JournalConfig, Source, Start};

/// An open journal, positioned and ready to read.
pub struct Reader {
    j: Journal,
    /// The entry under the read pointer must be returned by the next `next()` call without
    /// moving: seeking to a cursor that is gone lands on the first entry after it.
    deliver_current: bool,
    /// Consecutive failures of `sd_journal_next`, to give up on a journal that cannot be read.
    next_errors: u32,
    pub stats: ReadStats,
    /// The last boot id seen and its text: consecutive entries share it, and formatting
    /// 16 bytes as hex for every entry showed up in profiles.
    boot: Option<(systemd::id128::Id128, String)>,
}

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

impl Reader {
    pub fn open(cfg: &JournalConfig) -> Result<Reader> {
        Ok(Reader {
            j: open(cfg, true)?,
            deliver_current: false,
            next_errors: 0,
            stats: ReadStats::default(),
            boot: None,
        })
    }

    /// Positions the reader: after `cursor` when given, else at the configured start.
    /// Never skips anything but the cursor's own entry.
    pub fn seek(&mut self, cfg: &JournalConfig, cursor: Option<&str>) -> Result<Position> {
        self.deliver_current = false;
        let Some(c) = cursor else {
            match cfg.start {
                Start::Head => self.j.seek_head()?,
                Start::Tail => {
                    self.j.seek_tail()?;
                    // Step onto the newest entry so the next `next()` returns what comes after
                    // it; that entry counts as already seen.
                    self.j.previous()?;
                }
                Start::Since(usec) => self.j.seek_realtime_usec(usec)?,
            }
            return Ok(Position::Start(cfg.start));
        };
        self.j
            .seek_cursor(c)
            .map_err(|e| anyhow!("the journal rejects the saved cursor {c:?}: {e}"))?;
        let landed = self.j.next()? > 0;
        if landed && self.j.test_cursor(c)? {
            return Ok(Position::AfterCursor);
        }
        match locate(cfg, c)? {
            // The cursor's entry exists but does not pass the filters: what we landed on (if
            // anything) comes after it and has not been shipped.
            Located::Exists => {
                self.deliver_current = landed;
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
                self.deliver_current = landed;
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
                self.j.seek_head()?;
                Ok(Position::CursorLost {
                    gap: None,
                    first: None,
                })
            }
        }
    }

    /// Reads the next entry into `entry`. Returns false at the end of the journal.
    pub fn next(&mut self, entry: &mut Entry) -> Result<bool> {
        if self.deliver_current {
            self.deliver_current = false;
        } else {
            match self.j.next() {
                Ok(0) => return Ok(false),
                Ok(_) => self.next_errors = 0,
                Err(e) => {
                    // A corrupt or truncated file: libsystemd moves past the bad entry on the
                    // next call. Give up (and let the pipeline restart from the durable cursor)
                    // only if this repeats without progress.
                    self.stats.unreadable_entries += 1;
                    self.next_errors += 1;
                    if self.next_errors > 1000 {
                        bail!("reading the journal keeps failing: {e}");
                    }
                    tracing::warn!(error = %e, "skipping a journal entry that cannot be read");
                    return self.next(entry);
                }
            }
        }
        self.read_current(entry)?;
        Ok(true)
    }

    fn read_current(&mut self, entry: &mut Entry) -> Result<()> {
        entry.clear();
        entry.cursor = self.j.cursor().context("sd_journal_get_cursor")?;
        entry.realtime_usec = self
            .j
            .timestamp_usec()
            .context("sd_journal_get_realtime_usec")?;
        let (mono, boot) = self
            .j
            .monotonic_timestamp()
            .context("sd_journal_get_monotonic_usec")?;
        entry.monotonic_usec = mono;
        match &self.boot {
            Some((id, text)) if *id == boot => entry.boot_id.push_str(text),
            _ => {
                let text = boot.to_string();
                entry.boot_id.push_str(&text);
                self.boot = Some((boot, text));
            }
        }
        self.j.restart_data();
        loop {
            match self.j.enumerate_data() {
                Ok(Some(f)) => {
                    entry.push_data(f.data());
                }
                Ok(None) => break,
                Err(e) => {
                    // Keep what could be read rather than losing the whole entry.
                    self.stats.corrupt_fields += 1;
                    tracing::warn!(cursor = %entry.cursor, error = %e, "a field of this entry cannot be read; shipping the rest");
                    break;
                }
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for the journal to change. Rotation, new files and deleted files
    /// are all handled inside libsystemd; we only need to keep calling `next()` afterwards.
    pub fn wait(&mut self, timeout: Duration) -> Result<JournalWaitResult> {
        Ok(self.j.wait(Some(timeout))?)
    }

    /// The journal's disk usage and oldest entry time (cheap, but not for every entry).
    pub(crate) fn gauges(&self) -> Gauges {
        Gauges {
            usage_bytes: self.j.usage().ok(),
            oldest_usec: self.j.cutoff_realtime_usec().ok().flatten().map(|(o, _)| o),
        }
    }

    /// The total bytes of journal files this handle sees.
    pub fn usage(&self) -> Result<u64> {
        Ok(self.j.usage()?)
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

/// Looks the cursor up without filters: only then does "not found" mean "gone".
pub fn locate(cfg: &JournalConfig, c: &str) -> Result<Located> {
    let mut j = open(cfg, false)?;
    j.seek_cursor(c)
        .map_err(|e| anyhow!("the journal rejects the saved cursor {c:?}: {e}"))?;
    if j.next()? == 0 {
        // Past the end of everything: either the cursor is the newest entry that ever was
        // and got vacuumed along with everything else, or we are simply at the end. An empty
        // journal has nothing to lose; a non-empty one without the cursor's entry does.
        j.seek_tail()?;
        if j.previous()? == 0 {
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
    let gap = match (cursor::parse(c), cursor::parse(&landed)) {
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

/// The configured start as a position to resume after, so that it can be saved before
/// anything is shipped: a restart must not seek to "the tail" again (it has moved) or it
/// would pass over what was written in between. `None` where the start needs no cursor:
/// `head`, or a journal with nothing before the start.
pub(crate) fn start_cursor(cfg: &JournalConfig) -> Result<Option<String>> {
    match cfg.start {
        Start::Head => Ok(None),
        Start::Tail => newest_cursor(cfg),
        Start::Since(usec) => {
            let mut j = open(cfg, false)?;
            j.seek_realtime_usec(usec)?;
            if j.previous()? == 0 {
                return Ok(None);
            }
            Ok(Some(j.cursor()?))
        }
    }
}

/// The cursor of the newest entry in the whole (unfiltered) journal, if any.
///
/// Used to let the checkpoint advance past entries that the filters remove, so a heavily
/// filtered agent does not sit on an old cursor that journald may vacuum away.
pub fn newest_cursor(cfg: &JournalConfig) -> Result<Option<String>> {
    let mut j = open(cfg, false)?;
    j.seek_tail()?;
    if j.previous()? == 0 {
        return Ok(None);
    }
    Ok(Some(j.cursor()?))
}
