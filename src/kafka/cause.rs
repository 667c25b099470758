//! Why the brokers cannot be reached, in the operator's terms: librdkafka reports TLS,
//! SASL and connection failures as free text with a handful of codes, and "Local: Broker
//! transport failure" does not tell a wrong password from an untrusted certificate.

use std::fmt;

use rdkafka::types::RDKafkaErrorCode;

/// The cause of a connection failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// SASL: wrong user name or password, or a mechanism the broker does not offer.
    Authentication,
    /// TLS: the broker's certificate is not trusted, has expired or names another host;
    /// or ours was refused.
    Certificate,
    /// One side speaks TLS and the other does not (`security.protocol` against the
    /// listener).
    ProtocolMismatch,
    /// Nothing answers at the address, or the name does not resolve.
    Unreachable,
}

impl Cause {
    pub(crate) fn as_u8(self) -> u8 {
        self as u8 + 1
    }

    pub(crate) fn from_u8(v: u8) -> Option<Cause> {
        [
            Cause::Authentication,
            Cause::Certificate,
            Cause::ProtocolMismatch,
            Cause::Unreachable,
        ]
        .into_iter()
        .find(|c| c.as_u8() == v)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Authentication => {
                "authentication failed: check sasl.username, the password and sasl.mechanism"
            }
            Cause::Certificate => {
                "TLS certificate problem: the broker's certificate is not trusted (ssl.ca.location), has expired or does not name the host in kafka.brokers, or the broker refused ours"
            }
            Cause::ProtocolMismatch => {
                "protocol mismatch: security.protocol does not match the listener (TLS against a plaintext port, or plaintext against a TLS port)"
            }
            Cause::Unreachable => "the brokers are unreachable (connection refused, or the name does not resolve)",
        })
    }
}

/// Classifies one error report of librdkafka (its code and its reason text).
pub(crate) fn classify(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<Cause> {
    let r = reason.to_ascii_lowercase();
    let has = |s: &str| r.contains(s);
    if code == Some(RDKafkaErrorCode::Authentication)
        || has("sasl authentication")
        || has("authentication failed")
        || has("invalid credentials")
        || has("unsupported sasl mechanism")
    {
        return Some(Cause::Authentication);
    }
    if has("connecting to a ssl listener")
        || has("connecting to a plaintext")
        || has("wrong version number")
        || has("packet length too long")
        || has("record layer failure")
        || (has("ssl handshake failed") && has("disconnected"))
    {
        return Some(Cause::ProtocolMismatch);
    }
    if code == Some(RDKafkaErrorCode::SSL)
        || has("certificate")
        || has("hostname mismatch")
        || has("ssl handshake failed")
    {
        return Some(Cause::Certificate);
    }
    if has("connection refused") || has("failed to resolve") || has("no route to host") {
        return Some(Cause::Unreachable);
    }
    None
}

/// Whether the listener at `addr` speaks TLS: a plaintext Kafka request (ApiVersions v0)
/// answered with a TLS record (an alert) says so. librdkafka only sees a connection that
/// never answers, so `check` asks this when a plaintext connection fails without a cause.
pub(crate) fn speaks_tls(addr: &str, timeout: std::time::Duration) -> bool {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let Some(sa) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&sa, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let client = b"journald-kafka-check";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    let mut req = (body.len() as i32).to_be_bytes().to_vec();
    req.extend_from_slice(&body);
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut head = [0u8; 3];
    // A TLS record: content type 0x15 (alert) or 0x16 (handshake), then version 3.x.
    s.read_exact(&mut head).is_ok() && matches!(head, [0x15 | 0x16, 3, _])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_reasons_are_classified() {
        let cases = [
            (
                "127.0.0.1:9092/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
                Some(Cause::Authentication),
            ),
            (
                "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified",
                Some(Cause::Certificate),
            ),
            (
                "127.0.0.1:9093/bootstrap: Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol configuration (connecting to a SSL listener?) or broker version is < 0.10",
                Some(Cause::ProtocolMismatch),
            ),
            (
                "ssl://127.0.0.1:9092/bootstrap: SSL handshake failed: error:0A00010B:SSL routines::wrong version number",
                Some(Cause::ProtocolMismatch),
            ),
            (
                "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)",
                Some(Cause::Unreachable),
            ),
            ("something else", None),
        ];
        for (reason, want) in cases {
            assert_eq!(classify(None, reason), want, "{reason}");
        }
    }
}
