//! `systemctl reload` (SIGHUP): a valid config restarts the session from the last safe
//! cursor with the new settings; an invalid one, or a change only a restart can apply, is
//! refused with the reason while the running session goes on.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

fn wait_log(agent: &Agent, what: &str, timeout: Duration) {
    let start = Instant::now();
    while !agent.log().contains(what) {
        assert!(
            start.elapsed() < timeout,
            "no {what:?} in the log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cursors(records: &[Record]) -> BTreeSet<String> {
    records.iter().map(|r| r.cursor.clone()).collect()
}

#[test]
fn sighup_applies_a_valid_config_and_refuses_a_bad_one_without_stopping() {
    let f = Fixture::new("reload")
        .broker()
        .topic("first", 1)
        .topic("second", 1)
        .journal(
            "a.journal",
            &["-n", "500", "--start-usec", &recent_usec(300).to_string()],
        );
    let first = f.entries();
    let port = free_port();
    let cfg =
        f.config("state")
            .topic("first")
            .set("metrics", "listen", format!("127.0.0.1:{port}"));
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.wait_cursor(&cursor_of(first.last().unwrap()), Duration::from_secs(60));
    let pid = agent.child.id();

    // 1. A valid change: the new topic takes the entries written from now on.
    cfg.clone().topic("second").write(&agent.config);
    agent.signal("-HUP");
    wait_log(&agent, "configuration reloaded", Duration::from_secs(30));
    write_journal(
        &f.jdir,
        "b.journal",
        &["-n", "300", "--start-usec", &recent_usec(200).to_string()],
    );
    let all = f.entries();
    let second: Vec<_> = all
        .iter()
        .filter(|f| !first.iter().any(|g| cursor_of(g) == cursor_of(f)))
        .collect();
    assert_eq!(second.len(), 300);
    agent.wait_cursor(&cursor_of(second.last().unwrap()), Duration::from_secs(60));
    assert_eq!(agent.child.id(), pid, "the same process, not a restart");
    assert_eq!(
        http_get(port, "/health/ready").0,
        200,
        "ready after the reload"
    );

    // 2. An invalid config is refused with key and line; the session goes on with the
    // previous one (the "second" topic).
    cfg.clone()
        .topic("second")
        .set("pipeline", "max_in_flight_entries", "lots")
        .write(&agent.config);
    agent.signal("-HUP");
    wait_log(&agent, "reload refused", Duration::from_secs(10));
    let log = agent.log();
    assert!(
        log.contains("max_in_flight_entries") && log.contains("line"),
        "the refusal names the key and the line:\n{log}"
    );

    // 3. A change only a restart can apply is refused too.
    cfg.clone()
        .topic("second")
        .set("metrics", "listen", format!("127.0.0.1:{}", free_port()))
        .write(&agent.config);
    agent.signal("-HUP");
    let start = Instant::now();
    while agent.log().matches("reload refused").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        agent
            .log()
            .contains("metrics.listen cannot change while running"),
        "{}",
        agent.log()
    );
    write_journal(
        &f.jdir,
        "c.journal",
        &["-n", "200", "--start-usec", &recent_usec(100).to_string()],
    );
    let third: Vec<_> = f
        .entries()
        .into_iter()
        .filter(|f| !all.iter().any(|g| cursor_of(g) == cursor_of(f)))
        .collect();
    assert_eq!(third.len(), 200);
    agent.wait_cursor(&cursor_of(third.last().unwrap()), Duration::from_secs(60));
    assert_eq!(agent.child.id(), pid);
    assert!(agent.stop().success(), "{}", agent.log());

    // Every entry once, in the topic the config of its time named.
    let a = consume_all(&f.broker.addr(), &["first"], 3);
    let b = consume_all(&f.broker.addr(), &["second"], 3);
    let want_a: BTreeSet<String> = first.iter().map(cursor_of).collect();
    let mut want_b: BTreeSet<String> = second.iter().map(|f| cursor_of(f)).collect();
    want_b.extend(third.iter().map(cursor_of));
    assert_eq!(a.len(), 500, "no entry shipped twice to the first topic");
    assert_eq!(cursors(&a), want_a);
    assert_eq!(b.len(), 500, "no entry shipped twice to the second topic");
    assert_eq!(cursors(&b), want_b);
}
