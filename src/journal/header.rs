//! The fixed header of a journal file, read without libsystemd.
//!
//! A central directory holds thousands of files; learning which writer a file belongs to,
//! whether it gained entries, how far it reaches and how old it is must not cost an
//! sd-journal handle (a descriptor, maps and an index walk) per file. The header answers all
//! of that from one `pread`: its layout is stable and documented in systemd's
//! `docs/JOURNAL_FILE_FORMAT.md` (little-endian, fields at fixed offsets since the first
//! version; newer fields only ever append).
//!
//! Owns nothing but the parsing: the one place that knows the header's layout, for the
//! listing and measuring code and for the native reader. Must never be trusted for entry
//! data: a header is a summary the writer updates as it appends (the tail sequence number
//! is taken before the entry is linked, so it can lead the readable entries by one).
//! Callers use it to decide where to look; the native reader checks every offset it gets
//! from it (`native::file`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SIGNATURE: &[u8; 8] = b"LPKSHHRH";
/// Bytes up to and including `tail_entry_realtime`, the last field read here.
pub(crate) const READ: usize = 200;

/// What one file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileHeader {
    pub incompatible_flags: u32,
    /// Offline, online or archived (`STATE_*` in the format's documentation).
    pub state: u8,
    /// The writer's sequence-number space, as the `s=` part of cursors spells it.
    pub seqnum_id: [u8; 16],
    pub header_size: u64,
    pub arena_size: u64,
    /// Where the object appended last starts. The writer sets it when it appends an
    /// object and fills the object afterwards, so every object before it is complete.
    pub tail_object_offset: u64,
    pub n_entries: u64,
    pub tail_seqnum: u64,
    /// The first array of the entry-array chain.
    pub entry_array_offset: u64,
    pub head_realtime: u64,
}

impl FileHeader {
    /// The space as cursors name it (`s=` and 32 lower-case hex digits).
    pub(crate) fn space(&self) -> String {
        let mut s = String::with_capacity(34);
        s.push_str("s=");
        for b in self.seqnum_id {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Reads `path`'s header. `Ok(None)` for a file that is not (yet) a journal file: shorter
/// than a header (being created) or without the signature.
pub(crate) fn read(path: &Path) -> io::Result<Option<FileHeader>> {
    read_with_inode(path).map(|(_, h)| h)
}

/// [`read`], with the inode number of the file it read (a name can be given to another
/// file by a rotation at any moment).
pub(crate) fn read_with_inode(path: &Path) -> io::Result<(u64, Option<FileHeader>)> {
    use std::os::unix::fs::MetadataExt;
    let f = File::open(path)?;
    let ino = f.metadata()?.ino();
    let mut buf = [0u8; READ];
    let mut got = 0;
    while got < READ {
        match f.read_at(&mut buf[got..], got as u64) {
            Ok(0) => return Ok((ino, None)),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((ino, parse(&buf)))
}

/// The newest sequence number among `files` that hold entries, if any header says so.
pub(crate) fn tail_of(files: &[std::path::PathBuf]) -> Option<u64> {
    files
        .iter()
        .filter_map(|f| read(f).ok().flatten())
        .filter(|h| h.n_entries > 0)
        .map(|h| h.tail_seqnum)
        .max()
}

/// The header in the first [`READ`] bytes of a file; `None` without the signature or with
/// a header too short to hold the fields read here (from no systemd that ever was).
pub(crate) fn parse(buf: &[u8; READ]) -> Option<FileHeader> {
    if &buf[..8] != SIGNATURE {
        return None;
    }
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
    let header_size = u64_at(88);
    if header_size < READ as u64 {
        return None;
    }
    Some(FileHeader {
        incompatible_flags: u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes")),
        state: buf[16],
        seqnum_id: buf[72..88].try_into().expect("16 bytes"),
        header_size,
        arena_size: u64_at(96),
        tail_object_offset: u64_at(136),
        n_entries: u64_at(152),
        tail_seqnum: u64_at(160),
        entry_array_offset: u64_at(176),
        head_realtime: u64_at(184),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(n_entries: u64) -> [u8; READ] {
        let mut b = [0u8; READ];
        b[..8].copy_from_slice(SIGNATURE);
        b[72..88].copy_from_slice(&[0xab; 16]);
        b[88..96].copy_from_slice(&272u64.to_le_bytes());
        b[136..144].copy_from_slice(&4096u64.to_le_bytes());
        b[152..160].copy_from_slice(&n_entries.to_le_bytes());
        b[160..168].copy_from_slice(&41u64.to_le_bytes());
        b[184..192].copy_from_slice(&7u64.to_le_bytes());
        b
    }

    #[test]
    fn fields_at_their_documented_offsets() {
        let h = parse(&header(3)).unwrap();
        assert_eq!(h.n_entries, 3);
        assert_eq!(h.tail_seqnum, 41);
        assert_eq!(h.head_realtime, 7);
        assert_eq!(h.header_size, 272);
        assert_eq!(h.tail_object_offset, 4096);
        assert_eq!(h.space(), format!("s={}", "ab".repeat(16)));
    }

    #[test]
    fn not_a_journal_file_is_none() {
        let mut b = header(1);
        b[0] = b'X';
        assert_eq!(parse(&b), None);
        let mut short = header(1);
        short[88..96].copy_from_slice(&100u64.to_le_bytes());
        assert_eq!(parse(&short), None);
        let dir = std::env::temp_dir().join(format!("jk-header-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("short.journal");
        std::fs::write(&f, SIGNATURE).unwrap();
        assert_eq!(read(&f).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
