//! The topic is writable by more than the agent (issue 27, items 2 and 6): hostile records
//! beside real ones. The read-back tools (`cat`, `audit`, `verify`) name each bad record
//! and go on; a record that did not come from the journal input (a Forward event carrying a
//! real host's `__SEQNUM_ID`/`__SEQNUM`, a copy without the cursor header) never counts as
//! a journal entry and can neither fill a gap nor make a duplicate.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn send(p: &BaseProducer, topic: &str, payload: &[u8], headers: &[(&str, &str)]) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    p.send(
        BaseRecord::<(), [u8]>::to(topic)
            .payload(payload)
            .headers(h),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.poll(Duration::ZERO);
}

/// Runs the agent's CLI with a time bound; returns (exit code, stdout, stderr).
fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let start = Instant::now();
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{args:?} took {:?}",
        start.elapsed()
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hostile_records_in_the_topic_are_named_and_skipped_never_fatal_never_counted() {
    let f = Fixture::new("hostile-topic")
        .broker()
        .topic("ht", 1)
        .journal(
            "a.journal",
            &["-n", "200", "--start-usec", &recent_usec(600).to_string()],
        );
    let all = f.entries();
    let cfg = f
        .config("state")
        .topic("ht")
        .set("delivery", "progress_interval_ms", 300);
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.finish_at(&cursor_of(all.last().unwrap()));
    let config = agent.config.to_str().unwrap().to_string();
    let real = consume_all(&f.broker.addr(), &["ht"], 3);
    let entry_records: Vec<_> = real
        .iter()
        .filter(|r| !r.headers.contains_key("journal-progress"))
        .collect();
    assert_eq!(entry_records.len(), 200);

    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", f.broker.addr())
        .create()
        .unwrap();
    // Item 6: a map header claiming 4 billion fields; 200,000 nested arrays; a str header
    // claiming 4 GB. With and without a (real-looking) cursor header.
    let c0 = entry_records[0].cursor.clone();
    let mut deep = b"\x81\xa7MESSAGE".to_vec();
    deep.extend(std::iter::repeat_n(0x91u8, 200_000));
    deep.push(0x01);
    send(
        &p,
        "ht",
        b"\xdf\xff\xff\xff\xff",
        &[("journal-cursor", &c0)],
    );
    send(&p, "ht", &deep, &[("journal-cursor", &c0)]);
    send(&p, "ht", b"\x81\xa1A\xdb\xff\xff\xff\xff", &[]);
    // A cursor header with a terminal escape: printed escaped.
    send(
        &p,
        "ht",
        b"\xdf\xff\xff\xff\xff",
        &[("journal-cursor", "\x1b[2Jx")],
    );
    // Item 2: what the Forward input writes for a client that copies a real host's
    // positions (headers the Forward producer sets; the payload names the real space):
    // re-sends of three real entries (duplicates) and one past the end (a fake "new"
    // position), none with the cursor header.
    let (first, _) = decode_msgpack(&entry_records[50].payload);
    let seqnum_id = String::from_utf8_lossy(&first["__SEQNUM_ID"][0]).into_owned();
    for r in &entry_records[50..53] {
        send(
            &p,
            "ht",
            &r.payload,
            &[
                ("journald-kafka-source", "forward"),
                ("fluent-format", "1"),
                ("fluent-tag", "app"),
            ],
        );
    }
    // And the same payloads from another producer, without any header.
    for r in &entry_records[50..53] {
        send(&p, "ht", &r.payload, &[]);
    }
    // A record whose payload names another position than its cursor header.
    send(
        &p,
        "ht",
        &entry_records[60].payload,
        &[("journal-cursor", &entry_records[61].cursor)],
    );
    // A message with a terminal escape, as any local user can log it: shown escaped.
    send(&p, "ht", b"\x81\xa7MESSAGE\xa8\x1b[31mred", &[]);
    p.flush(Duration::from_secs(10)).unwrap();

    for output in ["short", "json", "export"] {
        let (code, stdout, stderr) = cli(&[
            "cat",
            "--brokers",
            &f.broker.addr(),
            "--topic",
            "ht",
            "-o",
            output,
            "--idle-ms",
            "2000",
        ]);
        assert_eq!(code, Some(0), "cat -o {output} survives: {stderr}");
        assert!(
            stderr.contains("cannot decode record ht/0@")
                && stderr.contains("declares 4294967295 fields")
                && stderr.contains("nested deeper"),
            "cat -o {output} names each bad record and why: {stderr}"
        );
        assert!(
            !stderr.contains('\x1b') && stderr.contains("\\u{1b}[2Jx"),
            "a header's control bytes are escaped: {stderr:?}"
        );
        assert!(
            stderr.contains("skipped 3 Forward-input records"),
            "{stderr}"
        );
        if output == "json" {
            // 200 real + 3 header-less copies + the mismatched one + the escape; no
            // Forward record.
            assert_eq!(stdout.lines().count(), 205, "{stderr}");
        }
        if output == "short" {
            assert!(
                !stdout.contains('\x1b') && stdout.contains("\\x1b[31mred"),
                "control characters are escaped: {stdout:?}"
            );
        }
    }

    let (code, stdout, stderr) =
        cli(&["audit", "--config", &config, "--json", "--idle-ms", "2000"]);
    assert_eq!(
        code,
        Some(0),
        "audit survives and finds nothing lost: {stdout}{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .find(|l| l.starts_with('['))
            .unwrap_or_else(|| panic!("no JSON: {stdout}{stderr}")),
    )
    .unwrap();
    let spaces = v.as_array().unwrap();
    assert_eq!(spaces.len(), 1, "{stdout}");
    let w = &spaces[0];
    assert_eq!(w["seqnum_id"], seqnum_id.as_str());
    // The two undecodable records carry the first entry's real cursor (their positions are
    // counted as that entry again): duplicates 2, and nothing from the forged records.
    assert_eq!(w["records"], 202, "{stdout}{stderr}");
    assert_eq!(w["duplicates"], 2, "{stdout}{stderr}");
    assert_eq!(w["lost"], 0, "{stdout}{stderr}");
    assert_eq!(w["covered"], 200, "{stdout}{stderr}");
    for want in [
        "skipped 3 Forward-input records",
        "skipped 6 records without a journal cursor header",
        "skipped 2 journal records whose value cannot be decoded",
        "skipped 1 records whose __SEQNUM_ID/__SEQNUM disagree",
        "record ht/0@",
    ] {
        assert!(stderr.contains(want), "audit says {want:?}: {stderr}");
    }

    // verify: nothing lost; the Forward records are not records of the journal; the five
    // without a header are named as such (and fail the check, as records the agent did
    // not write should).
    let (code, stdout, stderr) = cli(&["verify", "--config", &config, "--json"]);
    assert_eq!(code, Some(1), "verify: {stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["lost"], 0, "{stdout}");
    assert_eq!(v["entries"], 200, "{stdout}");
    assert_eq!(v["unmarked"], 5, "{stdout}");
    assert_eq!(v["forward"], 3, "{stdout}");
}
