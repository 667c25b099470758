//! AWS MSK IAM (`kafka.aws_msk_iam`), end to end without AWS: the agent takes short-lived
//! credentials from an EC2 instance metadata service (IMDSv2) served here on 127.0.0.1,
//! signs tokens with them, and presents them in SASL/OAUTHBEARER to a broker stand-in that
//! speaks just enough of the Kafka protocol to receive them (the test brokers have no
//! OAUTHBEARER). Each token received must be byte for byte what AWS's own signer
//! (tests/tools/msk_iam_token.py) builds for the same credentials, region and time, and
//! the credentials must be renewed before they expire.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// Credentials the metadata service handed out: (when, access key id, secret, session
/// token, expiry as Unix seconds).
type Issued = Arc<Mutex<Vec<(Instant, String, String, String, u64)>>>;

/// What the broker stand-in received in SaslAuthenticate: (when, the client's message).
type Received = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

const LIFETIME_S: u64 = 40;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// IMDSv2 as EC2 serves it: a session token for a PUT with the TTL header, then the role
/// and its credentials only for requests that carry that token. Each credentials request
/// gets new credentials valid `LIFETIME_S`.
fn metadata_service() -> (u16, Issued) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let issued: Issued = Arc::default();
    let log = issued.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let has_token = req.contains("X-aws-ec2-metadata-token: imds-session\r\n")
                || req
                    .to_ascii_lowercase()
                    .contains("x-aws-ec2-metadata-token: imds-session\r\n");
            let (status, body) = if req.starts_with("PUT /latest/api/token ") {
                if req
                    .to_ascii_lowercase()
                    .contains("x-aws-ec2-metadata-token-ttl-seconds:")
                {
                    (200, "imds-session".to_string())
                } else {
                    (400, String::new())
                }
            } else if !has_token {
                (401, String::new())
            } else if req.starts_with("GET /latest/meta-data/iam/security-credentials/ ") {
                (200, "agent-role".to_string())
            } else if req.starts_with("GET /latest/meta-data/iam/security-credentials/agent-role ")
            {
                let mut l = log.lock().unwrap();
                let k = l.len();
                let id = format!("ASIAMSKTEST{k:09}");
                let secret = format!("secret/{k}+{}", unix_now());
                let token = format!("session+token/{k}=={}", "x".repeat(200));
                let expires = unix_now() + LIFETIME_S;
                let exp = jiff::Timestamp::from_second(expires as i64).unwrap();
                l.push((
                    Instant::now(),
                    id.clone(),
                    secret.clone(),
                    token.clone(),
                    expires,
                ));
                let body = serde_json::json!({
                    "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": id,
                    "SecretAccessKey": secret, "Token": token, "Expiration": exp.to_string(),
                    "LastUpdated": jiff::Timestamp::now().to_string(),
                });
                (200, body.to_string())
            } else {
                (404, String::new())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, issued)
}

/// A broker stand-in: answers SaslHandshake v1 (OAUTHBEARER) and keeps what the client
/// sends in SaslAuthenticate, then refuses it (the client retries with a later token).
fn oauthbearer_receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Received = Arc::default();
    let got = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let got = got.clone();
            std::thread::spawn(move || serve_sasl(s, &got));
        }
    });
    (port, seen)
}

fn serve_sasl(mut s: TcpStream, got: &Mutex<Vec<(u64, Vec<u8>)>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
        if s.read_exact(&mut req).is_err() || req.len() < 10 {
            return;
        }
        let api_key = i16::from_be_bytes([req[0], req[1]]);
        let correlation = &req[4..8];
        let client_id_len = i16::from_be_bytes([req[8], req[9]]).max(0) as usize;
        let body = &req[10 + client_id_len..];
        let mut resp = correlation.to_vec();
        let version = i16::from_be_bytes([req[2], req[3]]);
        match api_key {
            // ApiVersions: a newer request than v0 is answered as brokers do, with
            // UNSUPPORTED_VERSION in v0's layout, and the client asks again with v0.
            18 => {
                let keys: &[(i16, i16, i16)] = if version > 0 {
                    &[(18, 0, 0)]
                } else {
                    &[(18, 0, 0), (17, 0, 1), (36, 0, 0), (3, 0, 4)]
                };
                resp.extend_from_slice(&(if version > 0 { 35i16 } else { 0 }).to_be_bytes());
                resp.extend_from_slice(&(keys.len() as i32).to_be_bytes());
                for (k, min, max) in keys {
                    for v in [k, min, max] {
                        resp.extend_from_slice(&v.to_be_bytes());
                    }
                }
            }
            // SaslHandshake: no error, OAUTHBEARER offered.
            17 => {
                resp.extend_from_slice(&0i16.to_be_bytes());
                resp.extend_from_slice(&1i32.to_be_bytes());
                resp.extend_from_slice(&11i16.to_be_bytes());
                resp.extend_from_slice(b"OAUTHBEARER");
            }
            // SaslAuthenticate: keep the bytes, refuse with SASL_AUTHENTICATION_FAILED.
            36 => {
                let n = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
                got.lock()
                    .unwrap()
                    .push((unix_now(), body[4..4 + n].to_vec()));
                resp.extend_from_slice(&58i16.to_be_bytes());
                let msg = b"received by the test";
                resp.extend_from_slice(&(msg.len() as i16).to_be_bytes());
                resp.extend_from_slice(msg);
                resp.extend_from_slice(&0i32.to_be_bytes());
            }
            _ => return,
        }
        let mut frame = (resp.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&resp);
        if s.write_all(&frame).is_err() {
            return;
        }
    }
}

fn base64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {c}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s.as_bytes() {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// What AWS's signer builds for these inputs (see tests/tools/msk_iam_token.py).
fn aws_token(id: &str, secret: &str, session: &str, time: u64) -> String {
    let dir = std::env::var("JK_MSK_SIGNER_PATH").unwrap_or_else(|_| {
        format!(
            "{}/.cache/journald-kafka/msk-signer",
            std::env::var("HOME").unwrap()
        )
    });
    let input = serde_json::json!({
        "access_key": id, "secret_key": secret, "session_token": session,
        "region": "eu-west-1", "time": time,
        "user_agent": concat!("journald-kafka/", env!("CARGO_PKG_VERSION")),
    });
    let mut child = std::process::Command::new("python3")
        .arg(root().join("tests/tools/msk_iam_token.py"))
        .env("PYTHONPATH", dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_string()
}

#[test]
fn msk_iam_tokens_from_instance_credentials_match_aws_signer_and_are_renewed_before_expiry() {
    let s = Scratch::new("msk-iam");
    let jdir = s.path("journal");
    write_journal(
        &jdir,
        "a.journal",
        &["-n", "5", "--start-usec", &recent_usec(60).to_string()],
    );
    let (imds, issued) = metadata_service();
    let (broker, seen) = oauthbearer_receiver();
    let cfg = TestConfig::new(&jdir, &format!("127.0.0.1:{broker}"), &s.path("state"))
        .set("kafka", "aws_msk_iam", true)
        .set("kafka", "aws_region", "eu-west-1")
        // The stand-in speaks plain TCP and the request versions of a 1.0 broker.
        .property("security.protocol", "sasl_plaintext")
        .property("api.version.request", false)
        .property("broker.version.fallback", "1.0.0")
        .property("reconnect.backoff.max.ms", 2000);
    let mut agent = Agent::start_with_env(
        &s.path("agent"),
        &cfg,
        &[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{imds}"),
        )],
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_EC2_METADATA_DISABLED",
        ],
    );
    // Three lifetimes of the credentials: each must be replaced before it expires.
    let run = Duration::from_secs(3 * LIFETIME_S - 10);
    let start = Instant::now();
    while start.elapsed() < run {
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            agent.child.try_wait().unwrap().is_none(),
            "the agent ended: {}",
            agent.log()
        );
    }
    // A read-back client (cat) signs in at once too, before its first poll.
    let cat_from = seen.lock().unwrap().len();
    let cat = std::process::Command::new(BIN)
        .args([
            "cat",
            "--config",
            agent.config.to_str().unwrap(),
            "--idle-ms",
            "3000",
        ])
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{imds}"),
        )
        .env_remove("AWS_ACCESS_KEY_ID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cat_pid = cat.id();
    let waited = Instant::now();
    while seen.lock().unwrap().len() == cat_from && waited.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::process::Command::new("kill")
        .arg(cat_pid.to_string())
        .status();
    let mut cat = cat;
    let _ = cat.wait();
    assert!(
        seen.lock().unwrap().len() > cat_from,
        "cat presented no token within 20 s"
    );
    agent.stop();
    let log = agent.log();
    let issued = issued.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    assert!(
        issued.len() >= 3,
        "credentials fetched {} times in {run:?}:\n{log}",
        issued.len()
    );
    for w in issued.windows(2) {
        let (at, _, _, _, _) = &w[1];
        let (before, id, _, _, expires) = &w[0];
        let renewed = unix_now() - at.elapsed().as_secs();
        assert!(
            renewed < *expires,
            "{id} (fetched {:?} into the run) expired before it was replaced",
            before.duration_since(start)
        );
    }
    // Every token the stand-in received: signed with credentials it was handed, and equal
    // to what AWS's signer builds with them at the token's own time.
    assert!(seen.len() >= 2, "tokens received: {}\n{log}", seen.len());
    let mut keys = std::collections::BTreeSet::new();
    let distinct: std::collections::BTreeSet<&Vec<u8>> = seen.iter().map(|(_, b)| b).collect();
    for bytes in distinct {
        let text = String::from_utf8(bytes.clone()).unwrap();
        let token = text
            .strip_prefix("n,,\u{1}auth=Bearer ")
            .and_then(|t| t.strip_suffix("\u{1}\u{1}"))
            .unwrap_or_else(|| panic!("not an OAUTHBEARER client message: {text:?}"));
        let url = String::from_utf8(base64url_decode(token)).unwrap();
        assert!(
            url.starts_with(
                "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        let (_, id, secret, session, _) = issued
            .iter()
            .find(|(_, id, ..)| url.contains(&format!("X-Amz-Credential={id}%2F")))
            .unwrap_or_else(|| panic!("signed with credentials nobody issued: {url}"));
        let date = url.split("X-Amz-Date=").nth(1).unwrap()[..16].to_string();
        let time = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", &date)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_second() as u64;
        assert_eq!(token, aws_token(id, secret, session, time), "{url}");
        keys.insert(id.clone());
        assert!(!log.contains(secret.as_str()) && !log.contains(session.as_str()));
        assert!(!log.contains(token), "a token in the log");
    }
    assert!(
        keys.len() >= 2,
        "tokens signed with renewed credentials: {keys:?}"
    );
    assert!(log.contains("MSK IAM: AWS credentials loaded"), "{log}");
}
