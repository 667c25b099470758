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
        agent.log().contains("restoring from offsets of group"),
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

/// The "read in N ms" the agent logs with where its place came from.
fn read_in(log: &str) -> u64 {
    let at = log
        .find("(read in ")
        .expect("the place's read time is logged")
        + 9;
    log[at..].split(' ').next().unwrap().parse().unwrap()
}

/// A producer of another transactional id that holds a transaction open on `topics` (a
/// host frozen mid-transaction, or one with a longer transaction timeout), for up to
/// `hold_ms`; ended by [`Hog::end`].
struct Hog(rdkafka::producer::BaseProducer);

impl Hog {
    fn open(broker: &str, id: &str, hold_ms: u64, topics: &[&str]) -> Hog {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let p: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker)
            .set("transactional.id", id)
            .set("transaction.timeout.ms", hold_ms.to_string())
            .create()
            .unwrap();
        p.init_transactions(Duration::from_secs(10)).unwrap();
        p.begin_transaction().unwrap();
        for t in topics {
            p.send(BaseRecord::to(t).key(id).payload("held open"))
                .unwrap();
        }
        p.flush(Duration::from_secs(10)).unwrap();
        Hog(p)
    }

    fn end(self) {
        use rdkafka::producer::Producer;
        self.0.abort_transaction(Duration::from_secs(10)).unwrap();
    }
}

/// Issue 29: the place cannot be held hostage. Another producer holds a transaction open
/// on every topic the agent touches (the entries' topic and the cursor topic) for five
/// minutes, longer than the agent's own transaction timeout. Meanwhile the agent starts,
/// ships, is killed with -9, loses its state directory and starts again: it ships at once
/// (the place is its own group's offsets, which no other transaction delays), and once
/// the other transaction ends a `read_committed` consumer sees every entry exactly once.
/// The cursor-record store waited on the other transaction, gave up after
/// `delivery.transaction_timeout_ms`, and shipped nothing.
#[test]
fn another_producers_open_transaction_cannot_hold_the_place_hostage() {
    let f = Fixture::new("eo-hostage").transactional_broker();
    let t0 = recent_usec(900);
    write_journal(
        &f.jdir,
        "a.journal",
        &["-n", "100", "--start-usec", &t0.to_string()],
    );
    let first = f.last();
    let hog = Hog::open(
        &f.broker.addr(),
        "a-frozen-host",
        300_000,
        &["journal", "journald-kafka-cursors"],
    );
    let cfg = config(&f, "state-1", "hostage").set("delivery", "transaction_timeout_ms", 10_000);
    let mut agent = Agent::start(&f.s.path("a1"), &cfg);
    agent.wait_cursor(&first, Duration::from_secs(30));
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
    let second = f.last();
    agent.wait_cursor(&second, Duration::from_secs(30));
    agent.signal("-KILL");
    agent.wait(Duration::from_secs(5));

    // A wiped host, the other transaction still open: the place comes from the group.
    let cfg = config(&f, "state-2", "hostage").set("delivery", "transaction_timeout_ms", 10_000);
    let started = std::time::Instant::now();
    let mut agent = Agent::start(&f.s.path("a2"), &cfg);
    write_journal(
        &f.jdir,
        "c.journal",
        &[
            "-n",
            "1000",
            "--seed",
            "3",
            "--start-usec",
            &(t0 + 600_000_000).to_string(),
        ],
    );
    let last = f.last();
    agent.wait_cursor(&last, Duration::from_secs(20));
    let took = started.elapsed();
    assert!(
        agent.log().contains("restoring from offsets of group"),
        "{}",
        agent.log()
    );
    assert!(
        !agent.log().contains("waiting for other agents"),
        "{}",
        agent.log()
    );
    assert!(agent.stop().success(), "{}", agent.log());
    hog.end();
    let (lost, dups, ooo, records) = verify(&agent.config);
    eprintln!(
        "another producer's transaction open on every topic: the wiped agent shipped 1,000 new entries {took:?} after its start; records {records}, lost {lost}, duplicates {dups}, out of order {ooo}"
    );
    assert_eq!(
        (lost, dups, ooo, records),
        (0, 0, 0, 6100),
        "{}",
        agent.log()
    );
}

/// Migration from the cursor-record layout of earlier versions: an agent with no place in
/// its group and no state directory reads the cursor topic once. It waits for another
/// producer's open transaction only while its own newest record lies behind it (then
/// `read_committed` would hide it and the agent would resume from an older place), and not
/// at all when only others' records do.
#[test]
fn migration_waits_only_when_its_own_record_lies_behind_an_open_transaction() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let f = Fixture::new("eo-migrate").transactional_broker().journal(
        "a.journal",
        &["-n", "300", "--start-usec", &recent_usec(600).to_string()],
    );
    let entries = f.entries();
    f.broker
        .create_topic_with("journald-kafka-cursors", 1, Some("cleanup.policy=compact"));
    // What an earlier version committed for "old": a cursor record in a transaction.
    let commit_record = |cursor: &str| {
        let p: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", f.broker.addr())
            .set("transactional.id", "old")
            .create()
            .unwrap();
        p.init_transactions(Duration::from_secs(10)).unwrap();
        p.begin_transaction().unwrap();
        p.send(
            BaseRecord::to("journald-kafka-cursors")
                .key("old")
                .payload(cursor),
        )
        .unwrap();
        p.commit_transaction(Duration::from_secs(10)).unwrap();
    };
    commit_record(&cursor_of(&entries[99]));
    // Others' open transaction after it: our record is readable, no wait.
    let hog = Hog::open(
        &f.broker.addr(),
        "other",
        120_000,
        &["journald-kafka-cursors"],
    );
    let mut agent = Agent::start(&f.s.path("a1"), &config(&f, "state-1", "old"));
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    assert!(
        !agent.log().contains("waiting for other agents"),
        "{}",
        agent.log()
    );
    assert!(
        agent
            .log()
            .contains("cursor record an earlier version committed"),
        "{}",
        agent.log()
    );
    // It resumed right after the record: entries 100..300 shipped, once each.
    let shipped = consume_isolated(
        &f.broker.addr(),
        &["journal"],
        usize::MAX,
        Duration::from_secs(3),
        "read_uncommitted",
    )
    .len();
    assert_eq!(shipped, 200, "{}", agent.log());

    // Our newer record behind the open transaction (an earlier version committed it while
    // the other transaction was open): the agent waits for it rather than resume from the
    // older record. This agent has a place in its group by now; a new id stands for an
    // upgraded host that never committed offsets.
    let p: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", f.broker.addr())
        .set("transactional.id", "old-2")
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(10)).unwrap();
    for c in [&entries[99], &entries[199]] {
        p.begin_transaction().unwrap();
        p.send(
            BaseRecord::to("journald-kafka-cursors")
                .key("old-2")
                .payload(cursor_of(c).as_str()),
        )
        .unwrap();
        p.commit_transaction(Duration::from_secs(10)).unwrap();
    }
    let mut agent = Agent::start(&f.s.path("a2"), &config(&f, "state-2", "old-2"));
    let waiting = std::time::Instant::now();
    while !agent.log().contains("waiting for other agents") {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "the agent did not wait for the transaction that hides its record: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    hog.end();
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    assert!(
        agent.log().contains("waiting for other agents"),
        "{}",
        agent.log()
    );
    assert!(
        agent.log().contains(&cursor_of(&entries[199])),
        "resumed after the newer record: {}",
        agent.log()
    );
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

/// Restore at fleet scale: the cursor topic holds the records of 10,000 other agents of an
/// earlier version (`JK_CURSOR_RECORDS`, default 200,000, before and after ours). A first
/// start searches them once (migration); the agent, its state directory wiped, then finds
/// its place in its own group's offsets without reading them, and says how long each took
/// (docs/delivery.md has the figures): lost 0, duplicates 0.
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
    // How long from the start until the agent knows where it stands.
    let time_to_place = |agent: &mut Agent, needle: &str| {
        let started = std::time::Instant::now();
        let deadline = started + Duration::from_secs(300);
        while !agent.log().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no restore within 300 s:\n{}",
                agent.log()
            );
            if let Some(st) = agent.child.try_wait().unwrap() {
                panic!("exited {st}: {}", agent.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    };
    // A first start: no place in its group, so the cursor topic is searched once for a
    // record an earlier version left (the whole topic: there is none).
    let mut agent = Agent::start(&f.s.path("first"), &config(&f, "state1", "victim"));
    let scan = time_to_place(&mut agent, "starting at the configured position");
    let scan_read = read_in(&agent.log());
    agent.finish_at(&last);
    others(total - total / 2, 7);

    // A wiped host: its place is in its group's offsets; the 200,000 records are not read.
    let cfg = config(&f, "state2", "victim");
    let mut agent = Agent::start(&f.s.path("second"), &cfg);
    let took = time_to_place(&mut agent, "restoring from offsets of group");
    let took_read = read_in(&agent.log());
    assert!(agent.log().contains(&last), "restored the newest place");
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.stop().success(), "{}", agent.log());
    println!(
        "fleet restore: {total} records of 10,000 other agents on the cursor topic; a first start's search of the topic (the migration path, which is also how the cursor-record store restored): {scan_read} ms ({scan:?} from the start); the wiped agent's restore from its group's offsets: {took_read} ms ({took:?} from the start)"
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

/// Issue 29 item 5: progress records in exactly-once mode ride in each transaction, their
/// window ending at the place committed with it, so `audit` (a `read_committed` reader)
/// sees a window exactly when it sees its entries. A kill -9 mid-run aborts both; the
/// restarted agent (state directory wiped) resumes right after the last committed place
/// and its windows start there: covered all, lost 0, duplicates 0. Before, the mode
/// refused `delivery.progress_interval_ms` at load.
#[test]
fn progress_records_ride_in_each_transaction_and_audit_sees_every_entry() {
    let f = Fixture::new("eo-audit").transactional_broker().journal(
        "a.journal",
        &[
            "-n",
            "60000",
            "--start-usec",
            &recent_usec(1800).to_string(),
        ],
    );
    let entries = f.entries();
    let last = f.last();
    let with_progress = |state: &str| {
        short_transactions(config(&f, state, "audit"))
            .set("delivery", "progress_interval_ms", 60_000)
            // Entries whose SEQ ends in 0, 1 or 2: dropped by the agent, counted as filtered.
            .set("journal", "exclude_matches", vec!["SEQ=*[0-2]"])
    };
    let mut agent = Agent::start(&f.s.path("a1"), &with_progress("state-1"));
    // Killed once some transactions are committed, well before the end.
    let early: std::collections::HashSet<String> =
        entries[3000..40000].iter().map(cursor_of).collect();
    let started = std::time::Instant::now();
    while !agent
        .cursor()
        .is_some_and(|c| c.lines().any(|l| early.contains(l)))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    agent.signal("-KILL");
    agent.wait(Duration::from_secs(5));
    let mut agent = Agent::start(&f.s.path("a2"), &with_progress("state-2"));
    agent.finish_at(&last);
    let restored = agent
        .log()
        .lines()
        .find(|l| l.contains("restoring from offsets of group"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no restore: {}", agent.log()));
    assert!(
        !restored.contains(&last),
        "the first agent was killed before the end: {restored}"
    );
    let (ok, v, out) = audit_json(&agent.config, None);
    eprintln!("exactly-once audit after a kill -9: {v}");
    assert!(ok, "{out}");
    let w = &v[0];
    assert_eq!(w["covered"], 60000, "{out}");
    assert_eq!(w["filtered"], 18000, "{out}");
    assert_eq!(w["shipped"], 42000, "{out}");
    assert_eq!(w["lost"], 0, "{out}");
    assert_eq!(w["duplicates"], 0, "{out}");
}
