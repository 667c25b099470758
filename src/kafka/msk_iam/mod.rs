//! AWS MSK IAM authentication: the token an MSK broker takes as the SASL/OAUTHBEARER
//! credential, and the AWS credentials it is signed with (`credentials`: the environment,
//! web identity through STS, the ECS container endpoint, the EC2 instance metadata service).
//!
//! The token is a SigV4-presigned `kafka-cluster:Connect` request to
//! `https://kafka.{region}.amazonaws.com/` (valid 900 s), base64url-encoded without
//! padding: byte for byte what AWS's own signer (`aws-msk-iam-sasl-signer-python`) builds
//! for the same credentials, region, time and user agent. The tests pin that with vectors
//! the signer produced (`tests/tools/msk_iam_token.py`; the algorithm, read from its
//! source, is in `docs/msk-iam-notes.md`).
//!
//! It must never log a secret or put one in an error: not the secret access key, not the
//! session token, and not a token (a bearer credential for its 15 minutes, carrying the
//! session token in clear). Errors say which step failed and why, without the values.
//! `Credentials`' `Debug` shows the access key id (it is in every token in clear) and the
//! expiry only.

pub(crate) mod credentials;
mod http;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// How long a token is valid after it is signed (`X-Amz-Expires`, the signer's value).
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

const SERVICE: &str = "kafka-cluster";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// SHA-256 of the empty body: botocore signs the (empty) payload of a presigned https GET
/// rather than writing `UNSIGNED-PAYLOAD`, and the broker checks what botocore signs.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// AWS credentials, from `credentials::load`.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
    /// When temporary credentials stop working; `None` for long-term keys.
    pub(crate) expires: Option<SystemTime>,
}

impl Credentials {
    /// Whether these credentials end within `margin` of `now`: fetch new ones before signing,
    /// since a token cannot outlive the credentials it was signed with.
    pub(crate) fn expiring(&self, now: SystemTime, margin: Duration) -> bool {
        // Already past (`duration_since` fails) counts as expiring.
        self.expires
            .is_some_and(|e| !e.duration_since(now).is_ok_and(|left| left > margin))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

/// The MSK IAM token for `creds` in `region` at `now`, and when it expires (ms since the
/// epoch, whole seconds as the signer computes it). `user_agent` goes into the token
/// unsigned, after the signature, as the signer puts its own: the tests pass the signer's,
/// the agent `journald-kafka/<version>`. `region` must be a region name
/// (`credentials::region_from` checks it): it goes into a host name unescaped.
///
/// Fails only if OpenSSL cannot compute an HMAC.
pub(crate) fn token(
    creds: &Credentials,
    region: &str,
    now: SystemTime,
    user_agent: &str,
) -> Result<(String, i64)> {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (date, amz_date) = amz_date(secs);
    let scope = format!("{date}/{region}/{SERVICE}/aws4_request");
    let mut params = vec![
        ("Action", "kafka-cluster:Connect".to_owned()),
        ("X-Amz-Algorithm", ALGORITHM.to_owned()),
        (
            "X-Amz-Credential",
            format!("{}/{scope}", creds.access_key_id),
        ),
        ("X-Amz-Date", amz_date.clone()),
        ("X-Amz-Expires", TOKEN_LIFETIME.as_secs().to_string()),
        ("X-Amz-SignedHeaders", "host".to_owned()),
    ];
    // Signed like the other parameters; botocore adds it whenever the token is not None.
    if let Some(t) = &creds.session_token {
        params.push(("X-Amz-Security-Token", t.clone()));
    }
    let host = format!("kafka.{region}.amazonaws.com");
    let canonical = canonical_request(
        "/",
        &canonical_query(&params),
        &host.to_ascii_lowercase(),
        EMPTY_SHA256,
    );
    let key = signing_key(&creds.secret_access_key, &date, region, SERVICE)?;
    let to_sign = string_to_sign(&amz_date, &scope, &canonical);
    let signature = hex(&hmac(&key, to_sign.as_bytes())?);
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v)))
        .collect();
    let url = format!(
        "https://{host}/?{}&X-Amz-Signature={signature}&User-Agent={}",
        query.join("&"),
        form_encode(user_agent)
    );
    let expiry_s = secs.saturating_add(TOKEN_LIFETIME.as_secs());
    let expiry_ms = i64::try_from(expiry_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    Ok((base64url(url.as_bytes()), expiry_ms))
}

/// New credentials are fetched this long before the cached ones expire (the SDKs refresh
/// 5-15 minutes ahead): a token must not outlive what signed it, and a token is valid 15
/// minutes.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(15 * 60);

/// The credentials last loaded, shared by every client of the process (the producers, the
/// offsets reader, the admin client all sign as the same identity): one load per
/// refresh for all of them rather than one per client.
static CACHE: std::sync::Mutex<Option<Credentials>> = std::sync::Mutex::new(None);

/// librdkafka's token callback for every client the agent makes (`kafka::client::AuthContext`
/// and the other contexts call it). `config` is the client's `sasl.oauthbearer.config`:
/// `config::properties::msk_iam` puts the region there. Runs on the thread that polls the
/// client; a credential load can take the metadata services' timeout (2 s) there.
pub(crate) fn oauth_token(
    config: Option<&str>,
) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
    let Some(region) =
        config.and_then(|c| c.strip_prefix(crate::config::properties::MSK_IAM_CONFIG))
    else {
        return Err("OAUTHBEARER tokens come from OIDC (sasl.oauthbearer.method = \"oidc\") or kafka.aws_msk_iam; neither is configured".into());
    };
    let now = SystemTime::now();
    let creds = credentials_at(now, region).map_err(|e| {
        tracing::warn!(error = %format!("{e:#}"), "MSK IAM: no AWS credentials to sign a token with; librdkafka retries in 10 s");
        format!("MSK IAM: {e:#}")
    })?;
    let user_agent = concat!("journald-kafka/", env!("CARGO_PKG_VERSION"));
    let (token, expiry_ms) =
        token(&creds, region, now, user_agent).map_err(|e| format!("MSK IAM: {e:#}"))?;
    Ok(rdkafka::client::OAuthToken {
        token,
        principal_name: "journald-kafka".into(),
        lifetime_ms: valid_until_ms(&creds, expiry_ms),
    })
}

/// The cached credentials, loaded again when they end within [`CREDENTIALS_MARGIN`]. A load
/// that fails while the cached ones still work keeps them (the next refresh tries again).
fn credentials_at(now: SystemTime, region: &str) -> Result<Credentials> {
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(c) = cache
        .as_ref()
        .filter(|c| !c.expiring(now, CREDENTIALS_MARGIN))
    {
        return Ok(c.clone());
    }
    match credentials::load(&credentials::process_env, region) {
        Ok(c) => {
            let until = c.expires.map(|e| {
                jiff::Timestamp::try_from(e)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            });
            tracing::info!(access_key_id = %c.access_key_id, valid_until = until.as_deref().unwrap_or("(long-term keys)"), "MSK IAM: AWS credentials loaded");
            *cache = Some(c.clone());
            Ok(c)
        }
        Err(e) => match cache.as_ref().filter(|c| !c.expiring(now, Duration::ZERO)) {
            Some(c) => {
                tracing::warn!(error = %format!("{e:#}"), "MSK IAM: cannot load fresh AWS credentials; signing with the current ones until they expire");
                Ok(c.clone())
            }
            None => Err(e),
        },
    }
}

/// The lifetime to hand librdkafka with a token (ms since the epoch): the token's own expiry,
/// but not past the credentials' (a token signed with expired credentials is refused).
pub(crate) fn valid_until_ms(creds: &Credentials, token_expiry_ms: i64) -> i64 {
    let creds_ms = creds.expires.map(|e| {
        let ms = e.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        i64::try_from(ms).unwrap_or(i64::MAX)
    });
    creds_ms.map_or(token_expiry_ms, |c| c.min(token_expiry_ms))
}

/// `YYYYMMDD` and `YYYYMMDDTHHMMSSZ` (UTC) for Unix seconds: SigV4's date and time.
fn amz_date(secs: u64) -> (String, String) {
    let (y, m, d) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    let date = format!("{y:04}{m:02}{d:02}");
    let time = format!("{date}T{:02}{:02}{:02}Z", s / 3600, s % 3600 / 60, s % 60);
    (date, time)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so that signing has no failure path for any `SystemTime`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Canonical query string: encoded pairs sorted by key, then value (botocore sorts the
/// already-encoded pairs of the presigned URL).
fn canonical_query(params: &[(&str, String)]) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k), uri_encode(v)))
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// A GET's canonical request with `host` as the only (signed) header.
fn canonical_request(path: &str, query: &str, host: &str, payload_hash: &str) -> String {
    format!("GET\n{path}\n{query}\nhost:{host}\n\nhost\n{payload_hash}")
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex(&openssl::sha::sha256(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

/// SigV4's derived key: the secret itself never signs a request.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Result<Vec<u8>> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes())?;
    let k_region = hmac(&k_date, region.as_bytes())?;
    let k_service = hmac(&k_region, service.as_bytes())?;
    hmac(&k_service, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    let key = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    signer.update(data)?;
    Ok(signer.sign_to_vec()?)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// RFC 3986 percent-encoding as SigV4 (and botocore's `quote(safe='-_.~')`) wants it.
fn uri_encode(s: &str) -> String {
    percent_encode(s, false)
}

/// Python's `urlencode` value encoding (`quote_plus`): as `uri_encode`, but a space is `+`.
/// The signer appends its user agent this way.
fn form_encode(s: &str) -> String {
    percent_encode(s, true)
}

fn percent_encode(s: &str, space_as_plus: bool) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' if space_as_plus => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(DIGITS[usize::from(b >> 4)]));
                out.push(char::from(DIGITS[usize::from(b & 15)]));
            }
        }
    }
    out
}

/// Base64 with the URL-safe alphabet and no padding (RFC 4648 §5), as the signer encodes
/// the presigned URL.
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // One input byte gives two characters, two give three, three give four.
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[sextet as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signer's user agent: what `tests/tools/msk_iam_token.py` embeds with the pinned
    /// aws-msk-iam-sasl-signer-python 1.0.2.
    const AWS_UA: &str = "aws-msk-iam-sasl-signer-python/1.0.2";

    struct Vector {
        access_key: &'static str,
        secret_key: &'static str,
        session_token: Option<&'static str>,
        region: &'static str,
        /// The signer's clock, in ms since the epoch (it signs whole seconds).
        at_ms: u64,
        user_agent: &'static str,
        /// The presigned URL the token encodes, to read a mismatch and to check base64url.
        url: &'static str,
        token: &'static str,
        expiry_ms: i64,
    }

    /// Produced by `tests/tools/msk_iam_token.py` (aws-msk-iam-sasl-signer-python 1.0.2,
    /// botocore 1.44.8 and 1.43.11 agree) for the inputs written here; the last two replace
    /// only the user agent the signer appends, to pin ours against its encoding.
    const VECTORS: &[Vector] = &[
        // Long-term key, no session token, us-east-1, 2023-11-14T22:13:20Z.
        Vector {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            at_ms: 1_700_000_000_000,
            user_agent: AWS_UA,
            url: "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20231114%2Fus-east-1%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20231114T221320Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=60a937d97246c187bc1a0ff0227b1c24a88823f677c3c0a4cd42dc47989484c5&User-Agent=aws-msk-iam-sasl-signer-python%2F1.0.2",
            token: "aHR0cHM6Ly9rYWZrYS51cy1lYXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJQUlPU0ZPRE5ON0VYQU1QTEUlMkYyMDIzMTExNCUyRnVzLWVhc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDIzMTExNFQyMjEzMjBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TaWduYXR1cmU9NjBhOTM3ZDk3MjQ2YzE4N2JjMWEwZmYwMjI3YjFjMjRhODg4MjNmNjc3YzNjMGE0Y2Q0MmRjNDc5ODk0ODRjNSZVc2VyLUFnZW50PWF3cy1tc2staWFtLXNhc2wtc2lnbmVyLXB5dGhvbiUyRjEuMC4y",
            expiry_ms: 1_700_000_900_000,
        },
        // Session credentials (token with '/', '+', '='), eu-west-1, the last second of 2024.
        Vector {
            access_key: "ASIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: Some(
                "IQoJb3JpZ2luX2VjEJr//////////wEaCWV1LXdlc3QtMSJHMEUCIQC+example/Session+Token==",
            ),
            region: "eu-west-1",
            at_ms: 1_735_689_599_000,
            user_agent: AWS_UA,
            url: "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAIOSFODNN7EXAMPLE%2F20241231%2Feu-west-1%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20241231T235959Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaCWV1LXdlc3QtMSJHMEUCIQC%2Bexample%2FSession%2BToken%3D%3D&X-Amz-Signature=cf44438ab23f9a60b8155304dc893f139f0fd20daa5268f2051e01ee0925ce1e&User-Agent=aws-msk-iam-sasl-signer-python%2F1.0.2",
            token: "aHR0cHM6Ly9rYWZrYS5ldS13ZXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QVNJQUlPU0ZPRE5ON0VYQU1QTEUlMkYyMDI0MTIzMSUyRmV1LXdlc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI0MTIzMVQyMzU5NTlaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TZWN1cml0eS1Ub2tlbj1JUW9KYjNKcFoybHVYMlZqRUpyJTJGJTJGJTJGJTJGJTJGJTJGJTJGJTJGJTJGJTJGd0VhQ1dWMUxYZGxjM1F0TVNKSE1FVUNJUUMlMkJleGFtcGxlJTJGU2Vzc2lvbiUyQlRva2VuJTNEJTNEJlgtQW16LVNpZ25hdHVyZT1jZjQ0NDM4YWIyM2Y5YTYwYjgxNTUzMDRkYzg5M2YxMzlmMGZkMjBkYWE1MjY4ZjIwNTFlMDFlZTA5MjVjZTFlJlVzZXItQWdlbnQ9YXdzLW1zay1pYW0tc2FzbC1zaWduZXItcHl0aG9uJTJGMS4wLjI",
            expiry_ms: 1_735_690_499_000,
        },
        // Session credentials, ap-southeast-2, leap day 2024, 0.9 s into the second.
        Vector {
            access_key: "ASIAQEXAMPLEEXAMPLE2",
            secret_key: "k3y/With+Slash=AndPlus0123456789abcdefgh",
            session_token: Some("FwoGZXIvYXdzEBYaDH//Ex+Am/ple="),
            region: "ap-southeast-2",
            at_ms: 1_709_164_800_900,
            user_agent: AWS_UA,
            url: "https://kafka.ap-southeast-2.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAQEXAMPLEEXAMPLE2%2F20240229%2Fap-southeast-2%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20240229T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdzEBYaDH%2F%2FEx%2BAm%2Fple%3D&X-Amz-Signature=acb5e4336dc3c17dd6fab6cfd667db97accbabd5bebc5059570c9e09f3198a8d&User-Agent=aws-msk-iam-sasl-signer-python%2F1.0.2",
            token: "aHR0cHM6Ly9rYWZrYS5hcC1zb3V0aGVhc3QtMi5hbWF6b25hd3MuY29tLz9BY3Rpb249a2Fma2EtY2x1c3RlciUzQUNvbm5lY3QmWC1BbXotQWxnb3JpdGhtPUFXUzQtSE1BQy1TSEEyNTYmWC1BbXotQ3JlZGVudGlhbD1BU0lBUUVYQU1QTEVFWEFNUExFMiUyRjIwMjQwMjI5JTJGYXAtc291dGhlYXN0LTIlMkZrYWZrYS1jbHVzdGVyJTJGYXdzNF9yZXF1ZXN0JlgtQW16LURhdGU9MjAyNDAyMjlUMDAwMDAwWiZYLUFtei1FeHBpcmVzPTkwMCZYLUFtei1TaWduZWRIZWFkZXJzPWhvc3QmWC1BbXotU2VjdXJpdHktVG9rZW49RndvR1pYSXZZWGR6RUJZYURIJTJGJTJGRXglMkJBbSUyRnBsZSUzRCZYLUFtei1TaWduYXR1cmU9YWNiNWU0MzM2ZGMzYzE3ZGQ2ZmFiNmNmZDY2N2RiOTdhY2NiYWJkNWJlYmM1MDU5NTcwYzllMDlmMzE5OGE4ZCZVc2VyLUFnZW50PWF3cy1tc2staWFtLXNhc2wtc2lnbmVyLXB5dGhvbiUyRjEuMC4y",
            expiry_ms: 1_709_165_700_000,
        },
        // Vector 1 with our user agent in the signer's place: same signature, other tail.
        Vector {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            at_ms: 1_700_000_000_000,
            user_agent: "journald-kafka/0.1.0",
            url: "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20231114%2Fus-east-1%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20231114T221320Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=60a937d97246c187bc1a0ff0227b1c24a88823f677c3c0a4cd42dc47989484c5&User-Agent=journald-kafka%2F0.1.0",
            token: "aHR0cHM6Ly9rYWZrYS51cy1lYXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJQUlPU0ZPRE5ON0VYQU1QTEUlMkYyMDIzMTExNCUyRnVzLWVhc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDIzMTExNFQyMjEzMjBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TaWduYXR1cmU9NjBhOTM3ZDk3MjQ2YzE4N2JjMWEwZmYwMjI3YjFjMjRhODg4MjNmNjc3YzNjMGE0Y2Q0MmRjNDc5ODk0ODRjNSZVc2VyLUFnZW50PWpvdXJuYWxkLWthZmthJTJGMC4xLjA",
            expiry_ms: 1_700_000_900_000,
        },
        // An empty session token still adds the (empty, signed) parameter, as in botocore;
        // a user agent with a space, punctuation and a non-ASCII letter.
        Vector {
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: Some(""),
            region: "us-east-1",
            at_ms: 1_700_000_000_000,
            user_agent: "journald-kafka/0.1.0 (linux; x86_64) \u{e4}~*",
            url: "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20231114%2Fus-east-1%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20231114T221320Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=&X-Amz-Signature=17d764416dc9e21a0edeeadfa242ca02f0cb02425622f5598c821b9f22fb067d&User-Agent=journald-kafka%2F0.1.0+%28linux%3B+x86_64%29+%C3%A4~%2A",
            token: "aHR0cHM6Ly9rYWZrYS51cy1lYXN0LTEuYW1hem9uYXdzLmNvbS8_QWN0aW9uPWthZmthLWNsdXN0ZXIlM0FDb25uZWN0JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJQUlPU0ZPRE5ON0VYQU1QTEUlMkYyMDIzMTExNCUyRnVzLWVhc3QtMSUyRmthZmthLWNsdXN0ZXIlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDIzMTExNFQyMjEzMjBaJlgtQW16LUV4cGlyZXM9OTAwJlgtQW16LVNpZ25lZEhlYWRlcnM9aG9zdCZYLUFtei1TZWN1cml0eS1Ub2tlbj0mWC1BbXotU2lnbmF0dXJlPTE3ZDc2NDQxNmRjOWUyMWEwZWRlZWFkZmEyNDJjYTAyZjBjYjAyNDI1NjIyZjU1OThjODIxYjlmMjJmYjA2N2QmVXNlci1BZ2VudD1qb3VybmFsZC1rYWZrYSUyRjAuMS4wKyUyOGxpbnV4JTNCK3g4Nl82NCUyOSslQzMlQTR-JTJB",
            expiry_ms: 1_700_000_900_000,
        },
    ];

    fn creds(v: &Vector) -> Credentials {
        Credentials {
            access_key_id: v.access_key.to_owned(),
            secret_access_key: v.secret_key.to_owned(),
            session_token: v.session_token.map(str::to_owned),
            expires: None,
        }
    }

    #[test]
    fn tokens_equal_aws_signer_byte_for_byte() {
        for v in VECTORS {
            let at = UNIX_EPOCH + Duration::from_millis(v.at_ms);
            let (got, expiry) = token(&creds(v), v.region, at, v.user_agent).expect("signs");
            // The URL first: a mismatch there is readable, the token is not.
            assert_eq!(
                base64url(v.url.as_bytes()),
                v.token,
                "base64url of {}",
                v.url
            );
            assert_eq!(got, v.token, "token for {} at {}", v.region, v.at_ms);
            assert_eq!(expiry, v.expiry_ms);
        }
    }

    /// The same comparison run against AWS's signer itself now, for inputs drawn here
    /// (tests/tools/msk_iam_token.py; scripts/install-deps.sh installs the pinned signer
    /// into its own directory): random keys, session tokens with characters that need
    /// escaping, every region family, times across years, the signer's and our user agent.
    #[test]
    fn tokens_equal_what_aws_signer_builds_now_for_drawn_inputs() {
        let dir = std::env::var("JK_MSK_SIGNER_PATH").unwrap_or_else(|_| {
            format!(
                "{}/.cache/journald-kafka/msk-signer",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/msk_iam_token.py");
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let regions = [
            "us-east-1",
            "eu-west-3",
            "ap-southeast-2",
            "cn-north-1",
            "us-gov-west-1",
            "me-central-1",
        ];
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_.~ %&;"
                .chars()
                .collect();
        for i in 0..12 {
            let mut word = |n: usize| -> String {
                (0..n)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            let access_key = format!(
                "ASIA{}",
                word(16)
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "X")
                    .to_uppercase()
            );
            let secret_key = word(40);
            let session_token = (i % 3 != 0).then(|| word(120 + i * 37));
            let region = regions[i % regions.len()];
            let at = 946_684_800 + next() % 3_000_000_000;
            let user_agent = (i % 2 == 1).then_some("journald-kafka/9.9.9");
            let input = serde_json::json!({
                "access_key": access_key, "secret_key": secret_key,
                "session_token": session_token, "region": region, "time": at,
                "user_agent": user_agent,
            });
            let mut child = std::process::Command::new("python3")
                .arg(tool)
                .env("PYTHONPATH", &dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("python3");
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.to_string().as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("signer");
            assert!(
                out.status.success(),
                "AWS's signer (installed in {dir} by scripts/install-deps.sh): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let aws: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            let c = Credentials {
                access_key_id: access_key,
                secret_access_key: secret_key,
                session_token,
                expires: None,
            };
            let ua = aws["user_agent"].as_str().expect("user agent");
            let (ours, expiry) =
                token(&c, region, UNIX_EPOCH + Duration::from_secs(at), ua).expect("signs");
            assert_eq!(
                ours,
                aws["token"].as_str().expect("token"),
                "input {input}; AWS's URL {}",
                aws["url"]
            );
            assert_eq!(Some(expiry), aws["expiry_ms"].as_i64());
        }
    }

    #[test]
    fn signing_key_matches_aws_documented_derivation() {
        // "Examples of how to derive a signing key for Signature Version 4" (AWS docs).
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), b"20120215").expect("hmac");
        assert_eq!(
            hex(&k_date),
            "969fbb94feb542b71ede6f87fe4d5fa29c789342b0f407474670f0c2489e0a0d"
        );
        let k_region = hmac(&k_date, b"us-east-1").expect("hmac");
        assert_eq!(
            hex(&k_region),
            "69daa0209cd9c5ff5c8ced464a696fd4252e981430b10e3d3fd8e2f197d7a70c"
        );
        let k_service = hmac(&k_region, b"iam").expect("hmac");
        assert_eq!(
            hex(&k_service),
            "f72cfd46f26bc4643f06a11eabb6c0ba18780c19a8da0c31ace671265e3c87fa"
        );
        let key = signing_key(secret, "20120215", "us-east-1", "iam").expect("key");
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn signature_matches_aws_documented_iam_example() {
        // "Task 3: Calculate the signature for AWS Signature Version 4" (AWS docs): the
        // string to sign of its IAM request of 2011-09-09 and the signature it shows.
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let key = signing_key(secret, "20110909", "us-east-1", "iam").expect("key");
        let to_sign = "AWS4-HMAC-SHA256\n20110909T233600Z\n20110909/us-east-1/iam/aws4_request\n\
                       3511de7e95d28ecd39e9513b642aee07e54f4941150d8df8bf94b328ef7e55e2";
        assert_eq!(
            hex(&hmac(&key, to_sign.as_bytes()).expect("hmac")),
            "ced6826de92d2bdeed8f846f0bf508e8559e98e4b0199114b84c54174deb456c"
        );
    }

    #[test]
    fn presigned_url_matches_aws_documented_s3_example() {
        // "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)" (S3
        // docs): GET examplebucket/test.txt, 2013-05-24, 86400 s. Built with the same
        // canonical-query and signing code as the MSK token.
        let scope = "20130524/us-east-1/s3/aws4_request";
        let params = [
            ("X-Amz-Algorithm", ALGORITHM.to_owned()),
            ("X-Amz-Credential", format!("AKIAIOSFODNN7EXAMPLE/{scope}")),
            ("X-Amz-Date", "20130524T000000Z".to_owned()),
            ("X-Amz-Expires", "86400".to_owned()),
            ("X-Amz-SignedHeaders", "host".to_owned()),
        ];
        let canonical = canonical_request(
            "/test.txt",
            &canonical_query(&params),
            "examplebucket.s3.amazonaws.com",
            "UNSIGNED-PAYLOAD",
        );
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let key = signing_key(secret, "20130524", "us-east-1", "s3").expect("key");
        let to_sign = string_to_sign("20130524T000000Z", scope, &canonical);
        assert_eq!(
            hex(&hmac(&key, to_sign.as_bytes()).expect("hmac")),
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn canonical_query_sorts_encoded_keys() {
        let params = [
            ("b", "2".to_owned()),
            ("X-Amz-SignedHeaders", "host".to_owned()),
            ("X-Amz-Security-Token", "a/b+c=".to_owned()),
            ("Action", "kafka-cluster:Connect".to_owned()),
        ];
        assert_eq!(
            canonical_query(&params),
            "Action=kafka-cluster%3AConnect&X-Amz-Security-Token=a%2Fb%2Bc%3D&X-Amz-SignedHeaders=host&b=2"
        );
    }

    #[test]
    fn base64url_follows_rfc_4648_without_padding() {
        let cases: [(&[u8], &str); 8] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xef, 0xbe, 0xfb, 0xff], "-----_8"),
        ];
        for (input, want) in cases {
            assert_eq!(base64url(input), want, "{input:?}");
        }
    }

    #[test]
    fn encodings_follow_botocore_and_urlencode() {
        assert_eq!(
            uri_encode("aZ09-_.~ /+=:%\u{e4}"),
            "aZ09-_.~%20%2F%2B%3D%3A%25%C3%A4"
        );
        assert_eq!(form_encode("a b/c~*"), "a+b%2Fc~%2A");
    }

    #[test]
    fn amz_date_agrees_with_jiff() {
        // Every ~37 days to 2103 at varying times of day, and the leap days around
        // 2000 (a leap century) and 2100 (not one).
        let extra: [u64; 3] = [951_782_400, 4_107_456_000, 4_107_542_400];
        let sampled = (0..4_200_000_000u64).step_by(86_399 * 37);
        for secs in sampled.chain(extra) {
            let want = jiff::Timestamp::from_second(i64::try_from(secs).expect("small"))
                .expect("in range")
                .strftime("%Y%m%dT%H%M%SZ")
                .to_string();
            let (date, time) = amz_date(secs);
            assert_eq!(time, want, "{secs}");
            assert_eq!(date, &want[..8], "{secs}");
        }
    }

    #[test]
    fn lifetime_is_the_earlier_of_token_and_credentials() {
        let mut c = creds(&VECTORS[0]);
        assert_eq!(valid_until_ms(&c, 1_700_000_900_000), 1_700_000_900_000);
        c.expires = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_600));
        assert_eq!(valid_until_ms(&c, 1_700_000_900_000), 1_700_000_600_000);
        c.expires = Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        assert_eq!(valid_until_ms(&c, 1_700_000_900_000), 1_700_000_900_000);
    }

    #[test]
    fn expiring_means_within_the_margin() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = creds(&VECTORS[1]);
        assert!(
            !c.expiring(now, Duration::from_secs(300)),
            "long-term keys never expire"
        );
        c.expires = Some(now + Duration::from_secs(299));
        assert!(c.expiring(now, Duration::from_secs(300)));
        c.expires = Some(now + Duration::from_secs(301));
        assert!(!c.expiring(now, Duration::from_secs(300)));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = creds(&VECTORS[1]);
        let shown = format!("{c:?}");
        assert!(shown.contains("ASIAIOSFODNN7EXAMPLE"), "{shown}");
        assert!(!shown.contains(VECTORS[1].secret_key), "{shown}");
        assert!(!shown.contains("IQoJb3JpZ2lu"), "{shown}");
    }
}
