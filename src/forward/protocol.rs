//! The Forward protocol v1's messages: which of the four event modes a message is, its
//! events (time and raw record), and its options.
//!
//! Owns the protocol's rules for what a well-formed message is; a message that breaks one
//! is refused whole with a reason naming what is wrong (the connection then closes, and no
//! event of it was produced). It must never hand out an event whose record is not a map.

use std::io::Read;

use super::msgpack::{Malformed, Reader, Time, describe, malformed};

/// One event: its time and its record (the raw bytes of a MessagePack map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event<'a> {
    pub(crate) time: Time,
    pub(crate) record: &'a [u8],
}

/// A message's options.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Options<'a> {
    /// Ask for `{"ack": chunk}` once every event is safe.
    pub(crate) chunk: Option<&'a [u8]>,
    /// The number of events the sender says it sent.
    pub(crate) size: Option<u64>,
    pub(crate) gzip: bool,
}

/// A decoded message; the events of PackedForward are decoded from `packed` on demand.
#[derive(Debug)]
pub(crate) struct Message<'a> {
    pub(crate) tag: &'a [u8],
    pub(crate) options: Options<'a>,
    pub(crate) mode: Mode,
    events: Events<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Message,
    Forward,
    PackedForward,
    CompressedPackedForward,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Message => "Message",
            Mode::Forward => "Forward",
            Mode::PackedForward => "PackedForward",
            Mode::CompressedPackedForward => "CompressedPackedForward",
        }
    }
}

#[derive(Debug)]
enum Events<'a> {
    One(Event<'a>),
    /// The entries array of Forward mode: its element count, then the entries.
    List(usize, &'a [u8]),
    /// A stream of entries (PackedForward), not yet decompressed.
    Packed(&'a [u8]),
}

/// Decodes a complete message (one MessagePack value).
pub(crate) fn parse(frame: &[u8]) -> Result<Message<'_>, Malformed> {
    let mut r = Reader::new(frame);
    let n = r.array_len()?;
    if !(2..=4).contains(&n) {
        return malformed(format!(
            "a message is an array of 2 to 4 elements, this one has {n}"
        ));
    }
    let tag = r.bytes().map_err(|e| Malformed(format!("the tag: {e}")))?;
    if tag.is_empty() {
        return malformed("the tag is empty");
    }
    let Some(m) = r.peek() else {
        return malformed("the message ends after its tag");
    };
    let (mode, events, rest) = match m {
        // Forward: an array of [time, record] entries.
        0x90..=0x9f | 0xdc | 0xdd => {
            let count = r.clone().array_len()?;
            let raw = r.value()?;
            let header = match m {
                0xdc => 3,
                0xdd => 5,
                _ => 1,
            };
            (Mode::Forward, Events::List(count, &raw[header..]), n - 2)
        }
        // PackedForward: entries packed into a str or bin.
        0xa0..=0xbf | 0xd9..=0xdb | 0xc4..=0xc6 => {
            (Mode::PackedForward, Events::Packed(r.bytes()?), n - 2)
        }
        // Message: time, record.
        _ => {
            if n < 3 {
                return malformed(format!(
                    "a message with {} after its tag must be [tag, time, record(, option)]",
                    describe(m)
                ));
            }
            let time = r.time()?;
            let record = record(&mut r)?;
            (Mode::Message, Events::One(Event { time, record }), n - 3)
        }
    };
    let options = match rest {
        0 => Options::default(),
        1 => options(&mut r)?,
        _ => {
            return malformed(format!(
                "{} mode takes [tag, entries(, option)], this message has {n} elements",
                mode.name()
            ));
        }
    };
    if !r.is_empty() {
        return malformed("bytes after the end of the message");
    }
    let mode = match (mode, options.gzip) {
        (Mode::PackedForward, true) => Mode::CompressedPackedForward,
        (m, false) => m,
        (m, true) => {
            return malformed(format!(
                "compressed = \"gzip\" only applies to PackedForward, not to {} mode",
                m.name()
            ));
        }
    };
    Ok(Message {
        tag,
        options,
        mode,
        events,
    })
}

fn record<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], Malformed> {
    let m = r.peek().unwrap_or(0xc1);
    if !matches!(m, 0x80..=0x8f | 0xde | 0xdf) {
        return malformed(format!("a record must be a map, found {}", describe(m)));
    }
    r.value()
}

fn options<'a>(r: &mut Reader<'a>) -> Result<Options<'a>, Malformed> {
    if r.peek() == Some(0xc0) {
        r.value()?;
        return Ok(Options::default());
    }
    let n = r
        .map_len()
        .map_err(|e| Malformed(format!("the option: {e}")))?;
    let mut o = Options::default();
    for _ in 0..n {
        let key = r
            .bytes()
            .map_err(|e| Malformed(format!("an option's name: {e}")))?;
        match key {
            b"chunk" => {
                let c = r
                    .bytes()
                    .map_err(|e| Malformed(format!("option chunk: {e}")))?;
                if c.is_empty() || c.len() > 256 {
                    return malformed("option chunk must be 1 to 256 bytes");
                }
                o.chunk = Some(c);
            }
            b"size" => {
                o.size = Some(
                    r.uint()
                        .map_err(|e| Malformed(format!("option size: {e}")))?,
                )
            }
            b"compressed" => {
                let c = r
                    .bytes()
                    .map_err(|e| Malformed(format!("option compressed: {e}")))?;
                o.gzip = match c {
                    b"gzip" => true,
                    b"text" => false,
                    other => {
                        return malformed(format!(
                            "option compressed = {:?}: only \"gzip\" and \"text\" exist",
                            String::from_utf8_lossy(other)
                        ));
                    }
                };
            }
            // Options of later protocol versions or other senders: not ours to judge.
            _ => {
                r.value()?;
            }
        }
    }
    Ok(o)
}

/// The events of one message, checked whole and counted, read again one by one when sent.
/// Holds no per-event memory: a message of millions of tiny events (a few kilobytes of
/// gzip) costs its decompressed bytes and nothing per event.
#[derive(Debug)]
pub(crate) struct EventList<'a> {
    one: Option<Event<'a>>,
    /// The entries, back to back, and how many (all checked by [`Message::events`]).
    stream: &'a [u8],
    count: usize,
}

impl<'a> EventList<'a> {
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The events, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Event<'a>> + '_ {
        let mut r = Reader::new(self.stream);
        let stream = (0..if self.one.is_some() { 0 } else { self.count })
            // Checked by `events`: every entry reads the same way again.
            .map_while(move |_| entry(&mut r).ok());
        self.one.into_iter().chain(stream)
    }
}

impl<'a> Message<'a> {
    /// The events of this message, every one checked before any is handed out (a
    /// malformed message sends nothing); `scratch` holds a decompressed stream. At most
    /// `limit` bytes are decompressed. Checks the `size` option when given.
    pub(crate) fn events(
        &self,
        scratch: &'a mut Vec<u8>,
        limit: usize,
    ) -> Result<EventList<'a>, Malformed>
    where
        Self: 'a,
    {
        let (one, stream, count) = match self.events {
            Events::One(e) => (Some(e), &[][..], 1),
            Events::List(count, raw) => {
                let mut r = Reader::new(raw);
                for i in 0..count {
                    entry(&mut r).map_err(|e| Malformed(format!("entry {i}: {e}")))?;
                }
                (None, raw, count)
            }
            Events::Packed(raw) => {
                let stream: &'a [u8] = if self.mode == Mode::CompressedPackedForward {
                    scratch.clear();
                    gunzip(raw, limit, scratch)?;
                    scratch
                } else {
                    raw
                };
                let mut r = Reader::new(stream);
                let mut i = 0usize;
                while !r.is_empty() {
                    entry(&mut r).map_err(|e| Malformed(format!("entry {i}: {e}")))?;
                    i += 1;
                }
                (None, stream, i)
            }
        };
        if let Some(size) = self.options.size {
            if size != count as u64 {
                return malformed(format!(
                    "option size says {size} events, the message holds {count}"
                ));
            }
        }
        Ok(EventList { one, stream, count })
    }
}

/// One `[time, record]` entry. Newer Fluent Bit sends `[[time, metadata], record]`: the
/// metadata is not part of the event and is left out.
fn entry<'a>(r: &mut Reader<'a>) -> Result<Event<'a>, Malformed> {
    let n = r.array_len()?;
    if n != 2 {
        return malformed(format!(
            "an entry is [time, record], this one has {n} elements"
        ));
    }
    let time = if matches!(r.peek(), Some(0x92)) {
        r.array_len()?;
        let t = r.time()?;
        r.value()?;
        t
    } else {
        r.time()?
    };
    let record = record(r)?;
    Ok(Event { time, record })
}

/// Decompresses one or more concatenated gzip members (out_forward sends one per
/// appended chunk), refusing more than `limit` bytes of output.
fn gunzip(raw: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), Malformed> {
    let mut d = flate2::read::MultiGzDecoder::new(raw).take(limit as u64 + 1);
    d.read_to_end(out)
        .map_err(|e| Malformed(format!("gzip: {e}")))?;
    if out.len() > limit {
        return malformed(format!(
            "the compressed entries expand beyond {limit} bytes (forward.max_message_bytes)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value as V;

    use crate::forward::msgpack::test_encode as enc;

    fn rec(i: i64) -> V {
        V::Map(vec![
            (V::from("n"), V::from(i)),
            (V::from("bin"), V::Binary(vec![0, 255])),
        ])
    }

    fn event_time(s: u32, ns: u32) -> V {
        let mut b = s.to_be_bytes().to_vec();
        b.extend_from_slice(&ns.to_be_bytes());
        V::Ext(0, b)
    }

    fn records(m: &Message<'_>) -> Vec<V> {
        let mut scratch = Vec::new();
        let evs = m.events(&mut scratch, 1 << 20).unwrap();
        evs.iter()
            .map(|e| rmpv::decode::read_value(&mut &e.record[..]).unwrap())
            .collect()
    }

    #[test]
    fn all_four_modes_give_the_same_events() {
        let entries: Vec<V> = (0..3)
            .map(|i| V::Array(vec![event_time(1_700_000_000, i as u32), rec(i)]))
            .collect();
        let opt = V::Map(vec![
            (V::from("chunk"), V::from("abc")),
            (V::from("size"), V::from(3)),
        ]);

        let forward = enc(&V::Array(vec![
            V::from("app"),
            V::Array(entries.clone()),
            opt.clone(),
        ]));
        let m = parse(&forward).unwrap();
        assert_eq!(
            (m.mode, m.tag, m.options.chunk),
            (Mode::Forward, &b"app"[..], Some(&b"abc"[..]))
        );
        assert_eq!(records(&m), (0..3).map(rec).collect::<Vec<_>>());

        let packed: Vec<u8> = entries.iter().flat_map(enc).collect();
        let pf = enc(&V::Array(vec![
            V::from("app"),
            V::Binary(packed.clone()),
            opt.clone(),
        ]));
        let m = parse(&pf).unwrap();
        assert_eq!(m.mode, Mode::PackedForward);
        assert_eq!(records(&m), (0..3).map(rec).collect::<Vec<_>>());

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &packed[..20]).unwrap();
        let mut z = gz.finish().unwrap();
        // A second gzip member, as out_forward appends them.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &packed[20..]).unwrap();
        z.extend(gz.finish().unwrap());
        let opt_gz = V::Map(vec![
            (V::from("size"), V::from(3)),
            (V::from("compressed"), V::from("gzip")),
        ]);
        let cpf = enc(&V::Array(vec![V::from("app"), V::Binary(z), opt_gz]));
        let m = parse(&cpf).unwrap();
        assert_eq!(m.mode, Mode::CompressedPackedForward);
        assert_eq!(records(&m), (0..3).map(rec).collect::<Vec<_>>());

        let msg = enc(&V::Array(vec![
            V::from("app"),
            V::from(1_700_000_000),
            rec(7),
        ]));
        let m = parse(&msg).unwrap();
        assert_eq!(m.mode, Mode::Message);
        let mut s = Vec::new();
        let e = m.events(&mut s, 100).unwrap();
        assert_eq!(e.iter().next().unwrap().time.secs, 1_700_000_000);
        assert_eq!(records(&m), vec![rec(7)]);
    }

    #[test]
    fn broken_messages_are_refused_with_their_reason() {
        let cases: Vec<(V, &str)> = vec![
            (V::from("x"), "expected an array"),
            (V::Array(vec![V::from("t")]), "2 to 4"),
            (
                V::Array(vec![V::from(""), V::Array(vec![])]),
                "tag is empty",
            ),
            (
                V::Array(vec![V::from("t"), V::from(1), V::from("not a map")]),
                "must be a map",
            ),
            (
                V::Array(vec![
                    V::from("t"),
                    V::Array(vec![V::Array(vec![V::from(1)])]),
                ]),
                "entry 0",
            ),
            (
                V::Array(vec![
                    V::from("t"),
                    V::Array(vec![]),
                    V::Map(vec![(V::from("size"), V::from(2))]),
                ]),
                "option size says 2",
            ),
            (
                V::Array(vec![
                    V::from("t"),
                    V::Binary(vec![1, 2, 3]),
                    V::Map(vec![(V::from("compressed"), V::from("gzip"))]),
                ]),
                "gzip",
            ),
            (
                V::Array(vec![
                    V::from("t"),
                    V::from(1),
                    rec(1),
                    V::Map(vec![(V::from("compressed"), V::from("zstd"))]),
                ]),
                "only \"gzip\"",
            ),
        ];
        for (v, want) in cases {
            let bytes = enc(&v);
            let err = match parse(&bytes) {
                Err(e) => e,
                Ok(m) => m.events(&mut Vec::new(), 1 << 20).unwrap_err(),
            };
            assert!(err.0.contains(want), "{v:?}: {err} (wanted {want:?})");
        }
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &vec![0x90u8; 10 << 20]).unwrap();
        let z = gz.finish().unwrap();
        let opt = V::Map(vec![(V::from("compressed"), V::from("gzip"))]);
        let bytes = enc(&V::Array(vec![V::from("t"), V::Binary(z), opt]));
        let m = parse(&bytes).unwrap();
        let err = m.events(&mut Vec::new(), 1 << 20).unwrap_err();
        assert!(err.0.contains("expand beyond"), "{err}");
    }
}

/// The frame decoder against arbitrary input: no panic, no slice outside the input, no
/// allocation beyond the limit, and well-formed messages found whole however they are cut.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::forward::msgpack::value_len;
    use proptest::prelude::*;
    use rmpv::Value as V;

    fn leaf() -> impl Strategy<Value = V> {
        prop_oneof![
            Just(V::Nil),
            any::<bool>().prop_map(V::from),
            any::<i64>().prop_map(V::from),
            any::<u64>().prop_map(V::from),
            any::<f64>().prop_map(V::from),
            ".{0,40}".prop_map(V::from),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(V::Binary),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(t, b)| V::Ext(t, b)),
        ]
    }

    fn value() -> impl Strategy<Value = V> {
        leaf().prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(V::Array),
                proptest::collection::vec((".{0,8}".prop_map(V::from), inner), 0..8)
                    .prop_map(V::Map),
            ]
        })
    }

    use crate::forward::msgpack::test_encode as enc;

    /// A Forward message of any mode around arbitrary records.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        let record =
            proptest::collection::vec((".{0,8}".prop_map(V::from), value()), 0..6).prop_map(V::Map);
        (
            proptest::collection::vec((any::<u32>(), record), 1..6),
            0..3u8,
        )
            .prop_map(|(events, mode)| {
                let entries: Vec<V> = events
                    .iter()
                    .map(|(t, r)| V::Array(vec![V::from(*t), r.clone()]))
                    .collect();
                let chunk = V::Map(vec![(V::from("chunk"), V::from("c"))]);
                enc(&match mode {
                    0 => V::Array(vec![
                        V::from("t"),
                        V::from(events[0].0),
                        events[0].1.clone(),
                        chunk,
                    ]),
                    1 => V::Array(vec![V::from("t"), V::Array(entries), chunk]),
                    _ => V::Array(vec![
                        V::from("t"),
                        V::Binary(entries.iter().flat_map(enc).collect()),
                        chunk,
                    ]),
                })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some(n)) = value_len(&bytes, 1 << 16) {
                prop_assert!(n <= bytes.len());
                if let Ok(m) = parse(&bytes[..n]) {
                    let mut scratch = Vec::new();
                    let _ = m.events(&mut scratch, 1 << 16);
                    prop_assert!(scratch.capacity() <= 4 << 16);
                }
            }
        }

        #[test]
        fn value_len_is_exact_for_every_value(v in value()) {
            let b = enc(&v);
            prop_assert_eq!(value_len(&b, usize::MAX), Ok(Some(b.len())));
        }

        #[test]
        fn a_message_cut_anywhere_is_found_whole(m in message(), cut in any::<prop::sample::Index>()) {
            let at = cut.index(m.len());
            prop_assert_eq!(value_len(&m[..at], usize::MAX), Ok(None));
            prop_assert_eq!(value_len(&m, usize::MAX), Ok(Some(m.len())));
            let parsed = parse(&m).unwrap();
            let mut scratch = Vec::new();
            let events = parsed.events(&mut scratch, 1 << 20).unwrap();
            prop_assert!(events.len() > 0);
            prop_assert_eq!(events.iter().count(), events.len());
            prop_assert_eq!(parsed.options.chunk, Some(&b"c"[..]));
        }

        #[test]
        fn corrupted_messages_never_panic(m in message(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let mut m = m;
            for (i, b) in flips {
                let at = i.index(m.len());
                m[at] = b;
            }
            if let Ok(Some(n)) = value_len(&m, 1 << 20) {
                if let Ok(p) = parse(&m[..n]) {
                    let mut scratch = Vec::new();
                    let _ = p.events(&mut scratch, 1 << 20);
                }
            }
        }
    }
}
