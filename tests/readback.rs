//! Reading records back: `journald-kafka cat`, and the journal round trip
//! journal → agent → Kafka → `cat -o export` → systemd-journal-remote → journal.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn ship(f: &Fixture<Broker>, topic: &str, format: &str) {
    let last = cursor_of(f.entries().last().unwrap());
    let cfg = f
        .config(&format!("state-{topic}"))
        .topic(topic)
        .set("encoding", "format", format);
    let mut agent = Agent::start(&f.s.path(&format!("agent-{topic}")), &cfg);
    agent.finish_at(&last);
}

fn cat(broker: &Broker, args: &[&str]) -> Vec<u8> {
    let out = Command::new(BIN)
        .args(["cat", "--brokers", &broker.addr(), "--idle-ms", "2000"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The journal's entries keyed by realtime timestamp (unique in these fixtures), each as
/// field → values, without the fields that name a position in one particular journal.
fn by_time(entries: &[Fields]) -> BTreeMap<Vec<u8>, Fields> {
    entries
        .iter()
        .map(|e| {
            let mut f = e.clone();
            f.remove("__CURSOR");
            f.remove("__SEQNUM");
            f.remove("__SEQNUM_ID");
            (e["__REALTIME_TIMESTAMP"][0].clone(), f)
        })
        .collect()
}

#[test]
fn journal_round_trips_through_kafka_in_every_encoding() {
    let f = Fixture::new("roundtrip").broker().journal(
        "a.journal",
        &[
            "-n",
            "2000",
            "--binary-every",
            "7",
            "--multiline-every",
            "5",
            "--repeat-every",
            "11",
            "--boots",
            "2",
        ],
    );
    let original = f.entries();
    for (topic, format) in [
        ("rt-msgpack", "msgpack"),
        ("rt-json", "json"),
        ("rt-otlp", "otlp"),
    ] {
        f.broker.create_topic(topic, 2);
        ship(&f, topic, format);
        let export = cat(&f.broker, &["--topic", topic, "-o", "export"]);
        let back = f.s.path(&format!("back-{topic}"));
        write_export(&back, "back.journal", &export);
        let reimported = journal_entries(&back, &[]);
        assert_eq!(reimported.len(), original.len(), "{topic}");
        // Every field the agent ships comes back byte for byte: text, binary, multi-line,
        // repeated, timestamps, boot id. Only __CURSOR differs (it names a position in one
        // journal file) — see docs/format.md.
        assert_eq!(by_time(&reimported), by_time(&original), "{topic}");
    }
}

#[test]
fn cat_filters_formats_dedup_and_bad_records() {
    let f = Fixture::new("cat")
        .broker()
        .topic("cat", 1)
        .journal("a.journal", &["-n", "300", "--rate-usec", "20000"]);
    let entries = f.entries();
    ship(&f, "cat", "msgpack");

    // A record we did not write, and a duplicate of the first one (as after a crash).
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", f.broker.addr())
        .create()
        .unwrap();
    p.send(
        BaseRecord::<(), [u8]>::to("cat")
            .payload(&b"\x93not a map"[..])
            .headers(OwnedHeaders::new().insert(Header {
                key: "journal-cursor",
                value: Some("bogus"),
            })),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    let first = consume(&f.broker.addr(), &["cat"], 1, Duration::from_secs(5)).remove(0);
    p.send(
        BaseRecord::<(), [u8]>::to("cat")
            .payload(&first.payload[..])
            .headers(OwnedHeaders::new().insert(Header {
                key: "journal-cursor",
                value: Some(&first.cursor),
            })),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();

    let out = Command::new(BIN)
        .args([
            "cat",
            "--brokers",
            &f.broker.addr(),
            "--topic",
            "cat",
            "-o",
            "cat",
            "--idle-ms",
            "2000",
        ])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot decode record cat/0@300") && stderr.contains("cursor bogus"),
        "{stderr}"
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(
        lines > 300,
        "decodable records printed, the bad one skipped"
    );
    let dedup = cat(&f.broker, &["--topic", "cat", "-o", "json", "--dedup"]);
    assert_eq!(
        String::from_utf8_lossy(&dedup).lines().count(),
        300,
        "--dedup drops the repeated cursor"
    );

    // Field and unit filters, as journalctl.
    let want = journal_entries(&f.jdir, &["_SYSTEMD_UNIT=nginx.service", "PRIORITY=5"]).len();
    let got = cat(
        &f.broker,
        &[
            "--topic",
            "cat",
            "-o",
            "json",
            "-u",
            "nginx.service",
            "PRIORITY=5",
            "-n",
            "1000",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&got).lines().count(), want);
    let warn = journal_entries(&f.jdir, &["-p", "4"]).len();
    let got = cat(
        &f.broker,
        &["--topic", "cat", "-o", "json", "-p", "warning", "--dedup"],
    );
    assert_eq!(String::from_utf8_lossy(&got).lines().count(), warn);

    // --since/--until by the entries' own time; -n.
    let t = |i: usize| {
        String::from_utf8_lossy(&entries[i]["__REALTIME_TIMESTAMP"][0])
            .parse::<u64>()
            .unwrap()
    };
    let since = t(100) / 1_000_000 + 1;
    let until = t(250) / 1_000_000;
    let rfc = |secs: u64| {
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let want = entries
        .iter()
        .filter(|e| {
            let r = String::from_utf8_lossy(&e["__REALTIME_TIMESTAMP"][0])
                .parse::<u64>()
                .unwrap();
            r >= since * 1_000_000 && r < until * 1_000_000
        })
        .count();
    let got = cat(
        &f.broker,
        &[
            "--topic",
            "cat",
            "-o",
            "json",
            "--dedup",
            "--since",
            &rfc(since),
            "--until",
            &rfc(until),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&got).lines().count(), want);
    let got = cat(&f.broker, &["--topic", "cat", "-n", "5", "-o", "short-iso"]);
    let text = String::from_utf8_lossy(&got);
    // Multi-line messages continue on following lines, as in journalctl.
    let heads: Vec<_> = text.lines().filter(|l| l.starts_with("20")).collect();
    assert_eq!(heads.len(), 5, "{text}");
    assert!(
        heads
            .iter()
            .all(|l| l.contains(" testhost ") && l.contains(": ")),
        "{text}"
    );
    let pretty = cat(
        &f.broker,
        &["--topic", "cat", "-n", "1", "-o", "json-pretty"],
    );
    let v: serde_json::Value = serde_json::from_slice(&pretty).unwrap();
    assert_eq!(v["__CURSOR"].as_str().unwrap(), cursor_of(&entries[0]));
}
