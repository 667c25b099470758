//! `[encoding]`: the record's format, which fields it carries, static fields added to
//! every record, the opt-in name profile and the record size limit.
//!
//! Owns what the encoder is told, never how it encodes (`format` does). An added field
//! must never pass for one journald or a program set: `is_journal_field` is the rule.

use anyhow::Result;
use toml::Spanned;

use crate::config::check::{Locator, is_valid_field_name};
use crate::config::raw::RawEncoding;

pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    MessagePack,
    Json,
    /// OpenTelemetry's `LogsData` protobuf, one log record per Kafka record.
    Otlp,
}

/// A field selector: an exact field name, or a prefix when written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldPattern {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl FieldPattern {
    pub fn parse(s: &str) -> FieldPattern {
        match s.strip_suffix('*') {
            Some(p) => FieldPattern::Prefix(p.as_bytes().to_vec()),
            None => FieldPattern::Exact(s.as_bytes().to_vec()),
        }
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            FieldPattern::Exact(n) => n == name,
            FieldPattern::Prefix(p) => name.starts_with(p),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncodingConfig {
    pub format: Format,
    pub include_fields: Vec<FieldPattern>,
    pub exclude_fields: Vec<FieldPattern>,
    /// Upper bound of key + value + headers of one record; larger entries are truncated.
    pub max_record_bytes: usize,
    /// Static fields added to every record (name, value), in name order.
    pub add_fields: Vec<(String, String)>,
    /// An added field replaces the entry's own field of that name (else the entry's wins).
    pub add_fields_override: bool,
    /// Opt-in field-name profile for consumers that want it (the default is byte-exact):
    /// names in lowercase, and trusted fields' leading `_` dropped (`_HOSTNAME` →
    /// `HOSTNAME`). The `__` address fields and the agent's markers keep their names.
    pub lowercase_names: bool,
    pub strip_underscore: bool,
    /// Also `PRIORITY_NAME` ("warning", …) beside the numeric `PRIORITY`.
    pub priority_name: bool,
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
            ("otlp", Format::Otlp),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::test_support::{MIN, err};

    #[test]
    fn field_patterns_and_ranges() {
        let c = parse(&format!(
            "{MIN}[encoding]\nformat = \"json\"\nexclude_fields = [\"_SOURCE_*\", \"SEQ\"]\n"
        ))
        .unwrap();
        assert_eq!(c.encoding.format, Format::Json);
        assert!(c.encoding.exclude_fields[0].matches(b"_SOURCE_REALTIME_TIMESTAMP"));
        assert!(!c.encoding.exclude_fields[1].matches(b"SEQX"));
        let e = err(&format!("{MIN}[encoding]\ninclude_fields = [\"a b\"]\n"));
        assert!(e.contains("encoding.include_fields (line 5)"), "{e}");
        let e = err(&format!("{MIN}[encoding]\nformat = \"xml\"\n"));
        assert!(e.contains("encoding.format (line 5)"), "{e}");
        // Above the producer's default message.max.bytes: refused by `config::parse`.
        let e = err(&format!("{MIN}[encoding]\nmax_record_bytes = 2000000\n"));
        assert!(e.contains("message.max.bytes"), "{e}");
        let e = err(&format!("{MIN}[encoding]\nmax_record_bytes = 10\n"));
        assert!(e.contains("encoding.max_record_bytes (line 5)"), "{e}");
    }
}
