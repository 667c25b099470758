//! Encoding: one journal entry in, one Kafka record's bytes out (value, key, topic).
//!
//! Holds scratch space so that encoding allocates nothing per entry in the steady state.

use super::{DAMAGED_FIELD, TRUNCATED_FIELD, msgpack};
use crate::config::{EncodingConfig, FieldPattern, Format, KafkaConfig, TopicPart};
use crate::journal::{Entry, cursor};

/// Room left for the record's key, headers and Kafka's own per-record overhead.
const RECORD_OVERHEAD: usize = 512;

/// What the encoder had to do to an entry, for the caller to count and log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Fields cut to make the record fit, with their original lengths.
    pub truncated: Vec<(String, usize)>,
}

/// Turns entries into record values. Holds scratch space so encoding does not allocate
/// per entry.
pub struct Encoder {
    format: Format,
    include: Vec<FieldPattern>,
    exclude: Vec<FieldPattern>,
    max_record_bytes: usize,
    topic: Vec<TopicPart>,
    topic_fallback: Option<String>,
    /// Topics a template may not make from an entry's fields (`config::made_topic_usable`).
    reserved: Vec<String>,
    /// Fields whose first values, joined by `key_separator`, key the record.
    key_fields: Vec<Vec<u8>>,
    key_separator: Vec<u8>,
    /// Extra headers: name and template.
    headers: Vec<(String, Vec<TopicPart>)>,
    /// Static fields added to every record, and whether they replace the entry's own.
    add_fields: Vec<(Vec<u8>, Vec<u8>)>,
    add_override: bool,
    /// The opt-in name profile (see `EncodingConfig`).
    lowercase: bool,
    strip: bool,
    priority_name: bool,
    /// Group index + 1 by hash (0: empty), for the first `GROUP_SLOTS / 2` groups.
    slots: [u8; GROUP_SLOTS],
    /// Whether any setting can leave a field out (else every field is selected).
    selecting: bool,
    /// Groups of selected fields, in the order their names first appear.
    groups: Vec<Group>,
    /// For each field of the entry, the index of its group (`NO_GROUP`: not selected).
    group_of: Vec<u32>,
    /// The entry has its own `_BOOT_ID` field (found while grouping).
    has_boot_field: bool,
    /// Per-field byte caps used when truncating, indexed like the entry's fields.
    caps: Vec<Option<usize>>,
}

impl Encoder {
    pub fn new(enc: &EncodingConfig, kafka: &KafkaConfig) -> Encoder {
        Encoder {
            format: enc.format,
            include: enc.include_fields.clone(),
            exclude: enc.exclude_fields.clone(),
            max_record_bytes: enc.max_record_bytes,
            topic: kafka.topic.clone(),
            topic_fallback: kafka.topic_fallback.clone(),
            reserved: vec![
                crate::config::DEFAULT_CURSOR_TOPIC.to_string(),
                crate::config::DEFAULT_DEAD_LETTER_TOPIC.to_string(),
            ],
            key_fields: kafka
                .key_fields
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            key_separator: kafka.key_separator.as_bytes().to_vec(),
            headers: kafka.headers.clone(),
            add_fields: enc
                .add_fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            add_override: enc.add_fields_override,
            lowercase: enc.lowercase_names,
            strip: enc.strip_underscore,
            priority_name: enc.priority_name,
            selecting: !enc.include_fields.is_empty()
                || !enc.exclude_fields.is_empty()
                || (enc.add_fields_override && !enc.add_fields.is_empty()),
            slots: [0; GROUP_SLOTS],
            groups: Vec::new(),
            group_of: Vec::new(),
            has_boot_field: false,
            caps: Vec::new(),
        }
    }

    fn selected(&self, name: &[u8]) -> bool {
        !self.selecting
            || (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
                && !self.exclude.iter().any(|p| p.matches(name))
                && !(self.add_override && self.add_fields.iter().any(|(k, _)| k == name))
    }

    /// A field's name as the profile writes it; `buf` holds a changed name.
    fn name<'a>(&self, raw: &'a [u8], buf: &'a mut Vec<u8>) -> &'a [u8] {
        if !self.lowercase && !self.strip {
            return raw;
        }
        let mut n = raw;
        if self.strip && n.len() > 1 && n[0] == b'_' && n[1] != b'_' {
            n = &n[1..];
        }
        if !self.lowercase {
            return n;
        }
        buf.clear();
        buf.extend(n.iter().map(u8::to_ascii_lowercase));
        buf
    }

    /// Whether the added field `name` goes into this entry's record: always when it
    /// overrides, else only when the entry has no field of that name (the entry's wins).
    fn adds(&self, e: &Entry, name: &[u8]) -> bool {
        self.add_override
            || !self
                .groups
                .iter()
                .any(|g| e.field(g.first as usize).0 == name)
    }

    /// Encodes `e` into `out` (cleared first). Oversized entries are truncated per the
    /// documented policy: the largest field is cut, repeatedly, until the record fits, and
    /// a `JOURNALD_KAFKA_TRUNCATED` field lists what was cut.
    pub fn encode(&mut self, e: &Entry, out: &mut Vec<u8>) -> Outcome {
        self.encode_within(e, out, self.max_record_bytes, Vec::new())
    }

    /// [`Encoder::encode`] with a smaller limit than the configured one (a record the
    /// brokers refused as too large), keeping the fields an earlier encoding already cut
    /// (`prior`, with their original lengths) in the marker.
    pub(crate) fn encode_within(
        &mut self,
        e: &Entry,
        out: &mut Vec<u8>,
        max_record_bytes: usize,
        prior: Vec<(String, usize)>,
    ) -> Outcome {
        self.group(e);
        self.caps.clear();
        self.caps.resize(e.len(), None);
        let budget = max_record_bytes.saturating_sub(RECORD_OVERHEAD + e.cursor.len());
        let mut outcome = Outcome { truncated: prior };
        loop {
            out.clear();
            self.write(e, &outcome, out);
            if out.len() <= budget {
                return outcome;
            }
            let excess = out.len() - budget;
            // The largest value that is still long enough to give back what we need.
            let Some((i, len)) = (0..e.len())
                .filter(|&i| self.group_of[i] != NO_GROUP)
                .map(|i| (i, self.capped_len(e, i)))
                .max_by_key(|&(_, len)| len)
            else {
                return outcome;
            };
            if len == 0 {
                // Nothing left to cut: the names alone exceed the limit. Ship as is; the
                // broker's refusal is then handled like any other permanent failure.
                return outcome;
            }
            // Cut a little more than the excess: the marker field itself needs room.
            let new_len = len.saturating_sub(excess + 64 + TRUNCATED_FIELD.len());
            let value = e.field(i).1;
            let new_len = utf8_floor(value, new_len);
            self.caps[i] = Some(new_len);
            let name = String::from_utf8_lossy(e.field(i).0).into_owned();
            match outcome.truncated.iter_mut().find(|(n, _)| *n == name) {
                Some(_) => {}
                None => outcome.truncated.push((name, value.len())),
            }
        }
    }

    fn capped_len(&self, e: &Entry, i: usize) -> usize {
        let len = e.field(i).1.len();
        self.caps[i].map_or(len, |c| c.min(len))
    }

    fn value<'e>(&self, e: &'e Entry, i: usize) -> &'e [u8] {
        let v = e.field(i).1;
        match self.caps[i] {
            Some(c) if c < v.len() => &v[..c],
            _ => v,
        }
    }

    /// Groups repeated fields, keeping the order in which names first appear. Names are
    /// compared by a hash first: a 17-field entry would otherwise cost ~140 name
    /// comparisons, one of the encoder's largest costs in the profile.
    fn group(&mut self, e: &Entry) {
        self.slots = [0; GROUP_SLOTS];
        self.groups.clear();
        self.group_of.clear();
        self.has_boot_field = false;
        for i in 0..e.len() {
            let name = e.field(i).0;
            if name == b"_BOOT_ID" {
                self.has_boot_field = true;
            }
            if !self.selected(name) {
                self.group_of.push(NO_GROUP);
                continue;
            }
            let hash = name_hash(name);
            let found = self.find_group(e, name, hash);
            match found {
                Some(g) => {
                    self.groups[g].count += 1;
                    self.group_of.push(g as u32);
                }
                None => {
                    self.remember_group(hash);
                    self.group_of.push(self.groups.len() as u32);
                    self.groups.push(Group {
                        first: i as u32,
                        hash,
                        count: 1,
                    });
                }
            }
        }
    }

    /// The group already holding `name`: a small open-addressing table over the hash (a
    /// linear search of the groups was a fifth of the encoder's time at ~20 fields, #19).
    fn find_group(&self, e: &Entry, name: &[u8], hash: u64) -> Option<usize> {
        let is = |g: &Group| g.hash == hash && e.field(g.first as usize).0 == name;
        let mut at = (hash >> 57) as usize % GROUP_SLOTS;
        loop {
            let g = self.slots[at];
            if g == 0 {
                break;
            }
            if is(&self.groups[usize::from(g - 1)]) {
                return Some(usize::from(g - 1));
            }
            at = (at + 1) % GROUP_SLOTS;
        }
        // Groups past what the table holds (an unusual entry) are searched the slow way.
        let tabled = GROUP_SLOTS / 2;
        self.groups
            .iter()
            .skip(tabled)
            .position(is)
            .map(|i| i + tabled)
    }

    /// Enters the next group (index `groups.len()`) in the table, while it has room (at
    /// most half full, so a search always meets an empty slot).
    fn remember_group(&mut self, hash: u64) {
        let index = self.groups.len();
        if index >= GROUP_SLOTS / 2 {
            return;
        }
        let mut at = (hash >> 57) as usize % GROUP_SLOTS;
        while self.slots[at] != 0 {
            at = (at + 1) % GROUP_SLOTS;
        }
        self.slots[at] = index as u8 + 1;
    }

    fn write(&self, e: &Entry, outcome: &Outcome, out: &mut Vec<u8>) {
        // The non-allocating parse: this runs once per entry.
        let seq = cursor::seqnum(&e.cursor);
        let add_boot = !self.has_boot_field && !e.boot_id.is_empty();
        let added = self
            .add_fields
            .iter()
            .filter(|(k, _)| self.adds(e, k))
            .count();
        let priority = self
            .priority_name
            .then(|| e.get(b"PRIORITY"))
            .flatten()
            .and_then(priority_name);
        let n = 3
            + if seq.is_some() { 2 } else { 0 }
            + usize::from(add_boot)
            + self.groups.len()
            + added
            + usize::from(priority.is_some())
            + usize::from(!outcome.truncated.is_empty())
            + usize::from(e.damaged.is_some());
        let mut w = Writer::new(self.format, out);
        w.begin_map(n);
        w.key(b"__CURSOR");
        w.str_value(e.cursor.as_bytes());
        w.key(b"__REALTIME_TIMESTAMP");
        w.uint(e.realtime_usec);
        w.key(b"__MONOTONIC_TIMESTAMP");
        w.uint(e.monotonic_usec);
        if let Some((id, n)) = seq {
            w.key(b"__SEQNUM");
            w.uint(n);
            w.key(b"__SEQNUM_ID");
            w.str_value(id.as_bytes());
        }
        let mut buf = Vec::new();
        if add_boot {
            w.key(self.name(b"_BOOT_ID", &mut buf));
            w.str_value(e.boot_id.as_bytes());
        }
        for (g, group) in self.groups.iter().enumerate() {
            let first = group.first as usize;
            w.key(self.name(e.field(first).0, &mut buf));
            if group.count == 1 {
                w.value(self.value(e, first));
            } else {
                w.begin_array(group.count as usize);
                for i in first..e.len() {
                    if self.group_of[i] == g as u32 {
                        w.value(self.value(e, i));
                    }
                }
                w.end_array();
            }
        }
        for (k, v) in &self.add_fields {
            if self.adds(e, k) {
                w.key(self.name(k, &mut buf));
                w.value(v);
            }
        }
        if let Some(p) = priority {
            w.key(self.name(b"PRIORITY_NAME", &mut buf));
            w.str_value(p.as_bytes());
        }
        if !outcome.truncated.is_empty() {
            w.key(TRUNCATED_FIELD.as_bytes());
            let mut text = String::new();
            for (k, (name, len)) in outcome.truncated.iter().enumerate() {
                if k > 0 {
                    text.push(' ');
                }
                text.push_str(&format!("{name}={len}"));
            }
            w.str_value(text.as_bytes());
        }
        if let Some(why) = &e.damaged {
            w.key(DAMAGED_FIELD.as_bytes());
            w.str_value(why.as_bytes());
        }
        w.end_map();
    }

    /// The record key into `out`: the first values of the key fields joined by the
    /// separator (a missing field is an empty part). False: no key (none configured, or
    /// the entry has none of the fields).
    pub fn key(&self, e: &Entry, out: &mut Vec<u8>) -> bool {
        out.clear();
        let mut any = false;
        for (i, k) in self.key_fields.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(&self.key_separator);
            }
            if let Some(v) = e.get(k) {
                out.extend_from_slice(v);
                any = true;
            }
        }
        any
    }

    /// The configured extra headers for `e` (name, value); a header whose template names
    /// a field the entry lacks is left out.
    pub fn headers<'s>(&'s self, e: &Entry) -> Vec<(&'s str, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.headers.len());
        'headers: for (name, parts) in &self.headers {
            let mut v = Vec::new();
            for p in parts {
                match p {
                    TopicPart::Literal(l) => v.extend_from_slice(l.as_bytes()),
                    TopicPart::Field(f) => match e.get(f.as_bytes()) {
                        Some(x) => v.extend_from_slice(x),
                        None => continue 'headers,
                    },
                }
            }
            out.push((name.as_str(), v));
        }
        out
    }

    /// Adds the configured own topics of the agent to those a template may not make
    /// (the defaults are always there).
    pub(crate) fn reserve(mut self, delivery: &crate::config::DeliveryConfig) -> Encoder {
        self.reserved = delivery.reserved_topics();
        self
    }

    /// The record's topic. Returns false when a template made a name that may not be used
    /// (`config::made_topic_usable`: too long, "." or "..", or an internal "__" name) and
    /// the fallback was used instead.
    pub fn topic(&self, e: &Entry, out: &mut String) -> bool {
        let fallback = |out: &mut String| {
            out.clear();
            out.push_str(self.topic_fallback.as_deref().unwrap_or("journal"));
        };
        out.clear();
        // A fixed topic was checked with the configuration; only field values can make an
        // invalid name.
        let mut from_fields = false;
        for part in &self.topic {
            match part {
                TopicPart::Literal(l) => out.push_str(l),
                TopicPart::Field(f) => match e.get(f.as_bytes()) {
                    Some(v) if !v.is_empty() => {
                        from_fields = true;
                        crate::config::push_topic_part(out, v);
                    }
                    _ => {
                        fallback(out);
                        return true;
                    }
                },
            }
        }
        if from_fields && !crate::config::made_topic_usable(out, &self.reserved) {
            fallback(out);
            return false;
        }
        true
    }
}

/// Size of the group table: entries have ~20 distinct names, rarely more than 64.
const GROUP_SLOTS: usize = 128;

/// `group_of` for a field no group takes.
const NO_GROUP: u32 = u32::MAX;

/// The fields of one name: where it first appears and how many times.
#[derive(Debug, Clone, Copy)]
struct Group {
    first: u32,
    hash: u64,
    count: u32,
}

/// A hash of a field name from its length and its first and last eight bytes: a few
/// instructions whatever the name (a byte-by-byte hash was a visible share of the
/// encoder's time, #19). Names that share a hash are compared byte by byte, so a weak hash
/// costs time, never correctness.
fn name_hash(name: &[u8]) -> u64 {
    let len = name.len();
    let (head, tail) = if len >= 8 {
        (
            u64::from_le_bytes(name[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(name[len - 8..].try_into().expect("8 bytes")),
        )
    } else {
        let mut b = [0u8; 8];
        b[..len].copy_from_slice(name);
        (u64::from_le_bytes(b), 0)
    };
    head.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ tail.rotate_left(31).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ len as u64
}

/// journalctl's name of a syslog priority ("0" … "7").
fn priority_name(v: &[u8]) -> Option<&'static str> {
    const NAMES: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    match v {
        [d @ b'0'..=b'7'] => Some(NAMES[usize::from(d - b'0')]),
        _ => None,
    }
}

/// The largest length ≤ `len` that does not split a UTF-8 character, when `v` is text.
fn utf8_floor(v: &[u8], len: usize) -> usize {
    if len >= v.len() || std::str::from_utf8(v).is_err() {
        return len.min(v.len());
    }
    let mut l = len;
    while l > 0 && (v[l] & 0xC0) == 0x80 {
        l -= 1;
    }
    l
}

/// Writes either MessagePack or JSON with one interface, so both formats share the layout.
struct Writer<'a> {
    format: Format,
    out: &'a mut Vec<u8>,
    /// JSON only: whether the next map entry or array element needs a comma.
    first: Vec<bool>,
}

impl<'a> Writer<'a> {
    fn new(format: Format, out: &'a mut Vec<u8>) -> Self {
        Writer {
            format,
            out,
            first: Vec::new(),
        }
    }

    fn sep(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if !*first {
                self.out.push(b',');
            }
            *first = false;
        }
    }

    fn begin_map(&mut self, n: usize) {
        match self.format {
            Format::MessagePack => {
                msgpack::map_len(self.out, n);
            }
            Format::Json => {
                self.sep();
                self.out.push(b'{');
                self.first.push(true);
            }
        }
    }

    fn end_map(&mut self) {
        if self.format == Format::Json {
            self.out.push(b'}');
            self.first.pop();
            self.end_value();
        }
    }

    fn begin_array(&mut self, n: usize) {
        match self.format {
            Format::MessagePack => {
                msgpack::array_len(self.out, n);
            }
            Format::Json => {
                self.sep();
                self.out.push(b'[');
                self.first.push(true);
            }
        }
    }

    fn end_array(&mut self) {
        if self.format == Format::Json {
            self.out.push(b']');
            self.first.pop();
            self.end_value();
        }
    }

    fn key(&mut self, name: &[u8]) {
        match self.format {
            Format::MessagePack => self.value(name),
            Format::Json => {
                self.sep();
                // Field names are ASCII in every valid journal; a name that is not UTF-8
                // is written lossily rather than breaking the JSON document.
                json_string(self.out, &String::from_utf8_lossy(name));
                self.out.push(b':');
                // The value follows the colon without a comma.
                if let Some(first) = self.first.last_mut() {
                    *first = true;
                }
            }
        }
    }

    fn uint(&mut self, v: u64) {
        match self.format {
            Format::MessagePack => {
                msgpack::uint(self.out, v);
            }
            Format::Json => {
                self.sep();
                self.out.extend_from_slice(v.to_string().as_bytes());
                self.end_value();
            }
        }
    }

    /// A value known to be UTF-8 (cursors, ids).
    fn str_value(&mut self, v: &[u8]) {
        self.value(v)
    }

    /// str when valid UTF-8, bin otherwise (JSON: an array of byte values, as journalctl).
    fn value(&mut self, v: &[u8]) {
        // Most journal values are ASCII: checking that is cheaper than full UTF-8
        // validation, and the string header is written here rather than through rmp's
        // `Write`-based path (both measured in the profile, #19).
        match self.format {
            Format::MessagePack if v.is_ascii() || std::str::from_utf8(v).is_ok() => {
                msgpack::str_header(self.out, v.len());
                self.out.extend_from_slice(v);
            }
            Format::MessagePack => {
                msgpack::bin(self.out, v);
            }
            Format::Json => {
                self.sep();
                match std::str::from_utf8(v) {
                    Ok(s) => json_string(self.out, s),
                    Err(_) => {
                        self.out.push(b'[');
                        for (i, b) in v.iter().enumerate() {
                            if i > 0 {
                                self.out.push(b',');
                            }
                            self.out.extend_from_slice(b.to_string().as_bytes());
                        }
                        self.out.push(b']');
                    }
                }
                self.end_value();
            }
        }
    }

    /// After a map value, the next key needs a comma again.
    fn end_value(&mut self) {
        if let Some(first) = self.first.last_mut() {
            *first = false;
        }
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use proptest::prelude::*;
    use rmpv::Value;

    const CURSOR: &str = "s=0e7a5b6d4c3b4a29a1b2c3d4e5f60718;i=2a;b=9f8e7d6c5b4a39281706f5e4d3c2b1a0;m=4c4b40;t=60a1b2c3d4e5f;x=abcdef0123456789";

    fn cfg(extra: &str) -> (EncodingConfig, KafkaConfig) {
        let c = config::parse(&format!(
            "[kafka]\nbrokers = \"b:1\"\ntopic = \"journal\"\nkey_field = \"_HOSTNAME\"\n{extra}"
        ))
        .unwrap();
        (c.encoding, c.kafka)
    }

    fn encoder(extra: &str) -> Encoder {
        let (e, k) = cfg(extra);
        Encoder::new(&e, &k)
    }

    fn entry(fields: &[(&[u8], &[u8])]) -> Entry {
        let mut e = Entry::new();
        e.cursor = CURSOR.into();
        e.realtime_usec = 1_700_000_000_000_001;
        e.monotonic_usec = 5_000_000;
        e.boot_id = "9f8e7d6c5b4a39281706f5e4d3c2b1a0".into();
        for (n, v) in fields {
            e.push_field(n, v);
        }
        e
    }

    fn decode(bytes: &[u8]) -> Vec<(String, Value)> {
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        v.as_map()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn msgpack_layout() {
        let mut enc = encoder("");
        let e = entry(&[
            (b"MESSAGE", b"hello\nworld"),
            (b"TAG", b"a"),
            (b"BLOB", &[0, 0xff, 1]),
            (b"TAG", &[0xc3]),
            (b"_HOSTNAME", b"web-1"),
        ]);
        let mut out = Vec::new();
        let o = enc.encode(&e, &mut out);
        assert!(o.truncated.is_empty());
        let m = decode(&out);
        let names: Vec<_> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "__CURSOR",
                "__REALTIME_TIMESTAMP",
                "__MONOTONIC_TIMESTAMP",
                "__SEQNUM",
                "__SEQNUM_ID",
                "_BOOT_ID",
                "MESSAGE",
                "TAG",
                "BLOB",
                "_HOSTNAME"
            ]
        );
        assert_eq!(m[0].1, Value::from(CURSOR));
        assert_eq!(m[1].1, Value::from(1_700_000_000_000_001u64));
        assert_eq!(m[3].1, Value::from(42u64));
        assert_eq!(m[6].1, Value::from("hello\nworld"));
        assert_eq!(
            m[7].1,
            Value::Array(vec![Value::from("a"), Value::Binary(vec![0xc3])])
        );
        assert_eq!(m[8].1, Value::Binary(vec![0, 0xff, 1]));
        let mut key = Vec::new();
        assert!(enc.key(&e, &mut key));
        assert_eq!(key, b"web-1");
    }

    #[test]
    fn name_profile_is_opt_in() {
        let e = entry(&[
            (b"MESSAGE", b"hi"),
            (b"_HOSTNAME", b"web-1"),
            (b"PRIORITY", b"4"),
        ]);
        let names = |extra: &str| {
            let mut out = Vec::new();
            encoder(extra).encode(&e, &mut out);
            decode(&out).into_iter().map(|(n, _)| n).collect::<Vec<_>>()
        };
        let plain = names("");
        assert!(
            plain.contains(&"_HOSTNAME".to_string())
                && !plain.contains(&"PRIORITY_NAME".to_string())
        );
        let p = names(
            "[encoding]\nlowercase_names = true\nstrip_underscore = true\npriority_name = true\n",
        );
        for want in [
            "__CURSOR",
            "__REALTIME_TIMESTAMP",
            "message",
            "hostname",
            "priority",
            "priority_name",
            "boot_id",
        ] {
            assert!(p.contains(&want.to_string()), "{want} in {p:?}");
        }
        let mut out = Vec::new();
        encoder("[encoding]\npriority_name = true\n").encode(&e, &mut out);
        let m = decode(&out);
        assert!(m.contains(&("PRIORITY_NAME".to_string(), Value::from("warning"))));
    }

    #[test]
    fn added_fields_composite_key_and_headers() {
        let mut enc = encoder(
            "[encoding.add_fields]\nENVIRONMENT = \"prod\"\nDC = \"fra1\"\n[kafka.headers]\nenv = \"prod\"\nwho = \"{_HOSTNAME}:{NOPE}\"\nhost = \"h-{_HOSTNAME}\"\n",
        );
        let e = entry(&[
            (b"MESSAGE", b"hi"),
            (b"_HOSTNAME", b"web-1"),
            (b"DC", b"own"),
        ]);
        let mut out = Vec::new();
        enc.encode(&e, &mut out);
        let m = decode(&out);
        let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ENVIRONMENT"), Some(Value::from("prod")));
        // The entry's own DC wins without override.
        assert_eq!(get("DC"), Some(Value::from("own")));
        assert_eq!(m.iter().filter(|(n, _)| n == "DC").count(), 1);
        let h = enc.headers(&e);
        assert_eq!(
            h,
            vec![("env", b"prod".to_vec()), ("host", b"h-web-1".to_vec())]
        );
    }

    #[test]
    fn a_damaged_entry_is_marked_in_both_formats() {
        let mut e = entry(&[(b"MESSAGE", b"hi")]);
        e.damaged = Some("fields after the first 1 cannot be read: Bad message".into());
        let mut out = Vec::new();
        encoder("").encode(&e, &mut out);
        let m = decode(&out);
        assert_eq!(
            m.last().unwrap(),
            &(
                DAMAGED_FIELD.to_string(),
                Value::from("fields after the first 1 cannot be read: Bad message")
            )
        );
        out.clear();
        encoder("[encoding]\nformat = \"json\"\n").encode(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v[DAMAGED_FIELD].as_str().unwrap().contains("Bad message"));
    }

    #[test]
    fn boot_id_from_data_is_not_duplicated() {
        let mut enc = encoder("");
        let e = entry(&[(b"_BOOT_ID", b"00112233445566778899aabbccddeeff")]);
        let mut out = Vec::new();
        enc.encode(&e, &mut out);
        let m = decode(&out);
        let boots: Vec<_> = m.iter().filter(|(k, _)| k == "_BOOT_ID").collect();
        assert_eq!(boots.len(), 1);
        assert_eq!(boots[0].1, Value::from("00112233445566778899aabbccddeeff"));
    }

    #[test]
    fn include_and_exclude() {
        let mut enc = encoder(
            "[encoding]\ninclude_fields = [\"MESSAGE\", \"_SYSTEMD_*\"]\nexclude_fields = [\"_SYSTEMD_CGROUP\"]\n",
        );
        let e = entry(&[
            (b"MESSAGE", b"m"),
            (b"PRIORITY", b"6"),
            (b"_SYSTEMD_UNIT", b"u"),
            (b"_SYSTEMD_CGROUP", b"c"),
        ]);
        let mut out = Vec::new();
        enc.encode(&e, &mut out);
        let names: Vec<_> = decode(&out)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !k.starts_with("__"))
            .collect();
        assert_eq!(names, ["_BOOT_ID", "MESSAGE", "_SYSTEMD_UNIT"]);
    }

    #[test]
    fn json_layout_and_escaping() {
        let mut enc = encoder("[encoding]\nformat = \"json\"\n");
        let e = entry(&[
            (b"MESSAGE", b"quote \" backslash \\ tab \t nl \n bell \x07"),
            (b"BLOB", &[0, 255]),
            (b"TAG", b"a"),
            (b"TAG", b"b"),
            (b"UNI", "héllo".as_bytes()),
        ]);
        let mut out = Vec::new();
        enc.encode(&e, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["MESSAGE"], "quote \" backslash \\ tab \t nl \n bell \x07");
        assert_eq!(v["BLOB"], serde_json::json!([0, 255]));
        assert_eq!(v["TAG"], serde_json::json!(["a", "b"]));
        assert_eq!(v["UNI"], "héllo");
        assert_eq!(v["__REALTIME_TIMESTAMP"], 1_700_000_000_000_001u64);
        assert_eq!(v["__CURSOR"], CURSOR);
    }

    #[test]
    fn oversized_entry_is_truncated_and_marked() {
        let mut enc = encoder("[encoding]\nmax_record_bytes = 10000\n");
        let big = vec![b'x'; 50_000];
        let e = entry(&[
            (b"MESSAGE", b"small"),
            (b"BIG", &big),
            (b"OTHER", &[b'y'; 3000]),
        ]);
        let mut out = Vec::new();
        let o = enc.encode(&e, &mut out);
        assert!(
            out.len() <= 10_000 - RECORD_OVERHEAD - CURSOR.len(),
            "{}",
            out.len()
        );
        assert_eq!(o.truncated, vec![("BIG".to_string(), 50_000)]);
        let m = decode(&out);
        let marker = m.iter().find(|(k, _)| k == TRUNCATED_FIELD).unwrap();
        assert_eq!(marker.1, Value::from("BIG=50000"));
        assert_eq!(
            m.iter()
                .find(|(k, _)| k == "OTHER")
                .unwrap()
                .1
                .as_str()
                .unwrap()
                .len(),
            3000
        );
        let big_out = m
            .iter()
            .find(|(k, _)| k == "BIG")
            .unwrap()
            .1
            .as_str()
            .unwrap()
            .len();
        assert!(big_out > 3000 && big_out < 10_000, "{big_out}");
    }

    #[test]
    fn truncation_keeps_utf8_valid() {
        let mut enc = encoder("[encoding]\nmax_record_bytes = 5000\n");
        let big = "é".repeat(10_000);
        let e = entry(&[(b"MESSAGE", big.as_bytes())]);
        let mut out = Vec::new();
        let o = enc.encode(&e, &mut out);
        assert_eq!(o.truncated.len(), 1);
        let m = decode(&out);
        let msg = &m.iter().find(|(k, _)| k == "MESSAGE").unwrap().1;
        assert!(msg.is_str(), "truncated text must stay text");
    }

    #[test]
    fn topic_templates() {
        let c = config::parse("[kafka]\nbrokers = \"b:1\"\ntopic = \"j-{_SYSTEMD_UNIT}\"\ntopic_fallback = \"j-other\"\n").unwrap();
        let enc = Encoder::new(&c.encoding, &c.kafka);
        let mut t = String::new();
        enc.topic(&entry(&[(b"_SYSTEMD_UNIT", b"getty@tty1.service")]), &mut t);
        assert_eq!(t, "j-getty_tty1.service");
        enc.topic(&entry(&[(b"MESSAGE", b"m")]), &mut t);
        assert_eq!(t, "j-other");
        enc.topic(&entry(&[(b"_SYSTEMD_UNIT", b"")]), &mut t);
        assert_eq!(t, "j-other");
    }

    fn field_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        (
            prop::sample::select(vec![
                b"MESSAGE".to_vec(),
                b"TAG".to_vec(),
                b"_PID".to_vec(),
                b"BLOB".to_vec(),
                b"X_1".to_vec(),
            ]),
            prop::collection::vec(any::<u8>(), 0..200),
        )
    }

    #[test]
    fn many_distinct_names_and_their_repeats_group_like_few() {
        let names: Vec<String> = (0..150).map(|i| format!("FIELD_{i}")).collect();
        let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
        for n in &names {
            fields.push((n.as_bytes(), b"first"));
        }
        for n in names.iter().rev() {
            fields.push((n.as_bytes(), b"second"));
        }
        let e = entry(&fields);
        let mut out = Vec::new();
        encoder("").encode(&e, &mut out);
        let map = decode(&out);
        for n in &names {
            let v = &map.iter().find(|(k, _)| k == n).unwrap().1;
            let values: Vec<&str> = v
                .as_array()
                .unwrap_or_else(|| panic!("{n} repeated: {v}"))
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            assert_eq!(values, ["first", "second"], "{n}");
        }
        assert_eq!(
            map.iter().filter(|(k, _)| k.starts_with("FIELD_")).count(),
            150
        );
    }

    #[test]
    fn str_headers_match_rmp_at_every_boundary() {
        for len in [0, 1, 31, 32, 255, 256, 65_535, 65_536, 100_000] {
            let v = vec![b'a'; len];
            let mut ours = Vec::new();
            msgpack::str_header(&mut ours, len);
            ours.extend_from_slice(&v);
            let mut theirs = Vec::new();
            rmp::encode::write_str(&mut theirs, std::str::from_utf8(&v).unwrap()).unwrap();
            assert_eq!(ours, theirs, "length {len}");
        }
    }

    proptest! {
        /// decode(encode(x)) == x for any bytes, both formats, repeated fields included.
        #[test]
        fn round_trip(fields in prop::collection::vec(field_strategy(), 0..20), json in any::<bool>()) {
            let mut enc = encoder(if json { "[encoding]\nformat = \"json\"\n" } else { "" });
            let refs: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())).collect();
            let e = entry(&refs);
            let mut out = Vec::new();
            enc.encode(&e, &mut out);
            // Expected: values per name in order of appearance.
            let mut expect: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
            for (n, v) in &fields {
                match expect.iter_mut().find(|(k, _)| k == n) {
                    Some((_, vs)) => vs.push(v.clone()),
                    None => expect.push((n.clone(), vec![v.clone()])),
                }
            }
            let got: Vec<(Vec<u8>, Vec<Vec<u8>>)> = if json {
                let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
                let obj = v.as_object().unwrap();
                let bytes = |v: &serde_json::Value| -> Vec<u8> {
                    match v {
                        serde_json::Value::String(s) => s.as_bytes().to_vec(),
                        serde_json::Value::Array(a) => a.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
                        _ => panic!("unexpected {v}"),
                    }
                };
                expect.iter().map(|(n, vs)| {
                    let v = &obj[std::str::from_utf8(n).unwrap()];
                    let values = if vs.len() == 1 { vec![bytes(v)] } else { v.as_array().unwrap().iter().map(bytes).collect() };
                    (n.clone(), values)
                }).collect()
            } else {
                let m = decode(&out);
                let bytes = |v: &Value| -> Vec<u8> {
                    match v {
                        Value::String(s) => s.as_bytes().to_vec(),
                        Value::Binary(b) => b.clone(),
                        _ => panic!("unexpected {v}"),
                    }
                };
                m.iter().filter(|(k, _)| !k.starts_with("__") && k != "_BOOT_ID").map(|(k, v)| {
                    let n = k.as_bytes().to_vec();
                    let count = expect.iter().find(|(e, _)| *e == n).map(|(_, vs)| vs.len()).unwrap();
                    let values = if count == 1 { vec![bytes(v)] } else { v.as_array().unwrap().iter().map(bytes).collect() };
                    (n, values)
                }).collect()
            };
            prop_assert_eq!(got, expect);
        }
    }
}
