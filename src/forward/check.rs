//! `check` for the Forward input: the TLS files load, and each listener is either free or
//! held by a server that answers the Forward protocol (a running agent).
//!
//! The probe sends an empty Forward message asking for an ack: a server acknowledges it at
//! once and no record is produced.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::handshake::{Keys, client_ping};
use super::msgpack::{Reader, value_len, write};
use crate::config::ForwardConfig;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One line per listener, or the first problem.
pub(crate) fn check(cfg: &ForwardConfig) -> Result<String> {
    let mut said = Vec::new();
    if let Some((cert, key)) = &cfg.tls {
        super::server::tls_acceptor(cert, key)?;
        said.push(format!("TLS certificate {} loads", cert.display()));
    }
    if let Some(addr) = &cfg.listen {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => said.push(format!("{addr} is free to listen on")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if cfg.tls.is_some() {
                    said.push(format!(
                        "{addr} is in use (by the running agent? TLS listeners are not probed)"
                    ));
                } else {
                    let s = std::net::TcpStream::connect(addr)
                        .with_context(|| format!("{addr} is in use but refuses connections"))?;
                    s.set_read_timeout(Some(PROBE_TIMEOUT))?;
                    let ms = probe(s, cfg).with_context(|| {
                        format!(
                            "{addr} is in use by something that does not answer as a Forward server"
                        )
                    })?;
                    said.push(format!(
                        "{addr} answers the Forward protocol (a running agent; ack in {ms} ms)"
                    ));
                }
            }
            Err(e) => bail!("cannot listen on {addr}: {e}"),
        }
    }
    if let Some(path) = &cfg.socket {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(s) => {
                s.set_read_timeout(Some(PROBE_TIMEOUT))?;
                let ms = probe(s, cfg).with_context(|| {
                    format!(
                        "{} is held by something that does not answer as a Forward server",
                        path.display()
                    )
                })?;
                said.push(format!(
                    "{} answers the Forward protocol (ack in {ms} ms)",
                    path.display()
                ));
            }
            Err(_) => {
                let dir = path.parent().unwrap_or(std::path::Path::new("/"));
                if !dir.is_dir() {
                    bail!(
                        "the directory of forward.socket, {}, does not exist",
                        dir.display()
                    );
                }
                said.push(format!("{} will be created", path.display()));
            }
        }
    }
    Ok(said.join("; "))
}

/// An empty chunk with an ack request; returns how long the ack took.
fn probe<S: Read + Write>(mut s: S, cfg: &ForwardConfig) -> Result<u128> {
    let started = Instant::now();
    let mut buf = Vec::new();
    if let Some(key) = &cfg.shared_key {
        let helo = read_value(&mut s, &mut buf)?;
        let keys = Keys {
            shared_key: key,
            self_hostname: &format!("{}-check", cfg.self_hostname),
            users: &cfg.users,
        };
        let (user, password) = cfg
            .users
            .first()
            .map(|(u, p)| (u.as_str(), p.expose()))
            .unwrap_or(("", ""));
        s.write_all(&client_ping(&helo, &keys, user, password)?)?;
        let pong = read_value(&mut s, &mut buf)?;
        let mut r = Reader::new(&pong);
        r.array_len()?;
        r.bytes()?;
        if r.peek() != Some(0xc3) {
            bail!("the handshake was refused");
        }
    }
    let mut m = Vec::new();
    write::array_len(&mut m, 3);
    write::str(&mut m, b"journald-kafka.check");
    write::array_len(&mut m, 0);
    write::map_len(&mut m, 1);
    write::str(&mut m, b"chunk");
    write::str(&mut m, b"journald-kafka-check");
    s.write_all(&m)?;
    let ack = read_value(&mut s, &mut buf)?;
    let mut r = Reader::new(&ack);
    r.map_len()?;
    if r.bytes()? != b"ack" {
        bail!("the answer is not an ack");
    }
    Ok(started.elapsed().as_millis())
}

fn read_value<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> Result<Vec<u8>> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        if let Some(n) = value_len(buf, 1 << 20)? {
            let v = buf[..n].to_vec();
            buf.drain(..n);
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("no answer within {PROBE_TIMEOUT:?}");
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).context("no answer")?;
        if n == 0 {
            bail!("the connection was closed without an answer");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
