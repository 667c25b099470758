//! The raw layer: the file as written, deserialized with each value's place in the text.
//!
//! Every section and key is optional except kafka.brokers and kafka.topic;
//! `deny_unknown_fields` turns a typo into an error instead of a silent default. Nothing
//! here validates a value: `section` does, with the spans kept here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) journal: RawJournal,
    #[serde(default)]
    pub(super) encoding: RawEncoding,
    pub(super) kafka: Option<Spanned<RawKafka>>,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) pipeline: RawPipeline,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
    pub(super) forward: Option<Spanned<RawForward>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) socket: Option<Spanned<PathBuf>>,
    pub(super) topic: Option<Spanned<String>>,
    pub(super) topic_fallback: Option<Spanned<String>>,
    pub(super) key_field: Option<Spanned<String>>,
    pub(super) tag_field: Option<Spanned<String>>,
    pub(super) time_field: Option<Spanned<String>>,
    pub(super) shared_key_file: Option<Spanned<PathBuf>>,
    pub(super) self_hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) users: Vec<Spanned<RawForwardUser>>,
    pub(super) tls_cert: Option<Spanned<PathBuf>>,
    pub(super) tls_key: Option<Spanned<PathBuf>>,
    pub(super) max_message_bytes: Option<Spanned<u64>>,
    pub(super) max_connections: Option<Spanned<u64>>,
    pub(super) max_in_flight_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwardUser {
    pub(super) name: String,
    pub(super) password_file: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) transactional_id: Option<Spanned<String>>,
    pub(super) cursor_topic: Option<Spanned<String>>,
    pub(super) create_cursor_topic: Option<bool>,
    pub(super) cursor_topic_partitions: Option<Spanned<u64>>,
    pub(super) place_metadata_bytes: Option<Spanned<u64>>,
    pub(super) transaction_max_entries: Option<Spanned<u64>>,
    pub(super) transaction_max_ms: Option<Spanned<u64>>,
    pub(super) transaction_timeout_ms: Option<Spanned<u64>>,
    pub(super) on_too_large: Option<Spanned<String>>,
    pub(super) on_topic_refused: Option<Spanned<String>>,
    pub(super) dead_letter_topic: Option<Spanned<String>>,
    pub(super) progress_interval_ms: Option<Spanned<u64>>,
    pub(super) progress_topic: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) stall_seconds: Option<Spanned<u64>>,
    pub(super) min_loss_forecast_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJournal {
    pub(super) enabled: Option<bool>,
    pub(super) directory: Option<Spanned<PathBuf>>,
    pub(super) files: Option<Spanned<Vec<PathBuf>>>,
    pub(super) namespace: Option<Spanned<String>>,
    pub(super) start: Option<Spanned<String>>,
    pub(super) since: Option<Spanned<String>>,
    pub(super) cursor_lost: Option<Spanned<String>>,
    pub(super) exclude_own_entries: Option<bool>,
    pub(super) reader: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) units: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) identifiers: Vec<Spanned<String>>,
    pub(super) priority: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) matches: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude_units: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude_identifiers: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude_matches: Vec<Spanned<String>>,
    pub(super) units_mode: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncoding {
    pub(super) format: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) include_fields: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) exclude_fields: Vec<Spanned<String>>,
    pub(super) max_record_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) add_fields: BTreeMap<String, Spanned<String>>,
    pub(super) add_fields_override: Option<bool>,
    pub(super) lowercase_names: Option<bool>,
    pub(super) strip_underscore: Option<bool>,
    pub(super) priority_name: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafka {
    pub(super) brokers: Option<Spanned<String>>,
    pub(super) topic: Option<Spanned<String>>,
    pub(super) topic_fallback: Option<Spanned<String>>,
    pub(super) key_field: Option<Spanned<String>>,
    pub(super) key_fields: Option<Spanned<Vec<String>>>,
    pub(super) key_separator: Option<Spanned<String>>,
    pub(super) partitioner: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Spanned<String>>,
    pub(super) connect_timeout_ms: Option<Spanned<u64>>,
    pub(super) sasl_password_file: Option<Spanned<PathBuf>>,
    pub(super) sasl_password_credential: Option<Spanned<String>>,
    pub(super) aws_msk_iam: Option<Spanned<bool>>,
    pub(super) aws_region: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) properties: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) directory: Option<PathBuf>,
    pub(super) checkpoint_interval_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPipeline {
    pub(super) max_in_flight_entries: Option<Spanned<u64>>,
    pub(super) max_in_flight_bytes: Option<Spanned<u64>>,
    pub(super) shutdown_timeout_ms: Option<Spanned<u64>>,
    pub(super) retry_backoff_max_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<Spanned<String>>,
    pub(super) target: Option<Spanned<String>>,
}
