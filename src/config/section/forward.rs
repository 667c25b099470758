//! `[forward]`: the Fluentd Forward input's listeners, topic template, field names,
//! authentication (shared key, users, TLS) and limits.
//!
//! Owns the defaults that keep Forward events apart from the journal's: never the
//! journal's topic by default, and never a listener other hosts can reach without the
//! shared-key handshake. The shared key and the users' passwords are read once, here,
//! and must never be shown; it never binds a listener (`forward::input` does).

use std::ops::Range;
use std::path::PathBuf;

use anyhow::Result;
use toml::Spanned;

use super::kafka::KafkaConfig;
use super::template;
use crate::config::Secret;
use crate::config::check::{Locator, check_topic_name};
use crate::config::raw::{RawForward, RawForwardUser};

/// The Forward-protocol input (docs/configuration.md, `[forward]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// TCP address to listen on.
    pub listen: Option<String>,
    /// Unix socket path to listen on.
    pub socket: Option<PathBuf>,
    pub topic: Vec<ForwardPart>,
    /// For a topic the template cannot make (a missing field, an invalid name).
    pub topic_fallback: String,
    /// Record field whose string value keys the record.
    pub key_field: Option<String>,
    /// Names under which the tag and the event time are added to the record (`None`: not).
    pub tag_field: Option<String>,
    pub time_field: Option<String>,
    /// The shared key: clients must pass the HELO/PING/PONG handshake with it.
    pub shared_key: Option<Secret>,
    pub self_hostname: String,
    /// User authentication inside the handshake (name, password); needs `shared_key`.
    pub users: Vec<(String, Secret)>,
    /// TLS certificate chain and key (PEM): the TCP listener speaks TLS only.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight_bytes: usize,
    /// The files holding this section's secrets (shared key, user passwords, TLS key), by
    /// the key that named them: `check` warns when other users may read one.
    pub secret_files: Vec<(String, PathBuf)>,
}

/// One piece of the Forward topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPart {
    Literal(String),
    /// `{@tag}`: the event's tag.
    Tag,
    /// `{name}`: a string field of the record.
    Field(String),
}

/// The Forward input's topic when the journal input is on and forward.topic is not set.
pub(crate) const DEFAULT_FORWARD_TOPIC: &str = "fluent";

/// `[forward]`: at least one listener. The topic is never the journal's by default: a
/// Forward client writes whatever fields it likes (`_HOSTNAME`, `__SEQNUM`), and in a topic
/// of its own it cannot pass for a host's journal (readers also tell the records apart by
/// their headers, `format::SOURCE_HEADER`). With the journal input off, kafka.topic (when a
/// plain name) is the Forward input's. A TCP listener that other hosts can reach needs the
/// shared-key handshake: without it anyone on the network could write records.
pub(super) fn forward(
    raw: RawForward,
    span: Range<usize>,
    kafka: &KafkaConfig,
    journal_enabled: bool,
    at: &Locator,
) -> Result<ForwardConfig> {
    let listen_span = raw.listen.as_ref().map(|l| l.span());
    let listen = raw
        .listen
        .map(|l| {
            at.with("forward.listen", l, |l| {
                match l.parse::<std::net::SocketAddr>() {
                    Ok(_) => Ok(l),
                    Err(_) => Err(format!(
                        "{l:?} is not an address such as \"127.0.0.1:24224\""
                    )),
                }
            })
        })
        .transpose()?;
    let socket = raw
        .socket
        .map(|s| {
            at.with("forward.socket", s, |s| {
                if s.is_absolute() {
                    Ok(s)
                } else {
                    Err(format!("{} is not an absolute path", s.display()))
                }
            })
        })
        .transpose()?;
    if listen.is_none() && socket.is_none() {
        return at.err(
            "forward",
            span,
            "give forward.listen (\"127.0.0.1:24224\") or forward.socket, or both",
        );
    }
    let (topic, topic_fallback) = topic(
        raw.topic,
        raw.topic_fallback,
        span,
        kafka,
        journal_enabled,
        at,
    )?;
    let key_field = field_name(at, "forward.key_field", raw.key_field, None)?;
    let tag_field = field_name(at, "forward.tag_field", raw.tag_field, Some("fluent_tag"))?;
    let time_field = field_name(
        at,
        "forward.time_field",
        raw.time_field,
        Some("fluent_time"),
    )?;
    let mut secret_files = Vec::new();
    if let Some(p) = &raw.shared_key_file {
        secret_files.push(("forward.shared_key_file".to_string(), p.get_ref().clone()));
    }
    let shared_key = raw
        .shared_key_file
        .map(|p| read_secret(at, "forward.shared_key_file", p))
        .transpose()?;
    if let (Some(addr), Some(l_span), None) = (&listen, listen_span, &shared_key) {
        loopback_only(addr, l_span, at)?;
    }
    let users = users(raw.users, shared_key.is_some(), &mut secret_files, at)?;
    let self_hostname = match raw.self_hostname {
        Some(h) => h.into_inner(),
        None => gethostname::gethostname()
            .to_string_lossy()
            .trim()
            .to_string(),
    };
    let tls = tls(raw.tls_cert, raw.tls_key, &mut secret_files, at)?;
    let max_message_bytes = at.range(
        "forward.max_message_bytes",
        raw.max_message_bytes,
        8 << 20,
        1024,
        256 << 20,
    )? as usize;
    let max_connections = at.range(
        "forward.max_connections",
        raw.max_connections,
        64,
        1,
        65_536,
    )? as usize;
    let max_in_flight_bytes = at.range(
        "forward.max_in_flight_bytes",
        raw.max_in_flight_bytes,
        // As the journal's window (#19): 4 MiB holds ~60 ms of 200,000 events/s.
        4 << 20,
        64 << 10,
        1 << 34,
    )? as usize;
    Ok(ForwardConfig {
        listen,
        socket,
        topic,
        topic_fallback,
        key_field,
        tag_field,
        time_field,
        shared_key,
        self_hostname,
        users,
        tls,
        max_message_bytes,
        max_connections,
        max_in_flight_bytes,
        secret_files,
    })
}

/// forward.topic and forward.topic_fallback. Beside the journal input the default is a
/// topic of its own ("fluent"), refused when that is the journal's; alone, the Forward
/// input takes kafka.topic (a plain name) and its fallback.
fn topic(
    topic: Option<Spanned<String>>,
    topic_fallback: Option<Spanned<String>>,
    span: Range<usize>,
    kafka: &KafkaConfig,
    journal_enabled: bool,
    at: &Locator,
) -> Result<(Vec<ForwardPart>, String)> {
    let topic = match topic {
        Some(t) => at.with("forward.topic", t, |t| parse_forward_template(&t))?,
        None if journal_enabled && kafka.fixed_topic() == Some(DEFAULT_FORWARD_TOPIC) => {
            return at.err(
                "forward",
                span,
                format!("the Forward input's default topic {DEFAULT_FORWARD_TOPIC:?} is kafka.topic, the journal's: set forward.topic to a topic of its own"),
            );
        }
        None if journal_enabled => vec![ForwardPart::Literal(DEFAULT_FORWARD_TOPIC.into())],
        None => match kafka.fixed_topic() {
            Some(t) => vec![ForwardPart::Literal(t.to_string())],
            None => {
                return at.err(
                    "forward",
                    span,
                    "kafka.topic is a journal template: give forward.topic (\"{@tag}\" is the event's tag)",
                );
            }
        },
    };
    let topic_fallback = match topic_fallback {
        Some(t) => at.with("forward.topic_fallback", t, |t| {
            check_topic_name(&t).map(|()| t)
        })?,
        None if journal_enabled => DEFAULT_FORWARD_TOPIC.to_string(),
        None => kafka
            .topic_fallback
            .clone()
            .or_else(|| kafka.fixed_topic().map(str::to_string))
            .unwrap_or_else(|| DEFAULT_FORWARD_TOPIC.to_string()),
    };
    Ok((topic, topic_fallback))
}

/// A record field name the agent adds or reads: absent, `default`; `""`, none.
fn field_name(
    at: &Locator,
    key: &str,
    v: Option<Spanned<String>>,
    default: Option<&str>,
) -> Result<Option<String>> {
    match v {
        None => Ok(default.map(str::to_string)),
        Some(v) if v.get_ref().is_empty() => Ok(None),
        Some(v) => at.with(key, v, |s| {
            if s.len() > 256 {
                Err("must be at most 256 bytes".into())
            } else {
                Ok(Some(s))
            }
        }),
    }
}

/// The secret a file holds, without its trailing newline; an empty file is refused.
fn read_secret(at: &Locator, key: &str, p: Spanned<PathBuf>) -> Result<Secret> {
    at.with(key, p, |path| {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(Secret::new(text.to_string()))
    })
}

/// Without the shared key, only a loopback address: anyone who reaches the listener could
/// write records under this host's name.
fn loopback_only(addr: &str, span: Range<usize>, at: &Locator) -> Result<()> {
    let ip = addr
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .expect("checked above");
    if !ip.is_loopback() {
        return at.err(
            "forward.listen",
            span,
            format!(
                "{addr} can be reached from other hosts and forward.shared_key_file is not set: anyone who reaches it could write records under this host's name; set forward.shared_key_file (and users), or listen on 127.0.0.1 / forward.socket"
            ),
        );
    }
    Ok(())
}

/// forward.users: names and passwords, read now; part of the shared-key handshake, so
/// they need the shared key.
fn users(
    raw: Vec<Spanned<RawForwardUser>>,
    has_shared_key: bool,
    secret_files: &mut Vec<(String, PathBuf)>,
    at: &Locator,
) -> Result<Vec<(String, Secret)>> {
    let mut users = Vec::new();
    for u in raw {
        let span = u.span();
        let u = u.into_inner();
        if !has_shared_key {
            return at.err(
                "forward.users",
                span,
                "user authentication is part of the shared-key handshake: set forward.shared_key_file too",
            );
        }
        if u.name.is_empty() {
            return at.err("forward.users", span, "a user needs a name");
        }
        secret_files.push((
            format!("forward.users ({}) password_file", u.name),
            u.password_file.clone(),
        ));
        let password = read_secret(
            at,
            "forward.users.password_file",
            Spanned::new(span.clone(), u.password_file),
        )?;
        users.push((u.name, password));
    }
    Ok(users)
}

/// forward.tls_cert and forward.tls_key: both or neither.
fn tls(
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    secret_files: &mut Vec<(String, PathBuf)>,
    at: &Locator,
) -> Result<Option<(PathBuf, PathBuf)>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => {
            secret_files.push(("forward.tls_key".to_string(), k.get_ref().clone()));
            Ok(Some((c.into_inner(), k.into_inner())))
        }
        (Some(c), None) => at.err("forward.tls_cert", c.span(), "needs forward.tls_key too"),
        (None, Some(k)) => at.err("forward.tls_key", k.span(), "needs forward.tls_cert too"),
    }
}

/// `{@tag}` for the tag, `{name}` for a record field, literal text between (which must be
/// valid in a topic name on its own).
fn parse_forward_template(s: &str) -> std::result::Result<Vec<ForwardPart>, String> {
    let part = |name: &str| match name {
        "@tag" => Ok(ForwardPart::Tag),
        "" => Err(format!("empty '{{}}' in topic template {s:?}")),
        n => Ok(ForwardPart::Field(n.to_string())),
    };
    let parts = template(s, "topic", part, ForwardPart::Literal)?;
    if parts.is_empty() {
        return Err("must not be empty".into());
    }
    for p in &parts {
        // "." alone is fine between two fields ("{@tag}.{host}").
        if let ForwardPart::Literal(l) = p.clone() {
            if l != "." && l != ".." {
                check_topic_name(&l)?;
            }
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::test_support::{MIN, err};

    #[test]
    fn the_forward_section_and_its_mistakes() {
        let c = parse(&format!(
            "{MIN}[journal]\nenabled = false\n[forward]\nlisten = \"127.0.0.1:24224\"\ntopic = \"fluent.{{@tag}}.{{service}}\"\nkey_field = \"host\"\ntag_field = \"\"\n"
        ))
        .unwrap();
        let f = c.forward.unwrap();
        assert!(!c.journal.enabled);
        assert_eq!(
            f.topic,
            [
                ForwardPart::Literal("fluent.".into()),
                ForwardPart::Tag,
                ForwardPart::Literal(".".into()),
                ForwardPart::Field("service".into())
            ]
        );
        assert_eq!(f.topic_fallback, "journal");
        assert_eq!(
            (f.tag_field, f.time_field.as_deref()),
            (None, Some("fluent_time"))
        );
        assert_eq!(f.max_message_bytes, 8 << 20);
        let cases = [
            ("[journal]\nenabled = false\n", "leaves no input"),
            ("[forward]\ntopic = \"x\"\n", "give forward.listen"),
            (
                "[forward]\nlisten = \"localhost\"\n",
                "forward.listen (line",
            ),
            (
                "[forward]\nlisten = \"127.0.0.1:1\"\ntopic = \"a b{@tag}\"\n",
                "not a valid Kafka topic name",
            ),
            (
                "[forward]\nlisten = \"127.0.0.1:1\"\ntls_cert = \"/x\"\n",
                "needs forward.tls_key",
            ),
            (
                "[forward]\nlisten = \"127.0.0.1:1\"\nusers = [{ name = \"a\", password_file = \"/x\" }]\n",
                "set forward.shared_key_file",
            ),
            (
                "[forward]\nlisten = \"127.0.0.1:1\"\nshared_key_file = \"/nonexistent\"\n",
                "cannot read /nonexistent",
            ),
            (
                "[forward]\nlisten = \"127.0.0.1:1\"\n[delivery]\nmode = \"exactly-once\"\n",
                "cannot run in delivery.mode",
            ),
            (
                "[forward]\nlisten = \"127.0.0.1:1\"\nmax_message_bytes = 10\n",
                "forward.max_message_bytes",
            ),
        ];
        for (text, want) in cases {
            let e = err(&format!("{MIN}{text}"));
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    /// Issue 27, item 2: beside the journal, the Forward input never shares its topic by
    /// default, and a listener other hosts can reach needs the shared-key handshake.
    #[test]
    fn forward_events_stay_out_of_the_journal_topic_and_off_the_network_unauthenticated() {
        let c = parse(&format!("{MIN}[forward]\nlisten = \"127.0.0.1:24224\"\n")).unwrap();
        let f = c.forward.unwrap();
        assert_eq!(f.topic, [ForwardPart::Literal("fluent".into())]);
        assert_eq!(f.topic_fallback, "fluent");
        assert_eq!(c.kafka.fixed_topic(), Some("journal"));
        for listen in ["0.0.0.0:24224", "[::]:24224", "192.0.2.7:24224"] {
            let e = err(&format!("{MIN}[forward]\nlisten = \"{listen}\"\n"));
            assert!(
                e.contains("forward.listen (line 5)") && e.contains("forward.shared_key_file"),
                "{listen}: {e}"
            );
        }
        let e = err(
            "[kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"fluent\"\n[forward]\nlisten = \"127.0.0.1:24224\"\n",
        );
        assert!(e.contains("set forward.topic"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k3y\n").unwrap();
        let c = parse(&format!(
            "{MIN}[forward]\nlisten = \"0.0.0.0:24224\"\nshared_key_file = \"{}\"\n",
            key.display()
        ))
        .unwrap();
        assert!(c.forward.is_some());
    }
}
