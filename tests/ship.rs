//! End-to-end: real journal files (systemd-journal-remote) → the agent → a real broker.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;

fn config(f: &Fixture<Broker>, topic: &str, state: &str) -> TestConfig {
    f.config(state).topic(topic).set("log", "level", "debug")
}

/// Asserts that `records` hold exactly the journal's entries, once each, field for field.
fn assert_same(entries: &[Fields], records: &[Record]) {
    let by_cursor: BTreeMap<&str, &Record> =
        records.iter().map(|r| (r.cursor.as_str(), r)).collect();
    assert_eq!(
        by_cursor.len(),
        records.len(),
        "duplicate journal-cursor headers"
    );
    let want: BTreeSet<String> = entries.iter().map(cursor_of).collect();
    let got: BTreeSet<String> = by_cursor.keys().map(|s| s.to_string()).collect();
    let lost: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "lost {} ({:?}…), extra {}",
        lost.len(),
        lost.first(),
        extra.len()
    );
    for e in entries {
        let c = cursor_of(e);
        let r = by_cursor[c.as_str()];
        assert_eq!(r.format.as_deref(), Some("1"));
        let (fields, ints) = decode_msgpack(&r.payload);
        let realtime: u64 = String::from_utf8_lossy(&e["__REALTIME_TIMESTAMP"][0])
            .parse()
            .unwrap();
        let mono: u64 = String::from_utf8_lossy(&e["__MONOTONIC_TIMESTAMP"][0])
            .parse()
            .unwrap();
        assert_eq!(ints["__REALTIME_TIMESTAMP"], realtime);
        assert_eq!(ints["__MONOTONIC_TIMESTAMP"], mono);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        if (realtime / 1000) as i64 > now_ms + 300_000 {
            // From the future: the broker would refuse it, so the record gets the send time.
            assert!(
                r.timestamp_ms.unwrap() <= now_ms,
                "future timestamp clamped"
            );
        } else {
            assert_eq!(
                r.timestamp_ms,
                Some((realtime / 1000) as i64),
                "record timestamp"
            );
        }
        assert_eq!(fields["__CURSOR"], vec![c.as_bytes().to_vec()]);
        let data: Fields = e
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let shipped: Fields = fields
            .into_iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .collect();
        assert_eq!(shipped, data, "fields of {c}");
    }
}

#[test]
fn ships_every_entry_byte_for_byte_and_resumes_without_gap_or_duplicate() {
    // Binary fields, multi-line messages and repeated fields, several boots.
    let f = Fixture::new("ship").broker().topic("journal", 3).journal(
        "a.journal",
        &[
            "-n",
            "3000",
            "--boots",
            "2",
            "--binary-every",
            "7",
            "--multiline-every",
            "5",
            "--repeat-every",
            "11",
        ],
    );
    let entries = f.entries();
    assert_eq!(entries.len(), 3000);
    assert!(
        entries
            .iter()
            .any(|e| e.get("TAG").is_some_and(|v| v.len() == 3)),
        "fixture has repeated fields"
    );
    assert!(
        entries.iter().any(|e| e.get("BINARY_BLOB").is_some()),
        "fixture has binary fields"
    );

    let mut agent = Agent::start(&f.s.path("agent1"), &config(&f, "journal", "state"));
    agent.wait_cursor(&cursor_of(entries.last().unwrap()), Duration::from_secs(60));
    assert!(
        agent.stop().success(),
        "clean stop exits 0:\n{}",
        agent.log()
    );

    // More entries arrive while the agent is stopped (a second writer, a later time), the
    // last ones stamped a day in the future by a host with a wrong clock.
    let now_usec = now_usec();
    write_journal(
        &f.jdir,
        "b.journal",
        &[
            "-n",
            "500",
            "--seed",
            "9",
            "--start-usec",
            &(now_usec - 60_000_000).to_string(),
            "--host",
            "otherhost",
        ],
    );
    write_journal(
        &f.jdir,
        "c.journal",
        &[
            "-n",
            "5",
            "--seed",
            "10",
            "--start-usec",
            &(now_usec + 86_400_000_000).to_string(),
            "--host",
            "skewed",
        ],
    );
    let entries = f.entries();
    assert_eq!(entries.len(), 3505);
    let mut agent = Agent::start(&f.s.path("agent2"), &config(&f, "journal", "state"));
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    assert!(
        agent.log().contains("cursor found in the journal"),
        "{}",
        agent.log()
    );

    // Exactly the journal, once each: no gap, no duplicate across the restart.
    let records = consume_all(&f.broker.addr(), &["journal"], 4);
    assert_same(&entries, &records);
}

#[test]
fn filters_key_topic_template_and_json() {
    let f = Fixture::new("filters")
        .broker()
        .topic("j-nginx", 2)
        .topic("j-sshd", 2)
        .topic("j-other", 2)
        .journal("a.journal", &["-n", "2000"]);
    let all = f.entries();
    let want = journal_entries(
        &f.jdir,
        &[
            "_SYSTEMD_UNIT=nginx.service",
            "_SYSTEMD_UNIT=sshd.service",
            "PRIORITY=0",
            "PRIORITY=1",
            "PRIORITY=2",
            "PRIORITY=3",
            "PRIORITY=4",
            "PRIORITY=5",
            "PRIORITY=6",
        ],
    );
    assert!(
        !want.is_empty() && want.len() < all.len() / 2,
        "{} of {}",
        want.len(),
        all.len()
    );

    let cfg = config(&f, "j-{SYSLOG_IDENTIFIER}", "state")
        .set("journal", "units", vec!["nginx.service", "sshd.service"])
        .set("journal", "priority", "info")
        .set("kafka", "topic_fallback", "j-other")
        .set("kafka", "key_field", "_SYSTEMD_UNIT")
        .set("encoding", "format", "json")
        .set("encoding", "exclude_fields", vec!["_SOURCE_*"]);
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    // Filtered-out entries must not hold the cursor back: once idle, the cursor reaches the
    // newest entry of the journal even though it does not match.
    agent.finish_at(&cursor_of(all.last().unwrap()));

    let records = consume_all(&f.broker.addr(), &["j-nginx", "j-sshd", "j-other"], 4);
    let got: BTreeSet<_> = records.iter().map(|r| r.cursor.clone()).collect();
    let expect: BTreeSet<_> = want.iter().map(cursor_of).collect();
    assert_eq!(records.len(), want.len(), "each matching entry once");
    assert_eq!(got, expect);
    let by_cursor: BTreeMap<_, _> = want.iter().map(|e| (cursor_of(e), e)).collect();
    for r in &records {
        let e = by_cursor[&r.cursor];
        let ident = String::from_utf8_lossy(&e["SYSLOG_IDENTIFIER"][0]).into_owned();
        assert_eq!(r.topic, format!("j-{ident}"));
        assert_eq!(r.key.as_deref(), Some(&e["_SYSTEMD_UNIT"][0][..]));
        let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("valid JSON");
        assert_eq!(v["__CURSOR"], r.cursor.as_str());
        assert!(
            v.get("_SOURCE_REALTIME_TIMESTAMP").is_none(),
            "excluded field shipped"
        );
        assert_eq!(
            v["MESSAGE"].as_str().map(str::as_bytes),
            Some(&e["MESSAGE"][0][..])
        );
    }
}

#[test]
fn broker_down_at_start_then_up_loses_nothing() {
    let f = Fixture::new("late-broker").journal("a.journal", &["-n", "20000"]);
    let entries = f.entries();
    let port = free_port();
    let cfg = f.config_to(&format!("127.0.0.1:{port}"), "state").set(
        "pipeline",
        "max_in_flight_entries",
        2000,
    );
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    // While the broker is away the reader fills the window and waits: memory stays flat.
    std::thread::sleep(Duration::from_secs(2));
    let early = rss_anon_kib(agent.child.id());
    std::thread::sleep(Duration::from_secs(3));
    let late = rss_anon_kib(agent.child.id());
    eprintln!("anonymous RSS with the broker away: {early} KiB after 2 s, {late} KiB after 5 s");
    assert!(
        late <= early + 4096,
        "memory grows while the broker is away: {early} → {late} KiB"
    );
    assert!(late < 64 * 1024, "anonymous RSS {late} KiB");
    assert_eq!(
        agent.cursor(),
        None,
        "nothing may be checkpointed while the broker is away"
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent waits for the broker:\n{}",
        agent.log()
    );

    assert!(
        agent.log().contains("backpressure engaged"),
        "{}",
        agent.log()
    );

    let broker = Broker::start_on(&f.s.path("broker"), port);
    agent.wait_cursor(
        &cursor_of(entries.last().unwrap()),
        Duration::from_secs(120),
    );
    assert!(agent.stop().success());
    let log = agent.log();
    assert!(log.contains("backpressure released"), "{log}");
    assert_eq!(
        log.matches("backpressure engaged").count(),
        1,
        "one line per state change: {log}"
    );
    let records = consume_all(&broker.addr(), &["journal"], 4);
    assert_same(&entries, &records);
}

#[test]
fn a_delivery_the_broker_refuses_never_moves_the_cursor_past_it() {
    // 100 normal entries, then one with a 1.5 MB field (the broker's limit is 1 MB), then more.
    let f = Fixture::new("refused")
        .broker()
        .topic("journal", 1)
        .journal("a.journal", &["-n", "100"])
        .export(
            "b.journal",
            &huge_entry_export(1_700_000_100_000_000, 1_500_000),
        )
        .journal(
            "c.journal",
            &[
                "-n",
                "50",
                "--seed",
                "3",
                "--start-usec",
                "1700000200000000",
            ],
        );
    let entries = f.entries();
    assert_eq!(entries.len(), 151);
    let big_at = entries.iter().position(|e| e.contains_key("HUGE")).unwrap();
    assert_eq!(big_at, 100);

    // Let the producer send what the encoder allows, so the broker is the one refusing.
    let cfg = f
        .config("state")
        .set("encoding", "max_record_bytes", 4_000_000)
        .property("message.max.bytes", 5_000_000)
        .set("pipeline", "retry_backoff_max_ms", 500)
        // The opt-in policy for users who prefer to stop (the default shrinks: fleet.rs).
        .set("delivery", "on_too_large", "stall");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.wait_cursor(&cursor_of(&entries[99]), Duration::from_secs(60));
    // It keeps retrying and never skips the refused entry.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        agent.cursor().as_deref(),
        Some(cursor_of(&entries[99]).as_str())
    );
    assert!(agent.child.try_wait().unwrap().is_none());
    assert!(agent.stop().success());
    assert_eq!(
        agent.cursor().as_deref(),
        Some(cursor_of(&entries[99]).as_str())
    );
    let log = agent.log();
    assert!(
        log.contains("restarting from the last safe cursor"),
        "{log}"
    );
    assert!(
        log.matches("restarting from the last safe cursor").count() >= 2,
        "retries with backoff: {log}"
    );
}

/// Formats µs since the epoch as RFC 3339 (UTC, whole seconds).
fn rfc3339(usec: u64) -> String {
    let secs = (usec / 1_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn realtime(e: &Fields) -> u64 {
    String::from_utf8_lossy(&e["__REALTIME_TIMESTAMP"][0])
        .parse()
        .unwrap()
}

#[test]
fn files_source_with_since_and_directory_with_tail() {
    // ~2 s of entries, 20 ms apart, so `since` can cut at a whole second.
    let f = Fixture::new("start")
        .broker()
        .topic("since", 1)
        .topic("tail", 1)
        .journal("a.journal", &["-n", "100", "--rate-usec", "20000"]);
    let entries = f.entries();
    let cut = realtime(&entries[60]) / 1_000_000 * 1_000_000;
    let want: BTreeSet<String> = entries
        .iter()
        .filter(|e| realtime(e) >= cut)
        .map(cursor_of)
        .collect();
    assert!(want.len() > 10 && want.len() < 90, "{}", want.len());

    let file = f.jdir.join("a.journal");
    let cfg = f
        .config("state-since")
        .source(Source::Files(vec![file.clone()]))
        .topic("since")
        .set("journal", "start", "since")
        .set("journal", "since", rfc3339(cut));
    let mut agent = Agent::start(&f.s.path("a-since"), &cfg);
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    let got: BTreeSet<String> = consume_all(&f.broker.addr(), &["since"], 3)
        .into_iter()
        .map(|r| r.cursor)
        .collect();
    assert_eq!(got, want, "exactly the entries at or after journal.since");

    // tail: only what is written after the agent started, here a new file in the directory.
    let mut agent = Agent::start(
        &f.s.path("a-tail"),
        &config(&f, "tail", "state-tail").set("journal", "start", "tail"),
    );
    std::thread::sleep(Duration::from_secs(2));
    // Nothing new yet; the start position itself is saved before anything is shipped, so a
    // restart cannot seek to a later tail (tests/fleet.rs).
    assert_eq!(
        agent.cursor().as_deref(),
        Some(cursor_of(entries.last().unwrap()).as_str()),
        "the start position is saved at once"
    );
    write_journal(
        &f.jdir,
        "b.journal",
        &[
            "-n",
            "50",
            "--seed",
            "5",
            "--start-usec",
            "1700000900000000",
        ],
    );
    let after = f.entries();
    let new: BTreeSet<String> = after
        .iter()
        .map(cursor_of)
        .filter(|c| !entries.iter().any(|e| cursor_of(e) == *c))
        .collect();
    assert_eq!(new.len(), 50);
    agent.finish_at(&cursor_of(after.last().unwrap()));
    let got: BTreeSet<String> = consume_all(&f.broker.addr(), &["tail"], 3)
        .into_iter()
        .map(|r| r.cursor)
        .collect();
    assert_eq!(got, new, "tail ships only entries written after the start");
}
