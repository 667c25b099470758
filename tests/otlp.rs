//! `encoding.format = "otlp"`: what the agent writes is read with OpenTelemetry's own
//! protobuf definitions (`opentelemetry-proto` from PyPI, through tests/tools/otlp_decode.py,
//! as the Collector's Kafka receiver reads `otlp_proto`), and compared field by field with
//! the journal as journalctl exports it.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value as Json;

/// Decodes every payload with tests/tools/otlp_decode.py: one JSON object per record.
fn decode_with_opentelemetry(payloads: &[&[u8]]) -> Vec<Json> {
    let mut child = Command::new("python3")
        .arg(root().join("tests/tools/otlp_decode.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = Vec::new();
    for p in payloads {
        input.extend_from_slice(&(p.len() as u64).to_le_bytes());
        input.extend_from_slice(p);
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "opentelemetry-proto could not read the records: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// A decoded `AnyValue` as the journal's values: one or several, raw bytes.
fn values(v: &Json) -> Vec<Vec<u8>> {
    if let Some(s) = v.get("s") {
        return vec![s.as_str().unwrap().as_bytes().to_vec()];
    }
    if let Some(b) = v.get("b") {
        let hex = b.as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert!(
            std::str::from_utf8(&bytes).is_err(),
            "UTF-8 must be a string_value"
        );
        return vec![bytes];
    }
    if let Some(i) = v.get("i") {
        return vec![i.to_string().into_bytes()];
    }
    if let Some(a) = v.get("a") {
        let a = a.as_array().unwrap();
        assert!(a.len() > 1, "a single value is not an array");
        return a.iter().flat_map(values).collect();
    }
    panic!("unexpected value {v}")
}

fn text(v: &[Vec<u8>]) -> String {
    String::from_utf8(v[0].clone()).unwrap()
}

/// An entry whose MESSAGE is not UTF-8 (priority 0), one without MESSAGE (a priority out
/// of range, a repeated field) and one with a 600 kB binary field: the shapes the generator
/// does not write.
fn unusual_entries(realtime: u64) -> Vec<u8> {
    let mut e = format!(
        "__REALTIME_TIMESTAMP={realtime}\n__MONOTONIC_TIMESTAMP=900000001\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\nPRIORITY=0\n_HOSTNAME=odd-host\n_COMM=oddity\nMESSAGE\n"
    )
    .into_bytes();
    let msg = b"caf\xe9 latin-1\n\x00nul";
    e.extend_from_slice(&(msg.len() as u64).to_le_bytes());
    e.extend_from_slice(msg);
    e.extend_from_slice(b"\n\n");
    e.extend(format!(
        "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP=900000002\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\nPRIORITY=9\nNOTE=no message\nNOTE=twice\n\n",
        realtime + 1
    ).into_bytes());
    e.extend(huge_entry_export(realtime + 2, 600_000));
    e
}

#[test]
fn otlp_records_carry_every_field_as_opentelemetry_reads_them() {
    let start = recent_usec(600);
    let f = Fixture::new("otlp")
        .broker()
        .topic("otlp", 2)
        .topic("otlp-progress", 1)
        .journal(
            "a.journal",
            &[
                "-n",
                "1500",
                "--start-usec",
                &start.to_string(),
                "--binary-every",
                "7",
                "--multiline-every",
                "5",
                "--repeat-every",
                "11",
                "--boots",
                "2",
            ],
        )
        .export("b.journal", &unusual_entries(start + 10_000_000_000));
    let entries = f.entries();
    assert_eq!(entries.len(), 1503);
    let cfg = f
        .config("state")
        .topic("otlp")
        .set("encoding", "format", "otlp")
        .set("delivery", "progress_interval_ms", 300)
        .set("delivery", "progress_topic", "otlp-progress");
    let before_ns = now_ns();
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.finish_at(&f.last());
    let after_ns = now_ns();

    let records: Vec<Record> = consume_all(&f.broker.addr(), &["otlp"], 3)
        .into_iter()
        .filter(|r| !r.headers.contains_key("journal-progress"))
        .collect();
    assert_eq!(records.len(), entries.len());
    let decoded = decode_with_opentelemetry(
        &records
            .iter()
            .map(|r| r.payload.as_slice())
            .collect::<Vec<_>>(),
    );
    let by_cursor: BTreeMap<&str, &Json> = records
        .iter()
        .zip(&decoded)
        .map(|(r, d)| (r.cursor.as_str(), d))
        .collect();
    for e in &entries {
        let c = cursor_of(e);
        let d = by_cursor[c.as_str()];
        check_record(e, d, before_ns, after_ns);
    }
    let large = decoded
        .iter()
        .filter_map(|d| d["attributes"].as_array())
        .flatten()
        .filter(|kv| kv[0] == "HUGE")
        .count();
    assert_eq!(large, 1, "the 600 kB field arrived whole");

    // audit reads OTLP records: every entry covered, none lost, the hosts named.
    let (ok, json, out) = audit_json(&agent.config, None);
    assert!(ok, "{out}");
    let covered: u64 = json
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["covered"].as_u64().unwrap())
        .sum();
    let lost: u64 = json
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["lost"].as_u64().unwrap())
        .sum();
    assert_eq!((covered, lost), (entries.len() as u64, 0), "{out}");
    assert!(
        out.contains("testhost") && out.contains("odd-host"),
        "{out}"
    );
}

/// One record against its journal entry, field by field.
fn check_record(e: &Fields, d: &Json, before_ns: u64, after_ns: u64) {
    let c = cursor_of(e);
    let realtime: u64 = text(&e["__REALTIME_TIMESTAMP"]).parse().unwrap();
    assert_eq!(d["time_unix_nano"].as_u64(), Some(realtime * 1000), "{c}");
    let observed = d["observed_time_unix_nano"].as_u64().unwrap();
    assert!(
        (before_ns..=after_ns).contains(&observed),
        "observed time {observed} is when the agent read the entry"
    );
    assert_eq!(
        d["scope"],
        serde_json::json!(["journald-kafka", env!("CARGO_PKG_VERSION")])
    );
    // Severity from PRIORITY, as the OpenTelemetry logs data model maps syslog's.
    let want = match e.get("PRIORITY").map(|p| text(p)).as_deref() {
        Some("0") => (21, "emerg"),
        Some("1") => (19, "alert"),
        Some("2") => (18, "crit"),
        Some("3") => (17, "err"),
        Some("4") => (13, "warning"),
        Some("5") => (10, "notice"),
        Some("6") => (9, "info"),
        Some("7") => (5, "debug"),
        _ => (0, ""),
    };
    assert_eq!(
        (
            d["severity_number"].as_u64().unwrap(),
            d["severity_text"].as_str().unwrap()
        ),
        (want.0, want.1),
        "{c}"
    );
    // The body is MESSAGE, bytes when it is not UTF-8.
    match e.get("MESSAGE") {
        Some(m) => assert_eq!(&values(&d["body"]), m, "{c}"),
        None => assert!(d["body"].is_null(), "{c}"),
    }
    // Every other field is an attribute, with all its values, once.
    let mut attributes: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for kv in d["attributes"].as_array().unwrap() {
        let k = kv[0].as_str().unwrap().to_string();
        assert!(!attributes.contains_key(&k), "{k} twice in {c}");
        attributes.insert(k, values(&kv[1]));
    }
    let mut want: Fields = e.clone();
    want.remove("MESSAGE");
    want.remove("__REALTIME_TIMESTAMP");
    // journalctl 252 does not export the sequence number; the agent takes it from the cursor.
    let (id, seq) = cursor_parts(&c);
    want.insert("__SEQNUM_ID".into(), vec![id.into_bytes()]);
    want.insert("__SEQNUM".into(), vec![seq.to_string().into_bytes()]);
    assert_eq!(attributes, want, "{c}");
    // The resource names the entry's host and service.
    let resource: BTreeMap<String, String> = d["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| (kv[0].as_str().unwrap().to_string(), text(&values(&kv[1]))))
        .collect();
    let field = |n: &str| e.get(n).map(|v| text(v));
    let service = field("_SYSTEMD_UNIT")
        .or(field("SYSLOG_IDENTIFIER"))
        .or(field("_COMM"));
    let expect: BTreeMap<String, String> = [
        ("host.name", field("_HOSTNAME")),
        ("host.id", field("_MACHINE_ID")),
        ("host.boot.id", field("_BOOT_ID")),
        ("service.name", service),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_string(), v?)))
    .collect();
    assert_eq!(resource, expect, "{c}");
}

fn cursor_parts(c: &str) -> (String, u64) {
    let part = |p: &str| {
        c.split(';')
            .find_map(|kv| kv.strip_prefix(p))
            .unwrap()
            .to_string()
    };
    (part("s="), u64::from_str_radix(&part("i="), 16).unwrap())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn otlp_records_read_back_with_cat() {
    let f = Fixture::new("otlp-cat").broker().topic("oc", 1).journal(
        "a.journal",
        &["-n", "20", "--start-usec", &recent_usec(60).to_string()],
    );
    let cfg = f
        .config("state")
        .topic("oc")
        .set("encoding", "format", "otlp");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.finish_at(&f.last());
    let (st, out) = run_cli(&[
        "cat",
        "--brokers",
        &f.broker.addr(),
        "--topic",
        "oc",
        "--idle-ms",
        "2000",
        "-o",
        "json",
    ]);
    assert!(st.success(), "{out}");
    let lines: Vec<Json> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20, "{out}");
    let first = &f.entries()[0];
    assert_eq!(lines[0]["MESSAGE"], text(&first["MESSAGE"]));
    assert_eq!(lines[0]["__CURSOR"], cursor_of(first));
}
