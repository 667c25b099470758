//! Reading a journal file: in place from a mapping of it, or through `pread` into a few
//! cached blocks.
//!
//! journald appends to its files through a shared map and may truncate an archived file
//! under a reader (systemd 252's archive truncation, systemd#24320): a reader that maps the
//! file dies of SIGBUS when it touches a page that went away. The mapping here is watched by
//! `map`'s guard, which puts zeros where the page was; the window touches a read's pages
//! before handing them out and, when one faulted, drops the mapping for good and reads that
//! file through `pread`, which sees the real end (a truncated file is an error on one
//! object, never a signal). Bytes past the arena the file had at its last refresh, the
//! header, and files that cannot be mapped (`map`'s limits) go through the blocks too; a
//! system call per block, not per object: entries, their arrays and most of their data
//! objects sit close together at the end of the file.
//!
//! A live file changes under its cached blocks in two ways: objects are appended after the
//! end the blocks saw, and the writer links new entries into entry arrays written before
//! (an item, or the next-array pointer, goes from zero to an offset, once). An object that
//! starts before the header's `tail_object_offset` is complete and never changes in the
//! bytes read here (DATA payloads, ENTRY objects; a DATA object's link fields change but
//! are not read). So when the file grows, a block is read again only for bytes that were
//! not settled when it was read ([`Window::read`]), or for a link that was still zero
//! ([`Window::read_fresh`]): following a live file costs a read of the new bytes, not of
//! every cached block at each poll (`pread` was 9.6 % of the agent's CPU at 10,000
//! entries/s with every block dropped at each poll, 6.6 % with this).
//!
//! Owns the descriptor, the mapping and the block buffers. Must never hand out bytes it did
//! not read from the file (a mapped page that faulted is never handed out as the file's),
//! nor read more than it was asked for plus one block: every length comes from a file and
//! is checked by the caller against the file's size first.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::map::Map;

/// Bytes per cached block. Measured on the benchmark journal (1M entries, 17 fields):
/// 64 KiB blocks read each region once; larger blocks only copy more.
const BLOCK: u64 = 64 * 1024;

/// Bytes of a mapping a window may have touched before it lets their pages go
/// (`Map::release`), counted as each read's length and a page more, so overcounted:
/// the bench journal read sequentially keeps ~2 MiB resident (peak RSS of
/// `examples/reader_scan` 13.8 MiB through `pread`, 16.2 MiB mapped), where without
/// letting go it kept all it read (754 MiB). At 8 MiB the pages came back so often that
/// the mapping cost more CPU than `pread`; at 32 MiB it saved half of what 128 MiB saves.
const RESIDENT: usize = 128 << 20;

/// A page's size, or more (for counting what a read touches).
const PAGE_BOUND: usize = 4096;

/// Blocks kept: the entry arrays' block, the entries' block, and data objects shared by
/// many entries (host name, unit, boot id) which live wherever they were first written.
const SLOTS: usize = 8;

struct Slot {
    /// Block number, or `u64::MAX` for an empty slot.
    block: u64,
    /// Bytes of the block the file had when it was read (short at the end of the file).
    data: Vec<u8>,
    /// When it was last used, for replacing the least recently used slot.
    used: u64,
    /// The window's generation and settled offset when the block was read.
    generation: u64,
    settled: u64,
}

pub(super) struct Window {
    file: File,
    /// The file mapped up to its size at the last [`sized`](Self::sized) (`map`'s guard):
    /// bytes inside it are read in place, bytes past it through the blocks.
    map: Option<Map>,
    /// Cleared for good once the mapping faulted (the file was cut under it).
    mapping: bool,
    /// Bytes of the mapping touched (at most) since its pages were last let go.
    touched: usize,
    slots: Vec<Slot>,
    clock: u64,
    /// The slot used last.
    last: usize,
    /// Objects that cross a block boundary or are larger than a block: read whole, here.
    span: Vec<u8>,
    /// Counts the times the file grew; a block read in an earlier generation may miss
    /// what was appended or linked since.
    generation: u64,
    /// Bytes below this offset were complete when the current generation began.
    settled: u64,
    /// The tail the file's header showed last.
    tail: u64,
}

impl Window {
    /// A window reading through the blocks until [`sized`](Self::sized) maps the file.
    pub(super) fn new(file: File) -> Window {
        Window {
            file,
            map: None,
            mapping: true,
            touched: 0,
            slots: Vec::new(),
            clock: 0,
            last: 0,
            span: Vec::new(),
            generation: 0,
            settled: 0,
            tail: 0,
        }
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Gives back the memory of a large object once a small one is read: every open file
    /// has a window, and a hostile file must not leave each holding its largest payload.
    fn keep_span_small(&mut self, len: usize) {
        if self.span.capacity() > 2 * BLOCK as usize && len <= 2 * BLOCK as usize {
            self.span = Vec::new();
        }
    }

    /// The file grew: objects before `tail` (the header's `tail_object_offset`) are
    /// complete. Blocks read before are kept; [`read`](Self::read) reads one again when it
    /// is asked for bytes that were not settled then.
    pub(super) fn grew(&mut self, tail: u64) {
        self.generation += 1;
        let previous = std::mem::replace(&mut self.tail, tail);
        // x86 makes the writer's stores visible in the order it made them, so the tail it
        // published follows complete objects. A weakly ordered CPU (systemd fences only
        // before linking an entry) may show the tail before an object's bytes: there, only
        // the tail seen one refresh earlier is trusted.
        self.settled = if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
            tail
        } else {
            previous
        };
    }

    /// The file has `size` bytes now: maps them (again, when the size changed), unless a
    /// mapping of this file faulted before. A file that cannot be mapped is read through
    /// the blocks.
    pub(super) fn sized(&mut self, size: u64) {
        if self.map.as_ref().is_some_and(Map::faulted) {
            self.mapping = false;
        }
        if !self.mapping {
            self.map = None;
            return;
        }
        if self.map.as_ref().is_some_and(|m| m.len() as u64 == size) {
            return;
        }
        // The old mapping goes first: the new one may take its slot.
        self.map = None;
        self.map = Map::new(&self.file, size);
    }

    /// Whether `len` bytes at `offset` can be read from the mapping. A mapping that faulted
    /// is dropped here, and the file is read through the blocks from then on: they see the
    /// file's real end, where the mapping saw zeros.
    fn mapped(&mut self, offset: u64, len: usize) -> bool {
        let Some(m) = &self.map else {
            return false;
        };
        if len == 0 || m.get(offset, len).is_none() {
            return false;
        }
        // Counted (and maybe let go) before the check: pages let go after it would fault
        // back in during the caller's copy, when a cut can no longer be told.
        self.used(len);
        let Some(m) = &self.map else {
            return false;
        };
        if !m.intact(offset, len) {
            self.map = None;
            self.mapping = false;
            return false;
        }
        true
    }

    /// Counts the faults of this file's mapping (a cut under it), seen or not yet seen by
    /// the window: a caller that read mapped bytes compares it before and after, since a
    /// cut between the window's check and its copy leaves the guard's zeros in the copy.
    pub(super) fn cuts(&self) -> u32 {
        u32::from(!self.mapping) + u32::from(self.map.as_ref().is_some_and(Map::faulted))
    }

    /// Counts `len` bytes read from the mapping (a read touches about its length and a page
    /// more) and lets the pages go once they add up to [`RESIDENT`].
    pub(super) fn used(&mut self, len: usize) {
        self.touched = self.touched.saturating_add(len + PAGE_BOUND);
        if self.touched > RESIDENT {
            self.touched = 0;
            if let Some(m) = &self.map {
                m.release();
            }
        }
    }

    /// Forgets every cached block: the file was rewritten in place, not appended to.
    pub(super) fn forget(&mut self) {
        for s in &mut self.slots {
            s.block = u64::MAX;
        }
    }

    /// At least `min` bytes at `offset`, and as many more as its block or the mapping holds
    /// (up to `max`): an object's header, and whether the rest lies there too.
    pub(super) fn read_up_to(&mut self, offset: u64, min: usize, max: usize) -> io::Result<&[u8]> {
        // From the mapping: up to the end of the last page the check touched, so every byte
        // handed out was checked. Counted as `min`: a caller that uses more counts it
        // (`used`), and one that stops at the header (a bad object) has touched its page.
        if self.mapped(offset, min) {
            let m = self.map.as_ref().expect("mapped");
            let page = super::map::page();
            let checked = ((offset as usize + min - 1) / page + 1) * page;
            let end = checked
                .min(m.len())
                .min((offset as usize).saturating_add(max.max(min)));
            return Ok(m.get(offset, end - offset as usize).expect("inside"));
        }
        if min == 0 || BLOCK - offset % BLOCK < min as u64 {
            return self.read(offset, min);
        }
        // Loads the block (or fails if the file ends before `min`); it is the last used.
        self.read(offset, min)?;
        let s = &self.slots[self.last];
        let start = (offset % BLOCK) as usize;
        let end = start.saturating_add(max.max(min)).min(s.data.len());
        Ok(&s.data[start..end])
    }

    /// `len` bytes at `offset` as the file holds them now, bypassing the blocks: for the
    /// header, which the writer rewrites in place with every entry.
    pub(super) fn read_now(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        self.keep_span_small(len);
        self.span.clear();
        self.span.resize(len, 0);
        read_exact_at(&self.file, &mut self.span, offset)?;
        Ok(&self.span)
    }

    /// Appends `len` bytes at `offset` to `out`: from a cached block when they lie in one,
    /// else read straight into `out` (a large field is copied once, not twice).
    pub(super) fn append_to(
        &mut self,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        if self.mapped(offset, len) {
            out.extend_from_slice(
                self.map
                    .as_ref()
                    .and_then(|m| m.get(offset, len))
                    .expect("mapped"),
            );
            return Ok(());
        }
        if len as u64 <= BLOCK {
            let start = out.len();
            let first = len.min((BLOCK - offset % BLOCK) as usize);
            let r = self.read(offset, first).map(|b| out.extend_from_slice(b));
            let r = r.and_then(|()| match len - first {
                0 => Ok(()),
                rest => self
                    .read(offset + first as u64, rest)
                    .map(|b| out.extend_from_slice(b)),
            });
            if r.is_err() {
                out.truncate(start);
            }
            return r;
        }
        let start = out.len();
        out.resize(start + len, 0);
        let r = read_exact_at(&self.file, &mut out[start..], offset);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    /// `len` bytes at `offset`, or an `UnexpectedEof` error when the file ends before them
    /// (truncated, or a hostile offset the caller's bounds did not catch).
    pub(super) fn read(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        self.read_block(offset, len, false)
    }

    /// [`read`](Self::read), for a link the writer fills in after the object was written
    /// (an entry-array item or next pointer) that a cached block showed as zero: the block
    /// is read again if the file grew since it was read.
    pub(super) fn read_fresh(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        self.read_block(offset, len, true)
    }

    fn read_block(&mut self, offset: u64, len: usize, fresh: bool) -> io::Result<&[u8]> {
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "offset overflows"))?;
        if self.mapped(offset, len) {
            return Ok(self
                .map
                .as_ref()
                .and_then(|m| m.get(offset, len))
                .expect("mapped"));
        }
        let block = offset / BLOCK;
        if len > 0 && len as u64 <= BLOCK && (end - 1) / BLOCK == block + 1 {
            // A small object across a boundary, from the two blocks: a data object shared
            // by every entry of a unit that happens to straddle one was otherwise read
            // with its own `pread` for each of those entries (66 % of the reader's
            // `pread`s on the benchmark journal).
            let first = ((block + 1) * BLOCK - offset) as usize;
            self.keep_span_small(len);
            let mut span = std::mem::take(&mut self.span);
            span.clear();
            let r = self
                .read_block(offset, first, fresh)
                .map(|b| span.extend_from_slice(b))
                .and_then(|()| {
                    self.read_block(offset + first as u64, len - first, fresh)
                        .map(|b| span.extend_from_slice(b))
                });
            self.span = span;
            r?;
            return Ok(&self.span);
        }
        if len as u64 > BLOCK || (end - 1) / BLOCK != block || len == 0 {
            self.keep_span_small(len);
            self.span.clear();
            self.span.resize(len, 0);
            read_exact_at(&self.file, &mut self.span, offset)?;
            return Ok(&self.span);
        }
        self.clock += 1;
        // Most reads hit the block read last (an entry's fields sit together).
        let last = self.last;
        let found = if self.slots.get(last).is_some_and(|s| s.block == block) {
            Some(last)
        } else {
            self.slots.iter().position(|s| s.block == block)
        };
        let i = match found {
            Some(i) => i,
            None if self.slots.len() < SLOTS => {
                self.slots.push(Slot {
                    block: u64::MAX,
                    data: vec![0; BLOCK as usize],
                    used: 0,
                    generation: 0,
                    settled: 0,
                });
                self.slots.len() - 1
            }
            None => (0..SLOTS)
                .min_by_key(|&i| self.slots[i].used)
                .expect("SLOTS > 0"),
        };
        self.last = i;
        let (generation, settled) = (self.generation, self.settled);
        let s = &mut self.slots[i];
        s.used = self.clock;
        let start = (offset - block * BLOCK) as usize;
        // The block was read when the file was shorter, or the file ends here (a block is
        // never trusted past what it holds), or the bytes asked for were not settled when
        // it was read and the file grew since: read it again once before failing.
        let stale = (end > s.settled || fresh) && s.generation != generation;
        if found.is_none() || stale || start + len > s.data.len() {
            // Empty until the read succeeds: a failed read leaves no half-filled block.
            s.block = u64::MAX;
            s.data.resize(BLOCK as usize, 0);
            let got = read_some_at(&self.file, &mut s.data, block * BLOCK)?;
            s.data.truncate(got);
            s.block = block;
            s.generation = generation;
            s.settled = settled;
            if start + len > s.data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ends before offset {end}"),
                ));
            }
        }
        Ok(&s.data[start..start + len])
    }
}

/// Reads as much of `buf` as the file has at `offset`.
fn read_some_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(test)]
    tests::READS.with(|r| r.set(r.get() + 1));
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let got = read_some_at(f, buf, offset)?;
    if got < buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file ends before offset {}", offset + buf.len() as u64),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    thread_local! {
        /// Reads of the file made by this thread's windows (each test has its thread).
        pub(super) static READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn reads() -> u64 {
        READS.with(std::cell::Cell::get)
    }

    /// A small object across a block boundary comes from the two cached blocks: one read
    /// per block, not one per use (a shared data object straddling a boundary was read
    /// again for every entry that points at it).
    #[test]
    fn a_small_object_across_a_boundary_is_served_from_the_blocks() {
        let mut f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..(2 * BLOCK as usize + 10))
            .map(|i| (i * 7) as u8)
            .collect();
        f.write_all(&bytes).unwrap();
        let b = BLOCK as usize;
        let mut w = Window::new(f);
        let before = reads();
        for _ in 0..3 {
            assert_eq!(w.read(BLOCK - 3, 40).unwrap(), &bytes[b - 3..b + 37]);
            assert_eq!(w.read_fresh(BLOCK - 1, 2).unwrap(), &bytes[b - 1..b + 1]);
            let mut out = vec![9];
            w.append_to(BLOCK - 20, 25, &mut out).unwrap();
            assert_eq!(out[0], 9);
            assert_eq!(&out[1..], &bytes[b - 20..b + 5]);
            assert_eq!(
                w.read_up_to(BLOCK - 2, 4, 100).unwrap(),
                &bytes[b - 2..b + 2]
            );
        }
        assert_eq!(reads() - before, 2, "the two blocks, once each");
        // Up to a whole block across a boundary, still from the blocks.
        assert_eq!(w.read(BLOCK / 2, b).unwrap(), &bytes[b / 2..b / 2 + b]);
        assert_eq!(reads() - before, 2);
        // The second part past the end of the file: an error, and nothing appended.
        let mut out = vec![1, 2];
        let e = w.append_to(2 * BLOCK + 5, 0, &mut out);
        assert!(e.is_ok() && out == [1, 2]);
        let e = w.read(2 * BLOCK - 4, 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = w.append_to(2 * BLOCK - 4, 20, &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(out, [1, 2], "a failed append leaves nothing behind");
        // Larger than a block: read straight, as before.
        assert_eq!(w.read(10, b + 10).unwrap(), &bytes[10..b + 20]);
    }

    /// A mapped file is read in place; cut under the mapping, the window never hands out
    /// the guard's zeros as the file's bytes: it goes back to `pread`, which sees the end.
    #[test]
    fn a_mapped_file_cut_under_the_window_is_read_through_pread_after() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..(3 * BLOCK as usize)).map(|i| (i % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        f.flush().unwrap();
        let b = BLOCK as usize;
        let mut w = Window::new(f.reopen().unwrap());
        w.sized(3 * BLOCK);
        let before = reads();
        assert_eq!(w.read(10, 5).unwrap(), &bytes[10..15]);
        assert_eq!(w.read(BLOCK - 3, 40).unwrap(), &bytes[b - 3..b + 37]);
        assert_eq!(w.read_up_to(20, 4, 10).unwrap(), &bytes[20..30]);
        // No further than the page the check touched: every byte handed out was checked.
        assert_eq!(
            w.read_up_to(20, 4, usize::MAX).unwrap(),
            &bytes[20..PAGE_BOUND]
        );
        let mut out = Vec::new();
        w.append_to(BLOCK / 2, 2 * b, &mut out).unwrap();
        assert_eq!(out, &bytes[b / 2..b / 2 + 2 * b]);
        assert_eq!(reads(), before, "all in place");
        f.as_file().set_len(BLOCK).unwrap();
        // The window touches the pages before handing them out: the cut shows now, and the
        // read goes to `pread`, which sees the real end (not the guard's zeros).
        let e = w.read(2 * BLOCK + 100, 8).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "the real end");
        assert_eq!(w.read(10, 5).unwrap(), &bytes[10..15]);
        assert!(reads() > before, "through pread now");
        w.sized(BLOCK);
        assert!(w.map.is_none(), "a file cut once is not mapped again");
    }

    /// The second half of a crossing object that was not settled when its block was read
    /// is read again once the file grew, like any other unsettled bytes.
    #[test]
    fn an_object_across_a_boundary_of_a_growing_file_is_read_as_it_is_now() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(2 * BLOCK).unwrap();
        let at = |o: u64, b: &[u8]| f.as_file().write_all_at(b, o).unwrap();
        at(BLOCK - 8, &[1; 8]);
        let mut w = Window::new(f.reopen().unwrap());
        w.grew(BLOCK);
        assert_eq!(w.read(BLOCK - 8, 16).unwrap(), [[1; 8], [0; 8]].concat());
        at(BLOCK, &[2; 8]);
        w.grew(BLOCK + 64);
        assert_eq!(w.read(BLOCK - 8, 16).unwrap(), [[1; 8], [2; 8]].concat());
    }

    #[test]
    fn reads_within_across_and_past_blocks() {
        let mut f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..(3 * BLOCK as usize + 100)).map(|i| i as u8).collect();
        f.write_all(&bytes).unwrap();
        let mut w = Window::new(f);
        assert_eq!(w.read(10, 5).unwrap(), &bytes[10..15]);
        let b = BLOCK as usize;
        assert_eq!(w.read(BLOCK - 3, 6).unwrap(), &bytes[b - 3..b + 3]);
        assert_eq!(w.read(0, 2 * b).unwrap(), &bytes[..2 * b]);
        assert_eq!(
            w.read(3 * BLOCK + 90, 10).unwrap(),
            &bytes[3 * b + 90..3 * b + 100]
        );
        let e = w.read(3 * BLOCK + 95, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(w.read(u64::MAX - 2, 10).is_err());
    }

    #[test]
    fn a_file_that_grows_or_shrinks_is_read_as_it_is_now() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[1; 100]).unwrap();
        let mut w = Window::new(f.reopen().unwrap());
        assert!(w.read(100, 8).is_err());
        f.write_all(&[2; 100]).unwrap();
        f.flush().unwrap();
        // The block read short before is read again rather than trusted.
        assert_eq!(w.read(100, 8).unwrap(), &[2; 8]);
        f.as_file().set_len(50).unwrap();
        w.grew(0);
        assert!(
            w.read(60, 8).is_err(),
            "truncated: an error, never a signal"
        );
        assert_eq!(w.read(0, 8).unwrap(), &[1; 8]);
    }

    /// A writer's two kinds of change: an object appended where a cached block saw the
    /// preallocated zeros, and a link filled in, once, inside an object written before.
    #[test]
    fn a_growing_file_is_read_again_only_where_it_can_have_changed() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(BLOCK).unwrap();
        let at = |o: u64, b: &[u8]| f.as_file().write_all_at(b, o).unwrap();
        at(0, &[1; 100]);
        let mut w = Window::new(f.reopen().unwrap());
        w.grew(100);
        assert_eq!(w.read(0, 8).unwrap(), &[1; 8]);
        assert_eq!(w.read(200, 8).unwrap(), &[0; 8], "not written yet");
        // Appended, and a link (at 104, settled) filled in.
        at(200, &[2; 100]);
        at(104, &[3; 8]);
        assert_eq!(
            w.read(200, 8).unwrap(),
            &[0; 8],
            "the file did not say it grew: the block stands"
        );
        w.grew(300);
        assert_eq!(w.read(200, 8).unwrap(), &[2; 8], "unsettled when read");
        assert_eq!(
            w.read(104, 8).unwrap(),
            &[3; 8],
            "the block was read again just now"
        );
        // Settled bytes are served from the block; a zero link is looked at again once.
        at(112, &[4; 8]);
        at(120, &[5; 8]);
        w.grew(400);
        assert_eq!(w.read(112, 8).unwrap(), &[0; 8], "settled: no read");
        assert_eq!(w.read_fresh(112, 8).unwrap(), &[4; 8]);
        at(128, &[6; 8]);
        assert_eq!(
            w.read_fresh(128, 8).unwrap(),
            &[0; 8],
            "read in this generation: as fresh as the header"
        );
        assert_eq!(w.read(120, 8).unwrap(), &[5; 8]);
    }
}
