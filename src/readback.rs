//! Reading shipped records back from Kafka (`journald-kafka cat`).
//!
//! Owns decoding records (MessagePack or JSON, per `docs/format.md`) into fields and
//! printing them the way journalctl does. It is a consumer only: it must never produce,
//! and never commit consumer offsets (it reads with a throwaway group and manual assignment).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A decoded field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Bytes(Vec<u8>),
    Int(u64),
    Many(Vec<Value>),
}

impl Value {
    fn first_text(&self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s.clone()),
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Int(i) => Some(i.to_string()),
            Value::Many(v) => v.first().and_then(Value::first_text),
        }
    }
}

/// Decodes a record value: MessagePack when it starts with a map marker, JSON when `{`.
pub fn decode(payload: &[u8]) -> Result<Vec<(String, Value)>> {
    match payload.first() {
        Some(b'{') => decode_json(payload),
        Some(_) => decode_msgpack(payload),
        None => bail!("empty record"),
    }
}

fn decode_msgpack(mut p: &[u8]) -> Result<Vec<(String, Value)>> {
    use rmp::decode::*;
    fn value(p: &mut &[u8]) -> Result<Value> {
        let marker = read_marker(p).map_err(|_| anyhow::anyhow!("truncated record"))?;
        use rmp::Marker as M;
        let len = |p: &mut &[u8], n: usize| -> Result<usize> {
            if p.len() < n {
                bail!("truncated record");
            }
            let mut v = 0usize;
            for &b in &p[..n] {
                v = (v << 8) | b as usize;
            }
            *p = &p[n..];
            Ok(v)
        };
        let take = |p: &mut &[u8], n: usize| -> Result<Vec<u8>> {
            if p.len() < n {
                bail!("truncated record");
            }
            let (a, b) = p.split_at(n);
            *p = b;
            Ok(a.to_vec())
        };
        Ok(match marker {
            M::FixPos(n) => Value::Int(n as u64),
            M::U8 => Value::Int(len(p, 1)? as u64),
            M::U16 => Value::Int(len(p, 2)? as u64),
            M::U32 => Value::Int(len(p, 4)? as u64),
            M::U64 => Value::Int(len(p, 8)? as u64),
            M::FixStr(n) => text(take(p, n as usize)?)?,
            M::Str8 => {
                let n = len(p, 1)?;
                text(take(p, n)?)?
            }
            M::Str16 => {
                let n = len(p, 2)?;
                text(take(p, n)?)?
            }
            M::Str32 => {
                let n = len(p, 4)?;
                text(take(p, n)?)?
            }
            M::Bin8 => {
                let n = len(p, 1)?;
                Value::Bytes(take(p, n)?)
            }
            M::Bin16 => {
                let n = len(p, 2)?;
                Value::Bytes(take(p, n)?)
            }
            M::Bin32 => {
                let n = len(p, 4)?;
                Value::Bytes(take(p, n)?)
            }
            M::FixArray(n) => many(p, n as usize)?,
            M::Array16 => {
                let n = len(p, 2)?;
                many(p, n)?
            }
            M::Array32 => {
                let n = len(p, 4)?;
                many(p, n)?
            }
            other => bail!("unexpected MessagePack marker {other:?}"),
        })
    }
    fn text(b: Vec<u8>) -> Result<Value> {
        Ok(Value::Text(
            String::from_utf8(b).context("str value is not UTF-8")?,
        ))
    }
    fn many(p: &mut &[u8], n: usize) -> Result<Value> {
        (0..n)
            .map(|_| value(p))
            .collect::<Result<Vec<_>>>()
            .map(Value::Many)
    }
    let n = read_map_len(&mut p).map_err(|e| anyhow::anyhow!("not a MessagePack map: {e}"))?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let k = match value(&mut p)? {
            Value::Text(s) => s,
            Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            other => bail!("field name is not a string: {other:?}"),
        };
        out.push((k, value(&mut p)?));
    }
    if !p.is_empty() {
        bail!("{} bytes after the map", p.len());
    }
    Ok(out)
}

fn decode_json(_p: &[u8]) -> Result<Vec<(String, Value)>> {
    bail!("JSON records are printed as they are; decoding them is not supported yet")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// journalctl's default: time host identifier[pid]: message
    Short,
    /// One JSON object per line; binary values as arrays of bytes.
    Json,
}

pub struct CatOptions {
    pub brokers: String,
    pub topic: String,
    pub output: Output,
    pub lines: Option<usize>,
    pub idle: Duration,
}

/// Prints the topic's records from the beginning until `lines` records or `idle` passes
/// without a new one.
pub fn cat(o: &CatOptions) -> Result<()> {
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

/// A consumer assigned to every partition of `topics`, from the beginning, with a
/// throwaway group and no offset commits.
pub fn consumer_from_beginning(brokers: &str, topics: &[String]) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("journald-kafka-read-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the Kafka consumer")?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("cannot reach the brokers {brokers}"))?;
        let before = tpl.count();
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
            }
        }
        if tpl.count() == before {
            bail!("topic {topic:?} has no partitions (does it exist?)");
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn cat_inner(o: &CatOptions) -> Result<()> {
    let consumer = consumer_from_beginning(&o.brokers, std::slice::from_ref(&o.topic))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut n = 0;
    let mut last = Instant::now();
    while o.lines.is_none_or(|l| n < l) && last.elapsed() < o.idle {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        last = Instant::now();
        n += 1;
        let payload = m.payload().unwrap_or_default();
        if o.output == Output::Json && payload.first() == Some(&b'{') {
            out.write_all(payload)?;
            out.write_all(b"\n")?;
            continue;
        }
        let fields = match decode(payload) {
            Ok(f) => f,
            Err(e) => {
                let cursor = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == crate::kafka::CURSOR_HEADER))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                eprintln!(
                    "journald-kafka: cannot decode record {}/{}@{} (cursor {}): {e:#}",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    cursor.as_deref().unwrap_or("none")
                );
                continue;
            }
        };
        match o.output {
            Output::Short => writeln!(out, "{}", short(&fields))?,
            Output::Json => writeln!(out, "{}", json(&fields))?,
        }
    }
    Ok(())
}

fn get(fields: &[(String, Value)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.first_text())
}

/// `Nov 22 04:42:55 host ident[pid]: message`, in UTC.
pub fn short(fields: &[(String, Value)]) -> String {
    let usec: u64 = get(fields, "__REALTIME_TIMESTAMP")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ident = get(fields, "SYSLOG_IDENTIFIER")
        .or_else(|| get(fields, "_COMM"))
        .unwrap_or_else(|| "unknown".into());
    let pid = get(fields, "_PID")
        .map(|p| format!("[{p}]"))
        .unwrap_or_default();
    format!(
        "{} {} {ident}{pid}: {}",
        format_time(usec),
        get(fields, "_HOSTNAME").unwrap_or_else(|| "localhost".into()),
        get(fields, "MESSAGE").unwrap_or_default()
    )
}

fn format_time(usec: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = (usec / 1_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{} {:02} {:02}:{:02}:{:02}",
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn json(fields: &[(String, Value)]) -> String {
    fn v(out: &mut String, val: &Value) {
        match val {
            Value::Text(s) => out.push_str(&format!("{s:?}")),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Bytes(b) => {
                out.push('[');
                out.push_str(
                    &b.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push(']');
            }
            Value::Many(vs) => {
                out.push('[');
                for (i, x) in vs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v(out, x);
                }
                out.push(']');
            }
        }
    }
    let mut out = String::from("{");
    for (i, (k, val)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{k:?}:"));
        v(&mut out, val);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::encode::Encoder;
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
        assert_eq!(short(&f), "Nov 14 22:13:20 web-1 app[42]: hi");
        assert!(f.contains(&("B".into(), Value::Bytes(vec![0xff]))));
        assert!(f.contains(&(
            "T".into(),
            Value::Many(vec![Value::Text("a".into()), Value::Text("b".into())])
        )));
        assert!(json(&f).contains("\"B\":[255]"));
        assert!(decode(&out[..out.len() - 1]).is_err());
        assert!(decode(b"").is_err());
    }
}
