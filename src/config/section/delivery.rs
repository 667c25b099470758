//! `[delivery]`: the delivery guarantee, the exactly-once transaction settings, what
//! happens to records the brokers refuse for good, and progress records for `audit`.
//!
//! Owns the agent's own topics (cursor, dead-letter, progress): `reserved_topics` is the
//! list no template may make from data. It decides no policy at run time (`kafka::refusal`
//! and the pipeline do).

use anyhow::Result;

use crate::config::check::{Locator, check_topic_name};
use crate::config::raw::RawDelivery;

pub const DEFAULT_CURSOR_TOPIC: &str = "journald-kafka-cursors";
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "journald-kafka-dead-letter";

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
    /// Partitions of the cursor topic when the agent creates it: each holds one chunk of
    /// a place (`place_metadata_bytes`), so they bound the writers a place can hold.
    pub cursor_topic_partitions: usize,
    /// What one partition's offset metadata may hold: the brokers' `offset.metadata.max.bytes`.
    pub place_metadata_bytes: usize,
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
        cursor_topic_partitions: at.range(
            "delivery.cursor_topic_partitions",
            raw.cursor_topic_partitions,
            64,
            1,
            10_000,
        )? as usize,
        place_metadata_bytes: at.range(
            "delivery.place_metadata_bytes",
            raw.place_metadata_bytes,
            4096,
            512,
            1 << 20,
        )? as usize,
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
        progress_interval_ms: at.range(
            "delivery.progress_interval_ms",
            raw.progress_interval_ms,
            0,
            0,
            86_400_000,
        )?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::test_support::{MIN, err};

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
}
