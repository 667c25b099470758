//! The smallest HTTP/1.1 client the credential providers need: one blocking request per
//! connection (`Connection: close`), plain for the metadata services on link-local or
//! loopback addresses, TLS (peer verified) for STS. Every step has a deadline and an
//! answer is at most 64 KiB, so a stuck or hostile endpoint costs seconds and bounded
//! memory, never a hang. No proxies, no redirects, no keep-alive.
//!
//! Errors name the host and the step, never a header value or a body: the callers send
//! tokens in headers and receive credentials in bodies.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use openssl::ssl::{SslConnector, SslMethod};

/// The largest answer read, headers included: credentials are a few KiB.
pub(super) const MAX_RESPONSE: usize = 64 * 1024;

/// CA bundles of the common distributions, for TLS when `AWS_CA_BUNDLE` is not set: the
/// agent's OpenSSL is built from source and its default store path may not exist here.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

pub(super) struct Request<'a> {
    pub(super) method: &'a str,
    pub(super) url: &'a str,
    pub(super) headers: &'a [(&'a str, &'a str)],
    pub(super) body: &'a [u8],
    /// For the whole request: connecting, the TLS handshake, sending and reading.
    pub(super) timeout: Duration,
    /// CA certificates to trust for https in place of the system bundle (`AWS_CA_BUNDLE`).
    pub(super) ca_file: Option<&'a str>,
}

pub(super) struct Response {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
}

/// The status only: a body holds credentials.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Response {{ status: {}, body: <{} bytes> }}",
            self.status,
            self.body.len()
        )
    }
}

impl Response {
    /// The body of a 2xx answer; otherwise an error with the status only (a body may echo
    /// what was sent).
    pub(super) fn success(self) -> Result<Vec<u8>> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            bail!("HTTP status {}", self.status)
        }
    }
}

/// The parts of an `http://` or `https://` URL a request needs.
#[derive(Debug, PartialEq)]
pub(super) struct Url {
    pub(super) tls: bool,
    /// Without the brackets of an IPv6 literal: what is resolved and verified.
    pub(super) host: String,
    pub(super) port: u16,
    /// `host[:port]` as written: the `Host` header.
    pub(super) authority: String,
    /// Path and query, `/` when the URL has none: the request target.
    pub(super) target: String,
}

pub(super) fn parse_url(url: &str) -> Result<Url> {
    // A space or control character would split the request line or a header.
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        bail!("{url:?} holds a space or control character");
    }
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("{url:?} is not an http:// or https:// URL");
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.contains('@') {
        bail!("{url:?} holds user information, which is not supported");
    }
    let target = target.split('#').next().unwrap_or_default();
    let target = if target.is_empty() {
        "/".to_owned()
    } else if target.starts_with('?') {
        format!("/{target}")
    } else {
        target.to_owned()
    };
    let (host, port) = host_port(authority).with_context(|| format!("in {url:?}"))?;
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .with_context(|| format!("port {p:?} in {url:?}"))?,
        None if tls => 443,
        None => 80,
    };
    Ok(Url {
        tls,
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        target,
    })
}

/// `host` and `port` of `host[:port]` or `[v6]:port`.
fn host_port(authority: &str) -> Result<(&str, Option<&str>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unclosed '[' in the host")?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => bail!("text after the IPv6 address"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("no host");
    }
    Ok((host, port))
}

/// A stream to read an answer from, plain or TLS.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A socket that gives every read and write only what is left of the request's deadline,
/// so that a server trickling bytes (into the TLS handshake, or an answer) cannot hold the
/// thread that asked, a librdkafka poller, past the deadline: one timeout per system call
/// would let each byte restart the clock.
#[derive(Debug)]
struct Deadline {
    tcp: TcpStream,
    deadline: Instant,
}

impl Deadline {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request's time is up",
            ));
        }
        Ok(left)
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        self.tcp.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// Sends `req` and reads the whole answer; any status is returned (the caller decides).
pub(super) fn request(req: &Request<'_>) -> Result<Response> {
    let url = parse_url(req.url)?;
    let deadline = Instant::now() + req.timeout;
    let tcp = Deadline {
        tcp: connect(&url.host, url.port, deadline)?,
        deadline,
    };
    let mut stream: Box<dyn Stream> = if url.tls {
        Box::new(tls(tcp, &url.host, req.ca_file)?)
    } else {
        Box::new(tcp)
    };
    let head = head(req, &url)?;
    send(&mut stream, head.as_bytes(), req.body)
        .with_context(|| format!("sending to {}", url.authority))?;
    read_response(&mut stream, deadline)
        .with_context(|| format!("reading the answer of {}", url.authority))
}

fn send<W: Write + ?Sized>(stream: &mut W, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    stream.write_all(head)?;
    stream.write_all(body)?;
    stream.flush()
}

/// Connects within what is left of `deadline` across all of the host's addresses. Name
/// resolution is the system's and not bounded here: only STS is reached by name (the
/// metadata services are addresses).
fn connect(host: &str, port: u16, deadline: Instant) -> Result<TcpStream> {
    let addrs = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?;
    let mut last = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("connecting to {host}:{port}: no answer in time");
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => anyhow::Error::new(e).context(format!("connecting to {host}:{port}")),
        None => anyhow!("{host} has no address"),
    })
}

fn tls(
    tcp: Deadline,
    host: &str,
    ca_file: Option<&str>,
) -> Result<openssl::ssl::SslStream<Deadline>> {
    // The builder verifies the peer's chain and name, and loads OpenSSL's default store
    // (which honours SSL_CERT_FILE); a bundle file is added to it.
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    if let Some(file) = ca_file.or_else(system_bundle) {
        builder
            .set_ca_file(file)
            .with_context(|| format!("loading CA certificates from {file}"))?;
    }
    builder
        .build()
        .connect(host, tcp)
        .map_err(|e| anyhow!("TLS handshake with {host}: {e}"))
}

fn system_bundle<'a>() -> Option<&'a str> {
    SYSTEM_BUNDLES.into_iter().find(|p| Path::new(p).is_file())
}

fn head(req: &Request<'_>, url: &Url) -> Result<String> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.method,
        url.target,
        url.authority,
        req.body.len()
    );
    for (name, value) in req.headers {
        // A line break would smuggle a header (values come from the environment and files).
        if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
            bail!("the {name:?} header holds a line break");
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    Ok(head)
}

/// Reads until the answer is complete; every read is bounded by the deadline (`Deadline`).
fn read_response<R: Read + ?Sized>(stream: &mut R, deadline: Instant) -> Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(r) = parse(&buf, false)? {
            return Ok(r);
        }
        if buf.len() > MAX_RESPONSE {
            bail!("the answer is larger than {MAX_RESPONSE} bytes");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no complete answer in time");
        }
        let n = stream
            .read(&mut chunk)
            .context("read failed or timed out")?;
        if n == 0 {
            return parse(&buf, true)?.context("the connection closed before the answer ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The answer in `buf` once it is complete; `None` while more is to come. `closed`: the
/// peer closed the connection, so what is there is all there will be.
fn parse(buf: &[u8], closed: bool) -> Result<Option<Response>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("the answer's headers are not text")?;
    let mut lines = head.split("\r\n");
    let status = status(lines.next().unwrap_or_default())?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse::<usize>().context("bad Content-Length")?;
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = &buf[end + 4..];
    let body = if chunked {
        match dechunk(body)? {
            Some(b) => b,
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if body.len() < n {
            return Ok(None);
        }
        body[..n].to_vec()
    } else if closed {
        body.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// The status code of `HTTP/1.x NNN reason`.
fn status(line: &str) -> Result<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        bail!("not an HTTP answer");
    }
    code.parse::<u16>().context("bad status code")
}

/// A chunked body decoded, once its last (empty) chunk has arrived; trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).context("bad chunk size")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).context("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if size > MAX_RESPONSE {
            bail!("a chunk larger than {MAX_RESPONSE} bytes");
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            bail!("a chunk does not end where its size says");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_what_a_request_needs() {
        let u = parse_url("http://169.254.169.254").expect("url");
        assert_eq!(
            u,
            Url {
                tls: false,
                host: "169.254.169.254".into(),
                port: 80,
                authority: "169.254.169.254".into(),
                target: "/".into(),
            }
        );
        let u = parse_url("https://sts.eu-west-1.amazonaws.com/?a=b#frag").expect("url");
        assert_eq!((u.tls, u.port, u.target.as_str()), (true, 443, "/?a=b"));
        let u = parse_url("http://[fd00:ec2::254]:8080/latest").expect("url");
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.authority.as_str(),
                u.target.as_str()
            ),
            ("fd00:ec2::254", 8080, "[fd00:ec2::254]:8080", "/latest")
        );
        let u = parse_url("http://127.0.0.1:1234?x=1").expect("url");
        assert_eq!((u.port, u.target.as_str()), (1234, "/?x=1"));
        for bad in [
            "ftp://x/",
            "http://",
            "http://user:pw@host/",
            "http://host:99999/",
            "http://host/a b",
            "http://host/a\r\nX: y",
            "http://[::1/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn answers_with_length_chunks_or_close_are_read_whole() {
        let fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert!(
            parse(&fixed[..fixed.len() - 1], false)
                .expect("ok")
                .is_none()
        );
        let r = parse(fixed, false).expect("ok").expect("complete");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));

        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        assert!(parse(&chunked[..60], false).expect("ok").is_none());
        let r = parse(chunked, false).expect("ok").expect("complete");
        assert_eq!(r.body, b"Wikipedia");

        let until_close = b"HTTP/1.0 404 Not Found\r\n\r\nnope";
        assert!(parse(until_close, false).expect("ok").is_none());
        let r = parse(until_close, true).expect("ok").expect("complete");
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
        assert!(r.success().is_err());
    }

    #[test]
    fn malformed_answers_are_refused() {
        let cases: [&[u8]; 5] = [
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        ];
        for bad in cases {
            assert!(
                parse(bad, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_header_with_a_line_break_is_not_sent() {
        let url = parse_url("http://127.0.0.1/").expect("url");
        let headers = [("X-Token", "abc\r\nX-Evil: 1")];
        let req = Request {
            method: "GET",
            url: "http://127.0.0.1/",
            headers: &headers,
            body: b"",
            timeout: Duration::from_secs(1),
            ca_file: None,
        };
        let err = head(&req, &url).expect_err("refused");
        assert!(!format!("{err:#}").contains("abc"), "{err:#}");
    }

    #[test]
    fn an_endless_answer_stops_at_the_size_cap() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n");
                let filler = [b'x'; 4096];
                while s.write_all(&filler).is_ok() {}
            }
        });
        let req = Request {
            method: "GET",
            url: &url,
            headers: &[],
            body: b"",
            timeout: Duration::from_secs(5),
            ca_file: None,
        };
        let err = request(&req).expect_err("capped");
        assert!(format!("{err:#}").contains("larger than"), "{err:#}");
    }
}
