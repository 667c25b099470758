//! Decoding records back into fields (`cat`, `verify`, tests): the inverse of [`super::encode`].
//!
//! Owns the reading side of the record contract. It must accept every record the encoder
//! writes, in either format, and reject anything else with an error saying what is wrong,
//! never guess.

use anyhow::{Context, Result, bail};

use super::TRUNCATED_FIELD;
use crate::journal::Entry;

/// A decoded field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    Bytes(Vec<u8>),
    Int(u64),
    Many(Vec<Value>),
}

impl Value {
    pub(crate) fn first_text(&self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s.clone()),
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Int(i) => Some(i.to_string()),
            Value::Many(v) => v.first().and_then(Value::first_text),
        }
    }
}

/// Decodes a record value: MessagePack when it starts with a map marker, JSON when `{`.
pub(crate) fn decode(payload: &[u8]) -> Result<Vec<(String, Value)>> {
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

fn decode_json(p: &[u8]) -> Result<Vec<(String, Value)>> {
    let v: serde_json::Value = serde_json::from_slice(p).context("not a JSON record")?;
    let serde_json::Value::Object(map) = v else {
        bail!("not a JSON object");
    };
    fn one(v: &serde_json::Value) -> Result<Value> {
        Ok(match v {
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Number(n) => {
                Value::Int(n.as_u64().context("negative or fractional number")?)
            }
            // An array of byte values is one binary value; an array of strings or arrays is
            // a repeated field (docs/format.md).
            serde_json::Value::Array(a) if a.iter().all(|x| x.is_u64()) => Value::Bytes(
                a.iter()
                    .map(|x| {
                        u8::try_from(x.as_u64().unwrap_or(256)).context("byte value above 255")
                    })
                    .collect::<Result<_>>()?,
            ),
            serde_json::Value::Array(a) => Value::Many(a.iter().map(one).collect::<Result<_>>()?),
            other => bail!("unexpected JSON value {other}"),
        })
    }
    // With serde_json's preserve_order the record's own order survives; the stable sort only
    // guarantees the __ fields come first for records written by other tools.
    let mut out: Vec<(String, Value)> = map
        .iter()
        .map(|(k, v)| Ok((k.clone(), one(v)?)))
        .collect::<Result<_>>()?;
    out.sort_by_key(|(k, _)| !k.starts_with("__"));
    Ok(out)
}

/// Rebuilds the entry a record was encoded from, to encode it again (smaller). Returns the
/// entry and the fields an earlier encoding cut, with their original lengths.
pub(crate) fn to_entry(fields: Vec<(String, Value)>) -> Result<(Entry, Vec<(String, usize)>)> {
    let mut e = Entry::new();
    let mut prior = Vec::new();
    fn push(e: &mut Entry, name: &str, v: &Value) {
        match v {
            Value::Text(s) => e.push_field(name.as_bytes(), s.as_bytes()),
            Value::Bytes(b) => e.push_field(name.as_bytes(), b),
            Value::Int(i) => e.push_field(name.as_bytes(), i.to_string().as_bytes()),
            Value::Many(vs) => vs.iter().for_each(|v| push(e, name, v)),
        }
    }
    for (name, v) in &fields {
        match name.as_str() {
            "__CURSOR" => e.cursor = v.first_text().context("__CURSOR without a value")?,
            "__REALTIME_TIMESTAMP" | "__MONOTONIC_TIMESTAMP" => {
                let t: u64 = v
                    .first_text()
                    .and_then(|t| t.parse().ok())
                    .with_context(|| format!("{name} is not a number"))?;
                if name == "__REALTIME_TIMESTAMP" {
                    e.realtime_usec = t;
                } else {
                    e.monotonic_usec = t;
                }
            }
            // Derived from the cursor again by the encoder.
            "__SEQNUM" | "__SEQNUM_ID" => {}
            n if n == TRUNCATED_FIELD => {
                for part in v.first_text().unwrap_or_default().split(' ') {
                    if let Some((f, len)) = part.rsplit_once('=') {
                        if let Ok(len) = len.parse() {
                            prior.push((f.to_string(), len));
                        }
                    }
                }
            }
            _ => push(&mut e, name, v),
        }
    }
    if e.cursor.is_empty() {
        bail!("the record has no __CURSOR");
    }
    Ok((e, prior))
}
