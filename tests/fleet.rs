//! Faults a fleet meets that a lab run does not (issue 13): a restart before the first
//! acknowledgement with `start = "tail"`, configuration that would wedge delivery, the
//! agent's own entries in a central directory. Every test ends with the checker or an
//! exact comparison against the journal.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// `start = "tail"`, the broker away, entries written, the agent restarted, the broker
/// back: every entry written after the first start is shipped. (Before the start position
/// was persisted, the restart sought to the tail again and skipped all of them.)
#[test]
fn tail_start_restarted_before_the_first_acknowledgement_skips_nothing() {
    let f = Fixture::new("tail-restart").journal(
        "a.journal",
        &["-n", "100", "--start-usec", &recent_usec(900).to_string()],
    );
    let port = free_port();
    let cfg = f
        .config_to(&format!("127.0.0.1:{port}"), "state")
        .set("journal", "start", "tail")
        .set("kafka", "connect_timeout_ms", 1000)
        .set("pipeline", "shutdown_timeout_ms", 1000);
    let mut agent = Agent::start(&f.s.path("first"), &cfg);
    std::thread::sleep(Duration::from_secs(2));
    write_journal(
        &f.jdir,
        "b.journal",
        &[
            "-n",
            "300",
            "--seed",
            "3",
            "--start-usec",
            &recent_usec(300).to_string(),
        ],
    );
    let before: BTreeSet<String> = f.entries().iter().take(100).map(cursor_of).collect();
    let all = f.entries();
    let new: BTreeSet<String> = all
        .iter()
        .map(cursor_of)
        .filter(|c| !before.contains(c))
        .collect();
    assert_eq!(new.len(), 300);
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.stop().success(), "{}", agent.log());

    let mut agent = Agent::start(&f.s.path("second"), &cfg);
    std::thread::sleep(Duration::from_secs(1));
    // The agent's produce requests create the topic (Nisshi auto-creates).
    let broker = Broker::start_on(&f.s.path("broker"), port);
    agent.wait_cursor(&cursor_of(all.last().unwrap()), Duration::from_secs(60));
    assert!(agent.stop().success());
    let got: BTreeSet<String> = consume_all(&broker.addr(), &["journal"], 3)
        .into_iter()
        .map(|r| r.cursor)
        .collect();
    assert_eq!(
        got.intersection(&new).count(),
        300,
        "entries written after the first start, shipped after the restart"
    );
    assert!(
        got.is_subset(&new),
        "nothing from before the start position"
    );
}

/// A central journal-remote directory holds other hosts' journals: their agents' log lines
/// are their data and must be shipped; only this machine's agent lines are skipped.
#[test]
fn a_central_directory_ships_other_hosts_agent_logs() {
    let f = Fixture::new("own-remote").broker().topic("journal", 1);
    let start = recent_usec(600);
    let mut export = Vec::new();
    for i in 0..20u64 {
        let ident = if i % 2 == 0 { "journald-kafka" } else { "app" };
        export.extend_from_slice(
            format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n_MACHINE_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=web-7\nSYSLOG_IDENTIFIER={ident}\nMESSAGE=line {i}\n\n",
                start + i * 1000,
                1_000_000 + i * 1000
            )
            .as_bytes(),
        );
    }
    write_export(&f.jdir, "remote-web-7.journal", &export);
    let entries = f.entries();
    assert_eq!(entries.len(), 20);
    let cfg = f.config("state");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    let got = consume_all(&f.broker.addr(), &["journal"], 3);
    assert_eq!(got.len(), 20, "web-7's agent lines are web-7's data");
    let (lost, dups, ooo, records) = verify(&agent.config);
    assert_eq!((lost, dups, ooo, records), (0, 0, 0, 20));
}

/// The reproduction: a topic whose `max.message.bytes` is 100,000, the agent at its
/// defaults, one entry with a 300 kB field in the middle of 6,000. With the `stall` policy
/// (what the agent did before the policies existed, `ship.rs`) the cursor never passes the
/// entry; by default the record is re-encoded smaller and everything is shipped, without a
/// session restart and without sending the window again.
#[test]
fn a_record_too_large_for_its_topic_is_shrunk_and_nothing_stalls() {
    let f = Fixture::new("too-large").broker();
    f.broker
        .create_topic_with("journal", 2, Some("max.message.bytes=100000"));
    let (entries, big) = journal_with_one_huge_entry(&f.jdir, 300_000);
    let cfg = f.config("state");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    let log = agent.log();
    assert!(
        !log.contains("restarting from the last safe cursor"),
        "no session restart: {log}"
    );
    assert!(log.contains("re-encoded smaller"), "{log}");
    let records = consume_all(&f.broker.addr(), &["journal"], 3);
    let big_record = records
        .iter()
        .find(|r| r.cursor == big)
        .expect("the big entry is in its topic");
    let (fields, _) = decode_msgpack(&big_record.payload);
    assert!(
        fields.contains_key("JOURNALD_KAFKA_TRUNCATED"),
        "marked as cut"
    );
    let (lost, dups, _, records) = verify(&agent.config);
    eprintln!("too large: records {records}, lost {lost}, duplicates {dups}");
    assert_eq!(lost, 0);
    // Only the refused batch is sent again, never the window.
    assert!(dups < 1000, "duplicates {dups}");
}

/// `on_too_large = "dead-letter"`: the record goes, unchanged, to the dead-letter topic with
/// the error and its topic as headers; `verify` counts it there, not as lost.
#[test]
fn a_refused_record_can_go_to_the_dead_letter_topic() {
    let f = Fixture::new("dead-letter").broker();
    f.broker
        .create_topic_with("journal", 1, Some("max.message.bytes=100000"));
    f.broker.create_topic("journald-kafka-dead-letter", 1);
    let (entries, big) = journal_with_one_huge_entry(&f.jdir, 300_000);
    let cfg = f
        .config("state")
        .set("delivery", "on_too_large", "dead-letter");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    let dlq = consume_all(&f.broker.addr(), &["journald-kafka-dead-letter"], 3);
    let r = dlq.iter().find(|r| r.cursor == big).expect("dead-lettered");
    assert_eq!(
        r.headers.get("journald-kafka-topic").map(Vec::as_slice),
        Some(b"journal".as_slice())
    );
    assert!(
        r.headers
            .get("journald-kafka-error")
            .is_some_and(|e| String::from_utf8_lossy(e).contains("too large")),
        "{:?}",
        r.headers
    );
    let (st, out) = run_cli(&["verify", "--config", agent.config.to_str().unwrap()]);
    assert!(st.success(), "{out}");
    assert!(out.contains("in the dead-letter topic: 1"), "{out}");
}

/// 3,000 entries, one with a `size`-byte incompressible field, 3,000 more. Returns the
/// entries and the big one's cursor.
fn journal_with_one_huge_entry(jdir: &std::path::Path, size: usize) -> (Vec<Fields>, String) {
    let t0 = recent_usec(1200);
    write_journal(
        jdir,
        "a.journal",
        &[
            "-n",
            "3000",
            "--start-usec",
            &t0.to_string(),
            "--rate-usec",
            "100000",
        ],
    );
    write_export(
        jdir,
        "b.journal",
        &huge_entry_export(t0 + 301_000_000, size),
    );
    write_journal(
        jdir,
        "c.journal",
        &[
            "-n",
            "3000",
            "--seed",
            "3",
            "--start-usec",
            &(t0 + 302_000_000).to_string(),
            "--rate-usec",
            "100000",
        ],
    );
    let entries = journal_entries(jdir, &[]);
    assert_eq!(entries.len(), 6001);
    let big = entries
        .iter()
        .find(|e| e.contains_key("HUGE"))
        .map(cursor_of)
        .unwrap();
    (entries, big)
}

/// Core dumps in the journal: every 20th entry holds a 3 MB field. Anonymous memory stays
/// under the documented bound (docs/reliability.md) with default settings, through an
/// outage at start and the shipping after it.
#[test]
fn memory_stays_bounded_with_multi_megabyte_entries() {
    const BOUND_KIB: u64 = 64 * 1024;
    let f = Fixture::new("big-entries");
    let t0 = recent_usec(1200);
    write_journal(
        &f.jdir,
        "a.journal",
        &[
            "-n",
            "570",
            "--start-usec",
            &t0.to_string(),
            "--rate-usec",
            "1000000",
        ],
    );
    let mut big = Vec::new();
    for k in 0..30u64 {
        big.extend(huge_entry_export(
            t0 + (k * 19 + 10) * 1_000_000 + 500,
            3_000_000,
        ));
    }
    write_export(&f.jdir, "b.journal", &big);
    let entries = f.entries();
    assert_eq!(entries.len(), 600);
    let port = free_port();
    let cfg = f.config_to(&format!("127.0.0.1:{port}"), "state");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    let pid = agent.child.id();
    let mut peak = 0;
    let sample = |peak: &mut u64, d: Duration| {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            *peak = (*peak).max(rss_anon_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    sample(&mut peak, Duration::from_secs(3));
    let outage_peak = peak;
    let _broker = Broker::start_on(&f.s.path("broker"), port);
    let last = cursor_of(entries.last().unwrap());
    let start = std::time::Instant::now();
    while !agent.has_cursor(&last) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}",
            agent.log()
        );
        sample(&mut peak, Duration::from_millis(100));
    }
    assert!(agent.stop().success());
    eprintln!(
        "multi-MB entries: peak anonymous RSS {outage_peak} KiB during the outage, {peak} KiB overall"
    );
    assert!(peak < BOUND_KIB, "peak anonymous RSS {peak} KiB");
    let (lost, _, _, records) = verify(&agent.config);
    assert_eq!(lost, 0);
    assert!(records >= 600);
}

/// A central journal-remote directory with several writers: host B's backlog, an hour older
/// than what the agent already shipped from host A, arrives while the agent follows A; then
/// B appends entries older than A's newest (its uploads lag). libsystemd merges the files
/// of a directory by time, so a single read position passes over all of them; every entry
/// of every host must be shipped, and stay shipped across a restart.
#[test]
fn a_late_host_in_a_central_directory_is_not_passed_over() {
    let f = Fixture::new("late-host").broker().topic("journal", 1);
    let write = |name: &str, host: &str, seed: &str, n: &str, start: u64| {
        write_journal(
            &f.jdir,
            name,
            &[
                "-n",
                n,
                "--seed",
                seed,
                "--host",
                host,
                "--start-usec",
                &start.to_string(),
                "--start-mono",
                &(start % 1_000_000_000_000).to_string(),
            ],
        )
    };
    write("remote-a.journal", "a", "1", "200", recent_usec(600));
    let a = f.entries();
    let cfg = f.config("state");
    let mut agent = Agent::start(&f.s.path("agent1"), &cfg);
    agent.wait_cursor(&cursor_of(a.last().unwrap()), Duration::from_secs(60));

    // Host B's backlog: an hour older than everything shipped so far.
    write(
        "remote-b.journal",
        "b",
        "2",
        "2000",
        recent_usec(3600 + 600),
    );
    // Host A moves on; then B's next upload, older than A's newest entry.
    write("remote-a.journal", "a", "1", "100", recent_usec(120));
    write("remote-b.journal", "b", "2", "100", recent_usec(300));
    let all = f.entries();
    assert_eq!(all.len(), 2400);
    let newest_a = all
        .iter()
        .filter(|e| e["_HOSTNAME"][0] == b"a")
        .map(cursor_of)
        .next_back()
        .unwrap();
    agent.wait_cursor(&newest_a, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let want: BTreeSet<String> = all.iter().map(cursor_of).collect();
    let shipped = |what: &str| {
        let got: BTreeSet<String> = consume_all(&f.broker.addr(), &["journal"], 3)
            .into_iter()
            .map(|r| r.cursor)
            .collect();
        let missing = want.difference(&got).count();
        assert_eq!(
            missing,
            0,
            "{what}: {missing} of {} entries never shipped",
            want.len()
        );
    };
    shipped("while following");
    assert!(agent.stop().success(), "{}", agent.log());

    let mut agent = Agent::start(&f.s.path("agent2"), &cfg);
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.stop().success(), "{}", agent.log());
    shipped("after a restart");
    let (lost, dups, ooo, records) = verify(&agent.config);
    assert_eq!((lost, dups, ooo), (0, 0, 0), "{records} records");
}

/// Corrupt journal data in a central directory: one host's file has a broken header, one
/// entry of another has a data object that points past the end of its file. What can be
/// read is shipped; the unreadable file is named in the log and counted in `/metrics`;
/// the entry with the bad field is shipped with the fields libsystemd returns (libsystemd
/// 252 skips a bad data object without reporting it, so journalctl shows the same).
#[test]
fn corrupt_journal_files_ship_what_can_be_read_and_name_the_rest() {
    let f = Fixture::new("corrupt").broker().topic("journal", 1);
    let start = recent_usec(600);
    let export = |host: &str, n: u64, bad: Option<u64>| {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(
                format!(
                    "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n_HOSTNAME={host}\nMESSAGE={host} {i}\n",
                    start + i * 1000,
                    1_000_000 + i * 1000
                )
                .as_bytes(),
            );
            if Some(i) == bad {
                out.extend_from_slice(format!("CORRUPTME={}\n", "Q".repeat(40)).as_bytes());
            }
            out.extend_from_slice(b"AFTER=yes\n\n");
        }
        out
    };
    write_export(&f.jdir, "remote-good.journal", &export("good", 100, None));
    write_export(
        &f.jdir,
        "remote-field.journal",
        &export("field", 100, Some(50)),
    );
    write_export(
        &f.jdir,
        "remote-header.journal",
        &export("header", 100, None),
    );
    // A data object whose size points far past the end of the file.
    let path = f.jdir.join("remote-field.journal");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"CORRUPTME=";
    let p = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the field is stored uncompressed (short)");
    let object = [64usize, 72]
        .into_iter()
        .map(|h| p - h)
        .find(|&o| {
            bytes[o] == 1
                && u64::from_le_bytes(bytes[o + 8..o + 16].try_into().unwrap()) as usize
                    == p - o + needle.len() + 40
        })
        .expect("the data object's header");
    bytes[object + 8..object + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    // A header that is not a journal file's.
    let path = f.jdir.join("remote-header.journal");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(b"NOTAJRNL");
    std::fs::write(&path, &bytes).unwrap();

    let readable = f.entries();
    assert_eq!(readable.len(), 200, "journalctl reads the two good files");
    let damaged = readable
        .iter()
        .find(|e| e["MESSAGE"][0] == b"field 50")
        .unwrap();
    assert!(!damaged.contains_key("CORRUPTME") && damaged.contains_key("AFTER"));

    let port = free_port();
    let cfg = f
        .config("state")
        .set("metrics", "listen", format!("127.0.0.1:{port}"));
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    let want: BTreeSet<String> = readable.iter().map(cursor_of).collect();
    std::thread::sleep(Duration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = http_get(port, "/metrics").1;
        if m.lines()
            .any(|l| l.starts_with("journald_kafka_entries_delivered") && l.ends_with(" 200"))
            || std::time::Instant::now() > deadline
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("journald_kafka_journal_unreadable_files 1"),
        "{metrics}"
    );
    assert!(agent.stop().success(), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("remote-header.journal") && log.contains("cannot be opened"),
        "the unreadable file is named: {log}"
    );
    let records = consume_all(&f.broker.addr(), &["journal"], 3);
    let got: BTreeSet<String> = records.iter().map(|r| r.cursor.clone()).collect();
    assert_eq!(got, want, "every readable entry, once");
    let rec = records
        .iter()
        .map(|r| decode_msgpack(&r.payload).0)
        .find(|f| f["MESSAGE"][0] == b"field 50")
        .unwrap();
    assert_eq!(
        rec.get("AFTER"),
        damaged.get("AFTER"),
        "the fields after the bad one"
    );
    let (lost, dups, ooo, _) = verify(&agent.config);
    assert_eq!((lost, dups, ooo), (0, 0, 0));
}

/// Issue 27, item 1: the agent's own lines are recognised only by fields journald sets (the
/// agent's unit together with its uid), never by a name the sender chose. In this
/// machine's journal (its `_MACHINE_ID`), lines that call themselves `journald-kafka` from
/// another uid or another unit are shipped; only the agent unit's lines of the agent's uid
/// are skipped. (Before: every `SYSLOG_IDENTIFIER=journald-kafka` line was skipped.)
#[test]
fn a_line_that_only_calls_itself_journald_kafka_is_shipped() {
    let f = Fixture::new("own-forged").broker().topic("journal", 1);
    let mid = std::fs::read_to_string("/etc/machine-id").expect("/etc/machine-id");
    let mid = mid.trim();
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    };
    let start = recent_usec(600);
    // (fields, skipped?)
    let cases: Vec<(String, bool)> = vec![
        ("SYSLOG_IDENTIFIER=journald-kafka\n_UID=1000\n_COMM=logger\n_TRANSPORT=syslog".into(), false),
        ("SYSLOG_IDENTIFIER=journald-kafka\n_UID=1001\n_COMM=journald-kafka\n_PID=4242".into(), false),
        ("SYSLOG_IDENTIFIER=journald-kafka\n_UID=1000\n_SYSTEMD_UNIT=cron.service".into(), false),
        (format!("SYSLOG_IDENTIFIER=journald-kafka\n_UID={uid}\n_SYSTEMD_UNIT=sshd.service"), false),
        ("SYSLOG_IDENTIFIER=journald-kafka\n_UID=1000\n_SYSTEMD_UNIT=user@1000.service\n_SYSTEMD_USER_UNIT=journald-kafka.service".into(), false),
        (format!("SYSLOG_IDENTIFIER=journald-kafka\n_UID={uid}\n_SYSTEMD_UNIT=journald-kafka.service"), true),
        (format!("SYSLOG_IDENTIFIER=journald-kafka\n_UID={uid}\n_SYSTEMD_UNIT=journald-kafka@edge.service"), true),
        ("SYSLOG_IDENTIFIER=app\n_UID=1000\n_SYSTEMD_UNIT=app.service".into(), false),
    ];
    let mut export = Vec::new();
    for (i, (fields, _)) in cases.iter().enumerate() {
        export.extend_from_slice(
            format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n_MACHINE_ID={mid}\n_HOSTNAME=this-host\n{fields}\nMESSAGE=line {i}\n\n",
                start + i as u64 * 1000,
                1_000_000 + i as u64 * 1000
            )
            .as_bytes(),
        );
    }
    write_export(&f.jdir, "system.journal", &export);
    let entries = f.entries();
    assert_eq!(entries.len(), cases.len());
    let cfg = f.config("state");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    let got: BTreeSet<String> = consume_all(&f.broker.addr(), &["journal"], 3)
        .into_iter()
        .map(|r| {
            let (f, _) = decode_msgpack(&r.payload);
            String::from_utf8_lossy(&f["MESSAGE"][0]).into_owned()
        })
        .collect();
    let want: BTreeSet<String> = cases
        .iter()
        .enumerate()
        .filter(|(_, (_, skipped))| !skipped)
        .map(|(i, _)| format!("line {i}"))
        .collect();
    assert_eq!(got, want, "shipped: every line but the agent unit's own");
}

/// Issue 31, item 2 (partial): a central directory with more journal files than the soft
/// open-file limit allows (300 hosts, about 600 descriptors, soft limit 256) under a
/// higher hard limit: the agent raises its soft limit to the hard one at start and ships
/// everything. (Before: "cannot watch the journal for changes: … Too many open files", 0
/// shipped.) `check` says how many files the source holds against the limit.
#[test]
fn a_directory_beyond_the_soft_open_file_limit_is_shipped() {
    let f = Fixture::new("nofile").broker().topic("journal", 1);
    let start = recent_usec(600);
    for h in 0..300u64 {
        let mut export = Vec::new();
        for i in 0..5u64 {
            export.extend_from_slice(
                format!(
                    "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n_HOSTNAME=host-{h}\nMESSAGE=line {i} of host {h}\n\n",
                    start + h * 10 + i,
                    1_000_000 + i
                )
                .as_bytes(),
            );
        }
        write_export(&f.jdir, &format!("remote-host-{h}.journal"), &export);
    }
    let entries = f.entries();
    assert_eq!(entries.len(), 1500);
    let cfg = f.config("state");
    let mut agent = Agent::start_with_nofile(&f.s.path("agent"), &cfg, "256:4096");
    let path = agent.config.clone();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = consume_all(&f.broker.addr(), &["journal"], 2).len();
        if got >= 1500 {
            break got;
        }
        assert!(
            agent.child.try_wait().unwrap().is_none() && std::time::Instant::now() < until,
            "{got} of 1500 shipped: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.child.id())).unwrap();
    let log = agent.log();
    assert!(agent.stop().success(), "{log}");
    assert_eq!(got, 1500);
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string();
    assert_eq!(soft, "4096", "{limits}");
    assert!(log.contains("raised the soft limit on open files"), "{log}");
    let (_, out) = run_command({
        let mut c = std::process::Command::new("prlimit");
        c.args(["--nofile=256:4096", BIN, "check", "--config"])
            .arg(&path);
        c
    });
    assert!(
        out.contains("open files: the source has 300 journal files")
            && out.contains("the hard limit is 4096"),
        "{out}"
    );
    let (lost, dups, _, _) = verify(&path);
    assert_eq!((lost, dups), (0, 0));
}
