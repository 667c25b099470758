//! One Forward event as one Kafka record: the record map kept byte for byte, the tag and
//! time added under their configured names, the topic from the template, the key from a
//! field (docs/format.md, "Forward records").
//!
//! It must never alter a value the sender wrote: fields are copied as raw MessagePack, and
//! a record that already has a field of the tag's or time's name keeps its own.

use super::msgpack::{Malformed, Reader, write};
use super::protocol::Event;
use crate::config::{ForwardConfig, ForwardPart};

/// Version of the Forward record layout, in the `fluent-format` header.
pub(crate) const FORMAT_VERSION: &str = "1";
/// Header names of a Forward record (the source header is the record contract's: readers
/// tell Forward records from journal entries by it).
pub(crate) use crate::format::SOURCE_HEADER;
pub(crate) const FORMAT_HEADER: &str = "fluent-format";
pub(crate) const TAG_HEADER: &str = "fluent-tag";
/// `<chunk id>:<index>` of an acknowledged chunk: a resent chunk carries the same ids.
pub(crate) const ID_HEADER: &str = "fluent-id";

/// The headers of event `index` of a message with this tag: the source, the layout
/// version, the tag, and `<chunk>:<index>` when the client asked for an ack (`id` is
/// scratch space, reused between events).
pub(crate) fn headers(
    tag: &[u8],
    chunk: Option<&[u8]>,
    index: usize,
    id: &mut String,
) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: SOURCE_HEADER,
            value: Some("forward"),
        })
        .insert(Header {
            key: FORMAT_HEADER,
            value: Some(FORMAT_VERSION),
        })
        .insert(Header {
            key: TAG_HEADER,
            value: Some(tag),
        });
    let Some(c) = chunk else {
        return headers;
    };
    id.clear();
    id.push_str(&String::from_utf8_lossy(c));
    id.push(':');
    id.push_str(&index.to_string());
    headers.insert(Header {
        key: ID_HEADER,
        value: Some(id.as_str()),
    })
}

/// A record ready for the producer.
pub(crate) struct Encoded<'a> {
    /// `None`: the template has no record fields, so the topic is the message's
    /// ([`message_topic`]), made once for all of its events.
    pub(crate) topic: Option<String>,
    /// Borrowed from the event's record.
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Vec<u8>,
    pub(crate) timestamp_ms: i64,
    /// The event's time lay too far in the future: the record has the current time.
    pub(crate) clamped: bool,
    /// The topic template could not be filled in (the fallback was used).
    pub(crate) fell_back: bool,
}

/// Encodes one event. `now_ms` stands in for times too far in the future
/// (`kafka::within_tolerance`): brokers refuse those for good (the event's own time stays
/// in the record).
pub(crate) fn encode<'a>(
    cfg: &ForwardConfig,
    tag: &[u8],
    event: &Event<'a>,
    now_ms: i64,
    reserved: &[String],
    mut value: Vec<u8>,
) -> Result<Encoded<'a>, Malformed> {
    let mut r = Reader::new(event.record);
    let n = r.map_len()?;
    let body_start = r.pos();
    let mut has_tag = false;
    let mut has_time = false;
    let mut key = None;
    let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
    let wants_fields = cfg.topic.iter().any(|p| matches!(p, ForwardPart::Field(_)));
    for _ in 0..n {
        let k = r.value()?;
        let v_start = r.pos();
        let v = r.value()?;
        let name = str_of(k);
        if let Some(name) = name {
            has_tag |= cfg
                .tag_field
                .as_deref()
                .is_some_and(|t| t.as_bytes() == name);
            has_time |= cfg
                .time_field
                .as_deref()
                .is_some_and(|t| t.as_bytes() == name);
            if key.is_none()
                && cfg
                    .key_field
                    .as_deref()
                    .is_some_and(|f| f.as_bytes() == name)
            {
                key = str_of(v);
            }
            // Only the template's own fields, first occurrence each: a record of millions
            // of tiny fields must not make a list of millions.
            if wants_fields
                && !fields.iter().any(|(n, _)| *n == name)
                && cfg
                    .topic
                    .iter()
                    .any(|p| matches!(p, ForwardPart::Field(f) if f.as_bytes() == name))
            {
                fields.push((name, &event.record[v_start..v_start + v.len()]));
            }
        }
    }
    let add_tag = cfg.tag_field.as_deref().filter(|_| !has_tag);
    let add_time = cfg.time_field.as_deref().filter(|_| !has_time);
    value.clear();
    value.reserve(event.record.len() + tag.len() + 48);
    write::map_len(
        &mut value,
        n + usize::from(add_tag.is_some()) + usize::from(add_time.is_some()),
    );
    value.extend_from_slice(&event.record[body_start..]);
    if let Some(name) = add_tag {
        write::str(&mut value, name.as_bytes());
        write::str(&mut value, tag);
    }
    if let Some(name) = add_time {
        write::str(&mut value, name.as_bytes());
        write::uint(&mut value, event.time.as_nanos());
    }
    let (topic, fell_back) = if wants_fields {
        let (t, f) = topic(cfg, tag, &fields, reserved);
        (Some(t), f)
    } else {
        (None, false)
    };
    let event_ms = (event.time.as_nanos() / 1_000_000).min(i64::MAX as u64) as i64;
    let within = crate::kafka::within_tolerance(event_ms, now_ms);
    Ok(Encoded {
        topic,
        key,
        value,
        timestamp_ms: within.unwrap_or(now_ms),
        clamped: within.is_none(),
        fell_back,
    })
}

/// A str or bin value's bytes; `None` for anything else.
fn str_of(v: &[u8]) -> Option<&[u8]> {
    Reader::new(v).bytes().ok()
}

/// The topic of every event of a message with this tag, when the template names no record
/// field; and whether it is the fallback.
pub(crate) fn message_topic(
    cfg: &ForwardConfig,
    tag: &[u8],
    reserved: &[String],
) -> (String, bool) {
    topic(cfg, tag, &[], reserved)
}

/// Fills in the topic template. Characters a topic name cannot hold become '_'; a missing
/// field or an unusable result gives the fallback.
fn topic(
    cfg: &ForwardConfig,
    tag: &[u8],
    fields: &[(&[u8], &[u8])],
    reserved: &[String],
) -> (String, bool) {
    let mut out = String::new();
    let push = crate::config::push_topic_part;
    for p in &cfg.topic {
        match p {
            ForwardPart::Literal(l) => out.push_str(l),
            ForwardPart::Tag => push(&mut out, tag),
            ForwardPart::Field(name) => {
                let v = fields
                    .iter()
                    .find(|(n, _)| *n == name.as_bytes())
                    .and_then(|(_, v)| str_of(v));
                match v {
                    Some(v) if !v.is_empty() => push(&mut out, v),
                    _ => return (cfg.topic_fallback.clone(), true),
                }
            }
        }
    }
    if !crate::config::made_topic_usable(&out, reserved) {
        return (cfg.topic_fallback.clone(), true);
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::msgpack::Time;
    use rmpv::Value as V;

    fn cfg(topic: Vec<ForwardPart>) -> ForwardConfig {
        ForwardConfig {
            listen: Some("127.0.0.1:0".into()),
            socket: None,
            topic,
            topic_fallback: "fallback".into(),
            key_field: Some("host".into()),
            tag_field: Some("fluent_tag".into()),
            time_field: Some("fluent_time".into()),
            shared_key: None,
            self_hostname: "h".into(),
            users: vec![],
            tls: None,
            max_message_bytes: 1 << 20,
            max_connections: 4,
            max_in_flight_bytes: 1 << 20,
            secret_files: vec![],
        }
    }

    use crate::forward::msgpack::test_encode as enc;

    #[test]
    fn the_record_is_kept_and_tag_and_time_are_added() {
        let rec = enc(&V::Map(vec![
            (V::from("host"), V::from("web-1")),
            (V::from("raw"), V::Binary(vec![0, 0xff, 0xc1])),
            (V::from("n"), V::from(-5)),
        ]));
        let ev = Event {
            time: Time {
                secs: 1_700_000_000,
                nanos: 5,
            },
            record: &rec,
        };
        let c = cfg(vec![ForwardPart::Literal("logs.".into()), ForwardPart::Tag]);
        let e = encode(&c, b"app/access", &ev, 1_700_000_000_000, &[], Vec::new()).unwrap();
        assert_eq!(e.topic, None, "the same for the whole message");
        assert_eq!(
            message_topic(&c, b"app/access", &[]),
            ("logs.app_access".into(), false)
        );
        assert_eq!(e.key, Some(&b"web-1"[..]));
        assert_eq!(e.timestamp_ms, 1_700_000_000_000);
        let v = rmpv::decode::read_value(&mut &e.value[..]).unwrap();
        let m = v.as_map().unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[1].1,
            V::Binary(vec![0, 0xff, 0xc1]),
            "binary kept as sent"
        );
        assert_eq!(m[3], (V::from("fluent_tag"), V::from("app/access")));
        assert_eq!(
            m[4],
            (
                V::from("fluent_time"),
                V::from(1_700_000_000_000_000_005u64)
            )
        );
    }

    #[test]
    fn a_record_keeps_its_own_field_of_the_same_name_and_a_missing_topic_field_falls_back() {
        let rec = enc(&V::Map(vec![(V::from("fluent_tag"), V::from("mine"))]));
        let ev = Event {
            time: Time {
                secs: 4_000_000_000,
                nanos: 0,
            },
            record: &rec,
        };
        let c = cfg(vec![ForwardPart::Field("service".into())]);
        let e = encode(&c, b"t", &ev, 1_700_000_000_000, &[], Vec::new()).unwrap();
        assert_eq!((e.topic.as_deref(), e.fell_back), (Some("fallback"), true));
        assert_eq!(
            e.timestamp_ms, 1_700_000_000_000,
            "a future time is clamped"
        );
        let v = rmpv::decode::read_value(&mut &e.value[..]).unwrap();
        assert_eq!(v.as_map().unwrap().len(), 2);
        assert_eq!(v.as_map().unwrap()[0].1, V::from("mine"));
    }

    /// A client chooses its tag: it must not choose a Kafka-internal topic, the agent's
    /// own topics, nor a name Kafka refuses. The rule is the journal's
    /// (`config::made_topic_usable`).
    #[test]
    fn a_tag_cannot_make_an_internal_or_invalid_topic() {
        let c = cfg(vec![ForwardPart::Tag]);
        for tag in [
            &b"__consumer_offsets"[..],
            b"..",
            &[b'x'; 250][..],
            b"journald-kafka-cursors",
        ] {
            assert_eq!(
                message_topic(&c, tag, &["journald-kafka-cursors".to_string()]),
                ("fallback".to_string(), true),
                "{:?}",
                String::from_utf8_lossy(tag)
            );
        }
        assert_eq!(
            message_topic(&c, b"app.web/1", &[]),
            ("app.web_1".to_string(), false)
        );
    }
}
