//! Just enough MessagePack to take Forward messages apart without copying them: where a
//! value ends in a byte stream (`value_len`), and a reader that hands out the raw bytes of
//! each value.
//!
//! Invariants: nothing here allocates in proportion to what the input *declares* (a
//! declared length is only believed once its bytes are there), nothing recurses (nesting
//! is counted, not followed), and every slice handed out lies inside the input.

use std::fmt;

/// Why bytes are not MessagePack the Forward protocol can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Malformed {}

pub(crate) fn malformed<T>(msg: impl Into<String>) -> Result<T, Malformed> {
    Err(Malformed(msg.into()))
}

/// What follows a marker: `fixed` bytes of payload, then `len_bytes` bytes of big-endian
/// length and that many bytes (plus one type byte for extensions), then `children` values.
struct Shape {
    fixed: usize,
    len_bytes: usize,
    ext: bool,
    /// Children per declared length unit (1 for arrays, 2 for maps), or a fixed count.
    per_len: usize,
    children: usize,
}

fn shape(marker: u8) -> Result<Shape, Malformed> {
    let s = |fixed, len_bytes, ext, per_len, children| Shape {
        fixed,
        len_bytes,
        ext,
        per_len,
        children,
    };
    Ok(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => s(0, 0, false, 0, 0),
        0x80..=0x8f => s(0, 0, false, 0, 2 * (marker & 0x0f) as usize),
        0x90..=0x9f => s(0, 0, false, 0, (marker & 0x0f) as usize),
        0xa0..=0xbf => s((marker & 0x1f) as usize, 0, false, 0, 0),
        0xc4 | 0xd9 => s(0, 1, false, 0, 0),
        0xc5 | 0xda => s(0, 2, false, 0, 0),
        0xc6 | 0xdb => s(0, 4, false, 0, 0),
        0xc7 => s(0, 1, true, 0, 0),
        0xc8 => s(0, 2, true, 0, 0),
        0xc9 => s(0, 4, true, 0, 0),
        0xca => s(4, 0, false, 0, 0),
        0xcb => s(8, 0, false, 0, 0),
        0xcc | 0xd0 => s(1, 0, false, 0, 0),
        0xcd | 0xd1 => s(2, 0, false, 0, 0),
        0xce | 0xd2 => s(4, 0, false, 0, 0),
        0xcf | 0xd3 => s(8, 0, false, 0, 0),
        0xd4 => s(2, 0, false, 0, 0),
        0xd5 => s(3, 0, false, 0, 0),
        0xd6 => s(5, 0, false, 0, 0),
        0xd7 => s(9, 0, false, 0, 0),
        0xd8 => s(17, 0, false, 0, 0),
        0xdc => s(0, 2, false, 1, 0),
        0xdd => s(0, 4, false, 1, 0),
        0xde => s(0, 2, false, 2, 0),
        0xdf => s(0, 4, false, 2, 0),
        0xc1 => return malformed("byte 0xc1 is not MessagePack"),
    })
}

fn be(bytes: &[u8]) -> usize {
    bytes.iter().fold(0usize, |n, &b| (n << 8) | b as usize)
}

/// The length of the first complete value of `buf`: `Ok(None)` while more bytes are
/// needed. A value that declares more than `limit` bytes (each element takes at least one)
/// is refused before its bytes arrive.
pub(crate) fn value_len(buf: &[u8], limit: usize) -> Result<Option<usize>, Malformed> {
    value_len_from(buf, limit, &mut Scan::default())
}

/// Where a scan of an incomplete value stopped: the start of the element it could not
/// finish, and the values still to read there. Resuming from it makes finding the end of a
/// message that arrives in many reads linear in its size, not quadratic (a client
/// trickling a large message would otherwise make every read rescan all of it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    pos: usize,
    /// Values still to read at `pos`; 0 before the scan started (then: one, the message).
    pending: u64,
}

/// [`value_len`], resumed from `scan` (which must come from an earlier call over a prefix
/// of the same bytes) and left where it stops when the value is still incomplete.
pub(crate) fn value_len_from(
    buf: &[u8],
    limit: usize,
    scan: &mut Scan,
) -> Result<Option<usize>, Malformed> {
    let mut pos = scan.pos;
    // Values still to read, at least one byte each.
    let mut pending: u64 = if scan.pending == 0 { 1 } else { scan.pending };
    while pending > 0 {
        if pos as u64 + pending > limit as u64 {
            return malformed(format!(
                "a message declares more than the {limit} bytes allowed (forward.max_message_bytes)"
            ));
        }
        // The element starting here: resumed from if it is not all here yet.
        let here = Scan { pos, pending };
        let Some(&marker) = buf.get(pos) else {
            *scan = here;
            return Ok(None);
        };
        pending -= 1;
        let sh = shape(marker)?;
        pos += 1;
        let mut body = sh.fixed;
        if sh.len_bytes > 0 {
            let Some(len) = buf.get(pos..pos + sh.len_bytes) else {
                *scan = here;
                return Ok(None);
            };
            let n = be(len);
            pos += sh.len_bytes;
            if sh.per_len > 0 {
                pending += (n * sh.per_len) as u64;
            } else {
                body = n + usize::from(sh.ext);
            }
        }
        pending += sh.children as u64;
        if pos.saturating_add(body) > limit {
            return malformed(format!(
                "a message declares more than the {limit} bytes allowed (forward.max_message_bytes)"
            ));
        }
        pos += body;
        if pos > buf.len() {
            *scan = here;
            return Ok(None);
        }
    }
    *scan = Scan::default();
    Ok(Some(pos))
}

/// Reads values one after the other out of a complete buffer.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// An event time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Time {
    pub(crate) secs: u64,
    pub(crate) nanos: u32,
}

impl Time {
    pub(crate) fn as_nanos(self) -> u64 {
        self.secs
            .saturating_mul(1_000_000_000)
            .saturating_add(self.nanos as u64)
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        match self.buf.get(self.pos..self.pos.saturating_add(n)) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => malformed("a value runs past the end of its message"),
        }
    }

    /// The raw bytes of the next value, whatever it is.
    pub(crate) fn value(&mut self) -> Result<&'a [u8], Malformed> {
        match value_len(&self.buf[self.pos..], usize::MAX)? {
            Some(n) => self.take(n),
            None => malformed("a value runs past the end of its message"),
        }
    }

    fn length(
        &mut self,
        fix_base: u8,
        fix_mask: u8,
        m16: u8,
        m32: u8,
        what: &str,
    ) -> Result<usize, Malformed> {
        let Some(m) = self.peek() else {
            return malformed(format!("expected {what}, found the end of the message"));
        };
        self.pos += 1;
        if m & !fix_mask == fix_base {
            return Ok((m & fix_mask) as usize);
        }
        if m == m16 {
            return Ok(be(self.take(2)?));
        }
        if m == m32 {
            return Ok(be(self.take(4)?));
        }
        self.pos -= 1;
        malformed(format!("expected {what}, found {}", describe(m)))
    }

    pub(crate) fn array_len(&mut self) -> Result<usize, Malformed> {
        self.length(0x90, 0x0f, 0xdc, 0xdd, "an array")
    }

    pub(crate) fn map_len(&mut self) -> Result<usize, Malformed> {
        self.length(0x80, 0x0f, 0xde, 0xdf, "a map")
    }

    /// A str or bin value's bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let Some(m) = self.peek() else {
            return malformed("expected a string, found the end of the message");
        };
        let n = match m {
            0xa0..=0xbf => {
                self.pos += 1;
                (m & 0x1f) as usize
            }
            0xd9 | 0xc4 => {
                self.pos += 1;
                be(self.take(1)?)
            }
            0xda | 0xc5 => {
                self.pos += 1;
                be(self.take(2)?)
            }
            0xdb | 0xc6 => {
                self.pos += 1;
                be(self.take(4)?)
            }
            _ => return malformed(format!("expected a string, found {}", describe(m))),
        };
        self.take(n)
    }

    /// A non-negative integer.
    pub(crate) fn uint(&mut self) -> Result<u64, Malformed> {
        let Some(m) = self.peek() else {
            return malformed("expected an integer, found the end of the message");
        };
        let v = match m {
            0x00..=0x7f => {
                self.pos += 1;
                m as u64
            }
            0xcc..=0xcf => {
                self.pos += 1;
                be(self.take(1 << (m - 0xcc))?) as u64
            }
            0xd0..=0xd3 => {
                self.pos += 1;
                let b = self.take(1 << (m - 0xd0))?;
                let neg = b[0] & 0x80 != 0;
                if neg {
                    return malformed("expected a non-negative integer, found a negative one");
                }
                be(b) as u64
            }
            _ => return malformed(format!("expected an integer, found {}", describe(m))),
        };
        Ok(v)
    }

    /// An event time: integer seconds, EventTime (extension type 0: 32-bit seconds and
    /// nanoseconds, big-endian), or a float, which some clients send.
    pub(crate) fn time(&mut self) -> Result<Time, Malformed> {
        let Some(m) = self.peek() else {
            return malformed("expected a time, found the end of the message");
        };
        match m {
            0xd7 | 0xc7 => {
                if m == 0xc7 {
                    self.pos += 1;
                    if self.take(1)? != [8] {
                        return malformed("an extension time must be 8 bytes (EventTime)");
                    }
                } else {
                    self.pos += 1;
                }
                let ty = self.take(1)?[0];
                if ty != 0 {
                    return malformed(format!(
                        "expected EventTime (extension type 0), found extension type {ty}"
                    ));
                }
                let b = self.take(8)?;
                let nanos = be(&b[4..]) as u32;
                if nanos >= 1_000_000_000 {
                    return malformed(format!("EventTime with {nanos} nanoseconds"));
                }
                Ok(Time {
                    secs: be(&b[..4]) as u64,
                    nanos,
                })
            }
            0xca | 0xcb => {
                self.pos += 1;
                let f = if m == 0xca {
                    f32::from_bits(be(self.take(4)?) as u32) as f64
                } else {
                    f64::from_bits(be(self.take(8)?) as u64)
                };
                if !(0.0..1e12).contains(&f) {
                    return malformed(format!("time {f} is out of range"));
                }
                Ok(Time {
                    secs: f.trunc() as u64,
                    nanos: (f.fract() * 1e9) as u32,
                })
            }
            _ => self.uint().map(|secs| Time { secs, nanos: 0 }),
        }
    }
}

/// A marker in words, for error messages.
pub(crate) fn describe(m: u8) -> &'static str {
    match m {
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => "an integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc4..=0xc6 => "binary data",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xca | 0xcb => "a float",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension",
        0xc1 => "the invalid byte 0xc1",
    }
}

/// The writer for the few values the agent sends itself is the format's (one
/// MessagePack writer for both inputs).
pub(crate) use crate::msgpack as write;

/// A value as MessagePack, by rmpv (the reference the tests hold this module to).
#[cfg(test)]
pub(crate) fn test_encode(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::forward::msgpack::test_encode as encode;

    #[test]
    fn value_len_finds_the_end_of_every_kind_of_value_and_waits_for_the_rest() {
        use rmpv::Value as V;
        let values = [
            V::Nil,
            V::from(-3),
            V::from(300),
            V::from(u64::MAX),
            V::from(1.5),
            V::from("x".repeat(40)),
            V::from("y".repeat(70_000)),
            V::Binary(vec![1; 300]),
            V::Ext(0, vec![0; 8]),
            V::Ext(5, vec![0; 3]),
            V::Array((0..20).map(V::from).collect()),
            V::Map(vec![(V::from("a"), V::Array(vec![V::Nil; 3]))]),
        ];
        for v in &values {
            let bytes = encode(v);
            let mut stream = bytes.clone();
            stream.extend_from_slice(&[0x90, 0x90]);
            assert_eq!(
                value_len(&stream, usize::MAX),
                Ok(Some(bytes.len())),
                "{v:?}"
            );
            for cut in 0..bytes.len() {
                assert_eq!(
                    value_len(&bytes[..cut], usize::MAX),
                    Ok(None),
                    "{v:?} cut at {cut}"
                );
            }
        }
    }

    /// A message fed a few bytes at a time, resuming each scan where the last stopped,
    /// ends where a whole scan says, and the work done is linear: no element is scanned
    /// more than twice.
    #[test]
    fn a_resumed_scan_finds_the_same_end() {
        use rmpv::Value as V;
        let v = V::Array(
            (0..5000)
                .map(|i| V::Array(vec![V::from(i), V::Map(vec![(V::from("k"), V::from("v"))])]))
                .collect(),
        );
        let bytes = encode(&v);
        for step in [1, 3, 64, 1000] {
            let mut scan = Scan::default();
            let mut end = None;
            for upto in (step..=bytes.len() + step).step_by(step) {
                let upto = upto.min(bytes.len());
                let before = scan;
                end = value_len_from(&bytes[..upto], usize::MAX, &mut scan).unwrap();
                if end.is_some() {
                    break;
                }
                assert!(scan.pos >= before.pos, "the scan never goes back");
            }
            assert_eq!(end, Some(bytes.len()), "step {step}");
        }
    }

    #[test]
    fn a_declared_size_beyond_the_limit_is_refused_before_it_arrives() {
        // An array32 declaring four billion elements, in five bytes.
        let e = value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff], 1 << 20).unwrap_err();
        assert!(e.0.contains("max_message_bytes"), "{e}");
        let e = value_len(&[0xc6, 0x10, 0, 0, 0], 1 << 20).unwrap_err();
        assert!(e.0.contains("max_message_bytes"), "{e}");
        assert!(value_len(&[0xc1], 10).is_err());
    }

    #[test]
    fn times_in_every_form() {
        let mut b = vec![0xd7, 0x00];
        b.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        b.extend_from_slice(&123_456_789u32.to_be_bytes());
        b.push(0xce);
        b.extend_from_slice(&1_700_000_001u32.to_be_bytes());
        b.push(0xcb);
        b.extend_from_slice(&1_700_000_002.5f64.to_bits().to_be_bytes());
        let mut r = Reader::new(&b);
        assert_eq!(r.time().unwrap().as_nanos(), 1_700_000_000_123_456_789);
        assert_eq!(r.time().unwrap().as_nanos(), 1_700_000_001_000_000_000);
        assert_eq!(r.time().unwrap().as_nanos(), 1_700_000_002_500_000_000);
        assert!(r.is_empty());
        assert!(Reader::new(&[0xa1, b'x']).time().is_err());
    }
}
