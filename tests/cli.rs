//! The command line against real parts: check, cursor show, refusing bad input, signals.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn config(jdir: &Path, brokers: &str, state: &Path) -> TestConfig {
    TestConfig::new(jdir, brokers, state).set("kafka", "connect_timeout_ms", 3000)
}

#[test]
fn check_reports_what_works_and_what_does_not() {
    let f = Fixture::new("check")
        .broker()
        .topic("journal", 2)
        .journal("a.journal", &["-n", "10"]);
    let first = cursor_of(&f.entries()[0]);
    let cfg = f.s.path("ok.toml");
    config(&f.jdir, &f.broker.addr(), &f.s.path("state")).write(&cfg);
    let (st, out) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(st.success(), "{out}");
    assert!(
        out.contains("ok    kafka: brokers") && out.contains("2 partition(s)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("the next entry to ship is {first}")),
        "{out}"
    );
    assert!(
        out.contains("enable.idempotence=true") && out.contains("acks=all"),
        "{out}"
    );
    // How long the journal keeps entries at its rate, against the operator's margin.
    assert!(
        out.contains("ok    retention: the journal keeps about"),
        "{out}"
    );
    let (_, out) = run_cli(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--min-journal-hours",
        "1e15",
    ]);
    assert!(
        out.contains("a broker outage longer than that loses entries"),
        "{out}"
    );

    let bad = f.s.path("bad.toml");
    config(
        &f.jdir,
        &format!("127.0.0.1:{}", free_port()),
        &f.s.path("state"),
    )
    .write(&bad);
    let (st, out) = run_cli(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        out.contains("FAIL  kafka: cannot reach the Kafka brokers"),
        "{out}"
    );

    let missing = f.s.path("missing.toml");
    config(&f.s.path("nope"), &f.broker.addr(), &f.s.path("state")).write(&missing);
    let (st, out) = run_cli(&["check", "--config", missing.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        out.contains("FAIL  journal") && out.contains("does not exist"),
        "{out}"
    );
}

#[test]
fn bad_config_refuses_to_start_naming_key_and_line() {
    let s = Scratch::new("badcfg");
    let cfg = s.path("c.toml");
    std::fs::write(
        &cfg,
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopic = \"t\"\n[kafka.properties]\n\"acks\" = \"1\"\n",
    )
    .unwrap();
    let (st, out) = run_cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!st.success());
    assert!(out.contains("kafka.properties.\"acks\" (line 5)"), "{out}");
    assert!(out.contains(cfg.to_str().unwrap()), "names the file: {out}");

    std::fs::write(
        &cfg,
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopic = \"t\"\nbatch = 5\n",
    )
    .unwrap();
    let (st, out) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!st.success());
    assert!(out.contains("batch") && out.contains("line 4"), "{out}");

    let (st, out) = run_cli(&["run", "--config", s.path("absent.toml").to_str().unwrap()]);
    assert!(!st.success());
    assert!(out.contains("cannot read config file"), "{out}");
}

#[test]
fn bad_cursor_file_refuses_to_start_and_is_left_alone() {
    let f = Fixture::new("badcursor").journal("a.journal", &["-n", "10"]);
    let state = f.s.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let cursor = state.join("cursor");
    for garbage in ["", "not a cursor", "s=zz;i=1"] {
        std::fs::write(&cursor, garbage).unwrap();
        let cfg = f.s.path("c.toml");
        config(&f.jdir, &format!("127.0.0.1:{}", free_port()), &state).write(&cfg);
        let (st, out) = run_cli(&["run", "--config", cfg.to_str().unwrap()]);
        assert!(!st.success(), "{garbage:?}: {out}");
        assert!(
            out.contains(&format!("cursor file {}", cursor.display())),
            "{out}"
        );
        assert_eq!(
            std::fs::read_to_string(&cursor).unwrap(),
            garbage,
            "the file is not touched"
        );
        let (st, out) = run_cli(&["cursor", "show", "--config", cfg.to_str().unwrap()]);
        assert!(
            !st.success() && out.contains("does not hold a journal cursor"),
            "{out}"
        );
    }
}

#[test]
fn cursor_from_another_journal_follows_the_policy() {
    let f = Fixture::new("foreign")
        .broker()
        .topic("journal", 1)
        .journal("a.journal", &["-n", "200"]);
    let other = f.s.path("other");
    write_journal(&other, "o.journal", &["-n", "5", "--seed", "77"]);
    let foreign = cursor_of(&journal_entries(&other, &[])[2]);
    let state = f.s.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("cursor"), format!("{foreign}\n")).unwrap();

    let refuse = config(&f.jdir, &f.broker.addr(), &state).set("journal", "cursor_lost", "refuse");
    let mut agent = Agent::start(&f.s.path("refuse"), &refuse);
    let st = agent.wait(Duration::from_secs(30));
    assert!(!st.success());
    let log = agent.log();
    assert!(
        log.contains("no longer in the journal") && log.contains("refuse"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("cursor")).unwrap(),
        format!("{foreign}\n")
    );

    // With "resume" it reports the gap and ships everything the journal has.
    let entries = f.entries();
    let mut agent = Agent::start(
        &f.s.path("resume"),
        &config(&f.jdir, &f.broker.addr(), &state),
    );
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    assert!(
        agent.log().contains("no longer in the journal"),
        "{}",
        agent.log()
    );
    let records = consume_all(&f.broker.addr(), &["journal"], 3);
    assert_eq!(records.len(), 200);
    let (st, out) = run_cli(&["cursor", "show", "--config", agent.config.to_str().unwrap()]);
    assert!(st.success(), "{out}");
    assert!(
        out.contains("seqnum:    200") && out.contains("still in the journal"),
        "{out}"
    );
}

#[test]
fn sigterm_under_load_saves_a_safe_cursor_and_restart_completes_the_job() {
    let f = Fixture::new("sigterm")
        .broker()
        .topic("journal", 3)
        .journal("a.journal", &["-n", "40000"]);
    let entries = f.entries();
    let state = f.s.path("state");
    // A small window so the stop happens with entries genuinely in flight.
    let cfg =
        config(&f.jdir, &f.broker.addr(), &state).set("pipeline", "max_in_flight_entries", 2000);
    let mut agent = Agent::start(&f.s.path("a1"), &cfg);
    let start = Instant::now();
    while agent.cursor().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no progress:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop_at = Instant::now();
    let st = agent.stop();
    assert!(st.success(), "{}", agent.log());
    assert!(
        stop_at.elapsed() < Duration::from_secs(11),
        "stopped within the shutdown deadline"
    );
    let saved = agent.cursor().unwrap();
    let idx = entries
        .iter()
        .position(|e| cursor_of(e) == saved)
        .expect("saved cursor is a journal entry");
    assert!(
        idx + 1 < entries.len(),
        "the stop happened mid-stream (at {idx})"
    );

    // Everything up to the saved cursor is in Kafka: the cursor never runs ahead.
    let records = consume_all(&f.broker.addr(), &["journal"], 3);
    let got: BTreeSet<_> = records.iter().map(|r| r.cursor.clone()).collect();
    let missing = entries[..=idx]
        .iter()
        .filter(|e| !got.contains(&cursor_of(e)))
        .count();
    assert_eq!(
        missing, 0,
        "entries at or before the saved cursor missing from Kafka"
    );

    let mut agent = Agent::start(&f.s.path("a2"), &cfg);
    agent.wait_cursor(
        &cursor_of(entries.last().unwrap()),
        Duration::from_secs(120),
    );
    assert!(agent.stop().success());
    let records = consume_all(&f.broker.addr(), &["journal"], 3);
    let got: BTreeSet<_> = records.iter().map(|r| r.cursor.clone()).collect();
    assert_eq!(
        got.len(),
        entries.len(),
        "lost = {}",
        entries.len() - got.len()
    );
    let duplicates = records.len() - got.len();
    // A clean stop settles everything in flight before saving, so a restart resends nothing.
    assert_eq!(duplicates, 0, "duplicates after a clean stop");
}

#[test]
fn a_second_signal_exits_at_once_without_moving_the_cursor() {
    let f = Fixture::new("twice").journal("a.journal", &["-n", "500"]);
    let state = f.s.path("state");
    // No broker: nothing can be confirmed, so the first SIGTERM waits for the deadline.
    let cfg = config(&f.jdir, &format!("127.0.0.1:{}", free_port()), &state).set(
        "pipeline",
        "shutdown_timeout_ms",
        30000,
    );
    let mut agent = Agent::start(&f.s.path("a"), &cfg);
    std::thread::sleep(Duration::from_secs(2));
    agent.signal("-TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "still waiting for confirmations"
    );
    let t = Instant::now();
    agent.signal("-INT");
    let st = agent.wait(Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "second signal exits at once"
    );
    assert_eq!(st.code(), Some(130));
    assert_eq!(agent.cursor(), None, "nothing was confirmed, so no cursor");
}

/// As an unprivileged user (root may write anywhere, so as root this proves nothing): a
/// state directory the agent cannot write stops `run` at start and fails `check`'s line.
#[test]
fn a_state_directory_it_cannot_write_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    // Everything the unprivileged user needs lives under /tmp: the checkout may sit in a
    // directory other users cannot enter.
    let dir = std::path::PathBuf::from(format!("/tmp/jk-unpriv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    for d in [&dir, &dir.join("state")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bin = dir.join("journald-kafka");
    std::fs::copy(BIN, &bin).unwrap();
    let cfg = TestConfig::new(&dir.join("journal"), "127.0.0.1:1", &dir.join("state"))
        .write(&dir.join("config.toml"));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let as_nobody = |args: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(args);
        run_command(cmd)
    };
    let (st, out) = as_nobody(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!st.success(), "{out}");
    assert!(
        out.contains(&format!(
            "state directory {} is not writable",
            dir.join("state").display()
        )),
        "{out}"
    );
    let (st, out) = as_nobody(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(!st.success(), "{out}");
    assert!(out.contains("FAIL  state directory"), "{out}");
    // The setups that lose entries quietly are named: a user outside systemd-journal, and
    // a systemd that truncates archived files (the warning follows the installed version).
    assert!(
        out.contains("warn  journal: this user is in neither systemd-journal nor adm"),
        "{out}"
    );
    let version = std::process::Command::new("journalctl")
        .arg("--version")
        .output()
        .unwrap();
    let v: u32 = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next()?.parse().ok())
        .unwrap();
    // The native reader (the default) guards against it; libsystemd's reader does not.
    assert!(!out.contains("systemd#24320"), "{out}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let lib = dir.join("libsystemd.toml");
    std::fs::write(
        &lib,
        text.replacen("[journal]\n", "[journal]\nreader = \"libsystemd\"\n", 1),
    )
    .unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, out) = as_nobody(&["check", "--config", lib.to_str().unwrap()]);
    assert_eq!(out.contains("systemd#24320"), v < 255, "systemd {v}: {out}");
}

/// Issue 27, item 5, as reproduced: an unclosed quote on the inline password's line made
/// `check` (and `run`, whose errors reach the journal it ships) print the password, since
/// the TOML parser quotes the offending line. Now the line and the key are named and the
/// text is not.
#[test]
fn a_typo_on_the_password_line_never_prints_the_password() {
    let s = Scratch::new("secret-typo");
    let cfg = s.path("c.toml");
    let secret = "Hunter2-S3cretPassw0rd";
    for (text, line, key) in [
        (
            format!(
                "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopic = \"t\"\n[kafka.properties]\n\"sasl.password\" = \"{secret}\n\"acks\" = \"all\"\n"
            ),
            "line 5",
            "sasl.password",
        ),
        (
            format!(
                "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopic = \"t\"\n[kafka.properties]\n\"sasl.password\" = {secret}\n"
            ),
            "line 5",
            "sasl.password",
        ),
        (
            format!(
                "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopic = \"t\"\nproperties = {{ \"sasl.password\" = \"{secret} }}\n"
            ),
            "line 4",
            "properties",
        ),
    ] {
        std::fs::write(&cfg, &text).unwrap();
        for cmd in ["check", "run"] {
            let (st, out) = run_cli(&[cmd, "--config", cfg.to_str().unwrap()]);
            assert!(!st.success(), "{cmd}: {out}");
            assert!(
                !out.contains("Hunter2"),
                "{cmd} printed the password: {out}"
            );
            assert!(out.contains(line) && out.contains(key), "{cmd}: {out}");
        }
    }
}
