//! The metrics and health endpoint and `status`, scraped during real runs.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn counters_health_and_status_follow_the_pipeline() {
    let f = Fixture::new("metrics")
        .broker()
        .topic("journal", 2)
        .journal(
            "a.journal",
            &["-n", "2000", "--start-usec", &recent_usec(600).to_string()],
        );
    let entries = f.entries();
    let port = free_port();
    let cfg = f
        .config("state")
        .set("encoding", "max_record_bytes", 4_000_000)
        .property("message.max.bytes", 5_000_000)
        .property("topic.metadata.refresh.interval.ms", 2000)
        .set("pipeline", "retry_backoff_max_ms", 1000)
        .set("metrics", "listen", format!("127.0.0.1:{port}"))
        .set("metrics", "stall_seconds", 5)
        // A refused record must stall here, to watch readiness turn (the default shrinks).
        .set("delivery", "on_too_large", "stall");
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.wait_cursor(&cursor_of(entries.last().unwrap()), Duration::from_secs(60));
    let config = agent.config.to_str().unwrap().to_string();

    // Counters agree with what was shipped.
    let (code, text) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        value(&text, "journald_kafka_entries_read_total"),
        2000.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "journald_kafka_entries_produced_total"),
        2000.0
    );
    assert_eq!(
        value(&text, "journald_kafka_entries_delivered_total"),
        2000.0
    );
    assert_eq!(value(&text, "journald_kafka_entries_failed_total"), 0.0);
    // One entry in 16 is timed (the first of every 16 sequence numbers).
    assert_eq!(
        value(&text, "journald_kafka_delivery_latency_seconds_count"),
        125.0
    );
    assert_eq!(value(&text, "journald_kafka_in_flight_entries"), 0.0);
    assert_eq!(value(&text, "journald_kafka_journal_open"), 1.0);
    assert!(value(&text, "journald_kafka_cursor_writes_total") >= 1.0);
    assert!(value(&text, "journald_kafka_journal_disk_usage_bytes") > 0.0);
    let lag = value(&text, "journald_kafka_watermark_lag_seconds");
    assert!(
        lag > 500.0 && lag < 700.0,
        "lag of a journal written 10 minutes ago: {lag}"
    );
    assert_eq!(http_get(port, "/health/live").0, 200);
    wait_for(
        "broker_up from librdkafka statistics",
        Duration::from_secs(15),
        || value(&http_get(port, "/metrics").1, "journald_kafka_broker_up") == 1.0,
    );
    assert_eq!(http_get(port, "/health/ready").0, 200);
    let (st, out) = run_cli(&["status", "--json", "--config", &config]);
    assert!(st.success(), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["entries_delivered_total"], 2000.0);

    // Break the broker: readiness and status turn, within the statistics interval.
    f.broker.kill9();
    wait_for(
        "not ready while the broker is down",
        Duration::from_secs(30),
        || http_get(port, "/health/ready").0 == 503,
    );
    let (st, out) = run_cli(&["status", "--config", &config]);
    assert!(
        !st.success(),
        "status must fail while the broker is down: {out}"
    );
    assert!(
        out.contains("NOT READY") && out.contains("no broker connection"),
        "{out}"
    );

    let log = agent.log();
    assert!(
        log.contains("no broker connection"),
        "one line for the state change: {log}"
    );
    let repeats = log
        .lines()
        .filter(|l| l.contains("kafka client error"))
        .count();
    assert!(
        repeats <= 6,
        "transient errors are rate-limited, got {repeats} lines:\n{log}"
    );

    // Restore it: they recover.
    f.broker.restart();
    wait_for("ready again", Duration::from_secs(30), || {
        http_get(port, "/health/ready").0 == 200
    });
    assert!(run_cli(&["status", "--config", &config]).0.success());
    assert!(
        agent.log().matches("connected to the brokers").count() >= 2,
        "{}",
        agent.log()
    );

    // A record the broker refuses shows up in the failure counters, by error.
    let big = huge_entry_export(now_usec(), 1_500_000);
    write_export(&f.jdir, "big.journal", &big);
    wait_for("a failure counted", Duration::from_secs(30), || {
        let t = http_get(port, "/metrics").1;
        value(&t, "journald_kafka_entries_failed_total") >= 1.0
            && value(&t, "journald_kafka_pipeline_restarts_total") >= 1.0
    });
    let text = http_get(port, "/metrics").1;
    assert!(
        text.contains("journald_kafka_entries_failed_total{error=\"MessageSizeTooLarge\"}"),
        "{text}"
    );
    wait_for(
        "not ready: the cursor is stalled behind the refused entry",
        Duration::from_secs(30),
        || http_get(port, "/health/ready").1.contains("stalled"),
    );
    assert!(agent.stop().success());
}

/// Readiness follows the real broker state from the first record: no "no broker
/// connection" while records are being acknowledged, at once when the brokers go away, and
/// back without traffic when they return (an idle agent must not wait for a statistics tick).
#[test]
fn readiness_tells_the_truth_from_the_first_record() {
    let f = Fixture::new("readiness")
        .broker()
        .topic("journal", 1)
        .journal(
            "a.journal",
            &["-n", "300", "--start-usec", &recent_usec(60).to_string()],
        );
    let port = free_port();
    let cfg = f
        .config("state")
        .set("metrics", "listen", format!("127.0.0.1:{port}"))
        .set("state", "checkpoint_interval_ms", 100);
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    // The first durable cursor means the brokers acknowledged records.
    agent.wait_cursor_any(Duration::from_secs(30));
    let (code, body) = http_get(port, "/health/ready");
    assert_eq!(
        code, 200,
        "records are acknowledged, yet readiness says: {body}"
    );

    f.broker.kill9();
    let down = Instant::now();
    wait_for(
        "not ready once the broker is gone",
        Duration::from_secs(3),
        || http_get(port, "/health/ready").0 == 503,
    );
    eprintln!("not ready {:?} after the broker died", down.elapsed());

    f.broker.restart();
    let up = Instant::now();
    wait_for(
        "ready again, with no entry to ship, soon after the broker is back",
        Duration::from_secs(4),
        || http_get(port, "/health/ready").0 == 200,
    );
    eprintln!("ready {:?} after the broker restarted", up.elapsed());
    assert!(agent.stop().success());
}

/// The loss account's first part: entries and bytes per unit, and the messages journald's
/// rate limit dropped, from its "Suppressed N messages from UNIT" entries (named as the
/// object, or only in the text), in `/metrics` and `status`.
#[test]
fn per_unit_volume_and_journald_suppressions_are_counted() {
    let f = Fixture::new("units").broker().topic("journal", 1).journal(
        "a.journal",
        &["-n", "1000", "--start-usec", &recent_usec(600).to_string()],
    );
    let t = recent_usec(60);
    // journald's own entries carry what journald sets for itself (driver transport, uid
    // 0); the last two are a user's forgeries (issue 27, item 7): a fake suppression of
    // 2^64-1 messages for sshd.service and one for flood.service, which must count nothing.
    let journald = "_SYSTEMD_UNIT=systemd-journald.service\n_TRANSPORT=driver\n_UID=0\n_PID=93\n_COMM=systemd-journal";
    let forged =
        "_SYSTEMD_UNIT=user@1000.service\n_TRANSPORT=journal\n_UID=1000\n_PID=4242\n_COMM=logger";
    let suppressed = format!(
        "__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP=900000000\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n{journald}\nMESSAGE_ID=a596d6fe7bfa4994828e72309e95d61e\nMESSAGE=Suppressed 123 messages from flood.service\nN_DROPPED=123\nOBJECT_SYSTEMD_UNIT=flood.service\n\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP=900001000\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n{journald}\nMESSAGE_ID=a596d6fe7bfa4994828e72309e95d61e\nMESSAGE=Suppressed 7 messages from chatty.service\nN_DROPPED=7\n\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP=900002000\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n{forged}\nMESSAGE_ID=a596d6fe7bfa4994828e72309e95d61e\nMESSAGE=Suppressed 18446744073709551615 messages from sshd.service\nN_DROPPED=18446744073709551615\nOBJECT_SYSTEMD_UNIT=sshd.service\n\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP=900003000\n_BOOT_ID=1e2feb89414c343c1027c4d1c386bbc4\n{forged}\nMESSAGE_ID=a596d6fe7bfa4994828e72309e95d61e\nMESSAGE=Suppressed 18446744073709551615 messages from flood.service\nN_DROPPED=18446744073709551615\nOBJECT_SYSTEMD_UNIT=flood.service\n\n",
        t + 1000,
        t + 2000,
        t + 3000
    );
    write_export(&f.jdir, "b.journal", suppressed.as_bytes());
    let all = f.entries();
    let port = free_port();
    let cfg = f
        .config("state")
        .set("metrics", "listen", format!("127.0.0.1:{port}"));
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    for c in &newest_per_writer(&all) {
        agent.wait_cursor(c, Duration::from_secs(60));
    }
    let text = http_get(port, "/metrics").1;
    let mut per_unit = std::collections::BTreeMap::<String, f64>::new();
    for f in &all {
        let u = f
            .get("_SYSTEMD_UNIT")
            .map(|v| String::from_utf8_lossy(&v[0]).into_owned())
            .unwrap_or_else(|| "(none)".into());
        *per_unit.entry(u).or_default() += 1.0;
    }
    for (unit, n) in &per_unit {
        let line = format!("journald_kafka_unit_entries_total{{unit=\"{unit}\"}} {n}");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    for line in [
        "journald_kafka_journal_suppressed_total{unit=\"flood.service\"} 123",
        "journald_kafka_journal_suppressed_total{unit=\"chatty.service\"} 7",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(
        !text.contains("journald_kafka_journal_suppressed_total{unit=\"sshd.service\"}"),
        "a user's fake suppression counts nothing:\n{text}"
    );
    let (_, out) = run_cli(&["status", "--config", agent.config.to_str().unwrap()]);
    assert!(
        out.contains("Suppressed: chatty.service 7, flood.service 123"),
        "{out}"
    );
    assert!(out.contains("Top units: "), "{out}");
    assert!(agent.stop().success());
}

/// Issue 27, item 3: the endpoint under abuse, with the agent at a soft limit of 128 open
/// files. A burst of 400 connections opened at once and closed (a port scan, a scraper
/// gone wrong), 40 idle connections, a client streaming an endless header and one that
/// trickles: the endpoint keeps answering (200, or a quick 503 while overloaded), never
/// dies, and its memory stays flat. (Before: the accept loop ended on "Too many open
/// files" and `/health/live` never answered again.)
#[test]
fn the_endpoint_survives_floods_idle_clients_and_endless_headers() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let f = Fixture::new("http-abuse")
        .broker()
        .topic("journal", 1)
        .journal(
            "a.journal",
            &["-n", "100", "--start-usec", &recent_usec(600).to_string()],
        );
    let port = free_port();
    let cfg = f
        .config("state")
        .set("metrics", "listen", format!("127.0.0.1:{port}"));
    let mut agent = Agent::start_with_nofile(&f.s.path("agent"), &cfg, "128:128");
    let pid = agent.child.id();
    let live = || {
        let start = Instant::now();
        loop {
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = c.write_all(b"GET /health/live HTTP/1.0\r\n\r\n");
                let mut r = String::new();
                let _ = c.read_to_string(&mut r);
                if r.starts_with("HTTP/1.1 200") {
                    return start.elapsed();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the endpoint stopped answering"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    live();
    let anon_before = rss_anon_kib(pid);

    // A burst: 400 connections held at once (more than the agent may open), then closed.
    let burst: Vec<_> = (0..400)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(burst);
    eprintln!("live again {:?} after the burst", live());
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("still live {:?} later", live());

    // 40 idle connections: a probe is answered (200 or a quick 503) while they sit there,
    // and they are dropped after the request deadline.
    let idle: Vec<_> = (0..40)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /health/live HTTP/1.0\r\n\r\n").unwrap();
    let mut r = String::new();
    let _ = c.read_to_string(&mut r);
    assert!(
        r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.1 503"),
        "answered while idle clients sit: {r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_secs(3));
    let mut closed = 0;
    for mut i in idle {
        i.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 64];
        if i.read(&mut b).is_ok() {
            closed += 1;
        }
    }
    assert!(closed >= 36, "idle connections are dropped: {closed} of 40");

    // An endless header: refused at the limit, the connection closed.
    let mut e = TcpStream::connect(("127.0.0.1", port)).unwrap();
    e.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    e.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = e.write_all(b"GET /metrics HTTP/1.1\r\nX-Endless: ");
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0usize;
    while sent < (16 << 20) && e.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    let mut r = Vec::new();
    let _ = e.read_to_end(&mut r);
    eprintln!(
        "endless header: {sent} bytes accepted, answer {:?}",
        String::from_utf8_lossy(&r[..r.len().min(60)])
    );
    assert!(sent < (16 << 20), "the endless header was cut off");

    // A trickling client: one byte every 300 ms is dropped at the deadline.
    let mut t = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let start = Instant::now();
    let mut cut = false;
    for b in b"GET /health/live HTTP/1.0\r\nX-Slow: 123456789012345678901234567890\r\n\r\n" {
        if t.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if start.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let mut r = String::new();
    t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = t.read_to_string(&mut r);
    assert!(
        cut || !r.starts_with("HTTP/1.1 200"),
        "a trickling client is not served for ever: {r:?}"
    );

    eprintln!("live at the end {:?}", live());
    let anon_after = rss_anon_kib(pid);
    eprintln!("anonymous memory {anon_before} KiB before, {anon_after} KiB after");
    assert!(
        anon_after < anon_before + 16 * 1024,
        "{anon_before} -> {anon_after} KiB"
    );
    assert!(agent.stop().success(), "{}", agent.log());
}

/// The alerting rules and the dashboard the package installs (packaging/monitoring/) name
/// only metrics a live agent serves: checked by tests/monitoring/check.sh against this
/// agent's /metrics, with the rules' own promtool unit tests and the dashboard's queries.
#[test]
fn the_shipped_alerts_and_dashboard_name_only_metrics_the_agent_serves() {
    let f = Fixture::new("monitoring").broker().journal(
        "a.journal",
        &["-n", "50", "--start-usec", &recent_usec(60).to_string()],
    );
    let port = free_port();
    let cfg = f
        .config("state")
        .set("metrics", "listen", format!("127.0.0.1:{port}"));
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    agent.wait_cursor(&f.last(), Duration::from_secs(60));
    let (code, text) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    let file = f.s.path("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let (st, out) = run_command({
        let mut c = std::process::Command::new(root().join("tests/monitoring/check.sh"));
        c.arg("--metrics").arg(&file);
        c
    });
    assert!(st.success(), "{out}");
    assert!(out.contains("metric names used are served"), "{out}");
}
