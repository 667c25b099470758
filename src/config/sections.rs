//! The derived layer: each raw section turned into its typed, validated form.
//!
//! One function per section; every key goes through a helper of `check` so that each
//! error names the key and its line the same way.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use toml::Spanned;

use super::check::{
    Locator, check_match_term, check_topic_name, is_valid_field_name, parse_priority, parse_rfc3339,
};
use super::properties::check_user_property;
use super::raw::*;
use super::*;

/// Time limits above this would overflow `Instant` arithmetic on some platforms and mean
/// "never" anyway: one day.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

pub(super) fn journal(raw: RawJournal, at: &Locator) -> Result<JournalConfig> {
    let mut sources = Vec::new();
    if let Some(d) = raw.directory {
        if d.get_ref().as_os_str().is_empty() {
            return at.err("journal.directory", d.span(), "must not be empty");
        }
        sources.push((
            "journal.directory",
            d.span(),
            Source::Directory(d.into_inner()),
        ));
    }
    if let Some(f) = raw.files {
        if f.get_ref().is_empty() {
            return at.err("journal.files", f.span(), "must list at least one file");
        }
        sources.push(("journal.files", f.span(), Source::Files(f.into_inner())));
    }
    if let Some(ns) = raw.namespace {
        let valid = !ns.get_ref().is_empty()
            && ns
                .get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid {
            return at.err(
                "journal.namespace",
                ns.span(),
                "must be a non-empty name of letters, digits, '_', '-' or '.'",
            );
        }
        sources.push((
            "journal.namespace",
            ns.span(),
            Source::Namespace(ns.into_inner()),
        ));
    }
    if sources.len() > 1 {
        let (key, span, _) = &sources[1];
        return at.err(
            key,
            span.clone(),
            format!(
                "conflicts with {}: give at most one of journal.directory, journal.files, journal.namespace",
                sources[0].0
            ),
        );
    }
    let source = sources.pop().map(|s| s.2).unwrap_or(Source::Local);

    let since = |t: Spanned<String>| {
        at.with("journal.since", t, |t| {
            parse_rfc3339(&t)
                .map_err(|e| format!("{e} (expected RFC 3339, e.g. \"2026-01-01T00:00:00Z\")"))
        })
    };
    #[derive(Clone, Copy)]
    enum Named {
        Head,
        Tail,
        Since,
    }
    let start_span = raw.start.as_ref().map(|s| s.span());
    let named = at.choice(
        "journal.start",
        raw.start,
        // `since` alone is unambiguous: accept it without start = "since".
        if raw.since.is_some() {
            Named::Since
        } else {
            Named::Head
        },
        &[
            ("head", Named::Head),
            ("tail", Named::Tail),
            ("since", Named::Since),
        ],
    )?;
    let start = match (named, raw.since) {
        (Named::Head, None) => Start::Head,
        (Named::Tail, None) => Start::Tail,
        (Named::Since, Some(t)) => Start::Since(since(t)?),
        (Named::Since, None) => {
            return at.err(
                "journal.start",
                start_span.unwrap_or_default(),
                "\"since\" needs journal.since = \"<RFC 3339 time>\"",
            );
        }
        (Named::Head | Named::Tail, Some(t)) => {
            return at.err(
                "journal.since",
                t.span(),
                "only allowed with start = \"since\"",
            );
        }
    };

    let cursor_lost = at.choice(
        "journal.cursor_lost",
        raw.cursor_lost,
        CursorLost::Resume,
        &[
            ("resume", CursorLost::Resume),
            ("refuse", CursorLost::Refuse),
        ],
    )?;
    let max_priority = raw
        .priority
        .map(|p| at.with("journal.priority", p, |p| parse_priority(&p)))
        .transpose()?;

    let mut filter = Filter {
        max_priority,
        ..Filter::default()
    };
    let not_empty = |what: &'static str| {
        move |s: String| {
            if s.is_empty() {
                Err(format!("{what} must not be empty"))
            } else {
                Ok(s)
            }
        }
    };
    for u in raw.units {
        filter.units.push(at.with("journal.units", u, unit_name)?);
    }
    for i in raw.identifiers {
        filter
            .identifiers
            .push(at.with("journal.identifiers", i, not_empty("identifiers"))?);
    }
    for u in raw.exclude_units {
        filter
            .exclude_units
            .push(at.with("journal.exclude_units", u, unit_name)?);
    }
    for i in raw.exclude_identifiers {
        filter.exclude_identifiers.push(at.with(
            "journal.exclude_identifiers",
            i,
            not_empty("identifiers"),
        )?);
    }
    for m in raw.exclude_matches {
        filter.exclude_matches.push(at.with("journal.exclude_matches", m, |m| {
            if m == "+" {
                return Err("exclusions are ORed already: any term that matches excludes the entry; \"+\" has no meaning here".into());
            }
            check_match_term(&m).map(|()| m)
        })?);
    }
    filter.units_mode = at.choice(
        "journal.units_mode",
        raw.units_mode,
        UnitsMode::Processes,
        &[
            ("processes", UnitsMode::Processes),
            ("journalctl", UnitsMode::Journalctl),
        ],
    )?;
    for m in raw.matches {
        filter
            .matches
            .push(at.with("journal.matches", m, |m| check_match_term(&m).map(|()| m))?);
    }
    if let (Some(first), Some(last)) = (filter.matches.first(), filter.matches.last()) {
        if first == "+" || last == "+" {
            bail!("journal.matches: \"+\" joins two groups of terms and cannot be first or last");
        }
    }

    Ok(JournalConfig {
        enabled: raw.enabled.unwrap_or(true),
        source,
        start,
        cursor_lost,
        filter,
        exclude_own_entries: raw.exclude_own_entries.unwrap_or(true),
    })
}

pub(super) fn encoding(raw: RawEncoding, at: &Locator) -> Result<EncodingConfig> {
    let format = at.choice(
        "encoding.format",
        raw.format,
        Format::MessagePack,
        &[
            ("msgpack", Format::MessagePack),
            ("messagepack", Format::MessagePack),
            ("json", Format::Json),
        ],
    )?;
    let patterns = |key: &str, list: Vec<Spanned<String>>| -> Result<Vec<FieldPattern>> {
        list.into_iter()
            .map(|p| {
                at.with(key, p, |p| {
                    let name = p.strip_suffix('*').unwrap_or(&p);
                    if p.is_empty() || (!name.is_empty() && !is_valid_field_name(name)) {
                        return Err(format!(
                            "{p:?} is not a field name or a prefix ending in '*'"
                        ));
                    }
                    Ok(FieldPattern::parse(&p))
                })
            })
            .collect()
    };
    let add_fields_override = raw.add_fields_override.unwrap_or(false);
    let mut add_fields = Vec::new();
    for (name, value) in raw.add_fields {
        let key = format!("encoding.add_fields.{name}");
        let value = at.with(&key, value, |v| {
            if !is_valid_field_name(&name) || name.starts_with("__") {
                return Err(format!(
                    "{name:?} is not a journal field name (uppercase letters, digits and '_', not starting with a digit or \"__\")"
                ));
            }
            if !add_fields_override && is_journal_field(&name) {
                return Err(format!(
                    "{name} is a field journald or programs set; an added {name} would hide or be hidden by the entry's own (set encoding.add_fields_override = true to replace the entry's value)"
                ));
            }
            Ok(v)
        })?;
        add_fields.push((name, value));
    }
    Ok(EncodingConfig {
        format,
        add_fields,
        add_fields_override,
        lowercase_names: raw.lowercase_names.unwrap_or(false),
        strip_underscore: raw.strip_underscore.unwrap_or(false),
        priority_name: raw.priority_name.unwrap_or(false),
        include_fields: patterns("encoding.include_fields", raw.include_fields)?,
        exclude_fields: patterns("encoding.exclude_fields", raw.exclude_fields)?,
        max_record_bytes: at.range(
            "encoding.max_record_bytes",
            raw.max_record_bytes,
            DEFAULT_MAX_RECORD_BYTES as u64,
            4096,
            100_000_000,
        )? as usize,
    })
}

pub(super) fn kafka(
    raw: RawKafka,
    span: std::ops::Range<usize>,
    at: &Locator,
) -> Result<KafkaConfig> {
    let Some(brokers) = raw.brokers else {
        return at.err(
            "kafka.brokers",
            span,
            "missing: give the bootstrap brokers, e.g. \"127.0.0.1:9092\"",
        );
    };
    let brokers = at.with("kafka.brokers", brokers, |b| {
        if b.trim().is_empty() {
            Err("must not be empty".to_string())
        } else {
            Ok(b)
        }
    })?;
    let Some(topic) = raw.topic else {
        return at.err(
            "kafka.topic",
            span,
            "missing: give a topic name or a template such as \"journal-{_SYSTEMD_UNIT}\"",
        );
    };
    let topic_span = topic.span();
    let template = at.with("kafka.topic", topic, |t| parse_topic_template(&t))?;
    let topic_fallback = raw
        .topic_fallback
        .map(|f| {
            at.with("kafka.topic_fallback", f, |f| {
                check_topic_name(&f).map(|()| f)
            })
        })
        .transpose()?;
    if template.iter().any(|p| matches!(p, TopicPart::Field(_))) && topic_fallback.is_none() {
        return at.err(
            "kafka.topic",
            topic_span,
            "a template with {FIELD} needs kafka.topic_fallback for entries that lack the field",
        );
    }
    let key_field = match raw.key_field {
        None => None,
        Some(k) => at.with("kafka.key_field", k, |k| match k.as_str() {
            "" | "none" => Ok(None),
            name if is_valid_field_name(name) => Ok(Some(k)),
            _ => Err(format!(
                "{k:?} is not a journal field name (use \"none\" for no key)"
            )),
        })?,
    };
    let key_fields = match (key_field, raw.key_fields) {
        (Some(_), Some(k)) => {
            return at.err(
                "kafka.key_fields",
                k.span(),
                "give kafka.key_field or kafka.key_fields, not both",
            );
        }
        (Some(k), None) => vec![k],
        (None, Some(k)) => at.with("kafka.key_fields", k, |k| {
            match k.iter().find(|f| !is_valid_field_name(f)) {
                Some(bad) => Err(format!("{bad:?} is not a journal field name")),
                None => Ok(k),
            }
        })?,
        (None, None) => Vec::new(),
    };
    let key_separator = raw
        .key_separator
        .map_or_else(|| "/".to_string(), Spanned::into_inner);
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let key = format!("kafka.headers.\"{name}\"");
        let template = at.with(&key, value, |v| {
            if name.is_empty()
                || name.starts_with("journal-")
                || name.starts_with("journald-kafka")
            {
                return Err(format!(
                    "{name:?}: header names starting with journal- or journald-kafka are the agent's own (docs/format.md)"
                ));
            }
            template_parts(&v, "header")
        })?;
        headers.push((name, template));
    }

    let mut properties = BTreeMap::new();
    for (name, value) in raw.properties {
        let key = format!("kafka.properties.\"{name}\"");
        let text = at.with(&key, value, |v| {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(format!(
                        "expected a string, number or boolean, found {}",
                        other.type_str()
                    ));
                }
            };
            check_user_property(&name, &text).map(|()| text)
        })?;
        properties.insert(name, text);
    }

    if let Some(p) = raw.partitioner {
        const CHOICES: &[&str] = &[
            "random",
            "consistent",
            "consistent_random",
            "murmur2",
            "murmur2_random",
            "fnv1a",
            "fnv1a_random",
        ];
        if properties.contains_key("partitioner") {
            return at.err(
                "kafka.partitioner",
                p.span(),
                "also set as kafka.properties.partitioner: give it once",
            );
        }
        let p = at.with("kafka.partitioner", p, |p| {
            if CHOICES.contains(&p.as_str()) {
                Ok(p)
            } else {
                Err(format!("{p:?}: choose one of {}", CHOICES.join(", ")))
            }
        })?;
        properties.insert("partitioner".to_string(), p);
    }

    let sasl_password_file = raw.sasl_password_file.as_ref().map(|f| f.get_ref().clone());
    let sasl_password = password(
        at,
        raw.sasl_password_file,
        raw.sasl_password_credential,
        &properties,
    )?;

    Ok(KafkaConfig {
        brokers,
        topic: template,
        topic_fallback,
        key_fields,
        key_separator,
        headers,
        properties,
        sasl_password,
        sasl_password_file,
        connect_timeout_ms: at.range(
            "kafka.connect_timeout_ms",
            raw.connect_timeout_ms,
            30_000,
            100,
            MAX_TIMEOUT_MS,
        )?,
    })
}

/// The one template syntax (journal topic and header templates, the Forward topic):
/// literal text and `{name}` parts. `name` turns a name into a part (or says why not),
/// `literal` a piece of text; `what` names the template in errors.
fn template<P>(
    s: &str,
    what: &str,
    name: impl Fn(&str) -> std::result::Result<P, String>,
    literal: impl Fn(String) -> P,
) -> std::result::Result<Vec<P>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(literal(rest[..open].to_string()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("unclosed '{{' in {what} template {s:?}"));
        };
        parts.push(name(&rest[open + 1..open + close])?);
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(literal(rest.to_string()));
    }
    Ok(parts)
}

/// Literal text and `{FIELD}` parts of a journal template (`what` names it in errors): the
/// topic and header templates share this syntax.
fn template_parts(s: &str, what: &str) -> std::result::Result<Vec<TopicPart>, String> {
    let field = |name: &str| {
        if is_valid_field_name(name) {
            Ok(TopicPart::Field(name.to_string()))
        } else {
            Err(format!(
                "{{{name}}} in {what} template {s:?} is not a journal field name"
            ))
        }
    };
    template(s, what, field, TopicPart::Literal)
}

fn parse_topic_template(s: &str) -> std::result::Result<Vec<TopicPart>, String> {
    let parts = template_parts(s, "topic")?;
    if parts.is_empty() {
        return Err("must not be empty".into());
    }
    for p in &parts {
        if let TopicPart::Literal(l) = p {
            if l.contains('}') {
                return Err(format!("stray '}}' in topic template {s:?}"));
            }
            // Literal pieces must be valid on their own: the filled-in fields are sanitized.
            check_topic_name(l)?;
        }
    }
    Ok(parts)
}

pub(super) fn state(raw: RawState, at: &Locator) -> Result<StateConfig> {
    Ok(StateConfig {
        directory: raw
            .directory
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        checkpoint_interval_ms: at.range(
            "state.checkpoint_interval_ms",
            raw.checkpoint_interval_ms,
            1000,
            10,
            3_600_000,
        )?,
    })
}

pub(super) fn pipeline(raw: RawPipeline, at: &Locator) -> Result<PipelineConfig> {
    Ok(PipelineConfig {
        max_in_flight_entries: at.range(
            "pipeline.max_in_flight_entries",
            raw.max_in_flight_entries,
            50_000,
            1,
            10_000_000,
        )? as usize,
        max_in_flight_bytes: at.range(
            "pipeline.max_in_flight_bytes",
            raw.max_in_flight_bytes,
            // 4 MiB keeps the agent under 16 MiB of anonymous memory while it drains a
            // backlog, at the same rate and CPU per entry as 16 MiB (measured, #19).
            4 << 20,
            65_536,
            4 << 30,
        )? as usize,
        shutdown_timeout_ms: at.range(
            "pipeline.shutdown_timeout_ms",
            raw.shutdown_timeout_ms,
            10_000,
            0,
            MAX_TIMEOUT_MS,
        )?,
        retry_backoff_max_ms: at.range(
            "pipeline.retry_backoff_max_ms",
            raw.retry_backoff_max_ms,
            60_000,
            100,
            3_600_000,
        )?,
    })
}

pub(super) fn delivery(raw: RawDelivery, at: &Locator) -> Result<DeliveryConfig> {
    let mode = at.choice(
        "delivery.mode",
        raw.mode,
        Mode::AtLeastOnce,
        &[
            ("at-least-once", Mode::AtLeastOnce),
            ("exactly-once", Mode::ExactlyOnce),
        ],
    )?;
    let transactional_id = raw
        .transactional_id
        .map(|t| {
            at.with("delivery.transactional_id", t, |t| {
                if !t.is_empty() && t.len() <= 200 {
                    Ok(t)
                } else {
                    Err("must be 1 to 200 characters".to_string())
                }
            })
        })
        .transpose()?;
    let cursor_topic = match raw.cursor_topic {
        None => DEFAULT_CURSOR_TOPIC.to_string(),
        Some(t) => at.with("delivery.cursor_topic", t, |t| {
            check_topic_name(&t).map(|()| t)
        })?,
    };
    let transaction_timeout_ms = at.range(
        "delivery.transaction_timeout_ms",
        raw.transaction_timeout_ms,
        60_000,
        1_000,
        900_000,
    )?;
    Ok(DeliveryConfig {
        mode,
        transactional_id,
        cursor_topic,
        create_cursor_topic: raw.create_cursor_topic.unwrap_or(true),
        transaction_max_entries: at.range(
            "delivery.transaction_max_entries",
            raw.transaction_max_entries,
            100_000,
            1,
            10_000_000,
        )? as usize,
        // A transaction must close well within its timeout, or the coordinator aborts it;
        // the default stays inside a shortened timeout too.
        transaction_max_ms: at.range(
            "delivery.transaction_max_ms",
            raw.transaction_max_ms,
            5_000u64.min(transaction_timeout_ms / 2),
            10,
            transaction_timeout_ms / 2,
        )?,
        transaction_timeout_ms,
        on_too_large: at.choice(
            "delivery.on_too_large",
            raw.on_too_large,
            OnRefused::Shrink,
            &[
                ("shrink", OnRefused::Shrink),
                ("dead-letter", OnRefused::DeadLetter),
                ("stall", OnRefused::Stall),
            ],
        )?,
        on_topic_refused: at.choice(
            "delivery.on_topic_refused",
            raw.on_topic_refused,
            OnRefused::DeadLetter,
            &[
                ("dead-letter", OnRefused::DeadLetter),
                ("stall", OnRefused::Stall),
            ],
        )?,
        dead_letter_topic: match raw.dead_letter_topic {
            None => DEFAULT_DEAD_LETTER_TOPIC.to_string(),
            Some(t) => at.with("delivery.dead_letter_topic", t, |t| {
                check_topic_name(&t).map(|()| t)
            })?,
        },
        progress_interval_ms: match raw.progress_interval_ms {
            Some(p) if mode == Mode::ExactlyOnce && *p.get_ref() > 0 => {
                return at.err(
                    "delivery.progress_interval_ms",
                    p.span(),
                    "progress records are not produced in exactly-once mode yet (the cursor topic holds the agent's place there)",
                );
            }
            p => at.range("delivery.progress_interval_ms", p, 0, 0, 86_400_000)?,
        },
        progress_topic: raw
            .progress_topic
            .map(|t| {
                at.with("delivery.progress_topic", t, |t| {
                    check_topic_name(&t).map(|()| t)
                })
            })
            .transpose()?,
    })
}

pub(super) fn metrics(raw: RawMetrics, at: &Locator) -> Result<MetricsConfig> {
    let listen = raw
        .listen
        .map(|l| {
            at.with("metrics.listen", l, |l| {
                match l.parse::<std::net::SocketAddr>() {
                    Ok(_) => Ok(l),
                    Err(_) => Err(format!(
                        "{l:?} is not an address such as \"127.0.0.1:9464\""
                    )),
                }
            })
        })
        .transpose()?;
    Ok(MetricsConfig {
        listen,
        stall_seconds: at.range("metrics.stall_seconds", raw.stall_seconds, 60, 1, 86_400)?,
        min_loss_forecast_seconds: at.range(
            "metrics.min_loss_forecast_seconds",
            raw.min_loss_forecast_seconds,
            900,
            0,
            365 * 86_400,
        )?,
    })
}

pub(super) fn log(raw: RawLog, at: &Locator) -> Result<LogConfig> {
    let level = at.choice(
        "log.level",
        raw.level,
        "info",
        &[
            ("error", "error"),
            ("warn", "warn"),
            ("info", "info"),
            ("debug", "debug"),
            ("trace", "trace"),
        ],
    )?;
    let target = at.choice(
        "log.target",
        raw.target,
        LogTarget::Auto,
        &[
            ("auto", LogTarget::Auto),
            ("journal", LogTarget::Journal),
            ("stderr", LogTarget::Stderr),
        ],
    )?;
    Ok(LogConfig {
        level: level.to_string(),
        target,
    })
}

/// The SASL password from a file or a systemd credential (`LoadCredential=`), so that it
/// need not sit in the config file. One source only: two would leave the reader guessing
/// which one the agent used.
fn password(
    at: &Locator,
    file: Option<Spanned<PathBuf>>,
    credential: Option<Spanned<String>>,
    properties: &BTreeMap<String, String>,
) -> Result<Option<Secret>> {
    let in_properties = properties.contains_key("sasl.password")
        || properties.contains_key("sasl.oauthbearer.client.secret");
    let read = |path: &std::path::Path| -> std::result::Result<Secret, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            return Err(format!("the password file {} is empty", path.display()));
        }
        Ok(Secret::new(text.to_string()))
    };
    match (file, credential) {
        (Some(_), Some(c)) => at.err(
            "kafka.sasl_password_credential",
            c.span(),
            "set kafka.sasl_password_file or kafka.sasl_password_credential, not both",
        ),
        (Some(f), None) if in_properties => at.err(
            "kafka.sasl_password_file",
            f.span(),
            "kafka.properties.\"sasl.password\" is set too: keep the password in one place",
        ),
        (None, Some(c)) if in_properties => at.err(
            "kafka.sasl_password_credential",
            c.span(),
            "kafka.properties.\"sasl.password\" is set too: keep the password in one place",
        ),
        (Some(f), None) => at.with("kafka.sasl_password_file", f, |p| read(&p)).map(Some),
        (None, Some(c)) => at
            .with("kafka.sasl_password_credential", c, |name| {
                if name.is_empty() || name.contains('/') {
                    return Err(format!("{name:?} is not a credential name"));
                }
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    format!(
                        "$CREDENTIALS_DIRECTORY is not set: run under systemd with LoadCredential={name}:/path/to/password-file (the packaged unit shows how), or use kafka.sasl_password_file"
                    )
                })?;
                read(&std::path::Path::new(&dir).join(&name))
            })
            .map(Some),
        (None, None) => Ok(None),
    }
}

/// A unit name or pattern as `journalctl -u` takes it: a plain name without a unit type
/// gets `.service`; a pattern is kept as written.
fn unit_name(u: String) -> Result<String, String> {
    const TYPES: &[&str] = &[
        ".service",
        ".socket",
        ".target",
        ".device",
        ".mount",
        ".automount",
        ".swap",
        ".timer",
        ".path",
        ".slice",
        ".scope",
    ];
    if u.is_empty() {
        return Err("unit names must not be empty".into());
    }
    if u.contains(['/', '\n']) {
        return Err(format!("{u:?} is not a unit name"));
    }
    if crate::config::is_glob(&u) || TYPES.iter().any(|t| u.ends_with(t)) {
        Ok(u)
    } else {
        Ok(format!("{u}.service"))
    }
}

/// Fields journald or programs set (systemd.journal-fields(7)), and the agent's own: an
/// added field of such a name would collide with the entry's.
fn is_journal_field(name: &str) -> bool {
    const KNOWN: &[&str] = &[
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "ERRNO",
        "INVOCATION_ID",
        "USER_INVOCATION_ID",
        "SYSLOG_FACILITY",
        "SYSLOG_IDENTIFIER",
        "SYSLOG_PID",
        "SYSLOG_TIMESTAMP",
        "SYSLOG_RAW",
        "DOCUMENTATION",
        "TID",
        "UNIT",
        "USER_UNIT",
        "COREDUMP_UNIT",
        "COREDUMP_USER_UNIT",
        "CONTAINER_NAME",
        "CONTAINER_ID",
        "CONTAINER_TAG",
        "IMAGE_NAME",
    ];
    name.starts_with('_')
        || name.starts_with("OBJECT_")
        || name.starts_with("COREDUMP_")
        || name.starts_with("JOURNALD_KAFKA_")
        || KNOWN.contains(&name)
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
    span: std::ops::Range<usize>,
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
    let topic = match raw.topic {
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
    let topic_fallback = match raw.topic_fallback {
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
    let field_name = |key: &str, v: Option<Spanned<String>>, default: Option<&str>| match v {
        None => Ok(default.map(str::to_string)),
        Some(v) if v.get_ref().is_empty() => Ok(None),
        Some(v) => at.with(key, v, |s| {
            if s.len() > 256 {
                Err("must be at most 256 bytes".into())
            } else {
                Ok(Some(s))
            }
        }),
    };
    let key_field = field_name("forward.key_field", raw.key_field, None)?;
    let tag_field = field_name("forward.tag_field", raw.tag_field, Some("fluent_tag"))?;
    let time_field = field_name("forward.time_field", raw.time_field, Some("fluent_time"))?;
    let secret = |key: &str, p: Spanned<PathBuf>| {
        at.with(key, p, |path| {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                return Err(format!("{} is empty", path.display()));
            }
            Ok(Secret::new(text.to_string()))
        })
    };
    let mut secret_files = Vec::new();
    if let Some(p) = &raw.shared_key_file {
        secret_files.push(("forward.shared_key_file".to_string(), p.get_ref().clone()));
    }
    let shared_key = raw
        .shared_key_file
        .map(|p| secret("forward.shared_key_file", p))
        .transpose()?;
    if let (Some(addr), Some(l_span), None) = (&listen, listen_span, &shared_key) {
        let ip = addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .expect("checked above");
        if !ip.is_loopback() {
            return at.err(
                "forward.listen",
                l_span,
                format!(
                    "{addr} can be reached from other hosts and forward.shared_key_file is not set: anyone who reaches it could write records under this host's name; set forward.shared_key_file (and users), or listen on 127.0.0.1 / forward.socket"
                ),
            );
        }
    }
    let mut users = Vec::new();
    for u in raw.users {
        let span = u.span();
        let u = u.into_inner();
        if shared_key.is_none() {
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
        let password = secret(
            "forward.users.password_file",
            Spanned::new(span.clone(), u.password_file),
        )?;
        users.push((u.name, password));
    }
    let self_hostname = match raw.self_hostname {
        Some(h) => h.into_inner(),
        None => gethostname::gethostname()
            .to_string_lossy()
            .trim()
            .to_string(),
    };
    let tls = match (raw.tls_cert, raw.tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            secret_files.push(("forward.tls_key".to_string(), k.get_ref().clone()));
            Some((c.into_inner(), k.into_inner()))
        }
        (Some(c), None) => {
            return at.err("forward.tls_cert", c.span(), "needs forward.tls_key too");
        }
        (None, Some(k)) => {
            return at.err("forward.tls_key", k.span(), "needs forward.tls_cert too");
        }
    };
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
