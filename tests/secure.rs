//! A secured broker (Nisshi with a TLS listener and SASL/SCRAM, issue 15): shipping with the
//! password in a file and in a systemd credential, `verify` and `cat` through the same
//! settings, each connection failure named by `check`, and `run` riding out a certificate
//! problem until it is fixed. The CA and certificates are made by openssl in the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Nisshi with users alice (SCRAM-SHA-512) and bob (SCRAM-SHA-256) and a "journal" topic,
/// restarted with authentication required and only TLS accepted.
fn secured_broker(s: &Scratch, pki: &Pki) -> Broker {
    let port = free_port();
    let plain = Broker::start_on(&s.path("broker"), port);
    plain.create_user("alice", "alice-secret", "scram512");
    plain.create_user("bob", "bob-secret", "scram256");
    plain.create_topic("journal", 2);
    plain.stop();
    drop(plain);
    Broker::start_secured(
        &s.path("broker"),
        port,
        &format!(
            "--authentication --cert {} --key {}",
            pki.cert.display(),
            pki.key.display()
        ),
    )
}

/// A scratch directory with a test PKI in `pki` and [`secured_broker`] in `broker`.
fn secured_fixture(name: &str) -> (Fixture<Broker>, Pki) {
    let f = Fixture::new(name);
    let pki = pki(&f.s.path("pki"));
    let f = f.broker_from(|s| secured_broker(s, &pki));
    (f, pki)
}

fn secured_config(
    jdir: &Path,
    broker: &Broker,
    state: &Path,
    ca: &Path,
    user: &str,
    mechanism: &str,
) -> TestConfig {
    TestConfig::new(jdir, &broker.addr(), state)
        .set("kafka", "connect_timeout_ms", 3000)
        .property("security.protocol", "sasl_ssl")
        .property("sasl.mechanisms", mechanism)
        .property("sasl.username", user)
        .property("ssl.ca.location", ca.to_str().unwrap())
}

fn secret_file(path: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

#[test]
fn ships_over_tls_and_scram_with_the_password_in_a_file_or_a_credential() {
    let (f, pki) = secured_fixture("secure-ship");
    let f = f.journal(
        "a.journal",
        &["-n", "500", "--start-usec", &recent_usec(600).to_string()],
    );
    let entries = f.entries();
    let last = cursor_of(entries.last().unwrap());

    // SCRAM-SHA-512, the password in a file.
    let pw = secret_file(&f.s.path("alice.pw"), "alice-secret\n");
    let cfg = secured_config(
        &f.jdir,
        &f.broker,
        &f.s.path("state-a"),
        &pki.ca,
        "alice",
        "SCRAM-SHA-512",
    )
    .set("kafka", "sasl_password_file", pw.to_str().unwrap());
    let path = cfg.write(&f.s.path("alice.toml"));
    let (st, out) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(st.success(), "{out}");
    assert!(
        !out.contains("alice-secret"),
        "the password is never shown: {out}"
    );
    let mut agent = Agent::start(&f.s.path("agent-a"), &cfg);
    agent.finish_at(&last);
    assert!(!agent.log().contains("alice-secret"));
    let (lost, dups, ooo, records) = verify(&agent.config);
    assert_eq!((lost, dups, ooo, records), (0, 0, 0, 500));
    // cat through the same settings.
    let (st, out) = run_cli(&[
        "cat",
        "--config",
        path.to_str().unwrap(),
        "-o",
        "json",
        "--idle-ms",
        "2000",
    ]);
    assert!(st.success(), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with('{')).count(),
        500,
        "{out}"
    );

    // SCRAM-SHA-256, the password as a systemd credential (LoadCredential=).
    let creds = f.s.path("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    secret_file(&creds.join("kafka-password"), "bob-secret");
    let cfg = secured_config(
        &f.jdir,
        &f.broker,
        &f.s.path("state-b"),
        &pki.ca,
        "bob",
        "SCRAM-SHA-256",
    )
    .set("kafka", "sasl_password_credential", "kafka-password")
    .topic("journal-b");
    let path = cfg.write(&f.s.path("bob.toml"));
    let mut run = Command::new(BIN);
    run.args(["run", "--config", path.to_str().unwrap()])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env_remove("JOURNAL_STREAM");
    let mut child = run
        .stderr(std::fs::File::create(f.s.path("bob.log")).unwrap())
        .spawn()
        .unwrap();
    let state = f.s.path("state-b").join("cursor");
    let start = Instant::now();
    while std::fs::read_to_string(&state)
        .map(|c| c.trim_end() != last)
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            std::fs::read_to_string(f.s.path("bob.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let mut verify = Command::new(BIN);
    verify
        .args([
            "verify",
            "--json",
            "--idle-ms",
            "2000",
            "--config",
            path.to_str().unwrap(),
        ])
        .env("CREDENTIALS_DIRECTORY", &creds);
    let (st, out) = run_command(verify);
    assert!(st.success(), "{out}");
    assert!(
        out.contains("\"lost\":0") && out.contains("\"records\":500"),
        "{out}"
    );
    // Without the credentials directory the config is refused, naming the key and why.
    let (st, out) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        out.contains("kafka.sasl_password_credential") && out.contains("CREDENTIALS_DIRECTORY"),
        "{out}"
    );
}

#[test]
fn each_connection_failure_is_named_and_run_rides_out_a_certificate_problem() {
    let (f, pki_good) = secured_fixture("secure-fail");
    let f = f.journal(
        "a.journal",
        &["-n", "300", "--start-usec", &recent_usec(600).to_string()],
    );
    let entries = f.entries();
    let pw = secret_file(&f.s.path("alice.pw"), "alice-secret\n");
    let good = secured_config(
        &f.jdir,
        &f.broker,
        &f.s.path("state"),
        &pki_good.ca,
        "alice",
        "SCRAM-SHA-512",
    )
    .set("kafka", "sasl_password_file", pw.to_str().unwrap());
    let check = |name: &str, cfg: &TestConfig, want: &str| {
        let path = cfg.write(&f.s.path(&format!("{name}.toml")));
        let (st, out) = run_cli(&["check", "--config", path.to_str().unwrap()]);
        assert!(!st.success(), "{name}: {out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("FAIL  kafka"))
            .unwrap_or_default();
        assert!(line.contains(want), "{name}: wanted {want:?} in {out}");
    };
    let bad_pw = secret_file(&f.s.path("bad.pw"), "not-the-password");
    check(
        "wrong-password",
        &good
            .clone()
            .set("kafka", "sasl_password_file", bad_pw.to_str().unwrap()),
        "authentication failed",
    );
    check(
        "unknown-user",
        &good.clone().property("sasl.username", "mallory"),
        "authentication failed",
    );
    let other_ca = pki(&f.s.path("other-pki"));
    check(
        "untrusted",
        &good
            .clone()
            .property("ssl.ca.location", other_ca.ca.to_str().unwrap()),
        "TLS certificate problem",
    );
    check(
        "plaintext-to-tls",
        &good.clone().property("security.protocol", "sasl_plaintext"),
        "protocol mismatch",
    );
    let plain = Broker::start(&f.s.path("plain-broker"));
    check(
        "tls-to-plaintext",
        &secured_config(
            &f.jdir,
            &plain,
            &f.s.path("state-x"),
            &pki_good.ca,
            "alice",
            "SCRAM-SHA-512",
        )
        .set("kafka", "sasl_password_file", pw.to_str().unwrap()),
        "protocol mismatch",
    );

    // run with a broker whose certificate the agent does not trust: it stays up, keeps its
    // cursor, says why once; once the broker serves a trusted certificate, it ships all.
    let trusts_other = good
        .clone()
        .property("ssl.ca.location", other_ca.ca.to_str().unwrap());
    let mut agent = Agent::start(&f.s.path("agent"), &trusts_other);
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "still running: {}",
        agent.log()
    );
    assert_eq!(agent.cursor(), None, "nothing confirmed, no cursor");
    let log = agent.log();
    assert_eq!(
        log.matches("cannot connect to the brokers: TLS certificate problem")
            .count(),
        1,
        "said once, not per retry: {log}"
    );
    // The fix: the broker now serves a certificate of the CA the agent trusts.
    f.broker.stop();
    let fixed = Broker::start_secured(
        &f.s.path("broker"),
        f.broker.port,
        &format!(
            "--authentication --cert {} --key {}",
            other_ca.cert.display(),
            other_ca.key.display()
        ),
    );
    agent.finish_at(&cursor_of(entries.last().unwrap()));
    assert!(
        agent.log().contains("the brokers answer again"),
        "{}",
        agent.log()
    );
    let (lost, dups, ooo, records) = verify(&agent.config);
    assert_eq!((lost, dups, ooo, records), (0, 0, 0, 300));
    drop(fixed);
}

/// A token endpoint on 127.0.0.1 that hands out a JWT and records what it was asked.
fn token_endpoint() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            log.lock()
                .unwrap()
                .push(format!("{head}\n{}", String::from_utf8_lossy(&body)));
            let b64 = |s: &str| {
                const T: &[u8] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let mut out = String::new();
                for chunk in s.as_bytes().chunks(3) {
                    let n = chunk
                        .iter()
                        .enumerate()
                        .fold(0u32, |a, (i, &c)| a | (c as u32) << (16 - 8 * i));
                    for i in 0..=chunk.len() {
                        out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                    }
                }
                out
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let jwt = format!(
                "{}.{}.{}",
                b64(r#"{"alg":"RS256","typ":"JWT"}"#),
                b64(&format!(
                    r#"{{"sub":"journald-kafka","exp":{},"iat":{now}}}"#,
                    now + 3600
                )),
                b64("signature")
            );
            let json =
                format!(r#"{{"access_token":"{jwt}","token_type":"bearer","expires_in":3600}}"#);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    (port, seen)
}

/// OAUTHBEARER with OIDC: librdkafka fetches a token from the token endpoint with the
/// client credentials, the client secret coming from the password file. (The test broker
/// has no OAUTHBEARER, so what is proven is the token fetch, not a login.)
#[test]
fn oidc_fetches_a_token_from_the_token_endpoint_with_the_secret_from_a_file() {
    let f = Fixture::new("secure-oidc").broker();
    let (port, seen) = token_endpoint();
    let f = f.journal(
        "a.journal",
        &["-n", "10", "--start-usec", &recent_usec(600).to_string()],
    );
    let secret = secret_file(&f.s.path("client.secret"), "oidc-client-secret\n");
    let cfg = f
        .config("state")
        .set("kafka", "connect_timeout_ms", 3000)
        .set("kafka", "sasl_password_file", secret.to_str().unwrap())
        .property("security.protocol", "sasl_plaintext")
        .property("sasl.mechanisms", "OAUTHBEARER")
        .property("sasl.oauthbearer.method", "oidc")
        .property("sasl.oauthbearer.client.id", "journald-kafka")
        .property(
            "sasl.oauthbearer.token.endpoint.url",
            format!("http://127.0.0.1:{port}/token"),
        );
    let path = cfg.write(&f.s.path("c.toml"));
    let (_, out) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty(), "no token request; check said: {out}");
    let r = &requests[0];
    assert!(r.starts_with("POST /token"), "{r}");
    assert!(r.contains("grant_type=client_credentials"), "{r}");
    let basic = r
        .lines()
        .find_map(|l| l.strip_prefix("Authorization: Basic "))
        .unwrap_or_else(|| panic!("no basic authentication in {r}"));
    assert!(!basic.trim().is_empty());
    assert!(!out.contains("oidc-client-secret"), "{out}");
}

/// The two certificate failures that need their own certificates: one that names another
/// host, one that has expired. `check` says it is the certificate, and librdkafka's words
/// say which check failed.
#[test]
fn a_misnamed_or_expired_certificate_is_named() {
    let s = Scratch::new("secure-certs");
    let pki = pki(&s.path("pki"));
    let dir = s.path("pki");
    // Names another host only.
    issue(&dir, "other", "other.example", "DNS:other.example");
    // Expired in 2020 (openssl ca sets the dates).
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::write(dir.join("db/index.txt"), "").unwrap();
    std::fs::write(dir.join("db/serial"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca=t\n[t]\ndatabase=db/index.txt\nserial=db/serial\nnew_certs_dir=db\ndefault_md=sha256\npolicy=any\ncopy_extensions=copy\n[any]\ncommonName=supplied\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "old.key",
            "-out",
            "old.csr",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    openssl(
        &dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            "old.csr",
            "-out",
            "old.pem",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
        ],
    );
    pkcs8(&dir, "old");

    let jdir = s.path("journal");
    write_journal(&jdir, "a.journal", &["-n", "10"]);
    for (name, cert, key, words) in [
        (
            "misnamed",
            "other.pem",
            "other.pk8",
            "certificate verify failed",
        ),
        ("expired", "old.pem", "old.pk8", "expired"),
    ] {
        let broker = Broker::start_secured(
            &s.path(&format!("broker-{name}")),
            free_port(),
            &format!(
                "--cert {} --key {}",
                dir.join(cert).display(),
                dir.join(key).display()
            ),
        );
        let cfg = TestConfig::new(&jdir, &broker.addr(), &s.path("state"))
            .set("kafka", "connect_timeout_ms", 3000)
            .property("security.protocol", "ssl")
            .property("ssl.ca.location", pki.ca.to_str().unwrap());
        let path = cfg.write(&s.path(&format!("{name}.toml")));
        let (st, out) = run_cli(&["check", "--config", path.to_str().unwrap()]);
        assert!(!st.success(), "{name}: {out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("FAIL  kafka"))
            .unwrap_or_default();
        assert!(
            line.contains("TLS certificate problem") && line.contains(words),
            "{name}: wanted the certificate named and {words:?}: {out}"
        );
    }
}

/// Issue 28, item 4: the Forward input's producer, given a wrong password, is named the way
/// the journal producer names it (once, not per retry), and readiness says no broker
/// answers. Before, its errors skipped `kafka::classify`: a bare "kafka client error"
/// line and a broker state that never turned.
#[test]
fn a_wrong_password_on_the_forward_producer_is_named_and_turns_readiness() {
    let (f, pki) = secured_fixture("secure-forward");
    let bad_pw = secret_file(&f.s.path("bad.pw"), "not-the-password");
    let (port, http) = (free_port(), free_port());
    let cfg = secured_config(
        &f.s.path("unused"),
        &f.broker,
        &f.s.path("state"),
        &pki.ca,
        "alice",
        "SCRAM-SHA-512",
    )
    .set("kafka", "sasl_password_file", bad_pw.to_str().unwrap())
    .set("journal", "enabled", false)
    .set("forward", "listen", format!("127.0.0.1:{port}"))
    .set("metrics", "listen", format!("127.0.0.1:{http}"));
    let mut agent = Agent::start(&f.s.path("agent"), &cfg);
    let until = Instant::now() + Duration::from_secs(20);
    while !agent
        .log()
        .contains("cannot connect to the brokers: authentication failed")
    {
        assert!(agent.child.try_wait().unwrap().is_none(), "{}", agent.log());
        assert!(Instant::now() < until, "not named: {}", agent.log());
        // A client's event makes the producer connect if nothing else does.
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            let _ = c.write_all(&[0x93, 0xa1, b't', 0x01, 0x81, 0xa1, b'a', 0x01]);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, body) = http_get(http, "/health/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no broker connection"), "{body}");
    std::thread::sleep(Duration::from_secs(3));
    let log = agent.log();
    assert_eq!(
        log.matches("cannot connect to the brokers: authentication failed")
            .count(),
        1,
        "said once: {log}"
    );
    assert!(!log.contains("s3cret") && !log.contains("not-the-password"));
    agent.stop();
}
