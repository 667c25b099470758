//! The Forward protocol's shared-key handshake: the server's HELO, the client's PING, the
//! server's PONG.
//!
//! Owns checking that a client knows the shared key (and, when users are configured, a
//! user's password) without either ever crossing the wire: both sides prove knowledge by
//! SHA-512 digests over a fresh nonce. It must never let a connection send events before
//! its PING passed.

use openssl::sha::Sha512;

use super::msgpack::{Malformed, Reader, malformed, write};
use crate::config::Secret;

/// What the server needs to answer PINGs.
pub(crate) struct Keys<'a> {
    pub(crate) shared_key: &'a Secret,
    pub(crate) self_hostname: &'a str,
    pub(crate) users: &'a [(String, Secret)],
}

/// One connection's handshake: the nonce and salt sent in its HELO.
pub(crate) struct Handshake {
    nonce: [u8; 16],
    auth_salt: [u8; 16],
    with_users: bool,
}

fn hex_sha512(parts: &[&[u8]]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finish().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference, so the time taken says nothing
/// about how much of a digest was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

impl Handshake {
    pub(crate) fn new(with_users: bool) -> Handshake {
        let mut nonce = [0u8; 16];
        let mut auth_salt = [0u8; 16];
        // A failure of the system's random source leaves zeros; the PONG still proves the
        // shared key, only replay protection weakens. OpenSSL seeds from getrandom(2).
        let _ = openssl::rand::rand_bytes(&mut nonce);
        let _ = openssl::rand::rand_bytes(&mut auth_salt);
        Handshake {
            nonce,
            auth_salt,
            with_users,
        }
    }

    /// `["HELO", {"nonce": …, "auth": salt or "", "keepalive": true}]`
    pub(crate) fn helo(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        write::array_len(&mut out, 2);
        write::str(&mut out, b"HELO");
        write::map_len(&mut out, 3);
        write::str(&mut out, b"nonce");
        write::bin(&mut out, &self.nonce);
        write::str(&mut out, b"auth");
        write::bin(
            &mut out,
            if self.with_users {
                &self.auth_salt
            } else {
                &[]
            },
        );
        write::str(&mut out, b"keepalive");
        write::bool(&mut out, true);
        out
    }

    /// Checks a PING. `Ok((pong, Ok(())))`: the client is in; `Ok((pong, Err(reason)))`:
    /// send the refusal and close. `Err`: not a PING at all.
    pub(crate) fn ping(
        &self,
        frame: &[u8],
        keys: &Keys<'_>,
    ) -> Result<(Vec<u8>, Result<(), String>), Malformed> {
        let mut r = Reader::new(frame);
        let n = r.array_len()?;
        if r.bytes()? != b"PING" {
            return malformed("the handshake expects PING first (forward.shared_key_file is set)");
        }
        if n != 6 {
            return malformed(format!("PING has 6 elements, this one has {n}"));
        }
        let hostname = r.bytes()?;
        let salt = r.bytes()?;
        let digest = r.bytes()?;
        let user = r.bytes()?;
        let password_digest = r.bytes()?;
        let key = keys.shared_key.expose().as_bytes();
        let expected = hex_sha512(&[salt, hostname, &self.nonce, key]);
        let verdict = if hostname == keys.self_hostname.as_bytes() {
            Err("the client says it has this server's hostname".to_string())
        } else if !same(expected.as_bytes(), digest) {
            Err("shared key mismatch".to_string())
        } else if self.with_users {
            let known = keys.users.iter().find(|(name, _)| name.as_bytes() == user);
            match known {
                Some((name, password)) => {
                    let want = hex_sha512(&[
                        &self.auth_salt,
                        name.as_bytes(),
                        password.expose().as_bytes(),
                    ]);
                    if same(want.as_bytes(), password_digest) {
                        Ok(())
                    } else {
                        Err("username/password mismatch".to_string())
                    }
                }
                None => Err("username/password mismatch".to_string()),
            }
        } else {
            Ok(())
        };
        let mut out = Vec::with_capacity(200);
        write::array_len(&mut out, 5);
        write::str(&mut out, b"PONG");
        write::bool(&mut out, verdict.is_ok());
        write::str(
            &mut out,
            verdict.as_ref().err().map_or(&b""[..], |e| e.as_bytes()),
        );
        write::str(&mut out, keys.self_hostname.as_bytes());
        let proof = if verdict.is_ok() {
            hex_sha512(&[salt, keys.self_hostname.as_bytes(), &self.nonce, key])
        } else {
            String::new()
        };
        write::str(&mut out, proof.as_bytes());
        Ok((out, verdict))
    }
}

/// The client's side, for `check`'s probe: the PING answering `helo`.
pub(crate) fn client_ping(
    helo: &[u8],
    keys: &Keys<'_>,
    user: &str,
    password: &str,
) -> Result<Vec<u8>, Malformed> {
    let mut r = Reader::new(helo);
    r.array_len()?;
    if r.bytes()? != b"HELO" {
        return malformed("the server did not greet with HELO");
    }
    let (mut nonce, mut auth) = (&b""[..], &b""[..]);
    for _ in 0..r.map_len()? {
        match r.bytes()? {
            b"nonce" => nonce = r.bytes()?,
            b"auth" => auth = r.bytes()?,
            _ => {
                r.value()?;
            }
        }
    }
    let salt = b"journald-kafka-check";
    let digest = hex_sha512(&[
        salt,
        keys.self_hostname.as_bytes(),
        nonce,
        keys.shared_key.expose().as_bytes(),
    ]);
    let pw = if auth.is_empty() {
        String::new()
    } else {
        hex_sha512(&[auth, user.as_bytes(), password.as_bytes()])
    };
    let mut out = Vec::new();
    write::array_len(&mut out, 6);
    write::str(&mut out, b"PING");
    write::str(&mut out, keys.self_hostname.as_bytes());
    write::str(&mut out, salt);
    write::str(&mut out, digest.as_bytes());
    write::str(&mut out, user.as_bytes());
    write::str(&mut out, pw.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value as V;

    use crate::forward::msgpack::test_encode as enc;

    /// What a client does with a HELO (as fluent-logger and out_forward do).
    fn client_ping(helo: &[u8], key: &str, user: &str, password: &str) -> Vec<u8> {
        let v = rmpv::decode::read_value(&mut &helo[..]).unwrap();
        let opts = v[1].as_map().unwrap();
        let get = |k: &str| {
            opts.iter()
                .find(|(n, _)| n.as_str() == Some(k))
                .map(|(_, v)| v.as_slice().unwrap().to_vec())
                .unwrap()
        };
        let (nonce, auth) = (get("nonce"), get("auth"));
        let salt = b"client-salt";
        let digest = hex_sha512(&[salt, b"client", &nonce, key.as_bytes()]);
        let pw = if auth.is_empty() {
            String::new()
        } else {
            hex_sha512(&[&auth, user.as_bytes(), password.as_bytes()])
        };
        enc(&V::Array(vec![
            V::from("PING"),
            V::from("client"),
            V::Binary(salt.to_vec()),
            V::from(digest),
            V::from(user),
            V::from(pw),
        ]))
    }

    #[test]
    fn the_right_key_and_password_pass_and_the_pong_proves_the_server_knows_the_key() {
        let key = Secret::new("s3cret".into());
        let users = vec![("alice".to_string(), Secret::new("pw".into()))];
        let keys = Keys {
            shared_key: &key,
            self_hostname: "server",
            users: &users,
        };
        let h = Handshake::new(true);
        let (pong, verdict) = h
            .ping(&client_ping(&h.helo(), "s3cret", "alice", "pw"), &keys)
            .unwrap();
        assert_eq!(verdict, Ok(()));
        let pong = rmpv::decode::read_value(&mut &pong[..]).unwrap();
        assert_eq!(pong[1], V::Boolean(true));
        let want = hex_sha512(&[b"client-salt", b"server", &h.nonce, b"s3cret"]);
        assert_eq!(pong[4].as_str(), Some(want.as_str()));

        let (_, verdict) = h
            .ping(&client_ping(&h.helo(), "wrong", "alice", "pw"), &keys)
            .unwrap();
        assert_eq!(verdict, Err("shared key mismatch".into()));
        let (pong, verdict) = h
            .ping(&client_ping(&h.helo(), "s3cret", "alice", "nope"), &keys)
            .unwrap();
        assert_eq!(verdict, Err("username/password mismatch".into()));
        let pong = rmpv::decode::read_value(&mut &pong[..]).unwrap();
        assert_eq!(pong[1], V::Boolean(false));
        assert_eq!(pong[4].as_str(), Some(""), "no proof for a refused client");
    }

    #[test]
    fn events_before_the_ping_are_refused() {
        let key = Secret::new("k".into());
        let keys = Keys {
            shared_key: &key,
            self_hostname: "server",
            users: &[],
        };
        let h = Handshake::new(false);
        let msg = enc(&V::Array(vec![V::from("tag"), V::from(1), V::Map(vec![])]));
        assert!(h.ping(&msg, &keys).unwrap_err().0.contains("PING first"));
    }
}
