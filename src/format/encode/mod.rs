//! Encoding: one journal entry in, one Kafka record's bytes out (value, key, topic).
//!
//! Holds scratch space so that encoding allocates nothing per entry in the steady state.
//! This file owns the record's layout (the journal's own fields first, then the entry's,
//! then what the agent adds) and the truncation of oversized entries; `fields` chooses,
//! names and groups the entry's fields, `route` makes the key, the headers and the topic,
//! and `writer` writes the layout as MessagePack or JSON.

mod fields;
mod otlp;
mod route;
#[cfg(test)]
mod tests;
mod writer;

use self::fields::{GROUP_SLOTS, Group, NO_GROUP};
use self::writer::{Kind, Writer};
use super::{DAMAGED_FIELD, TRUNCATED_FIELD};
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
    /// OTLP only: when the agent read the entry (ns since the epoch; 0: not said), which
    /// the caller tells ([`Encoder::observed_at`]) so that encoding never reads a clock.
    observed_ns: u64,
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
            observed_ns: 0,
        }
    }

    /// Whether records carry the time the agent read the entry (OTLP's observed time):
    /// the caller then tells it with [`Encoder::observed_at`] before encoding.
    pub(crate) fn wants_observed_time(&self) -> bool {
        self.format == Format::Otlp
    }

    pub(crate) fn observed_at(&mut self, t: std::time::SystemTime) {
        self.observed_ns = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0));
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

    fn write(&self, e: &Entry, outcome: &Outcome, out: &mut Vec<u8>) {
        let kind = match self.format {
            Format::Otlp => return self.write_otlp(e, outcome, out),
            Format::Json => Kind::Json,
            Format::MessagePack => Kind::MessagePack,
        };
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
        let mut w = Writer::new(kind, out);
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
        // An entry whose every field goes into the record as it is, once under its own
        // name: its fields are already in their MessagePack form (`Entry::encoded`).
        let whole = kind == Kind::MessagePack
            && !self.lowercase
            && !self.strip
            && self.groups.len() == e.len()
            && self.caps.iter().all(Option::is_none);
        if whole {
            w.encoded(e.encoded());
        }
        for (g, group) in self.groups.iter().enumerate().filter(|_| !whole) {
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
            w.str_value(truncated_text(outcome).as_bytes());
        }
        if let Some(why) = &e.damaged {
            w.key(DAMAGED_FIELD.as_bytes());
            w.str_value(why.as_bytes());
        }
        w.end_map();
    }
}

/// The truncation marker's value: each cut field with its original length.
fn truncated_text(outcome: &Outcome) -> String {
    let mut text = String::new();
    for (k, (name, len)) in outcome.truncated.iter().enumerate() {
        if k > 0 {
            text.push(' ');
        }
        text.push_str(&format!("{name}={len}"));
    }
    text
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
