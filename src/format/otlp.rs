//! The OTLP layout (`encoding.format = "otlp"`): one entry as an OpenTelemetry `LogsData`
//! protobuf holding one `LogRecord`, what the OpenTelemetry Collector's Kafka receiver
//! reads with `encoding: otlp_proto`.
//!
//! Owns the protobuf field numbers of the messages the agent writes (from
//! `opentelemetry/proto/logs/v1/logs.proto` and `common/v1/common.proto`), the protobuf wire
//! primitives, the mapping of syslog priorities to OpenTelemetry severities, and the reading
//! of such a record back into fields (`cat`, `audit`, the refusal policy's re-encoding).
//! The encoder (`encode::otlp`) writes with these numbers; nothing else may know them.
//!
//! A record in a topic is hostile input: the reader checks every length against the bytes
//! that follow before it takes them, never reserves room from a count it was told, bounds
//! the nesting of arrays ([`super::decode::MAX_DEPTH`]) and refuses what the agent never
//! writes (several log records, groups, maps) with an error that says so.

use anyhow::{Context, Result, bail};

use super::decode::{MAX_DEPTH, Value};

/// `LogsData.resource_logs`, `ResourceLogs.resource`, `ResourceLogs.scope_logs`,
/// `ScopeLogs.scope`, `ScopeLogs.log_records`, `Resource.attributes`,
/// `InstrumentationScope.name` / `.version`.
pub(super) const LOGS_DATA_RESOURCE_LOGS: u32 = 1;
pub(super) const RESOURCE_LOGS_RESOURCE: u32 = 1;
pub(super) const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
pub(super) const SCOPE_LOGS_SCOPE: u32 = 1;
pub(super) const SCOPE_LOGS_LOG_RECORDS: u32 = 2;
pub(super) const RESOURCE_ATTRIBUTES: u32 = 1;
pub(super) const SCOPE_NAME: u32 = 1;
pub(super) const SCOPE_VERSION: u32 = 2;

/// `LogRecord` fields.
pub(super) const RECORD_TIME: u32 = 1;
pub(super) const RECORD_SEVERITY_NUMBER: u32 = 2;
pub(super) const RECORD_SEVERITY_TEXT: u32 = 3;
pub(super) const RECORD_BODY: u32 = 5;
pub(super) const RECORD_ATTRIBUTES: u32 = 6;
pub(super) const RECORD_OBSERVED_TIME: u32 = 11;

/// `KeyValue` and `AnyValue` / `ArrayValue` fields.
pub(super) const KEY_VALUE_KEY: u32 = 1;
pub(super) const KEY_VALUE_VALUE: u32 = 2;
pub(super) const ANY_STRING: u32 = 1;
pub(super) const ANY_BOOL: u32 = 2;
pub(super) const ANY_INT: u32 = 3;
pub(super) const ANY_DOUBLE: u32 = 4;
pub(super) const ANY_ARRAY: u32 = 5;
pub(super) const ANY_KVLIST: u32 = 6;
pub(super) const ANY_BYTES: u32 = 7;
pub(super) const ARRAY_VALUES: u32 = 1;

/// The scope every record names: the agent that read the entry.
pub(super) const SCOPE: &str = "journald-kafka";

/// Wire types.
pub(super) const VARINT: u8 = 0;
pub(super) const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A syslog priority (`PRIORITY=0` … `7`) as OpenTelemetry's severity number and text: the
/// mapping of the logs data model's appendix, which the Collector's own syslog and journald
/// receivers use (emerg → FATAL 21, alert → ERROR3 19, crit → ERROR2 18, err → ERROR 17,
/// warning → WARN 13, notice → INFO2 10, info → INFO 9, debug → DEBUG 5), with journalctl's
/// names as the text.
pub(super) fn severity(priority: &[u8]) -> Option<(u64, &'static str)> {
    const SEVERITY: [(u64, &str); 8] = [
        (21, "emerg"),
        (19, "alert"),
        (18, "crit"),
        (17, "err"),
        (13, "warning"),
        (10, "notice"),
        (9, "info"),
        (5, "debug"),
    ];
    match priority {
        [d @ b'0'..=b'7'] => Some(SEVERITY[usize::from(d - b'0')]),
        _ => None,
    }
}

pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn varint_len(v: u64) -> usize {
    // One byte per started group of seven bits; 0 still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A field's key: every field number the agent writes fits one byte.
pub(super) fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    debug_assert!(field < 16);
    out.push(((field as u8) << 3) | wire);
}

/// The size of a length-delimited field of `body` bytes, key included.
pub(super) fn delimited_len(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

pub(super) fn delimited(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    tag(out, field, LEN);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Reads a record the encoder wrote: the fields of its one log record, in the record's
/// order, with `__REALTIME_TIMESTAMP` (from the record's time) after `__CURSOR` and
/// `MESSAGE` (from the body) before the entry's own fields.
pub(super) fn decode(payload: &[u8]) -> Result<Vec<(String, Value)>> {
    let mut records = Vec::new();
    for_each(payload, |field, v| {
        if field == LOGS_DATA_RESOURCE_LOGS {
            for_each(v.bytes("resource_logs")?, |field, v| {
                if field == RESOURCE_LOGS_SCOPE_LOGS {
                    for_each(v.bytes("scope_logs")?, |field, v| {
                        if field == SCOPE_LOGS_LOG_RECORDS {
                            records.push(v.bytes("log_records")?);
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
        }
        Ok(())
    })
    .context("not an OTLP LogsData record")?;
    match records[..] {
        [record] => log_record(record),
        _ => bail!(
            "the OTLP record holds {} log records; journald-kafka writes one entry per record",
            records.len()
        ),
    }
}

fn log_record(p: &[u8]) -> Result<Vec<(String, Value)>> {
    let mut fields: Vec<(String, Value)> = Vec::new();
    let mut time = None;
    let mut body = None;
    for_each(p, |field, v| {
        match field {
            RECORD_TIME => time = Some(v.fixed64("time_unix_nano")?),
            RECORD_BODY => body = Some(any_value(v.bytes("body")?, 0)?),
            RECORD_ATTRIBUTES => fields.push(key_value(v.bytes("attributes")?)?),
            _ => {}
        }
        Ok(())
    })?;
    // OTLP integers are signed: the encoder writes an address number past `i64::MAX` as
    // text, and it is a number again here.
    for (k, v) in &mut fields {
        if let ("__REALTIME_TIMESTAMP" | "__MONOTONIC_TIMESTAMP" | "__SEQNUM", Value::Text(t)) =
            (k.as_str(), &*v)
        {
            if let Ok(n) = t.parse() {
                *v = Value::Int(n);
            }
        }
    }
    // The time in nanoseconds is the entry's in microseconds, exactly (the encoder writes
    // `__REALTIME_TIMESTAMP` as an attribute instead when it does not fit).
    if !fields.iter().any(|(k, _)| k == "__REALTIME_TIMESTAMP") {
        let t = time.context("the log record has no time_unix_nano")?;
        let at = fields
            .iter()
            .position(|(k, _)| k == "__CURSOR")
            .map_or(0, |i| i + 1);
        fields.insert(at, ("__REALTIME_TIMESTAMP".into(), Value::Int(t / 1000)));
    }
    if let Some(body) = body {
        let at = fields
            .iter()
            .position(|(k, _)| !k.starts_with("__"))
            .unwrap_or(fields.len());
        fields.insert(at, ("MESSAGE".into(), body));
    }
    Ok(fields)
}

fn key_value(p: &[u8]) -> Result<(String, Value)> {
    let mut key = None;
    let mut value = None;
    for_each(p, |field, v| {
        match field {
            KEY_VALUE_KEY => {
                key = Some(String::from_utf8(v.bytes("key")?.to_vec()).context("key is not UTF-8")?)
            }
            KEY_VALUE_VALUE => value = Some(any_value(v.bytes("value")?, 0)?),
            _ => {}
        }
        Ok(())
    })?;
    let key = key.context("an attribute without a key")?;
    let value = value.with_context(|| format!("attribute {key} has no value"))?;
    Ok((key, value))
}

fn any_value(p: &[u8], depth: usize) -> Result<Value> {
    let mut out = None;
    for_each(p, |field, v| {
        out = Some(match field {
            ANY_STRING => Value::Text(
                String::from_utf8(v.bytes("string_value")?.to_vec())
                    .context("string_value is not UTF-8")?,
            ),
            ANY_BYTES => Value::Bytes(v.bytes("bytes_value")?.to_vec()),
            ANY_INT => {
                let n = v.varint("int_value")?;
                if n > i64::MAX as u64 {
                    bail!("a negative int_value: journal values are never negative");
                }
                Value::Int(n)
            }
            ANY_ARRAY => {
                if depth >= MAX_DEPTH {
                    bail!("arrays nested deeper than {MAX_DEPTH} levels");
                }
                let mut values = Vec::new();
                for_each(v.bytes("array_value")?, |field, v| {
                    if field == ARRAY_VALUES {
                        values.push(any_value(v.bytes("values")?, depth + 1)?);
                    }
                    Ok(())
                })?;
                Value::Many(values)
            }
            ANY_BOOL | ANY_DOUBLE | ANY_KVLIST => {
                bail!(
                    "an AnyValue of kind {field} (bool, double or map): journald-kafka never writes one"
                )
            }
            _ => return Ok(()),
        });
        Ok(())
    })?;
    out.context("an empty AnyValue")
}

/// One field's value as the wire carries it.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Wire<'a> {
    fn bytes(&self, what: &str) -> Result<&'a [u8]> {
        match self {
            Wire::Bytes(b) => Ok(b),
            _ => bail!("{what} is not length-delimited"),
        }
    }

    fn varint(&self, what: &str) -> Result<u64> {
        match self {
            Wire::Varint(v) => Ok(*v),
            _ => bail!("{what} is not a varint"),
        }
    }

    fn fixed64(&self, what: &str) -> Result<u64> {
        match self {
            Wire::Fixed64(v) => Ok(*v),
            _ => bail!("{what} is not a fixed64"),
        }
    }
}

/// Calls `f` with each field of the message `p`, in order. Unknown fields are handed over
/// like known ones (the caller skips them): a newer writer's additions are not an error.
fn for_each<'a>(mut p: &'a [u8], mut f: impl FnMut(u32, Wire<'a>) -> Result<()>) -> Result<()> {
    while !p.is_empty() {
        let key = read_varint(&mut p)?;
        let field = u32::try_from(key >> 3).context("a field number beyond 32 bits")?;
        if field == 0 {
            bail!("field number 0");
        }
        let value = match (key & 7) as u8 {
            VARINT => Wire::Varint(read_varint(&mut p)?),
            FIXED64 => Wire::Fixed64(u64::from_le_bytes(take(&mut p, 8)?.try_into()?)),
            LEN => {
                let n = read_varint(&mut p)?;
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= p.len())
                    .with_context(|| {
                        format!(
                            "field {field} declares {n} bytes but only {} follow",
                            p.len()
                        )
                    })?;
                Wire::Bytes(take(&mut p, n)?)
            }
            FIXED32 => {
                take(&mut p, 4)?;
                Wire::Fixed32
            }
            w => bail!("field {field} has wire type {w} (groups are not written by anyone today)"),
        };
        f(field, value)?;
    }
    Ok(())
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if p.len() < n {
        bail!("truncated record");
    }
    let (a, b) = p.split_at(n);
    *p = b;
    Ok(a)
}

fn read_varint(p: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some((&b, rest)) = p.split_first() else {
            bail!("truncated record");
        };
        *p = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("a varint longer than ten bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_sizes_match_what_is_written() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&mut &out[..]).unwrap(), v);
        }
    }

    #[test]
    fn hostile_records_are_errors_that_say_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"\x0a\xff\xff\xff\xff\x0f", "declares 4294967295 bytes"),
            (b"\x0a\x00", "holds 0 log records"),
            (b"\x0b", "wire type 3"),
            (
                b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
                "longer than ten bytes",
            ),
            (b"\x00\x01", "field number 0"),
            (b"\x0a\x04\x12\x02\x12\x00", "no time_unix_nano"),
        ];
        for (record, want) in cases {
            let e = format!("{:#}", decode(record).unwrap_err());
            assert!(e.contains(want), "{record:?}: {e}");
        }
    }

    /// Arrays inside arrays 200,000 deep: an error, not a stack overflow.
    #[test]
    fn deep_nesting_is_an_error() {
        let mut v = vec![0x1a, 0x00]; // AnyValue{int_value: 0}
        for _ in 0..200_000 {
            // AnyValue{array_value: ArrayValue{values: v}}
            let mut inner = Vec::new();
            delimited(&mut inner, ARRAY_VALUES, &v);
            let mut outer = Vec::new();
            delimited(&mut outer, ANY_ARRAY, &inner);
            v = outer;
            if v.len() > 4_000_000 {
                break;
            }
        }
        let e = format!("{:#}", any_value(&v, 0).unwrap_err());
        assert!(e.contains("nested deeper"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Arbitrary bytes behind plausible prefixes: decoding returns, never panics.
        #[test]
        fn arbitrary_records_never_panic(
            head in prop::sample::select(vec![
                &b""[..], b"\x0a", b"\x0a\x7f\x12\x7d\x12\x7b", b"\x0a\xff\xff\xff\xff\x0f",
            ]),
            body in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut r = head.to_vec();
            r.extend_from_slice(&body);
            let _ = decode(&r);
        }
    }
}
