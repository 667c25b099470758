//! The systemd notification protocol, with a real datagram socket standing in for systemd.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts the agent with NOTIFY_SOCKET and WATCHDOG_USEC set; returns it and the socket.
fn start(
    s: &Scratch,
    config: &TestConfig,
    watchdog_usec: u64,
) -> (std::process::Child, UnixDatagram) {
    let sock_path = s.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = config.write(&s.path("config.toml"));
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", watchdog_usec.to_string())
        .env_remove("JOURNAL_STREAM")
        .stderr(std::fs::File::create(s.path("agent.log")).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, sock)
}

/// Collects notification messages for `d`, with the time each arrived.
fn collect(sock: &UnixDatagram, d: Duration, into: &mut Vec<(Instant, String)>) {
    let end = Instant::now() + d;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            into.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
}

fn first(msgs: &[(Instant, String)], what: &str) -> usize {
    msgs.iter()
        .position(|(_, m)| m.lines().any(|l| l == what))
        .unwrap_or_else(|| panic!("no {what} in {msgs:?}"))
}

#[test]
fn ready_status_watchdog_and_stopping_arrive_in_order() {
    let f = Fixture::new("notify")
        .broker()
        .topic("journal", 1)
        .journal("a.journal", &["-n", "1000"]);
    let cfg = f.config("state").unset("state", "checkpoint_interval_ms");
    // A 1.5 s watchdog: pings are due every 0.5 s.
    let (mut child, sock) = start(&f.s, &cfg, 1_500_000);
    let mut msgs = Vec::new();
    collect(&sock, Duration::from_secs(7), &mut msgs);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    collect(&sock, Duration::from_secs(2), &mut msgs);
    let status = child.wait().unwrap();
    assert!(status.success());

    let ready = first(&msgs, "READY=1");
    assert!(
        msgs[ready]
            .1
            .contains("STATUS=journal open; brokers reachable"),
        "{:?}",
        msgs[ready]
    );
    let pings: Vec<_> = msgs
        .iter()
        .enumerate()
        .filter(|(_, (_, m))| m == "WATCHDOG=1")
        .collect();
    assert!(
        pings.len() >= 5,
        "watchdog pings every WatchdogSec/3: {msgs:?}"
    );
    for w in pings.windows(2) {
        let gap = w[1].1.0 - w[0].1.0;
        assert!(
            gap < Duration::from_millis(1500),
            "pings further apart than the watchdog: {gap:?}"
        );
    }
    assert!(pings.iter().any(|(i, _)| *i > ready), "pings after READY");
    let status_line = msgs
        .iter()
        .position(|(_, m)| m.starts_with("STATUS=shipping:"))
        .expect("a STATUS= summary");
    assert!(
        msgs[status_line].1.contains("1000 entries delivered"),
        "{:?}",
        msgs[status_line]
    );
    let stopping = first(&msgs, "STOPPING=1");
    assert!(
        ready < status_line && status_line < stopping,
        "order READY < STATUS < STOPPING: {msgs:?}"
    );
}

#[test]
fn ready_is_not_held_back_forever_by_an_unreachable_broker() {
    let f = Fixture::new("notify-nobroker").journal("a.journal", &["-n", "10"]);
    let cfg = f
        .config_to(&format!("127.0.0.1:{}", free_port()), "state")
        .unset("state", "checkpoint_interval_ms")
        .set("kafka", "connect_timeout_ms", 1500);
    let started = Instant::now();
    let (mut child, sock) = start(&f.s, &cfg, 0);
    let mut msgs = Vec::new();
    collect(&sock, Duration::from_secs(4), &mut msgs);
    let ready = first(&msgs, "READY=1");
    let at = msgs[ready].0 - started;
    assert!(
        at >= Duration::from_millis(1400) && at < Duration::from_secs(4),
        "READY after the connect timeout, got {at:?}"
    );
    assert!(
        msgs[ready].1.contains("brokers NOT reachable"),
        "{:?}",
        msgs[ready]
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Exactly-once mode with the broker unreachable at start: the setup (cursor topic,
/// registering the transactional id, restore) waits on the broker, and systemd must still
/// hear READY after `kafka.connect_timeout_ms`, watchdog pings throughout, and a SIGTERM
/// must end it within `pipeline.shutdown_timeout_ms` (the unit's TimeoutStopSec would
/// otherwise SIGKILL it).
#[test]
fn exactly_once_setup_against_an_unreachable_broker_keeps_systemd_informed() {
    let f = Fixture::new("notify-eo").journal("a.journal", &["-n", "10"]);
    let cfg = f
        .config_to(&format!("127.0.0.1:{}", free_port()), "state")
        .unset("state", "checkpoint_interval_ms")
        .exactly_once("notify")
        .set("kafka", "connect_timeout_ms", 1500)
        .set("pipeline", "shutdown_timeout_ms", 2000);
    let started = Instant::now();
    // A 1.5 s watchdog: pings are due every 0.5 s.
    let (mut child, sock) = start(&f.s, &cfg, 1_500_000);
    let mut msgs = Vec::new();
    collect(&sock, Duration::from_secs(12), &mut msgs);
    let log = std::fs::read_to_string(f.s.path("agent.log")).unwrap_or_default();
    let ready = msgs
        .iter()
        .position(|(_, m)| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY in {msgs:?}\n{log}"));
    let at = msgs[ready].0 - started;
    assert!(at < Duration::from_secs(5), "READY after {at:?}");
    // Watchdog pings all along (none more than a watchdog period apart).
    let pings: Vec<Instant> = msgs
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 10, "pings: {} in 12 s\n{log}", pings.len());
    let mut last = started;
    for p in &pings {
        assert!(
            *p - last < Duration::from_millis(1500),
            "a {:?} gap between watchdog pings\n{log}",
            *p - last
        );
        last = *p;
    }
    assert!(
        Instant::now() - last < Duration::from_millis(1500),
        "pings stopped\n{log}"
    );
    let term = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            term.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = term.elapsed();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        took < Duration::from_millis(2500),
        "SIGTERM took {took:?}, above shutdown_timeout_ms"
    );
}
