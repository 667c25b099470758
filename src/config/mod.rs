//! Configuration: the TOML file, its defaults and its validation.
//!
//! Owns turning the user's file into a typed, validated [`Config`], in two layers as
//! ripgrep's flags do: `raw` is the file as written (serde, with spans), `section` derives
//! the typed form, one file per section, through the helpers of `check`, so every error
//! names the key and the line it came from: an agent that refuses to start must say
//! exactly why. This file keeps what spans sections: the `Config` they make up, and the
//! rules that join several of them (`parse`). `properties` owns the librdkafka properties:
//! the user's are checked at load (a weakening one is refused with its line), and every
//! client's are built there. `secrets` is the rule
//! for which names hold secrets, and errors that never quote them.
//! This module must never touch the journal, the network or the state directory: `check`
//! and `run` do that with an already-valid configuration.

mod check;
pub(crate) mod properties;
mod raw;
mod secrets;
mod section;

pub(crate) use secrets::is_secret_name;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub(crate) use check::{
    is_valid_field_name, made_topic_usable, parse_priority_text, parse_rfc3339, push_topic_part,
};
pub use secrets::Secret;
pub use section::delivery::{
    DEFAULT_CURSOR_TOPIC, DEFAULT_DEAD_LETTER_TOPIC, DeliveryConfig, Mode, OnRefused,
};
pub use section::encoding::{DEFAULT_MAX_RECORD_BYTES, EncodingConfig, FieldPattern, Format};
pub use section::forward::{ForwardConfig, ForwardPart};
pub use section::journal::{
    CursorLost, Filter, JournalConfig, ReaderKind, Source, Start, UnitsMode, is_glob,
};
pub use section::kafka::{HeaderTemplate, KafkaConfig, TopicPart};
pub use section::log::{LogConfig, LogTarget};
pub use section::metrics::MetricsConfig;
pub use section::pipeline::PipelineConfig;
pub use section::state::{DEFAULT_STATE_DIR, StateConfig};

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
    let cfg = section::derive(raw, &at)?;

    // The rules below join several sections; each section's own are in its file.
    if !cfg.journal.enabled && cfg.forward.is_none() {
        bail!("journal.enabled = false leaves no input: configure [forward] or enable the journal");
    }
    if cfg.forward.is_some() && cfg.delivery.mode == Mode::ExactlyOnce {
        bail!(
            "[forward] cannot run in delivery.mode = \"exactly-once\": a Forward client's acknowledgement is its own resend protocol (at-least-once with a dedup id); run the Forward input in an agent of its own"
        );
    }
    if cfg.encoding.format == Format::Otlp
        && cfg.delivery.progress_interval_ms > 0
        && cfg.delivery.progress_topic.is_none()
    {
        bail!(
            "encoding.format = \"otlp\" with delivery.progress_interval_ms needs delivery.progress_topic: progress records are JSON, and in the entries' topic they would stop an OpenTelemetry Collector reading it as otlp_proto (it cannot skip a record by its header)"
        );
    }
    properties::check_limits(&cfg.kafka.properties, &cfg.encoding).map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

/// What the tests of every section share: the smallest valid file, and the text of the
/// error a refused one gets.
#[cfg(test)]
mod test_support {
    pub(super) const MIN: &str = "[kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"journal\"\n";

    pub(super) fn err(text: &str) -> String {
        format!("{:#}", super::parse(text).unwrap_err())
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{MIN, err};
    use super::*;

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
