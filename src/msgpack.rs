//! The one MessagePack writer: the few value kinds the agent writes itself, into a
//! `Vec<u8>`, each in its smallest form, and the one rule for journal bytes (a str when
//! they are UTF-8, a bin otherwise). The journal's entries (`journal::Entry` keeps its
//! fields in this form as it reads them), the journal's records (`format::encode`) and the
//! Forward input's records and replies (`forward`) all write through it. It imports
//! nothing of the crate, so that every stage may use it without an import running back
//! up the data's path.
//!
//! Hand-written rather than `rmp::encode`: writing into a `Vec` cannot fail, so there is
//! no `Result` to carry on the hot path, and the string header written here was measured
//! cheaper than rmp's `Write`-based path (#19). The tests hold it to `rmp`.

pub(crate) fn map_len(out: &mut Vec<u8>, n: usize) {
    collection_len(out, n, 0x80, 0xde);
}

pub(crate) fn array_len(out: &mut Vec<u8>, n: usize) {
    collection_len(out, n, 0x90, 0xdc);
}

/// A map's or an array's header: the fix form under 16 (`fix | n`), then 16 bits
/// (`marker16`), then 32 bits (the marker after it), as the spec lays out both.
fn collection_len(out: &mut Vec<u8>, n: usize, fix: u8, marker16: u8) {
    match n {
        0..=15 => out.push(fix | n as u8),
        16..=0xffff => {
            out.push(marker16);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(marker16 + 1);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

/// The header of a str (`text`) or a bin of `len` bytes, in its smallest form, and its
/// length. Both kinds have the same length from 32 bytes on (only the marker differs); a
/// str under 32 bytes takes one byte, a bin two.
#[inline]
pub(crate) fn header(len: usize, text: bool) -> ([u8; 5], usize) {
    let mut h = [0u8; 5];
    let n = header_len(len, text);
    write_header(&mut h[..n], len, text);
    (h, n)
}

/// The length of [`header`]'s header.
#[inline]
pub(crate) fn header_len(len: usize, text: bool) -> usize {
    match (len, text) {
        (0..=31, true) => 1,
        (0..=0xff, _) => 2,
        (0x100..=0xffff, _) => 3,
        _ => 5,
    }
}

/// Writes [`header`]'s header into `out`, [`header_len`] bytes long, in place. Written
/// straight where it goes: building it on the stack and copying it from there stalled on
/// store forwarding, twice per field (40 % of the entry's field copy, #32).
#[inline]
pub(crate) fn write_header(out: &mut [u8], len: usize, text: bool) {
    match (len, text) {
        (0..=31, true) => out[0] = 0xa0 | len as u8,
        (0..=0xff, _) => {
            out[0] = if text { 0xd9 } else { 0xc4 };
            out[1] = len as u8;
        }
        (0x100..=0xffff, _) => {
            out[0] = if text { 0xda } else { 0xc5 };
            out[1..3].copy_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out[0] = if text { 0xdb } else { 0xc6 };
            out[1..5].copy_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

/// Appends a header from [`header`]: each of its lengths (1, 2, 3 or 5 bytes) a copy of a
/// size known when compiling, where a copy of a length known only at run time is a call
/// to `memcpy`, made twice per field.
#[inline]
pub(crate) fn push_header(out: &mut Vec<u8>, h: &[u8; 5], n: usize) {
    match n {
        1 => out.push(h[0]),
        2 => out.extend_from_slice(&h[..2]),
        3 => out.extend_from_slice(&h[..3]),
        _ => out.extend_from_slice(h),
    }
}

/// The header of a str of `len` bytes (the bytes follow).
pub(crate) fn str_header(out: &mut Vec<u8>, len: usize) {
    let (h, n) = header(len, true);
    push_header(out, &h, n);
}

pub(crate) fn str(out: &mut Vec<u8>, s: &[u8]) {
    str_header(out, s.len());
    out.extend_from_slice(s);
}

pub(crate) fn bin(out: &mut Vec<u8>, s: &[u8]) {
    let (h, n) = header(s.len(), false);
    push_header(out, &h, n);
    out.extend_from_slice(s);
}

/// Whether journal bytes are written as a str (valid UTF-8) or as a bin (anything else).
/// The journal's names and values are mostly ASCII, which is checked faster than UTF-8.
#[inline]
pub(crate) fn is_text(v: &[u8]) -> bool {
    v.is_ascii() || std::str::from_utf8(v).is_ok()
}

/// Journal bytes, a field's name or value: a str when they are text, else a bin.
pub(crate) fn text_or_bin(out: &mut Vec<u8>, v: &[u8]) {
    if is_text(v) {
        str(out, v);
    } else {
        bin(out, v);
    }
}

pub(crate) fn uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

pub(crate) fn bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_is_rmps_smallest() {
        let sizes = [0usize, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536, 70_000];
        for n in sizes {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            map_len(&mut ours, n);
            rmp::encode::write_map_len(&mut theirs, n as u32).unwrap();
            array_len(&mut ours, n);
            rmp::encode::write_array_len(&mut theirs, n as u32).unwrap();
            let s = "x".repeat(n);
            str(&mut ours, s.as_bytes());
            rmp::encode::write_str(&mut theirs, &s).unwrap();
            bin(&mut ours, s.as_bytes());
            rmp::encode::write_bin(&mut theirs, s.as_bytes()).unwrap();
            assert_eq!(ours, theirs, "{n}");
        }
        for v in [
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            1 << 40,
            u64::MAX,
        ] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            uint(&mut ours, v);
            rmp::encode::write_uint(&mut theirs, v).unwrap();
            assert_eq!(ours, theirs, "{v}");
        }
        let mut b = Vec::new();
        bool(&mut b, true);
        bool(&mut b, false);
        assert_eq!(b, [0xc3, 0xc2]);
    }

    #[test]
    fn str_headers_match_rmp_at_every_boundary() {
        for len in [0, 1, 31, 32, 255, 256, 65_535, 65_536, 100_000] {
            let v = vec![b'a'; len];
            let mut ours = Vec::new();
            str_header(&mut ours, len);
            ours.extend_from_slice(&v);
            let mut theirs = Vec::new();
            rmp::encode::write_str(&mut theirs, std::str::from_utf8(&v).unwrap()).unwrap();
            assert_eq!(ours, theirs, "length {len}");
        }
    }
}
