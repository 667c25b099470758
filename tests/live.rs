//! Live follow: a real systemd-journald (in its own namespace, so the machine's journal is
//! untouched) written to while the agent runs, rotated mid-stream.

mod common;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn follows_a_live_journald_across_rotation() {
    follow_across_rotation("live", false);
}

/// The same journal read as a directory, the way a central directory is read (one stream
/// per writer): rotation moves the writer to a new file, which its stream must pick up
/// where it stood.
#[test]
fn follows_a_live_journald_directory_across_rotation() {
    follow_across_rotation("livedir", true);
}

fn follow_across_rotation(name: &str, as_directory: bool) {
    let s = Scratch::new(name);
    let broker = Broker::with_topic(&s, "live", 2);
    let ns = format!("jk{name}{}", std::process::id());
    let jd = Journald::start(&ns, &s.path("journald.log"));
    let client = UnixDatagram::unbound().unwrap();

    for i in 0..500 {
        jd.send(
            &client,
            &format!("MESSAGE=before start {i}\nSYSLOG_IDENTIFIER=jk-live\nSEQ={i}\n"),
        );
    }
    let state = s.path("state");
    let source = if as_directory {
        Source::Directory(jd.directory())
    } else {
        Source::Namespace(ns.clone())
    };
    let cfg = TestConfig::new(&state, &broker.addr(), &state)
        .source(source)
        .topic("live");
    let mut agent = Agent::start(&s.path("agent"), &cfg);
    std::thread::sleep(Duration::from_millis(500));
    for i in 500..1500 {
        // A multi-line message with a binary-unsafe byte, through the native protocol's
        // binary form: NAME\n<u64 le length><bytes>\n
        if i % 100 == 0 {
            let msg = format!("live {i}\nsecond line\u{1}");
            let mut d = Vec::new();
            d.extend_from_slice(b"MESSAGE\n");
            d.extend_from_slice(&(msg.len() as u64).to_le_bytes());
            d.extend_from_slice(msg.as_bytes());
            d.extend_from_slice(format!("\nSYSLOG_IDENTIFIER=jk-live\nSEQ={i}\n").as_bytes());
            client
                .send_to(&d, format!("/run/systemd/journal.{ns}/socket"))
                .unwrap();
        } else {
            jd.send(
                &client,
                &format!("MESSAGE=live {i}\nSYSLOG_IDENTIFIER=jk-live\nSEQ={i}\n"),
            );
        }
        if i == 1000 {
            jd.rotate();
        }
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    jd.rotate();
    for i in 1500..1600 {
        jd.send(
            &client,
            &format!("MESSAGE=after rotation {i}\nSYSLOG_IDENTIFIER=jk-live\nSEQ={i}\n"),
        );
    }
    let (entries, mine) = jd.wait_for(1600, |f| {
        f.get("SYSLOG_IDENTIFIER")
            .is_some_and(|v| v[0] == b"jk-live")
    });
    assert_eq!(mine, 1600);
    agent.wait_cursor(&cursor_of(entries.last().unwrap()), Duration::from_secs(60));
    assert!(agent.stop().success(), "{}", agent.log());

    let records = consume_all(&broker.addr(), &["live"], 4);
    let got: Vec<_> = records.iter().map(|r| r.cursor.clone()).collect();
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "no duplicates in a clean run");
    let want: BTreeSet<_> = entries.iter().map(cursor_of).collect();
    assert_eq!(
        unique, want,
        "every entry of the live journal, journald's own included"
    );
    // The multi-line binary-form messages arrived byte for byte.
    let multi = records
        .iter()
        .map(|r| decode_msgpack(&r.payload).0)
        .find(|f| f.get("SEQ").is_some_and(|v| v[0] == b"700"))
        .expect("SEQ=700 shipped");
    assert_eq!(multi["MESSAGE"][0], b"live 700\nsecond line\x01".to_vec());
}

#[test]
fn a_vacuumed_cursor_reports_the_gap_size_and_follows_the_policy() {
    let s = Scratch::new("vacuum");
    let broker = Broker::with_topic(&s, "vac", 1);
    let ns = format!("jkvac{}", std::process::id());
    let jd = Journald::start(&ns, &s.path("journald.log"));
    let client = UnixDatagram::unbound().unwrap();
    for i in 0..300 {
        jd.send(
            &client,
            &format!("MESSAGE=old {i}\nSYSLOG_IDENTIFIER=jk-vac\n"),
        );
    }
    let wait_for = |n: usize| {
        jd.wait_for(n, |f| {
            f.get("SYSLOG_IDENTIFIER")
                .is_some_and(|v| v[0] == b"jk-vac")
        })
        .0
    };
    let old = wait_for(300);
    // Pretend the agent had shipped up to the 50th entry, then was down while journald
    // rotated and vacuumed the file holding the rest.
    let saved = cursor_of(&old[50]);
    jd.rotate();
    for i in 0..100 {
        jd.send(
            &client,
            &format!("MESSAGE=new {i}\nSYSLOG_IDENTIFIER=jk-vac\n"),
        );
    }
    let all = wait_for(400);
    let st = Command::new("journalctl")
        .args(["--namespace", &ns, "--vacuum-files=1"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let left = jd.entries();
    assert!(
        left.len() < all.len() && left.len() >= 100,
        "vacuum removed the archived file ({} → {})",
        all.len(),
        left.len()
    );
    let seq = |c: &str| {
        u64::from_str_radix(c.split(';').find_map(|p| p.strip_prefix("i=")).unwrap(), 16).unwrap()
    };
    let gap = seq(&cursor_of(&left[0])) - seq(&saved) - 1;

    let state = s.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("cursor"), &saved).unwrap();
    let cfg = |policy: &str| {
        TestConfig::new(&state, &broker.addr(), &state)
            .source(Source::Namespace(ns.clone()))
            .topic("vac")
            .set("journal", "cursor_lost", policy)
    };
    let mut agent = Agent::start(&s.path("refuse"), &cfg("refuse"));
    assert!(!agent.wait(Duration::from_secs(30)).success());
    let log = agent.log();
    assert!(
        log.contains(&format!(
            "{gap} entries between it and the oldest remaining entry were never shipped"
        )),
        "gap {gap}: {log}"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("cursor")).unwrap(),
        saved
    );
    let (st, out) = run_cli(&["cursor", "show", "--config", agent.config.to_str().unwrap()]);
    assert!(
        !st.success() && out.contains(&format!("GONE from the journal ({gap} entries")),
        "{out}"
    );

    let mut agent = Agent::start(&s.path("resume"), &cfg("resume"));
    let now = jd.entries();
    agent.finish_at(&cursor_of(now.last().unwrap()));
    assert!(
        agent
            .log()
            .contains("resuming at the oldest remaining entry"),
        "{}",
        agent.log()
    );
    let records = consume(&broker.addr(), &["vac"], usize::MAX, Duration::from_secs(3));
    let got: BTreeSet<_> = records.iter().map(|r| r.cursor.clone()).collect();
    let want: BTreeSet<_> = now.iter().map(cursor_of).collect();
    assert_eq!(got, want, "every surviving entry, once");
    assert_eq!(records.len(), want.len());
}

#[test]
fn files_vacuumed_under_a_paused_reader_are_reported_as_a_gap() {
    let s = Scratch::new("vacuum-live");
    let ns = format!("jkvl{}", std::process::id());
    let jd = Journald::start(&ns, &s.path("journald.log"));
    let client = UnixDatagram::unbound().unwrap();
    let port = free_port();
    let state = s.path("state");
    // No broker yet and a tiny window: the reader stops after a few entries.
    let cfg = TestConfig::new(&state, &format!("127.0.0.1:{port}"), &state)
        .source(Source::Namespace(ns.clone()))
        .topic("vl")
        .set("pipeline", "max_in_flight_entries", 20);
    let mut agent = Agent::start(&s.path("agent"), &cfg);
    for i in 0..500 {
        jd.send(
            &client,
            &format!("MESSAGE=doomed {i}\nSYSLOG_IDENTIFIER=jk-vl\n"),
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    jd.rotate();
    for i in 0..50 {
        jd.send(
            &client,
            &format!("MESSAGE=kept {i}\nSYSLOG_IDENTIFIER=jk-vl\n"),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let st = Command::new("journalctl")
        .args(["--namespace", &ns, "--vacuum-files=1"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let left = jd.entries();
    assert!(
        left.len() < 100,
        "the archived file is gone ({} left)",
        left.len()
    );

    let broker = Broker::start_on(&s.path("broker"), port);
    agent.finish_at(&cursor_of(left.last().unwrap()));
    let log = agent.log();
    // The entries read before the pause went out; what the vacuum took is reported with
    // its size. The native reader may still hold the doomed entries in the blocks it read
    // before the vacuum deallocated the file: then they are shipped and there is no gap.
    // Either way every doomed entry is shipped or counted in the gap.
    let records = consume(&broker.addr(), &["vl"], usize::MAX, Duration::from_secs(3));
    let shipped_doomed = records
        .iter()
        .filter(|r| {
            decode_msgpack(&r.payload)
                .0
                .get("MESSAGE")
                .is_some_and(|m| m[0].starts_with(b"doomed"))
        })
        .count();
    match log
        .lines()
        .find(|l| l.contains("vanished before they could be read"))
    {
        Some(gap_line) => {
            let reported: u64 = gap_line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("gap="))
                .and_then(|g| g.parse().ok())
                .unwrap_or_else(|| panic!("gap size in {gap_line}"));
            assert!(
                reported >= (500 - shipped_doomed) as u64 - 5,
                "gap {reported} vs {} unread: {gap_line}",
                500 - shipped_doomed
            );
        }
        None => assert_eq!(
            shipped_doomed, 500,
            "no gap reported and doomed entries missing:\n{log}"
        ),
    }
    let want: BTreeSet<_> = left.iter().map(cursor_of).collect();
    let got: BTreeSet<_> = records.iter().map(|r| r.cursor.clone()).collect();
    assert!(
        want.is_subset(&got),
        "everything still in the journal was shipped"
    );
}

/// systemd 252's journald truncates the files it archives (systemd#24320, fixed in 255): a
/// reader touching the cut-off part of its mapping gets SIGBUS. Heavy writes, a rotation
/// every 300 ms and a vacuum every third rotation, with the agent restarted whenever it
/// dies the way systemd's `Restart=on-failure` would: nothing still in the journal may be
/// missing from Kafka. `JK_SIGBUS_SECS` (default 20) makes it a longer soak; the counts
/// are printed (docs/reliability.md).
#[test]
fn heavy_writes_with_rotation_and_vacuum_lose_nothing_still_in_the_journal() {
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let secs: u64 = std::env::var("JK_SIGBUS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let s = Scratch::new("sigbus");
    let broker = Broker::with_topic(&s, "bus", 1);
    let ns = format!("jkbus{}", std::process::id());
    // No rate limit: the point is load.
    let conf = PathBuf::from(format!("/etc/systemd/journald@{ns}.conf"));
    std::fs::write(&conf, "[Journal]\nRateLimitBurst=0\n").unwrap();
    let jd = Journald::start(&ns, &s.path("journald.log"));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, ns) = (stop.clone(), written.clone(), ns.clone());
        std::thread::spawn(move || {
            let client = UnixDatagram::unbound().unwrap();
            let sock = format!("/run/systemd/journal.{ns}/socket");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let msg = format!(
                    "MESSAGE=load {i} {}\nSYSLOG_IDENTIFIER=jk-bus\nSEQ={i}\n",
                    "x".repeat(200)
                );
                if client.send_to(msg.as_bytes(), &sock).is_ok() {
                    i += 1;
                }
                if i % 200 == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            written.store(i, Ordering::Relaxed);
        })
    };
    let rotations = Arc::new(AtomicU64::new(0));
    let rotator = {
        let (stop, rotations, ns) = (stop.clone(), rotations.clone(), ns.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300));
                let n = rotations.fetch_add(1, Ordering::Relaxed) + 1;
                let mut args = vec!["--namespace", &ns, "--rotate"];
                if n % 3 == 0 {
                    args.push("--vacuum-files=4");
                }
                let _ = Command::new("journalctl")
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        })
    };
    let cfg = TestConfig::new(&s.path("state"), &broker.addr(), &s.path("state"))
        .source(Source::Namespace(ns.clone()))
        .topic("bus");
    let started = Instant::now();
    let (mut starts, mut sigbus, mut other_deaths) = (1u32, 0u32, Vec::new());
    let mut agent = Agent::start(&s.path("a0"), &cfg);
    // What systemd's Restart=on-failure does, counting each death by its cause.
    let mut restart_if_dead = |agent: &mut Agent, sigbus: &mut u32, other: &mut Vec<String>| {
        if let Some(st) = agent.child.try_wait().unwrap() {
            match st.signal() {
                Some(7) => *sigbus += 1,
                _ => other.push(format!("{st}: {}", agent.log())),
            }
            *agent = Agent::start(&s.path(&format!("a{starts}")), &cfg);
            starts += 1;
        }
    };
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(100));
        restart_if_dead(&mut agent, &mut sigbus, &mut other_deaths);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    rotator.join().unwrap();
    // Let journald write the rest, then the agent catch up with the newest entry.
    std::thread::sleep(Duration::from_secs(1));
    let entries = jd.entries();
    let newest = cursor_of(entries.last().unwrap());
    let catch_up = Instant::now();
    while !agent.has_cursor(&newest) {
        restart_if_dead(&mut agent, &mut sigbus, &mut other_deaths);
        assert!(
            catch_up.elapsed() < Duration::from_secs(120),
            "the agent did not catch up: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success(), "{}", agent.log());
    let _ = std::fs::remove_file(&conf);
    assert!(
        other_deaths.is_empty(),
        "deaths other than SIGBUS: {other_deaths:?}"
    );
    // The native reader (the default) maps the files under a SIGBUS guard
    // (journal::native::map): a cut file reads as zeros there, never as a death.
    assert_eq!(sigbus, 0, "the agent died of SIGBUS {sigbus} times");
    let (lost, dups, ooo, records) = verify_idle(&agent.config, 20_000);
    println!(
        "sigbus soak: {secs} s, {} entries written, {} rotations, {} still in the journal, {records} records, agent starts {starts}, SIGBUS {sigbus}, lost {lost}, duplicates {dups}",
        written.load(Ordering::Relaxed),
        rotations.load(Ordering::Relaxed),
        entries.len()
    );
    assert_eq!((lost, ooo), (0, 0));
}

/// A small journal written fast while the brokers are away: the agent forecasts when
/// journald will start deleting what it has not shipped, says so in `/metrics`, `status`
/// and the log, and readiness turns once the forecast is below the margin.
#[test]
fn forecast_before_loss_with_a_small_journal_and_the_broker_away() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let s = Scratch::new("forecast");
    let broker = Broker::with_topic(&s, "fc", 1);
    let ns = format!("jkfc{}", std::process::id());
    let conf = PathBuf::from(format!("/etc/systemd/journald@{ns}.conf"));
    let limits = "RateLimitBurst=0\nSystemMaxUse=16M\nSystemMaxFileSize=2M\nRuntimeMaxUse=16M\nRuntimeMaxFileSize=2M\n";
    std::fs::write(&conf, format!("[Journal]\n{limits}")).unwrap();
    struct RemoveConf(PathBuf);
    impl Drop for RemoveConf {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _conf = RemoveConf(conf);
    let jd = Journald::start(&ns, &s.path("journald.log"));
    let client = UnixDatagram::unbound().unwrap();
    for i in 0..10 {
        jd.send(
            &client,
            &format!("MESSAGE=before {i}\nSYSLOG_IDENTIFIER=jk-fc\n"),
        );
    }
    let port = free_port();
    let cfg = TestConfig::new(Path::new("/nonexistent"), &broker.addr(), &s.path("state"))
        .source(Source::Namespace(ns.clone()))
        .topic("fc")
        .set("metrics", "listen", format!("127.0.0.1:{port}"))
        .set("metrics", "min_loss_forecast_seconds", 3600)
        .set("pipeline", "shutdown_timeout_ms", 2000);
    let mut agent = Agent::start(&s.path("agent"), &cfg);
    agent.wait_cursor_any(Duration::from_secs(30));

    broker.kill9();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, ns) = (stop.clone(), ns.clone());
        std::thread::spawn(move || {
            let client = UnixDatagram::unbound().unwrap();
            let sock = format!("/run/systemd/journal.{ns}/socket");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let msg = format!(
                    "MESSAGE=fill {i} {}\nSYSLOG_IDENTIFIER=jk-fc\n",
                    "y".repeat(300)
                );
                let _ = client.send_to(msg.as_bytes(), &sock);
                i += 1;
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    };
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let start = Instant::now();
    let (forecast, rate, allowed) = loop {
        let text = http_get(port, "/metrics").1;
        let f = metric(&text, "journald_kafka_loss_forecast_seconds");
        if (0.0..3600.0).contains(&f) {
            break (
                f,
                metric(&text, "journald_kafka_journal_write_rate_bytes"),
                metric(&text, "journald_kafka_journal_allowed_bytes"),
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no forecast below an hour after {:?}: {f}\n{text}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("forecast {forecast}s, write rate {rate} B/s, allowed {allowed} B");
    assert!(rate > 10_000.0, "a fast writer is measured as such: {rate}");
    assert!(
        allowed > 0.0 && allowed <= 16.0 * 1048576.0,
        "journald's SystemMaxUse=16M applies: {allowed}"
    );
    let (code, body) = http_get(port, "/health/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("forecast"), "{body}");
    let (_, out) = run_cli(&["status", "--config", agent.config.to_str().unwrap()]);
    assert!(out.contains("loss in"), "status shows the forecast: {out}");
    assert!(
        agent
            .log()
            .contains("journald is forecast to delete entries not yet shipped"),
        "{}",
        agent.log()
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    agent.stop();
    drop(jd);
}

/// Issue 27, item 1, as reproduced: unprivileged users write lines that call themselves
/// `journald-kafka` into a real journald (with `logger -t journald-kafka`, and from a copy
/// of `logger` renamed `journald-kafka` so that `_COMM` says so too). Every one of them is
/// shipped: a name a user can choose never hides a line.
#[test]
fn unprivileged_users_cannot_hide_lines_by_calling_themselves_journald_kafka() {
    let s = Scratch::new("own-hide");
    let broker = Broker::with_topic(&s, "own", 1);
    let ns = format!("jkown{}", std::process::id());
    let jd = Journald::start(&ns, &s.path("journald.log"));
    // A directory every user may enter, with logger under the agent's name.
    let bin = PathBuf::from(format!("/tmp/jk-own-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::copy("/usr/bin/logger", bin.join("journald-kafka")).unwrap();
    let dev_log = format!("/run/systemd/journal.{ns}/dev-log");
    let as_user = |uid: &str, program: &Path, args: &[&str]| {
        let st = Command::new("setpriv")
            .args(["--reuid", uid, "--regid", uid, "--clear-groups"])
            .arg(program)
            .args(args)
            .status()
            .expect("setpriv");
        assert!(st.success(), "{} as uid {uid}", program.display());
    };
    let logger = Path::new("/usr/bin/logger");
    as_user(
        "65534",
        logger,
        &[
            "-u",
            &dev_log,
            "-t",
            "journald-kafka",
            "hidden 1 (logger -t)",
        ],
    );
    as_user(
        "65534",
        &bin.join("journald-kafka"),
        &[
            "-u",
            &dev_log,
            "-t",
            "journald-kafka",
            "hidden 2 (renamed binary)",
        ],
    );
    as_user(
        "1000",
        logger,
        &[
            "-u",
            &dev_log,
            "-t",
            "journald-kafka",
            "hidden 3 (another uid)",
        ],
    );
    let (entries, n) = jd.wait_for(3, |f| {
        f.get("MESSAGE")
            .is_some_and(|m| m[0].starts_with(b"hidden "))
    });
    assert_eq!(n, 3);
    let _ = std::fs::remove_dir_all(&bin);
    let state = s.path("state");
    let cfg = TestConfig::new(&state, &broker.addr(), &state)
        .source(Source::Namespace(ns.clone()))
        .topic("own");
    let mut agent = Agent::start(&s.path("agent"), &cfg);
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    let shipped: BTreeSet<String> = consume_all(&broker.addr(), &["own"], 3)
        .iter()
        .map(|r| String::from_utf8_lossy(&decode_msgpack(&r.payload).0["MESSAGE"][0]).into_owned())
        .filter(|m| m.starts_with("hidden "))
        .collect();
    assert_eq!(
        shipped.len(),
        3,
        "every user's line reached Kafka: {shipped:?}"
    );
}
