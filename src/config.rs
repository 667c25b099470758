//! Configuration: the TOML file, its defaults and its validation.
//!
//! Owns turning the user's file into a typed, validated [`Config`]. Every error names the
//! key and the line it came from, because an agent that refuses to start must say exactly
//! why. This module must never touch the journal, the network or the state directory:
//! `check` and `run` do that with an already-valid configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use toml::Spanned;

/// The fully parsed and validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub journal: JournalConfig,
    pub encoding: EncodingConfig,
    pub kafka: KafkaConfig,
    pub state: StateConfig,
    pub pipeline: PipelineConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub delivery: DeliveryConfig,
}

/// The delivery guarantee and, for exactly-once, its transaction settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The cursor lives in a file written after the broker confirmed the entries.
    AtLeastOnce,
    /// The cursor is committed inside the Kafka transaction that carries the entries.
    ExactlyOnce,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub mode: Mode,
    /// `None`: derived from the machine id and the journal source at start.
    pub transactional_id: Option<String>,
    pub cursor_topic: String,
    /// Create the cursor topic (compacted) when it does not exist.
    pub create_cursor_topic: bool,
    pub transaction_max_entries: usize,
    pub transaction_max_ms: u64,
    pub transaction_timeout_ms: u64,
}

pub const DEFAULT_CURSOR_TOPIC: &str = "journald-kafka-cursors";

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint (/metrics, /health/*); `None` keeps it off.
    pub listen: Option<String>,
    /// Not ready once the cursor has not moved for this long while entries are in flight.
    pub stall_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The local machine's journal (system and user journals, no remote ones).
    Local,
    Directory(PathBuf),
    Files(Vec<PathBuf>),
    Namespace(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Local => write!(f, "local journal"),
            Source::Directory(d) => write!(f, "journal directory {}", d.display()),
            Source::Files(files) => write!(f, "{} journal file(s)", files.len()),
            Source::Namespace(ns) => write!(f, "journal namespace {ns:?}"),
        }
    }
}

/// Where to begin when there is no saved cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Head,
    Tail,
    /// Microseconds since the Unix epoch.
    Since(u64),
}

/// What to do when the saved cursor no longer exists in the journal (it was vacuumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorLost {
    /// Report the gap loudly and continue at the oldest entry after it.
    Resume,
    /// Refuse to start until an operator decides.
    Refuse,
}

#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub source: Source,
    pub start: Start,
    pub cursor_lost: CursorLost,
    pub filter: Filter,
    /// Skip the agent's own log entries so it never ships (and logs about) itself.
    pub exclude_own_entries: bool,
}

/// Entry filters, evaluated by libsystemd as journal matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub units: Vec<String>,
    pub identifiers: Vec<String>,
    pub max_priority: Option<u8>,
    /// journalctl-style terms: `FIELD=value` or `+` (OR between groups).
    pub matches: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
            && self.identifiers.is_empty()
            && self.max_priority.is_none()
            && self.matches.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    MessagePack,
    Json,
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

#[derive(Debug, Clone)]
pub struct EncodingConfig {
    pub format: Format,
    pub include_fields: Vec<FieldPattern>,
    pub exclude_fields: Vec<FieldPattern>,
    /// Upper bound of key + value + headers of one record; larger entries are truncated.
    pub max_record_bytes: usize,
}

/// One piece of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPart {
    Literal(String),
    Field(String),
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: Vec<TopicPart>,
    /// Used when a field named by the topic template is missing from an entry.
    pub topic_fallback: Option<String>,
    /// Name of the field whose first value keys the record; `None` sends no key.
    pub key_field: Option<String>,
    /// librdkafka properties given by the user, already checked against the guarantee.
    pub properties: BTreeMap<String, String>,
    pub connect_timeout_ms: u64,
}

impl KafkaConfig {
    /// The topic when the template has no fields.
    pub fn fixed_topic(&self) -> Option<&str> {
        match self.topic.as_slice() {
            [TopicPart::Literal(t)] => Some(t),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub directory: PathBuf,
    pub checkpoint_interval_ms: u64,
}

impl StateConfig {
    pub fn cursor_file(&self) -> PathBuf {
        self.directory.join("cursor")
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub max_in_flight_entries: usize,
    pub max_in_flight_bytes: usize,
    pub shutdown_timeout_ms: u64,
    pub retry_backoff_max_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The journal when started by systemd (JOURNAL_STREAM is set), stderr otherwise.
    Auto,
    Journal,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub target: LogTarget,
}

// ---------------------------------------------------------------------------------------
// The file as written. Every section and key is optional except kafka.brokers and
// kafka.topic; `deny_unknown_fields` turns a typo into an error instead of a silent default.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    encoding: RawEncoding,
    kafka: Option<Spanned<RawKafka>>,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    delivery: RawDelivery,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    mode: Option<Spanned<String>>,
    transactional_id: Option<Spanned<String>>,
    cursor_topic: Option<Spanned<String>>,
    create_cursor_topic: Option<bool>,
    transaction_max_entries: Option<Spanned<u64>>,
    transaction_max_ms: Option<Spanned<u64>>,
    transaction_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
    stall_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    directory: Option<Spanned<PathBuf>>,
    files: Option<Spanned<Vec<PathBuf>>>,
    namespace: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    since: Option<Spanned<String>>,
    cursor_lost: Option<Spanned<String>>,
    exclude_own_entries: Option<bool>,
    #[serde(default)]
    units: Vec<Spanned<String>>,
    #[serde(default)]
    identifiers: Vec<Spanned<String>>,
    priority: Option<Spanned<toml::Value>>,
    #[serde(default)]
    matches: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEncoding {
    format: Option<Spanned<String>>,
    #[serde(default)]
    include_fields: Vec<Spanned<String>>,
    #[serde(default)]
    exclude_fields: Vec<Spanned<String>>,
    max_record_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: Option<Spanned<String>>,
    topic: Option<Spanned<String>>,
    topic_fallback: Option<Spanned<String>>,
    key_field: Option<Spanned<String>>,
    connect_timeout_ms: Option<u64>,
    #[serde(default)]
    properties: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    directory: Option<PathBuf>,
    checkpoint_interval_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    max_in_flight_entries: Option<Spanned<u64>>,
    max_in_flight_bytes: Option<Spanned<u64>>,
    shutdown_timeout_ms: Option<u64>,
    retry_backoff_max_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/journald-kafka";
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;
/// Kafka's own limit for topic names.
const MAX_TOPIC_LEN: usize = 249;

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Parses and validates configuration text.
pub fn parse(text: &str) -> Result<Config> {
    // toml's own error already names the line, the column and the offending key.
    let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let at = Locator { text };

    let Some(kafka) = raw.kafka else {
        bail!("missing section [kafka]: at least kafka.brokers and kafka.topic are required");
    };
    let kafka_span = kafka.span();
    let kafka = kafka.into_inner();

    let cfg = Config {
        journal: journal(raw.journal, &at)?,
        encoding: encoding(raw.encoding, &at)?,
        kafka: kafka_section(kafka, kafka_span, &at)?,
        state: state(raw.state, &at)?,
        pipeline: pipeline(raw.pipeline, &at)?,
        log: log(raw.log, &at)?,
        metrics: metrics_section(raw.metrics, &at)?,
        delivery: delivery(raw.delivery, &at)?,
    };
    // librdkafka refuses a record above its message.max.bytes before sending it; the
    // encoder's limit must stay below, or such an entry could never be shipped.
    let producer_max: usize = cfg
        .kafka
        .properties
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_RECORD_BYTES);
    if cfg.encoding.max_record_bytes > producer_max {
        bail!(
            "encoding.max_record_bytes ({}) exceeds the producer's message.max.bytes ({producer_max}): raise kafka.properties.\"message.max.bytes\" (and the broker's limit) or lower encoding.max_record_bytes",
            cfg.encoding.max_record_bytes
        );
    }
    Ok(cfg)
}

/// Turns byte offsets into "line N" for messages about values that parsed but are wrong.
struct Locator<'a> {
    text: &'a str,
}

impl Locator<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(&self, key: &str, span: std::ops::Range<usize>, msg: impl fmt::Display) -> Result<T> {
        bail!("{key} (line {}): {msg}", self.line(span))
    }
}

fn journal(raw: RawJournal, at: &Locator) -> Result<JournalConfig> {
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

    let start = match (raw.start, raw.since) {
        (None, None) => Start::Head,
        (Some(s), since) => match (s.get_ref().as_str(), since) {
            ("head", None) => Start::Head,
            ("tail", None) => Start::Tail,
            ("since", Some(t)) => Start::Since(parse_rfc3339(t.get_ref()).or_else(|e| {
                at.err(
                    "journal.since",
                    t.span(),
                    format!("{e} (expected RFC 3339, e.g. \"2026-01-01T00:00:00Z\")"),
                )
            })?),
            ("since", None) => {
                return at.err(
                    "journal.start",
                    s.span(),
                    "\"since\" needs journal.since = \"<RFC 3339 time>\"",
                );
            }
            ("head" | "tail", Some(t)) => {
                return at.err(
                    "journal.since",
                    t.span(),
                    "only allowed with start = \"since\"",
                );
            }
            (other, _) => {
                return at.err(
                    "journal.start",
                    s.span(),
                    format!("unknown value {other:?}: expected \"head\", \"tail\" or \"since\""),
                );
            }
        },
        // `since` alone is unambiguous: accept it without start = "since".
        (None, Some(t)) => Start::Since(parse_rfc3339(t.get_ref()).or_else(|e| {
            at.err(
                "journal.since",
                t.span(),
                format!("{e} (expected RFC 3339, e.g. \"2026-01-01T00:00:00Z\")"),
            )
        })?),
    };

    let cursor_lost = match raw.cursor_lost {
        None => CursorLost::Resume,
        Some(v) => match v.get_ref().as_str() {
            "resume" => CursorLost::Resume,
            "refuse" => CursorLost::Refuse,
            other => {
                return at.err(
                    "journal.cursor_lost",
                    v.span(),
                    format!("unknown value {other:?}: expected \"resume\" or \"refuse\""),
                );
            }
        },
    };

    let max_priority = match raw.priority {
        None => None,
        Some(p) => {
            Some(parse_priority(p.get_ref()).or_else(|e| at.err("journal.priority", p.span(), e))?)
        }
    };

    let mut filter = Filter {
        max_priority,
        ..Filter::default()
    };
    for u in raw.units {
        if u.get_ref().is_empty() {
            return at.err("journal.units", u.span(), "unit names must not be empty");
        }
        filter.units.push(u.into_inner());
    }
    for i in raw.identifiers {
        if i.get_ref().is_empty() {
            return at.err(
                "journal.identifiers",
                i.span(),
                "identifiers must not be empty",
            );
        }
        filter.identifiers.push(i.into_inner());
    }
    for m in raw.matches {
        if let Err(e) = check_match_term(m.get_ref()) {
            return at.err("journal.matches", m.span(), e);
        }
        filter.matches.push(m.into_inner());
    }
    if let (Some(first), Some(last)) = (filter.matches.first(), filter.matches.last()) {
        if first == "+" || last == "+" {
            bail!("journal.matches: \"+\" joins two groups of terms and cannot be first or last");
        }
    }

    Ok(JournalConfig {
        source,
        start,
        cursor_lost,
        filter,
        exclude_own_entries: raw.exclude_own_entries.unwrap_or(true),
    })
}

/// A journal field name: uppercase letters, digits and '_', not starting with a digit.
/// libsystemd refuses anything else in a match, so refuse it here with a better message.
pub fn is_valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn check_match_term(term: &str) -> std::result::Result<(), String> {
    if term == "+" {
        return Ok(());
    }
    let Some((name, _value)) = term.split_once('=') else {
        return Err(format!("{term:?} is neither \"FIELD=value\" nor \"+\""));
    };
    if !is_valid_field_name(name) {
        return Err(format!(
            "{name:?} in {term:?} is not a journal field name (uppercase letters, digits, '_')"
        ));
    }
    Ok(())
}

/// A priority given on the command line: a number 0-7 or a name.
pub fn parse_priority_text(s: &str) -> std::result::Result<u8, String> {
    match s.parse::<i64>() {
        Ok(n) => parse_priority(&toml::Value::Integer(n)),
        Err(_) => parse_priority(&toml::Value::String(s.to_string())),
    }
}

fn parse_priority(v: &toml::Value) -> std::result::Result<u8, String> {
    const NAMES: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    match v {
        toml::Value::Integer(n) if (0..=7).contains(n) => Ok(*n as u8),
        toml::Value::String(s) => NAMES
            .iter()
            .position(|n| n == s)
            .map(|p| p as u8)
            .ok_or_else(|| format!("unknown priority {s:?}: expected 0-7 or one of {NAMES:?}")),
        other => Err(format!(
            "expected 0-7 or a name such as \"warning\", found {other}"
        )),
    }
}

fn encoding(raw: RawEncoding, at: &Locator) -> Result<EncodingConfig> {
    let format = match raw.format {
        None => Format::MessagePack,
        Some(f) => match f.get_ref().as_str() {
            "msgpack" | "messagepack" => Format::MessagePack,
            "json" => Format::Json,
            other => {
                return at.err(
                    "encoding.format",
                    f.span(),
                    format!("unknown format {other:?}: expected \"msgpack\" or \"json\""),
                );
            }
        },
    };
    let patterns = |key: &str, list: Vec<Spanned<String>>| -> Result<Vec<FieldPattern>> {
        list.into_iter()
            .map(|p| {
                let name = p.get_ref().strip_suffix('*').unwrap_or(p.get_ref());
                if p.get_ref().is_empty() || (!name.is_empty() && !is_valid_field_name(name)) {
                    return at.err(
                        key,
                        p.span(),
                        format!(
                            "{:?} is not a field name or a prefix ending in '*'",
                            p.get_ref()
                        ),
                    );
                }
                Ok(FieldPattern::parse(p.get_ref()))
            })
            .collect()
    };
    let include_fields = patterns("encoding.include_fields", raw.include_fields)?;
    let exclude_fields = patterns("encoding.exclude_fields", raw.exclude_fields)?;
    let max_record_bytes = match raw.max_record_bytes {
        None => DEFAULT_MAX_RECORD_BYTES,
        Some(m) if (4096..=100_000_000).contains(m.get_ref()) => *m.get_ref() as usize,
        Some(m) => {
            return at.err(
                "encoding.max_record_bytes",
                m.span(),
                "must be between 4096 and 100000000",
            );
        }
    };
    Ok(EncodingConfig {
        format,
        include_fields,
        exclude_fields,
        max_record_bytes,
    })
}

fn kafka_section(raw: RawKafka, span: std::ops::Range<usize>, at: &Locator) -> Result<KafkaConfig> {
    let Some(brokers) = raw.brokers else {
        return at.err(
            "kafka.brokers",
            span,
            "missing: give the bootstrap brokers, e.g. \"127.0.0.1:9092\"",
        );
    };
    if brokers.get_ref().trim().is_empty() {
        return at.err("kafka.brokers", brokers.span(), "must not be empty");
    }
    let Some(topic) = raw.topic else {
        return at.err(
            "kafka.topic",
            span,
            "missing: give a topic name or a template such as \"journal-{_SYSTEMD_UNIT}\"",
        );
    };
    let template = parse_topic_template(topic.get_ref())
        .or_else(|e| at.err("kafka.topic", topic.span(), e))?;
    let topic_fallback = match raw.topic_fallback {
        None => None,
        Some(f) => {
            if let Err(e) = check_topic_name(f.get_ref()) {
                return at.err("kafka.topic_fallback", f.span(), e);
            }
            Some(f.into_inner())
        }
    };
    if template.iter().any(|p| matches!(p, TopicPart::Field(_))) && topic_fallback.is_none() {
        return at.err(
            "kafka.topic",
            topic.span(),
            "a template with {FIELD} needs kafka.topic_fallback for entries that lack the field",
        );
    }
    let key_field = match raw.key_field {
        None => None,
        Some(k) if k.get_ref() == "none" || k.get_ref().is_empty() => None,
        Some(k) => {
            if !is_valid_field_name(k.get_ref()) {
                return at.err(
                    "kafka.key_field",
                    k.span(),
                    format!(
                        "{:?} is not a journal field name (use \"none\" for no key)",
                        k.get_ref()
                    ),
                );
            }
            Some(k.into_inner())
        }
    };

    let mut properties = BTreeMap::new();
    for (name, value) in raw.properties {
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                return at.err(
                    &format!("kafka.properties.\"{name}\""),
                    value.span(),
                    format!(
                        "expected a string, number or boolean, found {}",
                        other.type_str()
                    ),
                );
            }
        };
        if let Err(e) = crate::kafka::check_user_property(&name, &text) {
            return at.err(&format!("kafka.properties.\"{name}\""), value.span(), e);
        }
        properties.insert(name, text);
    }

    Ok(KafkaConfig {
        brokers: brokers.into_inner(),
        topic: template,
        topic_fallback,
        key_field,
        properties,
        connect_timeout_ms: raw.connect_timeout_ms.unwrap_or(30_000),
    })
}

/// Kafka topic names: 1-249 of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn check_topic_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOPIC_LEN || name == "." || name == ".." {
        return Err(format!(
            "{name:?} is not a valid Kafka topic name (1-{MAX_TOPIC_LEN} characters)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(format!(
            "{name:?} is not a valid Kafka topic name: {c:?} is not allowed (only letters, digits, '.', '_', '-')"
        ));
    }
    Ok(())
}

fn parse_topic_template(s: &str) -> std::result::Result<Vec<TopicPart>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TopicPart::Literal(rest[..open].to_string()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("unclosed '{{' in topic template {s:?}"));
        };
        let name = &rest[open + 1..open + close];
        if !is_valid_field_name(name) {
            return Err(format!(
                "{{{name}}} in topic template {s:?} is not a journal field name"
            ));
        }
        parts.push(TopicPart::Field(name.to_string()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TopicPart::Literal(rest.to_string()));
    }
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

fn state(raw: RawState, at: &Locator) -> Result<StateConfig> {
    let checkpoint_interval_ms = match raw.checkpoint_interval_ms {
        None => 1000,
        Some(v) if (10..=3_600_000).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return at.err(
                "state.checkpoint_interval_ms",
                v.span(),
                "must be between 10 and 3600000",
            );
        }
    };
    Ok(StateConfig {
        directory: raw
            .directory
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        checkpoint_interval_ms,
    })
}

fn pipeline(raw: RawPipeline, at: &Locator) -> Result<PipelineConfig> {
    let max_in_flight_entries = match raw.max_in_flight_entries {
        None => 50_000,
        Some(v) if (1..=10_000_000).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            return at.err(
                "pipeline.max_in_flight_entries",
                v.span(),
                "must be between 1 and 10000000",
            );
        }
    };
    let max_in_flight_bytes = match raw.max_in_flight_bytes {
        None => 16 << 20,
        Some(v) if (65_536..=(4u64 << 30)).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            return at.err(
                "pipeline.max_in_flight_bytes",
                v.span(),
                "must be between 65536 and 4294967296",
            );
        }
    };
    let retry_backoff_max_ms = match raw.retry_backoff_max_ms {
        None => 60_000,
        Some(v) if (100..=3_600_000).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return at.err(
                "pipeline.retry_backoff_max_ms",
                v.span(),
                "must be between 100 and 3600000",
            );
        }
    };
    Ok(PipelineConfig {
        max_in_flight_entries,
        max_in_flight_bytes,
        shutdown_timeout_ms: raw.shutdown_timeout_ms.unwrap_or(10_000),
        retry_backoff_max_ms,
    })
}

fn delivery(raw: RawDelivery, at: &Locator) -> Result<DeliveryConfig> {
    let mode = match raw.mode {
        None => Mode::AtLeastOnce,
        Some(m) => match m.get_ref().as_str() {
            "at-least-once" => Mode::AtLeastOnce,
            "exactly-once" => Mode::ExactlyOnce,
            other => {
                return at.err(
                    "delivery.mode",
                    m.span(),
                    format!("{other:?} is not \"at-least-once\" or \"exactly-once\""),
                );
            }
        },
    };
    let transactional_id = match raw.transactional_id {
        None => None,
        Some(t) if !t.get_ref().is_empty() && t.get_ref().len() <= 200 => Some(t.into_inner()),
        Some(t) => {
            return at.err(
                "delivery.transactional_id",
                t.span(),
                "must be 1 to 200 characters",
            );
        }
    };
    let cursor_topic = match raw.cursor_topic {
        None => DEFAULT_CURSOR_TOPIC.to_string(),
        Some(t) => {
            if let Err(e) = check_topic_name(t.get_ref()) {
                return at.err("delivery.cursor_topic", t.span(), e);
            }
            t.into_inner()
        }
    };
    let bounded = |v: Option<Spanned<u64>>, key: &str, default: u64, lo: u64, hi: u64| match v {
        None => Ok(default),
        Some(v) if (lo..=hi).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => at.err(key, v.span(), format!("must be between {lo} and {hi}")),
    };
    let transaction_timeout_ms = bounded(
        raw.transaction_timeout_ms,
        "delivery.transaction_timeout_ms",
        60_000,
        1_000,
        900_000,
    )?;
    Ok(DeliveryConfig {
        mode,
        transactional_id,
        cursor_topic,
        create_cursor_topic: raw.create_cursor_topic.unwrap_or(true),
        transaction_max_entries: bounded(
            raw.transaction_max_entries,
            "delivery.transaction_max_entries",
            100_000,
            1,
            10_000_000,
        )? as usize,
        // A transaction must close well within its timeout, or the coordinator aborts it.
        transaction_max_ms: bounded(
            raw.transaction_max_ms,
            "delivery.transaction_max_ms",
            // Well inside a shortened transaction timeout too.
            5_000u64.min(transaction_timeout_ms / 2),
            10,
            transaction_timeout_ms / 2,
        )?,
        transaction_timeout_ms,
    })
}

fn metrics_section(raw: RawMetrics, at: &Locator) -> Result<MetricsConfig> {
    let listen = match raw.listen {
        None => None,
        Some(l) => {
            if l.get_ref().parse::<std::net::SocketAddr>().is_err() {
                return at.err(
                    "metrics.listen",
                    l.span(),
                    format!(
                        "{:?} is not an address such as \"127.0.0.1:9464\"",
                        l.get_ref()
                    ),
                );
            }
            Some(l.into_inner())
        }
    };
    let stall_seconds = match raw.stall_seconds {
        None => 60,
        Some(v) if *v.get_ref() >= 1 => *v.get_ref(),
        Some(v) => return at.err("metrics.stall_seconds", v.span(), "must be at least 1"),
    };
    Ok(MetricsConfig {
        listen,
        stall_seconds,
    })
}

fn log(raw: RawLog, at: &Locator) -> Result<LogConfig> {
    let level = match raw.level {
        None => "info".to_string(),
        Some(l) => {
            if !["error", "warn", "info", "debug", "trace"].contains(&l.get_ref().as_str()) {
                return at.err(
                    "log.level",
                    l.span(),
                    format!(
                        "unknown level {:?}: expected error, warn, info, debug or trace",
                        l.get_ref()
                    ),
                );
            }
            l.into_inner()
        }
    };
    let target = match raw.target {
        None => LogTarget::Auto,
        Some(t) => match t.get_ref().as_str() {
            "auto" => LogTarget::Auto,
            "journal" => LogTarget::Journal,
            "stderr" => LogTarget::Stderr,
            other => {
                return at.err(
                    "log.target",
                    t.span(),
                    format!(
                        "unknown target {other:?}: expected \"auto\", \"journal\" or \"stderr\""
                    ),
                );
            }
        },
    };
    Ok(LogConfig { level, target })
}

/// Parses an RFC 3339 timestamp into microseconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("{s:?} is not an RFC 3339 time");
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> std::result::Result<i64, String> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse::<i64>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(format!("{s:?} has a field out of range"));
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let frac = &s[start..i.min(start + 6)];
        micros = frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(6 - frac.len() as u32);
    }
    let offset_secs = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad()),
    };
    // Days from civil (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    if secs < 0 {
        return Err(format!("{s:?} is before 1970"));
    }
    Ok(secs as u64 * 1_000_000 + micros as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    const MIN: &str = "[kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"journal\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.journal.source, Source::Local);
        assert_eq!(c.journal.start, Start::Head);
        assert_eq!(c.journal.cursor_lost, CursorLost::Resume);
        assert!(c.journal.filter.is_empty());
        assert_eq!(c.encoding.format, Format::MessagePack);
        assert_eq!(c.kafka.fixed_topic(), Some("journal"));
        assert_eq!(c.kafka.key_field, None);
        assert_eq!(c.state.directory, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(
            c.state.cursor_file(),
            PathBuf::from("/var/lib/journald-kafka/cursor")
        );
        assert_eq!(c.pipeline.max_in_flight_entries, 50_000);
        assert_eq!(c.log.target, LogTarget::Auto);
    }

    #[test]
    fn delivery_section() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.delivery.mode, Mode::AtLeastOnce);
        assert_eq!(c.delivery.cursor_topic, DEFAULT_CURSOR_TOPIC);
        assert_eq!(c.delivery.transaction_max_ms, 5_000);
        let c = parse(&format!(
            "{MIN}[delivery]\nmode = \"exactly-once\"\ntransactional_id = \"web-01\"\ntransaction_timeout_ms = 4000\n"
        ))
        .unwrap();
        assert_eq!(c.delivery.mode, Mode::ExactlyOnce);
        assert_eq!(c.delivery.transactional_id.as_deref(), Some("web-01"));
        // The default transaction length stays inside a shortened timeout.
        assert_eq!(c.delivery.transaction_max_ms, 2_000);
        let e = err(&format!("{MIN}[delivery]\nmode = \"exactly-twice\"\n"));
        assert!(e.contains("delivery.mode") && e.contains("line 5"), "{e}");
        let e = err(&format!(
            "{MIN}[delivery]\ntransaction_timeout_ms = 10000\ntransaction_max_ms = 9000\n"
        ));
        assert!(
            e.contains("delivery.transaction_max_ms") && e.contains("line 6"),
            "{e}"
        );
        let e = err(&format!("{MIN}[delivery]\ncursor_topic = \"a b\"\n"));
        assert!(e.contains("delivery.cursor_topic"), "{e}");
    }

    #[test]
    fn the_packaged_example_parses() {
        let text = include_str!("../packaging/config.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err(&format!("{MIN}[journal]\ndirectroy = \"/x\"\n"));
        assert!(e.contains("directroy"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = err(&format!(
            "{MIN}[pipeline]\nmax_in_flight_entries = \"many\"\n"
        ));
        assert!(e.contains("max_in_flight_entries"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn missing_kafka_section_or_keys() {
        assert!(err("").contains("missing section [kafka]"));
        let e = err("[kafka]\ntopic = \"t\"\n");
        assert!(e.contains("kafka.brokers") && e.contains("missing"), "{e}");
        let e = err("[kafka]\nbrokers = \"b:1\"\n");
        assert!(e.contains("kafka.topic") && e.contains("missing"), "{e}");
    }

    #[test]
    fn conflicting_sources() {
        let e = err(&format!(
            "{MIN}[journal]\ndirectory = \"/a\"\nnamespace = \"x\"\n"
        ));
        assert!(
            e.contains("journal.namespace (line 6)") && e.contains("conflicts"),
            "{e}"
        );
    }

    #[test]
    fn start_positions() {
        let c = parse(&format!("{MIN}[journal]\nstart = \"tail\"\n")).unwrap();
        assert_eq!(c.journal.start, Start::Tail);
        let c = parse(&format!(
            "{MIN}[journal]\nstart = \"since\"\nsince = \"2026-01-01T00:00:00Z\"\n"
        ))
        .unwrap();
        assert_eq!(c.journal.start, Start::Since(1_767_225_600_000_000));
        let e = err(&format!("{MIN}[journal]\nstart = \"since\"\n"));
        assert!(e.contains("journal.start (line 5)"), "{e}");
        let e = err(&format!(
            "{MIN}[journal]\nstart = \"since\"\nsince = \"yesterday\"\n"
        ));
        assert!(
            e.contains("journal.since (line 6)") && e.contains("RFC 3339"),
            "{e}"
        );
        let e = err(&format!("{MIN}[journal]\nstart = \"middle\"\n"));
        assert!(
            e.contains("journal.start (line 5)") && e.contains("middle"),
            "{e}"
        );
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(1_500_000));
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00+01:00"),
            Ok(951_865_200_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123456-00:30"),
            Ok(1_709_209_800_123_456)
        );
        assert!(parse_rfc3339("2024-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("2024-01-01T00:00:00").is_err());
        assert!(parse_rfc3339("2024-01-01").is_err());
    }

    #[test]
    fn filters() {
        let c = parse(&format!(
            "{MIN}[journal]\nunits = [\"a.service\"]\nidentifiers = [\"sshd\"]\npriority = \"warning\"\nmatches = [\"_TRANSPORT=kernel\", \"+\", \"FOO=bar=baz\"]\n"
        ))
        .unwrap();
        let f = &c.journal.filter;
        assert_eq!(f.units, vec!["a.service"]);
        assert_eq!(f.max_priority, Some(4));
        assert_eq!(f.matches.len(), 3);
        let e = err(&format!("{MIN}[journal]\npriority = 9\n"));
        assert!(e.contains("journal.priority (line 5)"), "{e}");
        let e = err(&format!("{MIN}[journal]\nmatches = [\"lower=x\"]\n"));
        assert!(
            e.contains("journal.matches (line 5)") && e.contains("lower"),
            "{e}"
        );
        let e = err(&format!("{MIN}[journal]\nmatches = [\"NOEQUALS\"]\n"));
        assert!(e.contains("neither"), "{e}");
        let e = err(&format!("{MIN}[journal]\nmatches = [\"+\", \"A=b\"]\n"));
        assert!(e.contains("cannot be first or last"), "{e}");
    }

    #[test]
    fn topic_templates() {
        let c = parse("[kafka]\nbrokers = \"b:1\"\ntopic = \"journal-{_SYSTEMD_UNIT}.x\"\ntopic_fallback = \"journal-other\"\n").unwrap();
        let e = err("[kafka]\nbrokers = \"b:1\"\ntopic = \"journal-{_SYSTEMD_UNIT}\"\n");
        assert!(
            e.contains("kafka.topic (line 3)") && e.contains("topic_fallback"),
            "{e}"
        );
        assert_eq!(
            c.kafka.topic,
            vec![
                TopicPart::Literal("journal-".into()),
                TopicPart::Field("_SYSTEMD_UNIT".into()),
                TopicPart::Literal(".x".into())
            ]
        );
        assert_eq!(c.kafka.fixed_topic(), None);
        for bad in ["journal-{x}", "journal-{_A", "bad topic", "a}b"] {
            let e = err(&format!("[kafka]\nbrokers = \"b:1\"\ntopic = \"{bad}\"\n"));
            assert!(e.contains("kafka.topic (line 3)"), "{bad}: {e}");
        }
        let e = err("[kafka]\nbrokers = \"b:1\"\ntopic = \"t\"\ntopic_fallback = \"a b\"\n");
        assert!(e.contains("kafka.topic_fallback (line 4)"), "{e}");
    }

    #[test]
    fn key_field() {
        let c = parse(&format!("{MIN}key_field = \"_HOSTNAME\"\n")).unwrap();
        assert_eq!(c.kafka.key_field.as_deref(), Some("_HOSTNAME"));
        let c = parse(&format!("{MIN}key_field = \"none\"\n")).unwrap();
        assert_eq!(c.kafka.key_field, None);
        let e = err(&format!("{MIN}key_field = \"host name\"\n"));
        assert!(e.contains("kafka.key_field (line 4)"), "{e}");
    }

    #[test]
    fn weakening_properties_are_refused_with_line() {
        for (k, v) in [
            ("acks", "\"1\""),
            ("request.required.acks", "0"),
            ("enable.idempotence", "false"),
            ("message.timeout.ms", "5000"),
            ("delivery.timeout.ms", "1000"),
            ("bootstrap.servers", "\"x:1\""),
            ("transactional.id", "\"t\""),
        ] {
            let e = err(&format!("{MIN}[kafka.properties]\n\"{k}\" = {v}\n"));
            assert!(
                e.contains(&format!("kafka.properties.\"{k}\" (line 5)")),
                "{k}: {e}"
            );
        }
        let c = parse(&format!(
            "{MIN}[kafka.properties]\n\"acks\" = \"all\"\n\"linger.ms\" = 100\n\"message.timeout.ms\" = 0\n\"compression.codec\" = \"zstd\"\n"
        ))
        .unwrap();
        assert_eq!(c.kafka.properties["linger.ms"], "100");
        let e = err(&format!("{MIN}[kafka.properties]\n\"linger.ms\" = [1]\n"));
        assert!(e.contains("expected a string"), "{e}");
    }

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
        let e = err(&format!("{MIN}[encoding]\nmax_record_bytes = 2000000\n"));
        assert!(e.contains("message.max.bytes"), "{e}");
        let e = err(&format!("{MIN}[encoding]\nmax_record_bytes = 10\n"));
        assert!(e.contains("encoding.max_record_bytes (line 5)"), "{e}");
        let e = err(&format!("{MIN}[pipeline]\nmax_in_flight_entries = 0\n"));
        assert!(e.contains("pipeline.max_in_flight_entries (line 5)"), "{e}");
        let e = err(&format!("{MIN}[state]\ncheckpoint_interval_ms = 1\n"));
        assert!(e.contains("state.checkpoint_interval_ms (line 5)"), "{e}");
        let e = err(&format!("{MIN}[log]\nlevel = \"loud\"\n"));
        assert!(e.contains("log.level (line 5)"), "{e}");
        let e = err(&format!("{MIN}[log]\ntarget = \"file\"\n"));
        assert!(e.contains("log.target (line 5)"), "{e}");
        let e = err(&format!("{MIN}[metrics]\nlisten = \"everywhere\"\n"));
        assert!(e.contains("metrics.listen (line 5)"), "{e}");
        let c = parse(&format!("{MIN}[metrics]\nlisten = \"127.0.0.1:9464\"\n")).unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(c.metrics.stall_seconds, 60);
        let e = err(&format!("{MIN}[journal]\ncursor_lost = \"skip\"\n"));
        assert!(e.contains("journal.cursor_lost (line 5)"), "{e}");
    }

    mod fuzz {
        use super::super::parse;
        use proptest::prelude::*;

        const EXAMPLE: &str = include_str!("../packaging/config.toml");

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any text: no panic, and an error always says something.
            #[test]
            fn arbitrary_text(s in ".{0,400}") {
                if let Err(e) = parse(&s) {
                    let msg = format!("{:#}", e);
                    prop_assert!(!msg.is_empty());
                }
            }

            /// The real example with one byte range replaced: no panic; errors that come
            /// from a line of the file name it.
            #[test]
            fn mutated_example(at in 0usize..EXAMPLE.len(), len in 0usize..40, with in "[a-z0-9=\\[\\]\"., \n_*{}+-]{0,12}") {
                let start = (0..=at).rev().find(|&i| EXAMPLE.is_char_boundary(i)).unwrap();
                let end = (start + len).min(EXAMPLE.len());
                let end = (end..=EXAMPLE.len()).find(|&i| EXAMPLE.is_char_boundary(i)).unwrap();
                let text = format!("{}{}{}", &EXAMPLE[..start], with, &EXAMPLE[end..]);
                if let Err(e) = parse(&text) {
                    let msg = format!("{:#}", e);
                    prop_assert!(!msg.is_empty());
                    prop_assert!(
                        msg.contains("line") || msg.contains("missing") || msg.contains("exceeds") || msg.contains("cannot be first or last"),
                        "error without a location: {}", msg
                    );
                }
            }
        }
    }
}
