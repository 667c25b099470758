//! One journal file read directly: its header, its entry-array chain (the entries in the
//! order the writer linked them) and an entry's DATA objects, as systemd's
//! `docs/JOURNAL_FILE_FORMAT.md` lays them out.
//!
//! Every number read from the file is a claim: an offset is used only once it lies inside
//! the file and is aligned, a size only once the object fits, a chain only while it moves
//! forward (objects are appended, so a link back is corruption and would loop). A file
//! that breaks a rule costs the entry or the field that relied on it, counted by the
//! caller, never a panic or a read outside the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::compress::{self, Decompressor, PastLimit};
use super::window::Window;
use crate::journal::Entry;
use crate::journal::header::{self, FileHeader};

/// The smallest header systemd ever wrote (through `tail_entry_monotonic`); a smaller one
/// claims a layout this reader does not know.
const HEADER_MIN: u64 = 208;

const INCOMPATIBLE_COMPACT: u32 = 1 << 4;
/// Compression (XZ, LZ4, ZSTD), keyed hash and compact: everything systemd defines today.
/// A file with another incompatible flag cannot be read correctly and is refused.
const INCOMPATIBLE_KNOWN: u32 = 0x1f;

const STATE_ARCHIVED: u8 = 2;

const OBJECT_DATA: u8 = 1;
const OBJECT_ENTRY: u8 = 3;
const OBJECT_ENTRY_ARRAY: u8 = 6;
const OBJECT_HEADER: u64 = 16;
const ENTRY_ITEMS: u64 = 64;
const ENTRY_ARRAY_ITEMS: u64 = 24;

/// libsystemd's bounds on an entry's timestamps (`VALID_REALTIME`, `VALID_MONOTONIC`).
const TIMESTAMP_LIMIT: u64 = 1 << 55;
/// The largest ENTRY object read: 65,536 regular items. journald writes at most 1,024
/// fields per entry; a larger claim is a damaged or hostile file.
const MAX_ENTRY_OBJECT: u64 = 1 << 20;
/// The largest field, decompressed: journald's own limit (`DATA_SIZE_MAX`).
pub(super) const MAX_FIELD: usize = 768 << 20;
/// The largest entry, its fields' `NAME=value` bytes together: journald's and
/// journal-remote's own limit (`ENTRY_SIZE_MAX`, 770 MiB), and 16 MiB for the fields journald
/// adds itself after its check (`_CMDLINE` and the other trusted fields). An entry's items
/// may point at one object over and over (65,536 items at a few KiB of ZSTD claiming 768 MiB
/// each): without this the entry grew to 4 GiB.
const MAX_ENTRY: usize = (770 + 16) << 20;
/// What reading one entry's objects may cost, in payload bytes read and bytes decompressed,
/// objects that fail or are not fields included: an entry journald wrote costs at most its
/// size in payloads plus as much decompressed. Past it the entry's other fields are left out
/// unread, so the work does not grow with the number of items pointing at one object.
const MAX_ENTRY_WORK: u64 = 2 * MAX_ENTRY as u64;

/// The entry cannot take more (`MAX_ENTRY`, `MAX_ENTRY_WORK`): its other fields are left out.
/// A type of its own, so no error from the file system is taken for it.
#[derive(Debug)]
struct EntryFull(&'static str);

impl std::fmt::Display for EntryFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for EntryFull {}

fn entry_full(why: &'static str) -> io::Error {
    io::Error::other(EntryFull(why))
}

const PAST_LARGEST: &str =
    "the entry's fields pass journald's largest entry (770 MiB, and 16 MiB for its own fields)";
const PAST_WORK: &str = "reading the entry's objects costs more than any entry journald writes (1,572 MiB read and decompressed)";

/// The facts of one entry that order it among others and make its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) seqnum_id: [u8; 16],
    pub(super) seqnum: u64,
    pub(super) boot_id: [u8; 16],
    pub(super) monotonic: u64,
    pub(super) realtime: u64,
    pub(super) xor_hash: u64,
}

/// One array of the entry-array chain: where it is, the index of its first item and how
/// many items it holds.
#[derive(Debug, Clone, Copy)]
struct Array {
    offset: u64,
    first: u64,
    capacity: u64,
}

pub(super) struct JournalFile {
    pub(super) path: PathBuf,
    pub(super) dev_ino: (u64, u64),
    win: Window,
    /// What the header said when last read, re-read whenever the reader reaches its end.
    pub(super) header: FileHeader,
    /// The end of the readable arena: the header's claim, cut to the file's real size.
    end: u64,
    compact: bool,
    /// The chain as far as it was followed.
    arrays: Vec<Array>,
    /// Entry item offsets of the entry read last (reused), and that entry's index.
    items: Vec<u64>,
    items_of: Option<u64>,
}

/// Whether an error may be a file still being written (an entry counted before it is
/// linked, or lying past what the file holds yet) rather than damage.
pub(super) fn not_yet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof
    )
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl JournalFile {
    pub(super) fn open(path: &Path) -> io::Result<JournalFile> {
        let file = File::open(path)?;
        let m = file.metadata()?;
        let mut f = JournalFile {
            path: path.to_path_buf(),
            dev_ino: (m.dev(), m.ino()),
            win: Window::new(file),
            header: FileHeader::default(),
            end: 0,
            compact: false,
            arrays: Vec::new(),
            items: Vec::new(),
            items_of: None,
        };
        f.refresh()?;
        Ok(f)
    }

    /// Reads the header again. Returns whether the file gained entries or objects; the
    /// window then reads again what may have changed since it cached it (`window`'s rule).
    /// A header that went back (fewer entries, an earlier tail, another writer's space, a
    /// shorter file) is a file rewritten in place, not appended to: nothing cached is kept.
    pub(super) fn refresh(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; header::READ];
        let got = self
            .win
            .read_now(0, header::READ)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => bad("shorter than a journal file header"),
                _ => e,
            })?;
        buf.copy_from_slice(got);
        let h = header::parse(&buf)
            .ok_or_else(|| bad("not a journal file (no signature, or a header too short)"))?;
        let unknown = h.incompatible_flags & !INCOMPATIBLE_KNOWN;
        if unknown != 0 {
            return Err(bad(format!(
                "uses incompatible features this reader does not know (flags {unknown:#x})"
            )));
        }
        if h.header_size < HEADER_MIN || h.header_size % 8 != 0 {
            return Err(bad(format!(
                "a header size of {} is not valid",
                h.header_size
            )));
        }
        let size = self.win.file().metadata()?.len();
        let old = &self.header;
        if old.header_size != 0
            && (h.n_entries < old.n_entries
                || h.tail_object_offset < old.tail_object_offset
                || h.seqnum_id != old.seqnum_id
                || h.header_size != old.header_size
                || size < self.end)
        {
            self.win.forget();
            self.arrays.clear();
        }
        let grew = h.n_entries != old.n_entries
            || h.arena_size != old.arena_size
            || h.tail_object_offset != old.tail_object_offset;
        if grew {
            self.win.grew(h.tail_object_offset);
        }
        let arena_end = h.header_size.saturating_add(h.arena_size);
        if self.header.header_size == 0 && arena_end > size {
            // Not opened yet, and shorter than its header says: being copied or cut short.
            // libsystemd refuses such a file too; it is tried again once it changes.
            return Err(bad(format!(
                "the header claims {arena_end} bytes and the file has {size}"
            )));
        }
        self.end = arena_end.min(size);
        // Mapped no further than the arena: what the reader reads, and no more of a sparse
        // file's claimed size than its header claims too.
        self.win.sized(self.end);
        self.compact = h.incompatible_flags & INCOMPATIBLE_COMPACT != 0;
        if h.entry_array_offset != self.header.entry_array_offset {
            self.arrays.clear();
        }
        self.header = h;
        Ok(grew)
    }

    /// Whether the file still has a name (a deleted file's descriptor may read zeros:
    /// systemd's vacuum deallocates what it deletes).
    pub(super) fn is_linked(&self) -> bool {
        self.win.file().metadata().is_ok_and(|m| m.nlink() > 0)
    }

    pub(super) fn n_entries(&self) -> u64 {
        self.header.n_entries
    }

    /// An archived file never changes again (short of being truncated or deleted).
    pub(super) fn is_archived(&self) -> bool {
        self.header.state == STATE_ARCHIVED
    }

    fn item_size(&self) -> u64 {
        if self.compact { 4 } else { 8 }
    }

    /// Checks that an object of `size` bytes (at least `min`) at `offset` lies in the file.
    fn check_place(&self, offset: u64, size: u64, min: u64) -> io::Result<()> {
        if offset < self.header.header_size || offset % 8 != 0 {
            return Err(bad(format!(
                "an object offset of {offset} is outside the arena or unaligned"
            )));
        }
        if size < min || offset.checked_add(size).is_none_or(|e| e > self.end) {
            return Err(bad(format!(
                "an object of {size} bytes at {offset} does not fit the file"
            )));
        }
        Ok(())
    }

    /// The type, flags and size of the object at `offset`.
    fn object_header(&mut self, offset: u64) -> io::Result<(u8, u8, u64)> {
        self.check_place(offset, OBJECT_HEADER, OBJECT_HEADER)?;
        let b = self.win.read(offset, OBJECT_HEADER as usize)?;
        let size = u64::from_le_bytes(b[8..16].try_into().expect("8"));
        Ok((b[0], b[1], size))
    }

    /// A link of the entry-array chain that entry `i` needs (an item or the next pointer).
    /// The writer fills one in once, from zero, after the array was written: a zero may be
    /// a block cached before that, so it is looked at again as the file is now. Still zero,
    /// the entry is counted but not linked yet: waited for while the file is live (`head`),
    /// stepped over once it is archived.
    fn read_link(&mut self, offset: u64, wide: bool, i: u64) -> io::Result<u64> {
        let len = if wide { 8 } else { 4 };
        let mut v = le(self.win.read(offset, len)?);
        if v == 0 {
            v = le(self.win.read_fresh(offset, len)?);
        }
        if v == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("entry {i} is counted but not linked yet"),
            ));
        }
        Ok(v)
    }

    /// The offset of entry `i` (0-based, below `n_entries`) from the entry-array chain.
    pub(super) fn entry_offset(&mut self, i: u64) -> io::Result<u64> {
        if i >= self.header.n_entries {
            return Err(bad("past the last entry"));
        }
        let item = self.item_size();
        loop {
            let (next_from, first) = match self.arrays.last().copied() {
                Some(a) if i < a.first + a.capacity => break,
                Some(a) => {
                    let next = self.read_link(a.offset + OBJECT_HEADER, true, i)?;
                    if next <= a.offset {
                        return Err(bad(format!(
                            "the entry-array chain ends or turns back at {} (item {i} of {})",
                            a.offset, self.header.n_entries
                        )));
                    }
                    (next, a.first + a.capacity)
                }
                None => (self.header.entry_array_offset, 0),
            };
            let (t, _, size) = self.object_header(next_from)?;
            self.check_place(next_from, size, ENTRY_ARRAY_ITEMS + item)?;
            if t != OBJECT_ENTRY_ARRAY {
                return Err(bad(format!(
                    "object {next_from} is not an entry array (type {t})"
                )));
            }
            let capacity = (size - ENTRY_ARRAY_ITEMS) / item;
            self.arrays.push(Array {
                offset: next_from,
                first,
                capacity,
            });
        }
        // The arrays are in index order: a binary search, however long a hostile chain.
        let a = self.arrays[self.arrays.partition_point(|a| a.first <= i) - 1];
        let at = a.offset + ENTRY_ARRAY_ITEMS + (i - a.first) * item;
        self.read_link(at, item == 8, i)
    }

    /// Reads entry `i`'s object: its key, and its items' offsets into `self.items`.
    pub(super) fn entry(&mut self, i: u64) -> io::Result<Key> {
        self.items_of = None;
        let o = self.entry_offset(i)?;
        let cuts = self.win.cuts();
        let k = self.entry_at(o);
        if self.win.cuts() != cuts {
            // Cut in the instant between the window's check and this read: what was read
            // may be the guard's zeros. Read again (through `pread`, which sees the end).
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file was cut while the entry was read",
            ));
        }
        let k = k?;
        self.items_of = Some(i);
        Ok(k)
    }

    /// Whether the items of entry `i` are the ones loaded (it was read last).
    pub(super) fn holds(&self, i: u64) -> bool {
        self.items_of == Some(i)
    }

    fn entry_at(&mut self, o: u64) -> io::Result<Key> {
        let (t, _, size) = self.object_header(o)?;
        let item = if self.compact { 4 } else { 16 };
        self.check_place(o, size, ENTRY_ITEMS + item)?;
        if t != OBJECT_ENTRY {
            return Err(bad(format!("object {o} is not an entry (type {t})")));
        }
        if size > MAX_ENTRY_OBJECT || (size - ENTRY_ITEMS) % item != 0 {
            return Err(bad(format!("an entry of {size} bytes at {o} is not valid")));
        }
        let b = self.win.read(o, size as usize)?;
        let u64_at = |x: usize| u64::from_le_bytes(b[x..x + 8].try_into().expect("8"));
        let key = Key {
            seqnum_id: self.header.seqnum_id,
            seqnum: u64_at(16),
            realtime: u64_at(24),
            monotonic: u64_at(32),
            boot_id: b[40..56].try_into().expect("16"),
            xor_hash: u64_at(56),
        };
        if key.seqnum == 0
            || key.realtime == 0
            || key.realtime >= TIMESTAMP_LIMIT
            || key.monotonic >= TIMESTAMP_LIMIT
        {
            return Err(bad(format!(
                "the entry at {o} has an invalid sequence number or timestamp"
            )));
        }
        self.items.clear();
        for chunk in b[ENTRY_ITEMS as usize..].chunks_exact(item as usize) {
            self.items.push(if item == 4 {
                u32::from_le_bytes(chunk[..4].try_into().expect("4")) as u64
            } else {
                u64::from_le_bytes(chunk[..8].try_into().expect("8"))
            });
        }
        Ok(key)
    }

    /// Appends the fields of the entry read last to `entry`. A DATA object that cannot be
    /// read is left out and counted; the reason for the first is returned.
    pub(super) fn fields(
        &mut self,
        entry: &mut Entry,
        z: &mut Decompressor,
        corrupt: &mut u64,
    ) -> Option<String> {
        let mut first_error = None;
        let cuts = self.win.cuts();
        // Payload bytes read and bytes decompressed for this entry (`MAX_ENTRY_WORK`).
        let mut spent = 0u64;
        for k in 0..self.items.len() {
            let p = self.items[k];
            match self.data(p, entry, z, &mut spent) {
                Ok(()) => {}
                Err(e) => {
                    if let Some(full) = e.get_ref().and_then(|r| r.downcast_ref::<EntryFull>()) {
                        let left = self.items.len() - k;
                        *corrupt += left as u64;
                        first_error.get_or_insert_with(|| {
                            format!("{full}: fields {k} on ({left}) left out unread")
                        });
                        break;
                    }
                    *corrupt += 1;
                    first_error.get_or_insert_with(|| format!("field {k} (object {p}): {e}"));
                }
            }
        }
        if self.win.cuts() != cuts && first_error.is_none() {
            // Cut in the instant between the window's check and a copy: a field may hold
            // the guard's zeros. Shipped marked, never as if read whole.
            *corrupt += 1;
            first_error = Some("the file was cut while the entry's fields were read".into());
        }
        first_error
    }

    /// Appends one field to `entry`, counting what reading it costs in `spent`. Fails with
    /// [`EntryFull`] when the entry cannot take it (`MAX_ENTRY`, `MAX_ENTRY_WORK`): its other
    /// fields are then left out by the caller.
    fn data(
        &mut self,
        p: u64,
        entry: &mut Entry,
        z: &mut Decompressor,
        spent: &mut u64,
    ) -> io::Result<()> {
        let payload = if self.compact { 72 } else { 64 };
        self.check_place(p, OBJECT_HEADER, OBJECT_HEADER)?;
        // The header and, when it lies in one cached block, the whole object in one read.
        let end = self.end;
        let b = self.win.read_up_to(p, OBJECT_HEADER as usize, usize::MAX)?;
        let (t, flags) = (b[0], b[1]);
        let size = u64::from_le_bytes(b[8..16].try_into().expect("8"));
        if size < payload + 1 || p.checked_add(size).is_none_or(|e| e > end) {
            return Err(bad(format!(
                "an object of {size} bytes at {p} does not fit the file"
            )));
        }
        if t != OBJECT_DATA {
            return Err(bad(format!("object {p} is not data (type {t})")));
        }
        let len = (size - payload) as usize;
        let whole = b.len() as u64 >= size;
        if len > MAX_FIELD {
            // journald writes none larger, compressed or not (it compresses only what gets
            // smaller); reading one would allocate what the file claims.
            return Err(bad(format!(
                "a field of {len} bytes at {p} is larger than a journal field can be"
            )));
        }
        let kind = flags & 7;
        // Charged before it is read, whether or not it turns out to be a field (an object
        // without '=' is read and left out, and items may point at it over and over).
        if spent.saturating_add(len as u64) > MAX_ENTRY_WORK {
            return Err(entry_full(PAST_WORK));
        }
        *spent += len as u64;
        // What the entry has left: a field that does not fit ends it.
        let room = MAX_ENTRY.saturating_sub(entry.data_len());
        if kind == 0 && len > room {
            return Err(entry_full(PAST_LARGEST));
        }
        let limit = MAX_FIELD.min(room);
        // Past `limit`: the entry's fault when the entry lowered the limit, the field's own
        // (damaged) when the limit was a field's or the payload states a size no field has.
        let judged = |e: io::Error| match e.get_ref().and_then(|r| r.downcast_ref::<PastLimit>()) {
            Some(past)
                if limit < MAX_FIELD && past.stated.is_none_or(|s| s <= MAX_FIELD as u64) =>
            {
                entry_full(PAST_LARGEST)
            }
            Some(past) => bad(format!(
                "a field at {p}: {past}, larger than a journal field can be"
            )),
            None => e,
        };
        let produced = z.produced();
        // How long the field is likely to be, so the entry seldom moves it (compressed
        // fields are usually long).
        let hint = if kind == 0 {
            len
        } else {
            len.saturating_mul(4)
        };
        let r = if whole {
            let body = &b[payload as usize..size as usize];
            let r = if kind == 0 {
                entry.push_slice(body)
            } else {
                entry.push_with(hint, |out| match kind {
                    compress::XZ | compress::LZ4 | compress::ZSTD => {
                        z.append(kind, body, out, limit).map_err(judged)
                    }
                    other => Err(bad(format!("compression flags {other:#x} are not valid"))),
                })
            };
            self.win.used(size as usize);
            r
        } else {
            let win = &mut self.win;
            entry.push_with(hint, |out| match kind {
                0 => win.append_to(p + payload, len, out),
                compress::XZ | compress::LZ4 | compress::ZSTD => {
                    let src = win.read(p + payload, len)?;
                    z.append(kind, src, out, limit).map_err(judged)
                }
                other => Err(bad(format!("compression flags {other:#x} are not valid"))),
            })
        };
        *spent += z.produced() - produced;
        r
    }
}

impl Key {
    /// The cursor libsystemd's `sd_journal_get_cursor` writes for this entry, byte for byte.
    /// Written into bytes on the stack and handed to the string once: a `String::push` per
    /// hex digit (100 of them) was most of this function's time.
    pub(super) fn cursor(&self, out: &mut String) {
        // The longest: 81 bytes of names and ids, four numbers of up to 16 digits.
        let mut b = [0u8; 145];
        let mut n = 0;
        let mut put = |bytes: &[u8]| {
            b[n..n + bytes.len()].copy_from_slice(bytes);
            n += bytes.len();
        };
        put(b"s=");
        put(&hex_id(&self.seqnum_id));
        put(b";i=");
        put(hex_u64_digits(self.seqnum).as_slice());
        put(b";b=");
        put(&hex_id(&self.boot_id));
        put(b";m=");
        put(hex_u64_digits(self.monotonic).as_slice());
        put(b";t=");
        put(hex_u64_digits(self.realtime).as_slice());
        put(b";x=");
        put(hex_u64_digits(self.xor_hash).as_slice());
        out.clear();
        // One allocation of the right size: the shipping thread keeps each entry's cursor,
        // so the buffer is usually new.
        out.reserve(n);
        out.push_str(std::str::from_utf8(&b[..n]).expect("a cursor is ASCII"));
    }

    /// libsystemd's order of entries from different files (`compare_entry_order`): by
    /// sequence number within one writer's space, by monotonic time within one boot, then
    /// by wall clock, then by the hash of the contents.
    pub(super) fn order(&self, o: &Key) -> std::cmp::Ordering {
        if self.seqnum_id == o.seqnum_id {
            let c = self.seqnum.cmp(&o.seqnum);
            if c.is_ne() {
                return c;
            }
        }
        if self.boot_id == o.boot_id {
            let c = self.monotonic.cmp(&o.monotonic);
            if c.is_ne() {
                return c;
            }
        }
        self.realtime
            .cmp(&o.realtime)
            .then(self.xor_hash.cmp(&o.xor_hash))
    }
}

/// A little-endian number of 4 or 8 bytes.
fn le(b: &[u8]) -> u64 {
    match b.len() {
        8 => u64::from_le_bytes(b.try_into().expect("8")),
        _ => u32::from_le_bytes(b.try_into().expect("4")) as u64,
    }
}

const H: &[u8; 16] = b"0123456789abcdef";

/// Up to 16 hex digits, and how many are used.
struct Digits([u8; 16], usize);

impl Digits {
    fn as_slice(&self) -> &[u8] {
        &self.0[16 - self.1..]
    }
}

/// `v` in lower-case hex without leading zeros, as printf's `%llx` writes it.
fn hex_u64_digits(v: u64) -> Digits {
    let digits = ((64 - v.leading_zeros()).div_ceil(4).max(1)) as usize;
    let mut d = [0u8; 16];
    for (i, slot) in d.iter_mut().enumerate() {
        *slot = H[((v >> ((15 - i) * 4)) & 15) as usize];
    }
    Digits(d, digits)
}

#[cfg(test)]
fn hex_u64(out: &mut String, v: u64) {
    out.push_str(std::str::from_utf8(hex_u64_digits(v).as_slice()).expect("ASCII"));
}

fn hex_id(id: &[u8; 16]) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, b) in id.iter().enumerate() {
        h[2 * i] = H[(b >> 4) as usize];
        h[2 * i + 1] = H[(b & 15) as usize];
    }
    h
}

pub(super) fn hex(out: &mut String, id: &[u8; 16]) {
    out.push_str(std::str::from_utf8(&hex_id(id)).expect("ASCII"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_written_as_printf_writes_them() {
        let k = Key {
            seqnum_id: [0xab; 16],
            seqnum: 0x1f,
            boot_id: [0x01; 16],
            monotonic: 0,
            realtime: u64::MAX,
            xor_hash: 0x0123_4567_89ab_cdef,
        };
        let mut s = String::new();
        k.cursor(&mut s);
        assert_eq!(
            s,
            format!(
                "s={};i=1f;b={};m=0;t=ffffffffffffffff;x=123456789abcdef",
                "ab".repeat(16),
                "01".repeat(16)
            )
        );
        // The longest a file can make: every number at its largest (a hostile file's
        // sequence number and hash are not checked).
        let k = Key {
            seqnum_id: [0xff; 16],
            seqnum: u64::MAX,
            boot_id: [0xfe; 16],
            monotonic: u64::MAX,
            realtime: u64::MAX,
            xor_hash: u64::MAX,
        };
        k.cursor(&mut s);
        let f = "f".repeat(16);
        assert_eq!(
            s,
            format!(
                "s={};i={f};b={};m={f};t={f};x={f}",
                "ff".repeat(16),
                "fe".repeat(16)
            )
        );
        assert_eq!(s.len(), 145);
        for v in [0u64, 1, 15, 16, 255, 256, 1 << 63, 0xdead_beef, u64::MAX] {
            let mut o = String::new();
            hex_u64(&mut o, v);
            assert_eq!(o, format!("{v:x}"));
        }
    }
}
