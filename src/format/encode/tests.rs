//! Fixtures for the encoder's unit tests (a configuration, an entry, a MessagePack
//! reader), and the tests of the record as a whole: its layout, the added `_BOOT_ID`, the
//! damage and truncation markers, the round trip in both formats. A test of one concern
//! sits in that concern's file (`fields`, `route`, `writer`) and takes its fixtures here.

use super::{Encoder, RECORD_OVERHEAD};
use crate::config::{self, EncodingConfig, KafkaConfig};
use crate::format::{DAMAGED_FIELD, TRUNCATED_FIELD};
use crate::journal::Entry;
use proptest::prelude::*;
use rmpv::Value;

pub(super) const CURSOR: &str = "s=0e7a5b6d4c3b4a29a1b2c3d4e5f60718;i=2a;b=9f8e7d6c5b4a39281706f5e4d3c2b1a0;m=4c4b40;t=60a1b2c3d4e5f;x=abcdef0123456789";

fn cfg(extra: &str) -> (EncodingConfig, KafkaConfig) {
    let c = config::parse(&format!(
        "[kafka]\nbrokers = \"b:1\"\ntopic = \"journal\"\nkey_field = \"_HOSTNAME\"\n{extra}"
    ))
    .unwrap();
    (c.encoding, c.kafka)
}

pub(super) fn encoder(extra: &str) -> Encoder {
    let (e, k) = cfg(extra);
    Encoder::new(&e, &k)
}

pub(super) fn entry(fields: &[(&[u8], &[u8])]) -> Entry {
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

pub(super) fn decode(bytes: &[u8]) -> Vec<(String, Value)> {
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

/// An entry with no repeated name goes into the record as its fields' MessagePack form in
/// one copy (`Entry::encoded`); the record must be byte for byte the one written field by
/// field. The name profile forces the field-by-field path: with no name it would change
/// (none starts with '_') and no boot id to add, both paths must agree.
#[test]
fn the_whole_entry_copy_is_the_field_by_field_record() {
    let lens = [0usize, 1, 31, 32, 255, 256, 65_535, 65_536];
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        fields.push((format!("TEXT_{i}").into_bytes(), vec![b't'; len]));
        let mut bin = vec![7u8; len.max(1)];
        bin[0] = 0xff;
        fields.push((format!("BIN_{i}").into_bytes(), bin));
    }
    fields.push((b"UNI".to_vec(), "h\u{e9}llo".as_bytes().to_vec()));
    fields.push(([0xfe, b'N'].to_vec(), b"name is not text".to_vec()));
    let refs: Vec<(&[u8], &[u8])> = fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let mut e = entry(&refs);
    e.boot_id.clear();
    let (mut whole, mut by_field) = (Vec::new(), Vec::new());
    encoder("").encode(&e, &mut whole);
    encoder("[encoding]\nstrip_underscore = true\n").encode(&e, &mut by_field);
    assert!(whole == by_field, "the two paths differ");
    // And the kinds: a str exactly when the bytes are UTF-8, names included.
    let v = rmpv::decode::read_value(&mut &whole[..]).unwrap();
    for (k, v) in v.as_map().unwrap() {
        for x in [k, v] {
            match x {
                Value::String(s) => assert!(s.as_str().is_some(), "{x}"),
                Value::Binary(b) => assert!(std::str::from_utf8(b).is_err(), "{x:?}"),
                Value::Integer(_) => {}
                other => panic!("unexpected {other}"),
            }
        }
    }
}
