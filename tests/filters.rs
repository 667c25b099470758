//! Filters the agent evaluates itself (exclusions, patterns, the journalctl meaning of
//! units), against real journals and the real broker: exactly the selected entries are
//! shipped, and entries dropped by the filter still move the cursor (a restart neither
//! re-reads them nor reports a gap).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

fn value<'a>(f: &'a Fields, name: &str) -> Option<&'a [u8]> {
    f.get(name).and_then(|v| v.first()).map(Vec::as_slice)
}

fn shipped(broker: &Broker, topic: &str) -> Vec<String> {
    consume_all(&broker.addr(), &[topic], 3)
        .into_iter()
        .map(|r| r.cursor)
        .collect()
}

#[test]
fn exclusions_and_patterns_ship_exactly_what_they_select_and_move_the_cursor() {
    let f = Fixture::new("filters").broker().topic("sel", 1).journal(
        "a.journal",
        &["-n", "3000", "--start-usec", &recent_usec(900).to_string()],
    );
    let port = free_port();
    let cfg = f
        .config("state")
        .topic("sel")
        .set("metrics", "listen", format!("127.0.0.1:{port}"))
        .set(
            "journal",
            "exclude_units",
            vec!["postgresql@*.service", "docker"],
        )
        .set("journal", "exclude_identifiers", vec!["CRON"])
        .set(
            "journal",
            "exclude_matches",
            vec!["PRIORITY=3", "MESSAGE=drop-*"],
        );
    let all = f.entries();
    let excluded = |f: &Fields| {
        let unit = value(f, "_SYSTEMD_UNIT").unwrap_or_default();
        unit.starts_with(b"postgresql@")
            || unit == b"docker.service"
            || value(f, "SYSLOG_IDENTIFIER") == Some(b"CRON".as_slice())
            || value(f, "PRIORITY") == Some(b"3".as_slice())
            || value(f, "MESSAGE").is_some_and(|m| m.starts_with(b"drop-"))
    };
    let want: BTreeSet<String> = all.iter().filter(|f| !excluded(f)).map(cursor_of).collect();
    assert!(
        want.len() > 1000 && want.len() < 2500,
        "the fixture exercises the filter: {} of 3000 kept",
        want.len()
    );
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.wait_cursor(&cursor_of(all.last().unwrap()), Duration::from_secs(60));

    // The last entries of a second writer are all excluded: the cursor still reaches them.
    write_journal(
        &f.jdir,
        "b.journal",
        &[
            "-n",
            "200",
            "--tag",
            "drop-",
            "--start-usec",
            &recent_usec(300).to_string(),
        ],
    );
    let b: Vec<Fields> = f
        .entries()
        .into_iter()
        .filter(|f| value(f, "MESSAGE").is_some_and(|m| m.starts_with(b"drop-")))
        .collect();
    assert_eq!(b.len(), 200);
    agent.wait_cursor(&cursor_of(b.last().unwrap()), Duration::from_secs(60));
    let metrics = http_get(port, "/metrics").1;
    let excluded_count = 3000 - want.len() + 200;
    assert!(
        metrics.contains(&format!(
            "journald_kafka_entries_excluded_total {excluded_count}"
        )),
        "{excluded_count} excluded:\n{metrics}"
    );
    assert!(agent.stop().success());
    let got = shipped(&f.broker, "sel");
    assert_eq!(got.len(), want.len(), "no entry twice, none missing");
    assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), want);

    // check says what the filter selects before anyone enables it.
    let (_, out) = run_cli(&["check", "--config", agent.config.to_str().unwrap()]);
    assert!(
        out.contains(&format!(
            "filter effect: of the newest 3200 entries, {} would be shipped (0 left out by the journal matches, {excluded_count} by the agent's exclusions and patterns)",
            want.len()
        )),
        "{out}"
    );

    // A restart: nothing read again, no gap reported.
    let mut agent = Agent::start(&f.s.path("agent2"), &cfg);
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.stop().success());
    let log = agent.log();
    assert!(
        !log.contains("vanished") && !log.contains("no longer in the journal"),
        "no false gap after a run that ended on excluded entries:\n{log}"
    );
    assert_eq!(
        shipped(&f.broker, "sel").len(),
        want.len(),
        "nothing re-read:\n{log}"
    );
}

#[test]
fn units_as_journalctl_has_them_and_unit_patterns() {
    let f = Fixture::new("unitsmode")
        .broker()
        .topic("jc", 1)
        .topic("proc", 1);
    let t = recent_usec(120);
    let entries = [
        "_SYSTEMD_UNIT=app.service\n_PID=400\n_UID=100\nMESSAGE=from the app",
        "_PID=1\n_UID=0\nUNIT=app.service\nMESSAGE=Started app.service",
        "_PID=1\n_UID=0\nUNIT=other.service\nMESSAGE=Started other.service",
        "_PID=900\n_UID=0\nCOREDUMP_UNIT=app.service\nMESSAGE=Process 400 (app) dumped core",
        "_PID=77\n_UID=1000\nUNIT=app.service\nMESSAGE=someone else naming the unit",
        "_SYSTEMD_UNIT=app-worker.service\n_PID=401\n_UID=100\nMESSAGE=from the worker",
        "_SYSTEMD_UNIT=other.service\n_PID=500\n_UID=100\nMESSAGE=from other",
    ];
    let mut export = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        export.extend_from_slice(
            format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n{e}\n\n",
                t + i as u64 * 1000,
                1_000_000 + i as u64 * 1000
            )
            .as_bytes(),
        );
    }
    write_export(&f.jdir, "u.journal", &export);
    let all = f.entries();
    let message = |c: &str| {
        let f = all.iter().find(|f| cursor_of(f) == c).unwrap();
        String::from_utf8_lossy(value(f, "MESSAGE").unwrap()).into_owned()
    };
    let run = |name: &str, topic: &str, cfg: TestConfig| -> BTreeSet<String> {
        let mut agent = Agent::start(&f.s.path(name), &cfg.topic(topic));
        agent.wait_cursor_any(Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(2));
        assert!(agent.stop().success());
        shipped(&f.broker, topic)
            .iter()
            .map(|c| message(c))
            .collect()
    };
    let jc = run(
        "a1",
        "jc",
        f.config("s1").set("journal", "units", vec!["app"]).set(
            "journal",
            "units_mode",
            "journalctl",
        ),
    );
    let want: BTreeSet<String> = [
        "from the app",
        "Started app.service",
        "Process 400 (app) dumped core",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        jc, want,
        "journalctl -u app: the unit's lines, systemd's and coredumps about it"
    );
    let proc = run(
        "a2",
        "proc",
        f.config("s2").set("journal", "units", vec!["app*"]),
    );
    let want: BTreeSet<String> = ["from the app", "from the worker"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(proc, want, "a pattern over the units' own processes");
}

/// Enrichment: static fields, headers from values and fields, a composite key and the
/// partitioner, seen by a consumer and by `cat -o json`; a name that collides with a
/// journal field is refused unless overriding is asked for.
#[test]
fn added_fields_headers_and_a_composite_key_reach_the_consumer() {
    let f = Fixture::new("enrich").broker().topic("en", 2).journal(
        "a.journal",
        &["-n", "200", "--start-usec", &recent_usec(300).to_string()],
    );
    let own = format!(
        "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP=900000000\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n_HOSTNAME=h1\nMESSAGE=mine\nENVIRONMENT=staging\n\n",
        recent_usec(100)
    );
    write_export(&f.jdir, "b.journal", own.as_bytes());
    let all = f.entries();
    let cfg = f
        .config("state")
        .topic("en")
        .set("encoding.add_fields", "ENVIRONMENT", "prod")
        .set("encoding.add_fields", "DC", "fra1")
        .set("kafka.headers", "env", "prod")
        .set("kafka.headers", "origin", "{_HOSTNAME}/{SYSLOG_IDENTIFIER}")
        .set("kafka", "key_fields", vec!["_HOSTNAME", "_SYSTEMD_UNIT"])
        .set("kafka", "partitioner", "murmur2_random");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    // The newest entry of each writer (a.journal's and b.journal's).
    for c in &newest_per_writer(&all) {
        agent.wait_cursor(c, Duration::from_secs(60));
    }
    assert!(agent.stop().success());
    let records = consume_all(&f.broker.addr(), &["en"], 3);
    assert_eq!(records.len(), 201);
    for r in &records {
        let (fields, _) = decode_msgpack(&r.payload);
        let one = |k: &str| fields.get(k).map(|v| v[0].clone());
        let entry = all.iter().find(|f| cursor_of(f) == r.cursor).unwrap();
        assert_eq!(one("DC").as_deref(), Some(b"fra1".as_slice()));
        if one("MESSAGE").as_deref() == Some(b"mine".as_slice()) {
            assert_eq!(
                fields["ENVIRONMENT"],
                vec![b"staging".to_vec()],
                "the entry's own field wins without add_fields_override"
            );
            assert!(
                !r.headers.contains_key("origin"),
                "no SYSLOG_IDENTIFIER, no header"
            );
            assert_eq!(r.key.as_deref(), Some(b"h1/".as_slice()));
        } else {
            assert_eq!(one("ENVIRONMENT").as_deref(), Some(b"prod".as_slice()));
            let host = value(entry, "_HOSTNAME").unwrap();
            let unit = value(entry, "_SYSTEMD_UNIT").unwrap();
            let ident = value(entry, "SYSLOG_IDENTIFIER").unwrap();
            assert_eq!(
                r.key.as_deref(),
                Some([host, b"/", unit].concat().as_slice())
            );
            assert_eq!(r.headers["origin"], [host, b"/", ident].concat());
        }
        assert_eq!(r.headers["env"], b"prod");
    }
    // A consumer's view: cat -o json shows the added fields.
    let (st, out) = run_cli(&[
        "cat",
        "--config",
        agent.config.to_str().unwrap(),
        "-o",
        "json",
        "-n",
        "1",
    ]);
    assert!(st.success(), "{out}");
    assert!(out.contains("\"DC\":\"fra1\""), "{out}");

    // A name journald uses is refused, naming key and line, unless overriding is asked for.
    let bad = cfg.clone().set("encoding.add_fields", "MESSAGE", "x");
    let path = bad.write(&f.s.path("bad.toml"));
    let (st, out) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        out.contains("encoding.add_fields.MESSAGE") && out.contains("line"),
        "{out}"
    );
    let ok = bad.set("encoding", "add_fields_override", true);
    let path = ok.write(&f.s.path("ok.toml"));
    assert!(
        run_cli(&["check", "--config", path.to_str().unwrap()])
            .0
            .success()
    );
}
