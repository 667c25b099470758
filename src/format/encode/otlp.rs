//! The OTLP layout: the same selection, names, grouping and truncation as the other
//! formats, written as a `LogsData` with one resource, one scope and one log record.
//!
//! What goes where (docs/format.md has the reader's copy): the time is the entry's
//! `__REALTIME_TIMESTAMP`; `PRIORITY` gives the severity; `MESSAGE` is the body; every other
//! field, and the journal's address fields, is an attribute, so that the record holds the
//! whole entry and reads back into it (`format::otlp::decode`). The resource names the host
//! and the service from the entry's own fields, never from the agent's host: in a central
//! collector each entry comes from another machine. A resource attribute is only ever a
//! copy of a field the record carries, so a field left out by the selection stays out.
//!
//! Written without a buffer per nesting level: the log record goes into `out` first, its
//! wrappers (whose lengths depend on it) are appended after it and rotated to the front.

use std::borrow::Cow;

use super::super::otlp::*;
use super::{Encoder, Outcome, priority_name, truncated_text};
use crate::format::{DAMAGED_FIELD, TRUNCATED_FIELD};
use crate::journal::{Entry, cursor};

/// An attribute's value.
#[derive(Clone, Copy)]
enum Any<'a> {
    /// A string when UTF-8, else bytes (OTLP strings must be UTF-8).
    Raw(&'a [u8]),
    /// A number; written as text past `i64::MAX` (OTLP integers are signed).
    Int(u64),
    /// Every value of a group of the entry's fields: one value alone, else an array.
    Group(usize),
}

/// The groups the layout places apart (by index: `MESSAGE`, …), found in one pass over
/// the groups, with the journal names they are found by.
struct Known([Option<usize>; 8]);

const MESSAGE: usize = 0;
const PRIORITY: usize = 1;
const HOSTNAME: usize = 2;
const MACHINE_ID: usize = 3;
const BOOT_ID: usize = 4;
const UNIT: usize = 5;
const IDENTIFIER: usize = 6;
const COMM: usize = 7;
const KNOWN_NAMES: [&[u8]; 8] = [
    b"MESSAGE",
    b"PRIORITY",
    b"_HOSTNAME",
    b"_MACHINE_ID",
    b"_BOOT_ID",
    b"_SYSTEMD_UNIT",
    b"SYSLOG_IDENTIFIER",
    b"_COMM",
];

impl Encoder {
    pub(super) fn write_otlp(&self, e: &Entry, outcome: &Outcome, out: &mut Vec<u8>) {
        let known = self.known(e);
        let time = e.realtime_usec.checked_mul(1000);
        if let Some(t) = time {
            tag(out, RECORD_TIME, FIXED64);
            out.extend_from_slice(&t.to_le_bytes());
        }
        let priority = known.0[PRIORITY].map(|g| self.first(e, g));
        if let Some((number, text)) = priority.and_then(severity) {
            tag(out, RECORD_SEVERITY_NUMBER, VARINT);
            varint(out, number);
            delimited(out, RECORD_SEVERITY_TEXT, text.as_bytes());
        }
        if let Some(g) = known.0[MESSAGE] {
            self.any(e, out, RECORD_BODY, Any::Group(g));
        }
        self.attributes(e, outcome, &known, time.is_none(), out);
        if self.observed_ns != 0 {
            tag(out, RECORD_OBSERVED_TIME, FIXED64);
            out.extend_from_slice(&self.observed_ns.to_le_bytes());
        }
        self.wrap(e, &known, out);
    }

    fn attributes(
        &self,
        e: &Entry,
        outcome: &Outcome,
        known: &Known,
        realtime_attribute: bool,
        out: &mut Vec<u8>,
    ) {
        let mut attribute = |key: &[u8], v: Any| self.key_value(e, out, RECORD_ATTRIBUTES, key, v);
        attribute(b"__CURSOR", Any::Raw(e.cursor.as_bytes()));
        if realtime_attribute {
            attribute(b"__REALTIME_TIMESTAMP", Any::Int(e.realtime_usec));
        }
        attribute(b"__MONOTONIC_TIMESTAMP", Any::Int(e.monotonic_usec));
        if let Some((id, n)) = cursor::seqnum(&e.cursor) {
            attribute(b"__SEQNUM", Any::Int(n));
            attribute(b"__SEQNUM_ID", Any::Raw(id.as_bytes()));
        }
        let mut buf = Vec::new();
        if !self.has_boot_field && !e.boot_id.is_empty() {
            attribute(
                self.name(b"_BOOT_ID", &mut buf),
                Any::Raw(e.boot_id.as_bytes()),
            );
        }
        for (g, group) in self.groups.iter().enumerate() {
            if Some(g) != known.0[MESSAGE] {
                let name = e.field(group.first as usize).0;
                attribute(self.name(name, &mut buf), Any::Group(g));
            }
        }
        for (k, v) in &self.add_fields {
            if self.adds(e, k) {
                attribute(self.name(k, &mut buf), Any::Raw(v));
            }
        }
        if self.priority_name {
            let name = known.0[PRIORITY].and_then(|g| priority_name(self.first(e, g)));
            if let Some(p) = name {
                attribute(
                    self.name(b"PRIORITY_NAME", &mut buf),
                    Any::Raw(p.as_bytes()),
                );
            }
        }
        if !outcome.truncated.is_empty() {
            let text = truncated_text(outcome);
            attribute(TRUNCATED_FIELD.as_bytes(), Any::Raw(text.as_bytes()));
        }
        if let Some(why) = &e.damaged {
            attribute(DAMAGED_FIELD.as_bytes(), Any::Raw(why.as_bytes()));
        }
    }

    /// Appends the resource, the scope and the wrappers, then rotates them in front of the
    /// log record already in `out`.
    fn wrap(&self, e: &Entry, known: &Known, out: &mut Vec<u8>) {
        let record = out.len();
        let resource = self.resource(e, known);
        let resource = || {
            resource
                .iter()
                .filter_map(|(k, v)| Some((*k, Any::Raw((*v)?))))
        };
        let resource_body: usize = resource()
            .map(|(k, v)| delimited_len(self.key_value_len(e, k, v)))
            .sum();
        let version = env!("CARGO_PKG_VERSION").as_bytes();
        let scope_body = delimited_len(SCOPE.len()) + delimited_len(version.len());
        let scope_logs = delimited_len(scope_body) + delimited_len(record);
        let resource_logs = delimited_len(resource_body) + delimited_len(scope_logs);

        tag(out, LOGS_DATA_RESOURCE_LOGS, LEN);
        varint(out, resource_logs as u64);
        tag(out, RESOURCE_LOGS_RESOURCE, LEN);
        varint(out, resource_body as u64);
        for (k, v) in resource() {
            self.key_value(e, out, RESOURCE_ATTRIBUTES, k, v);
        }
        tag(out, RESOURCE_LOGS_SCOPE_LOGS, LEN);
        varint(out, scope_logs as u64);
        tag(out, SCOPE_LOGS_SCOPE, LEN);
        varint(out, scope_body as u64);
        delimited(out, SCOPE_NAME, SCOPE.as_bytes());
        delimited(out, SCOPE_VERSION, version);
        tag(out, SCOPE_LOGS_LOG_RECORDS, LEN);
        varint(out, record as u64);
        let prefix = out.len() - record;
        out.rotate_right(prefix);
    }

    /// The host and the service, as OpenTelemetry's semantic conventions name them, from
    /// fields journald sets itself when it can (`_SYSTEMD_UNIT` before what a program says of
    /// itself). Values that are not UTF-8 are left out: these are strings by convention.
    fn resource<'e>(&self, e: &'e Entry, known: &Known) -> [(&'static [u8], Option<&'e [u8]>); 4] {
        let text = |g: Option<usize>| {
            g.map(|g| self.first(e, g))
                .filter(|v| std::str::from_utf8(v).is_ok())
        };
        // The header's boot id exactly when the record carries it as `_BOOT_ID` (the entry
        // has none of its own): an excluded `_BOOT_ID` stays out.
        let header_boot =
            Some(e.boot_id.as_bytes()).filter(|b| !b.is_empty() && !self.has_boot_field);
        let boot = text(known.0[BOOT_ID]).or(header_boot);
        let service = text(known.0[UNIT])
            .or_else(|| text(known.0[IDENTIFIER]))
            .or_else(|| text(known.0[COMM]));
        [
            (&b"host.name"[..], text(known.0[HOSTNAME])),
            (b"host.id", text(known.0[MACHINE_ID])),
            // Not (yet) an OpenTelemetry convention; Elastic's ECS name for the same thing.
            (b"host.boot.id", boot),
            (b"service.name", service),
        ]
    }

    /// Finds the fields the layout places apart by their journal names, or by the names
    /// the profile gives them: an entry read back from a record under the profile (the
    /// refusal policy re-encodes those) has its fields under the profile's names.
    fn known(&self, e: &Entry) -> Known {
        let mut found = [None; 8];
        let mut buf = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let name = e.field(group.first as usize).0;
            let at = KNOWN_NAMES.iter().position(|n| *n == name).or_else(|| {
                (self.lowercase || self.strip)
                    .then(|| {
                        KNOWN_NAMES
                            .iter()
                            .position(|n| self.name(n, &mut buf) == name)
                    })
                    .flatten()
            });
            if let Some(i) = at {
                found[i] = Some(g);
            }
        }
        Known(found)
    }

    /// The first value of group `g`, as truncation left it.
    fn first<'e>(&self, e: &'e Entry, g: usize) -> &'e [u8] {
        self.value(e, self.groups[g].first as usize)
    }

    fn key_value(&self, e: &Entry, out: &mut Vec<u8>, field: u32, key: &[u8], v: Any) {
        let key = utf8(key);
        tag(out, field, LEN);
        varint(out, self.key_value_len(e, &key, v) as u64);
        delimited(out, KEY_VALUE_KEY, &key);
        self.any(e, out, KEY_VALUE_VALUE, v);
    }

    fn key_value_len(&self, e: &Entry, key: &[u8], v: Any) -> usize {
        delimited_len(utf8(key).len()) + delimited_len(self.any_len(e, v))
    }

    /// Writes `v` as an `AnyValue` in field `field`.
    fn any(&self, e: &Entry, out: &mut Vec<u8>, field: u32, v: Any) {
        tag(out, field, LEN);
        varint(out, self.any_len(e, v) as u64);
        match v {
            Any::Raw(b) => raw(out, b),
            Any::Int(n) => match i64::try_from(n) {
                Ok(_) => {
                    tag(out, ANY_INT, VARINT);
                    varint(out, n);
                }
                Err(_) => raw(out, n.to_string().as_bytes()),
            },
            Any::Group(g) if self.groups[g].count == 1 => raw(out, self.first(e, g)),
            Any::Group(g) => {
                tag(out, ANY_ARRAY, LEN);
                varint(out, self.array_len(e, g) as u64);
                for i in self.members(g) {
                    let v = self.value(e, i);
                    tag(out, ARRAY_VALUES, LEN);
                    varint(out, delimited_len(v.len()) as u64);
                    raw(out, v);
                }
            }
        }
    }

    /// The size of the `AnyValue` body `any` writes.
    fn any_len(&self, e: &Entry, v: Any) -> usize {
        match v {
            Any::Raw(b) => delimited_len(b.len()),
            Any::Int(n) => match i64::try_from(n) {
                Ok(_) => 1 + varint_len(n),
                Err(_) => delimited_len(n.to_string().len()),
            },
            Any::Group(g) if self.groups[g].count == 1 => delimited_len(self.first(e, g).len()),
            Any::Group(g) => delimited_len(self.array_len(e, g)),
        }
    }

    /// The size of group `g`'s `ArrayValue` body.
    fn array_len(&self, e: &Entry, g: usize) -> usize {
        self.members(g)
            .map(|i| delimited_len(delimited_len(self.value(e, i).len())))
            .sum()
    }

    /// The indexes of group `g`'s fields, in the entry's order.
    fn members(&self, g: usize) -> impl Iterator<Item = usize> + '_ {
        let first = self.groups[g].first as usize;
        (first..self.group_of.len()).filter(move |&i| self.group_of[i] == g as u32)
    }
}

/// One value as the body of an `AnyValue`: a string when it is UTF-8, else bytes.
fn raw(out: &mut Vec<u8>, v: &[u8]) {
    let field = if v.is_ascii() || std::str::from_utf8(v).is_ok() {
        ANY_STRING
    } else {
        ANY_BYTES
    };
    delimited(out, field, v);
}

/// A key as OTLP requires it (UTF-8): journal field names are ASCII, so only a damaged or
/// hostile file makes this copy.
fn utf8(key: &[u8]) -> Cow<'_, [u8]> {
    match String::from_utf8_lossy(key) {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use crate::format::decode;
    use crate::format::encode::tests::{encoder, entry};
    use crate::journal::Entry;
    use proptest::prelude::*;

    fn sorted(mut f: Vec<(String, crate::format::Value)>) -> Vec<(String, crate::format::Value)> {
        f.sort_by(|a, b| a.0.cmp(&b.0));
        f
    }

    /// OTLP reads back into exactly the fields MessagePack does: the two layouts carry the
    /// same entry.
    fn same_as_msgpack(extra: &str, e: &Entry) -> Vec<u8> {
        let mut m = Vec::new();
        encoder(extra).encode(e, &mut m);
        let mut o = Vec::new();
        let otlp = match extra.strip_prefix("[encoding]\n") {
            Some(rest) => format!("[encoding]\nformat = \"otlp\"\n{rest}"),
            None => format!("{extra}\n[encoding]\nformat = \"otlp\"\n"),
        };
        let mut enc = encoder(&otlp);
        enc.observed_at(std::time::SystemTime::now());
        enc.encode(e, &mut o);
        assert_eq!(sorted(decode(&o).unwrap()), sorted(decode(&m).unwrap()));
        o
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn every_field_reads_back_and_the_resource_names_host_and_service() {
        let e = entry(&[
            (b"MESSAGE", b"hello\nworld"),
            (b"PRIORITY", b"4"),
            (b"TAG", b"a"),
            (b"BLOB", &[0, 0xff, 1]),
            (b"TAG", &[0xc3]),
            (b"_HOSTNAME", b"web-1"),
            (b"_MACHINE_ID", b"0123456789abcdef0123456789abcdef"),
            (b"SYSLOG_IDENTIFIER", b"app"),
            (b"_SYSTEMD_UNIT", b"app.service"),
        ]);
        let o = same_as_msgpack("", &e);
        for want in [
            &b"\x0a\x09host.name\x12\x07\x0a\x05web-1"[..],
            b"\x0a\x0cservice.name\x12\x0d\x0a\x0bapp.service",
            b"host.id",
            b"host.boot.id",
            b"\x10\x0d\x1a\x07warning", // severity WARN (13), text
        ] {
            assert!(
                contains(&o, want),
                "{:?} in {:?}",
                String::from_utf8_lossy(want),
                o
            );
        }
    }

    #[test]
    fn a_field_left_out_is_not_copied_into_the_resource() {
        let e = entry(&[(b"MESSAGE", b"m"), (b"_HOSTNAME", b"secret-host")]);
        let o = same_as_msgpack("[encoding]\nexclude_fields = [\"_HOSTNAME\"]", &e);
        assert!(!contains(&o, b"secret-host"));
    }

    #[test]
    fn an_excluded_boot_id_is_not_taken_from_the_header_either() {
        let e = entry(&[
            (b"MESSAGE", b"m"),
            (b"_BOOT_ID", b"0123456789abcdef0123456789abcdef"),
        ]);
        let o = same_as_msgpack("[encoding]\nexclude_fields = [\"_BOOT_ID\"]", &e);
        assert!(!contains(&o, b"0123456789abcdef0123456789abcdef"));
        // (The header's boot id is in `__CURSOR`, as in every format.)
        assert!(!contains(&o, b"host.boot.id"));
    }

    /// The refusal policy re-encodes an entry read back from its record: under the name
    /// profile its fields carry the profile's names, and severity and resource survive.
    #[test]
    fn severity_and_resource_survive_a_re_encoding_under_the_name_profile() {
        let profile =
            "[encoding]\nformat = \"otlp\"\nlowercase_names = true\nstrip_underscore = true\n";
        let e = entry(&[
            (b"MESSAGE", b"m"),
            (b"PRIORITY", b"3"),
            (b"_HOSTNAME", b"web-1"),
            (b"_SYSTEMD_UNIT", b"app.service"),
        ]);
        let mut enc = encoder(profile);
        let mut first = Vec::new();
        enc.encode(&e, &mut first);
        let (back, prior) = crate::format::to_entry(decode(&first).unwrap()).unwrap();
        let mut again = Vec::new();
        enc.encode_within(&back, &mut again, 100_000, prior);
        for want in [
            &b"\x10\x11\x1a\x03err"[..],
            b"host.name",
            b"service.name",
            b"app.service",
        ] {
            assert!(
                contains(&first, want) && contains(&again, want),
                "{:?}",
                String::from_utf8_lossy(want)
            );
        }
    }

    #[test]
    fn times_beyond_what_nanoseconds_hold_and_huge_numbers_read_back_exactly() {
        let mut e = entry(&[(b"MESSAGE", b"m")]);
        e.realtime_usec = u64::MAX;
        e.monotonic_usec = u64::MAX - 1;
        same_as_msgpack("", &e);
    }

    #[test]
    fn an_oversized_entry_is_cut_to_fit_and_marked() {
        let big = vec![b'x'; 50_000];
        let e = entry(&[(b"MESSAGE", &big), (b"OTHER", b"y")]);
        let mut enc = encoder("[encoding]\nformat = \"otlp\"\nmax_record_bytes = 10000\n");
        let mut o = Vec::new();
        let outcome = enc.encode(&e, &mut o);
        assert!(o.len() <= 10_000, "{}", o.len());
        assert_eq!(outcome.truncated, vec![("MESSAGE".to_string(), 50_000)]);
        let f = decode(&o).unwrap();
        assert!(f.iter().any(|(k, _)| k == "JOURNALD_KAFKA_TRUNCATED"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn arbitrary_entries_read_back_like_msgpack(
            fields in prop::collection::vec(
                (prop::sample::select(vec!["MESSAGE", "PRIORITY", "A", "_HOSTNAME", "_BOOT_ID", "SYSLOG_IDENTIFIER", "_COMM"]),
                 prop::collection::vec(any::<u8>(), 0..300)),
                0..12),
        ) {
            let fields: Vec<(&[u8], &[u8])> =
                fields.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())).collect();
            same_as_msgpack("", &entry(&fields));
        }
    }
}
