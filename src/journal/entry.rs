//! One journal entry as read: its raw fields plus the entry header facts.

use crate::msgpack;

/// A journal entry with every data field as raw bytes, in storage order.
///
/// The buffers are reused from one entry to the next: the reader refills the same `Entry`
/// so reading does not allocate per field.
///
/// The fields are kept as the MessagePack record carries them: each one a key (the name)
/// and a value, each a str when it is UTF-8 and a bin otherwise, one after the other in
/// `data` ([`Entry::encoded`]). The reader writes them there as it copies them out of the
/// journal file, so the encoder copies an ordinary entry's fields with one copy instead of
/// writing each field again on the shipping thread (the per-field writing was the largest
/// part of the encoder's time, #32). Everything else reads the fields through
/// [`Entry::field`], which knows nothing of that layout.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    pub cursor: String,
    pub realtime_usec: u64,
    pub monotonic_usec: u64,
    /// 32 lowercase hex digits, from the entry header (always present, unlike `_BOOT_ID=`).
    pub boot_id: String,
    /// Why some of the entry's fields could not be read (libsystemd reported an error part
    /// way through), if it was damaged: the rest is shipped, marked.
    pub damaged: Option<String>,
    /// The fields as MessagePack key/value pairs, nothing else.
    data: Vec<u8>,
    /// Where each field's name and value lie in `data`.
    fields: Vec<Field>,
    /// Bytes of the fields as the journal holds them (`NAME=value`): the volume counted per
    /// unit (`data_len`; the queue's bound counts `held_bytes`).
    raw_len: usize,
}

/// A field's name `data[name.0..name.1]` and value `data[value.0..value.1]`.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// Room left before a field's `NAME=value` bytes when they are written into `data`: the
/// name's header (one byte for a name of the journal's) and the value's, less the '='
/// byte that the value's header takes over. When the guess from the size is right, the
/// value stays where it was written and only the name moves (by at most 4 bytes).
fn room(value_len_guess: usize) -> usize {
    msgpack::header_len(value_len_guess, true)
}

fn too_large() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "the entry's fields exceed 4 GiB",
    )
}

impl Entry {
    pub fn new() -> Entry {
        Entry::default()
    }

    pub fn clear(&mut self) {
        self.cursor.clear();
        self.boot_id.clear();
        self.realtime_usec = 0;
        self.monotonic_usec = 0;
        self.damaged = None;
        self.data.clear();
        self.fields.clear();
        self.raw_len = 0;
    }

    /// Gives back memory above `keep` bytes once an unusually large entry is done with, so
    /// a recycled buffer does not hold a core dump's worth of capacity forever.
    pub fn release_large(&mut self, keep: usize) {
        // Either may be large alone: an entry of thousands of empty fields holds little data
        // and a large table of offsets.
        if self.data.capacity() > keep || self.fields.capacity() > keep / 64 {
            self.clear();
            self.data.shrink_to(keep);
            self.fields.shrink_to(keep / 64);
        }
    }

    /// Appends one field as libsystemd's crate hands it out, split at the '=' the crate
    /// already found (searching again was a byte loop over every name, ~2 % of the agent's
    /// CPU, #19). An object without '=' is not a field (libsystemd never hands one out for a
    /// valid file): it is left out. Fails only when the entry's fields would pass 4 GiB.
    pub(crate) fn push_journal_field(
        &mut self,
        f: &systemd::journal::JournalEntryField<'_>,
    ) -> std::io::Result<()> {
        if f.value().is_none() {
            return Ok(());
        }
        let (data, eq) = (f.data(), f.name().len());
        self.push_pair(&data[..eq], &data[eq + 1..], Some(data))
    }

    /// Appends one `NAME=value` object that is in memory already (a block of the file, a
    /// field handed out by libsystemd): the name and the value are copied once each, behind
    /// their headers. An object without '=' is left out.
    pub(crate) fn push_slice(&mut self, object: &[u8]) -> std::io::Result<()> {
        let Some(name_len) = object.iter().position(|&b| b == b'=') else {
            return Ok(());
        };
        self.push_pair(&object[..name_len], &object[name_len + 1..], Some(object))
    }

    /// Appends a field from its name and value. `object`, when given, is `name=value`
    /// contiguous in memory: a short text value is then copied with its name in one go.
    ///
    /// The bytes are copied first and what they are (str or bin) is decided from the copy:
    /// the slices may be a mapped journal file (the native reader's, or libsystemd's own)
    /// that anyone who can write the file may change while it is read, and a str header on
    /// bytes that changed after a check would ship text that is not UTF-8, which strict
    /// consumers refuse.
    fn push_pair(
        &mut self,
        name: &[u8],
        value: &[u8],
        object: Option<&[u8]>,
    ) -> std::io::Result<()> {
        let start = self.data.len();
        let raw = name.len() + 1 + value.len();
        if start + raw + 9 > u32::MAX as usize {
            return Err(too_large());
        }
        // Room for the headers text would take (the usual case); a bin header is never
        // shorter than a str header of the same length, so the copy only ever moves right,
        // by at most a byte for each (the 2 reserved beyond: a huge value with a bin name
        // must not double the buffer for them).
        let nn_text = msgpack::header_len(name.len(), true);
        let vn_text = msgpack::header_len(value.len(), true);
        self.data.reserve(nn_text + vn_text + raw - 1 + 2);
        // Placeholders, each length a copy of a size known when compiling (a copy of a
        // length known only when running is a call to memmove, per field).
        msgpack::push_header(&mut self.data, &[0; 5], nn_text);
        let mut name_at = self.data.len();
        match object {
            // Most fields: a short value, whose one-byte header takes the '=''s place, so
            // the object is copied whole.
            Some(object) if vn_text == 1 => self.data.extend_from_slice(object),
            _ => {
                self.data.extend_from_slice(name);
                msgpack::push_header(&mut self.data, &[0; 5], vn_text);
                self.data.extend_from_slice(value);
            }
        }
        let mut value_at = name_at + name.len() + vn_text;
        let end = self.data.len();
        // Judged on the copy, which nothing else writes. Judging the bytes while copying
        // them is not enough: the compiler may read them twice (a copy and a check), as
        // it did here (the test of a changing file saw false text). Name and value are
        // judged together when all is ASCII (the byte between them, '=' or a placeholder
        // zero, is ASCII too).
        let (name_text, value_text) = if self.data[name_at..].is_ascii() {
            (true, true)
        } else {
            (
                msgpack::is_text(&self.data[name_at..name_at + name.len()]),
                msgpack::is_text(&self.data[value_at..end]),
            )
        };
        let nn = msgpack::header_len(name.len(), name_text);
        let vn = msgpack::header_len(value.len(), value_text);
        if nn != nn_text || vn != vn_text {
            // A bin name or value whose header is longer: the copy moves right.
            let (dn, dv) = (nn - nn_text, vn - vn_text);
            self.data.resize(end + dn + dv, 0);
            self.data.copy_within(value_at..end, value_at + dn + dv);
            self.data
                .copy_within(name_at..name_at + name.len(), name_at + dn);
            name_at += dn;
            value_at += dn + dv;
        }
        msgpack::write_header(&mut self.data[start..start + nn], name.len(), name_text);
        msgpack::write_header(
            &mut self.data[value_at - vn..value_at],
            value.len(),
            value_text,
        );
        self.raw_len += raw;
        self.fields.push(Field {
            name: (name_at as u32, (name_at + name.len()) as u32),
            value: (value_at as u32, (value_at + value.len()) as u32),
        });
        Ok(())
    }

    /// Appends one `NAME=value` object that `fill` writes straight into the entry's buffer
    /// (the native reader's copy from the file or its decompression): no buffer per field,
    /// and the bytes are then put in their MessagePack form where they were written.
    /// `size_hint` is the object's length if known (it only saves moving the value).
    /// What `fill` wrote is taken back when it fails, or when it holds no '=' (not a field,
    /// as libsystemd's entries never hold one either).
    pub(crate) fn push_with(
        &mut self,
        size_hint: usize,
        fill: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let start = self.data.len();
        // A journal name is a few bytes: guess the value's length from the object's.
        let pad = room(size_hint.saturating_sub(16));
        self.data.extend_from_slice(&[0; 5][..pad]);
        let body = start + pad;
        if let Err(e) = fill(&mut self.data) {
            self.data.truncate(start);
            return Err(e);
        }
        let end = self.data.len();
        // The '=' and whether the name before it is ASCII, in one pass over the name.
        let mut high = 0u8;
        let mut eq = None;
        for (i, &b) in self.data[body..].iter().enumerate() {
            if b == b'=' {
                eq = Some(body + i);
                break;
            }
            high |= b;
        }
        let Some(eq) = eq else {
            self.data.truncate(start);
            return Ok(());
        };
        // A record field's name and value, and the record's headers, must fit u32 offsets
        // (the headers and moves below add at most 9 bytes).
        if end + 9 > u32::MAX as usize {
            self.data.truncate(start);
            return Err(too_large());
        }
        self.raw_len += end - body;
        let name_len = eq - body;
        let value_len = end - eq - 1;
        let name_text = high < 0x80 || msgpack::is_text(&self.data[body..eq]);
        let value_text = msgpack::is_text(&self.data[eq + 1..end]);
        let nn = msgpack::header_len(name_len, name_text);
        let vn = msgpack::header_len(value_len, value_text);
        let (name_at, value_at) = (body, eq + 1);
        let name_to = start + nn;
        let value_to = name_to + name_len + vn;
        // Name and value each go to where their headers leave them. When the guess was
        // right (the usual case) the value stays and the name moves by its header's extra
        // bytes, if any. Else the value moves first when it moves right (the name may then
        // take its old place), the name first otherwise.
        if value_to == value_at {
            if name_to != name_at {
                self.data.copy_within(name_at..eq, name_to);
            }
        } else if value_to > value_at {
            // Exactly the few bytes needed: `resize` alone may double a buffer the fill
            // left full, and a hostile long name on a huge value would then double it.
            self.data.reserve_exact(value_to - value_at);
            self.data.resize(value_to + value_len, 0);
            self.data.copy_within(value_at..end, value_to);
            self.data.copy_within(name_at..eq, name_to);
        } else {
            self.data.copy_within(name_at..eq, name_to);
            self.data.copy_within(value_at..end, value_to);
            self.data.truncate(value_to + value_len);
        }
        msgpack::write_header(&mut self.data[start..start + nn], name_len, name_text);
        msgpack::write_header(
            &mut self.data[value_to - vn..value_to],
            value_len,
            value_text,
        );
        self.fields.push(Field {
            name: (name_to as u32, (name_to + name_len) as u32),
            value: (value_to as u32, (value_to + value_len) as u32),
        });
        Ok(())
    }

    /// Convenience for tests and tools: appends a field, its name as given (an '=' in it
    /// included, which no journal field name holds).
    pub fn push_field(&mut self, name: &[u8], value: &[u8]) {
        // Fails only past 4 GiB, which no test or tool entry comes near.
        let _ = self.push_pair(name, value, None);
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The i-th field as (name, value).
    pub fn field(&self, i: usize) -> (&[u8], &[u8]) {
        let f = self.fields[i];
        (
            &self.data[f.name.0 as usize..f.name.1 as usize],
            &self.data[f.value.0 as usize..f.value.1 as usize],
        )
    }

    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.fields.len()).map(|i| self.field(i))
    }

    /// The first value of the named field.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every field in storage order as MessagePack: a key (the name) and its value for each,
    /// each a str when it is UTF-8 and a bin otherwise, in the smallest form (`len()` pairs,
    /// no map header).
    pub(crate) fn encoded(&self) -> &[u8] {
        &self.data
    }

    /// Bytes of the fields as the journal holds them (`NAME=value` each): the volume the
    /// loss account counts per unit.
    pub fn data_len(&self) -> usize {
        self.raw_len
    }

    /// Bytes the entry holds in memory for its fields and ids: the fields in record form, a
    /// header of one to five bytes per name and value, and their offsets. What a queue
    /// bounded in bytes must count: an entry of many empty fields holds 18 bytes for each
    /// byte of `NAME=value`.
    pub(crate) fn held_bytes(&self) -> usize {
        self.data.len()
            + self.fields.len() * std::mem::size_of::<Field>()
            + self.cursor.len()
            + self.boot_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `encoded` must hold: each field's name and value as the record's writer
    /// writes them, one field after the other.
    fn expected(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            msgpack::text_or_bin(&mut out, n);
            msgpack::text_or_bin(&mut out, v);
        }
        out
    }

    /// Every size class of MessagePack's headers on both sides of each boundary, text and
    /// binary names and values, and every guess of the size (right, too small, too
    /// large): the bytes land where the headers leave them whichever way they had to move.
    #[test]
    fn fields_are_kept_in_their_record_form_whatever_the_guess() {
        let lens = [
            0usize, 1, 30, 31, 32, 33, 254, 255, 256, 257, 65_534, 65_535, 65_536, 70_000,
        ];
        let long = [b'H'; 300];
        let names: [&[u8]; 6] = [
            b"M",
            b"MESSAGE",
            &[b'N'; 31],
            &[b'L'; 40],
            &[0xff, b'X'],
            &long,
        ];
        for &len in &lens {
            for name in names {
                for text in [true, false] {
                    let value: Vec<u8> = if text {
                        (0..len).map(|i| b'a' + (i % 26) as u8).collect()
                    } else {
                        (0..len)
                            .map(|i| if i == 0 { 0xfe } else { i as u8 })
                            .collect()
                    };
                    let raw_len = name.len() + 1 + value.len();
                    for hint in [0, raw_len, raw_len + 40, 1 << 20] {
                        let mut e = Entry::new();
                        e.push_field(b"FIRST", b"x");
                        e.push_with(hint, |out| {
                            out.extend_from_slice(name);
                            out.push(b'=');
                            out.extend_from_slice(&value);
                            Ok(())
                        })
                        .unwrap();
                        e.push_field(b"LAST", "\u{e9}".as_bytes());
                        let want = vec![
                            (b"FIRST".to_vec(), b"x".to_vec()),
                            (name.to_vec(), value.clone()),
                            (b"LAST".to_vec(), "\u{e9}".as_bytes().to_vec()),
                        ];
                        let got: Vec<(Vec<u8>, Vec<u8>)> =
                            e.fields().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                        assert_eq!(got, want, "len {len}, hint {hint}");
                        assert_eq!(e.encoded(), expected(&want), "len {len}, hint {hint}");
                        assert_eq!(e.data_len(), 7 + raw_len + 7);
                        // The same object already in memory: the same form.
                        let mut object = name.to_vec();
                        object.push(b'=');
                        object.extend_from_slice(&value);
                        let mut from_slice = Entry::new();
                        from_slice.push_field(b"FIRST", b"x");
                        from_slice.push_slice(&object).unwrap();
                        from_slice.push_field(b"LAST", "\u{e9}".as_bytes());
                        assert_eq!(from_slice.encoded(), e.encoded(), "len {len}");
                        let got: Vec<(Vec<u8>, Vec<u8>)> = from_slice
                            .fields()
                            .map(|(n, v)| (n.to_vec(), v.to_vec()))
                            .collect();
                        assert_eq!(got, want, "len {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_name_given_whole_is_kept_whole() {
        let mut e = Entry::new();
        e.push_field(b"A=B", b"c=d");
        assert_eq!(e.field(0), (&b"A=B"[..], &b"c=d"[..]));
        assert_eq!(e.encoded(), expected(&[(b"A=B".to_vec(), b"c=d".to_vec())]));
    }

    #[test]
    fn a_failed_or_nameless_object_leaves_nothing() {
        let mut e = Entry::new();
        e.push_field(b"A", b"1");
        let before = e.encoded().to_vec();
        let err = e.push_with(100, |out| {
            out.extend_from_slice(b"PARTIAL=");
            Err(std::io::Error::other("truncated"))
        });
        assert!(err.is_err());
        e.push_with(3, |out| {
            out.extend_from_slice(b"NOEQ");
            Ok(())
        })
        .unwrap();
        assert_eq!(e.encoded(), before.as_slice());
        assert_eq!((e.len(), e.data_len()), (1, 3));
    }

    #[test]
    fn fields_keep_order_and_bytes() {
        let mut e = Entry::new();
        let data = |d: &'static [u8]| systemd::journal::JournalEntryField::from(d);
        e.push_journal_field(&data(b"MESSAGE=a=b")).unwrap();
        assert_eq!(e.len(), 1);
        e.push_journal_field(&data(b"NOEQUALS")).unwrap();
        assert_eq!(e.len(), 1, "an object without '=' stores nothing");
        e.push_field(b"BIN", &[0, 255, b'=', b'\n']);
        e.push_journal_field(&data(b"EMPTY=")).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e.field(0), (&b"MESSAGE"[..], &b"a=b"[..]));
        assert_eq!(e.field(1), (&b"BIN"[..], &[0, 255, b'=', b'\n'][..]));
        assert_eq!(e.get(b"EMPTY"), Some(&b""[..]));
        assert_eq!(e.get(b"NOPE"), None);
        e.clear();
        assert!(e.is_empty());
    }
}
