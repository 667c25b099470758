//! Reading shipped records back from Kafka (`journald-kafka cat`).
//!
//! Owns decoding records (MessagePack or JSON, per `docs/format.md`) into fields and
//! printing them the way journalctl does. It is a consumer only: it must never produce,
//! and never commit consumer offsets (it reads with a throwaway group and manual assignment).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::format::{Value, decode};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A consumer that reads topics back, able to sign in however the agent does.
pub(crate) type Reader = BaseConsumer<crate::kafka::AuthContext>;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// journalctl's default: local time, host, identifier[pid]: message
    Short,
    /// Like short, with an ISO 8601 timestamp.
    ShortIso,
    /// One JSON object per line (binary values as arrays of bytes).
    Json,
    /// JSON, indented.
    JsonPretty,
    /// The message only.
    Cat,
    /// The journal export format, binary fields included: feed it to systemd-journal-remote.
    Export,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum From {
    /// The oldest record of every partition.
    Beginning,
    /// Only records produced from now on (use with --follow).
    End,
}

pub(crate) struct CatOptions {
    /// How to reach the brokers (`kafka::connection_config` of a config file, or the
    /// `--brokers` given on the command line).
    pub connection: rdkafka::ClientConfig,
    pub topics: Vec<String>,
    pub output: Output,
    pub lines: Option<usize>,
    pub idle: Duration,
    pub follow: bool,
    pub from: From,
    /// µs since the epoch, inclusive.
    pub since: Option<u64>,
    /// µs since the epoch, exclusive.
    pub until: Option<u64>,
    /// `FIELD=value` terms: ORed for one field, ANDed across fields (as journalctl).
    pub matches: Vec<(String, Vec<u8>)>,
    pub max_priority: Option<u8>,
    pub dedup: bool,
}

/// Prints records, decoded, until `lines` are printed or (without --follow) no record came
/// for `idle`.
pub(crate) fn cat(o: &CatOptions) -> Result<()> {
    match cat_inner(o) {
        // The reader of our output went away (`| head`): that is a normal end.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Hands every record the consumer gets to `f` until none arrived for `idle`, then lets
/// go of the partitions (the checkers' read loop).
pub(crate) fn read_until_idle(
    consumer: &Reader,
    idle: Duration,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<()> {
    let mut last = Instant::now();
    while last.elapsed() < idle {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        last = Instant::now();
        f(&m);
    }
    drop(consumer.unassign());
    Ok(())
}

/// Whether a record is the agent's progress record rather than a journal entry.
pub(crate) fn is_progress(m: &impl rdkafka::message::Message) -> bool {
    use rdkafka::message::Headers;
    m.headers()
        .is_some_and(|h| h.iter().any(|h| h.key == crate::format::PROGRESS_HEADER))
}

/// The value of a record's first header named `name`.
pub(crate) fn header<'m, M: rdkafka::message::Message>(m: &'m M, name: &str) -> Option<&'m [u8]> {
    use rdkafka::message::Headers;
    m.headers()?.iter().find(|h| h.key == name)?.value
}

/// Whether a record came from the Forward input (its source header, which only the
/// agent's producer sets): never a journal entry, whatever fields its sender wrote.
pub(crate) fn is_forward(m: &impl rdkafka::message::Message) -> bool {
    header(m, crate::format::SOURCE_HEADER) == Some(b"forward".as_slice())
}

/// A consumer assigned to every partition of `topics`, from the beginning, with a
/// throwaway group and no offset commits.
pub(crate) fn consumer_from_beginning(
    connection: ClientConfig,
    topics: &[String],
) -> Result<Reader> {
    consumer_at(connection, topics, From::Beginning, None)
}

fn consumer_at(
    mut connection: ClientConfig,
    topics: &[String],
    from: From,
    since_ms: Option<i64>,
) -> Result<Reader> {
    let brokers = connection
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_string();
    connection
        .set(
            "group.id",
            format!("journald-kafka-read-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false");
    let consumer: Reader = connection
        .create_with_context(crate::kafka::AuthContext)
        .context("cannot create the Kafka consumer")?;
    crate::kafka::give_token(consumer.client(), &connection)?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("cannot reach the brokers {brokers}"))?;
        let before = tpl.count();
        for t in md.topics() {
            for p in t.partitions() {
                let offset = match (from, since_ms) {
                    (_, Some(ms)) => Offset::Offset(ms),
                    (From::Beginning, None) => Offset::Beginning,
                    (From::End, None) => Offset::End,
                };
                tpl.add_partition_offset(t.name(), p.id(), offset)?;
            }
        }
        if tpl.count() == before {
            bail!("topic {topic:?} has no partitions (does it exist?)");
        }
    }
    if since_ms.is_some() {
        // Record timestamps are the entries' times: let the broker find the first offset at
        // or after --since in each partition, then filter exactly on __REALTIME_TIMESTAMP.
        tpl = consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .context("cannot look up offsets for --since")?;
        for e in tpl.clone().elements() {
            if e.offset() == Offset::End || matches!(e.offset(), Offset::Invalid) {
                tpl.set_partition_offset(e.topic(), e.partition(), Offset::End)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn cat_inner(o: &CatOptions) -> Result<()> {
    let consumer = consumer_at(
        o.connection.clone(),
        &o.topics,
        o.from,
        o.since.map(|u| (u / 1000) as i64),
    )?;
    let tz = jiff::tz::TimeZone::system();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut seen = std::collections::HashSet::new();
    let mut skipped_forward = 0u64;
    let mut n = 0;
    let mut last = Instant::now();
    while o.lines.is_none_or(|l| n < l) && (o.follow || last.elapsed() < o.idle) {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            out.flush()?;
            continue;
        };
        let m = m?;
        last = Instant::now();
        if is_progress(&m) {
            continue;
        }
        // A Forward event's fields are its sender's: never shown as a journal entry.
        if is_forward(&m) {
            skipped_forward += 1;
            continue;
        }
        let cursor = header(&m, crate::format::CURSOR_HEADER)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if o.dedup {
            if let Some(c) = &cursor {
                if !seen.insert(c.clone()) {
                    continue;
                }
            }
        }
        let payload = m.payload().unwrap_or_default();
        let fields = match decode(payload) {
            Ok(f) => f,
            Err(e) => {
                // The header is the record writer's text: escaped, never sent to the
                // terminal as is.
                eprintln!(
                    "journald-kafka: cannot decode record {}/{}@{} (cursor {}): {e:#}",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    cursor.as_deref().unwrap_or("none").escape_debug()
                );
                continue;
            }
        };
        if !selected(o, &fields) {
            continue;
        }
        n += 1;
        match o.output {
            Output::Short => writeln!(out, "{}", short(&fields, &tz, false))?,
            Output::ShortIso => writeln!(out, "{}", short(&fields, &tz, true))?,
            Output::Cat => writeln!(
                out,
                "{}",
                printable(&get(&fields, "MESSAGE").unwrap_or_default())
            )?,
            Output::Json => writeln!(out, "{}", serde_json::to_string(&json(&fields))?)?,
            Output::JsonPretty => {
                writeln!(out, "{}", serde_json::to_string_pretty(&json(&fields))?)?
            }
            Output::Export => export(&mut out, &fields)?,
        }
    }
    out.flush()?;
    if skipped_forward > 0 {
        eprintln!(
            "journald-kafka: skipped {skipped_forward} Forward-input records (not journal entries)"
        );
    }
    Ok(())
}

/// The --since/--until, field and priority filters.
fn selected(o: &CatOptions, fields: &[(String, Value)]) -> bool {
    let time: u64 = get(fields, "__REALTIME_TIMESTAMP")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if o.since.is_some_and(|s| time < s) || o.until.is_some_and(|u| time >= u) {
        return false;
    }
    if let Some(max) = o.max_priority {
        match get(fields, "PRIORITY").and_then(|p| p.parse::<u8>().ok()) {
            Some(p) if p <= max => {}
            _ => return false,
        }
    }
    // Group the terms by field: any value of a field may match; every field must.
    let mut names: Vec<&str> = o.matches.iter().map(|(k, _)| k.as_str()).collect();
    names.dedup();
    names.iter().all(|name| {
        let wanted: Vec<&[u8]> = o
            .matches
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
            .collect();
        fields
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| values(v))
            .any(|v| wanted.contains(&v.as_slice()))
    })
}

/// Every value of a field as bytes (a repeated field has several).
fn values(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Text(s) => vec![s.as_bytes().to_vec()],
        Value::Bytes(b) => vec![b.clone()],
        Value::Int(i) => vec![i.to_string().into_bytes()],
        Value::Many(vs) => vs.iter().flat_map(values).collect(),
    }
}

/// Writes one entry in the journal export format. The cursor and the realtime and monotonic
/// timestamps come first; `__SEQNUM`/`__SEQNUM_ID` describe the source journal and are left
/// out, so systemd-journal-remote can import the output as new entries.
pub(crate) fn export(out: &mut impl Write, fields: &[(String, Value)]) -> std::io::Result<()> {
    for name in ["__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP"] {
        if let Some(v) = get(fields, name) {
            writeln!(out, "{name}={v}")?;
        }
    }
    for (k, v) in fields.iter().filter(|(k, _)| !k.starts_with("__")) {
        for value in values(v) {
            let text_safe = std::str::from_utf8(&value).is_ok()
                && !value.iter().any(|&b| b < 0x20 || b == 0x7f);
            if text_safe {
                out.write_all(k.as_bytes())?;
                out.write_all(b"=")?;
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            } else {
                out.write_all(k.as_bytes())?;
                out.write_all(b"\n")?;
                out.write_all(&(value.len() as u64).to_le_bytes())?;
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.write_all(b"\n")
}

fn get(fields: &[(String, Value)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.first_text())
}

/// `Nov 22 04:42:55 host ident[pid]: message` in the local time zone, as journalctl.
pub(crate) fn short(fields: &[(String, Value)], tz: &jiff::tz::TimeZone, iso: bool) -> String {
    let usec: i64 = get(fields, "__REALTIME_TIMESTAMP")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ident = get(fields, "SYSLOG_IDENTIFIER")
        .or_else(|| get(fields, "_COMM"))
        .unwrap_or_else(|| "unknown".into());
    let pid = get(fields, "_PID")
        .map(|p| format!("[{p}]"))
        .unwrap_or_default();
    let time = jiff::Timestamp::from_microsecond(usec)
        .map(|t| t.to_zoned(tz.clone()))
        .map(|z| {
            z.strftime(if iso {
                "%Y-%m-%dT%H:%M:%S%z"
            } else {
                "%b %d %H:%M:%S"
            })
            .to_string()
        })
        .unwrap_or_else(|_| usec.to_string());
    format!(
        "{time} {} {}{}: {}",
        printable(&get(fields, "_HOSTNAME").unwrap_or_else(|| "localhost".into())),
        printable(&ident),
        printable(&pid),
        printable(&get(fields, "MESSAGE").unwrap_or_default())
    )
}

/// Text from a record made safe for a terminal: control characters other than newline
/// and tab (escape sequences a local user can log with `logger $'\e]0;…'`, or anyone who
/// writes to the topic) are shown as `\xNN`, as journalctl does not pass them through
/// either. Nothing else changes.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn json(fields: &[(String, Value)]) -> serde_json::Value {
    fn v(val: &Value) -> serde_json::Value {
        match val {
            Value::Text(s) => serde_json::Value::String(s.clone()),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Bytes(b) => {
                serde_json::Value::Array(b.iter().map(|x| serde_json::Value::from(*x)).collect())
            }
            Value::Many(vs) => serde_json::Value::Array(vs.iter().map(v).collect()),
        }
    }
    serde_json::Value::Object(fields.iter().map(|(k, val)| (k.clone(), v(val))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::format::Encoder;
    use crate::journal::Entry;

    #[test]
    fn decodes_what_the_encoder_writes() {
        let c = config::parse("[kafka]\nbrokers = \"b:1\"\ntopic = \"t\"\n").unwrap();
        let mut enc = Encoder::new(&c.encoding, &c.kafka);
        let mut e = Entry::new();
        e.cursor = "s=0e7a5b6d4c3b4a29a1b2c3d4e5f60718;i=2a;b=9f8e7d6c5b4a39281706f5e4d3c2b1a0;m=1;t=1;x=1".into();
        e.realtime_usec = 1_700_000_000_000_000;
        e.push_field(b"MESSAGE", b"hi");
        e.push_field(b"_HOSTNAME", b"web-1");
        e.push_field(b"SYSLOG_IDENTIFIER", b"app");
        e.push_field(b"_PID", b"42");
        e.push_field(b"B", &[0xff]);
        e.push_field(b"T", b"a");
        e.push_field(b"T", b"b");
        let mut out = Vec::new();
        enc.encode(&e, &mut out);
        let f = decode(&out).unwrap();
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(short(&f, &utc, false), "Nov 14 22:13:20 web-1 app[42]: hi");
        assert_eq!(
            short(&f, &utc, true),
            "2023-11-14T22:13:20+0000 web-1 app[42]: hi"
        );
        let mut ex = Vec::new();
        export(&mut ex, &f).unwrap();
        let ex = String::from_utf8_lossy(&ex).into_owned();
        assert!(ex.starts_with("__CURSOR=s=0e7a"), "{ex}");
        assert!(
            ex.contains("__REALTIME_TIMESTAMP=1700000000000000\n"),
            "{ex}"
        );
        assert!(
            ex.contains("T=a\nT=b\n"),
            "repeated fields as repeated lines: {ex}"
        );
        assert!(!ex.contains("__SEQNUM"), "{ex}");
        assert!(ex.contains("B\n\u{1}\0\0\0\0\0\0\0"), "binary form: {ex:?}");
        assert!(f.contains(&("B".into(), Value::Bytes(vec![0xff]))));
        assert!(f.contains(&(
            "T".into(),
            Value::Many(vec![Value::Text("a".into()), Value::Text("b".into())])
        )));
        assert!(
            serde_json::to_string(&json(&f))
                .unwrap()
                .contains("\"B\":[255]")
        );
        assert!(decode(&out[..out.len() - 1]).is_err());
        // The JSON encoding decodes to the same fields.
        let c = config::parse(
            "[kafka]\nbrokers = \"b:1\"\ntopic = \"t\"\n[encoding]\nformat = \"json\"\n",
        )
        .unwrap();
        let mut jenc = Encoder::new(&c.encoding, &c.kafka);
        let mut jout = Vec::new();
        jenc.encode(&e, &mut jout);
        let mut a = decode(&jout).unwrap();
        let mut b = f.clone();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a, b);
        // And so does OTLP, which `short` reads the same way.
        let c = config::parse(
            "[kafka]\nbrokers = \"b:1\"\ntopic = \"t\"\n[encoding]\nformat = \"otlp\"\n",
        )
        .unwrap();
        let mut oenc = Encoder::new(&c.encoding, &c.kafka);
        let mut oout = Vec::new();
        oenc.encode(&e, &mut oout);
        let o = decode(&oout).unwrap();
        assert_eq!(short(&o, &utc, false), "Nov 14 22:13:20 web-1 app[42]: hi");
        let mut o = o;
        o.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(o, b);
        assert!(decode(b"").is_err());
    }
}
