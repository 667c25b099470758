//! Journal cursors: the opaque `s=…;i=…;b=…;m=…;t=…;x=…` strings libsystemd hands out.
//!
//! We only look inside a cursor to report things to humans (sequence numbers for the size
//! of a gap, the time of the entry). Positioning always goes through libsystemd.

use std::fmt;

/// The parts of a cursor we use for reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorInfo {
    /// Identifies the sequence-number space (one per journal file writer).
    pub seqnum_id: String,
    pub seqnum: u64,
    pub boot_id: String,
    pub realtime_usec: u64,
}

/// Why a piece of text is not a journal cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorError(String);

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CursorError {}

/// The sequence-number space and number of a cursor, without allocating (hot path).
pub fn seqnum(text: &str) -> Option<(&str, u64)> {
    // Fast path for the layout sd_journal_get_cursor writes ("s=<32 hex>;i=<hex>;..."):
    // this runs for every entry read.
    let b = text.as_bytes();
    if b.len() > 37 && b.starts_with(b"s=") && &b[34..37] == b";i=" {
        let rest = &text[37..];
        let end = rest.find(';').unwrap_or(rest.len());
        if let Ok(n) = u64::from_str_radix(&rest[..end], 16) {
            return Some((&text[2..34], n));
        }
    }
    let mut id = None;
    let mut n = None;
    for part in text.split(';') {
        if let Some(v) = part.strip_prefix("s=") {
            id = Some(v);
        } else if let Some(v) = part.strip_prefix("i=") {
            n = u64::from_str_radix(v, 16).ok();
        }
    }
    Some((id?, n?))
}

/// Every part of a cursor, as numbers: what the native reader seeks to and compares with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Parts {
    pub seqnum_id: Option<[u8; 16]>,
    pub seqnum: Option<u64>,
    pub boot_id: Option<[u8; 16]>,
    pub monotonic: Option<u64>,
    pub realtime: Option<u64>,
    pub xor_hash: Option<u64>,
}

/// Splits a cursor into its parts, each checked; a part may be missing (libsystemd accepts
/// any subset), an unknown or malformed one is an error.
pub(crate) fn parts(text: &str) -> Result<Parts, CursorError> {
    if text.is_empty() {
        return Err(CursorError("the cursor is empty".into()));
    }
    if let Some(c) = text.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(CursorError(format!(
            "the cursor contains the character {c:?}, which no journal cursor has"
        )));
    }
    let mut p = Parts::default();
    for part in text.split(';') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(CursorError(format!("{part:?} is not a key=value part")));
        };
        let hex = |v: &str| {
            u64::from_str_radix(v, 16)
                .map_err(|_| CursorError(format!("{k}={v:?} is not a hexadecimal number")))
        };
        let id = |v: &str| {
            if v.len() == 32 && v.bytes().all(|c| c.is_ascii_hexdigit()) {
                let mut out = [0u8; 16];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = u8::from_str_radix(&v[2 * i..2 * i + 2], 16).expect("hex digits");
                }
                Ok(out)
            } else {
                Err(CursorError(format!("{k}={v:?} is not a 128-bit id")))
            }
        };
        match k {
            "s" => p.seqnum_id = Some(id(v)?),
            "i" => p.seqnum = Some(hex(v)?),
            "b" => p.boot_id = Some(id(v)?),
            "m" => p.monotonic = Some(hex(v)?),
            "t" => p.realtime = Some(hex(v)?),
            "x" => p.xor_hash = Some(hex(v)?),
            _ => return Err(CursorError(format!("unknown cursor part {k:?}"))),
        }
    }
    Ok(p)
}

fn id_text(id: [u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a cursor as written by `sd_journal_get_cursor`.
pub fn parse(text: &str) -> Result<CursorInfo, CursorError> {
    let p = parts(text)?;
    match (p.seqnum_id, p.seqnum, p.boot_id, p.realtime) {
        (Some(s), Some(seqnum), Some(b), Some(realtime_usec)) => Ok(CursorInfo {
            seqnum_id: id_text(s),
            seqnum,
            boot_id: id_text(b),
            realtime_usec,
        }),
        _ => Err(CursorError(
            "the cursor lacks one of its s=, i=, b= or t= parts".into(),
        )),
    }
}

/// Checks that `place` holds one journal cursor per line, at least one, each of its own
/// sequence-number space.
pub(crate) fn validate_place(place: &str) -> Result<(), String> {
    if place.is_empty() {
        return Err("the cursor is empty".into());
    }
    let mut spaces = std::collections::HashSet::new();
    for (i, line) in place.split('\n').enumerate() {
        let c = parse(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if !spaces.insert(c.seqnum_id) {
            return Err(format!(
                "line {}: a second cursor for the same sequence-number space",
                i + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "s=0e7a5b6d4c3b4a29a1b2c3d4e5f60718;i=1f;b=9f8e7d6c5b4a39281706f5e4d3c2b1a0;m=4c4b40;t=60a1b2c3d4e5f;x=abcdef0123456789";

    #[test]
    fn parses_systemd_cursor() {
        let c = parse(C).unwrap();
        assert_eq!(c.seqnum, 31);
        assert_eq!(c.seqnum_id, "0e7a5b6d4c3b4a29a1b2c3d4e5f60718");
        assert_eq!(c.realtime_usec, 0x60a1b2c3d4e5f);
    }

    #[test]
    fn seqnum_fast_path() {
        assert_eq!(seqnum(C), Some(("0e7a5b6d4c3b4a29a1b2c3d4e5f60718", 31)));
        assert_eq!(seqnum("garbage"), None);
    }

    #[test]
    fn rejects_garbage_with_reason() {
        assert!(parse("").unwrap_err().to_string().contains("empty"));
        assert!(
            parse("hello")
                .unwrap_err()
                .to_string()
                .contains("key=value")
        );
        assert!(
            parse("s=1;i=2")
                .unwrap_err()
                .to_string()
                .contains("128-bit")
        );
        assert!(
            parse(&C.replace("i=1f", "i=zz"))
                .unwrap_err()
                .to_string()
                .contains("hexadecimal")
        );
        assert!(
            parse(&format!("{C}\n"))
                .unwrap_err()
                .to_string()
                .contains("character")
        );
        assert!(
            parse(&C.replace(";t=60a1b2c3d4e5f", ""))
                .unwrap_err()
                .to_string()
                .contains("lacks")
        );
        assert!(
            parse(&format!("{C};q=1"))
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
    }
}
