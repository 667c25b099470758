//! The journal input: the reader thread's loop.
//!
//! Opens the journal, positions it at the resume cursor (applying the `cursor_lost`
//! policy), then follows it and hands every entry to the shipping thread, in journal order.
//! Also registers positions that need no delivery (own entries, filtered stretches) so
//! that the watermark moves past them, and notices entries that vanished (gaps).
//!
//! Runs on the reader thread, which alone owns the sd-journal handle. It must never skip
//! an entry without registering its position behind the entries before it.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::control::Control;
use super::input::{Input, Out};
use crate::config::{Config, CursorLost};
use crate::error::Failure;
use crate::journal::{self, Entry, Placed, Position, Reader};
use crate::metrics::Metrics;

/// Exactly-once mode: how long the journal must stay quiet before the open transaction is
/// committed.
const QUIET_BEFORE_COMMIT: Duration = Duration::from_millis(10);

/// How long the reader waits at the end of the journal before it looks for new entries
/// itself, while entries keep coming. journald writes entries through a shared mapping and
/// tells readers (inotify) at most every 250 ms, so a reader that only waits for that adds
/// up to 250 ms of latency to every entry; the entries are readable at once (p50 at 1,000
/// entries/s: 251 -> 99 ms, scripts/bench-live.sh, #19).
const FOLLOW_POLL: Duration = Duration::from_millis(25);

/// After this long without an entry the reader waits for journald's notification alone,
/// so an idle agent does not wake 40 times a second; the first entry after a quiet spell
/// may then wait up to journald's 250 ms.
const FOLLOW_QUIET: Duration = Duration::from_secs(2);

/// How often the journal-wide gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(10);

/// The journal, opened and positioned for one session.
pub(super) struct JournalInput<'a> {
    reader: Reader,
    cfg: &'a Config,
    control: &'a Control,
    metrics: &'a Metrics,
    /// Tell the shipping thread when the journal goes quiet (exactly-once commits then).
    commit_on_idle: bool,
    /// Writers whose files are all gone, whose positions wait to be forgotten until none
    /// of their entries is in flight.
    gone: Vec<String>,
}

impl<'a> JournalInput<'a> {
    /// Opens and positions the journal. Problems on the first start are for the operator;
    /// later the journal may just be briefly unavailable (a namespace restarting), so retry.
    pub(super) fn open(
        cfg: &'a Config,
        resume: Option<&str>,
        first: bool,
        control: &'a Control,
        metrics: &'a Metrics,
        commit_on_idle: bool,
    ) -> Result<JournalInput<'a>, Failure> {
        let wrap = |e: anyhow::Error| {
            if first {
                Failure::fatal(e)
            } else {
                Failure::retry(e)
            }
        };
        let mut reader = Reader::open(&cfg.journal).map_err(wrap)?;
        let placed = reader.seek(&cfg.journal, resume).map_err(wrap)?;
        // The positions of writers that stay quiet this session are saved with the rest;
        // those of writers whose files are gone are dropped.
        if let Some(kept) = Reader::kept(&placed) {
            control.window().seed(&kept);
        }
        if first {
            // libsystemd leaves a file it cannot open out without a word: say it here.
            let unreadable = journal::unreadable_files(&cfg.journal);
            Metrics::set(&metrics.journal_unreadable_files, unreadable.len() as u64);
            for (f, e) in &unreadable {
                tracing::error!(file = %f.display(), error = %e, "this journal file cannot be opened (corrupt, or not readable by this user); its entries cannot be shipped");
            }
        }
        control.set_opened();
        control.reader_beat();
        metrics
            .journal_open
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // A collector has a position per host: the routine ones are summed up in one line
        // rather than logged a line per host; anything lost is still named per writer.
        let routine = placed.len() > ROUTINE_LINES;
        for p in &placed {
            apply_cursor_policy(cfg, p, first, routine)?;
        }
        if routine {
            let count = |f: fn(&Position) -> bool| placed.iter().filter(|p| f(&p.position)).count();
            tracing::info!(
                writers = placed.len(),
                after_cursor =
                    count(|p| matches!(p, Position::AfterCursor | Position::AfterFilteredCursor)),
                new = count(|p| matches!(p, Position::NewWriter)),
                from_start = count(|p| matches!(p, Position::Start(_))),
                lost_or_gone =
                    count(|p| matches!(p, Position::CursorLost { .. } | Position::WriterGone)),
                "reading the journal one stream per writer"
            );
        }
        Ok(JournalInput {
            reader,
            cfg,
            control,
            metrics,
            commit_on_idle,
            gone: Vec::new(),
        })
    }

    /// `journal.cursor_lost` for a writer whose files went away while the agent ran:
    /// `resume` forgets its position (a collector's retention removes old hosts; carrying
    /// them would grow every checkpoint for ever), `refuse` keeps it so that the next start
    /// asks the operator, as it does for a writer gone while the agent was stopped.
    fn forget_gone(&mut self) {
        for w in self.reader.take_gone() {
            if self.cfg.journal.cursor_lost == CursorLost::Refuse {
                tracing::warn!(writer = %w, "every journal file of this writer is gone; keeping its saved position (journal.cursor_lost = \"refuse\": the next start will refuse until the operator decides)");
            } else {
                self.gone.push(w);
            }
        }
        let control = self.control;
        self.gone.retain(|w| {
            let done = control.window().forget(w);
            if done {
                tracing::info!(writer = %w, "every journal file of this writer is gone; its saved position is forgotten");
            }
            !done
        });
    }

    fn refresh_gauges(&mut self) {
        let g = self.reader.gauges();
        if let Some(u) = g.usage_bytes {
            Metrics::set(&self.metrics.journal_usage_bytes, u);
        }
        if let Some(o) = g.oldest_usec {
            Metrics::set(&self.metrics.journal_oldest_usec, o);
        }
        let (writers, open, files) = self.reader.open_counts();
        Metrics::set(&self.metrics.journal_writers, writers as u64);
        Metrics::set(&self.metrics.journal_writers_open, open as u64);
        Metrics::set(&self.metrics.journal_files_open, files as u64);
        let stats = self.reader.stats();
        Metrics::set(&self.metrics.journal_corrupt_fields, stats.corrupt_fields);
        Metrics::set(
            &self.metrics.journal_unreadable_entries,
            stats.unreadable_entries,
        );
    }
}

/// Above this many writers, where each one resumes is logged as one summary line.
const ROUTINE_LINES: usize = 8;

/// Logs where reading begins and applies `journal.cursor_lost` when the cursor is gone.
/// `routine_summed` leaves the lines that report no loss to a summary.
fn apply_cursor_policy(
    cfg: &Config,
    placed: &Placed,
    first: bool,
    routine_summed: bool,
) -> Result<(), Failure> {
    let resume = placed.cursor.as_deref();
    match &placed.position {
        Position::WriterGone => {
            let msg = format!(
                "the saved cursor {:?} is no longer in the journal: every file of its writer is gone (vacuumed or removed, or the cursor is another journal's); whatever it wrote after the cursor was never shipped",
                resume.unwrap_or_default()
            );
            if cfg.journal.cursor_lost == CursorLost::Refuse {
                return Err(Failure::fatal(anyhow!(
                    "{msg}; journal.cursor_lost = \"refuse\", so not starting (set it to \"resume\" or delete the cursor file to go on)"
                )));
            }
            tracing::error!("{msg}; forgetting it and reading the writers that are there");
        }
        Position::NewWriter
        | Position::AfterCursor
        | Position::AfterFilteredCursor
        | Position::Start(_)
            if routine_summed => {}
        Position::NewWriter => tracing::info!(
            writer = placed.writer.as_deref().unwrap_or_default(),
            "a writer the saved place does not know: reading it from its oldest entry"
        ),
        Position::AfterCursor | Position::AfterFilteredCursor => {
            if first {
                tracing::info!(
                    position = ?placed.position,
                    writer = placed.writer.as_deref().unwrap_or_default(),
                    "cursor found in the journal; continuing right after it"
                );
            }
        }
        Position::Start(s) => tracing::info!(start = ?s, "starting without a cursor"),
        Position::CursorLost { gap, first: landed } => {
            let msg = match gap {
                Some(g) => format!(
                    "the saved cursor {:?} is no longer in the journal (vacuumed before it was shipped): {g} entries between it and the oldest remaining entry were never shipped",
                    resume.unwrap_or_default()
                ),
                None => format!(
                    "the saved cursor {:?} is no longer in the journal and does not belong to its sequence of entries (another machine's journal, or the journal was recreated): an unknown number of entries may be missing",
                    resume.unwrap_or_default()
                ),
            };
            match cfg.journal.cursor_lost {
                CursorLost::Refuse => {
                    return Err(Failure::fatal(anyhow!(
                        "{msg}; journal.cursor_lost = \"refuse\", so not starting (set it to \"resume\" or delete the cursor file to go on)"
                    )));
                }
                CursorLost::Resume if gap.is_some() => {
                    tracing::error!(gap = ?gap, resume_at = landed.as_deref().unwrap_or("(end)"), "{msg}; resuming at the oldest remaining entry after it");
                }
                CursorLost::Resume => {
                    tracing::error!(
                        "{msg}; shipping the journal from its oldest entry (some entries may be sent twice)"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Why an entry that was read is not shipped, as the counter that counts it: the agent's
/// own log lines (shipping them would let the agent feed on itself), or the agent's part of
/// the filter. Either way the entry moves the watermark like any entry that needs no
/// delivery, so a restart neither re-reads it nor sees a gap.
fn skipped(
    cfg: &Config,
    own: &journal::OwnEntries,
    selection: Option<&journal::Selection>,
    entry: &Entry,
) -> Option<fn(&Metrics) -> &std::sync::atomic::AtomicU64> {
    if cfg.journal.exclude_own_entries && own.matches(entry) {
        return Some(|m| &m.entries_own_skipped);
    }
    if selection.is_some_and(|s| !s.keep(entry)) {
        return Some(|m| &m.entries_excluded);
    }
    None
}

/// Counts a gap in the sequence numbers and says why, for the first few: files vacuumed
/// before they were read, or files libsystemd silently left out (unreadable).
fn report_gap(cfg: &Config, metrics: &Metrics, gaps: &mut GapDetector, gap: u64, at: &str) {
    Metrics::add(&metrics.journal_gaps, 1);
    Metrics::add(&metrics.entries_missed, gap);
    if gaps.reported >= 10 {
        return;
    }
    gaps.reported += 1;
    let unreadable = journal::unreadable_files(&cfg.journal);
    Metrics::set(&metrics.journal_unreadable_files, unreadable.len() as u64);
    if unreadable.is_empty() {
        tracing::error!(
            gap,
            at,
            "{gap} journal entries vanished before they could be read (their files were vacuumed or deleted); continuing after them"
        );
    } else {
        let files: Vec<String> = unreadable
            .iter()
            .map(|(f, e)| format!("{}: {e}", f.display()))
            .collect();
        tracing::error!(
            gap,
            at,
            unreadable = ?files,
            "{gap} journal entries could not be read: journal files of the source cannot be opened (corrupt, or not readable by this user), so libsystemd left them out; continuing after them"
        );
    }
}

impl Input for JournalInput<'_> {
    fn follow(&mut self, out: &mut Out) -> Result<(), Failure> {
        let (cfg, control, metrics) = (self.cfg, self.control, self.metrics);
        let retry = Failure::retry;
        let mut entry = Entry::new();
        // Entries libsystemd's matches leave out never reach us: their numbers are not gaps.
        let filtered = cfg.journal.filter.uses_journal_matches();
        let selection = journal::Selection::new(&cfg.journal.filter);
        let pass_interval = Duration::from_millis(cfg.state.checkpoint_interval_ms);
        let mut last_pass = Instant::now();
        let mut passed: Vec<String> = Vec::new();
        let mut last_gauges: Option<Instant> = None;

        let own = journal::OwnEntries::new(&cfg.journal.source, Some(std::process::id()));
        let mut account = super::account::Account::new(metrics);
        let mut gaps = GapDetector::default();
        let mut count = 0u32;
        // Entries read, and their number at the previous end of the journal: equal means
        // nothing was read since.
        let mut read = 0u64;
        let mut read_at_last_end = u64::MAX;
        // When the reader last reached the end of the journal having read something.
        let mut last_read = Instant::now();
        // An entry already read (by the idle check below) and not yet handled.
        let mut pending = false;
        let mut last_entry = Instant::now();
        // Entries were read since the shipping thread last heard that the journal is quiet.
        let mut fresh = false;
        loop {
            count = count.wrapping_add(1);
            if count % 1024 == 0 {
                control.reader_beat();
            }
            if count % 1024 == 1 && last_gauges.is_none_or(|l| l.elapsed() >= GAUGE_INTERVAL) {
                last_gauges = Some(Instant::now());
                self.refresh_gauges();
            }
            let got = pending || self.reader.next(&mut entry).map_err(retry)?;
            pending = false;
            if got && self.commit_on_idle {
                last_entry = Instant::now();
                fresh = true;
            }
            if got && !filtered {
                if let Some(gap) = gaps.check(&entry.cursor) {
                    report_gap(cfg, metrics, &mut gaps, gap, &entry.cursor);
                }
            }
            if got {
                read += 1;
                account.observe(&entry);
            }
            if got {
                let handed = match skipped(cfg, &own, selection.as_ref(), &entry) {
                    Some(counter) => {
                        Metrics::add(counter(metrics), 1);
                        out.pass(entry.cursor.clone())
                    }
                    None => out.ship(&mut entry),
                };
                if !handed {
                    return Ok(());
                }
                continue;
            }
            // The end of the journal, for now: what is gathered goes before any wait.
            if !out.flush() {
                return Ok(());
            }
            control.reader_beat();
            let quiet = read_at_last_end == read;
            account.idle(quiet);
            if !quiet {
                last_read = Instant::now();
            }
            read_at_last_end = read;
            if last_gauges.is_none_or(|l| l.elapsed() >= GAUGE_INTERVAL) {
                last_gauges = Some(Instant::now());
                self.refresh_gauges();
                self.forget_gone();
            }
            if filtered && last_pass.elapsed() >= pass_interval {
                last_pass = Instant::now();
                // Take the newest position first, then make sure no matching entry arrived
                // before it: only then may the watermark move past the filtered entries.
                let newest = self.reader.newest_cursors().map_err(retry)?;
                self.reader.wait(Duration::ZERO).map_err(retry)?;
                if self.reader.next(&mut entry).map_err(retry)? {
                    pending = true;
                    continue;
                }
                for n in &newest {
                    if !passed.contains(n) && !out.pass(n.clone()) {
                        return Ok(());
                    }
                }
                passed = newest;
            }
            if control.status().is_err() {
                return Ok(());
            }
            if self.commit_on_idle {
                // A writer still in the middle of a burst leaves the end of the journal for
                // a moment between entries: wait for a short quiet spell before committing,
                // or a trickle turns into one small transaction per entry.
                let quiet = last_entry.elapsed();
                if fresh && quiet < QUIET_BEFORE_COMMIT {
                    self.reader
                        .wait(QUIET_BEFORE_COMMIT - quiet)
                        .map_err(retry)?;
                    continue;
                }
                fresh = false;
                if !out.idle() {
                    return Ok(());
                }
            }
            let wait = if last_read.elapsed() < FOLLOW_QUIET {
                FOLLOW_POLL
            } else {
                Duration::from_millis(250)
            };
            self.reader.wait(wait).map_err(retry)?;
        }
    }
}

/// Notices entries that vanished under the reader: within one sequence-number space,
/// consecutive entries of an unfiltered read have consecutive numbers, so a jump means
/// entries were deleted (vacuumed, or their file removed) before we could read them, or sit
/// in files we may not read. They cannot be shipped any more; the reader says so.
#[derive(Default)]
struct GapDetector {
    /// Last sequence number seen per sequence-number space (few: one per writer).
    last: Vec<(String, u64)>,
    reported: u32,
}

impl GapDetector {
    /// The number of entries missing right before `cursor`, if any.
    fn check(&mut self, cursor: &str) -> Option<u64> {
        let (id, n) = journal::cursor::seqnum(cursor)?;
        match self.last.iter_mut().find(|(i, _)| i == id) {
            Some((_, last)) => {
                let gap = (n > *last + 1).then(|| n - *last - 1);
                *last = n;
                gap
            }
            None => {
                self.last.push((id.to_string(), n));
                None
            }
        }
    }
}

/// For `check`: opens everything the agent needs and says what `run` would do.
pub(crate) fn describe_start(cfg: &Config, cursor: Option<&str>) -> anyhow::Result<String> {
    let mut reader = Reader::open(&cfg.journal)?;
    let usage = reader.usage().unwrap_or(0);
    let placed = reader.seek(&cfg.journal, cursor)?;
    let mut entry = Entry::new();
    let next = if reader.next(&mut entry)? {
        format!("the next entry to ship is {}", entry.cursor)
    } else {
        "the journal has nothing new to ship yet; the agent will wait for entries".to_string()
    };
    let describe = |p: &Position| match p {
        Position::AfterCursor => "resume right after the saved cursor".to_string(),
        Position::AfterFilteredCursor => {
            "resume at the first matching entry after the saved cursor".to_string()
        }
        Position::NewWriter => "read a writer not seen before from its oldest entry".to_string(),
        Position::WriterGone => format!(
            "forget a saved writer whose files are all gone; policy journal.cursor_lost = {:?}",
            cfg.journal.cursor_lost
        ),
        Position::Start(s) => format!("start at {s:?} (no saved cursor)"),
        Position::CursorLost { gap, .. } => format!(
            "the saved cursor is gone from the journal ({} entries missed); policy journal.cursor_lost = {:?}",
            gap.map_or("unknown".to_string(), |g| g.to_string()),
            cfg.journal.cursor_lost
        ),
    };
    let what = match placed.as_slice() {
        [one] => describe(&one.position),
        many => {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for p in many {
                let d = describe(&p.position);
                match counts.iter_mut().find(|(k, _)| *k == d) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((d, 1)),
                }
            }
            let parts: Vec<String> = counts
                .into_iter()
                .map(|(d, n)| format!("{n} writer(s): {d}"))
                .collect();
            format!("read {} writers ({})", many.len(), parts.join("; "))
        }
    };
    Ok(format!(
        "{} ({} MiB on disk): will {what}; {next}",
        cfg.journal.source,
        usage >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(id: &str, n: u64) -> String {
        format!("s={id};i={n:x};b=9f8e7d6c5b4a39281706f5e4d3c2b1a0;m=1;t=1;x=1")
    }

    #[test]
    fn gaps_are_counted_per_sequence_space() {
        let a = "0e7a5b6d4c3b4a29a1b2c3d4e5f60718";
        let b = "1e7a5b6d4c3b4a29a1b2c3d4e5f60718";
        let mut g = GapDetector::default();
        assert_eq!(g.check(&cursor(a, 1)), None);
        assert_eq!(g.check(&cursor(a, 2)), None);
        // Another writer's numbers are their own: no gap across spaces.
        assert_eq!(g.check(&cursor(b, 100)), None);
        assert_eq!(g.check(&cursor(a, 7)), Some(4));
        assert_eq!(g.check(&cursor(b, 101)), None);
        // Going back (a merged file of older entries) is not a gap.
        assert_eq!(g.check(&cursor(a, 3)), None);
        assert_eq!(g.check(&cursor(a, 4)), None);
        assert_eq!(g.check("not a cursor"), None);
    }
}
