//! Exactly-once mode against a broker with transactions (noida-db): kill -9 at random
//! moments with an empty state directory every time, fencing between two agents, and a
//! broker without transactions refused at `check` and at start.
//!
//! The checker is `journald-kafka verify`, whose consumer reads with
//! isolation.level=read_committed: lost = 0 and duplicates = 0 is the promise.

mod common;

use std::time::Duration;

use common::*;

fn config(f: &Fixture<Broker>, state: &str, id: &str) -> TestConfig {
    f.config(state)
        .unset("state", "checkpoint_interval_ms")
        .set("kafka", "key_field", "_SYSTEMD_UNIT")
        .exactly_once(id)
}

/// Transactions of a few hundred milliseconds whose records reach the broker as they are
/// produced (linger 5 ms), so most kills land inside an open transaction that the broker
/// already holds records of; some land between transactions. With the default linger of
/// 100 ms and transactions of 500 entries, a backlog's records sat in librdkafka until the
/// commit flushed them, and a kill inside the transaction left nothing on the broker to
/// abort: twelve kills could prove nothing about aborts (it failed so on CI).
fn short_transactions(c: TestConfig) -> TestConfig {
    c.set("delivery", "transaction_max_ms", 300)
        .set("delivery", "transaction_max_entries", 1000)
        .property("linger.ms", 5)
}

#[test]
fn kill_9_at_random_moments_delivers_every_entry_exactly_once() {
    let f = Fixture::new("eo-kill9").transactional_broker().journal(
        "a.journal",
        &[
            "-n",
            "60000",
            "--start-usec",
            &recent_usec(1800).to_string(),
            "--rate-usec",
            "10000",
        ],
    );
    let last = f.last();
    // A fresh, empty state directory every time: the place comes from Kafka alone.
    let (kills, seed) = kill_9_at_random(&f.s, &last, 0xe0, 12, (100, 400), |trial| {
        short_transactions(config(&f, &format!("state{trial}"), "kill9"))
    });
    let cfg = short_transactions(config(&f, "final-state", "kill9"));
    let mut agent = Agent::start(&f.s.path("final"), &cfg);
    agent.wait_cursor(&last, Duration::from_secs(240));
    assert!(agent.stop().success(), "{}", agent.log());
    assert!(
        agent.log().contains("restoring from cursor topic"),
        "the final agent must resume from Kafka: {}",
        agent.log()
    );

    let (lost, dups, ooo, records) = verify(&agent.config);
    // What the crashes left behind in aborted or never-committed transactions: visible to
    // read_uncommitted only. It proves the kills hit open transactions.
    let all = consume_isolated(
        &f.broker.addr(),
        &["journal"],
        usize::MAX,
        Duration::from_secs(3),
        "read_uncommitted",
    )
    .len() as u64;
    eprintln!(
        "exactly-once kill -9 trials: {kills} (seed {seed:#x}); read_committed records {records}, lost {lost}, duplicates {dups}, out of order {ooo}; records of aborted transactions {}",
        all - records
    );
    assert_eq!(lost, 0);
    assert_eq!(dups, 0, "a read_committed consumer saw an entry twice");
    assert_eq!(ooo, 0);
    assert_eq!(records, 60_000);
    if kills >= 3 {
        assert!(
            all > records,
            "{kills} kills and no aborted transaction: the test did not exercise aborts"
        );
    }
}

#[test]
fn a_second_agent_fences_the_first_which_exits_with_status_3() {
    let f = Fixture::new("eo-fence").transactional_broker();
    // Both files share a boot id; sd-journal orders them by monotonic time, so the second
    // continues the first's monotonic clock.
    let gen_args = |n: &str, ago: u64, seed: &str, mono: &str| {
        [
            "-n".to_string(),
            n.to_string(),
            "--start-usec".to_string(),
            recent_usec(ago).to_string(),
            "--seed".to_string(),
            seed.to_string(),
            "--start-mono".to_string(),
            mono.to_string(),
        ]
    };
    let a = gen_args("3000", 3600, "1", "5000000");
    write_journal(
        &f.jdir,
        "a.journal",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let first_last = f.last();

    let cfg_a = config(&f, "state-a", "fence");
    let mut agent_a = Agent::start(&f.s.path("a"), &cfg_a);
    agent_a.wait_cursor(&first_last, Duration::from_secs(60));

    // The same transactional id on another host (another state directory): it takes over.
    let cfg_b = config(&f, "state-b", "fence");
    let mut agent_b = Agent::start(&f.s.path("b"), &cfg_b);
    // B resumes where A committed, from Kafka (its state directory is empty).
    agent_b.wait_cursor(&first_last, Duration::from_secs(60));

    // New entries: A tries to ship them in its old epoch and is fenced.
    let b = gen_args("2000", 600, "2", "100000000000");
    write_journal(
        &f.jdir,
        "b.journal",
        &b.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let second_last = f.last();
    let status = agent_a.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(3), "{}", agent_a.log());
    assert!(agent_a.log().contains("fenced"), "{}", agent_a.log());

    agent_b.wait_cursor(&second_last, Duration::from_secs(60));
    assert!(agent_b.stop().success(), "{}", agent_b.log());
    let (lost, dups, ooo, records) = verify(&agent_b.config);
    eprintln!("fencing: records {records}, lost {lost}, duplicates {dups}, out of order {ooo}");
    assert_eq!((lost, dups, ooo, records), (0, 0, 0, 5000));
}

#[test]
fn a_broker_without_transactions_is_refused_at_check_and_at_start() {
    // Nisshi has no transaction coordinator.
    let f = Fixture::new("eo-unsupported")
        .broker()
        .journal("a.journal", &["-n", "10"]);
    let cfg = config(&f, "state", "nope");
    let dir = f.s.path("agent");
    std::fs::create_dir_all(&dir).unwrap();
    let path = cfg.write(&dir.join("config.toml"));

    let (st, out) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(!st.success(), "{out}");
    assert!(
        out.contains("FAIL  delivery") && out.contains("cannot run against these brokers"),
        "{out}"
    );

    // `run` stops at once with the same reason instead of retrying forever.
    let mut agent = Agent::start(&f.s.path("run"), &cfg);
    let status = agent.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert!(
        agent.log().contains("cannot run against these brokers"),
        "{}",
        agent.log()
    );
}

/// Issue 14 item 2: the newest cursor is the last one written, not the one with the newest
/// timestamp. Two cursor records for one id, the later-written one stamped an hour earlier
/// (a host clock stepped back): restore must take the later-written one, so nothing up to
/// it is shipped again.
#[test]
fn restore_takes_the_last_written_cursor_whatever_its_timestamp() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let f = Fixture::new("eo-clock").transactional_broker().journal(
        "a.journal",
        &["-n", "300", "--start-usec", &recent_usec(600).to_string()],
    );
    let entries = f.entries();
    let (older, newer) = (cursor_of(&entries[99]), cursor_of(&entries[199]));
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", f.broker.addr())
        .create()
        .unwrap();
    let now_ms = (now_usec() / 1000) as i64;
    for (cursor, ts) in [(&older, now_ms), (&newer, now_ms - 3_600_000)] {
        p.send(
            BaseRecord::to("journald-kafka-cursors")
                .key("clock")
                .payload(cursor.as_str())
                .timestamp(ts),
        )
        .unwrap();
        p.flush(Duration::from_secs(10)).unwrap();
    }
    let cfg = config(&f, "state", "clock");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    let shipped: Vec<String> = consume_all(&f.broker.addr(), &["journal"], 3)
        .into_iter()
        .map(|r| r.cursor)
        .collect();
    let want: Vec<String> = entries[200..].iter().map(cursor_of).collect();
    assert_eq!(
        shipped.len(),
        want.len(),
        "resumed after the last-written cursor, not the newest-stamped one: {}",
        agent.log()
    );
    let mut sorted = shipped.clone();
    sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted);
}

/// Issue 14 item 1: another producer holds a transaction open on the shared cursor topic
/// while the agent commits; the agent is killed with -9 and restarts with an empty state
/// directory. `read_committed` stops at the first open transaction, so a restore that reads
/// "to the end" then sees none of the agent's later commits and ships them again. It must
/// wait for the transactions open when it started, then resume: lost 0, duplicates 0.
#[test]
fn restore_waits_for_other_agents_open_transactions_on_the_cursor_topic() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let f = Fixture::new("eo-open-txn").transactional_broker();
    let t0 = recent_usec(900);
    write_journal(
        &f.jdir,
        "a.journal",
        &["-n", "100", "--start-usec", &t0.to_string()],
    );
    let first = f.last();
    let cfg = config(&f, "state-1", "open-txn");
    let mut agent = Agent::start(&f.s.path("a1"), &cfg);
    agent.wait_cursor(&first, Duration::from_secs(60));

    // Another agent opens a transaction on the shared cursor topic and holds it.
    let other: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", f.broker.addr())
        .set("transactional.id", "another-agent")
        .set("transaction.timeout.ms", "120000")
        .create()
        .unwrap();
    other.init_transactions(Duration::from_secs(10)).unwrap();
    other.begin_transaction().unwrap();
    other
        .send(
            BaseRecord::to("journald-kafka-cursors")
                .key("another-agent")
                .payload(first.as_str()),
        )
        .unwrap();
    other.flush(Duration::from_secs(10)).unwrap();

    // Meanwhile the agent commits 5,000 more entries, then dies.
    write_journal(
        &f.jdir,
        "b.journal",
        &[
            "-n",
            "5000",
            "--seed",
            "2",
            "--start-usec",
            &(t0 + 300_000_000).to_string(),
        ],
    );
    let last = f.last();
    agent.wait_cursor(&last, Duration::from_secs(60));
    agent.signal("-KILL");
    agent.wait(Duration::from_secs(5));

    // A wiped host: empty state directory. The other transaction commits a little later.
    let cfg = config(&f, "state-2", "open-txn");
    let mut agent = Agent::start(&f.s.path("a2"), &cfg);
    std::thread::sleep(Duration::from_secs(3));
    other.commit_transaction(Duration::from_secs(10)).unwrap();
    agent.finish_at(&last);
    assert!(
        agent
            .log()
            .contains("waiting for other agents' open transactions"),
        "{}",
        agent.log()
    );
    let (lost, dups, ooo, records) = verify(&agent.config);
    eprintln!(
        "open transaction on the cursor topic: records {records}, lost {lost}, duplicates {dups}, out of order {ooo}"
    );
    assert_eq!((lost, dups, ooo), (0, 0, 0), "{}", agent.log());
}

/// A transaction the broker aborts because it outlived `transaction.timeout.ms` (here the
/// agent is frozen with SIGSTOP mid-transaction, as a host under memory pressure or a
/// stopped VM would be) is not fencing: no other instance holds the id, so the agent must
/// recover (abort, start again from the cursor topic), not exit with the fencing status.
#[test]
fn a_transaction_the_broker_timed_out_is_recovered_not_taken_for_fencing() {
    let f = Fixture::new("eo-timeout").transactional_broker().journal(
        "a.journal",
        &[
            "-n",
            "200000",
            "--start-usec",
            &recent_usec(1800).to_string(),
            "--rate-usec",
            "1000",
        ],
    );
    let last = f.last();
    let cfg = config(&f, "state", "timeout")
        .set("delivery", "transaction_timeout_ms", 2000)
        .set("delivery", "transaction_max_ms", 1000)
        .set("pipeline", "max_in_flight_entries", 2000);
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    // Freeze it while it ships, long past the transaction timeout.
    agent.wait_cursor_any(Duration::from_secs(30));
    agent.signal("-STOP");
    std::thread::sleep(Duration::from_secs(6));
    agent.signal("-CONT");
    let start = std::time::Instant::now();
    while !agent.has_cursor(&last) {
        if let Some(st) = agent.child.try_wait().unwrap() {
            panic!(
                "the agent exited with {st} after its transaction timed out:\n{}",
                agent.log()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "did not finish: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success(), "{}", agent.log());
    let (lost, dups, ooo, records) = verify(&agent.config);
    assert_eq!((lost, dups, ooo, records), (0, 0, 0, 200000));
}

/// Restore at fleet scale: the shared cursor topic holds the records of 10,000 other
/// agents (`JK_CURSOR_RECORDS`, default 200,000, before and after ours). The agent, its
/// state directory wiped, must find its own newest place among them, and say how long that
/// took (docs/delivery.md has the figures): lost 0, duplicates 0.
#[test]
fn restore_finds_its_place_among_ten_thousand_agents_records() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let total: usize = std::env::var("JK_CURSOR_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let f = Fixture::new("eo-fleet-restore").transactional_broker();
    f.broker
        .create_topic_with("journald-kafka-cursors", 1, Some("cleanup.policy=compact"));
    let others = |n: usize, seed: usize| {
        let p: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", f.broker.addr())
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        for i in 0..n {
            let key = format!("host-{:05}", (i + seed) % 10_000);
            let value = format!(
                "s=0e7a5b6d4c3b4a29a1b2c3d4e5f60718;i={:x};b=9f8e7d6c5b4a39281706f5e4d3c2b1a0;m=1;t=1;x=1",
                i + 1
            );
            let mut rec = BaseRecord::to("journald-kafka-cursors")
                .key(&key)
                .payload(&value);
            while let Err((_, back)) = p.send(rec) {
                rec = back;
                p.poll(Duration::from_millis(10));
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60)).unwrap();
    };
    others(total / 2, 0);
    write_journal(
        &f.jdir,
        "a.journal",
        &["-n", "2000", "--start-usec", &recent_usec(1800).to_string()],
    );
    let last = f.last();
    let mut agent = Agent::start(&f.s.path("first"), &config(&f, "state1", "victim"));
    agent.finish_at(&last);
    others(total - total / 2, 7);

    // A wiped host: its place is only in the cursor topic, under 200,000 other records.
    let cfg = config(&f, "state2", "victim");
    let started = std::time::Instant::now();
    let mut agent = Agent::start(&f.s.path("second"), &cfg);
    let deadline = started + Duration::from_secs(300);
    while !agent.log().contains("restoring from cursor topic") {
        assert!(
            std::time::Instant::now() < deadline,
            "no restore within 300 s:\n{}",
            agent.log()
        );
        if let Some(st) = agent.child.try_wait().unwrap() {
            panic!("exited {st}: {}", agent.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    assert!(agent.log().contains(&last), "restored the newest place");
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.stop().success(), "{}", agent.log());
    println!(
        "fleet restore: {total} records of 10,000 other agents on the cursor topic; restore (start to place found) took {took:?}"
    );
    let (lost, dups, ooo, records) = verify(&agent.config);
    assert_eq!((lost, dups, ooo, records), (0, 0, 0, 2000));
}

/// A stop in exactly-once mode while the broker is away must end within
/// `pipeline.shutdown_timeout_ms` (the unit's TimeoutStopSec would SIGKILL it otherwise):
/// the open transaction cannot commit, so it is abandoned and shipped by the next start.
#[test]
fn a_stop_with_the_broker_away_ends_within_the_shutdown_timeout() {
    let f = Fixture::new("eo-stop").transactional_broker().journal(
        "a.journal",
        &["-n", "2000", "--start-usec", &recent_usec(1800).to_string()],
    );
    let last = f.last();
    let cfg = config(&f, "state", "stop").set("pipeline", "shutdown_timeout_ms", 3000);
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.wait_cursor(&last, Duration::from_secs(60));
    f.broker.stop();
    // New entries: a transaction opens and cannot commit.
    write_journal(
        &f.jdir,
        "b.journal",
        &[
            "-n",
            "500",
            "--seed",
            "9",
            "--start-usec",
            &recent_usec(60).to_string(),
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let term = std::time::Instant::now();
    let st = agent.stop();
    let took = term.elapsed();
    assert!(
        took < Duration::from_millis(5000),
        "SIGTERM took {took:?} with shutdown_timeout_ms = 3000 ({st}):\n{}",
        agent.log()
    );
}
