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
    let s = Scratch::new("tail-restart");
    let jdir = s.path("journal");
    write_journal(
        &jdir,
        "a.journal",
        &["-n", "100", "--start-usec", &recent_usec(900).to_string()],
    );
    let port = free_port();
    let cfg = TestConfig::new(&jdir, &format!("127.0.0.1:{port}"), &s.path("state"))
        .set("journal", "start", "tail")
        .set("kafka", "connect_timeout_ms", 1000)
        .set("pipeline", "shutdown_timeout_ms", 1000);
    let mut agent = Agent::start(&s.path("first"), &cfg);
    std::thread::sleep(Duration::from_secs(2));
    write_journal(
        &jdir,
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
    let before: BTreeSet<String> = journal_entries(&jdir, &[])
        .iter()
        .take(100)
        .map(cursor_of)
        .collect();
    let all = journal_entries(&jdir, &[]);
    let new: BTreeSet<String> = all
        .iter()
        .map(cursor_of)
        .filter(|c| !before.contains(c))
        .collect();
    assert_eq!(new.len(), 300);
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.stop().success(), "{}", agent.log());

    let mut agent = Agent::start(&s.path("second"), &cfg);
    std::thread::sleep(Duration::from_secs(1));
    // The agent's produce requests create the topic (Nisshi auto-creates).
    let broker = Broker::start_on(&s.path("broker"), port);
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
    let s = Scratch::new("own-remote");
    let broker = Broker::with_topic(&s, "journal", 1);
    let jdir = s.path("journal");
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
    write_export(&jdir, "remote-web-7.journal", &export);
    let entries = journal_entries(&jdir, &[]);
    assert_eq!(entries.len(), 20);
    let cfg = TestConfig::new(&jdir, &broker.addr(), &s.path("state"));
    let mut agent = Agent::start(&s.path("agent"), &cfg);
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    let got = consume_all(&broker.addr(), &["journal"], 3);
    assert_eq!(got.len(), 20, "web-7's agent lines are web-7's data");
    let (lost, dups, ooo, records) = verify(&agent.config);
    assert_eq!((lost, dups, ooo, records), (0, 0, 0, 20));
}
