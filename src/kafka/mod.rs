//! The Kafka stage: everything that speaks to the brokers.
//!
//! Owns the client configuration used by every command (`client`), the output seam every
//! input hands its records to (`sink`: one producer type, delivery reports classified once
//! and handed back to the input that owns the record), the refusal policy for every input
//! (`refusal`), the journal's side of the seam (`producer`, `record`: reports into the
//! watermark), and the exactly-once store that commits the cursor inside a Kafka
//! transaction (`transaction`). Delivery reports are the only way this module tells an
//! input what was delivered.
//!
//! It must never report a record as delivered unless the broker acknowledged it (acks=all,
//! idempotent), never let a user property weaken that (the guarantee's settings are set
//! last, over the user's), and never commit a cursor that is not a `SafeCursor`.

mod cause;
mod client;
mod producer;
mod record;
pub(crate) mod refusal;
pub(crate) mod sink;
pub(crate) mod transaction;

pub(crate) use cause::{Cause, classify, speaks_tls};
pub(crate) use client::{STATS_INTERVAL_MS, client_config, connection, connection_config};
pub(crate) use producer::{CONTROL, Producer, Transactional, probe, producer, repair_producer};
pub(crate) use record::{headers, headers_with, send, send_progress};
pub(crate) use refusal::{Action, Policy, Refusal, Refusals};
pub(crate) use sink::{Outgoing, dead_letter_headers, owned_headers, within_tolerance};
pub(crate) use transaction::TransactionStore;
