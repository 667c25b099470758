//! Configuration: the TOML file, its defaults and its validation.
//!
//! Owns turning the user's file into a typed, validated [`Config`], in two layers as
//! ripgrep's flags do: `raw` is the file as written (serde, with spans), `sections` derives
//! the typed form through the helpers of `check`, so every error names the key and the line
//! it came from: an agent that refuses to start must say exactly why. `properties` is the
//! librdkafka property policy, enforced here so a weakening property is refused at load.
//! `secrets` is the rule for which names hold secrets, and errors that never quote them.
//! This module must never touch the journal, the network or the state directory: `check`
//! and `run` do that with an already-valid configuration.

mod check;
mod properties;
mod raw;
mod secrets;
mod sections;

pub(crate) use secrets::is_secret_name;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub(crate) use check::{
    is_valid_field_name, made_topic_usable, parse_priority_text, parse_rfc3339, push_topic_part,
};

/// The fully parsed and validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub journal: JournalConfig,
    pub encoding: EncodingConfig,
    pub kafka: KafkaConfig,
    pub state: StateConfig,
    pub pipeline: PipelineConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub delivery: DeliveryConfig,
    /// The Fluentd Forward input (`None`: off).
    pub forward: Option<ForwardConfig>,
}

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

/// The delivery guarantee and, for exactly-once, its transaction settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The cursor lives in a file written after the broker confirmed the entries.
    AtLeastOnce,
    /// The cursor is committed inside the Kafka transaction that carries the entries.
    ExactlyOnce,
}

#[derive(Debug, Clone, PartialEq)]
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
    /// What to do with a record the brokers refuse as too large.
    pub on_too_large: OnRefused,
    /// What to do with a record whose (template-made) topic refuses it.
    pub on_topic_refused: OnRefused,
    pub dead_letter_topic: String,
    /// Progress records for `audit` every this many ms (0: none), to `progress_topic`
    /// (`None`: the records' own topic, or its fallback when it is a template).
    pub progress_interval_ms: u64,
    pub progress_topic: Option<String>,
}

impl DeliveryConfig {
    /// The agent's own topics, configured and default: no template may make these from
    /// data (`made_topic_usable`).
    pub fn reserved_topics(&self) -> Vec<String> {
        let mut t = vec![
            self.cursor_topic.clone(),
            self.dead_letter_topic.clone(),
            DEFAULT_CURSOR_TOPIC.to_string(),
            DEFAULT_DEAD_LETTER_TOPIC.to_string(),
        ];
        t.extend(self.progress_topic.clone());
        t.sort();
        t.dedup();
        t
    }
}

/// A policy for records the brokers refuse for good (docs/reliability.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefused {
    /// Re-encode smaller (halving the record limit) until accepted, then dead-letter.
    Shrink,
    /// Send the record, unchanged, to `delivery.dead_letter_topic` with the error.
    DeadLetter,
    /// Stop the cursor before the record and retry the session until an operator acts.
    Stall,
}

pub const DEFAULT_CURSOR_TOPIC: &str = "journald-kafka-cursors";
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "journald-kafka-dead-letter";

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint (/metrics, /health/*); `None` keeps it off.
    pub listen: Option<String>,
    /// Not ready once the cursor has not moved for this long while entries are in flight.
    pub stall_seconds: u64,
    /// Not ready when entries are in flight and the journal's writer is forecast to delete
    /// unshipped entries within this many seconds (0: never for this reason).
    pub min_loss_forecast_seconds: u64,
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

#[derive(Debug, Clone, PartialEq)]
pub struct JournalConfig {
    /// The journal input runs (false: only `[forward]` does).
    pub enabled: bool,
    pub source: Source,
    pub start: Start,
    pub cursor_lost: CursorLost,
    pub filter: Filter,
    /// Skip the agent's own log entries so it never ships (and logs about) itself.
    pub exclude_own_entries: bool,
}

/// Entry filters. What libsystemd can express (exact names, priorities, `matches`) it
/// evaluates as journal matches; patterns, exclusions and the journalctl meaning of units
/// are evaluated by the agent (`journal::select`), because libsystemd matches cannot negate
/// or glob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Unit names or glob patterns (`nginx@*.service`); a name without a type gets
    /// `.service`, as `journalctl -u` does.
    pub units: Vec<String>,
    pub identifiers: Vec<String>,
    pub max_priority: Option<u8>,
    /// journalctl-style terms: `FIELD=value` or `+` (OR between groups).
    pub matches: Vec<String>,
    pub exclude_units: Vec<String>,
    pub exclude_identifiers: Vec<String>,
    /// `FIELD=value` terms (the value may be a glob): an entry matching any is excluded.
    pub exclude_matches: Vec<String>,
    pub units_mode: UnitsMode,
}

/// Which entries a unit name selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnitsMode {
    /// Entries the unit's processes wrote (`_SYSTEMD_UNIT`).
    #[default]
    Processes,
    /// As `journalctl -u`: also what systemd and coredumps say about the unit (`UNIT`,
    /// `OBJECT_SYSTEMD_UNIT`, `COREDUMP_UNIT`) and the user-unit equivalents.
    Journalctl,
}

/// Whether a name is a glob pattern (fnmatch: `*`, `?`, `[...]`).
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
            && self.identifiers.is_empty()
            && self.max_priority.is_none()
            && self.matches.is_empty()
            && self.exclude_units.is_empty()
            && self.exclude_identifiers.is_empty()
            && self.exclude_matches.is_empty()
    }

    /// The units are selected by the agent, not by libsystemd.
    pub fn units_in_agent(&self) -> bool {
        !self.units.is_empty()
            && (self.units_mode == UnitsMode::Journalctl || self.units.iter().any(|u| is_glob(u)))
    }

    /// The identifiers are selected by the agent, not by libsystemd.
    pub fn identifiers_in_agent(&self) -> bool {
        self.identifiers.iter().any(|i| is_glob(i))
    }

    /// libsystemd matches are in use: entries they leave out never reach the agent, so
    /// sequence-number jumps are not gaps and filtered stretches must be passed at idle.
    pub fn uses_journal_matches(&self) -> bool {
        !self.matches.is_empty()
            || self.max_priority.is_some()
            || (!self.units.is_empty() && !self.units_in_agent())
            || (!self.identifiers.is_empty() && !self.identifiers_in_agent())
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

/// A header value: literal text and `{FIELD}` parts (a missing field omits the header).
pub type HeaderTemplate = Vec<TopicPart>;

/// One piece of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPart {
    Literal(String),
    Field(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: Vec<TopicPart>,
    /// Used when a field named by the topic template is missing from an entry.
    pub topic_fallback: Option<String>,
    /// Names of the fields whose first values, joined by `key_separator`, key the record
    /// (`key_field` is the one-field form); empty: no key.
    pub key_fields: Vec<String>,
    pub key_separator: String,
    /// Extra record headers: name and template.
    pub headers: Vec<(String, HeaderTemplate)>,
    /// librdkafka properties given by the user, already checked against the guarantee.
    pub properties: BTreeMap<String, String>,
    pub connect_timeout_ms: u64,
    /// The SASL password read from `sasl_password_file` or a systemd credential; given to
    /// librdkafka as `sasl.password` by `kafka::client` and shown nowhere.
    pub sasl_password: Option<Secret>,
    /// Where it came from, when it is a file (for `check`'s permission warning).
    pub sasl_password_file: Option<PathBuf>,
}

/// A secret: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// Every file the configuration names that holds a secret, with the key that named it:
    /// the SASL password file, secret-bearing librdkafka properties that name a file
    /// (`ssl.key.location`, a keytab), and the Forward input's key, password and TLS key
    /// files.
    pub fn secret_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        if let Some(f) = &self.kafka.sasl_password_file {
            out.push(("kafka.sasl_password_file".to_string(), f.clone()));
        }
        for (name, value) in &self.kafka.properties {
            if (name.ends_with(".location") || name.contains("keytab")) && is_secret_name(name) {
                out.push((format!("kafka.properties.\"{name}\""), PathBuf::from(value)));
            }
        }
        if let Some(f) = &self.forward {
            out.extend(f.secret_files.iter().cloned());
        }
        out
    }
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

#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub directory: PathBuf,
    pub checkpoint_interval_ms: u64,
}

impl StateConfig {
    pub fn cursor_file(&self) -> PathBuf {
        self.directory.join("cursor")
    }
}

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub target: LogTarget,
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/journald-kafka";
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;

/// The smallest valid configuration (brokers "h:1", topic "t") with `extra` TOML after it
/// (tests).
#[cfg(test)]
pub(crate) fn for_tests(extra: &str) -> Config {
    parse(&format!(
        "[kafka]\nbrokers = \"h:1\"\ntopic = \"t\"\n{extra}"
    ))
    .expect("a valid test config")
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Parses and validates configuration text.
pub fn parse(text: &str) -> Result<Config> {
    // toml's own error names the line and quotes it: the line may hold a password, and
    // the agent's errors reach the journal it ships (issue 27). `secrets` says it without.
    let raw: raw::RawConfig =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", secrets::parse_error(text, &e)))?;
    let at = check::Locator { text };

    let Some(kafka) = raw.kafka else {
        bail!("missing section [kafka]: at least kafka.brokers and kafka.topic are required");
    };
    let kafka_span = kafka.span();
    let kafka = kafka.into_inner();

    let cfg = Config {
        journal: sections::journal(raw.journal, &at)?,
        encoding: sections::encoding(raw.encoding, &at)?,
        kafka: sections::kafka(kafka, kafka_span, &at)?,
        state: sections::state(raw.state, &at)?,
        pipeline: sections::pipeline(raw.pipeline, &at)?,
        log: sections::log(raw.log, &at)?,
        metrics: sections::metrics(raw.metrics, &at)?,
        delivery: sections::delivery(raw.delivery, &at)?,
        forward: None,
    };
    let forward = match raw.forward {
        Some(f) => {
            let span = f.span();
            Some(sections::forward(
                f.into_inner(),
                span,
                &cfg.kafka,
                cfg.journal.enabled,
                &at,
            )?)
        }
        None => None,
    };
    if !cfg.journal.enabled && forward.is_none() {
        bail!("journal.enabled = false leaves no input: configure [forward] or enable the journal");
    }
    if forward.is_some() && cfg.delivery.mode == Mode::ExactlyOnce {
        bail!(
            "[forward] cannot run in delivery.mode = \"exactly-once\": a Forward client's acknowledgement is its own resend protocol (at-least-once with a dedup id); run the Forward input in an agent of its own"
        );
    }
    let cfg = Config { forward, ..cfg };
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
    // librdkafka's queue must hold the largest record, or producing it fails with
    // QueueFull forever and the pipeline wedges on that entry.
    if let Some(kb) = cfg.kafka.properties.get("queue.buffering.max.kbytes") {
        let kb: usize = kb.parse().map_err(|_| {
            anyhow::anyhow!(
                "kafka.properties.\"queue.buffering.max.kbytes\": {kb:?} is not a number"
            )
        })?;
        if kb.saturating_mul(1024) < cfg.encoding.max_record_bytes {
            bail!(
                "kafka.properties.\"queue.buffering.max.kbytes\" ({kb}) is smaller than one record of encoding.max_record_bytes ({} bytes): such a record could never be queued; remove the property (the agent sizes the queue from the in-flight window) or raise it",
                cfg.encoding.max_record_bytes
            );
        }
    }
    Ok(cfg)
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
        assert!(c.kafka.key_fields.is_empty());
        assert_eq!(c.state.directory, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(
            c.state.cursor_file(),
            PathBuf::from("/var/lib/journald-kafka/cursor")
        );
        assert_eq!(c.pipeline.max_in_flight_entries, 50_000);
        assert_eq!(c.log.target, LogTarget::Auto);
    }

    #[test]
    fn the_password_comes_from_one_place_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        let file = format!("sasl_password_file = \"{}\"\n", pw.display());
        let both = err(&format!("{MIN}{file}sasl_password_credential = \"k\"\n"));
        assert!(both.contains("not both") && both.contains("line"), "{both}");
        let twice = err(&format!(
            "{MIN}{file}[kafka.properties]\n\"sasl.password\" = \"y\"\n"
        ));
        assert!(twice.contains("one place"), "{twice}");
        let missing = err(&format!("{MIN}sasl_password_file = \"/nonexistent/pw\"\n"));
        assert!(
            missing.contains("kafka.sasl_password_file") && missing.contains("/nonexistent/pw"),
            "{missing}"
        );
        std::fs::write(&pw, "\n").unwrap();
        assert!(err(&format!("{MIN}{file}")).contains("empty"));
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = parse(&format!("{MIN}{file}")).unwrap();
        assert_eq!(c.kafka.sasl_password.unwrap().expose(), "s3cret");
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

    #[test]
    fn the_packaged_example_parses() {
        let text = include_str!("../../packaging/config.toml");
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
        assert_eq!(c.kafka.key_fields, ["_HOSTNAME"]);
        let c = parse(&format!("{MIN}key_field = \"none\"\n")).unwrap();
        assert!(c.kafka.key_fields.is_empty());
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
            ("delivery.report.only.error", "true"),
            ("delivery.timeout.ms", "600000"),
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
        // A queue smaller than one record would wedge on the first large entry.
        let e = err(&format!(
            "{MIN}[kafka.properties]\n\"queue.buffering.max.kbytes\" = 500\n"
        ));
        assert!(
            e.contains("queue.buffering.max.kbytes") && e.contains("max_record_bytes"),
            "{e}"
        );
        assert!(
            parse(&format!(
                "{MIN}[kafka.properties]\n\"queue.buffering.max.kbytes\" = 2000\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn time_limits_have_ranges_with_lines() {
        for (section, key, bad) in [
            ("pipeline", "shutdown_timeout_ms", "99999999999999999"),
            ("kafka", "connect_timeout_ms", "99999999999999999"),
            ("kafka", "connect_timeout_ms", "0"),
        ] {
            let text = if section == "kafka" {
                format!("{MIN}{key} = {bad}\n")
            } else {
                format!("{MIN}[{section}]\n{key} = {bad}\n")
            };
            let e = err(&text);
            assert!(
                e.contains(&format!("{section}.{key} (line")) && e.contains("must be between"),
                "{e}"
            );
        }
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

        const EXAMPLE: &str = include_str!("../../packaging/config.toml");

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
