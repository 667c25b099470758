//! Decoding records back into fields (`cat`, `verify`, tests): the inverse of [`super::encode`].
//!
//! Owns the reading side of the record contract. It must accept every record the encoder
//! writes, in either format, and reject anything else with an error saying what is wrong,
//! never guess. A topic is writable by more than the agent, so a record is hostile input:
//! every declared length is checked against the bytes that follow before anything is
//! allocated for it, nesting is bounded ([`MAX_DEPTH`]), and no record can make the reader
//! allocate more than a small multiple of its own size or recurse without limit.

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

/// Decodes a record value: JSON when it starts with `{`, OTLP when with the key of
/// `LogsData.resource_logs` (0x0a, which no MessagePack map starts with), else MessagePack.
pub(crate) fn decode(payload: &[u8]) -> Result<Vec<(String, Value)>> {
    match payload.first() {
        Some(b'{') => decode_json(payload),
        Some(0x0a) => super::otlp::decode(payload),
        Some(_) => decode_msgpack(payload),
        None => bail!("empty record"),
    }
}

/// Arrays within arrays a record may hold. The encoder writes one level (a repeated field);
/// the margin is for other writers' records, and the bound keeps a hostile one from
/// exhausting the stack (the reader recurses per level).
pub(crate) const MAX_DEPTH: usize = 16;

fn decode_msgpack(mut p: &[u8]) -> Result<Vec<(String, Value)>> {
    use rmp::decode::*;
    fn value(p: &mut &[u8], depth: usize) -> Result<Value> {
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
            M::FixArray(n) => many(p, n as usize, depth)?,
            M::Array16 => {
                let n = len(p, 2)?;
                many(p, n, depth)?
            }
            M::Array32 => {
                let n = len(p, 4)?;
                many(p, n, depth)?
            }
            other => bail!("unexpected MessagePack marker {other:?}"),
        })
    }
    fn text(b: Vec<u8>) -> Result<Value> {
        Ok(Value::Text(
            String::from_utf8(b).context("str value is not UTF-8")?,
        ))
    }
    fn many(p: &mut &[u8], n: usize, depth: usize) -> Result<Value> {
        if depth >= MAX_DEPTH {
            bail!("arrays nested deeper than {MAX_DEPTH} levels");
        }
        // Every element takes at least one byte: a count beyond the bytes left is a lie.
        if n > p.len() {
            bail!(
                "an array declares {n} elements but only {} bytes follow",
                p.len()
            );
        }
        // Reserved by what the bytes could hold, capped: 16 nested arrays each claiming
        // every byte left must not reserve 16 times the record's size times 32.
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            out.push(value(p, depth + 1)?);
        }
        Ok(Value::Many(out))
    }
    let n = read_map_len(&mut p).map_err(|e| anyhow::anyhow!("not a MessagePack map: {e}"))?;
    // A key and a value take at least two bytes.
    if n as usize > p.len() / 2 {
        bail!(
            "the map declares {n} fields but only {} bytes follow",
            p.len()
        );
    }
    let mut out = Vec::with_capacity((n as usize).min(1024));
    for _ in 0..n {
        let k = match value(&mut p, 0)? {
            Value::Text(s) => s,
            Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
            other => bail!("field name is not a string: {other:?}"),
        };
        out.push((k, value(&mut p, 0)?));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Issue 27, item 6: a map header that claims four billion fields made `cat` and
    /// `audit` abort ("memory allocation of 240518168520 bytes failed").
    #[test]
    fn a_lying_map_or_array_length_is_an_error_not_an_allocation() {
        let e = decode(b"\xdf\xff\xff\xff\xff").unwrap_err();
        assert!(
            format!("{e:#}").contains("declares 4294967295 fields"),
            "{e:#}"
        );
        let e = decode(b"\x81\xa1A\xdd\xff\xff\xff\xff\x01").unwrap_err();
        assert!(
            format!("{e:#}").contains("declares 4294967295 elements"),
            "{e:#}"
        );
        let e = decode(b"\x81\xa1A\xdb\xff\xff\xff\xffabc").unwrap_err();
        assert!(format!("{e:#}").contains("truncated"), "{e:#}");
    }

    /// 200,000 nested one-element arrays: an error, not a stack overflow.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut r = b"\x81\xa1A".to_vec();
        r.extend(std::iter::repeat_n(0x91u8, 200_000));
        r.push(0x01);
        let e = decode(&r).unwrap_err();
        assert!(format!("{e:#}").contains("nested deeper"), "{e:#}");
        // JSON: serde_json's own recursion limit.
        let mut j = b"{\"A\":".to_vec();
        j.extend(std::iter::repeat_n(b'[', 200_000));
        assert!(decode(&j).is_err());
        // What the encoder writes (one level) and a little more still decode.
        let ok = b"\x81\xa1A\x92\xa1x\x91\xa1y";
        assert_eq!(
            decode(ok).unwrap()[0].1,
            Value::Many(vec![
                Value::Text("x".into()),
                Value::Many(vec![Value::Text("y".into())])
            ])
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Arbitrary bytes, and bytes behind every map header (lying counts included):
        /// decoding returns, never panics or aborts.
        #[test]
        fn arbitrary_records_never_panic(
            head in prop::sample::select(vec![
                &b""[..], b"\x81", b"\x8f", b"\xde\xff\xff", b"\xdf\xff\xff\xff\xff",
                b"\x81\xa1A", b"\x81\xa1A\xdd\x7f\xff\xff\xff", b"{",
            ]),
            body in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut r = head.to_vec();
            r.extend_from_slice(&body);
            let _ = decode(&r);
        }
    }
}
