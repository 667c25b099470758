//! One journal entry as read: its raw fields plus the entry header facts.

/// A journal entry with every data field as raw bytes, in storage order.
///
/// The buffers are reused from one entry to the next: the reader refills the same `Entry`
/// so reading does not allocate per field.
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
    data: Vec<u8>,
    /// (start, position of '=', end) of each `NAME=value` in `data`.
    fields: Vec<(u32, u32, u32)>,
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
    }

    /// Gives back memory above `keep` bytes once an unusually large entry is done with, so
    /// a recycled buffer does not hold a core dump's worth of capacity forever.
    pub fn release_large(&mut self, keep: usize) {
        if self.data.capacity() > keep {
            self.data.clear();
            self.data.shrink_to(keep);
            self.fields.clear();
            self.fields.shrink_to(keep / 64);
        }
    }

    /// Appends one field as libsystemd's crate hands it out, split at the '=' the crate
    /// already found (searching again was a byte loop over every name, ~2 % of the agent's
    /// CPU, #19). An object without '=' is not a field (libsystemd never hands one out for a
    /// valid file): it is left out.
    pub(crate) fn push_journal_field(&mut self, f: &systemd::journal::JournalEntryField<'_>) {
        if f.value().is_none() {
            return;
        }
        let (data, eq) = (f.data(), f.name().len());
        let start = self.data.len();
        self.data.extend_from_slice(data);
        self.fields.push((
            start as u32,
            (start + eq) as u32,
            (start + data.len()) as u32,
        ));
    }

    /// Appends one `NAME=value` object that `fill` writes straight into the entry's buffer
    /// (the native reader's copy from the file or its decompression): no buffer per field.
    /// What `fill` wrote is taken back when it fails, or when it holds no '=' (not a field,
    /// as libsystemd's entries never hold one either).
    pub(crate) fn push_with(
        &mut self,
        fill: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let start = self.data.len();
        if let Err(e) = fill(&mut self.data) {
            self.data.truncate(start);
            return Err(e);
        }
        let end = self.data.len();
        let Some(eq) = self.data[start..].iter().position(|&b| b == b'=') else {
            self.data.truncate(start);
            return Ok(());
        };
        if end > u32::MAX as usize {
            self.data.truncate(start);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the entry's fields exceed 4 GiB",
            ));
        }
        self.fields
            .push((start as u32, (start + eq) as u32, end as u32));
        Ok(())
    }

    /// Convenience for tests and tools: appends `name=value`.
    pub fn push_field(&mut self, name: &[u8], value: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(name);
        self.data.push(b'=');
        self.data.extend_from_slice(value);
        self.fields.push((
            start as u32,
            (start + name.len()) as u32,
            self.data.len() as u32,
        ));
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The i-th field as (name, value).
    pub fn field(&self, i: usize) -> (&[u8], &[u8]) {
        let (s, eq, e) = self.fields[i];
        (
            &self.data[s as usize..eq as usize],
            &self.data[eq as usize + 1..e as usize],
        )
    }

    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.fields.len()).map(|i| self.field(i))
    }

    /// The first value of the named field.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Bytes held by the field data, a cheap size estimate for backpressure.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_order_and_bytes() {
        let mut e = Entry::new();
        let data = |d: &'static [u8]| systemd::journal::JournalEntryField::from(d);
        e.push_journal_field(&data(b"MESSAGE=a=b"));
        assert_eq!(e.len(), 1);
        e.push_journal_field(&data(b"NOEQUALS"));
        assert_eq!(e.len(), 1, "an object without '=' stores nothing");
        e.push_field(b"BIN", &[0, 255, b'=', b'\n']);
        e.push_journal_field(&data(b"EMPTY="));
        assert_eq!(e.len(), 3);
        assert_eq!(e.field(0), (&b"MESSAGE"[..], &b"a=b"[..]));
        assert_eq!(e.field(1), (&b"BIN"[..], &[0, 255, b'=', b'\n'][..]));
        assert_eq!(e.get(b"EMPTY"), Some(&b""[..]));
        assert_eq!(e.get(b"NOPE"), None);
        e.clear();
        assert!(e.is_empty());
    }
}
