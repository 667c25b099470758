//! The native journal reader: journal files mapped (or read with `pread`) and parsed here,
//! without libsystemd, for the same entries, fields, order and cursors at a fraction of the
//! cost.
//!
//! libsystemd's reader (`journal.reader = "libsystemd"`) stays the reference: the test
//! suite reads every kind of journal with both and compares them field by field. Why the
//! agent reads files itself is in docs/design.md ("Reading journal files").
//!
//! Owns a set of open journal files, the position among them and, for a whole source (the
//! local journal, a namespace), the directories it lists and watches. Must never trust a
//! number from a file (`file`), never stop at an entry or field it cannot read (it skips
//! and counts, as the libsystemd path does), and never decide what is safe to skip past a
//! cursor: like libsystemd it reports where it landed and leaves the policy to the caller.
//!
//! | part | what |
//! |---|---|
//! | `window` | the file's bytes: in place from a mapping, or `pread` into cached blocks; a truncated file is an error, never a death |
//! | `map` | the mappings and the SIGBUS guard that lets a file be cut under one; every `unsafe` of the reader |
//! | `file` | one file: header, entry-array chain, entries, DATA objects, cursors, order |
//! | `compress` | XZ, LZ4, ZSTD payloads, bounded |
//! | `filter` | the journal matches evaluated on an entry's fields |
//!
//! Threads: a `NativeJournal` lives on the reader thread, as the sd-journal handle does.

mod compress;
mod file;
mod filter;
mod map;
mod window;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use super::Entry;
use super::cursor;
use super::watch::Watch;
use crate::config::Filter;
use compress::Decompressor;
use file::{JournalFile, Key};
use filter::Matches;

/// Where reading starts, once sought.
struct Slot {
    f: JournalFile,
    /// The index of the next entry this file may return.
    next: u64,
    /// The key of entry `next`, read already (None: not read yet).
    head: Option<Key>,
}

/// What a whole source lists: the directories to watch (the roots, so that a machine
/// directory created later is seen, and the machine directories that exist) and the
/// journal files in them now. An error means "cannot tell now", never "nothing".
pub(super) type Listing = Box<dyn Fn() -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> + Send>;

/// A whole source's files: how to list them and the watch on their directories.
struct Dirs {
    list: Listing,
    watch: Watch,
    rescan: bool,
}

impl Dirs {
    /// Takes the watch's news: a listing to do when files came, went or were renamed, or
    /// when events were lost. Appends are read by the refresh of the files' headers.
    fn note_changes(&mut self) {
        if let Ok(c) = self.watch.take() {
            if c.listing || c.overflow || !c.created.is_empty() {
                self.rescan = true;
            }
        }
    }
}

/// Counts of what the reader stepped over.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Skipped {
    pub corrupt_fields: u64,
    pub unreadable_entries: u64,
}

pub(super) struct NativeJournal {
    slots: Vec<Slot>,
    dirs: Option<Dirs>,
    matches: Option<Matches>,
    /// The entry stood on, its fields read into `staged`, and its slot and index.
    current: Option<Key>,
    at: Option<(usize, u64)>,
    staged: Entry,
    damaged: Option<String>,
    /// The last boot id and its text: consecutive entries share it.
    boot: ([u8; 16], String),
    z: Decompressor,
    pub(super) skipped: Skipped,
    /// Files that could not be opened, with why (each logged once) and their size and
    /// modification time then: tried again when those change.
    refused: Vec<(PathBuf, String, Option<Stamp>)>,
}

impl NativeJournal {
    /// Opens `files` (a writer's files, or an explicit set). A file that cannot be opened
    /// is left out and named in `refused`; none opening at all is an error.
    pub(super) fn open_files(files: &[PathBuf], filter: Option<&Filter>) -> Result<NativeJournal> {
        let mut j = NativeJournal::empty(filter);
        for p in files {
            j.add(p.clone())?;
        }
        if j.slots.is_empty() && !files.is_empty() {
            let why = j
                .refused
                .first()
                .map(|(p, e, _)| format!("{}: {e}", p.display()));
            return Err(anyhow!(
                "none of the journal files {files:?} can be opened ({})",
                why.unwrap_or_default()
            ));
        }
        Ok(j)
    }

    /// Opens every file `list` names now, and watches its directories for files to come.
    pub(super) fn open_dirs(list: Listing, filter: Option<&Filter>) -> Result<NativeJournal> {
        let (dirs, files) = list().context("cannot list the journal directories")?;
        let watch = Watch::new(&dirs)
            .with_context(|| format!("cannot watch the journal directories {dirs:?}"))?;
        let mut j = NativeJournal::empty(filter);
        for p in files {
            j.add(p)?;
        }
        j.dirs = Some(Dirs {
            list,
            watch,
            rescan: false,
        });
        Ok(j)
    }

    fn empty(filter: Option<&Filter>) -> NativeJournal {
        NativeJournal {
            slots: Vec::new(),
            dirs: None,
            matches: filter.and_then(Matches::compile),
            current: None,
            at: None,
            staged: Entry::new(),
            damaged: None,
            boot: ([0; 16], String::new()),
            z: Decompressor::new(),
            skipped: Skipped::default(),
            refused: Vec::new(),
        }
    }

    /// Adds a file, placed after the entry stood on (a file that appears while reading). A
    /// file that cannot be read (yet: journald may be creating it, a copy may be under way)
    /// is remembered and tried again once it changes. Running out of descriptors is the
    /// caller's to handle, never a file left out.
    fn add(&mut self, p: PathBuf) -> std::io::Result<()> {
        match JournalFile::open(&p) {
            Ok(f) => {
                self.refused.retain(|(r, _, _)| r != &p);
                if self.slots.iter().any(|s| s.f.dev_ino == f.dev_ino) {
                    return Ok(());
                }
                let mut s = Slot {
                    f,
                    next: 0,
                    head: None,
                };
                if let Some(k) = self.current {
                    place(&mut s, &k);
                    // Entries up to and including the one stood on were returned already.
                    while let Some(h) = head(&mut s, &mut self.skipped) {
                        if h.order(&k).is_gt() {
                            break;
                        }
                        s.next += 1;
                        s.head = None;
                    }
                }
                self.slots.push(s);
            }
            Err(e) if out_of_descriptors(&e) => return Err(e),
            Err(e) => {
                let stamp = stamp(&p);
                match self.refused.iter_mut().find(|(r, _, _)| r == &p) {
                    Some(r) => r.2 = stamp,
                    None => {
                        tracing::warn!(file = %p.display(), error = %e, "this journal file cannot be read (yet); reading the others and trying it again when it changes");
                        self.refused.push((p, e.to_string(), stamp));
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn paths(&self) -> Vec<PathBuf> {
        self.slots.iter().map(|s| s.f.path.clone()).collect()
    }

    /// After a seek: no entry is stood on (the next `next` may land on any entry placed).
    fn unplace(&mut self) {
        self.current = None;
        self.at = None;
    }

    pub(super) fn seek_head(&mut self) {
        for s in &mut self.slots {
            s.next = 0;
            s.head = None;
        }
        self.unplace();
    }

    pub(super) fn seek_tail(&mut self) {
        self.refresh();
        for s in &mut self.slots {
            s.next = s.f.n_entries();
            s.head = None;
        }
        self.unplace();
    }

    /// At the first entry of each file at or after `usec` (files are bisected by time, as
    /// libsystemd does).
    pub(super) fn seek_realtime(&mut self, usec: u64) {
        for s in &mut self.slots {
            s.next = bisect(s, |k| k.realtime >= usec);
            s.head = None;
        }
        self.unplace();
    }

    /// At the cursor's entry, or where it would be: by sequence number in files of its
    /// writer, by time in others. The next `next` lands on it if it exists.
    pub(super) fn seek_cursor(&mut self, c: &str) -> Result<()> {
        let p = cursor::parts(c).map_err(|e| anyhow!("{e}"))?;
        let k = Key {
            seqnum_id: p.seqnum_id.unwrap_or_default(),
            seqnum: p.seqnum.unwrap_or(0),
            boot_id: p.boot_id.unwrap_or_default(),
            monotonic: p.monotonic.unwrap_or(0),
            realtime: p.realtime.unwrap_or(0),
            xor_hash: p.xor_hash.unwrap_or(0),
        };
        for s in &mut self.slots {
            place(s, &k);
        }
        self.unplace();
        Ok(())
    }

    /// Steps onto the next entry that passes the matches. Returns false at the end.
    pub(super) fn next(&mut self) -> bool {
        let mut refreshed = false;
        loop {
            let mut best: Option<(usize, Key)> = None;
            for i in 0..self.slots.len() {
                if let Some(h) = head(&mut self.slots[i], &mut self.skipped) {
                    if best.is_none_or(|(_, b)| h.order(&b).is_lt()) {
                        best = Some((i, h));
                    }
                }
            }
            let Some((i, k)) = best else {
                if refreshed || !self.refresh() {
                    return false;
                }
                refreshed = true;
                continue;
            };
            let s = &mut self.slots[i];
            let idx = s.next;
            s.next += 1;
            s.head = None;
            // libsystemd returns only entries after the one stood on: a copy of an entry in
            // a second file (same writer, same number) is returned once.
            if let Some(cur) = self.current {
                if !k.order(&cur).is_gt() {
                    continue;
                }
            }
            // Only an entry returned moves the place the duplicate rule compares with, as in
            // libsystemd: one the matches leave out does not.
            if self.stage_passes(i, idx) {
                self.current = Some(k);
                self.at = Some((i, idx));
                return true;
            }
        }
    }

    /// Reads entry `idx` of slot `i` into `staged`; whether it could be read and passes the
    /// matches.
    fn stage_passes(&mut self, i: usize, idx: u64) -> bool {
        let s = &mut self.slots[i];
        // Usually the entry was just read to compare it with the other files' heads.
        if !s.f.holds(idx) && s.f.entry(idx).is_err() {
            self.skipped.unreadable_entries += 1;
            return false;
        }
        self.staged.clear();
        let mut corrupt = 0;
        self.damaged = s.f.fields(&mut self.staged, &mut self.z, &mut corrupt);
        self.skipped.corrupt_fields += corrupt;
        self.matches
            .as_ref()
            .is_none_or(|m| m.accepts(&self.staged))
    }

    /// Steps back onto the entry before the one stood on (or, right after a seek, before
    /// the position) that passes the matches. Returns false if there is none.
    pub(super) fn previous(&mut self) -> bool {
        // `back[i]`: entries of file i from here on are after the one stood on.
        let mut back: Vec<u64> = self.slots.iter().map(|s| s.next).collect();
        if let (Some((i, idx)), Some(_)) = (self.at, self.current) {
            if i < back.len() {
                back[i] = idx;
            }
        }
        let cur = self.current;
        loop {
            let mut best: Option<(usize, u64, Key)> = None;
            for (i, s) in self.slots.iter_mut().enumerate() {
                while back[i] > 0 {
                    match s.f.entry(back[i] - 1) {
                        // Not before the entry stood on (its own, or a copy of it).
                        Ok(k) if cur.is_some_and(|c| !k.order(&c).is_lt()) => back[i] -= 1,
                        Ok(k) => {
                            if best.is_none_or(|(_, _, b)| k.order(&b).is_gt()) {
                                best = Some((i, back[i] - 1, k));
                            }
                            break;
                        }
                        Err(_) => {
                            self.skipped.unreadable_entries += 1;
                            back[i] -= 1;
                        }
                    }
                }
            }
            let Some((i, idx, k)) = best else {
                return false;
            };
            back[i] = idx;
            if self.stage_passes(i, idx) {
                // Going forward again returns what lies after this entry in every file.
                for (s, b) in self.slots.iter_mut().zip(&back) {
                    s.next = *b;
                    s.head = None;
                }
                self.slots[i].next = idx + 1;
                self.current = Some(k);
                self.at = Some((i, idx));
                return true;
            }
        }
    }

    /// Whether the entry stood on is the cursor's (every part the cursor has must match).
    pub(super) fn test_cursor(&self, c: &str) -> Result<bool> {
        let p = cursor::parts(c).map_err(|e| anyhow!("{e}"))?;
        let Some(k) = self.current else {
            return Err(anyhow!("the journal does not stand on an entry"));
        };
        Ok(p.seqnum_id.is_none_or(|v| v == k.seqnum_id)
            && p.seqnum.is_none_or(|v| v == k.seqnum)
            && p.boot_id.is_none_or(|v| v == k.boot_id)
            && p.monotonic.is_none_or(|v| v == k.monotonic)
            && p.realtime.is_none_or(|v| v == k.realtime)
            && p.xor_hash.is_none_or(|v| v == k.xor_hash))
    }

    pub(super) fn cursor(&self) -> Result<String> {
        let k = self
            .current
            .ok_or_else(|| anyhow!("the journal does not stand on an entry"))?;
        let mut s = String::with_capacity(128);
        k.cursor(&mut s);
        Ok(s)
    }

    pub(super) fn realtime(&self) -> Option<u64> {
        self.current.map(|k| k.realtime)
    }

    /// Hands the entry stood on to `entry` (buffers swapped, not copied; the staged entry
    /// was cleared before it was filled). Returns why some of its fields could not be read,
    /// if any.
    pub(super) fn take(&mut self, entry: &mut Entry) -> Result<Option<String>> {
        let k = self
            .current
            .ok_or_else(|| anyhow!("the journal does not stand on an entry"))?;
        std::mem::swap(entry, &mut self.staged);
        k.cursor(&mut entry.cursor);
        entry.realtime_usec = k.realtime;
        entry.monotonic_usec = k.monotonic;
        if self.boot.0 != k.boot_id || self.boot.1.is_empty() {
            self.boot.1.clear();
            file::hex(&mut self.boot.1, &k.boot_id);
            self.boot.0 = k.boot_id;
        }
        entry.boot_id.clear();
        entry.boot_id.push_str(&self.boot.1);
        // The caller marks the entry (one rule for both readers, `stream`).
        Ok(self.damaged.take())
    }

    /// Reads the headers of files that may still grow, and for a whole source lists its
    /// directories again when the watch said so. Returns whether anything may be new.
    fn refresh(&mut self) -> bool {
        let mut any = false;
        if let Some(d) = &mut self.dirs {
            d.note_changes();
        }
        // Headers first: a file deleted under us is judged by what it holds now.
        for s in &mut self.slots {
            // An archived file never changes again; a header that cannot be read now (the
            // file is being truncated or replaced) is read again at the next refresh.
            if !s.f.is_archived() && s.f.refresh().unwrap_or(false) {
                s.head = None;
                any = true;
            }
        }
        // Files refused before (being created, being copied) are tried again once they
        // change: their appends raise no listing event.
        let retry: Vec<PathBuf> = self
            .refused
            .iter()
            .filter(|(p, _, st)| stamp(p) != *st)
            .map(|(p, _, _)| p.clone())
            .collect();
        for p in retry {
            let n = self.slots.len();
            // Out of descriptors: tried again at the next refresh.
            let _ = self.add(p);
            any |= self.slots.len() > n;
        }
        if self.dirs.as_ref().is_some_and(|d| d.rescan) {
            let listed = (self.dirs.as_ref().expect("dirs").list)();
            // A listing that fails says nothing about which files are gone.
            let Ok((dirs, files)) = listed else {
                return any;
            };
            if let Some(d) = &mut self.dirs {
                d.rescan = false;
                for dir in &dirs {
                    // A directory that appeared since (journald's first flush to /var, a
                    // namespace started later); a failure is retried at the next listing.
                    if d.watch.add(dir).is_err() {
                        d.rescan = true;
                    }
                }
            }
            let mut ids = HashSet::new();
            let mut complete = true;
            for p in files {
                let Ok(m) = std::fs::metadata(&p) else {
                    continue;
                };
                let id = (m.dev(), m.ino());
                ids.insert(id);
                // A file renamed by a rotation keeps its descriptor and place.
                match self.slots.iter_mut().find(|s| s.f.dev_ino == id) {
                    Some(s) => s.f.path = p,
                    None => {
                        let n = self.slots.len();
                        if self.add(p).is_err() {
                            complete = false;
                        }
                        any |= self.slots.len() > n;
                    }
                }
            }
            // Files deleted are closed once read to their end: what they held is still read
            // from the open descriptor (unless the vacuum deallocated it).
            let before = self.slots.len();
            self.slots.retain(|s| {
                s.next < s.f.n_entries() || (ids.contains(&s.f.dev_ino) && s.f.is_linked())
            });
            if self.slots.len() != before {
                // Indices moved; `previous` finds its way back by the key alone.
                self.at = None;
            }
            if let Some(d) = &mut self.dirs {
                d.rescan |= !complete;
            }
        }
        any
    }

    /// Waits up to `timeout` for a change in the watched directories (a whole source).
    /// Returns whether something changed.
    pub(super) fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let Some(d) = &mut self.dirs else {
            std::thread::sleep(timeout);
            return Ok(true);
        };
        let changed = d
            .watch
            .wait(timeout)
            .map_err(|e| anyhow!("cannot wait for the journal's changes: {e}"))?;
        if changed {
            d.note_changes();
        }
        Ok(changed)
    }

    /// The oldest entry's time over the files, from their headers.
    pub(super) fn oldest_usec(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.f.n_entries() > 0)
            .map(|s| s.f.header.head_realtime)
            .min()
    }
}

/// The key of a slot's next entry, stepping over entries that cannot be read. An entry of a
/// file still being written that is counted but not linked yet, or lies past what the file
/// holds yet, ends the slot for now (it is read after the next refresh), never skipped.
fn head(s: &mut Slot, skipped: &mut Skipped) -> Option<Key> {
    if s.head.is_none() {
        while s.next < s.f.n_entries() {
            match s.f.entry(s.next) {
                Ok(k) => {
                    s.head = Some(k);
                    break;
                }
                Err(e) if file::not_yet(&e) && !s.f.is_archived() && s.f.is_linked() => {
                    return None;
                }
                Err(_) => {
                    skipped.unreadable_entries += 1;
                    s.next += 1;
                }
            }
        }
    }
    s.head
}

/// Places a slot at the first entry at or after `k`: by sequence number when the file is
/// of `k`'s writer, else by time, then back over entries that still order after `k` (wall
/// clock steps back at boot; libsystemd places by monotonic time within a boot).
fn place(s: &mut Slot, k: &Key) {
    let same = s.f.header.seqnum_id == k.seqnum_id;
    s.next = bisect(s, |e| {
        if same {
            e.seqnum >= k.seqnum
        } else {
            e.realtime >= k.realtime
        }
    });
    if !same {
        while s.next > 0 && s.f.entry(s.next - 1).is_ok_and(|e| e.order(k).is_gt()) {
            s.next -= 1;
        }
    }
    s.head = None;
}

/// The first index whose entry satisfies `at_or_after` (which must be monotone over the
/// file). An entry that cannot be read counts as after: landing early costs duplicates at
/// worst, landing late would pass entries over.
fn bisect(s: &mut Slot, at_or_after: impl Fn(&Key) -> bool) -> u64 {
    let (mut lo, mut hi) = (0, s.f.n_entries());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match s.f.entry(mid) {
            Ok(k) if !at_or_after(&k) => lo = mid + 1,
            _ => hi = mid,
        }
    }
    lo
}

/// Whether an error means the process ran out of descriptors (the caller's budget decides
/// then, not a file-by-file refusal).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(n) if n == libc::EMFILE || n == libc::ENFILE)
}

/// A file's size and modification time (seconds, nanoseconds).
type Stamp = (u64, i64, i64);

/// A file's size and modification time, to tell when a refused file changed.
fn stamp(p: &std::path::Path) -> Option<Stamp> {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.len(), m.mtime(), m.mtime_nsec()))
}
