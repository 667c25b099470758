//! The AWS credential chain, in the AWS SDKs' order: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, exchanged at STS: EKS service accounts),
//! the ECS container endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`: ECS
//! tasks, EKS Pod Identity), and the EC2 instance metadata service (IMDSv2).
//!
//! The first provider that is configured decides: one that is configured but fails (a
//! missing token file, STS refusing the role) is an error, not a reason to try the next,
//! which would sign with another identity than the one the user set up. The instance
//! metadata service counts as configured unless `AWS_EC2_METADATA_DISABLED=true`.
//!
//! The environment is read through a lookup function (`Env`) so tests can pass a map.
//! Errors name the provider, the variable, file or endpoint and what went wrong, never a
//! secret: not a key, not a token, not a body holding them.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use super::http::{self, Request};
use super::{Credentials, uri_encode};

/// Reads one environment variable: `process_env` in the agent, a map in tests.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment, for `load`.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The metadata services are on the same host or link: they answer in milliseconds or not
/// at all (the IMDS address is unreachable off EC2, and this is the last provider tried).
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// STS is across the Internet.
const STS_TIMEOUT: Duration = Duration::from_secs(10);
const ECS_ENDPOINT: &str = "http://169.254.170.2";
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// With `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`, as in the SDKs.
const IMDS_ENDPOINT_IPV6: &str = "http://[fd00:ec2::254]";
/// How long an IMDSv2 session token is asked for: the SDKs' value (the maximum).
const IMDS_TOKEN_TTL: &str = "21600";

/// A variable as the SDKs read it: unset and empty are the same.
fn var(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// Credentials from the first configured provider. `region` is where STS is asked for
/// web identity credentials.
pub(crate) fn load(env: Env<'_>, region: &str) -> Result<Credentials> {
    if let Some(c) = environment(env)? {
        return Ok(c);
    }
    if let Some(c) = web_identity(env, region)? {
        return Ok(c);
    }
    if let Some(c) = container(env)? {
        return Ok(c);
    }
    if let Some(c) = instance_metadata(env)? {
        return Ok(c);
    }
    bail!(
        "no AWS credentials: none of AWS_ACCESS_KEY_ID, AWS_WEB_IDENTITY_TOKEN_FILE, \
         AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI is set, \
         and AWS_EC2_METADATA_DISABLED turns the instance metadata service off"
    )
}

fn environment(env: Env<'_>) -> Result<Option<Credentials>> {
    let (id, secret) = match (
        var(env, "AWS_ACCESS_KEY_ID"),
        var(env, "AWS_SECRET_ACCESS_KEY"),
    ) {
        (None, None) => return Ok(None),
        (Some(id), Some(secret)) => (id, secret),
        (Some(_), None) => {
            bail!(
                "environment credentials: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"
            )
        }
        (None, Some(_)) => {
            bail!(
                "environment credentials: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"
            )
        }
    };
    Ok(Some(Credentials {
        access_key_id: id,
        secret_access_key: secret,
        session_token: var(env, "AWS_SESSION_TOKEN"),
        expires: None,
    }))
}

fn web_identity(env: Env<'_>, region: &str) -> Result<Option<Credentials>> {
    let Some(file) = var(env, "AWS_WEB_IDENTITY_TOKEN_FILE") else {
        return Ok(None);
    };
    let role = var(env, "AWS_ROLE_ARN").context(
        "web identity credentials: AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not",
    )?;
    assume_role_with_web_identity(env, region, &file, &role)
        .map(Some)
        .with_context(|| format!("web identity credentials for {role}"))
}

/// STS `AssumeRoleWithWebIdentity`: an unsigned call, the token file's JWT is the proof.
fn assume_role_with_web_identity(
    env: Env<'_>,
    region: &str,
    file: &str,
    role: &str,
) -> Result<Credentials> {
    // Read at every call: the orchestrator rotates the file.
    let jwt = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let session = var(env, "AWS_ROLE_SESSION_NAME").unwrap_or_else(default_session_name);
    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role),
        ("RoleSessionName", session.as_str()),
        ("WebIdentityToken", jwt.trim()),
    ];
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{k}={}", uri_encode(v)))
        .collect();
    let url = sts_endpoint(env, region);
    let ca_file = var(env, "AWS_CA_BUNDLE");
    let answer = http::request(&Request {
        method: "POST",
        url: &url,
        headers: &[("Content-Type", "application/x-www-form-urlencoded")],
        body: body.join("&").as_bytes(),
        timeout: STS_TIMEOUT,
        ca_file: ca_file.as_deref(),
    })
    .with_context(|| format!("calling STS at {url}"))?;
    sts_credentials(answer.status, &String::from_utf8_lossy(&answer.body))
}

/// Like the SDKs: a name that tells the role's CloudTrail entries where they came from.
fn default_session_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("journald-kafka-{secs}")
}

/// `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL` (the SDKs' overrides), else the
/// regional endpoint.
fn sts_endpoint(env: Env<'_>, region: &str) -> String {
    var(env, "AWS_ENDPOINT_URL_STS")
        .or_else(|| var(env, "AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| {
            let domain = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://sts.{region}.{domain}/")
        })
}

/// Credentials from STS's XML answer, or its error code and message.
fn sts_credentials(status: u16, xml: &str) -> Result<Credentials> {
    if !(200..300).contains(&status) {
        // STS's own words (a code such as InvalidIdentityToken and a sentence): no secret
        // is in them, and they say what to fix.
        let code = tag(xml, "Code").unwrap_or_default();
        let message: String = tag(xml, "Message")
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        bail!("STS answered HTTP {status}: {code} {message}");
    }
    let field = |name: &str| tag(xml, name).ok_or_else(|| anyhow!("STS's answer has no {name}"));
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
        expires: Some(rfc3339(&field("Expiration")?)?),
    })
}

/// The text of the first `<name>…</name>`, entities decoded: enough for STS's fixed answer
/// (these elements have no attributes, no CDATA, no children).
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(unescape(xml[start..start + len].trim()))
}

fn unescape(s: &str) -> String {
    // `&amp;` last, so that `&amp;lt;` becomes `&lt;` and not `<`.
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn container(env: Env<'_>) -> Result<Option<Credentials>> {
    let Some(url) = container_url(env)? else {
        return Ok(None);
    };
    container_credentials(env, &url)
        .map(Some)
        .with_context(|| format!("container credentials from {url}"))
}

/// The container endpoint: the relative URI on the ECS agent's address (it wins, as in the
/// SDKs), else the full URI, which over plain http must stay on this host or the ECS/EKS
/// link-local addresses, since the authorization token goes with it.
fn container_url(env: Env<'_>) -> Result<Option<String>> {
    if let Some(relative) = var(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        // A path only: "x.example/…" or ":8080/…" would move the request (and the
        // authorization token with it) to another host or port.
        if !relative.starts_with('/') {
            bail!(
                "container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must be a path starting with '/'"
            );
        }
        return Ok(Some(format!("{ECS_ENDPOINT}{relative}")));
    }
    let Some(full) = var(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI") else {
        return Ok(None);
    };
    let url = http::parse_url(&full)
        .context("container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI")?;
    let allowed = url.tls
        || [
            "localhost",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::23",
        ]
        .contains(&url.host.as_str())
        || url.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !allowed {
        bail!(
            "container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI {full:?} is plain http \
             to a host other than this one or the ECS/EKS agent's address"
        );
    }
    Ok(Some(full))
}

fn container_credentials(env: Env<'_>, url: &str) -> Result<Credentials> {
    let authorization = container_authorization(env)?;
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|a| ("Authorization", a.as_str()))
        .collect();
    // A full URI may be https (the loopback rule is for plain http).
    let ca_file = var(env, "AWS_CA_BUNDLE");
    let body = http::request(&Request {
        method: "GET",
        url,
        headers: &headers,
        body: b"",
        timeout: METADATA_TIMEOUT,
        ca_file: ca_file.as_deref(),
    })?
    .success()?;
    json_credentials(&body)
}

/// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (EKS Pod Identity; read at every call, it is
/// rotated), else `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
fn container_authorization(env: Env<'_>) -> Result<Option<String>> {
    if let Some(file) = var(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        let token = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
        return Ok(Some(token.trim().to_owned()));
    }
    Ok(var(env, "AWS_CONTAINER_AUTHORIZATION_TOKEN"))
}

fn instance_metadata(env: Env<'_>) -> Result<Option<Credentials>> {
    let disabled = var(env, "AWS_EC2_METADATA_DISABLED");
    if disabled.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let ipv6 = var(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
        .is_some_and(|m| m.eq_ignore_ascii_case("ipv6"));
    let fallback = if ipv6 {
        IMDS_ENDPOINT_IPV6
    } else {
        IMDS_ENDPOINT
    };
    let endpoint =
        var(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| fallback.to_owned());
    let endpoint = endpoint.trim_end_matches('/');
    imds(endpoint)
        .map(Some)
        .with_context(|| format!("EC2 instance metadata service at {endpoint}"))
}

/// IMDSv2: a session token (PUT), then the instance profile's role name, then its
/// credentials, each GET carrying the token. No fallback to IMDSv1.
fn imds(endpoint: &str) -> Result<Credentials> {
    let token = http::request(&Request {
        method: "PUT",
        url: &format!("{endpoint}/latest/api/token"),
        headers: &[("X-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL)],
        body: b"",
        timeout: METADATA_TIMEOUT,
        ca_file: None,
    })
    .and_then(http::Response::success)
    .context(
        "getting an IMDSv2 session token (from a container, the instance's hop limit must \
         be 2 or more)",
    )?;
    let token = String::from_utf8(token).context("the IMDSv2 session token is not text")?;
    let get = |path: &str| {
        http::request(&Request {
            method: "GET",
            url: &format!("{endpoint}/latest/meta-data/iam/security-credentials/{path}"),
            headers: &[("X-aws-ec2-metadata-token", token.trim())],
            body: b"",
            timeout: METADATA_TIMEOUT,
            ca_file: None,
        })
        .and_then(http::Response::success)
    };
    let roles = get("").context("listing the instance profile's role (is one attached?)")?;
    let roles = String::from_utf8_lossy(&roles);
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .context("the instance has no IAM role attached")?;
    // IAM role names are [\w+=,.@-]: anything else would change the path.
    let role_like = role
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if !role_like {
        bail!("the role name {role:?} is not an IAM role name");
    }
    let body = get(role).with_context(|| format!("reading the credentials of role {role}"))?;
    json_credentials(&body)
}

/// Credentials from the JSON the ECS endpoint and IMDS answer with.
fn json_credentials(body: &[u8]) -> Result<Credentials> {
    // serde_json's messages may quote the input: keep only where it failed.
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        anyhow!(
            "the answer is not JSON credentials ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    // IMDS says "Success" when it has credentials; the ECS endpoint has no Code.
    if let Some(code) = text("Code").filter(|c| c != "Success") {
        bail!("the answer's Code is {code:?}");
    }
    let required = |name: &str| text(name).ok_or_else(|| anyhow!("the answer has no {name}"));
    Ok(Credentials {
        access_key_id: required("AccessKeyId")?,
        secret_access_key: required("SecretAccessKey")?,
        session_token: text("Token"),
        expires: text("Expiration").as_deref().map(rfc3339).transpose()?,
    })
}

fn rfc3339(s: &str) -> Result<SystemTime> {
    let t = s
        .parse::<jiff::Timestamp>()
        .with_context(|| format!("the expiration {s:?} is not an RFC 3339 time"))?;
    Ok(SystemTime::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// 2030-01-01T00:00:00Z.
    const EXPIRATION: &str = "2030-01-01T00:00:00Z";
    const EXPIRATION_S: u64 = 1_893_456_000;

    /// What the test server saw of one request.
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// An HTTP server on 127.0.0.1 answering every request with `answer` (status, body),
    /// one request per connection like the client sends; its base URL and what it saw.
    fn serve(answer: impl Fn(&Seen) -> (u16, String) + Send + 'static) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let log: Log = Arc::default();
        let seen = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let (status, body) = answer(&request);
                seen.lock().expect("log").push(request);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (base, log)
    }

    fn read_request(stream: &TcpStream) -> Option<Seen> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut words = line.split_whitespace();
        let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let seen = Seen {
            method,
            path,
            headers,
            body: String::new(),
        };
        let length = seen
            .header("Content-Length")
            .and_then(|v| v.parse::<usize>().ok());
        let mut body = vec![0; length.unwrap_or(0)];
        reader.read_exact(&mut body).ok()?;
        Some(Seen {
            body: String::from_utf8_lossy(&body).into_owned(),
            ..seen
        })
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load_from(map: &HashMap<String, String>) -> Result<Credentials> {
        load(&|k: &str| map.get(k).cloned(), "eu-west-1")
    }

    fn creds_json(id: &str, secret: &str, token: &str) -> String {
        format!(
            r#"{{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"{id}","SecretAccessKey":"{secret}","Token":"{token}","Expiration":"{EXPIRATION}"}}"#
        )
    }

    /// An IMDSv2 double: the token only for a PUT with the TTL header, and nothing without
    /// the token, as the real service does.
    fn imds_server() -> (String, Log) {
        serve(|r| {
            let token_ok = r.header("X-aws-ec2-metadata-token") == Some("imds-session-token");
            match (r.method.as_str(), r.path.as_str()) {
                ("PUT", "/latest/api/token")
                    if r.header("X-aws-ec2-metadata-token-ttl-seconds") == Some("21600") =>
                {
                    (200, "imds-session-token".to_owned())
                }
                ("GET", _) if !token_ok => (401, String::new()),
                ("GET", "/latest/meta-data/iam/security-credentials/") => {
                    (200, "shipper-role\n".to_owned())
                }
                ("GET", "/latest/meta-data/iam/security-credentials/shipper-role") => {
                    (200, creds_json("ASIAIMDS", "imds-secret", "imds-token"))
                }
                _ => (404, String::new()),
            }
        })
    }

    #[test]
    fn imds_v2_gets_a_session_token_then_the_role_then_its_credentials() {
        let (base, log) = imds_server();
        let c = load_from(&env(&[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            base.as_str(),
        )]))
        .expect("creds");
        assert_eq!(c.access_key_id, "ASIAIMDS");
        assert_eq!(c.secret_access_key, "imds-secret");
        assert_eq!(c.session_token.as_deref(), Some("imds-token"));
        assert_eq!(
            c.expires,
            Some(UNIX_EPOCH + Duration::from_secs(EXPIRATION_S))
        );
        let seen: Vec<String> = log
            .lock()
            .expect("log")
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            seen,
            [
                "PUT /latest/api/token",
                "GET /latest/meta-data/iam/security-credentials/",
                "GET /latest/meta-data/iam/security-credentials/shipper-role",
            ]
        );
    }

    #[test]
    fn imds_without_a_role_says_so_without_secrets() {
        let (base, _) = serve(|r| match r.method.as_str() {
            "PUT" => (200, "imds-session-token".to_owned()),
            _ => (404, String::new()),
        });
        let err = load_from(&env(&[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            base.as_str(),
        )]))
        .expect_err("no role");
        let text = format!("{err:#}");
        assert!(text.contains("EC2 instance metadata service"), "{text}");
        assert!(text.contains("role"), "{text}");
        assert!(text.contains("404"), "{text}");
        assert!(!text.contains("imds-session-token"), "{text}");
    }

    #[test]
    fn environment_credentials_win_over_the_metadata_service() {
        let (base, log) = imds_server();
        let c = load_from(&env(&[
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", base.as_str()),
        ]))
        .expect("creds");
        assert_eq!(c.access_key_id, "AKIAENV");
        assert_eq!(c.secret_access_key, "env-secret");
        assert_eq!(c.session_token.as_deref(), Some("env-token"));
        assert_eq!(c.expires, None);
        assert!(log.lock().expect("log").is_empty(), "IMDS was asked");
    }

    #[test]
    fn half_set_environment_credentials_are_an_error_not_a_fallback() {
        let (base, log) = imds_server();
        let err = load_from(&env(&[
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", base.as_str()),
        ]))
        .expect_err("incomplete");
        assert!(
            format!("{err:#}").contains("AWS_SECRET_ACCESS_KEY"),
            "{err:#}"
        );
        assert!(log.lock().expect("log").is_empty(), "IMDS was asked");
    }

    #[test]
    fn container_full_uri_sends_the_authorization_token() {
        let (base, log) = serve(|r| match r.header("Authorization") {
            Some("container-auth") => (200, creds_json("ASIAECS", "ecs-secret", "ecs-token")),
            _ => (401, String::new()),
        });
        let uri = format!("{base}/v1/credentials");
        let c = load_from(&env(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-auth"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]))
        .expect("creds");
        assert_eq!(c.access_key_id, "ASIAECS");
        assert_eq!(c.session_token.as_deref(), Some("ecs-token"));
        let seen = log.lock().expect("log");
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("GET", "/v1/credentials")
        );
    }

    #[test]
    fn container_authorization_token_file_wins_and_is_trimmed() {
        let (base, _) = serve(|r| match r.header("Authorization") {
            Some("from-file") => (200, creds_json("ASIAPOD", "pod-secret", "pod-token")),
            _ => (401, String::new()),
        });
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(b"from-file\n").expect("write");
        let path = file.path().to_str().expect("utf-8 path").to_owned();
        let c = load_from(&env(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", base.as_str()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", path.as_str()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "not-this-one"),
        ]))
        .expect("creds");
        assert_eq!(c.access_key_id, "ASIAPOD");
    }

    #[test]
    fn container_relative_uri_goes_to_the_ecs_agent() {
        let map = env(&[
            (
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/abc",
            ),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/x"),
        ]);
        let url = container_url(&|k: &str| map.get(k).cloned()).expect("url");
        assert_eq!(
            url.as_deref(),
            Some("http://169.254.170.2/v2/credentials/abc")
        );
    }

    #[test]
    fn container_full_uri_over_http_must_stay_local() {
        for ok in [
            "http://127.0.0.1:8080/c",
            "http://localhost/c",
            "http://[::1]/c",
            "http://169.254.170.23/v1/credentials",
            "https://creds.example.com/c",
        ] {
            let map = env(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", ok)]);
            let url = container_url(&|k: &str| map.get(k).cloned());
            assert!(url.is_ok(), "{ok} refused: {url:?}");
        }
        for refused in ["http://10.0.0.1/c", "http://creds.example.com/c"] {
            let map = env(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", refused)]);
            assert!(
                container_url(&|k: &str| map.get(k).cloned()).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn web_identity_exchanges_the_token_file_at_sts() {
        let (base, log) = serve(|r| {
            let ok = r.method == "POST"
                && r.header("Content-Type") == Some("application/x-www-form-urlencoded")
                && r.body.contains("Action=AssumeRoleWithWebIdentity")
                && r.body.contains("Version=2011-06-15")
                && r.body
                    .contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fshipper")
                && r.body.contains("RoleSessionName=node-7")
                && r.body
                    .contains("WebIdentityToken=eyJhbGciOi.eyJzdWIiOi.c2ln");
            if !ok {
                return (400, String::new());
            }
            let xml = format!(
                "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n\
                 <AssumeRoleWithWebIdentityResult>\n<Credentials>\n\
                 <SessionToken>sts-token&amp;more</SessionToken>\n\
                 <SecretAccessKey>sts-secret</SecretAccessKey>\n\
                 <Expiration>{EXPIRATION}</Expiration>\n\
                 <AccessKeyId>ASIASTS</AccessKeyId>\n\
                 </Credentials>\n</AssumeRoleWithWebIdentityResult>\n\
                 </AssumeRoleWithWebIdentityResponse>"
            );
            (200, xml)
        });
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(b"eyJhbGciOi.eyJzdWIiOi.c2ln\n")
            .expect("write");
        let path = file.path().to_str().expect("utf-8 path").to_owned();
        let c = load_from(&env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", path.as_str()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/shipper"),
            ("AWS_ROLE_SESSION_NAME", "node-7"),
            ("AWS_ENDPOINT_URL_STS", base.as_str()),
        ]))
        .expect("creds");
        assert_eq!(c.access_key_id, "ASIASTS");
        assert_eq!(c.secret_access_key, "sts-secret");
        assert_eq!(c.session_token.as_deref(), Some("sts-token&more"));
        assert_eq!(
            c.expires,
            Some(UNIX_EPOCH + Duration::from_secs(EXPIRATION_S))
        );
        assert_eq!(log.lock().expect("log").len(), 1);
    }

    #[test]
    fn sts_refusal_names_its_code_and_message() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
                   <Message>Couldn't retrieve verification key</Message></Error></ErrorResponse>";
        let err = sts_credentials(400, xml).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "STS answered HTTP 400: InvalidIdentityToken Couldn't retrieve verification key"
        );
    }

    #[test]
    fn web_identity_without_its_file_is_an_error() {
        let err = load_from(&env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/shipper"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]))
        .expect_err("no file");
        let text = format!("{err:#}");
        assert!(text.contains("web identity"), "{text}");
        assert!(text.contains("/nonexistent/token"), "{text}");
    }

    #[test]
    fn nothing_configured_names_what_to_set() {
        let err = load_from(&env(&[("AWS_EC2_METADATA_DISABLED", "TRUE")])).expect_err("none");
        let text = format!("{err:#}");
        assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
        assert!(text.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{text}");
    }

    #[test]
    fn a_bad_answer_never_puts_the_secret_in_the_error() {
        let body = r#"{"AccessKeyId":"ASIAX","SecretAccessKey":"very-secret","Token":"tok-secret","Expiration":"soon"}"#;
        let (base, _) = serve(move |_| (200, body.to_owned()));
        let err = load_from(&env(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            base.as_str(),
        )]))
        .expect_err("bad expiration");
        let text = format!("{err:#} {err:?}");
        assert!(text.contains("soon"), "{text}");
        assert!(
            !text.contains("very-secret") && !text.contains("tok-secret"),
            "{text}"
        );

        // Malformed JSON: the error says where, not what (serde_json's messages may quote).
        let err = json_credentials(br#"{"AccessKeyId":"ASIAX","SecretAccessKey":"very-secret""#)
            .expect_err("truncated");
        assert!(!format!("{err:#}").contains("very-secret"), "{err:#}");
    }

    #[test]
    fn imds_code_other_than_success_is_an_error() {
        let err =
            json_credentials(br#"{"Code":"AssumeRoleUnauthorizedAccess"}"#).expect_err("refused");
        assert!(
            err.to_string().contains("AssumeRoleUnauthorizedAccess"),
            "{err}"
        );
    }

    #[test]
    fn xml_tags_are_found_and_unescaped() {
        let xml = "<a><Key> x&lt;y&amp;lt; </Key><Key>second</Key></a>";
        assert_eq!(tag(xml, "Key").as_deref(), Some("x<y&lt;"));
        assert_eq!(tag(xml, "Missing"), None);
        assert_eq!(tag("<Key>unclosed", "Key"), None);
    }
}
